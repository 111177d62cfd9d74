//! Copying a worker's SQLite store into PostgreSQL (`inlet-worker copy-store`, issue #15): the
//! way from the SQLite backend to the PostgreSQL one that keeps the history.
//!
//! **What is copied.** Every row of every table in [`TABLES`], with its ids: event ids, delivery
//! ids (the `Idempotency-Key` destinations have seen: a delivery attempted again after the move
//! is recognised as a repeat), SQLite's implicit rowid of each delivery into `deliveries.rowid`
//! (the API's delivery cursors and the newest-first dead-letter order), attempts, users, linked
//! accounts with their sealed provider tokens, sessions, API token hashes, bulk replays and their
//! previews, the audit log, the store identity, and the routing config versions with each
//! event's version and each replayed delivery's choice. Secrets are copied as stored (sealed or
//! hashed) and never printed. The config versions are merged into those a worker started on
//! the target may have written (the same version is the same routes). Not copied: `schema_migrations` (the target has its own) and the
//! counter tables `event_counts` / `delivery_counts`, which are counted once from the copied
//! rows (their triggers are off during the copy: see `copy_tables`); before committing they are
//! checked against SQLite's counters.
//!
//! **How.** The SQLite file is opened as a worker opens it: its lock file is taken, so a worker
//! running on it makes the copy fail at once ([`StoreError::InUse`]) and no worker can start on
//! it while the copy runs; its own migrations are applied, so the copy reads the newest SQLite
//! schema. The target is migrated, then everything happens in one PostgreSQL transaction: the
//! tables are locked and checked empty, each table is streamed with
//! `COPY … FROM STDIN (FORMAT binary)` from pages of SQLite rows (by rowid, bounded in rows and
//! bytes, so a large store is never held in memory at once), the row counts and counters are
//! checked, and every identity sequence is moved past the copied ids (new rows must not reuse an
//! id: a reused delivery id would look like a repeat to its destination). Any failure rolls the
//! whole copy back, leaving the target migrated and empty: the command can simply run again.
//!
//! **Columns come from the target's catalog** (`information_schema`) and are read from SQLite by
//! the same names (`deliveries.rowid` is SQLite's rowid): a column both schemas gain is copied
//! without a change here, and a column SQLite lacks fails the copy naming the table.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use inlet_shared::config::{Config, SqliteSynchronous, StoreBackend};
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::StoreError;
use super::postgres::migrate::migrate;
use super::postgres::{self, PgError};
use super::sqlite::Sqlite;

/// The tables copied, in an order that respects their foreign keys (events before their
/// deliveries, deliveries before attempts; users before linked accounts before sessions).
/// PostgreSQL's searchable texts (`event_search`) are made from the copied events, by the
/// worker's rule, as its search migration makes them (SQLite keeps none since version 19).
pub const TABLES: &[&str] = &[
    "config_versions",
    "events",
    "deliveries",
    "attempts",
    "users",
    "oauth_accounts",
    "sessions",
    "api_tokens",
    "bulk_replays",
    "bulk_replay_previews",
    "audit_log",
    "store_identity",
];

/// The counter tables and their key columns: checked after the copy, not copied.
const COUNTERS: &[(&str, &str)] = &[("event_counts", "route_status"), ("delivery_counts", "destination, status")];

/// At most this many SQLite rows per page.
const PAGE_ROWS: usize = 1_000;

/// A page ends early once its values hold this many bytes (event bodies may be large).
const PAGE_BYTES: usize = 16 << 20;

/// Why a copy failed. Nothing of a failed copy is committed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The configuration names no PostgreSQL target.
    #[error(
        "copy-store copies into PostgreSQL: the configuration must say [store] backend = \"postgres\" \
         with a url (the configuration the workers will run with afterwards)"
    )]
    TargetNotPostgres,
    /// `worker.database` names no file (a typo would otherwise copy a fresh, empty store).
    #[error("the SQLite database {path} (worker.database) does not exist")]
    NoSource {
        /// The path the configuration names.
        path: String,
    },
    /// The SQLite file cannot be opened: a worker holds it ([`StoreError::InUse`]), or it
    /// cannot be read or migrated.
    #[error("cannot open the SQLite store")]
    Source(#[source] StoreError),
    /// The target cannot be reached or migrated (its URL is never shown: it may hold a password).
    #[error("cannot reach or migrate the PostgreSQL target")]
    Target(#[source] PgError),
    /// The target already holds rows: a copy only goes into a database no worker has used.
    #[error(
        "target is not empty: table {table} holds rows; copy-store only copies into a database no worker has written to"
    )]
    TargetNotEmpty {
        /// The first non-empty table found.
        table: &'static str,
    },
    /// A target column whose type the copy does not know (a schema change this code lacks).
    #[error("cannot copy column {table}.{column}: PostgreSQL type {data_type} is not one the copy knows")]
    UnsupportedColumn {
        /// The table.
        table: &'static str,
        /// The column.
        column: String,
        /// Its `information_schema` data type.
        data_type: String,
    },
    /// Reading, writing or checking one table failed.
    #[error("copying table {table} failed")]
    Table {
        /// The table.
        table: &'static str,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The target holds another number of rows than SQLite after the copy.
    #[error("table {table}: SQLite holds {sqlite} rows, {copied} were copied")]
    RowsDiffer {
        /// The table.
        table: &'static str,
        /// Rows in SQLite.
        sqlite: i64,
        /// Rows written to PostgreSQL.
        copied: u64,
    },
    /// The counters the target's triggers filled differ from SQLite's.
    #[error("after the copy, {table} differs from SQLite's: SQLite {sqlite}, PostgreSQL {postgres}")]
    CountersDiffer {
        /// The counter table.
        table: &'static str,
        /// SQLite's non-zero counts.
        sqlite: String,
        /// PostgreSQL's non-zero sums.
        postgres: String,
    },
    /// The transaction did not commit: nothing was copied.
    #[error("committing the copy failed: nothing was copied")]
    Commit(#[source] tokio_postgres::Error),
}

/// What a copy did: rows copied per table, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySummary {
    /// (table, rows copied).
    pub tables: Vec<(&'static str, u64)>,
}

impl CopySummary {
    /// Rows copied into `table` (zero for a table not copied).
    pub fn rows(&self, table: &str) -> u64 {
        self.tables.iter().find(|(name, _)| *name == table).map_or(0, |(_, rows)| *rows)
    }
}

impl fmt::Display for CopySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rows copied:")?;
        for (table, rows) in &self.tables {
            writeln!(f, "  {table:<22}{rows:>12}")?;
        }
        Ok(())
    }
}

