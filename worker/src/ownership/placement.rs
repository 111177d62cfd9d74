//! Who does what when several workers share one PostgreSQL store.
//!
//! A destination's `rate_limit`, `concurrency` and circuit breaker must hold in total, not once
//! per worker, and the periodic jobs (pruning) must run on one worker at a time. Both come from
//! one rule: **each destination, and the job set, is held by one worker at a time**, through a
//! lease in a NATS key-value bucket (`{stream}_PLACEMENT`, one key per item). Only the holder of
//! a destination claims its due deliveries and attempts them, so its limits are the
//! destination's limits; every worker still records events for every destination (a new
//! delivery is left due in the store, and the holder is woken to take it).
//!
//! **Leases.** A key is created by the worker that takes the item (`create` fails when another
//! holds it) and renewed every [`RENEW_EVERY`] with `update` at the revision it last wrote, so a
//! worker that lost its key (it expired while the worker stalled, and another took it) finds
//! out at its next renewal and stops. The bucket's `max_age` is [`LEASE_TTL`]: the keys of a
//! worker that died expire, and another worker takes its items within `LEASE_TTL +
//! RENEW_EVERY`. Advisory locks in PostgreSQL would do the same but break behind PgBouncer's
//! transaction pooling (`shared/docs/scale-out.md`).
//!
//! **Spreading.** Each live worker announces itself (`worker.{instance}`, same TTL). Each item's
//! preferred holder is the live worker with the highest hash of (item, worker) — rendezvous
//! hashing: every worker computes the same answer from the same list, and when a worker joins
//! or leaves only the items it wins or held move. A worker takes a free item it prefers at
//! once, and any free item after it has seen it free for [`ADOPT_AFTER`] rounds (its preferred
//! worker may not have seen the new list yet, or may be stuck); it hands back an item whose
//! preferred worker is another live one, so a worker that starts gets its share.
//!
//! **What a change of holder costs.** When an item moves, the old holder stops claiming at
//! once; attempts it already started finish (their results are fenced by each delivery's own
//! lease token, so a result is never recorded twice). For those few seconds both may be
//! sending to the destination: the limits hold in total except for the old holder's
//! in-flight attempts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::LeaseError;
use crate::metric_names;
use crate::store::Store;

/// How long a key lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the holder renews its keys and looks at the live workers.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Rounds a free item must stay free before a worker that is not its preferred holder takes it.
const ADOPT_AFTER: u32 = 2;

/// Whether this worker holds one item now; cheap to clone, read on every claim.
#[derive(Clone, Default)]
pub struct Holding {
    inner: Arc<HoldingState>,
}

#[derive(Default)]
struct HoldingState {
    held: AtomicBool,
    changed: Notify,
}

impl Holding {
    /// Held for good: the SQLite store has one worker, which holds everything.
    pub fn always() -> Holding {
        let holding = Holding::default();
        holding.set(true);
        holding
    }

