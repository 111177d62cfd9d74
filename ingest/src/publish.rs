//! Publishing verified events to JetStream and waiting for the PubAck.
//!
//! A request is answered 2xx only when [`Publisher::publish`] returned `Ok`, which means the
//! PubAck arrived: the server stored the message (or recognised it as a duplicate of a stored
//! one). Any other result becomes a 503 so the sender retries (a retry carries the same
//! `Nats-Msg-Id`, so a message that was stored after all is reported as a duplicate, never
//! stored twice) — except a refusal of a message that can never be stored (too large, headers
//! too large): that is a 413 or 431, so the sender stops instead of retrying for ever.
//!
//! JetStream's refusals are told apart by their error codes, as nats-server 2.15.1 answers
//! them (measured; `ingest/tests/it/store_full.rs`, `docs/operations.md`):
//!
//! | situation | answer |
//! |---|---|
//! | stream at `max_bytes` (discard new), or an event larger than the whole stream | 10077 "maximum bytes exceeded", at once |
//! | the server's `jetstream.max_file_store` reached | 10023 "insufficient resources", at once |
//! | the account's JetStream storage limit reached | 10002 "resource limits exceeded for account", at once |
//! | the disk full (ENOSPC) | no answer at all: the publish times out; the stream keeps failing every write, even after space returns, until nats-server restarts |
//! | message over the stream's `max_msg_size` / headers over 64 KiB | 10054 / 10097 (413 / 431, permanent) |
//!
//! What the store's state means for the next requests lives in [`crate::health`].
//!
//! A body over `ingest.claim_check_threshold_bytes` is stored first, as an object of the bodies
//! bucket ([`Publisher::store_body`]); the message that names it is published only once the
//! bucket acknowledged the whole object, so a 2xx means both are stored. A body that could not
//! be stored is a 503 and nothing is published; an object whose message was never stored is
//! left to expire with the bucket's `max_age`, and the sender's retry stores the same object
//! again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;

use inlet_shared::claim_check::{BodyStore, ClaimCheckError};
use inlet_shared::envelope::BodyClaim;

use crate::health::StoreHealth;
use crate::pub_ack::{PublishFailure, StoreFull, Stored, classify};

/// How the store probe judges the intake stream.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The subject the probe purges: in the stream, never used by an event
    /// (`StreamConfig::probe_subject`).
    pub subject: String,
    /// Room the stream must have for the largest event ingest accepts (`Config::largest_event_bytes`).
    pub largest_event_bytes: u64,
}

/// A connected JetStream publisher.
#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    stream_name: String,
    deadline: Duration,
    /// Group commit, in `fsync` durability mode.
    batcher: Option<crate::batch::Batcher>,
    health: Arc<StoreHealth>,
    probe: ProbeTarget,
    /// The last readiness answer and when it was found (see [`Publisher::is_ready`]).
    readiness: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
    /// The bodies bucket, when some source accepts bodies over the claim-check threshold.
    bodies: Option<BodyStore>,
}

/// How long a readiness answer is reused. `/readyz` is public: asking JetStream for stream info
/// on every call let a client spend the NATS server's CPU (5,000 calls/s took half a core).
pub const READINESS_CACHE: Duration = Duration::from_secs(1);

impl Publisher {
    /// Wraps a connected client; `group_commit` turns on the batcher (`fsync` durability).
    pub fn new(
        client: async_nats::Client,
        stream_name: String,
        deadline: Duration,
        group_commit: bool,
        probe: ProbeTarget,
    ) -> Publisher {
        let js = jetstream::new(client.clone());
        let batcher = group_commit.then(|| crate::batch::Batcher::start(client.clone(), js.clone(), &stream_name));
        let health = StoreHealth::new(&stream_name);
        Publisher { client, js, stream_name, deadline, batcher, health, probe, readiness: Arc::default(), bodies: None }
    }

    /// Stores bodies over the claim-check threshold in `bodies`.
    pub fn with_bodies(self, bodies: BodyStore) -> Publisher {
        Publisher { bodies: Some(bodies), ..self }
    }

    /// The server's `max_payload`: the most bytes of one message, headers included.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// The most bytes of one message, headers included, the intake stream takes now: the
    /// server's `max_payload`, or the stream's `max_msg_size` when lower (asked only after a
    /// refusal, to name the limit in the 413).
    pub async fn largest_message(&self) -> usize {
        let stream_limit =
            match tokio::time::timeout(Duration::from_secs(1), self.js.get_stream(&self.stream_name)).await {
                Ok(Ok(stream)) => usize::try_from(stream.cached_info().config.max_message_size).ok().filter(|m| *m > 0),
                _ => None,
            };
        stream_limit.map_or(self.max_payload(), |limit| limit.min(self.max_payload()))
    }

