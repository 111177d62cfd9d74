//! Integration tests of `inlet-worker`: real nats-server, a real store, real HTTP destinations
//! started on loopback, events sent through a real `inlet-ingest`.
//!
//! **Either store backend.** `INLET_TEST_STORE` chooses it: `sqlite` (the default when unset: a
//! file in the test's temporary directory) or `postgres` (each pipeline gets a PostgreSQL server
//! of its own, `inlet_shared::test_util::TestPostgres`, stopped when the test ends); anything
//! else fails every test. The tests look into the store only through
//! [`support::TestStore`] (plain SQL both engines accept, values read as text). The tests about
//! SQLite itself are in `sqlite_only/`: they always run on SQLite, so the PostgreSQL run leaves
//! them out:
//!
//! ```text
//! cargo test -p inlet-worker --test it                                               # SQLite
//! INLET_TEST_STORE=postgres cargo test -p inlet-worker --test it -- --skip sqlite_only  # PostgreSQL
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod api;
mod backfill;
mod breaker;
mod cluster;
mod console;
mod console_admin;
mod console_dry_run;
mod console_lists;
mod console_quarantine;
mod console_search;
mod copy_store;
mod crash;
mod delivery;
mod floor_plan;
mod github;
mod large_bodies;
mod listener;
mod login;
mod metrics;
mod nats_auth;
mod operator_support;
mod ordering;
mod programs;
mod quarantine;
mod replay_config;
mod scheduling;
mod several_workers;
mod sqlite_only;
mod support;
mod tls;
mod traces;
mod upgrade;
