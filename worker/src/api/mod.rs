//! The operator API: GraphQL at `POST /graphql` on the worker's main listener.
//!
//! Request rules, checked before any resolver runs, cheapest first:
//! - `POST` only (`GET` answers 405: no queries, let alone mutations, in URLs; a signed-in
//!   browser's `GET` gets the [`explorer`] page, which executes nothing itself);
//! - `Content-Type: application/json` only (`text/plain`, forms and multipart, which browsers
//!   send cross-site without a preflight, answer 415);
//! - credentials, from the headers alone: no bearer token and no session answers 401 without
//!   reading the body (nothing is answered to anonymous callers); a bearer token must be valid
//!   (401); a session cookie needs the session's CSRF token in `X-CSRF-Token` (403);
//! - one operation per request (batches answer 400), body at most 64 KiB (413);
//! - the document's cost before async-graphql validates it ([`cost`]: nesting, fragments,
//!   selections, aliases, arguments per field, directives per place, input values, and the
//!   size with fragment spreads expanded, each expansion charged its input values, memoised):
//!   400;
//! - depth and complexity limits (an event's `content` is priced so that a page of them is
//!   refused); introspection only for authenticated callers, field suggestions never;
//! - at most [`MAX_EXECUTIONS`] requests execute at once, each for at most
//!   [`EXECUTION_TIMEOUT`].
//!
//! Resolvers check the role (`viewer` reads, `operator` replays, `admin` manages tokens) and
//! map failures through [`error::ApiError`]. Each response reports `extensions.sqlReads`, the
//! number of SQL reads it took (DataLoaders keep it flat as pages grow).

pub mod cost;
mod dry_run;
mod enums;
mod error;
mod explorer;
mod loaders;
mod schema;
pub(crate) mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::{Auth, AuthError, CSRF_HEADER, Via, constant_time_eq};
use crate::deliver::Destination as RuntimeDestination;
use crate::http::{BodyError, read_bounded};
use crate::store::Store;
use error::ApiError;
use loaders::{AttemptsByDelivery, ContentBudget, DeliveriesByEvent, EventsById, Reads};
use schema::ApiSchema;

/// Largest accepted GraphQL request body: the main listener's limit.
pub const MAX_BODY_BYTES: usize = crate::http::MAX_REQUEST_BODY_BYTES;
/// Requests executing at once; more wait for a slot.
pub const MAX_EXECUTIONS: usize = 16;
/// How long a request waits for an execution slot before it is refused (503 `BUSY`).
pub const SLOT_WAIT: Duration = Duration::from_secs(10);
/// How long one execution may take (503 `TIMEOUT`).
pub const EXECUTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Deepest query accepted.
pub const MAX_DEPTH: usize = 10;
/// Highest query complexity accepted (lists count as `first × child`). Here rather than in
/// `schema`, which applies it, because `types` prices fields against it too.
pub const MAX_COMPLEXITY: usize = 5_000;

/// What resolvers use, shared by all requests.
pub struct Services {
    /// Database.
    pub store: Store,
    /// Replays.
    pub replayer: Arc<crate::replay::Replayer>,
    /// The worker's live destinations (for breaker state).
    pub destinations: Arc<HashMap<String, Arc<RuntimeDestination>>>,
    /// Configured sources.
    pub sources: Vec<types::Source>,
    /// Requests that failed verification (`None`: `quarantine.enabled = false`).
    pub quarantine: Option<Arc<crate::quarantine::Quarantine>>,
    /// Provider backfills (`[[backfill]]`).
    pub backfiller: Arc<crate::backfill::Backfiller>,
    /// Where dry runs' transforms run.
    pub transforms: crate::programs::TransformPool,
    /// The version of the routing config this worker runs (`Event.configIsCurrent`).
    pub config_version: crate::model::ConfigVersion,
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
    executions: tokio::sync::Semaphore,
    body_read_timeout: Duration,
    /// The explorer's copy of the schema, made at its first use.
    introspection: tokio::sync::OnceCell<String>,
}

impl Api {
    /// Builds the schema with its limits.
    pub fn new(auth: Arc<Auth>, services: Arc<Services>, body_read_timeout: Duration) -> Arc<Api> {
        let schema = schema::builder().data(Arc::clone(&services)).finish();
        Arc::new(Api {
            schema,
            auth,
            services,
            executions: tokio::sync::Semaphore::new(MAX_EXECUTIONS),
            body_read_timeout,
            introspection: tokio::sync::OnceCell::new(),
        })
    }
}

/// The schema in SDL (what `schemas/graphql/schema.graphql` holds).
pub fn sdl() -> String {
    schema::builder().finish().sdl()
}

/// Where the API is served.
pub const PATH: &str = "/graphql";

