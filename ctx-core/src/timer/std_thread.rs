//! The built-in timer: one background thread, started on first use.
//!
//! Arming and disarming never take a lock: they push a command onto a lock-free
//! queue and, only when the new deadline is earlier than the one the thread sleeps
//! towards (or many commands are pending), unpark the thread. The thread owns a
//! binary heap of deadlines and a map of armed expiries; it applies the commands,
//! fires what is due, and parks until the next deadline.
//!
//! Disarming is lazy for the heap (a disarmed key is skipped when it surfaces) but
//! immediate for the count and, within a bounded number of commands, for memory:
//! the thread is woken once 1024 commands are pending, and it rebuilds the heap
//! when more than half its entries are dead.

use super::{Expiry, Timer, TimerKey};
use crate::sync::unmodeled::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crossbeam_queue::SegQueue;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Wake the thread when this many commands wait, so memory stays bounded.
const PENDING_LIMIT: usize = 1024;
/// `wake_at` value meaning "parked with nothing to wait for".
const IDLE: u64 = u64::MAX;

/// The built-in timer backend: a dedicated thread and the system's monotonic clock.
///
/// [`StdTimer::global`] is what contexts use when no other [`Timer`] is installed;
/// [`StdTimer::new`] makes a separate one (with its own thread), which is mostly
/// useful for tests that want to read [`armed`](StdTimer::armed) in isolation.
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
    commands: SegQueue<Command>,
    /// Commands pushed and not yet applied by the thread.
    pending: AtomicUsize,
    /// Keys armed and not yet disarmed.
    armed: AtomicUsize,
    next_key: AtomicU64,
    /// Nanoseconds after `epoch` that the thread sleeps towards, or `IDLE`.
    wake_at: AtomicU64,
    epoch: Instant,
    shutdown: AtomicBool,
    thread: OnceLock<Thread>,
}

enum Command {
    Arm(u64, Instant, Expiry),
    Disarm(u64),
}

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
                commands: SegQueue::new(),
                pending: AtomicUsize::new(0),
                armed: AtomicUsize::new(0),
                next_key: AtomicU64::new(1),
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

    fn push(&self, command: Command) {
        let shared = &self.shared;
        // Counted before it is pushed, so the thread's decrement after popping it can
        // never run first (the count would wrap). SeqCst: pairs with the thread's
        // SeqCst store of `wake_at` and its re-check of `pending`: either it sees our
        // command coming, or we see (in `arm`) what it went to sleep towards.
        let pending = shared.pending.fetch_add(1, Ordering::SeqCst) + 1;
        shared.commands.push(command);
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

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.shared.epoch).as_nanos())
            .unwrap_or(IDLE - 1)
    }
}

impl Timer for StdTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        // Relaxed: keys only need to be unique.
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        // Relaxed: a statistic (see `armed`).
        self.shared.armed.fetch_add(1, Ordering::Relaxed);
        let at = self.nanos(deadline);
        self.push(Command::Arm(key, deadline, expiry));
        // SeqCst: see `push`; the thread publishes its sleep target before it parks.
        if at < self.shared.wake_at.load(Ordering::SeqCst) {
            self.thread().unpark();
        }
        NonZeroU64::new(key).map(TimerKey::new)
    }

    fn disarm(&self, key: TimerKey) {
        // Relaxed: a statistic (see `armed`).
        self.shared.armed.fetch_sub(1, Ordering::Relaxed);
        self.push(Command::Disarm(key.get().get()));
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
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut live: HashMap<u64, Expiry> = HashMap::new();
    loop {
        while let Some(command) = shared.commands.pop() {
            // Relaxed: the count is re-checked with SeqCst before parking.
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            match command {
                Command::Arm(key, at, expiry) => {
                    heap.push(Reverse((at, key)));
                    live.insert(key, expiry);
                }
                Command::Disarm(key) => {
                    live.remove(&key);
                }
            }
        }
        // Relaxed: set before the timer's handle unparks us.
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        while let Some(&Reverse((at, key))) = heap.peek() {
            if at > now {
                break;
            }
            heap.pop();
            if let Some(expiry) = live.remove(&key) {
                // A panic in user code run by the cancel (an after_func callback)
                // must not take the timer thread down with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| expiry.fire()));
            }
        }
        if heap.len() > 64 && heap.len() > 2 * live.len() {
            heap = live
                .iter()
                .map(|(key, expiry)| Reverse((expiry.deadline(), *key)))
                .collect();
        }
        let next = heap.peek().map(|Reverse((at, _))| *at);
        let target = next.map_or(IDLE, |at| {
            u64::try_from(at.saturating_duration_since(shared.epoch).as_nanos()).unwrap_or(IDLE - 1)
        });
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
