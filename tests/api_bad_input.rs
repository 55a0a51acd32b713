//! Bad requests to `POST /v1/messages`: each gets its precise status and
//! error code, and the spool is unchanged after each.
//!
//! The router runs in-process (`api::router`) over a real spool in a
//! temporary directory; no delivery engine is needed to judge input.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use facteur::api::{self, AppState};
use facteur::config::Config;
use facteur::events::EventBus;
use facteur::metrics::Metrics;
use facteur::spool::Spool;
use facteur::tracking::TokenSigner;
use tower::ServiceExt;

struct Harness {
    _dir: tempfile::TempDir,
    app: api::App,
}

fn harness(keys: Vec<String>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.api.max_recipients = 5;
    cfg.api.max_body_bytes = 64 * 1024;
    cfg.api.keys = keys;
    let metrics = Arc::new(Metrics::new(10, 10));
    let spool = Spool::open(dir.path(), 16, metrics.clone()).unwrap();
    let app = Arc::new(AppState {
        cfg: Arc::new(cfg),
        spool,
        metrics,
        events: EventBus::new(),
        delivery: None,
        stopping: false.into(),
        idempotency: tokio::sync::Mutex::new(()),
        signer: Arc::new(TokenSigner::new(vec![(1, b"0123456789abcdef0123".to_vec())], 1).unwrap()),
        started: Instant::now(),
    });
    Harness { _dir: dir, app }
}

