//! GraphQL object, input and enum types: made from the store's rows (`From`), and the filters
//! turned into the store's selections. The wire format (field names, strings, nullability,
//! cursors) is the API's; the store's types never reach it.

use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Result, SimpleObject};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::enums::{
    AttemptOutcome, AuditAction, BulkReplayStatus, DateTime, DeadLetterReason, DeliveryStatus, Diagnosis,
    QuarantineSlot, ReplayConfig, ReplayEffect, RouteStatus,
};
use super::error::ApiError;
use super::loaders::{AttemptsByDelivery, ContentBudget, DeliveriesByEvent, EventsById, Reads};
use super::services;
use crate::model::{DeliveryId, EventRowId};
use crate::replay::Replayed;
use crate::store::{
    ApiTokenRow, AttemptRow, AuditLogEntry, AuditSelection, BulkReplayRow, ContentRead, Cursor, DeadLetterSelection,
    DeliveryRow, EventContentRow, EventRow, EventSelection, EventStatusFilter, LinkedAccountRow, PageRequest,
    SearchHit, SearchQuery, Snippet, Totals, UserRow,
};

/// Complexity of one event's `content`: a fifth of the limit, so one answer holds at most four
/// (a page of events with their contents is refused before anything is read).
pub const CONTENT_COMPLEXITY: usize = super::MAX_COMPLEXITY / 5;

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

/// A store cursor as the API hands it out: opaque text.
pub fn encode_cursor(cursor: Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("r:{}", cursor.0))
}

/// The store cursor of an opaque cursor.
pub fn decode_cursor(cursor: &str) -> Result<Cursor, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("r:").and_then(|n| n.parse().ok()))
        .map(Cursor)
        .ok_or_else(|| ApiError::Invalid("malformed cursor".into()))
}

/// The page `first` and `after` ask for (checked in that order).
pub fn page_request(first: Option<i32>, after: Option<&str>) -> Result<PageRequest, ApiError> {
    let limit = page_size(first)?;
    let after = after.map(decode_cursor).transpose()?;
    Ok(PageRequest { after, limit })
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
    pub rowid: EventRowId,
    /// Inlet's id of the event.
    pub id: ID,
    /// Source name.
    pub source: String,
    /// The provider's event id (deduplication key).
    pub event_id: String,
    /// Event type, when the provider gives one.
    pub event_type: Option<String>,
    /// When ingest received it.
    pub received_at: DateTime,
    /// Original `Content-Type`.
    pub content_type: Option<String>,
    /// Whether a route matched.
    pub route_status: RouteStatus,
    /// Times the same event arrived again with the same body.
    pub duplicates: i64,
    /// Times the same event id arrived with a different body.
    pub conflicts: i64,
    /// Signature scheme that verified it.
    pub scheme: String,
    /// Where its body matched the list's `search` (null unless the list was searched).
    pub search_match: Option<SearchMatch>,
    /// The version of the routing config that routed it: the SHA-256 (hex) of the routes'
    /// canonical JSON (`configIsCurrent` says whether the worker runs it now). Null for an
    /// event recorded before versions were kept, or by an older worker: such an event cannot
    /// be replayed `AS_RECEIVED`.
    pub config_version: Option<String>,
}

/// Where a search matched an event's body: a snippet of the body's text around the first
/// match, with every match in it marked. Render `snippet` as text and wrap each range of
/// `highlights` in a mark (never as HTML: it is the sender's text).
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct SearchMatch {
    /// About 160 characters of the body's text.
    pub snippet: String,
    /// The parts of `snippet` that match a term, in order, not overlapping.
    pub highlights: Vec<TextRange>,
    /// The body's text goes on before the snippet.
    pub truncated_start: bool,
    /// The body's text goes on after it.
    pub truncated_end: bool,
}

/// A part of a text: offsets in UTF-16 code units, as JavaScript's `String.prototype.slice`
/// takes them (`text.slice(start, end)`).
#[derive(SimpleObject, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRange {
    /// First code unit.
    pub start: i32,
    /// One past the last.
    pub end: i32,
}

impl From<Snippet> for SearchMatch {
    fn from(snippet: Snippet) -> SearchMatch {
        // Byte offsets (on character boundaries) to UTF-16 code units.
        let utf16 = |byte: usize| i32::try_from(snippet.text[..byte].encode_utf16().count()).unwrap_or(i32::MAX);
        let highlights = snippet
            .highlights
            .iter()
            .map(|range| TextRange { start: utf16(range.start), end: utf16(range.end) })
            .collect();
        SearchMatch {
            highlights,
            snippet: snippet.text,
            truncated_start: snippet.truncated_start,
            truncated_end: snippet.truncated_end,
        }
    }
}

