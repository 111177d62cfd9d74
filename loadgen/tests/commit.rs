//! `inlet-loadgen commit` against the pinned nats-server with `sync_interval: always`: every
//! atomic batch it sends is acknowledged whole (the tool checks `count` on each commit reply and
//! fails otherwise), so `scripts/bench`'s broker figures come from commits that really happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use inlet_shared::test_util::TestNats;

#[test]
fn commit_reports_whole_batches_acknowledged_by_the_broker() {
    let nats = TestNats::start_fsync();
    let output = Command::new(env!("CARGO_BIN_EXE_inlet-loadgen"))
        .args(["commit", "--nats", &nats.url(), "--batch", "50", "--duration", "0.3"])
        .output()
        .expect("run inlet-loadgen");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let line = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(report["batch"], 50);
    let commits = report["commits"].as_u64().unwrap();
    assert!(commits >= 1, "{report}");
    assert!(report["messages_per_s"].as_f64().unwrap() > 0.0, "{report}");

    // The stream holds exactly the committed messages: nothing partial, nothing extra.
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("LOADGEN_COMMIT").await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(stored, commits * 50, "{report}");
}

#[test]
fn commit_refuses_a_batch_larger_than_the_server_allows() {
    // Checked before connecting, so no server is needed.
    let output = Command::new(env!("CARGO_BIN_EXE_inlet-loadgen"))
        .args(["commit", "--nats", "nats://127.0.0.1:9", "--batch", "1001"])
        .output()
        .expect("run inlet-loadgen");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--batch must be 2..=1000"));
}
