//! The public tracking endpoints (no API key): the open pixel, the click
//! redirect and the unsubscribe page.
//!
//! | route | answer | records |
//! | --- | --- | --- |
//! | `GET /t/o/{token}` | the 1×1 GIF, never cached | `opened` |
//! | `GET /t/c/{token}` | `302` to the URL signed in the token | `clicked` |
//! | `GET /u/{token}` | a page with a confirm button | nothing |
//! | `POST /u/{token}` | `200` and a confirmation page (RFC 8058 one-click too) | `unsubscribed`, suppression |
//!
//! A token that does not verify (changed, forged, truncated, signed with a
//! key this node does not hold), or of another kind than its route, is
//! answered 404 and counted in `facteur_tracking_rejected_total{endpoint}`;
//! nothing else is recorded. A click can only redirect to the `http(s)` URL
//! signed into its token.
//!
//! # Recording opens and clicks
//!
//! Each open or click is classified by [`crate::tracking::machine`] (clicks
//! within `tracking.scanner_click_window` of delivery are scanners'),
//! counted in `facteur_opens_total` / `facteur_clicks_total` by campaign
//! (folded) and `machine`, and, for the first open or click of a message by
//! a person, in the `unique` counters (a `k/open/{id}` marker in the spool
//! makes it once per message, across restarts). The event, with data
//! `{url, user_agent, machine, machine_reason}`, goes to the message's
//! tracking log in the spool (shown on its timeline) and to the event bus
//! (webhooks). A message keeps at most [`MAX_TRACKING_EVENTS`] such events:
//! past that (a forwarded message, or someone hammering a link) requests are
//! still answered and counted in metrics, but neither stored nor published.
//!
//! Durability: the event is written to sled before the answer, and sled
//! writes it to disk within 50 ms (its flush interval); a crash of the
//! machine in that window may lose it. With `tracking.flush_events` the
//! answer waits for the spool's group commit instead, at the cost of
//! latency. An unsubscribe always waits for the group commit: it is
//! honoured for good once answered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::page::{self, Lang};
use super::unsubscribe::{suppress, unsubscribe};
use crate::api::App;
use crate::events::{Event, EventType, MessageEvent};
use crate::spool::{now_ms, SpoolError};
use crate::tracking::{
    classify_click, classify_open, ClickRules, HttpMethod, RequestContext, TokenKind, TrackingToken,
};

/// Most opens and clicks stored (and published) per message.
pub const MAX_TRACKING_EVENTS: u32 = 1000;

/// Messages whose tracking summary is kept in memory before the cache is
/// emptied and refilled from the spool.
const CACHE_CAPACITY: usize = 100_000;

/// Longest user agent stored in an event.
const MAX_USER_AGENT: usize = 256;

/// The tracking endpoints' routes (merge before the HTTP metrics layer:
/// they are labelled by these route templates, never by token).
pub fn router(app: App) -> Router {
    let rules = ClickRules {
        scanner_window: app.cfg.tracking.scanner_click_window.0,
    };
    let state = Arc::new(Endpoints {
        app,
        rules,
        cache: MessageCache::default(),
    });
    Router::new()
        .route("/t/o/{token}", get(open))
        .route("/t/c/{token}", get(click))
        .route(
            "/u/{token}",
            get(unsubscribe_page).post(unsubscribe_one_click),
        )
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// State of the endpoints.
struct Endpoints {
    app: App,
    rules: ClickRules,
    cache: MessageCache,
}

type Shared = Arc<Endpoints>;

/// What the request tells about the client.
struct Client {
    method: HttpMethod,
    user_agent: Option<String>,
    accept_language: Option<String>,
    ip: Option<IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Client, Infallible> {
        let text = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Client {
            method: match parts.method {
                Method::GET => HttpMethod::Get,
                Method::HEAD => HttpMethod::Head,
                _ => HttpMethod::Other,
            },
            user_agent: text(header::USER_AGENT),
            accept_language: text(header::ACCEPT_LANGUAGE),
            ip: client_ip(peer, &parts.headers),
        })
    }
}

