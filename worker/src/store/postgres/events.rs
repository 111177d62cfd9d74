//! Recording events and pruning them on PostgreSQL (see `store/events.rs` for the contract).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::deliveries::ORDERING_LOCK;
use super::{PgError, Postgres};
use crate::model::{ConfigVersion, DeliveryId, DeliveryOrdering, DeliveryStatus, EventRowId, RouteStatus, UnixMs};
use crate::store::events::{RecordedRow, body_sha256, recorded};
use crate::store::{FirstClaims, NewEvent, Recorded, StoreError};

/// Events pruned per transaction: a long backlog is pruned in many short transactions, so one
/// prune never holds locks, or holds back vacuum, for the whole of it.
const PRUNE_BATCH: usize = 5_000;

type Transaction<'a> = deadpool_postgres::Transaction<'a>;

impl Postgres {
    pub async fn record(&self, events: Vec<NewEvent>, claims: FirstClaims) -> Result<Vec<Recorded>, StoreError> {
        let rows = self.write(async |t| record_events(t, &events, UnixMs::now(), &claims).await).await?;
        Ok(rows.into_iter().zip(&events).map(|(row, event)| recorded(row, Some(event), &claims)).collect())
    }

    pub async fn prune(&self, cutoff: UnixMs) -> Result<usize, StoreError> {
        Ok(self.prune_in_batches(cutoff, PRUNE_BATCH).await?)
    }

    /// [`Postgres::prune`], `batch` events per transaction. Unlike SQLite, the newest event is
    /// pruned too: an identity column never hands a value out twice (SQLite's rowid is
    /// max(rowid) + 1), so a delivery id cannot come back whatever is deleted.
    pub(in crate::store) async fn prune_in_batches(&self, cutoff: UnixMs, batch: usize) -> Result<usize, PgError> {
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let mut after = i64::MIN;
        let mut pruned = 0;
        loop {
            let (candidates, deleted) = self.write(async |t| prune_batch(t, cutoff, after, limit).await).await?;
            pruned += deleted;
            match candidates.last() {
                // A full batch: more may follow, after the last one looked at (those kept because
                // their work is not done are not looked at again).
                Some(&last) if candidates.len() >= batch => after = last,
                _ => return Ok(pruned),
            }
        }
    }
}

/// Records `events` in the caller's transaction; one result per event, in order.
///
/// Several workers may record the same events at once (a redelivery): `ON CONFLICT DO NOTHING`
/// makes the second wait for the first to commit, then skip, so each event is recorded once and
/// the other worker sees a duplicate. Two batches that insert overlapping keys in different
/// orders would each wait for the other's key (a deadlock), so every batch inserts its events
/// in one order, by (routed first, source, event id), and their deliveries by destination: the
/// keys, and the counter rows the triggers lock (`event_counts`, `delivery_counts`), are taken
/// in the same order by every batch. Results keep the caller's order; row ids (and so delivery
/// ids) follow the insert order, where SQLite's follow the caller's.
async fn record_events(
    t: &Transaction<'_>,
    events: &[NewEvent],
    now: UnixMs,
    claims: &FirstClaims,
) -> Result<Vec<RecordedRow>, PgError> {
    let shas: Vec<String> = events.iter().map(|event| body_sha256(&event.body)).collect();
    // The first of a key in the batch is inserted; a later one is its duplicate (as on SQLite,
    // which records them one after the other).
    let mut first_of_key: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        first_of_key.entry((event.source.as_str(), event.event_id.as_str())).or_insert(index);
    }
    let mut insert_order: Vec<usize> = first_of_key.values().copied().collect();
    insert_order.sort_by(|&a, &b| {
        let key = |i: usize| (events[i].destinations.is_empty(), &events[i].source, &events[i].event_id);
        key(a).cmp(&key(b))
    });
    // The destinations this batch records ordered deliveries for: their ordering locks, shared,
    // before anything is inserted (see `lock_ordered_destinations`).
    let ordered: BTreeSet<&str> =
        events.iter().flat_map(|event| event.ordering.iter().map(|(destination, _)| destination.as_str())).collect();
    lock_ordered_destinations(t, &ordered).await?;
    let rowids = insert_events(t, events, &shas, &insert_order, now).await?;

    // Ordered deliveries are never claimed here: two workers recording one key at once could
    // each find the other's earlier delivery not committed yet. The destination's holder claims
    // them, under its ordering lock.
    let mut new_deliveries: HashMap<usize, Vec<(DeliveryId, String, bool)>> = HashMap::with_capacity(rowids.len());
    for (&index, &rowid) in &rowids {
        let event = &events[index];
        let ids = event
            .destinations
            .iter()
            .map(|d| {
                let claimed = claims.lease_until(d).is_some() && event.ordering_of(d).is_none();
                (DeliveryId::of(rowid, d), d.clone(), claimed)
            })
            .collect();
        new_deliveries.insert(index, ids);
    }
    let duplicates: Vec<usize> = (0..events.len()).filter(|index| !rowids.contains_key(index)).collect();
    // Each new event's searchable text (`store/search.rs`), in row id order.
    let mut searchable: Vec<(EventRowId, &[u8])> =
        rowids.iter().map(|(&index, &rowid)| (rowid, events[index].body.as_ref())).collect();
    searchable.sort_unstable_by_key(|(rowid, _)| rowid.0);
    // Independent of each other: sent together (one connection pipelines them).
    let (stored, (), ()) = futures::try_join!(
        bump_duplicates(t, events, &shas, &duplicates),
        insert_deliveries(t, events, &rowids, &new_deliveries, now, claims.until),
        super::search::index_events(t, &searchable),
    )?;

    Ok((0..events.len())
        .map(|index| match new_deliveries.remove(&index) {
            Some(ids) => RecordedRow::New(ids),
            None => {
                let event = &events[index];
                // Missing only when a prune deleted the stored event between our insert, which
                // saw it, and this read: an old, fully delivered event seen again.
                let conflict = stored
                    .get(&(event.source.clone(), event.event_id.clone()))
                    .is_some_and(|stored_sha| *stored_sha != shas[index]);
                RecordedRow::Duplicate { conflict }
            }
        })
        .collect())
}

