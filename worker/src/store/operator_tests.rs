//! Tests of the operator plane's store operations on both backends: pages, cursors and
//! selections, the DataLoaders' batched reads, content priced before it is loaded, the counts,
//! replays, bulk replay previews and jobs with their audit rows; and, on PostgreSQL, replays
//! by two workers at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use inlet_shared::test_util::TestPostgres;

use super::deliveries::{AttemptRecord, DueClass, NextStep};
use super::events::{FirstClaims, NewEvent};
use super::operator::{
    ContentRead, Cursor, DeadLetterSelection, EventSelection, EventStatusFilter, PageRequest, StatusCounts,
};
use super::replays::{BulkProgress, Dismissed, NewBulkReplay, ReplayOrigin, ReplayOutcome, ReplayScope, ReplayedTo};
use super::tests::due;
use super::{Backend, Store, StoreError};
use crate::model::{
    AttemptOutcome, AuditAction, BulkReplayId, BulkReplayStatus, DeadLetterReason, DeliveryId, DeliveryStatus,
    EventRowId, LeaseToken, ReplayConfig, RouteStatus, UnixMs,
};

/// Each listed `async fn name(store: Store, ids: Vec<DeliveryId>)` runs on a fresh store
/// holding the four dead letters of [`dead_letters`] (`ids`), in three tests: `sqlite` and
/// `postgres` record them through the store's operations (as [`on_each_backend!`] does), and
/// `postgres_seeded_with_sql` inserts the same rows with plain SQL, so that these reads are
/// checked on PostgreSQL whatever the state of recording there.
macro_rules! with_dead_letters {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let (_dir, store) = crate::store::open_temp();
                    let ids = super::dead_letters(&store).await;
                    super::$name(store, ids).await;
                }

                #[tokio::test]
                async fn postgres() {
                    let (_server, store) = crate::store::open_temp_postgres().await;
                    let ids = super::dead_letters(&store).await;
                    super::$name(store, ids).await;
                }

                #[tokio::test]
                async fn postgres_seeded_with_sql() {
                    let (server, store) = crate::store::open_temp_postgres().await;
                    let ids = super::dead_letters_with_sql(&server.url()).await;
                    super::$name(store, ids).await;
                }
            }
        )+
    };
}

with_dead_letters!(
    dead_letters_page_newest_first_by_cursor_and_an_unknown_reason_selects_nothing,
    events_filter_by_state_and_the_batched_reads_group_by_key,
    content_is_priced_before_it_is_loaded,
    totals_and_destination_counts_come_from_the_kept_counts,
    a_replay_requeues_a_dead_letter_once_with_its_audit_row,
    a_bulk_preview_is_kept_under_its_token_until_it_expires,
    a_dismissed_dead_letter_is_no_dead_letter_is_audited_and_can_be_replayed,
    an_event_replayed_to_a_destination_is_a_new_delivery_with_its_lineage,
);

on_each_backend!(
    a_bulk_replay_job_is_created_with_its_audit_row_and_closed_at_startup_on_sqlite,
    a_bulk_replay_whose_lease_lapsed_is_closed_and_a_renewed_one_is_not,
    a_bulk_replay_cancelled_in_the_store_stops_its_runner_and_stays_cancelled,
);

/// An event whose body names its id (the store's `event` fixture).
fn event(id: &str, destinations: &[&str]) -> NewEvent {
    super::tests::event(id, &format!("{{\"id\":\"{id}\"}}"), destinations)
}

/// Dead-letters a freshly recorded delivery (still under its first claim) after one attempt.
async fn dead_letter(store: &Store, id: &DeliveryId, reason: DeadLetterReason) {
    store
        .record_attempt(AttemptRecord {
            delivery_id: id.clone(),
            attempt: 1,
            started_at: UnixMs(2_000),
            duration_ms: 3,
            outcome: AttemptOutcome::Permanent,
            status_code: Some(410),
            error: None,
            response_snippet: Some("gone".into()),
            next: NextStep::DeadLetter(reason),
            lease_token: LeaseToken::FIRST,
        })
        .await
        .unwrap();
}

/// The fixture's dead letters: (event row, destination, reason).
const DEAD_LETTERS: [(i64, &str, DeadLetterReason); 4] = [
    (1, "a", DeadLetterReason::Permanent4xx),
    (2, "a", DeadLetterReason::RetriesExhausted),
    (3, "a", DeadLetterReason::Permanent4xx),
    (4, "b", DeadLetterReason::Permanent4xx),
];

/// Records four dead letters (three to `a`, one to `b`) and one unrouted event (row 5,
/// received at 0); returns the dead letters' ids.
async fn dead_letters(store: &Store) -> Vec<DeliveryId> {
    let events = vec![event("e1", &["a"]), event("e2", &["a"]), event("e3", &["a"]), event("e4", &["b"])];
    store.record(events, FirstClaims::all(UnixMs::now().plus(Duration::from_secs(60)))).await.unwrap();
    store
        .record(vec![NewEvent { received_at: UnixMs(0), ..event("unrouted", &[]) }], FirstClaims::all(UnixMs(0)))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (event, destination, reason) in DEAD_LETTERS {
        let id = DeliveryId::of(EventRowId(event), destination);
        dead_letter(store, &id, reason).await;
        ids.push(id);
    }
    ids
}

