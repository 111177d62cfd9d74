//! Delivery semantics: exactly once per event and destination, retries, dead letters.

use std::time::Duration;

use crate::support::{Pipeline, TestDestination, inlet_signature_valid, row};

const FAST_RETRIES: &str = "retry_schedule = [\"100ms\", \"100ms\"]";

/// Waits until the test's one delivery is dead-lettered.
async fn wait_dead_lettered(pipeline: &Pipeline) {
    pipeline
        .store
        .wait_until(
            "dead-lettered",
            Duration::from_secs(20),
            "SELECT count(*) = 1 FROM deliveries WHERE status = 'dead_lettered'",
        )
        .await;
}

#[tokio::test]
async fn exactly_one_delivery_per_event_per_destination_with_duplicates_mixed_in() {
    let first = TestDestination::answering(200).await;
    let second = TestDestination::answering(204).await;
    let pipeline = Pipeline::start(&[("first", first.url(), ""), ("second", second.url(), "")]).await;
    let events = 40;
    for n in 0..events {
        let body = format!("{{\"n\":{n},\"text\":\"caf\u{e9}\"}}");
        let status = pipeline.send(&format!("d-{n}"), "push", body.as_bytes()).await;
        assert_eq!(status, 202);
        if n % 4 == 0 {
            // A provider retry of the same delivery.
            assert_eq!(pipeline.send(&format!("d-{n}"), "push", body.as_bytes()).await, 200);
        }
    }
    // An event no route matches is recorded, not dropped.
    assert_eq!(pipeline.send("d-unrouted", "star", b"{}").await, 202);

    first.wait_for(events, Duration::from_secs(30)).await;
    second.wait_for(events, Duration::from_secs(30)).await;
    pipeline
        .store
        .wait_until(
            "all deliveries recorded as delivered",
            Duration::from_secs(10),
            &format!("SELECT count(*) = {} FROM deliveries WHERE status = 'delivered'", 2 * events),
        )
        .await;

    for destination in [&first, &second] {
        let keys = destination.delivered_keys();
        assert_eq!(keys.len(), events, "one delivery per event");
        assert!(keys.values().all(|&n| n == 1), "no event delivered twice: {keys:?}");
        for received in destination.received() {
            assert!(inlet_signature_valid(&received), "Inlet signature verifies with a Standard Webhooks verifier");
            assert_eq!(received.headers["content-type"], "application/json");
            assert_eq!(received.headers["webhook-id"], received.headers["idempotency-key"]);
            assert_eq!(received.headers["inlet-source"], "gh");
            assert_eq!(received.headers["inlet-event-type"], "push");
            let delivery: String = received.headers["inlet-event-id"].to_str().unwrap().to_owned();
            let n: usize = delivery.trim_start_matches("d-").parse().unwrap();
            assert_eq!(received.body, format!("{{\"n\":{n},\"text\":\"caf\u{e9}\"}}").as_bytes(), "original bytes");
        }
    }
    let store = &pipeline.store;
    assert_eq!(store.scalar_i64("SELECT count(*) FROM events").await, events as i64 + 1);
    assert_eq!(
        store.scalar_i64("SELECT sum(duplicates) FROM events").await,
        0,
        "provider retries were absorbed by JetStream's window before reaching the store"
    );
    let unrouted = store.scalar("SELECT route_status FROM events WHERE event_id = 'd-unrouted'").await;
    assert_eq!(unrouted.as_deref(), Some("unrouted"));
}

#[tokio::test]
async fn a_destination_failing_twice_then_succeeding_gets_it_on_the_third_attempt() {
    let flaky = TestDestination::start(|n| (if n < 2 { 503 } else { 200 }, Duration::ZERO)).await;
    let pipeline = Pipeline::start(&[("flaky", flaky.url(), FAST_RETRIES)]).await;
    assert_eq!(pipeline.send("d-1", "push", b"{\"a\":1}").await, 202);
    flaky.wait_for(3, Duration::from_secs(20)).await;
    pipeline
        .store
        .wait_until(
            "delivered",
            Duration::from_secs(10),
            "SELECT count(*) = 1 FROM deliveries WHERE status = 'delivered'",
        )
        .await;
    let attempts = pipeline.store.rows("SELECT attempt, outcome, status_code FROM attempts ORDER BY attempt").await;
    assert_eq!(
        attempts,
        vec![
            row(&[Some("1"), Some("transient"), Some("503")]),
            row(&[Some("2"), Some("transient"), Some("503")]),
            row(&[Some("3"), Some("delivered"), Some("200")]),
        ]
    );
    assert_eq!(flaky.delivered_keys().len(), 1);
}

