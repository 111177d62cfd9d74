//! DataLoaders: deliveries by event, attempts by delivery, events by row id. One SQL read per
//! batch of keys, whatever the page size (no N+1). Built per request, with the request's
//! [`Reads`] counter, which the response reports as `extensions.sqlReads`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::params_from_iter;

use super::types::{Attempt, Delivery, Event};
use crate::store::{Store, StoreError};

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

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

/// Deliveries of an event (key: event row id).
pub struct DeliveriesByEvent {
    /// Database.
    pub store: Store,
    /// Request counter.
    pub reads: Reads,
}

impl async_graphql::dataloader::Loader<i64> for DeliveriesByEvent {
    type Value = Vec<Delivery>;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Vec<Delivery>>, LoadError> {
        self.reads.add();
        let keys = keys.to_vec();
        self.store
            .read(move |c| {
                let sql = format!(
                    "SELECT {} FROM deliveries d WHERE d.event_rowid IN ({}) ORDER BY d.destination",
                    Delivery::COLUMNS,
                    placeholders(keys.len())
                );
                let mut statement = c.prepare(&sql)?;
                let rows = statement.query_map(params_from_iter(keys.iter()), Delivery::from_row)?;
                let mut map: HashMap<i64, Vec<Delivery>> = HashMap::new();
                for row in rows {
                    let delivery = row?;
                    map.entry(delivery.event_rowid).or_default().push(delivery);
                }
                Ok(map)
            })
            .await
            .map_err(Arc::new)
    }
}

/// Attempts of a delivery (key: delivery id).
pub struct AttemptsByDelivery {
    /// Database.
    pub store: Store,
    /// Request counter.
    pub reads: Reads,
}

impl async_graphql::dataloader::Loader<String> for AttemptsByDelivery {
    type Value = Vec<Attempt>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Vec<Attempt>>, LoadError> {
        self.reads.add();
        let keys = keys.to_vec();
        self.store
            .read(move |c| {
                let sql = format!(
                    "SELECT delivery_id, attempt, started_at_ms, duration_ms, outcome, status_code, error, response_snippet
                     FROM attempts WHERE delivery_id IN ({}) ORDER BY attempt",
                    placeholders(keys.len())
                );
                let mut statement = c.prepare(&sql)?;
                let rows = statement.query_map(params_from_iter(keys.iter()), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Attempt {
                            attempt: r.get(1)?,
                            started_at_ms: r.get(2)?,
                            duration_ms: r.get(3)?,
                            outcome: r.get(4)?,
                            status_code: r.get(5)?,
                            error: r.get(6)?,
                            response_snippet: r.get(7)?,
                        },
                    ))
                })?;
                let mut map: HashMap<String, Vec<Attempt>> = HashMap::new();
                for row in rows {
                    let (id, attempt) = row?;
                    map.entry(id).or_default().push(attempt);
                }
                Ok(map)
            })
            .await
            .map_err(Arc::new)
    }
}

/// Events by row id.
pub struct EventsById {
    /// Database.
    pub store: Store,
    /// Request counter.
    pub reads: Reads,
}

impl async_graphql::dataloader::Loader<i64> for EventsById {
    type Value = Event;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Event>, LoadError> {
        self.reads.add();
        let keys = keys.to_vec();
        self.store
            .read(move |c| {
                let sql =
                    format!("SELECT {} FROM events e WHERE e.id IN ({})", Event::COLUMNS, placeholders(keys.len()));
                let mut statement = c.prepare(&sql)?;
                let rows = statement.query_map(params_from_iter(keys.iter()), Event::from_row)?;
                rows.map(|row| row.map(|event| (event.rowid, event))).collect()
            })
            .await
            .map_err(Arc::new)
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
