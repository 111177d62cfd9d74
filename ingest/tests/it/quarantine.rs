//! Requests that fail verification: diagnosed (metric label and log line), kept in the
//! quarantine stream with credentials redacted, bounded under a flood, and answered as tersely
//! as before.

use std::time::Duration;

use async_nats::jetstream;
use inlet_shared::config::QuarantineSlot;
use inlet_shared::envelope::REDACTED_VALUE;
use inlet_shared::quarantine::QuarantinedRequest;
use inlet_shared::signature::{DiagnosisKind, sign};
use inlet_shared::test_util::TestNats;

use crate::connections::IngestProcess;
use crate::support::{TestIngest, now, spawn_ingest};

const SECRET: &str = "whsec_test_secret";
const DIAGNOSES: &str = "inlet_ingest_signature_diagnoses_total";
const QUARANTINE: &str = "inlet_ingest_quarantine_total";
/// Stripe's own layout: pretty JSON, two spaces.
const PRETTY: &[u8] = b"{\n  \"id\": \"evt_q1\",\n  \"type\": \"charge.succeeded\"\n}";
const COMPACT: &[u8] = br#"{"id":"evt_q1","type":"charge.succeeded"}"#;

fn source(name: &str, extra: &str) -> String {
    format!(
        "failure_rate_limit = {{ per_second = 1000, burst = 1000 }}\n\
         [quarantine]\nkeep_first = 2\nmax_per_source = 3\nmax_body_bytes = 1000\n\
         [[sources]]\nname = \"{name}\"\nkind = \"stripe\"\nsecrets = [\"{SECRET}\"]\n{extra}\n"
    )
}

/// The worker's job in production: the quarantine stream, as the config says.
async fn quarantine_stream(ingest: &TestIngest, extra: &str, name: &str) -> jetstream::stream::Stream {
    let config = crate::support::test_config(&ingest.nats, &source(name, extra), &[]);
    let js = ingest.jetstream().await;
    inlet_shared::nats::ensure_quarantine_stream(&js, &config.stream, &config.quarantine, Duration::from_secs(10))
        .await
        .unwrap();
    js.get_stream(config.stream.quarantine_stream_name()).await.unwrap()
}

async fn kept(ingest: &TestIngest, source: &str, slot: QuarantineSlot) -> f64 {
    ingest.metric(QUARANTINE, &[("source", source), ("slot", slot.as_str()), ("outcome", "kept")]).await
}

async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message on `subject`, in order: (request, body).
async fn messages(stream: &jetstream::stream::Stream, subject: &str) -> Vec<(QuarantinedRequest, Vec<u8>)> {
    let mut found = Vec::new();
    let mut sequence = 1;
    while let Ok(message) = stream.direct_get_next_for_subject(subject, Some(sequence)).await {
        sequence = message.sequence + 1;
        let headers = message.headers.clone();
        let request = QuarantinedRequest::from_headers(|name| headers.get(name).map(|value| value.as_str())).unwrap();
        found.push((request, message.payload.to_vec()));
    }
    found
}

