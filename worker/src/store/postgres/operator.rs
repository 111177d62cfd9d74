//! The operator plane's reads on PostgreSQL: the same selections, order and pages as SQLite
//! (see `store/operator.rs` for the types, `store/operations.rs` for the contracts).

use std::collections::HashMap;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PgError, Postgres};
use crate::model::{DeliveryId, DeliveryStatus, EventRowId, RouteStatus};
use crate::store::operator::{
    AUDIT_COLUMNS, DELIVERY_COLUMNS_PG, Dismissal, EVENT_COLUMNS, Page, StatusCounts, contains_pattern,
};
use crate::store::{
    AttemptRow, AuditLogEntry, AuditSelection, ContentRead, Cursor, DeadLetterSelection, DeliveryRow, EventContentRow,
    EventRow, EventSelection, EventStatusFilter, PageRequest, StoreError, Totals,
};

/// A `WHERE` clause under construction with its parameters: the twin of SQLite's
/// `store::operator::Where`, numbering its placeholders `$1, $2, …` in the order values are
/// added (PostgreSQL takes no `?`). The parameters are `Send` so a query can be awaited.
#[derive(Default)]
pub(super) struct Where {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Where {
    /// Adds `clause`, in which `$?` stands for `value`.
    pub(super) fn add(&mut self, clause: &str, value: impl ToSql + Sync + Send + 'static) {
        let placeholder = self.bind(value);
        self.clauses.push(clause.replace("$?", &placeholder));
    }

    /// Takes `value` as the next parameter (for a `LIMIT`, say) and returns its placeholder.
    pub(super) fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// `WHERE a AND b…` or an empty string.
    pub(super) fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }

    /// The parameters, in placeholder order.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
    }
}

/// The events selection over `events e`. The text is matched with `ILIKE`: SQLite's `LIKE` is
/// case-insensitive, PostgreSQL's is not.
pub(super) fn event_where(selection: &EventSelection) -> Where {
    let mut w = Where::default();
    if let Some(source) = &selection.source {
        w.add("e.source = $?", source.clone());
    }
    if let Some(event_type) = &selection.event_type {
        w.add("e.event_type = $?", event_type.clone());
    }
    match selection.status {
        Some(EventStatusFilter::Unrouted) => w.add("e.route_status = $?", RouteStatus::Unrouted),
        Some(EventStatusFilter::HasDelivery(status)) => {
            w.add("EXISTS (SELECT 1 FROM deliveries x WHERE x.event_rowid = e.id AND x.status = $?)", status);
        }
        None => {}
    }
    if let Some(after) = selection.received_after {
        w.add("e.received_at_ms >= $?", after);
    }
    if let Some(before) = selection.received_before {
        w.add("e.received_at_ms < $?", before);
    }
    if let Some(text) = selection.text.as_deref().filter(|t| !t.is_empty()) {
        w.add("e.event_id ILIKE $? ESCAPE '\\'", contains_pattern(text));
    }
    w
}

/// The dead-letter selection over `deliveries d JOIN events e` (text matched as in
/// [`event_where`]).
pub(super) fn dead_letter_where(selection: &DeadLetterSelection) -> Where {
    let mut w = Where::default();
    w.add("d.status = $?", DeliveryStatus::DeadLettered);
    if let Some(destination) = &selection.destination {
        w.add("d.destination = $?", destination.clone());
    }
    if let Some(source) = &selection.source {
        w.add("e.source = $?", source.clone());
    }
    if let Some(event_type) = &selection.event_type {
        w.add("e.event_type = $?", event_type.clone());
    }
    if let Some(reason) = selection.reason {
        w.add("d.dead_letter_reason = $?", reason);
    }
    if let Some(after) = selection.dead_after {
        w.add("d.updated_at_ms >= $?", after);
    }
    if let Some(before) = selection.dead_before {
        w.add("d.updated_at_ms < $?", before);
    }
    if let Some(text) = selection.text.as_deref().filter(|t| !t.is_empty()) {
        w.add("e.event_id ILIKE $? ESCAPE '\\'", contains_pattern(text));
    }
    w
}

/// The audit selection over `audit_log a`.
fn audit_where(selection: &AuditSelection) -> Where {
    let mut w = Where::default();
    if let Some(from) = selection.from {
        w.add("a.at_ms >= $?", from);
    }
    if let Some(to) = selection.to {
        w.add("a.at_ms < $?", to);
    }
    if let Some(actor) = &selection.actor {
        w.add("a.actor = $?", actor.clone());
    }
    if let Some(action) = selection.action {
        w.add("a.action = $?", action);
    }
    w
}

fn audit_row(row: &Row) -> Result<AuditLogEntry, PgError> {
    Ok(AuditLogEntry {
        id: row.try_get(0)?,
        at: row.try_get(1)?,
        actor: row.try_get(2)?,
        action: row.try_get(3)?,
        target: row.try_get(4)?,
        count: row.try_get(5)?,
        detail: row.try_get(6)?,
    })
}

