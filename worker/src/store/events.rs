//! Recording events: one transaction per batch, each event with one delivery per destination its
//! routes select (due now, claimed for the first attempt by the recording process), duplicates
//! and conflicts counted on the stored event; and pruning past `worker.retention`.

use std::collections::HashSet;

use bytes::Bytes;
use inlet_shared::signature::{IdOrigin, SchemeKind};
use rusqlite::{OptionalExtension as _, params};
use tokio::sync::oneshot;

use super::StoreError;
use super::deliveries::{Claimed, DeliveryToSend, Lease};
use super::search::IndexProgress;
use super::sqlite::Sqlite;
use super::writer::Command;
use crate::model::{
    ConfigVersion, DeliveryId, DeliveryOrdering, DeliveryStatus, EventRowId, LeaseToken, RouteStatus, UnixMs,
};

/// One event to record, as read from the stream.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Source name.
    pub source: String,
    /// Provider event id.
    pub event_id: String,
    /// Where the event id came from.
    pub id_origin: IdOrigin,
    /// Event type, if any.
    pub event_type: Option<String>,
    /// Which scheme verified it.
    pub scheme: SchemeKind,
    /// Which secret matched.
    pub secret_index: i64,
    /// Ingest's receipt time.
    pub received_at: UnixMs,
    /// Stream sequence of the message.
    pub stream_sequence: u64,
    /// Original `Content-Type`.
    pub content_type: Option<String>,
    /// JSON array of the kept request headers.
    pub headers_json: String,
    /// The raw body.
    pub body: Bytes,
    /// Destinations the routes select (empty: unrouted).
    pub destinations: Vec<String>,
    /// The ordered ones among `destinations`, with their ordering key (see `routes`).
    pub ordering: Vec<(String, DeliveryOrdering)>,
    /// The record span's W3C `traceparent` (traces on): the parent of every attempt.
    pub trace_context: Option<String>,
    /// The version of the routing config that routed it (`None` only in tests of rows an older
    /// worker wrote).
    pub config_version: Option<ConfigVersion>,
}

impl NewEvent {
    /// The ordering of this event's delivery to `destination` (`None`: unordered).
    pub(super) fn ordering_of(&self, destination: &str) -> Option<&DeliveryOrdering> {
        self.ordering.iter().find(|(name, _)| name == destination).map(|(_, ordering)| ordering)
    }
}

/// Which of a batch's new deliveries the recording worker claims for their first attempt.
#[derive(Debug, Clone, Default)]
pub struct FirstClaims {
    /// Until when the claims last.
    pub until: UnixMs,
    /// Destinations another worker holds (several workers on one store): their new deliveries
    /// are recorded due and unclaimed, for the holder to claim, instead of claimed here and
    /// released at once (a second write per delivery). Empty with one worker.
    pub held_elsewhere: HashSet<String>,
    /// Whether the claimed deliveries come back with their event's stored headers (a route's
    /// filter needs them to tell which route's transform applies); without, they are left out
    /// rather than copied (they may be 32 KiB).
    pub with_headers: bool,
}

impl FirstClaims {
    /// Claims every new delivery until `until`.
    #[must_use]
    pub fn all(until: UnixMs) -> Self {
        Self { until, held_elsewhere: HashSet::new(), with_headers: false }
    }

    /// Whether a new delivery to `destination` is claimed by the recording worker.
    fn claims(&self, destination: &str) -> bool {
        !self.held_elsewhere.contains(destination)
    }

    /// The lease a new delivery to `destination` is recorded with: none (due, free to claim)
    /// when another worker holds the destination.
    pub(super) fn lease_until(&self, destination: &str) -> Option<UnixMs> {
        self.claims(destination).then_some(self.until)
    }
}

/// What recording one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// First time seen: recorded with these new deliveries (both empty when unrouted).
    New {
        /// The new deliveries claimed for their first attempt by this process.
        deliveries: Vec<Claimed>,
        /// Destinations of new deliveries left unclaimed for the worker that holds them.
        unclaimed: Vec<String>,
    },
    /// Seen before (a provider redelivery, or our own redelivery after a crash). Its
    /// deliveries are already scheduled in the store.
    Duplicate {
        /// The stored body differs: recorded as a conflict, not merged.
        conflict: bool,
    },
}

