//! `inlet-worker backup` as an operator runs it, while the worker records and delivers, then
//! restored after the disk is lost: the restored store holds every event of the backup with its
//! ids, catches up from the stream with the ids the lost store had given, and every event is
//! delivered under one `Idempotency-Key` only, never shared with another event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use tokio_util::sync::CancellationToken;

use crate::crash::spawn_worker;
use crate::support::{Backend, TestDestination, TestStore, config_text, send_github, start_ingest, wait_ok};

/// Runs `inlet-worker backup` (without blocking the test's runtime: ingest runs on it).
async fn backup(config: &Path, to: &Path) -> (Output, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_inlet-worker"))
        .args(["backup", "--config"])
        .arg(config)
        .arg("--to")
        .arg(to)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output, text)
}

/// The worker process, stopped with SIGTERM (or killed if the test fails first).
struct Worker(std::process::Child);

impl Worker {
    fn start(config: &Path) -> Worker {
        Worker(spawn_worker(config))
    }

    fn stop(mut self) {
        assert!(Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().unwrap().success());
        assert!(self.0.wait().unwrap().success(), "the worker exits cleanly on SIGTERM");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `event_id → row id` of a SQLite file.
fn event_rows(path: &Path) -> BTreeMap<String, i64> {
    let connection = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut statement = connection.prepare("SELECT event_id, id FROM events").unwrap();
    statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// The event number in a delivered body (`{"n":N}`).
fn number(body: &[u8]) -> usize {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    usize::try_from(value["n"].as_u64().unwrap()).unwrap()
}

#[tokio::test]
async fn a_backup_under_load_restores_with_its_ids_and_catches_up_under_the_same_keys() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::start_on(Backend::Sqlite, dir.path());
    let destination = TestDestination::answering(200).await;
    let text = config_text(&nats.url(), &store, &[("sink", destination.url(), "")])
        .replace("ack_wait = \"5s\"", "ack_wait = \"5s\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"");
    let config_path = dir.path().join("inlet.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    let ingest_stop = CancellationToken::new();
    let ingest = start_ingest(config, &ingest_stop).await.public;
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;
    let send = {
        let client = client.clone();
        move |n: usize| {
            let client = client.clone();
            async move {
                let body = format!("{{\"n\":{n}}}");
                assert_eq!(send_github(&client, ingest, &format!("e-{n}"), "push", body.as_bytes()).await, 202);
            }
        }
    };

    let worker = Worker::start(&config_path);
    // Events flow before, during and after the backup, until told to stop.
    let (sent, stop_sending) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
    let sender = tokio::spawn({
        let (send, sent, stop_sending) = (send.clone(), Arc::clone(&sent), stop_sending.clone());
        async move {
            while !stop_sending.is_cancelled() {
                send(sent.load(Ordering::SeqCst)).await;
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    destination.wait_for(80, Duration::from_secs(60)).await;
    let copy = dir.path().join("backup.db");
    let sent_before = sent.load(Ordering::SeqCst);
    let (taken, output) = backup(&config_path, &copy).await;
    let sent_during = sent.load(Ordering::SeqCst) - sent_before;
    assert!(taken.status.success(), "{output}");
    assert!(output.contains("integrity check: ok"), "{output}");
    assert!(sent_during > 0, "events were sent while the backup ran");
    let in_backup = event_rows(&copy);
    let summary_events = output.lines().find_map(|l| l.trim().strip_prefix("events")).unwrap().trim().to_owned();
    assert_eq!(summary_events, in_backup.len().to_string(), "{output}");
    assert!(in_backup.len() >= 80, "{} events in the backup", in_backup.len());

    // Never over a file, not even a backup.
    let before = std::fs::read(&copy).unwrap();
    let (refused, output) = backup(&config_path, &copy).await;
    assert!(!refused.status.success());
    assert!(output.contains("exists: a backup never replaces a file"), "{output}");
    assert_eq!(std::fs::read(&copy).unwrap(), before);

    // Some more after the backup, then the sender stops.
    let more = sent.load(Ordering::SeqCst) + 100;
    while sent.load(Ordering::SeqCst) < more {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_sending.cancel();
    sender.await.unwrap();
    let first = sent.load(Ordering::SeqCst);
    let total = first + 50;
    assert!(first > in_backup.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while destination.delivered_keys().len() < first {
        assert!(tokio::time::Instant::now() < deadline, "{} of {first} delivered", destination.delivered_keys().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered_before = destination.count();
    worker.stop();

    // The disk is lost: the store (kept aside to compare) goes, the backup comes back.
    // Its -wal goes with it: left beside the restored file, SQLite would apply it there.
    let lost = dir.path().join("lost.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut from = store.sqlite_path().as_os_str().to_owned();
        from.push(suffix);
        let mut to = lost.as_os_str().to_owned();
        to.push(suffix);
        if Path::new(&from).exists() {
            std::fs::rename(from, to).unwrap();
        }
    }
    let lost_rows = event_rows(&lost);
    assert_eq!(lost_rows.len(), first);
    std::fs::copy(&copy, store.sqlite_path()).unwrap();

    let worker = Worker::start(&config_path);
    for n in first..total {
        send(n).await;
    }
    // Every event delivered; those recorded after the backup (delivered before the restore) come
    // again, recorded again from the stream.
    let after_backup = first - in_backup.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let numbers: BTreeSet<usize> = destination.received().iter().map(|r| number(&r.body)).collect();
        if numbers.len() == total && destination.count() >= delivered_before + after_backup + (total - first) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {total} events delivered after the restore",
            numbers.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let within = deadline.saturating_duration_since(tokio::time::Instant::now());
    store
        .wait_until(
            "every delivery recorded",
            within,
            &format!("SELECT count(*) = {total} FROM deliveries WHERE status = 'delivered'"),
        )
        .await;
    worker.stop();

    // One key per event, one event per key, however often it was delivered.
    let mut keys_of: HashMap<usize, BTreeSet<String>> = HashMap::new();
    let mut events_of: HashMap<String, BTreeSet<usize>> = HashMap::new();
    for request in destination.received() {
        let key = request.headers["idempotency-key"].to_str().unwrap().to_owned();
        let n = number(&request.body);
        keys_of.entry(n).or_default().insert(key.clone());
        events_of.entry(key).or_default().insert(n);
    }
    assert_eq!(keys_of.len(), total);
    for (n, keys) in &keys_of {
        assert_eq!(keys.len(), 1, "event {n} was delivered under {keys:?}");
    }
    for (key, events) in &events_of {
        assert_eq!(events.len(), 1, "{key} was given to events {events:?}");
    }

    // The restored store: every event once, each with the row id the lost store had given it.
    store.assert_integrity();
    let restored_rows = event_rows(store.sqlite_path());
    assert_eq!(restored_rows.len(), total);
    for (event_id, id) in &lost_rows {
        assert_eq!(restored_rows.get(event_id), Some(id), "{event_id}");
    }
    // The events recorded after the backup came from the stream again, delivered again.
    let redelivered: BTreeSet<usize> =
        keys_of.keys().copied().filter(|n| !in_backup.contains_key(&format!("e-{n}")) && *n < first).collect();
    assert_eq!(redelivered.len(), after_backup);
    let count_of = |n: usize| destination.received().iter().filter(|r| number(&r.body) == n).count();
    assert!(redelivered.iter().all(|n| count_of(*n) == 2), "each event recorded after the backup was delivered again");
    assert_eq!(
        store.scalar_i64("SELECT count(*) FROM store_identity WHERE backup_replay_from_sequence IS NULL").await,
        1
    );
}
