//! The REST API (axum on hyper): JSON in and out, bearer keys, limits,
//! precise 4xx errors.
//!
//! # Layout
//!
//! - [`messages`]: `POST /v1/messages`, `GET /v1/messages/{id}`.
//! - [`address`]: address syntax.
//! - [`error`]: [`error::ApiError`], the JSON error body.
//! - [`openapi`]: [`ApiDoc`], the OpenAPI document of every route.
//! - here: [`router`], authentication, health, metrics.

pub mod address;
pub mod error;
pub mod messages;
pub mod openapi;

pub use openapi::ApiDoc;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::delivery::Shared as DeliveryShared;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::spool::Spool;
use error::ApiError;

/// What every handler shares.
pub struct AppState {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// The spool.
    pub spool: Spool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Events.
    pub events: EventBus,
    /// The delivery engine, to wake it when messages arrive (absent in
    /// tests of the API alone).
    pub delivery: Option<Arc<DeliveryShared>>,
    /// Set at shutdown: `/readyz` then answers 503.
    pub stopping: AtomicBool,
    /// Serialises requests that carry an idempotency key, so that two at
    /// once cannot both queue.
    pub idempotency: tokio::sync::Mutex<()>,
    /// Signs and verifies tracking tokens.
    pub signer: Arc<crate::tracking::TokenSigner>,
    /// When the service started.
    pub started: Instant,
}

/// Shared handle to [`AppState`].
pub type App = Arc<AppState>;

impl AppState {
    /// Wakes the scheduler after new messages were queued.
    pub fn wake_delivery(&self) {
        if let Some(d) = &self.delivery {
            d.wake.notify_one();
        }
    }
}

/// The API's routes (without tracking and inbound, which their modules add).
pub fn router(app: App) -> Router {
    let v1 = Router::new()
        .route("/v1/messages", post(messages::send))
        .route("/v1/messages/{id}", get(messages::get_message))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .layer(DefaultBodyLimit::max(app.cfg.api.max_body_bytes))
        .with_state(app)
}

/// Adds the HTTP metrics layer; call on the complete router.
pub fn with_http_metrics(router: Router, app: App) -> Router {
    router.layer(middleware::from_fn_with_state(app, http_metrics))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the spool is writable and the service is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = String, content_type = "text/plain"),
        (status = 503, description = "not ready: shutting down, or the spool is not writable",
            body = String, content_type = "text/plain")))]
pub async fn readyz(State(app): State<App>) -> Response {
    if app.stopping.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !app.spool.writable() {
        return (StatusCode::SERVICE_UNAVAILABLE, "spool not writable").into_response();
    }
    (StatusCode::OK, "ready").into_response()
}

/// Prometheus metrics (text exposition format 0.0.4); README.md lists them.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Every metric, in Prometheus's text format",
        body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.encode(),
    )
        .into_response()
}

/// Bearer keys when configured; otherwise loopback clients only. The
/// middleware of every `/v1` route, including those other modules add.
pub async fn authenticate(State(app): State<App>, req: Request, next: Next) -> Response {
    let keys = &app.cfg.api.keys;
    if keys.is_empty() {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        if peer.is_none_or(|p| p.ip().is_loopback()) {
            return next.run(req).await;
        }
        app.metrics
            .api_rejections
            .with_label_values(&["unauthorized"])
            .inc();
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no API keys are configured: the API answers loopback clients only",
        )
        .into_response();
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(k)
            if keys
                .iter()
                .any(|key| constant_time_eq(key.as_bytes(), k.as_bytes())) =>
        {
            next.run(req).await
        }
        _ => {
            app.metrics
                .api_rejections
                .with_label_values(&["unauthorized"])
                .inc();
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown bearer key",
            )
            .into_response()
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `method` label: the standard methods by name, any other (a client
/// may send any token as a method) as `other`, so the label stays bounded.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn http_metrics(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    app.metrics
        .http_requests
        .with_label_values(&[&route, method, &status])
        .inc();
    app.metrics
        .http_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // axum's own 413 (the body limit) is plain text; a handler's is JSON
    // and says its own limit.
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        app.metrics
            .api_rejections
            .with_label_values(&["too_large"])
            .inc();
        let limit = app.cfg.api.max_body_bytes;
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is over {limit} bytes"),
        )
        .into_response();
    }
    if resp.status().is_client_error() {
        app.metrics
            .api_rejections
            .with_label_values(&[resp.status().as_str()])
            .inc();
    }
    resp
}

/// Parses a JSON body: 415 without a JSON content type, 400 for bad JSON,
/// 422 naming the field for a missing or mistyped one.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("malformed JSON: {inner}"),
                ));
            }
            let msg = inner.to_string();
            let field = missing_field(&msg)
                .map(|f| {
                    if path == "." {
                        f.clone()
                    } else {
                        format!("{path}.{f}")
                    }
                })
                .unwrap_or(path);
            let code = if msg.starts_with("missing field") {
                "missing_field"
            } else {
                "invalid_field"
            };
            Err(ApiError::field(code, field, msg))
        }
    }
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}