#[tokio::test]
async fn each_failure_is_diagnosed_counted_and_kept_redacted_and_the_answer_stays_terse() {
    let ingest = spawn_ingest(&source("q-diag", "")).await;
    let stream = quarantine_stream(&ingest, "", "q-diag").await;
    let first = "_INLET.INLET.quarantine.q-diag.first";
    let rest = "_INLET.INLET.quarantine.q-diag.rest";

    // Signed with a secret that is not configured, with credentials beside it.
    let mut unknown = sign::stripe("whsec_rotated", now(), COMPACT);
    unknown.push(("X-Api-Key".to_owned(), "sk_live_do_not_keep".to_owned()));
    unknown.push(("Authorization".to_owned(), "Bearer do_not_keep".to_owned()));
    let response = ingest.post("q-diag", &unknown, COMPACT).await;
    assert_eq!(response.status(), 401);
    let text = response.text().await.unwrap();
    assert_eq!(
        text, r#"{"error":"bad_signature","message":"signature rejected: no signature matched"}"#,
        "as terse as before"
    );
    // Re-serialised on the way: Stripe signed pretty JSON, a proxy forwarded it compact.
    let pretty_signed = sign::stripe(SECRET, now(), PRETTY);
    assert_eq!(ingest.post("q-diag", &pretty_signed, COMPACT).await.status(), 401);
    // No signature at all, then a stale one.
    assert_eq!(ingest.post("q-diag", &[], COMPACT).await.status(), 401);
    let stale = sign::stripe(SECRET, now() - 3600, COMPACT);
    assert_eq!(ingest.post("q-diag", &stale, COMPACT).await.status(), 400);

    for (diagnosis, count) in [
        (DiagnosisKind::UnknownSecret, 1.0),
        (DiagnosisKind::BodyChanged, 1.0),
        (DiagnosisKind::MissingHeader, 1.0),
        (DiagnosisKind::TimestampTooOld, 1.0),
        (DiagnosisKind::SecretEncoding, 0.0),
    ] {
        let labels = [("source", "q-diag"), ("diagnosis", diagnosis.as_str())];
        assert_eq!(ingest.metric(DIAGNOSES, &labels).await, count, "{diagnosis:?}");
    }
    eventually("four kept", async || {
        kept(&ingest, "q-diag", QuarantineSlot::First).await + kept(&ingest, "q-diag", QuarantineSlot::Rest).await
            == 4.0
    })
    .await;
    assert_eq!(ingest.stream_messages().await, 0, "nothing reaches the intake stream");

    let firsts = messages(&stream, first).await;
    let rests = messages(&stream, rest).await;
    assert_eq!(firsts.len(), 2, "keep_first = 2 after startup");
    assert_eq!(rests.len(), 2);
    let all: Vec<_> = firsts.iter().chain(&rests).collect();
    let diagnoses: Vec<DiagnosisKind> = all.iter().map(|(request, _)| request.diagnosis).collect();
    assert_eq!(
        diagnoses,
        [
            DiagnosisKind::UnknownSecret,
            DiagnosisKind::BodyChanged,
            DiagnosisKind::MissingHeader,
            DiagnosisKind::TimestampTooOld
        ]
    );
    let (unknown_kept, body) = &firsts[0];
    assert_eq!(body, COMPACT, "the body byte for byte");
    assert_eq!(unknown_kept.detail, "signed with a secret that is not configured");
    let stored = unknown_kept.original_headers.clone().unwrap();
    assert!(stored.contains(&format!("[\"x-api-key\",\"{REDACTED_VALUE}\"]")), "{stored}");
    assert!(!stored.contains("do_not_keep") && !stored.contains("authorization"), "{stored}");
    assert!(!stored.contains("stripe-signature"), "the signature is not among the shown headers: {stored}");
    let again = unknown_kept.headers_for_verification().unwrap();
    assert_eq!(again.get("stripe-signature").unwrap().to_str().unwrap(), unknown[0].1, "kept to verify again");
    assert!(firsts[1].0.detail.contains("JSON was re-serialised"), "{}", firsts[1].0.detail);
    assert!(rests[1].0.detail.contains("s more than the tolerance (300 s)"), "{}", rests[1].0.detail);
}

