//! Console sign-in against a real OpenID provider (oidc-provider on loopback): the happy path
//! with the session cookie's attributes, CSRF, logout; and every way a callback can be wrong.

use serde_json::json;

use crate::operator_support::{Browser, OperatorPipeline, Options};

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
    assert_eq!(answer["data"]["me"], json!({"actor": "admin@example.com", "role": "admin"}));

    let (users, accounts): (i64, i64) = pipeline.query(|c| {
        Ok((
            c.query_row("SELECT count(*) FROM users WHERE email = 'admin@example.com' AND role = 'admin'", [], |r| {
                r.get(0)
            })?,
            c.query_row("SELECT count(*) FROM oauth_accounts WHERE provider = 'oidc'", [], |r| r.get(0))?,
        ))
    });
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
    let sessions: i64 = pipeline.query(|c| c.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)));
    assert_eq!(sessions, 0);
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
    let users: i64 = pipeline.query(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)));
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
