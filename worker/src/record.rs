//! The recording loop: pulls events from the intake stream with a durable consumer, records
//! each batch in one SQLite transaction, enqueues one delivery task per (event, destination)
//! and only then acks the batch.
//!
//! Order matters for crash safety: commit, then publish tasks (PubAck awaited), then ack. A
//! crash anywhere before the ack makes JetStream redeliver; the event is then a duplicate in
//! SQLite, and its never-attempted deliveries are enqueued again (the delivery side ignores a
//! task for a delivery that is already in flight or finished).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt;
use inlet_shared::envelope;
use tokio_util::sync::CancellationToken;

use crate::events;
use crate::routes::Router;
use crate::store::{DeliveryTask, NewEvent, Recorded, Store};

/// Batches recorded but not yet settled, at most.
const MAX_SETTLING: usize = 4;

/// A batch whose transaction committed: its messages and the delivery tasks to enqueue (with
/// the index of the message each belongs to).
struct RecordedBatch {
    messages: Vec<jetstream::Message>,
    tasks: Vec<(usize, DeliveryTask)>,
}

/// What the recording loop needs.
pub struct Recorder {
    /// Database.
    pub store: Store,
    /// Routing table.
    pub router: Router,
    /// JetStream, for delivery tasks.
    pub js: jetstream::Context,
    /// `worker.delivery_subject_prefix`.
    pub delivery_subject_prefix: String,
    /// Messages per batch.
    pub batch_size: usize,
}

