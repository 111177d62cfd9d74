//! The one configuration file both binaries read (`--config PATH`, TOML), with environment
//! overrides.
//!
//! Loading is layered: the file, then `{ env = "NAME" }` references resolved, then `INLET__A__B=v`
//! overrides applied (`__` separates keys, array elements by index: `INLET__SOURCES__0__NAME`),
//! then strict deserialization (`deny_unknown_fields` everywhere) and validation. Every failure
//! names the key it is about. [`Config::parse`] is pure (text and an env map in, config out) so
//! tests exercise exactly what production runs; [`load_file`] is the only function that reads.
//!
//! Secrets are [`Secret`]s: their `Debug` is redacted, so a config can be logged safely.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::{serde_str as duration_str, serde_str_list as duration_list};
use crate::envelope::HeaderPatterns;
use crate::signature::{HmacRecipe, SchemeKind, Verifier};

/// Environment variables starting with this prefix override config keys.
pub const ENV_PREFIX: &str = "INLET__";

/// Why the configuration cannot be used. Always names the key (dotted path) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The path given with `--config`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file is not valid TOML: {0}")]
    Syntax(String),
    /// A key is unknown, missing, has a value of the wrong type, or fails validation.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `sources[1].secrets`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }
}

/// A secret value (webhook signing secret, API key, password). Never printed by `Debug`, and
/// never echoed by a deserialization error (a value of the wrong type is not shown).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret(value.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Secret, E> {
                Ok(Secret(value))
            }
            // serde's own message would quote the value (`invalid type: integer `123456``):
            // an `INLET__…` override that looks like a number is read as one.
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(not_a_string())
            }
        }
        fn not_a_string<E: serde::de::Error>() -> E {
            E::custom(
                "a secret must be a string (the value is not shown); a secret that looks like a number must be \
                 quoted, or given as { env = \"NAME\" }",
            )
        }
        deserializer.deserialize_any(Text)
    }
}

impl Secret {
    /// Wraps a value (tests and programmatic configs).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret's text; call only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach NATS.
    #[serde(default)]
    pub nats: NatsConfig,
    /// The JetStream stream events are published to.
    #[serde(default)]
    pub stream: StreamConfig,
    /// The receiver.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The worker.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Where the worker keeps events, deliveries and the operator plane's state.
    #[serde(default)]
    pub store: StoreConfig,
    /// Logging.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Webhook senders: each is `POST /webhooks/{name}`.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// The user's own HTTP endpoints events are delivered to.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// Which events of which source go to which destinations.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The operator plane served by the worker: GraphQL API, login, console.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Requests that failed verification, kept for diagnosis and admission.
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// Provider APIs the worker may ask for what a source missed during an outage.
    #[serde(default)]
    pub backfill: Vec<BackfillConfig>,
}

/// `[quarantine]`: requests that failed verification are kept in their own JetStream stream
/// (`{stream.name}_QUARANTINE`), which nothing delivers from, so that an admin can see why they
/// failed and admit those that verify once a secret is fixed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Whether ingest keeps failed requests at all (each source can opt out with
    /// `quarantine = false`).
    pub enabled: bool,
    /// Most requests kept per source and slot (the first failures after a verified request, and
    /// the others); the oldest of a slot is evicted for a new one.
    pub max_per_source: i64,
    /// How many failures after a source's last verified request go to its `first` slot, which
    /// later failures (a flood) do not evict.
    pub keep_first: i64,
    /// Bodies larger than this are kept without their body (the diagnosis and headers only,
    /// not admissible).
    pub max_body_bytes: usize,
    /// Most bytes the quarantine stream holds over all sources; the oldest go first.
    pub max_bytes: u64,
    /// How long a request is kept.
    #[serde(with = "duration_str")]
    pub max_age: Duration,
    /// Requests waiting in ingest to be written to the quarantine; a full queue drops (counted),
    /// never slows or fails the 401.
    pub queue: usize,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            enabled: true,
            max_per_source: 1000,
            keep_first: 20,
            // Typical webhooks are far smaller; larger ones keep their diagnosis without the body.
            max_body_bytes: 256 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            max_age: Duration::from_secs(72 * 3600),
            // With max_body_bytes, at most 32 MiB of bodies wait in memory.
            queue: 128,
        }
    }
}

impl QuarantineConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.max_per_source) {
            return Err(ConfigError::invalid("quarantine.max_per_source", "must be between 1 and 1000000"));
        }
        if !(0..=self.max_per_source).contains(&self.keep_first) {
            return Err(ConfigError::invalid(
                "quarantine.keep_first",
                "must be between 0 and quarantine.max_per_source",
            ));
        }
        if self.max_body_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::invalid("quarantine.max_body_bytes", "must be at most 67108864"));
        }
        if self.max_bytes < 1024 * 1024 {
            return Err(ConfigError::invalid("quarantine.max_bytes", "must be at least 1048576"));
        }
        positive("quarantine.max_age", self.max_age)?;
        if !(1..=100_000).contains(&self.queue) {
            return Err(ConfigError::invalid("quarantine.queue", "must be between 1 and 100000"));
        }
        Ok(())
    }
}

/// The two slots of a source in the quarantine stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuarantineSlot {
    /// The first `keep_first` failures after the source's last verified request (per ingest
    /// replica): the start of a real failure burst, which a flood of junk cannot evict.
    First,
    /// Every other failure.
    Rest,
}

impl QuarantineSlot {
    /// Both slots.
    pub const ALL: [QuarantineSlot; 2] = [QuarantineSlot::First, QuarantineSlot::Rest];

    /// Subject token and metric label: `first`, `rest`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineSlot::First => "first",
            QuarantineSlot::Rest => "rest",
        }
    }

    /// The slot named `name`.
    pub fn parse(name: &str) -> Option<QuarantineSlot> {
        QuarantineSlot::ALL.into_iter().find(|slot| slot.as_str() == name)
    }
}

/// What an operator may do. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also replays deliveries.
    Operator,
    /// Also manages API tokens.
    Admin,
}

impl Role {
    /// Stored and displayed label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored label.
    pub fn parse(label: &str) -> Option<Role> {
        match label {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// `[console]`: the worker's operator plane (`/graphql`, `/auth/*`, `/console`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the API and console on `worker.listen`.
    pub enabled: bool,
    /// The URL operators open, e.g. `https://inlet.example.com` (no trailing slash). The OIDC
    /// redirect URI is exactly `{public_url}/auth/callback`. `http://` only on loopback.
    pub public_url: Option<String>,
    /// Lifetime of a console session (absolute; logging in again starts a new one).
    #[serde(with = "duration_str")]
    pub session_ttl: Duration,
    /// An admin API token from the environment, for bootstrapping (create real tokens with it,
    /// then remove it). Sent as `Authorization: Bearer …`.
    pub bootstrap_token: Option<Secret>,
    /// Highest rate, per second, at which a bulk replay re-queues deliveries.
    pub max_replay_rate: u32,
    /// Most deliveries one bulk replay may select.
    pub max_bulk_replay: u32,
    /// No longer used: a replay is one store transaction, with nothing left to repair.
    /// Accepted so existing config files still load.
    #[serde(with = "duration_str")]
    pub replay_repair_interval: Duration,
    /// Keys that encrypt kept provider tokens at rest (AES-256-GCM); the first seals, all
    /// open. Without keys no provider token is kept.
    pub token_keys: Vec<TokenKey>,
    /// Who may sign in, and with which role.
    pub access: AccessConfig,
    /// The OpenID Connect provider operators sign in with.
    pub oidc: Option<OidcConfig>,
    /// Sign-in with GitHub (OAuth 2.0 + the user and emails API).
    pub github: Option<GithubConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            public_url: None,
            session_ttl: Duration::from_secs(12 * 3600),
            bootstrap_token: None,
            max_replay_rate: 50,
            max_bulk_replay: 10_000,
            replay_repair_interval: Duration::from_secs(5),
            token_keys: Vec::new(),
            access: AccessConfig::default(),
            oidc: None,
            github: None,
        }
    }
}

/// One token-encryption key: `{ id = "2026-11", key = { env = "INLET_TOKEN_KEY" } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKey {
    /// Key id stored with each sealed value (`[A-Za-z0-9_-]`, 1-64).
    pub id: String,
    /// Base64 of 32 random bytes (`openssl rand -base64 32`).
    pub key: Secret,
}

/// `[console.access]`: the allowlist. Emails are compared case-insensitively; a user listed
/// nowhere (and in no allowed domain) gets a "not authorised" page, not an account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Emails with the admin role (the first admin comes from here).
    pub admins: Vec<String>,
    /// Emails with the operator role.
    pub operators: Vec<String>,
    /// Emails with the viewer role.
    pub viewers: Vec<String>,
    /// Email domains (`example.com`) whose verified addresses may sign in with `domain_role`.
    pub allowed_domains: Vec<String>,
    /// Role of users admitted by their domain.
    pub domain_role: Role,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            admins: Vec::new(),
            operators: Vec::new(),
            viewers: Vec::new(),
            allowed_domains: Vec::new(),
            domain_role: Role::Viewer,
        }
    }
}

impl AccessConfig {
    /// The role of a verified email address, or `None` when it may not sign in.
    pub fn role_for(&self, email: &str) -> Option<Role> {
        let email = email.trim().to_ascii_lowercase();
        let listed = |list: &[String]| list.iter().any(|e| e.trim().eq_ignore_ascii_case(&email));
        if listed(&self.admins) {
            return Some(Role::Admin);
        }
        if listed(&self.operators) {
            return Some(Role::Operator);
        }
        if listed(&self.viewers) {
            return Some(Role::Viewer);
        }
        let (_, domain) = email.rsplit_once('@')?;
        self.allowed_domains.iter().any(|d| d.trim().eq_ignore_ascii_case(domain)).then_some(self.domain_role)
    }
}

