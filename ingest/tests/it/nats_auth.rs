//! NATS credentials, permissions and TLS, against a real nats-server configured like the compose
//! cluster (`deploy/nats/`): the real `inlet-ingest` binary fails at startup, at once and with a
//! message naming the URL, the cause and the keys to check, when the server refuses its
//! credentials (a password, a token, an NKey) or TLS fails, never showing a secret; a user
//! without permission to publish into the quarantine (a worker's) cannot forge a request there,
//! ingest's cannot read the intake stream; and ingest's own permissions are enough for its store
//! probe and the quarantine.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use inlet_shared::config::{Config, NatsConfig, StreamConfig};
use inlet_shared::test_util::secure::{INGEST_PERMISSIONS, ServerTls, WORKER_PERMISSIONS, random_secret};
use inlet_shared::test_util::{NatsUser, TestNats, TestPki};

use crate::support::STREAM;

/// How `inlet-ingest` ended: its exit code and what it printed on stderr.
struct Exit {
    code: Option<i32>,
    stderr: String,
}

/// Runs the `inlet-ingest` binary with `nats_keys` in its `[nats]` section against `url`, and
/// waits for it to exit. Its startup timeout is two minutes unless `nats_keys` sets one: exiting
/// within the 20 s this waits means it did not retry a refusal until then.
async fn ingest_exit(url: &str, nats_keys: &str) -> Exit {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inlet.toml");
    let timeout = if nats_keys.contains("startup_timeout") { "" } else { "startup_timeout = \"120s\"\n" };
    let config = format!(
        "[nats]\nurl = \"{url}\"\n{timeout}{nats_keys}\
         [ingest]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[sources]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"gh-secret\"]\n"
    );
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_inlet-ingest"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output =
        tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(|| child.wait_with_output()));
    let Ok(output) = output.await else {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("inlet-ingest kept retrying a refusal instead of failing at startup");
    };
    let output = output.unwrap().unwrap();
    Exit { code: output.status.code(), stderr: String::from_utf8_lossy(&output.stderr).into_owned() }
}

#[tokio::test]
async fn wrong_or_missing_credentials_fail_at_startup_naming_the_url_and_the_keys_to_check() {
    let pki = TestPki::new();
    let ingest = NatsUser::password("inlet-ingest", Some(INGEST_PERMISSIONS));
    let worker = NatsUser::nkey(Some(WORKER_PERMISSIONS));
    let nats = TestNats::start_secured(&[&ingest, &worker], &random_secret(), &pki, ServerTls::Off);
    let url = nats.url();

    let wrong = random_secret();
    let exit = ingest_exit(&url, &format!("user = \"inlet-ingest\"\npassword = \"{wrong}\"\n")).await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains(&format!("nats: authorization violation at {url} — check nats.user and nats.password")),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains(&wrong), "the password is never shown: {}", exit.stderr);

    let exit = ingest_exit(&url, "").await;
    assert!(
        exit.stderr.contains(&format!("nats: authorization violation at {url} — the server requires credentials")),
        "{}",
        exit.stderr
    );

    // An NKey the server does not know; its seed is never shown either.
    let stranger = NatsUser::nkey(None);
    let exit = ingest_exit(&url, &stranger.seed_file_key(pki.ca_file().parent().unwrap())).await;
    assert!(
        exit.stderr.contains(&format!("nats: authorization violation at {url} — check nats.nkey_seed_file")),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains(stranger.secret()), "{}", exit.stderr);

    // A file that cannot be used is invalid configuration (exit 64), named by its key.
    let exit = ingest_exit(&url, "creds_file = \"/nonexistent/inlet.creds\"\n").await;
    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("config key `nats.creds_file`: cannot read /nonexistent/inlet.creds"),
        "{}",
        exit.stderr
    );

    assert!(nats.log().contains("authentication error"), "the server saw the refusals");

    // The right credentials, but no worker set the stream up, and ingest's user may not: it
    // waits for one until its startup timeout, then says so.
    let exit = ingest_exit(&url, &format!("{}startup_timeout = \"3s\"\n", ingest.config_keys())).await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("stream INLET is missing or differs from [stream], and creating or updating it got no answer within 3s: if a permissions violation was logged, this user may not"),
        "{}",
        exit.stderr
    );
}