impl From<SearchHit> for Event {
    fn from(hit: SearchHit) -> Event {
        Event { search_match: Some(hit.snippet.into()), ..Event::from(hit.event) }
    }
}

impl From<EventRow> for Event {
    fn from(row: EventRow) -> Event {
        Event {
            rowid: row.id,
            id: ID(row.id.0.to_string()),
            source: row.source,
            event_id: row.event_id,
            event_type: row.event_type,
            received_at: DateTime(row.received_at),
            content_type: row.content_type,
            route_status: row.route_status.into(),
            duplicates: row.duplicates,
            conflicts: row.conflicts,
            scheme: row.scheme,
            search_match: None,
            config_version: row.config_version.map(|version| version.as_str().to_owned()),
        }
    }
}

/// One request header.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Its name, as received.
    pub name: String,
    /// Its value (credentials such as signatures are kept, cookies and authorization are not).
    pub value: String,
}

/// The stored request: headers and body.
#[derive(SimpleObject, Debug, Clone)]
pub struct EventContent {
    /// Kept request headers, in the order received.
    pub headers: Vec<Header>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// Body size in bytes.
    pub body_bytes: i64,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
}

impl From<EventContentRow> for EventContent {
    fn from(row: EventContentRow) -> EventContent {
        EventContent {
            headers: headers(&row.headers_json),
            body_bytes: i64::try_from(row.body.len()).unwrap_or(i64::MAX),
            body: String::from_utf8_lossy(&row.body).into_owned(),
            body_sha256: row.body_sha256,
        }
    }
}

