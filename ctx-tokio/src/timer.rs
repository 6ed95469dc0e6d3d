//! [`TokioTimer`]: a [`Timer`] backend on tokio's own time driver.
//!
//! The design, its cost, where deadlines fire and what happens when the runtime
//! goes away are documented on [`TokioTimer`]; this header adds the
//! synchronization.
//!
//! # Invariants
//!
//! 1. Every deadline armed and not yet disarmed is in the heap of the shard its
//!    key names (or, once `closed` is set, with the hand-over). Disarmed ones may
//!    stay there, dead, until they surface or a sweep drops them.
//! 2. `wake_at` is `WAKING`, or `IDLE` with nothing armed, or a time no later than
//!    every deadline in the shards: whoever makes a deadline earlier than the
//!    published target visible lowers the target to it and then swaps in
//!    `WAKING` (`arm`, through `shards::wake::lower`), and a pass that leaves
//!    work behind stores `WAKING` rather than a target. The backstop thread
//!    relies on this to know when to look (module `backstop`).
//! 3. Passes run one at a time (the `pass` lock), by the driver task or the
//!    backstop thread; never across an `.await`, and never while an expiry fires
//!    (firing may run user code, which may arm or disarm here). A shard's lock is
//!    held for a push, a pass's look at its heap, or a sweep, and no user code
//!    runs under it.
//! 4. Every timer that armed a deadline is watched by the backstop, whatever its
//!    runtime's flavor (`start`), and every swap of `WAKING` over a target pokes
//!    it (`wake_driver`, a pass that leaves work): the runtime may fail to poll
//!    the driver although it is due (a current-thread runtime nobody drives, or a
//!    multi-thread driver stuck in a busy worker's LIFO slot), and then the
//!    backstop fires in its stead within its grace.
//!
//! # Synchronization
//!
//! | atomic / lock | guards | pairing |
//! |---|---|---|
//! | `closed` | whether the driver is gone | stored `SeqCst` by the driver's drop, holding the `pass` and `handoff` locks, before it empties each shard under that shard's lock: an arm reads it under its shard's lock, so it either pushes before the drop empties the shard or sees `closed` and goes to the hand-over; a disarm that sees it waits for the hand-over's lock |
//! | `Shard::next` | no entry of the shard's heap is earlier | `SeqCst` store then `SeqCst` `fetch_min` of `wake_at` in `arm` (both under the shard's lock), against a pass's `SeqCst` store of `wake_at` and re-load of every `next`: either the pass sees the lower `next`, or `arm` sees the target and wakes the driver (invariant 2). The code is ctx-core's `timer::shards::wake`, shared with `StdTimer` and checked by its loom models |
//! | `wake_at` | the deadline the driver sleeps towards; 0 = a wake-up is pending or work is left | see `Shard::next` |
//! | a shard's lock | a shard's heap and arm count (the keys' sequence) | invariant 3 |
//! | `pass` (mutex) | one pass at a time | invariant 3 |
//! | `passes` | progress of the driver and the backstop | `SeqCst`, read by the backstop beside `wake_at` |
//! | `handoff` (mutex) | the map from our keys to the `StdTimer`'s, after the driver is gone | taken after a shard's lock is released, never while one is held, except by the driver's drop (lock order: `pass`, `handoff`, a shard) |
//! | a shard's counters (ctx-core's `timer::shards`), `stats` | statistics and the sweep heuristic | `Relaxed`, `Release`/`Acquire` for `armed` |

mod backstop;

use ctx_core::timer::shards;
use ctx_core::{Context, Expiry, StdTimer, Timer, TimerKey};
use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::num::NonZeroU64;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Notify;
use tokio::time::Sleep;

