//! Online backups of the SQLite store (`inlet-worker backup`), and what a worker started on a
//! restored one does first.
//!
//! **How.** One `VACUUM INTO` on a connection of the backup's own, beside the running worker. It
//! reads the database in one read transaction, so the copy is the database as one commit left
//! it (WAL included), and in WAL mode a reader never blocks the worker's writer: recording and
//! deliveries go on. While it runs, checkpoints cannot move past its snapshot, so the WAL grows
//! by what the worker writes meanwhile and shrinks again at the next checkpoint after it. The
//! online backup API (`sqlite3_backup_step`) was the other choice: copied in steps from another
//! process, it starts over whenever the worker commits — which a busy worker does every few
//! milliseconds — and copied in one step it is the same single read transaction as `VACUUM
//! INTO`, without the compaction and with a feature flag more.
//!
//! The copy is written beside the target under a temporary name, made a single self-contained
//! file (rollback journal, not WAL), marked as a backup (when it was taken, and where recording
//! resumes: see [`RestoredBackup`]), checked (`PRAGMA integrity_check`, `foreign_key_check`,
//! and the count tables against the rows they count), synced to disk (`VACUUM INTO` does not
//! sync what it writes), and only then linked under the target's name, which fails if that name
//! exists: a backup never replaces a file, and a failed or interrupted one leaves none.
//!
//! **Restoring.** A worker started on a restored copy finds its mark
//! ([`Store::restored_backup`]), records the intake stream again from the mark's sequence, and
//! clears the mark. Events the copy holds come again as duplicates; those recorded after the
//! backup are recorded again with the row ids they had (row ids follow the stream: see
//! `events::follow_stream`), so their deliveries keep their ids — and `Idempotency-Key`s.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::copy::TABLES;
use super::migrate::MIGRATIONS;
use super::sqlite::{BUSY_TIMEOUT, Sqlite};
use crate::model::UnixMs;

/// A backup's mark, as a worker started on the restored copy finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredBackup {
    /// When the backup was taken.
    pub taken_at: UnixMs,
    /// The first stream sequence the copy may lack: every message before it had been recorded
    /// (and acked) before the copy was made.
    pub replay_from: u64,
    /// The creation time of the stream the backed-up store recorded, if known.
    pub stream_created_ms: Option<i64>,
}

/// What a backup wrote and found in its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// When the copy was taken.
    pub taken_at: UnixMs,
    /// The schema version of the copy.
    pub schema_version: i64,
    /// Rows per table, in [`TABLES`] order.
    pub tables: Vec<(&'static str, i64)>,
    /// The newest event's row id and stream sequence, if any.
    pub newest_event: Option<(i64, i64)>,
    /// Where a worker started on the restored copy resumes recording.
    pub replay_from: u64,
}

impl BackupSummary {
    /// Rows of `table` in the copy (zero for a table not counted).
    pub fn rows(&self, table: &str) -> i64 {
        self.tables.iter().find(|(name, _)| *name == table).map_or(0, |(_, rows)| *rows)
    }
}

impl std::fmt::Display for BackupSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "backup: {} ({} bytes)", self.path.display(), self.bytes)?;
        writeln!(f, "taken at (Unix ms): {}", self.taken_at.0)?;
        writeln!(f, "schema version: {}", self.schema_version)?;
        writeln!(f, "integrity check: ok")?;
        writeln!(f, "rows:")?;
        for (table, rows) in &self.tables {
            writeln!(f, "  {table:<22}{rows:>12}")?;
        }
        match self.newest_event {
            Some((id, sequence)) => writeln!(f, "newest event: row {id}, stream sequence {sequence}")?,
            None => writeln!(f, "newest event: none")?,
        }
        writeln!(f, "restored, it records the stream again from sequence {}", self.replay_from)
    }
}

