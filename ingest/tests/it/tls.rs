//! HTTPS on the public listener (`[ingest.tls]`), with certificates the test makes (rcgen) and
//! clients that trust only the test's CA: signed webhooks accepted end to end, HTTP/2 by ALPN,
//! the certificate reloaded for new connections while open ones keep theirs, unusable new files
//! ignored (counted), handshakes bounded by the header timeout, and unusable files refused at
//! startup naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inlet_shared::signature::sign;
use inlet_shared::test_util::TestNats;
use inlet_shared::test_util::tls::{Issued, SERVER_NAME, TestCa, replace_file};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::{STREAM, now, test_config};

const SECRET: &str = "whsec_test_secret";

/// `inlet-ingest` in this process serving HTTPS with the certificate in `dir`.
struct TlsIngest {
    addr: SocketAddr,
    admin: SocketAddr,
    nats: TestNats,
    ca: TestCa,
    cert_file: PathBuf,
    stop: CancellationToken,
}

impl TlsIngest {
    /// Starts it with `first` as its certificate and `ingest` keys (besides the TLS table), and
    /// waits until `/readyz` answers 200 over HTTPS.
    async fn start(dir: &Path, ca: TestCa, first: &Issued, ingest: &[(&str, &str)]) -> TlsIngest {
        let (cert_file, key_file) = first.write_to(dir);
        let nats = TestNats::start();
        let extra = format!(
            "[ingest.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval = \"100ms\"\n\
             [[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nsecrets = [\"{SECRET}\"]\n",
            cert_file.display(),
            key_file.display()
        );
        let config = test_config(&nats, &extra, ingest);
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(inlet_ingest::run(config, inlet_ingest::Listeners { public, admin }, stop.clone()));
        let ingest = TlsIngest { addr, admin: admin_addr, nats, ca, cert_file, stop };
        let client = ingest.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = client.get(ingest.url("/readyz")).send().await
                && response.status() == 200
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "ingest not ready over HTTPS:\n{}", ingest.nats.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ingest
    }

    fn url(&self, path: &str) -> String {
        format!("https://{SERVER_NAME}:{}{path}", self.addr.port())
    }

    /// A client that trusts only the test's CA and reports the certificate it was served. Its
    /// connections are its own: a new client makes a new connection (and handshake).
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap()])
            .tls_info(true)
            .resolve(SERVER_NAME, self.addr)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// `GET path` on a new connection.
    async fn get_fresh(&self, path: &str) -> reqwest::Response {
        self.client().get(self.url(path)).send().await.unwrap()
    }

    /// POSTs a correctly signed Stripe event with `client`.
    async fn post_signed(&self, client: &reqwest::Client, event: &str) -> reqwest::Response {
        let body = format!("{{\"id\":\"{event}\",\"type\":\"tls.test\"}}");
        let mut request = client.post(self.url("/webhooks/stripe")).body(body.clone());
        for (name, value) in sign::stripe(SECRET, now(), body.as_bytes()) {
            request = request.header(name, value);
        }
        request.send().await.unwrap()
    }

    /// `(reload failures, certificate expiry)` for this listener's certificate file.
    async fn tls_metrics(&self) -> (f64, f64) {
        let text = reqwest::get(format!("http://{}/metrics", self.admin)).await.unwrap().text().await.unwrap();
        let label = self.cert_file.display().to_string();
        let labels = [("cert_file", label.as_str())];
        (
            inlet_shared::test_util::metric_sample(&text, inlet_ingest::metric_names::TLS_RELOAD_FAILURES, &labels),
            inlet_shared::test_util::metric_sample(&text, inlet_ingest::metric_names::TLS_CERTIFICATE_EXPIRY, &labels),
        )
    }
}

impl Drop for TlsIngest {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The certificate the server presented on the connection that carried `response`.
fn served(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().expect("an HTTPS response has TLS info");
    info.peer_certificate().expect("the server presents a certificate").to_vec()
}

/// Polls until `condition` holds, failing after a deadline far beyond what it should take.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn signed_webhooks_are_accepted_over_https_with_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ingest test CA");
    let first = ca.issue(&[], 1, 2040);
    let ingest = TlsIngest::start(dir.path(), ca, &first, &[]).await;

    // reqwest offers h2 and http/1.1 by ALPN; the server picks h2.
    let client = ingest.client();
    let accepted = ingest.post_signed(&client, "evt_tls_1").await;
    assert_eq!(accepted.version(), reqwest::Version::HTTP_2, "ALPN did not negotiate HTTP/2");
    assert_eq!(served(&accepted), first.cert_der);
    assert_eq!(accepted.status(), 202, "{}", accepted.text().await.unwrap());
    let js = jetstream(&ingest.nats).await;
    assert_eq!(
        js.get_stream(STREAM).await.unwrap().info().await.unwrap().state.messages,
        1,
        "the event is in the stream"
    );

