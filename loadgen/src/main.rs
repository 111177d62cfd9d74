//! `inlet-loadgen`: the project's own load tools, for `scripts/bench` and the fault scripts.
//!
//! - `send`: pre-signed webhooks (stripe, standard, github) with unique event ids over
//!   keep-alive connections at concurrency C, for N requests or a duration, with an optional
//!   duplicate ratio and body size; can retry 5xx and connection errors like a provider does.
//!   Prints one JSON line: sent, 2xx, status histogram, errors, requests/s, latency
//!   p50/p90/p99/max (HDR histogram).
//! - `bare`: a bare hyper server that reads the body and answers 202 (the machine's HTTP
//!   ceiling, to compare ingest against).
//! - `sink`: a destination that answers 200 and counts deliveries by `Idempotency-Key`, with
//!   receipt-to-delivery latency from `Inlet-Received-At`; `GET /stats` returns JSON, `GET /keys`
//!   every key answered 2xx (with its count) and the poison and late keys. Optional pathologies
//!   (`scripts/soak`): periodic outage (503), random 429 with `Retry-After`, poison deliveries
//!   (always 500), a slow answer, a late first answer. Per-key choices hash the key, so a
//!   delivery behaves the same on every attempt and in every run.
//! - `commit`: atomic batches of N envelope-shaped messages straight into JetStream, one batch
//!   in flight, no HTTP: what the broker alone commits on this machine, the bound on ingest's
//!   group commit (`scripts/bench --only commit`).
//!
//! It is a command-line tool: it prints its results on stdout by design.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use inlet_shared::envelope;
use inlet_shared::signature::sign;
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about = "Inlet's load generator, ceiling server and counting sink")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send signed webhooks.
    Send(SendArgs),
    /// Bare hyper server answering 202 (HTTP ceiling).
    Bare {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Counting destination, optionally with pathologies (without flags: always 200).
    Sink(SinkArgs),
    /// Atomic batch commits straight into JetStream (no HTTP).
    Commit(CommitArgs),
}

#[derive(clap::Args, Clone)]
struct CommitArgs {
    /// NATS server URL.
    #[arg(long)]
    nats: String,
    /// Messages per atomic batch (at most 1000).
    #[arg(long)]
    batch: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

#[derive(clap::Args, Clone)]
struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Outage period in seconds: answers 503 during the first --outage-for seconds of every
    /// period, counted from the sink's start.
    #[arg(long, requires = "outage_for")]
    outage_every: Option<f64>,
    /// Outage length in seconds within each --outage-every period.
    #[arg(long, requires = "outage_every")]
    outage_for: Option<f64>,
    /// Fraction of requests (random, not per key) answered 429 with `Retry-After`.
    #[arg(long, default_value_t = 0.0)]
    throttle_ratio: f64,
    /// The `Retry-After` of a 429, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Fraction of deliveries (per key) that always answer 500.
    #[arg(long, default_value_t = 0.0)]
    poison_ratio: f64,
    /// Every answer is delayed this long (a slow destination).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Fraction of deliveries (per key) whose first request is answered 200 only after
    /// --late-ms (past the sender's timeout: the 200 is late, the sender retries).
    #[arg(long, default_value_t = 0.0)]
    late_ratio: f64,
    /// How late a late first answer is, in milliseconds.
    #[arg(long, default_value_t = 0)]
    late_ms: u64,
}