/// A timer backend on tokio's time driver: contexts below it read tokio's clock
/// (so paused time drives them) and their deadlines fire on the runtime.
///
/// Install it with [`Context::with_timer`], or start from
/// [`background()`](crate::background), which does that for the current runtime.
/// The runtime must have its time driver enabled (`enable_time` or `enable_all`,
/// as `#[tokio::main]` and `#[tokio::test]` do).
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use ctx_tokio::TokioTimer;
/// use std::time::Duration;
///
/// #[tokio::main(flavor = "current_thread", start_paused = true)]
/// async fn main() {
///     let timer = TokioTimer::current();
///     let root = Context::background().with_timer(timer.clone());
///     let (ctx, _cancel) = root.with_timeout(Duration::from_secs(3600));
///     assert_eq!(timer.armed(), 1);
///     ctx.done().await; // paused time auto-advances to the deadline at once
///     assert!(ctx.err().unwrap().is_timeout());
/// }
/// ```
///
/// # Design
///
/// Each `TokioTimer` owns one *driver task* on its runtime (spawned on the first
/// armed deadline; no thread of its own). The deadlines live in a few *shards*,
/// each a binary heap behind a lock of its own; the driver sleeps on one
/// reusable [`tokio::time::Sleep`] until the earliest deadline of all (dropping
/// it while nothing is armed), fires what is due, and sleeps again. Because it
/// sleeps on tokio's timer, `tokio::time::pause()`, `advance()` and auto-advance
/// drive contexts exactly as they drive `sleep`.
///
/// [`arm`](Timer::arm) never waits for the driver: a thread arms into a shard of
/// its own (threads are spread over the shards the first time they arm), so it
/// takes a lock no other thread usually wants and touches no line another
/// thread writes. It wakes the driver only when the new deadline is earlier
/// than the one the driver sleeps towards. [`disarm`](Timer::disarm) is a
/// counter update: the heap entry is left to be dropped lazily, when it
/// surfaces or when a sweep finds it dead. A disarm that sees more disarms
/// since its shard's last sweep than half the shard's entries sweeps the shard
/// itself, so memory stays bounded and the driver never touches a timeout that
/// was canceled before it expired. On a current-thread runtime (whose clock can
/// be paused), a disarm that leaves no timer armed also wakes the driver, so
/// that a paused runtime does not auto-advance to a dead deadline. (`StdTimer`
/// shares the sharded heaps and the lazy disarm; unlike it, this driver fires
/// in budgeted batches as a task.) A wake-up of the driver also pokes the
/// backstop thread (below), so that a driver the runtime does not poll is
/// noticed.
///
/// # Where deadlines fire
///
/// A deadline fires (its context is canceled with `DeadlineExceeded`) on one of
/// three threads:
///
/// * **The runtime**, normally: the driver task fires due deadlines on whichever
///   thread polls it (a worker of a multi-thread runtime, the thread inside
///   `block_on` of a current-thread one). It fires at most 128 per poll (tokio's
///   per-task budget) and yields between batches, so that a burst of deadlines
///   falling due together cannot starve the runtime's other tasks.
/// * **The backstop thread** (`ctx-tokio-timer`, one per process, started with
///   the first deadline armed on any `TokioTimer`), when the runtime does not
///   poll the driver although a deadline is due:
///   * A current-thread runtime runs its tasks and its time driver only while a
///     thread is inside its `block_on`. A root made inside one runtime
///     (`#[tokio::main(flavor = "current_thread")]`, a helper runtime) may be
///     used from another runtime or from plain threads while nobody drives it,
///     or its one thread may be busy.
///   * On a multi-thread runtime, a task that a worker wakes or spawns goes to
///     that worker's LIFO slot, which the other workers cannot steal. An arm on
///     a worker wakes (or first spawns) the driver there; if the task that armed
///     then computes or blocks without yielding, the driver waits for it, while
///     the other workers sit idle. (Waking it from elsewhere is not ours to
///     choose: tokio routes a wake-up by the thread it is made on, and the LIFO
///     slot can be turned off only on the runtime's builder, and only under
///     `tokio_unstable`; see tokio issue #4941.)
///
///   The backstop watches every timer: once a deadline is due by the runtime's
///   clock and the driver has not run for 20 ms, it fires the due deadlines
///   itself (until the driver runs again) and hands the rest back to the
///   driver. So a deadline fires at most about 20 ms late however busy the
///   runtime's threads are. It reads the runtime's clock, so on a paused clock
///   nothing fires until the runtime advances it (as with `tokio::time::sleep`).
///   On a runtime that polls the driver in time, it only wakes about once per
///   deadline the driver sleeps towards, and fires nothing.
/// * **ctx-core's `StdTimer` thread**, after the runtime shut down (see below).
///
/// Firing runs no user code on any of the three: the context's
/// [`after_func`](Context::after_func) callbacks, and the `Drop`s of contexts the
/// expiry released last, run on ctx-core's runner threads (`ctx-runner`), so a
/// callback that blocks or panics never delays another deadline or the runtime.
/// To run a callback as a task on the runtime instead, register it with
/// [`after_func_spawn`](crate::after_func_spawn). What firing does run is the
/// wakers of the tasks that await the context ([`done()`](Context::done)), on
/// the firing thread, as every timer does: executor code, which must not
/// block (tokio's own do not). A panicking waker is caught; one that blocks
/// holds back the deadlines fired after it in the same pass.
///
/// Under paused time this has a consequence: tokio's auto-advance waits for the
/// runtime's tasks, not for ctx-core's runner. Once the runtime is idle, the
/// paused clock may jump on to its next timer (and run what waits for it)
/// before a deadline's `after_func` callback has run, so such a callback (and
/// what it starts: [`after_func_spawn`](crate::after_func_spawn)'s task, a
/// `to_token` token's cancel) may come after things due later than the
/// deadline. Tasks that await [`done()`](Context::done) are not affected: the
/// expiry wakes them inline, on the runtime, so the runtime is not idle until
/// they ran. In paused-time tests that depend on that order, await `done()`.
///
/// # Cost
///
/// Per armed timer: a heap entry (40 bytes), and no task, no `Sleep` and no
/// waker of its own. A disarmed timer's entry stays until it surfaces or its
/// shard is swept: a shard holds at most about twice its armed timers (plus 64).
/// The [`Expiry`] is a weak reference: it keeps the context's allocation (not
/// its values) until the entry goes.
///
/// Memory follows the armed timers back down: a sweep that leaves a heap less
/// than a quarter full (with more than 1024 slots) shrinks it to twice its
/// length, so a spike of a million deadlines does not stay allocated after they
/// are gone.
///
/// An arm that wakes the driver (its deadline is earlier than every other one)
/// also pokes the backstop: a clock read and two atomic operations, and an
/// unpark of the backstop thread when it sleeps longer than its grace (at most
/// about once per grace, since it then looks again within the grace). An arm
/// that does not move the earliest deadline, and every disarm, pay nothing for
/// the backstop.
///
/// [`now`](Timer::now) on a multi-thread runtime reads the system clock, which
/// is that runtime's clock (tokio pauses only current-thread runtimes). On a
/// current-thread runtime, a thread already in the runtime reads its clock
/// directly; any other thread enters the runtime's context for the read (a
/// reference count increment and decrement on the runtime handle), so that it
/// reads *this* runtime's clock on any thread: tokio's `Instant::now` reads the
/// clock of whichever runtime the calling thread is in. Where tokio forbids
/// entering (a thread-local's destructor, a `Drop` that another runtime's
/// `tokio::spawn` runs as it drops a future at shutdown), the system clock
/// stands in; a read never panics.
///
/// Deadlines are kept as nanoseconds after the timer was made: one more than
/// some 584 years after that (only paused time gets there) is never fired by
/// this timer. Reads still see it pass, but its subtree is not walked (its
/// `after_func` callbacks do not run) until something else cancels it.
///
/// # When the runtime goes away
///
/// A runtime that shuts down drops its tasks, the driver among them. The driver's
/// drop hands every timer still armed to ctx-core's process-wide
/// [`StdTimer`], and so do later `arm` calls: deadlines keep
/// firing, on the system clock, and `disarm` is forwarded. [`now`](Timer::now)
/// keeps reading the runtime's clock, so deadlines stay exact for `err()`; a
/// runtime whose clock was paused (tests only) keeps its frozen clock, while the
/// handed-over timers fire by the system clock. Nothing panics or blocks.
pub struct TokioTimer {
    shared: Arc<Shared>,
}

