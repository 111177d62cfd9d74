//! Test harness pieces shared by the crates' integration tests (feature `test-util`).
//!
//! [`TestNats`] runs a real `nats-server` with JetStream on a free port and a temporary store
//! directory, and kills it on drop. The binary is taken from `NATS_SERVER_BIN`, else the
//! project-local install (`.tools/nats/bin/nats-server`, put there by
//! `scripts/install-nats-server.sh`), else `PATH`. A missing binary fails the test with a
//! message saying how to install it; tests are never skipped.
//!
//! [`TestNats::start_on_tmpfs`] runs the server in its own user and mount namespace
//! (`unshare -rm`, no privileges needed) with its store on a small tmpfs, so a test can fill
//! the disk for real (ENOSPC) through [`TestNats::store_seen_from_outside`].
//!
//! [`TestPostgres`] runs a real PostgreSQL server (its own `initdb` cluster, free port), stopped
//! on drop; see [`postgres`].
//!
//! [`tls::TestCa`] makes a CA and server certificates (rcgen) for the HTTPS tests.
//!
//! [`otlp::TestOtlp`] (with `runtime`) is an OTLP/HTTP receiver on a free port that decodes
//! the exported spans with the official protobuf definitions.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "runtime")]
pub mod otlp;
pub mod postgres;
pub mod tls;
pub use postgres::TestPostgres;
#[cfg(feature = "test-util")]
pub mod secure;
#[cfg(feature = "test-util")]
pub use secure::{NatsUser, TestPki};

/// The nats-server release the project pins (scripts, tests and docker-compose use it).
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// Path of the nats-server binary tests use.
pub fn nats_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A running `nats-server` owned by one test.
pub struct TestNats {
    child: Option<Child>,
    port: u16,
    monitor_port: Option<u16>,
    store: tempfile::TempDir,
    extra_config: Option<String>,
    /// Environment variables of the server process (values a config refers to as `$NAME`).
    env: Vec<(String, String)>,
    log: Arc<Mutex<Vec<String>>>,
    /// Set when the server runs on a tmpfs in its own namespace.
    tmpfs: Option<Tmpfs>,
}

/// A server on a tmpfs: `child` is the namespace's shell, which restarts nats-server whenever
/// it exits (same port, same store) until the `stop` file exists. The tmpfs lives as long as
/// the namespace, i.e. as long as the shell.
struct Tmpfs {
    /// (client port, monitor port) each time a server instance is ready. In a mutex only so
    /// that `TestNats` stays `Sync` (tests share it across tasks).
    ready: Mutex<mpsc::Receiver<(u16, Option<u16>)>>,
}

/// Runs inside the namespace: $1 the mount point, $2 the control directory (port, pid and
/// stop files, config), $3 the nats-server binary, $4 the tmpfs size in MiB.
const TMPFS_SCRIPT: &str = r#"set -e
mount -t tmpfs -o "size=$4m,mode=0700" inlet-test-nats "$1"
set +e
while [ ! -e "$2/stop" ]; do
  "$3" -js -a 127.0.0.1 -p "$(cat "$2/port" 2>/dev/null || echo -1)" -sd "$1" -c "$2/extra.conf" &
  echo $! > "$2/nats.pid"
  wait $!
done
"#;

impl TestNats {
    /// Starts a server with JetStream on a free loopback port.
    pub fn start() -> TestNats {
        Self::start_with_config(None)
    }

    /// Starts a server with an extra config file body (e.g. `jetstream { sync_interval: always }`).
    pub fn start_with_config(extra_config: Option<&str>) -> TestNats {
        Self::start_with_files(extra_config, &[], &[])
    }

    /// Starts a server with config `extra_config`, beside which `files` (name, text) are written
    /// first (for its `include`s), with `env` in its environment.
    pub fn start_with_files(extra_config: Option<&str>, files: &[(&str, &str)], env: &[(&str, &str)]) -> TestNats {
        let store = tempfile::tempdir().expect("temp store dir");
        for (name, text) in files {
            std::fs::write(store.path().join(name), text).expect("write a file beside the nats config");
        }
        let mut nats = TestNats {
            child: None,
            port: 0,
            monitor_port: None,
            store,
            extra_config: extra_config.map(str::to_owned),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            log: Arc::default(),
            tmpfs: None,
        };
        nats.spawn(None);
        nats
    }

