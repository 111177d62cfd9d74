//! Keeping requests that failed verification in the quarantine stream (`[quarantine]`), without
//! ever making their `401`/`400` wait or fail.
//!
//! The request path only tries to put the request into a bounded queue ([`Quarantine::keep`]):
//! a full queue drops it (counted). One task writes the queue to JetStream, awaiting each PubAck
//! within `ingest.publish_timeout` (counted as kept or failed); the worker creates the stream,
//! and until it has, writes fail and are counted, nothing else.
//!
//! Each source has two slots (subjects): `first` takes the first `keep_first` failures after the
//! source's last verified request, `rest` the others. Only a genuine request resets the count, so
//! an anonymous flood lands in `rest` and evicts only `rest`: the start of a real failure burst
//! (the rotation nobody told Inlet about) stays in `first` until a request verifies again. The
//! count is per replica: with N replicas, up to N × `keep_first` land in `first`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use bytes::Bytes;
use http::{HeaderMap, header};
use inlet_shared::config::{Config, QuarantineSlot, SourceConfig};
use inlet_shared::quarantine::{MAX_VERIFICATION_HEADERS_BYTES, QuarantinedRequest, header_pairs_json};
use inlet_shared::signature::{Diagnosis, Verifier};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metric_names::QuarantineMetrics;

/// One request on its way to the quarantine stream.
struct Kept {
    subject: String,
    headers: async_nats::HeaderMap,
    body: Bytes,
    counted: QuarantineOutcomes,
}

/// The counters of one (source, slot) a write ends in.
#[derive(Clone)]
struct QuarantineOutcomes {
    kept: metrics::Counter,
    failed: metrics::Counter,
}

/// The quarantine writer's queue (or nothing, when `quarantine.enabled` is false).
pub struct Quarantine {
    queue: Option<mpsc::Sender<Kept>>,
    keep_first: i64,
    max_body_bytes: usize,
}

/// One source's side of the quarantine.
pub struct SourceQuarantine {
    /// Subjects of the `first` and `rest` slots; `None` when the source keeps nothing.
    subjects: Option<[String; 2]>,
    verification_headers: Vec<String>,
    /// Failures still to go to `first` before the next verified request.
    first_left: AtomicI64,
    metrics: QuarantineMetrics,
}

impl SourceQuarantine {
    /// The quarantine side of `source`, whose verifier is `verifier`.
    pub fn new(source: &SourceConfig, config: &Config, verifier: &Verifier) -> SourceQuarantine {
        let enabled = config.quarantine.enabled && source.quarantine;
        SourceQuarantine {
            subjects: enabled
                .then(|| QuarantineSlot::ALL.map(|slot| config.stream.quarantine_subject(&source.name, slot))),
            verification_headers: verifier.verification_header_names(),
            first_left: AtomicI64::new(config.quarantine.keep_first),
            metrics: QuarantineMetrics::new(&source.name),
        }
    }

    /// A request of this source verified: the next failures are the first of a new burst.
    pub fn verified(&self, keep_first: i64) {
        // A load first: the common case (nothing failed since) writes nothing shared.
        if self.first_left.load(Ordering::Relaxed) != keep_first {
            self.first_left.store(keep_first, Ordering::Relaxed);
        }
    }

    fn next_slot(&self) -> QuarantineSlot {
        let left = self.first_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n > 0).then(|| n - 1));
        if left.is_ok() { QuarantineSlot::First } else { QuarantineSlot::Rest }
    }
}

/// A request that failed verification, as the request path hands it over.
pub struct Failed<'a> {
    /// The source's name.
    pub source: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The headers as an event would store them (`Inlet-Original-Headers` JSON).
    pub original_headers: &'a str,
    /// The body as received.
    pub body: &'a Bytes,
    /// When it was received.
    pub received_at: SystemTime,
    /// Why it failed.
    pub diagnosis: Diagnosis,
    /// The source's verifier.
    pub verifier: &'a Verifier,
}

impl Quarantine {
    /// Starts the writer (when `quarantine.enabled`); it ends with `shutdown` or when the
    /// queue's last sender is dropped.
    pub fn start(config: &Config, js: jetstream::Context, shutdown: CancellationToken) -> Quarantine {
        let queue = config.quarantine.enabled.then(|| {
            let (sender, receiver) = mpsc::channel(config.quarantine.queue);
            tokio::spawn(write(js, receiver, config.ingest.publish_timeout, shutdown));
            sender
        });
        Quarantine { queue, keep_first: config.quarantine.keep_first, max_body_bytes: config.quarantine.max_body_bytes }
    }

    /// `quarantine.keep_first`, for [`SourceQuarantine::verified`].
    pub fn keep_first(&self) -> i64 {
        self.keep_first
    }

    /// Queues `failed` for the quarantine of `source`, if both keep anything; never waits.
    pub fn keep(&self, source: &SourceQuarantine, failed: Failed<'_>) {
        let (Some(queue), Some(subjects)) = (&self.queue, &source.subjects) else {
            return;
        };
        let slot = source.next_slot();
        let counted = source.metrics.outcomes(slot);
        let body_kept = failed.body.len() <= self.max_body_bytes;
        let verification: Vec<(&str, &str)> = source
            .verification_headers
            .iter()
            .filter_map(|name| Some((name.as_str(), failed.headers.get(name.as_str())?.to_str().ok()?)))
            .collect();
        let verification =
            Some(header_pairs_json(&verification)).filter(|json| json.len() <= MAX_VERIFICATION_HEADERS_BYTES);
        let request = QuarantinedRequest {
            source: failed.source.to_owned(),
            received_at_ms: failed
                .received_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            scheme: failed.verifier.kind(),
            diagnosis: failed.diagnosis.kind(),
            detail: failed.diagnosis.detail(),
            content_type: failed.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
            original_headers: Some(failed.original_headers.to_owned()).filter(|json| !json.is_empty()),
            verification_headers: verification,
            body_bytes: u64::try_from(failed.body.len()).unwrap_or(u64::MAX),
            body_kept,
        };
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in request.to_headers() {
            headers.insert(name, value.as_ref());
        }
        let subject = match slot {
            QuarantineSlot::First => subjects[0].clone(),
            QuarantineSlot::Rest => subjects[1].clone(),
        };
        // A clone of `Bytes` shares the buffer: what waits in the queue is bounded by
        // `quarantine.queue` × `quarantine.max_body_bytes`.
        let body = if body_kept { failed.body.clone() } else { Bytes::new() };
        if queue.try_send(Kept { subject, headers, body, counted }).is_err() {
            source.metrics.dropped(slot);
        }
    }
}

/// The writer: one publish at a time, its PubAck awaited (the quarantine is evidence, not the
/// intake path; one failing request per source per 100 ms is its usual rate).
async fn write(
    js: jetstream::Context,
    mut queue: mpsc::Receiver<Kept>,
    deadline: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let kept = tokio::select! {
            () = shutdown.cancelled() => return,
            kept = queue.recv() => match kept {
                Some(kept) => kept,
                None => return,
            },
        };
        let stored = async {
            let ack = js.publish_with_headers(kept.subject, kept.headers, kept.body).await.ok()?;
            ack.await.ok()
        };
        match tokio::time::timeout(deadline, stored).await {
            Ok(Some(_)) => kept.counted.kept.increment(1),
            _ => kept.counted.failed.increment(1),
        }
    }
}

impl QuarantineMetrics {
    fn outcomes(&self, slot: QuarantineSlot) -> QuarantineOutcomes {
        QuarantineOutcomes { kept: self.counter(slot, "kept"), failed: self.counter(slot, "failed") }
    }
}
