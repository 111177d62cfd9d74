//! The quarantine: requests ingest answered 401/400 and kept in `{stream}_QUARANTINE`, listed
//! per source with their diagnosis, and "re-verify and admit" (`QuarantineError` at its edge).
//!
//! Admission verifies each kept request again with the sources' **current** secrets (the
//! worker's config: a fixed secret reaches the worker by a restart), with the timestamp
//! tolerance measured from the request's **original receipt time**, as if it had been checked
//! when it arrived, so a request that was stale then is stale now and a request kept for days
//! is not refused for its age. Only those that verify enter the intake stream, exactly as ingest
//! would have published them (same envelope, event id and `Nats-Msg-Id`, so the stream's and
//! the store's deduplication apply; the original receipt time), each then removed from the
//! quarantine, and one audit row says who admitted how many, which. Those that still fail stay,
//! with their diagnosis under the current secrets reported.
//!
//! Nothing here delivers: the intake stream's recording consumer does, as for any event.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::jetstream;
use bytes::Bytes;
use futures::TryStreamExt as _;
use inlet_shared::config::{Config, QuarantineSlot};
use inlet_shared::envelope::Envelope;
use inlet_shared::quarantine::QuarantinedRequest;
use inlet_shared::signature::{Diagnosis, Verifier};

/// The quarantine stream, reached without asking for its info first.
type JsStream = jetstream::stream::Stream<()>;

use crate::metric_names;
use crate::model::AuditAction;
use crate::store::{Store, StoreError};

/// Most requests one admission looks at: both slots of a source at the largest
/// `quarantine.max_per_source` (1,000,000) would be too many for one API call.
pub const MAX_ADMIT: usize = 5_000;
/// Most requests one page lists.
pub const MAX_PAGE: usize = 200;
/// Most event ids an admission's audit row names (its count is always whole).
const AUDITED_IDS: usize = 100;

/// Why a quarantine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// No such source in the config.
    #[error("no source named {0}")]
    UnknownSource(String),
    /// JetStream did not answer as expected.
    #[error("quarantine stream: {0}")]
    Stream(String),
    /// The audit row could not be written (the admitted events are in the intake stream).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One kept request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its sequence in the quarantine stream: its id.
    pub sequence: u64,
    /// Which slot it is in.
    pub slot: QuarantineSlot,
    /// What was kept besides the body.
    pub request: QuarantinedRequest,
}

/// What an admission did.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Verified now and published: (quarantine sequence, event id, whether the intake stream
    /// already had it).
    pub admitted: Vec<(u64, String, bool)>,
    /// Still failing with the current secrets: (quarantine sequence, why now).
    pub refused: Vec<(u64, Diagnosis)>,
    /// Kept without a body or verification headers: cannot be verified again.
    pub not_admissible: Vec<u64>,
}

/// A source's verifier with its config, as the worker's config says now.
struct SourceCheck {
    verifier: Verifier,
    /// The intake subject admitted requests are published to.
    subject: String,
    /// `_INLET.{stream}.quarantine.<source>.`: each slot's subject is this and its name.
    base: String,
}

/// The quarantine stream and the sources' current verifiers.
pub struct Quarantine {
    js: jetstream::Context,
    stream_name: String,
    wildcard: String,
    sources: HashMap<String, SourceCheck>,
    publish_timeout: Duration,
    store: Store,
}

impl Quarantine {
    /// The quarantine of `config`, reached through `js`; `None` when it is off.
    ///
    /// # Errors
    ///
    /// When a source's secrets cannot be used (config validation already refuses that).
    pub fn new(
        config: &Config,
        js: jetstream::Context,
        store: Store,
    ) -> Result<Option<Quarantine>, inlet_shared::signature::KeyError> {
        if !config.quarantine.enabled {
            return Ok(None);
        }
        let mut sources = HashMap::new();
        for source in &config.sources {
            let check = SourceCheck {
                verifier: source.verifier()?,
                subject: config.stream.subject_for(&source.name),
                base: config
                    .stream
                    .quarantine_subject(&source.name, QuarantineSlot::First)
                    .trim_end_matches(QuarantineSlot::First.as_str())
                    .to_owned(),
            };
            sources.insert(source.name.clone(), check);
        }
        Ok(Some(Quarantine {
            js,
            stream_name: config.stream.quarantine_stream_name(),
            wildcard: config.stream.quarantine_wildcard(),
            sources,
            // As ingest waits for its PubAck.
            publish_timeout: config.ingest.publish_timeout,
            store,
        }))
    }

