//! API tokens: the caller behind `Authorization: Bearer` (an API token, or the configured
//! bootstrap token), and when a token was last used.

use std::time::Duration;

use inlet_shared::config::Role;

use super::{Auth, AuthError, Principal, Via, constant_time_eq, sha256_hex};
use crate::model::UnixMs;

/// Prefix of API tokens (so leaked ones are recognisable by secret scanners).
pub const TOKEN_PREFIX: &str = "inlet_";

/// How precisely "last used" is kept: at most one write per token per this, whatever the load.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

impl Auth {
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
        let found = self.store.live_api_token(sha256_hex(token)).await?.ok_or(AuthError::BadToken)?;
        let now = UnixMs::now();
        if found.last_used.is_none_or(|at| now.since(at) >= LAST_USED_RESOLUTION) {
            // Off the request's path: "last used" is a hint, and the request must not wait for
            // (or fail with) the writer.
            let store = self.store.clone();
            tokio::spawn(async move {
                let _ = store.touch_api_token(found.id, now).await;
            });
        }
        Ok(Principal { actor: format!("token:{}", found.name), role: found.role, via: Via::Token, user_id: None })
    }
}
