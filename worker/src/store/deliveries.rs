//! The delivery schedule: claiming due deliveries under a lease with a fencing token, renewing
//! and releasing leases, and recording an attempt's result (fenced: only under the lease it ran
//! with).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use rusqlite::{OptionalExtension, params};
use tokio::sync::oneshot;

use super::StoreError;
use super::sqlite::Sqlite;
use super::writer::Command;
use crate::model::{AttemptOutcome, ConfigVersion, DeadLetterReason, DeliveryId, DeliveryStatus, LeaseToken, UnixMs};

/// The lease under which one process owns a delivery's next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token: the delivery's `lease_token` when it was claimed. An attempt's result
    /// is recorded only while it is still the delivery's.
    pub token: LeaseToken,
    /// Until when the claim holds; after it the delivery may be claimed again.
    pub until: UnixMs,
}

/// A delivery claimed for one attempt: what to send and the lease that makes it ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// What to send.
    pub delivery: DeliveryToSend,
    /// The claim.
    pub lease: Lease,
}

/// Which due deliveries a claim takes: first attempts and retries have separate capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueClass {
    /// Never attempted since it was recorded or replayed.
    First,
    /// Attempted before and scheduled again.
    Retry,
}

/// Whether an attempt's result was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptSettled {
    /// Recorded: the delivery moved on.
    Recorded,
    /// Not recorded: the lease it ran under was taken over (or the delivery is no longer
    /// pending), so a newer owner decides. Only this attempt's own result is dropped.
    Superseded,
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Done: delivered.
    Delivered,
    /// Try again at this time.
    RetryAt(UnixMs),
    /// Give up.
    DeadLetter(DeadLetterReason),
}

/// One attempt to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Delivery id.
    pub delivery_id: DeliveryId,
    /// 1-based attempt number.
    pub attempt: i64,
    /// Start.
    pub started_at: UnixMs,
    /// Duration in ms.
    pub duration_ms: i64,
    /// Outcome class.
    pub outcome: AttemptOutcome,
    /// HTTP status, if the destination answered.
    pub status_code: Option<u16>,
    /// Short error text (timeouts, connection errors), if any.
    pub error: Option<String>,
    /// First bytes of the response body.
    pub response_snippet: Option<String>,
    /// What happens next.
    pub next: NextStep,
    /// The fencing token of the lease the attempt ran under.
    pub lease_token: LeaseToken,
}

/// A delivery with what is needed to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryToSend {
    /// Delivery id.
    pub delivery_id: DeliveryId,
    /// Destination name.
    pub destination: String,
    /// Attempts made since the delivery was created or last replayed (a replay starts a fresh
    /// retry schedule; the attempts table keeps numbering on, see `record_attempt`).
    pub attempts: i64,
    /// Attempts made before the latest replay (0 when never replayed): the attempts table's
    /// number for the next attempt is `attempt_base + attempts + 1`, and so is the
    /// `Inlet-Delivery-Attempt` header.
    pub attempt_base: i64,
    /// Source name.
    pub source: String,
    /// Provider event id.
    pub event_id: String,
    /// Event type.
    pub event_type: Option<String>,
    /// Original content type.
    pub content_type: Option<String>,
    /// Ingest receipt time.
    pub received_at: UnixMs,
    /// Raw body.
    pub body: Bytes,
    /// The stored request headers (`[[name, value], …]`): what a route's filter sees, to tell
    /// which route's transform applies.
    pub headers_json: String,
    /// The event's record span (`traceparent`), the parent of the attempt's span (traces on).
    pub trace_context: Option<String>,
    /// Whether it has an ordering key: its end (delivered, dead-lettered) may let the key's
    /// next delivery go, so the destination's schedulers look again.
    pub ordered: bool,
    /// The routing config whose transform its attempts run: `None`, the worker's current one
    /// (every routed delivery, replays "current"); set by a replay "as received" to the
    /// version its event was routed with.
    pub config_version: Option<ConfigVersion>,
}

