//! From status codes and the remote server's words to a reason name.
//!
//! Reason names are sisimai's (`userunknown`, `mailboxfull`, `blocked`...),
//! so that figures can be compared with the tool most people use. A reason
//! is decided in three steps, like sisimai does:
//!
//! 1. the *decisive* reasons, in a fixed order: each matches when the
//!    enhanced status code says so unambiguously (5.1.1 is `userunknown`)
//!    or when the diagnostic text says so;
//! 2. the *text-only* reasons, matched on the diagnostic alone;
//! 3. fallbacks: a delay notice is `expired`, then what the status code's
//!    subject says (X.4.x network, X.7.x security...), then `onhold` when
//!    there is text but no rule for it, else `undefined`.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

use super::{FailedRecipient, Reported};

/// Reasons that are hard bounces when the failure is permanent: the
/// address will not start working by itself.
pub const HARD_REASONS: [&str; 4] = ["userunknown", "hostunknown", "hasmoved", "notaccept"];

/// One reason and the words that reveal it.
struct Rule {
    reason: &'static str,
    text: Regex,
}

fn rule(reason: &'static str, pattern: &str) -> Rule {
    Rule {
        reason,
        text: RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(1 << 24)
            .build()
            .expect("valid reason pattern"),
    }
}

/// Step 1, in order. The first rule whose status or text matches wins.
static DECISIVE: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(
            "mailboxfull",
            concat!(
                r"mail ?box (?:is |was )?(?:full|over|exceeded)|mail ?box (?:has )?(?:exceeded|reached)|",
                r"(?:over|exceeded?|exceeds|exceeding|reached|beyond) (?:the |their |his |her |its |his/her |your )?(?:storage |mailbox |disk |mail |account )?quota|",
                r"quota (?:exceeded|exceed|full|violation|limit)|over ?quota|mailfolder is full|",
                r"storage (?:space |allocation )?(?:is )?(?:full|exceeded)|exceeded storage|",
                r"insufficient (?:storage|space) (?:in|for) (?:the )?(?:mailbox|user|account)|",
                r"(?:inbox|account|mail ?box|mail folder|mailfolder) (?:is )?(?:currently )?full|",
                r"is over (?:the |its |their )?(?:quota|capacity|storage)|too much mail data|",
                r"mailbox size limit|out of (?:disk )?space for (?:this )?(?:user|mailbox)|",
                r"disk quota|full mailbox|user(?:'s)? (?:disk|storage) (?:space )?(?:is )?full|",
                r"not enough (?:storage|space) (?:in|for) (?:the )?(?:mailbox|user)"
            ),
        ),
        rule(
            "mesgtoobig",
            concat!(
                r"message (?:is )?too (?:big|large|long)|(?:message|mail|e-?mail) size (?:exceeds|is (?:larger|too)|too large|limit)|",
                r"(?:size|length) (?:limit )?exceeded|exceeds? (?:the |our )?(?:maximum |max |fixed |allowed )+(?:message )?size|",
                r"exceeds? (?:the )?size limit|too big for (?:the )?system|(?:e-?mail|message|mail) is too (?:large|big)|",
                r"maximum (?:allowed )?message size|size of (?:the |this )?message exceeds|message (?:file )?too large|",
                r"larger than (?:the )?(?:maximum|allowed|permitted)"
            ),
        ),
        rule(
            "exceedlimit",
            concat!(
                r"message length exceeds administrative limit|exceeds? (?:the )?(?:local |per-mailbox )?administrative limit|",
                r"(?:message|recipient)s? limit exceeded"
            ),
        ),
        rule(
            "suspend",
            concat!(
                r"(?:account|mail ?box|address|user) (?:has been |is |was |is currently |has been temporarily )?(?:disabled|suspended|deactivated|inactive|locked|frozen|closed|terminated|expired|on hold)|",
                r"(?:disabled|suspended|inactive|deactivated|frozen|locked|closed|expired) (?:mail ?box|account|user|recipient)|",
                r"not an active|no longer (?:active|in use|used|available)|",
                r"has been (?:disabled|suspended|deactivated|terminated)|temporarily (?:disabled|suspended|deactivated|blocked)|",
                r"recipient (?:is )?(?:suspended|disabled|inactive)|dormant|extended inactivity|",
                r"account (?:is )?(?:unavailable|not available)|mailbox (?:is )?(?:temporarily )?(?:not available|unavailable) due to"
            ),
        ),
        rule(
            "hasmoved",
            concat!(
                r"has (?:been )?moved|address (?:has )?changed|no forwarding address|moved permanently|",
                r"changed (?:his|her|their|its) (?:e-?mail )?address|new (?:e-?mail )?address is"
            ),
        ),
        rule(
            "norelaying",
            concat!(
                r"relay(?:ing)? (?:access |attempt )?(?:is )?(?:denied|not (?:permitted|allowed|authorized)|prohibited|refused|disallowed|rejected)|",
                r"(?:not permitted|not allowed|unable|cannot|can't|do not|does not|don't|we do not) (?:to )?relay|",
                r"no relaying|relaying (?:mail )?(?:to|from) .{0,60}(?:denied|not allowed)|relay not|not a gateway|",
                r"relay access|open relay|not (?:a |an )?(?:local|our|accepted|hosted) domain|",
                r"is not in my list of allowed rcpthosts"
            ),
        ),
        rule(
            "authfailure",
            concat!(
                r"\bspf\b|sender policy framework|\bdkim\b|\bdmarc\b|domainkeys|unauthenticated (?:e-?mail|mail|message|sender)|",
                r"sender (?:authentication|auth) (?:fail|check|error)|authentication (?:checks?|results?) (?:fail|did not pass)|",
                r"(?:does|did) not pass (?:our )?(?:authentication|spf|dkim|dmarc)|email authentication"
            ),
        ),
        rule(
            "userunknown",
            concat!(
                r"user(?:name)? (?:is |was )?(?:unknown|not found|not known|invalid|not exist|does ?n[o']t exist|doesn't exist)|",
                r"unknown (?:local[- ]?(?:part|user)|user|recipient|mailbox|address|alias|account|e-?mail)|",
                r"(?:no such|invalid|bad|non-?existent|unrouteable|unroutable|illegal) (?:local )?(?:user|recipient|mailbox|address|account|person|e-?mail(?: address)?|destination (?:mailbox|address)|alias)|",
                r"(?:recipient|mail ?box|address|account|addressee|user|e-?mail(?: address)?|local part|alias)(?: name)?(?: is| was| does)? (?:unknown|not found|not known|invalid|unavailable|not (?:a )?valid|does ?n[o']t exist|doesn't exist|not exist|non-?existent|no longer (?:valid|exists?)|not listed|not recognized|not registered)|",
                r"does not exist|doesn't exist|dosn't exist|not (?:a )?(?:valid|known|registered) (?:user|recipient|mailbox|address|account|e-?mail)|",
                r"no (?:such )?mail ?box(?: here| by that name)?|mailbox (?:not found|unavailable)|",
                r"(?:not|isn't|is not) (?:our|a) (?:customer|user|subscriber)|no (?:such )?account|",
                r"could(?: not|n't) find (?:a |any |the )?(?:user|mailbox|recipient|account)|not a known user|no valid recipients|",
                r"addressee unknown|bad destination|user not local|recipient (?:not found|rejected: user)|",
                r"unknown or illegal|not (?:listed|found) in (?:the )?(?:directory|address book|recipient list|ldap)|",
                r"recipientnotfound|no such recipient|undeliverable address|user lookup failed|invalid (?:mailbox|recipient)"
            ),
        ),
        rule(
            "filtered",
            concat!(
                r"(?:message|mail|e-?mail) (?:was |has been )?(?:filtered|refused by (?:the )?recipient)|",
                r"rejected by (?:the )?recipient|recipient (?:has )?(?:rejected|refused|blocked) (?:your|the|this|all)|",
                r"(?:not |isn't |is not )?accept(?:ing|s)? (?:mail|messages|e-?mails?) from (?:you|your|this|the sender)|",
                r"user refuses?|refused to accept|blocked by (?:the )?(?:recipient|user)|",
                r"does not accept (?:mail|e-?mail|messages) from|has restricted|only accepts? (?:mail|messages) from|",
                r"restricted recipient|you are not (?:allowed|authorized|permitted) to (?:send|post|email)|",
                r"not authorized to (?:send|post)|sender is not (?:allowed|authorized|permitted)|",
                r"permission (?:denied|to post)|do not have permission|recipient (?:filter|has a filter)|",
                r"filtered by|rejected by (?:a |the )?(?:user|recipient)(?:'s)? filter"
            ),
        ),
        rule(
            "requireptr",
            concat!(
                r"reverse (?:dns|lookup|hostname|address|name|mapping|resolution)|\bptr\b|\brdns\b|",
                r"no (?:reverse|rdns)|cannot find your (?:reverse )?hostname|",
                r"(?:ip|client|host) (?:address )?(?:has no|without|does not have|doesn't have) (?:a |any )?(?:ptr|reverse|hostname)|",
                r"unresolvable (?:ip|client|address)|cannot resolve your (?:ip|address|hostname)|",
                r"forward[- ]confirmed|fcrdns|reverse-dns|dns ptr|does not resolve to|",
                r"hostname does not match|unable to resolve (?:your|the client)"
            ),
        ),
        rule(
            "notcompliantrfc",
            concat!(
                r"rfc ?(?:5322|2822|822|5321|2821|1123)|not (?:rfc[- ]?)?compliant|",
                r"multiple (?:from|sender|subject|date|message-id|to) (?:header|field|line)|duplicate header|",
                r"violat\w* (?:of )?rfc"
            ),
        ),
        rule(
            "badreputation",
            concat!(
                r"reputation|low (?:sender )?score|sender score|user complaints|",
                r"unexpected volume or user complaints"
            ),
        ),
        rule(
            "contenterror",
            concat!(
                r"content (?:error|type)|header (?:error|syntax|too long|line too long|is malformed)|",
                r"invalid (?:header|mime|content|character)|mime (?:error|format|structure|type)|",
                r"(?:message|mail) format|line too long|malformed|bad (?:header|content)|",
                r"encoding (?:error|problem)|improper(?:ly)? (?:formatted|encoded)"
            ),
        ),
        rule(
            "rejected",
            concat!(
                r"sender (?:address |domain )?(?:was )?(?:rejected|refused|denied|blacklisted|unknown|invalid|blocked|not (?:allowed|permitted|authorized|verified|accepted))|",
                r"domain of sender address|sender verif\w* fail|sender domain (?:must|not|does|is|unknown)|",
                r"(?:unknown|invalid|bad|unverified|unverifiable|nonexistent) sender|",
                r"envelope (?:from|sender)|mail from (?:address )?(?:rejected|refused|denied|invalid|not accepted)|",
                r"(?:invalid|bad|unknown) (?:from|return) address|return[- ]path|",
                r"(?:rejected|refused|denied|blocked) (?:the |your )?sender|sender (?:address )?is (?:on|in) (?:a |the |our )?(?:black|block|deny)"
            ),
        ),
        rule(
            "hostunknown",
            concat!(
                r"host (?:or domain )?(?:name )?(?:unknown|not found|lookup failed|does not exist|is unknown)|",
                r"unknown (?:host|domain|mail domain)|",
                r"domain (?:name )?(?:not found|does not exist|doesn't exist|is not valid|unknown|invalid|not exist|lookup failed|has no mx|could not be found)|",
                r"(?:no such|invalid|nonexistent|non-existent|bad|unrouteable|unroutable) (?:mail )?(?:domain|host)|",
                r"name or service not known|no mx (?:record|for|host)|mx (?:record )?lookup (?:failed|failure)|",
                r"name ?server error|not (?:a )?valid (?:mail )?domain|could not resolve (?:mx|domain|host)|",
                r"cannot resolve (?:mx|domain|host)|host ?name lookup failure|nxdomain|",
                r"domain is not (?:configured|hosted|registered)|unable to route|no route to domain|",
                r"unresolvable (?:domain|host)|host not found"
            ),
        ),
        rule(
            "spamdetected",
            concat!(
                r"\bspam(?:\b|my|mer|ming|ish)|junk (?:mail|e-?mail)|unsolicited|bulk (?:mail|e-?mail)|\bube\b|\buce\b|",
                r"spamassassin|considered (?:as )?(?:junk|unsolicited|bulk)|",
                r"classified as (?:junk|bulk)|phishing|blocked for abuse|",
                r"message content rejected|content (?:filter|scan)|high probability|score too high|",
                r"not accepted for policy reasons"
            ),
        ),
        rule(
            "toomanyconn",
            concat!(
                r"too many (?:concurrent |simultaneous |open )?connections|connection (?:frequency|rate|limit)|",
                r"max(?:imum)? (?:number of )?(?:connections|sessions)|too many sessions|",
                r"connection count|concurrent connections"
            ),
        ),
        rule(
            "speeding",
            concat!(
                r"rate ?limit|rate-limit|sending rate|too (?:many|much) (?:messages|mail|e-?mails)|",
                r"receiving mail (?:at a rate|too fast)|exceeded (?:the )?(?:rate|sending|message)|throttl|",
                r"too fast|at a rate|messages per (?:hour|minute|second|day)|unusual rate"
            ),
        ),
        rule(
            "blocked",
            concat!(
                r"block(?:ed|list|listed|ing)|black ?list|\brbl\b|dnsbl|spamhaus|spamcop|barracuda|sorbs|",
                r"listed (?:at|in|on|by)|your (?:ip|host|server|network|domain|mail server)|",
                r"(?:client|connecting) (?:host|ip|address)|ip (?:address )?(?:\S+ )?(?:is )?(?:rejected|not allowed|banned|refused)|",
                r"access denied|banned|not allowed to (?:connect|send)|",
                r"connection (?:rejected|refused) (?:by|from|due)|refused to talk|go away|\bhelo\b|\behlo\b|",
                r"dynamic ip|dial-?up|residential|does not match your ip|mail server is not allowed|",
                r"service (?:is )?not available.{0,40}(?:ip|host)|poor reputation"
            ),
        ),
    ]
});

