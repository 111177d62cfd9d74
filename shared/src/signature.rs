//! Sender signature verification for inbound webhooks.
//!
//! A [`Verifier`] checks the HMAC a provider (Stripe, Standard Webhooks/Svix, GitHub, Shopify,
//! Slack, or a configurable generic recipe) attached to a request, computed over the **raw body
//! bytes exactly as received**, and enforces the timestamp window where the provider signs one.
//! Comparisons are constant-time, several configured secrets are tried so that secrets can be
//! rotated without downtime, and no input (header or body) can make it panic.
//!
//! What it deliberately does not do: it never parses or re-serialises the body before the
//! signature has been checked (re-encoding JSON changes the bytes and breaks the MAC, and parsing
//! unauthenticated input is attack surface); it keeps no replay cache (replay defence beyond the
//! timestamp window is the caller's dedup on [`EventIdentity::id`]); it does no I/O; and it never
//! logs secrets or signatures. Only after [`Verifier::verify`] has returned a [`Verified`] does
//! [`Verified::identify`] look inside the body, to find the provider's event id and type.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_PAD_INDIFFERENT as B64_LENIENT};
use hmac::{Hmac, KeyInit, Mac};
use http::header::AsHeaderName;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Longest provider event id or event type kept verbatim; longer ones are hashed (ids) or dropped
/// (types) so they always fit in a NATS header and message id.
const MAX_TOKEN_LEN: usize = 128;

/// Which provider recipe a source uses. Deserialized from config as lowercase strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemeKind {
    /// `Stripe-Signature: t=..,v1=<hex>`; key is the `whsec_…` string verbatim.
    Stripe,
    /// Standard Webhooks / Svix: `webhook-signature: v1,<base64>`; key is base64 after `whsec_`.
    Standard,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body; no timestamp.
    Github,
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64>` over the body; no timestamp.
    Shopify,
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`.
    Slack,
    /// Generic recipe described by an [`HmacRecipe`].
    Hmac,
}

impl SchemeKind {
    /// The config spelling of this kind (`"stripe"`, `"standard"`, …), also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemeKind::Stripe => "stripe",
            SchemeKind::Standard => "standard",
            SchemeKind::Github => "github",
            SchemeKind::Shopify => "shopify",
            SchemeKind::Slack => "slack",
            SchemeKind::Hmac => "hmac",
        }
    }

    /// The kind named `name` (as [`SchemeKind::as_str`] spells it).
    pub fn parse(name: &str) -> Option<SchemeKind> {
        [
            SchemeKind::Stripe,
            SchemeKind::Standard,
            SchemeKind::Github,
            SchemeKind::Shopify,
            SchemeKind::Slack,
            SchemeKind::Hmac,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// How the signature bytes are written in the header of a generic [`HmacRecipe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Hexadecimal (either case accepted when verifying, lowercase when signing).
    #[default]
    Hex,
    /// Standard base64 alphabet; padding optional when verifying, written when signing.
    Base64,
}

/// Hash function of the HMAC in a generic [`HmacRecipe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

fn default_signed_payload() -> String {
    "{body}".to_owned()
}

/// Generic recipe for `kind = "hmac"`: which headers carry what, and which bytes are signed.
///
/// Embedded in the source configuration; call [`HmacRecipe::validate`] when loading it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacRecipe {
    /// Name of the header carrying the signature, e.g. `X-Acme-Signature`.
    pub header: String,
    /// Text in front of the encoded signature that is stripped before decoding, e.g. `sha256=`.
    /// Empty means none.
    #[serde(default)]
    pub prefix: String,
    /// How the signature is encoded (`hex`, the default, or `base64`).
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// HMAC hash function (`sha256`, the default, or `sha512`).
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// Header carrying the signed unix timestamp (seconds). When set, the timestamp is required,
    /// must appear in `signed_payload` as `{timestamp}`, and is checked against the tolerance.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Template of the signed bytes: `{body}` exactly once, optionally `{timestamp}` and `{id}`;
    /// everything else is literal. Default `{body}`.
    #[serde(default = "default_signed_payload")]
    pub signed_payload: String,
    /// Header carrying the provider's event id (dedup key); also the value of `{id}`.
    #[serde(default)]
    pub id_header: Option<String>,
    /// Header carrying the event type.
    #[serde(default)]
    pub type_header: Option<String>,
}

/// One piece of a parsed `signed_payload` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(String),
    Timestamp,
    Body,
    Id,
}

/// Splits a `signed_payload` template into literals and placeholders. Any `{` that does not start
/// a known placeholder is an error, so that a typo such as `{ts}` is caught at load time instead of
/// silently becoming literal text that never matches.
fn parse_template(template: &str) -> Result<Vec<TemplatePart>, String> {
    const PLACEHOLDERS: [(&str, TemplatePart); 3] =
        [("{timestamp}", TemplatePart::Timestamp), ("{body}", TemplatePart::Body), ("{id}", TemplatePart::Id)];
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(pos) = rest.find('{') {
        literal.push_str(rest.get(..pos).unwrap_or_default());
        let tail = rest.get(pos..).unwrap_or_default();
        let Some((text, part)) = PLACEHOLDERS.iter().find(|(text, _)| tail.starts_with(text)) else {
            return Err(format!(
                "signed_payload {template:?} has an unknown placeholder at byte {}; only {{timestamp}}, {{body}} and {{id}} are supported",
                template.len() - tail.len()
            ));
        };
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part.clone());
        rest = tail.get(text.len()..).unwrap_or_default();
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    Ok(parts)
}

fn parse_header_name(field: &str, value: &str) -> Result<HeaderName, String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    HeaderName::from_bytes(value.as_bytes()).map_err(|_| format!("{field} {value:?} is not a valid HTTP header name"))
}

/// A validated [`HmacRecipe`] with parsed header names and template.
#[derive(Debug, Clone)]
struct ParsedRecipe {
    header: HeaderName,
    prefix: String,
    encoding: SignatureEncoding,
    algorithm: HmacAlgorithm,
    timestamp_header: Option<HeaderName>,
    template: Vec<TemplatePart>,
    /// First characters of the literals right after `{id}` in the template; an id containing one
    /// is refused (see `recipe_presented`).
    id_separators: Vec<char>,
    id_header: Option<HeaderName>,
    type_header: Option<HeaderName>,
}

impl HmacRecipe {
    /// Checks that the recipe can be used: header names are valid, the template contains `{body}`
    /// exactly once and only known placeholders, `{timestamp}` is used if and only if
    /// `timestamp_header` is set, and `{id}` only with `id_header`.
    ///
    /// The message says what is wrong; the caller prefixes the config key.
    pub fn validate(&self) -> Result<(), String> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<ParsedRecipe, String> {
        let header = parse_header_name("header", &self.header)?;
        let optional =
            |field: &str, value: &Option<String>| value.as_deref().map(|v| parse_header_name(field, v)).transpose();
        let timestamp_header = optional("timestamp_header", &self.timestamp_header)?;
        let id_header = optional("id_header", &self.id_header)?;
        let type_header = optional("type_header", &self.type_header)?;
        if timestamp_header.as_ref() == Some(&header) || id_header.as_ref() == Some(&header) {
            return Err("header must differ from timestamp_header and id_header".to_owned());
        }
        // The prefix is compared with the header text, which can only be visible ASCII.
        if !self.prefix.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err("prefix must be printable ASCII".to_owned());
        }

        let template = parse_template(&self.signed_payload)?;
        let count = |wanted: &TemplatePart| template.iter().filter(|p| *p == wanted).count();
        if count(&TemplatePart::Body) != 1 {
            return Err(format!("signed_payload {:?} must contain {{body}} exactly once", self.signed_payload));
        }
        let has_timestamp = count(&TemplatePart::Timestamp) > 0;
        if has_timestamp && timestamp_header.is_none() {
            return Err("signed_payload uses {timestamp} but timestamp_header is not set".to_owned());
        }
        // A timestamp that is checked but not signed can be replaced by an attacker, so it would
        // look like replay protection without being any.
        if timestamp_header.is_some() && !has_timestamp {
            return Err(
                "timestamp_header is set but signed_payload does not contain {timestamp}; an unsigned timestamp gives no replay protection"
                    .to_owned(),
            );
        }
        if count(&TemplatePart::Id) > 0 && id_header.is_none() {
            return Err("signed_payload uses {id} but id_header is not set".to_owned());
        }
        let id_separators = template
            .windows(2)
            .filter_map(|pair| match pair {
                [TemplatePart::Id, TemplatePart::Literal(text)] => text.chars().next(),
                _ => None,
            })
            .collect();
        Ok(ParsedRecipe {
            header,
            prefix: self.prefix.clone(),
            encoding: self.encoding,
            algorithm: self.algorithm,
            timestamp_header,
            template,
            id_separators,
            id_header,
            type_header,
        })
    }
}

/// An HMAC already keyed with one configured secret; cloned per request so the key schedule is
/// computed once at startup.
#[derive(Clone)]
enum KeyedMac {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl KeyedMac {
    fn new(algorithm: HmacAlgorithm, key: &[u8]) -> Result<Self, String> {
        let invalid = |_| "key rejected by HMAC".to_owned();
        Ok(match algorithm {
            HmacAlgorithm::Sha256 => KeyedMac::Sha256(Hmac::new_from_slice(key).map_err(invalid)?),
            HmacAlgorithm::Sha512 => KeyedMac::Sha512(Hmac::new_from_slice(key).map_err(invalid)?),
        })
    }

    /// MAC over the concatenation of `parts` (fed piecewise so the body is never copied).
    fn compute(&self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            KeyedMac::Sha256(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                mac.finalize().into_bytes().to_vec()
            }
            KeyedMac::Sha512(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                mac.finalize().into_bytes().to_vec()
            }
        }
    }
}

/// Decodes a Standard Webhooks secret: optional `whsec_` prefix, then base64 (padding optional).
fn decode_standard_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key =
        B64_LENIENT.decode(encoded).map_err(|_| "not valid base64 after the optional whsec_ prefix".to_owned())?;
    if key.is_empty() {
        return Err("decodes to an empty key".to_owned());
    }
    Ok(key)
}

/// Checks a signature header and decides whether a request really comes from the configured sender.
pub struct Verifier {
    kind: SchemeKind,
    keys: Vec<KeyedMac>,
    /// The configured secrets read the other usual ways (`diagnose`): tried only after a failure.
    alternates: Vec<diagnose::AlternateKey>,
    tolerance: Duration,
    recipe: Option<ParsedRecipe>,
}

impl fmt::Debug for Verifier {
    // Manual impl: the keyed MAC states are derived from the secrets and must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("kind", &self.kind)
            .field("secrets", &format_args!("<{} redacted>", self.keys.len()))
            .field("alternates", &self.alternates.len())
            .field("tolerance", &self.tolerance)
            .field("recipe", &self.recipe)
            .finish()
    }
}

/// A configured secret that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("secret {index}: {message}")]
pub struct KeyError {
    /// Position of the offending secret in the configured list (0 for list-wide problems).
    pub index: usize,
    /// What is wrong; never contains the secret itself.
    pub message: String,
}

/// Why a request failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent (lowercase name; `signature`/`timestamp`/`id` for recipes).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but cannot be parsed (empty, not visible ASCII, bad encoding, bad
    /// timestamp).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature is valid but the signed timestamp is outside the tolerance window.
    #[error("timestamp outside tolerance")]
    Stale,
    /// No presented signature matched any configured secret.
    #[error("no signature matched")]
    Mismatch,
}

impl SignatureError {
    /// Short stable label for metrics: `missing_header`, `malformed`, `stale`, `mismatch`.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(_) => "missing_header",
            SignatureError::Malformed(_) => "malformed",
            SignatureError::Stale => "stale",
            SignatureError::Mismatch => "mismatch",
        }
    }
}

/// Header names of the Standard Webhooks family a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StandardNames {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK_NAMES: StandardNames =
    StandardNames { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };
const SVIX_NAMES: StandardNames =
    StandardNames { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };

