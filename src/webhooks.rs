//! Events out: durable, signed webhook deliveries.
//!
//! Every event a configured endpoint wants is appended, when it happens, to
//! that endpoint's queue in the spool ([`WebhookSink`]). One dispatcher task
//! per endpoint POSTs the queue in order, retries with exponential backoff,
//! and drops an event after `webhooks.max_attempts`. The dispatchers run
//! apart from delivery: a slow or dead endpoint never slows it.
//!
//! Each request carries `X-Facteur-Event-Id` (the same for every endpoint,
//! for deduplication) and `X-Facteur-Signature: t=UNIX,v1=HEX`, where HEX is
//! HMAC-SHA256 under the endpoint's secret of `"{t}.{body}"`.
//!
//! Delivery guarantees: an event is removed from the queue only after the
//! endpoint answered 2xx, and the queue is flushed at shutdown, so across a
//! clean restart (SIGTERM) every event arrives exactly once. After a crash
//! (`kill -9`, power loss), an event the endpoint had just accepted may come
//! again (deduplicate on `X-Facteur-Event-Id`), and an event whose write was
//! not flushed yet is missing together with that write (opens and clicks of
//! the last ~50 ms, sled's flush interval, unless `tracking.flush_events`).
//! A 3xx is a failure (a POST is not followed to
//! another place), and an endpoint that answers slowly delays only its own
//! queue, which grows in the spool meanwhile.
//!
//! The webhooks of inbound routes (`inbound.routes[].webhook`) use the same
//! machinery: a query is posted at once, while its SMTP transaction waits;
//! if that fails it is queued in the spool ([`RouteRetries`]) and retried
//! like an event, with the same `X-Facteur-Event-Id`, so that a customer's
//! message is not lost to an endpoint that is down for a while.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{watch, Notify};

use crate::config::{Config, WebhookEndpoint};
use crate::events::{DurableSink, MessageEvent};
use crate::metrics::Metrics;
use crate::spool::{now_ms, Spool, SpoolError};

/// A queued delivery of one event to one endpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    /// Event id.
    id: String,
    /// The JSON body to POST.
    body: serde_json::Value,
    /// Attempts made.
    attempts: u32,
    /// Not before (unix ms).
    next_ms: u64,
}

impl Pending {
    /// The id of the message the event is about, for log lines.
    fn message_id(&self) -> &str {
        self.body["message_id"].as_str().unwrap_or_default()
    }
}

fn queue_name(index: usize) -> String {
    format!("wh{index}")
}

/// The retry queue of route `index` (in `inbound.routes`; the default
/// route comes last).
fn route_queue_name(index: usize) -> String {
    format!("rt{index}")
}

/// The webhooks of every inbound route, in route order, the default route
/// last: `(url, secret)` where one is configured.
fn route_webhooks(cfg: &Config) -> Vec<Option<(String, String)>> {
    let i = &cfg.inbound;
    i.routes
        .iter()
        .chain(std::iter::once(&i.default_route))
        .map(|r| r.webhook.clone().map(|u| (u, r.webhook_secret.clone())))
        .collect()
}

/// Inbound route webhook posts that failed, queued for retry.
pub struct RouteRetries {
    spool: Spool,
    /// One per route; `None` where the route has no webhook.
    wake: Vec<Option<Arc<Notify>>>,
}

impl RouteRetries {
    /// Queues `body` for route `index`, first retried after `backoff(1)`.
    pub fn queue(&self, index: usize, id: &str, body: serde_json::Value) -> Result<(), SpoolError> {
        let Some(Some(wake)) = self.wake.get(index) else {
            return Err(SpoolError::Closed);
        };
        let p = Pending {
            id: id.to_string(),
            body,
            attempts: 1,
            next_ms: now_ms() + backoff(1).as_millis() as u64,
        };
        let bytes = serde_json::to_vec(&p).unwrap_or_default();
        self.spool.enqueue(&route_queue_name(index), &bytes)?;
        wake.notify_one();
        Ok(())
    }
}

/// Writes events into the endpoints' queues.
pub struct WebhookSink {
    spool: Spool,
    endpoints: Vec<WebhookEndpoint>,
    /// One per endpoint: `notify_one` keeps a permit when the dispatcher is
    /// busy posting, so an event queued meanwhile is not left waiting.
    wake: Vec<Arc<Notify>>,
}

impl DurableSink for WebhookSink {
    fn append(&self, ev: &MessageEvent) {
        let kind = ev.event.kind.as_str();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let mut body = serde_json::to_value(ev).unwrap_or_default();
        if let Some(o) = body.as_object_mut() {
            o.insert("event_id".into(), id.clone().into());
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if !e.events.is_empty() && !e.events.iter().any(|w| w == kind) {
                continue;
            }
            let p = Pending {
                id: id.clone(),
                body: body.clone(),
                attempts: 0,
                next_ms: 0,
            };
            let bytes = serde_json::to_vec(&p).unwrap_or_default();
            if let Err(err) = self.spool.enqueue(&queue_name(i), &bytes) {
                tracing::error!(error = %err, "cannot queue webhook event");
            }
            self.wake[i].notify_one();
        }
    }
}

/// Signs a body: the value of `X-Facteur-Signature`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