/// Inserts the events at `order` (in that order); returns the row id of each one inserted (the
/// others were stored already), by index in `events`.
async fn insert_events(
    t: &Transaction<'_>,
    events: &[NewEvent],
    shas: &[String],
    order: &[usize],
    now: UnixMs,
) -> Result<HashMap<usize, EventRowId>, PgError> {
    let statement = t
        .prepare_cached(
            "INSERT INTO events (source, event_id, id_origin, event_type, scheme, secret_index, received_at_ms,
                                 recorded_at_ms, stream_sequence, content_type, headers_json, body, body_sha256,
                                 route_status, trace_context, config_version)
             SELECT source, event_id, id_origin, event_type, scheme, secret_index, received_at_ms, $14::bigint,
                    stream_sequence, content_type, headers_json, body, body_sha256, route_status, trace_context,
                    config_version
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
                         $8::bigint[], $9::text[], $10::text[], $11::bytea[], $12::text[], $13::text[], $15::text[],
                         $16::text[])
                  WITH ORDINALITY AS e (source, event_id, id_origin, event_type, scheme, secret_index, received_at_ms,
                                        stream_sequence, content_type, headers_json, body, body_sha256, route_status,
                                        trace_context, config_version, position)
             ORDER BY position
             ON CONFLICT (source, event_id) DO NOTHING
             RETURNING id, source, event_id",
        )
        .await?;
    let column = |f: &dyn Fn(&NewEvent) -> &str| order.iter().map(|&i| f(&events[i])).collect::<Vec<&str>>();
    let optional = |f: &dyn Fn(&NewEvent) -> Option<&str>| order.iter().map(|&i| f(&events[i])).collect::<Vec<_>>();
    let sources = column(&|e| &e.source);
    let event_ids = column(&|e| &e.event_id);
    let id_origins = column(&|e| e.id_origin.as_str());
    let event_types = optional(&|e| e.event_type.as_deref());
    let schemes = column(&|e| e.scheme.as_str());
    let secret_indexes: Vec<i64> = order.iter().map(|&i| events[i].secret_index).collect();
    let received: Vec<UnixMs> = order.iter().map(|&i| events[i].received_at).collect();
    let sequences: Vec<i64> =
        order.iter().map(|&i| i64::try_from(events[i].stream_sequence).unwrap_or(i64::MAX)).collect();
    let content_types = optional(&|e| e.content_type.as_deref());
    let trace_contexts = optional(&|e| e.trace_context.as_deref());
    let config_versions = optional(&|e| e.config_version.as_ref().map(ConfigVersion::as_str));
    let headers = column(&|e| &e.headers_json);
    let bodies: Vec<&[u8]> = order.iter().map(|&i| events[i].body.as_ref()).collect();
    let event_shas: Vec<&str> = order.iter().map(|&i| shas[i].as_str()).collect();
    let route_statuses: Vec<RouteStatus> = order
        .iter()
        .map(|&i| if events[i].destinations.is_empty() { RouteStatus::Unrouted } else { RouteStatus::Routed })
        .collect();
    let rows = t
        .query(
            &statement,
            &[
                &sources,
                &event_ids,
                &id_origins,
                &event_types,
                &schemes,
                &secret_indexes,
                &received,
                &sequences,
                &content_types,
                &headers,
                &bodies,
                &event_shas,
                &route_statuses,
                &now,
                &trace_contexts,
                &config_versions,
            ],
        )
        .await?;
    let index_of: HashMap<(&str, &str), usize> =
        order.iter().map(|&i| ((events[i].source.as_str(), events[i].event_id.as_str()), i)).collect();
    let mut inserted = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (source, event_id): (&str, &str) = (row.try_get(1)?, row.try_get(2)?);
        if let Some(&index) = index_of.get(&(source, event_id)) {
            inserted.insert(index, row.try_get(0)?);
        }
    }
    Ok(inserted)
}

