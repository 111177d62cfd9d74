//! Why a request failed verification, as a closed set of causes ([`Diagnosis`]).
//!
//! [`Verifier::diagnose`] runs only after [`Verifier::verify`] refused a request. It parses the
//! headers again, then tries the usual mistakes with the configured secrets: the secret read in
//! another encoding (the `whsec_` text used verbatim or base64-decoded, hex), and the body as it
//! probably was before something on the way changed it (JSON re-serialised, a trailing newline
//! added or removed, Latin-1 ↔ UTF-8). A match names the cause; nothing matching means the
//! request was signed with a secret that is not configured (or changed in a way not tried).
//!
//! Cost is bounded and fixed per request: at most [`MAX_DIAGNOSED_SECRETS`] secrets, at most
//! three other readings of each, at most [`MAX_BODY_CANDIDATES`] bodies, and none of it for a
//! body over [`DIAGNOSE_BODY_LIMIT`] ([`Diagnosis::NotDiagnosed`]). The body is looked at as
//! text only here (never to identify or publish it): JSON is checked with a parser that builds
//! nothing (`IgnoredAny`, serde_json's recursion limit) and re-formatted token by token, so the
//! key order and number spellings stay the sender's. Nothing returned holds a secret, a
//! signature or body bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::HeaderMap;

use super::{B64_LENIENT, HmacAlgorithm, KeyedMac, SchemeKind, SignatureError, Verifier};

/// Bodies larger than this are not re-formatted or re-keyed: a failure costs what it costs today.
pub const DIAGNOSE_BODY_LIMIT: usize = 64 * 1024;
/// Secrets tried per diagnosis (in configuration order); rotation rarely needs more than two.
const MAX_DIAGNOSED_SECRETS: usize = 4;
/// Bodies tried per diagnosis besides the one received.
const MAX_BODY_CANDIDATES: usize = 6;

/// Why a request failed verification. Never holds a secret, a signature or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    /// A header the scheme needs is absent (`header`: the signature header, or the timestamp or
    /// id header it signs).
    MissingHeader {
        /// Lowercase header name (`signature`/`timestamp`/`id` for `hmac` recipes).
        header: &'static str,
    },
    /// A header is present but cannot be read (empty, not visible ASCII, bad encoding, bad
    /// timestamp).
    MalformedHeader {
        /// Which one: `signature header`, `timestamp`, `id header`.
        what: &'static str,
    },
    /// The signature is valid, but it was made longer ago than the tolerance allows.
    TimestampTooOld {
        /// Seconds between the signed timestamp and the receipt.
        skew_secs: u64,
        /// The source's `tolerance`, in seconds.
        tolerance_secs: u64,
    },
    /// The signature is valid, but the signed timestamp lies further in the future than the
    /// tolerance allows (the sender's clock, or a request made to be replayed later).
    TimestampTooNew {
        /// Seconds between the receipt and the signed timestamp.
        skew_secs: u64,
        /// The source's `tolerance`, in seconds.
        tolerance_secs: u64,
    },
    /// No configured secret, read any usual way, signed this request, and no usual change of the
    /// body explains it: the sender uses a secret that is not configured (or changed the body in
    /// a way not tried).
    UnknownSecret,
    /// A configured secret signed the body as it was before something between the sender and
    /// Inlet changed it.
    BodyChanged {
        /// What changed.
        change: BodyChange,
        /// The configured secret that verifies the original body (0-based).
        secret_index: usize,
    },
    /// A configured secret signed the request, but the sender reads the secret's text another
    /// way than this source's kind does.
    SecretEncoding {
        /// How the sender reads it.
        encoding: SecretEncoding,
        /// The configured secret concerned (0-based).
        secret_index: usize,
    },
    /// No configured secret matched and the body is over [`DIAGNOSE_BODY_LIMIT`], so the usual
    /// causes were not tried.
    NotDiagnosed,
}

