//! Delivery to one destination: its own durable consumer on the deliveries stream, its own
//! concurrency, rate limit and circuit breaker, so a slow or dead destination never delays
//! another (no head-of-line blocking).
//!
//! One task message = one delivery. Each attempt is recorded in SQLite before the message is
//! settled; retries are NAKs with a delay, so the schedule survives restarts (JetStream keeps
//! the message and redelivers it when the delay ends), and the attempt count lives in SQLite,
//! so breaker-open postponements do not spend the retry budget.
//!
//! [`Settle`] is the one place an outcome turns into a JetStream ack kind.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use inlet_shared::config::DestinationConfig;
use inlet_shared::signature::sign;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::breaker::{Admission, Breaker, BreakerState};
use crate::events;
use crate::store::{AttemptOutcome, AttemptRecord, DeadLetterReason, DeliveryToSend, NextStep, Store, now_ms};

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Bytes of a response body kept with the attempt.
const SNIPPET_BYTES: usize = 512;

/// How a task message is settled. The only mapping from outcomes to JetStream acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Finished (delivered, dead-lettered, or a task for a finished delivery): remove it.
    Done,
    /// Deliver again after this delay (a retry, or a postponement while the breaker is open).
    Later(Duration),
    /// Not a valid task: stop redelivering it.
    Discard,
}

impl Settle {
    async fn apply(self, message: &jetstream::Message) {
        let result = match self {
            Settle::Done => message.ack().await,
            Settle::Later(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            Settle::Discard => message.ack_with(AckKind::Term).await,
        };
        if let Err(error) = result {
            // The message will come back after ack_wait; SQLite state decides what happens then.
            tracing::warn!(%error, "settling a delivery task failed");
        }
    }
}

/// Everything about one destination at run time.
pub struct Destination {
    /// Its config.
    pub config: DestinationConfig,
    /// Circuit breaker.
    pub breaker: Breaker,
    limiter: Option<DefaultDirectRateLimiter>,
    client: reqwest::Client,
    /// Deliveries being attempted now (a second task for one of them is dropped).
    in_flight: Mutex<HashSet<String>>,
    metrics: events::DestinationMetrics,
}

impl Destination {
    /// Builds the runtime for one destination.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(config: DestinationConfig) -> Result<Destination, reqwest::Error> {
        let client = reqwest::Client::builder()
            // Receivers must not bounce deliveries to other hosts.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("inlet/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let limiter = config.rate_limit.and_then(|rate| {
            let per_second = NonZeroU32::new(rate.per_second)?;
            let burst = NonZeroU32::new(rate.burst())?;
            Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        let breaker = Breaker::new(config.breaker.failure_threshold, config.breaker.cooldown);
        metrics::gauge!(events::BREAKER_STATE, "destination" => config.name.clone()).set(BreakerState::Closed.gauge());
        let metrics = events::DestinationMetrics::new(&config.name);
        Ok(Destination { config, breaker, limiter, client, in_flight: Mutex::new(HashSet::new()), metrics })
    }

    fn claim(&self, delivery_id: &str) -> bool {
        self.in_flight.lock().map(|mut set| set.insert(delivery_id.to_owned())).unwrap_or(false)
    }

    fn release(&self, delivery_id: &str) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(delivery_id);
        }
    }

    fn breaker_changed(&self, state: Option<BreakerState>) {
        if let Some(state) = state {
            tracing::warn!(destination = %self.config.name, state = state.as_str(), "circuit breaker changed state");
            metrics::gauge!(events::BREAKER_STATE, "destination" => self.config.name.clone()).set(state.gauge());
        }
    }
}

