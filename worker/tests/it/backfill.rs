//! Provider backfill through the API, against local servers implementing the documented
//! endpoints: Stripe's events list (cursor pages, `has_more`, `created[gte]`, newest first) and
//! GitHub's hook deliveries (pages through `Link: rel="next"`, redelivery by
//! `POST …/attempts`, after which the fake GitHub sends the webhook again, signed, through
//! ingest), each answering one `429` with `Retry-After`. Exactly the events not stored are
//! recovered, nothing twice on a second run, a dry run changes nothing, real runs are audited,
//! and only admins may run one.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use inlet_shared::signature::sign;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::operator_support::{OperatorPipeline, Options};
use crate::support::TestDestination;

const STRIPE_SIGNING: &str = "whsec_stripe_signing";
const STRIPE_KEY: &str = "rk_test_backfill_key";
const GITHUB_SECRET: &str = "github-hook-secret";
const GITHUB_TOKEN: &str = "ghp_backfill_token";

const BACKFILL: &str = "mutation($s: String!, $since: DateTime!, $dry: Boolean!) { backfill(source: $s, since: $since, \
                        dryRun: $dry) { listed alreadyStored recovered failed complete dryRun } }";

/// Requests a fake provider answers while its gate is open (more than any test sends).
const GATE_PERMITS: u32 = 1_000_000;

/// What a fake provider answers: (status, extra headers, body).
type Answer = (u16, Vec<(String, String)>, String);

/// A request a fake provider got: method, path and query, the headers it checks.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: String,
    api_version: String,
}

/// A provider API on loopback: `answer(method, path and query)` says what to send back.
struct FakeApi {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How many requests arrived (before any answer).
    arrived: tokio::sync::watch::Receiver<usize>,
    /// Each answer waits for a permit: [`FakeApi::hold`] stops answering, [`FakeApi::release`]
    /// lets everything through.
    gate: Arc<tokio::sync::Semaphore>,
}