/// The rows [`dead_letters`] leaves, inserted with plain SQL into the PostgreSQL database at
/// `url` (the counters follow by their triggers); returns the dead letters' ids.
async fn dead_letters_with_sql(url: &str) -> Vec<DeliveryId> {
    let pool = super::postgres::connect(url, None, 1, Duration::ZERO).unwrap();
    let client = pool.get().await.unwrap();
    let now = UnixMs::now();
    let events = [
        ("e1", 1_000, RouteStatus::Routed),
        ("e2", 1_000, RouteStatus::Routed),
        ("e3", 1_000, RouteStatus::Routed),
        ("e4", 1_000, RouteStatus::Routed),
        ("unrouted", 0, RouteStatus::Unrouted),
    ];
    for (event_id, received_at, route_status) in events {
        let body = format!("{{\"id\":\"{event_id}\"}}").into_bytes();
        client
            .execute(
                "INSERT INTO events (source, event_id, id_origin, event_type, scheme, secret_index, received_at_ms,
                                     recorded_at_ms, stream_sequence, content_type, headers_json, body, body_sha256,
                                     route_status)
                 VALUES ('src', $1, 'provider', 't', 'github', 0, $2, $3, 1, 'application/json', '[]', $4,
                         encode(sha256($4), 'hex'), $5)",
                &[&event_id, &UnixMs(received_at), &now, &body, &route_status],
            )
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for (event, destination, reason) in DEAD_LETTERS {
        let id = DeliveryId::of(EventRowId(event), destination);
        client
            .execute(
                "INSERT INTO deliveries (id, event_rowid, destination, status, attempts, created_at_ms, updated_at_ms,
                                         last_status_code, dead_letter_reason, lease_token)
                 VALUES ($1, $2, $3, 'dead_lettered', 1, $4, $4, 410, $5, 1)",
                &[&id, &EventRowId(event), &destination, &now, &reason],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO attempts (delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code,
                                       response_snippet)
                 VALUES ($1, 1, 2000, 3, 'permanent', 410, 'gone')",
                &[&id],
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

fn is_sqlite(store: &Store) -> bool {
    matches!(store.backend, Backend::Sqlite(_))
}

async fn dead_letters_page_newest_first_by_cursor_and_an_unknown_reason_selects_nothing(
    store: Store,
    ids: Vec<DeliveryId>,
) {
    let all = DeadLetterSelection::default();
    let first = store.dead_letters_page(all.clone(), PageRequest { after: None, limit: 3 }).await.unwrap();
    let listed: Vec<&DeliveryId> = first.rows.iter().map(|d| &d.id).collect();
    assert_eq!(listed, [&ids[3], &ids[2], &ids[1]]);
    assert!(first.has_more);
    let row = &first.rows[0];
    assert_eq!(
        (row.status, row.dead_letter_reason),
        (DeliveryStatus::DeadLettered, Some(DeadLetterReason::Permanent4xx))
    );
    assert_eq!(
        (row.event, row.destination.as_str(), row.attempts, row.last_status_code),
        (EventRowId(4), "b", 1, Some(410))
    );
    let next = PageRequest { after: Some(first.rows[2].cursor), limit: 3 };
    let second = store.dead_letters_page(all, next).await.unwrap();
    assert_eq!(second.rows.iter().map(|d| &d.id).collect::<Vec<_>>(), [&ids[0]]);
    assert!(!second.has_more);

    let count = |selection: DeadLetterSelection| {
        let store = store.clone();
        async move { store.dead_letters_page(selection, PageRequest { after: None, limit: 10 }).await.unwrap().rows.len() }
    };
    let permanent = Some(DeadLetterReason::Permanent4xx);
    assert_eq!(count(DeadLetterSelection { reason: permanent, ..Default::default() }).await, 3);
    assert_eq!(
        count(DeadLetterSelection { reason: permanent, destination: Some("a".into()), ..Default::default() }).await,
        2
    );
    assert_eq!(count(DeadLetterSelection { text: Some("e_".into()), ..Default::default() }).await, 0, "literal");
    assert_eq!(count(DeadLetterSelection { text: Some("E2".into()), ..Default::default() }).await, 1, "any case");
    assert_eq!(count(DeadLetterSelection { text: Some(String::new()), ..Default::default() }).await, 4, "no condition");
    assert_eq!(count(DeadLetterSelection { dead_after: Some(UnixMs(i64::MAX)), ..Default::default() }).await, 0);

    // A bulk replay's view of the same selection: oldest first.
    let (total, sample) = store
        .preview_dead_letters(DeadLetterSelection { reason: permanent, ..Default::default() }, None, 2)
        .await
        .unwrap();
    assert_eq!((total, sample.iter().map(|d| &d.id).collect::<Vec<_>>()), (3, vec![&ids[0], &ids[2]]));
    let selected = store.select_dead_letters(DeadLetterSelection::default(), None, 10).await.unwrap();
    assert_eq!(selected[3], (ids[3].clone(), "b".to_owned()));
    assert_eq!(store.dead_letters_of_event(EventRowId(2)).await.unwrap(), [ids[1].clone()]);
    assert_eq!(store.delivery_destination(ids[3].clone()).await.unwrap().as_deref(), Some("b"));
}

async fn events_filter_by_state_and_the_batched_reads_group_by_key(store: Store, ids: Vec<DeliveryId>) {
    let page = |selection: EventSelection| {
        let store = store.clone();
        async move {
            let page = store.events_page(selection, PageRequest { after: None, limit: 10 }).await.unwrap();
            page.rows.into_iter().map(|e| e.event_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(EventSelection::default()).await, ["unrouted", "e4", "e3", "e2", "e1"]);
    assert_eq!(
        page(EventSelection { status: Some(EventStatusFilter::Unrouted), ..Default::default() }).await,
        ["unrouted"]
    );
    let dead = EventStatusFilter::HasDelivery(DeliveryStatus::DeadLettered);
    assert_eq!(
        page(EventSelection { status: Some(dead), source: Some("src".into()), ..Default::default() }).await.len(),
        4
    );
    let pending = EventStatusFilter::HasDelivery(DeliveryStatus::Pending);
    assert!(page(EventSelection { status: Some(pending), ..Default::default() }).await.is_empty());
    let after = page(EventSelection {
        received_after: Some(UnixMs(1_000)),
        received_before: Some(UnixMs(1_001)),
        ..Default::default()
    });
    assert_eq!(after.await.len(), 4, "the unrouted one was received at 0");

    let event = store.event(EventRowId(5)).await.unwrap().unwrap();
    assert_eq!(
        (event.route_status, event.scheme.as_str(), event.cursor()),
        (RouteStatus::Unrouted, "github", Cursor(5))
    );
    assert_eq!(store.event(EventRowId(99)).await.unwrap(), None);
    let events = store.events_by_id(vec![EventRowId(1), EventRowId(4), EventRowId(99)]).await.unwrap();
    assert_eq!(events.len(), 2);
    let deliveries = store.deliveries_of_events(vec![EventRowId(1), EventRowId(5)]).await.unwrap();
    assert_eq!(deliveries.len(), 1, "an event without deliveries has no entry");
    assert_eq!(deliveries[&EventRowId(1)][0].id, ids[0]);
    let attempts =
        store.attempts_of_deliveries(vec![ids[0].clone(), DeliveryId::from_stored("dlv_x".into())]).await.unwrap();
    let attempt = &attempts[&ids[0]][0];
    assert_eq!(
        (attempt.attempt, attempt.outcome, attempt.status_code, attempt.started_at),
        (1, AttemptOutcome::Permanent, Some(410), UnixMs(2_000))
    );
    let delivery = store.delivery(ids[0].clone()).await.unwrap().unwrap();
    assert_eq!(delivery.next_attempt_at, None);
}

async fn content_is_priced_before_it_is_loaded(store: Store, _: Vec<DeliveryId>) {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = std::sync::Arc::clone(&asked);
    let answer = store
        .event_content(EventRowId(1), move |size| {
            *seen.lock().unwrap() = Some(size);
            false
        })
        .await
        .unwrap();
    assert_eq!(answer, ContentRead::OverBudget);
    assert_eq!(*asked.lock().unwrap(), Some(("{\"id\":\"e1\"}".len() + "[]".len()) as u64), "body and headers");
    let ContentRead::Loaded(content) = store.event_content(EventRowId(1), |_| true).await.unwrap() else {
        panic!("admitted")
    };
    assert_eq!((content.body.as_slice(), content.headers_json.as_str()), (&b"{\"id\":\"e1\"}"[..], "[]"));
    assert_eq!(content.body_sha256.len(), 64);
    let missing = store.event_content(EventRowId(99), |_| true).await;
    assert!(matches!(missing, Err(StoreError::Sqlite(_) | StoreError::Postgres(_))), "an error, as before");
}

async fn totals_and_destination_counts_come_from_the_kept_counts(store: Store, _: Vec<DeliveryId>) {
    let totals = store.totals().await.unwrap();
    assert_eq!((totals.events, totals.unrouted), (5, 1));
    assert_eq!(totals.deliveries, StatusCounts { dead_lettered: 4, ..Default::default() });
    let counts = store.destination_counts().await.unwrap();
    assert_eq!(counts["a"], StatusCounts { dead_lettered: 3, ..Default::default() });
    assert_eq!(counts["b"].dead_lettered, 1);
}

async fn a_replay_requeues_a_dead_letter_once_with_its_audit_row(store: Store, ids: Vec<DeliveryId>) {
    let before = UnixMs::now();
    let replayed =
        store.replay(ids[0].clone(), "ops@x".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap();
    assert_eq!(replayed, ReplayOutcome::Replayed { destination: "a".into(), config_version: None });
    let row = store.delivery(ids[0].clone()).await.unwrap().unwrap();
    assert_eq!((row.status, row.replays, row.attempts, row.dead_letter_reason), (DeliveryStatus::Pending, 1, 1, None));
    assert!(row.next_attempt_at.unwrap() >= before, "due now");
    assert!(
        matches!(
            store.replay(ids[0].clone(), "ops@x".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap(),
            ReplayOutcome::AlreadyPending { ref destination, .. } if destination == "a"
        ),
        "replayed once"
    );
    assert_eq!(store.delivery(ids[0].clone()).await.unwrap().unwrap().replays, 1);
    // A bulk job's item is not audited one by one.
    let unaudited = store
        .replay(ids[3].clone(), "ops@x (bulk 1)".into(), ReplayScope::BulkItem, ReplayConfig::Current)
        .await
        .unwrap();
    assert_eq!(unaudited, ReplayOutcome::Replayed { destination: "b".into(), config_version: None });
    let missing = store
        .replay(
            DeliveryId::from_stored("dlv_missing".into()),
            "ops@x".into(),
            ReplayScope::Operator,
            ReplayConfig::Current,
        )
        .await
        .unwrap();
    assert_eq!(missing, ReplayOutcome::NotFound);

    let audit = store.audit_page(PageRequest { after: None, limit: 10 }).await.unwrap();
    let audited: Vec<_> =
        audit.rows.iter().map(|r| (r.action, r.actor.as_str(), r.target.as_str(), r.detail.as_deref())).collect();
    assert_eq!(
        audited,
        [(
            AuditAction::ReplayDelivery,
            "ops@x",
            ids[0].as_str(),
            Some("previous status dead_lettered; config current")
        )]
    );
    let totals = store.totals().await.unwrap();
    assert_eq!(totals.deliveries, StatusCounts { pending: 2, dead_lettered: 2, ..Default::default() });
    let left = store.dead_letters_page(DeadLetterSelection::default(), PageRequest { after: None, limit: 10 }).await;
    assert_eq!(left.unwrap().rows.iter().map(|d| &d.id).collect::<Vec<_>>(), [&ids[2], &ids[1]]);
}

async fn a_bulk_preview_is_kept_under_its_token_until_it_expires(store: Store, ids: Vec<DeliveryId>) {
    let permanent = DeadLetterSelection { reason: Some(DeadLetterReason::Permanent4xx), ..Default::default() };
    let expires_at = UnixMs::now().plus(Duration::from_secs(600));
    let kept = store.create_bulk_preview(permanent.clone(), "{}".into(), "ops@x".into(), expires_at).await.unwrap();
    assert_eq!((kept.total, kept.expires_at, kept.filter_json.as_str()), (3, expires_at, "{}"));
    assert!(kept.token.starts_with("brp_") && kept.token.len() == 4 + 48, "{}", kept.token);
    assert_eq!(store.bulk_preview(kept.token.clone()).await.unwrap(), Some(kept.clone()));
    assert_eq!(store.bulk_preview("brp_unknown".into()).await.unwrap(), None);

    // Bounded by the newest dead letter the preview counted (`seen_until`).
    let bound = kept.max_updated_at.unwrap();
    let selected = store.select_dead_letters(permanent.clone(), Some(bound), 10).await.unwrap();
    assert_eq!(selected.iter().map(|(id, _)| id).collect::<Vec<_>>(), [&ids[0], &ids[2], &ids[3]]);
    let before_all = UnixMs(bound.0 - 1_000_000);
    assert!(store.select_dead_letters(permanent.clone(), Some(before_all), 10).await.unwrap().is_empty());
    assert_eq!(store.preview_dead_letters(permanent.clone(), Some(before_all), 10).await.unwrap(), (0, vec![]));
    assert_eq!(store.select_dead_letters(permanent.clone(), None, 2).await.unwrap().len(), 2, "the limit");

    let nothing = DeadLetterSelection { destination: Some("none".into()), ..Default::default() };
    let empty = store.create_bulk_preview(nothing, "{}".into(), "ops@x".into(), expires_at).await.unwrap();
    assert_eq!((empty.total, empty.max_updated_at), (0, None));
    assert_ne!(empty.token, kept.token);
    let expired = store.create_bulk_preview(permanent, "{}".into(), "ops@x".into(), UnixMs(1)).await.unwrap();
    assert_eq!(store.bulk_preview(expired.token).await.unwrap(), None, "expired");
}

/// Issue #16: a dismissed dead letter is resolved without delivery, with who, when and a note in
/// its row and its audit row; it leaves every dead-letter read (list, counts, a bulk replay's
/// preview and selection, an event's dead letters), a bulk job's item leaves it alone, and an
/// operator's replay takes it back (its dismissal ended). Only a dead letter can be dismissed.
async fn a_dismissed_dead_letter_is_no_dead_letter_is_audited_and_can_be_replayed(store: Store, ids: Vec<DeliveryId>) {
    let before = UnixMs::now();
    let Dismissed::Done(row) = store.dismiss(ids[0].clone(), "ops@x".into(), Some("cancelled".into())).await.unwrap()
    else {
        panic!("dismissed")
    };
    assert_eq!((row.id.clone(), row.status), (ids[0].clone(), DeliveryStatus::Dismissed));
    let dismissal = row.dismissal.clone().unwrap();
    assert_eq!((dismissal.by.as_str(), dismissal.note.as_deref()), ("ops@x", Some("cancelled")));
    assert!(dismissal.at >= before);
    assert_eq!(row.dead_letter_reason, Some(DeadLetterReason::Permanent4xx), "why it was a dead letter stays");
    assert_eq!(store.delivery(ids[0].clone()).await.unwrap(), Some(*row));
    let again = store.dismiss(ids[0].clone(), "ops@y".into(), None).await.unwrap();
    assert_eq!(again, Dismissed::NotDeadLettered(DeliveryStatus::Dismissed));
    let missing = store.dismiss(DeliveryId::from_stored("dlv_missing".into()), "ops@x".into(), None).await.unwrap();
    assert_eq!(missing, Dismissed::NotFound);

    // No dead letter any more, anywhere.
    let all = DeadLetterSelection::default();
    let listed = store.dead_letters_page(all.clone(), PageRequest { after: None, limit: 10 }).await.unwrap();
    assert_eq!(listed.rows.iter().map(|d| &d.id).collect::<Vec<_>>(), [&ids[3], &ids[2], &ids[1]]);
    assert_eq!(store.preview_dead_letters(all.clone(), None, 10).await.unwrap().0, 3);
    let selected = store.select_dead_letters(all.clone(), None, 10).await.unwrap();
    assert!(selected.iter().all(|(id, _)| id != &ids[0]), "{selected:?}");
    assert!(store.dead_letters_of_event(EventRowId(1)).await.unwrap().is_empty());
    let kept = store.create_bulk_preview(all, "{}".into(), "ops@x".into(), UnixMs::now().plus(Duration::from_secs(60)));
    assert_eq!(kept.await.unwrap().total, 3);
    let totals = store.totals().await.unwrap();
    assert_eq!(totals.deliveries, StatusCounts { dead_lettered: 3, dismissed: 1, ..Default::default() });
    assert_eq!(
        store.destination_counts().await.unwrap()["a"],
        StatusCounts { dead_lettered: 2, dismissed: 1, ..Default::default() }
    );
    assert_eq!(store.stats().await.unwrap().dead_letters, 3, "the backlog gauge");
    let dismissed = EventSelection {
        status: Some(EventStatusFilter::HasDelivery(DeliveryStatus::Dismissed)),
        ..Default::default()
    };
    let events = store.events_page(dismissed, PageRequest { after: None, limit: 10 }).await.unwrap();
    assert_eq!(events.rows.iter().map(|e| e.id).collect::<Vec<_>>(), [EventRowId(1)]);

    // A bulk job that selected it before it was dismissed leaves it alone (and one already
    // pending again too); a dead letter it still replays.
    let bulk = |id: &DeliveryId| {
        store.replay(id.clone(), "ops@x (bulk 1)".into(), ReplayScope::BulkItem, ReplayConfig::Current)
    };
    assert_eq!(bulk(&ids[0]).await.unwrap(), ReplayOutcome::Skipped { status: DeliveryStatus::Dismissed });
    assert_eq!(bulk(&ids[1]).await.unwrap(), ReplayOutcome::Replayed { destination: "a".into(), config_version: None });
    assert_eq!(bulk(&ids[1]).await.unwrap(), ReplayOutcome::Skipped { status: DeliveryStatus::Pending });
    assert_eq!(store.delivery(ids[0].clone()).await.unwrap().unwrap().status, DeliveryStatus::Dismissed);
    let pending = store.dismiss(ids[1].clone(), "ops@x".into(), None).await.unwrap();
    assert_eq!(pending, Dismissed::NotDeadLettered(DeliveryStatus::Pending), "only dead letters");

    // An operator changes their mind: replayed, no longer dismissed.
    let replayed =
        store.replay(ids[0].clone(), "ops@y".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap();
    assert_eq!(replayed, ReplayOutcome::Replayed { destination: "a".into(), config_version: None });
    let row = store.delivery(ids[0].clone()).await.unwrap().unwrap();
    assert_eq!((row.status, row.dismissal, row.replays), (DeliveryStatus::Pending, None, 1));

    let audit = store.audit_page(PageRequest { after: None, limit: 10 }).await.unwrap();
    let audited: Vec<_> =
        audit.rows.iter().map(|r| (r.action, r.actor.as_str(), r.target.as_str(), r.detail.as_deref())).collect();
    assert_eq!(
        audited,
        [
            (AuditAction::ReplayDelivery, "ops@y", ids[0].as_str(), Some("previous status dismissed; config current")),
            (AuditAction::DismissDeadLetter, "ops@x", ids[0].as_str(), Some("cancelled")),
        ]
    );
}

/// Issue #16: replaying an event to a destination makes a new pending delivery, due now, with an
/// id of its own (numbered per event), its lineage (the delivery it replays, who asked, when)
/// and its audit row; the delivery it starts from is untouched; its destination's scheduler
/// claims it like any first attempt.
async fn an_event_replayed_to_a_destination_is_a_new_delivery_with_its_lineage(store: Store, ids: Vec<DeliveryId>) {
    let before = UnixMs::now();
    let from_delivery = ReplayOrigin::Delivery(ids[0].clone());
    let row = store.replay_to_destination(from_delivery, "b".into(), "ops@x".into(), ReplayConfig::Current).await;
    let ReplayedTo::Done(row) = row.unwrap() else { panic!("not replayed") };
    let row = *row;
    assert_eq!(row.id.as_str(), "dlv_000000000001_b~r1");
    assert_eq!((row.event, row.destination.as_str(), row.status), (EventRowId(1), "b", DeliveryStatus::Pending));
    assert_eq!((row.replay_of.as_ref(), row.created_by.as_deref()), (Some(&ids[0]), Some("ops@x")));
    assert_eq!((row.attempts, row.replays, row.dismissal.clone()), (0, 0, None));
    assert!(row.created_at >= before && row.next_attempt_at.is_some_and(|at| at <= UnixMs::now()), "due now");
    assert_eq!(store.delivery(row.id.clone()).await.unwrap(), Some(row.clone()));
    // The same event again, as such, to its own routed destination: another delivery.
    let again = store
        .replay_to_destination(ReplayOrigin::Event(EventRowId(1)), "a".into(), "ops@y".into(), ReplayConfig::Current)
        .await;
    let ReplayedTo::Done(again) = again.unwrap() else { panic!("not replayed") };
    assert_eq!(
        (again.id.as_str(), again.replay_of, again.created_by.as_deref()),
        ("dlv_000000000001_a~r2", None, Some("ops@y"))
    );
    let untouched = store.delivery(ids[0].clone()).await.unwrap().unwrap();
    assert_eq!((untouched.status, untouched.replays), (DeliveryStatus::DeadLettered, 0));
    let missing = ReplayOrigin::Delivery(DeliveryId::from_stored("dlv_missing".into()));
    let current = ReplayConfig::Current;
    assert_eq!(
        store.replay_to_destination(missing, "b".into(), "ops@x".into(), current).await.unwrap(),
        ReplayedTo::NotFound
    );
    let no_event = ReplayOrigin::Event(EventRowId(99));
    assert_eq!(
        store.replay_to_destination(no_event, "b".into(), "ops@x".into(), current).await.unwrap(),
        ReplayedTo::NotFound
    );

    let listed = store.deliveries_of_events(vec![EventRowId(1)]).await.unwrap();
    let listed: Vec<&str> = listed[&EventRowId(1)].iter().map(|d| d.id.as_str()).collect();
    assert_eq!(listed, [ids[0].as_str(), "dlv_000000000001_a~r2", "dlv_000000000001_b~r1"]);
    let totals = store.totals().await.unwrap();
    assert_eq!(totals.deliveries, StatusCounts { pending: 2, dead_lettered: 4, ..Default::default() });
    let now = UnixMs::now();
    let (claimed, _) =
        store.claim_due("b".into(), due(DueClass::First, 10, now, now.plus(Duration::from_secs(30)))).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let sent = &claimed[0].delivery;
    assert_eq!((&sent.delivery_id, sent.event_id.as_str(), sent.attempts), (&row.id, "e1", 0));
    assert_eq!(sent.body.as_ref(), b"{\"id\":\"e1\"}");

    let audit = store.audit_page(PageRequest { after: None, limit: 10 }).await.unwrap();
    let audited: Vec<_> =
        audit.rows.iter().map(|r| (r.action, r.actor.as_str(), r.target.as_str(), r.detail.as_deref())).collect();
    let detail = format!("replay of {} to b; config current", ids[0]);
    assert_eq!(
        audited,
        [
            (
                AuditAction::ReplayToDestination,
                "ops@y",
                "dlv_000000000001_a~r2",
                Some("replay of event 1 to a; config current")
            ),
            (AuditAction::ReplayToDestination, "ops@x", "dlv_000000000001_b~r1", Some(detail.as_str())),
        ]
    );
}

/// A bulk replay job to create, held until `lease_until`.
fn new_job(total: i64, lease_until: UnixMs) -> NewBulkReplay {
    NewBulkReplay {
        actor: "ops@x".into(),
        filter_json: "{\"destination\":\"a\"}".into(),
        rate_per_second: 5,
        total,
        lease_until,
    }
}

async fn a_bulk_replay_job_is_created_with_its_audit_row_and_closed_at_startup_on_sqlite(store: Store) {
    let filter_json = "{\"destination\":\"a\"}".to_owned();
    let lease_until = UnixMs::now().plus(Duration::from_secs(600));
    let job = store.create_bulk_replay(new_job(3, lease_until)).await.unwrap();
    assert_eq!(
        (job.status, job.total, job.done, job.rate_per_second, job.finished_at, job.lease_until),
        (BulkReplayStatus::Running, 3, 0, 5, None, Some(lease_until))
    );
    assert!(store.bulk_replay_progress(job.id, BulkProgress { done: 2, enqueued: 1 }, lease_until).await.unwrap());
    let read = store.bulk_replay(job.id).await.unwrap().unwrap();
    assert_eq!((read.done, read.enqueued, read.filter_json.as_str()), (2, 1, filter_json.as_str()));

    let closed = store.close_interrupted_bulk_replays().await.unwrap();
    let after = store.bulk_replay(job.id).await.unwrap().unwrap();
    if is_sqlite(&store) {
        // One process owns a SQLite file: a job running at startup was left by the last one,
        // whatever its lease says.
        assert_eq!((closed, after.status, after.lease_until), (vec![job.id], BulkReplayStatus::Cancelled, None));
        assert!(after.finished_at.is_some());
    } else {
        // Its lease is live: another worker is running it right now (see the contract).
        assert_eq!((closed, after.status, after.finished_at), (vec![], BulkReplayStatus::Running, None));
    }
    store.finish_bulk_replay(job.id, BulkProgress { done: 3, enqueued: 2 }, BulkReplayStatus::Finished).await.unwrap();
    let ended = store.bulk_replay(job.id).await.unwrap().unwrap();
    let status = if is_sqlite(&store) { BulkReplayStatus::Cancelled } else { BulkReplayStatus::Finished };
    assert_eq!((ended.status, ended.done, ended.enqueued, ended.lease_until), (status, 3, 2, None));
    assert!(ended.finished_at.is_some());

    let cancelled = store.cancel_bulk_replay(job.id, "ops@x".into()).await.unwrap();
    assert_eq!(cancelled.map(|(j, was_running)| (j.status, was_running)), Some((status, false)), "an ended job stays");
    assert_eq!(store.cancel_bulk_replay(BulkReplayId(99), "ops@x".into()).await.unwrap(), None);

    let audit = store.audit_page(PageRequest { after: None, limit: 1 }).await.unwrap();
    assert!(audit.has_more);
    let cancel = &audit.rows[0];
    assert_eq!((cancel.action, cancel.detail.as_deref()), (AuditAction::CancelBulkReplay, Some("was not running")));
    let rest = store.audit_page(PageRequest { after: Some(cancel.cursor()), limit: 5 }).await.unwrap();
    assert!(!rest.has_more, "no audit row for an unknown job");
    let started = &rest.rows[0];
    assert_eq!((started.action, started.actor.as_str(), started.count), (AuditAction::BulkReplay, "ops@x", 3));
    assert_eq!(
        (started.target.clone(), started.detail.as_deref()),
        (format!("bulk_replay:{}", job.id.0), Some(filter_json.as_str()))
    );
}

/// Issue #15: a job whose runner stopped renewing its lease is closed as `cancelled` by the
/// periodic closing (on either backend); one renewed in time is left running, and its runner
/// learns at its next write when it was closed.
async fn a_bulk_replay_whose_lease_lapsed_is_closed_and_a_renewed_one_is_not(store: Store) {
    let t = UnixMs::now();
    let at = |seconds: i64| UnixMs(t.0 + seconds * 1000);
    let lapsed = store.create_bulk_replay(new_job(4, at(10))).await.unwrap();
    let renewed = store.create_bulk_replay(new_job(4, at(10))).await.unwrap();
    let ended = store.create_bulk_replay(new_job(1, at(10))).await.unwrap();
    store
        .finish_bulk_replay(ended.id, BulkProgress { done: 1, enqueued: 1 }, BulkReplayStatus::Finished)
        .await
        .unwrap();

    assert_eq!(store.close_expired_bulk_replays(at(5)).await.unwrap(), vec![], "both leases live");
    // Renewing extends the lease (and records the progress).
    let progress = BulkProgress { done: 2, enqueued: 2 };
    assert!(store.bulk_replay_progress(renewed.id, progress, at(40)).await.unwrap());
    assert_eq!(store.bulk_replay(renewed.id).await.unwrap().unwrap().lease_until, Some(at(40)));

    assert_eq!(store.close_expired_bulk_replays(at(20)).await.unwrap(), vec![lapsed.id]);
    let closed = store.bulk_replay(lapsed.id).await.unwrap().unwrap();
    assert_eq!(
        (closed.status, closed.finished_at, closed.lease_until),
        (BulkReplayStatus::Cancelled, Some(at(20)), None)
    );
    let live = store.bulk_replay(renewed.id).await.unwrap().unwrap();
    assert_eq!((live.status, live.done, live.finished_at), (BulkReplayStatus::Running, 2, None));
    assert_eq!(store.bulk_replay(ended.id).await.unwrap().unwrap().status, BulkReplayStatus::Finished);

    // A runner that stalled past its lease hears at its next write that it must stop; its
    // progress is still recorded, and its end keeps `cancelled`.
    assert!(!store.bulk_replay_progress(lapsed.id, BulkProgress { done: 1, enqueued: 1 }, at(50)).await.unwrap());
    let stalled = store.bulk_replay(lapsed.id).await.unwrap().unwrap();
    assert_eq!((stalled.status, stalled.done, stalled.lease_until), (BulkReplayStatus::Cancelled, 1, None));
    store
        .finish_bulk_replay(lapsed.id, BulkProgress { done: 1, enqueued: 1 }, BulkReplayStatus::Cancelled)
        .await
        .unwrap();
    assert_eq!(store.bulk_replay(lapsed.id).await.unwrap().unwrap().finished_at, Some(at(20)), "closed when closed");

    assert_eq!(store.close_expired_bulk_replays(at(41)).await.unwrap(), vec![renewed.id], "its lease lapsed too");
    assert_eq!(store.close_expired_bulk_replays(at(100)).await.unwrap(), vec![], "closed once");
}

/// Issue #15: a cancel, from whichever worker, ends a running job in the store (with its audit
/// row); the runner's next write answers "stop", and its final write records its progress
/// without turning `cancelled` into `finished`.
async fn a_bulk_replay_cancelled_in_the_store_stops_its_runner_and_stays_cancelled(store: Store) {
    let lease = || UnixMs::now().plus(Duration::from_secs(30));
    let job = store.create_bulk_replay(new_job(5, lease())).await.unwrap();
    assert!(store.bulk_replay_progress(job.id, BulkProgress { done: 1, enqueued: 1 }, lease()).await.unwrap());

    let (cancelled, was_running) = store.cancel_bulk_replay(job.id, "ops@y".into()).await.unwrap().unwrap();
    assert!(was_running);
    assert_eq!((cancelled.status, cancelled.done, cancelled.lease_until), (BulkReplayStatus::Cancelled, 1, None));
    let cancelled_at = cancelled.finished_at.unwrap();

    // The runner (another worker, maybe) finds out at its next write.
    assert!(!store.bulk_replay_progress(job.id, BulkProgress { done: 2, enqueued: 2 }, lease()).await.unwrap());
    store.finish_bulk_replay(job.id, BulkProgress { done: 2, enqueued: 2 }, BulkReplayStatus::Finished).await.unwrap();
    let ended = store.bulk_replay(job.id).await.unwrap().unwrap();
    assert_eq!(
        (ended.status, ended.done, ended.enqueued, ended.finished_at, ended.lease_until),
        (BulkReplayStatus::Cancelled, 2, 2, Some(cancelled_at), None)
    );
    assert_eq!(store.close_expired_bulk_replays(UnixMs::now().plus(Duration::from_secs(60))).await.unwrap(), vec![]);

    // Cancelling again changes nothing and says so in the audit log.
    let (again, was_running) = store.cancel_bulk_replay(job.id, "ops@y".into()).await.unwrap().unwrap();
    assert_eq!((again, was_running), (ended, false));
    let audit = store.audit_page(PageRequest { after: None, limit: 3 }).await.unwrap();
    let cancels: Vec<_> =
        audit.rows.iter().map(|row| (row.action, row.actor.as_str(), row.detail.as_deref())).collect();
    assert_eq!(
        cancels,
        [
            (AuditAction::CancelBulkReplay, "ops@y", Some("was not running")),
            (AuditAction::CancelBulkReplay, "ops@y", Some("was running")),
            (AuditAction::BulkReplay, "ops@x", Some("{\"destination\":\"a\"}")),
        ]
    );
}

/// Two fresh stores (two workers' pools) on one new PostgreSQL database seeded by
/// [`dead_letters_with_sql`], and a pool of the test's own on it.
async fn two_workers() -> (TestPostgres, Store, Store, super::postgres::Pool, Vec<DeliveryId>) {
    let server = tokio::task::spawn_blocking(TestPostgres::start).await.unwrap();
    let one = Store::connect_postgres(&server.url(), None, 4, Duration::from_secs(10)).await.unwrap();
    let two = Store::connect_postgres(&server.url(), None, 4, Duration::from_secs(10)).await.unwrap();
    let ids = dead_letters_with_sql(&server.url()).await;
    let pool = super::postgres::connect(&server.url(), None, 2, Duration::ZERO).unwrap();
    (server, one, two, pool, ids)
}

/// Waits until `n` sessions of this database wait for a lock (what the test set up: no timing
/// involved); fails after 10 s.
async fn until_waiting_for_locks(pool: &super::postgres::Pool, n: i64) {
    let client = pool.get().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} of {n} sessions wait for a lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two workers replay the same dead letter at the same moment: both are held at the start by a
/// lock on its row (so both begin before either decides), then let go together. Exactly one
/// replays it: one replay counted, one audit row.
#[tokio::test]
async fn two_workers_replaying_one_dead_letter_at_once_replay_it_once() {
    let (_server, one, two, pool, ids) = two_workers().await;
    let id = ids[1].clone();
    let mut holder = pool.get().await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE", &[&id]).await.unwrap();
    let replays = [one, two].map(|store| {
        let id = id.clone();
        tokio::spawn(async move {
            store.replay(id, "ops@x".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap()
        })
    });
    until_waiting_for_locks(&pool, 2).await;
    hold.commit().await.unwrap();
    let mut outcomes = Vec::new();
    for replay in replays {
        outcomes.push(replay.await.unwrap());
    }
    let replayed = outcomes
        .iter()
        .filter(|o| **o == ReplayOutcome::Replayed { destination: "a".into(), config_version: None })
        .count();
    let pending = outcomes.iter().filter(|o| matches!(o, ReplayOutcome::AlreadyPending { .. })).count();
    assert_eq!((replayed, pending), (1, 1), "{outcomes:?}");
    let client = pool.get().await.unwrap();
    let row = client.query_one("SELECT replays, replay_enqueued FROM deliveries WHERE id = $1", &[&id]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (1, true));
    let audited: i64 = client
        .query_one("SELECT count(*) FROM audit_log WHERE action = 'replay_delivery' AND target = $1", &[&id.as_str()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
}

/// What SQLite's `a_replay_makes_a_delivery_due_now_and_can_push_a_waiting_retry` and the
/// stuck-delivery test check, on PostgreSQL with the states set by SQL: a pending delivery is
/// made due now unless an attempt holds it, and a delivered one is replayed with a fresh
/// schedule (`attempt_base`).
#[tokio::test]
async fn a_replay_makes_a_pending_delivery_due_unless_held_and_gives_a_replayed_one_a_fresh_schedule() {
    let (_server, store, _, pool, ids) = two_workers().await;
    let client = pool.get().await.unwrap();
    let later = UnixMs::now().plus(Duration::from_secs(3600));
    let set = "UPDATE deliveries SET status = 'pending', dead_letter_reason = NULL, next_attempt_at_ms = $2,
                   lease_until_ms = $3
               WHERE id = $1";
    let none: Option<UnixMs> = None;
    client.execute(set, &[&ids[0], &Some(later), &none]).await.unwrap(); // waiting for a later retry
    client.execute(set, &[&ids[1], &Some(later), &Some(later)]).await.unwrap(); // held by an attempt
    client.execute(set, &[&ids[2], &none, &none]).await.unwrap(); // stuck: no due time at all
    client
        .execute(
            "UPDATE deliveries SET status = 'delivered', dead_letter_reason = NULL, attempts = 3 WHERE id = $1",
            &[&ids[3]],
        )
        .await
        .unwrap();

    let now = UnixMs::now();
    let outcomes = [
        store.replay(ids[0].clone(), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap(),
        store.replay(ids[1].clone(), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap(),
        store.replay(ids[2].clone(), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap(),
    ];
    let pending =
        |rescheduled| ReplayOutcome::AlreadyPending { destination: "a".into(), rescheduled, config_version: None };
    assert_eq!(outcomes, [pending(true), pending(false), pending(true)]);
    for (id, due_now) in [(&ids[0], true), (&ids[1], false), (&ids[2], true)] {
        let due = store.delivery(id.clone()).await.unwrap().unwrap().next_attempt_at.unwrap();
        assert_eq!(due.0 <= UnixMs::now().0 && due.0 >= now.0, due_now, "{id}");
    }

    assert_eq!(
        store.replay(ids[3].clone(), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap(),
        ReplayOutcome::Replayed { destination: "b".into(), config_version: None }
    );
    let row = client
        .query_one("SELECT status, attempt_base, replays, lease_until_ms FROM deliveries WHERE id = $1", &[&ids[3]])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, i64>(2), row.get::<_, Option<i64>>(3)),
        ("pending".to_owned(), 3, 1, None)
    );
    let audit = store.audit_page(PageRequest { after: None, limit: 10 }).await.unwrap();
    let details: Vec<_> = audit.rows.iter().map(|r| r.detail.as_deref()).collect();
    assert_eq!(
        details,
        [Some("previous status delivered; config current")],
        "only the replay that changed something is audited"
    );
}

/// Two workers making previews at once, both sweeping the same expired one: both succeed.
#[tokio::test]
async fn two_workers_sweeping_the_same_expired_preview_both_make_theirs() {
    let (_server, one, two, pool, _) = two_workers().await;
    let all = DeadLetterSelection::default();
    let expired = one.create_bulk_preview(all.clone(), "{}".into(), "ops".into(), UnixMs(1)).await.unwrap();
    let mut holder = pool.get().await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM bulk_replay_previews WHERE token = $1 FOR UPDATE", &[&expired.token]).await.unwrap();
    let expires_at = UnixMs::now().plus(Duration::from_secs(600));
    let previews = [one, two].map(|store| {
        let all = all.clone();
        tokio::spawn(
            async move { store.create_bulk_preview(all, "{}".into(), "ops".into(), expires_at).await.unwrap() },
        )
    });
    until_waiting_for_locks(&pool, 2).await;
    hold.commit().await.unwrap();
    for preview in previews {
        assert_eq!(preview.await.unwrap().total, 4);
    }
    let tokens: Vec<String> = pool
        .get()
        .await
        .unwrap()
        .query("SELECT token FROM bulk_replay_previews", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tokens.len(), 2);
    assert!(!tokens.contains(&expired.token), "swept");
}
