//! OpenTelemetry traces: one trace per webhook, from the provider's request to the
//! destination's answer (`[telemetry.traces]`).
//!
//! [`Tracing`] is the process's tracer, made by `run` from the config and passed where spans
//! start: no global provider, so two services in one test process (ingest and worker) export
//! as two services. Off (the default) it is nothing: spans are `None`, no `traceparent` is
//! read or written, no exporter thread runs. On, finished spans go to the SDK's batch span
//! processor (its own thread, a bounded queue that drops rather than waits) and are exported
//! over OTLP/HTTP in protobuf, with this process's reqwest client driven on the process's
//! runtime ([`RuntimeClient`]): no gRPC stack, no second HTTP client, rustls on aws-lc-rs.
//!
//! Context crosses processes as a W3C `traceparent`: in the JetStream message (ingest's
//! publish span is the parent of the worker's record span), in the store with each event (the
//! record span is the parent of every delivery attempt, retries and replays included), and in
//! each delivery (the attempt span is the parent of the destination's own spans). A provider's
//! `traceparent` is untrusted input: it becomes a link of the receive span, never its parent,
//! so a sender can neither choose Inlet's trace id nor force or suppress its sampling.
//!
//! What spans carry is decided where they are made, from closed sets and ids: never a body,
//! a header value, a secret or a signature. This module does not decide which spans exist (the
//! binaries do) and does not record metrics.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
pub use opentelemetry::trace::SpanKind;

use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};

use crate::config::TracesConfig;

/// The W3C header that carries a span's context: in JetStream messages, in deliveries, and
/// (untrusted) in providers' requests.
pub const TRACEPARENT: &str = "traceparent";

/// The instrumentation scope of every span.
const SCOPE: &str = "inlet";

/// Finished spans sent in one export request at most.
const MAX_EXPORT_BATCH: usize = 512;

/// Bytes of a collector's answer read at most (it is a small protobuf message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The exporter's HTTP client could not be built (TLS roots, …).
    #[error("telemetry.traces: cannot build the OTLP HTTP client")]
    Client(#[source] reqwest::Error),
    /// The OTLP exporter refused its configuration.
    #[error("telemetry.traces: cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// The process's tracer: off, or exporting to an OTLP collector. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracing {
    exporting: Option<Arc<Exporting>>,
}

struct Exporting {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// How long shutdown waits for the last export.
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").field("exporting", &self.is_exporting()).finish()
    }
}

impl Tracing {
    /// Off: every span is `None`, nothing is exported, no thread is started.
    pub fn off() -> Tracing {
        Tracing::default()
    }

