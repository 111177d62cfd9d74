//! The worker's domain types: ids, statuses and time, spoken by the store, the data plane and
//! the operator plane alike.
//!
//! Ground floor: this module imports nothing of the crate, and no database or GraphQL crate.
//! Every status has one enum whose stored label (`as_str`, `parse`) is the one spelling of it;
//! the store maps them to columns, the API to its strings, metrics to their labels.

use std::fmt;
use std::time::Duration;

/// A point in time as Unix milliseconds: what every timestamp column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMs(pub i64);

impl UnixMs {
    /// Now, by the system clock.
    pub fn now() -> UnixMs {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        UnixMs(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
    }

    /// `duration` later (saturating).
    pub fn plus(self, duration: Duration) -> UnixMs {
        UnixMs(self.0.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)))
    }

    /// `duration` earlier (saturating).
    pub fn minus(self, duration: Duration) -> UnixMs {
        UnixMs(self.0.saturating_sub(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)))
    }

    /// Time from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: UnixMs) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// Inlet's id of a recorded event (its row in the store; shown as the API's `Event.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventRowId(pub i64);

/// The id of one (event, destination) delivery. Fixed when the event is recorded and sent as
/// `Idempotency-Key` and `webhook-id`, so it must never be handed out twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId(String);

impl DeliveryId {
    /// The delivery id of (event row, destination). Ids grow with the event's row id, so
    /// inserting deliveries and attempts appends to their indexes instead of touching a random
    /// page per event (a hash id cost two extra 4 KiB WAL frames per event under load).
    pub fn of(event: EventRowId, destination: &str) -> DeliveryId {
        DeliveryId(format!("dlv_{:012x}_{destination}", event.0))
    }

    /// The id of the `n`th delivery made by replaying event `event` to `destination` (by an
    /// operator, not by the routes): `dlv_<event>_<destination>~r<n>`, `n` counting from 1 over
    /// that event's replays to destinations. Distinct from every routed delivery's id (no
    /// destination name has a `~`) and from the event's other replays'; without a `.`, which
    /// Standard Webhooks forbids in `webhook-id`; never handed out twice,
    /// because an event's deliveries are only ever deleted with it and its row id is never
    /// reused.
    pub fn replayed_to(event: EventRowId, destination: &str, n: i64) -> DeliveryId {
        DeliveryId(format!("dlv_{:012x}_{destination}~r{n}", event.0))
    }

    /// An id as stored or given by a caller (not checked: an unknown id is simply not found).
    pub fn from_stored(id: String) -> DeliveryId {
        DeliveryId(id)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of a route's `ordering_key` pointer in an event's body, as stored with the delivery
/// (`routes::ordering_key_of` derives it; bounded, see there). Deliveries with equal keys to one
/// destination are attempted one at a time, in receipt order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderingKey(String);

impl OrderingKey {
    /// A key as derived or stored (not checked).
    pub fn from_stored(key: String) -> OrderingKey {
        OrderingKey(key)
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How one delivery is ordered: its key, and whether, once dead-lettered, it holds the key's
/// later deliveries (`ordering_on_dead_letter = "block"`) until replayed and delivered, or
/// dismissed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOrdering {
    /// The key.
    pub key: OrderingKey,
    /// Whether a dead letter of this delivery blocks the key.
    pub blocks_when_dead: bool,
}

/// The version of the routing config an event was routed with: the SHA-256 (64 lower-case hex
/// digits) of the canonical JSON of the routes (`routes::Router::version`), stored in full with
/// the event and the snapshot (`config_versions`). Nothing secret goes into it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigVersion(String);

impl ConfigVersion {
    /// How many hex digits [`ConfigVersion::short`] shows.
    pub const SHORT: usize = 12;

    /// A version as computed or stored (not checked: an unknown one is simply not found).
    pub fn from_stored(version: String) -> ConfigVersion {
        ConfigVersion(version)
    }

    /// The full hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its first [`ConfigVersion::SHORT`] hex digits, for display.
    pub fn short(&self) -> &str {
        self.0.get(..Self::SHORT).unwrap_or(&self.0)
    }
}

impl fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which routing config a replayed delivery's attempts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReplayConfig {
    /// The worker's config when the attempt runs (what a first attempt uses too).
    #[default]
    Current,
    /// The config the event was routed with (its recorded [`ConfigVersion`]).
    AsReceived,
}

impl ReplayConfig {
    /// The label in audit rows and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayConfig::Current => "current",
            ReplayConfig::AsReceived => "as_received",
        }
    }
}

/// A fencing token: a delivery's `lease_token` when an attempt claimed it. The attempt's result
/// is recorded only while it is still the delivery's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(pub i64);

impl LeaseToken {
    /// The token of a delivery's first claim, taken when it is recorded.
    pub const FIRST: LeaseToken = LeaseToken(1);
}

/// A user of the operator plane (console sign-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

/// An API token's id (not its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiTokenId(pub i64);

/// A bulk replay job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BulkReplayId(pub i64);

/// A provider account linked to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkedAccountId(pub i64);

