#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const MINIMAL: &str = r#"
[[sources]]
name = "stripe"
kind = "stripe"
secrets = ["whsec_test_secret"]
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[track_caller]
fn check_invalid(text: &str, vars: &[(&str, &str)], expected_key: &str, message_part: &str) {
    match Config::parse(text, &env(vars)) {
        Ok(_) => panic!("config should be rejected (key {expected_key})"),
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, expected_key, "message was: {message}");
            assert!(message.contains(message_part), "`{message}` should contain `{message_part}`");
        }
        Err(other) => panic!("expected Invalid for {expected_key}, got {other}"),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(config.stream.name, "INLET");
    assert_eq!(config.stream.subject_for("stripe"), "inlet.events.stripe");
    assert_eq!(config.ingest.max_body_bytes, 1_000_000);
    assert_eq!(config.sources[0].tolerance, Duration::from_secs(300));
    assert!(config.routes.is_empty());
}

#[test]
fn example_config_in_repo_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/inlet.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    assert!(config.sources.len() >= 5, "the example shows every kind");
    for source in &config.sources {
        // scripts/run.sh's demo: a webhook to any example source reaches the demo destination.
        assert!(config.routes.iter().any(|r| r.source == source.name), "example source {} has no route", source.name);
    }
}

#[test]
fn unknown_top_level_key_is_named() {
    check_invalid("colour = 1\n", &[], "colour", "unknown field `colour`");
}

#[test]
fn unknown_nested_key_is_named() {
    check_invalid(
        "[ingest]\nlisten_adress = \"127.0.0.1:1\"\n",
        &[],
        "ingest.listen_adress",
        "unknown field `listen_adress`",
    );
}

#[test]
fn invalid_value_is_named() {
    check_invalid("[ingest]\npublish_timeout = \"5 seconds\"\n", &[], "ingest.publish_timeout", "unknown unit");
    check_invalid(
        "[[sources]]\nname = \"a\"\nkind = \"strip\"\nsecrets = [\"x\"]\n",
        &[],
        "sources[0].kind",
        "unknown variant `strip`",
    );
}

/// Issue #16: a retention shorter than a destination's retry schedule is refused, naming
/// `worker.retention` and the destination; a retention that covers it is accepted.
#[test]
fn a_retention_shorter_than_a_retry_schedule_is_refused() {
    let destination = |schedule: &str| {
        format!(
            "{MINIMAL}\n[[destinations]]\nname = \"slow\"\nurl = \"http://127.0.0.1:1/\"\n\
             signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout = \"10s\"\n\
             retry_schedule = [{schedule}]\n"
        )
    };
    let with_retention =
        |retention: &str, schedule: &str| format!("[worker]\nretention = \"{retention}\"\n{}", destination(schedule));
    // 1 h + 2 h of delays, +10 % jitter, 3 attempts × 10 s: 3 h 18 m 30 s, rounded up to 199 m.
    let schedule = "\"1h\", \"2h\"";
    check_invalid(&with_retention("3h", schedule), &[], "worker.retention", "destination `slow`");
    check_invalid(&with_retention("198m", schedule), &[], "worker.retention", "at least that");
    Config::parse(&with_retention("199m", schedule), &BTreeMap::new()).unwrap();
    // The default schedule (about 27.6 h) against the default retention (30 d), and a day.
    Config::parse(&destination("\"5s\", \"5m\", \"30m\", \"2h\", \"5h\", \"10h\", \"10h\""), &BTreeMap::new()).unwrap();
    check_invalid(
        &format!(
            "[worker]\nretention = \"1d\"\n{}",
            destination("\"5s\", \"5m\", \"30m\", \"2h\", \"5h\", \"10h\", \"10h\"")
        ),
        &[],
        "worker.retention",
        "1d is shorter",
    );
}

#[test]
fn missing_required_key_is_named() {
    check_invalid("[[sources]]\nname = \"a\"\nkind = \"github\"\n", &[], "sources[0]", "missing field `secrets`");
}

#[test]
fn bad_source_name_and_duplicates() {
    check_invalid(
        "[[sources]]\nname = \"Has Space\"\nkind = \"github\"\nsecrets = [\"x\"]\n",
        &[],
        "sources[0].name",
        "[a-z0-9_-]",
    );
    let dup = format!("{MINIMAL}{MINIMAL}");
    check_invalid(&dup, &[], "sources[1].name", "duplicate");
}

#[test]
fn standard_secret_must_be_base64() {
    check_invalid(
        "[[sources]]\nname = \"svix\"\nkind = \"standard\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_!!!\"]\n",
        &[],
        "sources[0].secrets[1]",
        "",
    );
}

#[test]
fn hmac_kind_needs_recipe() {
    check_invalid(
        "[[sources]]\nname = \"acme\"\nkind = \"hmac\"\nsecrets = [\"x\"]\n",
        &[],
        "sources[0].hmac",
        "recipe",
    );
}

#[test]
fn secrets_from_env_reference() {
    let text =
        "[[sources]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [{ env = \"GH_OLD\" }, { env = \"GH_NEW\" }]\n";
    let config = Config::parse(text, &env(&[("GH_OLD", "old"), ("GH_NEW", "new")])).unwrap();
    let secrets: Vec<&str> = config.sources[0].secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["old", "new"]);
    check_invalid(text, &[("GH_OLD", "old")], "sources[0].secrets[1]", "GH_NEW is not set");
}

