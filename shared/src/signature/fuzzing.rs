//! Fuzz oracles for the signature verifiers (feature `fuzzing`): one `fn(&[u8])` per cargo-fuzz
//! target in `fuzz/`, which panics when a property breaks.
//!
//! The coverage-guided targets (nightly, `scripts/fuzz`) and the stable test that replays the
//! committed corpus and the hand-written seeds (`fuzz/corpus/<target>/`, `fuzz/seeds/<target>/`,
//! part of `cargo test`) both call [`TARGETS`], so the properties are written once. Nothing here
//! runs in production builds.
//!
//! Properties, for every input: no panic; no accept of anything the provider did not sign. The
//! second needs an oracle that knows what was signed, so the harness plays the provider:
//!
//! - Each verifier holds a secret the input cannot know (index 0) and the provider's real ones.
//!   The fuzzer cannot compute an HMAC, so it cannot produce a MAC for the first.
//! - The provider has signed its published test vectors (those of the signature tests) and, at the input's
//!   request, one more message ("signing oracle"): `@id`, `@ts` and `@body` (default: the request
//!   body). Its MAC, computed here with `hmac`/`sha2` directly (not with the verifier's code),
//!   replaces `{hex}`, `{HEX}`, `{b64}` and `{b64np}` in header values, so the fuzzer starts from
//!   accepted requests and mutates the framing around a correct MAC.
//! - An accept is a false accept unless the secret that matched signed exactly what the verifier
//!   hands on: the body, the timestamp it reports (fresh), and, where the scheme signs it, the
//!   event id that deduplication will use. A different split of the same signed bytes (the
//!   ambiguity attacks a MAC does not stop) is caught here, not only a broken compare.
//!
//! The provider only signs what its spec allows (timestamps ≥ 0; Standard Webhooks ids that are
//! non-empty header text without `.` or surrounding blanks), as a real one would.
//!
//! Input format, chosen so seeds are readable and mutations stay meaningful: lines
//! `name:value` (a header; values the `http` crate refuses are dropped, as hyper would never
//! deliver them, and so are names no verifier reads) or `@directive:value`, then an empty line,
//! then the body. Directives: `@now` (the verifier's clock, unix seconds), `@ts`, `@id`, `@body`,
//! `@scheme` and `@recipe` (which verifier `parse_headers` and `verify_hmac` use), and the recipe
//! fields for `recipe` (`@header`, `@prefix`, `@signed_payload`, …).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Sha256, Sha512};

use super::{
    B64, HmacAlgorithm, HmacRecipe, IdOrigin, Presented, SchemeKind, SignatureEncoding, SignatureError, TemplatePart,
    Verified, Verifier, github_presented, hashed_provider_id, is_safe_token, parse_template, recipe_presented,
    sha256_id, shopify_presented, sign, slack_presented, standard_presented, stripe_presented,
};

/// A fuzz target: panics when the input breaks a property.
pub type Target = fn(&[u8]);

/// Every fuzz target by name (`fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("parse_headers", parse_headers),
    ("verify_stripe", verify_stripe),
    ("verify_standard", verify_standard),
    ("verify_github", verify_github),
    ("verify_shopify", verify_shopify),
    ("verify_slack", verify_slack),
    ("verify_hmac", verify_hmac),
    ("recipe", recipe),
];

const TOLERANCE: Duration = Duration::from_secs(300);
/// The verifier's clock when the input gives no `@now`.
const DEFAULT_NOW: i64 = 1_700_000_000;

/// Secrets no input can know: no MAC under them can be produced without them.
const UNKNOWN: &str = "not-in-any-input:9c0d4e1b7a2f";
const UNKNOWN_STANDARD: &str = "whsec_bm90LWluLWFueS1pbnB1dDo5YzBkNGUxYjdhMmY=";

// The providers' secrets and published vectors (docs/providers.md).
const STRIPE_SECRET: &str = "whsec_test_secret";
const STD1_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STD2_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SHOPIFY_SECRET: &str = "hush";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const RECIPE_SECRET: &str = "acme-secret";
const SLACK_VECTOR_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

/// The schemes a `verify_*` target or `parse_headers` exercises; `Recipe(n)` is one of [`recipes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Stripe,
    Standard,
    Github,
    Shopify,
    Slack,
    Recipe(usize),
}

