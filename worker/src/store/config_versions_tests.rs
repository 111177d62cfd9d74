//! Tests of config versions on both backends: snapshots kept once per version, each event's
//! version recorded and read back, and replays that choose the config ("as received" or
//! "current"), keep the choice in the delivery, audit it, and refuse "as received" for an event
//! recorded without a version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::Store;
use super::deliveries::{AttemptRecord, DueClass, NextStep};
use super::events::{FirstClaims, NewEvent};
use super::operator::PageRequest;
use super::replays::{ReplayOrigin, ReplayOutcome, ReplayScope, ReplayedTo};
use super::tests::{due, event};
use crate::model::{
    AttemptOutcome, AuditAction, ConfigVersion, DeadLetterReason, DeliveryId, DeliveryStatus, EventRowId, LeaseToken,
    ReplayConfig, UnixMs,
};

on_each_backend!(
    a_config_version_is_kept_once_with_its_first_snapshot,
    events_keep_their_version_and_replays_choose_and_audit_the_config,
);

fn version(digit: char) -> ConfigVersion {
    ConfigVersion::from_stored(std::iter::repeat_n(digit, 64).collect())
}

async fn a_config_version_is_kept_once_with_its_first_snapshot(store: Store) {
    let v1 = version('a');
    assert_eq!(store.config_snapshot(v1.clone()).await.unwrap(), None, "unknown until registered");
    store.register_config_version(v1.clone(), "[1]".into(), UnixMs(1_000)).await.unwrap();
    // A second worker with the same config (or this one started again): nothing changes.
    store.register_config_version(v1.clone(), "[1]".into(), UnixMs(2_000)).await.unwrap();
    store.register_config_version(version('b'), "[2]".into(), UnixMs(3_000)).await.unwrap();
    assert_eq!(store.config_snapshot(v1).await.unwrap().as_deref(), Some("[1]"));
    assert_eq!(store.config_snapshot(version('b')).await.unwrap().as_deref(), Some("[2]"));
    assert_eq!(store.config_snapshot(version('c')).await.unwrap(), None);
}

/// Dead-letters a freshly recorded delivery (still under its first claim).
async fn dead_letter(store: &Store, id: &DeliveryId) {
    store
        .record_attempt(AttemptRecord {
            delivery_id: id.clone(),
            attempt: 1,
            started_at: UnixMs(2_000),
            duration_ms: 3,
            outcome: AttemptOutcome::Permanent,
            status_code: Some(422),
            error: None,
            response_snippet: None,
            next: NextStep::DeadLetter(DeadLetterReason::Permanent4xx),
            lease_token: LeaseToken::FIRST,
        })
        .await
        .unwrap();
}

async fn events_keep_their_version_and_replays_choose_and_audit_the_config(store: Store) {
    let v1 = version('a');
    store.register_config_version(v1.clone(), "[]".into(), UnixMs(1_000)).await.unwrap();
    // e1 routed with v1; e2 recorded by a worker that kept no version.
    let versioned = NewEvent { config_version: Some(v1.clone()), ..event("e1", "{}", &["a"]) };
    let unversioned = NewEvent { stream_sequence: 2, ..event("e2", "{}", &["a"]) };
    store.record(vec![versioned, unversioned], FirstClaims::all(UnixMs(60_000))).await.unwrap();
    let (one, two) = (DeliveryId::of(EventRowId(1), "a"), DeliveryId::of(EventRowId(2), "a"));
    dead_letter(&store, &one).await;
    dead_letter(&store, &two).await;
    assert_eq!(store.event(EventRowId(1)).await.unwrap().unwrap().config_version, Some(v1.clone()));
    assert_eq!(store.event(EventRowId(2)).await.unwrap().unwrap().config_version, None);
    assert_eq!(store.delivery(one.clone()).await.unwrap().unwrap().config_version, None, "routed: current");

    // As received: the delivery keeps its event's version, and its claim carries it.
    let replayed =
        store.replay(one.clone(), "ops@x".into(), ReplayScope::Operator, ReplayConfig::AsReceived).await.unwrap();
    assert_eq!(replayed, ReplayOutcome::Replayed { destination: "a".into(), config_version: Some(v1.clone()) });
    assert_eq!(store.delivery(one.clone()).await.unwrap().unwrap().config_version, Some(v1.clone()));
    // A replay starts a fresh schedule: its next attempt is a first one.
    let now = UnixMs::now();
    let lease_until = now.plus(std::time::Duration::from_secs(30));
    let (claimed, _) = store.claim_due("a".into(), due(DueClass::First, 10, now, lease_until)).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!((&claimed[0].delivery.delivery_id, &claimed[0].delivery.config_version), (&one, &Some(v1.clone())));
    // Pending: "current" takes it back to the current config for its next attempts.
    let pending = store.replay(one.clone(), "ops@x".into(), ReplayScope::Operator, ReplayConfig::Current).await;
    assert!(
        matches!(pending.unwrap(), ReplayOutcome::AlreadyPending { config_version: None, .. }),
        "a pending delivery takes the config too"
    );
    assert_eq!(store.delivery(one.clone()).await.unwrap().unwrap().config_version, None);

    // As received of an event without a version: refused, nothing changed.
    let refused =
        store.replay(two.clone(), "ops@x".into(), ReplayScope::Operator, ReplayConfig::AsReceived).await.unwrap();
    assert_eq!(refused, ReplayOutcome::NoRecordedConfig);
    let untouched = store.delivery(two.clone()).await.unwrap().unwrap();
    assert_eq!((untouched.status, untouched.replays), (DeliveryStatus::DeadLettered, 0));
    let to = |origin, config| store.replay_to_destination(origin, "b".into(), "ops@y".into(), config);
    assert_eq!(
        to(ReplayOrigin::Event(EventRowId(2)), ReplayConfig::AsReceived).await.unwrap(),
        ReplayedTo::NoRecordedConfig
    );
    assert_eq!(store.deliveries_of_events(vec![EventRowId(2)]).await.unwrap()[&EventRowId(2)].len(), 1, "none made");
    // Current of it works as before.
    let current =
        store.replay(two.clone(), "ops@x".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap();
    assert_eq!(current, ReplayOutcome::Replayed { destination: "a".into(), config_version: None });

    // To a destination, as received: the new delivery has the event's version.
    let ReplayedTo::Done(row) = to(ReplayOrigin::Delivery(one.clone()), ReplayConfig::AsReceived).await.unwrap() else {
        panic!("not replayed")
    };
    assert_eq!((row.destination.as_str(), row.config_version.as_ref()), ("b", Some(&v1)));

    // Each audit row names the config it chose.
    let audit = store.audit_page(PageRequest { after: None, limit: 10 }).await.unwrap();
    let details: Vec<_> = audit.rows.iter().map(|r| (r.action, r.detail.clone().unwrap_or_default())).collect();
    let as_received = format!("config as received ({v1})");
    assert_eq!(
        details,
        [
            (AuditAction::ReplayToDestination, format!("replay of {one} to b; {as_received}")),
            (AuditAction::ReplayDelivery, "previous status dead_lettered; config current".to_owned()),
            (AuditAction::ReplayDelivery, format!("previous status dead_lettered; {as_received}")),
        ]
    );
}