    /// Starts a server whose store is a tmpfs of `size_mib` MiB in its own user and mount
    /// namespace (`unshare -rm`), so that filling it gives nats-server a real ENOSPC. JetStream's
    /// own `max_file_store` is set far above the tmpfs, so the disk fills first.
    /// [`TestNats::restart`] restarts nats-server inside the namespace, keeping the tmpfs.
    pub fn start_on_tmpfs(size_mib: u32) -> TestNats {
        let store = tempfile::tempdir().expect("temp store dir");
        let mount = store.path().join("js");
        std::fs::create_dir(&mount).expect("mount point");
        std::fs::write(store.path().join("extra.conf"), "jetstream { max_file_store: 64GB }\n").expect("nats config");
        let spawned = Command::new("unshare")
            .args(["-rm", "sh", "-c", TMPFS_SCRIPT, "sh"])
            .arg(&mount)
            .arg(store.path())
            .arg(nats_server_bin())
            .arg(size_mib.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = spawned.unwrap_or_else(|e| {
            panic!("this test needs util-linux `unshare` on PATH to give nats-server a small tmpfs: {e}")
        });
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ready_tx, ready) = mpsc::channel();
        read_log(child.stderr.take().expect("piped stderr"), Arc::clone(&log), ready_tx);
        let mut nats = TestNats {
            child: Some(child),
            port: 0,
            monitor_port: None,
            store,
            extra_config: None,
            env: Vec::new(),
            log,
            tmpfs: Some(Tmpfs { ready: Mutex::new(ready) }),
        };
        nats.await_tmpfs_server();
        std::fs::write(nats.store.path().join("port"), nats.port.to_string()).expect("port file");
        assert!(nats.store_seen_from_outside().is_some_and(|p| p.exists()), "the tmpfs store is reachable");
        nats
    }

    /// For a server on a tmpfs: its store directory as this process sees it, through
    /// `/proc/<pid>/root` of the namespace (files written there fill the tmpfs).
    pub fn store_seen_from_outside(&self) -> Option<PathBuf> {
        let (_, shell) = (self.tmpfs.as_ref()?, self.child.as_ref()?);
        let mount = self.store.path().join("js");
        Some(PathBuf::from(format!("/proc/{}/root", shell.id())).join(mount.strip_prefix("/").ok()?))
    }

    fn await_tmpfs_server(&mut self) {
        let Some(tmpfs) = &self.tmpfs else { return };
        let ready = tmpfs.ready.lock().map(|ready| ready.recv_timeout(Duration::from_secs(30)));
        match ready.unwrap_or(Err(mpsc::RecvTimeoutError::Disconnected)) {
            Ok((port, monitor)) => {
                self.port = port;
                self.monitor_port = monitor;
            }
            Err(_) => panic!(
                "nats-server on a tmpfs did not become ready within 30 s. This needs unprivileged user namespaces \
                 (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0). Output:\n{}",
                self.log()
            ),
        }
    }