pub(super) fn event_row(row: &Row) -> Result<EventRow, PgError> {
    Ok(EventRow {
        id: row.try_get(0)?,
        source: row.try_get(1)?,
        event_id: row.try_get(2)?,
        event_type: row.try_get(3)?,
        received_at: row.try_get(4)?,
        content_type: row.try_get(5)?,
        route_status: row.try_get(6)?,
        duplicates: row.try_get(7)?,
        conflicts: row.try_get(8)?,
        scheme: row.try_get(9)?,
        config_version: row.try_get(10)?,
    })
}

/// An HTTP status column (BIGINT): a value no `u16` holds is a read error, as on SQLite.
fn status_code_at(row: &Row, index: usize) -> Result<Option<u16>, PgError> {
    row.try_get::<_, Option<i64>>(index)?
        .map(|code| u16::try_from(code).map_err(|_| PgError::Refused(format!("HTTP status {code}"))))
        .transpose()
}

/// A row of [`DELIVERY_COLUMNS_PG`] (`d.rowid` is an explicit column on PostgreSQL).
pub(super) fn delivery_row(row: &Row) -> Result<DeliveryRow, PgError> {
    Ok(DeliveryRow {
        id: row.try_get(0)?,
        event: row.try_get(1)?,
        destination: row.try_get(2)?,
        status: row.try_get(3)?,
        attempts: row.try_get(4)?,
        replays: row.try_get(5)?,
        last_status_code: status_code_at(row, 6)?,
        last_error: row.try_get(7)?,
        dead_letter_reason: row.try_get(8)?,
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
        delivered_at: row.try_get(11)?,
        next_attempt_at: row.try_get(12)?,
        cursor: Cursor(row.try_get(13)?),
        dismissal: Dismissal::of(row.try_get(14)?, row.try_get(15)?, row.try_get(16)?),
        replay_of: row.try_get(17)?,
        created_by: row.try_get(18)?,
        config_version: row.try_get(19)?,
        ordering_key: row.try_get::<_, Option<String>>(20)?.map(crate::model::OrderingKey::from_stored),
        waits_for_earlier: row.try_get(21)?,
    })
}

/// Runs `read` on a pooled connection: inside it every error is a [`PgError`], so `?` works
/// on each query.
pub(super) async fn read<T>(
    postgres: &Postgres,
    read: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, PgError>,
) -> Result<T, StoreError> {
    let client = postgres.client().await?;
    Ok(read(&client).await?)
}

/// The rows of `sql`, whose parameters are `w`'s, each read by `from_row`.
pub(super) async fn query_rows<T>(
    client: &deadpool_postgres::Client,
    sql: &str,
    w: &Where,
    from_row: fn(&Row) -> Result<T, PgError>,
) -> Result<Vec<T>, PgError> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, &w.params()).await?.iter().map(from_row).collect()
}

/// One page of `SELECT {columns} FROM {from} {w} ORDER BY {key} DESC`, reading one row more
/// than asked to know whether another page follows.
async fn read_page<T>(
    client: &deadpool_postgres::Client,
    columns: &str,
    from: &str,
    key: &str,
    mut w: Where,
    page: PageRequest,
    from_row: fn(&Row) -> Result<T, PgError>,
) -> Result<Page<T>, PgError> {
    if let Some(Cursor(after)) = page.after {
        w.add(&format!("{key} < $?"), after);
    }
    let limit = w.bind(i64::try_from(page.limit.saturating_add(1)).unwrap_or(i64::MAX));
    let sql = format!("SELECT {columns} FROM {from} {} ORDER BY {key} DESC LIMIT {limit}", w.sql());
    let mut rows = query_rows(client, &sql, &w, from_row).await?;
    let has_more = rows.len() > page.limit;
    rows.truncate(page.limit);
    Ok(Page { rows, has_more })
}

impl Postgres {
    pub async fn events_page(
        &self,
        selection: EventSelection,
        page: PageRequest,
    ) -> Result<Page<EventRow>, StoreError> {
        read(self, async |c| {
            read_page(c, EVENT_COLUMNS, "events e", "e.id", event_where(&selection), page, event_row).await
        })
        .await
    }

    pub async fn event(&self, id: EventRowId) -> Result<Option<EventRow>, StoreError> {
        read(self, async |c| {
            let statement = c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = $1")).await?;
            c.query_opt(&statement, &[&id]).await?.as_ref().map(event_row).transpose()
        })
        .await
    }

    pub async fn events_by_id(&self, ids: Vec<EventRowId>) -> Result<HashMap<EventRowId, EventRow>, StoreError> {
        read(self, async |c| {
            let statement =
                c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ANY($1)")).await?;
            c.query(&statement, &[&ids])
                .await?
                .iter()
                .map(|row| event_row(row).map(|event| (event.id, event)))
                .collect()
        })
        .await
    }