/// A change of the body between the sender and Inlet that [`Verifier::diagnose`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyChange {
    /// JSON parsed and written again with other whitespace (compact, pretty or spaced).
    JsonReserialised,
    /// A trailing newline was added.
    TrailingNewlineAdded,
    /// A trailing newline was removed.
    TrailingNewlineRemoved,
    /// Latin-1 text re-encoded as UTF-8 (or UTF-8 decoded as Latin-1 and encoded again).
    Latin1ToUtf8,
    /// UTF-8 text converted to Latin-1.
    Utf8ToLatin1,
}

/// How the sender reads a configured secret, when it is not how the source's kind reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretEncoding {
    /// The sender uses the secret's text verbatim as the key (a kind `standard` source
    /// base64-decodes it after `whsec_`).
    Text,
    /// The sender base64-decodes the secret (after an optional `whsec_`), as Standard Webhooks
    /// does; this kind uses the text verbatim.
    Base64,
    /// The sender hex-decodes the secret.
    Hex,
    /// The sender's key includes the `whsec_` prefix the configured secret lacks (Stripe uses
    /// the whole `whsec_…` string).
    WhsecPrefix,
}

/// The closed set of [`Diagnosis`] labels: metric label, stored label, API enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiagnosisKind {
    /// [`Diagnosis::MissingHeader`].
    MissingHeader,
    /// [`Diagnosis::MalformedHeader`].
    MalformedHeader,
    /// [`Diagnosis::TimestampTooOld`].
    TimestampTooOld,
    /// [`Diagnosis::TimestampTooNew`].
    TimestampTooNew,
    /// [`Diagnosis::UnknownSecret`].
    UnknownSecret,
    /// [`Diagnosis::BodyChanged`].
    BodyChanged,
    /// [`Diagnosis::SecretEncoding`].
    SecretEncoding,
    /// [`Diagnosis::NotDiagnosed`].
    NotDiagnosed,
}

impl DiagnosisKind {
    /// Every kind, in a stable order.
    pub const ALL: [DiagnosisKind; 8] = [
        DiagnosisKind::MissingHeader,
        DiagnosisKind::MalformedHeader,
        DiagnosisKind::TimestampTooOld,
        DiagnosisKind::TimestampTooNew,
        DiagnosisKind::UnknownSecret,
        DiagnosisKind::BodyChanged,
        DiagnosisKind::SecretEncoding,
        DiagnosisKind::NotDiagnosed,
    ];

    /// The label: `missing_header`, `malformed_header`, `timestamp_too_old`,
    /// `timestamp_too_new`, `unknown_secret`, `body_changed`, `secret_encoding`, `not_diagnosed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosisKind::MissingHeader => "missing_header",
            DiagnosisKind::MalformedHeader => "malformed_header",
            DiagnosisKind::TimestampTooOld => "timestamp_too_old",
            DiagnosisKind::TimestampTooNew => "timestamp_too_new",
            DiagnosisKind::UnknownSecret => "unknown_secret",
            DiagnosisKind::BodyChanged => "body_changed",
            DiagnosisKind::SecretEncoding => "secret_encoding",
            DiagnosisKind::NotDiagnosed => "not_diagnosed",
        }
    }

    /// The kind labelled `label`.
    pub fn parse(label: &str) -> Option<DiagnosisKind> {
        DiagnosisKind::ALL.into_iter().find(|kind| kind.as_str() == label)
    }
}

impl Diagnosis {
    /// Which kind of cause this is.
    pub fn kind(&self) -> DiagnosisKind {
        match self {
            Diagnosis::MissingHeader { .. } => DiagnosisKind::MissingHeader,
            Diagnosis::MalformedHeader { .. } => DiagnosisKind::MalformedHeader,
            Diagnosis::TimestampTooOld { .. } => DiagnosisKind::TimestampTooOld,
            Diagnosis::TimestampTooNew { .. } => DiagnosisKind::TimestampTooNew,
            Diagnosis::UnknownSecret => DiagnosisKind::UnknownSecret,
            Diagnosis::BodyChanged { .. } => DiagnosisKind::BodyChanged,
            Diagnosis::SecretEncoding { .. } => DiagnosisKind::SecretEncoding,
            Diagnosis::NotDiagnosed => DiagnosisKind::NotDiagnosed,
        }
    }

