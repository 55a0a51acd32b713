use super::*;
use crate::events::EventType;

fn record(id: &str, due_ms: u64, priority: Priority) -> MessageRecord {
    MessageRecord {
        id: id.into(),
        batch: "b1".into(),
        email: format!("{id}@example.test"),
        name: None,
        vars: serde_json::json!({"n": 1}),
        metadata: serde_json::Value::Null,
        domain: "example.test".into(),
        category: "marketing".into(),
        campaign: None,
        priority,
        state: State::Queued,
        attempts: 0,
        created_ms: due_ms,
        due_ms,
        delivered_ms: None,
        last_reply: None,
        message_id_header: String::new(),
        events: Vec::new(),
        compacted: false,
    }
}

fn template(n: u32) -> Template {
    Template {
        from: Mailbox {
            email: "a@b.test".into(),
            name: None,
        },
        reply_to: None,
        subject: "s".into(),
        html: None,
        text: Some("t".into()),
        headers: vec![],
        category: "marketing".into(),
        campaign: None,
        priority: Priority::Normal,
        track: false,
        created_ms: 0,
        recipients: n,
    }
}

/// Opens the spool; a spool dropped just before may still be held by its
/// flusher task for a moment (sled locks the directory), so retry briefly.
async fn open(dir: &std::path::Path) -> Spool {
    let mut last = None;
    for _ in 0..200 {
        match Spool::open(dir, 16, Arc::new(Metrics::new(10, 10))) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("cannot open the spool: {last:?}");
}

#[tokio::test]
async fn accepted_batch_survives_reopen_and_is_due() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).await;
        s.accept(AcceptBatch {
            batch: "b1".into(),
            template: template(3),
            messages: vec![
                record("m1", 100, Priority::Normal),
                record("m2", 50, Priority::Normal),
                record("m3", 10, Priority::High),
            ],
            idempotency: Some(("key".into(), serde_json::json!({"ok": true}))),
            unique: vec![],
        })
        .await
        .unwrap();
    }
    let s = open(dir.path()).await;
    assert_eq!(s.pending_count(), 3);
    let normal = s.due(1, None, 1000, 10).unwrap();
    assert_eq!(
        normal.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["m2", "m1"]
    );
    let high = s.due(0, None, 1000, 10).unwrap();
    assert_eq!(high[0].id, "m3");
    // Resume after a key; stop at a due time.
    assert_eq!(s.due(1, Some(&normal[0].key), 1000, 10).unwrap().len(), 1);
    assert_eq!(s.due(1, None, 60, 10).unwrap().len(), 1);
    assert_eq!(
        s.idempotent_answer("key").unwrap(),
        Some(serde_json::json!({"ok": true}))
    );
    assert!(s.template("b1").unwrap().is_some());
}

/// Accepts batch `b1` of one message, `m1`, due at 100.
async fn accept_one(s: &Spool) {
    s.accept(AcceptBatch {
        batch: "b1".into(),
        template: template(1),
        messages: vec![record("m1", 100, Priority::Normal)],
        idempotency: None,
        unique: vec![],
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn reschedule_finish_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    accept_one(&s).await;
    let rec = s
        .update_message("m1", |r| {
            r.due_ms = 500;
            r.record(Event::now(EventType::Deferred, Some("4xx".to_string())));
        })
        .unwrap()
        .unwrap();
    s.reschedule(&rec, 100).unwrap();
    let due = s.due(1, None, 10_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].due_ms, 500);
    let rec = s
        .add_event("m1", Event::now(EventType::Delivered, None))
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, State::Delivered);
    s.finish(&rec, 500).unwrap();
    assert_eq!(s.pending_count(), 0);
    assert_eq!(s.compact(u64::MAX, 100).unwrap(), 1);
    let rec = s.message("m1").unwrap().unwrap();
    assert!(rec.compacted);
    assert!(rec.vars.is_null());
    assert_eq!(rec.events.len(), 2);
    assert!(
        s.template("b1").unwrap().is_none(),
        "template released with its last message"
    );
}

#[tokio::test]
async fn suppressions_and_markers() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    let sup = Suppression {
        reason: "bounce".into(),
        scope: "all".into(),
        at_ms: 1,
        message_id: None,
    };
    s.suppress("A@Example.test", &sup).unwrap();
    assert_eq!(s.suppression("all", "a@example.test").unwrap(), Some(sup));
    assert!(s
        .suppression("marketing", "a@example.test")
        .unwrap()
        .is_none());
    assert!(s.mark_once("open/m1", 5).unwrap());
    assert!(!s.mark_once("open/m1", 6).unwrap());
    assert_eq!(s.marker("open/m1").unwrap(), Some(5));
}

#[tokio::test]
async fn latest_message_for_a_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    let mut old = record("m1", 100, Priority::Normal);
    old.email = "Ann@Example.test".into();
    let mut new = record("m2", 200, Priority::Normal);
    new.email = "ann@example.test".into();
    let mut other = record("m3", 300, Priority::Normal);
    other.email = "ann@example.test.other".into();
    let mut never = record("m4", 400, Priority::Normal);
    never.email = "ann@example.test".into();
    never.state = State::Suppressed;
    s.accept(AcceptBatch {
        batch: "b1".into(),
        template: template(4),
        messages: vec![old, new, other, never],
        idempotency: None,
        unique: vec![],
    })
    .await
    .unwrap();
    assert_eq!(
        s.latest_message_for("ANN@example.test", 0)
            .unwrap()
            .as_deref(),
        Some("m2"),
        "the latest queued one, any case; suppressed ones are not indexed"
    );
    assert_eq!(s.latest_message_for("ann@example.test", 201).unwrap(), None);
    assert_eq!(s.latest_message_for("bob@example.test", 0).unwrap(), None);
}

#[tokio::test]
async fn an_update_from_a_stale_copy_keeps_the_concurrent_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).await;
    accept_one(&s).await;
    let (rec, version) = s.message_with_version("m1").unwrap().unwrap();
    // Unchanged since it was read: stored from the copy.
    let rec = s
        .update_message_at(&rec, &version, |r| r.attempts = 1)
        .unwrap()
        .unwrap();
    assert_eq!(s.message("m1").unwrap().unwrap().attempts, 1);
    // `version` is stale now: another writer's event must survive.
    s.add_event("m1", Event::now(EventType::Opened, None))
        .unwrap();
    let updated = s
        .update_message_at(&rec, &version, |r| r.attempts += 1)
        .unwrap()
        .unwrap();
    let stored = s.message("m1").unwrap().unwrap();
    assert_eq!(stored.attempts, 2);
    assert!(stored.events.iter().any(|e| e.kind == EventType::Opened));
    assert_eq!(updated.events.len(), stored.events.len());
}
