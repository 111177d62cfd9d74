//! The recording loop: pulls events from the intake stream with a durable consumer, records
//! each batch in one SQLite transaction (events and their deliveries, due now and claimed by
//! this process for their first attempt), hands the new deliveries to their destinations'
//! schedulers in memory, and only then acks the batch.
//!
//! A message naming its body in the bodies bucket (a claim check, envelope version 2) is
//! recorded only with that body, fetched and checked against the size and SHA-256 the message
//! names: an object that is missing, different or unreadable leaves the message unrecorded,
//! NAKed to come back later, so no event is ever recorded without its body. The bodies
//! fetched for one batch are bounded ([`MAX_FETCHED_BODY_BYTES`]): past that, further claim
//! checks wait for a later batch.
//!
//! Order matters for crash safety: commit, then ack. A crash before the ack makes JetStream
//! redeliver; the event is then a duplicate in SQLite, whose deliveries are already scheduled
//! there. A crash after the commit loses nothing either: the deliveries are in the store, and
//! their claims are released at the next start (or expire).

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use inlet_shared::claim_check::BodyStore;
use inlet_shared::envelope::{self, BodyClaim};
use inlet_shared::otel::{Span, SpanKind, Tracing};
use tokio_util::sync::CancellationToken;

use crate::deliver::Destination;
use crate::metric_names;
use crate::model::{RouteStatus, UnixMs};
use crate::routes::{EventView, Router};
use crate::store::{Claimed, FirstClaims, NewEvent, Recorded, Store};

/// Batches recorded but not yet acked, at most.
const MAX_SETTLING: usize = 4;

/// Bytes of claim-checked bodies fetched for one batch, at most (beyond the first body, which
/// is always fetched): the rest of the batch's claim checks are NAKed to come back in a later
/// batch, so a backlog of 25 MiB bodies is recorded a few at a time.
const MAX_FETCHED_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// When a message whose body cannot be fetched now comes back.
const BODY_RETRY: Duration = Duration::from_secs(5);

/// When a claim check left for a later batch comes back.
const BODY_LATER: Duration = Duration::from_millis(100);

/// Events no route matched are logged at info one line each: a burst of
/// [`UNROUTED_LOG_BURST`], then one per [`UNROUTED_LOG_BURST`]th of a minute; the rest are
/// counted and reported with the next logged line (all are in
/// `inlet_worker_events_total{outcome="unrouted"}` and stored as unrouted).
const UNROUTED_LOG_BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(9);

/// The unrouted-event log's rate limit, and how many lines it held back since the last one.
pub struct UnroutedLog {
    limiter: DefaultDirectRateLimiter,
    not_logged: AtomicU64,
}

impl Default for UnroutedLog {
    fn default() -> Self {
        UnroutedLog {
            limiter: RateLimiter::direct(Quota::per_minute(UNROUTED_LOG_BURST)),
            not_logged: AtomicU64::new(0),
        }
    }
}

