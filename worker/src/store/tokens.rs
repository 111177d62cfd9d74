//! API tokens: looked up by their hash for every bearer request, listed, created and revoked
//! by admins (each change with its audit row, in its transaction). Only the SHA-256 of a token
//! is stored; its value never reaches this module.

use inlet_shared::config::Role;
use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::audit::AuditRow;
use super::columns::role_at;
use super::sqlite::Sqlite;
use crate::model::{ApiTokenId, AuditAction, UnixMs};

/// The columns [`ApiTokenRow::from_row`] reads, in its order.
const COLUMNS: &str = "id, name, role, created_by, created_at_ms, revoked_at_ms, last_used_ms";

/// An API token's record (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRow {
    /// Its id.
    pub id: ApiTokenId,
    /// Its name: the audit log shows its caller as `token:{name}`.
    pub name: String,
    /// What its caller may do.
    pub role: Role,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: UnixMs,
    /// When it was revoked (it no longer authenticates).
    pub revoked_at: Option<UnixMs>,
    /// When it was last used, to the minute.
    pub last_used: Option<UnixMs>,
}

impl ApiTokenRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiTokenRow> {
        Ok(ApiTokenRow {
            id: row.get(0)?,
            name: row.get(1)?,
            role: role_at(row, 2)?,
            created_by: row.get(3)?,
            created_at: row.get(4)?,
            revoked_at: row.get(5)?,
            last_used: row.get(6)?,
        })
    }
}

/// The token `id`, if it exists.
fn token_by_id(connection: &rusqlite::Connection, id: ApiTokenId) -> rusqlite::Result<Option<ApiTokenRow>> {
    connection
        .query_row(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1"), [id], ApiTokenRow::from_row)
        .optional()
}

impl Sqlite {
    pub async fn live_api_token(&self, token_hash: String) -> Result<Option<ApiTokenRow>, StoreError> {
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND revoked_at_ms IS NULL"),
                [token_hash],
                ApiTokenRow::from_row,
            )
            .optional()
        })
        .await
    }

    pub async fn touch_api_token(&self, id: ApiTokenId, at: UnixMs) -> Result<(), StoreError> {
        self.write(move |c| c.execute("UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1", params![id, at]))
            .await?;
        Ok(())
    }

    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        self.read(|c| {
            let mut statement = c.prepare(&format!("SELECT {COLUMNS} FROM api_tokens ORDER BY id"))?;
            let rows = statement.query_map([], ApiTokenRow::from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn create_api_token(
        &self,
        name: String,
        token_hash: String,
        role: Role,
        actor: String,
    ) -> Result<ApiTokenRow, StoreError> {
        self.write(move |c| {
            let now = UnixMs::now();
            c.execute(
                "INSERT INTO api_tokens (name, token_hash, role, created_by, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, token_hash, role.as_str(), actor, now],
            )?;
            let id = ApiTokenId(c.last_insert_rowid());
            AuditRow {
                at: now,
                actor: &actor,
                action: AuditAction::CreateApiToken,
                target: &format!("api_token:{}", id.0),
                count: 1,
                detail: Some(&format!("{name} ({})", role.as_str())),
            }
            .write(c)?;
            token_by_id(c, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
        .await
    }

    pub async fn revoke_api_token(&self, id: ApiTokenId, actor: String) -> Result<Option<ApiTokenRow>, StoreError> {
        self.write(move |c| {
            let now = UnixMs::now();
            let changed = c.execute(
                "UPDATE api_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
                params![id, now],
            )?;
            // Revoking a revoked token changes nothing, so it is not audited again.
            if changed == 1 {
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::RevokeApiToken,
                    target: &format!("api_token:{}", id.0),
                    count: 1,
                    detail: None,
                }
                .write(c)?;
            }
            token_by_id(c, id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use inlet_shared::config::Role;

    use crate::model::ApiTokenId;
    use crate::store::{PageRequest, Store};

    /// The audit log, oldest first: (actor, action, target, detail).
    async fn audited(store: &Store) -> Vec<(String, String, String, Option<String>)> {
        let page = store.audit_page(PageRequest { after: None, limit: 100 }).await.unwrap();
        page.rows.into_iter().rev().map(|r| (r.actor, r.action.as_str().to_owned(), r.target, r.detail)).collect()
    }

    on_each_backend!(tokens_are_found_by_hash_until_revoked_and_every_change_is_audited_once);

    async fn tokens_are_found_by_hash_until_revoked_and_every_change_is_audited_once(store: Store) {
        let created =
            store.create_api_token("ci".into(), "hash-1".into(), Role::Operator, "admin@x".into()).await.unwrap();
        assert_eq!(
            (created.name.as_str(), created.role, created.created_by.as_str()),
            ("ci", Role::Operator, "admin@x")
        );
        assert_eq!((created.revoked_at, created.last_used), (None, None));
        assert_eq!(store.live_api_token("hash-1".into()).await.unwrap(), Some(created.clone()));
        assert_eq!(store.live_api_token("hash-2".into()).await.unwrap(), None);

        store.touch_api_token(created.id, crate::model::UnixMs(1_234)).await.unwrap();
        let listed = store.api_tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_used, Some(crate::model::UnixMs(1_234)));

        let revoked = store.revoke_api_token(created.id, "admin@x".into()).await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(store.live_api_token("hash-1".into()).await.unwrap(), None, "revoked tokens stop at once");
        let again = store.revoke_api_token(created.id, "admin@x".into()).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, revoked.revoked_at, "revoking twice keeps the first time");
        assert_eq!(store.revoke_api_token(ApiTokenId(999), "admin@x".into()).await.unwrap(), None);

        let target = format!("api_token:{}", created.id.0);
        assert_eq!(
            audited(&store).await,
            [
                ("admin@x".into(), "create_api_token".into(), target.clone(), Some("ci (operator)".into())),
                ("admin@x".into(), "revoke_api_token".into(), target, None),
            ]
        );
    }
}
