//! A request kept in the quarantine stream after it failed verification: what ingest writes and
//! the worker reads (`[quarantine]`, `StreamConfig::quarantine_subject`).
//!
//! The payload is the raw body (empty when it was over `quarantine.max_body_bytes`); the rest
//! travels in NATS headers named here. The sender's headers are kept twice over: redacted as an
//! event keeps them (`Inlet-Original-Headers`, shown to admins), and the few the verifier reads
//! (signature, timestamp, id: [`crate::signature::Verifier::verification_header_names`]) verbatim
//! in `Inlet-Verification-Headers`, which is only ever read to verify the request again and is
//! never shown, logged or echoed.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::envelope::{
    HEADER_CONTENT_TYPE, HEADER_ORIGINAL_HEADERS, HEADER_RECEIVED_AT, HEADER_SCHEME, HEADER_SOURCE, REDACTED_VALUE,
};
use crate::signature::{DiagnosisKind, SchemeKind};

/// Version of this layout, in [`HEADER_VERSION`].
pub const QUARANTINE_VERSION: &str = "1";
/// Layout version.
pub const HEADER_VERSION: &str = "Inlet-Quarantine";
/// The diagnosis label ([`DiagnosisKind::as_str`]).
pub const HEADER_DIAGNOSIS: &str = "Inlet-Diagnosis";
/// The diagnosis in one sentence ([`crate::signature::Diagnosis::detail`]).
pub const HEADER_DIAGNOSIS_DETAIL: &str = "Inlet-Diagnosis-Detail";
/// JSON array of `[name, value]` pairs: the headers the verifier reads, verbatim. Never shown.
pub const HEADER_VERIFICATION_HEADERS: &str = "Inlet-Verification-Headers";
/// The body's size as received, in bytes.
pub const HEADER_BODY_BYTES: &str = "Inlet-Body-Bytes";
/// `false` when the body was not kept (over `quarantine.max_body_bytes`).
pub const HEADER_BODY_KEPT: &str = "Inlet-Body-Kept";

/// The most bytes of verification headers kept: far above any provider's, well within the
/// 64 KiB JetStream allows beside the 32 KiB of stored request headers.
pub const MAX_VERIFICATION_HEADERS_BYTES: usize = 16 * 1024;

/// What is kept of a request that failed verification, besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRequest {
    /// The source it was sent to.
    pub source: String,
    /// When ingest received it, Unix milliseconds (an admitted event keeps it).
    pub received_at_ms: u64,
    /// The source's kind when it was received.
    pub scheme: SchemeKind,
    /// Why it failed.
    pub diagnosis: DiagnosisKind,
    /// The diagnosis in one sentence.
    pub detail: String,
    /// The request's `Content-Type`.
    pub content_type: Option<String>,
    /// The request's headers as an event stores them (JSON pairs, credentials redacted).
    pub original_headers: Option<String>,
    /// The headers the verifier reads, verbatim (JSON pairs). `None` when they were over
    /// [`MAX_VERIFICATION_HEADERS_BYTES`]: the request cannot be verified again.
    pub verification_headers: Option<String>,
    /// The body's size as received.
    pub body_bytes: u64,
    /// Whether the payload is the body.
    pub body_kept: bool,
}

