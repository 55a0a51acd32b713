//! What the spool stores: messages, their shared templates, suppressions.
//!
//! These are domain types; how they are laid out in sled is the business of
//! the rest of `spool` alone.

use serde::{Deserialize, Serialize};

use crate::events::{Event, EventType, SmtpReply};

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its first attempt.
    Queued,
    /// An attempt is under way.
    Sending,
    /// A temporary failure; waiting for the next attempt.
    Deferred,
    /// Delivered (final).
    Delivered,
    /// Permanently failed (final).
    Bounced,
    /// Given up after `max_age` (final).
    Expired,
    /// Not sent: suppressed address (final).
    Suppressed,
    /// Not sent: policy said never (final).
    Dropped,
}

impl State {
    /// True once nothing more will be attempted.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            State::Delivered | State::Bounced | State::Expired | State::Suppressed | State::Dropped
        )
    }

    /// The name used in JSON and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sending => "sending",
            State::Deferred => "deferred",
            State::Delivered => "delivered",
            State::Bounced => "bounced",
            State::Expired => "expired",
            State::Suppressed => "suppressed",
            State::Dropped => "dropped",
        }
    }
}

/// Priority lanes: `high` (and transactional mail) never waits behind a
/// marketing batch.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Order confirmations, password resets.
    High,
    /// The default.
    #[default]
    Normal,
    /// Bulk that may wait.
    Low,
}

impl Priority {
    /// Lane index, 0 first.
    pub fn lane(&self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// A sender address with an optional display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The address.
    pub email: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

/// What every recipient of one API request shares: stored once per batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// Sender.
    pub from: Mailbox,
    /// Reply-To.
    #[serde(default)]
    pub reply_to: Option<Mailbox>,
    /// Subject template.
    pub subject: String,
    /// HTML template.
    #[serde(default)]
    pub html: Option<String>,
    /// Text template.
    #[serde(default)]
    pub text: Option<String>,
    /// Extra headers, already checked.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Category (`transactional`, `marketing`, or a configured one).
    pub category: String,
    /// Campaign name.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Priority lane.
    pub priority: Priority,
    /// Open and click tracking.
    pub track: bool,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Messages of the batch not yet compacted.
    #[serde(default)]
    pub recipients: u32,
}

impl Template {
    /// Transactional mail is never throttled behind bulk, carries no
    /// unsubscribe headers and ignores marketing suppressions.
    pub fn is_transactional(&self) -> bool {
        self.category == "transactional"
    }
}

/// One message: one recipient of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Message id (also the VERP token).
    pub id: String,
    /// The batch whose template this message renders.
    pub batch: String,
    /// Recipient address.
    pub email: String,
    /// Recipient display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Template variables (dropped at compaction).
    #[serde(default)]
    pub vars: serde_json::Value,
    /// Caller's metadata, returned in events.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// Recipient domain (ASCII), the destination.
    pub domain: String,
    /// Category, copied from the template for events after compaction.
    pub category: String,
    /// Campaign, copied from the template.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Priority lane.
    pub priority: Priority,
    /// Current state.
    pub state: State,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// When the next attempt is due, unix ms.
    pub due_ms: u64,
    /// When it was delivered, unix ms.
    #[serde(default)]
    pub delivered_ms: Option<u64>,
    /// Last SMTP reply.
    #[serde(default)]
    pub last_reply: Option<SmtpReply>,
    /// The `Message-ID` header given to the message.
    #[serde(default)]
    pub message_id_header: String,
    /// Timeline.
    #[serde(default)]
    pub events: Vec<Event>,
    /// True once compacted: vars dropped, template maybe gone.
    #[serde(default)]
    pub compacted: bool,
}

impl MessageRecord {
    /// Appends an event and moves to the state it implies.
    pub fn record(&mut self, event: Event) {
        match event.kind {
            EventType::Sending => self.state = State::Sending,
            EventType::Delivered => self.state = State::Delivered,
            EventType::Deferred => self.state = State::Deferred,
            // A late DSN after delivery turns the message into a bounce.
            EventType::Bounced => self.state = State::Bounced,
            EventType::Expired => self.state = State::Expired,
            EventType::Suppressed => self.state = State::Suppressed,
            EventType::Dropped => self.state = State::Dropped,
            EventType::Queued => self.state = State::Queued,
            _ => {}
        }
        if let Some(r) = &event.reply {
            self.last_reply = Some(r.clone());
        }
        // Bound the timeline: a message opened thousands of times keeps its
        // first events and the latest ones.
        if self.events.len() >= 200 {
            self.events.remove(100);
        }
        self.events.push(event);
    }
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Suppression {
    /// `bounce`, `complaint`, `unsubscribe`, `manual`.
    pub reason: String,
    /// Scope: `all`, `marketing`, or `category:<name>`.
    pub scope: String,
    /// When, unix ms.
    pub at_ms: u64,
    /// Message that caused it.
    #[serde(default)]
    pub message_id: Option<String>,
}
