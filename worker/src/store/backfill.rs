//! What a provider backfill asks of the store (`crate::backfill`): which of the events a
//! provider lists are stored already, and the run's audit row. SQLite here, PostgreSQL in
//! `postgres/backfill.rs`.

use std::collections::HashSet;
use std::time::Duration;

use rusqlite::params_from_iter;

use super::StoreError;
use super::operator::placeholders;
use super::sqlite::Sqlite;
use crate::model::UnixMs;

/// How long before GitHub says it first sent a delivery the stored event may have been
/// received: clocks that disagree.
pub const DELIVERY_WINDOW: Duration = Duration::from_secs(15 * 60);

/// What precedes a GitHub delivery id in a stored event's request headers (`headers_json`, a
/// JSON array of `[name, value]` pairs as ingest wrote them, names in lower case).
pub const GITHUB_DELIVERY_PREFIX: &str = "[\"x-github-delivery\",\"";

/// Whether `guid` can be looked for as text in the stored headers: plain `[A-Za-z0-9-]`, as
/// GitHub's UUIDs are (JSON writes them unescaped).
pub fn is_plain_delivery_id(guid: &str) -> bool {
    !guid.is_empty() && guid.len() <= 64 && guid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl Sqlite {
    pub async fn stored_event_ids(
        &self,
        source: String,
        event_ids: Vec<String>,
    ) -> Result<HashSet<String>, StoreError> {
        if event_ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.read(move |c| {
            let sql = format!(
                "SELECT event_id FROM events WHERE source = ? AND event_id IN ({})",
                placeholders(event_ids.len())
            );
            let mut statement = c.prepare(&sql)?;
            let values = std::iter::once(&source).chain(event_ids.iter());
            let rows = statement.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .await
    }

    pub async fn stored_github_deliveries(
        &self,
        source: String,
        since: UnixMs,
        guids: Vec<String>,
    ) -> Result<HashSet<String>, StoreError> {
        let guids: Vec<String> = guids.into_iter().filter(|g| is_plain_delivery_id(g)).collect();
        if guids.is_empty() {
            return Ok(HashSet::new());
        }
        self.read(move |c| {
            // One pass over the events received since then (the time index), the delivery id
            // cut out of the stored headers.
            let sql = format!(
                "SELECT guid FROM (SELECT substr(rest, 1, instr(rest, '\"') - 1) AS guid FROM \
                   (SELECT substr(headers_json, instr(headers_json, ?3) + length(?3)) AS rest FROM events \
                    WHERE received_at_ms >= ?2 AND source = ?1 AND instr(headers_json, ?3) > 0)) \
                 WHERE guid IN ({})",
                placeholders(guids.len())
            );
            let mut statement = c.prepare(&sql)?;
            let since = since.minus(DELIVERY_WINDOW);
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![&source, &since, &GITHUB_DELIVERY_PREFIX];
            values.extend(guids.iter().map(|g| g as &dyn rusqlite::ToSql));
            let rows = statement.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
            rows.collect()
        })
        .await
    }
}
