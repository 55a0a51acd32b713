//! A route webhook that is down when a customer query arrives: the query is
//! queued in the spool, survives a restart, and reaches the webhook once it
//! answers, with the same `X-Facteur-Event-Id` on every attempt.

mod common;
mod inbound_support;

use common::{lo, wait_for, Sink};
use inbound_support::{
    config, fixture, have_swaks, listener, swaks, WebhookReceiver, SUPPORT, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_for_a_webhook_that_is_down_is_retried_until_it_answers() {
    if !have_swaks() {
        return;
    }
    let sink = Sink::start(lo(1), 0);
    // Refuses the post made during the SMTP transaction and the first retry.
    let hook = WebhookReceiver::refusing(2).await;
    let cfg = config(&sink).set("inbound.default_route.webhook", hook.url());
    let mut facteur = common::Facteur::start(cfg).await;

    let raw = fixture(
        "query.eml",
        &[
            ("FROM", "bob@customer.test"),
            ("SUBJECT", "Where is my parcel?"),
            ("MSGID", "retry1@customer.test"),
            ("EXTRA", ""),
        ],
    );
    let s = swaks(listener(&facteur), "bob@customer.test", SUPPORT, &raw);
    assert!(s.ok, "{}", s.transcript);
    assert!(
        s.data_reply()
            .contains("webhook failed (status 503); queued for retry"),
        "{}",
        s.transcript
    );
    assert!(hook.posts().is_empty());

    // The retry is in the spool: a restart does not lose it.
    let status = facteur.sigterm().await;
    assert!(status.success(), "facteur exited with {status}");
    facteur.restart().await;

    let posts = wait_for("the query at the webhook", WAIT, || async {
        let p = hook.posts();
        if p.is_empty() {
            Err(format!("{} attempts so far", hook.event_ids().len()))
        } else {
            Ok(p)
        }
    })
    .await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["type"], "inbound.query");
    assert_eq!(posts[0]["route"], "default");
    assert_eq!(posts[0]["message"]["subject"], "Where is my parcel?");
    assert_eq!(posts[0]["message"]["message_id"], "retry1@customer.test");

    // Three attempts (refused, refused, accepted), one event id.
    let ids = hook.event_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids[0].is_empty());
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");

    // Nothing more comes once it is accepted.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(hook.posts().len(), 1);
}
