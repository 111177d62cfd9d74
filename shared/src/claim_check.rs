//! Bodies too large for one NATS message: the claim check. Ingest stores such a body as an
//! object of the bodies bucket (`{stream}_BODIES`, a JetStream object store) and only then
//! publishes the event's message, which names the object, its size and SHA-256 (envelope
//! version 2, [`crate::envelope::BodyClaim`]) instead of carrying the body. The worker fetches
//! the object when it records the event, and records it only when size and digest match.
//!
//! Objects are named by source and the body's SHA-256 ([`object_name`]): the same body sent
//! again is the same object (put again, it replaces itself), and a different body under the
//! same event id can never replace the object an earlier message names. Nothing deletes an
//! object one by one: the bucket keeps each for `stream.max_age` plus
//! [`crate::config::BODIES_MAX_AGE_MARGIN`], so an object outlives the message that names it
//! (put before it) and goes about when that message leaves the stream. The worker has its own
//! copy in its store from the moment it recorded the event.
//!
//! The bucket is set up at startup as the streams are (created or updated to match the config,
//! left alone when it does): by the worker, and by ingest when its NATS user may (in
//! `deploy/nats/permissions.conf` it may not, and waits for a worker to).

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use crate::config::{BODIES_MAX_AGE_MARGIN, MAX_BODY_LIMIT, MESSAGE_HEADER_ROOM, StreamConfig};
use crate::envelope::BodyClaim;
use crate::nats::NatsSetupError;

/// The object name of `source`'s body with SHA-256 `sha256` (lowercase hex).
pub fn object_name(source: &str, sha256: &str) -> String {
    format!("{source}/{sha256}")
}