/// What holds back an ordered delivery `d` (a row of `deliveries`) at `?3` (now), SQLite's
/// spelling ([`ORDER_FREE_PG`] is PostgreSQL's): another delivery of its (destination, key)
/// still pending that is earlier or in flight (leased), or an earlier dead letter that blocks
/// the key. An unordered delivery is never held. The statuses stay literals so that the partial
/// indexes `deliveries_ordering_pending` and `deliveries_ordering_blocked` apply.
pub(super) const ORDER_FREE: &str = "(d.ordering_key IS NULL OR (
    NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'pending' AND p.destination = d.destination
                AND p.ordering_key = d.ordering_key AND p.id <> d.id
                AND (p.ordering_position < d.ordering_position OR p.lease_until_ms >= ?3))
    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'dead_lettered' AND p.ordering_blocks = 1
                    AND p.destination = d.destination AND p.ordering_key = d.ordering_key
                    AND p.ordering_position < d.ordering_position)))";

/// [`ORDER_FREE`] in PostgreSQL's spelling (`$3`: now).
pub(super) const ORDER_FREE_PG: &str = "(d.ordering_key IS NULL OR (
    NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'pending' AND p.destination = d.destination
                AND p.ordering_key = d.ordering_key AND p.id <> d.id
                AND (p.ordering_position < d.ordering_position OR p.lease_until_ms >= $3))
    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'dead_lettered' AND p.ordering_blocks
                    AND p.destination = d.destination AND p.ordering_key = d.ordering_key
                    AND p.ordering_position < d.ordering_position)))";

/// Which ordered deliveries a claim may take, with several recorders (PostgreSQL): only those
/// whose every earlier intake message is recorded, so that a key's later delivery, recorded by
/// one worker, is never claimed before an earlier one another worker has pulled but not recorded
/// yet. Unordered deliveries are never held by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingGate {
    /// Ordered deliveries at or below this ordering position (intake stream sequence) may be
    /// claimed: the recording consumer's ack floor plus one (every message at or below the floor
    /// is recorded, since a message is acked only after its recording committed; the delivery's
    /// own message is recorded, being in the store). 0 when the floor could not be read.
    pub through_position: i64,
    /// Ordered deliveries recorded before this are claimed whatever `through_position` says, so
    /// that none waits forever on a floor that does not move (a message NAKed again and again,
    /// the intake stream made again: sequences start over).
    pub settled_before: UnixMs,
}

/// What a claim takes (see [`Store::claim_due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimDue {
    /// First attempts or retries.
    pub class: DueClass,
    /// How many at most.
    pub limit: usize,
    /// Due at this time.
    pub now: UnixMs,
    /// Each claim holds until then.
    pub lease_until: UnixMs,
    /// Deliveries this process holds (waiting or being attempted): not claimed again.
    pub skip: Vec<DeliveryId>,
    /// With several recorders: which ordered deliveries may be claimed yet.
    pub gate: Option<RecordingGate>,
}

/// What [`RecordingGate`] lets through, SQLite's spelling (`?5`: the gate's position, NULL for
/// no gate; `?6`: its `settled_before`).
const RECORDED_BEFORE: &str = "(d.ordering_key IS NULL OR ?5 IS NULL OR d.ordering_position <= ?5
    OR d.created_at_ms < ?6)";

/// [`RECORDED_BEFORE`] in PostgreSQL's spelling (`$7`, `$8`).
pub(super) const RECORDED_BEFORE_PG: &str = "(d.ordering_key IS NULL OR $7::bigint IS NULL
    OR d.ordering_position <= $7 OR d.created_at_ms < $8)";

