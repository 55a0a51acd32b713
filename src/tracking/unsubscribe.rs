//! Unsubscribing: the suppression, the `unsubscribed` event, the metric.
//!
//! Two ways in: the one-click `POST /u/{token}` of [`super::endpoints`],
//! and [`unsubscribe_by_message`] for mail to the `List-Unsubscribe`
//! mailto, `unsubscribe+ID@{delivery.bounce_domain}`, which the inbound
//! SMTP listener receives. The address is suppressed in the scope
//! `tracking.unsubscribe_scope` says: `marketing` (every category but
//! transactional) or `category:<name>` (the message's own).

use serde_json::json;

use crate::api::App;
use crate::config::UnsubscribeScope;
use crate::events::{Event, EventType, MessageEvent};
use crate::spool::{now_ms, MessageRecord, SpoolError, Suppression};

/// What an unsubscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The address is now suppressed, and the event recorded.
    Now,
    /// This message had already been unsubscribed: nothing new recorded.
    Already,
    /// No such message in this spool: nothing done.
    UnknownMessage,
}

/// Unsubscribes the recipient of `message_id`, as the `mailto:` of
/// `List-Unsubscribe` asks (`unsubscribe+ID@bounce_domain`); `via` says how
/// it came (`mailto`), for the event. The write is not flushed: a caller
/// that acknowledges the request (an SMTP `250`) should await
/// `app.spool.flush()` first.
pub fn unsubscribe_by_message(
    app: &App,
    message_id: &str,
    via: &str,
) -> Result<Unsubscribed, SpoolError> {
    match app.spool.message(message_id)? {
        Some(rec) => unsubscribe(app, &rec, via),
        None => Ok(Unsubscribed::UnknownMessage),
    }
}

/// Suppresses the recipient of `rec` in the configured scope and, the
/// first time for this message, records and publishes `unsubscribed`.
pub(super) fn unsubscribe(
    app: &App,
    rec: &MessageRecord,
    via: &str,
) -> Result<Unsubscribed, SpoolError> {
    let scope = match app.cfg.tracking.unsubscribe_scope {
        UnsubscribeScope::Marketing => "marketing".to_string(),
        UnsubscribeScope::Category => format!("category:{}", rec.category),
    };
    suppress(app, &rec.email, scope.clone(), Some(&rec.id))?;
    if !app
        .spool
        .mark_once(&format!("unsub/{}", rec.id), now_ms())?
    {
        return Ok(Unsubscribed::Already);
    }
    let event = Event::now(
        EventType::Unsubscribed,
        Some(format!("unsubscribed ({via}); suppressed for {scope}")),
    )
    .with_data(json!({ "via": via, "scope": scope }));
    let Some(rec) = app.spool.add_event(&rec.id, event.clone())? else {
        return Ok(Unsubscribed::UnknownMessage);
    };
    let label = app
        .metrics
        .campaigns
        .fold(rec.campaign.as_deref().unwrap_or(""));
    app.metrics.unsubscribes.with_label_values(&[&label]).inc();
    app.events.publish(MessageEvent::of(&rec, event));
    Ok(Unsubscribed::Now)
}

