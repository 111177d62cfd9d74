//! Connecting to NATS and creating or updating the JetStream stream, as both binaries do at
//! startup.
//!
//! Startup retries with capped exponential backoff (tokio-retry) until
//! `nats.startup_timeout`, so a process started a moment before its broker comes up waits
//! instead of crash-looping. A refusal is not retried: wrong credentials (an authorization
//! violation) or a failed TLS handshake (a certificate not trusted, a client certificate
//! refused) end startup at once with the URL, the cause and the `[nats]` keys to check, since
//! waiting would only hide them. Once connected, async-nats reconnects by itself forever; what
//! the connection meets from then on (disconnects, refusals such as a permissions violation) is
//! logged.
//!
//! `security`: the credentials and TLS files of `[nats]`, read and checked before the first attempt.

mod security;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{ConnectErrorKind, Event, ServerError};
use tokio_retry::strategy::{ExponentialBackoff, jitter};

use crate::config::{Durability, NatsAuth, NatsConfig, QuarantineConfig, StreamConfig};

/// Why startup could not reach a usable stream.
#[derive(Debug, thiserror::Error)]
pub enum NatsSetupError {
    /// A file or secret `[nats]` names cannot be used.
    #[error("config key `{key}`: {message}")]
    Config {
        /// The key, e.g. `nats.creds_file`.
        key: &'static str,
        /// What is wrong with it (never the secret itself).
        message: String,
    },
    /// The server refused this client's credentials; retrying would not change that.
    #[error("nats: authorization violation at {url} — {hint}")]
    Unauthorized {
        /// `nats.url` (it holds no credentials: the config refuses them there).
        url: String,
        /// What to check.
        hint: String,
    },
    /// The TLS handshake failed: the server's certificate is not trusted, or the server refused
    /// the client's; retrying would not change that.
    #[error("nats: TLS failure at {url}: {reason} — {hint}")]
    Tls {
        /// `nats.url`.
        url: String,
        /// What TLS said.
        reason: String,
        /// What to check.
        hint: &'static str,
    },
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
    /// The stream is not as configured, and creating or updating it got no answer.
    #[error(
        "stream {name} is missing or differs from [stream], and creating or updating it got no answer within \
         {timeout:?}: if a permissions violation was logged, this user may not (ingest's may not in \
         deploy/nats/permissions.conf: a worker creates the stream)"
    )]
    StreamUnanswered {
        /// Stream name.
        name: String,
        /// `nats.startup_timeout`.
        timeout: Duration,
    },
    /// The bodies bucket does not exist: a worker creates it at startup.
    #[error(
        "object-store bucket {name} (bodies over ingest.claim_check_threshold_bytes) does not exist after {timeout:?}: \
         a worker creates it when it starts; start or upgrade the workers first (docs/operations.md, upgrading)"
    )]
    BucketMissing {
        /// Bucket name.
        name: String,
        /// `nats.startup_timeout`.
        timeout: Duration,
    },
    /// `nats.url` does not parse.
    #[error("config key `nats.url`: {0}")]
    Url(String),
    /// Gave up waiting.
    #[error("NATS setup did not finish within {0:?}")]
    Timeout(Duration),
}

impl NatsSetupError {
    /// Whether the configuration is at fault (the binaries exit with status 64 then).
    pub fn is_config(&self) -> bool {
        matches!(self, NatsSetupError::Config { .. } | NatsSetupError::Url(_))
    }
}

fn startup_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBackoff::from_millis(2).factor(50).max_delay(Duration::from_secs(2)).map(jitter)
}

/// How often a failing startup connection is reported (the first failure is reported at once).
const CONNECT_WARN_EVERY: Duration = Duration::from_secs(5);