/// `POST /graphql`, and the explorer (`GET /graphql` from a signed-in browser).
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route(PATH, post(graphql).get(explorer::page).fallback(method_not_allowed))
        .route(&format!("{}/{{file}}", explorer::ASSETS_PATH), get(explorer::asset))
        .with_state(api)
}

/// Why a request was answered before any resolver ran: the one mapping from transport
/// refusals to HTTP statuses and `extensions.code`.
#[derive(Debug)]
enum Refusal {
    /// Not `application/json` (415).
    UnsupportedMediaType,
    /// No credentials at all (401): answered before the body is read.
    Unauthenticated,
    /// A bearer token that is unknown or revoked (401).
    BadToken,
    /// A session cookie without its CSRF token (403).
    Csrf,
    /// The database is unavailable (503).
    Unavailable,
    /// The body is not one GraphQL request as a JSON object (400).
    NotOneRequest,
    /// The body could not be read: too large (413), too slow (408) or broken (400).
    Body(BodyError),
    /// The document is malformed or would cost too much to validate (400).
    Cost(cost::CostError),
    /// Every execution slot stayed busy (503).
    Busy,
    /// Execution ran past [`EXECUTION_TIMEOUT`] (503).
    Timeout,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Unauthenticated | Refusal::BadToken => StatusCode::UNAUTHORIZED,
            Refusal::Csrf => StatusCode::FORBIDDEN,
            Refusal::Unavailable | Refusal::Busy | Refusal::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::NotOneRequest | Refusal::Cost(_) => StatusCode::BAD_REQUEST,
            Refusal::Body(error) => error.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Refusal::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Refusal::Unauthenticated | Refusal::BadToken => "UNAUTHENTICATED",
            Refusal::Csrf => "CSRF",
            Refusal::Unavailable => "UNAVAILABLE",
            Refusal::NotOneRequest => "BAD_REQUEST",
            Refusal::Body(BodyError::TooLarge) => "PAYLOAD_TOO_LARGE",
            Refusal::Body(BodyError::Timeout) => "BODY_TIMEOUT",
            Refusal::Body(BodyError::Broken) => "BAD_REQUEST",
            Refusal::Cost(error) => error.code(),
            Refusal::Busy => "BUSY",
            Refusal::Timeout => "TIMEOUT",
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::UnsupportedMediaType => "Content-Type must be application/json".into(),
            Refusal::Unauthenticated => "authentication required: a bearer token or a console session".into(),
            Refusal::BadToken => "invalid or revoked API token".into(),
            Refusal::Csrf => "missing or wrong X-CSRF-Token header".into(),
            Refusal::Unavailable => "the database is unavailable".into(),
            Refusal::NotOneRequest => "expected one GraphQL request as a JSON object".into(),
            Refusal::Body(BodyError::TooLarge) => format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            Refusal::Body(BodyError::Timeout) => "the request body did not arrive in time".into(),
            Refusal::Body(BodyError::Broken) => "cannot read the request body".into(),
            Refusal::Cost(error) => error.message(),
            Refusal::Busy => "too many API requests at once; try again in a moment".into(),
            Refusal::Timeout => "the request took too long".into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = error_body(self.status(), self.code(), &self.message());
        if self.status() == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme it wants.
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
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

async fn graphql(State(api): State<Arc<Api>>, request: Request) -> Response {
    match answer(&api, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// Cheapest checks first: headers (media type, credentials, CSRF) before the body is read, the
/// body before it is parsed, the document's cost before async-graphql validates it.
async fn answer(api: &Api, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return Err(Refusal::UnsupportedMediaType);
    }
    let principal = match api.auth.principal(&parts.headers).await {
        Ok(Some(principal)) => principal,
        // No query is meant for anonymous callers (the console asks `/auth/session`): nothing
        // of the body is read, let alone parsed.
        Ok(None) => return Err(Refusal::Unauthenticated),
        Err(AuthError::BadToken) => return Err(Refusal::BadToken),
        Err(error @ (AuthError::Store(_) | AuthError::Seal(_))) => {
            tracing::error!(%error, "cannot authenticate");
            return Err(Refusal::Unavailable);
        }
    };
    if let Via::Session { csrf_token } = &principal.via {
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !constant_time_eq(sent, csrf_token) {
            return Err(Refusal::Csrf);
        }
    }
    let body = read_bounded(body, &parts.headers, api.body_read_timeout).await.map_err(Refusal::Body)?;
    let mut request: async_graphql::Request = serde_json::from_slice(&body).map_err(|_| Refusal::NotOneRequest)?;
    let (document, _) = cost::check(&request.query).map_err(Refusal::Cost)?;
    request.set_parsed_query(document);

    let reads = Reads::default();
    let store = api.services.store.clone();
    let request = request
        .data(reads.clone())
        .data(ContentBudget::default())
        .data(DataLoader::new(DeliveriesByEvent { store: store.clone(), reads: reads.clone() }, tokio::spawn))
        .data(DataLoader::new(AttemptsByDelivery { store: store.clone(), reads: reads.clone() }, tokio::spawn))
        .data(DataLoader::new(EventsById { store, reads: reads.clone() }, tokio::spawn))
        .data(principal);
    let _slot = tokio::time::timeout(SLOT_WAIT, api.executions.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(Refusal::Busy)?;
    let mut response =
        tokio::time::timeout(EXECUTION_TIMEOUT, api.schema.execute(request)).await.map_err(|_| Refusal::Timeout)?;
    response.extensions.insert("sqlReads".into(), async_graphql::Value::from(reads.get() as u64));
    let mut http_response = axum::Json(response).into_response();
    http_response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(http_response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every query the console sends (its admin views' too) passes the cost check and the
    /// schema's depth and complexity limits (an event's `content` is priced high: the event view
    /// must still fit).
    #[tokio::test]
    async fn the_consoles_queries_pass_the_cost_check_and_the_limits() {
        let script = concat!(include_str!("../console/app.js"), include_str!("../console/admin.js"));
        let mut queries = Vec::new();
        for (open, close) in [("gql('", '\''), ("gql(`", '`'), ("= `query", '`')] {
            for (at, _) in script.match_indices(open) {
                let start = at + open.len() - if open.starts_with('=') { 5 } else { 0 };
                let rest = &script[start..];
                let end = rest.find(close).unwrap();
                queries.push(rest[..end].to_owned());
            }
        }
        assert!(queries.len() >= 15, "{queries:?}");
        let schema = super::schema::builder().finish();
        for query in queries {
            let (document, cost) = super::cost::check(&query).unwrap_or_else(|e| panic!("{query}: {e:?}"));
            assert!(cost.expanded < 100, "{query}: {cost:?}");
            let mut request = async_graphql::Request::new(query.clone());
            request.set_parsed_query(document);
            let response = schema.execute(request).await;
            for error in &response.errors {
                // Without a caller or variables, resolvers and variables fail; the limits must not.
                let message = error.message.to_ascii_lowercase();
                for limit in ["too complex", "too deep", "recursion depth", "parse", "directives"] {
                    assert!(!message.contains(limit), "{query}: {}", error.message);
                }
            }
        }
    }

    /// The audit log's "What" filter in the console offers exactly the model's audit actions.
    #[test]
    fn the_audit_actions_offered_are_the_models() {
        let names: Vec<String> =
            crate::model::AuditAction::ALL.iter().map(|a| format!("'{}'", a.as_str().to_ascii_uppercase())).collect();
        let console = include_str!("../console/app.js");
        let start = console.find("const AUDIT_ACTIONS = [").unwrap() + "const AUDIT_ACTIONS = [".len();
        let offered: Vec<&str> = console[start..start + console[start..].find(']').unwrap()]
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        assert_eq!(offered, names, "console/app.js AUDIT_ACTIONS");
    }

    /// The console's reason filter and the schema's `DeadLetterReason` enum offer exactly the
    /// model's dead-letter reasons (`unknown_destination` included: the store constructs it).
    #[test]
    fn the_dead_letter_reasons_offered_are_the_models() {
        use crate::model::DeadLetterReason;
        let names: Vec<String> = DeadLetterReason::ALL.iter().map(|r| r.as_str().to_ascii_uppercase()).collect();
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let console = include_str!("../console/app.js");
        assert!(console.contains(&format!("[{}].map((r) => h('option'", quoted.join(", "))), "console/app.js");
        let sdl = super::sdl();
        let start = sdl.find("enum DeadLetterReason {").unwrap();
        let block = &sdl[start..start + sdl[start..].find('}').unwrap()];
        let values: Vec<&str> = block
            .lines()
            .skip(1)
            .map(str::trim)
            // Enum values; descriptions are prose in `"""` blocks.
            .filter(|line| {
                !line.is_empty() && line.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        assert_eq!(values, names);
    }

    /// A bulk replay keeps its filter as the caller gave it, in the input's own field names with
    /// every field present.
    #[test]
    fn a_bulk_replays_filter_is_kept_as_given() {
        use super::enums::{DateTime, DeadLetterReason};
        use crate::model::UnixMs;
        let filter = super::types::DeadLetterFilter {
            destination: Some("sink".into()),
            reason: Some(DeadLetterReason::Permanent4xx),
            dead_after: Some(DateTime(UnixMs(5))),
            ..Default::default()
        };
        assert_eq!(
            filter.to_json(),
            r#"{"destination":"sink","source":null,"eventType":null,"reason":"PERMANENT_4XX","deadAfter":"1970-01-01T00:00:00.005Z","deadBefore":null,"text":null}"#
        );
        let selection = filter.selection();
        assert_eq!(selection.reason, Some(crate::model::DeadLetterReason::Permanent4xx));
        assert_eq!(selection.dead_after, Some(UnixMs(5)));
    }

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
