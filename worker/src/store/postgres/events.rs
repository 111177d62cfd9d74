//! Events on PostgreSQL.

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
    pub async fn record(&self, events: Vec<NewEvent>, lease_until: UnixMs) -> Result<Vec<Recorded>, StoreError> {
        let _ = (events, lease_until);
        Err(StoreError::NotOnPostgresYet("record"))
    }
    pub async fn prune(&self, cutoff: UnixMs) -> Result<usize, StoreError> {
        let _ = cutoff;
        Err(StoreError::NotOnPostgresYet("prune"))
    }
}
