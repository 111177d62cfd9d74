//! Provider backfill after an outage (`BackfillError` at its edge): what a source's provider
//! could not deliver while Inlet was down, asked for again through the provider's API and
//! deduplicated against what is stored.
//!
//! - **Stripe** (`GET /v1/events?created[gte]=T`, cursor pages with `has_more`, newest first,
//!   a restricted key): every listed event whose id (the id ingest gives the same event received
//!   as a webhook, `stripe_event_identity`) is not stored is published into the intake stream
//!   as ingest would have published it (same envelope, event id and `Nats-Msg-Id`, so the
//!   stream's duplicate window and the store's unique id apply), oldest first, received "now"
//!   and marked in its stored request headers (`inlet-received-via`), then recorded and
//!   delivered like any event. Its body is the event object as the API returned it: not signed
//!   by a webhook secret, but fetched over TLS from Stripe with the account's key.
//! - **GitHub** (`GET …/hooks/{id}/deliveries`, pages through `Link: rel="next"`, newest first,
//!   a token): each delivery id (`guid`, GitHub's `X-GitHub-Delivery`) sent since T that never
//!   got a 2xx and is not stored is redelivered by GitHub (`POST …/deliveries/{id}/attempts`):
//!   it then arrives signed, through ingest, as any webhook.
//!
//! Requests to the provider are paced by a token bucket (`requests_per_second`), wait out a
//! `429`/`Retry-After` (or GitHub's spent `x-ratelimit-remaining`) up to [`MAX_WAIT`], and read
//! at most `max_pages` pages per run. One run at a time per source in this process (an in-memory
//! guard: a run is one API call or command, and a second one while it lasts is refused). Every
//! run that is not a dry run writes one audit row (`AuditAction::Backfill`) with the counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use inlet_shared::config::{BackfillConfig, Config};
use inlet_shared::envelope::Envelope;
use inlet_shared::signature::{SchemeKind, stripe_event_identity};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::{AuditAction, UnixMs};
use crate::store::{Store, StoreError};

/// Longest a provider's "slow down" (`Retry-After`, a spent rate limit) is waited out within a
/// run; a longer one ends the run (run it again later).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most "slow down" answers one request waits out before the run gives up.
const MAX_WAITS: usize = 5;
/// Stripe's and GitHub's largest page.
const PAGE_SIZE: usize = 100;
/// GitHub's REST API version the requests are written for.
const GITHUB_API_VERSION: &str = "2022-11-28";
/// How a backfilled event's stored request headers say where it came from.
const RECEIVED_VIA: &str = "inlet-received-via";

/// Why a backfill did not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// No such source in the config.
    #[error("no source named {0}")]
    UnknownSource(String),
    /// The source has no `[[backfill]]` (or its kind has no API to backfill from).
    #[error("source {0} has no [[backfill]] in the worker's configuration")]
    NotConfigured(String),
    /// A backfill of this source is running in this process.
    #[error("a backfill of source {0} is running already")]
    AlreadyRunning(String),
    /// The provider's API refused or failed (never the key or token).
    #[error("provider API: {0}")]
    Provider(String),
    /// The intake stream did not take an event.
    #[error("intake stream: {0}")]
    Stream(String),
    /// The store could not be read, or the audit row written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a backfill found and did. In a dry run, `recovered` is what it would have done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backfilled {
    /// Stripe: events listed since the time; GitHub: deliveries (by delivery id) sent since then.
    pub listed: u64,
    /// Of those, already stored (GitHub: or answered 2xx by ingest at some attempt).
    pub already_stored: u64,
    /// Stripe: published into the intake stream; GitHub: redelivery requested.
    pub recovered: u64,
    /// Not recovered: the intake stream or the provider refused (the run's error says why when
    /// it stopped the run).
    pub failed: u64,
    /// Whether the provider's list was read to its end (or, for GitHub, past the time); `false`
    /// when `max_pages` stopped it: run again with a later time.
    pub complete: bool,
}

