//! Per-destination throttle: connections at once and a rate (governor), with
//! a slow-down mode that a `421` or a "slow down" reply switches on for a
//! while, and that ends by itself.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::ThrottleSpec;

/// Rate used while slowed down when no rate is configured.
const SLOW_INTERVAL_UNLIMITED: Duration = Duration::from_millis(100);

/// The throttle of one destination.
pub struct Throttle {
    spec: ThrottleSpec,
    normal: Option<DefaultDirectRateLimiter>,
    slow: DefaultDirectRateLimiter,
    /// A std mutex: read and written without awaiting.
    slowed_until: Mutex<Option<Instant>>,
}

fn limiter(interval: Duration) -> DefaultDirectRateLimiter {
    let quota = Quota::with_period(interval.max(Duration::from_micros(1)))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MIN);
    RateLimiter::direct(quota)
}

impl Throttle {
    /// A throttle following `spec`.
    pub fn new(spec: &ThrottleSpec) -> Throttle {
        let normal = spec.rate.map(|r| limiter(r.interval()));
        let slow_interval = spec
            .rate
            .map(|r| r.interval() * 2)
            .unwrap_or(SLOW_INTERVAL_UNLIMITED);
        Throttle {
            spec: spec.clone(),
            normal,
            slow: limiter(slow_interval),
            slowed_until: Mutex::new(None),
        }
    }

    /// True while slowed down; clears the mode once its time is over.
    pub fn is_slowed(&self) -> bool {
        let mut until = self.slowed_until.lock().unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(t) if t > Instant::now() => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Connections allowed at once now.
    pub fn max_connections(&self) -> usize {
        if self.is_slowed() {
            1
        } else {
            self.spec.max_connections.max(1)
        }
    }

    /// Messages allowed on one connection.
    pub fn messages_per_connection(&self) -> usize {
        self.spec.messages_per_connection.max(1)
    }

    /// Waits until the rate allows one more message.
    pub async fn acquire(&self) {
        if self.is_slowed() {
            self.slow.until_ready().await;
        } else if let Some(l) = &self.normal {
            l.until_ready().await;
        }
    }

    /// Takes one message's worth of the rate if it is available now.
    pub fn try_acquire(&self) -> bool {
        if self.is_slowed() {
            self.slow.check().is_ok()
        } else {
            self.normal.as_ref().is_none_or(|l| l.check().is_ok())
        }
    }

    /// Switches slow-down on for `period`; returns true if it was off.
    pub fn slow_down(&self, period: Duration) -> bool {
        let mut until = self.slowed_until.lock().unwrap_or_else(|e| e.into_inner());
        let was_off = until.is_none_or(|t| t <= Instant::now());
        *until = Some(Instant::now() + period);
        was_off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

    #[tokio::test]
    async fn rate_allows_one_message_per_interval() {
        let spec = ThrottleSpec {
            rate: Some(Rate::parse("1/h").unwrap()),
            ..ThrottleSpec::default()
        };
        let t = Throttle::new(&spec);
        t.acquire().await;
        // The next one must wait an hour: the limiter refuses it now.
        assert!(t.normal.as_ref().unwrap().check().is_err());
        // Slowed down, the slower limiter takes over.
        t.slow_down(Duration::from_secs(60));
        assert!(t.slow.check().is_ok());
        assert!(t.slow.check().is_err());
    }

    #[test]
    fn slow_down_limits_connections_and_recovers() {
        let spec = ThrottleSpec {
            max_connections: 5,
            ..ThrottleSpec::default()
        };
        let t = Throttle::new(&spec);
        assert_eq!(t.max_connections(), 5);
        assert!(t.slow_down(Duration::from_secs(60)));
        assert!(!t.slow_down(Duration::from_secs(60)));
        assert_eq!(t.max_connections(), 1);
        t.slow_down(Duration::ZERO);
        assert_eq!(t.max_connections(), 5);
        assert!(!t.is_slowed());
    }
}