/// Runs one destination's delivery loop until `shutdown`; in-flight attempts finish first.
pub async fn run(
    destination: Arc<Destination>,
    store: Store,
    consumer: PullConsumer,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let tracker = TaskTracker::new();
    'outer: while !shutdown.is_cancelled() {
        let Some(mut messages) = crate::pull::open(&consumer, concurrency, &destination.config.name, &shutdown).await
        else {
            break;
        };
        loop {
            // While the breaker is open, pull nothing: the backlog waits in the stream.
            if let Admission::Denied(wait) = peek(&destination.breaker) {
                tokio::select! {
                    () = shutdown.cancelled() => break 'outer,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
            let permit = tokio::select! {
                () = shutdown.cancelled() => break 'outer,
                permit = Arc::clone(&permits).acquire_owned() => match permit { Ok(p) => p, Err(_) => break 'outer },
            };
            let next = tokio::select! {
                () = shutdown.cancelled() => break 'outer,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::debug!(%error, "delivery pull stream error; continuing");
                    continue;
                }
                None => break,
            };
            let destination = Arc::clone(&destination);
            let store = store.clone();
            tracker.spawn(async move {
                let _permit = permit;
                let settle = handle(&destination, &store, &message).await;
                settle.apply(&message).await;
            });
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Reads the breaker without taking the probe slot.
fn peek(breaker: &Breaker) -> Admission {
    match breaker.state(Instant::now()) {
        BreakerState::Open => match breaker.admit(Instant::now()) {
            Admission::Probe => {
                breaker.release_probe();
                Admission::Allowed
            }
            other => other,
        },
        _ => Admission::Allowed,
    }
}

/// Handles one task message.
pub async fn handle(destination: &Destination, store: &Store, message: &jetstream::Message) -> Settle {
    let Ok(delivery_id) = std::str::from_utf8(&message.payload).map(str::to_owned) else {
        tracing::error!("delivery task with a non-UTF-8 payload discarded");
        return Settle::Discard;
    };
    if !destination.claim(&delivery_id) {
        // Another task for the same delivery is being attempted; that one settles it.
        return Settle::Done;
    }
    let settle = attempt(destination, store, &delivery_id).await;
    destination.release(&delivery_id);
    settle
}

async fn attempt(destination: &Destination, store: &Store, delivery_id: &str) -> Settle {
    let delivery = match store.delivery_to_send(delivery_id.to_owned()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => {
            tracing::warn!(delivery_id, "delivery task for an unknown delivery discarded");
            return Settle::Discard;
        }
        Err(error) => {
            tracing::error!(%error, "cannot load delivery; retrying later");
            return Settle::Later(Duration::from_secs(1));
        }
    };
    if delivery.status != "pending" {
        return Settle::Done;
    }
    if delivery.destination != destination.config.name {
        return Settle::Discard;
    }
    let admission = destination.breaker.admit(Instant::now());
    if let Admission::Denied(wait) = admission {
        metrics::counter!(events::BREAKER_POSTPONED, "destination" => destination.config.name.clone()).increment(1);
        return Settle::Later(wait + jitter(Duration::from_millis(100)));
    }
    if let Some(limiter) = &destination.limiter {
        limiter.until_ready().await;
    }

    let attempt_number = delivery.attempts + 1;
    let started_at_ms = now_ms();
    let started = Instant::now();
    let response = send(destination, &delivery, attempt_number).await;
    let elapsed = started.elapsed();
    let healthy = matches!(response.outcome, AttemptOutcome::Delivered | AttemptOutcome::Permanent);
    destination.breaker_changed(destination.breaker.record(healthy, Instant::now()));
    destination.metrics.attempt(response.outcome, elapsed);

    let (next, settle) = next_step(&destination.config, attempt_number, response.outcome, response.retry_after);
    let record = AttemptRecord {
        delivery_id: delivery.delivery_id.clone(),
        attempt: attempt_number,
        started_at_ms,
        duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        outcome: response.outcome,
        status_code: response.status,
        error: response.error,
        response_snippet: response.snippet,
        next,
    };
    if let Err(error) = store.record_attempt(record).await {
        // Not recorded: retry soon. If it was delivered, the Idempotency-Key lets the
        // destination drop the repeat.
        tracing::error!(%error, delivery_id, "cannot record attempt; retrying");
        return Settle::Later(Duration::from_secs(1));
    }
    match next {
        NextStep::Delivered => {
            let receipt_age_ms = now_ms().saturating_sub(delivery.received_at_ms).max(0);
            destination.metrics.delivered(Duration::from_millis(u64::try_from(receipt_age_ms).unwrap_or(0)));
        }
        NextStep::RetryAt(_) => {
            let name = destination.config.name.clone();
            metrics::counter!(events::RETRIES, "destination" => name).increment(1);
        }
        NextStep::DeadLetter(reason) => {
            let name = destination.config.name.clone();
            tracing::warn!(delivery_id, destination = %name, reason = reason.as_str(), "delivery dead-lettered");
            metrics::counter!(events::DELIVERIES, "destination" => name.clone(), "outcome" => "dead_lettered")
                .increment(1);
            metrics::counter!(events::DEAD_LETTERED, "destination" => name, "reason" => reason.as_str()).increment(1);
        }
    }
    settle
}

/// The decision after an attempt: what to record and how to settle the task.
pub fn next_step(
    config: &DestinationConfig,
    attempt_number: i64,
    outcome: AttemptOutcome,
    retry_after: Option<Duration>,
) -> (NextStep, Settle) {
    match outcome {
        AttemptOutcome::Delivered => (NextStep::Delivered, Settle::Done),
        AttemptOutcome::Permanent => (NextStep::DeadLetter(DeadLetterReason::Permanent4xx), Settle::Done),
        AttemptOutcome::Transient => {
            let index = usize::try_from(attempt_number - 1).unwrap_or(usize::MAX);
            match config.retry_schedule.get(index) {
                None => (NextStep::DeadLetter(DeadLetterReason::RetriesExhausted), Settle::Done),
                Some(scheduled) => {
                    let jittered = jitter(*scheduled);
                    let delay = retry_after.map_or(jittered, |asked| asked.min(MAX_RETRY_AFTER).max(jittered));
                    let at = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                    (NextStep::RetryAt(at), Settle::Later(delay))
                }
            }
        }
    }
}

/// ±10 % jitter so retries of many deliveries do not arrive in lockstep.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.9..1.1))
}

struct AttemptResult {
    outcome: AttemptOutcome,
    status: Option<u16>,
    error: Option<String>,
    snippet: Option<String>,
    retry_after: Option<Duration>,
}

/// Classifies an HTTP status: 2xx delivered; 408, 409, 425, 429 and 5xx transient (as are
/// 3xx, since redirects are not followed and may be fixed on the receiver's side); other 4xx
/// permanent.
pub fn classify(status: u16) -> AttemptOutcome {
    match status {
        200..=299 => AttemptOutcome::Delivered,
        408 | 409 | 425 | 429 => AttemptOutcome::Transient,
        400..=499 => AttemptOutcome::Permanent,
        _ => AttemptOutcome::Transient,
    }
}

async fn send(destination: &Destination, delivery: &DeliveryToSend, attempt_number: i64) -> AttemptResult {
    let timestamp = now_ms() / 1000;
    let mut request = destination
        .client
        .post(&destination.config.url)
        .header(reqwest::header::CONTENT_TYPE, delivery.content_type.as_deref().unwrap_or("application/octet-stream"))
        .header("Idempotency-Key", &delivery.delivery_id)
        .header("Inlet-Delivery-Id", &delivery.delivery_id)
        .header("Inlet-Delivery-Attempt", attempt_number.to_string())
        .header("Inlet-Source", &delivery.source)
        .header("Inlet-Event-Id", &delivery.event_id)
        .header("Inlet-Received-At", delivery.received_at_ms.to_string());
    if let Some(event_type) = &delivery.event_type {
        request = request.header("Inlet-Event-Type", event_type);
    }
    for (name, value) in
        sign::standard(destination.config.signing_secret.expose(), &delivery.delivery_id, timestamp, &delivery.body)
    {
        request = request.header(name, value);
    }
    match request.body(delivery.body.clone()).send().await {
        Ok(mut response) => {
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
                    Ok(Some(chunk)) => {
                        snippet.extend_from_slice(&chunk[..chunk.len().min(SNIPPET_BYTES - snippet.len())])
                    }
                    _ => break,
                }
            }
            AttemptResult {
                outcome: classify(status),
                status: Some(status),
                error: None,
                snippet: (!snippet.is_empty()).then(|| String::from_utf8_lossy(&snippet).into_owned()),
                retry_after,
            }
        }
        Err(error) => {
            let kind = if error.is_timeout() {
                "timeout"
            } else if error.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            AttemptResult {
                outcome: AttemptOutcome::Transient,
                status: None,
                error: Some(kind.to_owned()),
                snippet: None,
                retry_after: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn destination(schedule: &[u64]) -> DestinationConfig {
        let text = format!(
            "[[destinations]]\nname = \"d\"\nurl = \"http://127.0.0.1:1/\"\nsigning_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_schedule = [{}]\n",
            schedule.iter().map(|s| format!("\"{s}s\"")).collect::<Vec<_>>().join(",")
        );
        inlet_shared::config::Config::parse(&text, &Default::default()).unwrap().destinations.remove(0)
    }

    #[test]
    fn statuses_are_classified() {
        for (status, expected) in [
            (200, AttemptOutcome::Delivered),
            (204, AttemptOutcome::Delivered),
            (301, AttemptOutcome::Transient),
            (400, AttemptOutcome::Permanent),
            (401, AttemptOutcome::Permanent),
            (404, AttemptOutcome::Permanent),
            (408, AttemptOutcome::Transient),
            (409, AttemptOutcome::Transient),
            (410, AttemptOutcome::Permanent),
            (425, AttemptOutcome::Transient),
            (429, AttemptOutcome::Transient),
            (500, AttemptOutcome::Transient),
            (503, AttemptOutcome::Transient),
        ] {
            assert_eq!(classify(status), expected, "{status}");
        }
    }

    #[test]
    fn schedule_then_dead_letter() {
        let config = destination(&[10, 20]);
        let (next, settle) = next_step(&config, 1, AttemptOutcome::Transient, None);
        assert!(matches!(next, NextStep::RetryAt(_)));
        let Settle::Later(delay) = settle else { panic!("retry") };
        assert!(delay >= Duration::from_secs(9) && delay <= Duration::from_secs(11), "{delay:?}");
        let (_, Settle::Later(delay)) = next_step(&config, 2, AttemptOutcome::Transient, None) else { panic!() };
        assert!(delay >= Duration::from_secs(18));
        assert_eq!(
            next_step(&config, 3, AttemptOutcome::Transient, None),
            (NextStep::DeadLetter(DeadLetterReason::RetriesExhausted), Settle::Done)
        );
        assert_eq!(
            next_step(&config, 1, AttemptOutcome::Permanent, None),
            (NextStep::DeadLetter(DeadLetterReason::Permanent4xx), Settle::Done)
        );
    }

    #[test]
    fn retry_after_extends_but_never_shortens_the_delay() {
        let config = destination(&[10]);
        let (_, Settle::Later(longer)) =
            next_step(&config, 1, AttemptOutcome::Transient, Some(Duration::from_secs(120)))
        else {
            panic!()
        };
        assert_eq!(longer, Duration::from_secs(120));
        let (_, Settle::Later(kept)) = next_step(&config, 1, AttemptOutcome::Transient, Some(Duration::from_secs(1)))
        else {
            panic!()
        };
        assert!(kept >= Duration::from_secs(9));
    }
}
