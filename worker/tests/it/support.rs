//! Test harness: a programmable HTTP destination, and the whole pipeline (nats-server, ingest
//! and worker in-process) wired to it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use inlet_shared::config::Config;
use inlet_shared::signature::{HmacAlgorithm, HmacRecipe, SignatureEncoding, sign};
use inlet_shared::test_util::TestNats;
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
        let mut count = self.count.clone();
        let result = tokio::time::timeout(within, count.wait_for(|c| *c >= n)).await;
        assert!(result.is_ok(), "destination got {} requests, expected {n} within {within:?}", self.count());
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

/// Config with one GitHub-like source (`gh`, see [`gh_recipe`]) routed to `destinations` (name, url, extra keys).
pub fn config_text(nats_url: &str, database: &std::path::Path, destinations: &[(&str, String, &str)]) -> String {
    let mut text = format!(
        r#"
[nats]
url = "{nats_url}"
startup_timeout = "10s"
[ingest]
publish_timeout = "5s"
[worker]
database = "{}"
ack_wait = "5s"
stats_interval = "200ms"
shutdown_grace = "5s"
delivery_concurrency = 16

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
"#,
        database.display()
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
    tokio::spawn(inlet_worker::run(config, inlet_worker::Listeners { main, admin }, stop.clone()));
    addrs
}

/// nats-server + ingest + worker, all real, in this process.
pub struct Pipeline {
    nats: TestNats,
    pub dir: tempfile::TempDir,
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
        let nats = TestNats::start();
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(&nats.url(), &dir.path().join("inlet.db"), destinations);
        let config = Config::parse(&text, &BTreeMap::new()).unwrap();

        let ingest_stop = CancellationToken::new();
        let IngestAddrs { public: ingest_addr, admin: ingest_admin } = start_ingest(config.clone(), &ingest_stop).await;
        let worker_stop = CancellationToken::new();
        let WorkerAddrs { main: worker_main, admin: worker_admin } = start_worker(config, &worker_stop).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        for url in [format!("http://{ingest_addr}/readyz"), format!("http://{worker_main}/readyz")] {
            wait_ok(&client, &url).await;
        }
        Pipeline { nats, dir, ingest_addr, ingest_admin, worker_admin, worker_main, client, ingest_stop, worker_stop }
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("inlet.db")
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

    /// Runs `query` on the worker's SQLite file.
    pub fn query<T>(&self, query: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> T {
        let connection = rusqlite::Connection::open(self.database()).unwrap();
        query(&connection).unwrap()
    }

    /// Polls SQLite until `condition` holds (the worker commits asynchronously).
    pub async fn wait_until(&self, what: &str, within: Duration, condition: impl Fn(&rusqlite::Connection) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let connection = rusqlite::Connection::open(self.database()).unwrap();
            if condition(&connection) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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
    let mut request = client
        .post(format!("http://{ingest}/webhooks/gh"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in sign::hmac(&gh_recipe(), GITHUB_SECRET, None, Some(delivery), body) {
        request = request.header(name, value);
    }
    request = request.header("X-GitHub-Event", event);
    request.send().await.unwrap().status().as_u16()
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
