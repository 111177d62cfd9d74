//! Schema migrations: `schemas/sql/NNNN_*.sql`, applied in order at startup, each in its own
//! transaction, recorded in `schema_migrations`.

use rusqlite::{OptionalExtension, params};

use crate::model::UnixMs;

/// Migrations in order: (version, name, SQL). Mirrors the files in `schemas/sql/`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "0001_init", include_str!("../../../schemas/sql/0001_init.sql")),
    (2, "0002_operator", include_str!("../../../schemas/sql/0002_operator.sql")),
    (3, "0003_login_provider", include_str!("../../../schemas/sql/0003_login_provider.sql")),
    (4, "0004_login_link", include_str!("../../../schemas/sql/0004_login_link.sql")),
    (5, "0005_dead_letter_order", include_str!("../../../schemas/sql/0005_dead_letter_order.sql")),
    (6, "0006_replay_repair", include_str!("../../../schemas/sql/0006_replay_repair.sql")),
    (7, "0007_kept_tokens", include_str!("../../../schemas/sql/0007_kept_tokens.sql")),
    (8, "0008_drop_redundant_index", include_str!("../../../schemas/sql/0008_drop_redundant_index.sql")),
    (9, "0009_scheduler", include_str!("../../../schemas/sql/0009_scheduler.sql")),
    (10, "0010_drop_login_flows", include_str!("../../../schemas/sql/0010_drop_login_flows.sql")),
    (11, "0011_bulk_replay_previews", include_str!("../../../schemas/sql/0011_bulk_replay_previews.sql")),
    (12, "0012_bulk_replay_lease", include_str!("../../../schemas/sql/0012_bulk_replay_lease.sql")),
    (13, "0013_attempts_started", include_str!("../../../schemas/sql/0013_attempts_started.sql")),
    (14, "0014_trace_context", include_str!("../../../schemas/sql/0014_trace_context.sql")),
    (15, "0015_dismiss_and_replay_to", include_str!("../../../schemas/sql/0015_dismiss_and_replay_to.sql")),
    (16, "0016_event_ids_and_backups", include_str!("../../../schemas/sql/0016_event_ids_and_backups.sql")),
    (17, "0017_audit_log_at", include_str!("../../../schemas/sql/0017_audit_log_at.sql")),
    (18, "0018_event_search", include_str!("../../../schemas/sql/0018_event_search.sql")),
    (19, "0019_search_reads_events", include_str!("../../../schemas/sql/0019_search_reads_events.sql")),
    (20, "0020_ordering", include_str!("../../../schemas/sql/0020_ordering.sql")),
    (21, "0021_config_versions", include_str!("../../../schemas/sql/0021_config_versions.sql")),
];

/// Whether migration `name` is the one that made the search index (by its name without the
/// number, which changes when branches' migrations are merged): on PostgreSQL the events stored
/// before it are indexed after its SQL, by the worker's own rule of what is searchable. (SQLite's
/// writer indexes them itself since `*_search_reads_events`, which starts its index over.)
pub(super) fn makes_search_index(name: &str) -> bool {
    name.split_once('_').is_some_and(|(_, rest)| rest == "event_search")
}

/// Applies the migrations not applied yet.
///
/// Foreign keys are off while they run (a migration that rebuilds a table, as SQLite's
/// documented way to change a constraint does, drops the old table: with them on, that would
/// delete the rows referencing it), and each migration's transaction checks them before it
/// commits (`PRAGMA foreign_key_check`: a violation fails the migration, which rolls back).
/// They are on again afterwards; the pool's connections turn them on themselves.
pub(super) fn migrate(connection: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
    connection.execute_batch("PRAGMA foreign_keys = OFF")?;
    let migrated = apply(connection);
    connection.execute_batch("PRAGMA foreign_keys = ON")?;
    migrated
}

fn apply(connection: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
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
            let violation: Option<String> = transaction
                .query_row("SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1", [], |row| row.get(0))
                .optional()?;
            if let Some(table) = violation {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                    Some(format!("migration {name} leaves rows of {table} whose foreign key points nowhere")),
                ));
            }
            transaction.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
                params![version, name, UnixMs::now()],
            )?;
            tracing::info!(version, name, "applied database migration");
        }
        transaction.commit()?;
    }
    Ok(())
}

/// Test helper for both backends: every `.sql` file in `folder` (under `schemas/`) is a listed
/// migration and vice versa, numbered in order, each listed text the file's.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) fn assert_migrations_match_folder(folder: &str, migrations: &[(i64, &str, &str)]) {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(folder);
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let listed: Vec<String> = migrations.iter().map(|(_, name, _)| format!("{name}.sql")).collect();
    assert_eq!(files, listed, "{} and its MIGRATIONS disagree", folder.display());
    for (index, (version, name, sql)) in migrations.iter().enumerate() {
        assert_eq!(*version, i64::try_from(index).unwrap() + 1);
        assert!(name.starts_with(&format!("{version:04}_")));
        assert_eq!(std::fs::read_to_string(folder.join(format!("{name}.sql"))).unwrap(), *sql);
    }
}