/// Where [`Verified::identify`] finds the event id and type.
#[derive(Debug, Clone)]
enum IdentSource {
    Stripe,
    Standard {
        id_header: &'static str,
    },
    Github,
    Shopify,
    Slack,
    /// `id_signed`: the template has `{id}`, so the id header is covered by the signature.
    Hmac {
        id_header: Option<HeaderName>,
        type_header: Option<HeaderName>,
        id_signed: bool,
    },
}

/// Proof that a request passed verification; only [`Verifier::verify`] creates one.
#[derive(Debug, Clone)]
pub struct Verified {
    secret_index: usize,
    timestamp: Option<i64>,
    source: IdentSource,
}

/// Who the provider says this event is, derived after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventIdentity {
    /// Dedup key: the signed provider id (1–128 ASCII graphic characters, never starting with
    /// `sha256:` or `id-sha256:`), `id-sha256:<hex>` of an unsafe signed provider id, or
    /// `sha256:<hex>` of the body. The three forms never collide.
    pub id: String,
    /// Where `id` came from.
    pub origin: IdOrigin,
    /// The provider's event type, if it gives a usable one (1–128 ASCII graphic characters).
    pub event_type: Option<String>,
    /// The provider's event id as sent, when the signature does not cover it and `id` is
    /// therefore the body hash ([`IdOrigin::BodyHashUnsignedId`]): for display and correlation
    /// only. `None` otherwise, and when it is not 1–128 ASCII graphic characters.
    pub provider_id: Option<String>,
}

/// Where an [`EventIdentity::id`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdOrigin {
    /// The provider's own event id, verbatim.
    Provider,
    /// The provider's (signed) id was unsafe as a header value (too long, spaces, non-ASCII) or
    /// spelled like a derived id (`sha256:…`, `id-sha256:…`), so it was replaced by
    /// `id-sha256:` + hex of its bytes.
    HashedProviderId,
    /// The provider gave no id; `sha256:` + hex of the body. Identical bodies then dedup together.
    BodyHash,
    /// The provider gave an id the signature does not cover (GitHub, Shopify, `hmac` recipes
    /// without `{id}`): anyone holding a captured request could send it again under a new id,
    /// so the id is `sha256:` + hex of the body, as for [`IdOrigin::BodyHash`], and the
    /// provider's id is kept in [`EventIdentity::provider_id`].
    BodyHashUnsignedId,
}

impl IdOrigin {
    /// Metric/header label: `provider`, `hashed_provider_id`, `body_sha256`,
    /// `body_sha256_unsigned_id`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdOrigin::Provider => "provider",
            IdOrigin::HashedProviderId => "hashed_provider_id",
            IdOrigin::BodyHash => "body_sha256",
            IdOrigin::BodyHashUnsignedId => "body_sha256_unsigned_id",
        }
    }

    /// The origin named `name` (as [`IdOrigin::as_str`] spells it).
    pub fn parse(name: &str) -> Option<IdOrigin> {
        [IdOrigin::Provider, IdOrigin::HashedProviderId, IdOrigin::BodyHash, IdOrigin::BodyHashUnsignedId]
            .into_iter()
            .find(|origin| origin.as_str() == name)
    }
}

/// What a request presented, extracted from its headers before any MAC is computed.
struct Presented<'a> {
    /// The signed bytes, in order (the body is one of them, never copied).
    parts: Vec<&'a [u8]>,
    /// Decoded candidate signatures; any may match (rotation on the sender side).
    candidates: Vec<Vec<u8>>,
    timestamp: Option<i64>,
    source: IdentSource,
}

/// First value of a header as trimmed visible ASCII. Absent → `MissingHeader(missing)`; empty or
/// containing bytes outside visible ASCII → `Malformed(malformed)`.
fn header_str<'a, K: AsHeaderName>(
    headers: &'a HeaderMap,
    name: K,
    missing: &'static str,
    malformed: &'static str,
) -> Result<&'a str, SignatureError> {
    // `get` returns the first value when the header is repeated; that is the one we judge.
    let value = headers.get(name).ok_or(SignatureError::MissingHeader(missing))?;
    let text =
        value.to_str().map_err(|_| SignatureError::Malformed(malformed))?.trim_matches(|c: char| c == ' ' || c == '\t');
    if text.is_empty() {
        return Err(SignatureError::Malformed(malformed));
    }
    Ok(text)
}

/// Parses a unix-seconds timestamp: ASCII digits only (so no sign, no spaces) that fit in `i64`.
fn parse_timestamp(text: &str) -> Result<i64, SignatureError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed("timestamp"));
    }
    text.parse::<i64>().map_err(|_| SignatureError::Malformed("timestamp"))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    B64_LENIENT.decode(text).ok()
}

/// Prefix of body-hash ids ([`IdOrigin::BodyHash`], [`IdOrigin::BodyHashUnsignedId`]).
const BODY_HASH_PREFIX: &str = "sha256:";
/// Prefix of hashed provider ids ([`IdOrigin::HashedProviderId`]).
const HASHED_ID_PREFIX: &str = "id-sha256:";

/// `sha256:` + lowercase hex SHA-256 of `bytes`: the id of a body.
fn sha256_id(bytes: &[u8]) -> String {
    format!("{BODY_HASH_PREFIX}{}", hex::encode(<Sha256 as Digest>::digest(bytes)))
}

/// The event id of a body deduplicated on its hash ([`IdOrigin::BodyHash`],
/// [`IdOrigin::BodyHashUnsignedId`]): `sha256:` + lowercase hex SHA-256 of `body`.
pub fn body_id(body: &[u8]) -> String {
    sha256_id(body)
}

/// `id-sha256:` + lowercase hex SHA-256 of `bytes`: the id standing for an unusable provider id.
/// A prefix of its own, so that it can never equal the id of a body.
fn hashed_provider_id(bytes: &[u8]) -> String {
    format!("{HASHED_ID_PREFIX}{}", hex::encode(<Sha256 as Digest>::digest(bytes)))
}

/// The dedup id of a signed, non-empty provider id: verbatim when it is a safe token that is not
/// spelled like a derived id, else hashed. A provider id `sha256:<hex of some body>` must not be
/// taken for that body's id (nor `id-sha256:…` for a hashed one).
fn provider_id_identity(raw: Vec<u8>) -> (String, IdOrigin) {
    let derived_looking = raw.starts_with(BODY_HASH_PREFIX.as_bytes()) || raw.starts_with(HASHED_ID_PREFIX.as_bytes());
    if !is_safe_token(&raw) || derived_looking {
        return (hashed_provider_id(&raw), IdOrigin::HashedProviderId);
    }
    match String::from_utf8(raw) {
        Ok(id) => (id, IdOrigin::Provider),
        Err(e) => (hashed_provider_id(e.as_bytes()), IdOrigin::HashedProviderId),
    }
}

/// True if `bytes` is usable verbatim as a NATS header value and message id.
fn is_safe_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len() <= MAX_TOKEN_LEN && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl Verifier {
    /// Builds a verifier for `kind` with the configured `secrets`, in order (the index of the
    /// secret that matched is reported for rotation bookkeeping).
    ///
    /// Key bytes: for [`SchemeKind::Standard`] the optional `whsec_` prefix is stripped and the rest
    /// base64-decoded (padding optional); for every other kind the secret's UTF-8 bytes are used
    /// verbatim — Stripe's key *includes* its `whsec_` prefix.
    ///
    /// `tolerance` bounds |now − signed timestamp| for schemes that sign one. `recipe` is required
    /// for [`SchemeKind::Hmac`] (an invalid or missing recipe is reported as a [`KeyError`] with
    /// index 0) and ignored for the other kinds.
    pub fn new(
        kind: SchemeKind,
        secrets: &[&str],
        tolerance: Duration,
        recipe: Option<HmacRecipe>,
    ) -> Result<Verifier, KeyError> {
        let list_error = |message: String| KeyError { index: 0, message };
        if secrets.is_empty() {
            return Err(list_error("no secrets configured".to_owned()));
        }
        let recipe = match kind {
            SchemeKind::Hmac => {
                let recipe = recipe.ok_or_else(|| list_error("scheme hmac needs a recipe".to_owned()))?;
                Some(recipe.parse().map_err(|e| list_error(format!("invalid hmac recipe: {e}")))?)
            }
            _ => None,
        };
        let algorithm = recipe.as_ref().map_or(HmacAlgorithm::Sha256, |r| r.algorithm);

        let mut keys = Vec::with_capacity(secrets.len());
        let mut alternates = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            let key_error = |message: String| KeyError { index, message };
            if secret.is_empty() {
                return Err(key_error("is empty".to_owned()));
            }
            let bytes: Cow<'_, [u8]> = match kind {
                SchemeKind::Standard => Cow::Owned(decode_standard_secret(secret).map_err(key_error)?),
                _ => Cow::Borrowed(secret.as_bytes()),
            };
            keys.push(KeyedMac::new(algorithm, &bytes).map_err(key_error)?);
            alternates.extend(diagnose::alternate_keys(kind, algorithm, index, secret));
        }
        Ok(Verifier { kind, keys, alternates, tolerance, recipe })
    }

    /// The provider recipe this verifier implements.
    pub fn kind(&self) -> SchemeKind {
        self.kind
    }

    /// Whether the signature covers a timestamp that is checked against the tolerance (Stripe,
    /// Standard, Slack, and recipes with a `timestamp_header`). Without one, a captured request
    /// verifies for ever.
    pub fn signs_timestamp(&self) -> bool {
        match self.kind {
            SchemeKind::Stripe | SchemeKind::Standard | SchemeKind::Slack => true,
            SchemeKind::Github | SchemeKind::Shopify => false,
            SchemeKind::Hmac => self.recipe.as_ref().is_some_and(|r| r.timestamp_header.is_some()),
        }
    }

    /// Whether the provider's event id is covered by the signature (Stripe and Slack: in the
    /// body; Standard: `webhook-id` is signed; recipes whose template has `{id}`). When it is not
    /// (GitHub, Shopify, recipes without `{id}`), [`Verified::identify`] deduplicates on the body
    /// hash instead, since anyone who captured a request could send it again with a new id.
    pub fn signs_event_id(&self) -> bool {
        match self.kind {
            SchemeKind::Stripe | SchemeKind::Standard | SchemeKind::Slack => true,
            SchemeKind::Github | SchemeKind::Shopify => false,
            SchemeKind::Hmac => self.recipe.as_ref().is_some_and(|r| r.template.contains(&TemplatePart::Id)),
        }
    }

    /// Verifies `body` (the raw bytes as received) against `headers` at time `now`.
    ///
    /// Never parses the body. Every configured secret is tried against every presented signature;
    /// the first secret (in configuration order) that matches wins. The signature is checked
    /// before the timestamp, so [`SignatureError::Stale`] always means "authentic but outside the
    /// window" (a replay or clock skew) rather than a forgery.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<Verified, SignatureError> {
        let presented = self.presented(headers, body)?;
        let secret_index = self.match_index(&presented.parts, &presented.candidates).ok_or(SignatureError::Mismatch)?;
        if let Some(ts) = presented.timestamp {
            self.check_fresh(ts, now)?;
        }
        Ok(Verified { secret_index, timestamp: presented.timestamp, source: presented.source })
    }

    /// What the request presents under this scheme: the signed parts (over `body`), the
    /// candidate signatures and the timestamp. Parses headers only, never the body.
    fn presented<'a>(&'a self, headers: &'a HeaderMap, body: &'a [u8]) -> Result<Presented<'a>, SignatureError> {
        Ok(match self.kind {
            SchemeKind::Stripe => stripe_presented(headers, body)?,
            SchemeKind::Standard => standard_presented(headers, body)?,
            SchemeKind::Github => github_presented(headers, body)?,
            SchemeKind::Shopify => shopify_presented(headers, body)?,
            SchemeKind::Slack => slack_presented(headers, body)?,
            SchemeKind::Hmac => match &self.recipe {
                Some(recipe) => recipe_presented(recipe, headers, body)?,
                // `new` refuses kind hmac without a recipe; fail closed all the same.
                None => return Err(SignatureError::Mismatch),
            },
        })
    }

    /// Index of the first configured key whose MAC equals one of `candidates`.
    fn match_index(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        // One MAC per key, then cheap constant-time compares: a header stuffed with thousands of
        // candidates cannot multiply the hashing work over a large body.
        self.keys.iter().position(|key| {
            let expected = key.compute(parts);
            candidates.iter().any(|candidate| {
                // Wrong length is simply a non-match; ct_eq needs equal lengths to mean anything.
                candidate.len() == expected.len() && bool::from(expected.ct_eq(candidate))
            })
        })
    }

    /// Rejects timestamps more than `tolerance` away from `now` in either direction. Stripe's own
    /// libraries only reject old timestamps; we also reject far-future ones (as Standard Webhooks
    /// and Slack do), because a future-dated signed request would stay replayable for longer.
    fn check_fresh(&self, ts: i64, now: SystemTime) -> Result<(), SignatureError> {
        let now_secs: i128 = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i128::from(d.as_secs()),
            Err(e) => -i128::from(e.duration().as_secs()),
        };
        let distance = (now_secs - i128::from(ts)).unsigned_abs();
        if distance > u128::from(self.tolerance.as_secs()) {
            return Err(SignatureError::Stale);
        }
        Ok(())
    }

    /// Lowercase names of every header [`Verifier::verify`] reads (signatures, the signed
    /// timestamp and id): what a request kept for re-verification must keep verbatim.
    pub fn verification_header_names(&self) -> Vec<String> {
        let names: &[&str] = match self.kind {
            SchemeKind::Stripe => &["stripe-signature"],
            SchemeKind::Standard => &[
                WEBHOOK_NAMES.id,
                WEBHOOK_NAMES.timestamp,
                WEBHOOK_NAMES.signature,
                SVIX_NAMES.id,
                SVIX_NAMES.timestamp,
                SVIX_NAMES.signature,
            ],
            SchemeKind::Github => &["x-hub-signature-256"],
            SchemeKind::Shopify => &["x-shopify-hmac-sha256", "shopify-hmac-sha256"],
            SchemeKind::Slack => &["x-slack-signature", "x-slack-request-timestamp"],
            SchemeKind::Hmac => {
                return self
                    .recipe
                    .iter()
                    .flat_map(|r| [Some(&r.header), r.timestamp_header.as_ref(), r.id_header.as_ref()])
                    .flatten()
                    .map(|name| name.as_str().to_owned())
                    .collect();
            }
        };
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// Lowercase names of the headers that carry signatures for this scheme, so the caller can
    /// avoid storing or forwarding them.
    pub fn signature_header_names(&self) -> Vec<String> {
        let names: &[&str] = match self.kind {
            SchemeKind::Stripe => &["stripe-signature"],
            SchemeKind::Standard => &[WEBHOOK_NAMES.signature, SVIX_NAMES.signature],
            // The legacy SHA-1 header is a signature over the same body, so it is withheld too.
            SchemeKind::Github => &["x-hub-signature-256", "x-hub-signature"],
            SchemeKind::Shopify => &["x-shopify-hmac-sha256", "shopify-hmac-sha256"],
            SchemeKind::Slack => &["x-slack-signature"],
            SchemeKind::Hmac => {
                return self.recipe.iter().map(|r| r.header.as_str().to_owned()).collect();
            }
        };
        names.iter().map(|n| (*n).to_owned()).collect()
    }
}

