//! Building the MIME message for one recipient.
//!
//! Subject, HTML and text are minijinja templates rendered with the
//! recipient's variables (auto-escaped in HTML). Templates of a batch are
//! compiled once and kept in a small cache. Headers are checked for CR/LF
//! and reserved names when the request arrives ([`check_header`]); the
//! rendered subject loses any line break a variable brought in.
//!
//! Besides the recipient's variables, templates see `email`, `name` and,
//! on mail that is not transactional, `unsubscribe_url`: the recipient's
//! unsubscribe page, which link tracking leaves as it is.

mod encoding;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;
use minijinja::Environment;
use thiserror::Error;

use crate::config::{DkimAlgorithm, DkimConfig};
use crate::spool::{MessageRecord, Template};

/// Why a message could not be composed.
#[derive(Debug, Error)]
pub enum ComposeError {
    /// A template failed to compile or render.
    #[error("template {part}: {message}")]
    Template {
        /// `subject`, `html` or `text`.
        part: &'static str,
        /// What minijinja said.
        message: String,
    },
    /// The template of the batch is gone.
    #[error("template of batch {0} is missing")]
    MissingTemplate(String),
    /// Writing the MIME message failed.
    #[error("mime: {0}")]
    Mime(String),
}

/// Headers a caller may not set: facteur writes them.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "dkim-signature",
    "received",
    "return-path",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-facteur-id",
    "reply-to",
    "sender",
];

/// Checks a caller's header: a valid name (RFC 5322 ftext), not reserved,
/// and no CR or LF in the value.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!(
            "header name '{}' is not valid",
            name.escape_debug()
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("header '{name}' is set by facteur"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("header '{name}' contains CR or LF"));
    }
    if value.len() > 998 {
        return Err(format!("header '{name}' is longer than 998 bytes"));
    }
    Ok(())
}

/// Compiles each template of a request, for the API to refuse bad ones.
pub fn check_templates(
    subject: &str,
    html: Option<&str>,
    text: Option<&str>,
) -> Result<(), ComposeError> {
    compile(subject, html, text).map(|_| ())
}

fn compile(
    subject: &str,
    html: Option<&str>,
    text: Option<&str>,
) -> Result<Environment<'static>, ComposeError> {
    let mut env = Environment::new();
    let add =
        |env: &mut Environment<'static>, part: &'static str, name: &'static str, src: &str| {
            env.add_template_owned(name, src.to_string())
                .map_err(|e| ComposeError::Template {
                    part,
                    message: e.to_string(),
                })
        };
    add(&mut env, "subject", "subject.txt", subject)?;
    if let Some(h) = html {
        add(&mut env, "html", "body.html", h)?;
    }
    if let Some(t) = text {
        add(&mut env, "text", "body.txt", t)?;
    }
    Ok(env)
}

/// What a tracking-enabled message needs from `tracking`.
pub trait LinkTracker {
    /// Rewrites the links of the HTML part and adds the open pixel.
    fn rewrite_html(&self, rec: &MessageRecord, html: &str) -> String;
    /// Rewrites the links of the text part (or returns it unchanged).
    fn rewrite_text(&self, rec: &MessageRecord, text: &str) -> String;
}

/// Decides, per message, the unsubscribe headers and link tracking
/// (implemented by `tracking`).
pub trait Decorate: Send + Sync {
    /// The extras for one message.
    fn extras<'a>(&'a self, rec: &MessageRecord, t: &Template) -> Extras<'a>;
}

/// No tracking, no unsubscribe headers.
pub struct Plain;

impl Decorate for Plain {
    fn extras<'a>(&'a self, _: &MessageRecord, _: &Template) -> Extras<'a> {
        Extras::default()
    }
}

/// Per-message extras decided outside compose.
#[derive(Default)]
pub struct Extras<'a> {
    /// `List-Unsubscribe` URLs (https, mailto), for non-transactional mail.
    pub unsubscribe: Option<(String, String)>,
    /// Link rewriting and pixel, when tracking is on.
    pub tracker: Option<&'a dyn LinkTracker>,
}

/// Builds messages: templates cache and DKIM key.
pub struct Composer {
    envs: Mutex<HashMap<String, Arc<Environment<'static>>>>,
    dkim: Option<Dkim>,
}

use mail_auth::dkim::Done;

/// A ready DKIM signer for the configured key.
enum Dkim {
    Ed25519(DkimSigner<Ed25519Key, Done>),
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
}

/// Headers signed by DKIM, when present (RFC 8058 §4 asks for both
/// List-Unsubscribe headers).
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "X-Facteur-Id",
];