    /// Stores `body` of `source` as an object of the bodies bucket and returns its claim, once
    /// the bucket acknowledged it, within `ingest.publish_timeout`.
    ///
    /// # Errors
    ///
    /// [`PublishFailure`] when it is not stored (or ingest has no bucket: never, since ingest
    /// opens it whenever a source accepts such bodies); nothing may be published then.
    pub async fn store_body(&self, source: &str, body: &Bytes) -> Result<BodyClaim, PublishFailure> {
        if !self.is_connected() {
            return Err(PublishFailure::Disconnected);
        }
        self.health.admit()?;
        let Some(bodies) = &self.bodies else { return Err(PublishFailure::Failed) };
        let started = Instant::now();
        // 25 MiB take tens of milliseconds to hash: off the request threads.
        let hashed = body.clone();
        let sha256 = tokio::task::spawn_blocking(move || inlet_shared::claim_check::sha256_hex(&hashed))
            .await
            .map_err(|_| PublishFailure::Failed)?;
        let stored = bodies.put(source, body, sha256, self.deadline).await.map_err(|error| {
            let failure = match error {
                ClaimCheckError::Timeout => PublishFailure::Timeout,
                _ if !self.is_connected() => PublishFailure::Disconnected,
                _ => PublishFailure::Failed,
            };
            tracing::debug!(%error, "body not stored in the bodies bucket");
            crate::metric_names::publish_failed(&self.stream_name, failure);
            failure
        })?;
        crate::metric_names::body_stored(started.elapsed());
        Ok(stored)
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The store's health as publishes and probes found it.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Whether the client is connected now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Connected and the stream answers an info request within a second. The answer is reused
    /// for [`READINESS_CACHE`], and callers arriving while it is being found wait for it rather
    /// than asking again, so NATS sees at most about one stream info request per interval however
    /// often this is called. The connection state is always current.
    pub async fn is_ready(&self) -> bool {
        if !self.is_connected() {
            return false;
        }
        let mut last = self.readiness.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < READINESS_CACHE
        {
            return ready;
        }
        let ready = matches!(
            tokio::time::timeout(Duration::from_secs(1), self.js.get_stream(&self.stream_name)).await,
            Ok(Ok(_))
        );
        *last = Some((Instant::now(), ready));
        ready
    }

    /// Publishes and waits for the PubAck, within the configured deadline in total.
    ///
    /// # Errors
    ///
    /// [`PublishFailure`] when there is no PubAck; the sender must retry.
    pub async fn publish(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        body: Bytes,
    ) -> Result<Stored, PublishFailure> {
        // Fail fast while disconnected: the client would buffer the publish and the request
        // would only time out.
        if !self.is_connected() {
            return Err(PublishFailure::Disconnected);
        }
        // Fail fast while the store is known to be failing (except for the periodic trial).
        self.health.admit()?;
        let result = self.publish_now(subject, headers, body).await;
        match result {
            Ok(stored) => self.health.record(Ok(matches!(stored, Stored::New(_)))),
            Err(failure) => {
                crate::metric_names::publish_failed(&self.stream_name, failure);
                self.health.record(Err(failure));
            }
        }
        result
    }

    async fn publish_now(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        body: Bytes,
    ) -> Result<Stored, PublishFailure> {
        let started = Instant::now();
        if let Some(batcher) = &self.batcher {
            let stored = batcher.publish(subject, headers, body, started + self.deadline).await?;
            crate::metric_names::published(started.elapsed());
            return Ok(stored);
        }
        let message = PublishMessage::build().payload(body).headers(headers);
        let attempt = async {
            let ack_future = self.js.send_publish(subject, message).await.map_err(|e| classify(&e))?;
            let ack = ack_future.await.map_err(|e| classify(&e))?;
            Ok::<_, PublishFailure>(ack)
        };
        let ack = tokio::time::timeout(self.deadline, attempt).await.map_err(|_| PublishFailure::Timeout)??;
        crate::metric_names::published(started.elapsed());
        Ok(if ack.duplicate { Stored::Duplicate(ack.sequence) } else { Stored::New(ack.sequence) })
    }

    /// Checks, without storing anything, whether the intake stream could store an event now:
    /// it answers, it has room under its own limits for the largest event, the account has room
    /// under its storage limit, and it has no sticky write error. The last is asked by purging
    /// [`ProbeTarget::subject`], a subject no event uses: a no-op, which nats-server answers
    /// with the stream's write error when it has one (10051 "write …: no space left on device"
    /// after ENOSPC, measured on 2.15.1) — the only way to see that state without the server's
    /// monitoring port. Publishing into the stream to find out would hand the worker junk.
    ///
    /// # Errors
    ///
    /// The [`PublishFailure`] that a publish would most likely meet.
    pub async fn probe(&self) -> Result<(), PublishFailure> {
        if !self.is_connected() {
            return Err(PublishFailure::Disconnected);
        }
        let room = self.probe.largest_event_bytes;
        let attempt = async {
            let stream = self.js.get_stream(&self.stream_name).await.map_err(|_| PublishFailure::Failed)?;
            let info = stream.cached_info();
            let (config, state) = (&info.config, &info.state);
            let bytes_full = config.max_bytes > 0 && state.bytes.saturating_add(room) > config.max_bytes.unsigned_abs();
            let messages_full = config.max_messages > 0 && state.messages >= config.max_messages.unsigned_abs();
            if bytes_full || messages_full {
                return Err(PublishFailure::StoreFull(StoreFull::StreamLimit));
            }
            let account = self.js.query_account().await.map_err(|_| PublishFailure::Failed)?;
            if let Some(limit) = account.limits.max_storage.filter(|limit| *limit > 0)
                && account.storage.saturating_add(room) > limit.unsigned_abs()
            {
                return Err(PublishFailure::StoreFull(StoreFull::AccountLimit));
            }
            match stream.purge().filter(self.probe.subject.clone()).await {
                Ok(_) => Ok(()),
                Err(error) => match error.kind() {
                    jetstream::stream::PurgeErrorKind::TimedOut => Err(PublishFailure::Timeout),
                    // JSStreamGeneralErrorF: the store's sticky write error. Other refusals
                    // (e.g. a purge denied by a `deny_purge` set out of band) say nothing
                    // about the store.
                    jetstream::stream::PurgeErrorKind::JetStream(api) if api.error_code().0 == 10051 => {
                        tracing::debug!(error = %api, "store probe: the stream reports a write error");
                        Err(PublishFailure::StoreFull(StoreFull::WriteFailed))
                    }
                    _ => Err(PublishFailure::Failed),
                },
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await.map_err(|_| PublishFailure::Timeout)?
    }
}

/// How long one probe may take in total.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server cannot give the `fsync` promise.
#[derive(Debug, thiserror::Error)]
pub enum FsyncCheckError {
    /// Atomic batches share one fsync only from 2.15.0.
    #[error(
        "stream.durability = \"fsync\" needs nats-server 2.15.0 or newer (batches fsync per message before); the server is {0}"
    )]
    ServerTooOld(String),
    /// The server does not fsync before acking.
    #[error(
        "stream.durability = \"fsync\" needs the server to run with `jetstream {{ sync_interval: always }}`; {0} says sync_always is false"
    )]
    NotSyncAlways(String),
    /// The monitoring endpoint did not answer usefully.
    #[error("cannot read {url}/varz to check sync_interval")]
    Monitoring {
        /// `nats.monitoring_url`.
        url: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The stream does not accept atomic batches.
    #[error("stream {0} does not allow atomic publish (allow_atomic)")]
    AtomicOff(String),
}