impl fmt::Display for Backfilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "listed          {}", self.listed)?;
        writeln!(f, "already stored  {}", self.already_stored)?;
        writeln!(f, "recovered       {}", self.recovered)?;
        writeln!(f, "failed          {}", self.failed)?;
        writeln!(f, "complete        {}", if self.complete { "yes" } else { "no: max_pages reached" })
    }
}

/// Which API a source is backfilled from, with its credentials (a sensitive header value).
enum Provider {
    Stripe,
    /// `path`: `/repos/{owner}/{repo}/hooks/{id}` or `/orgs/{org}/hooks/{id}`.
    Github {
        hook: String,
    },
}

/// One source's configured backfill.
struct Plan {
    provider: Provider,
    api_base: String,
    authorization: HeaderValue,
    limiter: DefaultDirectRateLimiter,
    max_pages: u32,
    /// The intake subject a Stripe event is published to.
    subject: String,
}

/// The configured backfills, and the one-run-per-source guard.
pub struct Backfiller {
    plans: HashMap<String, Plan>,
    sources: HashSet<String>,
    js: jetstream::Context,
    store: Store,
    http: reqwest::Client,
    publish_timeout: Duration,
    running: Arc<Mutex<HashSet<String>>>,
}

/// Holds a source's run; its drop lets the next one start.
struct Running {
    source: String,
    running: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.source);
        }
    }
}

