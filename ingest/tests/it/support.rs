//! Starts `inlet-ingest` in-process on port 0 against a real nats-server, and reads back what
//! landed in the stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const STREAM: &str = "INLET";

pub struct TestIngest {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub nats: TestNats,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Config text: test defaults plus `extra` (sources and any overrides).
fn config_text(nats_url: &str, extra: &str) -> String {
    format!(
        r#"
[nats]
url = "{nats_url}"
startup_timeout = "10s"
[ingest]
publish_timeout = "2s"
body_read_timeout = "1s"
header_read_timeout = "1s"
retry_after = "1s"
shutdown_grace = "5s"
{extra}
"#
    )
}

pub async fn spawn_ingest(extra: &str) -> TestIngest {
    spawn_ingest_with(extra, &[]).await
}

/// [`spawn_ingest`] with `INLET__…` overrides.
pub async fn spawn_ingest_with(extra: &str, overrides: &[(&str, &str)]) -> TestIngest {
    let nats = TestNats::start();
    start(test_config(&nats, extra, overrides), nats).await
}

/// The test config for `nats` plus `extra`, with `INLET__…` `overrides` (for keys the defaults
/// already set, e.g. `INLET__INGEST__PUBLISH_TIMEOUT`).
pub fn test_config(nats: &TestNats, extra: &str, overrides: &[(&str, &str)]) -> Config {
    let env: BTreeMap<String, String> = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Config::parse(&config_text(&nats.url(), extra), &env).expect("test config")
}

pub async fn start(config: Config, nats: TestNats) -> TestIngest {
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = public.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(inlet_ingest::run(config, inlet_ingest::Listeners { public, admin }, shutdown.clone()));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let ingest = TestIngest { addr, admin_addr, nats, client, shutdown, task: Some(task) };
    ingest.wait_ready().await;
    ingest
}

impl TestIngest {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until `/readyz` answers 200 (the server connects to NATS before serving).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "ingest not ready in time:\n{}", self.nats.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs `body` with `headers` to `/webhooks/{source}`.
    pub async fn post(&self, source: &str, headers: &[(String, String)], body: &[u8]) -> reqwest::Response {
        let mut request = self.client.post(self.url(&format!("/webhooks/{source}"))).body(body.to_vec());
        request = request.header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await.unwrap()
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(async_nats::connect(self.nats.url()).await.unwrap())
    }

    /// Messages in the stream now.
    pub async fn stream_messages(&self) -> u64 {
        let js = self.jetstream().await;
        let mut stream = js.get_stream(STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// The stored message at `sequence`.
    pub async fn message(&self, sequence: u64) -> jetstream::message::StreamMessage {
        let js = self.jetstream().await;
        let stream = js.get_stream(STREAM).await.unwrap();
        stream.get_raw_message(sequence).await.unwrap()
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client.get(format!("http://{}/metrics", self.admin_addr)).send().await.unwrap().text().await.unwrap()
    }

    /// Value of the sample of `name` whose labels include all of `labels` (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics().await;
        inlet_shared::test_util::metric_sample(&text, name, labels)
    }

    /// Cancels the shutdown token and waits for `run` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for TestIngest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The header value of a stored message, as a string.
pub fn header(message: &jetstream::message::StreamMessage, name: &str) -> Option<String> {
    message.headers.get(name).map(|v| v.as_str().to_owned())
}
