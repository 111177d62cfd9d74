//! What a provider backfill asks of the store, on PostgreSQL (the SQLite twin and the contract:
//! `store/backfill.rs`).

use std::collections::HashSet;

use super::Postgres;
use super::operator::read;
use crate::model::UnixMs;
use crate::store::StoreError;
use crate::store::backfill::{DELIVERY_WINDOW, GITHUB_DELIVERY_PREFIX, is_plain_delivery_id};

impl Postgres {
    pub async fn stored_event_ids(
        &self,
        source: String,
        event_ids: Vec<String>,
    ) -> Result<HashSet<String>, StoreError> {
        if event_ids.is_empty() {
            return Ok(HashSet::new());
        }
        read(self, async |c| {
            let statement =
                c.prepare_cached("SELECT event_id FROM events WHERE source = $1 AND event_id = ANY($2)").await?;
            Ok(c.query(&statement, &[&source, &event_ids]).await?.iter().map(|row| row.get::<_, String>(0)).collect())
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
        read(self, async |c| {
            // One pass over the events received since then (the time index), the delivery id
            // cut out of the stored headers; only the matches come back.
            let statement = c
                .prepare_cached(
                    "SELECT guid FROM (SELECT split_part(substr(headers_json, strpos(headers_json, $3) + length($3)), \
                       '\"', 1) AS guid FROM events \
                     WHERE received_at_ms >= $2 AND source = $1 AND strpos(headers_json, $3) > 0) AS found \
                     WHERE guid = ANY($4)",
                )
                .await?;
            let since = since.minus(DELIVERY_WINDOW);
            Ok(c.query(&statement, &[&source, &since, &GITHUB_DELIVERY_PREFIX, &guids])
                .await?
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect())
        })
        .await
    }
}