/// The body's SHA-256, lowercase hex.
pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The bucket's stream, as `async_nats`'s `create_object_store` would make it, with the
/// stream's replicas and size limit and a lifetime [`BODIES_MAX_AGE_MARGIN`] longer than the
/// stream's.
pub fn bucket_stream_config(config: &StreamConfig) -> stream::Config {
    let bucket = config.bodies_bucket_name();
    stream::Config {
        name: format!("OBJ_{bucket}"),
        description: Some("Inlet: request bodies over ingest.claim_check_threshold_bytes".into()),
        subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        storage: stream::StorageType::File,
        max_age: config.max_age.saturating_add(BODIES_MAX_AGE_MARGIN),
        // Like the intake stream: at its size limit the bucket refuses new bodies (ingest
        // answers 503), never dropping objects that acknowledged events name.
        max_bytes: config.max_bytes.and_then(|bytes| i64::try_from(bytes).ok()).unwrap_or(-1),
        discard: stream::DiscardPolicy::New,
        num_replicas: config.replicas,
        allow_rollup: true,
        allow_direct: true,
        // The server's default, stated so that a bucket set up as configured is recognised.
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Creates the bodies bucket or updates it to match the config (the worker's job at startup).
///
/// # Errors
///
/// As [`crate::nats::ensure_stream`].
pub async fn ensure_bucket(
    js: &jetstream::Context,
    config: &StreamConfig,
    startup_timeout: Duration,
) -> Result<(), NatsSetupError> {
    crate::nats::ensure(js, bucket_stream_config(config), startup_timeout).await
}

/// The largest chunk an object is cut into: a quarter of the default `max_payload`, so a body
/// is a few hundred messages at most.
const MAX_CHUNK_BYTES: usize = 256 * 1024;

/// How long fetching one object may take. A read whose chunks vanish (the object replaced
/// while it was read) would otherwise wait for ever.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `info` is a whole, live copy of the body `claim` names, stored recently enough
/// (within half of [`BODIES_MAX_AGE_MARGIN`]) to outlive a message published now by the margin.
fn is_fresh_copy(info: &object_store::ObjectInfo, claim: &BodyClaim) -> bool {
    let Ok(digest) = hex::decode(&claim.sha256) else { return false };
    let expected = format!("SHA-256={}", base64::engine::general_purpose::URL_SAFE.encode(digest));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stored_at = info.modified.map_or(0, |modified| u64::try_from(modified.unix_timestamp()).unwrap_or(0));
    !info.deleted
        && info.size as u64 == claim.size
        && info.digest.as_deref() == Some(expected.as_str())
        && now.saturating_sub(stored_at) < BODIES_MAX_AGE_MARGIN.as_secs() / 2
}

/// Why a body could not be stored or fetched.
#[derive(Debug, thiserror::Error)]
pub enum ClaimCheckError {
    /// No answer in time.
    #[error("the bodies bucket did not answer in time")]
    Timeout,
    /// The object does not exist (yet, or any more).
    #[error("object {0} is not in the bodies bucket")]
    Missing(String),
    /// The object is not the body the message names.
    #[error("object {object} is {size} bytes with SHA-256 {sha256}, not what the message names")]
    Mismatch {
        /// The object's name.
        object: String,
        /// Its size.
        size: u64,
        /// Its digest (hex).
        sha256: String,
    },
    /// Any other failure of the bucket.
    #[error("bodies bucket: {0}")]
    Failed(String),
}

/// The bodies bucket, opened.
#[derive(Clone)]
pub struct BodyStore {
    bucket: object_store::ObjectStore,
    chunk_bytes: usize,
}

impl BodyStore {
    /// Opens the bucket, waiting until `startup_timeout` for a worker to have created it.
    /// `claim_check_threshold` sets the chunk size: at most that plus [`MESSAGE_HEADER_ROOM`]
    /// fits in a message (ingest checks it against the server at startup), so a chunk of at
    /// most the threshold, or of the header room, fits too.
    ///
    /// # Errors
    ///
    /// [`NatsSetupError::BucketMissing`] when it does not exist in time.
    pub async fn open(
        js: &jetstream::Context,
        config: &StreamConfig,
        claim_check_threshold: usize,
        startup_timeout: Duration,
    ) -> Result<BodyStore, NatsSetupError> {
        let name = config.bodies_bucket_name();
        let deadline = tokio::time::Instant::now() + startup_timeout;
        loop {
            let wait = Duration::from_secs(2).min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if let Ok(Ok(bucket)) = tokio::time::timeout(wait, js.get_object_store(&name)).await {
                let chunk_bytes = claim_check_threshold.clamp(MESSAGE_HEADER_ROOM, MAX_CHUNK_BYTES);
                return Ok(BodyStore { bucket, chunk_bytes });
            }
            if tokio::time::Instant::now() + Duration::from_millis(500) >= deadline {
                return Err(NatsSetupError::BucketMissing { name, timeout: startup_timeout });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stores `body` of `source` (SHA-256 `sha256`, hex) and returns its claim once the bucket
    /// acknowledged every chunk and the object's metadata, within `deadline`.
    ///
    /// # Errors
    ///
    /// [`ClaimCheckError::Timeout`] or [`ClaimCheckError::Failed`]: nothing may be published
    /// that names it.
    pub async fn put(
        &self,
        source: &str,
        body: &Bytes,
        sha256: String,
        deadline: Duration,
    ) -> Result<BodyClaim, ClaimCheckError> {
        let object = object_name(source, &sha256);
        let claim = BodyClaim { object: object.clone(), size: body.len() as u64, sha256 };
        // A duplicate (a provider's retry) finds its body stored already: not written again
        // while that copy is young enough to outlive a message published now.
        let existing = tokio::time::timeout(deadline, self.bucket.info(&object)).await;
        if let Ok(Ok(info)) = existing
            && is_fresh_copy(&info, &claim)
        {
            return Ok(claim);
        }
        let meta = object_store::ObjectMetadata {
            name: object.clone(),
            chunk_size: Some(self.chunk_bytes),
            ..Default::default()
        };
        let mut reader: &[u8] = body;
        tokio::time::timeout(deadline, self.bucket.put(meta, &mut reader))
            .await
            .map_err(|_| ClaimCheckError::Timeout)?
            .map_err(|error| ClaimCheckError::Failed(error.to_string()))?;
        Ok(claim)
    }

    /// The body `claim` names, checked against its size and SHA-256.
    ///
    /// # Errors
    ///
    /// [`ClaimCheckError::Missing`] when the object is not there, [`ClaimCheckError::Mismatch`]
    /// when it is not that body, else a timeout or failure. None of them records anything: the
    /// message is to be tried again later.
    pub async fn fetch(&self, claim: &BodyClaim) -> Result<Bytes, ClaimCheckError> {
        let size = usize::try_from(claim.size).unwrap_or(usize::MAX);
        let mismatch =
            |size: u64, sha256: String| ClaimCheckError::Mismatch { object: claim.object.clone(), size, sha256 };
        // No body is larger than any source may accept: the name cannot make the worker
        // allocate more.
        if size > MAX_BODY_LIMIT {
            return Err(mismatch(claim.size, String::new()));
        }
        let read = async {
            let mut object = self.bucket.get(&claim.object).await.map_err(|error| match error.kind() {
                object_store::GetErrorKind::NotFound => ClaimCheckError::Missing(claim.object.clone()),
                object_store::GetErrorKind::TimedOut => ClaimCheckError::Timeout,
                _ => ClaimCheckError::Failed(error.to_string()),
            })?;
            let stored = object.info().size as u64;
            if stored != claim.size {
                return Err(mismatch(stored, String::new()));
            }
            let mut body = Vec::with_capacity(size);
            // At most one byte past the size: a longer object is refused without reading it all.
            (&mut object)
                .take(claim.size.saturating_add(1))
                .read_to_end(&mut body)
                .await
                .map_err(|error| ClaimCheckError::Failed(error.to_string()))?;
            Ok(body)
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, read).await.map_err(|_| ClaimCheckError::Timeout)??;
        let sha256 = sha256_hex(&body);
        if body.len() as u64 != claim.size || sha256 != claim.sha256 {
            return Err(mismatch(body.len() as u64, sha256));
        }
        Ok(Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_outlives_the_stream_and_shares_its_limits() {
        let stream = StreamConfig { max_bytes: Some(1 << 30), replicas: 3, ..StreamConfig::default() };
        let bucket = bucket_stream_config(&stream);
        assert_eq!(bucket.name, "OBJ_INLET_BODIES");
        assert_eq!(bucket.subjects, ["$O.INLET_BODIES.C.>", "$O.INLET_BODIES.M.>"]);
        assert_eq!(bucket.max_age, stream.max_age + BODIES_MAX_AGE_MARGIN);
        assert_eq!(bucket.max_bytes, 1 << 30);
        assert_eq!(bucket.num_replicas, 3);
        assert_eq!(bucket.discard, stream::DiscardPolicy::New, "never drops an object an event names");
    }

    #[test]
    fn the_same_body_is_the_same_object_and_another_body_another() {
        let one = sha256_hex(b"{\"push\":1}");
        assert_eq!(one.len(), 64);
        assert_eq!(object_name("gh", &one), object_name("gh", &sha256_hex(b"{\"push\":1}")));
        assert_ne!(object_name("gh", &one), object_name("gh", &sha256_hex(b"{\"push\":2}")));
        assert_ne!(object_name("gh", &one), object_name("other", &one));
    }
}
