//! One event type for everything that happens to a message.
//!
//! Every change of a message's state is an [`Event`] with a time, a reason
//! and, where there was one, the SMTP reply. Events land on the message's
//! timeline in the spool and are published on an [`EventBus`] that webhooks
//! and metrics listen to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Accepted and written to the spool.
    Queued,
    /// A delivery attempt started.
    Sending,
    /// The remote answered 2xx after DATA.
    Delivered,
    /// A temporary failure; another attempt is scheduled.
    Deferred,
    /// A permanent failure, at delivery or by a later DSN.
    Bounced,
    /// Given up after `max_age`.
    Expired,
    /// Not sent: the address is on the suppression list.
    Suppressed,
    /// Not sent: policy said never (duplicate, pressure).
    Dropped,
    /// The open pixel was fetched.
    Opened,
    /// A tracked link was followed.
    Clicked,
    /// The recipient unsubscribed.
    Unsubscribed,
    /// The recipient complained (ARF report).
    Complained,
    /// An automatic reply (out of office) came back.
    AutoReplied,
    /// A delay notice came back: a later server still tries to deliver.
    /// The state does not change.
    Delayed,
}

impl EventType {
    /// The name used in JSON and webhooks.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Queued => "queued",
            EventType::Sending => "sending",
            EventType::Delivered => "delivered",
            EventType::Deferred => "deferred",
            EventType::Bounced => "bounced",
            EventType::Expired => "expired",
            EventType::Suppressed => "suppressed",
            EventType::Dropped => "dropped",
            EventType::Opened => "opened",
            EventType::Clicked => "clicked",
            EventType::Unsubscribed => "unsubscribed",
            EventType::Complained => "complained",
            EventType::AutoReplied => "auto_replied",
            EventType::Delayed => "delayed",
        }
    }
}

/// An SMTP reply as kept on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SmtpReply {
    /// Basic reply code (`250`, `451`, `550`); 0 for a network error.
    pub code: u16,
    /// Enhanced status code (`5.1.1`), when the remote sent one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub enhanced: Option<String>,
    /// Text of the reply, or the description of the network error.
    pub text: String,
}

/// Something that happened to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, in words.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The SMTP reply behind it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reply: Option<SmtpReply>,
    /// Details: the URL of a click, the user agent, `machine`, the bounce report.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
}

impl Event {
    /// An event of `kind`, now, with a reason.
    pub fn now(kind: EventType, reason: impl Into<Option<String>>) -> Event {
        Event {
            kind,
            at: Utc::now(),
            reason: reason.into(),
            reply: None,
            data: None,
        }
    }

    /// The same event with an SMTP reply.
    pub fn with_reply(mut self, reply: SmtpReply) -> Event {
        self.reply = Some(reply);
        self
    }

    /// The same event with details.
    pub fn with_data(mut self, data: serde_json::Value) -> Event {
        self.data = Some(data);
        self
    }
}

/// An event together with the message it belongs to, as published.
#[derive(Debug, Clone, Serialize)]
pub struct MessageEvent {
    /// Message id.
    pub message_id: String,
    /// Recipient address.
    pub email: String,
    /// Campaign of the message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Category of the message.
    pub category: String,
    /// Caller's metadata of the recipient.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

impl MessageEvent {
    /// The event of a stored message, with the message's identity.
    pub fn of(rec: &crate::spool::MessageRecord, event: Event) -> MessageEvent {
        MessageEvent {
            message_id: rec.id.clone(),
            email: rec.email.clone(),
            campaign: rec.campaign.clone(),
            category: rec.category.clone(),
            metadata: rec.metadata.clone(),
            event,
        }
    }
}

/// Where events must not be lost: the webhook queue in the spool.
pub trait DurableSink: Send + Sync {
    /// Appends an event; called synchronously by [`EventBus::publish`].
    fn append(&self, ev: &MessageEvent);
}

/// Publishes events to whoever listens.
///
/// Two paths: a [`DurableSink`] written synchronously (webhooks: nothing
/// lost), and a broadcast channel where a slow listener loses events rather
/// than slowing delivery (live listeners, tests).
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<MessageEvent>,
    sink: Option<std::sync::Arc<dyn DurableSink>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with room for a few thousand events per listener.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        EventBus { tx, sink: None }
    }

    /// The same bus, also writing every event to `sink`.
    pub fn with_sink(mut self, sink: std::sync::Arc<dyn DurableSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, ev: MessageEvent) {
        // One log line per change of a message, carrying its id: the log
        // and the timeline tell the same story. Opens and clicks change no
        // state and come by the thousand a second: debug only.
        if matches!(ev.event.kind, EventType::Opened | EventType::Clicked) {
            tracing::debug!(
                id = %ev.message_id,
                event = ev.event.kind.as_str(),
                "message {}",
                ev.event.kind.as_str()
            );
        } else {
            tracing::info!(
                id = %ev.message_id,
                event = ev.event.kind.as_str(),
                reason = ev.event.reason.as_deref().unwrap_or(""),
                reply_code = ev.event.reply.as_ref().map_or(0, |r| r.code),
                reply = ev.event.reply.as_ref().map_or("", |r| r.text.as_str()),
                "message {}",
                ev.event.kind.as_str()
            );
        }
        if let Some(s) = &self.sink {
            s.append(&ev);
        }
        let _ = self.tx.send(ev);
    }

    /// A new listener.
    pub fn subscribe(&self) -> broadcast::Receiver<MessageEvent> {
        self.tx.subscribe()
    }
}
