//! The wake-up protocol between an arm and the backend's sleeper (`StdTimer`'s
//! thread, `TokioTimer`'s driver), written once over any atomic word so that a
//! loom model runs this very code.
//!
//! Each shard publishes `next`, the earliest deadline its heap may hold; the
//! sleeper publishes `wake_at`, the target it sleeps towards. An arm that lowers
//! a shard's `next` below the target must wake the sleeper, and a sleeper that
//! publishes a target must not miss an arm that lowered a `next` meanwhile. Both
//! halves are a store then a load on the other side's word, all `SeqCst` (a
//! store-buffering pair): at least one side sees the other's store.

use crate::sync::unmodeled::{AtomicU64, Ordering};

/// The atomic operations the protocol uses.
pub trait Word {
    /// An atomic load.
    fn load(&self, order: Ordering) -> u64;
    /// An atomic store.
    fn store(&self, value: u64, order: Ordering);
    /// An atomic minimum; returns the previous value.
    fn fetch_min(&self, value: u64, order: Ordering) -> u64;
    /// Between the two halves of a Dekker pair (loom's models need a point
    /// there; real atomics need nothing).
    fn dekker_point();
}

impl Word for AtomicU64 {
    #[inline]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    #[inline]
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order);
    }
    #[inline]
    fn fetch_min(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_min(self, value, order)
    }
    #[inline(always)]
    fn dekker_point() {}
}

/// An arm's side, under the lock of the shard whose earliest deadline is
/// `next`, after pushing a deadline `at`: lowers `next` to `at` if that is
/// earlier, and then the sleeper's target `wake_at`. True if the sleeper must
/// be woken: it may sleep towards a later target than `at`.
///
/// `fetch_min` leaves the lower target for the arms that follow, so that only
/// the first of several arms of one early deadline wakes the sleeper. A
/// backend whose `wake_at` has a "wake-up already on its way" value uses 0 for
/// it: no `fetch_min` lowers it, so no arm wakes again.
#[inline]
pub fn lower<W: Word>(next: &W, wake_at: &W, at: u64) -> bool {
    // Relaxed: `next` is only written under the shard's lock, held here.
    if at >= next.load(Ordering::Relaxed) {
        // The sleeper wakes by `next` anyway, and takes this one then.
        return false;
    }
    // SeqCst: the arm's half of the pair: its `next`, then the sleeper's
    // target. Either the sleeper's re-check in `settle` sees this `next`, or
    // this reads the target it published and wakes it.
    next.store(at, Ordering::SeqCst);
    W::dekker_point();
    // SeqCst: the load half of the pair. A target no later than `at` (or a
    // wake-up on its way, 0) needs no write: only a later one is lowered.
    at < wake_at.load(Ordering::SeqCst) && at < wake_at.fetch_min(at, Ordering::SeqCst)
}

/// The sleeper's side, before it sleeps: publishes `target` (the earliest
/// `next` it read), then re-reads the earliest `next` of all shards (each
/// loaded `SeqCst`). True if it may sleep towards `target`; false if a shard
/// meanwhile holds an earlier deadline (look again).
#[inline]
pub fn settle<W: Word>(wake_at: &W, earliest: impl Fn() -> u64, target: u64) -> bool {
    // SeqCst: the sleeper's half of the pair (see `lower`).
    wake_at.store(target, Ordering::SeqCst);
    W::dekker_point();
    earliest() >= target
}
