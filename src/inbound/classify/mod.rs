//! The classifier for mail that comes back to facteur.
//!
//! [`classify`] reads one raw RFC 5322 message and says what it is:
//! a bounce (a delivery status notification, standard or not, delay notices
//! included), a feedback report (an RFC 5965 complaint), an auto-reply
//! (RFC 3834 and the out-of-office habits of common clients) or human mail.
//! For bounces it names every failed recipient with its status, whether the
//! failure is permanent and hard, and a reason from sisimai's reason set.
//!
//! # Layout
//!
//! - `view`: the MIME tree read once into the few texts the classifier needs.
//! - `address`: finding and cleaning addresses in free text.
//! - `dsn`: RFC 3464 `message/delivery-status` fields.
//! - `nonstandard`: the text bounces of MTAs that do not send RFC 3464.
//! - `arf`: RFC 5965 feedback reports (and Amazon SES JSON notifications).
//! - [`autoreply`]: RFC 3834 headers and out-of-office subjects and bodies.
//! - [`reason`]: status codes and diagnostic texts to reason names, with
//!   the words of each reason in `patterns`.
//!
//! The classifier never panics and never reads more than [`MAX_INPUT`]
//! bytes of a message.

mod address;
mod arf;
pub mod autoreply;
mod dsn;
mod nonstandard;
mod patterns;
pub mod reason;
mod view;

use std::panic::AssertUnwindSafe;

use mail_parser::MessageParser;
use serde::Serialize;

use view::View;

/// The most bytes of one message that the classifier reads; the rest of a
/// larger message is ignored (a bounce says what it has to say early).
pub const MAX_INPUT: usize = 16 * 1024 * 1024;

/// What a message that came back is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A delivery status notification or non-delivery report (delays too).
    Bounce,
    /// A complaint report (RFC 5965 ARF or a provider's equivalent).
    Feedback,
    /// An automatic reply: out of office, vacation, "thank you for writing".
    Autoreply,
    /// Anything else: mail written by a person.
    Human,
}

/// One recipient that a bounce reports as failed (or, for a complaint, the
/// recipient who complained; for an auto-reply, the absent person).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedRecipient {
    /// The recipient's address as the report gives it.
    pub recipient: String,
    /// RFC 3463 enhanced status code, such as `5.1.1`, when known.
    pub status: Option<String>,
    /// The SMTP reply code, such as 550, when known.
    pub replycode: Option<u16>,
    /// True for a permanent failure (class 5), false for a temporary one.
    pub permanent: Option<bool>,
    /// sisimai's hard bounce: a permanent failure that will not go away by
    /// itself (unknown user or domain, moved, not accepting mail).
    pub hard: Option<bool>,
    /// sisimai's reason name, such as `userunknown` or `mailboxfull`.
    pub reason: String,
    /// The remote server's words, when the report quotes them.
    pub diagnostic: Option<String>,
}

/// What [`classify`] found in one message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Classification {
    /// What the message is.
    pub kind: Kind,
    /// Every failed recipient (bounce), complained-about recipient
    /// (feedback) or absent person (auto-reply), when known.
    pub recipients: Vec<FailedRecipient>,
    /// For complaints: `abuse`, `auth-failure`, `opt-out`, `fraud`,
    /// `virus` or `other`.
    pub feedback_type: Option<String>,
    /// Message-ID of the returned original message, without `<>`.
    pub original_message_id: Option<String>,
    /// Headers of the returned original message when the report includes
    /// them (so that callers can find their own tracking headers).
    pub original_headers: Vec<(String, String)>,
    /// Address in the message's own `From`.
    pub from: Option<String>,
    /// Addresses in the message's own `To`.
    pub to: Vec<String>,
    /// The message's own subject.
    pub subject: Option<String>,
    /// The message's own Message-ID, without `<>`.
    pub message_id: Option<String>,
    /// True when the message itself is automatic (RFC 3834
    /// `Auto-Submitted`, `Precedence: bulk|junk|list|auto_reply`, `List-*`
    /// headers, a null or daemon sender...): never answer it.
    pub auto_submitted: bool,
}

impl Classification {
    /// The first recipient, the one most callers care about.
    pub fn first(&self) -> Option<&FailedRecipient> {
        self.recipients.first()
    }

    /// True for a bounce whose every reported recipient failed permanently
    /// and hard (the address should be suppressed).
    pub fn is_hard_bounce(&self) -> bool {
        self.kind == Kind::Bounce
            && !self.recipients.is_empty()
            && self.recipients.iter().all(|r| r.hard == Some(true))
    }

    fn empty() -> Classification {
        Classification {
            kind: Kind::Human,
            recipients: Vec::new(),
            feedback_type: None,
            original_message_id: None,
            original_headers: Vec::new(),
            from: None,
            to: Vec::new(),
            subject: None,
            message_id: None,
            auto_submitted: false,
        }
    }
}

/// Classifies one raw message. Never panics, whatever the input.
pub fn classify(raw: &[u8]) -> Classification {
    let raw = &raw[..raw.len().min(MAX_INPUT)];
    std::panic::catch_unwind(|| classify_bytes(raw)).unwrap_or_else(|_| Classification::empty())
}

