//! Replaying one delivery: back to pending, due now, with its audit row in the same transaction.

use rusqlite::{OptionalExtension, params};

use super::audit::AuditRow;
use super::{Store, StoreError};
use crate::model::{AuditAction, DeliveryId, DeliveryStatus, UnixMs};

/// What a replay found and did (see [`Store::replay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// No such delivery.
    NotFound,
    /// Already pending: nothing to change, but when no attempt holds it now it was made due at
    /// once (`rescheduled`), so an operator can always push a waiting delivery.
    AlreadyPending {
        /// Its destination.
        destination: String,
        /// Made due now.
        rescheduled: bool,
    },
    /// Set back to `pending`, due now, with a fresh retry schedule.
    Replayed {
        /// Its destination.
        destination: String,
    },
}

impl Store {
    /// Replays a delivery (one writer transaction): a dead-lettered or delivered delivery goes
    /// back to `pending`, due now, with a fresh retry schedule (`attempt_base` = attempts so far)
    /// and its replay counter bumped; the audit row is written in the same transaction. A
    /// pending one that no attempt holds now is made due now. Two concurrent replays of one
    /// delivery are serialised here, so only one of them changes anything.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn replay(
        &self,
        delivery_id: DeliveryId,
        actor: String,
        audit: bool,
    ) -> Result<ReplayOutcome, StoreError> {
        self.write(move |connection| {
            let row: Option<(DeliveryStatus, String)> = connection
                .query_row("SELECT status, destination FROM deliveries WHERE id = ?1", [&delivery_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((status, destination)) = row else {
                return Ok(ReplayOutcome::NotFound);
            };
            let now = UnixMs::now();
            if status == DeliveryStatus::Pending {
                let rescheduled = connection.execute(
                    "UPDATE deliveries SET next_attempt_at_ms = ?2, updated_at_ms = ?2
                     WHERE id = ?1 AND next_attempt_at_ms > ?2 AND (lease_until_ms IS NULL OR lease_until_ms < ?2)",
                    params![delivery_id, now],
                )? == 1;
                return Ok(ReplayOutcome::AlreadyPending { destination, rescheduled });
            }
            connection.execute(
                "UPDATE deliveries SET status = ?3, replays = replays + 1, replay_enqueued = 1,
                     attempt_base = attempts, next_attempt_at_ms = ?2, updated_at_ms = ?2,
                     dead_letter_reason = NULL, lease_until_ms = NULL
                 WHERE id = ?1",
                params![delivery_id, now, DeliveryStatus::Pending],
            )?;
            if audit {
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::ReplayDelivery,
                    target: delivery_id.as_str(),
                    count: 1,
                    detail: Some(&format!("previous status {status}")),
                }
                .write(connection)?;
            }
            Ok(ReplayOutcome::Replayed { destination })
        })
        .await
    }
}
