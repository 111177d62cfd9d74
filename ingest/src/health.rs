//! Whether JetStream can store events right now, as the last publishes found out, and the
//! probe that finds out when it can again.
//!
//! A publish that JetStream refuses for lack of space (`StoreFull`) or that gets no PubAck in
//! time (`Timeout`; a server whose disk is full does not answer at all) turns the store
//! *failing*. While it is failing:
//!
//! - `/readyz` answers 503 with the reason, and `inlet_ingest_store_available` reads 0;
//! - when JetStream does not answer (timeouts, and a stream with a write error: after ENOSPC
//!   nats-server answers no publish at all), webhook requests are answered 503 at once with
//!   that reason instead of each waiting `publish_timeout` for a PubAck that will not come;
//! - when JetStream refuses at once (a size limit reached), requests still go to it: its
//!   answer costs a millisecond and is exact (a retried event is still a 200 duplicate, a
//!   small event may still fit);
//! - the store is probed at once and then every [`PROBE_INTERVAL`] (`Publisher::probe`, which
//!   never publishes into the intake stream), so readiness recovers without traffic.
//!
//! The probe ends the failing state when it finds nothing wrong. When it finds the cause
//! itself (the stream at its size limit, the account at its storage limit, the stream's write
//! error), it keeps the state until the cause is gone. When it cannot tell (it timed out, or
//! erred) while requests are being refused, one request per [`PROBE_INTERVAL`] is let through
//! as a trial, so that a probe failing for its own reasons never keeps ingest refusing a store
//! that works.
//!
//! A newly stored event also ends the failing state (a duplicate does not: JetStream
//! recognises one without writing anything). The probe cannot see everything a publish would
//! (e.g. the server's own `max_file_store`), so it may declare the store available too early;
//! the next publish then fails at once and the store is failing again. That costs a 503 that
//! would have come anyway, never a lost event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metric_names;
use crate::pub_ack::{PublishFailure, StoreFull};

/// How often a failing store is probed, and how often a trial request is let through while
/// the probe cannot tell.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// What is known about a failing store.
#[derive(Debug, Clone, Copy)]
struct Failing {
    /// The latest failure seen (by a publish or a probe).
    reason: PublishFailure,
    since: Instant,
    /// When the next request may go to JetStream as a trial; `None` while the probe sees the
    /// cause itself (no trials then).
    next_trial: Option<Instant>,
    /// Probes run since the store began failing.
    probes: u32,
}

/// What readiness reports about a failing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailingStore {
    /// The latest failure seen.
    pub reason: PublishFailure,
    /// How long the store has been failing.
    pub for_how_long: Duration,
    /// Probes run since.
    pub probes: u32,
}

/// The shared view of the store's health (one per process).
pub struct StoreHealth {
    /// `None` while publishes succeed. A watch channel, so the probe task can wait for a change.
    state: watch::Sender<Option<Failing>>,
    available: metrics::Gauge,
    /// The stream's name, the metrics' label.
    stream: String,
}

impl StoreHealth {
    /// The store behind `stream`, assumed available until a publish says otherwise.
    pub fn new(stream: &str) -> Arc<StoreHealth> {
        let available = metrics::gauge!(metric_names::STORE_AVAILABLE, "stream" => stream.to_owned());
        available.set(1.0);
        Arc::new(StoreHealth { state: watch::Sender::new(None), available, stream: stream.to_owned() })
    }

    /// Called before a publish: `Ok` to go ahead (available, JetStream answers at once, or this
    /// request is the trial), else the known failure to answer with right away.
    ///
    /// # Errors
    ///
    /// The failure that made the store failing, while JetStream would not answer in time.
    pub fn admit(&self) -> Result<(), PublishFailure> {
        let mut refused = None;
        self.state.send_if_modified(|state| {
            if let Some(failing) = state.as_mut()
                && goes_unanswered(failing.reason)
            {
                let now = Instant::now();
                match failing.next_trial {
                    Some(at) if now >= at => failing.next_trial = Some(now + PROBE_INTERVAL),
                    _ => refused = Some(failing.reason),
                }
            }
            // Taking the trial slot is no news for the probe task.
            false
        });
        refused.map_or(Ok(()), Err)
    }

