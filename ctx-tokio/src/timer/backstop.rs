//! The backstop thread: fires the deadlines of timers whose runtime is alive but
//! does not poll their driver task.
//!
//! A current-thread runtime polls its tasks and its time driver only while some
//! thread is inside its `block_on`. Between two `block_on` calls (or while its one
//! thread is stuck in a long synchronous call) the driver task cannot run, and a
//! deadline armed there would never fire: a plain thread blocked on `done()`
//! would wait forever. A multi-thread runtime can strand the driver too: a worker
//! that wakes or spawns it puts it in its own LIFO slot, which the other workers
//! cannot steal, so while the task that armed there computes or blocks without
//! yielding, no deadline of the timer fires, though other workers are idle. So
//! every timer registers here (invariant 4 of the parent module), whatever its
//! runtime's flavor, and one thread per process watches them all.
//!
//! # When the backstop steps in
//!
//! For each timer it reads the pair (`wake_at`, `passes`). By invariant 2 of the
//! parent module, `wake_at` says when the driver must run next: `IDLE` never,
//! `WAKING` now, a target `t` at `t` by the runtime's clock. The backstop steps
//! in when that moment has passed by more than `GRACE` and `passes` has not
//! moved in the meantime: then the driver has not run although it had work, and
//! the backstop runs passes itself (`Shared::take_over`) until nothing is due
//! (or until `passes` shows that the driver ran one meanwhile), publishes the
//! next target, and notifies the driver, which takes over again as soon as its
//! runtime runs. On a runtime that is being driven, the driver is
//! always there first, and the backstop only wakes about once per target.
//!
//! The targets are in the runtime's clock and the thread sleeps by the system
//! clock; it converts with the current offset. A paused clock does not move with
//! the system clock: a target found not yet due when the conversion said it would
//! be is re-checked with exponential back-off (up to `GRACE * 2^MAX_BACKOFF`), so
//! an undriven paused runtime costs a wake-up every second or so, and fires
//! nothing (as tokio's own timers would not).
//!
//! # Waking the thread
//!
//! The thread sleeps until its earliest check (`sleep_until`). A timer whose
//! `wake_at` becomes `WAKING` needs a check within `GRACE`, so `poke` unparks the
//! thread when it sleeps longer than that. That is a store-buffering pair: `poke`
//! stores `dirty` (after the `WAKING` swap) and then loads `sleep_until`; the
//! thread clears `dirty`, scans, stores `sleep_until` and then loads `dirty`. In
//! the `SeqCst` order, either the scan sees `WAKING`, or the thread's load sees
//! `dirty` and scans again, or `poke` sees the new `sleep_until` and unparks (a
//! park token is never lost). A target that becomes *earlier* is lowered by an
//! arm, which then swaps in `WAKING` and pokes (invariant 2): a scan that read
//! the lowered target in between sleeps towards the earliest deadline, which
//! is right, and is poked anyway, so targets need no pokes of their own.

use super::{IDLE, Shared, WAKING};
use ctx_core::Expiry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long the driver may be late before the backstop fires in its stead: long
/// enough that a runtime thread that is merely preempted (a scheduler time slice
/// on a loaded machine) is rarely taken for an undriven one.
const GRACE: Duration = Duration::from_millis(20);
/// The longest back-off for a paused clock is `GRACE * 2^MAX_BACKOFF` (2.56 s).
const MAX_BACKOFF: u32 = 7;
/// The longest the thread sleeps towards one target (it re-checks after it).
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// The process-wide backstop.
struct Backstop {
    timers: Mutex<Vec<Watched>>,
    /// `None` if the thread could not be started: timers then rely on their
    /// runtime alone, as before the backstop existed.
    thread: Option<Thread>,
    epoch: Instant,
    /// Nanoseconds after `epoch` until which the thread sleeps; `u64::MAX` while
    /// it has nothing to watch.
    sleep_until: AtomicU64,
    /// A timer asked for a check since the thread last cleared this.
    dirty: AtomicBool,
}

/// One registered timer and what the backstop last saw of it.
struct Watched {
    shared: Weak<Shared>,
    seen: Option<Seen>,
}

/// A state of a timer that the backstop is waiting to see change.
struct Seen {
    wake_at: u64,
    passes: u64,
    /// When (system clock) the driver was due to run for this state.
    due: Instant,
    /// Checks in a row that found a target not yet due although `due` had
    /// passed: the clock is paused.
    backoff: u32,
}

/// What a check of one timer asks for.
enum Check {
    /// Nothing to watch until the timer is woken again.
    Idle,
    /// Look again at this time.
    At(Instant),
    /// The driver is late: fire in its stead now.
    TakeOver,
}

static BACKSTOP: OnceLock<Backstop> = OnceLock::new();