    /// Tracing as `config` says: [`Tracing::off`] unless `enabled`. `service` is the default
    /// `service.name` (the binary's name). Must be called inside a Tokio runtime (the exporter
    /// sends on it).
    ///
    /// # Errors
    ///
    /// [`TracingError`] when the exporter cannot be built.
    pub fn start(config: &TracesConfig, service: &str) -> Result<Tracing, TracingError> {
        if !config.enabled {
            return Ok(Tracing::off());
        }
        let client = reqwest::Client::builder()
            .timeout(config.export_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("inlet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TracingError::Client)?;
        let client = RuntimeClient { client, runtime: tokio::runtime::Handle::current() };
        let headers: HashMap<String, String> =
            config.headers.iter().map(|(name, value)| (name.clone(), value.expose().to_owned())).collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.export_timeout)
            .with_headers(headers)
            .with_http_client(client)
            .build()
            .map_err(|e| TracingError::Exporter(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queued_spans)
            .with_max_export_batch_size(MAX_EXPORT_BATCH.min(config.max_queued_spans))
            .with_scheduled_delay(config.batch_delay)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let service_name = config.service_name.clone().unwrap_or_else(|| service.to_owned());
        // Only what the config says: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are not
        // read, so the file (with its INLET__ overrides) is the one place to look.
        let resource = Resource::builder_empty()
            .with_service_name(service_name)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attributes(config.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // A trace starts in ingest and is kept or not there, by its trace id; every later
            // span follows its parent, so a trace is exported whole or not at all.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Tracing {
            exporting: Some(Arc::new(Exporting {
                provider,
                tracer,
                shutdown_timeout: config.export_timeout + Duration::from_secs(1),
            })),
        })
    }

    /// Whether spans are made and exported (`telemetry.traces.enabled`).
    pub fn is_exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// Starts a span with no parent (a new trace), linked to `links` (e.g. a provider's
    /// context).
    pub fn root(&self, name: &'static str, kind: SpanKind, links: &[SpanContext]) -> Span {
        self.span(name, kind, None, links)
    }

    /// Starts a span under `parent`, a span of this process.
    pub fn child(&self, name: &'static str, kind: SpanKind, parent: &Span) -> Span {
        match parent.context() {
            Some(parent) => self.span(name, kind, Some(parent), &[]),
            None => self.span(name, kind, None, &[]),
        }
    }

    /// Starts a span under the context in `traceparent` (written by Inlet: a JetStream message
    /// header or the store), or with no parent when there is none or it is not valid.
    pub fn child_of(&self, name: &'static str, kind: SpanKind, traceparent: Option<&str>) -> Span {
        if self.exporting.is_none() {
            return Span::none();
        }
        let parent = traceparent.and_then(parse_traceparent);
        self.span(name, kind, parent.as_ref(), &[])
    }

    fn span(&self, name: &'static str, kind: SpanKind, parent: Option<&SpanContext>, links: &[SpanContext]) -> Span {
        let Some(exporting) = &self.exporting else { return Span::none() };
        let parent = parent.map_or_else(Context::new, |parent| Context::new().with_remote_span_context(parent.clone()));
        let mut builder = SpanBuilder::from_name(name).with_kind(kind);
        if !links.is_empty() {
            builder = builder.with_links(links.iter().map(|context| Link::with_context(context.clone())).collect());
        }
        Span { inner: Some(exporting.tracer.build_with_context(builder, &parent)) }
    }

    /// Exports what is still queued and stops the exporter, within `export_timeout` (plus a
    /// second). Called once at the end of `run`; a no-op when off.
    pub async fn shutdown(&self) {
        let Some(exporting) = &self.exporting else { return };
        let exporting = Arc::clone(exporting);
        // The SDK's shutdown blocks until its thread has exported, and that export runs on
        // this runtime (`RuntimeClient`): block a blocking-pool thread, not a runtime one.
        let stopped =
            tokio::task::spawn_blocking(move || exporting.provider.shutdown_with_timeout(exporting.shutdown_timeout))
                .await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "traces: the last spans may not have been exported"),
            Err(error) => tracing::warn!(%error, "traces: exporter shutdown failed"),
        }
    }
}

/// A span being recorded, or `None` (tracing off, or a context that cannot be used). Ends when
/// dropped, or with [`Span::end`].
#[derive(Debug, Default)]
pub struct Span {
    inner: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// No span: every method does nothing.
    pub fn none() -> Span {
        Span { inner: None }
    }

    /// Sets an attribute when the span is recorded (sampled). Callers pass ids, names and
    /// values of closed sets only: never a body, a header value, a secret or a signature.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(span) = &mut self.inner
            && span.is_recording()
        {
            span.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Whether the span is recorded (tracing on and the trace sampled): attributes that cost
    /// an allocation are worth making only then.
    pub fn is_recording(&self) -> bool {
        self.inner.as_ref().is_some_and(opentelemetry::trace::Span::is_recording)
    }

    /// Marks the span failed, with a short description of what failed (a reason code, never
    /// text from the request).
    pub fn fail(&mut self, description: impl Into<Cow<'static, str>>) {
        if let Some(span) = &mut self.inner {
            span.set_status(Status::error(description));
        }
    }

    /// The span's context (also when it is not sampled: its trace id still travels on).
    pub fn context(&self) -> Option<&SpanContext> {
        self.inner.as_ref().map(opentelemetry::trace::Span::span_context).filter(|context| context.is_valid())
    }

    /// The span's context as a W3C `traceparent` value, for a message, the store or a request.
    pub fn traceparent(&self) -> Option<String> {
        self.context().map(format_traceparent)
    }

    /// The trace id in hex (what log lines carry as `trace_id`).
    pub fn trace_id(&self) -> Option<String> {
        self.context().map(|context| context.trace_id().to_string())
    }

    /// A `tracing` span named `trace` with this span's `trace_id`, for the log lines written
    /// while it runs ([`tracing::Span::none`] without one).
    pub fn log_span(&self) -> tracing::Span {
        match self.trace_id() {
            Some(trace_id) => tracing::info_span!("trace", trace_id = %trace_id),
            None => tracing::Span::none(),
        }
    }

    /// Ends the span now.
    pub fn end(self) {
        drop(self);
    }
}

/// Reads a W3C `traceparent` value strictly (lowercase hex of exactly the specified lengths,
/// not all zeros; version `00` with nothing after its flags, or a later version, read as `00`
/// as the specification asks, except the invalid `ff`). `None` when it is not valid.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let lower_hex = |field: &str, len: usize| {
        field.len() == len && field.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut fields = value.split('-');
    let (version, trace_id, span_id, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && fields.next().is_some()) {
        return None;
    }
    if !lower_hex(trace_id, 32) || !lower_hex(span_id, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        // Only the sampled flag has a meaning in version 00.
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// `context` as a version-`00` `traceparent`.
fn format_traceparent(context: &SpanContext) -> String {
    let flags = (context.trace_flags() & TraceFlags::SAMPLED).to_u8();
    format!("00-{}-{}-{flags:02x}", context.trace_id(), context.span_id())
}

/// The exporter's HTTP client: reqwest, each request sent as a task of the process's runtime.
/// The SDK's batch processor exports from its own thread (blocking on the export), where
/// reqwest alone has no runtime to run on.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        self.runtime.spawn(send(client, request)).await?
    }
}