/// Puts `email` on the suppression list in `scope`, unless it is already.
pub(super) fn suppress(
    app: &App,
    email: &str,
    scope: String,
    message_id: Option<&str>,
) -> Result<(), SpoolError> {
    if app.spool.suppression(&scope, email)?.is_some() {
        return Ok(());
    }
    let s = Suppression {
        reason: "unsubscribe".into(),
        scope,
        at_ms: now_ms(),
        message_id: message_id.map(str::to_string),
    };
    app.spool.suppress(email, &s)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::AppState;
    use crate::config::Config;
    use crate::events::EventBus;
    use crate::metrics::Metrics;
    use crate::policy::{self, Decision};
    use crate::spool::{AcceptBatch, Mailbox, Priority, Spool, State, Template};
    use crate::tracking::TokenSigner;

    /// An app on a fresh spool holding one newsletter message `m1` to
    /// `ann@example.test` in campaign `spring`.
    async fn app(dir: &std::path::Path, scope: UnsubscribeScope) -> App {
        let mut cfg = Config::default();
        cfg.tracking.unsubscribe_scope = scope;
        let metrics = Arc::new(Metrics::new(10, 10));
        let spool = Spool::open(dir, 8, metrics.clone()).unwrap();
        let template = Template {
            from: Mailbox {
                email: "news@brand.test".into(),
                name: None,
            },
            reply_to: None,
            subject: "s".into(),
            html: None,
            text: Some("t".into()),
            headers: vec![],
            category: "newsletter".into(),
            campaign: Some("spring".into()),
            priority: Priority::Normal,
            track: true,
            created_ms: 1,
            recipients: 1,
        };
        let rec = MessageRecord {
            id: "m1".into(),
            batch: "b1".into(),
            email: "ann@example.test".into(),
            name: None,
            vars: serde_json::Value::Null,
            metadata: json!({"crm": 42}),
            domain: "example.test".into(),
            category: "newsletter".into(),
            campaign: Some("spring".into()),
            priority: Priority::Normal,
            state: State::Delivered,
            attempts: 1,
            created_ms: 1,
            due_ms: 1,
            delivered_ms: Some(2),
            last_reply: None,
            message_id_header: String::new(),
            events: vec![],
            compacted: false,
        };
        spool
            .accept(AcceptBatch {
                batch: "b1".into(),
                template,
                messages: vec![rec],
                idempotency: None,
                unique: vec![],
            })
            .await
            .unwrap();
        let signer = TokenSigner::new(vec![(1, b"0123456789abcdef".to_vec())], 1).unwrap();
        Arc::new(AppState {
            cfg: Arc::new(cfg),
            spool,
            metrics,
            events: EventBus::new(),
            delivery: None,
            stopping: false.into(),
            idempotency: tokio::sync::Mutex::new(()),
            signer: Arc::new(signer),
            started: std::time::Instant::now(),
        })
    }

    #[tokio::test]
    async fn mailto_unsubscribe_suppresses_in_the_configured_scope_once() {
        let dir = tempfile::tempdir().unwrap();
        for (config, scope) in [
            (UnsubscribeScope::Marketing, "marketing"),
            (UnsubscribeScope::Category, "category:newsletter"),
        ] {
            let app = app(&dir.path().join(scope), config).await;
            let mut bus = app.events.subscribe();
            let email = "ann@example.test";
            assert_eq!(
                unsubscribe_by_message(&app, "m1", "mailto").unwrap(),
                Unsubscribed::Now
            );
            let s = app.spool.suppression(scope, email).unwrap().unwrap();
            assert_eq!(
                (s.reason.as_str(), s.message_id.as_deref()),
                ("unsubscribe", Some("m1"))
            );
            assert!(matches!(
                policy::decide(&app.spool, "newsletter", None, email).unwrap(),
                Decision::Suppressed(_)
            ));
            assert_eq!(
                policy::decide(&app.spool, "transactional", None, email).unwrap(),
                Decision::Send
            );
            // Once only: no second event, no second count.
            assert_eq!(
                unsubscribe_by_message(&app, "m1", "mailto").unwrap(),
                Unsubscribed::Already
            );
            assert_eq!(
                unsubscribe_by_message(&app, "nope", "mailto").unwrap(),
                Unsubscribed::UnknownMessage
            );
            let rec = app.spool.message("m1").unwrap().unwrap();
            let events: Vec<&Event> = rec
                .events
                .iter()
                .filter(|e| e.kind == EventType::Unsubscribed)
                .collect();
            assert_eq!(events.len(), 1);
            assert_eq!(
                events[0].data,
                Some(json!({"via": "mailto", "scope": scope}))
            );
            let published = bus.try_recv().unwrap();
            assert_eq!(published.event.kind, EventType::Unsubscribed);
            assert_eq!(published.metadata, json!({"crm": 42}));
            assert!(bus.try_recv().is_err());
            let count = app
                .metrics
                .unsubscribes
                .with_label_values(&["spring"])
                .get();
            assert_eq!(count, 1);
        }
    }
}