/// Why a backup failed. A failed backup leaves no file at the target.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// `worker.database` names no file.
    #[error("the SQLite database {path} (worker.database) does not exist")]
    NoSource {
        /// The path the configuration names.
        path: String,
    },
    /// The target exists: a backup never replaces a file.
    #[error("{path} exists: a backup never replaces a file; give another path or move it away")]
    Exists {
        /// The target.
        path: String,
    },
    /// The store's schema is not this binary's: back up with the binary the worker runs.
    #[error(
        "the store is at schema version {found}, this inlet-worker at {expected}: back up with the binary the worker runs"
    )]
    Schema {
        /// The store's newest applied migration.
        found: i64,
        /// This binary's newest migration.
        expected: i64,
    },
    /// A step failed in SQLite.
    #[error("backup failed while {step}")]
    Sqlite {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error("backup failed while {step} {path}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The copy failed its checks.
    #[error("the copy failed its check: {problems}")]
    Corrupt {
        /// What `integrity_check`, `foreign_key_check` or the count check reported.
        problems: String,
    },
    /// Shutdown was asked for while the copy ran.
    #[error("interrupted: no backup was written")]
    Interrupted,
    /// The blocking task failed.
    #[error("the backup task failed")]
    Join,
}

/// Copies the SQLite store at `database` to `to` while a worker may be running on it, marks the
/// copy to resume recording from stream sequence `replay_from`, checks it, and returns what it
/// holds (see the module docs). `shutdown` interrupts the copy.
///
/// # Errors
///
/// [`BackupError::NoSource`] when there is no file at `database`, [`BackupError::Exists`] when
/// `to` exists, [`BackupError::Schema`] when the store's schema is not this binary's,
/// [`BackupError::Corrupt`] when the copy fails its checks, [`BackupError::Interrupted`] on
/// shutdown, and the others when a step fails. No file is left at `to` on error.
pub async fn backup(
    database: PathBuf,
    to: PathBuf,
    replay_from: u64,
    shutdown: CancellationToken,
) -> Result<BackupSummary, BackupError> {
    let source = tokio::task::spawn_blocking(move || open_source(&database)).await.map_err(|_| BackupError::Join)??;
    let interrupt = source.get_interrupt_handle();
    let copy = tokio::task::spawn_blocking(move || write_backup(&source, &to, replay_from));
    tokio::pin!(copy);
    tokio::select! {
        copied = &mut copy => copied.map_err(|_| BackupError::Join)?,
        () = shutdown.cancelled() => {
            // The copy in progress ends with `Interrupted` and removes what it wrote; a copy
            // already made stands.
            interrupt.interrupt();
            copy.await.map_err(|_| BackupError::Join)?
        }
    }
}

/// The backup's own connection to the live database: read-write (a read-only connection cannot
/// recover a WAL left by a crash) but never writing, and without creating a missing file.
fn open_source(database: &Path) -> Result<rusqlite::Connection, BackupError> {
    if !database.is_file() {
        return Err(BackupError::NoSource { path: database.display().to_string() });
    }
    let sqlite = |step| move |source| BackupError::Sqlite { step, source };
    let connection = rusqlite::Connection::open_with_flags(
        database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the database"))?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite("opening the database"))?;
    let found: i64 = connection
        .query_row("SELECT coalesce(max(version), 0) FROM schema_migrations", [], |row| row.get(0))
        .map_err(sqlite("reading the schema version"))?;
    let expected = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if found != expected {
        return Err(BackupError::Schema { found, expected });
    }
    Ok(connection)
}

fn write_backup(source: &rusqlite::Connection, to: &Path, replay_from: u64) -> Result<BackupSummary, BackupError> {
    let exists = |path: &Path| BackupError::Exists { path: path.display().to_string() };
    if to.symlink_metadata().is_ok() {
        return Err(exists(to));
    }
    let file_name = to.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = to.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    let result = write_partial(source, &partial, replay_from).and_then(|summary| {
        // A hard link fails when the name exists, where a rename would replace it.
        std::fs::hard_link(&partial, to).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => exists(to),
            _ => BackupError::Io { step: "linking the copy to", path: to.display().to_string(), source },
        })?;
        sync_directory(to)?;
        Ok(BackupSummary { path: to.to_owned(), ..summary })
    });
    // The partial file goes whatever happened (on success its content is the target's).
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut name = partial.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
    result
}

