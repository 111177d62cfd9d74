//! Upgrades (docs/operations.md, "Upgrading Inlet"): a rolling restart of two ingest replicas and
//! two workers on PostgreSQL under a steady stream of signed webhooks loses and repeats nothing;
//! and the schema migrations stay forward-compatible for one version, so version N keeps
//! running on the schema of N+1 while the workers are replaced one at a time. The rolling test
//! always uses PostgreSQL (`test.sh` runs this module once, with the SQLite pass of the suite).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::several_workers::{WorkerProcess, wait_settled};
use crate::support::{Backend, TestDestination, TestStore, config_text, try_send_github, wait_ok};

/// An `inlet-ingest` replica in this process, restarted on the same port as an orchestrator
/// restarts a process: shutdown asked for (what SIGTERM does: the same token), in-flight
/// requests drained, then a new one started with the same configuration.
struct IngestReplica {
    public: SocketAddr,
    admin: SocketAddr,
    config: Config,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds `address` again right after the previous listener on it closed.
fn bind(address: SocketAddr) -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(address).unwrap();
    socket.listen(1024).unwrap()
}

impl IngestReplica {
    fn start(config: Config, public: TcpListener, admin: TcpListener) -> IngestReplica {
        let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let stop = CancellationToken::new();
        let listeners = inlet_ingest::Listeners { public, admin };
        let task = tokio::spawn(inlet_ingest::run(config.clone(), listeners, stop.clone()));
        IngestReplica { public: public_addr, admin: admin_addr, config, stop, task }
    }

    async fn restart(&mut self, client: &reqwest::Client) {
        self.stop.cancel();
        (&mut self.task).await.unwrap().unwrap();
        // Down meanwhile, as while a new process starts: connections are refused.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (public, admin) = (bind(self.public), bind(self.admin));
        *self = IngestReplica::start(self.config.clone(), public, admin);
        wait_ok(client, &format!("http://{}/readyz", self.public)).await;
    }
}

