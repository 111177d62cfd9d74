//! Deliveries on PostgreSQL.

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
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<AttemptSettled, StoreError> {
        let _ = record;
        Err(StoreError::NotOnPostgresYet("record_attempt"))
    }
    pub async fn claim_due(
        &self,
        destination: String,
        class: DueClass,
        limit: usize,
        now: UnixMs,
        lease_until: UnixMs,
        skip: Vec<DeliveryId>,
    ) -> Result<(Vec<Claimed>, Vec<DeliveryId>), StoreError> {
        let _ = (destination, class, limit, now, lease_until, skip);
        Err(StoreError::NotOnPostgresYet("claim_due"))
    }
    pub async fn has_due(&self, destination: String, class: DueClass, now: UnixMs) -> Result<bool, StoreError> {
        let _ = (destination, class, now);
        Err(StoreError::NotOnPostgresYet("has_due"))
    }
    pub async fn renew_lease(
        &self,
        delivery_id: DeliveryId,
        token: LeaseToken,
        until: UnixMs,
    ) -> Result<bool, StoreError> {
        let _ = (delivery_id, token, until);
        Err(StoreError::NotOnPostgresYet("renew_lease"))
    }
    pub async fn release_leases(&self, leases: Vec<(DeliveryId, LeaseToken)>) -> Result<(), StoreError> {
        let _ = leases;
        Err(StoreError::NotOnPostgresYet("release_leases"))
    }
    pub async fn release_all_leases(&self) -> Result<Vec<(DeliveryId, String)>, StoreError> {
        Err(StoreError::NotOnPostgresYet("release_all_leases"))
    }
    pub async fn dead_letter_unconfigured(&self, configured: Vec<String>) -> Result<Vec<(String, i64)>, StoreError> {
        let _ = configured;
        Err(StoreError::NotOnPostgresYet("dead_letter_unconfigured"))
    }
}
