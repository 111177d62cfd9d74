//! The store's own tests: the writer's group semantics, the WAL and migrations against a real
//! SQLite file, and recording and the delivery schedule on both backends (several workers on
//! one PostgreSQL database at the end).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use inlet_shared::config::SqliteSynchronous;
use inlet_shared::test_util::TestPostgres;
use rusqlite::types::ValueRef;
use tokio::sync::oneshot;

use super::deliveries::{AttemptRecord, AttemptSettled, ClaimDue, DueClass, Lease, NextStep};
use super::events::{FirstClaims, NewEvent, Recorded};
use super::migrate::MIGRATIONS;
use super::replays::{Dismissed, ReplayOutcome, ReplayScope};
use super::wal::checkpoint;
use super::wal::restart_wal_if_wanted;
use super::writer::{Command, TypedWrite, execute_group};
use super::{Backend, Store, StoreError};
use crate::model::{AttemptOutcome, DeadLetterReason, DeliveryId, EventRowId, LeaseToken, ReplayConfig, UnixMs};
use bytes::Bytes;
use inlet_shared::signature::{IdOrigin, SchemeKind};

fn delivery_id(event: i64, destination: &str) -> DeliveryId {
    DeliveryId::of(EventRowId(event), destination)
}

fn now_ms() -> i64 {
    UnixMs::now().0
}

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

/// A claim of at most `limit` due deliveries of `class` at `now`, leased until `lease_until`,
/// skipping none, without a recording gate: what most store tests claim.
pub(crate) fn due(class: DueClass, limit: usize, now: UnixMs, lease_until: UnixMs) -> ClaimDue {
    ClaimDue { class, limit, now, lease_until, skip: vec![], gate: None }
}

/// A recorded-to-be event from source `src`, type `t`, received at 1 s.
pub(super) fn event(id: &str, body: &str, destinations: &[&str]) -> NewEvent {
    NewEvent {
        source: "src".into(),
        event_id: id.into(),
        id_origin: IdOrigin::Provider,
        event_type: Some("t".into()),
        scheme: SchemeKind::Github,
        secret_index: 0,
        received_at: UnixMs(1_000),
        stream_sequence: 1,
        content_type: Some("application/json".into()),
        headers_json: "[]".into(),
        body: Bytes::from(body.to_owned()),
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
        ordering: Vec::new(),
        trace_context: None,
        config_version: None,
    }
}

use super::open_temp as open;

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
    super::migrate::assert_migrations_match_folder("sql", MIGRATIONS);
}

#[tokio::test]
async fn pragmas_are_read_back_from_a_live_connection() {
    let (_dir, store) = open();
    let (mode, synchronous, foreign_keys, busy): (String, i64, i64, i64) = store
        .sqlite()
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

/// The writer keeps its statement journals (written before every insert into a table with a
/// trigger inside a group's transaction) in memory, not in a temp file; readers keep the default.
#[tokio::test]
async fn the_writer_keeps_temporary_storage_in_memory() {
    let (_dir, store) = open();
    let writer: i64 = store.sqlite().write(|c| c.query_row("PRAGMA temp_store", [], |r| r.get(0))).await.unwrap();
    let reader: i64 = store.sqlite().read(|c| c.query_row("PRAGMA temp_store", [], |r| r.get(0))).await.unwrap();
    assert_eq!((writer, reader), (2, 0), "MEMORY for the writer, DEFAULT for readers");
}

#[tokio::test]
async fn reopening_does_not_reapply_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inlet.db");
    drop(Store::open_sqlite(&path, SqliteSynchronous::Full).unwrap());
    let store = Store::open_sqlite(&path, SqliteSynchronous::Full).unwrap();
    let count: i64 =
        store.sqlite().read(|c| c.query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))).await.unwrap();
    assert_eq!(count, MIGRATIONS.len() as i64);
}

/// A SQLite database holding the schema of the first `version` migrations, as a worker of that
/// version left it.
pub(super) fn database_at_version(path: &std::path::Path, version: i64) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE schema_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)",
        )
        .unwrap();
    for (number, name, sql) in MIGRATIONS.iter().filter(|(number, _, _)| *number <= version) {
        connection.execute_batch(sql).unwrap();
        connection
            .execute("INSERT INTO schema_migrations VALUES (?1, ?2, 0)", rusqlite::params![number, name])
            .unwrap();
    }
    connection
}