impl Composer {
    /// A composer; loads the DKIM key when signing is configured.
    pub fn new(dkim: &DkimConfig) -> anyhow::Result<Composer> {
        let dkim = if dkim.domain.is_empty() {
            None
        } else {
            let pem = std::fs::read_to_string(&dkim.private_key_file)?;
            let signed = SIGNED_HEADERS.iter().copied();
            Some(match dkim.algorithm {
                DkimAlgorithm::Ed25519 => {
                    let der = pem_to_der(&pem)
                        .ok_or_else(|| anyhow::anyhow!("dkim.private_key_file: not a PEM file"))?;
                    let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der)
                        .map_err(|e| anyhow::anyhow!("dkim.private_key_file: {e}"))?;
                    Dkim::Ed25519(
                        DkimSigner::from_key(key)
                            .domain(dkim.domain.clone())
                            .selector(dkim.selector.clone())
                            .headers(signed),
                    )
                }
                DkimAlgorithm::Rsa => {
                    let key = RsaKey::<Sha256>::from_rsa_pem(&pem)
                        .or_else(|_| RsaKey::<Sha256>::from_pkcs8_pem(&pem))
                        .map_err(|e| anyhow::anyhow!("dkim.private_key_file: {e}"))?;
                    Dkim::Rsa(
                        DkimSigner::from_key(key)
                            .domain(dkim.domain.clone())
                            .selector(dkim.selector.clone())
                            .headers(signed),
                    )
                }
            })
        };
        Ok(Composer {
            envs: Mutex::new(HashMap::new()),
            dkim,
        })
    }

    fn env_for(
        &self,
        rec: &MessageRecord,
        t: &Template,
    ) -> Result<Arc<Environment<'static>>, ComposeError> {
        if let Some(env) = self
            .envs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&rec.batch)
        {
            return Ok(env.clone());
        }
        let env = Arc::new(compile(&t.subject, t.html.as_deref(), t.text.as_deref())?);
        let mut envs = self.envs.lock().unwrap_or_else(|e| e.into_inner());
        if envs.len() > 1024 {
            envs.clear();
        }
        envs.insert(rec.batch.clone(), env.clone());
        Ok(env)
    }

    /// Renders and writes the whole message (DKIM-signed when configured).
    pub fn compose(
        &self,
        rec: &MessageRecord,
        t: &Template,
        extras: &Extras<'_>,
    ) -> Result<Vec<u8>, ComposeError> {
        let env = self.env_for(rec, t)?;
        let mut ctx = match &rec.vars {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        ctx.entry("email")
            .or_insert_with(|| rec.email.clone().into());
        if let Some(n) = &rec.name {
            ctx.entry("name").or_insert_with(|| n.clone().into());
        }
        if let Some((https, _)) = &extras.unsubscribe {
            ctx.entry("unsubscribe_url")
                .or_insert_with(|| https.clone().into());
        }
        let ctx = minijinja::Value::from_serialize(&ctx);
        let render = |part: &'static str, name: &str| -> Result<String, ComposeError> {
            env.get_template(name)
                .and_then(|tpl| tpl.render(&ctx))
                .map_err(|e| ComposeError::Template {
                    part,
                    message: e.to_string(),
                })
        };
        let subject = render("subject", "subject.txt")?.replace(['\r', '\n'], " ");
        let mut html = if t.html.is_some() {
            Some(render("html", "body.html")?)
        } else {
            None
        };
        let mut text = if t.text.is_some() {
            Some(render("text", "body.txt")?)
        } else {
            None
        };
        if let Some(tr) = extras.tracker {
            html = html.map(|h| tr.rewrite_html(rec, &h));
            text = text.map(|x| tr.rewrite_text(rec, &x));
        }
        let from = mailbox(t.from.name.as_deref(), &t.from.email);
        let to = mailbox(rec.name.as_deref(), &rec.email);
        let mut b = MessageBuilder::new()
            .from(from)
            .to(to)
            .subject(subject)
            .message_id(rec.message_id_header.clone())
            .header("X-Facteur-Id", Raw::new(rec.id.clone()));
        if let Some(r) = &t.reply_to {
            b = b.reply_to(mailbox(r.name.as_deref(), &r.email));
        }
        for (name, value) in &t.headers {
            b = b.header(name.clone(), Raw::new(value.clone()));
        }
        if let Some((https, mailto)) = &extras.unsubscribe {
            b = b
                .header(
                    "List-Unsubscribe",
                    Raw::new(format!("<{https}>, <{mailto}>")),
                )
                .header(
                    "List-Unsubscribe-Post",
                    Raw::new("List-Unsubscribe=One-Click"),
                );
        }
        b.html_body = html.map(|h| text_part("text/html", &h));
        b.text_body = text.map(|x| text_part("text/plain", &x));
        let body = b
            .write_to_vec()
            .map_err(|e| ComposeError::Mime(e.to_string()))?;
        Ok(self.sign(body))
    }

    /// Prepends a DKIM-Signature when a key is configured.
    fn sign(&self, message: Vec<u8>) -> Vec<u8> {
        let Some(d) = &self.dkim else { return message };
        let signature = match d {
            Dkim::Ed25519(s) => s.sign(&message),
            Dkim::Rsa(s) => s.sign(&message),
        };
        match signature {
            Ok(sig) => {
                let mut out = sig.to_header().into_bytes();
                out.extend_from_slice(&message);
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "DKIM signing failed; sending unsigned");
                message
            }
        }
    }
}

/// A text part in UTF-8, encoded by [`encoding::encode_text`].
fn text_part(content_type: &'static str, text: &str) -> MimePart<'static> {
    let e = encoding::encode_text(text);
    MimePart::new(content_type, e.text).transfer_encoding(e.transfer_encoding)
}

fn mailbox<'x>(name: Option<&str>, email: &str) -> Address<'x> {
    match name {
        Some(n) if !n.is_empty() => {
            Address::new_address(Some(n.replace(['\r', '\n'], " ")), email.to_string())
        }
        _ => Address::new_address(None::<String>, email.to_string()),
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_with_crlf_or_reserved_names_are_refused() {
        assert!(check_header("X-Campaign", "spring").is_ok());
        assert!(check_header("X-Campaign", "a\r\nBcc: x@y").is_err());
        assert!(check_header("Subject", "x").is_err());
        assert!(check_header("Bad Name", "x").is_err());
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(check_templates("Hi {{ name }}", Some("<p>{{ name }}</p>"), None).is_ok());
        let e = check_templates("Hi {{ name", None, None).unwrap_err();
        assert!(e.to_string().starts_with("template subject"), "{e}");
        assert!(check_templates("ok", Some("{% if %}"), None).is_err());
    }
}
