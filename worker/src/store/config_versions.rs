//! The routing configs events were routed with (`config_versions`): one snapshot per version,
//! written when a worker starts, read when a replay "as received" needs the transform the event
//! was routed with. SQLite here, PostgreSQL in `postgres/config_versions.rs`.
//!
//! Snapshots are kept, never pruned: there is one per config change and each is a few KiB (the
//! routes' text), so keeping them costs nothing worth a rule, and a replay "as received" of any
//! stored event always finds its snapshot.

use rusqlite::{OptionalExtension as _, params};

use super::StoreError;
use super::sqlite::Sqlite;
use crate::model::{ConfigVersion, UnixMs};

impl Sqlite {
    pub async fn register_config_version(
        &self,
        version: ConfigVersion,
        routes_json: String,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO config_versions (version, routes_json, first_used_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (version) DO NOTHING",
                params![version, routes_json, now],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn config_snapshot(&self, version: ConfigVersion) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            c.query_row("SELECT routes_json FROM config_versions WHERE version = ?1", [&version], |r| r.get(0))
                .optional()
        })
        .await
    }
}