/// The stored headers (a JSON array of `[name, value]` pairs) as the API gives them; the store
/// writes nothing else, so anything unreadable is left out rather than failing the event.
fn headers(json: &str) -> Vec<Header> {
    serde_json::from_str::<Vec<(String, String)>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

#[ComplexObject]
impl Event {
    /// Whether `configVersion` is the routing config the worker answering runs now (false when
    /// the event has none).
    async fn config_is_current(&self, ctx: &Context<'_>) -> Result<bool> {
        let current = &services(ctx)?.config_version;
        Ok(self.config_version.as_deref() == Some(current.as_str()))
    }

    /// Its deliveries: one per routed destination, and those made by replaying it to a
    /// destination (`replayToDestination`); by destination, oldest first.
    #[graphql(complexity = "5 * child_complexity")]
    async fn deliveries(&self, ctx: &Context<'_>) -> Result<Vec<Delivery>> {
        let loader = ctx.data_unchecked::<DataLoader<DeliveriesByEvent>>();
        let rows = loader.load_one(self.rowid).await.map_err(|e| ApiError::Store(unwrap_arc(e)))?;
        Ok(rows.unwrap_or_default().into_iter().map(Delivery::from).collect())
    }

    /// What `replayToDestination` would send to `destination` (a configured one): a new
    /// delivery's first attempt, whose id (`Idempotency-Key`, `Inlet-Delivery-Id`, `webhook-id`)
    /// is made when it is created. The body is this event's (`content { body }`).
    async fn request_to(&self, ctx: &Context<'_>, destination: String) -> Result<PlannedRequest> {
        if !services(ctx)?.destinations.contains_key(&destination) {
            return Err(ApiError::Invalid(format!("no destination `{destination}` is configured")).into());
        }
        let loader = ctx.data_unchecked::<DataLoader<EventsById>>();
        let event = loader.load_one(self.rowid).await.map_err(|e| ApiError::Store(unwrap_arc(e)))?;
        Ok(PlannedRequest::new(ctx, &event.ok_or(ApiError::NotFound)?, &destination, None, 1)?)
    }

    /// Headers and body (ask for it on one event at a time). Priced high (a list of events
    /// with their contents is over the complexity limit), and one answer carries at most
    /// 8 MiB of contents beyond its first: past that, this field fails with
    /// `RESPONSE_TOO_LARGE` and nothing more is loaded.
    #[graphql(complexity = "CONTENT_COMPLEXITY + child_complexity")]
    async fn content(&self, ctx: &Context<'_>) -> Result<EventContent> {
        ctx.data_unchecked::<Reads>().add();
        let budget = ctx.data_unchecked::<ContentBudget>().clone();
        // The size is priced first: an answer over its budget never loads the body.
        let content = services(ctx)?
            .store
            .event_content(self.rowid, move |size| budget.take(size))
            .await
            .map_err(ApiError::from)?;
        match content {
            ContentRead::Loaded(row) => Ok(row.into()),
            ContentRead::OverBudget => Err(ApiError::ResponseTooLarge.into()),
        }
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
    pub event_rowid: EventRowId,
    /// Delivery id (also the `Idempotency-Key` and `webhook-id` sent).
    pub id: ID,
    /// Destination name.
    pub destination: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made in all.
    pub attempt_count: i64,
    /// Times an operator replayed it.
    pub replays: i64,
    /// Last HTTP status from the destination.
    pub last_status_code: Option<i64>,
    /// Last error (timeouts, connection errors).
    pub last_error: Option<String>,
    /// Why, when dead-lettered.
    pub dead_letter_reason: Option<DeadLetterReason>,
    /// Created.
    pub created_at: DateTime,
    /// Last change (for a dead letter: when it was dead-lettered).
    pub updated_at: DateTime,
    /// Delivered.
    pub delivered_at: Option<DateTime>,
    /// Next scheduled attempt.
    pub next_attempt_at: Option<DateTime>,
    /// Who dismissed it, when and why: set while it is `DISMISSED`.
    pub dismissal: Option<Dismissal>,
    /// For a delivery made by `replayToDestination` from a delivery: that delivery (of the same
    /// event). Null otherwise.
    pub replay_of: Option<ID>,
    /// For a delivery made by `replayToDestination`: who asked (`createdAt` says when). Null for
    /// the deliveries the routes made when the event was recorded.
    pub created_by: Option<String>,
    /// Its ordering key (the value of its route's `ordering_key` in the event's body; a value
    /// over 128 bytes as `sha256:<hex>`): the destination gets the deliveries of one key one at
    /// a time, in receipt order. Null when unordered.
    pub ordering_key: Option<String>,
    /// Pending, and waiting for an earlier delivery of its key to this destination: one still
    /// pending, or a dead letter that blocks the key (`ordering_on_dead_letter = "block"`).
    pub waiting_for_earlier: bool,
    /// Which routing config its attempts use: `CURRENT` (every routed delivery, and replays
    /// with `config: CURRENT`) or `AS_RECEIVED` (a replay that asked for it).
    pub replay_config: ReplayConfig,
    /// With `AS_RECEIVED`: the config version whose transform its attempts run (its event's).
    /// Null with `CURRENT`.
    pub config_version: Option<String>,
}

/// A dead letter's dismissal: resolved by an operator without delivering it.
#[derive(SimpleObject, Debug, Clone)]
pub struct Dismissal {
    /// Who (an email, or `token:{name}`).
    pub by: String,
    /// When.
    pub at: DateTime,
    /// Why, if they said.
    pub note: Option<String>,
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Delivery {
        Delivery {
            id: ID(row.id.into_string()),
            event_rowid: row.event,
            destination: row.destination,
            status: row.status.into(),
            attempt_count: row.attempts,
            replays: row.replays,
            last_status_code: row.last_status_code.map(i64::from),
            last_error: row.last_error,
            dead_letter_reason: row.dead_letter_reason.map(Into::into),
            created_at: DateTime(row.created_at),
            updated_at: DateTime(row.updated_at),
            delivered_at: row.delivered_at.map(DateTime),
            next_attempt_at: row.next_attempt_at.map(DateTime),
            dismissal: row.dismissal.map(|d| Dismissal { by: d.by, at: DateTime(d.at), note: d.note }),
            replay_of: row.replay_of.map(|id| ID(id.into_string())),
            created_by: row.created_by,
            ordering_key: row.ordering_key.map(|key| key.as_str().to_owned()),
            waiting_for_earlier: row.waits_for_earlier,
            replay_config: if row.config_version.is_some() { ReplayConfig::AsReceived } else { ReplayConfig::Current },
            config_version: row.config_version.map(|version| version.as_str().to_owned()),
        }
    }
}

#[ComplexObject]
impl Delivery {
    /// Every attempt, oldest first.
    #[graphql(complexity = "5 * child_complexity")]
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<Attempt>> {
        let loader = ctx.data_unchecked::<DataLoader<AttemptsByDelivery>>();
        let id = DeliveryId::from_stored(self.id.to_string());
        let rows = loader.load_one(id).await.map_err(|e| ApiError::Store(unwrap_arc(e)))?;
        Ok(rows.unwrap_or_default().into_iter().map(Attempt::from).collect())
    }

    /// The event delivered.
    async fn event(&self, ctx: &Context<'_>) -> Result<Event> {
        let loader = ctx.data_unchecked::<DataLoader<EventsById>>();
        let row = loader.load_one(self.event_rowid).await.map_err(|e| ApiError::Store(unwrap_arc(e)))?;
        Ok(row.ok_or(ApiError::NotFound)?.into())
    }

    /// The request its next attempt sends: after a replay, the first attempt of the new
    /// schedule (what the console shows before it replays). The body is the event's, byte for
    /// byte (`event { content { body } }`).
    async fn next_request(&self, ctx: &Context<'_>) -> Result<PlannedRequest> {
        let loader = ctx.data_unchecked::<DataLoader<EventsById>>();
        let event = loader.load_one(self.event_rowid).await.map_err(|e| ApiError::Store(unwrap_arc(e)))?;
        let event = event.ok_or(ApiError::NotFound)?;
        // The attempts table numbers on across replays: the next one is the count so far + 1.
        Ok(PlannedRequest::new(ctx, &event, &self.destination, Some(self.id.as_str()), self.attempt_count + 1)?)
    }
}

/// A request Inlet sends, or would send: to whom, and with which headers. The body is the
/// event's, byte for byte.
#[derive(SimpleObject, Debug, Clone)]
pub struct PlannedRequest {
    /// Destination name.
    pub destination: String,
    /// The URL it is POSTed to (without user info or query string); null when the destination
    /// is no longer configured.
    pub url: Option<String>,
    /// Its `Inlet-Delivery-Attempt`.
    pub attempt: i64,
    /// Its headers, in the order sent. `webhook-timestamp` and `webhook-signature` are made as
    /// it is sent (signed with the destination's secret, never shown), and the delivery id of
    /// a delivery not created yet when it is created: their values are null.
    pub headers: Vec<PlannedHeader>,
}

/// One header of a [`PlannedRequest`].
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct PlannedHeader {
    /// Its name.
    pub name: String,
    /// Its value; null when it is made later (see `PlannedRequest.headers`).
    pub value: Option<String>,
}

impl PlannedRequest {
    /// What delivery `delivery_id` of `event` sends to `destination` as attempt `attempt`
    /// (`None`: a delivery not created yet), from the same code that sends it.
    pub fn new(
        ctx: &Context<'_>,
        event: &EventRow,
        destination: &str,
        delivery_id: Option<&str>,
        attempt: i64,
    ) -> Result<PlannedRequest, ApiError> {
        let configured = services(ctx)?.destinations.get(destination);
        let outgoing = crate::deliver::Outgoing {
            delivery_id,
            source: &event.source,
            event_id: &event.event_id,
            event_type: event.event_type.as_deref(),
            content_type: event.content_type.as_deref(),
            received_at: event.received_at,
        };
        let headers = outgoing
            .headers(attempt)
            .into_iter()
            .map(|(name, value)| PlannedHeader { name: name.to_owned(), value })
            .collect();
        Ok(PlannedRequest {
            destination: destination.to_owned(),
            url: configured.map(|d| super::schema::redact_url(&d.config.url)),
            attempt,
            headers,
        })
    }
}

/// One attempt to deliver.
#[derive(SimpleObject, Debug, Clone)]
pub struct Attempt {
    /// 1-based number (continues across replays).
    pub attempt: i64,
    /// Started.
    pub started_at: DateTime,
    /// Latency in ms.
    pub duration_ms: i64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// HTTP status, if the destination answered.
    pub status_code: Option<i64>,
    /// Error (timeout, connection failed), if any.
    pub error: Option<String>,
    /// First bytes of the response body.
    pub response_snippet: Option<String>,
}

impl From<AttemptRow> for Attempt {
    fn from(row: AttemptRow) -> Attempt {
        Attempt {
            attempt: row.attempt,
            started_at: DateTime(row.started_at),
            duration_ms: row.duration_ms,
            outcome: row.outcome.into(),
            status_code: row.status_code.map(i64::from),
            error: row.error,
            response_snippet: row.response_snippet,
        }
    }
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
    /// Has a dismissed delivery.
    Dismissed,
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
    /// Received at or after.
    pub received_after: Option<DateTime>,
    /// Received before.
    pub received_before: Option<DateTime>,
    /// Text contained in the provider's event id.
    pub text: Option<String>,
    /// Text in the body: every word or "quoted phrase" (at least 3 characters each, at most 8,
    /// 200 characters in all) appears in the body's first 64 KiB, case-insensitively, also
    /// inside longer words (`ord_12` finds `ord_12345`). Bodies that are not UTF-8 text are
    /// never found. Each event found has `searchMatch`. At most 5,000 matching events are
    /// examined per page, so with other filters a page may be short, even empty, while
    /// `hasNextPage` says more may follow (continue with `endCursor`).
    pub search: Option<String>,
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
    /// Why it was dead-lettered.
    pub reason: Option<DeadLetterReason>,
    /// Dead-lettered at or after.
    pub dead_after: Option<DateTime>,
    /// Dead-lettered before.
    pub dead_before: Option<DateTime>,
    /// Text contained in the provider's event id.
    pub text: Option<String>,
}

impl EventFilter {
    /// The body search, if one is asked for (white space alone is none).
    pub fn search_query(&self) -> Result<Option<SearchQuery>, ApiError> {
        match self.search.as_deref().filter(|search| !search.trim().is_empty()) {
            Some(search) => {
                SearchQuery::parse(search).map(Some).map_err(|error| ApiError::Invalid(format!("search: {error}")))
            }
            None => Ok(None),
        }
    }

    /// The filter as the store's selection.
    pub fn selection(self) -> EventSelection {
        EventSelection {
            source: self.source,
            event_type: self.event_type,
            status: self.status.map(|status| match status {
                EventStatus::Pending => EventStatusFilter::HasDelivery(crate::model::DeliveryStatus::Pending),
                EventStatus::Delivered => EventStatusFilter::HasDelivery(crate::model::DeliveryStatus::Delivered),
                EventStatus::DeadLettered => EventStatusFilter::HasDelivery(crate::model::DeliveryStatus::DeadLettered),
                EventStatus::Dismissed => EventStatusFilter::HasDelivery(crate::model::DeliveryStatus::Dismissed),
                EventStatus::Unrouted => EventStatusFilter::Unrouted,
            }),
            received_after: self.received_after.map(|at| at.0),
            received_before: self.received_before.map(|at| at.0),
            text: self.text,
        }
    }
}

impl DeadLetterFilter {
    /// The filter as the store's selection.
    pub fn selection(&self) -> DeadLetterSelection {
        DeadLetterSelection {
            destination: self.destination.clone(),
            source: self.source.clone(),
            event_type: self.event_type.clone(),
            reason: self.reason.map(Into::into),
            dead_after: self.dead_after.map(|at| at.0),
            dead_before: self.dead_before.map(|at| at.0),
            text: self.text.clone(),
        }
    }

    /// The filter as a bulk replay job keeps it (`filter_json`, and its audit row's detail):
    /// the input's own field names, every field present (`null` when not given).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// [`DeadLetterFilter::to_json`] of a bulk replay with `config`: with `AS_RECEIVED`, also
    /// `"config": "AS_RECEIVED"` (so the job, its audit row and its preview token say it; with
    /// `CURRENT` the text is the filter's alone, as before `config` existed).
    pub fn to_json_with(&self, config: ReplayConfig) -> String {
        if config == ReplayConfig::Current {
            return self.to_json();
        }
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(object) = value.as_object_mut() {
            object.insert("config".into(), "AS_RECEIVED".into());
        }
        value.to_string()
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
    /// Dead letters dismissed (not counted as dead-lettered).
    pub dismissed: i64,
}

impl From<Totals> for Counts {
    fn from(totals: Totals) -> Counts {
        Counts {
            events: totals.events,
            unrouted: totals.unrouted,
            pending: totals.deliveries.pending,
            delivered: totals.deliveries.delivered,
            dead_lettered: totals.deliveries.dead_lettered,
            dismissed: totals.deliveries.dismissed,
        }
    }
}

/// Activity over a range, bucket by bucket.
#[derive(SimpleObject, Debug, Clone)]
pub struct Activity {
    /// Width of each bucket, seconds (whole minutes).
    pub bucket_seconds: i64,
    /// Every bucket of the range, oldest first, empty ones included.
    pub buckets: Vec<ActivityBucket>,
}

/// One bucket of activity.
#[derive(SimpleObject, Debug, Clone)]
pub struct ActivityBucket {
    /// Start of the bucket.
    pub start: DateTime,
    /// Events received.
    pub received: i64,
    /// Attempts that delivered.
    pub delivered: i64,
    /// Attempts that failed (transient or permanent).
    pub failed: i64,
    /// Deliveries dead-lettered in the bucket (and dead letters still).
    pub dead_lettered: i64,
    /// Receipt to delivery, mean, ms: deliveries delivered in the bucket without a replay.
    pub latency_avg_ms: Option<f64>,
    /// Receipt to delivery, slowest, ms (the same deliveries).
    pub latency_max_ms: Option<i64>,
}

impl From<crate::store::ActivityBucket> for ActivityBucket {
    fn from(bucket: crate::store::ActivityBucket) -> Self {
        ActivityBucket {
            start: DateTime(bucket.start),
            received: bucket.received,
            delivered: bucket.delivered,
            failed: bucket.failed,
            dead_lettered: bucket.dead_lettered,
            latency_avg_ms: bucket.latency_avg_ms,
            latency_max_ms: bucket.latency_max_ms,
        }
    }
}

/// A configured source.
#[derive(SimpleObject, Debug, Clone)]
pub struct Source {
    /// Name (`POST /webhooks/{name}`).
    pub name: String,
    /// Signature scheme.
    pub kind: String,
    /// Whether a `[[backfill]]` is configured for it (the `backfill` mutation can run).
    pub backfill: bool,
}

/// A configured destination and its live state.
#[derive(SimpleObject, Debug, Clone)]
pub struct Destination {
    /// Name.
    pub name: String,
    /// URL deliveries are POSTed to.
    pub url: String,
    /// Circuit breaker.
    pub breaker_state: super::enums::BreakerState,
    /// Pending deliveries.
    pub pending: i64,
    /// Dead-lettered deliveries.
    pub dead_lettered: i64,
    /// Delivered deliveries.
    pub delivered: i64,
    /// Dismissed dead letters.
    pub dismissed: i64,
}

/// One audit log row.
#[derive(SimpleObject, Debug, Clone)]
pub struct AuditEntry {
    /// Row id.
    pub id: ID,
    /// When.
    pub at: DateTime,
    /// Who (an email, or `token:{name}`).
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// On what.
    pub target: String,
    /// How many.
    pub count: i64,
    /// Details.
    pub detail: Option<String>,
}

impl From<AuditLogEntry> for AuditEntry {
    fn from(row: AuditLogEntry) -> AuditEntry {
        AuditEntry {
            id: ID(row.id.to_string()),
            at: DateTime(row.at),
            actor: row.actor,
            action: row.action.into(),
            target: row.target,
            count: row.count,
            detail: row.detail,
        }
    }
}

/// Audit log filters (all optional, combined with AND).
#[derive(InputObject, Debug, Clone, Default)]
pub struct AuditFilter {
    /// Written at or after.
    pub from: Option<DateTime>,
    /// Written before.
    pub to: Option<DateTime>,
    /// Who, exactly (an email, or `token:{name}`).
    pub actor: Option<String>,
    /// What.
    pub action: Option<AuditAction>,
}

impl AuditFilter {
    /// The filter as the store's selection.
    pub fn selection(self) -> AuditSelection {
        AuditSelection {
            from: self.from.map(|at| at.0),
            to: self.to.map(|at| at.0),
            actor: self.actor.filter(|actor| !actor.is_empty()),
            action: self.action.map(Into::into),
        }
    }
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
    /// What the replay did.
    pub result: ReplayEffect,
    /// Whether this call set the delivery back to pending.
    pub enqueued: bool,
    /// Which routing config its attempts use from now on.
    pub replay_config: ReplayConfig,
    /// With `AS_RECEIVED`: the config version (its event's). Null with `CURRENT`.
    pub config_version: Option<String>,
}

impl From<Replayed> for ReplayResult {
    fn from(replayed: Replayed) -> ReplayResult {
        ReplayResult {
            delivery_id: ID(replayed.delivery_id.into_string()),
            result: replayed.effect.into(),
            enqueued: replayed.effect == crate::replay::ReplayEffect::Enqueued,
            replay_config: if replayed.config_version.is_some() {
                ReplayConfig::AsReceived
            } else {
                ReplayConfig::Current
            },
            config_version: replayed.config_version.map(|version| version.as_str().to_owned()),
        }
    }
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
    /// Where it stands.
    pub status: BulkReplayStatus,
    /// Started.
    pub created_at: DateTime,
    /// Ended.
    pub finished_at: Option<DateTime>,
}

impl From<BulkReplayRow> for BulkReplay {
    fn from(row: BulkReplayRow) -> BulkReplay {
        BulkReplay {
            id: ID(row.id.0.to_string()),
            actor: row.actor,
            filter_json: row.filter_json,
            rate_per_second: i64::from(row.rate_per_second),
            total: row.total,
            done: row.done,
            enqueued: row.enqueued,
            status: row.status.into(),
            created_at: DateTime(row.created_at),
            finished_at: row.finished_at.map(DateTime),
        }
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
    /// A dry run's token: pass it back with the same filter to replay exactly what this dry
    /// run counted (valid 15 minutes; absent when a job started).
    pub preview_token: Option<String>,
}

/// Operator roles.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "inlet_shared::config::Role")]
pub enum RoleName {
    /// Reads everything.
    Viewer,
    /// Also replays.
    Operator,
    /// Also manages API tokens.
    Admin,
}

/// An API token (its value is shown once, at creation).
#[derive(SimpleObject, Debug, Clone)]
pub struct ApiToken {
    /// Token id.
    pub id: ID,
    /// Name (audit log actor `token:{name}`).
    pub name: String,
    /// Role.
    pub role: RoleName,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime,
    /// Revoked.
    pub revoked_at: Option<DateTime>,
    /// Last used.
    pub last_used: Option<DateTime>,
}

impl From<ApiTokenRow> for ApiToken {
    fn from(row: ApiTokenRow) -> Self {
        ApiToken {
            id: ID(row.id.0.to_string()),
            name: row.name,
            role: row.role.into(),
            created_by: row.created_by,
            created_at: DateTime(row.created_at),
            revoked_at: row.revoked_at.map(DateTime),
            last_used: row.last_used.map(DateTime),
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
    pub role: RoleName,
}

/// A sign-in method (a provider account) linked to an Inlet account.
#[derive(SimpleObject, Debug, Clone)]
pub struct LinkedAccount {
    /// Link id.
    pub id: ID,
    /// `oidc` or `github`.
    pub provider: String,
    /// Email the provider gave when it was linked.
    pub email: Option<String>,
    /// Linked.
    pub created_at: DateTime,
}

impl From<LinkedAccountRow> for LinkedAccount {
    fn from(row: LinkedAccountRow) -> Self {
        LinkedAccount {
            id: ID(row.id.0.to_string()),
            provider: row.provider,
            email: row.email,
            created_at: DateTime(row.created_at),
        }
    }
}

/// A console user (admin view). Roles come from `[console.access]` (or an allowed GitHub
/// organisation) at each sign-in; the role here is the one their last sign-in was given, which
/// their sessions carry. It is changed in `[console.access]`, not here.
#[derive(SimpleObject, Debug, Clone)]
pub struct User {
    /// User id.
    pub id: ID,
    /// Email address (unique; the audit log's actor).
    pub email: String,
    /// Name the provider gave, if any.
    pub name: Option<String>,
    /// Role as of their last sign-in.
    pub role: RoleName,
    /// First sign-in.
    pub created_at: DateTime,
    /// Last sign-in.
    pub last_sign_in_at: Option<DateTime>,
    /// Sessions not yet expired (signed in now, in that many browsers).
    pub live_sessions: i64,
    /// The provider accounts they sign in with, oldest first.
    pub accounts: Vec<LinkedAccount>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: ID(row.id.0.to_string()),
            email: row.email,
            name: row.name,
            role: row.role.into(),
            created_at: DateTime(row.created_at),
            last_sign_in_at: row.last_sign_in.map(DateTime),
            live_sessions: row.live_sessions,
            accounts: row.accounts.into_iter().map(LinkedAccount::from).collect(),
        }
    }
}

/// A request that failed verification, kept in the quarantine (answered 401/400 when it came).
#[derive(SimpleObject, Debug, Clone)]
pub struct RejectedRequest {
    /// Its id in the quarantine (pass it to `admitRejected`).
    pub id: ID,
    /// The source it was sent to.
    pub source: String,
    /// Where it is kept.
    pub slot: QuarantineSlot,
    /// When ingest received it (an admitted event keeps this time).
    pub received_at: DateTime,
    /// Why it failed, when it came.
    pub diagnosis: Diagnosis,
    /// The diagnosis in one sentence (never a secret or a signature).
    pub detail: String,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// Its headers as an event keeps them: credentials redacted, signatures left out.
    pub headers: Vec<Header>,
    /// Body size in bytes, as received.
    pub body_bytes: i64,
    /// Whether it can be verified again (its body and signature headers were kept).
    pub admissible: bool,
}

impl From<crate::quarantine::Entry> for RejectedRequest {
    fn from(entry: crate::quarantine::Entry) -> RejectedRequest {
        let request = entry.request;
        RejectedRequest {
            id: ID(entry.sequence.to_string()),
            admissible: request.body_kept && request.verification_headers.is_some(),
            source: request.source,
            slot: entry.slot.into(),
            received_at: DateTime(crate::model::UnixMs(i64::try_from(request.received_at_ms).unwrap_or(i64::MAX))),
            diagnosis: request.diagnosis.into(),
            detail: request.detail,
            content_type: request.content_type,
            headers: request.original_headers.as_deref().map(headers).unwrap_or_default(),
            body_bytes: i64::try_from(request.body_bytes).unwrap_or(i64::MAX),
        }
    }
}

/// A page of rejected requests, oldest first.
#[derive(SimpleObject, Debug, Clone)]
pub struct RejectedPage {
    /// The requests.
    pub nodes: Vec<RejectedRequest>,
    /// Pagination (`after` is a request's id).
    pub page_info: PageInfo,
}

/// How many rejected requests a source's slot holds.
#[derive(SimpleObject, Debug, Clone)]
pub struct RejectedCount {
    /// The source.
    pub source: String,
    /// The slot.
    pub slot: QuarantineSlot,
    /// Requests kept now.
    pub count: i64,
}

/// A request admission left in the quarantine, and why.
#[derive(SimpleObject, Debug, Clone)]
pub struct StillRejected {
    /// Its id.
    pub id: ID,
    /// Why it fails with the current secrets (`NOT_DIAGNOSED` when it was kept without its body
    /// or signature headers and cannot be verified again).
    pub diagnosis: Diagnosis,
    /// The diagnosis in one sentence.
    pub detail: String,
}

/// What re-verifying and admitting did.
#[derive(SimpleObject, Debug, Clone)]
pub struct AdmissionResult {
    /// Requests that verified with the current secrets and entered the intake stream.
    pub admitted: i32,
    /// Their event ids (dedup keys), in order.
    pub event_ids: Vec<String>,
    /// How many of those the intake stream already had (deduplicated).
    pub duplicates: i32,
    /// Those left in the quarantine.
    pub still_rejected: Vec<StillRejected>,
}

impl From<crate::quarantine::Admission> for AdmissionResult {
    fn from(admission: crate::quarantine::Admission) -> AdmissionResult {
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let not_admissible = admission.not_admissible.iter().map(|id| StillRejected {
            id: ID(id.to_string()),
            diagnosis: Diagnosis::NotDiagnosed,
            detail: "kept without its body or signature headers: it cannot be verified again".to_owned(),
        });
        AdmissionResult {
            admitted: count(admission.admitted.len()),
            duplicates: count(admission.admitted.iter().filter(|(_, _, duplicate)| *duplicate).count()),
            event_ids: admission.admitted.into_iter().map(|(_, id, _)| id).collect(),
            still_rejected: admission
                .refused
                .into_iter()
                .map(|(id, diagnosis)| StillRejected {
                    id: ID(id.to_string()),
                    diagnosis: diagnosis.kind().into(),
                    detail: diagnosis.detail(),
                })
                .chain(not_admissible)
                .collect(),
        }
    }
}

/// What a backfill found and did (`docs/backfill.md`). In a dry run, `recovered` is what it
/// would have done and nothing was changed.
#[derive(SimpleObject, Debug, Clone)]
pub struct BackfillResult {
    /// Stripe: events listed since the time; GitHub: deliveries (by delivery id) sent since then.
    pub listed: i32,
    /// Of those, already stored (GitHub: or answered 2xx by Inlet at some attempt).
    pub already_stored: i32,
    /// Stripe: published into the intake stream (then recorded and delivered like any event);
    /// GitHub: redelivery requested (GitHub then sends the webhook again, signed).
    pub recovered: i32,
    /// Not recovered: the intake stream or the provider refused.
    pub failed: i32,
    /// Whether the provider's list was read to its end; `false` when `max_pages` stopped it.
    pub complete: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl BackfillResult {
    /// The API's view of a backfill's report.
    pub fn of(report: &crate::backfill::Backfilled, dry_run: bool) -> BackfillResult {
        let count = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        BackfillResult {
            listed: count(report.listed),
            already_stored: count(report.already_stored),
            recovered: count(report.recovered),
            failed: count(report.failed),
            complete: report.complete,
            dry_run,
        }
    }
}