    // A client that offers only http/1.1 gets it (the provider's retry is a duplicate).
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ingest.ca.pem().as_bytes()).unwrap()])
        .resolve(SERVER_NAME, ingest.addr)
        .http1_only()
        .build()
        .unwrap();
    let retry = ingest.post_signed(&http1, "evt_tls_1").await;
    assert_eq!(retry.version(), reqwest::Version::HTTP_11);
    assert_eq!(retry.status(), 200, "{}", retry.text().await.unwrap());
    // TLS 1.2 clients are served too (1.3 is what the clients above negotiated).
    let tls12 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ingest.ca.pem().as_bytes()).unwrap()])
        .resolve(SERVER_NAME, ingest.addr)
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(tls12.get(ingest.url("/healthz")).send().await.unwrap().status(), 200);

    // The certificate is really checked: a client trusting only the system's roots refuses it,
    // and plain HTTP is not served on the TLS port.
    let system_roots = reqwest::Client::builder().resolve(SERVER_NAME, ingest.addr).build().unwrap();
    let refused = system_roots.get(ingest.url("/healthz")).send().await;
    assert!(refused.is_err(), "a certificate from the test's own CA was trusted by the system roots");
    let plain = reqwest::get(format!("http://{}/healthz", ingest.addr)).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()), "plain HTTP was served on the TLS port");
}

/// New connections get a replaced certificate once it is complete and matches its key, while a
/// connection opened before keeps working with the one it was made with; a half-written
/// certificate and a key of another certificate are counted and leave the previous one served.
#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_while_open_ones_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ingest test CA");
    let (first, second) = (ca.issue(&[], 1, 2040), ca.issue(&["renewed.inlet.test"], 2, 2041));
    // Idle connections stay open long enough for the open one to outlive the reload.
    let ingest = TlsIngest::start(dir.path(), ca, &first, &[("INLET__INGEST__HEADER_READ_TIMEOUT", "60s")]).await;
    assert_eq!(ingest.tls_metrics().await, (0.0, Issued::not_after_unix_secs(2040)));

    let open = ingest.client();
    let before = ingest.post_signed(&open, "evt_before").await;
    assert_eq!(before.status(), 202);
    assert_eq!(served(&before), first.cert_der);

    // Half a certificate (a copy in progress), then a certificate with the old key: neither is taken.
    let (cert_file, key_file) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    replace_file(&cert_file, &second.cert_pem.as_bytes()[..second.cert_pem.len() / 2]);
    eventually("the half-written certificate counted", async || ingest.tls_metrics().await.0 == 1.0).await;
    replace_file(&cert_file, second.cert_pem.as_bytes());
    eventually("the certificate without its key counted", async || ingest.tls_metrics().await.0 == 2.0).await;
    let meanwhile = ingest.get_fresh("/healthz").await;
    assert_eq!(meanwhile.status(), 200);
    assert_eq!(served(&meanwhile), first.cert_der, "an unusable certificate replaced the one in use");

    replace_file(&key_file, second.key_pem.as_bytes());
    eventually("new connections get the new certificate", async || {
        served(&ingest.get_fresh("/healthz").await) == second.cert_der
    })
    .await;
    assert_eq!(ingest.tls_metrics().await, (2.0, Issued::not_after_unix_secs(2041)));

    // The connection opened before the reload is still open, with the certificate it was made with.
    let after = ingest.post_signed(&open, "evt_after").await;
    assert_eq!(after.status(), 202);
    assert_eq!(served(&after), first.cert_der, "the request did not travel on the connection opened before");

    let text = reqwest::get(format!("http://{}/metrics", ingest.admin)).await.unwrap().text().await.unwrap();
    let findings = inlet_shared::test_util::promtool_findings(&text);
    assert!(findings.is_empty(), "promtool check metrics:\n{findings}");
}

/// Clients that open TCP and never finish (or never start) the handshake hold their
/// `max_connections` slot for `header_read_timeout` at most: a real client behind them is served.
#[tokio::test]
async fn handshakes_that_never_finish_hold_their_slot_only_until_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ingest test CA");
    let first = ca.issue(&[], 1, 2040);
    let ingest = TlsIngest::start(dir.path(), ca, &first, &[("INLET__INGEST__MAX_CONNECTIONS", "2")]).await;

    // One says nothing, one sends the start of a ClientHello record and stops.
    let silent = TcpStream::connect(ingest.addr).await.unwrap();
    let mut partial = TcpStream::connect(ingest.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();

    let client = ingest.client();
    let response = ingest.post_signed(&client, "evt_behind_stalled").await;
    assert_eq!(response.status(), 202, "a client behind stalled handshakes was not served");

    for (what, mut stream) in [("silent", silent), ("partial", partial)] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the {what} handshake's connection was never closed");
    }
}

/// Certificate files that cannot be used stop startup with exit code 64, naming the key.
#[tokio::test]
async fn unusable_certificate_files_stop_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ingest test CA");
    let (first, other) = (ca.issue(&[], 1, 2040), ca.issue(&[], 2, 2040));
    let (cert_file, key_file) = first.write_to(dir.path());
    let run_binary = |cert: &Path, key: &Path| {
        let config = dir.path().join("inlet.toml");
        std::fs::write(
            &config,
            format!(
                "[ingest]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 [ingest.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
                 [[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nsecrets = [\"{SECRET}\"]\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        // No NATS: the certificate is checked before anything is connected.
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_inlet-ingest"))
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };

    let (code, stderr) = run_binary(&dir.path().join("missing.crt"), &key_file);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("`ingest.tls.cert_file`") && stderr.contains("cannot read"), "{stderr}");

    let mismatched = dir.path().join("other.key");
    std::fs::write(&mismatched, &other.key_pem).unwrap();
    let (code, stderr) = run_binary(&cert_file, &mismatched);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("`ingest.tls.key_file`") && stderr.contains("is not the key of the certificate"),
        "{stderr}"
    );

    let (code, stderr) = run_binary(&key_file, &key_file);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("`ingest.tls.cert_file`") && stderr.contains("holds no certificate"), "{stderr}");
}

async fn jetstream(nats: &TestNats) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap())
}
