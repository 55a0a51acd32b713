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

use regex::Regex;

use super::patterns::{DECISIVE, TEXT_ONLY};
use super::{FailedRecipient, Reported};

/// Reasons that are hard bounces when the failure is permanent: the
/// address will not start working by itself.
pub const HARD_REASONS: [&str; 4] = ["userunknown", "hostunknown", "hasmoved", "notaccept"];

/// The reason an enhanced status code decides on its own, if any.
pub fn decisive_status_reason(status: &str) -> Option<&'static str> {
    let (_, detail) = status.split_once('.')?;
    Some(match detail {
        "1.1" | "1.4" | "1.10" => "userunknown",
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
        (_, "1.3") => "userunknown",
        (_, "2.4" | "4.3") => "systemerror",
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
    /// The whole notice, read when the diagnostic says nothing known.
    pub context: &'a str,
}

/// Status codes precise enough to beat any text.
const STRONG: [&str; 8] = [
    "rejected",
    "exceedlimit",
    "authfailure",
    "requireptr",
    "suspend",
    "notaccept",
    "systemfull",
    "networkerror",
];

/// The sisimai reason name for what a report says about one recipient.
pub fn reason_for(e: &Evidence<'_>) -> &'static str {
    if e.status.is_some_and(|s| s.starts_with('2')) {
        return "delivered";
    }
    let decided = e.status.and_then(decisive_status_reason);
    if let Some(reason) = decided.filter(|r| STRONG.contains(r)) {
        return reason;
    }
    let found = match_text(e, e.diagnostic, decided);
    if !matches!(found, "onhold" | "undefined") || e.context.trim().is_empty() {
        return found;
    }
    // the report's own words about the failure, when the recipient's
    // lines say nothing that a rule knows
    match match_text(e, e.context, decided) {
        "onhold" | "undefined" => found,
        other => other,
    }
}

/// Steps 1 to 3 on one text.
fn match_text(e: &Evidence<'_>, text: &str, decided: Option<&'static str>) -> &'static str {
    let temporary = e.status.is_some_and(|s| s.starts_with('4'));
    if text
        .to_ascii_lowercase()
        .contains("recipient address rejected: access denied")
    {
        // a recipient refused by an access table (Microsoft's
        // directory-based edge blocking among others): no such recipient
        return "userunknown";
    }
    for rule in DECISIVE.iter() {
        let by_status = decided == Some(rule.reason);
        if !by_status && (text.is_empty() || !rule.text.is_match(text)) {
            continue;
        }
        match rule.reason {
            // a user "unknown" after the recipient was accepted is a filter
            "userunknown" if !by_status => match e.command {
                Some("RCPT") => return "userunknown",
                Some("MAIL") => continue,
                _ if e.status.is_some_and(is_address_status) => return "userunknown",
                _ => return "filtered",
            },
            "hostunknown" if temporary => return "networkerror",
            reason => return reason,
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
    match e.command {
        Some("EHLO" | "HELO" | "CONNECT") => return "blocked",
        Some("MAIL") => return "rejected",
        _ => {}
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

/// X.1.x codes but the sender's (X.1.7, X.1.8): about the recipient's address.
fn is_address_status(status: &str) -> bool {
    let mut parts = status.split('.');
    parts.next();
    parts.next() == Some("1") && !matches!(parts.next(), Some("7" | "8"))
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
    Regex::new(r"(?:^|[\s:;(\[<=#])([245][0-5][0-9])(?:[ \-,;)\]]|$)").expect("valid regex")
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
///
/// `context` is the report's whole notice, read only when the recipient's
/// own lines say nothing a rule knows.
pub(crate) fn finish(r: &Reported, context: &str) -> FailedRecipient {
    let delayed = r.delayed || r.action.as_deref() == Some("delayed");
    let status = r.status.clone();
    let mut reason = reason_for(&Evidence {
        status: status.as_deref(),
        diagnostic: &r.diagnostic,
        delayed,
        diagnostic_type: r.diagnostic_type.as_deref(),
        command: r.command.as_deref(),
        context,
    });
    if is_google_group(&r.address)
        && matches!(reason, "onhold" | "undefined" | "filtered" | "userunknown")
    {
        // Google Groups refuses posts from non-members and to groups that
        // are gone with the same words: the sender was refused
        reason = "rejected";
    }
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

fn is_google_group(address: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(_, d)| d.eq_ignore_ascii_case("googlegroups.com"))
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
        let at_rcpt = Evidence {
            status: Some("5.0.0"),
            diagnostic: "550 User unknown",
            command: Some("RCPT"),
            ..Evidence::default()
        };
        assert_eq!(reason_for(&at_rcpt), "userunknown");
        // an unknown user announced after DATA is a filter (sisimai's view)
        assert_eq!(reason(Some("5.0.0"), "550 User unknown"), "filtered");
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
                "connect to mx.example.org[192.0.2.1]:25: Connection refused"
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
