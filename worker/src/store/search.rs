//! Searching events by the text of their bodies (the console's "Body contains"): what of a body
//! is searchable, the search's syntax, the bounded newest-first scan that answers it, and the
//! snippet each hit carries with its matched parts marked. SQLite's queries are here, their
//! PostgreSQL twins in `postgres/search.rs`.
//!
//! **What is searchable.** A body's first [`INDEXED_BYTES`] bytes when they are UTF-8 text (an
//! incomplete character at the cut left out); other bodies (binary, another charset) are
//! not searchable. The worker decides this ([`searchable_text`]). Both engines index that text
//! by trigrams. PostgreSQL: a copy of it in `event_search`, written when the event is recorded,
//! under a `pg_trgm` GIN index (GIN's pending list keeps the update cheap). SQLite: an FTS5
//! `trigram` index that keeps no copy (`event_text_fts`, contentless, rowid = the event's), filled
//! by the writer between its groups from the events' bodies, in small transactions of its own
//! ([`index_pending`], `store/writer.rs`): recording writes nothing for search and never waits
//! for it, and a search reads the few events not indexed yet from their bodies directly. (The
//! exception: an event recorded after the index passed its row id, a redelivered message, is
//! indexed as it is recorded: [`IndexProgress`].)
//! (Until version 19 SQLite also kept the copy; writing it cost recording a sixth of its CPU.)
//!
//! **What matches.** Every term of the search, a word or a `"quoted phrase"`, appears in that
//! text, case-insensitively, anywhere: `ord_12` finds `"order":"ord_12345"`, an e-mail address
//! or a URL is found whole or in part. Substrings rather than words, because webhook bodies are
//! JSON full of ids, e-mail addresses and URLs that word splitters cut differently on each
//! engine; with trigrams both engines answer the same. A term has at least
//! [`MIN_TERM_CHARS`] characters (a trigram index cannot look up less). The user's text never
//! reaches a query language: terms are bound as quoted FTS5 strings or `ILIKE` patterns.
//!
//! **Bounded.** A search examines at most [`MAX_CANDIDATES`] matching events per page, newest
//! first, in rounds, applying the list's other filters to each round: a page ends when it is
//! full, when the matches run out, or when that many were examined (then it may be short, even
//! empty, and says where the next page goes on). So a term found in every body, combined with a
//! filter that keeps none of them, costs one bounded page, not a scan of the store.

use std::ops::Range;

use rusqlite::types::ToSql;
use rusqlite::{params, params_from_iter};

use super::StoreError;
use super::operator::{Cursor, EVENT_COLUMNS, EventRow, EventSelection, PageRequest, event_row, placeholders};
use super::sqlite::Sqlite;
use crate::model::EventRowId;

/// How much of a body is searchable, in bytes from its start.
pub const INDEXED_BYTES: usize = 64 * 1024;
/// Longest search, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;
/// Most terms in one search.
pub const MAX_TERMS: usize = 8;
/// Fewest characters in a term.
pub const MIN_TERM_CHARS: usize = 3;
/// Most matching events examined for one page.
pub const MAX_CANDIDATES: usize = 5_000;
/// Matching events read per round of a page.
pub(super) const CANDIDATES_PER_ROUND: usize = 500;
/// Characters of body a snippet shows, and how many of them come before the first match.
const SNIPPET_CHARS: usize = 160;
const SNIPPET_LEAD_CHARS: usize = 40;

