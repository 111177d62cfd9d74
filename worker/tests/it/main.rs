//! Integration tests of `inlet-worker`: real nats-server, real SQLite file, real HTTP
//! destinations started on loopback, events sent through a real `inlet-ingest`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod breaker;
mod cluster;
mod console;
mod copy_store;
mod crash;
mod delivery;
mod disk_full;
mod floor_plan;
mod github;
mod listener;
mod login;
mod metrics;
mod operator_support;
mod scheduling;
mod support;