/// Issue #16: version 15 rebuilds the deliveries table (SQLite cannot change its status check
/// in place). A store from version 14 keeps every delivery with its rowid (the API's cursors and
/// the dead-letter order), its attempts and its counts; foreign keys still hold and cascade; and
/// the table takes what version 15 is for: a dismissed status, a second delivery of one event
/// to one destination.
#[tokio::test]
async fn a_version_14_store_keeps_its_deliveries_rowids_attempts_and_counts_through_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inlet.db");
    let deliveries = "SELECT rowid, id, event_rowid, destination, status, attempts, replays, attempt_base, lease_token,
                             next_attempt_at_ms, dead_letter_reason FROM deliveries ORDER BY rowid";
    let read = |c: &rusqlite::Connection, sql: &str| -> Vec<String> {
        let mut statement = c.prepare(sql).unwrap();
        let width = statement.column_count();
        statement
            .query_map([], |row| {
                Ok((0..width)
                    .map(|i| match row.get_ref(i).unwrap() {
                        ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = {
        let c = database_at_version(&path, 14);
        c.execute_batch(
            "INSERT INTO events (id, source, event_id, id_origin, scheme, secret_index, received_at_ms, recorded_at_ms,
                                 stream_sequence, headers_json, body, body_sha256, route_status)
             VALUES (1, 's', 'e1', 'provider', 'github', 0, 1, 1, 1, '[]', x'7b7d', 'h', 'routed'),
                    (2, 's', 'e2', 'provider', 'github', 0, 2, 2, 2, '[]', x'7b7d', 'h', 'routed');
             INSERT INTO deliveries (rowid, id, event_rowid, destination, status, attempts, created_at_ms, updated_at_ms,
                                     dead_letter_reason, replays, attempt_base, lease_token)
             VALUES (7, 'dlv_000000000001_a', 1, 'a', 'dead_lettered', 2, 1, 5, 'permanent_4xx', 1, 1, 3);
             INSERT INTO deliveries (rowid, id, event_rowid, destination, status, attempts, created_at_ms, updated_at_ms,
                                     next_attempt_at_ms, lease_token)
             VALUES (3, 'dlv_000000000002_a', 2, 'a', 'pending', 1, 2, 2, 9, 1);
             INSERT INTO attempts (delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code)
             VALUES ('dlv_000000000001_a', 1, 1, 1, 'transient', 503), ('dlv_000000000001_a', 2, 3, 1, 'permanent', 410),
                    ('dlv_000000000002_a', 1, 2, 1, 'transient', 500);",
        )
        .unwrap();
        (
            read(&c, deliveries),
            read(&c, "SELECT * FROM attempts ORDER BY id"),
            read(&c, "SELECT * FROM delivery_counts"),
        )
    };

    let store = Store::open_sqlite(&path, SqliteSynchronous::Full).unwrap();
    let after = store
        .sqlite()
        .read(move |c| {
            Ok((
                read(c, deliveries),
                read(c, "SELECT * FROM attempts ORDER BY id"),
                read(c, "SELECT * FROM delivery_counts"),
            ))
        })
        .await
        .unwrap();
    assert_eq!(after, before);
    let page = store.dead_letters_page(Default::default(), super::PageRequest { after: None, limit: 5 }).await.unwrap();
    assert_eq!(page.rows.iter().map(|d| d.cursor).collect::<Vec<_>>(), [super::Cursor(7)], "the rowid is the cursor");
    assert!(matches!(
        store.dismiss(delivery_id(1, "a"), "ops".into(), None).await.unwrap(),
        Dismissed::Done(row) if row.status == crate::model::DeliveryStatus::Dismissed
    ));
    let (foreign_keys, second, cascaded) = store
        .sqlite()
        .write(|c| {
            let foreign_keys: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
            let second = c.execute(
                "INSERT INTO deliveries (id, event_rowid, destination, status, created_at_ms, updated_at_ms)
                 VALUES ('dlv_000000000002_a~r1', 2, 'a', 'pending', 3, 3)",
                [],
            )?;
            c.execute("DELETE FROM events WHERE id = 1", [])?;
            let left: i64 = c.query_row(
                "SELECT (SELECT count(*) FROM deliveries WHERE event_rowid = 1)
                      + (SELECT count(*) FROM attempts WHERE delivery_id = 'dlv_000000000001_a')",
                [],
                |r| r.get(0),
            )?;
            Ok((foreign_keys, second, left))
        })
        .await
        .unwrap();
    assert_eq!((foreign_keys, second, cascaded), (1, 1, 0), "keys on, a second delivery to `a`, the cascade");
    let orphan = store
        .sqlite()
        .write(|c| {
            c.execute(
                "INSERT INTO deliveries (id, event_rowid, destination, status, created_at_ms, updated_at_ms)
                 VALUES ('dlv_x', 99, 'a', 'pending', 1, 1)",
                [],
            )
        })
        .await;
    assert!(orphan.is_err(), "the foreign key to events holds");
}

/// Whether `store` runs on PostgreSQL, where a few answers differ by design (said where).
pub(super) fn on_postgres(store: &Store) -> bool {
    matches!(store.backend, Backend::Postgres(_))
}

/// The rows of `sql` (SQL both engines take), each column as text (`None`: NULL).
pub(super) async fn peek(store: &Store, sql: String) -> Vec<Vec<Option<String>>> {
    match &store.backend {
        Backend::Sqlite(sqlite) => sqlite
            .read(move |c| {
                let mut statement = c.prepare(&sql)?;
                let width = statement.column_count();
                let rows = statement.query_map([], |row| {
                    (0..width)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                ValueRef::Null => None,
                                ValueRef::Integer(n) => Some(n.to_string()),
                                ValueRef::Real(x) => Some(x.to_string()),
                                ValueRef::Text(text) | ValueRef::Blob(text) => {
                                    Some(String::from_utf8_lossy(text).into_owned())
                                }
                            })
                        })
                        .collect()
                })?;
                rows.collect()
            })
            .await
            .unwrap(),
        Backend::Postgres(postgres) => postgres.peek(&sql).await.unwrap(),
    }
}

/// The one value `sql` selects, as a number.
async fn peek_number(store: &Store, sql: &str) -> i64 {
    let rows = peek(store, sql.to_owned()).await;
    rows[0][0].as_deref().unwrap_or("0").parse().unwrap()
}

/// A delivery's row, for the tests: (status, attempts, lease token, lease until, due at).
async fn row(store: &Store, id: &DeliveryId) -> (String, i64, i64, Option<i64>, Option<i64>) {
    let rows = peek(
        store,
        format!(
            "SELECT status, attempts, lease_token, lease_until_ms, next_attempt_at_ms FROM deliveries WHERE id = '{id}'"
        ),
    )
    .await;
    let number = |i: usize| rows[0][i].as_deref().map(|n| n.parse::<i64>().unwrap());
    (rows[0][0].clone().unwrap(), number(1).unwrap(), number(2).unwrap(), number(3), number(4))
}

fn attempt(id: &DeliveryId, n: i64, outcome: AttemptOutcome, next: NextStep, lease_token: i64) -> AttemptRecord {
    AttemptRecord {
        delivery_id: id.clone(),
        attempt: n,
        started_at: UnixMs(5),
        duration_ms: 1,
        outcome,
        status_code: Some(if outcome == AttemptOutcome::Delivered { 200 } else { 500 }),
        error: None,
        response_snippet: Some("oops".into()),
        next,
        lease_token: LeaseToken(lease_token),
    }
}

on_each_backend!(
    new_deliveries_come_back_claimed_with_what_is_needed_to_send_them,
    only_due_unleased_deliveries_are_claimed_and_a_stale_owner_cannot_record_over_a_newer_one,
    released_claims_are_due_at_once_and_renewing_is_fenced,
    deliveries_to_destinations_held_elsewhere_are_recorded_unclaimed,
    activity_is_counted_per_bucket_for_the_whole_store_a_source_or_a_destination,
    leases_left_at_startup_are_released_on_sqlite_only,
    pending_deliveries_of_a_removed_destination_are_dead_lettered_not_left_pending,
    pruning_never_hands_a_delivery_id_out_again,
    duplicates_and_conflicts_are_recognised,
    attempts_move_a_delivery_through_its_states_the_counts_follow_and_prune_keeps_dead_letters,
    the_identity_is_made_once,
    results_recorded_at_once_are_each_fenced_by_their_own_token,
    a_dismissed_dead_letter_is_never_claimed_and_is_pruned_like_a_delivered_one,
);

