//! Every way a webhook request can fail, and the one place that maps each to an HTTP answer.
//!
//! Bodies are JSON `{"error": "<code>", "message": "<text>"}` and never echo secrets,
//! signatures or the payload. 5xx and 429 answers carry `Retry-After`, so the sender retries.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use inlet_shared::signature::SignatureError;

use crate::pub_ack::PublishFailure;

/// The most bytes of headers JetStream stores with one message (nats-server refuses more with
/// 10097); named in the 431 when a publish is refused for that.
pub const NATS_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No source with that name is configured.
    #[error("unknown source")]
    UnknownSource,
    /// Only POST is accepted on webhook URLs.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The signature did not verify.
    #[error("signature rejected: {0}")]
    Signature(#[from] SignatureError),
    /// The body is larger than the source's limit.
    #[error("body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request headers ingest would store with the event are larger than it can store
    /// (JetStream keeps at most 64 KiB of headers per message). Permanent: never a 503.
    #[error("request headers exceed {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The client did not send the whole body in time.
    #[error("body not received within {0:?}")]
    BodyTimeout(Duration),
    /// The client broke off while sending the body.
    #[error("body could not be read")]
    BodyRead(#[source] hyper::Error),
    /// The source's rate limit is exhausted.
    #[error("rate limit exceeded")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// Requests to this source fail verification faster than its failure limit allows: further
    /// failing requests get this instead of 401/400 (and are not logged one by one). Verified
    /// requests never see it.
    #[error("too many failed requests for this source")]
    TooManyFailures {
        /// When to try again.
        retry_after: Duration,
    },
    /// The memory budget for request bodies being received (`ingest.max_buffered_body_bytes`)
    /// is spent by other requests. Temporary: the sender should retry.
    #[error("too many request bodies in flight; retry later")]
    Busy {
        /// When to try again.
        retry_after: Duration,
    },
    /// JetStream did not acknowledge the publish (down, disconnected, or too slow).
    #[error("event could not be stored: {reason}")]
    Unavailable {
        /// Short reason for logs and metrics.
        reason: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
    /// JetStream cannot store events now (a storage limit reached, or writes failing), said by
    /// the server or already known from earlier publishes. Temporary: space comes back as
    /// events age out or are purged, so the sender should retry.
    #[error("event could not be stored: the event store is full or failing ({reason})")]
    StoreFull {
        /// Which limit or failure (`stream_full`, `server_storage_full`, …).
        reason: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
}

impl IngestError {
    /// Why a publish got no PubAck, as the answer to the request. `limit` is the source's body
    /// limit, named in the 413 of a message JetStream can never store.
    pub fn from_publish(failure: PublishFailure, limit: usize, retry_after: Duration) -> IngestError {
        match failure {
            PublishFailure::TooLarge => IngestError::TooLarge { limit },
            PublishFailure::HeadersTooLarge => IngestError::HeadersTooLarge { limit: NATS_MAX_HEADER_BYTES },
            PublishFailure::StoreFull(_) => IngestError::StoreFull { reason: failure.as_str(), retry_after },
            PublishFailure::Disconnected | PublishFailure::Timeout | PublishFailure::Failed => {
                IngestError::Unavailable { reason: failure.as_str(), retry_after }
            }
        }
    }

    /// The only place in `ingest` that knows HTTP status codes for failures.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::UnknownSource => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::Signature(SignatureError::Stale | SignatureError::Malformed(_)) => StatusCode::BAD_REQUEST,
            IngestError::Signature(SignatureError::MissingHeader(_) | SignatureError::Mismatch) => {
                StatusCode::UNAUTHORIZED
            }
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            IngestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::BodyRead(_) => StatusCode::BAD_REQUEST,
            IngestError::RateLimited { .. } | IngestError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable { .. } | IngestError::StoreFull { .. } | IngestError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Stable label for the `outcome` metric label and the error body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::UnknownSource => "unknown_source",
            IngestError::MethodNotAllowed => "method_not_allowed",
            IngestError::Signature(SignatureError::Stale) => "stale_timestamp",
            IngestError::Signature(SignatureError::Malformed(_)) => "malformed_signature",
            IngestError::Signature(SignatureError::MissingHeader(_)) => "missing_signature",
            IngestError::Signature(SignatureError::Mismatch) => "bad_signature",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::HeadersTooLarge { .. } => "headers_too_large",
            IngestError::BodyTimeout(_) => "body_timeout",
            IngestError::BodyRead(_) => "body_read_error",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::TooManyFailures { .. } => "too_many_failures",
            IngestError::Busy { .. } => "busy",
            IngestError::Unavailable { .. } => "unavailable",
            IngestError::StoreFull { .. } => "store_full",
        }
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = json_response(status, &body);
        let retry_after = match &self {
            IngestError::RateLimited { retry_after }
            | IngestError::TooManyFailures { retry_after }
            | IngestError::Busy { retry_after }
            | IngestError::Unavailable { retry_after, .. }
            | IngestError::StoreFull { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        if let Some(delay) = retry_after {
            let seconds = delay.as_secs_f64().ceil().max(1.0);
            if let Ok(value) = HeaderValue::from_str(&format!("{seconds:.0}")) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        match self {
            IngestError::MethodNotAllowed => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            // The rest of the body is unread; the connection cannot be reused.
            IngestError::TooLarge { .. }
            | IngestError::HeadersTooLarge { .. }
            | IngestError::BodyTimeout(_)
            | IngestError::Busy { .. } => {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pub_ack::StoreFull;

    #[test]
    fn a_publish_that_can_never_succeed_is_a_4xx_and_only_temporary_failures_are_503() {
        let retry = Duration::from_secs(1);
        let status = |failure| IngestError::from_publish(failure, 1000, retry).status();
        // Permanent: the sender must stop, not retry for ever.
        assert_eq!(status(PublishFailure::TooLarge), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(PublishFailure::HeadersTooLarge), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        for temporary in [
            PublishFailure::Disconnected,
            PublishFailure::Timeout,
            PublishFailure::Failed,
            PublishFailure::StoreFull(StoreFull::StreamLimit),
            PublishFailure::StoreFull(StoreFull::ServerLimit),
            PublishFailure::StoreFull(StoreFull::AccountLimit),
            PublishFailure::StoreFull(StoreFull::WriteFailed),
        ] {
            assert_eq!(status(temporary), StatusCode::SERVICE_UNAVAILABLE, "{temporary:?}");
        }
        // JetStream's "headers over 64 KiB" (10097) is the permanent 431.
        assert_eq!(
            status(crate::pub_ack::classify_api(10097, "header size exceeds maximum allowed of 64k")),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn every_code_is_a_known_outcome_and_refusals_to_retry_carry_retry_after() {
        let retry = Duration::from_secs(2);
        let errors = [
            IngestError::HeadersTooLarge { limit: 1 },
            IngestError::TooManyFailures { retry_after: retry },
            IngestError::Busy { retry_after: retry },
        ];
        for error in errors {
            assert!(crate::metric_names::OUTCOMES.contains(&error.code()), "{}", error.code());
            let wants_retry = error.status() == StatusCode::TOO_MANY_REQUESTS || error.status().is_server_error();
            let response = error.into_response();
            assert_eq!(response.headers().contains_key(header::RETRY_AFTER), wants_retry);
        }
    }
}
