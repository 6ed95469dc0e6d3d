//! Thread harnesses: run an operation on several threads at once and time the
//! whole, keep a background thread busy, wait for many tasks to finish, and poll
//! a future once.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Runs `work(thread_index, ops)` on `threads` threads (the caller's thread is
/// index 0), splitting `iters` operations between them, and returns the wall time
/// from the common start until the last thread finished.
///
/// Dividing the result by `iters` gives what Go's `b.RunParallel` reports: wall
/// time per operation with all threads busy. Thread start-up is not timed.
///
/// The other threads are kept in a pool from one call to the next, as the
/// worker threads of a real program live on: a thread started for every
/// sample would make each sample measure that thread's start, its first
/// allocations and the scheduler moving it off its creator's core, and would
/// give it a new thread number (the tree's shard) every time.
pub fn run_parallel<F>(threads: usize, iters: u64, work: F) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    assert!(threads >= 1);
    let threads_u64 = threads as u64;
    let share = move |index: usize| {
        let index = index as u64;
        iters / threads_u64 + u64::from(index < iters % threads_u64)
    };
    let barrier = Barrier::new(threads);
    let run = |index: usize| {
        barrier.wait();
        work(index, share(index));
    };
    let run: &(dyn Fn(usize) + Sync) = &run;
    // SAFETY: only the lifetime changes. Every job sent below has finished
    // with `run` (its `done` message received) before this function returns
    // or unwinds: the loop below waits for all of them, and nothing before it
    // can panic once the jobs are out (this thread's own `run` is caught).
    let run: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(run) };
    let (done_tx, done) = mpsc::channel();
    {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        while pool.len() < threads - 1 {
            pool.push(Worker::start());
        }
        for (index, worker) in (1..threads).zip(pool.iter()) {
            let done_tx = done_tx.clone();
            worker.run(Box::new(move || {
                let result = panic::catch_unwind(AssertUnwindSafe(|| run(index)));
                let _ = done_tx.send(result);
            }));
        }
    }
    let mut start = None;
    let ours = panic::catch_unwind(AssertUnwindSafe(|| {
        barrier.wait();
        start = Some(Instant::now());
        work(0, share(0));
    }));
    let mut first_panic = ours.err();
    for _ in 1..threads {
        let result = done.recv().expect("a pool worker exited");
        first_panic = first_panic.or(result.err());
    }
    let elapsed = start.map(|start| start.elapsed());
    if let Some(payload) = first_panic {
        panic::resume_unwind(payload);
    }
    elapsed.expect("set above")
}

/// A job for a pool worker.
type Job = Box<dyn FnOnce() + Send>;

/// The threads `run_parallel` keeps between calls.
static POOL: Mutex<Vec<Worker>> = Mutex::new(Vec::new());

/// One pool thread, running the jobs sent to it, one after the other.
struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    fn start() -> Worker {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("bench-worker".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .expect("spawn a bench worker");
        Worker { jobs }
    }

    /// Hands `job` to the worker. Aborts if the worker is gone (it never exits:
    /// every job catches its panics): jobs already handed out would otherwise
    /// wait on their barrier for ever, borrowing a caller that unwound.
    fn run(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            eprintln!("a bench worker thread exited");
            std::process::abort();
        }
    }
}

/// A thread that runs `step` in a loop until dropped: the "other thread" of the
/// contention benchmarks.
#[derive(Debug)]
pub struct Busy {
    stop: Arc<AtomicBool>,
    steps: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Busy {
    /// Starts the thread; returns once it has run `step` at least once.
    pub fn start<F>(mut step: F) -> Busy
    where
        F: FnMut() + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let steps = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, steps) = (stop.clone(), steps.clone());
            thread::Builder::new()
                .name("churn".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            step();
                        }
                        steps.fetch_add(64, Ordering::Relaxed);
                    }
                })
                .expect("spawn the churn thread")
        };
        while steps.load(Ordering::Relaxed) == 0 {
            thread::yield_now();
        }
        Busy {
            stop,
            steps,
            thread: Some(thread),
        }
    }

    /// How many steps ran so far.
    pub fn steps(&self) -> usize {
        self.steps.load(Ordering::Relaxed)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A countdown that wakes one blocked waiter when `arrive` has been called
/// `target` times: how a benchmark learns that every task or thread observed a
/// cancel without spinning on a core the tasks need.
#[derive(Debug, Default)]
pub struct Latch {
    count: AtomicUsize,
    target: AtomicUsize,
    open: Mutex<bool>,
    cond: Condvar,
}

impl Latch {
    /// A latch to reuse across iterations; call [`reset`](Latch::reset) before each.
    pub fn new() -> Latch {
        Latch::default()
    }

    /// Arms the latch for `target` arrivals.
    pub fn reset(&self, target: usize) {
        *self.open.lock().unwrap() = false;
        self.count.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
    }

    /// One arrival; the last one opens the latch.
    pub fn arrive(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            *self.open.lock().unwrap() = true;
            self.cond.notify_all();
        }
    }

    /// Blocks until all arrivals happened.
    pub fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cond.wait(open).unwrap();
        }
    }
}

/// Sleeps in short steps until `cond` holds.
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        thread::sleep(Duration::from_micros(200));
    }
}

/// Polls `fut` once with a no-op waker; true if it was ready.
#[inline]
pub fn poll_once<F: Future>(fut: F) -> bool {
    poll_pinned(pin!(fut)).is_ready()
}

/// Polls a pinned future once with a no-op waker (for a future polled again
/// later).
#[inline]
pub fn poll_pinned<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut TaskContext::from_waker(Waker::noop()))
}