/// Issue #16: a dismissed dead letter is resolved: nothing claims it, it is no backlog, and
/// pruning removes its event past retention as it would a delivered one's (a dead letter's
/// stays).
async fn a_dismissed_dead_letter_is_never_claimed_and_is_pruned_like_a_delivered_one(store: Store) {
    let events = vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"]), event("e3", "{}", &["b"])];
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    let dead = NextStep::DeadLetter(DeadLetterReason::RetriesExhausted);
    for n in [1, 2] {
        store.record_attempt(attempt(&delivery_id(n, "a"), 1, AttemptOutcome::Transient, dead, 1)).await.unwrap();
    }
    let dismissed = store.dismiss(delivery_id(1, "a"), "ops".into(), None).await.unwrap();
    assert!(matches!(dismissed, Dismissed::Done(_)), "{dismissed:?}");
    assert_eq!(store.stats().await.unwrap().dead_letters, 1);
    for class in [DueClass::First, DueClass::Retry] {
        assert!(!store.has_due("a".into(), class, UnixMs(i64::MAX)).await.unwrap());
        let (claimed, _) =
            store.claim_due("a".into(), due(class, 10, UnixMs(i64::MAX), UnixMs(i64::MAX))).await.unwrap();
        assert!(claimed.is_empty());
    }
    let pruned = store.prune(UnixMs(i64::MAX)).await.unwrap();
    assert_eq!(pruned, 1, "the dismissed one's event; the dead letter's and the pending one's stay");
    let remaining = peek(&store, "SELECT id, status FROM deliveries ORDER BY id".into()).await;
    assert_eq!(
        remaining,
        [
            [Some(delivery_id(2, "a").to_string()), Some("dead_lettered".to_owned())],
            [Some(delivery_id(3, "b").to_string()), Some("pending".to_owned())]
        ]
    );
    let kept =
        peek(&store, "SELECT status, sum(n) FROM delivery_counts GROUP BY 1 HAVING sum(n) <> 0 ORDER BY 1".into());
    let counted = peek(&store, "SELECT status, count(*) FROM deliveries GROUP BY 1 ORDER BY 1".into());
    assert_eq!(kept.await, counted.await, "the counts follow");
}

/// Results that arrive together (PostgreSQL records them as one group, SQLite in one writer
/// transaction) are each fenced by their own token: a stale or unknown token changes nothing
/// and is superseded, the current one moves its delivery on.
async fn results_recorded_at_once_are_each_fenced_by_their_own_token(store: Store) {
    store
        .record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], FirstClaims::all(UnixMs(1_000)))
        .await
        .unwrap();
    let now = now_ms();
    // Both recording-time claims (token 1) expired long ago: claimed again with token 2.
    let (claimed, _) =
        store.claim_due("a".into(), due(DueClass::First, 10, UnixMs(now), UnixMs(now + 30_000))).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (one, two) = (delivery_id(1, "a"), delivery_id(2, "a"));
    let retry_at = NextStep::RetryAt(UnixMs(now + 5_000));
    let settled = futures::future::join_all([
        store.record_attempt(attempt(&one, 1, AttemptOutcome::Delivered, NextStep::Delivered, 1)),
        store.record_attempt(attempt(&one, 1, AttemptOutcome::Delivered, NextStep::Delivered, 2)),
        store.record_attempt(attempt(&two, 1, AttemptOutcome::Transient, retry_at, 2)),
        store.record_attempt(attempt(&two, 1, AttemptOutcome::Delivered, NextStep::Delivered, 7)),
    ])
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect::<Vec<_>>();
    assert_eq!(
        settled,
        [AttemptSettled::Superseded, AttemptSettled::Recorded, AttemptSettled::Recorded, AttemptSettled::Superseded]
    );
    let (status, attempts, ..) = row(&store, &one).await;
    assert_eq!((status.as_str(), attempts), ("delivered", 1));
    let (status, attempts, _, until, due) = row(&store, &two).await;
    assert_eq!((status.as_str(), attempts, until, due), ("pending", 1, None, Some(now + 5_000)));
    assert_eq!(peek_number(&store, "SELECT count(*) FROM attempts").await, 2, "one attempt row per recorded result");
}

async fn new_deliveries_come_back_claimed_with_what_is_needed_to_send_them(store: Store) {
    let results = store
        .record(vec![event("e1", "{\"n\":1}", &["a", "b"]), event("e2", "{}", &[])], FirstClaims::all(UnixMs(60_000)))
        .await
        .unwrap();
    let Recorded::New { deliveries, .. } = &results[0] else { panic!("new") };
    assert_eq!(deliveries.len(), 2);
    for (claimed, destination) in deliveries.iter().zip(["a", "b"]) {
        assert_eq!(claimed.lease, Lease { token: LeaseToken::FIRST, until: UnixMs(60_000) });
        let d = &claimed.delivery;
        assert_eq!(d.delivery_id, delivery_id(1, destination));
        assert_eq!((d.destination.as_str(), d.attempts, d.event_id.as_str()), (destination, 0, "e1"));
        assert_eq!((d.received_at, &d.body[..]), (UnixMs(1_000), &b"{\"n\":1}"[..]));
        let (status, attempts, token, until, due) = row(&store, &d.delivery_id).await;
        assert_eq!((status.as_str(), attempts, token, until), ("pending", 0, 1, Some(60_000)));
        assert!(due.is_some(), "due at once");
    }
    assert_eq!(results[1], Recorded::New { deliveries: vec![], unclaimed: vec![] }, "unrouted");
    // A duplicate hands nothing over: its deliveries are scheduled in the store already.
    let again = store.record(vec![event("e1", "{\"n\":1}", &["a"])], FirstClaims::all(UnixMs(60_000))).await.unwrap();
    assert_eq!(again[0], Recorded::Duplicate { conflict: false });
}

