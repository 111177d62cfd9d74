//! Which destinations an event goes to: `[[routes]]` match a source and event-type patterns
//! (`*`, `prefix.*`, exact). An event no route matches is recorded as `unrouted`, never dropped.
//! A route with an `ordering_key` (a JSON pointer) also says how its deliveries are ordered:
//! by the value the pointer finds in the (verified) body.

use inlet_shared::config::{OrderingOnDeadLetter, RouteConfig, event_type_matches};
use sha2::{Digest as _, Sha256};

use crate::model::{DeliveryOrdering, OrderingKey};

/// Longest ordering key stored as it is; a longer one is stored as `sha256:<hex>` of it.
const MAX_KEY_BYTES: usize = 128;
/// The prefix of a hashed key (a key that starts with it is hashed too, so the two never meet).
const HASHED: &str = "sha256:";

/// The routing table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<RouteConfig>,
}

/// Where one event goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// Destinations, each once, in config order.
    pub destinations: Vec<String>,
    /// The ordered ones among them, with their ordering.
    pub ordering: Vec<(String, DeliveryOrdering)>,
}

impl Router {
    /// From the config's routes (validated at load).
    pub fn new(routes: &[RouteConfig]) -> Router {
        Router { routes: routes.to_vec() }
    }

    /// Destinations for an event, each once, in config order.
    #[cfg(test)]
    pub fn destinations(&self, source: &str, event_type: Option<&str>) -> Vec<String> {
        self.route(source, event_type, b"").destinations
    }

    /// Where an event goes, and how each delivery is ordered: the first route (in config order)
    /// that sends the event to a destination decides its ordering. The body is parsed as JSON
    /// only when that route has an `ordering_key`, and at most once; a body that is not JSON,
    /// or has nothing (or `null`) at the pointer, leaves the delivery unordered.
    pub fn route(&self, source: &str, event_type: Option<&str>, body: &[u8]) -> Routing {
        let mut routing = Routing::default();
        let mut parsed: Option<Option<serde_json::Value>> = None;
        for route in self.routes.iter().filter(|r| r.source == source) {
            if !route.events.iter().any(|pattern| event_type_matches(pattern, event_type)) {
                continue;
            }
            for destination in &route.destinations {
                if routing.destinations.contains(destination) {
                    continue;
                }
                routing.destinations.push(destination.clone());
                let Some(pointer) = &route.ordering_key else { continue };
                let document = parsed.get_or_insert_with(|| serde_json::from_slice(body).ok());
                if let Some(key) = document.as_ref().and_then(|document| ordering_key_of(document, pointer)) {
                    let blocks_when_dead = route.ordering_on_dead_letter == OrderingOnDeadLetter::Block;
                    routing.ordering.push((destination.clone(), DeliveryOrdering { key, blocks_when_dead }));
                }
            }
        }
        routing
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(source: &str, events: &[&str], destinations: &[&str]) -> RouteConfig {
        RouteConfig {
            source: source.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
            ordering_key: None,
            ordering_on_dead_letter: OrderingOnDeadLetter::Skip,
        }
    }

    #[test]
    fn patterns_select_destinations_once_each() {
        let router = Router::new(&[
            route("stripe", &["payment_intent.*"], &["billing", "audit"]),
            route("stripe", &["*"], &["audit"]),
            route("github", &["push"], &["ci"]),
        ]);
        assert_eq!(router.destinations("stripe", Some("payment_intent.succeeded")), ["billing", "audit"]);
        assert_eq!(router.destinations("stripe", Some("charge.refunded")), ["audit"]);
        assert_eq!(router.destinations("github", Some("push")), ["ci"]);
        assert!(router.destinations("github", Some("issues")).is_empty());
        assert!(router.destinations("github", None).is_empty());
        assert!(router.destinations("slack", Some("push")).is_empty());
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
        let router = Router::new(&[
            ordered("/data/object/id", OrderingOnDeadLetter::Block, &["billing"]),
            route("stripe", &["*"], &["audit"]),
            ordered("/type", OrderingOnDeadLetter::Skip, &["billing", "crm"]),
        ]);
        let body = br#"{"type":"charge.refunded","data":{"object":{"id":"ch_1"}}}"#;
        let routing = router.route("stripe", Some("charge.refunded"), body);
        assert_eq!(routing.destinations, ["billing", "audit", "crm"]);
        assert_eq!(
            routing.ordering,
            [
                ("billing".to_owned(), DeliveryOrdering { key: key("ch_1"), blocks_when_dead: true }),
                ("crm".to_owned(), DeliveryOrdering { key: key("charge.refunded"), blocks_when_dead: false }),
            ]
        );
        // Not JSON, or nothing at the pointer: delivered, unordered.
        let routing = router.route("stripe", Some("x"), b"not json");
        assert_eq!((routing.destinations.len(), routing.ordering.len()), (3, 0));
        let routing = router.route("stripe", Some("x"), br#"{"type":"x","data":{"object":{"id":null}}}"#);
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
}
