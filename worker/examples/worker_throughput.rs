//! Measures the worker alone: N events already in the intake stream (as ingest would have
//! published them), a loopback destination answering 200 at once, and the time until every
//! event is recorded in SQLite and delivered. Prints one JSON line.
//!
//! `cargo run --release -p inlet-worker --example worker_throughput -- [events] [full|normal]`
//! (`WT_LOG=1`: with the worker's log on stderr). Besides events/s it prints the CPU time this
//! process used per event (the worker, the loopback destination and this loop; not
//! nats-server), which a busy machine disturbs far less than the rates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use inlet_shared::envelope;
use inlet_shared::test_util::TestNats;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

// The same allocator as the inlet-worker binary, so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let synchronous = args.get(2).cloned().unwrap_or_else(|| "full".into());

    let delivered = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = listener.local_addr().unwrap();
    let counter = Arc::clone(&delivered);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let counter = Arc::clone(&counter);
                    async move {
                        let _ = request.into_body().collect().await;
                        counter.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[nats]
url = "{}"
[worker]
database = "{}"
batch_size = 512
delivery_concurrency = 256
max_ack_pending = 20000
sqlite_synchronous = "{synchronous}"
[[sources]]
name = "gh"
kind = "github"
secrets = ["x"]
[[destinations]]
name = "sink"
url = "http://{sink}/hook"
signing_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
[[routes]]
source = "gh"
destinations = ["sink"]
"#,
        nats.url(),
        dir.path().join("inlet.db").display()
    );
    let config = inlet_shared::config::Config::parse(&text, &BTreeMap::new()).unwrap();
    if std::env::var_os("WT_LOG").is_some() {
        inlet_shared::telemetry::init(&config.telemetry).unwrap();
    }

    // Fill the intake stream first, so the measurement is the worker's alone.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    inlet_shared::nats::ensure_stream(&js, &config.stream, Duration::from_secs(10)).await.unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut acks = Vec::with_capacity(1024);
    for n in 0..events {
        // The envelope exactly as ingest writes it (a hand-made header set went stale once).
        let envelope = envelope::Envelope {
            source: "gh".into(),
            event_id: format!("evt-{n}"),
            id_origin: inlet_shared::signature::IdOrigin::Provider,
            provider_event_id: None,
            event_type: Some("push".into()),
            received_at_ms: u64::try_from(store_now()).unwrap(),
            scheme: inlet_shared::signature::SchemeKind::Github,
            secret_index: 0,
            content_type: Some("application/json".into()),
            original_headers: None,
            traceparent: None,
            body: None,
        };
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in envelope.to_headers() {
            headers.insert(name, value.as_ref());
        }
        acks.push(js.publish_with_headers("inlet.events.gh", headers, body.clone()).await.unwrap());
        if acks.len() == 1024 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await.unwrap();
    }

    let shutdown = CancellationToken::new();
    let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let worker = tokio::spawn(inlet_worker::run(config, inlet_worker::Listeners { main, admin }, shutdown.clone()));
    let database = dir.path().join("inlet.db");
    let mut recorded_at = None;
    loop {
        if recorded_at.is_none()
            && let Ok(connection) = rusqlite::Connection::open(&database)
            // max(id), not count(*): a count scans the table and would slow the worker it measures.
            && connection.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get::<_, i64>(0)).unwrap_or(0)
                >= events as i64
        {
            recorded_at = Some(started.elapsed());
        }
        if delivered.load(Ordering::Relaxed) >= events {
            break;
        }
        if worker.is_finished() {
            panic!("the worker stopped: {:?}", worker.await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered_in = started.elapsed();
    let cpu_used = process_cpu_seconds() - cpu_before;
    // SQLite's search index follows recording (the writer indexes between its groups): the CPU
    // until it has caught up as well, so that work deferred is not work left out.
    let indexed_in = wait_until_indexed(&database, started);
    let cpu_with_index = process_cpu_seconds() - cpu_before;
    // Where the time went, from the worker's own histograms.
    let metrics = reqwest::get(format!("http://{admin_addr}/metrics")).await.unwrap().text().await.unwrap();
    let summary: Vec<&str> = metrics
        .lines()
        .filter(|l| (l.contains("_sum") || l.contains("_count")) && (l.contains("db_") || l.contains("record_batch")))
        .collect();
    eprintln!("{}", summary.join("\n"));
    let recorded_in = recorded_at.unwrap_or(delivered_in);
    shutdown.cancel();
    let _ = worker.await;
    println!(
        "{}",
        serde_json::json!({
            "events": events,
            "sqlite_synchronous": synchronous,
            "recorded_per_s": (events as f64 / recorded_in.as_secs_f64()).round(),
            "delivered_per_s": (events as f64 / delivered_in.as_secs_f64()).round(),
            "recorded_in_s": recorded_in.as_secs_f64(),
            "delivered_in_s": delivered_in.as_secs_f64(),
            "destination_requests": delivered.load(Ordering::Relaxed),
            // This process: the worker, the loopback destination and this loop (not nats-server).
            "cpu_us_per_event": (cpu_used * 1e6 / events as f64).round(),
            "indexed_in_s": indexed_in.as_secs_f64(),
            "cpu_us_per_event_until_indexed": (cpu_with_index * 1e6 / events as f64).round(),
        })
    );
}

/// Waits until the search index holds every recorded event; returns when, since `started`.
fn wait_until_indexed(database: &std::path::Path, started: Instant) -> Duration {
    let connection = rusqlite::Connection::open(database).unwrap();
    // The progress table's name changed with schema version 19 (this example also measures
    // older trees side by side).
    let progress = ["event_text_fts_progress", "event_search_fts_progress"]
        .into_iter()
        .find(|table| {
            connection
                .query_row("SELECT count(*) FROM sqlite_master WHERE name = ?1", [table], |r| r.get::<_, i64>(0))
                .unwrap()
                == 1
        })
        .unwrap();
    let caught_up = format!("SELECT (SELECT indexed_through FROM {progress}) >= (SELECT max(id) FROM events)");
    loop {
        if connection.query_row(&caught_up, [], |r| r.get::<_, bool>(0)).unwrap() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// User + system CPU time of this process so far (all threads), from /proc/self/stat (in clock
/// ticks, 100 per second on Linux's usual configuration).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn store_now() -> i64 {
    inlet_worker::model::UnixMs::now().0
}
