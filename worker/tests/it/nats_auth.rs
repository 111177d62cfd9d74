//! Ingest and workers on a NATS server that requires credentials and TLS, with the accounts and
//! per-service permission sets of `deploy/nats/` (the files themselves): every event delivered,
//! and the server refused nothing either service needs.
//!
//! One test runs `deploy/nats/accounts.conf` as compose does (passwords from the environment),
//! two workers sharing PostgreSQL as in compose (so placement, its key-value bucket and the
//! wake-ups are used too), over TLS with a CA the test makes; the other authenticates with
//! NKeys (a seed file, a seed from the config) over mutual TLS.

use std::collections::BTreeMap;
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::test_util::secure::{INGEST_PERMISSIONS, ServerTls, WORKER_PERMISSIONS, random_secret};
use inlet_shared::test_util::{NatsUser, TestNats, TestPki};
use tokio_util::sync::CancellationToken;

use crate::operator_support::ADMIN_TOKEN;
use crate::support::{
    Backend, TestDestination, TestStore, config_text, send_github, send_github_signed_with, start_ingest, start_worker,
    wait_ok,
};

const ROTATED: &str = "gh-secret-rotated";

/// Prints the server's log when the test fails (what it refused, and why).
struct LogOnFailure<'a>(&'a TestNats);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("nats-server log:\n{}", self.0.log());
        }
    }
}

/// `text` (from [`config_text`]) with `keys` added to its `[nats]` section.
fn with_nats_keys(text: &str, keys: &str) -> Config {
    let text = text.replacen("[nats]\n", &format!("[nats]\n{keys}"), 1);
    Config::parse(&text, &BTreeMap::new()).unwrap()
}

