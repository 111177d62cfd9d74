//! Route programs (docs/routing.md): a route's `filter`, a CEL expression deciding whether the
//! route applies to an event, and its `transform`, a jq program (jaq) reshaping the body of each
//! delivery it makes.
//!
//! Both are compiled when the worker starts (a program that does not compile stops it, naming
//! the key and the position); the text was bounded in size and bracket nesting before any parser
//! saw it (`inlet_shared::config::check_program_bounds`), since both parsers recurse.
//!
//! A filter cannot loop (CEL has no recursion), and runs inline. A transform can (jq is Turing
//! complete and jaq has no fuel), so it runs on [`TransformPool`], a few OS threads apart from
//! the async runtime, metered: every call of a jq definition and every value `range` produces
//! costs a step; past [`MAX_TRANSFORM_STEPS`] steps or its deadline the run is stopped. jaq gives
//! no hook to return an error from there, so the meter unwinds the run's own thread
//! (`resume_unwind`, which runs no panic hook) and the pool catches it: jaq forbids `unsafe`,
//! everything the run built lives on that thread and is dropped by the unwinding.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jaq_core::data::{DataT, HasLut};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{Fun, v};
use jaq_core::{Compiler, Ctx, Cv, Exn, Native, ValXs, Vars};
use jaq_json::Val;
use tokio::sync::{mpsc, oneshot};

use crate::metric_names;

/// Steps (calls of jq definitions, values `range` produced) one transform run may take.
pub const MAX_TRANSFORM_STEPS: u64 = 1_000_000;

/// Largest transform output, in bytes of JSON: at least this, or twice the input.
pub const MIN_TRANSFORM_OUTPUT_BYTES: usize = 1 << 20;

/// Headers a transform may set at most, and the longest value of one.
pub const MAX_TRANSFORM_HEADERS: usize = 16;
const MAX_HEADER_VALUE_BYTES: usize = 1024;

/// Longest error text kept (in the dead letter, the dry run's answer).
pub const MAX_ERROR_CHARS: usize = 500;

/// Why a program does not compile: what and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(String);

/// What a filter makes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOutcome {
    /// The expression is `true`.
    Match,
    /// The expression is `false`.
    NoMatch,
    /// The expression could not be evaluated to a bool (a missing field, a type mismatch):
    /// treated as no match, and counted.
    Error(String),
}

impl FilterOutcome {
    /// Whether the route applies.
    pub fn matched(&self) -> bool {
        matches!(self, FilterOutcome::Match)
    }
}

/// What a filter sees of one event.
#[derive(Debug, Clone)]
pub struct FilterInput<'a> {
    /// The body as JSON; `Null` when the body is not JSON.
    pub body: &'a serde_json::Value,
    /// The stored request headers (names lower case), as ingest kept them (redacted ones
    /// `<redacted>`): the stored `[[name, value], …]` array.
    pub headers_json: &'a str,
    /// The source's name.
    pub source: &'a str,
    /// The event type, `null` when none.
    pub event_type: Option<&'a str>,
}

/// A compiled `filter`.
pub struct Filter {
    program: cel::Program,
    text: String,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.text).finish()
    }
}

