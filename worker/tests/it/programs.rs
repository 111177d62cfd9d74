//! Route programs end to end (docs/routing.md): filters and transforms on every source kind
//! through a real ingest, NATS and store; a runaway transform stopped and dead-lettered
//! `transform_failed`; bad programs refusing the worker's start, naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::signature::{HmacRecipe, sign};
use inlet_shared::test_util::TestNats;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{
    Backend, DESTINATION_SECRET, IngestAddrs, TestDestination, TestStore, WorkerAddrs, start_ingest, start_worker,
    wait_ok,
};

const STRIPE_SECRET: &str = "whsec_test_secret";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SHOPIFY_SECRET: &str = "hush";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ACME_SECRET: &str = "acme-secret";

/// One source of each kind.
const SOURCES: &str = r#"
[[sources]]
name = "stripe"
kind = "stripe"
secrets = ["whsec_test_secret"]

[[sources]]
name = "svix"
kind = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[sources]]
name = "github"
kind = "github"
secrets = ["It's a Secret to Everybody"]

[[sources]]
name = "shopify"
kind = "shopify"
secrets = ["hush"]

[[sources]]
name = "slack"
kind = "slack"
secrets = ["8f742231b10e8888abcd99yyyzzz85a5"]

[[sources]]
name = "acme"
kind = "hmac"
secrets = ["acme-secret"]
[sources.hmac]
header = "X-Acme-Signature"
prefix = "sha256="
timestamp_header = "X-Acme-Timestamp"
signed_payload = "{id}.{timestamp}.{body}"
id_header = "X-Acme-Delivery"
type_header = "X-Acme-Event"
"#;

fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// The worker and ingest over one store, with [`SOURCES`] and `tail` (destinations, routes).
struct Programs {
    _nats: TestNats,
    _dir: tempfile::TempDir,
    store: TestStore,
    ingest: std::net::SocketAddr,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Programs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn config_text(nats: &TestNats, store: &TestStore, extra_worker: &str, tail: &str) -> String {
    let (database, store_section) = store.config_keys();
    format!(
        "[nats]\nurl = \"{}\"\nstartup_timeout = \"10s\"\n[ingest]\npublish_timeout = \"5s\"\n\
         [worker]\n{database}ack_wait = \"5s\"\nstats_interval = \"200ms\"\nshutdown_grace = \"5s\"\n{extra_worker}\n\
         {store_section}\n{SOURCES}\n{tail}",
        nats.url()
    )
}

fn destination(name: &str, url: &str) -> String {
    format!(
        "\n[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nsigning_secret = \"{DESTINATION_SECRET}\"\n\
         timeout = \"5s\"\nretry_schedule = []\n"
    )
}

impl Programs {
    async fn start(extra_worker: &str, tail: &str) -> Programs {
        let nats = TestNats::start();
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::start_on(Backend::from_env(), dir.path());
        let config = Config::parse(&config_text(&nats, &store, extra_worker, tail), &BTreeMap::new()).unwrap();
        let stop = CancellationToken::new();
        let IngestAddrs { public: ingest, .. } = start_ingest(config.clone(), &stop).await;
        let WorkerAddrs { main, .. } = start_worker(config, &stop).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        for url in [format!("http://{ingest}/readyz"), format!("http://{main}/readyz")] {
            wait_ok(&client, &url).await;
        }
        Programs { _nats: nats, _dir: dir, store, ingest, client, stop }
    }

    async fn post(&self, source: &str, headers: Vec<(String, String)>, body: &[u8]) {
        let mut request = self
            .client
            .post(format!("http://{}/webhooks/{source}", self.ingest))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, 202, "{source} accepted");
    }
}

fn acme_recipe() -> HmacRecipe {
    let config = Config::parse(
        &format!("{SOURCES}\n[[destinations]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\nsigning_secret = \"{DESTINATION_SECRET}\"\n"),
        &BTreeMap::new(),
    )
    .unwrap();
    config.source("acme").unwrap().hmac.clone().unwrap()
}