#[tokio::test]
async fn always_500_is_dead_lettered_after_exactly_the_configured_attempts() {
    let broken = TestDestination::answering(500).await;
    let pipeline = Pipeline::start(&[("broken", broken.url(), FAST_RETRIES)]).await;
    assert_eq!(pipeline.send("d-500", "push", b"{}").await, 202);
    wait_dead_lettered(&pipeline).await;
    let dead = pipeline.store.row("SELECT attempts, dead_letter_reason, last_status_code FROM deliveries").await;
    assert_eq!(dead, row(&[Some("3"), Some("retries_exhausted"), Some("500")]));
    assert_eq!(broken.count(), 3, "no attempt beyond the schedule");
    // The event itself stays, with its history, replayable.
    assert_eq!(pipeline.store.scalar_i64("SELECT count(*) FROM attempts").await, 3);
    // The metrics say so too.
    let mut dead = 0.0;
    for _ in 0..100 {
        dead = pipeline.metric("inlet_worker_dead_letter_backlog", &[]).await;
        if dead >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dead >= 1.0);
    assert!(
        pipeline
            .metric("inlet_worker_dead_lettered_total", &[("destination", "broken"), ("reason", "retries_exhausted")])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_400_is_dead_lettered_at_once_as_permanent() {
    let rejecting = TestDestination::answering(400).await;
    let pipeline = Pipeline::start(&[("rejecting", rejecting.url(), FAST_RETRIES)]).await;
    assert_eq!(pipeline.send("d-400", "push", b"{}").await, 202);
    wait_dead_lettered(&pipeline).await;
    let dead = pipeline.store.row("SELECT attempts, dead_letter_reason FROM deliveries").await;
    assert_eq!(dead, row(&[Some("1"), Some("permanent_4xx")]));
    assert_eq!(rejecting.count(), 1);
}

#[tokio::test]
async fn retry_after_from_the_destination_is_honoured() {
    let throttling = TestDestination::start(|n| (if n == 0 { 429 } else { 200 }, Duration::ZERO)).await;
    let pipeline = Pipeline::start(&[("throttling", throttling.url(), "retry_schedule = [\"10ms\"]")]).await;
    assert_eq!(pipeline.send("d-429", "push", b"{}").await, 202);
    throttling.wait_for(2, Duration::from_secs(20)).await;
    pipeline
        .store
        .wait_until("both attempts recorded", Duration::from_secs(10), "SELECT count(*) = 2 FROM attempts")
        .await;
    let gap = pipeline.store.scalar_i64("SELECT max(started_at_ms) - min(started_at_ms) FROM attempts").await;
    // The schedule says 10 ms, the 429 said `Retry-After: 1`: the longer wait wins.
    assert!(gap >= 900, "retry came after {gap} ms");
}

#[tokio::test]
async fn the_destination_rate_limit_spaces_deliveries() {
    let limited = TestDestination::answering(200).await;
    let pipeline = Pipeline::start(&[("limited", limited.url(), "rate_limit = { per_second = 20, burst = 1 }")]).await;
    for n in 0..10 {
        assert_eq!(pipeline.send(&format!("r-{n}"), "push", b"{}").await, 202);
    }
    limited.wait_for(10, Duration::from_secs(20)).await;
    let mut arrivals: Vec<_> = limited.received().iter().map(|r| r.at).collect();
    arrivals.sort();
    // 20 per second with a burst of 1: ten calls need at least nine 50 ms gaps (the limiter
    // allows up to one cell of slack, hence 8).
    let span = *arrivals.last().unwrap() - arrivals[0];
    assert!(span >= Duration::from_millis(8 * 50), "10 deliveries within {span:?}");
    assert_eq!(limited.delivered_keys().len(), 10);
}