/// Returned by [`TokioTimer::try_current`] and [`try_background`]
/// when called outside a tokio runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRuntime;

/// The context for the current tokio runtime: [`Context::background`] with a
/// [`TokioTimer`] installed, so every deadline below it runs on tokio's timer and
/// follows paused time.
///
/// Create it once (in `main`, or per test) and derive from it: each call makes a
/// new timer, whose driver task starts with its first deadline.
///
/// # Panics
///
/// Panics outside a tokio runtime, with a message saying so; use
/// [`try_background`] to get an error instead.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let root = ctx_tokio::background();
///     let (ctx, _cancel) = root.with_timeout(Duration::from_millis(10));
///     ctx.done().await;
///     assert_eq!(ctx.err(), Some(ctx_core::Error::DeadlineExceeded));
/// }
/// ```
#[track_caller]
#[must_use]
pub fn background() -> Context {
    match try_background() {
        Ok(ctx) => ctx,
        Err(NoRuntime) => panic!(
            "ctx_tokio::background() called outside a tokio runtime; call it from async code \
             running on tokio, inside `Handle::enter`, or use `try_background()`"
        ),
    }
}

/// Like [`background`], but returns [`NoRuntime`] outside a tokio runtime.
///
/// # Errors
///
/// [`NoRuntime`] when the current thread is not inside a tokio runtime.
pub fn try_background() -> Result<Context, NoRuntime> {
    let timer: Arc<dyn Timer> = TokioTimer::try_current()?;
    Ok(Context::background().with_timer(timer))
}

/// `wake_at` value: the driver sleeps with no deadline to wait for (and a
/// shard's `next` when its heap is empty).
const IDLE: u64 = shards::IDLE;
/// `wake_at` value: a wake-up is on its way, or the driver has work left and
/// will run again; nobody else needs to send one.
const WAKING: u64 = 0;
/// The most dead entries one pass drops from the tops of the heaps before it
/// yields.
const DRAIN_BATCH: usize = 4096;
/// The most deadlines one pass fires before it yields: tokio's budget per poll.
const FIRE_BATCH: usize = 128;
/// Keys are a sequence number per shard above this many bits of shard index.
const SHARD_BITS: u32 = 6;
/// The most shards a timer has.
const MAX_SHARDS: usize = 1 << SHARD_BITS;
/// The longest single sleep; the driver re-checks after it (tokio's own far future).
const MAX_SLEEP: Duration = Duration::from_secs(86_400 * 365 * 30);

