//! Per-key ordering (`routes[].ordering_key`): deliveries with the same key to one destination
//! are attempted one at a time, in receipt order; a key whose head is failing holds only its
//! own later events; a dead-lettered head moves the key on (`skip`) or holds it until replayed
//! (`block`). Kept with the worker killed mid-sequence and restarted, and with two workers on
//! PostgreSQL, also when a key's later event is recorded before another worker has recorded its
//! earlier one.
//!
//! Every event's body is `{"key": K, "n": i}`; the route's ordering key is `/key`. The sink
//! here records, per key, the `n` of every request in arrival order and whether a request of the
//! key arrived while another of the same key was still being answered (two in flight).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::operator_support::ADMIN_TOKEN;
use crate::several_workers::{WorkerProcess, wait_settled};
use crate::support::{Backend, TestStore, config_text, send_github, start_ingest, start_worker, wait_ok};

/// One request the sink answered.
#[derive(Debug, Clone)]
struct Arrival {
    key: String,
    n: u64,
    status: u16,
    idempotency_key: String,
}

/// How the sink answers a request of (key, n): its status.
type Answer = Arc<dyn Fn(&str, u64) -> u16 + Send + Sync>;

#[derive(Default)]
struct SinkState {
    arrivals: Vec<Arrival>,
    in_flight: HashMap<String, usize>,
    /// Keys that had two requests in flight at once.
    overlapped: HashSet<String>,
}

/// One request of a key being answered; out of flight when dropped.
struct InFlight {
    state: Arc<Mutex<SinkState>>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(in_flight) = self.state.lock().unwrap().in_flight.get_mut(&self.key) {
            *in_flight -= 1;
        }
    }
}

/// A destination that answers by (key, n) and remembers the order of arrivals per key.
struct OrderSink {
    addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
    answer: Arc<Mutex<Answer>>,
}