/// A signed request of `source` with `body` (each kind's own headers; the event type is the
/// kind's own too: `amount.changed` where the provider lets the body or a header say it).
fn signed(source: &str, n: u32, body: &[u8]) -> Vec<(String, String)> {
    let t = now();
    match source {
        "stripe" => sign::stripe(STRIPE_SECRET, t, body),
        "svix" => sign::standard(STANDARD_SECRET, &format!("msg_{n}"), t, body),
        "github" => sign::github(GITHUB_SECRET, &format!("gh-{n}"), "push", body),
        "shopify" => sign::shopify(SHOPIFY_SECRET, &format!("shop-{n}"), "orders/create", body),
        "slack" => sign::slack(SLACK_SECRET, t, body),
        "acme" => {
            let mut headers = sign::hmac(&acme_recipe(), ACME_SECRET, Some(t), Some(&format!("acme-{n}")), body);
            headers.push(("X-Acme-Event".into(), "amount.changed".into()));
            headers
        }
        other => panic!("no source {other}"),
    }
}

/// A body every kind takes, with its own id (Stripe's and Slack's ids come from the body).
fn body(source: &str, n: u32, amount: u32) -> Vec<u8> {
    json!({
        "id": format!("evt_{source}_{n}"),
        "event_id": format!("Ev{source}{n}"),
        "type": "amount.changed",
        "data": {"object": {"amount": amount}},
        "ref": "refs/heads/main",
    })
    .to_string()
    .into_bytes()
}

const KINDS: [&str; 6] = ["stripe", "svix", "github", "shopify", "slack", "acme"];