struct Shared {
    handle: Handle,
    /// The runtime's clock cannot be paused (multi-thread): it is the system
    /// clock, `now` reads that without entering the runtime, and a disarm need
    /// not wake the driver for the sake of auto-advance (see `disarm`). (The
    /// backstop watches every flavor: invariant 4.)
    system_clock: bool,
    /// A power-of-two number of shards (invariant 1).
    shards: Box<[Shard]>,
    /// Nanoseconds after `epoch` the driver sleeps towards, `IDLE` or `WAKING`
    /// (invariant 2).
    wake_at: AtomicU64,
    epoch: Instant,
    notify: Notify,
    /// Held for one pass at a time (invariant 3).
    pass: Mutex<()>,
    /// Passes run, by the driver or the backstop.
    passes: AtomicU64,
    /// The driver task was spawned.
    started: AtomicBool,
    /// The driver task is gone (its runtime shut down): see the module docs.
    closed: AtomicBool,
    /// The `TokioTimer` was dropped: the driver ends without handing anything over.
    stopping: AtomicBool,
    /// After `closed`: our keys to the keys of the `StdTimer` that took them over.
    handoff: Mutex<HashMap<u64, Option<TimerKey>>>,
    stats: Stats,
}

/// One heap of deadlines (the sharded heaps ctx-core's own timer uses too).
type Shard = shards::Shard<Keyed>;

/// What a heap entry holds besides its deadline.
struct Keyed {
    /// The key `arm` returned for it.
    key: u64,
    expiry: Expiry,
}

/// What a pass over the shards left behind.
enum Pass {
    /// Due deadlines (or dead entries) remain: run another pass soon. `poke`:
    /// the pass stored `WAKING` over a target, so the backstop must look within
    /// its grace.
    More { poke: bool },
    /// Nothing left to do before the earliest deadline, if any.
    Sleep(Option<Instant>),
    /// The driver is gone; the hand-over serves the timers now.
    Closed,
}

/// Counters for the crate's tests (see [`TimerStats`]).
#[derive(Default)]
struct Stats {
    fired_on_runtime: AtomicU64,
    fired_by_backstop: AtomicU64,
    driver_polls: AtomicU64,
    fired_this_poll: AtomicUsize,
    max_fired_per_poll: AtomicUsize,
}

/// A snapshot of a [`TokioTimer`]'s internals, for this crate's own tests.
///
/// Semver-exempt: fields may change or go away in any release.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimerStats {
    /// Entries in the deadline heaps, dead ones included.
    pub heap_len: usize,
    /// Slots allocated for the deadline heaps.
    pub heap_capacity: usize,
    /// Deadlines fired by the driver task.
    pub fired_on_runtime: u64,
    /// Deadlines fired by the backstop thread.
    pub fired_by_backstop: u64,
    /// Times the driver task was polled.
    pub driver_polls: u64,
    /// The most deadlines the driver fired within one poll.
    pub max_fired_per_poll: usize,
}

// ===== impl TokioTimer =====

impl TokioTimer {
    /// A timer on the runtime behind `handle`.
    #[must_use]
    pub fn new(handle: Handle) -> Arc<TokioTimer> {
        let epoch = clock_of(&handle);
        // Twice the cores, so that threads rarely share a shard.
        let shards = std::thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .next_power_of_two()
            .min(MAX_SHARDS);
        Arc::new(TokioTimer {
            shared: Arc::new(Shared {
                // Tokio pauses the clocks of current-thread runtimes only.
                system_clock: handle.runtime_flavor() == RuntimeFlavor::MultiThread,
                handle,
                shards: (0..shards).map(|_| Shard::new()).collect(),
                wake_at: AtomicU64::new(IDLE),
                epoch,
                notify: Notify::new(),
                pass: Mutex::new(()),
                passes: AtomicU64::new(0),
                started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                handoff: Mutex::new(HashMap::new()),
                stats: Stats::default(),
            }),
        })
    }

    /// A timer on the current runtime.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime, with a message saying so; use
    /// [`try_current`](TokioTimer::try_current) to get an error instead.
    #[track_caller]
    #[must_use]
    pub fn current() -> Arc<TokioTimer> {
        match TokioTimer::try_current() {
            Ok(timer) => timer,
            Err(NoRuntime) => panic!(
                "ctx_tokio::TokioTimer::current() called outside a tokio runtime; call it from \
                 async code running on tokio, inside `Handle::enter`, or use `try_current()`"
            ),
        }
    }

    /// A timer on the current runtime, or [`NoRuntime`] outside one.
    ///
    /// # Errors
    ///
    /// [`NoRuntime`] when the current thread is not inside a tokio runtime.
    pub fn try_current() -> Result<Arc<TokioTimer>, NoRuntime> {
        Handle::try_current()
            .map(TokioTimer::new)
            .map_err(|_| NoRuntime)
    }

    /// The runtime this timer runs on.
    pub fn handle(&self) -> &Handle {
        &self.shared.handle
    }

