//! Users and their linked provider accounts on PostgreSQL (see `store/users.rs` for the
//! contract), with the statements sign-in runs inside its transaction.
//!
//! Several workers may sign the same person in, link or unlink accounts at the same moment: the
//! unique keys on `email` and `(provider, subject)` decide who came first (`ON CONFLICT`), not a
//! read made before the write, and unlinking locks the user's row before it counts. Where both
//! are locked, the user's row is locked before its accounts' rows.

use deadpool_postgres::Transaction;
use inlet_shared::config::Role;
use tokio_postgres::Row;

use super::columns::role_at;
use super::{PgError, Postgres};
use crate::model::{AuditAction, LinkedAccountId, UnixMs, UserId};
use crate::store::audit::AuditRow;
use crate::store::users::{USERS, fold_users};
use crate::store::{Linked, LinkedAccountRow, ProviderAccount, StoreError, Unlinked, UserRow};

/// The user `account` is linked to, if any.
pub(super) async fn owner_of(t: &Transaction<'_>, account: &ProviderAccount) -> Result<Option<UserId>, PgError> {
    let statement = t.prepare_cached("SELECT user_id FROM oauth_accounts WHERE provider = $1 AND subject = $2").await?;
    let row = t.query_opt(&statement, &[&account.provider, &account.subject]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The id of the link of `account` (which must exist).
pub(super) async fn link_id_of(t: &Transaction<'_>, account: &ProviderAccount) -> Result<LinkedAccountId, PgError> {
    let statement = t.prepare_cached("SELECT id FROM oauth_accounts WHERE provider = $1 AND subject = $2").await?;
    Ok(t.query_one(&statement, &[&account.provider, &account.subject]).await?.try_get(0)?)
}

/// A returning user's sign-in: role (from the allowlist, at every login), time and name (if
/// the provider gave one).
pub(super) async fn record_login(
    t: &Transaction<'_>,
    user: UserId,
    role: Role,
    at: UnixMs,
    name: Option<&str>,
) -> Result<(), PgError> {
    let statement = t
        .prepare_cached("UPDATE users SET role = $2, last_login_ms = $3, name = coalesce($4, name) WHERE id = $1")
        .await?;
    t.execute(&statement, &[&user, &role.as_str(), &at, &name]).await?;
    Ok(())
}

/// The user with `email`, created or (same address) given `role` and the login time; then
/// `account` linked to it. `None`, with nothing of this done, when `account` got linked
/// meanwhile (another sign-in of the same account committed since its owner was read): the
/// caller then signs in as that owner, as if it had come second.
pub(super) async fn create_user_with(
    t: &Transaction<'_>,
    email: &str,
    name: Option<&str>,
    role: Role,
    at: UnixMs,
    account: &ProviderAccount,
) -> Result<Option<UserId>, PgError> {
    // The user is made before the link can be tried (the link needs its id): a savepoint
    // takes the user back out when the link turns out to exist already, so a lost race
    // leaves no user without an account, nor another user's role changed.
    t.batch_execute("SAVEPOINT create_user_with").await?;
    // A concurrent insert of the same address waits here for the other transaction, then
    // updates the row it committed: both end with one user.
    let statement = t
        .prepare_cached(
            "INSERT INTO users (email, name, role, created_at_ms, last_login_ms) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (email) DO UPDATE SET role = excluded.role, last_login_ms = excluded.last_login_ms
             RETURNING id",
        )
        .await?;
    let user: UserId = t.query_one(&statement, &[&email, &name, &role.as_str(), &at]).await?.try_get(0)?;
    if insert_link(t, user, account, email, at).await?.is_some() {
        t.batch_execute("RELEASE SAVEPOINT create_user_with").await?;
        Ok(Some(user))
    } else {
        t.batch_execute("ROLLBACK TO SAVEPOINT create_user_with; RELEASE SAVEPOINT create_user_with").await?;
        Ok(None)
    }
}

/// Links `account` to `user`; `None` (nothing done) when it is linked already, also by a
/// transaction that committed after this one began (the unique key waits for it).
async fn insert_link(
    t: &Transaction<'_>,
    user: UserId,
    account: &ProviderAccount,
    email: &str,
    at: UnixMs,
) -> Result<Option<LinkedAccountId>, PgError> {
    let statement = t
        .prepare_cached(
            "INSERT INTO oauth_accounts (user_id, provider, subject, email, created_at_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (provider, subject) DO NOTHING RETURNING id",
        )
        .await?;
    let row = t.query_opt(&statement, &[&user, &account.provider, &account.subject, &email, &at]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Keeps `sealed` (a provider token sealed for this account) on link `id`; `None` drops it.
pub(super) async fn keep_token(t: &Transaction<'_>, id: LinkedAccountId, sealed: Option<&str>) -> Result<(), PgError> {
    let statement = t.prepare_cached("UPDATE oauth_accounts SET token_sealed = $2 WHERE id = $1").await?;
    t.execute(&statement, &[&id, &sealed]).await?;
    Ok(())
}

/// Drops the token kept on `account`, if any.
pub(super) async fn drop_token(t: &Transaction<'_>, account: &ProviderAccount) -> Result<(), PgError> {
    let statement =
        t.prepare_cached("UPDATE oauth_accounts SET token_sealed = NULL WHERE provider = $1 AND subject = $2").await?;
    t.execute(&statement, &[&account.provider, &account.subject]).await?;
    Ok(())
}

/// A user's linked accounts, oldest first, as [`linked_account_row`] reads them.
const LINKED_ACCOUNTS_OF: &str =
    "SELECT id, provider, email, created_at_ms FROM oauth_accounts WHERE user_id = $1 ORDER BY id";

fn linked_account_row(row: &Row) -> Result<LinkedAccountRow, PgError> {
    Ok(LinkedAccountRow {
        id: row.try_get(0)?,
        provider: row.try_get(1)?,
        email: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

async fn linked_accounts_of(t: &Transaction<'_>, user: UserId) -> Result<Vec<LinkedAccountRow>, PgError> {
    let statement = t.prepare_cached(LINKED_ACCOUNTS_OF).await?;
    t.query(&statement, &[&user]).await?.iter().map(linked_account_row).collect()
}

/// A row of [`USERS`]: the user, and one of their accounts if they have any.
fn user_row(row: &Row) -> Result<(UserRow, Option<LinkedAccountRow>), PgError> {
    let user = UserRow {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        role: role_at(row, 3)?,
        created_at: row.try_get(4)?,
        last_sign_in: row.try_get(5)?,
        live_sessions: row.try_get(6)?,
        accounts: Vec::new(),
    };
    let account = match row.try_get::<_, Option<LinkedAccountId>>(7)? {
        Some(id) => Some(LinkedAccountRow {
            id,
            provider: row.try_get(8)?,
            email: row.try_get(9)?,
            created_at: row.try_get(10)?,
        }),
        None => None,
    };
    Ok((user, account))
}

impl Postgres {
    pub async fn users(&self, now: UnixMs) -> Result<Vec<UserRow>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(USERS).await.map_err(PgError::from)?;
        let rows = client.query(&statement, &[&now]).await.map_err(PgError::from)?;
        Ok(fold_users(rows.iter().map(user_row).collect::<Result<_, _>>()?))
    }

    pub async fn linked_user_email(&self, account: ProviderAccount) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT u.email FROM oauth_accounts a JOIN users u ON u.id = a.user_id
                 WHERE a.provider = $1 AND a.subject = $2",
            )
            .await
            .map_err(PgError::from)?;
        let row = client.query_opt(&statement, &[&account.provider, &account.subject]).await.map_err(PgError::from)?;
        Ok(row.map(|r| r.try_get(0)).transpose().map_err(PgError::from)?)
    }

    pub async fn link_account(
        &self,
        user: UserId,
        account: ProviderAccount,
        email: String,
    ) -> Result<Linked, StoreError> {
        Ok(self
            .write(async |t| {
                let now = UnixMs::now();
                // Whoever links the account first wins: the insert, not an earlier read, decides
                // (a concurrent link of the same account waits on the unique key, then finds it).
                if insert_link(t, user, &account, &email, now).await?.is_none() {
                    return Ok(match owner_of(t, &account).await? {
                        Some(owner) if owner == user => Linked::Already,
                        _ => Linked::OtherUser,
                    });
                }
                let statement = t.prepare_cached("SELECT email FROM users WHERE id = $1").await?;
                let actor: String = t.query_one(&statement, &[&user]).await?.try_get(0)?;
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::LinkAccount,
                    target: &account.provider,
                    count: 1,
                    detail: Some(&email),
                }
                .write_pg(t)
                .await?;
                Ok(Linked::Now)
            })
            .await?)
    }

    pub async fn linked_accounts(&self, user: UserId) -> Result<Vec<LinkedAccountRow>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(LINKED_ACCOUNTS_OF).await.map_err(PgError::from)?;
        let rows = client.query(&statement, &[&user]).await.map_err(PgError::from)?;
        Ok(rows.iter().map(linked_account_row).collect::<Result<_, _>>()?)
    }

    pub async fn unlink_account(
        &self,
        user: UserId,
        id: LinkedAccountId,
        actor: String,
    ) -> Result<Unlinked, StoreError> {
        Ok(self
            .write(async |t| {
                // The user's row is locked before its accounts are counted: two unlinks of its
                // last two accounts at the same moment would otherwise each count two and
                // leave none. (A link being added waits too: its key on the user conflicts.)
                let statement = t.prepare_cached("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").await?;
                t.query_opt(&statement, &[&user]).await?;
                let statement = t.prepare_cached("SELECT count(*) FROM oauth_accounts WHERE user_id = $1").await?;
                let count: i64 = t.query_one(&statement, &[&user]).await?.try_get(0)?;
                let statement =
                    t.prepare_cached("SELECT provider FROM oauth_accounts WHERE id = $1 AND user_id = $2").await?;
                let Some(provider) = t.query_opt(&statement, &[&id, &user]).await? else {
                    return Ok(Unlinked::NoSuchAccount);
                };
                let provider: String = provider.try_get(0)?;
                if count <= 1 {
                    return Ok(Unlinked::LastAccount);
                }
                let statement = t.prepare_cached("DELETE FROM oauth_accounts WHERE id = $1").await?;
                t.execute(&statement, &[&id]).await?;
                AuditRow {
                    at: UnixMs::now(),
                    actor: &actor,
                    action: AuditAction::UnlinkAccount,
                    target: &provider,
                    count: 1,
                    detail: None,
                }
                .write_pg(t)
                .await?;
                Ok(Unlinked::Done(linked_accounts_of(t, user).await?))
            })
            .await?)
    }
}
