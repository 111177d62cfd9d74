//! `ApiError`: the one mapping from operator-plane failures to GraphQL errors. Messages carry
//! no internals (the cause is logged); `extensions.code` is stable for clients.
//!
//! `ApiError` deliberately does not implement `Display`: async-graphql converts anything
//! displayable into an error by its text alone, which would skip this mapping.

use crate::backfill::BackfillError;
use crate::quarantine::QuarantineError;
use crate::replay::ReplayError;
use crate::store::StoreError;

/// Why an API operation failed.
#[derive(Debug)]
pub enum ApiError {
    /// No credentials.
    Unauthenticated,
    /// The caller's role does not allow this.
    Forbidden,
    /// Nothing with that id.
    NotFound,
    /// A bad argument.
    Invalid(String),
    /// The database failed.
    Store(StoreError),
    /// Too many replays from this caller right now.
    RateLimited,
    /// The answer would carry more stored content than one answer may.
    ResponseTooLarge,
    /// The quarantine stream did not answer.
    Quarantine(String),
    /// A bulk replay's preview no longer stands (unknown or expired token, another filter, or
    /// the previewed dead letters changed): nothing was done; preview again.
    PreviewStale(String),
    /// A backfill's provider API or the intake stream failed (said to the admin who asked: the
    /// provider's status, never its key).
    Backfill(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Store(error)
    }
}

impl ApiError {
    /// What the caller is told.
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated => "authentication required".into(),
            ApiError::Forbidden => "your role does not allow this".into(),
            ApiError::NotFound => "not found".into(),
            ApiError::Invalid(why) => format!("invalid argument: {why}"),
            ApiError::Store(_) => "the database is unavailable".into(),
            ApiError::Quarantine(_) => "the quarantine stream is unavailable".into(),
            ApiError::RateLimited => "too many replays; try again in a moment".into(),
            ApiError::ResponseTooLarge => {
                "this answer already carries 8 MiB of event contents; ask for fewer at a time".into()
            }
            ApiError::PreviewStale(why) => format!("{why}; nothing was replayed: preview (dry run) again"),
            ApiError::Backfill(why) => format!("backfill stopped: {why} (what it did before is in the audit log)"),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "UNAUTHENTICATED",
            ApiError::Forbidden => "FORBIDDEN",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::Invalid(_) => "BAD_USER_INPUT",
            ApiError::Store(_) => "UNAVAILABLE",
            ApiError::Quarantine(_) => "UNAVAILABLE",
            ApiError::RateLimited => "RATE_LIMITED",
            ApiError::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            ApiError::PreviewStale(_) => "PREVIEW_STALE",
            ApiError::Backfill(_) => "UNAVAILABLE",
        }
    }
}

/// The quarantine's failures, as the API reports them.
impl From<QuarantineError> for ApiError {
    fn from(error: QuarantineError) -> Self {
        match error {
            QuarantineError::UnknownSource(name) => ApiError::Invalid(format!("no source `{name}` is configured")),
            QuarantineError::Stream(why) => ApiError::Quarantine(why),
            QuarantineError::Store(error) => ApiError::Store(error),
        }
    }
}

/// A backfill's failures, as the API reports them.
impl From<BackfillError> for ApiError {
    fn from(error: BackfillError) -> Self {
        match error {
            BackfillError::UnknownSource(name) => ApiError::Invalid(format!("no source `{name}` is configured")),
            BackfillError::NotConfigured(name) => {
                ApiError::Invalid(format!("source `{name}` has no [[backfill]] in the worker's configuration"))
            }
            BackfillError::AlreadyRunning(name) => {
                ApiError::Invalid(format!("a backfill of source `{name}` is running already"))
            }
            BackfillError::Provider(why) => ApiError::Backfill(format!("provider API: {why}")),
            BackfillError::Stream(why) => ApiError::Backfill(format!("intake stream: {why}")),
            BackfillError::Store(error) => ApiError::Store(error),
        }
    }
}

/// The replay service's failures, as the API reports them.
impl From<ReplayError> for ApiError {
    fn from(error: ReplayError) -> Self {
        match error {
            ReplayError::NotFound => ApiError::NotFound,
            ReplayError::RateLimited => ApiError::RateLimited,
            ReplayError::DestinationGone(destination) => {
                ApiError::Invalid(format!("destination `{destination}` is no longer configured"))
            }
            ReplayError::UnknownDestination(destination) => {
                ApiError::Invalid(format!("no destination `{destination}` is configured"))
            }
            ReplayError::TooManyMatches(max) => {
                ApiError::Invalid(format!("more than {max} dead letters match; narrow the filter"))
            }
            ReplayError::BadRate => ApiError::Invalid("ratePerSecond must be at least 1".into()),
            ReplayError::PreviewUnknown => ApiError::PreviewStale("the preview token is unknown or expired".into()),
            ReplayError::PreviewFilterChanged => {
                ApiError::PreviewStale("the filter is not the one the preview token was given for".into())
            }
            ReplayError::SelectionChanged(previewed, now) => ApiError::PreviewStale(format!(
                "the preview counted {previewed} dead letters, {now} of them are still dead letters"
            )),
            ReplayError::NoRecordedConfig => ApiError::Invalid(
                "the event was recorded without a config version (before versions were kept, or by an older \
                 worker), so it cannot be replayed as received; nothing was replayed (replay it with config: CURRENT)"
                    .into(),
            ),
            ReplayError::Store(error) => ApiError::Store(error),
        }
    }
}

/// Lets resolvers use `?` on the replay service's results: through the mapping above, never
/// by text.
impl From<ReplayError> for async_graphql::Error {
    fn from(error: ReplayError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        match &error {
            ApiError::Store(cause) => {
                tracing::error!(error = %cause, source = ?std::error::Error::source(cause), "API database error")
            }
            ApiError::Quarantine(cause) => tracing::error!(error = %cause, "API quarantine error"),
            ApiError::Backfill(cause) => tracing::warn!(error = %cause, "API backfill stopped"),
            _ => {}
        }
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", error.code());
        async_graphql::Error { message: error.message(), source: None, extensions: Some(extensions) }
    }
}
