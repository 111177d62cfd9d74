//! Replays: one delivery back to pending, due now, with its audit row in the same transaction;
//! an event replayed to a destination (a new delivery with its lineage and audit row);
//! dismissing a dead letter (resolved without delivery, with its audit row); what a replay
//! selects (an event's dead letters, a bulk selection with its count and sample);
//! and bulk replay jobs (created with their audit row and a lease, progress renewing the lease,
//! end, cancellation from any worker, and closing those whose runner is gone: at startup those a
//! previous process left running, periodically those whose lease lapsed).

use rusqlite::{OptionalExtension, params, params_from_iter};

use super::StoreError;
use super::audit::AuditRow;
use super::operator::{DELIVERY_COLUMNS, DeadLetterSelection, DeliveryRow, delivery_row};
use super::sqlite::Sqlite;
use crate::model::{
    AuditAction, BulkReplayId, BulkReplayStatus, ConfigVersion, DeliveryId, DeliveryStatus, EventRowId, ReplayConfig,
    UnixMs,
};

/// Who replays a delivery, which decides what may be replayed (see [`Store::replay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayScope {
    /// An operator, for this one delivery (audited): a delivered, dead-lettered or dismissed one
    /// goes back to pending; a pending one is made due now.
    Operator,
    /// A bulk replay's job, for one of the dead letters it selected (the job has its own audit
    /// row): only while it is still a dead letter. One replayed or dismissed meanwhile is left
    /// alone (a dismissed dead letter is never attempted again by a bulk replay).
    BulkItem,
}

/// What a replay found and did (see [`Store::replay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// No such delivery.
    NotFound,
    /// A bulk item that is no longer a dead letter: nothing changed.
    Skipped {
        /// What it is now.
        status: DeliveryStatus,
    },
    /// Already pending: nothing to change, but when no attempt holds it now it was made due at
    /// once (`rescheduled`), so an operator can always push a waiting delivery.
    AlreadyPending {
        /// Its destination.
        destination: String,
        /// Made due now.
        rescheduled: bool,
        /// The config its next attempts use (`None`: current).
        config_version: Option<ConfigVersion>,
    },
    /// Set back to `pending`, due now, with a fresh retry schedule.
    Replayed {
        /// Its destination.
        destination: String,
        /// The config its attempts use (`None`: current).
        config_version: Option<ConfigVersion>,
    },
    /// Asked "as received" for an event recorded with no config version: nothing changed.
    NoRecordedConfig,
}

/// What replaying an event to a destination did (see [`Store::replay_to_destination`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayedTo {
    /// The new delivery.
    Done(Box<DeliveryRow>),
    /// No such delivery or event.
    NotFound,
    /// Asked "as received" for an event recorded with no config version: nothing written.
    NoRecordedConfig,
}

/// The config a replay gives its delivery: `None` (current) or the event's recorded version;
/// `Err(())` when "as received" was asked of an event that has none.
pub(super) fn chosen_config(
    config: ReplayConfig,
    recorded: Option<ConfigVersion>,
) -> Result<Option<ConfigVersion>, ()> {
    match config {
        ReplayConfig::Current => Ok(None),
        ReplayConfig::AsReceived => recorded.map(Some).ok_or(()),
    }
}

/// How an audit row names the config a replay chose.
pub(super) fn config_detail(version: Option<&ConfigVersion>) -> String {
    match version {
        None => "config current".to_owned(),
        Some(version) => format!("config as received ({version})"),
    }
}

/// What an operator replays to a destination (see [`Store::replay_to_destination`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOrigin {
    /// This delivery's event (the new delivery keeps it as `replay_of`).
    Delivery(DeliveryId),
    /// This event.
    Event(EventRowId),
}

impl ReplayOrigin {
    /// What the audit row says was replayed to `destination`.
    pub(super) fn describe(&self, destination: &str) -> String {
        match self {
            ReplayOrigin::Delivery(id) => format!("replay of {id} to {destination}"),
            ReplayOrigin::Event(event) => format!("replay of event {} to {destination}", event.0),
        }
    }

    /// The delivery it replays, if it is one.
    pub(super) fn delivery(&self) -> Option<&DeliveryId> {
        match self {
            ReplayOrigin::Delivery(id) => Some(id),
            ReplayOrigin::Event(_) => None,
        }
    }
}

/// What dismissing a dead letter found and did (see [`Store::dismiss`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dismissed {
    /// Dismissed now; the delivery as it stands.
    Done(Box<DeliveryRow>),
    /// No such delivery.
    NotFound,
    /// It is not a dead letter (pending, delivered, or dismissed already): nothing changed.
    NotDeadLettered(DeliveryStatus),
}

