//! Tests about SQLite itself, which have no PostgreSQL counterpart: they always run on SQLite
//! (whatever `INLET_TEST_STORE` says), and the PostgreSQL run of the suite leaves them out with
//! `--skip sqlite_only`. Everything else in the suite runs on both backends.
//!
//! - `backup`: `inlet-worker backup` of the SQLite file while the worker runs, restored after
//!   the file is lost. PostgreSQL is backed up with its own tools (docs/operations.md).
//! - `disk_full`: the disk under the SQLite file really full (a tmpfs in a mount namespace, the
//!   WAL's size, `SQLITE_FULL`, `PRAGMA integrity_check` on the copied file). On PostgreSQL the
//!   server's disk is the server's business; the worker sees failed statements, not ENOSPC.
//! - `file_lock`: another process holding SQLite's write lock (`BEGIN IMMEDIATE` on the file),
//!   and a second worker on the same file refused by the file lock. On PostgreSQL several workers
//!   share one database by design, and there is no file to lock.

mod backup;
mod disk_full;
mod file_lock;
