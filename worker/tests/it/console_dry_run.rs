//! The dry run (`dryRun`): a filter and a transform tried on stored events, through the API
//! (operator role, nothing written, bounded) and in the console in headless Chromium
//! (`scripts/e2e/console-dry-run.mjs`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::operator_support::{OperatorPipeline, Options, run_browser, screenshot_dir};
use crate::support::TestDestination;

const DRY_RUN: &str = "query($source: String!, $filter: String, $transform: String, $last: Int, $ids: [ID!]) {
  dryRun(source: $source, filter: $filter, transform: $transform, last: $last, eventIds: $ids) {
    event { id eventId } matched filterError input output outputHeaders { name value } transformError } }";

/// Three events of `gh`: amounts 5000 (`evt-d1`), 5 (`evt-d2`) and 7000 (`evt-d3`).
async fn pipeline_with_events(options: Options) -> (OperatorPipeline, TestDestination) {
    let sink = TestDestination::answering(200).await;
    let pipeline = OperatorPipeline::start(&[("orders", sink.url(), "")], options).await;
    for (id, amount) in [("evt-d1", 5000), ("evt-d2", 5), ("evt-d3", 7000)] {
        let body = json!({"order": id.trim_start_matches("evt-"), "amount": amount}).to_string();
        assert_eq!(pipeline.send(id, "push", body.as_bytes()).await, 202);
    }
    pipeline.wait_for("every event recorded", "{ counts { events } }", json!({}), |d| d["counts"]["events"] == 3).await;
    sink.wait_for(3, Duration::from_secs(20)).await;
    // Settled in the store too (results are recorded after the destination answered).
    pipeline
        .store
        .wait_until(
            "every delivery recorded delivered",
            Duration::from_secs(20),
            "SELECT COUNT(*) = 3 FROM deliveries WHERE status = 'delivered'",
        )
        .await;
    (pipeline, sink)
}

fn by_event(results: &Value) -> Vec<(String, bool, Value)> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let event_id = r["event"]["eventId"].as_str().unwrap().to_owned();
            (event_id, r["matched"].as_bool().unwrap(), r["output"].clone())
        })
        .collect()
}

#[tokio::test]
async fn a_dry_run_shows_matches_and_outputs_and_writes_nothing() {
    let (pipeline, sink) = pipeline_with_events(Options::default()).await;
    let counts = "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM deliveries) \
                  + (SELECT COUNT(*) FROM attempts) + (SELECT COUNT(*) FROM audit_log)";
    let before = pipeline.store.scalar_i64(counts).await;
    let variables = json!({
        "source": "gh",
        "filter": "body.amount > 1000 && headers[\"x-github-event\"] == \"push\"",
        "transform": "{body: {text: \"order \\(.order): \\(.amount / 100)\"}, headers: {\"X-Order\": .order}}",
        "last": 10,
    });
    let data = pipeline.gql(DRY_RUN, variables).await;
    let results = &data["dryRun"];
    assert_eq!(
        by_event(results),
        vec![
            ("evt-d3".to_owned(), true, json!("{\"text\":\"order d3: 70.0\"}")),
            ("evt-d2".to_owned(), false, Value::Null),
            ("evt-d1".to_owned(), true, json!("{\"text\":\"order d1: 50.0\"}")),
        ],
        "newest first: {results}"
    );
    assert_eq!(results[0]["outputHeaders"], json!([{"name": "x-order", "value": "d3"}]));
    assert_eq!(results[0]["input"], json!(json!({"order": "d3", "amount": 7000}).to_string()), "the body as sent");

    // Chosen events; a missing field is no match, with the reason; a runaway transform is
    // stopped and said so.
    let d1 = results[2]["event"]["id"].clone();
    let d2 = results[1]["event"]["id"].clone();
    let data = pipeline.gql(DRY_RUN, json!({"source": "gh", "filter": "body.missing > 1", "ids": [d1.clone()]})).await;
    assert_eq!(data["dryRun"][0]["matched"], json!(false));
    assert!(data["dryRun"][0]["filterError"].as_str().is_some_and(|e| !e.is_empty()), "{data}");
    let data = pipeline.gql(DRY_RUN, json!({"source": "gh", "transform": "def f: f; f", "ids": [d1, d2]})).await;
    for result in data["dryRun"].as_array().unwrap() {
        let error = result["transformError"].as_str().unwrap_or_default();
        assert!(error.starts_with("stopped after"), "{result}");
    }

    // Bad programs and bounds are refused before anything runs.
    for (variables, expected) in [
        (json!({"source": "gh", "filter": "body.amount >"}), "filter: line 1, column"),
        (json!({"source": "gh", "transform": "{a: }"}), "transform: line 1, column"),
        (json!({"source": "gh", "last": 101}), "last: give 1 to 100"),
        (json!({"source": "nope"}), "no source `nope`"),
        (json!({"source": "gh", "filter": format!("{}1{}", "(".repeat(40), ")".repeat(40))}), "deeper than 32"),
    ] {
        let answer = pipeline.gql_as(crate::operator_support::ADMIN_TOKEN, DRY_RUN, variables).await;
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(expected), "{answer}");
    }

    // Nothing was written and nothing sent.
    assert_eq!(pipeline.store.scalar_i64(counts).await, before, "no row written");
    assert!(!sink.reached(4, Duration::from_millis(300)).await, "nothing was sent");

    // Viewers may not run programs.
    let created =
        pipeline.gql("mutation { createApiToken(name: \"viewer\", role: VIEWER) { token } }", json!({})).await;
    let viewer = created["createApiToken"]["token"].as_str().unwrap().to_owned();
    let answer = pipeline.gql_as(&viewer, DRY_RUN, json!({"source": "gh"})).await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], json!("FORBIDDEN"), "{answer}");
}

#[tokio::test]
async fn an_operator_dry_runs_a_filter_and_transform_in_the_console() {
    let (pipeline, _sink) = pipeline_with_events(Options { oidc: true, ..Options::default() }).await;
    let screenshot = screenshot_dir(&pipeline).join("console-dry-run.png");
    run_browser("console-dry-run.mjs", Duration::from_secs(120), |command| {
        command
            .args(["--url", &pipeline.url(""), "--email", "ops@example.com", "--source", "gh"])
            .args(["--filter", "body.amount > 1000", "--transform", "{text: \"order \\(.order) paid\"}"])
            .args(["--expect-matched", "evt-d1,evt-d3", "--expect-unmatched", "evt-d2", "--expect-output", "paid"])
            .arg("--screenshot")
            .arg(&screenshot)
    })
    .await;
}
