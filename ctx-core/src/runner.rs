//! The runner: threads that run `after_func` callbacks, and the user code a
//! timer's expiry sets free.
//!
//! Every `after_func` callback runs here, on a job of its own, as Go runs each
//! `AfterFunc` on a goroutine of its own: a cancel never waits for one (a
//! callback may wait for what the canceler does next), two callbacks of one
//! cancel may wait for each other, and a callback never runs under a lock its
//! canceler or registrant holds. And a timer backend must never wait for user
//! code: one callback that blocks, or a `Drop` that panics, would otherwise
//! hold back (or stop) every other deadline of the backend. So an expiry walks
//! the subtree on the timer's thread (state words only) and hands the
//! callbacks, the `Drop`s of nodes it released last and the rest of its walk
//! to the runner (see `tree::work`).
//!
//! The runner is a pool that grows as its jobs block: a job goes to an idle
//! thread if there is one; otherwise it starts a new thread while fewer than
//! [`eager_threads`] exist (one per CPU, at least [`MIN_EAGER`]), and beyond
//! that a monitor thread starts one more whenever the queue has not moved for
//! [`STALL`]. So a burst of quick jobs (a fan-out whose every child has a
//! callback) runs on a few threads instead of starting one per job, and jobs
//! that block (a callback waiting for another) never starve the ones queued
//! behind them: those get a thread within a few `STALL`s. Threads that stay idle
//! for [`IDLE_EXIT`] end. A panicking job is caught (the panic hook has reported
//! it) and the thread carries on. If no thread can be started, the job stays in
//! the queue, and the next job's attempt to start a thread (or a runner that is
//! still there, or the monitor) takes it. It never runs on the caller's thread: callers may hold
//! locks of their own (a timer backend may ask `Expiry::is_done` under its own
//! lock, and the last reference that call releases is dropped here), and a
//! `Drop` that arms a timer on the same backend would deadlock. (The built-in
//! backends hand such references over only after their locks.)
//!
//! The pool's queue sits behind a `Mutex`, held only to push or pop a job; no job
//! runs under it. After `fork()`, the child starts its own runner threads; the
//! queue's lock is held across the fork (`at_fork`), so the child never finds it
//! held by a runner thread that does not exist there.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A unit of work for the runner.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle runner thread waits for work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(5);

/// Threads started at once for jobs that find no idle thread, at least.
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
const MIN_EAGER: usize = 4;

/// How long the queue may stand still, with jobs waiting and every thread
/// busy, before the monitor starts one more thread.
const STALL: Duration = Duration::from_millis(1);

/// How many threads are started at once for jobs that find no idle thread:
/// one per CPU, at least [`MIN_EAGER`]. Beyond that, the monitor starts them.
/// Asked of the system once (under the queue's lock, kept in the queue, not
/// in a `OnceLock`: see `POOL`).
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn eager_threads(queue: &mut Queue) -> usize {
    if queue.eager == 0 {
        queue.eager = std::thread::available_parallelism()
            .map_or(MIN_EAGER, usize::from)
            .max(MIN_EAGER);
    }
    queue.eager
}

#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
struct Queue {
    /// The fork epoch the counts below belong to (`fork`): after `fork()` the
    /// child has none of the parent's threads, so it starts counting afresh.
    epoch: usize,
    jobs: VecDeque<Job>,
    /// Threads waiting for a job and not yet promised one.
    idle: usize,
    /// Wake-ups promised to idle threads and not yet taken.
    wakeups: usize,
    threads: usize,
    /// Jobs taken off the queue so far (wrapping): the monitor's measure of
    /// progress.
    taken: usize,
    /// Whether the monitor thread runs.
    monitor: bool,
    /// [`eager_threads`], once known (0 before).
    eager: usize,
}

