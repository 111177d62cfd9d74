//! Sign-in with GitHub against a local stand-in for github.com and its REST API (OAuth code +
//! PKCE S256, single-use codes, `/user`, `/user/emails`, `/user/orgs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use openidconnect::url::form_urlencoded;
use serde_json::json;

use crate::operator_support::{Browser, OperatorPipeline, Options};
use crate::support::row;

#[derive(Clone)]
struct Account {
    id: u64,
    login: &'static str,
    /// (address, primary, verified)
    emails: Vec<(&'static str, bool, bool)>,
    orgs: Vec<&'static str>,
}

#[derive(Default)]
struct Fake {
    account: Option<Account>,
    /// code -> (challenge, redirect_uri)
    codes: HashMap<String, (String, String)>,
    tokens: HashMap<String, Account>,
    issued: usize,
    /// The `prompt` of each authorization request, in order.
    prompts: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Fake>>;

async fn authorize(State(fake): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    assert_eq!(q["client_id"], "gh-client");
    assert_eq!(q["code_challenge_method"], "S256");
    let mut fake = fake.lock().unwrap();
    fake.issued += 1;
    fake.prompts.push(q.get("prompt").cloned());
    let code = format!("code-{}", fake.issued);
    fake.codes.insert(code.clone(), (q["code_challenge"].clone(), q["redirect_uri"].clone()));
    Redirect::to(&format!("{}?code={code}&state={}", q["redirect_uri"], q["state"])).into_response()
}

async fn token(State(fake): State<Shared>, body: String) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let mut fake = fake.lock().unwrap();
    let valid = form.get("client_secret").is_some_and(|s| s == "gh-secret")
        && match fake.codes.remove(&form["code"]) {
            Some((challenge, redirect_uri)) => {
                use sha2::{Digest, Sha256};
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(form["code_verifier"].as_bytes()));
                computed == challenge && redirect_uri == form["redirect_uri"]
            }
            None => false,
        };
    if !valid {
        return axum::Json(json!({"error": "bad_verification_code"})).into_response();
    }
    let token = format!("gho_{}", fake.issued);
    let account = fake.account.clone().unwrap();
    fake.tokens.insert(token.clone(), account);
    axum::Json(json!({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})).into_response()
}

fn account(fake: &Shared, headers: &HeaderMap) -> Option<Account> {
    let token = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?;
    assert!(headers.get("user-agent").is_some(), "GitHub requires a User-Agent");
    fake.lock().unwrap().tokens.get(token).cloned()
}