impl FakeApi {
    /// Serves on `listener` (bound by the caller, so that the answers may name its address).
    fn start(listener: TcpListener, answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> FakeApi {
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let answer = Arc::new(answer);
        let (arrivals, arrived) = tokio::sync::watch::channel(0usize);
        let arrivals = Arc::new(arrivals);
        let gate = Arc::new(tokio::sync::Semaphore::new(GATE_PERMITS as usize));
        let (seen_c, gate_c) = (Arc::clone(&seen), Arc::clone(&gate));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, answer, arrivals, gate) =
                    (Arc::clone(&seen_c), Arc::clone(&answer), Arc::clone(&arrivals), Arc::clone(&gate_c));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (seen, answer, arrivals, gate) =
                            (Arc::clone(&seen), Arc::clone(&answer), Arc::clone(&arrivals), Arc::clone(&gate));
                        async move {
                            arrivals.send_modify(|n| *n += 1);
                            gate.acquire().await.unwrap().forget();
                            let header = |name: &str| {
                                request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
                            };
                            let target = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                            seen.lock().unwrap().push(Seen {
                                method: request.method().to_string(),
                                target: target.clone(),
                                authorization: header("authorization"),
                                api_version: header("x-github-api-version"),
                            });
                            let (status, headers, body) = answer(request.method().as_str(), &target);
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            for (name, value) in headers {
                                response.headers_mut().insert(
                                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                                    http::HeaderValue::from_str(&value).unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi { addr, seen, arrived, gate }
    }

    /// From now on requests wait for [`FakeApi::release`].
    async fn hold(&self) {
        // Whatever is left: each answer spent one permit.
        let left = u32::try_from(self.gate.available_permits()).unwrap();
        self.gate.acquire_many(left).await.unwrap().forget();
    }

    fn release(&self) {
        self.gate.add_permits(GATE_PERMITS as usize);
    }

    /// Waits until `n` requests arrived.
    async fn arrivals(&self, n: usize) {
        let mut arrived = self.arrived.clone();
        tokio::time::timeout(Duration::from_secs(30), arrived.wait_for(|count| *count >= n)).await.unwrap().unwrap();
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn rfc3339(unix_s: i64) -> String {
    chrono::DateTime::from_timestamp(unix_s, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The query parameter `name` of `target`.
fn param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// A Stripe event object as the events API lists it (pretty-printed, as Stripe's API is).
fn stripe_event(n: i64, created: i64) -> Value {
    json!({ "id": format!("evt_{n:04}"), "object": "event", "created": created, "type": "invoice.paid",
            "data": { "object": { "id": format!("in_{n}"), "amount_paid": 100 * n } } })
}

fn stripe_tail(api_base: &str) -> String {
    format!(
        "\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nsecrets = [\"{STRIPE_SIGNING}\"]\n\
         [[routes]]\nsource = \"stripe\"\ndestinations = [\"orders\"]\n\
         [[backfill]]\nsource = \"stripe\"\napi_key = \"{STRIPE_KEY}\"\napi_base = \"{api_base}\"\n\
         requests_per_second = 20\n"
    )
}

#[tokio::test]
async fn stripe_backfill_publishes_exactly_the_events_not_stored_once_audited_admins_only() {
    // 23 events since T, newest first, in pages of 5 (the client asks for 100; the fake gives
    // fewer, so several pages and cursors are exercised); two more before T.
    let start = now_s() - 3_000;
    let events: Vec<Value> = (0..25).map(|n| stripe_event(n, start + n * 100)).collect();
    let since = start + 200; // events 0 and 1 are older
    let newest_first: Vec<Value> = events.iter().rev().cloned().collect();
    let page_two_asked = Arc::new(Mutex::new(0));
    let asked = Arc::clone(&page_two_asked);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = FakeApi::start(listener, move |method, target| {
        assert_eq!(method, "GET");
        assert!(target.starts_with("/v1/events?"), "{target}");
        let gte: i64 = param(target, "created%5Bgte%5D").unwrap().parse().unwrap();
        let listed: Vec<&Value> = newest_first.iter().filter(|e| e["created"].as_i64().unwrap() >= gte).collect();
        let from = match param(target, "starting_after") {
            Some(after) => {
                // The first ask for the second page is told to slow down.
                if listed[4]["id"] == after.as_str() {
                    let mut asked = asked.lock().unwrap();
                    *asked += 1;
                    if *asked == 1 {
                        return (429, vec![("retry-after".into(), "1".into())], "{}".into());
                    }
                }
                listed.iter().position(|e| e["id"] == after.as_str()).unwrap() + 1
            }
            None => 0,
        };
        let page: Vec<&Value> = listed.iter().skip(from).take(5).copied().collect();
        let has_more = from + page.len() < listed.len();
        let body = serde_json::to_string_pretty(&json!({ "object": "list", "url": "/v1/events", "has_more": has_more,
                                                          "data": page }))
        .unwrap();
        (200, vec![("content-type".into(), "application/json".into())], body)
    });

    let destination = TestDestination::answering(200).await;
    let options = Options { tail: stripe_tail(&format!("http://{}", api.addr)), ..Options::default() };
    let pipeline = OperatorPipeline::start(&[("orders", destination.url(), "")], options).await;

    // Seven of the events came through before the outage (and one older than T).
    let came = [1, 2, 3, 10, 11, 20, 24];
    for n in came {
        let body = serde_json::to_vec(&events[n as usize]).unwrap();
        let mut request =
            pipeline.client.post(format!("http://{}/webhooks/stripe", pipeline.ingest)).body(body.clone());
        for (name, value) in sign::stripe(STRIPE_SIGNING, now_s(), &body) {
            request = request.header(name, value);
        }
        assert_eq!(request.send().await.unwrap().status(), 202);
    }
    pipeline
        .store
        .wait_until(
            "the webhooks recorded",
            Duration::from_secs(30),
            "SELECT count(*) = 7 FROM events WHERE source = 'stripe'",
        )
        .await;
    let variables = |dry: bool| json!({ "s": "stripe", "since": rfc3339(since), "dry": dry });

    // Only admins.
    let create = "mutation($name: String!, $role: RoleName!) { createApiToken(name: $name, role: $role) { token } }";
    let operator = pipeline.gql(create, json!({"name": "ops", "role": "OPERATOR"})).await;
    let token = operator["createApiToken"]["token"].as_str().unwrap().to_owned();
    let refused = pipeline.gql_as(&token, BACKFILL, variables(false)).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert!(api.seen().is_empty(), "a refused caller costs no provider request");
    // A source without [[backfill]] is named as such.
    let unconfigured = pipeline
        .gql_as(
            crate::operator_support::ADMIN_TOKEN,
            BACKFILL,
            json!({ "s": "gh", "since": rfc3339(since), "dry": false }),
        )
        .await;
    assert_eq!(unconfigured["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{unconfigured}");

    // The dry run counts and changes nothing: 23 listed since T, 6 of them stored (event 1 is
    // older than T), 17 to recover.
    let dry = pipeline.gql(BACKFILL, variables(true)).await["backfill"].clone();
    assert_eq!(
        dry,
        json!({ "listed": 23, "alreadyStored": 6, "recovered": 17, "failed": 0, "complete": true,
                            "dryRun": true })
    );
    assert_eq!(pipeline.store.scalar_i64("SELECT count(*) FROM events WHERE source = 'stripe'").await, 7);
    assert_eq!(pipeline.store.scalar_i64("SELECT count(*) FROM audit_log WHERE action = 'backfill'").await, 0);
    let asked = api.seen();
    assert!(asked.iter().all(|s| s.method == "GET" && s.authorization == format!("Bearer {STRIPE_KEY}")), "{asked:?}");
    assert_eq!(
        asked.iter().filter(|s| s.target.contains("starting_after")).count(),
        5,
        "4 more pages, one asked twice"
    );

    let run = pipeline.gql(BACKFILL, variables(false)).await["backfill"].clone();
    assert_eq!(
        run,
        json!({ "listed": 23, "alreadyStored": 6, "recovered": 17, "failed": 0, "complete": true,
                            "dryRun": false })
    );
    pipeline
        .store
        .wait_until(
            "the backfilled events recorded",
            Duration::from_secs(30),
            "SELECT count(*) = 24 FROM events WHERE source = 'stripe'",
        )
        .await;
    // Exactly the missing ones, each once, marked, the events from T on all there.
    let ids: BTreeSet<String> = pipeline
        .store
        .rows("SELECT event_id FROM events WHERE source = 'stripe'")
        .await
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    let expected: BTreeSet<String> = (1..25).map(|n| format!("evt_{n:04}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        pipeline
            .store
            .scalar_i64(
                "SELECT count(*) FROM events WHERE source = 'stripe' AND headers_json LIKE '%inlet-received-via%'"
            )
            .await,
        17
    );
    // Recorded with the event's type and delivered like any event.
    assert_eq!(
        pipeline
            .store
            .scalar_i64("SELECT count(*) FROM events WHERE source = 'stripe' AND event_type = 'invoice.paid'")
            .await,
        24
    );
    destination.wait_for(24, Duration::from_secs(30)).await;

    // Again: nothing left to recover.
    let again = pipeline.gql(BACKFILL, variables(false)).await["backfill"].clone();
    assert_eq!((again["recovered"].clone(), again["alreadyStored"].clone()), (json!(0), json!(23)));
    assert_eq!(pipeline.store.scalar_i64("SELECT count(*) FROM events WHERE source = 'stripe'").await, 24);

    // Two real runs, audited with who, what and the counts.
    let audit = pipeline
        .store
        .rows("SELECT actor, target, count, detail FROM audit_log WHERE action = 'backfill' ORDER BY id")
        .await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0][1].as_deref(), Some("source:stripe"));
    assert_eq!(audit[0][2].as_deref(), Some("17"));
    assert_eq!(audit[1][2].as_deref(), Some("0"));
    let detail = audit[0][3].clone().unwrap();
    assert!(detail.contains("listed 23, already stored 6, published into the intake stream 17, failed 0"), "{detail}");
    assert!(!detail.contains(STRIPE_KEY) && !audit[0][0].clone().unwrap().contains(STRIPE_KEY));
    let log = pipeline.gql("{ auditLog(filter: { action: BACKFILL }) { nodes { action target } } }", json!({})).await;
    assert_eq!(log["auditLog"]["nodes"].as_array().unwrap().len(), 2, "{log}");
}

/// One delivery in the fake GitHub's list.
#[derive(Clone)]
struct Listed {
    id: u64,
    guid: String,
    minutes_ago: i64,
    status_code: u16,
}

fn github_body(guid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "action": "opened", "delivery": guid })).unwrap()
}

#[tokio::test]
async fn github_backfill_redelivers_exactly_the_failed_deliveries_not_stored() {
    let destination = TestDestination::answering(200).await;
    // Bound before the pipeline: the fake GitHub sends redeliveries to ingest, whose address
    // is known only once it started.
    let ingest: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let redelivered: Arc<Mutex<Vec<u64>>> = Arc::default();
    // Newest first. g1, g4 answered 2xx; g2, g6 timed out at GitHub but Inlet stored them;
    // g3, g5, g7 failed (503 while Inlet was down, or no answer) and are not stored; g8 failed
    // before T. g5 failed twice (a manual redelivery failed too): redelivered once, its newest.
    let list = vec![
        Listed { id: 110, guid: "g1".into(), minutes_ago: 1, status_code: 202 },
        Listed { id: 109, guid: "g2".into(), minutes_ago: 2, status_code: 0 },
        Listed { id: 108, guid: "g3".into(), minutes_ago: 3, status_code: 503 },
        Listed { id: 107, guid: "g5".into(), minutes_ago: 4, status_code: 503 },
        Listed { id: 106, guid: "g4".into(), minutes_ago: 5, status_code: 200 },
        Listed { id: 105, guid: "g6".into(), minutes_ago: 6, status_code: 0 },
        Listed { id: 104, guid: "g5".into(), minutes_ago: 20, status_code: 503 },
        Listed { id: 103, guid: "g7".into(), minutes_ago: 30, status_code: 0 },
        Listed { id: 102, guid: "g8".into(), minutes_ago: 90, status_code: 503 },
        Listed { id: 101, guid: "g9".into(), minutes_ago: 95, status_code: 200 },
    ];
    let hook = "/repos/acme/shop/hooks/7";
    let at_start = now_s();
    let (ingest_c, redelivered_c, list_c) = (Arc::clone(&ingest), Arc::clone(&redelivered), list.clone());
    let page_two_asked = Arc::new(Mutex::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The next-page links name the fake's own address, as GitHub's name api.github.com.
    let api_base = format!("http://{}", listener.local_addr().unwrap());
    let link_base = api_base.clone();
    let api = FakeApi::start(listener, move |method, target| {
        let base = format!("{hook}/deliveries");
        if method == "POST" {
            let id: u64 =
                target.strip_prefix(&format!("{base}/")).unwrap().strip_suffix("/attempts").unwrap().parse().unwrap();
            let delivery = list_c.iter().find(|d| d.id == id).unwrap().clone();
            redelivered_c.lock().unwrap().push(id);
            // GitHub sends the webhook again, signed, with the same delivery id.
            let ingest = ingest_c.lock().unwrap().unwrap();
            tokio::spawn(async move {
                let body = github_body(&delivery.guid);
                let mut request =
                    reqwest::Client::new().post(format!("http://{ingest}/webhooks/github")).body(body.clone());
                for (name, value) in sign::github(GITHUB_SECRET, &delivery.guid, "issues", &body) {
                    request = request.header(name, value);
                }
                assert_eq!(request.send().await.unwrap().status(), 202);
            });
            return (202, vec![], "{}".into());
        }
        assert!(target.starts_with(&format!("{base}?per_page=100")), "{target}");
        let from: usize = param(target, "cursor").map_or(0, |c| c.parse().unwrap());
        if from > 0 {
            let mut asked = page_two_asked.lock().unwrap();
            *asked += 1;
            if *asked == 1 {
                return (429, vec![("retry-after".into(), "1".into())], "{}".into());
            }
        }
        // Pages of 3, as a real list with per_page=3 would come.
        let page: Vec<Value> = list_c
            .iter()
            .skip(from)
            .take(3)
            .map(|d| {
                json!({
            "id": d.id, "guid": d.guid, "delivered_at": rfc3339(at_start - d.minutes_ago * 60),
            "redelivery": false, "duration": 0.3, "status": "x", "status_code": d.status_code, "event": "issues",
            "action": "opened", "installation_id": null, "repository_id": 1 })
            })
            .collect();
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if from + 3 < list_c.len() {
            headers
                .push(("link".into(), format!("<{link_base}{base}?per_page=100&cursor={}>; rel=\"next\"", from + 3)));
        }
        (200, headers, serde_json::to_string(&page).unwrap())
    });
    let tail = format!(
        "\n[[sources]]\nname = \"github\"\nkind = \"github\"\nsecrets = [\"{GITHUB_SECRET}\"]\n\
         [[routes]]\nsource = \"github\"\ndestinations = [\"orders\"]\n\
         [[backfill]]\nsource = \"github\"\ntoken = \"{GITHUB_TOKEN}\"\nrepository = \"acme/shop\"\nhook_id = 7\n\
         api_base = \"{api_base}\"\nrequests_per_second = 20\n"
    );
    let pipeline =
        OperatorPipeline::start(&[("orders", destination.url(), "")], Options { tail, ..Options::default() }).await;
    *ingest.lock().unwrap() = Some(pipeline.ingest);

    // g1, g4 (answered) and g2, g6 (answered too late for GitHub) are stored.
    for guid in ["g1", "g2", "g4", "g6"] {
        let body = github_body(guid);
        let mut request =
            pipeline.client.post(format!("http://{}/webhooks/github", pipeline.ingest)).body(body.clone());
        for (name, value) in sign::github(GITHUB_SECRET, guid, "issues", &body) {
            request = request.header(name, value);
        }
        assert_eq!(request.send().await.unwrap().status(), 202);
    }
    pipeline
        .store
        .wait_until(
            "the webhooks recorded",
            Duration::from_secs(30),
            "SELECT count(*) = 4 FROM events WHERE source = 'github'",
        )
        .await;
    let variables = |dry: bool| json!({ "s": "github", "since": rfc3339(at_start - 3600), "dry": dry });

    let dry = pipeline.gql(BACKFILL, variables(true)).await["backfill"].clone();
    assert_eq!(
        dry,
        json!({ "listed": 7, "alreadyStored": 4, "recovered": 3, "failed": 0, "complete": true,
                            "dryRun": true })
    );
    assert!(redelivered.lock().unwrap().is_empty(), "a dry run requests no redelivery");
    assert!(api.seen().iter().all(|s| s.method == "GET"), "a dry run only reads");
    let asked = api.seen();
    assert!(
        asked.iter().all(|s| s.authorization == format!("Bearer {GITHUB_TOKEN}") && s.api_version == "2022-11-28"),
        "{asked:?}"
    );
    // Pages 1, 2 (asked twice: the 429) and 3, which reaches deliveries older than T: no page 4.
    assert_eq!(asked.len(), 4, "{asked:?}");

    let run = pipeline.gql(BACKFILL, variables(false)).await["backfill"].clone();
    assert_eq!(
        run,
        json!({ "listed": 7, "alreadyStored": 4, "recovered": 3, "failed": 0, "complete": true,
                            "dryRun": false })
    );
    let mut requested = redelivered.lock().unwrap().clone();
    requested.sort_unstable();
    assert_eq!(requested, [103, 107, 108], "g7, g5 (its newest attempt), g3");
    // GitHub sent them again, through ingest: now stored.
    pipeline
        .store
        .wait_until(
            "the redeliveries recorded",
            Duration::from_secs(30),
            "SELECT count(*) = 7 FROM events WHERE source = 'github'",
        )
        .await;

    // Again: the redelivered ones are found stored (the list still says they failed).
    let again = pipeline.gql(BACKFILL, variables(false)).await["backfill"].clone();
    assert_eq!((again["recovered"].clone(), again["alreadyStored"].clone()), (json!(0), json!(7)));
    assert_eq!(redelivered.lock().unwrap().len(), 3, "nothing redelivered twice");
    let audit = pipeline.store.rows("SELECT count, detail FROM audit_log WHERE action = 'backfill' ORDER BY id").await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0][0].as_deref(), Some("3"));
    assert!(audit[0][1].clone().unwrap().contains("redelivery requested 3"), "{audit:?}");
}

#[tokio::test]
async fn one_backfill_per_source_at_a_time_and_the_command_also_runs_one() {
    let start = now_s() - 600;
    let events: Vec<Value> = (0..3).map(|n| stripe_event(n, start + n * 60)).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Later in the test the provider only says "slow down": retry at once (0), or in 61 s.
    let slow_down: Arc<Mutex<Option<&'static str>>> = Arc::default();
    let slow_down_c = Arc::clone(&slow_down);
    let api = FakeApi::start(listener, move |_, _| {
        if let Some(retry_after) = *slow_down_c.lock().unwrap() {
            return (429, vec![("retry-after".into(), retry_after.into())], "{}".into());
        }
        let listed: Vec<Value> = events.iter().rev().cloned().collect();
        (200, vec![], json!({ "object": "list", "has_more": false, "data": listed }).to_string())
    });
    let options = Options { tail: stripe_tail(&format!("http://{}", api.addr)), ..Options::default() };
    let pipeline =
        OperatorPipeline::start(&[("orders", TestDestination::answering(200).await.url(), "")], options).await;
    let variables = json!({ "s": "stripe", "since": rfc3339(start - 60), "dry": false });

    // A run waits on the provider: a second one of the same source is refused meanwhile.
    api.hold().await;
    let first = {
        let (client, url, variables) = (pipeline.client.clone(), pipeline.url("/graphql"), variables.clone());
        tokio::spawn(async move {
            let answer = client
                .post(url)
                .bearer_auth(crate::operator_support::ADMIN_TOKEN)
                .json(&json!({ "query": BACKFILL, "variables": variables }))
                .send()
                .await
                .unwrap();
            answer.json::<Value>().await.unwrap()
        })
    };
    api.arrivals(1).await;
    let second = pipeline.gql_as(crate::operator_support::ADMIN_TOKEN, BACKFILL, variables.clone()).await;
    assert_eq!(second["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{second}");
    assert!(second["errors"][0]["message"].as_str().unwrap().contains("running already"), "{second}");
    api.release();
    let first = first.await.unwrap();
    assert_eq!(first["data"]["backfill"]["recovered"], 3, "{first}");
    // The guard is released with the run.
    let after = pipeline.gql(BACKFILL, variables.clone()).await;
    assert_eq!(after["backfill"]["alreadyStored"], 3, "{after}");

    // A caller that stops waiting (as the API's 30 s execution limit does) does not stop the
    // run: it ends and is audited.
    let audited = "SELECT count(*) FROM audit_log WHERE action = 'backfill'";
    let audited_before = pipeline.store.scalar_i64(audited).await;
    api.hold().await;
    let arrived = api.seen().len();
    let caller = {
        let (client, url, variables) = (pipeline.client.clone(), pipeline.url("/graphql"), variables.clone());
        tokio::spawn(async move {
            let _ = client
                .post(url)
                .bearer_auth(crate::operator_support::ADMIN_TOKEN)
                .json(&json!({ "query": BACKFILL, "variables": variables }))
                .send()
                .await;
        })
    };
    api.arrivals(arrived + 1).await;
    caller.abort();
    let _ = caller.await;
    api.release();
    pipeline
        .store
        .wait_until(
            "the abandoned run audited",
            Duration::from_secs(30),
            &format!("SELECT count(*) = {} FROM audit_log WHERE action = 'backfill'", audited_before + 1),
        )
        .await;

    // The command's function: with SQLite the running worker holds the store; with PostgreSQL
    // it runs beside the workers, audited as the command line.
    let since = chrono::DateTime::parse_from_rfc3339(&rfc3339(start - 60)).unwrap();
    let command = inlet_worker::backfill(&pipeline.config, "stripe", since, false, "command line (test)").await;
    match crate::support::Backend::from_env() {
        crate::support::Backend::Sqlite => {
            let error = format!("{:#}", command.unwrap_err());
            assert!(error.contains("is in use by another inlet-worker"), "{error}");
        }
        crate::support::Backend::Postgres => {
            let report = command.unwrap();
            assert_eq!((report.listed, report.already_stored, report.recovered), (3, 3, 0));
            let actor = pipeline
                .store
                .scalar("SELECT actor FROM audit_log WHERE action = 'backfill' ORDER BY id DESC LIMIT 1")
                .await;
            assert_eq!(actor.as_deref(), Some("command line (test)"));
        }
    }
    pipeline
        .store
        .wait_until(
            "the events recorded once",
            Duration::from_secs(30),
            "SELECT count(*) = 3 FROM events WHERE source = 'stripe'",
        )
        .await;

    // A provider that keeps saying "slow down": waited out 5 times, then the run stops; a wait
    // longer than 60 s stops it at once. Both say why, and are audited as stopped.
    *slow_down.lock().unwrap() = Some("0");
    let before = api.seen().len();
    let stopped = pipeline.gql_as(crate::operator_support::ADMIN_TOKEN, BACKFILL, variables.clone()).await;
    let message = stopped["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("still rate limited after 5 waits"), "{stopped}");
    assert_eq!(api.seen().len() - before, 6, "the request and 5 more after waiting");
    *slow_down.lock().unwrap() = Some("61");
    let before = api.seen().len();
    let stopped = pipeline.gql_as(crate::operator_support::ADMIN_TOKEN, BACKFILL, variables.clone()).await;
    let message = stopped["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("rate limited for 61 s"), "{stopped}");
    assert_eq!(api.seen().len() - before, 1);
    let detail = pipeline
        .store
        .scalar("SELECT detail FROM audit_log WHERE action = 'backfill' ORDER BY id DESC LIMIT 1")
        .await
        .unwrap();
    assert!(detail.contains("stopped: provider API: rate limited for 61 s"), "{detail}");
}

#[tokio::test]
async fn an_admin_backfills_from_the_console_after_a_dry_run() {
    let start = now_s() - 600;
    let events: Vec<Value> = (0..4).map(|n| stripe_event(n, start + n * 60)).collect();
    let listed: Vec<Value> = events.iter().rev().cloned().collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = FakeApi::start(listener, move |_, _| {
        (200, vec![], json!({ "object": "list", "has_more": false, "data": listed }).to_string())
    });
    let options = Options { oidc: true, tail: stripe_tail(&format!("http://{}", api.addr)), ..Options::default() };
    let pipeline =
        OperatorPipeline::start(&[("orders", TestDestination::answering(200).await.url(), "")], options).await;
    // One came through before the outage.
    let body = serde_json::to_vec(&events[0]).unwrap();
    let mut request = pipeline.client.post(format!("http://{}/webhooks/stripe", pipeline.ingest)).body(body.clone());
    for (name, value) in sign::stripe(STRIPE_SIGNING, now_s(), &body) {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 202);
    pipeline
        .store
        .wait_until(
            "the webhook recorded",
            Duration::from_secs(30),
            "SELECT count(*) = 1 FROM events WHERE source = 'stripe'",
        )
        .await;

    let screenshot = crate::operator_support::screenshot_dir(&pipeline).join("console-backfill.png");
    crate::operator_support::run_browser("console-backfill.mjs", Duration::from_secs(120), |command| {
        command
            .args(["--url", &pipeline.url(""), "--email", "admin@example.com", "--source", "stripe"])
            .args(["--since", &rfc3339(start - 60), "--listed", "4", "--missing", "3"])
            .arg("--screenshot")
            .arg(&screenshot)
    })
    .await;
    pipeline
        .store
        .wait_until(
            "the backfilled events recorded",
            Duration::from_secs(30),
            "SELECT count(*) = 4 FROM events WHERE source = 'stripe'",
        )
        .await;
    let actor = pipeline.store.scalar("SELECT actor FROM audit_log WHERE action = 'backfill'").await;
    assert_eq!(actor.as_deref(), Some("admin@example.com"));
}