    pub async fn event_content<F>(&self, id: EventRowId, admit: F) -> Result<ContentRead, StoreError>
    where
        F: FnOnce(u64) -> bool + Send + 'static,
    {
        read(self, async |c| {
            // Priced by the stored lengths in bytes, before anything is loaded. A missing event
            // is an error (`query_one`), as on SQLite.
            let size = c
                .prepare_cached(
                    "SELECT octet_length(body)::bigint + octet_length(headers_json)::bigint FROM events WHERE id = $1",
                )
                .await?;
            let size: i64 = c.query_one(&size, &[&id]).await?.try_get(0)?;
            if !admit(u64::try_from(size).unwrap_or(u64::MAX)) {
                return Ok(ContentRead::OverBudget);
            }
            let load = c.prepare_cached("SELECT headers_json, body, body_sha256 FROM events WHERE id = $1").await?;
            let row = c.query_one(&load, &[&id]).await?;
            Ok(ContentRead::Loaded(EventContentRow {
                headers_json: row.try_get(0)?,
                body: row.try_get(1)?,
                body_sha256: row.try_get(2)?,
            }))
        })
        .await
    }

    pub async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryRow>, StoreError> {
        read(self, async |c| {
            let statement =
                c.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS_PG} FROM deliveries d WHERE d.id = $1")).await?;
            c.query_opt(&statement, &[&id]).await?.as_ref().map(delivery_row).transpose()
        })
        .await
    }

    pub async fn deliveries_of_events(
        &self,
        events: Vec<EventRowId>,
    ) -> Result<HashMap<EventRowId, Vec<DeliveryRow>>, StoreError> {
        read(self, async |c| {
            let statement = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS_PG} FROM deliveries d WHERE d.event_rowid = ANY($1)
                     ORDER BY d.destination, d.rowid"
                ))
                .await?;
            let mut map: HashMap<EventRowId, Vec<DeliveryRow>> = HashMap::new();
            for row in c.query(&statement, &[&events]).await? {
                let delivery = delivery_row(&row)?;
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
        read(self, async |c| {
            let statement = c
                .prepare_cached(
                    "SELECT delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code, error,
                            response_snippet
                     FROM attempts WHERE delivery_id = ANY($1) ORDER BY attempt",
                )
                .await?;
            let mut map: HashMap<DeliveryId, Vec<AttemptRow>> = HashMap::new();
            for r in c.query(&statement, &[&deliveries]).await? {
                let attempt = AttemptRow {
                    attempt: r.try_get(1)?,
                    started_at: r.try_get(2)?,
                    duration_ms: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    status_code: status_code_at(&r, 5)?,
                    error: r.try_get(6)?,
                    response_snippet: r.try_get(7)?,
                };
                map.entry(r.try_get(0)?).or_default().push(attempt);
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
        read(self, async |c| {
            let from = "deliveries d JOIN events e ON e.id = d.event_rowid";
            read_page(c, DELIVERY_COLUMNS_PG, from, "d.rowid", dead_letter_where(&selection), page, delivery_row).await
        })
        .await
    }

    pub async fn totals(&self) -> Result<Totals, StoreError> {
        read(self, async |c| {
            // Kept up to date by triggers, split in slots (schemas/sql/postgres/0001_init.sql): a
            // count is the sum of its slots. `sum(bigint)` is NUMERIC, hence the casts.
            let events = c
                .prepare_cached(
                    "SELECT coalesce(sum(n), 0)::bigint, coalesce(sum(n) FILTER (WHERE route_status = $1), 0)::bigint
                     FROM event_counts",
                )
                .await?;
            let row = c.query_one(&events, &[&RouteStatus::Unrouted]).await?;
            let (events, unrouted) = (row.try_get(0)?, row.try_get(1)?);
            let by_status =
                c.prepare_cached("SELECT status, sum(n)::bigint FROM delivery_counts GROUP BY status").await?;
            let mut deliveries = StatusCounts::default();
            for row in c.query(&by_status, &[]).await? {
                deliveries.add(row.try_get(0)?, row.try_get(1)?);
            }
            Ok(Totals { events, unrouted, deliveries })
        })
        .await
    }

    pub async fn destination_counts(&self) -> Result<HashMap<String, StatusCounts>, StoreError> {
        read(self, async |c| {
            // Kept up to date by triggers, split in slots: summed per key.
            let statement = c
                .prepare_cached(
                    "SELECT destination, status, sum(n)::bigint FROM delivery_counts GROUP BY destination, status",
                )
                .await?;
            let mut counts: HashMap<String, StatusCounts> = HashMap::new();
            for row in c.query(&statement, &[]).await? {
                counts.entry(row.try_get(0)?).or_default().add(row.try_get(1)?, row.try_get(2)?);
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
        read(self, async |c| {
            read_page(c, AUDIT_COLUMNS, "audit_log a", "a.id", audit_where(&selection), page, audit_row).await
        })
        .await
    }
}