#[test]
fn env_overrides_replace_values_and_keep_strings() {
    let config = Config::parse(
        MINIMAL,
        &env(&[
            ("INLET__NATS__URL", "nats://10.0.0.1:4222"),
            ("INLET__INGEST__MAX_BODY_BYTES", "2048"),
            ("INLET__SOURCES__0__SECRETS__0", "12345"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(config.nats.url, "nats://10.0.0.1:4222");
    assert_eq!(config.ingest.max_body_bytes, 2048);
    assert_eq!(config.sources[0].secrets[0].expose(), "12345", "a numeric-looking secret stays a string");
}

#[test]
fn env_override_with_bad_value_names_the_key() {
    check_invalid(MINIMAL, &[("INLET__INGEST__MAX_BODY_BYTES", "lots")], "ingest.max_body_bytes", "");
    check_invalid(MINIMAL, &[("INLET__SOURCES__7__NAME", "x")], "sources.7.name", "no element 7");
}

#[test]
fn routes_must_reference_known_names() {
    let text = format!("{MINIMAL}\n[[routes]]\nsource = \"stripe\"\ndestinations = [\"nowhere\"]\n");
    check_invalid(&text, &[], "routes[0].destinations", "no destination named `nowhere`");
    let text = format!("{MINIMAL}\n[[routes]]\nsource = \"shopify\"\ndestinations = [\"x\"]\n");
    check_invalid(&text, &[], "routes[0].source", "no source named `shopify`");
}

#[test]
fn ordering_keys_are_json_pointers_and_block_needs_one() {
    let route = |extra: &str| {
        format!(
            "{MINIMAL}\n[[destinations]]\nname = \"svc\"\nurl = \"http://127.0.0.1:1/\"\n\
             signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             [[routes]]\nsource = \"stripe\"\ndestinations = [\"svc\"]\n{extra}\n"
        )
    };
    let config = Config::parse(&route(""), &BTreeMap::new()).unwrap();
    assert_eq!(config.routes[0].ordering_key, None, "unordered by default");
    assert_eq!(config.routes[0].ordering_on_dead_letter, OrderingOnDeadLetter::Skip);
    let config = Config::parse(
        &route("ordering_key = \"/data/object/id\"\nordering_on_dead_letter = \"block\""),
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(config.routes[0].ordering_key.as_deref(), Some("/data/object/id"));
    assert_eq!(config.routes[0].ordering_on_dead_letter, OrderingOnDeadLetter::Block);
    Config::parse(&route("ordering_key = \"/a~1b/~0c/0\""), &BTreeMap::new()).unwrap();
    check_invalid(&route("ordering_key = \"data.object.id\""), &[], "routes[0].ordering_key", "starting with `/`");
    check_invalid(&route("ordering_key = \"\""), &[], "routes[0].ordering_key", "starting with `/`");
    check_invalid(&route("ordering_key = \"/a~2\""), &[], "routes[0].ordering_key", "RFC 6901");
    let long = format!("ordering_key = \"/{}\"", "a".repeat(300));
    check_invalid(&route(&long), &[], "routes[0].ordering_key", "256 bytes");
    check_invalid(&route("ordering_on_dead_letter = \"block\""), &[], "routes[0].ordering_on_dead_letter", "only with");
    check_invalid(
        &route("ordering_key = \"/id\"\nordering_on_dead_letter = \"hold\""),
        &[],
        "routes[0].ordering_on_dead_letter",
        "expected `skip` or `block`",
    );
}

#[test]
fn destination_validation() {
    let text = format!(
        "{MINIMAL}\n[[destinations]]\nname = \"svc\"\nurl = \"ftp://x\"\nsigning_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    );
    check_invalid(&text, &[], "destinations[0].url", "http");
    let text = format!(
        "{MINIMAL}\n[[destinations]]\nname = \"svc\"\nurl = \"http://127.0.0.1:1/\"\nsigning_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    );
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    assert_eq!(config.destinations[0].max_attempts(), 8);
}

#[test]
fn secrets_are_redacted_in_debug() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("whsec_test_secret"));
    assert!(printed.contains("<redacted>"));
}

#[test]
fn event_type_patterns() {
    assert!(event_type_matches("*", None));
    assert!(event_type_matches("payment_intent.*", Some("payment_intent.succeeded")));
    assert!(!event_type_matches("payment_intent.*", Some("charge.succeeded")));
    assert!(event_type_matches("push", Some("push")));
    assert!(!event_type_matches("push", Some("pushed")));
    assert!(!event_type_matches("push", None));
}

#[test]
fn deploy_config_for_docker_compose_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/inlet.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let vars = env(&[
        ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
        ("GITHUB_WEBHOOK_SECRET", "x"),
        ("ORDERS_SIGNING_SECRET", "whsec_Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUhISE="),
        ("INLET_NATS_USER", "inlet-ingest"),
        ("INLET_NATS_PASSWORD", "change_me_ingest"),
        ("INLET_OIDC_CLIENT_SECRET", "change_me"),
        ("INLET_TOKEN_KEY", "Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUhISE="),
    ]);
    let config = Config::parse(&text, &vars).unwrap();
    assert_eq!(config.stream.replicas, 3);
    // The production shape has a way to sign in: its console and API are reachable.
    assert!(config.console.enabled && config.console.oidc.is_some(), "an OpenID Connect sign-in (placeholders)");
    assert_eq!(config.console.public_url.as_deref(), Some("https://inlet.example.com"));
    assert_eq!(config.console.access.admins, ["admin@example.com"]);
    assert!(matches!(config.nats.auth(), NatsAuth::UserPassword("inlet-ingest", _)), "each service its own NATS user");
}

const CONSOLE: &str = r#"
[console]
public_url = "https://inlet.example.com"
session_ttl = "8h"
[console.access]
admins = ["Root@Example.com"]
operators = ["ops@example.com"]
allowed_domains = ["example.org"]
[console.oidc]
issuer = "https://accounts.example.com"
client_id = "inlet"
client_secret = { env = "OIDC_SECRET" }
"#;

#[test]
fn console_section_parses_and_maps_roles() {
    let config = Config::parse(CONSOLE, &env(&[("OIDC_SECRET", "s3cret")])).unwrap();
    let console = &config.console;
    assert!(console.enabled);
    assert_eq!(console.session_ttl, Duration::from_secs(8 * 3600));
    assert_eq!(console.oidc.as_ref().unwrap().client_secret.expose(), "s3cret");
    assert_eq!(console.access.role_for("root@example.com"), Some(Role::Admin));
    assert_eq!(console.access.role_for("ops@EXAMPLE.com"), Some(Role::Operator));
    assert_eq!(console.access.role_for("anyone@example.org"), Some(Role::Viewer));
    assert_eq!(console.access.role_for("anyone@example.org.evil.com"), None);
    assert_eq!(console.access.role_for("stranger@example.com"), None);
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[test]
fn console_validation_names_the_key() {
    let vars = [("OIDC_SECRET", "s")];
    check_invalid(
        &CONSOLE.replace("https://accounts.example.com", "http://accounts.example.com"),
        &vars,
        "console.oidc.issuer",
        "http:// only",
    );
    check_invalid(
        &CONSOLE.replace("https://inlet.example.com", "http://10.0.0.1:8090"),
        &vars,
        "console.public_url",
        "loopback",
    );
    check_invalid(
        &CONSOLE.replace("public_url = \"https://inlet.example.com\"\n", ""),
        &vars,
        "console.public_url",
        "required",
    );
    check_invalid(
        &CONSOLE.replace("\"ops@example.com\"", "\"ops\""),
        &vars,
        "console.access.operators",
        "not an email",
    );
    check_invalid("[console]\nsesion_ttl = \"1h\"\n", &[], "console.sesion_ttl", "unknown field");
    check_invalid(
        &format!(
            "{CONSOLE}[console.github]\nclient_id = \"x\"\nclient_secret = \"y\"\napi_url = \"http://github.internal\"\n"
        ),
        &vars,
        "console.github.api_url",
        "https://",
    );
    let github =
        Config::parse(&format!("{CONSOLE}[console.github]\nclient_id = \"x\"\nclient_secret = \"y\"\n"), &env(&vars))
            .unwrap();
    assert_eq!(github.console.github.unwrap().api_url, "https://api.github.com");
    check_invalid("[console]\nbootstrap_token = \"short\"\n", &[], "console.bootstrap_token", "at least 32");
    check_invalid(
        "[console]\ntoken_keys = [{ id = \"k1\", key = \"c2hvcnQ=\" }]\n",
        &[],
        "console.token_keys[0].key",
        "32 random bytes",
    );
    let keys =
        "[console]\ntoken_keys = [{ id = \"k2\", key = { env = \"K\" } }, { id = \"k2\", key = { env = \"K\" } }]\n";
    let key = ("K", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    check_invalid(keys, &[key], "console.token_keys[1].id", "duplicate");
    let one =
        Config::parse("[console]\ntoken_keys = [{ id = \"k2\", key = { env = \"K\" } }]\n", &env(&[key])).unwrap();
    assert!(!format!("{one:?}").contains("MDEy"), "keys are redacted");
    // A development provider on loopback is fine.
    let dev = CONSOLE
        .replace("https://accounts.example.com", "http://127.0.0.1:9400")
        .replace("https://inlet.example.com", "http://localhost:8090");
    Config::parse(&dev, &env(&vars)).unwrap();
}

#[test]
fn fsync_durability_needs_the_monitoring_url() {
    let text = format!("[stream]\ndurability = \"fsync\"\n{MINIMAL}");
    check_invalid(&text, &[], "nats.monitoring_url", "required");
    let config = Config::parse(&text, &env(&[("INLET__NATS__MONITORING_URL", "http://127.0.0.1:8222")])).unwrap();
    assert_eq!(config.stream.durability, Durability::Fsync);
    check_invalid("[stream]\ndurability = \"always\"\n", &[], "stream.durability", "unknown variant");
}

#[test]
fn stream_max_bytes_is_optional_and_must_hold_the_largest_event() {
    let unlimited = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(unlimited.stream.max_bytes, None, "unlimited unless configured");
    // The default body limit (1,000,000) plus the header allowance.
    assert_eq!(unlimited.largest_event_bytes(), 1_000_000 + EVENT_OVERHEAD_BYTES);

    let bounded = Config::parse(&format!("[stream]\nmax_bytes = 10737418240\n{MINIMAL}"), &BTreeMap::new()).unwrap();
    assert_eq!(bounded.stream.max_bytes, Some(10_737_418_240));

    check_invalid(&format!("[stream]\nmax_bytes = 1000000\n{MINIMAL}"), &[], "stream.max_bytes", "at least 1069632");
    // A source with a larger own limit raises the floor.
    let text = "[stream]\nmax_bytes = 2000000\n[[sources]]\nname = \"big\"\nkind = \"github\"\nsecrets = [\"x\"]\n\
                max_body_bytes = 4000000\n";
    check_invalid(text, &[], "stream.max_bytes", "sources[].max_body_bytes");
    check_invalid("[stream]\nmax_bytes = -1\n", &[], "stream.max_bytes", "invalid value");
    let overrides = env(&[("INLET__STREAM__MAX_BYTES", "5000000")]);
    assert_eq!(Config::parse(MINIMAL, &overrides).unwrap().stream.max_bytes, Some(5_000_000));
}

#[test]
fn failure_rate_limit_has_a_default_and_must_be_positive() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(config.ingest.failure_rate_limit.per_second, 10);
    assert_eq!(config.ingest.failure_rate_limit.burst(), 100);
    let custom =
        Config::parse(&format!("[ingest]\nfailure_rate_limit = {{ per_second = 2 }}\n{MINIMAL}"), &BTreeMap::new())
            .unwrap();
    assert_eq!(custom.ingest.failure_rate_limit.burst(), 2, "burst defaults to per_second");
    check_invalid(
        &format!("[ingest]\nfailure_rate_limit = {{ per_second = 0 }}\n{MINIMAL}"),
        &[],
        "ingest.failure_rate_limit",
        "at least 1",
    );
}

#[test]
fn max_buffered_body_bytes_must_hold_the_largest_body() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(config.ingest.max_buffered_body_bytes, 256 * 1024 * 1024);
    check_invalid(
        &format!("[ingest]\nmax_buffered_body_bytes = 999999\n{MINIMAL}"),
        &[],
        "ingest.max_buffered_body_bytes",
        "at least 1000000",
    );
    // A source with a larger own limit raises the floor.
    let text = "[ingest]\nmax_buffered_body_bytes = 2000000\n[[sources]]\nname = \"big\"\nkind = \"github\"\n\
                secrets = [\"x\"]\nmax_body_bytes = 4000000\n";
    check_invalid(text, &[], "ingest.max_buffered_body_bytes", "sources[].max_body_bytes");
    let overrides = env(&[("INLET__INGEST__MAX_BUFFERED_BODY_BYTES", "1000000")]);
    assert_eq!(Config::parse(MINIMAL, &overrides).unwrap().ingest.max_buffered_body_bytes, 1_000_000);
}

#[test]
fn the_duplicate_window_covers_every_replay_the_tolerance_accepts() {
    // Defaults agree: a signed timestamp verifies from `tolerance` before to `tolerance` after
    // it, and every replay in that span is still inside the duplicate window.
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(config.sources[0].tolerance, Duration::from_secs(300));
    assert_eq!(config.stream.duplicate_window, Duration::from_secs(600));
    assert!(config.stream.duplicate_window >= 2 * config.sources[0].tolerance);

    // The old default window (2m) with the default tolerance is refused, naming the source key.
    let old_window = format!("[stream]\nduplicate_window = \"2m\"\n{MINIMAL}");
    check_invalid(&old_window, &[], "sources[0].tolerance", "stream.duplicate_window (2m)");
    check_invalid(&format!("{MINIMAL}tolerance = \"6m\"\n"), &[], "sources[0].tolerance", "at least 12m");
    Config::parse(&format!("[stream]\nduplicate_window = \"12m\"\n{MINIMAL}tolerance = \"6m\"\n"), &BTreeMap::new())
        .unwrap();

    // Kinds that sign no timestamp have nothing to replay within: their tolerance is unused.
    let unsigned = "[stream]\nduplicate_window = \"2m\"\n[[sources]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"s\"]\n\
                    [[sources]]\nname = \"acme\"\nkind = \"hmac\"\nsecrets = [\"s\"]\n[sources.hmac]\nheader = \"X-Sig\"\n";
    Config::parse(unsigned, &BTreeMap::new()).unwrap();
    let signed_recipe = format!("{unsigned}timestamp_header = \"X-Ts\"\nsigned_payload = \"{{timestamp}}.{{body}}\"\n");
    check_invalid(&signed_recipe, &[], "sources[1].tolerance", "more than half");

    // JetStream refuses a window longer than the stream's max_age.
    check_invalid("[stream]\nmax_age = \"5m\"\n", &[], "stream.duplicate_window", "stream.max_age (5m)");
}

#[test]
fn sources_whose_signature_cannot_stop_a_replay_are_warned_about() {
    let text = r#"
[[sources]]
name = "stripe"
kind = "stripe"
secrets = ["whsec_test_secret"]
[[sources]]
name = "gh"
kind = "github"
secrets = ["s"]
[[sources]]
name = "shop"
kind = "shopify"
secrets = ["s"]
[[sources]]
name = "signed"
kind = "hmac"
secrets = ["s"]
[sources.hmac]
header = "X-Sig"
timestamp_header = "X-Ts"
id_header = "X-Id"
signed_payload = "{id}.{timestamp}.{body}"
[[sources]]
name = "unsigned-id"
kind = "hmac"
secrets = ["s"]
[sources.hmac]
header = "X-Sig"
timestamp_header = "X-Ts"
id_header = "X-Id"
signed_payload = "{timestamp}.{body}"
[[sources]]
name = "no-timestamp"
kind = "hmac"
secrets = ["s"]
[sources.hmac]
header = "X-Sig"
id_header = "X-Id"
signed_payload = "{id}.{body}"
"#;
    let config = Config::parse(text, &BTreeMap::new()).unwrap();
    let warning = |name: &str| config.source(name).unwrap().replay_warning(config.stream.duplicate_window);
    assert_eq!(warning("stripe"), None);
    assert_eq!(warning("signed"), None);
    for name in ["gh", "shop"] {
        let text = warning(name).unwrap();
        assert!(text.contains("neither the event id nor a timestamp"), "{text}");
        assert!(text.contains("body hash") && text.contains("(10m)"), "{text}");
    }
    assert!(warning("unsigned-id").unwrap().contains("does not cover the event id (sign {id}"));
    assert!(warning("no-timestamp").unwrap().contains("covers no timestamp"));
}

#[test]
fn redacted_headers_default_to_credential_like_names_and_can_be_replaced() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(config.ingest.redact_headers, crate::envelope::HeaderPatterns::default_redacted());
    assert!(config.ingest.redact_headers.matches("x-api-key"));

    let text = format!("[ingest]\nredact_headers = [\"X-Acme-*\", \"x-internal\"]\n{MINIMAL}");
    let config = Config::parse(&text, &BTreeMap::new()).unwrap();
    assert!(
        config.ingest.redact_headers.matches("x-acme-session") && config.ingest.redact_headers.matches("x-internal")
    );
    assert!(!config.ingest.redact_headers.matches("x-api-key"), "the list replaces the defaults");
    let none = Config::parse(&format!("[ingest]\nredact_headers = []\n{MINIMAL}"), &BTreeMap::new()).unwrap();
    assert!(!none.ingest.redact_headers.matches("x-api-key"));

    check_invalid(
        "[ingest]\nredact_headers = [\"x-ok\", \"x-*-key\"]\n",
        &[],
        "ingest.redact_headers",
        "entry 1 `x-*-key`",
    );
    check_invalid("[ingest]\nredact_headers = [\"has space\"]\n", &[], "ingest.redact_headers", "not a header name");
    check_invalid("[ingest]\nredact_headers = \"x-api-key\"\n", &[], "ingest.redact_headers", "");
}

#[test]
fn the_example_config_shows_the_default_redacted_headers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/inlet.example.toml");
    let config = Config::parse(&std::fs::read_to_string(path).unwrap(), &BTreeMap::new()).unwrap();
    assert_eq!(config.ingest.redact_headers, crate::envelope::HeaderPatterns::default_redacted());
}

/// Issue #15: `[store]` defaults to SQLite; PostgreSQL needs a `postgres://` URL (from the
/// environment in production); a URL without the backend, or a bad one, is refused naming
/// `store.url`, without echoing the value (it may hold a password).
#[test]
fn the_store_section_names_its_keys_and_never_echoes_the_url() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(config.store.backend, StoreBackend::Sqlite);
    let postgres = |url: &str| format!("{MINIMAL}\n[store]\nbackend = \"postgres\"\n{url}");
    let config = Config::parse(
        &postgres("url = { env = \"DB_URL\" }\npool_size = 4\nstatement_timeout = \"0s\"\n"),
        &env(&[("DB_URL", "postgres://inlet:hunter2@db:5432/inlet")]),
    )
    .unwrap();
    assert_eq!(config.store.backend, StoreBackend::Postgres);
    assert_eq!(config.store.url.as_ref().map(Secret::expose), Some("postgres://inlet:hunter2@db:5432/inlet"));
    assert_eq!((config.store.pool_size, config.store.statement_timeout), (4, Duration::ZERO));
    assert!(!format!("{config:?}").contains("hunter2"), "Debug redacts the URL");

    check_invalid(&postgres(""), &[], "store.url", "required with store.backend = \"postgres\"");
    match Config::parse(&postgres("url = \"mysql://root:hunter2@db/inlet\"\n"), &BTreeMap::new()) {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "store.url");
            assert!(message.contains("postgres://") && !message.contains("hunter2"), "{message}");
        }
        other => panic!("expected store.url to be refused, got {other:?}"),
    }
    check_invalid(
        &format!("{MINIMAL}\n[store]\nurl = \"postgres://db/inlet\"\n"),
        &[],
        "store.url",
        "store.backend is \"sqlite\"",
    );
    check_invalid(
        &postgres("url = \"postgres://db/inlet\"\npool_size = 0\n"),
        &[],
        "store.pool_size",
        "between 1 and 1000",
    );
    check_invalid(&format!("{MINIMAL}\n[store]\nbackend = \"mysql\"\n"), &[], "store.backend", "unknown variant");
}

