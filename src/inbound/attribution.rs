//! Which message a bounce, complaint or auto-reply is about.
//!
//! Clues are tried from the surest to the weakest:
//!
//! 1. the VERP token of the envelope recipient `bounces+ID@bounce_domain`
//!    (mail that came by SMTP);
//! 2. the same token in `To`, `Delivered-To` or `X-Original-To` (mail
//!    posted to `/v1/inbound`, or forwarded on the way);
//! 3. `X-Facteur-Id` in the returned copy of the original;
//! 4. the original's `Message-ID` (`<ID@from-domain>`), or the message's own
//!    `In-Reply-To` and `References`, when ID is a message and the whole
//!    Message-ID is the one facteur gave it;
//! 5. the recipient: the latest message sent to that address within
//!    `inbound.attribution_window`.
//!
//! Every clue must name a message that exists, or it is ignored.

use serde::Serialize;

use super::classify::Classification;
use crate::spool::{now_ms, MessageRecord, Result, Spool};

/// How a message was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The envelope recipient's VERP token.
    Verp,
    /// A VERP address in `To`, `Delivered-To` or `X-Original-To`.
    AddressHeader,
    /// `X-Facteur-Id` in the returned original.
    FacteurHeader,
    /// The original's Message-ID, or `In-Reply-To` / `References`.
    MessageId,
    /// The recipient, and the time of the latest message to them.
    RecipientAndTime,
}

impl Method {
    /// The name used in answers and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Verp => "verp",
            Method::AddressHeader => "address_header",
            Method::FacteurHeader => "facteur_header",
            Method::MessageId => "message_id",
            Method::RecipientAndTime => "recipient_and_time",
        }
    }
}

/// What attribution may look at.
pub struct Clues<'a> {
    /// SMTP envelope recipients (empty for REST).
    pub envelope_rcpts: &'a [String],
    /// The message's own top-level headers.
    pub headers: &'a [(String, String)],
    /// What the classifier found.
    pub class: &'a Classification,
    /// `delivery.bounce_domain`.
    pub bounce_domain: &'a str,
}

/// A message found, and how.
#[derive(Debug, Clone)]
pub struct Attributed {
    /// The message.
    pub message: MessageRecord,
    /// How it was found.
    pub method: Method,
}

/// The message the report as a whole is about (clues 1 to 4).
pub fn find_message(spool: &Spool, clues: &Clues<'_>) -> Result<Option<Attributed>> {
    let found = |id: &str, method| -> Result<Option<Attributed>> {
        Ok(spool
            .message(id)?
            .map(|message| Attributed { message, method }))
    };
    for rcpt in clues.envelope_rcpts {
        if let Some(id) = verp_token(rcpt, clues.bounce_domain) {
            if let Some(a) = found(id, Method::Verp)? {
                return Ok(Some(a));
            }
        }
    }
    for (name, value) in clues.headers {
        if !["to", "delivered-to", "x-original-to"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        for address in addresses_in(value) {
            if let Some(id) = verp_token(address, clues.bounce_domain) {
                if let Some(a) = found(id, Method::AddressHeader)? {
                    return Ok(Some(a));
                }
            }
        }
    }
    for (name, value) in &clues.class.original_headers {
        if name.eq_ignore_ascii_case("x-facteur-id") && is_token(value.trim()) {
            if let Some(a) = found(value.trim(), Method::FacteurHeader)? {
                return Ok(Some(a));
            }
        }
    }
    let mut ids: Vec<&str> = clues
        .class
        .original_message_id
        .iter()
        .map(|s| s.as_str())
        .collect();
    for (name, value) in clues.headers {
        if name.eq_ignore_ascii_case("in-reply-to") || name.eq_ignore_ascii_case("references") {
            ids.extend(value.split_whitespace());
        }
    }
    for mid in ids.into_iter().take(50) {
        let mid = mid.trim().trim_start_matches('<').trim_end_matches('>');
        let Some(id) = message_id_token(mid) else {
            continue;
        };
        if let Some(a) = found(id, Method::MessageId)? {
            if a.message.message_id_header.eq_ignore_ascii_case(mid) {
                return Ok(Some(a));
            }
        }
    }
    Ok(None)
}

/// The latest message sent to `email` within `window_ms` (clue 5).
pub fn find_for_recipient(
    spool: &Spool,
    email: &str,
    window_ms: u64,
) -> Result<Option<Attributed>> {
    let email = email.trim().trim_start_matches('<').trim_end_matches('>');
    if !email.contains('@') {
        return Ok(None);
    }
    let Some(id) = spool.latest_message_for(email, now_ms().saturating_sub(window_ms))? else {
        return Ok(None);
    };
    Ok(spool.message(&id)?.map(|message| Attributed {
        message,
        method: Method::RecipientAndTime,
    }))
}

/// The token of a VERP address `bounces+TOKEN@bounce_domain`.
pub fn verp_token<'a>(address: &'a str, bounce_domain: &str) -> Option<&'a str> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(bounce_domain) {
        return None;
    }
    let token = local
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("bounces+"))
        .map(|_| &local[8..])?;
    is_token(token).then_some(token)
}