/// `[console.oidc]`: an OpenID Connect provider found by discovery (`{issuer}/.well-known/openid-configuration`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL, exactly as the provider states it. `https://`, or `http://` on loopback only
    /// (a local development provider can never be reached that way in production).
    pub issuer: String,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret (confidential client; use `{ env = "…" }`).
    pub client_secret: Secret,
    /// Label of the sign-in button.
    #[serde(default = "default_oidc_label")]
    pub label: String,
}

/// `[console.github]`: sign-in with GitHub. The account's primary verified email decides the
/// role (`[console.access]`); members of `allowed_orgs` are also admitted with `domain_role`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// OAuth app client id.
    pub client_id: String,
    /// OAuth app client secret (use `{ env = "…" }`).
    pub client_secret: Secret,
    /// GitHub organisations whose members may sign in (asks for the `read:org` scope).
    #[serde(default)]
    pub allowed_orgs: Vec<String>,
    /// Where users authorize (GitHub Enterprise: your server).
    #[serde(default = "default_github_web_url")]
    pub web_url: String,
    /// The REST API base URL.
    #[serde(default = "default_github_api_url")]
    pub api_url: String,
    /// Label of the sign-in button.
    #[serde(default = "default_github_label")]
    pub label: String,
    /// Longest session of a user admitted only through `allowed_orgs`: membership is checked
    /// at sign-in, so leaving the organisation takes effect within this time.
    #[serde(default = "default_membership_ttl", with = "duration_str")]
    pub membership_ttl: Duration,
}

fn default_membership_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_github_web_url() -> String {
    "https://github.com".into()
}
fn default_github_api_url() -> String {
    "https://api.github.com".into()
}
fn default_github_label() -> String {
    "Sign in with GitHub".into()
}

fn default_oidc_label() -> String {
    "Sign in with single sign-on".into()
}

/// Whether `url` is `https://…`, or `http://` to a loopback host.
pub fn is_secure_or_loopback_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost" || host == "::1" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// `[nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated for a cluster.
    pub url: String,
    /// Timeout of one connection attempt.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// How long startup keeps retrying to connect and set up the stream before giving up.
    #[serde(with = "duration_str")]
    pub startup_timeout: Duration,
    /// The server's HTTP monitoring endpoint (`http: …` in nats-server.conf), e.g.
    /// `http://127.0.0.1:8222`. Required with `stream.durability = "fsync"`: ingest reads
    /// `/varz` at startup to check that the server fsyncs before every ack.
    pub monitoring_url: Option<String>,
    /// Authentication, one way at most: a credentials file (user JWT + NKey seed, as
    /// `nsc generate creds` writes it; decentralised JWT auth).
    pub creds_file: Option<PathBuf>,
    /// A file holding an NKey user seed (`SU…`); the server lists its public key (`U…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// An NKey user seed (`SU…`) itself; use `{ env = "…" }`.
    pub nkey_seed: Option<Secret>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password of `user`; use `{ env = "…" }`. Sent to the server at every connect: use TLS
    /// beyond a private network (an NKey or a creds file never sends its secret).
    pub password: Option<Secret>,
    /// An authorization token (`authorization { token: … }` on the server); use `{ env = "…" }`.
    pub token: Option<Secret>,
    /// Refuse to talk to the server without TLS. `tls_ca_file`, `tls_cert_file` and `tls://`
    /// URLs imply it, so a configured certificate is never silently left unused.
    pub tls_required: bool,
    /// PEM file of the CA certificate(s) the server's certificate must chain to; only they are
    /// trusted. Without it, the system's roots are.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (`verify: true` on the server), with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            monitoring_url: None,
            url: "nats://127.0.0.1:4222".into(),
            connect_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(30),
            creds_file: None,
            nkey_seed_file: None,
            nkey_seed: None,
            user: None,
            password: None,
            token: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// How a client authenticates to NATS (`[nats]`): at most one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsAuth<'a> {
    /// No credentials.
    None,
    /// `creds_file`.
    CredsFile(&'a Path),
    /// `nkey_seed_file`.
    NkeySeedFile(&'a Path),
    /// `nkey_seed`.
    NkeySeed(&'a Secret),
    /// `user` and `password`.
    UserPassword(&'a str, &'a Secret),
    /// `token`.
    Token(&'a Secret),
}

impl NatsAuth<'_> {
    /// The keys to check when the server refuses these credentials.
    pub fn keys(&self) -> &'static str {
        match self {
            NatsAuth::None => "",
            NatsAuth::CredsFile(_) => "nats.creds_file",
            NatsAuth::NkeySeedFile(_) => "nats.nkey_seed_file",
            NatsAuth::NkeySeed(_) => "nats.nkey_seed",
            NatsAuth::UserPassword(..) => "nats.user and nats.password",
            NatsAuth::Token(_) => "nats.token",
        }
    }
}

impl NatsConfig {
    /// The one way this client authenticates ([`Config::parse`] refused two at once).
    pub fn auth(&self) -> NatsAuth<'_> {
        if let Some(path) = &self.creds_file {
            NatsAuth::CredsFile(path)
        } else if let Some(path) = &self.nkey_seed_file {
            NatsAuth::NkeySeedFile(path)
        } else if let Some(seed) = &self.nkey_seed {
            NatsAuth::NkeySeed(seed)
        } else if let (Some(user), Some(password)) = (&self.user, &self.password) {
            NatsAuth::UserPassword(user, password)
        } else if let Some(token) = &self.token {
            NatsAuth::Token(token)
        } else {
            NatsAuth::None
        }
    }

    /// Whether the client refuses a connection without TLS: `tls_required`, or implied by a CA
    /// file, a client certificate or a `tls://` URL.
    pub fn requires_tls(&self) -> bool {
        self.tls_required
            || self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.url.split(',').any(|url| url.trim().starts_with("tls://"))
    }

    /// The `[nats]` rules types cannot express; every error names its key. Files are read
    /// later, when connecting (`nats::connect` says which one cannot be used).
    fn validate(&self) -> Result<(), ConfigError> {
        positive("nats.connect_timeout", self.connect_timeout)?;
        positive("nats.startup_timeout", self.startup_timeout)?;
        let urls: Vec<&str> = self.url.split(',').map(str::trim).filter(|url| !url.is_empty()).collect();
        if urls.is_empty() {
            return Err(ConfigError::invalid("nats.url", "no server URL given"));
        }
        for url in urls {
            let authority = url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or_default();
            // The URL is logged and named in errors; credentials in it would be too. Not echoed.
            if authority.contains('@') {
                return Err(ConfigError::invalid(
                    "nats.url",
                    "must not hold credentials (they would be logged): use nats.user and nats.password, \
                     nats.token, nats.nkey_seed_file or nats.creds_file",
                ));
            }
        }
        match (&self.user, &self.password) {
            (Some(_), None) => return Err(ConfigError::invalid("nats.password", "is required with nats.user")),
            (None, Some(_)) => return Err(ConfigError::invalid("nats.user", "is required with nats.password")),
            (Some(user), Some(_)) if user.is_empty() || user.contains(char::is_whitespace) => {
                return Err(ConfigError::invalid("nats.user", "must be a non-empty name without spaces"));
            }
            _ => {}
        }
        let configured: Vec<&str> = [
            (self.creds_file.is_some(), "nats.creds_file"),
            (self.nkey_seed_file.is_some(), "nats.nkey_seed_file"),
            (self.nkey_seed.is_some(), "nats.nkey_seed"),
            (self.user.is_some(), "nats.user"),
            (self.token.is_some(), "nats.token"),
        ]
        .into_iter()
        .filter_map(|(set, key)| set.then_some(key))
        .collect();
        if let [first, second, ..] = configured[..] {
            return Err(ConfigError::invalid(
                second,
                format!(
                    "cannot be combined with {first}: set one way to authenticate (nats.creds_file, \
                     nats.nkey_seed_file, nats.nkey_seed, nats.user + nats.password or nats.token)"
                ),
            ));
        }
        for (secret, key) in
            [(&self.nkey_seed, "nats.nkey_seed"), (&self.password, "nats.password"), (&self.token, "nats.token")]
        {
            if secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => Err(ConfigError::invalid("nats.tls_key_file", "is required with nats.tls_cert_file")),
            (None, Some(_)) => Err(ConfigError::invalid("nats.tls_cert_file", "is required with nats.tls_key_file")),
            _ => Ok(()),
        }
    }
}

/// `[stream]`: created or updated at startup by both binaries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Stream name.
    pub name: String,
    /// Events of source `s` are published to `{subject_prefix}.{s}`.
    pub subject_prefix: String,
    /// Number of replicas (1 for a single server, 3 in the production cluster).
    pub replicas: usize,
    /// JetStream deduplicates `Nats-Msg-Id` within this window. It must be at least twice every
    /// signed-timestamp source's `tolerance`, so that a replay the verifier still accepts is
    /// always recognised as a duplicate. JetStream keeps one entry per message of the window in
    /// memory: a longer window costs memory in proportion to the intake rate.
    #[serde(with = "duration_str")]
    pub duplicate_window: Duration,
    /// Every event stays in the stream for this long after it was published, recorded by the
    /// worker or not (it can be read back and replayed from there); then JetStream removes it.
    /// SQLite keeps its own retention. The stream therefore holds about `max_age` × intake
    /// rate: size the store for it, or bound it with `max_bytes`.
    #[serde(with = "duration_str")]
    pub max_age: Duration,
    /// Most bytes the stream may hold; `None` (the default) is unlimited. When reached,
    /// JetStream refuses new events (discard policy `new`) and ingest answers 503 until space
    /// returns (events age out past `max_age`, or an operator purges): the stream never makes
    /// room by dropping events it already acknowledged.
    pub max_bytes: Option<u64>,
    /// What a 2xx from ingest promises. See [`Durability`].
    pub durability: Durability,
}

/// The largest `ingest.max_buffered_body_bytes` (1 TiB): far beyond any machine, and within
/// what a semaphore of bytes can count.
pub const MAX_BODY_BUDGET: usize = 1 << 40;
/// Default `stream.duplicate_window`: twice the default source `tolerance`.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * DEFAULT_TOLERANCE.as_secs());

