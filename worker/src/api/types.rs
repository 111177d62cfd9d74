//! GraphQL object, input and enum types, the rows they are read from, and the SQL filters.

use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Result, SimpleObject};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::types::Value;

use super::error::ApiError;
use super::loaders::{AttemptsByDelivery, ContentBudget, DeliveriesByEvent, EventsById, Reads};
use super::services;
use crate::store::{ApiTokenRow, LinkedAccountRow};

/// Complexity of one event's `content`: a fifth of the limit, so one answer holds at most four
/// (a page of events with their contents is refused before anything is read).
pub const CONTENT_COMPLEXITY: usize = super::schema::MAX_COMPLEXITY / 5;

/// Page size when `first` is not given, and the largest allowed.
pub const DEFAULT_PAGE: i32 = 20;
/// Largest page.
pub const MAX_PAGE: i32 = 100;

/// Validated page size.
pub fn page_size(first: Option<i32>) -> Result<usize, ApiError> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(ApiError::Invalid(format!("first must be between 1 and {MAX_PAGE}")));
    }
    Ok(usize::try_from(first).unwrap_or(1))
}

/// Opaque cursor of a row id.
pub fn encode_cursor(rowid: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("r:{rowid}"))
}

/// Row id from an opaque cursor.
pub fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("r:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| ApiError::Invalid("malformed cursor".into()))
}

/// Pagination state of a list.
#[derive(SimpleObject, Debug, Clone)]
pub struct PageInfo {
    /// More rows after this page.
    pub has_next_page: bool,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// An event as recorded by the worker.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Event {
    #[graphql(skip)]
    pub rowid: i64,
    /// Inlet's id of the event.
    pub id: ID,
    /// Source name.
    pub source: String,
    /// The provider's event id (deduplication key).
    pub event_id: String,
    /// Event type, when the provider gives one.
    pub event_type: Option<String>,
    /// When ingest received it, Unix ms.
    pub received_at_ms: i64,
    /// Original `Content-Type`.
    pub content_type: Option<String>,
    /// `routed` or `unrouted`.
    pub route_status: String,
    /// Times the same event arrived again with the same body.
    pub duplicates: i64,
    /// Times the same event id arrived with a different body.
    pub conflicts: i64,
    /// Signature scheme that verified it.
    pub scheme: String,
}

impl Event {
    /// Columns read by [`Event::from_row`], table alias `e`.
    pub const COLUMNS: &'static str = "e.id, e.source, e.event_id, e.event_type, e.received_at_ms, e.content_type, \
                                       e.route_status, e.duplicates, e.conflicts, e.scheme";

    /// Reads a row of [`Event::COLUMNS`].
    pub fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
        let rowid: i64 = row.get(0)?;
        Ok(Event {
            rowid,
            id: ID(rowid.to_string()),
            source: row.get(1)?,
            event_id: row.get(2)?,
            event_type: row.get(3)?,
            received_at_ms: row.get(4)?,
            content_type: row.get(5)?,
            route_status: row.get(6)?,
            duplicates: row.get(7)?,
            conflicts: row.get(8)?,
            scheme: row.get(9)?,
        })
    }
}

/// The stored request: headers and body.
#[derive(SimpleObject, Debug, Clone)]
pub struct EventContent {
    /// Kept request headers, as a JSON array of `[name, value]` pairs.
    pub headers_json: String,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// Body size in bytes.
    pub body_bytes: i64,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
}

#[ComplexObject]
impl Event {
    /// Its deliveries, one per routed destination.
    #[graphql(complexity = "5 * child_complexity")]
    async fn deliveries(&self, ctx: &Context<'_>) -> Result<Vec<Delivery>> {
        let loader = ctx.data_unchecked::<DataLoader<DeliveriesByEvent>>();
        Ok(loader.load_one(self.rowid).await.map_err(|e| ApiError::Store(unwrap_arc(e)))?.unwrap_or_default())
    }

