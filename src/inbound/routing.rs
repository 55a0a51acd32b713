//! Customer queries: the routing rules of `inbound.routes` (compiled once,
//! first match wins, else `inbound.default_route`) and what a route does:
//! POST the parsed message to a webhook, forward it through the outbound
//! queue, acknowledge it, each with the route's priority.
//!
//! Forwards and acknowledgements go through [`crate::api::messages::queue`],
//! the normal sending path, as transactional mail. An acknowledgement
//! carries `Auto-Submitted: auto-replied`, `In-Reply-To` and `References`
//! (RFC 3834 §3.1.5), and is never sent when [`loops`](super::loops) says
//! so or when the sender was answered within `inbound.ack_period`.

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::json;

use super::loops::{self, Facts, Silence};
use super::message::{truncate, Parsed};
use super::pipeline::Envelope;
use super::Inbound;
use crate::api::messages::{self, MailboxIn, RecipientIn, SendRequest};
use crate::config::{InboundConfig, RouteConfig};
use crate::spool::{now_ms, Priority};

/// Most bytes of body the rules look at.
const MAX_RULE_TEXT: usize = 64 * 1024;

/// A route with its patterns compiled.
pub struct Route {
    /// The configuration it came from.
    pub cfg: RouteConfig,
    /// Its place in `inbound.routes`, the default route last (names its
    /// webhook retry queue).
    pub index: usize,
    recipient: Option<Regex>,
    sender: Option<Regex>,
    subject: Option<Regex>,
    body: Option<Regex>,
    keywords: Option<Regex>,
}

/// The rules, compiled once at start.
pub struct Routes {
    rules: Vec<Route>,
    default: Route,
}

impl Routes {
    /// Compiles every pattern of `cfg` (already validated at load).
    pub fn compile(cfg: &InboundConfig) -> Result<Routes, regex::Error> {
        Ok(Routes {
            rules: cfg
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| Route::compile(r, i))
                .collect::<Result<_, _>>()?,
            default: Route::compile(&cfg.default_route, cfg.routes.len())?,
        })
    }

    /// The first rule that matches, else the default route.
    pub fn pick(&self, q: &Query<'_>) -> &Route {
        self.rules
            .iter()
            .find(|r| r.matches(q))
            .unwrap_or(&self.default)
    }
}

impl Route {
    fn compile(cfg: &RouteConfig, index: usize) -> Result<Route, regex::Error> {
        let re = |p: &Option<String>| p.as_deref().map(Regex::new).transpose();
        let keywords = if cfg.keywords.is_empty() {
            None
        } else {
            let words: Vec<String> = cfg
                .keywords
                .iter()
                .map(|k| regex::escape(k.trim()))
                .collect();
            Some(
                RegexBuilder::new(&format!(r"\b(?:{})\b", words.join("|")))
                    .case_insensitive(true)
                    .build()?,
            )
        };
        Ok(Route {
            cfg: cfg.clone(),
            index,
            recipient: re(&cfg.recipient)?,
            sender: re(&cfg.sender)?,
            subject: re(&cfg.subject)?,
            body: re(&cfg.body)?,
            keywords,
        })
    }

    /// Every criterion given matches.
    fn matches(&self, q: &Query<'_>) -> bool {
        let subject = q.message.subject.as_deref().unwrap_or("");
        let body = truncate(&q.message.text, MAX_RULE_TEXT);
        self.recipient
            .as_ref()
            .is_none_or(|re| q.recipients.iter().any(|r| re.is_match(r)))
            && self
                .sender
                .as_ref()
                .is_none_or(|re| re.is_match(q.sender.unwrap_or("")))
            && self.subject.as_ref().is_none_or(|re| re.is_match(subject))
            && self.body.as_ref().is_none_or(|re| re.is_match(body))
            && self
                .keywords
                .as_ref()
                .is_none_or(|re| re.is_match(subject) || re.is_match(body))
    }