/// Default source `tolerance`.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Bytes a stored event may need beyond its body: NATS headers (the server refuses more than
/// 64 KiB of them), the subject, and the file store's record framing.
pub const EVENT_OVERHEAD_BYTES: u64 = 64 * 1024 + 4 * 1024;

/// The most bytes of headers an intake message may have (JetStream stores at most 64 KiB of
/// headers with a message): room left beside a body under the claim-check threshold.
pub const MESSAGE_HEADER_ROOM: usize = 64 * 1024;

/// Default `ingest.claim_check_threshold_bytes`: nats-server's default `max_payload` (1 MiB)
/// less [`MESSAGE_HEADER_ROOM`], so a body under it always fits into one message.
pub const DEFAULT_CLAIM_CHECK_THRESHOLD: usize = 1024 * 1024 - MESSAGE_HEADER_ROOM;

/// The largest body any source may accept (`max_body_bytes`): 64 MiB.
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// GitHub caps its webhook payloads at 25 MB: the default body limit of a `github` source.
pub const GITHUB_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// A source kind's own default body limit, where its provider sends larger bodies than
/// `ingest.max_body_bytes` allows by default (GitHub: 25 MB pushes, and it never retries).
pub fn default_max_body_bytes(kind: SchemeKind) -> Option<usize> {
    match kind {
        SchemeKind::Github => Some(GITHUB_MAX_BODY_BYTES),
        SchemeKind::Stripe | SchemeKind::Standard | SchemeKind::Shopify | SchemeKind::Slack | SchemeKind::Hmac => None,
    }
}

/// How much longer than `stream.max_age` the bodies bucket keeps an object: its message is
/// published after it (within `ingest.publish_timeout`), so the object must outlive the message.
pub const BODIES_MAX_AGE_MARGIN: Duration = Duration::from_secs(3600);

/// When ingest may answer 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After the server stored the message (written to the OS, fsynced on the server's
    /// `sync_interval`): survives a crash of the NATS process, not a power loss of its host.
    #[default]
    Default,
    /// After the message is fsynced: the server must run with `sync_interval: always` (checked at
    /// startup) and the stream allows atomic batches, which ingest uses to share one fsync
    /// between concurrent requests (group commit).
    Fsync,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            durability: Durability::Default,
            name: "INLET".into(),
            subject_prefix: "inlet.events".into(),
            replicas: 1,
            // Twice the default tolerance (5 min): see `validate`.
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: None,
        }
    }
}

impl StreamConfig {
    /// The subject events of `source` are published to.
    pub fn subject_for(&self, source: &str) -> String {
        format!("{}.{source}", self.subject_prefix)
    }
    /// The wildcard subject the stream captures.
    pub fn wildcard_subject(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }
    /// Name of the stream that held delivery tasks before the store scheduled deliveries; the
    /// worker deletes it at startup (its tasks are redundant with the store).
    pub fn deliveries_stream_name(&self) -> String {
        format!("{}_DELIVERIES", self.name)
    }
    /// The object-store bucket of bodies over `ingest.claim_check_threshold_bytes` (its stream
    /// is `OBJ_{bucket}`).
    pub fn bodies_bucket_name(&self) -> String {
        format!("{}_BODIES", self.name)
    }
    /// The stream keeping requests that failed verification.
    pub fn quarantine_stream_name(&self) -> String {
        format!("{}_QUARANTINE", self.name)
    }
    /// The subject of `source`'s requests in `slot` of the quarantine stream (outside the intake
    /// stream's subjects, so nothing delivers from it).
    pub fn quarantine_subject(&self, source: &str, slot: QuarantineSlot) -> String {
        format!("_INLET.{}.quarantine.{source}.{}", self.name, slot.as_str())
    }
    /// Every subject of the quarantine stream.
    pub fn quarantine_wildcard(&self) -> String {
        format!("_INLET.{}.quarantine.>", self.name)
    }
    /// A subject inside the stream that no event is ever published on: events go to
    /// `{subject_prefix}.{source}`, one token after the prefix, and this has two. Ingest's
    /// store probe purges it (a no-op) to learn whether the stream can still write.
    pub fn probe_subject(&self) -> String {
        format!("{}._inlet.probe", self.subject_prefix)
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Public listener (webhooks, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`); keep it off the internet.
    pub admin_listen: SocketAddr,
    /// Default body limit per source, in bytes (a source kind may have its own default:
    /// [`default_max_body_bytes`]).
    pub max_body_bytes: usize,
    /// Bodies larger than this are stored as objects of the bodies bucket (`{stream}_BODIES`,
    /// a claim check) before the event's message, which then names the object instead of
    /// carrying the body; smaller ones travel in the message. A body and up to 64 KiB of headers
    /// must fit in one NATS message (the server's `max_payload`, 1 MiB by default), which
    /// ingest checks at startup.
    pub claim_check_threshold_bytes: usize,
    /// How long a PubAck may take before the request is answered 503.
    #[serde(with = "duration_str")]
    pub publish_timeout: Duration,
    /// How long a client may take to send its first byte, and then the request headers; a
    /// connection that stays silent is closed after it, freeing its `max_connections` slot.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send the body.
    #[serde(with = "duration_str")]
    pub body_read_timeout: Duration,
    /// Maximum open connections; further ones wait in the accept queue.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
    /// Value of `Retry-After` on 503 answers.
    #[serde(with = "duration_str")]
    pub retry_after: Duration,
    /// Requests per source that may fail verification (bad, missing or stale signature), a
    /// token bucket per source; default 10 per second with a burst of 100. Beyond it, further
    /// failing requests get `429` with `Retry-After` instead of 401/400 and are not logged one
    /// by one. Verified requests never consult it, so junk cannot lock out genuine webhooks;
    /// a source's own `rate_limit` counts verified requests only.
    pub failure_rate_limit: RateLimit,
    /// Bytes of request bodies ingest holds in memory at once, over all connections and
    /// streams (HTTP/2 multiplies requests per connection); default 256 MiB. A body reserves
    /// what it holds as it arrives (never its declared length up front); one that finds no room
    /// gets `503` `{"error":"busy"}` with `Retry-After` at once (the rest of it is not read). An
    /// eighth of it (at least 1,000,000 bytes, but never so much that the largest body no
    /// longer fits beside it) is kept for bodies of at most 64 KiB, so that large or stalled
    /// bodies cannot lock genuine webhooks out. Must be at least the largest body limit, so
    /// that every accepted size fits.
    pub max_buffered_body_bytes: usize,
    /// Request headers stored with their name but the value `<redacted>` (stored headers are
    /// shown to every viewer): exact names, `*suffix`, `prefix*` or `*`, case-insensitive.
    /// Setting it replaces the default list ([`crate::envelope::DEFAULT_REDACTED_HEADERS`]).
    pub redact_headers: HeaderPatterns,
    /// `[ingest.tls]`: serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) on `listen`; plain HTTP when
    /// absent. The admin listener stays plain.
    pub tls: Option<TlsConfig>,
}

/// `[ingest.tls]`, `[worker.tls]`: the listener serves HTTPS with this certificate. The files
/// are read at startup (a missing or unusable file stops the process, naming the key) and
/// again whenever their content changes: new connections get the new certificate, open ones
/// keep theirs; a change that cannot be used (a half-written file, a key that does not match)
/// keeps the certificate in use and is logged and counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain: the server's certificate first, then the
    /// intermediates.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often both files are read to notice a new certificate.
    #[serde(default = "default_tls_reload_interval", with = "duration_str")]
    pub reload_interval: Duration,
}

/// Default `reload_interval` of `[ingest.tls]` and `[worker.tls]`.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

fn default_tls_reload_interval() -> Duration {
    DEFAULT_TLS_RELOAD_INTERVAL
}

impl TlsConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (field, path) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::invalid(format!("{key}.{field}"), "must not be empty"));
            }
        }
        positive(&format!("{key}.reload_interval"), self.reload_interval)
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            max_body_bytes: 1_000_000,
            claim_check_threshold_bytes: DEFAULT_CLAIM_CHECK_THRESHOLD,
            publish_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            retry_after: Duration::from_secs(5),
            // A genuine sender rarely fails verification; a burst of 100 covers a secret
            // rotated out of order, 10/s keeps the counters and logs of a flood cheap.
            failure_rate_limit: RateLimit { per_second: 10, burst: Some(100) },
            // 256 bodies at the default 1 MB limit: far above genuine concurrency, far below a
            // process's memory.
            max_buffered_body_bytes: 256 * 1024 * 1024,
            redact_headers: HeaderPatterns::default_redacted(),
            tls: None,
        }
    }
}

/// `[worker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Listener for `/healthz`, `/readyz` and the operator API.
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`).
    pub admin_listen: SocketAddr,
    /// The SQLite database file.
    pub database: PathBuf,
    /// Durable consumer name (recording consumer; delivery consumers derive their names from it).
    pub consumer: String,
    /// Messages fetched (and committed in one SQLite transaction) at a time.
    pub batch_size: usize,
    /// JetStream `ack_wait` of the consumers.
    #[serde(with = "duration_str")]
    pub ack_wait: Duration,
    /// JetStream `max_ack_pending` of the consumers.
    pub max_ack_pending: i64,
    /// How long events (payload and headers) are kept in SQLite before they are pruned (only
    /// events whose deliveries all succeeded; the newest event always stays, so ids are never
    /// reused).
    #[serde(with = "duration_str")]
    pub retention: Duration,
    /// How long shutdown waits for in-flight deliveries.
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
    /// No longer used: deliveries are scheduled in the store, not as JetStream tasks. Accepted
    /// so existing config files still load; the worker warns when it is set.
    pub delivery_subject_prefix: Option<String>,
    /// Deliveries in flight at once per destination.
    pub delivery_concurrency: usize,
    /// SQLite `synchronous` pragma: `full` (default: a commit survives power loss, so acking
    /// JetStream after it is safe) or `normal` (faster; a power loss may undo recent commits).
    pub sqlite_synchronous: SqliteSynchronous,
    /// How often gauges (dead-letter backlog, consumer lag, oldest undelivered) are refreshed.
    #[serde(with = "duration_str")]
    pub stats_interval: Duration,
    /// How long a client of the main listener (API, console, sign-in, health) may take to send
    /// its first byte and then its request headers; also how long a connection may stay open
    /// with no request in flight.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// How long a client of the main listener may take to send a request body (then `408`).
    #[serde(with = "duration_str")]
    pub body_read_timeout: Duration,
    /// Open connections on the main listener at most; further ones wait in the accept queue.
    pub max_connections: usize,
    /// `[worker.tls]`: serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) on `listen`; plain HTTP when
    /// absent. The admin listener stays plain.
    pub tls: Option<TlsConfig>,
    /// OS threads that run routes' `transform` programs (and dry runs), apart from the async
    /// runtime, so a slow program never holds up recording or delivery.
    pub transform_threads: usize,
    /// How long one run of a `transform` program may take before it is stopped (the delivery is
    /// then dead-lettered `transform_failed`).
    #[serde(with = "duration_str")]
    pub transform_timeout: Duration,
}

/// `[store]`: which database the worker keeps its state in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (default: the file `worker.database`, one worker) or `postgres` (`store.url`,
    /// any number of workers).
    pub backend: StoreBackend,
    /// PostgreSQL only: `postgres://user:password@host:port/database` (libpq's keys also work).
    /// `?sslmode=` is libpq's: `disable`, `prefer` (the default), `require`, `verify-ca`,
    /// `verify-full` (see [`PgSslMode`]). Holds a password: use `{ env = "…" }`.
    pub url: Option<Secret>,
    /// PostgreSQL only: PEM file with the CA certificate(s) PostgreSQL's certificate must chain
    /// to; required with `sslmode=verify-ca` or `verify-full`, and used by nothing else.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL only: connections per worker process.
    pub pool_size: usize,
    /// PostgreSQL only: each statement is cancelled after this long (`0s`: the server's or the
    /// role's setting holds, which is what PgBouncer in transaction mode needs).
    #[serde(with = "duration_str")]
    pub statement_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            url: None,
            ca_file: None,
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The worker's database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One SQLite file per worker (`worker.database`).
    #[default]
    Sqlite,
    /// One PostgreSQL database shared by any number of workers (`store.url`).
    Postgres,
}

/// libpq's `sslmode` in `store.url`: whether the PostgreSQL connection is encrypted, and what of
/// the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked (libpq's
    /// default, and Inlet's when the URL names none).
    Prefer,
    /// TLS always; the certificate is not checked (encryption against a passive listener only).
    Require,
    /// TLS, and the certificate must chain to `store.ca_file`.
    VerifyCa,
    /// TLS, the certificate must chain to `store.ca_file` and name the URL's host.
    VerifyFull,
}

impl PgSslMode {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PgSslMode::Disable => "disable",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<PgSslMode> {
        [PgSslMode::Disable, PgSslMode::Prefer, PgSslMode::Require, PgSslMode::VerifyCa, PgSslMode::VerifyFull]
            .into_iter()
            .find(|mode| mode.as_str() == value)
    }

    /// Whether the server's certificate is checked against `store.ca_file`.
    pub fn verifies(self) -> bool {
        matches!(self, PgSslMode::VerifyCa | PgSslMode::VerifyFull)
    }

    /// The `sslmode` of a `postgres://` URL (`prefer` when it names none) and the URL without
    /// it (tokio-postgres knows only `disable`, `prefer` and `require`; the caller sets the mode).
    ///
    /// # Errors
    ///
    /// When `sslmode` has another value (the message does not echo the URL: it may hold a
    /// password).
    pub fn split_from_url(url: &str) -> Result<(PgSslMode, String), String> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((PgSslMode::Prefer, url.to_owned()));
        };
        let mut mode = PgSslMode::Prefer;
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.strip_prefix("sslmode=") {
                Some(value) => {
                    mode = PgSslMode::parse(value).ok_or_else(|| {
                        "sslmode must be disable, prefer, require, verify-ca or verify-full".to_owned()
                    })?;
                }
                None => kept.push(pair),
            }
        }
        Ok((mode, if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }))
    }
}

