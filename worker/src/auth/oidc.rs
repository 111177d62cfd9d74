//! OpenID Connect sign-in (authorization code + PKCE S256 + `state` + `nonce`) with any
//! provider found by discovery, using `openidconnect` over our own reqwest 0.13 client.
//!
//! The login in progress travels sealed (AES-256-GCM, key drawn at startup) in a short-lived
//! `__Host-` cookie, so `state`, `nonce` and the PKCE verifier are bound to the browser that
//! started the login, unreadable there, and cost the server nothing; the callback clears the
//! cookie whatever happens next, and the code it redeems is single-use at the provider. The ID token is verified against the provider's JWKS:
//! signature, `iss`, `aud`, `exp` and `nonce`. The redirect URI is exactly
//! `{console.public_url}/auth/callback`.
//!
//! "Sign in with another account" starts the same login with the provider told to ask again
//! instead of answering from the session it already has: `prompt=select_account` when the
//! provider's discovery document lists it in `prompt_values_supported`, otherwise
//! `prompt=login` (OpenID Connect Core 1.0 §3.1.2.1; a provider that cannot re-authenticate
//! answers `login_required`, which the callback shows as its refusal).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use inlet_shared::config::OidcConfig;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope,
    TokenResponse as _,
};
use tokio::sync::Mutex;

use super::{
    Account, CallbackQuery, FlowEnd, FlowSeal, Identity, LoginError, LoginFlow, ProviderFailure, callback_code,
    checked_flow, flow_expiry,
};
use crate::model::UserId;

/// How long discovery metadata (and its JWKS) is reused.
const METADATA_TTL: Duration = Duration::from_secs(300);

/// The one discovery field read beyond the core ones: the `prompt` values the provider supports
/// (OpenID Connect Prompt Create 1.0; optional, and many providers leave it out).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct PromptValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt_values_supported: Option<Vec<String>>,
}

impl AdditionalProviderMetadata for PromptValues {}

/// The provider's discovery document, with [`PromptValues`].
type Metadata = ProviderMetadata<
    PromptValues,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The `prompt` that makes the provider ask which account to sign in with rather than answer
/// from its session: `select_account` where the provider says it supports it (an account
/// chooser), otherwise `login` (sign in again, as anyone), which every OpenID provider knows.
fn another_account_prompt(metadata: &Metadata) -> CoreAuthPrompt {
    let supported = metadata.additional_metadata().prompt_values_supported.as_deref().unwrap_or_default();
    if supported.iter().any(|value| value == "select_account") {
        CoreAuthPrompt::SelectAccount
    } else {
        CoreAuthPrompt::Login
    }
}

/// The reqwest 0.13 client as `openidconnect`'s HTTP client. Redirects are not followed (SSRF).
#[derive(Clone)]
pub struct OidcHttp(reqwest::Client);

/// An HTTP failure talking to the provider (reqwest's error, with its cause: the connection
/// error behind "error sending request").
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OidcHttpError(#[from] reqwest::Error);

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = OidcHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, OidcHttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = self.0.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut built = http::Response::new(body.to_vec());
            *built.status_mut() = status;
            *built.headers_mut() = headers;
            Ok(built)
        })
    }
}

/// The OIDC relying party.
pub struct OidcLogin {
    config: OidcConfig,
    redirect_uri: RedirectUrl,
    http: OidcHttp,
    metadata: Mutex<Option<(Metadata, Instant)>>,
}

