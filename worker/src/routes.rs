//! Which destinations an event goes to: `[[routes]]` match a source, event-type patterns
//! (`*`, `prefix.*`, exact) and, when they have one, their `filter` (a CEL expression; see
//! `programs`). An event no route matches is recorded as `unrouted`, never dropped.
//!
//! A route's `transform` applies to the deliveries it makes, and its `ordering_key` (a JSON
//! pointer) orders them by the value the pointer finds in the (verified) body: for a
//! destination that several routes name, the first route (in config order) that applies to the
//! event decides both, as it decides that the destination is selected at all.
//!
//! **Config versions.** A router knows its [`ConfigVersion`]: the SHA-256 of the canonical JSON
//! of its routes (what decides routing and reshaping: source, patterns, filter, destination
//! names, transform, ordering; the routes hold nothing secret, and nothing else of the config
//! goes in), so the same routes give the same version on every worker, and any change to them
//! another. Each event is recorded with the version that routed it; the JSON is kept as the
//! version's snapshot, and [`Router::from_snapshot`] compiles it again, through the same
//! bounded compile path as the config's, for a replay "as received".

use std::cell::OnceCell;
use std::sync::Arc;

use inlet_shared::config::{ConfigError, OrderingOnDeadLetter, RouteConfig, event_type_matches};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::metric_names;
use crate::model::{ConfigVersion, DeliveryOrdering, OrderingKey};
use crate::programs::{Filter, FilterInput, FilterOutcome, Transform, body_for_filter};

/// Longest ordering key stored as it is; a longer one is stored as `sha256:<hex>` of it.
const MAX_KEY_BYTES: usize = 128;
/// The prefix of a hashed key (a key that starts with it is hashed too, so the two never meet).
const HASHED: &str = "sha256:";

/// One route with its programs compiled.
#[derive(Debug)]
struct Route {
    config: RouteConfig,
    filter: Option<Filter>,
    transform: Option<Arc<Transform>>,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Arc<Vec<Route>>,
    /// The routes' version and their canonical JSON (its snapshot).
    version: ConfigVersion,
    snapshot: Arc<str>,
}

/// One route as its version's snapshot spells it: every field of [`RouteConfig`], in this
/// order, by the config's own names (so the snapshot reads back as `RouteConfig`s). A struct
/// rather than a JSON map, so the order of the text (and with it the version) never depends on
/// how a map is serialised.
#[derive(Serialize)]
struct RouteSnapshot<'a> {
    source: &'a str,
    events: &'a [String],
    destinations: &'a [String],
    filter: Option<&'a str>,
    transform: Option<&'a str>,
    ordering_key: Option<&'a str>,
    ordering_on_dead_letter: &'static str,
}

/// Why a stored snapshot could not be made a router again.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot is not the routes' JSON (written by another version of Inlet, or damaged).
    #[error("the snapshot of config version {version} cannot be read: {message}")]
    Unreadable {
        /// The version.
        version: String,
        /// What is wrong.
        message: String,
    },
    /// It reads, but a program no longer compiles (this version of Inlet refuses it).
    #[error("config version {version} no longer compiles: {source}")]
    DoesNotCompile {
        /// The version.
        version: String,
        /// Which route's program, and why.
        source: ConfigError,
    },
}

/// The canonical JSON of `routes` and its version (SHA-256, hex).
pub fn routes_version(routes: &[RouteConfig]) -> (ConfigVersion, String) {
    let snapshot: Vec<RouteSnapshot<'_>> = routes
        .iter()
        .map(|route| RouteSnapshot {
            source: &route.source,
            events: &route.events,
            destinations: &route.destinations,
            filter: route.filter.as_deref(),
            transform: route.transform.as_deref(),
            ordering_key: route.ordering_key.as_deref(),
            ordering_on_dead_letter: match route.ordering_on_dead_letter {
                OrderingOnDeadLetter::Skip => "skip",
                OrderingOnDeadLetter::Block => "block",
            },
        })
        .collect();
    // Strings, string lists and options only: serialising them cannot fail.
    let json = serde_json::to_string(&snapshot).unwrap_or_default();
    let version = ConfigVersion::from_stored(hex::encode(Sha256::digest(json.as_bytes())));
    (version, json)
}

