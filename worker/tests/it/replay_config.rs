//! Replays "as received" or "current" end to end (docs/routing.md, "Replays and config
//! versions"): each event records the version of the routes that routed it; after the worker
//! restarts with another transform, a replay `AS_RECEIVED` sends what the event's routes made of
//! it and `CURRENT` what the new ones make; the API and the audit log say which; an event without
//! a version is refused `AS_RECEIVED`; a version whose snapshot no longer compiles dead-letters
//! the delivery `transform_failed`, naming it. On the store `INLET_TEST_STORE` names.

use std::time::Duration;

use serde_json::{Value, json};

use crate::operator_support::{OperatorPipeline, Options};
use crate::support::TestDestination;

const TRANSFORM_A: &str = r#"{config: "A", ref: .ref}"#;
const TRANSFORM_B: &str = r#"{config: "B", ref: .ref}"#;

const EVENTS: &str = "{ events(first: 10) { nodes { id eventId configVersion configIsCurrent deliveries { id } } } }";
const REPLAY: &str = "mutation($id: ID!, $config: ReplayConfig!) {
    replayDelivery(id: $id, config: $config) { deliveryId result replayConfig configVersion } }";
const DELIVERY: &str =
    "query($id: ID!) { delivery(id: $id) { status replayConfig configVersion lastError deadLetterReason } }";

