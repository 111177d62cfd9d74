//! The GraphQL root types: queries (viewer), replays (operator), API tokens (admin).

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{
    Context, EmptySubscription, ErrorExtensionValues, ID, Object, Result, Schema, ServerError, ValidationResult,
};
use inlet_shared::config::Role;

use super::enums::{DateTime, ReplayConfig};
use super::error::ApiError;
use super::loaders::Reads;
use super::types::*;
use super::{MAX_COMPLEXITY, MAX_DEPTH, services};
use crate::auth::{Principal, TOKEN_PREFIX, random_token, sha256_hex};
use crate::model::{ApiTokenId, BulkReplayId, DeliveryId, EventRowId, LinkedAccountId};
use crate::replay::BulkRequest;
use crate::store::{ActivityQuery, Dismissed, MAX_BUCKETS, ReplayOrigin, Unlinked};

/// Longest note a dismissal takes.
const MAX_NOTE_CHARS: usize = 500;

/// The API schema.
pub type ApiSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema with its limits; `data` is added by the caller. Depth and complexity are judged by
/// [`Limits`], which says by how much a query is over (async-graphql's own limits do not).
pub fn builder() -> async_graphql::SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query, Mutation, EmptySubscription)
        .extension(Limits)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .disable_suggestions()
}

/// The schema without the request limits, for the explorer's introspection answer only (made
/// on the server from a fixed query, never from a caller's document).
pub fn unlimited() -> ApiSchema {
    Schema::build(Query, Mutation, EmptySubscription).finish()
}

/// Refuses a query over [`MAX_DEPTH`] or [`MAX_COMPLEXITY`] after validation (which measures
/// both) and before any resolver runs, stating its cost and the limit in the message and in
/// `extensions` (`code`, `cost` or `depth`, `limit`), so a client can tell how much to trim.
struct Limits;

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Limits)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let over = |code: &str, what: &str, measured: usize, limit: usize| {
            let mut error = ServerError::new(format!("query is {what} {measured}, the limit is {limit}"), None);
            let mut extensions = ErrorExtensionValues::default();
            extensions.set("code", code);
            extensions.set(if code == "TOO_COMPLEX" { "cost" } else { "depth" }, measured as u64);
            extensions.set("limit", limit as u64);
            error.extensions = Some(extensions);
            vec![error]
        };
        if result.depth > MAX_DEPTH {
            return Err(over("TOO_DEEP", "nested too deep: its depth is", result.depth, MAX_DEPTH));
        }
        if result.complexity > MAX_COMPLEXITY {
            return Err(over("TOO_COMPLEX", "too complex: its cost is", result.complexity, MAX_COMPLEXITY));
        }
        Ok(result)
    }
}

/// Longest range `activity` answers.
const MAX_ACTIVITY_RANGE_MS: i64 = 31 * 86_400_000;

/// The store's query for an activity range: whole-minute buckets, as few as keep the answer
/// within [`MAX_BUCKETS`].
fn activity_query(
    from: DateTime,
    to: DateTime,
    source: Option<String>,
    destination: Option<String>,
) -> Result<ActivityQuery, ApiError> {
    let span = to.0.0 - from.0.0;
    if span <= 0 || span > MAX_ACTIVITY_RANGE_MS {
        return Err(ApiError::Invalid("`to` must be after `from`, at most 31 days later".into()));
    }
    let minutes = (span + 60_000 * MAX_BUCKETS - 1) / (60_000 * MAX_BUCKETS);
    Ok(ActivityQuery { from: from.0, to: to.0, bucket_ms: minutes.max(1) * 60_000, source, destination })
}

/// The caller, if their role is at least `role`.
fn require<'a>(ctx: &'a Context<'_>, role: Role) -> Result<&'a Principal, ApiError> {
    let principal = ctx.data_opt::<Principal>().ok_or(ApiError::Unauthenticated)?;
    if principal.role < role {
        return Err(ApiError::Forbidden);
    }
    Ok(principal)
}

/// The quarantine, or why there is none.
fn quarantine<'a>(ctx: &'a Context<'_>) -> Result<&'a crate::quarantine::Quarantine, ApiError> {
    services(ctx)?
        .quarantine
        .as_deref()
        .ok_or(ApiError::Invalid("the quarantine is off (quarantine.enabled = false)".into()))
}

/// A destination URL without what may be a credential: user info and query string.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let redacted_query = if url.contains('?') { "?…" } else { "" };
    format!("{scheme}://{host}/{path}{redacted_query}")
}

