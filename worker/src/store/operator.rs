//! The operator plane's reads: pages of events and of dead letters with their filters, one
//! event or delivery, the batched reads behind the API's DataLoaders, an event's stored content
//! (priced before it is loaded), the audit log, and the counts.
//!
//! Typed selections in, typed rows out: the API builds its GraphQL types from these rows and
//! never sees SQL. Lists are newest first and paginated by [`Cursor`].

use std::collections::HashMap;

use rusqlite::types::ToSql;
use rusqlite::{OptionalExtension, params_from_iter};

use super::StoreError;
use super::sqlite::Sqlite;
use crate::model::{
    AttemptOutcome, AuditAction, ConfigVersion, DeadLetterReason, DeliveryId, DeliveryStatus, EventRowId, OrderingKey,
    RouteStatus, UnixMs,
};

/// A position in a newest-first list (a row's key): the rows after it are older. Handed out
/// with each row, given back to ask for the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

/// Which page of a newest-first list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Only rows older than this one (from the newest when absent).
    pub after: Option<Cursor>,
    /// At most this many rows.
    pub limit: usize,
}

/// One page of a newest-first list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, newest first.
    pub rows: Vec<T>,
    /// Whether older rows follow the last one.
    pub has_more: bool,
}

/// What the events list can be narrowed by (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSelection {
    /// Source name.
    pub source: Option<String>,
    /// Exact event type.
    pub event_type: Option<String>,
    /// Delivery or route state.
    pub status: Option<EventStatusFilter>,
    /// Received at or after.
    pub received_after: Option<UnixMs>,
    /// Received before.
    pub received_before: Option<UnixMs>,
    /// Text contained in the provider's event id (matched literally; empty: no condition).
    pub text: Option<String>,
}

/// An event's state, as the events list is filtered by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatusFilter {
    /// At least one of its deliveries is in this state.
    HasDelivery(DeliveryStatus),
    /// No route matched it.
    Unrouted,
}

/// Which dead letters (all optional, combined with AND): the dead-letter list's filter and a
/// bulk replay's selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterSelection {
    /// Destination name.
    pub destination: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Exact event type.
    pub event_type: Option<String>,
    /// Why it was dead-lettered.
    pub reason: Option<DeadLetterReason>,
    /// Dead-lettered at or after.
    pub dead_after: Option<UnixMs>,
    /// Dead-lettered before.
    pub dead_before: Option<UnixMs>,
    /// Text contained in the provider's event id (matched literally; empty: no condition).
    pub text: Option<String>,
}

/// Which audit rows (all optional, combined with AND): the audit log's filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSelection {
    /// Written at or after.
    pub from: Option<UnixMs>,
    /// Written before.
    pub to: Option<UnixMs>,
    /// Who, exactly (an email address, or `token:{name}`).
    pub actor: Option<String>,
    /// What.
    pub action: Option<AuditAction>,
}

/// An event as the operator plane lists it (without its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Inlet's id of the event.
    pub id: EventRowId,
    /// Source name.
    pub source: String,
    /// The provider's event id.
    pub event_id: String,
    /// Event type.
    pub event_type: Option<String>,
    /// When ingest received it.
    pub received_at: UnixMs,
    /// Original `Content-Type`.
    pub content_type: Option<String>,
    /// Whether a route matched.
    pub route_status: RouteStatus,
    /// Times it arrived again with the same body.
    pub duplicates: i64,
    /// Times its id arrived with a different body.
    pub conflicts: i64,
    /// The signature scheme that verified it.
    pub scheme: String,
    /// The version of the routing config that routed it (`None`: recorded before versions were
    /// kept, or by a worker of the version before).
    pub config_version: Option<ConfigVersion>,
}

impl EventRow {
    /// Its position in the events list.
    pub fn cursor(&self) -> Cursor {
        Cursor(self.id.0)
    }
}

/// An event's stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContentRow {
    /// Kept request headers, a JSON array of `[name, value]` pairs.
    pub headers_json: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
}

/// What reading an event's content found (see [`Store::event_content`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentRead {
    /// Admitted and loaded.
    Loaded(EventContentRow),
    /// Its size was refused: nothing was loaded.
    OverBudget,
}