/// SQLite durability setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// fsync the WAL on every commit.
    #[default]
    Full,
    /// fsync only at checkpoints.
    Normal,
}

impl SqliteSynchronous {
    /// The pragma value.
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9181)),
            database: PathBuf::from("var/inlet.db"),
            consumer: "inlet-worker".into(),
            batch_size: 256,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            retention: Duration::from_secs(30 * 86_400),
            shutdown_grace: Duration::from_secs(30),
            delivery_subject_prefix: None,
            delivery_concurrency: 32,
            sqlite_synchronous: SqliteSynchronous::Full,
            stats_interval: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            tls: None,
            transform_threads: 2,
            transform_timeout: Duration::from_millis(100),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log line format.
    pub log_format: LogFormat,
    /// `tracing` filter directive; `RUST_LOG` overrides it.
    pub log_filter: String,
    /// `[telemetry.traces]`: OpenTelemetry traces exported over OTLP; off by default.
    pub traces: TracesConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { log_format: LogFormat::Text, log_filter: "info".into(), traces: TracesConfig::default() }
    }
}

/// The OTLP/HTTP traces endpoint the OpenTelemetry specification names as the default (a
/// collector on the same host).
pub const DEFAULT_TRACES_ENDPOINT: &str = "http://localhost:4318/v1/traces";

/// `[telemetry.traces]`: one trace per webhook, from the provider's request to the
/// destination's answer, exported over OTLP/HTTP (protobuf) to `endpoint`. Off unless
/// `enabled = true`: then no span is made, no `traceparent` is written or sent, and no exporter
/// runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// Export traces.
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL, path included (`…/v1/traces`): `http://` or
    /// `https://` (HTTPS with the system's roots, through rustls).
    pub endpoint: String,
    /// Share of new traces kept, 0.0 to 1.0, decided where a trace starts (ingest, from its
    /// trace id); the worker keeps what ingest kept (parent-based sampling).
    pub sampling_ratio: f64,
    /// `service.name` of the exported resource; defaults to the binary's name (`inlet-ingest`,
    /// `inlet-worker`).
    pub service_name: Option<String>,
    /// More resource attributes, e.g. `{ "deployment.environment.name" = "production" }`.
    pub resource_attributes: BTreeMap<String, String>,
    /// Headers sent with every export (a collector's API key: use `{ env = "…" }`).
    pub headers: BTreeMap<String, Secret>,
    /// How long one export request may take.
    #[serde(with = "duration_str")]
    pub export_timeout: Duration,
    /// Finished spans wait at most this long before they are sent (in batches of up to 512).
    #[serde(with = "duration_str")]
    pub batch_delay: Duration,
    /// Finished spans held waiting for export at most; beyond it new spans are dropped (a slow
    /// or absent collector never slows webhooks down nor grows memory).
    pub max_queued_spans: usize,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            enabled: false,
            endpoint: DEFAULT_TRACES_ENDPOINT.into(),
            sampling_ratio: 1.0,
            service_name: None,
            resource_attributes: BTreeMap::new(),
            headers: BTreeMap::new(),
            export_timeout: Duration::from_secs(10),
            batch_delay: Duration::from_secs(5),
            max_queued_spans: 2048,
        }
    }
}

impl TracesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        const KEY: &str = "telemetry.traces";
        let endpoint = &self.endpoint;
        let authority = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if !matches!(authority, Some(authority) if !authority.is_empty())
            || endpoint.contains(char::is_whitespace)
            || endpoint.parse::<http::Uri>().is_err()
        {
            return Err(ConfigError::invalid(
                format!("{KEY}.endpoint"),
                "must be an http:// or https:// URL (the OTLP/HTTP traces URL, e.g. http://localhost:4318/v1/traces)",
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::invalid(format!("{KEY}.sampling_ratio"), "must be between 0.0 and 1.0"));
        }
        if let Some(name) = &self.service_name
            && name.trim().is_empty()
        {
            return Err(ConfigError::invalid(format!("{KEY}.service_name"), "must not be empty"));
        }
        for (name, value) in &self.resource_attributes {
            if name.trim().is_empty() || name == "service.name" {
                return Err(ConfigError::invalid(
                    format!("{KEY}.resource_attributes"),
                    format!("`{name}`: keys must be non-empty, and service.name is set by service_name"),
                ));
            }
            if value.is_empty() {
                return Err(ConfigError::invalid(format!("{KEY}.resource_attributes.{name}"), "must not be empty"));
            }
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::invalid(format!("{KEY}.headers"), format!("`{name}` is not a header name")));
            }
            // The value is a secret: the message never echoes it.
            if http::HeaderValue::from_str(value.expose()).is_err() {
                return Err(ConfigError::invalid(
                    format!("{KEY}.headers.{name}"),
                    "is not a valid header value (visible ASCII only)",
                ));
            }
        }
        positive(&format!("{KEY}.export_timeout"), self.export_timeout)?;
        positive(&format!("{KEY}.batch_delay"), self.batch_delay)?;
        if !(1..=1_000_000).contains(&self.max_queued_spans) {
            return Err(ConfigError::invalid(format!("{KEY}.max_queued_spans"), "must be between 1 and 1000000"));
        }
        Ok(())
    }
}

