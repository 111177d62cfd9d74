//! The JetStream message `ingest` publishes and `worker` consumes.
//!
//! The payload is the sender's raw body, byte for byte, so it can be re-verified and delivered
//! unchanged; everything else travels in NATS headers named here. Changing a header is a
//! protocol change: bump the version, regenerate `schemas/envelope.v*.json` (the freshness test
//! says how) and keep the worker able to read the previous version.
//!
//! Version 1 carries the body as the payload. Version 2 (a *claim check*) carries no payload:
//! the body is an object of the bodies bucket (`crate::claim_check`), named with its size and
//! SHA-256 in [`HEADER_BODY_OBJECT`], [`HEADER_BODY_SIZE`] and [`HEADER_BODY_SHA256`]; ingest
//! writes it for bodies over `ingest.claim_check_threshold_bytes` only, so a worker that reads
//! only version 1 still records every small event, but must be upgraded before ingest
//! (`docs/operations.md`).
//!
//! Readers are tolerant: unknown headers are ignored, so a newer `ingest` can add one during a
//! rolling deploy without breaking an older `worker`.

use serde_json::{Value, json};

use std::borrow::Cow;

use crate::signature::{IdOrigin, SchemeKind};

/// Envelope version of a message whose payload is the body, carried in [`HEADER_VERSION`].
pub const ENVELOPE_VERSION: &str = "1";
/// Envelope version of a message whose body is in the bodies bucket (a claim check).
pub const ENVELOPE_VERSION_CLAIM_CHECK: &str = "2";

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
/// credentials and hop-by-hop headers; the value of headers matching `ingest.redact_headers` is
/// [`REDACTED_VALUE`].
pub const HEADER_ORIGINAL_HEADERS: &str = "Inlet-Original-Headers";
/// W3C trace context of ingest's publish span, when traces are on (`[telemetry.traces]`): the
/// worker's record span continues that trace. Inlet's own, never the provider's (a provider's
/// `traceparent` is only linked, and stays among the stored request headers). Added within
/// envelope version 1: readers ignore it, and an unusable value only starts a new trace.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Version 2 only: the name of the body's object in the bodies bucket.
pub const HEADER_BODY_OBJECT: &str = "Inlet-Body-Object";
/// Version 2 only: the body's length in bytes.
pub const HEADER_BODY_SIZE: &str = "Inlet-Body-Size";
/// Version 2 only: the body's SHA-256, lowercase hex.
pub const HEADER_BODY_SHA256: &str = "Inlet-Body-Sha256";

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

/// Value stored in `Inlet-Original-Headers` in place of a redacted header's.
pub const REDACTED_VALUE: &str = "<redacted>";

/// Default `ingest.redact_headers`: request headers that commonly carry credentials, stored with
/// their name and [`REDACTED_VALUE`] (the stored headers are shown to every viewer). The
/// `authorization`, `cookie` and `proxy-authorization` headers are dropped altogether
/// ([`DROPPED_REQUEST_HEADERS`]), and so is the signature header of the source's own kind.
pub const DEFAULT_REDACTED_HEADERS: &[&str] = &[
    "*-key",
    "*-token",
    "*-secret",
    "*-password",
    "*-apikey",
    "*-authorization",
    "*-signature",
    "*-signature-ed25519",
    "*-hmac-sha256",
    "signature",
    "apikey",
    "token",
    "secret",
    "password",
];

/// Header-name patterns, case-insensitive: `x-api-key` (exactly), `*-token` (ending in),
/// `x-acme-*` (starting with) or `*` (every header). Config: `ingest.redact_headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct HeaderPatterns {
    exact: Vec<String>,
    prefixes: Vec<String>,
    suffixes: Vec<String>,
    every: bool,
}

impl HeaderPatterns {
    /// Parses `patterns`.
    ///
    /// # Errors
    ///
    /// A message naming the first pattern that is not a header name with at most one `*`, at its
    /// start or end.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<HeaderPatterns, String> {
        let mut parsed = HeaderPatterns::default();
        for (index, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref().to_ascii_lowercase();
            if pattern == "*" {
                parsed.every = true;
                continue;
            }
            let (text, list) = if let Some(suffix) = pattern.strip_prefix('*') {
                (suffix, &mut parsed.suffixes)
            } else if let Some(prefix) = pattern.strip_suffix('*') {
                (prefix, &mut parsed.prefixes)
            } else {
                (pattern.as_str(), &mut parsed.exact)
            };
            if text.is_empty() || text.contains('*') || http::HeaderName::from_bytes(text.as_bytes()).is_err() {
                return Err(format!(
                    "entry {index} `{pattern}` is not a header name, `*suffix`, `prefix*` or `*` (one `*`, at the start or end)"
                ));
            }
            list.push(text.to_owned());
        }
        Ok(parsed)
    }

    /// The built-in [`DEFAULT_REDACTED_HEADERS`].
    pub fn default_redacted() -> HeaderPatterns {
        // The defaults are valid (a unit test says so); an empty set would be the fallback.
        HeaderPatterns::parse(DEFAULT_REDACTED_HEADERS).unwrap_or_default()
    }

    /// Whether header `name` matches one of the patterns (compared case-insensitively).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.every
            || self.exact.contains(&name)
            || self.prefixes.iter().any(|prefix| name.starts_with(prefix.as_str()))
            || self.suffixes.iter().any(|suffix| name.ends_with(suffix.as_str()))
    }
}

