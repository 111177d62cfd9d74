//! The store's operations, one per line of business: each runs on the backend the worker was
//! started with. What an operation promises is written here, once; how each engine keeps the
//! promise is in `store/<concern>.rs` (SQLite) and `store/postgres/<concern>.rs` (PostgreSQL).

use std::collections::{HashMap, HashSet};

use inlet_shared::config::Role;

use super::operator::{Page, StatusCounts};
use super::replays::BulkPreview;
use super::{
    ActivityBucket, ActivityQuery, ApiTokenRow, AttemptRecord, AttemptRow, AttemptSettled, AuditLogEntry,
    AuditSelection, Backend, BulkProgress, BulkReplayRow, ClaimDue, Claimed, ContentRead, DeadLetterSelection,
    DeliveryRow, Dismissed, DueClass, EventRow, EventSelection, FirstClaims, Linked, LinkedAccountRow, NewBulkReplay,
    NewEvent, PageRequest, ProviderAccount, Recorded, ReplayOrigin, ReplayOutcome, ReplayScope, ReplayedTo,
    RestoredBackup, SearchPage, SearchQuery, SessionRow, SignIn, Store, StoreError, StreamFollowed, Totals, Unlinked,
    UserRow,
};
use crate::model::{
    ApiTokenId, AuditAction, BulkReplayId, BulkReplayStatus, ConfigVersion, DeliveryId, EventRowId, LeaseToken,
    LinkedAccountId, ReplayConfig, UnixMs, UserId,
};

