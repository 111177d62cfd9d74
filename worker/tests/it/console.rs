//! The console in headless Chromium (Debian's, driven by `scripts/e2e/console.mjs` through
//! playwright-core): sign in at a real OpenID provider, find a dead-lettered event, replay it
//! after a confirmation that shows what will be sent, see it delivered, cancel a replay of the
//! delivered one (warned that it was delivered), replay it to a destination no route selects
//! with the config it was routed with ("as received") and see the new delivery with its lineage
//! and config delivered; dismiss another with a note and see the dismissal; bulk-replay another,
//! each event's config as received, through its dry run's preview token. The event view shows a
//! delivery's ordering key.

use std::time::Duration;

use serde_json::json;

use crate::operator_support::{OperatorPipeline, Options, run_browser, screenshot_dir, unrouted_destination};
use crate::support::TestDestination;

#[tokio::test]
async fn an_operator_signs_in_replays_a_dead_letter_in_the_console_and_sees_it_delivered() {
    let destination = TestDestination::answering(400).await;
    let staging = TestDestination::answering(200).await;
    let pipeline = OperatorPipeline::start(
        &[("orders", destination.url(), "")],
        Options {
            oidc: true,
            tail: unrouted_destination("staging", &staging.url()),
            // Each event its own key: the event view shows it.
            route_extra: "ordering_key = \"/order\"\n".into(),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(pipeline.send("evt-console-1", "push", b"{\"order\":42}").await, 202);
    assert_eq!(pipeline.send("evt-console-2", "push", b"{\"order\":43}").await, 202);
    assert_eq!(pipeline.send("evt-console-3", "push", b"{\"order\":44}").await, 202);
    // Hostile text from a provider is shown as text, never run (the page checks `window.pwned`).
    let hostile = "<img src=x onerror=window.pwned=1>";
    let body = b"{\"note\":\"</pre><script>window.pwned=1</script>\"}";
    assert_eq!(pipeline.send(hostile, "push", body).await, 202);
    pipeline
        .wait_for("four dead letters", "{ counts { deadLettered } }", json!({}), |d| d["counts"]["deadLettered"] == 4)
        .await;
    destination.set_behaviour(|_| (200, Duration::ZERO));

    // INLET_E2E_SCREENSHOT_DIR keeps the final screenshot for a person to look at.
    let screenshot = screenshot_dir(&pipeline).join("console.png");
    run_browser("console.mjs", Duration::from_secs(120), |command| {
        command
            .args(["--url", &pipeline.url(""), "--email", "ops@example.com", "--event-id", "evt-console-1"])
            .args(["--bulk-text", "evt-console-2", "--dismiss-event-id", "evt-console-3", "--replay-to", "staging"])
            .arg("--screenshot")
            .arg(&screenshot)
    })
    .await;

    // What the browser saw is what happened: the replayed one and the bulk-replayed one
    // delivered once each, the hostile one untouched, both replays audited with the operator's
    // address.
    pipeline
        .wait_for("the bulk-replayed one delivered", "{ counts { delivered } }", json!({}), |d| {
            d["counts"]["delivered"] == 3
        })
        .await;
    assert_eq!(destination.delivered_keys().len(), 2);
    let to_staging: Vec<String> = staging.delivered_keys().into_keys().collect();
    assert!(to_staging.len() == 1 && to_staging[0].ends_with("_staging~r1"), "{to_staging:?}");
    let state = pipeline
        .gql("{ counts { delivered deadLettered dismissed } auditLog { nodes { actor action detail } } }", json!({}))
        .await;
    assert_eq!(state["counts"], json!({"delivered": 3, "deadLettered": 1, "dismissed": 1}));
    let replayed_to =
        state["auditLog"]["nodes"].as_array().unwrap().iter().find(|n| n["action"] == "REPLAY_TO_DESTINATION");
    assert_eq!(replayed_to.map(|n| &n["actor"]), Some(&json!("ops@example.com")));
    let detail = replayed_to.and_then(|n| n["detail"].as_str()).unwrap_or_default();
    assert!(detail.contains("; config as received ("), "the console's choice reached the store: {detail}");
    let dismissal =
        state["auditLog"]["nodes"].as_array().unwrap().iter().find(|n| n["action"] == "DISMISS_DEAD_LETTER").cloned();
    assert_eq!(
        dismissal,
        Some(
            json!({"actor": "ops@example.com", "action": "DISMISS_DEAD_LETTER", "detail": "duplicate order, refunded by hand"})
        )
    );
    let replays: Vec<(&serde_json::Value, &serde_json::Value)> = state["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["action"] == "REPLAY_DELIVERY")
        .map(|n| (&n["actor"], &n["action"]))
        .collect();
    assert_eq!(
        replays,
        [(&json!("ops@example.com"), &json!("REPLAY_DELIVERY"))],
        "the confirmed replay, not the cancelled one"
    );
    let bulk = state["auditLog"]["nodes"].as_array().unwrap().iter().find(|n| n["action"] == "BULK_REPLAY");
    assert_eq!(bulk.map(|n| &n["actor"]), Some(&json!("ops@example.com")));
    // The console's choice reached the job: its audit row keeps the filter with the config.
    let bulk_detail = bulk.and_then(|n| n["detail"].as_str()).unwrap_or_default();
    assert!(bulk_detail.contains(r#""config":"AS_RECEIVED""#), "{bulk_detail}");
}
