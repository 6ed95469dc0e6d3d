//! The sharded deadline heaps of the built-in backends, [`StdTimer`] and
//! ctx-tokio's `TokioTimer` (public for that crate only, and hidden from the
//! docs: not an API).
//!
//! A backend keeps its deadlines in a few [`Shard`]s, each a binary heap behind
//! a mutex of its own, on cache lines of its own. A thread arms into the shard
//! [`thread_index`] gives it, and moves to another when it finds that one's
//! lock taken ([`lock_for_arm`]), so arming takes a lock no other thread
//! usually wants and touches no line another thread writes. (Deadline nodes
//! borrow their backend rather than count a reference on it, so the
//! backend's reference count is no such line either.)
//!
//! Disarming is a counter update ([`Shard::note_disarm`]): the dead entry stays
//! in its heap, holding only a weak reference, until it surfaces or a sweep
//! drops it. A disarm that finds more disarms since the shard's last sweep than
//! half its heap sweeps it ([`Shard::sweep`]), so a shard holds at most about
//! twice its armed timers and each sweep is paid for by the disarms before it.
//! A sweep that leaves a heap less than a quarter full shrinks it.
//!
//! What the backend adds: its clock (deadlines are nanoseconds after an epoch
//! of its own), how it sleeps and wakes (each shard's [`next`](Shard::next) is
//! the earliest deadline it may hold, for the backend's own wake-up protocol),
//! and its keys.
//!
//! [`StdTimer`]: super::StdTimer

pub mod wake;

use crate::sync::unmodeled::{AtomicU64, AtomicUsize, Ordering};
use crate::tree::node::NodeRef;
use crate::tree::work::RunnerReleases;
use std::cell::Cell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

/// A shard's [`next`](Shard::next) (and a backend's wake-up target) when
/// nothing is due ever.
pub const IDLE: u64 = u64::MAX;
/// Heaps shorter than this are never swept: sweeping them would cost more than
/// the few dead entries do.
pub const SWEEP_FLOOR: usize = 64;
/// Heaps (and a backend's other collections) with fewer slots than this are
/// never shrunk.
pub const SHRINK_FLOOR: usize = 1024;

/// An armed deadline `at` (nanoseconds after the backend's epoch) and what the
/// backend keeps with it, ordered so that `BinaryHeap` (a max-heap) yields the
/// earliest first.
#[derive(Debug)]
pub struct Entry<T> {
    /// The deadline, in nanoseconds after the backend's epoch.
    pub at: u64,
    /// The backend's data (an `Expiry`, and maybe a key).
    pub item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Entry<T>) -> bool {
        self.at == other.at
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Entry<T>) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Entry<T>) -> CmpOrdering {
        other.at.cmp(&self.at)
    }
}

/// What a shard's lock guards.
#[derive(Debug)]
pub struct Core<T> {
    /// The deadlines, dead ones included until they surface or a sweep.
    pub heap: BinaryHeap<Entry<T>>,
    /// Arms into this shard, ever (wrapping): `arms` less the shard's disarms
    /// is what is armed, and a backend may number its keys with it.
    pub arms: u64,
}

impl<T> Core<T> {
    /// Gives memory back after a spike: a heap left less than a quarter full is
    /// shrunk to twice its length (amortized O(1): it lost three quarters of
    /// its entries since it last grew or shrank). For a sweep, and for a
    /// backend's pass once it popped what came due: a spike of deadlines that
    /// fire together leaves a heap no disarm sweeps (too short to), which
    /// would keep the spike's slots for good.
    pub fn shrink_if_sparse(&mut self) {
        let (len, capacity) = (self.heap.len(), self.heap.capacity());
        if shrinkable(capacity, len) {
            self.heap.shrink_to(2 * len);
        }
    }
}

/// One heap of deadlines, on cache lines of its own so that threads arming into
/// different shards do not contend.
#[repr(align(128))]
#[derive(Debug)]
pub struct Shard<T> {
    core: Mutex<Core<T>>,
    /// Nanoseconds after the backend's epoch: no entry in the heap is earlier
    /// ([`IDLE`] when the heap is empty). Lowered by the backend's arm, set
    /// exactly by [`publish`](Shard::publish). Its orderings belong to the
    /// backend's wake-up protocol.
    pub next: AtomicU64,
    /// [`Core::arms`], published for [`armed`](Shard::armed) to read without
    /// the lock.
    arms: AtomicUsize,
    /// Disarms of keys of this shard, ever (wrapping).
    disarms: AtomicUsize,
    /// `disarms` when the heap was last swept.
    swept_at: AtomicUsize,
    /// The heap's length, for disarms to decide on a sweep without the lock.
    len: AtomicUsize,
}

impl<T> Default for Shard<T> {
    fn default() -> Shard<T> {
        Shard::new()
    }
}

