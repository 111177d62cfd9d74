//! A 2xx'd webhook is never lost and never stuck: delivery scheduling under ordinary destination
//! failures (rate limits, failing first attempts, a class of events that always fails, an
//! outage under load, back-pressure, authentication hiccups), a stalled worker, and a second
//! worker started by mistake.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use tokio_util::sync::CancellationToken;

use crate::support::{Pipeline, TestDestination, TestStore, config_text, row, send_github, start_ingest, wait_ok};

/// Whether a delivery belongs to every `n`-th event, by the event's row id in the delivery id
/// (`dlv_<row, hex>_<destination>`): a class of events that a destination always fails.
fn every_nth_event(n: u64) -> impl Fn(&str) -> bool + Send + Sync + Copy + 'static {
    move |key: &str| {
        key.strip_prefix("dlv_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|row| u64::from_str_radix(row, 16).ok())
            .is_some_and(|row| row % n == 0)
    }
}

/// Sends `n` signed webhooks (`{prefix}-{i}`) at `per_second`; each must be accepted.
async fn send_paced(pipeline: &Pipeline, prefix: &str, n: usize, per_second: u64) {
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    for i in 0..n {
        ticks.tick().await;
        let status = pipeline.send(&format!("{prefix}-{i}"), "push", format!("{{\"n\":{i}}}").as_bytes()).await;
        assert!(status == 202, "webhook {i} answered {status}");
    }
}

/// Waits until `n` deliveries are `delivered` in the store.
async fn wait_delivered(store: &TestStore, n: i64, within: Duration) {
    let sql = format!("SELECT count(*) >= {n} FROM deliveries WHERE status = 'delivered'");
    store.wait_until(&format!("{n} deliveries delivered"), within, &sql).await;
}

async fn count(pipeline: &Pipeline, sql: &str) -> i64 {
    pipeline.store.scalar_i64(sql).await
}

/// The minimal repro: a rate-limited destination whose first attempts fail. Attempts
/// wait in the rate limiter longer than a broker's ack_wait; before the store scheduled
/// deliveries, redelivered copies were acked as "already claimed" and 26 of 60 events were
/// never delivered.
#[tokio::test]
async fn a_rate_limited_destination_failing_every_first_attempt_gets_every_event() {
    let sink = TestDestination::start_keyed(|_, _, nth| (if nth == 0 { 500 } else { 200 }, Duration::ZERO)).await;
    let extra = "timeout = \"2s\"\nrate_limit = { per_second = 5, burst = 5 }\nconcurrency = 32\n\
                 breaker = { failure_threshold = 100000, cooldown = \"1s\" }\nretry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\"]";
    let pipeline = Pipeline::start(&[("sink", sink.url(), extra)]).await;
    let events = 40;
    send_paced(&pipeline, "repro", events, 20).await;
    wait_delivered(&pipeline.store, events as i64, Duration::from_secs(90)).await;
    let keys = sink.delivered_keys();
    assert_eq!(keys.len(), events, "every event delivered");
    assert!(keys.values().all(|&n| n == 1), "each delivered once: {keys:?}");
    assert_eq!(count(&pipeline, "SELECT count(*) FROM deliveries WHERE status = 'pending'").await, 0, "none stuck");
    let second_attempts =
        count(&pipeline, "SELECT count(*) FROM attempts WHERE attempt = 2 AND outcome = 'delivered'").await;
    assert_eq!(second_attempts, events as i64, "each on its second attempt");
}

