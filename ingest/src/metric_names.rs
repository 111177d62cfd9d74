//! Metrics the receiver emits. Labels come from closed sets only: configured source names
//! (unknown sources are labelled `_unknown`), outcome codes and secret indexes — never an
//! event id or a raw path.

use std::time::Duration;

use inlet_shared::config::QuarantineSlot;
use inlet_shared::signature::DiagnosisKind;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests by source and outcome.
pub const REQUESTS: &str = "inlet_ingest_requests_total";
/// Time from request start to answer.
pub const REQUEST_DURATION: &str = "inlet_ingest_request_duration_seconds";
/// Time from publish to PubAck.
pub const PUBLISH_DURATION: &str = "inlet_ingest_publish_duration_seconds";
/// Time to store a body over the claim-check threshold in the bodies bucket.
pub const BODY_STORE_DURATION: &str = "inlet_ingest_body_store_duration_seconds";
/// Signature failures by reason.
pub const SIGNATURE_FAILURES: &str = "inlet_ingest_signature_failures_total";
/// Signature failures answered 401/400 (not those over `ingest.failure_rate_limit`), by what
/// `Verifier::diagnose` found.
pub const SIGNATURE_DIAGNOSES: &str = "inlet_ingest_signature_diagnoses_total";
/// Requests that failed verification handed to the quarantine, by source, slot and outcome
/// (`kept`: stored; `failed`: no PubAck; `dropped`: the queue was full).
pub const QUARANTINE: &str = "inlet_ingest_quarantine_total";
/// Which configured secret verified a request.
pub const SECRET_MATCHES: &str = "inlet_ingest_secret_matches_total";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "inlet_ingest_requests_in_flight";
/// Whether the NATS connection is up (1) or not (0), as seen at the last readiness check.
pub const NATS_CONNECTED: &str = "inlet_ingest_nats_connected";
/// Whether JetStream stores events (1) or is known to be full or failing (0); see `health`.
pub const STORE_AVAILABLE: &str = "inlet_ingest_store_available";
/// Publishes JetStream did not acknowledge, by reason (requests answered at once while the
/// store is failing are not publishes and are not counted here).
pub const PUBLISH_FAILURES: &str = "inlet_ingest_publish_failures_total";
/// Store probes run while the store was failing, by outcome (`available`, `failing`).
pub const STORE_PROBES: &str = "inlet_ingest_store_probes_total";

/// Bytes of request bodies held now, against `ingest.max_buffered_body_bytes`.
pub const BUFFERED_BODY_BYTES: &str = "inlet_ingest_buffered_body_bytes";

/// Messages per JetStream commit in `fsync` mode (1 = a single publish).
pub const BATCH_MESSAGES: &str = "inlet_ingest_batch_messages";
/// Time to commit one atomic batch.
pub const BATCH_COMMIT_DURATION: &str = "inlet_ingest_batch_commit_duration_seconds";
/// Groups that fell back to individual publishes, by reason.
pub const BATCH_FALLBACKS: &str = "inlet_ingest_batch_fallbacks_total";

/// Changed `[ingest.tls]` certificate files that could not be used (the previous certificate
/// stayed in use), by `cert_file`.
pub const TLS_RELOAD_FAILURES: &str = "inlet_ingest_tls_reload_failures_total";
/// Not-after time of the certificate the public listener serves, by `cert_file`.
pub const TLS_CERTIFICATE_EXPIRY: &str = "inlet_ingest_tls_certificate_expiry_timestamp_seconds";
/// Both, for `inlet_shared::tls`.
pub const TLS: inlet_shared::tls::TlsMetricNames =
    inlet_shared::tls::TlsMetricNames { reload_failures: TLS_RELOAD_FAILURES, expiry: TLS_CERTIFICATE_EXPIRY };

/// Label used for requests to a source that is not configured.
pub const UNKNOWN_SOURCE_LABEL: &str = "_unknown";

