//! A login in progress, sealed into its own `__Host-` cookie (no server state before sign-in),
//! and the checks every provider's callback makes against it.

use super::{LoginError, constant_time_eq, crypto};
use crate::model::{UnixMs, UserId};

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
    #[serde(rename = "expires_at_ms", with = "unix_ms")]
    pub expires_at: UnixMs,
    /// Set when the login links an account to this (signed-in) user instead of signing in.
    #[serde(with = "user_id")]
    pub link_user_id: Option<UserId>,
}

/// The model's types carry no serde: a flow's time is written as its milliseconds.
mod unix_ms {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::model::UnixMs;

    pub fn serialize<S: Serializer>(at: &UnixMs, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(at.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UnixMs, D::Error> {
        i64::deserialize(deserializer).map(UnixMs)
    }
}

/// The model's types carry no serde: a flow's user is written as the user's id.
mod user_id {
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    use crate::model::UserId;

    pub fn serialize<S: Serializer>(user: &Option<UserId>, serializer: S) -> Result<S::Ok, S::Error> {
        user.map(|user| user.0).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<UserId>, D::Error> {
        Option::<i64>::deserialize(deserializer).map(|user| user.map(UserId))
    }
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
pub(crate) fn flow_expiry() -> UnixMs {
    UnixMs::now().plus(LOGIN_TTL)
}

/// Where a finished login goes: back to `return_to`, signed in or (with `link_user_id`) with
/// the provider account linked to that user.
#[derive(Debug, Clone)]
pub struct FlowEnd {
    /// Local path to go back to.
    pub return_to: String,
    /// The user the account is to be linked to.
    pub link_user_id: Option<UserId>,
}

/// The callback's query parameters.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackQuery {
    /// Authorization code.
    pub code: Option<String>,
    /// Echoed state.
    pub state: Option<String>,
    /// RFC 9207 issuer identifier.
    pub iss: Option<String>,
    /// Provider error code.
    pub error: Option<String>,
}

/// Opens the login flow sealed in the cookie and checks that it belongs to `provider`, has not
/// expired, and that the callback's `state` matches it (constant time). Shared by every
/// provider's callback.
pub(crate) fn checked_flow(
    flows: &FlowSeal,
    login_cookie: Option<String>,
    provider: &str,
    query: &CallbackQuery,
) -> Result<LoginFlow, LoginError> {
    let login_cookie = login_cookie.ok_or(LoginError::NoLoginInProgress)?;
    let flow = flows.open(&login_cookie, provider).ok_or(LoginError::NoLoginInProgress)?;
    if flow.expires_at <= UnixMs::now() {
        return Err(LoginError::Expired);
    }
    if !constant_time_eq(query.state.as_deref().unwrap_or(""), &flow.state) {
        return Err(LoginError::StateMismatch);
    }
    Ok(flow)
}

/// The authorization code of a callback, or the provider's `error` reduced to a safe label.
pub(crate) fn callback_code(query: &CallbackQuery) -> Result<String, LoginError> {
    if let Some(error) = &query.error {
        let safe: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        return Err(LoginError::Provider(safe));
    }
    query.code.clone().ok_or_else(|| LoginError::Provider("no code".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_flows_open_only_where_and_for_whom_they_were_sealed() {
        let flow = || LoginFlow {
            provider: "github".into(),
            state: "s".into(),
            nonce: String::new(),
            pkce_verifier: "v".into(),
            return_to: "/console".into(),
            expires_at: flow_expiry(),
            link_user_id: Some(UserId(7)),
        };
        let seal = FlowSeal::new();
        let sealed = seal.seal(&flow()).unwrap_or_default();
        assert!(!sealed.contains("/console") && !sealed.contains("\"state\""), "{sealed}");
        let opened = seal.open(&sealed, "github").map(|f| (f.state, f.pkce_verifier, f.link_user_id));
        assert_eq!(opened, Some(("s".into(), "v".into(), Some(UserId(7)))));
        assert!(seal.open(&sealed, "oidc").is_none(), "bound to its provider");
        assert!(FlowSeal::new().open(&sealed, "github").is_none(), "another process's key");
        assert!(seal.open("v1.flow.AAAA", "github").is_none());
    }
}