/// Starts watching a timer (on its first armed deadline).
pub(super) fn watch(shared: &Arc<Shared>) {
    let backstop = BACKSTOP.get_or_init(|| {
        let thread = thread::Builder::new()
            .name("ctx-tokio-timer".into())
            .spawn(run)
            .ok()
            .map(|handle| handle.thread().clone());
        Backstop {
            timers: Mutex::new(Vec::new()),
            thread,
            epoch: Instant::now(),
            sleep_until: AtomicU64::new(u64::MAX),
            dirty: AtomicBool::new(false),
        }
    });
    {
        let mut timers = backstop.lock();
        timers.retain(|watched| watched.shared.strong_count() > 0);
        timers.push(Watched {
            shared: Arc::downgrade(shared),
            seen: None,
        });
    }
    // A poke of its own, once the timer is in the list: the arm that
    // registered it usually pokes next (it swaps in `WAKING`), but not when
    // another thread's first arm lowered the deadline first and poked before
    // the registration, for a scan that could not see the timer yet. One poke
    // per timer, ever.
    poke();
}

/// Makes sure the thread looks at the timers within `GRACE`: called after a
/// timer's `wake_at` became `WAKING` (module docs).
pub(super) fn poke() {
    let Some(backstop) = BACKSTOP.get() else {
        return;
    };
    let Some(thread) = &backstop.thread else {
        return;
    };
    // SeqCst: the poke's half of the store-buffering pair (module docs).
    backstop.dirty.store(true, Ordering::SeqCst);
    let needed = backstop.nanos(Instant::now() + GRACE);
    if backstop.sleep_until.load(Ordering::SeqCst) > needed {
        thread.unpark();
    }
}

/// The thread: scan, fire for late drivers, sleep until the next check.
fn run() {
    // Waits until `watch` has finished initializing it.
    let backstop = BACKSTOP.wait();
    let mut late: Vec<Arc<Shared>> = Vec::new();
    let mut batch: Vec<Expiry> = Vec::new();
    // The timers upgraded during a scan, released after it.
    let mut scanned: Vec<Arc<Shared>> = Vec::new();
    loop {
        // SeqCst: cleared before the scan (module docs).
        backstop.dirty.store(false, Ordering::SeqCst);
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        backstop.lock().retain_mut(|watched| {
            let Some(shared) = watched.shared.upgrade() else {
                return false;
            };
            let keep = !shared.is_finished();
            if keep {
                match watched.check(&shared, now) {
                    Check::Idle => {}
                    Check::At(at) => next = Some(next.map_or(at, |next| next.min(at))),
                    Check::TakeOver => late.push(shared.clone()),
                }
            }
            scanned.push(shared);
            keep
        });
        // Outside the registry lock: the timer's other owners may have let go
        // meanwhile, and the last reference drops its runtime handle, which can
        // be the runtime's last (its hooks are user code).
        scanned.clear();
        if !late.is_empty() {
            // Outside the registry lock: firing may run user code, which may arm
            // on a new timer (and register it).
            for shared in late.drain(..) {
                shared.take_over(&mut batch);
            }
            continue;
        }
        let until = next.map_or(u64::MAX, |at| backstop.nanos(at));
        // SeqCst: the thread's half of the store-buffering pair (module docs).
        backstop.sleep_until.store(until, Ordering::SeqCst);
        if backstop.dirty.load(Ordering::SeqCst) {
            continue;
        }
        match next {
            None => thread::park(),
            Some(at) => thread::park_timeout(at.saturating_duration_since(Instant::now())),
        }
    }
}

// ===== impl Backstop =====

impl Backstop {
    fn lock(&self) -> MutexGuard<'_, Vec<Watched>> {
        // No user code runs under this lock.
        self.timers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `at` as nanoseconds after `epoch`, below `u64::MAX`.
    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos)
            .unwrap_or(u64::MAX - 1)
            .min(u64::MAX - 1)
    }
}

// ===== impl Watched =====

impl Watched {
    /// Looks at one timer at `now` (system clock).
    fn check(&mut self, shared: &Shared, now: Instant) -> Check {
        // SeqCst: against the stores of a pass and of `wake_driver` (module docs).
        let wake_at = shared.wake_at.load(Ordering::SeqCst);
        let passes = shared.passes.load(Ordering::SeqCst);
        if wake_at == IDLE {
            self.seen = None;
            return Check::Idle;
        }
        // How long until the driver is due to run, by the runtime's clock.
        let due_in = if wake_at == WAKING {
            Duration::ZERO
        } else {
            Duration::from_nanos(wake_at.saturating_sub(shared.nanos(shared.now()))).min(MAX_WAIT)
        };
        match &mut self.seen {
            Some(seen) if seen.wake_at == wake_at && seen.passes == passes => {
                if due_in.is_zero() {
                    // Due, and the driver has not run since we first saw this.
                    seen.due = seen.due.min(now);
                    if now >= seen.due + GRACE {
                        self.seen = None;
                        return Check::TakeOver;
                    }
                    return Check::At(seen.due + GRACE);
                }
                if now < seen.due {
                    // Woken early (by a poke for another timer).
                    return Check::At(seen.due + GRACE);
                }
                // The conversion said it would be due by now, but the runtime's
                // clock has not moved as far: it is paused. Back off.
                seen.backoff = (seen.backoff + 1).min(MAX_BACKOFF);
                seen.due = now + due_in;
                Check::At((seen.due + GRACE).max(now + GRACE * (1 << seen.backoff)))
            }
            _ => {
                let due = now + due_in;
                self.seen = Some(Seen {
                    wake_at,
                    passes,
                    due,
                    backoff: 0,
                });
                Check::At(due + GRACE)
            }
        }
    }
}
