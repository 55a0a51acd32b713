//! Per-destination throttle: with `max_connections = 2` and a rate for a
//! domain, the sink never sees more than 2 connections at once from
//! facteur for it, and never more messages in a second than the rate
//! allows; another domain on the same run is not held back by it.

mod common;

use std::time::Duration;

use common::{lo, pick_port, DnsServer, Facteur, FacteurConfig, Sink};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn batch(domain: &str, from: usize, n: usize) -> serde_json::Value {
    let recipients: Vec<_> = (from..from + n)
        .map(|i| json!({"email": format!("user{i}@{domain}"), "vars": {"n": i}}))
        .collect();
    json!({
        "from": "news@brand.test",
        "subject": "Throttle {{ n }}",
        "text": "Hello {{ n }}",
        "category": "transactional",
        "recipients": recipients,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_rate_hold_per_destination() {
    let port = pick_port(&[lo(2), lo(3)]);
    let throttled = Sink::start(lo(2), port);
    let free = Sink::start(lo(3), port);
    let dns = DnsServer::start();
    dns.add_mail_host("throttled.test", lo(2));
    dns.add_mail_host("free.test", lo(3));
    let domain = ["delivery", "domains", "throttled.test"];
    let config = FacteurConfig::typical(dns.addr(), port)
        .set_at(&[domain[0], domain[1], domain[2], "max_connections"], 2i64)
        .set_at(
            &[domain[0], domain[1], domain[2], "messages_per_connection"],
            7i64,
        )
        .set_at(&[domain[0], domain[1], domain[2], "rate"], "20/s")
        .set("delivery.default_throttle.max_connections", 8i64);
    let facteur = Facteur::start(config).await;

    let (n_throttled, n_free) = (80, 60);
    for start in (0..n_throttled).step_by(40) {
        facteur.send(&batch("throttled.test", start, 40)).await;
    }
    facteur.send(&batch("free.test", 0, n_free)).await;

    let got = throttled.wait_messages(n_throttled, WAIT).await;
    free.wait_messages(n_free, WAIT).await;
    assert_eq!(got.len(), n_throttled, "each message once");

    let max = throttled.max_concurrent_connections();
    assert!(max <= 2, "the throttled sink saw {max} connections at once");
    assert!(
        throttled.connections() >= n_throttled / 7,
        "connections carry at most 7 messages each"
    );
    for (conn, count) in throttled.messages_per_connection() {
        assert!(count <= 7, "connection {conn} carried {count} messages");
    }

    // The rate: no window of one second holds more than 20 messages (plus
    // one for the window's edge).
    let mut times: Vec<u64> = throttled
        .events_of("message")
        .iter()
        .filter_map(|e| e["t"].as_u64())
        .collect();
    times.sort_unstable();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 1000).count();
        assert!(
            in_window <= 21,
            "{in_window} messages within one second from {t}: {times:?}"
        );
    }
}