/// Parses a body for a filter: JSON, or `Null` when it is not JSON (documented).
pub fn body_for_filter(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// The stored headers as a CEL map (name → value; the last of repeated names wins).
fn headers_map(headers_json: &str) -> BTreeMap<String, String> {
    let pairs: Vec<(String, String)> = serde_json::from_str(headers_json).unwrap_or_default();
    pairs.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect()
}

impl Filter {
    /// Compiles a CEL expression (bounded by the caller).
    ///
    /// # Errors
    ///
    /// [`CompileError`] with the position.
    pub fn compile(text: &str) -> Result<Filter, CompileError> {
        if let Err(message) = inlet_shared::config::check_program_bounds(text) {
            return Err(CompileError(message));
        }
        let program = cel::Program::compile(text).map_err(|errors| {
            let described: Vec<String> =
                errors.errors.iter().map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1 + 1, e.msg)).collect();
            CompileError(described.join("; "))
        })?;
        Ok(Filter { program, text: text.to_owned() })
    }

    /// Evaluates the filter for one event.
    pub fn evaluate(&self, input: &FilterInput<'_>) -> FilterOutcome {
        let mut context = cel::Context::default();
        let body = match cel::to_value(input.body) {
            Ok(body) => body,
            Err(error) => return FilterOutcome::Error(bounded(&format!("body: {error}"))),
        };
        context.add_variable_from_value("body", body);
        let headers = match cel::to_value(headers_map(input.headers_json)) {
            Ok(headers) => headers,
            Err(error) => return FilterOutcome::Error(bounded(&format!("headers: {error}"))),
        };
        context.add_variable_from_value("headers", headers);
        context.add_variable_from_value("source", input.source.to_owned());
        match input.event_type {
            Some(event_type) => context.add_variable_from_value("type", event_type.to_owned()),
            None => context.add_variable_from_value("type", cel::Value::Null),
        }
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(true)) => FilterOutcome::Match,
            Ok(cel::Value::Bool(false)) => FilterOutcome::NoMatch,
            Ok(other) => FilterOutcome::Error(bounded(&format!("the result is not a bool: {other:?}"))),
            Err(error) => FilterOutcome::Error(bounded(&error.to_string())),
        }
    }
}

/// What a transform made of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformOutput {
    /// The new body (JSON text).
    pub body: Vec<u8>,
    /// Headers to send besides Inlet's own (names lower case).
    pub headers: Vec<(String, String)>,
}

/// Why a transform run failed (the text is bounded and shown to operators).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The body is not JSON.
    #[error("the body is not JSON")]
    NotJson,
    /// The program raised an error, produced no output or more than one.
    #[error("{0}")]
    Program(String),
    /// Stopped at its deadline.
    #[error("stopped after {0:?}: the program ran past worker.transform_timeout")]
    TimedOut(Duration),
    /// Stopped after [`MAX_TRANSFORM_STEPS`] steps.
    #[error("stopped after {MAX_TRANSFORM_STEPS} steps")]
    TooManySteps,
    /// The output is larger than allowed.
    #[error("the output is larger than {0} bytes")]
    TooLarge(usize),
    /// The output's `headers` are not what is allowed.
    #[error("{0}")]
    Headers(String),
    /// The pool is shutting down.
    #[error("the transform pool is shut down")]
    PoolClosed,
}

impl TransformError {
    /// The metric label (closed set).
    pub fn label(&self) -> &'static str {
        match self {
            TransformError::NotJson => "not_json",
            TransformError::Program(_) | TransformError::Headers(_) => "error",
            TransformError::TimedOut(_) | TransformError::TooManySteps => "stopped",
            TransformError::TooLarge(_) => "too_large",
            TransformError::PoolClosed => "shut_down",
        }
    }
}

/// The meter of one transform run: steps taken and the deadline.
struct Meter {
    steps: Cell<u64>,
    started: Instant,
    deadline: Instant,
}

/// Why the meter stopped a run: the payload it unwinds with.
enum Stopped {
    Deadline(Duration),
    Steps,
}

impl Meter {
    fn tick(&self) {
        let steps = self.steps.get() + 1;
        self.steps.set(steps);
        if steps > MAX_TRANSFORM_STEPS {
            resume_unwind(Box::new(Stopped::Steps));
        }
        // Reading the clock every step would cost more than most steps.
        if steps.is_multiple_of(256) {
            let now = Instant::now();
            if now >= self.deadline {
                resume_unwind(Box::new(Stopped::Deadline(now - self.started)));
            }
        }
    }
}

/// jaq's data for a metered run: the compiled program and the run's meter.
struct Metered;

/// What every definition call clones: ticking there meters recursion (`def f: f; f`).
struct MeteredData<'a> {
    lut: &'a jaq_core::Lut<Metered>,
    meter: &'a Meter,
}

