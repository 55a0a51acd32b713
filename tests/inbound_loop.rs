//! Two facteurs that acknowledge each other's queries must not loop.
//!
//! A and B each have an inbound listener, a reply address and a default
//! route that acknowledges every query; each relays all its outbound mail to
//! the other's listener. A sends a query from its reply address to B's, and
//! B one to A's. Each acknowledges the query it got, and the
//! acknowledgement lands at the other side as a new message from a
//! stranger's address. The acknowledgement period is made tiny, so that
//! only RFC 3834 stands in the way: without `Auto-Submitted: auto-replied`
//! on acknowledgements (and the rule never to answer such mail), each
//! acknowledgement would be acknowledged, forever.

mod common;
mod inbound_support;

use std::time::Duration;

use common::{free_addr, lo, Facteur, FacteurConfig};
use inbound_support::{metric, wait_metric};
use serde_json::json;

fn instance(name: &str, listen: &str, peer_listen: &str) -> FacteurConfig {
    let reply = format!("support@{name}.test");
    FacteurConfig::new()
        .set("delivery.relay", peer_listen)
        .set("delivery.helo_name", format!("{name}.test"))
        .set("delivery.bounce_domain", format!("bounces.{name}.test"))
        .set("delivery.retry_schedule", vec!["1s"])
        .set("delivery.retry_jitter", 0.0)
        .set("delivery.shutdown_deadline", "5s")
        .set("inbound.listen", listen)
        .set("inbound.reply_addresses", vec![reply.clone()])
        .set("inbound.ack_from", reply)
        .set("inbound.ack_period", "1ms")
        .set("inbound.default_route.name", "default")
        .set(
            "inbound.default_route.ack_subject",
            "We received your message about {{ subject }}",
        )
}

async fn ask(from: &Facteur, from_name: &str, to_name: &str) -> String {
    let ids = from
        .send(&json!({
            "from": format!("support@{from_name}.test"),
            "subject": format!("Question from {from_name}"),
            "text": "Could you tell me more?",
            "category": "transactional",
            "recipients": [{"email": format!("support@{to_name}.test")}],
        }))
        .await;
    ids[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_exchange_one_acknowledgement_each() {
    let (listen_a, listen_b) = (free_addr(lo(1)).to_string(), free_addr(lo(1)).to_string());
    let a = Facteur::start(instance("a", &listen_a, &listen_b)).await;
    let b = Facteur::start(instance("b", &listen_b, &listen_a)).await;

    let query_a = ask(&a, "a", "b").await;
    let query_b = ask(&b, "b", "a").await;

    let sent = [("result", "sent")];
    for f in [&a, &b] {
        wait_metric(f, "facteur_acknowledgements_total", &sent, 1.0).await;
        // The query, then the other side's acknowledgement.
        wait_metric(f, "facteur_inbound_messages_total", &[], 2.0).await;
    }
    // Far more than a round trip more: a loop would show by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, f) in [("a", &a), ("b", &b)] {
        let text = f.metrics().await;
        assert_eq!(
            metric(&text, "facteur_acknowledgements_total", &sent),
            1.0,
            "{name} acknowledged more than once: the two instances loop"
        );
        let human = [("kind", "human")];
        assert_eq!(
            metric(&text, "facteur_inbound_messages_total", &human),
            1.0,
            "{name}"
        );
        let auto = [("kind", "autoreply")];
        assert_eq!(
            metric(&text, "facteur_inbound_messages_total", &auto),
            1.0,
            "{name}"
        );
        // The query and the acknowledgement: two messages queued.
        assert_eq!(
            metric(&text, "facteur_messages_accepted_total", &[]),
            2.0,
            "{name}"
        );
    }
    // The acknowledgement found its query by In-Reply-To.
    for (f, id) in [(&a, &query_a), (&b, &query_b)] {
        let message = f.message(id).await;
        let events: Vec<&str> = message["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        assert!(events.contains(&"auto_replied"), "{message:#}");
    }
}
