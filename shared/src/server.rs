//! The HTTP accept loop both binaries serve with (hyper 1 through hyper-util), and the
//! process-wide Prometheus recorder.
//!
//! The loop owns the per-connection rules: HTTP/1.1 and HTTP/2 (auto-detected), keep-alive, a
//! header-read timeout against slowloris, a cap on open connections (excess ones wait in the
//! kernel's accept queue, so memory stays bounded), and graceful shutdown: on cancel it stops
//! accepting, lets in-flight requests finish within a grace period, then closes.
//!
//! With TLS (`crate::tls`) every rule holds over the TLS stream: the handshake happens in the
//! connection's task, holding its slot of the cap, and must finish within the header-read
//! timeout; HTTP/2 or HTTP/1.1 is then what ALPN chose (the same auto-detection follows).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Per-listener connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time a client has to send its first byte, and then complete request headers (HTTP/1);
    /// also how long a connection may stay open with no request in flight (both protocols).
    pub header_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace: Duration,
}

/// Concurrent HTTP/2 streams one connection may open (hyper's default is 200). Each stream
/// can hold a request body, so this bounds what one connection can make the process buffer.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains; HTTPS when `tls`
/// is given (its acceptor always hands out the certificate in use).
///
/// Returns `true` when every connection finished within the grace period.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> bool
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    // Cancelled when the grace period is over: connections still open are then dropped.
    let force_close = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(options.max_connections));

    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Accept errors (EMFILE, ECONNABORTED) are per-connection or transient: keep
                // serving, but do not spin on a persistent one.
                tracing::warn!(%error, "failed to accept connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (builder, service, shutdown, force_close, tls) =
            (Arc::clone(&builder), service.clone(), shutdown.clone(), force_close.clone(), tls.clone());
        connections.spawn(async move {
            let _permit = permit;
            let idle_timeout = options.header_read_timeout;
            let Some(acceptor) = tls else {
                // hyper's header-read timeout only starts once the HTTP version has been sniffed
                // from the first bytes, so a client that connects and sends nothing would keep
                // its slot forever: enough of them and the cap locks every sender out. It gets
                // the same time for its first byte (the whole head may so take up to twice the
                // timeout).
                let mut first = [0u8; 1];
                let first_byte = tokio::select! {
                    () = shutdown.cancelled() => return,
                    peeked = tokio::time::timeout(idle_timeout, stream.peek(&mut first)) => peeked,
                };
                if !matches!(first_byte, Ok(Ok(read)) if read > 0) {
                    // Silent past the timeout, closed, or broken: close it before its slot is freed.
                    drop(stream);
                    return;
                }
                let activity = Arc::new(Activity::new());
                let service = Tracked { inner: service, activity: Arc::clone(&activity) };
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                serve_connection(connection, &activity, idle_timeout, &shutdown, &force_close).await;
                return;
            };
            // The handshake holds this connection's slot: a client that opens TCP and never
            // finishes it (or never starts it) is dropped after the header-read timeout. After
            // it, a client that sends no request is closed by the idle rule of
            // `serve_connection` (the TLS stream cannot be peeked for a first byte).
            let handshake = tokio::select! {
                () = shutdown.cancelled() => return,
                handshake = tokio::time::timeout(idle_timeout, acceptor.accept(stream)) => handshake,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(timeout = ?idle_timeout, "TLS handshake did not finish in time");
                    return;
                }
            };
            // Idle from the end of the handshake on.
            let activity = Arc::new(Activity::new());
            let service = Tracked { inner: service, activity: Arc::clone(&activity) };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            serve_connection(connection, &activity, idle_timeout, &shutdown, &force_close).await;
        });
    }
    drop(listener);
    connections.close();
    let drained = tokio::time::timeout(options.shutdown_grace, connections.wait()).await.is_ok();
    force_close.cancel();
    drained
}

/// Drives one connection to its end. It is closed gracefully (HTTP/2 `GOAWAY`; HTTP/1 after the
/// response in flight) when it has had no request in flight for `idle_timeout` — a request is
/// in flight from its head until its handler answered; a response still being written counts
/// as idle, so a client that does not read its answer has at most two `idle_timeout`s for it —
/// hyper's
/// header-read timeout covers HTTP/1 heads only, and an HTTP/2 client that answers pings would
/// otherwise hold its `max_connections` slot forever — or when the process shuts down. A
/// connection still open after an idle close and another `idle_timeout` with nothing in flight
/// (a client that never acknowledges the `GOAWAY`) is dropped, as is every one at `force_close`.
async fn serve_connection<C>(
    connection: C,
    activity: &Activity,
    idle_timeout: Duration,
    shutdown: &CancellationToken,
    force_close: &CancellationToken,
) where
    C: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulConnection,
{
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                return;
            }
            () = activity.idle_for(idle_timeout) => {
                if closing {
                    return;
                }
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = force_close.cancelled() => return,
        }
    }
}

