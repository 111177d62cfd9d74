//! Tests of searching by body content: what is searchable, the search's syntax and snippets
//! (pure), and the search itself on both backends: matches, phrases and parts of words, bodies
//! that are not text, the other filters, pages (also those stopped by the scan bound), pruning,
//! and the events stored before the index came.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use inlet_shared::config::SqliteSynchronous;

use super::{INDEXED_BYTES, MAX_CANDIDATES, SearchError, SearchQuery, Snippet, searchable_text, snippet};
use crate::model::UnixMs;
use crate::store::events::{FirstClaims, NewEvent};
use crate::store::operator::{Cursor, EventSelection, PageRequest};
use crate::store::tests::{event, on_postgres, peek};
use crate::store::{SearchPage, Store};

fn query(search: &str) -> SearchQuery {
    SearchQuery::parse(search).unwrap()
}

/// The byte range of `part` in `text` (its first occurrence).
fn range_of(text: &str, part: &str) -> std::ops::Range<usize> {
    let at = text.find(part).unwrap();
    at..at + part.len()
}

#[test]
fn only_utf8_text_is_searchable_up_to_the_bound_cut_at_a_character() {
    assert_eq!(searchable_text(b"{\"a\":1}"), Some("{\"a\":1}"));
    assert_eq!(searchable_text(b""), None, "nothing to find in an empty body");
    assert_eq!(searchable_text(&[b'a', 0xff, b'b']), None, "not UTF-8");
    assert_eq!(searchable_text("é".repeat(10).as_bytes()), Some("é".repeat(10).as_str()));

    let long = "x".repeat(INDEXED_BYTES + 10);
    assert_eq!(searchable_text(long.as_bytes()).unwrap().len(), INDEXED_BYTES);
    // A two-byte character across the bound: left out, not cut in half.
    let straddling = format!("{}é tail", "x".repeat(INDEXED_BYTES - 1));
    assert_eq!(searchable_text(straddling.as_bytes()).unwrap(), "x".repeat(INDEXED_BYTES - 1));
    // Invalid bytes past the bound do not matter; inside it they do.
    let mut late = "x".repeat(INDEXED_BYTES).into_bytes();
    late.push(0xff);
    assert_eq!(searchable_text(&late).unwrap().len(), INDEXED_BYTES);
    let mut early = "x".repeat(INDEXED_BYTES).into_bytes();
    early[10] = 0xff;
    assert_eq!(searchable_text(&early), None);
}

#[test]
fn a_search_is_words_and_quoted_phrases_of_three_characters_or_more() {
    assert_eq!(query("  ord_123   alice@example.com ").terms(), ["ord_123", "alice@example.com"]);
    assert_eq!(query("\"order paid\" refund").terms(), ["order paid", "refund"]);
    assert_eq!(query("abc\"def ghi\"").terms(), ["abc", "def ghi"]);
    assert_eq!(query("abc abc").terms(), ["abc"], "a repeated term counts once");
    assert_eq!(SearchQuery::parse("   "), Err(SearchError::Empty));
    assert_eq!(SearchQuery::parse("ok abc"), Err(SearchError::TermTooShort("ok".into())));
    assert_eq!(SearchQuery::parse("\"  a \""), Err(SearchError::TermTooShort("  a ".into())));
    assert_eq!(SearchQuery::parse("\"order paid"), Err(SearchError::UnclosedQuote));
    assert_eq!(SearchQuery::parse(&"x".repeat(201)), Err(SearchError::TooLong));
    assert_eq!(SearchQuery::parse("aaa bbb ccc ddd eee fff ggg hhh iii"), Err(SearchError::TooManyTerms));
    assert_eq!(SearchQuery::parse("abc\u{0}def"), Err(SearchError::ControlCharacter));
    // The FTS5 expression quotes every term: no operator of the user's reaches FTS5.
    assert_eq!(query("NEAR(abc def) OR* ^xyz").fts5(), "\"NEAR(abc\" AND \"def)\" AND \"OR*\" AND \"^xyz\"");
}