/// Step 2, in order: reasons that only the text can reveal.
static TEXT_ONLY: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(
            "virusdetected",
            r"virus|malware|infected|trojan|\bworm\b|malicious",
        ),
        rule(
            "policyviolation",
            concat!(
                r"polic(?:y|ies)|violat|prohibited|not (?:permitted|allowed) by|",
                r"acceptable use|terms of (?:service|use)|forbidden"
            ),
        ),
        rule(
            "networkerror",
            concat!(
                r"connection (?:was )?(?:refused|timed? ?out|reset|closed|lost|dropped|failure|failed)|timed? ?out|timeout|",
                r"network (?:is )?(?:unreachable|error|failure)|no route to host|(?:host|server) (?:is )?unreachable|unreachable|",
                r"(?:could not|unable to|can't|cannot|failed to) connect|connect to .{0,80} failed|lost connection|",
                r"broken pipe|too many hops|hop count|mail loop|routing loop|loops? back|loop detected|",
                r"dns (?:error|failure|problem|lookup|timeout)|temporary dns|servfail"
            ),
        ),
        rule(
            "systemerror",
            concat!(
                r"system (?:error|failure|problem)|internal (?:server )?error|server error|local error|",
                r"mail system (?:error|problem)|configuration error|misconfigur|processing error|i/o error|",
                r"temporary (?:local )?(?:failure|problem|error)|try again later|temporar|",
                r"resources? (?:temporarily )?unavailable|service (?:temporarily )?unavailable"
            ),
        ),
        rule(
            "systemfull",
            concat!(
                r"system (?:is )?full|insufficient system storage|(?:disk|file ?system|server storage) (?:is )?full|",
                r"no space left on device|out of (?:disk )?space|not enough (?:disk )?space|insufficient (?:disk )?space"
            ),
        ),
        rule(
            "notaccept",
            concat!(
                r"(?:does not|doesn't|do not|will not|won't|not) accept(?:ing)? (?:any )?(?:e-?)?mail|null mx|",
                r"no mail(?: is)? accepted|not accepting (?:network )?messages|accepts no mail|nolisting|",
                r"host does not receive mail"
            ),
        ),
        rule(
            "expired",
            concat!(
                r"expired|delivery time|retry (?:time|timeout|period)|too long in (?:the )?queue|giving up|gave up|",
                r"could not be delivered (?:within|for|in)|has been delayed|been in (?:the )?queue|",
                r"no further (?:delivery )?attempts|undeliverable for|not (?:been )?delivered (?:within|for|in)|",
                r"cannot send message for|message (?:is|has been|was) (?:delayed|deferred)|will (?:be )?retr|",
                r"still (?:being )?(?:retried|trying)|maximum (?:time|retries)|retry limit|too many retries"
            ),
        ),
        rule(
            "failedstarttls",
            r"starttls|tls (?:is )?required|tls negotiation|requires? (?:a )?secure connection",
        ),
        rule(
            "securityerror",
            concat!(
                r"authentication (?:is )?required|must (?:be )?authenticat|auth(?:entication)? (?:failed|failure|error|mechanism)|",
                r"not authorized|unauthori[sz]ed|insecure|security|certificate|encrypt|credentials"
            ),
        ),
        rule(
            "mailererror",
            concat!(
                r"mailer error|x-unix|command (?:died|failed)|exit (?:code|status)|procmail|pipe to|",
                r"program (?:failed|exited)|local delivery failed|unknown mailer"
            ),
        ),
        rule(
            "syntaxerror",
            concat!(
                r"syntax error|command (?:not )?(?:recognized|unrecognized)|unrecognized command|bad sequence|",
                r"out of sequence|invalid command|command not implemented"
            ),
        ),
    ]
});

