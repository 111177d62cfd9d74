//! `inlet-worker`: turns queued events into effects, exactly once in effect.
//!
//! Entry point: [`run`]. It pulls the intake stream with a durable consumer (`record`),
//! records every event in SQLite (`store`, one writer, group commit) with one delivery per
//! (event, destination) its routes select (`routes`). The store schedules deliveries (due
//! times, leases with fencing tokens); each destination has its own schedulers, concurrency,
//! rate limit and breaker (`deliver`, `breaker`), signs with Inlet's Standard Webhooks secret,
//! retries on its schedule and dead-letters what cannot be delivered. One worker per intake
//! consumer (`ownership`: a lease in NATS; the database's own file lock).
//!
//! The operator plane shares the main listener: the GraphQL API (`api`), login (`auth`) and
//! the console page (`console`); replays (`replay`) are a service of their own the API calls.
//!
//! Invariants: a message is acked only after the transaction that recorded it committed;
//! the worker is the only process that writes its SQLite file; an attempt's result is recorded
//! only under the lease it ran with.
#![forbid(unsafe_code)]

pub mod api;
mod auth;
mod backfill;
mod breaker;
mod console;
mod deliver;
mod http;
pub mod metric_names;
pub mod model;
mod ownership;
pub mod programs;
mod pull;
mod quarantine;
mod record;
mod replay;
mod routes;
mod store;

pub use backfill::Backfilled;
pub use store::backup::{BackupError, BackupSummary};
pub use store::copy::{CopyError, CopySummary, copy_store};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use hyper::service::service_fn;
use hyper_util::service::TowerToHyperService;
use inlet_shared::config::{Config, StoreBackend};
use inlet_shared::server::{ServeOptions, metrics_handle, serve};
use tokio::net::TcpListener;

use crate::model::UnixMs;
use crate::ownership::placement::{Holding, Placement};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The worker's sockets: main (health, later the API) and admin (metrics).
pub struct Listeners {
    /// `/healthz`, `/readyz`.
    pub main: TcpListener,
    /// `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the config.
    ///
    /// # Errors
    ///
    /// When an address cannot be bound.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let main = inlet_shared::server::bind(config.worker.listen)
            .with_context(|| format!("cannot bind worker.listen {}", config.worker.listen))?;
        let admin = inlet_shared::server::bind(config.worker.admin_listen)
            .with_context(|| format!("cannot bind worker.admin_listen {}", config.worker.admin_listen))?;
        Ok(Listeners { main, admin })
    }

    /// Both local addresses (main, admin).
    ///
    /// # Errors
    ///
    /// When a socket has no local address.
    pub fn addresses(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.main.local_addr()?, self.admin.local_addr()?))
    }
}