impl OrderSink {
    async fn start(answer: impl Fn(&str, u64) -> u16 + Send + Sync + 'static) -> OrderSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<SinkState>> = Arc::default();
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(Arc::new(answer)));
        let (state_c, answer_c) = (Arc::clone(&state), Arc::clone(&answer));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (state, answer) = (Arc::clone(&state_c), Arc::clone(&answer_c));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (state, answer) = (Arc::clone(&state), Arc::clone(&answer));
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let event: Value = serde_json::from_slice(&body).unwrap();
                            let key = event["key"].as_str().unwrap().to_owned();
                            let n = event["n"].as_u64().unwrap();
                            let idempotency_key =
                                parts.headers["idempotency-key"].to_str().unwrap_or_default().to_owned();
                            let current = answer.lock().unwrap().clone();
                            let status = current(&key, n);
                            {
                                let mut state = state.lock().unwrap();
                                let in_flight = state.in_flight.entry(key.clone()).or_insert(0);
                                *in_flight += 1;
                                if *in_flight > 1 {
                                    state.overlapped.insert(key.clone());
                                }
                                state.arrivals.push(Arrival { key: key.clone(), n, status, idempotency_key });
                            }
                            // Out of flight when answered, or when the worker's connection closes
                            // first (a killed worker): hyper drops this future then.
                            let _answering = InFlight { state: Arc::clone(&state), key };
                            // Long enough that a second request of the key would overlap.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OrderSink { addr, state, answer }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn set_answer(&self, answer: impl Fn(&str, u64) -> u16 + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Arc::new(answer);
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.state.lock().unwrap().arrivals.clone()
    }

    /// The `n`s delivered (2xx) per key, in arrival order.
    fn delivered(&self) -> BTreeMap<String, Vec<u64>> {
        let mut delivered: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for arrival in self.arrivals().into_iter().filter(|a| (200..300).contains(&a.status)) {
            delivered.entry(arrival.key).or_default().push(arrival.n);
        }
        delivered
    }

    /// Whether every key in `keys` has had every `n` below `events` delivered.
    fn all_delivered(&self, keys: &[&str], events: u64) -> bool {
        let delivered = self.delivered();
        keys.iter().all(|key| {
            let got: HashSet<u64> = delivered.get(*key).map(|ns| ns.iter().copied().collect()).unwrap_or_default();
            (0..events).all(|n| got.contains(&n))
        })
    }

    async fn wait_delivered(&self, keys: &[&str], events: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.all_delivered(keys, events) {
            assert!(
                Instant::now() < deadline,
                "not all of {keys:?} delivered within {within:?}: {:?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The order holds: per key, requests arrived one at a time and their `n`s never went back
    /// (a repeat of the same `n`, after a crash or a failed attempt, is allowed; a later event
    /// before an earlier one is not).
    fn assert_ordered(&self) {
        let state = self.state.lock().unwrap();
        assert!(state.overlapped.is_empty(), "two requests of one key at once: {:?}", state.overlapped);
        let mut last: HashMap<&str, u64> = HashMap::new();
        for arrival in &state.arrivals {
            if let Some(&previous) = last.get(arrival.key.as_str()) {
                assert!(
                    arrival.n >= previous,
                    "key {}: event {} arrived after event {previous}; arrivals: {:?}",
                    arrival.key,
                    arrival.n,
                    state.arrivals.iter().filter(|a| a.key == arrival.key).map(|a| (a.n, a.status)).collect::<Vec<_>>()
                );
            }
            last.insert(&arrival.key, arrival.n);
        }
    }
}

/// Sends `events` events of each of `keys`, interleaved (A0, B0, C0, A1, …), each accepted.
async fn send_interleaved(client: &reqwest::Client, ingest: SocketAddr, keys: &[&str], events: u64, tag: &str) {
    for n in 0..events {
        for key in keys {
            let body = json!({ "key": key, "n": n }).to_string();
            let status = send_github(client, ingest, &format!("{tag}-{key}-{n}"), "push", body.as_bytes()).await;
            assert_eq!(status, 202, "{key} {n}");
        }
    }
}

/// Destination keys that keep the breaker out of the way (it is destination-wide by design) and
/// retry quickly for long enough.
const FAST_RETRIES: &str = "breaker = { failure_threshold = 100000, cooldown = \"1s\" }\n\
    retry_schedule = [\"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \
    \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \
    \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\", \"200ms\"]";

/// The config text with every route ordered by `/key` (`on_dead_letter` per route, in order).
fn ordered_config(nats_url: &str, store: &TestStore, destinations: &[(&str, String, &str)]) -> String {
    let mut text = config_text(nats_url, store, destinations);
    text.push_str("ordering_key = \"/key\"\n");
    text
}

/// Ingest and an in-process worker over `text`, on the backend `INLET_TEST_STORE` names.
struct Run {
    _nats: TestNats,
    _dir: tempfile::TempDir,
    store: TestStore,
    ingest: SocketAddr,
    worker: SocketAddr,
    client: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl Run {
    async fn start(destinations: &[(&str, String, &str)], edit: impl Fn(String) -> String) -> Run {
        let nats = TestNats::start();
        let dir = tempfile::tempdir().unwrap();
        let store = tokio::task::block_in_place(|| TestStore::start_in(dir.path()));
        let text = edit(ordered_config(&nats.url(), &store, destinations));
        let config = Config::parse(&text, &BTreeMap::new()).unwrap();
        let stop = CancellationToken::new();
        let ingest = start_ingest(config.clone(), &stop).await.public;
        let worker = start_worker(config, &stop).await.main;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        for url in [format!("http://{ingest}/readyz"), format!("http://{worker}/readyz")] {
            wait_ok(&client, &url).await;
        }
        Run { _nats: nats, _dir: dir, store, ingest, worker, client, _stop: stop.drop_guard() }
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        let answer: Value = self
            .client
            .post(format!("http://{}/graphql", self.worker))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer.get("errors").is_none(), "GraphQL errors: {answer}");
        answer["data"].clone()
    }
}

/// The scenario: three interleaved keys; the destination refuses key B (503) until every
/// A and C event is delivered. A and C are delivered while B is failing; B's events then arrive
/// in receipt order, and no B event after its head was attempted while the head failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_interleaved_keys_with_one_refused_for_a_while_keep_its_order_and_the_others_flow() {
    let sink = OrderSink::start(|key, _| if key == "B" { 503 } else { 200 }).await;
    let extra = format!("concurrency = 8\n{FAST_RETRIES}");
    let run = Run::start(&[("sink", sink.url(), &extra)], |text| text).await;
    let events = 15;
    send_interleaved(&run.client, run.ingest, &["A", "B", "C"], events, "mix").await;

    sink.wait_delivered(&["A", "C"], events, Duration::from_secs(60)).await;
    // A and C may all arrive before B's first retry is due (200 ms): B stays refused until its
    // head has also been retried, so the look below covers a retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.arrivals().iter().filter(|a| a.key == "B").count() < 2 {
        assert!(Instant::now() < deadline, "B's head was not retried within 30 s: {:?}", sink.arrivals());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let while_failing = sink.arrivals();
    let b_tried: HashSet<u64> = while_failing.iter().filter(|a| a.key == "B").map(|a| a.n).collect();
    assert_eq!(b_tried, HashSet::from([0]), "only B's head was attempted while B failed");
    assert!(while_failing.iter().filter(|a| a.key == "B").count() >= 2, "B's head was retried meanwhile");
    assert!(!while_failing.iter().any(|a| a.key == "B" && a.status == 200), "B was refused throughout");

    sink.set_answer(|_, _| 200);
    sink.wait_delivered(&["B"], events, Duration::from_secs(60)).await;
    sink.assert_ordered();
    assert_eq!(sink.delivered()["B"], (0..events).collect::<Vec<_>>(), "B in receipt order, each once");
    for key in ["A", "C"] {
        assert_eq!(sink.delivered()[key], (0..events).collect::<Vec<_>>(), "{key} in receipt order, each once");
    }
    // The sink counts a request when it arrives; the worker records the answer just after.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = run.store.scalar_i64("SELECT count(*) FROM deliveries WHERE status = 'pending'").await;
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} deliveries still pending 10 s after the last arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Key B's head is refused for good (422: dead-lettered at once) at two destinations: `skip`
/// moves B on there; `block` holds B's later events until the dead letter is replayed, then
/// delivers them all, the replayed head first. A flows at both throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_head_moves_its_key_on_with_skip_and_holds_it_with_block_until_replayed() {
    let refuse_head = |key: &str, n: u64| if key == "B" && n == 0 { 422 } else { 200 };
    let (skip, block) = (OrderSink::start(refuse_head).await, OrderSink::start(refuse_head).await);
    let run = Run::start(&[("skip", skip.url(), FAST_RETRIES), ("block", block.url(), FAST_RETRIES)], |text| {
        // One route per destination, each with its own dead-letter rule; the API for the replay.
        let routes = text.find("\n[[routes]]").unwrap();
        let mut text = text[..routes].to_owned();
        for (destination, rule) in [("skip", "skip"), ("block", "block")] {
            text.push_str(&format!(
                "\n[[routes]]\nsource = \"gh\"\nevents = [\"push\"]\ndestinations = [\"{destination}\"]\n\
                 ordering_key = \"/key\"\nordering_on_dead_letter = \"{rule}\"\n"
            ));
        }
        text.push_str(&format!("\n[console]\nbootstrap_token = \"{ADMIN_TOKEN}\"\n"));
        text
    })
    .await;
    let events = 5;
    send_interleaved(&run.client, run.ingest, &["A", "B"], events, "dl").await;

    skip.wait_delivered(&["A"], events, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while skip.delivered().get("B").map_or(0, Vec::len) < 4 {
        assert!(Instant::now() < deadline, "skip: B did not move on: {:?}", skip.delivered());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(skip.delivered()["B"], [1, 2, 3, 4], "skip: B moved on past its dead head, in order");

    block.wait_delivered(&["A"], events, Duration::from_secs(60)).await;
    let dead = block.arrivals().into_iter().find(|a| a.key == "B" && a.n == 0).unwrap();
    let waiting = "SELECT count(*) = 4 FROM deliveries WHERE destination = 'block' AND status = 'pending'";
    run.store.wait_until("block: B's 4 later events wait", Duration::from_secs(30), waiting).await;
    assert!(block.arrivals().iter().all(|a| a.key != "B" || a.n == 0), "none of them attempted");

    block.set_answer(|_, _| 200);
    let replayed = run
        .gql("mutation ($id: ID!) { replayDelivery(id: $id) { __typename } }", json!({ "id": dead.idempotency_key }))
        .await;
    assert!(replayed["replayDelivery"].is_object(), "{replayed}");
    block.wait_delivered(&["B"], events, Duration::from_secs(60)).await;
    assert_eq!(block.delivered()["B"], [0, 1, 2, 3, 4], "the replayed head first, then the rest in order");
    skip.assert_ordered();
    block.assert_ordered();
}

/// Writes `text` as a worker's config file (free ports) and returns its path.
fn worker_config_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let text = text
        .replace("ack_wait = \"5s\"", "ack_wait = \"2s\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"");
    let path = dir.join("inlet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The worker process killed (SIGKILL) three times while three keys' deliveries are under way
/// (key B failing its first attempts, so retries are pending too) and restarted: every event
/// delivered, each key's in receipt order, never two of a key at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_sequence_and_restarted_keeps_each_keys_order() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_in(dir.path()));
    // B's even events fail twice before they are taken.
    let tries: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let sink = OrderSink::start(move |key, n| {
        if key != "B" || n % 2 == 1 {
            return 200;
        }
        let mut tries = tries.lock().unwrap();
        let seen = tries.entry(n).or_insert(0);
        *seen += 1;
        if *seen <= 2 { 503 } else { 200 }
    })
    .await;
    let extra = format!("timeout = \"2s\"\nconcurrency = 8\n{FAST_RETRIES}");
    let text = ordered_config(&nats.url(), &store, &[("sink", sink.url(), &extra)]);
    let config_path = worker_config_file(dir.path(), &text);
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    let stop = CancellationToken::new();
    let ingest = start_ingest(config, &stop).await.public;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;
    let events = 30;
    send_interleaved(&client, ingest, &["A", "B", "C"], events, "kill").await;

    let spawn = |path: std::path::PathBuf| tokio::task::spawn_blocking(move || WorkerProcess::spawn(&path));
    let mut worker = spawn(config_path.clone()).await.unwrap();
    for threshold in [10, 30, 50] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while sink.arrivals().len() < threshold {
            assert!(Instant::now() < deadline, "only {} requests", sink.arrivals().len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(worker); // SIGKILL
        worker = spawn(config_path.clone()).await.unwrap();
    }
    sink.wait_delivered(&["A", "B", "C"], events, Duration::from_secs(120)).await;
    sink.assert_ordered();
    for (key, delivered) in sink.delivered() {
        let mut distinct = delivered.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            (0..events).collect::<Vec<_>>(),
            "{key}: in receipt order (a repeat only right after itself)"
        );
    }
    drop(worker);
    stop.cancel();
}

/// Two worker processes on one PostgreSQL database: both record (JetStream spreads the
/// messages between them), one holds the destination. Three keys sent in a burst; the
/// destination refuses key B until every A and C event is delivered and every B event is
/// recorded: never two requests of a key at once, and B's events delivered in receipt order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_postgres_keep_each_keys_order() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_on(Backend::Postgres, dir.path()));
    let sink = OrderSink::start(|key, _| if key == "B" { 503 } else { 200 }).await;
    let extra = format!("concurrency = 8\n{FAST_RETRIES}");
    let text = ordered_config(&nats.url(), &store, &[("sink", sink.url(), &extra)]);
    let config_path = worker_config_file(dir.path(), &text);
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    let stop = CancellationToken::new();
    let ingest = start_ingest(config, &stop).await.public;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;
    let spawn = |path: std::path::PathBuf| tokio::task::spawn_blocking(move || WorkerProcess::spawn(&path));
    let one = spawn(config_path.clone()).await.unwrap();
    let two = spawn(config_path.clone()).await.unwrap();
    wait_settled(&client, &[&one, &two], &["sink"]).await;

    let events = 20;
    send_interleaved(&client, ingest, &["A", "B", "C"], events, "two").await;
    sink.wait_delivered(&["A", "C"], events, Duration::from_secs(120)).await;
    let recorded = format!("SELECT count(*) = {events} FROM deliveries WHERE ordering_key = 'B'");
    store.wait_until("every B event recorded", Duration::from_secs(30), &recorded).await;
    assert!(sink.arrivals().iter().any(|a| a.key == "B"), "B was tried and refused meanwhile");
    sink.set_answer(|_, _| 200);
    sink.wait_delivered(&["B"], events, Duration::from_secs(120)).await;

    let overlapped = sink.state.lock().unwrap().overlapped.clone();
    assert!(overlapped.is_empty(), "two requests of one key at once: {overlapped:?}");
    assert_eq!(sink.delivered()["B"], (0..events).collect::<Vec<_>>(), "B in receipt order, each once");
    for key in ["A", "C"] {
        // Both workers recorded them at once: each is still claimed only after every earlier
        // intake message was recorded, so the key goes in receipt order.
        assert_eq!(sink.delivered()[key], (0..events).collect::<Vec<_>>(), "{key}: in receipt order, each once");
    }
    let pending = "SELECT count(*) = 0 FROM deliveries WHERE status = 'pending'";
    store.wait_until("nothing pending", Duration::from_secs(30), pending).await;
    drop((one, two));
    stop.cancel();
}

/// Several recorders on PostgreSQL, made deterministic: a second recorder (this test, pulling
/// from the recording consumer as a worker does) holds key K's first event unrecorded, while the
/// worker records K's second one. The second is not sent before the first, although nothing
/// earlier of K is in the store: it waits for the first's message to be recorded. To know the
/// worker has had its chance to send it, a delivered event of key Z, earlier in the stream, is
/// replayed meanwhile: its claim is the same as K's second would be (first attempts, oldest due
/// first), and Z arrives while K's second does not. Without the recording gate the second is
/// claimed with Z's replay, or before it, and arrives first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_later_event_recorded_before_an_earlier_one_another_recorder_holds_still_goes_second() {
    use async_nats::jetstream::AckKind;
    use futures::StreamExt as _;

    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_on(Backend::Postgres, dir.path()));
    let sink = OrderSink::start(|_, _| 200).await;
    let extra = format!("concurrency = 8\n{FAST_RETRIES}");
    // The held message stays with its holder (30 s) until the test gives it back.
    let text = ordered_config(&nats.url(), &store, &[("sink", sink.url(), &extra)])
        .replace("ack_wait = \"5s\"", "ack_wait = \"30s\"")
        + &format!("\n[console]\nbootstrap_token = \"{ADMIN_TOKEN}\"\n");
    let config_path = dir.path().join("inlet.toml");
    std::fs::write(
        &config_path,
        text.replace("[worker]\n", "[worker]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    let stop = CancellationToken::new();
    let ingest = start_ingest(config.clone(), &stop).await.public;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;
    let spawn = |path: std::path::PathBuf| tokio::task::spawn_blocking(move || WorkerProcess::spawn(&path));
    let send = async |key: &str, n: u64| {
        let body = json!({ "key": key, "n": n }).to_string();
        assert_eq!(send_github(&client, ingest, &format!("held-{key}-{n}"), "push", body.as_bytes()).await, 202);
    };

    // Z's event, delivered and acked: the stream's first message.
    let worker = spawn(config_path.clone()).await.unwrap();
    send("Z", 0).await;
    sink.wait_delivered(&["Z"], 1, Duration::from_secs(30)).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let intake = js.get_stream(&config.stream.name).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        intake.get_consumer(&config.worker.consumer).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.info().await.unwrap().ack_floor.stream_sequence < 1 {
        assert!(Instant::now() < deadline, "Z's message not acked within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(worker); // SIGKILL: no pull of its own left

    // K0 (stream sequence 2) pulled by "the other recorder", which does not record it yet.
    send("K", 0).await;
    let held = consumer.fetch().max_messages(1).messages().await.unwrap().next().await.unwrap().unwrap();
    assert_eq!(held.info().unwrap().stream_sequence, 2);
    assert_eq!(serde_json::from_slice::<Value>(&held.payload).unwrap(), json!({ "key": "K", "n": 0 }));
    send("K", 1).await;
    let worker = spawn(config_path.clone()).await.unwrap();
    let recorded = "SELECT count(*) = 1 FROM deliveries WHERE ordering_key = 'K'";
    store.wait_until("K1 recorded by the worker", Duration::from_secs(30), recorded).await;

    // The API shows the key (what holds K1 back is not in the store yet: K0 is unrecorded).
    let gql = async |query: &str, variables: Value| -> Value {
        let answer: Value = client
            .post(format!("http://{}/graphql", worker.main))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer.get("errors").is_none(), "GraphQL errors: {answer}");
        answer["data"].clone()
    };
    let k1 = store.scalar("SELECT id FROM deliveries WHERE ordering_key = 'K'").await.unwrap();
    let shown =
        gql("query($id: ID!) { delivery(id: $id) { orderingKey waitingForEarlier status } }", json!({ "id": k1 }))
            .await;
    assert_eq!(shown["delivery"], json!({ "orderingKey": "K", "waitingForEarlier": false, "status": "PENDING" }));

    let z = store.scalar("SELECT id FROM deliveries WHERE ordering_key = 'Z'").await.unwrap();
    gql("mutation($id: ID!) { replayDelivery(id: $id) { result } }", json!({ "id": z })).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.delivered().get("Z").map_or(0, Vec::len) < 2 {
        assert!(Instant::now() < deadline, "Z's replay not delivered within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!sink.delivered().contains_key("K"), "K1 was sent before K0 was recorded: {:?}", sink.arrivals());

    // Given back, K0 is recorded by the worker; then the key goes in receipt order.
    held.ack_with(AckKind::Nak(None)).await.unwrap();
    sink.wait_delivered(&["K"], 2, Duration::from_secs(30)).await;
    assert_eq!(sink.delivered()["K"], [0, 1], "K in receipt order");
    sink.assert_ordered();
    drop(worker);
    stop.cancel();
}