/// `[ingest.tls]` and `[worker.tls]`: both files required, a default reload interval, set by
/// environment overrides too; invalid values name their key.
#[test]
fn tls_tables_need_both_files_and_name_their_keys() {
    let config = Config::parse(
        &format!("{MINIMAL}[ingest.tls]\ncert_file = \"/etc/inlet/tls.crt\"\nkey_file = \"/etc/inlet/tls.key\"\n"),
        &BTreeMap::new(),
    )
    .unwrap();
    let tls = config.ingest.tls.unwrap();
    assert_eq!(tls.cert_file, PathBuf::from("/etc/inlet/tls.crt"));
    assert_eq!(tls.reload_interval, DEFAULT_TLS_RELOAD_INTERVAL);
    assert!(config.worker.tls.is_none(), "plain HTTP is the default");

    let config = Config::parse(
        MINIMAL,
        &env(&[
            ("INLET__WORKER__TLS__CERT_FILE", "/run/secrets/worker.crt"),
            ("INLET__WORKER__TLS__KEY_FILE", "/run/secrets/worker.key"),
            ("INLET__WORKER__TLS__RELOAD_INTERVAL", "30s"),
        ]),
    )
    .unwrap();
    let tls = config.worker.tls.unwrap();
    assert_eq!(tls.key_file, PathBuf::from("/run/secrets/worker.key"));
    assert_eq!(tls.reload_interval, Duration::from_secs(30));

    check_invalid(
        &format!("{MINIMAL}[worker.tls]\ncert_file = \"a.crt\"\n"),
        &[],
        "worker.tls",
        "missing field `key_file`",
    );
    check_invalid(
        &format!("{MINIMAL}[ingest.tls]\ncert_file = \"\"\nkey_file = \"a.key\"\n"),
        &[],
        "ingest.tls.cert_file",
        "must not be empty",
    );
    check_invalid(
        &format!("{MINIMAL}[ingest.tls]\ncert_file = \"a.crt\"\nkey_file = \"a.key\"\nreload_interval = \"0s\"\n"),
        &[],
        "ingest.tls.reload_interval",
        "greater than zero",
    );
    check_invalid(
        &format!("{MINIMAL}[ingest.tls]\ncert_file = \"a.crt\"\nkey_file = \"a.key\"\nca_file = \"x\"\n"),
        &[],
        "ingest.tls.ca_file",
        "unknown field",
    );
}

