//! The parts of a parsed message that the classifier reads, gathered once.
//!
//! A report has three parts that matter: the notice a person reads (the
//! text the reporting server wrote), machine-readable fields (RFC 3464
//! `message/delivery-status`, RFC 5965 `message/feedback-report`) and the
//! returned original message (attached, or pasted after a separator line).

use std::sync::LazyLock;

use mail_parser::{Message, MimeHeaders, PartType};
use regex::Regex;

/// The most characters kept from one text part.
const MAX_PART_TEXT: usize = 256 * 1024;
/// The most characters kept of the notice as a whole.
const MAX_NOTICE: usize = 512 * 1024;
/// The most header fields kept from the returned original message.
const MAX_ORIGINAL_HEADERS: usize = 200;

/// A message as the classifier sees it.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// The message's own header fields, unfolded, in order.
    pub headers: Vec<(String, String)>,
    /// Address in `From`.
    pub from: Option<String>,
    /// Display name in `From`.
    pub from_name: Option<String>,
    /// Addresses in `To`.
    pub to: Vec<String>,
    /// Decoded subject.
    pub subject: Option<String>,
    /// Message-ID without `<>`.
    pub message_id: Option<String>,
    /// `report-type` of a `multipart/report`, lowercased.
    pub report_type: Option<String>,
    /// The human-readable text the reporting server wrote, line ends `\n`,
    /// cut before any pasted copy of the original message.
    pub notice: String,
    /// Text after the separator that introduces a pasted original, and text
    /// parts that are the original's headers.
    pub inline_original: String,
    /// Bodies of `message/delivery-status` parts.
    pub delivery_status: Vec<String>,
    /// Bodies of `message/feedback-report` parts.
    pub feedback_reports: Vec<String>,
    /// Header fields of the returned original message.
    pub original_headers: Vec<(String, String)>,
    /// Text of the returned original message's body, when attached.
    pub original_body: String,
}

impl View {
    /// Reads a parsed message.
    pub fn new(message: &Message<'_>) -> View {
        let mut view = View::headers_of(message);
        view.read_parts(message);
        view
    }

    /// Reads only the headers of a message and its body as raw text: for
    /// the messages whose MIME tree the parser could not read.
    pub fn from_headers(message: &Message<'_>, raw: &[u8]) -> View {
        let mut view = View::headers_of(message);
        view.set_notice(vec![raw_body_text(raw)]);
        view
    }

    fn headers_of(message: &Message<'_>) -> View {
        let mut view = View {
            headers: message
                .headers_raw()
                .map(|(name, value)| (name.to_string(), unfold(value)))
                .collect(),
            from: message
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address.as_deref())
                .map(|a| a.trim().to_string()),
            from_name: message
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.name.as_deref())
                .map(|a| a.trim().to_string()),
            to: message
                .to()
                .map(|list| {
                    list.iter()
                        .filter_map(|a| a.address.as_deref())
                        .map(|a| a.trim().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            subject: message.subject().map(|s| s.trim().to_string()),
            message_id: message.message_id().map(strip_angle),
            ..View::default()
        };
        if let Some(ct) = message.root_part().content_type() {
            if ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            {
                view.report_type = ct.attribute("report-type").map(|s| s.to_ascii_lowercase());
            }
        }
        view
    }

    fn read_parts(&mut self, message: &Message<'_>) {
        let mut texts: Vec<String> = Vec::new();
        let mut htmls: Vec<String> = Vec::new();
        for part in &message.parts {
            let ctype = part
                .content_type()
                .map(|ct| {
                    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase()
                })
                .unwrap_or_else(|| "text/plain".to_string());
            match &part.body {
                PartType::Text(text) => {
                    let text = normalise(text);
                    if ctype.ends_with("rfc822-headers") {
                        self.set_original_headers(parse_header_block(&text));
                    } else if ctype.contains("delivery-status") {
                        self.delivery_status.push(text);
                    } else if ctype.contains("feedback-report") {
                        self.feedback_reports.push(text);
                    } else if !texts.is_empty() && looks_like_headers(&text) {
                        push_text(&mut self.inline_original, &text);
                    } else {
                        texts.push(text);
                    }
                }
                PartType::Html(html) => htmls.push(html_to_text(html)),
                PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                    let text = normalise(&String::from_utf8_lossy(
                        &bytes[..bytes.len().min(MAX_PART_TEXT)],
                    ));
                    if ctype.contains("delivery-status") {
                        self.delivery_status.push(text);
                    } else if ctype.contains("feedback-report") {
                        self.feedback_reports.push(text);
                    } else if ctype.contains("rfc822") {
                        self.set_original_headers(parse_header_block(&text));
                        if ctype.ends_with("rfc822") {
                            push_text(&mut self.inline_original, &text);
                        }
                    }
                }
                PartType::Message(inner) => self.read_original(inner),
                PartType::Multipart(_) => {}
            }
        }
        if texts.iter().all(|t| t.trim().is_empty()) {
            texts = htmls;
        }
        if texts.iter().all(|t| t.trim().is_empty()) && self.delivery_status.is_empty() {
            // broken MIME (a boundary the parser could not find): read the
            // raw body, less the MIME scaffolding
            texts = vec![raw_body_text(message.raw_message())];
        }
        self.set_notice(texts);
    }

