//! Delivery to one destination: its own scheduler, concurrency, rate limit and circuit breaker,
//! so a slow or dead destination never delays another (no head-of-line blocking).
//!
//! **The store schedules.** Where a delivery stands and when it is next due live in the store
//! (see `store`'s module docs), not in a parked broker message. Each destination runs two
//! scheduler loops over the store's due-time index: one for first attempts (fed at once by the
//! recording loop, which hands over the deliveries it just recorded, already claimed), one for
//! retries. Every attempt runs under a lease with a fencing token; its result is recorded only
//! while the token is still the delivery's. A lost wake-up, an expired lease or a stalled
//! process can delay a delivery, never drop it: whatever is past due with no live lease is
//! claimed again (counted in `inlet_worker_deliveries_restarted_total` and logged).
//!
//! **Separate capacity.** First attempts may use all `concurrency` slots; retries at most half
//! of them (rounded up: with `concurrency = 1` they share the one slot), so the rest are always
//! free for fresh events, and a class of events that always fails cannot starve the others. A
//! retry holds no slot while it waits, and a retry that fails again does not count towards
//! opening the breaker (first attempts and probes do).
//!
//! **Back-pressure is not failure.** A 429 neither opens the breaker nor counts against it; its
//! `Retry-After` pauses the whole destination (as asked) and schedules that delivery's retry.
//!
//! **Attempt time.** An attempt is timed from when it was sent. When the process was stalled
//! (stopped, starved) past the deadline, an answer that arrived meanwhile is still read before
//! the attempt is called a timeout.
//!
//! **Transforms run at attempt time.** A route's `transform` reshapes the body of each attempt,
//! on the transform pool (`programs`), so the stored body stays the original and a replay runs
//! the transform again. A transform that fails dead-letters the delivery (`transform_failed`,
//! its error kept as the delivery's last error); nothing is sent.
//!
//! **Which routes' transform.** A delivery runs the transform of the worker's current routes,
//! unless a replay "as received" gave it its event's config version: then that version's routes
//! decide, compiled from the version's stored snapshot the first time one of its deliveries is
//! attempted (through the config's bounded compile path, off the async runtime) and kept for the
//! next ones (at most [`CACHED_VERSIONS`] versions). A snapshot that is missing or no longer
//! compiles dead-letters the delivery `transform_failed`, naming the version and why.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use inlet_shared::config::DestinationConfig;
use inlet_shared::otel::{self, Span, SpanKind, Tracing};
use inlet_shared::signature::sign;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::breaker::{Admission, Breaker, BreakerState};
use crate::metric_names;
use crate::model::{AttemptOutcome, ConfigVersion, DeadLetterReason, DeliveryId, DeliveryStatus, UnixMs};
use crate::ownership::placement::Holding;
use crate::programs::{TransformError, TransformPool, bounded};
use crate::pull::{FLOOR_MAX_AGE, RecordedFloor};
use crate::routes::{EventView, Router};
use crate::store::{
    AttemptRecord, AttemptSettled, ClaimDue, Claimed, DeliveryToSend, DueClass, Lease, NextStep, Store,
};

/// Longest `Retry-After` honoured for a delivery's retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest a destination's `Retry-After` pauses all of its attempts.
const MAX_PAUSE: Duration = Duration::from_secs(300);
/// Bytes of a response body kept with the attempt.
const SNIPPET_BYTES: usize = 512;
/// A lease outlasts the attempt's timeout by this much (waiting for a slot, the rate limiter,
/// recording the result).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// An attempt starts only with at least its timeout plus this much left on its lease; otherwise
/// the lease is renewed first.
const LEASE_SLACK: Duration = Duration::from_secs(5);
/// How often an idle scheduler looks at the store for due deliveries it was not told about
/// (replays, leases that expired, retries scheduled before a restart).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How soon a scheduler looks again when due ordered deliveries were held back only because an
/// earlier intake message was not recorded yet (usually a batch whose acks are on their way):
/// doubled at each such look, up to [`IDLE_POLL`].
const RECORDING_POLL: Duration = FLOOR_MAX_AGE;
/// A timer that fires this much after its deadline means the process was stalled.
const STALL_TOLERANCE: Duration = Duration::from_millis(250);
/// After a stall, how long an attempt past its deadline still waits for an answer that may
/// have arrived meanwhile.
const STALL_GRACE: Duration = Duration::from_secs(1);
/// Most deliveries handed over for their first attempt and waiting in memory, per destination.
const FRESH_ENTRIES: usize = 1024;
/// Most body bytes waiting in memory that way, per destination.
const FRESH_BYTES: usize = 8 << 20;
/// Tries to record an attempt's result before leaving it to the lease's expiry.
const RECORD_TRIES: u32 = 3;

/// Everything about one destination at run time.
pub struct Destination {
    /// Its config.
    pub config: DestinationConfig,
    /// Circuit breaker.
    pub breaker: Breaker,
    limiter: Option<DefaultDirectRateLimiter>,
    client: reqwest::Client,
    metrics: metric_names::DestinationMetrics,
    concurrency: usize,
    /// Attempts in flight, both classes.
    slots: Arc<Semaphore>,
    /// Retries in flight (at most half the slots, rounded up).
    retry_slots: Arc<Semaphore>,
    /// Deliveries just recorded, claimed for their first attempt, waiting for a slot.
    fresh: Mutex<FreshQueue>,
    /// Set when the queue overflowed: until the store has no first attempt due any more, new
    /// deliveries go through the store too, so they are attempted in the order they were
    /// recorded instead of fresh ones overtaking a backlog forever.
    backlog: AtomicBool,
    /// Deliveries this process holds now (waiting or being attempted): claims skip them.
    held: Mutex<HashSet<DeliveryId>>,
    wake_first: Notify,
    wake_retry: Notify,
    /// The earliest retry this process scheduled, Unix ms, so a short delay is not rounded up
    /// to [`IDLE_POLL`].
    next_retry_ms: AtomicI64,
    /// No attempt before this (a 429's `Retry-After`).
    paused_until: Mutex<Option<Instant>>,
    /// Whether this worker holds the destination now: only the holder claims and attempts
    /// (several workers on one store; with SQLite the one worker always does).
    holding: Holding,
    /// The routes' transforms and the pool they run on; `None` in tests that need none.
    transforms: Option<Transforms>,
    /// `[telemetry.traces]`: one span per attempt, whose context the request carries on.
    tracing: Tracing,
    /// The URL's host and port, the attempt span's `server.address` and `server.port` (never
    /// the whole URL: its path or query may hold a credential).
    server: Option<(String, u16)>,
    /// With several workers recording (PostgreSQL) and a route ordering this destination's
    /// deliveries: how far the intake stream is recorded, which its ordered claims wait for.
    recorded: Option<Arc<RecordedFloor>>,
}