impl Clone for MeteredData<'_> {
    fn clone(&self) -> Self {
        self.meter.tick();
        MeteredData { lut: self.lut, meter: self.meter }
    }
}

impl DataT for Metered {
    type V<'a> = Val;
    type Data<'a> = MeteredData<'a>;
}

impl<'a> HasLut<'a, Metered> for MeteredData<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<Metered> {
        self.lut
    }
}

/// `range/3`, metered per value (jaq's own produces values without calling anything).
fn metered_range(mut cv: Cv<'_, Metered>) -> ValXs<'_, Val> {
    use std::cmp::Ordering;
    let by = cv.0.pop_var();
    let upto = cv.0.pop_var();
    let from = cv.0.pop_var();
    let meter = cv.0.data().meter;
    let direction = by.partial_cmp(&Val::from(0isize)).unwrap_or(Ordering::Equal);
    let mut next = Some(from);
    Box::new(std::iter::from_fn(move || {
        let current = next.take()?;
        let more = match direction {
            Ordering::Greater => current < upto,
            Ordering::Less => current > upto,
            Ordering::Equal => current != upto,
        };
        if !more {
            return None;
        }
        meter.tick();
        match current.clone() + by.clone() {
            Ok(following) => next = Some(following),
            Err(error) => return Some(Err(Exn::from(error))),
        }
        Some(Ok(current))
    }))
}

fn refuse_env(_: Cv<'_, Metered>) -> ValXs<'_, Val> {
    Box::new(std::iter::once(Err(Exn::from(jaq_core::Error::str("env is not available in a transform")))))
}

fn nothing(_: Cv<'_, Metered>) -> ValXs<'_, Val> {
    Box::new(std::iter::empty())
}

/// The native filters a transform may call: jaq's, with `range` metered, and nothing that
/// reads the worker's environment (its secrets) or writes to its stderr or log.
fn natives() -> Vec<Fun<Metered>> {
    let replaced = ["range", "env", "stderr_empty", "debug_empty"];
    let mut funs: Vec<Fun<Metered>> = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !replaced.contains(name))
        .collect();
    // Closures, not the functions themselves: the fn pointer type names the value type through
    // `DataT`, which only a closure's body sees normalised.
    funs.push(("range", v(3), Native::new(|cv| metered_range(cv))));
    funs.push(("env", v(0), Native::new(|cv| refuse_env(cv))));
    funs.push(("stderr_empty", v(0), Native::new(|cv| nothing(cv))));
    funs.push(("debug_empty", v(0), Native::new(|cv| nothing(cv))));
    funs
}

/// A compiled `transform`.
pub struct Transform {
    filter: jaq_core::compile::Filter<Native<Metered>>,
    text: String,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Transform").field(&self.text).finish()
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Transform {
    /// Compiles a jq program (bounded by the caller).
    ///
    /// # Errors
    ///
    /// [`CompileError`] with the position.
    pub fn compile(text: &str) -> Result<Transform, CompileError> {
        if let Err(message) = inlet_shared::config::check_program_bounds(text) {
            return Err(CompileError(message));
        }
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let position = |part: &str| {
            let span = jaq_core::load::span(text, part);
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}")
        };
        let modules = loader.load(&arena, File { code: text, path: () }).map_err(|errors| {
            let described: Vec<String> = errors
                .iter()
                .map(|(_, error)| match error {
                    jaq_core::load::Error::Io(items) => {
                        items.iter().map(|(what, why)| format!("{what}: {why}")).collect::<Vec<_>>().join("; ")
                    }
                    jaq_core::load::Error::Lex(items) => items
                        .iter()
                        .map(|(expected, at)| format!("{}: expected {}", position(at), expected.as_str()))
                        .collect::<Vec<_>>()
                        .join("; "),
                    jaq_core::load::Error::Parse(items) => items
                        .iter()
                        .map(|(expected, at)| format!("{}: expected {}", position(at), expected.as_str()))
                        .collect::<Vec<_>>()
                        .join("; "),
                })
                .collect();
            CompileError(described.join("; "))
        })?;
        let filter = Compiler::default().with_funs(natives()).compile(modules).map_err(|errors| {
            let described: Vec<String> = errors
                .iter()
                .flat_map(|(_, undefined)| undefined.iter())
                .map(|(name, what)| format!("{}: undefined {} `{name}`", position(name), what.as_str()))
                .collect();
            CompileError(described.join("; "))
        })?;
        Ok(Transform { filter, text: text.to_owned() })
    }

    /// The program's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Runs the program on `body` on the calling thread, stopped at `timeout` or after
    /// [`MAX_TRANSFORM_STEPS`] steps. Meant for [`TransformPool`]'s threads.
    ///
    /// # Errors
    ///
    /// [`TransformError`].
    pub fn run_here(&self, body: &[u8], timeout: Duration) -> Result<TransformOutput, TransformError> {
        let input = jaq_json::read::parse_single(body).map_err(|_| TransformError::NotJson)?;
        let started = Instant::now();
        let meter = Meter { steps: Cell::new(0), started, deadline: started + timeout };
        let limit = MIN_TRANSFORM_OUTPUT_BYTES.max(body.len().saturating_mul(2));
        let run = catch_unwind(AssertUnwindSafe(|| {
            let data = MeteredData { lut: &self.filter.lut, meter: &meter };
            let context = Ctx::<Metered>::new(data, Vars::new([]));
            let mut outputs = self.filter.id.run((context, input)).map(jaq_core::unwrap_valr);
            let first = match outputs.next() {
                None => return Err(TransformError::Program("the program produced no output".into())),
                Some(Err(error)) => return Err(TransformError::Program(bounded(&error.to_string()))),
                Some(Ok(value)) => value,
            };
            if outputs.next().is_some() {
                return Err(TransformError::Program("the program produced more than one output".into()));
            }
            Ok(first.to_string())
        }));
        let text = match run {
            Ok(result) => result?,
            Err(payload) => {
                return Err(match payload.downcast::<Stopped>() {
                    Ok(stopped) => match *stopped {
                        Stopped::Deadline(after) => TransformError::TimedOut(after),
                        Stopped::Steps => TransformError::TooManySteps,
                    },
                    // A real bug in jaq: not ours to swallow.
                    Err(payload) => resume_unwind(payload),
                });
            }
        };
        if text.len() > limit {
            return Err(TransformError::TooLarge(limit));
        }
        split_output(&text)
    }
}

/// The output's shape: `{"body": …, "headers": {…}}` (exactly these two keys) sets headers;
/// anything else is the body itself.
fn split_output(text: &str) -> Result<TransformOutput, TransformError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| TransformError::Program(bounded(&format!("output: {e}"))))?;
    let serde_json::Value::Object(object) = &value else {
        return Ok(TransformOutput { body: text.as_bytes().to_vec(), headers: Vec::new() });
    };
    if object.len() != 2 || !object.contains_key("body") || !object.contains_key("headers") {
        return Ok(TransformOutput { body: text.as_bytes().to_vec(), headers: Vec::new() });
    }
    let serde_json::Value::Object(headers) = &object["headers"] else {
        return Err(TransformError::Headers("`headers` must be an object of strings".into()));
    };
    if headers.len() > MAX_TRANSFORM_HEADERS {
        return Err(TransformError::Headers(format!("at most {MAX_TRANSFORM_HEADERS} headers may be set")));
    }
    let mut set = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let serde_json::Value::String(value) = value else {
            return Err(TransformError::Headers(bounded(&format!("header `{name}`: the value must be a string"))));
        };
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(TransformError::Headers(bounded(&format!("`{name}` is not a header name"))));
        }
        if is_reserved_header(&name) {
            return Err(TransformError::Headers(bounded(&format!("header `{name}` is set by Inlet"))));
        }
        if value.len() > MAX_HEADER_VALUE_BYTES || http::HeaderValue::from_str(value).is_err() {
            return Err(TransformError::Headers(bounded(&format!(
                "header `{name}`: the value is not a header value of at most {MAX_HEADER_VALUE_BYTES} bytes"
            ))));
        }
        set.push((name, value.clone()));
    }
    let body = object["body"].to_string().into_bytes();
    Ok(TransformOutput { body, headers: set })
}