/// Sends `count` events through ingest, the last with a body over the claim-check threshold (so
/// ingest writes it to the bodies bucket and the worker reads it from there), and waits until
/// the destination got each one once, that one byte for byte; then checks that the server
/// refused no operation of either service.
async fn events_flow(
    nats: &TestNats,
    store: &TestStore,
    ingest: std::net::SocketAddr,
    destination: &TestDestination,
    count: usize,
) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for n in 0..count - 1 {
        let status = send_github(&client, ingest, &format!("delivery-{n}"), "push", b"{\"n\":1}").await;
        assert_eq!(status, 202, "event {n}");
    }
    // Over the default threshold (983,040 bytes), within the default limit (1,000,000).
    let large: Vec<u8> = (0..999_000u32).map(|n| b'a' + (n % 26) as u8).collect();
    let status = send_github(&client, ingest, "delivery-large", "push", &large).await;
    assert_eq!(status, 202, "the claim-checked event");
    if !destination.reached(count, Duration::from_secs(30)).await {
        let events = store.scalar_i64("SELECT count(*) FROM events").await;
        let deliveries = store
            .rows("SELECT status, attempts, lease_until_ms, next_attempt_at_ms FROM deliveries ORDER BY rowid")
            .await;
        panic!("{} of {count} delivered; {events} events recorded; deliveries: {deliveries:?}", destination.count());
    }
    assert_eq!(destination.delivered_keys().len(), count, "each event delivered");
    assert!(destination.received().iter().any(|received| received.body == large), "the large body, byte for byte");
    let log = nats.log();
    let refused: Vec<&str> = log.lines().filter(|line| line.contains("Violation")).collect();
    // Ingest's user may not set up the stream nor the bodies bucket: started before a worker
    // had, it tried, was refused, and waited for the worker to.
    let expected = |stream: &str| {
        format!("- \"INLET/user:inlet-ingest\" - Publish Violation - Subject \"$JS.API.STREAM.UPDATE.{stream}\"")
    };
    assert!(
        refused.iter().all(|line| line.ends_with(&expected("INLET")) || line.ends_with(&expected("OBJ_INLET_BODIES"))),
        "the server refused an operation Inlet needs:\n{}",
        refused.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_and_two_workers_run_on_the_compose_accounts_and_permissions_over_tls() {
    let pki = TestPki::new();
    let (ingest_password, worker_password, sys_password) = (random_secret(), random_secret(), random_secret());
    let nats = TestNats::start_with_deploy_accounts(
        &[
            ("INLET_NATS_INGEST_PASSWORD", &ingest_password),
            ("INLET_NATS_WORKER_PASSWORD", &worker_password),
            ("INLET_NATS_SYS_PASSWORD", &sys_password),
        ],
        &pki,
        ServerTls::Required,
    );
    let _log = LogOnFailure(&nats);
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| TestStore::start_on(Backend::Postgres, dir.path()));
    let destination = TestDestination::answering(200).await;
    let text = config_text(&nats.url(), &store, &[("orders", destination.url(), "")]);
    let tls = pki.config_keys(false);
    let text = format!("{text}\n[console]\nbootstrap_token = \"{ADMIN_TOKEN}\"\n");
    let ingest_config =
        with_nats_keys(&text, &format!("user = \"inlet-ingest\"\npassword = \"{ingest_password}\"\n{tls}"));
    let mut worker_config =
        with_nats_keys(&text, &format!("user = \"inlet-worker\"\npassword = \"{worker_password}\"\n{tls}"));
    // The workers know a secret ingest does not: what a rejected request is admitted with.
    worker_config.sources[0].secrets.push(inlet_shared::config::Secret::new(ROTATED));

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    // Ingest first: its user may not create the stream, so it waits for a worker to.
    let ingest = start_ingest(ingest_config, &stop).await.public;
    let workers = [start_worker(worker_config.clone(), &stop).await, start_worker(worker_config, &stop).await];
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;
    for worker in &workers {
        wait_ok(&client, &format!("http://{}/readyz", worker.main)).await;
    }
    events_flow(&nats, &store, ingest, &destination, 20).await;
    // A request ingest refuses is kept in the quarantine (ingest writes it, a worker created
    // it), listed, and admitted by a worker into the intake stream: each with its own user.
    let status = send_github_signed_with(&client, ingest, ROTATED, "delivery-rotated", "push", b"{\"n\":1}").await;
    assert_eq!(status.unwrap(), 401);
    let gql = async |query: &str| -> serde_json::Value {
        let answer = client
            .post(format!("http://{}/graphql", workers[0].main))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "query": query }))
            .send()
            .await
            .unwrap();
        answer.json().await.unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gql("{ rejectedRequests(source: \"gh\") { nodes { id } } }").await["data"]["rejectedRequests"]["nodes"]
        .as_array()
        .is_none_or(|nodes| nodes.is_empty())
    {
        assert!(tokio::time::Instant::now() < deadline, "never kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admitted = gql("mutation { admitRejected(source: \"gh\") { admitted } }").await;
    assert_eq!(admitted["data"]["admitRejected"]["admitted"], 1, "{admitted}");
    assert!(destination.reached(21, Duration::from_secs(30)).await, "the admitted one delivered too");
    let log = nats.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| {
            line.contains("Violation")
                && !line.contains("STREAM.UPDATE.INLET\"")
                && !line.contains("STREAM.UPDATE.OBJ_INLET_BODIES\"")
        })
        .collect();
    assert!(refused.is_empty(), "the server refused an operation of the quarantine:\n{}", refused.join("\n"));
}

#[tokio::test]
async fn ingest_and_a_worker_run_with_nkeys_over_mutual_tls() {
    let pki = TestPki::new();
    let ingest_user = NatsUser::nkey(Some(INGEST_PERMISSIONS));
    let worker_user = NatsUser::nkey(Some(WORKER_PERMISSIONS));
    let nats = TestNats::start_secured(&[&ingest_user, &worker_user], &random_secret(), &pki, ServerTls::Mutual);
    let _log = LogOnFailure(&nats);
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::start_on(Backend::Sqlite, dir.path());
    let destination = TestDestination::answering(200).await;
    let text = config_text(&nats.url(), &store, &[("orders", destination.url(), "")]);
    let tls = pki.config_keys(true);
    let ingest_config = with_nats_keys(&text, &format!("{}{tls}", ingest_user.seed_file_key(dir.path())));
    let worker_config = with_nats_keys(&text, &format!("{}{tls}", worker_user.config_keys()));

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let worker = start_worker(worker_config, &stop).await;
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("http://{}/readyz", worker.main)).await;
    // The worker set the stream up: ingest finds it as configured, and asks for nothing more.
    let ingest = start_ingest(ingest_config, &stop).await.public;
    wait_ok(&client, &format!("http://{ingest}/readyz")).await;
    events_flow(&nats, &store, ingest, &destination, 5).await;
}
