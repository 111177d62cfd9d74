//! What `inlet-ingest` and `inlet-worker` agree on: the configuration file, the signature
//! recipes of each provider, the JetStream message layout (subjects and metadata headers) and
//! telemetry setup.
//!
//! Without features this crate does no I/O but read the configuration file (only in
//! [`config::load_file`]). The `runtime` feature adds what both binaries run: the HTTP accept
//! loop (plain or HTTPS: `tls`), the metrics recorder, OpenTelemetry traces (`otel`), the NATS connection and stream setup. Helpers that start real processes for tests live behind the
//! `test-util` feature.
#![forbid(unsafe_code)]

pub mod config;
pub mod duration;
pub mod envelope;
pub mod quarantine;
pub mod signature;
pub mod telemetry;

#[cfg(feature = "runtime")]
pub mod claim_check;
#[cfg(feature = "runtime")]
pub mod nats;
#[cfg(feature = "runtime")]
pub mod otel;
#[cfg(feature = "runtime")]
pub mod server;
#[cfg(feature = "runtime")]
pub mod tls;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
