//! Integration tests of `inlet-ingest` against a real nats-server per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connections;
mod group_commit;
mod kinds;
mod limits;
mod nats_auth;
mod outage;
mod quarantine;
mod rejections;
mod replays;
mod store_full;
mod stored_headers;
mod support;
mod tls;