fn stripe_presented<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Result<Presented<'a>, SignatureError> {
    const MALFORMED: SignatureError = SignatureError::Malformed("signature header");
    let value = header_str(headers, "stripe-signature", "stripe-signature", "signature header")?;
    let mut timestamp: Option<&str> = None;
    let mut candidates = Vec::new();
    for item in value.split(',') {
        // Items without `=`, `v0` and unknown schemes are ignored, as Stripe's libraries do.
        let Some((key, val)) = item.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                // Two `t` items would make it ambiguous which one was signed.
                if timestamp.is_some() {
                    return Err(MALFORMED);
                }
                timestamp = Some(val.trim());
            }
            // A non-hex entry cannot match; it is skipped rather than failing the whole header,
            // so one junk entry does not hide a valid one.
            "v1" => candidates.extend(decode_hex(val.trim())),
            _ => {}
        }
    }
    let ts_text = timestamp.ok_or(MALFORMED)?;
    let ts = parse_timestamp(ts_text)?;
    Ok(Presented {
        parts: vec![ts_text.as_bytes(), b".", body],
        candidates,
        timestamp: Some(ts),
        source: IdentSource::Stripe,
    })
}

fn standard_presented<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Result<Presented<'a>, SignatureError> {
    // The family is chosen by the signature header, and all three headers must come from it, so
    // a request cannot mix a signed `svix-id` with an unsigned `webhook-id`.
    let names = if headers.contains_key(WEBHOOK_NAMES.signature) {
        WEBHOOK_NAMES
    } else if headers.contains_key(SVIX_NAMES.signature) {
        SVIX_NAMES
    } else {
        return Err(SignatureError::MissingHeader(WEBHOOK_NAMES.signature));
    };
    let id = header_str(headers, names.id, names.id, "id header")?;
    // The spec forbids `.` in the id: with one, `{id}.{ts}.{body}` could be split differently and
    // a signature re-used for another (id, timestamp, body) triple.
    if id.contains('.') {
        return Err(SignatureError::Malformed("id header"));
    }
    let ts_text = header_str(headers, names.timestamp, names.timestamp, "timestamp")?;
    let ts = parse_timestamp(ts_text)?;
    let value = header_str(headers, names.signature, names.signature, "signature header")?;
    let candidates = value
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        // Only symmetric `v1` entries; `v1a` (ed25519), future versions and junk are ignored, and
        // an undecodable `v1` is merely a non-match.
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| decode_base64(sig))
        .collect();
    Ok(Presented {
        parts: vec![id.as_bytes(), b".", ts_text.as_bytes(), b".", body],
        candidates,
        timestamp: Some(ts),
        source: IdentSource::Standard { id_header: names.id },
    })
}

fn github_presented<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Result<Presented<'a>, SignatureError> {
    const NAME: &str = "x-hub-signature-256";
    let value = header_str(headers, NAME, NAME, "signature header")?;
    let sig =
        value.strip_prefix("sha256=").and_then(decode_hex).ok_or(SignatureError::Malformed("signature header"))?;
    Ok(Presented { parts: vec![body], candidates: vec![sig], timestamp: None, source: IdentSource::Github })
}

fn shopify_presented<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Result<Presented<'a>, SignatureError> {
    // The newer "Events" delivery drops the `X-` prefix; the classic name wins when both exist.
    let name =
        if headers.contains_key("x-shopify-hmac-sha256") { "x-shopify-hmac-sha256" } else { "shopify-hmac-sha256" };
    let value = header_str(headers, name, "x-shopify-hmac-sha256", "signature header")?;
    let sig = decode_base64(value).ok_or(SignatureError::Malformed("signature header"))?;
    Ok(Presented { parts: vec![body], candidates: vec![sig], timestamp: None, source: IdentSource::Shopify })
}

fn slack_presented<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Result<Presented<'a>, SignatureError> {
    const SIG: &str = "x-slack-signature";
    const TS: &str = "x-slack-request-timestamp";
    let ts_text = header_str(headers, TS, TS, "timestamp")?;
    let ts = parse_timestamp(ts_text)?;
    let value = header_str(headers, SIG, SIG, "signature header")?;
    let sig = value.strip_prefix("v0=").and_then(decode_hex).ok_or(SignatureError::Malformed("signature header"))?;
    Ok(Presented {
        parts: vec![b"v0:", ts_text.as_bytes(), b":", body],
        candidates: vec![sig],
        timestamp: Some(ts),
        source: IdentSource::Slack,
    })
}

fn recipe_presented<'a>(
    recipe: &'a ParsedRecipe,
    headers: &'a HeaderMap,
    body: &'a [u8],
) -> Result<Presented<'a>, SignatureError> {
    let value = header_str(headers, &recipe.header, "signature", "signature header")?;
    let encoded = value.strip_prefix(recipe.prefix.as_str()).ok_or(SignatureError::Malformed("signature header"))?;
    let sig = match recipe.encoding {
        SignatureEncoding::Hex => decode_hex(encoded),
        SignatureEncoding::Base64 => decode_base64(encoded),
    }
    .ok_or(SignatureError::Malformed("signature header"))?;

    let (ts_text, timestamp) = match &recipe.timestamp_header {
        Some(name) => {
            let text = header_str(headers, name, "timestamp", "timestamp")?;
            (text, Some(parse_timestamp(text)?))
        }
        None => ("", None),
    };
    let uses_id = recipe.template.contains(&TemplatePart::Id);
    let id_text = match &recipe.id_header {
        Some(name) if uses_id => header_str(headers, name, "id", "id header")?,
        _ => "",
    };
    // As Standard Webhooks forbids `.` in ids: with `{id}.{timestamp}.{body}`, id `a.1700000000`,
    // timestamp `1700000000` and body `x` sign the same bytes as id `a`, that timestamp and body
    // `1700000000.x`, so one signed delivery could be replayed as another event with another
    // body. An id without the separator that follows it has only one place to end.
    if recipe.id_separators.iter().any(|separator| id_text.contains(*separator)) {
        return Err(SignatureError::Malformed("id header"));
    }
    let parts = recipe
        .template
        .iter()
        .map(|part| match part {
            TemplatePart::Literal(text) => text.as_bytes(),
            TemplatePart::Timestamp => ts_text.as_bytes(),
            TemplatePart::Body => body,
            TemplatePart::Id => id_text.as_bytes(),
        })
        .collect();
    Ok(Presented {
        parts,
        candidates: vec![sig],
        timestamp,
        source: IdentSource::Hmac {
            id_header: recipe.id_header.clone(),
            type_header: recipe.type_header.clone(),
            id_signed: uses_id,
        },
    })
}

/// The top-level fields identity is read from. Everything else in the body is skipped by the
/// parser without being built into values, so a large payload costs a scan, not a tree.
#[derive(serde::Deserialize)]
struct IdentityFields {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    event_type: Option<serde_json::Value>,
    #[serde(default)]
    event_id: Option<serde_json::Value>,
    #[serde(default)]
    event: Option<serde_json::Value>,
}

/// The identity fields of the body, if it is a JSON object. Used only after verification.
fn json_object(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    // Serde would also read a struct from a JSON array; only an object counts.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let fields: IdentityFields = serde_json::from_slice(body).ok()?;
    let mut map = serde_json::Map::new();
    for (key, value) in
        [("id", fields.id), ("type", fields.event_type), ("event_id", fields.event_id), ("event", fields.event)]
    {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    }
    Some(map)
}

fn json_str(map: Option<&serde_json::Map<String, serde_json::Value>>, key: &str) -> Option<Vec<u8>> {
    map?.get(key)?.as_str().map(|s| s.as_bytes().to_vec())
}

/// Bytes of the first of `names` that is present, without surrounding blanks.
fn first_header(headers: &HeaderMap, names: &[&str]) -> Option<Vec<u8>> {
    names.iter().find_map(|name| headers.get(*name)).map(trimmed)
}

/// A header value without the spaces and tabs around it, as [`header_str`] reads it. HTTP/1
/// parsing already strips them but HTTP/2 does not, and an id must be the one that was signed:
/// `msg_1` padded with a tab would otherwise verify as `msg_1` yet deduplicate as another event.
fn trimmed(value: &http::HeaderValue) -> Vec<u8> {
    value.as_bytes().trim_ascii().to_vec()
}

