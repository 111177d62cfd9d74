//! The PostgreSQL store backend (issue #15): the connection pool, the schema migrations
//! (`schemas/sql/postgres/`), and one file per concern with that concern's queries (the
//! operations' contracts are in `store/operations.rs`).
//!
//! **Crates.** tokio-postgres with deadpool-postgres (`shared/docs/scale-out.md` §3.4): one
//! connection pipelines the queries polled at once on it, and `prepare_cached` keeps each
//! statement prepared per connection. The pool recycles with [`RecyclingMethod::Verified`]:
//! an idle connection answers an empty query before it is handed out again, so a connection
//! that died with a database restart is replaced instead of failing its next caller (the
//! default `Fast` only looks at whether the client noticed the close).
//!
//! **PgBouncer (transaction pooling).** The migrations lock a table inside a transaction, never
//! a session advisory lock. The statement timeout travels in the `options` startup parameter,
//! which PgBouncer refuses unless told otherwise: behind it, pass a zero timeout and set it on
//! the role (`ALTER ROLE … SET statement_timeout = …`).
//!
//! **TLS** (`tls.rs`): libpq's `sslmode` in the URL (`prefer` when absent), verified against
//! `store.ca_file` in `verify-ca` and `verify-full`.

mod activity;
mod attempts;
mod audit;
mod backfill;
mod columns;
mod config_versions;
mod deliveries;
mod events;
pub mod migrate;
mod operator;
mod replays;
pub(super) mod search;
mod sessions;
#[cfg(test)]
mod tests;
mod tls;
mod tokens;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use deadpool_postgres::Pool;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use inlet_shared::config::PgSslMode;
#[cfg(test)]
use migrate::MIGRATIONS;
use migrate::migrate;