/// A delivery as the operator plane shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: DeliveryId,
    /// Its event.
    pub event: EventRowId,
    /// Destination name.
    pub destination: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made in all.
    pub attempts: i64,
    /// Times an operator replayed it.
    pub replays: i64,
    /// Last HTTP status from the destination.
    pub last_status_code: Option<u16>,
    /// Last error (timeouts, connection errors).
    pub last_error: Option<String>,
    /// Why it was dead-lettered.
    pub dead_letter_reason: Option<DeadLetterReason>,
    /// Created.
    pub created_at: UnixMs,
    /// Last change (for a dead letter: when it was dead-lettered).
    pub updated_at: UnixMs,
    /// Delivered.
    pub delivered_at: Option<UnixMs>,
    /// Next scheduled attempt.
    pub next_attempt_at: Option<UnixMs>,
    /// Who dismissed it, when and why: set while it is dismissed.
    pub dismissal: Option<Dismissal>,
    /// A delivery made by replaying its event to this destination: the delivery it replays
    /// (`None` when the event was replayed as such, and for routed deliveries).
    pub replay_of: Option<DeliveryId>,
    /// A delivery made by replaying its event to this destination: who asked (`None` for the
    /// deliveries the routes made when the event was recorded).
    pub created_by: Option<String>,
    /// Its ordering key (`routes[].ordering_key`), `None` when unordered.
    pub ordering_key: Option<OrderingKey>,
    /// Pending and waiting for an earlier delivery of its (destination, key): one still pending,
    /// or a dead letter that blocks the key.
    pub waits_for_earlier: bool,
    /// The routing config whose transform its attempts run: `None`, the current one; set when
    /// a replay "as received" chose its event's version.
    pub config_version: Option<ConfigVersion>,
    /// Its position in the dead-letter list.
    pub cursor: Cursor,
}

/// A dead letter's dismissal: resolved by an operator without delivering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dismissal {
    /// Who.
    pub by: String,
    /// When.
    pub at: UnixMs,
    /// Why, if they said.
    pub note: Option<String>,
}

impl Dismissal {
    /// The dismissal of a row whose `dismissed_by`, `dismissed_at_ms` and `dismiss_note` were
    /// read: there is one when who and when are set (both backends write the three together).
    pub(super) fn of(by: Option<String>, at: Option<UnixMs>, note: Option<String>) -> Option<Dismissal> {
        Some(Dismissal { by: by?, at: at?, note })
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// 1-based number (continues across replays).
    pub attempt: i64,
    /// Start.
    pub started_at: UnixMs,
    /// Latency in ms.
    pub duration_ms: i64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// HTTP status, if the destination answered.
    pub status_code: Option<u16>,
    /// Error, if any.
    pub error: Option<String>,
    /// First bytes of the response body.
    pub response_snippet: Option<String>,
}

/// One row of the audit log as read back (the insert is [`super::AuditRow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLogEntry {
    /// Row id (also its position in the log).
    pub id: i64,
    /// When.
    pub at: UnixMs,
    /// Who.
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

impl AuditLogEntry {
    /// Its position in the audit log.
    pub fn cursor(&self) -> Cursor {
        Cursor(self.id)
    }
}

/// Deliveries per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Waiting or being retried.
    pub pending: i64,
    /// Delivered.
    pub delivered: i64,
    /// Dead-lettered.
    pub dead_lettered: i64,
    /// Dismissed dead letters.
    pub dismissed: i64,
}

impl StatusCounts {
    pub(super) fn add(&mut self, status: DeliveryStatus, n: i64) {
        let count = match status {
            DeliveryStatus::Pending => &mut self.pending,
            DeliveryStatus::Delivered => &mut self.delivered,
            DeliveryStatus::DeadLettered => &mut self.dead_lettered,
            DeliveryStatus::Dismissed => &mut self.dismissed,
        };
        *count += n;
    }
}

/// Events and deliveries by state, across the whole store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events recorded.
    pub events: i64,
    /// Events no route matched.
    pub unrouted: i64,
    /// Deliveries by state.
    pub deliveries: StatusCounts,
}

/// A `WHERE` clause under construction, with its positional parameters.
#[derive(Default)]
pub(super) struct Where {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Send>>,
}

impl Where {
    /// Adds `clause` with one `?` placeholder per value.
    pub(super) fn add(&mut self, clause: &str, values: Vec<Box<dyn ToSql + Send>>) {
        self.clauses.push(clause.to_owned());
        self.params.extend(values);
    }

