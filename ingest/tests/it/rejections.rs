//! Bad input gets the right status, nothing is published, and the metric counts it.

use std::time::Duration;

use inlet_shared::signature::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestIngest, now, spawn_ingest};

const REQUESTS: &str = "inlet_ingest_requests_total";

fn stripe_source(name: &str, extra: &str) -> String {
    format!("[[sources]]\nname = \"{name}\"\nkind = \"stripe\"\nsecrets = [\"whsec_test_secret\"]\n{extra}\n")
}

async fn outcome_count(ingest: &TestIngest, source: &str, outcome: &str) -> f64 {
    ingest.metric(REQUESTS, &[("source", source), ("outcome", outcome)]).await
}

#[tokio::test]
async fn bad_signatures_are_401_and_never_published() {
    let ingest = spawn_ingest(&stripe_source("rej-sig", "")).await;
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let good = sign::stripe("whsec_test_secret", now(), body);

    let mut tampered = body.to_vec();
    tampered[10] ^= 0x01;
    let response = ingest.post("rej-sig", &good, &tampered).await;
    assert_eq!(response.status(), 401);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&good[0].1), "error body must not echo the signature");
    assert!(text.contains("bad_signature"));

    let wrong_secret = sign::stripe("whsec_other", now(), body);
    assert_eq!(ingest.post("rej-sig", &wrong_secret, body).await.status(), 401);
    // Another provider's headers are not a Stripe signature at all.
    let other_scheme = sign::standard("whsec_dGVzdF9zZWNyZXRfdGVzdF9zZWNyZXQ=", "msg_1", now(), body);
    assert_eq!(ingest.post("rej-sig", &other_scheme, body).await.status(), 401);
    assert_eq!(ingest.post("rej-sig", &[], body).await.status(), 401, "missing header");
    let garbage = vec![("Stripe-Signature".to_owned(), "t=,v1=zz,,==".to_owned())];
    assert_eq!(ingest.post("rej-sig", &garbage, body).await.status(), 400, "malformed header");

    assert_eq!(ingest.stream_messages().await, 0);
    assert_eq!(outcome_count(&ingest, "rej-sig", "bad_signature").await, 2.0);
    assert_eq!(outcome_count(&ingest, "rej-sig", "missing_signature").await, 2.0);
    assert_eq!(outcome_count(&ingest, "rej-sig", "malformed_signature").await, 1.0);
    assert_eq!(
        ingest.metric("inlet_ingest_signature_failures_total", &[("source", "rej-sig"), ("reason", "mismatch")]).await,
        2.0
    );

    // The good one still works afterwards.
    assert_eq!(ingest.post("rej-sig", &good, body).await.status(), 202);
    assert_eq!(ingest.stream_messages().await, 1);
}

#[tokio::test]
async fn stale_and_future_timestamps_are_400() {
    let ingest = spawn_ingest(&stripe_source("rej-stale", "tolerance = \"5m\"")).await;
    let body = br#"{"id":"evt_2"}"#;
    let stale = ingest.post("rej-stale", &sign::stripe("whsec_test_secret", now() - 301, body), body).await;
    assert_eq!(stale.status(), 400);
    assert!(stale.text().await.unwrap().contains("stale_timestamp"));
    let future = ingest.post("rej-stale", &sign::stripe("whsec_test_secret", now() + 301, body), body).await;
    assert_eq!(future.status(), 400);
    assert_eq!(ingest.stream_messages().await, 0);
    assert_eq!(outcome_count(&ingest, "rej-stale", "stale_timestamp").await, 2.0);
    let fresh = ingest.post("rej-stale", &sign::stripe("whsec_test_secret", now() - 290, body), body).await;
    assert_eq!(fresh.status(), 202);
}