/// Inserts the new events' deliveries: due now and, when `new_deliveries` says so, claimed by
/// this worker for the first attempt (token 1); ordered ones with their key, and their event's
/// stream sequence as their place in the key's order.
/// By destination, so the `delivery_counts` rows are locked in the same order by every batch.
async fn insert_deliveries(
    t: &Transaction<'_>,
    events: &[NewEvent],
    rowids: &HashMap<usize, EventRowId>,
    new_deliveries: &HashMap<usize, Vec<(DeliveryId, String, bool)>>,
    now: UnixMs,
    claimed_until: UnixMs,
) -> Result<(), PgError> {
    let mut rows: Vec<(&str, &DeliveryId, EventRowId, usize, bool)> = new_deliveries
        .iter()
        .flat_map(|(&index, ids)| {
            ids.iter()
                .map(move |(id, destination, claimed)| (destination.as_str(), id, rowids[&index], index, *claimed))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_unstable();
    let statement = t
        .prepare_cached(
            "INSERT INTO deliveries (id, event_rowid, destination, status, created_at_ms, updated_at_ms,
                                     next_attempt_at_ms, lease_token, lease_until_ms, ordering_key, ordering_position,
                                     ordering_blocks)
             SELECT id, event_rowid, destination, $4::text, $5::bigint, $5, $5, $6::bigint, lease_until_ms,
                    ordering_key, ordering_position, ordering_blocks
             FROM unnest($1::text[], $2::bigint[], $3::text[], $7::bigint[], $8::text[], $9::bigint[], $10::boolean[])
                  WITH ORDINALITY AS d (id, event_rowid, destination, lease_until_ms, ordering_key, ordering_position,
                                        ordering_blocks, position)
             ORDER BY position
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let ids: Vec<&DeliveryId> = rows.iter().map(|row| row.1).collect();
    let event_rowids: Vec<EventRowId> = rows.iter().map(|row| row.2).collect();
    let destinations: Vec<&str> = rows.iter().map(|row| row.0).collect();
    let leases: Vec<Option<UnixMs>> = rows.iter().map(|row| row.4.then_some(claimed_until)).collect();
    let orderings: Vec<Option<&DeliveryOrdering>> =
        rows.iter().map(|&(destination, _, _, index, _)| events[index].ordering_of(destination)).collect();
    let keys: Vec<Option<&str>> = orderings.iter().map(|o| o.map(|o| o.key.as_str())).collect();
    let blocks: Vec<bool> = orderings.iter().map(|o| o.is_some_and(|o| o.blocks_when_dead)).collect();
    let ordering_positions: Vec<Option<i64>> = rows
        .iter()
        .zip(&orderings)
        .map(|(&(_, _, _, index, _), ordering)| {
            ordering.map(|_| i64::try_from(events[index].stream_sequence).unwrap_or(i64::MAX))
        })
        .collect();
    let first = crate::model::LeaseToken::FIRST;
    t.execute(
        &statement,
        &[
            &ids,
            &event_rowids,
            &destinations,
            &DeliveryStatus::Pending,
            &now,
            &first,
            &leases,
            &keys,
            &ordering_positions,
            &blocks,
        ],
    )
    .await?;
    Ok(())
}

/// Takes the ordering lock of each of `destinations`, shared, until the transaction ends, in one
/// order (by name). A claim of the destination takes it exclusively, in its own statement before
/// it looks for due deliveries, so it never runs while a recording of ordered deliveries for the
/// destination is under way: a claim does not take a key's later delivery while an earlier one,
/// already being recorded by another worker, is about to commit. Recordings do not wait for each
/// other.
async fn lock_ordered_destinations(t: &Transaction<'_>, destinations: &BTreeSet<&str>) -> Result<(), PgError> {
    if destinations.is_empty() {
        return Ok(());
    }
    let statement = t
        .prepare_cached(&format!(
            "SELECT count(pg_advisory_xact_lock_shared({ORDERING_LOCK}, hashtext(d)))
             FROM (SELECT d FROM unnest($1::text[]) AS d ORDER BY d) AS sorted"
        ))
        .await?;
    let names: Vec<&str> = destinations.iter().copied().collect();
    t.query_one(&statement, &[&names]).await?;
    Ok(())
}

/// Counts the events at `duplicates` on their stored twins (a duplicate, or a conflict when the
/// body differs) and returns the stored bodies' hashes by (source, event id). The twins are
/// locked in id order first, so two batches bumping the same events never wait for each other
/// in a cycle.
async fn bump_duplicates(
    t: &Transaction<'_>,
    events: &[NewEvent],
    shas: &[String],
    duplicates: &[usize],
) -> Result<HashMap<(String, String), String>, PgError> {
    if duplicates.is_empty() {
        return Ok(HashMap::new());
    }
    let lock = t
        .prepare_cached(
            "SELECT id, source, event_id, body_sha256 FROM events
             WHERE (source, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY id FOR UPDATE",
        )
        .await?;
    let sources: Vec<&str> = duplicates.iter().map(|&i| events[i].source.as_str()).collect();
    let event_ids: Vec<&str> = duplicates.iter().map(|&i| events[i].event_id.as_str()).collect();
    let mut stored: HashMap<(String, String), (i64, String)> = HashMap::with_capacity(duplicates.len());
    for row in t.query(&lock, &[&sources, &event_ids]).await? {
        stored.insert((row.try_get(1)?, row.try_get(2)?), (row.try_get(0)?, row.try_get(3)?));
    }
    // Per stored event (one may be seen several times in a batch): (duplicates, conflicts).
    let mut bumps: HashMap<i64, (i64, i64)> = HashMap::with_capacity(stored.len());
    for &index in duplicates {
        let key = (events[index].source.clone(), events[index].event_id.clone());
        if let Some((id, stored_sha)) = stored.get(&key) {
            let bump = bumps.entry(*id).or_default();
            if *stored_sha == shas[index] {
                bump.0 += 1;
            } else {
                bump.1 += 1;
            }
        }
    }
    let bump = t
        .prepare_cached(
            "UPDATE events SET duplicates = duplicates + seen.more_duplicates, conflicts = conflicts + seen.more_conflicts
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS seen (id, more_duplicates, more_conflicts)
             WHERE events.id = seen.id",
        )
        .await?;
    let ids: Vec<i64> = bumps.keys().copied().collect();
    let more_duplicates: Vec<i64> = ids.iter().map(|id| bumps[id].0).collect();
    let more_conflicts: Vec<i64> = ids.iter().map(|id| bumps[id].1).collect();
    t.execute(&bump, &[&ids, &more_duplicates, &more_conflicts]).await?;
    Ok(stored.into_iter().map(|(key, (_, sha))| (key, sha)).collect())
}

/// One prune transaction: up to `limit` events after `after` received before `cutoff` with no
/// delivery left to do (unrouted, or all delivered or dismissed), oldest first; returns them (the
/// candidates) and how many were deleted.
///
/// A replay can move a delivered delivery back to pending at any moment (on SQLite the single
/// writer orders it before or after the prune). So the candidates' deliveries are locked and
/// their status read again under the lock: an event whose delivery was replayed meanwhile is
/// kept, and a replay that comes later finds it locked until this commits. Events another
/// transaction holds (another worker's prune, a duplicate being counted) are skipped.
async fn prune_batch(
    t: &Transaction<'_>,
    cutoff: UnixMs,
    after: i64,
    limit: i64,
) -> Result<(Vec<i64>, usize), PgError> {
    let select = t
        .prepare_cached(
            "SELECT id FROM events e
             WHERE id > $2 AND received_at_ms < $1
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_rowid = e.id
                               AND d.status NOT IN ('delivered', 'dismissed'))
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let candidates: Vec<i64> =
        t.query(&select, &[&cutoff, &after, &limit]).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    if candidates.is_empty() {
        return Ok((candidates, 0));
    }
    let lock = t
        .prepare_cached("SELECT event_rowid, status FROM deliveries WHERE event_rowid = ANY($1) ORDER BY id FOR UPDATE")
        .await?;
    let mut busy = HashSet::new();
    for row in t.query(&lock, &[&candidates]).await? {
        if !row.try_get::<_, DeliveryStatus>(1)?.is_resolved() {
            busy.insert(row.try_get::<_, i64>(0)?);
        }
    }
    let doomed: Vec<i64> = candidates.iter().copied().filter(|id| !busy.contains(id)).collect();
    let delete = t.prepare_cached("DELETE FROM events WHERE id = ANY($1)").await?;
    let deleted = t.execute(&delete, &[&doomed]).await?;
    Ok((candidates, usize::try_from(deleted).unwrap_or(usize::MAX)))
}