/// What recording one event did, as the writer sees it (before the deliveries' bodies are
/// attached).
pub(super) enum RecordedRow {
    /// The new deliveries: id, destination, and whether the recording worker claimed it (false
    /// for a destination held elsewhere, and for an ordered delivery whose key has an earlier
    /// one unfinished: its scheduler claims it once the key's turn comes).
    New(Vec<(DeliveryId, String, bool)>),
    Duplicate {
        conflict: bool,
    },
}

/// What recording `event` did, as callers see it: a new event's deliveries that `claims` claims
/// come back claimed for their first attempt (token 1), with what is needed to send them (no
/// read back); the others by destination only. `event` may be `None` for an unrouted one (it
/// has no deliveries). Both backends answer through this, so they answer alike.
pub(super) fn recorded(row: RecordedRow, event: Option<&NewEvent>, claims: &FirstClaims) -> Recorded {
    match (row, event) {
        (RecordedRow::New(ids), Some(event)) => {
            let (mine, unclaimed): (Vec<_>, Vec<_>) = ids.into_iter().partition(|(_, _, claimed)| *claimed);
            Recorded::New {
                deliveries: mine
                    .into_iter()
                    .map(|(delivery_id, destination, _)| {
                        let ordered = event.ordering_of(&destination).is_some();
                        Claimed {
                            delivery: DeliveryToSend {
                                delivery_id,
                                destination,
                                attempts: 0,
                                attempt_base: 0,
                                source: event.source.clone(),
                                event_id: event.event_id.clone(),
                                event_type: event.event_type.clone(),
                                content_type: event.content_type.clone(),
                                received_at: event.received_at,
                                body: event.body.clone(),
                                headers_json: if claims.with_headers {
                                    event.headers_json.clone()
                                } else {
                                    String::new()
                                },
                                trace_context: event.trace_context.clone(),
                                ordered,
                                config_version: None,
                            },
                            lease: Lease { token: LeaseToken::FIRST, until: claims.until },
                        }
                    })
                    .collect(),
                unclaimed: unclaimed.into_iter().map(|(_, destination, _)| destination).collect(),
            }
        }
        (RecordedRow::New(_), None) => Recorded::New { deliveries: Vec::new(), unclaimed: Vec::new() },
        (RecordedRow::Duplicate { conflict }, _) => Recorded::Duplicate { conflict },
    }
}

pub(super) fn body_sha256(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body))
}