#[derive(Default)]
struct FreshQueue {
    entries: VecDeque<Claimed>,
    bytes: usize,
}

impl Destination {
    /// Builds the runtime for one destination, `concurrency` attempts at most in flight.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(
        config: DestinationConfig,
        concurrency: usize,
        holding: Holding,
        tracing: Tracing,
    ) -> Result<Destination, reqwest::Error> {
        let client = reqwest::Client::builder()
            // Receivers must not bounce deliveries to other hosts.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            // No client-wide timeout: `send` times the attempt itself (see the module docs).
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(USER_AGENT)
            .build()?;
        let limiter = config.rate_limit.and_then(|rate| {
            let per_second = NonZeroU32::new(rate.per_second)?;
            let burst = NonZeroU32::new(rate.burst())?;
            Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        let breaker = Breaker::new(config.breaker.failure_threshold, config.breaker.cooldown);
        metrics::gauge!(metric_names::BREAKER_STATE, "destination" => config.name.clone())
            .set(BreakerState::Closed.gauge());
        let metrics = metric_names::DestinationMetrics::new(&config.name);
        let concurrency = concurrency.max(1);
        let server = reqwest::Url::parse(&config.url)
            .ok()
            .and_then(|url| Some((url.host_str()?.to_owned(), url.port_or_known_default()?)));
        Ok(Destination {
            config,
            breaker,
            limiter,
            client,
            metrics,
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            retry_slots: Arc::new(Semaphore::new(concurrency.div_ceil(2))),
            fresh: Mutex::new(FreshQueue::default()),
            backlog: AtomicBool::new(false),
            held: Mutex::new(HashSet::new()),
            wake_first: Notify::new(),
            wake_retry: Notify::new(),
            next_retry_ms: AtomicI64::new(i64::MAX),
            paused_until: Mutex::new(None),
            holding,
            tracing,
            server,
            transforms: None,
            recorded: None,
        })
    }

    /// Claims this destination's ordered deliveries only once every earlier intake message is
    /// recorded (several workers recording: see `pull::RecordedFloor`).
    #[must_use]
    pub fn with_recording_gate(mut self, recorded: Arc<RecordedFloor>) -> Destination {
        self.recorded = Some(recorded);
        self
    }

    /// Runs the routes' transforms on this destination's attempts.
    #[must_use]
    pub fn with_transforms(mut self, transforms: Transforms) -> Destination {
        self.transforms = Some(transforms);
        self
    }

    /// What an attempt sends: the stored body, or what the route's transform makes of it (the
    /// current routes', or those of the delivery's config version: see the module docs).
    async fn outbound(&self, store: &Store, delivery: &DeliveryToSend) -> Result<Outbound, OutboundError> {
        let original = || Outbound { body: delivery.body.clone(), headers: Vec::new(), content_type: None };
        let Some(transforms) = &self.transforms else { return Ok(original()) };
        let router = match &delivery.config_version {
            Some(version) if version != transforms.router.version() => {
                transforms.versions.router(store, version).await?
            }
            _ => transforms.router.clone(),
        };
        if !router.has_transforms() {
            return Ok(original());
        }
        let event = EventView {
            source: &delivery.source,
            event_type: delivery.event_type.as_deref(),
            body: &delivery.body,
            headers_json: &delivery.headers_json,
        };
        let Some(transform) = router.transform_for(&event, &self.config.name) else {
            return Ok(original());
        };
        let output = transforms.pool.run(transform, delivery.body.clone()).await.map_err(|error| match error {
            TransformError::PoolClosed => OutboundError::NotNow,
            error => OutboundError::Failed(format!("transform failed: {error}")),
        })?;
        Ok(Outbound { body: Bytes::from(output.body), headers: output.headers, content_type: Some("application/json") })
    }

    /// How long a claim for one attempt lasts.
    pub fn lease(&self) -> Duration {
        self.config.timeout + STALL_GRACE + LEASE_MARGIN
    }

    /// Hands over deliveries just recorded (claimed by this process) for their first attempt;
    /// returns those that did not fit, whose leases the caller gives back to the store.
    pub fn offer_fresh(&self, deliveries: Vec<Claimed>) -> Vec<Claimed> {
        let capacity = self.fresh_capacity();
        let mut refused = Vec::new();
        let mut accepted = 0;
        if self.backlog.load(Ordering::SeqCst) {
            return deliveries;
        }
        if let Ok(mut queue) = self.fresh.lock() {
            for claimed in deliveries {
                let size = claimed.delivery.body.len();
                if !refused.is_empty() || queue.entries.len() >= capacity || queue.bytes + size > FRESH_BYTES {
                    self.backlog.store(true, Ordering::SeqCst);
                    refused.push(claimed);
                    continue;
                }
                self.hold(&claimed.delivery.delivery_id);
                queue.bytes += size;
                queue.entries.push_back(claimed);
                accepted += 1;
            }
        } else {
            refused = deliveries;
        }
        if accepted > 0 {
            self.wake_first.notify_one();
        }
        refused
    }

    /// Whether this worker holds the destination now (see [`Holding`]).
    pub fn is_held(&self) -> bool {
        self.holding.is_held()
    }

    /// Wakes the schedulers: something became due (a replay, released leases).
    pub fn wake(&self) {
        self.wake_first.notify_one();
        self.wake_retry.notify_one();
    }

    /// Deliveries waiting in memory for a first attempt: enough for the rate limit's next
    /// seconds, never more than the caps.
    fn fresh_capacity(&self) -> usize {
        let by_rate = self.config.rate_limit.map_or(FRESH_ENTRIES, |rate| {
            usize::try_from(rate.per_second).unwrap_or(usize::MAX).saturating_mul(10).max(self.concurrency)
        });
        by_rate.min(FRESH_ENTRIES)
    }

    fn take_fresh(&self, limit: usize) -> Vec<Claimed> {
        let Ok(mut queue) = self.fresh.lock() else { return Vec::new() };
        let n = limit.min(queue.entries.len());
        let taken: Vec<Claimed> = queue.entries.drain(..n).collect();
        queue.bytes -= taken.iter().map(|c| c.delivery.body.len()).sum::<usize>();
        taken
    }

    fn hold(&self, delivery_id: &DeliveryId) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(delivery_id.clone());
        }
    }

    fn release(&self, delivery_id: &DeliveryId) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(delivery_id);
        }
    }

    fn held(&self) -> Vec<DeliveryId> {
        self.held.lock().map(|held| held.iter().cloned().collect()).unwrap_or_default()
    }

    fn hint_retry(&self, at: UnixMs) {
        self.next_retry_ms.fetch_min(at.0, Ordering::SeqCst);
        self.wake_retry.notify_one();
    }

    fn pause(&self, wait: Duration) {
        if let Ok(mut paused) = self.paused_until.lock() {
            let until = Instant::now() + wait.min(MAX_PAUSE);
            *paused = Some(paused.map_or(until, |current| current.max(until)));
        }
    }

    fn paused_for(&self) -> Option<Duration> {
        let paused = self.paused_until.lock().ok()?;
        let until = (*paused)?;
        until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
    }

    fn breaker_changed(&self, state: Option<BreakerState>) {
        if let Some(state) = state {
            tracing::warn!(destination = %self.config.name, state = state.as_str(), "circuit breaker changed state");
            metrics::gauge!(metric_names::BREAKER_STATE, "destination" => self.config.name.clone()).set(state.gauge());
        }
    }
}

