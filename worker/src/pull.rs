//! Opening a JetStream pull stream for a durable consumer, retrying with capped backoff while
//! the broker is unreachable, until it opens or shutdown is requested; and reading how far the
//! recording consumer has recorded the intake stream (its ack floor), which ordered claims wait
//! for when several workers record ([`RecordedFloor`]).

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{PullConsumer, pull};
use tokio_util::sync::CancellationToken;

use crate::model::UnixMs;
use crate::store::RecordingGate;

/// How long a read ack floor is used before it is read again: claims of ordered deliveries ask
/// for it, so this bounds the requests to the server (one per worker per this time, however many
/// destinations ask) and adds at most this much to an ordered delivery's wait.
pub const FLOOR_MAX_AGE: Duration = Duration::from_millis(20);

/// How long a read of the floor may take; past it the floor counts as unknown for
/// [`FLOOR_MAX_AGE`] (ordered deliveries then wait out `settle_after`).
const FLOOR_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Added to the consumer's `ack_wait` for `RecordedFloor::settle_after`: a killed worker's
/// unacknowledged messages come back after `ack_wait` and are recorded within this.
const SETTLE_MARGIN: Duration = Duration::from_secs(10);

/// The recording consumer's ack floor, as a [`RecordingGate`] for claims of ordered deliveries
/// when several workers record (PostgreSQL). A message is acked only after the transaction that
/// recorded it committed, and the server's ack floor is the highest stream sequence at and below
/// which every message the consumer was given is acked (messages it never gives — other subjects,
/// deleted ones — do not hold it; terminated ones count as acked). So every intake message at or
/// below the floor is recorded, and an ordered delivery at position `floor + 1` or below has no
/// earlier message left to record: its own message need not be acked yet, it is recorded.
///
/// Read at most every [`FLOOR_MAX_AGE`], one read at a time, shared by the worker's destinations.
pub struct RecordedFloor {
    consumer: PullConsumer,
    /// How long after its recording an ordered delivery is claimed whatever the floor says, so
    /// that none waits forever on a floor that does not move: a message NAKed again and again
    /// (a claim-checked body that cannot be fetched), or the intake stream made again (its
    /// sequences start over).
    settle_after: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Option<u64>)>>,
}

impl RecordedFloor {
    /// The floor of `consumer`, whose messages are redelivered after `ack_wait`.
    pub fn new(consumer: PullConsumer, ack_wait: Duration) -> RecordedFloor {
        RecordedFloor { consumer, settle_after: ack_wait + SETTLE_MARGIN, last: tokio::sync::Mutex::new(None) }
    }

    /// The gate for a claim now: the floor read at most [`FLOOR_MAX_AGE`] ago (0 when it cannot
    /// be read: then only the time bound lets ordered deliveries through).
    pub async fn gate(&self) -> RecordingGate {
        let floor = {
            let mut last = self.last.lock().await;
            match *last {
                Some((read_at, floor)) if read_at.elapsed() < FLOOR_MAX_AGE => floor,
                _ => {
                    let floor = match tokio::time::timeout(FLOOR_READ_TIMEOUT, self.consumer.get_info()).await {
                        Ok(Ok(info)) => Some(info.ack_floor.stream_sequence),
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "cannot read the recording consumer's ack floor; ordered deliveries wait");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(
                                "reading the recording consumer's ack floor timed out; ordered deliveries wait"
                            );
                            None
                        }
                    };
                    *last = Some((Instant::now(), floor));
                    floor
                }
            }
        };
        RecordingGate {
            through_position: floor.map_or(0, |floor| i64::try_from(floor).unwrap_or(i64::MAX - 1).saturating_add(1)),
            settled_before: UnixMs::now().minus(self.settle_after),
        }
    }
}

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
