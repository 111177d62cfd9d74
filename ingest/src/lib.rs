//! `inlet-ingest`: the front door. Verifies webhook signatures over the raw body, publishes
//! the event to NATS JetStream and answers 2xx only after the PubAck.
//!
//! Entry point: [`run`]. It is stateless (no database, no disk), so any number of replicas can
//! run behind a load balancer; JetStream's `Nats-Msg-Id` deduplication makes their retries
//! safe.
//!
//! Modules: `http` (routes, body limits, the request pipeline), `publish` (JetStream and the
//! PubAck), `health` (whether JetStream can store now: readiness, answering 503 at once while
//! it cannot, the store probe), `batch` (group commit), `budget` (the memory budget for request
//! bodies), `error` (every failure and its one HTTP mapping), `events` (metrics).
#![forbid(unsafe_code)]

mod batch;
mod budget;
mod error;
mod health;
mod http;
pub mod metric_names;
mod pub_ack;
mod publish;
mod quarantine;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use hyper::service::service_fn;
use inlet_shared::config::{Config, MESSAGE_HEADER_ROOM};
use inlet_shared::server::{ServeOptions, metrics_handle, serve};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The two sockets the receiver serves: public (webhooks, health) and admin (metrics).
pub struct Listeners {
    /// Webhooks, `/healthz`, `/readyz`.
    pub public: TcpListener,
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
        let public = inlet_shared::server::bind(config.ingest.listen)
            .with_context(|| format!("cannot bind ingest.listen {}", config.ingest.listen))?;
        let admin = inlet_shared::server::bind(config.ingest.admin_listen)
            .with_context(|| format!("cannot bind ingest.admin_listen {}", config.ingest.admin_listen))?;
        Ok(Listeners { public, admin })
    }

    /// Both local addresses (public, admin).
    ///
    /// # Errors
    ///
    /// When a socket has no local address.
    pub fn addresses(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.public.local_addr()?, self.admin.local_addr()?))
    }
}

/// Runs the receiver until `shutdown` is cancelled, then drains in-flight requests.
///
/// # Errors
///
/// When NATS cannot be reached or the stream cannot be set up within `nats.startup_timeout`.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = metrics_handle();
    metric_names::describe();
    // Before anything else: a certificate that cannot be used stops startup, naming the key.
    let tls = match &config.ingest.tls {
        Some(files) => Some(inlet_shared::tls::ServerTls::load(files, "ingest.tls", metric_names::TLS)?),
        None => None,
    };

    let mut sources = HashMap::new();
    for source in &config.sources {
        let runtime = http::SourceRuntime::new(source, &config).with_context(|| format!("source {}", source.name))?;
        if let Some(warning) = source.replay_warning(config.stream.duplicate_window) {
            tracing::warn!(source = %source.name, "{warning}");
        }
        sources.insert(source.name.clone(), runtime);
    }

    let client = inlet_shared::nats::connect(&config.nats, "inlet-ingest").await?;
    let fsync = config.stream.durability == inlet_shared::config::Durability::Fsync;
    let probe = publish::ProbeTarget {
        subject: config.stream.probe_subject(),
        largest_event_bytes: config.largest_event_bytes(),
    };
    let publisher =
        publish::Publisher::new(client, config.stream.name.clone(), config.ingest.publish_timeout, fsync, probe);
    check_max_payload(&config, publisher.max_payload())?;
    inlet_shared::nats::ensure_stream(publisher.jetstream(), &config.stream, config.nats.startup_timeout).await?;
    // Bodies over the threshold are stored in the bodies bucket. Like the stream, a worker sets
    // it up; ingest's user in deploy/nats/permissions.conf may not, and waits for one to.
    let publisher = if config.uses_claim_check() {
        inlet_shared::claim_check::ensure_bucket(publisher.jetstream(), &config.stream, config.nats.startup_timeout)
            .await?;
        let bodies = inlet_shared::claim_check::BodyStore::open(
            publisher.jetstream(),
            &config.stream,
            config.ingest.claim_check_threshold_bytes,
            config.nats.startup_timeout,
        )
        .await?;
        publisher.with_bodies(bodies)
    } else {
        publisher
    };
    if fsync {
        let monitoring_url = config.nats.monitoring_url.as_deref().unwrap_or_default();
        publish::verify_fsync_server(&publisher, monitoring_url).await?;
        tracing::info!("durability fsync: group commit into atomic batches");
    }

    let state_js = publisher.jetstream().clone();
    let probe_task = {
        let prober = publisher.clone();
        let probe = move || {
            let prober = prober.clone();
            async move { prober.probe().await }
        };
        tokio::spawn(Arc::clone(publisher.health()).run_probe(probe, shutdown.clone()))
    };

    let largest_body = config.largest_body_bytes();
    let body_budget = budget::BodyBudget::new(config.ingest.max_buffered_body_bytes, largest_body);
    if body_budget.small_slice() < budget::SMALL_BODY_BYTES {
        tracing::warn!(
            max_buffered_body_bytes = config.ingest.max_buffered_body_bytes,
            largest_body,
            "ingest.max_buffered_body_bytes leaves no room kept for small bodies beside the largest body: large \
             or stalled bodies can hold all of it and keep small webhooks out (503 busy); raise it to at least \
             the largest body limit plus 1000000"
        );
    }
    // Traces (`[telemetry.traces]`): off unless enabled; then the receive, verify and publish
    // spans of every webhook are exported, and the worker's spans continue their traces.
    let traces = inlet_shared::otel::Tracing::start(&config.telemetry.traces, "inlet-ingest")?;
    // Failed requests are written to the quarantine stream by a task of their own, never by the
    // request that failed.
    let quarantine = quarantine::Quarantine::start(&config, state_js.clone(), shutdown.clone());
    let state = Arc::new(http::AppState {
        sources,
        publisher,
        body_read_timeout: config.ingest.body_read_timeout,
        retry_after: config.ingest.retry_after,
        body_budget,
        claim_check_threshold: config.ingest.claim_check_threshold_bytes,
        in_flight: metrics::gauge!(metric_names::IN_FLIGHT),
        tracing: traces.clone(),
        quarantine,
    });
    let options = ServeOptions {
        header_read_timeout: config.ingest.header_read_timeout,
        max_connections: config.ingest.max_connections,
        shutdown_grace: config.ingest.shutdown_grace,
    };
    let (public_addr, admin_addr) = listeners.addresses()?;
    tracing::info!(
        %public_addr,
        %admin_addr,
        sources = state.sources.len(),
        tls = tls.is_some(),
        traces = traces.is_exporting(),
        "inlet-ingest listening"
    );
    let acceptor = tls.as_ref().map(inlet_shared::tls::ServerTls::acceptor);
    if let Some(tls) = tls {
        tokio::spawn(tls.reload(shutdown.clone()));
    }

    let public_service = service_fn(move |request| http::handle(Arc::clone(&state), request));
    let admin_service = service_fn(move |request| http::handle_admin(metrics.clone(), request));
    let admin_options = ServeOptions { max_connections: 64, ..options };
    let (drained, _) = tokio::join!(
        serve(listeners.public, public_service, options, acceptor, shutdown.clone()),
        serve(listeners.admin, admin_service, admin_options, None, shutdown),
    );
    // A probe in progress has nothing left to report to.
    probe_task.abort();
    if !drained {
        tracing::warn!(grace = ?options.shutdown_grace, "shutdown grace elapsed with requests still in flight");
    }
    // The last spans (those of the requests just drained) are exported before the process ends.
    traces.shutdown().await;
    tracing::info!("inlet-ingest stopped");
    Ok(())
}

