//! The GraphQL API: transport rules (POST + JSON only, tokens, CSRF), roles, limits,
//! pagination and DataLoaders, replays (single, concurrent, bulk with dry run and cancel).

use std::time::Duration;

use serde_json::{Value, json};

use crate::operator_support::{ADMIN_TOKEN, Browser, OperatorPipeline, Options, unrouted_destination};
use crate::support::{TestDestination, sql_text};

const FAST_RETRIES: &str = "retry_schedule = [\"100ms\", \"100ms\"]";

const DELIVERY_STATE: &str =
    "query($id: ID!) { delivery(id: $id) { status attemptCount replays attempts { attempt outcome statusCode } } }";

fn code(answer: &Value) -> String {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or_default().to_owned()
}

/// The explorer page is for signed-in browsers: a browser without a session is sent to the
/// console's sign-in, machines still get `405`, the schema needs a session, and the vendored
/// files come gzipped under the page's strict CSP (a client that takes no gzip is told so).
/// The signed-in path (GraphiQL running a query, no CSP violation) is `console.rs`'s browser run.
#[tokio::test]
async fn the_explorer_is_for_signed_in_browsers_and_its_files_come_under_a_strict_csp() {
    let pipeline = OperatorPipeline::start(&[], Options::default()).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = client.get(pipeline.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!((page.status().as_u16(), page.headers()["location"].to_str().unwrap()), (303, "/console"));
    let with_token = client
        .get(pipeline.url("/graphql"))
        .header("accept", "text/html")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 303, "a bearer token cannot drive a page: sign in");
    let machine = client.get(pipeline.url("/graphql")).send().await.unwrap();
    assert_eq!(machine.status(), 405);

    let schema =
        client.get(pipeline.url("/graphql/explorer/schema.json")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(schema.status(), 401);

    let script = client
        .get(pipeline.url("/graphql/explorer/graphiql.min.js"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(script.headers()["content-encoding"], "gzip");
    let csp = script.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"), "{csp}");
    let bytes = script.bytes().await.unwrap();
    assert_eq!(&bytes[..2], [0x1f, 0x8b], "gzip bytes as stored");
    let plain = client.get(pipeline.url("/graphql/explorer/graphiql.min.js")).send().await.unwrap();
    assert_eq!(plain.status(), 406);
    let missing = client.get(pipeline.url("/graphql/explorer/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn graphql_accepts_only_json_posts_with_valid_credentials() {
    let pipeline = OperatorPipeline::start(&[], Options::default()).await;
    let client = &pipeline.client;
    let url = pipeline.url("/graphql");
    let mutation = r#"{"query":"mutation { revokeApiToken(id: \"1\") { id } }"}"#;

    // No queries in URLs, so no mutation over GET.
    let get = client.get(format!("{url}?query=mutation%7BrevokeApiToken(id:%221%22)%7Bid%7D%7D")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");

    // Bodies a cross-site form can send without a preflight are refused before anything runs.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let response = client
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(mutation)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
    }
    let missing = client.post(&url).body(mutation).send().await.unwrap();
    assert_eq!(missing.status(), 415, "no content type");

    // Bodies over 64 KiB are refused unread.
    let huge = format!("{{\"query\":\"{{ me {{ role }} }}\",\"x\":\"{}\"}}", "a".repeat(100 * 1024));
    let response = client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // A wrong bearer token is refused outright.
    let bad = client
        .post(&url)
        .bearer_auth("inlet_not-a-token")
        .json(&json!({"query": "{ me { role } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);

    // Batches are refused (limits apply per operation).
    let batch = client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!([{"query": "{ me { role } }"}, {"query": "{ me { role } }"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 400);

    // Anonymous callers are answered 401 from the headers alone, whatever the query: no data,
    // no introspection, no suggestions, no parsing.
    for query in
        ["{ me { role } }", "{ counts { events } }", "{ __schema { types { name } } }", "{ countz { events } }"]
    {
        let response = client.post(&url).json(&json!({ "query": query })).send().await.unwrap();
        assert_eq!(response.status(), 401, "{query}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(code(&answer), "UNAUTHENTICATED", "{answer}");
        assert!(answer.get("data").is_none(), "{answer}");
    }
    let unparseable = client.post(&url).header("content-type", "application/json").body("{{{").send().await.unwrap();
    assert_eq!(unparseable.status(), 401, "the body of an anonymous caller is not even read");

    // The bearer scheme is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = client
            .post(&url)
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .json(&json!({"query": "{ me { role } }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["data"]["me"]["role"], "ADMIN", "{scheme}: {answer}");
    }

    // Authenticated callers may introspect.
    let schema = pipeline.gql("{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query");
}

#[tokio::test]
async fn roles_decide_what_tokens_may_do_and_revoked_tokens_stop_working() {
    let pipeline = OperatorPipeline::start(&[], Options::default()).await;
    let create = "mutation($name: String!, $role: RoleName!) { createApiToken(name: $name, role: $role) { token apiToken { id role } } }";
    let viewer = pipeline.gql(create, json!({"name": "dashboards", "role": "VIEWER"})).await["createApiToken"].clone();
    let operator = pipeline.gql(create, json!({"name": "runbook", "role": "OPERATOR"})).await["createApiToken"].clone();
    let viewer_token = viewer["token"].as_str().unwrap();
    let operator_token = operator["token"].as_str().unwrap();
    assert!(viewer_token.starts_with("inlet_"));

    let stored = pipeline.store.rows("SELECT token_hash FROM api_tokens").await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored.iter().all(|hash| hash[0].as_ref().is_some_and(|h| h.len() == 64 && !h.contains(viewer_token))),
        "only hashes are stored: {stored:?}"
    );

    let me = pipeline.gql_as(viewer_token, "{ me { actor role } counts { events } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({"actor": "token:dashboards", "role": "VIEWER"}));
    let replay = "mutation { replayDelivery(id: \"dlv_x\") { result } }";
    assert_eq!(code(&pipeline.gql_as(viewer_token, replay, json!({})).await), "FORBIDDEN");
    assert_eq!(code(&pipeline.gql_as(operator_token, replay, json!({})).await), "NOT_FOUND", "operators may replay");
    assert_eq!(
        code(&pipeline.gql_as(operator_token, create, json!({"name": "x", "role": "ADMIN"})).await),
        "FORBIDDEN"
    );
    assert_eq!(code(&pipeline.gql_as(operator_token, "{ apiTokens { id } }", json!({})).await), "FORBIDDEN");

    let id = viewer["apiToken"]["id"].as_str().unwrap();
    let revoked = pipeline.gql("mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }", json!({"id": id})).await;
    assert!(revoked["revokeApiToken"]["revokedAt"].as_str().is_some_and(|at| at.ends_with('Z')));
    let after = pipeline
        .client
        .post(pipeline.url("/graphql"))
        .bearer_auth(viewer_token)
        .json(&json!({"query": "{ me { role } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401, "a revoked token stops working at once");

    let audit = pipeline.gql("{ auditLog(first: 10) { nodes { actor action target } } }", json!({})).await;
    let actions: Vec<&str> =
        audit["auditLog"]["nodes"].as_array().unwrap().iter().map(|n| n["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["REVOKE_API_TOKEN", "CREATE_API_TOKEN", "CREATE_API_TOKEN"]);
    assert_eq!(audit["auditLog"]["nodes"][0]["actor"], "token:bootstrap");
}

/// Admins list the console users with their role, sign-in methods and sessions; viewers and
/// operators are refused that list and every token operation, by token and by session alike.
#[tokio::test]
async fn admins_list_users_and_tokens_and_viewers_and_operators_are_refused() {
    let pipeline = OperatorPipeline::start(&[], Options { oidc: true, ..Options::default() }).await;
    let mut sessions = Vec::new();
    for email in ["ops@example.com", "admin@example.com", "someone@viewers.example"] {
        let mut browser = Browser::new();
        let callback = browser.login_until_callback(&pipeline, "/console", email).await;
        assert_eq!(browser.get(&callback).await.status, 303);
        let csrf = browser.session(&pipeline).await["csrfToken"].as_str().unwrap().to_owned();
        sessions.push((browser, csrf));
    }
    let users = "{ users { email name role createdAt lastSignInAt liveSessions accounts { provider email } } }";
    let listed = pipeline.gql(users, json!({})).await["users"].clone();
    let summary: Vec<(&Value, &Value, &Value, &Value)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (&u["email"], &u["role"], &u["liveSessions"], &u["accounts"]))
        .collect();
    let oidc = |email: &str| json!([{"provider": "oidc", "email": email}]);
    assert_eq!(
        summary,
        [
            (&json!("admin@example.com"), &json!("ADMIN"), &json!(1), &oidc("admin@example.com")),
            (&json!("ops@example.com"), &json!("OPERATOR"), &json!(1), &oidc("ops@example.com")),
            (&json!("someone@viewers.example"), &json!("VIEWER"), &json!(1), &oidc("someone@viewers.example")),
        ]
    );
    assert!(listed[0]["lastSignInAt"].as_str().is_some_and(|at| at.ends_with('Z')), "{listed}");
    assert_eq!(listed[0]["name"], "admin");

    // The admin's session may list them too.
    let (admin, admin_csrf) = &sessions[1];
    let (status, answer) = admin.gql(&pipeline, Some(admin_csrf), users).await;
    assert_eq!((status, answer["data"]["users"].as_array().map(Vec::len)), (200, Some(3)), "{answer}");

    let create = "mutation { createApiToken(name: \"x\", role: VIEWER) { token } }";
    let revoke = "mutation { revokeApiToken(id: \"1\") { id } }";
    let refused = [users, "{ apiTokens { id } }", create, revoke];
    for (browser, csrf) in [&sessions[0], &sessions[2]] {
        for query in refused {
            let (status, answer) = browser.gql(&pipeline, Some(csrf), query).await;
            assert_eq!((status, code(&answer)), (200, "FORBIDDEN".to_owned()), "{query}: {answer}");
        }
    }
    let mint = "mutation($role: RoleName!) { createApiToken(name: \"t\", role: $role) { token } }";
    for role in ["VIEWER", "OPERATOR"] {
        let token =
            pipeline.gql(mint, json!({"role": role})).await["createApiToken"]["token"].as_str().unwrap().to_owned();
        for query in refused {
            let answer = pipeline.gql_as(&token, query, json!({})).await;
            assert_eq!(code(&answer), "FORBIDDEN", "{role} {query}: {answer}");
        }
    }
}

#[tokio::test]
async fn depth_and_complexity_bombs_are_rejected_before_any_resolver_runs() {
    let pipeline = OperatorPipeline::start(&[], Options::default()).await;
    let deep = "{ deadLetters(first: 1) { nodes { event { deliveries { event { deliveries { event { deliveries { event { deliveries { id } } } } } } } } } } }";
    let answer = pipeline.gql_as(ADMIN_TOKEN, deep, json!({})).await;
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{answer}");
    let refusal = &answer["errors"][0]["extensions"];
    assert_eq!((refusal["code"].as_str(), refusal["limit"].as_u64()), (Some("TOO_DEEP"), Some(10)), "{answer}");
    assert!(refusal["depth"].as_u64().unwrap() > 10, "{answer}");
    assert_eq!(answer["extensions"]["sqlReads"], 0, "rejected before touching the database");

    let wide = "{ events(first: 100) { nodes { deliveries { attempts { attempt outcome statusCode error responseSnippet } } } } }";
    let answer = pipeline.gql_as(ADMIN_TOKEN, wide, json!({})).await;
    // The refusal states the query's cost and the limit, so a client knows how much to trim.
    let refusal = &answer["errors"][0]["extensions"];
    let cost = refusal["cost"].as_u64().unwrap_or_else(|| panic!("{answer}"));
    assert!(cost > 5_000, "{answer}");
    assert_eq!((refusal["code"].as_str(), refusal["limit"].as_u64()), (Some("TOO_COMPLEX"), Some(5_000)), "{answer}");
    assert_eq!(
        answer["errors"][0]["message"],
        format!("query is too complex: its cost is {cost}, the limit is 5000"),
        "{answer}"
    );
    assert_eq!(answer["extensions"]["sqlReads"], 0);

    let too_big = pipeline.gql_as(ADMIN_TOKEN, "{ events(first: 1000) { nodes { id } } }", json!({})).await;
    assert!(too_big["errors"].is_array(), "{too_big}");
}

/// The fragment-spread bomb: about a kilobyte of fragments, each spreading the next one twice
/// (2^22 fields expanded). Anonymous, it is answered from the headers; signed in, the cost
/// check refuses it after a linear pass, before async-graphql's validation walks it; either
/// way within a few milliseconds, and the worker's runtime stays free to answer `/healthz`.
#[tokio::test]
async fn a_fragment_spread_bomb_is_refused_cheaply_and_health_answers_meanwhile() {
    let pipeline = OperatorPipeline::start(&[], Options::default()).await;
    let bomb = inlet_worker::api::cost::fragment_bomb(22);
    assert!(bomb.len() < 1_200, "{}", bomb.len());
    let body = json!({ "query": bomb });
    let send = |token: Option<&'static str>| {
        let request = pipeline.client.post(pipeline.url("/graphql")).json(&body);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let started = std::time::Instant::now();
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap();
            (status, code(&answer), started.elapsed())
        }
    };

    let (status, anonymous, elapsed) = send(None).await;
    assert_eq!((status, anonymous.as_str()), (401, "UNAUTHENTICATED"));
    assert!(elapsed < Duration::from_secs(1), "anonymous bomb took {elapsed:?}");

    // Four at once (more than the runtime's threads) while /healthz is asked.
    let bombs = futures::future::join_all((0..4).map(|_| send(Some(ADMIN_TOKEN))));
    let health = async {
        let started = std::time::Instant::now();
        let status = pipeline.client.get(pipeline.url("/healthz")).send().await.unwrap().status();
        (status, started.elapsed())
    };
    let (answers, (health_status, health_elapsed)) = tokio::join!(bombs, health);
    for (status, code, elapsed) in answers {
        assert_eq!((status, code.as_str()), (400, "QUERY_TOO_COSTLY"));
        assert!(elapsed < Duration::from_secs(1), "signed-in bomb took {elapsed:?}");
    }
    assert_eq!(health_status, 200);
    assert!(health_elapsed < Duration::from_secs(1), "/healthz took {health_elapsed:?}");

    // Ordinary documents with fragments still work.
    let data = pipeline.gql("query { ...M } fragment M on Query { me { role } }", json!({})).await;
    assert_eq!(data["me"]["role"], "ADMIN");
}

/// The argument bomb: two fragments selecting `me` with the same 4,001 arguments, both spread
/// in each of 160 inline fragments (about 57 KB, under the body limit, and within every cap on
/// selections and expansion). Merging the two fields compares their arguments pairwise, with a
/// linear search for each, in every one of the 160 selection sets: over a billion string
/// comparisons of synchronous validation, which the execution timeout cannot interrupt. The
/// cost check refuses it (too many arguments) before validation, within milliseconds, and the
/// runtime stays free to answer `/healthz`; at the cap of arguments per field, the same shape
/// is refused for its expanded size, each expansion being charged its arguments.
#[tokio::test]
async fn an_argument_bomb_is_refused_cheaply_and_health_answers_meanwhile() {
    let pipeline = OperatorPipeline::start(&[], Options::default()).await;
    let bomb = inlet_worker::api::cost::argument_bomb(4_001, 160);
    let body = serde_json::to_vec(&json!({ "query": bomb })).unwrap();
    assert!(body.len() < inlet_worker::api::MAX_BODY_BYTES, "{}", body.len());
    let send = |query: String| {
        let request =
            pipeline.client.post(pipeline.url("/graphql")).bearer_auth(ADMIN_TOKEN).json(&json!({ "query": query }));
        async move {
            let started = std::time::Instant::now();
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap();
            (status, answer, started.elapsed())
        }
    };

    // Two at once while /healthz is asked (the worker runs on this test's one-thread runtime:
    // a bomb validated there would hold up everything else). Parsing 63 KiB is most of the
    // time taken (about 120 ms each in a debug build).
    let bombs = futures::future::join_all((0..2).map(|_| send(bomb.clone())));
    let health = async {
        let started = std::time::Instant::now();
        let status = pipeline.client.get(pipeline.url("/healthz")).send().await.unwrap().status();
        (status, started.elapsed())
    };
    let (answers, (health_status, health_elapsed)) = tokio::join!(bombs, health);
    for (status, answer, elapsed) in answers {
        assert_eq!((status, code(&answer).as_str()), (400, "QUERY_TOO_COSTLY"), "{answer}");
        assert!(answer["errors"][0]["message"].as_str().unwrap().contains("arguments"), "{answer}");
        assert!(elapsed < Duration::from_secs(1), "signed-in argument bomb took {elapsed:?}");
    }
    assert_eq!(health_status, 200);
    assert!(health_elapsed < Duration::from_secs(1), "/healthz took {health_elapsed:?}");

    let (status, answer, elapsed) = send(inlet_worker::api::cost::argument_bomb(16, 160)).await;
    assert_eq!((status, code(&answer).as_str()), (400, "QUERY_TOO_COSTLY"), "{answer}");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("once fragments are expanded"), "{answer}");
    assert!(elapsed < Duration::from_secs(1), "argument bomb at the cap took {elapsed:?}");

    // Arguments and directives within the caps still work.
    let data = pipeline
        .gql(
            "query($skip: Boolean = false) { events(first: 3) { nodes { id @skip(if: $skip) } } me { role } }",
            json!({}),
        )
        .await;
    assert_eq!(data["me"]["role"], "ADMIN");
    assert!(data["events"]["nodes"].is_array(), "{data}");
}

/// Bodies are priced: a page of events with their contents is over the complexity limit
/// (refused before any read), one event's content works whatever its size, and one answer
/// carries at most 8 MiB of contents beyond that.
#[tokio::test]
async fn event_contents_are_priced_and_budgeted_per_answer() {
    let pipeline = OperatorPipeline::start(&[], Options::default()).await;
    for n in 0..3 {
        assert_eq!(pipeline.send(&format!("big-{n}"), "push", format!("{{\"n\":{n}}}").as_bytes()).await, 202);
    }
    let listed = pipeline
        .wait_for("three events", "{ events { nodes { id } } }", json!({}), |d| {
            d["events"]["nodes"].as_array().is_some_and(|n| n.len() == 3)
        })
        .await;
    let ids: Vec<String> =
        listed["events"]["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect();

    let aliases =
        "{ a: events(first: 100) { nodes { content { body } } } b: events(first: 100) { nodes { content { body } } } }";
    let answer = pipeline.gql_as(ADMIN_TOKEN, aliases, json!({})).await;
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{answer}");
    assert_eq!(answer["extensions"]["sqlReads"], 0, "refused before any body is read");
    let page = pipeline.gql_as(ADMIN_TOKEN, "{ events(first: 5) { nodes { content { body } } } }", json!({})).await;
    assert!(page["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{page}");

    let one = pipeline.gql("query($id: ID!) { event(id: $id) { content { body } } }", json!({"id": ids[0]})).await;
    assert!(one["event"]["content"]["body"].as_str().unwrap().starts_with("{\"n\":"), "{one}");

    // Three stored bodies of 5 MiB: one fits, two do not.
    let big = 5 * 1024 * 1024;
    let updated = pipeline.store.execute(&format!("UPDATE events SET body = {}", pipeline.store.zero_bytes(big))).await;
    assert_eq!(updated, 3);
    let single =
        pipeline.gql("query($id: ID!) { event(id: $id) { content { bodyBytes } } }", json!({"id": ids[0]})).await;
    assert_eq!(single["event"]["content"]["bodyBytes"], big, "one content of any size");
    let three = "query($a: ID!, $b: ID!, $c: ID!) { a: event(id: $a) { content { bodyBytes } } b: event(id: $b) { content { bodyBytes } } c: event(id: $c) { content { bodyBytes } } }";
    let answer = pipeline.gql_as(ADMIN_TOKEN, three, json!({"a": ids[0], "b": ids[1], "c": ids[2]})).await;
    let served: Vec<&Value> =
        ["a", "b", "c"].iter().map(|k| &answer["data"][k]["content"]["bodyBytes"]).filter(|v| !v.is_null()).collect();
    assert_eq!(served, [&json!(big)], "the first content only: {answer}");
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{answer}");
    assert!(errors.iter().all(|e| e["extensions"]["code"] == "RESPONSE_TOO_LARGE"), "{answer}");
}

#[tokio::test]
async fn events_paginate_and_filter_and_dataloaders_keep_reads_flat() {
    let sink = TestDestination::answering(200).await;
    let pipeline = OperatorPipeline::start(&[("sink", sink.url(), "")], Options::default()).await;
    for n in 0..25 {
        let event = if n % 5 == 0 { "issues" } else { "push" };
        assert_eq!(pipeline.send(&format!("evt-{n:02}"), event, format!("{{\"n\":{n}}}").as_bytes()).await, 202);
    }
    assert_eq!(pipeline.send("evt-unrouted", "star", b"{}").await, 202);
    sink.wait_for(25, Duration::from_secs(30)).await;
    pipeline
        .wait_for("every delivery recorded", "{ counts { events delivered unrouted } }", json!({}), |d| {
            d["counts"] == json!({"events": 26, "delivered": 25, "unrouted": 1})
        })
        .await;

    // Cursor pagination: newest first, no overlap, no gap.
    let page = "query($after: String) { events(first: 10, after: $after) { nodes { eventId } pageInfo { hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = pipeline.gql(page, json!({ "after": after })).await;
        let events = &data["events"];
        seen.extend(events["nodes"].as_array().unwrap().iter().map(|n| n["eventId"].as_str().unwrap().to_owned()));
        if !events["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = events["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen.len(), 26);
    assert_eq!(seen[0], "evt-unrouted");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 26, "no duplicates across pages");

    // Filters.
    let filtered = |filter: Value| {
        let pipeline = &pipeline;
        async move {
            let data = pipeline
                .gql(
                    "query($f: EventFilter) { events(filter: $f, first: 100) { nodes { eventId } } }",
                    json!({ "f": filter }),
                )
                .await;
            data["events"]["nodes"].as_array().unwrap_or_else(|| panic!("{data}")).len()
        }
    };
    assert_eq!(filtered(json!({"eventType": "issues"})).await, 5);
    assert_eq!(filtered(json!({"text": "evt-1"})).await, 10);
    assert_eq!(filtered(json!({"text": "%"})).await, 0, "LIKE wildcards are literal");
    assert_eq!(filtered(json!({"status": "UNROUTED"})).await, 1);
    assert_eq!(filtered(json!({"status": "DELIVERED", "source": "gh"})).await, 25);
    assert_eq!(filtered(json!({"status": "DEAD_LETTERED"})).await, 0);
    assert_eq!(
        filtered(json!({"receivedAfter": "1970-01-01T00:00:00Z", "receivedBefore": "1970-01-01T00:00:00.001Z"})).await,
        0
    );
    assert_eq!(filtered(json!({"receivedAfter": "2000-01-01T00:00:00+02:00"})).await, 26, "any offset is understood");
    let refused = pipeline
        .gql_as(ADMIN_TOKEN, "{ deadLetters(filter: {reason: permanent_4xx}) { nodes { id } } }", json!({}))
        .await;
    assert!(
        refused["errors"][0]["message"].as_str().unwrap().contains("permanent_4xx"),
        "a value outside the enum: {refused}"
    );
    let refused = pipeline
        .gql_as(ADMIN_TOKEN, "{ events(filter: {receivedAfter: \"yesterday\"}) { nodes { id } } }", json!({}))
        .await;
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("RFC 3339"), "{refused}");

    // Activity for the charts: the last hour in 60 one-minute buckets counts every event; a
    // range the wrong way round or longer than 31 days is refused.
    let activity = |from: String, to: String| {
        let pipeline = &pipeline;
        async move {
            pipeline
                .gql_as(
                    ADMIN_TOKEN,
                    "query($from: DateTime!, $to: DateTime!) { activity(from: $from, to: $to) { bucketSeconds buckets { received } } }",
                    json!({ "from": from, "to": to }),
                )
                .await
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let rfc3339 = |unix: u64| {
        let at = chrono::DateTime::from_timestamp(i64::try_from(unix).unwrap(), 0).unwrap();
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let hour = activity(rfc3339(now - 3_600), rfc3339(now + 1)).await;
    let buckets = hour["data"]["activity"]["buckets"].as_array().unwrap_or_else(|| panic!("{hour}"));
    assert_eq!((hour["data"]["activity"]["bucketSeconds"].as_i64(), buckets.len()), (Some(60), 61), "{hour}");
    assert_eq!(buckets.iter().map(|b| b["received"].as_i64().unwrap()).sum::<i64>(), 26);
    let backwards = activity(rfc3339(now), rfc3339(now - 60)).await;
    assert!(backwards["errors"][0]["message"].as_str().unwrap().contains("after `from`"), "{backwards}");
    let too_long = activity(rfc3339(now - 40 * 86_400), rfc3339(now)).await;
    assert!(too_long["errors"][0]["message"].as_str().unwrap().contains("31 days"), "{too_long}");

    // DataLoader: the number of SQL reads does not grow with the page size.
    let nested =
        "query($n: Int) { events(first: $n) { nodes { eventId deliveries { status attempts { attempt outcome } } } } }";
    let small = pipeline.gql_as(ADMIN_TOKEN, nested, json!({"n": 2})).await;
    let large = pipeline.gql_as(ADMIN_TOKEN, nested, json!({"n": 25})).await;
    assert_eq!(large["data"]["events"]["nodes"].as_array().unwrap().len(), 25);
    assert_eq!(small["extensions"]["sqlReads"], 3, "events + deliveries + attempts: {small}");
    assert_eq!(large["extensions"]["sqlReads"], 3, "same for 25 events: {large}");

    // One event in detail.
    let id = pipeline.gql("{ events(first: 1, filter: {text: \"evt-03\"}) { nodes { id } } }", json!({})).await["events"]["nodes"][0]["id"].clone();
    let detail = pipeline
        .gql(
            "query($id: ID!) { event(id: $id) { eventType receivedAt content { body bodyBytes headers { name value } } deliveries { destination status attempts { statusCode durationMs } } } }",
            json!({ "id": id }),
        )
        .await;
    let event = &detail["event"];
    let received_at = event["receivedAt"].as_str().unwrap();
    assert!(received_at.starts_with("20") && received_at.ends_with('Z'), "RFC 3339 in UTC: {received_at}");
    assert_eq!(event["content"]["body"], "{\"n\":3}");
    let headers = event["content"]["headers"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h["name"].as_str().unwrap().eq_ignore_ascii_case("x-github-delivery") && h["value"] == "evt-03"),
        "headers come as name/value pairs: {headers:?}"
    );
    assert_eq!(event["deliveries"][0]["status"], "DELIVERED");
    assert_eq!(event["deliveries"][0]["attempts"][0]["statusCode"], 200);
    let destinations =
        pipeline.gql("{ destinations { name breakerState delivered } sources { name kind } }", json!({})).await;
    assert_eq!(destinations["destinations"], json!([{"name": "sink", "breakerState": "CLOSED", "delivered": 25}]));
    assert_eq!(destinations["sources"], json!([{"name": "gh", "kind": "hmac"}]));
}

/// Issue #16: before a replay, the API says what it will send (what the console's confirmation
/// shows): the destination, the attempt number and every header, the ones made as it is sent
/// (the signature's timestamp and signature) without a value; the destination then gets exactly
/// those, besides the transport's own.
#[tokio::test]
async fn a_deliverys_next_request_is_what_its_replay_sends() {
    let sink = TestDestination::answering(200).await;
    let pipeline = OperatorPipeline::start(&[("sink", sink.url(), "")], Options::default()).await;
    assert_eq!(pipeline.send("plan-1", "push", b"{\"n\":1}").await, 202);
    sink.wait_for(1, Duration::from_secs(30)).await;
    let listed = pipeline
        .wait_for("delivered", "{ events { nodes { deliveries { id status } } } }", json!({}), |d| {
            d["events"]["nodes"][0]["deliveries"][0]["status"] == "DELIVERED"
        })
        .await;
    let id = listed["events"]["nodes"][0]["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let plan = pipeline
        .gql(
            "query($id: ID!) { delivery(id: $id) { nextRequest { destination url attempt headers { name value } } } }",
            json!({ "id": id }),
        )
        .await["delivery"]["nextRequest"]
        .clone();
    assert_eq!((plan["destination"].as_str(), plan["url"].as_str()), (Some("sink"), Some(sink.url().as_str())));
    assert_eq!(plan["attempt"], 2, "{plan}");
    let headers: Vec<(String, Option<String>)> = plan["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_ascii_lowercase(), h["value"].as_str().map(str::to_owned)))
        .collect();
    let later: Vec<&str> = headers.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| n.as_str()).collect();
    assert_eq!(later, ["webhook-timestamp", "webhook-signature"], "{plan}");

    let replayed = pipeline.gql("mutation($id: ID!) { replayDelivery(id: $id) { result } }", json!({ "id": id })).await;
    assert_eq!(replayed["replayDelivery"]["result"], "ENQUEUED");
    sink.wait_for(2, Duration::from_secs(30)).await;
    let sent = &sink.received()[1];
    for (name, value) in &headers {
        let got = sent.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert!(got.is_some(), "{name} was planned and not sent");
        if let Some(value) = value {
            assert_eq!(got.as_ref(), Some(value), "{name}");
        }
    }
    let mut unplanned: Vec<&str> = sent
        .headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| !headers.iter().any(|(planned, _)| planned == name))
        .collect();
    unplanned.sort_unstable();
    assert_eq!(unplanned, ["accept", "content-length", "host"], "only the transport's own headers are not planned");
}

#[tokio::test]
async fn a_replayed_dead_letter_gets_a_fresh_schedule_and_concurrent_replays_enqueue_it_once() {
    // Three failures dead-letter it (1 + 2 retries); after the replay, two more failures and a
    // success: only possible with a fresh retry schedule.
    let flaky = TestDestination::start(|n| (if n < 5 { 503 } else { 200 }, Duration::ZERO)).await;
    let extra = format!("{FAST_RETRIES}\nbreaker = {{ failure_threshold = 50, cooldown = \"1s\" }}");
    // No repair pass during the concurrent replays: the callers' own answers are counted.
    let options = Options { console_extra: "replay_repair_interval = \"1h\"".into(), ..Options::default() };
    let pipeline = OperatorPipeline::start(&[("flaky", flaky.url(), &extra)], options).await;
    assert_eq!(pipeline.send("evt-1", "push", b"{\"a\":1}").await, 202);
    let dead = pipeline
        .wait_for("dead letter", "{ deadLetters { nodes { id deadLetterReason attemptCount } } }", json!({}), |d| {
            d["deadLetters"]["nodes"].as_array().is_some_and(|n| n.len() == 1)
        })
        .await;
    let delivery = &dead["deadLetters"]["nodes"][0];
    assert_eq!(delivery["deadLetterReason"], "RETRIES_EXHAUSTED");
    assert_eq!(delivery["attemptCount"], 3);
    let id = delivery["id"].as_str().unwrap().to_owned();

    let replay = "mutation($id: ID!) { replayDelivery(id: $id) { result enqueued } }";
    let calls = (0..8).map(|_| pipeline.gql(replay, json!({ "id": id })));
    let results = futures::future::join_all(calls).await;
    let enqueued = results.iter().filter(|r| r["replayDelivery"]["enqueued"] == true).count();
    assert_eq!(enqueued, 1, "eight concurrent replays queue one task: {results:?}");

    let done = pipeline
        .wait_for("delivered after replay", DELIVERY_STATE, json!({ "id": id }), |d| {
            d["delivery"]["status"] == "DELIVERED"
        })
        .await;
    assert_eq!(done["delivery"]["attemptCount"], 6);
    assert_eq!(done["delivery"]["replays"], 1);
    let numbers: Vec<i64> =
        done["delivery"]["attempts"].as_array().unwrap().iter().map(|a| a["attempt"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "attempt history is kept across the replay");
    assert_eq!(flaky.count(), 6, "exactly three requests after the replay");
    // The destination was told the same attempt numbers the API shows, after the replay too.
    let sent: Vec<i64> = flaky
        .received()
        .iter()
        .map(|r| r.headers["inlet-delivery-attempt"].to_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sent, numbers, "Inlet-Delivery-Attempt is the attempt's number in the API");
    let delivered = flaky.delivered_keys();
    assert_eq!(delivered.get(&id), Some(&1), "the Idempotency-Key is the same delivery id");

    // Replaying the delivered one again is allowed and audited.
    let again = pipeline.gql(replay, json!({ "id": id })).await;
    assert_eq!(again["replayDelivery"]["result"], "ENQUEUED");
    let audit = pipeline.gql("{ auditLog { nodes { actor action target } } }", json!({})).await;
    let replays: Vec<&Value> =
        audit["auditLog"]["nodes"].as_array().unwrap().iter().filter(|n| n["action"] == "REPLAY_DELIVERY").collect();
    assert_eq!(replays.len(), 2, "one audit row per effective replay: {audit}");
    assert_eq!(replays[0]["actor"], "token:bootstrap");
    assert_eq!(replays[0]["target"], id.as_str());
}

/// Issue #16: an operator dismisses a dead letter (resolved without delivery): audited with who,
/// when and the note, shown as `DISMISSED` with its dismissal, out of the dead letters, their
/// counts and bulk replays, never attempted again; a replay still takes it back. Viewers may
/// not, and only a dead letter can be dismissed.
#[tokio::test]
async fn a_dismissed_dead_letter_is_resolved_without_delivery_audited_and_can_be_replayed_later() {
    let sink = TestDestination::answering(400).await;
    let pipeline = OperatorPipeline::start(&[("sink", sink.url(), "")], Options::default()).await;
    for n in 0..3 {
        assert_eq!(pipeline.send(&format!("dismiss-{n}"), "push", b"{}").await, 202);
    }
    let dead = pipeline
        .wait_for("three dead letters", "{ deadLetters { nodes { id event { eventId } } } }", json!({}), |d| {
            d["deadLetters"]["nodes"].as_array().is_some_and(|n| n.len() == 3)
        })
        .await;
    let id_of = |event: &str| {
        dead["deadLetters"]["nodes"].as_array().unwrap().iter().find(|n| n["event"]["eventId"] == event).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let dismissed_id = id_of("dismiss-0");
    let create = "mutation($name: String!, $role: RoleName!) { createApiToken(name: $name, role: $role) { token } }";
    let token = |name: &'static str, role: &'static str| {
        let pipeline = &pipeline;
        async move {
            let created = pipeline.gql(create, json!({"name": name, "role": role})).await;
            created["createApiToken"]["token"].as_str().unwrap().to_owned()
        }
    };
    let (viewer, operator) = (token("dashboards", "VIEWER").await, token("runbook", "OPERATOR").await);
    let bulk = "mutation($f: DeadLetterFilter!, $dry: Boolean!, $t: String) {
        bulkReplay(filter: $f, dryRun: $dry, previewToken: $t) { count previewToken job { id } } }";
    let filter = json!({"destination": "sink"});
    let previewed = pipeline.gql(bulk, json!({"f": filter, "dry": true})).await;
    assert_eq!(previewed["bulkReplay"]["count"], 3);
    let dismiss = "mutation($id: ID!, $note: String) {
        dismissDeadLetter(id: $id, note: $note) { id status dismissal { by at note } attemptCount } }";
    let note = json!({"id": dismissed_id, "note": "  order cancelled upstream "});
    assert_eq!(code(&pipeline.gql_as(&viewer, dismiss, note.clone()).await), "FORBIDDEN");
    let too_long = json!({"id": dismissed_id, "note": "x".repeat(501)});
    assert_eq!(code(&pipeline.gql_as(&operator, dismiss, too_long).await), "BAD_USER_INPUT");

    let answer = pipeline.gql_as(&operator, dismiss, note.clone()).await;
    let dismissed = &answer["data"]["dismissDeadLetter"];
    assert_eq!(dismissed["status"], "DISMISSED", "{answer}");
    assert_eq!(dismissed["dismissal"]["by"], "token:runbook");
    assert_eq!(dismissed["dismissal"]["note"], "order cancelled upstream");
    assert!(dismissed["dismissal"]["at"].as_str().is_some_and(|at| at.ends_with('Z')), "{answer}");
    let again = pipeline.gql_as(&operator, dismiss, note).await;
    assert_eq!(code(&again), "BAD_USER_INPUT", "{again}");
    assert!(again["errors"][0]["message"].as_str().unwrap().contains("this delivery is dismissed"), "{again}");
    let unknown = pipeline.gql_as(&operator, dismiss, json!({"id": "dlv_missing"})).await;
    assert_eq!(code(&unknown), "NOT_FOUND");

    // Out of the dead letters and their counts; visible as dismissed.
    let state = pipeline
        .gql(
            "{ counts { deadLettered dismissed } destinations { deadLettered dismissed }
               deadLetters { nodes { id } } events(filter: { status: DISMISSED }) { nodes { eventId } } }",
            json!({}),
        )
        .await;
    assert_eq!(state["counts"], json!({"deadLettered": 2, "dismissed": 1}));
    assert_eq!(state["destinations"], json!([{"deadLettered": 2, "dismissed": 1}]));
    let listed: Vec<&str> =
        state["deadLetters"]["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert!(listed.len() == 2 && !listed.contains(&dismissed_id.as_str()), "{state}");
    assert_eq!(state["events"]["nodes"], json!([{"eventId": "dismiss-0"}]));
    let audit = pipeline.gql("{ auditLog(first: 1) { nodes { actor action target detail } } }", json!({})).await;
    assert_eq!(
        audit["auditLog"]["nodes"][0],
        json!({"actor": "token:runbook", "action": "DISMISS_DEAD_LETTER", "target": dismissed_id,
               "detail": "order cancelled upstream"})
    );

    // A dry run taken before the dismissal no longer stands; a bulk replay of every dead letter
    // of the destination leaves it out; it is never sent.
    sink.set_behaviour(|_| (200, Duration::ZERO));
    let token = previewed["bulkReplay"]["previewToken"].clone();
    let stale = pipeline.gql_as(ADMIN_TOKEN, bulk, json!({"f": filter, "dry": false, "t": token})).await;
    assert_eq!(code(&stale), "PREVIEW_STALE", "{stale}");
    assert_eq!(pipeline.gql(bulk, json!({"f": filter, "dry": true})).await["bulkReplay"]["count"], 2);
    let job = pipeline.gql(bulk, json!({"f": filter, "dry": false})).await["bulkReplay"]["job"]["id"].clone();
    pipeline
        .wait_for(
            "bulk replay finished",
            "query($id: ID!) { bulkReplay(id: $id) { status enqueued } }",
            json!({"id": job}),
            |d| d["bulkReplay"]["status"] == "FINISHED",
        )
        .await;
    pipeline.wait_for("two delivered", "{ counts { delivered } }", json!({}), |d| d["counts"]["delivered"] == 2).await;
    assert!(!sink.delivered_keys().contains_key(&dismissed_id), "a dismissed dead letter is not sent");
    let untouched = pipeline.gql(DELIVERY_STATE, json!({"id": dismissed_id})).await;
    assert_eq!(
        (&untouched["delivery"]["status"], &untouched["delivery"]["attemptCount"]),
        (&json!("DISMISSED"), &json!(1))
    );

    // Someone changes their mind: a replay takes it back and delivers it.
    let replay = "mutation($id: ID!) { replayDelivery(id: $id) { result } }";
    assert_eq!(
        pipeline.gql_as(&operator, replay, json!({"id": dismissed_id})).await["data"]["replayDelivery"]["result"],
        "ENQUEUED"
    );
    let done = pipeline
        .wait_for(
            "the dismissed one delivered after a replay",
            "query($id: ID!) { delivery(id: $id) { status dismissal { by } } }",
            json!({"id": dismissed_id}),
            |d| d["delivery"]["status"] == "DELIVERED",
        )
        .await;
    assert_eq!(done["delivery"]["dismissal"], Value::Null, "its dismissal ended");
    assert_eq!(sink.delivered_keys().get(&dismissed_id), Some(&1));
    let audit = pipeline.gql("{ auditLog(first: 1) { nodes { action detail } } }", json!({})).await;
    assert_eq!(
        audit["auditLog"]["nodes"][0],
        json!({"action": "REPLAY_DELIVERY", "detail": "previous status dismissed; config current"})
    );
}

/// Issue #16: an operator replays an event to another destination (staging, which no route
/// selects), or again to its own: each time a new delivery with an id (so an `Idempotency-Key`)
/// of its own, fixed for its attempts, its lineage visible (which delivery, by whom, when) and
/// audited; the delivery it starts from is untouched. What it will send is readable first.
/// Viewers may not; unknown destinations, deliveries and events are refused.
#[tokio::test]
async fn an_event_is_replayed_to_another_destination_as_a_new_delivery_with_its_lineage() {
    let orders = TestDestination::answering(400).await;
    let staging = TestDestination::answering(200).await;
    let pipeline = OperatorPipeline::start(
        &[("orders", orders.url(), "")],
        Options { tail: unrouted_destination("staging", &staging.url()), ..Options::default() },
    )
    .await;
    assert_eq!(pipeline.send("to-staging", "push", b"{\"order\":7}").await, 202);
    let dead = pipeline
        .wait_for("a dead letter", "{ deadLetters { nodes { id event { id } } } }", json!({}), |d| {
            d["deadLetters"]["nodes"].as_array().is_some_and(|n| n.len() == 1)
        })
        .await;
    let original = dead["deadLetters"]["nodes"][0]["id"].as_str().unwrap().to_owned();
    let event = dead["deadLetters"]["nodes"][0]["event"]["id"].as_str().unwrap().to_owned();
    let create = "mutation($name: String!, $role: RoleName!) { createApiToken(name: $name, role: $role) { token } }";
    let viewer = pipeline.gql(create, json!({"name": "dashboards", "role": "VIEWER"})).await["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let operator =
        pipeline.gql(create, json!({"name": "runbook", "role": "OPERATOR"})).await["createApiToken"]["token"]
            .as_str()
            .unwrap()
            .to_owned();

    // What it will send: a first attempt, its id made when the delivery is.
    let plan = pipeline
        .gql(
            "query($id: ID!) { event(id: $id) { requestTo(destination: \"staging\") {
                 destination url attempt headers { name value } } } }",
            json!({"id": event}),
        )
        .await["event"]["requestTo"]
        .clone();
    assert_eq!((plan["url"].as_str(), plan["attempt"].as_i64()), (Some(staging.url().as_str()), Some(1)));
    let unknown: Vec<&str> = plan["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["value"].is_null())
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        unknown,
        ["Idempotency-Key", "Inlet-Delivery-Id", "webhook-id", "webhook-timestamp", "webhook-signature"]
    );

    let replay =
        "mutation($d: ID, $e: ID, $to: String!) { replayToDestination(deliveryId: $d, eventId: $e, destination: $to) {
        id destination status replayOf createdBy createdAt event { eventId } } }";
    let from_original = json!({"d": original, "to": "staging"});
    assert_eq!(code(&pipeline.gql_as(&viewer, replay, from_original.clone()).await), "FORBIDDEN");
    let answer = pipeline.gql_as(&operator, replay, from_original).await;
    let made = &answer["data"]["replayToDestination"];
    let first = made["id"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned();
    assert_eq!(first, format!("{}_staging~r1", original.strip_suffix("_orders").unwrap()));
    assert_eq!(
        (&made["destination"], &made["status"], &made["replayOf"], &made["createdBy"]),
        (&json!("staging"), &json!("PENDING"), &json!(original), &json!("token:runbook"))
    );
    assert!(made["createdAt"].as_str().is_some_and(|at| at.ends_with('Z')), "{answer}");
    assert_eq!(made["event"]["eventId"], "to-staging");
    staging.wait_for(1, Duration::from_secs(30)).await;
    let received = &staging.received()[0];
    assert_eq!(received.headers["idempotency-key"], first.as_str(), "its own key");
    assert_eq!(received.headers["webhook-id"], first.as_str());
    assert_eq!(received.body.as_ref(), b"{\"order\":7}");
    assert!(crate::support::inlet_signature_valid(received), "signed with staging's secret");

    // Again, from the event: another new delivery, another key; and to its own destination.
    orders.set_behaviour(|_| (200, Duration::ZERO));
    let from_event = pipeline.gql_as(&operator, replay, json!({"e": event, "to": "staging"})).await;
    let second = from_event["data"]["replayToDestination"]["id"].as_str().unwrap().to_owned();
    assert!(second.ends_with("_staging~r2"), "{from_event}");
    assert_eq!(from_event["data"]["replayToDestination"]["replayOf"], Value::Null);
    let to_orders = pipeline.gql_as(&operator, replay, json!({"d": original, "to": "orders"})).await;
    let third = to_orders["data"]["replayToDestination"]["id"].as_str().unwrap().to_owned();
    assert!(third.ends_with("_orders~r3"), "{to_orders}");
    let all = pipeline
        .wait_for(
            "the three replays delivered",
            "query($id: ID!) { event(id: $id) { deliveries { id status attemptCount replayOf createdBy } } }",
            json!({"id": event}),
            |d| d["event"]["deliveries"].as_array().unwrap().iter().filter(|d| d["status"] == "DELIVERED").count() == 3,
        )
        .await;
    let deliveries = all["event"]["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4, "{all}");
    let routed = deliveries.iter().find(|d| d["id"] == original.as_str()).unwrap();
    assert_eq!(
        (&routed["status"], &routed["attemptCount"], &routed["createdBy"]),
        (&json!("DEAD_LETTERED"), &json!(1), &Value::Null),
        "the delivery it started from is untouched"
    );
    assert_eq!(
        staging.delivered_keys().keys().cloned().collect::<std::collections::BTreeSet<_>>(),
        [first.clone(), second.clone()].into()
    );
    assert_eq!(orders.delivered_keys().get(&third), Some(&1));
    assert_eq!(orders.delivered_keys().get(&original), None, "never under the original's key");

    // Refusals.
    let refusals = [
        (json!({"d": original, "to": "nowhere"}), "BAD_USER_INPUT"),
        (json!({"to": "staging"}), "BAD_USER_INPUT"),
        (json!({"d": original, "e": event, "to": "staging"}), "BAD_USER_INPUT"),
        (json!({"d": "dlv_missing", "to": "staging"}), "NOT_FOUND"),
        (json!({"e": "999999", "to": "staging"}), "NOT_FOUND"),
    ];
    for (variables, expected) in refusals {
        assert_eq!(code(&pipeline.gql_as(&operator, replay, variables.clone()).await), expected, "{variables}");
    }

    let audit = pipeline.gql("{ auditLog(first: 3) { nodes { actor action target detail } } }", json!({})).await;
    let event_number = event.as_str();
    assert_eq!(
        audit["auditLog"]["nodes"],
        json!([
            {"actor": "token:runbook", "action": "REPLAY_TO_DESTINATION", "target": third, "detail": format!("replay of {original} to orders; config current")},
            {"actor": "token:runbook", "action": "REPLAY_TO_DESTINATION", "target": second, "detail": format!("replay of event {event_number} to staging; config current")},
            {"actor": "token:runbook", "action": "REPLAY_TO_DESTINATION", "target": first, "detail": format!("replay of {original} to staging; config current")},
        ])
    );
}

#[tokio::test]
async fn bulk_replay_previews_with_a_dry_run_then_replays_at_a_capped_rate_and_can_be_cancelled() {
    let sink = TestDestination::answering(400).await;
    let pipeline = OperatorPipeline::start(
        &[("sink", sink.url(), "")],
        Options { console_extra: "max_replay_rate = 200".into(), ..Options::default() },
    )
    .await;
    for n in 0..6 {
        assert_eq!(pipeline.send(&format!("bulk-{n}"), "push", b"{}").await, 202);
    }
    pipeline
        .wait_for("six dead letters", "{ counts { deadLettered } }", json!({}), |d| d["counts"]["deadLettered"] == 6)
        .await;
    sink.set_behaviour(|_| (200, Duration::ZERO));

    let bulk = "mutation($f: DeadLetterFilter!, $dry: Boolean!, $rate: Int) {
        bulkReplay(filter: $f, dryRun: $dry, ratePerSecond: $rate) { dryRun count sample { id } job { id status total ratePerSecond } } }";
    let filter = json!({"destination": "sink", "reason": "PERMANENT_4XX"});
    let dry = pipeline.gql(bulk, json!({"f": filter, "dry": true})).await;
    assert_eq!(dry["bulkReplay"]["count"], 6);
    assert_eq!(dry["bulkReplay"]["sample"].as_array().unwrap().len(), 6);
    assert_eq!(dry["bulkReplay"]["job"], Value::Null);
    let nothing = pipeline.gql(bulk, json!({"f": {"destination": "other"}, "dry": true})).await;
    assert_eq!(nothing["bulkReplay"]["count"], 0);
    assert_eq!(
        pipeline.gql("{ counts { deadLettered } }", json!({})).await["counts"]["deadLettered"],
        6,
        "a dry run changes nothing"
    );

    // One per second, cancelled at once: at most the first one went.
    let slow = pipeline.gql(bulk, json!({"f": filter, "dry": false, "rate": 1})).await;
    let job = &slow["bulkReplay"]["job"];
    assert_eq!(job["total"], 6);
    assert_eq!(job["ratePerSecond"], 1);
    let cancelled = pipeline
        .gql("mutation($id: ID!) { cancelBulkReplay(id: $id) { status done total } }", json!({"id": job["id"]}))
        .await;
    assert_eq!(cancelled["cancelBulkReplay"]["status"], "CANCELLED");
    let done_before_cancel = cancelled["cancelBulkReplay"]["done"].as_i64().unwrap();
    assert!(done_before_cancel < 6, "{cancelled}");

    // The rest, at a rate above the cap: capped.
    let fast = pipeline.gql(bulk, json!({"f": filter, "dry": false, "rate": 100000})).await;
    assert_eq!(fast["bulkReplay"]["job"]["ratePerSecond"], 200);
    assert_eq!(fast["bulkReplay"]["count"], 6 - done_before_cancel);
    let job_id = fast["bulkReplay"]["job"]["id"].clone();
    let finished = pipeline
        .wait_for(
            "bulk replay finished",
            "query($id: ID!) { bulkReplay(id: $id) { status done enqueued } }",
            json!({"id": job_id}),
            |d| d["bulkReplay"]["status"] != "RUNNING",
        )
        .await;
    assert_eq!(finished["bulkReplay"]["status"], "FINISHED");
    assert_eq!(finished["bulkReplay"]["enqueued"], 6 - done_before_cancel);
    pipeline
        .wait_for("all delivered", "{ counts { delivered deadLettered } }", json!({}), |d| {
            d["counts"] == json!({"delivered": 6, "deadLettered": 0})
        })
        .await;
    assert_eq!(sink.delivered_keys().len(), 6);

    let audit = pipeline.gql("{ auditLog { nodes { action count } } }", json!({})).await;
    let actions: Vec<(String, i64)> = audit["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["action"].as_str().unwrap().to_owned(), n["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("BULK_REPLAY".to_owned(), 6 - done_before_cancel),
            ("CANCEL_BULK_REPLAY".to_owned(), 1),
            ("BULK_REPLAY".to_owned(), 6)
        ]
    );
}

/// Issue #16: a bulk replay confirmed with its dry run's token replays exactly what the dry run
/// counted: not a dead letter that arrived after it, not under another filter, and not when
/// the previewed dead letters changed meanwhile.
#[tokio::test]
async fn a_confirmed_bulk_replay_replays_exactly_what_its_dry_run_previewed() {
    let sink = TestDestination::answering(400).await;
    let pipeline = OperatorPipeline::start(
        &[("sink", sink.url(), "")],
        Options { console_extra: "max_replay_rate = 200".into(), ..Options::default() },
    )
    .await;
    let dead = |n: i64| move |d: &Value| d["counts"]["deadLettered"] == n;
    for n in 0..3 {
        assert_eq!(pipeline.send(&format!("seen-{n}"), "push", b"{}").await, 202);
    }
    pipeline.wait_for("three dead letters", "{ counts { deadLettered } }", json!({}), dead(3)).await;
    let bulk = "mutation($f: DeadLetterFilter!, $dry: Boolean!, $t: String) {
        bulkReplay(filter: $f, dryRun: $dry, previewToken: $t) { count previewToken job { id total } } }";
    let filter = json!({"destination": "sink"});
    let dry = pipeline.gql(bulk, json!({"f": filter, "dry": true})).await;
    assert_eq!(dry["bulkReplay"]["count"], 3, "{dry}");
    let token = dry["bulkReplay"]["previewToken"].as_str().unwrap().to_owned();

    // A fourth dead letter after the preview.
    assert_eq!(pipeline.send("late", "push", b"{}").await, 202);
    pipeline.wait_for("four dead letters", "{ counts { deadLettered } }", json!({}), dead(4)).await;
    sink.set_behaviour(|_| (200, Duration::ZERO));

    // Another filter, or a token that is no preview's: refused, nothing replayed.
    let other = json!({"destination": "sink", "reason": "PERMANENT_4XX"});
    let refused = pipeline.gql_as(ADMIN_TOKEN, bulk, json!({"f": other, "dry": false, "t": token})).await;
    assert_eq!(code(&refused), "PREVIEW_STALE", "{refused}");
    let forged = pipeline.gql_as(ADMIN_TOKEN, bulk, json!({"f": filter, "dry": false, "t": "brp_0000"})).await;
    assert_eq!(code(&forged), "PREVIEW_STALE", "{forged}");

    let confirmed = pipeline.gql(bulk, json!({"f": filter, "dry": false, "t": token})).await;
    assert_eq!(confirmed["bulkReplay"]["count"], 3, "{confirmed}");
    assert_eq!(confirmed["bulkReplay"]["job"]["total"], 3, "{confirmed}");
    let finished = pipeline
        .wait_for(
            "bulk replay finished",
            "query($id: ID!) { bulkReplay(id: $id) { status done enqueued } }",
            json!({"id": confirmed["bulkReplay"]["job"]["id"]}),
            |d| d["bulkReplay"]["status"] != "RUNNING",
        )
        .await;
    assert_eq!(finished["bulkReplay"], json!({"status": "FINISHED", "done": 3, "enqueued": 3}));
    pipeline
        .wait_for("the previewed three delivered", "{ counts { delivered deadLettered } }", json!({}), |d| {
            d["counts"] == json!({"delivered": 3, "deadLettered": 1})
        })
        .await;
    let left = pipeline.gql("{ deadLetters { nodes { event { eventId } } } }", json!({})).await;
    let left = left["deadLetters"]["nodes"].as_array().unwrap().clone();
    assert_eq!(left.len(), 1);
    assert!(left[0]["event"]["eventId"].as_str().unwrap().contains("late"), "{left:?}");
    assert_eq!(sink.delivered_keys().len(), 3, "never the fourth");

    // The previewed dead letters are gone now: the same token is refused, nothing replayed.
    let again = pipeline.gql_as(ADMIN_TOKEN, bulk, json!({"f": filter, "dry": false, "t": token})).await;
    assert_eq!(code(&again), "PREVIEW_STALE", "{again}");
    assert_eq!(
        pipeline.gql("{ counts { deadLettered } }", json!({})).await["counts"]["deadLettered"],
        1,
        "the late dead letter stays"
    );
}

/// `max_replay_rate` is a cap per destination, not per job: four bulk jobs started together
/// against one destination re-queue at most the cap per second between them. At the cap, 80
/// deliveries take at least 60 intervals after a burst of 20 (3 s); four jobs each paced at
/// the cap alone take 19 intervals (under 1 s).
#[tokio::test]
async fn concurrent_bulk_replays_share_their_destinations_rate_cap() {
    const RATE: i64 = 20;
    const JOBS: usize = 4;
    const EACH: usize = 20;
    let sink = TestDestination::answering(400).await;
    let pipeline = OperatorPipeline::start(
        &[("sink", sink.url(), "")],
        Options { console_extra: format!("max_replay_rate = {RATE}"), ..Options::default() },
    )
    .await;
    for job in 0..JOBS {
        for n in 0..EACH {
            assert_eq!(pipeline.send(&format!("job{job}-{n:02}"), "push", b"{}").await, 202);
        }
    }
    let total = (JOBS * EACH) as i64;
    pipeline
        .wait_for("dead letters", "{ counts { deadLettered } }", json!({}), |d| d["counts"]["deadLettered"] == total)
        .await;
    sink.set_behaviour(|_| (200, Duration::ZERO));

    let bulk =
        "mutation($f: DeadLetterFilter!) { bulkReplay(filter: $f, dryRun: false) { job { id total ratePerSecond } } }";
    let started = futures::future::join_all(
        (0..JOBS).map(|job| pipeline.gql(bulk, json!({"f": {"destination": "sink", "text": format!("job{job}-")}}))),
    )
    .await;
    let mut ids = Vec::new();
    for answer in &started {
        let job = &answer["bulkReplay"]["job"];
        assert_eq!((job["total"].as_i64(), job["ratePerSecond"].as_i64()), (Some(EACH as i64), Some(RATE)), "{answer}");
        ids.push(job["id"].clone());
    }
    for id in &ids {
        let done = pipeline
            .wait_for(
                "bulk replay finished",
                "query($id: ID!) { bulkReplay(id: $id) { status enqueued } }",
                json!({"id": id}),
                |d| d["bulkReplay"]["status"] != "RUNNING",
            )
            .await;
        assert_eq!(done["bulkReplay"], json!({"status": "FINISHED", "enqueued": EACH}), "{done}");
    }
    let span_ms = pipeline.store.scalar_i64("SELECT max(finished_at_ms) - min(created_at_ms) FROM bulk_replays").await;
    // A second's worth goes at once, each later one an interval after the previous; 80 % of
    // that is the bound (timer granularity), still 2.5 times what four jobs paced alone take.
    let floor_ms = (total - RATE) * 1_000 / RATE * 8 / 10;
    assert!(span_ms >= floor_ms, "{total} replays in {span_ms} ms: over {RATE}/s to one destination");
}

#[tokio::test]
async fn replays_asked_one_by_one_are_rate_limited_per_caller() {
    let pipeline =
        OperatorPipeline::start(&[], Options { console_extra: "max_replay_rate = 3".into(), ..Options::default() })
            .await;
    let replay = "mutation { replayDelivery(id: \"dlv_missing\") { result } }";
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(code(&pipeline.gql_as(ADMIN_TOKEN, replay, json!({})).await));
    }
    // One per second, burst one: the first goes through; calls within the same second do not.
    assert_eq!(codes[0], "NOT_FOUND", "{codes:?}");
    assert!(codes.iter().any(|c| c == "RATE_LIMITED"), "{codes:?}");
    assert!(codes.iter().all(|c| c == "NOT_FOUND" || c == "RATE_LIMITED"), "{codes:?}");
    // Another caller has its own budget.
    let operator = pipeline
        .gql("mutation { createApiToken(name: \"ops\", role: OPERATOR) { token } }", json!({}))
        .await["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(code(&pipeline.gql_as(&operator, replay, json!({})).await), "NOT_FOUND");
    // A replay to a destination counts against the same budget as any other replay.
    let to = "mutation { replayToDestination(eventId: \"1\", destination: \"nowhere\") { id } }";
    assert_eq!(code(&pipeline.gql_as(ADMIN_TOKEN, to, json!({})).await), "RATE_LIMITED");
}

/// A delivery put back to pending with nobody told (a lost wake-up: the state a replay's commit
/// leaves if nothing else happens) is found by its destination's scheduler and delivered.
#[tokio::test]
async fn a_due_delivery_nobody_announced_is_found_by_the_scheduler() {
    let sink = TestDestination::answering(400).await;
    let pipeline = OperatorPipeline::start(&[("sink", sink.url(), "")], Options::default()).await;
    assert_eq!(pipeline.send("lost-1", "push", b"{}").await, 202);
    let dead = pipeline
        .wait_for("dead letter", "{ deadLetters { nodes { id } } }", json!({}), |d| {
            d["deadLetters"]["nodes"].as_array().is_some_and(|n| n.len() == 1)
        })
        .await;
    let id = dead["deadLetters"]["nodes"][0]["id"].as_str().unwrap().to_owned();
    sink.set_behaviour(|_| (200, Duration::ZERO));
    let marked = pipeline
        .store
        .execute(&format!(
            "UPDATE deliveries SET status = 'pending', replays = 1, attempt_base = attempts,
                 dead_letter_reason = NULL, next_attempt_at_ms = 0, lease_until_ms = NULL WHERE id = {}",
            sql_text(&id)
        ))
        .await;
    assert_eq!(marked, 1);
    let done = pipeline
        .wait_for("delivered by the scheduler", DELIVERY_STATE, json!({ "id": id }), |d| {
            d["delivery"]["status"] == "DELIVERED"
        })
        .await;
    assert_eq!(done["delivery"]["attemptCount"], 2);
    assert_eq!(sink.delivered_keys().get(&id), Some(&1));
}

/// Issue #16: `events(filter: {search})` finds events by their body's text (every term,
/// case-insensitively, inside longer words too), combined with the other filters; each hit
/// carries a snippet whose highlights are UTF-16 offsets (what JavaScript slices by); a body that
/// is not UTF-8 is never found; a search the index cannot answer is a clear input error.
#[tokio::test]
async fn events_are_searched_by_body_text_with_the_matches_marked() {
    let sink = TestDestination::answering(200).await;
    let pipeline = OperatorPipeline::start(&[("sink", sink.url(), "")], Options::default()).await;
    let bodies: [(&str, &str, &[u8]); 4] = [
        ("evt-a", "push", "{\"note\":\"😀 paid\",\"order\":\"ORD_12345\"}".as_bytes()),
        ("evt-b", "issues", b"{\"order\":\"ord_12999\",\"email\":\"alice@example.com\"}"),
        ("evt-c", "push", b"{\"order\":\"ord_777\"}"),
        ("evt-d", "push", b"\xff\xfe ord_12345 not text"),
    ];
    for (id, event, body) in bodies {
        assert_eq!(pipeline.send(id, event, body).await, 202);
    }
    pipeline.wait_for("every event recorded", "{ counts { events } }", json!({}), |d| d["counts"]["events"] == 4).await;

    let search = |filter: Value| {
        let pipeline = &pipeline;
        async move {
            pipeline
                .gql_as(
                    ADMIN_TOKEN,
                    "query($f: EventFilter) { events(filter: $f, first: 10) {
                        nodes { eventId searchMatch { snippet highlights { start end } truncatedStart truncatedEnd } }
                        pageInfo { hasNextPage } } }",
                    json!({ "f": filter }),
                )
                .await
        }
    };
    let found = |answer: &Value| -> Vec<String> {
        let nodes = answer["data"]["events"]["nodes"].as_array().unwrap_or_else(|| panic!("{answer}"));
        nodes.iter().map(|n| n["eventId"].as_str().unwrap().to_owned()).collect()
    };

    let answer = search(json!({"search": "ord_12"})).await;
    assert_eq!(found(&answer), ["evt-b", "evt-a"], "newest first; the body that is not UTF-8 is not found");
    let hit = &answer["data"]["events"]["nodes"][1]["searchMatch"];
    let snippet = "{\"note\":\"😀 paid\",\"order\":\"ORD_12345\"}";
    assert_eq!(hit["snippet"], snippet);
    // "ORD_12" starts after 26 code points, 27 UTF-16 code units (the emoji takes two).
    let start = snippet.find("ORD_12").map(|at| snippet[..at].encode_utf16().count()).unwrap();
    assert_eq!(start, 27);
    assert_eq!(hit["highlights"], json!([{ "start": start, "end": start + 6 }]));
    assert_eq!((hit["truncatedStart"].as_bool(), hit["truncatedEnd"].as_bool()), (Some(false), Some(false)));

    assert_eq!(found(&search(json!({"search": "\"ALICE@example\" ord_"})).await), ["evt-b"]);
    assert_eq!(found(&search(json!({"search": "ord_", "eventType": "push"})).await), ["evt-c", "evt-a"]);
    assert_eq!(found(&search(json!({"search": "ord_", "text": "evt-c"})).await), ["evt-c"]);
    assert!(found(&search(json!({"search": "nowhere"})).await).is_empty());
    // White space alone is no search; without one, no event has a searchMatch.
    let all = search(json!({"search": "  "})).await;
    assert_eq!(found(&all).len(), 4);
    assert!(all["data"]["events"]["nodes"].as_array().unwrap().iter().all(|n| n["searchMatch"].is_null()));

    for (refused, says) in [
        ("ok", "at least 3 characters"),
        ("\"paid", "not closed"),
        (&"x".repeat(201) as &str, "longer than 200 characters"),
        ("aaa bbb ccc ddd eee fff ggg hhh iii", "more than 8 terms"),
    ] {
        let answer = search(json!({ "search": refused })).await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap();
        assert!(message.starts_with("invalid argument: search: ") && message.contains(says), "{message}");
    }
}