impl Verified {
    /// Which configured secret matched (0-based, in configuration order).
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// The signed timestamp (unix seconds) when the scheme has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The provider's event identity. `body` must be the body that was verified.
    ///
    /// id: Standard → `webhook-id`/`svix-id` (the one that was signed); Stripe → body `"id"`;
    /// Slack → body `"event_id"`; Hmac whose template signs `{id}` → the recipe's `id_header`.
    /// Without one (missing, empty, non-JSON body, non-string field) the id is `sha256:` + hex
    /// SHA-256 of the body ([`IdOrigin::BodyHash`]). A provider id longer than 128 bytes, with
    /// anything but ASCII graphic characters, or starting with `sha256:`/`id-sha256:` is replaced
    /// by `id-sha256:` + hex SHA-256 of its bytes ([`IdOrigin::HashedProviderId`]), so it is
    /// always safe as a NATS header and message id and never equals a body hash.
    ///
    /// GitHub (`X-GitHub-Delivery`), Shopify (`X-Shopify-Webhook-Id`) and recipes without `{id}`
    /// (`id_header`) send an id the signature does not cover: the id is then the body hash
    /// ([`IdOrigin::BodyHashUnsignedId`]) and the provider's id only [`EventIdentity::provider_id`],
    /// so a captured request sent again under a new id is still the same event.
    ///
    /// event_type: Stripe/Standard → body `"type"`; GitHub → `X-GitHub-Event`; Shopify →
    /// `X-Shopify-Topic` (or `Shopify-Topic`); Slack → body `"event"."type"`, else `"type"`; Hmac →
    /// the recipe's `type_header`. Dropped (None) when not 1–128 ASCII graphic characters.
    pub fn identify(&self, headers: &HeaderMap, body: &[u8]) -> EventIdentity {
        let (raw_id, raw_type) = match &self.source {
            IdentSource::Stripe => {
                let json = json_object(body);
                (json_str(json.as_ref(), "id"), json_str(json.as_ref(), "type"))
            }
            IdentSource::Standard { id_header } => {
                let json = json_object(body);
                (first_header(headers, &[*id_header]), json_str(json.as_ref(), "type"))
            }
            IdentSource::Github => {
                (first_header(headers, &["x-github-delivery"]), first_header(headers, &["x-github-event"]))
            }
            IdentSource::Shopify => (
                first_header(headers, &["x-shopify-webhook-id", "shopify-webhook-id"]),
                first_header(headers, &["x-shopify-topic", "shopify-topic"]),
            ),
            IdentSource::Slack => {
                let json = json_object(body);
                let event_type = json
                    .as_ref()
                    .and_then(|m| m.get("event"))
                    .and_then(|e| e.get("type"))
                    .and_then(|t| t.as_str())
                    .map(|t| t.as_bytes().to_vec())
                    .or_else(|| json_str(json.as_ref(), "type"));
                (json_str(json.as_ref(), "event_id"), event_type)
            }
            IdentSource::Hmac { id_header, type_header, .. } => (
                id_header.as_ref().and_then(|n| headers.get(n)).map(trimmed),
                type_header.as_ref().and_then(|n| headers.get(n)).map(trimmed),
            ),
        };
        let id_signed = match &self.source {
            IdentSource::Github | IdentSource::Shopify => false,
            IdentSource::Hmac { id_signed, .. } => *id_signed,
            IdentSource::Stripe | IdentSource::Standard { .. } | IdentSource::Slack => true,
        };
        identity_of(raw_id, raw_type, id_signed, body)
    }
}

/// The identity ingest gives a verified Stripe webhook with this body (its `id` and `type`),
/// for a Stripe event fetched from Stripe's events API over TLS with the account's key rather
/// than received signed (the worker's backfill): the same event id, so the stream's and the
/// store's deduplication treat both as one event.
pub fn stripe_event_identity(body: &[u8]) -> EventIdentity {
    let json = json_object(body);
    identity_of(json_str(json.as_ref(), "id"), json_str(json.as_ref(), "type"), true, body)
}

/// The event identity of `body` with the raw id and type found for it; `id_signed`: whether
/// the signature (or, for a fetched event, the provider's API) vouches for the id.
fn identity_of(raw_id: Option<Vec<u8>>, raw_type: Option<Vec<u8>>, id_signed: bool, body: &[u8]) -> EventIdentity {
    // An empty id is treated as absent: hashing it would give every such event the same id and
    // dedup would silently drop all but the first.
    let (id, origin, provider_id) = match raw_id.filter(|v| !v.is_empty()) {
        Some(v) if id_signed => {
            let (id, origin) = provider_id_identity(v);
            (id, origin, None)
        }
        Some(v) => {
            let shown = Some(v).filter(|v| is_safe_token(v)).and_then(|v| String::from_utf8(v).ok());
            (sha256_id(body), IdOrigin::BodyHashUnsignedId, shown)
        }
        None => (sha256_id(body), IdOrigin::BodyHash, None),
    };
    let event_type = raw_type.filter(|v| is_safe_token(v)).and_then(|v| String::from_utf8(v).ok());
    EventIdentity { id, origin, event_type, provider_id }
}

// Why a request failed: computed only after `verify` refused it.
mod diagnose;
pub use diagnose::{BodyChange, DIAGNOSE_BODY_LIMIT, Diagnosis, DiagnosisKind, SecretEncoding};

// Oracles for the cargo-fuzz targets in `fuzz/` and the stable replay of their corpus; a child
// module so it can check the private header parsers directly.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

/// Test/dev helpers that *produce* valid signatures (integration tests, the load generator, docs).
///
/// Each returns the `(name, value)` header pairs to add to a request.
pub mod sign {
    use base64::Engine as _;

    use super::{B64, HmacRecipe, KeyedMac, SignatureEncoding, TemplatePart, decode_standard_secret};
    use crate::signature::HmacAlgorithm;