impl TryFrom<Vec<String>> for HeaderPatterns {
    type Error = String;

    fn try_from(patterns: Vec<String>) -> Result<Self, Self::Error> {
        HeaderPatterns::parse(&patterns)
    }
}

/// The envelope versions, each with its committed JSON Schema (`schemas/envelope.v{n}.json`).
pub const SCHEMA_VERSIONS: [&str; 2] = [ENVELOPE_VERSION, ENVELOPE_VERSION_CLAIM_CHECK];

/// JSON Schema describing the header set of envelope `version` (committed as
/// `schemas/envelope.v{version}.json`): version 2 is version 1 plus the three required body
/// headers, with an empty payload.
pub fn json_schema(version: &str) -> Value {
    let claim_check = version == ENVELOPE_VERSION_CLAIM_CHECK;
    let string = |description: &str| json!({ "type": "string", "description": description });
    let title = if claim_check {
        "Inlet JetStream envelope v2 (NATS headers; no payload: the raw request body is the object Inlet-Body-Object of the bodies bucket)"
    } else {
        "Inlet JetStream envelope v1 (NATS headers; the payload is the raw request body)"
    };
    let mut required = vec![
        HEADER_MSG_ID,
        HEADER_VERSION,
        HEADER_SOURCE,
        HEADER_EVENT_ID,
        HEADER_ID_ORIGIN,
        HEADER_RECEIVED_AT,
        HEADER_SCHEME,
        HEADER_SECRET_INDEX,
    ];
    if claim_check {
        required.extend([HEADER_BODY_OBJECT, HEADER_BODY_SIZE, HEADER_BODY_SHA256]);
    }
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://inlet.dev/schemas/envelope.v{version}.json"),
        "title": title,
        "type": "object",
        "required": required,
        "properties": {
            HEADER_MSG_ID: string("`{source}:{event_id}`; JetStream deduplicates on it within the stream's duplicate window"),
            HEADER_VERSION: { "const": version },
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
            HEADER_ORIGINAL_HEADERS: string("JSON array of [name, value] pairs: request headers without signatures, credentials and hop-by-hop headers; headers matching `ingest.redact_headers` have the value `<redacted>`"),
            HEADER_TRACEPARENT: { "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                                  "description": "W3C trace context of ingest's publish span (traces on only); the worker's spans continue that trace. Never the provider's" },
        },
        "additionalProperties": true,
    });
    if claim_check && let Some(properties) = schema["properties"].as_object_mut() {
        properties.insert(HEADER_BODY_OBJECT.into(), json!({ "type": "string", "pattern": "^[a-z0-9_-]{1,64}/[0-9a-f]{64}$",
            "description": "name of the body's object in the bodies bucket `{stream}_BODIES`: `{source}/{sha256}`, so the same body is one object however often it is sent" }));
        properties.insert(
            HEADER_BODY_SIZE.into(),
            json!({ "type": "string", "pattern": "^[0-9]+$", "description": "the body's length in bytes" }),
        );
        properties.insert(HEADER_BODY_SHA256.into(), json!({ "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "the body's SHA-256, lowercase hex; the worker records the object only when it matches" }));
    }
    schema
}

/// The envelope of one intake message: everything ingest established about a webhook, carried
/// in the message's NATS headers ([`Envelope::to_headers`]) and read back by the worker
/// ([`Envelope::from_headers`]), which refuses a message that lacks a header the schema marks
/// required rather than guessing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Source name from the config.
    pub source: String,
    /// The dedup id (see [`HEADER_EVENT_ID`]).
    pub event_id: String,
    /// Where the event id came from.
    pub id_origin: IdOrigin,
    /// The provider's id when the signature does not cover it (see [`HEADER_PROVIDER_EVENT_ID`]).
    pub provider_event_id: Option<String>,
    /// The provider's event type, when it has one.
    pub event_type: Option<String>,
    /// When ingest received the request, Unix milliseconds.
    pub received_at_ms: u64,
    /// Which scheme verified it.
    pub scheme: SchemeKind,
    /// Which configured secret matched (0-based).
    pub secret_index: usize,
    /// The request's `Content-Type`.
    pub content_type: Option<String>,
    /// JSON array of the kept request headers (see [`HEADER_ORIGINAL_HEADERS`]).
    pub original_headers: Option<String>,
    /// Ingest's trace context (see [`HEADER_TRACEPARENT`]).
    pub traceparent: Option<String>,
    /// Where the body is when it is not the payload (envelope version 2).
    pub body: Option<BodyClaim>,
}

/// A claim check: the body is this object of the bodies bucket, of this size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyClaim {
    /// The object's name ([`HEADER_BODY_OBJECT`]).
    pub object: String,
    /// The body's length in bytes.
    pub size: u64,
    /// The body's SHA-256, lowercase hex.
    pub sha256: String,
}