pub(super) fn parse_id(id: &ID) -> Result<i64, ApiError> {
    id.parse::<i64>().map_err(|_| ApiError::Invalid("malformed id".into()))
}

/// Queries.
pub struct Query;

#[Object]
impl Query {
    /// Who is calling (null when not signed in).
    async fn me(&self, ctx: &Context<'_>) -> Option<Me> {
        ctx.data_opt::<Principal>().map(|p| Me { actor: p.actor.clone(), role: p.role.into() })
    }

    /// Events, newest first. With `filter.search`, those whose body has the text, each with
    /// its `searchMatch`.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<EventPage> {
        require(ctx, Role::Viewer)?;
        let page = page_request(first, after.as_deref())?;
        let filter = filter.unwrap_or_default();
        let search = filter.search_query()?;
        ctx.data_unchecked::<Reads>().add();
        let store = &services(ctx)?.store;
        if let Some(search) = search {
            let found = store.search_events(filter.selection(), search, page).await.map_err(ApiError::from)?;
            let end_cursor = found.end.map(encode_cursor);
            let nodes = found.hits.into_iter().map(Event::from).collect();
            return Ok(EventPage { nodes, page_info: PageInfo { has_next_page: found.has_more, end_cursor } });
        }
        let found = store.events_page(filter.selection(), page).await.map_err(ApiError::from)?;
        let end_cursor = found.rows.last().map(|e| encode_cursor(e.cursor()));
        let nodes = found.rows.into_iter().map(Event::from).collect();
        Ok(EventPage { nodes, page_info: PageInfo { has_next_page: found.has_more, end_cursor } })
    }

    /// Tries a route `filter` (CEL) and `transform` (jq) on stored events of `source` before
    /// they go into the config: the newest `last` (1–100, default 20) or the events `eventIds`
    /// (at most 100). For each: whether the filter matched, and the transform's output or
    /// error beside the input. Operator role; nothing is written; each transform run is bounded
    /// by `worker.transform_timeout`, and the contents read by the answer's content budget.
    #[graphql(complexity = "super::types::CONTENT_COMPLEXITY + child_complexity")]
    async fn dry_run(
        &self,
        ctx: &Context<'_>,
        source: String,
        filter: Option<String>,
        transform: Option<String>,
        last: Option<i32>,
        event_ids: Option<Vec<ID>>,
    ) -> Result<Vec<super::dry_run::DryRunResult>> {
        require(ctx, Role::Operator)?;
        Ok(super::dry_run::dry_run(ctx, source, filter, transform, last, event_ids).await?)
    }

    /// One event by its id.
    async fn event(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Event>> {
        require(ctx, Role::Viewer)?;
        let rowid = EventRowId(parse_id(&id)?);
        ctx.data_unchecked::<Reads>().add();
        let event = services(ctx)?.store.event(rowid).await.map_err(ApiError::from)?;
        Ok(event.map(Event::from))
    }

    /// One delivery by its id.
    async fn delivery(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Delivery>> {
        require(ctx, Role::Viewer)?;
        ctx.data_unchecked::<Reads>().add();
        let delivery =
            services(ctx)?.store.delivery(DeliveryId::from_stored(id.to_string())).await.map_err(ApiError::from)?;
        Ok(delivery.map(Delivery::from))
    }

    /// Dead-lettered deliveries, most recent first.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeadLetterFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<DeliveryPage> {
        require(ctx, Role::Viewer)?;
        let page = page_request(first, after.as_deref())?;
        ctx.data_unchecked::<Reads>().add();
        let found = services(ctx)?
            .store
            .dead_letters_page(filter.unwrap_or_default().selection(), page)
            .await
            .map_err(ApiError::from)?;
        let end_cursor = found.rows.last().map(|d| encode_cursor(d.cursor));
        let nodes = found.rows.into_iter().map(Delivery::from).collect();
        Ok(DeliveryPage { nodes, page_info: PageInfo { has_next_page: found.has_more, end_cursor } })
    }

    /// Events and deliveries by state.
    async fn counts(&self, ctx: &Context<'_>) -> Result<Counts> {
        require(ctx, Role::Viewer)?;
        ctx.data_unchecked::<Reads>().add();
        Ok(services(ctx)?.store.totals().await.map_err(ApiError::from)?.into())
    }

    /// Activity per time bucket over `[from, to)` (at most 31 days): events received,
    /// attempts that delivered and failed, deliveries dead-lettered, receipt-to-delivery time;
    /// for one source and/or one destination when given. Buckets are whole minutes, as few as
    /// keep the answer to at most 400 of them.
    async fn activity(
        &self,
        ctx: &Context<'_>,
        from: DateTime,
        to: DateTime,
        source: Option<String>,
        destination: Option<String>,
    ) -> Result<Activity> {
        require(ctx, Role::Viewer)?;
        let query = activity_query(from, to, source, destination)?;
        ctx.data_unchecked::<Reads>().add();
        let bucket_seconds = query.bucket_ms / 1_000;
        let buckets = services(ctx)?.store.activity(query).await.map_err(ApiError::from)?;
        Ok(Activity { bucket_seconds, buckets: buckets.into_iter().map(ActivityBucket::from).collect() })
    }

    /// Configured sources.
    async fn sources(&self, ctx: &Context<'_>) -> Result<Vec<Source>> {
        require(ctx, Role::Viewer)?;
        Ok(services(ctx)?.sources.clone())
    }

    /// Configured destinations with their breaker state and backlog.
    async fn destinations(&self, ctx: &Context<'_>) -> Result<Vec<Destination>> {
        require(ctx, Role::Viewer)?;
        let services = services(ctx)?;
        ctx.data_unchecked::<Reads>().add();
        let counts = services.store.destination_counts().await.map_err(ApiError::from)?;
        let now = std::time::Instant::now();
        let mut destinations: Vec<Destination> = services
            .destinations
            .values()
            .map(|d| {
                let count = counts.get(&d.config.name).copied().unwrap_or_default();
                Destination {
                    name: d.config.name.clone(),
                    url: redact_url(&d.config.url),
                    breaker_state: d.breaker.state(now).into(),
                    pending: count.pending,
                    dead_lettered: count.dead_lettered,
                    delivered: count.delivered,
                    dismissed: count.dismissed,
                }
            })
            .collect();
        destinations.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(destinations)
    }

    /// The audit log, newest first; only the rows `filter` picks when given.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<AuditPage> {
        require(ctx, Role::Viewer)?;
        let page = page_request(first, after.as_deref())?;
        ctx.data_unchecked::<Reads>().add();
        let selection = filter.unwrap_or_default().selection();
        let found = services(ctx)?.store.audit_page_matching(selection, page).await.map_err(ApiError::from)?;
        let end_cursor = found.rows.last().map(|n| encode_cursor(n.cursor()));
        let nodes = found.rows.into_iter().map(AuditEntry::from).collect();
        Ok(AuditPage { nodes, page_info: PageInfo { has_next_page: found.has_more, end_cursor } })
    }

    /// One bulk replay job.
    async fn bulk_replay(&self, ctx: &Context<'_>, id: ID) -> Result<Option<BulkReplay>> {
        require(ctx, Role::Viewer)?;
        let id = BulkReplayId(parse_id(&id)?);
        ctx.data_unchecked::<Reads>().add();
        let job = services(ctx)?.store.bulk_replay(id).await.map_err(ApiError::from)?;
        Ok(job.map(BulkReplay::from))
    }

    /// The sign-in methods linked to the caller's account (console sessions only).
    async fn my_accounts(&self, ctx: &Context<'_>) -> Result<Vec<LinkedAccount>> {
        let user_id = require(ctx, Role::Viewer)?.user_id.ok_or(ApiError::Invalid("only for console users".into()))?;
        ctx.data_unchecked::<Reads>().add();
        let accounts = services(ctx)?.store.linked_accounts(user_id).await.map_err(ApiError::from)?;
        Ok(accounts.into_iter().map(LinkedAccount::from).collect())
    }

    /// Requests of `source` that failed verification, kept in the quarantine with their
    /// diagnosis, oldest first (admin). `after`: a request's id.
    async fn rejected_requests(
        &self,
        ctx: &Context<'_>,
        source: String,
        first: Option<i32>,
        after: Option<ID>,
    ) -> Result<RejectedPage> {
        require(ctx, Role::Admin)?;
        let quarantine = quarantine(ctx)?;
        let after = after.as_ref().map(parse_id).transpose()?.unwrap_or(0);
        let limit = usize::try_from(first.unwrap_or(DEFAULT_PAGE))
            .map_err(|_| ApiError::Invalid("first must be positive".into()))?;
        let (entries, more) =
            quarantine.list(&source, u64::try_from(after).unwrap_or(0), limit).await.map_err(ApiError::from)?;
        let end_cursor = entries.last().map(|entry| entry.sequence.to_string());
        Ok(RejectedPage {
            nodes: entries.into_iter().map(RejectedRequest::from).collect(),
            page_info: PageInfo { has_next_page: more, end_cursor },
        })
    }

    /// How many rejected requests each source's slots hold now (admin).
    async fn rejected_counts(&self, ctx: &Context<'_>) -> Result<Vec<RejectedCount>> {
        require(ctx, Role::Admin)?;
        let counts = quarantine(ctx)?.counts().await.map_err(ApiError::from)?;
        Ok(counts
            .into_iter()
            .map(|(source, slot, count)| RejectedCount {
                source,
                slot: slot.into(),
                count: i64::try_from(count).unwrap_or(i64::MAX),
            })
            .collect())
    }

    /// API tokens (admin).
    async fn api_tokens(&self, ctx: &Context<'_>) -> Result<Vec<ApiToken>> {
        require(ctx, Role::Admin)?;
        ctx.data_unchecked::<Reads>().add();
        let tokens = services(ctx)?.store.api_tokens().await.map_err(ApiError::from)?;
        Ok(tokens.into_iter().map(ApiToken::from).collect())
    }

    /// Console users with their role (as of their last sign-in: roles follow `[console.access]`
    /// at every sign-in), linked sign-in methods, first and last sign-in and live sessions, by
    /// address (admin).
    async fn users(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
        require(ctx, Role::Admin)?;
        ctx.data_unchecked::<Reads>().add();
        let users = services(ctx)?.store.users(crate::model::UnixMs::now()).await.map_err(ApiError::from)?;
        Ok(users.into_iter().map(User::from).collect())
    }
}

