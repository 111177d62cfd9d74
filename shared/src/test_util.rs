//! Test harness pieces shared by the crates' integration tests (feature `test-util`).
//!
//! [`TestNats`] runs a real `nats-server` with JetStream on a free port and a temporary store
//! directory, and kills it on drop. The binary is taken from `NATS_SERVER_BIN`, else the
//! project-local install (`.tools/nats/bin/nats-server`, put there by
//! `scripts/install-nats-server.sh`), else `PATH`. A missing binary fails the test with a
//! message saying how to install it; tests are never skipped.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    log: Arc<Mutex<Vec<String>>>,
}

impl TestNats {
    /// Starts a server with JetStream on a free loopback port.
    pub fn start() -> TestNats {
        Self::start_with_config(None)
    }

    /// Starts a server with an extra config file body (e.g. `jetstream { sync_interval: always }`).
    pub fn start_with_config(extra_config: Option<&str>) -> TestNats {
        let store = tempfile::tempdir().expect("temp store dir");
        let mut nats = TestNats {
            child: None,
            port: 0,
            monitor_port: None,
            store,
            extra_config: extra_config.map(str::to_owned),
            log: Arc::default(),
        };
        nats.spawn(None);
        nats
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

    /// `kill -9` the server (no clean shutdown), and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.kill();
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
        let log = Arc::clone(&self.log);
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
                    let _ = ready_tx.send((port, monitor));
                }
                if let Ok(mut lines) = log.lock() {
                    lines.push(line);
                }
            }
        });
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