    /// Headers and body (ask for it on one event at a time). Priced high (a list of events
    /// with their contents is over the complexity limit), and one answer carries at most
    /// 8 MiB of contents beyond its first: past that, this field fails with
    /// `RESPONSE_TOO_LARGE` and nothing more is loaded.
    #[graphql(complexity = "CONTENT_COMPLEXITY + child_complexity")]
    async fn content(&self, ctx: &Context<'_>) -> Result<EventContent> {
        let rowid = self.rowid;
        ctx.data_unchecked::<Reads>().add();
        let budget = ctx.data_unchecked::<ContentBudget>().clone();
        let content = services(ctx)?
            .store
            .read(move |c| {
                // The size first: an answer over its budget never loads the body.
                let size: i64 = c.query_row(
                    "SELECT length(CAST(body AS BLOB)) + length(CAST(headers_json AS BLOB)) FROM events WHERE id = ?1",
                    [rowid],
                    |r| r.get(0),
                )?;
                if !budget.take(u64::try_from(size).unwrap_or(u64::MAX)) {
                    return Ok(None);
                }
                c.query_row("SELECT headers_json, body, body_sha256 FROM events WHERE id = ?1", [rowid], |r| {
                    let body: Vec<u8> = r.get(1)?;
                    Ok(Some(EventContent {
                        headers_json: r.get(0)?,
                        body_bytes: i64::try_from(body.len()).unwrap_or(i64::MAX),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        body_sha256: r.get(2)?,
                    }))
                })
            })
            .await
            .map_err(ApiError::from)?;
        Ok(content.ok_or(ApiError::ResponseTooLarge)?)
    }
}

/// Loader errors are shared; turn one back into an owned error for the API mapping.
pub fn unwrap_arc(error: std::sync::Arc<crate::store::StoreError>) -> crate::store::StoreError {
    std::sync::Arc::try_unwrap(error).unwrap_or(crate::store::StoreError::Join)
}

/// One (event, destination) delivery.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Delivery {
    #[graphql(skip)]
    pub event_rowid: i64,
    #[graphql(skip)]
    pub cursor_rowid: i64,
    /// Delivery id (also the `Idempotency-Key` and `webhook-id` sent).
    pub id: ID,
    /// Destination name.
    pub destination: String,
    /// `pending`, `delivered` or `dead_lettered`.
    pub status: String,
    /// Attempts made in all.
    pub attempt_count: i64,
    /// Times an operator replayed it.
    pub replays: i64,
    /// Last HTTP status from the destination.
    pub last_status_code: Option<i64>,
    /// Last error (timeouts, connection errors).
    pub last_error: Option<String>,
    /// `permanent_4xx`, `retries_exhausted` or `unknown_destination` when dead-lettered.
    pub dead_letter_reason: Option<String>,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Last change (for a dead letter: when it was dead-lettered), Unix ms.
    pub updated_at_ms: i64,
    /// Delivered, Unix ms.
    pub delivered_at_ms: Option<i64>,
    /// Next scheduled attempt, Unix ms.
    pub next_attempt_at_ms: Option<i64>,
}

impl Delivery {
    /// Columns read by [`Delivery::from_row`], table alias `d`.
    pub const COLUMNS: &'static str = "d.id, d.event_rowid, d.destination, d.status, d.attempts, d.replays, \
                                       d.last_status_code, d.last_error, d.dead_letter_reason, d.created_at_ms, \
                                       d.updated_at_ms, d.delivered_at_ms, d.next_attempt_at_ms, d.rowid";

    /// Reads a row of [`Delivery::COLUMNS`].
    pub fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
        Ok(Delivery {
            id: ID(row.get::<_, String>(0)?),
            event_rowid: row.get(1)?,
            destination: row.get(2)?,
            status: row.get(3)?,
            attempt_count: row.get(4)?,
            replays: row.get(5)?,
            last_status_code: row.get(6)?,
            last_error: row.get(7)?,
            dead_letter_reason: row.get(8)?,
            created_at_ms: row.get(9)?,
            updated_at_ms: row.get(10)?,
            delivered_at_ms: row.get(11)?,
            next_attempt_at_ms: row.get(12)?,
            cursor_rowid: row.get(13)?,
        })
    }
}

#[ComplexObject]
impl Delivery {
    /// Every attempt, oldest first.
    #[graphql(complexity = "5 * child_complexity")]
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<Attempt>> {
        let loader = ctx.data_unchecked::<DataLoader<AttemptsByDelivery>>();
        Ok(loader.load_one(self.id.to_string()).await.map_err(|e| ApiError::Store(unwrap_arc(e)))?.unwrap_or_default())
    }