/// Makes the checked, synced copy at `partial`.
fn write_partial(
    source: &rusqlite::Connection,
    partial: &Path,
    replay_from: u64,
) -> Result<BackupSummary, BackupError> {
    let sqlite = |step| move |source| BackupError::Sqlite { step, source };
    let path = partial.to_str().ok_or_else(|| BackupError::Io {
        step: "naming",
        path: partial.display().to_string(),
        source: std::io::Error::other("the path is not UTF-8"),
    })?;
    let taken_at = UnixMs::now();
    source.execute("VACUUM INTO ?1", [path]).map_err(|error| match error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error { code: rusqlite::ErrorCode::OperationInterrupted, .. },
            _,
        ) => BackupError::Interrupted,
        error => BackupError::Sqlite { step: "copying the database (VACUUM INTO)", source: error },
    })?;
    {
        let copy = rusqlite::Connection::open_with_flags(partial, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(sqlite("opening the copy"))?;
        // One self-contained file: no -wal beside it to be forgotten when it is copied around.
        copy.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(())).map_err(sqlite("making the copy one file"))?;
        copy.execute(
            "UPDATE store_identity SET backup_taken_at_ms = ?1, backup_replay_from_sequence = ?2",
            rusqlite::params![taken_at, i64::try_from(replay_from).unwrap_or(i64::MAX)],
        )
        .map_err(sqlite("marking the copy"))?;
    }
    let mut summary = verify(partial)?;
    summary.taken_at = taken_at;
    summary.replay_from = replay_from;
    std::fs::File::open(partial).and_then(|file| file.sync_all()).map_err(|source| BackupError::Io {
        step: "syncing",
        path: partial.display().to_string(),
        source,
    })?;
    Ok(summary)
}

/// Checks the SQLite database at `path` — `PRAGMA integrity_check`, `PRAGMA foreign_key_check`,
/// the count tables against the rows they count — and counts its rows. `taken_at` and
/// `replay_from` of the answer are the file's backup mark (zero without one).
///
/// # Errors
///
/// [`BackupError::Corrupt`] naming what the checks found; [`BackupError::Sqlite`] when the file
/// cannot be read.
pub fn verify(path: &Path) -> Result<BackupSummary, BackupError> {
    // A page damaged badly enough makes the reads themselves fail.
    let sqlite = |step| {
        move |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                BackupError::Corrupt { problems: format!("{step}: {source}") }
            }
            _ => BackupError::Sqlite { step, source },
        }
    };
    let connection = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite("opening the copy"))?;
    let integrity: Vec<String> = connection
        .prepare("PRAGMA integrity_check")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .map_err(sqlite("checking the copy's integrity"))?;
    if integrity != ["ok"] {
        return Err(BackupError::Corrupt { problems: integrity.join("; ") });
    }
    let foreign_keys: Vec<String> = connection
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| {
                    Ok(format!(
                        "{} row {:?} → {}",
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, String>(2)?
                    ))
                })?
                .collect()
        })
        .map_err(sqlite("checking the copy's foreign keys"))?;
    if !foreign_keys.is_empty() {
        return Err(BackupError::Corrupt {
            problems: format!("rows without their parent: {}", foreign_keys.join("; ")),
        });
    }
    for (counts, counted) in [
        (
            "SELECT route_status, '', n FROM event_counts WHERE n <> 0 ORDER BY 1, 2",
            "SELECT route_status, '', count(*) FROM events GROUP BY 1 ORDER BY 1, 2",
        ),
        (
            "SELECT destination, status, n FROM delivery_counts WHERE n <> 0 ORDER BY 1, 2",
            "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2 ORDER BY 1, 2",
        ),
    ] {
        let read = |sql: &str| -> Result<Vec<(String, String, i64)>, rusqlite::Error> {
            connection.prepare(sql)?.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?.collect()
        };
        let (kept, actual) = (read(counts), read(counted));
        let (kept, actual) = (kept.map_err(sqlite("reading the counts")), actual.map_err(sqlite("counting rows")));
        let (kept, actual) = (kept?, actual?);
        if kept != actual {
            return Err(BackupError::Corrupt { problems: format!("counts kept {kept:?}, rows counted {actual:?}") });
        }
    }
    let mut tables = Vec::with_capacity(TABLES.len());
    for &table in TABLES {
        let rows = connection
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0))
            .map_err(sqlite("counting rows"))?;
        tables.push((table, rows));
    }
    let newest_event = connection
        .query_row("SELECT id, stream_sequence FROM events ORDER BY id DESC LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map(Some)
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            error => Err(error),
        })
        .map_err(sqlite("reading the newest event"))?;
    let schema_version = connection
        .query_row("SELECT coalesce(max(version), 0) FROM schema_migrations", [], |row| row.get(0))
        .map_err(sqlite("reading the schema version"))?;
    let (taken_at, replay_from): (Option<i64>, Option<i64>) = connection
        .query_row("SELECT backup_taken_at_ms, backup_replay_from_sequence FROM store_identity", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(sqlite("reading the backup mark"))?;
    let bytes = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
    Ok(BackupSummary {
        path: path.to_owned(),
        bytes,
        taken_at: UnixMs(taken_at.unwrap_or(0)),
        schema_version,
        tables,
        newest_event,
        replay_from: replay_from.and_then(|sequence| u64::try_from(sequence).ok()).unwrap_or(0),
    })
}