/// The searchable text of `body`: its first [`INDEXED_BYTES`] bytes when they are UTF-8 (an
/// incomplete character at the cut left out); `None` for a body that is not text, or empty.
pub fn searchable_text(body: &[u8]) -> Option<&str> {
    let prefix = &body[..body.len().min(INDEXED_BYTES)];
    let text = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        // Cut inside a character at the end (`error_len` is None): the text before it.
        Err(error) if error.error_len().is_none() && prefix.len() == INDEXED_BYTES => {
            std::str::from_utf8(&prefix[..error.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// A parsed search: the terms that must all appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    terms: Vec<String>,
}

/// Why a search was refused (the API says so to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// Nothing to look for.
    #[error("the search is empty")]
    Empty,
    /// Over [`MAX_SEARCH_CHARS`].
    #[error("the search is longer than {MAX_SEARCH_CHARS} characters")]
    TooLong,
    /// Over [`MAX_TERMS`].
    #[error("the search has more than {MAX_TERMS} terms")]
    TooManyTerms,
    /// A term under [`MIN_TERM_CHARS`].
    #[error("each search term needs at least {MIN_TERM_CHARS} characters; `{0}` has fewer")]
    TermTooShort(String),
    /// A `"` with no closing one.
    #[error("a quoted phrase is not closed (a \" is missing)")]
    UnclosedQuote,
    /// A control character (no body text has one worth finding, and PostgreSQL's text takes no NUL).
    #[error("the search contains a control character")]
    ControlCharacter,
}

impl SearchQuery {
    /// Reads a search: terms separated by white space, a `"quoted phrase"` being one term (with
    /// its spaces); every term must appear.
    ///
    /// # Errors
    ///
    /// [`SearchError`] says what is wrong with it.
    pub fn parse(search: &str) -> Result<SearchQuery, SearchError> {
        if search.chars().count() > MAX_SEARCH_CHARS {
            return Err(SearchError::TooLong);
        }
        if search.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            return Err(SearchError::ControlCharacter);
        }
        let mut terms = Vec::new();
        let mut rest = search;
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            let term = if let Some(quoted) = rest.strip_prefix('"') {
                let end = quoted.find('"').ok_or(SearchError::UnclosedQuote)?;
                rest = &quoted[end + 1..];
                &quoted[..end]
            } else {
                let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
                let term = &rest[..end];
                rest = &rest[end..];
                term
            };
            if term.trim().chars().count() < MIN_TERM_CHARS {
                return Err(SearchError::TermTooShort(term.to_owned()));
            }
            if !terms.iter().any(|known| known == term) {
                terms.push(term.to_owned());
            }
        }
        if terms.is_empty() {
            return Err(SearchError::Empty);
        }
        if terms.len() > MAX_TERMS {
            return Err(SearchError::TooManyTerms);
        }
        Ok(SearchQuery { terms })
    }

    /// The terms, each to be found as it is (case aside).
    pub fn terms(&self) -> &[String] {
        &self.terms
    }

    /// The FTS5 expression: each term a quoted string (a trigram table finds it as a
    /// substring), all of them required. Nothing of the user's text is read as syntax.
    fn fts5(&self) -> String {
        let quoted: Vec<String> = self.terms.iter().map(|term| format!("\"{}\"", term.replace('"', "\"\""))).collect();
        quoted.join(" AND ")
    }
}

/// A piece of a body around where a search matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// The piece of text.
    pub text: String,
    /// The parts of `text` that match a term: byte ranges, in order, not overlapping.
    pub highlights: Vec<Range<usize>>,
    /// Text comes before it.
    pub truncated_start: bool,
    /// Text follows it.
    pub truncated_end: bool,
}

/// `text` folded for case-insensitive matching, with where each folded byte came from.
struct Folded {
    folded: String,
    /// For each byte of `folded`, the byte offset in the text of the character it came from.
    origin: Vec<usize>,
}

impl Folded {
    fn of(text: &str) -> Folded {
        let mut folded = String::with_capacity(text.len());
        let mut origin = Vec::with_capacity(text.len());
        for (at, c) in text.char_indices() {
            folded.extend(c.to_lowercase());
            origin.resize(folded.len(), at);
        }
        Folded { folded, origin }
    }

    /// The text's byte range of the folded range `range` (whole characters).
    fn original(&self, text: &str, range: Range<usize>) -> Range<usize> {
        let start = self.origin[range.start];
        let last = self.origin[range.end - 1];
        let end = last + text[last..].chars().next().map_or(0, char::len_utf8);
        start..end
    }
}