    async fn stream(&self) -> Result<JsStream, QuarantineError> {
        self.js.get_stream_no_info(&self.stream_name).await.map_err(|e| QuarantineError::Stream(e.to_string()))
    }

    fn source(&self, name: &str) -> Result<&SourceCheck, QuarantineError> {
        self.sources.get(name).ok_or_else(|| QuarantineError::UnknownSource(name.to_owned()))
    }

    /// Requests kept now, per source and slot (also set as the gauge
    /// `inlet_worker_quarantined_requests`).
    ///
    /// # Errors
    ///
    /// When the stream does not answer.
    pub async fn counts(&self) -> Result<Vec<(String, QuarantineSlot, u64)>, QuarantineError> {
        let stream = self.stream().await?;
        let found: Vec<(String, usize)> = stream
            .info_with_subjects(&self.wildcard)
            .await
            .map_err(|e| QuarantineError::Stream(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| QuarantineError::Stream(e.to_string()))?;
        let mut counts = Vec::new();
        for (name, check) in &self.sources {
            for slot in QuarantineSlot::ALL {
                let subject = format!("{}{}", check.base, slot.as_str());
                let count = found.iter().find(|(s, _)| *s == subject).map_or(0, |(_, n)| *n as u64);
                metric_names::quarantined(name, slot, count);
                counts.push((name.clone(), slot, count));
            }
        }
        counts.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
        Ok(counts)
    }

    /// Up to `limit` requests of `source` with a sequence above `after`, oldest first, and
    /// whether more follow.
    ///
    /// # Errors
    ///
    /// An unknown source; a stream that does not answer.
    pub async fn list(&self, source: &str, after: u64, limit: usize) -> Result<(Vec<Entry>, bool), QuarantineError> {
        let check = self.source(source)?;
        let stream = self.stream().await?;
        let mut entries = Vec::new();
        let mut next = after + 1;
        let limit = limit.clamp(1, MAX_PAGE);
        let filter = format!("{}*", check.base);
        while let Some((entry, _)) = self.next_entry(&stream, &filter, next, false).await? {
            next = entry.sequence + 1;
            if entries.len() == limit {
                return Ok((entries, true));
            }
            entries.push(entry);
        }
        Ok((entries, false))
    }

    /// The first kept request on `filter` at or after `sequence`, with its body when `body`.
    async fn next_entry(
        &self,
        stream: &JsStream,
        filter: &str,
        sequence: u64,
        body: bool,
    ) -> Result<Option<(Entry, Bytes)>, QuarantineError> {
        let message = match stream.direct_get_next_for_subject(filter, Some(sequence)).await {
            Ok(message) => message,
            Err(error) if error.kind() == jetstream::stream::DirectGetErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(QuarantineError::Stream(error.to_string())),
        };
        let headers = message.headers.clone();
        let slot = message.subject.rsplit('.').next().and_then(QuarantineSlot::parse).unwrap_or(QuarantineSlot::Rest);
        let request = QuarantinedRequest::from_headers(|name| headers.get(name).map(|v| v.as_str()))
            .map_err(|e| QuarantineError::Stream(format!("message {}: {e}", message.sequence)))?;
        let payload = if body { message.payload } else { Bytes::new() };
        Ok(Some((Entry { sequence: message.sequence, slot, request }, payload)))
    }

    /// Verifies `source`'s kept requests again with the current secrets (all of them, or only
    /// `sequences`) and admits those that verify; audited as `actor`.
    ///
    /// # Errors
    ///
    /// An unknown source; a stream that does not answer (what was admitted before stays
    /// admitted and audited).
    pub async fn admit(
        &self,
        source: &str,
        sequences: Option<Vec<u64>>,
        actor: &str,
    ) -> Result<Admission, QuarantineError> {
        let check = self.source(source)?;
        let stream = self.stream().await?;
        let filter = format!("{}*", check.base);
        let mut admission = Admission::default();
        let wanted = sequences.map(|mut list| {
            list.sort_unstable();
            list.dedup();
            list.truncate(MAX_ADMIT);
            list
        });
        let mut next = wanted.as_ref().and_then(|list| list.first().copied()).unwrap_or(1);
        let mut looked = 0;
        let result = async {
            while looked < MAX_ADMIT {
                let Some((entry, body)) = self.next_entry(&stream, &filter, next, true).await? else {
                    break;
                };
                next = entry.sequence + 1;
                if let Some(list) = &wanted
                    && !list.contains(&entry.sequence)
                {
                    // Jump to the next wanted sequence, if any is left.
                    match list.iter().find(|s| **s > entry.sequence) {
                        Some(s) => next = *s,
                        None => break,
                    }
                    continue;
                }
                looked += 1;
                self.admit_one(check, &stream, entry, body, &mut admission).await?;
            }
            Ok::<(), QuarantineError>(())
        }
        .await;
        // Every admission is audited, one that admitted nothing too: who tried, on what.
        let ids: Vec<&str> = admission.admitted.iter().take(AUDITED_IDS).map(|(_, id, _)| id.as_str()).collect();
        let more = admission.admitted.len().saturating_sub(AUDITED_IDS);
        let detail = format!(
            "re-verified with the current secrets: admitted as events [{}]{}; {} still rejected",
            ids.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() },
            admission.refused.len() + admission.not_admissible.len()
        );
        let count = i64::try_from(admission.admitted.len()).unwrap_or(i64::MAX);
        self.store
            .record_source_action(AuditAction::AdmitQuarantined, actor.to_owned(), source.to_owned(), count, detail)
            .await?;
        tracing::info!(source, actor, admitted = admission.admitted.len(), "quarantined requests re-verified");
        metric_names::admitted(
            source,
            admission.admitted.len(),
            admission.refused.len() + admission.not_admissible.len(),
        );
        result?;
        Ok(admission)
    }

