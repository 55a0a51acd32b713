//! Delivery: scheduler, per-destination ready queues, throttles, MX
//! resolution, SMTP sessions, retries.
//!
//! # Layout
//!
//! - [`scheduler`]: scans the spool's due index and moves due messages into
//!   the ready queue of their destination.
//! - [`queue`]: a [`queue::Destination`] per domain: priority lanes and
//!   connection slots.
//! - [`throttle`]: connections, rate, and slow-down after a `421`.
//! - [`mx`]: MX resolution with hickory-resolver.
//! - [`session`]: one SMTP connection (mail-send).
//! - [`attempt`]: a connection's life and what each reply does to a message.
//! - [`reply`]: reply → outcome.
//!
//! Shutdown: [`Delivery::shutdown`] stops the scheduler, lets connection
//! tasks finish the transaction in hand under a deadline, and returns when
//! the last one has gone (each holds a clone of a channel sender whose
//! closing proves it).

pub mod attempt;
pub mod mx;
pub mod queue;
pub mod reply;
pub mod scheduler;
pub mod session;
pub mod throttle;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_rustls::TlsConnector;

use crate::compose::{Composer, Decorate};
use crate::config::Config;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::spool::Spool;
use queue::{Destination, Job};

/// Everything delivery tasks share.
pub struct Shared {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// The spool.
    pub spool: Spool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Builds messages.
    pub composer: Arc<Composer>,
    /// Adds tracking and unsubscribe to messages.
    pub decorate: Arc<dyn Decorate>,
    /// Event publication.
    pub events: EventBus,
    /// MX resolution.
    pub mx: mx::MxResolver,
    /// Verifying TLS connector.
    pub tls_strict: Arc<TlsConnector>,
    /// Lenient TLS connector (opportunistic).
    pub tls_lenient: Arc<TlsConnector>,
    /// Destinations by domain. A std mutex: lookups only.
    destinations: Mutex<HashMap<String, Arc<Destination>>>,
    /// Ids in a ready queue or in flight, so the scheduler does not take
    /// them twice.
    claimed: Mutex<HashSet<String>>,
    /// SMTP connections open, all destinations together.
    connections: AtomicUsize,
    /// Set once shutdown begins.
    stopping: AtomicBool,
    /// Wakes the scheduler (new messages, free room).
    pub wake: Notify,
    /// Each connection task holds a clone; shutdown waits for all to drop.
    alive: Mutex<Option<mpsc::Sender<()>>>,
}

/// Handle to the running delivery engine.
pub struct Delivery {
    shared: Arc<Shared>,
    scheduler: tokio::task::JoinHandle<()>,
    done: mpsc::Receiver<()>,
}

impl Delivery {
    /// Starts the scheduler.
    pub fn start(
        cfg: Arc<Config>,
        spool: Spool,
        metrics: Arc<Metrics>,
        composer: Arc<Composer>,
        decorate: Arc<dyn Decorate>,
        events: EventBus,
    ) -> anyhow::Result<Delivery> {
        let mx = mx::MxResolver::new(
            cfg.delivery.resolver,
            cfg.delivery.smtp_port,
            cfg.delivery.relay.clone(),
            metrics.clone(),
        )?;
        let (tls_strict, tls_lenient) = session::tls_connectors();
        let (alive, done) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            cfg,
            spool,
            metrics,
            composer,
            decorate,
            events,
            mx,
            tls_strict,
            tls_lenient,
            destinations: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashSet::new()),
            connections: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            alive: Mutex::new(Some(alive)),
        });
        let scheduler = tokio::spawn(scheduler::run(shared.clone()));
        Ok(Delivery {
            shared,
            scheduler,
            done,
        })
    }

    /// Shared state, to wake the scheduler when messages arrive.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops the scheduler, lets transactions in flight finish within
    /// `deadline`, then returns. Messages not finished stay in the spool.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let _ = self.scheduler.await;
        self.shared
            .alive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if tokio::time::timeout(deadline, self.done.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown deadline reached with SMTP transactions in flight; they will be retried"
            );
        }
    }
}

impl Shared {
    /// True once shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Claims an id; false if it is already in a queue or in flight.
    fn claim(&self, id: &str) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
    }

    /// Releases an id once its attempt is over.
    pub fn release(&self, id: &str) {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn claimed_count(&self) -> usize {
        self.claimed.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The destination of a domain, created on first use.
    fn destination(&self, domain: &str) -> Arc<Destination> {
        let mut map = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(domain) {
            return d.clone();
        }
        let label = self.metrics.destinations.fold(domain);
        let d = Arc::new(Destination::new(domain, label, &self.cfg.delivery));
        map.insert(domain.to_string(), d.clone());
        d
    }

    fn all_destinations(&self) -> Vec<Arc<Destination>> {
        self.destinations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Puts a job on its destination's queue; false when that queue is full.
    fn enqueue(self: &Arc<Self>, domain: &str, lane: u8, job: Job) -> bool {
        let dest = self.destination(domain);
        let id = job.id.clone();
        if !self.claim(&id) {
            return true;
        }
        if !dest.push(lane, job) {
            self.release(&id);
            return false;
        }
        self.dispatch(&dest);
        true
    }

    /// Opens connections to `dest` while it has work and the throttles allow.
    pub fn dispatch(self: &Arc<Self>, dest: &Arc<Destination>) {
        while !self.stopping() && !dest.is_empty() {
            let total_max = self.cfg.delivery.max_connections_total.max(1);
            if self
                .connections
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < total_max).then_some(n + 1)
                })
                .is_err()
            {
                return;
            }
            if !dest.try_reserve() {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let Some(alive) = self.alive.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
                dest.release();
                self.connections.fetch_sub(1, Ordering::AcqRel);
                return;
            };
            let guard = attempt::Slot::new(self.clone(), dest.clone(), alive);
            tokio::spawn(attempt::run_connection(guard));
        }
    }
}
