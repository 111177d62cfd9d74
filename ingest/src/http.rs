//! The receiver's HTTP surface: `POST /webhooks/{source}`, `GET /healthz`, `GET /readyz` on the
//! public listener, `GET /metrics` on the admin listener.
//!
//! A webhook goes through, in order: source lookup, the size of the headers to store (431),
//! body read (bounded in size and time, never buffering past the limit, and reserved against
//! the process-wide body budget), signature verification over the raw bytes, the source's rate
//! limit, event identity, then publish. The body is parsed only after it verified, and only
//! where the provider puts the event id in it (Stripe, Slack) or for Slack's `url_verification`.
//!
//! The rate limit comes after verification so that only genuine requests spend it: otherwise
//! anyone could keep a source at 429. Requests failing verification have a limit of their own
//! per source (`ingest.failure_rate_limit`), which genuine requests never consult.

use std::collections::HashMap;
use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use inlet_shared::config::{Config, RateLimit, SourceConfig};
use inlet_shared::envelope::{self, Envelope};
use inlet_shared::otel::{self, Span, SpanKind, Tracing};
use inlet_shared::signature::{Diagnosis, DiagnosisKind, SchemeKind, SignatureError, Verifier};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument as _;

use crate::budget::{BodyBudget, BodyBuffer, Reservation};
use crate::error::{IngestError, json_response};
use crate::metric_names;
use crate::pub_ack::{PublishFailure, Stored};
use crate::publish::Publisher;
use crate::quarantine::{Failed, Quarantine, SourceQuarantine};

/// What a configured source needs at request time.
pub struct SourceRuntime {
    name: String,
    verifier: Verifier,
    max_body_bytes: usize,
    /// `rate_limit`: spent by verified requests only.
    limiter: Option<DefaultDirectRateLimiter>,
    /// `ingest.failure_rate_limit`: spent by requests that fail verification.
    failure_limiter: DefaultDirectRateLimiter,
    /// Whether failing requests are being answered 429 (logged once per episode, not per request).
    failures_limited: AtomicBool,
    subject: String,
    /// Lowercase header names not to store: signatures and credentials.
    dropped_headers: Vec<String>,
    /// Headers stored with the value `<redacted>` (`ingest.redact_headers`).
    redacted_headers: envelope::HeaderPatterns,
    metrics: metric_names::SourceMetrics,
    /// Where its failed requests go (`[quarantine]`).
    quarantine: SourceQuarantine,
}

impl SourceRuntime {
    /// Builds the runtime view of one configured source.
    ///
    /// # Errors
    ///
    /// When the source's secrets cannot be used (config validation already rejects that).
    pub fn new(source: &SourceConfig, config: &Config) -> Result<SourceRuntime, inlet_shared::signature::KeyError> {
        let verifier = source.verifier()?;
        let limiter = source.rate_limit.and_then(rate_limiter);
        // Config validation keeps both numbers at least 1; the fallback is never used.
        let failure_limiter = rate_limiter(config.ingest.failure_rate_limit)
            .unwrap_or_else(|| RateLimiter::direct(Quota::per_second(NonZeroU32::MIN)));
        let mut dropped_headers: Vec<String> =
            envelope::DROPPED_REQUEST_HEADERS.iter().map(|h| (*h).to_owned()).collect();
        dropped_headers.extend(verifier.signature_header_names());
        let quarantine = SourceQuarantine::new(source, config, &verifier);
        Ok(SourceRuntime {
            quarantine,
            name: source.name.clone(),
            verifier,
            max_body_bytes: source.body_limit(&config.ingest),
            limiter,
            failure_limiter,
            failures_limited: AtomicBool::new(false),
            subject: config.stream.subject_for(&source.name),
            dropped_headers,
            redacted_headers: config.ingest.redact_headers.clone(),
            metrics: metric_names::SourceMetrics::new(&source.name, source.secrets.len()),
        })
    }

    /// The answer to a request that failed verification: the signature error while the
    /// source's failure limit allows, else 429 (still counted by reason, but not logged).
    fn verification_failed(&self, error: SignatureError) -> IngestError {
        match self.failure_limiter.check() {
            Ok(()) => {
                if self.failures_limited.swap(false, Ordering::Relaxed) {
                    tracing::info!(source = %self.name, "signature failures back under ingest.failure_rate_limit");
                }
                IngestError::Signature(error)
            }
            Err(not_until) => {
                self.metrics.signature_rejected(error.reason());
                if !self.failures_limited.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        source = %self.name,
                        "signature failures over ingest.failure_rate_limit: answering them 429 and no longer \
                         logging each (verified requests are not affected)"
                    );
                }
                IngestError::TooManyFailures { retry_after: wait_time(&not_until) }
            }
        }
    }
}