/// Registers HELP text for every metric (promtool requires it).
pub fn describe() {
    describe_counter!(REQUESTS, "Webhook requests by source and outcome.");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time from request start to the answer.");
    describe_histogram!(PUBLISH_DURATION, Unit::Seconds, "Time from JetStream publish to PubAck.");
    describe_histogram!(
        BODY_STORE_DURATION,
        Unit::Seconds,
        "Time to store a body over ingest.claim_check_threshold_bytes in the bodies bucket."
    );
    describe_counter!(SIGNATURE_FAILURES, "Signature verification failures by source and reason.");
    describe_counter!(
        SIGNATURE_DIAGNOSES,
        "Signature failures answered 401/400, by source and diagnosis (why they failed)."
    );
    describe_counter!(QUARANTINE, "Failed requests handed to the quarantine, by source, slot and outcome.");
    describe_counter!(SECRET_MATCHES, "Verified requests by source and index of the secret that matched.");
    describe_gauge!(IN_FLIGHT, "Webhook requests being handled now.");
    describe_gauge!(NATS_CONNECTED, "1 when the NATS connection is up, else 0.");
    describe_gauge!(STORE_AVAILABLE, "1 while JetStream stores events, 0 while it is known to be full or failing.");
    describe_counter!(PUBLISH_FAILURES, "JetStream publishes without a PubAck, by reason.");
    describe_counter!(STORE_PROBES, "Probes of a failing JetStream store, by outcome.");
    describe_gauge!(
        BUFFERED_BODY_BYTES,
        Unit::Bytes,
        "Bytes of request bodies held now (reserved against ingest.max_buffered_body_bytes)."
    );
    describe_histogram!(BATCH_MESSAGES, "Messages per JetStream commit in fsync mode (1 is a single publish).");
    describe_histogram!(BATCH_COMMIT_DURATION, Unit::Seconds, "Time to commit one atomic batch in fsync mode.");
    describe_counter!(BATCH_FALLBACKS, "Atomic batches that fell back to individual publishes, by reason.");
    TLS.describe("public");
}

/// Every `outcome` label value of [`REQUESTS`].
pub const OUTCOMES: &[&str] = &[
    "accepted",
    "duplicate",
    "challenge",
    "unknown_source",
    "method_not_allowed",
    "stale_timestamp",
    "malformed_signature",
    "missing_signature",
    "bad_signature",
    "too_large",
    "headers_too_large",
    "body_timeout",
    "body_read_error",
    "rate_limited",
    "too_many_failures",
    "busy",
    "unavailable",
    "store_full",
];

/// Every `reason` label value of [`SIGNATURE_FAILURES`].
pub const SIGNATURE_REASONS: &[&str] = &["missing_header", "malformed", "stale", "mismatch"];

/// Every `outcome` label value of [`QUARANTINE`].
pub const QUARANTINE_OUTCOMES: &[&str] = &["kept", "failed", "dropped"];

