//! The memory budget for request bodies: one budget of bytes for the whole process.
//!
//! Each request's own limit (`max_body_bytes`) bounds one body, but not how many are held at
//! once: HTTP/2 multiplexes up to `max_concurrent_streams` requests per connection, so a single
//! client could make ingest buffer hundreds of bodies. A request reserves what it holds as its
//! body arrives, frame by frame (what arrived, plus at most one chunk's room: [`BodyBuffer`]),
//! never what it merely declares: a declared `Content-Length`
//! costs the sender nothing, so reserving it up front let a few connections of streams that
//! declare 1 MB and send nothing fill the budget and lock every webhook out. The reservation is
//! held until the request's answer is decided, after the publish. When the budget is spent, the
//! request is refused at once (503 `busy`): waiting for room would let slow requests hold the
//! others up, and the refusal costs nothing to retry.
//!
//! Reserving only what arrived still lets a sender hold the budget by sending large bodies and
//! stalling before their last byte (until `body_read_timeout`). So a slice of the budget is kept
//! for small bodies ([`SMALL_BODY_BYTES`]), which is what genuine webhooks are (a few KiB): a
//! large body can only ever hold the rest. Small bodies use the shared part first and the slice
//! only once it is spent, so the slice is still free when large bodies have filled the rest. A
//! small body holds at most 64 KiB, so filling the slice as well takes hundreds of streams
//! stalled at once on top of the large ones (with the default 256 MiB budget, a 32 MiB slice:
//! 512 streams of 64 KiB, 16 connections' worth, or thousands of typical webhooks' size), each
//! having sent its bytes, rather than 8 connections sending nothing. Bounding that too is a
//! matter of per-client limits (`max_connections`, a proxy in front), not of this budget.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metric_names;

/// A body that holds at most this much (and declares no more) may use the slice of the budget
/// kept for small bodies. Provider webhooks are a few KiB, well under it.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// The slice kept for small bodies is at least this (the default `ingest.max_body_bytes`):
/// for the smallest budgets, an eighth would hold only a few small bodies.
const MIN_SMALL_SLICE: usize = 1_000_000;

/// The process-wide budget (cheap to clone).
#[derive(Clone)]
pub struct BodyBudget {
    /// Any request may reserve from here.
    shared: Arc<Semaphore>,
    /// Only small bodies may reserve from here, once `shared` is spent.
    small: Arc<Semaphore>,
    capacity: usize,
    small_slice: usize,
    in_use: metrics::Gauge,
}

/// Bytes reserved by one request; returned to the budget when dropped.
pub struct Reservation {
    shared: Option<OwnedSemaphorePermit>,
    small: Option<OwnedSemaphorePermit>,
    /// Whether the body may use the slice kept for small ones: it declares and holds at most
    /// [`SMALL_BODY_BYTES`]. Once large, always large.
    is_small: bool,
    budget: BodyBudget,
}

impl BodyBudget {
    /// A budget of `capacity` bytes (`ingest.max_buffered_body_bytes`; config validation keeps
    /// it within what a semaphore can count, and at least `largest_body`, the largest body
    /// limit of any source).
    ///
    /// An eighth of it (at least [`MIN_SMALL_SLICE`]) is kept for small bodies, but never so
    /// much that the largest body no longer fits in the rest: that body would be refused for
    /// ever.
    pub fn new(capacity: usize, largest_body: usize) -> BodyBudget {
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        let small_slice = (capacity / 8).max(MIN_SMALL_SLICE).min(capacity.saturating_sub(largest_body));
        let in_use = metrics::gauge!(metric_names::BUFFERED_BODY_BYTES);
        BodyBudget {
            shared: Arc::new(Semaphore::new(capacity - small_slice)),
            small: Arc::new(Semaphore::new(small_slice)),
            capacity,
            small_slice,
            in_use,
        }
    }

    /// An empty reservation, to grow as the body arrives, for a body declaring `declared` bytes
    /// (if it does: hyper ends a body at its declared length, so it is the most it can hold).
    pub fn reservation(&self, declared: Option<u64>) -> Reservation {
        let is_small = declared.is_none_or(|declared| declared <= SMALL_BODY_BYTES as u64);
        Reservation { shared: None, small: None, is_small, budget: self.clone() }
    }

    /// Bytes kept for small bodies (large ones can hold only the rest).
    pub fn small_slice(&self) -> usize {
        self.small_slice
    }

    /// Bytes reserved now, over all requests.
    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.shared.available_permits() + self.small.available_permits())
    }

    fn update_gauge(&self) {
        #[allow(clippy::cast_precision_loss)] // a gauge; bytes well below 2^52
        self.in_use.set(self.in_use() as f64);
    }
}

