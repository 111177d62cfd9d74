//! Replays: put a delivery back to `pending`, due now (one writer transaction, see
//! `Store::replay`), and wake its destination's scheduler. The store is the schedule, so a
//! committed replay cannot be lost, and concurrent replays of one delivery are serialised by the
//! single writer: one changes the state, the others find it pending.
//!
//! **Fresh schedule.** A replayed delivery gets the destination's full retry schedule again
//! (`attempt_base`); attempt numbers in the attempts table continue.
//!
//! **Rate limits.** `console.max_replay_rate` per second is a cap per *destination*, shared by
//! every replay path: single replays, replays of an event, and every bulk job at once (one
//! limiter per destination; sustained rate at most the cap, after a burst of one second's
//! worth), so six jobs aimed at one destination re-queue no more than one job could. A bulk job waits for its destination's turn (and paces
//! itself at its own `ratePerSecond` as well); a replay asked for by a caller waits at most
//! [`CALLER_WAIT`], then answers `RATE_LIMITED`. Replays asked for one by one are also limited
//! per caller to `max_replay_rate` per second (burst the same).
//!
//! **Bulk replays** select dead letters by filter (at most `console.max_bulk_replay`), then
//! replay them one by one at a capped rate in a background task that can be cancelled; progress
//! is kept in `bulk_replays`, and one audit row records who started it and how many.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{OptionalExtension, params, params_from_iter};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::types::{BulkReplay, DeadLetterFilter, Delivery, ReplayResult};
use crate::deliver::Destination;
use crate::model::{AuditAction, DeliveryId, UnixMs};
use crate::store::{AuditRow, ReplayOutcome, Store};

/// Size of a dry run's sample.
const SAMPLE: usize = 10;

/// How long a replay asked for by a caller waits for its destination's turn.
pub const CALLER_WAIT: Duration = Duration::from_secs(2);

struct Job {
    cancel: CancellationToken,
    finished: watch::Receiver<bool>,
}

/// Replays deliveries; owns the running bulk replays.
pub struct Replayer {
    store: Store,
    destinations: Arc<HashMap<String, Arc<Destination>>>,
    max_rate: u32,
    max_bulk: u32,
    jobs: Mutex<HashMap<i64, Job>>,
    shutdown: CancellationToken,
    per_caller: governor::DefaultKeyedRateLimiter<String>,
    /// `max_replay_rate` per destination across every replay path (keys: configured
    /// destinations only).
    per_destination: governor::DefaultKeyedRateLimiter<String>,
}