#[tokio::test]
async fn filters_and_transforms_apply_on_every_source_kind() {
    let sink = TestDestination::answering(200).await;
    let mut tail = destination("sink", &sink.url());
    for source in KINDS {
        // The filter looks at the body, the source and (GitHub) a header; the transform
        // reshapes the body and sets a header.
        let header_condition = if source == "github" { r#" && headers["x-github-event"] == "push""# } else { "" };
        tail.push_str(&format!(
            "\n[[routes]]\nsource = \"{source}\"\ndestinations = [\"sink\"]\n\
             filter = '''body.data.object.amount > 1000 && source == \"{source}\"{header_condition}'''\n\
             transform = '''{{body: {{kind: \"{source}\", cents: .data.object.amount}}, headers: {{\"X-Kind\": \"{source}\"}}}}'''\n"
        ));
    }
    let programs = Programs::start("", &tail).await;
    for (n, source) in KINDS.iter().enumerate() {
        let n = u32::try_from(n).unwrap();
        let small = body(source, n * 2, 5);
        programs.post(source, signed(source, n * 2, &small), &small).await;
        let large = body(source, n * 2 + 1, 5000);
        programs.post(source, signed(source, n * 2 + 1, &large), &large).await;
    }
    sink.wait_for(KINDS.len(), Duration::from_secs(20)).await;
    let mut seen: Vec<(String, Value, String)> = sink
        .received()
        .iter()
        .map(|r| {
            assert!(crate::support::inlet_signature_valid(r), "Inlet signs the transformed body");
            assert_eq!(r.headers["content-type"], "application/json");
            let kind = r.headers.get("x-kind").unwrap_or_else(|| panic!("no x-kind: {:?} {:?}", r.headers, r.body));
            let kind = kind.to_str().unwrap().to_owned();
            (kind, serde_json::from_slice(&r.body).unwrap(), r.headers["inlet-source"].to_str().unwrap().to_owned())
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, Value, String)> =
        KINDS.iter().map(|s| ((*s).to_owned(), json!({"kind": s, "cents": 5000}), (*s).to_owned())).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, expected, "one transformed delivery per kind: the large amount only");
    // The small ones are recorded, unrouted; the stored bodies are the originals.
    programs.store.wait_until("all recorded", Duration::from_secs(10), "SELECT COUNT(*) = 12 FROM events").await;
    assert_eq!(programs.store.scalar_i64("SELECT COUNT(*) FROM events WHERE route_status = 'unrouted'").await, 6);
    let stored = programs.store.scalar_i64("SELECT length(body) FROM events WHERE event_id = 'evt_stripe_1'").await;
    assert_eq!(stored, i64::try_from(body("stripe", 1, 5000).len()).unwrap(), "the original body is kept");
    // Nothing came again after the first six.
    assert!(!sink.reached(KINDS.len() + 1, Duration::from_millis(500)).await);
}

#[tokio::test]
async fn a_runaway_transform_is_stopped_and_dead_lettered_and_others_still_run() {
    let sink = TestDestination::answering(200).await;
    let mut tail = destination("looping", &sink.url());
    tail.push_str(&destination("ranging", &sink.url()));
    tail.push_str(&destination("fine", &sink.url()));
    tail.push_str(
        "\n[[routes]]\nsource = \"github\"\ndestinations = [\"looping\"]\ntransform = 'def f: f; f'\n\
         \n[[routes]]\nsource = \"github\"\ndestinations = [\"ranging\"]\ntransform = '[range(1e9)]'\n\
         \n[[routes]]\nsource = \"github\"\ndestinations = [\"fine\"]\ntransform = '{ok: .ref}'\n",
    );
    let programs = Programs::start("transform_timeout = \"300ms\"\ntransform_threads = 1", &tail).await;
    let started = std::time::Instant::now();
    let body = body("github", 1, 1);
    programs.post("github", signed("github", 1, &body), &body).await;
    sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(serde_json::from_slice::<Value>(&sink.received()[0].body).unwrap(), json!({"ok": "refs/heads/main"}));
    programs
        .store
        .wait_until(
            "both runaways dead-lettered",
            Duration::from_secs(20),
            "SELECT COUNT(*) = 2 FROM deliveries WHERE status = 'dead_lettered' AND dead_letter_reason = 'transform_failed'",
        )
        .await;
    // Each was stopped at its deadline or step bound (one thread: one after the other).
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let errors = programs
        .store
        .rows("SELECT destination, last_error FROM deliveries WHERE dead_letter_reason = 'transform_failed' ORDER BY destination")
        .await;
    for row in &errors {
        let error = row[1].as_deref().unwrap_or_default();
        assert!(error.starts_with("transform failed: stopped after"), "{row:?}");
    }
    // Nothing was sent for them.
    assert!(!sink.reached(2, Duration::from_millis(500)).await);
}

#[tokio::test]
async fn bad_programs_stop_the_worker_naming_the_key_and_position() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::start_on(Backend::from_env(), dir.path());
    for (route, key) in [
        ("filter = 'body.amount >'", "routes[0].filter"),
        ("transform = '{a: }'", "routes[0].transform"),
        ("transform = 'nosuchfunction(1)'", "routes[0].transform"),
    ] {
        let tail = format!(
            "{}\n[[routes]]\nsource = \"github\"\ndestinations = [\"sink\"]\n{route}\n",
            destination("sink", "http://127.0.0.1:9")
        );
        let config = Config::parse(&config_text(&nats, &store, "", &tail), &BTreeMap::new()).unwrap();
        let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            inlet_worker::run(config, inlet_worker::Listeners { main, admin }, stop),
        )
        .await
        .expect("refused at once")
        .expect_err("refused");
        let config_error = error.downcast_ref::<inlet_shared::config::ConfigError>().expect("a config error: exit 64");
        let text = config_error.to_string();
        assert!(text.contains(key) && text.contains("line 1, column"), "{route}: {text}");
    }
    // Over-long and over-nested programs are refused by the config itself (ingest too).
    let deep = format!("filter = '{}1{}'", "(".repeat(40), ")".repeat(40));
    let tail = format!(
        "{}\n[[routes]]\nsource = \"github\"\ndestinations = [\"sink\"]\n{deep}\n",
        destination("sink", "http://127.0.0.1:9")
    );
    let error = Config::parse(&config_text(&nats, &store, "", &tail), &BTreeMap::new()).unwrap_err().to_string();
    assert!(error.contains("routes[0].filter") && error.contains("deeper than 32"), "{error}");
}