impl Queue {
    /// No job and no thread, in no fork epoch yet: the first job counts afresh,
    /// as in a child after a fork.
    const EMPTY: Queue = Queue {
        epoch: usize::MAX,
        jobs: VecDeque::new(),
        idle: 0,
        wakeups: 0,
        threads: 0,
        taken: 0,
        monitor: false,
        eager: 0,
    };
}

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The pool: a plain static, made at compile time. One initialized on first
/// use (a `OnceLock`) could be caught in the middle of its initialization by
/// a `fork()` on another thread, and every runner job of the child would wait
/// for an initialization that never ends there (its thread does not exist in
/// the child).
static POOL: Pool = Pool {
    queue: Mutex::new(Queue::EMPTY),
    ready: Condvar::new(),
};

fn pool() -> &'static Pool {
    &POOL
}

/// Runs `job` on a runner thread (module docs).
#[cfg(not(all(test, ctx_loom)))]
pub(crate) fn spawn(job: Job) {
    spawn_all(std::iter::once(job));
}

/// Runs each of `jobs` on a runner thread, each a job of its own (module
/// docs), queued under one taking of the queue's lock: a cancel that sets
/// many callbacks free hands them over at once.
#[cfg(not(all(test, ctx_loom)))]
pub(crate) fn spawn_all<I>(jobs: I)
where
    I: IntoIterator<Item = Job>,
    I::IntoIter: ExactSizeIterator,
{
    let jobs = jobs.into_iter();
    let mut left = jobs.len();
    if left == 0 {
        return;
    }
    #[cfg(feature = "test-util")]
    for _ in 0..left {
        crate::testing::count_hand_over();
    }
    // Forks are counted from here on (the first time: registers the handler,
    // which must not happen under the queue's lock, as a fork takes it).
    crate::fork::install();
    let pool = pool();
    let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    let epoch = crate::fork::epoch();
    if queue.epoch != epoch {
        // A child after `fork()`: no runner thread (nor monitor) exists here.
        queue.epoch = epoch;
        queue.idle = 0;
        queue.wakeups = 0;
        queue.threads = 0;
        queue.monitor = false;
        // The jobs queued at the fork are the parent's: it runs them (an
        // `after_func` callback must not run once in each process), and a
        // walk's rest would wait here for threads that do not exist. Leaked,
        // not dropped: their `Drop`s are user code of the parent's too.
        std::mem::forget(std::mem::take(&mut queue.jobs));
    }
    queue.jobs.extend(jobs);
    // Idle threads first, one wake-up each.
    let woken = left.min(queue.idle);
    queue.idle -= woken;
    queue.wakeups += woken;
    left -= woken;
    // Then new threads while fewer than the eager ones exist, then the monitor.
    let start = left.min(eager_threads(&mut queue).saturating_sub(queue.threads));
    left -= start;
    let monitor = left > 0 && !queue.monitor;
    queue.threads += start;
    queue.monitor |= monitor;
    drop(queue);
    for _ in 0..woken {
        pool.ready.notify_one();
    }
    for _ in 0..start {
        start_counted_thread(pool);
    }
    if monitor {
        start_counted_monitor(pool);
    }
}

/// Starts a runner thread, counted under `queue` (released here first). If
/// it cannot start, the jobs stay queued for the next attempt (module docs).
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn start_thread(pool: &'static Pool, mut queue: MutexGuard<'_, Queue>) {
    queue.threads += 1;
    drop(queue);
    start_counted_thread(pool);
}

/// Starts a runner thread already counted in `threads`; uncounts it if it
/// cannot start (the jobs stay queued for the next attempt: module docs).
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn start_counted_thread(pool: &'static Pool) {
    let started = std::thread::Builder::new()
        .name("ctx-runner".into())
        .spawn(move || work(pool));
    if started.is_err() {
        let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.threads -= 1;
    }
}

/// Starts the monitor, already marked running (`queue.monitor`); unmarks it
/// if it cannot start (the next job that finds every thread busy tries
/// again).
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn start_counted_monitor(pool: &'static Pool) {
    let started = std::thread::Builder::new()
        .name("ctx-runner-monitor".into())
        .spawn(move || monitor(pool));
    if started.is_err() {
        pool.queue.lock().unwrap_or_else(|e| e.into_inner()).monitor = false;
    }
}