    /// Whether this worker holds the item now.
    pub fn is_held(&self) -> bool {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// Waits until this worker holds the item (at once when it does).
    pub async fn wait_held(&self) {
        loop {
            let changed = self.inner.changed.notified();
            if self.is_held() {
                return;
            }
            changed.await;
        }
    }

    fn set(&self, held: bool) {
        if self.inner.held.swap(held, Ordering::SeqCst) != held {
            self.inner.changed.notify_waiters();
        }
    }
}

/// One item a worker may hold: a destination, or the periodic jobs.
struct Item {
    key: String,
    /// The destination's name (`None`: the jobs), for the metric.
    destination: Option<String>,
    holding: Holding,
    /// The revision this worker last wrote, while it holds the key.
    revision: Option<u64>,
    /// Rounds in a row this worker found the key free.
    seen_free: u32,
    /// When this worker last wrote the key.
    renewed_at: Instant,
}

impl Item {
    fn set(&self, held: bool) {
        self.holding.set(held);
        metric_names::held(self.destination.as_deref(), held);
    }
}

/// The placement of this worker among the others: run it with [`Placement::run`].
pub struct Placement {
    kv: kv::Store,
    store: Store,
    bucket: String,
    instance: String,
    value: Bytes,
    items: Vec<Item>,
}

/// The key of the job set.
const JOBS_KEY: &str = "jobs";

impl Placement {
    /// Opens (creating) the placement bucket for `stream` and prepares the items: one per
    /// destination name and the jobs. Nothing is held until [`Placement::run`] takes it.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Nats`] when the bucket cannot be created or opened.
    pub async fn new(
        js: &jetstream::Context,
        store: Store,
        stream: &str,
        replicas: usize,
        destinations: &[String],
    ) -> Result<(Placement, HashMap<String, Holding>, Holding), LeaseError> {
        let bucket = format!("{stream}_PLACEMENT");
        let kv = js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                description: "Inlet: which worker holds each destination and the periodic jobs".into(),
                history: 1,
                max_age: LEASE_TTL,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| LeaseError::Nats { bucket: bucket.clone(), source: e.into() })?;
        let instance = format!("{:032x}", rand::random::<u128>());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let value =
            Bytes::from(format!("{{\"instance\":\"{instance}\",\"host\":{host:?},\"pid\":{}}}", std::process::id()));
        let mut holdings = HashMap::new();
        let mut items = Vec::new();
        for name in destinations {
            let holding = Holding::default();
            holdings.insert(name.clone(), holding.clone());
            items.push(Item {
                key: destination_key(name),
                destination: Some(name.clone()),
                holding,
                revision: None,
                seen_free: 0,
                renewed_at: Instant::now(),
            });
        }
        let jobs = Holding::default();
        items.push(Item {
            key: JOBS_KEY.to_owned(),
            destination: None,
            holding: jobs.clone(),
            revision: None,
            seen_free: 0,
            renewed_at: Instant::now(),
        });
        for item in &items {
            metric_names::held(item.destination.as_deref(), false);
        }
        Ok((Placement { kv, store, bucket, instance, value, items }, holdings, jobs))
    }