    /// `WHERE a AND b…` or an empty string.
    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }

    /// The parameters, in placeholder order.
    pub(super) fn params(&self) -> impl Iterator<Item = &Box<dyn ToSql + Send>> {
        self.params.iter()
    }

    /// Only rows whose `key` is below `after` (the next page of a newest-first list).
    fn add_cursor(&mut self, key: &str, after: Option<Cursor>) {
        if let Some(Cursor(after)) = after {
            self.add(&format!("{key} < ?"), vec![Box::new(after)]);
        }
    }
}

/// `LIKE` pattern matching `text` literally anywhere (with `ESCAPE '\'`).
pub(super) fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

impl EventSelection {
    /// The selection as SQL over `events e`.
    pub(super) fn to_where(&self) -> Where {
        let mut w = Where::default();
        if let Some(source) = &self.source {
            w.add("e.source = ?", vec![Box::new(source.clone())]);
        }
        if let Some(event_type) = &self.event_type {
            w.add("e.event_type = ?", vec![Box::new(event_type.clone())]);
        }
        match self.status {
            Some(EventStatusFilter::Unrouted) => w.add("e.route_status = ?", vec![Box::new(RouteStatus::Unrouted)]),
            Some(EventStatusFilter::HasDelivery(status)) => w.add(
                "EXISTS (SELECT 1 FROM deliveries x WHERE x.event_rowid = e.id AND x.status = ?)",
                vec![Box::new(status)],
            ),
            None => {}
        }
        if let Some(after) = self.received_after {
            w.add("e.received_at_ms >= ?", vec![Box::new(after)]);
        }
        if let Some(before) = self.received_before {
            w.add("e.received_at_ms < ?", vec![Box::new(before)]);
        }
        if let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) {
            w.add("e.event_id LIKE ? ESCAPE '\\'", vec![Box::new(contains_pattern(text))]);
        }
        w
    }
}

impl DeadLetterSelection {
    /// The selection as SQL over `deliveries d JOIN events e`.
    pub(super) fn to_where(&self) -> Where {
        let mut w = Where::default();
        w.add("d.status = ?", vec![Box::new(DeliveryStatus::DeadLettered)]);
        if let Some(destination) = &self.destination {
            w.add("d.destination = ?", vec![Box::new(destination.clone())]);
        }
        if let Some(source) = &self.source {
            w.add("e.source = ?", vec![Box::new(source.clone())]);
        }
        if let Some(event_type) = &self.event_type {
            w.add("e.event_type = ?", vec![Box::new(event_type.clone())]);
        }
        if let Some(reason) = self.reason {
            w.add("d.dead_letter_reason = ?", vec![Box::new(reason)]);
        }
        if let Some(after) = self.dead_after {
            w.add("d.updated_at_ms >= ?", vec![Box::new(after)]);
        }
        if let Some(before) = self.dead_before {
            w.add("d.updated_at_ms < ?", vec![Box::new(before)]);
        }
        if let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) {
            w.add("e.event_id LIKE ? ESCAPE '\\'", vec![Box::new(contains_pattern(text))]);
        }
        w
    }
}

impl AuditSelection {
    /// The selection as SQL over `audit_log a`.
    fn to_where(&self) -> Where {
        let mut w = Where::default();
        if let Some(from) = self.from {
            w.add("a.at_ms >= ?", vec![Box::new(from)]);
        }
        if let Some(to) = self.to {
            w.add("a.at_ms < ?", vec![Box::new(to)]);
        }
        if let Some(actor) = &self.actor {
            w.add("a.actor = ?", vec![Box::new(actor.clone())]);
        }
        if let Some(action) = self.action {
            w.add("a.action = ?", vec![Box::new(action)]);
        }
        w
    }
}

/// Columns read by [`audit_row`], table alias `a`.
pub(super) const AUDIT_COLUMNS: &str = "a.id, a.at_ms, a.actor, a.action, a.target, a.count, a.detail";

fn audit_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditLogEntry> {
    Ok(AuditLogEntry {
        id: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        count: row.get(5)?,
        detail: row.get(6)?,
    })
}

/// Columns read by [`event_row`], table alias `e`.
pub(super) const EVENT_COLUMNS: &str = "e.id, e.source, e.event_id, e.event_type, e.received_at_ms, e.content_type, \
                                        e.route_status, e.duplicates, e.conflicts, e.scheme, e.config_version";