impl Drop for IngestReplica {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the providers saw: events answered 2xx, and the answers that made them try again.
#[derive(Default)]
struct Provider {
    accepted: Mutex<BTreeSet<usize>>,
    retries: Mutex<BTreeMap<String, usize>>,
}

impl Provider {
    /// Sends event `n` as a provider does: to one replica, and on a refused connection, a
    /// transport error or a non-2xx answer, again to the other one, until one answers 2xx.
    async fn send(&self, client: &reqwest::Client, replicas: [SocketAddr; 2], n: usize) {
        let body = format!("{{\"n\":{n}}}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut replica = n % 2;
        loop {
            let answer = tokio::time::timeout(
                Duration::from_secs(15),
                try_send_github(client, replicas[replica], &format!("up-{n}"), "push", body.as_bytes()),
            )
            .await;
            let why = match answer {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    self.accepted.lock().unwrap().insert(n);
                    return;
                }
                Ok(Ok(status)) => format!("{status}"),
                Ok(Err(error)) if error.is_connect() => "connection refused".to_owned(),
                Ok(Err(_)) => "transport error".to_owned(),
                Err(_) => "no answer within 15 s".to_owned(),
            };
            *self.retries.lock().unwrap().entry(why).or_default() += 1;
            assert!(tokio::time::Instant::now() < deadline, "event {n} not accepted within 60 s");
            replica = 1 - replica;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_replica_and_worker_loses_and_repeats_nothing() {
    let sink = TestDestination::start(|_| (200, Duration::from_millis(5))).await;
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_on(Backend::Postgres, dir.path()));
    let text = config_text(&nats.url(), &store, &[("sink", sink.url(), "timeout = \"2s\"")])
        .replace("ack_wait = \"5s\"", "ack_wait = \"2s\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"");
    let config_path = dir.path().join("inlet.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let replica = IngestReplica::start(config.clone(), bind(loopback), bind(loopback));
        wait_ok(&client, &format!("http://{}/readyz", replica.public)).await;
        replicas.push(replica);
    }
    let addresses = [replicas[0].public, replicas[1].public];
    let spawn = |path: &Path| {
        let path = path.to_owned();
        async move { tokio::task::spawn_blocking(move || WorkerProcess::spawn(&path)).await.unwrap() }
    };
    let mut workers = [spawn(&config_path).await, spawn(&config_path).await];
    for worker in &workers {
        wait_ok(&client, &format!("http://{}/readyz", worker.main)).await;
    }
    wait_settled(&client, &[&workers[0], &workers[1]], &["sink"]).await;

    // A steady stream: one new event every 10 ms, each sent until a replica accepts it.
    let provider = Arc::new(Provider::default());
    let (stop_sending, sent) = (CancellationToken::new(), Arc::new(AtomicUsize::new(0)));
    let sender = tokio::spawn({
        let (provider, client, stop_sending, sent) =
            (Arc::clone(&provider), client.clone(), stop_sending.clone(), Arc::clone(&sent));
        async move {
            let mut in_flight = tokio::task::JoinSet::new();
            while !stop_sending.is_cancelled() {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                let (provider, client) = (Arc::clone(&provider), client.clone());
                in_flight.spawn(async move { provider.send(&client, addresses, n).await });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while let Some(done) = in_flight.join_next().await {
                done.unwrap();
            }
        }
    });
    let progress = |more: usize| {
        let target = sink.count() + more;
        sink.wait_for(target, Duration::from_secs(60))
    };

    progress(40).await;
    // Workers first (readers before writers), one at a time: SIGTERM, wait for its exit, start
    // the new one, wait until it is ready and placement has settled on both.
    for index in 0..2 {
        workers[index].terminate();
        progress(20).await;
        workers[index] = spawn(&config_path).await;
        wait_ok(&client, &format!("http://{}/readyz", workers[index].main)).await;
        wait_settled(&client, &[&workers[0], &workers[1]], &["sink"]).await;
        progress(30).await;
    }
    // Then the ingest replicas, one at a time.
    for replica in &mut replicas {
        replica.restart(&client).await;
        progress(30).await;
    }
    stop_sending.cancel();
    sender.await.unwrap();

    let accepted = provider.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), sent.load(Ordering::SeqCst), "every event was accepted in the end");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while sink.delivered_keys().len() < accepted.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} accepted events delivered",
            sink.delivered_keys().len(),
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let every = format!("SELECT count(*) = {} FROM deliveries WHERE status = 'delivered'", accepted.len());
    store.wait_until("every delivery recorded", Duration::from_secs(30), &every).await;

    // Every accepted event delivered, each under one key, each key answered 2xx exactly once.
    let mut keys_of: HashMap<usize, BTreeSet<String>> = HashMap::new();
    for request in sink.received().iter().filter(|r| (200..300).contains(&r.status)) {
        let value: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let n = usize::try_from(value["n"].as_u64().unwrap()).unwrap();
        keys_of.entry(n).or_default().insert(request.headers["idempotency-key"].to_str().unwrap().to_owned());
    }
    assert_eq!(keys_of.keys().copied().collect::<BTreeSet<_>>(), accepted, "the events delivered are those accepted");
    assert!(keys_of.values().all(|keys| keys.len() == 1), "an event delivered under two keys");
    let repeated: Vec<(String, usize)> = sink.delivered_keys().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(repeated.is_empty(), "delivered more than once: {repeated:?}");
    assert_eq!(store.scalar_i64("SELECT count(*) FROM events").await, accepted.len() as i64);
    assert_eq!(store.scalar_i64("SELECT count(*) FROM deliveries WHERE status = 'dead_lettered'").await, 0);
    let retries = provider.retries.lock().unwrap().clone();
    eprintln!("{} events; providers retried: {retries:?}", accepted.len());
    assert!(
        retries.get("connection refused").is_some_and(|n| *n > 0),
        "no replica was down while events came: {retries:?}"
    );
}

/// Each file under `schemas/sql/` (both engines): its statements, comments removed, upper
/// case, whitespace collapsed.
fn migrations() -> Vec<(String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/sql");
    let mut files = Vec::new();
    for folder in [root.clone(), root.join("postgres")] {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sql") {
                let name = path.strip_prefix(&root).unwrap().display().to_string();
                let text = std::fs::read_to_string(&path).unwrap();
                let code: String =
                    text.lines().map(|line| line.split("--").next().unwrap_or("")).collect::<Vec<_>>().join(" ");
                let statements = code
                    .split(';')
                    .map(|statement| statement.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase())
                    .filter(|statement| !statement.is_empty())
                    .collect();
                files.push((name, statements));
            }
        }
    }
    files.sort();
    files
}