/// Copies the SQLite store `worker.database` into the PostgreSQL database `[store] url` of
/// `config`: the configuration the workers will run with once moved (see the module docs).
///
/// # Errors
///
/// [`CopyError::TargetNotPostgres`] when `[store] backend` is not `postgres`, else as [`copy`].
pub async fn copy_store(config: &Config) -> Result<CopySummary, CopyError> {
    match (config.store.backend, &config.store.url) {
        (StoreBackend::Postgres, Some(url)) => {
            copy(&config.worker.database, url.expose(), config.store.ca_file.as_deref()).await
        }
        _ => Err(CopyError::TargetNotPostgres),
    }
}

/// Copies the SQLite store at `database` into the PostgreSQL database at `url` (its `sslmode`
/// checked against the CA in `ca_file`).
///
/// # Errors
///
/// [`CopyError::NoSource`] when there is no file at `database`; [`CopyError::Source`] when a
/// worker holds it ([`StoreError::InUse`]) or it cannot be opened; [`CopyError::Target`] when
/// the target cannot be reached or migrated; [`CopyError::TargetNotEmpty`] when it holds rows;
/// the other variants when a table cannot be copied or checked. The target is unchanged
/// (apart from its migrations) whenever an error is returned.
pub async fn copy(database: &Path, url: &str, ca_file: Option<&Path>) -> Result<CopySummary, CopyError> {
    let sqlite = open_source(database.to_owned()).await?;
    // No statement timeout: copying a large table is one long COPY.
    let pool = postgres::connect(url, ca_file, 1, Duration::ZERO).map_err(CopyError::Target)?;
    migrate(&pool).await.map_err(|error| CopyError::Target(error.explain_refused_certificate(url, ca_file)))?;
    let mut client = pool.get().await.map_err(|e| CopyError::Target(e.into()))?;
    let transaction = client.transaction().await.map_err(|e| CopyError::Target(e.into()))?;
    let summary = copy_tables(&sqlite, &transaction).await?;
    transaction.commit().await.map_err(CopyError::Commit)?;
    Ok(summary)
}

/// Opens the SQLite file through the worker's own lock, refusing a path with no file.
async fn open_source(database: PathBuf) -> Result<Sqlite, CopyError> {
    tokio::task::spawn_blocking(move || {
        if !database.is_file() {
            return Err(CopyError::NoSource { path: database.display().to_string() });
        }
        // Nothing is written to it but its own migrations: the durability setting is moot.
        Sqlite::open(&database, SqliteSynchronous::Full).map_err(CopyError::Source)
    })
    .await
    .map_err(|_| CopyError::Source(StoreError::Join))?
}

/// Everything after connecting, inside the one transaction.
async fn copy_tables(sqlite: &Sqlite, transaction: &Transaction<'_>) -> Result<CopySummary, CopyError> {
    // EXCLUSIVE conflicts with every write and with another copy, not with reads: a second copy
    // started at the same moment waits, then finds this one's rows.
    transaction
        .batch_execute(&format!("SET LOCAL statement_timeout = 0; LOCK TABLE {} IN EXCLUSIVE MODE", TABLES.join(", ")))
        .await
        .map_err(|e| CopyError::Target(e.into()))?;
    // The store identity is the migration's own; config versions are written by any worker
    // that started on the target (merged below).
    for &table in TABLES.iter().filter(|table| !["store_identity", "config_versions"].contains(*table)) {
        let holds_rows: bool = transaction
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .map_err(pg_error(table))?
            .get(0);
        if holds_rows {
            return Err(CopyError::TargetNotEmpty { table });
        }
    }
    // The migration made the target an identity of its own; the SQLite store's is kept.
    transaction.execute("DELETE FROM store_identity", &[]).await.map_err(pg_error("store_identity"))?;
    // The count triggers are off while the rows arrive, and the counts are written once after
    // them: with the triggers on, every inserted event and delivery updates one counter row, and
    // a million updates of one row inside one transaction walk an ever longer chain of its
    // versions (a million events did not go in within 10 minutes that way; 30 s without). DDL
    // is transactional: a copy that fails leaves the triggers on.
    transaction
        .batch_execute(
            "ALTER TABLE events DISABLE TRIGGER event_counts_insert;
             ALTER TABLE deliveries DISABLE TRIGGER delivery_counts_insert",
        )
        .await
        .map_err(pg_error("event_counts"))?;

    let mut summary = CopySummary { tables: Vec::with_capacity(TABLES.len()) };
    for &table in TABLES {
        let copied = if table == "config_versions" {
            merge_config_versions(sqlite, transaction).await?
        } else {
            let columns = target_columns(transaction, table).await?;
            copy_table(sqlite, transaction, table, columns).await?
        };
        let in_sqlite = sqlite
            .read(move |c| c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)))
            .await
            .map_err(|source| CopyError::Table { table, source })?;
        if u64::try_from(in_sqlite).ok() != Some(copied) {
            return Err(CopyError::RowsDiffer { table, sqlite: in_sqlite, copied });
        }
        tracing::info!(table, rows = copied, "copied");
        summary.tables.push((table, copied));
    }
    transaction
        .batch_execute(
            "INSERT INTO event_counts (route_status, slot, n)
                 SELECT route_status, 0, count(*) FROM events GROUP BY 1
                 ON CONFLICT (route_status, slot) DO UPDATE SET n = event_counts.n + excluded.n;
             INSERT INTO delivery_counts (destination, status, slot, n)
                 SELECT destination, status, 0, count(*) FROM deliveries GROUP BY 1, 2
                 ON CONFLICT (destination, status, slot) DO UPDATE SET n = delivery_counts.n + excluded.n;
             ALTER TABLE events ENABLE TRIGGER event_counts_insert;
             ALTER TABLE deliveries ENABLE TRIGGER delivery_counts_insert",
        )
        .await
        .map_err(pg_error("event_counts"))?;
    let searchable = postgres::search::backfill(transaction).await.map_err(pg_error("event_search"))?;
    tracing::info!(events = searchable, "kept the searchable texts");
    check_counters(sqlite, transaction).await?;
    move_sequences(transaction).await?;
    Ok(summary)
}

