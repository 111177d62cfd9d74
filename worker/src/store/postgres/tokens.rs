//! Tokens on PostgreSQL.

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
    pub async fn live_api_token(&self, token_hash: String) -> Result<Option<ApiTokenRow>, StoreError> {
        let _ = token_hash;
        Err(StoreError::NotOnPostgresYet("live_api_token"))
    }
    pub async fn touch_api_token(&self, id: ApiTokenId, at: UnixMs) -> Result<(), StoreError> {
        let _ = (id, at);
        Err(StoreError::NotOnPostgresYet("touch_api_token"))
    }
    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        Err(StoreError::NotOnPostgresYet("api_tokens"))
    }
    pub async fn create_api_token(
        &self,
        name: String,
        token_hash: String,
        role: Role,
        actor: String,
    ) -> Result<ApiTokenRow, StoreError> {
        let _ = (name, token_hash, role, actor);
        Err(StoreError::NotOnPostgresYet("create_api_token"))
    }
    pub async fn revoke_api_token(&self, id: ApiTokenId, actor: String) -> Result<Option<ApiTokenRow>, StoreError> {
        let _ = (id, actor);
        Err(StoreError::NotOnPostgresYet("revoke_api_token"))
    }
}
