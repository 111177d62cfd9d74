//! Several `inlet-worker` processes on one PostgreSQL database (issue #15): a destination's
//! limits hold in total, not once per worker; a worker killed with SIGKILL, restarted, then the
//! other killed: every event delivered once in effect, nothing dead-lettered; PostgreSQL
//! restarted under load: workers report not ready, reconnect, lose nothing; a bulk replay
//! cancelled through another worker's API stops, and one whose worker was killed is closed by
//! the other. These tests always use PostgreSQL (`test.sh` runs them once, with the SQLite
//! pass of the suite).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use inlet_shared::config::Config;
use inlet_shared::test_util::{TestNats, metric_sample};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::operator_support::ADMIN_TOKEN;
use crate::support::{Backend, TestDestination, TestStore, config_text, send_github, start_ingest, wait_ok};

/// A worker process; killed (SIGKILL) when dropped, also when the test fails.
pub(crate) struct WorkerProcess {
    child: Child,
    pub(crate) main: SocketAddr,
    admin: SocketAddr,
    /// Its log lines (stdout and stderr) so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    /// Starts `inlet-worker` on free ports and waits for its "running" line, which names them.
    pub(crate) fn spawn(config_path: &std::path::Path) -> WorkerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inlet-worker"))
            .arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (addresses, found) = mpsc::channel();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (addresses, log) = (addresses.clone(), Arc::clone(&log));
            // Drained to the end, so the worker never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    if line.contains("inlet-worker running") {
                        let field = |name: &str| -> Option<SocketAddr> {
                            let start = line.find(&format!("{name}="))? + name.len() + 1;
                            line[start..].split_whitespace().next()?.trim_matches('"').parse().ok()
                        };
                        if let (Some(main), Some(admin)) = (field("main_addr"), field("admin_addr")) {
                            let _ = addresses.send((main, admin));
                        }
                    }
                }
            });
        }
        let (main, admin) = found.recv_timeout(Duration::from_secs(60)).expect("the worker did not start within 60 s");
        WorkerProcess { child, main, admin, log }
    }

    /// Waits until a log line contains every one of `needles`; returns it.
    async fn wait_for_log(&self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let found = self.log.lock().unwrap().iter().find(|line| needles.iter().all(|n| line.contains(n))).cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(Instant::now() < deadline, "no log line with {needles:?} within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it as an orchestrator does (SIGTERM) and waits for a clean exit.
    pub(crate) fn terminate(&mut self) {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the worker exited with {status} after SIGTERM");
    }

    async fn metric(&self, client: &reqwest::Client, name: &str, labels: &[(&str, &str)]) -> f64 {
        match client.get(format!("http://{}/metrics", self.admin)).send().await {
            Ok(response) => metric_sample(&response.text().await.unwrap_or_default(), name, labels),
            Err(_) => 0.0,
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// NATS, PostgreSQL, ingest in this process, and a config file for worker processes.
struct Cluster {
    _nats: TestNats,
    store: TestStore,
    dir: tempfile::TempDir,
    config_path: std::path::PathBuf,
    ingest: SocketAddr,
    client: reqwest::Client,
    _ingest_stop: tokio_util::sync::DropGuard,
}

impl Cluster {
    async fn start(destinations: &[(&str, String, &str)]) -> Cluster {
        Self::start_with(destinations, "").await
    }

    /// With `tail` appended to the workers' configuration (e.g. a `[console]` section).
    async fn start_with(destinations: &[(&str, String, &str)], tail: &str) -> Cluster {
        let nats = TestNats::start();
        let dir = tempfile::tempdir().unwrap();
        let store = tokio::task::block_in_place(|| TestStore::start_on(Backend::Postgres, dir.path()));
        let mut text = config_text(&nats.url(), &store, destinations).replace(
            "ack_wait = \"5s\"",
            "ack_wait = \"2s\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
        );
        text.push_str(tail);
        let config_path = dir.path().join("inlet.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::parse(&text, &BTreeMap::new()).unwrap();
        let stop = CancellationToken::new();
        let ingest = start_ingest(config, &stop).await.public;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        wait_ok(&client, &format!("http://{ingest}/readyz")).await;
        Cluster { _nats: nats, store, dir, config_path, ingest, client, _ingest_stop: stop.drop_guard() }
    }

    async fn spawn_worker(&self) -> WorkerProcess {
        let path = self.config_path.clone();
        let worker = tokio::task::spawn_blocking(move || WorkerProcess::spawn(&path)).await.unwrap();
        wait_ok(&self.client, &format!("http://{}/readyz", worker.main)).await;
        worker
    }

    /// Waits until every worker sees all of them live and each destination is held by exactly
    /// one (see [`wait_settled`]).
    async fn wait_settled(&self, workers: &[&WorkerProcess], destinations: &[&str]) {
        wait_settled(&self.client, workers, destinations).await;
    }

    async fn holds(&self, worker: &WorkerProcess, destination: &str) -> bool {
        worker.metric(&self.client, "inlet_worker_destination_held", &[("destination", destination)]).await == 1.0
    }

    /// Waits until `worker` holds `destination`; returns how long that took.
    async fn wait_held_by(&self, worker: &WorkerProcess, destination: &str) -> Duration {
        let started = Instant::now();
        // A lost holder's lease expires after 6 s; the next round (every 2 s) takes it.
        while !self.holds(worker, destination).await {
            assert!(started.elapsed() < Duration::from_secs(30), "{destination} not taken over within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }

    async fn send(&self, delivery: &str) {
        assert_eq!(send_github(&self.client, self.ingest, delivery, "push", b"{\"n\":1}").await, 202);
    }

    /// A GraphQL call to `worker`'s API as the bootstrap admin (see [`with_api`]); panics on
    /// GraphQL errors; returns `data`.
    async fn gql(&self, worker: &WorkerProcess, query: &str, variables: Value) -> Value {
        let answer: Value = self
            .client
            .post(format!("http://{}/graphql", worker.main))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer.get("errors").is_none(), "GraphQL errors from {}: {answer}", worker.main);
        answer["data"].clone()
    }
}

/// The workers' operator API, with the bootstrap admin token.
/// Waits until every worker sees all of them live and each destination is held by exactly one
/// (so no hand-over is still to come: a worker reports the live count after settling).
pub(crate) async fn wait_settled(client: &reqwest::Client, workers: &[&WorkerProcess], destinations: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut settled = true;
        for worker in workers {
            let live = worker.metric(client, "inlet_worker_placement_workers", &[]).await;
            settled &= live == workers.len() as f64;
        }
        for destination in destinations {
            let mut holders = 0.0;
            for worker in workers {
                holders +=
                    worker.metric(client, "inlet_worker_destination_held", &[("destination", destination)]).await;
            }
            settled &= holders == 1.0;
        }
        if settled {
            return;
        }
        assert!(Instant::now() < deadline, "placement did not settle within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn with_api() -> String {
    format!("\n[console]\nbootstrap_token = \"{ADMIN_TOKEN}\"\n")
}

/// The most requests in any window of `width` (arrival times sorted).
fn most_in_any_window(mut at: Vec<Instant>, width: Duration) -> usize {
    at.sort();
    (0..at.len()).map(|i| at[i..].iter().take_while(|t| **t < at[i] + width).count()).max().unwrap_or(0)
}

/// The most requests being answered at once, each taking `busy` from its arrival.
fn most_at_once(mut at: Vec<Instant>, busy: Duration) -> usize {
    at.sort();
    (0..at.len()).map(|i| at[..=i].iter().filter(|t| **t + busy > at[i]).count()).max().unwrap_or(0)
}

/// Two workers, two destinations: `rated` (20/s, burst 5) and `narrow` (2 at once, each
/// answer takes 100 ms). Each worker alone would allow that much; together, the sinks must see
/// no more than one worker's worth (twice as much if each worker applied the limits itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_in_total_across_two_workers() {
    const BUSY: Duration = Duration::from_millis(100);
    let rated = TestDestination::answering(200).await;
    let narrow = TestDestination::start(|_| (200, BUSY)).await;
    let cluster = Cluster::start(&[
        ("rated", rated.url(), "rate_limit = { per_second = 20, burst = 5 }"),
        ("narrow", narrow.url(), "concurrency = 2"),
    ])
    .await;
    let first = cluster.spawn_worker().await;
    let second = cluster.spawn_worker().await;
    cluster.wait_settled(&[&first, &second], &["rated", "narrow"]).await;

    let events = 100;
    for n in 0..events {
        cluster.send(&format!("limit-{n}")).await;
    }
    rated.wait_for(events, Duration::from_secs(60)).await;
    narrow.wait_for(events, Duration::from_secs(60)).await;

    let rated_at: Vec<Instant> = rated.received().iter().map(|r| r.at).collect();
    let per_second = most_in_any_window(rated_at.clone(), Duration::from_secs(1));
    // One token bucket: at most the burst plus a second's refill in any second (+1 for the
    // token that refills as the window starts).
    assert!(per_second <= 5 + 20 + 1, "the rated sink saw {per_second} requests in one second");
    let span = rated_at.iter().max().unwrap().duration_since(*rated_at.iter().min().unwrap());
    assert!(span >= Duration::from_secs_f64((events - 5) as f64 / 20.0 * 0.9), "{events} requests in {span:?}");
    let at_once = most_at_once(narrow.received().iter().map(|r| r.at).collect(), BUSY - Duration::from_millis(5));
    assert!(at_once <= 2, "the narrow sink answered {at_once} requests at once");
    assert_eq!(rated.delivered_keys().len(), events);
    assert_eq!(narrow.delivered_keys().len(), events);
}

/// Steady signed load through ingest while one worker is killed (SIGKILL), restarted, then the
/// other killed: every accepted event recorded once and delivered, one effect per
/// Idempotency-Key at the sink, no dead letter from the kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_survive_the_loss_of_either() {
    let sink = TestDestination::start(|_| (200, Duration::from_millis(10))).await;
    let cluster = Cluster::start(&[("sink", sink.url(), "timeout = \"2s\"")]).await;
    let mut first = cluster.spawn_worker().await;
    let mut second = cluster.spawn_worker().await;
    cluster.wait_settled(&[&first, &second], &["sink"]).await;

    let events = 240;
    let sender = {
        let (client, ingest) = (cluster.client.clone(), cluster.ingest);
        tokio::spawn(async move {
            for n in 0..events {
                assert_eq!(send_github(&client, ingest, &format!("fail-{n}"), "push", b"{\"n\":1}").await, 202);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    sink.wait_for(40, Duration::from_secs(60)).await;
    // Kill the holder of the destination first: the other must take it over.
    if cluster.holds(&second, "sink").await {
        std::mem::swap(&mut first, &mut second);
    }
    first.kill();
    let taken_over = cluster.wait_held_by(&second, "sink").await;
    first = cluster.spawn_worker().await;
    sink.wait_for(120, Duration::from_secs(60)).await;
    // Then the other one, whatever it holds now: the restarted worker is left alone.
    second.kill();
    let taken_again = cluster.wait_held_by(&first, "sink").await;
    eprintln!("destination taken over after {taken_over:?} and {taken_again:?}");
    sender.await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while sink.delivered_keys().len() < events {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {events} delivered", sink.delivered_keys().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let within = deadline.saturating_duration_since(tokio::time::Instant::now());
    let store = &cluster.store;
    let every = format!("SELECT count(*) = {events} FROM deliveries WHERE status = 'delivered'");
    store.wait_until("every delivery recorded as delivered", within, &every).await;
    assert_eq!(store.scalar_i64("SELECT count(*) FROM events").await, events as i64, "each event recorded once");
    assert_eq!(store.scalar_i64("SELECT count(*) FROM deliveries WHERE status = 'dead_lettered'").await, 0);
    let keys = sink.delivered_keys();
    assert_eq!(keys.len(), events, "every event's effect happened");
    // Repeats (same key twice) are attempts in flight at a kill; the key makes them no-ops.
    let repeats: usize = keys.values().map(|n| n - 1).sum();
    assert!(repeats <= 2 * 16, "{repeats} repeated deliveries after two kills");
    drop(first);
    let _ = &cluster.dir;
}

/// PostgreSQL stopped (fast shutdown) under load and started again: the worker reports not
/// ready while it cannot write, then recovers by itself; every event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing() {
    let sink = TestDestination::answering(200).await;
    let mut cluster = Cluster::start(&[("sink", sink.url(), "")]).await;
    let worker = cluster.spawn_worker().await;
    let events = 120;
    for n in 0..events / 2 {
        cluster.send(&format!("restart-{n}")).await;
    }
    sink.wait_for(10, Duration::from_secs(30)).await;
    let server = cluster.store.postgres_server_mut();
    tokio::task::block_in_place(|| server.stop());
    // Ingest still takes events (JetStream holds them); the worker cannot record them.
    for n in events / 2..events {
        cluster.send(&format!("restart-{n}")).await;
    }
    let ready = format!("http://{}/readyz", worker.main);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.client.get(&ready).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker still reports ready with PostgreSQL down (last {status})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = cluster.store.postgres_server_mut();
    tokio::task::block_in_place(|| server.restart());
    wait_ok(&cluster.client, &ready).await;
    sink.wait_for(events, Duration::from_secs(60)).await;
    assert_eq!(sink.delivered_keys().len(), events);
    let every = format!("SELECT count(*) = {events} FROM deliveries WHERE status = 'delivered'");
    cluster.store.wait_until("every delivery recorded", Duration::from_secs(30), &every).await;
    assert_eq!(cluster.store.scalar_i64("SELECT count(*) FROM events").await, events as i64);
}

/// Two workers, `count` dead letters to `sink` (it answers 400 until told otherwise), then 200.
async fn two_workers_with_dead_letters(
    sink: &TestDestination,
    count: usize,
) -> (Cluster, WorkerProcess, WorkerProcess) {
    let cluster = Cluster::start_with(&[("sink", sink.url(), "")], &with_api()).await;
    let first = cluster.spawn_worker().await;
    let second = cluster.spawn_worker().await;
    for n in 0..count {
        cluster.send(&format!("bulk-{n}")).await;
    }
    let dead = format!("SELECT count(*) = {count} FROM deliveries WHERE status = 'dead_lettered'");
    cluster.store.wait_until("every delivery dead-lettered", Duration::from_secs(30), &dead).await;
    sink.set_behaviour(|_| (200, Duration::ZERO));
    (cluster, first, second)
}

/// Starts a bulk replay of every dead letter through `worker`'s API at one per second; waits
/// until it replayed at least one; returns its id.
async fn start_slow_bulk_replay(cluster: &Cluster, worker: &WorkerProcess) -> String {
    let started = cluster
        .gql(
            worker,
            "mutation { bulkReplay(filter: {destination: \"sink\"}, dryRun: false, ratePerSecond: 1) { job { id status } } }",
            json!({}),
        )
        .await;
    let job = &started["bulkReplay"]["job"];
    assert_eq!(job["status"], "RUNNING");
    let id = job["id"].as_str().unwrap().to_owned();
    let replayed = format!("SELECT done >= 1 FROM bulk_replays WHERE id = {id}");
    cluster.store.wait_until("the job replayed one", Duration::from_secs(30), &replayed).await;
    id
}

/// Issue #15: a bulk replay runs in the worker whose API started it; cancelled through another
/// worker's API (a load balancer's choice), it stops: its runner learns from the store at its
/// next renewal, records its last progress and keeps `cancelled`; the rest stay dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_replay_cancelled_through_another_worker_stops() {
    let sink = TestDestination::answering(400).await;
    let total = 20;
    let (cluster, first, second) = two_workers_with_dead_letters(&sink, total).await;
    let id = start_slow_bulk_replay(&cluster, &first).await;

    let cancel = "mutation($id: ID!) { cancelBulkReplay(id: $id) { status done total } }";
    let cancelled = cluster.gql(&second, cancel, json!({ "id": id })).await["cancelBulkReplay"].clone();
    assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
    let done_at_cancel = cancelled["done"].as_i64().unwrap();

    // The runner, on the first worker, stops because of the store (nothing reached its memory).
    let job = format!("job_id={id} ");
    first.wait_for_log(&["bulk replay cancelled in the store: stopping", &job], Duration::from_secs(20)).await;
    first.wait_for_log(&["bulk replay ended", &job], Duration::from_secs(10)).await;
    let state = format!("SELECT status, done, enqueued, lease_until_ms FROM bulk_replays WHERE id = {id}");
    let row = cluster.store.row(&state).await;
    assert_eq!((row[0].as_deref(), row[3].as_deref()), (Some("cancelled"), None), "{row:?}");
    let done: i64 = row[1].as_deref().unwrap().parse().unwrap();
    let enqueued: i64 = row[2].as_deref().unwrap().parse().unwrap();
    // At most the replay that had passed its renewal when the cancel committed went on.
    assert!(done >= done_at_cancel && done <= done_at_cancel + 1, "done {done} after {done_at_cancel} at the cancel");
    assert!(done < total as i64, "the job stopped early");
    let left = "SELECT count(*) FROM deliveries WHERE status = 'dead_lettered'";
    assert_eq!(cluster.store.scalar_i64(left).await, total as i64 - enqueued, "the rest stay dead letters");
    let detail = "SELECT detail FROM audit_log WHERE action = 'cancel_bulk_replay'";
    assert_eq!(cluster.store.scalar(detail).await.as_deref(), Some("was running"));
    let read =
        cluster.gql(&first, "query($id: ID!) { bulkReplay(id: $id) { status done } }", json!({ "id": id })).await;
    assert_eq!(read["bulkReplay"], json!({"status": "CANCELLED", "done": done }), "either worker reads the same");
}

/// Issue #15: a bulk replay whose worker is killed (SIGKILL) stops renewing its lease; the
/// other worker, holding the periodic jobs (or taking them over), closes it as `cancelled`
/// once the lease lapsed: within the lease and a maintenance tick, never before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_replay_whose_worker_was_killed_is_closed_by_the_other() {
    let sink = TestDestination::answering(400).await;
    let total = 20;
    let (cluster, mut first, second) = two_workers_with_dead_letters(&sink, total).await;
    let id = start_slow_bulk_replay(&cluster, &first).await;

    first.kill();
    let killed_at = Instant::now();
    let state = format!("SELECT status, done, lease_until_ms FROM bulk_replays WHERE id = {id}");
    let at_kill = cluster.store.row(&state).await;
    assert_eq!(at_kill[0].as_deref(), Some("running"), "{at_kill:?}");
    let lease_until: i64 = at_kill[2].as_deref().unwrap().parse().unwrap();

    // Lease 30 s (renewed at most a second before the kill) + a 10 s tick + taking the jobs
    // over (6-8 s) when the killed worker held them.
    let closed = format!("SELECT status = 'cancelled' FROM bulk_replays WHERE id = {id}");
    cluster.store.wait_until("the job closed", Duration::from_secs(75), &closed).await;
    let took = killed_at.elapsed();
    second.wait_for_log(&["closed as cancelled", &format!("[{id}]")], Duration::from_secs(5)).await;
    let row = cluster
        .store
        .row(&format!("SELECT done, finished_at_ms, lease_until_ms FROM bulk_replays WHERE id = {id}"))
        .await;
    assert_eq!(row[0], at_kill[1], "nothing replayed after the kill");
    let finished_at: i64 = row[1].as_deref().unwrap().parse().unwrap();
    assert!(finished_at > lease_until, "closed at {finished_at}, while its lease ran until {lease_until}");
    assert_eq!(row[2], None);
    eprintln!("bulk replay closed {took:?} after its worker was killed");
    let read = cluster.gql(&second, "query($id: ID!) { bulkReplay(id: $id) { status } }", json!({ "id": id })).await;
    assert_eq!(read["bulkReplay"]["status"], "CANCELLED");
}