/// A bulk replay job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkReplayRow {
    /// Job id.
    pub id: BulkReplayId,
    /// Who started it.
    pub actor: String,
    /// Its selection as the caller gave it, JSON.
    pub filter_json: String,
    /// Effective rate cap, per second.
    pub rate_per_second: u32,
    /// Deliveries selected.
    pub total: i64,
    /// Deliveries processed.
    pub done: i64,
    /// Deliveries actually re-queued.
    pub enqueued: i64,
    /// Where it stands.
    pub status: BulkReplayStatus,
    /// Started.
    pub created_at: UnixMs,
    /// Ended.
    pub finished_at: Option<UnixMs>,
    /// While running: until when its runner holds it (renewed as it goes; lapsed: the runner
    /// is gone). `None` once ended.
    pub lease_until: Option<UnixMs>,
}

/// A bulk replay's dry run as kept (see [`Store::create_bulk_preview`]): confirming it replays
/// exactly the dead letters it counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkPreview {
    /// The random token the dry run answered with.
    pub token: String,
    /// Its selection as the caller gave it, JSON.
    pub filter_json: String,
    /// Dead letters it counted.
    pub total: i64,
    /// The newest of them (`updated_at_ms`); `None` when there were none.
    pub max_updated_at: Option<UnixMs>,
    /// Until when it can be confirmed.
    pub expires_at: UnixMs,
}

/// A bulk replay job to create (see [`Store::create_bulk_replay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBulkReplay {
    /// Who starts it.
    pub actor: String,
    /// Its selection as the caller gave it, JSON (kept as given, and the audit row's detail).
    pub filter_json: String,
    /// Effective rate cap, per second.
    pub rate_per_second: u32,
    /// Deliveries selected.
    pub total: i64,
    /// Until when the creating worker holds it: it renews the lease before then.
    pub lease_until: UnixMs,
}

/// How far a bulk replay job got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkProgress {
    /// Deliveries processed.
    pub done: i64,
    /// Deliveries actually re-queued.
    pub enqueued: i64,
}

/// Columns read by [`bulk_replay_row`].
const BULK_REPLAY_COLUMNS: &str = "id, actor, filter_json, rate_per_second, total, done, enqueued, status, \
     created_at_ms, finished_at_ms, lease_until_ms";

fn bulk_replay_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BulkReplayRow> {
    Ok(BulkReplayRow {
        id: r.get(0)?,
        actor: r.get(1)?,
        filter_json: r.get(2)?,
        rate_per_second: r.get(3)?,
        total: r.get(4)?,
        done: r.get(5)?,
        enqueued: r.get(6)?,
        status: r.get(7)?,
        created_at: r.get(8)?,
        finished_at: r.get(9)?,
        lease_until: r.get(10)?,
    })
}

fn read_bulk_replay(connection: &rusqlite::Connection, id: BulkReplayId) -> rusqlite::Result<Option<BulkReplayRow>> {
    connection
        .query_row(&format!("SELECT {BULK_REPLAY_COLUMNS} FROM bulk_replays WHERE id = ?1"), [id], bulk_replay_row)
        .optional()
}