#[test]
fn a_snippet_is_the_text_around_the_first_match_with_every_match_in_it_marked() {
    let short = r#"{"id":"ORD_12345","email":"alice@example.com","ref":"ord_12"}"#;
    let found = snippet(short, &query("ord_12 alice"));
    assert_eq!(found.text, short, "short: all of it");
    assert!(!found.truncated_start && !found.truncated_end);
    let ord = range_of(short, "ORD_12");
    let alice = range_of(short, "alice");
    let last = short.rfind("ord_12").unwrap();
    assert_eq!(found.highlights, vec![ord, alice, last..last + 6], "case-insensitive, in order");

    let long = format!("{}needle in the middle{}", "a".repeat(500), "b".repeat(500));
    let found = snippet(&long, &query("NEEDLE"));
    assert!(found.truncated_start && found.truncated_end);
    assert_eq!(found.text.chars().count(), 160);
    assert_eq!(found.highlights, vec![40..46], "40 characters of lead");
    assert_eq!(&found.text[40..46], "needle");

    // Offsets are bytes of the snippet, on character boundaries, also after wider characters.
    let accented = "Ünïcödé — ÉCOLE de commerce";
    let found = snippet(accented, &query("école"));
    assert_eq!(&found.text[found.highlights[0].clone()], "ÉCOLE");

    // Overlapping matches of two terms are one marked part.
    let found = snippet("xxabcdefxx", &query("abcd cdef"));
    assert_eq!(found.highlights, vec![2..8]);

    // An engine that matched what Rust's folding does not: the start of the text, unmarked.
    assert_eq!(
        snippet("nothing here", &query("zzz")),
        Snippet { text: "nothing here".into(), highlights: vec![], truncated_start: false, truncated_end: false }
    );
}

on_each_backend!(
    a_search_finds_every_term_anywhere_in_text_bodies_newest_first,
    a_search_combines_with_the_other_filters_and_pages_by_cursor,
    a_page_stops_after_examining_its_bound_of_matches_and_says_where_to_go_on,
    pruning_an_event_removes_it_from_the_index,
    an_event_recorded_after_newer_ones_is_found_and_pruned_like_the_others,
);

/// An event from `source` with a body of raw bytes.
fn raw_event(id: &str, source: &str, body: &[u8]) -> NewEvent {
    NewEvent { source: source.into(), body: Bytes::copy_from_slice(body), ..event(id, "", &[]) }
}

async fn search(store: &Store, selection: EventSelection, search: &str, page: PageRequest) -> SearchPage {
    store.search_events(selection, query(search), page).await.unwrap()
}

/// The provider ids of a page's hits, in order.
fn ids(page: &SearchPage) -> Vec<&str> {
    page.hits.iter().map(|hit| hit.event.event_id.as_str()).collect()
}

const FIRST_20: PageRequest = PageRequest { after: None, limit: 20 };

