//! Rejected requests through the API: ingest keeps what failed verification with its diagnosis,
//! an admin lists them, and "re-verify and admit" admits only what verifies with the worker's
//! current secrets (after a restart with the fixed config), with the original receipt time
//! (also for the timestamp tolerance), audited, delivered like any event, and gone from the
//! quarantine.

use std::time::{Duration, SystemTime};

use inlet_shared::config::Secret;
use inlet_shared::signature::sign;
use serde_json::{Value, json};

use crate::operator_support::{OperatorPipeline, Options};
use crate::support::TestDestination;

const ROTATED: &str = "gh-secret-rotated-at-the-provider";
const STRIPE_CONFIGURED: &str = "whsec_configured";
const STRIPE_ROTATED: &str = "whsec_rotated";

const REJECTED: &str = "query($s: String!) { rejectedRequests(source: $s) { nodes { id slot receivedAt diagnosis detail \
                        bodyBytes admissible headers { name value } } } rejectedCounts { source slot count } }";
const ADMIT: &str = "mutation($s: String!, $ids: [ID!]) { admitRejected(source: $s, ids: $ids) { admitted duplicates \
                     eventIds stillRejected { id diagnosis detail } } }";

fn kept(data: &Value, source: &str) -> i64 {
    data["rejectedCounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] == source)
        .map(|c| c["count"].as_i64().unwrap())
        .sum()
}

async fn send_stripe(pipeline: &OperatorPipeline, secret: &str, timestamp: i64, body: &[u8]) -> u16 {
    let mut request = pipeline.client.post(format!("http://{}/webhooks/stripe", pipeline.ingest)).body(body.to_vec());
    for (name, value) in sign::stripe(secret, timestamp, body) {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn admission_admits_only_what_verifies_now_keeps_the_receipt_time_and_is_audited() {
    let destination = TestDestination::answering(200).await;
    let stripe = format!(
        "\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nsecrets = [\"{STRIPE_CONFIGURED}\"]\ntolerance = \"2s\"\n"
    );
    let mut pipeline =
        OperatorPipeline::start(&[("orders", destination.url(), "")], Options { tail: stripe, ..Options::default() })
            .await;

    // A provider rotated its secret and nobody told Inlet; and one request with no signature.
    assert_eq!(pipeline.send_signed_with(ROTATED, "dlv-q-1", b"{\"order\":1}").await, 401);
    assert_eq!(pipeline.send_signed_with(ROTATED, "dlv-q-2", b"{\"order\":2}").await, 401);
    assert_eq!(pipeline.send_signed_with("", "dlv-q-junk", b"{\"order\":3}").await, 401);
    // Stripe: one fresh (it will verify once the secret is known, however late the admission),
    // one that was already an hour old when it came (stale then, stale at admission).
    assert_eq!(send_stripe(&pipeline, STRIPE_ROTATED, now(), br#"{"id":"evt_fresh"}"#).await, 401);
    assert_eq!(send_stripe(&pipeline, STRIPE_ROTATED, now() - 3600, br#"{"id":"evt_stale"}"#).await, 401);

    let listed = pipeline.wait_for("three kept", REJECTED, json!({ "s": "gh" }), |d| kept(d, "gh") == 3).await;
    let nodes = listed["rejectedRequests"]["nodes"].as_array().unwrap().clone();
    let diagnoses: Vec<&str> = nodes.iter().map(|n| n["diagnosis"].as_str().unwrap()).collect();
    assert_eq!(diagnoses, ["UNKNOWN_SECRET", "UNKNOWN_SECRET", "MISSING_HEADER"]);
    assert_eq!(nodes[0]["detail"], "signed with a secret that is not configured");
    assert_eq!(nodes[0]["admissible"], true);
    let shown = serde_json::to_string(&nodes).unwrap();
    assert!(!shown.to_lowercase().contains("x-hub-signature"), "signatures are never shown: {shown}");
    let received_at = nodes[0]["receivedAt"].clone();

    // An operator may neither see nor admit them: admins only.
    let create = "mutation($name: String!, $role: RoleName!) { createApiToken(name: $name, role: $role) { token } }";
    let operator = pipeline.gql(create, json!({"name": "runbook", "role": "OPERATOR"})).await;
    let token = operator["createApiToken"]["token"].as_str().unwrap().to_owned();
    for query in [ADMIT, REJECTED] {
        let refused = pipeline.gql_as(&token, query, json!({ "s": "gh" })).await;
        assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    }

    // Before the fix nothing verifies: nothing admitted, all still rejected, the try audited.
    let before = pipeline.gql(ADMIT, json!({ "s": "gh" })).await;
    assert_eq!(before["admitRejected"]["admitted"], 0);
    assert_eq!(before["admitRejected"]["stillRejected"].as_array().unwrap().len(), 3);

    // The fix: the rotated secrets added to the worker's config; the worker restarted.
    pipeline
        .restart_worker(|config| {
            config.sources[0].secrets.push(Secret::new(ROTATED));
            config.sources[1].secrets.push(Secret::new(STRIPE_ROTATED));
        })
        .await;

    // Only the two that verify now are admitted; the unsigned one stays, with why.
    let admitted = pipeline.gql(ADMIT, json!({ "s": "gh" })).await["admitRejected"].clone();
    assert_eq!(admitted["admitted"], 2, "{admitted}");
    assert_eq!(admitted["eventIds"], json!(["dlv-q-1", "dlv-q-2"]));
    assert_eq!(admitted["duplicates"], 0);
    let still = admitted["stillRejected"].as_array().unwrap();
    assert_eq!(still.len(), 1);
    assert_eq!(still[0]["id"], nodes[2]["id"]);
    assert_eq!(still[0]["diagnosis"], "MISSING_HEADER");

    // Delivered like any event, with the original receipt time.
    pipeline.wait_for("both delivered", "{ counts { delivered } }", json!({}), |d| d["counts"]["delivered"] == 2).await;
    assert_eq!(destination.delivered_keys().len(), 2);
    let events = pipeline.gql("{ events(first: 10) { nodes { eventId receivedAt } } }", json!({})).await;
    let first = events["events"]["nodes"].as_array().unwrap().iter().find(|e| e["eventId"] == "dlv-q-1").cloned();
    assert_eq!(first.map(|e| e["receivedAt"].clone()), Some(received_at));

    // Out of the quarantine; admitting again admits nothing more.
    let after = pipeline.gql(REJECTED, json!({ "s": "gh" })).await;
    assert_eq!(kept(&after, "gh"), 1);
    let again = pipeline.gql(ADMIT, json!({ "s": "gh" })).await;
    assert_eq!(again["admitRejected"]["admitted"], 0);

    // Stripe: the tolerance counts from the receipt, not from the admission: once the 2 s are
    // long past, the fresh one still verifies, the stale one still does not.
    pipeline.wait_for("two stripe kept", REJECTED, json!({ "s": "stripe" }), |d| kept(d, "stripe") == 2).await;
    let past_tolerance = now() + 3;
    while now() < past_tolerance {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stripe = pipeline.gql(ADMIT, json!({ "s": "stripe" })).await["admitRejected"].clone();
    assert_eq!(stripe["eventIds"], json!(["evt_fresh"]), "{stripe}");
    assert_eq!(stripe["stillRejected"][0]["diagnosis"], "TIMESTAMP_TOO_OLD", "{stripe}");

    // Each admission audited: who, how many, which.
    let audit = pipeline.gql("{ auditLog(first: 20) { nodes { actor action target count detail } } }", json!({})).await;
    let admissions: Vec<&Value> =
        audit["auditLog"]["nodes"].as_array().unwrap().iter().filter(|n| n["action"] == "ADMIT_QUARANTINED").collect();
    assert_eq!(admissions.len(), 4, "{audit}");
    let admitting = admissions.iter().find(|n| n["count"] == 2).unwrap();
    assert_eq!(admitting["target"], "source:gh");
    assert!(admitting["actor"].as_str().is_some_and(|a| !a.is_empty()));
    assert!(admitting["detail"].as_str().unwrap().contains("[dlv-q-1, dlv-q-2]"), "{admitting}");
}