/// Runs one destination's schedulers until `shutdown`; attempts in flight finish first.
pub async fn run(destination: Arc<Destination>, store: Store, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    tokio::join!(
        schedule(Arc::clone(&destination), store.clone(), DueClass::First, shutdown.clone(), tracker.clone()),
        schedule(Arc::clone(&destination), store.clone(), DueClass::Retry, shutdown.clone(), tracker.clone()),
    );
    tracker.close();
    tracker.wait().await;
}

/// One class's scheduler loop: take a slot, the next due delivery, admission and a rate-limit
/// token, then start the attempt.
async fn schedule(
    destination: Arc<Destination>,
    store: Store,
    class: DueClass,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut waiting: VecDeque<Claimed> = VecDeque::new();
    loop {
        // A retry first takes one of the retry slots, so retries never hold more than half.
        let class_permit = match class {
            DueClass::First => None,
            DueClass::Retry => tokio::select! {
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&destination.retry_slots).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => break,
                },
            },
        };
        let Some(claimed) = next_delivery(&destination, &store, class, &mut waiting, &shutdown).await else {
            break;
        };
        let permit = tokio::select! {
            () = shutdown.cancelled() => { waiting.push_front(claimed); break; }
            permit = Arc::clone(&destination.slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => { waiting.push_front(claimed); break; }
            },
        };
        let probe = tokio::select! {
            () = shutdown.cancelled() => { waiting.push_front(claimed); break; }
            probe = admitted(&destination) => probe,
        };
        if let Some(limiter) = &destination.limiter {
            tokio::select! {
                () = shutdown.cancelled() => {
                    if probe { destination.breaker.release_probe(); }
                    waiting.push_front(claimed);
                    break;
                }
                () = limiter.until_ready() => {}
            }
        }
        let (destination, store) = (Arc::clone(&destination), store.clone());
        tracker.spawn(attempt(destination, store, claimed, probe, [Some(permit), class_permit]));
    }
    // Shutdown: what was claimed but not started goes back at once (a restart claims it again).
    if class == DueClass::First {
        waiting.extend(destination.take_fresh(usize::MAX));
    }
    let leases: Vec<(DeliveryId, _)> =
        waiting.iter().map(|c| (c.delivery.delivery_id.clone(), c.lease.token)).collect();
    for claimed in &waiting {
        destination.release(&claimed.delivery.delivery_id);
    }
    if !leases.is_empty()
        && let Err(error) = store.release_leases(leases).await
    {
        tracing::debug!(%error, "claims not given back at shutdown; they expire");
    }
}