impl UnroutedLog {
    /// Logs one event no route matched, unless the rate limit holds it back.
    fn log(&self, source: &str, event_id: &str, event_type: Option<&str>) {
        if self.limiter.check().is_err() {
            self.not_logged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let not_logged = self.not_logged.swap(0, Ordering::Relaxed);
        let event_type = event_type.unwrap_or("(none)");
        if not_logged == 0 {
            tracing::info!(
                source,
                event_type,
                event_id,
                "no route matches this event: stored as unrouted, not delivered"
            );
        } else {
            tracing::info!(
                source,
                event_type,
                event_id,
                unrouted_not_logged = not_logged,
                "no route matches this event: stored as unrouted, not delivered (earlier unrouted events not logged, rate limit)"
            );
        }
    }
}

/// What the recording loop needs.
pub struct Recorder {
    /// Database.
    pub store: Store,
    /// Routing table.
    pub router: Router,
    /// The destinations' runtimes, to hand new deliveries to.
    pub destinations: Arc<HashMap<String, Arc<Destination>>>,
    /// Messages per batch.
    pub batch_size: usize,
    /// The rate limit of the unrouted-event log line.
    pub unrouted_log: UnroutedLog,
    /// With several workers on one store: how to wake the worker that holds a destination.
    pub peers: Option<PeerWake>,
    /// `[telemetry.traces]`: one record span per event.
    pub tracing: Tracing,
    /// The intake consumer's name (`worker.consumer`), a span attribute.
    pub consumer: String,
    /// The bodies bucket, where claim-checked bodies are fetched from.
    pub bodies: BodyStore,
}

/// Wakes the other workers sharing the store: a NATS message naming a destination that has new
/// due deliveries, so its holder claims them now rather than at its next look (within a
/// second).
#[derive(Clone)]
pub struct PeerWake {
    /// The worker's NATS connection.
    pub client: async_nats::Client,
    /// Where every worker listens (see `lib.rs`).
    pub subject: String,
}

/// Why a message cannot be recorded at all (it is terminated, not retried).
#[derive(Debug, thiserror::Error)]
pub enum InvalidMessage {
    /// The message has no headers.
    #[error("message has no envelope headers")]
    NoHeaders,
    /// A required envelope header is missing or invalid.
    #[error(transparent)]
    Envelope(#[from] envelope::EnvelopeError),
}

/// Reads the envelope headers of a stream message: the event to record (without its trace
/// context yet, and with an empty body when the message is a claim check), ingest's
/// `traceparent` when it wrote one, and the claim check when the body is in the bodies bucket.
///
/// # Errors
///
/// [`InvalidMessage`] naming the missing or invalid header.
pub fn parse_message(
    message: &jetstream::Message,
    router: &Router,
) -> Result<(NewEvent, Option<String>, Option<BodyClaim>), InvalidMessage> {
    let headers = message.headers.as_ref().ok_or(InvalidMessage::NoHeaders)?;
    let envelope = envelope::Envelope::from_headers(|name| headers.get(name).map(|v| v.as_str()))?;
    let stream_sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    let headers_json = envelope.original_headers.unwrap_or_else(|| "[]".into());
    // After verification (ingest published only what verified); the body is read as JSON only
    // for a route with a filter or an ordering key.
    let routing = router.route(&EventView {
        source: &envelope.source,
        event_type: envelope.event_type.as_deref(),
        body: &message.payload,
        headers_json: &headers_json,
    });
    let event = NewEvent {
        id_origin: envelope.id_origin,
        scheme: envelope.scheme,
        secret_index: i64::try_from(envelope.secret_index).unwrap_or(i64::MAX),
        content_type: envelope.content_type,
        headers_json,
        body: Bytes::copy_from_slice(&message.payload),
        received_at: UnixMs(i64::try_from(envelope.received_at_ms).unwrap_or(i64::MAX)),
        source: envelope.source,
        event_id: envelope.event_id,
        event_type: envelope.event_type,
        stream_sequence,
        destinations: routing.destinations,
        ordering: routing.ordering,
        trace_context: None,
        config_version: Some(router.version().clone()),
    };
    Ok((event, envelope.traceparent, envelope.body))
}

impl Recorder {
    /// Runs until `shutdown`; the batch in hand is finished and settled first.
    pub async fn run(self: Arc<Self>, consumer: PullConsumer, shutdown: CancellationToken) {
        let mut settling = tokio::task::JoinSet::new();
        while !shutdown.is_cancelled() {
            let Some(messages) = crate::pull::open(&consumer, self.batch_size, "intake", &shutdown).await else {
                break;
            };
            // Whatever is ready now becomes one batch: low latency when idle, large
            // transactions under load.
            let mut batches = messages.ready_chunks(self.batch_size);
            loop {
                let batch = tokio::select! {
                    () = shutdown.cancelled() => break,
                    batch = batches.next() => batch,
                };
                let Some(batch) = batch else { break };
                let mut ok = Vec::with_capacity(batch.len());
                for item in batch {
                    match item {
                        Ok(message) => ok.push(message),
                        Err(error) => tracing::debug!(%error, "pull stream error; continuing"),
                    }
                }
                if ok.is_empty() {
                    continue;
                }
                // Pipelined: the next batch is recorded while this one's messages are acked. A
                // few batches at most are in that stage.
                while settling.len() >= MAX_SETTLING {
                    let _ = settling.join_next().await;
                }
                if let Some(recorded) = self.record_batch(ok).await {
                    settling.spawn(ack_all(recorded));
                }
            }
        }
        // Shutdown: the batches in hand are settled before returning.
        while settling.join_next().await.is_some() {}
    }

