//! Tests of what a backfill asks of the store, on both backends: which listed ids are stored,
//! and which GitHub delivery ids are among the stored request headers since a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use super::tests::event;
use super::{FirstClaims, NewEvent, Store};
use crate::model::UnixMs;

/// An event of `source` received at `at` (seconds) with these stored request headers.
fn received(source: &str, id: &str, at: i64, sequence: u64, headers: &[(&str, &str)]) -> NewEvent {
    NewEvent {
        source: source.into(),
        received_at: UnixMs(at * 1000),
        stream_sequence: sequence,
        headers_json: serde_json::to_string(headers).unwrap(),
        ..event(id, "{}", &[])
    }
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

async fn stored_ids_are_found_by_source(store: Store) {
    let events = vec![received("stripe", "evt_1", 100, 1, &[]), received("other", "evt_2", 100, 2, &[])];
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    let asked = vec!["evt_1".to_owned(), "evt_2".to_owned(), "evt_3".to_owned()];
    assert_eq!(store.stored_event_ids("stripe".into(), asked).await.unwrap(), set(&["evt_1"]));
    assert_eq!(store.stored_event_ids("stripe".into(), vec![]).await.unwrap(), set(&[]));
}

async fn github_deliveries_are_found_in_the_stored_headers_since_the_time(store: Store) {
    let delivery = |guid: &'static str| ("x-github-delivery", guid);
    let events = vec![
        // Another header before it, and a delivery id that another one starts with.
        received(
            "gh",
            "sha256:a",
            10_000,
            1,
            &[("user-agent", "GitHub-Hookshot/1"), delivery("g1"), ("x-github-event", "push")],
        ),
        received("gh", "sha256:b", 10_000, 2, &[delivery("g10")]),
        // Received long before the time asked: not looked at.
        received("gh", "sha256:c", 1_000, 3, &[delivery("g2")]),
        // Another source.
        received("other", "sha256:d", 10_000, 4, &[delivery("g3")]),
        // Within the clock window before the time.
        received("gh", "sha256:e", 9_500, 5, &[delivery("g4")]),
    ];
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    let since = UnixMs(10_000 * 1000);
    let asked = ["g1", "g2", "g3", "g4", "g5", "g1\"", "g10"].map(str::to_owned).to_vec();
    let found = store.stored_github_deliveries("gh".into(), since, asked).await.unwrap();
    assert_eq!(found, set(&["g1", "g4", "g10"]));
    let only_g1 = store.stored_github_deliveries("gh".into(), since, vec!["g1".into()]).await.unwrap();
    assert_eq!(only_g1, set(&["g1"]), "g10 is not g1");
    let later = store.stored_github_deliveries("gh".into(), since.plus(Duration::from_secs(3600)), vec!["g1".into()]);
    assert_eq!(later.await.unwrap(), set(&[]));
}

on_each_backend!(stored_ids_are_found_by_source, github_deliveries_are_found_in_the_stored_headers_since_the_time);