/// 5 % of events always fail and wait for their retries (30 s away); the other 95 % must all
/// be delivered promptly. A retry used to hold a delivery slot for its whole delay, so four
/// failing events stopped a destination with concurrency 4.
#[tokio::test]
async fn a_class_of_events_that_always_fails_does_not_starve_the_others() {
    let poison = every_nth_event(20);
    let sink =
        TestDestination::start_keyed(move |_, key, _| (if poison(key) { 500 } else { 200 }, Duration::ZERO)).await;
    let extra = "concurrency = 4\nbreaker = { failure_threshold = 100000, cooldown = \"1s\" }\n\
                 retry_schedule = [\"30s\", \"30s\", \"30s\"]";
    let pipeline = Pipeline::start(&[("sink", sink.url(), extra)]).await;
    let events = 200;
    send_paced(&pipeline, "mixed", events, 200).await;
    // Which keys are poison depends on the delivery ids; count them from what the sink saw.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let failing: std::collections::HashSet<String> = sink
            .received()
            .iter()
            .filter(|r| r.status == 500)
            .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
            .collect();
        let delivered = sink.delivered_keys().len();
        if delivered + failing.len() == events {
            assert_eq!(failing.len(), events / 20, "every 20th event fails");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healthy events starved: {delivered} delivered, {} failing, of {events}",
            failing.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The failing ones wait for their retry in the store, holding nothing.
    let waiting = count(&pipeline, "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts = 1").await;
    assert!(waiting > 0, "the poison events wait for their retries");
}

/// The destination is down while a steady load starts, then recovers: every accepted event is
/// delivered exactly once, nothing stays pending. The outage ends when the destination has
/// refused 20 requests (not after a fixed time, which a slow start could spend before the first
/// delivery).
#[tokio::test]
async fn an_outage_under_load_loses_nothing() {
    let sink = TestDestination::start(|_| (503, Duration::ZERO)).await;
    let extra = "concurrency = 16\nbreaker = { failure_threshold = 5, cooldown = \"1s\" }\n\
                 retry_schedule = [\"500ms\", \"1s\", \"2s\", \"4s\", \"4s\", \"4s\", \"4s\"]";
    let pipeline = Pipeline::start(&[("outage", sink.url(), extra)]).await;
    let events = 600;
    let recover = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while sink.received().iter().filter(|r| r.status == 503).count() < 20 {
            assert!(Instant::now() < deadline, "the destination saw no load");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sink.set_behaviour(|_| (200, Duration::ZERO));
    };
    tokio::join!(send_paced(&pipeline, "outage", events, 100), recover);
    wait_delivered(&pipeline.store, events as i64, Duration::from_secs(90)).await;
    let keys = sink.delivered_keys();
    assert_eq!(keys.len(), events);
    assert!(keys.values().all(|&n| n == 1), "503s are answers: no duplicate sends");
    assert_eq!(count(&pipeline, "SELECT count(*) FROM deliveries WHERE status <> 'delivered'").await, 0);
    assert!(
        count(&pipeline, "SELECT count(*) FROM attempts WHERE status_code = 503").await >= 20,
        "the outage was seen"
    );
}

/// Five 429s with `Retry-After: 1` are back-pressure: the breaker (threshold 5, cooldown 60 s)
/// must not open, and every event arrives about a second later, not after the cooldown.
#[tokio::test]
async fn a_429_with_retry_after_is_back_pressure_not_failure() {
    let sink = TestDestination::start(|n| (if n < 6 { 429 } else { 200 }, Duration::ZERO)).await;
    let extra = "concurrency = 2\nbreaker = { failure_threshold = 5, cooldown = \"60s\" }\nretry_schedule = [\"30s\", \"30s\", \"30s\", \"30s\"]";
    // A name of its own: the breaker gauge is process-wide (see the retry-burst test).
    let pipeline = Pipeline::start(&[("back-pressure", sink.url(), extra)]).await;
    let sent = Instant::now();
    for n in 0..6 {
        assert_eq!(pipeline.send(&format!("busy-{n}"), "push", b"{}").await, 202);
    }
    wait_delivered(&pipeline.store, 6, Duration::from_secs(20)).await;
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "delivered after the Retry-After, not a cooldown or the schedule"
    );
    assert_eq!(pipeline.metric("inlet_worker_breaker_state", &[("destination", "back-pressure")]).await, 0.0);
    let keys = sink.delivered_keys();
    assert_eq!(keys.len(), 6);
}

