//! `stream.durability = "fsync"`: group commit into atomic batches on a nats-server with
//! `sync_interval: always`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::envelope;
use inlet_shared::signature::sign;
use inlet_shared::test_util::TestNats;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{TestIngest, start};

/// Each test has its own stream name, so its metrics (labelled by stream) are its own.
fn stream_name(source: &str) -> String {
    source.to_ascii_uppercase().replace('-', "_")
}

fn fsync_config(nats: &TestNats, source: &str) -> Config {
    let text = format!(
        r#"
[nats]
url = "{}"
monitoring_url = "{}"
startup_timeout = "10s"
[stream]
name = "{stream}"
durability = "fsync"
[ingest]
publish_timeout = "3s"
retry_after = "1s"
[[sources]]
name = "{source}"
kind = "github"
secrets = ["s"]
"#,
        nats.url(),
        nats.monitoring_url().expect("monitoring enabled"),
        stream = stream_name(source),
    );
    Config::parse(&text, &BTreeMap::new()).unwrap()
}

async fn spawn_fsync(source: &str) -> TestIngest {
    let nats = TestNats::start_fsync();
    let config = fsync_config(&nats, source);
    start(config, nats).await
}

async fn send(client: &reqwest::Client, ingest: &TestIngest, source: &str, id: &str) -> u16 {
    let body = format!("{{\"delivery\":\"{id}\"}}");
    let mut request = client.post(ingest.url(&format!("/webhooks/{source}"))).body(body.clone());
    for (name, value) in sign::github("s", id, "push", body.as_bytes()) {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Every message's delivery id, in stream order: `Inlet-Provider-Event-Id`, since GitHub does
/// not sign its delivery id and `Inlet-Event-Id` is the body hash (each delivery here has a body
/// of its own).
async fn stored_ids(ingest: &TestIngest, source: &str) -> Vec<String> {
    let js = ingest.jetstream().await;
    let mut stream = js.get_stream(stream_name(source)).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut ids = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            ids.push(message.headers.get(envelope::HEADER_PROVIDER_EVENT_ID).unwrap().as_str().to_owned());
        }
    }
    ids
}

async fn batch_histogram(ingest: &TestIngest, source: &str) -> (f64, f64) {
    let stream = stream_name(source);
    let count = ingest.metric("inlet_ingest_batch_messages_count", &[("stream", &stream)]).await;
    let sum = ingest.metric("inlet_ingest_batch_messages_sum", &[("stream", &stream)]).await;
    (count, sum)
}

#[tokio::test]
async fn fsync_mode_refuses_a_server_that_does_not_fsync_before_acking() {
    // Monitoring on, but the default sync_interval.
    let nats = TestNats::start_with_config(Some("http: \"127.0.0.1:-1\"\n"));
    let config = fsync_config(&nats, "gc-refuse");
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = inlet_ingest::run(config, inlet_ingest::Listeners { public, admin }, CancellationToken::new()).await;
    let message = format!("{:#}", result.expect_err("must refuse to start"));
    assert!(message.contains("sync_interval: always"), "{message}");
}

#[tokio::test]
async fn light_load_stays_on_single_publishes() {
    let ingest = spawn_fsync("gc-light").await;
    for n in 0..5 {
        assert_eq!(send(&ingest.client, &ingest, "gc-light", &format!("light-{n}")).await, 202);
    }
    // One request at a time: every commit carried exactly one message.
    assert_eq!(batch_histogram(&ingest, "gc-light").await, (5.0, 5.0));
    assert_eq!(stored_ids(&ingest, "gc-light").await.len(), 5);
}