/// The unsubscribe token of `unsubscribe+TOKEN@bounce_domain`.
pub fn unsubscribe_token<'a>(address: &'a str, bounce_domain: &str) -> Option<&'a str> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(bounce_domain) {
        return None;
    }
    let token = local
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("unsubscribe+"))
        .map(|_| &local[12..])?;
    is_token(token).then_some(token)
}

/// The ID of a Message-ID `ID@domain` (without `<>`).
pub fn message_id_token(mid: &str) -> Option<&str> {
    let (id, domain) = mid.split_once('@')?;
    (is_token(id) && !domain.is_empty()).then_some(id)
}

/// Message ids are short and alphanumeric: anything else is not one.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The addresses of a header value: inside `<>` when there are any, else
/// the comma-separated items.
pub fn addresses_in(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let address = match item.split_once('<') {
            Some((_, rest)) => rest.split('>').next().unwrap_or(""),
            None => item,
        };
        let address = address.trim();
        if address.contains('@') {
            out.push(address);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verp_tokens() {
        let d = "bounces.brand.test";
        assert_eq!(
            verp_token("bounces+0193abc@bounces.brand.test", d),
            Some("0193abc")
        );
        assert_eq!(verp_token("<Bounces+x1@BOUNCES.brand.test>", d), Some("x1"));
        assert_eq!(verp_token("bounces+x1@other.test", d), None);
        assert_eq!(verp_token("bounces@bounces.brand.test", d), None);
        assert_eq!(verp_token("bounces+@bounces.brand.test", d), None);
        assert_eq!(verp_token("bounces+a/b@bounces.brand.test", d), None);
        assert_eq!(verp_token("bounce", d), None);
        assert_eq!(verp_token("é@bounces.brand.test", d), None);
        assert_eq!(
            unsubscribe_token("unsubscribe+m1@bounces.brand.test", d),
            Some("m1")
        );
        assert_eq!(unsubscribe_token("bounces+m1@bounces.brand.test", d), None);
    }

    #[test]
    fn message_ids_and_addresses() {
        assert_eq!(message_id_token("0193abc@brand.test"), Some("0193abc"));
        assert_eq!(message_id_token("0193abc@"), None);
        assert_eq!(message_id_token("a.b@brand.test"), None);
        assert_eq!(message_id_token("nodomain"), None);
        assert_eq!(
            addresses_in("Ann <ann@x.test>, bob@y.test, \"Z, z\" <z@z.test>"),
            ["ann@x.test", "bob@y.test", "z@z.test"]
        );
        assert!(addresses_in("undisclosed-recipients:;").is_empty());
    }
}