impl Sqlite {
    pub async fn replay(
        &self,
        delivery_id: DeliveryId,
        actor: String,
        scope: ReplayScope,
        config: ReplayConfig,
    ) -> Result<ReplayOutcome, StoreError> {
        self.write(move |connection| {
            let row: Option<(DeliveryStatus, String, Option<ConfigVersion>)> = connection
                .query_row(
                    "SELECT d.status, d.destination, e.config_version
                     FROM deliveries d JOIN events e ON e.id = d.event_rowid WHERE d.id = ?1",
                    [&delivery_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((status, destination, recorded)) = row else {
                return Ok(ReplayOutcome::NotFound);
            };
            if scope == ReplayScope::BulkItem && status != DeliveryStatus::DeadLettered {
                return Ok(ReplayOutcome::Skipped { status });
            }
            let Ok(config_version) = chosen_config(config, recorded) else {
                return Ok(ReplayOutcome::NoRecordedConfig);
            };
            let now = UnixMs::now();
            if status == DeliveryStatus::Pending {
                // Its next attempts use the config asked for, whether or not it is made due now.
                connection.execute(
                    "UPDATE deliveries SET config_version = ?2 WHERE id = ?1",
                    params![delivery_id, config_version],
                )?;
                // No due time at all is a delivery no scheduler would ever claim (left so by the
                // delivery task stream of old, whose tasks expired after `worker.retention`):
                // made due as well, so a replay always recovers a pending delivery.
                let rescheduled = connection.execute(
                    "UPDATE deliveries SET next_attempt_at_ms = ?2, updated_at_ms = ?2
                     WHERE id = ?1 AND (next_attempt_at_ms IS NULL OR next_attempt_at_ms > ?2)
                       AND (lease_until_ms IS NULL OR lease_until_ms < ?2)",
                    params![delivery_id, now],
                )? == 1;
                return Ok(ReplayOutcome::AlreadyPending { destination, rescheduled, config_version });
            }
            // A dismissed one's dismissal ends here (its audit row stays).
            connection.execute(
                "UPDATE deliveries SET status = ?3, replays = replays + 1, replay_enqueued = 1,
                     attempt_base = attempts, next_attempt_at_ms = ?2, updated_at_ms = ?2,
                     dead_letter_reason = NULL, lease_until_ms = NULL,
                     dismissed_by = NULL, dismissed_at_ms = NULL, dismiss_note = NULL, config_version = ?4
                 WHERE id = ?1",
                params![delivery_id, now, DeliveryStatus::Pending, config_version],
            )?;
            if scope == ReplayScope::Operator {
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::ReplayDelivery,
                    target: delivery_id.as_str(),
                    count: 1,
                    detail: Some(&format!("previous status {status}; {}", config_detail(config_version.as_ref()))),
                }
                .write(connection)?;
            }
            Ok(ReplayOutcome::Replayed { destination, config_version })
        })
        .await
    }

    pub async fn dismiss(
        &self,
        delivery_id: DeliveryId,
        actor: String,
        note: Option<String>,
    ) -> Result<Dismissed, StoreError> {
        self.write(move |c| {
            let status: Option<DeliveryStatus> =
                c.query_row("SELECT status FROM deliveries WHERE id = ?1", [&delivery_id], |r| r.get(0)).optional()?;
            match status {
                None => return Ok(Dismissed::NotFound),
                Some(DeliveryStatus::DeadLettered) => {}
                Some(status) => return Ok(Dismissed::NotDeadLettered(status)),
            }
            let now = UnixMs::now();
            c.execute(
                "UPDATE deliveries SET status = ?2, dismissed_by = ?3, dismissed_at_ms = ?4, dismiss_note = ?5,
                     updated_at_ms = ?4
                 WHERE id = ?1",
                params![delivery_id, DeliveryStatus::Dismissed, actor, now, note],
            )?;
            AuditRow {
                at: now,
                actor: &actor,
                action: AuditAction::DismissDeadLetter,
                target: delivery_id.as_str(),
                count: 1,
                detail: note.as_deref(),
            }
            .write(c)?;
            let row = c.query_row(
                &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = ?1"),
                [&delivery_id],
                delivery_row,
            )?;
            Ok(Dismissed::Done(Box::new(row)))
        })
        .await
    }

    pub async fn replay_to_destination(
        &self,
        origin: ReplayOrigin,
        destination: String,
        actor: String,
        config: ReplayConfig,
    ) -> Result<ReplayedTo, StoreError> {
        self.write(move |c| {
            let event: Option<(EventRowId, Option<ConfigVersion>)> = match &origin {
                ReplayOrigin::Delivery(id) => c
                    .query_row(
                        "SELECT e.id, e.config_version FROM deliveries d JOIN events e ON e.id = d.event_rowid
                         WHERE d.id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?,
                ReplayOrigin::Event(event) => c
                    .query_row("SELECT id, config_version FROM events WHERE id = ?1", [event], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?,
            };
            let Some((event, recorded)) = event else {
                return Ok(ReplayedTo::NotFound);
            };
            let Ok(config_version) = chosen_config(config, recorded) else {
                return Ok(ReplayedTo::NoRecordedConfig);
            };
            // The single writer orders two replays of one event: each counts the other's.
            let before: i64 = c.query_row(
                "SELECT count(*) FROM deliveries WHERE event_rowid = ?1 AND created_by IS NOT NULL",
                [event],
                |r| r.get(0),
            )?;
            let id = DeliveryId::replayed_to(event, &destination, before + 1);
            let now = UnixMs::now();
            c.execute(
                "INSERT INTO deliveries (id, event_rowid, destination, status, created_at_ms, updated_at_ms,
                                         next_attempt_at_ms, replay_of, created_by, config_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6, ?7, ?8)",
                params![id, event, destination, DeliveryStatus::Pending, now, origin.delivery(), actor, config_version],
            )?;
            AuditRow {
                at: now,
                actor: &actor,
                action: AuditAction::ReplayToDestination,
                target: id.as_str(),
                count: 1,
                detail: Some(&format!("{}; {}", origin.describe(&destination), config_detail(config_version.as_ref()))),
            }
            .write(c)?;
            c.query_row(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = ?1"), [&id], delivery_row)
                .map(|row| ReplayedTo::Done(Box::new(row)))
        })
        .await
    }

    pub async fn delivery_destination(&self, id: DeliveryId) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            c.query_row("SELECT destination FROM deliveries WHERE id = ?1", [id], |r| r.get(0)).optional()
        })
        .await
    }

