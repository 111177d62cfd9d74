//! Metrics the receiver emits. Labels come from closed sets only: configured source names
//! (unknown sources are labelled `_unknown`), outcome codes and secret indexes — never an
//! event id or a raw path.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests by source and outcome.
pub const REQUESTS: &str = "inlet_ingest_requests_total";
/// Time from request start to answer.
pub const REQUEST_DURATION: &str = "inlet_ingest_request_duration_seconds";
/// Time from publish to PubAck.
pub const PUBLISH_DURATION: &str = "inlet_ingest_publish_duration_seconds";
/// Signature failures by reason.
pub const SIGNATURE_FAILURES: &str = "inlet_ingest_signature_failures_total";
/// Which configured secret verified a request.
pub const SECRET_MATCHES: &str = "inlet_ingest_secret_matches_total";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "inlet_ingest_requests_in_flight";
/// Whether the NATS connection is up (1) or not (0), as seen at the last readiness check.
pub const NATS_CONNECTED: &str = "inlet_ingest_nats_connected";

/// Label used for requests to a source that is not configured.
pub const UNKNOWN_SOURCE_LABEL: &str = "_unknown";

/// Registers HELP text for every metric (promtool requires it).
pub fn describe() {
    describe_counter!(REQUESTS, "Webhook requests by source and outcome.");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time from request start to the answer.");
    describe_histogram!(PUBLISH_DURATION, Unit::Seconds, "Time from JetStream publish to PubAck.");
    describe_counter!(SIGNATURE_FAILURES, "Signature verification failures by source and reason.");
    describe_counter!(SECRET_MATCHES, "Verified requests by source and index of the secret that matched.");
    describe_gauge!(IN_FLIGHT, "Webhook requests being handled now.");
    describe_gauge!(NATS_CONNECTED, "1 when the NATS connection is up, else 0.");
}

/// One webhook request finished.
pub fn request_finished(source: &str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!(REQUESTS, "source" => source.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_DURATION, "source" => source.to_owned()).record(elapsed.as_secs_f64());
}

/// A signature was rejected.
pub fn signature_rejected(source: &str, reason: &'static str) {
    metrics::counter!(SIGNATURE_FAILURES, "source" => source.to_owned(), "reason" => reason).increment(1);
}

/// A signature verified with secret number `index`.
pub fn secret_matched(source: &str, index: usize) {
    metrics::counter!(SECRET_MATCHES, "source" => source.to_owned(), "secret_index" => index.to_string()).increment(1);
}

/// A publish was acknowledged after `elapsed`.
pub fn published(elapsed: Duration) {
    metrics::histogram!(PUBLISH_DURATION).record(elapsed.as_secs_f64());
}

/// Tracks one in-flight request; decrements when dropped (also on cancellation).
pub struct InFlight;

impl InFlight {
    /// Starts tracking.
    pub fn start() -> InFlight {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}
