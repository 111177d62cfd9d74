//! Issue #19: one trace per webhook, from the provider's request to the destination's answer,
//! exported over OTLP to a receiver this test runs (it decodes the exports with the official
//! protobuf definitions), and nothing exported while traces are off (the default).

use std::collections::BTreeMap;
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::signature::sign;
use inlet_shared::test_util::TestNats;
use inlet_shared::test_util::otlp::{ReceivedSpan, TestOtlp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{DESTINATION_SECRET, GITHUB_SECRET, TestDestination, TestStore, config_text, wait_ok};

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const INTERNAL: i32 = 1;

/// The provider's own trace context: it must be linked, never taken as the parent.
const PROVIDER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PROVIDER_SPAN: &str = "b7ad6b7169203331";

/// Something only the webhook's body holds.
const BODY_MARKER: &str = "body-marker-7f3a9c";

/// ingest and worker of one test, each with its own stop, and their `run`s to await.
struct Services {
    client: reqwest::Client,
    ingest_addr: std::net::SocketAddr,
    stop: CancellationToken,
    ingest: tokio::task::JoinHandle<anyhow::Result<()>>,
    worker: tokio::task::JoinHandle<anyhow::Result<()>>,
    _nats: TestNats,
    _dir: tempfile::TempDir,
    store: TestStore,
}

impl Services {
    async fn start(destination: &TestDestination, extra: &str) -> Services {
        let nats = TestNats::start();
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::start_in(dir.path());
        let url = destination.url();
        let mut text = config_text(&nats.url(), &store, &[("d", url, "retry_schedule = [\"100ms\"]")]);
        text.push_str(extra);
        let config = Config::parse(&text, &BTreeMap::new()).unwrap();
        let stop = CancellationToken::new();
        let (public, admin) = (bind().await, bind().await);
        let ingest_addr = public.local_addr().unwrap();
        let ingest =
            tokio::spawn(inlet_ingest::run(config.clone(), inlet_ingest::Listeners { public, admin }, stop.clone()));
        let (main, admin) = (bind().await, bind().await);
        let worker_addr = main.local_addr().unwrap();
        let worker = tokio::spawn(inlet_worker::run(config, inlet_worker::Listeners { main, admin }, stop.clone()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        for url in [format!("http://{ingest_addr}/readyz"), format!("http://{worker_addr}/readyz")] {
            wait_ok(&client, &url).await;
        }
        Services { client, ingest_addr, stop, ingest, worker, _nats: nats, _dir: dir, store }
    }

    /// A signed webhook that also carries the provider's `traceparent`; returns the status and
    /// the signature header's value.
    async fn send(&self, delivery: &str) -> (u16, String) {
        let body = format!("{{\"action\":\"opened\",\"note\":\"{BODY_MARKER}\"}}");
        let recipe = inlet_shared::signature::HmacRecipe {
            header: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            encoding: inlet_shared::signature::SignatureEncoding::Hex,
            algorithm: inlet_shared::signature::HmacAlgorithm::Sha256,
            timestamp_header: None,
            signed_payload: "{id}\n{body}".into(),
            id_header: Some("X-GitHub-Delivery".into()),
            type_header: Some("X-GitHub-Event".into()),
        };
        let mut request = self
            .client
            .post(format!("http://{}/webhooks/gh", self.ingest_addr))
            .header("content-type", "application/json")
            .header("X-GitHub-Event", "push")
            .header("traceparent", format!("00-{PROVIDER_TRACE}-{PROVIDER_SPAN}-01"))
            .body(body.clone().into_bytes());
        let mut signature = String::new();
        for (name, value) in sign::hmac(&recipe, GITHUB_SECRET, None, Some(delivery), body.as_bytes()) {
            if name.eq_ignore_ascii_case("x-hub-signature-256") {
                signature.clone_from(&value);
            }
            request = request.header(name, value);
        }
        (request.send().await.unwrap().status().as_u16(), signature)
    }

    /// Stops both and waits for their `run` to return (the exporters' last flush included).
    async fn stop(self) {
        self.stop.cancel();
        let within = Duration::from_secs(20);
        tokio::time::timeout(within, self.ingest).await.expect("ingest stops").unwrap().unwrap();
        tokio::time::timeout(within, self.worker).await.expect("worker stops").unwrap().unwrap();
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn traces_section(otlp: &TestOtlp, enabled: bool) -> String {
    let enabled = if enabled { "enabled = true\n" } else { "" };
    format!(
        "\n[telemetry.traces]\n{enabled}endpoint = \"{}\"\nbatch_delay = \"50ms\"\n\
         [telemetry.traces.resource_attributes]\n\"deployment.environment.name\" = \"it\"\n\
         [telemetry.traces.headers]\nx-collector-key = \"collector-k3y\"\n",
        otlp.endpoint()
    )
}

#[track_caller]
fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.service == service && s.name == name).collect();
    assert_eq!(found.len(), 1, "one {service} {name} span expected: {spans:#?}");
    found[0]
}

/// One signed webhook, delivered on its second attempt (the first is answered 503): one trace
/// holds ingest's receive → verify, publish and the worker's record → attempt, attempt; the
/// provider's `traceparent` is a link of the receive span, not its parent; no attribute holds
/// the body, a secret or a signature; and each delivery carried the `traceparent` of its
/// attempt's span, in that trace.
#[tokio::test]
async fn one_webhook_is_one_trace_from_the_provider_to_the_destination() {
    let otlp = TestOtlp::start().await;
    let destination = TestDestination::start(|n| (if n == 0 { 503 } else { 200 }, Duration::ZERO)).await;
    let services = Services::start(&destination, &traces_section(&otlp, true)).await;

    let (status, signature) = services.send("delivery-trace-1").await;
    assert_eq!(status, 202);
    destination.wait_for(2, Duration::from_secs(20)).await;
    let expected = ["receive", "verify", "publish", "record", "attempt", "attempt"];
    let spans = otlp.wait_for(Duration::from_secs(20), |spans| spans.len() >= expected.len()).await;
    let trace_context: String = services.store.scalar("SELECT trace_context FROM events").await.unwrap();
    services.stop().await;
    // Everything is exported by the time both have stopped, and nothing more than expected.
    let spans_after_stop = otlp.spans();
    assert_eq!(spans_after_stop.len(), expected.len(), "{spans_after_stop:#?}");
    assert_eq!(spans.len(), expected.len());

    let receive = one(&spans, "inlet-ingest", "receive");
    let verify = one(&spans, "inlet-ingest", "verify");
    let publish = one(&spans, "inlet-ingest", "publish");
    let record = one(&spans, "inlet-worker", "record");
    let mut attempts: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "attempt").collect();
    attempts.sort_by_key(|s| s.attribute("inlet.attempt").unwrap().parse::<i64>().unwrap());
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|s| s.service == "inlet-worker"));

    // One trace, started by Inlet: the provider's context is a link, not the parent.
    let trace = &receive.trace_id;
    assert_ne!(trace, PROVIDER_TRACE);
    assert!(spans.iter().all(|s| &s.trace_id == trace), "one trace: {spans:#?}");
    assert_eq!(receive.parent_span_id, "", "the receive span is the root");
    assert_eq!(receive.links, vec![(PROVIDER_TRACE.to_owned(), PROVIDER_SPAN.to_owned())]);
    assert!(spans.iter().all(|s| s.parent_span_id != PROVIDER_SPAN));

    // Parentage across the two processes.
    assert_eq!(verify.parent_span_id, receive.span_id);
    assert_eq!(publish.parent_span_id, receive.span_id);
    assert_eq!(record.parent_span_id, publish.span_id, "through the JetStream message's traceparent");
    for attempt in &attempts {
        assert_eq!(attempt.parent_span_id, record.span_id, "through the store, retries included");
    }
    assert_eq!(trace_context, format!("00-{trace}-{}-01", record.span_id), "the record span's context is stored");
    assert_eq!(
        [receive.kind, verify.kind, publish.kind, record.kind, attempts[0].kind],
        [SERVER, INTERNAL, PRODUCER, CONSUMER, CLIENT]
    );

    // What they say.
    assert_eq!(receive.attribute("inlet.source"), Some("gh"));
    assert_eq!(receive.attribute("inlet.event_id"), Some("delivery-trace-1"));
    assert_eq!(receive.attribute("http.response.status_code"), Some("202"));
    assert_eq!(receive.attribute("inlet.outcome"), Some("accepted"));
    assert_eq!(verify.attribute("inlet.scheme"), Some("hmac"));
    assert_eq!(publish.attribute("messaging.destination.name"), Some("inlet.events.gh"));
    assert_eq!(record.attribute("inlet.event_id"), Some("delivery-trace-1"));
    assert_eq!(record.attribute("inlet.outcome"), Some("recorded"));
    assert_eq!(record.attribute("inlet.deliveries"), Some("1"));
    assert_eq!(attempts[0].attribute("http.response.status_code"), Some("503"));
    assert_eq!(attempts[0].attribute("inlet.next"), Some("retry"));
    assert_eq!(attempts[0].status_code, 2, "a failed attempt is an error span");
    assert_eq!(attempts[1].attribute("http.response.status_code"), Some("200"));
    assert_eq!(attempts[1].attribute("inlet.outcome"), Some("delivered"));
    assert_eq!(attempts[1].attribute("inlet.destination"), Some("d"));
    assert_eq!(attempts[1].attribute("server.address"), Some("127.0.0.1"));

    // The destination continues Inlet's trace: each request's parent is its attempt's span.
    let received = destination.received();
    for (request, attempt) in received.iter().zip(&attempts) {
        let traceparent = request.headers["traceparent"].to_str().unwrap();
        assert_eq!(traceparent, format!("00-{trace}-{}-01", attempt.span_id));
    }

    // Never a body, a secret or a signature, anywhere in a span.
    let mut forbidden = vec![BODY_MARKER.to_owned(), GITHUB_SECRET.to_owned(), signature, "collector-k3y".to_owned()];
    forbidden.push(DESTINATION_SECRET.trim_start_matches("whsec_").to_owned());
    for request in &received {
        forbidden.push(request.headers["webhook-signature"].to_str().unwrap().to_owned());
    }
    for span in &spans {
        for text in &span.all_text {
            for secret in &forbidden {
                assert!(!text.contains(secret.as_str()), "{} span holds {secret:?} in {text:?}", span.name);
            }
        }
    }

    // The exports: OTLP/HTTP protobuf, the configured headers and resource.
    let requests = otlp.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!((request.path.as_str(), request.content_type.as_str()), ("/v1/traces", "application/x-protobuf"));
        assert!(request.headers.iter().any(|(k, v)| k == "x-collector-key" && v == "collector-k3y"));
        assert!(request.resource.iter().any(|(k, v)| k == "deployment.environment.name" && v == "it"));
    }
}

/// Off by default: with a receiver configured as the endpoint but `enabled` not set, a webhook
/// goes through, nothing is exported (not even when both stop, when an exporter would flush),
/// no `traceparent` is stored or sent to the destination.
#[tokio::test]
async fn traces_are_off_by_default_and_nothing_is_exported() {
    let otlp = TestOtlp::start().await;
    let destination = TestDestination::answering(200).await;
    let services = Services::start(&destination, &traces_section(&otlp, false)).await;

    assert_eq!(services.send("delivery-untraced").await.0, 202);
    destination.wait_for(1, Duration::from_secs(20)).await;
    let stored = services.store.scalar("SELECT trace_context FROM events").await;
    services.stop().await;

    assert_eq!(stored, None, "no trace context is stored");
    assert!(!destination.received()[0].headers.contains_key("traceparent"), "none is sent");
    assert!(otlp.requests().is_empty(), "nothing was exported: {:?}", otlp.requests());
}
