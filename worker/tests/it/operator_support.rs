//! Harness for the operator plane: the pipeline with a `[console]` section (on the store backend
//! `INLET_TEST_STORE` names), GraphQL calls, a real OpenID provider (`scripts/e2e/provider.mjs`,
//! oidc-provider on Node) and a small browser-like cookie jar for driving logins over HTTP.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use inlet_shared::config::Config;
use inlet_shared::test_util::TestNats;
use inlet_shared::test_util::tls::SERVER_NAME;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{TestStore, config_text, send_github, wait_ok};

/// The bootstrap admin token every operator pipeline is configured with.
pub const ADMIN_TOKEN: &str = "test-bootstrap-token-0123456789abcdef";
/// The dev provider's client secret in tests.
pub const CLIENT_SECRET: &str = "test-client-secret";

/// Where a browser run keeps its screenshots: `INLET_E2E_SCREENSHOT_DIR` (for a person to look
/// at), else the pipeline's temporary folder.
pub fn screenshot_dir(pipeline: &OperatorPipeline) -> PathBuf {
    std::env::var_os("INLET_E2E_SCREENSHOT_DIR").map_or_else(|| pipeline.dir.path().to_owned(), PathBuf::from)
}

/// Runs `scripts/e2e/{script}` under Node with the arguments `args` adds, within `limit`;
/// asserts it succeeded (its output in the failure) and returns its summary line.
pub async fn run_browser(
    script: &str,
    limit: Duration,
    args: impl FnOnce(&mut tokio::process::Command) -> &mut tokio::process::Command,
) -> String {
    let mut command = tokio::process::Command::new("node");
    command.arg(e2e_script(script)).kill_on_drop(true);
    args(&mut command);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("the browser run {script} finished within {limit:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    eprintln!("{script}: {stdout}");
    stdout
}

/// Path of a file under `scripts/e2e/`, after checking the Node tools are installed.
pub fn e2e_script(name: &str) -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/e2e");
    assert!(
        folder.join("node_modules/oidc-provider").is_dir(),
        "scripts/e2e/node_modules is missing: run scripts/install-test-tools.sh (scripts/test.sh does)"
    );
    folder.join(name)
}

/// A real OpenID provider on loopback, stopped on drop.
pub struct Provider {
    pub issuer: String,
    child: tokio::process::Child,
}

impl Provider {
    /// Starts `provider.mjs` registering exactly `redirect_uri`, with the tamper control on.
    pub async fn start(redirect_uri: &str) -> Provider {
        let mut child = tokio::process::Command::new("node")
            .arg(e2e_script("provider.mjs"))
            .args(["--redirect-uri", redirect_uri, "--client-id", "inlet", "--client-secret", CLIENT_SECRET])
            .arg("--test-controls")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed to run the OpenID provider");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("provider did not start within 30 s")
            .unwrap()
            .expect("provider exited before printing its issuer");
        let started: Value = serde_json::from_str(&line).unwrap();
        // Keep reading: a closed pipe would kill the provider at its next write.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Provider { issuer: started["issuer"].as_str().unwrap().to_owned(), child }
    }

