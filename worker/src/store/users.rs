//! Users of the console and the provider accounts linked to them (`oauth_accounts`), with the
//! provider token kept sealed on an account. A provider account belongs to at most one user;
//! a user keeps at least one.
//!
//! The statements that sign-in needs run inside its transaction ([`Store::sign_in`]); linking,
//! unlinking and listing (a user's own accounts; every user, for admins) are operations of their
//! own.

use inlet_shared::config::Role;
use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::audit::AuditRow;
use super::columns::role_at;
use super::sqlite::Sqlite;
use crate::model::{AuditAction, LinkedAccountId, UnixMs, UserId};

/// An account at a sign-in provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccount {
    /// `oidc` or `github`.
    pub provider: String,
    /// The account's subject at the provider.
    pub subject: String,
}

/// A provider account linked to a user, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAccountRow {
    /// The link's id.
    pub id: LinkedAccountId,
    /// `oidc` or `github`.
    pub provider: String,
    /// The email the provider gave when it was linked.
    pub email: Option<String>,
    /// When it was linked.
    pub created_at: UnixMs,
}

/// A console user as an admin sees them: the role is the one their last sign-in was given
/// (`[console.access]`, or an allowed organisation), kept for their sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The user's id.
    pub id: UserId,
    /// Their address (unique).
    pub email: String,
    /// The name the provider gave, if any.
    pub name: Option<String>,
    /// Their role as of their last sign-in.
    pub role: Role,
    /// When they first signed in.
    pub created_at: UnixMs,
    /// When they last signed in.
    pub last_sign_in: Option<UnixMs>,
    /// Their sessions not yet expired.
    pub live_sessions: i64,
    /// The provider accounts they sign in with, oldest first.
    pub accounts: Vec<LinkedAccountRow>,
}

/// Every user with each of their linked accounts (one row per account; a user without one
/// has a row of nulls), by address then link, and the number of their sessions live at `$1`
/// (`?1` for SQLite). One statement, so the list is one snapshot on both engines.
pub(super) const USERS: &str = "SELECT u.id, u.email, u.name, u.role, u.created_at_ms, u.last_login_ms,
        (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.expires_at_ms > $1),
        a.id, a.provider, a.email, a.created_at_ms
     FROM users u LEFT JOIN oauth_accounts a ON a.user_id = u.id ORDER BY u.email, a.id";

/// Folds [`USERS`]' rows (user, account if any) into one [`UserRow`] per user, in order.
pub(super) fn fold_users(rows: Vec<(UserRow, Option<LinkedAccountRow>)>) -> Vec<UserRow> {
    let mut users: Vec<UserRow> = Vec::new();
    for (user, account) in rows {
        if users.last().is_none_or(|last| last.id != user.id) {
            users.push(user);
        }
        if let (Some(last), Some(account)) = (users.last_mut(), account) {
            last.accounts.push(account);
        }
    }
    users
}

/// What linking a provider account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// Now linked to the user.
    Now,
    /// It was already linked to this user.
    Already,
    /// It belongs to another user: refused.
    OtherUser,
}

/// What unlinking a provider account did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlinked {
    /// Unlinked; the user's remaining accounts.
    Done(Vec<LinkedAccountRow>),
    /// The user has no such linked account.
    NoSuchAccount,
    /// It is the user's last one: refused (the user could not sign in any more).
    LastAccount,
}

/// The user `account` is linked to, if any.
pub(super) fn owner_of(
    connection: &rusqlite::Connection,
    account: &ProviderAccount,
) -> rusqlite::Result<Option<UserId>> {
    connection
        .query_row(
            "SELECT user_id FROM oauth_accounts WHERE provider = ?1 AND subject = ?2",
            params![account.provider, account.subject],
            |r| r.get(0),
        )
        .optional()
}

/// The id of the link of `account` (which must exist).
pub(super) fn link_id_of(
    connection: &rusqlite::Connection,
    account: &ProviderAccount,
) -> rusqlite::Result<LinkedAccountId> {
    connection.query_row(
        "SELECT id FROM oauth_accounts WHERE provider = ?1 AND subject = ?2",
        params![account.provider, account.subject],
        |r| r.get(0),
    )
}

/// A returning user's sign-in: role (from the allowlist, at every login), time and name (if
/// the provider gave one).
pub(super) fn record_login(
    connection: &rusqlite::Connection,
    user: UserId,
    role: Role,
    at: UnixMs,
    name: Option<&str>,
) -> rusqlite::Result<()> {
    connection.execute(
        "UPDATE users SET role = ?2, last_login_ms = ?3, name = coalesce(?4, name) WHERE id = ?1",
        params![user, role.as_str(), at, name],
    )?;
    Ok(())
}