#[tokio::test]
async fn a_token_authenticates_and_a_wrong_one_is_refused_naming_its_key() {
    let token = random_secret();
    let nats = TestNats::start_with_config(Some(&format!("authorization {{ token: \"{token}\" }}\n")));
    let with_token = |token: &str| {
        let text = format!("[nats]\nurl = \"{}\"\ntoken = \"{token}\"\n", nats.url());
        Config::parse(&text, &BTreeMap::new()).unwrap().nats
    };
    let client = inlet_shared::nats::connect(&with_token(&token), "test").await.unwrap();
    client.flush().await.unwrap();
    let wrong = random_secret();
    let error = inlet_shared::nats::connect(&with_token(&wrong), "test").await.unwrap_err().to_string();
    assert_eq!(error, format!("nats: authorization violation at {} — check nats.token", nats.url()));
}

#[tokio::test]
async fn tls_failures_fail_at_startup_naming_the_cause_and_the_keys_to_check() {
    let pki = TestPki::new();
    let ingest = NatsUser::password("inlet-ingest", Some(INGEST_PERMISSIONS));
    let nats = TestNats::start_secured(&[&ingest], &random_secret(), &pki, ServerTls::Mutual);
    let url = nats.url();
    let credentials = ingest.config_keys();

    // A CA that did not sign the server's certificate.
    let other_ca = format!("tls_ca_file = {:?}\n", pki.other_ca_file());
    let exit = ingest_exit(&url, &format!("{credentials}{other_ca}")).await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(exit.stderr.contains(&format!("nats: TLS failure at {url}: invalid peer certificate")), "{}", exit.stderr);
    assert!(exit.stderr.contains("check nats.tls_ca_file"), "{}", exit.stderr);

    // The right CA, but no client certificate for a server that verifies clients.
    let exit = ingest_exit(&url, &format!("{credentials}{}", pki.config_keys(false))).await;
    assert!(exit.stderr.contains(&format!("nats: TLS failure at {url}")), "{}", exit.stderr);
    assert!(exit.stderr.contains("check nats.tls_cert_file and nats.tls_key_file"), "{}", exit.stderr);

    // A client that requires TLS, and a server without it.
    let plain = TestNats::start_secured(&[&ingest], &random_secret(), &pki, ServerTls::Off);
    let exit = ingest_exit(&plain.url(), &format!("{credentials}{}", pki.config_keys(false))).await;
    assert!(exit.stderr.contains(&format!("nats: TLS failure at {}", plain.url())), "{}", exit.stderr);

    // A client certificate file without a certificate in it: invalid configuration.
    let not_pem = format!("tls_cert_file = {:?}\ntls_key_file = {:?}\n", pki.client_key_file(), pki.client_key_file());
    let exit = ingest_exit(&url, &format!("{credentials}{}{not_pem}", pki.config_keys(false))).await;
    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    assert!(exit.stderr.contains("config key `nats.tls_cert_file`"), "{}", exit.stderr);
}

/// A client connected with `options`, and the server errors it is told about (permissions
/// violations), in order.
async fn client_with_errors(
    options: async_nats::ConnectOptions,
    url: String,
) -> (async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (errors, received) = tokio::sync::mpsc::unbounded_channel();
    let client = options
        .event_callback(move |event| {
            if let async_nats::Event::ServerError(error) = event {
                let _ = errors.send(error.to_string());
            }
            std::future::ready(())
        })
        .connect(url)
        .await
        .unwrap();
    (client, received)
}

/// Publishes one message on `subject` and waits for the server to say it refused it.
async fn publish_refused(
    client: &async_nats::Client,
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    subject: &str,
) -> Result<(), Vec<String>> {
    client.publish(subject.to_owned(), "forged".into()).await.unwrap();
    let expected = format!("Permissions Violation for Publish to \"{subject}\"");
    let mut seen = Vec::new();
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(error) = errors.recv().await {
            if error.contains(&expected) {
                return;
            }
            seen.push(error);
        }
    });
    refused.await.map_err(|_| seen)
}