    /// The route's name (`default` when it has none).
    pub fn name(&self) -> &str {
        if self.cfg.name.is_empty() {
            "default"
        } else {
            &self.cfg.name
        }
    }

    fn priority(&self) -> Priority {
        match self.cfg.priority.as_deref() {
            Some("high") => Priority::High,
            Some("low") => Priority::Low,
            _ => Priority::Normal,
        }
    }
}

/// A customer query as the rules and the webhook see it.
#[derive(Serialize)]
pub struct Query<'a> {
    /// The sender (`From`).
    pub sender: Option<&'a str>,
    /// The recipients: the envelope's when it came by SMTP, else `To` and `Cc`.
    pub recipients: Vec<String>,
    /// The message.
    pub message: &'a Parsed,
}

impl<'a> Query<'a> {
    /// The query of a parsed message.
    pub fn new(message: &'a Parsed, envelope: Option<&Envelope>) -> Query<'a> {
        let recipients = match envelope {
            Some(e) if !e.rcpt_to.is_empty() => e.rcpt_to.clone(),
            _ => message.to.iter().chain(&message.cc).cloned().collect(),
        };
        Query {
            sender: message.from.as_deref(),
            recipients,
            message,
        }
    }
}

/// Routes a query: webhook, forward, acknowledgement. Returns the route's
/// name and the actions taken (failures included: they are reported, the
/// message is not refused for them).
pub async fn route(
    inbound: &Inbound,
    q: &Query<'_>,
    envelope: Option<&Envelope>,
    via: &str,
) -> (String, Vec<String>) {
    let route = inbound.routes.pick(q);
    let mut actions = vec![format!("routed to {}", route.name())];
    if let Some(url) = &route.cfg.webhook {
        actions.push(post_webhook(inbound, route, url, q, envelope, via).await);
    }
    let from_own = q.sender.is_some_and(|s| inbound.is_own_address(s));
    if let Some(to) = &route.cfg.forward_to {
        if from_own {
            actions.push("not forwarded: sent by facteur itself".into());
        } else {
            actions.push(forward(inbound, route, to, q.message).await);
        }
    }
    if route.cfg.ack_subject.is_some() {
        actions.push(acknowledge(inbound, route, q.message, envelope).await);
    }
    (route.name().to_string(), actions)
}

async fn post_webhook(
    inbound: &Inbound,
    route: &Route,
    url: &str,
    q: &Query<'_>,
    envelope: Option<&Envelope>,
    via: &str,
) -> String {
    let body = json!({
        "type": "inbound.query",
        "route": route.name(),
        "priority": route.cfg.priority.as_deref().unwrap_or("normal"),
        "received_at": chrono::Utc::now().to_rfc3339(),
        "via": via,
        "envelope": envelope.map(|e| json!({"mail_from": e.mail_from, "rcpt_to": e.rcpt_to})),
        "sender": q.sender,
        "recipients": q.recipients,
        "message": q.message,
    });
    // The same id on the first post and on any retry, for deduplication.
    let id = uuid::Uuid::now_v7().simple().to_string();
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut req = inbound
        .http
        .post(url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("facteur/", env!("CARGO_PKG_VERSION")))
        .header("X-Facteur-Event-Id", &id);
    if !route.cfg.webhook_secret.is_empty() {
        let sig = crate::webhooks::sign(&route.cfg.webhook_secret, now_ms() / 1000, &bytes);
        req = req.header("X-Facteur-Signature", sig);
    }
    let failure = match req.body(bytes).send().await {
        Ok(r) if r.status().is_success() => return "webhook posted".into(),
        Ok(r) => format!("status {}", r.status().as_u16()),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(_) => "connection failed".into(),
    };
    match inbound.route_retries.queue(route.index, &id, body) {
        Ok(()) => {
            tracing::warn!(route = route.name(), url, error = %failure, "inbound webhook failed; queued for retry");
            format!("webhook failed ({failure}); queued for retry")
        }
        Err(e) => {
            tracing::error!(route = route.name(), url, error = %failure, queue_error = %e, "inbound webhook failed and cannot be queued");
            format!("webhook failed: {failure}")
        }
    }
}

async fn forward(inbound: &Inbound, route: &Route, to: &str, m: &Parsed) -> String {
    let cfg = &inbound.app.cfg.inbound;
    let Some(from) = cfg.own_sender() else {
        return "not forwarded: no sender configured".into();
    };
    let subject = m.subject.clone().unwrap_or_else(|| "(no subject)".into());
    let mut text = String::from("---------- Forwarded message ----------\n");
    for (name, value) in [
        ("From", m.header("from")),
        ("Date", m.header("date")),
        ("Subject", m.header("subject")),
        ("To", m.header("to")),
        ("Cc", m.header("cc")),
    ] {
        if let Some(v) = value {
            text.push_str(&format!("{name}: {v}\n"));
        }
    }
    text.push('\n');
    text.push_str(&m.text);
    for a in &m.attachments {
        text.push_str(&format!(
            "\n[attachment not forwarded: {} ({}, {} bytes)]",
            a.filename.as_deref().unwrap_or("unnamed"),
            a.content_type,
            a.size
        ));
    }
    let mut headers = BTreeMap::new();
    headers.insert("X-Facteur-Route".to_string(), clean_header(route.name()));
    let req = SendRequest {
        from: MailboxIn::Plain(from.to_string()),
        reply_to: m
            .answer_to()
            .filter(|a| valid(a))
            .map(|a| MailboxIn::Plain(a.to_string())),
        subject: "Fwd: {{ subject }}".into(),
        html: None,
        text: Some("{{ original }}".into()),
        headers,
        category: Some("transactional".into()),
        campaign: None,
        priority: Some(route.priority()),
        send_at: None,
        idempotency_key: m
            .message_id
            .as_deref()
            .map(|id| key("inbound-forward", id, to)),
        track: Some(false),
        recipients: vec![RecipientIn {
            email: to.to_string(),
            name: None,
            vars: vars(&[("subject", &subject), ("original", &text)]),
            metadata: json!({"inbound_route": route.name()}),
        }],
    };
    match messages::queue(&inbound.app, req).await {
        Ok(r) => match r.messages.first() {
            Some(a) if a.status == "queued" => format!("forwarded to {to} as {}", a.id),
            Some(a) => format!("not forwarded: {}", a.status),
            None => "not forwarded".into(),
        },
        Err(e) => {
            tracing::warn!(route = route.name(), error = ?e, "cannot queue a forward");
            "forward failed".into()
        }
    }
}

/// Sends the route's acknowledgement unless a rule says never.
async fn acknowledge(
    inbound: &Inbound,
    route: &Route,
    m: &Parsed,
    envelope: Option<&Envelope>,
) -> String {
    let metrics = &inbound.app.metrics.acknowledgements;
    let facts = Facts {
        headers: &m.headers,
        envelope_from: envelope.map(|e| e.mail_from.as_str()),
        answer_to: m.answer_to(),
    };
    if let Some(why) = loops::never_answer(&facts, |a| inbound.is_own_address(a)) {
        metrics.with_label_values(&["skipped"]).inc();
        return format!("not acknowledged: {why}");
    }
    let Some(to) = m.answer_to().filter(|a| valid(a)) else {
        metrics.with_label_values(&["skipped"]).inc();
        return format!("not acknowledged: {}", Silence::NoSender);
    };
    let key = format!("ack/{}", to.trim().to_ascii_lowercase());
    let period = inbound.app.cfg.inbound.ack_period.0.as_millis() as u64;
    // One decision at a time: the period check and its marker must not
    // interleave with another query from the same sender.
    let _one = inbound.ack_lock.lock().await;
    let now = now_ms();
    match inbound.app.spool.marker(&key) {
        Ok(Some(at)) if now.saturating_sub(at) < period => {
            metrics.with_label_values(&["skipped"]).inc();
            return format!("not acknowledged: {}", Silence::Recent);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read the acknowledgement marker");
            metrics.with_label_values(&["failed"]).inc();
            return "acknowledgement failed".into();
        }
    }
    match messages::queue(&inbound.app, ack_request(inbound, route, m, to)).await {
        Ok(r) if r.messages.first().is_some_and(|a| a.status == "queued") => {
            if let Err(e) = inbound.app.spool.set_marker(&key, now) {
                tracing::error!(error = %e, "cannot write the acknowledgement marker");
            }
            metrics.with_label_values(&["sent"]).inc();
            let id = r.messages.first().map(|a| a.id.as_str()).unwrap_or("");
            format!("acknowledged as {id}")
        }
        Ok(r) => {
            metrics.with_label_values(&["skipped"]).inc();
            let status = r.messages.first().map(|a| a.status.as_str()).unwrap_or("");
            format!("not acknowledged: {status}")
        }
        Err(e) => {
            tracing::warn!(route = route.name(), error = ?e, "cannot queue an acknowledgement");
            metrics.with_label_values(&["failed"]).inc();
            "acknowledgement failed".into()
        }
    }
}

/// The acknowledgement: the route's templates, rendered by the sending path
/// with the query's subject, sender, name and route as variables.
fn ack_request(inbound: &Inbound, route: &Route, m: &Parsed, to: &str) -> SendRequest {
    let mut headers = BTreeMap::new();
    headers.insert("Auto-Submitted".to_string(), "auto-replied".to_string());
    if let Some(id) = &m.message_id {
        headers.insert("In-Reply-To".to_string(), format!("<{id}>"));
        headers.insert("References".to_string(), references(&m.references, id));
    }
    let subject = m.subject.clone().unwrap_or_else(|| "(no subject)".into());
    let text = route.cfg.ack_text.clone().unwrap_or_else(|| {
        "Hello,\n\nwe received your message about \"{{ subject }}\"; we will answer it soon.\n"
            .into()
    });
    SendRequest {
        from: MailboxIn::Plain(inbound.app.cfg.inbound.ack_from.clone()),
        reply_to: None,
        subject: route.cfg.ack_subject.clone().unwrap_or_default(),
        html: None,
        text: Some(text),
        headers,
        category: Some("transactional".into()),
        campaign: None,
        priority: Some(route.priority()),
        send_at: None,
        idempotency_key: m.message_id.as_deref().map(|id| key("inbound-ack", id, to)),
        track: Some(false),
        recipients: vec![RecipientIn {
            email: to.to_string(),
            name: m.from_name.clone().map(|n| clean_header(&n)),
            vars: vars(&[
                ("subject", &subject),
                ("sender", to),
                ("name", m.from_name.as_deref().unwrap_or("")),
                ("route", route.name()),
                ("message_id", m.message_id.as_deref().unwrap_or("")),
            ]),
            metadata: json!({"inbound_route": route.name()}),
        }],
    }
}

/// `References` of an answer: the parent's references and its id, cut
/// from the oldest so that the header stays under 998 bytes.
fn references(parent: &[String], id: &str) -> String {
    let mut ids: Vec<String> = parent.iter().map(|r| format!("<{r}>")).collect();
    ids.push(format!("<{id}>"));
    while ids.len() > 1 && ids.iter().map(|i| i.len() + 1).sum::<usize>() > 900 {
        ids.remove(0);
    }
    ids.join(" ")
}

/// An idempotency key for facteur's own mail about one inbound message, so
/// that a query delivered twice is forwarded and acknowledged once.
fn key(what: &str, message_id: &str, to: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{message_id}\n{}", to.to_ascii_lowercase()));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{what}-{hex}")
}

