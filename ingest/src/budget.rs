//! The memory budget for request bodies: one semaphore of bytes for the whole process.
//!
//! Each request's own limit (`max_body_bytes`) bounds one body, but not how many are held at
//! once: HTTP/2 multiplexes up to `max_concurrent_streams` requests per connection, so a single
//! client could make ingest buffer hundreds of bodies. A request reserves its declared
//! `Content-Length` before reading anything (or each chunk as it arrives, without one), and
//! holds the reservation until its answer is decided, after the publish. When the budget is
//! spent, the request is refused at once (503 `busy`): waiting for room would let slow
//! requests hold the others up, and the refusal costs nothing to retry.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::events;

/// The process-wide budget (cheap to clone).
#[derive(Clone)]
pub struct BodyBudget {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    in_use: metrics::Gauge,
}

/// Bytes reserved by one request; returned to the budget when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: BodyBudget,
}

impl BodyBudget {
    /// A budget of `capacity` bytes (`ingest.max_buffered_body_bytes`; config validation keeps
    /// it within what a semaphore can count).
    pub fn new(capacity: usize) -> BodyBudget {
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        let in_use = metrics::gauge!(events::BUFFERED_BODY_BYTES);
        BodyBudget { semaphore: Arc::new(Semaphore::new(capacity)), capacity, in_use }
    }

    /// An empty reservation, to grow as the body arrives.
    pub fn reservation(&self) -> Reservation {
        Reservation { permit: None, budget: self.clone() }
    }

    /// Bytes reserved now, over all requests.
    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.semaphore.available_permits())
    }

    fn update_gauge(&self) {
        #[allow(clippy::cast_precision_loss)] // a gauge; bytes well below 2^52
        self.in_use.set(self.in_use() as f64);
    }
}

impl Reservation {
    /// Reserves `bytes` more; `false` (and nothing reserved) when the budget has no room.
    pub fn grow(&mut self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        // One body is at most 64 MiB (config validation), so this always fits.
        let Ok(count) = u32::try_from(bytes) else { return false };
        let Ok(more) = Arc::clone(&self.budget.semaphore).try_acquire_many_owned(count) else { return false };
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
        self.budget.update_gauge();
        true
    }

    /// Bytes this request holds.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.budget.update_gauge();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_capacity_and_return_it_when_dropped() {
        let budget = BodyBudget::new(1000);
        let mut first = budget.reservation();
        assert!(first.grow(600));
        let mut second = budget.reservation();
        assert!(!second.grow(500), "over the budget");
        assert_eq!(second.bytes(), 0, "a refused growth reserves nothing");
        assert!(second.grow(400));
        assert!(!first.grow(1));
        assert_eq!(budget.in_use(), 1000);
        drop(first);
        assert_eq!(budget.in_use(), 400);
        assert!(second.grow(300), "grows chunk by chunk");
        assert_eq!(second.bytes(), 700);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }
}