/// `store.url`'s `sslmode` (libpq's five) and `store.ca_file`: the verifying modes need the CA
/// file, the others refuse it, and a bad mode names `store.url` without echoing it.
#[test]
fn postgres_sslmode_and_ca_file_go_together() {
    let store = |url: &str, ca_file: Option<&str>| {
        let ca = ca_file.map(|path| format!("ca_file = \"{path}\"\n")).unwrap_or_default();
        format!("{MINIMAL}[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n{ca}")
    };
    let config =
        Config::parse(&store("postgres://u:pw@db:5432/inlet?sslmode=verify-full", Some("/ca.pem")), &env(&[])).unwrap();
    assert_eq!(config.store.ca_file, Some(PathBuf::from("/ca.pem")));
    let config = Config::parse(
        &store("postgres://u:pw@db/inlet", None),
        &env(&[
            ("INLET__STORE__URL", "postgres://u:pw@db/inlet?sslmode=verify-ca"),
            ("INLET__STORE__CA_FILE", "/ca.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(config.store.ca_file, Some(PathBuf::from("/ca.pem")));
    Config::parse(&store("postgres://u:pw@db/inlet?sslmode=require", None), &env(&[])).unwrap();

    check_invalid(
        &store("postgres://u:secret@db/inlet?sslmode=verify-full", None),
        &[],
        "store.ca_file",
        "is required with sslmode=verify-full",
    );
    check_invalid(
        &store("postgres://u:secret@db/inlet", Some("/ca.pem")),
        &[],
        "store.ca_file",
        "store.url says sslmode=prefer",
    );
    match Config::parse(&store("postgres://u:secret@db/inlet?application_name=x&sslmode=allow", None), &env(&[])) {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "store.url");
            assert!(message.contains("sslmode must be"), "{message}");
            assert!(!message.contains("secret"), "the URL was echoed: {message}");
        }
        other => panic!("expected store.url refused, got {other:?}"),
    }
    check_invalid(
        &format!("{MINIMAL}[store]\nca_file = \"/ca.pem\"\n"),
        &[],
        "store.ca_file",
        "store.backend is \"sqlite\"",
    );

    assert_eq!(
        PgSslMode::split_from_url("postgres://h/db?application_name=a&sslmode=verify-ca&connect_timeout=3").unwrap(),
        (PgSslMode::VerifyCa, "postgres://h/db?application_name=a&connect_timeout=3".to_owned())
    );
    assert_eq!(
        PgSslMode::split_from_url("postgres://h/db?sslmode=disable").unwrap(),
        (PgSslMode::Disable, "postgres://h/db".to_owned())
    );
    assert_eq!(
        PgSslMode::split_from_url("postgres://h/db").unwrap(),
        (PgSslMode::Prefer, "postgres://h/db".to_owned())
    );
}

#[test]
fn nats_takes_one_way_to_authenticate_and_names_the_key_of_any_other() {
    let nats = |keys: &str| format!("{MINIMAL}\n[nats]\nurl = \"tls://nats-1:4222, tls://nats-2:4222\"\n{keys}");
    let config = Config::parse(
        &nats("user = \"inlet-ingest\"\npassword = { env = \"NATS_PASSWORD\" }\n"),
        &env(&[("NATS_PASSWORD", "hunter2")]),
    )
    .unwrap();
    assert!(matches!(config.nats.auth(), NatsAuth::UserPassword("inlet-ingest", p) if p.expose() == "hunter2"));
    assert!(!format!("{config:?}").contains("hunter2"), "Debug redacts the password");
    assert!(config.nats.requires_tls(), "tls:// URLs require TLS");
    // Like every secret: from an INLET__ override too.
    let config = Config::parse(
        &nats("user = \"inlet-worker\"\n"),
        &env(&[("INLET__NATS__PASSWORD", "from-env"), ("INLET__NATS__TLS_CA_FILE", "/etc/inlet/ca.pem")]),
    )
    .unwrap();
    assert!(matches!(config.nats.auth(), NatsAuth::UserPassword(_, p) if p.expose() == "from-env"));
    assert_eq!(config.nats.tls_ca_file.as_deref(), Some(Path::new("/etc/inlet/ca.pem")));
    assert_eq!(Config::parse(MINIMAL, &BTreeMap::new()).unwrap().nats.auth(), NatsAuth::None);
    assert!(!Config::parse(MINIMAL, &BTreeMap::new()).unwrap().nats.requires_tls());

    check_invalid(
        &nats("creds_file = \"a.creds\"\ntoken = \"t\"\n"),
        &[],
        "nats.token",
        "cannot be combined with nats.creds_file",
    );
    check_invalid(
        &nats("nkey_seed_file = \"seed\"\nuser = \"u\"\npassword = \"p\"\n"),
        &[],
        "nats.user",
        "cannot be combined with nats.nkey_seed_file",
    );
    check_invalid(
        &nats("nkey_seed_file = \"seed\"\nnkey_seed = \"SU\"\n"),
        &[],
        "nats.nkey_seed",
        "cannot be combined",
    );
    check_invalid(&nats("user = \"u\"\n"), &[], "nats.password", "required with nats.user");
    check_invalid(&nats("password = \"p\"\n"), &[], "nats.user", "required with nats.password");
    check_invalid(&nats("token = \"\"\n"), &[], "nats.token", "must not be empty");
    check_invalid(
        &nats("tls_cert_file = \"client.pem\"\n"),
        &[],
        "nats.tls_key_file",
        "required with nats.tls_cert_file",
    );
    check_invalid(
        &nats("tls_key_file = \"client.key\"\n"),
        &[],
        "nats.tls_cert_file",
        "required with nats.tls_key_file",
    );
    check_invalid(&nats("tls_verify = true\n"), &[], "nats.tls_verify", "unknown field");
}

#[test]
fn nats_credentials_are_never_echoed_by_an_error() {
    // In the URL they would be logged with it: refused, without repeating them.
    match Config::parse(&format!("{MINIMAL}\n[nats]\nurl = \"nats://a:4222,nats://inlet:hunter2@b:4222\"\n"), &env(&[]))
    {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "nats.url");
            assert!(message.contains("nats.user and nats.password") && !message.contains("hunter2"), "{message}");
        }
        other => panic!("expected nats.url to be refused, got {other:?}"),
    }
    // A secret of the wrong type (an override that looks like a number is read as one) is
    // refused without its value.
    let text = format!("{MINIMAL}\n[nats]\nuser = \"u\"\n");
    match Config::parse(&text, &env(&[("INLET__NATS__PASSWORD", "98765432")])) {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "nats.password");
            assert!(message.contains("must be a string") && !message.contains("98765432"), "{message}");
        }
        other => panic!("expected nats.password to be refused, got {other:?}"),
    }
}