pub(super) fn record_events(
    connection: &rusqlite::Connection,
    events: &[NewEvent],
    now: UnixMs,
    claims: &FirstClaims,
) -> Result<Vec<RecordedRow>, rusqlite::Error> {
    // Without a conflict target: a taken row id is not an error either (see `event_ids_offset`).
    let mut insert_event = connection.prepare_cached(
        "INSERT INTO events (id, source, event_id, id_origin, event_type, scheme, secret_index, received_at_ms,
                             recorded_at_ms, stream_sequence, content_type, headers_json, body, body_sha256, route_status,
                             trace_context, config_version)
         VALUES (?16, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?17)
         ON CONFLICT DO NOTHING",
    )?;
    // Due now and, unless another worker holds the destination, already claimed by this
    // process for the first attempt (token 1).
    let mut insert_delivery = connection.prepare_cached(
        "INSERT INTO deliveries (id, event_rowid, destination, status, created_at_ms, updated_at_ms, next_attempt_at_ms,
                                 lease_token, lease_until_ms, ordering_key, ordering_position, ordering_blocks)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6, ?7, ?8, ?10, ?9) ON CONFLICT DO NOTHING",
    )?;
    // An ordered delivery is claimed now only when its key has nothing before it: no delivery of
    // the key pending (all are earlier: this event is the newest) nor dead-lettered and blocking.
    let mut key_busy = connection.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'pending' AND destination = ?1 AND ordering_key = ?2)
             OR EXISTS (SELECT 1 FROM deliveries WHERE status = 'dead_lettered' AND ordering_blocks = 1
                          AND destination = ?1 AND ordering_key = ?2)",
    )?;
    let mut existing =
        connection.prepare_cached("SELECT id, body_sha256 FROM events WHERE source = ?1 AND event_id = ?2")?;
    let mut bump = connection
        .prepare_cached("UPDATE events SET duplicates = duplicates + ?2, conflicts = conflicts + ?3 WHERE id = ?1")?;

    let mut offset = event_ids_offset(connection)?;
    let index_progress = IndexProgress::read(connection)?;
    let mut results = Vec::with_capacity(events.len());
    for event in events {
        let sha = body_sha256(&event.body);
        let route_status = if event.destinations.is_empty() { RouteStatus::Unrouted } else { RouteStatus::Routed };
        let sequence = i64::try_from(event.stream_sequence).unwrap_or(i64::MAX);
        let mut insert = |offset: i64| {
            insert_event.execute(params![
                event.source,
                event.event_id,
                event.id_origin.as_str(),
                event.event_type,
                event.scheme.as_str(),
                event.secret_index,
                event.received_at,
                now,
                sequence,
                event.content_type,
                event.headers_json,
                event.body.as_ref(),
                sha,
                route_status,
                event.trace_context,
                sequence.saturating_add(offset),
                event.config_version,
            ])
        };
        let mut inserted = insert(offset)?;
        let duplicate_of = if inserted == 1 {
            None
        } else {
            let stored = existing
                .query_row(params![event.source, event.event_id], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .optional()?;
            if stored.is_none() {
                // Not a duplicate: the row id was taken, by the same stream sequence recorded
                // for another event (only when messages are not from one stream). Starting over
                // above every id given so far keeps ids unique.
                offset = restart_event_ids(connection, None)?;
                inserted = insert(offset)?;
            }
            stored
        };
        if inserted == 1 {
            let rowid = EventRowId(connection.last_insert_rowid());
            index_progress.index_if_passed(connection, rowid, &event.body)?;
            let mut ids = Vec::with_capacity(event.destinations.len());
            for destination in &event.destinations {
                let id = DeliveryId::of(rowid, destination);
                let ordering = event.ordering_of(destination);
                let mut lease_until = claims.lease_until(destination);
                if let Some(ordering) = ordering
                    && lease_until.is_some()
                    && key_busy.query_row(params![destination, ordering.key.as_str()], |row| row.get::<_, bool>(0))?
                {
                    lease_until = None;
                }
                insert_delivery.execute(params![
                    id,
                    rowid,
                    destination,
                    DeliveryStatus::Pending,
                    now,
                    LeaseToken::FIRST,
                    lease_until,
                    ordering.map(|o| o.key.as_str()),
                    ordering.is_some_and(|o| o.blocks_when_dead),
                    ordering.map(|_| sequence),
                ])?;
                ids.push((id, destination.clone(), lease_until.is_some()));
            }
            results.push(RecordedRow::New(ids));
        } else {
            let (rowid, stored_sha) = duplicate_of.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            let conflict = stored_sha != sha;
            bump.execute(params![rowid, i64::from(!conflict), i64::from(conflict)])?;
            results.push(RecordedRow::Duplicate { conflict });
        }
    }
    Ok(results)
}

/// The offset of new event row ids (`id = stream sequence + offset`); one is fixed now, above
/// every id given so far, when none is yet (a store no worker of this version has started on).
fn event_ids_offset(connection: &rusqlite::Connection) -> Result<i64, rusqlite::Error> {
    let offset: Option<i64> =
        connection.prepare_cached("SELECT event_ids_offset FROM store_identity")?.query_row([], |row| row.get(0))?;
    match offset {
        Some(offset) => Ok(offset),
        None => restart_event_ids(connection, None),
    }
}