/// Mutations (POST only; cookie callers need the CSRF header).
pub struct Mutation;

#[Object]
impl Mutation {
    /// Re-queues one delivery (dead-lettered, delivered or dismissed: its dismissal ends) with a
    /// fresh retry schedule. Concurrent replays of the same delivery queue it once. `config`:
    /// whose transform its attempts run, the current routes' (default) or those its event was
    /// routed with (`AS_RECEIVED`; refused for an event without `configVersion`). A pending
    /// delivery's next attempts take the `config` too. The answer and the audit row say which.
    async fn replay_delivery(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] config: ReplayConfig,
    ) -> Result<ReplayResult> {
        let principal = require(ctx, Role::Operator)?;
        let replayed = services(ctx)?
            .replayer
            .replay(DeliveryId::from_stored(id.to_string()), &principal.actor, config.into())
            .await?;
        Ok(replayed.into())
    }

    /// Dismisses a dead letter: resolved without delivering it, by the caller, with an optional
    /// `note` (at most 500 characters). It becomes `DISMISSED`: no longer listed, counted or
    /// bulk-replayed as a dead letter, never attempted again, kept and pruned like a delivered
    /// delivery; `replayDelivery` still takes it back. Audited (`DISMISS_DEAD_LETTER`, the note
    /// as detail). Anything but a dead letter is refused (`BAD_USER_INPUT`).
    async fn dismiss_dead_letter(&self, ctx: &Context<'_>, id: ID, note: Option<String>) -> Result<Delivery> {
        let principal = require(ctx, Role::Operator)?;
        let note = note.map(|note| note.trim().to_owned()).filter(|note| !note.is_empty());
        if note.as_ref().is_some_and(|note| note.chars().count() > MAX_NOTE_CHARS) {
            return Err(ApiError::Invalid(format!("note must be at most {MAX_NOTE_CHARS} characters")).into());
        }
        let dismissed = services(ctx)?
            .store
            .dismiss(DeliveryId::from_stored(id.to_string()), principal.actor.clone(), note)
            .await
            .map_err(ApiError::from)?;
        match dismissed {
            Dismissed::Done(row) => {
                tracing::info!(delivery_id = row.id.as_str(), "dead letter dismissed");
                Ok(Delivery::from(*row))
            }
            Dismissed::NotFound => Err(ApiError::NotFound.into()),
            Dismissed::NotDeadLettered(status) => Err(ApiError::Invalid(format!(
                "only a dead letter can be dismissed; this delivery is {}",
                status.as_str()
            ))
            .into()),
        }
    }

    /// Replays an event to a configured destination, routed there or not (e.g. staging): a new
    /// delivery, due now, with its own id (so its own `Idempotency-Key`:
    /// `dlv_<event>_<destination>~r<n>`, fixed for its retries), its lineage kept (`replayOf`:
    /// `deliveryId` when given; `createdBy`: the caller; `createdAt`). Give exactly one of
    /// `deliveryId` (that delivery's event; the delivery itself is not touched) and `eventId`.
    /// Audited (`REPLAY_TO_DESTINATION`) and rate-limited like every replay
    /// (`console.max_replay_rate`). `config` as in `replayDelivery`: with `AS_RECEIVED`, the
    /// transform the event's routes gave `destination` (none, when they did not name it).
    async fn replay_to_destination(
        &self,
        ctx: &Context<'_>,
        destination: String,
        delivery_id: Option<ID>,
        event_id: Option<ID>,
        #[graphql(default)] config: ReplayConfig,
    ) -> Result<Delivery> {
        let principal = require(ctx, Role::Operator)?;
        let origin = match (delivery_id, event_id) {
            (Some(id), None) => ReplayOrigin::Delivery(DeliveryId::from_stored(id.to_string())),
            (None, Some(id)) => ReplayOrigin::Event(EventRowId(parse_id(&id)?)),
            _ => return Err(ApiError::Invalid("give exactly one of deliveryId and eventId".into()).into()),
        };
        let row = services(ctx)?.replayer.replay_to(origin, &destination, &principal.actor, config.into()).await?;
        Ok(row.into())
    }

    /// Re-queues every dead-lettered delivery of one event, with the `config` of
    /// `replayDelivery` (`AS_RECEIVED` of an event without `configVersion` replays none).
    async fn replay_event(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] config: ReplayConfig,
    ) -> Result<Vec<ReplayResult>> {
        let principal = require(ctx, Role::Operator)?;
        let event = EventRowId(parse_id(&id)?);
        let replayed = services(ctx)?.replayer.replay_event(event, &principal.actor, config.into()).await?;
        Ok(replayed.into_iter().map(ReplayResult::from).collect())
    }

    /// Replays the dead letters matching `filter`. With `dryRun: true` nothing happens: the
    /// answer is the count, a sample and a `previewToken` (valid 15 minutes). Otherwise a job
    /// starts, re-queuing at most `ratePerSecond` (capped by `console.max_replay_rate`)
    /// deliveries per second. With `previewToken` (and the same filter) the job replays exactly
    /// the dead letters that dry run counted, never one that arrived later; when they changed
    /// meanwhile, or the filter differs, it is refused (`PREVIEW_STALE`) and nothing happens.
    /// Without it, the job takes what the filter selects now. `config` as in `replayDelivery`,
    /// for every item (kept with the filter: the dry run and its confirmation give the same);
    /// with `AS_RECEIVED`, an item whose event has no `configVersion` is left as it is.
    async fn bulk_replay(
        &self,
        ctx: &Context<'_>,
        filter: DeadLetterFilter,
        dry_run: bool,
        rate_per_second: Option<i32>,
        preview_token: Option<String>,
        #[graphql(default)] config: ReplayConfig,
    ) -> Result<BulkReplayPlan> {
        let principal = require(ctx, Role::Operator)?;
        let services = services(ctx)?;
        if dry_run {
            let filter_json = filter.to_json_with(config);
            let previewed = services.replayer.preview(filter.selection(), filter_json, &principal.actor).await?;
            let sample = previewed.sample.into_iter().map(Delivery::from).collect();
            return Ok(BulkReplayPlan {
                dry_run,
                count: previewed.count,
                sample,
                job: None,
                preview_token: Some(previewed.token),
            });
        }
        let request = BulkRequest {
            selection: filter.selection(),
            filter_json: filter.to_json_with(config),
            rate_per_second,
            actor: principal.actor.clone(),
            preview_token,
            config: config.into(),
        };
        let (job, sample) = services.replayer.start_bulk(request).await?;
        let sample = sample.into_iter().map(Delivery::from).collect();
        Ok(BulkReplayPlan { dry_run, count: job.total, sample, job: Some(job.into()), preview_token: None })
    }

    /// Stops a running bulk replay; deliveries already re-queued stay queued.
    async fn cancel_bulk_replay(&self, ctx: &Context<'_>, id: ID) -> Result<BulkReplay> {
        let principal = require(ctx, Role::Operator)?;
        let id = BulkReplayId(parse_id(&id)?);
        Ok(services(ctx)?.replayer.cancel_bulk(id, principal.actor.clone()).await?.into())
    }

    /// Unlinks one of the caller's sign-in methods; the last one cannot be unlinked.
    async fn unlink_account(&self, ctx: &Context<'_>, id: ID) -> Result<Vec<LinkedAccount>> {
        let principal = require(ctx, Role::Viewer)?;
        let user_id = principal.user_id.ok_or(ApiError::Invalid("only for console users".into()))?;
        let link_id = LinkedAccountId(parse_id(&id)?);
        let outcome = services(ctx)?
            .store
            .unlink_account(user_id, link_id, principal.actor.clone())
            .await
            .map_err(ApiError::from)?;
        match outcome {
            Unlinked::Done(accounts) => Ok(accounts.into_iter().map(LinkedAccount::from).collect()),
            Unlinked::NoSuchAccount => Err(ApiError::Invalid("no such linked account".into()).into()),
            Unlinked::LastAccount => Err(ApiError::Invalid("the last sign-in method cannot be unlinked".into()).into()),
        }
    }

    /// Re-verifies `source`'s rejected requests (all, or those in `ids`) with the secrets the
    /// worker is configured with now, the timestamp tolerance counted from each request's
    /// original receipt; those that verify enter the intake stream as ingest would have
    /// published them (original receipt time, deduplicated by event id) and leave the
    /// quarantine; audited (admin).
    async fn admit_rejected(&self, ctx: &Context<'_>, source: String, ids: Option<Vec<ID>>) -> Result<AdmissionResult> {
        let principal = require(ctx, Role::Admin)?;
        let sequences = ids
            .map(|ids| {
                ids.iter()
                    .map(|id| {
                        parse_id(id)
                            .and_then(|n| u64::try_from(n).map_err(|_| ApiError::Invalid("malformed id".into())))
                    })
                    .collect::<Result<Vec<u64>, ApiError>>()
            })
            .transpose()?;
        Ok(quarantine(ctx)?.admit(&source, sequences, &principal.actor).await.map_err(ApiError::from)?.into())
    }

    /// Asks `source`'s provider for what it sent since `since` and recovers what is not
    /// stored: Stripe events are published into the intake stream, GitHub deliveries that never
    /// got a 2xx are redelivered by GitHub (`[[backfill]]`, docs/backfill.md). `dryRun` only
    /// counts. One run per source at a time; audited unless a dry run (admin).
    async fn backfill(
        &self,
        ctx: &Context<'_>,
        source: String,
        since: DateTime,
        #[graphql(default)] dry_run: bool,
    ) -> Result<BackfillResult> {
        let principal = require(ctx, Role::Admin)?;
        if since.0 > crate::model::UnixMs::now() {
            return Err(ApiError::Invalid("since is in the future".into()).into());
        }
        let report =
            services(ctx)?.backfiller.run(&source, since.0, dry_run, &principal.actor).await.map_err(ApiError::from)?;
        Ok(BackfillResult::of(&report, dry_run))
    }

    /// Creates an API token (admin). The value is in this answer only.
    async fn create_api_token(&self, ctx: &Context<'_>, name: String, role: RoleName) -> Result<CreatedApiToken> {
        let principal = require(ctx, Role::Admin)?;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(ApiError::Invalid("name must be 1-64 characters of [A-Za-z0-9._-]".into()).into());
        }
        let token = format!("{TOKEN_PREFIX}{}", random_token(32));
        let hash = sha256_hex(&token);
        let created = services(ctx)?
            .store
            .create_api_token(name, hash, role.into(), principal.actor.clone())
            .await
            .map_err(ApiError::from)?;
        Ok(CreatedApiToken { token, api_token: created.into() })
    }

    /// Revokes an API token (admin); it stops working at once.
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: ID) -> Result<ApiToken> {
        let principal = require(ctx, Role::Admin)?;
        let id = ApiTokenId(parse_id(&id)?);
        let token = services(ctx)?.store.revoke_api_token(id, principal.actor.clone()).await.map_err(ApiError::from)?;
        Ok(token.map(ApiToken::from).ok_or(ApiError::NotFound)?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn destination_urls_lose_credentials() {
        assert_eq!(super::redact_url("https://orders.internal/hooks"), "https://orders.internal/hooks");
        assert_eq!(
            super::redact_url("https://u:p@orders.internal:8443/h?token=s3cret"),
            "https://orders.internal:8443/h?…"
        );
        assert_eq!(super::redact_url("http://127.0.0.1:9"), "http://127.0.0.1:9/");
    }
}
