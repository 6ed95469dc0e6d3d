//! The built-in timer: one background thread, started on first use.
//!
//! Arming never takes a lock: it pushes the deadline onto a lock-free queue and,
//! only when the new deadline is earlier than the one the thread sleeps towards
//! (or many arms are pending), unparks the thread. The thread owns a binary heap of
//! deadlines; it takes in the queued arms, fires what is due, and parks until the
//! next deadline.
//!
//! Disarming is a counter update and nothing else: a disarmed entry stays in the
//! heap, holding only a weak reference, and does nothing when it surfaces (its
//! context is done or gone). So that those entries cannot pile up, every 1024th
//! disarm wakes the thread, which sweeps the heap once more than half of it is
//! stale. Memory therefore stays proportional to the armed timers, within a
//! constant, and the common case (a timeout canceled long before it expires)
//! costs the canceling thread two counter updates and the timer thread nothing.
//!
//! The thread runs no user code: firing an [`Expiry`] marks the subtree done and
//! wakes its waiters, and hands the `after_func` callbacks and `Drop`s it sets
//! free to ctx-core's runner threads; the sweep only reads state words. So a
//! callback that blocks or panics never delays another deadline.
use super::{Expiry, Timer, TimerKey};
use crate::sync::unmodeled::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crossbeam_queue::SegQueue;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Wake the thread when this many arms wait, or after this many disarms, so
/// memory stays bounded.
const PENDING_LIMIT: usize = 1024;
/// `wake_at` value meaning "parked with nothing to wait for".
const IDLE: u64 = u64::MAX;

/// The built-in timer backend: a dedicated thread and the system's monotonic clock.
///
/// [`StdTimer::global`] is what contexts use when no other [`Timer`] is installed;
/// [`StdTimer::new`] makes a separate one (with its own thread), which is mostly
/// useful for tests that want to read [`armed`](StdTimer::armed) in isolation.
///
/// # Where user code runs
///
/// Never on the timer's thread: `after_func` callbacks of a context ended by its
/// deadline, and the `Drop`s of contexts the expiry released last, run on
/// ctx-core's runner threads (a small pool that grows when a callback blocks and
/// shrinks when idle), as Go runs each `AfterFunc` on a goroutine of its own.
///
/// # Caveats: `fork`
///
/// After `fork()`, the child process has none of the parent's threads, so the
/// timer that existed before the fork does not fire in the child, and neither do
/// the runner's threads run. In the child, reads stay exact (`err()` reports
/// `DeadlineExceeded` once the deadline passed) and [`Context::wait`] returns at
/// the deadline (it wakes by itself), but `done()` futures and `after_func`
/// callbacks of deadline contexts under the global timer are never triggered.
/// A child that needs them installs a timer of its own, whose thread starts in
/// the child: `Context::background().with_timer(StdTimer::new())`.
///
/// [`Context::wait`]: crate::Context::wait
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, StdTimer};
/// use std::time::Duration;
///
/// let timer = StdTimer::new();
/// let root = Context::background().with_timer(timer.clone());
/// let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
/// assert_eq!(timer.armed(), 1);
/// cancel.cancel();
/// assert_eq!(timer.armed(), 0);
/// # drop(ctx);
/// ```
pub struct StdTimer {
    shared: Arc<Shared>,
}

struct Shared {
    /// Deadlines armed and not yet taken into the thread's heap.
    arms: SegQueue<Entry>,
    /// How many entries `arms` holds (counted before the push).
    pending: AtomicUsize,
    /// Timers armed and not yet disarmed.
    armed: AtomicUsize,
    /// Disarms since the thread last considered a sweep.
    stale: AtomicUsize,
    /// Nanoseconds after `epoch` that the thread sleeps towards, or `IDLE`.
    wake_at: AtomicU64,
    epoch: Instant,
    shutdown: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Shared {
    /// `at` as nanoseconds after `epoch`, saturating below `IDLE`.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(IDLE - 1)
    }
}

/// An armed deadline: ordered so that `BinaryHeap` (a max-heap) yields the
/// earliest first.
struct Entry {
    at: Instant,
    expiry: Expiry,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> CmpOrdering {
        other.at.cmp(&self.at)
    }
}

/// The key every arm returns: disarming needs no lookup (see the module docs),
/// only the promise that `disarm` is called once per armed timer.
const KEY: TimerKey = TimerKey(NonZeroU64::MIN);

impl StdTimer {
    /// The process-wide timer (its thread starts on the first armed deadline).
    pub fn global() -> Arc<StdTimer> {
        static GLOBAL: OnceLock<Arc<StdTimer>> = OnceLock::new();
        GLOBAL.get_or_init(StdTimer::new).clone()
    }