/// The config versions' snapshots, merged into those a worker started on the target may have
/// written (one row per version, never two: the same version is the same routes); returns how
/// many of SQLite's are on the target now (all of them). A small table: read at once.
async fn merge_config_versions(sqlite: &Sqlite, transaction: &Transaction<'_>) -> Result<u64, CopyError> {
    const TABLE: &str = "config_versions";
    let rows: Vec<(String, String, i64)> = sqlite
        .read(|c| {
            c.prepare("SELECT version, routes_json, first_used_at_ms FROM config_versions")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .await
        .map_err(|source| CopyError::Table { table: TABLE, source })?;
    let insert = transaction
        .prepare(
            "INSERT INTO config_versions (version, routes_json, first_used_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (version) DO UPDATE SET first_used_at_ms = least(config_versions.first_used_at_ms,
                                                                         excluded.first_used_at_ms)",
        )
        .await
        .map_err(pg_error(TABLE))?;
    for (version, routes_json, first_used_at_ms) in &rows {
        transaction.execute(&insert, &[version, routes_json, first_used_at_ms]).await.map_err(pg_error(TABLE))?;
    }
    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
}

/// The value types of the target's columns the copy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// BIGINT (every SQLite INTEGER).
    Int8,
    /// TEXT.
    Text,
    /// BYTEA (SQLite BLOB).
    Bytea,
    /// BOOLEAN (a SQLite 0/1 flag).
    Bool,
}

impl Kind {
    fn of(data_type: &str) -> Option<Kind> {
        match data_type {
            "bigint" => Some(Kind::Int8),
            "text" => Some(Kind::Text),
            "bytea" => Some(Kind::Bytea),
            "boolean" => Some(Kind::Bool),
            _ => None,
        }
    }

    fn pg_type(self) -> Type {
        match self {
            Kind::Int8 => Type::INT8,
            Kind::Text => Type::TEXT,
            Kind::Bytea => Type::BYTEA,
            Kind::Bool => Type::BOOL,
        }
    }
}

/// One value read from SQLite, typed for its target column.
#[derive(Debug)]
enum Cell {
    Int8(Option<i64>),
    Text(Option<String>),
    Bytea(Option<Vec<u8>>),
    Bool(Option<bool>),
}

impl Cell {
    /// Reads column `index` of `row` as `kind`; a value of another type fails (never coerced).
    fn read(row: &rusqlite::Row<'_>, index: usize, kind: Kind) -> rusqlite::Result<Cell> {
        Ok(match kind {
            Kind::Int8 => Cell::Int8(row.get(index)?),
            Kind::Text => Cell::Text(row.get(index)?),
            Kind::Bytea => Cell::Bytea(row.get(index)?),
            Kind::Bool => Cell::Bool(match row.get::<_, Option<i64>>(index)? {
                None => None,
                Some(0) => Some(false),
                Some(1) => Some(true),
                Some(other) => return Err(rusqlite::Error::IntegralValueOutOfRange(index, other)),
            }),
        })
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Int8(value) => value,
            Cell::Text(value) => value,
            Cell::Bytea(value) => value,
            Cell::Bool(value) => value,
        }
    }

    /// Roughly the bytes it holds, for bounding a page.
    fn size(&self) -> usize {
        match self {
            Cell::Text(Some(text)) => text.len(),
            Cell::Bytea(Some(bytes)) => bytes.len(),
            _ => 8,
        }
    }
}

/// The target's columns of `table`, in order, with the kind each takes.
async fn target_columns(transaction: &Transaction<'_>, table: &'static str) -> Result<Vec<(String, Kind)>, CopyError> {
    let rows = transaction
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .map_err(pg_error(table))?;
    rows.iter()
        .map(|row| {
            let (column, data_type): (String, String) = (row.get(0), row.get(1));
            match Kind::of(&data_type) {
                Some(kind) if plain(&column) => Ok((column, kind)),
                _ => Err(CopyError::UnsupportedColumn { table, column, data_type }),
            }
        })
        .collect()
}

