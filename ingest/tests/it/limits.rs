//! Limits that hold whoever sends: oversized request headers (never a 503), a source's rate
//! limit spent only by verified requests, a global budget for buffered bodies, and a cached
//! readiness check.

use inlet_shared::signature::sign;

use crate::support::{TestIngest, now, spawn_ingest};

const SECRET: &str = "whsec_test_secret";
const REQUESTS: &str = "inlet_ingest_requests_total";

fn stripe_source(name: &str, extra: &str) -> String {
    format!("[[sources]]\nname = \"{name}\"\nkind = \"stripe\"\nsecrets = [\"{SECRET}\"]\n{extra}\n")
}

async fn outcome_count(ingest: &TestIngest, source: &str, outcome: &str) -> f64 {
    ingest.metric(REQUESTS, &[("source", source), ("outcome", outcome)]).await
}

#[tokio::test]
async fn a_signed_request_with_100_kib_of_headers_is_431_nothing_is_stored_and_ingest_stays_ready() {
    let ingest = spawn_ingest(&stripe_source("lim-headers", "")).await;
    let body = br#"{"id":"evt_big_headers","type":"charge.succeeded"}"#;
    let mut headers = sign::stripe(SECRET, now(), body);
    // 50 unsigned headers of 2 KiB each: within hyper's HTTP/1 limits (100 headers, ~400 KiB),
    // far beyond the 64 KiB of headers JetStream stores with a message.
    for n in 0..50 {
        headers.push((format!("x-padding-{n}"), "p".repeat(2048)));
    }
    for attempt in 0..3 {
        let response = ingest.post("lim-headers", &headers, body).await;
        assert_eq!(response.status(), 431, "attempt {attempt}: a retry can never succeed, so never a 503");
        assert!(response.headers().get("retry-after").is_none());
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["error"], "headers_too_large");
    }
    assert_eq!(ingest.stream_messages().await, 0);
    assert_eq!(outcome_count(&ingest, "lim-headers", "headers_too_large").await, 3.0);
    let ready = ingest.client.get(ingest.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "NATS is healthy: readiness must not say otherwise");
    assert_eq!(ingest.metric("inlet_ingest_store_available", &[("stream", crate::support::STREAM)]).await, 1.0);
    // The same event with ordinary headers is stored.
    let response = ingest.post("lim-headers", &sign::stripe(SECRET, now(), body), body).await;
    assert_eq!(response.status(), 202);
    assert_eq!(ingest.stream_messages().await, 1);
}

#[tokio::test]
async fn a_message_jetstream_can_never_store_is_a_4xx_not_a_503() {
    let ingest = spawn_ingest(&stripe_source("lim-permanent", "")).await;
    // The stream refuses messages over 2,000 bytes (10054), set out of band, below the body
    // limit ingest enforces itself.
    let js = ingest.jetstream().await;
    let mut stream = js.get_stream(crate::support::STREAM).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = 2_000;
    js.update_stream(config).await.unwrap();

    let body = format!("{{\"id\":\"evt_never_fits\",\"pad\":\"{}\"}}", "x".repeat(4_000));
    for attempt in 0..3 {
        let response =
            ingest.post("lim-permanent", &sign::stripe(SECRET, now(), body.as_bytes()), body.as_bytes()).await;
        assert_eq!(response.status(), 413, "attempt {attempt}: permanent, so never a 503");
        assert!(response.headers().get("retry-after").is_none());
    }
    let ready = ingest.client.get(ingest.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "a refused message says nothing about the store");
    let small = br#"{"id":"evt_fits"}"#;
    assert_eq!(ingest.post("lim-permanent", &sign::stripe(SECRET, now(), small), small).await.status(), 202);
    assert_eq!(ingest.stream_messages().await, 1);
}