/// The user with `email`, created or (same address) given `role` and the login time; then
/// `account` linked to it.
pub(super) fn create_user_with(
    connection: &rusqlite::Connection,
    email: &str,
    name: Option<&str>,
    role: Role,
    at: UnixMs,
    account: &ProviderAccount,
) -> rusqlite::Result<UserId> {
    connection.execute(
        "INSERT INTO users (email, name, role, created_at_ms, last_login_ms) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (email) DO UPDATE SET role = excluded.role, last_login_ms = excluded.last_login_ms",
        params![email, name, role.as_str(), at],
    )?;
    let user: UserId = connection.query_row("SELECT id FROM users WHERE email = ?1", [email], |r| r.get(0))?;
    insert_link(connection, user, account, email, at)?;
    Ok(user)
}

fn insert_link(
    connection: &rusqlite::Connection,
    user: UserId,
    account: &ProviderAccount,
    email: &str,
    at: UnixMs,
) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO oauth_accounts (user_id, provider, subject, email, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user, account.provider, account.subject, email, at],
    )?;
    Ok(())
}

/// Keeps `sealed` (a provider token sealed for this account) on link `id`; `None` drops it.
pub(super) fn keep_token(
    connection: &rusqlite::Connection,
    id: LinkedAccountId,
    sealed: Option<&str>,
) -> rusqlite::Result<()> {
    connection.execute("UPDATE oauth_accounts SET token_sealed = ?2 WHERE id = ?1", params![id, sealed])?;
    Ok(())
}

/// Drops the token kept on `account`, if any.
pub(super) fn drop_token(connection: &rusqlite::Connection, account: &ProviderAccount) -> rusqlite::Result<()> {
    connection.execute(
        "UPDATE oauth_accounts SET token_sealed = NULL WHERE provider = ?1 AND subject = ?2",
        params![account.provider, account.subject],
    )?;
    Ok(())
}

fn linked_accounts_of(connection: &rusqlite::Connection, user: UserId) -> rusqlite::Result<Vec<LinkedAccountRow>> {
    let mut statement = connection
        .prepare("SELECT id, provider, email, created_at_ms FROM oauth_accounts WHERE user_id = ?1 ORDER BY id")?;
    let rows = statement.query_map([user], |r| {
        Ok(LinkedAccountRow { id: r.get(0)?, provider: r.get(1)?, email: r.get(2)?, created_at: r.get(3)? })
    })?;
    rows.collect()
}