/// The reason an enhanced status code decides on its own, if any.
pub fn decisive_status_reason(status: &str) -> Option<&'static str> {
    let (_, detail) = status.split_once('.')?;
    Some(match detail {
        "1.1" | "1.3" | "1.4" | "1.10" => "userunknown",
        "1.2" => "hostunknown",
        "1.6" => "hasmoved",
        "1.7" | "1.8" => "rejected",
        "2.2" => "mailboxfull",
        "2.3" => "exceedlimit",
        "3.1" => "systemfull",
        "3.2" => "notaccept",
        "3.4" => "mesgtoobig",
        "4.6" => "networkerror",
        "7.13" => "suspend",
        "7.20" | "7.21" | "7.22" | "7.23" | "7.24" | "7.26" => "authfailure",
        "7.25" => "requireptr",
        "7.27" => "notaccept",
        _ => return None,
    })
}

/// What the subject of a status code says when nothing else did.
fn fallback_status_reason(status: &str) -> Option<&'static str> {
    let (_, detail) = status.split_once('.')?;
    let (subject, _) = detail.split_once('.')?;
    Some(match (subject, detail) {
        (_, "2.0" | "2.1") => "filtered",
        (_, "2.4") => "systemerror",
        (_, "4.4") => "hostunknown",
        (_, "4.7") => "expired",
        ("3", _) => "systemerror",
        ("4", _) => "networkerror",
        ("5", _) => "syntaxerror",
        ("6", _) => "contenterror",
        ("7", _) => "securityerror",
        _ => return None,
    })
}

