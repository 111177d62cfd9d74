//! Activity over time on PostgreSQL: the same grouped counts as `store/activity.rs`.

use super::Postgres;
use super::operator::read;
use crate::model::{AttemptOutcome, DeliveryStatus};
use crate::store::StoreError;
use crate::store::activity::{ActivityBucket, ActivityQuery, bucket_at, empty_buckets};

impl Postgres {
    pub async fn activity(&self, query: ActivityQuery) -> Result<Vec<ActivityBucket>, StoreError> {
        read(self, async |c| {
            let mut buckets = empty_buckets(&query);
            let (from, to, width) = (query.from, query.to, query.bucket_ms);
            let (source, destination) = (query.source.as_deref(), query.destination.as_deref());
            let received = c
                .prepare_cached(
                    "SELECT (e.received_at_ms - $1) / $3, count(*) FROM events e
                     WHERE e.received_at_ms >= $1 AND e.received_at_ms < $2 AND ($4::text IS NULL OR e.source = $4)
                       AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_rowid = e.id AND d.destination = $5))
                     GROUP BY 1",
                )
                .await?;
            for row in c.query(&received, &[&from, &to, &width, &source, &destination]).await? {
                if let Some(bucket) = bucket_at(&mut buckets, row.try_get(0)?) {
                    bucket.received = row.try_get(1)?;
                }
            }
            let attempts = c
                .prepare_cached(
                    "SELECT (a.started_at_ms - $1) / $3,
                            count(*) FILTER (WHERE a.outcome = $6),
                            count(*) FILTER (WHERE a.outcome <> $6),
                            (avg(a.started_at_ms + a.duration_ms - e.received_at_ms) FILTER (WHERE a.outcome = $6 AND d.replays = 0))::double precision,
                            max(a.started_at_ms + a.duration_ms - e.received_at_ms) FILTER (WHERE a.outcome = $6 AND d.replays = 0)
                     FROM attempts a JOIN deliveries d ON d.id = a.delivery_id JOIN events e ON e.id = d.event_rowid
                     WHERE a.started_at_ms >= $1 AND a.started_at_ms < $2
                       AND ($4::text IS NULL OR e.source = $4) AND ($5::text IS NULL OR d.destination = $5)
                     GROUP BY 1",
                )
                .await?;
            let delivered = AttemptOutcome::Delivered;
            for row in c.query(&attempts, &[&from, &to, &width, &source, &destination, &delivered]).await? {
                if let Some(bucket) = bucket_at(&mut buckets, row.try_get(0)?) {
                    bucket.delivered = row.try_get(1)?;
                    bucket.failed = row.try_get(2)?;
                    bucket.latency_avg_ms = row.try_get(3)?;
                    bucket.latency_max_ms = row.try_get(4)?;
                }
            }
            let dead = c
                .prepare_cached(
                    "SELECT (d.updated_at_ms - $1) / $3, count(*)
                     FROM deliveries d JOIN events e ON e.id = d.event_rowid
                     WHERE d.status = $6 AND d.updated_at_ms >= $1 AND d.updated_at_ms < $2
                       AND ($4::text IS NULL OR e.source = $4) AND ($5::text IS NULL OR d.destination = $5)
                     GROUP BY 1",
                )
                .await?;
            let dead_lettered = DeliveryStatus::DeadLettered;
            for row in c.query(&dead, &[&from, &to, &width, &source, &destination, &dead_lettered]).await? {
                if let Some(bucket) = bucket_at(&mut buckets, row.try_get(0)?) {
                    bucket.dead_lettered = row.try_get(1)?;
                }
            }
            Ok(buckets)
        })
        .await
    }
}