    /// Makes the next ID token carry a wrong `claim` (re-signed with the provider's key).
    pub async fn tamper_next_id_token(&self, claim: &str) {
        let status = reqwest::Client::new()
            .post(format!("{}/__test/tamper?claim={claim}", self.issuer))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// TOML for `Options::tail`: a destination `name` at `url` that no route selects (a replay to a
/// destination is the only way anything reaches it).
pub fn unrouted_destination(name: &str, url: &str) -> String {
    format!(
        "\n[[destinations]]\nname = \"{name}\"\nurl = \"{url}\"\nsigning_secret = \"{}\"\ntimeout = \"5s\"\n",
        crate::support::DESTINATION_SECRET
    )
}

/// nats-server + ingest + worker with the operator plane on.
pub struct OperatorPipeline {
    _nats: TestNats,
    pub dir: tempfile::TempDir,
    /// The worker's store; the tests read its tables with [`TestStore::rows`] and friends.
    pub store: TestStore,
    pub ingest: SocketAddr,
    pub worker: SocketAddr,
    /// The worker's admin listener (`/metrics`, plain HTTP).
    pub worker_admin: SocketAddr,
    /// `console.public_url`: `http://{worker}`, or `https://inlet.test:{port}` with TLS.
    pub public_url: String,
    pub client: reqwest::Client,
    pub provider: Option<Provider>,
    stop: CancellationToken,
    /// The configuration ingest and the worker started with (the worker's, after a restart).
    pub config: Config,
    /// Stops the worker alone ([`OperatorPipeline::restart_worker`]).
    worker_stop: CancellationToken,
    worker_task: Option<tokio::task::JoinHandle<()>>,
}

/// Options of an operator pipeline.
#[derive(Default)]
pub struct Options {
    /// Start a real OpenID provider and configure `[console.oidc]` for it.
    pub oidc: bool,
    /// Extra `[console]` keys.
    pub console_extra: String,
    /// Extra TOML appended at the end (e.g. `[console.github]`).
    pub tail: String,
    /// Extra `[worker]` keys.
    pub worker_extra: String,
    /// Extra keys of the route (`config_text`'s one `[[routes]]` table), e.g. `ordering_key`.
    pub route_extra: String,
    /// Serve the main listener over HTTPS (`[worker.tls]`) with these files; the pipeline's
    /// client then trusts only this CA, and `public_url` is `https://`.
    pub tls: Option<WorkerTls>,
}

/// `[worker.tls]` of an operator pipeline.
pub struct WorkerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA certificate (PEM) the client trusts.
    pub ca_pem: String,
}

impl OperatorPipeline {
    pub async fn start(destinations: &[(&str, String, &str)], options: Options) -> OperatorPipeline {
        let nats = TestNats::start();
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::start_in(dir.path());
        let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let worker = main.local_addr().unwrap();
        let public_url = match &options.tls {
            Some(_) => format!("https://{SERVER_NAME}:{}", worker.port()),
            None => format!("http://{worker}"),
        };
        let provider =
            if options.oidc { Some(Provider::start(&format!("{public_url}/auth/callback")).await) } else { None };
        let mut text = config_text(&nats.url(), &store, destinations).replacen(
            "[worker]\n",
            &format!("[worker]\n{}\n", options.worker_extra),
            1,
        );
        text.push_str(&options.route_extra);
        text.push_str(&format!(
            "\n[console]\npublic_url = \"{public_url}\"\nbootstrap_token = \"{ADMIN_TOKEN}\"\n{}\n\
             [console.access]\nadmins = [\"admin@example.com\"]\noperators = [\"ops@example.com\"]\n\
             allowed_domains = [\"viewers.example\"]\n",
            options.console_extra
        ));
        if let Some(provider) = &provider {
            text.push_str(&format!(
                "[console.oidc]\nissuer = \"{}\"\nclient_id = \"inlet\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
                provider.issuer
            ));
        }
        text.push_str(&options.tail);
        if let Some(tls) = &options.tls {
            text.push_str(&format!(
                "\n[worker.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval = \"100ms\"\n",
                tls.cert_file.display(),
                tls.key_file.display()
            ));
        }
        let config = Config::parse(&text, &BTreeMap::new()).unwrap();

        let stop = CancellationToken::new();
        let ingest = crate::support::start_ingest(config.clone(), &stop).await.public;
        // The worker's main listener was bound above: its address is in the config (redirect URI).
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let worker_admin = admin.local_addr().unwrap();
        let worker_stop = stop.child_token();
        let worker_task =
            crate::support::run_worker(config.clone(), inlet_worker::Listeners { main, admin }, &worker_stop);
        let mut client =
            reqwest::Client::builder().timeout(Duration::from_secs(20)).redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = &options.tls {
            client = client
                .tls_certs_only([reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap()])
                .tls_info(true)
                .resolve(SERVER_NAME, worker);
        }
        let client = client.build().unwrap();
        let pipeline = OperatorPipeline {
            _nats: nats,
            dir,
            store,
            ingest,
            worker,
            worker_admin,
            public_url,
            client,
            provider,
            stop,
            config,
            worker_stop,
            worker_task: Some(worker_task),
        };
        for url in [format!("http://{ingest}/readyz"), pipeline.url("/readyz")] {
            wait_ok(&pipeline.client, &url).await;
        }
        pipeline
    }