    async fn admit_one(
        &self,
        check: &SourceCheck,
        stream: &JsStream,
        entry: Entry,
        body: Bytes,
        admission: &mut Admission,
    ) -> Result<(), QuarantineError> {
        let request = &entry.request;
        let Some(headers) = request.headers_for_verification().filter(|_| request.body_kept) else {
            admission.not_admissible.push(entry.sequence);
            return Ok(());
        };
        let received_at = UNIX_EPOCH + Duration::from_millis(request.received_at_ms);
        let verified = match check.verifier.verify(&headers, &body, received_at) {
            Ok(verified) => verified,
            Err(_) => {
                admission.refused.push((entry.sequence, check.verifier.diagnose(&headers, &body, received_at)));
                return Ok(());
            }
        };
        let identity = verified.identify(&headers, &body);
        let envelope = Envelope {
            source: request.source.clone(),
            event_id: identity.id.clone(),
            id_origin: identity.origin,
            provider_event_id: identity.provider_id.clone(),
            event_type: identity.event_type.clone(),
            received_at_ms: request.received_at_ms,
            scheme: check.verifier.kind(),
            secret_index: verified.secret_index(),
            content_type: request.content_type.clone(),
            original_headers: request.original_headers.clone(),
            traceparent: None,
            // Quarantined bodies are at most `quarantine.max_body_bytes` and travel in the message.
            body: None,
        };
        let mut nats_headers = async_nats::HeaderMap::new();
        for (name, value) in envelope.to_headers() {
            nats_headers.insert(name, value.as_ref());
        }
        let publish = async {
            let ack = self.js.publish_with_headers(check.subject.clone(), nats_headers, body).await?;
            ack.await
        };
        let ack = tokio::time::timeout(self.publish_timeout, publish)
            .await
            .map_err(|_| QuarantineError::Stream("no PubAck from the intake stream".to_owned()))?
            .map_err(|e| QuarantineError::Stream(format!("publish to the intake stream: {e}")))?;
        // Published (or already there): the quarantine's copy goes. Were this delete lost, a
        // later admission would publish it again and be deduplicated.
        stream.delete_message(entry.sequence).await.map_err(|e| QuarantineError::Stream(e.to_string()))?;
        admission.admitted.push((entry.sequence, identity.id, ack.duplicate));
        Ok(())
    }
}