    /// The label of [`Diagnosis::kind`] (metrics, logs, the quarantine).
    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// One sentence for an operator: the cause with its particulars (which header, by how much,
    /// which secret by index). Never a secret, a signature or body bytes.
    pub fn detail(&self) -> String {
        match self {
            Diagnosis::MissingHeader { header } => format!("no {header} header"),
            Diagnosis::MalformedHeader { what } => format!("the {what} cannot be read"),
            Diagnosis::TimestampTooOld { skew_secs, tolerance_secs } => format!(
                "signed {skew_secs} s before it was received, {} s more than the tolerance ({tolerance_secs} s)",
                skew_secs.saturating_sub(*tolerance_secs)
            ),
            Diagnosis::TimestampTooNew { skew_secs, tolerance_secs } => format!(
                "signed {skew_secs} s after it was received, {} s more than the tolerance ({tolerance_secs} s)",
                skew_secs.saturating_sub(*tolerance_secs)
            ),
            Diagnosis::UnknownSecret => "signed with a secret that is not configured".to_owned(),
            Diagnosis::BodyChanged { change, secret_index } => {
                let how = match change {
                    BodyChange::JsonReserialised => "its JSON was re-serialised",
                    BodyChange::TrailingNewlineAdded => "a trailing newline was added",
                    BodyChange::TrailingNewlineRemoved => "its trailing newline was removed",
                    BodyChange::Latin1ToUtf8 => "it was re-encoded from Latin-1 to UTF-8",
                    BodyChange::Utf8ToLatin1 => "it was converted from UTF-8 to Latin-1",
                };
                format!("body changed in transit: {how} (secret {secret_index} signed the body before the change)")
            }
            Diagnosis::SecretEncoding { encoding, secret_index } => {
                let how = match encoding {
                    SecretEncoding::Text => "uses the secret's text verbatim, not base64-decoded",
                    SecretEncoding::Base64 => "base64-decodes the secret (after whsec_), not its text verbatim",
                    SecretEncoding::Hex => "hex-decodes the secret",
                    SecretEncoding::WhsecPrefix => "signs with the whole whsec_… string, prefix included",
                };
                format!("secret {secret_index} is configured in the wrong encoding: the sender {how}")
            }
            Diagnosis::NotDiagnosed => format!(
                "no configured secret matches; the body is over {DIAGNOSE_BODY_LIMIT} bytes, so the usual causes were not tried"
            ),
        }
    }
}

/// A configured secret read another usual way, keyed once at startup.
#[derive(Clone)]
pub(super) struct AlternateKey {
    secret_index: usize,
    encoding: SecretEncoding,
    mac: KeyedMac,
}

/// The other readings of configured secret `index` worth trying for `kind` (at most three).
pub(super) fn alternate_keys(
    kind: SchemeKind,
    algorithm: HmacAlgorithm,
    index: usize,
    secret: &str,
) -> Vec<AlternateKey> {
    if index >= MAX_DIAGNOSED_SECRETS {
        return Vec::new();
    }
    let stripped = secret.strip_prefix("whsec_").unwrap_or(secret);
    let mut keys: Vec<(SecretEncoding, Vec<u8>)> = Vec::new();
    match kind {
        SchemeKind::Standard => {
            keys.push((SecretEncoding::Text, secret.as_bytes().to_vec()));
            if stripped.len() != secret.len() {
                keys.push((SecretEncoding::Text, stripped.as_bytes().to_vec()));
            }
        }
        _ => {
            if let Ok(decoded) = B64_LENIENT.decode(stripped) {
                keys.push((SecretEncoding::Base64, decoded));
            }
            if kind == SchemeKind::Stripe && stripped.len() == secret.len() {
                keys.push((SecretEncoding::WhsecPrefix, format!("whsec_{secret}").into_bytes()));
            }
        }
    }
    if let Ok(decoded) = hex::decode(stripped) {
        keys.push((SecretEncoding::Hex, decoded));
    }
    keys.into_iter()
        .filter(|(_, key)| !key.is_empty())
        .take(3)
        .filter_map(|(encoding, key)| {
            KeyedMac::new(algorithm, &key).ok().map(|mac| AlternateKey { secret_index: index, encoding, mac })
        })
        .collect()
}

