//! Publishing verified events to JetStream and waiting for the PubAck.
//!
//! A request is answered 2xx only when [`Publisher::publish`] returned `Ok`, which means the
//! PubAck arrived: the server stored the message (or recognised it as a duplicate of a stored
//! one). Any other result becomes a 503 so the sender retries; a retry carries the same
//! `Nats-Msg-Id`, so a message that was stored after all is reported as a duplicate, never
//! stored twice.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;

/// What JetStream said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Newly stored at this stream sequence.
    New(u64),
    /// Already stored (same `Nats-Msg-Id` within the duplicate window).
    Duplicate(u64),
}

/// Why no PubAck came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishFailure {
    /// The client is not connected right now.
    Disconnected,
    /// No PubAck within the deadline.
    Timeout,
    /// Message too large for the server's `max_payload`.
    TooLarge,
    /// Any other server or client error (no stream, no responders, …).
    Failed,
}

impl PublishFailure {
    /// Short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishFailure::Disconnected => "nats_disconnected",
            PublishFailure::Timeout => "puback_timeout",
            PublishFailure::TooLarge => "exceeds_max_payload",
            PublishFailure::Failed => "publish_failed",
        }
    }
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
}

impl Publisher {
    /// Wraps a connected client; `group_commit` turns on the batcher (`fsync` durability).
    pub fn new(client: async_nats::Client, stream_name: String, deadline: Duration, group_commit: bool) -> Publisher {
        let js = jetstream::new(client.clone());
        let batcher = group_commit.then(|| crate::batch::Batcher::start(client.clone(), js.clone(), &stream_name));
        Publisher { client, js, stream_name, deadline, batcher }
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether the client is connected now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Connected and the stream answers an info request within a second.
    pub async fn is_ready(&self) -> bool {
        if !self.is_connected() {
            return false;
        }
        matches!(tokio::time::timeout(Duration::from_secs(1), self.js.get_stream(&self.stream_name)).await, Ok(Ok(_)))
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
        let started = Instant::now();
        if let Some(batcher) = &self.batcher {
            let stored = batcher.publish(subject, headers, body, started + self.deadline).await?;
            crate::events::published(started.elapsed());
            return Ok(stored);
        }
        let message = PublishMessage::build().payload(body).headers(headers);
        let attempt = async {
            let ack_future = self.js.send_publish(subject, message).await.map_err(|e| classify(e.kind()))?;
            let ack = ack_future.await.map_err(|e| classify(e.kind()))?;
            Ok::<_, PublishFailure>(ack)
        };
        let ack = tokio::time::timeout(self.deadline, attempt).await.map_err(|_| PublishFailure::Timeout)??;
        crate::events::published(started.elapsed());
        Ok(if ack.duplicate { Stored::Duplicate(ack.sequence) } else { Stored::New(ack.sequence) })
    }
}

/// Maps async-nats publish errors to our failure kinds.
pub(crate) fn classify(kind: PublishErrorKind) -> PublishFailure {
    match kind {
        PublishErrorKind::TimedOut => PublishFailure::Timeout,
        PublishErrorKind::BrokenPipe => PublishFailure::Disconnected,
        PublishErrorKind::MaxPayloadExceeded => PublishFailure::TooLarge,
        _ => PublishFailure::Failed,
    }
}

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
    #[error("cannot read {url}/varz to check sync_interval: {reason}")]
    Monitoring {
        /// `nats.monitoring_url`.
        url: String,
        /// What went wrong.
        reason: String,
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
        .map_err(|reason| FsyncCheckError::Monitoring { url: url.clone(), reason })?;
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

/// A small GET for the monitoring endpoint (plain http on a trusted network).
async fn http_get_json(url: &str) -> Result<serde_json::Value, String> {
    use http_body_util::BodyExt;
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let authority = uri.authority().ok_or("URL has no host")?.to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.map_err(|_| "timed out".to_owned())?
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
