//! What JetStream answers a publish: the PubAck ([`Stored`]) or why none came
//! ([`PublishFailure`]), told apart by JetStream's error codes (the table is in
//! [`crate::publish`]). Shared by single publishes (`publish`) and atomic batches (`batch`).

use async_nats::jetstream::{self, context::PublishError, context::PublishErrorKind};

/// What JetStream said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Newly stored at this stream sequence.
    New(u64),
    /// Already stored (same `Nats-Msg-Id` within the duplicate window).
    Duplicate(u64),
}

/// Why no PubAck came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishFailure {
    /// The client is not connected right now.
    Disconnected,
    /// No PubAck within the deadline.
    Timeout,
    /// Message too large for the server's `max_payload` or the stream's message limits: it can
    /// never be stored.
    TooLarge,
    /// The message's headers are over what JetStream stores with a message (64 KiB, 10097): it
    /// can never be stored.
    HeadersTooLarge,
    /// JetStream cannot store anything (more) right now; it may later.
    StoreFull(StoreFull),
    /// Any other server or client error (no stream, no responders, …).
    Failed,
}

/// Which storage limit or failure JetStream reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFull {
    /// The intake stream's own `max_bytes` (or message count) is reached (10077 "maximum … exceeded").
    StreamLimit,
    /// The server's JetStream file store limit, `max_file_store` (10023, 10047).
    ServerLimit,
    /// The account's JetStream storage limit (10002).
    AccountLimit,
    /// Writing failed (10077 with an I/O error, or the stream reports a sticky write error:
    /// after ENOSPC nats-server needs a restart before the stream writes again).
    WriteFailed,
}

/// Every `reason` label value of [`crate::metric_names::PUBLISH_FAILURES`].
#[cfg(test)]
pub const FAILURE_REASONS: &[&str] = &[
    "nats_disconnected",
    "puback_timeout",
    "exceeds_max_payload",
    "headers_too_large",
    "stream_full",
    "server_storage_full",
    "account_storage_full",
    "store_write_failed",
    "publish_failed",
];

impl PublishFailure {
    /// Short label for logs, metrics and answers (one of `FAILURE_REASONS`).
    pub fn as_str(self) -> &'static str {
        match self {
            PublishFailure::Disconnected => "nats_disconnected",
            PublishFailure::Timeout => "puback_timeout",
            PublishFailure::TooLarge => "exceeds_max_payload",
            PublishFailure::HeadersTooLarge => "headers_too_large",
            PublishFailure::StoreFull(StoreFull::StreamLimit) => "stream_full",
            PublishFailure::StoreFull(StoreFull::ServerLimit) => "server_storage_full",
            PublishFailure::StoreFull(StoreFull::AccountLimit) => "account_storage_full",
            PublishFailure::StoreFull(StoreFull::WriteFailed) => "store_write_failed",
            PublishFailure::Failed => "publish_failed",
        }
    }
}

/// Maps async-nats publish errors to our failure kinds.
pub(crate) fn classify(error: &PublishError) -> PublishFailure {
    match error.kind() {
        PublishErrorKind::TimedOut => PublishFailure::Timeout,
        PublishErrorKind::BrokenPipe => PublishFailure::Disconnected,
        PublishErrorKind::MaxPayloadExceeded => PublishFailure::TooLarge,
        _ => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .map_or(PublishFailure::Failed, |api| classify_api(api.error_code().0, api.to_string().as_str())),
    }
}

/// Maps a JetStream API error (code and description) to our failure kinds.
pub(crate) fn classify_api(code: u64, description: &str) -> PublishFailure {
    match code {
        // JSStreamStoreFailedF carries the store's own error text: the stream's discard-new
        // limits, a message over the store's internal maximum, or a failed write.
        10077 if description.contains("maximum bytes exceeded") || description.contains("maximum messages") => {
            PublishFailure::StoreFull(StoreFull::StreamLimit)
        }
        10077 if description.contains("message too large") => PublishFailure::TooLarge,
        10077 => PublishFailure::StoreFull(StoreFull::WriteFailed),
        // JSInsufficientResourcesErr, JSStorageResourcesExceededErr: the server's limit.
        10023 | 10047 => PublishFailure::StoreFull(StoreFull::ServerLimit),
        // JSAccountResourcesExceededErr: a 400 from the server, but the account frees up as
        // events age out or are purged, so it is temporary like the others.
        10002 => PublishFailure::StoreFull(StoreFull::AccountLimit),
        // JSStreamMessageExceedsMaximumErr, JSStreamHeaderExceedsMaximumErr: never storable,
        // so a 4xx (413, 431): a 503 would have the sender retry it for ever.
        10054 => PublishFailure::TooLarge,
        10097 => PublishFailure::HeadersTooLarge,
        _ => PublishFailure::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_refusals_are_told_apart() {
        // The answers measured from nats-server 2.15.1 (see the module docs).
        let stream_full = PublishFailure::StoreFull(StoreFull::StreamLimit);
        assert_eq!(classify_api(10077, "maximum bytes exceeded (code 503, error code 10077)"), stream_full);
        assert_eq!(classify_api(10077, "maximum messages exceeded"), stream_full);
        assert_eq!(classify_api(10077, "message too large"), PublishFailure::TooLarge);
        assert_eq!(
            classify_api(10077, "write …/1.blk: no space left on device"),
            PublishFailure::StoreFull(StoreFull::WriteFailed)
        );
        assert_eq!(classify_api(10023, "insufficient resources"), PublishFailure::StoreFull(StoreFull::ServerLimit));
        assert_eq!(
            classify_api(10002, "resource limits exceeded for account"),
            PublishFailure::StoreFull(StoreFull::AccountLimit)
        );
        assert_eq!(classify_api(10054, "message size exceeds maximum allowed"), PublishFailure::TooLarge);
        assert_eq!(classify_api(10097, "header size exceeds maximum allowed of 64k"), PublishFailure::HeadersTooLarge);
        assert_eq!(classify_api(10059, "stream not found"), PublishFailure::Failed);
        for failure in [
            PublishFailure::Disconnected,
            PublishFailure::Timeout,
            PublishFailure::TooLarge,
            PublishFailure::HeadersTooLarge,
            stream_full,
            PublishFailure::StoreFull(StoreFull::ServerLimit),
            PublishFailure::StoreFull(StoreFull::AccountLimit),
            PublishFailure::StoreFull(StoreFull::WriteFailed),
            PublishFailure::Failed,
        ] {
            assert!(FAILURE_REASONS.contains(&failure.as_str()), "{failure:?}");
        }
    }
}
