//! The worker's HTTP surface. Main listener: an axum [`Router`] with `GET /healthz`,
//! `GET /readyz`, and (when `[console] enabled`) the operator plane: `/graphql` (`api`),
//! `/auth/*` (`auth`), `/console` (`console`). Admin listener: `GET /metrics` only.
//!
//! Every request body on the main listener is read within `worker.body_read_timeout` (else
//! `408`) and [`MAX_REQUEST_BODY_BYTES`] (else `413`) by [`read_bounded`]: a client that declares
//! a body and never sends it would otherwise hold its connection slot forever. The GraphQL API
//! reads its own, after the caller's credentials (so anonymous bodies are never buffered); every
//! other route gets it read here before it runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Request as AxumRequest, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::store::Store;

/// What the health endpoints look at.
pub struct Health {
    /// NATS client.
    pub client: async_nats::Client,
    /// Database.
    pub store: Store,
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// Largest request body the main listener reads (also the GraphQL API's limit: nothing else
/// there takes a body).
pub const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024;

/// The operator plane's routes.
pub struct OperatorRoutes {
    /// `/graphql`: reads its own body, after the caller's credentials.
    pub api: Router,
    /// Sign-in and the console: their bodies are read before they run.
    pub pages: Router,
}

/// The main listener's routes: health, plus `operator` (API, login, console) when enabled;
/// request bodies bounded by `body_read_timeout` and [`MAX_REQUEST_BODY_BYTES`].
pub fn router(health: Arc<Health>, operator: Option<OperatorRoutes>, body_read_timeout: Duration) -> Router {
    let base = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let (base, api) = match operator {
        Some(OperatorRoutes { api, pages }) => (base.merge(pages), Some(api)),
        None => (base, None),
    };
    let bodies_read_first = base
        .fallback(|| async {
            (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": "not_found" }))).into_response()
        })
        .layer(middleware::from_fn(move |request: AxumRequest, next: Next| {
            read_body_first(request, next, body_read_timeout)
        }));
    match api {
        Some(api) => api.merge(bodies_read_first),
        None => bodies_read_first,
    }
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Declared or sent beyond [`MAX_REQUEST_BODY_BYTES`] (413).
    TooLarge,
    /// Not complete within `worker.body_read_timeout` (408).
    Timeout,
    /// The connection broke while it was read (400).
    Broken,
}

impl BodyError {
    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken => StatusCode::BAD_REQUEST,
        }
    }

    /// The error code in the answer.
    pub fn code(self) -> &'static str {
        match self {
            BodyError::TooLarge => "payload_too_large",
            BodyError::Timeout => "body_timeout",
            BodyError::Broken => "body_unreadable",
        }
    }
}

/// Reads a whole request body within `timeout` and [`MAX_REQUEST_BODY_BYTES`]; a declared length
/// over the limit is refused before anything is read.
pub async fn read_bounded(body: Body, headers: &http::HeaderMap, timeout: Duration) -> Result<Bytes, BodyError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > MAX_REQUEST_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(timeout, Limited::new(body, MAX_REQUEST_BODY_BYTES).collect()).await {
        Err(_elapsed) => Err(BodyError::Timeout),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_broken)) => Err(BodyError::Broken),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Reads the whole request body (see [`read_bounded`]), then hands the request on with the body
/// in memory.
async fn read_body_first(request: AxumRequest, next: Next, timeout: Duration) -> AxumResponse {
    let (parts, body) = request.into_parts();
    match read_bounded(body, &parts.headers, timeout).await {
        Ok(body) => next.run(AxumRequest::from_parts(parts, Body::from(body))).await,
        Err(error) => body_refused(error),
    }
}

fn body_refused(error: BodyError) -> AxumResponse {
    let mut response = (error.status(), axum::Json(serde_json::json!({ "error": error.code() }))).into_response();
    // The rest of the body may still be on its way: do not try to read the next request after it.
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

async fn readyz(State(health): State<Arc<Health>>) -> AxumResponse {
    let nats = health.client.connection_state() == async_nats::connection::State::Connected;
    let database = health.store.is_healthy();
    let status = if nats && database { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "nats_connected": nats,
        "database_writer": database,
    });
    (status, axum::Json(body)).into_response()
}

/// Admin listener entry point.
pub async fn handle_admin(
    metrics: PrometheusHandle,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() == Method::GET && request.uri().path() == "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        return Ok(response);
    }
    Ok(json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not_found" })))
}
