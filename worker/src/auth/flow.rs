//! A login in progress, sealed into its own `__Host-` cookie (no server state before sign-in).

use super::crypto;
use crate::model::UnixMs;

/// How long a login may take between leaving for the provider and coming back.
pub const LOGIN_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// A login in progress. It travels in the login cookie, sealed (AES-256-GCM, bound to its
/// provider), so starting a login costs the server no state: an anonymous `GET /auth/login`
/// writes nothing. The browser holds it without being able to read or alter it (`state`,
/// `nonce` and the PKCE verifier stay secret); the callback clears the cookie, and the
/// authorization code it redeems is single-use at the provider, so a login completes once.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LoginFlow {
    /// `oidc` or `github`: the callback must come from the same provider.
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub expires_at_ms: i64,
    /// Set when the login links an account to this (signed-in) user instead of signing in.
    pub link_user_id: Option<i64>,
}

/// Seals login flows into the login cookie's value and opens them again. The key is drawn at
/// startup and never stored: a login started before a restart must be started again.
pub struct FlowSeal(crypto::TokenCipher);

impl FlowSeal {
    /// A seal with a fresh random key.
    pub fn new() -> FlowSeal {
        FlowSeal(crypto::TokenCipher::ephemeral("flow"))
    }

    fn aad(provider: &str) -> String {
        format!("login_flow:{provider}")
    }

    /// The login cookie's value for `flow`.
    pub(crate) fn seal(&self, flow: &LoginFlow) -> Result<String, crypto::CipherError> {
        let plain = serde_json::to_string(flow).map_err(|_| crypto::CipherError::Seal)?;
        self.0.seal(&plain, &Self::aad(&flow.provider))
    }

    /// The flow in a login cookie sealed here for `provider`, if it is one.
    pub(crate) fn open(&self, cookie_value: &str, provider: &str) -> Option<LoginFlow> {
        let plain = self.0.open(cookie_value, &Self::aad(provider)).ok()?;
        serde_json::from_str::<LoginFlow>(&plain).ok().filter(|flow| flow.provider == provider)
    }
}

impl Default for FlowSeal {
    fn default() -> Self {
        FlowSeal::new()
    }
}

/// Expiry of a flow started now.
pub(crate) fn flow_expiry() -> i64 {
    UnixMs::now().0.saturating_add(i64::try_from(LOGIN_TTL.as_millis()).unwrap_or(i64::MAX))
}

/// Where a finished login goes: back to `return_to`, signed in or (with `link_user_id`) with
/// the provider account linked to that user.
#[derive(Debug, Clone)]
pub struct FlowEnd {
    /// Local path to go back to.
    pub return_to: String,
    /// The user the account is to be linked to.
    pub link_user_id: Option<i64>,
}