    /// The event delivered.
    async fn event(&self, ctx: &Context<'_>) -> Result<Event> {
        let loader = ctx.data_unchecked::<DataLoader<EventsById>>();
        Ok(loader
            .load_one(self.event_rowid)
            .await
            .map_err(|e| ApiError::Store(unwrap_arc(e)))?
            .ok_or(ApiError::NotFound)?)
    }
}

/// One attempt to deliver.
#[derive(SimpleObject, Debug, Clone)]
pub struct Attempt {
    /// 1-based number (continues across replays).
    pub attempt: i64,
    /// Start, Unix ms.
    pub started_at_ms: i64,
    /// Latency in ms.
    pub duration_ms: i64,
    /// `delivered`, `transient` or `permanent`.
    pub outcome: String,
    /// HTTP status, if the destination answered.
    pub status_code: Option<i64>,
    /// Error (timeout, connection failed), if any.
    pub error: Option<String>,
    /// First bytes of the response body.
    pub response_snippet: Option<String>,
}

/// A page of events, newest first.
#[derive(SimpleObject, Debug)]
pub struct EventPage {
    /// The events.
    pub nodes: Vec<Event>,
    /// Pagination.
    pub page_info: PageInfo,
}

/// A page of deliveries, newest first.
#[derive(SimpleObject, Debug)]
pub struct DeliveryPage {
    /// The deliveries.
    pub nodes: Vec<Delivery>,
    /// Pagination.
    pub page_info: PageInfo,
}

/// What the events list can be narrowed by.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventStatus {
    /// Has a pending delivery.
    Pending,
    /// Has a delivered delivery.
    Delivered,
    /// Has a dead-lettered delivery.
    DeadLettered,
    /// No route matched.
    Unrouted,
}

/// Event filters (all optional, combined with AND).
#[derive(InputObject, Debug, Clone, Default)]
pub struct EventFilter {
    /// Source name.
    pub source: Option<String>,
    /// Exact event type.
    pub event_type: Option<String>,
    /// Delivery state.
    pub status: Option<EventStatus>,
    /// Received at or after, Unix ms.
    pub received_after_ms: Option<i64>,
    /// Received before, Unix ms.
    pub received_before_ms: Option<i64>,
    /// Text contained in the provider's event id.
    pub text: Option<String>,
}

/// Dead-letter filters (all optional, combined with AND); also the selection of a bulk replay.
#[derive(InputObject, Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterFilter {
    /// Destination name.
    pub destination: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Exact event type.
    pub event_type: Option<String>,
    /// `permanent_4xx`, `retries_exhausted` or `unknown_destination`.
    pub reason: Option<String>,
    /// Dead-lettered at or after, Unix ms.
    pub dead_after_ms: Option<i64>,
    /// Dead-lettered before, Unix ms.
    pub dead_before_ms: Option<i64>,
    /// Text contained in the provider's event id.
    pub text: Option<String>,
}

/// A `WHERE` clause under construction.
#[derive(Default)]
pub struct Where {
    clauses: Vec<String>,
    /// Positional parameters.
    pub params: Vec<Value>,
}

impl Where {
    /// Adds `clause` with `?` placeholders for `values`.
    pub fn add(&mut self, clause: &str, values: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.to_owned());
        self.params.extend(values);
    }

    /// `WHERE a AND b…` or an empty string.
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }
}

/// `LIKE` pattern matching `text` literally anywhere.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

impl EventFilter {
    /// The filter as SQL over `events e`.
    pub fn to_where(&self) -> Where {
        let mut w = Where::default();
        if let Some(source) = &self.source {
            w.add("e.source = ?", [Value::from(source.clone())]);
        }
        if let Some(event_type) = &self.event_type {
            w.add("e.event_type = ?", [Value::from(event_type.clone())]);
        }
        match self.status {
            Some(EventStatus::Unrouted) => w.add("e.route_status = 'unrouted'", []),
            Some(status) => {
                let label = match status {
                    EventStatus::Pending => "pending",
                    EventStatus::Delivered => "delivered",
                    _ => "dead_lettered",
                };
                w.add(
                    "EXISTS (SELECT 1 FROM deliveries x WHERE x.event_rowid = e.id AND x.status = ?)",
                    [Value::from(label.to_owned())],
                );
            }
            None => {}
        }
        if let Some(after) = self.received_after_ms {
            w.add("e.received_at_ms >= ?", [Value::from(after)]);
        }
        if let Some(before) = self.received_before_ms {
            w.add("e.received_at_ms < ?", [Value::from(before)]);
        }
        if let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) {
            w.add("e.event_id LIKE ? ESCAPE '\\'", [Value::from(contains_pattern(text))]);
        }
        w
    }
}