    /// How many timers are armed: keys returned by `arm` and not yet disarmed.
    ///
    /// A context that is done (by its deadline, a cancel or its parent) disarms
    /// its timer at once, synchronously, so this is 0 as soon as no deadline
    /// context of this timer is live; the driver task need not run first.
    pub fn armed(&self) -> usize {
        self.shared.armed()
    }

    /// Whether the driver task is gone because its runtime shut down; timers are
    /// then served by ctx-core's `StdTimer` (see [`TokioTimer`]).
    pub fn is_closed(&self) -> bool {
        // Relaxed: a snapshot for diagnostics.
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// A snapshot of the internals, for this crate's tests (semver-exempt).
    #[doc(hidden)]
    pub fn __stats(&self) -> TimerStats {
        let shared = &*self.shared;
        let (mut heap_len, mut heap_capacity) = (0, 0);
        for shard in &*shared.shards {
            let core = shard.lock();
            heap_len += core.heap.len();
            heap_capacity += core.heap.capacity();
        }
        // Relaxed: statistics.
        TimerStats {
            heap_len,
            heap_capacity,
            fired_on_runtime: shared.stats.fired_on_runtime.load(Ordering::Relaxed),
            fired_by_backstop: shared.stats.fired_by_backstop.load(Ordering::Relaxed),
            driver_polls: shared.stats.driver_polls.load(Ordering::Relaxed),
            max_fired_per_poll: shared.stats.max_fired_per_poll.load(Ordering::Relaxed),
        }
    }

    /// Spawns the driver task on the first armed deadline.
    fn start(&self) {
        // Relaxed first check: `swap` below decides.
        if self.shared.started.load(Ordering::Relaxed)
            || self.shared.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // Every flavor (invariant 4): a multi-thread runtime, too, can leave the
        // driver unpolled, in the LIFO slot of a worker that does not yield.
        backstop::watch(&self.shared);
        let driver = Driver {
            shared: self.shared.clone(),
            batch: Vec::new(),
        };
        let shared = self.shared.clone();
        // On a runtime that is shutting down the future is dropped unpolled, and
        // the driver's `Drop` closes the timer.
        drop(self.shared.handle.spawn(async move {
            let mut run = pin!(driver.run());
            poll_fn(|cx| {
                let poll = run.as_mut().poll(cx);
                shared.stats.end_poll();
                poll
            })
            .await;
        }));
    }
}

impl Timer for TokioTimer {
    /// Tokio's clock of this timer's runtime (paused time included), read as a
    /// `std` instant. Where the runtime cannot be entered (a thread whose
    /// thread-locals are being torn down, another runtime's `tokio::spawn`
    /// dropping a future), the system clock stands in.
    fn now(&self) -> Instant {
        self.shared.now()
    }

    /// True on a multi-thread runtime, whose clock is never paused.
    fn is_system_clock(&self) -> bool {
        self.shared.system_clock
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        let shared = &*self.shared;
        let at = shared.nanos(deadline);
        if at == IDLE - 1 && deadline > shared.instant(at) {
            // Beyond the heaps' range (some 584 years after the timer was
            // made): stored at its end, it would fire early there, under paused
            // time that auto-advances. It never fires instead, which the
            // contract allows (late); reads still see the deadline pass.
            drop(expiry);
            return None;
        }
        let (index, mut core) = shards::lock_for_arm(&shared.shards);
        let shard = &shared.shards[index];
        let key = shard.count_arm(&mut core) << SHARD_BITS | index as u64;
        // Relaxed: `closed` is stored before the driver's drop takes each
        // shard's lock, so under ours we see it if the drop missed our entry.
        if shared.closed.load(Ordering::Relaxed) {
            drop(core);
            shared.after_close(|handoff| handoff.arm(key, deadline, expiry));
            return NonZeroU64::new(key).map(TimerKey::new);
        }
        shard.push(
            &mut core,
            shards::Entry {
                at,
                item: Keyed { key, expiry },
            },
        );
        // Against a pass's `settle`: either the pass sees our `next`, or we see
        // its target and wake the driver (invariant 2; `shards::wake`, whose
        // loom models cover both backends).
        let wake = shards::wake::lower(&shard.next, &shared.wake_at, at);
        drop(core);
        self.start();
        if wake {
            shared.wake_driver();
        }
        NonZeroU64::new(key).map(TimerKey::new)
    }

