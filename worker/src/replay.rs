//! Replays: put a delivery back to `pending`, due now (one writer transaction, see
//! `Store::replay`), and wake its destination's scheduler. The store is the schedule, so a
//! committed replay cannot be lost, and concurrent replays of one delivery are serialised by the
//! single writer: one changes the state, the others find it pending.
//!
//! **Fresh schedule.** A replayed delivery gets the destination's full retry schedule again
//! (`attempt_base`); attempt numbers in the attempts table continue.
//!
//! **Replays to a destination** make a new delivery of an event to a configured destination,
//! routed there or not (its own id, so its own `Idempotency-Key`; its lineage kept), and wake
//! that destination; the delivery they start from is not touched.
//!
//! **Which config.** A caller's replay says which routing config its attempts use
//! ([`ReplayConfig`]): the current one, or the one its event was routed with ("as received": the
//! event's recorded version, kept in the delivery, whose transform the attempts then run; an
//! event recorded without a version is refused, [`ReplayError::NoRecordedConfig`], nothing
//! replayed). A bulk replay asks once for all its items; an item whose event has no version is
//! then left as it is and counted as failed.
//!
//! **Rate limits.** `console.max_replay_rate` per second is a cap per *destination*, shared by
//! every replay path: single replays, replays of an event, replays to a destination, and every
//! bulk job at once (one
//! limiter per destination; sustained rate at most the cap, after a burst of one second's
//! worth), so six jobs aimed at one destination re-queue no more than one job could. A bulk job
//! waits for its destination's turn (and paces itself at its own `ratePerSecond` as well); a
//! replay asked for by a caller waits at most [`CALLER_WAIT`], then fails
//! [`ReplayError::RateLimited`]. Replays asked for by a caller are also limited per caller to
//! `max_replay_rate` per second (burst the same).
//!
//! **Bulk replays** select dead letters (at most `console.max_bulk_replay`), then replay them
//! one by one at a capped rate in a background task of the worker whose API started them (each
//! only while it is still a dead letter: one replayed or dismissed meanwhile is left alone);
//! progress is kept in the job's row, and one audit row records who started it and how many.
//!
//! **Several workers on one store.** The job's row is its truth, not the task: the runner holds
//! a lease on the row ([`BULK_LEASE`]) and renews it before every replay and, while it waits for
//! its pace or its destination's turn, at least every [`BULK_RENEW_EVERY`]. A cancel from any
//! worker marks the row `cancelled`; the runner learns it at its next renewal (the store answers
//! "no longer running") and stops before replaying another delivery. A runner whose worker died
//! stops renewing: the holder of the periodic jobs closes the job as `cancelled` once its lease
//! lapsed ([`close_expired_bulk_replays`]). Worker clocks must agree to well within
//! `BULK_LEASE - BULK_RENEW_EVERY`.
//!
//! A service of its own, not part of the API: it speaks the store's selections and rows, and
//! the API maps its [`ReplayError`] to GraphQL errors.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deliver::Destination;
use crate::model::{BulkReplayId, BulkReplayStatus, ConfigVersion, DeliveryId, EventRowId, ReplayConfig, UnixMs};
use crate::store::{
    BulkProgress, BulkReplayRow, DeadLetterSelection, DeliveryRow, NewBulkReplay, ReplayOrigin, ReplayOutcome,
    ReplayScope, ReplayedTo, Store, StoreError,
};

/// Size of a preview's sample.
const SAMPLE: usize = 10;

/// How long a bulk replay's dry run can be confirmed.
pub const PREVIEW_VALID_FOR: Duration = Duration::from_secs(15 * 60);

/// How long a replay asked for by a caller waits for its destination's turn.
pub const CALLER_WAIT: Duration = Duration::from_secs(2);

/// How long a running bulk replay's lease lasts: a job whose runner has not renewed it for
/// that long is taken for interrupted (its worker died or stalled) and closed.
pub const BULK_LEASE: Duration = Duration::from_secs(30);