impl DeadLetterFilter {
    /// The filter as SQL over `deliveries d JOIN events e`.
    pub fn to_where(&self) -> Where {
        let mut w = Where::default();
        w.add("d.status = 'dead_lettered'", []);
        if let Some(destination) = &self.destination {
            w.add("d.destination = ?", [Value::from(destination.clone())]);
        }
        if let Some(source) = &self.source {
            w.add("e.source = ?", [Value::from(source.clone())]);
        }
        if let Some(event_type) = &self.event_type {
            w.add("e.event_type = ?", [Value::from(event_type.clone())]);
        }
        if let Some(reason) = &self.reason {
            w.add("d.dead_letter_reason = ?", [Value::from(reason.clone())]);
        }
        if let Some(after) = self.dead_after_ms {
            w.add("d.updated_at_ms >= ?", [Value::from(after)]);
        }
        if let Some(before) = self.dead_before_ms {
            w.add("d.updated_at_ms < ?", [Value::from(before)]);
        }
        if let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) {
            w.add("e.event_id LIKE ? ESCAPE '\\'", [Value::from(contains_pattern(text))]);
        }
        w
    }
}

/// Deliveries by state.
#[derive(SimpleObject, Debug, Clone, Default)]
pub struct Counts {
    /// Events recorded.
    pub events: i64,
    /// Events no route matched.
    pub unrouted: i64,
    /// Deliveries waiting or being retried.
    pub pending: i64,
    /// Deliveries delivered.
    pub delivered: i64,
    /// Deliveries dead-lettered.
    pub dead_lettered: i64,
}

/// A configured source.
#[derive(SimpleObject, Debug, Clone)]
pub struct Source {
    /// Name (`POST /webhooks/{name}`).
    pub name: String,
    /// Signature scheme.
    pub kind: String,
}

/// A configured destination and its live state.
#[derive(SimpleObject, Debug, Clone)]
pub struct Destination {
    /// Name.
    pub name: String,
    /// URL deliveries are POSTed to.
    pub url: String,
    /// Circuit breaker: `closed`, `open` or `half_open`.
    pub breaker_state: String,
    /// Pending deliveries.
    pub pending: i64,
    /// Dead-lettered deliveries.
    pub dead_lettered: i64,
    /// Delivered deliveries.
    pub delivered: i64,
}

/// One audit log row.
#[derive(SimpleObject, Debug, Clone)]
pub struct AuditEntry {
    /// Row id.
    pub id: ID,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Who (an email, or `token:{name}`).
    pub actor: String,
    /// What (`replay_delivery`, `bulk_replay`, `cancel_bulk_replay`, `create_api_token`, …).
    pub action: String,
    /// On what.
    pub target: String,
    /// How many.
    pub count: i64,
    /// Details.
    pub detail: Option<String>,
}

/// A page of audit rows, newest first.
#[derive(SimpleObject, Debug)]
pub struct AuditPage {
    /// The rows.
    pub nodes: Vec<AuditEntry>,
    /// Pagination.
    pub page_info: PageInfo,
}

/// The outcome of replaying one delivery.
#[derive(SimpleObject, Debug, Clone)]
pub struct ReplayResult {
    /// The delivery.
    pub delivery_id: ID,
    /// `enqueued` (this call set it back to pending, due now), `rescheduled` (it was pending
    /// and waiting for a later retry: now due at once) or `already_pending` (an attempt holds
    /// it now, or it is due already).
    pub result: String,
    /// Whether this call set the delivery back to pending.
    pub enqueued: bool,
}

