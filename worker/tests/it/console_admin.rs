//! The console's accounts and admin views in headless Chromium (Debian's, driven by
//! `scripts/e2e/console-admin.mjs` through playwright-core) against a real OpenID provider: a
//! refused account signs in as an allowed one through "Sign in with another account"; the admin
//! creates an API token (shown once, copied) which this test then uses against `/graphql`,
//! revokes it (then refused), and sees the users list; "Switch account" signs an operator in,
//! who is not offered the admin views.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::operator_support::{OperatorPipeline, Options, e2e_script};

/// The script's next JSON line on stdout; its stderr in the panic when it ended instead.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    child: &mut tokio::process::Child,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the browser run answered within 2 minutes")
        .unwrap();
    match line {
        Some(line) => serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")),
        None => {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
            panic!("console-admin.mjs ended early:\n{stderr}");
        }
    }
}

#[tokio::test]
async fn a_refused_account_switches_and_an_admin_manages_tokens_and_sees_users_in_the_console() {
    let pipeline = OperatorPipeline::start(&[], Options { oidc: true, ..Options::default() }).await;
    // INLET_E2E_SCREENSHOT_DIR keeps the screenshots for a person to look at.
    let screenshot = std::env::var_os("INLET_E2E_SCREENSHOT_DIR")
        .map_or_else(|| pipeline.dir.path().to_owned(), std::path::PathBuf::from)
        .join("console-admin.png");
    let mut child = tokio::process::Command::new("node")
        .arg(e2e_script("console-admin.mjs"))
        .args(["--url", &pipeline.url(""), "--refused", "stranger@elsewhere.example"])
        .args(["--admin", "admin@example.com", "--operator", "ops@example.com", "--screenshot"])
        .arg(&screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();

    // The token the admin created in the browser works against the API, with its role.
    let shown = next_line(&mut lines, &mut child).await;
    let token = shown["token"].as_str().unwrap_or_else(|| panic!("{shown}")).to_owned();
    let me = pipeline.gql_as(&token, "{ me { actor role } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({"actor": "token:ci-deploy", "role": "OPERATOR"}), "{me}");
    let tokens = pipeline.gql_as(&token, "{ apiTokens { id } }", json!({})).await;
    assert_eq!(tokens["errors"][0]["extensions"]["code"], "FORBIDDEN", "an operator token manages no tokens");
    stdin.write_all(b"go\n").await.unwrap();

    // Revoked in the browser: refused from then on.
    let revoked = next_line(&mut lines, &mut child).await;
    assert_eq!(revoked["revoked"], "ci-deploy", "{revoked}");
    let after = pipeline
        .client
        .post(pipeline.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "{ me { role } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "a revoked token is refused");
    stdin.write_all(b"go\n").await.unwrap();

    let done = next_line(&mut lines, &mut child).await;
    assert_eq!(done["ok"], true, "{done}");
    eprintln!("console-admin run: {done}");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success());

    // What the browser did is what happened: the token's life audited under the admin's
    // address, and the refused account never got an Inlet user.
    let state = pipeline.gql("{ users { email role } auditLog { nodes { actor action detail } } }", json!({})).await;
    assert_eq!(
        state["users"],
        json!([{"email": "admin@example.com", "role": "ADMIN"}, {"email": "ops@example.com", "role": "OPERATOR"}])
    );
    let tokens: Vec<(&Value, &Value, &Value)> = state["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["action"].as_str().is_some_and(|a| a.ends_with("API_TOKEN")))
        .map(|n| (&n["actor"], &n["action"], &n["detail"]))
        .collect();
    let admin = json!("admin@example.com");
    assert_eq!(
        tokens,
        [
            (&admin, &json!("REVOKE_API_TOKEN"), &Value::Null),
            (&admin, &json!("CREATE_API_TOKEN"), &json!("ci-deploy (operator)"))
        ]
    );
}