/// Checks, at startup in `fsync` mode, that the server and stream can give the promise:
/// server ≥ 2.15.0, `sync_interval: always`, atomic publish on the stream.
///
/// # Errors
///
/// [`FsyncCheckError`] saying what to change.
pub async fn verify_fsync_server(publisher: &Publisher, monitoring_url: &str) -> Result<(), FsyncCheckError> {
    let version = publisher.client.server_info().version;
    if !version_at_least(&version, (2, 15, 0)) {
        return Err(FsyncCheckError::ServerTooOld(version));
    }
    let url = monitoring_url.trim_end_matches('/').to_owned();
    let varz = http_get_json(&format!("{url}/varz"))
        .await
        .map_err(|source| FsyncCheckError::Monitoring { url: url.clone(), source })?;
    let sync_always =
        varz.pointer("/jetstream/config/sync_always").and_then(serde_json::Value::as_bool).unwrap_or(false);
    if !sync_always {
        return Err(FsyncCheckError::NotSyncAlways(format!("{url}/varz")));
    }
    let mut stream = publisher
        .js
        .get_stream(&publisher.stream_name)
        .await
        .map_err(|_| FsyncCheckError::AtomicOff(publisher.stream_name.clone()))?;
    let info = stream.info().await.map_err(|_| FsyncCheckError::AtomicOff(publisher.stream_name.clone()))?;
    if !info.config.allow_atomic_publish {
        return Err(FsyncCheckError::AtomicOff(publisher.stream_name.clone()));
    }
    Ok(())
}

/// `major.minor.patch` (ignoring any `-suffix`) is at least `minimum`.
pub fn version_at_least(version: &str, minimum: (u64, u64, u64)) -> bool {
    let core = version.trim_start_matches('v').split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor), Some(patch)) => (major, minor, patch) >= minimum,
        _ => false,
    }
}

/// Any error, kept whole (with its own causes) for the startup message.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A small GET for the monitoring endpoint (plain http on a trusted network).
async fn http_get_json(url: &str) -> Result<serde_json::Value, BoxError> {
    use http_body_util::BodyExt;
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().ok_or("URL has no host")?.to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .body(http_body_util::Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()).into());
        }
        let body = response.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.map_err(|_| BoxError::from("timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(version_at_least("2.15.1", (2, 15, 0)));
        assert!(version_at_least("2.15.0", (2, 15, 0)));
        assert!(version_at_least("v3.0.0-beta", (2, 15, 0)));
        assert!(!version_at_least("2.14.6", (2, 15, 0)));
        assert!(!version_at_least("2.9.10", (2, 15, 0)));
        assert!(!version_at_least("garbage", (2, 15, 0)));
    }
}