/// The event whose provider id is `event_id`, as the events list gives it.
async fn event(pipeline: &OperatorPipeline, event_id: &str) -> Value {
    let data = pipeline.gql(EVENTS, json!({})).await;
    data["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["eventId"] == event_id)
        .unwrap_or_else(|| panic!("no event {event_id}: {data}"))
        .clone()
}

/// The JSON body of the `n`th request `sink` received.
fn body(sink: &TestDestination, n: usize) -> Value {
    serde_json::from_slice(&sink.received()[n].body).unwrap()
}

#[tokio::test]
async fn a_replay_runs_the_transform_as_received_or_current_and_says_which() {
    let sink = TestDestination::answering(200).await;
    let destinations = [("sink", sink.url(), "retry_schedule = []")];
    let mut pipeline = OperatorPipeline::start(&destinations, Options::default()).await;
    pipeline.restart_worker(|config| config.routes[0].transform = Some(TRANSFORM_A.into())).await;

    // Routed with transform A.
    let payload = br#"{"ref":"refs/heads/main"}"#;
    assert_eq!(pipeline.send("d-1", "push", payload).await, 202);
    sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(body(&sink, 0), json!({"config": "A", "ref": "refs/heads/main"}));
    let first = event(&pipeline, "d-1").await;
    let version_a = first["configVersion"].as_str().unwrap().to_owned();
    assert_eq!(version_a.len(), 64, "the full SHA-256: {first}");
    assert_eq!(first["configIsCurrent"], true);
    let delivery = first["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let snapshot = format!("SELECT routes_json FROM config_versions WHERE version = '{version_a}'");
    let stored = pipeline.store.scalar(&snapshot).await.unwrap();
    assert!(stored.contains(r#"{config: \"A\", ref: .ref}"#), "the snapshot keeps the routes' programs: {stored}");

    // The worker restarts with transform B: the event's version is no longer the current one.
    pipeline.restart_worker(|config| config.routes[0].transform = Some(TRANSFORM_B.into())).await;
    let first = event(&pipeline, "d-1").await;
    assert_eq!((first["configVersion"].as_str(), &first["configIsCurrent"]), (Some(version_a.as_str()), &json!(false)));
    let versions = pipeline.store.scalar_i64("SELECT COUNT(*) FROM config_versions").await;
    assert_eq!(versions, 3, "no transform, A and B: one snapshot each");

    // As received: A's output again, and the answer says so.
    let replayed = pipeline.gql(REPLAY, json!({"id": delivery, "config": "AS_RECEIVED"})).await;
    assert_eq!(
        replayed["replayDelivery"],
        json!({"deliveryId": delivery, "result": "ENQUEUED", "replayConfig": "AS_RECEIVED", "configVersion": version_a})
    );
    sink.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(body(&sink, 1), json!({"config": "A", "ref": "refs/heads/main"}));
    let shown = pipeline.gql(DELIVERY, json!({"id": delivery})).await;
    assert_eq!(
        (&shown["delivery"]["replayConfig"], &shown["delivery"]["configVersion"]),
        (&json!("AS_RECEIVED"), &json!(version_a))
    );

    // Current (the default): B's output.
    pipeline
        .wait_for("the replay delivered", DELIVERY, json!({"id": delivery}), |d| d["delivery"]["status"] == "DELIVERED")
        .await;
    let replayed = pipeline.gql(REPLAY, json!({"id": delivery, "config": "CURRENT"})).await;
    assert_eq!(
        (&replayed["replayDelivery"]["replayConfig"], &replayed["replayDelivery"]["configVersion"]),
        (&json!("CURRENT"), &Value::Null)
    );
    sink.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(body(&sink, 2), json!({"config": "B", "ref": "refs/heads/main"}));

    // To a destination, as received: a new delivery with the event's version and A's output.
    let to = pipeline
        .gql(
            "mutation($id: ID!) { replayToDestination(deliveryId: $id, destination: \"sink\", config: AS_RECEIVED) {
                 id replayConfig configVersion } }",
            json!({"id": delivery}),
        )
        .await;
    assert_eq!(
        (&to["replayToDestination"]["replayConfig"], &to["replayToDestination"]["configVersion"]),
        (&json!("AS_RECEIVED"), &json!(version_a))
    );
    sink.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(body(&sink, 3), json!({"config": "A", "ref": "refs/heads/main"}));

    // The audit rows name the config each replay used.
    let audit = pipeline.gql("{ auditLog(first: 10) { nodes { action detail } } }", json!({})).await;
    let details: Vec<&str> =
        audit["auditLog"]["nodes"].as_array().unwrap().iter().filter_map(|n| n["detail"].as_str()).collect();
    let as_received = format!("config as received ({version_a})");
    assert_eq!(
        details,
        [
            format!("replay of {delivery} to sink; {as_received}"),
            "previous status delivered; config current".to_owned(),
            format!("previous status delivered; {as_received}"),
        ]
    );

    // A bulk replay as received: the dead letter (refused by the sink after a replay with the
    // current config) is sent again with A's output; the job keeps the config with its filter.
    pipeline
        .wait_for("the replay to a destination delivered", "{ counts { pending } }", json!({}), |d| {
            d["counts"]["pending"] == 0
        })
        .await;
    sink.set_behaviour(|_| (422, Duration::ZERO));
    pipeline.gql(REPLAY, json!({"id": delivery, "config": "CURRENT"})).await;
    pipeline
        .wait_for("dead-lettered", DELIVERY, json!({"id": delivery}), |d| d["delivery"]["status"] == "DEAD_LETTERED")
        .await;
    sink.set_behaviour(|_| (200, Duration::ZERO));
    let before = sink.count();
    let bulk = pipeline
        .gql(
            "mutation { bulkReplay(filter: {destination: \"sink\"}, dryRun: false, config: AS_RECEIVED) {
                 job { id total filterJson } } }",
            json!({}),
        )
        .await;
    let job = &bulk["bulkReplay"]["job"];
    assert_eq!(job["total"], 1, "{bulk}");
    let filter: Value = serde_json::from_str(job["filterJson"].as_str().unwrap()).unwrap();
    assert_eq!(filter["config"], "AS_RECEIVED", "{filter}");
    sink.wait_for(before + 1, Duration::from_secs(20)).await;
    assert_eq!(body(&sink, before), json!({"config": "A", "ref": "refs/heads/main"}));
    let shown = pipeline.gql(DELIVERY, json!({"id": delivery})).await;
    assert_eq!(shown["delivery"]["configVersion"], json!(version_a), "the bulk item keeps the event's version");

    // An event recorded without a version (by an older worker): refused as received, nothing
    // replayed; current still works.
    let before = sink.count();
    assert_eq!(pipeline.send("d-2", "push", payload).await, 202);
    sink.wait_for(before + 1, Duration::from_secs(20)).await;
    assert_eq!(body(&sink, before), json!({"config": "B", "ref": "refs/heads/main"}));
    let second = event(&pipeline, "d-2").await;
    assert_eq!(second["configIsCurrent"], true);
    let old_delivery = second["deliveries"][0]["id"].as_str().unwrap().to_owned();
    pipeline.store.execute("UPDATE events SET config_version = NULL WHERE event_id = 'd-2'").await;
    let refused = pipeline
        .gql_as(crate::operator_support::ADMIN_TOKEN, REPLAY, json!({"id": old_delivery, "config": "AS_RECEIVED"}))
        .await;
    let error = &refused["errors"][0];
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
    assert!(error["message"].as_str().unwrap().contains("recorded without a config version"), "{refused}");
    let replays = format!("SELECT replays FROM deliveries WHERE id = '{old_delivery}'");
    assert_eq!(pipeline.store.scalar_i64(&replays).await, 0, "nothing was replayed");
    assert!(!sink.reached(before + 2, Duration::from_millis(500)).await, "nothing was sent");

    // A version whose snapshot no longer compiles: dead-lettered transform_failed, naming it.
    let broken = "f".repeat(64);
    let routes = r#"[{"source":"gh","events":["push"],"destinations":["sink"],"filter":null,"transform":"{a: }","ordering_key":null,"ordering_on_dead_letter":"skip"}]"#;
    pipeline
        .store
        .execute(&format!(
            "INSERT INTO config_versions (version, routes_json, first_used_at_ms) VALUES ('{broken}', '{routes}', 0)"
        ))
        .await;
    pipeline.store.execute(&format!("UPDATE events SET config_version = '{broken}' WHERE event_id = 'd-2'")).await;
    let replayed = pipeline.gql(REPLAY, json!({"id": old_delivery, "config": "AS_RECEIVED"})).await;
    assert_eq!(replayed["replayDelivery"]["configVersion"], json!(broken));
    let dead = pipeline
        .wait_for("dead-lettered", DELIVERY, json!({"id": old_delivery}), |d| {
            d["delivery"]["status"] == "DEAD_LETTERED"
        })
        .await;
    assert_eq!(dead["delivery"]["deadLetterReason"], "TRANSFORM_FAILED");
    let error = dead["delivery"]["lastError"].as_str().unwrap();
    assert!(error.contains(&broken) && error.contains("no longer compiles"), "{error}");
    assert!(error.contains("routes[0].transform"), "names the program: {error}");
    assert!(!sink.reached(before + 2, Duration::from_millis(300)).await, "nothing was sent");

    // Its event's dead letters replayed as received, the event without a version again: refused,
    // none replayed.
    pipeline.store.execute("UPDATE events SET config_version = NULL WHERE event_id = 'd-2'").await;
    let replays_before = pipeline.store.scalar_i64(&replays).await;
    let refused = pipeline
        .gql_as(
            crate::operator_support::ADMIN_TOKEN,
            "mutation($id: ID!) { replayEvent(id: $id, config: AS_RECEIVED) { deliveryId } }",
            json!({"id": second["id"]}),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
    assert_eq!(pipeline.store.scalar_i64(&replays).await, replays_before, "none replayed");
}