async fn user(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    match account(&fake, &headers) {
        Some(a) => axum::Json(json!({"id": a.id, "login": a.login, "name": null})).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn emails(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    match account(&fake, &headers) {
        Some(a) => axum::Json(
            a.emails.iter().map(|(e, p, v)| json!({"email": e, "primary": p, "verified": v})).collect::<Vec<_>>(),
        )
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn orgs(State(fake): State<Shared>, headers: HeaderMap) -> Response {
    match account(&fake, &headers) {
        Some(a) => axum::Json(a.orgs.iter().map(|o| json!({"login": o})).collect::<Vec<_>>()).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn fake_github() -> (SocketAddr, Shared) {
    let fake: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/login/oauth/authorize", get(authorize))
        .route("/login/oauth/access_token", post(token))
        .route("/user", get(user))
        .route("/user/emails", get(emails))
        .route("/user/orgs", get(orgs))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, fake)
}

async fn pipeline(orgs: &str) -> (OperatorPipeline, Shared) {
    let (addr, fake) = fake_github().await;
    let tail = format!(
        "[console.github]\nclient_id = \"gh-client\"\nclient_secret = \"gh-secret\"\nweb_url = \"http://{addr}\"\n\
         api_url = \"http://{addr}\"\nallowed_orgs = [{orgs}]\n"
    );
    (OperatorPipeline::start(&[], Options { tail, ..Options::default() }).await, fake)
}

/// Runs a GitHub sign-in as `account`; returns the worker's answer to the callback.
async fn sign_in(
    pipeline: &OperatorPipeline,
    fake: &Shared,
    browser: &mut Browser,
    who: Account,
) -> crate::operator_support::Hop {
    fake.lock().unwrap().account = Some(who);
    let start = browser.get(&pipeline.url("/auth/github/login?return_to=/console")).await;
    assert_eq!(start.status, 303);
    let authorize = browser.get(&start.location.unwrap()).await;
    assert_eq!(authorize.status, 303);
    browser.get(&authorize.location.unwrap()).await
}

#[tokio::test]
async fn a_github_user_with_a_listed_verified_email_signs_in() {
    let (pipeline, fake) = pipeline("").await;
    let session = Browser::new().session(&pipeline).await;
    assert_eq!(session["logins"][0]["url"], "/auth/github/login");

    let mut browser = Browser::new();
    let octocat = Account {
        id: 583231,
        login: "octocat",
        emails: vec![("octo@old.example", false, true), ("ops@example.com", true, true)],
        orgs: vec![],
    };
    let hop = sign_in(&pipeline, &fake, &mut browser, octocat).await;
    assert_eq!(hop.status, 303, "{}", hop.body);
    assert_eq!(hop.location.as_deref(), Some(pipeline.url("/console").as_str()));
    let session = browser.session(&pipeline).await;
    assert_eq!((session["actor"].as_str(), session["role"].as_str()), (Some("ops@example.com"), Some("operator")));
    let linked = pipeline.store.row("SELECT provider, subject FROM oauth_accounts").await;
    assert_eq!(linked, row(&[Some("github"), Some("583231")]));
    assert!(fake.lock().unwrap().codes.is_empty(), "the code was redeemed once");
}

#[tokio::test]
async fn github_sign_in_refuses_unverified_emails_forged_state_and_outsiders() {
    let (pipeline, fake) = pipeline("\"acme\"").await;
    let unverified = Account { id: 1, login: "u", emails: vec![("admin@example.com", true, false)], orgs: vec![] };
    let hop = sign_in(&pipeline, &fake, &mut Browser::new(), unverified).await;
    assert_eq!(hop.status, 400);
    assert!(hop.body.contains("did not confirm an email address"), "{}", hop.body);

    // A member of an allowed organisation is admitted with the domain role.
    let member = Account { id: 2, login: "m", emails: vec![("m@elsewhere.example", true, true)], orgs: vec!["ACME"] };
    let mut browser = Browser::new();
    let hop = sign_in(&pipeline, &fake, &mut browser, member).await;
    assert_eq!(hop.status, 303);
    assert_eq!(browser.session(&pipeline).await["role"], "viewer");
    let cookie = hop.set_cookies.iter().find(|c| c.starts_with("__Host-inlet_session=")).unwrap();
    assert!(cookie.ends_with("Max-Age=3600"), "membership-only sessions last membership_ttl: {cookie}");

    // Anyone else gets the "not authorised" page.
    let outsider =
        Account { id: 3, login: "o", emails: vec![("o@elsewhere.example", true, true)], orgs: vec!["other"] };
    let hop = sign_in(&pipeline, &fake, &mut Browser::new(), outsider.clone()).await;
    assert_eq!(hop.status, 403);
    assert!(hop.body.contains("Not authorised"));

    // A forged state is refused before the code is redeemed.
    fake.lock().unwrap().account = Some(outsider);
    let mut browser = Browser::new();
    let start = browser.get(&pipeline.url("/auth/github/login")).await;
    let callback = browser.get(&start.location.unwrap()).await.location.unwrap();
    let hop = browser.get(&callback.replace("state=", "state=forged")).await;
    assert_eq!(hop.status, 400);
    assert!(hop.body.contains("state mismatch"));
    assert_eq!(fake.lock().unwrap().codes.len(), 1, "the code was never presented");

    // A GitHub flow cannot be finished at the OIDC callback (and vice versa).
    let mut browser = Browser::new();
    let start = browser.get(&pipeline.url("/auth/github/login")).await;
    let callback = browser.get(&start.location.unwrap()).await.location.unwrap();
    let crossed = callback.replace("/auth/github/callback", "/auth/callback");
    assert_eq!(browser.get(&crossed).await.status, 404, "no OIDC provider configured here");
    let users = pipeline.store.scalar_i64("SELECT count(*) FROM users").await;
    assert_eq!(users, 1, "only the organisation member got an account");
}

/// GitHub signs the browser's account in again without asking unless told `prompt=select_account`
/// (its account picker): the refusal page's "Sign in with another account" tells it.
#[tokio::test]
async fn a_refused_github_account_is_offered_the_account_picker() {
    let (pipeline, fake) = pipeline("").await;
    let outsider = Account { id: 3, login: "o", emails: vec![("o@elsewhere.example", true, true)], orgs: vec![] };
    let hop = sign_in(&pipeline, &fake, &mut Browser::new(), outsider).await;
    assert_eq!(hop.status, 403);
    let href = "/auth/github/login?another_account=true&amp;return_to=%2Fconsole";
    assert!(hop.body.contains(&format!("id=\"another-account\" href=\"{href}\"")), "{}", hop.body);

    let allowed = Account { id: 4, login: "a", emails: vec![("admin@example.com", true, true)], orgs: vec![] };
    fake.lock().unwrap().account = Some(allowed);
    let mut browser = Browser::new();
    let start = browser.get(&pipeline.url(&href.replace("&amp;", "&"))).await;
    assert_eq!(start.status, 303);
    let callback = browser.get(&start.location.unwrap()).await.location.unwrap();
    let hop = browser.get(&callback).await;
    assert_eq!(hop.status, 303, "{}", hop.body);
    assert_eq!(hop.location.as_deref(), Some(pipeline.url("/console").as_str()));
    assert_eq!(browser.session(&pipeline).await["actor"], "admin@example.com");
    assert_eq!(fake.lock().unwrap().prompts, [None, Some("select_account".to_owned())]);
}

#[tokio::test]
async fn a_signed_in_user_links_github_signs_in_with_it_and_cannot_unlink_the_last_method() {
    let (addr, fake) = fake_github().await;
    let tail = format!(
        "[console.github]\nclient_id = \"gh-client\"\nclient_secret = \"gh-secret\"\nweb_url = \"http://{addr}\"\napi_url = \"http://{addr}\"\n"
    );
    let pipeline = OperatorPipeline::start(&[], Options { oidc: true, tail, ..Options::default() }).await;
    let mut browser = Browser::new();
    let callback = browser.login_until_callback(&pipeline, "/console", "admin@example.com").await;
    assert_eq!(browser.get(&callback).await.status, 303);
    let csrf = browser.session(&pipeline).await["csrfToken"].as_str().unwrap().to_owned();

    // Linking is a POST with the CSRF token.
    let url = pipeline.url("/auth/link?provider=github");
    let session_cookie = browser.cookie(&url, "__Host-inlet_session").unwrap();
    let refused = pipeline
        .client
        .post(&url)
        .header("cookie", format!("__Host-inlet_session={session_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let personal =
        Account { id: 77, login: "admin-personal", emails: vec![("me@personal.example", true, true)], orgs: vec![] };
    fake.lock().unwrap().account = Some(personal.clone());
    let started = pipeline
        .client
        .post(&url)
        .header("cookie", format!("__Host-inlet_session={session_cookie}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let login_cookie = started
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-inlet_login="))
        .unwrap();
    let authorize: serde_json::Value = started.json().await.unwrap();
    let callback = browser.get(authorize["url"].as_str().unwrap()).await.location.unwrap();
    let login_value = login_cookie.split(';').next().unwrap().to_owned();
    let done = pipeline
        .client
        .get(&callback)
        .header("cookie", format!("__Host-inlet_session={session_cookie}; {login_value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/console#account");

    let (_, answer) = browser.gql(&pipeline, Some(&csrf), "{ myAccounts { id provider email } }").await;
    let accounts = answer["data"]["myAccounts"].as_array().unwrap().clone();
    assert_eq!(accounts.iter().map(|a| a["provider"].as_str().unwrap()).collect::<Vec<_>>(), ["oidc", "github"]);

    // The linked GitHub account (whose own address is unlisted) signs in as the same user.
    let mut other = Browser::new();
    let hop = sign_in(&pipeline, &fake, &mut other, personal).await;
    assert_eq!(hop.status, 303, "{}", hop.body);
    let session = other.session(&pipeline).await;
    assert_eq!((session["actor"].as_str(), session["role"].as_str()), (Some("admin@example.com"), Some("admin")));

    // Unlink GitHub; the last method stays.
    let unlink = |id: &str| format!("mutation {{ unlinkAccount(id: \"{id}\") {{ provider }} }}");
    let (_, answer) = browser.gql(&pipeline, Some(&csrf), &unlink(accounts[1]["id"].as_str().unwrap())).await;
    assert_eq!(answer["data"]["unlinkAccount"], json!([{"provider": "oidc"}]));
    let (_, answer) = browser.gql(&pipeline, Some(&csrf), &unlink(accounts[0]["id"].as_str().unwrap())).await;
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("last sign-in method"), "{answer}");
    let audit = pipeline.gql("{ auditLog { nodes { action } } }", json!({})).await;
    let actions: Vec<&str> =
        audit["auditLog"]["nodes"].as_array().unwrap().iter().map(|n| n["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["UNLINK_ACCOUNT", "SIGN_IN", "LINK_ACCOUNT", "SIGN_IN"]);
}

#[tokio::test]
async fn with_token_keys_the_organisation_membership_is_rechecked_with_the_sealed_token() {
    let (addr, fake) = fake_github().await;
    let tail = format!(
        "[console.github]\nclient_id = \"gh-client\"\nclient_secret = \"gh-secret\"\nweb_url = \"http://{addr}\"\n\
         api_url = \"http://{addr}\"\nallowed_orgs = [\"acme\"]\nmembership_ttl = \"1ms\"\n"
    );
    let keys = "token_keys = [{ id = \"k1\", key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }]";
    let pipeline =
        OperatorPipeline::start(&[], Options { console_extra: keys.into(), tail, ..Options::default() }).await;
    let member = Account { id: 9, login: "m", emails: vec![("m@elsewhere.example", true, true)], orgs: vec!["acme"] };
    let mut browser = Browser::new();
    let hop = sign_in(&pipeline, &fake, &mut browser, member).await;
    assert_eq!(hop.status, 303);
    let cookie = hop.set_cookies.iter().find(|c| c.starts_with("__Host-inlet_session=")).unwrap();
    assert!(cookie.ends_with("Max-Age=43200"), "a kept token allows the full session: {cookie}");
    let sealed = pipeline.store.scalar("SELECT token_sealed FROM oauth_accounts WHERE subject = '9'").await.unwrap();
    let token = fake.lock().unwrap().tokens.keys().next().unwrap().clone();
    assert!(sealed.starts_with("v1.k1.") && !sealed.contains(&token), "sealed at rest: {sealed}");

    // Due at once (1 ms): each request re-checks with the kept token; still a member.
    assert_eq!(browser.session(&pipeline).await["authenticated"], true);
    assert_eq!(browser.session(&pipeline).await["role"], "viewer");
    // Removed from the organisation: the next request ends the session and drops the token.
    for account in fake.lock().unwrap().tokens.values_mut() {
        account.orgs.clear();
    }
    assert_eq!(browser.session(&pipeline).await["authenticated"], false);
    let sessions = pipeline.store.scalar_i64("SELECT count(*) FROM sessions").await;
    let kept = pipeline.store.scalar("SELECT token_sealed FROM oauth_accounts WHERE subject = '9'").await;
    assert_eq!((sessions, kept), (0, None));
}