    /// Records the outcome of a publish that went to JetStream. `stored` is true for a newly
    /// stored event; a duplicate proves nothing about the store and changes nothing.
    pub fn record(&self, outcome: Result<bool, PublishFailure>) {
        match outcome {
            Ok(true) => self.recovered("publish"),
            Ok(false) => {}
            Err(failure) if counts_against_store(failure) => self.failed(failure),
            Err(_) => {}
        }
    }

    /// What is known about the store while it is failing; `None` while it is available.
    pub fn failing(&self) -> Option<FailingStore> {
        self.state.borrow().map(|failing| FailingStore {
            reason: failing.reason,
            for_how_long: failing.since.elapsed(),
            probes: failing.probes,
        })
    }

    /// A publish failed for lack of storage.
    fn failed(&self, reason: PublishFailure) {
        let mut entered = false;
        self.state.send_if_modified(|state| match state {
            // The probe's own diagnosis is more precise than a publish's symptom (a timeout).
            Some(failing) if failing.next_trial.is_none() => false,
            Some(failing) => {
                failing.reason = reason;
                false
            }
            None => {
                let now = Instant::now();
                *state = Some(Failing { reason, since: now, next_trial: Some(now + PROBE_INTERVAL), probes: 0 });
                entered = true;
                true
            }
        });
        if entered {
            self.available.set(0.0);
            tracing::warn!(
                reason = reason.as_str(),
                "JetStream cannot store events: answering 503 at once until the store probe or a publish succeeds"
            );
        }
    }

    /// The probe's verdict on a failing store.
    fn probed(&self, outcome: Result<(), PublishFailure>) {
        let failure = match outcome {
            Ok(()) => {
                metric_names::store_probed(&self.stream, "available");
                self.recovered("probe");
                return;
            }
            Err(failure) => failure,
        };
        metric_names::store_probed(&self.stream, "failing");
        tracing::debug!(reason = failure.as_str(), "store probe: still failing");
        let sees_cause = probe_sees_cause(failure);
        self.state.send_if_modified(|state| {
            // A publish may have stored an event meanwhile: that is the better evidence.
            if let Some(failing) = state.as_mut() {
                failing.probes = failing.probes.saturating_add(1);
                if sees_cause {
                    failing.reason = failure;
                    failing.next_trial = None;
                } else if failing.next_trial.is_none() {
                    // The probe cannot tell (it timed out or erred): keep the known reason, but
                    // let trials find out whether the store works.
                    failing.next_trial = Some(Instant::now());
                }
            }
            false
        });
    }

    fn recovered(&self, by: &'static str) {
        let mut was = None;
        self.state.send_if_modified(|state| {
            was = state.take();
            was.is_some()
        });
        if let Some(failing) = was {
            self.available.set(1.0);
            tracing::info!(by, after = ?failing.since.elapsed(), "JetStream stores events again");
        }
    }