pub(super) fn event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: row.get(0)?,
        source: row.get(1)?,
        event_id: row.get(2)?,
        event_type: row.get(3)?,
        received_at: row.get(4)?,
        content_type: row.get(5)?,
        route_status: row.get(6)?,
        duplicates: row.get(7)?,
        conflicts: row.get(8)?,
        scheme: row.get(9)?,
        config_version: row.get(10)?,
    })
}

/// Columns read by [`delivery_row`], table alias `d`; `$blocks` as in `waits_for_earlier`.
macro_rules! delivery_columns {
    ($blocks:literal) => {
        concat!(
            "d.id, d.event_rowid, d.destination, d.status, d.attempts, d.replays, \
             d.last_status_code, d.last_error, d.dead_letter_reason, d.created_at_ms, \
             d.updated_at_ms, d.delivered_at_ms, d.next_attempt_at_ms, d.rowid, \
             d.dismissed_by, d.dismissed_at_ms, d.dismiss_note, d.replay_of, d.created_by, \
             d.config_version, d.ordering_key, ",
            super::deliveries::waits_for_earlier!($blocks)
        )
    };
}

/// Columns read by [`delivery_row`] (SQLite), table alias `d`.
pub(super) const DELIVERY_COLUMNS: &str = delivery_columns!(" = 1");

/// Columns read by the PostgreSQL twin of [`delivery_row`], table alias `d`.
pub(super) const DELIVERY_COLUMNS_PG: &str = delivery_columns!("");

pub(super) fn delivery_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: row.get(0)?,
        event: row.get(1)?,
        destination: row.get(2)?,
        status: row.get(3)?,
        attempts: row.get(4)?,
        replays: row.get(5)?,
        last_status_code: row.get(6)?,
        last_error: row.get(7)?,
        dead_letter_reason: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        delivered_at: row.get(11)?,
        next_attempt_at: row.get(12)?,
        cursor: Cursor(row.get(13)?),
        dismissal: Dismissal::of(row.get(14)?, row.get(15)?, row.get(16)?),
        replay_of: row.get(17)?,
        created_by: row.get(18)?,
        config_version: row.get(19)?,
        ordering_key: row.get::<_, Option<String>>(20)?.map(OrderingKey::from_stored),
        waits_for_earlier: row.get(21)?,
    })
}

/// `?,?,…` for `n` values.
pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

