//! The runner: threads that run the user code a timer's expiry sets free.
//!
//! A timer backend must never wait for user code: one `after_func` callback that
//! blocks, or a `Drop` that panics, would otherwise hold back (or stop) every
//! other deadline of the backend. So an expiry walks the subtree on the timer's
//! thread (state words only) and hands the callbacks, the `Drop`s of nodes it
//! released last and the rest of its walk to the runner (see `tree::work`).
//!
//! The runner is a small pool: a job goes to an idle thread if there is one, and
//! otherwise starts a new thread, so a callback that blocks delays no other job
//! (as Go runs each `AfterFunc` on a goroutine of its own). The callbacks one
//! expiry sets free are jobs of their own (`Work::run_on_this_runner`): one
//! that blocks delays no other callback of the same expiry either. Threads that stay idle
//! for [`IDLE_EXIT`] end. A panicking job is caught (the panic hook has reported
//! it) and the thread carries on. If no thread can be started, the job stays in
//! the queue, and the next job's attempt to start a thread (or a runner that is
//! still there) takes it. It never runs on the caller's thread: callers may hold
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
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A unit of work for the runner.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle runner thread waits for work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(5);

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
    #[cfg(feature = "test-util")]
    crate::testing::count_hand_over();
    // Forks are counted from here on (the first time: registers the handler,
    // which must not happen under the queue's lock, as a fork takes it).
    crate::fork::install();
    let pool = pool();
    let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
    let epoch = crate::fork::epoch();
    if queue.epoch != epoch {
        // A child after `fork()`: no runner thread exists here.
        queue.epoch = epoch;
        queue.idle = 0;
        queue.wakeups = 0;
        queue.threads = 0;
        // The jobs queued at the fork are the parent's: it runs them (an
        // `after_func` callback must not run once in each process), and a
        // walk's rest would wait here for threads that do not exist. Leaked,
        // not dropped: their `Drop`s are user code of the parent's too.
        std::mem::forget(std::mem::take(&mut queue.jobs));
    }
    queue.jobs.push_back(job);
    if queue.idle > 0 {
        queue.idle -= 1;
        queue.wakeups += 1;
        drop(queue);
        pool.ready.notify_one();
        return;
    }
    queue.threads += 1;
    drop(queue);
    let started = std::thread::Builder::new()
        .name("ctx-runner".into())
        .spawn(move || work(pool));
    if started.is_err() {
        // The job stays queued for the next thread that starts (module docs).
        let mut queue = pool.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.threads -= 1;
    }
}

/// Under loom there are no threads to hand off to: the job runs at once.
#[cfg(all(test, ctx_loom))]
pub(crate) fn spawn(job: Job) {
    let _ = pool;
    run(job);
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
