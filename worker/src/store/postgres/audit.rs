//! The audit insert on PostgreSQL, in the transaction of the change it records.

use super::PgError;
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