/// The snippet of `text` for `query`: about [`SNIPPET_CHARS`] characters around the first
/// match, every match inside it marked. Matching folds case as Rust's `to_lowercase` does;
/// where an engine folded otherwise and no match is found, the snippet is the text's start,
/// unmarked.
pub fn snippet(text: &str, query: &SearchQuery) -> Snippet {
    let folded = Folded::of(text);
    let terms: Vec<String> = query.terms.iter().map(|term| term.to_lowercase()).collect();
    let first = terms
        .iter()
        .filter(|term| !term.is_empty())
        .filter_map(|term| folded.folded.find(term.as_str()).map(|at| folded.original(text, at..at + term.len())))
        .min_by_key(|range| range.start);
    let (start, end) = match &first {
        Some(first) => {
            let start = text[..first.start].char_indices().rev().nth(SNIPPET_LEAD_CHARS - 1).map_or(0, |(at, _)| at);
            (start, char_end(text, start, SNIPPET_CHARS).max(first.end))
        }
        None => (0, char_end(text, 0, SNIPPET_CHARS)),
    };
    let mut highlights: Vec<Range<usize>> = Vec::new();
    if first.is_some() {
        for term in terms.iter().filter(|term| !term.is_empty()) {
            for (at, _) in folded.folded.match_indices(term.as_str()) {
                let range = folded.original(text, at..at + term.len());
                if range.start >= start && range.end <= end {
                    highlights.push(range.start - start..range.end - start);
                }
            }
        }
    }
    highlights.sort_by_key(|range| (range.start, range.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(highlights.len());
    for range in highlights {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    Snippet {
        text: text[start..end].to_owned(),
        highlights: merged,
        truncated_start: start > 0,
        truncated_end: end < text.len(),
    }
}

/// The byte offset `chars` characters after `start` in `text` (or its end).
fn char_end(text: &str, start: usize, chars: usize) -> usize {
    text[start..].char_indices().nth(chars).map_or(text.len(), |(at, _)| start + at)
}

/// An event a search found, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The event.
    pub event: EventRow,
    /// Its body around the match.
    pub snippet: Snippet,
}

/// One page of a search, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// The events found.
    pub hits: Vec<SearchHit>,
    /// Whether older matches may follow (also when the page stopped at [`MAX_CANDIDATES`]).
    pub has_more: bool,
    /// Where the next page starts after: the last hit, or the last event examined when the page
    /// stopped at [`MAX_CANDIDATES`] before filling up.
    pub end: Option<Cursor>,
}

/// How a page's rounds went: the caller's loop over its engine's queries (the next events to
/// examine, then which of the matching ones the other filters keep) asks this what to do next.
pub(super) struct Rounds {
    limit: usize,
    examined: usize,
    /// Only events older than this one are examined next.
    pub(super) before: i64,
    hits: Vec<SearchHit>,
}

impl Rounds {
    pub(super) fn new(page: PageRequest) -> Rounds {
        Rounds {
            limit: page.limit,
            examined: 0,
            before: page.after.map_or(i64::MAX, |Cursor(id)| id),
            hits: Vec::new(),
        }
    }

    /// How many events to examine in the next round.
    pub(super) fn next_round(&self) -> usize {
        CANDIDATES_PER_ROUND.min(MAX_CANDIDATES - self.examined)
    }

    /// How many rows the filter query of a round may return (one more than the page needs,
    /// to know whether another follows).
    pub(super) fn wanted(&self) -> usize {
        self.limit + 1 - self.hits.len()
    }

    /// Takes a round: `examined` events were looked at, newest first, the next round starting
    /// below `next` (`None`: where it was), `exhausted` when no older one is left; `hits` are
    /// those the search and the filters kept. Returns the page when it is done.
    pub(super) fn take(
        &mut self,
        examined: usize,
        next: Option<i64>,
        exhausted: bool,
        hits: Vec<SearchHit>,
    ) -> Option<SearchPage> {
        self.examined += examined;
        self.hits.extend(hits);
        let last_hit = |hits: &[SearchHit]| hits.last().map(|hit| hit.event.cursor());
        if self.hits.len() > self.limit {
            self.hits.truncate(self.limit);
            return Some(SearchPage {
                end: last_hit(&self.hits),
                hits: std::mem::take(&mut self.hits),
                has_more: true,
            });
        }
        if exhausted {
            return Some(SearchPage {
                end: last_hit(&self.hits),
                hits: std::mem::take(&mut self.hits),
                has_more: false,
            });
        }
        if let Some(next) = next {
            self.before = next;
        }
        if self.examined >= MAX_CANDIDATES {
            // Stopped with events left to examine: the next page goes on from here.
            let end = Some(Cursor(self.before));
            return Some(SearchPage { hits: std::mem::take(&mut self.hits), has_more: true, end });
        }
        None
    }
}

/// Adds up to `max` events not indexed yet to the FTS index, oldest first, and moves the
/// progress past them; returns how many were examined (those whose body is not searchable
/// are passed over). The writer runs it in a transaction of its own between its groups:
/// indexing by trigrams costs more than recording the event, so recording never waits for it,
/// and the index keeps no copy of the text: it is read from the event's body, here and for
/// snippets. Events are taken in row order, so everything up to the progress has been examined
/// and nothing after it; an event recorded later with a row id below the progress is indexed
/// when it is recorded ([`IndexProgress::index_if_passed`]).
pub(super) fn index_pending(connection: &rusqlite::Connection, max: usize) -> rusqlite::Result<usize> {
    // Only the searchable prefix is read: a large body is not loaded whole.
    let mut pending = connection.prepare_cached(&format!(
        "SELECT id, substr(body, 1, {INDEXED_BYTES}) FROM events
         WHERE id > (SELECT indexed_through FROM event_text_fts_progress) ORDER BY id LIMIT ?1"
    ))?;
    let rows = pending
        .query_map([i64::try_from(max).unwrap_or(i64::MAX)], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let Some(&(last, _)) = rows.last() else { return Ok(0) };
    let mut index = connection.prepare_cached("INSERT INTO event_text_fts (rowid, body_text) VALUES (?1, ?2)")?;
    for (rowid, body) in &rows {
        if let Some(text) = searchable_text(body) {
            index.execute(params![rowid, text])?;
        }
    }
    connection.prepare_cached("UPDATE event_text_fts_progress SET indexed_through = ?1")?.execute([last])?;
    Ok(rows.len())
}

/// How far [`index_pending`] has gone, read once by a transaction that records events, which
/// indexes itself the few it records behind it.
///
/// Row ids follow the stream's sequence (`store/events.rs`), and messages are not always
/// recorded in that order: one NAK'd (its claim-checked body not fetched yet, the store
/// refusing) comes back after later ones were recorded, and its row id is then below the
/// progress, where neither [`index_pending`] nor a search's direct read of the events not
/// indexed yet would ever look. Indexing it in the recording transaction keeps "everything up
/// to the progress is in the index" true at every commit; the common case (every id above the
/// progress) costs one read of the progress per recorded batch.
pub(super) struct IndexProgress {
    indexed_through: i64,
}

impl IndexProgress {
    /// The progress as the current transaction sees it (the writer's, so no indexing moves it
    /// until it commits).
    pub(super) fn read(connection: &rusqlite::Connection) -> rusqlite::Result<IndexProgress> {
        let indexed_through = connection
            .prepare_cached("SELECT indexed_through FROM event_text_fts_progress")?
            .query_row([], |row| row.get(0))?;
        Ok(IndexProgress { indexed_through })
    }

    /// Indexes the event just recorded as `rowid` with `body` when the progress has already
    /// passed its row id (by the same rule as [`index_pending`]); returns whether it did.
    pub(super) fn index_if_passed(
        &self,
        connection: &rusqlite::Connection,
        rowid: EventRowId,
        body: &[u8],
    ) -> rusqlite::Result<bool> {
        if rowid.0 > self.indexed_through {
            return Ok(false);
        }
        let Some(text) = searchable_text(body) else { return Ok(false) };
        connection
            .prepare_cached("INSERT INTO event_text_fts (rowid, body_text) VALUES (?1, ?2)")?
            .execute(params![rowid.0, text])?;
        Ok(true)
    }
}

/// Most events [`index_lag`] counts: past it the count would cost a walk over that many rows
/// each time the gauge is refreshed, and "at least this many" says enough.
pub(super) const INDEX_LAG_COUNTED_UP_TO: i64 = 10_000;

/// How many recorded events the index has not reached yet (their bodies not examined by
/// [`index_pending`]), counted up to [`INDEX_LAG_COUNTED_UP_TO`]: what a search reads directly
/// instead of from the index, and what the writer still has to do.
pub(super) fn index_lag(connection: &rusqlite::Connection) -> rusqlite::Result<i64> {
    connection
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM events
              WHERE id > (SELECT indexed_through FROM event_text_fts_progress) LIMIT ?1)",
        )?
        .query_row([INDEX_LAG_COUNTED_UP_TO], |row| row.get(0))
}