/// What the report says about one recipient, as [`reason_for`] reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    /// Enhanced status code (`5.1.1`).
    pub status: Option<&'a str>,
    /// The remote server's words, or the report's.
    pub diagnostic: &'a str,
    /// True for a delay notice (or RFC 3464 `Action: delayed`).
    pub delayed: bool,
    /// RFC 3464 Diagnostic-Code type, lowercased (`smtp`, `x-unix`).
    pub diagnostic_type: Option<&'a str>,
    /// The SMTP command the remote server answered, upper-case.
    pub command: Option<&'a str>,
}

/// The sisimai reason name for what a report says about one recipient.
pub fn reason_for(e: &Evidence<'_>) -> &'static str {
    if e.status.is_some_and(|s| s.starts_with('2')) {
        return "delivered";
    }
    let text = e.diagnostic;
    let decided = e.status.and_then(decisive_status_reason);
    for rule in DECISIVE.iter() {
        if decided == Some(rule.reason) || (!text.is_empty() && rule.text.is_match(text)) {
            return rule.reason;
        }
    }
    if !text.is_empty() {
        if let Some(rule) = TEXT_ONLY.iter().find(|r| r.text.is_match(text)) {
            return rule.reason;
        }
    }
    if let Some(reason) = decided {
        return reason;
    }
    if e.diagnostic_type.is_some_and(|t| t.starts_with("x-unix")) {
        return "mailererror";
    }
    if e.delayed {
        return "expired";
    }
    if matches!(e.command, Some("EHLO" | "HELO" | "CONNECT")) {
        return "blocked";
    }
    if let Some(reason) = e.status.and_then(fallback_status_reason) {
        return reason;
    }
    if text.trim().is_empty() {
        "undefined"
    } else {
        "onhold"
    }
}

/// sisimai's hard bounce: permanent and of a reason that does not go away.
/// `None` for reasons that are not failures (delivered, feedback,
/// vacation) and when permanence is unknown.
pub fn is_hard(reason: &str, permanent: Option<bool>) -> Option<bool> {
    if matches!(reason, "delivered" | "feedback" | "vacation") {
        return None;
    }
    Some(permanent? && HARD_REASONS.contains(&reason))
}

static STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b").expect("valid regex"));

/// The enhanced status code at the start of a `Status:` field value.
pub fn parse_status(value: &str) -> Option<String> {
    let c = STATUS.captures(value.trim())?;
    let m = c.get(0)?;
    if m.start() > 0 {
        return None;
    }
    Some(m.as_str().to_string())
}

/// The first enhanced status code in free text, skipping what looks like a
/// version number or an IP address (`8.12.11`, `4.5.6.7`).
pub fn find_status(text: &str) -> Option<String> {
    for m in STATUS.find_iter(text) {
        let before = text[..m.start()].chars().next_back();
        let after = text[m.end()..].chars().next();
        let after2 = text[m.end()..].chars().nth(1);
        let dotted_before = matches!(before, Some('.') | Some('/') | Some('v') | Some('V'));
        let dotted_after = after == Some('.') && after2.is_some_and(|c| c.is_ascii_digit());
        if !dotted_before && !dotted_after && !text[m.end()..].starts_with('-') {
            return Some(m.as_str().to_string());
        }
    }
    None
}

static REPLYCODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s:;(\[<=#])([245][0-5][0-9])(?:[ \-]|$)").expect("valid regex")
});

/// The first SMTP reply code in free text (`550`, `452`...).
pub fn find_replycode(text: &str) -> Option<u16> {
    REPLYCODE
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .find(|m| {
            // a reply code is followed by words or a status, not by units
            let rest = text[m.end()..].trim_start_matches([' ', '-']);
            !rest.starts_with(|c: char| c.is_ascii_digit() && !rest.starts_with(['2', '4', '5']))
                && !rest.to_ascii_lowercase().starts_with("bytes")
        })
        .and_then(|m| m.as_str().parse().ok())
}

/// Decides status, permanence, reason and hardness for one recipient.
pub(crate) fn finish(r: &Reported) -> FailedRecipient {
    let delayed = r.delayed || r.action.as_deref() == Some("delayed");
    let status = r.status.clone();
    let reason = reason_for(&Evidence {
        status: status.as_deref(),
        diagnostic: &r.diagnostic,
        delayed,
        diagnostic_type: r.diagnostic_type.as_deref(),
        command: r.command.as_deref(),
    });
    let permanent = match status.as_deref().map(|s| s.as_bytes()[0]) {
        Some(b'5') => Some(true),
        Some(b'4') => Some(false),
        Some(_) => None,
        None => match r.replycode.map(|c| c / 100) {
            Some(5) => Some(true),
            Some(4) => Some(false),
            _ if reason == "delivered" => None,
            _ => Some(!delayed),
        },
    };
    let diagnostic = r.diagnostic.trim();
    FailedRecipient {
        recipient: r.address.clone(),
        status,
        replycode: r.replycode,
        permanent,
        hard: is_hard(reason, permanent),
        reason: reason.to_string(),
        diagnostic: (!diagnostic.is_empty())
            .then(|| super::view::truncate(diagnostic, 2000).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(status: Option<&str>, text: &str) -> &'static str {
        reason_for(&Evidence {
            status,
            diagnostic: text,
            ..Evidence::default()
        })
    }

    #[test]
    fn decisive_status_codes() {
        assert_eq!(reason(Some("5.1.1"), ""), "userunknown");
        assert_eq!(reason(Some("5.1.2"), ""), "hostunknown");
        assert_eq!(reason(Some("5.2.2"), ""), "mailboxfull");
        assert_eq!(reason(Some("4.2.2"), ""), "mailboxfull");
        assert_eq!(reason(Some("5.3.4"), ""), "mesgtoobig");
        assert_eq!(reason(Some("5.7.26"), ""), "authfailure");
        assert_eq!(reason(Some("5.7.25"), ""), "requireptr");
        assert_eq!(reason(Some("5.1.6"), ""), "hasmoved");
        assert_eq!(reason(Some("2.0.0"), "ok"), "delivered");
    }

    #[test]
    fn text_beats_generic_codes() {
        assert_eq!(reason(Some("5.0.0"), "550 User unknown"), "userunknown");
        assert_eq!(
            reason(
                Some("5.7.1"),
                "Client host [192.0.2.1] blocked using zen.spamhaus.org"
            ),
            "blocked"
        );
        assert_eq!(
            reason(
                Some("5.7.1"),
                "Message rejected as spam by Content Filtering"
            ),
            "spamdetected"
        );
        assert_eq!(
            reason(None, "Recipient address rejected: Relay access denied"),
            "norelaying"
        );
        assert_eq!(
            reason(
                None,
                "The email account that you tried to reach is disabled."
            ),
            "suspend"
        );
        assert_eq!(
            reason(None, "552 Message size exceeds fixed maximum message size"),
            "mesgtoobig"
        );
        assert_eq!(
            reason(None, "host example.org said: 550 5.7.1 SPF check failed"),
            "authfailure"
        );
        assert_eq!(
            reason(None, "Host or domain name not found. Name service error"),
            "hostunknown"
        );
        assert_eq!(
            reason(
                None,
                "connect to mx.example.org[192.0.2.1]:25: Connection timed out"
            ),
            "networkerror"
        );
        assert_eq!(
            reason(None, "This message contains a virus"),
            "virusdetected"
        );
    }

    #[test]
    fn mailbox_full_beats_user_unknown_code() {
        assert_eq!(reason(Some("5.1.1"), "mailbox is full"), "mailboxfull");
    }

    #[test]
    fn fallbacks() {
        let delayed = Evidence {
            delayed: true,
            ..Evidence::default()
        };
        assert_eq!(reason_for(&delayed), "expired");
        assert_eq!(reason(Some("5.7.0"), ""), "securityerror");
        assert_eq!(reason(Some("5.0.0"), "something odd happened"), "onhold");
        assert_eq!(reason(None, ""), "undefined");
        assert_eq!(reason(Some("4.4.7"), ""), "expired");
    }

    #[test]
    fn hard_and_soft() {
        assert_eq!(is_hard("userunknown", Some(true)), Some(true));
        assert_eq!(is_hard("hostunknown", Some(true)), Some(true));
        assert_eq!(is_hard("userunknown", Some(false)), Some(false));
        assert_eq!(is_hard("mailboxfull", Some(true)), Some(false));
        assert_eq!(is_hard("blocked", Some(true)), Some(false));
        assert_eq!(is_hard("delivered", None), None);
        assert_eq!(is_hard("userunknown", None), None);
    }

    #[test]
    fn status_in_text() {
        assert_eq!(
            find_status("550 5.1.1 <a@b.c>: unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(find_status("by host (8.12.11/8.12.11) with ESMTP"), None);
        assert_eq!(find_status("from 192.0.2.1 (4.5.6.7)"), None);
        assert_eq!(find_status("#5.2.2 mailbox full").as_deref(), Some("5.2.2"));
        assert_eq!(parse_status("4.4.1 (timeout)").as_deref(), Some("4.4.1"));
        assert_eq!(parse_status("x 5.1.1"), None);
    }

    #[test]
    fn replycode_in_text() {
        assert_eq!(find_replycode("host said: 550-5.1.1 The email"), Some(550));
        assert_eq!(find_replycode("smtp; 452 4.2.2 over quota"), Some(452));
        assert_eq!(find_replycode("message of 500 bytes"), None);
        assert_eq!(find_replycode("no code here"), None);
    }
}
