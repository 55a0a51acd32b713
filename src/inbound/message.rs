//! An inbound message read once into what routing, webhooks, loop checks
//! and acknowledgements need.

use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;

/// Most bytes of body text kept (for rules and the webhook).
const MAX_TEXT: usize = 256 * 1024;
/// Most top-level headers kept.
const MAX_HEADERS: usize = 200;

/// An attachment, described (its content is not carried).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attachment {
    /// File name, when given.
    pub filename: Option<String>,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes, decoded.
    pub size: usize,
}

/// The parts of a message that facteur uses. Missing parts are empty,
/// whatever the input: reading never fails.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Parsed {
    /// Address in `From`.
    pub from: Option<String>,
    /// Display name in `From`.
    pub from_name: Option<String>,
    /// Address in `Reply-To`.
    pub reply_to: Option<String>,
    /// Addresses in `To`.
    pub to: Vec<String>,
    /// Addresses in `Cc`.
    pub cc: Vec<String>,
    /// Decoded subject.
    pub subject: Option<String>,
    /// `Message-ID` without `<>`.
    pub message_id: Option<String>,
    /// `In-Reply-To` ids without `<>`.
    pub in_reply_to: Vec<String>,
    /// `References` ids without `<>`.
    pub references: Vec<String>,
    /// `Date`, RFC 3339.
    pub date: Option<String>,
    /// The text body (HTML flattened when there is no text part).
    pub text: String,
    /// The HTML body, if any.
    pub html: Option<String>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Top-level headers, raw values unfolded, in order.
    pub headers: Vec<(String, String)>,
}

impl Parsed {
    /// Reads a raw RFC 5322 message. Never panics.
    pub fn read(raw: &[u8]) -> Parsed {
        std::panic::catch_unwind(|| read(raw)).unwrap_or_default()
    }

    /// Where an answer goes: `Reply-To`, else `From`.
    pub fn answer_to(&self) -> Option<&str> {
        self.reply_to.as_deref().or(self.from.as_deref())
    }

    /// The first value of a header, matched without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read(raw: &[u8]) -> Parsed {
    let Some(m) = MessageParser::default().parse(raw) else {
        return Parsed::default();
    };
    let first = |a: Option<&mail_parser::Address<'_>>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string)
    };
    let all = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    };
    let ids = |v: &mail_parser::HeaderValue<'_>| -> Vec<String> {
        v.as_text_list()
            .map(|l| {
                l.iter()
                    .map(|s| clean_id(s))
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = m
        .body_text(0)
        .map(|t| truncate(&t, MAX_TEXT).to_string())
        .unwrap_or_default();
    let html = m.body_html(0).filter(|_| m.html_body_count() > 0);
    Parsed {
        from: first(m.from()),
        from_name: m
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.name())
            .map(str::to_string),
        reply_to: first(m.reply_to()),
        to: all(m.to()),
        cc: all(m.cc()),
        subject: m.subject().map(str::to_string),
        message_id: m.message_id().map(clean_id).filter(|s| !s.is_empty()),
        in_reply_to: ids(m.in_reply_to()),
        references: ids(m.references()),
        date: m.date().map(|d| d.to_rfc3339()),
        text,
        html: html.map(|h| truncate(&h, MAX_TEXT).to_string()),
        attachments: m
            .attachments()
            .map(|a| Attachment {
                filename: a.attachment_name().map(str::to_string),
                content_type: a
                    .content_type()
                    .map(|c| match c.subtype() {
                        Some(s) => format!("{}/{s}", c.ctype()),
                        None => c.ctype().to_string(),
                    })
                    .unwrap_or_else(|| "application/octet-stream".into()),
                size: a.len(),
            })
            .collect(),
        headers: m
            .headers_raw()
            .take(MAX_HEADERS)
            .map(|(k, v)| (k.to_string(), unfold(v)))
            .collect(),
    }
}

/// A message id without `<>`, whitespace or control characters.
fn clean_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control() && *c != '<' && *c != '>')
        .collect()
}

/// Joins folded lines and trims.
fn unfold(value: &str) -> String {
    value
        .split('\n')
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The longest prefix of at most `max` bytes ending on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_query() {
        let raw = concat!(
            "From: Ann Example <Ann@Example.org>\r\n",
            "Reply-To: ann.private@example.org\r\n",
            "To: support@brand.test, Bob <bob@brand.test>\r\n",
            "Subject: =?UTF-8?Q?Facture_n=C2=B0_12?=\r\n",
            "Message-ID: <q1@example.org>\r\n",
            "In-Reply-To: <m1@brand.test>\r\n",
            "References: <m0@brand.test>\r\n <m1@brand.test>\r\n",
            "Date: Mon, 3 Mar 2025 10:00:00 +0000\r\n",
            "\r\n",
            "Hello, my invoice is wrong.\r\n"
        );
        let p = Parsed::read(raw.as_bytes());
        assert_eq!(p.from.as_deref(), Some("Ann@Example.org"));
        assert_eq!(p.from_name.as_deref(), Some("Ann Example"));
        assert_eq!(p.answer_to(), Some("ann.private@example.org"));
        assert_eq!(p.to, ["support@brand.test", "bob@brand.test"]);
        assert_eq!(p.subject.as_deref(), Some("Facture n° 12"));
        assert_eq!(p.message_id.as_deref(), Some("q1@example.org"));
        assert_eq!(p.in_reply_to, ["m1@brand.test"]);
        assert_eq!(p.references, ["m0@brand.test", "m1@brand.test"]);
        assert!(p.text.contains("invoice is wrong"));
        assert_eq!(
            p.header("references"),
            Some("<m0@brand.test> <m1@brand.test>")
        );
        assert!(p.date.is_some());
    }

    #[test]
    fn garbage_reads_as_empty_parts() {
        for raw in [
            &b""[..],
            b"\x00\xff\xfe",
            b"no headers at all",
            b":\r\n\r\n",
        ] {
            let p = Parsed::read(raw);
            assert!(p.from.is_none());
        }
    }
}
