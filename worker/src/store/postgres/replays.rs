//! Replays and bulk replay jobs on PostgreSQL (see `store/replays.rs` for the types and
//! `store/operations.rs` for the contracts). Several workers share the database here, so a
//! replay locks its delivery's row before it decides anything.

use tokio_postgres::Row;

use super::operator::{Where, dead_letter_where, delivery_row, query_rows, read};
use super::{PgError, Postgres};
use crate::model::{
    AuditAction, BulkReplayId, BulkReplayStatus, ConfigVersion, DeliveryId, DeliveryStatus, EventRowId, ReplayConfig,
    UnixMs,
};
use crate::store::audit::AuditRow;
use crate::store::operator::DELIVERY_COLUMNS_PG;
use crate::store::replays::{
    BulkPreview, Dismissed, ReplayOrigin, ReplayScope, ReplayedTo, chosen_config, config_detail,
};
use crate::store::{
    BulkProgress, BulkReplayRow, DeadLetterSelection, DeliveryRow, NewBulkReplay, ReplayOutcome, StoreError,
};

/// Columns read by [`bulk_replay_row`].
const BULK_REPLAY_COLUMNS: &str = "id, actor, filter_json, rate_per_second, total, done, enqueued, status, \
     created_at_ms, finished_at_ms, lease_until_ms";

fn bulk_replay_row(r: &Row) -> Result<BulkReplayRow, PgError> {
    let rate: i64 = r.try_get(3)?;
    Ok(BulkReplayRow {
        id: r.try_get(0)?,
        actor: r.try_get(1)?,
        filter_json: r.try_get(2)?,
        rate_per_second: u32::try_from(rate).map_err(|_| PgError::Refused(format!("bulk replay rate {rate}")))?,
        total: r.try_get(4)?,
        done: r.try_get(5)?,
        enqueued: r.try_get(6)?,
        status: r.try_get(7)?,
        created_at: r.try_get(8)?,
        finished_at: r.try_get(9)?,
        lease_until: r.try_get(10)?,
    })
}

fn preview_row(r: &Row) -> Result<BulkPreview, PgError> {
    Ok(BulkPreview {
        token: r.try_get(0)?,
        filter_json: r.try_get(1)?,
        total: r.try_get(2)?,
        max_updated_at: r.try_get(3)?,
        expires_at: r.try_get(4)?,
    })
}

/// The dead letters `selection` takes, with `seen_until` as an upper bound on their last
/// change when given.
fn bounded(selection: &DeadLetterSelection, seen_until: Option<UnixMs>) -> Where {
    let mut w = dead_letter_where(selection);
    if let Some(bound) = seen_until {
        w.add("d.updated_at_ms <= $?", bound);
    }
    w
}

/// A preview's token: `brp_` and 24 random bytes in hex, as SQLite's `randomblob` makes them
/// (PostgreSQL has no built-in random bytes without pgcrypto).
fn preview_token() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    format!("brp_{}", hex::encode(bytes))
}

