//! The worker's HTTP surface: `GET /healthz` and `GET /readyz` on the main listener (the
//! operator API joins it later), `GET /metrics` on the admin listener.

use std::convert::Infallible;
use std::sync::Arc;

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

/// Main listener entry point.
pub async fn handle(health: Arc<Health>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => {
            let nats = health.client.connection_state() == async_nats::connection::State::Connected;
            let database = health.store.is_healthy();
            let status = if nats && database { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json(
                status,
                &serde_json::json!({
                    "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
                    "nats_connected": nats,
                    "database_writer": database,
                }),
            )
        }
        _ => json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not_found" })),
    };
    Ok(response)
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
