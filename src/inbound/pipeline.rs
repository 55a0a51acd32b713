//! The one pipeline behind both ways in (the SMTP listener and
//! `POST /v1/inbound`): classify → attribute → effects → route, and an
//! [`Outcome`] that says what was done.

use serde::Serialize;
use thiserror::Error;

use super::attribution::{self, Clues};
use super::classify::{classify, Kind};
use super::effects::{self, Effect};
use super::message::Parsed;
use super::routing::{self, Query};
use super::Inbound;
use crate::spool::SpoolError;

/// The SMTP envelope of a message that came by SMTP.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `MAIL FROM`, without `<>`; empty for the null sender.
    pub mail_from: String,
    /// `RCPT TO`s, without `<>`.
    pub rcpt_to: Vec<String>,
}

/// How a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// facteur's SMTP listener.
    Smtp,
    /// `POST /v1/inbound`.
    Rest,
}

impl Via {
    /// `smtp` or `rest`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Via::Smtp => "smtp",
            Via::Rest => "rest",
        }
    }
}

/// What was done with a message: the answer of both ways in.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `bounce`, `feedback`, `autoreply` or `human`.
    pub kind: Kind,
    /// The facteur message the report is about (the first, when several).
    pub message_id: Option<String>,
    /// The inbound message's own Message-ID.
    pub inbound_message_id: Option<String>,
    /// The route a customer query took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// What was done, in words, in order.
    pub actions: Vec<String>,
    /// The messages touched by a report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<Effect>,
}

impl Outcome {
    /// One line for the SMTP reply: at most 400 characters, no line break.
    pub fn summary(&self) -> String {
        let what = match self.kind {
            Kind::Bounce => "bounce",
            Kind::Feedback => "complaint",
            Kind::Autoreply => "auto-reply",
            Kind::Human => "query",
        };
        let head = match (&self.kind, &self.message_id, &self.route) {
            (Kind::Human, _, Some(route)) => format!("query routed to {route}"),
            (Kind::Human, Some(id), None) => format!("unsubscribe recorded for message {id}"),
            (Kind::Human, None, None) => "query not routed".to_string(),
            (_, Some(id), _) if self.effects.len() > 1 => {
                format!(
                    "{what} recorded for {} messages, first {id}",
                    self.effects.len()
                )
            }
            (_, Some(id), _) => format!("{what} recorded for message {id}"),
            (_, None, _) => format!("{what} not attributed to any message"),
        };
        let mut line = head;
        for a in &self.actions {
            if line.len() + a.len() + 2 > 400 {
                line.push_str("; ...");
                break;
            }
            line.push_str("; ");
            line.push_str(a);
        }
        line.replace(['\r', '\n'], " ")
    }
}

/// Why a message could not be processed. Transient: the SMTP client is
/// told to try again (451), a REST caller gets 500.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The classifier's task died.
    #[error("classifier task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Processes one raw message; `envelope` is given when it came by SMTP.
pub async fn process(
    inbound: &Inbound,
    raw: Vec<u8>,
    envelope: Option<Envelope>,
    via: Via,
) -> Result<Outcome, PipelineError> {
    let (class, parsed) =
        tokio::task::spawn_blocking(move || (classify(&raw), Parsed::read(&raw))).await?;
    let app = &inbound.app;
    let kind_label = match class.kind {
        Kind::Bounce => "bounce",
        Kind::Feedback => "feedback",
        Kind::Autoreply => "autoreply",
        Kind::Human => "human",
    };
    app.metrics.inbound.with_label_values(&[kind_label]).inc();
    let rcpts: &[String] = envelope.as_ref().map_or(&[], |e| &e.rcpt_to);
    let clues = Clues {
        envelope_rcpts: rcpts,
        headers: &parsed.headers,
        class: &class,
        bounce_domain: &app.cfg.delivery.bounce_domain,
    };
    let applied = effects::apply(inbound, &class, &clues)?;
    let mut outcome = Outcome {
        kind: class.kind,
        message_id: applied.effects.first().map(|e| e.message_id.clone()),
        inbound_message_id: parsed.message_id.clone(),
        route: None,
        actions: applied.actions,
        effects: applied.effects,
    };
    if class.kind == Kind::Human {
        let q = Query::new(&parsed, envelope.as_ref());
        let domain = &app.cfg.delivery.bounce_domain;
        let unsubscribe = q
            .recipients
            .iter()
            .find_map(|r| attribution::unsubscribe_token(r, domain));
        if let Some(id) = unsubscribe {
            outcome
                .actions
                .push(unsubscribe_by_mail(inbound, id).await?);
            outcome.message_id = Some(id.to_string());
        } else if to_bounce_domain_only(inbound, &q.recipients) {
            outcome
                .actions
                .push("not routed: human mail to the bounce address".into());
        } else {
            let (route, actions) =
                routing::route(inbound, &q, envelope.as_ref(), via.as_str()).await;
            outcome.route = Some(route);
            outcome.actions.extend(actions);
        }
    }
    tracing::info!(
        via = via.as_str(),
        kind = kind_label,
        id = outcome.message_id.as_deref().unwrap_or(""),
        actions = %outcome.actions.join("; "),
        "inbound message processed"
    );
    Ok(outcome)
}

/// The `mailto:` of `List-Unsubscribe`: mail to `unsubscribe+ID@bounce_domain`.
/// Flushed before the answer, as an unsubscribe must be.
async fn unsubscribe_by_mail(inbound: &Inbound, id: &str) -> Result<String, PipelineError> {
    use crate::tracking::{unsubscribe_by_message, Unsubscribed};
    let done = unsubscribe_by_message(&inbound.app, id, "mailto")?;
    inbound.app.spool.flush().await?;
    Ok(match done {
        Unsubscribed::Now => format!("unsubscribed message {id}"),
        Unsubscribed::Already => format!("message {id} already unsubscribed"),
        Unsubscribed::UnknownMessage => format!("unsubscribe for unknown message {id}"),
    })
}

/// True when every recipient is on the bounce domain (and there is one):
/// such mail is a report or nothing, never a customer query.
fn to_bounce_domain_only(inbound: &Inbound, recipients: &[String]) -> bool {
    let domain = &inbound.app.cfg.delivery.bounce_domain;
    !recipients.is_empty()
        && recipients.iter().all(|r| {
            r.rsplit_once('@')
                .is_some_and(|(_, d)| d.trim_end_matches('>').eq_ignore_ascii_case(domain))
        })
}
