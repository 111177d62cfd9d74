//! The worker's HTTP surface. Main listener: an axum [`Router`] with `GET /healthz`,
//! `GET /readyz`, and (when `[console] enabled`) the operator plane: `/graphql` (`api`),
//! `/auth/*` (`auth`), `/console` (`console`). Admin listener: `GET /metrics` only.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
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

/// The main listener's routes: health, plus `operator` (API, login, console) when enabled.
pub fn router(health: Arc<Health>, operator: Option<Router>) -> Router {
    let base = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let router = match operator {
        Some(operator) => base.merge(operator),
        None => base,
    };
    router.fallback(|| async {
        (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": "not_found" }))).into_response()
    })
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