    /// The pid of the namespaced nats-server instance running now.
    fn tmpfs_server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.store.path().join("nats.pid")).ok()?.trim().parse().ok()
    }

    /// Starts a server that fsyncs before every ack (`sync_interval: always`), with its HTTP
    /// monitoring endpoint on a free port (see [`TestNats::monitoring_url`]).
    pub fn start_fsync() -> TestNats {
        Self::start_with_config(Some("jetstream { sync_interval: always }\nhttp: \"127.0.0.1:-1\"\n"))
    }

    /// `http://127.0.0.1:<port>` of the monitoring endpoint, when the config enabled it.
    pub fn monitoring_url(&self) -> Option<String> {
        self.monitor_port.map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `kill -9` the server (no clean shutdown), and wait for it to be gone. On a tmpfs, the
    /// tmpfs goes with it.
    pub fn kill(&mut self) {
        if self.tmpfs.is_some() {
            // Stop the restart loop first, then the instance it runs.
            let _ = std::fs::write(self.store.path().join("stop"), "");
            if let Some(mut shell) = self.child.take() {
                let _ = shell.kill();
                let _ = shell.wait();
                if let Some(pid) = self.tmpfs_server_pid() {
                    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                }
            }
            return;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store directory (`kill -9`
    /// first). On a tmpfs, only nats-server restarts; the namespace and its tmpfs stay.
    pub fn restart(&mut self) {
        if self.tmpfs.is_some() {
            let pid = self.tmpfs_server_pid().expect("a running namespaced nats-server");
            assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill").success());
            self.await_tmpfs_server();
            return;
        }
        self.kill();
        self.spawn(Some(self.port));
    }

    /// `kill -9` the server and start it again on the same port and store with another config
    /// body (e.g. permissions lifted). Not on a tmpfs.
    pub fn restart_with_config(&mut self, extra_config: Option<&str>) {
        assert!(self.tmpfs.is_none(), "restart_with_config is not for a tmpfs server");
        self.kill();
        self.extra_config = extra_config.map(str::to_owned);
        self.spawn(Some(self.port));
    }

    /// What the server printed so far (for failure messages).
    pub fn log(&self) -> String {
        self.log.lock().map(|lines| lines.join("\n")).unwrap_or_default()
    }

    fn spawn(&mut self, port: Option<u16>) {
        let bin = nats_server_bin();
        let mut command = Command::new(&bin);
        command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.map_or_else(|| "-1".to_owned(), |p| p.to_string()))
            .arg("-sd")
            .arg(self.store.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(extra) = &self.extra_config {
            let path = self.store.path().join("extra.conf");
            std::fs::write(&path, extra).expect("write nats config");
            command.arg("-c").arg(path);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); install nats-server {NATS_SERVER_VERSION} with scripts/install-nats-server.sh \
                 or set NATS_SERVER_BIN",
                bin.display()
            )
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel::<(u16, Option<u16>)>();
        read_log(stderr, Arc::clone(&self.log), ready_tx);
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok((found, monitor)) => {
                self.port = found;
                self.monitor_port = monitor;
            }
            Err(_) => {
                let _ = child.kill();
                panic!("nats-server did not become ready within 30 s:\n{}", self.log());
            }
        }
        self.child = Some(child);
    }
}

/// Collects a server's log lines and sends (client port, monitor port) each time an instance
/// says it is ready.
fn read_log(stderr: std::process::ChildStderr, log: Arc<Mutex<Vec<String>>>, ready: mpsc::Sender<(u16, Option<u16>)>) {
    std::thread::spawn(move || {
        let mut port = None;
        let mut monitor = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                port = rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            }
            if let Some(rest) = line.split("Starting http monitor on ").nth(1) {
                monitor = rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            }
            if line.contains("Server is ready")
                && let Some(port) = port
            {
                let _ = ready.send((port, monitor));
            }
            if let Ok(mut lines) = log.lock() {
                lines.push(line);
            }
        }
    });
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of real `nats-server`s on loopback (each with its own store directory),
/// routed to each other on free ports, for replicated (`replicas = 3`) streams.
pub struct TestNatsCluster {
    nodes: Vec<TestNats>,
}

impl TestNatsCluster {
    /// Starts `size` servers named `n1`…`n<size>` in one cluster.
    pub fn start(size: usize) -> TestNatsCluster {
        // Every node must know every route port before it starts: take free ports from the OS
        // (held until all are chosen, so they differ), then release them for the servers.
        let holders: Vec<std::net::TcpListener> =
            (0..size).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free route port")).collect();
        let route_ports: Vec<u16> = holders.iter().map(|l| l.local_addr().expect("route port").port()).collect();
        drop(holders);
        let routes: Vec<String> = route_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let nodes = route_ports
            .iter()
            .enumerate()
            .map(|(index, port)| {
                let config = format!(
                    "server_name: n{}\ncluster {{\n  name: inlet-test\n  listen: \"127.0.0.1:{port}\"\n  routes: [{}]\n}}\n",
                    index + 1,
                    routes.join(", ")
                );
                TestNats::start_with_config(Some(&config))
            })
            .collect();
        TestNatsCluster { nodes }
    }

    /// `nats.url` for the whole cluster: every node's URL, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(TestNats::url).collect::<Vec<_>>().join(",")
    }

    /// The node called `name` (`n1`…), e.g. a stream's leader as JetStream reports it.
    pub fn node(&mut self, name: &str) -> &mut TestNats {
        let index: usize = name.trim_start_matches('n').parse().expect("node name n<index>");
        &mut self.nodes[index - 1]
    }
}

/// The `promtool` binary: `PROMTOOL_BIN`, else `promtool` on the `PATH`.
pub fn promtool() -> String {
    std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_owned())
}

/// Runs `promtool check metrics` (Prometheus's own linter) on `text`; returns its findings
/// (empty when clean).
pub fn promtool_findings(text: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); install it with scripts/install-promtool.sh"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        String::new()
    } else {
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }
}

/// Sum of the samples of metric `name` (Prometheus text format) whose labels include all of
/// `labels`; 0 when there is none.
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An HTTP/2 client connection (h2c, prior knowledge) to `addr`, kept open by its driver task,
/// which answers the server's pings like a well-behaved client and ends when the server closes
/// the connection.
///
/// # Panics
///
/// When the connection or the HTTP/2 handshake fails.
#[cfg(feature = "runtime")]
pub async fn h2c_connect(
    addr: std::net::SocketAddr,
) -> (hyper::client::conn::http2::SendRequest<String>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, driver)
}