/// Issue #19: traces are off by default; every `[telemetry.traces]` key is checked at startup,
/// the failure naming it, and a header's value (a collector's key) is never echoed.
#[test]
fn traces_are_off_by_default_and_their_keys_are_checked() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    let traces = &config.telemetry.traces;
    assert!(!traces.enabled, "off by default");
    assert_eq!(traces.endpoint, DEFAULT_TRACES_ENDPOINT);
    assert!((traces.sampling_ratio - 1.0).abs() < f64::EPSILON);

    let on = format!(
        "{MINIMAL}[telemetry.traces]\nenabled = true\nendpoint = \"https://collector.example:4318/v1/traces\"\n\
         sampling_ratio = 0.25\nservice_name = \"edge-ingest\"\nexport_timeout = \"3s\"\nbatch_delay = \"200ms\"\n\
         max_queued_spans = 100\n[telemetry.traces.resource_attributes]\n\"deployment.environment.name\" = \"prod\"\n\
         [telemetry.traces.headers]\nx-api-key = {{ env = \"COLLECTOR_KEY\" }}\n"
    );
    let config = Config::parse(&on, &env(&[("COLLECTOR_KEY", "k-123")])).unwrap();
    let traces = &config.telemetry.traces;
    assert!(traces.enabled);
    assert_eq!(traces.service_name.as_deref(), Some("edge-ingest"));
    assert_eq!(traces.headers["x-api-key"].expose(), "k-123");
    assert_eq!(traces.resource_attributes["deployment.environment.name"], "prod");
    assert_eq!(traces.batch_delay, Duration::from_millis(200));
    assert!(!format!("{config:?}").contains("k-123"), "the header value is a secret");

    let section = |body: &str| format!("{MINIMAL}[telemetry.traces]\n{body}\n");
    for (body, key, part) in [
        ("endpoint = \"localhost:4318\"", "telemetry.traces.endpoint", "http:// or https://"),
        ("endpoint = \"grpc://collector:4317\"", "telemetry.traces.endpoint", "http:// or https://"),
        ("endpoint = \"http:///v1/traces\"", "telemetry.traces.endpoint", "http:// or https://"),
        ("sampling_ratio = 1.5", "telemetry.traces.sampling_ratio", "between 0.0 and 1.0"),
        ("sampling_ratio = -0.1", "telemetry.traces.sampling_ratio", "between 0.0 and 1.0"),
        ("sampling_ratio = nan", "telemetry.traces.sampling_ratio", "between 0.0 and 1.0"),
        ("service_name = \" \"", "telemetry.traces.service_name", "must not be empty"),
        ("export_timeout = \"0s\"", "telemetry.traces.export_timeout", "greater than zero"),
        ("batch_delay = \"0s\"", "telemetry.traces.batch_delay", "greater than zero"),
        ("export_timeout = \"soon\"", "telemetry.traces.export_timeout", "whole number"),
        ("max_queued_spans = 0", "telemetry.traces.max_queued_spans", "between 1 and 1000000"),
        ("sampling = 0.5", "telemetry.traces.sampling", "unknown field `sampling`"),
        ("resource_attributes = { \"service.name\" = \"x\" }", "telemetry.traces.resource_attributes", "service_name"),
        ("headers = { \"bad header\" = \"v\" }", "telemetry.traces.headers", "not a header name"),
    ] {
        check_invalid(&section(body), &[], key, part);
    }
    match Config::parse(&section("headers = { x-api-key = \"line\\nbreak-s3cret\" }"), &BTreeMap::new()) {
        Err(ConfigError::Invalid { key, message }) => {
            assert_eq!(key, "telemetry.traces.headers.x-api-key");
            assert!(!message.contains("s3cret"), "{message}");
        }
        other => panic!("expected the header value to be refused, got {other:?}"),
    }
    // A set variable overrides a key, as everywhere else.
    let config = Config::parse(MINIMAL, &env(&[("INLET__TELEMETRY__TRACES__SAMPLING_RATIO", "0.5")])).unwrap();
    assert!((config.telemetry.traces.sampling_ratio - 0.5).abs() < f64::EPSILON);
}

