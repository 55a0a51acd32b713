//! No loops: when facteur must never answer a message (RFC 3834 §2).
//!
//! [`never_answer`] is pure: it looks at the message's own headers, the
//! envelope sender when the message came by SMTP, and the address an
//! answer would go to. The last rule, one acknowledgement per sender per
//! `inbound.ack_period`, needs the spool and lives in
//! [`routing`](super::routing).

use std::fmt;

/// Why a message gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// `Auto-Submitted` with a value other than `no`.
    AutoSubmitted,
    /// `Precedence: bulk`, `list` or `junk`.
    Precedence,
    /// A `List-*` header: mail from a mailing list.
    ListHeader,
    /// The null envelope sender (`MAIL FROM:<>` or `Return-Path: <>`).
    NullSender,
    /// A daemon or no-reply sender (`MAILER-DAEMON`, `noreply`, `owner-*`…).
    DaemonSender,
    /// One of facteur's own addresses: answering would talk to itself.
    OwnAddress,
    /// No address to answer to.
    NoSender,
    /// The sender was answered within `inbound.ack_period`.
    Recent,
}

impl Silence {
    /// Short name, for actions and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Silence::AutoSubmitted => "auto-submitted",
            Silence::Precedence => "precedence",
            Silence::ListHeader => "list header",
            Silence::NullSender => "null sender",
            Silence::DaemonSender => "daemon or no-reply sender",
            Silence::OwnAddress => "facteur's own address",
            Silence::NoSender => "no sender",
            Silence::Recent => "sender answered recently",
        }
    }
}

impl fmt::Display for Silence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rules look at.
pub struct Facts<'a> {
    /// The message's own (top-level) headers, unfolded.
    pub headers: &'a [(String, String)],
    /// The SMTP envelope sender, when the message came by SMTP (empty: the
    /// null sender).
    pub envelope_from: Option<&'a str>,
    /// Where an answer would go (Reply-To, else From).
    pub answer_to: Option<&'a str>,
}

/// The first reason never to answer this message, if any.
///
/// `own` says whether an address is one of facteur's own (reply
/// addresses, the acknowledgement sender, the bounce domain).
pub fn never_answer(facts: &Facts<'_>, own: impl Fn(&str) -> bool) -> Option<Silence> {
    let header = |name: &'static str| values(facts.headers, name);
    if header("auto-submitted").any(|v| !is_no(&v)) {
        return Some(Silence::AutoSubmitted);
    }
    if header("precedence").any(|v| ["bulk", "list", "junk"].contains(&first_word(&v))) {
        return Some(Silence::Precedence);
    }
    if facts
        .headers
        .iter()
        .any(|(k, _)| k.len() > 5 && k[..5].eq_ignore_ascii_case("list-"))
    {
        return Some(Silence::ListHeader);
    }
    let return_path_null = header("return-path").any(|v| bare(&v).is_empty());
    if facts.envelope_from.is_some_and(|f| bare(f).is_empty()) || return_path_null {
        return Some(Silence::NullSender);
    }
    let envelope = facts.envelope_from.map(bare);
    if envelope.as_deref().is_some_and(is_daemon) {
        return Some(Silence::DaemonSender);
    }
    let Some(to) = facts.answer_to.map(bare).filter(|a| a.contains('@')) else {
        return Some(Silence::NoSender);
    };
    if is_daemon(&to) {
        return Some(Silence::DaemonSender);
    }
    if own(&to) || envelope.as_deref().is_some_and(&own) {
        return Some(Silence::OwnAddress);
    }
    None
}

/// Every value of a header, trimmed and lowercase.
fn values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
}

/// `no`, possibly with parameters (`no; comment`).
fn is_no(value: &str) -> bool {
    first_word(value) == "no"
}

fn first_word(value: &str) -> &str {
    value
        .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
        .next()
        .unwrap_or("")
}

/// `<a@b>` or ` a@b ` → `a@b`, lowercase.
fn bare(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_ascii_lowercase()
}

