//! Bounces written as text: qmail, Postfix, Exim, Sendmail, Exchange,
//! Lotus, GroupWise, Google, Microsoft, Yahoo and the many others that do
//! not send (or do not only send) RFC 3464 fields.
//!
//! Whether a message is a bounce is decided on three signs: a sender that
//! is a mail system (`MAILER-DAEMON`, `postmaster`, "Mail Delivery
//! System"), a subject that says so ("Undelivered Mail Returned to
//! Sender", "failure notice"...) and words in the notice ("could not be
//! delivered"). Two of the three are needed, or an `X-Failed-Recipients`
//! header.
//!
//! Recipients are the addresses that the notice presents as failed: an
//! address that leads its line (`<user@example.org>:` in qmail and
//! Postfix, an indented address in Exim and Exchange), an address under a
//! line that introduces failed recipients, or one on a line with an error.
//! The sender's own addresses are never recipients.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

use super::address::{self, Found};
use super::dsn::command_of;
use super::reason::{find_replycode, find_status};
use super::view::View;
use super::Reported;

/// The most recipients taken from one text notice.
const MAX_RECIPIENTS: usize = 100;
/// The most lines of notice read.
const MAX_LINES: usize = 5000;

/// A text bounce: the recipients it names (possibly none).
#[derive(Debug, Clone, Default)]
pub(crate) struct TextBounce {
    /// The recipients found, with what the notice says about each.
    pub recipients: Vec<Reported>,
}

fn ci(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 24)
        .build()
        .expect("valid pattern")
}

static DAEMON_NAME: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"mailer[- _]?daemon|mail ?delivery (?:sub)?system|delivery (?:sub)?system|mail delivery service|",
        r"post ?master|mail administrator|system administrator|mail ?system|internet mail delivery|",
        r"\bndr\b|delivery status|notification|smtp.?mail.?service|e-?mail interconnect|",
        r"antivirus|mail ?server|mail ?gateway|lsmtp|\bmta\b|mmsc|mail router|returned mail"
    ))
});

static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"undeliver|undelivered|not (?:be )?delivered|delivery (?:status|failure|failed|notification|problem|report|has failed|error)|",
        r"failure (?:notice|delivery)|failed delivery|returned mail|returning message|mail delivery|",
        r"non[- ]?delivery|could not be delivered|message status|nondeliverable|delayed mail|",
        r"warning: (?:message|could not)|failed mail|mail not delivered|mail could not|delivery failure|",
        r"\bbounced?\b|returned to sender|rejected|message (?:was )?not sent|",
        r"non remis|non-remise|unzustellbar|nicht zugestellt|no (?:se )?(?:pudo|puede) entregar|",
        r"mancata consegna|n[ãa]o (?:é possível )?entreg|[ée]chec de (?:la )?(?:remise|livraison)|zustellung fehlgeschlagen|",
        r"entrega fallida|no entregado|niet afgeleverd|",
        r"non (?:recapitabile|consegnat)|onbestelbaar|niet bezorgd|não (?:foi )?entregue|",
        r"не доставлено|не может быть доставлено|error sending|mail failure|\bfailure\b"
    ))
});

static BOUNCE_BODY: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"could not be delivered|couldn't be delivered|was not delivered|wasn't delivered|undeliverable|",
        r"delivery (?:to the following|has failed|failed|status notification|problem|attempts?)|",
        r"permanent(?:ly)? (?:fatal )?error|following address(?:es)? failed|failed recipient|",
        r"returned to (?:the )?sender|unable to deliver|I'm sorry to (?:have to )?inform you|",
        r"this is the mail (?:delivery )?system|qmail-send program|mail delivery (?:subsystem|failed)|",
        r"message could not|the following recipient|undelivered mail|not be delivered|",
        r"your message .{0,120}(?:could not|couldn't|wasn't|was not|cannot|can't|has not|did not)|",
        r"delay(?:ed)? (?:delivery|mail)|will (?:be )?retr|not deliverable|non-?delivery|",
        r"user unknown|no such user|unknown user|mailbox (?:is )?(?:full|unavailable)|",
        r"transcript of session|could not deliver|delivery to .{0,80} failed|",
        r"message (?:was |has been )?(?:rejected|refused|bounced|blocked)|failed to deliver|",
        r"remote (?:host|server|mta) (?:said|returned|responded)|smtp error|",
        r"not (?:yet )?been delivered|host unknown|recipient address rejected|delivery notification|",
        r"not a valid (?:user|recipient|mailbox|address)|invalid (?:user|recipient|mailbox|address)|",
        r"la remise a échoué|fehler bei der zustellung|error al entregar|recapito non riuscito|bezorging is mislukt|falha na entrega|",
        r"(?:was|were|has been) (?:rejected|refused|returned)|not accepted|user not found|",
        r"(?:^|\n)\s*<[^>\s]+@[^>\s]+>:\s*(?:\n|$)"
    ))
});

