//! The routing configs events were routed with, on PostgreSQL (the SQLite twin and the
//! contract: `store/config_versions.rs`).

use super::Postgres;
use super::operator::read;
use crate::model::{ConfigVersion, UnixMs};
use crate::store::StoreError;

impl Postgres {
    pub async fn register_config_version(
        &self,
        version: ConfigVersion,
        routes_json: String,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        // Several workers starting with one config at once: the first insert wins, the others
        // find the row (`ON CONFLICT` waits for the first one's commit, then does nothing).
        self.write(async |t| {
            let statement = t
                .prepare_cached(
                    "INSERT INTO config_versions (version, routes_json, first_used_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (version) DO NOTHING",
                )
                .await?;
            t.execute(&statement, &[&version, &routes_json, &now]).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn config_snapshot(&self, version: ConfigVersion) -> Result<Option<String>, StoreError> {
        read(self, async |c| {
            let statement = c.prepare_cached("SELECT routes_json FROM config_versions WHERE version = $1").await?;
            Ok(c.query_opt(&statement, &[&version]).await?.map(|row| row.get::<_, String>(0)))
        })
        .await
    }
}