/// Fixed generic recipes, one per shape of signed payload: the fuzzer varies requests, not
/// configuration (the `recipe` target varies configuration).
fn recipes() -> [HmacRecipe; 4] {
    let recipe = |prefix: &str, encoding, algorithm, timestamp: bool, payload: &str| HmacRecipe {
        header: "X-Acme-Signature".into(),
        prefix: prefix.into(),
        encoding,
        algorithm,
        timestamp_header: timestamp.then(|| "X-Acme-Timestamp".into()),
        signed_payload: payload.into(),
        id_header: Some("X-Acme-Id".into()),
        type_header: Some("X-Acme-Event".into()),
    };
    [
        recipe("sha256=", SignatureEncoding::Hex, HmacAlgorithm::Sha256, false, "{body}"),
        recipe("", SignatureEncoding::Base64, HmacAlgorithm::Sha512, true, "{timestamp}.{body}"),
        recipe("v1,", SignatureEncoding::Base64, HmacAlgorithm::Sha256, true, "{id}.{timestamp}.{body}"),
        recipe("v0=", SignatureEncoding::Hex, HmacAlgorithm::Sha256, true, "v0:{timestamp}:{body}"),
    ]
}

/// The input split into directives, headers and body.
struct Input<'a> {
    directives: Vec<(&'a [u8], &'a [u8])>,
    headers: Vec<(&'a [u8], &'a [u8])>,
    body: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Input<'a> {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&data[..at], &data[at + 2..]),
            None => (data, &data[data.len()..]),
        };
        let mut input = Input { directives: Vec::new(), headers: Vec::new(), body };
        for line in head.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            match name.strip_prefix(b"@") {
                Some(directive) => input.directives.push((directive, value)),
                None => input.headers.push((name, value)),
            }
        }
        input
    }

    /// The first value of `@name`.
    fn directive(&self, name: &str) -> Option<&'a [u8]> {
        self.directives.iter().find(|(n, _)| *n == name.as_bytes()).map(|(_, v)| *v)
    }

    fn text(&self, name: &str) -> Option<String> {
        self.directive(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn integer(&self, name: &str) -> Option<i64> {
        std::str::from_utf8(self.directive(name)?).ok()?.parse().ok()
    }

    fn now(&self) -> i64 {
        self.integer("now").unwrap_or(DEFAULT_NOW)
    }

    /// The headers as hyper would hand them over, with the MAC placeholders filled in.
    fn header_map(&self, mac: Option<&[u8]>) -> HeaderMap {
        let encodings = mac.map(|mac| {
            [
                (&b"{hex}"[..], hex::encode(mac)),
                (b"{HEX}", hex::encode_upper(mac)),
                (b"{b64}", B64.encode(mac)),
                (b"{b64np}", B64_NO_PAD.encode(mac)),
            ]
        });
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let mut value = value.to_vec();
            for (placeholder, encoded) in encodings.iter().flatten() {
                value = replace(&value, placeholder, encoded.as_bytes());
            }
            // Only the names some verifier reads, matched as hyper would (case-insensitively):
            // any other name only exercises the `http` crate, whose coverage would otherwise
            // dominate the corpus without testing anything of ours.
            let name = HEADER_NAMES.iter().find(|known| known.as_bytes().eq_ignore_ascii_case(name));
            if let (Some(name), Ok(value)) = (name, HeaderValue::from_bytes(&value)) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        headers
    }
}

/// Every header name a verifier or `identify` reads, lowercase.
const HEADER_NAMES: &[&str] = &[
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-delivery",
    "x-github-event",
    "x-shopify-hmac-sha256",
    "shopify-hmac-sha256",
    "x-shopify-webhook-id",
    "shopify-webhook-id",
    "x-shopify-topic",
    "shopify-topic",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-acme-signature",
    "x-acme-timestamp",
    "x-acme-id",
    "x-acme-event",
    "x-sig",
    "x-ts",
    "x-id",
];

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn at(secs: i64) -> SystemTime {
    let offset = Duration::from_secs(secs.unsigned_abs());
    let time = if secs >= 0 { UNIX_EPOCH.checked_add(offset) } else { UNIX_EPOCH.checked_sub(offset) };
    time.unwrap_or(UNIX_EPOCH)
}

/// What a provider signs, in its own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    /// Only for schemes that sign the event id.
    id: Option<Vec<u8>>,
    /// Only for schemes that sign a timestamp.
    timestamp: Option<i64>,
    body: Vec<u8>,
}

/// A message the provider signed, with the index of the verifier secret it used.
#[derive(Debug, Clone)]
struct Signed {
    secret_index: usize,
    message: Message,
}