    /// A separate timer with its own thread, which stops when the timer is dropped.
    pub fn new() -> Arc<StdTimer> {
        Arc::new(StdTimer {
            shared: Arc::new(Shared {
                arms: SegQueue::new(),
                pending: AtomicUsize::new(0),
                armed: AtomicUsize::new(0),
                stale: AtomicUsize::new(0),
                wake_at: AtomicU64::new(IDLE),
                epoch: Instant::now(),
                shutdown: AtomicBool::new(false),
                thread: OnceLock::new(),
            }),
        })
    }

    /// How many timers are armed: armed and neither fired-and-released nor
    /// disarmed. Every context done before its deadline disarms its timer at once,
    /// so this drops back to 0 when no deadline context is live.
    pub fn armed(&self) -> usize {
        // Relaxed: a statistic; callers synchronise with the contexts by other means.
        self.shared.armed.load(Ordering::Relaxed)
    }

    fn push(&self, entry: Entry) {
        let shared = &self.shared;
        // Counted before it is pushed, so the thread's decrement after popping it can
        // never run first (the count would wrap). SeqCst: pairs with the thread's
        // SeqCst store of `wake_at` and its re-check of `pending`: either it sees our
        // entry coming, or we see (in `arm`) what it went to sleep towards.
        let pending = shared.pending.fetch_add(1, Ordering::SeqCst) + 1;
        shared.arms.push(entry);
        if pending >= PENDING_LIMIT {
            self.thread().unpark();
        }
    }

    fn thread(&self) -> &Thread {
        self.shared.thread.get_or_init(|| {
            let shared = self.shared.clone();
            thread::Builder::new()
                .name("ctx-timer".into())
                .spawn(move || run(&shared))
                .expect("ctx: cannot start the timer thread")
                .thread()
                .clone()
        })
    }
}

impl Timer for StdTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        // Relaxed: a statistic (see `armed`).
        self.shared.armed.fetch_add(1, Ordering::Relaxed);
        let at = self.shared.nanos(deadline);
        self.push(Entry {
            at: deadline,
            expiry,
        });
        // SeqCst: see `push`; the thread publishes its sleep target before it parks.
        if at < self.shared.wake_at.load(Ordering::SeqCst) {
            self.thread().unpark();
        }
        Some(KEY)
    }

    fn disarm(&self, _key: TimerKey) {
        // Relaxed: statistics; the entry itself stays in the heap until it surfaces
        // or a sweep drops it (module docs).
        self.shared.armed.fetch_sub(1, Ordering::Relaxed);
        // `==`: the increments are unique, so exactly one disarm per 1024 wakes the
        // thread (which resets the count), instead of every disarm after the 1024th
        // until it runs.
        if self.shared.stale.fetch_add(1, Ordering::Relaxed) + 1 == PENDING_LIMIT {
            self.thread().unpark();
        }
    }
}

impl Drop for StdTimer {
    fn drop(&mut self) {
        // Relaxed: the unpark below is the synchronisation point.
        self.shared.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.shared.thread.get() {
            thread.unpark();
        }
    }
}

impl fmt::Debug for StdTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdTimer")
            .field("armed", &self.armed())
            .finish_non_exhaustive()
    }
}

/// The timer thread.
fn run(shared: &Shared) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    loop {
        while let Some(entry) = shared.arms.pop() {
            // Relaxed: the count is re-checked with SeqCst before parking.
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            heap.push(entry);
        }
        // Relaxed: set before the timer's handle unparks us.
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|entry| entry.at <= now) {
            let entry = heap.pop().expect("peeked");
            // A disarmed entry does nothing here (its context is done or gone). A
            // panic in user code run by the cancel (an after_func callback) must not
            // take the timer thread down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.expiry.fire()));
        }
        // Relaxed: statistics; a sweep a little early or late is harmless. The
        // reset lets the next 1024 disarms wake us again.
        shared.stale.store(0, Ordering::Relaxed);
        if heap.len() > 64 && heap.len() > 2 * shared.armed.load(Ordering::Relaxed) {
            heap.retain(|entry| !entry.expiry.is_done());
        }
        let next = heap.peek().map(|entry| entry.at);
        let target = next.map_or(IDLE, |at| shared.nanos(at));
        // SeqCst: publish the sleep target, then re-check for commands (see `push`).
        shared.wake_at.store(target, Ordering::SeqCst);
        if shared.pending.load(Ordering::SeqCst) > 0 {
            continue;
        }
        match next {
            Some(at) => thread::park_timeout(
                at.saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(50)),
            ),
            None => thread::park(),
        }
    }
}
