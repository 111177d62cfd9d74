//! Everything the worker keeps: events, deliveries and their schedule, attempts, dead letters,
//! replays, audit, users, sessions and API tokens. [`Store`] is the one face the rest of the
//! worker sees (its operations are in `operations.rs`); behind it runs one of two backends,
//! chosen by `[store] backend`: SQLite (the default: one file, one worker) or PostgreSQL
//! (`postgres/`: any number of workers on one database). Each concern's types and its SQLite
//! queries share a file (`events.rs`, `deliveries.rs`, …); the PostgreSQL queries of the same
//! concern are in `postgres/<concern>.rs`.
//!
//! What follows is how the SQLite backend works.
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

/// Store tests that hold on both backends: for each listed `async fn name(store: Store)`, a
/// module `name` with two tests, `sqlite` (a fresh file) and `postgres` (a fresh server of its
/// own, stopped when the test ends).
#[cfg(test)]
macro_rules! on_each_backend {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let (_dir, store) = crate::store::open_temp();
                    super::$name(store).await;
                }

                #[tokio::test]
                async fn postgres() {
                    let (_server, store) = crate::store::open_temp_postgres().await;
                    super::$name(store).await;
                }
            }
        )+
    };
}

mod activity;
mod audit;
#[cfg(test)]
mod audit_tests;
mod backfill;
#[cfg(test)]
mod backfill_tests;
pub mod backup;
mod columns;
mod config_versions;
#[cfg(test)]
mod config_versions_tests;
pub mod copy;
mod deliveries;
mod events;
mod migrate;
mod operations;
mod operator;
#[cfg(test)]
mod operator_tests;
#[cfg(test)]
mod ordering_tests;
pub mod postgres;
mod replays;
mod search;
mod sessions;
mod sqlite;
#[cfg(test)]
mod tests;
mod tokens;
mod users;
mod wal;
mod writer;

use std::path::Path;
use std::time::Duration;

use inlet_shared::config::{SqliteSynchronous, StoreBackend};

pub use activity::{ActivityBucket, ActivityQuery, MAX_BUCKETS};
pub use backup::RestoredBackup;
pub use deliveries::{
    AttemptRecord, AttemptSettled, ClaimDue, Claimed, DeliveryToSend, DueClass, Lease, NextStep, RecordingGate,
};
pub use events::{FirstClaims, NewEvent, Recorded, StreamFollowed};
pub use operator::{
    AttemptRow, AuditLogEntry, AuditSelection, ContentRead, Cursor, DeadLetterSelection, DeliveryRow, EventContentRow,
    EventRow, EventSelection, EventStatusFilter, PageRequest, Totals,
};
use postgres::Postgres;
pub use replays::{
    BulkProgress, BulkReplayRow, Dismissed, NewBulkReplay, ReplayOrigin, ReplayOutcome, ReplayScope, ReplayedTo,
};
pub use search::{SearchHit, SearchPage, SearchQuery, Snippet};
pub use sessions::{KeptToken, SessionRow, SignIn};
use sqlite::Sqlite;
pub use tokens::ApiTokenRow;
pub use users::{Linked, LinkedAccountRow, ProviderAccount, Unlinked, UserRow};

use crate::model::UnixMs;

