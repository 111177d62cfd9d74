//! Bodies over `ingest.claim_check_threshold_bytes` (issue #17): a 25 MiB GitHub push is taken
//! (GitHub's own default limit), its body stored once in the bodies bucket before its message,
//! recorded and delivered byte for byte with a valid signature, and a duplicate is stored once;
//! a message that never got stored after its body did is never answered 2xx and nothing of it
//! is delivered; and a message whose object is not there is not recorded until it is.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use inlet_shared::config::{Config, GITHUB_MAX_BODY_BYTES};
use inlet_shared::signature::sign;
use inlet_shared::test_util::TestNats;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::support::{
    GITHUB_SECRET, IngestAddrs, TestDestination, TestStore, config_text, inlet_signature_valid, row, start_ingest,
    start_worker, wait_ok,
};

/// The suite's config plus a source of kind `github` (no `max_body_bytes`: the kind's 25 MiB)
/// whose pushes go to `destination`.
fn github_config(nats_url: &str, store: &TestStore, destination: &str, nats_keys: &str) -> String {
    let text = config_text(nats_url, store, &[("sink", destination.to_owned(), "")]);
    let text = text.replacen("[nats]\n", &format!("[nats]\n{nats_keys}"), 1);
    format!(
        "{text}\n[[sources]]\nname = \"github\"\nkind = \"github\"\nsecrets = [\"{GITHUB_SECRET}\"]\n\
         \n[[routes]]\nsource = \"github\"\nevents = [\"push\"]\ndestinations = [\"sink\"]\n"
    )
}

/// A push payload of exactly `size` bytes, JSON, with content that does not repeat.
fn push_body(size: usize, seed: u64) -> Vec<u8> {
    let head = format!("{{\"ref\":\"refs/heads/main\",\"seed\":{seed},\"padding\":\"");
    let tail = "\"}";
    let mut body = head.into_bytes();
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    while body.len() < size - tail.len() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        body.push(b"abcdefghijklmnopqrstuvwxyz0123456789"[(state >> 33) as usize % 36]);
    }
    body.extend_from_slice(tail.as_bytes());
    body
}

/// POSTs a GitHub-signed push to the `github` source; the status, `Retry-After` and the answer.
/// A request cut off is a failure naming what ingest counted (its outcomes).
async fn send_push(ingest: &IngestAddrs, delivery: &str, body: &[u8]) -> (u16, Option<String>, String) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let ingest_admin = ingest.admin;
    let ingest = ingest.public;
    let mut request = client
        .post(format!("http://{ingest}/webhooks/github"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in sign::github(GITHUB_SECRET, delivery, "push", body) {
        request = request.header(name, value);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            let metrics =
                client.get(format!("http://{ingest_admin}/metrics")).send().await.unwrap().text().await.unwrap();
            let counted: Vec<&str> = metrics.lines().filter(|l| l.starts_with("inlet_ingest_requests_total")).collect();
            panic!("{error:?}; ingest counted {counted:?}");
        }
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.text().await.unwrap_or_default())
}

/// Object names in the bodies bucket (not deleted).
async fn objects(js: &jetstream::Context) -> Vec<String> {
    let bucket = js.get_object_store("INLET_BODIES").await.unwrap();
    let mut list = bucket.list().await.unwrap();
    let mut names = Vec::new();
    while let Some(info) = list.next().await {
        let info = info.unwrap();
        if !info.deleted {
            names.push(info.name);
        }
    }
    names
}

