//! Group commit for `stream.durability = "fsync"`: concurrent requests share one fsync.
//!
//! With `sync_interval: always` the server fsyncs before every PubAck, so single publishes
//! top out at the disk's fsync rate. nats-server ≥ 2.15 fsyncs an *atomic batch* once. One
//! batcher task per process owns the publishing: it takes everything queued, sends it as one
//! atomic batch (at most [`MAX_BATCH`] messages; messages 1..n-1 as core publishes with
//! `Nats-Batch-Id`/`Nats-Batch-Sequence`, the last as a request with `Nats-Batch-Commit: 1`),
//! waits for the commit, then takes what queued meanwhile. Under light load the queue holds one
//! message, which goes out as a plain publish, so latency stays at the single-publish figure.
//! There is one batch in flight: the stream commits one batch at a time anyway.
//!
//! A batch succeeds or fails whole. Any failure (one duplicate `Nats-Msg-Id` rejects the whole
//! batch with 10201, a timeout leaves the outcome unknown) falls back to individual publishes
//! for that group, so every request gets its own accurate answer: stored, duplicate (a retry of
//! something stored, including by the failed batch), or unavailable.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::metric_names;
use crate::pub_ack::{PublishFailure, Stored, classify};

/// Most messages per atomic batch (the server's default limit).
pub const MAX_BATCH: usize = 1000;
/// Requests queued for the batcher at most; beyond it requests get 503 at once.
const QUEUE: usize = 20_000;

/// One message waiting for its ack.
struct Pending {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
    deadline: Instant,
    reply: oneshot::Sender<Result<Stored, PublishFailure>>,
}

/// Handle to the batcher task.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

/// JetStream's answer to a batch commit (or a single publish sent as a core request).
#[derive(Debug, serde::Deserialize)]
struct CommitReply {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Debug, serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
}

/// Why a group fell back to individual publishes (the `reason` label).
fn fallback_reason(error: &BatchError) -> &'static str {
    match error {
        BatchError::Duplicate => "duplicate",
        BatchError::Timeout => "timeout",
        BatchError::Rejected => "rejected",
        BatchError::Disconnected => "disconnected",
    }
}

#[derive(Debug)]
enum BatchError {
    /// 10201: a message id in the batch is already stored.
    Duplicate,
    /// No commit reply in time: outcome unknown.
    Timeout,
    /// Any other server error.
    Rejected,
    /// Could not send.
    Disconnected,
}

impl Batcher {
    /// Starts the batcher task on `client`; metrics are labelled with `stream`.
    pub fn start(client: async_nats::Client, js: jetstream::Context, stream: &str) -> Batcher {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let metrics = BatchMetrics {
            messages: metrics::histogram!(metric_names::BATCH_MESSAGES, "stream" => stream.to_owned()),
            commit: metrics::histogram!(metric_names::BATCH_COMMIT_DURATION, "stream" => stream.to_owned()),
            stream: stream.to_owned(),
        };
        tokio::spawn(run(client, js, receiver, metrics));
        Batcher { queue }
    }

    /// Queues one message and waits for its own ack (or failure), until `deadline`.
    ///
    /// # Errors
    ///
    /// [`PublishFailure`] when it was not acknowledged.
    pub async fn publish(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<Stored, PublishFailure> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending { subject, headers, payload, deadline, reply };
        self.queue.try_send(pending).map_err(|_| PublishFailure::Timeout)?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PublishFailure::Failed),
            Err(_) => Err(PublishFailure::Timeout),
        }
    }
}

struct BatchMetrics {
    messages: metrics::Histogram,
    commit: metrics::Histogram,
    stream: String,
}