/// The next delivery of `class` to attempt: one already claimed and waiting, one handed over
/// by the recording loop, or new claims from the store; waits while there is none. `None` at
/// shutdown.
async fn next_delivery(
    destination: &Destination,
    store: &Store,
    class: DueClass,
    waiting: &mut VecDeque<Claimed>,
    shutdown: &CancellationToken,
) -> Option<Claimed> {
    let name = &destination.config.name;
    let mut recording_poll = RECORDING_POLL;
    loop {
        if let Some(claimed) = waiting.pop_front() {
            return Some(claimed);
        }
        if shutdown.is_cancelled() {
            return None;
        }
        if !destination.holding.is_held() {
            // Another worker holds the destination: claim nothing until this one takes it.
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = destination.holding.wait_held() => {}
            }
            continue;
        }
        let batch = match class {
            DueClass::First => destination.slots.available_permits().max(1),
            DueClass::Retry => destination.retry_slots.available_permits() + 1,
        };
        if class == DueClass::First {
            waiting.extend(destination.take_fresh(batch));
            if !waiting.is_empty() {
                continue;
            }
        }
        let now = UnixMs::now();
        let hinted = destination.next_retry_ms.load(Ordering::SeqCst);
        if class == DueClass::Retry && hinted <= now.0 {
            // Only the hint just read: one set meanwhile stays.
            let _ = destination.next_retry_ms.compare_exchange(hinted, i64::MAX, Ordering::SeqCst, Ordering::SeqCst);
        }
        // Due ordered deliveries that only the recording gate held back: look again soon.
        let mut held_for_recording = false;
        match store.has_due(name.clone(), class, now).await {
            Ok(true) => {
                let lease_until = now.plus(destination.lease());
                let skip = destination.held();
                let gate = match &destination.recorded {
                    Some(recorded) => Some(recorded.gate().await),
                    None => None,
                };
                match store
                    .claim_due(name.clone(), ClaimDue { class, limit: batch, now, lease_until, skip, gate })
                    .await
                {
                    Ok((claimed, restarted)) => {
                        for delivery_id in &restarted {
                            tracing::warn!(%delivery_id, destination = %name, "delivery restarted: its previous attempt's lease expired without a result");
                        }
                        if !restarted.is_empty() {
                            metric_names::restarted(name, restarted.len() as u64);
                        }
                        for claimed in &claimed {
                            destination.hold(&claimed.delivery.delivery_id);
                        }
                        waiting.extend(claimed);
                        if !waiting.is_empty() {
                            recording_poll = RECORDING_POLL;
                            continue;
                        }
                        held_for_recording = gate.is_some();
                    }
                    Err(error) => tracing::warn!(%error, destination = %name, "cannot claim due deliveries; retrying"),
                }
            }
            Ok(false) => {
                if class == DueClass::First {
                    // Caught up with what overflowed: new deliveries may be handed over again.
                    destination.backlog.store(false, Ordering::SeqCst);
                }
            }
            Err(error) => tracing::warn!(%error, destination = %name, "cannot look for due deliveries; retrying"),
        }
        // Nothing to do now: wait to be told, or until the next retry this process knows of,
        // or look again after a while for what nobody announced.
        let wait = match class {
            _ if held_for_recording => {
                let wait = recording_poll;
                recording_poll = (recording_poll * 2).min(IDLE_POLL);
                wait
            }
            DueClass::First => IDLE_POLL,
            DueClass::Retry => {
                let next = destination.next_retry_ms.load(Ordering::SeqCst);
                let until_next = u64::try_from(next.saturating_sub(UnixMs::now().0)).unwrap_or(0);
                IDLE_POLL.min(Duration::from_millis(until_next.max(1)))
            }
        };
        let wake = match class {
            DueClass::First => &destination.wake_first,
            DueClass::Retry => &destination.wake_retry,
        };
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Waits until the breaker and the destination's own back-pressure let a call through; true
/// when the call is the breaker's half-open probe.
async fn admitted(destination: &Destination) -> bool {
    loop {
        if let Some(wait) = destination.paused_for() {
            tokio::time::sleep(wait).await;
            continue;
        }
        match destination.breaker.admit(Instant::now()) {
            Admission::Allowed => return false,
            Admission::Probe => return true,
            Admission::Denied(wait) => {
                metrics::counter!(metric_names::BREAKER_POSTPONED, "destination" => destination.config.name.clone())
                    .increment(1);
                tokio::time::sleep(wait + jitter(Duration::from_millis(100))).await;
            }
        }
    }
}

/// One attempt, holding its slot permits; the delivery is released from `held` at the end.
async fn attempt(
    destination: Arc<Destination>,
    store: Store,
    claimed: Claimed,
    probe: bool,
    _permits: [Option<OwnedSemaphorePermit>; 2],
) {
    let delivery_id = claimed.delivery.delivery_id.clone();
    run_attempt(&destination, &store, claimed, probe).await;
    destination.release(&delivery_id);
}

async fn run_attempt(destination: &Destination, store: &Store, claimed: Claimed, probe: bool) {
    let Claimed { delivery, mut lease } = claimed;
    let delivery_id = &delivery.delivery_id;
    if !lease_is_long_enough(destination, store, delivery_id, &mut lease).await {
        if probe {
            // Not sent: the next call may probe instead (else the breaker waits for ever).
            destination.breaker.release_probe();
        }
        return;
    }

    let mut span = attempt_span(destination, &delivery);
    let log_span = span.log_span();
    send_and_record(destination, store, delivery, lease, probe, &mut span).instrument(log_span).await;
}

/// The span of one attempt: a client span under the event's record span (stored with the
/// event), so retries and replays, whenever and by whichever worker, join the event's trace.
fn attempt_span(destination: &Destination, delivery: &DeliveryToSend) -> Span {
    let mut span = destination.tracing.child_of("attempt", SpanKind::Client, delivery.trace_context.as_deref());
    if span.is_recording() {
        span.set("http.request.method", "POST");
        if let Some((host, port)) = &destination.server {
            span.set("server.address", host.clone());
            span.set("server.port", i64::from(*port));
        }
        span.set("inlet.destination", destination.config.name.clone());
        span.set("inlet.delivery_id", delivery.delivery_id.as_str().to_owned());
        span.set("inlet.source", delivery.source.clone());
        span.set("inlet.event_id", delivery.event_id.clone());
        span.set("inlet.attempt", delivery.attempt_base + delivery.attempts + 1);
    }
    span
}

async fn send_and_record(
    destination: &Destination,
    store: &Store,
    delivery: DeliveryToSend,
    lease: Lease,
    probe: bool,
    span: &mut Span,
) {
    // The retry schedule counts from the latest replay (a replay starts a fresh schedule); the
    // header carries the attempt's stored number, which continues across replays, so the
    // destination, the console and the API name an attempt alike.
    let attempt_number = delivery.attempts + 1;
    let started_at = UnixMs::now();
    let started = Instant::now();
    let outbound = match destination.outbound(store, &delivery).await {
        Ok(outbound) => outbound,
        // Not the program's fault: the delivery is attempted again when its lease expires.
        Err(OutboundError::NotNow) => return,
        Err(OutboundError::Failed(error)) => {
            span.fail("transform_failed");
            let record = AttemptRecord {
                delivery_id: delivery.delivery_id.clone(),
                attempt: attempt_number,
                started_at,
                duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
                outcome: AttemptOutcome::Permanent,
                status_code: None,
                error: Some(bounded(&error)),
                response_snippet: None,
                next: NextStep::DeadLetter(DeadLetterReason::TransformFailed),
                lease_token: lease.token,
            };
            settle(destination, store, &delivery, record).await;
            return;
        }
    };
    let response =
        send(destination, &delivery, &outbound, delivery.attempt_base + attempt_number, span.traceparent()).await;
    let elapsed = started.elapsed();
    let now = Instant::now();
    let outcome = classify(&destination.config, response.status, attempt_number);
    match response.status {
        // Back-pressure, not failure: neither counts for nor against the breaker.
        Some(429) => {
            if probe {
                destination.breaker.release_probe();
            }
            if let Some(wait) = response.retry_after {
                destination.pause(wait);
            }
        }
        // Any other answer but a 5xx means the destination is up.
        Some(status) if status < 500 => destination.breaker_changed(destination.breaker.record(true, now)),
        // A retry failing again says more about its event than about the destination: retries
        // of a class of events that always fails come in bursts, and let count they opened the
        // breaker again right after every successful probe, starving every other event (seen in
        // the soak). Failures of first attempts and of the probe open it; an outage fails those.
        _ if outcome == AttemptOutcome::Transient && !probe && delivery.attempts > 0 => {}
        _ => destination.breaker_changed(destination.breaker.record(outcome != AttemptOutcome::Transient, now)),
    }
    destination.metrics.attempt(outcome, elapsed);
    if let Some(status) = response.status {
        span.set("http.response.status_code", i64::from(status));
    }
    if let Some(error) = &response.error {
        // One of a closed set ("timeout", "connection failed", "request failed").
        span.set("error.type", error.clone());
    }
    span.set("inlet.outcome", outcome.as_str());
    if outcome != AttemptOutcome::Delivered {
        span.fail(outcome.as_str());
    }

    let next = next_step(&destination.config, attempt_number, outcome, response.status, response.retry_after);
    let record = AttemptRecord {
        delivery_id: delivery.delivery_id.clone(),
        attempt: attempt_number,
        started_at,
        duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        outcome,
        status_code: response.status,
        error: response.error,
        response_snippet: response.snippet,
        next,
        lease_token: lease.token,
    };
    span.set(
        "inlet.next",
        match next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retry",
            NextStep::DeadLetter(_) => "dead_letter",
        },
    );
    settle(destination, store, &delivery, record).await;
}

