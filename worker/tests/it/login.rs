//! Console sign-in against a real OpenID provider (oidc-provider on loopback): the happy path
//! with the session cookie's attributes, CSRF, logout; and every way a callback can be wrong.

use futures::StreamExt as _;
use serde_json::json;

use crate::operator_support::{Browser, OperatorPipeline, Options};
use crate::support::sql_text;

async fn pipeline() -> OperatorPipeline {
    OperatorPipeline::start(&[], Options { oidc: true, ..Options::default() }).await
}

#[tokio::test]
async fn an_allowlisted_user_signs_in_uses_the_api_with_csrf_and_logs_out() {
    let pipeline = pipeline().await;
    let mut browser = Browser::new();
    let callback = browser.login_until_callback(&pipeline, "/console#dead-letters", "admin@example.com").await;
    assert!(callback.contains("iss="), "RFC 9207 iss in the authorization response");

    let landed = browser.get(&callback).await;
    assert_eq!(landed.status, 303, "{}", landed.body);
    assert_eq!(landed.location.as_deref(), Some(pipeline.url("/console#dead-letters").as_str()));
    let session_cookie = landed.set_cookies.iter().find(|c| c.starts_with("__Host-inlet_session=")).unwrap();
    let attributes: Vec<&str> = session_cookie.split("; ").skip(1).collect();
    assert_eq!(attributes, ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=43200"]);
    assert!(landed.set_cookies.iter().any(|c| c.starts_with("__Host-inlet_login=;") && c.ends_with("Max-Age=0")));

    let session = browser.session(&pipeline).await;
    assert_eq!(session["authenticated"], true);
    assert_eq!(session["actor"], "admin@example.com");
    assert_eq!(session["role"], "admin");
    let csrf = session["csrfToken"].as_str().unwrap().to_owned();
    assert!(!session.to_string().contains("eyJ"), "no token of the provider reaches the browser");

    // Cookie-authenticated POSTs need the CSRF token.
    let (status, _) = browser.gql(&pipeline, None, "{ me { actor } }").await;
    assert_eq!(status, 403);
    let (status, _) = browser.gql(&pipeline, Some("wrong"), "{ me { actor } }").await;
    assert_eq!(status, 403);
    let (status, answer) = browser.gql(&pipeline, Some(&csrf), "{ me { actor role } }").await;
    assert_eq!(status, 200);
    assert_eq!(answer["data"]["me"], json!({"actor": "admin@example.com", "role": "ADMIN"}));

    let users = pipeline
        .store
        .scalar_i64("SELECT count(*) FROM users WHERE email = 'admin@example.com' AND role = 'admin'")
        .await;
    let accounts = pipeline.store.scalar_i64("SELECT count(*) FROM oauth_accounts WHERE provider = 'oidc'").await;
    assert_eq!((users, accounts), (1, 1), "an Inlet user linked to the provider account");

    // Logout needs the CSRF token too, and invalidates the session server-side.
    let old_cookie = browser.cookie(&pipeline.url("/"), "__Host-inlet_session").unwrap();
    let refused = pipeline
        .client
        .post(pipeline.url("/auth/logout"))
        .header("cookie", format!("__Host-inlet_session={old_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let logout = pipeline
        .client
        .post(pipeline.url("/auth/logout"))
        .header("cookie", format!("__Host-inlet_session={old_cookie}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let replayed = pipeline
        .client
        .post(pipeline.url("/graphql"))
        .header("cookie", format!("__Host-inlet_session={old_cookie}"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"query": "{ me { actor } }"}))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(answer["data"]["me"], serde_json::Value::Null, "the old cookie is worthless after logout");
}

#[tokio::test]
async fn a_callback_with_the_wrong_state_is_rejected_and_the_login_is_used_up() {
    let pipeline = pipeline().await;
    let mut browser = Browser::new();
    let callback = browser.login_until_callback(&pipeline, "/console", "admin@example.com").await;
    let forged = callback.replace("state=", "state=x");
    let hop = browser.get(&forged).await;
    assert_eq!(hop.status, 400);
    assert!(hop.body.contains("state mismatch"), "{}", hop.body);
    assert!(!hop.set_cookies.iter().any(|c| c.starts_with("__Host-inlet_session=")));
    // The real callback now finds no login in progress: state, nonce and verifier were single-use.
    let hop = browser.get(&callback).await;
    assert_eq!(hop.status, 400);
    assert!(hop.body.contains("no sign-in in progress"), "{}", hop.body);
    // A response naming another issuer (RFC 9207 mix-up defence) is refused.
    let mut browser = Browser::new();
    let callback = browser.login_until_callback(&pipeline, "/console", "admin@example.com").await;
    let (before, iss) = callback.split_once("iss=").unwrap();
    let rest = iss.split_once('&').map_or(String::new(), |(_, rest)| format!("&{rest}"));
    let hop = browser.get(&format!("{before}iss=https%3A%2F%2Fevil.example{rest}")).await;
    assert_eq!(hop.status, 400);
    assert!(hop.body.contains("unexpected issuer"), "{}", hop.body);
    // A callback without the browser's login cookie is refused as well.
    let mut other = Browser::new();
    assert_eq!(other.get(&callback).await.status, 400);
}

#[tokio::test]
async fn a_reused_authorization_code_does_not_create_a_session() {
    let pipeline = pipeline().await;
    let mut browser = Browser::new();
    let first = browser.login_until_callback(&pipeline, "/console", "admin@example.com").await;
    assert_eq!(browser.get(&first).await.status, 303);
    // A second login in the same browser; its callback carries the old code with the new state.
    let second = browser.login_until_callback(&pipeline, "/console", "admin@example.com").await;
    let old_code = first.split("code=").nth(1).unwrap().split('&').next().unwrap();
    let new_code = second.split("code=").nth(1).unwrap().split('&').next().unwrap();
    let swapped = second.replace(new_code, old_code);
    let hop = browser.get(&swapped).await;
    assert_eq!(hop.status, 400, "{}", hop.body);
    assert!(hop.body.contains("did not accept the authorization code"), "{}", hop.body);
    assert!(!hop.set_cookies.iter().any(|c| c.starts_with("__Host-inlet_session=")));
}

#[tokio::test]
async fn id_tokens_with_a_wrong_audience_nonce_or_issuer_are_rejected() {
    let pipeline = pipeline().await;
    for claim in ["aud", "nonce", "iss"] {
        let mut browser = Browser::new();
        let callback = browser.login_until_callback(&pipeline, "/console", "admin@example.com").await;
        pipeline.provider.as_ref().unwrap().tamper_next_id_token(claim).await;
        let hop = browser.get(&callback).await;
        assert_eq!(hop.status, 400, "{claim}: {}", hop.body);
        assert!(hop.body.contains("identity token could not be verified"), "{claim}: {}", hop.body);
        assert!(!hop.set_cookies.iter().any(|c| c.starts_with("__Host-inlet_session=")), "{claim}");
    }
    assert_eq!(pipeline.store.scalar_i64("SELECT count(*) FROM sessions").await, 0);
}

#[tokio::test]
async fn an_unlisted_user_gets_a_not_authorised_page_and_no_account() {
    let pipeline = pipeline().await;
    let mut browser = Browser::new();
    let callback = browser.login_until_callback(&pipeline, "/console", "stranger@elsewhere.example").await;
    let hop = browser.get(&callback).await;
    assert_eq!(hop.status, 403);
    assert!(hop.body.contains("Not authorised"), "{}", hop.body);
    assert!(!hop.set_cookies.iter().any(|c| c.starts_with("__Host-inlet_session=")));
    let users = pipeline.store.scalar_i64("SELECT count(*) FROM users").await;
    assert_eq!(users, 0, "no account for an unlisted address");

    // An address in an allowed domain signs in with the domain's role.
    let mut browser = Browser::new();
    let callback = browser.login_until_callback(&pipeline, "/console", "someone@viewers.example").await;
    assert_eq!(browser.get(&callback).await.status, 303);
    let session = browser.session(&pipeline).await;
    assert_eq!(session["role"], "viewer");
    let csrf = session["csrfToken"].as_str().unwrap().to_owned();
    let (_, answer) =
        browser.gql(&pipeline, Some(&csrf), "mutation { replayDelivery(id: \"dlv_x\") { result } }").await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "FORBIDDEN", "viewers cannot replay");
}

/// The provider keeps its own session: after a refusal, signing in again plainly gets the same
/// refused account without being asked. The refusal page's "Sign in with another account" makes
/// the provider ask (`prompt=login`: oidc-provider has no account chooser to offer), and the
/// person signs in as an allowed account, back where the login started. No state or PKCE is
/// skipped on that path, and its `return_to` stays on the site.
#[tokio::test]
async fn a_refused_account_signs_in_as_another_through_the_refusal_page() {
    let pipeline = pipeline().await;
    let mut browser = Browser::new();
    let start = pipeline.url("/auth/login?return_to=%2Fconsole%23audit");
    let (callback, authorize, asked) =
        browser.login_from_until_callback(&pipeline, &start, "stranger@elsewhere.example").await;
    assert!(asked && !authorize.contains("prompt="), "a plain login sends no prompt: {authorize}");
    let refused = browser.get(&callback).await;
    assert_eq!(refused.status, 403);
    let link = "href=\"/auth/login?another_account=true&amp;return_to=%2Fconsole%23audit\"";
    assert!(
        refused.body.contains(&format!("<a id=\"another-account\" {link}>Sign in with another account</a>")),
        "{}",
        refused.body
    );

    // What went wrong before: the plain login again is answered from the provider's session.
    let (callback, _, asked) = browser.login_from_until_callback(&pipeline, &start, "admin@example.com").await;
    assert!(!asked, "the provider signed the same account in again without asking");
    assert_eq!(browser.get(&callback).await.status, 403);

    let another = pipeline.url("/auth/login?another_account=true&return_to=%2Fconsole%23audit");
    let (callback, authorize, asked) =
        browser.login_from_until_callback(&pipeline, &another, "admin@example.com").await;
    assert!(authorize.contains("prompt=login"), "{authorize}");
    assert!(asked, "the provider asked who signs in");
    let landed = browser.get(&callback).await;
    assert_eq!(landed.status, 303, "{}", landed.body);
    assert_eq!(landed.location.as_deref(), Some(pipeline.url("/console#audit").as_str()));
    assert_eq!(browser.session(&pipeline).await["actor"], "admin@example.com");
    assert_eq!(pipeline.store.scalar_i64("SELECT count(*) FROM users").await, 1, "no account for the refused one");

    // The switch is offered where the console asks for sign-in choices, and an outside
    // return_to still ends on the console.
    let logins = browser.session(&pipeline).await["logins"].clone();
    assert_eq!(logins[0]["anotherUrl"], "/auth/login?another_account=true");
    let hostile = pipeline.url("/auth/login?another_account=true&return_to=%2F%2Fevil.example");
    let (callback, _, asked) = browser.login_from_until_callback(&pipeline, &hostile, "ops@example.com").await;
    assert!(asked);
    let landed = browser.get(&callback).await;
    assert_eq!(landed.location.as_deref(), Some(pipeline.url("/console").as_str()));
    assert_eq!(browser.session(&pipeline).await["actor"], "ops@example.com");
}

#[tokio::test]
async fn return_to_never_leaves_the_site() {
    let pipeline = pipeline().await;
    for hostile in ["https://evil.example/", "//evil.example/x", "/\\evil.example"] {
        let mut browser = Browser::new();
        let callback = browser.login_until_callback(&pipeline, hostile, "admin@example.com").await;
        let hop = browser.get(&callback).await;
        assert_eq!(hop.status, 303);
        assert_eq!(hop.location.as_deref(), Some(pipeline.url("/console").as_str()), "{hostile}");
    }
}

/// Starting a sign-in costs the server no state: the login in progress travels sealed in its
/// cookie. A thousand anonymous `GET /auth/login` commit nothing to the database (see
/// [`crate::support::TestStore::watch_writes`]) and add no row, and each answer carries a
/// `__Host-` login cookie that the browser cannot read into.
#[tokio::test]
async fn anonymous_login_starts_write_nothing_to_the_database() {
    let pipeline = pipeline().await;
    let store = &pipeline.store;
    let tables = store.tables().await;
    assert!(tables.iter().any(|t| t == "sessions"), "the worker's tables: {tables:?}");
    assert!(!tables.iter().any(|t| t == "login_flows"), "no table of logins in progress: {tables:?}");
    // One start first: provider discovery and anything else the first call does once.
    let first = pipeline.client.get(pipeline.url("/auth/login")).send().await.unwrap();
    assert_eq!(first.status(), 303);
    let watch = store.watch_writes().await;
    let before_rows = store.total_rows().await;

    let starts = futures::stream::iter(0..1_000)
        .map(|n| {
            let request = pipeline.client.get(pipeline.url(&format!("/auth/login?return_to=/console%23{n}")));
            async move { request.send().await.unwrap() }
        })
        .buffer_unordered(16);
    let cookies: Vec<String> = starts
        .map(|response| {
            assert_eq!(response.status(), 303);
            let cookie = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .find(|c| c.starts_with("__Host-inlet_login="))
                .expect("a login cookie");
            assert!(cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"), "{cookie}");
            cookie
        })
        .collect()
        .await;
    assert_eq!(cookies.len(), 1_000);
    let sealed = cookies[0].split(';').next().unwrap();
    assert!(!sealed.contains("console"), "sealed: the return path is not readable in the cookie: {sealed}");
    assert!(sealed.len() < 2_000, "well under a browser's cookie limit: {}", sealed.len());

    assert!(!store.written_since(&watch).await, "no commit to the database");
    assert_eq!(store.total_rows().await, before_rows, "no row added");
}

/// A login cookie that was not sealed by this worker — made up, altered, or sealed for the
/// other provider — finishes nothing.
#[tokio::test]
async fn a_forged_or_altered_login_cookie_is_no_login_in_progress() {
    let pipeline = pipeline().await;
    let mut browser = Browser::new();
    let callback = browser.login_until_callback(&pipeline, "/console", "admin@example.com").await;
    let site = pipeline.url("/");
    let genuine = browser.cookie(&site, "__Host-inlet_login").unwrap();
    let mut altered = genuine.clone().into_bytes();
    let last = altered.len() - 3;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for forged in ["made-up".to_owned(), altered, genuine.replacen("v1.", "v2.", 1)] {
        let hop = pipeline
            .client
            .get(&callback)
            .header("cookie", format!("__Host-inlet_login={forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(hop.status(), 400, "{forged}");
        assert!(hop.text().await.unwrap().contains("no sign-in in progress"), "{forged}");
    }
    // The genuine one still works (nothing above used it up).
    assert_eq!(browser.get(&callback).await.status, 303);
}

/// Session fixation: a session cookie planted in the browser before sign-in — a value the
/// attacker made up, or the attacker's own valid session — is never adopted or upgraded. The
/// sign-in issues a new value, only its hash is stored, and the planted value stays what it was.
/// The only pre-login id in this design is the login-flow cookie; it is used up and is no session.
#[tokio::test]
async fn a_session_cookie_planted_before_sign_in_is_not_adopted() {
    const SESSION: &str = "__Host-inlet_session";
    const LOGIN: &str = "__Host-inlet_login";
    let pipeline = pipeline().await;
    let site = pipeline.url("/");
    let hash = |value: &str| {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(value.as_bytes()))
    };
    let session_owner = |value: &str| {
        let sql = format!(
            "SELECT u.email FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = {}",
            sql_text(&hash(value))
        );
        let store = &pipeline.store;
        async move {
            let mut rows = store.rows(&sql).await;
            assert!(rows.len() <= 1, "{rows:?}");
            rows.pop().map(|mut row| row.remove(0).unwrap())
        }
    };
    // `GET /auth/session` and `{ me }` for a bare cookie value (CSRF token given, so only the
    // cookie can decide).
    let as_cookie = |value: String, csrf: String| {
        let client = pipeline.client.clone();
        let (session, graphql) = (pipeline.url("/auth/session"), pipeline.url("/graphql"));
        async move {
            let cookie = format!("{SESSION}={value}");
            let session: serde_json::Value =
                client.get(session).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
            let me = client
                .post(graphql)
                .header("cookie", &cookie)
                .header("x-csrf-token", csrf)
                .json(&json!({"query": "{ me { actor } }"}))
                .send()
                .await
                .unwrap();
            let status = me.status().as_u16();
            let me: serde_json::Value = me.json().await.unwrap_or_default();
            (session, status, me["data"]["me"].clone())
        }
    };

    // The attacker's own session, as a viewer.
    let mut attacker = Browser::new();
    let callback = attacker.login_until_callback(&pipeline, "/console", "someone@viewers.example").await;
    assert_eq!(attacker.get(&callback).await.status, 303);
    let attacker_session = attacker.cookie(&site, SESSION).unwrap();
    assert_eq!(session_owner(&attacker_session).await.as_deref(), Some("someone@viewers.example"));

    let made_up = "attacker-chosen-session-value-0123456789abcdefABCDEF".to_owned();
    for planted in [made_up.clone(), attacker_session.clone()] {
        let mut victim = Browser::new();
        victim.plant_cookie(&site, SESSION, &planted);
        let callback = victim.login_until_callback(&pipeline, "/console", "admin@example.com").await;
        let login_flow = victim.cookie(&site, LOGIN).expect("the login flow's cookie");
        let landed = victim.get(&callback).await;
        assert_eq!(landed.status, 303, "{}", landed.body);
        let issued = landed
            .set_cookies
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{SESSION}=")))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .expect("sign-in sets a session cookie");
        assert_ne!(issued, planted, "the planted value is not adopted");
        assert_ne!(issued, login_flow, "the pre-login id is not reused as the session id");
        assert!(issued.len() >= 43, "a 256-bit random value: {issued}");

        // The browser now holds the new value, which is the victim's session.
        let session = victim.session(&pipeline).await;
        assert_eq!(
            (session["authenticated"].as_bool(), session["actor"].as_str()),
            (Some(true), Some("admin@example.com"))
        );
        let csrf = session["csrfToken"].as_str().unwrap().to_owned();
        assert_eq!(
            session_owner(&issued).await.as_deref(),
            Some("admin@example.com"),
            "stored under the hash of the new value"
        );
        let raw = pipeline
            .store
            .scalar_i64(&format!(
                "SELECT count(*) FROM sessions WHERE id_hash IN ({}, {})",
                sql_text(&issued),
                sql_text(&planted)
            ))
            .await;
        assert_eq!(raw, 0, "cookie values are never stored as such");

        // The planted value did not become the victim's session, even with the victim's CSRF token.
        let (session, status, me) = as_cookie(planted.clone(), csrf.clone()).await;
        if planted == made_up {
            assert_eq!(session["authenticated"], false, "{session}");
            assert_eq!(session_owner(&planted).await, None, "no session stored under the made-up value");
            assert_eq!((status, me), (401, serde_json::Value::Null), "the made-up value is anonymous");
        } else {
            // Still the attacker's own viewer session, not upgraded to the admin who signed in.
            assert_eq!(session["actor"], "someone@viewers.example", "{session}");
            assert_eq!(session["role"], "viewer", "{session}");
            assert_eq!(session_owner(&planted).await.as_deref(), Some("someone@viewers.example"));
            assert_eq!(status, 403, "the victim's CSRF token does not fit the attacker's session");
        }

        // The pre-login id is used up: the browser is told to drop it, and a copy of it
        // replayed with the same callback completes nothing (the code it carried is spent at
        // the provider). It is no session either.
        assert!(landed.set_cookies.iter().any(|c| c.starts_with(&format!("{LOGIN}=;")) && c.ends_with("Max-Age=0")));
        let replayed =
            pipeline.client.get(&callback).header("cookie", format!("{LOGIN}={login_flow}")).send().await.unwrap();
        assert_eq!(replayed.status(), 400, "the login flow is single-use");
        assert!(!replayed.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with(SESSION)));
        assert!(replayed.text().await.unwrap().contains("did not accept the authorization code"));
        let (session, status, me) = as_cookie(login_flow, csrf).await;
        assert_eq!(session["authenticated"], false, "{session}");
        assert_eq!((status, me), (401, serde_json::Value::Null));
    }
    let sessions = pipeline.store.scalar_i64("SELECT count(*) FROM sessions").await;
    assert_eq!(sessions, 3, "the attacker's and one new session per victim sign-in, nothing else");
}
