//! Searching events by the text of their bodies on PostgreSQL (see `store/search.rs` for what
//! is searchable, what matches and how a page is bounded): `event_search.body_text ILIKE` each
//! term, answered from the `pg_trgm` GIN index.

use super::operator::{Where, event_row, event_where, query_rows, read};
use super::{PgError, Postgres};
use crate::model::EventRowId;
use crate::store::operator::{EVENT_COLUMNS, contains_pattern};
use crate::store::search::{INDEXED_BYTES, Rounds, SearchHit, searchable_text, snippet};
use crate::store::{EventSelection, PageRequest, SearchPage, SearchQuery, StoreError};

type Transaction<'a> = deadpool_postgres::Transaction<'a>;

/// Keeps newly recorded events' searchable text (in the recording transaction), where the GIN
/// index takes it at once (its pending list, merged later, keeps this cheap): `(row id, body)`
/// pairs.
pub(super) async fn index_events(t: &Transaction<'_>, events: &[(EventRowId, &[u8])]) -> Result<(), PgError> {
    let (ids, texts): (Vec<EventRowId>, Vec<&str>) =
        events.iter().filter_map(|(id, body)| Some((*id, searchable_text(body)?))).unzip();
    if ids.is_empty() {
        return Ok(());
    }
    let statement = t
        .prepare_cached(
            "INSERT INTO event_search (event_rowid, body_text) SELECT * FROM unnest($1::bigint[], $2::text[])",
        )
        .await?;
    t.execute(&statement, &[&ids, &texts]).await?;
    Ok(())
}

/// Keeps the searchable text of the events already stored when search came (the migration
/// that made it runs this in its transaction); returns how many had some.
pub(in crate::store) async fn backfill(t: &tokio_postgres::Transaction<'_>) -> Result<u64, tokio_postgres::Error> {
    // Only the searchable prefix is read: a large body is not loaded whole.
    let read = t
        .prepare(&format!(
            "SELECT id, substring(body FROM 1 FOR {INDEXED_BYTES}) FROM events WHERE id > $1 ORDER BY id LIMIT 500"
        ))
        .await?;
    let insert = t.prepare("INSERT INTO event_search (event_rowid, body_text) VALUES ($1, $2)").await?;
    let (mut after, mut indexed) = (i64::MIN, 0);
    loop {
        let rows = t.query(&read, &[&after]).await?;
        let Some(last) = rows.last() else { return Ok(indexed) };
        after = last.try_get(0)?;
        for row in &rows {
            let (id, body): (i64, &[u8]) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(text) = searchable_text(body) {
                t.execute(&insert, &[&id, &text]).await?;
                indexed += 1;
            }
        }
    }
}

impl Postgres {
    pub async fn search_events(
        &self,
        selection: EventSelection,
        query: SearchQuery,
        page: PageRequest,
    ) -> Result<SearchPage, StoreError> {
        read(self, async |c| {
            let mut rounds = Rounds::new(page);
            loop {
                let asked = rounds.next_round();
                // The next matches, newest first: each term an `ILIKE` pattern (taken literally).
                let mut w = Where::default();
                for term in query.terms() {
                    w.add("s.body_text ILIKE $? ESCAPE '\\'", contains_pattern(term));
                }
                w.add("s.event_rowid < $?", rounds.before);
                let limit = w.bind(i64::try_from(asked).unwrap_or(i64::MAX));
                let sql = format!(
                    "SELECT s.event_rowid FROM event_search s {} ORDER BY s.event_rowid DESC LIMIT {limit}",
                    w.sql()
                );
                let matches: Vec<i64> = query_rows(c, &sql, &w, |row| Ok(row.try_get(0)?)).await?;
                let mut hits = Vec::new();
                if !matches.is_empty() {
                    // Which of them the other filters keep, with their text for the snippet.
                    let mut w = event_where(&selection);
                    w.add("e.id = ANY($?)", matches.clone());
                    let limit = w.bind(i64::try_from(rounds.wanted()).unwrap_or(i64::MAX));
                    let sql = format!(
                        "SELECT {EVENT_COLUMNS}, s.body_text FROM events e JOIN event_search s ON s.event_rowid = e.id
                         {} ORDER BY e.id DESC LIMIT {limit}",
                        w.sql()
                    );
                    let statement = c.prepare_cached(&sql).await?;
                    for row in c.query(&statement, &w.params()).await? {
                        let text: &str = row.try_get(11)?;
                        hits.push(SearchHit { event: event_row(&row)?, snippet: snippet(text, &query) });
                    }
                }
                let exhausted = matches.len() < asked;
                if let Some(page) = rounds.take(matches.len(), matches.last().copied(), exhausted, hits) {
                    return Ok(page);
                }
            }
        })
        .await
    }
}