#[tokio::test]
async fn a_user_without_permission_cannot_forge_quarantined_requests_or_read_the_intake_stream() {
    let DeployAccounts { nats, ingest_password, worker_password } = DeployAccounts::start();
    // The users of deploy/nats/accounts.conf.
    let as_user = |name: &str, password: &str| {
        let text = format!("[nats]\nurl = \"{}\"\nuser = \"{name}\"\npassword = \"{password}\"\n", nats.url());
        Config::parse(&text, &BTreeMap::new()).unwrap().nats
    };
    let (ingest, worker): (NatsConfig, NatsConfig) =
        (as_user("inlet-ingest", &ingest_password), as_user("inlet-worker", &worker_password));
    // The worker's user sets up the stream, as a worker does.
    let worker_client = inlet_shared::nats::connect(&worker, "test-worker").await.unwrap();
    let stream = StreamConfig::default();
    inlet_shared::nats::ensure_stream(&jetstream::new(worker_client.clone()), &stream, Duration::from_secs(10))
        .await
        .unwrap();
    let subject = stream.subject_for("gh");

    // Since admission (an admin admits a quarantined request that verifies now), the worker's
    // user may publish events: a change of promise, and no new power (a worker signs deliveries
    // with the destinations' secrets itself). It still may not write the quarantine, whose
    // requests ingest alone answered: no forged evidence (nor with JetStream: no PubAck).
    let worker_login =
        async_nats::ConnectOptions::with_user_and_password("inlet-worker".into(), worker_password.clone());
    let (forger, mut errors) = client_with_errors(worker_login, nats.url()).await;
    let evidence = stream.quarantine_subject("gh", inlet_shared::config::QuarantineSlot::First);
    publish_refused(&forger, &mut errors, &evidence).await.expect("the server refuses the worker's publish");
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(1)).build(forger.clone());
    assert!(js.publish(evidence.clone(), "forged".into()).await.unwrap().await.is_err(), "no PubAck");

    // Ingest's user may not read the stream: it cannot create a consumer.
    let ingest_login =
        async_nats::ConnectOptions::with_user_and_password("inlet-ingest".into(), ingest_password.clone());
    let (reader, mut errors) = client_with_errors(ingest_login, nats.url()).await;
    let create = format!("$JS.API.CONSUMER.CREATE.{STREAM}");
    publish_refused(&reader, &mut errors, &create).await.expect("the server refuses ingest a consumer");

    let info = jetstream::new(worker_client.clone()).get_stream(STREAM).await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.state.messages, 0, "nothing landed in the intake stream");

    // Ingest's user may (the check above could fail): one event stored.
    let ingest_client = inlet_shared::nats::connect(&ingest, "test-ingest").await.unwrap();
    let ack = jetstream::new(ingest_client.clone()).publish(subject.clone(), "genuine".into()).await.unwrap().await;
    assert!(ack.is_ok(), "{ack:?}");
    let info = jetstream::new(worker_client).get_stream(STREAM).await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.state.messages, 1);
}

/// The users of `deploy/nats/accounts.conf` and their passwords, on a server running it.
struct DeployAccounts {
    nats: TestNats,
    ingest_password: String,
    worker_password: String,
}

impl DeployAccounts {
    fn start() -> DeployAccounts {
        let (ingest_password, worker_password) = (random_secret(), random_secret());
        let nats = TestNats::start_with_deploy_accounts(
            &[
                ("INLET_NATS_INGEST_PASSWORD", &ingest_password),
                ("INLET_NATS_WORKER_PASSWORD", &worker_password),
                ("INLET_NATS_SYS_PASSWORD", &random_secret()),
            ],
            &TestPki::new(),
            ServerTls::Off,
        );
        DeployAccounts { nats, ingest_password, worker_password }
    }
}