#[tokio::test]
async fn a_flood_stays_bounded_evicts_only_the_rest_slot_and_large_bodies_are_kept_without_them() {
    let ingest = spawn_ingest(&source("q-flood", "")).await;
    let stream = quarantine_stream(&ingest, "", "q-flood").await;
    let first = "_INLET.INLET.quarantine.q-flood.first";
    let rest = "_INLET.INLET.quarantine.q-flood.rest";

    // The real failure burst: a secret rotated at the provider, after a genuine request.
    let genuine = sign::stripe(SECRET, now(), COMPACT);
    assert_eq!(ingest.post("q-flood", &genuine, COMPACT).await.status(), 202);
    for n in 0..2 {
        let body = format!(r#"{{"id":"evt_real_{n}"}}"#);
        let rotated = sign::stripe("whsec_rotated", now(), body.as_bytes());
        assert_eq!(ingest.post("q-flood", &rotated, body.as_bytes()).await.status(), 401);
    }
    // Then a flood of junk, one of them over quarantine.max_body_bytes.
    for n in 0..20 {
        let body = if n == 19 { vec![b'x'; 5000] } else { format!("junk {n}").into_bytes() };
        assert_eq!(ingest.post("q-flood", &[], &body).await.status(), 401);
    }
    eventually("22 kept", async || {
        kept(&ingest, "q-flood", QuarantineSlot::First).await + kept(&ingest, "q-flood", QuarantineSlot::Rest).await
            == 22.0
    })
    .await;
    assert_eq!(kept(&ingest, "q-flood", QuarantineSlot::First).await, 2.0);
    let firsts = messages(&stream, first).await;
    let bodies: Vec<&[u8]> = firsts.iter().map(|(_, body)| body.as_slice()).collect();
    assert_eq!(bodies, [br#"{"id":"evt_real_0"}"#.as_slice(), br#"{"id":"evt_real_1"}"#], "the burst's start survives");
    let rests = messages(&stream, rest).await;
    assert_eq!(rests.len(), 3, "max_per_source bounds the slot; 17 of 20 evicted");
    let (large, body) = rests.last().unwrap();
    assert!(!large.body_kept && body.is_empty() && large.body_bytes == 5000, "kept without its body");
    let mut stream = stream;
    assert_eq!(stream.info().await.unwrap().state.messages, 5);
    // Eviction shows: kept counts every write, the stream holds five.
    assert_eq!(kept(&ingest, "q-flood", QuarantineSlot::Rest).await, 20.0);
}

#[tokio::test]
async fn a_source_can_keep_nothing() {
    let other =
        format!("quarantine = false\n[[sources]]\nname = \"q-on\"\nkind = \"stripe\"\nsecrets = [\"{SECRET}\"]");
    let ingest = spawn_ingest(&source("q-off", &other)).await;
    let mut stream = quarantine_stream(&ingest, &other, "q-off").await;
    let unknown = sign::stripe("whsec_rotated", now(), COMPACT);
    assert_eq!(ingest.post("q-off", &unknown, COMPACT).await.status(), 401);
    let labels = [("source", "q-off"), ("diagnosis", "unknown_secret")];
    assert_eq!(ingest.metric(DIAGNOSES, &labels).await, 1.0, "still diagnosed");
    // The writer keeps order: once a later failure of another source is kept, the first would
    // have been too.
    assert_eq!(ingest.post("q-on", &unknown, COMPACT).await.status(), 401);
    eventually("q-on kept", async || kept(&ingest, "q-on", QuarantineSlot::First).await == 1.0).await;
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    assert!(messages(&stream, "_INLET.INLET.quarantine.q-off.>").await.is_empty());
}

#[tokio::test]
async fn the_log_line_says_why_without_the_signature_or_secret() {
    let nats = TestNats::start();
    let ingest = IngestProcess::start(&nats, "").await;
    let pretty_signed = sign::stripe(SECRET, now(), PRETTY);
    assert_eq!(ingest.post(&pretty_signed, COMPACT).await, 401);
    let mut line = String::new();
    eventually("the log line", async || {
        line = ingest.log().lines().find(|l| l.contains("webhook signature rejected")).unwrap_or_default().to_owned();
        !line.is_empty()
    })
    .await;
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["level"], "WARN", "{line}");
    assert_eq!(json["fields"]["diagnosis"], "body_changed", "{line}");
    assert_eq!(json["fields"]["reason"], "mismatch", "{line}");
    assert!(json["fields"]["detail"].as_str().unwrap().contains("JSON was re-serialised"), "{line}");
    let signature = pretty_signed[0].1.split("v1=").nth(1).unwrap();
    assert!(!line.contains(signature) && !line.contains(SECRET), "{line}");
}
