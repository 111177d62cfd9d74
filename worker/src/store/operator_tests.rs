//! Tests of the operator plane's store operations against a real SQLite file: pages, cursors
//! and selections, the DataLoaders' batched reads, content priced before it is loaded, the
//! counts, and bulk replay jobs with their audit rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::deliveries::{AttemptRecord, NextStep};
use super::events::NewEvent;
use super::operator::{
    ContentRead, Cursor, DeadLetterSelection, EventSelection, EventStatusFilter, PageRequest, ReasonFilter,
    StatusCounts,
};
use super::replays::{BulkProgress, NewBulkReplay};
use super::{Store, StoreError};
use crate::model::{
    AttemptOutcome, AuditAction, BulkReplayId, BulkReplayStatus, DeadLetterReason, DeliveryId, DeliveryStatus,
    EventRowId, LeaseToken, RouteStatus, UnixMs,
};

use super::open_temp as open;

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

/// Four dead letters (three to `a`, one to `b`), one delivered-nowhere event.
async fn dead_letters() -> (tempfile::TempDir, Store, Vec<DeliveryId>) {
    let (dir, store) = open();
    let events = vec![event("e1", &["a"]), event("e2", &["a"]), event("e3", &["a"]), event("e4", &["b"])];
    store.record(events, UnixMs::now().plus(std::time::Duration::from_secs(60))).await.unwrap();
    store.record(vec![NewEvent { received_at: UnixMs(0), ..event("unrouted", &[]) }], UnixMs(0)).await.unwrap();
    let ids: Vec<DeliveryId> =
        [(1, "a"), (2, "a"), (3, "a"), (4, "b")].iter().map(|(e, d)| DeliveryId::of(EventRowId(*e), d)).collect();
    let reasons = [
        DeadLetterReason::Permanent4xx,
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::Permanent4xx,
        DeadLetterReason::Permanent4xx,
    ];
    for (id, reason) in ids.iter().zip(reasons) {
        dead_letter(&store, id, reason).await;
    }
    (dir, store, ids)
}

#[tokio::test]
async fn dead_letters_page_newest_first_by_cursor_and_an_unknown_reason_selects_nothing() {
    let (_dir, store, ids) = dead_letters().await;
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
    let permanent = Some(ReasonFilter::Is(DeadLetterReason::Permanent4xx));
    assert_eq!(count(DeadLetterSelection { reason: permanent, ..Default::default() }).await, 3);
    assert_eq!(
        count(DeadLetterSelection { reason: permanent, destination: Some("a".into()), ..Default::default() }).await,
        2
    );
    assert_eq!(count(DeadLetterSelection { reason: Some(ReasonFilter::Unknown), ..Default::default() }).await, 0);
    assert_eq!(count(DeadLetterSelection { text: Some("e_".into()), ..Default::default() }).await, 0, "literal");
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

#[tokio::test]
async fn events_filter_by_state_and_the_batched_reads_group_by_key() {
    let (_dir, store, ids) = dead_letters().await;
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

#[tokio::test]
async fn content_is_priced_before_it_is_loaded() {
    let (_dir, store, _) = dead_letters().await;
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
    assert!(matches!(store.event_content(EventRowId(99), |_| true).await, Err(StoreError::Sqlite(_))), "as before");
}

#[tokio::test]
async fn totals_and_destination_counts_come_from_the_kept_counts() {
    let (_dir, store, _) = dead_letters().await;
    let totals = store.totals().await.unwrap();
    assert_eq!((totals.events, totals.unrouted), (5, 1));
    assert_eq!(totals.deliveries, StatusCounts { pending: 0, delivered: 0, dead_lettered: 4 });
    let counts = store.destination_counts().await.unwrap();
    assert_eq!(counts["a"], StatusCounts { dead_lettered: 3, ..Default::default() });
    assert_eq!(counts["b"].dead_lettered, 1);
}

#[tokio::test]
async fn a_bulk_replay_job_is_created_with_its_audit_row_and_closed_at_startup_when_left_running() {
    let (_dir, store) = open();
    let filter_json = "{\"destination\":\"a\"}".to_owned();
    let job = store
        .create_bulk_replay(NewBulkReplay {
            actor: "ops@x".into(),
            filter_json: filter_json.clone(),
            rate_per_second: 5,
            total: 3,
        })
        .await
        .unwrap();
    assert_eq!(
        (job.status, job.total, job.done, job.rate_per_second, job.finished_at),
        (BulkReplayStatus::Running, 3, 0, 5, None)
    );
    store.bulk_replay_progress(job.id, BulkProgress { done: 2, enqueued: 1 }).await.unwrap();
    let read = store.bulk_replay(job.id).await.unwrap().unwrap();
    assert_eq!((read.done, read.enqueued, read.filter_json.as_str()), (2, 1, filter_json.as_str()));

    let cancelled = store.audit_bulk_replay_cancel(job.id, "ops@x".into(), false).await.unwrap();
    assert_eq!(cancelled.map(|j| j.status), Some(BulkReplayStatus::Running), "the runner records the end");
    assert_eq!(store.audit_bulk_replay_cancel(BulkReplayId(99), "ops@x".into(), true).await.unwrap(), None);
    assert_eq!(store.close_interrupted_bulk_replays().await.unwrap(), 1);
    let closed = store.bulk_replay(job.id).await.unwrap().unwrap();
    assert_eq!(closed.status, BulkReplayStatus::Cancelled);
    assert!(closed.finished_at.is_some());
    store.finish_bulk_replay(job.id, BulkProgress { done: 3, enqueued: 2 }, BulkReplayStatus::Finished).await.unwrap();
    assert_eq!(store.bulk_replay(job.id).await.unwrap().unwrap().status, BulkReplayStatus::Finished);

    let audit = store.audit_page(PageRequest { after: None, limit: 1 }).await.unwrap();
    assert!(audit.has_more);
    let cancel = &audit.rows[0];
    assert_eq!((cancel.action, cancel.detail.as_deref()), (AuditAction::CancelBulkReplay, Some("was not running")));
    let rest = store.audit_page(PageRequest { after: Some(cancel.cursor()), limit: 5 }).await.unwrap();
    assert!(!rest.has_more);
    let started = &rest.rows[0];
    assert_eq!((started.action, started.actor.as_str(), started.count), (AuditAction::BulkReplay, "ops@x", 3));
    assert_eq!(
        (started.target.clone(), started.detail.as_deref()),
        (format!("bulk_replay:{}", job.id.0), Some(filter_json.as_str()))
    );
}
