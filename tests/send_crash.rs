//! Crash safety: `kill -9` facteur while 5,000 messages are being
//! delivered, start it again on the same spool, and every message arrives;
//! a message may arrive twice only if it was in flight at the kill: at most
//! two per open connection (the one in its SMTP transaction, and the one
//! whose outcome was still being flushed).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{lo, wait_for, DnsServer, Facteur, FacteurConfig, Sink};
use serde_json::json;

const MESSAGES: usize = 5000;
const DOMAINS: usize = 5;
const CONNECTIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_nothing() {
    let sink = Sink::start(lo(2), 0);
    let dns = DnsServer::start();
    for d in 0..DOMAINS {
        dns.add_mail_host(&format!("crash{d}.test"), lo(2));
    }
    let config = FacteurConfig::typical(dns.addr(), sink.port())
        .set(
            "delivery.default_throttle.max_connections",
            CONNECTIONS as i64,
        )
        .set("delivery.default_throttle.messages_per_connection", 200i64);
    let mut facteur = Facteur::start(config).await;

    for start in (0..MESSAGES).step_by(500) {
        let recipients: Vec<_> = (start..start + 500)
            .map(|i| json!({"email": format!("r{i}@crash{}.test", i % DOMAINS), "vars": {"i": i}}))
            .collect();
        let ids = facteur
            .send(&json!({
                "from": "news@brand.test",
                "subject": "Crash {{ i }}",
                "html": "<p>Message {{ i }}</p>",
                "category": "transactional",
                "recipients": recipients,
            }))
            .await;
        assert_eq!(ids.len(), 500);
    }

    // Let delivery get going, then pull the plug in the middle of it.
    sink.wait_messages(500, Duration::from_secs(120)).await;
    facteur.kill9();
    let before = sink.messages().len();
    assert!(
        before < MESSAGES,
        "the kill came after everything was delivered ({before})"
    );

    facteur.restart().await;
    wait_for(
        "every recipient to receive its message",
        Duration::from_secs(300),
        || async {
            let unique = count_by_recipient(&sink).len();
            if unique >= MESSAGES {
                Ok(())
            } else {
                Err(format!("{unique} of {MESSAGES} recipients served"))
            }
        },
    )
    .await;

    let counts = count_by_recipient(&sink);
    assert_eq!(counts.len(), MESSAGES, "every message arrived");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    let in_flight_bound = DOMAINS * CONNECTIONS * 2;
    println!("kill at {before} delivered; {duplicates} duplicates (bound {in_flight_bound})");
    assert!(
        duplicates <= in_flight_bound,
        "{duplicates} messages arrived twice; at most {in_flight_bound} can have been in flight"
    );
}

fn count_by_recipient(sink: &Sink) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in sink.events_of("message") {
        for r in m["rcpt"].as_array().into_iter().flatten() {
            *counts
                .entry(r.as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}
