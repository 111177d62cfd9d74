//! Operator on PostgreSQL.

#![allow(unused_imports, unused_variables, clippy::unused_async)]
use std::collections::HashMap;

use inlet_shared::config::Role;

use super::{PgError, Postgres};
use crate::model::{
    ApiTokenId, BulkReplayId, BulkReplayStatus, DeliveryId, EventRowId, LeaseToken, LinkedAccountId, UnixMs, UserId,
};
use crate::store::operator::{Page, StatusCounts};
use crate::store::replays::BulkPreview;
use crate::store::{
    ApiTokenRow, AttemptRecord, AttemptRow, AttemptSettled, AuditLogEntry, BulkProgress, BulkReplayRow, Claimed,
    ContentRead, Cursor, DeadLetterSelection, DeliveryRow, DueClass, EventRow, EventSelection, Linked,
    LinkedAccountRow, NewBulkReplay, NewEvent, PageRequest, ProviderAccount, Recorded, ReplayOutcome, SessionRow,
    SignIn, StoreError, Totals, Unlinked,
};

impl Postgres {
    pub async fn events_page(
        &self,
        selection: EventSelection,
        page: PageRequest,
    ) -> Result<Page<EventRow>, StoreError> {
        let _ = (selection, page);
        Err(StoreError::NotOnPostgresYet("events_page"))
    }
    pub async fn event(&self, id: EventRowId) -> Result<Option<EventRow>, StoreError> {
        let _ = id;
        Err(StoreError::NotOnPostgresYet("event"))
    }
    pub async fn events_by_id(&self, ids: Vec<EventRowId>) -> Result<HashMap<EventRowId, EventRow>, StoreError> {
        let _ = ids;
        Err(StoreError::NotOnPostgresYet("events_by_id"))
    }
    pub async fn event_content<F>(&self, id: EventRowId, admit: F) -> Result<ContentRead, StoreError>
    where
        F: FnOnce(u64) -> bool + Send + 'static,
    {
        let _ = (id, admit);
        Err(StoreError::NotOnPostgresYet("event_content"))
    }
    pub async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryRow>, StoreError> {
        let _ = id;
        Err(StoreError::NotOnPostgresYet("delivery"))
    }
    pub async fn deliveries_of_events(
        &self,
        events: Vec<EventRowId>,
    ) -> Result<HashMap<EventRowId, Vec<DeliveryRow>>, StoreError> {
        let _ = events;
        Err(StoreError::NotOnPostgresYet("deliveries_of_events"))
    }
    pub async fn attempts_of_deliveries(
        &self,
        deliveries: Vec<DeliveryId>,
    ) -> Result<HashMap<DeliveryId, Vec<AttemptRow>>, StoreError> {
        let _ = deliveries;
        Err(StoreError::NotOnPostgresYet("attempts_of_deliveries"))
    }
    pub async fn dead_letters_page(
        &self,
        selection: DeadLetterSelection,
        page: PageRequest,
    ) -> Result<Page<DeliveryRow>, StoreError> {
        let _ = (selection, page);
        Err(StoreError::NotOnPostgresYet("dead_letters_page"))
    }
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        Err(StoreError::NotOnPostgresYet("totals"))
    }
    pub async fn destination_counts(&self) -> Result<HashMap<String, StatusCounts>, StoreError> {
        Err(StoreError::NotOnPostgresYet("destination_counts"))
    }
    pub async fn audit_page(&self, page: PageRequest) -> Result<Page<AuditLogEntry>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, at_ms, actor, action, target, count, detail FROM audit_log WHERE id < $1
                 ORDER BY id DESC LIMIT $2",
            )
            .await
            .map_err(PgError::from)?;
        let before = page.after.map_or(i64::MAX, |Cursor(id)| id);
        let limit = i64::try_from(page.limit + 1).unwrap_or(i64::MAX);
        let rows = client.query(&statement, &[&before, &limit]).await.map_err(PgError::from)?;
        let mut rows = rows
            .iter()
            .map(|r| {
                Ok(AuditLogEntry {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    count: r.try_get(5)?,
                    detail: r.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>, PgError>>()?;
        let has_more = rows.len() > page.limit;
        rows.truncate(page.limit);
        Ok(Page { rows, has_more })
    }
}
