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
//! that a monitor thread starts more whenever no job finished for [`STALL`]:
//! one, then one more than the last time while no job finishes. So a burst
//! of quick jobs (a fan-out whose every child has a callback) runs on a few
//! threads instead of starting one per job, and jobs that block (a callback
//! waiting for another) never starve the ones queued behind them: behind `n`
//! blocked jobs, those get threads within about sqrt(2`n`) `STALL`s. Threads that stay idle
//! for [`IDLE_EXIT`] end. A panicking job is caught (the panic hook has reported
//! it) and the thread carries on.
//!
//! A thread that cannot start (the system is short of memory or threads)
//! leaves its job queued and the monitor in charge, started for it if it is
//! not running: the queue stands still, so the monitor tries again after
//! [`STALL`], then twice as long after each failure, up to [`RETRY_MAX`],
//! until the queue drains. The monitor has a small stack ([`MONITOR_STACK`]),
//! so it may start where a runner thread cannot; if not even it can, the jobs
//! wait for a runner thread that is still there, or for the next hand-over,
//! which tries both again. A job never runs on the caller's thread: callers
//! may hold locks of their own (a timer backend may ask `Expiry::is_done`
//! under its own lock, and the last reference that call releases is dropped
//! here), and a `Drop` that arms a timer on the same backend would deadlock.
//! (The built-in backends hand such references over only after their locks.)
//!
//! The pool's queue sits behind a `Mutex`, held only to push or pop a job; no job
//! runs under it. After `fork()`, the child starts its own runner threads; the
//! queue's lock is held across the fork (`at_fork`), so the child never finds it
//! held by a runner thread that does not exist there.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A unit of work for the runner.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs an empty queue keeps room for; a queue that grew past this for a
/// burst gives the room back once it is empty again (a cancel that sets a
/// million callbacks free would otherwise keep 16 MB for the process's life).
const KEPT_JOBS: usize = 64;

/// How long an idle runner thread waits for work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(5);

/// Threads started at once for jobs that find no idle thread, at least.
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
const MIN_EAGER: usize = 4;

/// How long no job may finish, with jobs waiting and no thread idle, before
/// the monitor starts more threads (one, then one more than the last time at
/// each such stall in a row: see [`monitor`]).
const STALL: Duration = Duration::from_millis(1);

/// The longest the monitor waits before it tries again to start a runner
/// thread that could not start: [`STALL`] after the first failure, twice as
/// long after each further one, up to this (no busy loop of failing starts
/// while memory is short).
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
const RETRY_MAX: Duration = Duration::from_millis(500);

/// The monitor's stack. It runs no user code and little of ours (it sleeps,
/// locks the queue, starts threads), so a small stack does: one that can
/// still be had when a runner thread's full stack cannot, so that the
/// monitor is there to start that thread once it can.
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
const MONITOR_STACK: usize = 64 * 1024;

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
    /// Jobs run to their end so far (wrapping): the monitor's measure of
    /// progress. Not the jobs taken: a thread the monitor started takes one
    /// at once, and that job may block as well.
    finished: usize,
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
        finished: 0,
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
    // After a thread that could not start, the next would most likely fail
    // too: the monitor takes over.
    let started = (0..start)
        .take_while(|_| start_counted_thread(pool))
        .count();
    let failed = start - started;
    let mut monitor = monitor;
    if failed > 0 {
        monitor |= uncount_failed(pool, failed);
    }
    if monitor {
        start_counted_monitor(pool);
    }
}

/// Uncounts `failed` eager threads that could not start. Their jobs stay
/// queued, for the monitor to start threads for (module docs): returns
/// whether the caller starts it (it was not running, and jobs are queued),
/// marked running here.
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn uncount_failed(pool: &'static Pool, failed: usize) -> bool {
    let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    queue.threads -= failed;
    let monitor = !queue.jobs.is_empty() && !queue.monitor;
    queue.monitor |= monitor;
    monitor
}

/// Starts a runner thread already counted in `threads`; whether it started.
/// The caller uncounts one that could not.
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn start_counted_thread(pool: &'static Pool) -> bool {
    std::thread::Builder::new()
        .name("ctx-runner".into())
        .spawn(move || work(pool))
        .is_ok()
}