impl<T> Shard<T> {
    /// An empty shard.
    pub fn new() -> Shard<T> {
        Shard {
            core: Mutex::new(Core {
                heap: BinaryHeap::new(),
                arms: 0,
            }),
            next: AtomicU64::new(IDLE),
            arms: AtomicUsize::new(0),
            disarms: AtomicUsize::new(0),
            swept_at: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
        }
    }

    /// The shard's lock.
    pub fn lock(&self) -> MutexGuard<'_, Core<T>> {
        // No user code runs under this lock and the heap is consistent between
        // its operations, so a holder's panic leaves nothing half-done.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, unless another thread holds it for longer than a few spins
    /// (a sweep, usually): the backend looks again a little later.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Core<T>>> {
        for _ in 0..64 {
            match self.core.try_lock() {
                Ok(core) => return Some(core),
                Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        None
    }

    /// Counts an arm into this shard (under the lock); returns the count, which
    /// a backend may use to number its keys.
    pub fn count_arm(&self, core: &mut Core<T>) -> u64 {
        core.arms = core.arms.wrapping_add(1);
        // Release: see `armed`. A store, not a read-modify-write: only the
        // lock's holder writes it.
        self.arms.store(core.arms as usize, Ordering::Release);
        core.arms
    }

    /// Pushes an entry (under the lock).
    pub fn push(&self, core: &mut Core<T>, entry: Entry<T>) {
        core.heap.push(entry);
        // Relaxed: see `wants_sweep`.
        self.len.store(core.heap.len(), Ordering::Relaxed);
    }

    /// Counts a disarm of a key of this shard; true if a sweep is now worth it
    /// ([`sweep`](Shard::sweep)).
    pub fn note_disarm(&self) -> bool {
        // Release: see `armed`; otherwise a counter and a heuristic, as the
        // entry itself stays in the heap until it surfaces or a sweep drops it
        // (module docs). Wrapping: a key disarmed twice (a broken caller) skews
        // the count, no more.
        self.disarms.fetch_add(1, Ordering::Release);
        self.wants_sweep()
    }

    /// How many deadlines are armed here: armed and not disarmed (a statistic;
    /// callers synchronise with the contexts by other means).
    pub fn armed(&self) -> usize {
        // Acquire, and the disarms first: a key's disarm follows its arm, so
        // the arms published before every disarm this load sees are seen too,
        // and the difference is never negative. Takes no lock.
        let disarms = self.disarms.load(Ordering::Acquire);
        self.arms.load(Ordering::Acquire).wrapping_sub(disarms)
    }

    /// Whether more keys were disarmed since the last sweep than half the heap
    /// holds: then a sweep pays for itself.
    fn wants_sweep(&self) -> bool {
        // Relaxed: a heuristic; a sweep a little early or late is harmless.
        let len = self.len.load(Ordering::Relaxed);
        let stale = self
            .disarms
            .load(Ordering::Relaxed)
            .wrapping_sub(self.swept_at.load(Ordering::Relaxed));
        len >= SWEEP_FLOOR && stale > len / 2
    }

    /// Drops the entries `dead` says are dead, if a sweep is still wanted, and
    /// gives memory back after a spike.
    ///
    /// `dead` runs under the shard's lock: it must take no lock of the backend
    /// and run no user code. What it puts into the [`Releases`] it is given is
    /// released after the lock (`Expiry::is_done_releasing_into` qualifies).
    pub fn sweep(&self, mut dead: impl FnMut(&T, &mut Releases) -> bool) {
        // Declared before the guard: dropped after it.
        let mut later = Releases::default();
        let mut core = self.lock();
        if !self.wants_sweep() {
            return;
        }
        // Relaxed: see `wants_sweep`. Read before the sweep: a disarm counted
        // meanwhile only makes the next sweep a little earlier.
        self.swept_at
            .store(self.disarms.load(Ordering::Relaxed), Ordering::Relaxed);
        core.heap.retain(|entry| !dead(&entry.item, &mut later));
        core.shrink_if_sparse();
        self.publish(&core);
    }

    /// After the heap changed under the lock: the exact `next` and length.
    pub fn publish(&self, core: &Core<T>) {
        let next = core.heap.peek().map_or(IDLE, |entry| entry.at);
        // SeqCst: raising `next` to the heap's top is always allowed (nothing in
        // the heap is earlier); a backend re-reads it before it sleeps.
        self.next.store(next, Ordering::SeqCst);
        // Relaxed: see `wants_sweep`.
        self.len.store(core.heap.len(), Ordering::Relaxed);
    }
}

/// References on contexts that a backend read under its lock
/// ([`Expiry::is_done_releasing_into`](crate::Expiry::is_done_releasing_into)),
/// released when this is dropped: drop it after the lock. A last reference's
/// drop goes to ctx-core's runner then, which takes the runner's queue lock
/// and may start a thread; under a backend's lock that would hold back every
/// arm of the shard.
#[derive(Debug, Default)]
pub struct Releases(RunnerReleases);

impl Releases {
    pub(crate) fn release(&mut self, node: NodeRef) {
        self.0.release(node);
    }
}

/// The earliest [`next`](Shard::next) of `shards` ([`IDLE`] if none), each
/// loaded `SeqCst`: the sleeper's half of the pair in [`wake`] (its look before
/// it settles, and the re-check in [`wake::settle`]).
pub fn earliest<T>(shards: &[Shard<T>]) -> u64 {
    shards
        .iter()
        // SeqCst: the sleeper's half of the pair on `next` (`wake`).
        .map(|shard| shard.next.load(Ordering::SeqCst))
        .min()
        .unwrap_or(IDLE)
}

/// How many deadlines `shards` hold armed and not disarmed, over all of them
/// (a statistic, as [`Shard::armed`]; each shard's count never goes negative,
/// and the sum wraps as the counters do).
pub fn armed<T>(shards: &[Shard<T>]) -> usize {
    shards.iter().map(Shard::armed).fold(0, usize::wrapping_add)
}

/// Whether a collection with `capacity` slots and `len` entries should shrink
/// (to twice its length).
pub fn shrinkable(capacity: usize, len: usize) -> bool {
    capacity > SHRINK_FLOOR && len < capacity / 4
}

thread_local! {
    /// This thread's shard index ([`thread_index`]); `usize::MAX` until its
    /// first arm.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The shard a thread arms into (modulo the shard count): threads take the next
/// index the first time they arm (with any timer), so that a few threads get
/// shards of their own, and move on when they find theirs busy
/// ([`lock_for_arm`]).
pub fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    INDEX
        .try_with(|index| {
            if index.get() == usize::MAX {
                // Relaxed: the indices only need to be spread out.
                index.set(NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1));
            }
            index.get()
        })
        // A thread arming from a thread-local's destructor shares shard 0.
        .unwrap_or(0)
}