/// How long a bulk replay's runner goes at most without renewing its lease (it also renews
/// before every replay): a third of the lease, so two renewals may fail or come late.
pub const BULK_RENEW_EVERY: Duration = Duration::from_secs(10);

/// Why a replay failed.
///
/// Deliberately not `Display`: async-graphql turns anything displayable into an error by its
/// text alone, which would skip the API's one mapping of these (`api::error`).
#[derive(Debug)]
pub enum ReplayError {
    /// No such delivery or bulk replay job.
    NotFound,
    /// The caller asked for too many replays, or the destination's replay rate stayed spent.
    RateLimited,
    /// The delivery's destination is no longer configured (the delivery is left pending: if
    /// the destination comes back, its scheduler finds it due).
    DestinationGone(String),
    /// A replay to a destination that is not configured.
    UnknownDestination(String),
    /// More dead letters match a bulk replay than `console.max_bulk_replay`.
    TooManyMatches(u32),
    /// A bulk replay's rate below one per second.
    BadRate,
    /// A bulk replay confirmed with a preview token that is unknown or expired.
    PreviewUnknown,
    /// A bulk replay confirmed with a filter other than its preview's.
    PreviewFilterChanged,
    /// The previewed dead letters are no longer all there (some were replayed or dismissed
    /// meanwhile): (previewed, still selected). Nothing was replayed; preview again.
    SelectionChanged(i64, i64),
    /// A replay "as received" of an event recorded without a config version (before versions
    /// were kept, or by a worker of the version before): nothing was replayed.
    NoRecordedConfig,
    /// The database failed.
    Store(StoreError),
}

impl From<StoreError> for ReplayError {
    fn from(error: StoreError) -> Self {
        ReplayError::Store(error)
    }
}

/// What replaying one delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayEffect {
    /// Set back to pending, due now.
    Enqueued,
    /// It was pending, waiting for a later retry: now due at once.
    Rescheduled,
    /// It was pending and an attempt holds it now, or it was due already: nothing changed.
    AlreadyPending,
}

impl ReplayEffect {
    /// Its label (the API's `ReplayResult.result`, and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayEffect::Enqueued => "enqueued",
            ReplayEffect::Rescheduled => "rescheduled",
            ReplayEffect::AlreadyPending => "already_pending",
        }
    }
}

/// One delivery replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// What the replay did.
    pub effect: ReplayEffect,
    /// The config its attempts use: `None`, the current one; else the event's recorded version.
    pub config_version: Option<ConfigVersion>,
}

/// A bulk replay to start (see [`Replayer::start_bulk`]).
#[derive(Debug, Clone)]
pub struct BulkRequest {
    /// Which dead letters.
    pub selection: DeadLetterSelection,
    /// The selection as the caller gave it, JSON: kept in the job's row and its audit row.
    pub filter_json: String,
    /// Per second; `None`: `console.max_replay_rate`, and never more than that.
    pub rate_per_second: Option<i32>,
    /// Who asks.
    pub actor: String,
    /// The dry run's token (see [`Replayer::preview`]): the job replays exactly the dead
    /// letters it counted. `None`: what the selection takes now.
    pub preview_token: Option<String>,
    /// The config each item is replayed with (an item whose event has no recorded version,
    /// asked `AsReceived`, is not replayed: counted as failed).
    pub config: ReplayConfig,
}