/// Senders that are programs, not people (RFC 3834 §2 and common usage).
pub fn is_daemon(address: &str) -> bool {
    let local = address
        .rsplit_once('@')
        .map_or(address, |(l, _)| l)
        .to_ascii_lowercase();
    let local = local.split('+').next().unwrap_or("");
    const EXACT: &[&str] = &[
        "mailer-daemon",
        "mailer_daemon",
        "mailerdaemon",
        "postmaster",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
        "nepasrepondre",
        "ne-pas-repondre",
        "listserv",
        "majordomo",
    ];
    EXACT.contains(&local)
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.starts_with("noreply")
        || local.starts_with("no-reply")
        || local.starts_with("mailer-daemon")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(
        headers: &[(&str, &str)],
        envelope: Option<&str>,
        to: Option<&str>,
    ) -> Option<Silence> {
        let headers = h(headers);
        let facts = Facts {
            headers: &headers,
            envelope_from: envelope,
            answer_to: to,
        };
        never_answer(&facts, |a| {
            a == "support@brand.test" || a.ends_with("@bounces.brand.test")
        })
    }

    #[test]
    fn a_person_gets_an_answer() {
        let hs = [("Auto-Submitted", "no"), ("Precedence", "first-class")];
        assert_eq!(
            check(&hs, Some("ann@example.org"), Some("ann@example.org")),
            None
        );
        assert_eq!(check(&[], None, Some("<Ann@Example.org>")), None);
    }

    #[test]
    fn automatic_mail_gets_none() {
        let to = Some("ann@example.org");
        for value in ["auto-replied", "auto-generated", "auto-notified; x", "yes"] {
            assert_eq!(
                check(&[("auto-submitted", value)], None, to),
                Some(Silence::AutoSubmitted),
                "{value}"
            );
        }
        assert_eq!(check(&[("Auto-Submitted", "No (person)")], None, to), None);
        for value in ["bulk", "List", "junk"] {
            assert_eq!(
                check(&[("Precedence", value)], None, to),
                Some(Silence::Precedence)
            );
        }
        assert_eq!(
            check(&[("List-Id", "<news.example.org>")], None, to),
            Some(Silence::ListHeader)
        );
        assert_eq!(
            check(&[("List-Unsubscribe", "<mailto:u@x>")], None, to),
            Some(Silence::ListHeader)
        );
    }

    #[test]
    fn null_daemon_and_own_senders_get_none() {
        let to = Some("ann@example.org");
        assert_eq!(check(&[], Some(""), to), Some(Silence::NullSender));
        assert_eq!(check(&[], Some("<>"), to), Some(Silence::NullSender));
        assert_eq!(
            check(&[("Return-Path", "<>")], None, to),
            Some(Silence::NullSender)
        );
        assert_eq!(
            check(&[], Some("MAILER-DAEMON@mx.example.org"), to),
            Some(Silence::DaemonSender)
        );
        for from in [
            "MAILER-DAEMON@x.org",
            "noreply@x.org",
            "no-reply+abc@x.org",
            "owner-list@x.org",
            "list-request@x.org",
            "donotreply@x.org",
        ] {
            assert_eq!(
                check(&[], None, Some(from)),
                Some(Silence::DaemonSender),
                "{from}"
            );
        }
        assert_eq!(
            check(&[], None, Some("Support@Brand.test")),
            Some(Silence::OwnAddress)
        );
        assert_eq!(
            check(&[], Some("bounces+1@bounces.brand.test"), to),
            Some(Silence::OwnAddress)
        );
        // Another sender's VERP envelope is how most legitimate mail comes.
        assert_eq!(check(&[], Some("bounces+1@bounces.other.test"), to), None);
        assert_eq!(check(&[], None, None), Some(Silence::NoSender));
        assert_eq!(check(&[], None, Some("nobody")), Some(Silence::NoSender));
    }
}