async fn a_search_finds_every_term_anywhere_in_text_bodies_newest_first(store: Store) {
    let mut not_text = b"\xff\xfe ord_12345 alice@example.com".to_vec();
    not_text.extend_from_slice(b" order paid");
    store
        .record(
            vec![
                raw_event("e1", "src", br#"{"order":"ord_12345","email":"Alice@Example.com"}"#),
                raw_event("e2", "src", br#"{"order":"ord_99999","note":"paid order"}"#),
                raw_event("e3", "src", br#"{"note":"order paid"}"#),
                raw_event("e4", "src", &not_text),
                raw_event("e5", "src", "{\"city\":\"Zürich\",\"ref\":\"ord_12\"}".as_bytes()),
            ],
            FirstClaims::all(UnixMs(1)),
        )
        .await
        .unwrap();
    // From the index (SQLite reads what it has not indexed yet directly: another test).
    wait_until_indexed(&store).await;
    let all = EventSelection::default();
    // Part of a token: found, newest first; the body that is not text never is.
    let page = search(&store, all.clone(), "ord_12", FIRST_20).await;
    assert_eq!(ids(&page), ["e5", "e1"]);
    assert!(!page.has_more);
    assert_eq!(page.end, Some(page.hits[1].event.cursor()));
    // Case-insensitive, an e-mail address whole.
    assert_eq!(ids(&search(&store, all.clone(), "alice@EXAMPLE.com", FIRST_20).await), ["e1"]);
    // A phrase is found as written; its words as separate terms, in any order.
    assert_eq!(ids(&search(&store, all.clone(), "\"order paid\"", FIRST_20).await), ["e3"]);
    assert_eq!(ids(&search(&store, all.clone(), "order paid", FIRST_20).await), ["e3", "e2"]);
    // Every term must be there.
    assert_eq!(ids(&search(&store, all.clone(), "ord_99 paid", FIRST_20).await), ["e2"]);
    assert_eq!(ids(&search(&store, all.clone(), "ord_12345 paid", FIRST_20).await), Vec::<&str>::new());
    // Not ASCII. In either case on SQLite; on PostgreSQL `ILIKE` folds such letters as the
    // database's LC_CTYPE says (the test servers' is C: ASCII only).
    assert_eq!(ids(&search(&store, all.clone(), "Zürich", FIRST_20).await), ["e5"]);
    if !on_postgres(&store) {
        assert_eq!(ids(&search(&store, all.clone(), "ZÜRICH", FIRST_20).await), ["e5"]);
    }
    // Nothing matches: an empty last page.
    let none = search(&store, all.clone(), "no-such-text", FIRST_20).await;
    assert_eq!((none.hits.len(), none.has_more, none.end), (0, false, None));
    // FTS5's syntax in a term is text to find.
    assert_eq!(ids(&search(&store, all.clone(), "NEAR(ord OR* \"^ord\"", FIRST_20).await), Vec::<&str>::new());

    // Each hit carries its body with the matches marked.
    let hit = &search(&store, all, "EXAMPLE.COM ord_123", FIRST_20).await.hits[0];
    let body = r#"{"order":"ord_12345","email":"Alice@Example.com"}"#;
    assert_eq!(hit.snippet.text, body);
    assert_eq!(hit.snippet.highlights, vec![range_of(body, "ord_123"), range_of(body, "Example.com")]);
}

async fn a_search_combines_with_the_other_filters_and_pages_by_cursor(store: Store) {
    let events = (1..=6)
        .map(|n| {
            let source = if n % 2 == 0 { "even" } else { "odd" };
            raw_event(&format!("evt_{n}"), source, format!("{{\"customer\":\"cus_{n}\",\"plan\":\"gold\"}}").as_bytes())
        })
        .collect();
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    let even = EventSelection { source: Some("even".into()), ..EventSelection::default() };
    assert_eq!(ids(&search(&store, even.clone(), "gold", FIRST_20).await), ["evt_6", "evt_4", "evt_2"]);
    let with_id = EventSelection { text: Some("_4".into()), ..even.clone() };
    assert_eq!(ids(&search(&store, with_id, "gold", FIRST_20).await), ["evt_4"]);

    // Two at a time: every hit once, in order, the last page says so.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = search(&store, even.clone(), "gold", PageRequest { after, limit: 2 }).await;
        seen.extend(ids(&page).into_iter().map(str::to_owned));
        if !page.has_more {
            break;
        }
        after = page.end;
    }
    assert_eq!(seen, ["evt_6", "evt_4", "evt_2"]);
}

async fn a_page_stops_after_examining_its_bound_of_matches_and_says_where_to_go_on(store: Store) {
    // The oldest event is the only one of its source (recorded alone: PostgreSQL numbers a
    // batch's events in its own order); every event has the term.
    let body = b"{\"status\":\"everywhere\"}";
    store.record(vec![raw_event("e0", "rare", body)], FirstClaims::all(UnixMs(1))).await.unwrap();
    let events: Vec<NewEvent> =
        (1..=MAX_CANDIDATES + 10).map(|n| raw_event(&format!("e{n}"), "common", body)).collect();
    for batch in events.chunks(1_000) {
        store.record(batch.to_vec(), FirstClaims::all(UnixMs(1))).await.unwrap();
    }
    let rare = EventSelection { source: Some("rare".into()), ..EventSelection::default() };
    let first = search(&store, rare.clone(), "everywhere", FIRST_20).await;
    assert!(first.hits.is_empty(), "the first page examined its bound of the newest matches");
    assert!(first.has_more);
    let Some(Cursor(end)) = first.end else { panic!("no cursor") };
    let second = search(&store, rare, "everywhere", PageRequest { after: first.end, limit: 20 }).await;
    assert_eq!(ids(&second), ["e0"]);
    assert!(!second.has_more);
    // The first page went on from the newest, exactly its bound of them.
    let newest = peek(&store, "SELECT max(id) FROM events".into()).await[0][0].clone().unwrap();
    let examined = newest.parse::<i64>().unwrap() - end + 1;
    assert_eq!(examined, i64::try_from(MAX_CANDIDATES).unwrap());
}

async fn pruning_an_event_removes_it_from_the_index(store: Store) {
    let old = |id: &str, body: &str| NewEvent { received_at: UnixMs(1), ..raw_event(id, "src", body.as_bytes()) };
    let events = vec![old("e1", "{\"token\":\"prunable\"}"), old("e2", "{\"token\":\"prunable\"}"), old("e3", "{}")];
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    wait_until_indexed(&store).await;
    // What the index is read with: PostgreSQL's copies of the text, SQLite's index itself.
    let indexed =
        if on_postgres(&store) { "SELECT count(*) FROM event_search" } else { "SELECT count(*) FROM event_text_fts" };
    assert_eq!(peek(&store, indexed.into()).await[0][0].as_deref(), Some("3"));
    let pruned = store.prune(UnixMs(i64::MAX)).await.unwrap();
    // SQLite keeps the newest event (its row id must not come back).
    assert_eq!(pruned, if on_postgres(&store) { 3 } else { 2 });
    assert!(search(&store, EventSelection::default(), "prunable", FIRST_20).await.hits.is_empty());
    let left = if on_postgres(&store) { "0" } else { "1" };
    assert_eq!(peek(&store, indexed.into()).await[0][0].as_deref(), Some(left));
    if !on_postgres(&store) {
        // The FTS index itself forgot them (not only the rows it is read with).
        let in_index = "SELECT count(*) FROM event_text_fts WHERE event_text_fts MATCH '\"prunable\"'";
        assert_eq!(peek(&store, in_index.into()).await[0][0].as_deref(), Some("0"));
    }
}

/// An event recorded after events with higher row ids (a message redelivered after later ones
/// were recorded: SQLite's row ids follow the stream's sequence) is found like the others, as
/// soon as it is recorded; and pruning it takes it out of the index again.
async fn an_event_recorded_after_newer_ones_is_found_and_pruned_like_the_others(store: Store) {
    let at = |sequence: u64, received_at: i64| NewEvent {
        stream_sequence: sequence,
        received_at: UnixMs(received_at),
        ..raw_event(&format!("e{sequence}"), "src", format!("{{\"ticket\":\"late-{sequence}\"}}").as_bytes())
    };
    // Sequence 4 was refused (NAK'd) and comes back after 5 was recorded.
    store
        .record(vec![at(1, 1_000), at(2, 1_000), at(3, 1_000), at(5, 1_000)], FirstClaims::all(UnixMs(1)))
        .await
        .unwrap();
    wait_until_indexed(&store).await;
    store.record(vec![at(4, 1)], FirstClaims::all(UnixMs(1))).await.unwrap();
    let late = peek(&store, "SELECT id, (SELECT max(id) FROM events) FROM events WHERE event_id = 'e4'".into()).await;
    if !on_postgres(&store) {
        // The case itself: on SQLite its row id is below the newest one's (PostgreSQL numbers
        // events in the order it records them).
        let (id, newest) = (late[0][0].clone().unwrap(), late[0][1].clone().unwrap());
        assert!(id.parse::<i64>().unwrap() < newest.parse::<i64>().unwrap(), "row id {id}, newest {newest}");
    }
    // Found at once: not left for an indexer that has gone past its row id.
    let page = search_store(&store, "late-4").await;
    assert_eq!(ids(&page), ["e4"]);
    assert_eq!(page.hits[0].snippet.text, "{\"ticket\":\"late-4\"}");
    // Newest first by row id: on PostgreSQL the late event is the newest.
    let all = if on_postgres(&store) { ["e4", "e5", "e3", "e2", "e1"] } else { ["e5", "e4", "e3", "e2", "e1"] };
    assert_eq!(ids(&search_store(&store, "late-").await), all);
    wait_until_indexed(&store).await;
    assert_eq!(ids(&search_store(&store, "late-").await), all, "indexed once");
    assert_eq!(store.stats().await.unwrap().search_index_lag, 0, "nothing left to index");
    if !on_postgres(&store) {
        let in_index = "SELECT count(*) FROM event_text_fts WHERE event_text_fts MATCH '\"late-\"'";
        assert_eq!(peek(&store, in_index.into()).await[0][0].as_deref(), Some("5"));
    }
    // Pruned (only it is old enough): gone from the search and from the index.
    assert_eq!(store.prune(UnixMs(500)).await.unwrap(), 1);
    assert_eq!(ids(&search_store(&store, "late-").await), ["e5", "e3", "e2", "e1"]);
    if !on_postgres(&store) {
        let in_index = "SELECT count(*) FROM event_text_fts WHERE event_text_fts MATCH '\"late-4\"'";
        assert_eq!(peek(&store, in_index.into()).await[0][0].as_deref(), Some("0"));
    }
}

/// On SQLite, waits until the writer has indexed every event (PostgreSQL indexes as it
/// records).
async fn wait_until_indexed(store: &Store) {
    if on_postgres(store) {
        return;
    }
    let pending = "SELECT count(*) FROM events WHERE id > (SELECT indexed_through FROM event_text_fts_progress)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while peek(store, pending.into()).await[0][0].as_deref() != Some("0") {
        assert!(std::time::Instant::now() < deadline, "the writer did not index within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// SQLite indexes after recording: a search finds the events not indexed yet (read directly),
/// those indexed, and pages across the two the same way; the writer catches up by itself.
#[tokio::test]
async fn sqlite_finds_events_before_and_after_they_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inlet.db");
    // No writer runs on this connection: nothing is indexed until this test says so.
    // The newest schema (its event columns are what the search reads).
    let newest = super::super::migrate::MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    let connection = crate::store::tests::database_at_version(&path, newest);
    let insert = "INSERT INTO events (id, source, event_id, id_origin, scheme, secret_index, received_at_ms,
                                      recorded_at_ms, stream_sequence, headers_json, body, body_sha256, route_status)
                  VALUES (?1, 'src', ?2, 'provider', 'github', 0, 1, 1, 1, '[]', ?3, '', 'unrouted')";
    for id in 1..=5 {
        let body = format!("{{\"invoice\":\"INV-{id}\",\"n\":{id}}}");
        connection.execute(insert, rusqlite::params![id, format!("e{id}"), body.as_bytes()]).unwrap();
    }
    let all = EventSelection::default();
    let search = |connection: &rusqlite::Connection, search: &str, page: PageRequest| {
        super::search_page(connection, &all, &query(search), page).unwrap()
    };
    let in_pages = |connection: &rusqlite::Connection| {
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = search(connection, "inv-", PageRequest { after, limit: 2 });
            seen.extend(ids(&page).into_iter().map(str::to_owned));
            if !page.has_more {
                return seen;
            }
            after = page.end;
        }
    };
    let everything = ["e5", "e4", "e3", "e2", "e1"];
    assert_eq!(ids(&search(&connection, "INV-", FIRST_20)), everything, "none indexed");
    assert_eq!(in_pages(&connection), everything);
    assert_eq!(super::index_lag(&connection).unwrap(), 5);
    assert_eq!(super::index_pending(&connection, 3).unwrap(), 3);
    assert_eq!(super::index_lag(&connection).unwrap(), 2);
    assert_eq!(ids(&search(&connection, "INV-", FIRST_20)), everything, "three indexed");
    assert_eq!(ids(&search(&connection, "inv-4", FIRST_20)), ["e4"]);
    assert_eq!(ids(&search(&connection, "inv-2", FIRST_20)), ["e2"]);
    assert_eq!(in_pages(&connection), everything);
    let in_index = "SELECT count(*) FROM event_text_fts WHERE event_text_fts MATCH '\"inv-\"'";
    assert_eq!(connection.query_row(in_index, [], |row| row.get::<_, i64>(0)).unwrap(), 3);
    // Deleting an event not indexed yet leaves the index alone; deleting an indexed one takes
    // it out.
    connection.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM events WHERE id IN (2, 5)").unwrap();
    connection.execute_batch("INSERT INTO event_text_fts (event_text_fts) VALUES ('integrity-check')").unwrap();
    assert_eq!(connection.query_row(in_index, [], |row| row.get::<_, i64>(0)).unwrap(), 2);
    assert_eq!(ids(&search(&connection, "INV-", FIRST_20)), ["e4", "e3", "e1"]);
    // A body that is not text is passed over, and deleting its event (examined, not in the
    // index) leaves the index whole.
    connection.execute(insert, rusqlite::params![6, "e6", b"\xffINV-6".to_vec()]).unwrap();
    assert_eq!(super::index_pending(&connection, 10).unwrap(), 2, "events 4 and 6 examined");
    assert_eq!(super::index_lag(&connection).unwrap(), 0, "a body that is not text is no lag");
    assert_eq!(connection.query_row(in_index, [], |row| row.get::<_, i64>(0)).unwrap(), 3);
    connection.execute_batch("DELETE FROM events WHERE id = 6").unwrap();
    connection.execute_batch("INSERT INTO event_text_fts (event_text_fts) VALUES ('integrity-check')").unwrap();
    connection.execute(insert, rusqlite::params![7, "e7", b"{\"invoice\":\"INV-7\"}".to_vec()]).unwrap();
    drop(connection);

    // A worker's writer indexes the rest by itself.
    let store = Store::open_sqlite(&path, SqliteSynchronous::Full).unwrap();
    wait_until_indexed(&store).await;
    assert_eq!(peek(&store, in_index.into()).await[0][0].as_deref(), Some("4"));
    assert_eq!(ids(&search_store(&store, "INV-").await), ["e7", "e4", "e3", "e1"]);
}

/// The lag is counted up to its bound, so refreshing the gauge stays cheap however far the
/// index is behind.
#[test]
fn the_index_lag_is_counted_up_to_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut connection = crate::store::tests::database_at_version(&dir.path().join("inlet.db"), 19);
    let transaction = connection.transaction().unwrap();
    let bound = super::INDEX_LAG_COUNTED_UP_TO;
    for id in 1..=bound + 1 {
        transaction
            .execute(
                "INSERT INTO events (id, source, event_id, id_origin, scheme, secret_index, received_at_ms,
                                     recorded_at_ms, stream_sequence, headers_json, body, body_sha256, route_status)
                 VALUES (?1, 'src', 'e' || ?1, 'provider', 'github', 0, 1, 1, 1, '[]', x'7b7d', '', 'unrouted')",
                [id],
            )
            .unwrap();
    }
    transaction.commit().unwrap();
    assert_eq!(super::index_lag(&connection).unwrap(), bound, "one more recorded, the bound said");
    assert_eq!(super::index_pending(&connection, 2).unwrap(), 2);
    assert_eq!(super::index_lag(&connection).unwrap(), bound - 1, "exact under the bound");
}