    pub async fn dead_letters_of_event(&self, event: EventRowId) -> Result<Vec<DeliveryId>, StoreError> {
        self.read(move |c| {
            let mut statement =
                c.prepare("SELECT id FROM deliveries WHERE event_rowid = ?1 AND status = ?2 ORDER BY destination")?;
            let rows = statement.query_map(params![event, DeliveryStatus::DeadLettered], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub async fn preview_dead_letters(
        &self,
        selection: DeadLetterSelection,
        seen_until: Option<UnixMs>,
        sample: usize,
    ) -> Result<(i64, Vec<DeliveryRow>), StoreError> {
        self.read(move |c| {
            let mut w = selection.to_where();
            if let Some(bound) = seen_until {
                w.add("d.updated_at_ms <= ?", vec![Box::new(bound)]);
            }
            let count: i64 = c.query_row(
                &format!("SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_rowid {}", w.sql()),
                params_from_iter(w.params()),
                |r| r.get(0),
            )?;
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_rowid {}
                 ORDER BY d.rowid LIMIT {sample}",
                w.sql()
            );
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(w.params()), delivery_row)?;
            Ok((count, rows.collect::<Result<Vec<_>, _>>()?))
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
        self.write(move |c| {
            let now = UnixMs::now();
            c.execute("DELETE FROM bulk_replay_previews WHERE expires_at_ms <= ?1", [now])?;
            let w = selection.to_where();
            let (total, max_updated_at): (i64, Option<UnixMs>) = c.query_row(
                &format!(
                    "SELECT count(*), max(d.updated_at_ms) FROM deliveries d JOIN events e ON e.id = d.event_rowid {}",
                    w.sql()
                ),
                params_from_iter(w.params()),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let token: String = c.query_row(
                "INSERT INTO bulk_replay_previews
                     (token, actor, filter_json, total, max_updated_at_ms, created_at_ms, expires_at_ms)
                 VALUES ('brp_' || lower(hex(randomblob(24))), ?1, ?2, ?3, ?4, ?5, ?6) RETURNING token",
                params![actor, filter_json, total, max_updated_at, now, expires_at],
                |r| r.get(0),
            )?;
            Ok(BulkPreview { token, filter_json, total, max_updated_at, expires_at })
        })
        .await
    }

    pub async fn bulk_preview(&self, token: String) -> Result<Option<BulkPreview>, StoreError> {
        self.read(move |c| {
            c.query_row(
                "SELECT token, filter_json, total, max_updated_at_ms, expires_at_ms FROM bulk_replay_previews
                 WHERE token = ?1 AND expires_at_ms > ?2",
                params![token, UnixMs::now()],
                |r| {
                    Ok(BulkPreview {
                        token: r.get(0)?,
                        filter_json: r.get(1)?,
                        total: r.get(2)?,
                        max_updated_at: r.get(3)?,
                        expires_at: r.get(4)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    pub async fn select_dead_letters(
        &self,
        selection: DeadLetterSelection,
        seen_until: Option<UnixMs>,
        limit: usize,
    ) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        self.read(move |c| {
            let mut w = selection.to_where();
            if let Some(bound) = seen_until {
                w.add("d.updated_at_ms <= ?", vec![Box::new(bound)]);
            }
            let sql = format!(
                "SELECT d.id, d.destination FROM deliveries d JOIN events e ON e.id = d.event_rowid {}
                 ORDER BY d.rowid LIMIT {limit}",
                w.sql()
            );
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(w.params()), |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    pub async fn bulk_replay(&self, id: BulkReplayId) -> Result<Option<BulkReplayRow>, StoreError> {
        self.read(move |c| read_bulk_replay(c, id)).await
    }

    pub async fn create_bulk_replay(&self, job: NewBulkReplay) -> Result<BulkReplayRow, StoreError> {
        self.write(move |c| {
            let now = UnixMs::now();
            c.execute(
                "INSERT INTO bulk_replays
                     (actor, filter_json, rate_per_second, total, status, created_at_ms, lease_until_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.actor,
                    job.filter_json,
                    job.rate_per_second,
                    job.total,
                    BulkReplayStatus::Running,
                    now,
                    job.lease_until
                ],
            )?;
            let id = BulkReplayId(c.last_insert_rowid());
            AuditRow {
                at: now,
                actor: &job.actor,
                action: AuditAction::BulkReplay,
                target: &format!("bulk_replay:{}", id.0),
                count: job.total,
                detail: Some(&job.filter_json),
            }
            .write(c)?;
            read_bulk_replay(c, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
        .await
    }

    pub async fn bulk_replay_progress(
        &self,
        id: BulkReplayId,
        progress: BulkProgress,
        lease_until: UnixMs,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            // One statement: the progress is recorded whatever the status, the lease only
            // while running (a job cancelled or closed meanwhile holds none).
            let status: Option<BulkReplayStatus> = c
                .query_row(
                    "UPDATE bulk_replays SET done = ?2, enqueued = ?3,
                         lease_until_ms = CASE WHEN status = ?5 THEN ?4 ELSE NULL END
                     WHERE id = ?1 RETURNING status",
                    params![id, progress.done, progress.enqueued, lease_until, BulkReplayStatus::Running],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(status == Some(BulkReplayStatus::Running))
        })
        .await
    }

    pub async fn finish_bulk_replay(
        &self,
        id: BulkReplayId,
        progress: BulkProgress,
        status: BulkReplayStatus,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            // A job cancelled (or closed) meanwhile keeps that status and its end time.
            c.execute(
                "UPDATE bulk_replays SET done = ?2, enqueued = ?3, lease_until_ms = NULL,
                     status = CASE WHEN status = ?6 THEN ?4 ELSE status END,
                     finished_at_ms = CASE WHEN status = ?6 THEN ?5 ELSE finished_at_ms END
                 WHERE id = ?1",
                params![id, progress.done, progress.enqueued, status, UnixMs::now(), BulkReplayStatus::Running],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn cancel_bulk_replay(
        &self,
        id: BulkReplayId,
        actor: String,
    ) -> Result<Option<(BulkReplayRow, bool)>, StoreError> {
        self.write(move |c| {
            let Some(job) = read_bulk_replay(c, id)? else {
                return Ok(None);
            };
            let now = UnixMs::now();
            let was_running = job.status == BulkReplayStatus::Running;
            if was_running {
                c.execute(
                    "UPDATE bulk_replays SET status = ?2, finished_at_ms = ?3, lease_until_ms = NULL WHERE id = ?1",
                    params![id, BulkReplayStatus::Cancelled, now],
                )?;
            }
            AuditRow {
                at: now,
                actor: &actor,
                action: AuditAction::CancelBulkReplay,
                target: &format!("bulk_replay:{}", id.0),
                count: 1,
                detail: Some(if was_running { "was running" } else { "was not running" }),
            }
            .write(c)?;
            let job = read_bulk_replay(c, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            Ok(Some((job, was_running)))
        })
        .await
    }

    pub async fn close_interrupted_bulk_replays(&self) -> Result<Vec<BulkReplayId>, StoreError> {
        // One process owns the file (its lock): every job running at startup was the last one's.
        self.write(|c| {
            let mut statement = c.prepare(
                "UPDATE bulk_replays SET status = ?2, finished_at_ms = ?3, lease_until_ms = NULL
                 WHERE status = ?1 RETURNING id",
            )?;
            let rows = statement
                .query_map(params![BulkReplayStatus::Running, BulkReplayStatus::Cancelled, UnixMs::now()], |r| {
                    r.get(0)
                })?;
            rows.collect()
        })
        .await
    }

    pub async fn close_expired_bulk_replays(&self, now: UnixMs) -> Result<Vec<BulkReplayId>, StoreError> {
        self.write(move |c| {
            let mut statement = c.prepare(
                "UPDATE bulk_replays SET status = ?2, finished_at_ms = ?3, lease_until_ms = NULL
                 WHERE status = ?1 AND (lease_until_ms IS NULL OR lease_until_ms < ?3) RETURNING id",
            )?;
            let rows = statement
                .query_map(params![BulkReplayStatus::Running, BulkReplayStatus::Cancelled, now], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }
}