/// A bulk replay's dry run (see [`Replayer::preview`]).
#[derive(Debug, Clone)]
pub struct BulkPreviewed {
    /// Dead letters it selects.
    pub count: i64,
    /// The first few of them.
    pub sample: Vec<DeliveryRow>,
    /// Confirms exactly this selection (for [`PREVIEW_VALID_FOR`]).
    pub token: String,
}

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
    jobs: Mutex<HashMap<BulkReplayId, Job>>,
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
    fn admit(&self, actor: &str) -> Result<(), ReplayError> {
        let admitted = self.per_caller.check_key(&actor.to_owned()).is_ok();
        self.per_caller.retain_recent();
        if admitted { Ok(()) } else { Err(ReplayError::RateLimited) }
    }

    /// Replays one delivery asked for by `actor` (audited): under the caller's rate limit, and
    /// waiting at most [`CALLER_WAIT`] for the destination's turn.
    ///
    /// # Errors
    ///
    /// The caller over its limit, an unknown delivery, the destination's replay rate spent, a
    /// destination no longer configured, the database failing.
    pub async fn replay(
        &self,
        delivery_id: DeliveryId,
        actor: &str,
        config: ReplayConfig,
    ) -> Result<Replayed, ReplayError> {
        self.admit(actor)?;
        self.replay_for_caller(delivery_id, actor, config).await
    }

    /// Replays every dead-lettered delivery of one event, by destination, asked for by `actor`
    /// (one admission under the caller's rate limit; each delivery audited).
    ///
    /// # Errors
    ///
    /// As [`Replayer::replay`], for the first delivery that fails (the ones before it stay
    /// replayed).
    /// The deliveries share their event, so "as received" of an event recorded without a version
    /// fails at the first one, before anything is replayed.
    pub async fn replay_event(
        &self,
        event: EventRowId,
        actor: &str,
        config: ReplayConfig,
    ) -> Result<Vec<Replayed>, ReplayError> {
        self.admit(actor)?;
        let ids = self.store.dead_letters_of_event(event).await?;
        let mut replayed = Vec::with_capacity(ids.len());
        for delivery_id in ids {
            replayed.push(self.replay_for_caller(delivery_id, actor, config).await?);
        }
        Ok(replayed)
    }

    /// Replays an event to `destination` (configured; the event routed there or not) as a new
    /// delivery, asked for by `actor` (audited, with its lineage: see
    /// [`Store::replay_to_destination`]). Limited like every replay a caller asks for: the
    /// caller's rate, then at most [`CALLER_WAIT`] for the destination's turn.
    ///
    /// # Errors
    ///
    /// The caller over its limit, a destination not configured, the destination's replay rate
    /// spent, an unknown delivery or event, the database failing.
    pub async fn replay_to(
        &self,
        origin: ReplayOrigin,
        destination: &str,
        actor: &str,
        config: ReplayConfig,
    ) -> Result<DeliveryRow, ReplayError> {
        self.admit(actor)?;
        let Some(runtime) = self.destinations.get(destination) else {
            return Err(ReplayError::UnknownDestination(destination.to_owned()));
        };
        if tokio::time::timeout(CALLER_WAIT, self.turn(destination)).await.is_err() {
            return Err(ReplayError::RateLimited);
        }
        let row =
            match self.store.replay_to_destination(origin, destination.to_owned(), actor.to_owned(), config).await? {
                ReplayedTo::Done(row) => *row,
                ReplayedTo::NotFound => return Err(ReplayError::NotFound),
                ReplayedTo::NoRecordedConfig => return Err(ReplayError::NoRecordedConfig),
            };
        runtime.wake();
        tracing::info!(
            delivery_id = row.id.as_str(),
            replay_of = row.replay_of.as_ref().map(DeliveryId::as_str),
            destination,
            config_version = row.config_version.as_ref().map(ConfigVersion::as_str),
            "event replayed to a destination"
        );
        Ok(row)
    }

    /// One audited replay for a caller: waits at most [`CALLER_WAIT`] for the destination's turn.
    async fn replay_for_caller(
        &self,
        delivery_id: DeliveryId,
        actor: &str,
        config: ReplayConfig,
    ) -> Result<Replayed, ReplayError> {
        let destination = self.store.delivery_destination(delivery_id.clone()).await?.ok_or(ReplayError::NotFound)?;
        if tokio::time::timeout(CALLER_WAIT, self.turn(&destination)).await.is_err() {
            return Err(ReplayError::RateLimited);
        }
        // An operator's replay is never skipped (only a bulk item is, see `ReplayScope`).
        self.replay_now(delivery_id, actor, ReplayScope::Operator, config).await?.ok_or(ReplayError::NotFound)
    }

    /// Waits for `destination`'s next replay slot (at once for a destination that is no longer
    /// configured: its replay fails anyway, and no limiter key is made for it).
    async fn turn(&self, destination: &str) {
        if let Some((name, _)) = self.destinations.get_key_value(destination) {
            self.per_destination.until_key_ready(name).await;
        }
    }

    /// Replays one delivery now (the caller took the destination's turn); `None` when it was a
    /// bulk item that is no longer a dead letter (left alone).
    async fn replay_now(
        &self,
        delivery_id: DeliveryId,
        actor: &str,
        scope: ReplayScope,
        config: ReplayConfig,
    ) -> Result<Option<Replayed>, ReplayError> {
        let outcome = self.store.replay(delivery_id.clone(), actor.to_owned(), scope, config).await?;
        let (destination, effect, config_version) = match outcome {
            ReplayOutcome::NotFound => return Err(ReplayError::NotFound),
            ReplayOutcome::Skipped { status } => {
                tracing::info!(
                    delivery_id = delivery_id.as_str(),
                    status = status.as_str(),
                    "bulk replay item left alone: no longer a dead letter"
                );
                return Ok(None);
            }
            ReplayOutcome::NoRecordedConfig => return Err(ReplayError::NoRecordedConfig),
            ReplayOutcome::AlreadyPending { destination, rescheduled, config_version } => (
                destination,
                if rescheduled { ReplayEffect::Rescheduled } else { ReplayEffect::AlreadyPending },
                config_version,
            ),
            ReplayOutcome::Replayed { destination, config_version } => {
                (destination, ReplayEffect::Enqueued, config_version)
            }
        };
        let Some(runtime) = self.destinations.get(&destination) else {
            return Err(ReplayError::DestinationGone(destination));
        };
        runtime.wake();
        tracing::info!(
            delivery_id = delivery_id.as_str(),
            result = effect.as_str(),
            config_version = config_version.as_ref().map(ConfigVersion::as_str),
            "delivery replayed"
        );
        Ok(Some(Replayed { delivery_id, effect, config_version }))
    }

    /// Closes bulk replays left `running` by a worker that is gone as `cancelled` (their
    /// remaining deliveries are still dead letters and can be replayed again): on SQLite every
    /// running job (a previous process's), on PostgreSQL those whose lease lapsed. Call before
    /// serving.
    pub async fn close_interrupted_bulk_replays(&self) {
        match self.store.close_interrupted_bulk_replays().await {
            Ok(closed) if closed.is_empty() => {}
            Ok(closed) => tracing::warn!(
                jobs = ?job_ids(&closed),
                "bulk replays interrupted by a restart were closed as cancelled"
            ),
            Err(error) => tracing::warn!(%error, "cannot close interrupted bulk replays"),
        }
    }

    /// A bulk replay's dry run: the dead letters `selection` takes now (count, first few),
    /// kept in the store under a token; confirming with it replays exactly those (dead letters
    /// arriving later are not part of it). Kept in the store, not signed with a process key, so
    /// any worker serving the API on the same database can confirm it.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn preview(
        &self,
        selection: DeadLetterSelection,
        filter_json: String,
        actor: &str,
    ) -> Result<BulkPreviewed, ReplayError> {
        let expires_at = UnixMs::now().plus(PREVIEW_VALID_FOR);
        let kept = self.store.create_bulk_preview(selection.clone(), filter_json, actor.to_owned(), expires_at).await?;
        let sample = match kept.max_updated_at {
            Some(bound) => self.store.preview_dead_letters(selection, Some(bound), SAMPLE).await?.1,
            None => Vec::new(),
        };
        Ok(BulkPreviewed { count: kept.total, sample, token: kept.token })
    }

    /// Starts a bulk replay of the dead letters `request` selects, at most its rate per second
    /// (capped by `console.max_replay_rate`).
    ///
    /// # Errors
    ///
    /// A rate below one, too many matches, a preview token that no longer stands (see
    /// [`BulkRequest::preview_token`]), or the database failing.
    pub async fn start_bulk(
        self: &Arc<Self>,
        request: BulkRequest,
    ) -> Result<(BulkReplayRow, Vec<DeliveryRow>), ReplayError> {
        let BulkRequest { selection, filter_json, rate_per_second, actor, preview_token, config } = request;
        let rate = match rate_per_second {
            None => self.max_rate,
            Some(rate) if rate >= 1 => u32::try_from(rate).unwrap_or(u32::MAX).min(self.max_rate),
            Some(_) => return Err(ReplayError::BadRate),
        };
        // One more than allowed, to know whether the selection is too large.
        let limit = self.max_bulk as usize + 1;
        let mut seen_until = None;
        let ids = match preview_token {
            None => self.store.select_dead_letters(selection.clone(), None, limit).await?,
            Some(token) => {
                let preview = self.store.bulk_preview(token).await?.ok_or(ReplayError::PreviewUnknown)?;
                if preview.filter_json != filter_json {
                    return Err(ReplayError::PreviewFilterChanged);
                }
                // Only dead letters the preview saw: none newer than its newest.
                seen_until = preview.max_updated_at;
                let ids = match seen_until {
                    Some(bound) => self.store.select_dead_letters(selection.clone(), Some(bound), limit).await?,
                    None => Vec::new(),
                };
                let still = i64::try_from(ids.len()).unwrap_or(i64::MAX);
                if still != preview.total {
                    return Err(ReplayError::SelectionChanged(preview.total, still));
                }
                ids
            }
        };
        if ids.len() > self.max_bulk as usize {
            return Err(ReplayError::TooManyMatches(self.max_bulk));
        }
        // The first few, as the job finds them (before it replays any).
        let sample = if ids.is_empty() {
            Vec::new()
        } else {
            self.store.preview_dead_letters(selection, seen_until, SAMPLE).await?.1
        };
        let total = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let job = self
            .store
            .create_bulk_replay(NewBulkReplay {
                actor: actor.clone(),
                filter_json,
                rate_per_second: rate,
                total,
                lease_until: UnixMs::now().plus(BULK_LEASE),
            })
            .await?;
        let job_id = job.id;
        let cancel = self.shutdown.child_token();
        let (done_tx, finished) = watch::channel(false);
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job_id, Job { cancel: cancel.clone(), finished });
        }
        let replayer = Arc::clone(self);
        tokio::spawn(async move {
            replayer.run_bulk(job_id, ids, rate, actor, config, cancel).await;
            if let Ok(mut jobs) = replayer.jobs.lock() {
                jobs.remove(&job_id);
            }
            let _ = done_tx.send(true);
        });
        Ok((job, sample))
    }

    async fn run_bulk(
        &self,
        job_id: BulkReplayId,
        ids: Vec<(DeliveryId, String)>,
        rate: u32,
        actor: String,
        config: ReplayConfig,
        cancel: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress = BulkProgress::default();
        let mut failed = 0i64;
        let mut status = BulkReplayStatus::Finished;
        let item_actor = format!("{actor} (bulk {})", job_id.0);
        // Created with a lease of `BULK_LEASE` just now.
        let mut renew_at = Instant::now() + BULK_RENEW_EVERY;
        for (id, destination) in ids {
            // The job's own pace, then the destination's turn (shared with every other job and
            // caller); the lease is renewed meanwhile when that takes long.
            let turn = async {
                ticks.tick().await;
                self.turn(&destination).await;
            };
            if !self.hold_while(job_id, progress, &mut renew_at, &cancel, turn).await {
                status = BulkReplayStatus::Cancelled;
                break;
            }
            // Renewed right before the replay: a cancel committed by any worker before this
            // write stops the job before it replays another delivery.
            if !self.renew(job_id, progress, &mut renew_at).await {
                status = BulkReplayStatus::Cancelled;
                break;
            }
            let delivery_id = id.clone();
            match self.replay_now(id, &item_actor, ReplayScope::BulkItem, config).await {
                Ok(replayed) => {
                    progress.enqueued += i64::from(replayed.is_some_and(|r| r.effect == ReplayEffect::Enqueued));
                }
                Err(error) => {
                    failed += 1;
                    tracing::warn!(
                        ?error,
                        delivery_id = delivery_id.as_str(),
                        job_id = job_id.0,
                        "bulk replay item failed"
                    );
                }
            }
            progress.done += 1;
        }
        if status == BulkReplayStatus::Finished && failed > 0 && progress.enqueued == 0 {
            status = BulkReplayStatus::Failed;
        }
        // A job cancelled or closed in the store keeps that status: this records the progress.
        if let Err(error) = self.store.finish_bulk_replay(job_id, progress, status).await {
            tracing::error!(%error, job_id = job_id.0, "cannot record the end of a bulk replay");
        }
        tracing::info!(
            job_id = job_id.0,
            done = progress.done,
            enqueued = progress.enqueued,
            failed,
            status = status.as_str(),
            "bulk replay ended"
        );
    }

    /// Waits for `ready`, renewing the job's lease whenever `renew_at` comes first. False when
    /// the job must stop: cancelled here (or shutting down), or no longer running in the store.
    async fn hold_while(
        &self,
        job_id: BulkReplayId,
        progress: BulkProgress,
        renew_at: &mut Instant,
        cancel: &CancellationToken,
        ready: impl Future<Output = ()>,
    ) -> bool {
        let mut ready = std::pin::pin!(ready);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return false,
                () = &mut ready => return true,
                () = tokio::time::sleep_until(*renew_at) => {
                    if !self.renew(job_id, progress, renew_at).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Records `progress` and renews the job's lease; false when the store says the job is no
    /// longer running (cancelled from any worker, or closed because its lease lapsed). A failed
    /// write keeps the job going: the next one tells, and until then nobody else replays its
    /// deliveries (a job is never resumed by another worker), so going on risks nothing.
    async fn renew(&self, job_id: BulkReplayId, progress: BulkProgress, renew_at: &mut Instant) -> bool {
        *renew_at = Instant::now() + BULK_RENEW_EVERY;
        match self.store.bulk_replay_progress(job_id, progress, UnixMs::now().plus(BULK_LEASE)).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(job_id = job_id.0, done = progress.done, "bulk replay cancelled in the store: stopping");
                false
            }
            Err(error) => {
                tracing::warn!(%error, job_id = job_id.0, "cannot record bulk replay progress");
                true
            }
        }
    }

    /// Cancels a bulk replay from whichever worker serves the request: the store marks it
    /// `cancelled` if it is running (audited whether or not it was), and its runner stops at
    /// its next renewal wherever it runs. When this worker runs it, it is stopped at once and
    /// waited for (briefly), so the answer shows its last progress.
    ///
    /// # Errors
    ///
    /// Unknown job, or the database failing.
    pub async fn cancel_bulk(&self, job_id: BulkReplayId, actor: String) -> Result<BulkReplayRow, ReplayError> {
        let (job, was_running) = self.store.cancel_bulk_replay(job_id, actor).await?.ok_or(ReplayError::NotFound)?;
        tracing::info!(job_id = job_id.0, was_running, "bulk replay cancelled");
        let local = self.jobs.lock().ok().and_then(|jobs| {
            jobs.get(&job_id).map(|job| {
                job.cancel.cancel();
                job.finished.clone()
            })
        });
        let Some(mut finished) = local else {
            return Ok(job);
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), finished.wait_for(|done| *done)).await;
        Ok(self.store.bulk_replay(job_id).await?.unwrap_or(job))
    }
}

/// Closes the bulk replays whose lease lapsed (their worker died or stalled) as `cancelled`,
/// and says which. For the holder of the periodic jobs.
pub async fn close_expired_bulk_replays(store: &Store) {
    match store.close_expired_bulk_replays(UnixMs::now()).await {
        Ok(closed) if closed.is_empty() => {}
        Ok(closed) => tracing::warn!(
            jobs = ?job_ids(&closed),
            "bulk replays whose worker stopped renewing them were closed as cancelled"
        ),
        Err(error) => tracing::warn!(%error, "cannot close interrupted bulk replays"),
    }
}

/// Job ids as numbers, for logs.
fn job_ids(jobs: &[BulkReplayId]) -> Vec<i64> {
    jobs.iter().map(|job| job.0).collect()
}