    /// Probes the store with `probe` (`Publisher::probe`, passed in so that health needs
    /// nothing of the publisher it informs) while it is failing: at once, then every
    /// [`PROBE_INTERVAL`], until it recovers; until `shutdown`.
    pub async fn run_probe<F, P>(self: Arc<Self>, probe: P, shutdown: CancellationToken)
    where
        P: Fn() -> F,
        F: Future<Output = Result<(), PublishFailure>>,
    {
        let mut changes = self.state.subscribe();
        loop {
            tokio::select! {
                changed = changes.wait_for(Option::is_some) => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
            while self.failing().is_some() {
                self.probed(probe().await);
                tokio::select! {
                    () = tokio::time::sleep(PROBE_INTERVAL) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Failures JetStream does not answer (in time), so that a publish would wait `publish_timeout`.
fn goes_unanswered(failure: PublishFailure) -> bool {
    matches!(failure, PublishFailure::Timeout | PublishFailure::StoreFull(StoreFull::WriteFailed))
}

/// Failures the probe finds by looking at their cause, so it will also see the cause go.
fn probe_sees_cause(failure: PublishFailure) -> bool {
    matches!(
        failure,
        PublishFailure::StoreFull(StoreFull::StreamLimit | StoreFull::AccountLimit | StoreFull::WriteFailed)
    )
}

/// Failures that say the store cannot take events now (rather than something about the
/// request, or the connection, which readiness reports on its own).
fn counts_against_store(failure: PublishFailure) -> bool {
    matches!(failure, PublishFailure::StoreFull(_) | PublishFailure::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_trial(health: &StoreHealth) {
        health.state.send_modify(|state| {
            if let Some(Failing { next_trial: Some(at), .. }) = state.as_mut() {
                *at = Instant::now();
            }
        });
    }

    #[test]
    fn a_failing_store_refuses_at_once_and_lets_one_trial_through_per_interval_while_the_probe_cannot_tell() {
        let health = StoreHealth::new("TEST");
        assert!(health.admit().is_ok());
        health.record(Err(PublishFailure::Timeout));
        assert_eq!(health.failing().map(|f| f.reason), Some(PublishFailure::Timeout));
        assert_eq!(health.admit(), Err(PublishFailure::Timeout), "refused at once within the interval");
        // Once the interval passed, exactly one request goes through as the trial.
        open_trial(&health);
        assert_eq!(health.admit(), Ok(()));
        assert_eq!(health.admit(), Err(PublishFailure::Timeout));
        // A probe that cannot tell keeps the reason and the trials going.
        health.probed(Err(PublishFailure::Failed));
        assert_eq!(health.failing().map(|f| f.reason), Some(PublishFailure::Timeout));
        open_trial(&health);
        assert_eq!(health.admit(), Ok(()));
        // A duplicate proves nothing; a stored event ends it.
        health.record(Ok(false));
        assert!(health.failing().is_some());
        health.record(Ok(true));
        assert!(health.failing().is_none());
        assert_eq!(health.admit(), Ok(()));
    }

    #[test]
    fn while_the_probe_sees_the_cause_no_request_goes_through_until_it_is_gone() {
        let health = StoreHealth::new("TEST");
        health.record(Err(PublishFailure::Timeout));
        let write = PublishFailure::StoreFull(StoreFull::WriteFailed);
        health.probed(Err(write));
        assert_eq!(health.failing().map(|f| f.reason), Some(write), "the probe's diagnosis is shown");
        open_trial(&health);
        assert_eq!(health.admit(), Err(write), "no trial");
        // A publish still in flight from before times out: the diagnosis stays.
        health.record(Err(PublishFailure::Timeout));
        assert_eq!(health.failing().map(|f| f.reason), Some(write));
        // A probe that cannot tell any more lets trials through again, keeping the diagnosis.
        health.probed(Err(PublishFailure::Timeout));
        assert_eq!(health.failing().map(|f| f.reason), Some(write));
        assert_eq!(health.admit(), Ok(()), "a trial");
        health.probed(Ok(()));
        assert!(health.failing().is_none());
        assert_eq!(health.admit(), Ok(()));
    }

    #[test]
    fn a_limit_the_server_reports_at_once_still_lets_requests_through() {
        let health = StoreHealth::new("TEST");
        let full = PublishFailure::StoreFull(StoreFull::StreamLimit);
        health.record(Err(full));
        health.probed(Err(full));
        assert_eq!(health.failing().map(|f| f.reason), Some(full), "readiness says so");
        assert_eq!(health.admit(), Ok(()), "JetStream's own answer is immediate and exact");
        assert_eq!(health.admit(), Ok(()));
    }

    #[test]
    fn only_storage_failures_and_timeouts_count() {
        let health = StoreHealth::new("TEST");
        for failure in [
            PublishFailure::TooLarge,
            PublishFailure::HeadersTooLarge,
            PublishFailure::Disconnected,
            PublishFailure::Failed,
        ] {
            health.record(Err(failure));
            assert!(health.failing().is_none(), "{failure:?}");
        }
        health.record(Err(PublishFailure::Timeout));
        // A later, more precise reason from a publish replaces it.
        let full = PublishFailure::StoreFull(StoreFull::StreamLimit);
        health.record(Err(full));
        assert_eq!(health.failing().map(|f| f.reason), Some(full));
    }
}