fn rate_limiter(rate: RateLimit) -> Option<DefaultDirectRateLimiter> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst())?;
    Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
}

fn wait_time(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> Duration {
    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))
}

impl SourceRuntime {
    /// The value of a kept request header as stored: [`envelope::REDACTED_VALUE`] for a header
    /// `ingest.redact_headers` names, else the value when it is text.
    fn stored_value<'a>(&self, name: &header::HeaderName, value: &'a header::HeaderValue) -> Option<&'a str> {
        if self.redacted_headers.matches(name.as_str()) {
            return Some(envelope::REDACTED_VALUE);
        }
        value.to_str().ok()
    }
}

/// Shared state of the public listener.
pub struct AppState {
    /// Sources by name.
    pub sources: HashMap<String, SourceRuntime>,
    /// The JetStream publisher.
    pub publisher: Publisher,
    /// `ingest.body_read_timeout`.
    pub body_read_timeout: Duration,
    /// `ingest.retry_after`.
    pub retry_after: Duration,
    /// `ingest.max_buffered_body_bytes`.
    pub body_budget: BodyBudget,
    /// `ingest.claim_check_threshold_bytes`: larger bodies go to the bodies bucket first.
    pub claim_check_threshold: usize,
    /// The in-flight gauge handle.
    pub in_flight: metrics::Gauge,
    /// `[telemetry.traces]`: the receive, verify and publish spans.
    pub tracing: Tracing,
    /// `[quarantine]`: where requests that failed verification are kept.
    pub quarantine: Quarantine,
}

/// What happened to an accepted webhook.
enum Accepted {
    Stored {
        event_id: String,
        sequence: u64,
    },
    Duplicate {
        event_id: String,
        sequence: u64,
    },
    /// Slack's endpoint check: answered without publishing.
    Challenge(String),
}

/// Public listener entry point.
pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let response = match path.as_str() {
        "/healthz" => json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        "/readyz" => readiness(&state).await,
        _ => match path.strip_prefix("/webhooks/") {
            Some(name) if !name.is_empty() && !name.contains('/') => webhook(&state, name, request).await,
            _ => json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": "not_found", "message": "no such route" }),
            ),
        },
    };
    Ok(response)
}