impl Replayer {
    /// Builds the replayer.
    pub fn new(
        store: Store,
        destinations: Arc<HashMap<String, Arc<Destination>>>,
        max_rate: u32,
        max_bulk: u32,
        shutdown: CancellationToken,
    ) -> Arc<Replayer> {
        let rate = NonZeroU32::new(max_rate).unwrap_or(NonZeroU32::MIN);
        let per_caller = governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(rate));
        let per_destination = governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(rate));
        Arc::new(Replayer {
            per_caller,
            per_destination,
            store,
            destinations,
            max_rate,
            max_bulk,
            jobs: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// Admits one caller-requested replay under the per-caller rate limit.
    ///
    /// # Errors
    ///
    /// [`ApiError::RateLimited`] when the caller is over the limit.
    pub fn admit(&self, actor: &str) -> Result<(), ApiError> {
        let admitted = self.per_caller.check_key(&actor.to_owned()).is_ok();
        self.per_caller.retain_recent();
        if admitted { Ok(()) } else { Err(ApiError::RateLimited) }
    }

    /// Replays one delivery on behalf of `actor` (audited when `audit`), asked for by a caller:
    /// waits at most [`CALLER_WAIT`] for the destination's turn.
    ///
    /// # Errors
    ///
    /// Unknown delivery, the destination's replay rate spent, a destination no longer
    /// configured, the database failing.
    pub async fn replay(&self, delivery_id: &str, actor: &str, audit: bool) -> Result<ReplayResult, ApiError> {
        let id = delivery_id.to_owned();
        let destination: Option<String> = self
            .store
            .read(move |c| {
                c.query_row("SELECT destination FROM deliveries WHERE id = ?1", [id], |r| r.get(0)).optional()
            })
            .await?;
        let destination = destination.ok_or(ApiError::NotFound)?;
        if tokio::time::timeout(CALLER_WAIT, self.turn(&destination)).await.is_err() {
            return Err(ApiError::RateLimited);
        }
        self.replay_now(delivery_id, actor, audit).await
    }

    /// Waits for `destination`'s next replay slot (at once for a destination that is no longer
    /// configured: its replay fails anyway, and no limiter key is made for it).
    async fn turn(&self, destination: &str) {
        if let Some((name, _)) = self.destinations.get_key_value(destination) {
            self.per_destination.until_key_ready(name).await;
        }
    }

    /// Replays one delivery now (the caller took the destination's turn).
    async fn replay_now(&self, delivery_id: &str, actor: &str, audit: bool) -> Result<ReplayResult, ApiError> {
        let outcome =
            self.store.replay(DeliveryId::from_stored(delivery_id.to_owned()), actor.to_owned(), audit).await?;
        let (destination, result, enqueued) = match outcome {
            ReplayOutcome::NotFound => return Err(ApiError::NotFound),
            ReplayOutcome::AlreadyPending { destination, rescheduled } => {
                (destination, if rescheduled { "rescheduled" } else { "already_pending" }, false)
            }
            ReplayOutcome::Replayed { destination } => (destination, "enqueued", true),
        };
        let Some(runtime) = self.destinations.get(&destination) else {
            // Left pending: if the destination comes back, its scheduler finds it due.
            return Err(ApiError::Invalid(format!("destination `{destination}` is no longer configured")));
        };
        runtime.wake();
        tracing::info!(delivery_id, result, "delivery replayed");
        Ok(ReplayResult { delivery_id: delivery_id.into(), result: result.into(), enqueued })
    }

    /// Closes bulk replays left `running` by a previous process as `cancelled` (their remaining
    /// deliveries are still dead letters and can be replayed again). Call before serving.
    pub async fn close_interrupted_bulk_replays(&self) {
        let interrupted = self
            .store
            .write(|c| {
                c.execute(
                    "UPDATE bulk_replays SET status = 'cancelled', finished_at_ms = ?1 WHERE status = 'running'",
                    [UnixMs::now().0],
                )
            })
            .await;
        match interrupted {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "bulk replays interrupted by a restart were closed as cancelled"),
            Err(error) => tracing::warn!(%error, "cannot close interrupted bulk replays"),
        }
    }

    /// Dead letters matching `filter`: (count, first few).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn preview(&self, filter: &DeadLetterFilter) -> Result<(i64, Vec<Delivery>), ApiError> {
        let w = filter.to_where();
        let result = self
            .store
            .read(move |c| {
                let count: i64 = c.query_row(
                    &format!("SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_rowid {}", w.sql()),
                    params_from_iter(w.params.iter()),
                    |r| r.get(0),
                )?;
                let sql = format!(
                    "SELECT {} FROM deliveries d JOIN events e ON e.id = d.event_rowid {} ORDER BY d.rowid LIMIT {SAMPLE}",
                    Delivery::COLUMNS,
                    w.sql()
                );
                let mut statement = c.prepare(&sql)?;
                let sample = statement.query_map(params_from_iter(w.params.iter()), Delivery::from_row)?;
                Ok((count, sample.collect::<Result<Vec<_>, _>>()?))
            })
            .await?;
        Ok(result)
    }

    /// Starts a bulk replay of the dead letters matching `filter`, at most `rate` per second
    /// (capped by `console.max_replay_rate`).
    ///
    /// # Errors
    ///
    /// Too many matches, or the database failing.
    pub async fn start_bulk(
        self: &Arc<Self>,
        filter: DeadLetterFilter,
        rate: Option<i32>,
        actor: String,
    ) -> Result<BulkReplay, ApiError> {
        let rate = match rate {
            None => self.max_rate,
            Some(rate) if rate >= 1 => u32::try_from(rate).unwrap_or(u32::MAX).min(self.max_rate),
            Some(_) => return Err(ApiError::Invalid("ratePerSecond must be at least 1".into())),
        };
        let w = filter.to_where();
        let limit = i64::from(self.max_bulk) + 1;
        let ids: Vec<(String, String)> = self
            .store
            .read(move |c| {
                let sql = format!(
                    "SELECT d.id, d.destination FROM deliveries d JOIN events e ON e.id = d.event_rowid {}
                     ORDER BY d.rowid LIMIT {limit}",
                    w.sql()
                );
                let mut statement = c.prepare(&sql)?;
                let rows = statement.query_map(params_from_iter(w.params.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        if ids.len() > self.max_bulk as usize {
            return Err(ApiError::Invalid(format!(
                "more than {} dead letters match; narrow the filter",
                self.max_bulk
            )));
        }
        let filter_json = serde_json::to_string(&filter).unwrap_or_else(|_| "{}".into());
        let total = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let (job_actor, job_filter) = (actor.clone(), filter_json.clone());
        let job = self
            .store
            .write(move |c| {
                let now = UnixMs::now().0;
                c.execute(
                    "INSERT INTO bulk_replays (actor, filter_json, rate_per_second, total, status, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                    params![job_actor, job_filter, rate, total, now],
                )?;
                let id = c.last_insert_rowid();
                AuditRow {
                    at: UnixMs(now),
                    actor: &job_actor,
                    action: AuditAction::BulkReplay,
                    target: &format!("bulk_replay:{id}"),
                    count: total,
                    detail: Some(&job_filter),
                }
                .write(c)?;
                c.query_row(
                    &format!("SELECT {} FROM bulk_replays WHERE id = ?1", BulkReplay::COLUMNS),
                    [id],
                    BulkReplay::from_row,
                )
            })
            .await?;
        let job_id: i64 = job.id.parse().unwrap_or_default();
        let cancel = self.shutdown.child_token();
        let (done_tx, finished) = watch::channel(false);
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job_id, Job { cancel: cancel.clone(), finished });
        }
        let replayer = Arc::clone(self);
        tokio::spawn(async move {
            replayer.run_bulk(job_id, ids, rate, actor, cancel).await;
            if let Ok(mut jobs) = replayer.jobs.lock() {
                jobs.remove(&job_id);
            }
            let _ = done_tx.send(true);
        });
        Ok(job)
    }

    async fn run_bulk(
        &self,
        job_id: i64,
        ids: Vec<(String, String)>,
        rate: u32,
        actor: String,
        cancel: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut done, mut enqueued, mut failed) = (0i64, 0i64, 0i64);
        let mut status = "finished";
        for (id, destination) in ids {
            tokio::select! {
                biased;
                () = cancel.cancelled() => { status = "cancelled"; break; }
                _ = ticks.tick() => {}
            }
            // The destination's turn, shared with every other job and caller.
            tokio::select! {
                biased;
                () = cancel.cancelled() => { status = "cancelled"; break; }
                () = self.turn(&destination) => {}
            }
            match self.replay_now(&id, &format!("{actor} (bulk {job_id})"), false).await {
                Ok(result) => enqueued += i64::from(result.enqueued),
                Err(error) => {
                    failed += 1;
                    tracing::warn!(error = ?error, delivery_id = %id, job_id, "bulk replay item failed");
                }
            }
            done += 1;
            let progress = self
                .store
                .write(move |c| {
                    c.execute(
                        "UPDATE bulk_replays SET done = ?2, enqueued = ?3 WHERE id = ?1",
                        params![job_id, done, enqueued],
                    )
                })
                .await;
            if let Err(error) = progress {
                tracing::warn!(%error, job_id, "cannot record bulk replay progress");
            }
        }
        if status == "finished" && failed > 0 && enqueued == 0 {
            status = "failed";
        }
        let result = self
            .store
            .write(move |c| {
                c.execute(
                    "UPDATE bulk_replays SET done = ?2, enqueued = ?3, status = ?4, finished_at_ms = ?5 WHERE id = ?1",
                    params![job_id, done, enqueued, status, UnixMs::now().0],
                )
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, job_id, "cannot record the end of a bulk replay");
        }
        tracing::info!(job_id, done, enqueued, failed, status, "bulk replay ended");
    }

    /// Cancels a running bulk replay and waits (briefly) until it stopped.
    ///
    /// # Errors
    ///
    /// Unknown job, or the database failing.
    pub async fn cancel_bulk(&self, job_id: i64, actor: String) -> Result<BulkReplay, ApiError> {
        let running = self.jobs.lock().ok().and_then(|jobs| {
            jobs.get(&job_id).map(|job| {
                job.cancel.cancel();
                job.finished.clone()
            })
        });
        let was_running = running_flag(running.is_some());
        if let Some(mut finished) = running {
            let _ = tokio::time::timeout(Duration::from_secs(10), finished.wait_for(|done| *done)).await;
        }
        let job = self
            .store
            .write(move |c| {
                let job = c
                    .query_row(
                        &format!("SELECT {} FROM bulk_replays WHERE id = ?1", BulkReplay::COLUMNS),
                        [job_id],
                        BulkReplay::from_row,
                    )
                    .optional()?;
                if job.is_some() {
                    AuditRow {
                        at: UnixMs::now(),
                        actor: &actor,
                        action: AuditAction::CancelBulkReplay,
                        target: &format!("bulk_replay:{job_id}"),
                        count: 1,
                        detail: Some(was_running),
                    }
                    .write(c)?;
                }
                Ok(job)
            })
            .await?;
        job.ok_or(ApiError::NotFound)
    }
}

fn running_flag(running: bool) -> &'static str {
    if running { "was running" } else { "was not running" }
}