#[test]
fn quarantine_has_defaults_can_be_turned_off_per_source_and_refuses_bad_bounds() {
    let config = Config::parse(MINIMAL, &BTreeMap::new()).unwrap();
    assert!(config.quarantine.enabled);
    assert_eq!(config.quarantine.max_per_source, 1000);
    assert_eq!(config.quarantine.max_age, Duration::from_secs(72 * 3600));
    assert!(config.sources.iter().all(|s| s.quarantine), "on by default per source");
    assert_eq!(config.stream.quarantine_stream_name(), "INLET_QUARANTINE");
    assert_eq!(
        config.stream.quarantine_subject("stripe", QuarantineSlot::First),
        "_INLET.INLET.quarantine.stripe.first"
    );
    let off = MINIMAL.replacen("[[sources]]\n", "[[sources]]\nquarantine = false\n", 1);
    let config = Config::parse(&off, &BTreeMap::new()).unwrap();
    assert!(!config.sources[0].quarantine);
    for (key, value, message) in [
        ("max_per_source", "0", "between 1 and 1000000"),
        ("keep_first", "1001", "between 0 and quarantine.max_per_source"),
        ("max_body_bytes", "70000000", "at most 67108864"),
        ("max_body_bytes", "983041", "at most ingest.claim_check_threshold_bytes (983040)"),
        ("max_bytes", "1000", "at least 1048576"),
        ("max_age", "\"0s\"", "greater than zero"),
        ("queue", "0", "between 1 and 100000"),
    ] {
        check_invalid(&format!("[quarantine]\n{key} = {value}\n{MINIMAL}"), &[], &format!("quarantine.{key}"), message);
    }
}

