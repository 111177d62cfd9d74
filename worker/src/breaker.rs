//! A circuit breaker per destination.
//!
//! Closed → open after `failure_threshold` consecutive transient failures; open → half-open
//! after `cooldown`, when exactly one probe is let through; the probe's success closes it, its
//! failure opens it again for another cooldown. Permanent failures (a 4xx) mean the destination
//! is up and answering, so they count as successes here. While open, deliveries are postponed
//! without spending an attempt. Time is passed in, so tests drive it without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker state, as exported in the `inlet_worker_breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// No calls until the cooldown ends.
    Open,
    /// One probe call allowed.
    HalfOpen,
}

impl BreakerState {
    /// Gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
    /// Label for the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// May a call be made now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Allowed,
    /// Yes, as the half-open probe.
    Probe,
    /// No; ask again after this long.
    Denied(Duration),
}

#[derive(Debug)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// One destination's breaker.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    failure_threshold: u32,
    cooldown: Duration,
}

/// How long a call is kept waiting while the half-open probe is out.
const PROBE_WAIT: Duration = Duration::from_millis(500);

impl Breaker {
    /// A closed breaker.
    pub fn new(failure_threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { inner: Mutex::new(Inner::Closed { consecutive_failures: 0 }), failure_threshold, cooldown }
    }

    /// The state at `now` (an open breaker whose cooldown ended reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let Ok(inner) = self.inner.lock() else { return BreakerState::Closed };
        match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let Ok(mut inner) = self.inner.lock() else { return Admission::Allowed };
        match *inner {
            Inner::Closed { .. } => Admission::Allowed,
            Inner::Open { until } if now < until => Admission::Denied(until - now),
            Inner::Open { .. } | Inner::HalfOpen { probe_in_flight: false } => {
                *inner = Inner::HalfOpen { probe_in_flight: true };
                Admission::Probe
            }
            Inner::HalfOpen { probe_in_flight: true } => Admission::Denied(PROBE_WAIT),
        }
    }

    /// Records a call's result; returns the new state when it changed.
    pub fn record(&self, healthy: bool, now: Instant) -> Option<BreakerState> {
        let Ok(mut inner) = self.inner.lock() else { return None };
        let before = discriminant(&inner);
        *inner = match (&*inner, healthy) {
            (_, true) => Inner::Closed { consecutive_failures: 0 },
            (Inner::Closed { consecutive_failures }, false) => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.failure_threshold {
                    Inner::Open { until: now + self.cooldown }
                } else {
                    Inner::Closed { consecutive_failures: failures }
                }
            }
            // A failed probe, or a late failure of a call admitted before the breaker opened.
            (Inner::HalfOpen { .. } | Inner::Open { .. }, false) => Inner::Open { until: now + self.cooldown },
        };
        let after = discriminant(&inner);
        (before != after).then_some(match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        })
    }

    /// Gives back an unused probe slot (the probe was not sent after all).
    pub fn release_probe(&self) {
        if let Ok(mut inner) = self.inner.lock()
            && let Inner::HalfOpen { probe_in_flight: true } = *inner
        {
            *inner = Inner::HalfOpen { probe_in_flight: false };
        }
    }
}

fn discriminant(inner: &Inner) -> u8 {
    match inner {
        Inner::Closed { .. } => 0,
        Inner::Open { .. } => 1,
        Inner::HalfOpen { .. } => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes_then_closes() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(breaker.record(false, t0), None);
        assert_eq!(breaker.record(false, t0), None);
        assert_eq!(breaker.admit(t0), Admission::Allowed);
        assert_eq!(breaker.record(false, t0), Some(BreakerState::Open));
        assert_eq!(breaker.admit(t0 + Duration::from_secs(4)), Admission::Denied(Duration::from_secs(6)));
        assert_eq!(breaker.state(t0 + Duration::from_secs(10)), BreakerState::HalfOpen);
        assert_eq!(breaker.admit(t0 + Duration::from_secs(10)), Admission::Probe);
        assert_eq!(breaker.admit(t0 + Duration::from_secs(10)), Admission::Denied(PROBE_WAIT), "one probe only");
        assert_eq!(breaker.record(true, t0 + Duration::from_secs(11)), Some(BreakerState::Closed));
        assert_eq!(breaker.admit(t0 + Duration::from_secs(11)), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_cooldown() {
        let breaker = Breaker::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(breaker.record(false, t0), Some(BreakerState::Open));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(breaker.admit(t1), Admission::Probe);
        assert_eq!(breaker.record(false, t1), Some(BreakerState::Open));
        assert_eq!(breaker.admit(t1 + Duration::from_secs(1)), Admission::Denied(Duration::from_secs(9)));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let breaker = Breaker::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        breaker.record(false, t0);
        breaker.record(true, t0);
        assert_eq!(breaker.record(false, t0), None, "count restarted after a success");
        assert_eq!(breaker.state(t0), BreakerState::Closed);
    }

    #[test]
    fn released_probe_can_be_taken_again() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        breaker.record(false, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(breaker.admit(t1), Admission::Probe);
        breaker.release_probe();
        assert_eq!(breaker.admit(t1), Admission::Probe);
    }
}
