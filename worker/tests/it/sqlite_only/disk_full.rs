//! The disk under the worker's database really full (ENOSPC from a small tmpfs, not a simulated
//! error): the worker stops acking, reports not ready, and resumes without loss once there is
//! space again; SQLite stays consistent.
//!
//! The worker binary runs in its own user and mount namespace (`unshare -rm`, no privileges
//! needed) with a 16 MiB tmpfs mounted over its database directory. The test reaches that
//! mount through `/proc/<pid>/root` to fill it up and to free it again.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use inlet_shared::config::Config;
use inlet_shared::test_util::{TestNats, metric_sample};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, TestDestination, TestStore, config_text, send_github, start_ingest, wait_ok};

/// Size of the tmpfs; the filler stops at ENOSPC, and refuses to write more than this (so a
/// mount that did not happen can never fill the real disk).
const TMPFS_BYTES: u64 = 16 * 1024 * 1024;

/// Runs inside the namespace. The worker runs as a child, not by `exec`: the tmpfs vanishes
/// with the namespace's last process, so the shell outlives the worker to copy the database
/// out for the final checks. The worker's pid goes to a file so the test can stop it.
const SCRIPT: &str = r#"set -e
mount -t tmpfs -o size=16m,mode=0700 inlet-disk-full "$1"
"$2" --config "$3" </dev/null &
worker=$!
echo "$worker" > "$4/worker.pid"
set +e
wait "$worker"
status=$?
cp "$1"/inlet.db* "$4/copy/"
exit "$status"
"#;

/// The worker under its own mount namespace; killed on drop if still running.
struct NamespacedWorker {
    shell: Child,
    worker_pid: Option<u32>,
    logs: Arc<Mutex<Vec<String>>>,
    /// The database directory as seen from inside the namespace.
    mount: PathBuf,
    main: String,
    admin: String,
}

impl NamespacedWorker {
    fn start(dir: &Path, database_dir: &Path, config: &Path) -> NamespacedWorker {
        std::fs::create_dir_all(dir.join("copy")).unwrap();
        let spawned = Command::new("unshare")
            .args(["-rm", "sh", "-c", SCRIPT, "sh"])
            .arg(database_dir)
            .arg(env!("CARGO_BIN_EXE_inlet-worker"))
            .arg(config)
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut shell = match spawned {
            Ok(child) => child,
            Err(error) => panic!(
                "this test needs util-linux `unshare` on PATH to give the worker a small tmpfs \
                 (a real full disk): cannot run it: {error}"
            ),
        };
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut readers = Vec::new();
        for (stream, prefix) in [
            (Box::new(shell.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(shell.stderr.take().unwrap()), "stderr: "),
        ] {
            let logs = Arc::clone(&logs);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(format!("{prefix}{line}"));
                }
            }));
        }
        // unshare execs the shell: its pid is the namespace's, and /proc/<pid>/root shows the
        // namespace's mounts.
        let mount = PathBuf::from(format!("/proc/{}/root", shell.id())).join(database_dir.strip_prefix("/").unwrap());
        let mut worker =
            NamespacedWorker { shell, worker_pid: None, logs, mount, main: String::new(), admin: String::new() };

        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let running = worker.logs.lock().unwrap().iter().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = &line["fields"];
                if fields["message"] != "inlet-worker running" {
                    return None;
                }
                Some((fields["main_addr"].as_str()?.to_owned(), fields["admin_addr"].as_str()?.to_owned()))
            });
            if let Some((main, admin)) = running {
                (worker.main, worker.admin) = (main, admin);
                break;
            }
            if let Some(status) = worker.shell.try_wait().unwrap() {
                // Let the readers take in the last of the output before showing it.
                let drained = std::time::Instant::now() + Duration::from_secs(2);
                while !readers.iter().all(std::thread::JoinHandle::is_finished) && std::time::Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(10));
                }
                panic!(
                    "the worker could not start under `unshare -rm` ({status}). This test needs unprivileged user \
                     namespaces (sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0, no \
                     AppArmor/seccomp rule against them) to mount a tmpfs without root. Output:\n{}",
                    worker.log_text()
                );
            }
            assert!(std::time::Instant::now() < deadline, "worker not running after 30 s:\n{}", worker.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = std::fs::read_to_string(dir.join("worker.pid")).unwrap();
        worker.worker_pid = Some(pid.trim().parse().unwrap());
        worker
    }

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM to the worker and waits for the shell (which then copies the database out).
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.worker_pid.unwrap();
        assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.shell.try_wait().unwrap() {
                // The shell waited for the worker: that pid is no longer ours to kill.
                self.worker_pid = None;
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "worker did not stop within 20 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NamespacedWorker {
    fn drop(&mut self) {
        // Only when the test failed early: the worker is the shell's child, so it is killed by
        // its own pid, then the shell.
        if let Some(pid) = self.worker_pid.take() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// Writes zeros to `path` until the file system says ENOSPC; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => return written,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
        assert!(written <= TMPFS_BYTES, "wrote {written} bytes without ENOSPC: the tmpfs is not where expected");
    }
}