const GITHUB_SOURCE: &str = "\n[[sources]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"s\"]\n";

#[test]
fn a_backfill_names_its_source_and_takes_only_its_kinds_keys() {
    let stripe = format!("{MINIMAL}\n[[backfill]]\nsource = \"stripe\"\napi_key = {{ env = \"RK\" }}\n");
    let config = Config::parse(&stripe, &env(&[("RK", "rk_test_1")])).unwrap();
    let backfill = &config.backfill[0];
    assert_eq!(backfill.api_key.as_ref().map(Secret::expose), Some("rk_test_1"));
    assert_eq!(backfill.api_base_for(SchemeKind::Stripe), STRIPE_API_BASE);
    assert_eq!((backfill.requests_per_second, backfill.max_pages), (5, 50));
    assert!(!format!("{config:?}").contains("rk_test_1"), "the key is never in Debug output");

    let github = format!(
        "{MINIMAL}{GITHUB_SOURCE}\n[[backfill]]\nsource = \"gh\"\ntoken = \"t\"\norg = \"acme\"\nhook_id = 3\n"
    );
    let config = Config::parse(&github, &BTreeMap::new()).unwrap();
    assert_eq!(config.backfill[0].api_base_for(SchemeKind::Github), GITHUB_API_BASE);

    let backfill =
        |source: &str, keys: &str| format!("{MINIMAL}{GITHUB_SOURCE}\n[[backfill]]\nsource = \"{source}\"\n{keys}\n");
    check_invalid(&backfill("nope", "api_key = \"k\""), &[], "backfill[0].source", "no source named `nope`");
    check_invalid(&backfill("stripe", ""), &[], "backfill[0].api_key", "restricted key");
    check_invalid(
        &backfill("stripe", "api_key = \"k\"\ntoken = \"t\""),
        &[],
        "backfill[0].token",
        "not used by a Stripe",
    );
    check_invalid(&backfill("gh", "token = \"t\"\nhook_id = 1"), &[], "backfill[0].repository", "exactly one");
    check_invalid(
        &backfill("gh", "token = \"t\"\nhook_id = 1\nrepository = \"a/b\"\norg = \"a\""),
        &[],
        "backfill[0].repository",
        "exactly one",
    );
    check_invalid(
        &backfill("gh", "token = \"t\"\nhook_id = 1\nrepository = \"a\""),
        &[],
        "backfill[0].repository",
        "owner/repo",
    );
    check_invalid(&backfill("gh", "token = \"t\"\nrepository = \"a/b\""), &[], "backfill[0].hook_id", "hook's id");
    check_invalid(
        &backfill("gh", "api_key = \"k\"\ntoken = \"t\""),
        &[],
        "backfill[0].api_key",
        "not used by a GitHub",
    );
    let gh = "token = \"t\"\nhook_id = 1\nrepository = \"a/b\"\n";
    check_invalid(
        &backfill("gh", &format!("{gh}api_base = \"http://api.example.com\"")),
        &[],
        "backfill[0].api_base",
        "https://",
    );
    check_invalid(
        &backfill("gh", &format!("{gh}api_base = \"https://api.example.com/\"")),
        &[],
        "backfill[0].api_base",
        "trailing",
    );
    Config::parse(&backfill("gh", &format!("{gh}api_base = \"http://127.0.0.1:9\"")), &BTreeMap::new()).unwrap();
    check_invalid(
        &backfill("gh", &format!("{gh}requests_per_second = 0")),
        &[],
        "backfill[0].requests_per_second",
        "between",
    );
    check_invalid(&backfill("gh", &format!("{gh}max_pages = 1001")), &[], "backfill[0].max_pages", "between");
    check_invalid(
        &format!("{}\n[[backfill]]\nsource = \"gh\"\n{gh}", backfill("gh", gh)),
        &[],
        "backfill[1].source",
        "has a backfill already",
    );
    // A kind without a backfill API.
    let slack = "\n[[sources]]\nname = \"sl\"\nkind = \"slack\"\nsecrets = [\"s\"]\n[[backfill]]\nsource = \"sl\"\n";
    check_invalid(&format!("{MINIMAL}{slack}"), &[], "backfill[0].source", "no API to backfill from");
    // The secret is never echoed.
    let bad = backfill("stripe", "api_key = \"rk_bäd\"");
    let message = Config::parse(&bad, &BTreeMap::new()).unwrap_err().to_string();
    assert!(message.contains("backfill[0].api_key") && !message.contains("rk_b"), "{message}");
}

