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
}

impl Publisher {
    /// Wraps a connected client.
    pub fn new(client: async_nats::Client, stream_name: String, deadline: Duration) -> Publisher {
        let js = jetstream::new(client.clone());
        Publisher { client, js, stream_name, deadline }
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

fn classify(kind: PublishErrorKind) -> PublishFailure {
    match kind {
        PublishErrorKind::TimedOut => PublishFailure::Timeout,
        PublishErrorKind::BrokenPipe => PublishFailure::Disconnected,
        PublishErrorKind::MaxPayloadExceeded => PublishFailure::TooLarge,
        _ => PublishFailure::Failed,
    }
}
