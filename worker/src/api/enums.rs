//! The API's scalar and enums: the RFC 3339 `DateTime` every timestamp is given and taken as,
//! and enums that each mirror one of the model's labelled enums (`remote`, so the two cannot
//! drift: a variant added to the model and not here fails to compile).

use async_graphql::{Enum, InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::SecondsFormat;

use crate::model::UnixMs;

/// A point in time: RFC 3339. Given in UTC with millisecond precision
/// (`2026-12-03T16:04:05.123Z`); taken with any offset. GraphQL's `Int` is 32-bit, too small for
/// Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime(pub UnixMs);

#[Scalar(name = "DateTime", specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(text) => chrono::DateTime::parse_from_rfc3339(&text)
                .map(|at| DateTime(UnixMs(at.timestamp_millis())))
                .map_err(|error| InputValueError::custom(format!("not an RFC 3339 date-time ({error})"))),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_rfc3339())
    }
}

impl DateTime {
    /// `2026-12-03T16:04:05.123Z`.
    pub fn to_rfc3339(self) -> String {
        let at = chrono::DateTime::from_timestamp_millis(self.0.0).unwrap_or_default();
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// As the API writes it (a bulk replay keeps its filter as JSON).
impl serde::Serialize for DateTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// Where a delivery stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::DeliveryStatus")]
pub enum DeliveryStatus {
    /// Due now or later, or being attempted.
    Pending,
    /// The destination answered 2xx.
    Delivered,
    /// Given up on (see `DeadLetterReason`); replayable.
    DeadLettered,
    /// A dead letter an operator resolved without delivering it (see `Delivery.dismissal`):
    /// never attempted again, no longer a dead letter, kept and pruned like a delivered one;
    /// `replayDelivery` still takes it back.
    Dismissed,
}

/// How one attempt ended.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::AttemptOutcome")]
pub enum AttemptOutcome {
    /// 2xx.
    Delivered,
    /// Worth retrying (5xx, 408, 429, timeout, connection error).
    Transient,
    /// Will not succeed by retrying (most 4xx).
    Permanent,
}

/// Why a delivery was dead-lettered.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[graphql(remote = "crate::model::DeadLetterReason")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeadLetterReason {
    /// The destination answered a 4xx that retrying cannot fix.
    #[graphql(name = "PERMANENT_4XX")]
    #[serde(rename = "PERMANENT_4XX")]
    Permanent4xx,
    /// Every scheduled attempt failed.
    RetriesExhausted,
    /// The destination was removed from the config (found pending at startup).
    UnknownDestination,
    /// The route's `transform` failed on the event (the delivery's last error says why).
    TransformFailed,
}

/// Whether any route matched an event when it was recorded.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::RouteStatus")]
pub enum RouteStatus {
    /// At least one destination.
    Routed,
    /// No route matched: recorded, delivered nowhere.
    Unrouted,
}

/// Where a bulk replay job stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::BulkReplayStatus")]
pub enum BulkReplayStatus {
    /// Replaying its selection.
    Running,
    /// Went through its whole selection.
    Finished,
    /// Stopped by an operator.
    Cancelled,
    /// Stopped by an error.
    Failed,
}

/// What an audit row records.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::model::AuditAction")]
pub enum AuditAction {
    /// A delivery replayed by an operator.
    ReplayDelivery,
    /// A dead letter dismissed by an operator (resolved without delivery; `detail`: the note).
    DismissDeadLetter,
    /// An event replayed to a destination by an operator (`target`: the new delivery;
    /// `detail`: which delivery or event, to which destination).
    ReplayToDestination,
    /// A bulk replay started.
    BulkReplay,
    /// A bulk replay cancelled.
    CancelBulkReplay,
    /// A console sign-in.
    SignIn,
    /// A session ended by the worker (the membership no longer holds).
    SessionEnded,
    /// A provider account linked to a user.
    LinkAccount,
    /// A provider account unlinked.
    UnlinkAccount,
    /// An API token created.
    CreateApiToken,
    /// An API token revoked.
    RevokeApiToken,
    /// Quarantined requests re-verified and admitted (`target`: the source; `detail`: as which
    /// events).
    AdmitQuarantined,
    /// A provider backfill (`target`: the source; `count`: events recovered; `detail`: since
    /// when, listed, already stored, failed).
    Backfill,
}

/// Why a request failed verification.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "inlet_shared::signature::DiagnosisKind")]
pub enum Diagnosis {
    /// A header the scheme needs is absent.
    MissingHeader,
    /// A header cannot be read.
    MalformedHeader,
    /// Validly signed, longer ago than the tolerance.
    TimestampTooOld,
    /// Validly signed, further in the future than the tolerance.
    TimestampTooNew,
    /// Signed with a secret that is not configured.
    UnknownSecret,
    /// A configured secret signed the body before something changed it on the way.
    BodyChanged,
    /// A configured secret, read another way by the sender (encoding).
    SecretEncoding,
    /// No configured secret matched; the body was too large to try the usual causes.
    NotDiagnosed,
}

/// Where a source's quarantined request is kept.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "inlet_shared::config::QuarantineSlot")]
pub enum QuarantineSlot {
    /// Among the first failures after the source's last verified request (a flood does not
    /// evict them).
    First,
    /// Any other failure.
    Rest,
}

/// A circuit breaker's state.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::breaker::BreakerState")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// No calls until the cooldown ends.
    Open,
    /// One probe call allowed.
    HalfOpen,
}

/// What replaying one delivery did.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::replay::ReplayEffect")]
pub enum ReplayEffect {
    /// Set back to pending, due now.
    Enqueued,
    /// It was pending, waiting for a later retry: now due at once.
    Rescheduled,
    /// It was pending and an attempt holds it now, or it was due already: nothing changed.
    AlreadyPending,
}

/// Which routing config a replayed delivery's attempts use (docs/routing.md, "Replays and
/// config versions").
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
#[graphql(remote = "crate::model::ReplayConfig")]
pub enum ReplayConfig {
    /// The worker's routes when the attempt runs (what a first attempt uses too).
    #[default]
    Current,
    /// The routes the event was routed with (its `configVersion`): their transform for the
    /// delivery's destination. Refused (`BAD_USER_INPUT`) for an event recorded without one.
    AsReceived,
}