    fn disarm(&self, key: TimerKey) {
        let shared = &*self.shared;
        let key = key.get().get();
        let shard = shared.shard_of(key);
        let wants_sweep = shard.note_disarm();
        // SeqCst: the driver's drop stores `closed` (SeqCst) holding the hand-over
        // lock; once we see it, `after_close` waits for the hand-over to finish.
        if shared.closed.load(Ordering::SeqCst) {
            shared.after_close(|handoff| handoff.disarm(key));
            return;
        }
        if wants_sweep {
            // The read takes no lock and runs no user code; a last reference it
            // held goes to the runner after the shard's lock. Dropping an entry
            // releases a weak reference: at most memory is freed.
            shard.sweep(|item, later| item.expiry.is_done_releasing_into(later));
        }
        // Nothing armed any more while the driver sleeps towards a dead deadline:
        // wake it to drop that sleep, or a paused runtime would auto-advance its
        // clock to it. Only current-thread runtimes can be paused: on the system
        // clock, the disarm hot path skips even the loads.
        // SeqCst: as the sleeper's side of `shards::wake`.
        if !shared.system_clock
            && shared.wake_at.load(Ordering::SeqCst) != IDLE
            && shared.armed() == 0
        {
            shared.wake_driver();
        }
    }
}

impl Drop for TokioTimer {
    fn drop(&mut self) {
        // Relaxed: the notification below is the synchronisation point (the
        // backstop reads it only to stop watching, which is never urgent).
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.notify.notify_one();
    }
}

impl fmt::Debug for TokioTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioTimer")
            .field("armed", &self.armed())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

// ===== impl NoRuntime =====

impl fmt::Display for NoRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not inside a tokio runtime")
    }
}

impl std::error::Error for NoRuntime {}

/// The clock of the runtime behind `handle` (paused time included), read from
/// any thread, never panicking: a read of a context is no place for a panic.
///
/// Tokio's `Instant::now` reads the clock of the runtime the thread is in, so
/// a thread outside ours enters it first. Entering takes tokio's thread-local
/// runtime context mutably, and two places make that panic:
///
/// * a thread whose locals are being torn down (a read from a thread-local's
///   destructor), where a panic aborts the process;
/// * a runtime's `tokio::spawn`, which holds that context shared while it drops
///   the future it was given on a runtime that shut down: a `Drop` in that
///   future that reads a context panicked with "already borrowed".
///
/// So a thread already in our runtime reads its clock without entering it
/// again (the common case, and the second one on our own runtime), and the
/// system clock, which the runtime's follows unless paused, stands in where
/// the runtime cannot be entered.
fn clock_of(handle: &Handle) -> Instant {
    match Handle::try_current() {
        Ok(current) if current.id() == handle.id() => tokio::time::Instant::now().into_std(),
        Err(err) if err.is_thread_local_destroyed() => Instant::now(),
        // No runtime here, or another one: enter ours. Under another runtime's
        // `spawn` dropping a future (above) that still panics; the system
        // clock stands in (the panic hook has printed the message).
        _ => std::panic::catch_unwind(|| {
            let _enter = handle.enter();
            tokio::time::Instant::now().into_std()
        })
        .unwrap_or_else(|_| Instant::now()),
    }
}

// ===== impl Shared =====

impl Shared {
    /// The runtime's clock, from any thread (see `TokioTimer::now`).
    fn now(&self) -> Instant {
        if self.system_clock {
            // A multi-thread runtime's clock is never paused: tokio's reading of
            // it is the system clock's.
            return Instant::now();
        }
        clock_of(&self.handle)
    }