#[tokio::test]
async fn unsigned_junk_cannot_spend_a_sources_rate_limit() {
    let ingest = spawn_ingest(&format!(
        "failure_rate_limit = {{ per_second = 1, burst = 5 }}\n{}",
        stripe_source("lim-junk", "rate_limit = { per_second = 1, burst = 2 }")
    ))
    .await;
    // A flood of unsigned and wrongly signed requests, all at once.
    let junk = br#"{"id":"evt_junk"}"#;
    let wrong = sign::stripe("whsec_not_the_secret", now(), junk);
    let flood = (0..60).map(|n| {
        let headers = if n % 2 == 0 { Vec::new() } else { wrong.clone() };
        let ingest = &ingest;
        async move {
            let response = ingest.post("lim-junk", &headers, junk).await;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let json: serde_json::Value = response.json().await.unwrap();
            (status, retry_after, json["error"].as_str().unwrap_or_default().to_owned())
        }
    });
    let answers = futures::future::join_all(flood).await;
    let refused = answers.iter().filter(|(status, _, _)| *status == 401).count();
    let limited: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
    assert_eq!(refused + limited.len(), 60, "{answers:?}");
    // The failure limit's burst of 5 (plus at most a token or two refilled meanwhile) is 401;
    // beyond it the junk gets 429 from the failure limit, not from the source's rate limit.
    assert!((5..=8).contains(&refused), "{refused} answered 401: {answers:?}");
    assert!(limited.iter().all(|(_, retry_after, error)| *retry_after && error == "too_many_failures"), "{limited:?}");

    // Genuine webhooks get through: the source's rate limit (burst 2) is untouched by the junk.
    for n in 0..2 {
        let body = format!("{{\"id\":\"evt_genuine_{n}\"}}");
        let response = ingest.post("lim-junk", &sign::stripe(SECRET, now(), body.as_bytes()), body.as_bytes()).await;
        assert_eq!(response.status(), 202, "genuine request {n}");
    }
    // ... and the rate limit still holds for verified requests.
    let body = br#"{"id":"evt_genuine_2"}"#;
    let response = ingest.post("lim-junk", &sign::stripe(SECRET, now(), body), body).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "rate_limited");
    assert_eq!(ingest.stream_messages().await, 2);
    assert_eq!(outcome_count(&ingest, "lim-junk", "rate_limited").await, 1.0);
    assert_eq!(outcome_count(&ingest, "lim-junk", "too_many_failures").await, limited.len() as f64);
    // Every failure is still counted by its reason, limited or not.
    let missing = ingest
        .metric("inlet_ingest_signature_failures_total", &[("source", "lim-junk"), ("reason", "missing_header")])
        .await;
    let mismatch =
        ingest.metric("inlet_ingest_signature_failures_total", &[("source", "lim-junk"), ("reason", "mismatch")]).await;
    assert_eq!(missing + mismatch, 60.0);
}

/// Stream info requests the nats-server has answered (its JetStream API total, from `/jsz`).
async fn jetstream_api_requests(monitoring_url: &str) -> u64 {
    let jsz: serde_json::Value = reqwest::get(format!("{monitoring_url}/jsz")).await.unwrap().json().await.unwrap();
    jsz["api"]["total"].as_u64().unwrap_or_else(|| panic!("no api.total in /jsz: {jsz}"))
}

#[tokio::test]
async fn readiness_asks_nats_at_most_about_once_a_second_however_often_it_is_called() {
    let nats = inlet_shared::test_util::TestNats::start_with_config(Some("http: \"127.0.0.1:-1\"\n"));
    let monitoring = nats.monitoring_url().expect("monitoring port");
    let config = crate::support::test_config(&nats, &stripe_source("lim-readyz", ""), &[]);
    let ingest = crate::support::start(config, nats).await;

    let before = jetstream_api_requests(&monitoring).await;
    let started = std::time::Instant::now();
    // Concurrent callers, then a sequential run: all share the cached answer.
    let concurrent =
        (0..200).map(|_| async { ingest.client.get(ingest.url("/readyz")).send().await.unwrap().status() });
    let statuses = futures::future::join_all(concurrent).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    for _ in 0..300 {
        assert_eq!(ingest.client.get(ingest.url("/readyz")).send().await.unwrap().status(), 200);
    }
    let elapsed = started.elapsed();
    let asked = jetstream_api_requests(&monitoring).await - before;
    // One request per second of the run, plus the one in flight when it began and the end.
    let bound = elapsed.as_secs() + 2;
    assert!(asked <= bound, "{asked} JetStream API requests for 500 /readyz calls in {elapsed:?} (bound {bound})");
}