/// Runs the worker until `shutdown` is cancelled, then drains.
///
/// # Errors
///
/// When the database cannot be opened, or NATS, the streams or consumers cannot be set up.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Route programs first: a program that does not compile stops the worker before it
    // connects anywhere (exit 64, naming the key).
    let router = routes::Router::compile(&config.routes)?;
    // Dry runs use the pool too, so it runs with or without configured transforms.
    let pool = programs::TransformPool::start(config.worker.transform_threads, config.worker.transform_timeout)
        .context("cannot start the transform threads")?;
    // Every destination gets them: a replay "as received" may need an older config's transform
    // even when the current routes have none.
    let transforms = deliver::Transforms { router: router.clone(), pool, versions: deliver::ConfigVersions::default() };
    let metrics = metrics_handle();
    metric_names::describe();
    // Before anything else: a certificate that cannot be used stops startup, naming the key.
    let tls = match &config.worker.tls {
        Some(files) => Some(inlet_shared::tls::ServerTls::load(files, "worker.tls", metric_names::TLS)?),
        None => None,
    };

    let store = store::Store::open(&config).await?;
    // The routing config this worker records events with, kept once per version (replays "as
    // received" compile it again from there).
    store.register_config_version(router.version().clone(), router.snapshot().to_owned(), UnixMs::now()).await?;
    tracing::info!(config_version = router.version().as_str(), "routing config version");

    let client = inlet_shared::nats::connect(&config.nats, "inlet-worker").await?;
    let js = jetstream::new(client.clone());
    let shared_store = config.store.backend == StoreBackend::Postgres;
    // Before anything is consumed: one database per intake consumer (SQLite: one worker;
    // PostgreSQL: any number, each destination and the periodic jobs held by one of them at a
    // time).
    let lease = ownership::WorkerLease::acquire(&js, &config, store.identity().await?).await?;
    let destination_names: Vec<String> = config.destinations.iter().map(|d| d.name.clone()).collect();
    let (placement, mut holdings, jobs) = if shared_store {
        let (placement, holdings, jobs) =
            Placement::new(&js, store.clone(), &config.stream.name, config.stream.replicas, &destination_names).await?;
        (Some(placement), holdings, jobs)
    } else {
        for name in &destination_names {
            metric_names::held(Some(name), true);
        }
        metric_names::held(None, true);
        (None, HashMap::new(), Holding::always())
    };
    inlet_shared::nats::ensure_stream(&js, &config.stream, config.nats.startup_timeout).await?;
    // Bodies over ingest.claim_check_threshold_bytes: ingest waits for this bucket before it
    // writes any, so it is set up whatever the sources (a worker must read what ingest writes).
    inlet_shared::claim_check::ensure_bucket(&js, &config.stream, config.nats.startup_timeout).await?;
    let bodies = inlet_shared::claim_check::BodyStore::open(
        &js,
        &config.stream,
        config.ingest.claim_check_threshold_bytes,
        config.nats.startup_timeout,
    )
    .await?;
    // Requests ingest refused are kept there (`[quarantine]`); ingest may only write to it.
    if config.quarantine.enabled {
        inlet_shared::nats::ensure_quarantine_stream(
            &js,
            &config.stream,
            &config.quarantine,
            config.nats.startup_timeout,
        )
        .await?;
    }
    let quarantine = quarantine::Quarantine::new(&config, js.clone(), store.clone())
        .context("quarantine: a source's secrets")?
        .map(Arc::new);
    let backfiller = Arc::new(backfill::Backfiller::new(&config, js.clone(), store.clone()).context("backfill")?);
    let intake = js.get_stream(&config.stream.name).await.context("intake stream")?;
    if config.worker.delivery_subject_prefix.is_some() {
        tracing::warn!(
            "worker.delivery_subject_prefix is no longer used (deliveries are scheduled in the store); remove it"
        );
    }
    // Delivery tasks used to wait in this stream; the store holds the same state now.
    if js.delete_stream(config.stream.deliveries_stream_name()).await.is_ok() {
        tracing::info!(stream = %config.stream.deliveries_stream_name(), "deleted the former delivery-task stream");
    }

    // Event row ids follow this stream (SQLite), so a restored backup that records the stream
    // again gives its events the ids — and delivery ids — they had.
    let stream_created_ms =
        i64::try_from(intake.cached_info().created.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let restored = store.restored_backup().await?;
    if let Some(restored) = restored
        && restored.stream_created_ms.is_some_and(|created| created != stream_created_ms)
    {
        anyhow::bail!(
            "{} is a restored backup of a store that recorded another intake stream {} (deleted and created again since): \
             the events recorded after the backup went with it, and the row ids given since cannot be known; \
             start this worker on the store it had, or on an empty one",
            config.worker.database.display(),
            config.stream.name
        );
    }
    store.follow_stream(stream_created_ms).await?;
    let deliver_policy = recording_start(&intake, &config, restored).await?;

    let recording_consumer: consumer::PullConsumer = intake
        .create_consumer(consumer::pull::Config {
            durable_name: Some(config.worker.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy,
            ack_wait: config.worker.ack_wait,
            max_ack_pending: config.worker.max_ack_pending,
            filter_subject: config.stream.wildcard_subject(),
            ..Default::default()
        })
        .await
        .context("cannot create the recording consumer")?;
    if let Some(restored) = restored {
        store.clear_restored_backup().await?;
        tracing::info!(
            from_sequence = restored.replay_from,
            backup_taken_at_ms = restored.taken_at.0,
            "restored backup: recording the intake stream again from the backup's position"
        );
    }

    // SQLite: claims left by a previous process of this database; it is gone (the file lock
    // says so), so its attempts start again now rather than when their leases would have
    // expired. PostgreSQL: none (other workers' claims are live; a dead one's expire).
    for (delivery_id, destination) in store.release_all_leases().await? {
        tracing::warn!(%delivery_id, %destination, "delivery restarted: a previous process ended while it held the delivery (waiting or in its attempt)");
        metric_names::restarted(&destination, 1);
    }

    let configured = config.destinations.iter().map(|d| d.name.clone()).collect();
    for (destination, count) in store.dead_letter_unconfigured(configured).await? {
        tracing::warn!(%destination, count, "pending deliveries to a destination no longer configured were dead-lettered (unknown_destination)");
    }

    let lease_lost = CancellationToken::new();
    let worker_shutdown = shutdown.child_token();
    let tracker = TaskTracker::new();
    let lease_task = {
        let (shutdown, lost) = (worker_shutdown.clone(), lease_lost.clone());
        tokio::spawn(lease.keep(shutdown, lost))
    };
    {
        let (lost, shutdown) = (lease_lost.clone(), worker_shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = lost.cancelled() => shutdown.cancel(),
                () = shutdown.cancelled() => {}
            }
        });
    }
    let shutdown = worker_shutdown;
    // Traces (`[telemetry.traces]`): off unless enabled; then every recorded event and every
    // delivery attempt is a span of the trace ingest started for the webhook.
    let traces = inlet_shared::otel::Tracing::start(&config.telemetry.traces, "inlet-worker")?;
    // Several workers recording: a destination some route orders claims its ordered deliveries
    // only once every earlier intake message is recorded (the recording consumer's ack floor),
    // since another worker may still be recording an earlier event of the same key. One worker
    // (SQLite) records the stream in order, batch after batch: no gate, no wait.
    let recorded_floor =
        shared_store.then(|| Arc::new(pull::RecordedFloor::new(recording_consumer.clone(), config.worker.ack_wait)));
    let ordered_destinations: std::collections::HashSet<&str> = config
        .routes
        .iter()
        .filter(|route| route.ordering_key.is_some())
        .flat_map(|route| route.destinations.iter().map(String::as_str))
        .collect();
    let mut destinations = HashMap::new();
    for destination_config in &config.destinations {
        let name = destination_config.name.clone();
        let concurrency = destination_config.concurrency.unwrap_or(config.worker.delivery_concurrency);
        let destination = deliver::Destination::new(
            destination_config.clone(),
            concurrency,
            holdings.remove(&name).unwrap_or_else(Holding::always),
            traces.clone(),
        )
        .with_context(|| format!("destinations.{name}: cannot build HTTP client"))?;
        let destination = destination.with_transforms(transforms.clone());
        let destination = Arc::new(match &recorded_floor {
            Some(floor) if ordered_destinations.contains(name.as_str()) => {
                destination.with_recording_gate(Arc::clone(floor))
            }
            _ => destination,
        });
        destinations.insert(name, Arc::clone(&destination));
        tracker.spawn(deliver::run(destination, store.clone(), shutdown.clone()));
    }
    let destinations = Arc::new(destinations);

    // Several workers: the holder of a destination is woken when another recorded deliveries
    // for it (it also looks every second on its own).
    let wake_subject = format!("_INLET.{}.wake", config.stream.name);
    if shared_store {
        let mut wakes = client.subscribe(wake_subject.clone()).await.context("cannot subscribe to peer wake-ups")?;
        let destinations = Arc::clone(&destinations);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = wakes.next() => message,
                };
                let Some(message) = message else { return };
                if let Some(destination) = std::str::from_utf8(&message.payload).ok().and_then(|n| destinations.get(n))
                {
                    destination.wake();
                }
            }
        });
    }
    let placement_stop = CancellationToken::new();
    let placement_task = placement.map(|placement| tokio::spawn(placement.run(placement_stop.clone())));

    let recorder = Arc::new(record::Recorder {
        store: store.clone(),
        router: router.clone(),
        destinations: Arc::clone(&destinations),
        batch_size: config.worker.batch_size,
        unrouted_log: record::UnroutedLog::default(),
        peers: shared_store.then(|| record::PeerWake { client: client.clone(), subject: wake_subject.clone() }),
        tracing: traces.clone(),
        consumer: config.worker.consumer.clone(),
        bodies,
    });
    tracker.spawn(Arc::clone(&recorder).run(recording_consumer.clone(), shutdown.clone()));
    tracker.spawn(stats_loop(
        store.clone(),
        client.clone(),
        recording_consumer,
        destination_names.clone(),
        config.worker.stats_interval,
        shutdown.clone(),
    ));
    if let Some(quarantine) = &quarantine {
        tracker.spawn(quarantine_stats_loop(Arc::clone(quarantine), config.worker.stats_interval, shutdown.clone()));
    }
    tracker.spawn(maintenance_loop(store.clone(), config.worker.retention, jobs, shutdown.clone()));

    let operator = if config.console.enabled {
        let (routes, replayer) = operator_routes(
            &config,
            store.clone(),
            Arc::clone(&destinations),
            quarantine.clone(),
            backfiller,
            &transforms,
            shutdown.clone(),
        )?;
        replayer.close_interrupted_bulk_replays().await;
        Some(routes)
    } else {
        None
    };
    let health = Arc::new(http::Health { client, store: store.clone() });
    let options = ServeOptions {
        header_read_timeout: config.worker.header_read_timeout,
        max_connections: config.worker.max_connections,
        shutdown_grace: config.worker.shutdown_grace,
    };
    let (main_addr, admin_addr) = listeners.addresses()?;
    tracing::info!(
        %main_addr,
        %admin_addr,
        destinations = destinations.len(),
        tls = tls.is_some(),
        traces = traces.is_exporting(),
        "inlet-worker running"
    );
    let acceptor = tls.as_ref().map(inlet_shared::tls::ServerTls::acceptor);
    if let Some(tls) = tls {
        tokio::spawn(tls.reload(shutdown.clone()));
    }
    let main_service = TowerToHyperService::new(http::router(health, operator, config.worker.body_read_timeout));
    let admin_service = service_fn(move |request| http::handle_admin(metrics.clone(), request));
    tokio::join!(
        serve(listeners.main, main_service, options, acceptor, shutdown.clone()),
        serve(listeners.admin, admin_service, ServeOptions { max_connections: 64, ..options }, None, shutdown.clone()),
    );
    tracker.close();
    if tokio::time::timeout(config.worker.shutdown_grace, tracker.wait()).await.is_err() {
        tracing::warn!(grace = ?config.worker.shutdown_grace, "shutdown grace elapsed with deliveries in flight");
    }
    shutdown.cancel();
    // Last: the attempts above have ended, so handing the destinations back now lets another
    // worker take them at once without two sending at the same time.
    placement_stop.cancel();
    if let Some(task) = placement_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    // The spans of the last batches and attempts are exported before the process ends.
    traces.shutdown().await;
    if let Ok(Some(lost)) = lease_task.await {
        return Err(lost.into());
    }
    tracing::info!("inlet-worker stopped");
    Ok(())
}

