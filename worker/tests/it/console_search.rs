//! The console's search by body content in headless Chromium (`scripts/e2e/console-search.mjs`
//! through playwright-core): a viewer signs in, searches the events' bodies, sees the events
//! found with the matched parts marked, a hostile body shown as inert text, the search combined
//! with the type filter, and a term too short refused with its reason.

use std::time::Duration;

use serde_json::json;

use crate::operator_support::{OperatorPipeline, Options, run_browser, screenshot_dir};
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
    let screenshot = screenshot_dir(&pipeline).join("console-search.png");
    run_browser("console-search.mjs", Duration::from_secs(120), |command| {
        command
            .args(["--url", &pipeline.url(""), "--email", "viewer@viewers.example", "--search", "ord_55"])
            .args(["--expect", "evt-s3,evt-s2,evt-s1", "--marked", "ord_55", "--hostile-id", "evt-s3"])
            .args(["--type", "push", "--expect-typed", "evt-s3,evt-s1"])
            .arg("--screenshot")
            .arg(&screenshot)
    })
    .await;
}