static DELAY_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"\bdelay|delayed|still being retried|will (?:be )?retr|not yet (?:been )?delivered|deferred|",
        r"warning: (?:message|could not send)|delivery status notification \(delay\)|retard|verzögert|verzoegert"
    ))
});

static DELAY_BODY: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"will (?:continue|keep) (?:to )?(?:try|trying|attempt)|will (?:be )?retr(?:y|ied)|still (?:be )?(?:trying|retrying)|",
        r"has not yet been delivered|not yet been delivered|no action is required on your part|",
        r"this is a warning message only|delivery attempts will continue|is delayed|has been delayed|",
        r"delivery (?:is |has been )?delayed|temporarily deferred"
    ))
});

static GIVEN_UP: LazyLock<Regex> = LazyLock::new(|| {
    ci(r"(?:permanent|fatal) error|could not be delivered|giving up|gave up|failed permanently")
});

/// True when the message says delivery is delayed, not abandoned.
pub(crate) fn is_delay_notice(view: &View) -> bool {
    let subject = view.subject.as_deref().unwrap_or("");
    if DELAY_SUBJECT.is_match(subject) {
        return true;
    }
    let head = super::view::truncate(&view.notice, 4000);
    DELAY_BODY.is_match(head) && !GIVEN_UP.is_match(head)
}

/// True when the sender is a mail system rather than a person.
pub(crate) fn is_daemon_sender(view: &View) -> bool {
    let from_is_system = view.from.as_deref().is_some_and(address::is_system);
    let name_is_system = view
        .from_name
        .as_deref()
        .is_some_and(|n| DAEMON_NAME.is_match(n));
    let local_is_system = view.from.as_deref().is_some_and(|a| {
        let local = a.split('@').next().unwrap_or("");
        DAEMON_NAME.is_match(local)
    });
    let null_from = view.header("from").is_some_and(|f| {
        let f = f.trim();
        f.ends_with("<>") || f.eq_ignore_ascii_case("mailer-daemon")
    });
    from_is_system || name_is_system || local_is_system || null_from
}

