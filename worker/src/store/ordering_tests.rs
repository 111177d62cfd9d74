//! Per-key ordering in the store, on both backends: an ordered delivery is claimed only when no
//! earlier delivery of its (destination, key) is unfinished and no other one of the key is in
//! flight; a dead letter moves the key on (`skip`) or holds it until replayed or dismissed
//! (`block`); a replay goes before the key's later pending deliveries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::Store;
use super::deliveries::{AttemptRecord, ClaimDue, DueClass, NextStep, RecordingGate};
use super::events::{FirstClaims, NewEvent, Recorded};
use super::replays::{Dismissed, ReplayScope};
use super::tests::event;
use crate::model::{
    AttemptOutcome, DeadLetterReason, DeliveryId, DeliveryOrdering, EventRowId, LeaseToken, OrderingKey, ReplayConfig,
    UnixMs,
};

on_each_backend!(
    a_key_is_claimed_one_delivery_at_a_time_in_receipt_order_and_other_keys_flow,
    a_dead_letter_moves_its_key_on_or_blocks_it_until_replayed_or_dismissed,
    a_replayed_delivery_goes_before_its_keys_later_pending_ones_after_the_one_in_flight,
    the_recording_gate_holds_ordered_deliveries_until_every_earlier_message_is_recorded_or_they_settled,
);

/// Event `n` (ids `e01`, `e02`…, `u..` when unordered, so that both backends give row ids in
/// this order; stream sequence `n`, its place in its key's order) to destination `a`, ordered
/// by `key` (`None`: unordered), blocking when dead when `block`.
fn ordered(n: i64, key: Option<&str>, block: bool) -> NewEvent {
    let mut event = event(&format!("{}{n:02}", if key.is_some() { 'e' } else { 'u' }), "{}", &["a"]);
    event.stream_sequence = u64::try_from(n).unwrap();
    event.ordering = key
        .map(|key| {
            let ordering = DeliveryOrdering { key: OrderingKey::from_stored(key.to_owned()), blocks_when_dead: block };
            vec![("a".to_owned(), ordering)]
        })
        .unwrap_or_default();
    event
}

fn id(n: i64) -> DeliveryId {
    DeliveryId::of(EventRowId(n), "a")
}

/// Claims what is due for `a` at `now` (leases until `now` + 30 s); returns the claimed events'
/// numbers, sorted, with their lease tokens.
async fn claim(store: &Store, class: DueClass, now: i64) -> Vec<(i64, LeaseToken)> {
    claim_gated(store, class, now, None).await
}

/// [`claim`] through a recording gate.
async fn claim_gated(store: &Store, class: DueClass, now: i64, gate: Option<RecordingGate>) -> Vec<(i64, LeaseToken)> {
    let (claimed, _) = store
        .claim_due(
            "a".into(),
            ClaimDue { class, limit: 100, now: UnixMs(now), lease_until: UnixMs(now + 30_000), skip: vec![], gate },
        )
        .await
        .unwrap();
    let mut numbers: Vec<(i64, LeaseToken)> =
        claimed.iter().map(|c| (c.delivery.event_id[1..].parse().unwrap(), c.lease.token)).collect();
    numbers.sort_unstable();
    assert!(claimed.iter().all(|c| c.delivery.ordered == c.delivery.event_id.starts_with('e')), "ordered is said");
    numbers
}

fn numbers(claimed: &[(i64, LeaseToken)]) -> Vec<i64> {
    claimed.iter().map(|(n, _)| *n).collect()
}

async fn settle(store: &Store, n: i64, token: LeaseToken, next: NextStep) {
    let outcome = match next {
        NextStep::Delivered => AttemptOutcome::Delivered,
        NextStep::RetryAt(_) => AttemptOutcome::Transient,
        NextStep::DeadLetter(_) => AttemptOutcome::Permanent,
    };
    let record = AttemptRecord {
        delivery_id: id(n),
        attempt: 1,
        started_at: UnixMs(5),
        duration_ms: 1,
        outcome,
        status_code: Some(if outcome == AttemptOutcome::Delivered { 200 } else { 500 }),
        error: None,
        response_snippet: None,
        next,
        lease_token: token,
    };
    assert_eq!(store.record_attempt(record).await.unwrap(), super::AttemptSettled::Recorded);
}

