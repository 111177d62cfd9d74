//! What is kept of the sender's request headers: credentials never reach the stored event (every
//! viewer of the console sees its headers).

use inlet_shared::envelope::{self, HeaderPatterns};
use inlet_shared::signature::sign;
use inlet_shared::test_util::TestNats;

use crate::support::{TestIngest, header, spawn_ingest, start, test_config};

const SOURCES: &str = r#"
[[sources]]
name = "github"
kind = "github"
secrets = ["gh-secret"]
"#;

const SECRETS: [&str; 4] = ["sk_live_do_not_show", "tok-do-not-show", "csrf-do-not-show", "internal-do-not-show"];

/// Posts a signed GitHub webhook carrying credential-like headers; returns the stored headers.
async fn stored_headers(ingest: &TestIngest) -> (Vec<(String, String)>, String) {
    let body = br#"{"zen":"Design for failure."}"#;
    let mut headers = sign::github("gh-secret", "d-42", "ping", body);
    for (name, value) in [
        ("X-Api-Key", SECRETS[0]),
        ("X-Auth-Token", SECRETS[1]),
        ("X-Csrf-Token", SECRETS[2]),
        ("X-Internal-User", SECRETS[3]),
        ("X-Request-Id", "req-7"),
    ] {
        headers.push((name.to_owned(), value.to_owned()));
    }
    let response = ingest.post("github", &headers, body).await;
    assert_eq!(response.status(), 202);
    let message = ingest.message(1).await;
    let json = header(&message, envelope::HEADER_ORIGINAL_HEADERS).unwrap();
    let pairs: Vec<(String, String)> = serde_json::from_str(&json).unwrap();
    (pairs, json)
}

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_webhook_with_an_api_key_is_stored_without_its_value() {
    let ingest = spawn_ingest(SOURCES).await;
    let (pairs, json) = stored_headers(&ingest).await;
    // The name stays (it helps debugging), the value does not.
    assert_eq!(value(&pairs, "x-api-key"), Some("<redacted>"));
    assert_eq!(value(&pairs, "x-auth-token"), Some("<redacted>"));
    assert_eq!(value(&pairs, "x-csrf-token"), Some("<redacted>"));
    for secret in &SECRETS[..3] {
        assert!(!json.contains(secret), "{secret} stored: {json}");
    }
    // Identity and ordinary headers are kept as sent.
    assert_eq!(value(&pairs, "x-github-delivery"), Some("d-42"));
    assert_eq!(value(&pairs, "x-github-event"), Some("ping"));
    assert_eq!(value(&pairs, "x-request-id"), Some("req-7"));
    assert_eq!(value(&pairs, "x-internal-user"), Some(SECRETS[3]), "not in the default list");
    // The signature header is still dropped altogether.
    assert_eq!(value(&pairs, "x-hub-signature-256"), None);
}

#[tokio::test]
async fn the_redacted_list_is_configurable() {
    let nats = TestNats::start();
    let mut config = test_config(&nats, SOURCES, &[]);
    config.ingest.redact_headers = HeaderPatterns::parse(&["x-internal-*", "*-token"]).unwrap();
    let ingest = start(config, nats).await;
    let (pairs, _) = stored_headers(&ingest).await;
    assert_eq!(value(&pairs, "x-internal-user"), Some("<redacted>"));
    assert_eq!(value(&pairs, "x-auth-token"), Some("<redacted>"));
    assert_eq!(value(&pairs, "x-api-key"), Some(SECRETS[0]), "the configured list replaces the defaults");
}
