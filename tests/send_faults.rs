//! Delivery against a difficult remote: facteur-sink's magic recipients
//! answer as real MTAs do when they defer, refuse, throttle, hang up or
//! think slowly, and facteur must retry, bounce or wait accordingly, with
//! every step written in the message's timeline.
//!
//! Each test has its own DNS server, sink and facteur, so one fault never
//! leaks into another test's connections or throttles.

mod common;

use std::time::Duration;

use common::{lo, DnsServer, Facteur, FacteurConfig, Sink};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// A facteur whose only destination, `faults.test`, is a facteur-sink.
struct Bench {
    sink: Sink,
    facteur: Facteur,
    _dns: DnsServer,
}

impl Bench {
    async fn start(adjust: impl FnOnce(FacteurConfig) -> FacteurConfig) -> Bench {
        let sink = Sink::start(lo(2), 0);
        let dns = DnsServer::start();
        dns.add_mail_host("faults.test", lo(2));
        let facteur = Facteur::start(adjust(FacteurConfig::typical(dns.addr(), sink.port()))).await;
        Bench {
            sink,
            facteur,
            _dns: dns,
        }
    }

    /// Sends one transactional message (no marketing policy applies) to
    /// `email`; returns its id.
    async fn send(&self, email: &str) -> String {
        let body = json!({
            "from": {"email": "orders@brand.test", "name": "Brand"},
            "subject": "Fault test",
            "text": "Hello",
            "html": "<p>Hello</p>",
            "category": "transactional",
            "recipients": [{"email": email}],
        });
        self.facteur.send(&body).await.remove(0)
    }
}

/// The events of the message of type `kind`.
fn events<'a>(message: &'a Value, kind: &str) -> Vec<&'a Value> {
    let all = message["events"].as_array().into_iter().flatten();
    all.filter(|e| e["type"] == kind).collect()
}

/// The index of the last event of type `kind`.
fn last_index(message: &Value, kind: &str) -> Option<usize> {
    message["events"]
        .as_array()?
        .iter()
        .rposition(|e| e["type"] == kind)
}

/// Deferred events all come before the final delivered one.
fn assert_deferred_then_delivered(message: &Value) {
    let delivered = last_index(message, "delivered").expect("a delivered event");
    let deferred = last_index(message, "deferred").expect("a deferred event");
    assert!(
        deferred < delivered,
        "deferred before delivered: {message:#}"
    );
}