/// Why a message cannot be recorded at all (it is terminated, not retried).
#[derive(Debug, thiserror::Error)]
#[error("message lacks envelope header {0}")]
pub struct InvalidMessage(&'static str);

/// Reads the envelope headers of a stream message.
///
/// # Errors
///
/// [`InvalidMessage`] naming the missing header.
pub fn parse_message(message: &jetstream::Message, router: &Router) -> Result<NewEvent, InvalidMessage> {
    let headers = message.headers.as_ref().ok_or(InvalidMessage("(no headers)"))?;
    let get = |name: &'static str| headers.get(name).map(|v| v.as_str().to_owned());
    let required = |name: &'static str| get(name).filter(|v| !v.is_empty()).ok_or(InvalidMessage(name));
    let source = required(envelope::HEADER_SOURCE)?;
    let event_id = required(envelope::HEADER_EVENT_ID)?;
    let event_type = get(envelope::HEADER_EVENT_TYPE);
    let received_at_ms = required(envelope::HEADER_RECEIVED_AT)?
        .parse::<i64>()
        .map_err(|_| InvalidMessage(envelope::HEADER_RECEIVED_AT))?;
    let stream_sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    let destinations = router.destinations(&source, event_type.as_deref());
    Ok(NewEvent {
        id_origin: get(envelope::HEADER_ID_ORIGIN).unwrap_or_else(|| "provider".into()),
        scheme: get(envelope::HEADER_SCHEME).unwrap_or_default(),
        secret_index: get(envelope::HEADER_SECRET_INDEX).and_then(|v| v.parse().ok()).unwrap_or(0),
        content_type: get(envelope::HEADER_CONTENT_TYPE),
        headers_json: get(envelope::HEADER_ORIGINAL_HEADERS).unwrap_or_else(|| "[]".into()),
        body: Bytes::copy_from_slice(&message.payload),
        source,
        event_id,
        event_type,
        received_at_ms,
        stream_sequence,
        destinations,
    })
}

impl Recorder {
    /// Runs until `shutdown`; the batch in hand is finished and settled first.
    pub async fn run(self: Arc<Self>, consumer: PullConsumer, shutdown: CancellationToken) {
        let mut settling = tokio::task::JoinSet::new();
        while !shutdown.is_cancelled() {
            let Some(messages) = crate::pull::open(&consumer, self.batch_size, "intake", &shutdown).await else {
                break;
            };
            // Whatever is ready now becomes one batch: low latency when idle, large
            // transactions under load.
            let mut batches = messages.ready_chunks(self.batch_size);
            loop {
                let batch = tokio::select! {
                    () = shutdown.cancelled() => break,
                    batch = batches.next() => batch,
                };
                let Some(batch) = batch else { break };
                let mut ok = Vec::with_capacity(batch.len());
                for item in batch {
                    match item {
                        Ok(message) => ok.push(message),
                        Err(error) => tracing::debug!(%error, "pull stream error; continuing"),
                    }
                }
                if ok.is_empty() {
                    continue;
                }
                // Pipelined: the next batch is recorded while this one's delivery tasks are
                // enqueued and its messages acked. A few batches at most are in that stage.
                while settling.len() >= MAX_SETTLING {
                    let _ = settling.join_next().await;
                }
                if let Some(recorded) = self.record_batch(ok).await {
                    let this = Arc::clone(&self);
                    settling.spawn(async move { this.settle_batch(recorded).await });
                }
            }
        }
        // Shutdown: the batches in hand are settled before returning.
        while settling.join_next().await.is_some() {}
    }

    /// Records, enqueues and settles one batch, in order.
    pub async fn process_batch(&self, messages: Vec<jetstream::Message>) {
        if let Some(recorded) = self.record_batch(messages).await {
            self.settle_batch(recorded).await;
        }
    }

    /// Records one batch in one transaction. Messages that cannot be recorded are settled here
    /// (terminated when invalid, NAKed when the database failed); the rest come back with
    /// their delivery tasks.
    async fn record_batch(&self, messages: Vec<jetstream::Message>) -> Option<RecordedBatch> {
        let mut events = Vec::with_capacity(messages.len());
        let mut valid = Vec::with_capacity(messages.len());
        for message in messages {
            match parse_message(&message, &self.router) {
                Ok(event) => {
                    events.push(event);
                    valid.push(message);
                }
                Err(error) => {
                    // No key to record it under: terminate it so it cannot block the stream.
                    // It stays in the stream for inspection.
                    tracing::error!(%error, subject = %message.subject, "invalid message terminated");
                    events::event("_invalid", "invalid");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if events.is_empty() {
            return None;
        }
        let started = Instant::now();
        // Only the keys are needed after the write; the events themselves (bodies, headers) move
        // into the store instead of being copied.
        let keys: Vec<(String, String)> = events.iter().map(|e| (e.source.clone(), e.event_id.clone())).collect();
        let recorded = match self.store.record(events).await {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::error!(%error, "cannot record batch; messages will be redelivered");
                for message in &valid {
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
                return None;
            }
        };
        metrics::histogram!(events::BATCH_COMMIT).record(started.elapsed().as_secs_f64());

        let mut tasks: Vec<(usize, DeliveryTask)> = Vec::new();
        // Counted per batch: one labelled counter lookup per (source, outcome), not per event.
        let mut counts: std::collections::BTreeMap<(&str, &'static str), u64> = std::collections::BTreeMap::new();
        for (index, ((source, event_id), result)) in keys.iter().zip(&recorded).enumerate() {
            let (outcome, new_tasks) = match result {
                Recorded::New { tasks } if tasks.is_empty() => ("unrouted", tasks),
                Recorded::New { tasks } => ("recorded", tasks),
                Recorded::Duplicate { conflict: true, tasks } => ("conflict", tasks),
                Recorded::Duplicate { conflict: false, tasks } => ("duplicate", tasks),
            };
            if outcome == "conflict" {
                tracing::warn!(%source, %event_id, "same event id with a different body; kept the first");
            }
            *counts.entry((source.as_str(), outcome)).or_default() += 1;
            tasks.extend(new_tasks.iter().cloned().map(|task| (index, task)));
        }
        for ((source, outcome), n) in counts {
            events::events(source, outcome, n);
        }
        Some(RecordedBatch { messages: valid, tasks })
    }

    /// Enqueues a recorded batch's delivery tasks, then acks its messages (NAKs those whose
    /// tasks could not be enqueued, so the duplicate path enqueues them again).
    async fn settle_batch(&self, batch: RecordedBatch) {
        let RecordedBatch { messages: valid, tasks } = batch;
        let failed = self.enqueue(&tasks).await;
        for (index, message) in valid.iter().enumerate() {
            let result = if failed.contains(&index) {
                // Its delivery tasks may not be queued: redeliver, and the duplicate path
                // enqueues them again.
                message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await
            } else {
                message.ack().await
            };
            if let Err(error) = result {
                tracing::warn!(%error, "ack failed; the message will be redelivered and recognised as a duplicate");
            }
        }
    }

    /// Publishes delivery tasks; returns the indexes of events whose tasks were not all stored.
    async fn enqueue(&self, tasks: &[(usize, DeliveryTask)]) -> Vec<usize> {
        let mut pending = Vec::with_capacity(tasks.len());
        let mut failed = Vec::new();
        for (index, task) in tasks {
            let subject = format!("{}.{}", self.delivery_subject_prefix, task.destination);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(envelope::HEADER_MSG_ID, task.delivery_id.as_str());
            match self.js.publish_with_headers(subject, headers, Bytes::from(task.delivery_id.clone())).await {
                Ok(ack) => pending.push((*index, ack)),
                Err(error) => {
                    tracing::warn!(%error, "cannot publish delivery task");
                    failed.push(*index);
                }
            }
        }
        for (index, ack) in pending {
            if let Err(error) = ack.await {
                tracing::warn!(%error, "delivery task not acknowledged");
                failed.push(index);
            }
        }
        failed.sort_unstable();
        failed.dedup();
        failed
    }
}