    /// Stops the worker, changes its configuration with `edit` and starts it again on the same
    /// address (sessions live in the store, so a browser stays signed in): how a fixed secret
    /// reaches the worker. Ingest keeps running with its configuration.
    pub async fn restart_worker(&mut self, edit: impl FnOnce(&mut Config)) {
        self.worker_stop.cancel();
        if let Some(task) = self.worker_task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("the worker stopped").unwrap();
        }
        edit(&mut self.config);
        let main = TcpListener::bind(self.worker).await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.worker_admin = admin.local_addr().unwrap();
        self.worker_stop = self.stop.child_token();
        self.worker_task = Some(crate::support::run_worker(
            self.config.clone(),
            inlet_worker::Listeners { main, admin },
            &self.worker_stop,
        ));
        wait_ok(&self.client, &self.url("/readyz")).await;
    }

    /// Sends a webhook of source `gh` signed with `secret` (empty: unsigned); returns the status.
    pub async fn send_signed_with(&self, secret: &str, delivery: &str, body: &[u8]) -> u16 {
        crate::support::send_github_signed_with(&self.client, self.ingest, secret, delivery, "push", body)
            .await
            .unwrap()
    }

    /// `path` on the worker's main listener (`console.public_url` + `path`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// Sends a signed GitHub webhook; returns the HTTP status.
    pub async fn send(&self, delivery: &str, event: &str, body: &[u8]) -> u16 {
        send_github(&self.client, self.ingest, delivery, event, body).await
    }

    /// A GraphQL call with a bearer token; returns the whole JSON answer.
    pub async fn gql_as(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(self.url("/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GraphQL over HTTP answers 200");
        response.json().await.unwrap()
    }

    /// As the bootstrap admin; panics on GraphQL errors; returns `data`.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let answer = self.gql_as(ADMIN_TOKEN, query, variables).await;
        assert!(answer.get("errors").is_none(), "GraphQL errors: {answer}");
        answer["data"].clone()
    }