/// One page of SQLite rows.
struct Page {
    rows: Vec<Vec<Cell>>,
    /// The rowid of the last row, where the next page starts after.
    last: Option<i64>,
}

/// Streams every SQLite row of `table` into the target with one binary COPY; returns how many.
async fn copy_table(
    sqlite: &Sqlite,
    transaction: &Transaction<'_>,
    table: &'static str,
    columns: Vec<(String, Kind)>,
) -> Result<u64, CopyError> {
    let failed = |source: StoreError| CopyError::Table { table, source };
    let pg_failed = pg_error(table);
    let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
    let types: Vec<Type> = columns.iter().map(|(_, kind)| kind.pg_type()).collect();
    let kinds: Arc<[Kind]> = columns.iter().map(|(_, kind)| *kind).collect();
    // Keyset pages by rowid (`deliveries.rowid` is SQLite's own rowid, read like a column).
    let select: Arc<str> = format!(
        "SELECT _rowid_, {} FROM {table} WHERE _rowid_ > ?1 ORDER BY _rowid_ LIMIT {PAGE_ROWS}",
        names.join(", ")
    )
    .into();
    let sink = transaction
        .copy_in(&format!("COPY {table} ({}) FROM STDIN (FORMAT binary)", names.join(", ")))
        .await
        .map_err(pg_failed)?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    // SQLite hands out rowids from 1; only an explicitly stored i64::MIN would be missed, and
    // the row count check after the copy would report it.
    let mut after = i64::MIN;
    loop {
        let page = read_page(sqlite, Arc::clone(&select), Arc::clone(&kinds), after).await.map_err(failed)?;
        for row in &page.rows {
            let values: Vec<&(dyn ToSql + Sync)> = row.iter().map(Cell::as_sql).collect();
            writer.as_mut().write(&values).await.map_err(pg_failed)?;
        }
        match page.last {
            Some(last) => after = last,
            None => break,
        }
    }
    writer.as_mut().finish().await.map_err(pg_failed)
}

/// The rows of `select` after rowid `after`: up to [`PAGE_ROWS`], fewer once [`PAGE_BYTES`]
/// are held.
async fn read_page(sqlite: &Sqlite, select: Arc<str>, kinds: Arc<[Kind]>, after: i64) -> Result<Page, StoreError> {
    sqlite
        .read(move |c| {
            let mut statement = c.prepare_cached(&select)?;
            let mut rows = statement.query([after])?;
            let mut page = Page { rows: Vec::new(), last: None };
            let mut bytes = 0;
            while let Some(row) = rows.next()? {
                let cells = kinds
                    .iter()
                    .enumerate()
                    .map(|(index, kind)| Cell::read(row, index + 1, *kind))
                    .collect::<rusqlite::Result<Vec<Cell>>>()?;
                bytes += cells.iter().map(Cell::size).sum::<usize>();
                page.rows.push(cells);
                page.last = Some(row.get(0)?);
                if bytes >= PAGE_BYTES {
                    break;
                }
            }
            Ok(page)
        })
        .await
}

/// Compares the counters the target's triggers filled with SQLite's (non-zero counts only:
/// SQLite keeps a key at zero once its rows are gone, PostgreSQL sums slots).
async fn check_counters(sqlite: &Sqlite, transaction: &Transaction<'_>) -> Result<(), CopyError> {
    for &(table, keys) in COUNTERS {
        let sqlite_counts: BTreeMap<Vec<String>, i64> = sqlite
            .read(move |c| {
                let mut statement = c.prepare(&format!("SELECT {keys}, n FROM {table} WHERE n <> 0"))?;
                let width = statement.column_count();
                let rows = statement.query_map([], |row| {
                    let key = (0..width - 1).map(|i| row.get(i)).collect::<rusqlite::Result<Vec<String>>>()?;
                    Ok((key, row.get(width - 1)?))
                })?;
                rows.collect()
            })
            .await
            .map_err(|source| CopyError::Table { table, source })?;
        let rows = transaction
            .query(&format!("SELECT {keys}, sum(n)::bigint FROM {table} GROUP BY {keys} HAVING sum(n) <> 0"), &[])
            .await
            .map_err(pg_error(table))?;
        let postgres_counts: BTreeMap<Vec<String>, i64> = rows
            .iter()
            .map(|row| {
                let width = row.len();
                ((0..width - 1).map(|i| row.get(i)).collect(), row.get(width - 1))
            })
            .collect();
        if sqlite_counts != postgres_counts {
            return Err(CopyError::CountersDiffer {
                table,
                sqlite: format!("{sqlite_counts:?}"),
                postgres: format!("{postgres_counts:?}"),
            });
        }
    }
    Ok(())
}

/// Moves each identity sequence of the copied tables past the largest copied id (to 1 for an
/// empty table): rows were copied with their ids, which leaves the sequences where they were.
async fn move_sequences(transaction: &Transaction<'_>) -> Result<(), CopyError> {
    let identities = transaction
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )
        .await
        .map_err(|e| CopyError::Target(e.into()))?;
    for row in identities {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        // Only the copied tables (known names), with a plain column name the catalog just gave.
        let Some(&table) = TABLES.iter().find(|known| **known == table) else {
            continue;
        };
        if !plain(&column) {
            return Err(CopyError::UnsupportedColumn { table, column, data_type: "identity".into() });
        }
        transaction
            .query_one(
                &format!(
                    "SELECT setval(pg_get_serial_sequence($1, $2), coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
                ),
                &[&table, &column],
            )
            .await
            .map_err(pg_error(table))?;
    }
    Ok(())
}