impl Verifier {
    /// Why `verify(headers, body, now)` refused this request. Call it only after a refusal: it
    /// costs up to a few dozen MACs over a body of at most [`DIAGNOSE_BODY_LIMIT`] bytes (none
    /// above), and parses the body as JSON to try re-formatting it.
    pub fn diagnose(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Diagnosis {
        let presented = match self.presented(headers, body) {
            Ok(presented) => presented,
            Err(SignatureError::MissingHeader(header)) => return Diagnosis::MissingHeader { header },
            Err(SignatureError::Malformed(what)) => return Diagnosis::MalformedHeader { what },
            Err(SignatureError::Stale | SignatureError::Mismatch) => return Diagnosis::UnknownSecret,
        };
        if presented.candidates.is_empty() {
            return Diagnosis::MalformedHeader { what: "signature header" };
        }
        if self.match_index(&presented.parts, &presented.candidates).is_some() {
            return match presented.timestamp {
                Some(ts) => self.skew(ts, now),
                // Verifies: a diagnosis was asked for a request that passes (a race with the
                // caller's clock); nothing to say.
                None => Diagnosis::NotDiagnosed,
            };
        }
        if body.len() > DIAGNOSE_BODY_LIMIT {
            return Diagnosis::NotDiagnosed;
        }
        let matches = |mac: &KeyedMac, parts: &[&[u8]]| {
            let expected = mac.compute(parts);
            presented.candidates.iter().any(|candidate| {
                candidate.len() == expected.len() && bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], candidate))
            })
        };
        if let Some(alternate) = self.alternates.iter().find(|alternate| matches(&alternate.mac, &presented.parts)) {
            return Diagnosis::SecretEncoding { encoding: alternate.encoding, secret_index: alternate.secret_index };
        }
        for (change, candidate) in body_candidates(body) {
            // The headers parsed above parse the same way over another body.
            let Ok(again) = self.presented(headers, &candidate) else {
                continue;
            };
            if let Some(secret_index) =
                self.keys.iter().take(MAX_DIAGNOSED_SECRETS).position(|key| matches(key, &again.parts))
            {
                return Diagnosis::BodyChanged { change, secret_index };
            }
        }
        Diagnosis::UnknownSecret
    }

    fn skew(&self, ts: i64, now: SystemTime) -> Diagnosis {
        let now_secs: i128 = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i128::from(d.as_secs()),
            Err(e) => -i128::from(e.duration().as_secs()),
        };
        let skew = now_secs - i128::from(ts);
        let skew_secs = u64::try_from(skew.unsigned_abs()).unwrap_or(u64::MAX);
        let tolerance_secs = self.tolerance.as_secs();
        if skew >= 0 {
            Diagnosis::TimestampTooOld { skew_secs, tolerance_secs }
        } else {
            Diagnosis::TimestampTooNew { skew_secs, tolerance_secs }
        }
    }
}

