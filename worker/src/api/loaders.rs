//! DataLoaders: deliveries by event, attempts by delivery, events by row id. One store read per
//! batch of keys, whatever the page size (no N+1). Built per request, with the request's
//! [`Reads`] counter, which the response reports as `extensions.sqlReads`. They load the
//! store's rows; the GraphQL types are made from them by the resolvers (`types`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::{DeliveryId, EventRowId};
use crate::store::{AttemptRow, DeliveryRow, EventRow, Store, StoreError};

/// SQL reads made while answering one request.
#[derive(Debug, Default, Clone)]
pub struct Reads(Arc<AtomicUsize>);

impl Reads {
    /// Counts one read.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Reads so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bytes of stored bodies and headers one answer may carry in all. The first event's content
/// is allowed whatever its size, so any single event can be read.
pub const MAX_CONTENT_BYTES: u64 = 8 * 1024 * 1024;

/// Stored bodies and headers handed out while answering one request, priced before they are
/// loaded: the first is always allowed; each further one only while the total stays within
/// [`MAX_CONTENT_BYTES`].
#[derive(Debug, Default, Clone)]
pub struct ContentBudget(Arc<std::sync::Mutex<(u32, u64)>>);

impl ContentBudget {
    /// Takes `bytes` from the budget, or says no (and takes nothing).
    pub fn take(&self, bytes: u64) -> bool {
        let Ok(mut spent) = self.0.lock() else {
            return false;
        };
        let (count, total) = *spent;
        let after = total.saturating_add(bytes);
        if count > 0 && after > MAX_CONTENT_BYTES {
            return false;
        }
        *spent = (count.saturating_add(1), after);
        true
    }
}

/// Loader errors must be `Clone`.
pub type LoadError = Arc<StoreError>;

/// Deliveries of an event (key: event row id).
pub struct DeliveriesByEvent {
    /// Database.
    pub store: Store,
    /// Request counter.
    pub reads: Reads,
}

impl async_graphql::dataloader::Loader<EventRowId> for DeliveriesByEvent {
    type Value = Vec<DeliveryRow>;
    type Error = LoadError;

    async fn load(&self, keys: &[EventRowId]) -> Result<HashMap<EventRowId, Vec<DeliveryRow>>, LoadError> {
        self.reads.add();
        self.store.deliveries_of_events(keys.to_vec()).await.map_err(Arc::new)
    }
}

/// Attempts of a delivery (key: delivery id).
pub struct AttemptsByDelivery {
    /// Database.
    pub store: Store,
    /// Request counter.
    pub reads: Reads,
}

impl async_graphql::dataloader::Loader<DeliveryId> for AttemptsByDelivery {
    type Value = Vec<AttemptRow>;
    type Error = LoadError;

    async fn load(&self, keys: &[DeliveryId]) -> Result<HashMap<DeliveryId, Vec<AttemptRow>>, LoadError> {
        self.reads.add();
        self.store.attempts_of_deliveries(keys.to_vec()).await.map_err(Arc::new)
    }
}

/// Events by row id.
pub struct EventsById {
    /// Database.
    pub store: Store,
    /// Request counter.
    pub reads: Reads,
}

impl async_graphql::dataloader::Loader<EventRowId> for EventsById {
    type Value = EventRow;
    type Error = LoadError;

    async fn load(&self, keys: &[EventRowId]) -> Result<HashMap<EventRowId, EventRow>, LoadError> {
        self.reads.add();
        self.store.events_by_id(keys.to_vec()).await.map_err(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::{ContentBudget, MAX_CONTENT_BYTES};

    #[test]
    fn the_first_body_always_fits_and_later_ones_only_within_the_budget() {
        let budget = ContentBudget::default();
        assert!(budget.take(3 * MAX_CONTENT_BYTES), "one body of any size");
        assert!(!budget.take(1), "nothing after an oversized first one");
        let budget = ContentBudget::default();
        assert!(budget.take(MAX_CONTENT_BYTES / 2));
        assert!(budget.take(MAX_CONTENT_BYTES / 2));
        assert!(!budget.take(1), "the budget is spent");
        assert!(budget.clone().take(0), "an empty one still fits");
    }
}
