//! Attempt results on PostgreSQL, grouped (see `store/deliveries.rs` for the contract).
//!
//! Every delivery attempt ends with one result to record, so on the hot path this is the
//! most frequent write. One transaction per result cost PostgreSQL a commit (a WAL flush) and
//! three round trips each; SQLite's single writer groups them instead. Here one task takes
//! whatever results are queued (up to [`MAX_GROUP`]) and records them with **one statement**
//! over arrays, in autocommit: one round trip and one commit for the group. Each row is still
//! fenced by its own lease token, so a stale owner's result in a group changes nothing and is
//! answered `Superseded`, exactly as alone.
//!
//! Results of one worker go through its one task, one group at a time; two workers' groups
//! touch different deliveries (each destination has one holder), so groups never wait for
//! each other's rows.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{PgError, Pool};
use crate::model::{DeliveryId, DeliveryStatus, LeaseToken, UnixMs};
use crate::store::{AttemptRecord, AttemptSettled, NextStep};

/// Results recorded in one statement at most.
const MAX_GROUP: usize = 512;

/// One result waiting to be recorded, and where its answer goes.
pub(super) type Queued = (AttemptRecord, oneshot::Sender<Result<AttemptSettled, PgError>>);

/// Records queued results in groups until every sender is gone.
pub(super) async fn attempt_writer(pool: Pool, mut queue: mpsc::Receiver<Queued>, writes_failing: Arc<AtomicBool>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let records: Vec<&AttemptRecord> = group.iter().map(|(record, _)| record).collect();
        let result = record_group(&pool, &records).await;
        match &result {
            Ok(_) => {
                writes_failing.store(false, Ordering::SeqCst);
                metrics::histogram!(crate::metric_names::DB_COMMIT).record(started.elapsed().as_secs_f64());
                metrics::histogram!(crate::metric_names::DB_GROUP).record(group.len() as f64);
                metrics::histogram!(crate::metric_names::DB_GROUP_DURATION).record(started.elapsed().as_secs_f64());
            }
            Err(error) if error.is_unavailable() => writes_failing.store(true, Ordering::SeqCst),
            Err(_) => {}
        }
        match result {
            Ok(recorded) => {
                for (record, reply) in group {
                    let key = (record.delivery_id, record.lease_token);
                    let settled =
                        if recorded.contains(&key) { AttemptSettled::Recorded } else { AttemptSettled::Superseded };
                    let _ = reply.send(Ok(settled));
                }
            }
            Err(error) => {
                // Nothing of the group is stored (one statement): each caller retries.
                let message = error.to_string();
                let mut error = Some(error);
                for (_, reply) in group {
                    let answer = error.take().unwrap_or_else(|| PgError::Refused(message.clone()));
                    let _ = reply.send(Err(answer));
                }
            }
        }
    }
}

/// Records `records` in one statement; returns the (delivery, token) pairs whose result was
/// recorded (the others were superseded).
async fn record_group(pool: &Pool, records: &[&AttemptRecord]) -> Result<HashSet<(DeliveryId, LeaseToken)>, PgError> {
    let now = UnixMs::now();
    let mut ids = Vec::with_capacity(records.len());
    let mut tokens = Vec::with_capacity(records.len());
    let mut statuses = Vec::with_capacity(records.len());
    let mut attempts = Vec::with_capacity(records.len());
    let mut next_at = Vec::with_capacity(records.len());
    let mut delivered_at = Vec::with_capacity(records.len());
    let mut codes = Vec::with_capacity(records.len());
    let mut errors = Vec::with_capacity(records.len());
    let mut reasons = Vec::with_capacity(records.len());
    let mut started = Vec::with_capacity(records.len());
    let mut durations = Vec::with_capacity(records.len());
    let mut outcomes = Vec::with_capacity(records.len());
    let mut snippets = Vec::with_capacity(records.len());
    for record in records {
        let (status, next, delivered, reason) = match record.next {
            NextStep::Delivered => (DeliveryStatus::Delivered, None, Some(now.0), None),
            NextStep::RetryAt(at) => (DeliveryStatus::Pending, Some(at.0), None, None),
            NextStep::DeadLetter(reason) => (DeliveryStatus::DeadLettered, None, None, Some(reason.as_str())),
        };
        ids.push(record.delivery_id.as_str());
        tokens.push(record.lease_token.0);
        statuses.push(status.as_str());
        attempts.push(record.attempt);
        next_at.push(next);
        delivered_at.push(delivered);
        codes.push(record.status_code.map(i64::from));
        errors.push(record.error.as_deref());
        reasons.push(reason);
        started.push(record.started_at.0);
        durations.push(record.duration_ms);
        outcomes.push(record.outcome.as_str());
        snippets.push(record.response_snippet.as_deref());
    }
    let client = pool.get().await?;
    // Fenced per row, as alone: only the holder of a delivery's current lease token moves it
    // on, and its attempt row is written from the row it updated (numbered from its
    // `attempt_base`). `moved` names the (delivery, token) pairs that were recorded.
    let statement = client
        .prepare_cached(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                                      $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[],
                                      $13::text[])
                     AS i (id, token, status, attempt, next_at, delivered_at, code, error, reason, started_at,
                           duration, outcome, snippet)
             ),
             moved AS (
                 UPDATE deliveries d SET status = i.status, attempts = greatest(d.attempts, i.attempt + d.attempt_base),
                     updated_at_ms = $14, next_attempt_at_ms = i.next_at,
                     delivered_at_ms = coalesce(i.delivered_at, d.delivered_at_ms), last_status_code = i.code,
                     last_error = i.error, dead_letter_reason = i.reason, lease_until_ms = NULL
                 FROM input i
                 WHERE d.id = i.id AND d.lease_token = i.token AND d.status = 'pending'
                 RETURNING d.id, d.attempt_base, i.token
             ),
             written AS (
                 INSERT INTO attempts (delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code, error,
                                       response_snippet)
                 SELECT m.id, i.attempt + m.attempt_base, i.started_at, i.duration, i.outcome, i.code, i.error, i.snippet
                 FROM moved m JOIN input i ON i.id = m.id AND i.token = m.token
                 ON CONFLICT (delivery_id, attempt) DO UPDATE SET
                     started_at_ms = excluded.started_at_ms, duration_ms = excluded.duration_ms,
                     outcome = excluded.outcome, status_code = excluded.status_code, error = excluded.error,
                     response_snippet = excluded.response_snippet
             )
             SELECT id, token FROM moved",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &ids,
                &tokens,
                &statuses,
                &attempts,
                &next_at,
                &delivered_at,
                &codes,
                &errors,
                &reasons,
                &started,
                &durations,
                &outcomes,
                &snippets,
                &now,
            ],
        )
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}