async fn only_due_unleased_deliveries_are_claimed_and_a_stale_owner_cannot_record_over_a_newer_one(store: Store) {
    store
        .record(
            vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"]), event("e3", "{}", &["b"])],
            FirstClaims::all(UnixMs(1_000)),
        )
        .await
        .unwrap();
    let (one, two) = (delivery_id(1, "a"), delivery_id(2, "a"));
    let now = now_ms();
    // Claimed at recording until 1_000 (long past): both are due for `a`, e1 skipped as held.
    let (claimed, restarted) = store
        .claim_due(
            "a".into(),
            ClaimDue {
                class: DueClass::First,
                limit: 10,
                now: UnixMs(now),
                lease_until: UnixMs(now + 30_000),
                skip: vec![one.clone()],
                gate: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|c| &c.delivery.delivery_id).collect::<Vec<_>>(), [&two]);
    assert_eq!(restarted, std::slice::from_ref(&two), "its recording-time lease had expired without a result");
    assert_eq!(claimed[0].lease.token, LeaseToken(2), "a new fencing token");
    assert_eq!(claimed[0].delivery.body.as_ref(), b"{}");
    assert!(store.has_due("a".into(), DueClass::First, UnixMs(now)).await.unwrap(), "e1 is still due, only skipped");
    let (again, _) =
        store.claim_due("a".into(), due(DueClass::First, 10, UnixMs(now), UnixMs(now + 30_000))).await.unwrap();
    assert_eq!(again.len(), 1, "e2's lease is live: only e1 is claimed");
    assert_eq!(again[0].delivery.delivery_id, one);
    assert!(!store.has_due("a".into(), DueClass::First, UnixMs(now)).await.unwrap());
    assert!(store.has_due("b".into(), DueClass::First, UnixMs(now)).await.unwrap(), "destinations are separate");
    assert!(!store.has_due("b".into(), DueClass::Retry, UnixMs(now)).await.unwrap(), "classes are separate");

    // e2's claim expires while its owner is stalled; a new claim takes it over.
    let (taken, restarted) = store
        .claim_due("a".into(), due(DueClass::First, 10, UnixMs(now + 31_000), UnixMs(now + 60_000)))
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    assert_eq!(restarted.len(), 2);
    let new_token = taken.iter().find(|c| c.delivery.delivery_id == two).unwrap().lease.token;
    assert_eq!(new_token, LeaseToken(3));
    // The stale owner's result is dropped, the new owner's stands.
    let stale = attempt(&two, 1, AttemptOutcome::Delivered, NextStep::Delivered, 2);
    assert_eq!(store.record_attempt(stale).await.unwrap(), AttemptSettled::Superseded);
    let (status, attempts, ..) = row(&store, &two).await;
    assert_eq!((status.as_str(), attempts), ("pending", 0), "nothing of the stale attempt is stored");
    let current = attempt(&two, 1, AttemptOutcome::Transient, NextStep::RetryAt(UnixMs(now + 5_000)), new_token.0);
    assert_eq!(store.record_attempt(current).await.unwrap(), AttemptSettled::Recorded);
    let (status, attempts, _, until, due_at) = row(&store, &two).await;
    assert_eq!((status.as_str(), attempts, until, due_at), ("pending", 1, None, Some(now + 5_000)));
    // Now a retry, due later.
    assert!(!store.has_due("a".into(), DueClass::Retry, UnixMs(now + 4_000)).await.unwrap());
    assert!(store.has_due("a".into(), DueClass::Retry, UnixMs(now + 5_000)).await.unwrap());
    let (retry, _) =
        store.claim_due("a".into(), due(DueClass::Retry, 10, UnixMs(now + 5_000), UnixMs(now + 40_000))).await.unwrap();
    assert_eq!((retry.len(), retry[0].delivery.attempts), (1, 1));
    assert_eq!(
        peek(&store, "SELECT attempt, status_code, response_snippet FROM attempts".into()).await,
        [[Some("1".to_owned()), Some("500".to_owned()), Some("oops".to_owned())]],
        "only the current owner's attempt was written"
    );
}

async fn released_claims_are_due_at_once_and_renewing_is_fenced(store: Store) {
    let far = UnixMs(now_ms() + 3_600_000);
    store.record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], FirstClaims::all(far)).await.unwrap();
    let now = now_ms();
    assert!(!store.has_due("a".into(), DueClass::First, UnixMs(now)).await.unwrap(), "claimed at recording");
    store
        .release_leases(vec![(delivery_id(1, "a"), LeaseToken::FIRST), (delivery_id(2, "a"), LeaseToken(99))])
        .await
        .unwrap();
    assert_eq!(row(&store, &delivery_id(1, "a")).await.3, None, "released");
    assert_eq!(row(&store, &delivery_id(2, "a")).await.3, Some(far.0), "a wrong token releases nothing");
    let (claimed, restarted) =
        store.claim_due("a".into(), due(DueClass::First, 10, UnixMs(now), UnixMs(now + 1_000))).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(restarted.is_empty(), "a released lease is not an owner that died");
    assert!(store.renew_lease(delivery_id(1, "a"), claimed[0].lease.token, UnixMs(now + 9_000)).await.unwrap());
    assert_eq!(row(&store, &delivery_id(1, "a")).await.3, Some(now + 9_000));
    assert!(!store.renew_lease(delivery_id(1, "a"), LeaseToken(1), UnixMs(now + 9_000)).await.unwrap(), "fenced");
}

/// The console's charts: events by receipt, attempts by start (delivered, failed, and the
/// receipt-to-delivery time), dead letters by when they died, in every bucket of the range
/// (empty ones too), and narrowed to a destination or a source.
async fn activity_is_counted_per_bucket_for_the_whole_store_a_source_or_a_destination(store: Store) {
    use crate::store::{ActivityBucket, ActivityQuery};
    let t0 = now_ms() - 120_000;
    let far = UnixMs(now_ms() + 3_600_000);
    let at = |ms: i64| UnixMs(t0 + ms);
    let events = vec![
        NewEvent { received_at: at(10_000), ..event("e1", "{}", &["a", "b"]) },
        NewEvent { received_at: at(70_000), ..event("e2", "{}", &["a"]) },
    ];
    store.record(events, FirstClaims::all(far)).await.unwrap();
    let settle = |id: DeliveryId, n: i64, started: i64, duration_ms: i64, outcome: AttemptOutcome, next: NextStep| {
        AttemptRecord { started_at: at(started), duration_ms, ..attempt(&id, n, outcome, next, 1) }
    };
    let (e1a, e1b, e2a) = (delivery_id(1, "a"), delivery_id(1, "b"), delivery_id(2, "a"));
    for record in [
        settle(e1a, 1, 20_000, 100, AttemptOutcome::Delivered, NextStep::Delivered),
        settle(e1b.clone(), 1, 30_000, 5, AttemptOutcome::Transient, NextStep::RetryAt(at(79_000))),
        settle(e1b, 2, 80_000, 5, AttemptOutcome::Permanent, NextStep::DeadLetter(DeadLetterReason::Permanent4xx)),
        settle(e2a, 1, 75_000, 50, AttemptOutcome::Delivered, NextStep::Delivered),
    ] {
        assert_eq!(store.record_attempt(record).await.unwrap(), AttemptSettled::Recorded);
    }
    let query = |source: Option<&str>, destination: Option<&str>| ActivityQuery {
        from: at(0),
        to: at(180_000),
        bucket_ms: 60_000,
        source: source.map(Into::into),
        destination: destination.map(Into::into),
    };
    let bucket = |n: i64, counts: [i64; 4], latency: Option<i64>| ActivityBucket {
        start: at(n * 60_000),
        received: counts[0],
        delivered: counts[1],
        failed: counts[2],
        dead_lettered: counts[3],
        latency_avg_ms: latency.map(|ms| ms as f64),
        latency_max_ms: latency,
    };
    // The dead letter is stamped when it was recorded (now: the last bucket).
    assert_eq!(
        store.activity(query(None, None)).await.unwrap(),
        [bucket(0, [1, 1, 1, 0], Some(10_100)), bucket(1, [1, 1, 1, 0], Some(5_050)), bucket(2, [0, 0, 0, 1], None)]
    );
    assert_eq!(
        store.activity(query(None, Some("b"))).await.unwrap(),
        [bucket(0, [1, 0, 1, 0], None), bucket(1, [0, 0, 1, 0], None), bucket(2, [0, 0, 0, 1], None)],
        "an event counts for the destinations it was routed to"
    );
    assert_eq!(
        store.activity(query(Some("elsewhere"), None)).await.unwrap(),
        [bucket(0, [0; 4], None), bucket(1, [0; 4], None), bucket(2, [0; 4], None)]
    );
    assert_eq!(store.activity(query(Some("src"), None)).await.unwrap()[0], bucket(0, [1, 1, 1, 0], Some(10_100)));
}

