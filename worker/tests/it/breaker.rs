//! Circuit breaker and isolation between destinations.

use std::time::Duration;

use crate::support::{Pipeline, TestDestination};

#[tokio::test]
async fn breaker_opens_stops_calling_half_opens_and_closes_without_spending_the_budget() {
    let dead = TestDestination::answering(500).await;
    let pipeline = Pipeline::start(&[(
        "dead",
        dead.url(),
        "retry_schedule = [\"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]\n\
         breaker = { failure_threshold = 2, cooldown = \"1s\" }\n\
         concurrency = 1",
    )])
    .await;
    for n in 0..4 {
        assert_eq!(pipeline.send(&format!("b-{n}"), "push", b"{}").await, 202);
    }
    // Wait for the breaker to open.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pipeline.metric("inlet_worker_breaker_state", &[("destination", "dead")]).await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "breaker never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the destination recover; the breaker's probe finds out and closes it.
    dead.set_behaviour(|_| (200, Duration::ZERO));
    pipeline
        .store
        .wait_until(
            "all delivered",
            Duration::from_secs(30),
            "SELECT count(*) = 4 FROM deliveries WHERE status = 'delivered'",
        )
        .await;
    assert_eq!(pipeline.metric("inlet_worker_breaker_state", &[("destination", "dead")]).await, 0.0, "closed again");

    // No calls while open: with one call in flight at a time, the call after the failure that
    // opened it is the probe, one cooldown later.
    let received = dead.received();
    let failures: Vec<_> = received.iter().filter(|r| r.status == 500).collect();
    assert!(failures.len() >= 2);
    let opened_at = failures[1].at;
    let next = received.iter().map(|r| r.at).filter(|at| *at > opened_at).min().unwrap();
    assert!(next - opened_at >= Duration::from_millis(900), "called {:?} after opening", next - opened_at);
    // Nothing was dead-lettered: postponements did not spend attempts.
    let dead_lettered =
        pipeline.store.scalar_i64("SELECT count(*) FROM deliveries WHERE status = 'dead_lettered'").await;
    assert_eq!(dead_lettered, 0);
    let max_attempts = pipeline.store.scalar_i64("SELECT max(attempts) FROM deliveries").await;
    assert!(max_attempts <= 3, "at most the failures before opening plus the probe: {max_attempts}");
}

#[tokio::test]
async fn a_slow_destination_does_not_delay_a_healthy_one() {
    // Each call to `slow` takes 8 s; `healthy` answers at once. Both get every event.
    let slow = TestDestination::start(|_| (200, Duration::from_secs(8))).await;
    let healthy = TestDestination::answering(200).await;
    let pipeline = Pipeline::start(&[("slow", slow.url(), "timeout = \"10s\""), ("healthy", healthy.url(), "")]).await;
    let events = 30;
    for n in 0..events {
        assert_eq!(pipeline.send(&format!("s-{n}"), "issues", b"{}").await, 202);
    }
    healthy.wait_for(events, Duration::from_secs(7)).await;
    assert_eq!(slow.count(), 0, "the healthy destination got everything before the slow one answered once");
    assert_eq!(healthy.delivered_keys().len(), events);
}
