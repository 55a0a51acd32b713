//! `POST /v1/messages` and `GET /v1/messages/{id}`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::address;
use super::error::ApiError;
use super::App;
use crate::compose;
use crate::events::{Event, EventType, SmtpReply};
use crate::policy::{self, Decision};
use crate::spool::{
    now_ms, AcceptBatch, Mailbox, MessageRecord, Priority, State as MsgState, Template,
};

/// A sender or reply-to: an address, or an address and a name.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MailboxIn {
    /// `"news@brand.example"`.
    #[schema(value_type = String, format = Email)]
    Plain(String),
    /// `{"email": "news@brand.example", "name": "Brand"}`.
    Full {
        /// Address.
        #[schema(format = Email)]
        email: String,
        /// Display name.
        #[serde(default)]
        name: Option<String>,
    },
}

impl MailboxIn {
    fn parts(&self) -> (&str, Option<&str>) {
        match self {
            MailboxIn::Plain(e) => (e, None),
            MailboxIn::Full { email, name } => (email, name.as_deref()),
        }
    }
}

/// One recipient of a request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientIn {
    /// Address.
    #[schema(format = Email)]
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Template variables.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Returned as is in events and webhooks.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// The body of `POST /v1/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Sender.
    pub from: MailboxIn,
    /// Reply-To.
    #[serde(default)]
    pub reply_to: Option<MailboxIn>,
    /// Subject template.
    pub subject: String,
    /// HTML template.
    #[serde(default)]
    pub html: Option<String>,
    /// Text template.
    #[serde(default)]
    pub text: Option<String>,
    /// Extra headers: printable ASCII names without `:`, values without CR
    /// or LF, at most 998 bytes; the headers facteur sets are refused.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `transactional`, `marketing`, or a configured category.
    #[serde(default)]
    pub category: Option<String>,
    /// Campaign name (uniqueness, metrics).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^/\r\n]*$")]
    pub campaign: Option<String>,
    /// `high`, `normal`, `low`.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// When to send (RFC 3339); now when absent.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    /// A repeated key returns the first answer and queues nothing new.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^/\r\n]*$")]
    pub idempotency_key: Option<String>,
    /// Open and click tracking; the category's default when absent.
    #[serde(default)]
    pub track: Option<bool>,
    /// Recipients, 1 to `api.max_recipients` (1000 by default).
    #[schema(min_items = 1)]
    pub recipients: Vec<RecipientIn>,
}

/// One accepted recipient.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Message id.
    pub id: String,
    /// Address.
    pub email: String,
    /// `queued`, `suppressed` or `dropped`.
    pub status: String,
    /// Why not queued.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// The answer to `POST /v1/messages`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendResponse {
    /// Batch id.
    pub batch: String,
    /// One entry per recipient, in order.
    pub messages: Vec<Accepted>,
}

/// The answer to `GET /v1/messages/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// Batch id.
    pub batch: String,
    /// Recipient.
    pub email: String,
    /// State.
    pub state: MsgState,
    /// Category.
    pub category: String,
    /// Campaign.
    pub campaign: Option<String>,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Last SMTP reply.
    pub last_reply: Option<SmtpReply>,
    /// Next attempt (RFC 3339) when not finished.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Timeline.
    pub events: Vec<Event>,
}

fn ms_to_time(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms as i64)
}

/// `GET /v1/messages/{id}`: state, attempts, last reply and timeline.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = MessageView), (status = 404, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_message(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    if id.len() > 64 {
        return Err(ApiError::not_found("message"));
    }
    let rec = app
        .spool
        .message(&id)?
        .ok_or_else(|| ApiError::not_found("message"))?;
    // Opens and clicks live in their own log; the timeline shows both.
    let mut events = rec.events;
    events.extend(app.spool.tracking_events(&id)?);
    events.sort_by_key(|e| e.at);
    Ok(Json(MessageView {
        next_attempt_at: if rec.state.is_final() {
            None
        } else {
            ms_to_time(rec.due_ms)
        },
        id: rec.id,
        batch: rec.batch,
        email: rec.email,
        state: rec.state,
        category: rec.category,
        campaign: rec.campaign,
        attempts: rec.attempts,
        last_reply: rec.last_reply,
        events,
    }))
}

