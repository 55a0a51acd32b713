//! What a bounce, a complaint or an auto-reply does: events on the
//! message, suppressions, metrics.
//!
//! - A bounce becomes a `bounced` event per failed recipient (`delayed`
//!   for a delay notice, which changes no state). A hard one (the
//!   classifier says hard, or, when it cannot tell, a permanent 5.x.x that
//!   is not a full mailbox) suppresses the message's address for
//!   everything (`all`, reason `bounce`).
//! - A complaint becomes a `complained` event and suppresses the address
//!   for marketing (reason `complaint`).
//! - An auto-reply becomes an `auto_replied` event and suppresses nothing.
//!
//! Effects need a message: a report that names none (see
//! [`attribution`](super::attribution)) is counted, and answered as not
//! attributed, but suppresses nothing.

use serde::Serialize;
use serde_json::json;

use super::attribution::{self, Attributed, Clues};
use super::classify::{Classification, FailedRecipient, Kind};
use super::Inbound;
use crate::events::{Event, EventType, MessageEvent, SmtpReply};
use crate::spool::{now_ms, MessageRecord, Result, Suppression};

/// sisimai's reason names: the only values of the `reason` label of
/// `facteur_bounces_total`; anything else is counted as `other`.
const REASONS: &[&str] = &[
    "authfailure",
    "badreputation",
    "blocked",
    "contenterror",
    "delivered",
    "exceedlimit",
    "expired",
    "failedstarttls",
    "feedback",
    "filtered",
    "hasmoved",
    "hostunknown",
    "mailboxfull",
    "mailererror",
    "mesgtoobig",
    "networkerror",
    "norelaying",
    "notaccept",
    "notcompliantrfc",
    "onhold",
    "policyviolation",
    "ratelimited",
    "rejected",
    "requireptr",
    "securityerror",
    "spamdetected",
    "speeding",
    "suppressed",
    "suspend",
    "syntaxerror",
    "systemerror",
    "systemfull",
    "toomanyconn",
    "undefined",
    "userunknown",
    "vacation",
    "virusdetected",
];

/// What a report did to one message.
#[derive(Debug, Clone, Serialize)]
pub struct Effect {
    /// The message.
    pub message_id: String,
    /// Its recipient.
    pub email: String,
    /// How the message was found.
    pub attributed_by: &'static str,
    /// The event written on its timeline.
    pub event: &'static str,
    /// The suppression scope added, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<&'static str>,
}

/// Effects of one report, and the actions to tell the sender.
#[derive(Debug, Default)]
pub struct Applied {
    /// One per message touched.
    pub effects: Vec<Effect>,
    /// In words: `event bounced`, `suppressed a@x`, `not attributed: b@y`.
    pub actions: Vec<String>,
}

/// Applies a bounce, complaint or auto-reply. Human mail does nothing here.
pub fn apply(inbound: &Inbound, class: &Classification, clues: &Clues<'_>) -> Result<Applied> {
    let spool = &inbound.app.spool;
    let mut out = Applied::default();
    if class.kind == Kind::Human {
        return Ok(out);
    }
    let whole = attribution::find_message(spool, clues)?;
    match class.kind {
        Kind::Human => {}
        Kind::Bounce => {
            let reported = reported_or_whole(&class.recipients, whole.as_ref(), "undefined");
            for r in &reported {
                let hard = is_hard(r);
                let label = if hard { "hard" } else { "soft" };
                inbound
                    .app
                    .metrics
                    .bounces
                    .with_label_values(&[label, fold_reason(&r.reason)])
                    .inc();
                match target(inbound, whole.as_ref(), r, reported.len())? {
                    Some(a) => bounce(inbound, &a, r, hard, &mut out)?,
                    None => out.actions.push(format!("not attributed: {}", r.recipient)),
                }
            }
        }
        Kind::Feedback => {
            inbound.app.metrics.complaints.inc();
            let reported = reported_or_whole(&class.recipients, whole.as_ref(), "feedback");
            if reported.is_empty() {
                out.actions.push("not attributed: complaint".into());
            }
            for r in &reported {
                match target(inbound, whole.as_ref(), r, reported.len())? {
                    Some(a) => complaint(inbound, &a, class, &mut out)?,
                    None => out.actions.push(format!("not attributed: {}", r.recipient)),
                }
            }
        }
        Kind::Autoreply => {
            let found = match whole {
                Some(a) => Some(a),
                None => match class.first() {
                    Some(r) => {
                        attribution::find_for_recipient(spool, &r.recipient, window_ms(inbound))?
                    }
                    None => None,
                },
            };
            match found {
                Some(a) => {
                    let ev = Event::now(EventType::AutoReplied, class.subject.clone())
                        .with_data(json!({ "from": class.from, "subject": class.subject }));
                    record(inbound, &a, ev, None, &mut out)?;
                }
                None => out.actions.push("not attributed: auto-reply".into()),
            }
        }
    }
    Ok(out)
}