/// Several workers: a destination another worker holds gets its new deliveries due and
/// unclaimed (no claim to release afterwards), said by name; the others come back claimed.
async fn deliveries_to_destinations_held_elsewhere_are_recorded_unclaimed(store: Store) {
    let far = UnixMs(now_ms() + 3_600_000);
    let claims = FirstClaims { until: far, held_elsewhere: ["b".to_owned()].into(), with_headers: false };
    let results = store.record(vec![event("e1", "{}", &["a", "b"]), event("e2", "{}", &["b"])], claims).await.unwrap();
    let Recorded::New { deliveries, unclaimed } = &results[0] else { panic!("new") };
    assert_eq!((deliveries.len(), deliveries[0].delivery.destination.as_str()), (1, "a"));
    assert_eq!(unclaimed, &["b"]);
    let Recorded::New { deliveries, unclaimed } = &results[1] else { panic!("new") };
    assert!(deliveries.is_empty(), "routed, but nothing claimed here");
    assert_eq!(unclaimed, &["b"]);
    assert_eq!(row(&store, &delivery_id(1, "a")).await.3, Some(far.0), "claimed by the recording worker");
    assert_eq!(row(&store, &delivery_id(1, "b")).await.3, None, "left for the holder");
    let now = UnixMs::now();
    assert!(!store.has_due("a".into(), DueClass::First, now).await.unwrap());
    let (claimed, restarted) =
        store.claim_due("b".into(), due(DueClass::First, 10, now, UnixMs(now.0 + 1_000))).await.unwrap();
    assert_eq!(claimed.len(), 2, "the holder claims them at once");
    assert!(restarted.is_empty(), "never claimed, so not an owner that died");
}

/// On SQLite every lease left at startup is a dead process's: released at once. On PostgreSQL
/// other live workers hold theirs: nothing is released (a dead worker's come back when they
/// expire).
async fn leases_left_at_startup_are_released_on_sqlite_only(store: Store) {
    let far = UnixMs(now_ms() + 3_600_000);
    store.record(vec![event("e1", "{}", &["a"])], FirstClaims::all(far)).await.unwrap();
    let restarted = store.release_all_leases().await.unwrap();
    let now = UnixMs::now();
    if on_postgres(&store) {
        assert_eq!(restarted, []);
        assert_eq!(row(&store, &delivery_id(1, "a")).await.3, Some(far.0), "still held");
        assert!(!store.has_due("a".into(), DueClass::First, now).await.unwrap());
        assert!(store.has_due("a".into(), DueClass::First, UnixMs(far.0 + 1)).await.unwrap(), "once it expires");
    } else {
        assert_eq!(restarted, [(delivery_id(1, "a"), "a".to_owned())]);
        assert!(store.has_due("a".into(), DueClass::First, now).await.unwrap());
    }
}

async fn pending_deliveries_of_a_removed_destination_are_dead_lettered_not_left_pending(store: Store) {
    store
        .record(vec![event("e1", "{}", &["kept", "gone"]), event("e2", "{}", &["gone"])], FirstClaims::all(UnixMs(1)))
        .await
        .unwrap();
    let stranded = store.dead_letter_unconfigured(vec!["kept".into()]).await.unwrap();
    assert_eq!(stranded, [("gone".to_owned(), 2)]);
    assert_eq!(row(&store, &delivery_id(1, "gone")).await.0, "dead_lettered");
    assert_eq!(row(&store, &delivery_id(1, "kept")).await.0, "pending");
    let reasons = peek(&store, "SELECT DISTINCT dead_letter_reason FROM deliveries WHERE destination = 'gone'".into());
    assert_eq!(reasons.await, [[Some("unknown_destination".to_owned())]]);
    assert_eq!(store.dead_letter_unconfigured(vec!["kept".into()]).await.unwrap(), [], "nothing left to do");
    assert_eq!(store.stats().await.unwrap().dead_letters, 2);
}

/// SQLite keeps the newest event (it would hand its row id out again); PostgreSQL's identity
/// never does, so there every done event goes.
async fn pruning_never_hands_a_delivery_id_out_again(store: Store) {
    store
        .record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], FirstClaims::all(UnixMs(1)))
        .await
        .unwrap();
    for n in [1, 2] {
        let delivered = attempt(&delivery_id(n, "a"), 1, AttemptOutcome::Delivered, NextStep::Delivered, 1);
        store.record_attempt(delivered).await.unwrap();
    }
    let pruned = store.prune(UnixMs(i64::MAX)).await.unwrap();
    assert_eq!(pruned, if on_postgres(&store) { 2 } else { 1 }, "all delivered; on SQLite the newest stays");
    let results = store.record(vec![event("e3", "{}", &["a"])], FirstClaims::all(UnixMs(1))).await.unwrap();
    let Recorded::New { deliveries, .. } = &results[0] else { panic!("new") };
    assert_eq!(deliveries[0].delivery.delivery_id, delivery_id(3, "a"), "a fresh id, not one a destination saw");
}