/// Why a message's headers are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required header is absent or empty.
    #[error("envelope header {0} is missing")]
    Missing(&'static str),
    /// A header's value is not what the schema allows (or another envelope version).
    #[error("envelope header {0} is not valid")]
    Invalid(&'static str),
}

impl Envelope {
    /// The message id JetStream deduplicates on.
    pub fn message_id(&self) -> String {
        message_id(&self.source, &self.event_id)
    }

    /// The NATS headers of the message, in a stable order (borrowed where they can be: the
    /// stored request headers may be 32 KiB).
    pub fn to_headers(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let mut headers = vec![
            (HEADER_MSG_ID, Cow::Owned(self.message_id())),
            (HEADER_VERSION, Cow::Borrowed(self.version())),
            (HEADER_SOURCE, Cow::Borrowed(self.source.as_str())),
            (HEADER_EVENT_ID, Cow::Borrowed(self.event_id.as_str())),
            (HEADER_ID_ORIGIN, Cow::Borrowed(self.id_origin.as_str())),
        ];
        let optional = [
            (HEADER_PROVIDER_EVENT_ID, &self.provider_event_id),
            (HEADER_EVENT_TYPE, &self.event_type),
            (HEADER_CONTENT_TYPE, &self.content_type),
            (HEADER_ORIGINAL_HEADERS, &self.original_headers),
            (HEADER_TRACEPARENT, &self.traceparent),
        ];
        headers.extend([
            (HEADER_RECEIVED_AT, Cow::Owned(self.received_at_ms.to_string())),
            (HEADER_SCHEME, Cow::Borrowed(self.scheme.as_str())),
            (HEADER_SECRET_INDEX, Cow::Owned(self.secret_index.to_string())),
        ]);
        headers.extend(optional.into_iter().filter_map(|(name, value)| Some((name, Cow::Borrowed(value.as_deref()?)))));
        if let Some(body) = &self.body {
            headers.extend([
                (HEADER_BODY_OBJECT, Cow::Borrowed(body.object.as_str())),
                (HEADER_BODY_SIZE, Cow::Owned(body.size.to_string())),
                (HEADER_BODY_SHA256, Cow::Borrowed(body.sha256.as_str())),
            ]);
        }
        headers
    }

    /// The envelope version these headers are: 2 with a claim check, else 1.
    pub fn version(&self) -> &'static str {
        if self.body.is_some() { ENVELOPE_VERSION_CLAIM_CHECK } else { ENVELOPE_VERSION }
    }

    /// Reads an envelope through `get` (a header's value by name).
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] naming the first required header that is missing or invalid; optional
    /// headers that are absent are `None`.
    pub fn from_headers<'a>(get: impl Fn(&'static str) -> Option<&'a str>) -> Result<Envelope, EnvelopeError> {
        let required =
            |name: &'static str| get(name).filter(|value| !value.is_empty()).ok_or(EnvelopeError::Missing(name));
        let optional = |name: &'static str| get(name).map(str::to_owned);
        let body = match required(HEADER_VERSION)? {
            ENVELOPE_VERSION => None,
            ENVELOPE_VERSION_CLAIM_CHECK => {
                let sha256 = required(HEADER_BODY_SHA256)?;
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(EnvelopeError::Invalid(HEADER_BODY_SHA256));
                }
                Some(BodyClaim {
                    object: required(HEADER_BODY_OBJECT)?.to_owned(),
                    size: required(HEADER_BODY_SIZE)?.parse().map_err(|_| EnvelopeError::Invalid(HEADER_BODY_SIZE))?,
                    sha256: sha256.to_owned(),
                })
            }
            _ => return Err(EnvelopeError::Invalid(HEADER_VERSION)),
        };
        required(HEADER_MSG_ID)?;
        Ok(Envelope {
            source: required(HEADER_SOURCE)?.to_owned(),
            event_id: required(HEADER_EVENT_ID)?.to_owned(),
            id_origin: IdOrigin::parse(required(HEADER_ID_ORIGIN)?).ok_or(EnvelopeError::Invalid(HEADER_ID_ORIGIN))?,
            provider_event_id: optional(HEADER_PROVIDER_EVENT_ID),
            event_type: optional(HEADER_EVENT_TYPE),
            received_at_ms: required(HEADER_RECEIVED_AT)?
                .parse()
                .map_err(|_| EnvelopeError::Invalid(HEADER_RECEIVED_AT))?,
            scheme: SchemeKind::parse(required(HEADER_SCHEME)?).ok_or(EnvelopeError::Invalid(HEADER_SCHEME))?,
            secret_index: required(HEADER_SECRET_INDEX)?
                .parse()
                .map_err(|_| EnvelopeError::Invalid(HEADER_SECRET_INDEX))?,
            content_type: optional(HEADER_CONTENT_TYPE),
            original_headers: optional(HEADER_ORIGINAL_HEADERS),
            traceparent: optional(HEADER_TRACEPARENT),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// `schemas/envelope.v{1,2}.json` must match [`json_schema`]; `UPDATE_SCHEMAS=1` rewrites them.
    #[test]
    fn envelope_schema_is_fresh() {
        for version in SCHEMA_VERSIONS {
            let name = format!("envelope.v{version}.json");
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(&name);
            let actual = format!("{}\n", serde_json::to_string_pretty(&json_schema(version)).unwrap());
            if std::env::var_os("UPDATE_SCHEMAS").is_some() {
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(committed, actual, "schemas/{name} is stale: run UPDATE_SCHEMAS=1 cargo test -p inlet-shared");
        }
    }

    #[test]
    fn credential_like_headers_are_redacted_by_default_and_identity_headers_are_not() {
        let defaults = HeaderPatterns::default_redacted();
        assert_eq!(HeaderPatterns::parse(DEFAULT_REDACTED_HEADERS), Ok(defaults.clone()), "the defaults parse");
        for name in [
            "X-Api-Key",
            "api-key",
            "apikey",
            "x-apikey",
            "X-Auth-Token",
            "x-access-token",
            "x-csrf-token",
            "x-amz-security-token",
            "ocp-apim-subscription-key",
            "x-client-secret",
            "x-forwarded-authorization",
            "stripe-signature",
            "token",
        ] {
            assert!(defaults.matches(name), "{name} should be redacted");
        }
        for name in [
            "x-shopify-webhook-id",
            "x-shopify-topic",
            "x-shopify-shop-domain",
            "x-github-delivery",
            "x-github-event",
            "x-github-hook-id",
            "webhook-id",
            "webhook-timestamp",
            "svix-id",
            "x-slack-request-timestamp",
            "user-agent",
            "content-type",
            "x-request-id",
            "x-keyboard",
        ] {
            assert!(!defaults.matches(name), "{name} should be kept");
        }
    }

    #[test]
    fn header_patterns_are_exact_prefix_suffix_or_everything() {
        let patterns = HeaderPatterns::parse(&["X-Acme-*", "*-Sig", "exact"]).unwrap();
        assert!(patterns.matches("x-acme-anything") && patterns.matches("X-ACME-X"));
        assert!(patterns.matches("my-sig") && patterns.matches("exact"));
        assert!(!patterns.matches("exactly") && !patterns.matches("sig") && !patterns.matches("x-acme"));
        assert!(HeaderPatterns::parse(&["*"]).unwrap().matches("anything"));
        assert!(!HeaderPatterns::parse::<&str>(&[]).unwrap().matches("x-api-key"));
        for bad in ["", "*x*", "a*b", "has space", "**", "x:y"] {
            let error = HeaderPatterns::parse(&["ok", bad]).unwrap_err();
            assert!(error.starts_with("entry 1 "), "{bad}: {error}");
        }
    }

    fn sample() -> Envelope {
        Envelope {
            source: "gh".into(),
            event_id: "sha256:ab".into(),
            id_origin: IdOrigin::BodyHashUnsignedId,
            provider_event_id: Some("72d3162e".into()),
            event_type: Some("push".into()),
            received_at_ms: 1_764_000_000_123,
            scheme: SchemeKind::Github,
            secret_index: 1,
            content_type: Some("application/json".into()),
            original_headers: Some("[[\"x-github-event\",\"push\"]]".into()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            body: None,
        }
    }

    fn claim_checked() -> Envelope {
        Envelope {
            body: Some(BodyClaim {
                object: format!("gh/{}", "ab".repeat(32)),
                size: 26_214_400,
                sha256: "ab".repeat(32),
            }),
            ..sample()
        }
    }

    fn read(headers: &[(&'static str, Cow<'_, str>)]) -> Result<Envelope, EnvelopeError> {
        Envelope::from_headers(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_ref()))
    }

    #[test]
    fn an_envelope_round_trips_through_its_headers() {
        let full = sample();
        assert_eq!(read(&full.to_headers()).unwrap(), full);
        let bare = Envelope {
            provider_event_id: None,
            event_type: None,
            content_type: None,
            original_headers: None,
            traceparent: None,
            id_origin: IdOrigin::Provider,
            scheme: SchemeKind::Stripe,
            ..sample()
        };
        assert_eq!(read(&bare.to_headers()).unwrap(), bare);
        let names: Vec<&str> = full.to_headers().iter().map(|(name, _)| *name).collect();
        let schema = json_schema(ENVELOPE_VERSION);
        for required in schema["required"].as_array().unwrap() {
            assert!(names.contains(&required.as_str().unwrap()), "{required} not written");
        }
        assert!(!names.contains(&HEADER_BODY_OBJECT), "a body in the payload is version 1, without body headers");

        let checked = claim_checked();
        let headers = checked.to_headers();
        assert_eq!(read(&headers).unwrap(), checked);
        let version = headers.iter().find(|(name, _)| *name == HEADER_VERSION).map(|(_, v)| v.as_ref());
        assert_eq!(version, Some(ENVELOPE_VERSION_CLAIM_CHECK));
        let names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        for required in json_schema(ENVELOPE_VERSION_CLAIM_CHECK)["required"].as_array().unwrap() {
            assert!(names.contains(&required.as_str().unwrap()), "{required} not written in v2");
        }
    }

    #[test]
    fn a_claim_check_without_its_body_headers_or_with_a_bad_digest_is_refused() {
        let checked = claim_checked();
        for header in [HEADER_BODY_OBJECT, HEADER_BODY_SIZE, HEADER_BODY_SHA256] {
            let without: Vec<_> = checked.to_headers().into_iter().filter(|(name, _)| *name != header).collect();
            assert_eq!(read(&without), Err(EnvelopeError::Missing(header)));
        }
        for (header, value) in
            [(HEADER_BODY_SIZE, "large"), (HEADER_BODY_SHA256, "AB"), (HEADER_BODY_SHA256, &*"AB".repeat(32))]
        {
            let headers: Vec<_> = checked
                .to_headers()
                .into_iter()
                .map(|(name, v)| (name, if name == header { Cow::Borrowed(value) } else { v }))
                .collect();
            assert_eq!(read(&headers), Err(EnvelopeError::Invalid(header)), "{header}: {value}");
        }
        // Body headers on a version 1 message are not a claim check: its payload is the body.
        let plain = sample();
        let mut v1 = plain.to_headers();
        v1.extend(checked.to_headers().into_iter().filter(|(name, _)| name.starts_with("Inlet-Body-")));
        assert_eq!(read(&v1).unwrap().body, None);
    }

    #[test]
    fn required_headers_are_never_defaulted() {
        let schema = json_schema(ENVELOPE_VERSION);
        let envelope = sample();
        for required in schema["required"].as_array().unwrap() {
            let required = required.as_str().unwrap();
            let without: Vec<_> = envelope.to_headers().into_iter().filter(|(name, _)| *name != required).collect();
            let error = read(&without).unwrap_err();
            assert!(matches!(error, EnvelopeError::Missing(name) if name == required), "{required}: {error:?}");
        }
        for (header, value) in [
            (HEADER_VERSION, "3"),
            (HEADER_ID_ORIGIN, "guessed"),
            (HEADER_SCHEME, "md5"),
            (HEADER_SECRET_INDEX, "-1"),
            (HEADER_RECEIVED_AT, "yesterday"),
        ] {
            let headers: Vec<_> = envelope
                .to_headers()
                .into_iter()
                .map(|(name, v)| (name, if name == header { Cow::Borrowed(value) } else { v }))
                .collect();
            assert_eq!(read(&headers), Err(EnvelopeError::Invalid(header)));
        }
    }

    #[test]
    fn message_id_joins_source_and_event() {
        assert_eq!(message_id("stripe", "evt_1"), "stripe:evt_1");
    }
}
