//! A captured request sent again is the same event: whatever unsigned headers it changes, and for
//! every replay the tolerance accepts. Derived ids never collide with provider ids.

use std::time::Duration;

use async_nats::jetstream;
use inlet_shared::config::StreamConfig;
use inlet_shared::envelope;
use inlet_shared::signature::{body_id, sign};
use inlet_shared::test_util::TestNats;

use crate::support::{STREAM, header, now, spawn_ingest, start, test_config};

const SOURCES: &str = r#"
[[sources]]
name = "github"
kind = "github"
secrets = ["gh-secret"]

[[sources]]
name = "shopify"
kind = "shopify"
secrets = ["shop-secret"]

[[sources]]
name = "acme"
kind = "hmac"
secrets = ["acme-secret"]
[sources.hmac]
header = "X-Acme-Signature"
timestamp_header = "X-Acme-Timestamp"
signed_payload = "{timestamp}.{body}"
id_header = "X-Acme-Delivery"
type_header = "X-Acme-Event"

[[sources]]
name = "stripe"
kind = "stripe"
secrets = ["whsec_test_secret"]
"#;

/// `headers` with the value of `name` (case-insensitive) replaced by `value`, or added.
fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case(name)).cloned().collect();
    out.push((name.to_owned(), value.to_owned()));
    out
}

#[tokio::test]
async fn a_captured_request_replayed_with_a_new_unsigned_id_and_type_is_a_duplicate() {
    let ingest = spawn_ingest(SOURCES).await;
    let body = br#"{"action":"opened","number":7}"#;
    let acme_recipe = inlet_shared::config::Config::parse(SOURCES, &Default::default())
        .unwrap()
        .source("acme")
        .unwrap()
        .hmac
        .clone()
        .unwrap();
    let mut acme = sign::hmac(&acme_recipe, "acme-secret", Some(now()), Some("dlv-1"), body);
    acme.push(("X-Acme-Event".into(), "order.created".into()));
    // (source, captured request, id header, type header, the captured id and type)
    let cases = [
        ("github", sign::github("gh-secret", "d-1", "pull_request", body), "X-GitHub-Delivery", "X-GitHub-Event"),
        (
            "shopify",
            sign::shopify("shop-secret", "w-1", "orders/create", body),
            "X-Shopify-Webhook-Id",
            "X-Shopify-Topic",
        ),
        ("acme", acme, "X-Acme-Delivery", "X-Acme-Event"),
    ];
    for (index, (source, captured, id_header, type_header)) in cases.iter().enumerate() {
        let first = ingest.post(source, captured, body).await;
        assert_eq!(first.status(), 202, "{source}");
        let answer: serde_json::Value = first.json().await.unwrap();
        assert_eq!(answer["event_id"], body_id(body), "{source}: the body hash is the dedup key");
        let provider_id = captured.iter().find(|(n, _)| n.eq_ignore_ascii_case(id_header)).unwrap().1.clone();

        // The attacker keeps the signed body and signature, and invents a new delivery id and a
        // type that a route sends elsewhere.
        let replay = with(&with(captured, id_header, "forged-2"), type_header, "member_added");
        let second = ingest.post(source, &replay, body).await;
        assert_eq!(second.status(), 200, "{source}: a replay under a new id is the same event");
        let answer: serde_json::Value = second.json().await.unwrap();
        assert_eq!(answer["status"], "duplicate");
        // Without an id header at all, too.
        let stripped: Vec<_> = captured.iter().filter(|(n, _)| !n.eq_ignore_ascii_case(id_header)).cloned().collect();
        assert_eq!(ingest.post(source, &stripped, body).await.status(), 200, "{source}");

        // Stored once, as first received; the provider's id is kept for display only.
        let sequence = index as u64 + 1;
        assert_eq!(ingest.stream_messages().await, sequence, "{source}: stored once");
        let message = ingest.message(sequence).await;
        assert_eq!(header(&message, envelope::HEADER_EVENT_ID), Some(body_id(body)));
        assert_eq!(header(&message, envelope::HEADER_ID_ORIGIN).as_deref(), Some("body_sha256_unsigned_id"));
        assert_eq!(header(&message, envelope::HEADER_PROVIDER_EVENT_ID), Some(provider_id));
        let first_type = captured.iter().find(|(n, _)| n.eq_ignore_ascii_case(type_header)).unwrap().1.clone();
        assert_eq!(header(&message, envelope::HEADER_EVENT_TYPE), Some(first_type), "{source}");
    }
}

#[tokio::test]
async fn a_provider_id_spelled_like_a_body_hash_is_its_own_event() {
    let ingest = spawn_ingest(SOURCES).await;
    // An event without an id: its id is the hash of its body.
    let anonymous = br#"{"object":"event","type":"charge.succeeded"}"#;
    let first = ingest.post("stripe", &sign::stripe("whsec_test_secret", now(), anonymous), anonymous).await;
    assert_eq!(first.status(), 202);
    // Another event whose provider id is spelled exactly like that hash.
    let body = format!(r#"{{"id":"{}","type":"charge.succeeded"}}"#, body_id(anonymous));
    let second =
        ingest.post("stripe", &sign::stripe("whsec_test_secret", now(), body.as_bytes()), body.as_bytes()).await;
    assert_eq!(second.status(), 202, "a different event, not a duplicate");
    let answer: serde_json::Value = second.json().await.unwrap();
    assert_ne!(answer["event_id"], body_id(anonymous));
    assert!(answer["event_id"].as_str().unwrap().starts_with("id-sha256:"));
    assert_eq!(ingest.stream_messages().await, 2);
    let message = ingest.message(2).await;
    assert_eq!(header(&message, envelope::HEADER_ID_ORIGIN).as_deref(), Some("hashed_provider_id"));
}

#[tokio::test]
async fn a_stream_created_with_the_old_window_gets_the_configured_one() {
    let nats = TestNats::start();
    // The stream as an earlier release created it: a 2-minute duplicate window.
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut old = inlet_shared::nats::stream_config(&StreamConfig::default());
    old.duplicate_window = Duration::from_secs(120);
    js.create_stream(old).await.unwrap();

    let config = test_config(&nats, SOURCES, &[]);
    assert_eq!(config.stream.duplicate_window, Duration::from_secs(600), "the default");
    let ingest = start(config, nats).await;
    let mut stream = ingest.jetstream().await.get_stream(STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.duplicate_window, Duration::from_secs(600), "updated at startup");
}
