//! The delivery schedule on PostgreSQL: claims under a lease with a fencing token, and attempts
//! recorded under it (see `store/deliveries.rs` for the contract).

use tokio_postgres::Row;

use super::{PgError, Postgres};
use crate::model::{DeadLetterReason, DeliveryId, DeliveryStatus, LeaseToken, UnixMs};
use crate::store::deliveries::{ORDER_FREE_PG, RECORDED_BEFORE_PG};
use crate::store::{AttemptRecord, AttemptSettled, ClaimDue, Claimed, DeliveryToSend, DueClass, Lease, StoreError};

/// What makes a delivery of destination `$1` and class `$2` (retry: true) due at `$3`: pending,
/// past its due time, and no live lease. `status` stays a literal so that the partial index
/// `deliveries_due` (`WHERE status = 'pending'`) applies to every plan.
/// An ordered delivery also waits for its key's turn ([`ORDER_FREE_PG`]).
const DUE: &str = "d.status = 'pending' AND d.destination = $1 AND (d.attempts > d.attempt_base) = $2
    AND d.next_attempt_at_ms <= $3 AND (d.lease_until_ms IS NULL OR d.lease_until_ms < $3)";

/// The first key of a destination's ordering lock (`pg_advisory_xact_lock(ORDERING_LOCK,
/// hashtext(destination))`; "ordr"): recordings of ordered deliveries hold it shared, claims
/// exclusively (see `events.rs`, `lock_ordered_destinations`). Two destinations whose names hash
/// alike share a lock, which only makes one wait for the other.
pub(super) const ORDERING_LOCK: i32 = 0x6F72_6472;

/// A claimed delivery as the claim's statement returns it.
fn claimed_row(row: &Row, until: UnixMs) -> Result<(Claimed, bool), PgError> {
    let body: Vec<u8> = row.try_get(8)?;
    let delivery = DeliveryToSend {
        delivery_id: row.try_get(0)?,
        destination: row.try_get(1)?,
        attempts: row.try_get(2)?,
        source: row.try_get(3)?,
        event_id: row.try_get(4)?,
        event_type: row.try_get(5)?,
        content_type: row.try_get(6)?,
        received_at: row.try_get(7)?,
        body: body.into(),
        attempt_base: row.try_get(9)?,
        trace_context: row.try_get(12)?,
        headers_json: row.try_get(13)?,
        ordered: row.try_get(14)?,
        config_version: row.try_get(15)?,
    };
    let lease = Lease { token: row.try_get(10)?, until };
    Ok((Claimed { delivery, lease }, row.try_get(11)?))
}