/// A body travels in its message up to `ingest.claim_check_threshold_bytes` (or the source's
/// limit, when lower); such a message, with up to [`MESSAGE_HEADER_ROOM`] of headers, must fit
/// the server's `max_payload`, or the server would refuse every body near that size.
#[derive(Debug, thiserror::Error)]
#[error(
    "ingest.claim_check_threshold_bytes: bodies of up to {inline} bytes travel in one message with up to \
     {header_room} bytes of headers, but the NATS server's max_payload is {max_payload}; set \
     ingest.claim_check_threshold_bytes to at most {fits} (larger bodies then go to the bodies bucket), or raise \
     max_payload in nats-server's configuration to at least {needed}"
)]
pub struct MaxPayloadError {
    inline: usize,
    header_room: usize,
    max_payload: usize,
    fits: usize,
    needed: usize,
}

/// Checks the largest body that travels in a message against the server's `max_payload`.
///
/// # Errors
///
/// [`MaxPayloadError`] saying which key to change, and to what.
pub fn check_max_payload(config: &Config, max_payload: usize) -> Result<(), MaxPayloadError> {
    let inline = config.largest_body_bytes().min(config.ingest.claim_check_threshold_bytes);
    let needed = inline.saturating_add(MESSAGE_HEADER_ROOM);
    if needed <= max_payload {
        return Ok(());
    }
    Err(MaxPayloadError {
        inline,
        header_room: MESSAGE_HEADER_ROOM,
        max_payload,
        fits: max_payload.saturating_sub(MESSAGE_HEADER_ROOM),
        needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_in_messages_must_fit_max_payload_and_the_error_names_the_key_and_the_fix() {
        let parse = |ingest: &str| {
            Config::parse(
                &format!("[ingest]\n{ingest}\n[[sources]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"s\"]\n"),
                &std::collections::BTreeMap::new(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let mib = 1024 * 1024;
        // The defaults fit nats-server's default max_payload exactly; GitHub's 25 MiB go to the bucket.
        let defaults = parse("");
        assert!(defaults.uses_claim_check());
        assert!(check_max_payload(&defaults, mib).is_ok());
        let error = check_max_payload(&defaults, 512 * 1024).unwrap_err().to_string();
        assert!(error.starts_with("ingest.claim_check_threshold_bytes: "), "{error}");
        assert!(error.contains("set ingest.claim_check_threshold_bytes to at most 458752"), "{error}");
        assert!(error.contains("raise max_payload in nats-server's configuration to at least 1048576"), "{error}");
        // A threshold over max_payload is refused; one within a larger max_payload is not.
        let high = parse("claim_check_threshold_bytes = 8388608");
        assert!(check_max_payload(&high, mib).is_err());
        assert!(check_max_payload(&high, 8 * mib + MESSAGE_HEADER_ROOM).is_ok());
    }
}
