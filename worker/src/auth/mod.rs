//! Who is calling the operator plane: API tokens (`Authorization: Bearer`), console sessions
//! (a `__Host-` cookie naming a server-side session), and the OIDC and GitHub logins that
//! create sessions (`oidc`, `github`, routes in `routes`). A login in progress is no server
//! state: it travels sealed in its own `__Host-` cookie ([`LoginFlow`]).
//!
//! Only SHA-256 hashes of tokens and session ids are stored; the values exist in the client's
//! hands alone. Every comparison of a secret value is constant-time. Roles come from
//! `[console.access]` at each login; an address listed nowhere gets no account.

pub mod crypto;
mod flow;
pub mod github;
pub mod oidc;
pub mod routes;
mod web;

pub use flow::{FlowEnd, FlowSeal, LOGIN_TTL};
pub(crate) use flow::{LoginFlow, flow_expiry};
pub use web::{bearer_token, cookie, local_path, set_cookie};

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use inlet_shared::config::{ConsoleConfig, Role};
use rusqlite::{OptionalExtension, params};
use subtle::ConstantTimeEq;

use crate::model::{AuditAction, UnixMs};
use crate::store::{AuditRow, Store, StoreError};

/// Name of the session cookie (`__Host-`: Secure, `Path=/`, no `Domain`).
pub const SESSION_COOKIE: &str = "__Host-inlet_session";
/// Name of the short-lived cookie that carries a login in progress (sealed) in this browser.
pub const LOGIN_COOKIE: &str = "__Host-inlet_login";
/// Header carrying the session's CSRF token on cookie-authenticated POSTs.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of API tokens (so leaked ones are recognisable by secret scanners).
pub const TOKEN_PREFIX: &str = "inlet_";

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer` (an API token or the bootstrap token): not ambient, no CSRF risk.
    Token,
    /// The session cookie; POSTs must carry this CSRF token.
    Session {
        /// The session's CSRF token.
        csrf_token: String,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Email of a console user, or `token:{name}` for an API token (what the audit log shows).
    pub actor: String,
    /// What they may do.
    pub role: Role,
    /// How they authenticated.
    pub via: Via,
    /// The Inlet user behind a console session (API tokens have none).
    pub user_id: Option<i64>,
}

/// Why authentication failed (mapped to HTTP statuses by the routes).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The database failed.
    #[error("the database is unavailable")]
    Store(#[from] StoreError),
    /// The bearer token is unknown or revoked.
    #[error("invalid or revoked API token")]
    BadToken,
    /// A provider token could not be sealed for keeping.
    #[error("cannot seal the provider token: {0}")]
    Seal(#[from] crypto::CipherError),
}

/// `n` random bytes, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(&mut buffer[..]);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// Hex SHA-256 (how tokens and session ids are stored).
pub fn sha256_hex(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Constant-time equality of two strings (length is not secret).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The authentication service: tokens, sessions, users.
pub struct Auth {
    store: Store,
    config: ConsoleConfig,
    /// The OIDC login, when `[console.oidc]` is configured.
    pub oidc: Option<oidc::OidcLogin>,
    /// The GitHub login, when `[console.github]` is configured.
    pub github: Option<github::GithubLogin>,
    /// Seals kept provider tokens (`[console] token_keys`); without it none is kept.
    cipher: Option<crypto::TokenCipher>,
    /// Seals logins in progress into the login cookie.
    flows: FlowSeal,
}

/// Associated data binding a sealed token to its provider account.
fn token_aad(provider: &str, subject: &str) -> String {
    format!("oauth_account:{provider}:{subject}")
}

/// An identity the provider vouched for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Provider name (`oidc`, later `github`).
    pub provider: String,
    /// Subject at the provider.
    pub subject: String,
    /// Verified email address.
    pub email: String,
    /// Display name, if given.
    pub name: Option<String>,
    /// Role granted by the provider side (a GitHub organisation in `allowed_orgs`) when the
    /// email is not listed in `[console.access]`.
    pub fallback_role: Option<Role>,
    /// How long a session admitted only by `fallback_role` may last before the membership is
    /// checked again.
    pub membership_ttl: Option<std::time::Duration>,
    /// The provider's access token, offered for keeping (sealed) when the membership must be
    /// re-checked later; dropped unless `[console] token_keys` is set.
    pub access_token: Option<inlet_shared::config::Secret>,
}

/// A session as read for authentication.
struct SessionRow {
    email: String,
    role: String,
    csrf_token: String,
    user_id: i64,
    recheck_at_ms: Option<i64>,
    token_sealed: Option<String>,
    provider: Option<String>,
    subject: Option<String>,
}

/// What linking a provider account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// Now linked to the user.
    Now,
    /// It was already linked to this user.
    Already,
    /// It belongs to another Inlet user: refused.
    OtherUser,
}

/// A new session for the browser.
pub struct NewSession {
    /// Cookie value (never stored).
    pub cookie_value: String,
    /// How long it lasts.
    pub ttl: std::time::Duration,
}

impl Auth {
    /// Builds the service.
    pub fn new(
        store: Store,
        config: ConsoleConfig,
        oidc: Option<oidc::OidcLogin>,
        github: Option<github::GithubLogin>,
        cipher: Option<crypto::TokenCipher>,
    ) -> Arc<Auth> {
        Arc::new(Auth { store, config, oidc, github, cipher, flows: FlowSeal::new() })
    }

    /// The console config.
    pub fn config(&self) -> &ConsoleConfig {
        &self.config
    }

    /// The principal behind a bearer token, or [`AuthError::BadToken`].
    ///
    /// # Errors
    ///
    /// Unknown or revoked token, or a database failure.
    pub async fn bearer_principal(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(bootstrap) = &self.config.bootstrap_token
            && constant_time_eq(token, bootstrap.expose())
        {
            return Ok(Principal {
                actor: "token:bootstrap".into(),
                role: Role::Admin,
                via: Via::Token,
                user_id: None,
            });
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::BadToken);
        }
        let hash = sha256_hex(token);
        let found: Option<(i64, String, String, Option<i64>)> = self
            .store
            .read(move |c| {
                c.query_row(
                    "SELECT id, name, role, last_used_ms FROM api_tokens WHERE token_hash = ?1 AND revoked_at_ms IS NULL",
                    [hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
            })
            .await?;
        let (id, name, role, last_used) = found.ok_or(AuthError::BadToken)?;
        let role = Role::parse(&role).ok_or(AuthError::BadToken)?;
        // "Last used" to the minute: at most one write per token per minute, whatever the load.
        let now = UnixMs::now().0;
        if last_used.is_none_or(|at| now.saturating_sub(at) >= 60_000) {
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = store
                    .write(move |c| {
                        c.execute("UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1", params![id, now])
                    })
                    .await;
            });
        }
        Ok(Principal { actor: format!("token:{name}"), role, via: Via::Token, user_id: None })
    }

    /// The principal behind a session cookie value, if the session exists and has not expired.
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn session_principal(&self, cookie_value: &str) -> Result<Option<Principal>, AuthError> {
        let hash = sha256_hex(cookie_value);
        let now = UnixMs::now().0;
        let found: Option<SessionRow> = self
            .store
            .read(move |c| {
                c.query_row(
                    "SELECT u.email, u.role, s.csrf_token, u.id, s.recheck_at_ms, a.token_sealed, a.provider, a.subject
                     FROM sessions s JOIN users u ON u.id = s.user_id
                     LEFT JOIN oauth_accounts a ON a.id = s.oauth_account_id
                     WHERE s.id_hash = ?1 AND s.expires_at_ms > ?2",
                    params![hash, now],
                    |r| {
                        Ok(SessionRow {
                            email: r.get(0)?,
                            role: r.get(1)?,
                            csrf_token: r.get(2)?,
                            user_id: r.get(3)?,
                            recheck_at_ms: r.get(4)?,
                            token_sealed: r.get(5)?,
                            provider: r.get(6)?,
                            subject: r.get(7)?,
                        })
                    },
                )
                .optional()
            })
            .await?;
        let Some(row) = found else {
            return Ok(None);
        };
        if row.recheck_at_ms.is_some_and(|at| at <= now) && !self.recheck_membership(cookie_value, &row).await? {
            return Ok(None);
        }
        Ok(Role::parse(&row.role).map(|role| Principal {
            actor: row.email,
            role,
            via: Via::Session { csrf_token: row.csrf_token },
            user_id: Some(row.user_id),
        }))
    }

    /// Re-checks the provider-side membership that admitted a session, with the kept token.
    /// Still a member: the next check is scheduled. No longer (or the token stopped working):
    /// the session ends and the token is dropped. Provider unreachable: this request is
    /// refused, the session stays for the next one.
    async fn recheck_membership(&self, cookie_value: &str, row: &SessionRow) -> Result<bool, AuthError> {
        let hash = sha256_hex(cookie_value);
        let (Some(github), Some(cipher)) = (&self.github, &self.cipher) else {
            return Ok(false);
        };
        let token = match (&row.token_sealed, &row.provider, &row.subject) {
            (Some(sealed), Some(provider), Some(subject)) => cipher.open(sealed, &token_aad(provider, subject)).ok(),
            _ => None,
        };
        let member = match token {
            Some(token) => match github.still_member(&token).await {
                Ok(member) => member,
                Err(error) => {
                    tracing::warn!(%error, "cannot re-check organisation membership; refusing this request");
                    return Ok(false);
                }
            },
            None => false,
        };
        let next =
            UnixMs::now().0.saturating_add(i64::try_from(github.membership_ttl().as_millis()).unwrap_or(i64::MAX));
        let (provider, subject, email) = (row.provider.clone(), row.subject.clone(), row.email.clone());
        self.store
            .write(move |c| {
                if member {
                    c.execute("UPDATE sessions SET recheck_at_ms = ?2 WHERE id_hash = ?1", params![hash, next])?;
                } else {
                    c.execute("DELETE FROM sessions WHERE id_hash = ?1", [&hash])?;
                    c.execute(
                        "UPDATE oauth_accounts SET token_sealed = NULL WHERE provider = ?1 AND subject = ?2",
                        params![provider, subject],
                    )?;
                    AuditRow {
                        at: UnixMs::now(),
                        actor: &email,
                        action: AuditAction::SessionEnded,
                        target: "membership",
                        count: 1,
                        detail: Some("no longer a member of an allowed organisation"),
                    }
                    .write(c)?;
                }
                Ok(())
            })
            .await?;
        Ok(member)
    }

    /// The caller of a request: bearer token first, then the session cookie. `Ok(None)` is an
    /// anonymous caller.
    ///
    /// # Errors
    ///
    /// A bearer token that is not valid (never falls back to the cookie), or a database failure.
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Option<Principal>, AuthError> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value.to_str().ok().and_then(bearer_token).ok_or(AuthError::BadToken)?;
            return self.bearer_principal(token).await.map(Some);
        }
        match cookie(headers, SESSION_COOKIE) {
            Some(value) => self.session_principal(&value).await,
            None => Ok(None),
        }
    }

    /// Signs in a verified identity: `None` when the allowlist does not admit it (no account
    /// is created). Otherwise the user and the linked provider account are created or updated,
    /// and a fresh session (new id: no fixation) is stored.
    ///
    /// # Errors
    ///
    /// A database failure, or a provider token that cannot be sealed.
    pub async fn sign_in(&self, identity: Identity) -> Result<Option<NewSession>, AuthError> {
        // A provider account linked to an Inlet user signs in as that user: the user's own
        // address decides the role (the allowlist stays the source of truth at every login).
        let (provider, subject) = (identity.provider.clone(), identity.subject.clone());
        let linked_email: Option<String> = self
            .store
            .read(move |c| {
                c.query_row(
                    "SELECT u.email FROM oauth_accounts a JOIN users u ON u.id = a.user_id
                     WHERE a.provider = ?1 AND a.subject = ?2",
                    params![provider, subject],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        let email = linked_email.unwrap_or_else(|| identity.email.to_ascii_lowercase());
        let listed = self.config.access.role_for(&email);
        let Some(role) = listed.or(identity.fallback_role) else {
            tracing::info!(provider = %identity.provider, "sign-in refused: address not on the allowlist");
            return Ok(None);
        };
        // Admitted only through a provider-side membership (a GitHub organisation): with token
        // keys, the token is kept (sealed) and the membership re-checked every membership_ttl;
        // without, the session lasts no longer than membership_ttl.
        let mut ttl = self.config.session_ttl;
        let mut kept: Option<(String, i64)> = None;
        if let (None, Some(limit)) = (listed, identity.membership_ttl) {
            match (&self.cipher, &identity.access_token) {
                (Some(cipher), Some(token)) => {
                    let aad = token_aad(&identity.provider, &identity.subject);
                    let sealed = cipher.seal(token.expose(), &aad)?;
                    let recheck = UnixMs::now().0.saturating_add(i64::try_from(limit.as_millis()).unwrap_or(i64::MAX));
                    kept = Some((sealed, recheck));
                }
                _ => ttl = ttl.min(limit),
            }
        }
        let cookie_value = random_token(32);
        let hash = sha256_hex(&cookie_value);
        let csrf_token = random_token(24);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.store
            .write(move |c| {
                let now = UnixMs::now().0;
                // A provider account already linked to a user signs in as that user.
                let linked: Option<i64> = c
                    .query_row(
                        "SELECT user_id FROM oauth_accounts WHERE provider = ?1 AND subject = ?2",
                        params![identity.provider, identity.subject],
                        |r| r.get(0),
                    )
                    .optional()?;
                let user_id = match linked {
                    Some(id) => {
                        c.execute(
                            "UPDATE users SET role = ?2, last_login_ms = ?3, name = coalesce(?4, name) WHERE id = ?1",
                            params![id, role.as_str(), now, identity.name],
                        )?;
                        id
                    }
                    None => {
                        c.execute(
                            "INSERT INTO users (email, name, role, created_at_ms, last_login_ms) VALUES (?1, ?2, ?3, ?4, ?4)
                             ON CONFLICT (email) DO UPDATE SET role = excluded.role, last_login_ms = excluded.last_login_ms",
                            params![email, identity.name, role.as_str(), now],
                        )?;
                        let id: i64 = c.query_row("SELECT id FROM users WHERE email = ?1", [&email], |r| r.get(0))?;
                        c.execute(
                            "INSERT INTO oauth_accounts (user_id, provider, subject, email, created_at_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![id, identity.provider, identity.subject, email, now],
                        )?;
                        id
                    }
                };
                let account_id: i64 = c.query_row(
                    "SELECT id FROM oauth_accounts WHERE provider = ?1 AND subject = ?2",
                    params![identity.provider, identity.subject],
                    |r| r.get(0),
                )?;
                let (sealed, recheck_at) = kept.map_or((None, None), |(sealed, at)| (Some(sealed), Some(at)));
                c.execute("UPDATE oauth_accounts SET token_sealed = ?2 WHERE id = ?1", params![account_id, sealed])?;
                c.execute("DELETE FROM sessions WHERE expires_at_ms <= ?1", [now])?;
                c.execute(
                    "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at_ms, expires_at_ms, oauth_account_id,
                                           recheck_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![hash, user_id, csrf_token, now, now.saturating_add(ttl_ms), account_id, recheck_at],
                )?;
                AuditRow {
                    at: UnixMs(now),
                    actor: &email,
                    action: AuditAction::SignIn,
                    target: &identity.provider,
                    count: 1,
                    detail: None,
                }
                .write(c)?;
                Ok(())
            })
            .await?;
        Ok(Some(NewSession { cookie_value, ttl }))
    }

    /// Links a verified provider identity to `user_id` (a provider account belongs to at most
    /// one Inlet user).
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn link(&self, user_id: i64, identity: Identity) -> Result<Linked, AuthError> {
        let linked = self
            .store
            .write(move |c| {
                let owner: Option<i64> = c
                    .query_row(
                        "SELECT user_id FROM oauth_accounts WHERE provider = ?1 AND subject = ?2",
                        params![identity.provider, identity.subject],
                        |r| r.get(0),
                    )
                    .optional()?;
                match owner {
                    Some(owner) if owner == user_id => Ok(Linked::Already),
                    Some(_) => Ok(Linked::OtherUser),
                    None => {
                        let now = UnixMs::now().0;
                        c.execute(
                            "INSERT INTO oauth_accounts (user_id, provider, subject, email, created_at_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![user_id, identity.provider, identity.subject, identity.email, now],
                        )?;
                        let actor: String =
                            c.query_row("SELECT email FROM users WHERE id = ?1", [user_id], |r| r.get(0))?;
                        AuditRow {
                            at: UnixMs(now),
                            actor: &actor,
                            action: AuditAction::LinkAccount,
                            target: &identity.provider,
                            count: 1,
                            detail: Some(&identity.email),
                        }
                        .write(c)?;
                        Ok(Linked::Now)
                    }
                }
            })
            .await?;
        Ok(linked)
    }

    /// Ends the session named by `cookie_value` (server-side: the cookie is useless afterwards).
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn sign_out(&self, cookie_value: &str) -> Result<(), AuthError> {
        let hash = sha256_hex(cookie_value);
        self.store.write(move |c| c.execute("DELETE FROM sessions WHERE id_hash = ?1", [hash])).await?;
        Ok(())
    }

    /// The seal of logins in progress.
    pub(crate) fn flows(&self) -> &FlowSeal {
        &self.flows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_stays_on_this_site() {
        assert_eq!(local_path(Some("/console#/events")), "/console#/events");
        assert_eq!(local_path(Some("/console?x=1")), "/console?x=1");
        for hostile in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "javascript:alert(1)",
            "/ok\nLocation: x",
            "",
        ] {
            let safe = local_path(Some(hostile));
            assert_eq!(safe, "/console", "{hostile:?}");
        }
        assert_eq!(local_path(None), "/console");
    }

    #[test]
    fn cookies_are_host_prefixed_and_parsed() {
        let header = set_cookie(SESSION_COOKIE, "abc", 60);
        assert_eq!(header, "__Host-inlet_session=abc; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, http::HeaderValue::from_static("a=1; __Host-inlet_session=xyz; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }

    #[test]
    fn login_flows_open_only_where_and_for_whom_they_were_sealed() {
        let flow = || LoginFlow {
            provider: "github".into(),
            state: "s".into(),
            nonce: String::new(),
            pkce_verifier: "v".into(),
            return_to: "/console".into(),
            expires_at_ms: flow_expiry(),
            link_user_id: Some(7),
        };
        let seal = FlowSeal::new();
        let sealed = seal.seal(&flow()).unwrap_or_default();
        assert!(!sealed.contains("/console") && !sealed.contains("\"state\""), "{sealed}");
        let opened = seal.open(&sealed, "github").map(|f| (f.state, f.pkce_verifier, f.link_user_id));
        assert_eq!(opened, Some(("s".into(), "v".into(), Some(7))));
        assert!(seal.open(&sealed, "oidc").is_none(), "bound to its provider");
        assert!(FlowSeal::new().open(&sealed, "github").is_none(), "another process's key");
        assert!(seal.open("v1.flow.AAAA", "github").is_none());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc", " Bearer abc "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn tokens_are_random_and_compared_in_constant_time() {
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
