//! The worker process killed with SIGKILL in the middle of work, restarted: every event
//! delivered, SQLite complete and consistent, no duplicate effect.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use tokio_util::sync::CancellationToken;

use crate::support::{TestDestination, config_text, send_github, start_ingest, wait_ok};

pub(crate) fn spawn_worker(config_path: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_inlet-worker"))
        .arg("--config")
        .arg(config_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn worker_killed_mid_batch_loses_nothing_and_duplicates_no_effect() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("inlet.db");
    // Slow enough that kills land while deliveries are in flight.
    let destination = TestDestination::start(|_| (200, Duration::from_millis(15))).await;
    let mut text = config_text(&nats.url(), &database, &[("sink", destination.url(), "timeout = \"2s\"")]);
    text = text
        .replace("ack_wait = \"5s\"", "ack_wait = \"2s\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"");
    let config_path = dir.path().join("inlet.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();

    let ingest_stop = CancellationToken::new();
    let ingest = start_ingest(config, &ingest_stop).await.public;
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;

    let events = 150;
    for n in 0..events {
        assert_eq!(send_github(&client, ingest, &format!("k-{n}"), "push", b"{\"k\":1}").await, 202);
    }

    let mut worker = spawn_worker(&config_path);
    let mut kills = 0;
    for threshold in [20, 60, 100] {
        destination.wait_for(threshold, Duration::from_secs(60)).await;
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
        kills += 1;
        worker = spawn_worker(&config_path);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while destination.delivered_keys().len() < events {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {events} delivered",
            destination.delivered_keys().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last attempts' results be committed.
    let connection_check = || {
        let connection = rusqlite::Connection::open(&database).unwrap();
        connection
            .query_row("SELECT count(*) FROM deliveries WHERE status = 'delivered'", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    while connection_check() < events as i64 {
        assert!(tokio::time::Instant::now() < deadline, "SQLite never recorded every delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.kill().unwrap();
    worker.wait().unwrap();

    let connection = rusqlite::Connection::open(&database).unwrap();
    let integrity: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let recorded: i64 = connection.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(recorded, events as i64, "every event recorded once");
    let orphans: i64 = connection
        .query_row(
            "SELECT count(*) FROM deliveries d WHERE d.status = 'delivered'
               AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id AND a.outcome = 'delivered')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "every delivered delivery has its successful attempt recorded");

    let keys = destination.delivered_keys();
    assert_eq!(keys.len(), events, "every event's effect happened");
    // A repeat can only come from a kill between the destination's answer and the commit
    // of that attempt; the Idempotency-Key makes it harmless. Bound it by what was in flight.
    let repeats: usize = keys.values().map(|n| n - 1).sum();
    assert!(repeats <= kills * 16, "{repeats} repeated deliveries after {kills} kills");
    drop(nats);
    ingest_stop.cancel();
}

/// The database locked by another process: the worker stops acking (nothing is recorded, so
/// nothing is delivered or acked), reports not ready, and resumes without loss once it is free.
#[tokio::test]
async fn a_locked_database_stops_acking_reports_not_ready_and_resumes_without_loss() {
    let destination = TestDestination::answering(200).await;
    let pipeline = crate::support::Pipeline::start(&[("sink", destination.url(), "")]).await;
    let readyz = format!("http://{}/readyz", pipeline.worker_main);

    // Another process takes the write lock and keeps it.
    let locker = rusqlite::Connection::open(pipeline.database()).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for n in 0..5 {
        assert_eq!(pipeline.send(&format!("locked-{n}"), "push", b"{}").await, 202, "ingest does not depend on SQLite");
    }
    // The writer gives up after its busy timeout: the worker says it is not ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pipeline.client.get(&readyz).send().await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < deadline, "readiness never reported the locked database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(destination.count(), 0, "nothing recorded, so nothing delivered");

    locker.execute_batch("ROLLBACK").unwrap();
    destination.wait_for(5, Duration::from_secs(60)).await;
    assert_eq!(destination.delivered_keys().len(), 5, "every event delivered after the lock is gone");
    while pipeline.client.get(&readyz).send().await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(30), "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
