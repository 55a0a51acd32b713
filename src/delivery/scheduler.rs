//! The scheduler: finds due messages in the spool's due index and moves
//! them into their destination's ready queue.
//!
//! Each lane keeps a cursor so that a tick reads only the new part of the
//! index; a full rescan from the start every few seconds picks up what a
//! full destination had to leave behind and entries written while a scan
//! ran. Entries whose message moved on (finished, or rescheduled: the due
//! time no longer matches) are dropped from the index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::Job;
use super::Shared;
use crate::spool::{now_ms, DueEntry};

/// Entries read per lane per tick.
const SCAN_BATCH: usize = 2000;
/// Time between ticks when nothing wakes the scheduler.
const TICK: Duration = Duration::from_millis(200);
/// Time between full rescans.
const RESCAN: Duration = Duration::from_secs(3);
/// Shortest time between two updates of the queue gauges.
const GAUGES_EVERY: Duration = Duration::from_secs(2);
/// Counting the queue reads the whole due index: with a very long queue it
/// is done less often, so that it never takes more than about 1/50 of the
/// scheduler's time.
const GAUGES_COST_FACTOR: u32 = 50;

/// Runs until shutdown.
pub async fn run(shared: Arc<Shared>) {
    let mut cursors: [Option<Vec<u8>>; 3] = Default::default();
    let mut last_rescan = Instant::now();
    let mut gauges_at = Instant::now();
    let mut gauges_every = Duration::ZERO;
    loop {
        if shared.stopping() {
            break;
        }
        if last_rescan.elapsed() >= RESCAN {
            cursors = Default::default();
            last_rescan = Instant::now();
        }
        let mut busy = false;
        for lane in 0..3u8 {
            match scan_lane(&shared, lane, &mut cursors[usize::from(lane)]) {
                Ok(n) => busy |= n >= SCAN_BATCH,
                Err(e) => tracing::error!(error = %e, "scheduler cannot read the due index"),
            }
        }
        if gauges_at.elapsed() >= gauges_every {
            let started = Instant::now();
            update_gauges(&shared);
            gauges_at = Instant::now();
            gauges_every = GAUGES_EVERY.max(started.elapsed() * GAUGES_COST_FACTOR);
        }
        if !busy {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Reads one batch of due entries of `lane`; returns how many were read.
fn scan_lane(
    shared: &Arc<Shared>,
    lane: u8,
    cursor: &mut Option<Vec<u8>>,
) -> crate::spool::Result<usize> {
    let now = now_ms();
    let entries = shared.spool.due(lane, cursor.as_deref(), now, SCAN_BATCH)?;
    let n = entries.len();
    for entry in entries {
        if shared.claimed_count() >= shared.cfg.delivery.max_ready {
            // Stop here; the cursor stays before this entry.
            return Ok(0);
        }
        *cursor = Some(entry.key.clone());
        take(shared, lane, &entry)?;
    }
    Ok(n)
}

fn take(shared: &Arc<Shared>, lane: u8, entry: &DueEntry) -> crate::spool::Result<()> {
    // The entry names its destination: no need to read the message here.
    // Whether it is still due (not finished, not moved) is checked by the
    // connection that takes it, which reads it anyway.
    let domain = if entry.domain.is_empty() {
        match shared.spool.message(&entry.id)? {
            Some(rec) if !rec.state.is_final() && rec.due_ms == entry.due_ms => rec.domain,
            _ => {
                shared.spool.drop_due(&entry.key)?;
                return Ok(());
            }
        }
    } else {
        entry.domain.clone()
    };
    let job = Job {
        id: entry.id.clone(),
        due_ms: entry.due_ms,
        key: entry.key.clone(),
    };
    // A full destination leaves the entry for a later rescan.
    let _ = shared.enqueue(&domain, lane, job);
    Ok(())
}

fn update_gauges(shared: &Arc<Shared>) {
    let m = &shared.metrics;
    m.spool_size.set(shared.spool.size_on_disk() as i64);
    let mut ready = 0usize;
    let mut slowed = 0i64;
    for d in shared.all_destinations() {
        ready += d.len();
        if d.throttle.is_slowed() {
            slowed += 1;
        }
        m.smtp_connections
            .with_label_values(&[&d.label])
            .set(d.connections.load(std::sync::atomic::Ordering::Relaxed) as i64);
    }
    m.throttled_destinations.set(slowed);
    let (due_now, due_later) = shared.spool.pending_counts(now_ms());
    let sending = shared.claimed_count().saturating_sub(ready) as i64;
    m.queue_depth.with_label_values(&["sending"]).set(sending);
    m.queue_depth
        .with_label_values(&["queued"])
        .set((due_now as i64 - sending).max(0));
    m.queue_depth
        .with_label_values(&["deferred"])
        .set(due_later as i64);
    if let Ok(Some(oldest)) = shared.spool.oldest_due() {
        m.queue_oldest_age
            .set((now_ms().saturating_sub(oldest) / 1000) as i64);
    } else {
        m.queue_oldest_age.set(0);
    }
}
