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
//! queue, which grows in the spool meanwhile, up to `webhooks.max_queue`
//! requests: beyond that new ones are dropped (counted as `dropped` in
//! `facteur_webhook_deliveries_total`, and logged), so that an endpoint
//! down for days cannot fill the disk.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// One durable queue in the spool, with its length kept in memory so that
/// it can be bounded without counting it.
struct Queue {
    name: String,
    len: AtomicUsize,
    max: usize,
    /// Set while new items are being dropped (logged once per episode).
    full: AtomicBool,
    /// Wakes its dispatcher; `notify_one` keeps a permit when the
    /// dispatcher is busy posting, so an item queued meanwhile is not left
    /// waiting.
    wake: Notify,
}

impl Queue {
    fn open(name: String, spool: &Spool, max: usize) -> Arc<Queue> {
        let len = spool.queue_len(&name);
        Arc::new(Queue {
            name,
            len: AtomicUsize::new(len),
            max,
            full: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// Appends `p` unless the queue is full (then counts and logs a drop).
    fn push(&self, spool: &Spool, metrics: &Metrics, p: &Pending) -> Result<(), SpoolError> {
        if self.len.load(Ordering::Relaxed) >= self.max {
            metrics
                .webhook_deliveries
                .with_label_values(&["dropped"])
                .inc();
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::error!(queue = %self.name, max = self.max, "webhook queue full: new requests are dropped until it drains");
            }
            return Err(SpoolError::Full);
        }
        let bytes = serde_json::to_vec(p).unwrap_or_default();
        spool.enqueue(&self.name, &bytes)?;
        self.len.fetch_add(1, Ordering::Relaxed);
        self.full.store(false, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    /// Removes item `seq` (answered, or given up).
    fn remove(&self, spool: &Spool, seq: u64) {
        if spool.queue_set(&self.name, seq, None).is_ok() {
            let _ = self
                .len
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
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
    metrics: Arc<Metrics>,
    /// One per route; `None` where the route has no webhook.
    queues: Vec<Option<Arc<Queue>>>,
}

impl RouteRetries {
    /// Queues `body` for route `index`, first retried after `backoff(1)`.
    pub fn queue(&self, index: usize, id: &str, body: serde_json::Value) -> Result<(), SpoolError> {
        let Some(Some(q)) = self.queues.get(index) else {
            return Err(SpoolError::Closed);
        };
        let p = Pending {
            id: id.to_string(),
            body,
            attempts: 1,
            next_ms: now_ms() + backoff(1).as_millis() as u64,
        };
        q.push(&self.spool, &self.metrics, &p)
    }
}

/// Writes events into the endpoints' queues.
pub struct WebhookSink {
    spool: Spool,
    metrics: Arc<Metrics>,
    /// Each endpoint and its queue.
    endpoints: Vec<(WebhookEndpoint, Arc<Queue>)>,
}

impl DurableSink for WebhookSink {
    fn append(&self, ev: &MessageEvent) {
        let kind = ev.event.kind.as_str();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let mut body = serde_json::to_value(ev).unwrap_or_default();
        if let Some(o) = body.as_object_mut() {
            o.insert("event_id".into(), id.clone().into());
        }
        for (e, q) in &self.endpoints {
            if !e.events.is_empty() && !e.events.iter().any(|w| w == kind) {
                continue;
            }
            let p = Pending {
                id: id.clone(),
                body: body.clone(),
                attempts: 0,
                next_ms: 0,
            };
            match q.push(&self.spool, &self.metrics, &p) {
                Ok(()) | Err(SpoolError::Full) => {}
                Err(err) => tracing::error!(error = %err, "cannot queue webhook event"),
            }
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
    let mut spawn = |name: String, url: String, secret: String| {
        let queue = Queue::open(name, &spool, wh.max_queue.max(1));
        let d = Dispatcher {
            queue: queue.clone(),
            url,
            secret,
            spool: spool.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
            max_attempts: wh.max_attempts.max(1),
        };
        tasks.push(tokio::spawn(d.run(stop.clone())));
        queue
    };
    let endpoints: Vec<(WebhookEndpoint, Arc<Queue>)> = wh
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let q = spawn(queue_name(i), e.url.clone(), e.secret.clone());
            (e.clone(), q)
        })
        .collect();
    let route_queues = route_webhooks(cfg)
        .into_iter()
        .enumerate()
        .map(|(i, hook)| hook.map(|(url, secret)| spawn(route_queue_name(i), url, secret)))
        .collect();
    let sink = (!endpoints.is_empty()).then(|| {
        Arc::new(WebhookSink {
            spool: spool.clone(),
            metrics: metrics.clone(),
            endpoints,
        })
    });
    Started {
        sink,
        route_retries: Arc::new(RouteRetries {
            spool,
            metrics,
            queues: route_queues,
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
    queue: Arc<Queue>,
    url: String,
    /// HMAC key of `X-Facteur-Signature`; no signature when empty.
    secret: String,
    spool: Spool,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    max_attempts: u32,
}

/// Queue items read at a time.
const BATCH: usize = 64;

/// Delay after `attempts` failures: 1 s, 2 s, 4 s… up to 10 minutes.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(10).saturating_sub(1)).min(Duration::from_secs(600))
}

impl Dispatcher {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = &self.queue.name;
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
                    self.queue.remove(&self.spool, seq);
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
                    self.queue.remove(&self.spool, seq);
                    continue;
                }
                p.attempts += 1;
                if p.attempts >= self.max_attempts {
                    tracing::warn!(id = p.message_id(), url = %self.url, event = %p.id, "webhook event dropped after max attempts");
                    self.metrics
                        .webhook_deliveries
                        .with_label_values(&["dropped"])
                        .inc();
                    self.queue.remove(&self.spool, seq);
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
                _ = self.queue.wake.notified() => {}
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
    fn a_full_queue_drops_and_counts_new_items_until_it_drains() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new(10, 10));
        let spool = Spool::open(dir.path(), 16, metrics.clone()).unwrap();
        let p = Pending {
            id: "e1".into(),
            body: serde_json::json!({"type": "delivered"}),
            attempts: 0,
            next_ms: 0,
        };
        let q = Queue::open("wh0".into(), &spool, 3);
        for _ in 0..3 {
            q.push(&spool, &metrics, &p).unwrap();
        }
        assert!(matches!(
            q.push(&spool, &metrics, &p),
            Err(SpoolError::Full)
        ));
        assert!(matches!(
            q.push(&spool, &metrics, &p),
            Err(SpoolError::Full)
        ));
        let dropped = metrics
            .webhook_deliveries
            .with_label_values(&["dropped"])
            .get();
        assert_eq!(dropped, 2);
        assert_eq!(spool.queue_len("wh0"), 3);
        // Reopened (a restart), the length is read back from the spool.
        let again = Queue::open("wh0".into(), &spool, 3);
        assert_eq!(again.len.load(Ordering::Relaxed), 3);
        // One answered: room for one more.
        let (seq, _) = spool.queue_items("wh0", 1).unwrap()[0];
        q.remove(&spool, seq);
        q.push(&spool, &metrics, &p).unwrap();
        assert_eq!(spool.queue_len("wh0"), 3);
    }

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