/// Where one event goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// Destinations, each once, in config order.
    pub destinations: Vec<String>,
    /// The ordered ones among them, with their ordering.
    pub ordering: Vec<(String, DeliveryOrdering)>,
}

/// What routing looks at of one event.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Source name.
    pub source: &'a str,
    /// Event type.
    pub event_type: Option<&'a str>,
    /// The raw body.
    pub body: &'a [u8],
    /// The stored request headers (`[[name, value], …]`).
    pub headers_json: &'a str,
}

impl Router {
    /// From the config's routes (validated at load), compiling their programs.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `routes[i].filter` or `routes[i].transform` and where the program
    /// is wrong.
    pub fn compile(routes: &[RouteConfig]) -> Result<Router, ConfigError> {
        let mut compiled = Vec::with_capacity(routes.len());
        for (index, config) in routes.iter().enumerate() {
            let invalid = |field: &str, message: String| ConfigError::Invalid {
                key: format!("routes[{index}].{field}"),
                message,
            };
            let filter = match &config.filter {
                Some(text) => Some(Filter::compile(text).map_err(|e| invalid("filter", e.to_string()))?),
                None => None,
            };
            let transform = match &config.transform {
                Some(text) => {
                    Some(Arc::new(Transform::compile(text).map_err(|e| invalid("transform", e.to_string()))?))
                }
                None => None,
            };
            compiled.push(Route { config: config.clone(), filter, transform });
        }
        let (version, snapshot) = routes_version(routes);
        Ok(Router { routes: Arc::new(compiled), version, snapshot: snapshot.into() })
    }

    /// The router of a stored snapshot (see the module docs), its programs compiled as the
    /// config's are (bounded before parsing). Its version is `version`, as stored: a snapshot
    /// is only ever read under the version it was written with.
    ///
    /// # Errors
    ///
    /// [`SnapshotError`]: the text is not routes' JSON, or a program no longer compiles.
    pub fn from_snapshot(version: &ConfigVersion, snapshot: &str) -> Result<Router, SnapshotError> {
        let routes: Vec<RouteConfig> = serde_json::from_str(snapshot).map_err(|error| SnapshotError::Unreadable {
            version: version.as_str().to_owned(),
            message: error.to_string(),
        })?;
        let mut router = Router::compile(&routes)
            .map_err(|source| SnapshotError::DoesNotCompile { version: version.as_str().to_owned(), source })?;
        router.version = version.clone();
        Ok(router)
    }

    /// The version of these routes.
    pub fn version(&self) -> &ConfigVersion {
        &self.version
    }

    /// These routes' canonical JSON: the version's snapshot.
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// Whether `route` applies to `event`; the body is parsed (once per event, into `body`) only
    /// when a filter needs it.
    fn applies(route: &Route, event: &EventView<'_>, body: &OnceCell<serde_json::Value>) -> bool {
        if route.config.source != event.source
            || !route.config.events.iter().any(|pattern| event_type_matches(pattern, event.event_type))
        {
            return false;
        }
        let Some(filter) = &route.filter else { return true };
        let input = FilterInput {
            body: body.get_or_init(|| body_for_filter(event.body)),
            headers_json: event.headers_json,
            source: event.source,
            event_type: event.event_type,
        };
        let outcome = filter.evaluate(&input);
        let label = match &outcome {
            FilterOutcome::Match => "match",
            FilterOutcome::NoMatch => "no_match",
            FilterOutcome::Error(_) => "error",
        };
        metric_names::filter_evaluated(event.source, label);
        outcome.matched()
    }

    /// Destinations for an event, each once, in config order.
    pub fn destinations(&self, event: &EventView<'_>) -> Vec<String> {
        self.route(event).destinations
    }