async fn duplicates_and_conflicts_are_recognised(store: Store) {
    let results = store
        .record(
            vec![event("e1", "{}", &["a", "b"]), event("e2", "{}", &[]), event("e1", "{}", &["a", "b"])],
            FirstClaims::all(UnixMs(1)),
        )
        .await
        .unwrap();
    let Recorded::New { deliveries, .. } = &results[0] else { panic!("first is new") };
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].delivery.delivery_id, delivery_id(1, "a"));
    assert_eq!(results[1], Recorded::New { deliveries: vec![], unclaimed: vec![] });
    assert_eq!(results[2], Recorded::Duplicate { conflict: false }, "same batch duplicate");

    let later = store
        .record(
            vec![event("e1", "{\"changed\":true}", &["a", "b"]), event("e1", "{}", &["a", "b"])],
            FirstClaims::all(UnixMs(1)),
        )
        .await
        .unwrap();
    assert_eq!(later, [Recorded::Duplicate { conflict: true }, Recorded::Duplicate { conflict: false }]);
    let stored = peek(&store, "SELECT event_id, duplicates, conflicts, route_status FROM events ORDER BY id".into());
    let text = |values: &[&str]| values.iter().map(|v| Some((*v).to_owned())).collect::<Vec<_>>();
    assert_eq!(stored.await, [text(&["e1", "2", "1", "routed"]), text(&["e2", "0", "0", "unrouted"])]);
    assert_eq!(peek_number(&store, "SELECT count(*) FROM deliveries").await, 2, "a duplicate adds no delivery");
}

async fn attempts_move_a_delivery_through_its_states_the_counts_follow_and_prune_keeps_dead_letters(store: Store) {
    store
        .record(
            vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"]), event("e3", "{}", &[])],
            FirstClaims::all(UnixMs(1)),
        )
        .await
        .unwrap();
    let first = delivery_id(1, "a");
    let second = delivery_id(2, "a");
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.dead_letters, stats.pending, stats.oldest_pending_received_at), (0, 2, Some(UnixMs(1_000))));
    store
        .record_attempt(attempt(&first, 1, AttemptOutcome::Transient, NextStep::RetryAt(UnixMs(99)), 1))
        .await
        .unwrap();
    let (claimed, _) = store.claim_due("a".into(), due(DueClass::Retry, 1, UnixMs(100), UnixMs(200))).await.unwrap();
    let token = claimed[0].lease.token.0;
    store.record_attempt(attempt(&first, 2, AttemptOutcome::Delivered, NextStep::Delivered, token)).await.unwrap();
    let dead = NextStep::DeadLetter(DeadLetterReason::Permanent4xx);
    store.record_attempt(attempt(&second, 1, AttemptOutcome::Permanent, dead, 1)).await.unwrap();
    let (status, attempts, ..) = row(&store, &first).await;
    assert_eq!((status.as_str(), attempts), ("delivered", 2));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.dead_letters, stats.pending, stats.oldest_pending_received_at), (1, 0, None));

    // The trigger-kept counts (summed over PostgreSQL's slots) agree with a full count, before
    // and after a prune.
    let counts_agree = || async {
        let kept = peek(
            &store,
            "SELECT destination, status, sum(n) FROM delivery_counts GROUP BY 1, 2 HAVING sum(n) > 0 ORDER BY 1, 2"
                .into(),
        )
        .await;
        let counted =
            peek(&store, "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2 ORDER BY 1, 2".into())
                .await;
        let kept_events = peek(
            &store,
            "SELECT route_status, sum(n) FROM event_counts GROUP BY 1 HAVING sum(n) <> 0 ORDER BY 1".into(),
        )
        .await;
        let counted_events =
            peek(&store, "SELECT route_status, count(*) FROM events GROUP BY 1 ORDER BY 1".into()).await;
        kept == counted && kept_events == counted_events
    };
    assert!(counts_agree().await);
    let pruned = store.prune(UnixMs(i64::MAX)).await.unwrap();
    if on_postgres(&store) {
        assert_eq!(pruned, 2, "the fully delivered event and the unrouted one");
    } else {
        assert_eq!(pruned, 1, "only the fully delivered event is pruned (the unrouted one is the newest)");
    }
    assert!(counts_agree().await);
    let remaining = peek(&store, "SELECT id, status FROM deliveries".into()).await;
    assert_eq!(
        remaining,
        [[Some(second.to_string()), Some("dead_lettered".to_owned())]],
        "dead letters stay replayable"
    );
}

async fn the_identity_is_made_once(store: Store) {
    let identity = store.identity().await.unwrap();
    assert_eq!(identity.len(), 32, "{identity}");
    assert!(identity.bytes().all(|b| b.is_ascii_hexdigit()), "{identity}");
    assert_eq!(store.identity().await.unwrap(), identity);
}

// SQLite only from here: replays are not on PostgreSQL in this branch, and the rest is SQLite's
// own (its file lock, a row edited by hand).

