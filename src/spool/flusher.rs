//! Group commit: many writers share one flush.
//!
//! A writer sends a waiter and awaits it. The flusher thread takes every
//! waiter that has arrived, flushes sled once, and answers them all;
//! waiters that arrive during a flush share the next one. Flushes start at
//! most every [`MIN_INTERVAL`]: under load a few more writers share each
//! one (each flush costs an fsync and wakes sled's I/O threads), and an
//! isolated writer waits no more than it did.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Result, SpoolError};
use crate::metrics::Metrics;

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

/// The shortest time between the starts of two flushes.
const MIN_INTERVAL: Duration = Duration::from_millis(2);

/// Handle to the flusher thread.
#[derive(Clone)]
pub(super) struct Flusher {
    tx: mpsc::Sender<Waiter>,
}

impl Flusher {
    /// Starts the flusher thread; it ends when every handle is dropped.
    pub(super) fn start(db: sled::Db, metrics: Arc<Metrics>) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("spool-flusher".into())
            .spawn(move || run(&db, &metrics, &rx))?;
        Ok(Flusher { tx })
    }

    /// Waits until everything written before the call is on disk.
    pub(super) async fn flush(&self) -> Result<()> {
        self.ticket().wait().await
    }

    /// Asks for a flush covering everything written before the call, now;
    /// the ticket can be awaited later.
    pub(super) fn ticket(&self) -> FlushTicket {
        let (tx, rx) = oneshot::channel();
        match self.tx.send(tx) {
            Ok(()) => FlushTicket(Some(rx)),
            Err(_) => FlushTicket(None),
        }
    }
}

/// The flusher's loop: one flush for all the waiters at hand.
fn run(db: &sled::Db, metrics: &Metrics, rx: &mpsc::Receiver<Waiter>) {
    let mut last: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        if let Some(wait) = last.and_then(|l| MIN_INTERVAL.checked_sub(l.elapsed())) {
            std::thread::sleep(wait);
        }
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let started = Instant::now();
        last = Some(started);
        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
        metrics.spool_flush.observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::error!(error = %e, "spool flush failed");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// A flush requested earlier; [`FlushTicket::wait`] returns once it is done.
#[must_use = "a flush ticket means nothing until awaited"]
pub struct FlushTicket(Option<oneshot::Receiver<std::result::Result<(), String>>>);

impl FlushTicket {
    /// Waits for the flush.
    pub async fn wait(self) -> Result<()> {
        let Some(rx) = self.0 else {
            return Err(SpoolError::Closed);
        };
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SpoolError::Sled(sled::Error::Io(std::io::Error::other(e)))),
            Err(_) => Err(SpoolError::Closed),
        }
    }
}
