//! One database per intake consumer: a lease in NATS (a key-value bucket) that a worker holds
//! while it runs and renews, so a second worker with its own database on the same NATS —
//! which would split the events between two databases and hand out colliding delivery ids — is
//! refused at startup with an error that names the holder. With SQLite that is one worker;
//! with PostgreSQL every worker of the same database shares the lease (it names the database,
//! not the process), and [`placement`] decides which of them does what.
//!
//! The lease names the database it belongs to (`store_identity`): the same database restarted
//! after a crash takes its own lease over at once (the database's file lock already proves the
//! old process is gone), while any other database waits for the lease to expire
//! ([`LEASE_TTL`] after the holder stopped renewing) and is refused meanwhile.

pub mod placement;

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use inlet_shared::config::{Config, StoreBackend};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Why the lease could not be taken or was lost.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another worker's database holds it.
    #[error(
        "another inlet-worker consumes this intake stream: {holder} holds the worker lease `{key}` in NATS \
         key-value bucket `{bucket}`. With the SQLite store exactly one worker may consume a stream (two would \
         split its events between two databases); stop the other worker, or give this one its own \
         `stream.name`/`worker.consumer`. A worker that died frees the lease within {ttl:?}."
    )]
    HeldByAnother {
        /// Who holds it.
        holder: String,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// [`LEASE_TTL`].
        ttl: Duration,
    },
    /// NATS refused or failed.
    #[error("cannot use the worker lease bucket `{bucket}`")]
    Nats {
        /// The bucket.
        bucket: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What the lease's value says about its holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Holder {
    database_id: String,
    /// This process's random nonce: a copy of the same database in another process (a
    /// restored file, a volume shared where file locks are not) is a different holder.
    #[serde(default)]
    instance: String,
    database: String,
    host: String,
    pid: u32,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the worker on host `{}` (pid {}) with database `{}`", self.host, self.pid, self.database)
    }
}

/// A held lease.
pub struct WorkerLease {
    /// Several workers share one database (PostgreSQL): they all hold the lease together.
    shared: bool,
    store: kv::Store,
    bucket: String,
    key: String,
    holder: Holder,
    value: Bytes,
    revision: u64,
}

/// The lease bucket's name for this config.
pub fn bucket_name(config: &Config) -> String {
    format!("{}_WORKERS", config.stream.name)
}