/// Where the recording consumer starts. On a restored backup: the durable consumer is made
/// again from the backup's sequence (every message before it is in the backup), so what was
/// recorded after the backup is recorded again. Otherwise the consumer keeps the start it was
/// made with (JetStream refuses to change it), and a new one starts at the stream's beginning.
async fn recording_start(
    intake: &jetstream::stream::Stream,
    config: &Config,
    restored: Option<store::RestoredBackup>,
) -> anyhow::Result<consumer::DeliverPolicy> {
    let existing = intake.consumer_info(&config.worker.consumer).await.ok();
    let Some(restored) = restored else {
        return Ok(existing.map_or(consumer::DeliverPolicy::All, |info| info.config.deliver_policy));
    };
    if existing.is_some() {
        intake
            .delete_consumer(&config.worker.consumer)
            .await
            .context("restored backup: cannot delete the recording consumer to record the stream again")?;
    }
    let first = intake.cached_info().state.first_sequence;
    if restored.replay_from < first {
        tracing::error!(
            lost_from_sequence = restored.replay_from,
            lost_to_sequence = first - 1,
            "restored backup: the stream no longer holds these messages (stream.max_age or max_bytes): \
             events among them recorded after the backup are lost from the store"
        );
    }
    Ok(match restored.replay_from {
        0 | 1 => consumer::DeliverPolicy::All,
        start_sequence => consumer::DeliverPolicy::ByStartSequence { start_sequence },
    })
}

