//! Which destinations an event goes to: `[[routes]]` match a source and event-type patterns
//! (`*`, `prefix.*`, exact). An event no route matches is recorded as `unrouted`, never dropped.

use inlet_shared::config::{RouteConfig, event_type_matches};

/// The routing table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<RouteConfig>,
}

impl Router {
    /// From the config's routes (validated at load).
    pub fn new(routes: &[RouteConfig]) -> Router {
        Router { routes: routes.to_vec() }
    }

    /// Destinations for an event, each once, in config order.
    pub fn destinations(&self, source: &str, event_type: Option<&str>) -> Vec<String> {
        let mut selected: Vec<String> = Vec::new();
        for route in self.routes.iter().filter(|r| r.source == source) {
            if route.events.iter().any(|pattern| event_type_matches(pattern, event_type)) {
                for destination in &route.destinations {
                    if !selected.contains(destination) {
                        selected.push(destination.clone());
                    }
                }
            }
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(source: &str, events: &[&str], destinations: &[&str]) -> RouteConfig {
        RouteConfig {
            source: source.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
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
}