#[tokio::test]
async fn a_replay_makes_a_delivery_due_now_and_can_push_a_waiting_retry() {
    let (_dir, store) = open();
    store
        .record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], FirstClaims::all(UnixMs(1)))
        .await
        .unwrap();
    let (one, two) = (delivery_id(1, "a"), delivery_id(2, "a"));
    let dead = NextStep::DeadLetter(DeadLetterReason::RetriesExhausted);
    store.record_attempt(attempt(&one, 1, AttemptOutcome::Transient, dead, 1)).await.unwrap();
    let later = now_ms() + 3_600_000;
    store
        .record_attempt(attempt(&two, 1, AttemptOutcome::Transient, NextStep::RetryAt(UnixMs(later)), 1))
        .await
        .unwrap();

    let replayed = store.replay(one.clone(), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap();
    assert_eq!(replayed, ReplayOutcome::Replayed { destination: "a".into(), config_version: None });
    let (status, ..) = row(&store, &one).await;
    assert_eq!(status, "pending");
    let (claimed, _) = store
        .claim_due("a".into(), due(DueClass::First, 10, UnixMs(now_ms()), UnixMs(now_ms() + 1_000)))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "a replayed delivery is a first attempt again (fresh schedule)");
    assert_eq!(claimed[0].delivery.attempts, 0);
    assert_eq!(
        store.replay(one.clone(), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap(),
        ReplayOutcome::AlreadyPending { destination: "a".into(), rescheduled: false, config_version: None },
        "an attempt holds it now"
    );
    assert_eq!(
        store.replay(two.clone(), "ops".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap(),
        ReplayOutcome::AlreadyPending { destination: "a".into(), rescheduled: true, config_version: None },
        "a retry waiting for later is made due now"
    );
    assert!(row(&store, &two).await.4.unwrap() <= now_ms());
    assert_eq!(
        store
            .replay(
                DeliveryId::from_stored("dlv_missing".into()),
                "ops".into(),
                ReplayScope::Operator,
                ReplayConfig::Current
            )
            .await
            .unwrap(),
        ReplayOutcome::NotFound
    );
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/inlet.db");
    let store = Store::open_sqlite(&path, SqliteSynchronous::Full).unwrap();
    let second = Store::open_sqlite(&path, SqliteSynchronous::Full).err().unwrap();
    assert!(matches!(second, StoreError::InUse { .. }), "{second:?}");
    assert!(second.to_string().contains("in use by another inlet-worker"), "{second}");
    drop(store);
    // Let the writer thread drop its connection; the lock goes with the last handle.
    Store::open_sqlite(&path, SqliteSynchronous::Full).expect("free once the first store is gone");
}

/// Issue #16: a retry due after `worker.retention` must outlive the prune, and a pending
/// delivery nobody will attempt (no due time: the state deliveries were left in when their retry
/// tasks expired from the old delivery stream, whose `max_age` was `worker.retention`) must be
/// recoverable by a replay instead of answering "already pending" for ever.
#[tokio::test]
async fn a_retry_past_retention_survives_the_prune_and_a_stuck_pending_delivery_is_replayable() {
    let (_dir, store) = open();
    store
        .record(vec![event("e1", "{}", &["a"]), event("e2", "{}", &["a"])], FirstClaims::all(UnixMs(1)))
        .await
        .unwrap();
    let waiting = delivery_id(1, "a");
    let stuck = delivery_id(2, "a");
    let later = UnixMs(now_ms() + 3_600_000);
    store.record_attempt(attempt(&waiting, 1, AttemptOutcome::Transient, NextStep::RetryAt(later), 1)).await.unwrap();
    store.record_attempt(attempt(&stuck, 1, AttemptOutcome::Transient, NextStep::RetryAt(later), 1)).await.unwrap();
    // Every event is past retention: neither has a delivery that is done, so neither goes.
    assert_eq!(store.prune(UnixMs(i64::MAX)).await.unwrap(), 0, "pending work is never pruned");
    let (claimed, _) =
        store.claim_due("a".into(), due(DueClass::Retry, 10, later, UnixMs(later.0 + 1000))).await.unwrap();
    assert_eq!(claimed.len(), 2, "both retries are still claimable when due");
    store
        .release_leases(claimed.iter().map(|c| (c.delivery.delivery_id.clone(), c.lease.token)).collect())
        .await
        .unwrap();

    // Stuck: pending with no due time, so no scheduler ever claims it.
    let id = stuck.clone();
    store
        .sqlite()
        .write(move |c| c.execute("UPDATE deliveries SET next_attempt_at_ms = NULL WHERE id = ?1", [&id]))
        .await
        .unwrap();
    let outcome =
        store.replay(stuck.clone(), "test".into(), ReplayScope::Operator, ReplayConfig::Current).await.unwrap();
    assert_eq!(
        outcome,
        ReplayOutcome::AlreadyPending { destination: "a".into(), rescheduled: true, config_version: None }
    );
    let (claimed, _) =
        store.claim_due("a".into(), due(DueClass::Retry, 10, UnixMs::now(), UnixMs(now_ms() + 1000))).await.unwrap();
    let ids: Vec<&DeliveryId> = claimed.iter().map(|c| &c.delivery.delivery_id).collect();
    assert_eq!(ids, [&stuck], "the replay made it due at once");
}

// PostgreSQL only from here: several workers on one database.

/// Two workers (two pools) on one fresh PostgreSQL database.
async fn two_workers() -> (TestPostgres, Store, Store) {
    let server = tokio::task::spawn_blocking(TestPostgres::start).await.unwrap();
    let url = server.url();
    let connect = || Store::connect_postgres(&url, None, 4, Duration::from_secs(10));
    let (one, two) = tokio::join!(connect(), connect());
    (server, one.unwrap(), two.unwrap())
}

/// A provider's redelivery reaches two workers at once: each event is recorded once, and the
/// other worker sees it as a duplicate. The second worker has the batch in the opposite order,
/// and both are made to meet in the middle: a third connection holds the middle event
/// (inserted, not committed) until both wait for it. Were the keys not inserted in one order,
/// each worker would then wait for a key the other inserted (a deadlock: one batch fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_recording_one_batch_at_once_record_each_event_once() {
    let (server, one, two) = two_workers().await;
    let batch: Vec<NewEvent> =
        (0..40).map(|n| event(&format!("e{n}"), "{}", if n % 4 == 0 { &[] } else { &["a", "b"] })).collect();
    let reversed: Vec<NewEvent> = batch.iter().rev().cloned().collect();

    let pool = super::postgres::connect(&server.url(), None, 1, Duration::ZERO).unwrap();
    let mut blocker = pool.get().await.unwrap();
    let holding = blocker.transaction().await.unwrap();
    holding
        .batch_execute(
            "INSERT INTO events (source, event_id, id_origin, scheme, secret_index, received_at_ms, recorded_at_ms,
                                 stream_sequence, headers_json, body, body_sha256, route_status)
             VALUES ('src', 'e20', 'provider', 'github', 0, 1, 1, 1, '[]', '', '', 'routed')",
        )
        .await
        .unwrap();
    let first = tokio::spawn({
        let (one, batch) = (one.clone(), batch.clone());
        async move { one.record(batch, FirstClaims::all(UnixMs(1))).await }
    });
    let second = tokio::spawn({
        let two = two.clone();
        async move { two.record(reversed, FirstClaims::all(UnixMs(1))).await }
    });
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
    let started = std::time::Instant::now();
    while peek_number(&one, waiting).await < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "both workers wait for the held event");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holding.rollback().await.unwrap();

    let first = first.await.unwrap().unwrap();
    let mut second = second.await.unwrap().unwrap();
    second.reverse();
    for ((recorded, seen), event) in first.iter().zip(&second).zip(&batch) {
        match (recorded, seen) {
            (Recorded::New { deliveries, .. }, Recorded::Duplicate { conflict: false })
            | (Recorded::Duplicate { conflict: false }, Recorded::New { deliveries, .. }) => {
                assert_eq!(deliveries.len(), event.destinations.len(), "{}", event.event_id);
            }
            other => panic!("{}: recorded once and seen once as a duplicate, not {other:?}", event.event_id),
        }
    }
    let totals = peek(&one, "SELECT count(*), sum(duplicates), sum(conflicts) FROM events".into()).await;
    assert_eq!(totals, [[Some("40".to_owned()), Some("40".to_owned()), Some("0".to_owned())]]);
    assert_eq!(peek_number(&two, "SELECT count(*) FROM deliveries").await, 60);
    assert_eq!(one.stats().await.unwrap().pending, 60, "the kept counts agree");
    assert_eq!(one.identity().await.unwrap(), two.identity().await.unwrap(), "one database");
}