/// The reported recipients; when the report names none but the message is
/// known, one stand-in for the message's own recipient.
fn reported_or_whole(
    reported: &[FailedRecipient],
    whole: Option<&Attributed>,
    reason: &str,
) -> Vec<FailedRecipient> {
    if !reported.is_empty() {
        return reported.to_vec();
    }
    whole
        .map(|a| FailedRecipient {
            recipient: a.message.email.clone(),
            status: None,
            replycode: None,
            permanent: None,
            hard: None,
            reason: reason.to_string(),
            diagnostic: None,
        })
        .into_iter()
        .collect()
}

/// The message a reported recipient is about: the report's message when it
/// is theirs (or the report names one recipient only), else the latest
/// message sent to them.
fn target(
    inbound: &Inbound,
    whole: Option<&Attributed>,
    r: &FailedRecipient,
    reported: usize,
) -> Result<Option<Attributed>> {
    if let Some(a) = whole {
        if reported == 1 || a.message.email.eq_ignore_ascii_case(r.recipient.trim()) {
            return Ok(Some(a.clone()));
        }
    }
    attribution::find_for_recipient(&inbound.app.spool, &r.recipient, window_ms(inbound))
}

fn window_ms(inbound: &Inbound) -> u64 {
    inbound.app.cfg.inbound.attribution_window.0.as_millis() as u64
}

/// A hard bounce: the address will not work again by itself.
pub fn is_hard(r: &FailedRecipient) -> bool {
    match r.hard {
        Some(hard) => hard,
        None => {
            let permanent = r.permanent.unwrap_or_else(|| {
                r.status.as_deref().is_some_and(|s| s.starts_with('5'))
                    || r.replycode.is_some_and(|c| (500..600).contains(&c))
            });
            permanent && r.reason != "mailboxfull" && r.status.as_deref() != Some("5.2.2")
        }
    }
}

/// The `reason` label: a known reason name, or `other`.
pub fn fold_reason(reason: &str) -> &'static str {
    REASONS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(reason))
        .copied()
        .unwrap_or("other")
}

fn bounce(
    inbound: &Inbound,
    a: &Attributed,
    r: &FailedRecipient,
    hard: bool,
    out: &mut Applied,
) -> Result<()> {
    let delayed = r.permanent == Some(false);
    let kind = if delayed {
        EventType::Delayed
    } else {
        EventType::Bounced
    };
    let why = match (&r.status, delayed) {
        (_, true) => format!("delay notice: {}", r.reason),
        (Some(s), false) => format!("bounce report: {s} {}", r.reason),
        (None, false) => format!("bounce report: {}", r.reason),
    };
    let mut ev = Event::now(kind, Some(why)).with_data(json!({
        "recipient": r.recipient,
        "status": r.status,
        "replycode": r.replycode,
        "reason": r.reason,
        "diagnostic": r.diagnostic,
        "hard": hard,
        "attributed_by": a.method.as_str(),
    }));
    if let Some(code) = r.replycode {
        ev = ev.with_reply(SmtpReply {
            code,
            enhanced: r.status.clone(),
            text: r.diagnostic.clone().unwrap_or_default(),
        });
    }
    let suppress = (hard && !delayed).then(|| Suppression {
        reason: "bounce".into(),
        scope: "all".into(),
        at_ms: now_ms(),
        message_id: Some(a.message.id.clone()),
    });
    record(inbound, a, ev, suppress, out)
}

