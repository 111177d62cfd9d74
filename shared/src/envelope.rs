//! The JetStream message `ingest` publishes and `worker` consumes.
//!
//! The payload is the sender's raw body, byte for byte, so it can be re-verified and delivered
//! unchanged; everything else travels in NATS headers named here. Changing a header is a
//! protocol change: bump [`ENVELOPE_VERSION`], regenerate `schemas/envelope.v1.json` (the
//! freshness test says how) and keep the worker able to read the previous version.
//!
//! Readers are tolerant: unknown headers are ignored, so a newer `ingest` can add one during a
//! rolling deploy without breaking an older `worker`.

use serde_json::{Value, json};

/// Current envelope version, carried in [`HEADER_VERSION`].
pub const ENVELOPE_VERSION: &str = "1";

/// JetStream's deduplication header: `{source}:{event_id}`.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Envelope version.
pub const HEADER_VERSION: &str = "Inlet-Envelope";
/// Source name from the config.
pub const HEADER_SOURCE: &str = "Inlet-Source";
/// The dedup id: the signed provider event id, or a derived `sha256:` (body) or `id-sha256:`
/// (hashed provider id) id.
pub const HEADER_EVENT_ID: &str = "Inlet-Event-Id";
/// Where the event id came from: `provider`, `hashed_provider_id`, `body_sha256`,
/// `body_sha256_unsigned_id`.
pub const HEADER_ID_ORIGIN: &str = "Inlet-Id-Origin";
/// The provider's event id as sent when the signature does not cover it (origin
/// `body_sha256_unsigned_id`: GitHub, Shopify, `hmac` recipes without `{id}`), for display and
/// correlation; never a dedup key. Added within envelope version 1: readers ignore it.
pub const HEADER_PROVIDER_EVENT_ID: &str = "Inlet-Provider-Event-Id";
/// Provider event type, when it has one.
pub const HEADER_EVENT_TYPE: &str = "Inlet-Event-Type";
/// When ingest received the request, Unix milliseconds.
pub const HEADER_RECEIVED_AT: &str = "Inlet-Received-At";
/// Which signature scheme verified it (`stripe`, `standard`, …).
pub const HEADER_SCHEME: &str = "Inlet-Scheme";
/// Which configured secret matched (0-based index, for rotation tracking).
pub const HEADER_SECRET_INDEX: &str = "Inlet-Secret-Index";
/// The request's `Content-Type`, delivered unchanged.
pub const HEADER_CONTENT_TYPE: &str = "Inlet-Content-Type";
/// JSON array of `[name, value]` pairs: the sender's request headers, minus signatures,
/// credentials and hop-by-hop headers.
pub const HEADER_ORIGINAL_HEADERS: &str = "Inlet-Original-Headers";

/// Message id JetStream deduplicates on.
pub fn message_id(source: &str, event_id: &str) -> String {
    format!("{source}:{event_id}")
}

/// Request headers never stored or forwarded: hop-by-hop, transport and credentials.
pub const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "expect",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// JSON Schema describing the header set (committed as `schemas/envelope.v1.json`).
pub fn json_schema() -> Value {
    let string = |description: &str| json!({ "type": "string", "description": description });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://inlet.dev/schemas/envelope.v1.json",
        "title": "Inlet JetStream envelope v1 (NATS headers; the payload is the raw request body)",
        "type": "object",
        "required": [HEADER_MSG_ID, HEADER_VERSION, HEADER_SOURCE, HEADER_EVENT_ID, HEADER_ID_ORIGIN,
                     HEADER_RECEIVED_AT, HEADER_SCHEME, HEADER_SECRET_INDEX],
        "properties": {
            HEADER_MSG_ID: string("`{source}:{event_id}`; JetStream deduplicates on it within the stream's duplicate window"),
            HEADER_VERSION: { "const": ENVELOPE_VERSION },
            HEADER_SOURCE: { "type": "string", "pattern": "^[a-z0-9_-]{1,64}$", "description": "source name from the config" },
            HEADER_EVENT_ID: { "type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$",
                               "description": "dedup id: the signed provider event id, `sha256:<hex>` of the body when the provider gives none or does not sign it, or `id-sha256:<hex>` of a provider id unusable as is (see Inlet-Id-Origin)" },
            HEADER_ID_ORIGIN: { "enum": ["provider", "hashed_provider_id", "body_sha256", "body_sha256_unsigned_id"] },
            HEADER_PROVIDER_EVENT_ID: { "type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$",
                                        "description": "the provider's event id as sent, when the signature does not cover it (Inlet-Id-Origin `body_sha256_unsigned_id`); for display, never a dedup key" },
            HEADER_EVENT_TYPE: string("provider event type, when the provider has one"),
            HEADER_RECEIVED_AT: { "type": "string", "pattern": "^[0-9]+$", "description": "Unix milliseconds when ingest received the request" },
            HEADER_SCHEME: { "enum": ["stripe", "standard", "github", "shopify", "slack", "hmac"] },
            HEADER_SECRET_INDEX: { "type": "string", "pattern": "^[0-9]+$", "description": "0-based index of the configured secret that matched" },
            HEADER_CONTENT_TYPE: string("the request's Content-Type"),
            HEADER_ORIGINAL_HEADERS: string("JSON array of [name, value] pairs: request headers without signatures, credentials and hop-by-hop headers"),
        },
        "additionalProperties": true,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// `schemas/envelope.v1.json` must match [`json_schema`]; `UPDATE_SCHEMAS=1` rewrites it.
    #[test]
    fn envelope_schema_is_fresh() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/envelope.v1.json");
        let actual = format!("{}\n", serde_json::to_string_pretty(&json_schema()).unwrap());
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &actual).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed, actual,
            "schemas/envelope.v1.json is stale: run UPDATE_SCHEMAS=1 cargo test -p inlet-shared"
        );
    }

    #[test]
    fn message_id_joins_source_and_event() {
        assert_eq!(message_id("stripe", "evt_1"), "stripe:evt_1");
    }
}