/// The bodies the sender may have signed before `received` was changed on the way, cheapest
/// first, each different from `received`; at most [`MAX_BODY_CANDIDATES`].
fn body_candidates(received: &[u8]) -> Vec<(BodyChange, Vec<u8>)> {
    let mut candidates = Vec::with_capacity(MAX_BODY_CANDIDATES);
    if let Some(without) = received.strip_suffix(b"\r\n").or_else(|| received.strip_suffix(b"\n")) {
        candidates.push((BodyChange::TrailingNewlineAdded, without.to_vec()));
    } else {
        let mut with = received.to_vec();
        with.push(b'\n');
        candidates.push((BodyChange::TrailingNewlineRemoved, with));
    }
    if is_json(received) {
        let compact = compact_json(received);
        candidates.push((BodyChange::JsonReserialised, reformat_json(&compact, Layout::Pretty)));
        candidates.push((BodyChange::JsonReserialised, reformat_json(&compact, Layout::Spaced)));
        candidates.push((BodyChange::JsonReserialised, compact));
    }
    if let Some(latin1) = utf8_as_latin1(received) {
        candidates.push((BodyChange::Latin1ToUtf8, latin1));
    } else if !received.is_ascii() {
        // Not UTF-8 text that fits Latin-1: read it as Latin-1 and write it as UTF-8.
        let utf8: String = received.iter().map(|&b| char::from(b)).collect();
        candidates.push((BodyChange::Utf8ToLatin1, utf8.into_bytes()));
    }
    candidates.retain(|(_, candidate)| candidate.as_slice() != received);
    candidates.dedup_by(|a, b| a.1 == b.1);
    candidates.truncate(MAX_BODY_CANDIDATES);
    candidates
}

/// Whether `body` is one JSON object or array (checked without building it).
fn is_json(body: &[u8]) -> bool {
    matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// `body` (valid JSON) without whitespace outside strings.
fn compact_json(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
            in_string = b == b'"';
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Layout {
    /// Two-space indentation, `": "`: serde_json's and `JSON.stringify(v, null, 2)`'s pretty form
    /// (Stripe sends its events so).
    Pretty,
    /// One line, `", "` and `": "`: Python's `json.dumps` default.
    Spaced,
}

/// `compact` (compact JSON) laid out as `layout`, token by token.
fn reformat_json(compact: &[u8], layout: Layout) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * 2));
    };
    let mut bytes = compact.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match (layout, b) {
            (_, b'"') => {
                out.push(b);
                in_string = true;
            }
            (Layout::Pretty, b'{' | b'[') => {
                out.push(b);
                // Empty containers stay `{}` and `[]`.
                if let Some(close @ (b'}' | b']')) = bytes.peek().copied() {
                    out.push(close);
                    bytes.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            (Layout::Pretty, b'}' | b']') => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            (Layout::Pretty, b',') => {
                out.push(b);
                newline(&mut out, depth);
            }
            (Layout::Spaced, b',') => out.extend_from_slice(b", "),
            (_, b':') => out.extend_from_slice(b": "),
            _ => out.push(b),
        }
    }
    out
}

