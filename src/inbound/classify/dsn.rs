//! RFC 3464 delivery status notifications: the `message/delivery-status`
//! part, or the same fields pasted into a text notice by MTAs that do not
//! build a proper `multipart/report`.

use std::sync::LazyLock;

use regex::Regex;

use super::address;
use super::reason::{find_replycode, find_status, parse_status};
use super::view::View;
use super::Reported;

/// The most recipients read from one report.
const MAX_RECIPIENTS: usize = 500;

/// The failed (or delayed) recipients of the RFC 3464 fields in a message;
/// empty when there are none. Delivered, relayed and expanded recipients are
/// kept only when the report has no failed one.
pub(crate) fn parse(view: &View) -> Vec<Reported> {
    let mut groups = Vec::new();
    for block in &view.delivery_status {
        groups.extend(recipient_groups(block, false));
    }
    if groups.is_empty() && EMBEDDED.is_match(&view.notice) {
        groups.extend(recipient_groups(&view.notice, true));
    }
    let mut out: Vec<Reported> = Vec::new();
    for group in groups.iter().take(MAX_RECIPIENTS) {
        let Some(r) = reported(group) else { continue };
        match out
            .iter_mut()
            .find(|o| address::same(&o.address, &r.address))
        {
            Some(o) => {
                if o.diagnostic.is_empty() {
                    o.diagnostic = r.diagnostic;
                }
                o.status = o.status.take().or(r.status);
                o.replycode = o.replycode.or(r.replycode);
            }
            None => out.push(r),
        }
    }
    let failing = |r: &Reported| {
        !matches!(
            r.action.as_deref(),
            Some("delivered" | "relayed" | "expanded")
        )
    };
    if out.iter().any(failing) {
        out.retain(failing);
    }
    out
}

/// Fills in what the DSN fields lack (diagnostic, codes) from what the
/// text notice says about the same recipient.
pub(crate) fn enrich(found: &mut [Reported], from_text: &[Reported]) {
    for r in found.iter_mut() {
        let Some(t) = from_text
            .iter()
            .find(|t| address::same(&t.address, &r.address))
        else {
            continue;
        };
        if r.diagnostic.trim().is_empty() {
            r.diagnostic = t.diagnostic.clone();
            r.replycode = r.replycode.or(t.replycode);
            if r.status.as_deref().is_none_or(is_generic) {
                r.status = t.status.clone().or(r.status.take());
            }
        }
        if r.command.is_none() {
            r.command = t.command.clone();
        }
    }
}

static EMBEDDED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?im)^[ \t]*(?:final|original)-recipient:[^\n]*@").expect("valid regex")
});

static FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)$").expect("valid regex")
});

type Fields = Vec<(String, String)>;

/// Splits DSN text into per-recipient field groups. In `embedded` mode the
/// fields sit in free text: only known field names count, indented or not.
///
/// Groups end at blank lines, and also where the field that opened the
/// first recipient group comes again (some MTAs run groups together, and
/// not all of them open a group with `Final-Recipient`).
fn recipient_groups(text: &str, embedded: bool) -> Vec<Fields> {
    let mut groups: Vec<Fields> = Vec::new();
    let mut current: Fields = Vec::new();
    let mut leading: Option<String> = None;
    let close = |current: &mut Fields, groups: &mut Vec<Fields>| {
        if current.iter().any(|(k, _)| is_recipient_field(k)) {
            groups.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            if !embedded {
                close(&mut current, &mut groups);
            }
            continue;
        }
        let folded = line.starts_with([' ', '\t']);
        let field = FIELD.captures(if embedded { line.trim_start() } else { line });
        let known = field
            .as_ref()
            .is_some_and(|c| !embedded || is_known_field(&c[1]));
        if known && (embedded || !folded) {
            let c = field.expect("checked above");
            let name = c[1].to_ascii_lowercase();
            if is_per_recipient(&name) {
                match &leading {
                    None => leading = Some(name.clone()),
                    Some(l) if *l == name && current.iter().any(|(k, _)| *k == name) => {
                        close(&mut current, &mut groups);
                    }
                    Some(_) => {}
                }
            }
            current.push((name, c[2].trim().to_string()));
        } else if folded {
            if let Some((_, v)) = current.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if embedded {
            close(&mut current, &mut groups);
        }
    }
    close(&mut current, &mut groups);
    groups
}

/// Fields that RFC 3464 puts in a per-recipient group.
fn is_per_recipient(name: &str) -> bool {
    matches!(
        name,
        "final-recipient" | "original-recipient" | "action" | "status" | "x-actual-recipient"
    )
}

fn is_recipient_field(name: &str) -> bool {
    name == "final-recipient" || name == "original-recipient"
}

fn is_known_field(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "final-recipient"
            | "original-recipient"
            | "action"
            | "status"
            | "diagnostic-code"
            | "remote-mta"
            | "x-actual-recipient"
            | "last-attempt-date"
            | "will-retry-until"
            | "x-supplementary-info"
    )
}

