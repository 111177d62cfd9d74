//! Replays on PostgreSQL.

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
    pub async fn replay(
        &self,
        delivery_id: DeliveryId,
        actor: String,
        audit: bool,
    ) -> Result<ReplayOutcome, StoreError> {
        let _ = (delivery_id, actor, audit);
        Err(StoreError::NotOnPostgresYet("replay"))
    }
    pub async fn delivery_destination(&self, id: DeliveryId) -> Result<Option<String>, StoreError> {
        let _ = id;
        Err(StoreError::NotOnPostgresYet("delivery_destination"))
    }
    pub async fn dead_letters_of_event(&self, event: EventRowId) -> Result<Vec<DeliveryId>, StoreError> {
        let _ = event;
        Err(StoreError::NotOnPostgresYet("dead_letters_of_event"))
    }
    pub async fn preview_dead_letters(
        &self,
        selection: DeadLetterSelection,
        seen_until: Option<UnixMs>,
        sample: usize,
    ) -> Result<(i64, Vec<DeliveryRow>), StoreError> {
        let _ = (selection, seen_until, sample);
        Err(StoreError::NotOnPostgresYet("preview_dead_letters"))
    }
    pub async fn create_bulk_preview(
        &self,
        selection: DeadLetterSelection,
        filter_json: String,
        actor: String,
        expires_at: UnixMs,
    ) -> Result<BulkPreview, StoreError> {
        let _ = (selection, filter_json, actor, expires_at);
        Err(StoreError::NotOnPostgresYet("create_bulk_preview"))
    }
    pub async fn bulk_preview(&self, token: String) -> Result<Option<BulkPreview>, StoreError> {
        let _ = token;
        Err(StoreError::NotOnPostgresYet("bulk_preview"))
    }
    pub async fn select_dead_letters(
        &self,
        selection: DeadLetterSelection,
        seen_until: Option<UnixMs>,
        limit: usize,
    ) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        let _ = (selection, seen_until, limit);
        Err(StoreError::NotOnPostgresYet("select_dead_letters"))
    }
    pub async fn bulk_replay(&self, id: BulkReplayId) -> Result<Option<BulkReplayRow>, StoreError> {
        let _ = id;
        Err(StoreError::NotOnPostgresYet("bulk_replay"))
    }
    pub async fn create_bulk_replay(&self, job: NewBulkReplay) -> Result<BulkReplayRow, StoreError> {
        let _ = job;
        Err(StoreError::NotOnPostgresYet("create_bulk_replay"))
    }
    pub async fn bulk_replay_progress(&self, id: BulkReplayId, progress: BulkProgress) -> Result<(), StoreError> {
        let _ = (id, progress);
        Err(StoreError::NotOnPostgresYet("bulk_replay_progress"))
    }
    pub async fn finish_bulk_replay(
        &self,
        id: BulkReplayId,
        progress: BulkProgress,
        status: BulkReplayStatus,
    ) -> Result<(), StoreError> {
        let _ = (id, progress, status);
        Err(StoreError::NotOnPostgresYet("finish_bulk_replay"))
    }
    pub async fn audit_bulk_replay_cancel(
        &self,
        id: BulkReplayId,
        actor: String,
        was_running: bool,
    ) -> Result<Option<BulkReplayRow>, StoreError> {
        let _ = (id, actor, was_running);
        Err(StoreError::NotOnPostgresYet("audit_bulk_replay_cancel"))
    }
    pub async fn close_interrupted_bulk_replays(&self) -> Result<usize, StoreError> {
        Err(StoreError::NotOnPostgresYet("close_interrupted_bulk_replays"))
    }
}