/// `[[backfill]]`: how the worker asks a source's provider for what it could not deliver
/// during an outage (`inlet-worker backfill`, the API's `backfill` mutation). Stripe: its events
/// API with a restricted key (`api_key`). GitHub: a hook's deliveries, with a token (`token`),
/// the hook's `repository` or `org` and its `hook_id`. Other kinds have no such API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// The `[[sources]]` name this backfills; its kind says which API is asked.
    pub source: String,
    /// Stripe: a restricted key (`rk_…`) with read access to events. Secret.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// GitHub: a token allowed to read and redeliver the hook's deliveries. Secret.
    #[serde(default)]
    pub token: Option<Secret>,
    /// GitHub: `owner/repo` of a repository hook (or `org`).
    #[serde(default)]
    pub repository: Option<String>,
    /// GitHub: the organization of an organization hook (or `repository`).
    #[serde(default)]
    pub org: Option<String>,
    /// GitHub: the hook's id.
    #[serde(default)]
    pub hook_id: Option<u64>,
    /// The API's base URL; the provider's public one when absent. `https://`, or `http://` on
    /// loopback only (tests).
    #[serde(default)]
    pub api_base: Option<String>,
    /// Requests per second sent to the provider's API.
    #[serde(default = "default_backfill_rate")]
    pub requests_per_second: u32,
    /// Most pages of the provider's list one run reads.
    #[serde(default = "default_backfill_pages")]
    pub max_pages: u32,
}

fn default_backfill_rate() -> u32 {
    5
}

fn default_backfill_pages() -> u32 {
    50
}

/// Stripe's API, when `api_base` is absent.
pub const STRIPE_API_BASE: &str = "https://api.stripe.com";
/// GitHub's REST API, when `api_base` is absent.
pub const GITHUB_API_BASE: &str = "https://api.github.com";

impl BackfillConfig {
    /// The API base URL: `api_base`, or the provider's public one for `kind`.
    pub fn api_base_for(&self, kind: SchemeKind) -> &str {
        match (&self.api_base, kind) {
            (Some(base), _) => base,
            (None, SchemeKind::Github) => GITHUB_API_BASE,
            (None, _) => STRIPE_API_BASE,
        }
    }

    fn validate(&self, index: usize, sources: &[SourceConfig]) -> Result<(), ConfigError> {
        let key = |field: &str| format!("backfill[{index}].{field}");
        let Some(source) = sources.iter().find(|s| s.name == self.source) else {
            return Err(ConfigError::invalid(key("source"), format!("no source named `{}`", self.source)));
        };
        let refuse = |field: &str, present: bool, kind: &str| {
            if present {
                Err(ConfigError::invalid(key(field), format!("not used by a {kind} backfill")))
            } else {
                Ok(())
            }
        };
        match source.kind {
            SchemeKind::Stripe => {
                if self.api_key.is_none() {
                    return Err(ConfigError::invalid(
                        key("api_key"),
                        "a Stripe backfill needs a restricted key with read access to events",
                    ));
                }
                refuse("token", self.token.is_some(), "Stripe")?;
                refuse("repository", self.repository.is_some(), "Stripe")?;
                refuse("org", self.org.is_some(), "Stripe")?;
                refuse("hook_id", self.hook_id.is_some(), "Stripe")?;
            }
            SchemeKind::Github => {
                refuse("api_key", self.api_key.is_some(), "GitHub")?;
                if self.token.is_none() {
                    return Err(ConfigError::invalid(key("token"), "a GitHub backfill needs a token"));
                }
                if self.hook_id.is_none() {
                    return Err(ConfigError::invalid(key("hook_id"), "a GitHub backfill needs the hook's id"));
                }
                match (&self.repository, &self.org) {
                    (Some(repository), None) => {
                        let parts: Vec<&str> = repository.split('/').collect();
                        if parts.len() != 2 || parts.iter().any(|part| !is_github_name(part)) {
                            return Err(ConfigError::invalid(key("repository"), "must be `owner/repo`"));
                        }
                    }
                    (None, Some(org)) => {
                        if !is_github_name(org) {
                            return Err(ConfigError::invalid(key("org"), "must be an organization's login"));
                        }
                    }
                    _ => {
                        return Err(ConfigError::invalid(
                            key("repository"),
                            "a GitHub backfill needs exactly one of `repository` (a repository hook) and `org` (an organization hook)",
                        ));
                    }
                }
            }
            other => {
                return Err(ConfigError::invalid(
                    key("source"),
                    format!(
                        "source `{}` is of kind {}, which has no API to backfill from (only stripe and github have one)",
                        self.source,
                        other.as_str()
                    ),
                ));
            }
        }
        for (field, secret) in [("api_key", &self.api_key), ("token", &self.token)] {
            // The value is a secret: the message never echoes it.
            if let Some(secret) = secret
                && (secret.expose().is_empty() || !secret.expose().chars().all(|c| c.is_ascii_graphic()))
            {
                return Err(ConfigError::invalid(key(field), "must be one word of visible ASCII (no spaces)"));
            }
        }
        if let Some(base) = &self.api_base
            && (!is_secure_or_loopback_url(base)
                || base.ends_with('/')
                || base.contains(['?', '#', ' '])
                || base.parse::<http::Uri>().is_err())
        {
            return Err(ConfigError::invalid(
                key("api_base"),
                "must be an https:// URL (http:// only on loopback) without a trailing slash, query or fragment",
            ));
        }
        if !(1..=100).contains(&self.requests_per_second) {
            return Err(ConfigError::invalid(key("requests_per_second"), "must be between 1 and 100"));
        }
        if !(1..=1000).contains(&self.max_pages) {
            return Err(ConfigError::invalid(key("max_pages"), "must be between 1 and 1000"));
        }
        Ok(())
    }
}

/// A GitHub login or repository name: `[A-Za-z0-9._-]`, 1–100 characters.
fn is_github_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Bucket size (requests allowed at once); defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The effective burst size.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.per_second)
    }
}

/// `[[sources]]`: one webhook sender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// URL path segment and subject token: `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// The provider's signature recipe.
    pub kind: SchemeKind,
    /// One or more secrets; any may match (rotation). Inline or `{ env = "NAME" }`.
    pub secrets: Vec<Secret>,
    /// Timestamp tolerance, both directions, for kinds that sign a timestamp.
    #[serde(default = "default_tolerance", with = "duration_str")]
    pub tolerance: Duration,
    /// Body limit for this source; defaults to its kind's ([`default_max_body_bytes`]: GitHub
    /// 25 MiB), else `ingest.max_body_bytes`. Use [`SourceConfig::body_limit`].
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Requests per second accepted from this source; unlimited when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The recipe, for `kind = "hmac"` only.
    #[serde(default)]
    pub hmac: Option<HmacRecipe>,
    /// Whether requests of this source that fail verification are kept in the quarantine
    /// (when `quarantine.enabled`).
    #[serde(default = "default_true")]
    pub quarantine: bool,
}

fn default_true() -> bool {
    true
}

fn default_tolerance() -> Duration {
    DEFAULT_TOLERANCE
}

impl SourceConfig {
    /// The body limit in effect: `max_body_bytes`, else the kind's default, else
    /// `ingest.max_body_bytes`.
    pub fn body_limit(&self, ingest: &IngestConfig) -> usize {
        self.max_body_bytes.or_else(|| default_max_body_bytes(self.kind)).unwrap_or(ingest.max_body_bytes)
    }

    /// Builds the signature verifier for this source.
    ///
    /// # Errors
    ///
    /// When a secret cannot be used as a key (e.g. a Standard Webhooks secret that is not base64).
    pub fn verifier(&self) -> Result<Verifier, crate::signature::KeyError> {
        let secrets: Vec<&str> = self.secrets.iter().map(Secret::expose).collect();
        Verifier::new(self.kind, &secrets, self.tolerance, self.hmac.clone())
    }

    /// What this source's signature cannot stop, for ingest to warn about at startup: `None`
    /// when it signs both the event id and a timestamp (a replay verifies only within the
    /// tolerance, and is then a duplicate of the signed id). `duplicate_window` is
    /// `stream.duplicate_window`.
    pub fn replay_warning(&self, duplicate_window: Duration) -> Option<String> {
        let verifier = self.verifier().ok()?;
        let window = crate::duration::format(duplicate_window);
        let name = &self.name;
        let kind = self.kind.as_str();
        let advice = if self.kind == SchemeKind::Hmac { " (sign {id} and {timestamp} in signed_payload)" } else { "" };
        match (verifier.signs_event_id(), verifier.signs_timestamp()) {
            (true, true) => None,
            (false, false) => Some(format!(
                "source `{name}` (kind {kind}): the signature covers neither the event id nor a timestamp{advice}. \
                 Events are deduplicated on the body hash, so a captured request sent again under a new id or \
                 type header is a duplicate within stream.duplicate_window ({window}), but it verifies for ever: \
                 sent again later, it is stored in the stream again (the worker still records it as a duplicate \
                 while it keeps the event, worker.retention). Different events with identical bodies are merged."
            )),
            (false, true) => Some(format!(
                "source `{name}` (kind {kind}): the signature does not cover the event id{advice}. Events are \
                 deduplicated on the body hash, so different events with identical bodies are merged."
            )),
            (true, false) => Some(format!(
                "source `{name}` (kind {kind}): the signature covers no timestamp{advice}. A captured request \
                 verifies for ever: sent again after stream.duplicate_window ({window}), it is stored again."
            )),
        }
    }
}

/// Circuit-breaker settings of a destination.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe is let through.
    #[serde(with = "duration_str")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failure_threshold: 5, cooldown: Duration::from_secs(30) }
    }
}

/// `[[destinations]]`: an HTTP endpoint of the user's own service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique name: `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// `http://` or `https://` URL events are POSTed to.
    pub url: String,
    /// Inlet's own Standard Webhooks secret (`whsec_` + base64) used to sign deliveries.
    pub signing_secret: Secret,
    /// Total time one attempt may take.
    #[serde(default = "default_delivery_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// Time to establish the connection.
    #[serde(default = "default_connect_timeout", with = "duration_str")]
    pub connect_timeout: Duration,
    /// Delays before the 2nd, 3rd, … attempt; attempts = 1 + its length.
    #[serde(default = "default_retry_schedule", with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// Requests per second sent to this destination; unlimited when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Deliveries in flight at once to this destination; defaults to
    /// `worker.delivery_concurrency`. Use 1 for a receiver that must see one request at a time.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// 4xx statuses retried on the schedule like a 5xx (besides 408, 409, 425 and 429), e.g.
    /// `[404]` for a receiver that answers 404 while it deploys. Other 4xx dead-letter at once.
    #[serde(default)]
    pub retry_statuses: Vec<u16>,
    /// Attempts a delivery answered 401 or 403 gets before it is dead-lettered: a receiver whose
    /// secret or clock is briefly out of step recovers within them. 1 dead-letters at once.
    #[serde(default = "default_auth_failure_attempts")]
    pub auth_failure_attempts: u32,
}

