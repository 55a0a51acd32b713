//! What the inbound tests share: swaks as the SMTP client that delivers
//! into facteur's listener, fixtures with placeholders, a webhook receiver
//! (axum on loopback) for routed queries, and reading metrics.
//!
//! A test file uses it with `mod common; mod inbound_support;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::common::{free_addr, lo, require, wait_for, Facteur, FacteurConfig, Sink};

/// How long anything in these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);
/// The bounce domain of the tests.
pub const BOUNCE_DOMAIN: &str = "bounces.facteur.test";
/// The reply address customers write to.
pub const SUPPORT: &str = "support@brand.test";

/// True when swaks is installed (in CI a missing swaks fails the test).
pub fn have_swaks() -> bool {
    require(
        "swaks",
        Command::new("swaks").arg("--version").output().is_ok(),
    )
}

/// What swaks printed and whether it succeeded (exit code 0).
#[derive(Debug)]
pub struct Swaks {
    /// Exit code 0: every command was accepted.
    pub ok: bool,
    /// Its exit code.
    pub code: Option<i32>,
    /// The whole transcript, stdout and stderr.
    pub transcript: String,
}

impl Swaks {
    /// The server's answer to the end of DATA (the last `250` line before
    /// QUIT), or the transcript when there is none.
    pub fn data_reply(&self) -> &str {
        self.transcript
            .lines()
            .rfind(|l| l.starts_with("<-  250 2.0.0") || l.starts_with("<** "))
            .unwrap_or(&self.transcript)
    }
}

/// Runs swaks against `server`: envelope `from` (`<>` for the null
/// sender) and `to`, with `data` as the message.
pub fn swaks(server: SocketAddr, from: &str, to: &str, data: &[u8]) -> Swaks {
    swaks_with(server, from, to, data, &[])
}

/// [`swaks`] with more options (`--pipeline`, ...).
pub fn swaks_with(server: SocketAddr, from: &str, to: &str, data: &[u8], extra: &[&str]) -> Swaks {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), data).expect("write message");
    let out = Command::new("swaks")
        .args(["--server", &server.to_string()])
        .args(["--helo", "client.test"])
        .args(["--from", from, "--to", to])
        .args(["--timeout", "30"])
        .args(extra)
        .arg("--data")
        .arg(format!("@{}", file.path().display()))
        .output()
        .expect("run swaks");
    Swaks {
        ok: out.status.success(),
        code: out.status.code(),
        transcript: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A fixture of `tests/fixtures/inbound/` with `{KEY}` placeholders
/// replaced, line ends made CRLF.
pub fn fixture(name: &str, vars: &[(&str, &str)]) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inbound")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in vars {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// An HTTP endpoint on loopback that records every JSON body POSTed to it
/// (with its `X-Facteur-Event-Id`), and can refuse the first few.
pub struct WebhookReceiver {
    addr: SocketAddr,
    state: Arc<Hooked>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Hooked {
    /// Bodies accepted (2xx).
    posts: Mutex<Vec<Value>>,
    /// The event id of every request, refused ones included.
    ids: Mutex<Vec<String>>,
    /// Requests still to refuse with a 503.
    refuse: AtomicUsize,
}

impl WebhookReceiver {
    /// Starts on 127.0.0.1, any free port.
    pub async fn start() -> WebhookReceiver {
        WebhookReceiver::refusing(0).await
    }

    /// Starts, answering the first `n` requests `503 Service Unavailable`.
    pub async fn refusing(n: usize) -> WebhookReceiver {
        let state = Arc::new(Hooked {
            refuse: AtomicUsize::new(n),
            ..Hooked::default()
        });
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, state, task }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Everything accepted so far.
    pub fn posts(&self) -> Vec<Value> {
        self.state.posts.lock().unwrap().clone()
    }

    /// The `X-Facteur-Event-Id` of every request so far, refused ones too.
    pub fn event_ids(&self) -> Vec<String> {
        self.state.ids.lock().unwrap().clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(state): State<Arc<Hooked>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let id = headers
        .get("x-facteur-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    state.ids.lock().unwrap().push(id.to_string());
    let refused = state
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refused {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ok": false})));
    }
    state.posts.lock().unwrap().push(body);
    (StatusCode::OK, Json(json!({"ok": true})))
}

/// The value of a metric series (`name{k="v",...}`), 0 when absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Waits until the metric reaches at least `at_least`; returns the value.
pub async fn wait_metric(
    facteur: &Facteur,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> f64 {
    let what = format!("{name}{labels:?} >= {at_least}");
    wait_for(&what, WAIT, || async {
        let v = metric(&facteur.metrics().await, name, labels);
        if v >= at_least {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await
}

/// A facteur relaying all its mail to `sink`, with an inbound listener on a
/// free port of 127.0.0.1 and `SUPPORT` as reply address.
pub fn config(sink: &Sink) -> FacteurConfig {
    FacteurConfig::new()
        .set("delivery.relay", sink.addr().to_string())
        .set("delivery.helo_name", "facteur.test")
        .set("delivery.bounce_domain", BOUNCE_DOMAIN)
        .set("delivery.retry_schedule", vec!["1s"])
        .set("delivery.retry_jitter", 0.0)
        .set("delivery.shutdown_deadline", "5s")
        .set("inbound.listen", free_addr(lo(1)).to_string())
        .set("inbound.reply_addresses", vec![SUPPORT])
        .set("inbound.ack_from", SUPPORT)
}

/// The inbound listener's address of a running facteur.
pub fn listener(facteur: &Facteur) -> SocketAddr {
    facteur
        .config()
        .get("inbound.listen")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .expect("inbound.listen is set")
}

/// Sends one message through facteur's API and waits until the sink has
/// it; returns the message id.
pub async fn send_one(facteur: &Facteur, to: &str, category: &str) -> String {
    let ids = facteur
        .send(&json!({
            "from": "news@brand.test",
            "subject": "Spring news",
            "text": "Hello, spring is here.",
            "category": category,
            "recipients": [{"email": to}],
        }))
        .await;
    let id = ids[0].clone();
    facteur.wait_state(&id, "delivered", WAIT).await;
    id
}

/// The status POST /v1/messages gives a new message to `to`.
pub async fn status_of_new_message(facteur: &Facteur, to: &str, category: &str) -> String {
    let (status, reply) = facteur
        .post_json(
            "/v1/messages",
            &json!({
                "from": "news@brand.test",
                "subject": "More news",
                "text": "Hello again.",
                "category": category,
                "recipients": [{"email": to}],
            }),
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    reply["messages"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// POSTs a raw message to `/v1/inbound`; returns the status and JSON answer.
pub async fn post_inbound(facteur: &Facteur, raw: &[u8], content_type: &str) -> (u16, Value) {
    let r = facteur
        .client()
        .post(facteur.url("/v1/inbound"))
        .header("Content-Type", content_type)
        .body(raw.to_vec())
        .send()
        .await
        .expect("POST /v1/inbound");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