/// The client's address: the peer's, or, when the peer is on a private
/// network (a proxy or ingress of ours), the last address of
/// `X-Forwarded-For` that is not private itself (the one our proxies saw).
/// A public peer's `X-Forwarded-For` is not trusted.
fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?;
    if !is_private(peer) {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .rfind(|ip| !is_private(*ip));
    Some(forwarded.unwrap_or(peer))
}

/// Loopback, RFC 1918 and IPv6 unique local addresses.
fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

impl Endpoints {
    /// The token if it verifies and is of `kind`; otherwise counts a
    /// rejection on `endpoint`.
    fn verify(&self, token: &str, kind: TokenKind, endpoint: &str) -> Option<TrackingToken> {
        match self.app.signer.verify(token) {
            Ok(t) if t.kind == kind => Some(t),
            Ok(_) | Err(_) => {
                self.app
                    .metrics
                    .tracking_rejected
                    .with_label_values(&[endpoint])
                    .inc();
                None
            }
        }
    }

    /// Classifies, counts and records one open or click.
    async fn record(&self, token: &TrackingToken, client: &Client, kind: EventType) {
        let app = &self.app;
        let info = match self.cache.get(app, &token.message_id) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(id = %token.message_id, error = %e, "cannot read message for tracking");
                None
            }
        };
        let since = info
            .as_ref()
            .and_then(|i| i.delivered_ms())
            .map(|d| (now_ms() as f64 - d as f64) / 1000.0);
        let ctx = RequestContext {
            user_agent: client.user_agent.as_deref(),
            method: client.method,
            remote_ip: client.ip,
            seconds_since_delivery: since,
        };
        let (verdict, counter, unique, marker) = match kind {
            EventType::Clicked => (
                classify_click(&ctx, &self.rules),
                &app.metrics.clicks,
                &app.metrics.unique_clicks,
                "click",
            ),
            _ => (
                classify_open(&ctx),
                &app.metrics.opens,
                &app.metrics.unique_opens,
                "open",
            ),
        };
        let machine = if verdict.machine { "true" } else { "false" };
        let Some(info) = info else {
            tracing::debug!(id = %token.message_id, "tracking for a message this spool does not hold");
            counter.with_label_values(&["none", machine]).inc();
            return;
        };
        let label = info.campaign_label.as_str();
        counter.with_label_values(&[label, machine]).inc();
        if !verdict.machine && info.first(kind, app, &token.message_id, marker) {
            unique.with_label_values(&[label]).inc();
        }
        if info.recorded.fetch_add(1, Ordering::Relaxed) >= MAX_TRACKING_EVENTS {
            return;
        }
        let user_agent = client
            .user_agent
            .as_deref()
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect::<String>());
        let event = Event::now(kind, None).with_data(json!({
            "url": token.url,
            "user_agent": user_agent,
            "machine": verdict.machine,
            "machine_reason": verdict.reason,
        }));
        if let Err(e) = app.spool.add_tracking_event(&token.message_id, &event) {
            tracing::error!(id = %token.message_id, error = %e, "cannot record tracking event");
            return;
        }
        app.events.publish(MessageEvent {
            message_id: token.message_id.clone(),
            email: info.email.clone(),
            campaign: info.campaign.clone(),
            category: info.category.clone(),
            metadata: info.metadata.clone(),
            event,
        });
        if app.cfg.tracking.flush_events {
            if let Err(e) = app.spool.flush().await {
                tracing::error!(error = %e, "cannot flush tracking event");
            }
        }
    }
}

/// `GET /t/o/{token}`: the pixel.
#[utoipa::path(get, path = "/t/o/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed tracking token")),
    responses((status = 200, description = "The 1x1 GIF; the open is recorded", body = [u8], content_type = "image/gif"),
        (status = 404, description = "Forged, changed or unknown token", body = String, content_type = "text/plain")))]