/// Locks the shard this thread arms into, and says which one it is.
///
/// Threads get their indices in the order they first arm, so two threads
/// that arm all the time may share a shard for their whole lives (which pairs
/// share depends on what other threads armed first, run to run) and contend
/// for its lock at every arm. So a thread that finds its shard's lock taken
/// moves to the next shard, for this arm and the later ones: threads that
/// keep meeting spread out over the shards. (The driver's passes and sweeps
/// also hold shard locks briefly; a thread that moves because of them loses
/// nothing.)
pub fn lock_for_arm<T>(shards: &[Shard<T>]) -> (usize, MutexGuard<'_, Core<T>>) {
    debug_assert!(shards.len().is_power_of_two());
    let mask = shards.len() - 1;
    let own = thread_index();
    let index = own & mask;
    match shards[index].core.try_lock() {
        Ok(core) => return (index, core),
        Err(TryLockError::Poisoned(poisoned)) => return (index, poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => {}
    }
    let moved = own.wrapping_add(1) & (usize::MAX >> 1);
    // A thread whose locals are gone stays where it is (shard 0).
    let _ = INDEX.try_with(|index| index.set(moved));
    let index = moved & mask;
    (index, shards[index].lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_rule() {
        assert!(!shrinkable(SHRINK_FLOOR, 0), "small ones stay");
        assert!(shrinkable(4 * SHRINK_FLOOR, SHRINK_FLOOR - 1));
        assert!(!shrinkable(4 * SHRINK_FLOOR, SHRINK_FLOOR));
    }

    #[test]
    fn entries_come_out_earliest_first() {
        let mut heap = BinaryHeap::new();
        for at in [30, 10, 20] {
            heap.push(Entry { at, item: () });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|e| e.at)).collect();
        assert_eq!(order, [10, 20, 30]);
    }

    #[test]
    fn disarms_count_towards_a_sweep_and_the_sweep_keeps_the_live() {
        let shard = Shard::<bool>::new();
        {
            let mut core = shard.lock();
            for at in 0..2 * SWEEP_FLOOR as u64 {
                shard.count_arm(&mut core);
                // Odd deadlines stay alive.
                shard.push(
                    &mut core,
                    Entry {
                        at,
                        item: at % 2 == 1,
                    },
                );
            }
            shard.publish(&core);
        }
        assert_eq!(shard.armed(), 2 * SWEEP_FLOOR);
        let mut wanted = false;
        for _ in 0..SWEEP_FLOOR + 1 {
            wanted = shard.note_disarm();
        }
        assert!(wanted, "more disarms than half the heap");
        shard.sweep(|alive, _| !alive);
        let core = shard.lock();
        assert_eq!(core.heap.len(), SWEEP_FLOOR);
        assert!(core.heap.iter().all(|entry| entry.item));
        assert_eq!(
            shard.next.load(Ordering::Relaxed),
            1,
            "the earliest live one"
        );
        drop(core);
        assert!(!shard.note_disarm(), "swept: the count starts again");
    }
}