fn default_auth_failure_attempts() -> u32 {
    3
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

/// Close to the Standard Webhooks example schedule (5 s, 5 m, 30 m, 2 h, 5 h, 10 h, 10 h).
pub fn default_retry_schedule() -> Vec<Duration> {
    [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000].into_iter().map(Duration::from_secs).collect()
}

impl DestinationConfig {
    /// Total attempts allowed (first try plus one per schedule entry).
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.retry_schedule.len()).unwrap_or(u32::MAX - 1).saturating_add(1)
    }

    /// How long a delivery that follows the retry schedule may stay pending: the schedule's
    /// delays with their jitter at its upper bound (+10 %), plus one `timeout` per attempt.
    /// `worker.retention` must be at least this (a `Retry-After` may lengthen a retry further;
    /// pruning never removes an event with a pending delivery, so that only keeps it longer).
    /// Rounded up to a whole minute, so it reads well in the error that names it.
    pub fn longest_pending(&self) -> Duration {
        let delays = self.retry_schedule.iter().fold(Duration::ZERO, |total, delay| total.saturating_add(*delay));
        let jittered = delays.saturating_add(delays / 10);
        let longest = jittered.saturating_add(self.timeout.saturating_mul(self.max_attempts()));
        Duration::from_secs(longest.as_secs().saturating_add(u64::from(longest.subsec_nanos() > 0)).div_ceil(60) * 60)
    }
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Source name.
    pub source: String,
    /// Event-type patterns: exact (`push`), prefix (`payment_intent.*`) or `*`.
    #[serde(default = "default_event_patterns")]
    pub events: Vec<String>,
    /// Destination names.
    pub destinations: Vec<String>,
    /// A CEL expression over `body`, `headers`, `source` and `type`: the route applies only to
    /// events for which it is `true` (compiled by the worker at startup; docs/routing.md).
    #[serde(default)]
    pub filter: Option<String>,
    /// A jq program run on the body of each delivery this route makes, when it is attempted;
    /// its output is what the destinations get (compiled by the worker at startup).
    #[serde(default)]
    pub transform: Option<String>,
    /// A JSON pointer (RFC 6901, e.g. `/data/object/id`) into the body: deliveries of events
    /// with the same value to the same destination are attempted one at a time, in receipt
    /// order. `None`: unordered.
    #[serde(default)]
    pub ordering_key: Option<String>,
    /// What a dead-lettered delivery does to the later ones of its ordering key.
    #[serde(default)]
    pub ordering_on_dead_letter: OrderingOnDeadLetter,
}

/// Longest `filter` or `transform` program accepted, in bytes: the parsers are recursive and
/// not bounded by themselves, so the text is bounded before any parser sees it.
pub const MAX_PROGRAM_BYTES: usize = 4096;

/// Deepest bracket nesting (`(`, `[`, `{`) accepted in a `filter` or `transform` program.
pub const MAX_PROGRAM_NESTING: usize = 32;

/// Checks a program's size and bracket nesting before it is parsed: `Err` says what is wrong.
/// Brackets inside string literals count too (a bound, not a parse).
pub fn check_program_bounds(program: &str) -> Result<(), String> {
    if program.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if program.len() > MAX_PROGRAM_BYTES {
        return Err(format!("is {} bytes long; at most {MAX_PROGRAM_BYTES} are allowed", program.len()));
    }
    let mut depth = 0usize;
    for (offset, c) in program.char_indices() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_PROGRAM_NESTING {
                    return Err(format!("nests brackets deeper than {MAX_PROGRAM_NESTING} levels (at byte {offset})"));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `routes[].ordering_on_dead_letter`: whether the later deliveries of an ordering key wait for
/// a dead-lettered one (until it is replayed or dismissed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderingOnDeadLetter {
    /// The key moves on to its next delivery.
    #[default]
    Skip,
    /// The key's later deliveries wait until the dead letter is replayed and delivered, or
    /// dismissed.
    Block,
}

/// Longest `routes[].ordering_key` pointer accepted.
pub const MAX_ORDERING_POINTER_BYTES: usize = 256;

/// Why `pointer` is not a usable ordering key: an RFC 6901 JSON pointer to a member below the
/// document's root (`~` only as `~0` or `~1`). The whole document (the empty pointer) is no key.
fn ordering_pointer_problem(pointer: &str) -> Option<&'static str> {
    if !pointer.starts_with('/') {
        return Some("a JSON pointer starting with `/`, e.g. `/data/object/id`");
    }
    if pointer.len() > MAX_ORDERING_POINTER_BYTES {
        return Some("at most 256 bytes");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some("`~` must be written `~0`, and `~1` means `/` (RFC 6901)");
        }
    }
    None
}

fn default_event_patterns() -> Vec<String> {
    vec!["*".into()]
}