impl Sqlite {
    pub async fn users(&self, now: UnixMs) -> Result<Vec<UserRow>, StoreError> {
        self.read(move |c| {
            let mut statement = c.prepare(&USERS.replace("$1", "?1"))?;
            let rows = statement
                .query_map([now], |r| {
                    let user = UserRow {
                        id: r.get(0)?,
                        email: r.get(1)?,
                        name: r.get(2)?,
                        role: role_at(r, 3)?,
                        created_at: r.get(4)?,
                        last_sign_in: r.get(5)?,
                        live_sessions: r.get(6)?,
                        accounts: Vec::new(),
                    };
                    let account = match r.get::<_, Option<LinkedAccountId>>(7)? {
                        Some(id) => {
                            Some(LinkedAccountRow { id, provider: r.get(8)?, email: r.get(9)?, created_at: r.get(10)? })
                        }
                        None => None,
                    };
                    Ok((user, account))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(fold_users(rows))
        })
        .await
    }

    pub async fn linked_user_email(&self, account: ProviderAccount) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            c.query_row(
                "SELECT u.email FROM oauth_accounts a JOIN users u ON u.id = a.user_id
                 WHERE a.provider = ?1 AND a.subject = ?2",
                params![account.provider, account.subject],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    pub async fn link_account(
        &self,
        user: UserId,
        account: ProviderAccount,
        email: String,
    ) -> Result<Linked, StoreError> {
        self.write(move |c| match owner_of(c, &account)? {
            Some(owner) if owner == user => Ok(Linked::Already),
            Some(_) => Ok(Linked::OtherUser),
            None => {
                let now = UnixMs::now();
                insert_link(c, user, &account, &email, now)?;
                let actor: String = c.query_row("SELECT email FROM users WHERE id = ?1", [user], |r| r.get(0))?;
                AuditRow {
                    at: now,
                    actor: &actor,
                    action: AuditAction::LinkAccount,
                    target: &account.provider,
                    count: 1,
                    detail: Some(&email),
                }
                .write(c)?;
                Ok(Linked::Now)
            }
        })
        .await
    }

    pub async fn linked_accounts(&self, user: UserId) -> Result<Vec<LinkedAccountRow>, StoreError> {
        self.read(move |c| linked_accounts_of(c, user)).await
    }

    pub async fn unlink_account(
        &self,
        user: UserId,
        id: LinkedAccountId,
        actor: String,
    ) -> Result<Unlinked, StoreError> {
        self.write(move |c| {
            let count: i64 =
                c.query_row("SELECT count(*) FROM oauth_accounts WHERE user_id = ?1", [user], |r| r.get(0))?;
            let provider: Option<String> = c
                .query_row(
                    "SELECT provider FROM oauth_accounts WHERE id = ?1 AND user_id = ?2",
                    params![id, user],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(provider) = provider else {
                return Ok(Unlinked::NoSuchAccount);
            };
            if count <= 1 {
                return Ok(Unlinked::LastAccount);
            }
            c.execute("DELETE FROM oauth_accounts WHERE id = ?1", [id])?;
            AuditRow {
                at: UnixMs::now(),
                actor: &actor,
                action: AuditAction::UnlinkAccount,
                target: &provider,
                count: 1,
                detail: None,
            }
            .write(c)?;
            Ok(Unlinked::Done(linked_accounts_of(c, user)?))
        })
        .await
    }
}

/// Fixtures shared with the sessions tests, and the races of linking and unlinking.
#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use inlet_shared::config::Role;
    use inlet_shared::test_util::TestPostgres;

    use super::{Linked, ProviderAccount, Unlinked};
    use crate::model::UnixMs;
    use crate::store::{PageRequest, SignIn, Store};

    pub(in crate::store) fn account(provider: &str, subject: &str) -> ProviderAccount {
        ProviderAccount { provider: provider.into(), subject: subject.into() }
    }

    /// A sign-in of `account` with `email`, as session `session` (CSRF token `csrf-{session}`).
    pub(in crate::store) fn sign_in(account: ProviderAccount, email: &str, role: Role, session: &str) -> SignIn {
        SignIn {
            account,
            email: email.into(),
            name: Some("Ada".into()),
            role,
            kept_token: None,
            session_hash: session.into(),
            csrf_token: format!("csrf-{session}"),
            ttl: Duration::from_secs(3600),
        }
    }

    /// The audit log's actions, oldest first.
    pub(in crate::store) async fn actions(store: &Store) -> Vec<String> {
        let page = store.audit_page(PageRequest { after: None, limit: 100 }).await.unwrap();
        page.rows.into_iter().rev().map(|r| r.action.as_str().to_owned()).collect()
    }

    /// Two workers' stores (two pools) on one fresh PostgreSQL database.
    pub(in crate::store) async fn two_workers_on_one_database() -> (TestPostgres, Store, Store) {
        let server = tokio::task::spawn_blocking(TestPostgres::start).await.unwrap();
        let first = Store::connect_postgres(&server.url(), None, 4, Duration::from_secs(10)).await.unwrap();
        let second = Store::connect_postgres(&server.url(), None, 4, Duration::from_secs(10)).await.unwrap();
        (server, first, second)
    }

    /// A signed-in user (session `s-{email}`): its id.
    async fn user(store: &Store, subject: &str, email: &str) -> crate::model::UserId {
        let session = format!("s-{email}");
        store.sign_in(sign_in(account("oidc", subject), email, Role::Viewer, &session)).await.unwrap();
        store.live_session(session, UnixMs::now()).await.unwrap().unwrap().user
    }

    on_each_backend!(admins_see_every_user_with_role_accounts_sign_ins_and_live_sessions);

    async fn admins_see_every_user_with_role_accounts_sign_ins_and_live_sessions(store: Store) {
        assert_eq!(store.users(UnixMs::now()).await.unwrap(), []);
        let before = UnixMs::now();
        store.sign_in(sign_in(account("oidc", "zed"), "zed@x", Role::Admin, "s-zed")).await.unwrap();
        store.sign_in(sign_in(account("oidc", "ada"), "ada@x", Role::Viewer, "s-ada-1")).await.unwrap();
        let ada = store.live_session("s-ada-1".into(), UnixMs::now()).await.unwrap().unwrap().user;
        assert_eq!(store.link_account(ada, account("github", "gh-ada"), "ada@gh".into()).await.unwrap(), Linked::Now);
        // A second session, and the role her last sign-in was given.
        store.sign_in(sign_in(account("github", "gh-ada"), "ada@x", Role::Operator, "s-ada-2")).await.unwrap();

        let users = store.users(UnixMs::now()).await.unwrap();
        let summary: Vec<_> = users
            .iter()
            .map(|u| {
                let providers: Vec<_> = u.accounts.iter().map(|a| (a.provider.as_str(), a.email.as_deref())).collect();
                (u.email.as_str(), u.role, u.live_sessions, providers)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("ada@x", Role::Operator, 2, vec![("oidc", Some("ada@x")), ("github", Some("ada@gh"))]),
                ("zed@x", Role::Admin, 1, vec![("oidc", Some("zed@x"))]),
            ]
        );
        let ada_row = &users[0];
        assert_eq!((ada_row.id, ada_row.name.as_deref()), (ada, Some("Ada")));
        assert!(ada_row.created_at >= before && ada_row.last_sign_in.is_some_and(|at| at >= ada_row.created_at));
        assert!(ada_row.accounts[0].created_at <= ada_row.accounts[1].created_at);

        // Sessions past their expiry are not counted.
        let later = UnixMs::now().plus(Duration::from_secs(7200));
        let live: Vec<i64> = store.users(later).await.unwrap().iter().map(|u| u.live_sessions).collect();
        assert_eq!(live, [0, 0]);
        store.delete_session("s-zed".into()).await.unwrap();
        let live: Vec<i64> = store.users(UnixMs::now()).await.unwrap().iter().map(|u| u.live_sessions).collect();
        assert_eq!(live, [2, 0], "signing out ends the session");
    }

    /// Two workers unlink a user's last two accounts at the same moment: one of them is refused,
    /// so the user can still sign in.
    #[tokio::test]
    async fn two_workers_unlinking_the_last_two_accounts_at_once_leave_one() {
        let (_server, first, second) = two_workers_on_one_database().await;
        for round in 0..5 {
            let email = format!("u{round}@x");
            let user = user(&first, &format!("sub-{round}"), &email).await;
            let github = account("github", &format!("gh-{round}"));
            assert_eq!(first.link_account(user, github, email.clone()).await.unwrap(), Linked::Now);
            let linked = first.linked_accounts(user).await.unwrap();
            assert_eq!(linked.len(), 2);
            let (a, b) = tokio::join!(
                first.unlink_account(user, linked[0].id, email.clone()),
                second.unlink_account(user, linked[1].id, email.clone()),
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            let left = first.linked_accounts(user).await.unwrap();
            assert_eq!(left.len(), 1, "round {round}: {a:?}, {b:?}");
            let refused = [&a, &b].into_iter().filter(|outcome| **outcome == Unlinked::LastAccount).count();
            assert_eq!(refused, 1, "round {round}: {a:?}, {b:?}");
            assert!([a, b].contains(&Unlinked::Done(left)));
        }
    }

    /// Two workers link one provider account at the same moment, to two users or twice to the
    /// same one: it ends linked once, and the loser is told so.
    #[tokio::test]
    async fn two_workers_linking_one_account_at_once_link_it_once() {
        let (_server, first, second) = two_workers_on_one_database().await;
        let ada = user(&first, "ada", "ada@x").await;
        let bob = user(&first, "bob", "bob@x").await;
        for round in 0..5 {
            let github = account("github", &format!("gh-{round}"));
            let (to_ada, to_bob) = tokio::join!(
                first.link_account(ada, github.clone(), "gh@x".into()),
                second.link_account(bob, github.clone(), "gh@x".into()),
            );
            let mut outcomes = [to_ada.unwrap(), to_bob.unwrap()];
            outcomes.sort_by_key(|outcome| *outcome != Linked::Now);
            assert_eq!(outcomes, [Linked::Now, Linked::OtherUser]);
            let owner = first.linked_user_email(github.clone()).await.unwrap().unwrap();
            assert!(owner == "ada@x" || owner == "bob@x");

            let twice = account("github", &format!("again-{round}"));
            let (a, b) = tokio::join!(
                first.link_account(ada, twice.clone(), "gh@x".into()),
                second.link_account(ada, twice.clone(), "gh@x".into()),
            );
            let mut outcomes = [a.unwrap(), b.unwrap()];
            outcomes.sort_by_key(|outcome| *outcome != Linked::Now);
            assert_eq!(outcomes, [Linked::Now, Linked::Already]);
        }
        let ada_accounts = first.linked_accounts(ada).await.unwrap().len();
        let bob_accounts = first.linked_accounts(bob).await.unwrap().len();
        assert_eq!(ada_accounts + bob_accounts, 2 + 5 + 5, "each account linked once");
    }
}