/// Whether a delivery `d` is an ordered one waiting for an earlier delivery of its (destination,
/// key): `d` pending, and an earlier one of the key still pending or a dead letter that blocks
/// the key. `$blocks` completes `p.ordering_blocks` into each backend's partial-index predicate
/// (SQLite `" = 1"`, PostgreSQL `""`). The console and the API show it; the
/// `inlet_worker_ordered_deliveries_waiting` gauge counts it.
macro_rules! waits_for_earlier {
    ($blocks:literal) => {
        concat!(
            "(d.status = 'pending' AND d.ordering_key IS NOT NULL AND (
    EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'pending' AND p.destination = d.destination
            AND p.ordering_key = d.ordering_key AND p.ordering_position < d.ordering_position)
    OR EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'dead_lettered' AND p.ordering_blocks",
            $blocks,
            "
               AND p.destination = d.destination AND p.ordering_key = d.ordering_key
               AND p.ordering_position < d.ordering_position)))"
        )
    };
}
pub(super) use waits_for_earlier;

/// [`waits_for_earlier`] in SQLite's spelling.
pub(super) const WAITS_FOR_EARLIER: &str = waits_for_earlier!(" = 1");

/// [`waits_for_earlier`] in PostgreSQL's spelling.
pub(super) const WAITS_FOR_EARLIER_PG: &str = waits_for_earlier!("");

