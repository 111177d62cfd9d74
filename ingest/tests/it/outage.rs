//! NATS down: 503 with Retry-After and no 2xx; NATS back: the sender's retry succeeds and is
//! stored once. Graceful shutdown lets in-flight requests finish.

use std::time::Duration;

use inlet_shared::signature::sign;

use crate::support::{now, spawn_ingest};

const SOURCE: &str = "[[sources]]\nname = \"outage\"\nkind = \"github\"\nsecrets = [\"s3cr3t\"]\n";

#[tokio::test]
async fn nats_down_means_503_and_the_retry_after_restart_is_stored_once() {
    let mut ingest = spawn_ingest(SOURCE).await;
    let body = br#"{"action":"opened"}"#;
    let headers = sign::github("s3cr3t", "delivery-1", "issues", body);
    assert_eq!(ingest.post("outage", &headers, body).await.status(), 202);

    ingest.nats.kill();
    // Another event (GitHub events are told apart by their body: the delivery id is not signed).
    let body = br#"{"action":"closed"}"#;
    let second = sign::github("s3cr3t", "delivery-2", "issues", body);
    let response = ingest.post("outage", &second, body).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let readiness = ingest.client.get(ingest.url("/readyz")).send().await.unwrap();
    assert_eq!(readiness.status(), 503);
    // Liveness is about the process, not the broker.
    assert_eq!(ingest.client.get(ingest.url("/healthz")).send().await.unwrap().status(), 200);

    ingest.nats.restart();
    ingest.wait_ready().await;
    // The provider retries the same delivery: accepted now, and stored exactly once.
    let retried = ingest.post("outage", &second, body).await;
    assert!(retried.status() == 202 || retried.status() == 200, "got {}", retried.status());
    let again = ingest.post("outage", &second, body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(ingest.stream_messages().await, 2);
    assert!(
        ingest.metric("inlet_ingest_requests_total", &[("source", "outage"), ("outcome", "unavailable")]).await >= 1.0
    );
}

#[tokio::test]
async fn graceful_shutdown_completes_in_flight_requests() {
    let mut ingest = spawn_ingest(SOURCE).await;
    let body = br#"{"action":"closed"}"#;
    let headers = sign::github("s3cr3t", "delivery-slow", "issues", body);
    // Start a request whose body arrives slowly, then shut down while it is in flight.
    let (sender, receiver) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let mut request = ingest.client.post(ingest.url("/webhooks/outage")).header("content-length", body.len());
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let in_flight = tokio::spawn(request.body(reqwest::Body::wrap_stream(receiver)).send());
    let mut sender = sender;
    use futures::SinkExt;
    sender.send(Ok(body[..5].to_vec())).await.unwrap();
    // Wait until the server counts the request as in flight, then stop it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ingest.metric("inlet_ingest_requests_in_flight", &[]).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "request never became in-flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = {
        let shutdown_done = ingest.stop();
        tokio::pin!(shutdown_done);
        // Finish the body while shutdown is waiting for the request.
        tokio::select! {
            result = &mut shutdown_done => panic!("shutdown finished before the in-flight request: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        sender.send(Ok(body[5..].to_vec())).await.unwrap();
        drop(sender);
        shutdown_done.await
    };
    stopping.unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 202, "the in-flight request completed with its PubAck");
    assert_eq!(ingest.stream_messages().await, 1);
    let _ = now();
}