/// True when the subject says the message answers another (`Re:`, `AW:`...).
fn is_reply(view: &View) -> bool {
    let subject = view.subject.as_deref().unwrap_or("").trim_start();
    let lower = subject.to_lowercase();
    [
        "re:", "re :", "aw:", "sv:", "antw:", "rif:", "r:", "ynt:", "odp:",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
}

/// True when the subject reads like a bounce's.
pub(crate) fn has_bounce_subject(view: &View) -> bool {
    view.subject
        .as_deref()
        .is_some_and(|s| BOUNCE_SUBJECT.is_match(s))
}

/// True when the notice reads like a bounce's.
pub(crate) fn has_bounce_body(view: &View) -> bool {
    BOUNCE_BODY.is_match(super::view::truncate(&view.notice, 20_000))
}

/// Reads a text bounce, or returns `None` when the message is not one.
pub(crate) fn parse(view: &View) -> Option<TextBounce> {
    let failed_header = failed_recipients_header(view);
    let dsn =
        !view.delivery_status.is_empty() || view.report_type.as_deref() == Some("delivery-status");
    let daemon = is_daemon_sender(view);
    let subject = has_bounce_subject(view);
    let body = has_bounce_body(view);
    let signs = [daemon, subject, body].iter().filter(|b| **b).count();
    if failed_header.is_empty() && !dsn && (signs < 2 || (!daemon && is_reply(view))) {
        // a person answering a bounce quotes it: that is still a person
        return None;
    }
    let mut recipients = find_recipients(view);
    if recipients.is_empty() {
        // Exim and Google name the failed recipients in a header; the
        // notice is more precise when it names them too.
        for a in failed_header {
            if !recipients.iter().any(|r| address::same(&r.address, &a)) {
                let diagnostic = error_lines(&view.notice, &a);
                recipients.push(Reported {
                    address: a,
                    diagnostic,
                    ..Reported::default()
                });
            }
        }
    }
    if recipients.is_empty() {
        recipients.extend(sole_original_recipient(view));
    }
    if recipients.len() == 1 && !has_codes(&recipients[0].diagnostic) {
        let extra = code_lines(&view.notice);
        if !extra.is_empty() {
            let r = &mut recipients[0];
            r.diagnostic = format!("{} {}", r.diagnostic, extra).trim().to_string();
        }
    }
    for r in &mut recipients {
        r.status = r.status.take().or_else(|| find_status(&r.diagnostic));
        r.replycode = r.replycode.or_else(|| find_replycode(&r.diagnostic));
        r.command = r.command.take().or_else(|| command_of(&r.diagnostic));
    }
    Some(TextBounce { recipients })
}

fn failed_recipients_header(view: &View) -> Vec<String> {
    view.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-failed-recipients"))
        .flat_map(|(_, v)| address::find_all(v))
        .map(|f| f.address)
        .collect()
}

/// Lines that only carry other messages' metadata: never a recipient there.
static METADATA_LINE: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"^\s*(?:received|from|return-path|message-id|reporting-mta|remote-mta|sender|reply-to|in-reply-to|",
        r"references|x-[a-z0-9-]+|dkim-signature|authentication-results|date|subject|arrival-date|",
        r"content-[a-z-]+|errors-to|list-[a-z-]+|envelope-from|mail from|original-envelope-id|",
        r"resent-[a-z-]+|delivered-to|x-original-to|cc|bcc)\s*:"
    ))
});

/// Words that present the addresses that follow as failed.
static INTRO_LINE: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"(?:following|these|those) (?:recipients?|address(?:es)?|destinations?|users?|e-?mail address(?:es)?)|",
        r"could ?n[o']t (?:be )?deliver(?:ed)? (?:to|your)|failed recipients?|permanent fatal errors?|recipient\(s\)|",
        r"address(?:es)?\(?e?s?\)? failed|undeliverable to|(?:was not|wasn't|couldn't be|could not be|has not been|not been) delivered to|",
        r"delivery (?:has )?failed to|",
        r"unable to deliver (?:your message |the message )?to|not (?:be )?delivered to|delivery to the following|",
        r"could not be reached|there was an error|failed to deliver to|invalid recipients?|unknown recipients?|",
        r"transient non-fatal errors|was undeliverable|your message (?:to|for)|message (?:to|for) .{0,3}$|",
        r"delivery problems?|failure reasons?|original recipient|rcpt to|recipient address|(?:originally |was )?addressed to|",
        r"(?:ces|diese|estos|seguenti|deze|estes) (?:destinataires|empfänger|destinatarios|destinatari|ontvangers|destinatários)|",
        r"(?:deliver(?:ing|y)?|send(?:ing)?) (?:of )?(?:your |the |this )?(?:mail|message|e-?mail) to|undeliverable to"
    ))
});

/// Words that mark a line as an error report.
static ERROR_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b|unknown|not found|no such|does not exist|doesn't exist|",
        r"invalid|rejected|refused|denied|failed|failure|undeliverable|could not|couldn't|unable|",
        r"full|quota|disabled|inactive|suspended|unavailable|blocked|error|not delivered|not deliver|",
        r"expired|timed? ?out|bounced?|unrouteable|not allowed|said:|says:|permanent|delayed|deferred|",
        r"retry|giving up|problem|wrong|bad (?:address|recipient|destination)|moved|not accept"
    ))
});

