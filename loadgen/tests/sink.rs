//! `inlet-loadgen sink` and its pathologies, over real HTTP: without flags every delivery is
//! answered 200 and counted by `Idempotency-Key`; per-key pathologies (poison, late first answer)
//! answer the same key the same way every time; the random and time-based ones (429 with
//! `Retry-After`, outage) answer as configured; `/stats` and `/keys` report what was answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct SinkProcess {
    child: Child,
    addr: String,
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sink(flags: &[&str]) -> SinkProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inlet-loadgen"))
        .arg("sink")
        .args(flags)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run inlet-loadgen sink");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(1).expect("listening <addr>").to_owned();
    SinkProcess { child, addr }
}

/// One request on its own connection: (status, Retry-After, body).
fn request(addr: &str, method: &str, path: &str, key: Option<&str>) -> (u16, Option<String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let key_header = key.map(|k| format!("Idempotency-Key: {k}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{key_header}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let retry_after =
        head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_owned()));
    (status, retry_after, body.to_owned())
}

fn post(addr: &str, key: &str) -> u16 {
    request(addr, "POST", "/events", Some(key)).0
}

fn json(addr: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(&request(addr, "GET", path, None).2).unwrap()
}

#[test]
fn without_flags_every_delivery_is_answered_200_and_counted_by_key() {
    let sink = sink(&[]);
    for key in ["a", "b", "a"] {
        assert_eq!(post(&sink.addr, key), 200);
    }
    let stats = json(&sink.addr, "/stats");
    assert_eq!(stats["received"], 3, "{stats}");
    assert_eq!(stats["unique"], 2, "{stats}");
    assert_eq!(stats["duplicates"], 1, "{stats}");
    assert_eq!(stats["duplicate_keys"], 1, "{stats}");
    assert_eq!(stats["duplicate_keys_late"], 0, "{stats}");
    assert_eq!(stats["poison"], 0, "{stats}");
    assert_eq!(stats["status_counts"]["200"], 3, "{stats}");
    assert_eq!(json(&sink.addr, "/keys")["delivered"]["a"], 2);
}

#[test]
fn poison_keys_always_answer_500_and_the_rest_200() {
    let sink = sink(&["--poison-ratio", "0.3"]);
    let keys: Vec<String> = (0..200).map(|i| format!("dlv_{i}_poison")).collect();
    let first: Vec<u16> = keys.iter().map(|k| post(&sink.addr, k)).collect();
    let again: Vec<u16> = keys.iter().map(|k| post(&sink.addr, k)).collect();
    assert_eq!(first, again, "a key is answered the same way every time");
    let poisoned = first.iter().filter(|s| **s == 500).count();
    assert!((30..=90).contains(&poisoned), "about 30 % of 200 keys: {poisoned}");
    assert_eq!(first.iter().filter(|s| **s == 200).count(), 200 - poisoned);
    let stats = json(&sink.addr, "/stats");
    assert_eq!(stats["poison"], poisoned, "{stats}");
    assert_eq!(stats["unique"], 200 - poisoned, "{stats}");
    assert_eq!(stats["status_counts"]["500"], 2 * poisoned, "{stats}");
    assert_eq!(json(&sink.addr, "/keys")["poison"].as_array().unwrap().len(), poisoned);
}

#[test]
fn a_late_key_is_answered_late_on_its_first_request_only() {
    let sink = sink(&["--late-ratio", "1", "--late-ms", "400"]);
    let started = Instant::now();
    assert_eq!(post(&sink.addr, "k1"), 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(post(&sink.addr, "k1"), 200);
    assert!(started.elapsed() < Duration::from_millis(400), "only the first answer is late");
    let stats = json(&sink.addr, "/stats");
    assert_eq!(stats["late_first"], 1, "{stats}");
    assert_eq!(stats["duplicate_keys"], 1, "{stats}");
    assert_eq!(stats["duplicate_keys_late"], 1, "{stats}");
}

#[test]
fn throttled_requests_answer_429_with_retry_after() {
    let sink = sink(&["--throttle-ratio", "1", "--retry-after", "2"]);
    let (status, retry_after, _) = request(&sink.addr, "POST", "/events", Some("k"));
    assert_eq!((status, retry_after.as_deref()), (429, Some("2")));
    let stats = json(&sink.addr, "/stats");
    assert_eq!(stats["unique"], 0, "{stats}");
    assert_eq!(stats["status_counts"]["429"], 1, "{stats}");
}

#[test]
fn an_outage_answers_503_for_its_part_of_every_period() {
    let down = sink(&["--outage-every", "3600", "--outage-for", "3600"]);
    assert_eq!(post(&down.addr, "k"), 503);
    let up = sink(&["--outage-every", "3600", "--outage-for", "0", "--delay-ms", "200"]);
    let started = Instant::now();
    assert_eq!(post(&up.addr, "k"), 200);
    assert!(started.elapsed() >= Duration::from_millis(200), "--delay-ms delays every answer");
}

#[test]
fn invalid_ratios_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_inlet-loadgen"))
        .args(["sink", "--poison-ratio", "1.5"])
        .output()
        .expect("run inlet-loadgen");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--poison-ratio"));
}
