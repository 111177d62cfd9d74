//! The worker's main listener against clients that hold connections: bodies that never arrive,
//! bodies over the limit, and idle HTTP/2 connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::operator_support::{ADMIN_TOKEN, OperatorPipeline, Options};

const CAP: usize = 4;

async fn capped_worker() -> OperatorPipeline {
    let worker_extra = format!("max_connections = {CAP}\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"");
    OperatorPipeline::start(&[], Options { worker_extra, ..Options::default() }).await
}

/// Reads until the server closes the connection.
async fn answer(stream: &mut TcpStream, what: &str) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer and the connection is still open"))
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// `POST /graphql` announcing a body that never comes is answered 408 after
/// `worker.body_read_timeout` and its connection closed (an anonymous one 401 at once, its body
/// never read): as many of them as the connection cap no longer lock out the API, the console
/// and the probes.
#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_and_its_slot_freed() {
    let pipeline = capped_worker().await;
    let head = |authorization: &str| {
        format!(
            "POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{authorization}Content-Length: 100\r\n\r\n{{"
        )
    };
    let mut anonymous = TcpStream::connect(pipeline.worker).await.unwrap();
    anonymous.write_all(head("").as_bytes()).await.unwrap();
    let answer_anonymous = answer(&mut anonymous, "an anonymous stalled body").await;
    assert!(answer_anonymous.starts_with("HTTP/1.1 401"), "{answer_anonymous}");

    let mut stalled = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(pipeline.worker).await.unwrap();
        stream.write_all(head(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n")).as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    // A probe arriving now waits behind them.
    let mut probe = TcpStream::connect(pipeline.worker).await.unwrap();
    probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();

    for stream in &mut stalled {
        let answer = answer(stream, "a stalled body").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("BODY_TIMEOUT"), "{answer}");
    }
    let answer = answer(&mut probe, "the waiting probe").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Bodies over the limit are refused with 413, declared ones before a byte of them is read and
/// streamed ones as soon as they pass it.
#[tokio::test]
async fn bodies_over_the_limit_are_answered_413() {
    let pipeline = capped_worker().await;

    let mut declared = TcpStream::connect(pipeline.worker).await.unwrap();
    declared
        .write_all(
            format!(
                "POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 100000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer_declared = answer(&mut declared, "a declared oversized body").await;
    assert!(answer_declared.starts_with("HTTP/1.1 413"), "{answer_declared}");

    // Streamed to the API (which reads after the credentials) and to any other route (read
    // before the route runs).
    for (path, authorization) in
        [("/graphql", format!("Authorization: Bearer {ADMIN_TOKEN}\r\n")), ("/auth/logout", String::new())]
    {
        let mut chunked = TcpStream::connect(pipeline.worker).await.unwrap();
        chunked
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{authorization}\
                     Transfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..5 {
            chunked.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
            chunked.write_all(&chunk).await.unwrap();
            chunked.write_all(b"\r\n").await.unwrap();
        }
        let answer_chunked = answer(&mut chunked, "a streamed oversized body").await;
        assert!(answer_chunked.starts_with("HTTP/1.1 413"), "{path}: {answer_chunked}");
    }
}

/// An HTTP/2 connection that answers pings but has no request in flight is closed after
/// `worker.header_read_timeout`.
#[tokio::test]
async fn idle_http2_connections_are_closed_after_the_header_timeout() {
    let pipeline = capped_worker().await;
    let (mut sender, driver) = inlet_shared::test_util::h2c_connect(pipeline.worker).await;
    let request = http::Request::get(format!("http://{}/healthz", pipeline.worker)).body(String::new()).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(60), driver)
        .await
        .expect("an idle HTTP/2 connection was not closed after the header timeout")
        .unwrap();
}