/// What may stand before an address that leads its line.
static LEADING_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"^[\W\d]{0,6}(?:(?:rcpt to|recipient|recipients|failed recipients?|original recipient|final recipient|",
        r"intended recipient|address|addressed to|bad address|invalid (?:address|recipient)|user|mailbox|",
        r"unknown user|unknown recipient|delivery to|e-?mail(?: address)?|destination|for|failed address|",
        r"recipient address|the recipient|originally addressed to|addressed to)\W{0,4})?",
        r"(?:(?:smtp|rfc822|ex)\s*[:;]\s*)?$"
    ))
});

/// Addresses of the report itself (its sender and its recipient, who sent
/// the original): never failed recipients.
fn report_addresses(view: &View) -> Vec<String> {
    let mut own: Vec<String> = view.to.clone();
    own.extend(view.from.clone());
    own
}

/// Addresses of the original's sender: rarely failed recipients (only
/// when someone wrote to themselves).
fn original_senders(view: &View) -> Vec<String> {
    ["from", "return-path", "sender", "reply-to"]
        .iter()
        .filter_map(|h| view.original_header(h))
        .flat_map(address::find_all)
        .map(|f| f.address)
        .collect()
}

/// Addresses the original was sent to, when the report includes it.
fn original_recipients(view: &View) -> Vec<String> {
    ["to", "cc", "delivered-to", "x-original-to"]
        .iter()
        .filter_map(|h| view.original_header(h))
        .flat_map(address::find_all)
        .map(|f| f.address)
        .collect()
}

static TO_LINE: LazyLock<Regex> = LazyLock::new(|| ci(r"^\s*to:\s*(.{3,200})$"));

/// When the notice names no recipient, the one address the original was
/// sent to (from its headers, or a `To:` line the notice quotes).
fn sole_original_recipient(view: &View) -> Option<Reported> {
    let mut all = original_recipients(view);
    if all.is_empty() {
        all = view
            .notice
            .lines()
            .take(MAX_LINES)
            .filter_map(|l| TO_LINE.captures(l))
            .flat_map(|c| address::find_all(&c[1]))
            .map(|f| f.address)
            .collect();
    }
    let own = report_addresses(view);
    all.retain(|a| !own.iter().any(|o| address::same(o, a)));
    all.dedup_by(|a, b| address::same(a, b));
    if all.len() != 1 {
        return None;
    }
    let address = all.pop()?;
    Some(Reported {
        diagnostic: code_lines(&view.notice),
        address,
        ..Reported::default()
    })
}

/// One address seen in the notice, with how sure we are it failed.
struct Candidate {
    found: Found,
    line: usize,
    score: i32,
    led: bool,
    /// Introduced on its own line ("delivery to X failed"): the
    /// explanation follows.
    introduced: bool,
}

fn find_recipients(view: &View) -> Vec<Reported> {
    let lines: Vec<&str> = view.notice.lines().take(MAX_LINES).collect();
    let own = report_addresses(view);
    let senders = original_senders(view);
    let originals = original_recipients(view);
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut last_intro: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        let found = address::find_all(line);
        if found.is_empty() {
            if INTRO_LINE.is_match(line) {
                last_intro = Some(i);
            }
            continue;
        }
        if METADATA_LINE.is_match(line) {
            continue;
        }
        for f in found {
            if view
                .from
                .as_deref()
                .is_some_and(|o| address::same(o, &f.address))
            {
                continue;
            }
            let mut c = score(&lines, i, &f, last_intro, &originals);
            if senders.iter().any(|o| address::same(o, &f.address)) {
                c.score -= 2;
            }
            if own.iter().any(|o| address::same(o, &f.address)) {
                c.score -= 3;
            }
            candidates.push(c);
        }
        if INTRO_LINE.is_match(line) {
            last_intro = Some(i);
        }
    }
    let best = candidates.iter().map(|c| c.score).max().unwrap_or(0);
    let threshold = if best >= 5 { 4 } else { 3 };
    let mut out: Vec<Reported> = Vec::new();
    for c in candidates.iter().filter(|c| c.score >= threshold) {
        if address::is_system(&c.found.address) && !c.led {
            continue;
        }
        if let Some(r) = out
            .iter_mut()
            .find(|r| address::same(&r.address, &c.found.address))
        {
            let more = block_after(&lines, c.line, &c.found, c.led);
            if !r.diagnostic.contains(more.as_str())
                && has_codes(&more)
                && !has_codes(&r.diagnostic)
            {
                r.diagnostic = format!("{} {}", r.diagnostic, more).trim().to_string();
            }
            continue;
        }
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
        let mut diagnostic = block_after(&lines, c.line, &c.found, c.led || c.introduced);
        let elsewhere = error_lines(&view.notice, &c.found.address);
        if !elsewhere.is_empty() && !diagnostic.contains(elsewhere.as_str()) {
            diagnostic = format!("{diagnostic} {elsewhere}");
        }
        out.push(Reported {
            address: c.found.address.clone(),
            diagnostic: diagnostic.trim().to_string(),
            ..Reported::default()
        });
    }
    out
}