/// Records an attempt's result under its lease (a few tries), then counts what it decided.
async fn settle(destination: &Destination, store: &Store, delivery: &DeliveryToSend, record: AttemptRecord) {
    let delivery_id = &delivery.delivery_id;
    let attempt_number = record.attempt;
    let next = record.next;
    let mut tries = 0;
    loop {
        tries += 1;
        match store.record_attempt(record.clone()).await {
            Ok(AttemptSettled::Recorded) => break,
            Ok(AttemptSettled::Superseded) => {
                // Another claim took the delivery over while this attempt ran (its lease
                // expired): that owner's result stands. The destination may see this delivery
                // twice, with the same Idempotency-Key.
                tracing::warn!(
                    %delivery_id,
                    attempt = attempt_number,
                    "attempt result dropped: the delivery was claimed again meanwhile"
                );
                metric_names::superseded(&destination.config.name);
                return;
            }
            Err(error) if tries < RECORD_TRIES => {
                tracing::error!(%error, %delivery_id, "cannot record attempt; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(tries))).await;
            }
            Err(error) => {
                // Left to the lease: when it expires the delivery is attempted again, with the
                // same Idempotency-Key, so a destination that got it drops the repeat.
                tracing::error!(%error, %delivery_id, "cannot record attempt; the delivery is attempted again when its lease expires");
                return;
            }
        }
    }
    if delivery.ordered {
        // Its key's next delivery may go now (or, after a retry was scheduled, a replayed
        // earlier one that waited for this attempt): the schedulers look again.
        destination.wake();
    }
    let name = &destination.config.name;
    match next {
        NextStep::Delivered => {
            destination.metrics.delivered(UnixMs::now().since(delivery.received_at));
        }
        NextStep::RetryAt(at) => {
            metrics::counter!(metric_names::RETRIES, "destination" => name.clone()).increment(1);
            destination.hint_retry(at);
        }
        NextStep::DeadLetter(reason) => {
            tracing::warn!(%delivery_id, destination = %name, reason = reason.as_str(), "delivery dead-lettered");
            metrics::counter!(metric_names::DELIVERIES, "destination" => name.clone(), "outcome" => DeliveryStatus::DeadLettered.as_str())
                .increment(1);
            metrics::counter!(metric_names::DEAD_LETTERED, "destination" => name.clone(), "reason" => reason.as_str())
                .increment(1);
        }
    }
}

/// Makes sure the lease outlasts the attempt (renewing it when waiting used it up); false when
/// the delivery was claimed by someone else meanwhile or the store cannot say.
async fn lease_is_long_enough(
    destination: &Destination,
    store: &Store,
    delivery_id: &DeliveryId,
    lease: &mut Lease,
) -> bool {
    let now = UnixMs::now();
    if lease.until >= now.plus(destination.config.timeout + STALL_GRACE + LEASE_SLACK) {
        return true;
    }
    let until = now.plus(destination.lease());
    match store.renew_lease(delivery_id.clone(), lease.token, until).await {
        Ok(true) => {
            lease.until = until;
            true
        }
        Ok(false) => {
            tracing::warn!(%delivery_id, "not attempted: the delivery was claimed again while it waited here");
            false
        }
        Err(error) => {
            tracing::warn!(%error, %delivery_id, "cannot renew the lease; the delivery is attempted once it expires");
            false
        }
    }
}

/// The decision after an attempt: what to record.
pub fn next_step(
    config: &DestinationConfig,
    attempt_number: i64,
    outcome: AttemptOutcome,
    status: Option<u16>,
    retry_after: Option<Duration>,
) -> NextStep {
    match outcome {
        AttemptOutcome::Delivered => NextStep::Delivered,
        AttemptOutcome::Permanent => NextStep::DeadLetter(DeadLetterReason::Permanent4xx),
        AttemptOutcome::Transient => {
            let index = usize::try_from(attempt_number - 1).unwrap_or(usize::MAX);
            match config.retry_schedule.get(index) {
                None => NextStep::DeadLetter(DeadLetterReason::RetriesExhausted),
                Some(scheduled) => {
                    let jittered = jitter(*scheduled);
                    let delay = match (status, retry_after) {
                        // A 429 asks for exactly this much: back-pressure, honoured as asked.
                        (Some(429), Some(asked)) => asked.min(MAX_RETRY_AFTER),
                        // Elsewhere Retry-After may only lengthen the schedule.
                        (_, Some(asked)) => asked.min(MAX_RETRY_AFTER).max(jittered),
                        (_, None) => jittered,
                    };
                    NextStep::RetryAt(UnixMs::now().plus(delay))
                }
            }
        }
    }
}

/// ±10 % jitter so retries of many deliveries do not arrive in lockstep.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.9..1.1))
}

