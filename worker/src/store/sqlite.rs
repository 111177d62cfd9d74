//! The SQLite backend's handle: the file lock, migrations, the writer and checkpoint threads,
//! and pooled reads (the module docs of [`super`] say how it works).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use inlet_shared::config::SqliteSynchronous;
use r2d2_sqlite::SqliteConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::deliveries::WAITS_FOR_EARLIER;
use super::migrate::migrate;
use super::search::index_lag;
use super::wal::{WAL_KEPT_BYTES, checkpoint_loop};
use super::writer::{Command, TypedWrite, writer_loop};
use super::{Stats, StoreError};

/// Pooled SQLite connections: the writer, the checkpoint thread, and readers.
const POOL_SIZE: u32 = 8;

/// The SQLite backend: one file, one writer thread, pooled readers (see the module docs).
#[derive(Clone)]
pub(super) struct Sqlite {
    pool: r2d2::Pool<SqliteConnectionManager>,
    pub(super) writer: mpsc::Sender<Command>,
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

/// Every pooled connection's busy timeout (set in the pool's connection init).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Sqlite {
    /// Opens (creating) the database, applies migrations and starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file cannot be opened or migrated.
    pub(super) fn open(path: &Path, synchronous: SqliteSynchronous) -> Result<Sqlite, StoreError> {
        let open_error = |step: &str, source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            step: step.to_owned(),
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| open_error("creating its directory", e.into()))?;
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
            .map_err(|e| open_error(&format!("opening lock file {}", lock_path.display()), e.into()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse { path: path.display().to_string() });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(open_error(&format!("locking {}", lock_path.display()), e.into()));
            }
        }
        // WAL mode and migrations on one connection first: WAL is persistent, and switching to
        // it from several pooled connections opening at once made some of them fail with
        // "database is locked" at startup.
        {
            let mut connection = rusqlite::Connection::open(path).map_err(|e| open_error("opening", e.into()))?;
            connection
                .execute_batch(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;",
                    BUSY_TIMEOUT.as_millis()
                ))
                .map_err(|e| open_error("switching to WAL", e.into()))?;
            migrate(&mut connection).map_err(|e| open_error("migration", e.into()))?;
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
            .map_err(|e| open_error("opening the connection pool", e.into()))?;
        let writer_connection = pool.get().map_err(|e| open_error("taking the writer's connection", e.into()))?;
        // Checkpoints run on their own thread (below), not inside the writer's commits, where
        // they would stall every group behind a database-file fsync. The writer's statement
        // journals stay in memory: every insert into a table with a trigger (the counts) inside
        // a group's transaction copies the pages it touches into a statement journal first,
        // which in a temp file cost a quarter of the worker's CPU under load (write syscalls;
        // docs/benchmarks.md). The writer's statements are bounded (batches, pruning in steps of
        // 5,000), so is that journal; readers keep temp files for their sorts.
        writer_connection
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_KEPT_BYTES}; PRAGMA temp_store = MEMORY;"
            ))
            .map_err(|e| open_error("configuring the writer's connection", e.into()))?;
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
            .map_err(|e| open_error("starting the writer thread", e.into()))?;
        let checkpoint_pool = pool.clone();
        let running = Arc::clone(&writer_alive);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_pool, &running, &wal_restart))
            .map_err(|e| open_error("starting the checkpoint thread", e.into()))?;
        // The writer and the checkpoint thread hold one connection each.
        let read_permits = Arc::new(tokio::sync::Semaphore::new(POOL_SIZE as usize - 2));
        Ok(Sqlite { pool, writer: sender, writer_alive, writes_failing, read_permits, _lock: Arc::new(lock) })
    }

    /// Whether the writer thread is running.
    pub fn is_healthy(&self) -> bool {
        self.writer_alive.load(Ordering::SeqCst)
            && !self.writer.is_closed()
            && !self.writes_failing.load(Ordering::SeqCst)
    }

    /// This database's identity (random, made once by the migration).
    ///
    /// # Errors
    ///
    /// When the read fails.
    pub async fn identity(&self) -> Result<String, StoreError> {
        self.read(|c| c.query_row("SELECT id FROM store_identity", [], |r| r.get(0))).await
    }

    /// Runs `work` through the single writer, in the next group transaction (in its own
    /// savepoint: an error undoes only this work). Answers after the commit.
    ///
    /// # Errors
    ///
    /// When `work` fails, the commit fails, or the writer is gone.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
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

    /// Runs `read` on a pooled connection on the blocking pool.
    ///
    /// # Errors
    ///
    /// When no connection is available, the query fails, or the task fails.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
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
            let search_index_lag = index_lag(connection)?;
            // From the partial index of unfinished ordered deliveries only.
            let ordered_waiting = connection
                .prepare_cached(&format!(
                    "SELECT d.destination, count(*) FROM deliveries d INDEXED BY deliveries_ordering_pending
                     WHERE d.status = 'pending' AND d.ordering_key IS NOT NULL AND {WAITS_FOR_EARLIER}
                     GROUP BY d.destination"
                ))?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(Stats { dead_letters, pending, oldest_pending_received_at: oldest, search_index_lag, ordered_waiting })
        })
        .await
    }
}
