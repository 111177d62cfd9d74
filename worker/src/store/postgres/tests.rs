//! The PostgreSQL backend's tests, against a real server ([`TestPostgres`]): the migrations
//! apply once, also from four workers at the same moment, and give the schema SQLite has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use inlet_shared::config::{Role, SqliteSynchronous};
use inlet_shared::test_util::TestPostgres;

use super::{MIGRATIONS, Pool, connect, migrate};
use crate::model::{AttemptOutcome, BulkReplayStatus, DeadLetterReason, DeliveryStatus, RouteStatus};
use crate::store::Store;

const STATEMENT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Rows of one query as strings (every column read as text by the simple query protocol).
async fn rows(pool: &Pool, sql: &str) -> BTreeSet<Vec<String>> {
    let rows = super::text_rows(pool, sql).await.unwrap();
    rows.into_iter().map(|row| row.into_iter().map(Option::unwrap_or_default).collect()).collect()
}

/// Rows of one query against a SQLite store, every column as text.
async fn sqlite_rows(store: &Store, sql: &'static str) -> BTreeSet<Vec<String>> {
    store
        .sqlite()
        .read(move |c| {
            let mut statement = c.prepare(sql)?;
            let width = statement.column_count();
            let rows = statement.query_map([], |row| {
                (0..width)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
                            other => format!("{other:?}"),
                        })
                    })
                    .collect::<Result<Vec<String>, rusqlite::Error>>()
            })?;
            rows.collect::<Result<BTreeSet<_>, _>>()
        })
        .await
        .unwrap()
}

fn set(items: &[&[&str]]) -> BTreeSet<Vec<String>> {
    items.iter().map(|row| row.iter().map(|s| (*s).to_owned()).collect()).collect()
}

/// A fresh SQLite store (every SQLite migration applied), for comparison.
fn sqlite_store(dir: &Path) -> Store {
    Store::open_sqlite(&dir.join("inlet.db"), SqliteSynchronous::Normal).unwrap()
}

#[test]
fn migrations_match_the_schema_folder() {
    crate::store::migrate::assert_migrations_match_folder("sql/postgres", MIGRATIONS);
}