fn vars(pairs: &[(&str, &str)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn valid(address: &str) -> bool {
    crate::api::address::parse(address).is_ok()
}

/// A header value without line breaks, at most 200 bytes.
fn clean_header(v: &str) -> String {
    let v: String = v.chars().filter(|c| !c.is_control()).collect();
    truncate(&v, 200).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(toml: &str) -> Routes {
        let cfg: InboundConfig = toml::from_str(toml).unwrap();
        Routes::compile(&cfg).unwrap()
    }

    fn parsed(from: &str, subject: &str, text: &str) -> Parsed {
        Parsed {
            from: Some(from.into()),
            subject: Some(subject.into()),
            text: text.into(),
            ..Parsed::default()
        }
    }

    fn pick<'a>(r: &'a Routes, m: &Parsed, rcpt: &str) -> &'a str {
        let q = Query {
            sender: m.from.as_deref(),
            recipients: vec![rcpt.to_string()],
            message: m,
        };
        r.pick(&q).name()
    }

    #[test]
    fn first_match_wins_else_default() {
        let r = routes(
            r#"
            [[routes]]
            name = "billing"
            subject = "(?i)invoice|refund"
            keywords = ["facture", "remboursement"]
            [[routes]]
            name = "vip"
            sender = "@vip\\.test$"
            [[routes]]
            name = "fr"
            keywords = ["facture", "Remboursement"]
            [[routes]]
            name = "sales"
            recipient = "^sales@"
            body = "(?i)price"
            [default_route]
            name = "default"
            "#,
        );
        let support = "support@brand.test";
        let m = parsed("a@x.test", "Refund please", "hello");
        assert_eq!(
            pick(&r, &m, support),
            "default",
            "subject and keywords both needed"
        );
        let m = parsed("a@x.test", "Invoice 12", "Ma facture est fausse");
        assert_eq!(pick(&r, &m, support), "billing");
        let m = parsed("a@vip.test", "hello", "");
        assert_eq!(pick(&r, &m, support), "vip");
        let m = parsed("a@x.test", "question", "ma REMBOURSEMENT svp");
        assert_eq!(
            pick(&r, &m, support),
            "fr",
            "keywords: any case, in the body"
        );
        let m = parsed("a@x.test", "question", "factures");
        assert_eq!(pick(&r, &m, support), "default", "keywords are whole words");
        let m = parsed("a@x.test", "question", "what price?");
        assert_eq!(pick(&r, &m, "sales@brand.test"), "sales");
        assert_eq!(
            pick(&r, &m, support),
            "default",
            "every criterion must match"
        );
    }

    #[test]
    fn bad_routes_are_refused_with_their_key() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            r#"
            [inbound]
            reply_addresses = ["support@brand.test", "@help.test", "nope"]
            [[inbound.routes]]
            name = "a"
            subject = "("
            priority = "urgent"
            forward_to = "desk@help.test"
            webhook = "ftp://x"
            [[inbound.routes]]
            name = "b"
            ack_subject = "Re: {{ subject"
            "#,
        )
        .unwrap();
        let errors = crate::config::Config::load(Some(file.path()), Vec::new())
            .unwrap_err()
            .0;
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "inbound.reply_addresses[2]",
            "inbound.routes[0].subject",
            "inbound.routes[0].priority",
            "inbound.routes[0].forward_to",
            "inbound.routes[0].webhook",
            "inbound.routes[1].ack_subject",
            "inbound.ack_from",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errors:?}");
        }
    }

    #[test]
    fn references_grow_and_stay_short() {
        assert_eq!(references(&[], "q1@x"), "<q1@x>");
        assert_eq!(
            references(&["a@x".into(), "b@x".into()], "q1@x"),
            "<a@x> <b@x> <q1@x>"
        );
        let long: Vec<String> = (0..100).map(|i| format!("{i:040}@example.org")).collect();
        let r = references(&long, "q1@x");
        assert!(r.len() <= 998 && r.ends_with("<q1@x>"));
        assert!(crate::compose::check_header("References", &r).is_ok());
    }

    #[test]
    fn keys_are_valid_idempotency_keys() {
        let k = key("inbound-ack", "q1@example.org", "Ann@X.test");
        assert_eq!(k, key("inbound-ack", "q1@example.org", "ann@x.test"));
        assert!(k.len() < 200 && !k.contains('/'));
    }
}
