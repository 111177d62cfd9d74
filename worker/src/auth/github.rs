//! Sign-in with GitHub: OAuth 2.0 authorization code with PKCE (S256) and `state`, then the
//! REST API for the user (`/user`), their primary verified email (`/user/emails`) and, when
//! `allowed_orgs` is set, their organisations (`/user/orgs`). The access token is dropped after
//! these calls, except for users admitted only through an organisation when `[console]
//! token_keys` is set: then it is kept sealed (AES-256-GCM, `crypto`) to re-check the
//! membership every `membership_ttl` without a new sign-in.
//!
//! "Sign in with another account" sends `prompt=select_account`, which makes GitHub show its
//! account picker (with "use a different account") even to a browser signed in to one account
//! only (GitHub changelog, 2024-06-07); without it GitHub signs that account in again silently.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use inlet_shared::config::{GithubConfig, Role};
use openidconnect::url::form_urlencoded;
use serde::Deserialize;

use super::{
    Account, CallbackQuery, FlowEnd, FlowSeal, Identity, LoginError, LoginFlow, ProviderFailure, callback_code,
    checked_flow, flow_expiry, random_token,
};
use crate::model::UserId;

/// The GitHub relying party.
pub struct GithubLogin {
    config: GithubConfig,
    redirect_uri: String,
    http: reqwest::Client,
    /// Role of members of an allowed organisation whose email is not listed.
    org_role: Role,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

/// `base64url(sha256(verifier))`.
fn s256(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl GithubLogin {
    /// Builds the relying party.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(config: GithubConfig, public_url: &str, org_role: Role) -> Result<GithubLogin, LoginError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("inlet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LoginError::Setup(ProviderFailure::new("HTTP client", e)))?;
        Ok(GithubLogin { config, redirect_uri: format!("{public_url}/auth/github/callback"), http, org_role })
    }

    /// Label of the sign-in button.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    /// How long an organisation membership is trusted before it is checked again.
    pub fn membership_ttl(&self) -> Duration {
        self.config.membership_ttl
    }

    /// Whether the account behind `token` is still in an allowed organisation. A token GitHub
    /// no longer accepts counts as "no".
    ///
    /// # Errors
    ///
    /// When GitHub cannot be reached.
    pub async fn still_member(&self, token: &str) -> Result<bool, LoginError> {
        match self.api::<Vec<Org>>(token, "/user/orgs").await {
            Ok(orgs) => {
                Ok(orgs.iter().any(|org| self.config.allowed_orgs.iter().any(|a| a.eq_ignore_ascii_case(&org.login))))
            }
            Err(LoginError::TokenExchange(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Starts a login: returns (GitHub authorize URL, login cookie value: the sealed flow). With
    /// [`Account::Another`] GitHub shows its account picker instead of signing its current
    /// account in again.
    ///
    /// # Errors
    ///
    /// When the flow cannot be sealed.
    pub async fn start(
        &self,
        flows: &FlowSeal,
        return_to: String,
        link_user_id: Option<UserId>,
        account: Account,
    ) -> Result<(String, String), LoginError> {
        let state = random_token(24);
        let verifier = random_token(32);
        let scope =
            if self.config.allowed_orgs.is_empty() { "read:user user:email" } else { "read:user user:email read:org" };
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &s256(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("allow_signup", "false");
        if account == Account::Another {
            query.append_pair("prompt", "select_account");
        }
        let query = query.finish();
        let url = format!("{}/login/oauth/authorize?{query}", self.config.web_url);
        let flow = LoginFlow {
            provider: "github".into(),
            state,
            nonce: String::new(),
            pkce_verifier: verifier,
            return_to,
            expires_at: flow_expiry(),
            link_user_id,
        };
        let cookie_value = flows.seal(&flow).map_err(|_| LoginError::Seal)?;
        Ok((url, cookie_value))
    }

    async fn api<T: serde::de::DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, LoginError> {
        let response = self
            .http
            .get(format!("{}{path}", self.config.api_url))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
            .await
            .map_err(|e| LoginError::ProviderApi(ProviderFailure::new(format!("GitHub API {path}"), e)))?;
        if !response.status().is_success() {
            return Err(LoginError::TokenExchange(ProviderFailure::because(format!(
                "GitHub API {path}: HTTP {}",
                response.status()
            ))));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| LoginError::ProviderApi(ProviderFailure::new(format!("GitHub API {path}"), e)))?;
        // These answers (user, emails, organisations) hold no token: the parser's message may
        // quote them.
        serde_json::from_slice(&bytes)
            .map_err(|e| LoginError::ProviderApi(ProviderFailure::new(format!("GitHub API {path}"), e)))
    }

    /// Finishes a login from the callback's query: returns the identity and where to go next.
    ///
    /// # Errors
    ///
    /// [`LoginError`] for every way the callback can be wrong.
    pub async fn finish(
        &self,
        flows: &FlowSeal,
        login_cookie: Option<String>,
        query: &CallbackQuery,
    ) -> Result<(Identity, FlowEnd), LoginError> {
        let flow = checked_flow(flows, login_cookie, "github", query)?;
        let code = callback_code(query)?;
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.config.client_id)
            .append_pair("client_secret", self.config.client_secret.expose())
            .append_pair("code", &code)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("code_verifier", &flow.pkce_verifier)
            .finish();
        let response = self
            .http
            .post(format!("{}/login/oauth/access_token", self.config.web_url))
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| LoginError::ProviderApi(ProviderFailure::new("GitHub token endpoint", e)))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| LoginError::ProviderApi(ProviderFailure::new("GitHub token endpoint", e)))?;
        // The answer may hold the token, and the parser's message can quote it: neither is kept.
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| LoginError::TokenExchange(ProviderFailure::because("unreadable token answer")))?;
        // GitHub reports a refused code with 200 and an `error` field.
        let token = match (answer.access_token, answer.error) {
            (Some(token), None) => token,
            (_, error) => {
                let error = error.unwrap_or_else(|| "no access_token".into());
                return Err(LoginError::TokenExchange(ProviderFailure::because(error)));
            }
        };

        let user: User = self.api(&token, "/user").await?;
        let emails: Vec<Email> = self.api(&token, "/user/emails").await?;
        let email = emails.into_iter().find(|e| e.primary && e.verified).ok_or(LoginError::NoVerifiedEmail)?.email;
        let mut fallback_role = None;
        if !self.config.allowed_orgs.is_empty() {
            let orgs: Vec<Org> = self.api(&token, "/user/orgs").await?;
            let member =
                orgs.iter().any(|org| self.config.allowed_orgs.iter().any(|a| a.eq_ignore_ascii_case(&org.login)));
            if member {
                fallback_role = Some(self.org_role);
            }
        }
        let identity = Identity {
            provider: "github".into(),
            subject: user.id.to_string(),
            email,
            name: user.name.or(Some(user.login)),
            access_token: fallback_role.map(|_| inlet_shared::config::Secret::new(token)),
            fallback_role,
            membership_ttl: Some(self.config.membership_ttl),
        };
        Ok((identity, FlowEnd { return_to: flow.return_to, link_user_id: flow.link_user_id }))
    }
}