async fn run(
    client: async_nats::Client,
    js: jetstream::Context,
    mut receiver: mpsc::Receiver<Pending>,
    metrics: BatchMetrics,
) {
    let mut group: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        group.push(first);
        while group.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        // Requests whose caller already answered 503 (deadline passed) are not sent: a 5xx
        // must not be followed by a store the sender does not know about, where avoidable.
        group.retain(|pending| !pending.reply.is_closed() && pending.deadline > Instant::now());
        if group.is_empty() {
            continue;
        }
        metrics.messages.record(group.len() as f64);
        if group.len() == 1 {
            let batch = std::mem::take(&mut group);
            individually(&js, batch).await;
            continue;
        }
        let started = Instant::now();
        match commit(&client, &group).await {
            Ok(last_sequence) => {
                metrics.commit.record(started.elapsed().as_secs_f64());
                let n = group.len() as u64;
                for (index, pending) in group.drain(..).enumerate() {
                    let sequence = last_sequence.saturating_sub(n - 1 - index as u64);
                    let _ = pending.reply.send(Ok(Stored::New(sequence)));
                }
            }
            Err(error) => {
                let reason = fallback_reason(&error);
                metrics::counter!(metric_names::BATCH_FALLBACKS, "stream" => metrics.stream.clone(), "reason" => reason)
                    .increment(1);
                tracing::debug!(reason, size = group.len(), "atomic batch failed; publishing individually");
                let batch = std::mem::take(&mut group);
                individually(&js, batch).await;
            }
        }
    }
}

/// Sends `group` as one atomic batch; returns the stream sequence of its last message.
async fn commit(client: &async_nats::Client, group: &[Pending]) -> Result<u64, BatchError> {
    // A fresh NUID (22 characters; unique across ingest replicas), borrowed from the inbox
    // generator since async-nats does not re-export its nuid.
    let inbox = client.new_inbox();
    let batch_id = inbox.rsplit('.').next().unwrap_or(inbox.as_str()).to_owned();
    let deadline = group.iter().map(|p| p.deadline).min().unwrap_or_else(Instant::now);
    let Some((last, rest)) = group.split_last() else { return Err(BatchError::Rejected) };
    for (index, pending) in rest.iter().enumerate() {
        let mut headers = pending.headers.clone();
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", (index + 1).to_string().as_str());
        client
            .publish_with_headers(pending.subject.clone(), headers, pending.payload.clone())
            .await
            .map_err(|_| BatchError::Disconnected)?;
    }
    let mut headers = last.headers.clone();
    headers.insert("Nats-Batch-Id", batch_id.as_str());
    headers.insert("Nats-Batch-Sequence", group.len().to_string().as_str());
    headers.insert("Nats-Batch-Commit", "1");
    let wait = deadline.saturating_duration_since(Instant::now());
    let request = client.request_with_headers(last.subject.clone(), headers, last.payload.clone());
    let reply = match tokio::time::timeout(wait, request).await {
        Err(_) => return Err(BatchError::Timeout),
        Ok(Err(_)) => return Err(BatchError::Timeout),
        Ok(Ok(message)) => message,
    };
    let answer: CommitReply = serde_json::from_slice(&reply.payload).map_err(|_| BatchError::Rejected)?;
    match (answer.error, answer.seq, answer.count) {
        (Some(error), _, _) if error.err_code == 10201 => Err(BatchError::Duplicate),
        (Some(_), _, _) => Err(BatchError::Rejected),
        (None, Some(sequence), Some(count)) if count == group.len() => Ok(sequence),
        _ => Err(BatchError::Rejected),
    }
}

/// Publishes each message on its own (concurrently) and answers each with its own ack.
async fn individually(js: &jetstream::Context, group: Vec<Pending>) {
    let mut sent = Vec::with_capacity(group.len());
    for pending in group {
        let message = PublishMessage::build().payload(pending.payload).headers(pending.headers);
        let future = js.send_publish(pending.subject, message).await;
        sent.push((future, pending.deadline, pending.reply));
    }
    for (future, deadline, reply) in sent {
        let result = match future {
            Err(error) => Err(classify(&error)),
            Ok(ack) => {
                let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                match tokio::time::timeout(wait, ack).await {
                    Err(_) => Err(PublishFailure::Timeout),
                    Ok(Err(error)) => Err(classify(&error)),
                    Ok(Ok(ack)) if ack.duplicate => Ok(Stored::Duplicate(ack.sequence)),
                    Ok(Ok(ack)) => Ok(Stored::New(ack.sequence)),
                }
            }
        };
        let _ = reply.send(result);
    }
}
