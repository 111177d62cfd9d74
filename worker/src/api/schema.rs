//! The GraphQL root types: queries (viewer), replays (operator), API tokens (admin).

use async_graphql::{Context, EmptySubscription, ID, Object, Result, Schema};
use inlet_shared::config::Role;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::error::ApiError;
use super::loaders::Reads;
use super::services;
use super::types::*;
use crate::auth::{Principal, TOKEN_PREFIX, random_token, sha256_hex};
use crate::model::{ApiTokenId, LinkedAccountId};
use crate::store::Unlinked;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 10;
/// Highest query complexity accepted (lists count as `first × child`).
pub const MAX_COMPLEXITY: usize = 5_000;

/// The API schema.
pub type ApiSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema with its limits; `data` is added by the caller.
pub fn builder() -> async_graphql::SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .disable_suggestions()
}

/// The caller, if their role is at least `role`.
fn require<'a>(ctx: &'a Context<'_>, role: Role) -> Result<&'a Principal, ApiError> {
    let principal = ctx.data_opt::<Principal>().ok_or(ApiError::Unauthenticated)?;
    if principal.role < role {
        return Err(ApiError::Forbidden);
    }
    Ok(principal)
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

fn parse_id(id: &ID) -> Result<i64, ApiError> {
    id.parse::<i64>().map_err(|_| ApiError::Invalid("malformed id".into()))
}

/// Queries.
pub struct Query;

/// One row by key: `SELECT {columns} FROM {from} WHERE {key_column} = ?1`.
async fn fetch_one<T, K>(
    ctx: &Context<'_>,
    columns: &'static str,
    from: &'static str,
    key_column: &'static str,
    key: K,
    from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>>
where
    T: Send + 'static,
    K: rusqlite::ToSql + Send + 'static,
{
    ctx.data_unchecked::<Reads>().add();
    Ok(services(ctx)?
        .store
        .read(move |c| {
            c.query_row(&format!("SELECT {columns} FROM {from} WHERE {key_column} = ?1"), [key], from_row).optional()
        })
        .await
        .map_err(ApiError::from)?)
}

/// What one cursor-paginated list selects: `SELECT {columns} FROM {from} … ORDER BY {key} DESC`,
/// with `key` also the cursor.
struct PageQuery {
    columns: &'static str,
    from: &'static str,
    key: &'static str,
}

/// One page, newest first, plus whether another page follows (one extra row is read to know).
async fn fetch_page<T: Send + 'static>(
    ctx: &Context<'_>,
    query: PageQuery,
    mut w: Where,
    first: Option<i32>,
    after: Option<String>,
    from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<(Vec<T>, bool)> {
    let size = page_size(first)?;
    if let Some(after) = after {
        w.add(&format!("{} < ?", query.key), [Value::from(decode_cursor(&after)?)]);
    }
    ctx.data_unchecked::<Reads>().add();
    let mut nodes = services(ctx)?
        .store
        .read(move |c| {
            let sql = format!(
                "SELECT {} FROM {} {} ORDER BY {} DESC LIMIT {}",
                query.columns,
                query.from,
                w.sql(),
                query.key,
                size + 1
            );
            let mut statement = c.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(w.params.iter()), from_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(ApiError::from)?;
    let has_next_page = nodes.len() > size;
    nodes.truncate(size);
    Ok((nodes, has_next_page))
}

#[Object]
impl Query {
    /// Who is calling (null when not signed in).
    async fn me(&self, ctx: &Context<'_>) -> Option<Me> {
        ctx.data_opt::<Principal>().map(|p| Me { actor: p.actor.clone(), role: p.role.as_str().into() })
    }

    /// Events, newest first.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<EventPage> {
        require(ctx, Role::Viewer)?;
        let query = PageQuery { columns: Event::COLUMNS, from: "events e", key: "e.id" };
        let (nodes, has_next_page) =
            fetch_page(ctx, query, filter.unwrap_or_default().to_where(), first, after, Event::from_row).await?;
        let end_cursor = nodes.last().map(|e| encode_cursor(e.rowid));
        Ok(EventPage { nodes, page_info: PageInfo { has_next_page, end_cursor } })
    }

    /// One event by its id.
    async fn event(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Event>> {
        require(ctx, Role::Viewer)?;
        let rowid = parse_id(&id)?;
        fetch_one(ctx, Event::COLUMNS, "events e", "e.id", rowid, Event::from_row).await
    }

    /// One delivery by its id.
    async fn delivery(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Delivery>> {
        require(ctx, Role::Viewer)?;
        fetch_one(ctx, Delivery::COLUMNS, "deliveries d", "d.id", id.to_string(), Delivery::from_row).await
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
        let query = PageQuery {
            columns: Delivery::COLUMNS,
            from: "deliveries d JOIN events e ON e.id = d.event_rowid",
            key: "d.rowid",
        };
        let (nodes, has_next_page) =
            fetch_page(ctx, query, filter.unwrap_or_default().to_where(), first, after, Delivery::from_row).await?;
        let end_cursor = nodes.last().map(|d| encode_cursor(d.cursor_rowid));
        Ok(DeliveryPage { nodes, page_info: PageInfo { has_next_page, end_cursor } })
    }

    /// Events and deliveries by state.
    async fn counts(&self, ctx: &Context<'_>) -> Result<Counts> {
        require(ctx, Role::Viewer)?;
        ctx.data_unchecked::<Reads>().add();
        Ok(services(ctx)?
            .store
            .read(|c| {
                // Kept up to date by triggers (schemas/sql/0009): a few rows, not a scan of every
                // event and delivery kept for the retention period.
                let (events, unrouted) = c.query_row(
                    "SELECT coalesce(sum(n), 0), coalesce(sum(n) FILTER (WHERE route_status = 'unrouted'), 0)
                     FROM event_counts",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let mut counts = Counts { events, unrouted, ..Counts::default() };
                let mut statement = c.prepare_cached("SELECT status, sum(n) FROM delivery_counts GROUP BY status")?;
                let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                for row in rows {
                    let (status, n) = row?;
                    match status.as_str() {
                        "pending" => counts.pending = n,
                        "delivered" => counts.delivered = n,
                        "dead_lettered" => counts.dead_lettered = n,
                        _ => {}
                    }
                }
                Ok(counts)
            })
            .await
            .map_err(ApiError::from)?)
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
        let counts: Vec<(String, String, i64)> = services
            .store
            .read(|c| {
                // Kept up to date by triggers: a few rows, whatever the retention.
                let mut statement = c.prepare_cached("SELECT destination, status, n FROM delivery_counts")?;
                let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect()
            })
            .await
            .map_err(ApiError::from)?;
        let now = std::time::Instant::now();
        let mut destinations: Vec<Destination> = services
            .destinations
            .values()
            .map(|d| {
                let count = |status: &str| {
                    counts.iter().filter(|(n, s, _)| *n == d.config.name && s == status).map(|(_, _, n)| *n).sum()
                };
                Destination {
                    name: d.config.name.clone(),
                    url: redact_url(&d.config.url),
                    breaker_state: d.breaker.state(now).as_str().into(),
                    pending: count("pending"),
                    dead_lettered: count("dead_lettered"),
                    delivered: count("delivered"),
                }
            })
            .collect();
        destinations.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(destinations)
    }

    /// The audit log, newest first.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn audit_log(&self, ctx: &Context<'_>, first: Option<i32>, after: Option<String>) -> Result<AuditPage> {
        require(ctx, Role::Viewer)?;
        let size = page_size(first)?;
        let before = match after {
            Some(cursor) => decode_cursor(&cursor)?,
            None => i64::MAX,
        };
        ctx.data_unchecked::<Reads>().add();
        let mut nodes = services(ctx)?
            .store
            .read(move |c| {
                let mut statement = c.prepare(
                    "SELECT id, at_ms, actor, action, target, count, detail FROM audit_log WHERE id < ?1
                     ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = statement.query_map(params![before, i64::try_from(size + 1).unwrap_or(101)], |r| {
                    Ok(AuditEntry {
                        id: ID(r.get::<_, i64>(0)?.to_string()),
                        at_ms: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        count: r.get(5)?,
                        detail: r.get(6)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(ApiError::from)?;
        let has_next_page = nodes.len() > size;
        nodes.truncate(size);
        let end_cursor = nodes.last().and_then(|n| n.id.parse().ok()).map(encode_cursor);
        Ok(AuditPage { nodes, page_info: PageInfo { has_next_page, end_cursor } })
    }

    /// One bulk replay job.
    async fn bulk_replay(&self, ctx: &Context<'_>, id: ID) -> Result<Option<BulkReplay>> {
        require(ctx, Role::Viewer)?;
        let id = parse_id(&id)?;
        fetch_one(ctx, BulkReplay::COLUMNS, "bulk_replays", "id", id, BulkReplay::from_row).await
    }

    /// The sign-in methods linked to the caller's account (console sessions only).
    async fn my_accounts(&self, ctx: &Context<'_>) -> Result<Vec<LinkedAccount>> {
        let user_id = require(ctx, Role::Viewer)?.user_id.ok_or(ApiError::Invalid("only for console users".into()))?;
        ctx.data_unchecked::<Reads>().add();
        let accounts = services(ctx)?.store.linked_accounts(user_id).await.map_err(ApiError::from)?;
        Ok(accounts.into_iter().map(LinkedAccount::from).collect())
    }

    /// API tokens (admin).
    async fn api_tokens(&self, ctx: &Context<'_>) -> Result<Vec<ApiToken>> {
        require(ctx, Role::Admin)?;
        ctx.data_unchecked::<Reads>().add();
        let tokens = services(ctx)?.store.api_tokens().await.map_err(ApiError::from)?;
        Ok(tokens.into_iter().map(ApiToken::from).collect())
    }
}

/// Mutations (POST only; cookie callers need the CSRF header).
pub struct Mutation;

#[Object]
impl Mutation {
    /// Re-queues one delivery (dead-lettered or delivered) with a fresh retry schedule.
    /// Concurrent replays of the same delivery queue it once.
    async fn replay_delivery(&self, ctx: &Context<'_>, id: ID) -> Result<ReplayResult> {
        let principal = require(ctx, Role::Operator)?;
        let services = services(ctx)?;
        services.replayer.admit(&principal.actor)?;
        Ok(services.replayer.replay(id.as_str(), &principal.actor, true).await?)
    }

    /// Re-queues every dead-lettered delivery of one event.
    async fn replay_event(&self, ctx: &Context<'_>, id: ID) -> Result<Vec<ReplayResult>> {
        let principal = require(ctx, Role::Operator)?;
        let rowid = parse_id(&id)?;
        let services = services(ctx)?;
        services.replayer.admit(&principal.actor)?;
        let ids: Vec<String> = services
            .store
            .read(move |c| {
                let mut statement = c.prepare(
                    "SELECT id FROM deliveries WHERE event_rowid = ?1 AND status = 'dead_lettered' ORDER BY destination",
                )?;
                let rows = statement.query_map([rowid], |r| r.get(0))?;
                rows.collect()
            })
            .await
            .map_err(ApiError::from)?;
        let mut results = Vec::with_capacity(ids.len());
        for delivery_id in ids {
            results.push(services.replayer.replay(&delivery_id, &principal.actor, true).await?);
        }
        Ok(results)
    }

    /// Replays the dead letters matching `filter`. With `dryRun: true` nothing happens: the
    /// answer is the count and a sample. Otherwise a job starts, re-queuing at most
    /// `ratePerSecond` (capped by `console.max_replay_rate`) deliveries per second.
    async fn bulk_replay(
        &self,
        ctx: &Context<'_>,
        filter: DeadLetterFilter,
        dry_run: bool,
        rate_per_second: Option<i32>,
    ) -> Result<BulkReplayPlan> {
        let principal = require(ctx, Role::Operator)?;
        let services = services(ctx)?;
        let (count, sample) = services.replayer.preview(&filter).await?;
        if dry_run {
            return Ok(BulkReplayPlan { dry_run, count, sample, job: None });
        }
        let job = services.replayer.start_bulk(filter, rate_per_second, principal.actor.clone()).await?;
        Ok(BulkReplayPlan { dry_run, count: job.total, sample, job: Some(job) })
    }

    /// Stops a running bulk replay; deliveries already re-queued stay queued.
    async fn cancel_bulk_replay(&self, ctx: &Context<'_>, id: ID) -> Result<BulkReplay> {
        let principal = require(ctx, Role::Operator)?;
        let id = parse_id(&id)?;
        Ok(services(ctx)?.replayer.cancel_bulk(id, principal.actor.clone()).await?)
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
