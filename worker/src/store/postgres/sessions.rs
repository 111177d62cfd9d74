//! Console sessions on PostgreSQL (see `store/sessions.rs` for the contract): signing in, in
//! one transaction with the user and its linked account (`postgres/users.rs`).

use tokio_postgres::Row;

use super::columns::role_at;
use super::users::{create_user_with, drop_token, keep_token, link_id_of, owner_of, record_login};
use super::{PgError, Postgres};
use crate::model::{AuditAction, UnixMs};
use crate::store::audit::AuditRow;
use crate::store::sessions::SessionAccount;
use crate::store::{ProviderAccount, SessionRow, SignIn, StoreError};

fn session_row(r: &Row) -> Result<SessionRow, PgError> {
    // provider and subject are NOT NULL: both are present exactly when the session's account is.
    let provider: Option<String> = r.try_get(5)?;
    let subject: Option<String> = r.try_get(6)?;
    let token_sealed: Option<String> = r.try_get(7)?;
    Ok(SessionRow {
        user: r.try_get(0)?,
        email: r.try_get(1)?,
        role: role_at(r, 2)?,
        csrf_token: r.try_get(3)?,
        recheck_at: r.try_get(4)?,
        account: provider
            .zip(subject)
            .map(|(provider, subject)| SessionAccount { account: ProviderAccount { provider, subject }, token_sealed }),
    })
}

impl Postgres {
    pub async fn sign_in(&self, sign_in: SignIn) -> Result<(), StoreError> {
        let SignIn { account, email, name, role, kept_token, session_hash, csrf_token, ttl } = sign_in;
        Ok(self
            .write(async |t| {
                let now = UnixMs::now();
                let user = match owner_of(t, &account).await? {
                    Some(user) => {
                        record_login(t, user, role, now, name.as_deref()).await?;
                        user
                    }
                    None => match create_user_with(t, &email, name.as_deref(), role, now, &account).await? {
                        Some(user) => user,
                        // Signed in meanwhile by another tab or worker, which linked the account
                        // first: this sign-in returns to its user, as if it had come second.
                        None => {
                            let user = owner_of(t, &account).await?.ok_or_else(|| {
                                PgError::Refused(format!("the {} account vanished while signing in", account.provider))
                            })?;
                            record_login(t, user, role, now, name.as_deref()).await?;
                            user
                        }
                    },
                };
                let link = link_id_of(t, &account).await?;
                let (sealed, recheck_at) =
                    kept_token.map_or((None, None), |kept| (Some(kept.sealed), Some(kept.recheck_at)));
                keep_token(t, link, sealed.as_deref()).await?;
                // Expired sessions another transaction holds are skipped, not waited for: the
                // sweep is housekeeping, and waiting could close a lock cycle (ending a session
                // locks it, then its account, which this sign-in may hold already; two sweeps
                // may meet the same rows in different orders).
                let statement = t
                    .prepare_cached(
                        "DELETE FROM sessions WHERE id_hash IN
                           (SELECT id_hash FROM sessions WHERE expires_at_ms <= $1 FOR UPDATE SKIP LOCKED)",
                    )
                    .await?;
                t.execute(&statement, &[&now]).await?;
                let statement = t
                    .prepare_cached(
                        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at_ms, expires_at_ms,
                                               oauth_account_id, recheck_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .await?;
                t.execute(&statement, &[&session_hash, &user, &csrf_token, &now, &now.plus(ttl), &link, &recheck_at])
                    .await?;
                AuditRow {
                    at: now,
                    actor: &email,
                    action: AuditAction::SignIn,
                    target: &account.provider,
                    count: 1,
                    detail: None,
                }
                .write_pg(t)
                .await
            })
            .await?)
    }

    pub async fn live_session(&self, session_hash: String, now: UnixMs) -> Result<Option<SessionRow>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT u.id, u.email, u.role, s.csrf_token, s.recheck_at_ms, a.provider, a.subject, a.token_sealed
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 LEFT JOIN oauth_accounts a ON a.id = s.oauth_account_id
                 WHERE s.id_hash = $1 AND s.expires_at_ms > $2",
            )
            .await
            .map_err(PgError::from)?;
        let row = client.query_opt(&statement, &[&session_hash, &now]).await.map_err(PgError::from)?;
        Ok(row.as_ref().map(session_row).transpose()?)
    }

    pub async fn schedule_session_recheck(&self, session_hash: String, recheck_at: UnixMs) -> Result<(), StoreError> {
        self.write(async |t| {
            let statement = t.prepare_cached("UPDATE sessions SET recheck_at_ms = $2 WHERE id_hash = $1").await?;
            t.execute(&statement, &[&session_hash, &recheck_at]).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn end_lapsed_session(
        &self,
        session_hash: String,
        account: Option<ProviderAccount>,
        email: String,
    ) -> Result<(), StoreError> {
        Ok(self
            .write(async |t| {
                let statement = t.prepare_cached("DELETE FROM sessions WHERE id_hash = $1").await?;
                t.execute(&statement, &[&session_hash]).await?;
                if let Some(account) = &account {
                    drop_token(t, account).await?;
                }
                AuditRow {
                    at: UnixMs::now(),
                    actor: &email,
                    action: AuditAction::SessionEnded,
                    target: "membership",
                    count: 1,
                    detail: Some("no longer a member of an allowed organisation"),
                }
                .write_pg(t)
                .await
            })
            .await?)
    }

    pub async fn delete_session(&self, session_hash: String) -> Result<(), StoreError> {
        self.write(async |t| {
            let statement = t.prepare_cached("DELETE FROM sessions WHERE id_hash = $1").await?;
            t.execute(&statement, &[&session_hash]).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }
}