/// Issue #17: a `github` source takes GitHub's 25 MB payloads unless its own `max_body_bytes`
/// says otherwise; other kinds keep `ingest.max_body_bytes`; the budget and the stream's size
/// are checked against the limit in effect; the claim-check threshold is bounded, naming its key.
#[test]
fn a_github_source_takes_25_mib_by_default_and_the_limits_follow_the_limit_in_effect() {
    let github = "[[sources]]\nname = \"gh\"\nkind = \"github\"\nsecrets = [\"s\"]\n";
    let config = Config::parse(&format!("{MINIMAL}{github}"), &env(&[])).unwrap();
    assert_eq!(config.sources[0].body_limit(&config.ingest), 1_000_000, "stripe: ingest.max_body_bytes");
    assert_eq!(config.sources[1].body_limit(&config.ingest), 26_214_400, "github: its kind's default");
    assert_eq!(config.largest_body_bytes(), 26_214_400);
    assert!(config.uses_claim_check(), "25 MiB is over the default threshold");
    assert_eq!(config.ingest.claim_check_threshold_bytes, 1024 * 1024 - 64 * 1024);

    let capped = Config::parse(&format!("{MINIMAL}{github}max_body_bytes = 4096\n"), &env(&[])).unwrap();
    assert_eq!(capped.sources[1].body_limit(&capped.ingest), 4096, "its own limit wins");
    assert!(capped.uses_claim_check(), "stripe's 1,000,000 bytes are over the threshold too");
    let small = format!("[ingest]\nmax_body_bytes = 4096\n{MINIMAL}{github}max_body_bytes = 4096\n");
    assert!(!Config::parse(&small, &env(&[])).unwrap().uses_claim_check(), "no body over the threshold");
    assert_eq!(Config::parse(MINIMAL, &env(&[])).unwrap().largest_body_bytes(), 1_000_000);

    // What depends on the largest body sees GitHub's default.
    let text = format!("[ingest]\nmax_buffered_body_bytes = 20000000\n{MINIMAL}{github}");
    check_invalid(&text, &[], "ingest.max_buffered_body_bytes", "at least 26214400");
    let text = format!("[stream]\nmax_bytes = 20000000\n{MINIMAL}{github}");
    check_invalid(&text, &[], "stream.max_bytes", "github 26214400");

    for bad in ["0", "67108865"] {
        check_invalid(
            MINIMAL,
            &[("INLET__INGEST__CLAIM_CHECK_THRESHOLD_BYTES", bad)],
            "ingest.claim_check_threshold_bytes",
            "between 1 and 67108864",
        );
    }
}