/// Two workers claim one destination's 50 due deliveries at once, a few at a time: each is
/// claimed by exactly one of them, under the next fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_claiming_one_destination_claim_each_due_delivery_once() {
    let (_server, one, two) = two_workers().await;
    let batch: Vec<NewEvent> = (0..50).map(|n| event(&format!("e{n}"), "{}", &["a"])).collect();
    // Claimed at recording until 1 ms: long expired, so all 50 are due.
    one.record(batch, FirstClaims::all(UnixMs(1))).await.unwrap();
    let now = UnixMs::now();
    let claim_all = async |store: &Store| {
        let mut mine = Vec::new();
        loop {
            let (claimed, restarted) =
                store.claim_due("a".into(), due(DueClass::First, 7, now, UnixMs(now.0 + 60_000))).await.unwrap();
            if claimed.is_empty() {
                return mine;
            }
            assert_eq!(restarted.len(), claimed.len(), "each had its recording-time lease, expired");
            for claim in claimed {
                assert_eq!(claim.lease.token, LeaseToken(2));
                assert_eq!(claim.delivery.body.as_ref(), b"{}");
                mine.push(claim.delivery.delivery_id);
            }
        }
    };
    let (mut claimed, by_two) = tokio::join!(claim_all(&one), claim_all(&two));
    claimed.extend(by_two);
    let distinct: std::collections::HashSet<&DeliveryId> = claimed.iter().collect();
    assert_eq!((claimed.len(), distinct.len()), (50, 50), "every delivery claimed exactly once");
    assert!(!one.has_due("a".into(), DueClass::First, now).await.unwrap());
}

/// A worker that stalled past its lease cannot record over the worker that took the delivery
/// over, nor renew its lease; the new owner's result stands.
#[tokio::test]
async fn a_stale_owner_on_another_worker_is_superseded() {
    let (_server, one, two) = two_workers().await;
    one.record(vec![event("e1", "{}", &["a"])], FirstClaims::all(UnixMs(1))).await.unwrap();
    let id = delivery_id(1, "a");
    let now = now_ms();
    let (taken, restarted) =
        two.claim_due("a".into(), due(DueClass::First, 10, UnixMs(now), UnixMs(now + 60_000))).await.unwrap();
    assert_eq!((taken.len(), restarted), (1, vec![id.clone()]));
    assert_eq!(taken[0].lease.token, LeaseToken(2));
    assert!(!one.renew_lease(id.clone(), LeaseToken::FIRST, UnixMs(now + 90_000)).await.unwrap(), "fenced");
    let stale = one.record_attempt(attempt(&id, 1, AttemptOutcome::Delivered, NextStep::Delivered, 1));
    let current =
        two.record_attempt(attempt(&id, 1, AttemptOutcome::Transient, NextStep::RetryAt(UnixMs(now + 5_000)), 2));
    let (stale, current) = tokio::join!(stale, current);
    assert_eq!((stale.unwrap(), current.unwrap()), (AttemptSettled::Superseded, AttemptSettled::Recorded));
    assert_eq!(row(&one, &id).await, ("pending".to_owned(), 1, 2, None, Some(now + 5_000)));
    let attempts = peek(&one, "SELECT attempt, outcome FROM attempts".into()).await;
    assert_eq!(attempts, [[Some("1".to_owned()), Some("transient".to_owned())]], "only the new owner's attempt");
}

/// Pruning goes in batches (here 2 events per transaction) until fewer remain, keeps pending
/// and dead-lettered work and what was received after the cutoff, and keeps the counts. A
/// delivery replayed while the prune looks at its event (here: made pending by a transaction
/// that commits only once the prune waits for it) keeps its event.
#[tokio::test]
async fn pruning_goes_in_batches_and_keeps_work_not_done() {
    let (server, store) = super::open_temp_postgres().await;
    let names = ["a-pending", "b-dead", "c-done", "d-replayed"];
    store
        .record(names.iter().map(|name| event(name, "{}", &["a"])).collect(), FirstClaims::all(UnixMs(1)))
        .await
        .unwrap();
    let dead = NextStep::DeadLetter(DeadLetterReason::Permanent4xx);
    store.record_attempt(attempt(&delivery_id(2, "a"), 1, AttemptOutcome::Permanent, dead, 1)).await.unwrap();
    for n in [3, 4] {
        let delivered = attempt(&delivery_id(n, "a"), 1, AttemptOutcome::Delivered, NextStep::Delivered, 1);
        store.record_attempt(delivered).await.unwrap();
    }
    let unrouted: Vec<NewEvent> = (0..11).map(|n| event(&format!("unrouted-{n}"), "{}", &[])).collect();
    store.record(unrouted, FirstClaims::all(UnixMs(1))).await.unwrap();
    let recent = NewEvent { received_at: UnixMs(5_000), ..event("recent", "{}", &[]) };
    store.record(vec![recent], FirstClaims::all(UnixMs(1))).await.unwrap();

    let pool = super::postgres::connect(&server.url(), None, 1, Duration::ZERO).unwrap();
    let mut replayer = pool.get().await.unwrap();
    let replay = replayer.transaction().await.unwrap();
    let replayed = delivery_id(4, "a");
    replay.execute("UPDATE deliveries SET status = 'pending' WHERE id = $1", &[&replayed.as_str()]).await.unwrap();
    let Backend::Postgres(postgres) = &store.backend else { panic!("a PostgreSQL store") };
    let prune = tokio::spawn({
        let postgres = postgres.clone();
        async move { postgres.prune_in_batches(UnixMs(2_000), 2).await }
    });
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
    let started = std::time::Instant::now();
    while peek_number(&store, waiting).await < 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "the prune waits for the replayed delivery");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replay.commit().await.unwrap();

    let pruned = prune.await.unwrap().unwrap();
    assert_eq!(pruned, 12, "the delivered event and the 11 unrouted ones, 2 at a time");
    let kept = peek(&store, "SELECT event_id FROM events ORDER BY id".into()).await;
    let kept: Vec<&str> = kept.iter().map(|row| row[0].as_deref().unwrap()).collect();
    assert_eq!(kept, ["a-pending", "b-dead", "d-replayed", "recent"]);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.dead_letters, stats.pending), (1, 2));
    assert_eq!(peek_number(&store, "SELECT sum(n) FROM event_counts").await, 4, "the kept counts follow");
    assert_eq!(postgres.prune_in_batches(UnixMs(2_000), 2).await.unwrap(), 0, "nothing more to do");
}