fn acquire(semaphore: &Arc<Semaphore>, bytes: usize) -> Option<OwnedSemaphorePermit> {
    // One body is at most 64 MiB (config validation), so this always fits.
    let count = u32::try_from(bytes).ok()?;
    Arc::clone(semaphore).try_acquire_many_owned(count).ok()
}

fn add(held: &mut Option<OwnedSemaphorePermit>, more: OwnedSemaphorePermit) {
    match held {
        Some(permit) => permit.merge(more),
        None => *held = Some(more),
    }
}

impl Reservation {
    /// Reserves `bytes` more; `false` (and nothing more reserved) when the budget has no room.
    ///
    /// A small body takes from the shared part, else from the slice kept for small bodies. A
    /// large one takes from the shared part only; when a body becomes large (one without a
    /// declared length growing past [`SMALL_BODY_BYTES`]), what it held of the slice moves to
    /// the shared part with it, so large bodies never hold any of the slice.
    pub fn grow(&mut self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let budget = &self.budget;
        if self.is_small && self.bytes().saturating_add(bytes) > SMALL_BODY_BYTES {
            let from_slice = self.small.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
            let Some(more) = acquire(&budget.shared, bytes.saturating_add(from_slice)) else { return false };
            add(&mut self.shared, more);
            self.small = None;
            self.is_small = false;
        } else if let Some(more) = acquire(&budget.shared, bytes) {
            add(&mut self.shared, more);
        } else if let Some(more) = self.is_small.then(|| acquire(&budget.small, bytes)).flatten() {
            add(&mut self.small, more);
        } else {
            return false;
        }
        budget.update_gauge();
        true
    }

    /// Bytes this request holds.
    pub fn bytes(&self) -> usize {
        [&self.shared, &self.small]
            .iter()
            .filter_map(|permit| permit.as_ref())
            .map(OwnedSemaphorePermit::num_permits)
            .sum()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = self.shared.take().is_some() | self.small.take().is_some();
        if held {
            self.budget.update_gauge();
        }
    }
}

/// A body is copied into chunks of at most this size as it arrives.
const CHUNK_BYTES: usize = 64 * 1024;

/// A request body being read, and the reservation for the memory it holds.
///
/// What it holds is reserved before it is allocated, and only once bytes arrive to fill it: a
/// body that arrives in one frame, all it declared, is kept as hyper received it (the common
/// case, without a copy); any other is copied into chunks, each allocated when a frame needs
/// it, as large as what has arrived with that frame (up to [`CHUNK_BYTES`]) and never past the
/// declared length. So a stalled body holds what it received plus at most as much again (and
/// at most one chunk), and holds no frame of hyper's (which may share a larger allocation). Chunks rather than one buffer growing by doubling: doubling
/// copies the body again at each step, and the buffers it frees stay resident in the allocator
/// until it next tidies up; with a hundred streams refused part-way at once that came to eight
/// times the budget (`limits.rs`, an 8 MB budget: VmRSS +67 MiB while stalled, against +19 MiB
/// with chunks). The chunks are joined once the body is complete, each freed as soon as it is
/// copied.
pub struct BodyBuffer {
    reservation: Reservation,
    /// The declared length, if any.
    declared: Option<usize>,
    /// The most the body can be: its declared length, else its limit.
    most: usize,
    /// The whole body, in one frame as hyper delivered it.
    whole: Option<Bytes>,
    chunks: Vec<Vec<u8>>,
    len: usize,
    allocated: usize,
}

impl BodyBuffer {
    /// An empty body, declaring `declared` bytes (if it does), of at most `limit` bytes.
    pub fn new(budget: &BodyBudget, declared: Option<u64>, limit: usize) -> BodyBuffer {
        let declared_len = declared.and_then(|declared| usize::try_from(declared).ok());
        BodyBuffer {
            reservation: budget.reservation(declared),
            declared: declared_len,
            // hyper ends a body at its Content-Length (HTTP/1) or refuses a longer one (HTTP/2).
            most: declared_len.map_or(limit, |declared| declared.min(limit)),
            whole: None,
            chunks: Vec::new(),
            len: 0,
            allocated: 0,
        }
    }

    /// Bytes received.
    pub fn received(&self) -> usize {
        self.len
    }

    /// Adds a frame; `false` when the budget has no room for it (the request is then refused).
    pub fn push(&mut self, data: Bytes) -> bool {
        if data.is_empty() {
            return true;
        }
        if self.len == 0 && self.declared == Some(data.len()) {
            if !self.reservation.grow(data.len()) {
                return false;
            }
            self.len = data.len();
            self.whole = Some(data);
            return true;
        }
        if let Some(whole) = self.whole.take() {
            // More than declared: hyper does not let that happen, but copy rather than lose it.
            self.len = 0;
            if !self.copy(&whole) {
                return false;
            }
        }
        self.copy(&data)
    }

