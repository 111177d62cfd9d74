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
        // The limit named is the one in effect (the stream's, less the message's headers), not
        // the source's 1,000,000 bytes.
        let answer: serde_json::Value = response.json().await.unwrap();
        let named: usize = answer["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("body exceeds "))
            .and_then(|m| m.strip_suffix(" bytes"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(named < 2_000 && named < body.len(), "{answer}");
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

/// Eight h2c connections, each with its 32 streams (`MAX_STREAMS_PER_CONNECTION`) open on
/// webhooks declaring 1 MB: half send nothing at all, half send all but the last byte; then all
/// stall, as an attacker who knows only a source's name would. The bodies held at once are
/// bounded by `ingest.max_buffered_body_bytes`, not by streams × body limit: a stream reserves
/// only what has arrived, so the silent ones hold nothing, and the sending ones beyond the budget
/// get 503 `busy` with `Retry-After` as soon as a part of their body finds no room (the rest
/// unread); the process's memory stays near the budget. And *while* all of them are held,
/// genuine small webhooks are accepted: large bodies may not use the slice of the budget kept
/// for small ones. (Before, the declared length was reserved up front: the silent streams alone
/// filled the budget and every webhook was refused `busy` until they timed out.)
#[tokio::test]
async fn many_large_bodies_over_http2_connections_are_bounded_by_the_body_budget() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use futures::StreamExt as _;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    const CONNECTIONS: usize = 8;
    const BODY: usize = 1_000_000;
    const BUDGET: usize = 8 * BODY;
    const GENUINE: usize = 20;
    // Long enough that the stall is still held while the genuine webhooks are sent.
    const READ_TIMEOUT: Duration = Duration::from_secs(10);
    let nats = inlet_shared::test_util::TestNats::start();
    let settings = format!("max_buffered_body_bytes = {BUDGET}\nbody_read_timeout = \"{}s\"", READ_TIMEOUT.as_secs());
    let ingest = Arc::new(crate::connections::IngestProcess::start(&nats, &settings).await);
    assert_eq!(ingest.post_signed("evt_budget_warmup").await, 202);
    let rss_base = ingest.rss_kib();

    let per_connection = inlet_shared::server::MAX_STREAMS_PER_CONNECTION as usize;
    let streams = CONNECTIONS * per_connection;
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = tokio::net::TcpStream::connect(ingest.addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        senders.push(sender);
    }
    let answered_sending = Arc::new(AtomicUsize::new(0));
    let answered_silent = Arc::new(AtomicUsize::new(0));
    let sent = bytes::Bytes::from(vec![b'x'; BODY - 1]);
    let started = Instant::now();
    let requests: Vec<_> = (0..streams)
        .map(|n| {
            let mut sender = senders[n / per_connection].clone();
            // Every other stream on each connection sends nothing; the others all but the last
            // byte of the declared length. Then nothing: held until the body read timeout.
            let silent = n % 2 == 0;
            let answered = Arc::clone(if silent { &answered_silent } else { &answered_sending });
            let first = (!silent).then(|| Ok::<_, std::convert::Infallible>(Frame::data(sent.clone())));
            let addr = ingest.addr;
            tokio::spawn(async move {
                let frames = futures::stream::iter(first).chain(futures::stream::pending());
                let request = http::Request::post(format!("http://{addr}/webhooks/idle"))
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
                answered.fetch_add(1, Ordering::SeqCst);
                (silent, status, retry_after, json["error"].as_str().unwrap_or_default().to_owned())
            })
        })
        .collect();

    // The stall is in place once the sending streams the budget has no room for have been
    // refused: at most a budget's worth of them is left, and no answer came for a second.
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answered = answered_sending.load(Ordering::SeqCst);
        if answered != last.0 {
            last = (answered, Instant::now());
        } else if answered >= streams / 2 - BUDGET / BODY && last.1.elapsed() >= Duration::from_secs(1) {
            break;
        }
        assert!(started.elapsed() < READ_TIMEOUT / 2, "the stall never settled: {answered} sending streams answered");
    }
    let rss_stalled = ingest.rss_kib();

    // Genuine small webhooks, all at once, while every stalled stream is still held.
    let genuine = (0..GENUINE).map(|n| {
        let ingest = Arc::clone(&ingest);
        async move { ingest.post_signed(&format!("evt_budget_during_{n}")).await }
    });
    let statuses = futures::future::join_all(genuine).await;
    let genuine_done = started.elapsed();
    assert!(
        statuses.iter().all(|status| *status == 202),
        "genuine webhooks during the stall (after {genuine_done:?}): {statuses:?}\n{}",
        ingest.log()
    );
    // No stalled stream can have timed out yet: they were all still held.
    assert!(genuine_done < READ_TIMEOUT, "the genuine webhooks took until {genuine_done:?}, past the stall");
    assert_eq!(answered_silent.load(Ordering::SeqCst), 0, "silent streams hold nothing, so none is refused");

    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    let rss_after = ingest.rss_kib();
    let (silent, sending): (Vec<_>, Vec<_>) = answers.into_iter().partition(|(silent, ..)| *silent);
    assert!(silent.iter().all(|(_, status, ..)| *status == 408), "silent streams reserve nothing: {silent:?}");
    let timed_out = sending.iter().filter(|(_, status, ..)| *status == 408).count();
    let busy: Vec<_> = sending.iter().filter(|(_, status, ..)| *status == 503).collect();
    eprintln!(
        "{streams} stalled streams declaring {BODY} bytes on {CONNECTIONS} h2c connections (half silent), budget \
         {BUDGET}: {timed_out} sending streams read until the timeout, {} busy; {GENUINE} genuine webhooks \
         answered {genuine_done:?} in; VmRSS {rss_base} KiB before, {rss_stalled} KiB stalled, {rss_after} KiB after",
        busy.len()
    );
    assert_eq!(timed_out + busy.len(), sending.len(), "{sending:?}\n{}", ingest.log());
    // An eighth of the budget (here one body's worth) is kept for small bodies: the large ones
    // can hold only the rest. And the stall did hold it: some bodies were read in full, the
    // others refused.
    let shared = BUDGET - BUDGET / 8;
    assert!(timed_out <= shared / BODY, "{timed_out} bodies were read at once, more than the budget holds for them");
    assert!(timed_out >= 1 && !busy.is_empty(), "the stall never filled the budget: {sending:?}");
    assert!(busy.iter().all(|(_, _, retry_after, error)| *retry_after && error == "busy"), "{busy:?}");
    // Unbounded, every stream's body is held at once: ~streams × BODY (150 streams took
    // 31 → 187 MiB, never returned). Bounded: a few times the budget (each body's buffer,
    // hyper's, allocator slack), whatever the number of streams.
    let grown_kib = rss_stalled.max(rss_after).saturating_sub(rss_base);
    let bound_kib = (4 * BUDGET / 1024) as u64;
    assert!(grown_kib <= bound_kib, "VmRSS grew {grown_kib} KiB; the bound is 4 × the budget ({bound_kib} KiB)");

    // The budget is returned: genuine webhooks are still accepted afterwards.
    for n in 0..3 {
        assert_eq!(ingest.post_signed(&format!("evt_budget_after_{n}")).await, 202);
    }
}