/// Does `event_type` match `pattern` (`*`, `prefix.*` or exact)? An event with no type matches
/// only `*`.
pub fn event_type_matches(pattern: &str, event_type: Option<&str>) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some(event_type) = event_type else {
        return false;
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

impl Config {
    /// Parses and validates configuration text with environment `env` (all variables; only
    /// `INLET__*` overrides and `{ env = … }` references are read from it).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the offending key.
    pub fn parse(text: &str, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        apply_env_overrides(&mut root, env)?;
        let mut value = toml::Value::Table(root);
        resolve_env_references(&mut value, "", env)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            // The TOML deserializer appends its own "\nin `key`" context; the key is already named.
            let message = e.into_inner().to_string();
            let message = message.split("\nin `").next().unwrap_or_default().trim_end().to_owned();
            ConfigError::invalid(if path == "." { "(root)".to_owned() } else { path }, message)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The largest stored size of one event ingest may accept: the largest body limit (of
    /// `ingest.max_body_bytes` and every source's own) plus [`EVENT_OVERHEAD_BYTES`].
    pub fn largest_event_bytes(&self) -> u64 {
        u64::try_from(self.largest_body_bytes()).unwrap_or(u64::MAX).saturating_add(EVENT_OVERHEAD_BYTES)
    }

    /// The largest body limit in effect: `ingest.max_body_bytes` and every source's
    /// [`SourceConfig::body_limit`].
    pub fn largest_body_bytes(&self) -> usize {
        self.sources.iter().map(|s| s.body_limit(&self.ingest)).fold(self.ingest.max_body_bytes, usize::max)
    }

    /// Whether some source accepts bodies over `ingest.claim_check_threshold_bytes`, so ingest
    /// stores bodies in the bodies bucket.
    pub fn uses_claim_check(&self) -> bool {
        self.sources.iter().any(|s| s.body_limit(&self.ingest) > self.ingest.claim_check_threshold_bytes)
    }

    /// Checks cross-field rules that types cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        self.nats.validate()?;
        check_token("stream.name", &self.stream.name, |c| c.is_ascii_alphanumeric() || c == '_' || c == '-')?;
        if self.stream.subject_prefix.is_empty()
            || self.stream.subject_prefix.split('.').any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err(ConfigError::invalid(
                "stream.subject_prefix",
                "must be dot-separated non-empty tokens without wildcards",
            ));
        }
        if !(1..=5).contains(&self.stream.replicas) {
            return Err(ConfigError::invalid("stream.replicas", "must be between 1 and 5"));
        }
        positive("stream.duplicate_window", self.stream.duplicate_window)?;
        self.quarantine.validate()?;
        // JetStream refuses a stream whose duplicate window is longer than its max_age.
        if self.stream.duplicate_window > self.stream.max_age {
            return Err(ConfigError::invalid(
                "stream.duplicate_window",
                format!("must not be longer than stream.max_age ({})", crate::duration::format(self.stream.max_age)),
            ));
        }
        if self.stream.durability == Durability::Fsync {
            match self.nats.monitoring_url.as_deref() {
                None => {
                    return Err(ConfigError::invalid(
                        "nats.monitoring_url",
                        "required with stream.durability = \"fsync\" (ingest checks the server's sync_interval through it)",
                    ));
                }
                Some(url) if !url.starts_with("http://") => {
                    return Err(ConfigError::invalid("nats.monitoring_url", "must be an http:// URL"));
                }
                Some(_) => {}
            }
        }
        positive("ingest.publish_timeout", self.ingest.publish_timeout)?;
        positive("ingest.header_read_timeout", self.ingest.header_read_timeout)?;
        positive("ingest.body_read_timeout", self.ingest.body_read_timeout)?;
        if self.ingest.max_body_bytes == 0 || self.ingest.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::invalid("ingest.max_body_bytes", "must be between 1 and 67108864"));
        }
        if self.ingest.claim_check_threshold_bytes == 0 || self.ingest.claim_check_threshold_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::invalid("ingest.claim_check_threshold_bytes", "must be between 1 and 67108864"));
        }
        // A quarantined request is one message of the quarantine stream with its body inline (and
        // admitting it publishes one intake message the same way): a body the claim check would
        // move to the bodies bucket does not fit the server's max_payload.
        if self.quarantine.max_body_bytes > self.ingest.claim_check_threshold_bytes {
            return Err(ConfigError::invalid(
                "quarantine.max_body_bytes",
                format!(
                    "must be at most ingest.claim_check_threshold_bytes ({}): a kept request is one message, \
                     its body inline",
                    self.ingest.claim_check_threshold_bytes
                ),
            ));
        }
        if self.ingest.max_connections == 0 {
            return Err(ConfigError::invalid("ingest.max_connections", "must be at least 1"));
        }
        if let Some(tls) = &self.ingest.tls {
            tls.validate("ingest.tls")?;
        }
        if self.ingest.failure_rate_limit.per_second == 0 || self.ingest.failure_rate_limit.burst() == 0 {
            return Err(ConfigError::invalid("ingest.failure_rate_limit", "per_second and burst must be at least 1"));
        }
        if self.worker.batch_size == 0 || self.worker.batch_size > 10_000 {
            return Err(ConfigError::invalid("worker.batch_size", "must be between 1 and 10000"));
        }
        check_token("worker.consumer", &self.worker.consumer, |c| c.is_ascii_alphanumeric() || c == '_' || c == '-')?;
        positive("worker.ack_wait", self.worker.ack_wait)?;
        if self.worker.delivery_concurrency == 0 || self.worker.delivery_concurrency > 10_000 {
            return Err(ConfigError::invalid("worker.delivery_concurrency", "must be between 1 and 10000"));
        }
        positive("worker.stats_interval", self.worker.stats_interval)?;
        positive("worker.header_read_timeout", self.worker.header_read_timeout)?;
        positive("worker.body_read_timeout", self.worker.body_read_timeout)?;
        if self.worker.max_connections == 0 {
            return Err(ConfigError::invalid("worker.max_connections", "must be at least 1"));
        }
        if let Some(tls) = &self.worker.tls {
            tls.validate("worker.tls")?;
        }
        positive("worker.retention", self.worker.retention)?;
        self.validate_store()?;
        if self.worker.max_ack_pending < 1 {
            return Err(ConfigError::invalid("worker.max_ack_pending", "must be at least 1"));
        }
        if !(1..=64).contains(&self.worker.transform_threads) {
            return Err(ConfigError::invalid("worker.transform_threads", "must be between 1 and 64"));
        }
        if self.worker.transform_timeout.is_zero() || self.worker.transform_timeout > Duration::from_secs(10) {
            return Err(ConfigError::invalid("worker.transform_timeout", "must be more than 0 and at most 10s"));
        }

        self.validate_console()?;
        self.telemetry.traces.validate()?;

        let mut source_names = HashSet::new();
        for (index, source) in self.sources.iter().enumerate() {
            let key = |field: &str| format!("sources[{index}].{field}");
            check_name(&key("name"), &source.name)?;
            if !source_names.insert(source.name.as_str()) {
                return Err(ConfigError::invalid(key("name"), format!("duplicate source name `{}`", source.name)));
            }
            if source.secrets.is_empty() {
                return Err(ConfigError::invalid(key("secrets"), "at least one secret is required"));
            }
            match (source.kind, &source.hmac) {
                (SchemeKind::Hmac, None) => {
                    return Err(ConfigError::invalid(key("hmac"), "kind = \"hmac\" needs an [sources.hmac] recipe"));
                }
                (SchemeKind::Hmac, Some(recipe)) => {
                    recipe.validate().map_err(|message| ConfigError::invalid(key("hmac"), message))?;
                }
                (_, Some(_)) => {
                    return Err(ConfigError::invalid(key("hmac"), "only allowed with kind = \"hmac\""));
                }
                (_, None) => {}
            }
            positive(&key("tolerance"), source.tolerance)?;
            if let Some(limit) = source.max_body_bytes
                && (limit == 0 || limit > MAX_BODY_LIMIT)
            {
                return Err(ConfigError::invalid(key("max_body_bytes"), "must be between 1 and 67108864"));
            }
            if let Some(rate) = source.rate_limit
                && (rate.per_second == 0 || rate.burst() == 0)
            {
                return Err(ConfigError::invalid(key("rate_limit"), "per_second and burst must be at least 1"));
            }
            let verifier = source
                .verifier()
                .map_err(|e| ConfigError::invalid(format!("sources[{index}].secrets[{}]", e.index), e.message))?;
            // A signed timestamp is accepted from `tolerance` before to `tolerance` after it, so a
            // captured request verifies during a span of twice the tolerance; only a duplicate
            // window covering that span makes every replay the verifier accepts a duplicate.
            if verifier.signs_timestamp() && source.tolerance.saturating_mul(2) > self.stream.duplicate_window {
                return Err(ConfigError::invalid(
                    key("tolerance"),
                    format!(
                        "{} is more than half of stream.duplicate_window ({}): a replay accepted within the \
                         tolerance could be stored again; lower the tolerance or set stream.duplicate_window \
                         to at least {}",
                        crate::duration::format(source.tolerance),
                        crate::duration::format(self.stream.duplicate_window),
                        crate::duration::format(source.tolerance.saturating_mul(2)),
                    ),
                ));
            }
        }

        let mut backfilled = HashSet::new();
        for (index, backfill) in self.backfill.iter().enumerate() {
            backfill.validate(index, &self.sources)?;
            if !backfilled.insert(backfill.source.as_str()) {
                return Err(ConfigError::invalid(
                    format!("backfill[{index}].source"),
                    format!("source `{}` has a backfill already", backfill.source),
                ));
            }
        }

        let mut destination_names = HashSet::new();
        for (index, destination) in self.destinations.iter().enumerate() {
            let key = |field: &str| format!("destinations[{index}].{field}");
            check_name(&key("name"), &destination.name)?;
            if !destination_names.insert(destination.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("duplicate destination name `{}`", destination.name),
                ));
            }
            if !(destination.url.starts_with("http://") || destination.url.starts_with("https://"))
                || destination.url.contains(char::is_whitespace)
            {
                return Err(ConfigError::invalid(key("url"), "must be an http:// or https:// URL"));
            }
            Verifier::new(SchemeKind::Standard, &[destination.signing_secret.expose()], Duration::from_secs(300), None)
                .map_err(|e| ConfigError::invalid(key("signing_secret"), e.message))?;
            positive(&key("timeout"), destination.timeout)?;
            positive(&key("connect_timeout"), destination.connect_timeout)?;
            if destination.retry_schedule.len() > 50 {
                return Err(ConfigError::invalid(key("retry_schedule"), "at most 50 retries"));
            }
            if let Some(concurrency) = destination.concurrency
                && (concurrency == 0 || concurrency > 10_000)
            {
                return Err(ConfigError::invalid(key("concurrency"), "must be between 1 and 10000"));
            }
            if destination.breaker.failure_threshold == 0 {
                return Err(ConfigError::invalid(key("breaker.failure_threshold"), "must be at least 1"));
            }
            if let Some(rate) = destination.rate_limit
                && (rate.per_second == 0 || rate.burst() == 0)
            {
                return Err(ConfigError::invalid(key("rate_limit"), "per_second and burst must be at least 1"));
            }
            if let Some(status) = destination.retry_statuses.iter().find(|s| !(400..=499).contains(*s)) {
                return Err(ConfigError::invalid(
                    key("retry_statuses"),
                    format!("{status} is not a 4xx status (5xx and timeouts are always retried)"),
                ));
            }
            if destination.auth_failure_attempts == 0 {
                return Err(ConfigError::invalid(key("auth_failure_attempts"), "must be at least 1"));
            }
            let pending_at_most = destination.longest_pending();
            if self.worker.retention < pending_at_most {
                return Err(ConfigError::invalid(
                    "worker.retention",
                    format!(
                        "{} is shorter than a delivery to destination `{}` may stay pending ({}: its retry_schedule \
                         plus 10 % jitter and one timeout per attempt); set worker.retention to at least that",
                        crate::duration::format(self.worker.retention),
                        destination.name,
                        crate::duration::format(pending_at_most),
                    ),
                ));
            }
        }

        for (index, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{index}].{field}");
            if !source_names.contains(route.source.as_str()) {
                return Err(ConfigError::invalid(key("source"), format!("no source named `{}`", route.source)));
            }
            if route.destinations.is_empty() {
                return Err(ConfigError::invalid(key("destinations"), "at least one destination is required"));
            }
            for name in &route.destinations {
                if !destination_names.contains(name.as_str()) {
                    return Err(ConfigError::invalid(key("destinations"), format!("no destination named `{name}`")));
                }
            }
            if let Some(filter) = &route.filter {
                check_program_bounds(filter).map_err(|message| ConfigError::invalid(key("filter"), message))?;
            }
            if let Some(transform) = &route.transform {
                check_program_bounds(transform).map_err(|message| ConfigError::invalid(key("transform"), message))?;
            }
            if let Some(pointer) = &route.ordering_key
                && let Some(problem) = ordering_pointer_problem(pointer)
            {
                return Err(ConfigError::invalid(key("ordering_key"), format!("`{pointer}`: {problem}")));
            }
            if route.ordering_key.is_none() && route.ordering_on_dead_letter != OrderingOnDeadLetter::Skip {
                return Err(ConfigError::invalid(key("ordering_on_dead_letter"), "only with `ordering_key`"));
            }
            for pattern in &route.events {
                let body = pattern.strip_suffix('*').unwrap_or(pattern);
                if pattern.is_empty() || body.contains('*') {
                    return Err(ConfigError::invalid(
                        key("events"),
                        format!("`{pattern}`: use `*`, `prefix.*` or an exact type"),
                    ));
                }
            }
        }
        self.validate_body_budget()?;
        self.validate_stream_size()
    }

    /// `ingest.max_buffered_body_bytes`, once the body limits it depends on are known to be valid.
    fn validate_store(&self) -> Result<(), ConfigError> {
        match (self.store.backend, &self.store.url) {
            (StoreBackend::Postgres, None) => {
                return Err(ConfigError::invalid(
                    "store.url",
                    "required with store.backend = \"postgres\" (e.g. url = { env = \"INLET_DATABASE_URL\" })",
                ));
            }
            (StoreBackend::Postgres, Some(url))
                if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) =>
            {
                // The value is not echoed: it may hold a password.
                return Err(ConfigError::invalid("store.url", "must be a postgres:// or postgresql:// URL"));
            }
            (StoreBackend::Sqlite, Some(_)) => {
                return Err(ConfigError::invalid(
                    "store.url",
                    "is set but store.backend is \"sqlite\" (set backend = \"postgres\" to use it)",
                ));
            }
            _ => {}
        }
        self.validate_store_tls()?;
        if self.store.pool_size == 0 || self.store.pool_size > 1_000 {
            return Err(ConfigError::invalid("store.pool_size", "must be between 1 and 1000"));
        }
        Ok(())
    }

    /// `store.url`'s `sslmode` against `store.ca_file`.
    fn validate_store_tls(&self) -> Result<(), ConfigError> {
        let ca_file = self.store.ca_file.as_ref();
        if ca_file.is_some_and(|path| path.as_os_str().is_empty()) {
            return Err(ConfigError::invalid("store.ca_file", "must not be empty"));
        }
        let Some(url) = self.store.url.as_ref().filter(|_| self.store.backend == StoreBackend::Postgres) else {
            if ca_file.is_some() {
                return Err(ConfigError::invalid(
                    "store.ca_file",
                    "is set but store.backend is \"sqlite\" (it is the CA of PostgreSQL's certificate)",
                ));
            }
            return Ok(());
        };
        let (mode, _) =
            PgSslMode::split_from_url(url.expose()).map_err(|message| ConfigError::invalid("store.url", message))?;
        match (mode.verifies(), ca_file) {
            (true, None) => Err(ConfigError::invalid(
                "store.ca_file",
                format!(
                    "is required with sslmode={} in store.url: the PEM file of the CA that signed PostgreSQL's \
                     certificate",
                    mode.as_str()
                ),
            )),
            (false, Some(_)) => Err(ConfigError::invalid(
                "store.ca_file",
                format!(
                    "is used only with sslmode=verify-ca or verify-full, and store.url says sslmode={} (add \
                     ?sslmode=verify-full to store.url to check PostgreSQL's certificate)",
                    mode.as_str()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn validate_body_budget(&self) -> Result<(), ConfigError> {
        let largest_body = self.largest_body_bytes();
        // A budget below one body would refuse the largest accepted body (503 busy) for ever.
        if self.ingest.max_buffered_body_bytes < largest_body || self.ingest.max_buffered_body_bytes > MAX_BODY_BUDGET {
            return Err(ConfigError::invalid(
                "ingest.max_buffered_body_bytes",
                format!(
                    "must be at least {largest_body} (the largest body limit: ingest.max_body_bytes and every \
                     sources[].max_body_bytes, or its kind's default: github 26214400) and at most {MAX_BODY_BUDGET}"
                ),
            ));
        }
        Ok(())
    }

    /// `stream.max_bytes`, once the body limits it depends on are known to be valid.
    fn validate_stream_size(&self) -> Result<(), ConfigError> {
        let Some(max_bytes) = self.stream.max_bytes else { return Ok(()) };
        if i64::try_from(max_bytes).is_err() {
            return Err(ConfigError::invalid("stream.max_bytes", format!("must be at most {}", i64::MAX)));
        }
        // JetStream answers an event larger than the whole stream exactly like a full stream
        // (10077 "maximum bytes exceeded", measured on 2.15.1): ingest would answer 503 and the
        // sender would retry an event that can never be stored.
        let needed = self.largest_event_bytes();
        if max_bytes < needed {
            return Err(ConfigError::invalid(
                "stream.max_bytes",
                format!(
                    "must be at least {needed}: the largest body limit (ingest.max_body_bytes and every \
                     sources[].max_body_bytes, or its kind's default: github 26214400) plus {EVENT_OVERHEAD_BYTES} \
                     bytes of headers, so that every \
                     event ingest accepts fits into the empty stream"
                ),
            ));
        }
        Ok(())
    }

    fn validate_console(&self) -> Result<(), ConfigError> {
        let console = &self.console;
        positive("console.session_ttl", console.session_ttl)?;
        positive("console.replay_repair_interval", console.replay_repair_interval)?;
        let mut key_ids = HashSet::new();
        for (index, key) in console.token_keys.iter().enumerate() {
            check_token(&format!("console.token_keys[{index}].id"), &key.id, |c| {
                c.is_ascii_alphanumeric() || c == '_' || c == '-'
            })?;
            if !key_ids.insert(key.id.as_str()) {
                return Err(ConfigError::invalid(format!("console.token_keys[{index}].id"), "duplicate key id"));
            }
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD.decode(key.key.expose().trim());
            if decoded.map(|bytes| bytes.len()) != Ok(32) {
                return Err(ConfigError::invalid(
                    format!("console.token_keys[{index}].key"),
                    "must be base64 of 32 random bytes",
                ));
            }
        }
        if console.max_replay_rate == 0 {
            return Err(ConfigError::invalid("console.max_replay_rate", "must be at least 1"));
        }
        if console.max_bulk_replay == 0 {
            return Err(ConfigError::invalid("console.max_bulk_replay", "must be at least 1"));
        }
        if let Some(url) = &console.public_url
            && (!is_secure_or_loopback_url(url) || url.ends_with('/') || url.contains(['?', '#', ' ']))
        {
            return Err(ConfigError::invalid(
                "console.public_url",
                "must be an https:// URL (http:// only on loopback) without a trailing slash, query or fragment",
            ));
        }
        if let Some(token) = &console.bootstrap_token
            && token.expose().len() < 32
        {
            return Err(ConfigError::invalid("console.bootstrap_token", "must be at least 32 characters"));
        }
        for (list, key) in [
            (&console.access.admins, "console.access.admins"),
            (&console.access.operators, "console.access.operators"),
            (&console.access.viewers, "console.access.viewers"),
        ] {
            if let Some(bad) = list.iter().find(|e| !e.contains('@') || e.trim() != e.as_str()) {
                return Err(ConfigError::invalid(key, format!("`{bad}` is not an email address")));
            }
        }
        if let Some(bad) = console.access.allowed_domains.iter().find(|d| d.is_empty() || d.contains(['@', ' ', '/'])) {
            return Err(ConfigError::invalid("console.access.allowed_domains", format!("`{bad}` is not a domain")));
        }
        if let Some(github) = &console.github {
            for (url, key) in [(&github.web_url, "console.github.web_url"), (&github.api_url, "console.github.api_url")]
            {
                if !is_secure_or_loopback_url(url) || url.ends_with('/') {
                    return Err(ConfigError::invalid(
                        key,
                        "must be an https:// URL (http:// only on loopback) without a trailing slash",
                    ));
                }
            }
            positive("console.github.membership_ttl", github.membership_ttl)?;
            if github.client_id.is_empty() {
                return Err(ConfigError::invalid("console.github.client_id", "must not be empty"));
            }
            if console.public_url.is_none() {
                return Err(ConfigError::invalid(
                    "console.public_url",
                    "is required with [console.github] (the redirect URI is {public_url}/auth/github/callback)",
                ));
            }
        }
        if let Some(oidc) = &console.oidc {
            if !is_secure_or_loopback_url(&oidc.issuer) {
                return Err(ConfigError::invalid(
                    "console.oidc.issuer",
                    "must be an https:// URL (http:// only for a development provider on loopback)",
                ));
            }
            if oidc.client_id.is_empty() {
                return Err(ConfigError::invalid("console.oidc.client_id", "must not be empty"));
            }
            if console.public_url.is_none() {
                return Err(ConfigError::invalid(
                    "console.public_url",
                    "is required with [console.oidc] (the redirect URI is {public_url}/auth/callback)",
                ));
            }
        }
        Ok(())
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Reads and parses the file at `path` with the process environment.
///
/// # Errors
///
/// [`ConfigError`] when the file cannot be read or is invalid.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    Config::parse(&text, &env)
}

fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(())
}

fn check_token(key: &str, value: &str, allowed: impl Fn(char) -> bool) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 64 || !value.chars().all(allowed) {
        return Err(ConfigError::invalid(key, format!("`{value}` must be 1-64 characters of [A-Za-z0-9_-]")));
    }
    Ok(())
}

fn check_name(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty()
        || value.len() > 64
        || !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(ConfigError::invalid(key, format!("`{value}` must be 1-64 characters of [a-z0-9_-]")));
    }
    Ok(())
}

/// Applies `INLET__A__B=value` variables. A value replacing a string stays a string (so a
/// numeric-looking secret is not turned into a number); otherwise it is read as a TOML value,
/// falling back to a string.
fn apply_env_overrides(root: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(name.clone(), "empty key segment in environment override"));
        }
        let dotted = segments.join(".");
        set_path(root, &segments, raw)
            .map_err(|message| ConfigError::invalid(dotted, format!("from {name}: {message}")))?;
    }
    Ok(())
}