    /// `at` as nanoseconds after `epoch` (exact: instants differ by whole
    /// nanoseconds), above `WAKING` and below `IDLE`.
    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos)
            .unwrap_or(IDLE - 1)
            .clamp(WAKING + 1, IDLE - 1)
    }

    /// The instant `nanos` after `epoch`.
    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn shard_of(&self, key: u64) -> &Shard {
        // The shard index is in the key's low bits.
        let index = usize::try_from(key & ((1 << SHARD_BITS) - 1)).unwrap_or(0);
        &self.shards[index & (self.shards.len() - 1)]
    }

    /// Keys returned by `arm` and not yet disarmed, over all shards.
    fn armed(&self) -> usize {
        shards::armed(&self.shards)
    }

    /// The earliest `next` of all shards.
    fn earliest(&self) -> u64 {
        // SeqCst loads: a pass's half of the pair on `next` (see `arm`).
        shards::earliest(&self.shards)
    }

    /// Claims the wake-up and sends it: to the driver task, and to the backstop,
    /// which fires in the driver's stead if the runtime does not run it soon
    /// (invariant 4: on a multi-thread runtime this wake-up may land in the LIFO
    /// slot of a worker that then does not yield).
    fn wake_driver(&self) {
        // SeqCst: claim the wake-up, so concurrent arms do not all notify; and the
        // first half of the backstop's store-buffering pair (see `backstop::poke`).
        if self.wake_at.swap(WAKING, Ordering::SeqCst) != WAKING {
            self.notify.notify_one();
            backstop::poke();
        }
    }

    /// One pass over the shards: moves due expiries into `batch` (for the caller
    /// to fire outside every lock), drops dead entries from the heaps' tops, and
    /// publishes what to wait for next.
    fn pass(&self, now: Instant, batch: &mut Vec<Expiry>) -> Pass {
        // References the reads of dead entries held: released after every lock
        // (declared before the guards, dropped after them).
        let mut later = shards::Releases::default();
        let _pass = self.pass.lock().unwrap_or_else(PoisonError::into_inner);
        // Relaxed: `closed` is stored under this lock (`Driver::drop`).
        if self.closed.load(Ordering::Relaxed) {
            return Pass::Closed;
        }
        let now = self.nanos(now);
        let mut more = false;
        let mut dropped = 0;
        for shard in &*self.shards {
            // A shard being swept (by a disarming thread, in time proportional to
            // its length) is not waited for: the runtime's thread moves on, and
            // comes back soon if the shard has something due.
            let Some(mut core) = shard.try_lock() else {
                // SeqCst: as in `earliest`.
                more |= shard.next.load(Ordering::SeqCst) <= now;
                continue;
            };
            while let Some(entry) = core.heap.peek() {
                if entry.at <= now {
                    if batch.len() == FIRE_BATCH {
                        more = true;
                        break;
                    }
                    batch.push(core.heap.pop().expect("peeked").item.expiry);
                } else if entry.item.expiry.is_done_releasing_into(&mut later) {
                    // Dead: so that the driver never sleeps towards (and a paused
                    // runtime never auto-advances to) a deadline nobody waits for.
                    if dropped == DRAIN_BATCH {
                        more = true;
                        break;
                    }
                    dropped += 1;
                    core.heap.pop();
                } else {
                    break;
                }
            }
            core.shrink_if_sparse();
            shard.publish(&core);
        }
        if !more {
            let target = self.earliest();
            // Publish the target, then re-check the shards (see `arm`).
            if shards::wake::settle(&self.wake_at, || self.earliest(), target) {
                return Pass::Sleep((target != IDLE).then(|| self.instant(target)));
            }
        }
        // Work is left: keep invariant 2 with `WAKING` rather than a target that
        // an arm may undercut.
        // SeqCst: as in `wake_driver`.
        let previous = self.wake_at.swap(WAKING, Ordering::SeqCst);
        Pass::More {
            poke: previous != WAKING,
        }
    }

    /// Runs passes in the driver's stead until nothing is left to do now, or
    /// until the driver shows signs of life (the backstop's side; see module
    /// `backstop`).
    fn take_over(&self, batch: &mut Vec<Expiry>) {
        // SeqCst: read beside `wake_at` (module `backstop`).
        let mut ours = self.passes.load(Ordering::SeqCst);
        loop {
            let pass = self.pass(self.now(), batch);
            let fired = fire(batch);
            // Relaxed: a statistic.
            self.stats
                .fired_by_backstop
                .fetch_add(fired as u64, Ordering::Relaxed);
            // SeqCst: as above.
            let before = self.passes.fetch_add(1, Ordering::SeqCst);
            if !matches!(pass, Pass::More { .. }) || before != ours {
                // Done, or the driver ran a pass meanwhile: it is being driven
                // again and finishes the work itself.
                break;
            }
            ours = before + 1;
        }
        // When its runtime runs again, the driver re-reads the state and resets
        // its sleep.
        self.notify.notify_one();
    }

    /// Runs `f` on the hand-over state once the driver is gone (after its drop
    /// finished handing over what the shards held).
    fn after_close(&self, f: impl FnOnce(&mut Handoff<'_>)) {
        let mut map = self.handoff.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut Handoff { map: &mut map });
    }

    /// The driver is gone or no longer wanted: the backstop stops watching.
    fn is_finished(&self) -> bool {
        // Relaxed: a late answer only delays the backstop's clean-up.
        self.closed.load(Ordering::Relaxed) || self.stopping.load(Ordering::Relaxed)
    }
}

/// Fires a batch of expiries; returns how many.
fn fire(batch: &mut Vec<Expiry>) -> usize {
    let fired = batch.len();
    for expiry in batch.drain(..) {
        // A panic in user code run by the cancel (an `after_func` callback) must
        // not take the driver or the backstop down with it; ctx-core has already
        // finished the cancel when it resumes the panic.
        ctx_core::adapter::contain_panic(|| expiry.fire());
    }
    fired
}

// ===== impl Stats =====

impl Stats {
    /// Called after each poll of the driver task.
    fn end_poll(&self) {
        // Relaxed: statistics, written by the driver task only.
        self.driver_polls.fetch_add(1, Ordering::Relaxed);
        let fired = self.fired_this_poll.swap(0, Ordering::Relaxed);
        self.max_fired_per_poll.fetch_max(fired, Ordering::Relaxed);
    }
}

// ===== the hand-over =====

/// The state after the driver is gone: our keys, handed over to the `StdTimer`.
///
/// Only `StdTimer::arm`/`disarm` are called under the lock: they never call back
/// into a context, so no cancel (and no `disarm` on us) can run while it is held.
struct Handoff<'a> {
    map: &'a mut HashMap<u64, Option<TimerKey>>,
}