/// The running dispatchers.
pub struct Webhooks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What [`start`] sets up.
pub struct Started {
    /// The sink to plug into the event bus (None when no endpoint is
    /// configured).
    pub sink: Option<Arc<WebhookSink>>,
    /// Where inbound routing queues the posts that failed.
    pub route_retries: Arc<RouteRetries>,
    /// The dispatchers.
    pub webhooks: Webhooks,
}

/// Starts one dispatcher per event endpoint and per inbound route webhook.
pub fn start(
    cfg: &Config,
    spool: Spool,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Started {
    let wh = &cfg.webhooks;
    // A redirect is a failure: following it would turn the POST into a GET
    // to somewhere else.
    let client = reqwest::Client::builder()
        .timeout(wh.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let mut tasks = Vec::new();
    let mut spawn = |queue: String, url: String, secret: String| {
        let wake = Arc::new(Notify::new());
        let d = Dispatcher {
            queue,
            url,
            secret,
            spool: spool.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
            max_attempts: wh.max_attempts.max(1),
            wake: wake.clone(),
        };
        tasks.push(tokio::spawn(d.run(stop.clone())));
        wake
    };
    let wake: Vec<Arc<Notify>> = wh
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| spawn(queue_name(i), e.url.clone(), e.secret.clone()))
        .collect();
    let route_wake = route_webhooks(cfg)
        .into_iter()
        .enumerate()
        .map(|(i, hook)| hook.map(|(url, secret)| spawn(route_queue_name(i), url, secret)))
        .collect();
    let sink = (!wh.endpoints.is_empty()).then(|| {
        Arc::new(WebhookSink {
            spool: spool.clone(),
            endpoints: wh.endpoints.clone(),
            wake,
        })
    });
    Started {
        sink,
        route_retries: Arc::new(RouteRetries {
            spool,
            wake: route_wake,
        }),
        webhooks: Webhooks { tasks },
    }
}

impl Webhooks {
    /// Waits for the dispatchers to finish the request in hand.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct Dispatcher {
    /// The spool queue it posts.
    queue: String,
    url: String,
    /// HMAC key of `X-Facteur-Signature`; no signature when empty.
    secret: String,
    spool: Spool,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    max_attempts: u32,
    wake: Arc<Notify>,
}

/// Queue items read at a time.
const BATCH: usize = 64;

/// Delay after `attempts` failures: 1 s, 2 s, 4 s… up to 10 minutes.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(10).saturating_sub(1)).min(Duration::from_secs(600))
}

impl Dispatcher {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = &self.queue;
        loop {
            if *stop.borrow() {
                return;
            }
            let items = match self.spool.queue_items(name, BATCH) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read webhook queue");
                    Vec::new()
                }
            };
            // A full batch means more may be waiting: read again at once.
            let mut wait = if items.len() == BATCH {
                Duration::ZERO
            } else {
                Duration::from_secs(1)
            };
            for (seq, bytes) in items {
                if *stop.borrow() {
                    return;
                }
                let Ok(mut p) = serde_json::from_slice::<Pending>(&bytes) else {
                    let _ = self.spool.queue_set(name, seq, None);
                    continue;
                };
                let now = now_ms();
                if p.next_ms > now {
                    // Keep order: wait for the head of the queue.
                    wait = Duration::from_millis(p.next_ms - now);
                    break;
                }
                if self.post(&p).await {
                    self.metrics
                        .webhook_deliveries
                        .with_label_values(&["ok"])
                        .inc();
                    let _ = self.spool.queue_set(name, seq, None);
                    continue;
                }
                p.attempts += 1;
                if p.attempts >= self.max_attempts {
                    tracing::warn!(id = p.message_id(), url = %self.url, event = %p.id, "webhook event dropped after max attempts");
                    self.metrics
                        .webhook_deliveries
                        .with_label_values(&["dropped"])
                        .inc();
                    let _ = self.spool.queue_set(name, seq, None);
                    continue;
                }
                self.metrics
                    .webhook_deliveries
                    .with_label_values(&["retry"])
                    .inc();
                let delay = backoff(p.attempts);
                p.next_ms = now_ms() + delay.as_millis() as u64;
                let _ = self.spool.queue_set(
                    name,
                    seq,
                    Some(&serde_json::to_vec(&p).unwrap_or_default()),
                );
                wait = delay;
                break;
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
            }
        }
    }

    async fn post(&self, p: &Pending) -> bool {
        let body = serde_json::to_vec(&p.body).unwrap_or_default();
        let ts = now_ms() / 1000;
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("facteur/", env!("CARGO_PKG_VERSION")))
            .header("X-Facteur-Event-Id", &p.id);
        if !self.secret.is_empty() {
            req = req.header("X-Facteur-Signature", sign(&self.secret, ts, &body));
        }
        let r = req.body(body).send().await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                // Read the body so that the connection goes back to the pool.
                let _ = resp.bytes().await;
                true
            }
            Ok(resp) => {
                tracing::debug!(id = p.message_id(), url = %self.url, event = %p.id, status = %resp.status(), "webhook refused");
                false
            }
            Err(e) => {
                tracing::debug!(id = p.message_id(), url = %self.url, event = %p.id, error = %e, "webhook failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_and_body() {
        let s = sign("secret", 1700000000, b"{}");
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(s, sign("other", 1700000000, b"{}"));
        assert_ne!(s, sign("secret", 1700000001, b"{}"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), Duration::from_secs(512));
    }
}