impl Postgres {
    pub async fn replay(
        &self,
        delivery_id: DeliveryId,
        actor: String,
        scope: ReplayScope,
        config: ReplayConfig,
    ) -> Result<ReplayOutcome, StoreError> {
        Ok(self
            .write(async |t| {
                // Locked until commit: a concurrent replay of the same delivery (another worker)
                // waits here and then reads the status this one leaves, so exactly one of them
                // replays it and writes the audit row; the other finds it pending.
                // (The event's config version never changes once recorded: it is read unlocked.)
                let select = t
                    .prepare_cached(
                        "SELECT d.status, d.destination, e.config_version
                         FROM deliveries d JOIN events e ON e.id = d.event_rowid WHERE d.id = $1 FOR UPDATE OF d",
                    )
                    .await?;
                let Some(row) = t.query_opt(&select, &[&delivery_id]).await? else {
                    return Ok(ReplayOutcome::NotFound);
                };
                let (status, destination): (DeliveryStatus, String) = (row.try_get(0)?, row.try_get(1)?);
                let recorded: Option<ConfigVersion> = row.try_get(2)?;
                if scope == ReplayScope::BulkItem && status != DeliveryStatus::DeadLettered {
                    return Ok(ReplayOutcome::Skipped { status });
                }
                let Ok(config_version) = chosen_config(config, recorded) else {
                    return Ok(ReplayOutcome::NoRecordedConfig);
                };
                let now = UnixMs::now();
                if status == DeliveryStatus::Pending {
                    // Its next attempts use the config asked for, whether or not it is made due now.
                    let choose = t.prepare_cached("UPDATE deliveries SET config_version = $2 WHERE id = $1").await?;
                    t.execute(&choose, &[&delivery_id, &config_version]).await?;
                    // As on SQLite: made due now unless an attempt holds it; no due time at all
                    // (left so by the delivery task stream of old) is made due as well.
                    let reschedule = t
                        .prepare_cached(
                            "UPDATE deliveries SET next_attempt_at_ms = $2, updated_at_ms = $2
                             WHERE id = $1 AND (next_attempt_at_ms IS NULL OR next_attempt_at_ms > $2)
                               AND (lease_until_ms IS NULL OR lease_until_ms < $2)",
                        )
                        .await?;
                    let rescheduled = t.execute(&reschedule, &[&delivery_id, &now]).await? == 1;
                    return Ok(ReplayOutcome::AlreadyPending { destination, rescheduled, config_version });
                }
                // A dismissed one's dismissal ends here (its audit row stays).
                let requeue = t
                    .prepare_cached(
                        "UPDATE deliveries SET status = $3, replays = replays + 1, replay_enqueued = true,
                             attempt_base = attempts, next_attempt_at_ms = $2, updated_at_ms = $2,
                             dead_letter_reason = NULL, lease_until_ms = NULL,
                             dismissed_by = NULL, dismissed_at_ms = NULL, dismiss_note = NULL, config_version = $4
                         WHERE id = $1",
                    )
                    .await?;
                t.execute(&requeue, &[&delivery_id, &now, &DeliveryStatus::Pending, &config_version]).await?;
                if scope == ReplayScope::Operator {
                    AuditRow {
                        at: now,
                        actor: &actor,
                        action: AuditAction::ReplayDelivery,
                        target: delivery_id.as_str(),
                        count: 1,
                        detail: Some(&format!("previous status {status}; {}", config_detail(config_version.as_ref()))),
                    }
                    .write_pg(t)
                    .await?;
                }
                Ok(ReplayOutcome::Replayed { destination, config_version })
            })
            .await?)
    }

