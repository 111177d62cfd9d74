//! The worker's SQLite database: schema migrations, the single writer, and reads.
//!
//! **One writer.** Every write goes through one dedicated thread that owns one connection and
//! coalesces whatever commands are queued into one `BEGIN IMMEDIATE … COMMIT` (group commit).
//! Replies are sent only after the commit returned, so callers ack JetStream only for what
//! is durably recorded. A single writer also keeps SQLite's WAL-reset bug out of reach and
//! means `SQLITE_BUSY` never reaches callers. Reads use the r2d2 pool from `spawn_blocking`.
//!
//! **Scheduling.** Where a delivery stands and when it is next due live here, not in a broker
//! message: a pending delivery is due at `next_attempt_at_ms`; an attempt first claims it
//! ([`Store::claim_due`], or at recording for a first attempt) with a lease and a fencing token,
//! and its result is recorded only while that token is still the delivery's
//! ([`Store::record_attempt`]). A pending delivery past due with no live lease is claimed again,
//! so a lost wake-up or a dead owner can delay a delivery but never drop it.
//!
//! **Storage failures.** A command that finds the database unable to take writes (disk full,
//! I/O error, locked) ends its group: the transaction is rolled back and every command of the
//! group is answered with an error, so callers retry instead of acking, and readiness reports
//! it until a group commits again.
//!
//! The database is opened with WAL, `foreign_keys=ON`, a busy timeout and the configured
//! `synchronous` (FULL by default). Migrations live in `schemas/sql/` and are applied in order
//! at startup, each in its own transaction, recorded in `schema_migrations`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use inlet_shared::config::SqliteSynchronous;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

/// Pooled SQLite connections: the writer, the checkpoint thread, and readers.
const POOL_SIZE: u32 = 8;

/// Migrations in order: (version, name, SQL). Mirrors the files in `schemas/sql/`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "0001_init", include_str!("../../schemas/sql/0001_init.sql")),
    (2, "0002_operator", include_str!("../../schemas/sql/0002_operator.sql")),
    (3, "0003_login_provider", include_str!("../../schemas/sql/0003_login_provider.sql")),
    (4, "0004_login_link", include_str!("../../schemas/sql/0004_login_link.sql")),
    (5, "0005_dead_letter_order", include_str!("../../schemas/sql/0005_dead_letter_order.sql")),
    (6, "0006_replay_repair", include_str!("../../schemas/sql/0006_replay_repair.sql")),
    (7, "0007_kept_tokens", include_str!("../../schemas/sql/0007_kept_tokens.sql")),
    (8, "0008_drop_redundant_index", include_str!("../../schemas/sql/0008_drop_redundant_index.sql")),
    (9, "0009_scheduler", include_str!("../../schemas/sql/0009_scheduler.sql")),
    (10, "0010_drop_login_flows", include_str!("../../schemas/sql/0010_drop_login_flows.sql")),
];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite error")]
    Sqlite(#[from] rusqlite::Error),
    /// No connection from the pool.
    #[error("connection pool error")]
    Pool(#[from] r2d2::Error),
    /// The writer thread is gone (shutdown or a fatal error).
    #[error("the database writer stopped")]
    WriterGone,
    /// The write's transaction did not commit (database locked, disk full, I/O error, or
    /// another command of its group failed so): nothing of it is stored; retry.
    #[error("the write transaction did not commit")]
    NotCommitted,
    /// A blocking task panicked or was cancelled.
    #[error("blocking database task failed")]
    Join,
    /// Another process holds the database (two workers must never share one SQLite file).
    #[error(
        "database {path} is in use by another inlet-worker (lock file {path}.lock is held); \
         two workers must never share one SQLite database: stop the other one, or give this one its own `worker.database`"
    )]
    InUse {
        /// The database path.
        path: String,
    },
    /// Opening or migrating failed.
    #[error("cannot open database {path}: {message}")]
    Open {
        /// The database path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// One event to record, as read from the stream.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Source name.
    pub source: String,
    /// Provider event id.
    pub event_id: String,
    /// `provider`, `hashed_provider_id` or `body_sha256`.
    pub id_origin: String,
    /// Event type, if any.
    pub event_type: Option<String>,
    /// Which scheme verified it.
    pub scheme: String,
    /// Which secret matched.
    pub secret_index: i64,
    /// Ingest's receipt time, Unix ms.
    pub received_at_ms: i64,
    /// Stream sequence of the message.
    pub stream_sequence: u64,
    /// Original `Content-Type`.
    pub content_type: Option<String>,
    /// JSON array of the kept request headers.
    pub headers_json: String,
    /// The raw body.
    pub body: Bytes,
    /// Destinations the routes select (empty: unrouted).
    pub destinations: Vec<String>,
}

/// The lease under which one process owns a delivery's next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token: the delivery's `lease_token` when it was claimed. An attempt's result
    /// is recorded only while it is still the delivery's.
    pub token: i64,
    /// Until when the claim holds, Unix ms; after it the delivery may be claimed again.
    pub until_ms: i64,
}

/// A delivery claimed for one attempt: what to send and the lease that makes it ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// What to send.
    pub delivery: DeliveryToSend,
    /// The claim.
    pub lease: Lease,
}

/// Which due deliveries a claim takes: first attempts and retries have separate capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueClass {
    /// Never attempted since it was recorded or replayed.
    First,
    /// Attempted before and scheduled again.
    Retry,
}

/// What recording one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// First time seen: recorded with these new deliveries (empty when unrouted), each already
    /// claimed for its first attempt by this process.
    New {
        /// The new deliveries.
        deliveries: Vec<Claimed>,
    },
    /// Seen before (a provider redelivery, or our own redelivery after a crash). Its
    /// deliveries are already scheduled in the store.
    Duplicate {
        /// The stored body differs: recorded as a conflict, not merged.
        conflict: bool,
    },
}

/// What recording one event did, as the writer sees it (before the deliveries' bodies are
/// attached).
enum RecordedRow {
    New(Vec<(String, String)>),
    Duplicate { conflict: bool },
}

/// Whether an attempt's result was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptSettled {
    /// Recorded: the delivery moved on.
    Recorded,
    /// Not recorded: the lease it ran under was taken over (or the delivery is no longer
    /// pending), so a newer owner decides. Only this attempt's own result is dropped.
    Superseded,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Delivered,
    /// Worth retrying (5xx, 408, 429, timeout, connection error).
    Transient,
    /// Will not succeed by retrying (most 4xx).
    Permanent,
}

impl AttemptOutcome {
    /// Stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Transient => "transient",
            AttemptOutcome::Permanent => "permanent",
        }
    }
}

/// Why a delivery was dead-lettered. Labels are stable: metrics and the API use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The destination answered a 4xx that retrying cannot fix.
    Permanent4xx,
    /// Every scheduled attempt failed.
    RetriesExhausted,
    /// The destination was removed from the config.
    UnknownDestination,
}

impl DeadLetterReason {
    /// Stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Permanent4xx => "permanent_4xx",
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::UnknownDestination => "unknown_destination",
        }
    }
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Done: delivered.
    Delivered,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// Give up.
    DeadLetter(DeadLetterReason),
}

/// One attempt to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Delivery id.
    pub delivery_id: String,
    /// 1-based attempt number.
    pub attempt: i64,
    /// Start, Unix ms.
    pub started_at_ms: i64,
    /// Duration in ms.
    pub duration_ms: i64,
    /// Outcome class.
    pub outcome: AttemptOutcome,
    /// HTTP status, if the destination answered.
    pub status_code: Option<u16>,
    /// Short error text (timeouts, connection errors), if any.
    pub error: Option<String>,
    /// First bytes of the response body.
    pub response_snippet: Option<String>,
    /// What happens next.
    pub next: NextStep,
    /// The fencing token of the lease the attempt ran under.
    pub lease_token: i64,
}

/// A delivery with what is needed to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryToSend {
    /// Delivery id.
    pub delivery_id: String,
    /// Destination name.
    pub destination: String,
    /// Attempts made since the delivery was created or last replayed (a replay starts a fresh
    /// retry schedule; the attempts table keeps numbering on, see `record_attempt`).
    pub attempts: i64,
    /// Source name.
    pub source: String,
    /// Provider event id.
    pub event_id: String,
    /// Event type.
    pub event_type: Option<String>,
    /// Original content type.
    pub content_type: Option<String>,
    /// Ingest receipt time, Unix ms.
    pub received_at_ms: i64,
    /// Raw body.
    pub body: Bytes,
}