impl Postgres {
    /// Through the grouping task (`attempts.rs`): one statement per group of results.
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<AttemptSettled, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.attempts.send((record, reply)).await.map_err(|_| StoreError::WriterGone)?;
        Ok(answer.await.map_err(|_| StoreError::WriterGone)??)
    }

    /// Safe with several workers claiming one destination at once: the due rows are locked as
    /// they are selected, and rows another claim holds are skipped (`SKIP LOCKED`), so each due
    /// delivery is claimed by exactly one of them. A row a claim took since this statement's
    /// snapshot is checked again under its lock, and no longer due. Claim and read are one
    /// statement: the events' bodies come back with the claims.
    pub async fn claim_due(
        &self,
        destination: String,
        request: ClaimDue,
    ) -> Result<(Vec<Claimed>, Vec<DeliveryId>), StoreError> {
        let ClaimDue { class, limit, now, lease_until, skip, gate } = request;
        let through_position = gate.map(|g| g.through_position);
        let settled_before = gate.map(|g| g.settled_before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let retry = class == DueClass::Retry;
        let rows = self
            .write(async |t| {
                // The destination's ordering lock first, in a statement of its own: the claim's
                // snapshot is then taken after every recording that drew ordering positions for
                // it committed (see `ORDERING_LOCK`). Pipelined with the claim: no extra round trip.
                let lock =
                    t.prepare_cached(&format!("SELECT pg_advisory_xact_lock({ORDERING_LOCK}, hashtext($1))")).await?;
                let statement = t
                    .prepare_cached(&format!(
                        "WITH due AS (
                             SELECT d.id, d.lease_until_ms FROM deliveries d WHERE {DUE} AND d.id <> ALL($6)
                               AND {ORDER_FREE_PG} AND {RECORDED_BEFORE_PG}
                             ORDER BY d.next_attempt_at_ms LIMIT $4 FOR UPDATE SKIP LOCKED
                         ), claimed AS (
                             UPDATE deliveries d SET lease_token = d.lease_token + 1, lease_until_ms = $5
                             FROM due WHERE d.id = due.id
                             RETURNING d.id, d.destination, d.attempts, d.attempt_base, d.event_rowid, d.lease_token,
                                       d.next_attempt_at_ms, due.lease_until_ms IS NOT NULL AS restarted,
                                       d.ordering_key IS NOT NULL AS ordered, d.config_version
                         )
                         SELECT c.id, c.destination, c.attempts - c.attempt_base, e.source, e.event_id, e.event_type,
                                e.content_type, e.received_at_ms, e.body, c.attempt_base, c.lease_token, c.restarted,
                                e.trace_context, e.headers_json, c.ordered, c.config_version
                         FROM claimed c JOIN events e ON e.id = c.event_rowid
                         ORDER BY c.next_attempt_at_ms, c.id"
                    ))
                    .await?;
                let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&destination];
                let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                    [&destination, &retry, &now, &limit, &lease_until, &skip, &through_position, &settled_before];
                let (_, rows) = futures::try_join!(t.query(&lock, &lock_params), t.query(&statement, &claim_params))?;
                Ok(rows)
            })
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut restarted = Vec::new();
        for row in &rows {
            let (claim, had_lease) = claimed_row(row, lease_until)?;
            if had_lease {
                restarted.push(claim.delivery.delivery_id.clone());
            }
            claimed.push(claim);
        }
        Ok((claimed, restarted))
    }

    pub async fn has_due(&self, destination: String, class: DueClass, now: UnixMs) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT EXISTS (SELECT 1 FROM deliveries d WHERE {DUE} AND {ORDER_FREE_PG})"))
            .await
            .map_err(PgError::from)?;
        let row = client.query_one(&statement, &[&destination, &(class == DueClass::Retry), &now]).await;
        Ok(row.and_then(|row| row.try_get(0)).map_err(PgError::from)?)
    }

    pub async fn renew_lease(
        &self,
        delivery_id: DeliveryId,
        token: LeaseToken,
        until: UnixMs,
    ) -> Result<bool, StoreError> {
        let changed = self
            .write(async |t| {
                let statement = t
                    .prepare_cached(
                        "UPDATE deliveries SET lease_until_ms = $3
                         WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
                    )
                    .await?;
                Ok(t.execute(&statement, &[&delivery_id, &token, &until]).await?)
            })
            .await?;
        Ok(changed == 1)
    }

    pub async fn release_leases(&self, leases: Vec<(DeliveryId, LeaseToken)>) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let (ids, tokens): (Vec<DeliveryId>, Vec<LeaseToken>) = leases.into_iter().unzip();
        self.write(async |t| {
            let statement = t
                .prepare_cached(
                    "UPDATE deliveries d SET lease_until_ms = NULL
                     FROM unnest($1::text[], $2::bigint[]) AS released (id, lease_token)
                     WHERE d.id = released.id AND d.lease_token = released.lease_token AND d.status = 'pending'",
                )
                .await?;
            t.execute(&statement, &[&ids, &tokens]).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Releases nothing. On SQLite one process owns the file, so every lease in it at startup
    /// is a dead process's; on PostgreSQL the other leases are other live workers' (whose
    /// attempts are under way), and releasing them would start those attempts twice. A dead
    /// worker's deliveries are claimed again once their leases expire.
    pub async fn release_all_leases(&self) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        Ok(Vec::new())
    }

    pub async fn release_destination_leases(&self, destination: String) -> Result<Vec<DeliveryId>, StoreError> {
        Ok(self
            .write(async |t| {
                let statement = t
                    .prepare_cached(
                        "UPDATE deliveries SET lease_until_ms = NULL
                         WHERE destination = $1 AND status = 'pending' AND lease_until_ms IS NOT NULL RETURNING id",
                    )
                    .await?;
                let rows = t.query(&statement, &[&destination]).await?;
                Ok(rows.iter().map(|row| row.try_get(0)).collect::<Result<Vec<DeliveryId>, _>>()?)
            })
            .await?)
    }

    /// One destination at a time, in byte order (the order recording inserts deliveries in), so
    /// the `delivery_counts` rows are locked in one order. Two workers doing this at once:
    /// the second waits for the first's rows, finds them dead-lettered already and changes
    /// nothing; each reports what it changed.
    pub async fn dead_letter_unconfigured(&self, configured: Vec<String>) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(self
            .write(async |t| {
                let select = t
                    .prepare_cached(
                        "SELECT destination FROM deliveries WHERE status = 'pending' AND destination <> ALL($1)
                         GROUP BY destination",
                    )
                    .await?;
                let mut stranded: Vec<String> = t
                    .query(&select, &[&configured])
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<_, _>>()?;
                stranded.sort_unstable();
                let update = t
                    .prepare_cached(
                        "UPDATE deliveries SET status = $2, dead_letter_reason = $3, updated_at_ms = $4,
                             lease_until_ms = NULL
                         WHERE status = 'pending' AND destination = $1",
                    )
                    .await?;
                let now = UnixMs::now();
                let mut dead_lettered = Vec::with_capacity(stranded.len());
                for destination in stranded {
                    let changed = t
                        .execute(
                            &update,
                            &[&destination, &DeliveryStatus::DeadLettered, &DeadLetterReason::UnknownDestination, &now],
                        )
                        .await?;
                    if changed > 0 {
                        dead_lettered.push((destination, i64::try_from(changed).unwrap_or(i64::MAX)));
                    }
                }
                Ok(dead_lettered)
            })
            .await?)
    }
}
