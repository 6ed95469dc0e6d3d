//! [`TokioTimer`]: a [`Timer`] backend on tokio's own time driver.
//!
//! The design, its cost, where deadlines fire and what happens when the runtime
//! goes away are documented on [`TokioTimer`]; this header adds the
//! synchronization.
//!
//! # Invariants
//!
//! 1. Every deadline armed and not yet disarmed is either in `core` or in the
//!    command queue (or, once `closed` is set, with the hand-over).
//! 2. `wake_at` is `WAKING`, or `IDLE` with nothing armed, or a time no later than
//!    every deadline in `core` and in the queue: whoever makes a deadline earlier
//!    than the published target visible swaps in `WAKING` (`arm`), and a pass that
//!    leaves work behind stores `WAKING` rather than a target. The backstop thread
//!    relies on this to know when to look (module `backstop`).
//! 3. `core` is locked for one pass at a time, by the driver task or the backstop
//!    thread; never across an `.await`, and never while an expiry fires (firing
//!    may run user code, which may arm or disarm here).
//!
//! # Synchronization
//!
//! | atomic / lock | guards | pairing |
//! |---|---|---|
//! | `closed` | whether the driver is gone | `SeqCst` store + fence in the driver's drop vs. push + fence + load in `arm`/`disarm` (store buffering): either the driver's drop sees the command, or the caller sees `closed` and applies it itself |
//! | `wake_at` | the deadline the driver sleeps towards; 0 = a wake-up is pending or work is left | `SeqCst` store + fence + queue check in a pass vs. push + load in `arm`: either the pass sees the command, or `arm` sees the target and wakes the driver (invariant 2) |
//! | `core` (mutex) | the heap and the live map | held for one pass (invariant 3) |
//! | `passes` | progress of the driver and the backstop | `SeqCst`, read by the backstop beside `wake_at` |
//! | `handoff` (mutex) | the map from our keys to the `StdTimer`'s, after the driver is gone | taken only once `closed` is set, and never together with `core` held by anyone but the driver's drop |
//! | `armed`, `pending`, `next_key`, `stats` | statistics and unique keys | `Relaxed` |

mod backstop;

use crossbeam_queue::SegQueue;
use ctx_core::{Context, Expiry, StdTimer, Timer, TimerKey};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::poll_fn;
use std::num::NonZeroU64;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
/// armed deadline; no thread of its own). The driver keeps a binary heap of
/// deadlines and a map from key to [`Expiry`], sleeps on one reusable
/// [`tokio::time::Sleep`] until the earliest deadline (dropping it while nothing
/// is armed), fires what is due, and sleeps again. Because it sleeps on tokio's
/// timer, `tokio::time::pause()`, `advance()` and auto-advance drive contexts
/// exactly as they drive `sleep`.
///
/// [`arm`](Timer::arm) and [`disarm`](Timer::disarm) never take a lock and never
/// wait for the driver: they push a command onto a lock-free queue. `arm` wakes the
/// driver only when the new deadline is earlier than the one it sleeps towards;
/// `disarm` decrements [`armed`](TokioTimer::armed) at once and leaves the heap
/// entry to be dropped lazily, waking the driver only when no timer is left armed
/// (so that a paused runtime does not auto-advance to a dead deadline) or when many
/// commands are pending (so that memory stays bounded). (`StdTimer` shares the
/// lock-free arm and the lazy disarm; unlike it, this driver keeps a key map and
/// fires in budgeted batches as a task.)
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
///   the first deadline armed on a current-thread runtime): a current-thread
///   runtime runs its tasks and its time driver only while a thread is inside its
///   `block_on`. A root made inside one runtime (`#[tokio::main(flavor =
///   "current_thread")]`, a helper runtime) may be used from another runtime or
///   from plain threads while nobody drives it, or its one thread may be busy. The
///   backstop watches such timers: once a deadline is due by the runtime's clock
///   and the driver has not run for 20 ms, it fires the due deadlines itself
///   (until the driver runs again) and hands the rest back to the driver. It
///   reads the runtime's clock, so on a paused clock nothing fires until the
///   runtime advances it (as with `tokio::time::sleep`). Multi-thread runtimes
///   need no backstop: their workers drive the timer whenever they are idle.
/// * **ctx-core's `StdTimer` thread**, after the runtime shut down (see below).
///
/// Firing runs no user code on any of the three: the context's
/// [`after_func`](Context::after_func) callbacks, and the `Drop`s of contexts the
/// expiry released last, run on ctx-core's runner threads (`ctx-runner`), so a
/// callback that blocks or panics never delays another deadline or the runtime.
/// To run a callback as a task on the runtime instead, register it with
/// [`after_func_spawn`](crate::after_func_spawn).
///
/// # Cost
///
/// Per armed timer: one queued command until the driver runs (48 bytes in a
/// 56-byte queue slot), then a heap entry (24 bytes) and a map entry (32 bytes
/// plus hash-table slack): 60 to 100 bytes in all, and no task, no `Sleep` and no
/// waker of its own. A disarmed timer costs one more queued command until the
/// driver applies it (the driver is woken after 1024 pending commands, so this
/// stays bounded while it runs). The [`Expiry`] is a weak reference: it keeps the
/// context's allocation (not its values) until the driver drops it.
///
/// Memory follows the armed timers back down: once the heap or the map is less
/// than a quarter full (and holds more than 1024 slots), the driver shrinks it to
/// twice its length, so a spike of a million deadlines does not stay allocated
/// after they are gone.
///
/// [`now`](Timer::now) enters the runtime's context for the read (a reference
/// count increment and decrement on the runtime handle), so that it reads *this*
/// runtime's clock on any thread: tokio's `Instant::now` reads the clock of
/// whichever runtime the calling thread is in.
///
/// # When the runtime goes away
///
/// A runtime that shuts down drops its tasks, the driver among them. The driver's
/// drop hands every timer still armed to ctx-core's process-wide
/// [`StdTimer`](ctx_core::StdTimer), and so do later `arm` calls: deadlines keep
/// firing, on the system clock, and `disarm` is forwarded. [`now`](Timer::now)
/// keeps reading the runtime's clock, so deadlines stay exact for `err()`; a
/// runtime whose clock was paused (tests only) keeps its frozen clock, while the
/// handed-over timers fire by the system clock. Nothing panics or blocks.
pub struct TokioTimer {
    shared: Arc<Shared>,
}