/// Connects (retrying until `startup_timeout`). The client reconnects on its own afterwards.
///
/// The credentials and TLS files are read and checked first. Then every failed attempt is
/// retried, except a refusal (wrong credentials, TLS); the first failure, and then one every
/// few seconds, is logged at warn with the URL and the error, so an unreachable server is named
/// at once instead of after the whole `startup_timeout`.
///
/// # Errors
///
/// [`NatsSetupError::Config`] (a file or seed that cannot be used), [`NatsSetupError::Unauthorized`]
/// or [`NatsSetupError::Tls`] (refused, at once), [`NatsSetupError::Connect`] (with the last
/// attempt's error) or [`NatsSetupError::Timeout`] (no attempt finished at all).
pub async fn connect(config: &NatsConfig, client_name: &str) -> Result<async_nats::Client, NatsSetupError> {
    let servers = server_addresses(&config.url)?;
    let security = security::Security::load(config)?;
    let attempt = || async {
        let options = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(config.connect_timeout)
            // Unlimited reconnects: a running service must outlive broker restarts.
            .max_reconnects(None)
            .event_callback(event_logger(config.url.clone()));
        match security.apply(options) {
            Ok(options) => options.connect(servers.clone()).await.map_err(Attempt::Failed),
            Err(error) => Err(Attempt::Unusable(error)),
        }
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
            Ok(Err(Attempt::Unusable(error))) => return Err(error),
            Ok(Err(Attempt::Failed(error))) => {
                if let Some(refusal) = refusal(&error, config) {
                    return Err(refusal);
                }
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

/// How one connection attempt ended without a connection.
enum Attempt {
    Failed(async_nats::ConnectError),
    Unusable(NatsSetupError),
}

/// The failures retrying cannot cure: the server refused the credentials, or TLS failed (a
/// certificate not trusted or refused, a server that does not speak TLS, a file TLS cannot use).
fn refusal(error: &async_nats::ConnectError, config: &NatsConfig) -> Option<NatsSetupError> {
    let url = config.url.clone();
    if matches!(error.kind(), ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication) {
        let hint = match config.auth() {
            NatsAuth::None => "the server requires credentials: set nats.creds_file, nats.nkey_seed_file, \
                               nats.nkey_seed, nats.user and nats.password, or nats.token"
                .to_owned(),
            auth => format!("check {}", auth.keys()),
        };
        return Some(NatsSetupError::Unauthorized { url, hint });
    }
    let tls = rustls_error(error);
    if tls.is_none() && error.kind() != ConnectErrorKind::Tls {
        return None;
    }
    use async_nats::rustls::Error as Tls;
    let hint = match tls {
        Some(Tls::InvalidCertificate(_)) => {
            "check nats.tls_ca_file: the server's certificate must chain to it and name the host of nats.url"
        }
        Some(Tls::AlertReceived(_)) => {
            "the server refused the handshake (a missing or untrusted client certificate?): check \
             nats.tls_cert_file and nats.tls_key_file"
        }
        Some(Tls::InvalidMessage(_)) => "the server did not answer in TLS: does its config have a tls block?",
        _ => "check nats.tls_ca_file, nats.tls_cert_file and nats.tls_key_file",
    };
    let reason = tls.map_or_else(|| error.to_string(), ToString::to_string);
    Some(NatsSetupError::Tls { url, reason, hint })
}

/// The rustls error somewhere in `error`'s chain (tokio-rustls wraps it in an `io::Error`, whose
/// `source()` skips it).
fn rustls_error(error: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(tls);
        }
        current = error.source();
    }
    None
}

/// Logs what the connection meets once established: a disconnect, a reconnect, and what the
/// server refuses (a permissions violation names the subject this identity may not use).
fn event_logger(url: String) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let disconnected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    move |event| {
        use std::sync::atomic::Ordering;
        match event {
            Event::Connected if disconnected.swap(false, Ordering::Relaxed) => {
                tracing::info!(%url, "reconnected to NATS");
            }
            Event::Connected => {}
            Event::Disconnected => {
                disconnected.store(true, Ordering::Relaxed);
                tracing::warn!(%url, "disconnected from NATS; reconnecting");
            }
            Event::ServerError(ServerError::Other(message)) if message.contains("Permissions Violation") => {
                tracing::error!(
                    %url,
                    error = %message,
                    "NATS refused an operation: the permissions of this user in the server config do not allow \
                     it (ingest's may not create or update the stream, and waits for a worker to; anything else \
                     is missing from the user's permissions: docs/operations.md, \"NATS credentials and \
                     permissions\")"
                );
            }
            Event::ServerError(error) => tracing::error!(%url, %error, "NATS server error"),
            other => tracing::warn!(%url, event = %other, "NATS connection event"),
        }
        std::future::ready(())
    }
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

/// How long one attempt to find or set up the stream waits for answers. JetStream answers in
/// milliseconds; a request the server drops says nothing at all (a permissions violation: the
/// server logs it, the client gets no answer), so the next attempt looks again soon. A create
/// or update that is slow, not dropped, still completes on the server, and the next attempt
/// finds the stream as configured.
const STREAM_ATTEMPT_WAIT: Duration = Duration::from_secs(2);

/// Creates the stream or updates it to match the config, retrying until `startup_timeout`. A
/// stream that already matches is left alone, so a client whose permissions only let it read
/// the stream (ingest's, in `deploy/nats/permissions.conf`) starts against one a worker set
/// up, and waits while there is none yet.
///
/// # Errors
///
/// [`NatsSetupError::Stream`] when the server refuses, [`NatsSetupError::StreamUnanswered`]
/// when it never answered within `startup_timeout`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &StreamConfig,
    startup_timeout: Duration,
) -> Result<(), NatsSetupError> {
    ensure(js, stream_config(config), startup_timeout).await
}