/// What version N, still running while N+1's migrations are applied, could trip over.
fn breaks_the_previous_version(statement: &str) -> Option<&'static str> {
    let words: Vec<&str> =
        statement.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|word| !word.is_empty()).collect();
    let has = |word: &str| words.contains(&word);
    let has_pair = |first: &str, second: &str| words.windows(2).any(|pair| pair == [first, second]);
    if has("DROP") {
        return Some("drops something the previous version may still use");
    }
    if has("RENAME") {
        return Some("renames something the previous version still uses by its old name");
    }
    if words.first() == Some(&"ALTER") && has_pair("ALTER", "COLUMN")
        || words.len() > 4 && words[0] == "ALTER" && words[1] == "TABLE" && words[3] == "ALTER"
    {
        return Some("changes a column's type or nullability under the previous version");
    }
    if has_pair("ADD", "CONSTRAINT") {
        return Some("adds a constraint the previous version's writes may break");
    }
    if has_pair("ADD", "COLUMN") && has_pair("NOT", "NULL") && !has("DEFAULT") {
        return Some("adds a NOT NULL column without a default: the previous version's inserts fail");
    }
    None
}

/// Migrations from before this rule that the check would refuse, each with why it was safe then.
/// A new entry needs the same: the version that stopped using what is dropped is already out.
const BREAKING_BUT_ALLOWED: &[(&str, &str)] = &[
    ("0008_drop_redundant_index.sql", "deliveries_event was unused (deliveries_due covers it) before 0008 shipped"),
    ("0010_drop_login_flows.sql", "login_flows was unused since logins in progress moved into a sealed cookie"),
    (
        "0015_dismiss_and_replay_to.sql",
        "rebuilds deliveries under its own name (drop, rename) in one transaction, every column kept; the wider \
         status check takes every status the previous version writes, and its inserts conflict on the id",
    ),
    (
        "postgres/0006_dismiss_and_replay_to.sql",
        "the new status check takes every status the previous version writes; the previous version's delivery \
         inserts use ON CONFLICT DO NOTHING on the deterministic id, never the dropped UNIQUE (event_rowid, \
         destination)",
    ),
    (
        "postgres/0010_transform_failed.sql",
        "the new reason check takes every reason the previous version writes; the previous version never writes \
         'transform_failed', and meets one only where a route has a `transform`, a key its config refuses \
         (deny_unknown_fields), so only once every worker runs the new version (docs/operations.md)",
    ),
];

/// Migrations stay forward-compatible for one version: additive only (new tables, new nullable
/// or defaulted columns, new indexes); anything else only for what the previous version no
/// longer uses, on the list above. The check reads the SQL; it cannot see every way a change
/// could break the previous version (a new unique index over data that has duplicates, a data
/// rewrite), which review still has to.
#[test]
fn migrations_stay_forward_compatible_for_one_version() {
    let files = migrations();
    assert!(files.iter().any(|(name, _)| name.starts_with("postgres/")), "no PostgreSQL migration found");
    let mut refused = Vec::new();
    for (name, statements) in &files {
        let allowed = BREAKING_BUT_ALLOWED.iter().any(|(allowed, _)| allowed == name);
        let problems: Vec<String> = statements
            .iter()
            .filter_map(|statement| {
                breaks_the_previous_version(statement).map(|why| format!("  {statement}\n    → {why}"))
            })
            .collect();
        if !problems.is_empty() && !allowed {
            refused.push(format!("schemas/sql/{name}:\n{}", problems.join("\n")));
        }
        if problems.is_empty() && allowed {
            refused.push(format!("schemas/sql/{name} is listed in BREAKING_BUT_ALLOWED but breaks nothing: remove it"));
        }
    }
    assert!(
        refused.is_empty(),
        "migrations the previous version cannot run on (docs/operations.md, \"Schema changes\"):\n{}",
        refused.join("\n")
    );
    // The check itself catches what it says it does.
    for (statement, caught) in [
        ("ALTER TABLE EVENTS DROP COLUMN BODY", true),
        ("DROP INDEX DELIVERIES_DUE", true),
        ("ALTER TABLE EVENTS RENAME COLUMN BODY TO PAYLOAD", true),
        ("ALTER TABLE EVENTS ALTER COLUMN BODY SET NOT NULL", true),
        ("ALTER TABLE EVENTS ALTER BODY TYPE TEXT", true),
        ("ALTER TABLE EVENTS ADD CONSTRAINT X CHECK (N > 0)", true),
        ("ALTER TABLE EVENTS ADD COLUMN N INTEGER NOT NULL", true),
        ("ALTER TABLE EVENTS ADD COLUMN N INTEGER NOT NULL DEFAULT 0", false),
        ("ALTER TABLE EVENTS ADD COLUMN N INTEGER", false),
        ("CREATE TABLE T (ID INTEGER PRIMARY KEY, NAME TEXT NOT NULL)", false),
        ("CREATE INDEX EVENTS_N ON EVENTS (N)", false),
        ("DROPPED_AT INTEGER", false),
    ] {
        assert_eq!(breaks_the_previous_version(statement).is_some(), caught, "{statement}");
    }
}
