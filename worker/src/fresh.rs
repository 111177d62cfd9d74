//! Deliveries recorded moments ago, kept in memory for their first attempt, so the common path
//! (record, then deliver once) reads nothing back from SQLite. Under load that read was a
//! blocking-pool hop, a pooled connection and a join per delivery.
//!
//! **Never stale.** An entry is added right after the transaction that created the delivery
//! committed, before its task is published, exactly as written (pending, no attempts). The
//! first attempt, whichever task starts it, takes the entry out ([`FreshDeliveries::take`]), and
//! recording any attempt drops it. Everything else that changes a delivery comes later: a
//! replay or a prune needs a finished delivery, so an attempt first.
//!
//! **Bounded.** At most [`MAX_ENTRIES`] entries and [`MAX_BYTES`] of bodies, each served for
//! [`MAX_AGE`] at most; the oldest go first. Keeping up at 5k events/s, a delivery waits
//! milliseconds for its first attempt, so a few hundred entries are in use; a backlog gains
//! nothing from more. A miss (evicted or expired, after a restart, or after a read that did not
//! lead to an attempt, such as a breaker postponement) reads SQLite as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::DeliveryToSend;

/// Most deliveries kept.
pub const MAX_ENTRIES: usize = 4096;
/// Most body bytes kept, summed.
pub const MAX_BYTES: usize = 8 << 20;
/// Longest an entry is served; an older one belongs to a backlog, read back when its turn comes.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// The entries, see the module docs.
#[derive(Default)]
pub struct FreshDeliveries {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each delivery with when it was offered.
    entries: HashMap<String, (Instant, DeliveryToSend)>,
    /// Ids in the order they were offered. An id already taken stays until it reaches the front.
    order: VecDeque<(Instant, String)>,
    bytes: usize,
}

impl FreshDeliveries {
    /// Keeps `delivery` for its first attempt, evicting the oldest entries to make room.
    pub fn offer(&self, delivery: DeliveryToSend) {
        self.offer_at(delivery, Instant::now());
    }

    fn offer_at(&self, delivery: DeliveryToSend, now: Instant) {
        let size = delivery.body.len();
        if size > MAX_BYTES {
            return;
        }
        let mut inner = self.lock();
        while let Some((offered_at, _)) = inner.order.front() {
            let expired = now.saturating_duration_since(*offered_at) > MAX_AGE;
            if !expired && inner.order.len() < MAX_ENTRIES && inner.bytes + size <= MAX_BYTES {
                break;
            }
            if let Some((_, id)) = inner.order.pop_front()
                && let Some((_, evicted)) = inner.entries.remove(&id)
            {
                inner.bytes -= evicted.body.len();
            }
        }
        inner.bytes += size;
        inner.order.push_back((now, delivery.delivery_id.clone()));
        if let Some((_, replaced)) = inner.entries.insert(delivery.delivery_id.clone(), (now, delivery)) {
            inner.bytes -= replaced.body.len();
        }
    }

    /// Takes the delivery out, if it is still here and not expired: only its first attempt gets it.
    pub fn take(&self, delivery_id: &str) -> Option<DeliveryToSend> {
        self.take_at(delivery_id, Instant::now())
    }

    fn take_at(&self, delivery_id: &str, now: Instant) -> Option<DeliveryToSend> {
        let mut inner = self.lock();
        let (offered_at, delivery) = inner.entries.remove(delivery_id)?;
        inner.bytes -= delivery.body.len();
        (now.saturating_duration_since(offered_at) <= MAX_AGE).then_some(delivery)
    }

    /// The entries; a panic elsewhere while holding the lock leaves them usable (every change
    /// to them completes before anything that could panic).
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn delivery(id: &str, body_bytes: usize) -> DeliveryToSend {
        DeliveryToSend {
            delivery_id: id.into(),
            destination: "d".into(),
            status: "pending".into(),
            attempts: 0,
            source: "s".into(),
            event_id: format!("evt_{id}"),
            event_type: None,
            content_type: None,
            received_at_ms: 1,
            body: vec![b'x'; body_bytes].into(),
        }
    }

    #[test]
    fn only_the_first_take_gets_it() {
        let fresh = FreshDeliveries::default();
        fresh.offer(delivery("a", 3));
        assert_eq!(fresh.take("a").unwrap().event_id, "evt_a");
        assert!(fresh.take("a").is_none());
        assert!(fresh.take("never offered").is_none());
    }

    #[test]
    fn the_oldest_go_first_when_full() {
        let fresh = FreshDeliveries::default();
        for n in 0..MAX_ENTRIES + 10 {
            fresh.offer(delivery(&n.to_string(), 1));
        }
        assert!(fresh.take("0").is_none());
        assert!(fresh.take("9").is_none());
        assert!(fresh.take("10").is_some());
        assert!(fresh.take(&(MAX_ENTRIES + 9).to_string()).is_some());
        let inner = fresh.lock();
        assert!(inner.order.len() <= MAX_ENTRIES && inner.entries.len() < MAX_ENTRIES);
    }

    #[test]
    fn bodies_are_bounded_in_bytes() {
        let fresh = FreshDeliveries::default();
        let quarter = MAX_BYTES / 4;
        for id in ["a", "b", "c", "d", "e"] {
            fresh.offer(delivery(id, quarter));
        }
        assert!(fresh.take("a").is_none(), "the oldest made room");
        assert!(fresh.take("e").is_some());
        fresh.offer(delivery("too big", MAX_BYTES + 1));
        assert!(fresh.take("too big").is_none());
        assert!(fresh.lock().bytes <= MAX_BYTES);
    }

    #[test]
    fn old_entries_expire() {
        let fresh = FreshDeliveries::default();
        let start = Instant::now();
        fresh.offer_at(delivery("old", 1), start);
        fresh.offer_at(delivery("new", 1), start + MAX_AGE + Duration::from_secs(1));
        assert!(fresh.take("old").is_none(), "evicted when the next one came");
        assert!(fresh.take("new").is_some());

        // Expired with nothing offered after it: not served either.
        fresh.offer_at(delivery("quiet", 1), start);
        assert!(fresh.take_at("quiet", start + MAX_AGE + Duration::from_millis(1)).is_none());
        fresh.offer_at(delivery("in time", 1), start);
        assert!(fresh.take_at("in time", start + MAX_AGE).is_some());
    }

    #[test]
    fn offering_an_id_again_replaces_it_without_leaking_its_bytes() {
        let fresh = FreshDeliveries::default();
        fresh.offer(delivery("a", 100));
        fresh.offer(delivery("a", 30));
        assert_eq!(fresh.lock().bytes, 30);
        assert_eq!(fresh.take("a").unwrap().body.len(), 30);
        assert_eq!(fresh.lock().bytes, 0);
    }
}