/// Starts the monitor, already marked running (`queue.monitor`), with its
/// small stack ([`MONITOR_STACK`]); unmarks it if it cannot start (the next
/// hand-over tries again).
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn start_counted_monitor(pool: &'static Pool) {
    let started = std::thread::Builder::new()
        .name("ctx-runner-monitor".into())
        .stack_size(MONITOR_STACK)
        .spawn(move || monitor(pool));
    if started.is_err() {
        pool.queue.lock().unwrap_or_else(|e| e.into_inner()).monitor = false;
    }
}

/// The monitor: while jobs wait, starts more threads each time no job
/// finished for [`STALL`] with none idle (the threads block, or run long, or
/// could not start): one after the first such stall, then one more than the
/// last time while the stalls go on (1, 2, 3, …), never more than jobs
/// wait. So the jobs behind `n` blocked ones get threads within about
/// sqrt(2`n`) stalls, not `n`; and threads that are only descheduled for a
/// while (a busy machine, quick jobs) add few threads, not a doubling pool.
/// It ends once the queue is empty. After a thread that could not
/// start, it starts one at a time again and waits twice as long before the
/// next attempt, up to [`RETRY_MAX`]. It runs no job itself.
#[cfg_attr(all(test, ctx_loom), allow(dead_code))]
fn monitor(pool: &'static Pool) {
    let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    // The monitor of this fork epoch: in a child after a fork it does not
    // exist, and the child's first job starts afresh (as for `work`).
    let epoch = queue.epoch;
    let mut pause = STALL;
    // Threads to start at the next stall.
    let mut burst = 1usize;
    loop {
        if queue.jobs.is_empty() || queue.epoch != epoch {
            if queue.epoch == epoch {
                queue.monitor = false;
            }
            return;
        }
        let finished = queue.finished;
        drop(queue);
        std::thread::sleep(pause);
        queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.epoch != epoch || queue.jobs.is_empty() {
            continue;
        }
        if queue.finished != finished || queue.idle > 0 {
            // Moving: the next stall starts over with one thread.
            burst = 1;
            continue;
        }
        let start = burst.min(queue.jobs.len());
        queue.threads += start;
        drop(queue);
        // After a thread that could not start, the next would most likely
        // fail too.
        let started = (0..start)
            .take_while(|_| start_counted_thread(pool))
            .count();
        queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
        if started == start {
            pause = STALL;
            burst = burst.saturating_add(1);
        } else {
            // The monitor never forks: still this process's epoch.
            queue.threads -= start - started;
            pause = pause.saturating_mul(2).min(RETRY_MAX);
            burst = 1;
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
            drop(queue);
            run(job);
            if crate::fork::epoch() != epoch {
                return;
            }
            queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.finished = queue.finished.wrapping_add(1);
            continue;
        }
        if queue.jobs.capacity() > KEPT_JOBS {
            // A burst is over: its room goes back (freed after the lock; the
            // buffer holds no job, so no user code runs), and the queue
            // grows again only as far as the next burst needs.
            let spare = std::mem::take(&mut queue.jobs);
            drop(queue);
            drop(spare);
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

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::{Job, KEPT_JOBS, pool, spawn_all};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A burst of jobs grows the queue; once they ran, its room goes back.
    #[test]
    fn the_queue_gives_a_bursts_room_back_once_it_is_empty() {
        const BURST: usize = 20 * KEPT_JOBS;
        let (ran, ran_rx) = mpsc::channel();
        let jobs = (0..BURST).map(|_| {
            let ran = ran.clone();
            Box::new(move || ran.send(()).unwrap()) as Job
        });
        spawn_all(jobs.collect::<Vec<_>>());
        for _ in 0..BURST {
            ran_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("every job of the burst ran");
        }
        // Other tests may queue jobs meanwhile, a few at a time: wait until
        // the queue is back to its kept room.
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let capacity = pool()
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .jobs
                .capacity();
            if capacity <= KEPT_JOBS {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "the queue kept room for {capacity} jobs after the burst"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