/// Why a message's headers are not a quarantined request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuarantineError {
    /// A required header is absent or empty.
    #[error("quarantine header {0} is missing")]
    Missing(&'static str),
    /// A header's value is not what the layout allows (or another version).
    #[error("quarantine header {0} is not valid")]
    Invalid(&'static str),
}

/// `[name, value]` pairs as JSON, the layout of both kept header lists.
pub fn header_pairs_json(pairs: &[(&str, &str)]) -> String {
    serde_json::to_string(pairs).unwrap_or_default()
}

impl QuarantinedRequest {
    /// The NATS headers of the message.
    pub fn to_headers(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let mut headers = vec![
            (HEADER_VERSION, Cow::Borrowed(QUARANTINE_VERSION)),
            (HEADER_SOURCE, Cow::Borrowed(self.source.as_str())),
            (HEADER_RECEIVED_AT, Cow::Owned(self.received_at_ms.to_string())),
            (HEADER_SCHEME, Cow::Borrowed(self.scheme.as_str())),
            (HEADER_DIAGNOSIS, Cow::Borrowed(self.diagnosis.as_str())),
            (HEADER_DIAGNOSIS_DETAIL, Cow::Borrowed(self.detail.as_str())),
            (HEADER_BODY_BYTES, Cow::Owned(self.body_bytes.to_string())),
            (HEADER_BODY_KEPT, Cow::Borrowed(if self.body_kept { "true" } else { "false" })),
        ];
        let optional = [
            (HEADER_CONTENT_TYPE, &self.content_type),
            (HEADER_ORIGINAL_HEADERS, &self.original_headers),
            (HEADER_VERIFICATION_HEADERS, &self.verification_headers),
        ];
        headers.extend(optional.into_iter().filter_map(|(name, value)| Some((name, Cow::Borrowed(value.as_deref()?)))));
        headers
    }

    /// Reads a quarantined request through `get` (a header's value by name).
    ///
    /// # Errors
    ///
    /// [`QuarantineError`] naming the first required header that is missing or invalid.
    pub fn from_headers<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<QuarantinedRequest, QuarantineError> {
        let required =
            |name: &'static str| get(name).filter(|value| !value.is_empty()).ok_or(QuarantineError::Missing(name));
        let optional = |name: &'static str| get(name).map(str::to_owned);
        if required(HEADER_VERSION)? != QUARANTINE_VERSION {
            return Err(QuarantineError::Invalid(HEADER_VERSION));
        }
        Ok(QuarantinedRequest {
            source: required(HEADER_SOURCE)?.to_owned(),
            received_at_ms: required(HEADER_RECEIVED_AT)?
                .parse()
                .map_err(|_| QuarantineError::Invalid(HEADER_RECEIVED_AT))?,
            scheme: SchemeKind::parse(required(HEADER_SCHEME)?).ok_or(QuarantineError::Invalid(HEADER_SCHEME))?,
            diagnosis: DiagnosisKind::parse(required(HEADER_DIAGNOSIS)?)
                .ok_or(QuarantineError::Invalid(HEADER_DIAGNOSIS))?,
            detail: optional(HEADER_DIAGNOSIS_DETAIL).unwrap_or_default(),
            content_type: optional(HEADER_CONTENT_TYPE),
            original_headers: optional(HEADER_ORIGINAL_HEADERS),
            verification_headers: optional(HEADER_VERIFICATION_HEADERS),
            body_bytes: required(HEADER_BODY_BYTES)?
                .parse()
                .map_err(|_| QuarantineError::Invalid(HEADER_BODY_BYTES))?,
            body_kept: match required(HEADER_BODY_KEPT)? {
                "true" => true,
                "false" => false,
                _ => return Err(QuarantineError::Invalid(HEADER_BODY_KEPT)),
            },
        })
    }

    /// The request's headers as the verifier and [`crate::signature::Verified::identify`] need
    /// them again: the stored ones but those redacted, and the verification headers verbatim.
    /// `None` when the verification headers were not kept.
    pub fn headers_for_verification(&self) -> Option<HeaderMap> {
        let verification = parse_pairs(self.verification_headers.as_deref()?)?;
        let stored = self.original_headers.as_deref().and_then(parse_pairs).unwrap_or_default();
        let mut headers = HeaderMap::new();
        for (name, value) in stored.iter().filter(|(_, value)| value != REDACTED_VALUE).chain(&verification) {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                // The verification headers come last and replace a stored (redacted) copy.
                headers.insert(name, value);
            }
        }
        Some(headers)
    }
}

fn parse_pairs(json: &str) -> Option<Vec<(String, String)>> {
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sample() -> QuarantinedRequest {
        QuarantinedRequest {
            source: "stripe".to_owned(),
            received_at_ms: 1_700_000_000_123,
            scheme: SchemeKind::Stripe,
            diagnosis: DiagnosisKind::UnknownSecret,
            detail: "signed with a secret that is not configured".to_owned(),
            content_type: Some("application/json".to_owned()),
            original_headers: Some(header_pairs_json(&[("user-agent", "Stripe/1.0"), ("x-api-key", REDACTED_VALUE)])),
            verification_headers: Some(header_pairs_json(&[("stripe-signature", "t=1,v1=ab")])),
            body_bytes: 42,
            body_kept: true,
        }
    }

    #[test]
    fn round_trips_through_headers() {
        let request = sample();
        let headers: Vec<(&str, String)> =
            request.to_headers().into_iter().map(|(name, value)| (name, value.into_owned())).collect();
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(QuarantinedRequest::from_headers(get), Ok(request));
        let missing = |name: &str| if name == HEADER_DIAGNOSIS { None } else { get(name) };
        assert_eq!(QuarantinedRequest::from_headers(missing), Err(QuarantineError::Missing(HEADER_DIAGNOSIS)));
    }

    #[test]
    fn verification_headers_replace_redacted_ones_and_redacted_values_stay_out() {
        let headers = sample().headers_for_verification().unwrap();
        assert_eq!(headers.get("stripe-signature").unwrap(), "t=1,v1=ab");
        assert_eq!(headers.get("user-agent").unwrap(), "Stripe/1.0");
        assert!(headers.get("x-api-key").is_none(), "a redacted value is no value");
        let without = QuarantinedRequest { verification_headers: None, ..sample() };
        assert!(without.headers_for_verification().is_none());
    }
}
