//! The NATS store full: a stream at its `max_bytes`, and a disk that is really full (ENOSPC on
//! a small tmpfs under nats-server). Ingest answers 503 with `Retry-After` at once instead of
//! after `publish_timeout`, `/readyz` says why, and both recover once space returns (after a
//! full disk: once nats-server restarted, which 2.15.1 needs before it writes again).
//! Deduplication keeps working throughout.
//!
//! Each test uses its own stream name: the store metrics are labelled by stream, and every
//! in-process ingest shares one metrics recorder.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use inlet_shared::signature::sign;
use inlet_shared::test_util::TestNats;

use crate::support::{TestIngest, spawn_ingest_with, start, test_config};

const SOURCE: &str = "[[sources]]\nname = \"full\"\nkind = \"github\"\nsecrets = [\"s3cr3t\"]\nmax_body_bytes = 4096\n";

/// Long on purpose: every 503 below must come well before it.
const PUBLISH_TIMEOUT: &str = "20s";
/// The bound those answers must meet.
const PROMPT: Duration = Duration::from_secs(5);
/// Small enough to fill with a few dozen 3 kB events; the config floor for a 4 KiB body limit
/// is 4,096 + 69,632 bytes.
const MAX_BYTES: &str = "80000";

async fn bounded_ingest(stream: &str) -> TestIngest {
    spawn_ingest_with(
        SOURCE,
        &[
            ("INLET__STREAM__NAME", stream),
            ("INLET__STREAM__MAX_BYTES", MAX_BYTES),
            ("INLET__INGEST__MAX_BODY_BYTES", "4096"),
            ("INLET__INGEST__PUBLISH_TIMEOUT", PUBLISH_TIMEOUT),
        ],
    )
    .await
}

fn event(id: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let body = format!("{{\"id\":\"{id}\",\"pad\":\"{}\"}}", "x".repeat(3000)).into_bytes();
    (sign::github("s3cr3t", id, "push", &body), body)
}

/// Posts the event `id`; returns the response, its JSON body and how long the answer took.
async fn send(ingest: &TestIngest, id: &str) -> (u16, Option<String>, serde_json::Value, Duration) {
    let (headers, body) = event(id);
    let started = Instant::now();
    let response = ingest.post("full", &headers, &body).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap(), elapsed)
}

/// Sends new events until one is refused; returns how many were accepted and the refusal.
async fn fill(ingest: &TestIngest, prefix: &str) -> (usize, (u16, Option<String>, serde_json::Value, Duration)) {
    for n in 0..200 {
        let answer = send(ingest, &format!("{prefix}-{n}")).await;
        if answer.0 != 202 {
            return (n, answer);
        }
    }
    panic!("the stream never filled up");
}

