//! Test harness: a programmable HTTP destination, the whole pipeline (nats-server, ingest and
//! worker in-process) wired to it, and the worker's store on either backend ([`TestStore`]).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use inlet_shared::config::Config;
use inlet_shared::signature::{HmacAlgorithm, HmacRecipe, SignatureEncoding, sign};
use inlet_shared::test_util::{TestNats, TestPostgres};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const DESTINATION_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const GITHUB_SECRET: &str = "gh-secret";

/// A request the destination received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub status: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
}

/// `(n, idempotency key, nth request with that key)`, all 0-based → (status, delay).
type Behaviour = Arc<dyn Fn(usize, &str, usize) -> (u16, Duration) + Send + Sync>;

/// An HTTP endpoint whose answer is programmable: `behaviour(n)` gives the status and delay of
/// the n-th request (0-based), or, with [`TestDestination::start_keyed`], of the n-th request for
/// one delivery. A 429 carries `Retry-After: 1`.
pub struct TestDestination {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    behaviour: Arc<Mutex<Behaviour>>,
    stop: CancellationToken,
}

impl TestDestination {
    pub async fn start(behaviour: impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static) -> TestDestination {
        Self::start_keyed(move |n, _, _| behaviour(n)).await
    }

    /// Answers by delivery: `behaviour(n, idempotency key, nth request with that key)`.
    pub async fn start_keyed(
        behaviour: impl Fn(usize, &str, usize) -> (u16, Duration) + Send + Sync + 'static,
    ) -> TestDestination {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (count_tx, count) = watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let behaviour: Arc<Mutex<Behaviour>> = Arc::new(Mutex::new(Arc::new(behaviour)));
        let arrivals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let per_key: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let stop = CancellationToken::new();
        let (received_c, behaviour_c, stop_c) = (Arc::clone(&received), Arc::clone(&behaviour), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = stop_c.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let (received, behaviour, count_tx, arrivals, per_key) = (
                    Arc::clone(&received_c),
                    Arc::clone(&behaviour_c),
                    Arc::clone(&count_tx),
                    Arc::clone(&arrivals),
                    Arc::clone(&per_key),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (received, behaviour, count_tx, arrivals, per_key) = (
                            Arc::clone(&received),
                            Arc::clone(&behaviour),
                            Arc::clone(&count_tx),
                            Arc::clone(&arrivals),
                            Arc::clone(&per_key),
                        );
                        async move {
                            let at = std::time::Instant::now();
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let n = arrivals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let key = parts
                                .headers
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let nth = {
                                let mut per_key = per_key.lock().unwrap();
                                let seen = per_key.entry(key.clone()).or_insert(0);
                                *seen += 1;
                                *seen - 1
                            };
                            let current = behaviour.lock().unwrap().clone();
                            let (status, delay) = current(n, &key, nth);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            received.lock().unwrap().push(Received { headers: parts.headers, body, status, at });
                            count_tx.send_modify(|c| *c += 1);
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            if status == 429 {
                                response.headers_mut().insert("retry-after", http::HeaderValue::from_static("1"));
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestDestination { addr, received, count, behaviour, stop }
    }

    /// Always answers `status` at once.
    pub async fn answering(status: u16) -> TestDestination {
        Self::start(move |_| (status, Duration::ZERO)).await
    }

    pub fn set_behaviour(&self, behaviour: impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(move |n, _: &str, _| behaviour(n));
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until at least `n` requests were answered.
    pub async fn wait_for(&self, n: usize, within: Duration) {
        assert!(
            self.reached(n, within).await,
            "destination got {} requests, expected {n} within {within:?}",
            self.count()
        );
    }

    /// Whether at least `n` requests were answered within `within` (waiting for them).
    pub async fn reached(&self, n: usize, within: Duration) -> bool {
        let mut count = self.count.clone();
        tokio::time::timeout(within, count.wait_for(|c| *c >= n)).await.is_ok()
    }

    /// Distinct Idempotency-Keys of 2xx-answered requests.
    pub fn delivered_keys(&self) -> HashMap<String, usize> {
        let mut keys = HashMap::new();
        for request in self.received() {
            if (200..300).contains(&request.status) {
                let key = request.headers["idempotency-key"].to_str().unwrap().to_owned();
                *keys.entry(key).or_insert(0) += 1;
            }
        }
        keys
    }
}

impl Drop for TestDestination {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Config with one GitHub-like source (`gh`, see [`gh_recipe`]) routed to `destinations` (name,
/// url, extra keys), keeping its state in `store` (`worker.database` for SQLite, a `[store]`
/// section for PostgreSQL).
pub fn config_text(nats_url: &str, store: &TestStore, destinations: &[(&str, String, &str)]) -> String {
    let (database, store_section) = store.config_keys();
    let mut text = format!(
        r#"
[nats]
url = "{nats_url}"
startup_timeout = "10s"
[ingest]
publish_timeout = "5s"
[worker]
{database}ack_wait = "5s"
stats_interval = "200ms"
shutdown_grace = "5s"
delivery_concurrency = 16
{store_section}
[[sources]]
name = "gh"
kind = "hmac"
secrets = ["{GITHUB_SECRET}"]
[sources.hmac]
header = "X-Hub-Signature-256"
prefix = "sha256="
signed_payload = "{{id}}\n{{body}}"
id_header = "X-GitHub-Delivery"
type_header = "X-GitHub-Event"
"#
    );
    let names: Vec<String> = destinations.iter().map(|(name, _, _)| format!("\"{name}\"")).collect();
    for (name, url, extra) in destinations {
        let timeout = if extra.contains("timeout =") { "" } else { "timeout = \"5s\"\n" };
        text.push_str(&format!(
            "\n[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nsigning_secret = \"{DESTINATION_SECRET}\"\n{timeout}connect_timeout = \"1s\"\n{extra}\n"
        ));
    }
    if !destinations.is_empty() {
        text.push_str(&format!(
            "\n[[routes]]\nsource = \"gh\"\nevents = [\"push\", \"issues\"]\ndestinations = [{}]\n",
            names.join(", ")
        ));
    }
    text
}

/// Addresses of an in-process `inlet-ingest` (public, admin).
pub struct IngestAddrs {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

/// Addresses of an in-process `inlet-worker` (main: API, console, probes; admin: metrics).
pub struct WorkerAddrs {
    pub main: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts `inlet-ingest` in this process on free loopback ports until `stop`.
pub async fn start_ingest(config: Config, stop: &CancellationToken) -> IngestAddrs {
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = IngestAddrs { public: public.local_addr().unwrap(), admin: admin.local_addr().unwrap() };
    tokio::spawn(inlet_ingest::run(config, inlet_ingest::Listeners { public, admin }, stop.clone()));
    addrs
}

/// Starts `inlet-worker` in this process on free loopback ports until `stop`.
pub async fn start_worker(config: Config, stop: &CancellationToken) -> WorkerAddrs {
    let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = WorkerAddrs { main: main.local_addr().unwrap(), admin: admin.local_addr().unwrap() };
    run_worker(config, inlet_worker::Listeners { main, admin }, stop);
    addrs
}

/// Runs `inlet-worker` in this process until `stop`; says why when it stops with an error
/// (printed with the test's output: a worker that cannot start fails the test as not ready).
pub fn run_worker(
    config: Config,
    listeners: inlet_worker::Listeners,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(async move {
        if let Err(error) = inlet_worker::run(config, listeners, stop).await {
            eprintln!("inlet-worker stopped with an error: {error:#}");
        }
    })
}

/// nats-server + ingest + worker, all real, in this process, on the store backend
/// `INLET_TEST_STORE` names.
pub struct Pipeline {
    nats: TestNats,
    /// Holds the SQLite file.
    _dir: tempfile::TempDir,
    /// The worker's store; the tests read its tables with [`TestStore::rows`] and friends.
    pub store: TestStore,
    pub ingest_addr: SocketAddr,
    pub ingest_admin: SocketAddr,
    pub worker_admin: SocketAddr,
    pub worker_main: SocketAddr,
    pub client: reqwest::Client,
    ingest_stop: CancellationToken,
    worker_stop: CancellationToken,
}

impl Pipeline {
    pub async fn start(destinations: &[(&str, String, &str)]) -> Pipeline {
        Self::start_on(Backend::from_env(), destinations).await
    }

    /// On `backend` whatever `INLET_TEST_STORE` says (tests about SQLite itself).
    pub async fn start_on(backend: Backend, destinations: &[(&str, String, &str)]) -> Pipeline {
        let nats = TestNats::start();
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::start_on(backend, dir.path());
        let text = config_text(&nats.url(), &store, destinations);
        let config = Config::parse(&text, &BTreeMap::new()).unwrap();

        let ingest_stop = CancellationToken::new();
        let IngestAddrs { public: ingest_addr, admin: ingest_admin } = start_ingest(config.clone(), &ingest_stop).await;
        let worker_stop = CancellationToken::new();
        let WorkerAddrs { main: worker_main, admin: worker_admin } = start_worker(config, &worker_stop).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        for url in [format!("http://{ingest_addr}/readyz"), format!("http://{worker_main}/readyz")] {
            wait_ok(&client, &url).await;
        }
        Pipeline {
            nats,
            _dir: dir,
            store,
            ingest_addr,
            ingest_admin,
            worker_admin,
            worker_main,
            client,
            ingest_stop,
            worker_stop,
        }
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// Sends a signed GitHub webhook; returns the HTTP status.
    pub async fn send(&self, delivery: &str, event: &str, body: &[u8]) -> u16 {
        send_github(&self.client, self.ingest_addr, delivery, event, body).await
    }

    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.worker_admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        inlet_shared::test_util::metric_sample(&text, name, labels)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.ingest_stop.cancel();
        self.worker_stop.cancel();
    }
}

pub async fn wait_ok(client: &reqwest::Client, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The recipe of the test source `gh`: GitHub's header names, but the delivery id is signed, so
/// every delivery id is an event of its own, whatever its body (these tests send many identical
/// bodies). With `kind = "github"`, whose delivery id is not signed, Inlet deduplicates on the
/// body hash.
fn gh_recipe() -> HmacRecipe {
    HmacRecipe {
        header: "X-Hub-Signature-256".into(),
        prefix: "sha256=".into(),
        encoding: SignatureEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
        timestamp_header: None,
        signed_payload: "{id}\n{body}".into(),
        id_header: Some("X-GitHub-Delivery".into()),
        type_header: Some("X-GitHub-Event".into()),
    }
}

pub async fn send_github(
    client: &reqwest::Client,
    ingest: SocketAddr,
    delivery: &str,
    event: &str,
    body: &[u8],
) -> u16 {
    try_send_github(client, ingest, delivery, event, body).await.unwrap()
}

/// [`send_github`], with a transport error (a refused connection, one closed mid-request)
/// returned rather than a panic: what a provider retries.
pub async fn try_send_github(
    client: &reqwest::Client,
    ingest: SocketAddr,
    delivery: &str,
    event: &str,
    body: &[u8],
) -> Result<u16, reqwest::Error> {
    send_github_signed_with(client, ingest, GITHUB_SECRET, delivery, event, body).await
}

/// [`try_send_github`] signed with `secret` (a rotated one, say; empty: no signature at all).
pub async fn send_github_signed_with(
    client: &reqwest::Client,
    ingest: SocketAddr,
    secret: &str,
    delivery: &str,
    event: &str,
    body: &[u8],
) -> Result<u16, reqwest::Error> {
    let mut request = client
        .post(format!("http://{ingest}/webhooks/gh"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    let signature = if secret.is_empty() {
        vec![("X-GitHub-Delivery".to_owned(), delivery.to_owned())]
    } else {
        sign::hmac(&gh_recipe(), secret, None, Some(delivery), body)
    };
    for (name, value) in signature {
        request = request.header(name, value);
    }
    request = request.header("X-GitHub-Event", event);
    Ok(request.send().await?.status().as_u16())
}

/// Verifies Inlet's Standard Webhooks signature on a delivery, as a user's service would.
pub fn inlet_signature_valid(received: &Received) -> bool {
    let verifier = inlet_shared::signature::Verifier::new(
        inlet_shared::signature::SchemeKind::Standard,
        &[DESTINATION_SECRET],
        Duration::from_secs(300),
        None,
    )
    .unwrap();
    verifier.verify(&received.headers, &received.body, SystemTime::now()).is_ok()
}

/// The store backend the suite runs on: `INLET_TEST_STORE` = `sqlite` (the default when unset)
/// or `postgres`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// What `INLET_TEST_STORE` names.
    ///
    /// # Panics
    ///
    /// On any other value: a typo must not quietly run the suite on the default.
    pub fn from_env() -> Backend {
        match std::env::var("INLET_TEST_STORE") {
            Err(std::env::VarError::NotPresent) => Backend::Sqlite,
            Ok(value) if value == "sqlite" => Backend::Sqlite,
            Ok(value) if value == "postgres" => Backend::Postgres,
            Ok(value) => panic!("INLET_TEST_STORE={value:?}: expected `sqlite` (the default when unset) or `postgres`"),
            Err(error) => panic!("INLET_TEST_STORE: {error}"),
        }
    }
}

/// One row of a query's answer, every value as text (`None` for NULL): see [`TestStore::rows`].
pub type Row = Vec<Option<String>>;

/// `Row` from string literals, for comparisons.
pub fn row(values: &[Option<&str>]) -> Row {
    values.iter().map(|value| value.map(str::to_owned)).collect()
}

/// `value` as an SQL string literal (both engines quote the same way).
pub fn sql_text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The database a test's workers keep their state in: a SQLite file, or a database on a real
/// PostgreSQL server started for the test (stopped when the last `TestStore` on it is dropped, so
/// keep it as long as the workers using it run). Emitted into the worker's config by
/// [`config_text`]; read by the test with plain SQL that both engines accept ([`TestStore::rows`],
/// [`TestStore::scalar_i64`], [`TestStore::wait_until`], [`TestStore::execute`]).
///
/// **Writing SQL for both.** Values come back as text: numbers as digits, NULL as `None`, a
/// comparison as `1`/`0` (SQLite) or `t`/`f` (PostgreSQL) — [`TestStore::wait_until`] takes
/// either. The flag `deliveries.replay_enqueued` is 0/1 on SQLite and a BOOLEAN on PostgreSQL:
/// read it through `CASE WHEN replay_enqueued THEN 1 ELSE 0 END`. The counters `event_counts`
/// and `delivery_counts` are split in slots on PostgreSQL: read them with `sum(n)` grouped by
/// their key. `deliveries.rowid` exists on both (explicit on PostgreSQL). No `INDEXED BY`, no
/// `PRAGMA`, no `sqlite_master`, no parameters (inline values with [`sql_text`]).
pub struct TestStore {
    kind: Kind,
    /// PostgreSQL: the test's own session, opened at the first query.
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

enum Kind {
    Sqlite(PathBuf),
    Postgres { server: Arc<TestPostgres>, url: String },
}

impl TestStore {
    /// On the backend `INLET_TEST_STORE` names: `dir/inlet.db`, or a new PostgreSQL server.
    pub fn start_in(dir: &Path) -> TestStore {
        Self::start_on(Backend::from_env(), dir)
    }

    /// On `backend`: `dir/inlet.db`, or a new PostgreSQL server (its database `inlet`).
    pub fn start_on(backend: Backend, dir: &Path) -> TestStore {
        match backend {
            Backend::Sqlite => Self::new(Kind::Sqlite(dir.join("inlet.db"))),
            Backend::Postgres => {
                let server = TestPostgres::start();
                let url = server.url();
                Self::new(Kind::Postgres { server: Arc::new(server), url })
            }
        }
    }

    fn new(kind: Kind) -> TestStore {
        TestStore { kind, client: tokio::sync::Mutex::new(None) }
    }

    /// The config keys that keep a worker's state here: a `worker.database` line (SQLite) and a
    /// `[store]` section (PostgreSQL); the other is empty.
    pub fn config_keys(&self) -> (String, String) {
        match &self.kind {
            Kind::Sqlite(path) => (format!("database = \"{}\"\n", path.display()), String::new()),
            Kind::Postgres { url, .. } => {
                (String::new(), format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 8\n"))
            }
        }
    }

    /// Another, empty database of the same backend: the file `{name}.db` next to this one, or a
    /// new database `name` on the same server.
    pub fn another(&self, name: &str) -> TestStore {
        match &self.kind {
            Kind::Sqlite(path) => Self::new(Kind::Sqlite(path.with_file_name(format!("{name}.db")))),
            Kind::Postgres { server, .. } => {
                let url = server.create_database(name);
                Self::new(Kind::Postgres { server: Arc::clone(server), url })
            }
        }
    }

    /// The SQLite file (tests about SQLite itself).
    ///
    /// # Panics
    ///
    /// On PostgreSQL.
    pub fn sqlite_path(&self) -> &Path {
        match &self.kind {
            Kind::Sqlite(path) => path,
            Kind::Postgres { .. } => panic!("a SQLite store was expected"),
        }
    }

    /// The PostgreSQL server, to stop or restart it.
    ///
    /// # Panics
    ///
    /// On SQLite, or when another `TestStore` shares the server.
    pub fn postgres_server_mut(&mut self) -> &mut TestPostgres {
        match &mut self.kind {
            Kind::Postgres { server, .. } => Arc::get_mut(server).expect("no other TestStore on this server"),
            Kind::Sqlite(_) => panic!("a PostgreSQL store was expected"),
        }
    }

    /// Runs one statement; returns its rows, every value as text. Panics when it fails.
    pub async fn rows(&self, sql: &str) -> Vec<Row> {
        match &self.kind {
            Kind::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).unwrap();
                sqlite_rows(&connection, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Kind::Postgres { .. } => {
                let messages = self.postgres(sql).await;
                messages
                    .iter()
                    .filter_map(|message| match message {
                        tokio_postgres::SimpleQueryMessage::Row(row) => {
                            Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// The one row of `sql`'s answer.
    pub async fn row(&self, sql: &str) -> Row {
        let mut rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.remove(0)
    }

    /// The one value of `sql`'s answer, as text (`None`: NULL).
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        let mut row = self.row(sql).await;
        assert_eq!(row.len(), 1, "{sql}: {row:?}");
        row.remove(0)
    }

    /// The one value of `sql`'s answer, an integer (not NULL).
    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        let value = self.scalar(sql).await.unwrap_or_else(|| panic!("{sql}: NULL"));
        value.parse().unwrap_or_else(|e| panic!("{sql}: {value:?} is no integer: {e}"))
    }

    /// Runs one statement that writes; returns how many rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        match &self.kind {
            Kind::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).unwrap();
                connection.execute(sql, []).unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
            }
            Kind::Postgres { .. } => {
                let messages = self.postgres(sql).await;
                messages
                    .iter()
                    .find_map(|message| match message {
                        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                        _ => None,
                    })
                    .unwrap_or_else(|| panic!("{sql}: no command completed"))
            }
        }
    }

    /// Polls until `condition`, one value that is a truth value (e.g. `SELECT count(*) = 4 FROM
    /// deliveries WHERE …`), is true (the worker commits asynchronously).
    pub async fn wait_until(&self, what: &str, within: Duration, condition: &str) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let value = self.scalar(condition).await;
            match value.as_deref() {
                Some("1" | "t" | "true") => return,
                Some("0" | "f" | "false") | None => {}
                Some(other) => panic!("{condition}: {other:?} is no truth value"),
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what} ({condition})");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// An SQL expression for `n` zero bytes (a body of that size).
    pub fn zero_bytes(&self, n: usize) -> String {
        match self.kind {
            Kind::Sqlite(_) => format!("zeroblob({n})"),
            Kind::Postgres { .. } => format!("decode(repeat('00', {n}), 'hex')"),
        }
    }

    /// The names of the worker's tables.
    pub async fn tables(&self) -> Vec<String> {
        let sql = match self.kind {
            Kind::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            Kind::Postgres { .. } => {
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            }
        };
        self.rows(sql).await.into_iter().map(|mut row| row.remove(0).unwrap()).collect()
    }

    /// Rows in all the worker's tables together.
    pub async fn total_rows(&self) -> i64 {
        let mut total = 0;
        for table in self.tables().await {
            total += self.scalar_i64(&format!("SELECT count(*) FROM \"{table}\"")).await;
        }
        total
    }

    /// Starts watching for writes: [`TestStore::written_since`] then says whether any commit
    /// wrote to the database meanwhile. SQLite: `PRAGMA data_version` on a connection kept open
    /// (it changes with any commit by another connection). PostgreSQL: per table, its row count
    /// and the newest writing transaction of its rows (`xmin`), so any row added, changed or
    /// removed shows (the server's transaction counter would not do: autovacuum's ANALYZE takes
    /// transaction ids of its own).
    pub async fn watch_writes(&self) -> WriteWatch {
        match &self.kind {
            Kind::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).unwrap();
                let version = sqlite_data_version(&connection);
                WriteWatch::Sqlite { connection, version }
            }
            Kind::Postgres { .. } => WriteWatch::Postgres { fingerprint: self.postgres_fingerprint().await },
        }
    }

    /// Whether a commit wrote to the database since `watch` started.
    pub async fn written_since(&self, watch: &WriteWatch) -> bool {
        match watch {
            WriteWatch::Sqlite { connection, version } => sqlite_data_version(connection) != *version,
            WriteWatch::Postgres { fingerprint } => self.postgres_fingerprint().await != *fingerprint,
        }
    }

    /// SQLite: `PRAGMA integrity_check` says `ok`. PostgreSQL: nothing to check from here (the
    /// server owns its files; a killed client cannot leave them half-written).
    pub fn assert_integrity(&self) {
        if let Kind::Sqlite(path) = &self.kind {
            let connection = rusqlite::Connection::open(path).unwrap();
            let integrity: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
            assert_eq!(integrity, "ok");
        }
    }

    async fn postgres_fingerprint(&self) -> Vec<Row> {
        let parts: Vec<String> = self
            .tables()
            .await
            .iter()
            .map(|table| format!("SELECT '{table}', count(*), max(xmin::text::bigint) FROM \"{table}\""))
            .collect();
        let mut fingerprint = self.rows(&parts.join(" UNION ALL ")).await;
        fingerprint.sort();
        fingerprint
    }

    /// Runs `sql` with the simple query protocol (every value comes back as text) on the test's
    /// session, connecting (again) when there is none.
    async fn postgres(&self, sql: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
        let Kind::Postgres { server, url } = &self.kind else { unreachable!("PostgreSQL only") };
        let mut client = self.client.lock().await;
        if client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let (connected, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}\n{}", server.log()));
            tokio::spawn(connection);
            *client = Some(connected);
        }
        let client = client.as_ref().unwrap();
        client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// See [`TestStore::watch_writes`].
pub enum WriteWatch {
    Sqlite { connection: rusqlite::Connection, version: i64 },
    Postgres { fingerprint: Vec<Row> },
}

fn sqlite_data_version(connection: &rusqlite::Connection) -> i64 {
    connection.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap()
}

/// Every value as text, as PostgreSQL's simple query protocol gives it (a BLOB as `\x` + hex).
fn sqlite_rows(connection: &rusqlite::Connection, sql: &str) -> rusqlite::Result<Vec<Row>> {
    use rusqlite::types::ValueRef;
    let mut statement = connection.prepare(sql)?;
    let columns = statement.column_count();
    let rows = statement.query_map([], |r| {
        (0..columns)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => None,
                    ValueRef::Integer(n) => Some(n.to_string()),
                    ValueRef::Real(x) => Some(x.to_string()),
                    ValueRef::Text(text) => Some(String::from_utf8_lossy(text).into_owned()),
                    ValueRef::Blob(bytes) => Some(format!("\\x{}", hex::encode(bytes))),
                })
            })
            .collect()
    })?;
    rows.collect()
}

mod tests {
    use super::*;

    /// The inspection harness gives the same text for the same statements on either backend,
    /// and sees writes.
    #[tokio::test]
    async fn the_store_harness_reads_either_backend_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::start_in(dir.path());
        store
            .execute("CREATE TABLE probe (id BIGINT PRIMARY KEY, label TEXT, flag BOOLEAN NOT NULL, body BYTEA)")
            .await;
        let inserted = store
            .execute(&format!(
                "INSERT INTO probe VALUES (1, {}, true, {}), (2, NULL, false, {})",
                sql_text("it's"),
                store.zero_bytes(5),
                store.zero_bytes(0)
            ))
            .await;
        assert_eq!(inserted, 2);
        let rows =
            store.rows("SELECT id, label, CASE WHEN flag THEN 1 ELSE 0 END, length(body) FROM probe ORDER BY id").await;
        assert_eq!(
            rows,
            [row(&[Some("1"), Some("it's"), Some("1"), Some("5")]), row(&[Some("2"), None, Some("0"), Some("0")])]
        );
        assert_eq!(store.scalar_i64("SELECT sum(id) FROM probe").await, 3);
        assert_eq!(store.scalar("SELECT label FROM probe WHERE id = 2").await, None);
        store.wait_until("two rows", Duration::from_secs(1), "SELECT count(*) = 2 FROM probe").await;
        assert!(store.tables().await.contains(&"probe".to_owned()));
        assert_eq!(store.total_rows().await, 2);

        let watch = store.watch_writes().await;
        assert!(!store.written_since(&watch).await, "nothing written yet");
        assert_eq!(store.execute("UPDATE probe SET label = 'changed' WHERE id = 2").await, 1);
        assert!(store.written_since(&watch).await, "an update is a write");

        let other = store.another("other");
        assert!(!other.tables().await.contains(&"probe".to_owned()), "another database is another database");
    }
}