/// Headers Inlet sets itself, which a transform may not: the signature, the delivery's
/// identity, the framing.
fn is_reserved_header(name: &str) -> bool {
    name.starts_with("inlet-")
        || name.starts_with("webhook-")
        || name.starts_with("traceparent")
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "transfer-encoding"
                | "host"
                | "connection"
                | "user-agent"
                | "idempotency-key"
        )
}

/// At most [`MAX_ERROR_CHARS`] characters of `text`.
pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// One run for the pool.
struct Job {
    transform: Arc<Transform>,
    body: bytes::Bytes,
    answer: oneshot::Sender<Result<TransformOutput, TransformError>>,
}

/// A few OS threads running transforms, so a slow or runaway program never holds a thread of
/// the async runtime. Jobs wait in a bounded queue (callers wait for room: back-pressure).
#[derive(Clone)]
pub struct TransformPool {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl std::fmt::Debug for TransformPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformPool").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl TransformPool {
    /// Starts `threads` threads; each run may take `timeout`. The threads end when every
    /// handle of the pool is dropped.
    ///
    /// # Errors
    ///
    /// The OS refused a thread.
    pub fn start(threads: usize, timeout: Duration) -> std::io::Result<TransformPool> {
        let (jobs, queue) = mpsc::channel::<Job>(threads.max(1) * 16);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new().name(format!("inlet-transform-{index}")).spawn(move || {
                loop {
                    // One thread waits at the queue at a time; the others wait for the lock.
                    let job = match queue.lock() {
                        Ok(mut queue) => queue.blocking_recv(),
                        Err(_) => None,
                    };
                    let Some(job) = job else { break };
                    let result = job.transform.run_here(&job.body, timeout);
                    let _ = job.answer.send(result);
                }
            })?;
        }
        Ok(TransformPool { jobs, timeout })
    }

    /// Runs `transform` on `body` on the pool; counts the outcome.
    ///
    /// # Errors
    ///
    /// [`TransformError`].
    pub async fn run(&self, transform: Arc<Transform>, body: bytes::Bytes) -> Result<TransformOutput, TransformError> {
        let (answer, answered) = oneshot::channel();
        let started = Instant::now();
        let result = match self.jobs.send(Job { transform, body, answer }).await {
            Ok(()) => answered.await.unwrap_or(Err(TransformError::PoolClosed)),
            Err(_) => Err(TransformError::PoolClosed),
        };
        metric_names::transform_run(result.as_ref().err().map(TransformError::label), started.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str, body: &str, headers: &str, event_type: Option<&str>) -> FilterOutcome {
        let body = body_for_filter(body.as_bytes());
        Filter::compile(text).unwrap().evaluate(&FilterInput {
            body: &body,
            headers_json: headers,
            source: "github",
            event_type,
        })
    }

    #[test]
    fn filters_see_body_headers_source_and_type() {
        let body = r#"{"ref":"refs/heads/main","data":{"object":{"amount":1500}}}"#;
        let headers = r#"[["X-GitHub-Event","push"]]"#;
        let expression =
            r#"body.data.object.amount > 1000 && headers["x-github-event"] == "push" && source == "github""#;
        assert_eq!(filter(expression, body, headers, Some("push")), FilterOutcome::Match);
        assert_eq!(filter("body.data.object.amount > 2000", body, headers, None), FilterOutcome::NoMatch);
        assert_eq!(filter(r#"type == "push""#, body, headers, Some("push")), FilterOutcome::Match);
        assert_eq!(filter("type == null", body, headers, None), FilterOutcome::Match);
        assert_eq!(filter(r#"body.ref.endsWith("/main")"#, body, headers, None), FilterOutcome::Match);
    }

    #[test]
    fn missing_fields_non_json_bodies_and_non_bools_are_no_match() {
        let outcome = filter("body.data.missing > 1", r#"{"data":{}}"#, "[]", None);
        assert!(matches!(outcome, FilterOutcome::Error(_)), "{outcome:?}");
        assert!(!outcome.matched());
        assert_eq!(filter("body == null", "not json {", "[]", None), FilterOutcome::Match);
        assert!(matches!(filter("body.a", "not json", "[]", None), FilterOutcome::Error(_)));
        assert!(matches!(filter("1 + 1", "{}", "[]", None), FilterOutcome::Error(_)));
        // `has` tells a missing field apart without an error.
        assert_eq!(filter("has(body.data.missing)", r#"{"data":{}}"#, "[]", None), FilterOutcome::NoMatch);
    }

    #[test]
    fn bad_filters_are_refused_with_their_position() {
        let error = Filter::compile("body.amount >").unwrap_err().to_string();
        assert!(error.contains("line 1, column"), "{error}");
        let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        assert!(Filter::compile(&deep).unwrap_err().to_string().contains("deeper than 32"));
        assert!(Filter::compile(&"1 + ".repeat(2000)).unwrap_err().to_string().contains("at most 4096"));
    }

    fn transform(program: &str, body: &str) -> Result<TransformOutput, TransformError> {
        Transform::compile(program).unwrap().run_here(body.as_bytes(), Duration::from_secs(2))
    }

    #[test]
    fn transforms_reshape_the_body_and_may_set_headers() {
        let out = transform("{text: \"pushed to \\(.ref)\"}", r#"{"ref":"main"}"#).unwrap();
        assert_eq!(out.body, br#"{"text":"pushed to main"}"#);
        assert!(out.headers.is_empty());
        let out = transform(r#"{body: {n: .n}, headers: {"X-Kind": "test"}}"#, r#"{"n":1}"#).unwrap();
        assert_eq!(out.body, br#"{"n":1}"#);
        assert_eq!(out.headers, [("x-kind".to_owned(), "test".to_owned())]);
        assert!(matches!(
            transform(r#"{body: 1, headers: {"webhook-id": "x"}}"#, "{}"),
            Err(TransformError::Headers(_))
        ));
        assert_eq!(transform(".", "not json"), Err(TransformError::NotJson));
        assert!(matches!(transform("error(\"no\")", "{}"), Err(TransformError::Program(_))));
        assert!(matches!(transform("empty", "{}"), Err(TransformError::Program(_))));
        assert!(matches!(transform("1, 2", "{}"), Err(TransformError::Program(_))));
        assert!(matches!(transform("env", "{}"), Err(TransformError::Program(_))));
    }

    #[test]
    fn runaway_transforms_are_stopped() {
        for program in ["def f: f; f", "[repeat(.)]", "[range(1e9)]", "last(range(1e12))"] {
            let started = Instant::now();
            let result = Transform::compile(program).unwrap().run_here(b"{}", Duration::from_millis(200));
            assert!(
                matches!(result, Err(TransformError::TimedOut(_) | TransformError::TooManySteps)),
                "{program}: {result:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(3), "{program} took {:?}", started.elapsed());
        }
        // The step bound alone stops a run whose deadline is far away.
        let result = Transform::compile("[range(1e9)]").unwrap().run_here(b"{}", Duration::from_secs(600));
        assert_eq!(result, Err(TransformError::TooManySteps));
    }

    #[test]
    fn bad_transforms_are_refused_with_their_position() {
        let error = Transform::compile(".a |\n  {").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        let error = Transform::compile("nosuchthing(1)").unwrap_err().to_string();
        assert!(error.contains("line 1, column 1") && error.contains("nosuchthing"), "{error}");
    }

    #[test]
    fn transforms_cannot_read_the_environment() {
        assert!(Transform::compile("$ENV").is_err(), "$ENV is not defined");
        assert!(matches!(transform("env", "{}"), Err(TransformError::Program(_))));
        assert_eq!(transform("debug | stderr | .a", r#"{"a":1}"#).unwrap().body, b"1");
    }

    /// Every `filter = '''…'''` and `transform = '''…'''` of docs/routing.md, in order.
    fn documented(key: &str) -> Vec<String> {
        let doc = include_str!("../../docs/routing.md");
        let opening = format!("{key} = '''");
        doc.split(opening.as_str()).skip(1).map(|rest| rest.split("'''").next().unwrap().to_owned()).collect()
    }

    #[test]
    fn the_examples_in_docs_routing_work() {
        let filters = documented("filter");
        let transforms = documented("transform");
        assert_eq!((filters.len(), transforms.len()), (3, 3), "Stripe, GitHub, Shopify");
        let cases = [
            (
                "stripe",
                Some("payment_intent.succeeded"),
                "[]",
                serde_json::json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {
                    "id": "pi_1", "customer": "cus_1", "amount": 250_000, "currency": "usd"}}}),
                serde_json::json!({"payment": "pi_1", "customer": "cus_1", "amount": 2500.0, "currency": "USD"}),
                vec![],
            ),
            (
                "github",
                Some("push"),
                r#"[["x-github-event","push"]]"#,
                serde_json::json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/api"},
                    "pusher": {"name": "ada"}, "commits": [{"id": "0123456789abcdef",
                    "url": "https://github.com/acme/api/commit/0123456", "message": "Fix the build\n\nDetails"}]}),
                serde_json::json!({"text": "ada pushed 1 commit(s) to acme/api", "blocks": [{"type": "section",
                    "text": {"type": "mrkdwn", "text": "<https://github.com/acme/api/commit/0123456|0123456> Fix the build"}}]}),
                vec![],
            ),
            (
                "shopify",
                Some("orders/create"),
                "[]",
                serde_json::json!({"id": 820_982_911_946_154_508_i64, "name": "#1001", "email": "a@example.com",
                    "financial_status": "paid", "total_price": "59.00",
                    "line_items": [{"sku": "SKU1", "quantity": 2, "price": "29.50"}]}),
                serde_json::json!({"order": "#1001", "email": "a@example.com", "total": "59.00",
                    "items": [{"sku": "SKU1", "quantity": 2}]}),
                vec![("x-shopify-order".to_owned(), "820982911946154508".to_owned())],
            ),
        ];
        for ((filter_text, transform_text), (source, event_type, headers, body, expected, expected_headers)) in
            filters.iter().zip(&transforms).zip(cases)
        {
            let filter = Filter::compile(filter_text).unwrap();
            let input = FilterInput { body: &body, headers_json: headers, source, event_type };
            assert_eq!(filter.evaluate(&input), FilterOutcome::Match, "{source}: {filter_text}");
            let mut other = body.clone();
            other["data"] = serde_json::json!(null);
            other["ref"] = serde_json::json!("refs/heads/dev");
            other["financial_status"] = serde_json::json!("pending");
            let input = FilterInput { body: &other, headers_json: headers, source, event_type };
            assert!(!filter.evaluate(&input).matched(), "{source}: a non-matching event");
            let output = Transform::compile(transform_text)
                .unwrap()
                .run_here(body.to_string().as_bytes(), Duration::from_secs(2))
                .unwrap();
            let produced: serde_json::Value = serde_json::from_slice(&output.body).unwrap();
            assert_eq!(produced, expected, "{source}");
            assert_eq!(output.headers, expected_headers, "{source}");
        }
    }

    #[tokio::test]
    async fn the_pool_runs_transforms_off_the_runtime() {
        let pool = TransformPool::start(2, Duration::from_millis(200)).unwrap();
        let looping = Arc::new(Transform::compile("def f: f; f").unwrap());
        let fine = Arc::new(Transform::compile(".a").unwrap());
        let (stopped, ok) = tokio::join!(
            pool.run(looping, bytes::Bytes::from_static(b"{}")),
            pool.run(fine, bytes::Bytes::from_static(br#"{"a":[1]}"#))
        );
        assert!(matches!(stopped, Err(TransformError::TimedOut(_) | TransformError::TooManySteps)));
        assert_eq!(ok.unwrap().body, b"[1]");
    }
}