    /// Polls the API until `condition` holds on `query`'s data.
    pub async fn wait_for(
        &self,
        what: &str,
        query: &str,
        variables: Value,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let data = self.gql(query, variables.clone()).await;
            if condition(&data) {
                return data;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: last {data}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OperatorPipeline {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A response as the jar saw it.
pub struct Hop {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// Cookies per `host:port`, sent regardless of path (enough for these flows).
#[derive(Default)]
pub struct Browser {
    jar: HashMap<String, BTreeMap<String, String>>,
    client: Option<reqwest::Client>,
}

impl Browser {
    pub fn new() -> Browser {
        // One connection per request: the provider's Node server resets reused connections
        // after an interaction POST, which a real browser silently retries.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Browser { jar: HashMap::new(), client: Some(client) }
    }

    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).unwrap();
        self.jar.get(&host_key(&url))?.get(name).cloned()
    }

    /// Puts a cookie in the jar as if another site or script had set it (fixation attempts).
    pub fn plant_cookie(&mut self, url: &str, name: &str, value: &str) {
        let url = reqwest::Url::parse(url).unwrap();
        self.jar.entry(host_key(&url)).or_default().insert(name.to_owned(), value.to_owned());
    }

    fn cookie_header(&self, url: &reqwest::Url) -> Option<String> {
        let cookies = self.jar.get(&host_key(url))?;
        (!cookies.is_empty()).then(|| cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    /// One request; remembers cookies (a `Max-Age=0` or empty value deletes).
    pub async fn request(&mut self, method: reqwest::Method, url: &str, form: Option<&[(&str, &str)]>) -> Hop {
        let url = reqwest::Url::parse(url).unwrap();
        let client = self.client.clone().unwrap();
        let mut request = client.request(method, url.clone());
        if let Some(cookies) = self.cookie_header(&url) {
            request = request.header("cookie", cookies);
        }
        if let Some(form) = form {
            let body = form.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
            request = request.header("content-type", "application/x-www-form-urlencoded").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|v| {
            let location = v.to_str().unwrap();
            url.join(location).unwrap().to_string()
        });
        let set_cookies: Vec<String> =
            response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        let jar = self.jar.entry(host_key(&url)).or_default();
        for header in &set_cookies {
            let pair = header.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || header.to_ascii_lowercase().contains("max-age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap_or_default();
        Hop { status, location, set_cookies, body }
    }

    pub async fn get(&mut self, url: &str) -> Hop {
        self.request(reqwest::Method::GET, url, None).await
    }

    /// Starts a login at the worker and signs in at the provider as `email`; returns the
    /// callback URL the provider redirected to (not yet visited).
    pub async fn login_until_callback(&mut self, pipeline: &OperatorPipeline, return_to: &str, email: &str) -> String {
        let start = pipeline.url(&format!("/auth/login?return_to={}", urlencode(return_to)));
        self.login_from_until_callback(pipeline, &start, email).await.0
    }

    /// Like [`Browser::login_until_callback`] from the login URL `start`; also answers the
    /// provider's authorize URL and whether the provider asked who signs in (false: it answered
    /// from its session, and `email` was not used).
    pub async fn login_from_until_callback(
        &mut self,
        pipeline: &OperatorPipeline,
        start: &str,
        email: &str,
    ) -> (String, String, bool) {
        let start = self.get(start).await;
        assert_eq!(start.status, 303, "{}", start.body);
        let authorize = start.location.unwrap();
        let issuer = &pipeline.provider.as_ref().unwrap().issuer;
        assert!(authorize.starts_with(issuer), "{authorize}");
        assert!(authorize.contains("code_challenge_method=S256"), "PKCE S256: {authorize}");
        assert!(authorize.contains("state=") && authorize.contains("nonce="), "{authorize}");
        let to_interaction = self.get(&authorize).await;
        assert_eq!(to_interaction.status, 303, "{}", to_interaction.body);
        let interaction = to_interaction.location.unwrap();
        if interaction.starts_with(&pipeline.url("/auth/callback?")) {
            return (interaction, authorize, false); // already signed in at the provider
        }
        let form = self.get(&interaction).await;
        assert_eq!(form.status, 200, "{}", form.body);
        let submitted =
            self.request(reqwest::Method::POST, &format!("{interaction}/login"), Some(&[("email", email)])).await;
        assert_eq!(submitted.status, 303, "{}", submitted.body);
        let mut resumed = self.get(&submitted.location.unwrap()).await;
        // Another account than the provider's session had: oidc-provider first ends that
        // session through a self-submitting form (a browser's script posts it), then resumes.
        while resumed.status == 200 && resumed.body.contains("/session/end/confirm") {
            let action = between(&resumed.body, "action=\"", "\"");
            let xsrf = between(&resumed.body, "name=\"xsrf\" value=\"", "\"");
            let ended = self.request(reqwest::Method::POST, &action, Some(&[("xsrf", &xsrf), ("logout", "yes")])).await;
            assert_eq!(ended.status, 303, "{}", ended.body);
            resumed = self.get(&ended.location.unwrap()).await;
        }
        assert_eq!(resumed.status, 303, "{}", resumed.body);
        let callback = resumed.location.unwrap();
        assert!(callback.starts_with(&pipeline.url("/auth/callback?")), "{callback}");
        (callback, authorize, true)
    }

    /// A GraphQL call with this browser's cookies and, if given, the CSRF header.
    pub async fn gql(&self, pipeline: &OperatorPipeline, csrf: Option<&str>, query: &str) -> (u16, Value) {
        let url = reqwest::Url::parse(&pipeline.url("/graphql")).unwrap();
        let mut request = self.client.clone().unwrap().post(url.clone()).json(&json!({ "query": query }));
        if let Some(cookies) = self.cookie_header(&url) {
            request = request.header("cookie", cookies);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET /auth/session` with this browser's cookies.
    pub async fn session(&mut self, pipeline: &OperatorPipeline) -> Value {
        let hop = self.get(&pipeline.url("/auth/session")).await;
        serde_json::from_str(&hop.body).unwrap()
    }
}

/// The text between the first `start` in `text` and the `end` after it.
fn between(text: &str, start: &str, end: &str) -> String {
    let from = text.split_once(start).unwrap_or_else(|| panic!("no {start:?} in {text}")).1;
    from.split_once(end).unwrap().0.to_owned()
}

fn host_key(url: &reqwest::Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
