//! HTTPS on the worker's main listener (`[worker.tls]`): health, readiness and the GraphQL API
//! over HTTPS with HTTP/2 by ALPN to a client that trusts only the test's CA, a replaced
//! certificate served to new connections, and unusable files refused at startup naming the key.

use std::time::Duration;

use inlet_shared::test_util::tls::{Issued, TestCa};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::operator_support::{OperatorPipeline, Options, WorkerTls};

/// The certificate the server presented on the connection that carried `response`.
fn served(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().expect("an HTTPS response has TLS info");
    info.peer_certificate().expect("the server presents a certificate").to_vec()
}

#[tokio::test]
async fn health_and_the_api_are_served_over_https_and_a_replaced_certificate_is_taken() {
    let certificates = tempfile::tempdir().unwrap();
    let ca = TestCa::new("worker test CA");
    let (first, second) = (ca.issue(&[], 1, 2040), ca.issue(&["renewed.inlet.test"], 2, 2041));
    // As a Kubernetes secret volume lays them out: `live` is a symlink to the current version's
    // directory, swapped at once for a new one.
    let (v1, v2, live) =
        (certificates.path().join("v1"), certificates.path().join("v2"), certificates.path().join("live"));
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    first.write_to(&v1);
    second.write_to(&v2);
    std::os::unix::fs::symlink(&v1, &live).unwrap();
    let (cert_file, key_file) = (live.join("server.crt"), live.join("server.key"));
    let tls = WorkerTls { cert_file: cert_file.clone(), key_file, ca_pem: ca.pem() };
    let pipeline = OperatorPipeline::start(&[], Options { tls: Some(tls), ..Options::default() }).await;
    assert!(pipeline.url("/").starts_with("https://"));

    for path in ["/healthz", "/readyz"] {
        let response = pipeline.client.get(pipeline.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "{path}: ALPN did not negotiate HTTP/2");
        assert_eq!(served(&response), first.cert_der);
    }
    let data = pipeline.gql("{ me { role } }", json!({})).await;
    assert_eq!(data["me"]["role"], "ADMIN", "{data}");

    // The certificate is checked: a client trusting only the system's roots refuses it.
    let system_roots =
        reqwest::Client::builder().resolve(inlet_shared::test_util::tls::SERVER_NAME, pipeline.worker).build().unwrap();
    assert!(system_roots.get(pipeline.url("/healthz")).send().await.is_err());

    // Replaced: the symlink swapped to the new version; new connections (a new client each) get
    // the new certificate.
    let swapping = certificates.path().join("live.new");
    std::os::unix::fs::symlink(&v2, &swapping).unwrap();
    std::fs::rename(&swapping, &live).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
            .tls_info(true)
            .resolve(inlet_shared::test_util::tls::SERVER_NAME, pipeline.worker)
            .build()
            .unwrap();
        let response = client.get(pipeline.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        if served(&response) == second.cert_der {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker never served the replaced certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The expiry gauge follows the certificate in use; the scrape passes promtool.
    let text = reqwest::get(format!("http://{}/metrics", pipeline.worker_admin)).await.unwrap().text().await.unwrap();
    let label = cert_file.display().to_string();
    let labels = [("cert_file", label.as_str())];
    let expiry =
        inlet_shared::test_util::metric_sample(&text, inlet_worker::metric_names::TLS_CERTIFICATE_EXPIRY, &labels);
    assert_eq!(expiry, Issued::not_after_unix_secs(2041), "{text}");
    let findings = inlet_shared::test_util::promtool_findings(&text);
    assert!(findings.is_empty(), "promtool check metrics:\n{findings}");
}

/// A certificate file that cannot be used stops the worker before it opens its store, naming
/// the key.
#[tokio::test]
async fn unusable_certificate_files_stop_the_worker_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("worker test CA");
    let (first, other) = (ca.issue(&[], 1, 2040), ca.issue(&[], 2, 2040));
    let (cert_file, _) = first.write_to(dir.path());
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    for (cert, key, expected_key, expected) in [
        (dir.path().join("missing.crt"), other_key.clone(), "`worker.tls.cert_file`", "cannot read"),
        (cert_file.clone(), other_key.clone(), "`worker.tls.key_file`", "is not the key of the certificate"),
    ] {
        let text = format!(
            "[worker]\ndatabase = \"{}\"\n[worker.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.path().join("inlet.db").display(),
            cert.display(),
            key.display()
        );
        let config = inlet_shared::config::Config::parse(&text, &Default::default()).unwrap();
        let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // No NATS and no store: the certificate is checked first.
        let error = tokio::time::timeout(
            Duration::from_secs(30),
            inlet_worker::run(config, inlet_worker::Listeners { main, admin }, CancellationToken::new()),
        )
        .await
        .expect("the worker did not stop at once")
        .expect_err("the worker started with an unusable certificate");
        let message = format!("{error:#}");
        assert!(message.contains(expected_key) && message.contains(expected), "{message}");
        assert!(error.downcast_ref::<inlet_shared::config::ConfigError>().is_some(), "exits 64: {message}");
        assert!(!dir.path().join("inlet.db").exists(), "the store was opened before the certificate was checked");
    }
}

/// The store over TLS: with `sslmode=verify-full` and the CA of PostgreSQL's certificate in
/// `store.ca_file` the worker starts and is ready; with another CA it stops at startup, naming
/// `store.ca_file`.
#[tokio::test]
async fn the_worker_reaches_postgresql_over_verified_tls_and_refuses_a_wrong_ca() {
    let (ca, wrong) = (TestCa::new("PostgreSQL test CA"), TestCa::new("another CA"));
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, wrong_file) = (dir.path().join("ca.pem"), dir.path().join("wrong.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&wrong_file, wrong.pem()).unwrap();
    let certificate = ca.issue(&["127.0.0.1"], 3, 2040);
    let server =
        tokio::task::spawn_blocking(move || inlet_shared::test_util::TestPostgres::start_with_tls(&certificate))
            .await
            .unwrap();
    let nats = inlet_shared::test_util::TestNats::start();
    let config = |ca: &std::path::Path| {
        let text = format!(
            "[nats]\nurl = \"{}\"\nstartup_timeout = \"10s\"\n\
             [store]\nbackend = \"postgres\"\nurl = \"{}?sslmode=verify-full\"\nca_file = \"{}\"\npool_size = 4\n",
            nats.url(),
            server.url(),
            ca.display()
        );
        inlet_shared::config::Config::parse(&text, &Default::default()).unwrap()
    };

    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        inlet_worker::run(config(&wrong_file), inlet_worker::Listeners { main, admin }, CancellationToken::new()),
    )
    .await
    .expect("the worker did not stop")
    .expect_err("the worker started trusting a CA that did not sign PostgreSQL's certificate");
    let message = format!("{error:#}");
    assert!(message.contains("store.ca_file") && message.contains("certificate was refused"), "{message}");

    let stop = CancellationToken::new();
    let addrs = crate::support::start_worker(config(&ca_file), &stop).await;
    crate::support::wait_ok(&reqwest::Client::new(), &format!("http://{}/readyz", addrs.main)).await;
    stop.cancel();
}