/// A connection that can be asked to finish what is in flight and close.
trait GracefulConnection {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConnection for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}

/// How many requests a connection has in flight, and when that last changed. Requests only
/// update two atomics; the watchdog ([`Activity::idle_for`]) looks at them when its timer fires,
/// so a busy connection costs no wake-up per request.
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `since` when a request last started or finished.
    last_change_ms: AtomicU64,
    since: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity { in_flight: AtomicUsize::new(0), last_change_ms: AtomicU64::new(0), since: Instant::now() }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing has been in flight for `period` (noticed at most one `period`
    /// late when a request ends while the watchdog sleeps through a busy spell).
    async fn idle_for(&self, period: Duration) {
        loop {
            // The count first (pairs with the release in `InFlight::drop`), so a count of zero
            // comes with the time its last request finished.
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let last_change = self.since + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
            let now = Instant::now();
            let wake = if busy {
                now + period
            } else if now >= last_change + period {
                return;
            } else {
                last_change + period
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A request in flight on its connection, from its head to its response.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Touched first: the watchdog must not see zero in flight with the old time.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The service of one connection, counting its requests in flight.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<B>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.activity);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// Listen backlog asked of the kernel (which caps it at `net.core.somaxconn`). Connections
/// beyond `max_connections` wait here, costing the process nothing; the default of 128 made
/// most of a burst of new connections retry their SYN after 1 s, 3 s, 7 s instead.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `address` with [`LISTEN_BACKLOG`].
///
/// # Errors
///
/// When the socket cannot be created, bound or put into listening state.
pub fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's TcpListener::bind does: a restarted process can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The process-wide Prometheus recorder, installed on first use. Every instance started in one
/// process (tests start several) records into it, so tests label their sources uniquely.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency_buckets =
                [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
            // Histograms named `*_messages` count messages, not seconds.
            let count_buckets = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&latency_buckets)
                .and_then(|builder| builder.set_buckets_for_metric(Matcher::Suffix("_messages".into()), &count_buckets))
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            let upkeep = handle.clone();
            // Histograms are only drained by upkeep when the built-in exporter is not used.
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// A token cancelled on SIGINT or SIGTERM (the process's root shutdown token).
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut terminate) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = terminate.recv() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the process");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    token
}

/// `error` and its causes on one line, `: ` between them, like anyhow's `{:#}`, but without a
/// cause whose text the message before it already shows: several errors (async-nats's
/// `ConnectError`, `io::Error` wrapping one) print their source in their own message and return
/// it from `source()` too, which made startup failures name their cause twice.
fn report(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// The body of both binaries' `main`: load the config file, start logging, run until SIGINT or
/// SIGTERM, and turn the outcome into an exit code (64 for an unusable configuration, naming
/// the key — also when `run` fails with a [`crate::config::ConfigError`], e.g. a certificate
/// file it names cannot be used; 1 for a runtime failure).
pub async fn binary_main<F, Fut>(binary: &str, config_path: &std::path::Path, run: F) -> std::process::ExitCode
where
    F: FnOnce(crate::config::Config, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    const EX_USAGE: u8 = 64;
    let config = match crate::config::load_file(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: invalid configuration: {error}");
            return std::process::ExitCode::from(EX_USAGE);
        }
    };
    if let Err(error) = crate::telemetry::init(&config.telemetry) {
        eprintln!("{binary}: {error}");
        return std::process::ExitCode::from(EX_USAGE);
    }
    match run(config, shutdown_on_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Found only once files the configuration names were read (e.g. a TLS certificate).
        Err(error) if error.downcast_ref::<crate::config::ConfigError>().is_some() => {
            let error = report(&error);
            tracing::error!(error, "{binary}: invalid configuration");
            eprintln!("{binary}: invalid configuration: {error}");
            std::process::ExitCode::from(EX_USAGE)
        }
        Err(error) => {
            let report = report(&error);
            tracing::error!(error = report, "{binary} failed");
            eprintln!("{binary}: {report}");
            // A `[nats]` file or seed found unusable only when connecting is invalid config too.
            if error.downcast_ref::<crate::nats::NatsSetupError>().is_some_and(crate::nats::NatsSetupError::is_config) {
                return std::process::ExitCode::from(EX_USAGE);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    /// An error whose message already quotes its source, as async-nats's `ConnectError` does.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "IO error: {}", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_the_message_already_shows_is_not_repeated_and_others_are_kept() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = anyhow::Error::new(Quoting(refused)).context("cannot connect to NATS at nats://127.0.0.1:1");
        assert_eq!(format!("{error:#}").matches("connection refused").count(), 2, "anyhow's own form repeats it");
        assert_eq!(report(&error), "cannot connect to NATS at nats://127.0.0.1:1: IO error: connection refused");
        let plain = anyhow::Error::new(std::io::Error::other("disk full")).context("cannot record");
        assert_eq!(report(&plain), "cannot record: disk full");
    }
}