/// Ready when connected, the stream answers, and JetStream is not known to be failing to store
/// (`health`); a 503 says why in `reason`.
async fn readiness(state: &AppState) -> Response<Full<Bytes>> {
    let connected = state.publisher.is_connected();
    metrics::gauge!(metric_names::NATS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    let failing = state.publisher.health().failing();
    let not_ready = match failing {
        Some(store) => Some(serde_json::json!({
            "status": "not_ready",
            "reason": store.reason.as_str(),
            "failing_for_seconds": store.for_how_long.as_secs(),
            "probes": store.probes,
            "nats_connected": connected,
        })),
        None if !connected => {
            Some(serde_json::json!({ "status": "not_ready", "reason": "nats_disconnected", "nats_connected": false }))
        }
        None if !state.publisher.is_ready().await => {
            Some(serde_json::json!({ "status": "not_ready", "reason": "stream_unavailable", "nats_connected": true }))
        }
        None => None,
    };
    match not_ready {
        None => json_response(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
        Some(body) => {
            let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
            if let Ok(value) = header::HeaderValue::from_str(&state.retry_after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

/// One webhook, traced: the receive span is the root of the webhook's trace (a provider's
/// `traceparent` is linked to it, never its parent: it is input from the internet), and the log
/// lines written while it is handled carry its `trace_id`.
async fn webhook(state: &AppState, name: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let provider_context = if state.tracing.is_exporting() {
        request.headers().get(otel::TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(otel::parse_traceparent)
    } else {
        None
    };
    let mut span = state.tracing.root("receive", SpanKind::Server, provider_context.as_slice());
    if span.is_recording() {
        span.set("http.request.method", method_attribute(request.method()));
        span.set("http.route", "/webhooks/{source}");
        if state.sources.contains_key(name) {
            span.set("inlet.source", name.to_owned());
        }
    }
    let log_span = span.log_span();
    let response = handle_webhook(state, name, request, &mut span).instrument(log_span).await;
    span.set("http.response.status_code", i64::from(response.status().as_u16()));
    if response.status().is_server_error() {
        span.fail("5xx");
    }
    response
}

/// The request method as the HTTP semantic conventions spell it (`_OTHER` for any other).
fn method_attribute(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

async fn handle_webhook(
    state: &AppState,
    name: &str,
    request: Request<Incoming>,
    span: &mut Span,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let _in_flight = metric_names::InFlight::start(&state.in_flight);
    let Some(source) = state.sources.get(name) else {
        metric_names::unknown_source(started.elapsed());
        span.set("inlet.outcome", IngestError::UnknownSource.code());
        return IngestError::UnknownSource.into_response();
    };
    let result = accept(state, source, request, span).await;
    span.set(
        "inlet.outcome",
        match &result {
            Ok(Accepted::Stored { .. }) => "accepted",
            Ok(Accepted::Duplicate { .. }) => "duplicate",
            Ok(Accepted::Challenge(_)) => "challenge",
            Err(error) => error.code(),
        },
    );
    match result {
        Ok(accepted) => {
            let (status, body, outcome) = match accepted {
                Accepted::Stored { event_id, sequence } => (
                    StatusCode::ACCEPTED,
                    serde_json::json!({ "status": "accepted", "event_id": event_id, "stream_sequence": sequence }),
                    "accepted",
                ),
                Accepted::Duplicate { event_id, sequence } => (
                    StatusCode::OK,
                    serde_json::json!({ "status": "duplicate", "event_id": event_id, "stream_sequence": sequence }),
                    "duplicate",
                ),
                Accepted::Challenge(challenge) => {
                    (StatusCode::OK, serde_json::json!({ "challenge": challenge }), "challenge")
                }
            };
            source.metrics.request_finished(outcome, started.elapsed());
            json_response(status, &body)
        }
        Err(error) => {
            source.metrics.request_finished(error.code(), started.elapsed());
            match &error {
                // Counted by reason already; logging each would let a flood fill the logs.
                IngestError::TooManyFailures { .. } => {}
                // Logged with its diagnosis where it was diagnosed (`log_diagnosis`).
                IngestError::Signature(reason) => source.metrics.signature_rejected(reason.reason()),
                IngestError::Unavailable { reason, .. } => {
                    tracing::warn!(source = %source.name, reason, "webhook not stored; answered 503");
                }
                // The store's state changes are logged once (`health`), not for every request.
                IngestError::StoreFull { reason, .. } => {
                    tracing::debug!(source = %source.name, reason, "webhook not stored, the store is full; answered 503");
                }
                other => {
                    tracing::debug!(source = %source.name, code = other.code(), "webhook rejected")
                }
            }
            error.into_response()
        }
    }
}

async fn accept(
    state: &AppState,
    source: &SourceRuntime,
    request: Request<Incoming>,
    span: &mut Span,
) -> Result<Accepted, IngestError> {
    if request.method() != Method::POST {
        return Err(IngestError::MethodNotAllowed);
    }
    let (parts, body) = request.into_parts();
    // Before the body is read: headers that can never be stored are refused for free.
    let original_headers = original_headers(source, &parts.headers)?;
    // Held until the answer is decided: the body is in memory until the publish is done.
    let (body, _reservation) = read_body(body, &parts.headers, source.max_body_bytes, state).await?;
    let received_at = SystemTime::now();
    span.set("http.request.body.size", i64::try_from(body.len()).unwrap_or(i64::MAX));

    let mut verify = state.tracing.child("verify", SpanKind::Internal, span);
    verify.set("inlet.scheme", source.verifier.kind().as_str());
    let verified = match source.verifier.verify(&parts.headers, &body, received_at) {
        Ok(verified) => verified,
        Err(error) => {
            verify.set("inlet.verify.failure", error.reason());
            verify.fail(error.reason());
            let refusal = source.verification_failed(error);
            // Over the failure limit (429) nothing more is spent: a flood costs what it did.
            if let IngestError::Signature(error) = &refusal {
                let diagnosis = source.verifier.diagnose(&parts.headers, &body, received_at);
                verify.set("inlet.verify.diagnosis", diagnosis.as_str());
                log_diagnosis(&source.name, error, &diagnosis);
                source.metrics.diagnosed(diagnosis.kind());
                let failed = Failed {
                    source: &source.name,
                    headers: &parts.headers,
                    original_headers: &original_headers,
                    body: &body,
                    received_at,
                    diagnosis,
                    verifier: &source.verifier,
                };
                state.quarantine.keep(&source.quarantine, failed);
            }
            return Err(refusal);
        }
    };
    source.quarantine.verified(state.quarantine.keep_first());
    verify.set("inlet.secret_index", i64::try_from(verified.secret_index()).unwrap_or(i64::MAX));
    verify.end();
    if let Some(limiter) = &source.limiter
        && let Err(not_until) = limiter.check()
    {
        return Err(IngestError::RateLimited { retry_after: wait_time(&not_until) });
    }
    source.metrics.secret_matched(verified.secret_index());
    let identity = verified.identify(&parts.headers, &body);
    if span.is_recording() {
        span.set("inlet.event_id", identity.id.clone());
        if let Some(event_type) = &identity.event_type {
            span.set("inlet.event_type", event_type.clone());
        }
    }

    if source.verifier.kind() == SchemeKind::Slack
        && let Some(challenge) = slack_challenge(&body)
    {
        return Ok(Accepted::Challenge(challenge));
    }

    // The worker's record span continues from this one, through the message's `traceparent`.
    let mut publish = state.tracing.child("publish", SpanKind::Producer, span);
    if publish.is_recording() {
        publish.set("messaging.system", "nats");
        publish.set("messaging.operation.type", "send");
        publish.set("messaging.destination.name", source.subject.clone());
    }
    // A large body is stored first; the message names it and carries no payload. The 2xx
    // below needs both acknowledged.
    let (body_claim, payload) = if body.len() > state.claim_check_threshold {
        publish.set("inlet.claim_check", true);
        match state.publisher.store_body(&source.name, &body).await {
            Ok(claim) => (Some(claim), Bytes::new()),
            Err(failure) => {
                publish.fail(failure.as_str());
                publish.end();
                return Err(IngestError::from_publish(failure, source.max_body_bytes, state.retry_after));
            }
        }
    } else {
        (None, body)
    };
    let event = EventHeaders {
        original_headers,
        secret_index: verified.secret_index(),
        received_at,
        traceparent: publish.traceparent(),
        body: body_claim,
    };
    let headers = nats_headers(source, &parts.headers, &identity, event);
    let header_bytes: usize = headers
        .iter()
        .map(|(name, values)| {
            values.iter().map(|value| name.to_string().len() + value.as_str().len() + 4).sum::<usize>()
        })
        .sum();
    let published = state.publisher.publish(source.subject.clone(), headers, payload).await;
    match &published {
        Ok(Stored::New(sequence) | Stored::Duplicate(sequence)) => {
            publish.set("inlet.stream_sequence", i64::try_from(*sequence).unwrap_or(i64::MAX));
            publish.set("inlet.duplicate", matches!(published, Ok(Stored::Duplicate(_))));
        }
        Err(failure) => publish.fail(failure.as_str()),
    }
    publish.end();
    match published {
        Ok(Stored::New(sequence)) => Ok(Accepted::Stored { event_id: identity.id, sequence }),
        Ok(Stored::Duplicate(sequence)) => Ok(Accepted::Duplicate { event_id: identity.id, sequence }),
        Err(PublishFailure::TooLarge) => {
            // What the message could have held: the largest message the server and stream take
            // now less these headers (never more than the source's limit). Startup keeps every
            // body under the claim-check threshold within `max_payload`; only a stream or server
            // limited since (or out of band) refuses one.
            let limit = state.publisher.largest_message().await.saturating_sub(header_bytes).min(source.max_body_bytes);
            Err(IngestError::from_publish(PublishFailure::TooLarge, limit, state.retry_after))
        }
        Err(failure) => Err(IngestError::from_publish(failure, source.max_body_bytes, state.retry_after)),
    }
}

/// The log line of a failure answered 401/400, with why it failed. Causes only a holder of a
/// configured secret can produce (a valid MAC over something: a stale timestamp, a changed body,
/// a secret read another way) are warnings; those anyone on the internet can produce (no
/// header, junk, an unknown secret) stay at debug level, counted in metrics and kept in the
/// quarantine. Neither names a secret or a signature.
fn log_diagnosis(source: &str, error: &SignatureError, diagnosis: &Diagnosis) {
    let detail = diagnosis.detail();
    let reason = error.reason();
    match diagnosis.kind() {
        DiagnosisKind::TimestampTooOld
        | DiagnosisKind::TimestampTooNew
        | DiagnosisKind::BodyChanged
        | DiagnosisKind::SecretEncoding => {
            tracing::warn!(source, reason, diagnosis = diagnosis.as_str(), %detail, "webhook signature rejected");
        }
        DiagnosisKind::MissingHeader
        | DiagnosisKind::MalformedHeader
        | DiagnosisKind::UnknownSecret
        | DiagnosisKind::NotDiagnosed => {
            tracing::debug!(source, reason, diagnosis = diagnosis.as_str(), %detail, "webhook signature rejected");
        }
    }
}

/// What the message's headers say besides the event's identity.
struct EventHeaders {
    original_headers: String,
    secret_index: usize,
    received_at: SystemTime,
    /// The publish span's context (traces on).
    traceparent: Option<String>,
    /// Where the body is, when it is not the payload.
    body: Option<envelope::BodyClaim>,
}

/// Reads at most `limit` bytes within `body_read_timeout`; a declared or actual larger body is
/// rejected as soon as that is known, without reading the rest. What the body holds is reserved
/// against the body budget as it arrives, never what it only declares (which costs a sender
/// nothing); without room the request is refused at once, `Busy`.
async fn read_body(
    mut body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    state: &AppState,
) -> Result<(Bytes, Reservation), IngestError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > limit as u64
    {
        return Err(IngestError::TooLarge { limit });
    }
    let mut buffer = BodyBuffer::new(&state.body_budget, declared, limit);
    let read = async move {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(IngestError::BodyRead)?;
            if let Ok(data) = frame.into_data() {
                if buffer.received() + data.len() > limit {
                    return Err(IngestError::TooLarge { limit });
                }
                if !buffer.push(data) {
                    return Err(IngestError::Busy { retry_after: state.retry_after });
                }
            }
        }
        Ok(buffer)
    };
    let timeout = state.body_read_timeout;
    let buffer = tokio::time::timeout(timeout, read).await.map_err(|_| IngestError::BodyTimeout(timeout))??;
    Ok(buffer.finish())
}

/// The most bytes of the request's headers kept with an event (the JSON of
/// `Inlet-Original-Headers`). JetStream stores at most 64 KiB of headers per message, and the
/// other Inlet headers (content type, ids, type: each bounded) must fit beside it; no provider
/// sends a tenth of this.
pub const MAX_ORIGINAL_HEADERS_BYTES: usize = 32 * 1024;

/// The request headers kept with the event, as the JSON of `Inlet-Original-Headers`: all but
/// signatures, credentials and hop-by-hop headers.
///
/// # Errors
///
/// [`IngestError::HeadersTooLarge`] beyond [`MAX_ORIGINAL_HEADERS_BYTES`]: such an event could
/// never be stored, so it is refused with a 4xx rather than refused by JetStream.
fn original_headers(source: &SourceRuntime, request_headers: &HeaderMap) -> Result<String, IngestError> {
    let kept: Vec<(&str, &str)> = request_headers
        .iter()
        .filter(|(name, _)| !source.dropped_headers.iter().any(|dropped| dropped == name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str(), source.stored_value(name, value)?)))
        .collect();
    let too_large = IngestError::HeadersTooLarge { limit: MAX_ORIGINAL_HEADERS_BYTES };
    // Cheap lower bound first, so an oversized head is not serialised at all.
    if kept.iter().map(|(name, value)| name.len() + value.len()).sum::<usize>() > MAX_ORIGINAL_HEADERS_BYTES {
        return Err(too_large);
    }
    let json = serde_json::to_string(&kept).unwrap_or_default();
    if json.len() > MAX_ORIGINAL_HEADERS_BYTES {
        return Err(too_large);
    }
    Ok(json)
}

/// Slack's `url_verification` request: `{"type":"url_verification","challenge":"…"}`.
fn slack_challenge(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if value.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    value.get("challenge")?.as_str().map(str::to_owned)
}

fn nats_headers(
    source: &SourceRuntime,
    request_headers: &HeaderMap,
    identity: &inlet_shared::signature::EventIdentity,
    event: EventHeaders,
) -> async_nats::HeaderMap {
    let EventHeaders { original_headers, secret_index, received_at, traceparent, body } = event;
    let envelope = Envelope {
        source: source.name.clone(),
        event_id: identity.id.clone(),
        id_origin: identity.origin,
        provider_event_id: identity.provider_id.clone(),
        event_type: identity.event_type.clone(),
        received_at_ms: received_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        scheme: source.verifier.kind(),
        secret_index,
        content_type: request_headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
        original_headers: Some(original_headers).filter(|json| !json.is_empty()),
        traceparent,
        body,
    };
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in envelope.to_headers() {
        headers.insert(name, value.as_ref());
    }
    headers
}

/// Admin listener entry point.
pub async fn handle_admin(
    metrics: PrometheusHandle,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if request.uri().path() == "/metrics" && request.method() == Method::GET {
        let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        response
    } else {
        json_response(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not_found", "message": "no such route" }))
    };
    Ok(response)
}
