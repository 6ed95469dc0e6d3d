//! [`AsyncIoTimer`]: the `ctx_core::Timer` backend on async-io's reactor timers.
//!
//! # Design
//!
//! Arming needs no executor. `arm` creates an [`async_io::Timer`] for the deadline
//! and polls it once, by hand, with a waker of its own (a [`Slot`]); that poll
//! registers the deadline with async-io's reactor, which async-std and smol both
//! drive (and which async-io's own fallback thread drives when nobody else does).
//! The `Timer` then sits in a sharded map under its key:
//!
//! * **disarm** (the context is done before its deadline) removes the entry and
//!   drops the `Timer`, which deregisters it from the reactor, and drops the
//!   [`Expiry`] at once: the count in [`AsyncIoTimer::armed`] goes down before
//!   `disarm` returns, and the context's memory is not held back.
//! * **expiry**: the reactor calls the slot's waker once the deadline has passed.
//!   The waker takes the `Expiry`, removes the entry, and spawns `Expiry::fire`
//!   on smol's global executor. It never cancels on the reactor's thread: the
//!   reactor wakes wakers while it holds its own lock, and a cancel walks the
//!   whole subtree and wakes its waiters, which must not stall every other timer
//!   and socket of the process. (The user code a cancel sets free runs on
//!   ctx-core's runner threads in any case.)
//!
//! # Races
//!
//! `arm` registers the reactor timer *before* taking the shard lock (the poll
//! may run other timers' waker drops: foreign code), then, under the shard lock,
//! inserts the entry only if the slot still holds its `Expiry`. An expiry that
//! comes at once either took the `Expiry` before that check (no entry is made,
//! and its fire is spawned) or waits for the shard lock and finds the entry.
//! Whoever takes the `Expiry` out of the slot (the waker or `disarm`) owns it, so
//! it is fired at most once; whoever removes the map entry decrements the armed
//! count, so that happens exactly once.
//!
//! Lock order: a shard lock, then a slot's lock (only `arm`'s check takes both);
//! nothing else holds them together, and nothing that could drop a context (and
//! with it, possibly, this timer), no reactor call and no waker runs while a
//! lock is held.

use ctx_core::{Expiry, Timer, TimerKey};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Instant;

/// Independent locks for the armed-timer map, so that threads arming and
/// disarming at once rarely meet.
const SHARDS: usize = 16;
/// Shard maps with fewer slots than this are never shrunk.
const SHRINK_FLOOR: usize = 256;

/// A [`Timer`] backend on async-io's reactor: the timers async-std and smol use.
///
/// Its clock is [`std::time::Instant`]. It works under async-std, under smol,
/// under any other executor, and with no executor at all (a thread blocked in
/// [`Context::wait`](ctx_core::Context::wait) is woken on time too): the reactor is
/// driven by whichever thread runs async-io's `block_on`, or else by async-io's own
/// fallback thread.
///
/// # Where deadlines fire
///
/// The reactor only reports that a deadline passed; the cancel runs as a task on
/// smol's global executor, on one of its threads (`smol-1` … `smol-N`, N being
/// `SMOL_THREADS`, default 1), never on the reactor's thread. User code that the
/// expiry sets free, the context's [`after_func`](ctx_core::Context::after_func)
/// callbacks and the `Drop`s of contexts it released last, runs on ctx-core's
/// runner threads (`ctx-runner`), never in that task.
/// [`after_func_spawn`](crate::after_func_spawn) runs a callback as a task of its
/// own instead.
///
/// So a task that blocks the executor's threads delays `done()` wake-ups;
/// `err()` and `is_done()` see an expired deadline on time regardless (ctx-core
/// checks deadlines exactly). Keep blocking work on `smol::unblock`.
///
/// # Memory
///
/// A disarmed or expired deadline leaves the map at once; a shard map that is
/// less than a quarter full (and holds more than 256 slots) is shrunk to twice its
/// length, so a spike of a million deadlines does not stay allocated after they
/// are gone.
///
/// [`AsyncIoTimer::global`] is the instance behind [`background`](crate::background);
/// [`AsyncIoTimer::new`] makes a separate one, mostly for tests that read
/// [`armed`](AsyncIoTimer::armed) in isolation.
///
/// # Lifetime
///
/// Every context below [`Context::with_timer`](ctx_core::Context::with_timer) holds
/// an `Arc` on its backend, so dropping your own handle while such contexts exist
/// changes nothing: their deadlines still fire, and the backend is freed with the
/// last of them. It never depends on an executor that could shut down under it
/// (async-io's reactor and smol's global executor live as long as the process).
///
/// # Examples
///
/// ```
/// use ctx_async_std::AsyncIoTimer;
/// use ctx_core::Context;
/// use std::time::Duration;
///
/// let timer = AsyncIoTimer::new();
/// let root = Context::background().with_timer(timer.clone());
/// let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
/// assert_eq!(timer.armed(), 1);
/// cancel.cancel();
/// assert_eq!(timer.armed(), 0);
///
/// let (short, _cancel) = root.with_timeout(Duration::from_millis(10));
/// smol::block_on(short.done());
/// assert!(short.err().unwrap().is_timeout());
/// # drop(ctx);
/// ```
pub struct AsyncIoTimer {
    shared: Arc<Shared>,
}

struct Shared {
    shards: [Mutex<HashMap<u64, Armed>>; SHARDS],
    next_key: AtomicU64,
    armed: AtomicUsize,
}

/// One armed deadline: the registered reactor timer and the waker it calls.
struct Armed {
    /// Keeps the deadline registered with the reactor; dropping it deregisters.
    _timer: async_io::Timer,
    slot: Arc<Slot>,
}