async fn open(State(s): State<Shared>, client: Client, Path(token): Path<String>) -> Response {
    let Some(t) = s.verify(&token, TokenKind::Open, "open") else {
        return not_found();
    };
    s.record(&t, &client, EventType::Opened).await;
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (
                header::CACHE_CONTROL,
                "no-store, no-cache, must-revalidate, max-age=0",
            ),
            (header::PRAGMA, "no-cache"),
            (header::EXPIRES, "0"),
        ],
        &page::PIXEL_GIF[..],
    )
        .into_response()
}

/// `GET /t/c/{token}`: the redirect to the URL in the token.
#[utoipa::path(get, path = "/t/c/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed tracking token")),
    responses((status = 302, description = "Redirect to the URL signed in the token; the click is recorded",
            headers(("Location" = String, description = "The signed URL"))),
        (status = 404, description = "Forged, changed or unknown token", body = String, content_type = "text/plain")))]
async fn click(State(s): State<Shared>, client: Client, Path(token): Path<String>) -> Response {
    let Some(t) = s.verify(&token, TokenKind::Click, "click") else {
        return not_found();
    };
    let Some(location) = t.url.as_deref().and_then(redirect_target) else {
        s.app
            .metrics
            .tracking_rejected
            .with_label_values(&["click"])
            .inc();
        return not_found();
    };
    s.record(&t, &client, EventType::Clicked).await;
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
    )
        .into_response()
}

/// The `Location` for a click's URL: only `http` and `https`, with bytes a
/// header cannot carry (spaces, non-ASCII) percent-encoded as a browser
/// would.
fn redirect_target(url: &str) -> Option<HeaderValue> {
    let scheme_ok = ["http://", "https://"].iter().any(|s| {
        url.get(..s.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(s))
    });
    if !scheme_ok {
        return None;
    }
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).ok()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        "not found\n",
    )
        .into_response()
}

/// `GET /u/{token}`: the confirmation page. Never unsubscribes.
#[utoipa::path(get, path = "/u/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed tracking token")),
    responses((status = 200, description = "A page with a button that confirms", body = String, content_type = "text/html"),
        (status = 404, description = "Forged, changed or unknown token", body = String, content_type = "text/html")))]
async fn unsubscribe_page(
    State(s): State<Shared>,
    client: Client,
    Path(token): Path<String>,
) -> Response {
    let lang = Lang::negotiate(client.accept_language.as_deref());
    let Some(t) = s.verify(&token, TokenKind::Unsubscribe, "unsubscribe") else {
        return html(StatusCode::NOT_FOUND, lang, page::invalid_page(lang));
    };
    html(StatusCode::OK, lang, page::confirm_page(lang, &t.recipient))
}

/// `POST /u/{token}`: unsubscribes, whatever the body (the page's form,
/// or RFC 8058's `List-Unsubscribe=One-Click`), once the suppression is on
/// disk.
#[utoipa::path(post, path = "/u/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed tracking token")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "Any body: the page's form, or RFC 8058's `List-Unsubscribe=One-Click`"),
    responses((status = 200, description = "Unsubscribed: a confirmation page", body = String, content_type = "text/html"),
        (status = 404, description = "Forged, changed or unknown token", body = String, content_type = "text/html"),
        (status = 503, description = "The spool cannot record it now; try again", body = String, content_type = "text/plain")))]