/// A few h2c connections multiplexing many ~1 MB webhooks, each sending all but its last byte and
/// then stalling: the bodies held at once are bounded by `ingest.max_buffered_body_bytes`, not by
/// streams × body limit. Those beyond the budget get 503 `busy` with `Retry-After` at once
/// (their bodies unread), the process's memory stays near the budget, and once the stalled
/// ones time out (408) genuine webhooks are accepted.
#[tokio::test]
async fn many_large_bodies_over_http2_connections_are_bounded_by_the_body_budget() {
    use futures::StreamExt as _;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    const STREAMS: usize = 100;
    const BODY: usize = 1_000_000;
    const BUDGET: usize = 8 * BODY;
    let nats = inlet_shared::test_util::TestNats::start();
    let settings = format!("max_buffered_body_bytes = {BUDGET}\nbody_read_timeout = \"3s\"");
    let ingest = crate::connections::IngestProcess::start(&nats, &settings).await;
    assert_eq!(ingest.post_signed("evt_budget_warmup").await, 202);
    let rss_base = ingest.rss_kib();

    // Each connection may open `MAX_STREAMS_PER_CONNECTION` streams at once: use a few.
    let per_connection = inlet_shared::server::MAX_STREAMS_PER_CONNECTION as usize;
    let mut senders = Vec::new();
    for _ in 0..STREAMS.div_ceil(per_connection) {
        let tcp = tokio::net::TcpStream::connect(ingest.addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        senders.push(sender);
    }
    let requests = (0..STREAMS).map(|n| {
        let mut sender = senders[n / per_connection].clone();
        async move {
            // All but the last byte of the declared length, then nothing: held until the body
            // read timeout, as an attacker would.
            let sent = bytes::Bytes::from(vec![b'x'; BODY - 1]);
            let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(sent))])
                .chain(futures::stream::pending());
            let request = http::Request::post(format!("http://{}/webhooks/idle", ingest.addr))
                .header("content-type", "application/json")
                .header("content-length", BODY)
                .header("stripe-signature", format!("t={},v1={}", now(), "0".repeat(64)))
                .body(StreamBody::new(frames))
                .unwrap();
            let response = sender.send_request(request).await.unwrap_or_else(|e| panic!("stream {n}: {e}"));
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, retry_after, json["error"].as_str().unwrap_or_default().to_owned())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let rss_after = ingest.rss_kib();
    let timed_out = answers.iter().filter(|(status, _, _)| *status == 408).count();
    let busy: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 503).collect();
    eprintln!(
        "{STREAMS} stalled streams of {BODY} bytes on h2c connections, budget {BUDGET}: {timed_out} read until \
         the timeout, {} busy; VmRSS {rss_base} KiB before, {rss_after} KiB after",
        busy.len()
    );
    assert_eq!(timed_out + busy.len(), STREAMS, "{answers:?}\n{}", ingest.log());
    assert!(timed_out <= BUDGET / BODY, "{timed_out} bodies were read at once, more than the budget holds");
    assert!(busy.iter().all(|(_, retry_after, error)| *retry_after && error == "busy"), "{busy:?}");
    // Unbounded, every stream's body is held at once: ~STREAMS × BODY (150 streams took
    // 31 → 187 MiB, never returned). Bounded: a few times the budget (each body's buffer,
    // hyper's, allocator slack), whatever the number of streams.
    let grown_kib = rss_after.saturating_sub(rss_base);
    let bound_kib = (4 * BUDGET / 1024) as u64;
    assert!(grown_kib <= bound_kib, "VmRSS grew {grown_kib} KiB; the bound is 4 × the budget ({bound_kib} KiB)");

    // The budget is returned: genuine webhooks are accepted afterwards.
    for n in 0..3 {
        assert_eq!(ingest.post_signed(&format!("evt_budget_after_{n}")).await, 202);
    }
}