    /// The notice from its texts, cut before a pasted original (whose
    /// headers are kept when no attached original gave them).
    fn set_notice(&mut self, texts: Vec<String>) {
        let mut notice = String::new();
        for text in texts {
            push_text(&mut notice, &text);
        }
        let notice = undo_soft_breaks(notice);
        let (before, after) = split_at_separator(&notice);
        if !after.is_empty() {
            let rest = std::mem::take(&mut self.inline_original);
            self.inline_original = after.to_string();
            push_text(&mut self.inline_original, &rest);
        }
        self.notice = truncate(before, MAX_NOTICE).to_string();
        if self.original_headers.is_empty() {
            let headers = headers_in_text(&self.inline_original);
            self.set_original_headers(headers);
        }
    }

    fn read_original(&mut self, inner: &Message<'_>) {
        let headers: Vec<(String, String)> = inner
            .headers_raw()
            .map(|(name, value)| (name.to_string(), unfold(value)))
            .collect();
        self.set_original_headers(headers);
        if self.original_body.is_empty() {
            if let Some(text) = inner.body_text(0) {
                self.original_body = truncate(&normalise(&text), MAX_PART_TEXT).to_string();
            }
        }
    }

    fn set_original_headers(&mut self, mut headers: Vec<(String, String)>) {
        if self.original_headers.is_empty() && !headers.is_empty() {
            headers.truncate(MAX_ORIGINAL_HEADERS);
            self.original_headers = headers;
        }
    }

    /// The first value of a header of this message, matched without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// The first value of a header of the returned original message.
    pub fn original_header(&self, name: &str) -> Option<&str> {
        header_in(&self.original_headers, name)
    }

    /// The returned original's Message-ID, without `<>`.
    pub fn original_message_id(&self) -> Option<String> {
        self.original_header("message-id")
            .map(strip_angle)
            .filter(|id| !id.is_empty())
    }
}

/// The first value of `name` in a header list, matched without case.
pub(crate) fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `<id@host>` → `id@host`.
pub(crate) fn strip_angle(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

/// Joins folded header lines and trims the value.
pub(crate) fn unfold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, line) in value.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if i > 0 {
            out.push(' ');
            out.push_str(line.trim_start());
        } else {
            out.push_str(line);
        }
    }
    out.trim().to_string()
}

/// Line ends as `\n`, and at most [`MAX_PART_TEXT`] characters.
fn normalise(text: &str) -> String {
    truncate(text, MAX_PART_TEXT)
        .replace("\r\n", "\n")
        .replace('\r', "\n")
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn push_text(to: &mut String, text: &str) {
    if to.len() >= MAX_NOTICE {
        return;
    }
    if !to.is_empty() {
        to.push('\n');
    }
    to.push_str(truncate(text, MAX_NOTICE - to.len()));
}

/// Quoted-printable left undecoded (a part that did not declare it):
/// soft line breaks and the commonest escapes.
fn undo_soft_breaks(text: String) -> String {
    if text.matches("=\n").count() < 3 || !(text.contains("=3D") || text.contains("=20")) {
        return text;
    }
    text.replace("=\n", "")
        .replace("=20", " ")
        .replace("=3D", "=")
}

/// The body of a raw message as text, without boundary lines and MIME
/// part headers.
fn raw_body_text(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(MAX_PART_TEXT)];
    let text = normalise(&String::from_utf8_lossy(raw));
    let body = text.split_once("\n\n").map_or("", |(_, b)| b);
    let mut out = String::new();
    let mut in_part_headers = false;
    for line in body.lines() {
        if line.starts_with("--") && !line.contains(' ') && line.len() > 6 {
            in_part_headers = true;
            continue;
        }
        if in_part_headers {
            if line.trim().is_empty() {
                in_part_headers = false;
            }
            let l = line.to_ascii_lowercase();
            if l.starts_with("content-") || line.starts_with([' ', '\t']) || !l.contains(':') {
                continue;
            }
            in_part_headers = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

static HEADER_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z][A-Za-z0-9_-]{0,60}:").expect("valid regex"));

/// True when a text starts like a message header (a pasted original).
fn looks_like_headers(text: &str) -> bool {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let Some(first) = lines.next() else {
        return false;
    };
    if !HEADER_LINE.is_match(first) {
        return false;
    }
    let common = [
        "received:",
        "from:",
        "to:",
        "subject:",
        "message-id:",
        "date:",
        "return-path:",
        "mime-version:",
    ];
    std::iter::once(first)
        .chain(lines)
        .take(40)
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            common.iter().any(|c| l.starts_with(c))
        })
        .count()
        >= 2
}