/// `POST /v1/messages`: queue one message to 1..1000 recipients.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendRequest,
    responses((status = 202, body = SendResponse, description = "Durably queued: one id per recipient"),
        (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SendRequest = super::parse_json(&headers, &body)?;
    let answer = queue(&app, req).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Validates a request and queues it durably: the sending path for the
/// API and for facteur's own mail (acknowledgements, forwards). A repeated
/// idempotency key returns the first answer and queues nothing.
pub async fn queue(app: &App, req: SendRequest) -> Result<SendResponse, ApiError> {
    let checked = validate(app, &req)?;
    let _guard = match &req.idempotency_key {
        Some(key) => {
            let guard = app.idempotency.lock().await;
            if let Some(answer) = app.spool.idempotent_answer(key)? {
                return serde_json::from_value(answer).map_err(ApiError::internal);
            }
            Some(guard)
        }
        None => None,
    };
    accept(app, req, checked).await
}

/// What validation learnt: ASCII addresses and the category.
struct Checked {
    category: String,
    from: String,
    recipients: Vec<address::Address>,
}

fn validate(app: &App, req: &SendRequest) -> Result<Checked, ApiError> {
    let max = app.cfg.api.max_recipients;
    if req.recipients.is_empty() {
        return Err(ApiError::field(
            "no_recipients",
            "recipients",
            "at least one recipient is required",
        ));
    }
    if req.recipients.len() > max {
        return Err(ApiError::field(
            "too_many_recipients",
            "recipients",
            format!(
                "{} recipients; at most {max} per request",
                req.recipients.len()
            ),
        ));
    }
    let (from, from_name) = req.from.parts();
    let from = address::parse(from).map_err(|e| ApiError::field("invalid_address", "from", e))?;
    no_crlf("from.name", from_name)?;
    if let Some(r) = &req.reply_to {
        let (e, n) = r.parts();
        address::parse(e).map_err(|e| ApiError::field("invalid_address", "reply_to", e))?;
        no_crlf("reply_to.name", n)?;
    }
    if req.html.is_none() && req.text.is_none() {
        return Err(ApiError::field(
            "missing_body",
            "html",
            "one of html or text is required",
        ));
    }
    for (name, value) in &req.headers {
        compose::check_header(name, value)
            .map_err(|e| ApiError::field("invalid_header", format!("headers.{name}"), e))?;
    }
    compose::check_templates(&req.subject, req.html.as_deref(), req.text.as_deref()).map_err(
        |e| match e {
            compose::ComposeError::Template { part, message } => {
                ApiError::field("invalid_template", part, message)
            }
            other => ApiError::field("invalid_template", "subject", other.to_string()),
        },
    )?;
    let category = req.category.clone().unwrap_or_else(|| "marketing".into());
    if !["transactional", "marketing"].contains(&category.as_str())
        && !app.cfg.policy.categories.contains(&category)
    {
        return Err(ApiError::field(
            "unknown_category",
            "category",
            format!("category '{category}' is not configured"),
        ));
    }
    for (field, v) in [
        ("campaign", &req.campaign),
        ("idempotency_key", &req.idempotency_key),
    ] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > 200 || v.contains(['\r', '\n', '/']) {
                return Err(ApiError::field(
                    "invalid_value",
                    field,
                    "1 to 200 characters, no '/', CR or LF",
                ));
            }
        }
    }
    let mut recipients = Vec::with_capacity(req.recipients.len());
    for (i, r) in req.recipients.iter().enumerate() {
        let a = address::parse(&r.email)
            .map_err(|e| ApiError::field("invalid_address", format!("recipients[{i}].email"), e))?;
        no_crlf(&format!("recipients[{i}].name"), r.name.as_deref())?;
        recipients.push(a);
    }
    Ok(Checked {
        category,
        from: from.to_ascii(),
        recipients,
    })
}