impl OidcLogin {
    /// Builds the relying party; discovery happens on first use (the provider may start later).
    ///
    /// # Errors
    ///
    /// When the redirect URI is not a URL or the HTTP client cannot be built.
    pub fn new(config: OidcConfig, public_url: &str) -> Result<OidcLogin, LoginError> {
        let redirect_uri = RedirectUrl::new(format!("{public_url}/auth/callback"))
            .map_err(|e| LoginError::Setup(ProviderFailure::new("redirect URI", e)))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| LoginError::Setup(ProviderFailure::new("HTTP client", e)))?;
        Ok(OidcLogin { config, redirect_uri, http: OidcHttp(client), metadata: Mutex::new(None) })
    }

    /// Label of the sign-in button.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    async fn metadata(&self, refresh: bool) -> Result<Metadata, LoginError> {
        let mut cached = self.metadata.lock().await;
        if !refresh
            && let Some((metadata, at)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| LoginError::Discovery(ProviderFailure::new("issuer URL", e)))?;
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| LoginError::Discovery(ProviderFailure::new("discovery", e)))?;
        *cached = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: Metadata,
    ) -> openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.config.client_secret.expose().to_owned())),
        )
        .set_redirect_uri(self.redirect_uri.clone())
    }

    /// Starts a login: returns (provider URL, login cookie value: the sealed flow). With
    /// [`Account::Another`] the provider is told to ask which account to use instead of signing
    /// its current one in again.
    ///
    /// # Errors
    ///
    /// When the provider cannot be discovered.
    pub async fn start(
        &self,
        flows: &FlowSeal,
        return_to: String,
        link_user_id: Option<UserId>,
        account: Account,
    ) -> Result<(String, String), LoginError> {
        let metadata = self.metadata(false).await?;
        let prompt = match account {
            Account::Current => None,
            Account::Another => Some(another_account_prompt(&metadata)),
        };
        let client = self.client(metadata);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if let Some(prompt) = prompt {
            request = request.add_prompt(prompt);
        }
        let (url, state, nonce) = request.url();
        let flow = LoginFlow {
            provider: "oidc".into(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to,
            expires_at: flow_expiry(),
            link_user_id,
        };
        let cookie_value = flows.seal(&flow).map_err(|_| LoginError::Seal)?;
        Ok((url.to_string(), cookie_value))
    }

    /// Finishes a login from the callback's query: returns the verified identity and where to
    /// go next. The caller clears the login cookie whatever the outcome.
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
        let flow = checked_flow(flows, login_cookie, "oidc", query)?;
        if let Some(iss) = &query.iss
            && iss.trim_end_matches('/') != self.config.issuer.trim_end_matches('/')
        {
            return Err(LoginError::IssuerMismatch);
        }
        let code = callback_code(query)?;

        let client = self.client(self.metadata(false).await?);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| LoginError::Discovery(ProviderFailure::new("token endpoint", e)))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(token_exchange_error)?;
        let id_token = tokens.id_token().ok_or_else(|| LoginError::IdToken(ProviderFailure::because("no id_token")))?;
        let nonce = Nonce::new(flow.nonce);
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            Err(first) => {
                // The signing key may have rotated: rediscover once and verify again.
                let client = self.client(self.metadata(true).await?);
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|_| LoginError::IdToken(ProviderFailure::new("ID token", first)))?
                    .clone()
            }
        };
        let subject = claims.subject().clone();
        let mut email = claims.email().map(|e| e.as_str().to_owned());
        let mut verified = claims.email_verified();
        let mut name = claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned());
        if email.is_none() {
            // Conforming providers put scope claims in the ID token only when no access token
            // is issued; ask the userinfo endpoint (its `sub` must match the ID token's).
            let info: openidconnect::core::CoreUserInfoClaims = client
                .user_info(tokens.access_token().clone(), Some(subject.clone()))
                .map_err(|_| LoginError::NoVerifiedEmail)?
                .request_async(&self.http)
                .await
                .map_err(|e| LoginError::IdToken(ProviderFailure::new("userinfo", e)))?;
            email = info.email().map(|e| e.as_str().to_owned());
            verified = info.email_verified();
            name = name.or_else(|| info.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned()));
        }
        let email = email.ok_or(LoginError::NoVerifiedEmail)?;
        if verified != Some(true) {
            return Err(LoginError::NoVerifiedEmail);
        }
        let identity = Identity {
            provider: "oidc".into(),
            subject: subject.as_str().to_owned(),
            email,
            name,
            fallback_role: None,
            membership_ttl: None,
            access_token: None,
        };
        Ok((identity, FlowEnd { return_to: flow.return_to, link_user_id: flow.link_user_id }))
    }
}

