//! The login routes: `GET /auth/login` and `GET /auth/callback` (OIDC), `GET /auth/github/login`
//! and `GET /auth/github/callback` (GitHub), each login also as `?another_account=true` (the
//! provider is told to ask which account: what the refusal page and "switch account" offer),
//! `POST /auth/logout`, `GET /auth/session` (what
//! the console asks to learn who is signed in, its CSRF token and the sign-in choices),
//! `POST /auth/link?provider=oidc|github` (CSRF-checked: starts linking another provider account
//! to the signed-in user; answers `{"url": …}` to navigate to).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{
    Account, Auth, CSRF_HEADER, CallbackQuery, FlowEnd, Identity, LOGIN_COOKIE, LOGIN_TTL, LoginError, Principal,
    SESSION_COOKIE, Via, constant_time_eq, cookie, local_path, set_cookie,
};
use crate::model::UserId;
use crate::store::Linked;

/// The `/auth/*` routes.
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/github/login", get(github_login))
        .route("/auth/github/callback", get(github_callback))
        .route("/auth/logout", post(logout))
        .route("/auth/session", get(session))
        .route("/auth/link", post(link))
        .with_state(auth)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A small HTML page (sign-in failures, "not authorised").
pub fn page(status: StatusCode, title: &str, message: &str) -> Response {
    page_with_link(status, title, message, None)
}

/// A link on a [`page`] besides "Back to the console": its element id, (local) href and text.
struct PageLink {
    id: &'static str,
    href: String,
    text: &'static str,
}

fn page_with_link(status: StatusCode, title: &str, message: &str, link: Option<PageLink>) -> Response {
    let link = link.map_or_else(String::new, |link| {
        format!("<a id=\"{}\" href=\"{}\">{}</a> · ", link.id, escape(&link.href), escape(link.text))
    });
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head><body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>{title}</h1><p id=\"message\">{message}</p><p>{link}<a href=\"/console\">Back to the console</a></p></body></html>",
        title = escape(title),
        message = escape(message)
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
    /// Ask the provider which account to sign in with (see [`Account::Another`]).
    #[serde(default)]
    another_account: bool,
}

impl LoginQuery {
    fn account(&self) -> Account {
        if self.another_account { Account::Another } else { Account::Current }
    }
}

/// Where a login with `provider` (`oidc` or `github`) starts.
fn login_path(provider: &str) -> &'static str {
    match provider {
        "github" => "/auth/github/login",
        _ => "/auth/login",
    }
}

/// "Sign in with another account": the same provider's login, told to ask which account, going
/// back to the same (local) page.
fn another_account(login_path: &str, return_to: &str) -> PageLink {
    let query = openidconnect::url::form_urlencoded::Serializer::new(String::new())
        .append_pair("another_account", "true")
        .append_pair("return_to", &local_path(Some(return_to)))
        .finish();
    PageLink { id: "another-account", href: format!("{login_path}?{query}"), text: "Sign in with another account" }
}

fn not_configured() -> Response {
    page(StatusCode::NOT_FOUND, "Sign-in is not configured", "This Inlet has no such sign-in provider.")
}

fn started(result: Result<(String, String), LoginError>) -> Response {
    match result {
        Ok((url, login_cookie)) => redirect(&url, &[set_cookie(LOGIN_COOKIE, &login_cookie, LOGIN_TTL.as_secs())]),
        Err(error) => {
            tracing::warn!(%error, detail = error.detail().unwrap_or_default(), "cannot start sign-in");
            page(StatusCode::SERVICE_UNAVAILABLE, "Sign-in unavailable", &error.to_string())
        }
    }
}

async fn login(State(auth): State<Arc<Auth>>, Query(query): Query<LoginQuery>) -> Response {
    let Some(oidc) = &auth.oidc else {
        return not_configured();
    };
    started(oidc.start(auth.flows(), local_path(query.return_to.as_deref()), None, query.account()).await)
}

async fn github_login(State(auth): State<Arc<Auth>>, Query(query): Query<LoginQuery>) -> Response {
    let Some(github) = &auth.github else {
        return not_configured();
    };
    started(github.start(auth.flows(), local_path(query.return_to.as_deref()), None, query.account()).await)
}