/// Copies the SQLite store to `to` while the worker runs (`inlet-worker backup`): reads the
/// recording consumer's ack floor first, so that a worker started on the restored copy records
/// again everything after it, then copies, checks and syncs (see `store::backup`).
///
/// # Errors
///
/// When the store is not SQLite, or as [`BackupError`]. NATS unreachable is no error: the copy
/// is then marked to record the whole stream again once restored (duplicates are recognised).
/// `inlet-worker backfill`: asks `source`'s provider for what it sent since `since` and
/// recovers what is not stored (`docs/backfill.md`), audited as `actor` unless `dry_run`. Opens
/// the store as the worker does (SQLite: only while the worker is stopped, since it holds the
/// file; with the worker running use the API's `backfill` mutation) and connects to NATS.
///
/// # Errors
///
/// When the store or NATS cannot be opened, or the backfill fails ([`backfill::BackfillError`]).
pub async fn backfill(
    config: &Config,
    source: &str,
    since: chrono::DateTime<chrono::FixedOffset>,
    dry_run: bool,
    actor: &str,
) -> anyhow::Result<Backfilled> {
    let store = store::Store::open(config).await?;
    let client = inlet_shared::nats::connect(&config.nats, "inlet-worker backfill").await?;
    let backfiller = Arc::new(backfill::Backfiller::new(config, jetstream::new(client), store)?);
    Ok(backfiller.run(source, UnixMs(since.timestamp_millis()), dry_run, actor).await?)
}

