//! The console's search by body content in headless Chromium (`scripts/e2e/console-search.mjs`
//! through playwright-core): a viewer signs in, searches the events' bodies, sees the events
//! found with the matched parts marked, a hostile body shown as inert text, the search combined
//! with the type filter, and a term too short refused with its reason.

use std::time::Duration;

use serde_json::json;

use crate::operator_support::{OperatorPipeline, Options, e2e_script};
use crate::support::TestDestination;

#[tokio::test]
async fn a_viewer_searches_event_bodies_in_the_console_and_sees_the_matches_marked() {
    let sink = TestDestination::answering(200).await;
    let pipeline =
        OperatorPipeline::start(&[("orders", sink.url(), "")], Options { oidc: true, ..Options::default() }).await;
    let events: [(&str, &str, &[u8]); 4] = [
        ("evt-s1", "push", b"{\"order\":\"ord_5521\",\"customer\":\"Ada\"}"),
        ("evt-s2", "issues", b"{\"order\":\"ORD_5522\",\"note\":\"refund requested\"}"),
        ("evt-s3", "push", b"{\"note\":\"<img src=x onerror=window.pwned=1> ord_5523\",\"pad\":\"padding\"}"),
        ("evt-s4", "push", b"{\"order\":\"nothing to find\"}"),
    ];
    for (id, event, body) in events {
        assert_eq!(pipeline.send(id, event, body).await, 202);
    }
    pipeline.wait_for("every event recorded", "{ counts { events } }", json!({}), |d| d["counts"]["events"] == 4).await;

    // INLET_E2E_SCREENSHOT_DIR keeps the screenshot for a person to look at.
    let screenshot = std::env::var_os("INLET_E2E_SCREENSHOT_DIR")
        .map_or_else(|| pipeline.dir.path().to_owned(), std::path::PathBuf::from)
        .join("console-search.png");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(e2e_script("console-search.mjs"))
            .args(["--url", &pipeline.url(""), "--email", "viewer@viewers.example", "--search", "ord_55"])
            .args(["--expect", "evt-s3,evt-s2,evt-s1", "--marked", "ord_55", "--hostile-id", "evt-s3"])
            .args(["--type", "push", "--expect-typed", "evt-s3,evt-s1"])
            .arg("--screenshot")
            .arg(&screenshot)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run finished within 2 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "console-search.mjs failed:\n{stdout}\n{stderr}");
    eprintln!("console search run: {stdout}");
}