fn classify_bytes(raw: &[u8]) -> Classification {
    let raw = skip_mbox_line(raw);
    let parser = MessageParser::default();
    let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| parser.parse(raw)));
    let view = match parsed {
        Ok(Some(message)) => View::new(&message),
        Ok(None) => return Classification::empty(),
        // mail-parser 0.11 panics on some broken MIME trees: read the
        // headers alone, and the body as raw text
        Err(_) => match std::panic::catch_unwind(AssertUnwindSafe(|| parser.parse_headers(raw))) {
            Ok(Some(headers)) => View::from_headers(&headers, raw),
            _ => return Classification::empty(),
        },
    };
    let mut out = Classification {
        auto_submitted: autoreply::is_automatic(&view),
        original_message_id: view.original_message_id(),
        original_headers: view.original_headers.clone(),
        from: view.from.clone(),
        to: view.to.clone(),
        subject: view.subject.clone(),
        message_id: view.message_id.clone(),
        ..Classification::empty()
    };
    out.kind = kind_of(&view, &mut out);
    out.auto_submitted |= out.kind != Kind::Human;
    out
}

/// Decides the kind and fills in the recipients (and complaint fields).
fn kind_of(view: &View, out: &mut Classification) -> Kind {
    if let Some(report) = arf::parse(view) {
        out.feedback_type = Some(report.feedback_type);
        out.recipients = report.recipients;
        if report.original_message_id.is_some() {
            out.original_message_id = report.original_message_id;
        }
        return Kind::Feedback;
    }
    if let Some(recipients) = bounce_recipients(view) {
        out.recipients = recipients;
        return Kind::Bounce;
    }
    if autoreply::is_autoreply(view) {
        out.recipients = autoreply::absent_person(view).into_iter().collect();
        return Kind::Autoreply;
    }
    Kind::Human
}

/// Skips the `From sender date` line that mbox files put before a message.
fn skip_mbox_line(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        if let Some(end) = raw.iter().position(|b| *b == b'\n') {
            return &raw[end + 1..];
        }
    }
    raw
}

/// The failed recipients of a bounce, or `None` when the message is not one.
fn bounce_recipients(view: &View) -> Option<Vec<FailedRecipient>> {
    let delayed = nonstandard::is_delay_notice(view);
    let mut found = dsn::parse(view);
    let text = nonstandard::parse(view);
    if found.is_empty() {
        if let Some(json) = arf::ses_bounce(view) {
            return Some(json);
        }
    }
    if !found.is_empty() {
        if let Some(text) = &text {
            dsn::enrich(&mut found, &text.recipients);
        }
        let sole = found.len() == 1;
        for r in &mut found {
            r.delayed |= delayed;
            if sole && r.command.is_none() {
                // the notice's transcript tells at which command it failed
                r.command = dsn::command_of(&view.notice);
            }
        }
        return Some(
            found
                .iter()
                .map(|r| reason::finish(r, &view.notice))
                .collect(),
        );
    }
    let text = text?;
    Some(
        text.recipients
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.delayed |= delayed;
                reason::finish(&r, &view.notice)
            })
            .collect(),
    )
}

/// One recipient as a report gives it, before the reason is decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reported {
    /// The address.
    pub address: String,
    /// Enhanced status code from the report or its diagnostic.
    pub status: Option<String>,
    /// SMTP reply code from the diagnostic.
    pub replycode: Option<u16>,
    /// RFC 3464 action (`failed`, `delayed`, `delivered`...), lowercased.
    pub action: Option<String>,
    /// The remote server's words, or the report's words about this
    /// recipient.
    pub diagnostic: String,
    /// True when the report is a delay notice (the message is still queued).
    pub delayed: bool,
    /// Diagnostic-Code type (`smtp`, `x-unix`...), lowercased.
    pub diagnostic_type: Option<String>,
    /// The SMTP command the remote server answered, when known.
    pub command: Option<String>,
}

#[cfg(test)]
mod formats;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_human() {
        let c = classify(b"\x00\xff\xfe garbage");
        assert_eq!(c.kind, Kind::Human);
        assert!(c.recipients.is_empty());
        assert_eq!(classify(b"").kind, Kind::Human);
    }

    #[test]
    fn plain_mail_is_human() {
        let raw = b"From: Ann <ann@example.org>\r\nTo: bob@example.com\r\nSubject: lunch?\r\nMessage-ID: <a1@example.org>\r\n\r\nShall we have lunch on Friday?\r\n";
        let c = classify(raw);
        assert_eq!(c.kind, Kind::Human);
        assert_eq!(c.from.as_deref(), Some("ann@example.org"));
        assert_eq!(c.message_id.as_deref(), Some("a1@example.org"));
        assert!(!c.auto_submitted);
    }

    #[test]
    fn rfc3464_bounce() {
        let raw = concat!(
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n",
            "To: bounces@facteur.example\r\n",
            "Subject: Undelivered Mail Returned to Sender\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n",
            "\r\n--B\r\nContent-Type: text/plain\r\n\r\n",
            "I'm sorry to have to inform you that your message could not be delivered.\r\n",
            "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n",
            "Reporting-MTA: dns; mx.example.net\r\n\r\n",
            "Final-Recipient: rfc822; nobody@example.net\r\n",
            "Action: failed\r\nStatus: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown\r\n",
            "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n",
            "From: news@facteur.example\r\nTo: nobody@example.net\r\n",
            "Message-ID: <m42@facteur.example>\r\nX-Facteur-Id: 42\r\n",
            "\r\n--B--\r\n"
        );
        let c = classify(raw.as_bytes());
        assert_eq!(c.kind, Kind::Bounce);
        let r = c.first().unwrap();
        assert_eq!(r.recipient, "nobody@example.net");
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(r.replycode, Some(550));
        assert_eq!(r.permanent, Some(true));
        assert_eq!(r.hard, Some(true));
        assert_eq!(r.reason, "userunknown");
        assert_eq!(
            c.original_message_id.as_deref(),
            Some("m42@facteur.example")
        );
        assert!(c
            .original_headers
            .iter()
            .any(|(k, v)| k == "X-Facteur-Id" && v == "42"));
        assert!(c.auto_submitted);
        assert!(c.is_hard_bounce());
    }
}
