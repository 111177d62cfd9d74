//! The operator console: one static page (HTML, CSS and vanilla JS, no build step) at
//! `/console`, talking to `/graphql` with the session cookie and the CSRF header.
//! Content-Security-Policy allows only this origin's own scripts, styles and connections.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
/// The admin views (API tokens, users), on top of `app.js`.
const ADMIN_SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `/`, `/console`, `/console/app.js`, `/console/admin.js`, `/console/app.css`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route("/console/app.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console/admin.js", get(|| async { asset(ADMIN_SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console/app.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = secured(body.into_response(), content_type, CSP);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `response` with its content type and the headers every page and file of ours carries: the
/// page's Content-Security-Policy, no sniffing, no referrer, no framing.
pub(crate) fn secured(mut response: Response, content_type: &'static str, csp: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
