//! The audit insert on PostgreSQL, in the transaction of the change it records.

use super::{PgError, Postgres};
use crate::model::{AuditAction, UnixMs};
use crate::store::StoreError;
use crate::store::audit::AuditRow;

impl AuditRow<'_> {
    /// Writes the row inside the caller's transaction.
    pub(super) async fn write_pg(&self, transaction: &deadpool_postgres::Transaction<'_>) -> Result<(), PgError> {
        let statement = transaction
            .prepare_cached(
                "INSERT INTO audit_log (at_ms, actor, action, target, count, detail) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        transaction
            .execute(&statement, &[&self.at, &self.actor, &self.action, &self.target, &self.count, &self.detail])
            .await?;
        Ok(())
    }
}

impl Postgres {
    pub async fn record_source_action(
        &self,
        action: AuditAction,
        actor: String,
        source: String,
        count: i64,
        detail: String,
    ) -> Result<(), StoreError> {
        Ok(self
            .write(async |t| {
                AuditRow {
                    at: UnixMs::now(),
                    actor: &actor,
                    action,
                    target: &format!("source:{source}"),
                    count,
                    detail: Some(&detail),
                }
                .write_pg(t)
                .await
            })
            .await?)
    }
}