/// The waker of one armed deadline.
struct Slot {
    key: u64,
    shared: Weak<Shared>,
    /// Taken, exactly once, by the expiry or by `disarm`.
    expiry: Mutex<Option<Expiry>>,
}

impl AsyncIoTimer {
    /// The process-wide instance (the one [`background`](crate::background) uses).
    pub fn global() -> Arc<AsyncIoTimer> {
        static GLOBAL: OnceLock<Arc<AsyncIoTimer>> = OnceLock::new();
        GLOBAL.get_or_init(AsyncIoTimer::new).clone()
    }

    /// A separate instance, with its own count of armed timers.
    pub fn new() -> Arc<AsyncIoTimer> {
        Arc::new(AsyncIoTimer {
            shared: Arc::new(Shared {
                shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
                next_key: AtomicU64::new(1),
                armed: AtomicUsize::new(0),
            }),
        })
    }

    /// How many deadlines are armed: armed and neither expired nor disarmed.
    ///
    /// A context that is done before its deadline disarms its timer before the
    /// cancel returns, so this is back to 0 as soon as no deadline context is live.
    #[must_use]
    pub fn armed(&self) -> usize {
        // Relaxed: a statistic; the count changes under the shard locks, and callers
        // synchronise with the contexts (cancel returning) by other means.
        self.shared.armed.load(Ordering::Relaxed)
    }
}

impl Timer for AsyncIoTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn is_system_clock(&self) -> bool {
        true
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        // Relaxed: keys only need to be unique.
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            key,
            shared: Arc::downgrade(&self.shared),
            expiry: Mutex::new(Some(expiry)),
        });
        let waker = Waker::from(slot.clone());
        let mut timer = async_io::Timer::at(deadline);
        // Registers the deadline with the reactor, outside every lock of ours: the
        // poll may drain async-io's queue of timer operations on this thread, which
        // drops other timers' wakers, and a waker's `Drop` is foreign code that may
        // cancel a context (a `disarm` here) or arm again (module docs).
        match Pin::new(&mut timer).poll(&mut TaskContext::from_waker(&waker)) {
            Poll::Pending => {
                let mut shard = self.shared.shard(key);
                // The reactor may have called the slot already: then its expiry is
                // taken (and its fire spawned), and there is nothing to keep.
                let live = slot
                    .expiry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some();
                if live {
                    shard.insert(
                        key,
                        Armed {
                            _timer: timer,
                            slot,
                        },
                    );
                    // Relaxed: a statistic, changed under the shard lock (see `armed`).
                    self.shared.armed.fetch_add(1, Ordering::Relaxed);
                }
                drop(shard);
                live.then(|| NonZeroU64::new(key).map(TimerKey::new))
                    .flatten()
            }
            Poll::Ready(_) => {
                // The deadline passed between the caller's clock check and now.
                if let Some(expiry) = slot.take() {
                    spawn_fire(expiry);
                }
                None
            }
        }
    }

    fn disarm(&self, key: TimerKey) {
        let removed = self.shared.remove(key.get().get());
        if let Some(armed) = removed {
            // Relaxed: see `armed`.
            self.shared.armed.fetch_sub(1, Ordering::Relaxed);
            let expiry = armed.slot.take();
            drop(armed);
            drop(expiry);
        }
    }
}

impl fmt::Debug for AsyncIoTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncIoTimer")
            .field("armed", &self.armed())
            .finish_non_exhaustive()
    }
}

// ===== impl Shared =====

impl Shared {
    /// Removes an entry, and gives memory back after a spike: a shard map less
    /// than a quarter full is shrunk to twice its length (amortized O(1): it must
    /// have lost three quarters of its entries since it last grew or shrank). The
    /// entry is returned, to be dropped after the lock (module docs).
    fn remove(&self, key: u64) -> Option<Armed> {
        let mut shard = self.shard(key);
        let removed = shard.remove(&key);
        if shard.capacity() > SHRINK_FLOOR && shard.len() < shard.capacity() / 4 {
            let len = shard.len();
            shard.shrink_to(2 * len);
        }
        removed
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, HashMap<u64, Armed>> {
        // The maps stay consistent even if a holder panicked (no user code runs
        // under these locks), so a poisoned lock is taken over.
        self.shards[(key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// ===== impl Slot =====

impl Slot {
    fn take(&self) -> Option<Expiry> {
        self.expiry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The reactor says the deadline passed.
    fn expire(&self) {
        let Some(expiry) = self.take() else {
            return;
        };
        if let Some(shared) = self.shared.upgrade() {
            let removed = shared.remove(self.key);
            if removed.is_some() {
                // Relaxed: see `AsyncIoTimer::armed`.
                shared.armed.fetch_sub(1, Ordering::Relaxed);
            }
            drop(removed);
        }
        spawn_fire(expiry);
    }
}

impl Wake for Slot {
    fn wake(self: Arc<Self>) {
        self.expire();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.expire();
    }
}

/// Cancels the expired context on smol's global executor (module docs).
fn spawn_fire(expiry: Expiry) {
    smol::spawn(async move {
        // `fire` runs no user code; the guard is for a panicking waker.
        ctx_core::adapter::contain_panic(|| expiry.fire());
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints the per-timer state, for the crate docs' cost note.
    #[test]
    fn sizes() {
        let entry = std::mem::size_of::<(u64, Armed)>();
        let slot = std::mem::size_of::<Slot>() + 2 * std::mem::size_of::<usize>();
        let timer = std::mem::size_of::<async_io::Timer>();
        assert!(entry >= timer);
        println!("map entry {entry} B (timer {timer} B), slot allocation {slot} B");
    }
}