async fn search_store(store: &Store, text: &str) -> SearchPage {
    search(store, EventSelection::default(), text, FIRST_20).await
}

/// A store from before the index (SQLite version 17): what it holds is found at once (read
/// directly) and indexed by the writer.
#[tokio::test]
async fn the_migration_indexes_the_events_a_sqlite_store_already_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inlet.db");
    let connection = crate::store::tests::database_at_version(&path, 17);
    let insert = "INSERT INTO events (id, source, event_id, id_origin, scheme, secret_index, received_at_ms,
                                      recorded_at_ms, stream_sequence, headers_json, body, body_sha256, route_status)
                  VALUES (?1, 'src', ?2, 'provider', 'github', 0, 1, 1, 1, '[]', ?3, '', 'unrouted')";
    for (id, body) in
        [(1, b"{\"sku\":\"old-sku-1\"}".to_vec()), (2, b"\xffold-sku-2".to_vec()), (3, b"old-sku-3".to_vec())]
    {
        connection.execute(insert, rusqlite::params![id, format!("e{id}"), body]).unwrap();
    }
    drop(connection);
    let store = Store::open_sqlite(&path, SqliteSynchronous::Full).unwrap();
    assert_eq!(
        ids(&search(&store, EventSelection::default(), "old-sku", FIRST_20).await),
        ["e3", "e1"],
        "read directly"
    );
    wait_until_indexed(&store).await;
    assert_eq!(ids(&search(&store, EventSelection::default(), "old-sku", FIRST_20).await), ["e3", "e1"], "indexed");
    let in_index = "SELECT count(*) FROM event_text_fts WHERE event_text_fts MATCH '\"old-sku\"'";
    assert_eq!(peek(&store, in_index.into()).await[0][0].as_deref(), Some("2"));
}

/// The same on PostgreSQL: the search migration undone on a store holding events, then applied
/// again by the next connection.
#[tokio::test]
async fn the_migration_indexes_the_events_a_postgres_store_already_holds() {
    let (server, store) = crate::store::open_temp_postgres().await;
    let events = vec![raw_event("e1", "src", b"{\"sku\":\"old-sku-1\"}"), raw_event("e2", "src", b"\xffold-sku-2")];
    store.record(events, FirstClaims::all(UnixMs(1))).await.unwrap();
    let (version, _, _) = crate::store::postgres::migrate::MIGRATIONS
        .iter()
        .find(|(_, name, _)| crate::store::migrate::makes_search_index(name))
        .unwrap();
    peek(&store, format!("DROP TABLE event_search; DELETE FROM schema_migrations WHERE version = {version}")).await;
    drop(store);
    let store = Store::connect_postgres(&server.url(), None, 2, std::time::Duration::from_secs(10)).await.unwrap();
    assert_eq!(ids(&search(&store, EventSelection::default(), "old-sku", FIRST_20).await), ["e1"]);
}