/// Header text a provider can send faithfully: visible ASCII or inner blanks, nothing around it.
fn is_clean_header_text(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().all(|&b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
        && !bytes.starts_with(b" ")
        && !bytes.starts_with(b"\t")
        && !bytes.ends_with(b" ")
        && !bytes.ends_with(b"\t")
}

/// The provider's side of one scheme: its secrets, its published vectors, and an independent
/// implementation of what it signs.
struct Provider {
    scheme: Scheme,
    kind: SchemeKind,
    /// Verifier secrets; index 0 is [`UNKNOWN`] (or its Standard form).
    secrets: Vec<&'static str>,
    recipe: Option<HmacRecipe>,
    vectors: Vec<Signed>,
}

impl Provider {
    fn new(scheme: Scheme) -> Provider {
        let vector = |secret_index, id: Option<&[u8]>, timestamp, body: &[u8]| Signed {
            secret_index,
            message: Message { id: id.map(<[u8]>::to_vec), timestamp, body: body.to_vec() },
        };
        let (kind, secrets, recipe, vectors) = match scheme {
            Scheme::Stripe => (
                SchemeKind::Stripe,
                vec![UNKNOWN, STRIPE_SECRET],
                None,
                vec![vector(1, None, Some(1_700_000_000), br#"{"id":"evt_test_webhook","object":"event"}"#)],
            ),
            Scheme::Standard => (
                SchemeKind::Standard,
                vec![UNKNOWN_STANDARD, STD1_SECRET, STD2_SECRET],
                None,
                vec![
                    vector(1, Some(b"msg_p5jXN8AQM9LWM0D4loKWxJek"), Some(1_614_265_330), br#"{"test": 2432232314}"#),
                    vector(
                        2,
                        Some(b"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
                        Some(1_649_367_553),
                        br#"{"email":"test@example.com","username":"test_user"}"#,
                    ),
                ],
            ),
            Scheme::Github => {
                (SchemeKind::Github, vec![UNKNOWN, GITHUB_SECRET], None, vec![vector(1, None, None, b"Hello, World!")])
            }
            Scheme::Shopify => (
                SchemeKind::Shopify,
                vec![UNKNOWN, SHOPIFY_SECRET],
                None,
                vec![vector(1, None, None, br#"{"id":123}"#)],
            ),
            Scheme::Slack => (
                SchemeKind::Slack,
                vec![UNKNOWN, SLACK_SECRET],
                None,
                vec![vector(1, None, Some(1_531_420_618), SLACK_VECTOR_BODY)],
            ),
            Scheme::Recipe(n) => {
                let all = recipes();
                let recipe = all.get(n % all.len()).cloned();
                (SchemeKind::Hmac, vec![UNKNOWN, RECIPE_SECRET], recipe, Vec::new())
            }
        };
        Provider { scheme, kind, secrets, recipe, vectors }
    }

    fn verifier(&self) -> Verifier {
        match Verifier::new(self.kind, &self.secrets, TOLERANCE, self.recipe.clone()) {
            Ok(verifier) => verifier,
            Err(error) => panic!("harness: the fixed {:?} verifier does not build: {error}", self.scheme),
        }
    }

    fn signs_timestamp(&self) -> bool {
        match self.scheme {
            Scheme::Stripe | Scheme::Standard | Scheme::Slack => true,
            Scheme::Github | Scheme::Shopify => false,
            Scheme::Recipe(_) => self.recipe.as_ref().is_some_and(|r| r.timestamp_header.is_some()),
        }
    }

    fn signs_id(&self) -> bool {
        match self.scheme {
            Scheme::Standard => true,
            Scheme::Recipe(_) => self.recipe.as_ref().is_some_and(|r| r.signed_payload.contains("{id}")),
            _ => false,
        }
    }

    /// The message the input asks the provider to sign, if the provider would sign it.
    fn requested(&self, input: &Input<'_>) -> Option<Message> {
        let timestamp = if self.signs_timestamp() {
            Some(Some(input.integer("ts").unwrap_or_else(|| input.now())).filter(|ts| *ts >= 0)?)
        } else {
            None
        };
        // Standard Webhooks forbids `.` in ids, and the verifier refuses an id containing the
        // separator after `{id}` in a recipe (`.` in `{id}.{timestamp}.{body}`).
        let id = if self.signs_id() {
            Some(input.directive("id").filter(|id| is_clean_header_text(id) && !id.contains(&b'.'))?.to_vec())
        } else {
            None
        };
        let body = input.directive("body").unwrap_or(input.body).to_vec();
        Some(Message { id, timestamp, body })
    }

    /// The MAC the provider sends for `message` with secret 1, computed from the provider docs
    /// alone (independent of the verifier's code).
    fn mac(&self, message: &Message) -> Vec<u8> {
        let ts = message.timestamp.map(|t| t.to_string()).unwrap_or_default();
        let id = message.id.clone().unwrap_or_default();
        let body = &message.body;
        let sha256 = |key: &[u8], content: &[&[u8]]| -> Vec<u8> {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| panic!("hmac key"));
            content.iter().for_each(|part| mac.update(part));
            mac.finalize().into_bytes().to_vec()
        };
        match self.scheme {
            Scheme::Stripe => sha256(STRIPE_SECRET.as_bytes(), &[ts.as_bytes(), b".", body]),
            Scheme::Standard => {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(&STD1_SECRET["whsec_".len()..])
                    .unwrap_or_else(|_| panic!("harness: standard key"));
                sha256(&key, &[&id, b".", ts.as_bytes(), b".", body])
            }
            Scheme::Github => sha256(GITHUB_SECRET.as_bytes(), &[body]),
            Scheme::Shopify => sha256(SHOPIFY_SECRET.as_bytes(), &[body]),
            Scheme::Slack => sha256(SLACK_SECRET.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]),
            Scheme::Recipe(n) => {
                let key = RECIPE_SECRET.as_bytes();
                match n % recipes().len() {
                    0 => sha256(key, &[body]),
                    1 => {
                        let mut mac =
                            <Hmac<Sha512> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| panic!("hmac key"));
                        [ts.as_bytes(), b".", body].iter().for_each(|part| mac.update(part));
                        mac.finalize().into_bytes().to_vec()
                    }
                    2 => sha256(key, &[&id, b".", ts.as_bytes(), b".", body]),
                    _ => sha256(key, &[b"v0:", ts.as_bytes(), b":", body]),
                }
            }
        }
    }

    /// The same message signed by the crate's own `sign` helpers (what loadgen and the tests send).
    fn signed_by_helper(&self, message: &Message) -> Vec<(String, String)> {
        let ts = message.timestamp.unwrap_or_default();
        let id = String::from_utf8_lossy(message.id.as_deref().unwrap_or_default()).into_owned();
        let body = &message.body;
        match (self.scheme, &self.recipe) {
            (Scheme::Stripe, _) => sign::stripe(STRIPE_SECRET, ts, body),
            (Scheme::Standard, _) => sign::standard(STD1_SECRET, &id, ts, body),
            (Scheme::Github, _) => sign::github(GITHUB_SECRET, "delivery", "push", body),
            (Scheme::Shopify, _) => sign::shopify(SHOPIFY_SECRET, "webhook", "orders/create", body),
            (Scheme::Slack, _) => sign::slack(SLACK_SECRET, ts, body),
            (Scheme::Recipe(_), Some(recipe)) => sign::hmac(recipe, RECIPE_SECRET, message.timestamp, Some(&id), body),
            (Scheme::Recipe(_), None) => Vec::new(),
        }
    }
}

/// The dedup id [`Verified::identify`] must derive from a signed provider id: verbatim when it
/// is a safe token not spelled like a derived id, else `id-sha256:` + hex of its bytes.
fn expected_id(raw: &[u8]) -> String {
    let derived_looking = raw.starts_with(b"sha256:") || raw.starts_with(b"id-sha256:");
    match std::str::from_utf8(raw) {
        Ok(id) if is_safe_token(raw) && !derived_looking => id.to_owned(),
        _ => hashed_provider_id(raw),
    }
}

fn describe(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The shape [`Verified::identify`] promises: `sha256:` + 64 hex (a body), `id-sha256:` + 64 hex
/// (a hashed provider id) or a safe token spelled like neither; and a type that is a safe token.
fn check_identity_shape(verified: &Verified, headers: &HeaderMap, body: &[u8]) -> String {
    let identity = verified.identify(headers, body);
    let hashed = |prefix: &str| {
        identity
            .id
            .strip_prefix(prefix)
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    };
    let verbatim = is_safe_token(identity.id.as_bytes())
        && !identity.id.starts_with("sha256:")
        && !identity.id.starts_with("id-sha256:");
    assert!(hashed("sha256:") || hashed("id-sha256:") || verbatim, "unsafe event id {:?}", identity.id);
    if matches!(identity.origin, IdOrigin::BodyHash | IdOrigin::BodyHashUnsignedId) {
        assert_eq!(identity.id, sha256_id(body), "a body-hash id is the body's hash");
    }
    if let Some(shown) = &identity.provider_id {
        assert!(is_safe_token(shown.as_bytes()), "unsafe provider id {shown:?}");
    }
    if let Some(event_type) = &identity.event_type {
        assert!(is_safe_token(event_type.as_bytes()), "unsafe event type {event_type:?}");
    }
    identity.id
}

/// What the verifier handed on after an accept.
#[derive(Debug, Clone)]
struct Accepted<'a> {
    secret_index: usize,
    timestamp: Option<i64>,
    /// The dedup id, for schemes that sign the id.
    id: Option<String>,
    body: &'a [u8],
}

impl Accepted<'_> {
    /// Ok when the secret that matched signed exactly this, and its timestamp is fresh at `now`.
    fn check(&self, signed: &[Signed], now: i64) -> Result<(), String> {
        let matches = |s: &Signed| {
            s.secret_index == self.secret_index
                && s.message.body == self.body
                && s.message.timestamp == self.timestamp
                && s.message.id.as_deref().map(expected_id) == self.id
        };
        if !signed.iter().any(matches) {
            return Err(format!("{self:?} is not what was signed: {signed:?}"));
        }
        if let Some(ts) = self.timestamp {
            let distance = (i128::from(now) - i128::from(ts)).unsigned_abs();
            if distance > u128::from(TOLERANCE.as_secs()) {
                return Err(format!("timestamp {ts} is stale at {now}"));
            }
        }
        Ok(())
    }
}

/// Verifies the input's request and, on accept, checks it against everything the provider signed.
fn verify_scheme(scheme: Scheme, data: &[u8]) {
    let input = Input::parse(data);
    let provider = Provider::new(scheme);
    let verifier = provider.verifier();
    let now = input.now();

    let requested = provider.requested(&input);
    let mac = requested.as_ref().map(|message| provider.mac(message));
    let mut signed = provider.vectors.clone();
    if let Some(message) = &requested {
        signed.push(Signed { secret_index: 1, message: message.clone() });
    }

    let headers = input.header_map(mac.as_deref());
    if let Ok(verified) = verifier.verify(&headers, input.body, at(now)) {
        let id = check_identity_shape(&verified, &headers, input.body);
        let accepted = Accepted {
            secret_index: verified.secret_index(),
            timestamp: verified.timestamp(),
            id: provider.signs_id().then_some(id),
            body: input.body,
        };
        if let Err(why) = accepted.check(&signed, now) {
            panic!("false accept ({scheme:?}): {why}\ninput: {}", describe(data));
        }
    }

    // No false reject on the canonical path: the crate's own signer, for a message the provider
    // would sign, produces what the reference computes, and the verifier accepts it as signed.
    if let (Some(message), Some(mac)) = (&requested, &mac) {
        let pairs = provider.signed_by_helper(message);
        let mut canonical = HeaderMap::new();
        for (name, value) in &pairs {
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                (Ok(name), Ok(value)) => {
                    canonical.append(name, value);
                }
                _ => panic!("sign helper produced an invalid header {name:?}: {value:?}\ninput: {}", describe(data)),
            }
        }
        let helper_mac_matches = pairs.iter().any(|(_, value)| {
            [hex::encode(mac), B64.encode(mac)].iter().any(|encoded| value.ends_with(encoded.as_str()))
        });
        assert!(helper_mac_matches, "sign helper disagrees with the reference MAC ({scheme:?}): {pairs:?}");
        let when = message.timestamp.unwrap_or(now);
        match verifier.verify(&canonical, &message.body, at(when)) {
            Ok(verified) => {
                assert_eq!(verified.secret_index(), 1, "{scheme:?}");
                assert_eq!(verified.timestamp(), message.timestamp, "{scheme:?}");
                let id = check_identity_shape(&verified, &canonical, &message.body);
                if let Some(raw) = &message.id {
                    assert_eq!(id, expected_id(raw), "{scheme:?}");
                }
            }
            Err(error) => panic!("signed request rejected ({scheme:?}): {error}\ninput: {}", describe(data)),
        }
    }
}

/// Target `verify_stripe`.
pub fn verify_stripe(data: &[u8]) {
    verify_scheme(Scheme::Stripe, data);
}

/// Target `verify_standard`.
pub fn verify_standard(data: &[u8]) {
    verify_scheme(Scheme::Standard, data);
}

/// Target `verify_github`.
pub fn verify_github(data: &[u8]) {
    verify_scheme(Scheme::Github, data);
}

/// Target `verify_shopify`.
pub fn verify_shopify(data: &[u8]) {
    verify_scheme(Scheme::Shopify, data);
}

/// Target `verify_slack`.
pub fn verify_slack(data: &[u8]) {
    verify_scheme(Scheme::Slack, data);
}

/// Target `verify_hmac`: one of the fixed [`recipes`], chosen by `@recipe`.
pub fn verify_hmac(data: &[u8]) {
    let input = Input::parse(data);
    let n = input.integer("recipe").map_or(0, |n| n.unsigned_abs() as usize);
    verify_scheme(Scheme::Recipe(n), data);
}

fn scheme_named(name: &str, recipe: usize) -> Scheme {
    match name {
        "standard" => Scheme::Standard,
        "github" => Scheme::Github,
        "shopify" => Scheme::Shopify,
        "slack" => Scheme::Slack,
        "hmac" => Scheme::Recipe(recipe),
        _ => Scheme::Stripe,
    }
}

/// Target `parse_headers`: the header parser of the scheme named by `@scheme` on its own.
///
/// A parser either refuses the request as missing or malformed, or hands the matcher signed
/// parts that contain the body exactly once and a timestamp read from digits, and candidates
/// that are decodings of text in the signature header.
pub fn parse_headers(data: &[u8]) {
    let input = Input::parse(data);
    let recipe_index = input.integer("recipe").map_or(0, |n| n.unsigned_abs() as usize);
    let scheme = scheme_named(input.text("scheme").as_deref().unwrap_or(""), recipe_index);
    let headers = input.header_map(None);
    let body = input.body;
    let all = recipes();
    let recipe = all.get(recipe_index % all.len()).and_then(|r| r.parse().ok());
    let (result, signature_header, encoding) = match (scheme, &recipe) {
        (Scheme::Stripe, _) => {
            (stripe_presented(&headers, body), headers.get("stripe-signature"), SignatureEncoding::Hex)
        }
        (Scheme::Standard, _) => (
            standard_presented(&headers, body),
            headers.get("webhook-signature").or_else(|| headers.get("svix-signature")),
            SignatureEncoding::Base64,
        ),
        (Scheme::Github, _) => {
            (github_presented(&headers, body), headers.get("x-hub-signature-256"), SignatureEncoding::Hex)
        }
        (Scheme::Shopify, _) => (
            shopify_presented(&headers, body),
            headers.get("x-shopify-hmac-sha256").or_else(|| headers.get("shopify-hmac-sha256")),
            SignatureEncoding::Base64,
        ),
        (Scheme::Slack, _) => {
            (slack_presented(&headers, body), headers.get("x-slack-signature"), SignatureEncoding::Hex)
        }
        (Scheme::Recipe(_), Some(parsed)) => {
            (recipe_presented(parsed, &headers, body), headers.get(&parsed.header), parsed.encoding)
        }
        (Scheme::Recipe(_), None) => panic!("harness: fixed recipe {recipe_index} does not parse"),
    };
    let presented: Presented<'_> = match result {
        Ok(presented) => presented,
        Err(SignatureError::MissingHeader(_) | SignatureError::Malformed(_)) => return,
        Err(other) => panic!("a parser returned {other:?}, which only the matcher may\ninput: {}", describe(data)),
    };

    let body_parts = presented.parts.iter().filter(|p| p.as_ptr() == body.as_ptr() && p.len() == body.len()).count();
    assert!(body.is_empty() || body_parts == 1, "body in the signed parts {body_parts} times ({scheme:?})");
    let timestamped = match scheme {
        Scheme::Stripe | Scheme::Standard | Scheme::Slack => true,
        Scheme::Github | Scheme::Shopify => false,
        Scheme::Recipe(_) => recipe.as_ref().is_some_and(|r| r.timestamp_header.is_some()),
    };
    assert_eq!(presented.timestamp.is_some(), timestamped, "{scheme:?}");
    if let Some(ts) = presented.timestamp {
        let text = ts.to_string();
        assert!(ts >= 0, "negative timestamp {ts}");
        assert!(
            presented.parts.iter().any(|p| p.iter().all(u8::is_ascii_digit) && p.ends_with(text.as_bytes())),
            "timestamp {ts} is not a signed digit string ({scheme:?})\ninput: {}",
            describe(data)
        );
    }
    if scheme == Scheme::Standard {
        let id = presented.parts.first().copied().unwrap_or_default();
        assert!(!id.is_empty() && !id.contains(&b'.'), "standard id {:?} can be split differently", describe(id));
    }
    let text = signature_header.and_then(|v| v.to_str().ok()).unwrap_or_default();
    let lowercase = text.to_ascii_lowercase();
    for candidate in &presented.candidates {
        let found = match encoding {
            SignatureEncoding::Hex => lowercase.contains(&hex::encode(candidate)),
            SignatureEncoding::Base64 => text.contains(B64_NO_PAD.encode(candidate).as_str()),
        };
        assert!(found, "candidate {candidate:02x?} is not in the signature header {text:?} ({scheme:?})");
    }
}

/// Target `recipe`: generic recipes whose configuration comes from the input.
///
/// Validation never panics and agrees with `Verifier::new`; the template parser round-trips;
/// a request the input writes never verifies (it cannot know any secret, and nothing is signed
/// for it here); what `sign::hmac` produces verifies, with the signed timestamp and id, and stops
/// verifying when one body byte is added.
pub fn recipe(data: &[u8]) {
    let input = Input::parse(data);
    let text = |name| input.text(name);
    let recipe = HmacRecipe {
        header: text("header").unwrap_or_default(),
        prefix: text("prefix").unwrap_or_default(),
        encoding: match text("encoding").as_deref() {
            Some("base64") => SignatureEncoding::Base64,
            _ => SignatureEncoding::Hex,
        },
        algorithm: match text("algorithm").as_deref() {
            Some("sha512") => HmacAlgorithm::Sha512,
            _ => HmacAlgorithm::Sha256,
        },
        timestamp_header: text("timestamp_header"),
        signed_payload: text("signed_payload").unwrap_or_else(|| "{body}".to_owned()),
        id_header: text("id_header"),
        type_header: text("type_header"),
    };

    if let Ok(parts) = parse_template(&recipe.signed_payload) {
        let mut rendered = String::new();
        for (i, part) in parts.iter().enumerate() {
            match part {
                TemplatePart::Literal(literal) => {
                    assert!(!literal.is_empty() && !literal.contains('{'), "bad literal {literal:?}");
                    assert!(
                        !matches!(parts.get(i + 1), Some(TemplatePart::Literal(_))),
                        "adjacent literals in {parts:?}"
                    );
                    rendered.push_str(literal);
                }
                TemplatePart::Timestamp => rendered.push_str("{timestamp}"),
                TemplatePart::Body => rendered.push_str("{body}"),
                TemplatePart::Id => rendered.push_str("{id}"),
            }
        }
        assert_eq!(rendered, recipe.signed_payload, "template does not round-trip");
    }

    let valid = recipe.validate();
    let verifier = Verifier::new(SchemeKind::Hmac, &[UNKNOWN, RECIPE_SECRET], TOLERANCE, Some(recipe.clone()));
    assert_eq!(valid.is_ok(), verifier.is_ok(), "validate and Verifier::new disagree on {recipe:?}");
    let Ok(verifier) = verifier else {
        assert!(sign::hmac(&recipe, RECIPE_SECRET, Some(0), Some("id"), b"").is_empty(), "signed an invalid recipe");
        return;
    };
    let now = input.now();

    if let Ok(verified) = verifier.verify(&input.header_map(None), input.body, at(now)) {
        panic!("false accept of an unsigned request (secret {}) under {recipe:?}", verified.secret_index());
    }

    let ts = input.integer("ts").unwrap_or(now).max(0);
    let id = input.directive("id").map(|id| String::from_utf8_lossy(id).into_owned());
    let pairs = sign::hmac(&recipe, RECIPE_SECRET, Some(ts), id.as_deref(), input.body);
    let uses_id = recipe.signed_payload.contains("{id}");
    if pairs.is_empty() {
        assert!(uses_id && id.is_none(), "sign::hmac refused a valid recipe {recipe:?}");
        return;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &pairs {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            // Only the id comes from the input verbatim; an id that is no header value is never sent.
            _ => return,
        }
    }
    // Configurations that validate but cannot verify what their own signer writes; reported,
    // not asserted: a leading blank in the prefix is trimmed off the header before it is
    // compared, and a shared timestamp/id header hands the timestamp to `{id}`.
    let blank_prefix = recipe.prefix.starts_with([' ', '\t']);
    let shared_header = uses_id
        && recipe.timestamp_header.as_deref().map(str::to_ascii_lowercase)
            == recipe.id_header.as_deref().map(str::to_ascii_lowercase);
    // Ids the verifier refuses by design: not header text, or containing the separator after `{id}`.
    let separators = recipe.parse().map(|parsed| parsed.id_separators).unwrap_or_default();
    let clean_id = !uses_id
        || id.as_deref().is_some_and(|id| is_clean_header_text(id.as_bytes()) && !id.contains(separators.as_slice()));
    if blank_prefix || shared_header || !clean_id {
        return;
    }
    let at_ts = at(ts);
    match verifier.verify(&headers, input.body, at_ts) {
        Ok(verified) => {
            assert_eq!(verified.secret_index(), 1);
            assert_eq!(verified.timestamp(), recipe.timestamp_header.as_ref().map(|_| ts));
            let identity = check_identity_shape(&verified, &headers, input.body);
            if let (true, Some(id)) = (uses_id, &id) {
                assert_eq!(identity, expected_id(id.as_bytes()), "signed id");
            }
        }
        Err(error) => panic!("{recipe:?} rejects its own signature: {error}\ninput: {}", describe(data)),
    }
    let mut longer = input.body.to_vec();
    longer.push(b'\0');
    assert_eq!(verifier.verify(&headers, &longer, at_ts).err(), Some(SignatureError::Mismatch), "{recipe:?}");
    let unknown_only = Verifier::new(SchemeKind::Hmac, &[UNKNOWN], TOLERANCE, Some(recipe.clone()));
    if let Ok(unknown_only) = unknown_only {
        assert!(
            unknown_only.verify(&headers, input.body, at_ts).is_err(),
            "accepted under a secret it was not signed with"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::{Path, PathBuf};

    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    /// Every committed corpus file and hand-written seed, replayed through its target's oracle:
    /// the corpus is a regression suite that needs no nightly toolchain.
    #[test]
    fn committed_fuzz_corpus_replays_without_panic_or_false_accept() {
        let mut total = 0;
        for (name, target) in TARGETS {
            for kind in ["seeds", "corpus"] {
                let dir = fuzz_dir().join(kind).join(name);
                let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
                let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
                files.sort();
                assert!(!files.is_empty(), "no {kind} for fuzz target {name}");
                for file in &files {
                    let data = std::fs::read(file).unwrap();
                    let outcome = std::panic::catch_unwind(|| target(&data));
                    assert!(outcome.is_ok(), "fuzz target {name} fails on {}", file.display());
                }
                total += files.len();
            }
        }
        eprintln!("replayed {total} corpus and seed files");
    }

    /// The list above and the cargo-fuzz targets are the same set.
    #[test]
    fn every_fuzz_target_has_an_oracle() {
        let dir = fuzz_dir().join("fuzz_targets");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }

    /// The oracle itself refuses what a forgery would hand on: another split of the same signed
    /// bytes, another secret, a stale timestamp, an id that is not the signed one.
    #[test]
    fn the_oracle_refuses_what_was_not_signed() {
        let message = Message { id: Some(b"a.1".to_vec()), timestamp: Some(100), body: b"x".to_vec() };
        let signed = [Signed { secret_index: 1, message }];
        let exact = Accepted { secret_index: 1, timestamp: Some(100), id: Some(expected_id(b"a.1")), body: b"x" };
        assert_eq!(exact.check(&signed, 100), Ok(()));
        // `a.1` . `100` . `x` re-split as `a` . `1` . `100.x`: same bytes, other meaning.
        let resplit = Accepted { timestamp: Some(1), id: Some("a".into()), body: b"100.x", ..exact.clone() };
        assert!(resplit.check(&signed, 1).is_err());
        let other_secret = Accepted { secret_index: 0, ..exact.clone() };
        assert!(other_secret.check(&signed, 100).is_err());
        assert!(exact.check(&signed, 401).is_err());
        let padded_id = Accepted { id: Some(expected_id(b"a.1 ")), ..exact.clone() };
        assert!(padded_id.check(&signed, 100).is_err());
    }

    /// The hand-written seeds named `accept-*` verify: the replay reaches the accept path, so the
    /// oracle is exercised, not only the rejections.
    #[test]
    fn accepting_seeds_are_accepted() {
        let mut accepted = 0;
        for (name, _) in TARGETS.iter().filter(|(name, _)| name.starts_with("verify_")) {
            let scheme = match *name {
                "verify_stripe" => Scheme::Stripe,
                "verify_standard" => Scheme::Standard,
                "verify_github" => Scheme::Github,
                "verify_shopify" => Scheme::Shopify,
                "verify_slack" => Scheme::Slack,
                _ => Scheme::Recipe(0),
            };
            let dir = fuzz_dir().join("seeds").join(name);
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.unwrap().path();
                if !path.file_name().unwrap().to_string_lossy().starts_with("accept-") {
                    continue;
                }
                let data = std::fs::read(&path).unwrap();
                let input = Input::parse(&data);
                let scheme = match scheme {
                    Scheme::Recipe(_) => Scheme::Recipe(input.integer("recipe").unwrap_or(0).unsigned_abs() as usize),
                    other => other,
                };
                let provider = Provider::new(scheme);
                let mac = provider.requested(&input).map(|m| provider.mac(&m));
                let headers = input.header_map(mac.as_deref());
                let result = provider.verifier().verify(&headers, input.body, at(input.now()));
                assert!(result.is_ok(), "{} is rejected: {result:?}", path.display());
                accepted += 1;
            }
        }
        assert!(accepted >= 12, "only {accepted} accepting seeds");
    }
}