    pub async fn dismiss(
        &self,
        delivery_id: DeliveryId,
        actor: String,
        note: Option<String>,
    ) -> Result<Dismissed, StoreError> {
        Ok(self
            .write(async |t| {
                // One statement decides: a concurrent replay or dismissal (another worker) waits
                // for this row's lock and then finds it dismissed.
                let now = UnixMs::now();
                let dismiss = t
                    .prepare_cached(&format!(
                        "UPDATE deliveries d SET status = $2, dismissed_by = $3, dismissed_at_ms = $4,
                             dismiss_note = $5, updated_at_ms = $4
                         WHERE d.id = $1 AND d.status = $6 RETURNING {DELIVERY_COLUMNS_PG}"
                    ))
                    .await?;
                let dismissed = t
                    .query_opt(
                        &dismiss,
                        &[&delivery_id, &DeliveryStatus::Dismissed, &actor, &now, &note, &DeliveryStatus::DeadLettered],
                    )
                    .await?;
                let Some(row) = dismissed else {
                    let select = t.prepare_cached("SELECT status FROM deliveries WHERE id = $1").await?;
                    return Ok(match t.query_opt(&select, &[&delivery_id]).await? {
                        Some(row) => Dismissed::NotDeadLettered(row.try_get(0)?),
                        None => Dismissed::NotFound,
                    });
                };
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::DismissDeadLetter,
                    target: delivery_id.as_str(),
                    count: 1,
                    detail: note.as_deref(),
                }
                .write_pg(t)
                .await?;
                Ok(Dismissed::Done(Box::new(delivery_row(&row)?)))
            })
            .await?)
    }

    pub async fn replay_to_destination(
        &self,
        origin: ReplayOrigin,
        destination: String,
        actor: String,
        config: ReplayConfig,
    ) -> Result<ReplayedTo, StoreError> {
        Ok(self
            .write(async |t| {
                let event: Option<EventRowId> = match &origin {
                    ReplayOrigin::Delivery(id) => {
                        let select = t.prepare_cached("SELECT event_rowid FROM deliveries WHERE id = $1").await?;
                        t.query_opt(&select, &[id]).await?.map(|r| r.try_get(0)).transpose()?
                    }
                    ReplayOrigin::Event(event) => Some(*event),
                };
                let Some(event) = event else {
                    return Ok(ReplayedTo::NotFound);
                };
                // The event's row, locked until commit: two replays of one event (from any
                // worker) number their deliveries one after the other, and a prune that took the
                // event first has deleted it when this goes on (then there is nothing to replay).
                // NO KEY UPDATE: recording's foreign key checks on the event are not held up.
                let lock =
                    t.prepare_cached("SELECT id, config_version FROM events WHERE id = $1 FOR NO KEY UPDATE").await?;
                let Some(locked) = t.query_opt(&lock, &[&event]).await? else {
                    return Ok(ReplayedTo::NotFound);
                };
                let Ok(config_version) = chosen_config(config, locked.try_get(1)?) else {
                    return Ok(ReplayedTo::NoRecordedConfig);
                };
                let count = t
                    .prepare_cached("SELECT count(*) FROM deliveries WHERE event_rowid = $1 AND created_by IS NOT NULL")
                    .await?;
                let before: i64 = t.query_one(&count, &[&event]).await?.try_get(0)?;
                let id = DeliveryId::replayed_to(event, &destination, before + 1);
                let now = UnixMs::now();
                let insert = t
                    .prepare_cached(&format!(
                        "INSERT INTO deliveries AS d (id, event_rowid, destination, status, created_at_ms, updated_at_ms,
                                                      next_attempt_at_ms, replay_of, created_by, config_version)
                         VALUES ($1, $2, $3, $4, $5, $5, $5, $6, $7, $8) RETURNING {DELIVERY_COLUMNS_PG}"
                    ))
                    .await?;
                let row = t
                    .query_one(
                        &insert,
                        &[
                            &id,
                            &event,
                            &destination,
                            &DeliveryStatus::Pending,
                            &now,
                            &origin.delivery(),
                            &actor,
                            &config_version,
                        ],
                    )
                    .await?;
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::ReplayToDestination,
                    target: id.as_str(),
                    count: 1,
                    detail: Some(&format!(
                        "{}; {}",
                        origin.describe(&destination),
                        config_detail(config_version.as_ref())
                    )),
                }
                .write_pg(t)
                .await?;
                Ok(ReplayedTo::Done(Box::new(delivery_row(&row)?)))
            })
            .await?)
    }

    pub async fn delivery_destination(&self, id: DeliveryId) -> Result<Option<String>, StoreError> {
        read(self, async |c| {
            let statement = c.prepare_cached("SELECT destination FROM deliveries WHERE id = $1").await?;
            Ok(c.query_opt(&statement, &[&id]).await?.map(|r| r.try_get(0)).transpose()?)
        })
        .await
    }

    pub async fn dead_letters_of_event(&self, event: EventRowId) -> Result<Vec<DeliveryId>, StoreError> {
        read(self, async |c| {
            let statement = c
                .prepare_cached("SELECT id FROM deliveries WHERE event_rowid = $1 AND status = $2 ORDER BY destination")
                .await?;
            let rows = c.query(&statement, &[&event, &DeliveryStatus::DeadLettered]).await?;
            Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn preview_dead_letters(
        &self,
        selection: DeadLetterSelection,
        seen_until: Option<UnixMs>,
        sample: usize,
    ) -> Result<(i64, Vec<DeliveryRow>), StoreError> {
        read(self, async |c| {
            let mut w = bounded(&selection, seen_until);
            let from = "deliveries d JOIN events e ON e.id = d.event_rowid";
            let count = c.prepare_cached(&format!("SELECT count(*) FROM {from} {}", w.sql())).await?;
            let count: i64 = c.query_one(&count, &w.params()).await?.try_get(0)?;
            let limit = w.bind(i64::try_from(sample).unwrap_or(i64::MAX));
            let sql = format!("SELECT {DELIVERY_COLUMNS_PG} FROM {from} {} ORDER BY d.rowid LIMIT {limit}", w.sql());
            Ok((count, query_rows(c, &sql, &w, delivery_row).await?))
        })
        .await
    }

    pub async fn create_bulk_preview(
        &self,
        selection: DeadLetterSelection,
        filter_json: String,
        actor: String,
        expires_at: UnixMs,
    ) -> Result<BulkPreview, StoreError> {
        Ok(self
            .write(async |t| {
                let now = UnixMs::now();
                // Workers sweeping at once is harmless: a row deleted by one is skipped by the other.
                let sweep = t.prepare_cached("DELETE FROM bulk_replay_previews WHERE expires_at_ms <= $1").await?;
                t.execute(&sweep, &[&now]).await?;
                let w = dead_letter_where(&selection);
                let counted = t
                    .prepare_cached(&format!(
                        "SELECT count(*), max(d.updated_at_ms) FROM deliveries d JOIN events e ON e.id = d.event_rowid {}",
                        w.sql()
                    ))
                    .await?;
                let row = t.query_one(&counted, &w.params()).await?;
                let (total, max_updated_at): (i64, Option<UnixMs>) = (row.try_get(0)?, row.try_get(1)?);
                let insert = t
                    .prepare_cached(
                        "INSERT INTO bulk_replay_previews
                             (token, actor, filter_json, total, max_updated_at_ms, created_at_ms, expires_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .await?;
                let token = preview_token();
                t.execute(&insert, &[&token, &actor, &filter_json, &total, &max_updated_at, &now, &expires_at]).await?;
                Ok(BulkPreview { token, filter_json: filter_json.clone(), total, max_updated_at, expires_at })
            })
            .await?)
    }

    pub async fn bulk_preview(&self, token: String) -> Result<Option<BulkPreview>, StoreError> {
        read(self, async |c| {
            let statement = c
                .prepare_cached(
                    "SELECT token, filter_json, total, max_updated_at_ms, expires_at_ms FROM bulk_replay_previews
                     WHERE token = $1 AND expires_at_ms > $2",
                )
                .await?;
            c.query_opt(&statement, &[&token, &UnixMs::now()]).await?.as_ref().map(preview_row).transpose()
        })
        .await
    }

    pub async fn select_dead_letters(
        &self,
        selection: DeadLetterSelection,
        seen_until: Option<UnixMs>,
        limit: usize,
    ) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        read(self, async |c| {
            let mut w = bounded(&selection, seen_until);
            let limit = w.bind(i64::try_from(limit).unwrap_or(i64::MAX));
            let sql = format!(
                "SELECT d.id, d.destination FROM deliveries d JOIN events e ON e.id = d.event_rowid {}
                 ORDER BY d.rowid LIMIT {limit}",
                w.sql()
            );
            query_rows(c, &sql, &w, |r| Ok((r.try_get(0)?, r.try_get(1)?))).await
        })
        .await
    }

    pub async fn bulk_replay(&self, id: BulkReplayId) -> Result<Option<BulkReplayRow>, StoreError> {
        read(self, async |c| {
            let statement =
                c.prepare_cached(&format!("SELECT {BULK_REPLAY_COLUMNS} FROM bulk_replays WHERE id = $1")).await?;
            c.query_opt(&statement, &[&id]).await?.as_ref().map(bulk_replay_row).transpose()
        })
        .await
    }

    pub async fn create_bulk_replay(&self, job: NewBulkReplay) -> Result<BulkReplayRow, StoreError> {
        Ok(self
            .write(async |t| {
                let now = UnixMs::now();
                let insert = t
                    .prepare_cached(&format!(
                        "INSERT INTO bulk_replays
                             (actor, filter_json, rate_per_second, total, status, created_at_ms, lease_until_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {BULK_REPLAY_COLUMNS}"
                    ))
                    .await?;
                let rate = i64::from(job.rate_per_second);
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                    &job.actor,
                    &job.filter_json,
                    &rate,
                    &job.total,
                    &BulkReplayStatus::Running,
                    &now,
                    &job.lease_until,
                ];
                let created = bulk_replay_row(&t.query_one(&insert, &params).await?)?;
                AuditRow {
                    at: now,
                    actor: &job.actor,
                    action: AuditAction::BulkReplay,
                    target: &format!("bulk_replay:{}", created.id.0),
                    count: job.total,
                    detail: Some(&job.filter_json),
                }
                .write_pg(t)
                .await?;
                Ok(created)
            })
            .await?)
    }

    pub async fn bulk_replay_progress(
        &self,
        id: BulkReplayId,
        progress: BulkProgress,
        lease_until: UnixMs,
    ) -> Result<bool, StoreError> {
        Ok(self
            .write(async |t| {
                // One statement under the row's lock, so a cancel or a closing by another worker
                // is either before it (answered here: not running, and no lease kept) or after.
                let statement = t
                    .prepare_cached(
                        "UPDATE bulk_replays SET done = $2, enqueued = $3,
                             lease_until_ms = CASE WHEN status = $5 THEN $4::BIGINT ELSE NULL END
                         WHERE id = $1 RETURNING status",
                    )
                    .await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                    [&id, &progress.done, &progress.enqueued, &lease_until, &BulkReplayStatus::Running];
                let status: Option<BulkReplayStatus> =
                    t.query_opt(&statement, &params).await?.map(|r| r.try_get(0)).transpose()?;
                Ok(status == Some(BulkReplayStatus::Running))
            })
            .await?)
    }

    pub async fn finish_bulk_replay(
        &self,
        id: BulkReplayId,
        progress: BulkProgress,
        status: BulkReplayStatus,
    ) -> Result<(), StoreError> {
        self.write(async |t| {
            // A job cancelled (or closed) meanwhile keeps that status and its end time.
            let statement = t
                .prepare_cached(
                    "UPDATE bulk_replays SET done = $2, enqueued = $3, lease_until_ms = NULL,
                         status = CASE WHEN status = $6 THEN $4 ELSE status END,
                         finished_at_ms = CASE WHEN status = $6 THEN $5 ELSE finished_at_ms END
                     WHERE id = $1",
                )
                .await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&id, &progress.done, &progress.enqueued, &status, &UnixMs::now(), &BulkReplayStatus::Running];
            t.execute(&statement, &params).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn cancel_bulk_replay(
        &self,
        id: BulkReplayId,
        actor: String,
    ) -> Result<Option<(BulkReplayRow, bool)>, StoreError> {
        Ok(self
            .write(async |t| {
                // Locked until commit: the runner's progress write, another cancel or the closing
                // of lapsed jobs waits here, then sees the status this one leaves.
                let select = t
                    .prepare_cached(&format!("SELECT {BULK_REPLAY_COLUMNS} FROM bulk_replays WHERE id = $1 FOR UPDATE"))
                    .await?;
                let Some(job) = t.query_opt(&select, &[&id]).await?.as_ref().map(bulk_replay_row).transpose()? else {
                    return Ok(None);
                };
                let now = UnixMs::now();
                let was_running = job.status == BulkReplayStatus::Running;
                let job = if was_running {
                    let cancel = t
                        .prepare_cached(&format!(
                            "UPDATE bulk_replays SET status = $2, finished_at_ms = $3, lease_until_ms = NULL
                             WHERE id = $1 RETURNING {BULK_REPLAY_COLUMNS}"
                        ))
                        .await?;
                    bulk_replay_row(&t.query_one(&cancel, &[&id, &BulkReplayStatus::Cancelled, &now]).await?)?
                } else {
                    job
                };
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::CancelBulkReplay,
                    target: &format!("bulk_replay:{}", id.0),
                    count: 1,
                    detail: Some(if was_running { "was running" } else { "was not running" }),
                }
                .write_pg(t)
                .await?;
                Ok(Some((job, was_running)))
            })
            .await?)
    }

    /// At startup on PostgreSQL only the jobs whose lease lapsed are closed: the others are
    /// other live workers' (see the operation's contract).
    pub async fn close_interrupted_bulk_replays(&self) -> Result<Vec<BulkReplayId>, StoreError> {
        self.close_expired_bulk_replays(UnixMs::now()).await
    }

    pub async fn close_expired_bulk_replays(&self, now: UnixMs) -> Result<Vec<BulkReplayId>, StoreError> {
        Ok(self
            .write(async |t| {
                // Row locks again: a runner renewing at this moment either renewed first (its
                // row no longer matches when re-checked) or finds it closed at its next write.
                let statement = t
                    .prepare_cached(
                        "UPDATE bulk_replays SET status = $2, finished_at_ms = $3, lease_until_ms = NULL
                         WHERE status = $1 AND (lease_until_ms IS NULL OR lease_until_ms < $3) RETURNING id",
                    )
                    .await?;
                let rows =
                    t.query(&statement, &[&BulkReplayStatus::Running, &BulkReplayStatus::Cancelled, &now]).await?;
                Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<BulkReplayId>, _>>()?)
            })
            .await?)
    }
}