/// Same tables and columns as a fresh SQLite store (types differ), same primary and unique
/// keys, foreign keys and named indexes, except the differences the migration's header
/// explains, listed here.
#[tokio::test]
async fn the_migrated_schema_is_the_sqlite_schema() {
    let postgres = TestPostgres::start();
    let pool = connect(&postgres.url(), None, 2, STATEMENT_TIMEOUT).unwrap();
    assert_eq!(migrate(&pool).await.unwrap(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_store(dir.path());

    // Columns. SQLite's full-text index (event_text_fts: its FTS5 table, the tables FTS5
    // keeps it in, and event_text_fts_progress: how far SQLite's writer has indexed; before
    // it event_search_fts, left for a rolling upgrade) is PostgreSQL's GIN index
    // `event_search_text_trgm` over event_search, compared below.
    let sqlite_columns = sqlite_rows(
        &sqlite,
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE 'event_search_fts%' AND m.name NOT LIKE 'event_text_fts%'",
    )
    .await;
    let pg_columns =
        rows(&pool, "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'")
            .await;
    let pg_only = set(&[&["deliveries", "rowid"], &["event_counts", "slot"], &["delivery_counts", "slot"]]);
    assert_eq!(sqlite_columns.difference(&pg_columns).collect::<Vec<_>>(), Vec::<&Vec<String>>::new());
    assert_eq!(pg_columns.difference(&sqlite_columns).cloned().collect::<BTreeSet<_>>(), pg_only);
    let tables: BTreeSet<&str> = sqlite_columns.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(tables.len(), 16, "{tables:?}");

    // Primary and unique keys: (table, kind, columns in order).
    let mut sqlite_keys = sqlite_rows(
        &sqlite,
        "SELECT name, 'p', (SELECT group_concat(name, ',') FROM
             (SELECT p.name FROM pragma_table_info(m.name) p WHERE p.pk > 0 ORDER BY p.pk))
         FROM sqlite_master m
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE 'event_search_fts%' AND m.name NOT LIKE 'event_text_fts%'
             AND EXISTS (SELECT 1 FROM pragma_table_info(m.name) p WHERE p.pk > 0)",
    )
    .await;
    sqlite_keys.extend(
        sqlite_rows(
            &sqlite,
            "SELECT m.name, 'u', (SELECT group_concat(name, ',') FROM
                 (SELECT i.name FROM pragma_index_info(l.name) i ORDER BY i.seqno))
             FROM sqlite_master m, pragma_index_list(m.name) l
             WHERE m.type = 'table' AND l.origin = 'u' AND m.name NOT LIKE 'event_search_fts%' AND m.name NOT LIKE 'event_text_fts%'",
        )
        .await,
    );
    let pg_keys = rows(
        &pool,
        "SELECT c.conrelid::regclass::text, c.contype::text, string_agg(a.attname, ',' ORDER BY k.ord)
         FROM pg_constraint c
         CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k (attnum, ord)
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
         WHERE c.contype IN ('p', 'u') AND c.connamespace = 'public'::regnamespace
         GROUP BY c.oid, c.conrelid, c.contype",
    )
    .await;
    let sqlite_only = set(&[&["event_counts", "p", "route_status"], &["delivery_counts", "p", "destination,status"]]);
    let pg_only = set(&[
        &["event_counts", "p", "route_status,slot"],
        &["delivery_counts", "p", "destination,status,slot"],
        &["deliveries", "u", "rowid"],
    ]);
    assert_eq!(sqlite_keys.difference(&pg_keys).cloned().collect::<BTreeSet<_>>(), sqlite_only);
    assert_eq!(pg_keys.difference(&sqlite_keys).cloned().collect::<BTreeSet<_>>(), pg_only);

    // Foreign keys: (table, column, referenced table, referenced column, on delete).
    let sqlite_foreign = sqlite_rows(
        &sqlite,
        "SELECT m.name, f.\"from\", f.\"table\", f.\"to\", f.on_delete
         FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table'",
    )
    .await;
    let pg_foreign = rows(
        &pool,
        "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, fa.attname,
                CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'a' THEN 'NO ACTION' ELSE c.confdeltype::text END
         FROM pg_constraint c
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
         JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]
         WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    )
    .await;
    assert_eq!(sqlite_foreign, pg_foreign);
    assert_eq!(pg_foreign.len(), 6);

    // Named indexes (those behind a key are named after their constraint and compared above).
    let sqlite_indexes =
        sqlite_rows(&sqlite, "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").await;
    let pg_indexes = rows(
        &pool,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'
             AND indexname NOT IN (SELECT conname FROM pg_constraint)",
    )
    .await;
    assert_eq!(
        pg_indexes.difference(&sqlite_indexes).cloned().collect::<BTreeSet<_>>(),
        set(&[&["event_search_text_trgm"]])
    );
    assert!(sqlite_indexes.is_subset(&pg_indexes));
    assert!(pg_indexes.contains(&vec!["deliveries_due".to_owned()]));
    let due = rows(&pool, "SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_due'").await;
    let due = &due.first().unwrap()[0];
    assert!(due.ends_with("WHERE (status = 'pending'::text)"), "{due}");

    // One store identity, 32 hex digits like SQLite's.
    let identity = rows(&pool, "SELECT id FROM store_identity").await;
    assert_eq!(identity.len(), 1);
    let id = &identity.first().unwrap()[0];
    assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
}