/// Returned by [`TokioTimer::try_current`] and [`try_background`](crate::try_background)
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

/// Wake the driver when this many commands wait, so memory stays bounded.
const PENDING_LIMIT: usize = 1024;
/// `wake_at` value: the driver sleeps with no deadline to wait for.
const IDLE: u64 = u64::MAX;
/// `wake_at` value: a wake-up is on its way, or the driver has work left and
/// will run again; nobody else needs to send one.
const WAKING: u64 = 0;
/// The most commands (or heap entries) one pass handles before it yields.
const DRAIN_BATCH: usize = 4096;
/// The most deadlines one pass fires before it yields: tokio's budget per poll.
const FIRE_BATCH: usize = 128;
/// Heaps and maps with fewer slots than this are never shrunk.
const SHRINK_FLOOR: usize = 1024;
/// The longest single sleep; the driver re-checks after it (tokio's own far future).
const MAX_SLEEP: Duration = Duration::from_secs(86_400 * 365 * 30);

struct Shared {
    handle: Handle,
    /// The runtime may go undriven (not multi-thread): the backstop watches it.
    guarded: bool,
    commands: SegQueue<Command>,
    /// Commands pushed and not yet applied.
    pending: AtomicUsize,
    /// Keys returned by `arm` and not yet disarmed.
    armed: AtomicUsize,
    next_key: AtomicU64,
    /// Nanoseconds after `epoch` the driver sleeps towards, `IDLE` or `WAKING`
    /// (invariant 2).
    wake_at: AtomicU64,
    epoch: Instant,
    notify: Notify,
    /// The deadlines taken in from the queue (invariant 3).
    core: Mutex<Core>,
    /// Passes run over `core`, by the driver or the backstop.
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

enum Command {
    Arm(u64, Instant, Expiry),
    Disarm(u64),
}

/// The deadlines: a heap ordered by time (with dead entries dropped lazily) and
/// the live expiries by key.
#[derive(Default)]
struct Core {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Expiry>,
}

/// What a pass over `core` left behind.
enum Pass {
    /// Commands or due deadlines remain: run another pass soon. `poke`: the pass
    /// stored `WAKING` over a target, so the backstop must look within its grace.
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
    /// Commands queued and not yet applied.
    pub pending: usize,
    /// Entries in the deadline heap, dead ones included.
    pub heap_len: usize,
    /// Slots allocated for the deadline heap.
    pub heap_capacity: usize,
    /// Live expiries in the map.
    pub live_len: usize,
    /// Slots allocated for the map of live expiries.
    pub live_capacity: usize,
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
        let epoch = {
            let _enter = handle.enter();
            tokio::time::Instant::now().into_std()
        };
        Arc::new(TokioTimer {
            shared: Arc::new(Shared {
                guarded: handle.runtime_flavor() != RuntimeFlavor::MultiThread,
                handle,
                commands: SegQueue::new(),
                pending: AtomicUsize::new(0),
                armed: AtomicUsize::new(0),
                next_key: AtomicU64::new(1),
                wake_at: AtomicU64::new(IDLE),
                epoch,
                notify: Notify::new(),
                core: Mutex::new(Core::default()),
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
        // Relaxed: a statistic; callers synchronise with the contexts by other means.
        self.shared.armed.load(Ordering::Relaxed)
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
        let core = shared.lock_core();
        // Relaxed: statistics.
        TimerStats {
            pending: shared.pending.load(Ordering::Relaxed),
            heap_len: core.heap.len(),
            heap_capacity: core.heap.capacity(),
            live_len: core.live.len(),
            live_capacity: core.live.capacity(),
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
        if self.shared.guarded {
            backstop::watch(&self.shared);
        }
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
    /// `std` instant.
    fn now(&self) -> Instant {
        self.shared.now()
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        let shared = &*self.shared;
        // Relaxed: keys only need to be unique.
        let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
        // Relaxed: a statistic (see `armed`).
        shared.armed.fetch_add(1, Ordering::Relaxed);
        // SeqCst: see `closed` in the module docs.
        if shared.closed.load(Ordering::SeqCst) {
            shared.after_close(|handoff| handoff.arm(key, deadline, expiry));
            return NonZeroU64::new(key).map(TimerKey::new);
        }
        let at = shared.nanos(deadline);
        if shared.push(Command::Arm(key, deadline, expiry)) {
            shared.wake_driver();
        }
        self.start();
        // SeqCst: the fence in `push`, then this load, against the store, fence and
        // drain in `Driver::drop`: one of us sees the other (module docs).
        if shared.closed.load(Ordering::SeqCst) {
            shared.after_close(|_| {});
        } else if at < shared.wake_at.load(Ordering::SeqCst) {
            // SeqCst: against a pass's store of `wake_at` and its re-check of the
            // queue: either the pass saw our command, or we see its target
            // (invariant 2).
            shared.wake_driver();
        }
        NonZeroU64::new(key).map(TimerKey::new)
    }

    fn disarm(&self, key: TimerKey) {
        let shared = &*self.shared;
        let key = key.get().get();
        // Relaxed: a statistic (see `armed`). Wrapping: a key disarmed twice (a
        // broken caller) skews the count but must not panic here.
        let left = shared.armed.fetch_sub(1, Ordering::Relaxed).wrapping_sub(1);
        // SeqCst: see `arm`.
        if shared.closed.load(Ordering::SeqCst) {
            shared.after_close(|handoff| handoff.disarm(key));
            return;
        }
        let many = shared.push(Command::Disarm(key));
        // SeqCst: see `arm`.
        if shared.closed.load(Ordering::SeqCst) {
            shared.after_close(|_| {});
        } else if many || (left == 0 && shared.wake_at.load(Ordering::SeqCst) != IDLE) {
            // Either many commands wait (bound the memory), or nothing is armed any
            // more while the driver sleeps towards a dead deadline: wake it to drop
            // that sleep, or a paused runtime would auto-advance its clock to it.
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

// ===== impl Shared =====

impl Shared {
    /// The runtime's clock, from any thread (see `TokioTimer::now`).
    fn now(&self) -> Instant {
        // Enter the runtime so that tokio reads *its* clock even on a foreign thread
        // (tokio's `Instant::now` uses the clock of the current runtime context).
        let _enter = self.handle.enter();
        tokio::time::Instant::now().into_std()
    }

    /// Pushes a command; true if the driver should be woken to bound memory.
    fn push(&self, command: Command) -> bool {
        // Counted before the push, so that a concurrent pop never takes the count
        // below zero. Relaxed: the count only decides when to wake the driver early.
        let pending = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        self.commands.push(command);
        // SeqCst: the caller's half of the store-buffering pair on `closed`.
        fence(Ordering::SeqCst);
        pending >= PENDING_LIMIT
    }

    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(IDLE - 1).max(WAKING + 1)
    }

    /// Claims the wake-up and sends it: to the driver task, and (for a runtime
    /// that may go undriven) to the backstop, which fires in the driver's stead
    /// if the runtime does not run it soon.
    fn wake_driver(&self) {
        // SeqCst: claim the wake-up, so concurrent arms do not all notify; and the
        // first half of the backstop's store-buffering pair (see `backstop::poke`).
        if self.wake_at.swap(WAKING, Ordering::SeqCst) != WAKING {
            self.notify.notify_one();
            if self.guarded {
                backstop::poke();
            }
        }
    }

    fn lock_core(&self) -> MutexGuard<'_, Core> {
        // No user code runs under this lock (invariant 3), so the state is
        // consistent even if a holder panicked.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One pass over the deadlines: takes in queued commands, moves due expiries
    /// into `batch` (for the caller to fire once the lock is released), and
    /// publishes what to wait for next.
    fn pass(&self, now: Instant, batch: &mut Vec<Expiry>) -> Pass {
        let mut core = self.lock_core();
        // Relaxed: `closed` is stored under this lock (`Driver::drop`).
        if self.closed.load(Ordering::Relaxed) {
            return Pass::Closed;
        }
        let more_commands = core.drain(self);
        let more_due = core.take_due(now, batch);
        if !more_commands && !more_due {
            let next = core.next();
            core.shrink();
            let target = next.map_or(IDLE, |at| self.nanos(at));
            // SeqCst: publish the target, then re-check the queue (see `arm`).
            self.wake_at.store(target, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.commands.is_empty() {
                return Pass::Sleep(next);
            }
        }
        // Work is left: keep invariant 2 with `WAKING` rather than a target that a
        // command still in the queue may undercut.
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

    /// Runs `f` on the hand-over state once the driver is gone, after applying
    /// every queued command (so an `Arm` is always seen before its `Disarm`).
    fn after_close(&self, f: impl FnOnce(&mut Handoff<'_>)) {
        let mut map = self.handoff.lock().unwrap_or_else(PoisonError::into_inner);
        let mut handoff = Handoff { map: &mut map };
        while let Some(command) = self.commands.pop() {
            // Relaxed: a statistic.
            self.pending.fetch_sub(1, Ordering::Relaxed);
            handoff.apply(command);
        }
        f(&mut handoff);
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
        let _ = catch_unwind(AssertUnwindSafe(|| expiry.fire()));
    }
    fired
}

// ===== impl Core =====

impl Core {
    /// Applies up to `DRAIN_BATCH` queued commands; true if more wait.
    fn drain(&mut self, shared: &Shared) -> bool {
        for _ in 0..DRAIN_BATCH {
            let Some(command) = shared.commands.pop() else {
                return false;
            };
            // Relaxed: a statistic.
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            match command {
                Command::Arm(key, at, expiry) => {
                    self.heap.push(Reverse((at, key)));
                    self.live.insert(key, expiry);
                }
                Command::Disarm(key) => {
                    self.live.remove(&key);
                }
            }
        }
        !shared.commands.is_empty()
    }

    /// Moves up to `FIRE_BATCH` due expiries into `batch` (looking at no more than
    /// `DRAIN_BATCH` heap entries); true if more are due.
    fn take_due(&mut self, now: Instant, batch: &mut Vec<Expiry>) -> bool {
        for _ in 0..DRAIN_BATCH {
            let Some(&Reverse((at, key))) = self.heap.peek() else {
                return false;
            };
            if at > now {
                return false;
            }
            if batch.len() == FIRE_BATCH {
                return true;
            }
            self.heap.pop();
            if let Some(expiry) = self.live.remove(&key) {
                batch.push(expiry);
            }
        }
        self.heap.peek().is_some_and(|&Reverse((at, _))| at <= now)
    }

    /// The earliest live deadline, after rebuilding the heap when most of it is
    /// dead and dropping dead entries on top.
    fn next(&mut self) -> Option<Instant> {
        if self.heap.len() > 64 && self.heap.len() > 2 * self.live.len() {
            self.heap = self
                .live
                .iter()
                .map(|(key, expiry)| Reverse((expiry.deadline(), *key)))
                .collect();
        }
        while let Some(&Reverse((_, key))) = self.heap.peek() {
            if self.live.contains_key(&key) {
                break;
            }
            self.heap.pop();
        }
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Gives memory back after a spike: a heap or map less than a quarter full is
    /// shrunk to twice its length (amortized O(1): it must have lost three
    /// quarters of its entries since it last grew or shrank).
    fn shrink(&mut self) {
        if shrinkable(self.heap.capacity(), self.heap.len()) {
            self.heap.shrink_to(2 * self.heap.len());
        }
        if shrinkable(self.live.capacity(), self.live.len()) {
            self.live.shrink_to(2 * self.live.len());
        }
    }
}

/// Whether a collection with `capacity` slots and `len` entries should shrink.
fn shrinkable(capacity: usize, len: usize) -> bool {
    capacity > SHRINK_FLOOR && len < capacity / 4
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
    fn apply(&mut self, command: Command) {
        match command {
            Command::Arm(key, at, expiry) => self.arm(key, at, expiry),
            Command::Disarm(key) => self.disarm(key),
        }
    }

    fn arm(&mut self, key: u64, at: Instant, expiry: Expiry) {
        let theirs = StdTimer::global().arm(at, expiry);
        self.map.insert(key, theirs);
    }

    fn disarm(&mut self, key: u64) {
        if let Some(Some(theirs)) = self.map.remove(&key) {
            StdTimer::global().disarm(theirs);
        }
        if shrinkable(self.map.capacity(), self.map.len()) {
            self.map.shrink_to(2 * self.map.len());
        }
    }
}

// ===== the driver task =====

/// The driver task's state. Its `Drop` closes the timer (module docs).
struct Driver {
    shared: Arc<Shared>,
    /// Expiries taken out of `core` by the current pass, fired outside the lock.
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
                    if poke && self.shared.guarded {
                        backstop::poke();
                    }
                    // More work is due or queued. Yield first: a driver that never
                    // returns `Pending` under a burst of deadlines or a steady
                    // stream of commands would starve the runtime's other tasks
                    // and block its shutdown.
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
        // Forget timers whose context is gone. Outside every lock: dropping the
        // last handle of a context may run user code (a value's `Drop`), which
        // may arm a timer here again.
        // (The batch is empty: the driver fires it before it awaits anything.)
        debug_assert!(self.batch.is_empty());
        let mut live = std::mem::take(&mut shared.lock_core().live);
        live.retain(|_, expiry| expiry.context().is_some());
        let mut core = shared.lock_core();
        let mut map = shared
            .handoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // SeqCst: the driver's half of the store-buffering pair on `closed`: after
        // this store and fence, every command pushed by a caller that read
        // `closed == false` is visible to the drain below.
        shared.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let mut handoff = Handoff { map: &mut map };
        // The backstop may have taken in more while the lock was free.
        let rest = std::mem::take(&mut *core);
        for (key, expiry) in live.into_iter().chain(rest.live) {
            if !stopping {
                handoff.arm(key, expiry.deadline(), expiry);
            }
        }
        while let Some(command) = shared.commands.pop() {
            // Relaxed: a statistic.
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            if !stopping {
                handoff.apply(command);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Pins the per-timer cost documented on `TokioTimer` (where `Instant` is a
    /// 16-byte `timespec`).
    #[test]
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn per_timer_state_sizes() {
        assert_eq!(size_of::<Expiry>(), 24);
        assert_eq!(size_of::<Command>(), 48);
        assert_eq!(size_of::<Reverse<(Instant, u64)>>(), 24);
        assert_eq!(size_of::<(u64, Expiry)>(), 32);
    }

    #[test]
    fn shrink_rule() {
        assert!(!shrinkable(SHRINK_FLOOR, 0), "small ones stay");
        assert!(shrinkable(4 * SHRINK_FLOOR, SHRINK_FLOOR - 1));
        assert!(!shrinkable(4 * SHRINK_FLOOR, SHRINK_FLOOR));
    }
}
