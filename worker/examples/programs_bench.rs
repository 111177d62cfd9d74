//! Measures the route programs alone (docs/routing.md), on one thread: per event, parsing a
//! body for a filter, evaluating a typical filter (a Stripe amount test), and running a typical
//! transform (a GitHub push reshaped into a Slack message, on the calling thread as a pool
//! thread runs it). Prints one JSON line of microseconds per event (wall time of a loop on one
//! thread: CPU time while nothing else runs on its core).
//!
//! `cargo run --release -p inlet-worker --example programs_bench -- [events]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use inlet_worker::programs::{Filter, FilterInput, Transform, body_for_filter};

const STRIPE: &str = r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","object":"payment_intent","amount":250000,"currency":"usd","customer":"cus_1","status":"succeeded","metadata":{"order":"1001"}}}}"#;
const GITHUB: &str = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/api"},"pusher":{"name":"ada"},"commits":[{"id":"0123456789abcdef","url":"https://github.com/acme/api/commit/0123456","message":"Fix the build\n\nDetails"},{"id":"fedcba9876543210","url":"https://github.com/acme/api/commit/fedcba9","message":"Add a test"}]}"#;
const FILTER: &str = r#"body.data.object.amount >= 100000 && body.data.object.currency == "usd""#;
const TRANSFORM: &str = r#"{text: "\(.pusher.name) pushed \(.commits | length) commit(s) to \(.repository.full_name)", blocks: [.commits[:5][] | {type: "section", text: {type: "mrkdwn", text: "<\(.url)|\(.id[:7])> \(.message | split("\n")[0])"}}]}"#;

fn per_event(events: usize, mut run: impl FnMut()) -> f64 {
    for _ in 0..events / 10 {
        run();
    }
    let started = Instant::now();
    for _ in 0..events {
        run();
    }
    started.elapsed().as_secs_f64() * 1e6 / events as f64
}

fn main() {
    let events: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let filter = Filter::compile(FILTER).unwrap();
    let transform = Transform::compile(TRANSFORM).unwrap();
    let parse_us = per_event(events, || {
        std::hint::black_box(body_for_filter(STRIPE.as_bytes()));
    });
    let body = body_for_filter(STRIPE.as_bytes());
    let input =
        FilterInput { body: &body, headers_json: "[]", source: "stripe", event_type: Some("payment_intent.succeeded") };
    assert!(filter.evaluate(&input).matched());
    let filter_us = per_event(events, || {
        std::hint::black_box(filter.evaluate(&input));
    });
    let transform_us = per_event(events, || {
        std::hint::black_box(transform.run_here(GITHUB.as_bytes(), Duration::from_secs(1)).unwrap());
    });
    println!(
        "{{\"events\":{events},\"parse_us\":{parse_us:.2},\"filter_us\":{filter_us:.2},\"transform_us\":{transform_us:.2}}}"
    );
}
