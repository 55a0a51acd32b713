//! Events out: a webhook receiver on loopback gets every event of a few
//! messages (delivered, deferred, bounced, opened, clicked, unsubscribed)
//! exactly once, each with a valid `X-Facteur-Signature`, although it
//! refuses requests for a while (facteur retries with backoff from its
//! durable queue) and facteur is stopped with SIGTERM and started again on
//! the same spool in the middle.

mod common;
mod tracking_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use reqwest::header;
use serde_json::Value;
use sha2::Sha256;

use common::{lo, wait_for, Facteur, Sink};
use tracking_support::{html, links, marketing, send_one, BROWSER, WAIT};

const SECRET: &str = "webhook-secret-for-the-test";

/// One request the receiver accepted.
#[derive(Debug, Clone)]
struct Delivery {
    event_id: String,
    body: Value,
    signature_ok: bool,
}

/// The webhook receiver: accepts (200) or refuses (503) on demand.
#[derive(Default)]
struct Receiver {
    accepting: AtomicBool,
    refused: AtomicUsize,
    got: Mutex<Vec<Delivery>>,
}

impl Receiver {
    fn got(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// `(message id, event type)` of every accepted delivery.
    fn kinds(&self) -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = self
            .got()
            .iter()
            .map(|d| {
                (
                    d.body["message_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    d.body["type"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        k.sort();
        k
    }
}

/// Checks `t=UNIX,v1=HEX`: HMAC-SHA256 of `"{t}.{body}"` under the secret,
/// with a timestamp within five minutes.
fn signature_ok(header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(t) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !r.accepting.load(Ordering::SeqCst) {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let delivery = Delivery {
        event_id: text("x-facteur-event-id"),
        signature_ok: signature_ok(&text("x-facteur-signature"), &body),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    r.got.lock().unwrap().push(delivery);
    StatusCode::OK
}

/// Starts the receiver on 127.0.0.1; returns its URL.
async fn start_receiver(r: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind((lo(1), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(hook)).with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

/// Waits until the receiver holds exactly the `(message, type)` pairs of
/// `expected` (sorted), or panics showing what it has.
async fn wait_events(r: &Receiver, expected: &[(String, String)]) {
    wait_for("the webhook events", WAIT, || async {
        let kinds = r.kinds();
        if kinds == expected {
            Ok(())
        } else {
            Err(format!("{kinds:?}"))
        }
    })
    .await
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_webhook_exactly_once_across_a_restart() {
    let receiver = Arc::new(Receiver::default());
    receiver.accepting.store(true, Ordering::SeqCst);
    let url = start_receiver(receiver.clone()).await;
    let sink = Sink::start(lo(1), 0);
    let mut endpoint = toml::Table::new();
    endpoint.insert("url".into(), url.into());
    endpoint.insert("secret".into(), SECRET.into());
    let config = tracking_support::config(&sink, "0s")
        .set(
            "webhooks.endpoints",
            toml::Value::Array(vec![endpoint.into()]),
        )
        .set("webhooks.timeout", "5s");
    let mut facteur = Facteur::start(config).await;

    // Delivered, deferred then delivered, bounced.
    let send = |email: &str| marketing(email, "hooks", &html("https://shop.test"));
    let mut ids = BTreeMap::new();
    for email in [
        "ann@example.test",
        "tempfail-1@example.test",
        "permfail@example.test",
    ] {
        let answer = send_one(&facteur, &send(email)).await;
        ids.insert(email, answer["id"].as_str().unwrap().to_string());
    }
    let (ann, temp, perm) = (
        ids["ann@example.test"].as_str(),
        ids["tempfail-1@example.test"].as_str(),
        ids["permfail@example.test"].as_str(),
    );
    facteur.wait_state(ann, "delivered", WAIT).await;
    facteur.wait_state(perm, "bounced", WAIT).await;
    facteur.wait_state(temp, "delivered", WAIT).await;
    let mut expected = vec![
        (ann, "delivered"),
        (temp, "deferred"),
        (temp, "delivered"),
        (perm, "bounced"),
    ];
    wait_events(&receiver, &pairs(&expected)).await;

    // The receiver goes down; an open and a click wait in facteur's queue,
    // and at least one delivery of them is refused (retry with backoff).
    receiver.accepting.store(false, Ordering::SeqCst);
    let received = sink.wait_messages(2, WAIT).await;
    let message = received
        .iter()
        .find(|m| m.facteur_id().as_deref() == Some(ann))
        .expect("ann's message");
    let l = links(message);
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |u: String| http.get(u).header(header::USER_AGENT, BROWSER).send();
    assert_eq!(get(l.pixel.clone()).await.unwrap().status(), 200);
    assert_eq!(get(l.offer.clone()).await.unwrap().status(), 302);
    expected.extend([(ann, "opened"), (ann, "clicked")]);
    wait_for("a refused webhook request", WAIT, || async {
        match receiver.refused.load(Ordering::SeqCst) {
            0 => Err("none yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;

    // Restart in the middle: SIGTERM, then the same spool again.
    let status = facteur.sigterm().await;
    assert!(status.success(), "facteur exited with {status}");
    receiver.accepting.store(true, Ordering::SeqCst);
    facteur.restart().await;

    // Events after the restart join those queued before it.
    assert_eq!(get(l.pixel.clone()).await.unwrap().status(), 200);
    let r = http
        .post(&l.unsubscribe)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expected.extend([(ann, "opened"), (ann, "unsubscribed")]);
    let expected = pairs(&expected);
    wait_events(&receiver, &expected).await;

    // Give a duplicate the time to show up, then check exactly once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.kinds(), expected, "events after the wait");
    let got = receiver.got();
    let mut event_ids: Vec<&str> = got.iter().map(|d| d.event_id.as_str()).collect();
    event_ids.sort();
    event_ids.dedup();
    assert_eq!(
        event_ids.len(),
        got.len(),
        "an event id came twice: {got:#?}"
    );
    for d in &got {
        assert!(d.signature_ok, "bad signature on {d:?}");
        assert_eq!(d.body["event_id"], d.event_id.as_str(), "{d:?}");
        assert_eq!(d.body["campaign"], "hooks", "{d:?}");
    }
    let clicked = got.iter().find(|d| d.body["type"] == "clicked").unwrap();
    assert_eq!(
        clicked.body["data"]["url"],
        "https://shop.test/offer?x=1&y=2"
    );
}