/// The monitor: while jobs wait, starts one more thread each time the queue
/// stood still for [`STALL`] (every thread busy, none taking a job: they
/// block, or run long); ends once the queue is empty. It runs no job itself.
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn monitor(pool: &'static Pool) {
    let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    // The monitor of this fork epoch: in a child after a fork it does not
    // exist, and the child's first job starts afresh (as for `work`).
    let epoch = queue.epoch;
    loop {
        if queue.jobs.is_empty() || queue.epoch != epoch {
            if queue.epoch == epoch {
                queue.monitor = false;
            }
            return;
        }
        let taken = queue.taken;
        drop(queue);
        std::thread::sleep(STALL);
        queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.epoch == epoch && !queue.jobs.is_empty() && queue.taken == taken && queue.idle == 0
        {
            start_thread(pool, queue);
            queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Under loom there are no threads to hand off to: the job runs at once.
#[cfg(all(test, ctx_loom))]
pub(crate) fn spawn(job: Job) {
    let _ = pool;
    run(job);
}

/// Under loom, each job runs at once.
#[cfg(all(test, ctx_loom))]
pub(crate) fn spawn_all(jobs: impl IntoIterator<Item = Job>) {
    jobs.into_iter().for_each(run);
}

fn run(job: Job) {
    // The panic was reported by the hook; the runner survives it, and its
    // payload's `Drop`.
    crate::adapter::contain_panic(job);
}

#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn work(pool: &'static Pool) {
    let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    // The fork epoch this thread was counted in (by `spawn`, which set the
    // queue's). A job that forks (an `after_func` callback calling `fork()`)
    // brings this thread into the child, where it was never counted: the
    // counts are the parent's until the child's first `spawn` starts afresh,
    // and the jobs queued are the parent's. So there it leaves at once,
    // touching neither (its decrements would underflow the child's counts,
    // and a count gone wrong promises wake-ups to threads that do not exist).
    let epoch = queue.epoch;
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            queue.taken = queue.taken.wrapping_add(1);
            drop(queue);
            run(job);
            if crate::fork::epoch() != epoch {
                return;
            }
            queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        queue.idle += 1;
        loop {
            let (guard, timeout) = pool
                .ready
                .wait_timeout(queue, IDLE_EXIT)
                .unwrap_or_else(|e| e.into_inner());
            queue = guard;
            if queue.wakeups > 0 {
                queue.wakeups -= 1;
                break;
            }
            if timeout.timed_out() {
                queue.idle -= 1;
                queue.threads -= 1;
                return;
            }
        }
    }
}

/// Holding the queue's lock across `fork()` (the handlers in `fork`).
///
/// Without it, a runner thread that pushed or popped a job at the moment of a
/// fork would leave the lock held in the child for ever, and the child's first
/// expiry with work for the runner would wait on it for ever.
#[cfg(all(unix, not(all(test, ctx_loom))))]
pub(crate) mod at_fork {
    use super::{POOL, Queue};
    use std::cell::RefCell;
    use std::sync::MutexGuard;

    thread_local! {
        /// The guard taken before a fork, on the forking thread (the only thread
        /// the child has, with a copy of this slot).
        static HELD: RefCell<Option<MutexGuard<'static, Queue>>> = const { RefCell::new(None) };
    }

    /// Before a fork: takes the queue's lock. Its holders
    /// only push or pop (module docs of `runner`), so this waits briefly.
    pub(crate) fn prepare() {
        // The handlers may be registered twice (`fork::install_slow`): the
        // second call finds the guard taken already.
        if HELD
            .try_with(|held| held.borrow().is_some())
            .unwrap_or(false)
        {
            return;
        }
        let guard = POOL.queue.lock().unwrap_or_else(|e| e.into_inner());
        // A thread whose locals are gone (a fork from a thread-local destructor)
        // cannot keep the guard: it is released here, and that fork goes
        // unguarded, as every fork did before.
        let _ = HELD.try_with(|held| *held.borrow_mut() = Some(guard));
    }

    /// After a fork, in the parent and in the child: releases what `prepare` took.
    pub(crate) fn release() {
        let guard = HELD
            .try_with(|held| held.borrow_mut().take())
            .ok()
            .flatten();
        drop(guard);
    }
}
