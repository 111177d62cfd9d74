//! Console sessions, keyed by the SHA-256 (hex) of the cookie value: signing in (one
//! transaction for the user, the linked account, the session and the audit row), looking a
//! session up, re-checking a provider-side membership, signing out.

use std::time::Duration;

use inlet_shared::config::Role;
use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::audit::AuditRow;
use super::columns::role_at;
use super::sqlite::Sqlite;
use super::users::{self, ProviderAccount};
use crate::model::{AuditAction, UnixMs, UserId};

/// A live session, as read to authenticate a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The signed-in user.
    pub user: UserId,
    /// The user's email (the audit log's actor).
    pub email: String,
    /// The user's role.
    pub role: Role,
    /// The session's CSRF token.
    pub csrf_token: String,
    /// When the provider-side membership that admitted the session must be checked again.
    pub recheck_at: Option<UnixMs>,
    /// The provider account the session signed in with (none for sessions older than
    /// migration 0007, or when the account was unlinked since).
    pub account: Option<SessionAccount>,
}

/// The provider account a session signed in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAccount {
    /// Which account.
    pub account: ProviderAccount,
    /// Its provider token, sealed, when one is kept to re-check the membership.
    pub token_sealed: Option<String>,
}

/// A provider token kept (sealed) for a session admitted only through a provider-side
/// membership, and when that membership is due to be checked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptToken {
    /// The token, sealed for its account.
    pub sealed: String,
    /// When to check the membership again.
    pub recheck_at: UnixMs,
}

/// A verified, admitted sign-in to record.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// The provider account signing in.
    pub account: ProviderAccount,
    /// The user's address: of the user the account is linked to, else the one the provider
    /// verified (lower-cased).
    pub email: String,
    /// Display name, if the provider gave one.
    pub name: Option<String>,
    /// The role the allowlist (or the provider-side membership) grants.
    pub role: Role,
    /// The provider token to keep; `None` drops one kept before.
    pub kept_token: Option<KeptToken>,
    /// SHA-256 (hex) of the new session's cookie value.
    pub session_hash: String,
    /// The new session's CSRF token.
    pub csrf_token: String,
    /// How long the new session lasts.
    pub ttl: Duration,
}