/// Starts event row ids over above every id given so far: the offset becomes the highest row id
/// (pruning always keeps the newest event, so it is the highest ever given), and every stream
/// sequence is at least 1. With `stream_created_ms`, ids follow that stream from now on.
/// Returns the new offset.
fn restart_event_ids(
    connection: &rusqlite::Connection,
    stream_created_ms: Option<i64>,
) -> Result<i64, rusqlite::Error> {
    connection.query_row(
        "UPDATE store_identity
            SET event_ids_offset = (SELECT coalesce(max(id), 0) FROM events),
                event_ids_stream_created_ms = coalesce(?1, event_ids_stream_created_ms)
          RETURNING event_ids_offset",
        [stream_created_ms],
        |row| row.get(0),
    )
}

/// How [`follow_stream`] found the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFollowed {
    /// It already followed this stream: row ids go on as they were.
    Same,
    /// It followed no stream yet (a new store, or one from before event ids followed the
    /// stream): ids start above every id given so far.
    First,
    /// It followed another stream (deleted and created again since): ids start above every id
    /// given so far.
    Another,
}

/// Makes new event row ids follow the stream created at `stream_created_ms`.
pub(super) fn follow_stream(
    connection: &rusqlite::Connection,
    stream_created_ms: i64,
) -> Result<StreamFollowed, rusqlite::Error> {
    let (followed, offset): (Option<i64>, Option<i64>) = connection.query_row(
        "SELECT event_ids_stream_created_ms, event_ids_offset FROM store_identity",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let outcome = match followed {
        Some(created) if created == stream_created_ms && offset.is_some() => return Ok(StreamFollowed::Same),
        Some(_) => StreamFollowed::Another,
        None => StreamFollowed::First,
    };
    let offset = restart_event_ids(connection, Some(stream_created_ms))?;
    tracing::info!(offset, ?outcome, "event row ids follow the intake stream: stream sequence + offset");
    Ok(outcome)
}

pub(super) fn prune(connection: &rusqlite::Connection, cutoff: UnixMs) -> Result<usize, rusqlite::Error> {
    // The event with the highest row id always stays: when row ids start over (a new stream, a
    // sequence seen twice) they start above it, so deleting it could hand its row id out again,
    // and with it its delivery ids, which destinations keep as `Idempotency-Key`: a new event
    // would look like a repeat of an old one.
    connection.execute(
        "DELETE FROM events WHERE received_at_ms < ?1 AND id < (SELECT max(id) FROM events)
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_rowid = events.id
                           AND d.status NOT IN ('delivered', 'dismissed'))",
        [cutoff],
    )
}

impl Sqlite {
    pub async fn record(&self, events: Vec<NewEvent>, claims: FirstClaims) -> Result<Vec<Recorded>, StoreError> {
        // What a first attempt needs of each routed event; the events themselves move to the
        // writer.
        let sendable: Vec<Option<NewEvent>> = events
            .iter()
            .map(|event| {
                (!event.destinations.is_empty()).then(|| NewEvent {
                    source: event.source.clone(),
                    event_id: event.event_id.clone(),
                    event_type: event.event_type.clone(),
                    content_type: event.content_type.clone(),
                    body: event.body.clone(),
                    // Needed only to choose a transform: else left out rather than copied (the
                    // headers may be 32 KiB).
                    headers_json: if claims.with_headers { event.headers_json.clone() } else { String::new() },
                    destinations: Vec::new(),
                    ordering: event.ordering.clone(),
                    trace_context: event.trace_context.clone(),
                    config_version: None,
                    ..*event
                })
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let claims = std::sync::Arc::new(claims);
        let command = Command::Record { events, claims: std::sync::Arc::clone(&claims), reply };
        self.writer.send(command).await.map_err(|_| StoreError::WriterGone)?;
        let rows = answer.await.map_err(|_| StoreError::WriterGone)??;
        Ok(rows.into_iter().zip(sendable).map(|(row, event)| recorded(row, event.as_ref(), &claims)).collect())
    }

    pub async fn prune(&self, cutoff: UnixMs) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(Command::Prune { cutoff, reply }).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}