/// One page of `SELECT {columns} FROM {from} {w} ORDER BY {key} DESC`, reading one row more
/// than asked to know whether another page follows.
fn read_page<T>(
    connection: &rusqlite::Connection,
    columns: &str,
    from: &str,
    key: &str,
    mut w: Where,
    page: PageRequest,
    from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Page<T>> {
    w.add_cursor(key, page.after);
    let sql = format!("SELECT {columns} FROM {from} {} ORDER BY {key} DESC LIMIT {}", w.sql(), page.limit + 1);
    let mut statement = connection.prepare(&sql)?;
    let mut rows = statement.query_map(params_from_iter(w.params()), from_row)?.collect::<Result<Vec<_>, _>>()?;
    let has_more = rows.len() > page.limit;
    rows.truncate(page.limit);
    Ok(Page { rows, has_more })
}

impl Sqlite {
    pub async fn events_page(
        &self,
        selection: EventSelection,
        page: PageRequest,
    ) -> Result<Page<EventRow>, StoreError> {
        self.read(move |c| read_page(c, EVENT_COLUMNS, "events e", "e.id", selection.to_where(), page, event_row)).await
    }

    pub async fn event(&self, id: EventRowId) -> Result<Option<EventRow>, StoreError> {
        self.read(move |c| {
            c.query_row(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?1"), [id], event_row).optional()
        })
        .await
    }

    pub async fn events_by_id(&self, ids: Vec<EventRowId>) -> Result<HashMap<EventRowId, EventRow>, StoreError> {
        self.read(move |c| {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id IN ({})", placeholders(ids.len()));
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(ids.iter()), event_row)?;
            rows.map(|row| row.map(|event| (event.id, event))).collect()
        })
        .await
    }

    pub async fn event_content<F>(&self, id: EventRowId, admit: F) -> Result<ContentRead, StoreError>
    where
        F: FnOnce(u64) -> bool + Send + 'static,
    {
        self.read(move |c| {
            let size: i64 = c.query_row(
                "SELECT length(CAST(body AS BLOB)) + length(CAST(headers_json AS BLOB)) FROM events WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            if !admit(u64::try_from(size).unwrap_or(u64::MAX)) {
                return Ok(ContentRead::OverBudget);
            }
            c.query_row("SELECT headers_json, body, body_sha256 FROM events WHERE id = ?1", [id], |r| {
                Ok(ContentRead::Loaded(EventContentRow {
                    headers_json: r.get(0)?,
                    body: r.get(1)?,
                    body_sha256: r.get(2)?,
                }))
            })
        })
        .await
    }

    pub async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryRow>, StoreError> {
        self.read(move |c| {
            c.query_row(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.id = ?1"), [id], delivery_row)
                .optional()
        })
        .await
    }

    pub async fn deliveries_of_events(
        &self,
        events: Vec<EventRowId>,
    ) -> Result<HashMap<EventRowId, Vec<DeliveryRow>>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.event_rowid IN ({}) ORDER BY d.destination, d.rowid",
                placeholders(events.len())
            );
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(events.iter()), delivery_row)?;
            let mut map: HashMap<EventRowId, Vec<DeliveryRow>> = HashMap::new();
            for row in rows {
                let delivery = row?;
                map.entry(delivery.event).or_default().push(delivery);
            }
            Ok(map)
        })
        .await
    }

    pub async fn attempts_of_deliveries(
        &self,
        deliveries: Vec<DeliveryId>,
    ) -> Result<HashMap<DeliveryId, Vec<AttemptRow>>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code, error, response_snippet
                 FROM attempts WHERE delivery_id IN ({}) ORDER BY attempt",
                placeholders(deliveries.len())
            );
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(deliveries.iter()), |r| {
                Ok((
                    r.get::<_, DeliveryId>(0)?,
                    AttemptRow {
                        attempt: r.get(1)?,
                        started_at: r.get(2)?,
                        duration_ms: r.get(3)?,
                        outcome: r.get(4)?,
                        status_code: r.get(5)?,
                        error: r.get(6)?,
                        response_snippet: r.get(7)?,
                    },
                ))
            })?;
            let mut map: HashMap<DeliveryId, Vec<AttemptRow>> = HashMap::new();
            for row in rows {
                let (id, attempt) = row?;
                map.entry(id).or_default().push(attempt);
            }
            Ok(map)
        })
        .await
    }

    pub async fn dead_letters_page(
        &self,
        selection: DeadLetterSelection,
        page: PageRequest,
    ) -> Result<Page<DeliveryRow>, StoreError> {
        self.read(move |c| {
            let from = "deliveries d JOIN events e ON e.id = d.event_rowid";
            read_page(c, DELIVERY_COLUMNS, from, "d.rowid", selection.to_where(), page, delivery_row)
        })
        .await
    }

    pub async fn totals(&self) -> Result<Totals, StoreError> {
        self.read(|c| {
            // Kept up to date by triggers (schemas/sql/0009): a few rows, not a scan of every
            // event and delivery kept for the retention period.
            let (events, unrouted) = c.query_row(
                "SELECT coalesce(sum(n), 0), coalesce(sum(n) FILTER (WHERE route_status = ?1), 0) FROM event_counts",
                [RouteStatus::Unrouted],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut deliveries = StatusCounts::default();
            let mut statement = c.prepare_cached("SELECT status, sum(n) FROM delivery_counts GROUP BY status")?;
            for row in statement.query_map([], |r| Ok((r.get::<_, DeliveryStatus>(0)?, r.get::<_, i64>(1)?)))? {
                let (status, n) = row?;
                deliveries.add(status, n);
            }
            Ok(Totals { events, unrouted, deliveries })
        })
        .await
    }

    pub async fn destination_counts(&self) -> Result<HashMap<String, StatusCounts>, StoreError> {
        self.read(|c| {
            // Kept up to date by triggers: a few rows, whatever the retention.
            let mut statement = c.prepare_cached("SELECT destination, status, n FROM delivery_counts")?;
            let mut counts: HashMap<String, StatusCounts> = HashMap::new();
            for row in statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))? {
                let (destination, status, n) = row?;
                counts.entry(destination).or_default().add(status, n);
            }
            Ok(counts)
        })
        .await
    }

    pub async fn audit_page_matching(
        &self,
        selection: AuditSelection,
        page: PageRequest,
    ) -> Result<Page<AuditLogEntry>, StoreError> {
        self.read(move |c| read_page(c, AUDIT_COLUMNS, "audit_log a", "a.id", selection.to_where(), page, audit_row))
            .await
    }
}
