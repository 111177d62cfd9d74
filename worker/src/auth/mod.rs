//! Who is calling the operator plane: API tokens (`Authorization: Bearer`), console sessions
//! (a `__Host-` cookie naming a server-side session), and the OIDC and GitHub logins that
//! create sessions (`oidc`, `github`, routes in `routes`). A login in progress is no server
//! state: it travels sealed in its own `__Host-` cookie ([`LoginFlow`]).
//!
//! Only SHA-256 hashes of tokens and session ids are stored; the values exist in the client's
//! hands alone. Every comparison of a secret value is constant-time. Roles come from
//! `[console.access]` at each login; an address listed nowhere gets no account.
//!
//! This module holds the [`Auth`] service and its errors; its operations live by subject:
//! `tokens` (API tokens), `sessions` (session cookies, sign-in, sign-out, membership
//! re-checks), `users` (who is admitted with which role, linking provider accounts). Every
//! read and write goes through the store's typed operations.

pub mod crypto;
mod flow;
pub mod github;
pub mod oidc;
pub mod routes;
mod sessions;
mod tokens;
mod users;
mod web;

pub use crypto::{constant_time_eq, random_token, sha256_hex};
pub(crate) use flow::{CallbackQuery, LoginFlow, callback_code, checked_flow, flow_expiry};
pub use flow::{FlowEnd, FlowSeal, LOGIN_TTL};
pub use tokens::TOKEN_PREFIX;
pub use users::Identity;
pub use web::{bearer_token, cookie, local_path, set_cookie};

use std::sync::Arc;

use http::HeaderMap;
use inlet_shared::config::{ConsoleConfig, Role};

use crate::model::UserId;
use crate::store::{Store, StoreError};

/// Name of the session cookie (`__Host-`: Secure, `Path=/`, no `Domain`).
pub const SESSION_COOKIE: &str = "__Host-inlet_session";
/// Name of the short-lived cookie that carries a login in progress (sealed) in this browser.
pub const LOGIN_COOKIE: &str = "__Host-inlet_login";
/// Header carrying the session's CSRF token on cookie-authenticated POSTs.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Which account a login asks the provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// Whichever the provider's session holds: it may sign it in again without asking.
    Current,
    /// Another one: the provider is told to ask (`prompt`), so a person whose account was
    /// refused, or who switches accounts, is not signed in as the same account again.
    Another,
}

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
    pub user_id: Option<UserId>,
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
    #[error("cannot seal the provider token")]
    Seal(#[from] crypto::CipherError),
}

/// Why a login did not produce an identity. Each maps to a page in `routes`; the page shows
/// the variant's message, the log also its [`ProviderFailure`].
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The callback came without the login cookie, or for a login already used or unknown.
    #[error("no sign-in in progress in this browser (it expired, was already used, or started elsewhere)")]
    NoLoginInProgress,
    /// The login took too long.
    #[error("the sign-in took too long; please start again")]
    Expired,
    /// `state` differs from the one sent: a forged or crossed callback.
    #[error("the sign-in response does not belong to this sign-in (state mismatch)")]
    StateMismatch,
    /// The authorization response names another issuer (RFC 9207 mix-up defence).
    #[error("the sign-in response comes from an unexpected issuer")]
    IssuerMismatch,
    /// The provider answered with an error (its error code, reduced to a safe label).
    #[error("the identity provider refused the sign-in ({0})")]
    Provider(String),
    /// The OpenID provider cannot be reached or its metadata is unusable.
    #[error("the identity provider is unavailable")]
    Discovery(#[source] ProviderFailure),
    /// A call to the provider's API failed: the OpenID token endpoint, GitHub's token, user,
    /// email and organisation endpoints (unreachable, or an unreadable answer).
    #[error("the identity provider's API is unavailable")]
    ProviderApi(#[source] ProviderFailure),
    /// The code was refused at the token endpoint (reused, wrong verifier, wrong client: an
    /// OAuth error answer), or the provider no longer accepts the access token.
    #[error("the identity provider did not accept the authorization code")]
    TokenExchange(#[source] ProviderFailure),
    /// The ID token is missing or fails verification (signature, iss, aud, exp, nonce).
    #[error("the identity token could not be verified")]
    IdToken(#[source] ProviderFailure),
    /// The provider gave no verified email address.
    #[error("the identity provider did not confirm an email address")]
    NoVerifiedEmail,
    /// The login flow could not be sealed into its cookie.
    #[error("cannot start the sign-in")]
    Seal,
    /// The login cannot be set up at startup (its HTTP client or redirect URI).
    #[error("cannot set up the sign-in")]
    Setup(#[source] ProviderFailure),
}

impl LoginError {
    /// What went wrong talking to the provider, with every underlying cause, for the log
    /// (never a secret: see [`ProviderFailure`]).
    pub fn detail(&self) -> Option<String> {
        match self {
            LoginError::Discovery(failure)
            | LoginError::ProviderApi(failure)
            | LoginError::TokenExchange(failure)
            | LoginError::IdToken(failure)
            | LoginError::Setup(failure) => Some(failure.chain()),
            _ => None,
        }
    }
}

/// What went wrong talking to a provider: what was being done, and the error behind it kept as
/// the source (not flattened to text, which lost the cause: "Request failed" without the
/// connection error behind it).
///
/// Never built from anything that may hold a secret: answers that may carry tokens are reduced
/// to a fixed description before they get here, and URLs that reach it carry none.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct ProviderFailure {
    what: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProviderFailure {
    /// `what` failed because of `source`.
    pub fn new(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ProviderFailure { what: what.into(), source: Some(source.into()) }
    }

    /// `what` failed, and there is no more to it.
    pub fn because(what: impl Into<String>) -> Self {
        ProviderFailure { what: what.into(), source: None }
    }

    /// This failure and every cause behind it, `: `-separated.
    pub fn chain(&self) -> String {
        let mut text = self.what.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
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

    /// The seal of logins in progress.
    pub(crate) fn flows(&self) -> &FlowSeal {
        &self.flows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_failure_keeps_its_cause_for_the_log_and_the_page_shows_only_the_kind() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = LoginError::Discovery(ProviderFailure::new("discovery", refused));
        assert_eq!(error.to_string(), "the identity provider is unavailable");
        assert_eq!(error.detail().as_deref(), Some("discovery: connection refused"));
        let source = std::error::Error::source(&error).and_then(std::error::Error::source);
        assert_eq!(source.map(ToString::to_string).as_deref(), Some("connection refused"), "the cause is kept");
        let refused = LoginError::TokenExchange(ProviderFailure::because("unreadable token answer"));
        assert_eq!(refused.detail().as_deref(), Some("unreadable token answer"));
        assert_eq!(LoginError::Expired.detail(), None);
    }
}
