//! The production shape's broker: a three-node JetStream cluster with `replicas = 3`. Killing
//! the node that leads the intake stream (`kill -9`) under load loses no acknowledged event and
//! delivers each exactly once; ingest and the worker keep going on the other two nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::test_util::TestNatsCluster;
use tokio_util::sync::CancellationToken;

use crate::support::{IngestAddrs, TestDestination, TestStore, config_text, send_github, start_ingest, start_worker};

/// The server name of the current leader of `stream`, once there is one.
async fn leader(js: &async_nats::jetstream::Context, stream: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut handle) = js.get_stream(stream).await
            && let Ok(info) = handle.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|cluster| cluster.leader.clone())
        {
            return leader;
        }
        assert!(tokio::time::Instant::now() < deadline, "stream {stream} has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn killing_the_stream_leader_of_a_three_node_cluster_loses_no_acknowledged_event() {
    let mut cluster = TestNatsCluster::start(3);
    let destination = TestDestination::answering(200).await;
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::start_in(dir.path());
    let text = config_text(&cluster.urls(), &store, &[("sink", destination.url(), "")])
        .replace("startup_timeout = \"10s\"", "startup_timeout = \"60s\"")
        .replace("[ingest]", "[stream]\nreplicas = 3\n[ingest]");
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();

    let stop = CancellationToken::new();
    let IngestAddrs { public: ingest, admin: ingest_admin } = start_ingest(config.clone(), &stop).await;
    let worker = start_worker(config, &stop).await.main;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    // A new cluster elects its JetStream meta leader first; the services wait for it.
    for url in [format!("http://{ingest}/readyz"), format!("http://{worker}/readyz")] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !client.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(tokio::time::Instant::now() < deadline, "{url} not ready in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let nats = async_nats::connect(cluster.urls().split(',').map(str::to_owned).collect::<Vec<_>>()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let info = js.get_stream("INLET").await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3, "the intake stream is replicated on all three nodes");

    // Eight senders, each retrying a non-2xx answer like a provider does, until accepted.
    let events = 400;
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let retried = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for sender in 0..8 {
        let client = client.clone();
        let accepted = Arc::clone(&accepted);
        let retried = Arc::clone(&retried);
        senders.push(tokio::spawn(async move {
            for n in (sender..events).step_by(8) {
                let id = format!("cl-{n}");
                let mut tries = 0;
                loop {
                    let status = send_github(&client, ingest, &id, "push", b"{\"cluster\":true}").await;
                    if (200..300).contains(&status) {
                        accepted.lock().unwrap().insert(id);
                        break;
                    }
                    assert_eq!(status, 503, "only 'try again later' while the cluster elects a leader");
                    tries += 1;
                    retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    assert!(tries < 200, "{id} never accepted");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // Kill the intake stream's leader while events are flowing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while accepted.lock().unwrap().len() < 100 {
        assert!(tokio::time::Instant::now() < deadline, "load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = leader(&js, "INLET").await;
    cluster.node(&killed).kill();
    let accepted_before_kill = accepted.lock().unwrap().len();
    assert!(accepted_before_kill < events, "the kill landed while events were still being sent");
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(accepted.lock().unwrap().len(), events, "every event accepted in the end");
    let new_leader = leader(&js, "INLET").await;
    assert_ne!(new_leader, killed, "a surviving node leads the stream");
    eprintln!(
        "killed {killed} after {accepted_before_kill} of {events} accepted; {} answers were 503 and retried; {new_leader} leads",
        retried.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Each accepted event delivered exactly once, and stored once in the stream.
    destination.wait_for(events, Duration::from_secs(120)).await;
    let keys = destination.delivered_keys();
    assert_eq!(keys.len(), events, "every accepted event delivered");
    assert!(keys.values().all(|&n| n == 1), "no event delivered twice: {keys:?}");
    let stored = js.get_stream("INLET").await.unwrap().info().await.unwrap().state.messages;
    assert_eq!(stored, events as u64, "the stream holds each event once");
    let metrics = client.get(format!("http://{ingest_admin}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("inlet_ingest_requests_total"), "ingest still serving its metrics");
    stop.cancel();
}
