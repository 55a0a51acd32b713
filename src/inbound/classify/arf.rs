//! Complaint reports: RFC 5965 Abuse Reporting Format, Microsoft's JMRP
//! (an attached original carrying `X-HmXmrOriginalRecipient`), Apple
//! Mail's one-click unsubscribe, and Amazon SES JSON notifications (which
//! carry bounces and deliveries as well as complaints).

use serde_json::Value;

use super::address;
use super::reason::{find_replycode, finish, parse_status};
use super::view::{strip_angle, View};
use super::{FailedRecipient, Reported};

/// The most recipients read from one report.
const MAX_RECIPIENTS: usize = 500;

/// A complaint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Feedback {
    /// `abuse`, `auth-failure`, `opt-out`, `fraud`, `virus` or `other`.
    pub feedback_type: String,
    /// The recipients who complained (RFC 5965 `Original-Rcpt-To`).
    pub recipients: Vec<FailedRecipient>,
    /// Message-ID of the reported message, when the report gives one.
    pub original_message_id: Option<String>,
}

fn complainer(address: String, feedback_type: &str) -> FailedRecipient {
    FailedRecipient {
        recipient: address,
        status: None,
        replycode: None,
        permanent: None,
        hard: None,
        reason: "feedback".to_string(),
        diagnostic: Some(feedback_type.to_string()),
    }
}

/// Reads a complaint report, or returns `None` when the message is not one.
pub(crate) fn parse(view: &View) -> Option<Feedback> {
    if let Some(f) = rfc5965(view) {
        return Some(f);
    }
    if let Some(f) = ses_json(view).and_then(|j| ses_complaint(&j)) {
        return Some(f);
    }
    if let Some(rcpt) = view.original_header("x-hmxmroriginalrecipient") {
        let recipients = address::find_all(rcpt)
            .into_iter()
            .map(|f| complainer(f.address, "abuse"))
            .collect();
        return Some(Feedback {
            feedback_type: "abuse".to_string(),
            recipients,
            original_message_id: view.original_message_id(),
        });
    }
    let apple_unsubscribe = view
        .header("x-apple-unsubscribe")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if apple_unsubscribe {
        return Some(Feedback {
            feedback_type: "opt-out".to_string(),
            recipients: view
                .from
                .as_deref()
                .and_then(address::clean)
                .map(|a| complainer(a, "opt-out"))
                .into_iter()
                .collect(),
            original_message_id: None,
        });
    }
    None
}

fn rfc5965(view: &View) -> Option<Feedback> {
    let is_report = view.report_type.as_deref() == Some("feedback-report");
    if view.feedback_reports.is_empty() && !is_report {
        return None;
    }
    let fields: Vec<(String, String)> = view
        .feedback_reports
        .iter()
        .flat_map(|b| super::view::parse_header_block(b))
        .collect();
    let field = |name: &str| super::view::header_in(&fields, name);
    let feedback_type = field("feedback-type")
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "abuse".to_string());
    let mut addresses: Vec<String> = fields
        .iter()
        .filter(|(k, _)| {
            k.eq_ignore_ascii_case("original-rcpt-to")
                || k.eq_ignore_ascii_case("removal-recipient")
        })
        .flat_map(|(_, v)| address::find_all(v))
        .map(|f| f.address)
        .collect();
    if addresses.is_empty() {
        addresses = ["to", "x-original-to", "delivered-to"]
            .iter()
            .filter_map(|h| view.original_header(h))
            .flat_map(address::find_all)
            .map(|f| f.address)
            .take(1)
            .collect();
    }
    let mut recipients: Vec<FailedRecipient> = Vec::new();
    for a in addresses.into_iter().take(MAX_RECIPIENTS) {
        if !recipients.iter().any(|r| address::same(&r.recipient, &a)) {
            recipients.push(complainer(a, &feedback_type));
        }
    }
    let original_message_id = view.original_message_id().or_else(|| {
        field("original-message-id")
            .map(strip_angle)
            .filter(|s| !s.is_empty())
    });
    Some(Feedback {
        feedback_type,
        recipients,
        original_message_id,
    })
}

/// The SES notification in the body: either bare or wrapped in an SNS
/// envelope whose `Message` is the notification as a JSON string.
fn ses_json(view: &View) -> Option<Value> {
    let body = view.notice.trim();
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    if end <= start || !body[..start].trim().is_empty() {
        return None;
    }
    let json = &body[start..=end];
    // mail transport may have folded long lines inside JSON strings
    let value: Value = serde_json::from_str(json)
        .or_else(|_| serde_json::from_str(&json.replace("\n ", "")))
        .or_else(|_| serde_json::from_str(&json.replace('\n', "")))
        .ok()?;
    let inner = match value.get("Message").and_then(Value::as_str) {
        Some(message) => serde_json::from_str(message).ok()?,
        None => value,
    };
    let kind = inner
        .get("notificationType")
        .or_else(|| inner.get("eventType"))?;
    kind.is_string().then_some(inner)
}

