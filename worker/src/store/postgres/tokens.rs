//! API tokens on PostgreSQL (see `store/tokens.rs`).

use inlet_shared::config::Role;
use tokio_postgres::Row;

use super::columns::role_at;
use super::{PgError, Postgres};
use crate::model::{ApiTokenId, AuditAction, UnixMs};
use crate::store::audit::AuditRow;
use crate::store::{ApiTokenRow, StoreError};

/// The columns [`token_row`] reads, in its order.
const COLUMNS: &str = "id, name, role, created_by, created_at_ms, revoked_at_ms, last_used_ms";

fn token_row(row: &Row) -> Result<ApiTokenRow, PgError> {
    Ok(ApiTokenRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        role: role_at(row, 2)?,
        created_by: row.try_get(3)?,
        created_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
        last_used: row.try_get(6)?,
    })
}

async fn token_by_id(
    transaction: &deadpool_postgres::Transaction<'_>,
    id: ApiTokenId,
) -> Result<Option<ApiTokenRow>, PgError> {
    let statement = transaction.prepare_cached(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1")).await?;
    transaction.query_opt(&statement, &[&id]).await?.as_ref().map(token_row).transpose()
}

impl Postgres {
    pub async fn live_api_token(&self, token_hash: String) -> Result<Option<ApiTokenRow>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL"
            ))
            .await
            .map_err(PgError::from)?;
        let row = client.query_opt(&statement, &[&token_hash]).await.map_err(PgError::from)?;
        Ok(row.as_ref().map(token_row).transpose()?)
    }

    pub async fn touch_api_token(&self, id: ApiTokenId, at: UnixMs) -> Result<(), StoreError> {
        self.write(async |t| {
            let statement = t.prepare_cached("UPDATE api_tokens SET last_used_ms = $2 WHERE id = $1").await?;
            t.execute(&statement, &[&id, &at]).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM api_tokens ORDER BY id"))
            .await
            .map_err(PgError::from)?;
        let rows = client.query(&statement, &[]).await.map_err(PgError::from)?;
        Ok(rows.iter().map(token_row).collect::<Result<_, _>>()?)
    }

    pub async fn create_api_token(
        &self,
        name: String,
        token_hash: String,
        role: Role,
        actor: String,
    ) -> Result<ApiTokenRow, StoreError> {
        Ok(self
            .write(async |t| {
                let now = UnixMs::now();
                let statement = t
                    .prepare_cached(
                        "INSERT INTO api_tokens (name, token_hash, role, created_by, created_at_ms)
                         VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    )
                    .await?;
                let id: ApiTokenId =
                    t.query_one(&statement, &[&name, &token_hash, &role.as_str(), &actor, &now]).await?.try_get(0)?;
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::CreateApiToken,
                    target: &format!("api_token:{}", id.0),
                    count: 1,
                    detail: Some(&format!("{name} ({})", role.as_str())),
                }
                .write_pg(t)
                .await?;
                token_by_id(t, id).await?.ok_or_else(|| PgError::Refused(format!("api token {} vanished", id.0)))
            })
            .await?)
    }

    pub async fn revoke_api_token(&self, id: ApiTokenId, actor: String) -> Result<Option<ApiTokenRow>, StoreError> {
        Ok(self
            .write(async |t| {
                let now = UnixMs::now();
                let statement = t
                    .prepare_cached("UPDATE api_tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL")
                    .await?;
                // Revoking a revoked token changes nothing, so it is not audited again.
                if t.execute(&statement, &[&id, &now]).await? == 1 {
                    AuditRow {
                        at: now,
                        actor: &actor,
                        action: AuditAction::RevokeApiToken,
                        target: &format!("api_token:{}", id.0),
                        count: 1,
                        detail: None,
                    }
                    .write_pg(t)
                    .await?;
                }
                token_by_id(t, id).await
            })
            .await?)
    }
}