/// Parses a header block (up to the first empty line).
pub(crate) fn parse_header_block(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(line.trim());
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if HEADER_LINE.is_match(line) => {
                out.push((name.trim().to_string(), value.trim().to_string()));
            }
            _ if out.is_empty() => continue,
            _ => break,
        }
        if out.len() >= MAX_ORIGINAL_HEADERS {
            break;
        }
    }
    out
}

/// Finds a pasted header block in free text: the first run of header lines
/// that holds a `From`, `Message-ID` or `Received` field.
fn headers_in_text(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().take(2000).collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_start_matches(['>', ' ']);
        if !HEADER_LINE.is_match(line) {
            continue;
        }
        let block: String = lines[i..]
            .iter()
            .map(|l| l.strip_prefix("> ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let headers = parse_header_block(&block);
        let useful = headers.iter().any(|(k, _)| {
            ["from", "message-id", "received", "to", "subject"]
                .iter()
                .any(|n| k.eq_ignore_ascii_case(n))
        });
        if headers.len() >= 2 && useful {
            return headers;
        }
    }
    Vec::new()
}

static SEPARATOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?im)^[ \t>]*(?:",
        // dashed or starred rulers that announce the original
        r"[-=_*]{2,}.*(?:original message|copy of (?:the|your) message|message follows|",
        r"unsent message|returned message|message header|headers follow|undelivered message|",
        r"original mail|message text follows|original text)",
        r"|below this line is a copy of the message",
        r"|this is a copy of the message",
        r"|(?:original|unsent|returned) message follows",
        r"|original message headers?:?\s*$",
        r"|the original message headers? (?:is|are|follow)",
        r"|the (?:original )?message headers? follows?",
        r"|your message reads",
        r"|(?:-+ )?forwarded message",
        r")"
    ))
    .expect("valid regex")
});

/// Splits a notice before the line that introduces a pasted original.
fn split_at_separator(text: &str) -> (&str, &str) {
    match SEPARATOR.find(text) {
        // a separator at the very start is not a cut: the notice would be empty
        Some(m) if text[..m.start()].trim().len() > 20 => (&text[..m.start()], &text[m.start()..]),
        _ => (text, ""),
    }
}

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<[^>]{0,2000}>").expect("valid regex"));
static BLOCK_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)<\s*(?:br|/p|/div|/tr|/li|/h[1-6]|p|div|tr|li)\b[^>]{0,500}>")
        .expect("valid regex")
});
/// Removes `<script>`, `<style>` and `<head>` elements, contents included.
fn drop_invisible(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut at = 0;
    while at < html.len() {
        let next = ["<script", "<style", "<head"]
            .iter()
            .filter_map(|tag| lower[at..].find(tag).map(|i| (at + i, *tag)))
            .min_by_key(|(i, _)| *i);
        let Some((start, tag)) = next else { break };
        out.push_str(&html[at..start]);
        let close = format!("</{}", &tag[1..]);
        at = match lower[start..].find(&close) {
            Some(i) => lower[start + i..]
                .find('>')
                .map_or(html.len(), |j| start + i + j + 1),
            None => html.len(),
        };
    }
    if at < html.len() {
        out.push_str(&html[at..]);
    }
    out
}

/// Crude HTML to text: enough to read addresses and error words.
fn html_to_text(html: &str) -> String {
    let html = truncate(html, MAX_PART_TEXT);
    let html = drop_invisible(html);
    let html = BLOCK_END.replace_all(&html, "\n");
    let text = TAG.replace_all(&html, "");
    let text = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#64;", "@")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    normalise(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_cuts_pasted_original() {
        let text = "Hi. This is the qmail-send program at example.net.\n\n<a@b.c>:\nno mailbox\n\n--- Below this line is a copy of the message.\n\nFrom: x@y.z\n";
        let (before, after) = split_at_separator(text);
        assert!(before.contains("<a@b.c>"));
        assert!(after.contains("From: x@y.z"));
    }

    #[test]
    fn header_block_in_text() {
        let text =
            "--- copy\n\nReturn-Path: <x@y.z>\nMessage-ID:\n <id1@y.z>\nSubject: hi\n\nbody\n";
        let headers = headers_in_text(text);
        assert_eq!(header_in(&headers, "message-id"), Some("<id1@y.z>"));
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn html_is_flattened() {
        assert_eq!(drop_invisible("a<style>x</style>b<SCRIPT>y"), "ab");
        let text = html_to_text("<p>Delivery to <b>a@b.c</b> failed</p><br>&lt;x@y.z&gt;");
        assert!(text.contains("a@b.c"));
        assert!(text.contains("<x@y.z>"));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
