//! `dryRun`: a filter and a transform tried on stored events before they are saved in the
//! config. Nothing is written: the events are read (their contents within the answer's content
//! budget), the filter evaluated inline, the transform run on the worker's transform pool with
//! its deadline.

use std::sync::Arc;

use async_graphql::{Context, ID, SimpleObject};

use super::error::ApiError;
use super::loaders::{ContentBudget, Reads};
use super::schema::parse_id;
use super::services;
use super::types::{Event, Header};
use crate::model::EventRowId;
use crate::programs::{Filter, FilterInput, FilterOutcome, Transform, body_for_filter};
use crate::store::{ContentRead, EventRow, EventSelection, PageRequest};

/// Most events one dry run looks at.
pub const MAX_DRY_RUN_EVENTS: usize = 100;

/// What a dry run did with one event.
#[derive(SimpleObject, Debug, Clone)]
pub struct DryRunResult {
    /// The event.
    pub event: Event,
    /// Whether the filter is true for it (true without a filter).
    pub matched: bool,
    /// Why the filter could not be evaluated to a bool (then `matched` is false).
    pub filter_error: Option<String>,
    /// The event's body as text (invalid UTF-8 replaced).
    pub input: Option<String>,
    /// The body the transform made (only for a matched event, with a transform).
    pub output: Option<String>,
    /// Headers the transform set.
    pub output_headers: Vec<Header>,
    /// Why the transform failed (a delivery would be dead-lettered `TRANSFORM_FAILED`), or why
    /// the event's content was not read.
    pub transform_error: Option<String>,
}

/// Runs `filter` and `transform` (either may be absent) on the newest `last` events of
/// `source`, or on `event_ids` (which must be of `source`).
pub async fn dry_run(
    ctx: &Context<'_>,
    source: String,
    filter: Option<String>,
    transform: Option<String>,
    last: Option<i32>,
    event_ids: Option<Vec<ID>>,
) -> Result<Vec<DryRunResult>, ApiError> {
    let services = services(ctx)?;
    if !services.sources.iter().any(|s| s.name == source) {
        return Err(ApiError::Invalid(format!("no source `{source}` is configured")));
    }
    let filter = match filter.filter(|f| !f.trim().is_empty()) {
        Some(text) => Some(Filter::compile(&text).map_err(|e| ApiError::Invalid(format!("filter: {e}")))?),
        None => None,
    };
    let transform = match transform.filter(|t| !t.trim().is_empty()) {
        Some(text) => {
            Some(Arc::new(Transform::compile(&text).map_err(|e| ApiError::Invalid(format!("transform: {e}")))?))
        }
        None => None,
    };
    let events = select_events(ctx, &source, last, event_ids).await?;
    let budget = ctx.data_unchecked::<ContentBudget>().clone();
    let mut results = Vec::with_capacity(events.len());
    for row in events {
        ctx.data_unchecked::<Reads>().add();
        let budget = budget.clone();
        let content = services.store.event_content(row.id, move |size| budget.take(size)).await?;
        let mut result = DryRunResult {
            event: Event::from(row.clone()),
            matched: false,
            filter_error: None,
            input: None,
            output: None,
            output_headers: Vec::new(),
            transform_error: None,
        };
        let content = match content {
            ContentRead::Loaded(content) => content,
            ContentRead::OverBudget => {
                result.transform_error = Some("not read: over this answer's content budget".into());
                results.push(result);
                continue;
            }
        };
        result.input = Some(String::from_utf8_lossy(&content.body).into_owned());
        result.matched = match &filter {
            None => true,
            Some(filter) => {
                let body = body_for_filter(&content.body);
                let outcome = filter.evaluate(&FilterInput {
                    body: &body,
                    headers_json: &content.headers_json,
                    source: &row.source,
                    event_type: row.event_type.as_deref(),
                });
                if let FilterOutcome::Error(error) = &outcome {
                    result.filter_error = Some(error.clone());
                }
                outcome.matched()
            }
        };
        if let (true, Some(transform)) = (result.matched, &transform) {
            match services.transforms.run(Arc::clone(transform), content.body.into()).await {
                Ok(output) => {
                    result.output = Some(String::from_utf8_lossy(&output.body).into_owned());
                    result.output_headers =
                        output.headers.into_iter().map(|(name, value)| Header { name, value }).collect();
                }
                Err(error) => result.transform_error = Some(error.to_string()),
            }
        }
        results.push(result);
    }
    Ok(results)
}

async fn select_events(
    ctx: &Context<'_>,
    source: &str,
    last: Option<i32>,
    event_ids: Option<Vec<ID>>,
) -> Result<Vec<EventRow>, ApiError> {
    let store = &services(ctx)?.store;
    match event_ids {
        Some(ids) => {
            if ids.is_empty() || ids.len() > MAX_DRY_RUN_EVENTS {
                return Err(ApiError::Invalid(format!("eventIds: give 1 to {MAX_DRY_RUN_EVENTS} ids")));
            }
            let mut rows = Vec::with_capacity(ids.len());
            for id in &ids {
                ctx.data_unchecked::<Reads>().add();
                let row = store.event(EventRowId(parse_id(id)?)).await?.ok_or(ApiError::NotFound)?;
                if row.source != source {
                    return Err(ApiError::Invalid(format!("event {} is not of source `{source}`", id.as_str())));
                }
                rows.push(row);
            }
            Ok(rows)
        }
        None => {
            let last = last.unwrap_or(20);
            if !(1..=i32::try_from(MAX_DRY_RUN_EVENTS).unwrap_or(i32::MAX)).contains(&last) {
                return Err(ApiError::Invalid(format!("last: give 1 to {MAX_DRY_RUN_EVENTS}")));
            }
            ctx.data_unchecked::<Reads>().add();
            let selection = EventSelection { source: Some(source.to_owned()), ..EventSelection::default() };
            let page = PageRequest { after: None, limit: usize::try_from(last).unwrap_or(1) };
            Ok(store.events_page(selection, page).await?.rows)
        }
    }
}