async fn unsubscribe_one_click(
    State(s): State<Shared>,
    client: Client,
    Path(token): Path<String>,
) -> Response {
    let lang = Lang::negotiate(client.accept_language.as_deref());
    let Some(t) = s.verify(&token, TokenKind::Unsubscribe, "unsubscribe") else {
        return html(StatusCode::NOT_FOUND, lang, page::invalid_page(lang));
    };
    let app = &s.app;
    let done = match app.spool.message(&t.message_id) {
        Ok(Some(rec)) => unsubscribe(app, &rec, "one_click").map(|_| ()),
        // Another node's message (tokens are stateless): the signed
        // recipient is enough to honour it, for all marketing mail.
        Ok(None) => suppress(app, &t.recipient, "marketing".into(), None),
        Err(e) => Err(e),
    };
    let done = match done {
        Ok(()) => app.spool.flush().await,
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => html(StatusCode::OK, lang, page::done_page(lang, &t.recipient)),
        Err(e) => {
            tracing::error!(id = %t.message_id, error = %e, "cannot record unsubscribe");
            (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response()
        }
    }
}

fn html(status: StatusCode, lang: Lang, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_LANGUAGE, lang.code()),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// What the endpoints keep in memory about a message: enough to count and
/// publish an open or click without decoding its record each time.
struct MessageInfo {
    email: String,
    campaign: Option<String>,
    /// The campaign as a metric label (folded).
    campaign_label: String,
    category: String,
    metadata: serde_json::Value,
    /// Delivery time (unix ms), 0 while unknown.
    delivered_ms: AtomicU64,
    /// Tracking events stored for the message (may pass the cap).
    recorded: AtomicU32,
    /// The unique open / click marker is known to be set.
    opened: AtomicBool,
    clicked: AtomicBool,
}

impl MessageInfo {
    fn delivered_ms(&self) -> Option<u64> {
        Some(self.delivered_ms.load(Ordering::Relaxed)).filter(|&d| d > 0)
    }

    /// True for the first open (or click) of the message by a person:
    /// the spool's marker decides, the flag saves asking again.
    fn first(&self, kind: EventType, app: &App, id: &str, marker: &str) -> bool {
        let flag = if kind == EventType::Clicked {
            &self.clicked
        } else {
            &self.opened
        };
        if flag.load(Ordering::Relaxed) {
            return false;
        }
        let first = app
            .spool
            .mark_once(&format!("{marker}/{id}"), now_ms())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot set unique marker");
                false
            });
        flag.store(true, Ordering::Relaxed);
        first
    }
}

/// Message summaries by id, bounded: emptied when full.
#[derive(Default)]
struct MessageCache {
    /// A std mutex: held for a map lookup or insert only, never across an
    /// await.
    map: Mutex<HashMap<String, Arc<MessageInfo>>>,
}

impl MessageCache {
    /// The summary of message `id`, read from the spool on a miss, or
    /// again while its delivery time is unknown (an open may come before
    /// the delivery is recorded).
    fn get(&self, app: &App, id: &str) -> Result<Option<Arc<MessageInfo>>, SpoolError> {
        let cached = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(info) = &cached {
            if info.delivered_ms().is_some() {
                return Ok(cached);
            }
        }
        let Some(rec) = app.spool.message(id)? else {
            return Ok(None);
        };
        if let Some(info) = cached {
            info.delivered_ms
                .store(rec.delivered_ms.unwrap_or(0), Ordering::Relaxed);
            return Ok(Some(info));
        }
        let info = Arc::new(MessageInfo {
            campaign_label: app
                .metrics
                .campaigns
                .fold(rec.campaign.as_deref().unwrap_or("")),
            email: rec.email,
            campaign: rec.campaign,
            category: rec.category,
            metadata: rec.metadata,
            delivered_ms: AtomicU64::new(rec.delivered_ms.unwrap_or(0)),
            recorded: AtomicU32::new(app.spool.tracking_event_count(id) as u32),
            opened: AtomicBool::new(false),
            clicked: AtomicBool::new(false),
        });
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        Ok(Some(map.entry(id.to_string()).or_insert(info).clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn only_http_urls_are_redirect_targets() {
        assert_eq!(
            redirect_target("https://shop.test/a?b=1#c").unwrap(),
            "https://shop.test/a?b=1#c"
        );
        assert_eq!(
            redirect_target("HTTP://shop.test/é a").unwrap(),
            "HTTP://shop.test/%C3%A9%20a"
        );
        for bad in [
            "javascript:alert(1)",
            "mailto:a@b.test",
            "//evil.test",
            "data:,x",
            "",
        ] {
            assert!(redirect_target(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_trusted_from_private_peers_only() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "17.1.2.3, 10.0.0.9".parse().unwrap());
        let public: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(client_ip(Some(public), &h), Some(public));
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(Some(proxy), &h),
            Some("17.1.2.3".parse().unwrap())
        );
        assert_eq!(client_ip(Some(proxy), &HeaderMap::new()), Some(proxy));
        assert_eq!(client_ip(None, &h), None);
    }
}