/// Whether `text` has every term of `query`, case folded as [`snippet`] folds it (Rust's
/// `to_lowercase`, as the trigram index folds).
fn has_every_term(text: &str, query: &SearchQuery) -> bool {
    let folded = text.to_lowercase();
    query.terms.iter().all(|term| folded.contains(&term.to_lowercase()))
}

/// The next events to examine that are not indexed yet (after `through`, before `before`, at
/// most `asked`, newest first), each with whether its searchable text has every term: read
/// from their bodies and matched here, as the index would (until the writer indexes them, a
/// few seconds at most when it keeps up).
fn unindexed(
    connection: &rusqlite::Connection,
    query: &SearchQuery,
    through: i64,
    before: i64,
    asked: usize,
) -> rusqlite::Result<Vec<(i64, bool)>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT id, substr(body, 1, {INDEXED_BYTES}) FROM events WHERE id > ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
    ))?;
    let asked = i64::try_from(asked).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![through, before, asked], |row| {
        let body: Vec<u8> = row.get(1)?;
        Ok((row.get(0)?, searchable_text(&body).is_some_and(|text| has_every_term(text, query))))
    })?;
    rows.collect()
}

/// One page of events whose body has every term of `query`, also in `selection`, newest first:
/// first those not indexed yet (the newest), then the index's.
fn search_page(
    connection: &rusqlite::Connection,
    selection: &EventSelection,
    query: &SearchQuery,
    page: PageRequest,
) -> rusqlite::Result<SearchPage> {
    let through: i64 =
        connection.query_row("SELECT indexed_through FROM event_text_fts_progress", [], |row| row.get(0))?;
    let expression = query.fts5();
    // FTS5 walks its matches newest first (rowid order) and stops at the limit.
    let mut indexed = connection.prepare_cached(
        "SELECT rowid FROM event_text_fts WHERE event_text_fts MATCH ?1 AND rowid < ?2
         ORDER BY rowid DESC LIMIT ?3",
    )?;
    let mut rounds = Rounds::new(page);
    loop {
        let asked = rounds.next_round();
        let (matches, examined, next, exhausted) = if rounds.before > through + 1 {
            let rows = unindexed(connection, query, through, rounds.before, asked)?;
            let matches: Vec<i64> = rows.iter().filter(|(_, hit)| *hit).map(|(id, _)| *id).collect();
            // Fewer than asked: the rest is in the index.
            let next = if rows.len() < asked { Some(through + 1) } else { rows.last().map(|(id, _)| *id) };
            (matches, rows.len(), next, false)
        } else {
            let matches: Vec<i64> = indexed
                .query_map(params![expression, rounds.before, i64::try_from(asked).unwrap_or(i64::MAX)], |row| {
                    row.get(0)
                })?
                .collect::<rusqlite::Result<_>>()?;
            let (examined, next) = (matches.len(), matches.last().copied());
            (matches, examined, next, examined < asked)
        };
        let mut hits = Vec::new();
        if !matches.is_empty() {
            let mut w = selection.to_where();
            let ids: Vec<Box<dyn ToSql + Send>> =
                matches.iter().map(|id| Box::new(*id) as Box<dyn ToSql + Send>).collect();
            w.add(&format!("e.id IN ({})", placeholders(matches.len())), ids);
            let sql = format!(
                "SELECT {EVENT_COLUMNS}, substr(e.body, 1, {INDEXED_BYTES}) FROM events e {}
                 ORDER BY e.id DESC LIMIT {}",
                w.sql(),
                rounds.wanted()
            );
            let mut statement = connection.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(w.params()), |row| {
                let body: Vec<u8> = row.get(11)?;
                let text = searchable_text(&body).unwrap_or_default();
                Ok(SearchHit { event: event_row(row)?, snippet: snippet(text, query) })
            })?;
            hits = rows.collect::<rusqlite::Result<_>>()?;
        }
        if let Some(page) = rounds.take(examined, next, exhausted, hits) {
            return Ok(page);
        }
    }
}

impl Sqlite {
    pub async fn search_events(
        &self,
        selection: EventSelection,
        query: SearchQuery,
        page: PageRequest,
    ) -> Result<SearchPage, StoreError> {
        self.read(move |c| search_page(c, &selection, &query, page)).await
    }
}

#[cfg(test)]
#[path = "search_tests.rs"]
mod tests;