impl Sqlite {
    pub async fn sign_in(&self, sign_in: SignIn) -> Result<(), StoreError> {
        self.write(move |c| {
            let SignIn { account, email, name, role, kept_token, session_hash, csrf_token, ttl } = sign_in;
            let now = UnixMs::now();
            let user = match users::owner_of(c, &account)? {
                Some(user) => {
                    users::record_login(c, user, role, now, name.as_deref())?;
                    user
                }
                None => users::create_user_with(c, &email, name.as_deref(), role, now, &account)?,
            };
            let link = users::link_id_of(c, &account)?;
            let (sealed, recheck_at) =
                kept_token.map_or((None, None), |kept| (Some(kept.sealed), Some(kept.recheck_at)));
            users::keep_token(c, link, sealed.as_deref())?;
            c.execute("DELETE FROM sessions WHERE expires_at_ms <= ?1", [now])?;
            c.execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at_ms, expires_at_ms, oauth_account_id,
                                       recheck_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![session_hash, user, csrf_token, now, now.plus(ttl), link, recheck_at],
            )?;
            AuditRow {
                at: now,
                actor: &email,
                action: AuditAction::SignIn,
                target: &account.provider,
                count: 1,
                detail: None,
            }
            .write(c)?;
            Ok(())
        })
        .await
    }

    pub async fn live_session(&self, session_hash: String, now: UnixMs) -> Result<Option<SessionRow>, StoreError> {
        self.read(move |c| {
            c.query_row(
                "SELECT u.id, u.email, u.role, s.csrf_token, s.recheck_at_ms, a.provider, a.subject, a.token_sealed
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 LEFT JOIN oauth_accounts a ON a.id = s.oauth_account_id
                 WHERE s.id_hash = ?1 AND s.expires_at_ms > ?2",
                params![session_hash, now],
                |r| {
                    // provider and subject are NOT NULL: both are present exactly when the
                    // session's account is.
                    let provider: Option<String> = r.get(5)?;
                    let subject: Option<String> = r.get(6)?;
                    let token_sealed: Option<String> = r.get(7)?;
                    Ok(SessionRow {
                        user: r.get(0)?,
                        email: r.get(1)?,
                        role: role_at(r, 2)?,
                        csrf_token: r.get(3)?,
                        recheck_at: r.get(4)?,
                        account: provider.zip(subject).map(|(provider, subject)| SessionAccount {
                            account: ProviderAccount { provider, subject },
                            token_sealed,
                        }),
                    })
                },
            )
            .optional()
        })
        .await
    }

    pub async fn schedule_session_recheck(&self, session_hash: String, recheck_at: UnixMs) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute("UPDATE sessions SET recheck_at_ms = ?2 WHERE id_hash = ?1", params![session_hash, recheck_at])
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
        self.write(move |c| {
            c.execute("DELETE FROM sessions WHERE id_hash = ?1", [&session_hash])?;
            if let Some(account) = &account {
                users::drop_token(c, account)?;
            }
            AuditRow {
                at: UnixMs::now(),
                actor: &email,
                action: AuditAction::SessionEnded,
                target: "membership",
                count: 1,
                detail: Some("no longer a member of an allowed organisation"),
            }
            .write(c)?;
            Ok(())
        })
        .await
    }

    pub async fn delete_session(&self, session_hash: String) -> Result<(), StoreError> {
        self.write(move |c| c.execute("DELETE FROM sessions WHERE id_hash = ?1", [session_hash])).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use inlet_shared::config::Role;

    use super::{KeptToken, SessionAccount};
    use crate::model::{LinkedAccountId, UnixMs};
    use crate::store::users::tests::{account, actions, sign_in, two_workers_on_one_database};
    use crate::store::{Linked, Store, Unlinked};

    on_each_backend!(
        a_sign_in_creates_the_user_its_link_and_a_live_session_and_a_returning_account_keeps_its_user,
        a_lapsed_membership_ends_the_session_and_drops_the_kept_token,
        accounts_link_to_one_user_and_the_last_one_stays,
    );

    async fn a_sign_in_creates_the_user_its_link_and_a_live_session_and_a_returning_account_keeps_its_user(
        store: Store,
    ) {
        let oidc = account("oidc", "sub-1");
        store.sign_in(sign_in(oidc.clone(), "ada@x", Role::Viewer, "s1")).await.unwrap();
        let session = store.live_session("s1".into(), UnixMs::now()).await.unwrap().unwrap();
        assert_eq!(
            (session.email.as_str(), session.role, session.csrf_token.as_str()),
            ("ada@x", Role::Viewer, "csrf-s1")
        );
        assert_eq!(session.account, Some(SessionAccount { account: oidc.clone(), token_sealed: None }));
        assert_eq!(session.recheck_at, None);
        assert_eq!(store.linked_user_email(oidc.clone()).await.unwrap().as_deref(), Some("ada@x"));
        assert_eq!(store.live_session("s1".into(), UnixMs::now().plus(Duration::from_secs(3601))).await.unwrap(), None);

        // The same provider account signs in as the same user, with the role granted now.
        store.sign_in(sign_in(oidc.clone(), "other@x", Role::Admin, "s2")).await.unwrap();
        let again = store.live_session("s2".into(), UnixMs::now()).await.unwrap().unwrap();
        assert_eq!((again.user, again.email.as_str(), again.role), (session.user, "ada@x", Role::Admin));
        assert_eq!(store.linked_accounts(session.user).await.unwrap().len(), 1);
        assert_eq!(actions(&store).await, ["sign_in", "sign_in"]);

        store.delete_session("s2".into()).await.unwrap();
        assert_eq!(store.live_session("s2".into(), UnixMs::now()).await.unwrap(), None);
        assert!(store.live_session("s1".into(), UnixMs::now()).await.unwrap().is_some(), "only that session ends");
    }

    async fn a_lapsed_membership_ends_the_session_and_drops_the_kept_token(store: Store) {
        let github = account("github", "42");
        let recheck_at = UnixMs::now().plus(Duration::from_secs(60));
        for session in ["s1", "s2"] {
            let mut kept = sign_in(github.clone(), "org@x", Role::Viewer, session);
            kept.kept_token = Some(KeptToken { sealed: "v1.k.sealed".into(), recheck_at });
            store.sign_in(kept).await.unwrap();
        }
        let session = store.live_session("s1".into(), UnixMs::now()).await.unwrap().unwrap();
        assert_eq!(session.recheck_at, Some(recheck_at));
        assert_eq!(session.account.unwrap().token_sealed.as_deref(), Some("v1.k.sealed"));

        store.schedule_session_recheck("s1".into(), UnixMs(7)).await.unwrap();
        assert_eq!(store.live_session("s1".into(), UnixMs::now()).await.unwrap().unwrap().recheck_at, Some(UnixMs(7)));

        store.end_lapsed_session("s1".into(), Some(github.clone()), "org@x".into()).await.unwrap();
        assert_eq!(store.live_session("s1".into(), UnixMs::now()).await.unwrap(), None);
        // The token was kept on the account, which the other session signed in with too: it
        // sees it gone.
        let other = store.live_session("s2".into(), UnixMs::now()).await.unwrap().unwrap();
        assert_eq!(other.account, Some(SessionAccount { account: github, token_sealed: None }));
        assert_eq!(actions(&store).await, ["sign_in", "sign_in", "session_ended"]);
    }

    async fn accounts_link_to_one_user_and_the_last_one_stays(store: Store) {
        store.sign_in(sign_in(account("oidc", "a"), "ada@x", Role::Viewer, "s1")).await.unwrap();
        store.sign_in(sign_in(account("oidc", "b"), "bob@x", Role::Viewer, "s2")).await.unwrap();
        let ada = store.live_session("s1".into(), UnixMs::now()).await.unwrap().unwrap().user;
        let github = account("github", "7");
        assert_eq!(store.link_account(ada, github.clone(), "Ada@X".into()).await.unwrap(), Linked::Now);
        assert_eq!(store.link_account(ada, github.clone(), "Ada@X".into()).await.unwrap(), Linked::Already);
        assert_eq!(store.link_account(ada, account("oidc", "b"), "b@x".into()).await.unwrap(), Linked::OtherUser);
        let linked = store.linked_accounts(ada).await.unwrap();
        let seen: Vec<(&str, Option<&str>)> =
            linked.iter().map(|a| (a.provider.as_str(), a.email.as_deref())).collect();
        assert_eq!(seen, [("oidc", Some("ada@x")), ("github", Some("Ada@X"))]);

        let bob = store.live_session("s2".into(), UnixMs::now()).await.unwrap().unwrap().user;
        assert_eq!(store.unlink_account(bob, linked[0].id, "bob@x".into()).await.unwrap(), Unlinked::NoSuchAccount);
        assert_eq!(
            store.unlink_account(ada, LinkedAccountId(999), "ada@x".into()).await.unwrap(),
            Unlinked::NoSuchAccount
        );
        let Unlinked::Done(left) = store.unlink_account(ada, linked[0].id, "ada@x".into()).await.unwrap() else {
            panic!("unlinked");
        };
        assert_eq!(left, linked[1..]);
        assert_eq!(store.unlink_account(ada, linked[1].id, "ada@x".into()).await.unwrap(), Unlinked::LastAccount);
        assert_eq!(store.linked_accounts(ada).await.unwrap(), linked[1..]);
        // The session signed in with the unlinked account ended with it.
        assert_eq!(store.live_session("s1".into(), UnixMs::now()).await.unwrap(), None);
        assert_eq!(actions(&store).await, ["sign_in", "sign_in", "link_account", "unlink_account"]);
    }

    /// Two tabs (or two workers behind a load balancer) sign the same new person in at the same
    /// moment: both sign-ins succeed, as one user with one linked account.
    #[tokio::test]
    async fn two_workers_signing_the_same_new_person_in_at_once_make_one_user_with_one_link() {
        let (_server, first, second) = two_workers_on_one_database().await;
        for round in 0..5 {
            let person = account("oidc", &format!("sub-{round}"));
            let email = format!("p{round}@x");
            let (a, b) = tokio::join!(
                first.sign_in(sign_in(person.clone(), &email, Role::Viewer, &format!("a{round}"))),
                second.sign_in(sign_in(person.clone(), &email, Role::Admin, &format!("b{round}"))),
            );
            a.unwrap();
            b.unwrap();
            let a = first.live_session(format!("a{round}"), UnixMs::now()).await.unwrap().unwrap();
            let b = second.live_session(format!("b{round}"), UnixMs::now()).await.unwrap().unwrap();
            assert_eq!(a.user, b.user, "one user");
            assert_eq!((a.email.as_str(), b.email.as_str()), (email.as_str(), email.as_str()));
            let linked = first.linked_accounts(a.user).await.unwrap();
            assert_eq!(linked.len(), 1, "one link");
            assert_eq!(first.linked_user_email(person).await.unwrap(), Some(email));
        }
        assert_eq!(actions(&first).await.len(), 10);
    }
}