impl SinkArgs {
    fn faults(&self) -> anyhow::Result<Faults> {
        for (name, ratio) in [
            ("--throttle-ratio", self.throttle_ratio),
            ("--poison-ratio", self.poison_ratio),
            ("--late-ratio", self.late_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                bail!("{name} must be in [0, 1]");
            }
        }
        let outage = match (self.outage_every, self.outage_for) {
            (Some(every), Some(length)) => {
                if !(every.is_finite() && every > 0.0 && (0.0..=every).contains(&length)) {
                    bail!("--outage-every must be > 0 and --outage-for within [0, --outage-every]");
                }
                Some((Duration::from_secs_f64(every), Duration::from_secs_f64(length)))
            }
            _ => None,
        };
        Ok(Faults {
            outage,
            throttle_ratio: self.throttle_ratio,
            retry_after: self.retry_after,
            poison_ratio: self.poison_ratio,
            delay: Duration::from_millis(self.delay_ms),
            late_ratio: self.late_ratio,
            late: Duration::from_millis(self.late_ms),
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Scheme {
    Stripe,
    Standard,
    Github,
}

#[derive(clap::Args, Clone)]
struct SendArgs {
    /// Full URL, e.g. http://127.0.0.1:8080/webhooks/stripe.
    #[arg(long)]
    url: String,
    /// Signature scheme.
    #[arg(long, value_enum)]
    scheme: Scheme,
    /// Signing secret (as configured for the source).
    #[arg(long)]
    secret: String,
    /// Number of requests (ignored with --duration).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Run for this many seconds instead of a fixed count.
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Fraction of requests that repeat an earlier event (same id and body).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Event id prefix (unique per run by default).
    #[arg(long)]
    id_prefix: Option<String>,
    /// Retry 5xx, 429 and connection errors like a provider (up to this many attempts).
    #[arg(long, default_value_t = 1)]
    attempts: u32,
    /// Write the event ids answered 2xx to this file, one per line.
    #[arg(long)]
    accepted_ids: Option<PathBuf>,
    /// Offered rate in requests per second across all connections (open loop); unlimited when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Give event `i` the object id `obj_<i mod keys>` at `/data/object/id` (a Stripe-like ordering
    /// key, for routes with `ordering_key`); none when absent.
    #[arg(long)]
    keys: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Send(args) => send(args).await,
        Command::Bare { listen } => serve(listen, Arc::new(Sink::new(Faults::default())?), false).await,
        Command::Sink(args) => serve(args.listen, Arc::new(Sink::new(args.faults()?)?), true).await,
        Command::Commit(args) => commit(args).await,
    }
}

/// Commits batches of `args.batch` 1 KiB messages into a fresh stream `LOADGEN_COMMIT` for
/// `args.duration` seconds, one batch in flight, checking every commit reply; prints one JSON line.
async fn commit(args: CommitArgs) -> anyhow::Result<()> {
    use async_nats::jetstream::stream;
    if !(2..=1000).contains(&args.batch) {
        bail!("--batch must be 2..=1000");
    }
    let client = async_nats::connect(&args.nats).await.context("connect")?;
    let js = async_nats::jetstream::new(client.clone());
    let _ = js.delete_stream("LOADGEN_COMMIT").await;
    js.create_stream(stream::Config {
        name: "LOADGEN_COMMIT".into(),
        subjects: vec!["loadgen.commit.>".into()],
        storage: stream::StorageType::File,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .context("create stream LOADGEN_COMMIT")?;
    let payload = Bytes::from(vec![b'x'; 1024]);
    // The header set ingest publishes for a Stripe webhook (see `nats_headers` in ingest).
    let fixed_headers = [
        (envelope::HEADER_VERSION, envelope::ENVELOPE_VERSION),
        (envelope::HEADER_SOURCE, "stripe"),
        (envelope::HEADER_ID_ORIGIN, "provider"),
        (envelope::HEADER_EVENT_TYPE, "bench.event"),
        (envelope::HEADER_SCHEME, "stripe"),
        (envelope::HEADER_SECRET_INDEX, "0"),
        (envelope::HEADER_CONTENT_TYPE, "application/json"),
        (envelope::HEADER_ORIGINAL_HEADERS, r#"[["host","127.0.0.1:40000"],["content-type","application/json"]]"#),
    ];
    let run = unix_now();
    let (mut messages, mut commits, mut committing) = (0_u64, 0_u64, Duration::ZERO);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    while Instant::now() < end {
        let batch_id = format!("lg{run}x{commits}");
        let batch_started = Instant::now();
        for index in 1..=args.batch {
            let mut headers = async_nats::HeaderMap::new();
            let event_id = format!("evt_{run}_{commits}_{index}");
            headers.insert(envelope::HEADER_MSG_ID, envelope::message_id("stripe", &event_id).as_str());
            headers.insert(envelope::HEADER_EVENT_ID, event_id.as_str());
            headers.insert(envelope::HEADER_RECEIVED_AT, (unix_now() * 1000).to_string().as_str());
            for (name, value) in fixed_headers {
                headers.insert(name, value);
            }
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", index.to_string().as_str());
            if index < args.batch {
                client.publish_with_headers("loadgen.commit.stripe", headers, payload.clone()).await?;
                continue;
            }
            headers.insert("Nats-Batch-Commit", "1");
            let reply = client.request_with_headers("loadgen.commit.stripe", headers, payload.clone()).await?;
            let answer: serde_json::Value = serde_json::from_slice(&reply.payload).context("commit reply")?;
            if answer.get("count").and_then(serde_json::Value::as_u64) != Some(args.batch as u64) {
                bail!("commit not acknowledged whole: {answer}");
            }
        }
        committing += batch_started.elapsed();
        commits += 1;
        messages += args.batch as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "batch": args.batch,
        "commits": commits,
        "messages_per_s": (messages as f64 / elapsed).round(),
        "ms_per_commit": (committing.as_secs_f64() * 1e3 / commits.max(1) as f64 * 100.0).round() / 100.0,
    });
    println!("{report}");
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// One prepared request.
struct Prepared {
    event_id: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

fn prepare(args: &SendArgs, prefix: &str, index: usize) -> Prepared {
    // Duplicates repeat an earlier event exactly (same id, body and signature), as a provider's
    // retry of a delivery it thinks failed.
    let source_index = if args.duplicates > 0.0 && index > 0 {
        let before = (index as f64 * args.duplicates).floor();
        let after = ((index + 1) as f64 * args.duplicates).floor();
        if after > before { index / 2 } else { index }
    } else {
        index
    };
    let event_id = format!("{prefix}-{source_index}");
    let object = match args.keys {
        Some(keys) => format!("\"data\":{{\"object\":{{\"id\":\"obj_{}\"}}}},", source_index % keys.max(1)),
        None => String::new(),
    };
    let head = format!("{{\"id\":\"{event_id}\",\"type\":\"bench.event\",{object}\"pad\":\"");
    let tail = "\"}";
    let pad = args.body_size.saturating_sub(head.len() + tail.len());
    let mut body = String::with_capacity(args.body_size);
    body.push_str(&head);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str(tail);
    let body = Bytes::from(body);
    let now = unix_now();
    let headers = match args.scheme {
        Scheme::Stripe => sign::stripe(&args.secret, now, &body),
        Scheme::Standard => sign::standard(&args.secret, &event_id, now, &body),
        Scheme::Github => sign::github(&args.secret, &event_id, "push", &body),
    };
    Prepared { event_id, headers, body }
}

#[derive(Default)]
struct Totals {
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    attempts: u64,
    finished: u64,
    ok: u64,
    accepted_ids: Vec<String>,
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let uri: http::Uri = args.url.parse().context("--url")?;
    let authority = uri.authority().context("--url needs host:port")?.as_str().to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let prefix = args.id_prefix.clone().unwrap_or_else(|| {
        format!("ld{}", SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0))
    });
    if !(0.0..1.0).contains(&args.duplicates) {
        bail!("--duplicates must be in [0, 1)");
    }

    // Pre-sign a fixed count; a timed run signs on the fly (a signature is microseconds).
    let prepared: Option<Arc<Vec<Prepared>>> =
        args.duration.is_none().then(|| Arc::new((0..args.requests).map(|i| prepare(&args, &prefix, i)).collect()));
    let deadline = args.duration.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let next = Arc::new(AtomicUsize::new(0));
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let started = Instant::now();

    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let (args, prefix, authority, path) = (args.clone(), prefix.clone(), authority.clone(), path.clone());
        let (prepared, next, histogram, totals) =
            (prepared.clone(), Arc::clone(&next), Arc::clone(&histogram), Arc::clone(&totals));
        workers.push(tokio::spawn(async move {
            let mut connection: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            // Each connection sends every `concurrency / rate` seconds when a rate is set.
            let pace = args.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(args.concurrency as f64 / r));
            // Connections start spread over one pace period, so arrivals are even from the start
            // instead of one burst of `concurrency` requests.
            let mut next_send =
                started + pace.map_or(Duration::ZERO, |pace| pace.mul_f64(worker as f64 / args.concurrency as f64));
            loop {
                // Open loop: latency counts from when the request was due, so time spent queued
                // behind a slow answer on this connection is not left out (coordinated omission).
                let mut due = None;
                if let Some(pace) = pace {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(next_send)).await;
                    due = Some(next_send);
                    next_send += pace;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if let Some(deadline) = deadline {
                    if Instant::now() >= deadline {
                        break;
                    }
                } else if index >= args.requests {
                    break;
                }
                let owned;
                let request = match &prepared {
                    Some(all) => &all[index],
                    None => {
                        owned = prepare(&args, &prefix, index);
                        &owned
                    }
                };
                let mut final_status = None;
                for attempt in 0..args.attempts.max(1) {
                    if attempt > 0 {
                        // Provider-like backoff, bounded so runs stay short.
                        tokio::time::sleep(Duration::from_millis((50u64 << attempt.min(6)).min(2_000))).await;
                    }
                    let begun = if attempt == 0 { due.unwrap_or_else(Instant::now) } else { Instant::now() };
                    let status = post(&mut connection, &authority, &path, request).await;
                    let micros = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                    if let Some(local) = local.as_mut() {
                        // Saturating: a latency past the histogram's 60 s bound still counts (as 60 s).
                        local.saturating_record(micros);
                    }
                    let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                    totals.attempts += 1;
                    match status {
                        Some(code) => *totals.statuses.entry(code).or_insert(0) += 1,
                        None => totals.errors += 1,
                    }
                    drop(totals);
                    final_status = status;
                    let retryable = status.is_none_or(|code| code >= 500 || code == 429);
                    if !retryable {
                        break;
                    }
                }
                let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                totals.finished += 1;
                if final_status.is_some_and(|code| (200..300).contains(&code)) {
                    totals.ok += 1;
                    if args.accepted_ids.is_some() {
                        totals.accepted_ids.push(request.event_id.clone());
                    }
                }
            }
            if let Some(local) = local {
                let mut shared = histogram.lock().unwrap_or_else(|e| e.into_inner());
                let _ = shared.add(&local);
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
    let totals = totals.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = &args.accepted_ids {
        let mut file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        for id in &totals.accepted_ids {
            writeln!(file, "{id}")?;
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "mode": "send",
        "sent": totals.finished,
        "attempts": totals.attempts,
        "ok_2xx": totals.ok,
        "status": totals.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "errors": totals.errors,
        "duration_s": elapsed,
        "requests_per_s": (totals.attempts as f64 / elapsed).round(),
        "ok_per_s": (totals.ok as f64 / elapsed).round(),
        "latency_ms": {"p50": ms(0.50), "p90": ms(0.90), "p99": ms(0.99), "max": histogram.max() as f64 / 1000.0},
    });
    println!("{report}");
    Ok(())
}

/// Sends one request on the worker's keep-alive connection (reconnecting when needed).
/// Returns the status, or `None` on a connection-level failure.
async fn post(
    connection: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    authority: &str,
    path: &str,
    request: &Prepared,
) -> Option<u16> {
    if connection.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = TcpStream::connect(authority).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(driver);
        *connection = Some(sender);
    }
    let sender = connection.as_mut()?;
    sender.ready().await.ok()?;
    let mut builder =
        http::Request::post(path).header(http::header::HOST, authority).header("content-type", "application/json");
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let http_request = builder.body(Full::new(request.body.clone())).ok()?;
    match sender.send_request(http_request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            Some(status)
        }
        Err(_) => {
            *connection = None;
            None
        }
    }
}

/// The sink's pathologies; the default is none (every delivery answered 200 at once).
#[derive(Default)]
struct Faults {
    /// (period, outage length): 503 during the first `length` of every `period`.
    outage: Option<(Duration, Duration)>,
    throttle_ratio: f64,
    retry_after: u64,
    poison_ratio: f64,
    delay: Duration,
    late_ratio: f64,
    late: Duration,
}

/// What the sink saw of one `Idempotency-Key`.
#[derive(Default)]
struct KeyState {
    requests: u32,
    /// Requests answered 2xx.
    ok: u32,
    poison: bool,
    late: bool,
}

/// Counting state of `sink` (and `bare`, which only counts requests).
struct Sink {
    faults: Faults,
    started: Instant,
    /// splitmix64 state for the random (not per key) 429s.
    random: AtomicU64,
    received: AtomicU64,
    late_first: AtomicU64,
    keys: Mutex<HashMap<String, KeyState>>,
    statuses: Mutex<BTreeMap<u16, u64>>,
    latency: Mutex<Histogram<u64>>,
    first_at: Mutex<Option<Instant>>,
    last_at: Mutex<Option<Instant>>,
}

/// A fixed fraction in [0, 1) of `key`, the same in every process and run (`DefaultHasher::new`
/// has fixed keys); `salt` makes the poison and late choices independent of each other.
fn key_fraction(key: &str, salt: &str) -> f64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    salt.hash(&mut hasher);
    key.hash(&mut hasher);
    (hasher.finish() >> 11) as f64 / (1_u64 << 53) as f64
}

impl Sink {
    fn new(faults: Faults) -> anyhow::Result<Sink> {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        Ok(Sink {
            faults,
            started: Instant::now(),
            random: AtomicU64::new(seed),
            received: AtomicU64::new(0),
            late_first: AtomicU64::new(0),
            keys: Mutex::new(HashMap::new()),
            statuses: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histogram::new_with_bounds(1, 3_600_000, 3)?),
            first_at: Mutex::new(None),
            last_at: Mutex::new(None),
        })
    }

    /// A random fraction in [0, 1) (splitmix64).
    fn random_fraction(&self) -> f64 {
        let mut z = self.random.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1_u64 << 53) as f64
    }

    fn in_outage(&self) -> bool {
        self.faults.outage.is_some_and(|(period, length)| {
            let into = self.started.elapsed().as_nanos() % period.as_nanos().max(1);
            into < length.as_nanos()
        })
    }

    fn stats(&self) -> serde_json::Value {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let unique = keys.values().filter(|k| k.ok > 0).count() as u64;
        let duplicates: u64 = keys.values().map(|k| u64::from(k.ok.saturating_sub(1))).sum();
        let duplicate_keys = keys.values().filter(|k| k.ok > 1).count() as u64;
        let duplicate_keys_late = keys.values().filter(|k| k.ok > 1 && k.late).count() as u64;
        let poison = keys.values().filter(|k| k.poison).count() as u64;
        let seen = keys.len() as u64;
        drop(keys);
        let statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let status_counts: BTreeMap<String, u64> = statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        drop(statuses);
        let latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let first = *self.first_at.lock().unwrap_or_else(|e| e.into_inner());
        let last = *self.last_at.lock().unwrap_or_else(|e| e.into_inner());
        let span = match (first, last) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let received = self.received.load(Ordering::Relaxed);
        serde_json::json!({
            "received": received,
            "unique": unique,
            "duplicates": duplicates,
            "span_s": span,
            "unique_per_s": if span > 0.0 { (unique as f64 / span).round() } else { 0.0 },
            "receipt_to_delivery_ms": {
                "p50": latency.value_at_quantile(0.5) as f64,
                "p99": latency.value_at_quantile(0.99) as f64,
                "max": latency.max() as f64,
            },
            "seen": seen,
            "duplicate_keys": duplicate_keys,
            "duplicate_keys_late": duplicate_keys_late,
            "poison": poison,
            "late_first": self.late_first.load(Ordering::Relaxed),
            "status_counts": status_counts,
        })
    }

    /// Every key answered 2xx with its count, and the poison and late keys seen.
    fn keys(&self) -> serde_json::Value {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let delivered: BTreeMap<&str, u32> =
            keys.iter().filter(|(_, k)| k.ok > 0).map(|(key, k)| (key.as_str(), k.ok)).collect();
        let poison: Vec<&str> = keys.iter().filter(|(_, k)| k.poison).map(|(key, _)| key.as_str()).collect();
        let late: Vec<&str> = keys.iter().filter(|(_, k)| k.late).map(|(key, _)| key.as_str()).collect();
        serde_json::json!({ "delivered": delivered, "poison": poison, "late": late })
    }

    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.late_first.store(0, Ordering::Relaxed);
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.latency.lock().unwrap_or_else(|e| e.into_inner()).reset();
        *self.first_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.last_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Decides the answer to one delivery request and counts it: (status, extra wait before
    /// answering). The effect is counted when decided, as a receiver that processes first and
    /// answers after: a late 200 whose sender already gave up still counts as delivered.
    fn answer(&self, key: Option<&str>) -> (u16, Duration) {
        let faults = &self.faults;
        let mut wait = faults.delay;
        let status = if self.in_outage() {
            503
        } else if faults.throttle_ratio > 0.0 && self.random_fraction() < faults.throttle_ratio {
            429
        } else if key.is_some_and(|key| faults.poison_ratio > 0.0 && key_fraction(key, "poison") < faults.poison_ratio)
        {
            500
        } else {
            200
        };
        let Some(key) = key else {
            self.count_status(status);
            return (status, wait);
        };
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let state = keys.entry(key.to_owned()).or_default();
        state.requests += 1;
        if status == 500 {
            state.poison = true;
        }
        if status == 200 {
            if state.requests == 1 && faults.late_ratio > 0.0 && key_fraction(key, "late") < faults.late_ratio {
                state.late = true;
                wait += faults.late;
                self.late_first.fetch_add(1, Ordering::Relaxed);
            }
            state.ok += 1;
        }
        drop(keys);
        self.count_status(status);
        (status, wait)
    }

    fn count_status(&self, status: u16) {
        *self.statuses.lock().unwrap_or_else(|e| e.into_inner()).entry(status).or_insert(0) += 1;
    }
}

async fn serve(listen: SocketAddr, sink: Arc<Sink>, counting: bool) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot bind {listen}"))?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let sink = Arc::clone(&sink);
                async move { Ok::<_, Infallible>(handle(&sink, request, counting).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    sink: &Sink,
    request: hyper::Request<hyper::body::Incoming>,
    counting: bool,
) -> hyper::Response<Full<Bytes>> {
    let respond = |status: u16, body: String| {
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        response
    };
    match (request.method().as_str(), request.uri().path()) {
        ("GET", "/stats") => return respond(200, sink.stats().to_string()),
        ("GET", "/keys") => return respond(200, sink.keys().to_string()),
        ("POST", "/reset") => {
            sink.reset();
            return respond(200, "{}".into());
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    sink.received.fetch_add(1, Ordering::Relaxed);
    if !counting {
        return respond(202, String::new());
    }
    let now = Instant::now();
    {
        let mut first = sink.first_at.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(now);
    }
    *sink.last_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    let key = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let (status, wait) = sink.answer(key);
    if status == 200
        && let Some(received_at) =
            parts.headers.get("inlet-received-at").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok())
    {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let _ = sink
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(u64::try_from((now_ms - received_at).max(1)).unwrap_or(1));
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let mut response = respond(status, String::new());
    if status == 429 {
        response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(sink.faults.retry_after));
    }
    response
}