/// See [`Store::claim_due`].
///
/// The status stays a literal in these statements (not a bound label): SQLite uses the partial
/// index `deliveries_due` (`WHERE status = 'pending'`) only when the query repeats its
/// predicate literally.
fn claim_due(
    connection: &rusqlite::Connection,
    destination: &str,
    request: &ClaimDue,
) -> Result<Vec<(DeliveryId, Lease, bool)>, rusqlite::Error> {
    let ClaimDue { class, limit, now, lease_until, gate, .. } = *request;
    let skip: HashSet<&DeliveryId> = request.skip.iter().collect();
    let wanted = i64::try_from(limit.saturating_add(skip.len())).unwrap_or(i64::MAX);
    let candidates: Vec<(DeliveryId, Option<UnixMs>)> = connection
        .prepare_cached(&format!(
            "SELECT d.id, d.lease_until_ms FROM deliveries d INDEXED BY deliveries_due
             WHERE d.status = 'pending' AND d.destination = ?1 AND (d.attempts > d.attempt_base) = ?2
               AND d.next_attempt_at_ms <= ?3 AND (d.lease_until_ms IS NULL OR d.lease_until_ms < ?3)
               AND {ORDER_FREE} AND {RECORDED_BEFORE}
             ORDER BY d.next_attempt_at_ms LIMIT ?4"
        ))?
        .query_map(
            params![
                destination,
                i64::from(class == DueClass::Retry),
                now,
                wanted,
                gate.map(|g| g.through_position),
                gate.map(|g| g.settled_before)
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut claim = connection.prepare_cached(
        "UPDATE deliveries SET lease_token = lease_token + 1, lease_until_ms = ?2 WHERE id = ?1 RETURNING lease_token",
    )?;
    let mut claimed = Vec::with_capacity(limit.min(candidates.len()));
    for (id, previous_lease) in candidates {
        if claimed.len() >= limit {
            break;
        }
        if skip.contains(&id) {
            continue;
        }
        let token: LeaseToken = claim.query_row(params![id, lease_until], |r| r.get(0))?;
        claimed.push((id, Lease { token, until: lease_until }, previous_lease.is_some()));
    }
    Ok(claimed)
}

/// The deliveries `ids` with their events, for sending.
fn read_deliveries_to_send(
    connection: &rusqlite::Connection,
    ids: &[DeliveryId],
) -> Result<HashMap<DeliveryId, DeliveryToSend>, rusqlite::Error> {
    // Cached: this runs once per claimed delivery.
    let mut statement = connection.prepare_cached(
        "SELECT d.id, d.destination, d.attempts - d.attempt_base, e.source, e.event_id, e.event_type,
                e.content_type, e.received_at_ms, e.body, d.attempt_base, e.trace_context, e.headers_json,
                d.ordering_key IS NOT NULL, d.config_version
         FROM deliveries d JOIN events e ON e.id = d.event_rowid WHERE d.id = ?1",
    )?;
    let mut found = HashMap::with_capacity(ids.len());
    for id in ids {
        let delivery = statement
            .query_row([id], |row| {
                Ok(DeliveryToSend {
                    delivery_id: row.get(0)?,
                    destination: row.get(1)?,
                    attempts: row.get(2)?,
                    source: row.get(3)?,
                    event_id: row.get(4)?,
                    event_type: row.get(5)?,
                    content_type: row.get(6)?,
                    received_at: row.get(7)?,
                    body: row.get::<_, Vec<u8>>(8)?.into(),
                    attempt_base: row.get(9)?,
                    trace_context: row.get(10)?,
                    headers_json: row.get(11)?,
                    ordered: row.get(12)?,
                    config_version: row.get(13)?,
                })
            })
            .optional()?;
        if let Some(delivery) = delivery {
            found.insert(id.clone(), delivery);
        }
    }
    Ok(found)
}

pub(super) fn record_attempt(
    connection: &rusqlite::Connection,
    record: &AttemptRecord,
    now: UnixMs,
) -> Result<AttemptSettled, rusqlite::Error> {
    let (status, next_attempt_at, delivered_at, reason) = match record.next {
        NextStep::Delivered => (DeliveryStatus::Delivered, None, Some(now), None),
        NextStep::RetryAt(at) => (DeliveryStatus::Pending, Some(at), None, None),
        NextStep::DeadLetter(reason) => (DeliveryStatus::DeadLettered, None, None, Some(reason)),
    };
    // Fenced: only the holder of the delivery's current lease token moves it on. A stale owner
    // (its lease expired and another claim took over) changes nothing, and its attempt row is
    // not written either, so it cannot overwrite the newer attempt's.
    let changed = connection
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, attempts = max(attempts, ?3 + attempt_base), updated_at_ms = ?4,
                 next_attempt_at_ms = ?5, delivered_at_ms = coalesce(?6, delivered_at_ms),
                 last_status_code = ?7, last_error = ?8, dead_letter_reason = ?9, lease_until_ms = NULL
             WHERE id = ?1 AND lease_token = ?10 AND status = 'pending'",
        )?
        .execute(params![
            record.delivery_id,
            status,
            record.attempt,
            now,
            next_attempt_at,
            delivered_at,
            record.status_code,
            record.error,
            reason,
            record.lease_token,
        ])?;
    if changed == 0 {
        return Ok(AttemptSettled::Superseded);
    }
    // `record.attempt` counts from the latest replay; stored numbers continue across replays,
    // so the delivery's `attempt_base` is added (read inside the statement, not by another).
    connection
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code, error,
                                   response_snippet)
             VALUES (?1, ?2 + coalesce((SELECT attempt_base FROM deliveries WHERE id = ?1), 0), ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (delivery_id, attempt) DO UPDATE SET
                 started_at_ms = excluded.started_at_ms, duration_ms = excluded.duration_ms,
                 outcome = excluded.outcome, status_code = excluded.status_code, error = excluded.error,
                 response_snippet = excluded.response_snippet",
        )?
        .execute(params![
            record.delivery_id,
            record.attempt,
            record.started_at,
            record.duration_ms,
            record.outcome,
            record.status_code,
            record.error,
            record.response_snippet,
        ])?;
    Ok(AttemptSettled::Recorded)
}

