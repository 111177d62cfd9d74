//! The audit log: one typed insert, written in the transaction of the change it records.

use rusqlite::params;

use super::StoreError;
use super::sqlite::Sqlite;
use crate::model::{AuditAction, UnixMs};

/// One audit row, written in the caller's transaction (a change and its audit row commit
/// together): the one place the audit insert is spelled.
pub struct AuditRow<'a> {
    /// When.
    pub at: UnixMs,
    /// Who: an email address or an API token's name.
    pub actor: &'a str,
    /// What.
    pub action: AuditAction,
    /// On what.
    pub target: &'a str,
    /// How many things it affected.
    pub count: i64,
    /// Free text, if any.
    pub detail: Option<&'a str>,
}

impl AuditRow<'_> {
    /// Writes the row on `connection` (inside the caller's transaction).
    ///
    /// # Errors
    ///
    /// When the insert fails.
    pub fn write(&self, connection: &rusqlite::Connection) -> rusqlite::Result<()> {
        connection.execute(
            "INSERT INTO audit_log (at_ms, actor, action, target, count, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.at, self.actor, self.action, self.target, self.count, self.detail],
        )?;
        Ok(())
    }
}

impl Sqlite {
    pub async fn record_source_action(
        &self,
        action: AuditAction,
        actor: String,
        source: String,
        count: i64,
        detail: String,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            AuditRow {
                at: UnixMs::now(),
                actor: &actor,
                action,
                target: &format!("source:{source}"),
                count,
                detail: Some(&detail),
            }
            .write(c)
        })
        .await
    }
}
