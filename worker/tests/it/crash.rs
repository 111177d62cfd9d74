//! The worker process killed with SIGKILL in the middle of work, restarted: every event
//! delivered, the store complete and consistent, no duplicate effect.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use tokio_util::sync::CancellationToken;

use crate::support::{TestDestination, TestStore, config_text, send_github, start_ingest, wait_ok};

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
    let store = TestStore::start_in(dir.path());
    // Slow enough that kills land while deliveries are in flight.
    let destination = TestDestination::start(|_| (200, Duration::from_millis(15))).await;
    let mut text = config_text(&nats.url(), &store, &[("sink", destination.url(), "timeout = \"2s\"")]);
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
    let within = deadline.saturating_duration_since(tokio::time::Instant::now());
    let every_delivery = format!("SELECT count(*) = {events} FROM deliveries WHERE status = 'delivered'");
    store.wait_until("the store records every delivery", within, &every_delivery).await;
    worker.kill().unwrap();
    worker.wait().unwrap();

    store.assert_integrity();
    let recorded = store.scalar_i64("SELECT count(*) FROM events").await;
    assert_eq!(recorded, events as i64, "every event recorded once");
    let orphans = store
        .scalar_i64(
            "SELECT count(*) FROM deliveries d WHERE d.status = 'delivered'
               AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id AND a.outcome = 'delivered')",
        )
        .await;
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