fn score(
    lines: &[&str],
    i: usize,
    f: &Found,
    last_intro: Option<usize>,
    originals: &[String],
) -> Candidate {
    let line = lines[i];
    let before = line[..f.start].trim();
    let after = line[f.end..].trim();
    let labelled = LEADING_LABEL.is_match(before)
        || (before.ends_with(':')
            && before.len() <= 60
            && (ERROR_WORDS.is_match(before) || INTRO_LINE.is_match(before)));
    let led = labelled
        && (after.is_empty()
            || after.starts_with(['>', ':', '.', '(', ')', ']', ',', ';', '"', '\''])
            || after.starts_with("on ")
            || after.starts_with("- ")
            || ERROR_WORDS.is_match(after));
    let mut score = 0;
    if led {
        score += 3;
    }
    let intro_before = INTRO_LINE.find(line).is_some_and(|m| m.end() <= f.start);
    if intro_before || last_intro.is_some_and(|l| i > l && i - l <= 6) {
        score += 2;
    }
    let next: String = lines[i + 1..lines.len().min(i + 3)].join(" ");
    if ERROR_WORDS.is_match(line) {
        score += 2;
    } else if ERROR_WORDS.is_match(&next) && led {
        score += 1;
    }
    if ERROR_WORDS.is_match(super::view::truncate(after, 60)) {
        score += 1;
    }
    if score >= 2 && originals.iter().any(|o| address::same(o, &f.address)) {
        score += 1;
    }
    let lower = before.to_ascii_lowercase();
    if lower.ends_with("from") || lower.ends_with("from:") || lower.contains("sender") {
        score -= 3;
    }
    Candidate {
        found: f.clone(),
        line: i,
        score,
        led,
        introduced: intro_before,
    }
}

/// The notice's words about the address on line `i`: the rest of the line
/// and, for an address that leads its line, the following lines up to a
/// blank line or the next address that leads its line (when the address
/// stands alone, the next paragraph).
fn block_after(lines: &[&str], i: usize, found: &Found, led: bool) -> String {
    let end = found.end;
    if !led {
        return lines[i].trim().to_string();
    }
    let mut out = lines[i][end..]
        .trim()
        .trim_start_matches(['>', ':'])
        .trim()
        .to_string();
    let mut paragraphs = 0;
    for line in lines.iter().skip(i + 1).take(12) {
        let t = line.trim();
        if t.is_empty() {
            paragraphs += 1;
            if out.trim().is_empty() && paragraphs < 2 {
                continue;
            }
            break;
        }
        if leads_line(t).is_some_and(|a| !address::same(&a, &found.address)) {
            break;
        }
        if is_ruler(t) {
            if out.trim().is_empty() {
                continue;
            }
            break;
        }
        out.push(' ');
        out.push_str(t);
    }
    out.trim().to_string()
}

/// A line of dashes (with a title, maybe) that starts a new section.
fn is_ruler(line: &str) -> bool {
    line.starts_with("---") || line.starts_with("===") || line.starts_with("***")
}

