//! Schema migrations for PostgreSQL: `schemas/sql/postgres/NNNN_*.sql`, applied in order, each
//! in its own transaction, recorded in `schema_migrations` — exactly once, also when several
//! workers start at the same moment.
//!
//! **Serialised by a table lock.** Each migration's transaction first takes
//! `LOCK TABLE schema_migrations IN EXCLUSIVE MODE` (which conflicts with itself and with
//! writes, not with plain reads), then checks whether the migration is recorded, applies it and
//! records it. A second worker waits at the lock, then finds the migration recorded. Unlike a
//! session advisory lock this holds behind PgBouncer in transaction pooling mode: the lock
//! lives exactly as long as the transaction, on whichever server connection runs it.
//!
//! Migrations run without a statement timeout (`SET LOCAL statement_timeout = 0`): an index
//! build on a large table, or waiting for another worker's migration, may take longer than the
//! pool's timeout meant for queries. PostgreSQL's DDL is transactional, so a migration that
//! fails leaves nothing behind; a migration must therefore be able to run in a transaction.

use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;

use super::{PgError, Pool};
use crate::model::UnixMs;

/// Migrations in order: (version, name, SQL). Mirrors the files in `schemas/sql/postgres/`.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "0001_init", include_str!("../../../../schemas/sql/postgres/0001_init.sql")),
    (2, "0002_bulk_replay_previews", include_str!("../../../../schemas/sql/postgres/0002_bulk_replay_previews.sql")),
    (3, "0003_bulk_replay_lease", include_str!("../../../../schemas/sql/postgres/0003_bulk_replay_lease.sql")),
    (4, "0004_attempts_started", include_str!("../../../../schemas/sql/postgres/0004_attempts_started.sql")),
    (5, "0005_trace_context", include_str!("../../../../schemas/sql/postgres/0005_trace_context.sql")),
    (6, "0006_dismiss_and_replay_to", include_str!("../../../../schemas/sql/postgres/0006_dismiss_and_replay_to.sql")),
    (7, "0007_event_ids_and_backups", include_str!("../../../../schemas/sql/postgres/0007_event_ids_and_backups.sql")),
    (8, "0008_audit_log_at", include_str!("../../../../schemas/sql/postgres/0008_audit_log_at.sql")),
    (9, "0009_event_search", include_str!("../../../../schemas/sql/postgres/0009_event_search.sql")),
    (10, "0010_transform_failed", include_str!("../../../../schemas/sql/postgres/0010_transform_failed.sql")),
    (11, "0011_ordering", include_str!("../../../../schemas/sql/postgres/0011_ordering.sql")),
    (12, "0012_config_versions", include_str!("../../../../schemas/sql/postgres/0012_config_versions.sql")),
];

/// The ledger of applied migrations (same columns as SQLite's).
const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version        BIGINT PRIMARY KEY,
    name           TEXT   NOT NULL,
    applied_at_ms  BIGINT NOT NULL
)";

/// Applies the migrations `pool`'s database lacks, and returns the versions this call applied
/// (empty when the schema was up to date, or another worker applied them meanwhile).
///
/// # Errors
///
/// [`PgError::Migration`] when a migration's SQL fails (nothing of it is applied), or the
/// connection's or server's error otherwise.
pub async fn migrate(pool: &Pool) -> Result<Vec<i64>, PgError> {
    let mut client = pool.get().await?;
    create_ledger(&client).await?;
    // Up to date (every start after the first): done without taking the lock. The simple query
    // protocol needs no prepared statement, which PgBouncer's transaction mode may not keep.
    let recorded = recorded_versions(&client).await?;
    if MIGRATIONS.iter().all(|(version, _, _)| recorded.contains(version)) {
        return Ok(Vec::new());
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        let transaction = client.transaction().await?;
        transaction
            .batch_execute("SET LOCAL statement_timeout = 0; LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            .await?;
        let done: bool = transaction
            .query_one("SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", &[&version])
            .await?
            .get(0);
        if !done {
            transaction.batch_execute(sql).await.map_err(|source| PgError::Migration { name, source })?;
            if crate::store::migrate::makes_search_index(name) {
                let indexed = super::search::backfill(&transaction)
                    .await
                    .map_err(|source| PgError::Migration { name, source })?;
                tracing::info!(indexed, "indexed the stored events for search");
            }
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
                    &[&version, &name, &UnixMs::now().0],
                )
                .await?;
        }
        transaction.commit().await?;
        if !done {
            tracing::info!(version, name, "applied PostgreSQL migration");
            applied.push(version);
        }
    }
    Ok(applied)
}

/// `CREATE TABLE IF NOT EXISTS` is not safe against itself: of two sessions creating the table
/// at once, the second waits for the first and then fails on a catalog's unique index: the
/// table's (`duplicate_table`, or a bare `unique_violation`) or its row type's
/// (`duplicate_object`: "type … already exists", seen when two workers started together), or
/// finds the table. By then the first has committed, so once more finds it and does nothing.
async fn create_ledger(client: &tokio_postgres::Client) -> Result<(), PgError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match client.batch_execute(CREATE_LEDGER).await {
            Ok(()) => return Ok(()),
            Err(e)
                if tries < 3
                    && (e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        || e.code() == Some(&SqlState::DUPLICATE_TABLE)
                        || e.code() == Some(&SqlState::DUPLICATE_OBJECT)) =>
            {
                tracing::debug!("schema_migrations was created concurrently; checking again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The versions in `schema_migrations`.
async fn recorded_versions(client: &tokio_postgres::Client) -> Result<Vec<i64>, PgError> {
    let messages = client.simple_query("SELECT version FROM schema_migrations").await?;
    Ok(messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .collect())
}
