//! Group commit: many writers share one flush.
//!
//! A writer sends a waiter and awaits it. The flusher task takes every
//! waiter that has arrived, flushes sled once (on a blocking thread), and
//! answers them all; waiters that arrive during a flush share the next one.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{Result, SpoolError};
use crate::metrics::Metrics;

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

/// Handle to the flusher task.
#[derive(Clone)]
pub(super) struct Flusher {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Flusher {
    /// Starts the flusher task on the current runtime.
    pub(super) fn start(db: sled::Db, metrics: Arc<Metrics>) -> Flusher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let db = db.clone();
                let started = Instant::now();
                let result = tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()));
                metrics.spool_flush.observe(started.elapsed().as_secs_f64());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "spool flush failed");
                }
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        Flusher { tx }
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