fn field<'a>(group: &'a Fields, name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// One recipient group's fields as a [`Reported`] recipient.
fn reported(group: &Fields) -> Option<Reported> {
    let final_rcpt = field(group, "final-recipient").and_then(address::from_typed);
    let original = field(group, "original-recipient").and_then(address::from_typed);
    let actual = field(group, "x-actual-recipient").and_then(address::from_typed);
    // The original recipient is the address the sender used (the one a
    // sender can act on); the final one may be an internal rewrite.
    let full = |a: &Option<String>| a.as_ref().is_some_and(|a| address::has_full_domain(a));
    let address = if full(&original) {
        original
    } else if full(&final_rcpt) || original.is_none() {
        final_rcpt.or(actual)
    } else {
        original
    }?;
    let (diagnostic_type, diagnostic) = match field(group, "diagnostic-code") {
        Some(d) => match d.split_once(';') {
            Some((t, rest)) if !t.contains(' ') || t.len() < 12 => {
                (Some(t.trim().to_ascii_lowercase()), rest.trim().to_string())
            }
            _ => (None, d.trim().to_string()),
        },
        None => (None, String::new()),
    };
    let mut diagnostic = diagnostic;
    if let Some(extra) = field(group, "x-supplementary-info") {
        diagnostic = format!("{diagnostic} {extra}").trim().to_string();
    }
    let field_status = field(group, "status").and_then(parse_status);
    let text_status = find_status(&diagnostic);
    // the code the remote server gave is more telling than the reporting
    // MTA's summary of it
    let status = match (field_status, text_status) {
        (_, Some(t)) => Some(t),
        (f, None) => f,
    };
    Some(Reported {
        address,
        status,
        replycode: find_replycode(&diagnostic),
        action: field(group, "action").map(|a| {
            a.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches([';', ','])
                .to_ascii_lowercase()
        }),
        command: command_of(&diagnostic),
        diagnostic,
        delayed: false,
        diagnostic_type,
    })
}

/// `5.0.0` and `4.0.0` say nothing but the class.
fn is_generic(status: &str) -> bool {
    status.ends_with(".0.0")
}

static COMMAND: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?:(?:in reply to|after|reply to|response to|during|while sending)\s+(?:the\s+)?(?:end of\s+)?",
        r"|>>>\s*)(rcpt to|mail from|data|ehlo|helo|rcpt|mail|connect|starttls|auth|initial connection)\b",
        r"|(does not like recipient|recipient address rejected|has rejected address|\brcpt(?:[ _]?to)?\b)"
    ))
    .expect("valid regex")
});

/// The SMTP command a diagnostic says the server answered.
pub(crate) fn command_of(text: &str) -> Option<String> {
    let c = COMMAND.captures(text)?;
    if c.get(2).is_some() {
        return Some("RCPT".to_string());
    }
    let cmd = c[1].to_ascii_uppercase();
    Some(match cmd.as_str() {
        "INITIAL CONNECTION" => "CONNECT".to_string(),
        _ => cmd.split_whitespace().next().unwrap_or("").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_with_status(block: &str) -> View {
        View {
            delivery_status: vec![block.to_string()],
            ..View::default()
        }
    }

    #[test]
    fn two_recipients_without_blank_line() {
        let v = view_with_status(
            "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550 5.1.1 no such user\nFinal-Recipient: rfc822; b@example.org\nAction: delayed\nStatus: 4.4.1\n",
        );
        let found = parse(&v);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(found[0].replycode, Some(550));
        assert_eq!(found[1].action.as_deref(), Some("delayed"));
    }

    #[test]
    fn groups_opened_by_final_recipient() {
        let v = view_with_status(
            "Final-Recipient: rfc822; a@example.org\nOriginal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\nFinal-Recipient: rfc822; b@example.org\nOriginal-Recipient: rfc822; b@example.org\nAction: failed\nStatus: 5.2.2\n",
        );
        let found = parse(&v);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].status.as_deref(), Some("5.2.2"));
        let v = view_with_status(
            "Action: failed\nStatus: 5.0.0\nOriginal-recipient: rfc822;x@example.com\nFinal-recipient: rfc822;x@internal\n",
        );
        let found = parse(&v);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, "x@example.com");
    }

    #[test]
    fn folded_diagnostic_and_original_recipient() {
        let v = view_with_status(
            "Original-Recipient: rfc822;x@example.org\nFinal-Recipient: RFC822; <x@example.org>\nAction: failed\nStatus: 5.2.2\nDiagnostic-Code: smtp; 552-5.2.2 The email account\n    is over quota\n",
        );
        let found = parse(&v);
        assert_eq!(found.len(), 1);
        assert!(found[0].diagnostic.contains("over quota"));
        assert_eq!(found[0].address, "x@example.org");
    }

    #[test]
    fn delivered_only_when_nothing_failed() {
        let v = view_with_status(
            "Final-Recipient: rfc822; a@example.org\nAction: delivered\nStatus: 2.0.0\n\nFinal-Recipient: rfc822; b@example.org\nAction: failed\nStatus: 5.1.1\n",
        );
        let found = parse(&v);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, "b@example.org");
    }

    #[test]
    fn embedded_fields_in_text() {
        let v = View {
            notice: "Delivery failed.\n\n  Final-Recipient: rfc822;z@example.net\n  Action: failed\n  Status: 5.1.1\n".into(),
            ..View::default()
        };
        let found = parse(&v);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, "z@example.net");
    }

    #[test]
    fn command_in_diagnostic() {
        assert_eq!(
            command_of("553 5.3.0 No such user [RCPT_TO]").as_deref(),
            Some("RCPT")
        );
        assert_eq!(
            command_of("550 5.1.1 unknown (in reply to RCPT TO command)").as_deref(),
            Some("RCPT")
        );
        assert_eq!(command_of("nothing here"), None);
    }
}
