//! Keeping the WAL small: passive checkpoints on their own thread, and a RESTART between the
//! writer's groups once the WAL has grown past its threshold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;

use super::sqlite::BUSY_TIMEOUT;

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`], without blocking the
/// writer (PASSIVE), so the WAL stays small while commits only append to it.
pub(super) fn checkpoint_loop(
    pool: &r2d2::Pool<SqliteConnectionManager>,
    running: &AtomicBool,
    wal_restart: &AtomicBool,
) {
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
pub(super) fn checkpoint(
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
pub(super) fn restart_wal_if_wanted(connection: &rusqlite::Connection, wal_restart: &AtomicBool) {
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

/// WAL frames (pages) after which a checkpoint waits for readers so the WAL can start over:
/// 16,384 frames = 64 MiB with 4 KiB pages.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Size the WAL file is truncated to when it starts over (`journal_size_limit`).
pub(super) const WAL_KEPT_BYTES: i64 = 64 * 1024 * 1024;

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