impl Backfiller {
    /// The backfills of `config`, publishing through `js`.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built, or a credential is not a header value (config
    /// validation already refuses that).
    pub fn new(config: &Config, js: jetstream::Context, store: Store) -> Result<Backfiller, BackfillError> {
        let mut plans = HashMap::new();
        for backfill in &config.backfill {
            let Some(source) = config.sources.iter().find(|s| s.name == backfill.source) else { continue };
            plans.insert(source.name.clone(), plan(config, backfill, source.kind)?);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("inlet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BackfillError::Provider(format!("HTTP client: {e}")))?;
        Ok(Backfiller {
            plans,
            sources: config.sources.iter().map(|s| s.name.clone()).collect(),
            js,
            store,
            http,
            // As ingest waits for its PubAck.
            publish_timeout: config.ingest.publish_timeout,
            running: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Backfills `source` from `since` on (dry run: only counts); audited as `actor` unless a
    /// dry run. Counts of a run stopped by an error are in its audit row. The run is a task of
    /// its own: a caller that stops waiting (the API's execution timeout) does not stop it; it
    /// runs to its end, is audited, and only then lets the next run of the source start.
    ///
    /// # Errors
    ///
    /// An unknown or unconfigured source, a run of it already under way, the provider's API
    /// failing, the intake stream refusing, the store failing.
    pub async fn run(
        self: &Arc<Self>,
        source: &str,
        since: UnixMs,
        dry_run: bool,
        actor: &str,
    ) -> Result<Backfilled, BackfillError> {
        if !self.sources.contains(source) {
            return Err(BackfillError::UnknownSource(source.to_owned()));
        }
        if !self.plans.contains_key(source) {
            return Err(BackfillError::NotConfigured(source.to_owned()));
        }
        let running = self.hold(source)?;
        let this = Arc::clone(self);
        let (source, actor) = (source.to_owned(), actor.to_owned());
        tokio::spawn(async move { this.run_held(running, &source, since, dry_run, &actor).await })
            .await
            .map_err(|e| BackfillError::Provider(format!("the run ended abnormally: {e}")))?
    }

    /// [`Backfiller::run`] under its source's guard.
    async fn run_held(
        &self,
        _running: Running,
        source: &str,
        since: UnixMs,
        dry_run: bool,
        actor: &str,
    ) -> Result<Backfilled, BackfillError> {
        let plan = self.plans.get(source).ok_or_else(|| BackfillError::NotConfigured(source.to_owned()))?;
        let mut report = Backfilled::default();
        let result = match &plan.provider {
            Provider::Stripe => self.stripe(source, plan, since, dry_run, &mut report).await,
            Provider::Github { hook } => self.github(source, plan, hook, since, dry_run, &mut report).await,
        };
        tracing::info!(
            source,
            actor,
            dry_run,
            listed = report.listed,
            already_stored = report.already_stored,
            recovered = report.recovered,
            failed = report.failed,
            error = result.as_ref().err().map(tracing::field::display),
            "backfill"
        );
        if !dry_run {
            let since_text = chrono::DateTime::from_timestamp_millis(since.0)
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let what = match plan.provider {
                Provider::Stripe => "published into the intake stream",
                Provider::Github { .. } => "redelivery requested",
            };
            let detail = format!(
                "since {since_text}: listed {}, already stored {}, {what} {}, failed {}{}{}",
                report.listed,
                report.already_stored,
                report.recovered,
                report.failed,
                if report.complete { "" } else { "; stopped at max_pages" },
                result.as_ref().err().map(|e| format!("; stopped: {e}")).unwrap_or_default(),
            );
            let count = i64::try_from(report.recovered).unwrap_or(i64::MAX);
            self.store
                .record_source_action(AuditAction::Backfill, actor.to_owned(), source.to_owned(), count, detail)
                .await?;
        }
        result.map(|()| report)
    }

    fn hold(&self, source: &str) -> Result<Running, BackfillError> {
        let mut running = self.running.lock().map_err(|_| BackfillError::AlreadyRunning(source.to_owned()))?;
        if !running.insert(source.to_owned()) {
            return Err(BackfillError::AlreadyRunning(source.to_owned()));
        }
        Ok(Running { source: source.to_owned(), running: Arc::clone(&self.running) })
    }

    /// Stripe: list, keep what is newer than `since` and not stored, publish oldest first.
    async fn stripe(
        &self,
        source: &str,
        plan: &Plan,
        since: UnixMs,
        dry_run: bool,
        report: &mut Backfilled,
    ) -> Result<(), BackfillError> {
        let since_seconds = since.0.div_euclid(1000);
        let mut listed: Vec<Box<RawValue>> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..plan.max_pages {
            let mut url = format!("{}/v1/events?limit={PAGE_SIZE}&created%5Bgte%5D={since_seconds}", plan.api_base);
            if let Some(after) = &after {
                url.push_str(&format!("&starting_after={after}"));
            }
            let body = self.get_ok(plan, &url).await?;
            let page: StripePage =
                serde_json::from_slice(&body).map_err(|e| BackfillError::Provider(format!("events page: {e}")))?;
            let mut last = None;
            for event in page.data {
                let head: StripeHead = serde_json::from_str(event.get())
                    .map_err(|e| BackfillError::Provider(format!("an event without id or created: {e}")))?;
                // Ids go back into the next page's query: only Stripe's own alphabet.
                if head.id.is_empty() || !head.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(BackfillError::Provider("an event id that is not [A-Za-z0-9_]".into()));
                }
                last = Some(head.id);
                if head.created.saturating_mul(1000) >= since.0 {
                    listed.push(event);
                }
            }
            match (page.has_more, last) {
                (true, Some(last)) => after = Some(last),
                _ => {
                    report.complete = true;
                    break;
                }
            }
        }
        report.listed = listed.len() as u64;
        // Oldest first, as they would have come.
        listed.reverse();
        for chunk in listed.chunks(PAGE_SIZE) {
            let events: Vec<(Bytes, inlet_shared::signature::EventIdentity)> = chunk
                .iter()
                .map(|event| {
                    let body = Bytes::copy_from_slice(event.get().as_bytes());
                    let identity = stripe_event_identity(&body);
                    (body, identity)
                })
                .collect();
            let ids = events.iter().map(|(_, identity)| identity.id.clone()).collect();
            let stored = self.store.stored_event_ids(source.to_owned(), ids).await?;
            for (body, identity) in events {
                if stored.contains(&identity.id) {
                    report.already_stored += 1;
                    continue;
                }
                if dry_run {
                    report.recovered += 1;
                    continue;
                }
                match self.publish(source, plan, identity, body).await {
                    Ok(true) => report.already_stored += 1,
                    Ok(false) => report.recovered += 1,
                    Err(error) => {
                        report.failed += 1;
                        return Err(error);
                    }
                }
            }
        }
        Ok(())
    }

    /// Publishes a fetched Stripe event as ingest would have; says whether the stream had it.
    async fn publish(
        &self,
        source: &str,
        plan: &Plan,
        identity: inlet_shared::signature::EventIdentity,
        body: Bytes,
    ) -> Result<bool, BackfillError> {
        let envelope = Envelope {
            source: source.to_owned(),
            event_id: identity.id,
            id_origin: identity.origin,
            provider_event_id: identity.provider_id,
            event_type: identity.event_type,
            received_at_ms: UnixMs::now().0.max(0).cast_unsigned(),
            scheme: SchemeKind::Stripe,
            // No webhook secret was involved: the first is named, as for a single secret.
            secret_index: 0,
            content_type: Some("application/json; charset=utf-8".into()),
            original_headers: Some(
                serde_json::to_string(&[(RECEIVED_VIA, "backfill: Stripe events API")]).unwrap_or_default(),
            ),
            traceparent: None,
            // In the message itself: a Stripe event is far below the server's max_payload (one
            // that is not is refused by the publish and counted as failed).
            body: None,
        };
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in envelope.to_headers() {
            headers.insert(name, value.as_ref());
        }
        let publish = async {
            let ack = self.js.publish_with_headers(plan.subject.clone(), headers, body).await?;
            ack.await
        };
        let ack = tokio::time::timeout(self.publish_timeout, publish)
            .await
            .map_err(|_| BackfillError::Stream("no PubAck from the intake stream".to_owned()))?
            .map_err(|e| BackfillError::Stream(format!("publish: {e}")))?;
        Ok(ack.duplicate)
    }

    /// GitHub: list the hook's deliveries since `since`; redeliver each delivery id that never
    /// got a 2xx and is not stored.
    async fn github(
        &self,
        source: &str,
        plan: &Plan,
        hook: &str,
        since: UnixMs,
        dry_run: bool,
        report: &mut Backfilled,
    ) -> Result<(), BackfillError> {
        // Delivery id → (attempt ids with when GitHub sent each, whether one got a 2xx).
        let mut by_guid: BTreeMap<String, (Vec<(u64, UnixMs)>, bool)> = BTreeMap::new();
        let mut url = format!("{}{hook}/deliveries?per_page={PAGE_SIZE}", plan.api_base);
        for _ in 0..plan.max_pages {
            let response = self.send(plan, Method::GET, &url).await?;
            let next = next_link(response.headers());
            let body = ok_body(response).await?;
            let page: Vec<GithubDelivery> =
                serde_json::from_slice(&body).map_err(|e| BackfillError::Provider(format!("deliveries page: {e}")))?;
            let mut older = page.is_empty();
            for delivery in page {
                let sent_at = chrono::DateTime::parse_from_rfc3339(&delivery.delivered_at)
                    .map(|at| UnixMs(at.timestamp_millis()))
                    .map_err(|e| BackfillError::Provider(format!("delivered_at: {e}")))?;
                if sent_at < since {
                    older = true;
                    continue;
                }
                let entry = by_guid.entry(delivery.guid).or_default();
                entry.0.push((delivery.id, sent_at));
                entry.1 |= (200..300).contains(&delivery.status_code);
            }
            match next {
                // The token goes only to the configured API.
                Some(next) if !older => {
                    if !next.starts_with(&format!("{}/", plan.api_base)) {
                        return Err(BackfillError::Provider("the next page is not on the configured API".into()));
                    }
                    url = next;
                }
                _ => {
                    report.complete = true;
                    break;
                }
            }
        }
        report.listed = by_guid.len() as u64;
        let failed: Vec<(String, Vec<(u64, UnixMs)>)> = by_guid
            .into_iter()
            .filter_map(|(guid, (attempts, answered))| {
                if answered {
                    report.already_stored += 1;
                    None
                } else {
                    Some((guid, attempts))
                }
            })
            .collect();
        // A redelivery (by anyone) may have been stored at any time since the first attempt.
        let first_sent = failed.iter().flat_map(|(_, attempts)| attempts.iter().map(|(_, at)| *at)).min();
        let stored = match first_sent {
            Some(first_sent) => {
                let guids = failed.iter().map(|(guid, _)| guid.clone()).collect();
                self.store.stored_github_deliveries(source.to_owned(), first_sent, guids).await?
            }
            None => HashSet::new(),
        };
        for (guid, attempts) in failed {
            if stored.contains(&guid) {
                report.already_stored += 1;
                continue;
            }
            if dry_run {
                report.recovered += 1;
                continue;
            }
            // The newest attempt: GitHub redelivers the same delivery id and payload.
            let Some((id, _)) = attempts.iter().max_by_key(|(_, at)| *at) else { continue };
            let url = format!("{}{hook}/deliveries/{id}/attempts", plan.api_base);
            let response = self.send(plan, Method::POST, &url).await?;
            if response.status().is_success() {
                report.recovered += 1;
            } else {
                tracing::warn!(source, guid, status = %response.status(), "GitHub refused a redelivery");
                report.failed += 1;
            }
        }
        Ok(())
    }

    /// GET `url` and its body, which must be a 2xx's.
    async fn get_ok(&self, plan: &Plan, url: &str) -> Result<Bytes, BackfillError> {
        ok_body(self.send(plan, Method::GET, url).await?).await
    }

    /// Sends one request to the provider at the configured pace, waiting out its "slow down"
    /// answers (up to [`MAX_WAIT`] each, [`MAX_WAITS`] times).
    async fn send(&self, plan: &Plan, method: Method, url: &str) -> Result<reqwest::Response, BackfillError> {
        for waited in 0..=MAX_WAITS {
            plan.limiter.until_ready().await;
            let mut request =
                self.http.request(method.clone(), url).header(http::header::AUTHORIZATION, plan.authorization.clone());
            if let Provider::Github { .. } = plan.provider {
                request = request
                    .header(http::header::ACCEPT, "application/vnd.github+json")
                    .header("x-github-api-version", GITHUB_API_VERSION);
            }
            let response = request.send().await.map_err(|e| BackfillError::Provider(e.without_url().to_string()))?;
            let Some(wait) = slow_down(response.status(), response.headers()) else {
                return Ok(response);
            };
            if waited == MAX_WAITS {
                break;
            }
            if wait > MAX_WAIT {
                return Err(BackfillError::Provider(format!(
                    "rate limited for {} s; run it again later",
                    wait.as_secs()
                )));
            }
            tracing::info!(wait_ms = wait.as_millis() as u64, "the provider asks to slow down");
            tokio::time::sleep(wait).await;
        }
        Err(BackfillError::Provider(format!("still rate limited after {MAX_WAITS} waits; run it again later")))
    }
}

/// The plan of one `[[backfill]]`.
fn plan(config: &Config, backfill: &BackfillConfig, kind: SchemeKind) -> Result<Plan, BackfillError> {
    let (provider, secret) = match kind {
        SchemeKind::Github => {
            let owner = match (&backfill.repository, &backfill.org) {
                (Some(repository), _) => format!("/repos/{repository}"),
                (None, Some(org)) => format!("/orgs/{org}"),
                (None, None) => return Err(BackfillError::NotConfigured(backfill.source.clone())),
            };
            let hook = format!("{owner}/hooks/{}", backfill.hook_id.unwrap_or_default());
            (Provider::Github { hook }, &backfill.token)
        }
        SchemeKind::Stripe => (Provider::Stripe, &backfill.api_key),
        _ => return Err(BackfillError::NotConfigured(backfill.source.clone())),
    };
    let secret = secret.as_ref().ok_or_else(|| BackfillError::NotConfigured(backfill.source.clone()))?;
    let mut authorization = HeaderValue::from_str(&format!("Bearer {}", secret.expose()))
        .map_err(|_| BackfillError::NotConfigured(backfill.source.clone()))?;
    // Kept out of any debug output of the request.
    authorization.set_sensitive(true);
    let rate = NonZeroU32::new(backfill.requests_per_second).unwrap_or(NonZeroU32::MIN);
    Ok(Plan {
        provider,
        api_base: backfill.api_base_for(kind).to_owned(),
        authorization,
        limiter: RateLimiter::direct(Quota::per_second(rate)),
        max_pages: backfill.max_pages,
        subject: config.stream.subject_for(&backfill.source),
    })
}

/// How long the provider asks to wait: a `429`, or a `403` with a spent GitHub rate limit;
/// `Retry-After` in seconds, else GitHub's `x-ratelimit-reset`, else a minute (GitHub's advice
/// for its secondary limits).
fn slow_down(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    let spent = number("x-ratelimit-remaining") == Some(0);
    if status != StatusCode::TOO_MANY_REQUESTS && !(status == StatusCode::FORBIDDEN && spent) {
        return None;
    }
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    if let Some(reset) = number("x-ratelimit-reset") {
        let now = UnixMs::now().0.div_euclid(1000).max(0).cast_unsigned();
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    Some(MAX_WAIT)
}

/// The body of a 2xx; anything else is the provider's refusal, told by its status only (an
/// error body may quote the key).
async fn ok_body(response: reqwest::Response) -> Result<Bytes, BackfillError> {
    let status = response.status();
    if !status.is_success() {
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                ": the key or token is refused, or lacks the permission"
            }
            StatusCode::NOT_FOUND => ": no such hook, or the token cannot see it",
            _ => "",
        };
        return Err(BackfillError::Provider(format!("answered {status}{hint}")));
    }
    response.bytes().await.map_err(|e| BackfillError::Provider(e.without_url().to_string()))
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(http::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        is_next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

/// One page of Stripe's event list.
#[derive(Deserialize)]
struct StripePage {
    data: Vec<Box<RawValue>>,
    has_more: bool,
}

/// What the backfill reads of a Stripe event itself.
#[derive(Deserialize)]
struct StripeHead {
    id: String,
    created: i64,
}

/// One entry of a GitHub hook's deliveries.
#[derive(Deserialize)]
struct GithubDelivery {
    id: u64,
    guid: String,
    delivered_at: String,
    /// 0 when GitHub got no answer at all.
    status_code: u16,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::LINK,
            HeaderValue::from_static(
                "<https://api.github.com/x?cursor=a>; rel=\"prev\", <https://api.github.com/x?cursor=b>; rel=\"next\"",
            ),
        );
        assert_eq!(next_link(&headers).as_deref(), Some("https://api.github.com/x?cursor=b"));
        headers.insert(http::header::LINK, HeaderValue::from_static("<https://api.github.com/x>; rel=\"prev\""));
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn slowing_down_follows_retry_after_then_the_rate_limit_reset() {
        let mut headers = HeaderMap::new();
        assert_eq!(slow_down(StatusCode::OK, &headers), None);
        assert_eq!(slow_down(StatusCode::FORBIDDEN, &headers), None, "a plain 403 is a refusal");
        assert_eq!(slow_down(StatusCode::TOO_MANY_REQUESTS, &headers), Some(MAX_WAIT));
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(slow_down(StatusCode::TOO_MANY_REQUESTS, &headers), Some(Duration::from_secs(3)));
        let mut spent = HeaderMap::new();
        spent.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = UnixMs::now().0 / 1000 + 20;
        spent.insert("x-ratelimit-reset", HeaderValue::from_str(&reset.to_string()).unwrap());
        let wait = slow_down(StatusCode::FORBIDDEN, &spent).unwrap();
        assert!((Duration::from_secs(18)..=Duration::from_secs(20)).contains(&wait), "{wait:?}");
    }
}
