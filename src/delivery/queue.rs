//! Ready queues: one per destination, with a lane per priority.
//!
//! The scheduler moves due messages here; connection tasks take them out,
//! high lane first, so a transactional or `high` message never waits behind
//! a marketing batch for the same destination.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::throttle::Throttle;
use crate::config::{DeliveryConfig, TlsPolicy};

/// A message ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Message id.
    pub id: String,
    /// The due time of the index entry that produced the job.
    pub due_ms: u64,
    /// That entry's key, to drop it if it no longer matches the message.
    pub key: Vec<u8>,
}

/// Most jobs held ready for one destination; the rest stay in the spool's
/// due index until there is room.
pub const MAX_READY_PER_DESTINATION: usize = 5000;

/// One destination: a recipient domain (or the relay).
pub struct Destination {
    /// Domain, as in the recipient address (ASCII).
    pub domain: String,
    /// Label for metrics (folded).
    pub label: String,
    /// Throttle.
    pub throttle: Throttle,
    /// TLS policy.
    pub tls: TlsPolicy,
    /// Lanes by priority; a std mutex, never held across an await.
    lanes: Mutex<[VecDeque<Job>; 3]>,
    /// Connections open (or opening) now.
    pub connections: AtomicUsize,
}

impl Destination {
    /// A destination with the throttle configured for `domain`.
    pub fn new(domain: &str, label: String, cfg: &DeliveryConfig) -> Destination {
        Destination {
            domain: domain.to_string(),
            label,
            throttle: Throttle::new(cfg.throttle_for(domain)),
            tls: cfg.tls_for(domain),
            lanes: Mutex::new(Default::default()),
            connections: AtomicUsize::new(0),
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, [VecDeque<Job>; 3]> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job to its lane; false when the destination is full.
    pub fn push(&self, lane: u8, job: Job) -> bool {
        let mut lanes = self.lanes();
        if lanes.iter().map(VecDeque::len).sum::<usize>() >= MAX_READY_PER_DESTINATION {
            return false;
        }
        lanes[usize::from(lane.min(2))].push_back(job);
        true
    }

    /// Takes the next job, high lane first.
    pub fn pop(&self) -> Option<Job> {
        self.lanes().iter_mut().find_map(VecDeque::pop_front)
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.lanes().iter().map(VecDeque::len).sum()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves a connection slot if the throttle allows one more.
    pub fn try_reserve(&self) -> bool {
        let max = self.throttle.max_connections();
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Releases a slot taken by [`Destination::try_reserve`].
    pub fn release(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            id: id.into(),
            due_ms: 0,
            key: Vec::new(),
        }
    }

    #[test]
    fn high_lane_goes_first() {
        let d = Destination::new("x.test", "x.test".into(), &DeliveryConfig::default());
        d.push(1, job("bulk1"));
        d.push(2, job("low"));
        d.push(1, job("bulk2"));
        d.push(0, job("urgent"));
        let order: Vec<_> = std::iter::from_fn(|| d.pop()).map(|j| j.id).collect();
        assert_eq!(order, ["urgent", "bulk1", "bulk2", "low"]);
    }

    #[test]
    fn slots_follow_the_throttle() {
        let mut cfg = DeliveryConfig::default();
        cfg.domains.insert(
            "two.test".into(),
            crate::config::ThrottleSpec {
                max_connections: 2,
                ..Default::default()
            },
        );
        let d = Destination::new("two.test", "two.test".into(), &cfg);
        assert!(d.try_reserve());
        assert!(d.try_reserve());
        assert!(!d.try_reserve());
        d.release();
        assert!(d.try_reserve());
    }
}
