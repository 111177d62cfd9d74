//! Users on PostgreSQL.

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
    pub async fn linked_user_email(&self, account: ProviderAccount) -> Result<Option<String>, StoreError> {
        let _ = account;
        Err(StoreError::NotOnPostgresYet("linked_user_email"))
    }
    pub async fn link_account(
        &self,
        user: UserId,
        account: ProviderAccount,
        email: String,
    ) -> Result<Linked, StoreError> {
        let _ = (user, account, email);
        Err(StoreError::NotOnPostgresYet("link_account"))
    }
    pub async fn linked_accounts(&self, user: UserId) -> Result<Vec<LinkedAccountRow>, StoreError> {
        let _ = user;
        Err(StoreError::NotOnPostgresYet("linked_accounts"))
    }
    pub async fn unlink_account(
        &self,
        user: UserId,
        id: LinkedAccountId,
        actor: String,
    ) -> Result<Unlinked, StoreError> {
        let _ = (user, id, actor);
        Err(StoreError::NotOnPostgresYet("unlink_account"))
    }
}