    /// Renews, takes and hands back items every [`RENEW_EVERY`] until `shutdown`, then hands
    /// back everything it holds so the others take it at once instead of after [`LEASE_TTL`].
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.round().await {
                tracing::warn!(%error, bucket = %self.bucket, "placement round failed; holding nothing new until NATS answers");
                // Unrenewed, a key may expire and another worker take the item: stop before
                // that can happen. The revision stays, so a renewal that still succeeds later
                // resumes without waiting for the key to expire.
                for item in &mut self.items {
                    if item.holding.is_held() && item.renewed_at.elapsed() >= LEASE_TTL - RENEW_EVERY {
                        item.set(false);
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
        for item in &mut self.items {
            if let Some(revision) = item.revision.take() {
                item.set(false);
                let _ = self.kv.delete_expect_revision(&item.key, Some(revision)).await;
            }
        }
        let _ = self.kv.delete(worker_key(&self.instance)).await;
    }

    /// One round: announce this worker, read who is live, then settle every item.
    async fn round(&mut self) -> Result<(), LeaseError> {
        let nats =
            |source: Box<dyn std::error::Error + Send + Sync>| LeaseError::Nats { bucket: self.bucket.clone(), source };
        self.kv.put(worker_key(&self.instance), self.value.clone()).await.map_err(|e| nats(e.into()))?;
        let mut live = Vec::new();
        let mut keys = self.kv.keys().await.map_err(|e| nats(e.into()))?;
        while let Some(key) = keys.next().await {
            if let Some(instance) = key.map_err(|e| nats(e.into()))?.strip_prefix("worker.") {
                live.push(instance.to_owned());
            }
        }
        for index in 0..self.items.len() {
            let preferred = preferred_holder(&self.items[index].key, &live);
            let mine = preferred.is_none_or(|p| p == self.instance);
            self.settle(index, mine).await;
        }
        metric_names::placement_workers(live.len());
        Ok(())
    }

    /// Renews, takes or hands back one item. Errors leave the item as the store of keys says:
    /// an item whose renewal failed is dropped (another worker may hold it now).
    async fn settle(&mut self, index: usize, mine: bool) {
        let (kv, value, store) = (&self.kv, &self.value, &self.store);
        let item = &mut self.items[index];
        match item.revision {
            Some(revision) if !mine => {
                // Its preferred worker is live and another: stop first, then free the key.
                item.set(false);
                item.revision = None;
                let _ = kv.delete_expect_revision(&item.key, Some(revision)).await;
                tracing::info!(item = %item.key, "handed back to its preferred worker");
            }
            Some(revision) => match kv.update(&item.key, value.clone(), revision).await {
                Ok(next) => {
                    item.revision = Some(next);
                    item.renewed_at = Instant::now();
                    // Held again after a round that could not renew (see `run`).
                    item.set(true);
                }
                Err(error) => {
                    item.set(false);
                    item.revision = None;
                    tracing::warn!(item = %item.key, %error, "lost the lease (expired or taken over); stopped");
                }
            },
            None => {
                item.seen_free += 1;
                if !mine && item.seen_free <= ADOPT_AFTER {
                    return;
                }
                // A key handed back leaves a delete marker; one whose holder died (or stalled
                // past the TTL) is gone altogether.
                let holder_gone = matches!(kv.entry(&item.key).await, Ok(None));
                match kv.create(&item.key, value.clone()).await {
                    Ok(revision) => {
                        item.revision = Some(revision);
                        item.renewed_at = Instant::now();
                        item.seen_free = 0;
                        if holder_gone && let Some(destination) = &item.destination {
                            // Only a destination's holder claims its deliveries, so the leases
                            // on them are the lost holder's: attempt them again now rather
                            // than when those leases run out.
                            match store.release_destination_leases(destination.clone()).await {
                                Ok(released) => {
                                    for delivery_id in &released {
                                        tracing::warn!(%delivery_id, %destination, "delivery restarted: the worker that held its destination is gone");
                                    }
                                    metric_names::restarted(destination, released.len() as u64);
                                }
                                Err(error) => {
                                    tracing::warn!(%error, %destination, "cannot release the previous holder's claims; they are taken again when they expire");
                                }
                            }
                        }
                        item.set(true);
                        tracing::info!(item = %item.key, "took the lease");
                    }
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => item.seen_free = 0,
                    Err(error) => tracing::warn!(item = %item.key, %error, "cannot take the lease"),
                }
            }
        }
    }
}

fn destination_key(name: &str) -> String {
    // Destination names are config tokens; hex keeps any of them a valid key all the same.
    format!("destination.{}", hex::encode(name))
}

fn worker_key(instance: &str) -> String {
    format!("worker.{instance}")
}

/// The live worker with the highest hash of (item, worker): rendezvous hashing.
fn preferred_holder<'a>(key: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|instance| {
            let digest = Sha256::new().chain_update(key).chain_update([0]).chain_update(instance.as_bytes()).finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(first)
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::preferred_holder;

    /// Every worker computes the same holder; with more workers, items spread; a worker that
    /// leaves moves only its own items.
    #[test]
    fn rendezvous_spreads_items_and_moves_only_the_leavers() {
        let workers: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
        let items: Vec<String> = (0..300).map(|i| format!("destination.{i}")).collect();
        let placed: Vec<&str> = items.iter().map(|item| preferred_holder(item, &workers).unwrap_or("")).collect();
        for worker in &workers {
            let share = placed.iter().filter(|p| **p == worker.as_str()).count();
            assert!((60..=140).contains(&share), "{worker} got {share} of 300");
        }
        let without_w1: Vec<String> = vec!["w0".into(), "w2".into()];
        for (item, before) in items.iter().zip(&placed) {
            let after = preferred_holder(item, &without_w1).unwrap_or("");
            if *before != "w1" {
                assert_eq!(after, *before, "{item} moved although its holder stayed");
            }
        }
        assert_eq!(preferred_holder("jobs", &[]), None);
    }
}