impl WorkerLease {
    /// Takes the lease for `database_id`, or says who holds it.
    ///
    /// # Errors
    ///
    /// [`LeaseError::HeldByAnother`] when another database's worker holds it; [`LeaseError::Nats`].
    pub async fn acquire(
        js: &jetstream::Context,
        config: &Config,
        database_id: String,
    ) -> Result<WorkerLease, LeaseError> {
        // A cluster that just started may not have elected its JetStream leader yet: keep trying
        // until `nats.startup_timeout`, as the stream setup does; a lease held by another
        // worker is final at once.
        let deadline = tokio::time::Instant::now() + config.nats.startup_timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            match Self::try_acquire(js, config, database_id.clone()).await {
                Ok(lease) => return Ok(lease),
                Err(error @ LeaseError::HeldByAnother { .. }) => return Err(error),
                Err(error) if tokio::time::Instant::now() + backoff >= deadline => return Err(error),
                Err(error) => {
                    tracing::debug!(%error, "worker lease not taken yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn try_acquire(
        js: &jetstream::Context,
        config: &Config,
        database_id: String,
    ) -> Result<WorkerLease, LeaseError> {
        let bucket = bucket_name(config);
        let nats_error =
            |source: Box<dyn std::error::Error + Send + Sync>| LeaseError::Nats { bucket: bucket.clone(), source };
        let store = js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                description: "Inlet: which worker (database) consumes the intake stream".into(),
                history: 1,
                max_age: LEASE_TTL,
                num_replicas: config.stream.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error(e.into()))?;
        let key = config.worker.consumer.clone();
        let holder = Holder {
            database_id,
            instance: format!("{:032x}", rand::random::<u128>()),
            database: match config.store.backend {
                StoreBackend::Sqlite => config.worker.database.display().to_string(),
                // Never the URL: it may hold a password.
                StoreBackend::Postgres => "PostgreSQL (store.url)".to_owned(),
            },
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id(),
        };
        let value = Bytes::from(serde_json::to_vec(&holder).map_err(|e| nats_error(e.into()))?);
        let shared = config.store.backend == StoreBackend::Postgres;
        let mut lease = WorkerLease { shared, store, bucket, key, holder, value, revision: 0 };
        lease.take(true).await?;
        Ok(lease)
    }

    /// Creates the key, or takes it over when it is this database's own and `at_startup` (a
    /// restart: the database's file lock proves the previous process is gone). While running,
    /// a key held by any other process means the lease was lost.
    async fn take(&mut self, at_startup: bool) -> Result<(), LeaseError> {
        match self.store.create(&self.key, self.value.clone()).await {
            Ok(revision) => {
                self.revision = revision;
                return Ok(());
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(error) => return Err(self.nats_error(error.into())),
        }
        let entry = self.store.entry(&self.key).await.map_err(|e| self.nats_error(e.into()))?;
        let Some(entry) = entry else {
            // Expired between the two calls: try once more from the start.
            let revision =
                self.store.create(&self.key, self.value.clone()).await.map_err(|e| self.nats_error(e.into()))?;
            self.revision = revision;
            return Ok(());
        };
        let current: Option<Holder> = serde_json::from_slice(&entry.value).ok();
        match current {
            Some(current) if self.shared && current.database_id == self.holder.database_id => {
                // Another worker of the same PostgreSQL database: renew the lease for all.
                self.revision =
                    self.store.put(&self.key, self.value.clone()).await.map_err(|e| self.nats_error(e.into()))?;
                Ok(())
            }
            Some(current)
                if current.database_id == self.holder.database_id
                    && (at_startup || current.instance == self.holder.instance) =>
            {
                // Our own database's lease, left by a process that is gone (we hold the
                // database's file lock): take it over.
                self.revision = self
                    .store
                    .update(&self.key, self.value.clone(), entry.revision)
                    .await
                    .map_err(|e| self.nats_error(e.into()))?;
                Ok(())
            }
            current => Err(LeaseError::HeldByAnother {
                holder: current.map_or_else(|| "an unknown holder".to_owned(), |h| h.to_string()),
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                ttl: LEASE_TTL,
            }),
        }
    }

    fn nats_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> LeaseError {
        LeaseError::Nats { bucket: self.bucket.clone(), source }
    }

    /// Renews the lease until `shutdown`; when another database's worker has taken it (this
    /// one could not renew for longer than [`LEASE_TTL`]), cancels `lost` and returns the error.
    pub async fn keep(mut self, shutdown: CancellationToken, lost: CancellationToken) -> Option<LeaseError> {
        let mut first = true;
        loop {
            // The first renewal at once: startup may have taken a good part of the lease.
            let wait = if first { Duration::ZERO } else { RENEW_EVERY };
            first = false;
            tokio::select! {
                () = shutdown.cancelled() => {
                    // Let a replacement start at once (unless other workers share the lease).
                    if !self.shared {
                        let _ = self.store.delete_expect_revision(&self.key, Some(self.revision)).await;
                    }
                    return None;
                }
                () = tokio::time::sleep(wait) => {}
            }
            if self.shared {
                // Shared by every worker of the database: each refreshes it while it names
                // this database; created again when it expired; lost when another database's
                // worker took it meanwhile.
                match self.take(false).await {
                    Ok(()) => {}
                    Err(error @ LeaseError::HeldByAnother { .. }) => {
                        tracing::error!(%error, "lost the worker lease; stopping");
                        lost.cancel();
                        return Some(error);
                    }
                    Err(error) => tracing::warn!(%error, "cannot renew the worker lease yet; retrying"),
                }
                continue;
            }
            match self.store.update(&self.key, self.value.clone(), self.revision).await {
                Ok(revision) => self.revision = revision,
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Expired (NATS unreachable or this process stalled for too long), and
                    // maybe taken by another worker: take it again if it is free or ours.
                    match self.take(false).await {
                        Ok(()) => tracing::warn!("worker lease had expired; taken again"),
                        Err(error @ LeaseError::HeldByAnother { .. }) => {
                            tracing::error!(%error, "lost the worker lease; stopping");
                            lost.cancel();
                            return Some(error);
                        }
                        Err(error) => tracing::warn!(%error, "cannot take the worker lease again yet; retrying"),
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot renew the worker lease yet; retrying"),
            }
        }
    }
}
