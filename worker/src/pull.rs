//! Opening a JetStream pull stream for a durable consumer, retrying with capped backoff while
//! the broker is unreachable, until it opens or shutdown is requested.

use std::time::Duration;

use async_nats::jetstream::consumer::{PullConsumer, pull};
use tokio_util::sync::CancellationToken;

/// A continuous pull of up to `batch` messages per request, with idle heartbeats; `None` when
/// shutdown came first. `what` names the consumer in logs.
pub async fn open(
    consumer: &PullConsumer,
    batch: usize,
    what: &str,
    shutdown: &CancellationToken,
) -> Option<pull::Stream> {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match consumer.stream().max_messages_per_batch(batch).heartbeat(Duration::from_secs(5)).messages().await {
            Ok(messages) => return Some(messages),
            Err(error) => {
                tracing::warn!(%error, consumer = what, "cannot start pulling; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    None
}