/// The routes (to find a delivery's transform) and the pool transforms run on.
#[derive(Debug, Clone)]
pub struct Transforms {
    /// The routing table.
    pub router: Router,
    /// Where transforms run.
    pub pool: TransformPool,
    /// The routes of older config versions, for replays "as received".
    pub versions: ConfigVersions,
}

/// Most config versions whose compiled routes are kept at once (a version past it is compiled
/// again when next needed).
pub const CACHED_VERSIONS: usize = 16;

/// The routes of config versions other than the current one, compiled from their stored
/// snapshots when first needed and kept (a snapshot that does not compile is kept as its error,
/// so it is not compiled again for every delivery).
#[derive(Debug, Clone, Default)]
pub struct ConfigVersions {
    compiled: Arc<Mutex<HashMap<ConfigVersion, Result<Router, String>>>>,
}

impl ConfigVersions {
    /// The routes of `version`.
    async fn router(&self, store: &Store, version: &ConfigVersion) -> Result<Router, OutboundError> {
        if let Some(known) = self.compiled.lock().ok().and_then(|compiled| compiled.get(version).cloned()) {
            return known.map_err(OutboundError::Failed);
        }
        let snapshot = match store.config_snapshot(version.clone()).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // The store's fault, not the version's: attempted again when the lease expires.
                tracing::warn!(%error, version = version.as_str(), "cannot read a config version's snapshot");
                return Err(OutboundError::NotNow);
            }
        };
        let compiled = match snapshot {
            None => Err(format!("config version {version} is not in the store: its routes are unknown")),
            Some(snapshot) => {
                let version = version.clone();
                // Compiling parses programs (CPU, bounded by their size): off the async threads.
                match tokio::task::spawn_blocking(move || Router::from_snapshot(&version, &snapshot)).await {
                    Ok(compiled) => compiled.map_err(|error| error.to_string()),
                    Err(_) => return Err(OutboundError::NotNow),
                }
            }
        };
        if let Ok(mut cache) = self.compiled.lock() {
            if cache.len() >= CACHED_VERSIONS {
                cache.clear();
            }
            cache.insert(version.clone(), compiled.clone());
        }
        compiled.map_err(OutboundError::Failed)
    }
}

/// Why an attempt has nothing to send.
enum OutboundError {
    /// Not now (shutting down, the store unavailable): the delivery is attempted again when its
    /// lease expires.
    NotNow,
    /// The transform (or the config version it comes from) failed: the delivery is
    /// dead-lettered `transform_failed` with this error.
    Failed(String),
}

/// The body and extra headers one attempt sends.
struct Outbound {
    body: Bytes,
    /// Headers the transform set (never one of Inlet's own).
    headers: Vec<(String, String)>,
    /// The content type when the transform replaced the body (JSON); else the event's own.
    content_type: Option<&'static str>,
}

struct AttemptResult {
    status: Option<u16>,
    error: Option<String>,
    snippet: Option<String>,
    retry_after: Option<Duration>,
}

/// Classifies an answer (`None`: no answer: timeout or connection error, transient): 2xx
/// delivered; 408, 409, 425, 429, 5xx and 3xx transient (redirects are not followed and may be
/// fixed on the receiver's side), as are the destination's `retry_statuses`; 401 and 403
/// transient for the first `auth_failure_attempts - 1` attempts (a receiver whose secret or
/// clock is briefly out of step), then permanent; other 4xx permanent.
pub fn classify(config: &DestinationConfig, status: Option<u16>, attempt_number: i64) -> AttemptOutcome {
    let Some(status) = status else { return AttemptOutcome::Transient };
    match status {
        200..=299 => AttemptOutcome::Delivered,
        status if config.retry_statuses.contains(&status) => AttemptOutcome::Transient,
        408 | 409 | 425 | 429 => AttemptOutcome::Transient,
        401 | 403 if attempt_number < i64::from(config.auth_failure_attempts) => AttemptOutcome::Transient,
        400..=499 => AttemptOutcome::Permanent,
        _ => AttemptOutcome::Transient,
    }
}

/// The `User-Agent` every attempt sends.
pub const USER_AGENT: &str = concat!("inlet/", env!("CARGO_PKG_VERSION"));

/// The Standard Webhooks headers of an attempt's signature (`sign::standard`), in the order it
/// adds them: `webhook-id` (the delivery id), then the two made as the request is sent.
pub const SIGNATURE_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