    fn mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        KeyedMac::new(algorithm, key).ok().map(|m| m.compute(parts))
    }

    fn hex_sha256(key: &[u8], parts: &[&[u8]]) -> String {
        mac(HmacAlgorithm::Sha256, key, parts).map(hex::encode).unwrap_or_default()
    }

    /// `Stripe-Signature: t=<timestamp>,v1=<hex>`; the key is `secret` verbatim (incl. `whsec_`).
    pub fn stripe(secret: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
        let ts = timestamp.to_string();
        let sig = hex_sha256(secret.as_bytes(), &[ts.as_bytes(), b".", body]);
        vec![("Stripe-Signature".to_owned(), format!("t={ts},v1={sig}"))]
    }

    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`. `secret` is the
    /// `whsec_…` string; if it does not decode, the result is empty.
    pub fn standard(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
        let Ok(key) = decode_standard_secret(secret) else {
            return Vec::new();
        };
        let ts = timestamp.to_string();
        let parts: [&[u8]; 5] = [msg_id.as_bytes(), b".", ts.as_bytes(), b".", body];
        let Some(sig) = mac(HmacAlgorithm::Sha256, &key, &parts) else {
            return Vec::new();
        };
        vec![
            ("webhook-id".to_owned(), msg_id.to_owned()),
            ("webhook-timestamp".to_owned(), ts),
            ("webhook-signature".to_owned(), format!("v1,{}", B64.encode(sig))),
        ]
    }

    /// `X-Hub-Signature-256: sha256=<hex>`, `X-GitHub-Delivery`, `X-GitHub-Event`.
    pub fn github(secret: &str, delivery_id: &str, event: &str, body: &[u8]) -> Vec<(String, String)> {
        let sig = hex_sha256(secret.as_bytes(), &[body]);
        vec![
            ("X-Hub-Signature-256".to_owned(), format!("sha256={sig}")),
            ("X-GitHub-Delivery".to_owned(), delivery_id.to_owned()),
            ("X-GitHub-Event".to_owned(), event.to_owned()),
        ]
    }

    /// `X-Shopify-Hmac-Sha256: <base64>`, `X-Shopify-Webhook-Id`, `X-Shopify-Topic`.
    pub fn shopify(secret: &str, webhook_id: &str, topic: &str, body: &[u8]) -> Vec<(String, String)> {
        let Some(sig) = mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[body]) else {
            return Vec::new();
        };
        vec![
            ("X-Shopify-Hmac-Sha256".to_owned(), B64.encode(sig)),
            ("X-Shopify-Webhook-Id".to_owned(), webhook_id.to_owned()),
            ("X-Shopify-Topic".to_owned(), topic.to_owned()),
        ]
    }

    /// `X-Slack-Signature: v0=<hex>` over `v0:{timestamp}:{body}`, `X-Slack-Request-Timestamp`.
    pub fn slack(secret: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
        let ts = timestamp.to_string();
        let sig = hex_sha256(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
        vec![("X-Slack-Signature".to_owned(), format!("v0={sig}")), ("X-Slack-Request-Timestamp".to_owned(), ts)]
    }

    /// Signs per a generic recipe: the signature header plus the timestamp and id headers when
    /// the recipe names them and a value is given. Empty if the recipe is invalid or the template
    /// needs a timestamp or id that was not given.
    pub fn hmac(
        recipe: &HmacRecipe,
        secret: &str,
        timestamp: Option<i64>,
        id: Option<&str>,
        body: &[u8],
    ) -> Vec<(String, String)> {
        let Ok(parsed) = recipe.parse() else {
            return Vec::new();
        };
        let ts = timestamp.map(|t| t.to_string());
        let mut parts: Vec<&[u8]> = Vec::with_capacity(parsed.template.len());
        for part in &parsed.template {
            parts.push(match part {
                TemplatePart::Literal(text) => text.as_bytes(),
                TemplatePart::Body => body,
                TemplatePart::Timestamp => match &ts {
                    Some(ts) => ts.as_bytes(),
                    None => return Vec::new(),
                },
                TemplatePart::Id => match id {
                    Some(id) => id.as_bytes(),
                    None => return Vec::new(),
                },
            });
        }
        let Some(sig) = mac(recipe.algorithm, secret.as_bytes(), &parts) else {
            return Vec::new();
        };
        let encoded = match recipe.encoding {
            SignatureEncoding::Hex => hex::encode(sig),
            SignatureEncoding::Base64 => B64.encode(sig),
        };
        let mut headers = vec![(recipe.header.clone(), format!("{}{encoded}", recipe.prefix))];
        if let (Some(name), Some(ts)) = (&recipe.timestamp_header, ts) {
            headers.push((name.clone(), ts));
        }
        if let (Some(name), Some(id)) = (&recipe.id_header, id) {
            headers.push((name.clone(), id.to_owned()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use http::HeaderValue;

    const TOL: Duration = Duration::from_secs(300);

    type Headers = Vec<(String, String)>;
    type SignFn = fn(&str, i64, &[u8]) -> Headers;

    /// `secs` after the Unix epoch (also for the diagnosis tests).
    pub(super) fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
    }

    /// A header map of `pairs` (also for the diagnosis tests).
    pub(super) fn map(pairs: &[(String, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn verifier(kind: SchemeKind, secrets: &[&str]) -> Verifier {
        Verifier::new(kind, secrets, TOL, None).unwrap()
    }

    #[track_caller]
    fn check(v: &Verifier, headers: &[(String, String)], body: &[u8], now: i64) -> Result<Verified, SignatureError> {
        v.verify(&map(headers), body, at(now))
    }

    /// Replaces the value of header `name` (case-insensitive) in `headers`.
    fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
        headers
            .iter()
            .map(
                |(k, v)| {
                    if k.eq_ignore_ascii_case(name) { (k.clone(), value.to_owned()) } else { (k.clone(), v.clone()) }
                },
            )
            .collect()
    }

    fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
        headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(name)).cloned().collect()
    }

    fn flip(body: &[u8]) -> Vec<u8> {
        let mut b = body.to_vec();
        b[0] ^= 0x01;
        b
    }

    // ---- official and derived vectors (docs/providers.md) ----

    const STD1_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STD1_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const STD1_TS: i64 = 1_614_265_330;
    const STD1_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const STD1_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_TS: i64 = 1_700_000_000;
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const STRIPE_V1: &str = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";

    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: i64 = 1_531_420_618;
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn std1_headers(sig: &str) -> Vec<(String, String)> {
        pairs(&[("webhook-id", STD1_ID), ("webhook-timestamp", &STD1_TS.to_string()), ("webhook-signature", sig)])
    }

    #[test]
    fn standard_official_vector_1() {
        let v = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        let ok = check(&v, &std1_headers(STD1_SIG), STD1_BODY, STD1_TS).unwrap();
        assert_eq!(ok.secret_index(), 0);
        assert_eq!(ok.timestamp(), Some(STD1_TS));
        assert_eq!(sign::standard(STD1_SECRET, STD1_ID, STD1_TS, STD1_BODY), std1_headers(STD1_SIG));
        // The library also accepts the secret without its prefix.
        let bare = STD1_SECRET.trim_start_matches("whsec_");
        let v = verifier(SchemeKind::Standard, &[bare]);
        assert!(check(&v, &std1_headers(STD1_SIG), STD1_BODY, STD1_TS).is_ok());
    }

    #[test]
    fn standard_official_invalid_variant() {
        let v = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        let bad = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert_eq!(check(&v, &std1_headers(bad), STD1_BODY, STD1_TS).unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn standard_official_vector_2() {
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let id = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
        let ts = 1_649_367_553;
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let expected = pairs(&[
            ("webhook-id", id),
            ("webhook-timestamp", "1649367553"),
            ("webhook-signature", "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
        ]);
        let v = verifier(SchemeKind::Standard, &[secret]);
        assert!(check(&v, &expected, body, ts).is_ok());
        assert_eq!(sign::standard(secret, id, ts, body), expected);
    }

    #[test]
    fn standard_svix_names() {
        let v = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        let h = pairs(&[("svix-id", STD1_ID), ("svix-timestamp", "1614265330"), ("svix-signature", STD1_SIG)]);
        let ok = check(&v, &h, STD1_BODY, STD1_TS).unwrap();
        assert_eq!(ok.identify(&map(&h), STD1_BODY).id, STD1_ID);
        // Mixing families is refused: the svix-id is not what a webhook-signature signs.
        let mixed =
            pairs(&[("svix-id", STD1_ID), ("webhook-timestamp", "1614265330"), ("webhook-signature", STD1_SIG)]);
        assert_eq!(check(&v, &mixed, STD1_BODY, STD1_TS).unwrap_err(), SignatureError::MissingHeader("webhook-id"));
    }

    fn stripe_headers(v1: &str) -> Vec<(String, String)> {
        pairs(&[("Stripe-Signature", &format!("t={STRIPE_TS},v1={v1}"))])
    }

    #[test]
    fn stripe_derived_vector() {
        let v = verifier(SchemeKind::Stripe, &[STRIPE_SECRET]);
        let ok = check(&v, &stripe_headers(STRIPE_V1), STRIPE_BODY, STRIPE_TS).unwrap();
        assert_eq!(ok.timestamp(), Some(STRIPE_TS));
        assert_eq!(sign::stripe(STRIPE_SECRET, STRIPE_TS, STRIPE_BODY), stripe_headers(STRIPE_V1));
        // Uppercase hex and a trailing v0 are accepted.
        let upper =
            pairs(&[("Stripe-Signature", &format!("t={STRIPE_TS},v1={},v0=abcd,x9=zz", STRIPE_V1.to_uppercase()))]);
        assert!(check(&v, &upper, STRIPE_BODY, STRIPE_TS).is_ok());
    }

    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_official_vector() {
        let v = verifier(SchemeKind::Github, &[GH_SECRET]);
        let h = sign::github(GH_SECRET, "d1", "push", GH_BODY);
        assert_eq!(h[0], ("X-Hub-Signature-256".to_owned(), GH_SIG.to_owned()));
        let ok = check(&v, &pairs(&[("X-Hub-Signature-256", GH_SIG)]), GH_BODY, 0).unwrap();
        assert_eq!(ok.timestamp(), None);
        // No timestamp: any `now` is fine.
        assert!(check(&v, &h, GH_BODY, 4_000_000_000).is_ok());
    }

    const SHOP_SIG: &str = "75DK9h3ZbLv2nIMppOFKPFxSYU9PgXvd4NXUhSs88Jk=";

    #[test]
    fn shopify_derived_vector() {
        let v = verifier(SchemeKind::Shopify, &["hush"]);
        let body = br#"{"id":123}"#;
        assert!(check(&v, &pairs(&[("X-Shopify-Hmac-Sha256", SHOP_SIG)]), body, 0).is_ok());
        assert!(check(&v, &pairs(&[("Shopify-Hmac-Sha256", SHOP_SIG)]), body, 0).is_ok());
        let h = sign::shopify("hush", "wh-1", "orders/create", body);
        assert_eq!(h[0], ("X-Shopify-Hmac-Sha256".to_owned(), SHOP_SIG.to_owned()));
        assert!(check(&v, &h, body, 0).is_ok());
    }

    fn slack_headers(sig: &str, ts: i64) -> Vec<(String, String)> {
        pairs(&[("X-Slack-Signature", sig), ("X-Slack-Request-Timestamp", &ts.to_string())])
    }

    #[test]
    fn slack_official_vector() {
        let v = verifier(SchemeKind::Slack, &[SLACK_SECRET]);
        let ok = check(&v, &slack_headers(SLACK_SIG, SLACK_TS), SLACK_BODY, SLACK_TS).unwrap();
        assert_eq!(ok.timestamp(), Some(SLACK_TS));
        assert_eq!(sign::slack(SLACK_SECRET, SLACK_TS, SLACK_BODY), slack_headers(SLACK_SIG, SLACK_TS));
    }

    // ---- tampering, wrong secrets, key formats ----

    /// For every scheme: (verifier, signed headers, body, now).
    fn signed_cases(secret: &str) -> Vec<(Verifier, Headers, Vec<u8>, i64)> {
        let std_secret = format!("whsec_{}", B64.encode(secret));
        let body = br#"{"id":"evt_1","type":"x.y","event_id":"Ev1"}"#.to_vec();
        let now = 1_700_000_000;
        let recipe = HmacRecipe {
            header: "X-Acme-Signature".into(),
            prefix: "sha512=".into(),
            encoding: SignatureEncoding::Base64,
            algorithm: HmacAlgorithm::Sha512,
            timestamp_header: Some("X-Acme-Timestamp".into()),
            signed_payload: "{id}.{timestamp}.{body}".into(),
            id_header: Some("X-Acme-Id".into()),
            type_header: None,
        };
        vec![
            (verifier(SchemeKind::Stripe, &[secret]), sign::stripe(secret, now, &body), body.clone(), now),
            (
                verifier(SchemeKind::Standard, &[&std_secret]),
                sign::standard(&std_secret, "msg_1", now, &body),
                body.clone(),
                now,
            ),
            (verifier(SchemeKind::Github, &[secret]), sign::github(secret, "d-1", "push", &body), body.clone(), now),
            (
                verifier(SchemeKind::Shopify, &[secret]),
                sign::shopify(secret, "w-1", "orders/create", &body),
                body.clone(),
                now,
            ),
            (verifier(SchemeKind::Slack, &[secret]), sign::slack(secret, now, &body), body.clone(), now),
            (
                Verifier::new(SchemeKind::Hmac, &[secret], TOL, Some(recipe.clone())).unwrap(),
                sign::hmac(&recipe, secret, Some(now), Some("id-1"), &body),
                body.clone(),
                now,
            ),
        ]
    }

    #[test]
    fn tampered_body_and_wrong_secret_mismatch() {
        for (v, h, body, now) in signed_cases("right secret") {
            assert!(check(&v, &h, &body, now).is_ok(), "{:?}", v.kind());
            assert_eq!(check(&v, &h, &flip(&body), now).unwrap_err(), SignatureError::Mismatch, "{:?}", v.kind());
            let mut longer = body.clone();
            longer.push(b' ');
            assert_eq!(check(&v, &h, &longer, now).unwrap_err(), SignatureError::Mismatch);
        }
        let right = signed_cases("right secret");
        for ((_, h, body, now), (wrong, _, _, _)) in right.iter().zip(signed_cases("wrong secret")) {
            assert_eq!(check(&wrong, h, body, *now).unwrap_err(), SignatureError::Mismatch, "{:?}", wrong.kind());
        }
    }

    #[test]
    fn whsec_means_different_keys_for_stripe_and_standard() {
        // Signed as Stripe would (key = the string), verified as Standard (key = decoded bytes).
        let secret = STD1_SECRET;
        let stripe_sig = sign::stripe(secret, STD1_TS, STD1_BODY);
        let stripe_hex = stripe_sig[0].1.split("v1=").nth(1).unwrap().to_owned();
        let as_std = std1_headers(&format!("v1,{}", B64.encode(hex::decode(&stripe_hex).unwrap())));
        let std = verifier(SchemeKind::Standard, &[secret]);
        assert_eq!(check(&std, &as_std, STD1_BODY, STD1_TS).unwrap_err(), SignatureError::Mismatch);
        // Plain Standard signature with the Standard verifier works (control).
        assert!(check(&std, &std1_headers(STD1_SIG), STD1_BODY, STD1_TS).is_ok());

        // The reverse: the Standard MAC presented to a Stripe verifier with the same secret string.
        let std_mac = B64.decode(STD1_SIG.trim_start_matches("v1,")).unwrap();
        let stripe = verifier(SchemeKind::Stripe, &[secret]);
        let content_as_stripe = pairs(&[("Stripe-Signature", &format!("t={STD1_TS},v1={}", hex::encode(&std_mac)))]);
        assert_eq!(check(&stripe, &content_as_stripe, STD1_BODY, STD1_TS).unwrap_err(), SignatureError::Mismatch);
        // And the Stripe signature over the same data does verify with Stripe semantics.
        assert!(check(&stripe, &stripe_sig, STD1_BODY, STD1_TS).is_ok());
        // Different keys really give different MACs over identical content.
        let key_std = decode_standard_secret(secret).unwrap();
        let parts: [&[u8]; 1] = [b"same content"];
        assert_ne!(
            KeyedMac::new(HmacAlgorithm::Sha256, &key_std).unwrap().compute(&parts),
            KeyedMac::new(HmacAlgorithm::Sha256, secret.as_bytes()).unwrap().compute(&parts)
        );
    }

    // ---- rotation ----

    #[test]
    fn rotation_old_and_new_secrets() {
        for kind in [SchemeKind::Stripe, SchemeKind::Github, SchemeKind::Shopify, SchemeKind::Slack] {
            let (old, new) = ("old-secret", "new-secret");
            let body = b"{}";
            let now = 1_700_000_000;
            let sign_with = |secret: &str| match kind {
                SchemeKind::Stripe => sign::stripe(secret, now, body),
                SchemeKind::Github => sign::github(secret, "d", "e", body),
                SchemeKind::Shopify => sign::shopify(secret, "w", "t", body),
                _ => sign::slack(secret, now, body),
            };
            let both = verifier(kind, &[old, new]);
            assert_eq!(check(&both, &sign_with(old), body, now).unwrap().secret_index(), 0);
            assert_eq!(check(&both, &sign_with(new), body, now).unwrap().secret_index(), 1);
            let only_new = verifier(kind, &[new]);
            assert_eq!(check(&only_new, &sign_with(old), body, now).unwrap_err(), SignatureError::Mismatch);
        }
        // Standard, with whsec_ secrets.
        let old = format!("whsec_{}", B64.encode("old key bytes......"));
        let new = format!("whsec_{}", B64.encode("new key bytes......"));
        let both = verifier(SchemeKind::Standard, &[&old, &new]);
        let h_old = sign::standard(&old, "m", 10, b"x");
        let h_new = sign::standard(&new, "m", 10, b"x");
        assert_eq!(check(&both, &h_old, b"x", 10).unwrap().secret_index(), 0);
        assert_eq!(check(&both, &h_new, b"x", 10).unwrap().secret_index(), 1);
        let only_new = verifier(SchemeKind::Standard, &[&new]);
        assert_eq!(check(&only_new, &h_old, b"x", 10).unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn stripe_junk_v1_then_valid_v1() {
        let v = verifier(SchemeKind::Stripe, &[STRIPE_SECRET]);
        let junk = "0".repeat(64);
        for header in [
            format!("t={STRIPE_TS},v1={junk},v1={STRIPE_V1}"),
            format!("t={STRIPE_TS},v1=nothex,v1={STRIPE_V1}"),
            format!("v1={STRIPE_V1}, t={STRIPE_TS}, v1=ab"),
        ] {
            let h = pairs(&[("Stripe-Signature", &header)]);
            assert!(check(&v, &h, STRIPE_BODY, STRIPE_TS).is_ok(), "{header}");
        }
        // Only v0, or no v1 at all: Mismatch. No t: Malformed.
        for (header, err) in [
            (format!("t={STRIPE_TS},v0={STRIPE_V1}"), SignatureError::Mismatch),
            (format!("t={STRIPE_TS}"), SignatureError::Mismatch),
            (format!("v1={STRIPE_V1}"), SignatureError::Malformed("signature header")),
            (format!("t={STRIPE_TS},t={STRIPE_TS},v1={STRIPE_V1}"), SignatureError::Malformed("signature header")),
        ] {
            let h = pairs(&[("Stripe-Signature", &header)]);
            assert_eq!(check(&v, &h, STRIPE_BODY, STRIPE_TS).unwrap_err(), err, "{header}");
        }
    }

    #[test]
    fn standard_multi_signature_header() {
        let v = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        let good = STD1_SIG.trim_start_matches("v1,");
        for sig in [
            format!("v2,xxx v1a,yyy v1,{good}"),
            format!("v1,AAAA junk v1,{good}"),
            format!("v1,!!notbase64!! v1,{good}"),
            // Unpadded base64 is accepted too.
            format!("v1,{}", good.trim_end_matches('=')),
        ] {
            assert!(check(&v, &std1_headers(&sig), STD1_BODY, STD1_TS).is_ok(), "{sig}");
        }
        assert_eq!(
            check(&v, &std1_headers(&format!("v1a,{good} v2,{good}")), STD1_BODY, STD1_TS).unwrap_err(),
            SignatureError::Mismatch
        );
    }

    // ---- timestamps ----

    #[test]
    fn timestamp_tolerance_both_directions() {
        let body = b"{\"a\":1}";
        let now = 1_700_000_000;
        let std_secret = STD1_SECRET;
        let cases: Vec<(SchemeKind, &str, SignFn)> = vec![
            (SchemeKind::Stripe, "sk", sign::stripe),
            (SchemeKind::Standard, std_secret, |s, t, b| sign::standard(s, "msg_x", t, b)),
            (SchemeKind::Slack, "sk", sign::slack),
        ];
        for (kind, secret, sign_fn) in cases {
            let v = verifier(kind, &[secret]);
            for (offset, expected) in [
                (0, None),
                (-299, None),
                (-300, None),
                (299, None),
                (300, None),
                (-301, Some(SignatureError::Stale)),
                (301, Some(SignatureError::Stale)),
            ] {
                let ts = now + offset;
                let got = check(&v, &sign_fn(secret, ts, body), body, now);
                assert_eq!(got.err(), expected, "{kind:?} offset {offset}");
            }
            // Stale and wrong signature: the signature is judged first.
            let wrong = verifier(kind, &[if kind == SchemeKind::Standard { "whsec_AAAAAAAA" } else { "other" }]);
            assert_eq!(
                check(&wrong, &sign_fn(secret, now - 10_000, body), body, now).unwrap_err(),
                SignatureError::Mismatch
            );
        }
    }

    #[test]
    fn timestamp_before_epoch_now_does_not_panic() {
        let v = verifier(SchemeKind::Slack, &["s"]);
        let h = sign::slack("s", 0, b"x");
        let before = UNIX_EPOCH - Duration::from_secs(1_000);
        assert_eq!(v.verify(&map(&h), b"x", before).unwrap_err(), SignatureError::Stale);
        let far = sign::slack("s", i64::MAX, b"x");
        assert_eq!(check(&v, &far, b"x", 1).unwrap_err(), SignatureError::Stale);
    }

    // ---- malformed headers ----

    #[test]
    fn malformed_and_missing_headers() {
        use SignatureError::{Malformed, MissingHeader};
        let stripe = verifier(SchemeKind::Stripe, &["s"]);
        let standard = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        let github = verifier(SchemeKind::Github, &["s"]);
        let shopify = verifier(SchemeKind::Shopify, &["s"]);
        let slack = verifier(SchemeKind::Slack, &["s"]);
        let huge = "9".repeat(40);
        let long = format!("t=1,{}", "v1=00,".repeat(20_000));

        let std_ok = std1_headers(STD1_SIG);
        let slack_ok = slack_headers(SLACK_SIG, SLACK_TS);
        let cases: Vec<(&Verifier, Headers, SignatureError)> = vec![
            (&stripe, vec![], MissingHeader("stripe-signature")),
            (&stripe, pairs(&[("stripe-signature", "")]), Malformed("signature header")),
            (&stripe, pairs(&[("stripe-signature", "garbage")]), Malformed("signature header")),
            (&stripe, pairs(&[("stripe-signature", "t=abc,v1=00")]), Malformed("timestamp")),
            (&stripe, pairs(&[("stripe-signature", "t=-5,v1=00")]), Malformed("timestamp")),
            (&stripe, pairs(&[("stripe-signature", "t=,v1=00")]), Malformed("timestamp")),
            (&stripe, pairs(&[("stripe-signature", &format!("t={huge},v1=00"))]), Malformed("timestamp")),
            (&stripe, pairs(&[("stripe-signature", &long)]), SignatureError::Mismatch),
            (&standard, vec![], MissingHeader("webhook-signature")),
            (&standard, without(&std_ok, "webhook-id"), MissingHeader("webhook-id")),
            (&standard, without(&std_ok, "webhook-timestamp"), MissingHeader("webhook-timestamp")),
            (&standard, with(&std_ok, "webhook-id", ""), Malformed("id header")),
            (&standard, with(&std_ok, "webhook-id", "a.b"), Malformed("id header")),
            (&standard, with(&std_ok, "webhook-timestamp", "1e9"), Malformed("timestamp")),
            (&standard, with(&std_ok, "webhook-timestamp", &huge), Malformed("timestamp")),
            (&standard, with(&std_ok, "webhook-timestamp", "+1614265330"), Malformed("timestamp")),
            (&standard, with(&std_ok, "webhook-signature", ""), Malformed("signature header")),
            (&standard, with(&std_ok, "webhook-signature", "garbage"), SignatureError::Mismatch),
            (&github, vec![], MissingHeader("x-hub-signature-256")),
            (&github, pairs(&[("x-hub-signature-256", "")]), Malformed("signature header")),
            (&github, pairs(&[("x-hub-signature-256", "sha1=00")]), Malformed("signature header")),
            (&github, pairs(&[("x-hub-signature-256", "sha256=zz")]), Malformed("signature header")),
            (&github, pairs(&[("x-hub-signature-256", "sha256=00")]), SignatureError::Mismatch),
            (&shopify, vec![], MissingHeader("x-shopify-hmac-sha256")),
            (&shopify, pairs(&[("x-shopify-hmac-sha256", "***")]), Malformed("signature header")),
            (&shopify, pairs(&[("x-shopify-hmac-sha256", "AAAA")]), SignatureError::Mismatch),
            (&slack, vec![], MissingHeader("x-slack-request-timestamp")),
            (&slack, without(&slack_ok, "x-slack-signature"), MissingHeader("x-slack-signature")),
            (&slack, with(&slack_ok, "x-slack-signature", "v1=00"), Malformed("signature header")),
            (&slack, with(&slack_ok, "x-slack-request-timestamp", "abc"), Malformed("timestamp")),
            (&slack, with(&slack_ok, "x-slack-request-timestamp", &huge), Malformed("timestamp")),
        ];
        for (v, h, expected) in cases {
            let got = check(v, &h, SLACK_BODY, SLACK_TS);
            assert_eq!(got.unwrap_err(), expected, "{:?} {h:?}", v.kind());
        }

        // Non-UTF-8 / non-visible bytes in a header value.
        let bad = HeaderValue::from_bytes(b"t=1,v1=\xff\xfe").unwrap();
        let mut h = HeaderMap::new();
        h.insert("stripe-signature", bad.clone());
        assert_eq!(stripe.verify(&h, b"", at(1)).unwrap_err(), Malformed("signature header"));
        let mut h = map(&std_ok);
        h.insert("webhook-timestamp", bad.clone());
        assert_eq!(standard.verify(&h, b"", at(1)).unwrap_err(), Malformed("timestamp"));
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature-256", bad);
        assert_eq!(github.verify(&h, b"", at(1)).unwrap_err(), Malformed("signature header"));

        // Extremely long headers of every kind: no panic, never Ok.
        let giant = "v1,".repeat(50_000) + &"A".repeat(100_000);
        for (v, name) in [
            (&stripe, "stripe-signature"),
            (&standard, "webhook-signature"),
            (&github, "x-hub-signature-256"),
            (&shopify, "x-shopify-hmac-sha256"),
            (&slack, "x-slack-signature"),
        ] {
            let mut h = map(&std_ok);
            h.extend(map(&slack_ok));
            h.insert(HeaderName::from_static(name), HeaderValue::from_str(&giant).unwrap());
            assert!(v.verify(&h, b"x", at(STD1_TS)).is_err());
        }
    }

    #[test]
    fn repeated_headers_use_the_first_value() {
        let v = verifier(SchemeKind::Github, &[GH_SECRET]);
        let good = pairs(&[("X-Hub-Signature-256", GH_SIG), ("X-Hub-Signature-256", "sha256=00")]);
        assert!(check(&v, &good, GH_BODY, 0).is_ok());
        let bad = pairs(&[("X-Hub-Signature-256", "sha256=00"), ("X-Hub-Signature-256", GH_SIG)]);
        assert_eq!(check(&v, &bad, GH_BODY, 0).unwrap_err(), SignatureError::Mismatch);
    }

    /// Deterministic xorshift64* so the fuzz test needs no extra crates and always replays.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    #[test]
    fn fuzz_signature_headers_never_panic_never_ok() {
        const ALPHABET: &[u8] = b"=,. v1t0v0v1a23456789abcdefxyzABCDEFXYZ+/-_:sha256=\t\x80\xa0\xfe\xff";
        let now = 1_700_000_000;
        let recipe = HmacRecipe {
            header: "x-acme-sig".into(),
            prefix: "v1=".into(),
            encoding: SignatureEncoding::Hex,
            algorithm: HmacAlgorithm::Sha256,
            timestamp_header: Some("x-acme-ts".into()),
            signed_payload: "{timestamp}.{body}".into(),
            id_header: None,
            type_header: None,
        };
        let schemes = [
            (verifier(SchemeKind::Stripe, &["s"]), "stripe-signature"),
            (verifier(SchemeKind::Standard, &[STD1_SECRET]), "webhook-signature"),
            (verifier(SchemeKind::Github, &["s"]), "x-hub-signature-256"),
            (verifier(SchemeKind::Shopify, &["s"]), "x-shopify-hmac-sha256"),
            (verifier(SchemeKind::Slack, &["s"]), "x-slack-signature"),
            (Verifier::new(SchemeKind::Hmac, &["s"], TOL, Some(recipe)).unwrap(), "x-acme-sig"),
        ];
        let mut base = HeaderMap::new();
        for (name, value) in [
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", "1700000000"),
            ("x-slack-request-timestamp", "1700000000"),
            ("x-acme-ts", "1700000000"),
        ] {
            base.insert(name, HeaderValue::from_static(value));
        }
        // `scripts/fuzz` raises the count and varies the seed for a longer, bounded run; a
        // failure prints the seed, which replays it exactly.
        let iterations: usize =
            std::env::var("INLET_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let seed: u64 =
            std::env::var("INLET_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9E37_79B9_7F4A_7C15);
        eprintln!("fuzz: seed {seed}, {iterations} cases per scheme");
        let mut rng = XorShift(seed.max(1));
        for (v, name) in &schemes {
            let name = HeaderName::from_static(name);
            for i in 0..iterations {
                let len = match i % 10 {
                    0 => rng.below(2_000),
                    _ => rng.below(100),
                };
                let mut bytes: Vec<u8> = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
                // Sometimes start like a plausible header, to get past the first checks.
                match rng.below(4) {
                    0 => bytes.splice(0..0, b"t=1700000000,v1=".iter().copied()).for_each(drop),
                    1 => bytes.splice(0..0, b"sha256=".iter().copied()).for_each(drop),
                    2 => bytes.splice(0..0, b"v0=".iter().copied()).for_each(drop),
                    _ => {}
                }
                let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                    continue;
                };
                let mut headers = base.clone();
                headers.insert(name.clone(), value);
                let body = &bytes[..bytes.len().min(16)];
                let result = v.verify(&headers, body, at(now));
                assert!(result.is_err(), "{:?} accepted {bytes:?}", v.kind());
            }
        }
    }

    // ---- identify ----

    fn identify(v: &Verifier, h: &[(String, String)], body: &[u8], now: i64) -> EventIdentity {
        check(v, h, body, now).unwrap().identify(&map(h), body)
    }

    #[test]
    fn identify_stripe() {
        let v = verifier(SchemeKind::Stripe, &[STRIPE_SECRET]);
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let id = identify(&v, &sign::stripe(STRIPE_SECRET, 5, body), body, 5);
        assert_eq!(
            id,
            EventIdentity {
                id: "evt_1".into(),
                origin: IdOrigin::Provider,
                event_type: Some("invoice.paid".into()),
                provider_id: None,
            }
        );
        for body in [&br#"{"object":"event"}"#[..], b"not json", br#"{"id":7}"#, br#"["id"]"#, br#"{"id":""}"#] {
            let id = identify(&v, &sign::stripe(STRIPE_SECRET, 5, body), body, 5);
            assert_eq!(id.origin, IdOrigin::BodyHash);
            assert_eq!(id.id, format!("sha256:{}", hex::encode(Sha256::digest(body))));
            assert_eq!(id.event_type, None);
        }
        assert_eq!(sha256_id(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn a_fetched_stripe_event_has_the_identity_of_the_same_event_received_signed() {
        let v = verifier(SchemeKind::Stripe, &[STRIPE_SECRET]);
        let long = format!(r#"{{"id":"{}","type":"x"}}"#, "e".repeat(300));
        for body in
            [&br#"{"id":"evt_1","type":"invoice.paid"}"#[..], br#"{"id":"sha256:ab"}"#, b"not json", long.as_bytes()]
        {
            assert_eq!(stripe_event_identity(body), identify(&v, &sign::stripe(STRIPE_SECRET, 5, body), body, 5));
        }
    }

    #[test]
    fn identify_standard_github_shopify_slack() {
        let std = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        let body = br#"{"type":"user.created"}"#;
        let id = identify(&std, &sign::standard(STD1_SECRET, "msg_9", 7, body), body, 7);
        assert_eq!((id.id.as_str(), id.origin), ("msg_9", IdOrigin::Provider));
        assert_eq!(id.event_type.as_deref(), Some("user.created"));
        // Standard with a non-JSON body: id still from the header, no type.
        let id = identify(&std, &sign::standard(STD1_SECRET, "msg_9", 7, b"raw"), b"raw", 7);
        assert_eq!((id.id.as_str(), id.event_type), ("msg_9", None));

        // GitHub and Shopify do not sign their id header: the dedup key is the body hash, the
        // delivery id is kept for display only, and the type still comes from its header.
        let gh = verifier(SchemeKind::Github, &[GH_SECRET]);
        let h = sign::github(GH_SECRET, "72d3162e-cc78-11e3-81ab-4c9367dc0958", "push", GH_BODY);
        let id = identify(&gh, &h, GH_BODY, 0);
        assert_eq!(id.id, sha256_id(GH_BODY));
        assert_eq!(id.origin, IdOrigin::BodyHashUnsignedId);
        assert_eq!(id.provider_id.as_deref(), Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert_eq!(id.event_type.as_deref(), Some("push"));
        let id = identify(&gh, &without(&h, "X-GitHub-Delivery"), GH_BODY, 0);
        assert_eq!((id.id, id.origin, id.provider_id), (sha256_id(GH_BODY), IdOrigin::BodyHash, None));

        let shop = verifier(SchemeKind::Shopify, &["hush"]);
        let body = br#"{"id":123}"#;
        let id = identify(&shop, &sign::shopify("hush", "b54557e4-bdd9", "orders/create", body), body, 0);
        assert_eq!((id.id, id.origin), (sha256_id(body), IdOrigin::BodyHashUnsignedId));
        assert_eq!(id.provider_id.as_deref(), Some("b54557e4-bdd9"));
        assert_eq!(id.event_type.as_deref(), Some("orders/create"));
        let newer = pairs(&[
            ("Shopify-Hmac-Sha256", SHOP_SIG),
            ("Shopify-Webhook-Id", "w-2"),
            ("Shopify-Topic", "products/update"),
        ]);
        let id = identify(&shop, &newer, body, 0);
        assert_eq!((id.provider_id.as_deref(), id.event_type.as_deref()), (Some("w-2"), Some("products/update")));

        let slack = verifier(SchemeKind::Slack, &["s"]);
        let body = br#"{"event_id":"Ev08","type":"event_callback","event":{"type":"app_mention"}}"#;
        let id = identify(&slack, &sign::slack("s", 3, body), body, 3);
        assert_eq!((id.id.as_str(), id.origin), ("Ev08", IdOrigin::Provider));
        assert_eq!(id.event_type.as_deref(), Some("app_mention"));
        let body = br#"{"token":"t","challenge":"c","type":"url_verification"}"#;
        let id = identify(&slack, &sign::slack("s", 3, body), body, 3);
        assert_eq!(id.origin, IdOrigin::BodyHash);
        assert_eq!(id.event_type.as_deref(), Some("url_verification"));
        // The official slash-command vector is form-encoded: body hash, no type.
        let id = identify(
            &verifier(SchemeKind::Slack, &[SLACK_SECRET]),
            &slack_headers(SLACK_SIG, SLACK_TS),
            SLACK_BODY,
            SLACK_TS,
        );
        assert_eq!((id.origin, id.event_type), (IdOrigin::BodyHash, None));
    }

    #[test]
    fn identify_uses_the_signed_id_without_padding() {
        // Found by the `verify_standard` fuzz target: HTTP/2 delivers header values untrimmed,
        // the verifier signs the trimmed id, so dedup must use the trimmed one too.
        let v = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        for padded in [format!("{STD1_ID}\t\t"), format!(" {STD1_ID} ")] {
            let headers = map(&with(&std1_headers(STD1_SIG), "webhook-id", &padded));
            let ok = v.verify(&headers, STD1_BODY, at(STD1_TS)).unwrap();
            assert_eq!(ok.identify(&headers, STD1_BODY).id, STD1_ID, "{padded:?}");
        }
        let r = recipe("{id}.{timestamp}.{body}");
        let v = Verifier::new(SchemeKind::Hmac, &["k"], TOL, Some(r.clone())).unwrap();
        let h = with(&sign::hmac(&r, "k", Some(5), Some("evt-1"), b"x"), "X-Acme-Id", "evt-1 \t");
        let mut headers = map(&h);
        headers.insert("x-acme-event", HeaderValue::from_static(" thing "));
        let id = v.verify(&headers, b"x", at(5)).unwrap().identify(&headers, b"x");
        assert_eq!((id.id.as_str(), id.event_type.as_deref()), ("evt-1", Some("thing")));
    }

    #[test]
    fn identify_unsafe_provider_ids_are_hashed() {
        let std = verifier(SchemeKind::Standard, &[STD1_SECRET]);
        let long = "a".repeat(129);
        let max = "b".repeat(128);
        let long_type = format!(r#"{{"type":"{long}"}}"#);
        for (raw, origin) in [
            ("has space", IdOrigin::HashedProviderId),
            (long.as_str(), IdOrigin::HashedProviderId),
            (max.as_str(), IdOrigin::Provider),
        ] {
            let h = sign::standard(STD1_SECRET, raw, 7, long_type.as_bytes());
            let id = identify(&std, &h, long_type.as_bytes(), 7);
            assert_eq!(id.origin, origin, "{raw}");
            if origin == IdOrigin::HashedProviderId {
                assert_eq!(id.id, hashed_provider_id(raw.as_bytes()));
            } else {
                assert_eq!(id.id, raw);
            }
            // Over-long event type is dropped, not hashed.
            assert_eq!(id.event_type, None);
        }
        // Non-UTF-8 bytes in an unsigned id header: the body hash is the key, nothing is shown.
        let gh = verifier(SchemeKind::Github, &[GH_SECRET]);
        let mut h = map(&sign::github(GH_SECRET, "x", "push", GH_BODY));
        h.insert("x-github-delivery", HeaderValue::from_bytes(b"id\xff").unwrap());
        let id = gh.verify(&h, GH_BODY, at(0)).unwrap().identify(&h, GH_BODY);
        assert_eq!((id.id, id.origin, id.provider_id), (sha256_id(GH_BODY), IdOrigin::BodyHashUnsignedId, None));
        // Stripe body id with a space.
        let stripe = verifier(SchemeKind::Stripe, &["s"]);
        let body = br#"{"id":"evt 1","type":"a b"}"#;
        let id = identify(&stripe, &sign::stripe("s", 1, body), body, 1);
        assert_eq!((id.id, id.origin, id.event_type), (hashed_provider_id(b"evt 1"), IdOrigin::HashedProviderId, None));
    }

    #[test]
    fn a_provider_id_spelled_like_a_derived_id_never_equals_one() {
        // Event B has no id, so its id is the hash of its body. Event A is another event whose
        // provider id is spelled exactly like B's id: taken verbatim, the two would dedup
        // together and B (or A) would be dropped as a duplicate of the other.
        let stripe = verifier(SchemeKind::Stripe, &["s"]);
        let body_b = br#"{"object":"event","type":"charge.succeeded"}"#;
        let b = identify(&stripe, &sign::stripe("s", 1, body_b), body_b, 1);
        assert_eq!((b.id.as_str(), b.origin), (sha256_id(body_b).as_str(), IdOrigin::BodyHash));
        let body_a = format!(r#"{{"id":"{}","type":"charge.succeeded"}}"#, b.id);
        let a = identify(&stripe, &sign::stripe("s", 1, body_a.as_bytes()), body_a.as_bytes(), 1);
        assert_ne!(a.id, b.id);
        assert_eq!((a.id, a.origin), (hashed_provider_id(b.id.as_bytes()), IdOrigin::HashedProviderId));
        // Hashed ids have a prefix of their own: an id spelled like one is hashed again, and a
        // hashed id can never equal a body hash, whatever the body.
        let spelled = hashed_provider_id(b"evt 1");
        let body_c = format!(r#"{{"id":"{spelled}"}}"#);
        let c = identify(&stripe, &sign::stripe("s", 1, body_c.as_bytes()), body_c.as_bytes(), 1);
        assert_eq!((c.id, c.origin), (hashed_provider_id(spelled.as_bytes()), IdOrigin::HashedProviderId));
        let raw = "x y";
        let body_d = format!(r#"{{"id":"{raw}"}}"#);
        let d = identify(&stripe, &sign::stripe("s", 1, body_d.as_bytes()), body_d.as_bytes(), 1);
        let e = identify(&stripe, &sign::stripe("s", 1, raw.as_bytes()), raw.as_bytes(), 1);
        assert_eq!((d.origin, e.origin), (IdOrigin::HashedProviderId, IdOrigin::BodyHash));
        assert_ne!(d.id, e.id, "the hash of id `x y` and of body `x y` are different ids");
        // Ids that merely contain the text elsewhere are still verbatim.
        let body_f = br#"{"id":"evt_sha256:1"}"#;
        let f = identify(&stripe, &sign::stripe("s", 1, body_f), body_f, 1);
        assert_eq!((f.id.as_str(), f.origin), ("evt_sha256:1", IdOrigin::Provider));
    }

    // ---- generic hmac recipe ----

    fn recipe(template: &str) -> HmacRecipe {
        HmacRecipe {
            header: "X-Acme-Signature".into(),
            prefix: "sha256=".into(),
            encoding: SignatureEncoding::Hex,
            algorithm: HmacAlgorithm::Sha256,
            timestamp_header: template.contains("{timestamp}").then(|| "X-Acme-Timestamp".into()),
            signed_payload: template.into(),
            id_header: Some("X-Acme-Id".into()),
            type_header: Some("X-Acme-Event".into()),
        }
    }

    #[test]
    fn hmac_recipe_roundtrips() {
        let body = br#"{"n":1}"#;
        let now = 1_700_000_000;
        for template in ["{body}", "{timestamp}.{body}", "{id}.{timestamp}.{body}", "v0:{timestamp}:{body}!"] {
            let r = recipe(template);
            r.validate().unwrap();
            let v = Verifier::new(SchemeKind::Hmac, &["k1", "k2"], TOL, Some(r.clone())).unwrap();
            let mut h = sign::hmac(&r, "k2", Some(now), Some("evt-42"), body);
            h.push(("X-Acme-Event".into(), "thing.happened".into()));
            let ok = check(&v, &h, body, now).unwrap();
            assert_eq!(ok.secret_index(), 1, "{template}");
            assert_eq!(ok.timestamp(), r.timestamp_header.as_ref().map(|_| now));
            // The id header is the dedup key only when the template signs it.
            let expected = if template.contains("{id}") {
                EventIdentity {
                    id: "evt-42".into(),
                    origin: IdOrigin::Provider,
                    event_type: Some("thing.happened".into()),
                    provider_id: None,
                }
            } else {
                EventIdentity {
                    id: sha256_id(body),
                    origin: IdOrigin::BodyHashUnsignedId,
                    event_type: Some("thing.happened".into()),
                    provider_id: Some("evt-42".into()),
                }
            };
            assert_eq!(ok.identify(&map(&h), body), expected, "{template}");
            assert_eq!(v.signs_event_id(), template.contains("{id}"));
            assert_eq!(v.signs_timestamp(), template.contains("{timestamp}"));
            assert_eq!(check(&v, &h, &flip(body), now).unwrap_err(), SignatureError::Mismatch);
            if r.timestamp_header.is_some() {
                assert_eq!(check(&v, &h, body, now + 301).unwrap_err(), SignatureError::Stale);
                assert_eq!(
                    check(&v, &without(&h, "X-Acme-Timestamp"), body, now).unwrap_err(),
                    SignatureError::MissingHeader("timestamp")
                );
            }
            if template.contains("{id}") {
                // The id is signed: changing it breaks the signature.
                assert_eq!(
                    check(&v, &with(&h, "X-Acme-Id", "evt-43"), body, now).unwrap_err(),
                    SignatureError::Mismatch
                );
                assert_eq!(
                    check(&v, &without(&h, "X-Acme-Id"), body, now).unwrap_err(),
                    SignatureError::MissingHeader("id")
                );
            }
            assert_eq!(
                check(&v, &without(&h, "X-Acme-Signature"), body, now).unwrap_err(),
                SignatureError::MissingHeader("signature")
            );
            assert_eq!(
                check(&v, &with(&h, "X-Acme-Signature", "00"), body, now).unwrap_err(),
                SignatureError::Malformed("signature header")
            );
            assert_eq!(v.signature_header_names(), vec!["x-acme-signature".to_owned()]);
        }
    }

    #[test]
    fn hmac_recipe_id_cannot_contain_the_separator_after_it() {
        // Found while writing the fuzz oracle (seed `fuzz/seeds/verify_hmac/reject-resplit-id`): the
        // same signed bytes, split differently.
        let r = recipe("{id}.{timestamp}.{body}");
        let v = Verifier::new(SchemeKind::Hmac, &["k"], TOL, Some(r.clone())).unwrap();
        let now = 1_700_000_000;
        let signed_body = b"1700000000.x";
        let h = sign::hmac(&r, "k", Some(now), Some("a"), signed_body);
        assert!(check(&v, &h, signed_body, now).is_ok());
        let resplit = with(&h, "X-Acme-Id", "a.1700000000");
        assert_eq!(check(&v, &resplit, b"x", now).unwrap_err(), SignatureError::Malformed("id header"));
        // The separator only matters where it follows `{id}`.
        let r = recipe("{timestamp}.{id}:{body}");
        let v = Verifier::new(SchemeKind::Hmac, &["k"], TOL, Some(r.clone())).unwrap();
        assert!(check(&v, &sign::hmac(&r, "k", Some(now), Some("a.b"), b"x"), b"x", now).is_ok());
        let h = sign::hmac(&r, "k", Some(now), Some("a:b"), b"x");
        assert_eq!(check(&v, &h, b"x", now).unwrap_err(), SignatureError::Malformed("id header"));
    }

    #[test]
    fn hmac_recipe_sha512_base64() {
        let r = HmacRecipe {
            header: "X-Sig".into(),
            prefix: String::new(),
            encoding: SignatureEncoding::Base64,
            algorithm: HmacAlgorithm::Sha512,
            timestamp_header: None,
            signed_payload: "{body}".into(),
            id_header: None,
            type_header: None,
        };
        let body = b"payload";
        let h = sign::hmac(&r, "key", None, None, body);
        let raw = B64.decode(&h[0].1).unwrap();
        assert_eq!(raw.len(), 64);
        let v = Verifier::new(SchemeKind::Hmac, &["key"], TOL, Some(r.clone())).unwrap();
        let ok = check(&v, &h, body, 0).unwrap();
        let id = ok.identify(&map(&h), body);
        assert_eq!((id.origin, id.event_type), (IdOrigin::BodyHash, None));
        assert_eq!(check(&v, &h, b"payloaD", 0).unwrap_err(), SignatureError::Mismatch);
        // A SHA-256 MAC of the right encoding but wrong length is just a non-match.
        let short = B64.encode([0u8; 32]);
        assert_eq!(check(&v, &pairs(&[("X-Sig", &short)]), body, 0).unwrap_err(), SignatureError::Mismatch);
        // Independent check of the MAC bytes.
        let mut mac = Hmac::<Sha512>::new_from_slice(b"key").unwrap();
        mac.update(body);
        assert_eq!(raw, mac.finalize().into_bytes().to_vec());
    }

    #[test]
    fn hmac_recipe_validation_and_serde() {
        let json = r#"{"header":"X-Sig","encoding":"base64","algorithm":"sha512"}"#;
        let r: HmacRecipe = serde_json::from_str(json).unwrap();
        assert_eq!(r.signed_payload, "{body}");
        assert_eq!(r.prefix, "");
        r.validate().unwrap();
        assert!(serde_json::from_str::<HmacRecipe>(r#"{"header":"X","bogus":1}"#).is_err());
        let kind: SchemeKind = serde_json::from_str(r#""github""#).unwrap();
        assert_eq!((kind, kind.as_str()), (SchemeKind::Github, "github"));

        let base = recipe("{timestamp}.{body}");
        let bad = |f: fn(&mut HmacRecipe)| {
            let mut r = base.clone();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(bad(|r| r.signed_payload = "{timestamp}".into()).contains("{body}"));
        assert!(bad(|r| r.signed_payload = "{body}{body}{timestamp}".into()).contains("{body}"));
        assert!(bad(|r| r.signed_payload = "{ts}.{body}".into()).contains("placeholder"));
        assert!(bad(|r| r.timestamp_header = None).contains("timestamp_header"));
        assert!(bad(|r| r.signed_payload = "{body}".into()).contains("timestamp_header"));
        assert!(
            bad(|r| {
                r.id_header = None;
                r.signed_payload = "{id}.{timestamp}.{body}".into();
            })
            .contains("id_header")
        );
        assert!(bad(|r| r.header = "Bad Header".into()).contains("header"));
        assert!(bad(|r| r.header = String::new()).contains("header"));
        assert!(bad(|r| r.type_header = Some("x:y".into())).contains("type_header"));
        assert!(bad(|r| r.prefix = "é".into()).contains("prefix"));
        // Invalid recipes are refused by Verifier::new and produce no signature.
        let mut r = base.clone();
        r.signed_payload = "{body".into();
        assert!(Verifier::new(SchemeKind::Hmac, &["k"], TOL, Some(r.clone())).is_err());
        assert!(sign::hmac(&r, "k", Some(1), None, b"x").is_empty());
        assert!(Verifier::new(SchemeKind::Hmac, &["k"], TOL, None).is_err());
        // Template needs a timestamp the caller did not give.
        assert!(sign::hmac(&base, "k", None, None, b"x").is_empty());
    }

    // ---- construction, labels, debug ----

    #[test]
    fn new_rejects_bad_secrets() {
        let err = Verifier::new(SchemeKind::Stripe, &[], TOL, None).unwrap_err();
        assert_eq!(err.index, 0);
        let err = Verifier::new(SchemeKind::Github, &["ok", ""], TOL, None).unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.to_string().starts_with("secret 1:"));
        for bad in ["whsec_not base64!", "whsec_", "%%%", "whsec_A"] {
            let err = Verifier::new(SchemeKind::Standard, &[STD1_SECRET, bad], TOL, None).unwrap_err();
            assert_eq!(err.index, 1, "{bad}");
            assert!(!err.message.contains(bad) || bad.len() < 8, "{bad}");
        }
        // Stripe keeps its secret verbatim, so a non-base64 whsec_ string is fine there.
        assert!(Verifier::new(SchemeKind::Stripe, &["whsec_not base64!"], TOL, None).is_ok());
        assert!(sign::standard("whsec_!!", "m", 1, b"x").is_empty());
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        for kind in [SchemeKind::Stripe, SchemeKind::Standard, SchemeKind::Slack] {
            let v = verifier(kind, &[STD1_SECRET]);
            let debug = format!("{v:?}");
            assert!(!debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{debug}");
            assert!(debug.contains("redacted"), "{debug}");
            let key = decode_standard_secret(STD1_SECRET).unwrap();
            assert!(!debug.contains(&hex::encode(&key)));
            assert!(!debug.contains(&format!("{key:?}")));
        }
    }

    #[test]
    fn labels() {
        assert_eq!(SignatureError::MissingHeader("x").reason(), "missing_header");
        assert_eq!(SignatureError::Malformed("x").reason(), "malformed");
        assert_eq!(SignatureError::Stale.reason(), "stale");
        assert_eq!(SignatureError::Mismatch.reason(), "mismatch");
        assert_eq!(IdOrigin::Provider.as_str(), "provider");
        assert_eq!(IdOrigin::HashedProviderId.as_str(), "hashed_provider_id");
        assert_eq!(IdOrigin::BodyHash.as_str(), "body_sha256");
        assert_eq!(IdOrigin::BodyHashUnsignedId.as_str(), "body_sha256_unsigned_id");
        assert_eq!(SchemeKind::Standard.as_str(), "standard");
        for (kind, signs_id, signs_timestamp) in [
            (SchemeKind::Stripe, true, true),
            (SchemeKind::Standard, true, true),
            (SchemeKind::Slack, true, true),
            (SchemeKind::Github, false, false),
            (SchemeKind::Shopify, false, false),
        ] {
            let v = verifier(kind, &[STD1_SECRET]);
            assert_eq!((v.signs_event_id(), v.signs_timestamp()), (signs_id, signs_timestamp), "{kind:?}");
        }
        assert_eq!(
            verifier(SchemeKind::Standard, &[STD1_SECRET]).signature_header_names(),
            vec!["webhook-signature".to_owned(), "svix-signature".to_owned()]
        );
        assert_eq!(
            verifier(SchemeKind::Github, &["s"]).signature_header_names(),
            vec!["x-hub-signature-256".to_owned(), "x-hub-signature".to_owned()]
        );
    }
}