    fn copy(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            // The chunks are filled in turn: only the last has room.
            let room = self.allocated.saturating_sub(self.len);
            if room == 0 {
                // As large as the body so far with this frame (so the room left over is at most
                // what has arrived, and chunks double up to 64 KiB), at most 64 KiB, never past
                // the declared length. Reserved before it is allocated (what a whole frame held
                // is counted already).
                let size = (self.len + data.len())
                    .min(CHUNK_BYTES)
                    .min(self.most.saturating_sub(self.allocated))
                    .max(data.len().min(CHUNK_BYTES));
                let held = self.allocated + size;
                if !self.reservation.grow(held.saturating_sub(self.reservation.bytes())) {
                    return false;
                }
                self.chunks.push(Vec::with_capacity(size));
                self.allocated += size;
                continue;
            }
            let Some(chunk) = self.chunks.last_mut() else { return false };
            let (now, rest) = data.split_at(room.min(data.len()));
            chunk.extend_from_slice(now);
            self.len += now.len();
            data = rest;
        }
        true
    }

    /// The body, in one piece, and its reservation (to hold until the body is no longer needed).
    pub fn finish(mut self) -> (Bytes, Reservation) {
        let body = match self.whole.take() {
            Some(whole) => whole,
            None if self.chunks.len() <= 1 => Bytes::from(self.chunks.pop().unwrap_or_default()),
            None => {
                // Its capacity is the body's length, within the reservation; each chunk is freed
                // once copied, so the two are never both held in full.
                let mut body = Vec::with_capacity(self.len);
                for chunk in self.chunks.drain(..) {
                    body.extend_from_slice(&chunk);
                }
                Bytes::from(body)
            }
        };
        (body, self.reservation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn reservations_never_exceed_the_capacity_and_return_it_when_dropped() {
        // No slice kept: the largest body takes the whole budget.
        let budget = BodyBudget::new(1000, 1000);
        assert_eq!(budget.small_slice(), 0);
        let mut first = budget.reservation(None);
        assert!(first.grow(600));
        let mut second = budget.reservation(None);
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

    #[test]
    fn the_slice_is_an_eighth_of_the_budget_at_least_a_default_body_and_leaves_room_for_the_largest() {
        assert_eq!(BodyBudget::new(256 << 20, 1_000_000).small_slice(), 32 << 20);
        assert_eq!(BodyBudget::new(4_000_000, 1_000_000).small_slice(), 1_000_000);
        assert_eq!(BodyBudget::new(1_500_000, 1_000_000).small_slice(), 500_000);
        assert_eq!(BodyBudget::new(1_000_000, 1_000_000).small_slice(), 0);
    }

    #[test]
    fn large_bodies_cannot_hold_the_slice_kept_for_small_ones() {
        // 8 MB: 1 MB kept for small bodies, 7 MB shared.
        let budget = BodyBudget::new(8_000_000, 1_000_000);
        assert_eq!(budget.small_slice(), 1_000_000);
        // Large bodies (declared or grown past 64 KiB) fill the shared part, and no more.
        let mut large: Vec<_> = (0..7).map(|_| budget.reservation(Some(1_000_000))).collect();
        for reservation in &mut large {
            assert!(reservation.grow(1_000_000));
        }
        let mut declared_large = budget.reservation(Some(1_000_000));
        assert!(!declared_large.grow(1), "a body declaring 1 MB is large from its first byte");
        let mut undeclared = budget.reservation(None);
        assert!(undeclared.grow(SMALL_BODY_BYTES), "small so far: the slice");
        assert!(!undeclared.grow(1), "past 64 KiB it is large, and the shared part is full");
        assert_eq!(undeclared.bytes(), SMALL_BODY_BYTES, "a refused growth keeps what it had");
        drop(undeclared);
        assert_eq!(budget.in_use(), 7_000_000);

        // Small bodies still get in: the slice holds fifteen of 64 KiB (or many more real ones).
        let mut small: Vec<_> = (0..15).map(|_| budget.reservation(Some(SMALL_BODY_BYTES as u64))).collect();
        for reservation in &mut small {
            assert!(reservation.grow(SMALL_BODY_BYTES));
        }
        assert!(!budget.reservation(None).grow(SMALL_BODY_BYTES), "the slice is nearly spent...");
        assert!(budget.reservation(Some(2 * KIB as u64)).grow(2 * KIB), "... but a 2 KiB webhook still fits");
        drop(small);
        assert_eq!(budget.in_use(), 7_000_000);
        drop(large);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_body_growing_past_small_moves_out_of_the_slice_or_is_refused() {
        let budget = BodyBudget::new(8_000_000, 1_000_000);
        // The shared part full but for 100 KiB: an undeclared body's first 64 KiB come from it
        // and then from the slice...
        let mut filler = budget.reservation(None);
        assert!(filler.grow(7_000_000 - 100 * KIB));
        let mut growing = budget.reservation(None);
        assert!(growing.grow(60 * KIB));
        assert!(growing.grow(4 * KIB), "still small: from the shared part (36 KiB left there)");
        let mut other = budget.reservation(None);
        assert!(other.grow(40 * KIB), "from the slice: the shared part has 36 KiB");
        // ... and past 64 KiB it needs all it holds of the slice (none here) plus the rest in
        // the shared part.
        assert!(growing.grow(30 * KIB));
        assert_eq!(growing.bytes(), 94 * KIB);
        // `other` holds 40 KiB of the slice; growing past 64 KiB needs 40 + 30 KiB shared: only
        // 6 KiB are left there.
        assert!(!other.grow(30 * KIB), "no room in the shared part");
        assert_eq!(other.bytes(), 40 * KIB);
        drop(filler);
        assert!(other.grow(30 * KIB), "moved to the shared part");
        assert_eq!(other.bytes(), 70 * KIB);
        assert_eq!(budget.small.available_permits(), 1_000_000, "large bodies hold none of the slice");
        assert_eq!(budget.in_use(), 164 * KIB);
        drop((growing, other));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_body_in_one_frame_is_kept_as_is_and_reserves_its_length() {
        let budget = BodyBudget::new(8_000_000, 1_000_000);
        let frame = Bytes::from(vec![7u8; 3000]);
        let mut buffer = BodyBuffer::new(&budget, Some(3000), 1_000_000);
        assert!(buffer.push(frame.clone()));
        let (body, reservation) = buffer.finish();
        assert_eq!(body.as_ptr(), frame.as_ptr(), "not copied");
        assert_eq!(reservation.bytes(), 3000);
    }

    #[test]
    fn a_body_in_frames_reserves_what_arrived_plus_at_most_one_chunk_never_past_its_declared_length() {
        let budget = BodyBudget::new(8_000_000, 1_000_000);
        // Declared 1 MB: nothing is reserved before a byte arrives.
        let mut buffer = BodyBuffer::new(&budget, Some(1_000_000), 1_000_000);
        assert_eq!(budget.in_use(), 0);
        let mut expected = Vec::new();
        for n in 0..61u8 {
            let frame = vec![n; 16_384];
            expected.extend_from_slice(&frame);
            assert!(buffer.push(Bytes::from(frame)));
            let reserved = buffer.reservation.bytes();
            assert!(reserved >= buffer.allocated, "every allocated byte is reserved");
            let received = buffer.received();
            assert!(
                reserved <= 2 * received && reserved < received + CHUNK_BYTES,
                "{reserved} reserved for {received}"
            );
        }
        let last = vec![61u8; 1_000_000 - expected.len()];
        expected.extend_from_slice(&last);
        assert!(buffer.push(Bytes::from(last)));
        assert_eq!(buffer.reservation.bytes(), 1_000_000, "the last chunk stops at the declared length");
        let (body, reservation) = buffer.finish();
        assert_eq!(&body[..], &expected[..]);
        assert_eq!(reservation.bytes(), 1_000_000);
        drop(reservation);
        assert_eq!(budget.in_use(), 0);

        // A small body in two frames, without a declared length.
        let mut buffer = BodyBuffer::new(&budget, None, 1_000_000);
        assert!(buffer.push(Bytes::from_static(b"{\"id\":")));
        assert_eq!(buffer.reservation.bytes(), 6, "what arrived, not a chunk's worth");
        assert!(buffer.push(Bytes::from_static(b"\"evt_1\"}")));
        assert_eq!(buffer.reservation.bytes(), 6 + 14, "a chunk as large as the body so far");
        let (body, _reservation) = buffer.finish();
        assert_eq!(&body[..], b"{\"id\":\"evt_1\"}");
    }

    #[test]
    fn a_body_the_budget_has_no_room_for_is_refused_part_way() {
        let budget = BodyBudget::new(1_000_000, 1_000_000);
        let mut held = budget.reservation(None);
        assert!(held.grow(900_000));
        let mut buffer = BodyBuffer::new(&budget, Some(200_000), 1_000_000);
        assert!(buffer.push(Bytes::from(vec![0; 60_000])));
        assert!(!buffer.push(Bytes::from(vec![0; 60_000])), "a second chunk does not fit");
        drop(buffer);
        assert_eq!(budget.in_use(), 900_000);
    }
}
