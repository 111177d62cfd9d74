//! Console sessions: signing in (a fresh session for an admitted identity), the caller behind
//! a session cookie, the re-check of a provider-side membership that admitted a session, and
//! signing out.

use std::time::Duration;

use super::users::token_aad;
use super::{Auth, AuthError, Identity, Principal, Via, random_token, sha256_hex};
use crate::model::UnixMs;
use crate::store::{SessionRow, SignIn};

/// A new session for the browser.
pub struct NewSession {
    /// Cookie value (never stored).
    pub cookie_value: String,
    /// How long it lasts.
    pub ttl: Duration,
}

impl Auth {
    /// Signs in a verified identity: `None` when the allowlist does not admit it (no account
    /// is created). Otherwise the user and the linked provider account are created or updated,
    /// and a fresh session (new id: no fixation) is stored.
    ///
    /// # Errors
    ///
    /// A database failure, or a provider token that cannot be sealed.
    pub async fn sign_in(&self, identity: Identity) -> Result<Option<NewSession>, AuthError> {
        let Some(admission) = self.admission(&identity).await? else {
            return Ok(None);
        };
        let cookie_value = random_token(32);
        self.store
            .sign_in(SignIn {
                account: identity.account(),
                email: admission.email,
                name: identity.name,
                role: admission.role,
                kept_token: admission.kept_token,
                session_hash: sha256_hex(&cookie_value),
                csrf_token: random_token(24),
                ttl: admission.ttl,
            })
            .await?;
        Ok(Some(NewSession { cookie_value, ttl: admission.ttl }))
    }

    /// The principal behind a session cookie value, if the session exists and has not expired.
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn session_principal(&self, cookie_value: &str) -> Result<Option<Principal>, AuthError> {
        let now = UnixMs::now();
        let Some(session) = self.store.live_session(sha256_hex(cookie_value), now).await? else {
            return Ok(None);
        };
        if session.recheck_at.is_some_and(|at| at <= now) && !self.recheck_membership(cookie_value, &session).await? {
            return Ok(None);
        }
        Ok(Some(Principal {
            actor: session.email,
            role: session.role,
            via: Via::Session { csrf_token: session.csrf_token },
            user_id: Some(session.user),
        }))
    }

    /// Re-checks the provider-side membership that admitted a session, with the kept token.
    /// Still a member: the next check is scheduled. No longer (or the token stopped working):
    /// the session ends and the token is dropped. Provider unreachable: this request is
    /// refused, the session stays for the next one.
    async fn recheck_membership(&self, cookie_value: &str, session: &SessionRow) -> Result<bool, AuthError> {
        let (Some(github), Some(cipher)) = (&self.github, &self.cipher) else {
            return Ok(false);
        };
        let token = session.account.as_ref().and_then(|linked| {
            let sealed = linked.token_sealed.as_deref()?;
            match cipher.open(sealed, &token_aad(&linked.account)) {
                Ok(token) => Some(token),
                Err(error) => {
                    // Say why the session ends: most likely the key that sealed it was removed
                    // from `[console] token_keys`.
                    tracing::warn!(%error, "cannot open the kept provider token; the session ends");
                    None
                }
            }
        });
        let member = match token {
            Some(token) => match github.still_member(&token).await {
                Ok(member) => member,
                Err(error) => {
                    tracing::warn!(
                        %error,
                        detail = error.detail().unwrap_or_default(),
                        "cannot re-check organisation membership; refusing this request"
                    );
                    return Ok(false);
                }
            },
            None => false,
        };
        let hash = sha256_hex(cookie_value);
        if member {
            self.store.schedule_session_recheck(hash, UnixMs::now().plus(github.membership_ttl())).await?;
        } else {
            let account = session.account.as_ref().map(|linked| linked.account.clone());
            self.store.end_lapsed_session(hash, account, session.email.clone()).await?;
        }
        Ok(member)
    }

    /// Ends the session named by `cookie_value` (server-side: the cookie is useless afterwards).
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn sign_out(&self, cookie_value: &str) -> Result<(), AuthError> {
        self.store.delete_session(sha256_hex(cookie_value)).await?;
        Ok(())
    }
}