fn ses_kind(json: &Value) -> &str {
    json.get("notificationType")
        .or_else(|| json.get("eventType"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn ses_message_id(json: &Value) -> Option<String> {
    let mail = json.get("mail")?;
    mail.pointer("/commonHeaders/messageId")
        .and_then(Value::as_str)
        .map(strip_angle)
}

fn ses_complaint(json: &Value) -> Option<Feedback> {
    if !ses_kind(json).eq_ignore_ascii_case("complaint") {
        return None;
    }
    let complaint = json.get("complaint")?;
    let feedback_type = complaint
        .get("complaintFeedbackType")
        .and_then(Value::as_str)
        .unwrap_or("abuse")
        .to_ascii_lowercase();
    let recipients = complaint
        .get("complainedRecipients")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .take(MAX_RECIPIENTS)
                .filter_map(|r| r.get("emailAddress").and_then(Value::as_str))
                .filter_map(address::clean)
                .map(|a| complainer(a, &feedback_type))
                .collect()
        })
        .unwrap_or_default();
    Some(Feedback {
        feedback_type,
        recipients,
        original_message_id: ses_message_id(json),
    })
}

/// The recipients of an Amazon SES bounce or delivery notification.
pub(crate) fn ses_bounce(view: &View) -> Option<Vec<FailedRecipient>> {
    let json = ses_json(view)?;
    let kind = ses_kind(&json).to_ascii_lowercase();
    let (list, delivered) = match kind.as_str() {
        "bounce" => (json.pointer("/bounce/bouncedRecipients"), false),
        "delivery" => (json.pointer("/delivery/recipients"), true),
        _ => return None,
    };
    let transient = json
        .pointer("/bounce/bounceType")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("transient"));
    let smtp_response = json
        .pointer("/delivery/smtpResponse")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = Vec::new();
    for item in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(MAX_RECIPIENTS)
    {
        let addr = item
            .get("emailAddress")
            .and_then(Value::as_str)
            .or_else(|| item.as_str())
            .and_then(address::clean);
        let Some(addr) = addr else { continue };
        let diagnostic = item
            .get("diagnosticCode")
            .and_then(Value::as_str)
            .unwrap_or(smtp_response);
        let diagnostic = diagnostic
            .split_once(';')
            .filter(|(t, _)| t.len() < 12)
            .map_or(diagnostic, |(_, d)| d)
            .trim();
        let status = item
            .get("status")
            .and_then(Value::as_str)
            .and_then(parse_status)
            .or_else(|| {
                delivered
                    .then(|| super::reason::find_status(diagnostic))
                    .flatten()
            })
            .or_else(|| delivered.then(|| "2.0.0".to_string()));
        out.push(finish(
            &Reported {
                address: addr,
                status,
                replycode: find_replycode(diagnostic),
                action: item
                    .get("action")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase),
                diagnostic: diagnostic.to_string(),
                delayed: transient,
                diagnostic_type: None,
                command: None,
            },
            "",
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5965_fields() {
        let v = View {
            report_type: Some("feedback-report".into()),
            feedback_reports: vec!["Feedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\nOriginal-Rcpt-To: <a@example.org>\nOriginal-Rcpt-To: b@example.org\n".into()],
            original_headers: vec![("Message-ID".into(), "<x1@facteur.example>".into())],
            ..View::default()
        };
        let f = parse(&v).unwrap();
        assert_eq!(f.feedback_type, "abuse");
        let r: Vec<_> = f.recipients.iter().map(|r| r.recipient.as_str()).collect();
        assert_eq!(r, ["a@example.org", "b@example.org"]);
        assert_eq!(f.original_message_id.as_deref(), Some("x1@facteur.example"));
    }

    #[test]
    fn recipient_from_original_to() {
        let v = View {
            feedback_reports: vec!["Feedback-Type: auth-failure\n".into()],
            original_headers: vec![("To".into(), "<c@example.org>".into())],
            ..View::default()
        };
        let f = parse(&v).unwrap();
        assert_eq!(f.feedback_type, "auth-failure");
        assert_eq!(f.recipients[0].recipient, "c@example.org");
    }

    #[test]
    fn ses_complaint_and_bounce() {
        let v = View {
            notice: r#"{"notificationType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"d@example.org"}],"complaintFeedbackType":"abuse"},"mail":{"commonHeaders":{"messageId":"<m1@x>"}}}"#.into(),
            ..View::default()
        };
        let f = parse(&v).unwrap();
        assert_eq!(f.recipients[0].recipient, "d@example.org");
        assert_eq!(f.original_message_id.as_deref(), Some("m1@x"));
        let v = View {
            notice: r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"e@example.org","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]}}"#.into(),
            ..View::default()
        };
        let b = ses_bounce(&v).unwrap();
        assert_eq!(b[0].reason, "userunknown");
        assert_eq!(b[0].replycode, Some(550));
        assert!(parse(&v).is_none());
    }
}