fn token_of(claimed: &[(i64, LeaseToken)], n: i64) -> LeaseToken {
    claimed.iter().find(|(m, _)| *m == n).map(|(_, token)| *token).unwrap()
}

fn now_ms() -> i64 {
    UnixMs::now().0
}

/// Keys A, B, C interleaved (1 A, 2 B, 3 A, 4 B, 5 C) and 6 unordered. Only each key's head is
/// claimed; a key whose head retries holds only its own later deliveries.
async fn a_key_is_claimed_one_delivery_at_a_time_in_receipt_order_and_other_keys_flow(store: Store) {
    let events = vec![
        ordered(1, Some("A"), false),
        ordered(2, Some("B"), false),
        ordered(3, Some("A"), false),
        ordered(4, Some("B"), false),
        ordered(5, Some("C"), false),
        ordered(6, None, false),
    ];
    // Claimed at recording until long ago: what the recording worker may claim at once differs
    // by backend (SQLite claims a key's head; PostgreSQL leaves every ordered one to the
    // scheduler), never a delivery whose key has an earlier one unfinished.
    let recorded = store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    for (n, result) in recorded.iter().enumerate() {
        let Recorded::New { deliveries, unclaimed } = result else { panic!("new") };
        if [2, 3].contains(&n) {
            assert!(deliveries.is_empty() && unclaimed == &["a"], "event {} waits for its key", n + 1);
        }
        if n == 5 {
            assert_eq!(deliveries.len(), 1, "unordered: claimed at once");
        }
    }
    let now = now_ms();
    let first = claim(&store, DueClass::First, now).await;
    assert_eq!(numbers(&first), [1, 2, 5, 6], "each key's head, and the unordered one");
    assert!(claim(&store, DueClass::First, now).await.is_empty(), "3 and 4 wait while their heads are in flight");
    assert!(!store.has_due("a".into(), DueClass::First, UnixMs(now)).await.unwrap(), "nothing claimable is due");

    settle(&store, 1, token_of(&first, 1), NextStep::Delivered).await;
    settle(&store, 2, token_of(&first, 2), NextStep::RetryAt(UnixMs(now + 5_000))).await;
    assert!(store.has_due("a".into(), DueClass::First, UnixMs(now)).await.unwrap());
    let next = claim(&store, DueClass::First, now).await;
    assert_eq!(numbers(&next), [3], "A moves on; B's 4 waits behind its retrying head");
    settle(&store, 3, token_of(&next, 3), NextStep::Delivered).await;
    assert!(claim(&store, DueClass::First, now + 6_000).await.is_empty(), "4 still waits for 2");
    let retry = claim(&store, DueClass::Retry, now + 6_000).await;
    assert_eq!(numbers(&retry), [2]);
    settle(&store, 2, token_of(&retry, 2), NextStep::Delivered).await;
    assert_eq!(numbers(&claim(&store, DueClass::First, now + 6_000).await), [4], "B's turn comes");
}