#[tokio::test]
async fn a_burst_is_grouped_and_every_2xx_is_stored_exactly_once_with_duplicates_answered_200() {
    let ingest = spawn_fsync("gc-burst").await;
    // Ten events stored first; the burst repeats them among 300 new ones.
    for n in 0..10 {
        assert_eq!(send(&ingest.client, &ingest, "gc-burst", &format!("old-{n}")).await, 202);
    }
    let client = ingest.client.clone();
    let ingest = Arc::new(ingest);
    let mut tasks = Vec::new();
    for n in 0..310 {
        let (client, ingest) = (client.clone(), Arc::clone(&ingest));
        let id = if n % 31 == 0 { format!("old-{}", n / 31) } else { format!("new-{n}") };
        tasks.push(tokio::spawn(async move { (id.clone(), send(&client, &ingest, "gc-burst", &id).await) }));
    }
    let mut answers = HashMap::new();
    for task in tasks {
        let (id, status) = task.await.unwrap();
        answers.insert(id, status);
    }
    for (id, status) in &answers {
        let expected = if id.starts_with("old-") { 200 } else { 202 };
        assert_eq!(*status, expected, "{id}");
    }
    let ids = stored_ids(&ingest, "gc-burst").await;
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "no event stored twice");
    assert_eq!(ids.len(), 10 + 300);
    let (commits, messages) = batch_histogram(&ingest, "gc-burst").await;
    assert_eq!(messages, 320.0, "every request went through the batcher once");
    assert!(commits < messages, "concurrent requests shared commits ({commits} commits for {messages} messages)");
    let fallbacks =
        ingest.metric("inlet_ingest_batch_fallbacks_total", &[("stream", "GC_BURST"), ("reason", "duplicate")]).await;
    assert!(fallbacks >= 1.0, "a batch holding a stored event id fell back to single publishes");
}

#[tokio::test]
async fn nats_killed_during_a_burst_loses_no_2xx_and_stores_nothing_twice() {
    let mut ingest = spawn_fsync("gc-kill").await;
    let client = ingest.client.clone();
    let url = ingest.url("/webhooks/gc-kill");
    let total = 400;
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (first_failure_tx, mut first_failure) = tokio::sync::watch::channel(false);
    let first_failure_tx = Arc::new(first_failure_tx);
    let (accepted_tx, mut accepted_count) = tokio::sync::watch::channel(0usize);
    let accepted_tx = Arc::new(accepted_tx);
    let mut tasks = Vec::new();
    for n in 0..total {
        let (client, url, failures, first_failure_tx, accepted_tx) = (
            client.clone(),
            url.clone(),
            Arc::clone(&failures),
            Arc::clone(&first_failure_tx),
            Arc::clone(&accepted_tx),
        );
        tasks.push(tokio::spawn(async move {
            let id = format!("burst-{n}");
            let body = format!("{{\"delivery\":\"{id}\"}}");
            // A provider: retry 5xx and connection errors with backoff until accepted.
            for attempt in 0..60u32 {
                let mut request = client.post(&url).body(body.clone());
                for (name, value) in sign::github("s", &id, "push", body.as_bytes()) {
                    request = request.header(name, value);
                }
                let status = request.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                if (200..300).contains(&status) {
                    accepted_tx.send_modify(|count| *count += 1);
                    return (id, status, attempt);
                }
                failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = first_failure_tx.send(true);
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10)) + 50)).await;
            }
            (id, 0, 60)
        }));
    }
    // Kill the server mid-burst, without warning, once some requests were acknowledged.
    accepted_count.wait_for(|count| *count >= 50).await.unwrap();
    ingest.nats.kill();
    // Bring it back once senders have seen the outage.
    first_failure.wait_for(|seen| *seen).await.unwrap();
    ingest.nats.restart();
    let mut accepted = HashSet::new();
    for task in tasks {
        let (id, status, _) = task.await.unwrap();
        assert!((200..300).contains(&status), "{id} never accepted");
        accepted.insert(id);
    }
    assert!(failures.load(std::sync::atomic::Ordering::SeqCst) > 0, "the outage was seen");
    let ids = stored_ids(&ingest, "gc-kill").await;
    let unique: HashSet<_> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "nothing stored twice");
    assert_eq!(unique, accepted, "every 2xx is in the stream, and nothing else");
    assert_eq!(ids.len(), total);
}