/// What a replay found and did (see [`Store::replay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// No such delivery.
    NotFound,
    /// Already pending: nothing to change, but when no attempt holds it now it was made due at
    /// once (`rescheduled`), so an operator can always push a waiting delivery.
    AlreadyPending {
        /// Its destination.
        destination: String,
        /// Made due now.
        rescheduled: bool,
    },
    /// Set back to `pending`, due now, with a fresh retry schedule.
    Replayed {
        /// Its destination.
        destination: String,
    },
}

/// Gauges the stats task publishes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Dead-lettered deliveries.
    pub dead_letters: i64,
    /// Pending deliveries.
    pub pending: i64,
    /// Receipt time of the oldest event with a pending delivery, Unix ms.
    pub oldest_pending_received_at_ms: Option<i64>,
}

enum Command {
    Record {
        events: Vec<NewEvent>,
        /// Until when the new deliveries are claimed by this process, Unix ms.
        lease_until_ms: i64,
        reply: oneshot::Sender<Result<Vec<RecordedRow>, StoreError>>,
    },
    Attempt {
        record: AttemptRecord,
        reply: oneshot::Sender<Result<AttemptSettled, StoreError>>,
    },
    Prune {
        cutoff_ms: i64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Any other write (the operator plane's): runs in the group's transaction, in its own
    /// savepoint, and answers after the commit.
    Write(Box<dyn WriteJob>),
}

/// A write job that ran in the group's transaction.
struct Ran {
    /// Answers once the commit's outcome is known (`true`: committed).
    answer: Box<dyn FnOnce(bool) + Send>,
    /// Why it failed, when the database cannot take writes (see [`storage_failure`]).
    storage_failure: Option<String>,
}

/// A typed write travelling through the writer queue.
trait WriteJob: Send {
    /// Runs the work; returns how to answer once the commit's outcome is known.
    fn run(self: Box<Self>, transaction: &Transaction<'_>) -> Ran;
    /// Answers without running (the transaction could not begin).
    fn fail(self: Box<Self>);
}

struct TypedWrite<T, F> {
    work: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for TypedWrite<T, F>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
{
    fn run(self: Box<Self>, transaction: &Transaction<'_>) -> Ran {
        let TypedWrite { work, reply } = *self;
        let result = in_savepoint(transaction, work);
        let storage_failure = storage_failure(&result);
        Ran {
            answer: Box::new(move |committed| {
                let _ = reply.send(settled(committed, result));
            }),
            storage_failure,
        }
    }

    fn fail(self: Box<Self>) {
        let _ = self.reply.send(Err(StoreError::NotCommitted));
    }
}

/// Handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: r2d2::Pool<SqliteConnectionManager>,
    writer: mpsc::Sender<Command>,
    writer_alive: Arc<AtomicBool>,
    /// Set while the writer's transactions fail (database locked, disk full): readiness reports
    /// it, and nothing is acked meanwhile because no commit succeeds.
    writes_failing: Arc<AtomicBool>,
    /// One permit per pooled connection. Without it every concurrent delivery's read became a
    /// blocking thread waiting for a connection: 120+ threads under load, each with its own
    /// stack and allocator heap (the worker's memory grew with them) and a context switch.
    read_permits: Arc<tokio::sync::Semaphore>,
    /// The open lock file: held for the store's life, so a second process cannot open the
    /// same database (released by the kernel when the process dies).
    _lock: Arc<std::fs::File>,
}

/// What an audit row records (`audit_log.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A delivery replayed by an operator.
    ReplayDelivery,
    /// A bulk replay started.
    BulkReplay,
    /// A bulk replay cancelled.
    CancelBulkReplay,
    /// A console sign-in.
    SignIn,
    /// A session ended by the worker (the membership no longer holds).
    SessionEnded,
    /// A provider account linked to a user.
    LinkAccount,
    /// A provider account unlinked.
    UnlinkAccount,
    /// An API token created.
    CreateApiToken,
    /// An API token revoked.
    RevokeApiToken,
}

impl AuditAction {
    /// The value stored in `audit_log.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ReplayDelivery => "replay_delivery",
            AuditAction::BulkReplay => "bulk_replay",
            AuditAction::CancelBulkReplay => "cancel_bulk_replay",
            AuditAction::SignIn => "sign_in",
            AuditAction::SessionEnded => "session_ended",
            AuditAction::LinkAccount => "link_account",
            AuditAction::UnlinkAccount => "unlink_account",
            AuditAction::CreateApiToken => "create_api_token",
            AuditAction::RevokeApiToken => "revoke_api_token",
        }
    }
}

/// One audit row, written in the caller's transaction (a change and its audit row commit
/// together): the one place the audit insert is spelled.
pub struct AuditRow<'a> {
    /// When, Unix ms.
    pub at_ms: i64,
    /// Who: an email address or an API token's name.
    pub actor: &'a str,
    /// What.
    pub action: AuditAction,
    /// On what.
    pub target: &'a str,
    /// How many things it affected.
    pub count: i64,
    /// Free text, if any.
    pub detail: Option<&'a str>,
}

impl AuditRow<'_> {
    /// Writes the row on `connection` (inside the caller's transaction).
    ///
    /// # Errors
    ///
    /// When the insert fails.
    pub fn write(&self, connection: &rusqlite::Connection) -> rusqlite::Result<()> {
        connection.execute(
            "INSERT INTO audit_log (at_ms, actor, action, target, count, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.at_ms, self.actor, self.action.as_str(), self.target, self.count, self.detail],
        )?;
        Ok(())
    }
}

/// Current time, Unix ms.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// The delivery id of (event row, destination): fixed for the event's life in the database, so
/// the destination can deduplicate on `Idempotency-Key` across our retries, restarts and
/// replays. Ids grow with the event's row id, so inserting deliveries and attempts appends to
/// their indexes instead of touching a random page per event (a hash id cost two extra 4 KiB WAL
/// frames per event under load).
pub fn delivery_id(event_rowid: i64, destination: &str) -> String {
    format!("dlv_{event_rowid:012x}_{destination}")
}