/// Forwards each listed operation to the backend.
macro_rules! forward {
    ($(
        $(#[$meta:meta])*
        pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.backend {
                        Backend::Sqlite(store) => store.$name($($arg),*).await,
                        Backend::Postgres(store) => store.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    // events
    /// Records a batch of events in one transaction; returns one result per event, in order.
    /// New deliveries are claimed for their first attempt by this process as `claims` says, and
    /// come back with what is needed to send them (no read back); those to destinations held
    /// elsewhere are recorded due and unclaimed.
    ///
    /// # Errors
    ///
    /// When the transaction failed: nothing of the batch is recorded.
    pub async fn record(&self, events: Vec<NewEvent>, claims: FirstClaims) -> Result<Vec<Recorded>, StoreError>;
    /// Deletes events received before `cutoff` whose deliveries are all resolved (delivered, or
    /// dismissed by an operator), or that were unrouted. Dead-lettered and pending work is never pruned, nor the newest event (so
    /// row ids, and with them delivery ids, are never handed out twice).
    ///
    /// # Errors
    ///
    /// When the transaction failed.
    pub async fn prune(&self, cutoff: UnixMs) -> Result<usize, StoreError>;
    /// From now on new event row ids follow the intake stream created at `stream_created_ms`
    /// (SQLite: `id = stream sequence + offset`, the offset fixed while the stream is the same),
    /// so recording the same messages again gives the same ids; says whether the store followed
    /// this stream already, none, or another one (its ids then start above every id given).
    /// PostgreSQL: ids come from its identity; always [`StreamFollowed::Same`].
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn follow_stream(&self, stream_created_ms: i64) -> Result<StreamFollowed, StoreError>;
    /// The mark of a backup (`inlet-worker backup`) when this store is a restored copy not yet
    /// caught up with the stream; none otherwise (always none on PostgreSQL).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn restored_backup(&self) -> Result<Option<RestoredBackup>, StoreError>;
    /// Removes the backup mark, once recording resumes from its sequence.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn clear_restored_backup(&self) -> Result<(), StoreError>;
    // config versions
    /// Keeps the snapshot of routing config `version` (its routes as canonical JSON, see
    /// `routes::Router::version`), first used at `now`, unless it is kept already: several
    /// workers starting with one config write one row, and a worker started again with a config
    /// it had before changes nothing. Snapshots are never pruned (`store/config_versions.rs`).
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn register_config_version(&self, version: ConfigVersion, routes_json: String, now: UnixMs) -> Result<(), StoreError>;
    /// The snapshot of routing config `version` (its routes' canonical JSON); `None` when no
    /// worker registered it.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn config_snapshot(&self, version: ConfigVersion) -> Result<Option<String>, StoreError>;
    // deliveries
    /// Records an attempt and the delivery's new state, fenced by the attempt's lease token.
    ///
    /// # Errors
    ///
    /// When the transaction failed.
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<AttemptSettled, StoreError>;
    /// Claims up to `limit` of `destination`'s pending deliveries of `class` that are due at
    /// `now` and have no live lease, oldest due first, skipping `skip` (attempts this process
    /// is making or holds queued), each until `lease_until` (all of [`ClaimDue`]); returns them with what is needed
    /// to send them, and how many of them had a lease that expired (an owner that died or
    /// stalled: restarted). With a `gate`, an ordered delivery is claimed only when it lets
    /// it through (`RecordingGate`: every earlier intake message recorded, or recorded long
    /// enough ago); unordered ones are not held by it.
    ///
    /// # Errors
    ///
    /// When the claim's transaction or the read fails.
    pub async fn claim_due(&self, destination: String, request: ClaimDue) -> Result<(Vec<Claimed>, Vec<DeliveryId>), StoreError>;
    /// Whether `destination` has a pending delivery of `class` due at `now` with no live
    /// lease. A read: an idle scheduler asks this, and only goes to the writer to claim.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn has_due(&self, destination: String, class: DueClass, now: UnixMs) -> Result<bool, StoreError>;
    /// Extends a lease this process holds; false when it was taken over (the attempt must not
    /// start).
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn renew_lease(&self, delivery_id: DeliveryId, token: LeaseToken, until: UnixMs) -> Result<bool, StoreError>;
    /// Gives up leases this process holds without attempting (its queue was full): the
    /// deliveries are due again at once, for whoever claims them.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn release_leases(&self, leases: Vec<(DeliveryId, LeaseToken)>) -> Result<(), StoreError>;
    /// At startup, on SQLite: every lease in the file belongs to a process that is gone (one
    /// process per database, see the lock in [`Store::open_sqlite`]), so each leased pending
    /// delivery is released to be claimed at once. Returns them as (delivery id, destination):
    /// attempts restarted. On PostgreSQL it releases nothing and returns nothing: the leases
    /// there may be other live workers' (their attempts under way); a dead worker's claims
    /// come back when their leases expire.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn release_all_leases(&self) -> Result<Vec<(DeliveryId, String)>, StoreError>;
    /// Releases the leases on `destination`'s pending deliveries, so they are claimed again at
    /// once; returns them (attempts restarted). For a worker that has just taken the
    /// destination over from one that died (several workers on one store): only the
    /// destination's holder claims its deliveries, so every lease on them is the dead holder's.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn release_destination_leases(&self, destination: String) -> Result<Vec<DeliveryId>, StoreError>;
    /// At startup: pending deliveries to destinations no longer configured can never be
    /// attempted; they are dead-lettered (`unknown_destination`, replayable once the destination
    /// is back) instead of staying pending for ever. Returns how many, per destination.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn dead_letter_unconfigured(&self, configured: Vec<String>) -> Result<Vec<(String, i64)>, StoreError>;
    // operator
    /// A page of the events matching `selection`, newest first.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn events_page(&self, selection: EventSelection, page: PageRequest) -> Result<Page<EventRow>, StoreError>;
    /// A page of the events matching `selection` whose body's searchable text (see
    /// `store/search.rs`) holds every term of `query`, case-insensitively, newest first, each
    /// with a snippet of its body around the match. At most `MAX_CANDIDATES` matching events
    /// are examined per page: a page that stopped there may be short, even empty, and still
    /// have more (`end` says where the next one starts).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn search_events(&self, selection: EventSelection, query: SearchQuery, page: PageRequest) -> Result<SearchPage, StoreError>;
    /// One event.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn event(&self, id: EventRowId) -> Result<Option<EventRow>, StoreError>;
    /// The events `ids` that exist, in one read.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn events_by_id(&self, ids: Vec<EventRowId>) -> Result<HashMap<EventRowId, EventRow>, StoreError>;
    /// One delivery.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryRow>, StoreError>;
    /// The deliveries of each of `events`, by destination, in one read.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn deliveries_of_events(&self, events: Vec<EventRowId>) -> Result<HashMap<EventRowId, Vec<DeliveryRow>>, StoreError>;
    /// The attempts of each of `deliveries`, oldest first, in one read.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn attempts_of_deliveries(&self, deliveries: Vec<DeliveryId>) -> Result<HashMap<DeliveryId, Vec<AttemptRow>>, StoreError>;
    /// A page of the dead letters matching `selection`, most recent first.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn dead_letters_page(&self, selection: DeadLetterSelection, page: PageRequest) -> Result<Page<DeliveryRow>, StoreError>;
    /// Events and deliveries by state.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn totals(&self) -> Result<Totals, StoreError>;
    /// Activity per time bucket over `query`'s range (every bucket, empty ones included).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn activity(&self, query: ActivityQuery) -> Result<Vec<ActivityBucket>, StoreError>;
    /// Deliveries by state for each destination that has any.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn destination_counts(&self) -> Result<HashMap<String, StatusCounts>, StoreError>;
    /// A page of the audit rows `selection` picks, newest first.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn audit_page_matching(
        &self,
        selection: AuditSelection,
        page: PageRequest,
    ) -> Result<Page<AuditLogEntry>, StoreError>;
    // replays
    /// Replays a delivery (one writer transaction): a dead-lettered, delivered or dismissed
    /// delivery goes back to `pending`, due now, with a fresh retry schedule (`attempt_base` =
    /// attempts so far), its replay counter bumped and its dismissal (if any) ended; an
    /// operator's replay writes its audit row in the same transaction. A pending one that no
    /// attempt holds now is made due now. A bulk job's item ([`ReplayScope::BulkItem`]) is
    /// replayed only while it is still a dead letter (otherwise `Skipped`). Two concurrent
    /// replays of one delivery are serialised here, so only one of them changes anything.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    ///
    /// `config` decides the config its attempts use from now on (kept in the delivery,
    /// `config_version`): [`ReplayConfig::Current`] none (the worker's current one);
    /// [`ReplayConfig::AsReceived`] its event's recorded version, or, when the event has none,
    /// nothing changes and the answer is [`ReplayOutcome::NoRecordedConfig`]. The audit row
    /// names the config.
    pub async fn replay(&self, delivery_id: DeliveryId, actor: String, scope: ReplayScope, config: ReplayConfig) -> Result<ReplayOutcome, StoreError>;
    /// Replays an event to `destination` for `actor` (one transaction; on PostgreSQL under the
    /// event row's lock): a new pending delivery, due now, never attempted, whose id is
    /// [`DeliveryId::replayed_to`] (the event's `n`th such replay), keeping its lineage
    /// (`replay_of`: the delivery of `origin`, if it is one; `created_by`: `actor`), with its
    /// audit row. The origin's own delivery is not touched. [`ReplayedTo::NotFound`] (nothing written) when the
    /// delivery or event does not exist. The destination is not checked here: the caller
    /// replays only to configured ones.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    /// `config` as in [`Store::replay`] ([`ReplayedTo::NoRecordedConfig`], nothing written,
    /// for "as received" of an event recorded without a version).
    pub async fn replay_to_destination(&self, origin: ReplayOrigin, destination: String, actor: String, config: ReplayConfig) -> Result<ReplayedTo, StoreError>;
    /// Dismisses a dead letter for `actor` (one transaction, on PostgreSQL under the row's
    /// lock): it becomes `dismissed` with who, when and `note`, and its audit row is written.
    /// A dismissed delivery is no dead letter: not listed, counted, previewed or selected as
    /// one, never attempted again (only pending ones are), pruned like a delivered one, and an
    /// operator's [`Store::replay`] still takes it back. Anything but a dead letter is left
    /// alone (`NotDeadLettered`).
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn dismiss(&self, delivery_id: DeliveryId, actor: String, note: Option<String>) -> Result<Dismissed, StoreError>;
    /// The destination of a delivery, if it exists.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn delivery_destination(&self, id: DeliveryId) -> Result<Option<String>, StoreError>;
    /// The dead-lettered deliveries of one event, by destination.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn dead_letters_of_event(&self, event: EventRowId) -> Result<Vec<DeliveryId>, StoreError>;
    /// How many dead letters `selection` takes, and the first `sample` of them, oldest first
    /// (with `seen_until`, only those last changed at or before it).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn preview_dead_letters(&self, selection: DeadLetterSelection, seen_until: Option<UnixMs>, sample: usize) -> Result<(i64, Vec<DeliveryRow>), StoreError>;
    /// Keeps a bulk replay's dry run (one writer transaction): how many dead letters
    /// `selection` takes now, and the newest of them (`updated_at_ms`), under a new random
    /// token valid until `expires_at`; expired previews are removed on the way. Returns the
    /// preview as kept.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn create_bulk_preview(&self, selection: DeadLetterSelection, filter_json: String, actor: String, expires_at: UnixMs) -> Result<BulkPreview, StoreError>;
    /// The unexpired preview kept under `token`, if any.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn bulk_preview(&self, token: String) -> Result<Option<BulkPreview>, StoreError>;
    /// The first `limit` dead letters `selection` takes, oldest first, with their destinations:
    /// what a bulk replay goes through. With `seen_until`, only those last changed at or before
    /// it (a preview's bound: dead letters that arrived after the preview are not taken).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn select_dead_letters(&self, selection: DeadLetterSelection, seen_until: Option<UnixMs>, limit: usize) -> Result<Vec<(DeliveryId, String)>, StoreError>;
    /// One bulk replay job.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn bulk_replay(&self, id: BulkReplayId) -> Result<Option<BulkReplayRow>, StoreError>;
    /// Creates a `running` bulk replay job held by the calling worker until `job.lease_until`,
    /// with its audit row (who, how many, the selection) in the same transaction.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn create_bulk_replay(&self, job: NewBulkReplay) -> Result<BulkReplayRow, StoreError>;
    /// Records how far a bulk replay got and, while it is `running`, extends its lease to
    /// `lease_until` (its runner calls this with each step and on a timer while it waits).
    /// Answers whether it is still `running`: false when it was cancelled (from any worker) or
    /// closed because its lease lapsed, and the runner must stop. The progress is recorded
    /// either way; the status is never changed here.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn bulk_replay_progress(&self, id: BulkReplayId, progress: BulkProgress, lease_until: UnixMs) -> Result<bool, StoreError>;
    /// Records the end of a bulk replay: its last progress, and, if it is still `running`,
    /// `status` and when; a job cancelled or closed meanwhile keeps `cancelled` and its end
    /// time. Its lease is dropped.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn finish_bulk_replay(&self, id: BulkReplayId, progress: BulkProgress, status: BulkReplayStatus) -> Result<(), StoreError>;
    /// An operator's cancellation of a bulk replay, from whichever worker serves the request
    /// (one transaction; on PostgreSQL with the job's row locked): a `running` job becomes
    /// `cancelled` (ended now, its lease dropped), and its runner, wherever it runs, learns it
    /// at its next [`Store::bulk_replay_progress`]; the audit row says whether it was running.
    /// Returns the job as it stands and whether it was running; `None` (and no audit row) when
    /// there is no such job.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn cancel_bulk_replay(&self, id: BulkReplayId, actor: String) -> Result<Option<(BulkReplayRow, bool)>, StoreError>;
    /// At startup: bulk replays a worker that is gone left `running` are closed as `cancelled`
    /// (their remaining deliveries are still dead letters and can be replayed again). Returns
    /// them. SQLite: every running job (one process per database, see the lock in
    /// [`Store::open_sqlite`]: they were the previous process's, whatever their lease says).
    /// PostgreSQL: only those whose lease lapsed, as [`Store::close_expired_bulk_replays`]
    /// (the others are other live workers').
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn close_interrupted_bulk_replays(&self) -> Result<Vec<BulkReplayId>, StoreError>;
    /// Closes as `cancelled` the `running` bulk replays whose lease lapsed before `now` (or that
    /// have none: started by a worker older than the lease): their runner is gone or stalled,
    /// and a stalled one stops at its next write. Returns them. Run periodically by the holder
    /// of the periodic jobs.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn close_expired_bulk_replays(&self, now: UnixMs) -> Result<Vec<BulkReplayId>, StoreError>;
    // sessions
    /// Records a sign-in in one transaction: a provider account already linked to a user
    /// signs in as that user (role, login time and name updated); otherwise the user with
    /// that address is created or updated and the account linked to it. The kept token is
    /// stored on the account, expired sessions are swept, the new session is stored, and the
    /// audit row written.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn sign_in(&self, sign_in: SignIn) -> Result<(), StoreError>;
    /// The session whose cookie value hashes to `session_hash`, unless it has expired by `now`.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn live_session(&self, session_hash: String, now: UnixMs) -> Result<Option<SessionRow>, StoreError>;
    /// The membership behind session `session_hash` still holds: check it again at
    /// `recheck_at`.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub async fn schedule_session_recheck(&self, session_hash: String, recheck_at: UnixMs) -> Result<(), StoreError>;
    /// The membership behind session `session_hash` no longer holds: the session ends, the
    /// token kept on its `account` is dropped, and the audit row (actor `email`) is written,
    /// in one transaction.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn end_lapsed_session(&self, session_hash: String, account: Option<ProviderAccount>, email: String) -> Result<(), StoreError>;
    /// Deletes session `session_hash` (signing out: its cookie is useless afterwards).
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub async fn delete_session(&self, session_hash: String) -> Result<(), StoreError>;
    // tokens
    /// The token whose SHA-256 (hex) is `token_hash`, unless it is unknown or revoked.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn live_api_token(&self, token_hash: String) -> Result<Option<ApiTokenRow>, StoreError>;
    /// Records that token `id` was used at `at`.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub async fn touch_api_token(&self, id: ApiTokenId, at: UnixMs) -> Result<(), StoreError>;
    /// Every API token, revoked ones included, oldest first.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, StoreError>;
    /// Stores a new token (by its hash) created by `actor`, with its audit row, and answers its
    /// record.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn create_api_token(&self, name: String, token_hash: String, role: Role, actor: String) -> Result<ApiTokenRow, StoreError>;
    // quarantine
    /// Writes the audit row of an operator's action on a source whose events went through the
    /// intake stream (or the provider), so this row is all the store keeps of it: `actor` did
    /// `action` (admitting quarantined requests, a backfill) on `source`, `count` events,
    /// `detail` saying which.
    ///
    /// # Errors
    ///
    /// When the insert fails.
    pub async fn record_source_action(&self, action: AuditAction, actor: String, source: String, count: i64, detail: String) -> Result<(), StoreError>;
    // backfill
    /// Which of `event_ids` (dedup ids, as recorded) `source` has stored.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn stored_event_ids(&self, source: String, event_ids: Vec<String>) -> Result<HashSet<String>, StoreError>;
    /// Which of the GitHub delivery ids `guids` (`X-GitHub-Delivery`) `source` has stored among
    /// the events received since `since` (less `backfill::DELIVERY_WINDOW`, for clocks that
    /// disagree): GitHub does not sign its delivery id, so the event id is the body's hash and
    /// the delivery id is only in the stored request headers. Ids that are not plain
    /// `[A-Za-z0-9-]` are never found.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn stored_github_deliveries(&self, source: String, since: UnixMs, guids: Vec<String>) -> Result<HashSet<String>, StoreError>;
    /// Revokes token `id` for `actor` (it stops authenticating at once), with its audit row
    /// when it was live. Answers its record, `None` when there is no such token.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn revoke_api_token(&self, id: ApiTokenId, actor: String) -> Result<Option<ApiTokenRow>, StoreError>;
    // users
    /// Every console user, by address, with their linked accounts and their sessions live at
    /// `now` (for admins).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn users(&self, now: UnixMs) -> Result<Vec<UserRow>, StoreError>;
    /// The email of the user `account` is linked to, if it is linked.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn linked_user_email(&self, account: ProviderAccount) -> Result<Option<String>, StoreError>;
    /// Links `account` (which gave `email`) to `user`, with its audit row, unless it is linked
    /// already (to this user or another: a provider account belongs to at most one user).
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn link_account(&self, user: UserId, account: ProviderAccount, email: String) -> Result<Linked, StoreError>;
    /// Every provider account linked to `user`, oldest first.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn linked_accounts(&self, user: UserId) -> Result<Vec<LinkedAccountRow>, StoreError>;
    /// Unlinks `user`'s linked account `id` for `actor`, with its audit row, unless it is the
    /// user's last one.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn unlink_account(&self, user: UserId, id: LinkedAccountId, actor: String) -> Result<Unlinked, StoreError>;
}

impl Store {
    /// A page of the whole audit log, newest first.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn audit_page(&self, page: PageRequest) -> Result<Page<AuditLogEntry>, StoreError> {
        self.audit_page_matching(AuditSelection::default(), page).await
    }

    /// An event's stored headers and body, priced first: `admit` is given their size in bytes,
    /// and only when it agrees is the body loaded (an answer over its budget never loads it).
    ///
    /// # Errors
    ///
    /// When the read fails, or the event does not exist.
    pub async fn event_content<F>(&self, id: EventRowId, admit: F) -> Result<ContentRead, StoreError>
    where
        F: FnOnce(u64) -> bool + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(store) => store.event_content(id, admit).await,
            Backend::Postgres(store) => store.event_content(id, admit).await,
        }
    }
}