/// The quarantine stream derived from `[stream]` and `[quarantine]`: requests that failed
/// verification, per source and slot (`_INLET.{stream}.quarantine.<source>.<slot>`), at most
/// `max_per_source` per subject, `max_bytes` in all, for `max_age`, the oldest making room
/// (discard `old`: unlike events, a quarantined request was answered 401 and is only evidence).
pub fn quarantine_stream_config(stream_config: &StreamConfig, config: &QuarantineConfig) -> stream::Config {
    stream::Config {
        name: stream_config.quarantine_stream_name(),
        subjects: vec![stream_config.quarantine_wildcard()],
        storage: stream::StorageType::File,
        max_age: config.max_age,
        max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
        max_messages_per_subject: config.max_per_source,
        discard: stream::DiscardPolicy::Old,
        num_replicas: stream_config.replicas,
        // The worker reads requests by sequence (direct gets), with no consumer.
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the quarantine stream or updates it to match the config, as [`ensure_stream`] does
/// for the intake stream (the worker's job).
///
/// # Errors
///
/// As [`ensure_stream`].
pub async fn ensure_quarantine_stream(
    js: &jetstream::Context,
    stream: &StreamConfig,
    config: &QuarantineConfig,
    startup_timeout: Duration,
) -> Result<(), NatsSetupError> {
    ensure(js, quarantine_stream_config(stream, config), startup_timeout).await
}

pub(crate) async fn ensure(
    js: &jetstream::Context,
    wanted: stream::Config,
    startup_timeout: Duration,
) -> Result<(), NatsSetupError> {
    let deadline = tokio::time::Instant::now() + startup_timeout;
    let mut backoff = startup_backoff();
    let mut refused = None;
    loop {
        let attempt = async {
            if let Ok(stream) = js.get_stream(&wanted.name).await
                && is_configured_as(&stream.cached_info().config, &wanted)
            {
                return Ok(());
            }
            js.create_or_update_stream(wanted.clone()).await.map(|_| ())
        };
        let wait = STREAM_ATTEMPT_WAIT.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => refused = Some(error),
            Err(_) => {}
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(2));
        if tokio::time::Instant::now() + delay >= deadline {
            break;
        }
        tokio::time::sleep(delay).await;
    }
    Err(match refused {
        Some(source) => NatsSetupError::Stream { name: wanted.name.clone(), source },
        None => NatsSetupError::StreamUnanswered { name: wanted.name.clone(), timeout: startup_timeout },
    })
}

/// Whether the server's stream has every setting [`stream_config`] sets (the server fills in
/// the rest with its defaults).
fn is_configured_as(actual: &stream::Config, wanted: &stream::Config) -> bool {
    actual.subjects == wanted.subjects
        && actual.storage == wanted.storage
        && actual.duplicate_window == wanted.duplicate_window
        && actual.max_age == wanted.max_age
        && actual.max_bytes == wanted.max_bytes
        && actual.discard == wanted.discard
        && actual.num_replicas == wanted.num_replicas
        && actual.allow_direct == wanted.allow_direct
        && actual.allow_atomic_publish == wanted.allow_atomic_publish
        && (wanted.max_messages_per_subject == 0 || actual.max_messages_per_subject == wanted.max_messages_per_subject)
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
