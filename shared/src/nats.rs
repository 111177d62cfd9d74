//! Connecting to NATS and creating or updating the JetStream stream, as both binaries do at
//! startup.
//!
//! Startup retries with capped exponential backoff (tokio-retry) until
//! `nats.startup_timeout`, so a process started a moment before its broker comes up waits
//! instead of crash-looping. Once connected, async-nats reconnects by itself forever.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio_retry::Retry;
use tokio_retry::strategy::{ExponentialBackoff, jitter};

use crate::config::{Durability, NatsConfig, StreamConfig};

/// Why startup could not reach a usable stream.
#[derive(Debug, thiserror::Error)]
pub enum NatsSetupError {
    /// No connection within the startup timeout.
    #[error("cannot connect to NATS at {url} within {timeout:?}")]
    Connect {
        /// The configured URL.
        url: String,
        /// `nats.startup_timeout`.
        timeout: Duration,
        /// The last error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Connected, but the stream could not be created or updated.
    #[error("cannot create or update stream {name}")]
    Stream {
        /// Stream name.
        name: String,
        /// The server's answer.
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    /// `nats.url` does not parse.
    #[error("config key `nats.url`: {0}")]
    Url(String),
    /// Gave up waiting.
    #[error("NATS setup did not finish within {0:?}")]
    Timeout(Duration),
}

fn startup_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBackoff::from_millis(2).factor(50).max_delay(Duration::from_secs(2)).map(jitter)
}

/// How often a failing startup connection is reported (the first failure is reported at once).
const CONNECT_WARN_EVERY: Duration = Duration::from_secs(5);

/// Connects (retrying until `startup_timeout`). The client reconnects on its own afterwards.
///
/// Every failed attempt is retried; the first one, and then one every few seconds, is logged at
/// warn with the URL and the error, so an unreachable server is named at once instead of after
/// the whole `startup_timeout`.
///
/// # Errors
///
/// [`NatsSetupError::Connect`] (with the last attempt's error) or [`NatsSetupError::Timeout`]
/// (no attempt finished at all).
pub async fn connect(config: &NatsConfig, client_name: &str) -> Result<async_nats::Client, NatsSetupError> {
    let servers = server_addresses(&config.url)?;
    let attempt = || async {
        async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(config.connect_timeout)
            // Unlimited reconnects: a running service must outlive broker restarts.
            .max_reconnects(None)
            .connect(servers.clone())
            .await
    };
    let deadline = tokio::time::Instant::now() + config.startup_timeout;
    let mut backoff = startup_backoff();
    let mut last_error = None;
    let mut last_warned: Option<tokio::time::Instant> = None;
    let mut failed: u32 = 0;
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(client)) => {
                if failed > 0 {
                    tracing::info!(url = %config.url, failed_attempts = failed, "connected to NATS");
                }
                return Ok(client);
            }
            Ok(Err(error)) => {
                failed += 1;
                if last_warned.is_none_or(|at| at.elapsed() >= CONNECT_WARN_EVERY) {
                    last_warned = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        url = %config.url,
                        error = %error,
                        failed_attempts = failed,
                        "cannot connect to NATS; retrying until nats.startup_timeout ({:?})",
                        config.startup_timeout
                    );
                }
                last_error = Some(error);
            }
            Err(_) => break,
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(2));
        if tokio::time::timeout_at(deadline, tokio::time::sleep(delay)).await.is_err() {
            break;
        }
    }
    Err(match last_error {
        Some(source) => NatsSetupError::Connect { url: config.url.clone(), timeout: config.startup_timeout, source },
        None => NatsSetupError::Timeout(config.startup_timeout),
    })
}

/// Parses `nats.url`: one URL or a comma-separated list (a cluster's seed servers).
///
/// # Errors
///
/// [`NatsSetupError::Url`] naming the entry that does not parse.
pub fn server_addresses(urls: &str) -> Result<Vec<async_nats::ServerAddr>, NatsSetupError> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| url.parse::<async_nats::ServerAddr>().map_err(|e| NatsSetupError::Url(format!("`{url}`: {e}"))))
        .collect::<Result<Vec<_>, _>>()
        .and_then(
            |servers| {
                if servers.is_empty() { Err(NatsSetupError::Url("no server URL given".into())) } else { Ok(servers) }
            },
        )
}

/// The stream configuration derived from `[stream]`.
pub fn stream_config(config: &StreamConfig) -> stream::Config {
    stream::Config {
        name: config.name.clone(),
        subjects: vec![config.wildcard_subject()],
        storage: stream::StorageType::File,
        duplicate_window: config.duplicate_window,
        max_age: config.max_age,
        max_bytes: config.max_bytes.and_then(|bytes| i64::try_from(bytes).ok()).unwrap_or(-1),
        // At a size limit, refuse new events (ingest answers 503, the sender retries later).
        // `Old` would make room by deleting the oldest events: acknowledged webhooks, maybe not
        // yet recorded by the worker, gone without a trace. Without a limit it changes nothing.
        discard: stream::DiscardPolicy::New,
        num_replicas: config.replicas,
        allow_direct: true,
        // Group commit sends concurrent requests as one atomic batch (one fsync).
        allow_atomic_publish: config.durability == Durability::Fsync,
        ..Default::default()
    }
}

/// Creates the stream or updates it to match the config.
///
/// # Errors
///
/// [`NatsSetupError::Stream`] when the server refuses, [`NatsSetupError::Timeout`] when it
/// keeps not answering within `startup_timeout`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &StreamConfig,
    startup_timeout: Duration,
) -> Result<(), NatsSetupError> {
    let attempt = || async { js.create_or_update_stream(stream_config(config)).await };
    match tokio::time::timeout(startup_timeout, Retry::start(startup_backoff().take(20), attempt)).await {
        Ok(Ok(_info)) => Ok(()),
        Ok(Err(source)) => Err(NatsSetupError::Stream { name: config.name.clone(), source }),
        Err(_) => Err(NatsSetupError::Timeout(startup_timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_is_retried_then_named_with_the_last_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = NatsConfig {
            url: format!("nats://127.0.0.1:{closed}"),
            startup_timeout: Duration::from_millis(700),
            ..NatsConfig::default()
        };
        let error = connect(&config, "test").await.unwrap_err();
        assert!(matches!(error, NatsSetupError::Connect { .. }), "not a bare timeout: {error:?}");
        assert!(error.to_string().contains(&config.url), "{error}");
    }

    #[test]
    fn the_stream_refuses_new_events_at_its_size_limit_and_is_unlimited_by_default() {
        let unlimited = stream_config(&StreamConfig::default());
        assert_eq!(unlimited.max_bytes, -1);
        assert_eq!(unlimited.discard, stream::DiscardPolicy::New);
        let bounded = stream_config(&StreamConfig { max_bytes: Some(1 << 30), ..StreamConfig::default() });
        assert_eq!(bounded.max_bytes, 1 << 30);
        assert_eq!(bounded.discard, stream::DiscardPolicy::New, "never DiscardOld with a size limit");
        assert_eq!(bounded.retention, stream::RetentionPolicy::Limits);
    }

    #[test]
    fn a_cluster_url_list_is_split() {
        let servers = server_addresses("nats://nats-1:4222, nats://nats-2:4222,nats://nats-3:4222").unwrap_or_default();
        assert_eq!(servers.len(), 3);
        assert!(matches!(server_addresses("nats://bad host"), Err(NatsSetupError::Url(_))));
        assert!(matches!(server_addresses(" , "), Err(NatsSetupError::Url(_))));
    }
}