async fn send(
    client: reqwest::Client,
    request: http::Request<Bytes>,
) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
    let mut response = client.execute(reqwest::Request::try_from(request)?).await?;
    let mut answer = http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = std::mem::take(response.headers_mut());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err("the collector's answer is larger than 64 KiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(answer.body(Bytes::from(body))?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn off_makes_no_spans_and_no_exporter() {
        let tracing = Tracing::start(&TracesConfig::default(), "inlet-test").unwrap();
        assert!(!tracing.is_exporting(), "off by default");
        let mut span = tracing.root("receive", SpanKind::Server, &[]);
        span.set("inlet.source", "s");
        assert!(span.context().is_none() && span.traceparent().is_none() && span.trace_id().is_none());
        assert!(tracing.child_of("record", SpanKind::Consumer, Some(VALID)).context().is_none());
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_values_are_read_strictly() {
        let context = parse_traceparent(VALID).unwrap();
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(format_traceparent(&context), VALID, "written as read");
        let later = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more").unwrap();
        assert!(!later.is_sampled(), "a later version is read as 00");
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }

    /// What `telemetry::init` installs writes the `trace_id` of the span a log line was written
    /// in, in both formats.
    #[tokio::test]
    async fn log_lines_written_inside_a_span_carry_its_trace_id() {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let config = TracesConfig {
            enabled: true,
            endpoint: "http://127.0.0.1:9/v1/traces".into(),
            export_timeout: Duration::from_millis(200),
            ..TracesConfig::default()
        };
        let tracing = Tracing::start(&config, "inlet-test").unwrap();
        let span = tracing.root("receive", SpanKind::Server, &[]);
        let trace_id = span.trace_id().unwrap();
        let (text, json) = (Buffer::default(), Buffer::default());
        let (text_writer, json_writer) = (text.clone(), json.clone());
        let text_subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || text_writer.clone()).finish();
        let json_subscriber =
            tracing_subscriber::fmt().json().with_current_span(false).with_writer(move || json_writer.clone()).finish();
        for subscriber in [tracing::Dispatch::new(text_subscriber), tracing::Dispatch::new(json_subscriber)] {
            tracing::dispatcher::with_default(&subscriber, || {
                let _inside = span.log_span().entered();
                tracing::warn!("inside the span");
            });
        }
        let text = String::from_utf8(text.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains(&format!("trace{{trace_id={trace_id}}}")), "{text}");
        let json = String::from_utf8(json.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(line["spans"][0]["trace_id"], trace_id.as_str(), "{json}");
        assert!(Span::none().log_span().is_none(), "no trace, no field");
        drop(span);
        tracing.shutdown().await;
    }

    #[tokio::test]
    async fn spans_carry_their_context_on_as_a_traceparent() {
        let config = TracesConfig {
            enabled: true,
            // Nothing listens there: the spans are dropped at shutdown, after one failed try.
            endpoint: "http://127.0.0.1:9/v1/traces".into(),
            export_timeout: Duration::from_millis(200),
            ..TracesConfig::default()
        };
        let tracing = Tracing::start(&config, "inlet-test").unwrap();
        assert!(tracing.is_exporting());
        let root = tracing.root("receive", SpanKind::Server, &[]);
        let traceparent = root.traceparent().unwrap();
        let trace_id = root.trace_id().unwrap();
        assert_eq!(traceparent, format!("00-{trace_id}-{}-01", root.context().unwrap().span_id()));
        let child = tracing.child_of("record", SpanKind::Consumer, Some(&traceparent));
        assert_eq!(child.trace_id().as_deref(), Some(trace_id.as_str()), "the child continues the trace");
        assert_ne!(child.context().unwrap().span_id(), root.context().unwrap().span_id());
        let orphan = tracing.child_of("record", SpanKind::Consumer, Some("not a traceparent"));
        assert_ne!(orphan.trace_id(), Some(trace_id), "an unusable parent starts a new trace");
        drop((root, child, orphan));
        tracing.shutdown().await;
    }
}
