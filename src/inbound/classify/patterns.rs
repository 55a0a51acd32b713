//! The words that reveal each bounce reason, in the order they are tried.
//!
//! The phrases are the ones MTAs and large mailbox providers actually
//! write (Postfix, Exim, Sendmail, qmail, Exchange, Gmail, Yahoo,
//! Outlook...), lowercase-insensitive, as short as they can be without
//! catching another reason's words.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// One reason and the words that reveal it.
pub(crate) struct Rule {
    /// sisimai's reason name.
    pub reason: &'static str,
    /// The words, as one case-insensitive regex.
    pub text: Regex,
}

fn rule(reason: &'static str, parts: &[&str]) -> Rule {
    Rule {
        reason,
        text: RegexBuilder::new(&parts.concat())
            .case_insensitive(true)
            .size_limit(1 << 24)
            .build()
            .expect("valid reason pattern"),
    }
}

/// Step 1 of [`super::reason::reason_for`], in order: reasons that a
/// status code or the text may decide.
pub(crate) static DECISIVE: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(
            "mailboxfull",
            &[
                r"mail ?box (?:is |was )?(?:full|over|exceeded)|mail ?box (?:has )?(?:exceeded|reached)|",
                r"(?:over|exceeded?|exceeds|exceeding|reached|beyond) (?:the |their |his |her |its |his/her |your )?(?:storage |mailbox |disk |mail |account )?quota|",
                r"quota (?:exceeded|exceed|full|violation|limit)|over ?quota|mailfolder is full|",
                r"storage (?:space |allocation )?(?:is )?(?:full|exceeded)|exceeded storage|",
                r"insufficient (?:storage|space) (?:in|for) (?:the )?(?:mailbox|user|account)|",
                r"(?:inbox|account|mail ?box|mail folder|mailfolder) (?:is )?(?:currently )?full|",
                r"is over (?:the |its |their )?(?:quota|capacity|storage)|too much mail data|",
                r"mailbox size limit|out of (?:disk )?space for (?:this )?(?:user|mailbox)|",
                r"disk quota|full mailbox|user(?:'s)? (?:disk|storage) (?:space )?(?:is )?full|",
                r"not enough (?:storage|space) (?:in|for) (?:the )?(?:mailbox|user)",
            ],
        ),
        rule(
            "mesgtoobig",
            &[
                r"message (?:is )?too (?:big|large|long)|(?:message|mail|e-?mail) size (?:exceeds|is (?:larger|too)|too large|limit)|",
                r"(?:size|length) (?:limit )?exceeded|exceeds? (?:the |our )?(?:maximum |max |fixed |allowed )+(?:message )?size|",
                r"exceeds? (?:the )?size limit|too big for (?:the )?system|(?:e-?mail|message|mail) is too (?:large|big)|",
                r"maximum (?:allowed )?message size|size of (?:the |this )?message exceeds|message (?:file )?too large|",
                r"larger than (?:the )?(?:maximum|allowed|permitted)|line limit exceeded",
            ],
        ),
        rule(
            "exceedlimit",
            &[
                r"message length exceeds administrative limit|exceeds? (?:the )?(?:local |per-mailbox )?administrative limit|",
                r"(?:message|recipient)s? limit exceeded",
            ],
        ),
        rule(
            "suspend",
            &[
                r"(?:account|mail ?box|address|user)(?: that you tried to reach)? (?:has been |is |was |is currently |has been temporarily )?(?:disabled|suspended|deactivated|inactive|locked|frozen|closed|terminated|expired|on hold)|",
                r"(?:disabled|suspended|inactive|deactivated|frozen|locked|closed|expired) (?:mail ?box|account|user|recipient)|",
                r"not an active|no longer (?:active|in use|used|available)|",
                r"has been (?:disabled|suspended|deactivated|terminated)|temporarily (?:disabled|deactivated)|",
                r"recipient (?:is )?(?:suspended|disabled|inactive)|dormant|extended inactivity|",
                r"account (?:is )?(?:unavailable|not available)|mailbox (?:is )?(?:temporarily )?(?:not available|unavailable) due to",
            ],
        ),
        rule(
            "hasmoved",
            &[
                r"has (?:been )?moved|address (?:has )?changed|no forwarding address|moved permanently|",
                r"changed (?:his|her|their|its) (?:e-?mail )?address|new (?:e-?mail )?address is",
            ],
        ),
        rule(
            "norelaying",
            &[
                r"relay(?:ing)? (?:access |attempt )?(?:is )?(?:denied|not (?:permitted|allowed|authorized)|prohibited|refused|disallowed|rejected)|",
                r"(?:not permitted|not allowed|unable|cannot|can't|do not|does not|don't|we do not) (?:to )?relay|",
                r"no relaying|relaying (?:mail )?(?:to|from) .{0,60}(?:denied|not allowed)|relay not|not a gateway|",
                r"relay access|open relay|not (?:a |an )?(?:local|our|accepted|hosted) domain|",
                r"is not in my list of allowed rcpthosts",
            ],
        ),
        rule(
            "authfailure",
            &[
                r"\bspf\b|sender policy framework|\bdkim\b|\bdmarc\b|domainkeys|unauthenticated (?:e-?mail|mail|message)|",
                r"sender (?:authentication|auth) (?:fail|check|error)|authentication (?:checks?|results?) (?:fail|did not pass)|",
                r"(?:does|did) not pass (?:our )?(?:authentication|spf|dkim|dmarc)|email authentication",
            ],
        ),
        rule(
            "userunknown",
            &[
                r"user(?:name)? (?:is |was )?(?:unknown|not found|not known|invalid|not exist|does ?n[o']t exist|doesn't exist)|",
                r"unknown (?:local[- ]?(?:part|user)|user|recipient|mailbox|address|alias|account|e-?mail)|",
                r"(?:no such|invalid|bad|non-?existent|illegal) (?:local )?(?:user|recipient|mailbox|address|account|person|e-?mail(?: address)?|destination (?:mailbox|address)|alias)|",
                r"(?:recipient|mail ?box|address|account|addressee|user|e-?mail(?: address)?|local part|alias)(?: name)?(?: is| was| does)? (?:unknown|not found|not known|invalid|unavailable|not (?:a )?valid|does ?n[o']t exist|doesn't exist|not exist|non-?existent|no longer (?:valid|exists?)|not listed|not recognized|not registered)|",
                r"(?:user|recipient|mailbox|address|account)[\w ]{0,30} (?:does not|doesn't|dosn't|did not) exist|",
                r"@[\w.-]+>?:? (?:does not|doesn't) exist|",
                r"not (?:a )?(?:valid|known|registered) (?:user|recipient|mailbox|address|account|e-?mail)|",
                r"no (?:such )?mail ?box(?: here| by that name)?|mailbox (?:not found|unavailable)|",
                r"(?:not|isn't|is not) (?:our|a) (?:customer|user|subscriber)|no (?:such )?account|",
                r"could(?: not|n't) find (?:a |any |the )?(?:user|mailbox|recipient|account)|not a known user|no valid recipients|",
                r"addressee unknown|bad destination|user not local|recipient (?:not found|rejected: user)|",
                r"unknown or illegal|not (?:listed|found) in (?:the )?[\w ]{0,30}(?:directory|address book|recipient list|ldap)|",
                r"recipientnotfound|no such recipient|undeliverable address|user lookup failed|invalid (?:mailbox|recipient)|",
                r"address (?:couldn't|could not|can't|cannot) be found|doesn't have an? [\w.-]{1,60} account",
            ],
        ),
        rule(
            "filtered",
            &[
                r"(?:message|mail|e-?mail) (?:was |has been )?(?:filtered|refused by (?:the )?recipient)|",
                r"rejected by (?:the )?recipient(?:'s)? (?:user|mailbox|filter)|recipient preferences|",
                r"recipient (?:has )?(?:rejected|refused|blocked) (?:your|the|this|all)|",
                r"(?:not |isn't |is not )?accept(?:ing|s)? (?:mail|messages|e-?mails?) from (?:you|your|this|the sender)|",
                r"user refuses?|refused to accept|blocked by (?:the )?(?:recipient|user)|",
                r"does not accept (?:mail|e-?mail|messages) from|has restricted|only accepts? (?:mail|messages) from|",
                r"restricted recipient|you are not (?:allowed|authorized|permitted) to (?:send|post|email)|",
                r"not authorized to (?:send|post)|sender is not (?:allowed|authorized|permitted)|",
                r"permission (?:denied|to post)|do not have permission|recipient (?:filter|has a filter)|",
                r"filtered by|rejected by (?:a |the )?(?:user|recipient)(?:'s)? filter",
            ],
        ),
        rule(
            "requireptr",
            &[
                r"reverse (?:dns|lookup|hostname|address|name|mapping|resolution)|\bptr\b|\brdns\b|",
                r"no (?:reverse|rdns)|cannot find your (?:reverse )?hostname|ip name lookup failed|",
                r"(?:ip|client|host) (?:address )?(?:has no|without|does not have|doesn't have) (?:a |any )?(?:ptr|reverse|hostname)|",
                r"unresolvable (?:ip|client|address)|cannot resolve your (?:ip|address|hostname)|",
                r"forward[- ]confirmed|fcrdns|reverse-dns|dns ptr|does not resolve to|",
                r"hostname does not match|unable to resolve (?:your|the client)",
            ],
        ),
        rule(
            "notcompliantrfc",
            &[
                r"rfc ?(?:5322|2822|822|5321|2821|1123)|not (?:rfc[- ]?)?compliant|",
                r"multiple (?:from|sender|subject|date|message-id|to) (?:header|field|line)|duplicate header|",
                r"violat\w* (?:of )?rfc",
            ],
        ),
        rule(
            "badreputation",
            &[
                r"reputation|low (?:sender )?score|sender score|unexpected volume or user complaints",
            ],
        ),
        rule(
            "contenterror",
            &[
                r"content (?:error|type)|header (?:syntax|too long|line too long|is malformed)|",
                r"invalid (?:header|mime|content|character)|mime (?:error|format|structure|type)|",
                r"(?:message|mail) format|line too long|bad (?:header|content)|",
                r"encoding (?:error|problem)|improper(?:ly)? (?:formatted|encoded)",
            ],
        ),
        rule(
            "rejected",
            &[
                r"sender (?:address |domain )?(?:was )?(?:rejected|refused|denied|blacklisted|unknown|invalid|blocked|not (?:allowed|permitted|authorized|verified|accepted))|",
                r"domain of sender address|sender verif\w* fail|sender domain (?:must|not|does|is|unknown)|",
                r"(?:unknown|invalid|bad|unverified|unverifiable|nonexistent) sender|",
                r"envelope (?:from|sender)|mail from (?:address )?(?:rejected|refused|denied|invalid|not accepted)|",
                r"(?:invalid|bad|unknown) (?:from|return) address|return[- ]path|from: domain is invalid|",
                r"(?:rejected|refused|denied|blocked) (?:the |your )?sender|sender (?:address )?is (?:on|in) (?:a |the |our )?(?:black|block|deny)",
            ],
        ),
        rule(
            "notaccept",
            &[
                r"no mx records? (?:found|for)|couldn't find a mail exchanger|could not find a mail exchanger|",
                r"no smtp service|null mx|accepts no mail",
            ],
        ),
        rule(
            "hostunknown",
            &[
                r"host (?:or domain )?(?:name )?(?:unknown|not found|lookup failed|does not exist|is unknown)|",
                r"unknown (?:host|domain|mail domain)|unrouteable (?:mail )?(?:domain|address)|unroutable address|",
                r"domain (?:name )?(?:not found|does not exist|doesn't exist|is not valid|unknown|invalid|not exist|lookup failed|has no mx|could not be found)|",
                r"(?:no such|invalid|nonexistent|non-existent|bad) (?:mail )?(?:domain|host)|domain (?:is )?not reachable|",
                r"name or service not known|mx (?:record )?lookup (?:failed|failure)|",
                r"name ?server error|not (?:a )?valid (?:mail )?domain|could not resolve (?:mx|domain|host)|",
                r"cannot resolve (?:mx|domain|host)|host ?name lookup failure|nxdomain|",
                r"domain is not (?:configured|hosted|registered)|unable to route|no route to domain|",
                r"unresolvable (?:domain|host)|host not found|host [\w.-]+ not found",
            ],
        ),
        rule(
            "spamdetected",
            &[
                r"\bspam(?:\b|my|mer|ming|ish)|junk (?:mail|e-?mail)|unsolicited|bulk (?:mail|e-?mail)|\bube\b|\buce\b|",
                r"spamassassin|considered (?:as )?(?:junk|unsolicited|bulk)|",
                r"classified as (?:junk|bulk)|phishing|blocked for abuse|",
                r"message content rejected|content (?:filter|scan)|high probability|score too high",
            ],
        ),
        rule(
            "toomanyconn",
            &[
                r"too many (?:concurrent |simultaneous |open )?connections|connection (?:frequency|rate|limit)|",
                r"max(?:imum)? (?:number of )?(?:connections|sessions)|too many sessions|frequency limited|",
                r"connection count|concurrent connections",
            ],
        ),
        rule(
            "speeding",
            &[
                r"rate ?limit|rate-limit|sending rate|too (?:many|much) (?:messages|mail|e-?mails)|",
                r"receiving mail (?:at a rate|too fast)|exceeded (?:the )?(?:rate|sending|message)|throttl|",
                r"too fast|at a rate|messages per (?:hour|minute|second|day)|unusual rate",
            ],
        ),
        rule(
            "blocked",
            &[
                r"block(?:ed|list|listed|ing)|black ?list|\brbl\b|dnsbl|spamhaus|spamcop|barracuda|sorbs|",
                r"listed (?:at|in|on|by)|your (?:ip|host|server|network|mail server)|",
                r"(?:client|connecting) (?:host|ip|address)|ip (?:address )?(?:\S+ )?(?:is )?(?:rejected|not allowed|banned|refused)|",
                r"access denied|banned|not allowed to (?:connect|send)|messages from \S+ weren't sent|",
                r"connection (?:rejected|refused) (?:by|from|due)|refused to talk|go away|my name was rejected|",
                r"dynamic ip|dial-?up|residential|does not match your ip|mail server is not allowed|",
                r"smtp server of your isp|not accepting connections|",
                r"service (?:is )?not available.{0,40}(?:ip|host)|poor reputation",
            ],
        ),
    ]
});