/// The token endpoint's refusal or failure. A refusal (an OAuth error answer) is the sign-in's
/// fault (400); an endpoint that cannot be reached or answers what cannot be read is the
/// provider's (503: trying again later may work). An answer that cannot be parsed may hold
/// tokens, so neither it nor the parser's message (which can quote it) is kept: only where it
/// went wrong.
fn token_exchange_error(
    error: openidconnect::RequestTokenError<
        OidcHttpError,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> LoginError {
    use openidconnect::RequestTokenError;
    match error {
        RequestTokenError::Parse(parse, _answer) => LoginError::ProviderApi(ProviderFailure::because(format!(
            "token endpoint: unreadable answer (at {})",
            parse.path()
        ))),
        RequestTokenError::Request(request) => LoginError::ProviderApi(ProviderFailure::new("token endpoint", request)),
        refused => LoginError::TokenExchange(ProviderFailure::new("token endpoint", refused)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use inlet_shared::config::{OidcConfig, Secret};

    use super::*;

    #[tokio::test]
    async fn an_unreachable_provider_is_logged_with_the_connection_error_behind_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = OidcConfig {
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: "inlet".into(),
            client_secret: Secret::new("client-secret"),
            label: "Sign in".into(),
        };
        let login = OidcLogin::new(config, "https://inlet.example").unwrap();
        let error = login.start(&FlowSeal::new(), "/console".into(), None, Account::Current).await.err().unwrap();
        assert!(matches!(error, LoginError::Discovery(_)), "{error:?}");
        let detail = error.detail().unwrap();
        // Flattened with to_string(), this was "Request failed" and nothing more.
        assert!(detail.starts_with("discovery: Request failed: "), "{detail}");
        assert!(detail.contains(&format!("127.0.0.1:{port}")) && detail.to_lowercase().contains("connect"), "{detail}");
        assert!(!detail.contains("client-secret"));
    }

    /// An unreachable token endpoint is the provider's failure (503), not a refused code (400).
    #[tokio::test]
    async fn a_token_endpoint_that_cannot_be_reached_is_unavailable_and_a_refusal_is_a_refusal() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let unreachable = reqwest::get(format!("http://127.0.0.1:{port}/token")).await.unwrap_err();
        let error = token_exchange_error(openidconnect::RequestTokenError::Request(OidcHttpError(unreachable)));
        assert!(matches!(error, LoginError::ProviderApi(_)), "{error:?}");
        let refusal = openidconnect::StandardErrorResponse::new(
            openidconnect::core::CoreErrorResponseType::InvalidGrant,
            None,
            None,
        );
        let error = token_exchange_error(openidconnect::RequestTokenError::ServerResponse(refusal));
        assert!(matches!(error, LoginError::TokenExchange(_)), "{error:?}");
    }

    /// A discovery document with `prompt_values` (or without the field).
    fn metadata(prompt_values: Option<&[&str]>) -> Metadata {
        let mut document = serde_json::json!({
            "issuer": "https://op.example",
            "authorization_endpoint": "https://op.example/auth",
            "jwks_uri": "https://op.example/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        if let Some(values) = prompt_values {
            document["prompt_values_supported"] = serde_json::json!(values);
        }
        serde_json::from_value(document).unwrap()
    }

    #[test]
    fn another_account_asks_for_the_account_chooser_where_the_provider_has_one_else_a_new_login() {
        let chooser = metadata(Some(&["none", "login", "consent", "select_account"]));
        assert_eq!(another_account_prompt(&chooser), CoreAuthPrompt::SelectAccount);
        assert_eq!(another_account_prompt(&metadata(Some(&["none", "login", "consent"]))), CoreAuthPrompt::Login);
        assert_eq!(another_account_prompt(&metadata(None)), CoreAuthPrompt::Login, "the field is optional");
    }
}