async fn readiness(ingest: &TestIngest) -> (u16, serde_json::Value) {
    let response = ingest.client.get(ingest.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls `/readyz` until `done` holds for its answer (the probe runs every second).
async fn wait_readiness(ingest: &TestIngest, within: Duration, done: impl Fn(u16, &serde_json::Value) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readiness(ingest).await;
        if done(status, &body) {
            return;
        }
        assert!(Instant::now() < deadline, "readiness stayed {status} {body}:\n{}", ingest.nats.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn messages(ingest: &TestIngest, stream: &str) -> u64 {
    let js = ingest.jetstream().await;
    js.get_stream(stream).await.unwrap().info().await.unwrap().state.messages
}

async fn purge(ingest: &TestIngest, stream: &str) {
    let js = ingest.jetstream().await;
    js.get_stream(stream).await.unwrap().purge().await.unwrap();
}

#[tokio::test]
async fn a_full_stream_answers_503_at_once_and_readiness_follows_until_space_returns() {
    const STREAM: &str = "FULL_STREAM";
    let ingest = bounded_ingest(STREAM).await;
    let (accepted, (status, retry_after, body, elapsed)) = fill(&ingest, "fill").await;
    assert!(accepted >= 10, "only {accepted} events fit in {MAX_BYTES} bytes");
    assert_eq!(status, 503, "a full store is temporary: {body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "with Retry-After");
    assert_eq!(body["error"], "store_full", "{body}");
    assert!(elapsed < PROMPT, "answered after {elapsed:?}, not at once (publish_timeout {PUBLISH_TIMEOUT})");

    let (status, body) = readiness(&ingest).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "stream_full", "{body}");
    // Further events are refused at once too, and nothing more is stored.
    let (status, retry_after, body, elapsed) = send(&ingest, "while-full").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("store_full")), "{body}");
    assert!(retry_after.is_some() && elapsed < PROMPT, "{elapsed:?}");
    assert_eq!(messages(&ingest, STREAM).await, accepted as u64);
    let stream = [("stream", STREAM)];
    assert_eq!(ingest.metric("inlet_ingest_store_available", &stream).await, 0.0);
    let failures = [("stream", STREAM), ("reason", "stream_full")];
    assert!(ingest.metric("inlet_ingest_publish_failures_total", &failures).await >= 1.0);
    let outcome = [("source", "full"), ("outcome", "store_full")];
    assert!(ingest.metric("inlet_ingest_requests_total", &outcome).await >= 2.0);

    // An operator frees space; readiness recovers without any webhook traffic (the probe).
    purge(&ingest, STREAM).await;
    wait_readiness(&ingest, Duration::from_secs(10), |status, _| status == 200).await;
    assert!(
        ingest.metric("inlet_ingest_store_probes_total", &[("stream", STREAM), ("outcome", "available")]).await >= 1.0
    );
    assert_eq!(ingest.metric("inlet_ingest_store_available", &stream).await, 1.0);
    let (status, _, body, _) = send(&ingest, "after-purge").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(readiness(&ingest).await.0, 200);
    assert_eq!(messages(&ingest, STREAM).await, 1);
}

#[tokio::test]
async fn duplicates_stay_duplicates_in_a_bounded_stream_when_full_and_after_a_purge() {
    const STREAM: &str = "FULL_DEDUP";
    let ingest = bounded_ingest(STREAM).await;
    let (status, _, first, _) = send(&ingest, "evt-a").await;
    assert_eq!(status, 202, "{first}");
    let (status, _, again, _) = send(&ingest, "evt-a").await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")), "{again}");
    assert_eq!(again["stream_sequence"], first["stream_sequence"]);

    let (accepted, (status, _, body, _)) = fill(&ingest, "dedup-fill").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(messages(&ingest, STREAM).await, 1 + accepted as u64, "evt-a once, plus the fill");
    // While the stream is full, a retry of evt-a is still recognised at once: 200, not 503
    // (JetStream answers a limit at once, so ingest still asks it rather than refusing).
    let (status, _, retried, elapsed) = send(&ingest, "evt-a").await;
    assert_eq!((status, retried["status"].as_str()), (200, Some("duplicate")), "{retried}");
    assert!(elapsed < PROMPT, "{elapsed:?}");
    assert_eq!(readiness(&ingest).await.0, 503, "a duplicate says nothing about free space");

    purge(&ingest, STREAM).await;
    wait_readiness(&ingest, Duration::from_secs(10), |status, _| status == 200).await;
    // The provider retries evt-a after the outage, inside the duplicate window: the purge
    // removed the message but not JetStream's memory of its id, so it is not stored again.
    let (status, _, retried, _) = send(&ingest, "evt-a").await;
    assert_eq!((status, retried["status"].as_str()), (200, Some("duplicate")), "{retried}");
    assert_eq!(messages(&ingest, STREAM).await, 0);
    let (status, _, _, _) = send(&ingest, "evt-b").await;
    assert_eq!(status, 202);
    let (status, _, body, _) = send(&ingest, "evt-b").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")), "{body}");
    assert_eq!(messages(&ingest, STREAM).await, 1);
}

/// Writes zeros to `path` until the file system says ENOSPC; returns the bytes written.
fn fill_disk(path: &Path, at_most: u64) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => return written,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
        assert!(written <= at_most, "wrote {written} bytes without ENOSPC: the tmpfs is not where expected");
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_at_once_and_readiness_holds_until_nats_restarts() {
    const STREAM: &str = "FULL_DISK";
    const TMPFS_MIB: u32 = 16;
    let nats = TestNats::start_on_tmpfs(TMPFS_MIB);
    let publish_timeout = Duration::from_secs(4);
    let config =
        test_config(&nats, SOURCE, &[("INLET__STREAM__NAME", STREAM), ("INLET__INGEST__PUBLISH_TIMEOUT", "4s")]);
    let mut ingest = start(config, nats).await;
    let (status, _, _, _) = send(&ingest, "before").await;
    assert_eq!(status, 202);

    let store = ingest.nats.store_seen_from_outside().unwrap();
    let filler = store.join("filler");
    fill_disk(&filler, u64::from(TMPFS_MIB) << 20);

    // nats-server does not answer a publish it cannot write (measured on 2.15.1), so the first
    // one costs publish_timeout; it makes the store failing.
    let (status, _, body, elapsed) = send(&ingest, "during").await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(elapsed >= publish_timeout - Duration::from_millis(500), "the server answered after all: {elapsed:?}");
    // The probe finds the stream's write error, without publishing anything.
    wait_readiness(&ingest, Duration::from_secs(10), |status, body| {
        status == 503 && body["reason"] == "store_write_failed"
    })
    .await;
    // From now on every request is answered at once, not after publish_timeout.
    for n in 0..3 {
        let (status, retry_after, body, elapsed) = send(&ingest, &format!("refused-{n}")).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("store_full")), "{body}");
        assert!(retry_after.is_some());
        assert!(elapsed < Duration::from_secs(1), "answered after {elapsed:?}");
    }

    // Space comes back, but the stream keeps its write error until nats-server restarts:
    // readiness stays 503 through two more probes.
    std::fs::remove_file(&filler).unwrap();
    let probes = readiness(&ingest).await.1["probes"].as_u64().unwrap();
    wait_readiness(&ingest, Duration::from_secs(10), |status, body| {
        assert_eq!((status, body["reason"].as_str()), (503, Some("store_write_failed")), "{body}");
        body["probes"].as_u64().unwrap() >= probes + 2
    })
    .await;

    ingest.nats.restart();
    wait_readiness(&ingest, Duration::from_secs(20), |status, _| status == 200).await;
    // The senders retry: stored now; the event stored before the disk filled is still there.
    for id in ["during", "refused-0"] {
        let (status, _, body, _) = send(&ingest, id).await;
        assert_eq!(status, 202, "{id}: {body}");
    }
    let (status, _, body, _) = send(&ingest, "before").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")), "{body}");
    assert_eq!(messages(&ingest, STREAM).await, 3);
}