async fn post(
    h: &Harness,
    ct: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let router = api::with_http_metrics(api::router(h.app.clone()), h.app.clone());
    let mut req = Request::post("/v1/messages").header("content-type", ct);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = router
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn good() -> serde_json::Value {
    serde_json::json!({
        "from": {"email": "news@brand.test", "name": "Brand"},
        "subject": "Hello {{ name }}",
        "html": "<p>Hi {{ name }}</p>",
        "recipients": [{"email": "ann@alpha.test", "vars": {"name": "Ann"}}]
    })
}

fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v = good();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// A bad request: name, content type, body, expected status, error code
/// and field.
type Case = (
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
    Option<&'static str>,
);

#[tokio::test]
async fn bad_requests_get_precise_errors_and_queue_nothing() {
    let h = harness(vec![]);
    let json = "application/json";
    let too_many: Vec<_> = (0..6)
        .map(|i| serde_json::json!({"email": format!("u{i}@x.test")}))
        .collect();
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            json,
            b"{\"from\": ".to_vec(),
            400,
            "malformed_json",
            None,
        ),
        (
            "not JSON at all",
            json,
            b"hello".to_vec(),
            400,
            "malformed_json",
            None,
        ),
        (
            "wrong content type",
            "text/plain",
            with(|_| {}),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "missing subject",
            json,
            with(|v| {
                v.as_object_mut().unwrap().remove("subject");
            }),
            422,
            "missing_field",
            Some("subject"),
        ),
        (
            "missing recipients",
            json,
            with(|v| {
                v.as_object_mut().unwrap().remove("recipients");
            }),
            422,
            "missing_field",
            Some("recipients"),
        ),
        (
            "recipient without email",
            json,
            with(|v| v["recipients"] = serde_json::json!([{"name": "x"}])),
            422,
            "missing_field",
            Some("recipients[0].email"),
        ),
        (
            "wrong type",
            json,
            with(|v| v["subject"] = serde_json::json!(42)),
            422,
            "invalid_field",
            Some("subject"),
        ),
        (
            "unknown field",
            json,
            with(|v| v["bcc"] = serde_json::json!("x@y.test")),
            422,
            "invalid_field",
            None,
        ),
        (
            "no recipients",
            json,
            with(|v| v["recipients"] = serde_json::json!([])),
            422,
            "no_recipients",
            Some("recipients"),
        ),
        (
            "too many recipients",
            json,
            with(|v| v["recipients"] = serde_json::json!(too_many)),
            422,
            "too_many_recipients",
            Some("recipients"),
        ),
        (
            "bad recipient address",
            json,
            with(|v| v["recipients"][0]["email"] = "not-an-address".into()),
            422,
            "invalid_address",
            Some("recipients[0].email"),
        ),
        (
            "bad domain",
            json,
            with(|v| v["recipients"][0]["email"] = "a@exa_mple.test".into()),
            422,
            "invalid_address",
            Some("recipients[0].email"),
        ),
        (
            "bad sender",
            json,
            with(|v| v["from"] = "news@".into()),
            422,
            "invalid_address",
            Some("from"),
        ),
        (
            "CRLF in header",
            json,
            with(|v| v["headers"] = serde_json::json!({"X-Campaign": "a\r\nBcc: evil@x.test"})),
            422,
            "invalid_header",
            Some("headers.X-Campaign"),
        ),
        (
            "CRLF in recipient name",
            json,
            with(|v| v["recipients"][0]["name"] = "Ann\r\nBcc: x@y.test".into()),
            422,
            "invalid_header",
            Some("recipients[0].name"),
        ),
        (
            "reserved header",
            json,
            with(|v| v["headers"] = serde_json::json!({"From": "x@y.test"})),
            422,
            "invalid_header",
            Some("headers.From"),
        ),
        (
            "template does not compile",
            json,
            with(|v| v["html"] = "<p>{{ name </p>".into()),
            422,
            "invalid_template",
            Some("html"),
        ),
        (
            "subject template broken",
            json,
            with(|v| v["subject"] = "{% if %}".into()),
            422,
            "invalid_template",
            Some("subject"),
        ),
        (
            "no body",
            json,
            with(|v| {
                v.as_object_mut().unwrap().remove("html");
            }),
            422,
            "missing_body",
            Some("html"),
        ),
        (
            "unknown category",
            json,
            with(|v| v["category"] = "spam".into()),
            422,
            "unknown_category",
            Some("category"),
        ),
        (
            "bad priority",
            json,
            with(|v| v["priority"] = "urgent".into()),
            422,
            "invalid_field",
            Some("priority"),
        ),
        (
            "bad send_at",
            json,
            with(|v| v["send_at"] = "tomorrow".into()),
            422,
            "invalid_field",
            Some("send_at"),
        ),
        (
            "oversized body",
            json,
            with(|v| v["html"] = "x".repeat(70 * 1024).into()),
            413,
            "body_too_large",
            None,
        ),
    ];
    let before = h.app.spool.key_count();
    for (name, ct, body, status, code, field) in cases {
        let (got, err) = post(&h, ct, None, body).await;
        assert_eq!(got.as_u16(), status, "{name}: {err}");
        assert_eq!(err["error"]["code"], code, "{name}: {err}");
        if let Some(f) = field {
            assert_eq!(err["error"]["field"], f, "{name}: {err}");
        }
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {err}"
        );
        assert_eq!(h.app.spool.key_count(), before, "{name} wrote to the spool");
    }
    // And a good request does write.
    let (got, body) = post(&h, json, None, with(|_| {})).await;
    assert_eq!(got, StatusCode::ACCEPTED, "{body}");
    assert!(h.app.spool.key_count() > before);
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let h = harness(vec!["secret-key".into()]);
    let (s, err) = post(&h, "application/json", None, with(|_| {})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "unauthorized");
    let (s, _) = post(&h, "application/json", Some("Bearer wrong"), with(|_| {})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = post(
        &h,
        "application/json",
        Some("Bearer secret-key"),
        with(|_| {}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn idempotency_key_returns_the_first_answer() {
    let h = harness(vec![]);
    let body = with(|v| v["idempotency_key"] = "order-42".into());
    let (s1, a1) = post(&h, "application/json", None, body.clone()).await;
    let after_first = h.app.spool.key_count();
    let (s2, a2) = post(&h, "application/json", None, body).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(a1, a2);
    assert_eq!(h.app.spool.key_count(), after_first, "nothing new queued");
}

#[tokio::test]
async fn idn_recipients_are_accepted_in_ascii_form() {
    let h = harness(vec![]);
    let (s, body) = post(
        &h,
        "application/json",
        None,
        with(|v| v["recipients"][0]["email"] = "zoé@exämple.test".into()),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["messages"][0]["email"], "zoé@xn--exmple-cua.test");
}