async fn intake_messages(js: &jetstream::Context) -> u64 {
    js.get_stream("INLET").await.unwrap().info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread")]
async fn a_25_mib_github_push_is_stored_once_and_delivered_byte_for_byte_with_a_valid_signature() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_in(dir.path()));
    let destination = TestDestination::answering(200).await;
    let config = Config::parse(&github_config(&nats.url(), &store, &destination.url(), ""), &BTreeMap::new()).unwrap();
    assert_eq!(config.sources[1].body_limit(&config.ingest), GITHUB_MAX_BODY_BYTES, "GitHub's own default");
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let ingest = start_ingest(config.clone(), &stop).await;
    let worker = start_worker(config, &stop).await;
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("http://{}/readyz", ingest.public)).await;
    wait_ok(&client, &format!("http://{}/readyz", worker.main)).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    let body = push_body(GITHUB_MAX_BODY_BYTES, 1);
    let (status, _, answer) = send_push(&ingest, "d-1", &body).await;
    assert_eq!(status, 202, "{answer}");
    destination.wait_for(1, Duration::from_secs(60)).await;
    let received = destination.received();
    assert_eq!(received[0].body.len(), body.len());
    assert!(received[0].body == body, "delivered byte for byte");
    assert!(inlet_signature_valid(&received[0]), "Inlet's signature verifies over the 25 MiB");

    // GitHub's redelivery (same body, a new delivery id): the same event, stored once.
    let (status, _, answer) = send_push(&ingest, "d-2", &body).await;
    assert_eq!(status, 200, "a duplicate: {answer}");
    assert!(answer.contains("\"duplicate\""), "{answer}");
    // A small push after it: once it is delivered, the worker has read everything before it.
    let (status, _, _) = send_push(&ingest, "d-3", b"{\"ref\":\"refs/heads/dev\"}").await;
    assert_eq!(status, 202);
    destination.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(destination.count(), 2, "the large event delivered once");
    let stored = store.rows("SELECT length(body) FROM events WHERE source = 'github' ORDER BY id").await;
    assert_eq!(stored.len(), 2, "one event each: {stored:?}");
    assert_eq!(stored[0], row(&[Some(&GITHUB_MAX_BODY_BYTES.to_string())]), "the whole body stored");
    assert_eq!(intake_messages(&js).await, 2, "one message per event");
    let names = objects(&js).await;
    let sha256 = inlet_shared::claim_check::sha256_hex(&body);
    assert_eq!(names, [format!("github/{sha256}")], "one object, and only for the large body");

    // One byte over the limit: refused as soon as it is declared, before any of it is read, and
    // the answer names the limit in effect. (Sent by hand: the answer comes while an HTTP client
    // would still be writing the body, and the connection closes.)
    let mut stream = tokio::net::TcpStream::connect(ingest.public).await.unwrap();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: inlet\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        GITHUB_MAX_BODY_BYTES + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(&format!("body exceeds {GITHUB_MAX_BODY_BYTES} bytes")), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_stored_without_its_message_is_never_answered_2xx_nor_delivered_and_its_retry_is_stored_once() {
    // Ingest's user may not publish events: its body reaches the bucket, its message never
    // reaches the stream (the server drops it; no PubAck).
    let users = |ingest_publish: &str| {
        format!(
            "authorization {{ users = [\n\
             {{ user: \"ingest\", password: \"ingest-pass\", permissions: {{ publish: {ingest_publish} }} }}\n\
             {{ user: \"worker\", password: \"worker-pass\" }}\n] }}\n"
        )
    };
    let mut nats = TestNats::start_with_config(Some(&users("{ deny: [\"inlet.events.>\"] }")));
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_in(dir.path()));
    let destination = TestDestination::answering(200).await;
    let parse = |keys: &str| {
        let text = github_config(&nats.url(), &store, &destination.url(), keys);
        let text = text.replacen("publish_timeout = \"5s\"", "publish_timeout = \"2s\"", 1);
        Config::parse(&text, &BTreeMap::new()).unwrap()
    };
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let worker = start_worker(parse("user = \"worker\"\npassword = \"worker-pass\"\n"), &stop).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    wait_ok(&client, &format!("http://{}/readyz", worker.main)).await;
    let ingest = start_ingest(parse("user = \"ingest\"\npassword = \"ingest-pass\"\n"), &stop).await;
    wait_ok(&client, &format!("http://{}/readyz", ingest.public)).await;
    // The server keeps its port across the restart below.
    let nats_url = nats.url();
    let as_worker = || async {
        let options = async_nats::ConnectOptions::with_user_and_password("worker".into(), "worker-pass".into());
        jetstream::new(options.connect(nats_url.as_str()).await.unwrap())
    };
    let js = as_worker().await;

    let body = push_body(3 * 1024 * 1024, 3);
    let (status, retry_after, answer) = send_push(&ingest, "d-1", &body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(retry_after.is_some(), "the sender is told to retry");
    let sha256 = inlet_shared::claim_check::sha256_hex(&body);
    assert_eq!(objects(&js).await, [format!("github/{sha256}")], "the body was stored first");
    assert_eq!(intake_messages(&js).await, 0, "its message was not");

    // NATS killed and restarted, now letting ingest publish: what was stored stays, and the
    // orphaned body alone is never recorded or delivered.
    nats.restart_with_config(Some(&users("{ allow: [\">\"] }")));
    let js = as_worker().await;
    assert_eq!(objects(&js).await, [format!("github/{sha256}")], "the body survived the kill");
    assert_eq!(intake_messages(&js).await, 0);
    assert_eq!(store.scalar_i64("SELECT count(*) FROM events").await, 0, "nothing recorded");
    assert_eq!(destination.count(), 0, "nothing delivered");

    // The provider's retry (GitHub's redelivery) is stored, once, and delivered byte for byte.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (status, _, answer) = send_push(&ingest, "d-2", &body).await;
        if status == 202 {
            break answer;
        }
        assert_eq!(status, 503, "only unavailable while ingest reconnects: {answer}");
        assert!(tokio::time::Instant::now() < deadline, "never accepted after the restart: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(answer.contains("\"accepted\""), "{answer}");
    destination.wait_for(1, Duration::from_secs(60)).await;
    assert!(destination.received()[0].body == body);
    assert!(inlet_signature_valid(&destination.received()[0]));
    assert_eq!(intake_messages(&js).await, 1);
    assert_eq!(objects(&js).await.len(), 1, "the retry's body is the same object");
    assert_eq!(store.scalar_i64("SELECT count(*) FROM events").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_check_whose_object_is_missing_is_recorded_only_once_the_object_is_there() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_in(dir.path()));
    let destination = TestDestination::answering(200).await;
    let config = Config::parse(&github_config(&nats.url(), &store, &destination.url(), ""), &BTreeMap::new()).unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let worker = start_worker(config, &stop).await;
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("http://{}/readyz", worker.main)).await;

    // A version 2 message as ingest writes it, naming an object that is not (yet) there.
    let body = push_body(2 * 1024 * 1024, 4);
    let sha256 = inlet_shared::claim_check::sha256_hex(&body);
    let object = format!("github/{sha256}");
    let envelope = inlet_shared::envelope::Envelope {
        source: "github".into(),
        event_id: format!("sha256:{sha256}"),
        id_origin: inlet_shared::signature::IdOrigin::BodyHashUnsignedId,
        provider_event_id: Some("d-1".into()),
        event_type: Some("push".into()),
        received_at_ms: 1_764_000_000_000,
        scheme: inlet_shared::signature::SchemeKind::Github,
        secret_index: 0,
        content_type: Some("application/json".into()),
        original_headers: None,
        traceparent: None,
        body: Some(inlet_shared::envelope::BodyClaim { object: object.clone(), size: body.len() as u64, sha256 }),
    };
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in envelope.to_headers() {
        headers.insert(name, value.as_ref());
    }
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.publish_with_headers("inlet.events.github", headers, bytes::Bytes::new()).await.unwrap().await.unwrap();

    // The worker reads it, finds no object, and leaves it unrecorded.
    let metrics_url = format!("http://{}/metrics", worker.admin);
    let unavailable = async || {
        let text = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        inlet_shared::test_util::metric_sample(
            &text,
            "inlet_worker_events_total",
            &[("source", "github"), ("outcome", "body_unavailable")],
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while unavailable().await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the claim check was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.scalar_i64("SELECT count(*) FROM events").await, 0, "never recorded without its body");
    assert_eq!(destination.count(), 0);

    // The object arrives: the message, back after its delay, is recorded with it.
    let bucket = js.get_object_store("INLET_BODIES").await.unwrap();
    bucket.put(object.as_str(), &mut body.as_slice()).await.unwrap();
    destination.wait_for(1, Duration::from_secs(30)).await;
    assert!(destination.received()[0].body == body, "delivered byte for byte");
    assert_eq!(store.scalar_i64("SELECT count(*) FROM events").await, 1);
}