pub async fn backup_store(
    config: &Config,
    to: &std::path::Path,
    shutdown: CancellationToken,
) -> anyhow::Result<BackupSummary> {
    if config.store.backend != StoreBackend::Sqlite {
        anyhow::bail!(
            "backup copies the SQLite store ([store] backend = \"sqlite\"); back PostgreSQL up with its own tools \
             (docs/operations.md, \"Backing up PostgreSQL\")"
        );
    }
    let replay_from = tokio::select! {
        floor = acked_up_to(config) => match floor {
            Ok(floor) => floor + 1,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot read the recording consumer's position: once restored, the copy records the whole stream again"
                );
                1
            }
        },
        () = shutdown.cancelled() => anyhow::bail!("interrupted: no backup was written"),
    };
    Ok(store::backup::backup(config.worker.database.clone(), to.to_owned(), replay_from, shutdown).await?)
}

/// The recording consumer's ack floor: every stream message up to it was recorded and acked.
async fn acked_up_to(config: &Config) -> anyhow::Result<u64> {
    let client = inlet_shared::nats::connect(&config.nats, "inlet-worker backup").await?;
    let intake = jetstream::new(client).get_stream(&config.stream.name).await.context("intake stream")?;
    let info = intake.consumer_info(&config.worker.consumer).await.context("recording consumer")?;
    Ok(info.ack_floor.stream_sequence)
}