/// Handle to the store: cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// The engine behind a [`Store`].
#[derive(Clone)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl Store {
    /// Opens the store `[store]` names: the SQLite file `worker.database` (on the blocking
    /// pool), or the PostgreSQL database at `store.url`, migrated either way.
    ///
    /// # Errors
    ///
    /// As [`Store::open_sqlite`] and [`Store::connect_postgres`].
    pub async fn open(config: &inlet_shared::config::Config) -> Result<Store, StoreError> {
        match (config.store.backend, &config.store.url) {
            (StoreBackend::Postgres, Some(url)) => {
                Store::connect_postgres(
                    url.expose(),
                    config.store.ca_file.as_deref(),
                    config.store.pool_size,
                    config.store.statement_timeout,
                )
                .await
            }
            // Validation refuses postgres without a URL; SQLite is the default.
            _ => {
                let database = config.worker.database.clone();
                let synchronous = config.worker.sqlite_synchronous;
                tokio::task::spawn_blocking(move || Store::open_sqlite(&database, synchronous))
                    .await
                    .map_err(|_| StoreError::Join)?
            }
        }
    }

    /// Opens (creating) a SQLite database, applies migrations and starts the writer thread.
    /// Blocking: call it from `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InUse`] when another process holds the file, [`StoreError::Open`] when
    /// it cannot be opened or migrated.
    pub fn open_sqlite(path: &Path, synchronous: SqliteSynchronous) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::Sqlite(Sqlite::open(path, synchronous)?) })
    }

    /// Connects to PostgreSQL at `url` (its `sslmode` checked against the CA in `ca_file`) with a
    /// pool of `pool_size` connections, each statement
    /// cancelled after `statement_timeout` (zero: the server's setting), and applies the
    /// migrations not applied yet (once, also when several workers start together).
    ///
    /// # Errors
    ///
    /// [`StoreError::Postgres`] when the URL is invalid, the server cannot be reached or a
    /// migration fails.
    pub async fn connect_postgres(
        url: &str,
        ca_file: Option<&Path>,
        pool_size: usize,
        statement_timeout: Duration,
    ) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::Postgres(Postgres::connect(url, ca_file, pool_size, statement_timeout).await?) })
    }

    /// Whether the store takes writes: the SQLite writer is running and its last group
    /// committed; PostgreSQL's last write did not fail for want of a connection.
    pub fn is_healthy(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(store) => store.is_healthy(),
            Backend::Postgres(store) => store.is_healthy(),
        }
    }

    /// This database's identity (random, made once by the first migration).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn identity(&self) -> Result<String, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => store.identity().await,
            Backend::Postgres(store) => store.identity().await,
        }
    }

    /// Dead-letter backlog, pending count and the oldest pending receipt time.
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => store.stats().await,
            Backend::Postgres(store) => store.stats().await,
        }
    }

    /// The SQLite backend, for tests that look at its tables.
    #[cfg(test)]
    #[allow(clippy::panic)]
    fn sqlite(&self) -> &Sqlite {
        match &self.backend {
            Backend::Sqlite(store) => store,
            Backend::Postgres(_) => panic!("a SQLite store was expected"),
        }
    }
}

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
    /// PostgreSQL (or the pool in front of it) said no.
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    /// Opening or migrating failed.
    #[error("cannot open database {path}: {step} failed")]
    Open {
        /// The database path.
        path: String,
        /// Which step of opening failed.
        step: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Gauges the stats task publishes.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Dead-lettered deliveries.
    pub dead_letters: i64,
    /// Pending deliveries.
    pub pending: i64,
    /// Receipt time of the oldest event with a pending delivery, Unix ms.
    pub oldest_pending_received_at: Option<UnixMs>,
    /// Recorded events the search index has not taken yet, counted up to
    /// [`search::INDEX_LAG_COUNTED_UP_TO`] (SQLite; always 0 on PostgreSQL, which indexes an event as it
    /// records it).
    pub search_index_lag: i64,
    /// Per destination, the ordered deliveries waiting for an earlier delivery of their key
    /// (destinations with none are left out).
    pub ordered_waiting: Vec<(String, i64)>,
}

/// A fresh store in a new temp dir (in a directory the store has to create), for the store's
/// own tests; the dir goes when the returned handle is dropped.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("nested/inlet.db"), SqliteSynchronous::Full).unwrap();
    (dir, store)
}

/// A fresh PostgreSQL store on a server of its own; the server stops when the returned handle
/// is dropped.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
async fn open_temp_postgres() -> (inlet_shared::test_util::TestPostgres, Store) {
    let server = tokio::task::spawn_blocking(inlet_shared::test_util::TestPostgres::start).await.unwrap();
    let store = Store::connect_postgres(&server.url(), None, 4, Duration::from_secs(10)).await.unwrap();
    (server, store)
}