    /// Where an event goes, and how each delivery is ordered: the first route (in config order)
    /// that applies to the event and sends it to a destination decides its ordering. The body
    /// is parsed as JSON at most once, and only when a filter or an `ordering_key` needs it; a
    /// body that is not JSON, or has nothing (or `null`) at the pointer, leaves the delivery
    /// unordered.
    pub fn route(&self, event: &EventView<'_>) -> Routing {
        let body = OnceCell::new();
        let mut routing = Routing::default();
        for route in self.routes.iter() {
            if !Self::applies(route, event, &body) {
                continue;
            }
            for destination in &route.config.destinations {
                if routing.destinations.contains(destination) {
                    continue;
                }
                routing.destinations.push(destination.clone());
                let Some(pointer) = &route.config.ordering_key else { continue };
                let document = body.get_or_init(|| body_for_filter(event.body));
                if let Some(key) = ordering_key_of(document, pointer) {
                    let blocks_when_dead = route.config.ordering_on_dead_letter == OrderingOnDeadLetter::Block;
                    routing.ordering.push((destination.clone(), DeliveryOrdering { key, blocks_when_dead }));
                }
            }
        }
        routing
    }

    /// The transform of the deliveries to `destination` of `event`: that of the first route
    /// (config order) that applies to the event and names the destination.
    pub fn transform_for(&self, event: &EventView<'_>, destination: &str) -> Option<Arc<Transform>> {
        let body = OnceCell::new();
        self.routes
            .iter()
            .filter(|route| route.config.destinations.iter().any(|d| d == destination))
            .find(|route| Self::applies(route, event, &body))
            .and_then(|route| route.transform.clone())
    }

    /// Whether any route has a transform (else deliveries need not look).
    pub fn has_transforms(&self) -> bool {
        self.routes.iter().any(|route| route.transform.is_some())
    }
}

