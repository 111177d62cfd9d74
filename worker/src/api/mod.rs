//! The operator API: GraphQL at `POST /graphql` on the worker's main listener.
//!
//! Request rules, checked before any resolver runs (in this order):
//! - `POST` only (`GET` answers 405: no queries, let alone mutations, in URLs);
//! - `Content-Type: application/json` only (`text/plain`, forms and multipart, which browsers
//!   send cross-site without a preflight, answer 415);
//! - a bearer token must be valid (401); a session cookie needs the session's CSRF token in
//!   `X-CSRF-Token` (403);
//! - one operation per request (batches answer 400), body at most 64 KiB;
//! - depth and complexity limits; introspection and field suggestions only for authenticated
//!   callers / never.
//!
//! Resolvers check the role (`viewer` reads, `operator` replays, `admin` manages tokens) and
//! map failures through [`error::ApiError`]. Each response reports `extensions.sqlReads`, the
//! number of SQL reads it took (DataLoaders keep it flat as pages grow).

pub mod error;
pub mod loaders;
pub mod replay;
pub mod schema;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::auth::{Auth, AuthError, CSRF_HEADER, Via, constant_time_eq};
use crate::deliver::Destination as RuntimeDestination;
use crate::store::Store;
use error::ApiError;
use loaders::{AttemptsByDelivery, DeliveriesByEvent, EventsById, Reads};
use schema::ApiSchema;

/// Largest accepted GraphQL request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What resolvers use, shared by all requests.
pub struct Services {
    /// Database.
    pub store: Store,
    /// Replays.
    pub replayer: Arc<replay::Replayer>,
    /// The worker's live destinations (for breaker state).
    pub destinations: Arc<HashMap<String, Arc<RuntimeDestination>>>,
    /// Configured sources.
    pub sources: Vec<types::Source>,
}

/// The shared services from a resolver's context.
pub fn services<'a>(ctx: &'a async_graphql::Context<'_>) -> Result<&'a Arc<Services>, ApiError> {
    ctx.data::<Arc<Services>>().map_err(|_| ApiError::Invalid("server misconfigured".into()))
}

/// The API: schema, authentication, services.
pub struct Api {
    schema: ApiSchema,
    auth: Arc<Auth>,
    services: Arc<Services>,
}

impl Api {
    /// Builds the schema with its limits.
    pub fn new(auth: Arc<Auth>, services: Arc<Services>) -> Arc<Api> {
        let schema = schema::builder().data(Arc::clone(&services)).finish();
        Arc::new(Api { schema, auth, services })
    }
}

/// The schema in SDL (what `schemas/graphql/schema.graphql` holds).
pub fn sdl() -> String {
    schema::builder().finish().sdl()
}

/// `POST /graphql`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/graphql", post(graphql).fallback(method_not_allowed))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn method_not_allowed() -> Response {
    let mut response = error_body(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "use POST with a JSON body");
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

async fn graphql(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        return error_body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json",
        );
    }
    let principal = match api.auth.principal(&headers).await {
        Ok(principal) => principal,
        Err(AuthError::BadToken) => {
            return error_body(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "invalid or revoked API token");
        }
        Err(AuthError::Store(error)) => {
            tracing::error!(%error, "cannot authenticate");
            return error_body(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the database is unavailable");
        }
    };
    if let Some(principal) = &principal
        && let Via::Session { csrf_token } = &principal.via
    {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !constant_time_eq(sent, csrf_token) {
            return error_body(StatusCode::FORBIDDEN, "CSRF", "missing or wrong X-CSRF-Token header");
        }
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            return error_body(StatusCode::BAD_REQUEST, "BAD_REQUEST", "expected one GraphQL request as a JSON object");
        }
    };
    let reads = Reads::default();
    let store = api.services.store.clone();
    let mut request = request
        .data(reads.clone())
        .data(DataLoader::new(DeliveriesByEvent { store: store.clone(), reads: reads.clone() }, tokio::spawn))
        .data(DataLoader::new(AttemptsByDelivery { store: store.clone(), reads: reads.clone() }, tokio::spawn))
        .data(DataLoader::new(EventsById { store, reads: reads.clone() }, tokio::spawn));
    match principal {
        Some(principal) => request = request.data(principal),
        None => request = request.disable_introspection(),
    }
    let mut response = api.schema.execute(request).await;
    response.extensions.insert("sqlReads".into(), async_graphql::Value::from(reads.get() as u64));
    let mut http_response = axum::Json(response).into_response();
    http_response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    http_response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// `schemas/graphql/schema.graphql` is the exported SDL; `UPDATE_SCHEMAS=1` rewrites it.
    #[test]
    fn graphql_schema_is_fresh() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/graphql/schema.graphql");
        let current = super::sdl();
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &current).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(committed == current, "schemas/graphql/schema.graphql is stale: run with UPDATE_SCHEMAS=1");
    }
}