    /// Records one batch in one transaction and hands its new deliveries over. Messages that
    /// cannot be recorded are settled here (terminated when invalid, NAKed when the database
    /// failed); the recorded ones come back, to be acked.
    async fn record_batch(&self, messages: Vec<jetstream::Message>) -> Option<Vec<jetstream::Message>> {
        let mut events = Vec::with_capacity(messages.len());
        let mut valid = Vec::with_capacity(messages.len());
        let mut spans = Vec::with_capacity(messages.len());
        let mut fetched: u64 = 0;
        for message in messages {
            match parse_message(&message, &self.router) {
                Ok((mut event, ingest_context, claim)) => {
                    if let Some(claim) = claim {
                        if fetched > 0 && fetched.saturating_add(claim.size) > MAX_FETCHED_BODY_BYTES {
                            let _ = message.ack_with(AckKind::Nak(Some(BODY_LATER))).await;
                            continue;
                        }
                        match self.bodies.fetch(&claim).await {
                            Ok(body) => {
                                fetched = fetched.saturating_add(claim.size);
                                event.body = body;
                            }
                            Err(error) => {
                                // Not recorded without its body: the message comes back.
                                tracing::warn!(
                                    %error,
                                    source = %event.source,
                                    event_id = %event.event_id,
                                    "claim-checked body not available; the event is recorded once it is"
                                );
                                metric_names::event(&event.source, "body_unavailable");
                                let _ = message.ack_with(AckKind::Nak(Some(BODY_RETRY))).await;
                                continue;
                            }
                        }
                    }
                    // A child of ingest's publish span; its own context is stored with the event,
                    // for the attempts to continue from.
                    let span = self.record_span(&message, &event, ingest_context.as_deref());
                    event.trace_context = span.traceparent();
                    spans.push(span);
                    events.push(event);
                    valid.push(message);
                }
                Err(error) => {
                    // No key to record it under: terminate it so it cannot block the stream.
                    // It stays in the stream for inspection.
                    tracing::error!(%error, subject = %message.subject, "invalid message terminated");
                    metric_names::event("_invalid", "invalid");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if events.is_empty() {
            return None;
        }
        let started = Instant::now();
        // Only the keys are needed after the write; the events themselves (bodies, headers) move
        // into the store instead of being copied.
        let keys: Vec<(String, String, Option<String>)> =
            events.iter().map(|e| (e.source.clone(), e.event_id.clone(), e.event_type.clone())).collect();
        // Deliveries to destinations another worker holds are left for it to claim: claiming
        // them here only to release them would cost a second write each.
        let held_elsewhere =
            self.destinations.iter().filter(|(_, d)| !d.is_held()).map(|(name, _)| name.clone()).collect();
        let claims = FirstClaims {
            until: UnixMs::now().plus(self.first_lease()),
            held_elsewhere,
            with_headers: self.router.has_transforms(),
        };
        let recorded = match self.store.record(events, claims).await {
            Ok(recorded) => recorded,
            Err(error) => {
                for span in &mut spans {
                    span.fail("store_error");
                }
                tracing::error!(%error, "cannot record batch; messages will be redelivered");
                for message in &valid {
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
                return None;
            }
        };
        metrics::histogram!(metric_names::BATCH_COMMIT).record(started.elapsed().as_secs_f64());

        let mut fresh: HashMap<&str, Vec<Claimed>> = HashMap::new();
        let mut elsewhere: BTreeSet<&str> = BTreeSet::new();
        let mut held_here: BTreeSet<&str> = BTreeSet::new();
        // Counted per batch: one labelled counter lookup per (source, outcome), not per event.
        let mut counts: std::collections::BTreeMap<(&str, &'static str), u64> = std::collections::BTreeMap::new();
        for (((source, event_id, event_type), result), span) in keys.iter().zip(recorded).zip(&mut spans) {
            let _logged = span.log_span().entered();
            if let Recorded::New { deliveries, unclaimed } = &result {
                span.set("inlet.deliveries", i64::try_from(deliveries.len() + unclaimed.len()).unwrap_or(i64::MAX));
            }
            let outcome = match result {
                Recorded::New { deliveries, unclaimed } if deliveries.is_empty() && unclaimed.is_empty() => {
                    self.unrouted_log.log(source, event_id, event_type.as_deref());
                    RouteStatus::Unrouted.as_str()
                }
                Recorded::New { deliveries, unclaimed } => {
                    for destination in unclaimed {
                        if let Some((name, runtime)) = self.destinations.get_key_value(destination.as_str()) {
                            if runtime.is_held() {
                                // Held here, left unclaimed for its key's turn (an ordered
                                // delivery): its scheduler claims it from the store.
                                held_here.insert(name.as_str());
                            } else {
                                elsewhere.insert(name.as_str());
                            }
                        }
                    }
                    for claimed in deliveries {
                        if let Some((name, _)) = self.destinations.get_key_value(claimed.delivery.destination.as_str())
                        {
                            fresh.entry(name.as_str()).or_default().push(claimed);
                        }
                    }
                    "recorded"
                }
                Recorded::Duplicate { conflict: true } => "conflict",
                Recorded::Duplicate { conflict: false } => "duplicate",
            };
            span.set("inlet.outcome", outcome);
            if outcome == "conflict" {
                tracing::warn!(%source, %event_id, "same event id with a different body; kept the first");
            }
            *counts.entry((source.as_str(), outcome)).or_default() += 1;
        }
        for ((source, outcome), n) in counts {
            metric_names::events(source, outcome, n);
        }
        for name in held_here {
            if let Some(destination) = self.destinations.get(name) {
                destination.wake();
            }
        }
        let mut refused = Vec::new();
        for (name, claimed) in fresh {
            if let Some(destination) = self.destinations.get(name) {
                // Another worker took this destination over while the batch was written
                // (several workers on one store): it attempts them, so its limits hold in total.
                let refused_here = if destination.is_held() {
                    destination.offer_fresh(claimed)
                } else {
                    elsewhere.insert(name);
                    claimed
                };
                refused.extend(refused_here.into_iter().map(|c| (c.delivery.delivery_id, c.lease.token)));
            }
        }
        let elsewhere: Vec<String> = elsewhere.into_iter().map(str::to_owned).collect();
        if !refused.is_empty() || !elsewhere.is_empty() {
            // A destination's queue is full (a backlog), or another worker holds it: these
            // become due for its scheduler to claim from the store.
            let store = self.store.clone();
            let destinations = Arc::clone(&self.destinations);
            let peers = self.peers.clone();
            tokio::spawn(async move {
                if !refused.is_empty() {
                    if let Err(error) = store.release_leases(refused).await {
                        tracing::warn!(%error, "cannot release first-attempt claims; they are taken again when they expire");
                    }
                    for destination in destinations.values() {
                        destination.wake();
                    }
                }
                if let Some(peers) = peers {
                    for name in elsewhere {
                        // Best effort: the holder also looks every second.
                        let _ = peers.client.publish(peers.subject.clone(), name.into()).await;
                    }
                }
            });
        }
        Some(valid)
    }

    /// The record span of one event: a consumer span under ingest's publish span (a new trace
    /// when the message has no usable `traceparent`).
    fn record_span(&self, message: &jetstream::Message, event: &NewEvent, ingest_context: Option<&str>) -> Span {
        let mut span = self.tracing.child_of("record", SpanKind::Consumer, ingest_context);
        if span.is_recording() {
            span.set("messaging.system", "nats");
            span.set("messaging.operation.type", "process");
            span.set("messaging.destination.name", message.subject.to_string());
            span.set("messaging.consumer.group.name", self.consumer.clone());
            span.set("inlet.source", event.source.clone());
            span.set("inlet.event_id", event.event_id.clone());
            if let Some(event_type) = &event.event_type {
                span.set("inlet.event_type", event_type.clone());
            }
            span.set("inlet.stream_sequence", i64::try_from(event.stream_sequence).unwrap_or(i64::MAX));
        }
        span
    }

    /// How long the claim on a just-recorded delivery lasts: the longest destination lease.
    fn first_lease(&self) -> Duration {
        self.destinations.values().map(|d| d.lease()).max().unwrap_or_default()
    }
}

/// Acks a recorded batch's messages.
async fn ack_all(messages: Vec<jetstream::Message>) {
    for message in messages {
        if let Err(error) = message.ack().await {
            tracing::warn!(%error, "ack failed; the message will be redelivered and recognised as a duplicate");
        }
    }
}