/// What an attempt tells its destination besides the body: the one spelling of its headers, for
/// sending and for showing an operator what a replay will send (`api`), so the two cannot drift.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The delivery id (`Idempotency-Key`, `Inlet-Delivery-Id`, `webhook-id`); `None` only in a
    /// plan for a delivery not created yet (a replay to another destination), whose id is made
    /// when it is.
    pub delivery_id: Option<&'a str>,
    /// Source name.
    pub source: &'a str,
    /// Provider event id.
    pub event_id: &'a str,
    /// Event type.
    pub event_type: Option<&'a str>,
    /// The event's original content type.
    pub content_type: Option<&'a str>,
    /// Ingest receipt time.
    pub received_at: UnixMs,
}

impl Outgoing<'_> {
    /// The headers of the attempt numbered `stored_attempt` (`Inlet-Delivery-Attempt`: its
    /// number in the attempts table, continuing across replays), in the order they are sent,
    /// the signature's last ([`SIGNATURE_HEADERS`]). A value is `None` when it is made only as
    /// the request is sent (the signature's timestamp and signature), or when the delivery id is
    /// not known yet.
    pub fn headers(&self, stored_attempt: i64) -> Vec<(&'static str, Option<String>)> {
        let id = self.delivery_id.map(str::to_owned);
        let mut headers = vec![
            ("Content-Type", Some(self.content_type.unwrap_or("application/octet-stream").to_owned())),
            ("User-Agent", Some(USER_AGENT.to_owned())),
            ("Idempotency-Key", id.clone()),
            ("Inlet-Delivery-Id", id.clone()),
            ("Inlet-Delivery-Attempt", Some(stored_attempt.to_string())),
            ("Inlet-Source", Some(self.source.to_owned())),
            ("Inlet-Event-Id", Some(self.event_id.to_owned())),
            ("Inlet-Received-At", Some(self.received_at.0.to_string())),
        ];
        if let Some(event_type) = self.event_type {
            headers.push(("Inlet-Event-Type", Some(event_type.to_owned())));
        }
        let [webhook_id, timestamp, signature] = SIGNATURE_HEADERS;
        headers.extend([(webhook_id, id), (timestamp, None), (signature, None)]);
        headers
    }
}

/// Sends one attempt; `stored_attempt` is its number in the attempts table (continuing across
/// replays), sent as `Inlet-Delivery-Attempt`; `traceparent` is the attempt span's context
/// (traces on), so the destination's own trace continues Inlet's.
async fn send(
    destination: &Destination,
    delivery: &DeliveryToSend,
    outbound: &Outbound,
    stored_attempt: i64,
    traceparent: Option<String>,
) -> AttemptResult {
    let timestamp = UnixMs::now().0 / 1000;
    let outgoing = Outgoing {
        delivery_id: Some(delivery.delivery_id.as_str()),
        source: &delivery.source,
        event_id: &delivery.event_id,
        event_type: delivery.event_type.as_deref(),
        content_type: outbound.content_type.or(delivery.content_type.as_deref()),
        received_at: delivery.received_at,
    };
    let mut request = destination.client.post(&destination.config.url);
    for (name, value) in outgoing.headers(stored_attempt) {
        // The signature's own headers come from `sign::standard` below.
        if let Some(value) = value.filter(|_| !SIGNATURE_HEADERS.contains(&name)) {
            request = request.header(name, value);
        }
    }
    if let Some(traceparent) = traceparent {
        request = request.header(otel::TRACEPARENT, traceparent);
    }
    for (name, value) in &outbound.headers {
        request = request.header(name, value);
    }
    for (name, value) in sign::standard(
        destination.config.signing_secret.expose(),
        delivery.delivery_id.as_str(),
        timestamp,
        &outbound.body,
    ) {
        request = request.header(name, value);
    }
    let exchange = async {
        let mut response = request.body(outbound.body.clone()).send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut snippet = Vec::new();
        while snippet.len() < SNIPPET_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => snippet.extend_from_slice(&chunk[..chunk.len().min(SNIPPET_BYTES - snippet.len())]),
                _ => break,
            }
        }
        Ok::<_, reqwest::Error>((status, retry_after, snippet))
    };
    match within_attempt_time(destination.config.timeout, exchange).await {
        Some(Ok((status, retry_after, snippet))) => AttemptResult {
            status: Some(status),
            error: None,
            snippet: (!snippet.is_empty()).then(|| String::from_utf8_lossy(&snippet).into_owned()),
            retry_after,
        },
        Some(Err(error)) => {
            let kind = if error.is_connect() { "connection failed" } else { "request failed" };
            AttemptResult { status: None, error: Some(kind.to_owned()), snippet: None, retry_after: None }
        }
        None => AttemptResult { status: None, error: Some("timeout".to_owned()), snippet: None, retry_after: None },
    }
}