impl Store {
    /// Opens (creating) the database, applies migrations and starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file cannot be opened or migrated.
    pub fn open(path: &Path, synchronous: SqliteSynchronous) -> Result<Store, StoreError> {
        let open_error = |message: String| StoreError::Open { path: path.display().to_string(), message };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| open_error(e.to_string()))?;
        }
        // One worker process per database file: an exclusive lock on `<database>.lock`, held for
        // the store's life and released by the kernel if the process dies (so a crashed worker
        // restarts at once, while a second process is refused before it touches anything).
        let lock_path = {
            let mut name = path.as_os_str().to_owned();
            name.push(".lock");
            std::path::PathBuf::from(name)
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_error(format!("cannot open lock file {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse { path: path.display().to_string() });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(open_error(format!("cannot lock {}: {e}", lock_path.display())));
            }
        }
        // WAL mode and migrations on one connection first: WAL is persistent, and switching to
        // it from several pooled connections opening at once made some of them fail with
        // "database is locked" at startup.
        {
            let mut connection = rusqlite::Connection::open(path).map_err(|e| open_error(e.to_string()))?;
            connection
                .execute_batch(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;",
                    BUSY_TIMEOUT.as_millis()
                ))
                .map_err(|e| open_error(e.to_string()))?;
            migrate(&mut connection).map_err(|e| open_error(format!("migration failed: {e}")))?;
        }
        let pragmas = format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA synchronous = {};",
            BUSY_TIMEOUT.as_millis(),
            synchronous.as_str()
        );
        let manager = SqliteConnectionManager::file(path).with_init(move |c| c.execute_batch(&pragmas));
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| open_error(e.to_string()))?;
        let writer_connection = pool.get().map_err(|e| open_error(e.to_string()))?;
        // Checkpoints run on their own thread (below), not inside the writer's commits, where
        // they would stall every group behind a database-file fsync.
        writer_connection
            .execute_batch(&format!("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_KEPT_BYTES};"))
            .map_err(|e| open_error(format!("cannot configure checkpoints: {e}")))?;
        let (sender, receiver) = mpsc::channel(4096);
        let writer_alive = Arc::new(AtomicBool::new(true));
        let alive = Arc::clone(&writer_alive);
        let writes_failing = Arc::new(AtomicBool::new(false));
        let failing = Arc::clone(&writes_failing);
        let wal_restart = Arc::new(AtomicBool::new(false));
        let restart_wanted = Arc::clone(&wal_restart);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer_loop(writer_connection, receiver, &failing, &restart_wanted);
                alive.store(false, Ordering::SeqCst);
            })
            .map_err(|e| open_error(format!("cannot start writer thread: {e}")))?;
        let checkpoint_pool = pool.clone();
        let running = Arc::clone(&writer_alive);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_pool, &running, &wal_restart))
            .map_err(|e| open_error(format!("cannot start checkpoint thread: {e}")))?;
        // The writer and the checkpoint thread hold one connection each.
        let read_permits = Arc::new(tokio::sync::Semaphore::new(POOL_SIZE as usize - 2));
        Ok(Store { pool, writer: sender, writer_alive, writes_failing, read_permits, _lock: Arc::new(lock) })
    }

    /// Whether the writer thread is running.
    pub fn is_healthy(&self) -> bool {
        self.writer_alive.load(Ordering::SeqCst)
            && !self.writer.is_closed()
            && !self.writes_failing.load(Ordering::SeqCst)
    }

    /// Records a batch of events in one transaction; returns one result per event, in order.
    /// New deliveries are claimed for their first attempt by this process until
    /// `lease_until_ms`, and come back with what is needed to send them (no read back).
    ///
    /// # Errors
    ///
    /// When the transaction failed: nothing of the batch is recorded.
    pub async fn record(&self, events: Vec<NewEvent>, lease_until_ms: i64) -> Result<Vec<Recorded>, StoreError> {
        // What a first attempt needs of each event; the events themselves move to the writer.
        let sendable: Vec<Option<DeliveryToSend>> = events
            .iter()
            .map(|event| {
                (!event.destinations.is_empty()).then(|| DeliveryToSend {
                    delivery_id: String::new(),
                    destination: String::new(),
                    attempts: 0,
                    source: event.source.clone(),
                    event_id: event.event_id.clone(),
                    event_type: event.event_type.clone(),
                    content_type: event.content_type.clone(),
                    received_at_ms: event.received_at_ms,
                    body: event.body.clone(),
                })
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Command::Record { events, lease_until_ms, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        let rows = answer.await.map_err(|_| StoreError::WriterGone)??;
        Ok(rows
            .into_iter()
            .zip(sendable)
            .map(|(row, sendable)| match (row, sendable) {
                (RecordedRow::New(ids), Some(sendable)) => Recorded::New {
                    deliveries: ids
                        .into_iter()
                        .map(|(delivery_id, destination)| Claimed {
                            delivery: DeliveryToSend { delivery_id, destination, ..sendable.clone() },
                            lease: Lease { token: FIRST_LEASE_TOKEN, until_ms: lease_until_ms },
                        })
                        .collect(),
                },
                (RecordedRow::New(_), None) => Recorded::New { deliveries: Vec::new() },
                (RecordedRow::Duplicate { conflict }, _) => Recorded::Duplicate { conflict },
            })
            .collect())
    }

    /// Records an attempt and the delivery's new state, fenced by the attempt's lease token.
    ///
    /// # Errors
    ///
    /// When the transaction failed.
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<AttemptSettled, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(Command::Attempt { record, reply }).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Claims up to `limit` of `destination`'s pending deliveries of `class` that are due at
    /// `now_ms` and have no live lease, oldest due first, skipping `skip` (attempts this process
    /// is making or holds queued), each until `lease_until_ms`; returns them with what is needed
    /// to send them, and how many of them had a lease that expired (an owner that died or
    /// stalled: restarted).
    ///
    /// # Errors
    ///
    /// When the claim's transaction or the read fails.
    pub async fn claim_due(
        &self,
        destination: String,
        class: DueClass,
        limit: usize,
        now_ms: i64,
        lease_until_ms: i64,
        skip: Vec<String>,
    ) -> Result<(Vec<Claimed>, Vec<String>), StoreError> {
        let claimed: Vec<(String, Lease, bool)> = self
            .write(move |c| {
                let skip: std::collections::HashSet<String> = skip.into_iter().collect();
                claim_due(c, &destination, class, limit, now_ms, lease_until_ms, &skip)
            })
            .await?;
        if claimed.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let restarted: Vec<String> = claimed.iter().filter(|(_, _, r)| *r).map(|(id, _, _)| id.clone()).collect();
        let ids: Vec<String> = claimed.iter().map(|(id, _, _)| id.clone()).collect();
        let mut deliveries = match self.read(move |c| read_deliveries_to_send(c, &ids)).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                // Give the claims back, or they would wait out their lease.
                let leases = claimed.iter().map(|(id, lease, _)| (id.clone(), lease.token)).collect();
                let _ = self.release_leases(leases).await;
                return Err(error);
            }
        };
        let mut out = Vec::with_capacity(claimed.len());
        for (id, lease, _) in claimed {
            // A delivery pruned between the claim and the read is simply gone.
            if let Some(delivery) = deliveries.remove(&id) {
                out.push(Claimed { delivery, lease });
            }
        }
        Ok((out, restarted))
    }

    /// Whether `destination` has a pending delivery of `class` due at `now_ms` with no live
    /// lease. A read: an idle scheduler asks this, and only goes to the writer to claim.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn has_due(&self, destination: String, class: DueClass, now_ms: i64) -> Result<bool, StoreError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_due
                 WHERE status = 'pending' AND destination = ?1 AND (attempts > attempt_base) = ?2
                   AND next_attempt_at_ms <= ?3 AND (lease_until_ms IS NULL OR lease_until_ms < ?3))",
            )?
            .query_row(params![destination, i64::from(class == DueClass::Retry), now_ms], |r| r.get(0))
        })
        .await
    }

    /// Extends a lease this process holds; false when it was taken over (the attempt must not
    /// start).
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn renew_lease(&self, delivery_id: String, token: i64, until_ms: i64) -> Result<bool, StoreError> {
        self.write(move |c| {
            let changed = c.execute(
                "UPDATE deliveries SET lease_until_ms = ?3 WHERE id = ?1 AND lease_token = ?2 AND status = 'pending'",
                params![delivery_id, token, until_ms],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Gives up leases this process holds without attempting (its queue was full): the
    /// deliveries are due again at once, for whoever claims them.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn release_leases(&self, leases: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.write(move |c| {
            let mut release = c.prepare_cached(
                "UPDATE deliveries SET lease_until_ms = NULL WHERE id = ?1 AND lease_token = ?2 AND status = 'pending'",
            )?;
            for (id, token) in &leases {
                release.execute(params![id, token])?;
            }
            Ok(())
        })
        .await
    }

    /// At startup: every lease in the file belongs to a process that is gone (one process per
    /// database, see the lock in [`Store::open`]), so each leased pending delivery is released
    /// to be claimed at once. Returns them as (delivery id, destination): attempts restarted.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn release_all_leases(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.write(|c| {
            let mut statement = c.prepare(
                "UPDATE deliveries SET lease_until_ms = NULL
                 WHERE status = 'pending' AND lease_until_ms IS NOT NULL RETURNING id, destination",
            )?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// At startup: pending deliveries to destinations no longer configured can never be
    /// attempted; they are dead-lettered (`unknown_destination`, replayable once the destination
    /// is back) instead of staying pending for ever. Returns how many, per destination.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn dead_letter_unconfigured(&self, configured: Vec<String>) -> Result<Vec<(String, i64)>, StoreError> {
        self.write(move |c| {
            let stranded: Vec<(String, i64)> = c
                .prepare("SELECT destination, count(*) FROM deliveries WHERE status = 'pending' GROUP BY destination")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(String, i64)>, _>>()?
                .into_iter()
                .filter(|(destination, _)| !configured.contains(destination))
                .collect();
            let now = now_ms();
            for (destination, _) in &stranded {
                c.execute(
                    "UPDATE deliveries SET status = 'dead_lettered', dead_letter_reason = ?2, updated_at_ms = ?3,
                         lease_until_ms = NULL
                     WHERE status = 'pending' AND destination = ?1",
                    params![destination, DeadLetterReason::UnknownDestination.as_str(), now],
                )?;
            }
            Ok(stranded)
        })
        .await
    }

    /// This database's identity (random, made once by the migration).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn identity(&self) -> Result<String, StoreError> {
        self.read(|c| c.query_row("SELECT id FROM store_identity", [], |r| r.get(0))).await
    }

    /// Deletes events received before `cutoff_ms` whose deliveries are all delivered (or that
    /// were unrouted). Dead-lettered and pending work is never pruned, nor the newest event (so
    /// row ids, and with them delivery ids, are never handed out twice).
    ///
    /// # Errors
    ///
    /// When the transaction failed.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(Command::Prune { cutoff_ms, reply }).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs `work` through the single writer, in the next group transaction (in its own
    /// savepoint: an error undoes only this work). Answers after the commit.
    ///
    /// # Errors
    ///
    /// When `work` fails, the commit fails, or the writer is gone.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Command::Write(Box::new(TypedWrite { work, reply })))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Replays a delivery (one writer transaction): a dead-lettered or delivered delivery goes
    /// back to `pending`, due now, with a fresh retry schedule (`attempt_base` = attempts so far)
    /// and its replay counter bumped; the audit row is written in the same transaction. A
    /// pending one that no attempt holds now is made due now. Two concurrent replays of one
    /// delivery are serialised here, so only one of them changes anything.
    ///
    /// # Errors
    ///
    /// When the transaction fails.
    pub async fn replay(&self, delivery_id: String, actor: String, audit: bool) -> Result<ReplayOutcome, StoreError> {
        self.write(move |connection| {
            let row: Option<(String, String)> = connection
                .query_row("SELECT status, destination FROM deliveries WHERE id = ?1", [&delivery_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((status, destination)) = row else {
                return Ok(ReplayOutcome::NotFound);
            };
            let now = now_ms();
            if status == "pending" {
                let rescheduled = connection.execute(
                    "UPDATE deliveries SET next_attempt_at_ms = ?2, updated_at_ms = ?2
                     WHERE id = ?1 AND next_attempt_at_ms > ?2 AND (lease_until_ms IS NULL OR lease_until_ms < ?2)",
                    params![delivery_id, now],
                )? == 1;
                return Ok(ReplayOutcome::AlreadyPending { destination, rescheduled });
            }
            connection.execute(
                "UPDATE deliveries SET status = 'pending', replays = replays + 1, replay_enqueued = 1,
                     attempt_base = attempts, next_attempt_at_ms = ?2, updated_at_ms = ?2,
                     dead_letter_reason = NULL, lease_until_ms = NULL
                 WHERE id = ?1",
                params![delivery_id, now],
            )?;
            if audit {
                AuditRow {
                    at_ms: now,
                    actor: &actor,
                    action: AuditAction::ReplayDelivery,
                    target: &delivery_id,
                    count: 1,
                    detail: Some(&format!("previous status {status}")),
                }
                .write(connection)?;
            }
            Ok(ReplayOutcome::Replayed { destination })
        })
        .await
    }

    /// Runs `read` on a pooled connection on the blocking pool.
    ///
    /// # Errors
    ///
    /// When no connection is available, the query fails, or the task fails.
    pub async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        let _permit = self.read_permits.acquire().await.map_err(|_| StoreError::Join)?;
        tokio::task::spawn_blocking(move || {
            let connection = pool.get()?;
            Ok(read(&connection)?)
        })
        .await
        .map_err(|_| StoreError::Join)?
    }

    /// Dead-letter backlog, pending count and the oldest pending receipt time.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        self.read(|connection| {
            let (dead_letters, pending) = connection.query_row(
                "SELECT coalesce(sum(n) FILTER (WHERE status = 'dead_lettered'), 0),
                        coalesce(sum(n) FILTER (WHERE status = 'pending'), 0)
                 FROM delivery_counts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // Pending deliveries only (the due-time index holds nothing else).
            let oldest = connection.query_row(
                "SELECT min(e.received_at_ms) FROM deliveries d INDEXED BY deliveries_due
                 JOIN events e ON e.id = d.event_rowid WHERE d.status = 'pending'",
                [],
                |r| r.get(0),
            )?;
            Ok(Stats { dead_letters, pending, oldest_pending_received_at_ms: oldest })
        })
        .await
    }
}

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`], without blocking the
/// writer (PASSIVE), so the WAL stays small while commits only append to it.
fn checkpoint_loop(pool: &r2d2::Pool<SqliteConnectionManager>, running: &AtomicBool, wal_restart: &AtomicBool) {
    while running.load(Ordering::SeqCst) {
        std::thread::sleep(CHECKPOINT_EVERY);
        match pool.get() {
            Ok(connection) => {
                if let Err(error) = checkpoint(&connection, WAL_RESTART_FRAMES, wal_restart) {
                    tracing::warn!(%error, "WAL checkpoint failed");
                }
            }
            Err(error) => tracing::warn!(%error, "no connection for the WAL checkpoint"),
        }
    }
}

/// A passive checkpoint (never waits); asks the writer to let the WAL start over once it holds
/// more than `restart_after_frames` frames.
///
/// Why: a passive checkpoint copies frames into the database, but the WAL only starts over from
/// its beginning when no reader still uses it, and deliveries read all the time — so under
/// steady load it never did, and the file grew by gigabytes (2 GB in 50 s at 4,000 events/s,
/// measured), with the `-shm` index growing in memory alongside.
fn checkpoint(
    connection: &rusqlite::Connection,
    restart_after_frames: i64,
    wal_restart: &AtomicBool,
) -> Result<(), rusqlite::Error> {
    let wal_frames: i64 = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if wal_frames > restart_after_frames {
        wal_restart.store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Between groups, on the writer's own connection: a RESTART checkpoint waits (busy timeout)
/// for the readers of the moment, so the next commit writes the WAL from its beginning and
/// `journal_size_limit` truncates the file. It runs here because only the writer can take the
/// write lock between groups: a RESTART from another connection was starved by back-to-back
/// commits (measured in the test below).
fn restart_wal_if_wanted(connection: &rusqlite::Connection, wal_restart: &AtomicBool) {
    if !wal_restart.swap(false, Ordering::SeqCst) {
        return;
    }
    // Waiting holds up every write behind it, so the wait is short; when readers keep it from
    // finishing, the checkpoint thread asks again on its next pass.
    let restarted = connection
        .busy_timeout(WAL_RESTART_WAIT)
        .and_then(|()| connection.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| row.get::<_, i64>(0)));
    if let Err(error) = connection.busy_timeout(BUSY_TIMEOUT) {
        tracing::error!(%error, "cannot restore the writer's busy timeout");
    }
    match restarted {
        Ok(0) => {}
        Ok(_)
        | Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error { code: rusqlite::ErrorCode::DatabaseBusy, .. },
            _,
        )) => {
            tracing::debug!("WAL restart deferred: readers still on it");
        }
        Err(error) => tracing::warn!(%error, "WAL restart checkpoint failed"),
    }
}

/// How long a RESTART checkpoint may hold up the writer waiting for readers.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(25);
/// Every pooled connection's busy timeout (set in the pool's connection init).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL frames (pages) after which a checkpoint waits for readers so the WAL can start over:
/// 16,384 frames = 64 MiB with 4 KiB pages.
const WAL_RESTART_FRAMES: i64 = 16_384;
/// Size the WAL file is truncated to when it starts over (`journal_size_limit`).
const WAL_KEPT_BYTES: i64 = 64 * 1024 * 1024;

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

fn migrate(connection: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)",
    )?;
    for (version, name, sql) in MIGRATIONS {
        let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |row| row.get(0),
        )?;
        if !applied {
            transaction.execute_batch(sql)?;
            transaction.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
                params![version, name, now_ms()],
            )?;
            tracing::info!(version, name, "applied database migration");
        }
        transaction.commit()?;
    }
    Ok(())
}

/// Most commands coalesced into one transaction.
const MAX_GROUP: usize = 512;

/// The fencing token of a delivery's first claim, taken when it is recorded.
const FIRST_LEASE_TOKEN: i64 = 1;

/// See [`Store::claim_due`].
fn claim_due(
    connection: &rusqlite::Connection,
    destination: &str,
    class: DueClass,
    limit: usize,
    now_ms: i64,
    lease_until_ms: i64,
    skip: &std::collections::HashSet<String>,
) -> Result<Vec<(String, Lease, bool)>, rusqlite::Error> {
    let wanted = i64::try_from(limit.saturating_add(skip.len())).unwrap_or(i64::MAX);
    let candidates: Vec<(String, Option<i64>)> = connection
        .prepare_cached(
            "SELECT id, lease_until_ms FROM deliveries INDEXED BY deliveries_due
             WHERE status = 'pending' AND destination = ?1 AND (attempts > attempt_base) = ?2
               AND next_attempt_at_ms <= ?3 AND (lease_until_ms IS NULL OR lease_until_ms < ?3)
             ORDER BY next_attempt_at_ms LIMIT ?4",
        )?
        .query_map(params![destination, i64::from(class == DueClass::Retry), now_ms, wanted], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut claim = connection.prepare_cached(
        "UPDATE deliveries SET lease_token = lease_token + 1, lease_until_ms = ?2 WHERE id = ?1 RETURNING lease_token",
    )?;
    let mut claimed = Vec::with_capacity(limit.min(candidates.len()));
    for (id, previous_lease) in candidates {
        if claimed.len() >= limit {
            break;
        }
        if skip.contains(&id) {
            continue;
        }
        let token: i64 = claim.query_row(params![id, lease_until_ms], |r| r.get(0))?;
        claimed.push((id, Lease { token, until_ms: lease_until_ms }, previous_lease.is_some()));
    }
    Ok(claimed)
}

/// The deliveries `ids` with their events, for sending.
fn read_deliveries_to_send(
    connection: &rusqlite::Connection,
    ids: &[String],
) -> Result<std::collections::HashMap<String, DeliveryToSend>, rusqlite::Error> {
    // Cached: this runs once per claimed delivery.
    let mut statement = connection.prepare_cached(
        "SELECT d.id, d.destination, d.attempts - d.attempt_base, e.source, e.event_id, e.event_type,
                e.content_type, e.received_at_ms, e.body
         FROM deliveries d JOIN events e ON e.id = d.event_rowid WHERE d.id = ?1",
    )?;
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for id in ids {
        let delivery = statement
            .query_row([id], |row| {
                Ok(DeliveryToSend {
                    delivery_id: row.get(0)?,
                    destination: row.get(1)?,
                    attempts: row.get(2)?,
                    source: row.get(3)?,
                    event_id: row.get(4)?,
                    event_type: row.get(5)?,
                    content_type: row.get(6)?,
                    received_at_ms: row.get(7)?,
                    body: row.get::<_, Vec<u8>>(8)?.into(),
                })
            })
            .optional()?;
        if let Some(delivery) = delivery {
            found.insert(id.clone(), delivery);
        }
    }
    Ok(found)
}

fn writer_loop(
    mut connection: r2d2::PooledConnection<SqliteConnectionManager>,
    mut receiver: mpsc::Receiver<Command>,
    failing: &AtomicBool,
    wal_restart: &AtomicBool,
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let committed = execute_group(&mut connection, group);
        failing.store(!committed, Ordering::SeqCst);
        restart_wal_if_wanted(&connection, wal_restart);
    }
    tracing::info!("database writer stopped");
}

/// Runs every command of the group in one transaction; answers after the commit. Returns
/// whether the transaction committed.
fn execute_group(connection: &mut rusqlite::Connection, group: Vec<Command>) -> bool {
    let group_started = std::time::Instant::now();
    enum Answer {
        Record(oneshot::Sender<Result<Vec<RecordedRow>, StoreError>>, Result<Vec<RecordedRow>, rusqlite::Error>),
        Attempt(oneshot::Sender<Result<AttemptSettled, StoreError>>, Result<AttemptSettled, rusqlite::Error>),
        Prune(oneshot::Sender<Result<usize, StoreError>>, Result<usize, rusqlite::Error>),
        Write(Box<dyn FnOnce(bool) + Send>),
    }
    let transaction = match connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) => {
            tracing::error!(%error, "cannot begin write transaction");
            fail_all(group);
            return false;
        }
    };
    let now = now_ms();
    let mut answers = Vec::with_capacity(group.len());
    let mut commands = group.into_iter();
    // Why the group cannot commit, once a command found the database unable to take writes.
    let mut aborted: Option<String> = None;
    for command in commands.by_ref() {
        // Each command runs inside a savepoint so one failing command does not take the
        // others' writes with it.
        let failure = match command {
            Command::Record { events, lease_until_ms, reply } => {
                let result = in_savepoint(&transaction, |tx| record_events(tx, &events, now, lease_until_ms));
                let failure = storage_failure(&result);
                answers.push(Answer::Record(reply, result));
                failure
            }
            Command::Attempt { record, reply } => {
                let result = in_savepoint(&transaction, |tx| record_attempt(tx, &record, now));
                let failure = storage_failure(&result);
                answers.push(Answer::Attempt(reply, result));
                failure
            }
            Command::Prune { cutoff_ms, reply } => {
                let result = in_savepoint(&transaction, |tx| prune(tx, cutoff_ms));
                let failure = storage_failure(&result);
                answers.push(Answer::Prune(reply, result));
                failure
            }
            Command::Write(job) => {
                let ran = job.run(&transaction);
                answers.push(Answer::Write(ran.answer));
                ran.storage_failure
            }
        };
        // After some disk-full and I/O errors SQLite rolls the whole transaction back by itself;
        // the next commands would then run outside it, each committing alone while the group is
        // answered as failed. And when SQLite undid only the statement, the commit would fail
        // the same way or, worse, succeed with the failure unreported to readiness. Either way
        // the group stops here and is rolled back: every command of it is retried.
        aborted = failure.or_else(|| transaction.is_autocommit().then(|| "SQLite rolled the transaction back".into()));
        if aborted.is_some() {
            break;
        }
    }
    let skipped: Vec<Command> = commands.collect();
    let committed = match &aborted {
        Some(reason) => {
            tracing::error!(
                error = %reason,
                skipped = skipped.len(),
                "a write failed because the database cannot take writes; nothing of this group is recorded"
            );
            // Already gone when SQLite rolled it back itself; nothing to report then.
            let _ = transaction.rollback();
            false
        }
        None => {
            let commit_started = std::time::Instant::now();
            let committed = transaction.commit();
            metrics::histogram!(crate::metric_names::DB_COMMIT).record(commit_started.elapsed().as_secs_f64());
            if let Err(error) = &committed {
                tracing::error!(%error, "write transaction failed to commit; nothing of this group is recorded");
            }
            committed.is_ok()
        }
    };
    metrics::histogram!(crate::metric_names::DB_GROUP).record(answers.len() as f64);
    metrics::histogram!(crate::metric_names::DB_GROUP_DURATION).record(group_started.elapsed().as_secs_f64());
    for answer in answers {
        // A receiver that went away (cancelled caller) is fine to ignore: the write stands.
        match answer {
            Answer::Record(reply, result) => {
                let _ = reply.send(settled(committed, result));
            }
            Answer::Attempt(reply, result) => {
                let _ = reply.send(settled(committed, result));
            }
            Answer::Prune(reply, result) => {
                let _ = reply.send(settled(committed, result));
            }
            Answer::Write(answer) => answer(committed),
        }
    }
    fail_all(skipped);
    committed
}

/// A command's answer once the group's outcome is known: its own error when it had one (the
/// most precise cause), else [`StoreError::NotCommitted`] when the group did not commit.
fn settled<T>(committed: bool, result: Result<T, rusqlite::Error>) -> Result<T, StoreError> {
    match result {
        Ok(_) if !committed => Err(StoreError::NotCommitted),
        result => result.map_err(Into::into),
    }
}

/// The error's text when it says the database cannot take writes now (disk full, I/O error,
/// locked, out of memory, read-only, corrupt), as opposed to a failure of the command itself
/// (a constraint, a missing row), which only undoes that command.
fn storage_failure<T>(result: &Result<T, rusqlite::Error>) -> Option<String> {
    use rusqlite::ErrorCode;
    let error = result.as_ref().err()?;
    matches!(
        error.sqlite_error_code()?,
        ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseCorrupt
    )
    .then(|| error.to_string())
}

fn in_savepoint<T>(
    transaction: &Transaction<'_>,
    work: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    // Cached statements: a group runs hundreds of these, and parsing showed in profiles.
    transaction.prepare_cached("SAVEPOINT command")?.execute([])?;
    match work(transaction) {
        Ok(value) => {
            transaction.prepare_cached("RELEASE command")?.execute([])?;
            Ok(value)
        }
        Err(error) => {
            let _ = transaction.execute_batch("ROLLBACK TO command; RELEASE command");
            Err(error)
        }
    }
}

/// Answers commands that did not run: nothing of them is stored.
fn fail_all(group: Vec<Command>) {
    for command in group {
        match command {
            Command::Record { reply, .. } => {
                let _ = reply.send(Err(StoreError::NotCommitted));
            }
            Command::Attempt { reply, .. } => {
                let _ = reply.send(Err(StoreError::NotCommitted));
            }
            Command::Prune { reply, .. } => {
                let _ = reply.send(Err(StoreError::NotCommitted));
            }
            Command::Write(job) => job.fail(),
        }
    }
}

fn body_sha256(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body))
}

fn record_events(
    connection: &rusqlite::Connection,
    events: &[NewEvent],
    now: i64,
    lease_until_ms: i64,
) -> Result<Vec<RecordedRow>, rusqlite::Error> {
    let mut insert_event = connection.prepare_cached(
        "INSERT INTO events (source, event_id, id_origin, event_type, scheme, secret_index, received_at_ms,
                             recorded_at_ms, stream_sequence, content_type, headers_json, body, body_sha256, route_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (source, event_id) DO NOTHING",
    )?;
    // Due now and already claimed by this process for the first attempt (token 1).
    let mut insert_delivery = connection.prepare_cached(
        "INSERT INTO deliveries (id, event_rowid, destination, status, created_at_ms, updated_at_ms, next_attempt_at_ms,
                                 lease_token, lease_until_ms)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    let mut existing =
        connection.prepare_cached("SELECT id, body_sha256 FROM events WHERE source = ?1 AND event_id = ?2")?;
    let mut bump = connection
        .prepare_cached("UPDATE events SET duplicates = duplicates + ?2, conflicts = conflicts + ?3 WHERE id = ?1")?;

    let mut results = Vec::with_capacity(events.len());
    for event in events {
        let sha = body_sha256(&event.body);
        let route_status = if event.destinations.is_empty() { "unrouted" } else { "routed" };
        let inserted = insert_event.execute(params![
            event.source,
            event.event_id,
            event.id_origin,
            event.event_type,
            event.scheme,
            event.secret_index,
            event.received_at_ms,
            now,
            i64::try_from(event.stream_sequence).unwrap_or(i64::MAX),
            event.content_type,
            event.headers_json,
            event.body.as_ref(),
            sha,
            route_status,
        ])?;
        if inserted == 1 {
            let rowid = connection.last_insert_rowid();
            let mut ids = Vec::with_capacity(event.destinations.len());
            for destination in &event.destinations {
                let id = delivery_id(rowid, destination);
                insert_delivery.execute(params![id, rowid, destination, now, FIRST_LEASE_TOKEN, lease_until_ms])?;
                ids.push((id, destination.clone()));
            }
            results.push(RecordedRow::New(ids));
        } else {
            let (rowid, stored_sha): (i64, String) =
                existing.query_row(params![event.source, event.event_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
            let conflict = stored_sha != sha;
            bump.execute(params![rowid, i64::from(!conflict), i64::from(conflict)])?;
            results.push(RecordedRow::Duplicate { conflict });
        }
    }
    Ok(results)
}

fn record_attempt(
    connection: &rusqlite::Connection,
    record: &AttemptRecord,
    now: i64,
) -> Result<AttemptSettled, rusqlite::Error> {
    let (status, next_attempt_at, delivered_at, reason) = match record.next {
        NextStep::Delivered => ("delivered", None, Some(now), None),
        NextStep::RetryAt(at) => ("pending", Some(at), None, None),
        NextStep::DeadLetter(reason) => ("dead_lettered", None, None, Some(reason.as_str())),
    };
    // Fenced: only the holder of the delivery's current lease token moves it on. A stale owner
    // (its lease expired and another claim took over) changes nothing, and its attempt row is
    // not written either, so it cannot overwrite the newer attempt's.
    let changed = connection
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, attempts = max(attempts, ?3 + attempt_base), updated_at_ms = ?4,
                 next_attempt_at_ms = ?5, delivered_at_ms = coalesce(?6, delivered_at_ms),
                 last_status_code = ?7, last_error = ?8, dead_letter_reason = ?9, lease_until_ms = NULL
             WHERE id = ?1 AND lease_token = ?10 AND status = 'pending'",
        )?
        .execute(params![
            record.delivery_id,
            status,
            record.attempt,
            now,
            next_attempt_at,
            delivered_at,
            record.status_code,
            record.error,
            reason,
            record.lease_token,
        ])?;
    if changed == 0 {
        return Ok(AttemptSettled::Superseded);
    }
    // `record.attempt` counts from the latest replay; stored numbers continue across replays,
    // so the delivery's `attempt_base` is added (read inside the statement, not by another).
    connection
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code, error,
                                   response_snippet)
             VALUES (?1, ?2 + coalesce((SELECT attempt_base FROM deliveries WHERE id = ?1), 0), ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (delivery_id, attempt) DO UPDATE SET
                 started_at_ms = excluded.started_at_ms, duration_ms = excluded.duration_ms,
                 outcome = excluded.outcome, status_code = excluded.status_code, error = excluded.error,
                 response_snippet = excluded.response_snippet",
        )?
        .execute(params![
            record.delivery_id,
            record.attempt,
            record.started_at_ms,
            record.duration_ms,
            record.outcome.as_str(),
            record.status_code,
            record.error,
            record.response_snippet,
        ])?;
    Ok(AttemptSettled::Recorded)
}

fn prune(connection: &rusqlite::Connection, cutoff_ms: i64) -> Result<usize, rusqlite::Error> {
    // The newest event always stays: SQLite hands out max(rowid) + 1, so deleting it would hand
    // its row id out again, and with it its delivery ids, which destinations keep as
    // `Idempotency-Key`: a new event would look like a repeat of an old one.
    connection.execute(
        "DELETE FROM events WHERE received_at_ms < ?1 AND id < (SELECT max(id) FROM events)
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_rowid = events.id AND d.status != 'delivered')",
        [cutoff_ms],
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Readers that never stop (deliveries read all the time) kept a passive-only checkpoint from
    /// ever letting the WAL start over: the file grew without bound. With the RESTART step the
    /// WAL stays near its threshold while far more than that is written.
    #[test]
    fn the_wal_starts_over_under_steady_reads() {
        const RESTART_AFTER_FRAMES: i64 = 256; // 1 MiB of 4 KiB pages
        const WRITTEN: usize = 48 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let wal = dir.path().join("wal.db-wal");
        let open = || {
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA busy_timeout = 5000;
                     PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 1048576;",
                )
                .unwrap();
            connection
        };
        let writer = open();
        writer.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB NOT NULL)").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        // Short read transactions, back to back, as the delivery loop makes them.
        let reader = {
            let (done, reader) = (Arc::clone(&done), open());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    reader.execute_batch("BEGIN").unwrap();
                    reader.query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0)).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                    reader.execute_batch("COMMIT").unwrap();
                }
            })
        };
        let wal_restart = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let (done, wal_restart, connection) = (Arc::clone(&done), Arc::clone(&wal_restart), open());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    checkpoint(&connection, RESTART_AFTER_FRAMES, &wal_restart).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let blob = vec![7u8; 16 * 1024];
        let mut largest_wal = 0;
        for _ in 0..WRITTEN / blob.len() {
            // One commit per write, then what the writer loop does between groups.
            writer.execute("INSERT INTO t (blob) VALUES (?1)", [&blob]).unwrap();
            restart_wal_if_wanted(&writer, &wal_restart);
            largest_wal = largest_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        done.store(true, Ordering::SeqCst);
        reader.join().unwrap();
        checkpointer.join().unwrap();
        // Bounded by the threshold plus what is written while a RESTART waits or the checkpoint
        // thread waits for a core (usually under 16 MiB; a loaded machine stretches it), not by
        // the 48 MiB written: without the RESTART step it passed 70 MiB.
        assert!(largest_wal < (WRITTEN / 2) as u64, "the WAL grew to {largest_wal} bytes while {WRITTEN} were written");
    }

    fn event(id: &str, body: &str, destinations: &[&str]) -> NewEvent {
        NewEvent {
            source: "src".into(),
            event_id: id.into(),
            id_origin: "provider".into(),
            event_type: Some("t".into()),
            scheme: "github".into(),
            secret_index: 0,
            received_at_ms: 1_000,
            stream_sequence: 1,
            content_type: Some("application/json".into()),
            headers_json: "[]".into(),
            body: Bytes::from(body.to_owned()),
            destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nested/inlet.db"), SqliteSynchronous::Full).unwrap();
        (dir, store)
    }

    /// A boxed write job's work.
    type Work = Box<dyn FnOnce(&rusqlite::Connection) -> Result<(), rusqlite::Error> + Send>;

    /// A group of operator-style writes for [`execute_group`], with their answers.
    fn writes(works: Vec<Work>) -> (Vec<Command>, Vec<oneshot::Receiver<Result<(), StoreError>>>) {
        works
            .into_iter()
            .map(|work| {
                let (reply, answer) = oneshot::channel();
                (Command::Write(Box::new(TypedWrite { work, reply })), answer)
            })
            .unzip()
    }

    fn rows(connection: &rusqlite::Connection) -> Vec<String> {
        let mut statement = connection.prepare("SELECT v FROM t ORDER BY v").unwrap();
        statement.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn insert(value: &'static str) -> Work {
        Box::new(move |c| c.execute("INSERT INTO t (v) VALUES (?1)", [value]).map(drop))
    }

    /// SQLite rolls the whole transaction back by itself after some I/O and disk-full errors
    /// (here done by hand, the same end state). The commands after it in the group must not run
    /// on in autocommit mode, each committing alone: the group fails as a whole.
    #[test]
    fn a_transaction_sqlite_rolled_back_takes_the_rest_of_the_group_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        connection.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT)").unwrap();
        let (group, mut answers) =
            writes(vec![insert("before"), Box::new(|c| c.execute_batch("ROLLBACK")), insert("after")]);
        assert!(!execute_group(&mut connection, group), "the group did not commit");
        for answer in &mut answers {
            assert!(answer.try_recv().unwrap().is_err(), "every command is told it failed");
        }
        assert!(rows(&connection).is_empty(), "nothing of the group is stored: {:?}", rows(&connection));

        let (group, mut answers) = writes(vec![insert("later")]);
        assert!(execute_group(&mut connection, group));
        assert!(answers[0].try_recv().unwrap().is_ok());
        assert_eq!(rows(&connection), ["later"]);
    }

    /// SQLITE_FULL inside one command (a real one: `max_page_count` reached) fails the whole group,
    /// so the writer reports it (readiness) and every command is retried, not half of them.
    #[test]
    fn a_full_database_inside_a_command_fails_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        connection.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT)").unwrap();
        let pages: i64 = connection.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        connection.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 4)).unwrap();
        let big = Box::new(|c: &rusqlite::Connection| {
            c.execute("INSERT INTO t (v) VALUES (?1)", ["x".repeat(64 * 1024)]).map(drop)
        });
        let (group, mut answers) = writes(vec![insert("before"), big, insert("after")]);
        assert!(!execute_group(&mut connection, group), "a disk-full error fails the group");
        let full = answers[1].try_recv().unwrap().unwrap_err();
        assert!(
            matches!(&full, StoreError::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)),
            "{full:?}"
        );
        for index in [0, 2] {
            assert!(answers[index].try_recv().unwrap().is_err(), "command {index} is retried too");
        }
        assert!(rows(&connection).is_empty(), "{:?}", rows(&connection));
    }

    /// Every file in `schemas/sql/` is a listed migration and vice versa, in order.
    #[test]
    fn migrations_match_the_schema_folder() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/sql");
        let mut files: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|(_, name, _)| format!("{name}.sql")).collect();
        assert_eq!(files, listed, "schemas/sql and store::MIGRATIONS disagree");
        for (index, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, index as i64 + 1);
            assert!(name.starts_with(&format!("{version:04}_")));
        }
    }

    #[tokio::test]
    async fn pragmas_are_read_back_from_a_live_connection() {
        let (_dir, store) = open();
        let (mode, synchronous, foreign_keys, busy): (String, i64, i64, i64) = store
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                    c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
                    c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(synchronous, 2, "FULL");
        assert_eq!(foreign_keys, 1);
        assert!(busy > 0);
    }

    #[tokio::test]
    async fn reopening_does_not_reapply_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inlet.db");
        drop(Store::open(&path, SqliteSynchronous::Full).unwrap());
        let store = Store::open(&path, SqliteSynchronous::Full).unwrap();
        let count: i64 =
            store.read(|c| c.query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))).await.unwrap();
        assert_eq!(count, MIGRATIONS.len() as i64);
    }

    /// A delivery's row, for the tests: (status, attempts, lease token, lease until, due at).
    fn row(store_path: &Path, id: &str) -> (String, i64, i64, Option<i64>, Option<i64>) {
        let c = rusqlite::Connection::open(store_path).unwrap();
        c.query_row(
            "SELECT status, attempts, lease_token, lease_until_ms, next_attempt_at_ms FROM deliveries WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap()
    }

    fn attempt(id: &str, n: i64, outcome: AttemptOutcome, next: NextStep, lease_token: i64) -> AttemptRecord {
        AttemptRecord {
            delivery_id: id.to_owned(),
            attempt: n,
            started_at_ms: 5,
            duration_ms: 1,
            outcome,
            status_code: Some(if outcome == AttemptOutcome::Delivered { 200 } else { 500 }),
            error: None,
            response_snippet: Some("oops".into()),
            next,
            lease_token,
        }
    }

    fn open_at() -> (tempfile::TempDir, Store, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/inlet.db");
        let store = Store::open(&path, SqliteSynchronous::Full).unwrap();
        (dir, store, path)
    }

    #[tokio::test]
    async fn new_deliveries_come_back_claimed_with_what_is_needed_to_send_them() {
        let (_dir, store, path) = open_at();
        let results =
            store.record(vec![event("e1", "{\"n\":1}", &["a", "b"]), event("e2", "{}", &[])], 60_000).await.unwrap();
        let Recorded::New { deliveries } = &results[0] else { panic!("new") };
        assert_eq!(deliveries.len(), 2);
        for (claimed, destination) in deliveries.iter().zip(["a", "b"]) {
            assert_eq!(claimed.lease, Lease { token: FIRST_LEASE_TOKEN, until_ms: 60_000 });
            let d = &claimed.delivery;
            assert_eq!((d.destination.as_str(), d.attempts, d.event_id.as_str()), (destination, 0, "e1"));
            assert_eq!((d.received_at_ms, &d.body[..]), (1_000, &b"{\"n\":1}"[..]));
            let (status, attempts, token, until, due) = row(&path, &d.delivery_id);
            assert_eq!((status.as_str(), attempts, token, until), ("pending", 0, 1, Some(60_000)));
            assert!(due.is_some(), "due at once");
        }
        assert_eq!(results[1], Recorded::New { deliveries: vec![] }, "unrouted");
        // A duplicate hands nothing over: its deliveries are scheduled in the store already.
        let again = store.record(vec![event("e1", "{\"n\":1}", &["a"])], 60_000).await.unwrap();
        assert_eq!(again[0], Recorded::Duplicate { conflict: false });
    }

    #[tokio::test]
    async fn only_due_unleased_deliveries_are_claimed_and_a_stale_owner_cannot_record_over_a_newer_one() {
        let (_dir, store, path) = open_at();
        store
            .record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"]), event("e3", "{}", &["b"])], 1_000)
            .await
            .unwrap();
        let (one, two) = (delivery_id(1, "a"), delivery_id(2, "a"));
        let now = now_ms();
        // Claimed at recording until 1_000 (long past): both are due for `a`, e1 skipped as held.
        let (claimed, restarted) =
            store.claim_due("a".into(), DueClass::First, 10, now, now + 30_000, vec![one.clone()]).await.unwrap();
        assert_eq!(claimed.iter().map(|c| c.delivery.delivery_id.as_str()).collect::<Vec<_>>(), [two.as_str()]);
        assert_eq!(restarted, std::slice::from_ref(&two), "its recording-time lease had expired without a result");
        assert_eq!(claimed[0].lease.token, 2, "a new fencing token");
        assert_eq!(claimed[0].delivery.body.as_ref(), b"{}");
        assert!(store.has_due("a".into(), DueClass::First, now).await.unwrap(), "e1 is still due, only skipped");
        let (again, _) = store.claim_due("a".into(), DueClass::First, 10, now, now + 30_000, vec![]).await.unwrap();
        assert_eq!(again.len(), 1, "e2's lease is live: only e1 is claimed");
        assert_eq!(again[0].delivery.delivery_id, one);
        assert!(!store.has_due("a".into(), DueClass::First, now).await.unwrap());
        assert!(store.has_due("b".into(), DueClass::First, now).await.unwrap(), "destinations are separate");
        assert!(!store.has_due("b".into(), DueClass::Retry, now).await.unwrap(), "classes are separate");

        // e2's claim expires while its owner is stalled; a new claim takes it over.
        let (taken, restarted) =
            store.claim_due("a".into(), DueClass::First, 10, now + 31_000, now + 60_000, vec![]).await.unwrap();
        assert_eq!(taken.len(), 2);
        assert_eq!(restarted.len(), 2);
        let new_token = taken.iter().find(|c| c.delivery.delivery_id == two).unwrap().lease.token;
        assert_eq!(new_token, 3);
        // The stale owner's result is dropped, the new owner's stands.
        let stale = attempt(&two, 1, AttemptOutcome::Delivered, NextStep::Delivered, 2);
        assert_eq!(store.record_attempt(stale).await.unwrap(), AttemptSettled::Superseded);
        let (status, attempts, ..) = row(&path, &two);
        assert_eq!((status.as_str(), attempts), ("pending", 0), "nothing of the stale attempt is stored");
        let current = attempt(&two, 1, AttemptOutcome::Transient, NextStep::RetryAt(now + 5_000), new_token);
        assert_eq!(store.record_attempt(current).await.unwrap(), AttemptSettled::Recorded);
        let (status, attempts, _, until, due) = row(&path, &two);
        assert_eq!((status.as_str(), attempts, until, due), ("pending", 1, None, Some(now + 5_000)));
        // Now a retry, due later.
        assert!(!store.has_due("a".into(), DueClass::Retry, now + 4_000).await.unwrap());
        assert!(store.has_due("a".into(), DueClass::Retry, now + 5_000).await.unwrap());
        let (retry, _) =
            store.claim_due("a".into(), DueClass::Retry, 10, now + 5_000, now + 40_000, vec![]).await.unwrap();
        assert_eq!((retry.len(), retry[0].delivery.attempts), (1, 1));
        let attempts_rows: i64 =
            store.read(|c| c.query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))).await.unwrap();
        assert_eq!(attempts_rows, 1, "only the current owner's attempt was written");
    }

    #[tokio::test]
    async fn released_and_restarted_claims_are_due_at_once() {
        let (_dir, store, path) = open_at();
        let far = now_ms() + 3_600_000;
        store.record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], far).await.unwrap();
        let now = now_ms();
        assert!(!store.has_due("a".into(), DueClass::First, now).await.unwrap(), "claimed at recording");
        store.release_leases(vec![(delivery_id(1, "a"), FIRST_LEASE_TOKEN), (delivery_id(2, "a"), 99)]).await.unwrap();
        assert_eq!(row(&path, &delivery_id(1, "a")).3, None, "released");
        assert_eq!(row(&path, &delivery_id(2, "a")).3, Some(far), "a wrong token releases nothing");
        let restarted = store.release_all_leases().await.unwrap();
        assert_eq!(restarted, [(delivery_id(2, "a"), "a".to_owned())]);
        let (claimed, _) = store.claim_due("a".into(), DueClass::First, 10, now, now + 1_000, vec![]).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(store.renew_lease(delivery_id(1, "a"), claimed[0].lease.token, now + 9_000).await.unwrap());
        assert!(!store.renew_lease(delivery_id(1, "a"), 1, now + 9_000).await.unwrap(), "fenced");
    }

    #[tokio::test]
    async fn a_replay_makes_a_delivery_due_now_and_can_push_a_waiting_retry() {
        let (_dir, store, path) = open_at();
        store.record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], 1).await.unwrap();
        let (one, two) = (delivery_id(1, "a"), delivery_id(2, "a"));
        let dead = NextStep::DeadLetter(DeadLetterReason::RetriesExhausted);
        store.record_attempt(attempt(&one, 1, AttemptOutcome::Transient, dead, 1)).await.unwrap();
        let later = now_ms() + 3_600_000;
        store.record_attempt(attempt(&two, 1, AttemptOutcome::Transient, NextStep::RetryAt(later), 1)).await.unwrap();

        let replayed = store.replay(one.clone(), "ops".into(), true).await.unwrap();
        assert_eq!(replayed, ReplayOutcome::Replayed { destination: "a".into() });
        let (status, ..) = row(&path, &one);
        assert_eq!(status, "pending");
        let (claimed, _) =
            store.claim_due("a".into(), DueClass::First, 10, now_ms(), now_ms() + 1_000, vec![]).await.unwrap();
        assert_eq!(claimed.len(), 1, "a replayed delivery is a first attempt again (fresh schedule)");
        assert_eq!(claimed[0].delivery.attempts, 0);
        assert_eq!(
            store.replay(one.clone(), "ops".into(), true).await.unwrap(),
            ReplayOutcome::AlreadyPending { destination: "a".into(), rescheduled: false },
            "an attempt holds it now"
        );
        assert_eq!(
            store.replay(two.clone(), "ops".into(), true).await.unwrap(),
            ReplayOutcome::AlreadyPending { destination: "a".into(), rescheduled: true },
            "a retry waiting for later is made due now"
        );
        assert!(row(&path, &two).4.unwrap() <= now_ms());
        assert_eq!(store.replay("dlv_missing".into(), "ops".into(), true).await.unwrap(), ReplayOutcome::NotFound);
    }

    #[tokio::test]
    async fn pending_deliveries_of_a_removed_destination_are_dead_lettered_not_left_pending() {
        let (_dir, store, path) = open_at();
        store.record(vec![event("e1", "{}", &["kept", "gone"])], 1).await.unwrap();
        let stranded = store.dead_letter_unconfigured(vec!["kept".into()]).await.unwrap();
        assert_eq!(stranded, [("gone".to_owned(), 1)]);
        assert_eq!(row(&path, &delivery_id(1, "gone")).0, "dead_lettered");
        assert_eq!(row(&path, &delivery_id(1, "kept")).0, "pending");
        let reason: String = store
            .read(|c| {
                c.query_row("SELECT dead_letter_reason FROM deliveries WHERE destination = 'gone'", [], |r| r.get(0))
            })
            .await
            .unwrap();
        assert_eq!(reason, "unknown_destination");
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_database() {
        let (_dir, store, path) = open_at();
        let second = Store::open(&path, SqliteSynchronous::Full).err().unwrap();
        assert!(matches!(second, StoreError::InUse { .. }), "{second:?}");
        assert!(second.to_string().contains("in use by another inlet-worker"), "{second}");
        drop(store);
        // Let the writer thread drop its connection; the lock goes with the last handle.
        Store::open(&path, SqliteSynchronous::Full).expect("free once the first store is gone");
    }

    #[tokio::test]
    async fn pruning_never_hands_a_delivery_id_out_again() {
        let (_dir, store) = open();
        store.record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], 1).await.unwrap();
        for n in [1, 2] {
            let delivered = attempt(&delivery_id(n, "a"), 1, AttemptOutcome::Delivered, NextStep::Delivered, 1);
            store.record_attempt(delivered).await.unwrap();
        }
        assert_eq!(store.prune(i64::MAX).await.unwrap(), 1, "all delivered, but the newest stays");
        let results = store.record(vec![event("e3", "{}", &["a"])], 1).await.unwrap();
        let Recorded::New { deliveries } = &results[0] else { panic!("new") };
        assert_eq!(deliveries[0].delivery.delivery_id, delivery_id(3, "a"), "a fresh id, not one a destination saw");
    }

    #[tokio::test]
    async fn duplicates_and_conflicts_are_recognised() {
        let (_dir, store) = open();
        let results = store
            .record(vec![event("e1", "{}", &["a", "b"]), event("e2", "{}", &[]), event("e1", "{}", &["a", "b"])], 1)
            .await
            .unwrap();
        let Recorded::New { deliveries } = &results[0] else { panic!("first is new") };
        assert_eq!(deliveries.len(), 2);
        assert_eq!(deliveries[0].delivery.delivery_id, delivery_id(1, "a"));
        assert_eq!(results[1], Recorded::New { deliveries: vec![] });
        assert_eq!(results[2], Recorded::Duplicate { conflict: false }, "same batch duplicate");

        let later = store.record(vec![event("e1", "{\"changed\":true}", &["a", "b"])], 1).await.unwrap();
        assert!(matches!(&later[0], Recorded::Duplicate { conflict: true }));
        let (duplicates, conflicts, unrouted): (i64, i64, String) = store
            .read(|c| {
                let (d, k) =
                    c.query_row("SELECT duplicates, conflicts FROM events WHERE event_id = 'e1'", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                let u = c.query_row("SELECT route_status FROM events WHERE event_id = 'e2'", [], |r| r.get(0))?;
                Ok((d, k, u))
            })
            .await
            .unwrap();
        assert_eq!((duplicates, conflicts, unrouted.as_str()), (1, 1, "unrouted"));
    }

    #[tokio::test]
    async fn attempts_move_a_delivery_through_its_states_the_counts_follow_and_prune_keeps_dead_letters() {
        let (_dir, store, path) = open_at();
        store
            .record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"]), event("e3", "{}", &[])], 1)
            .await
            .unwrap();
        let first = delivery_id(1, "a");
        let second = delivery_id(2, "a");
        store.record_attempt(attempt(&first, 1, AttemptOutcome::Transient, NextStep::RetryAt(99), 1)).await.unwrap();
        let (claimed, _) = store.claim_due("a".into(), DueClass::Retry, 1, 100, 200, vec![]).await.unwrap();
        let token = claimed[0].lease.token;
        store.record_attempt(attempt(&first, 2, AttemptOutcome::Delivered, NextStep::Delivered, token)).await.unwrap();
        let dead = NextStep::DeadLetter(DeadLetterReason::Permanent4xx);
        store.record_attempt(attempt(&second, 1, AttemptOutcome::Permanent, dead, 1)).await.unwrap();
        let (status, attempts, ..) = row(&path, &first);
        assert_eq!((status.as_str(), attempts), ("delivered", 2));
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.dead_letters, stats.pending), (1, 0));

        // The trigger-kept counts agree with a full count, before and after a prune.
        let counts_agree = || async {
            store
                .read(|c| {
                    let kept: Vec<(String, String, i64)> = c
                        .prepare("SELECT destination, status, n FROM delivery_counts WHERE n > 0 ORDER BY 1, 2")?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?;
                    let counted: Vec<(String, String, i64)> = c
                        .prepare("SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2 ORDER BY 1, 2")?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?;
                    let events: (i64, i64) = c.query_row(
                        "SELECT (SELECT sum(n) FROM event_counts), (SELECT count(*) FROM events)",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    Ok(kept == counted && events.0 == events.1)
                })
                .await
                .unwrap()
        };
        assert!(counts_agree().await);
        let pruned = store.prune(i64::MAX).await.unwrap();
        assert_eq!(pruned, 1, "only the fully delivered event is pruned (the unrouted one is the newest)");
        assert!(counts_agree().await);
        let remaining: i64 =
            store.read(|c| c.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))).await.unwrap();
        assert_eq!(remaining, 1, "dead letters stay replayable");
    }
}