/// A destination answering 401 for a moment (its secret or clock out of step) is retried, not
/// dead-lettered at once; a 401 that persists is dead-lettered after `auth_failure_attempts`.
#[tokio::test]
async fn authentication_failures_are_retried_before_dead_lettering() {
    let sink = TestDestination::start_keyed(|_, key, nth| {
        let status = if key.ends_with("_sink") && nth < 1 { 401 } else { 200 };
        (status, Duration::ZERO)
    })
    .await;
    let stuck = TestDestination::answering(403).await;
    let fast = "retry_schedule = [\"100ms\", \"100ms\", \"100ms\", \"100ms\"]";
    let pipeline = Pipeline::start(&[("sink", sink.url(), fast), ("stuck", stuck.url(), fast)]).await;
    assert_eq!(pipeline.send("auth-1", "push", b"{}").await, 202);
    pipeline
        .store
        .wait_until(
            "both settled",
            Duration::from_secs(20),
            "SELECT count(*) = 2 FROM deliveries WHERE status <> 'pending'",
        )
        .await;
    let states = pipeline
        .store
        .rows("SELECT destination, status, attempts, dead_letter_reason FROM deliveries ORDER BY destination")
        .await;
    assert_eq!(states[0], row(&[Some("sink"), Some("delivered"), Some("2"), None]), "a passing 401 is retried");
    assert_eq!(
        states[1],
        row(&[Some("stuck"), Some("dead_lettered"), Some("3"), Some("permanent_4xx")]),
        "a lasting 403 is dead-lettered after the default 3 attempts"
    );
}

