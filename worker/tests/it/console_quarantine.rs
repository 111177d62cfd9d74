//! Rejected requests in the console, in headless Chromium (`scripts/e2e/console-quarantine.mjs`):
//! a provider signs with a secret nobody configured; an admin sees the rejected requests with the
//! diagnosis "signed with a secret that is not configured"; the secret is added to the config and
//! the worker restarted (how a worker learns a secret); the admin re-verifies and admits them and
//! sees them delivered.

use std::time::Duration;

use inlet_shared::config::Secret;
use serde_json::json;

use crate::operator_support::{OperatorPipeline, Options, run_browser, screenshot_dir};
use crate::support::TestDestination;

const ROTATED: &str = "gh-secret-rotated-by-the-provider";

async fn browser(pipeline: &OperatorPipeline, phase: &str) {
    // INLET_E2E_SCREENSHOT_DIR keeps the screenshots for a person to look at.
    let screenshot = screenshot_dir(pipeline).join(format!("console-quarantine-{phase}.png"));
    run_browser("console-quarantine.mjs", Duration::from_secs(120), |command| {
        command
            .args(["--url", &pipeline.url(""), "--email", "admin@example.com", "--source", "gh", "--count", "3"])
            .args(["--phase", phase])
            .arg("--screenshot")
            .arg(&screenshot)
    })
    .await;
}

#[tokio::test]
async fn an_admin_sees_why_requests_were_rejected_fixes_the_secret_admits_them_and_sees_them_delivered() {
    let destination = TestDestination::answering(200).await;
    let mut pipeline =
        OperatorPipeline::start(&[("orders", destination.url(), "")], Options { oidc: true, ..Options::default() })
            .await;
    for n in 1..=3 {
        let body = format!("{{\"order\":{n}}}");
        assert_eq!(pipeline.send_signed_with(ROTATED, &format!("dlv-rotated-{n}"), body.as_bytes()).await, 401);
    }
    pipeline
        .wait_for("three kept", "{ rejectedCounts { count } }", json!({}), |d| {
            d["rejectedCounts"].as_array().unwrap().iter().map(|c| c["count"].as_i64().unwrap()).sum::<i64>() == 3
        })
        .await;

    browser(&pipeline, "look").await;
    pipeline.restart_worker(|config| config.sources[0].secrets.push(Secret::new(ROTATED))).await;
    browser(&pipeline, "admit").await;

    // What the browser saw is what happened: three delivered once each, the admission audited
    // with the admin's address.
    pipeline
        .wait_for("three delivered", "{ counts { delivered } }", json!({}), |d| d["counts"]["delivered"] == 3)
        .await;
    assert_eq!(destination.delivered_keys().len(), 3);
    let audit = pipeline.gql("{ auditLog { nodes { actor action count } } }", json!({})).await;
    let admission =
        audit["auditLog"]["nodes"].as_array().unwrap().iter().find(|n| n["action"] == "ADMIT_QUARANTINED").cloned();
    assert_eq!(admission, Some(json!({"actor": "admin@example.com", "action": "ADMIT_QUARANTINED", "count": 3})));
}
