//! Activity over time for the console's charts: events received, attempts that delivered and
//! that failed, deliveries dead-lettered, and how long delivery took, per time bucket of a
//! chosen range, optionally for one source or one destination. Read with a few grouped
//! statements over indexed time columns (`events.received_at_ms`, `attempts.started_at_ms`),
//! whatever the range, at most [`MAX_BUCKETS`] rows back.

use rusqlite::params;

use super::StoreError;
use super::sqlite::Sqlite;
use crate::model::{AttemptOutcome, DeliveryStatus, UnixMs};

/// Most buckets one read answers (a week in half-hours, a day in 4-minute steps).
pub const MAX_BUCKETS: i64 = 400;

/// What to count: `[from, to)` in buckets of `bucket_ms`, optionally for one source and/or one
/// destination (an event counts for a destination when it was routed there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityQuery {
    /// Start of the range (inclusive).
    pub from: UnixMs,
    /// End of the range (exclusive).
    pub to: UnixMs,
    /// Bucket width, ms (positive).
    pub bucket_ms: i64,
    /// Only events from this source.
    pub source: Option<String>,
    /// Only deliveries to this destination.
    pub destination: Option<String>,
}

impl ActivityQuery {
    /// How many buckets the range spans.
    pub fn buckets(&self) -> i64 {
        (self.to.0 - self.from.0 + self.bucket_ms - 1).div_euclid(self.bucket_ms.max(1)).max(0)
    }
}

/// One bucket's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ActivityBucket {
    /// Start of the bucket.
    pub start: UnixMs,
    /// Events received.
    pub received: i64,
    /// Attempts that delivered.
    pub delivered: i64,
    /// Attempts that failed (transient or permanent).
    pub failed: i64,
    /// Deliveries dead-lettered (and still dead letters), by when.
    pub dead_lettered: i64,
    /// Receipt to delivery, mean, ms, over deliveries delivered in the bucket without a replay.
    pub latency_avg_ms: Option<f64>,
    /// Receipt to delivery, slowest, ms (same deliveries).
    pub latency_max_ms: Option<i64>,
}

/// Every bucket of `query`'s range, empty ones included, filled from rows of
/// (bucket index, column values) by `fill`.
pub(super) fn empty_buckets(query: &ActivityQuery) -> Vec<ActivityBucket> {
    (0..query.buckets())
        .map(|n| ActivityBucket { start: UnixMs(query.from.0 + n * query.bucket_ms), ..ActivityBucket::default() })
        .collect()
}

/// The bucket a row's index names, if it is in range.
pub(super) fn bucket_at(buckets: &mut [ActivityBucket], index: i64) -> Option<&mut ActivityBucket> {
    usize::try_from(index).ok().and_then(|i| buckets.get_mut(i))
}

impl Sqlite {
    pub async fn activity(&self, query: ActivityQuery) -> Result<Vec<ActivityBucket>, StoreError> {
        self.read(move |c| {
            let mut buckets = empty_buckets(&query);
            let (from, to, width) = (query.from, query.to, query.bucket_ms);
            let (source, destination) = (query.source.as_deref(), query.destination.as_deref());
            let mut received = c.prepare_cached(
                "SELECT (e.received_at_ms - ?1) / ?3, count(*) FROM events e
                 WHERE e.received_at_ms >= ?1 AND e.received_at_ms < ?2 AND (?4 IS NULL OR e.source = ?4)
                   AND (?5 IS NULL OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_rowid = e.id AND d.destination = ?5))
                 GROUP BY 1",
            )?;
            for row in received.query_map(params![from, to, width, source, destination], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (index, n): (i64, i64) = row?;
                if let Some(bucket) = bucket_at(&mut buckets, index) {
                    bucket.received = n;
                }
            }
            let mut attempts = c.prepare_cached(
                "SELECT (a.started_at_ms - ?1) / ?3,
                        count(*) FILTER (WHERE a.outcome = ?6),
                        count(*) FILTER (WHERE a.outcome <> ?6),
                        avg(a.started_at_ms + a.duration_ms - e.received_at_ms) FILTER (WHERE a.outcome = ?6 AND d.replays = 0),
                        max(a.started_at_ms + a.duration_ms - e.received_at_ms) FILTER (WHERE a.outcome = ?6 AND d.replays = 0)
                 FROM attempts a JOIN deliveries d ON d.id = a.delivery_id JOIN events e ON e.id = d.event_rowid
                 WHERE a.started_at_ms >= ?1 AND a.started_at_ms < ?2
                   AND (?4 IS NULL OR e.source = ?4) AND (?5 IS NULL OR d.destination = ?5)
                 GROUP BY 1",
            )?;
            let rows = attempts.query_map(
                params![from, to, width, source, destination, AttemptOutcome::Delivered],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            for row in rows {
                let (index, delivered, failed, avg, max): (i64, i64, i64, Option<f64>, Option<i64>) = row?;
                if let Some(bucket) = bucket_at(&mut buckets, index) {
                    (bucket.delivered, bucket.failed, bucket.latency_avg_ms, bucket.latency_max_ms) =
                        (delivered, failed, avg, max);
                }
            }
            let mut dead = c.prepare_cached(
                "SELECT (d.updated_at_ms - ?1) / ?3, count(*)
                 FROM deliveries d JOIN events e ON e.id = d.event_rowid
                 WHERE d.status = ?6 AND d.updated_at_ms >= ?1 AND d.updated_at_ms < ?2
                   AND (?4 IS NULL OR e.source = ?4) AND (?5 IS NULL OR d.destination = ?5)
                 GROUP BY 1",
            )?;
            let rows = dead.query_map(
                params![from, to, width, source, destination, DeliveryStatus::DeadLettered],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for row in rows {
                let (index, n): (i64, i64) = row?;
                if let Some(bucket) = bucket_at(&mut buckets, index) {
                    bucket.dead_lettered = n;
                }
            }
            Ok(buckets)
        })
        .await
    }
}