/// The worker process stopped (SIGSTOP) for longer than `ack_wait` and the attempt timeout,
/// while its requests are being answered: nothing is lost, no answer that arrived meanwhile is
/// recorded as a timeout, and nothing is sent twice.
#[tokio::test]
async fn a_worker_stopped_longer_than_ack_wait_loses_nothing_and_times_no_answer_out() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::start_in(dir.path());
    let sink = TestDestination::start(|_| (200, Duration::from_millis(300))).await;
    let mut text = config_text(&nats.url(), &store, &[("sink", sink.url(), "timeout = \"1s\"\nconcurrency = 4")]);
    text = text
        .replace("ack_wait = \"5s\"", "ack_wait = \"1s\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"");
    let config_path = dir.path().join("inlet.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    let stop = CancellationToken::new();
    let ingest = start_ingest(config, &stop).await.public;
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;

    let mut worker = crate::crash::spawn_worker(&config_path);
    let events = 40;
    for n in 0..events {
        assert_eq!(send_github(&client, ingest, &format!("stall-{n}"), "push", b"{}").await, 202);
    }
    sink.wait_for(4, Duration::from_secs(30)).await;
    let pid = worker.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // Requests in flight are answered (300 ms) while the worker cannot run.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());

    wait_delivered(&store, events as i64, Duration::from_secs(60)).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let timeouts = store.scalar_i64("SELECT count(*) FROM attempts WHERE error = 'timeout'").await;
    assert_eq!(timeouts, 0, "answers that arrived during the stall were read, not timed out");
    let keys = sink.delivered_keys();
    assert_eq!(keys.len(), events);
    assert!(keys.values().all(|&n| n == 1), "nothing sent twice: {keys:?}");
    stop.cancel();
}

/// Two workers with their own databases on one NATS would split the events between two
/// databases: the second is refused at startup, naming the holder. The first keeps working.
/// (The same SQLite file from a second process: `sqlite_only::file_lock`.)
#[tokio::test]
async fn a_second_worker_with_its_own_database_is_refused_at_startup() {
    let sink = TestDestination::answering(200).await;
    let pipeline = Pipeline::start(&[("sink", sink.url(), "")]).await;
    let other = pipeline.store.another("other");
    let error = second_worker_error(&pipeline, &other, &sink).await;
    assert!(error.contains("another inlet-worker consumes this intake stream"), "{error}");
    assert_eq!(pipeline.send("still-1", "push", b"{}").await, 202);
    sink.wait_for(1, Duration::from_secs(20)).await;
}

/// Starts a second in-process worker next to `pipeline`'s, on `store`; it must be refused at
/// once: returns its error.
pub(crate) async fn second_worker_error(pipeline: &Pipeline, store: &TestStore, sink: &TestDestination) -> String {
    let text = config_text(&pipeline.nats_url(), store, &[("sink", sink.url(), "")]);
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    let listeners = inlet_worker::Listeners {
        main: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let started = Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(20), inlet_worker::run(config, listeners, CancellationToken::new()))
            .await
            .expect("refused at startup, not left running");
    let error = format!("{:#}", result.expect_err("a second worker must not start"));
    assert!(started.elapsed() < Duration::from_secs(10), "refused at once: {error}");
    error
}

/// More new deliveries than a destination keeps in memory (8 MiB of bodies): the overflow goes
/// through the store, and every event is still delivered exactly once, none left pending.
#[tokio::test]
async fn a_backlog_larger_than_the_in_memory_handover_is_delivered_in_full() {
    let sink = TestDestination::start(|_| (200, Duration::from_millis(50))).await;
    let pipeline = Pipeline::start(&[("sink", sink.url(), "concurrency = 2")]).await;
    let events = 120;
    let pad = "x".repeat(100 * 1024);
    let bodies: Vec<(String, String)> =
        (0..events).map(|n| (format!("big-{n}"), format!("{{\"n\":{n},\"pad\":\"{pad}\"}}"))).collect();
    // All at once, so they are recorded faster than two slots deliver them.
    let statuses =
        futures::future::join_all(bodies.iter().map(|(id, body)| pipeline.send(id, "push", body.as_bytes()))).await;
    assert!(statuses.iter().all(|&s| s == 202), "{statuses:?}");
    wait_delivered(&pipeline.store, events as i64, Duration::from_secs(60)).await;
    let keys = sink.delivered_keys();
    assert_eq!(keys.len(), events);
    assert!(keys.values().all(|&n| n == 1), "each delivered once: {keys:?}");
    assert_eq!(count(&pipeline, "SELECT count(*) FROM deliveries WHERE status = 'pending'").await, 0);
    // The overflow really went through the store: claimed there (a second fencing token).
    let overflow = count(&pipeline, "SELECT count(*) FROM deliveries WHERE lease_token >= 2").await;
    assert!(overflow > 0, "no overflow happened");
}

/// Retries of a class of events that always fails come in bursts; they must not open the
/// breaker (threshold 3, cooldown 60 s) and hold back the healthy events arriving meanwhile.
/// Found by the soak: each successful probe was followed within milliseconds by a burst of
/// failing retries that opened the breaker again, one healthy delivery per cooldown.
#[tokio::test]
async fn failing_retries_do_not_open_the_breaker_on_healthy_traffic() {
    let poison = every_nth_event(5);
    let sink =
        TestDestination::start_keyed(move |_, key, _| (if poison(key) { 500 } else { 200 }, Duration::ZERO)).await;
    let extra = "concurrency = 8\nbreaker = { failure_threshold = 3, cooldown = \"60s\" }\n\
                 retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]";
    // Metrics are process-wide (server::metrics_handle) and tests run side by side: the breaker
    // gauge is read under a destination name no other test uses (the outage test opens "outage").
    let pipeline = Pipeline::start(&[("retry-burst", sink.url(), extra)]).await;
    let events = 200;
    send_paced(&pipeline, "burst", events, 50).await;
    pipeline
        .store
        .wait_until(
            "every healthy event delivered",
            Duration::from_secs(20),
            &format!("SELECT count(*) = {} FROM deliveries WHERE status = 'delivered'", events - events / 5),
        )
        .await;
    assert_eq!(pipeline.metric("inlet_worker_breaker_state", &[("destination", "retry-burst")]).await, 0.0);
}