/// The address a line starts with, when it presents it as a recipient
/// (a transcript line naming the same address again does not end a block).
fn leads_line(line: &str) -> Option<String> {
    let f = address::find_all(line).into_iter().next()?;
    let after = line[f.end..].trim();
    let led = LEADING_LABEL.is_match(line[..f.start].trim())
        && (after.is_empty() || after.starts_with(['>', ':', '.', '(', ')', ']', ',', ';', '"']));
    led.then_some(f.address)
}

/// Other lines of the notice that name the address with an error code or
/// words (Sendmail's session transcript, for instance).
fn error_lines(notice: &str, addr: &str) -> String {
    let lower = addr.to_ascii_lowercase();
    notice
        .lines()
        .take(MAX_LINES)
        .filter(|l| {
            l.to_ascii_lowercase().contains(&lower) && (has_codes(l) || ERROR_WORDS.is_match(l))
        })
        .map(str::trim)
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

static CODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s:(<#\[])(?:[245][0-5]\d[\s-]|[245]\.\d{1,3}\.\d{1,3}\b)")
        .expect("valid regex")
});

fn has_codes(text: &str) -> bool {
    CODE.is_match(text)
}

/// Lines of the notice that quote a remote server's reply.
fn code_lines(notice: &str) -> String {
    notice
        .lines()
        .take(MAX_LINES)
        .filter(|l| has_codes(l) && !METADATA_LINE.is_match(l))
        .map(str::trim)
        .take(6)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(from: &str, subject: &str, notice: &str) -> View {
        View {
            from: Some(from.to_string()),
            to: vec!["bounces@sender.example".to_string()],
            subject: Some(subject.to_string()),
            notice: notice.to_string(),
            ..View::default()
        }
    }

    fn addresses(b: &TextBounce) -> Vec<&str> {
        b.recipients.iter().map(|r| r.address.as_str()).collect()
    }

    #[test]
    fn qmail_style() {
        let v = view(
            "MAILER-DAEMON@mx.example.net",
            "failure notice",
            "Hi. This is the qmail-send program at mx.example.net.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n<someone@example.net>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 <someone@example.net>: Recipient address rejected: User unknown\nGiving up on 192.0.2.1.\n",
        );
        let b = parse(&v).unwrap();
        assert_eq!(addresses(&b), ["someone@example.net"]);
        assert_eq!(b.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(b.recipients[0].replycode, Some(550));
    }

    #[test]
    fn exim_style() {
        let v = view(
            "Mailer-Daemon@mx.example.org",
            "Mail delivery failed: returning message to sender",
            "This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) failed:\n\n  full@example.org\n    SMTP error from remote mail server after RCPT TO:<full@example.org>:\n    host mx.example.org [192.0.2.2]: 552 5.2.2 Mailbox full\n",
        );
        let b = parse(&v).unwrap();
        assert_eq!(addresses(&b), ["full@example.org"]);
        assert!(b.recipients[0].diagnostic.contains("Mailbox full"));
    }

    #[test]
    fn sender_is_never_a_recipient() {
        let v = view(
            "postmaster@example.com",
            "Undeliverable: hello",
            "Your message to gone@example.com from bounces@sender.example could not be delivered.\n\ngone@example.com: 550 no such user\n",
        );
        let b = parse(&v).unwrap();
        assert_eq!(addresses(&b), ["gone@example.com"]);
    }

    #[test]
    fn person_writing_is_not_a_bounce() {
        let v = view(
            "ann@example.org",
            "Re: our meeting",
            "Sure, write to bob@example.net about it.\n",
        );
        assert!(parse(&v).is_none());
    }

    #[test]
    fn a_reply_quoting_a_bounce_is_not_one() {
        let v = view(
            "ann@example.org",
            "Re: Undelivered Mail Returned to Sender",
            "Why did this happen?\n\n> <x@example.net>: host said: 550 user unknown\n",
        );
        assert!(parse(&v).is_none());
    }

    #[test]
    fn delay_notices() {
        let v = view(
            "MAILER-DAEMON@example.org",
            "Warning: message 1abc delayed 24 hours",
            "This message was created automatically by mail delivery software.\n",
        );
        assert!(is_delay_notice(&v));
        let v = view(
            "MAILER-DAEMON@example.org",
            "failure notice",
            "permanent error\n",
        );
        assert!(!is_delay_notice(&v));
    }
}