fn parse_override(raw: &str, existing: Option<&toml::Value>) -> toml::Value {
    if matches!(existing, Some(toml::Value::String(_))) {
        return toml::Value::String(raw.to_owned());
    }
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, segments: &[String], raw: &str) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        return Err("empty key".into());
    };
    if rest.is_empty() {
        let value = parse_override(raw, table.get(first));
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(entry, rest, raw)
}

fn set_in_value(value: &mut toml::Value, segments: &[String], raw: &str) -> Result<(), String> {
    match value {
        toml::Value::Table(table) => set_path(table, segments, raw),
        toml::Value::Array(items) => {
            let Some((first, rest)) = segments.split_first() else {
                return Err("empty key".into());
            };
            let index: usize = first.parse().map_err(|_| format!("`{first}` is not an array index"))?;
            let item = items.get_mut(index).ok_or_else(|| format!("array has no element {index}"))?;
            if rest.is_empty() {
                *item = parse_override(raw, Some(item));
                Ok(())
            } else {
                set_in_value(item, rest, raw)
            }
        }
        _ => Err("cannot set a key inside a plain value".into()),
    }
}

/// Replaces every `{ env = "NAME" }` table by the value of that environment variable.
fn resolve_env_references(
    value: &mut toml::Value,
    path: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::Table(table) => {
            if table.len() == 1
                && let Some(toml::Value::String(var)) = table.get("env")
            {
                let resolved = env
                    .get(var)
                    .ok_or_else(|| ConfigError::invalid(path, format!("environment variable {var} is not set")))?;
                *value = toml::Value::String(resolved.clone());
                return Ok(());
            }
            for (key, child) in table.iter_mut() {
                let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                resolve_env_references(child, &child_path, env)?;
            }
            Ok(())
        }
        toml::Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                resolve_env_references(child, &format!("{path}[{index}]"), env)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;