/// How long opening one connection (TCP, startup, authentication) may take: the URL's
/// `connect_timeout` when it has one, and the pool's limit for creating a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for a free pooled connection before it gets an error.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the `Verified` check of an idle connection may take before it is dropped.
pub const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a PostgreSQL store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse (not shown: it may hold a password).
    #[error("invalid PostgreSQL URL")]
    Url(#[source] tokio_postgres::Error),
    /// The URL's `sslmode` is none of libpq's five (config validation refuses it first).
    #[error("store.url: {0}")]
    SslMode(String),
    /// `store.ca_file` cannot be used.
    #[error("store.ca_file: {0}")]
    CaFile(String),
    /// The server's certificate does not verify against `store.ca_file`.
    #[error(
        "PostgreSQL's TLS certificate was refused: {reason} (store.url's sslmode={mode} checks it against the CA in \
         store.ca_file = {ca_file})"
    )]
    Untrusted {
        /// Why rustls refused it.
        reason: String,
        /// `verify-ca` or `verify-full`.
        mode: &'static str,
        /// The CA file it was checked against.
        ca_file: String,
    },
    /// The pool could not be built.
    #[error("cannot build the PostgreSQL connection pool")]
    Build(#[from] deadpool_postgres::BuildError),
    /// No connection from the pool (the server is unreachable, or every connection is busy
    /// for longer than [`WAIT_TIMEOUT`]).
    #[error("no PostgreSQL connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// PostgreSQL said no.
    #[error("PostgreSQL error")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored value the model refuses (an unknown label): a read error, never a default.
    #[error("PostgreSQL holds a value the worker does not know: {0}")]
    Refused(String),
    /// A migration's SQL failed (its transaction was rolled back: nothing of it is applied).
    #[error("PostgreSQL migration {name} failed")]
    Migration {
        /// The migration, e.g. `0001_init`.
        name: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PgError {
    /// [`PgError::Untrusted`] when the server's certificate is why this happened (the first
    /// connection of a pool to `url`, with `ca_file`), naming the settings to look at.
    pub(super) fn explain_refused_certificate(self, url: &str, ca_file: Option<&Path>) -> PgError {
        match tls::refused_certificate(&self) {
            Some(reason) => PgError::Untrusted {
                reason,
                mode: PgSslMode::split_from_url(url).map_or("verify-full", |(mode, _)| mode.as_str()),
                ca_file: ca_file.map_or_else(|| "(none)".to_owned(), |path| path.display().to_string()),
            },
            None => self,
        }
    }

    /// Whether the server is out of reach rather than refusing this statement: no connection,
    /// a connection lost, or the server shutting down or starting (classes 08 and 57P).
    fn is_unavailable(&self) -> bool {
        match self {
            PgError::Pool(_) => true,
            PgError::Postgres(error) => {
                error.is_closed()
                    || error.code().is_some_and(|code| {
                        let code = code.code();
                        code.starts_with("08") || code.starts_with("57P")
                    })
                    || error.code().is_none()
                        && std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
            }
            _ => false,
        }
    }
}

/// A pool of at most `pool_size` (at least 1) connections to `url`
/// (`postgres://user:password@host:port/database?…`, libpq's keys), recycled with
/// [`RecyclingMethod::Verified`]. The URL's `sslmode` says whether connections are encrypted and
/// whether the server's certificate must chain to the CA in `ca_file` (`tls.rs`). Each
/// connection's statements are cancelled after `statement_timeout`, unless it is zero: then the
/// server's (or the role's) setting holds. Connections open on first use: this never touches the
/// network (it reads `ca_file`).
///
/// # Errors
///
/// [`PgError::Url`] when the URL does not parse, [`PgError::SslMode`] for an unknown `sslmode`,
/// [`PgError::CaFile`] when the CA file is needed and unusable, [`PgError::Build`] when the pool
/// cannot be built.
pub fn connect(
    url: &str,
    ca_file: Option<&Path>,
    pool_size: usize,
    statement_timeout: Duration,
) -> Result<Pool, PgError> {
    let (ssl_mode, url) = PgSslMode::split_from_url(url).map_err(PgError::SslMode)?;
    let mut config = tokio_postgres::Config::from_str(&url).map_err(PgError::Url)?;
    config.ssl_mode(match ssl_mode {
        PgSslMode::Disable => tokio_postgres::config::SslMode::Disable,
        PgSslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    let tls = tls::connector(ssl_mode, ca_file)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("inlet-worker");
    }
    if !statement_timeout.is_zero() {
        // After any options the URL has, so that this one wins.
        let setting = format!("-c statement_timeout={}", statement_timeout.as_millis());
        let options = match config.get_options() {
            Some(options) if !options.trim().is_empty() => format!("{options} {setting}"),
            _ => setting,
        };
        config.options(options);
    }
    let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Verified });
    let pool = Pool::builder(manager)
        .max_size(pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(WAIT_TIMEOUT))
        .recycle_timeout(Some(RECYCLE_TIMEOUT))
        .build()?;
    Ok(pool)
}

/// The PostgreSQL backend: a connection pool; cheap to clone.
#[derive(Clone)]
pub(super) struct Postgres {
    pool: Pool,
    /// The task that records attempt results in groups (`attempts.rs`).
    attempts: tokio::sync::mpsc::Sender<attempts::Queued>,
    /// Set while writes fail for want of a connection (the server is down or restarting):
    /// readiness reports it; cleared by the next write that gets through.
    writes_failing: Arc<AtomicBool>,
}

impl Postgres {
    /// A pool to `url` (see [`connect`]), migrated.
    pub(super) async fn connect(
        url: &str,
        ca_file: Option<&Path>,
        pool_size: usize,
        statement_timeout: Duration,
    ) -> Result<Postgres, PgError> {
        let pool = connect(url, ca_file, pool_size, statement_timeout)?;
        migrate(&pool).await.map_err(|error| error.explain_refused_certificate(url, ca_file))?;
        let writes_failing = Arc::new(AtomicBool::new(false));
        let (queue, queued) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(attempts::attempt_writer(pool.clone(), queued, Arc::clone(&writes_failing)));
        Ok(Postgres { pool, attempts: queue, writes_failing })
    }

    pub(super) fn is_healthy(&self) -> bool {
        !self.writes_failing.load(Ordering::SeqCst)
    }

    /// A pooled connection for a read.
    async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }

    /// Runs `work` in one transaction on a pooled connection and commits it; a write that
    /// cannot get a connection, or loses it, marks the store unhealthy until a write commits.
    async fn write<T, F>(&self, work: F) -> Result<T, PgError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T, PgError>,
    {
        let result: Result<T, PgError> = async {
            let mut client = self.pool.get().await?;
            let started = std::time::Instant::now();
            let transaction = client.transaction().await?;
            let value = work(&transaction).await?;
            let commit_started = std::time::Instant::now();
            transaction.commit().await?;
            metrics::histogram!(crate::metric_names::DB_COMMIT).record(commit_started.elapsed().as_secs_f64());
            // One operation per transaction (PostgreSQL groups commits on the server, not here):
            // the same series as SQLite's writer groups, so one dashboard serves both.
            metrics::histogram!(crate::metric_names::DB_GROUP).record(1.0);
            metrics::histogram!(crate::metric_names::DB_GROUP_DURATION).record(started.elapsed().as_secs_f64());
            Ok(value)
        }
        .await;
        match &result {
            Ok(_) => self.writes_failing.store(false, Ordering::SeqCst),
            Err(error) if error.is_unavailable() => self.writes_failing.store(true, Ordering::SeqCst),
            Err(_) => {}
        }
        result
    }

    /// For the store's tests: the rows of `sql`, each column as text (`None`: NULL).
    #[cfg(test)]
    pub(in crate::store) async fn peek(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        text_rows(&self.pool, sql).await
    }

    pub(super) async fn identity(&self) -> Result<String, crate::store::StoreError> {
        let client = self.client().await?;
        let row = client.query_one("SELECT id FROM store_identity", &[]).await.map_err(PgError::from)?;
        Ok(row.try_get(0).map_err(PgError::from)?)
    }

    /// Event ids come from the identity here, whatever the stream: nothing to do.
    pub(super) async fn follow_stream(
        &self,
        _stream_created_ms: i64,
    ) -> Result<crate::store::StreamFollowed, crate::store::StoreError> {
        Ok(crate::store::StreamFollowed::Same)
    }

    /// PostgreSQL is backed up and restored with its own tools (docs/operations.md), which
    /// leave no backup mark: never one.
    pub(super) async fn restored_backup(
        &self,
    ) -> Result<Option<crate::store::RestoredBackup>, crate::store::StoreError> {
        Ok(None)
    }

    pub(super) async fn clear_restored_backup(&self) -> Result<(), crate::store::StoreError> {
        Ok(())
    }

    /// From the kept counts (summed over their slots) and, for the oldest pending receipt time,
    /// the pending deliveries (the due-time index holds nothing else).
    pub(super) async fn stats(&self) -> Result<crate::store::Stats, crate::store::StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT coalesce(sum(n) FILTER (WHERE status = 'dead_lettered'), 0)::bigint,
                        coalesce(sum(n) FILTER (WHERE status = 'pending'), 0)::bigint,
                        (SELECT min(e.received_at_ms) FROM deliveries d JOIN events e ON e.id = d.event_rowid
                         WHERE d.status = 'pending')
                 FROM delivery_counts",
            )
            .await
            .map_err(PgError::from)?;
        let row = client.query_one(&statement, &[]).await.map_err(PgError::from)?;
        let waiting = client
            .prepare_cached(&format!(
                "SELECT d.destination, count(*) FROM deliveries d
                 WHERE d.status = 'pending' AND d.ordering_key IS NOT NULL
                   AND {}
                 GROUP BY d.destination",
                crate::store::deliveries::WAITS_FOR_EARLIER_PG
            ))
            .await
            .map_err(PgError::from)?;
        let ordered_waiting = client
            .query(&waiting, &[])
            .await
            .map_err(PgError::from)?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(PgError::from)?;
        Ok(crate::store::Stats {
            dead_letters: row.try_get(0).map_err(PgError::from)?,
            pending: row.try_get(1).map_err(PgError::from)?,
            oldest_pending_received_at: row.try_get(2).map_err(PgError::from)?,
            // The search index takes each event in its recording transaction.
            search_index_lag: 0,
            ordered_waiting,
        })
    }
}

/// For tests: the rows of `sql` on `pool`, each column as text (`None`: NULL), read with the
/// simple query protocol (which returns every value as text).
#[cfg(test)]
pub(in crate::store) async fn text_rows(pool: &Pool, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
    let client = pool.get().await?;
    Ok(client
        .simple_query(sql)
        .await?
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect())
}