/// `body` as Latin-1 bytes when it is UTF-8 text with non-ASCII characters that all fit Latin-1.
fn utf8_as_latin1(body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    if text.is_ascii() {
        return None;
    }
    text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::super::sign;
    use super::super::tests::{at, map};
    use super::*;

    const TOL: Duration = Duration::from_secs(300);
    const NOW: i64 = 1_700_000_000;

    fn verifier(kind: SchemeKind, secrets: &[&str]) -> Verifier {
        Verifier::new(kind, secrets, TOL, None).unwrap()
    }

    /// Verification fails, and the diagnosis is what it is.
    #[track_caller]
    fn diagnosed(v: &Verifier, headers: &[(String, String)], body: &[u8], now: i64) -> Diagnosis {
        let headers = map(headers);
        assert!(v.verify(&headers, body, at(now)).is_err(), "the request must fail verification");
        v.diagnose(&headers, body, at(now))
    }

    const STRIPE: &str = "whsec_stripe_endpoint_secret";
    const BODY: &[u8] = b"{\n  \"id\": \"evt_1\",\n  \"type\": \"charge.succeeded\",\n  \"data\": {\n    \"object\": {\n      \"amount\": 2000,\n      \"tags\": [],\n      \"note\": \"caf\xc3\xa9 \\\"x\\\"\"\n    }\n  }\n}";

    #[test]
    fn missing_and_malformed_headers() {
        let v = verifier(SchemeKind::Stripe, &[STRIPE]);
        assert_eq!(diagnosed(&v, &[], BODY, NOW), Diagnosis::MissingHeader { header: "stripe-signature" });
        let junk = vec![("Stripe-Signature".to_owned(), "v1=abc".to_owned())];
        assert_eq!(diagnosed(&v, &junk, BODY, NOW), Diagnosis::MalformedHeader { what: "signature header" });
        let slack = verifier(SchemeKind::Slack, &["s"]);
        let no_ts = vec![("X-Slack-Signature".to_owned(), "v0=00".to_owned())];
        assert_eq!(
            diagnosed(&slack, &no_ts, BODY, NOW),
            Diagnosis::MissingHeader { header: "x-slack-request-timestamp" }
        );
        let bad_ts = vec![
            ("X-Slack-Signature".to_owned(), "v0=00".to_owned()),
            ("X-Slack-Request-Timestamp".to_owned(), "soon".to_owned()),
        ];
        assert_eq!(diagnosed(&slack, &bad_ts, BODY, NOW), Diagnosis::MalformedHeader { what: "timestamp" });
        // A Stripe header with only non-hex v1 entries presents nothing to compare.
        let no_candidate = vec![("Stripe-Signature".to_owned(), format!("t={NOW},v1=zz"))];
        assert_eq!(diagnosed(&v, &no_candidate, BODY, NOW), Diagnosis::MalformedHeader { what: "signature header" });
    }

    #[test]
    fn timestamps_too_old_and_too_new_say_by_how_much() {
        let v = verifier(SchemeKind::Stripe, &[STRIPE]);
        let signed = sign::stripe(STRIPE, NOW - 412, BODY);
        let old = diagnosed(&v, &signed, BODY, NOW);
        assert_eq!(old, Diagnosis::TimestampTooOld { skew_secs: 412, tolerance_secs: 300 });
        assert!(old.detail().contains("112 s more than the tolerance"), "{}", old.detail());
        let signed = sign::stripe(STRIPE, NOW + 900, BODY);
        assert_eq!(
            diagnosed(&v, &signed, BODY, NOW),
            Diagnosis::TimestampTooNew { skew_secs: 900, tolerance_secs: 300 }
        );
    }

    #[test]
    fn a_secret_that_is_not_configured() {
        let v = verifier(SchemeKind::Stripe, &[STRIPE, "whsec_other"]);
        let signed = sign::stripe("whsec_rotated_by_the_provider", NOW, BODY);
        assert_eq!(diagnosed(&v, &signed, BODY, NOW), Diagnosis::UnknownSecret);
        let github = verifier(SchemeKind::Github, &["hub secret"]);
        let signed = sign::github("another", "d-1", "push", br#"{"zen":"x"}"#);
        assert_eq!(diagnosed(&github, &signed, br#"{"zen":"x"}"#, NOW), Diagnosis::UnknownSecret);
    }

    #[test]
    fn json_re_serialised_on_the_way() {
        let v = verifier(SchemeKind::Stripe, &["whsec_old", STRIPE]);
        let signed = sign::stripe(STRIPE, NOW, BODY);
        // What an Express proxy forwards: JSON.stringify(req.body), compact, same key order.
        let compact = compact_json(BODY);
        assert_eq!(reformat_json(&compact, Layout::Pretty), BODY, "the pretty layout is Stripe's");
        assert_eq!(
            diagnosed(&v, &signed, &compact, NOW),
            Diagnosis::BodyChanged { change: BodyChange::JsonReserialised, secret_index: 1 }
        );
        // A compact original (GitHub), forwarded by Python's json.dumps: ", " and ": ".
        let original = br#"{"ref":"refs/heads/main","commits":[{"id":"a b","n":[1,2]}],"x":{}}"#;
        let gh = verifier(SchemeKind::Github, &["hub"]);
        let signed = sign::github("hub", "d-1", "push", original);
        let spaced = br#"{"ref": "refs/heads/main", "commits": [{"id": "a b", "n": [1, 2]}], "x": {}}"#;
        assert_eq!(
            diagnosed(&gh, &signed, spaced, NOW),
            Diagnosis::BodyChanged { change: BodyChange::JsonReserialised, secret_index: 0 }
        );
    }

    #[test]
    fn trailing_newline_added_or_removed() {
        let v = verifier(SchemeKind::Shopify, &["shpss"]);
        let signed = sign::shopify("shpss", "w-1", "orders/create", BODY);
        let mut added = BODY.to_vec();
        added.push(b'\n');
        assert_eq!(
            diagnosed(&v, &signed, &added, NOW),
            Diagnosis::BodyChanged { change: BodyChange::TrailingNewlineAdded, secret_index: 0 }
        );
        let mut with_newline = BODY.to_vec();
        with_newline.push(b'\n');
        let signed = sign::shopify("shpss", "w-1", "orders/create", &with_newline);
        assert_eq!(
            diagnosed(&v, &signed, BODY, NOW),
            Diagnosis::BodyChanged { change: BodyChange::TrailingNewlineRemoved, secret_index: 0 }
        );
    }

    #[test]
    fn charset_converted_on_the_way() {
        let v = verifier(SchemeKind::Slack, &["slack secret"]);
        let utf8 = "text=caf\u{e9} cr\u{e8}me".as_bytes();
        let latin1: Vec<u8> =
            "text=caf\u{e9} cr\u{e8}me".chars().map(|c| u8::try_from(u32::from(c)).unwrap()).collect();
        // Signed as Latin-1, received as UTF-8.
        let signed = sign::slack("slack secret", NOW, &latin1);
        assert_eq!(
            diagnosed(&v, &signed, utf8, NOW),
            Diagnosis::BodyChanged { change: BodyChange::Latin1ToUtf8, secret_index: 0 }
        );
        // Signed as UTF-8, received as Latin-1.
        let signed = sign::slack("slack secret", NOW, utf8);
        assert_eq!(
            diagnosed(&v, &signed, &latin1, NOW),
            Diagnosis::BodyChanged { change: BodyChange::Utf8ToLatin1, secret_index: 0 }
        );
    }

    #[test]
    fn secret_in_the_wrong_encoding() {
        let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        // A Standard Webhooks source whose sender keys with the text (as Stripe does).
        let standard = verifier(SchemeKind::Standard, &[whsec]);
        let ts = NOW.to_string();
        let text_sig = KeyedMac::new(HmacAlgorithm::Sha256, whsec.as_bytes()).unwrap().compute(&[
            b"msg_1.",
            ts.as_bytes(),
            b".",
            BODY,
        ]);
        let headers = vec![
            ("webhook-id".to_owned(), "msg_1".to_owned()),
            ("webhook-timestamp".to_owned(), ts.clone()),
            (
                "webhook-signature".to_owned(),
                format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(text_sig)),
            ),
        ];
        assert_eq!(
            diagnosed(&standard, &headers, BODY, NOW),
            Diagnosis::SecretEncoding { encoding: SecretEncoding::Text, secret_index: 0 }
        );
        // A Stripe source given a Standard Webhooks secret: the sender decodes it.
        let stripe = verifier(SchemeKind::Stripe, &["whsec_x", whsec]);
        let standard_headers = sign::standard(whsec, "msg_1", NOW, BODY);
        let decoded = B64_LENIENT.decode(&whsec[6..]).unwrap();
        let sig = KeyedMac::new(HmacAlgorithm::Sha256, &decoded).unwrap().compute(&[ts.as_bytes(), b".", BODY]);
        let headers = vec![("Stripe-Signature".to_owned(), format!("t={ts},v1={}", hex::encode(sig)))];
        assert!(!standard_headers.is_empty());
        assert_eq!(
            diagnosed(&stripe, &headers, BODY, NOW),
            Diagnosis::SecretEncoding { encoding: SecretEncoding::Base64, secret_index: 1 }
        );
        // Stripe's key includes whsec_; configured without it.
        let bare = verifier(SchemeKind::Stripe, &["stripe_endpoint_secret"]);
        let signed = sign::stripe(STRIPE, NOW, BODY);
        assert_eq!(
            diagnosed(&bare, &signed, BODY, NOW),
            Diagnosis::SecretEncoding { encoding: SecretEncoding::WhsecPrefix, secret_index: 0 }
        );
        // A hex secret the sender decodes.
        let gh = verifier(SchemeKind::Github, &["00ff10ab"]);
        let sig = KeyedMac::new(HmacAlgorithm::Sha256, &[0x00, 0xff, 0x10, 0xab]).unwrap().compute(&[BODY]);
        let headers = vec![("X-Hub-Signature-256".to_owned(), format!("sha256={}", hex::encode(sig)))];
        assert_eq!(
            diagnosed(&gh, &headers, BODY, NOW),
            Diagnosis::SecretEncoding { encoding: SecretEncoding::Hex, secret_index: 0 }
        );
    }

    #[test]
    fn large_bodies_are_not_diagnosed_further() {
        let v = verifier(SchemeKind::Github, &["hub"]);
        let mut body = vec![b'x'; DIAGNOSE_BODY_LIMIT + 1];
        let signed = sign::github("hub", "d", "push", &body);
        body.push(b'\n');
        assert_eq!(diagnosed(&v, &signed, &body, NOW), Diagnosis::NotDiagnosed);
        // At the limit the usual causes are still tried.
        let body = vec![b'x'; DIAGNOSE_BODY_LIMIT - 1];
        let mut with = body.clone();
        with.push(b'\n');
        let signed = sign::github("hub", "d", "push", &body);
        assert_eq!(
            diagnosed(&v, &signed, &with, NOW),
            Diagnosis::BodyChanged { change: BodyChange::TrailingNewlineAdded, secret_index: 0 }
        );
    }

    #[test]
    fn the_work_is_bounded() {
        let body = "{\"a\":\"\u{e9}\"}\n".as_bytes();
        assert!(body_candidates(body).len() <= MAX_BODY_CANDIDATES);
        for kind in [SchemeKind::Stripe, SchemeKind::Standard, SchemeKind::Github] {
            let secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"; 6];
            let v = verifier(kind, &secrets);
            assert!(v.alternates.len() <= 3 * MAX_DIAGNOSED_SECRETS, "{kind:?}: {}", v.alternates.len());
        }
        // Not JSON, not a container: no JSON candidates, no panic on odd input.
        assert!(!is_json(b"\"just a string\""));
        assert!(!is_json(b"{\"unterminated\":"));
        assert!(body_candidates(b"").iter().all(|(_, c)| c == b"\n"));
    }

    #[test]
    fn labels_and_details_never_echo_secrets() {
        for kind in DiagnosisKind::ALL {
            assert_eq!(DiagnosisKind::parse(kind.as_str()), Some(kind));
        }
        let secret = "whsec_do_not_print";
        let v = verifier(SchemeKind::Stripe, &[secret]);
        let signed = sign::stripe(secret, NOW - 1000, BODY);
        let diagnosis = diagnosed(&v, &signed, BODY, NOW);
        let shown = format!("{diagnosis:?} {}", diagnosis.detail());
        assert!(!shown.contains("do_not_print") && !shown.contains(&signed[0].1[20..]), "{shown}");
    }
}