fn complaint(
    inbound: &Inbound,
    a: &Attributed,
    class: &Classification,
    out: &mut Applied,
) -> Result<()> {
    let feedback = class.feedback_type.as_deref().unwrap_or("abuse");
    let ev = Event::now(
        EventType::Complained,
        Some(format!("complaint ({feedback})")),
    )
    .with_data(json!({
        "feedback_type": feedback,
        "attributed_by": a.method.as_str(),
    }));
    let suppress = Suppression {
        reason: "complaint".into(),
        scope: "marketing".into(),
        at_ms: now_ms(),
        message_id: Some(a.message.id.clone()),
    };
    record(inbound, a, ev, Some(suppress), out)
}

/// Writes the event (once per message and kind within one report), the
/// suppression, and publishes the event.
fn record(
    inbound: &Inbound,
    a: &Attributed,
    ev: Event,
    suppress: Option<Suppression>,
    out: &mut Applied,
) -> Result<()> {
    let name = ev.kind.as_str();
    if out
        .effects
        .iter()
        .any(|e| e.message_id == a.message.id && e.event == name)
    {
        return Ok(());
    }
    let spool = &inbound.app.spool;
    let email = a.message.email.clone();
    let mut scope = None;
    if let Some(s) = suppress {
        spool.suppress(&email, &s)?;
        out.actions.push(format!("suppressed {email}"));
        scope = Some(if s.scope == "all" { "all" } else { "marketing" });
    }
    if let Some(rec) = spool.add_event(&a.message.id, ev.clone())? {
        publish(inbound, &rec, ev);
    }
    out.actions.push(format!("event {name}"));
    out.effects.push(Effect {
        message_id: a.message.id.clone(),
        email,
        attributed_by: a.method.as_str(),
        event: name,
        suppressed: scope,
    });
    Ok(())
}

fn publish(inbound: &Inbound, rec: &MessageRecord, event: Event) {
    inbound.app.events.publish(MessageEvent::of(rec, event));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(
        status: Option<&str>,
        permanent: Option<bool>,
        hard: Option<bool>,
        reason: &str,
    ) -> FailedRecipient {
        FailedRecipient {
            recipient: "a@example.org".into(),
            status: status.map(str::to_string),
            replycode: None,
            permanent,
            hard,
            reason: reason.into(),
            diagnostic: None,
        }
    }

    #[test]
    fn hardness() {
        assert!(is_hard(&r(
            Some("5.1.1"),
            Some(true),
            Some(true),
            "userunknown"
        )));
        assert!(!is_hard(&r(
            Some("5.7.1"),
            Some(true),
            Some(false),
            "blocked"
        )));
        assert!(is_hard(&r(Some("5.1.1"), None, None, "undefined")));
        assert!(!is_hard(&r(Some("5.2.2"), None, None, "undefined")));
        assert!(!is_hard(&r(None, Some(true), None, "mailboxfull")));
        assert!(!is_hard(&r(Some("4.4.7"), Some(false), None, "expired")));
        assert!(!is_hard(&r(None, None, None, "undefined")));
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(fold_reason("userunknown"), "userunknown");
        assert_eq!(fold_reason("MailboxFull"), "mailboxfull");
        assert_eq!(fold_reason("user@example.org"), "other");
        assert_eq!(fold_reason(""), "other");
    }
}