#[tokio::test]
async fn unknown_source_wrong_method_and_unknown_route() {
    let ingest = spawn_ingest(&stripe_source("rej-route", "")).await;
    let before = outcome_count(&ingest, "_unknown", "unknown_source").await;
    let response = ingest.post("nope", &[], b"{}").await;
    assert_eq!(response.status(), 404);
    assert!(outcome_count(&ingest, "_unknown", "unknown_source").await >= before + 1.0);

    let get = ingest.client.get(ingest.url("/webhooks/rej-route")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    assert_eq!(outcome_count(&ingest, "rej-route", "method_not_allowed").await, 1.0);

    assert_eq!(ingest.client.get(ingest.url("/other")).send().await.unwrap().status(), 404);
    assert_eq!(ingest.client.get(ingest.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(ingest.stream_messages().await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_declared_or_streamed() {
    let ingest = spawn_ingest(&stripe_source("rej-big", "max_body_bytes = 1000")).await;
    let body = vec![b'a'; 1001];
    let response = ingest.post("rej-big", &sign::stripe("whsec_test_secret", now(), &body), &body).await;
    assert_eq!(response.status(), 413);

    // Chunked, no Content-Length: rejected once the limit is passed, without reading the rest.
    let mut stream = TcpStream::connect(ingest.addr).await.unwrap();
    stream
        .write_all(b"POST /webhooks/rej-big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 600, "b".repeat(600));
    stream.write_all(chunk.as_bytes()).await.unwrap();
    stream.write_all(chunk.as_bytes()).await.unwrap();
    // The sender would go on for ever; the server answers before the body ends.
    let status = read_status(&mut stream).await;
    assert_eq!(status, 413);

    assert_eq!(ingest.stream_messages().await, 0);
    assert_eq!(outcome_count(&ingest, "rej-big", "too_large").await, 2.0);
}

#[tokio::test]
async fn a_slow_body_is_408() {
    let ingest = spawn_ingest(&stripe_source("rej-slow", "")).await;
    let mut stream = TcpStream::connect(ingest.addr).await.unwrap();
    stream
        .write_all(b"POST /webhooks/rej-slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"id\":")
        .await
        .unwrap();
    // The rest of the body never comes; body_read_timeout is 1 s in the test config.
    let status = read_status(&mut stream).await;
    assert_eq!(status, 408);
    assert_eq!(outcome_count(&ingest, "rej-slow", "body_timeout").await, 1.0);
    assert_eq!(ingest.stream_messages().await, 0);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let ingest = spawn_ingest(&stripe_source("rej-loris", "")).await;
    let mut stream = TcpStream::connect(ingest.addr).await.unwrap();
    stream.write_all(b"POST /webhooks/rej-loris HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    // header_read_timeout is 1 s: the server closes the connection (EOF or 408) instead of waiting.
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "connection still open after the header timeout");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let ingest = spawn_ingest(&stripe_source("rej-rate", "rate_limit = { per_second = 1, burst = 2 }")).await;
    let mut statuses = Vec::new();
    for n in 0..3 {
        let body = format!("{{\"id\":\"evt_rate_{n}\"}}");
        let response =
            ingest.post("rej-rate", &sign::stripe("whsec_test_secret", now(), body.as_bytes()), body.as_bytes()).await;
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429]);
    assert_eq!(ingest.stream_messages().await, 2);
    assert_eq!(outcome_count(&ingest, "rej-rate", "rate_limited").await, 1.0);
}

/// Reads an HTTP/1.1 status code from a raw connection.
async fn read_status(stream: &mut TcpStream) -> u16 {
    let mut buffer = vec![0u8; 1024];
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await.expect("no answer").unwrap();
    let head = String::from_utf8_lossy(&buffer[..read]);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {head:?}"))
}

#[tokio::test]
async fn duplicate_and_conflicting_signature_headers_use_the_first_and_never_panic() {
    let ingest = spawn_ingest(&stripe_source("rej-dup-headers", "")).await;
    let body = br#"{"id":"evt_dup_headers"}"#;
    let good = sign::stripe("whsec_test_secret", now(), body);
    let bad = sign::stripe("whsec_wrong", now(), body);
    // A wrong signature header first and a right one second: only the first counts, so the
    // request cannot smuggle a second opinion past the verifier.
    let response = ingest
        .client
        .post(ingest.url("/webhooks/rej-dup-headers"))
        .header("Stripe-Signature", &bad[0].1)
        .header("Stripe-Signature", &good[0].1)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = ingest
        .client
        .post(ingest.url("/webhooks/rej-dup-headers"))
        .header("Stripe-Signature", &good[0].1)
        .header("Stripe-Signature", &bad[0].1)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(ingest.stream_messages().await, 1);
}

#[tokio::test]
async fn compressed_bodies_are_never_inflated() {
    // Inlet verifies and stores the bytes it received. A `Content-Encoding: gzip` body is not
    // decompressed, so a gzip bomb stays its compressed size and the size limit applies to it.
    let ingest = spawn_ingest(&stripe_source("rej-gzip", "max_body_bytes = 2000")).await;
    let body: Vec<u8> = [&[0x1f_u8, 0x8b, 0x08, 0x00][..], &[0u8; 64]].concat();
    let mut request = ingest
        .client
        .post(ingest.url("/webhooks/rej-gzip"))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(body.clone());
    for (name, value) in sign::stripe("whsec_test_secret", now(), &body) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    let message = ingest.message(1).await;
    assert_eq!(message.payload.as_ref(), body.as_slice(), "stored as received, not inflated");
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_wait_instead_of_costing_memory() {
    // A cap of 4 connections, and headers allowed to take long, so idle connections stay open.
    let nats = inlet_shared::test_util::TestNats::start();
    let text = format!("[nats]\nurl = \"{}\"\n{}", nats.url(), stripe_source("rej-cap", ""));
    let mut config = inlet_shared::config::Config::parse(&text, &Default::default()).unwrap();
    config.ingest.max_connections = 4;
    config.ingest.header_read_timeout = Duration::from_secs(30);
    let ingest = crate::support::start(config, nats).await;
    // (The harness's HTTP client may hold one keep-alive connection too.)
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(ingest.addr).await.unwrap());
    }
    // A fifth client gets through the kernel's accept queue but is not served while the cap is
    // reached: its request stays unanswered.
    let mut fifth = TcpStream::connect(ingest.addr).await.unwrap();
    fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buffer = vec![0u8; 256];
    let waiting = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut buffer)).await;
    assert!(waiting.is_err(), "served beyond the connection cap");
    // The idle connections go away: the waiting client is served.
    drop(idle);
    let read =
        tokio::time::timeout(Duration::from_secs(10), fifth.read(&mut buffer)).await.expect("never served").unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_captured_request_replayed_is_a_duplicate_within_the_tolerance_and_refused_after_it() {
    let ingest = spawn_ingest(&stripe_source("rej-replay", "tolerance = \"1s\"")).await;
    let body = br#"{"id":"evt_replayed","type":"charge.succeeded"}"#;
    // An attacker captures one genuine delivery: headers and body, byte for byte.
    let captured = sign::stripe("whsec_test_secret", now(), body);
    assert_eq!(ingest.post("rej-replay", &captured, body).await.status(), 202);
    // Replayed at once: recognised as the same event, stored once, not delivered again.
    let again = ingest.post("rej-replay", &captured, body).await;
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains("duplicate"));
    // Replayed once the tolerance has passed (the wait is the point: time must pass).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let late = ingest.post("rej-replay", &captured, body).await;
    assert_eq!(late.status(), 400);
    assert!(late.text().await.unwrap().contains("stale_timestamp"));
    assert_eq!(ingest.stream_messages().await, 1, "only the genuine delivery is in the stream");
}