async fn callback(State(auth): State<Arc<Auth>>, headers: HeaderMap, Query(query): Query<CallbackQuery>) -> Response {
    let Some(oidc) = &auth.oidc else {
        return not_configured();
    };
    let result = oidc.finish(auth.flows(), cookie(&headers, LOGIN_COOKIE), &query).await;
    finished(&auth, &headers, "oidc", result).await
}

async fn github_callback(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(github) = &auth.github else {
        return not_configured();
    };
    let result = github.finish(auth.flows(), cookie(&headers, LOGIN_COOKIE), &query).await;
    finished(&auth, &headers, "github", result).await
}

/// The end of every sign-in: an error page, "not authorised", or a new session and a redirect
/// to the (local) page the login started from. The login cookie is cleared in every case. An
/// account the provider vouched for but Inlet does not take (not allowed, or no verified email)
/// is offered "Sign in with another account": signing in again plainly would get the same
/// account from the provider's session.
async fn finished(
    auth: &Auth,
    headers: &HeaderMap,
    provider: &str,
    result: Result<(Identity, FlowEnd), LoginError>,
) -> Response {
    let clear_login = set_cookie(LOGIN_COOKIE, "", 0);
    let (identity, FlowEnd { return_to, link_user_id }) = match result {
        Ok(found) => found,
        Err(error) => {
            // The detail (never a token) goes to the log; the page says what kind of failure.
            match error.detail() {
                Some(detail) => tracing::warn!(%error, detail, "sign-in failed"),
                None => tracing::warn!(%error, "sign-in failed"),
            }
            let status = match error {
                LoginError::Seal | LoginError::Discovery(_) | LoginError::ProviderApi(_) | LoginError::Setup(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_REQUEST,
            };
            let link =
                matches!(error, LoginError::NoVerifiedEmail).then(|| another_account(login_path(provider), "/console"));
            let mut response = page_with_link(status, "Sign-in failed", &error.to_string(), link);
            if let Ok(value) = HeaderValue::from_str(&clear_login) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            return response;
        }
    };
    let email = identity.email.clone();
    if let Some(user_id) = link_user_id {
        return with_cookie(linked(auth, headers, user_id, identity, &return_to).await, &clear_login);
    }
    let mut response = match auth.sign_in(identity).await {
        Ok(Some(session)) => {
            let ttl = session.ttl.as_secs();
            return redirect(
                &local_path(Some(&return_to)),
                &[set_cookie(SESSION_COOKIE, &session.cookie_value, ttl), clear_login],
            );
        }
        Ok(None) => page_with_link(
            StatusCode::FORBIDDEN,
            "Not authorised",
            &format!(
                "{email} signed in, but this address is not allowed to use this Inlet. Ask an administrator to add it to [console.access], or sign in with another account."
            ),
            Some(another_account(login_path(provider), &return_to)),
        ),
        Err(error) => {
            tracing::error!(%error, "cannot store the session");
            page(StatusCode::SERVICE_UNAVAILABLE, "Sign-in failed", "The session could not be stored; try again.")
        }
    };
    if let Ok(value) = HeaderValue::from_str(&clear_login) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn with_cookie(mut response: Response, set: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(set) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The end of a linking login: the browser must still hold a session of the user who asked.
async fn linked(auth: &Auth, headers: &HeaderMap, user_id: UserId, identity: Identity, return_to: &str) -> Response {
    let current = match cookie(headers, SESSION_COOKIE) {
        Some(value) => auth.session_principal(&value).await.ok().flatten(),
        None => None,
    };
    if current.and_then(|p| p.user_id) != Some(user_id) {
        return page(
            StatusCode::BAD_REQUEST,
            "Linking failed",
            "Sign in again, then link the account from the console.",
        );
    }
    match auth.link(user_id, identity).await {
        Ok(Linked::Now | Linked::Already) => redirect(&local_path(Some(return_to)), &[]),
        Ok(Linked::OtherUser) => page(
            StatusCode::CONFLICT,
            "Linking failed",
            "That account already signs in to another Inlet user; unlink it there first.",
        ),
        Err(error) => {
            tracing::error!(%error, "cannot link account");
            page(StatusCode::SERVICE_UNAVAILABLE, "Linking failed", "The database is unavailable.")
        }
    }
}

/// The signed-in console user of a cookie-authenticated POST, after the CSRF check.
async fn session_user(auth: &Auth, headers: &HeaderMap) -> Result<Principal, StatusCode> {
    let value = cookie(headers, SESSION_COOKIE).ok_or(StatusCode::UNAUTHORIZED)?;
    let principal = auth
        .session_principal(&value)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let Via::Session { csrf_token } = &principal.via else {
        return Err(StatusCode::UNAUTHORIZED);
    };
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !constant_time_eq(sent, csrf_token) {
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(principal)
}

#[derive(serde::Deserialize)]
struct LinkQuery {
    provider: String,
    return_to: Option<String>,
}

async fn link(State(auth): State<Arc<Auth>>, headers: HeaderMap, Query(query): Query<LinkQuery>) -> Response {
    let principal = match session_user(&auth, &headers).await {
        Ok(principal) => principal,
        Err(status) => return status.into_response(),
    };
    let return_to = local_path(Some(query.return_to.as_deref().unwrap_or("/console#account")));
    let started = match (query.provider.as_str(), &auth.oidc, &auth.github) {
        ("oidc", Some(oidc), _) => oidc.start(auth.flows(), return_to, principal.user_id, Account::Current).await,
        ("github", _, Some(github)) => github.start(auth.flows(), return_to, principal.user_id, Account::Current).await,
        _ => return (StatusCode::NOT_FOUND, "no such sign-in provider").into_response(),
    };
    match started {
        Ok((url, login_cookie)) => {
            let mut response = axum::Json(serde_json::json!({ "url": url })).into_response();
            with_cookie_mut(&mut response, &set_cookie(LOGIN_COOKIE, &login_cookie, LOGIN_TTL.as_secs()));
            response
        }
        Err(error) => {
            tracing::warn!(%error, detail = error.detail().unwrap_or_default(), "cannot start linking");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

fn with_cookie_mut(response: &mut Response, set: &str) {
    if let Ok(value) = HeaderValue::from_str(set) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    let Some(value) = cookie(&headers, SESSION_COOKIE) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    // Logging out is a state change: the CSRF token must come with it.
    match auth.session_principal(&value).await {
        Ok(Some(principal)) => {
            let Via::Session { csrf_token } = principal.via else {
                return StatusCode::FORBIDDEN.into_response();
            };
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !constant_time_eq(sent, &csrf_token) {
                return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
            }
        }
        Ok(None) => {}
        Err(error) => {
            tracing::error!(%error, "cannot read session");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    if let Err(error) = auth.sign_out(&value).await {
        tracing::error!(%error, "cannot delete session");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn session(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    let mut logins = Vec::new();
    // `anotherUrl`: the same login, the provider told to ask which account (switching accounts).
    if let Some(oidc) = &auth.oidc {
        logins.push(serde_json::json!({
            "provider": "oidc", "url": "/auth/login", "anotherUrl": "/auth/login?another_account=true",
            "label": oidc.label(),
        }));
    }
    if let Some(github) = &auth.github {
        logins.push(serde_json::json!({
            "provider": "github", "url": "/auth/github/login",
            "anotherUrl": "/auth/github/login?another_account=true", "label": github.label(),
        }));
    }
    let body = match cookie(&headers, SESSION_COOKIE) {
        Some(value) => match auth.session_principal(&value).await {
            Ok(Some(principal)) => {
                let csrf = match &principal.via {
                    Via::Session { csrf_token } => csrf_token.clone(),
                    Via::Token => String::new(),
                };
                serde_json::json!({
                    "authenticated": true, "actor": principal.actor, "role": principal.role.as_str(),
                    "csrfToken": csrf, "logins": logins,
                })
            }
            Ok(None) => serde_json::json!({ "authenticated": false, "logins": logins }),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
        None => serde_json::json!({ "authenticated": false, "logins": logins }),
    };
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