/// The intake consumer's (ack floor, delivered consumer sequence).
async fn consumer_state(consumer: &mut PullConsumer) -> (u64, u64) {
    let info = consumer.info().await.unwrap();
    (info.ack_floor.stream_sequence, info.delivered.consumer_sequence)
}

#[tokio::test]
async fn a_full_disk_stops_acking_reports_not_ready_and_resumes_without_loss() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let database_dir = dir.path().join("db");
    std::fs::create_dir(&database_dir).unwrap();
    let destination = TestDestination::answering(200).await;
    let store = TestStore::start_on(Backend::Sqlite, &database_dir);
    let mut text = config_text(&nats.url(), &store, &[("sink", destination.url(), "")]);
    text = text
        .replace("ack_wait = \"5s\"", "ack_wait = \"5s\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"");
    // JSON logs: the test reads the worker's bound addresses from its start line.
    text.push_str("\n[telemetry]\nlog_format = \"json\"\n");
    let config_path = dir.path().join("inlet.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();

    let ingest_stop = CancellationToken::new();
    let ingest = start_ingest(config.clone(), &ingest_stop).await.public;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;

    let mut worker = NamespacedWorker::start(dir.path(), &database_dir, &config_path);
    let readyz = format!("http://{}/readyz", worker.main);
    let metrics = format!("http://{}/metrics", worker.admin);
    wait_ok(&client, &readyz).await;
    assert!(worker.mount.join("inlet.db").exists(), "the database is on the namespace's tmpfs");
    assert!(!database_dir.join("inlet.db").exists(), "and not in the directory the host sees");
    let delivered = || async {
        let text = client.get(&metrics).send().await.unwrap().text().await.unwrap();
        metric_sample(&text, "inlet_worker_deliveries_total", &[("destination", "sink"), ("outcome", "delivered")])
            as usize
    };
    // What the alert InletWorkerStoreUnavailable reads (refreshed every `stats_interval`).
    let store_available = || async {
        let text = client.get(&metrics).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("\ninlet_worker_store_available "), "no store gauge in:\n{text}");
        metric_sample(&text, "inlet_worker_store_available", &[])
    };
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let intake = js.get_stream(&config.stream.name).await.unwrap();
    let mut consumer: PullConsumer = intake.get_consumer(&config.worker.consumer).await.unwrap();

    // Events flow: recorded, delivered, the attempts committed.
    let before = 3;
    for n in 0..before {
        assert_eq!(send_github(&client, ingest, &format!("before-{n}"), "push", b"{}").await, 202);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered().await < before || consumer_state(&mut consumer).await.0 < before as u64 {
        assert!(Instant::now() < deadline, "the first events were not delivered and acked:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(store_available().await, 1.0);

    // Fill the disk. Bodies larger than the WAL file: SQLite reuses a checkpointed WAL from its
    // start, so an event smaller than the WAL could still commit into space it already has.
    let wal = std::fs::metadata(worker.mount.join("inlet.db-wal")).map(|m| m.len()).unwrap_or(0);
    let body_bytes = 700_000;
    assert!(wal < body_bytes as u64 - 64 * 1024, "WAL of {wal} bytes: an event of {body_bytes} could fit in it");
    let filler = worker.mount.join("filler");
    let filled = fill(&filler);
    assert!(filled < TMPFS_BYTES, "filled {filled} bytes");

    let (floor, handed_out) = consumer_state(&mut consumer).await;
    assert_eq!(floor, before as u64);
    // Sent at once, so redelivered batches can hold several: more than SQLite's page cache,
    // which then spills to the WAL mid-statement, and ENOSPC fails a statement (SQLite rolls the
    // whole transaction back) rather than the COMMIT. Both paths must end in a retry.
    let during = 5;
    let mut bodies = HashSet::new();
    let mut sends = Vec::new();
    for n in 0..during {
        let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(body_bytes)).into_bytes();
        bodies.insert(body.clone());
        let client = client.clone();
        sends.push(async move { send_github(&client, ingest, &format!("full-{n}"), "push", &body).await });
    }
    for status in futures::future::join_all(sends).await {
        assert_eq!(status, 202, "ingest does not need SQLite");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&readyz).send().await.unwrap().status() != 503 {
        assert!(Instant::now() < deadline, "readiness never reported the full disk:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every new message handed to the worker at least twice (tried, NAKed, tried again), none acked.
    loop {
        let (floor, now_handed_out) = consumer_state(&mut consumer).await;
        assert_eq!(floor, before as u64, "nothing acked while the disk is full:\n{}", worker.log_text());
        if now_handed_out >= handed_out + 2 * during as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker stopped retrying:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(intake.clone().info().await.unwrap().state.messages, (before + during) as u64, "all kept in the stream");
    assert_eq!(destination.count(), before, "nothing recorded, so nothing delivered");
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 503);
    while store_available().await != 0.0 {
        assert!(Instant::now() < deadline, "inlet_worker_store_available never read 0:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worker.logs.lock().unwrap().iter().any(|l| l.contains("database or disk is full")),
        "the failure is SQLite's SQLITE_FULL:\n{}",
        worker.log_text()
    );

    // Space again: everything is recorded, delivered once and acked; ready again.
    std::fs::remove_file(&filler).unwrap();
    let total = before + during;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered().await < total || consumer_state(&mut consumer).await.0 < total as u64 {
        assert!(Instant::now() < deadline, "not everything delivered after the disk was freed:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while client.get(&readyz).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "never ready again:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while store_available().await != 1.0 {
        assert!(Instant::now() < deadline, "inlet_worker_store_available never read 1 again:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = destination.delivered_keys();
    assert_eq!(keys.len(), total, "every event delivered");
    assert!(keys.values().all(|&n| n == 1), "each exactly once: {keys:?}");
    let received: HashSet<Vec<u8>> = destination.received().iter().map(|r| r.body.to_vec()).collect();
    assert!(bodies.is_subset(&received), "the large bodies arrive whole");

    // Stop; the shell copies the database out of the tmpfs before the namespace goes away.
    let status = worker.stop();
    assert!(status.success(), "worker exit {status}:\n{}", worker.log_text());
    let copy = dir.path().join("copy/inlet.db");
    assert!(copy.exists(), "the database was copied out of the tmpfs:\n{}", worker.log_text());
    let connection = rusqlite::Connection::open(copy).unwrap();
    let integrity: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let (events, delivered_rows, successes): (i64, i64, i64) = connection
        .query_row(
            "SELECT (SELECT count(*) FROM events),
                    (SELECT count(*) FROM deliveries WHERE status = 'delivered'),
                    (SELECT count(*) FROM attempts WHERE outcome = 'delivered')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((events, delivered_rows, successes), (total as i64, total as i64, total as i64));
    ingest_stop.cancel();
}