/// A PostgreSQL error while copying or checking `table`.
fn pg_error(table: &'static str) -> impl Fn(tokio_postgres::Error) -> CopyError + Copy {
    move |e| CopyError::Table { table, source: PgError::from(e).into() }
}

/// Whether `name` is a plain lower-case identifier: column names go into SQL text on both
/// sides, unquoted (SQLite's rowid is only found by its bare name).
fn plain(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    //! Against real servers: a SQLite store filled through the store's own operations, copied
    //! into a fresh PostgreSQL, compared table by table.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use inlet_shared::config::{Config, Role, SqliteSynchronous};
    use inlet_shared::test_util::TestPostgres;

    use super::{CopyError, TABLES, copy, copy_store, plain};
    use crate::model::{
        AttemptOutcome, ConfigVersion, DeadLetterReason, DeliveryId, EventRowId, LeaseToken, ReplayConfig, UnixMs,
    };
    use crate::store::deliveries::{AttemptRecord, AttemptSettled, DueClass, NextStep};
    use crate::store::events::{FirstClaims, NewEvent};
    use crate::store::operator::DeadLetterSelection;
    use crate::store::postgres::{Pool, connect, text_rows};
    use crate::store::replays::{NewBulkReplay, ReplayOutcome, ReplayScope};
    use crate::store::sessions::KeptToken;
    use crate::store::tests::{due, event};
    use crate::store::users::tests::{account, sign_in};
    use crate::store::{Store, StoreError};

    /// The target's tables that are not copied: its migration ledger and the trigger-kept counters.
    /// Not copied: made on the target (the migrations' bookkeeping, the counters its triggers
    /// fill, PostgreSQL's searchable texts).
    const NOT_COPIED: &[&str] = &["schema_migrations", "event_counts", "delivery_counts", "event_search"];

    fn attempt(id: &DeliveryId, n: i64, outcome: AttemptOutcome, next: NextStep, token: LeaseToken) -> AttemptRecord {
        AttemptRecord {
            delivery_id: id.clone(),
            attempt: n,
            started_at: UnixMs(2_000 + n),
            duration_ms: 7,
            outcome,
            status_code: Some(if outcome == AttemptOutcome::Delivered { 200 } else { 503 }),
            error: (outcome != AttemptOutcome::Delivered).then(|| "upstream said no".to_owned()),
            response_snippet: Some("{\"ok\":false}".into()),
            next,
            lease_token: token,
        }
    }

    fn delivery(event: i64, destination: &str) -> DeliveryId {
        DeliveryId::of(EventRowId(event), destination)
    }

    /// Records `outcome` for `id` under `token`, which must still hold.
    async fn settle(
        store: &Store,
        id: &DeliveryId,
        n: i64,
        outcome: AttemptOutcome,
        next: NextStep,
        token: LeaseToken,
    ) {
        let settled = store.record_attempt(attempt(id, n, outcome, next, token)).await.unwrap();
        assert_ne!(settled, AttemptSettled::Superseded, "{id}");
    }

    /// A SQLite store at `dir/inlet.db` with rows in every copied table, made through the store's
    /// operations: pruned events (gaps in the ids), delivered, retried, dead-lettered, replayed
    /// and pending deliveries, a binary body, a signed-in user with a kept (sealed) token, an API
    /// token, a bulk replay and a preview. Closed (its lock released) before it is returned.
    async fn filled_sqlite(dir: &Path) -> PathBuf {
        let path = dir.join("inlet.db");
        let store = Store::open_sqlite(&path, SqliteSynchronous::Normal).unwrap();
        let now = UnixMs::now();
        let later = now.plus(Duration::from_secs(600));
        // Events 1 and 2, received long ago: pruned below once 2 is delivered.
        let old =
            |id: &str, destinations: &[&str]| NewEvent { received_at: UnixMs(0), ..event(id, "{}", destinations) };
        store.record(vec![old("old-unrouted", &[]), old("old", &["a"])], FirstClaims::all(later)).await.unwrap();
        settle(&store, &delivery(2, "a"), 1, AttemptOutcome::Delivered, NextStep::Delivered, LeaseToken::FIRST).await;
        // Events 3..=6 (6: unrouted; 5: a body that is not UTF-8); 3 and 4 routed by a kept
        // config version.
        let version = ConfigVersion::from_stored("c".repeat(64));
        store.register_config_version(version.clone(), "[]".into(), now).await.unwrap();
        let versioned =
            |id: &str, body: &str| NewEvent { config_version: Some(version.clone()), ..event(id, body, &["a"]) };
        let binary = NewEvent { body: bytes::Bytes::from_static(&[0, 159, 146, 150, 255]), ..event("e5", "", &["b"]) };
        let recorded = store
            .record(
                vec![
                    NewEvent { destinations: vec!["a".into(), "b".into()], ..versioned("e3", "{\"n\":3}") },
                    versioned("e4", "{\"n\":4}"),
                    binary,
                    event("e6", "{}", &[]),
                ],
                FirstClaims::all(later),
            )
            .await
            .unwrap();
        assert_eq!(recorded.len(), 4);
        settle(&store, &delivery(3, "a"), 1, AttemptOutcome::Delivered, NextStep::Delivered, LeaseToken::FIRST).await;
        // 3→b fails once, is claimed again as a retry and delivered.
        let retry_now = NextStep::RetryAt(UnixMs(now.0 - 1));
        settle(&store, &delivery(3, "b"), 1, AttemptOutcome::Transient, retry_now, LeaseToken::FIRST).await;
        let (claimed, _) = store
            .claim_due("b".into(), due(DueClass::Retry, 10, UnixMs::now(), UnixMs::now().plus(Duration::from_secs(60))))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let token = claimed[0].lease.token;
        settle(&store, &delivery(3, "b"), 2, AttemptOutcome::Delivered, NextStep::Delivered, token).await;
        // 4→a dead-lettered, then replayed; 5→b stays pending under its recording-time claim.
        let dead = NextStep::DeadLetter(DeadLetterReason::Permanent4xx);
        settle(&store, &delivery(4, "a"), 1, AttemptOutcome::Permanent, dead, LeaseToken::FIRST).await;
        let as_received = ReplayConfig::AsReceived;
        let replayed =
            store.replay(delivery(4, "a"), "ada@x".into(), ReplayScope::Operator, as_received).await.unwrap();
        assert_eq!(replayed, ReplayOutcome::Replayed { destination: "a".into(), config_version: Some(version) });
        let (claimed, _) = store
            .claim_due("a".into(), due(DueClass::First, 10, UnixMs::now(), UnixMs::now().plus(Duration::from_secs(60))))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "the replayed delivery is due again");
        let token = claimed[0].lease.token;
        settle(&store, &delivery(4, "a"), 2, AttemptOutcome::Permanent, dead, token).await;
        assert_eq!(store.prune(UnixMs(500)).await.unwrap(), 2, "events 1 and 2 (and 2's delivery) are gone");

        // The operator plane.
        let mut ada = sign_in(account("github", "42"), "ada@x", Role::Admin, "session-hash-1");
        ada.kept_token = Some(KeptToken { sealed: "v1.k1.sealed-token".into(), recheck_at: later });
        store.sign_in(ada).await.unwrap();
        store.create_api_token("ci".into(), "token-hash-1".into(), Role::Operator, "ada@x".into()).await.unwrap();
        let filter_json = "{\"destination\":\"a\"}".to_owned();
        let job = NewBulkReplay {
            actor: "ada@x".into(),
            filter_json: filter_json.clone(),
            rate_per_second: 5,
            total: 1,
            lease_until: later,
        };
        store.create_bulk_replay(job).await.unwrap();
        store.create_bulk_preview(DeadLetterSelection::default(), filter_json, "ada@x".into(), later).await.unwrap();
        path
    }

    /// Rows of `sql` on PostgreSQL, every column as text (the simple query protocol).
    async fn pg_rows(pool: &Pool, sql: &str) -> BTreeSet<Vec<Option<String>>> {
        text_rows(pool, sql).await.unwrap().into_iter().collect()
    }

    /// One value of `sql` on PostgreSQL.
    async fn pg_value(pool: &Pool, sql: &str) -> String {
        let rows = pg_rows(pool, sql).await;
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.into_iter().next().unwrap().remove(0).unwrap()
    }

    /// Rows of `sql` on SQLite, every column as text.
    async fn sqlite_rows(store: &Store, sql: String) -> BTreeSet<Vec<Option<String>>> {
        store
            .sqlite()
            .read(move |c| {
                let mut statement = c.prepare(&sql)?;
                let width = statement.column_count();
                let rows = statement.query_map([], |row| {
                    (0..width)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                                rusqlite::types::ValueRef::Text(text) => {
                                    Some(String::from_utf8_lossy(text).into_owned())
                                }
                                other => Some(format!("{other:?}")),
                            })
                        })
                        .collect::<Result<Vec<_>, rusqlite::Error>>()
                })?;
                rows.collect::<Result<BTreeSet<_>, _>>()
            })
            .await
            .unwrap()
    }

    /// The whole of `table` on both sides, as text; the documented type differences are
    /// rendered alike (BYTEA and BLOB as upper-case hex, BOOLEAN as 0/1), and
    /// `deliveries.rowid` is SQLite's rowid.
    async fn both(
        pool: &Pool,
        sqlite: &Store,
        table: &str,
    ) -> (BTreeSet<Vec<Option<String>>>, BTreeSet<Vec<Option<String>>>) {
        let catalog = pool.get().await.unwrap();
        let columns = catalog
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .unwrap();
        let (mut in_pg, mut in_sqlite) = (Vec::new(), Vec::new());
        for row in &columns {
            let (column, data_type): (String, &str) = (row.get(0), row.get(1));
            match data_type {
                "bytea" => {
                    in_pg.push(format!("upper(encode({column}, 'hex'))"));
                    in_sqlite.push(format!("hex({column})"));
                }
                "boolean" => {
                    in_pg.push(format!("{column}::int"));
                    in_sqlite.push(column);
                }
                _ => {
                    in_pg.push(column.clone());
                    in_sqlite.push(column);
                }
            }
        }
        let postgres = pg_rows(pool, &format!("SELECT {} FROM {table}", in_pg.join(", "))).await;
        let sqlite = sqlite_rows(sqlite, format!("SELECT {} FROM {table}", in_sqlite.join(", "))).await;
        (sqlite, postgres)
    }

    /// A copy keeps every row of every table with its ids (delivery ids, deliveries' rowids),
    /// the counters and the store identity; new rows get ids above the copied ones; the
    /// sessions and tokens work on PostgreSQL. Refused: a source a worker holds (before the
    /// target is touched), a source that does not exist, and a second copy into the same target.
    #[tokio::test]
    async fn a_copy_keeps_every_row_and_id_and_is_refused_twice_or_while_a_worker_holds_the_file() {
        let server = tokio::task::spawn_blocking(TestPostgres::start).await.unwrap();
        let url = server.url();
        let dir = tempfile::tempdir().unwrap();
        let path = filled_sqlite(dir.path()).await;

        // A worker holds the file: refused before the target is touched.
        let held = Store::open_sqlite(&path, SqliteSynchronous::Normal).unwrap();
        let refused = copy(&path, &url, None).await.unwrap_err();
        assert!(matches!(&refused, CopyError::Source(StoreError::InUse { .. })), "{refused:?}");
        let pool = connect(&url, None, 2, Duration::from_secs(10)).unwrap();
        let tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'";
        assert_eq!(pg_value(&pool, tables).await, "0", "nothing was created on the target");
        drop(held);
        // A typo in worker.database is not an empty store.
        let missing = dir.path().join("missing.db");
        assert!(matches!(copy(&missing, &url, None).await, Err(CopyError::NoSource { .. })));
        assert!(!missing.exists());

        // A worker started on the target first registered its config version (the one SQLite
        // has too, later): merged, not refused, one row with the earlier first use.
        let started = Store::connect_postgres(&url, None, 2, Duration::from_secs(10)).await.unwrap();
        let version = ConfigVersion::from_stored("c".repeat(64));
        started.register_config_version(version, "[]".into(), UnixMs::now()).await.unwrap();
        drop(started);

        let summary = copy(&path, &url, None).await.unwrap();
        assert_eq!(summary.tables.iter().map(|(table, _)| *table).collect::<Vec<_>>(), TABLES);
        assert_eq!(summary.rows("events"), 4, "{summary}");
        assert_eq!(summary.rows("deliveries"), 4, "{summary}");
        assert_eq!(summary.rows("attempts"), 5, "{summary}");

        // Every table of the target is copied or deliberately not.
        let target_tables: BTreeSet<String> =
            pg_rows(&pool, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
                .await
                .into_iter()
                .map(|row| row[0].clone().unwrap())
                .collect();
        let known: BTreeSet<String> = TABLES.iter().chain(NOT_COPIED).map(|t| (*t).to_owned()).collect();
        assert_eq!(target_tables, known);

        // Every row of every table, as text, the same on both sides (and none empty, so that
        // every table's copy is exercised).
        let sqlite = Store::open_sqlite(&path, SqliteSynchronous::Normal).unwrap();
        for table in TABLES {
            let (in_sqlite, in_pg) = both(&pool, &sqlite, table).await;
            assert!(!in_sqlite.is_empty(), "the fixture leaves {table} empty");
            assert_eq!(in_sqlite, in_pg, "{table}");
            assert_eq!(summary.rows(table), in_pg.len() as u64, "{table}");
        }
        // Spelled out: the ids the destinations know, the rowids the cursors use, the gaps.
        let ids = pg_rows(&pool, "SELECT id, rowid::text, event_rowid::text FROM deliveries").await;
        let expected: BTreeSet<Vec<Option<String>>> = [(3, "a", 2), (3, "b", 3), (4, "a", 4), (5, "b", 5)]
            .iter()
            .map(|(event, destination, rowid)| {
                vec![
                    Some(delivery(*event, destination).into_string()),
                    Some(rowid.to_string()),
                    Some(event.to_string()),
                ]
            })
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(pg_value(&pool, "SELECT string_agg(id::text, ',' ORDER BY id) FROM events").await, "3,4,5,6");
        assert_eq!(pg_value(&pool, "SELECT encode(body, 'hex') FROM events WHERE event_id = 'e5'").await, "009f9296ff");
        // The searchable texts were made from the copied bodies: every event's but e5's (binary).
        let searchable = "SELECT string_agg(e.event_id, ',' ORDER BY e.id) FROM event_search s JOIN events e ON e.id = s.event_rowid";
        assert_eq!(pg_value(&pool, searchable).await, "e3,e4,e6");
        let replayed = "SELECT concat_ws(' ', status, replays, replay_enqueued, attempt_base, lease_token) FROM deliveries WHERE rowid = 4";
        assert_eq!(pg_value(&pool, replayed).await, "dead_lettered 1 t 1 2");

        // The counters the triggers filled are SQLite's, and the true counts.
        let counters = [
            (
                "SELECT route_status, n FROM event_counts WHERE n <> 0",
                "SELECT route_status, sum(n) FROM event_counts GROUP BY 1",
            ),
            (
                "SELECT destination, status, n FROM delivery_counts WHERE n <> 0",
                "SELECT destination, status, sum(n) FROM delivery_counts GROUP BY 1, 2",
            ),
        ];
        for (in_sqlite, in_pg) in counters {
            assert_eq!(sqlite_rows(&sqlite, in_sqlite.to_owned()).await, pg_rows(&pool, in_pg).await, "{in_pg}");
        }
        let true_counts = pg_rows(&pool, "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2").await;
        assert_eq!(true_counts, pg_rows(&pool, counters[1].1).await);
        assert_eq!(true_counts.len(), 4, "a: delivered, dead_lettered; b: delivered, pending: {true_counts:?}");
        let identity = sqlite_rows(&sqlite, "SELECT id FROM store_identity".into()).await;
        assert_eq!(identity, pg_rows(&pool, "SELECT id FROM store_identity").await, "the store keeps its identity");

        // New rows get ids above the copied ones, for every identity column.
        let new_event = pg_value(
            &pool,
            "INSERT INTO events (source, event_id, id_origin, scheme, secret_index, received_at_ms, recorded_at_ms,
                 stream_sequence, headers_json, body, body_sha256, route_status)
             VALUES ('src', 'new', 'provider', 'github', 0, 1, 1, 1, '[]', '\\x00', 'x', 'unrouted') RETURNING id",
        )
        .await;
        assert_eq!(new_event, "7");
        // The count triggers, off during the copy, are on again: the new unrouted event is counted.
        let unrouted = "SELECT sum(n)::text FROM event_counts WHERE route_status = 'unrouted'";
        let counted = pg_value(&pool, unrouted).await.parse::<i64>().unwrap();
        let stored = pg_value(&pool, "SELECT count(*) FROM events WHERE route_status = 'unrouted'").await;
        assert_eq!(counted.to_string(), stored, "counted {counted}, stored {stored}");
        let identities = pg_rows(
            &pool,
            "SELECT table_name, column_name FROM information_schema.columns WHERE is_identity = 'YES' AND table_schema = 'public'",
        )
        .await;
        assert_eq!(identities.len(), 8, "{identities:?}");
        for row in identities {
            let (table, column) = (row[0].clone().unwrap(), row[1].clone().unwrap());
            let next = format!(
                "SELECT (nextval(pg_get_serial_sequence('{table}', '{column}')) > (SELECT max({column}) FROM {table}))::text"
            );
            assert_eq!(pg_value(&pool, &next).await, "true", "{table}.{column}");
        }

        // The people keep their access.
        let moved = Store::connect_postgres(&url, None, 2, Duration::from_secs(10)).await.unwrap();
        let session = moved.live_session("session-hash-1".into(), UnixMs::now()).await.unwrap().unwrap();
        assert_eq!((session.email.as_str(), session.role), ("ada@x", Role::Admin));
        assert_eq!(session.account.unwrap().token_sealed.as_deref(), Some("v1.k1.sealed-token"));
        let token = moved.live_api_token("token-hash-1".into()).await.unwrap().unwrap();
        assert_eq!((token.name.as_str(), token.role), ("ci", Role::Operator));

        // Once is enough: the second copy finds rows and changes nothing.
        drop(sqlite);
        let again = copy(&path, &url, None).await.unwrap_err();
        assert!(matches!(again, CopyError::TargetNotEmpty { table: "events" }), "{again:?}");
        assert!(again.to_string().starts_with("target is not empty"), "{again}");
        assert_eq!(pg_value(&pool, "SELECT count(*) FROM events").await, "5");
    }

    /// A value the target refuses half-way (a flag SQLite stored as 2) fails the copy naming
    /// its table, and rolls everything back: the target stays empty with its own identity, and
    /// the copy runs again once the value is fixed.
    #[tokio::test]
    async fn a_failed_copy_leaves_the_target_empty_and_can_run_again() {
        let server = tokio::task::spawn_blocking(TestPostgres::start).await.unwrap();
        let url = server.url();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inlet.db");
        let store = Store::open_sqlite(&path, SqliteSynchronous::Normal).unwrap();
        store
            .record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], FirstClaims::all(UnixMs(1)))
            .await
            .unwrap();
        let set = |value: i64| {
            move |c: &rusqlite::Connection| c.execute("UPDATE deliveries SET replay_enqueued = ?1", [value])
        };
        store.sqlite().write(set(2)).await.unwrap();
        drop(store);

        let failed = copy(&path, &url, None).await.unwrap_err();
        match &failed {
            CopyError::Table { table: "deliveries", source: StoreError::Sqlite(_) } => {}
            other => panic!("{other:?}"),
        }
        let pool = connect(&url, None, 1, Duration::from_secs(10)).unwrap();
        assert_eq!(
            pg_value(&pool, "SELECT count(*) FROM events").await,
            "0",
            "the events copied first were rolled back"
        );
        let store = Store::open_sqlite(&path, SqliteSynchronous::Normal).unwrap();
        let source_identity = sqlite_rows(&store, "SELECT id FROM store_identity".into()).await;
        assert_ne!(pg_rows(&pool, "SELECT id FROM store_identity").await, source_identity);
        assert_eq!(pg_value(&pool, "SELECT count(*) FROM store_identity").await, "1");

        store.sqlite().write(set(0)).await.unwrap();
        drop(store);
        let summary = copy(&path, &url, None).await.unwrap();
        assert_eq!((summary.rows("events"), summary.rows("deliveries")), (2, 2));
        assert_eq!(pg_value(&pool, "SELECT count(*) FILTER (WHERE NOT replay_enqueued) FROM deliveries").await, "2");
    }

    /// The configuration must name a PostgreSQL target: a SQLite one is refused before anything
    /// is opened.
    #[tokio::test]
    async fn copy_store_refuses_a_configuration_without_a_postgres_target() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("inlet.db");
        let text = format!("[worker]\ndatabase = \"{}\"\n", database.display());
        let config = Config::parse(&text, &BTreeMap::new()).unwrap();
        let refused = copy_store(&config).await.unwrap_err();
        assert!(matches!(refused, CopyError::TargetNotPostgres), "{refused:?}");
        assert!(!database.exists());
    }

    #[test]
    fn only_plain_names_go_into_sql() {
        assert!(plain("event_rowid") && plain("rowid"));
        assert!(!plain("") && !plain("id; DROP TABLE events") && !plain("Id") && !plain("\"id\""));
    }
}
