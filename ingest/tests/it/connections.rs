//! Idle connections at scale, against the real `inlet-ingest` binary: memory grows with the
//! connection cap, not with the number of clients, and silent connections are closed after the
//! header timeout so they cannot hold the cap forever.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use inlet_shared::signature::sign;
use inlet_shared::test_util::TestNats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{STREAM, now};

const SECRET: &str = "whsec_test_secret";

/// `inlet-ingest` as a child process, so its memory can be read from `/proc/<pid>` (also used
/// by `limits.rs`).
pub(crate) struct IngestProcess {
    child: Child,
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl IngestProcess {
    /// Starts the binary on free ports with `ingest` settings added to a one-source config, and
    /// waits until `/readyz` answers 200.
    pub(crate) async fn start(nats: &TestNats, ingest: &str) -> IngestProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inlet.toml");
        let config = format!(
            "[nats]\nurl = \"{}\"\nstartup_timeout = \"10s\"\n\
             [ingest]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{ingest}\n\
             [telemetry]\nlog_format = \"json\"\n\
             [[sources]]\nname = \"idle\"\nkind = \"stripe\"\nsecrets = [\"{SECRET}\"]\n",
            nats.url()
        );
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_inlet-ingest"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // The ports are chosen by the kernel; the binary logs them once it listens.
        let stdout = child.stdout.take().unwrap();
        let (addr_tx, addr_rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(addr) = json["fields"]["public_addr"].as_str()
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                {
                    let _ = addr_tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).expect("inlet-ingest never logged its address");
        // No pooled keep-alive connection: it would take one of the capped slots.
        let client =
            reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
        let ingest = IngestProcess { child, addr, _dir: dir, client, log };
        let ready = format!("http://{addr}/readyz");
        eventually("ingest ready", async || ingest.client.get(&ready).send().await.is_ok_and(|r| r.status() == 200))
            .await;
        ingest
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (VmRSS) in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Connections on the public port the process holds (accepted, not yet closed by it).
    fn connections(&self) -> usize {
        self.held_sockets().len()
    }

    /// Bytes that arrived on those connections and that the process has not read yet.
    fn unread_bytes(&self) -> u64 {
        self.held_sockets().iter().map(|s| s.rx_queue).sum()
    }

    fn held_sockets(&self) -> Vec<TcpSocket> {
        let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
            .collect();
        // `/proc/net/tcp` is read in several chunks while thousands of connects change the
        // table, so a socket can be listed twice: count each inode once.
        let mut seen = HashSet::new();
        tcp_sockets()
            .into_iter()
            .filter(|s| s.local_port == self.addr.port() && s.state != LISTEN && inodes.contains(&s.inode))
            .filter(|s| seen.insert(s.inode))
            .collect()
    }

    /// Connections the kernel completed that the process has not accepted (the accept queue).
    fn accept_queue(&self) -> u64 {
        tcp_sockets()
            .into_iter()
            .find(|s| s.local_port == self.addr.port() && s.state == LISTEN)
            .map_or(0, |s| s.rx_queue)
    }

    /// POSTs a correctly signed Stripe event and returns the status.
    pub(crate) async fn post_signed(&self, event: &str) -> u16 {
        let body = format!("{{\"id\":\"{event}\",\"type\":\"idle.test\"}}");
        let mut request = self.client.post(format!("http://{}/webhooks/idle", self.addr)).body(body.clone());
        for (name, value) in sign::stripe(SECRET, now(), body.as_bytes()) {
            request = request.header(name, value);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// POSTs `body` with `headers` to the source and returns the status.
    pub(crate) async fn post(&self, headers: &[(String, String)], body: &[u8]) -> u16 {
        let mut request = self.client.post(format!("http://{}/webhooks/idle", self.addr)).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await.unwrap().status().as_u16()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().map(|lines| lines.join("\n")).unwrap_or_default()
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LISTEN: u8 = 0x0A;

struct TcpSocket {
    local_port: u16,
    state: u8,
    rx_queue: u64,
    inode: u64,
}

/// The IPv4 TCP sockets of this network namespace (`/proc/net/tcp`; the tests use 127.0.0.1).
fn tcp_sockets() -> Vec<TcpSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            let rx_queue = u64::from_str_radix(fields.get(4)?.rsplit(':').next()?, 16).ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            Some(TcpSocket { local_port, state, rx_queue, inode })
        })
        .collect()
}

/// Polls `condition` until it holds; fails after a deadline far beyond what it should take.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raises this process's soft limit on open files (children inherit it) to at least `needed`,
/// with `prlimit` because the workspace forbids the `unsafe` a direct `setrlimit` needs.
fn raise_open_files_limit(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let (soft, hard) = (numbers[0], numbers[1]);
    if soft >= needed {
        return;
    }
    assert!(hard >= needed, "this test needs {needed} open files, the hard limit is {hard} (raise it: ulimit -Hn)");
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={needed}:{hard}"))
        .status()
        .expect("prlimit (util-linux) raises the open-files limit");
    assert!(status.success(), "prlimit could not raise the open-files limit to {needed}");
}

/// What ingest may spend per slot of the cap on a connection that has sent nothing: a task
/// waiting for the first byte and a socket registration (measured ~2 KiB), with room for
/// allocator slack.
const SILENT_BUDGET_KIB: u64 = 16;
/// ... and on one that has begun its request head: hyper then holds an 8 KiB read buffer and an
/// 8 KiB head write buffer plus the connection state (measured ~33 KiB in the test build).
const STARTED_BUDGET_KIB: u64 = 64;

#[tokio::test]
async fn thousands_of_idle_connections_cost_memory_only_up_to_the_cap() {
    const CAP: usize = 1000;
    // Clients beyond the cap: the kernel keeps them in the listen backlog (ingest asks for
    // 4096, capped by net.core.somaxconn; SYNs beyond it are dropped and retried); ingest sees none.
    const BEYOND: usize = 3000;
    raise_open_files_limit(u64::try_from(CAP + BEYOND).unwrap() + 512);
    let nats = TestNats::start();
    // Idle connections must stay for the whole test: a header timeout far beyond it.
    let ingest = IngestProcess::start(&nats, &format!("max_connections = {CAP}\nheader_read_timeout = \"1h\"")).await;
    // A first request, so the baseline includes what the request path allocates once.
    assert_eq!(ingest.post_signed("evt_idle_0").await, 202);
    eventually("the request's connection closed", async || ingest.connections() == 0).await;
    let rss_base = ingest.rss_kib();
    let cap = CAP as u64;

    // Exactly the cap, sending nothing: all accepted and held by ingest.
    let mut held = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        held.push(TcpStream::connect(ingest.addr).await.unwrap());
    }
    eventually("ingest holds the cap", async || ingest.connections() == CAP).await;
    let rss_cap = ingest.rss_kib();

    // Thousands more: they wait in the kernel, not in ingest.
    let beyond: Vec<_> = (0..BEYOND).map(|_| tokio::spawn(TcpStream::connect(ingest.addr))).collect();
    eventually("the accept queue filled", async || ingest.accept_queue() >= 100).await;
    let queued = ingest.accept_queue();
    assert_eq!(ingest.connections(), CAP, "accepted beyond the cap");
    let rss_beyond = ingest.rss_kib();
    eprintln!(
        "VmRSS of inlet-ingest: {rss_base} KiB at rest; {rss_cap} KiB holding {CAP} silent connections \
         ({:.2} KiB each); {rss_beyond} KiB with {BEYOND} more clients ({queued} in the accept queue)",
        rss_cap.saturating_sub(rss_base) as f64 / CAP as f64
    );
    assert!(
        rss_beyond.saturating_sub(rss_base) <= SILENT_BUDGET_KIB * cap,
        "VmRSS grew {} KiB for {} silent clients; the budget is {SILENT_BUDGET_KIB} KiB × a cap of {CAP}",
        rss_beyond - rss_base,
        CAP + BEYOND
    );
    // The clients beyond the cap cost ingest nothing it could notice: less than 64 more slots.
    assert!(
        rss_beyond.saturating_sub(rss_cap) <= 64 * SILENT_BUDGET_KIB,
        "{BEYOND} clients beyond the cap grew VmRSS by {} KiB",
        rss_beyond - rss_cap
    );

    // Those clients give up, and 100 of the held connections close: the slots free up and a
    // real sender is served while 900 idle connections remain.
    for task in &beyond {
        task.abort();
    }
    for task in beyond {
        let _ = task.await;
    }
    held.truncate(CAP - 100);
    assert_eq!(ingest.post_signed("evt_idle_1").await, 202, "a signed request once slots are free");
    eventually("ingest holds the remaining idle connections", async || ingest.connections() == CAP - 100).await;
    drop(held);
    eventually("every idle connection closed", async || ingest.connections() == 0).await;

    // The costlier idle connection: one that began its request head and stopped (until the
    // header timeout, 1 h here). Still bounded per slot.
    let mut started = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(ingest.addr).await.unwrap();
        stream.write_all(b"POST /webhooks/idle HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        started.push(stream);
    }
    // hyper allocates its buffers when it reads the bytes: wait until none is left unread.
    eventually("ingest read every head", async || ingest.connections() == CAP && ingest.unread_bytes() == 0).await;
    let rss_started = ingest.rss_kib();
    eprintln!(
        "VmRSS of inlet-ingest holding {CAP} connections that began a request head: {rss_started} KiB ({:.2} KiB each over the rest)",
        rss_started.saturating_sub(rss_base) as f64 / CAP as f64
    );
    assert!(
        rss_started.saturating_sub(rss_base) <= STARTED_BUDGET_KIB * cap,
        "VmRSS grew {} KiB; the budget is {STARTED_BUDGET_KIB} KiB × a cap of {CAP}",
        rss_started - rss_base
    );
    drop(started);

    // Every slot is returned and the process is healthy.
    eventually("every started connection closed", async || ingest.connections() == 0).await;
    assert_eq!(ingest.post_signed("evt_idle_2").await, 202);
    let ready = ingest.client.get(format!("http://{}/readyz", ingest.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let rss_after = ingest.rss_kib();
    eprintln!("VmRSS of inlet-ingest after every idle connection closed: {rss_after} KiB");
    assert!(rss_after <= rss_base + STARTED_BUDGET_KIB * cap, "VmRSS {rss_after} KiB after the connections closed");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3, "log:\n{}", ingest.log());
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_after_the_header_timeout_freeing_their_slots() {
    const CAP: usize = 4;
    let nats = TestNats::start();
    let ingest = IngestProcess::start(&nats, &format!("max_connections = {CAP}\nheader_read_timeout = \"1s\"")).await;

    // One connection that finished a request and stays open (keep-alive), and three that never
    // send a byte: together they take every slot.
    let mut kept_alive = TcpStream::connect(ingest.addr).await.unwrap();
    kept_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buffer = vec![0u8; 1024];
    let read = kept_alive.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    let mut silent = Vec::new();
    for _ in 1..CAP {
        silent.push(TcpStream::connect(ingest.addr).await.unwrap());
    }
    // A sender arriving now waits behind them.
    let mut sender = TcpStream::connect(ingest.addr).await.unwrap();
    sender.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();

    // Every one of them is closed by ingest (EOF) once the header timeout has passed.
    for stream in silent.iter_mut().chain([&mut kept_alive]) {
        let eof = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer)).await;
        assert!(matches!(eof, Ok(Ok(0))), "connection not closed after the header timeout: {eof:?}");
    }
    // Their slots are free again: the waiting sender is served.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), sender.read_to_end(&mut answer))
        .await
        .expect("the waiting sender was never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

/// HTTP/2 connections that answer pings but open no stream are closed after the header timeout
/// (hyper's own header timeout applies to HTTP/1 only): those that served a request and those
/// that never opened a stream alike, so h2c clients cannot hold the cap.
#[tokio::test]
async fn idle_http2_connections_are_closed_after_the_header_timeout_freeing_their_slots() {
    const CAP: usize = 4;
    let nats = TestNats::start();
    let ingest = IngestProcess::start(&nats, &format!("max_connections = {CAP}\nheader_read_timeout = \"1s\"")).await;

    let mut drivers = Vec::new();
    for index in 0..CAP {
        let (mut sender, driver) = inlet_shared::test_util::h2c_connect(ingest.addr).await;
        if index % 2 == 0 {
            let request = http::Request::get(format!("http://{}/healthz", ingest.addr)).body(String::new()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
        }
        // The handle stays alive (it would close the connection when dropped); only the
        // server may end it.
        drivers.push((sender, driver));
    }
    // A sender arriving now waits behind them.
    let mut waiting = TcpStream::connect(ingest.addr).await.unwrap();
    waiting.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();

    for (_sender, driver) in &mut drivers {
        tokio::time::timeout(Duration::from_secs(60), driver)
            .await
            .expect("an idle HTTP/2 connection was not closed after the header timeout")
            .unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), waiting.read_to_end(&mut answer))
        .await
        .expect("the waiting sender was never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // The last answer's EOF may reach us a moment before ingest has dropped that socket.
    eventually("ingest holds no connection", async || ingest.connections() == 0).await;
}

/// One HTTP/2 connection may open at most `MAX_STREAMS_PER_CONNECTION` streams at once (hyper's
/// default is 200), each of which can hold a request body: the server's first SETTINGS frame
/// says so, and a conforming client keeps to it.
#[tokio::test]
async fn an_http2_connection_may_open_only_a_bounded_number_of_streams() {
    const SETTINGS: u8 = 0x4;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    let nats = TestNats::start();
    let ingest = IngestProcess::start(&nats, "").await;
    let mut stream = TcpStream::connect(ingest.addr).await.unwrap();
    // Client preface, then an empty SETTINGS frame.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    stream.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[3], SETTINGS, "the server's first frame is not SETTINGS: {head:?}");
    let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.unwrap();
    let advertised = payload
        .chunks_exact(6)
        .find(|entry| u16::from_be_bytes([entry[0], entry[1]]) == MAX_CONCURRENT_STREAMS)
        .map(|entry| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
    assert_eq!(advertised, Some(inlet_shared::server::MAX_STREAMS_PER_CONNECTION));
}

/// Oversized bodies cost at most the limit per request: sixteen senders each try to stream
/// 64 MiB (chunked, no length) at a 1 MiB limit; each is cut off, and the process's memory grows
/// with the limit per concurrent request, not with what the senders tried to send.
#[tokio::test]
async fn oversized_streamed_bodies_cost_at_most_the_limit_per_request() {
    const SENDERS: usize = 16;
    const LIMIT: usize = 1 << 20;
    const ATTEMPTED: usize = 64 << 20;
    let nats = TestNats::start();
    let ingest = IngestProcess::start(&nats, &format!("max_body_bytes = {LIMIT}")).await;
    assert_eq!(ingest.post_signed("evt_big_0").await, 202);
    let rss_base = ingest.rss_kib();

    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let addr = ingest.addr;
        senders.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"POST /webhooks/idle HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "b".repeat(64 * 1024));
            let mut sent = 0;
            // The server answers 413 and closes once the limit is passed: the writes then fail.
            while sent < ATTEMPTED && stream.write_all(chunk.as_bytes()).await.is_ok() {
                sent += 64 * 1024;
            }
            sent
        }));
    }
    for sender in senders {
        let sent = sender.await.unwrap();
        // What the kernel's socket buffers absorbed beyond the limit, not the 64 MiB attempted.
        assert!(sent < ATTEMPTED / 4, "a sender got {sent} bytes in: the body was read past the limit");
    }
    let rss_after = ingest.rss_kib();
    let grown_kib = rss_after.saturating_sub(rss_base);
    eprintln!(
        "VmRSS of inlet-ingest: {rss_base} KiB before, {rss_after} KiB after {SENDERS} senders each tried \
         {} MiB at a {} MiB limit",
        ATTEMPTED >> 20,
        LIMIT >> 20
    );
    // Per request: the body's chunks (≤ the limit, allocated as it arrives), hyper's read buffer
    // and allocator slack — a few times the
    // limit (measured 2.7–4.1 MiB at 1 MiB, debug build). Buffering what the senders tried would
    // take 1 GiB.
    let budget_kib = (SENDERS * LIMIT / 1024) as u64 * 6;
    assert!(
        grown_kib <= budget_kib,
        "VmRSS grew {grown_kib} KiB; the budget is 6 × the limit per request ({budget_kib} KiB)"
    );
    // Still serving.
    assert_eq!(ingest.post_signed("evt_big_1").await, 202);
}