fn no_crlf(field: &str, v: Option<&str>) -> Result<(), ApiError> {
    if v.is_some_and(|v| v.contains(['\r', '\n'])) {
        return Err(ApiError::field(
            "invalid_header",
            field,
            "contains CR or LF",
        ));
    }
    Ok(())
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

async fn accept(app: &App, req: SendRequest, checked: Checked) -> Result<SendResponse, ApiError> {
    let now = now_ms();
    let due = req
        .send_at
        .map(|t| (t.timestamp_millis().max(0) as u64).max(now))
        .unwrap_or(now);
    let batch = new_id();
    let priority = req
        .priority
        .unwrap_or(if checked.category == "transactional" {
            Priority::High
        } else {
            Priority::Normal
        });
    let track = req.track.unwrap_or_else(|| {
        app.cfg
            .tracking
            .track_categories
            .contains(&checked.category)
    });
    let (_, from_name) = req.from.parts();
    let from_domain = checked
        .from
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let template = Template {
        from: Mailbox {
            email: checked.from.clone(),
            name: from_name.map(str::to_string),
        },
        reply_to: req.reply_to.as_ref().map(|r| {
            let (e, n) = r.parts();
            Mailbox {
                email: e.to_string(),
                name: n.map(str::to_string),
            }
        }),
        subject: req.subject,
        html: req.html,
        text: req.text,
        headers: req.headers.into_iter().collect(),
        category: checked.category.clone(),
        campaign: req.campaign.clone(),
        priority,
        track,
        created_ms: now,
        recipients: req.recipients.len() as u32,
    };
    let mut messages = Vec::with_capacity(req.recipients.len());
    let mut answer = Vec::with_capacity(req.recipients.len());
    let mut unique = Vec::new();
    for (r, addr) in req.recipients.into_iter().zip(checked.recipients) {
        let id = new_id();
        let email = addr.to_ascii();
        let (state, event, reason) = match policy::decide(
            &app.spool,
            &checked.category,
            req.campaign.as_deref(),
            &email,
        )? {
            Decision::Send => {
                if let Some(c) = &req.campaign {
                    unique.push((c.clone(), email.clone(), id.clone()));
                }
                (MsgState::Queued, EventType::Queued, None)
            }
            Decision::Suppressed(s) => (
                MsgState::Suppressed,
                EventType::Suppressed,
                Some(format!(
                    "address suppressed ({}, scope {})",
                    s.reason, s.scope
                )),
            ),
            Decision::Duplicate(first) => (
                MsgState::Dropped,
                EventType::Dropped,
                Some(format!(
                    "campaign already sent to this address (message {first})"
                )),
            ),
        };
        answer.push(Accepted {
            id: id.clone(),
            email: email.clone(),
            status: state.as_str().into(),
            reason: reason.clone(),
        });
        let mut rec = MessageRecord {
            message_id_header: format!("{id}@{from_domain}"),
            id,
            batch: batch.clone(),
            domain: addr.domain,
            email,
            name: r.name,
            vars: serde_json::Value::Object(r.vars),
            metadata: r.metadata,
            category: checked.category.clone(),
            campaign: req.campaign.clone(),
            priority,
            state,
            attempts: 0,
            created_ms: now,
            due_ms: due,
            delivered_ms: None,
            last_reply: None,
            events: Vec::new(),
            compacted: false,
        };
        rec.record(Event::now(event, reason));
        messages.push(rec);
    }
    let response = SendResponse {
        batch: batch.clone(),
        messages: answer,
    };
    let idempotency = req.idempotency_key.map(|k| {
        (
            k,
            serde_json::to_value(&response).expect("response serializes"),
        )
    });
    let queued = messages
        .iter()
        .filter(|m| m.state == MsgState::Queued)
        .count() as u64;
    for m in messages.iter().filter(|m| m.state != MsgState::Queued) {
        let label = if m.state == MsgState::Suppressed {
            "suppressed"
        } else {
            "duplicate"
        };
        app.metrics.suppressed.with_label_values(&[label]).inc();
    }
    app.spool
        .accept(AcceptBatch {
            batch: batch.clone(),
            template,
            messages,
            idempotency,
            unique,
        })
        .await?;
    app.metrics
        .accepted
        .with_label_values(&[&checked.category])
        .inc_by(queued);
    app.wake_delivery();
    tracing::info!(
        batch = %batch,
        recipients = response.messages.len(),
        queued,
        category = %checked.category,
        "batch accepted"
    );
    for m in &response.messages {
        tracing::debug!(id = %m.id, batch = %batch, status = %m.status, "message accepted");
    }
    Ok(response)
}