/// Step 2, in order: reasons that only the text can reveal.
pub(crate) static TEXT_ONLY: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(
            "virusdetected",
            &[r"virus|malware|infected|trojan|\bworm\b|malicious"],
        ),
        rule(
            "policyviolation",
            &[
                r"polic(?:y|ies)|violat|prohibited|not (?:permitted|allowed) by|",
                r"acceptable use|terms of (?:service|use)|forbidden",
            ],
        ),
        // specific failures that a retry boilerplate must not hide
        rule(
            "networkerror",
            &[
                r"establish an smtp connection|lost connection|broken pipe|too many hops|hop count|mail loop|",
                r"routing loop|loops? back|loop detected|name service error|servfail|no route to host",
            ],
        ),
        rule(
            "systemerror",
            &[
                r"ldap server|system (?:error|failure|problem)|internal (?:server )?error|server error|local error|",
                r"mail system (?:error|problem)|configuration error|misconfigur|processing error|i/o error|",
                r"transaction failed|service (?:currently |temporarily )?unavailable",
            ],
        ),
        rule(
            "systemfull",
            &[
                r"system (?:is )?full|insufficient system storage|(?:disk|file ?system|server storage) (?:is )?full|",
                r"no space left on device|out of (?:disk )?space|not enough (?:disk )?space|insufficient (?:disk )?space",
            ],
        ),
        rule(
            "notaccept",
            &[
                r"(?:does not|doesn't|do not|will not|won't|not) accept(?:ing)? (?:any )?(?:e-?)?mail|",
                r"no mail(?: is)? accepted|not accepting (?:network )?messages|nolisting|host does not receive mail",
            ],
        ),
        rule(
            "expired",
            &[
                r"expired|delivery time|retry (?:time|timeout|period)|too long in (?:the )?queue|giving up|gave up|",
                r"could not be delivered (?:within|for|in)|has been delayed|been in (?:the )?queue|",
                r"no further (?:delivery )?attempts|undeliverable for|not (?:been )?delivered (?:within|for|in)|",
                r"cannot send message for|message (?:is|has been|was) (?:delayed|deferred)|will (?:be )?retr|",
                r"still (?:being )?(?:retried|trying)|maximum (?:time|retries)|retry limit|too many retries|",
                r"failed \d+ attempts|timed? ?out|timeout|requests to connect|(?:host|server) (?:is )?not reachable|for the last \d+ (?:seconds|minutes|hours|days)",
            ],
        ),
        rule(
            "networkerror",
            &[
                r"connection (?:was )?(?:refused|reset|closed|dropped|failure|failed)|",
                r"network (?:is )?(?:unreachable|error|failure)|(?:host|server) (?:is )?unreachable|unreachable|",
                r"(?:could not|unable to|can't|cannot|failed to) connect|connect to .{0,80} failed|",
                r"dns (?:error|failure|problem|lookup|timeout)|temporary dns",
            ],
        ),
        rule(
            "systemerror",
            &[
                r"temporary (?:local )?(?:failure|problem|error)|try again later|temporar|resources? (?:temporarily )?unavailable",
            ],
        ),
        rule(
            "failedstarttls",
            &[
                r"starttls|tls (?:is )?required|tls negotiation|requires? (?:a )?secure connection|",
                r"(?:not|n't) (?:support|offer|advertise)s? (?:starttls|tls)",
            ],
        ),
        rule(
            "securityerror",
            &[
                r"authentication (?:is )?required|must (?:be )?authenticat|auth(?:entication)? (?:failed|failure|error|mechanism)|",
                r"not authorized|unauthori[sz]ed|unauthenticated|insecure|security|certificate|encrypt|credentials",
            ],
        ),
        rule(
            "mailererror",
            &[
                r"mailer error|x-unix|command (?:died|failed)|exit (?:code|status)|procmail|pipe to|",
                r"program (?:failed|exited)|local delivery failed|unknown mailer",
            ],
        ),
        rule(
            "syntaxerror",
            &[
                r"syntax error|command (?:not )?(?:recognized|unrecognized)|unrecognized command|bad sequence|",
                r"out of sequence|invalid command|command not implemented",
            ],
        ),
    ]
});
