//! [`TestOtlp`]: an OTLP/HTTP receiver owned by one test, on a free loopback port. It decodes
//! every export with the official protobuf definitions (`opentelemetry-proto`) and keeps the
//! spans, so a test asserts on exactly what a collector would have received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;
use tokio::sync::watch;

/// One exported span, flattened: ids in lowercase hex, attributes as text.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that exported it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// OTLP span kind (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// The parent's span id; empty for a root span.
    pub parent_span_id: String,
    /// Attributes, values as text.
    pub attributes: Vec<(String, String)>,
    /// Links: (trace id, span id).
    pub links: Vec<(String, String)>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Every string the span holds anywhere (name, attribute keys and values, status message,
    /// event names and attributes, link attributes), to search for what must never be there.
    pub all_text: Vec<String>,
}

impl ReceivedSpan {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A running receiver; stops when dropped.
pub struct TestOtlp {
    address: SocketAddr,
    state: Arc<State>,
    changed: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<Vec<RequestSeen>>,
    notify: watch::Sender<usize>,
}

/// What the receiver saw of one export request besides its spans.
#[derive(Debug, Clone)]
pub struct RequestSeen {
    /// Request path.
    pub path: String,
    /// `Content-Type`.
    pub content_type: String,
    /// Request headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// Resource attributes of the export (first resource), values as text.
    pub resource: Vec<(String, String)>,
}

impl TestOtlp {
    /// Binds `127.0.0.1:0` and serves `POST /v1/traces`.
    pub async fn start() -> TestOtlp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (notify, changed) = watch::channel(0);
        let state = Arc::new(State { spans: Mutex::default(), requests: Mutex::default(), notify });
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(state.receive(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestOtlp { address, state, changed, task }
    }

    /// The traces URL to configure (`telemetry.traces.endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Every export request received so far.
    pub fn requests(&self) -> Vec<RequestSeen> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits (for each export, no polling) until `done` holds for the spans received, at most
    /// `within`; returns them either way.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let mut changed = self.changed.clone();
        let _ = tokio::time::timeout(within, async {
            loop {
                if done(&self.spans()) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.spans()
    }
}

impl Drop for TestOtlp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    async fn receive(&self, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let Ok(export) = ExportTraceServiceRequest::decode(body) else {
            let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"not an ExportTraceServiceRequest")));
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            return response;
        };
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or("").to_owned()))
            .collect();
        let mut resource = Vec::new();
        let mut spans = Vec::new();
        for resource_spans in export.resource_spans {
            let attributes = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let attributes: Vec<(String, String)> = attributes.iter().map(text_pair).collect();
            let service =
                attributes.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()).unwrap_or_default();
            if resource.is_empty() {
                resource.clone_from(&attributes);
            }
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    let mut all_text = vec![span.name.clone()];
                    let mut collect = |pairs: &[KeyValue]| {
                        for pair in pairs {
                            let (key, value) = text_pair(pair);
                            all_text.push(key);
                            all_text.push(value);
                        }
                    };
                    collect(&span.attributes);
                    for event in &span.events {
                        collect(&event.attributes);
                    }
                    for link in &span.links {
                        collect(&link.attributes);
                    }
                    for event in &span.events {
                        all_text.push(event.name.clone());
                    }
                    let status = span.status.clone().unwrap_or_default();
                    all_text.push(status.message.clone());
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name.clone(),
                        kind: span.kind,
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        attributes: span.attributes.iter().map(text_pair).collect(),
                        links: span.links.iter().map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id))).collect(),
                        status_code: status.code,
                        all_text,
                    });
                }
            }
        }
        self.requests.lock().unwrap().push(RequestSeen {
            path: parts.uri.path().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            headers,
            resource,
        });
        let total = {
            let mut kept = self.spans.lock().unwrap();
            kept.extend(spans);
            kept.len()
        };
        self.notify.send_replace(total);
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        let mut response = hyper::Response::new(Full::new(Bytes::from(answer)));
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-protobuf"));
        response
    }
}

fn text_pair(pair: &KeyValue) -> (String, String) {
    (pair.key.clone(), pair.value.as_ref().map(text).unwrap_or_default())
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::ArrayValue(array)) => array.values.iter().map(text).collect::<Vec<_>>().join(","),
        Some(Value::KvlistValue(list)) => {
            list.values.iter().map(text_pair).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        }
        _ => String::new(),
    }
}