/// The SMTP reply code an event carries.
fn reply_code(event: &Value) -> Option<u64> {
    event["reply"]["code"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_is_retried_until_accepted() {
    let bench = Bench::start(|c| c).await;
    let email = "tempfail-2@faults.test";
    let id = bench.send(email).await;
    let message = bench.facteur.wait_state(&id, "delivered", WAIT).await;

    let deferred = events(&message, "deferred");
    assert_eq!(deferred.len(), 2, "two 451s, two deferrals: {message:#}");
    for event in &deferred {
        assert_eq!(
            reply_code(event),
            Some(451),
            "deferral carries the reply: {event}"
        );
    }
    assert_deferred_then_delivered(&message);
    assert_eq!(message["attempts"], 3, "{message:#}");
    assert_eq!(message["last_reply"]["code"], 250);

    assert_eq!(
        bench.sink.replies_to(email).len(),
        2,
        "the sink refused twice"
    );
    let received = bench.sink.wait_messages(1, WAIT).await;
    assert_eq!(received.len(), 1, "delivered once");
    assert_eq!(received[0].rcpt, [email]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permfail_bounces_at_once_with_the_remote_reply() {
    let bench = Bench::start(|c| c).await;
    let id = bench.send("permfail@faults.test").await;
    let message = bench.facteur.wait_state(&id, "bounced", WAIT).await;

    assert_eq!(message["last_reply"]["code"], 550, "{message:#}");
    assert_eq!(message["last_reply"]["enhanced"], "5.1.1", "{message:#}");
    assert_eq!(
        message["attempts"], 1,
        "a permanent failure is not retried: {message:#}"
    );
    assert!(events(&message, "deferred").is_empty(), "{message:#}");
    let bounced = events(&message, "bounced");
    assert_eq!(bounced.len(), 1, "{message:#}");
    assert_eq!(reply_code(bounced[0]), Some(550), "{message:#}");
    assert!(bench.sink.messages().is_empty(), "nothing was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_defers_then_delivers_and_says_why() {
    let bench = Bench::start(|c| c).await;
    let email = "slowdown@faults.test";
    let id = bench.send(email).await;
    let message = bench.facteur.wait_state(&id, "delivered", WAIT).await;

    assert_deferred_then_delivered(&message);
    let deferred = events(&message, "deferred");
    let first = deferred.first().expect("a deferral");
    let why = first.to_string().to_ascii_lowercase();
    assert!(
        reply_code(first) == Some(421) || why.contains("slow down"),
        "the timeline shows the 421 slow-down: {message:#}"
    );
    let replies = bench.sink.replies_to(email);
    assert_eq!(replies.len(), 1, "one 421");
    assert_eq!(replies[0]["code"], 421);
    assert_eq!(bench.sink.wait_messages(1, WAIT).await.len(), 1);

    // The throttle gauge must exist; its value depends on the moment.
    let metrics = bench.facteur.metrics().await;
    assert!(
        metrics.contains("facteur_throttled_destinations"),
        "throttle gauge exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_during_data_defers_then_delivers() {
    let bench = Bench::start(|c| c).await;
    let email = "hangup@faults.test";
    let id = bench.send(email).await;
    let message = bench.facteur.wait_state(&id, "delivered", WAIT).await;

    assert_deferred_then_delivered(&message);
    assert_eq!(
        events(&message, "deferred").len(),
        1,
        "one hang-up, one deferral: {message:#}"
    );
    assert_eq!(
        bench.sink.events_of("hangup").len(),
        1,
        "the sink hung up once"
    );
    let received = bench.sink.wait_messages(1, WAIT).await;
    assert_eq!(received.len(), 1, "delivered once, after the hang-up");
    assert_eq!(received[0].rcpt, [email]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_with_the_next_envelope_out_loses_nothing() {
    // One connection carries the batch: while a body goes out, the next
    // message's envelope follows it. When the remote hangs up during
    // `hangup@`'s data, the message behind it (prepared, its envelope
    // sent) goes back to the queue and is delivered later, once.
    let bench = Bench::start(|c| c.set("delivery.default_throttle.max_connections", 1)).await;
    let emails = [
        "a@faults.test",
        "hangup@faults.test",
        "b@faults.test",
        "c@faults.test",
        "d@faults.test",
    ];
    let body = json!({
        "from": {"email": "orders@brand.test"},
        "subject": "Fault test",
        "text": "Hello",
        "category": "transactional",
        "recipients": emails.iter().map(|e| json!({"email": e})).collect::<Vec<_>>(),
    });
    let ids = bench.facteur.send(&body).await;
    for id in &ids {
        bench.facteur.wait_state(id, "delivered", WAIT).await;
    }
    assert_eq!(bench.sink.events_of("hangup").len(), 1);
    let received = bench.sink.wait_messages(emails.len(), WAIT).await;
    let mut rcpts: Vec<String> = received.iter().flat_map(|m| m.rcpt.clone()).collect();
    rcpts.sort();
    let mut want: Vec<String> = emails.iter().map(|e| e.to_string()).collect();
    want.sort();
    assert_eq!(rcpts, want, "each message delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_end_of_data_is_waited_for() {
    // The remote takes 3 s to answer the final dot: well inside the timeout.
    let bench = Bench::start(|c| c.set("delivery.command_timeout", "30s")).await;
    let id = bench.send("slow-3@faults.test").await;
    let message = bench.facteur.wait_state(&id, "delivered", WAIT).await;

    assert!(
        events(&message, "deferred").is_empty(),
        "no retry needed: {message:#}"
    );
    assert_eq!(message["attempts"], 1, "{message:#}");
    let slow = bench.sink.events_of("slow");
    assert_eq!(slow.len(), 1, "the sink took its time once");
    assert_eq!(slow[0]["secs"], 3);
    assert_eq!(bench.sink.wait_messages(1, WAIT).await.len(), 1);
}