/// An enum whose variants each have one stored label.
macro_rules! labelled {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every variant.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored label.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }

            /// The variant of a stored label.
            pub fn parse(label: &str) -> Option<$name> {
                match label { $($label => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

labelled! {
    /// Where a delivery stands.
    pub enum DeliveryStatus {
        /// Due now or later, or being attempted.
        Pending = "pending",
        /// The destination answered 2xx.
        Delivered = "delivered",
        /// Given up on (see [`DeadLetterReason`]); replayable.
        DeadLettered = "dead_lettered",
        /// A dead letter an operator resolved without delivering it: never attempted again, no
        /// longer a dead letter, kept and pruned like a delivered one; replayable.
        Dismissed = "dismissed",
    }
}

impl DeliveryStatus {
    /// Whether nothing is left to do for it (delivered, or dismissed by an operator): what
    /// pruning past `worker.retention` may remove.
    pub fn is_resolved(self) -> bool {
        matches!(self, DeliveryStatus::Delivered | DeliveryStatus::Dismissed)
    }
}

labelled! {
    /// How one delivery attempt ended.
    pub enum AttemptOutcome {
        /// 2xx.
        Delivered = "delivered",
        /// Worth retrying (5xx, 408, 429, timeout, connection error).
        Transient = "transient",
        /// Will not succeed by retrying (most 4xx).
        Permanent = "permanent",
    }
}

labelled! {
    /// Why a delivery was dead-lettered. Labels are stable: metrics and the API use them.
    pub enum DeadLetterReason {
        /// The destination answered a 4xx that retrying cannot fix.
        Permanent4xx = "permanent_4xx",
        /// Every scheduled attempt failed.
        RetriesExhausted = "retries_exhausted",
        /// The destination was removed from the config (found pending at startup).
        UnknownDestination = "unknown_destination",
        /// The route's `transform` failed on the event (the error is the delivery's last
        /// error); the original body is kept, and a replay runs the transform again.
        TransformFailed = "transform_failed",
    }
}

labelled! {
    /// Whether any route matched an event when it was recorded.
    pub enum RouteStatus {
        /// At least one destination.
        Routed = "routed",
        /// No route matched: recorded, delivered nowhere.
        Unrouted = "unrouted",
    }
}

labelled! {
    /// Where a bulk replay job stands.
    pub enum BulkReplayStatus {
        /// Replaying its selection.
        Running = "running",
        /// Went through its whole selection.
        Finished = "finished",
        /// Stopped by an operator.
        Cancelled = "cancelled",
        /// Stopped by an error.
        Failed = "failed",
    }
}

labelled! {
    /// What an audit row records.
    pub enum AuditAction {
        /// A delivery replayed by an operator.
        ReplayDelivery = "replay_delivery",
        /// A dead letter dismissed by an operator (resolved without delivery).
        DismissDeadLetter = "dismiss_dead_letter",
        /// An event replayed to a destination by an operator: a new delivery.
        ReplayToDestination = "replay_to_destination",
        /// A bulk replay started.
        BulkReplay = "bulk_replay",
        /// A bulk replay cancelled.
        CancelBulkReplay = "cancel_bulk_replay",
        /// A console sign-in.
        SignIn = "sign_in",
        /// A session ended by the worker (the membership no longer holds).
        SessionEnded = "session_ended",
        /// A provider account linked to a user.
        LinkAccount = "link_account",
        /// A provider account unlinked.
        UnlinkAccount = "unlink_account",
        /// An API token created.
        CreateApiToken = "create_api_token",
        /// An API token revoked.
        RevokeApiToken = "revoke_api_token",
        /// Quarantined requests re-verified and admitted into the intake stream.
        AdmitQuarantined = "admit_quarantined",
        /// A provider backfill: events a source's provider lists since a time, published or
        /// redelivered where not stored.
        Backfill = "backfill",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_label_parses_back_to_its_variant() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(*status));
        }
        for outcome in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(outcome.as_str()), Some(*outcome));
        }
        for reason in DeadLetterReason::ALL {
            assert_eq!(DeadLetterReason::parse(reason.as_str()), Some(*reason));
        }
        for status in BulkReplayStatus::ALL {
            assert_eq!(BulkReplayStatus::parse(status.as_str()), Some(*status));
        }
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(*action));
        }
        assert_eq!(RouteStatus::parse("routed"), Some(RouteStatus::Routed));
        assert_eq!(DeliveryStatus::parse("Pending"), None);
    }

    #[test]
    fn delivery_ids_grow_with_the_event_row() {
        let a = DeliveryId::of(EventRowId(9), "orders");
        let b = DeliveryId::of(EventRowId(10), "orders");
        assert_eq!(a.as_str(), "dlv_000000000009_orders");
        assert!(a < b);
        let replayed = DeliveryId::replayed_to(EventRowId(9), "orders", 2);
        assert_eq!(replayed.as_str(), "dlv_000000000009_orders~r2");
        assert!(!replayed.as_str().contains('.'), "Standard Webhooks refuses a `.` in webhook-id");
    }

    #[test]
    fn unix_ms_arithmetic_saturates() {
        assert_eq!(UnixMs(i64::MAX).plus(Duration::from_secs(1)), UnixMs(i64::MAX));
        assert_eq!(UnixMs(5_000).minus(Duration::from_secs(2)), UnixMs(3_000));
        assert_eq!(UnixMs(1_000).since(UnixMs(3_000)), Duration::ZERO);
    }
}