#[tokio::test]
async fn with_only_its_own_permissions_ingest_sees_a_full_stream_and_its_probe_brings_readiness_back() {
    let accounts = DeployAccounts::start();
    let overrides = [
        ("INLET__NATS__USER", "inlet-ingest"),
        ("INLET__NATS__PASSWORD", accounts.ingest_password.as_str()),
        ("INLET__STREAM__MAX_BYTES", "80000"),
        // Events leave the stream after 10 s: space returns without anyone purging.
        ("INLET__STREAM__MAX_AGE", "10s"),
        ("INLET__STREAM__DUPLICATE_WINDOW", "1s"),
        ("INLET__INGEST__MAX_BODY_BYTES", "4096"),
    ];
    let source = "[[sources]]\nname = \"full\"\nkind = \"github\"\nsecrets = [\"s3cr3t\"]\nmax_body_bytes = 4096\n";
    let config = crate::support::test_config(&accounts.nats, source, &overrides);
    // A worker's user sets the stream up; ingest's may not.
    let mut worker = config.nats.clone();
    (worker.user, worker.password) =
        (Some("inlet-worker".into()), Some(inlet_shared::config::Secret::new(accounts.worker_password.clone())));
    let worker = inlet_shared::nats::connect(&worker, "test-worker").await.unwrap();
    inlet_shared::nats::ensure_stream(&jetstream::new(worker), &config.stream, Duration::from_secs(10)).await.unwrap();
    let ingest = crate::support::start(config, accounts.nats).await;

    let mut refused = None;
    for n in 0..200 {
        let body = format!("{{\"id\":\"{n}\",\"pad\":\"{}\"}}", "x".repeat(3000)).into_bytes();
        let headers = inlet_shared::signature::sign::github("s3cr3t", &format!("fill-{n}"), "push", &body);
        let response = ingest.post("full", &headers, &body).await;
        if response.status() != 202 {
            refused = Some(response.status().as_u16());
            break;
        }
    }
    assert_eq!(refused, Some(503), "the stream filled up");
    let readiness = || async { ingest.client.get(ingest.url("/readyz")).send().await.unwrap().status().as_u16() };
    assert_eq!(readiness().await, 503);
    // No request comes: only the probe (stream info, account info, a purge of a subject no event
    // uses: everything ingest's user may do) can see the space return.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while readiness().await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "readiness never came back:\n{}", ingest.nats.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ingest.nats.log().contains("Violation"), "{}", ingest.nats.log());
}

#[tokio::test]
async fn with_only_its_own_permissions_ingest_keeps_failed_requests_in_the_quarantine() {
    let accounts = DeployAccounts::start();
    let overrides =
        [("INLET__NATS__USER", "inlet-ingest"), ("INLET__NATS__PASSWORD", accounts.ingest_password.as_str())];
    let source = "[[sources]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"s3cr3t\"]\n";
    let config = crate::support::test_config(&accounts.nats, source, &overrides);
    let mut worker = config.nats.clone();
    (worker.user, worker.password) =
        (Some("inlet-worker".into()), Some(inlet_shared::config::Secret::new(accounts.worker_password.clone())));
    let worker = jetstream::new(inlet_shared::nats::connect(&worker, "test-worker").await.unwrap());
    inlet_shared::nats::ensure_stream(&worker, &config.stream, Duration::from_secs(10)).await.unwrap();
    // And the bodies bucket (a github source takes 25 MiB bodies: ingest opens it).
    inlet_shared::claim_check::ensure_bucket(&worker, &config.stream, Duration::from_secs(10)).await.unwrap();
    inlet_shared::nats::ensure_quarantine_stream(&worker, &config.stream, &config.quarantine, Duration::from_secs(10))
        .await
        .unwrap();
    let ingest = crate::support::start(config, accounts.nats).await;

    let body = br#"{"zen":"x"}"#;
    let headers = inlet_shared::signature::sign::github("rotated", "d-1", "push", body);
    assert_eq!(ingest.post("gh", &headers, body).await.status(), 401);
    let labels = [("source", "gh"), ("slot", "first"), ("outcome", "kept")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ingest.metric("inlet_ingest_quarantine_total", &labels).await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "not kept:\n{}", ingest.nats.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut quarantine = worker.get_stream("INLET_QUARANTINE").await.unwrap();
    assert_eq!(quarantine.info().await.unwrap().state.messages, 1);
    assert!(!ingest.nats.log().contains("Violation"), "{}", ingest.nats.log());
}