/// The operator plane's routes: `/graphql`, `/auth/*`, `/console`.
fn operator_routes(
    config: &Config,
    store: store::Store,
    destinations: Arc<HashMap<String, Arc<deliver::Destination>>>,
    quarantine: Option<Arc<quarantine::Quarantine>>,
    backfiller: Arc<backfill::Backfiller>,
    transforms: &deliver::Transforms,
    shutdown: CancellationToken,
) -> anyhow::Result<(http::OperatorRoutes, Arc<replay::Replayer>)> {
    let console = &config.console;
    let oidc = match (&console.oidc, &console.public_url) {
        (Some(oidc), Some(public_url)) => {
            Some(auth::oidc::OidcLogin::new(oidc.clone(), public_url).context("console.oidc")?)
        }
        _ => None,
    };
    if let Some(oidc) = &console.oidc
        && oidc.issuer.starts_with("http://")
    {
        // Only loopback is accepted for http:// (config validation): a development provider.
        tracing::warn!(issuer = %oidc.issuer, "console sign-in uses a plain-http identity provider on loopback (development only)");
    }
    let github = match (&console.github, &console.public_url) {
        (Some(github), Some(public_url)) => Some(
            auth::github::GithubLogin::new(github.clone(), public_url, console.access.domain_role)
                .context("console.github")?,
        ),
        _ => None,
    };
    let cipher = if console.token_keys.is_empty() {
        None
    } else {
        let keys = console.token_keys.iter().map(|k| (k.id.as_str(), k.key.expose()));
        Some(auth::crypto::TokenCipher::new(keys).map_err(|e| anyhow::anyhow!("console.token_keys: {e}"))?)
    };
    let auth = auth::Auth::new(store.clone(), console.clone(), oidc, github, cipher);
    let replayer = replay::Replayer::new(
        store.clone(),
        Arc::clone(&destinations),
        console.max_replay_rate,
        console.max_bulk_replay,
        shutdown,
    );
    let sources = config
        .sources
        .iter()
        .map(|s| api::types::Source {
            name: s.name.clone(),
            kind: s.kind.as_str().into(),
            backfill: config.backfill.iter().any(|b| b.source == s.name),
        })
        .collect();
    let services = Arc::new(api::Services {
        store,
        replayer: Arc::clone(&replayer),
        destinations,
        sources,
        quarantine,
        backfiller,
        // Dry runs run on the transform pool; events tell whether they were routed by this version.
        transforms: transforms.pool.clone(),
        config_version: transforms.router.version().clone(),
    });
    let api = api::Api::new(Arc::clone(&auth), services, config.worker.body_read_timeout);
    let routes =
        http::OperatorRoutes { api: api::router(api), pages: auth::routes::router(auth).merge(console::router()) };
    Ok((routes, replayer))
}

/// Counts the quarantine's requests per source and slot every `interval`
/// (`inlet_worker_quarantined_requests`), so the evidence kept and its evictions show.
async fn quarantine_stats_loop(
    quarantine: Arc<quarantine::Quarantine>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(error) = quarantine.counts().await {
            tracing::debug!(%error, "could not count the quarantine");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn stats_loop(
    store: store::Store,
    client: async_nats::Client,
    mut consumer: consumer::PullConsumer,
    destinations: Vec<String>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        metric_names::readiness(
            store.is_healthy(),
            client.connection_state() == async_nats::connection::State::Connected,
        );
        match store.stats().await {
            Ok(stats) => {
                metrics::gauge!(metric_names::DEAD_LETTER_BACKLOG).set(stats.dead_letters as f64);
                metrics::gauge!(metric_names::PENDING_DELIVERIES).set(stats.pending as f64);
                let age = stats.oldest_pending_received_at.map_or(0.0, |at| UnixMs::now().since(at).as_secs_f64());
                metrics::gauge!(metric_names::OLDEST_PENDING_AGE).set(age);
                metrics::gauge!(metric_names::SEARCH_INDEX_LAG).set(stats.search_index_lag as f64);
                for destination in &destinations {
                    let waiting = stats.ordered_waiting.iter().find(|(name, _)| name == destination).map_or(0, |w| w.1);
                    metrics::gauge!(metric_names::ORDERED_WAITING, "destination" => destination.clone())
                        .set(waiting as f64);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read stats"),
        }
        if let Ok(info) = consumer.info().await {
            metrics::gauge!(metric_names::CONSUMER_PENDING).set(info.num_pending as f64);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How often the holder of the periodic jobs looks for bulk replays whose worker is gone (a
/// lapsed lease: `replay::BULK_LEASE`), so one is closed within the lease and one tick.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(10);

/// How often events past retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The periodic jobs, on one worker at a time (the holder of `jobs`; with SQLite, the one
/// worker): every tick, closing bulk replays whose lease lapsed; every hour, pruning.
async fn maintenance_loop(store: store::Store, retention: Duration, jobs: Holding, shutdown: CancellationToken) {
    let mut pruned_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = jobs.wait_held() => {}
        }
        replay::close_expired_bulk_replays(&store).await;
        // At once when this worker first holds the jobs (started, or took them over), then hourly.
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned_at = Some(tokio::time::Instant::now());
            match store.prune(UnixMs::now().minus(retention)).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned events past retention"),
                Err(error) => tracing::warn!(%error, "prune failed"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(MAINTENANCE_EVERY) => {}
        }
    }
}