/// A bulk replay job.
#[derive(SimpleObject, Debug, Clone)]
pub struct BulkReplay {
    /// Job id.
    pub id: ID,
    /// Who started it.
    pub actor: String,
    /// The filter, as JSON.
    pub filter_json: String,
    /// Effective rate cap.
    pub rate_per_second: i64,
    /// Deliveries selected.
    pub total: i64,
    /// Deliveries processed.
    pub done: i64,
    /// Deliveries actually re-queued.
    pub enqueued: i64,
    /// `running`, `finished`, `cancelled` or `failed`.
    pub status: String,
    /// Started, Unix ms.
    pub created_at_ms: i64,
    /// Ended, Unix ms.
    pub finished_at_ms: Option<i64>,
}

impl BulkReplay {
    /// Columns read by [`BulkReplay::from_row`].
    pub const COLUMNS: &'static str =
        "id, actor, filter_json, rate_per_second, total, done, enqueued, status, created_at_ms, finished_at_ms";

    /// Reads a row of [`BulkReplay::COLUMNS`].
    pub fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BulkReplay> {
        Ok(BulkReplay {
            id: ID(r.get::<_, i64>(0)?.to_string()),
            actor: r.get(1)?,
            filter_json: r.get(2)?,
            rate_per_second: r.get(3)?,
            total: r.get(4)?,
            done: r.get(5)?,
            enqueued: r.get(6)?,
            status: r.get(7)?,
            created_at_ms: r.get(8)?,
            finished_at_ms: r.get(9)?,
        })
    }
}

/// A bulk replay request's answer: the selection, and the job unless it was a dry run.
#[derive(SimpleObject, Debug, Clone)]
pub struct BulkReplayPlan {
    /// Whether nothing was done.
    pub dry_run: bool,
    /// Dead letters matching the filter.
    pub count: i64,
    /// The first few of them.
    pub sample: Vec<Delivery>,
    /// The job (absent for a dry run).
    pub job: Option<BulkReplay>,
}

/// Operator roles.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum RoleName {
    /// Reads everything.
    Viewer,
    /// Also replays.
    Operator,
    /// Also manages API tokens.
    Admin,
}

impl From<RoleName> for inlet_shared::config::Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Viewer => inlet_shared::config::Role::Viewer,
            RoleName::Operator => inlet_shared::config::Role::Operator,
            RoleName::Admin => inlet_shared::config::Role::Admin,
        }
    }
}

/// An API token (its value is shown once, at creation).
#[derive(SimpleObject, Debug, Clone)]
pub struct ApiToken {
    /// Token id.
    pub id: ID,
    /// Name (audit log actor `token:{name}`).
    pub name: String,
    /// Role.
    pub role: String,
    /// Who created it.
    pub created_by: String,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Revoked, Unix ms.
    pub revoked_at_ms: Option<i64>,
    /// Last used, Unix ms.
    pub last_used_ms: Option<i64>,
}

impl From<ApiTokenRow> for ApiToken {
    fn from(row: ApiTokenRow) -> Self {
        ApiToken {
            id: ID(row.id.0.to_string()),
            name: row.name,
            role: row.role.as_str().into(),
            created_by: row.created_by,
            created_at_ms: row.created_at.0,
            revoked_at_ms: row.revoked_at.map(|at| at.0),
            last_used_ms: row.last_used.map(|at| at.0),
        }
    }
}

/// A new API token.
#[derive(SimpleObject, Debug, Clone)]
pub struct CreatedApiToken {
    /// The token value: shown this once, stored only as a hash.
    pub token: String,
    /// Its record.
    pub api_token: ApiToken,
}

/// The caller.
#[derive(SimpleObject, Debug, Clone)]
pub struct Me {
    /// Email or `token:{name}`.
    pub actor: String,
    /// Role.
    pub role: String,
}

/// A sign-in method linked to the caller's Inlet account.
#[derive(SimpleObject, Debug, Clone)]
pub struct LinkedAccount {
    /// Link id.
    pub id: ID,
    /// `oidc` or `github`.
    pub provider: String,
    /// Email the provider gave when it was linked.
    pub email: Option<String>,
    /// Linked, Unix ms.
    pub created_at_ms: i64,
}

impl From<LinkedAccountRow> for LinkedAccount {
    fn from(row: LinkedAccountRow) -> Self {
        LinkedAccount {
            id: ID(row.id.0.to_string()),
            provider: row.provider,
            email: row.email,
            created_at_ms: row.created_at.0,
        }
    }
}