/// The status columns accept exactly the labels of the model's enums.
#[tokio::test]
async fn status_checks_take_the_model_labels() {
    let postgres = TestPostgres::start();
    let pool = connect(&postgres.url(), None, 1, STATEMENT_TIMEOUT).unwrap();
    migrate(&pool).await.unwrap();
    let labels = |all: Vec<&'static str>| all.into_iter().map(str::to_owned).collect::<BTreeSet<String>>();
    let expected = [
        ("events", "route_status", labels(RouteStatus::ALL.iter().map(|s| s.as_str()).collect())),
        ("deliveries", "status", labels(DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect())),
        ("deliveries", "dead_letter_reason", labels(DeadLetterReason::ALL.iter().map(|s| s.as_str()).collect())),
        ("attempts", "outcome", labels(AttemptOutcome::ALL.iter().map(|s| s.as_str()).collect())),
        ("bulk_replays", "status", labels(BulkReplayStatus::ALL.iter().map(|s| s.as_str()).collect())),
        ("users", "role", labels([Role::Viewer, Role::Operator, Role::Admin].iter().map(|r| r.as_str()).collect())),
        (
            "api_tokens",
            "role",
            labels([Role::Viewer, Role::Operator, Role::Admin].iter().map(|r| r.as_str()).collect()),
        ),
    ];
    let checks = rows(
        &pool,
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE contype = 'c' AND connamespace = 'public'::regnamespace",
    )
    .await;
    assert_eq!(checks.len(), expected.len(), "{checks:?}");
    for (table, column, labels) in expected {
        let name = format!("{table}_{column}_check");
        let definition = checks
            .iter()
            .find(|row| row[0] == table && row[1] == name)
            .unwrap_or_else(|| panic!("no check {name}: {checks:?}"));
        // CHECK ((status = ANY (ARRAY['pending'::text, …]))): the quoted parts are the labels.
        let checked: BTreeSet<String> = definition[2].split('\'').skip(1).step_by(2).map(str::to_owned).collect();
        assert_eq!(checked, labels, "{table}.{column}: {}", definition[2]);
    }
}

/// Four workers starting at the same moment on a fresh database: all succeed, each migration
/// is applied by exactly one of them and recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_migration_once() {
    const WORKERS: usize = 4;
    let postgres = TestPostgres::start();
    let url = postgres.url();
    let start = Arc::new(tokio::sync::Barrier::new(WORKERS));
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            // Each worker has its own pool, as separate processes would.
            let pool = connect(&url, None, 2, STATEMENT_TIMEOUT).unwrap();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                // Connected before the barrier, so that they really start together.
                drop(pool.get().await.unwrap());
                start.wait().await;
                migrate(&pool).await
            })
        })
        .collect();
    let mut applied = Vec::new();
    for task in tasks {
        applied.extend(task.await.unwrap().unwrap());
    }
    applied.sort_unstable();
    let all: Vec<i64> = MIGRATIONS.iter().map(|(version, _, _)| *version).collect();
    assert_eq!(applied, all, "each migration applied by exactly one worker");

    let pool = connect(&url, None, 1, STATEMENT_TIMEOUT).unwrap();
    let recorded = rows(&pool, "SELECT version::text, name FROM schema_migrations").await;
    let expected: BTreeSet<Vec<String>> =
        MIGRATIONS.iter().map(|(version, name, _)| vec![version.to_string(), (*name).to_owned()]).collect();
    assert_eq!(recorded, expected);
    assert!(migrate(&pool).await.unwrap().is_empty(), "nothing left to apply");
    assert_eq!(rows(&pool, "SELECT count(*) FROM store_identity").await, set(&[&["1"]]));
}

/// The pool's connections carry the statement timeout, and the pool hands out working
/// connections again after the server restarted (the old ones are dropped, not handed out).
#[tokio::test]
async fn the_pool_applies_the_statement_timeout_and_survives_a_restart() {
    let mut postgres = TestPostgres::start();
    let pool = connect(&postgres.url(), None, 2, STATEMENT_TIMEOUT).unwrap();
    assert_eq!(rows(&pool, "SHOW statement_timeout").await, set(&[&["1500ms"]]));
    let client = pool.get().await.unwrap();
    let error = client.simple_query("SELECT pg_sleep(5)").await.unwrap_err();
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{error:?}");
    drop(client);

    postgres.restart();
    assert_eq!(rows(&pool, "SELECT 1").await, set(&[&["1"]]));
    assert_eq!(rows(&pool, "SHOW application_name").await, set(&[&["inlet-worker"]]));
}