/// The ordering key `pointer` finds in `document`: a string as it is, any other value as its
/// compact JSON text; longer than 128 bytes (or looking like a hashed key), `sha256:<hex>` of
/// it. `None` when nothing, or `null`, is there.
pub fn ordering_key_of(document: &serde_json::Value, pointer: &str) -> Option<OrderingKey> {
    let text = match document.pointer(pointer)? {
        serde_json::Value::Null => return None,
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if text.len() > MAX_KEY_BYTES || text.starts_with(HASHED) {
        return Some(OrderingKey::from_stored(format!("{HASHED}{}", hex::encode(Sha256::digest(text.as_bytes())))));
    }
    Some(OrderingKey::from_stored(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(source: &str, events: &[&str], destinations: &[&str]) -> RouteConfig {
        RouteConfig {
            source: source.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
            filter: None,
            transform: None,
            ordering_key: None,
            ordering_on_dead_letter: OrderingOnDeadLetter::Skip,
        }
    }

    fn event<'a>(source: &'a str, event_type: Option<&'a str>, body: &'a str) -> EventView<'a> {
        EventView { source, event_type, body: body.as_bytes(), headers_json: "[]" }
    }

    #[test]
    fn patterns_select_destinations_once_each() {
        let router = Router::compile(&[
            route("stripe", &["payment_intent.*"], &["billing", "audit"]),
            route("stripe", &["*"], &["audit"]),
            route("github", &["push"], &["ci"]),
        ])
        .unwrap();
        let destinations = |source, event_type| router.destinations(&event(source, event_type, "{}"));
        assert_eq!(destinations("stripe", Some("payment_intent.succeeded")), ["billing", "audit"]);
        assert_eq!(destinations("stripe", Some("charge.refunded")), ["audit"]);
        assert_eq!(destinations("github", Some("push")), ["ci"]);
        assert!(destinations("github", Some("issues")).is_empty());
        assert!(destinations("github", None).is_empty());
        assert!(destinations("slack", Some("push")).is_empty());
    }

    #[test]
    fn filters_narrow_routes_and_the_first_applying_route_gives_the_transform() {
        let mut big = route("stripe", &["*"], &["billing"]);
        big.filter = Some("body.amount > 1000".into());
        big.transform = Some("{big: .amount}".into());
        let mut rest = route("stripe", &["*"], &["billing"]);
        rest.transform = Some("{small: .amount}".into());
        let router = Router::compile(&[big, rest]).unwrap();
        let large = event("stripe", Some("charge"), r#"{"amount":5000}"#);
        let small = event("stripe", Some("charge"), r#"{"amount":5}"#);
        assert_eq!(router.destinations(&large), ["billing"]);
        assert_eq!(router.transform_for(&large, "billing").unwrap().text(), "{big: .amount}");
        assert_eq!(router.transform_for(&small, "billing").unwrap().text(), "{small: .amount}");
        assert!(router.transform_for(&small, "elsewhere").is_none());
        assert!(router.has_transforms());
    }

    #[test]
    fn bad_programs_are_refused_naming_the_key() {
        let mut bad = route("stripe", &["*"], &["billing"]);
        bad.filter = Some("body.amount >".into());
        let error = Router::compile(&[route("stripe", &["*"], &["x"]), bad]).unwrap_err().to_string();
        assert!(error.contains("routes[1].filter") && error.contains("line 1"), "{error}");
        let mut bad = route("stripe", &["*"], &["billing"]);
        bad.transform = Some("{a: }".into());
        let error = Router::compile(&[bad]).unwrap_err().to_string();
        assert!(error.contains("routes[0].transform") && error.contains("line 1"), "{error}");
    }

    fn key(text: &str) -> OrderingKey {
        OrderingKey::from_stored(text.to_owned())
    }

    #[test]
    fn the_first_route_to_a_destination_decides_its_ordering_read_from_the_body() {
        let ordered = |pointer: &str, on_dead_letter, destinations: &[&str]| RouteConfig {
            ordering_key: Some(pointer.to_owned()),
            ordering_on_dead_letter: on_dead_letter,
            ..route("stripe", &["*"], destinations)
        };
        let router = Router::compile(&[
            ordered("/data/object/id", OrderingOnDeadLetter::Block, &["billing"]),
            route("stripe", &["*"], &["audit"]),
            ordered("/type", OrderingOnDeadLetter::Skip, &["billing", "crm"]),
        ])
        .unwrap();
        let body = br#"{"type":"charge.refunded","data":{"object":{"id":"ch_1"}}}"#;
        let routing = router.route(&EventView {
            source: "stripe",
            event_type: Some("charge.refunded"),
            body,
            headers_json: "[]",
        });
        assert_eq!(routing.destinations, ["billing", "audit", "crm"]);
        assert_eq!(
            routing.ordering,
            [
                ("billing".to_owned(), DeliveryOrdering { key: key("ch_1"), blocks_when_dead: true }),
                ("crm".to_owned(), DeliveryOrdering { key: key("charge.refunded"), blocks_when_dead: false }),
            ]
        );
        // Not JSON, or nothing at the pointer: delivered, unordered.
        let routing =
            router.route(&EventView { source: "stripe", event_type: Some("x"), body: b"not json", headers_json: "[]" });
        assert_eq!((routing.destinations.len(), routing.ordering.len()), (3, 0));
        let routing = router.route(&EventView {
            source: "stripe",
            event_type: Some("x"),
            body: br#"{"type":"x","data":{"object":{"id":null}}}"#,
            headers_json: "[]",
        });
        assert_eq!(routing.ordering, [("crm".to_owned(), DeliveryOrdering { key: key("x"), blocks_when_dead: false })]);
    }

    #[test]
    fn keys_are_bounded_and_values_other_than_strings_are_their_json() {
        let document: serde_json::Value = serde_json::json!({
            "n": 12, "o": {"b": 1, "a": [true]}, "s": "gid://shopify/Order/1", "long": "x".repeat(200),
            "fake": "sha256:00", "a/b": "slash", "m~n": "tilde"
        });
        assert_eq!(ordering_key_of(&document, "/n"), Some(key("12")));
        assert_eq!(ordering_key_of(&document, "/o"), Some(key(r#"{"a":[true],"b":1}"#)));
        assert_eq!(ordering_key_of(&document, "/s"), Some(key("gid://shopify/Order/1")));
        assert_eq!(ordering_key_of(&document, "/a~1b"), Some(key("slash")));
        assert_eq!(ordering_key_of(&document, "/m~0n"), Some(key("tilde")));
        assert_eq!(ordering_key_of(&document, "/missing"), None);
        let long = ordering_key_of(&document, "/long").unwrap();
        assert!(long.as_str().starts_with("sha256:") && long.as_str().len() == 7 + 64, "{long:?}");
        let fake = ordering_key_of(&document, "/fake").unwrap();
        assert_ne!(fake, key("sha256:00"), "a value that looks hashed is hashed, so it cannot pose as another key");
        assert_eq!(fake.as_str().len(), 7 + 64);
    }

    /// A config with one source, one destination and one route, secrets and URL as given.
    fn config(secret: &str, url: &str, transform: &str) -> inlet_shared::config::Config {
        let text = format!(
            "[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nsecrets = [\"{secret}\"]\n\n\
             [[destinations]]\nname = \"billing\"\nurl = \"{url}\"\n\
             signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\n\
             [[routes]]\nsource = \"stripe\"\nevents = [\"payment_intent.*\"]\ndestinations = [\"billing\"]\n\
             filter = \"body.amount > 10\"\ntransform = '{transform}'\nordering_key = \"/data/object/id\"\n"
        );
        inlet_shared::config::Config::parse(&text, &Default::default()).unwrap()
    }

    #[test]
    fn the_version_ignores_secrets_and_urls_and_changes_with_a_transform() {
        let first = config("whsec_first_secret_aaaaaaaaaaaa", "https://user:pa55word@hooks.example/in", "{a: .amount}");
        let other_secrets = config("whsec_second_secret_bbbbbbbbbbb", "https://hooks.example/other", "{a: .amount}");
        let other_transform = config("whsec_first_secret_aaaaaaaaaaaa", "https://hooks.example/in", "{b: .amount}");
        let (version, snapshot) = routes_version(&first.routes);
        assert_eq!(version.as_str().len(), 64, "the full SHA-256 is kept: {version}");
        assert!(version.as_str().chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{version}");
        assert_eq!(version.short(), &version.as_str()[..12]);
        assert_eq!(routes_version(&other_secrets.routes).0, version, "secrets and URLs are not part of it");
        assert_ne!(routes_version(&other_transform.routes).0, version, "a transform is");
        for secret in ["whsec_first_secret", "pa55word", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "hooks.example"] {
            assert!(!snapshot.contains(secret), "{secret} in the snapshot: {snapshot}");
        }
        for part in ["payment_intent.*", "billing", "body.amount > 10", "{a: .amount}", "/data/object/id", "skip"] {
            assert!(snapshot.contains(part), "{part} missing from the snapshot: {snapshot}");
        }
        let router = Router::compile(&first.routes).unwrap();
        assert_eq!((router.version(), router.snapshot()), (&version, snapshot.as_str()));
    }

    #[test]
    fn a_snapshot_compiles_back_to_the_same_routes_or_says_why_not() {
        let mut ordered = route("stripe", &["*"], &["billing"]);
        ordered.transform = Some("{v: 1}".into());
        ordered.ordering_key = Some("/id".into());
        ordered.ordering_on_dead_letter = OrderingOnDeadLetter::Block;
        let routes = [ordered, route("github", &["push"], &["ci"])];
        let router = Router::compile(&routes).unwrap();
        let again = Router::from_snapshot(router.version(), router.snapshot()).unwrap();
        assert_eq!((again.version(), again.snapshot()), (router.version(), router.snapshot()));
        let event = event("stripe", Some("x"), r#"{"id":"k"}"#);
        assert_eq!(again.transform_for(&event, "billing").unwrap().text(), "{v: 1}");
        assert_eq!(again.route(&event), router.route(&event));

        let version = router.version().clone();
        let broken = router.snapshot().replace("{v: 1}", "{v: }");
        let error = Router::from_snapshot(&version, &broken).unwrap_err().to_string();
        assert!(error.contains("no longer compiles") && error.contains("routes[0].transform"), "{error}");
        let error = Router::from_snapshot(&version, "{\"not\": \"routes\"}").unwrap_err().to_string();
        assert!(error.contains("cannot be read"), "{error}");
    }
}