impl Sqlite {
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<AttemptSettled, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(Command::Attempt { record, reply }).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn claim_due(
        &self,
        destination: String,
        request: ClaimDue,
    ) -> Result<(Vec<Claimed>, Vec<DeliveryId>), StoreError> {
        let claimed: Vec<(DeliveryId, Lease, bool)> = self.write(move |c| claim_due(c, &destination, &request)).await?;
        if claimed.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let restarted: Vec<DeliveryId> = claimed.iter().filter(|(_, _, r)| *r).map(|(id, _, _)| id.clone()).collect();
        let ids: Vec<DeliveryId> = claimed.iter().map(|(id, _, _)| id.clone()).collect();
        let mut deliveries = match self.read(move |c| read_deliveries_to_send(c, &ids)).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                // Give the claims back, or they would wait out their lease.
                let leases = claimed.iter().map(|(id, lease, _)| (id.clone(), lease.token)).collect();
                let _ = self.release_leases(leases).await;
                return Err(error);
            }
        };
        let mut out = Vec::with_capacity(claimed.len());
        for (id, lease, _) in claimed {
            // A delivery pruned between the claim and the read is simply gone.
            if let Some(delivery) = deliveries.remove(&id) {
                out.push(Claimed { delivery, lease });
            }
        }
        Ok((out, restarted))
    }

    pub async fn has_due(&self, destination: String, class: DueClass, now: UnixMs) -> Result<bool, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM deliveries d INDEXED BY deliveries_due
                 WHERE d.status = 'pending' AND d.destination = ?1 AND (d.attempts > d.attempt_base) = ?2
                   AND d.next_attempt_at_ms <= ?3 AND (d.lease_until_ms IS NULL OR d.lease_until_ms < ?3)
                   AND {ORDER_FREE})"
            ))?
            .query_row(params![destination, i64::from(class == DueClass::Retry), now], |r| r.get(0))
        })
        .await
    }

    pub async fn renew_lease(
        &self,
        delivery_id: DeliveryId,
        token: LeaseToken,
        until: UnixMs,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            let changed = c.execute(
                "UPDATE deliveries SET lease_until_ms = ?3 WHERE id = ?1 AND lease_token = ?2 AND status = 'pending'",
                params![delivery_id, token, until],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    pub async fn release_leases(&self, leases: Vec<(DeliveryId, LeaseToken)>) -> Result<(), StoreError> {
        self.write(move |c| {
            let mut release = c.prepare_cached(
                "UPDATE deliveries SET lease_until_ms = NULL WHERE id = ?1 AND lease_token = ?2 AND status = 'pending'",
            )?;
            for (id, token) in &leases {
                release.execute(params![id, token])?;
            }
            Ok(())
        })
        .await
    }

    pub async fn release_all_leases(&self) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        self.write(|c| {
            let mut statement = c.prepare(
                "UPDATE deliveries SET lease_until_ms = NULL
                 WHERE status = 'pending' AND lease_until_ms IS NOT NULL RETURNING id, destination",
            )?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    pub async fn release_destination_leases(&self, destination: String) -> Result<Vec<DeliveryId>, StoreError> {
        self.write(move |c| {
            let mut statement = c.prepare(
                "UPDATE deliveries SET lease_until_ms = NULL
                 WHERE destination = ?1 AND status = 'pending' AND lease_until_ms IS NOT NULL RETURNING id",
            )?;
            let rows = statement.query_map([destination], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub async fn dead_letter_unconfigured(&self, configured: Vec<String>) -> Result<Vec<(String, i64)>, StoreError> {
        self.write(move |c| {
            let stranded: Vec<(String, i64)> = c
                .prepare("SELECT destination, count(*) FROM deliveries WHERE status = 'pending' GROUP BY destination")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(String, i64)>, _>>()?
                .into_iter()
                .filter(|(destination, _)| !configured.contains(destination))
                .collect();
            let now = UnixMs::now();
            for (destination, _) in &stranded {
                c.execute(
                    "UPDATE deliveries SET status = ?2, dead_letter_reason = ?3, updated_at_ms = ?4,
                         lease_until_ms = NULL
                     WHERE status = 'pending' AND destination = ?1",
                    params![destination, DeliveryStatus::DeadLettered, DeadLetterReason::UnknownDestination, now],
                )?;
            }
            Ok(stranded)
        })
        .await
    }
}
