//! The lists of the operator plane: time ranges and pages. Through the API (either store: a
//! time range that includes and excludes known rows on events, dead letters and the audit log,
//! the audit log by who and what, every page of a filtered list once); and in headless Chromium
//! (Debian's, driven by `scripts/e2e/console-lists.mjs`): page through dead letters and the
//! audit log with the filters kept, apply a range that hides and one that shows the rows, the
//! audit log's long details within the page, the console at phone width with no page-level
//! horizontal scroll, and in dark mode.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::operator_support::{OperatorPipeline, Options, run_browser, screenshot_dir};
use crate::support::TestDestination;

/// Every row id of a paged list, following `endCursor` `first` rows at a time; also how many
/// pages it took.
async fn every_page(
    pipeline: &OperatorPipeline,
    field: &str,
    kind: &str,
    filter: Value,
    first: i64,
) -> (Vec<String>, usize) {
    let query = format!(
        "query($filter: {kind}, $first: Int, $after: String) {{ {field}(filter: $filter, first: $first, after: $after) {{
           nodes {{ id }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let (mut ids, mut pages, mut after) = (Vec::new(), 0, Value::Null);
    loop {
        let data = pipeline.gql(&query, json!({ "filter": filter, "first": first, "after": after })).await;
        let page = &data[field];
        pages += 1;
        ids.extend(page["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        if page["pageInfo"]["hasNextPage"] != true {
            return (ids, pages);
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

/// An RFC 3339 time `ms` milliseconds from now (negative: ago).
fn from_now(ms: i64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(ms);
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn time_ranges_and_pages_select_the_same_rows_on_every_list() {
    let destination = TestDestination::answering(400).await;
    let pipeline = OperatorPipeline::start(&[("orders", destination.url(), "")], Options::default()).await;
    let before_all = from_now(-1);
    for n in 0..7 {
        assert_eq!(pipeline.send(&format!("evt-range-{n}"), "push", b"{}").await, 202);
    }
    pipeline
        .wait_for("seven dead letters", "{ counts { deadLettered } }", json!({}), |d| d["counts"]["deadLettered"] == 7)
        .await;
    for n in 0..5 {
        pipeline
            .gql(
                "mutation($n: String!) { createApiToken(name: $n, role: VIEWER) { token } }",
                json!({ "n": format!("t{n}") }),
            )
            .await;
    }
    let after_all = from_now(1);

    // Events by receipt: [before, after) has them all, two at a time; ranges ending before them
    // or starting after them have none.
    let range = json!({ "receivedAfter": before_all, "receivedBefore": after_all });
    let (events, pages) = every_page(&pipeline, "events", "EventFilter", range, 2).await;
    assert_eq!((events.iter().collect::<BTreeSet<_>>().len(), pages), (7, 4));
    let (none, _) = every_page(&pipeline, "events", "EventFilter", json!({ "receivedBefore": before_all }), 2).await;
    assert!(none.is_empty(), "{none:?}");
    let (none, _) = every_page(&pipeline, "events", "EventFilter", json!({ "receivedAfter": after_all }), 2).await;
    assert!(none.is_empty(), "{none:?}");

    // Dead letters by when they were dead-lettered, the other filters kept on every page.
    let range = json!({ "deadAfter": before_all, "deadBefore": after_all, "destination": "orders" });
    let (dead, pages) = every_page(&pipeline, "deadLetters", "DeadLetterFilter", range, 3).await;
    assert_eq!((dead.iter().collect::<BTreeSet<_>>().len(), pages), (7, 3));
    let (none, _) =
        every_page(&pipeline, "deadLetters", "DeadLetterFilter", json!({ "deadBefore": before_all }), 3).await;
    assert!(none.is_empty(), "{none:?}");

    // The audit log by time, who and what: the five tokens, two at a time.
    let made = json!({ "from": before_all, "to": after_all, "actor": "token:bootstrap", "action": "CREATE_API_TOKEN" });
    let (rows, pages) = every_page(&pipeline, "auditLog", "AuditFilter", made.clone(), 2).await;
    assert_eq!((rows.iter().collect::<BTreeSet<_>>().len(), pages), (5, 3));
    let whole = pipeline.gql("{ auditLog(first: 100) { nodes { id action } } }", json!({})).await;
    assert_eq!(whole["auditLog"]["nodes"].as_array().unwrap().len(), 5, "nothing else was audited");
    for excluding in [
        json!({ "to": before_all }),
        json!({ "from": after_all }),
        json!({ "actor": "token:someone-else" }),
        json!({ "actor": "token:boot" }),
        json!({ "action": "SIGN_IN" }),
    ] {
        let (none, _) = every_page(&pipeline, "auditLog", "AuditFilter", excluding.clone(), 2).await;
        assert!(none.is_empty(), "{excluding}: {none:?}");
    }
    let answer = pipeline
        .gql_as(
            crate::operator_support::ADMIN_TOKEN,
            "{ auditLog(filter: { from: \"yesterday\" }) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("RFC 3339"), "{answer}");
}

#[tokio::test]
async fn the_console_pages_through_lists_by_time_range_at_desktop_and_phone_width_light_and_dark() {
    let destination = TestDestination::answering(400).await;
    let pipeline =
        OperatorPipeline::start(&[("orders", destination.url(), "")], Options { oidc: true, ..Options::default() })
            .await;
    // Twelve dead letters the test pages through (ten, then two), three others its filter leaves out.
    for n in 1..=12 {
        assert_eq!(pipeline.send(&format!("evt-list-{n:02}"), "push", b"{\"n\":1}").await, 202);
    }
    for n in 1..=3 {
        assert_eq!(pipeline.send(&format!("other-{n}"), "push", b"{}").await, 202);
    }
    let dead = pipeline
        .wait_for(
            "fifteen dead letters",
            "{ deadLetters(first: 100) { nodes { id event { eventId } } } }",
            json!({}),
            |d| d["deadLetters"]["nodes"].as_array().unwrap().len() == 15,
        )
        .await;
    // Twelve audit rows of one kind, and one with a detail far wider than its column.
    for n in 1..=12 {
        pipeline
            .gql(
                "mutation($n: String!) { createApiToken(name: $n, role: VIEWER) { token } }",
                json!({ "n": format!("list-{n}") }),
            )
            .await;
    }
    let other =
        dead["deadLetters"]["nodes"].as_array().unwrap().iter().find(|n| n["event"]["eventId"] == "other-1").unwrap();
    let note = format!("{} end-of-note", "a-very-long-note-without-spaces/".repeat(14));
    pipeline
        .gql(
            "mutation($id: ID!, $note: String) { dismissDeadLetter(id: $id, note: $note) { status } }",
            json!({ "id": other["id"], "note": note }),
        )
        .await;

    let screenshots = screenshot_dir(&pipeline);
    std::fs::create_dir_all(&screenshots).unwrap();
    run_browser("console-lists.mjs", Duration::from_secs(180), |command| {
        command
            .args(["--url", &pipeline.url(""), "--email", "ops@example.com", "--text", "evt-list-", "--rows", "12"])
            .args(["--audit-rows", "12", "--note-end", "end-of-note"])
            .arg("--screenshots")
            .arg(&screenshots)
    })
    .await;
    // The browser only read: no dead letter was replayed or dismissed on its way.
    let counts = pipeline.gql("{ counts { deadLettered dismissed } }", json!({})).await;
    assert_eq!(counts["counts"], json!({ "deadLettered": 14, "dismissed": 1 }));
}