/// With `skip` (key S: 1, 2) a dead-lettered head lets the next go; with `block` (key K: 3, 4,
/// 5) the key waits until the dead letter is replayed and delivered; (key D: 6, 7) or dismissed.
async fn a_dead_letter_moves_its_key_on_or_blocks_it_until_replayed_or_dismissed(store: Store) {
    let events = vec![
        ordered(1, Some("S"), false),
        ordered(2, Some("S"), false),
        ordered(3, Some("K"), true),
        ordered(4, Some("K"), true),
        ordered(5, Some("K"), true),
        ordered(6, Some("D"), true),
        ordered(7, Some("D"), true),
    ];
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    let now = now_ms();
    let heads = claim(&store, DueClass::First, now).await;
    assert_eq!(numbers(&heads), [1, 3, 6]);
    let dead = NextStep::DeadLetter(DeadLetterReason::Permanent4xx);
    for n in [1, 3, 6] {
        settle(&store, n, token_of(&heads, n), dead).await;
    }
    assert_eq!(numbers(&claim(&store, DueClass::First, now).await), [2], "skip moves on; block holds K and D");

    store.replay(id(3), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap();
    // A replay is due from the moment it was made.
    let now = now_ms() + 1;
    let replayed = claim(&store, DueClass::First, now).await;
    assert_eq!(numbers(&replayed), [3], "the replayed head goes first, 4 still waits");
    settle(&store, 3, token_of(&replayed, 3), NextStep::Delivered).await;
    assert_eq!(numbers(&claim(&store, DueClass::First, now).await), [4]);

    let dismissed = store.dismiss(id(6), "ops".into(), None).await.unwrap();
    assert!(matches!(dismissed, Dismissed::Done(_)), "{dismissed:?}");
    assert_eq!(numbers(&claim(&store, DueClass::First, now).await), [7], "dismissing the dead letter frees D");
}

/// Key R: 1 is dead-lettered (skip), 2 goes and is in flight when 1 is replayed: 1 waits for
/// 2's attempt to end (one in flight per key), then goes before 2's retry.
async fn a_replayed_delivery_goes_before_its_keys_later_pending_ones_after_the_one_in_flight(store: Store) {
    store
        .record(vec![ordered(1, Some("R"), false), ordered(2, Some("R"), false)], FirstClaims::all(UnixMs(1)))
        .await
        .unwrap();
    let now = now_ms();
    let first = claim(&store, DueClass::First, now).await;
    assert_eq!(numbers(&first), [1]);
    settle(&store, 1, token_of(&first, 1), NextStep::DeadLetter(DeadLetterReason::Permanent4xx)).await;
    let second = claim(&store, DueClass::First, now).await;
    assert_eq!(numbers(&second), [2]);
    store.replay(id(1), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap();
    let now = now_ms() + 1;
    assert!(claim(&store, DueClass::First, now).await.is_empty(), "2 is in flight: 1 waits");
    settle(&store, 2, token_of(&second, 2), NextStep::RetryAt(UnixMs(now))).await;
    assert!(claim(&store, DueClass::Retry, now).await.is_empty(), "2's retry waits for the replayed 1");
    assert_eq!(numbers(&claim(&store, DueClass::First, now).await), [1]);
}

/// Key G: 1 and 3, key H: 2, 4 unordered. Through position 0 (nothing acked yet) only the
/// unordered one is claimed; through 1 (the ack floor 0: 1's own message need not be acked), G's
/// 1, while 2 waits for 1's message to be recorded; with nothing known of the floor, ordered
/// deliveries recorded before `settled_before` go. The API's and the gauge's view of ordering: 3
/// waits for 1, the others do not.
async fn the_recording_gate_holds_ordered_deliveries_until_every_earlier_message_is_recorded_or_they_settled(
    store: Store,
) {
    let events = vec![
        ordered(1, Some("G"), false),
        ordered(2, Some("H"), false),
        ordered(3, Some("G"), false),
        ordered(4, None, false),
    ];
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    let now = now_ms();
    let gate = |through_position| Some(RecordingGate { through_position, settled_before: UnixMs(1) });
    assert_eq!(numbers(&claim_gated(&store, DueClass::First, now, gate(0)).await), [4], "ordered ones wait");
    assert!(store.has_due("a".into(), DueClass::First, UnixMs(now)).await.unwrap(), "due, held by the gate only");
    let one = claim_gated(&store, DueClass::First, now, gate(1)).await;
    assert_eq!(numbers(&one), [1], "1 has nothing before it left to record; 2 has");

    let row = async |n| store.delivery(id(n)).await.unwrap().unwrap();
    let waits: Vec<bool> = [row(1).await, row(2).await, row(3).await].iter().map(|r| r.waits_for_earlier).collect();
    assert_eq!(waits, [false, false, true], "3 waits for 1; 2's key has nothing before it");
    assert_eq!(row(3).await.ordering_key.as_ref().map(OrderingKey::as_str), Some("G"));
    assert_eq!(row(4).await.ordering_key, None);
    assert_eq!(store.stats().await.unwrap().ordered_waiting, [("a".to_owned(), 1)]);

    let unknown_floor = Some(RecordingGate { through_position: 0, settled_before: UnixMs(now_ms() + 1) });
    let settled = claim_gated(&store, DueClass::First, now, unknown_floor).await;
    assert_eq!(numbers(&settled), [2], "settled: 2 goes, 3 still waits for 1");
    settle(&store, 1, token_of(&one, 1), NextStep::Delivered).await;
    assert!(claim_gated(&store, DueClass::First, now, gate(2)).await.is_empty(), "3 is past the floor");
    assert_eq!(numbers(&claim_gated(&store, DueClass::First, now, gate(3)).await), [3]);
    assert!(!row(3).await.waits_for_earlier);
    assert!(store.stats().await.unwrap().ordered_waiting.is_empty());
}
