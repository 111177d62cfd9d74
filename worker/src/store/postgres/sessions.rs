//! Sessions on PostgreSQL.

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
    pub async fn sign_in(&self, sign_in: SignIn) -> Result<(), StoreError> {
        let _ = sign_in;
        Err(StoreError::NotOnPostgresYet("sign_in"))
    }
    pub async fn live_session(&self, session_hash: String, now: UnixMs) -> Result<Option<SessionRow>, StoreError> {
        let _ = (session_hash, now);
        Err(StoreError::NotOnPostgresYet("live_session"))
    }
    pub async fn schedule_session_recheck(&self, session_hash: String, recheck_at: UnixMs) -> Result<(), StoreError> {
        let _ = (session_hash, recheck_at);
        Err(StoreError::NotOnPostgresYet("schedule_session_recheck"))
    }
    pub async fn end_lapsed_session(
        &self,
        session_hash: String,
        account: Option<ProviderAccount>,
        email: String,
    ) -> Result<(), StoreError> {
        let _ = (session_hash, account, email);
        Err(StoreError::NotOnPostgresYet("end_lapsed_session"))
    }
    pub async fn delete_session(&self, session_hash: String) -> Result<(), StoreError> {
        let _ = session_hash;
        Err(StoreError::NotOnPostgresYet("delete_session"))
    }
}
