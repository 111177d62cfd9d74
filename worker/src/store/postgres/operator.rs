//! Operator on PostgreSQL.

#![allow(unused_imports, unused_variables, clippy::unused_async)]
use std::collections::HashMap;

use inlet_shared::config::Role;

use super::Postgres;
use crate::model::{
    ApiTokenId, BulkReplayId, BulkReplayStatus, DeliveryId, EventRowId, LeaseToken, LinkedAccountId, UnixMs, UserId,
};
use crate::store::operator::{Page, StatusCounts};
use crate::store::replays::BulkPreview;
use crate::store::{
    ApiTokenRow, AttemptRecord, AttemptRow, AttemptSettled, AuditLogEntry, BulkProgress, BulkReplayRow, Claimed,
    ContentRead, DeadLetterSelection, DeliveryRow, DueClass, EventRow, EventSelection, Linked, LinkedAccountRow,
    NewBulkReplay, NewEvent, PageRequest, ProviderAccount, Recorded, ReplayOutcome, SessionRow, SignIn, StoreError,
    Totals, Unlinked,
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
        let _ = page;
        Err(StoreError::NotOnPostgresYet("audit_page"))
    }
}