/// Metric handles of one source, registered once so the request path neither allocates label
/// strings nor hashes them.
pub struct SourceMetrics {
    requests: Vec<(&'static str, metrics::Counter)>,
    duration: metrics::Histogram,
    signature_failures: Vec<(&'static str, metrics::Counter)>,
    diagnoses: Vec<(DiagnosisKind, metrics::Counter)>,
    secret_matches: Vec<metrics::Counter>,
}

impl SourceMetrics {
    /// Registers the handles of `source`, which has `secrets` configured secrets.
    pub fn new(source: &str, secrets: usize) -> SourceMetrics {
        let label = source.to_owned();
        SourceMetrics {
            requests: OUTCOMES
                .iter()
                .map(|outcome| (*outcome, metrics::counter!(REQUESTS, "source" => label.clone(), "outcome" => *outcome)))
                .collect(),
            duration: metrics::histogram!(REQUEST_DURATION, "source" => label.clone()),
            signature_failures: SIGNATURE_REASONS
                .iter()
                .map(|reason| {
                    (*reason, metrics::counter!(SIGNATURE_FAILURES, "source" => label.clone(), "reason" => *reason))
                })
                .collect(),
            diagnoses: DiagnosisKind::ALL
                .iter()
                .map(|kind| {
                    let counter = metrics::counter!(SIGNATURE_DIAGNOSES, "source" => label.clone(), "diagnosis" => kind.as_str());
                    (*kind, counter)
                })
                .collect(),
            secret_matches: (0..secrets)
                .map(|index| metrics::counter!(SECRET_MATCHES, "source" => label.clone(), "secret_index" => index.to_string()))
                .collect(),
        }
    }

    /// One webhook request finished.
    pub fn request_finished(&self, outcome: &'static str, elapsed: Duration) {
        if let Some((_, counter)) = self.requests.iter().find(|(name, _)| *name == outcome) {
            counter.increment(1);
        }
        self.duration.record(elapsed.as_secs_f64());
    }

    /// A signature was rejected.
    pub fn signature_rejected(&self, reason: &'static str) {
        if let Some((_, counter)) = self.signature_failures.iter().find(|(name, _)| *name == reason) {
            counter.increment(1);
        }
    }

    /// A failure answered 401/400 was diagnosed as `kind`.
    pub fn diagnosed(&self, kind: DiagnosisKind) {
        if let Some((_, counter)) = self.diagnoses.iter().find(|(known, _)| *known == kind) {
            counter.increment(1);
        }
    }

    /// A signature verified with secret number `index`.
    pub fn secret_matched(&self, index: usize) {
        if let Some(counter) = self.secret_matches.get(index) {
            counter.increment(1);
        }
    }
}

/// The quarantine counters of one source, registered once.
pub struct QuarantineMetrics {
    counters: Vec<(QuarantineSlot, &'static str, metrics::Counter)>,
}

impl QuarantineMetrics {
    /// Registers the handles of `source`.
    pub fn new(source: &str) -> QuarantineMetrics {
        let mut counters = Vec::new();
        for slot in QuarantineSlot::ALL {
            for outcome in QUARANTINE_OUTCOMES {
                let counter = metrics::counter!(QUARANTINE, "source" => source.to_owned(), "slot" => slot.as_str(), "outcome" => *outcome);
                counters.push((slot, *outcome, counter));
            }
        }
        QuarantineMetrics { counters }
    }

    /// The counter of `slot` and `outcome` (one of [`QUARANTINE_OUTCOMES`]).
    pub fn counter(&self, slot: QuarantineSlot, outcome: &'static str) -> metrics::Counter {
        self.counters
            .iter()
            .find(|(s, o, _)| *s == slot && *o == outcome)
            .map_or_else(metrics::Counter::noop, |(_, _, counter)| counter.clone())
    }

    /// A request for `slot` found the queue full.
    pub fn dropped(&self, slot: QuarantineSlot) {
        self.counter(slot, "dropped").increment(1);
    }
}

/// A request for a source that is not configured finished.
pub fn unknown_source(elapsed: Duration) {
    metrics::counter!(REQUESTS, "source" => UNKNOWN_SOURCE_LABEL, "outcome" => "unknown_source").increment(1);
    metrics::histogram!(REQUEST_DURATION, "source" => UNKNOWN_SOURCE_LABEL).record(elapsed.as_secs_f64());
}

/// A publish to `stream` got no PubAck.
pub fn publish_failed(stream: &str, failure: crate::pub_ack::PublishFailure) {
    metrics::counter!(PUBLISH_FAILURES, "stream" => stream.to_owned(), "reason" => failure.as_str()).increment(1);
}

/// A probe of the failing store behind `stream` ended with `outcome` (`available` or `failing`).
pub fn store_probed(stream: &str, outcome: &'static str) {
    metrics::counter!(STORE_PROBES, "stream" => stream.to_owned(), "outcome" => outcome).increment(1);
}

/// A body over the claim-check threshold was stored in the bodies bucket after `elapsed`.
pub fn body_stored(elapsed: Duration) {
    metrics::histogram!(BODY_STORE_DURATION).record(elapsed.as_secs_f64());
}

/// A publish was acknowledged after `elapsed`.
pub fn published(elapsed: Duration) {
    metrics::histogram!(PUBLISH_DURATION).record(elapsed.as_secs_f64());
}

/// Tracks one in-flight request; decrements when dropped (also on cancellation).
pub struct InFlight(metrics::Gauge);

impl InFlight {
    /// Starts tracking on `gauge` (the [`IN_FLIGHT`] handle).
    pub fn start(gauge: &metrics::Gauge) -> InFlight {
        gauge.increment(1.0);
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
