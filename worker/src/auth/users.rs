//! Users: the identity a provider vouched for, who of them is admitted and with which role
//! (`[console.access]`, or a provider-side membership), the provider token kept sealed for a
//! membership, and linking another provider account to a signed-in user.

use std::time::Duration;

use inlet_shared::config::{Role, Secret};

use super::{Auth, AuthError};
use crate::model::{UnixMs, UserId};
use crate::store::{KeptToken, Linked, ProviderAccount};

/// An identity the provider vouched for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Provider name (`oidc` or `github`).
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
    pub membership_ttl: Option<Duration>,
    /// The provider's access token, offered for keeping (sealed) when the membership must be
    /// re-checked later; dropped unless `[console] token_keys` is set.
    pub access_token: Option<Secret>,
}

impl Identity {
    /// The provider account behind the identity.
    pub(super) fn account(&self) -> ProviderAccount {
        ProviderAccount { provider: self.provider.clone(), subject: self.subject.clone() }
    }
}

/// Who an identity signs in as, and on which terms.
pub(super) struct Admission {
    /// The user's address.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// The provider token to keep for membership re-checks.
    pub kept_token: Option<KeptToken>,
    /// How long the session lasts.
    pub ttl: Duration,
}

/// Associated data binding a sealed token to its provider account.
pub(super) fn token_aad(account: &ProviderAccount) -> String {
    format!("oauth_account:{}:{}", account.provider, account.subject)
}

impl Auth {
    /// Whether `identity` is admitted, as whom and on which terms; `None` when the allowlist
    /// does not admit it (no account is created).
    ///
    /// # Errors
    ///
    /// A database failure, or a provider token that cannot be sealed.
    pub(super) async fn admission(&self, identity: &Identity) -> Result<Option<Admission>, AuthError> {
        // A provider account linked to an Inlet user signs in as that user: the user's own
        // address decides the role (the allowlist stays the source of truth at every login).
        let linked_email = self.store.linked_user_email(identity.account()).await?;
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
        let mut kept_token = None;
        if let (None, Some(limit)) = (listed, identity.membership_ttl) {
            match (&self.cipher, &identity.access_token) {
                (Some(cipher), Some(token)) => {
                    let sealed = cipher.seal(token.expose(), &token_aad(&identity.account()))?;
                    kept_token = Some(KeptToken { sealed, recheck_at: UnixMs::now().plus(limit) });
                }
                _ => ttl = ttl.min(limit),
            }
        }
        Ok(Some(Admission { email, role, kept_token, ttl }))
    }

    /// Links a verified provider identity to `user` (a provider account belongs to at most
    /// one Inlet user).
    ///
    /// # Errors
    ///
    /// A database failure.
    pub async fn link(&self, user: UserId, identity: Identity) -> Result<Linked, AuthError> {
        Ok(self.store.link_account(user, identity.account(), identity.email).await?)
    }
}
