//! Metrics the worker emits. Labels come from closed sets only: configured source and
//! destination names, outcome and reason codes — never an event or delivery id.

use std::time::Duration;

use crate::model::{AttemptOutcome, DeadLetterReason, DeliveryStatus};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Events read from the stream, by source and outcome (`recorded`, `unrouted`, `duplicate`,
/// `conflict`, `invalid`, `body_unavailable`: a claim-checked body not fetched, the message to
/// come back).
pub const EVENTS: &str = "inlet_worker_events_total";
/// Delivery attempts by destination and outcome (`delivered`, `transient`, `permanent`).
pub const ATTEMPTS: &str = "inlet_worker_delivery_attempts_total";
/// Deliveries that reached a final state, by destination and outcome (`delivered`, `dead_lettered`).
pub const DELIVERIES: &str = "inlet_worker_deliveries_total";
/// Retries scheduled, by destination.
pub const RETRIES: &str = "inlet_worker_delivery_retries_total";
/// Deliveries dead-lettered, by destination and reason.
pub const DEAD_LETTERED: &str = "inlet_worker_dead_lettered_total";
/// Deliveries postponed because the breaker was open, by destination.
pub const BREAKER_POSTPONED: &str = "inlet_worker_breaker_postponed_total";
/// Duration of one HTTP attempt, by destination.
pub const ATTEMPT_DURATION: &str = "inlet_worker_delivery_attempt_duration_seconds";
/// Receipt at ingest to successful delivery, by destination.
pub const END_TO_END: &str = "inlet_worker_receipt_to_delivery_seconds";
/// SQLite batch commit time.
pub const BATCH_COMMIT: &str = "inlet_worker_record_batch_duration_seconds";
/// Time of one store commit (SQLite: the WAL fsync with `synchronous = FULL`; PostgreSQL: the
/// `COMMIT` round trip, the server's WAL flush included).
pub const DB_COMMIT: &str = "inlet_worker_db_commit_duration_seconds";
/// Writer commands per SQLite transaction (group commit size).
pub const DB_GROUP: &str = "inlet_worker_db_group_messages";
/// Time the writer spends on one group, statements and commit.
pub const DB_GROUP_DURATION: &str = "inlet_worker_db_group_duration_seconds";
/// Breaker state per destination (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "inlet_worker_breaker_state";
/// Dead-lettered deliveries currently stored.
pub const DEAD_LETTER_BACKLOG: &str = "inlet_worker_dead_letter_backlog";
/// Pending (not yet delivered) deliveries.
pub const PENDING_DELIVERIES: &str = "inlet_worker_pending_deliveries";
/// Messages in the stream not yet delivered to the recording consumer.
pub const CONSUMER_PENDING: &str = "inlet_worker_consumer_pending_messages";
/// Age of the oldest event with a pending delivery.
pub const OLDEST_PENDING_AGE: &str = "inlet_worker_oldest_pending_age_seconds";
/// Recorded events SQLite's search index has not taken yet (counted up to 10,000; always 0 on
/// PostgreSQL, which indexes as it records), refreshed every `worker.stats_interval`.
pub const SEARCH_INDEX_LAG: &str = "inlet_worker_search_index_lag_events";
/// Ordered deliveries waiting for an earlier delivery of their key (pending, or a blocking dead
/// letter), by destination, as last counted.
pub const ORDERED_WAITING: &str = "inlet_worker_ordered_deliveries_waiting";
/// Deliveries claimed again because their previous attempt's lease ended without a result (an
/// owner that died or stalled), by destination.
pub const RESTARTED: &str = "inlet_worker_deliveries_restarted_total";
/// Attempt results dropped because the delivery had been claimed again meanwhile, by destination.
pub const SUPERSEDED: &str = "inlet_worker_attempts_superseded_total";
/// Whether this worker holds a destination now (1) or another worker does (0), by destination;
/// with SQLite the one worker always holds all.
pub const DESTINATION_HELD: &str = "inlet_worker_destination_held";
/// Whether this worker runs the periodic jobs (pruning) now.
pub const JOBS_HELD: &str = "inlet_worker_jobs_held";

/// Workers this worker sees live on its store (several workers on PostgreSQL).
pub const PLACEMENT_WORKERS: &str = "inlet_worker_placement_workers";

/// Whether the store takes writes (1) or not (0): what `/readyz` reports as `database_writer`,
/// refreshed every `worker.stats_interval`.
pub const STORE_AVAILABLE: &str = "inlet_worker_store_available";
/// Whether the worker's NATS connection is up (1) or not (0), refreshed every
/// `worker.stats_interval`.
pub const NATS_CONNECTED: &str = "inlet_worker_nats_connected";
/// Changed `[worker.tls]` certificate files that could not be used (the previous certificate
/// stayed in use), by `cert_file`.
pub const TLS_RELOAD_FAILURES: &str = "inlet_worker_tls_reload_failures_total";
/// Not-after time of the certificate the main listener serves, by `cert_file`.
pub const TLS_CERTIFICATE_EXPIRY: &str = "inlet_worker_tls_certificate_expiry_timestamp_seconds";
/// Both, for `inlet_shared::tls`.
pub const TLS: inlet_shared::tls::TlsMetricNames =
    inlet_shared::tls::TlsMetricNames { reload_failures: TLS_RELOAD_FAILURES, expiry: TLS_CERTIFICATE_EXPIRY };

/// Requests kept in the quarantine stream now, by source and slot (`first`, `rest`), as last
/// counted (every `worker.stats_interval` by the holder of the jobs, and at each list or admission).
pub const QUARANTINED: &str = "inlet_worker_quarantined_requests";
/// Quarantined requests an admin asked to admit, by source and outcome (`admitted`: verified with
/// the current secrets and published; `refused`: still failing or not admissible).
pub const QUARANTINE_ADMISSIONS: &str = "inlet_worker_quarantine_admissions_total";
/// Route filters evaluated, by source and outcome (`match`, `no_match`, `error`: the expression
/// could not be evaluated to a bool, e.g. a missing field; treated as no match).
pub const FILTER_EVALUATIONS: &str = "inlet_worker_filter_evaluations_total";
/// Transform runs, by outcome (`ok`, `error`, `stopped`: past its deadline or step bound,
/// `not_json`, `too_large`, `shut_down`).
pub const TRANSFORM_RUNS: &str = "inlet_worker_transform_runs_total";
/// Time of one transform run, queueing for the pool included.
pub const TRANSFORM_DURATION: &str = "inlet_worker_transform_duration_seconds";

/// Registers HELP text for every metric.
pub fn describe() {
    describe_counter!(EVENTS, "Events read from the stream by source and outcome.");
    describe_counter!(ATTEMPTS, "Delivery attempts by destination and outcome.");
    describe_counter!(DELIVERIES, "Deliveries that reached a final state, by destination and outcome.");
    describe_counter!(RETRIES, "Delivery retries scheduled, by destination.");
    describe_counter!(DEAD_LETTERED, "Deliveries dead-lettered, by destination and reason.");
    describe_counter!(BREAKER_POSTPONED, "Deliveries postponed while the destination's breaker was open.");
    describe_histogram!(ATTEMPT_DURATION, Unit::Seconds, "Duration of one delivery attempt.");
    describe_histogram!(END_TO_END, Unit::Seconds, "Time from receipt at ingest to successful delivery.");
    describe_histogram!(BATCH_COMMIT, Unit::Seconds, "Time to record one fetched batch in SQLite.");
    describe_histogram!(DB_COMMIT, Unit::Seconds, "Time of one store commit (SQLite or PostgreSQL).");
    describe_histogram!(DB_GROUP, "Writer commands per SQLite transaction.");
    describe_histogram!(DB_GROUP_DURATION, Unit::Seconds, "Time the writer spends on one transaction.");
    describe_gauge!(BREAKER_STATE, "Circuit breaker state per destination: 0 closed, 1 open, 2 half-open.");
    describe_gauge!(DEAD_LETTER_BACKLOG, "Dead-lettered deliveries stored (replayable).");
    describe_gauge!(PENDING_DELIVERIES, "Deliveries not yet delivered or dead-lettered.");
    describe_gauge!(CONSUMER_PENDING, "Stream messages not yet fetched by the recording consumer.");
    describe_gauge!(
        DESTINATION_HELD,
        "1 while this worker holds the destination (claims and attempts its deliveries)."
    );
    describe_gauge!(PLACEMENT_WORKERS, "Workers sharing this worker's PostgreSQL store, as it last saw them.");
    describe_gauge!(JOBS_HELD, "1 while this worker runs the periodic jobs (pruning).");
    describe_gauge!(OLDEST_PENDING_AGE, Unit::Seconds, "Age of the oldest event with a pending delivery.");
    describe_gauge!(
        SEARCH_INDEX_LAG,
        "Recorded events the search index has not taken yet (SQLite; counted up to 10000; 0 on PostgreSQL)."
    );
    describe_gauge!(
        ORDERED_WAITING,
        "Ordered deliveries waiting for an earlier delivery of their key, by destination, as last counted."
    );
    describe_gauge!(STORE_AVAILABLE, "1 while the store takes writes, else 0 (as /readyz reports it).");
    describe_gauge!(NATS_CONNECTED, "1 while the NATS connection is up, else 0.");
    describe_counter!(
        RESTARTED,
        "Deliveries claimed again after their previous attempt's lease ended without a result."
    );
    describe_counter!(SUPERSEDED, "Attempt results dropped because the delivery had been claimed again meanwhile.");
    describe_gauge!(QUARANTINED, "Requests kept in the quarantine stream, by source and slot, as last counted.");
    describe_counter!(QUARANTINE_ADMISSIONS, "Quarantined requests an admin asked to admit, by source and outcome.");
    describe_counter!(FILTER_EVALUATIONS, "Route filters evaluated, by source and outcome.");
    describe_counter!(TRANSFORM_RUNS, "Transform runs, by outcome.");
    describe_histogram!(TRANSFORM_DURATION, Unit::Seconds, "Time of one transform run, queueing included.");
    TLS.describe("main");
}

/// A route filter of `source` was evaluated: `outcome` is `match`, `no_match` or `error`.
pub fn filter_evaluated(source: &str, outcome: &'static str) {
    metrics::counter!(FILTER_EVALUATIONS, "source" => source.to_owned(), "outcome" => outcome).increment(1);
}

/// A transform ran for `elapsed`; `failure` is its error's label, `None` when it succeeded.
pub fn transform_run(failure: Option<&'static str>, elapsed: Duration) {
    metrics::counter!(TRANSFORM_RUNS, "outcome" => failure.unwrap_or("ok")).increment(1);
    metrics::histogram!(TRANSFORM_DURATION).record(elapsed.as_secs_f64());
}

/// `source`'s `slot` holds `count` quarantined requests.
pub fn quarantined(source: &str, slot: inlet_shared::config::QuarantineSlot, count: u64) {
    metrics::gauge!(QUARANTINED, "source" => source.to_owned(), "slot" => slot.as_str()).set(count as f64);
}

/// An admission of `source`'s requests admitted `admitted` and refused `refused`.
pub fn admitted(source: &str, admitted: usize, refused: usize) {
    for (outcome, n) in [("admitted", admitted), ("refused", refused)] {
        metrics::counter!(QUARANTINE_ADMISSIONS, "source" => source.to_owned(), "outcome" => outcome)
            .increment(n as u64);
    }
}

/// Whether the store takes writes and NATS is connected, as `/readyz` would answer now.
pub fn readiness(store_available: bool, nats_connected: bool) {
    let value = |up: bool| if up { 1.0 } else { 0.0 };
    metrics::gauge!(STORE_AVAILABLE).set(value(store_available));
    metrics::gauge!(NATS_CONNECTED).set(value(nats_connected));
}

/// `n` deliveries of `destination` were restarted (see [`RESTARTED`]).
pub fn restarted(destination: &str, n: u64) {
    metrics::counter!(RESTARTED, "destination" => destination.to_owned()).increment(n);
}

/// Whether this worker holds `destination` (`None`: the periodic jobs) now.
pub fn held(destination: Option<&str>, held: bool) {
    let value = if held { 1.0 } else { 0.0 };
    match destination {
        Some(name) => metrics::gauge!(DESTINATION_HELD, "destination" => name.to_owned()).set(value),
        None => metrics::gauge!(JOBS_HELD).set(value),
    }
}

/// How many workers this one sees live (see [`PLACEMENT_WORKERS`]).
pub fn placement_workers(live: usize) {
    metrics::gauge!(PLACEMENT_WORKERS).set(live as f64);
}

/// An attempt's result for `destination` was superseded (see [`SUPERSEDED`]).
pub fn superseded(destination: &str) {
    metrics::counter!(SUPERSEDED, "destination" => destination.to_owned()).increment(1);
}

/// An event was read and classified.
pub fn event(source: &str, outcome: &'static str) {
    events(source, outcome, 1);
}

/// `n` events of `source` were read and classified as `outcome`.
pub fn events(source: &str, outcome: &'static str, n: u64) {
    metrics::counter!(EVENTS, "source" => source.to_owned(), "outcome" => outcome).increment(n);
}

/// One destination's per-attempt metrics, registered once: a labelled lookup per delivery
/// (label strings allocated and hashed every time) is measurable at thousands per second.
pub struct DestinationMetrics {
    attempts_delivered: metrics::Counter,
    attempts_transient: metrics::Counter,
    attempts_permanent: metrics::Counter,
    attempt_duration: metrics::Histogram,
    delivered: metrics::Counter,
    end_to_end: metrics::Histogram,
}

impl DestinationMetrics {
    /// Registers the handles for `destination`.
    pub fn new(destination: &str) -> DestinationMetrics {
        // Dead letters are rare, and `increase()` cannot see a counter's first sample: registered
        // at 0 here, the first dead letter of a destination raises the alert too.
        for reason in DeadLetterReason::ALL {
            metrics::counter!(DEAD_LETTERED, "destination" => destination.to_owned(), "reason" => reason.as_str())
                .increment(0);
        }
        let attempts = |outcome: &'static str| metrics::counter!(ATTEMPTS, "destination" => destination.to_owned(), "outcome" => outcome);
        DestinationMetrics {
            attempts_delivered: attempts(AttemptOutcome::Delivered.as_str()),
            attempts_transient: attempts(AttemptOutcome::Transient.as_str()),
            attempts_permanent: attempts(AttemptOutcome::Permanent.as_str()),
            attempt_duration: metrics::histogram!(ATTEMPT_DURATION, "destination" => destination.to_owned()),
            delivered: metrics::counter!(DELIVERIES, "destination" => destination.to_owned(), "outcome" => DeliveryStatus::Delivered.as_str()),
            end_to_end: metrics::histogram!(END_TO_END, "destination" => destination.to_owned()),
        }
    }

    /// An attempt finished with `outcome`.
    pub fn attempt(&self, outcome: AttemptOutcome, elapsed: Duration) {
        match outcome {
            AttemptOutcome::Delivered => &self.attempts_delivered,
            AttemptOutcome::Transient => &self.attempts_transient,
            AttemptOutcome::Permanent => &self.attempts_permanent,
        }
        .increment(1);
        self.attempt_duration.record(elapsed.as_secs_f64());
    }

    /// A delivery succeeded `receipt_age` after ingest received its event.
    pub fn delivered(&self, receipt_age: Duration) {
        self.delivered.increment(1);
        self.end_to_end.record(receipt_age.as_secs_f64());
    }
}