/// Runs `exchange` for at most `timeout` of the process's own running time: when the deadline's
/// timer fires late (the process was stopped or starved past it), the exchange gets
/// [`STALL_GRACE`] more to read an answer that arrived meanwhile, instead of a timeout being
/// recorded for an answer that came in time. `None`: timed out.
pub async fn within_attempt_time<T>(timeout: Duration, exchange: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::pin!(exchange);
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut graced = false;
    loop {
        tokio::select! {
            biased;
            result = &mut exchange => return Some(result),
            () = tokio::time::sleep_until(deadline) => {
                let late = tokio::time::Instant::now().saturating_duration_since(deadline);
                if graced || late < STALL_TOLERANCE {
                    return None;
                }
                graced = true;
                deadline = tokio::time::Instant::now() + STALL_GRACE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn destination(schedule: &[u64], extra: &str) -> DestinationConfig {
        let text = format!(
            "[[destinations]]\nname = \"d\"\nurl = \"http://127.0.0.1:1/\"\nsigning_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_schedule = [{}]\n{extra}\n",
            schedule.iter().map(|s| format!("\"{s}s\"")).collect::<Vec<_>>().join(",")
        );
        inlet_shared::config::Config::parse(&text, &Default::default()).unwrap().destinations.remove(0)
    }

    /// How far in the future a retry was scheduled.
    fn retry_in(next: NextStep) -> Duration {
        match next {
            NextStep::RetryAt(at) => at.since(UnixMs::now()),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn statuses_are_classified() {
        let config = destination(&[1], "");
        for (status, expected) in [
            (Some(200), AttemptOutcome::Delivered),
            (Some(204), AttemptOutcome::Delivered),
            (Some(301), AttemptOutcome::Transient),
            (Some(400), AttemptOutcome::Permanent),
            (Some(404), AttemptOutcome::Permanent),
            (Some(408), AttemptOutcome::Transient),
            (Some(409), AttemptOutcome::Transient),
            (Some(410), AttemptOutcome::Permanent),
            (Some(425), AttemptOutcome::Transient),
            (Some(429), AttemptOutcome::Transient),
            (Some(500), AttemptOutcome::Transient),
            (Some(503), AttemptOutcome::Transient),
            (None, AttemptOutcome::Transient),
        ] {
            assert_eq!(classify(&config, status, 1), expected, "{status:?}");
        }
    }

    #[test]
    fn authentication_failures_are_retried_a_few_times_by_default_then_dead_lettered() {
        let config = destination(&[1, 1, 1, 1], "");
        assert_eq!(config.auth_failure_attempts, 3, "the default");
        for status in [401, 403] {
            assert_eq!(classify(&config, Some(status), 1), AttemptOutcome::Transient);
            assert_eq!(classify(&config, Some(status), 2), AttemptOutcome::Transient);
            assert_eq!(classify(&config, Some(status), 3), AttemptOutcome::Permanent);
        }
        let strict = destination(&[1], "auth_failure_attempts = 1\nretry_statuses = [404]");
        assert_eq!(classify(&strict, Some(401), 1), AttemptOutcome::Permanent, "dead-lettered at once when asked");
        assert_eq!(classify(&strict, Some(404), 1), AttemptOutcome::Transient, "retry_statuses are retried");
        assert_eq!(classify(&strict, Some(410), 1), AttemptOutcome::Permanent);
    }

    #[test]
    fn schedule_then_dead_letter() {
        let config = destination(&[10, 20], "");
        let delay = retry_in(next_step(&config, 1, AttemptOutcome::Transient, Some(500), None));
        assert!(delay >= Duration::from_secs(8) && delay <= Duration::from_secs(11), "{delay:?}");
        assert!(retry_in(next_step(&config, 2, AttemptOutcome::Transient, Some(500), None)) >= Duration::from_secs(17));
        assert_eq!(
            next_step(&config, 3, AttemptOutcome::Transient, Some(500), None),
            NextStep::DeadLetter(DeadLetterReason::RetriesExhausted)
        );
        assert_eq!(
            next_step(&config, 1, AttemptOutcome::Permanent, Some(400), None),
            NextStep::DeadLetter(DeadLetterReason::Permanent4xx)
        );
    }

    #[test]
    fn a_429_retry_after_is_honoured_as_asked_and_other_retry_afters_only_lengthen() {
        let config = destination(&[30], "");
        let asked = retry_in(next_step(&config, 1, AttemptOutcome::Transient, Some(429), Some(Duration::from_secs(5))));
        assert!(asked <= Duration::from_secs(5) && asked >= Duration::from_secs(4), "{asked:?}");
        let longer =
            retry_in(next_step(&config, 1, AttemptOutcome::Transient, Some(503), Some(Duration::from_secs(120))));
        assert!(longer >= Duration::from_secs(119), "{longer:?}");
        let kept = retry_in(next_step(&config, 1, AttemptOutcome::Transient, Some(503), Some(Duration::from_secs(1))));
        assert!(kept >= Duration::from_secs(26), "{kept:?}");
    }

    /// The plan an operator is shown names the signature's headers as `sign::standard` makes
    /// them, in its order, and the rest as `send` sends them.
    #[test]
    fn the_planned_headers_are_the_ones_sent() {
        let signed = sign::standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "dlv_1", 1, b"{}");
        let names: Vec<&str> = signed.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, SIGNATURE_HEADERS);
        let outgoing = Outgoing {
            delivery_id: Some("dlv_1"),
            source: "github",
            event_id: "e1",
            event_type: None,
            content_type: Some("application/json"),
            received_at: UnixMs(5),
        };
        let headers = outgoing.headers(3);
        let names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "User-Agent",
                "Idempotency-Key",
                "Inlet-Delivery-Id",
                "Inlet-Delivery-Attempt",
                "Inlet-Source",
                "Inlet-Event-Id",
                "Inlet-Received-At",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature"
            ]
        );
        assert_eq!(headers[4].1.as_deref(), Some("3"));
        assert_eq!(headers[8].1.as_deref(), Some("dlv_1"));
        assert_eq!((headers[9].1.as_deref(), headers[10].1.as_deref()), (None, None), "made when sent");
        let planned = Outgoing { delivery_id: None, ..outgoing }.headers(1);
        assert_eq!(planned[2].1, None, "no id before the delivery exists");
    }

    #[tokio::test]
    async fn an_exchange_is_timed_out_at_its_deadline() {
        let never = std::future::pending::<()>();
        let started = tokio::time::Instant::now();
        assert_eq!(within_attempt_time(Duration::from_millis(100), never).await, None);
        assert!(started.elapsed() < Duration::from_millis(100) + STALL_GRACE, "no grace without a stall");
        let quick = async { 7 };
        assert_eq!(within_attempt_time(Duration::from_secs(2), quick).await, Some(7));
    }

    /// A stall (here: the runtime's only thread blocked past the deadline) does not turn an
    /// answer that arrived in time into a timeout, even when the task that reads it (like
    /// hyper's connection task) only runs after the attempt's timer fired.
    #[tokio::test]
    async fn an_answer_that_arrived_during_a_stall_is_still_read() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u16>();
        let exchange = async move { rx.await.unwrap() };
        let attempt = tokio::spawn(within_attempt_time(Duration::from_millis(200), exchange));
        tokio::task::yield_now().await;
        // The attempt's deadline is at 200 ms; the "connection" task reads the answer at 300 ms,
        // while the process is still stalled, so it runs only after the attempt's timer fired.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(200);
        });
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(attempt.await.unwrap(), Some(200));
    }
}