impl Handoff<'_> {
    fn arm(&mut self, key: u64, at: Instant, expiry: Expiry) {
        let theirs = StdTimer::global().arm(at, expiry);
        self.map.insert(key, theirs);
    }

    fn disarm(&mut self, key: u64) {
        if let Some(Some(theirs)) = self.map.remove(&key) {
            StdTimer::global().disarm(theirs);
        }
        if shards::shrinkable(self.map.capacity(), self.map.len()) {
            self.map.shrink_to(2 * self.map.len());
        }
    }
}

// ===== the driver task =====

/// The driver task's state. Its `Drop` closes the timer (module docs).
struct Driver {
    shared: Arc<Shared>,
    /// Expiries taken out of the shards by the current pass, fired outside the
    /// locks.
    batch: Vec<Expiry>,
}

impl Driver {
    async fn run(mut self) {
        // Dropped while there is nothing to wait for: a registered `Sleep`, even
        // one nobody polls, is a timer that a paused runtime auto-advances to.
        let mut sleep: Option<Pin<Box<Sleep>>> = None;
        loop {
            // Relaxed: set before `TokioTimer::drop` notifies us.
            if self.shared.stopping.load(Ordering::Relaxed) {
                return;
            }
            let now = tokio::time::Instant::now().into_std();
            let pass = self.shared.pass(now, &mut self.batch);
            let fired = fire(&mut self.batch);
            // Relaxed: statistics.
            let stats = &self.shared.stats;
            stats
                .fired_on_runtime
                .fetch_add(fired as u64, Ordering::Relaxed);
            stats.fired_this_poll.fetch_add(fired, Ordering::Relaxed);
            // SeqCst: read by the backstop beside `wake_at`.
            self.shared.passes.fetch_add(1, Ordering::SeqCst);
            let next = match pass {
                Pass::Sleep(next) => next,
                Pass::More { poke } => {
                    if poke {
                        backstop::poke();
                    }
                    // More work is due. Yield first: a driver that never returns
                    // `Pending` under a burst of deadlines would starve the
                    // runtime's other tasks and block its shutdown.
                    tokio::task::yield_now().await;
                    continue;
                }
                Pass::Closed => {
                    // `closed` is set only by our own drop.
                    debug_assert!(false, "a live driver found its timer closed");
                    return;
                }
            };
            match next {
                Some(at) => {
                    let capped = now.checked_add(MAX_SLEEP).map_or(at, |cap| at.min(cap));
                    let at = tokio::time::Instant::from_std(capped);
                    match &mut sleep {
                        Some(sleep) => sleep.as_mut().reset(at),
                        None => sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
                None => sleep = None,
            }
            let mut notified = pin!(self.shared.notify.notified());
            poll_fn(|cx| {
                if notified.as_mut().poll(cx).is_ready()
                    || sleep
                        .as_mut()
                        .is_some_and(|s| s.as_mut().poll(cx).is_ready())
                {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
    }
}

impl Drop for Driver {
    /// The driver is gone: its runtime shut down (or the timer was dropped, or a
    /// runtime without a time driver made `sleep` panic). Hand every live timer
    /// over to the `StdTimer`, then mark the timer closed.
    fn drop(&mut self) {
        let shared = self.shared.clone();
        // Relaxed: set before the notification that ended the loop (same task).
        let stopping = shared.stopping.load(Ordering::Relaxed);
        // (The batch is empty: the driver fires it before it awaits anything.)
        debug_assert!(self.batch.is_empty());
        // References the reads below held: released after every lock.
        let mut later = shards::Releases::default();
        // Lock order: the pass, the hand-over, then each shard (arms take a
        // shard's lock and, after releasing it, the hand-over's).
        let _pass = shared.pass.lock().unwrap_or_else(PoisonError::into_inner);
        let mut map = shared
            .handoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // SeqCst: see `disarm`. Stored before any shard's lock is taken below: an
        // arm that takes a shard's lock after us sees it (module docs).
        shared.closed.store(true, Ordering::SeqCst);
        let mut handoff = Handoff { map: &mut map };
        for shard in &*shared.shards {
            let heap = {
                let mut core = shard.lock();
                let heap = std::mem::take(&mut core.heap);
                shard.publish(&core);
                heap
            };
            // Timers whose context is done or gone are forgotten. The read runs
            // no user code and takes no lock, so the locks may stay held.
            for entry in heap.into_vec() {
                let Keyed { key, expiry } = entry.item;
                if !stopping && !expiry.is_done_releasing_into(&mut later) {
                    handoff.arm(key, expiry.deadline(), expiry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Pins the per-timer cost documented on `TokioTimer`.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn per_timer_state_sizes() {
        assert_eq!(size_of::<Expiry>(), 24);
        assert_eq!(size_of::<shards::Entry<Keyed>>(), 40);
    }

    #[test]
    fn keys_name_their_shard() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let timer = TokioTimer::new(runtime.handle().clone());
        let shards = timer.shared.shards.len();
        for index in 0..shards {
            let key = 12_345 << SHARD_BITS | index as u64;
            assert!(std::ptr::eq(
                timer.shared.shard_of(key),
                &timer.shared.shards[index]
            ));
        }
    }
}