/// Syncs the directory holding `path`, so that the new name survives a power cut.
fn sync_directory(path: &Path) -> Result<(), BackupError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(directory).and_then(|dir| dir.sync_all()).map_err(|source| BackupError::Io {
        step: "syncing the directory of",
        path: path.display().to_string(),
        source,
    })
}

impl Sqlite {
    pub async fn follow_stream(&self, stream_created_ms: i64) -> Result<super::StreamFollowed, StoreError> {
        self.write(move |connection| super::events::follow_stream(connection, stream_created_ms)).await
    }

    pub async fn restored_backup(&self) -> Result<Option<RestoredBackup>, StoreError> {
        self.read(|connection| {
            let (taken_at, replay_from, stream_created_ms): (Option<i64>, Option<i64>, Option<i64>) = connection
                .query_row(
                    "SELECT backup_taken_at_ms, backup_replay_from_sequence, event_ids_stream_created_ms
                       FROM store_identity",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?;
            Ok(replay_from.map(|sequence| RestoredBackup {
                taken_at: UnixMs(taken_at.unwrap_or(0)),
                replay_from: u64::try_from(sequence).unwrap_or(1).max(1),
                stream_created_ms,
            }))
        })
        .await
    }

    pub async fn clear_restored_backup(&self) -> Result<(), StoreError> {
        self.write(|connection| {
            connection
                .execute("UPDATE store_identity SET backup_taken_at_ms = NULL, backup_replay_from_sequence = NULL", [])
                .map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use inlet_shared::config::SqliteSynchronous;

    use super::*;
    use crate::model::{DeliveryId, EventRowId};
    use crate::store::events::{FirstClaims, NewEvent, Recorded};
    use crate::store::tests::event;
    use crate::store::{Store, StreamFollowed};

    const STREAM: i64 = 1_700_000_000_000;

    fn at(sequence: u64, id: &str) -> NewEvent {
        NewEvent { stream_sequence: sequence, ..event(id, &format!("{{\"id\":\"{id}\"}}"), &["sink"]) }
    }

    /// Records `events` one batch each; returns the delivery id each new one got.
    async fn record(store: &Store, events: &[NewEvent]) -> Vec<DeliveryId> {
        let mut ids = Vec::new();
        for event in events {
            let recorded = store.record(vec![event.clone()], FirstClaims::all(UnixMs::now())).await.unwrap();
            match recorded.into_iter().next().unwrap() {
                Recorded::New { deliveries, .. } => ids.push(deliveries[0].delivery.delivery_id.clone()),
                Recorded::Duplicate { .. } => panic!("{} recorded twice", event.event_id),
            }
        }
        ids
    }

    /// A restored backup records the messages after it again, in stream order, while the
    /// original recorded them out of order (a redelivery): the same events get the same row ids
    /// and delivery ids, and no id goes to two events.
    #[tokio::test]
    async fn a_restored_backup_gives_the_events_it_records_again_the_ids_they_had() {
        let dir = tempfile::tempdir().unwrap();
        let original = Store::open_sqlite(&dir.path().join("inlet.db"), SqliteSynchronous::Full).unwrap();
        assert_eq!(original.follow_stream(STREAM).await.unwrap(), StreamFollowed::First);
        assert_eq!(original.follow_stream(STREAM).await.unwrap(), StreamFollowed::Same);
        let before = record(&original, &[at(1, "a"), at(2, "b")]).await;
        assert_eq!(before, [DeliveryId::of(EventRowId(1), "sink"), DeliveryId::of(EventRowId(2), "sink")]);

        let copy = dir.path().join("backup.db");
        let summary = backup(dir.path().join("inlet.db"), copy.clone(), 3, CancellationToken::new()).await.unwrap();
        assert_eq!((summary.rows("events"), summary.rows("deliveries"), summary.replay_from), (2, 2, 3));
        assert_eq!(summary.newest_event, Some((2, 2)));

        // After the backup: 5 before 3 and 4.
        let after = [at(3, "c"), at(4, "d"), at(5, "e")];
        let original_ids = record(&original, &[after[2].clone(), after[0].clone(), after[1].clone()]).await;
        drop(original);

        let restored_path = dir.path().join("restored.db");
        std::fs::copy(&copy, &restored_path).unwrap();
        let restored = Store::open_sqlite(&restored_path, SqliteSynchronous::Full).unwrap();
        let mark = restored.restored_backup().await.unwrap().expect("a backup's mark");
        assert_eq!((mark.replay_from, mark.stream_created_ms), (3, Some(STREAM)));
        assert_eq!(restored.follow_stream(STREAM).await.unwrap(), StreamFollowed::Same);
        let again = record(&restored, &after).await;
        assert_eq!(again, [original_ids[1].clone(), original_ids[2].clone(), original_ids[0].clone()]);
        restored.clear_restored_backup().await.unwrap();
        assert_eq!(restored.restored_backup().await.unwrap(), None);

        // A stream made again starts above every id given.
        assert_eq!(restored.follow_stream(STREAM + 1).await.unwrap(), StreamFollowed::Another);
        assert_eq!(record(&restored, &[at(1, "f")]).await, [DeliveryId::of(EventRowId(6), "sink")]);
        // A sequence seen twice (not one stream's messages) never shares an id either.
        assert_eq!(record(&restored, &[at(1, "g")]).await, [DeliveryId::of(EventRowId(7), "sink")]);
    }

    #[tokio::test]
    async fn a_backup_never_replaces_a_file_and_leaves_none_when_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("inlet.db"), SqliteSynchronous::Full).unwrap();
        record(&store, &[at(1, "a")]).await;
        let target = dir.path().join("backup.db");
        std::fs::write(&target, b"keep me").unwrap();
        let refused = backup(dir.path().join("inlet.db"), target.clone(), 1, CancellationToken::new()).await;
        assert!(matches!(refused, Err(BackupError::Exists { .. })), "{refused:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        let missing = backup(dir.path().join("nope.db"), dir.path().join("x.db"), 1, CancellationToken::new()).await;
        assert!(matches!(missing, Err(BackupError::NoSource { .. })), "{missing:?}");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(!names.iter().any(|name| name.contains("partial") || name == "x.db"), "{names:?}");
    }

    /// The check finds a damaged copy: a page of an index overwritten.
    #[tokio::test]
    async fn the_check_finds_a_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("inlet.db"), SqliteSynchronous::Full).unwrap();
        let many: Vec<NewEvent> = (1..=300).map(|n| at(n, &format!("e-{n}"))).collect();
        store.record(many, FirstClaims::all(UnixMs::now())).await.unwrap();
        let copy = dir.path().join("backup.db");
        backup(dir.path().join("inlet.db"), copy.clone(), 1, CancellationToken::new()).await.unwrap();
        assert_eq!(verify(&copy).unwrap().rows("events"), 300);

        let root: i64 = rusqlite::Connection::open(&copy)
            .unwrap()
            .query_row("SELECT rootpage FROM sqlite_schema WHERE name = 'events_received_at'", [], |r| r.get(0))
            .unwrap();
        let page_size = 4096;
        let mut bytes = std::fs::read(&copy).unwrap();
        let start = usize::try_from(root - 1).unwrap() * page_size;
        bytes[start..start + page_size].fill(0xA5);
        std::fs::write(&copy, bytes).unwrap();
        let damaged = verify(&copy);
        assert!(matches!(damaged, Err(BackupError::Corrupt { .. })), "{damaged:?}");
    }
}
