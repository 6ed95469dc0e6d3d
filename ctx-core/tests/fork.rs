//! What a child process can rely on after `fork()` (the documented caveat of
//! `StdTimer`): exact reads, a blocking `wait` that returns at the deadline, and a
//! timer of its own that fires, with `after_func` callbacks on fresh runner threads,
//! whatever the parent's timer and runner threads were doing at the fork.
#![cfg(unix)]

mod support;

use ctx_core::{Context, Error, StdTimer};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use support::{in_forked_child_status, wait_for_child};

/// Runs `child` in a forked process; true if it returned true there.
fn in_forked_child(child: impl FnOnce() -> bool) -> bool {
    in_forked_child_status(|| if child() { 0 } else { 1 }) == Some(0)
}

/// Threads (four per core) that run one step again and again until dropped.
struct Churn {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Churn {
    fn start(step: fn()) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let count = std::thread::available_parallelism().map_or(8, |n| n.get() * 4);
        let threads = (0..count.min(256))
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        step();
                    }
                })
            })
            .collect();
        Churn { stop, threads }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let joined = thread.join();
            // A failing test is already unwinding: its own message counts.
            assert!(
                joined.is_ok() || std::thread::panicking(),
                "a churn thread panicked"
            );
        }
    }
}

/// A fork can catch another thread inside the global timer, holding one of its
/// locks, which then stays held in the child for ever. The child must still be
/// able to make timeouts under that timer (which arms nothing there) and cancel
/// them. Forks repeatedly while a thread arms and disarms without pause.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_fork_during_arms_and_disarms_leaves_the_child_able_to_make_timeouts() {
    // The global timer exists before the churn starts (a fork in the middle of
    // its first initialization is another test's: the next one).
    drop(Context::background().with_timeout(Duration::from_secs(60)));
    // Enough threads that some share the forking thread's shard of the timer
    // (it has twice as many shards as cores, at most 64).
    let _churn = Churn::start(|| {
        let (_ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
        cancel.cancel();
    });
    for round in 0..50 {
        let ok = in_forked_child(|| {
            let made: Vec<_> = (0..100)
                .map(|_| Context::background().with_timeout(Duration::from_secs(60)))
                .collect();
            let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(5));
            ctx.wait();
            made.iter().all(|(ctx, _)| ctx.err().is_none())
                && ctx.err() == Some(Error::DeadlineExceeded)
        });
        assert!(ok, "round {round}: the forked child hung or failed");
    }
}

/// The root that `a_fork_during_registrations_leaves_the_child_able_to_cancel`
/// churns children under.
static REGISTRATION_ROOT: std::sync::OnceLock<Context> = std::sync::OnceLock::new();

/// A fork can catch another thread in the middle of a registration: between
/// the CAS that flags a node as having children and the store of its entry,
/// say. The child process has no such thread, so nothing it does may wait for
/// that registration to finish: its cancel of the whole tree must return.
/// Threads make a child and a grandchild (each the first registrant of its
/// parent) again and again, and never cancel anything in the parent process
/// (their cancel functions become `Canceler`s, whose drop cancels nothing).
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_fork_during_registrations_leaves_the_child_able_to_cancel() {
    let (root, cancel_root) = Context::background().with_cancel();
    let canceler = cancel_root.into_canceler();
    // The root's own inline slot is taken, so the churn's children go to its
    // set; their own children are each their parent's first registrant.
    let (_first, _first_cancel) = root.with_cancel();
    REGISTRATION_ROOT
        .set(root)
        .expect("the only user of this root");
    let _churn = Churn::start(|| {
        let root = REGISTRATION_ROOT.get().expect("set above");
        let (child, cancel_child) = root.with_cancel();
        let child_canceler = cancel_child.into_canceler();
        let (grandchild, cancel_grandchild) = child.with_cancel();
        drop((grandchild, cancel_grandchild.into_canceler()));
        drop((child, child_canceler));
    });
    for round in 0..200 {
        let canceler = canceler.clone();
        let ok = in_forked_child(move || {
            canceler.cancel();
            REGISTRATION_ROOT.get().is_some_and(|root| root.is_done())
        });
        assert!(
            ok,
            "round {round}: the forked child's cancel hung or failed"
        );
    }
}

/// Set in the processes that `a_fork_during_the_first_use_on_other_threads`
/// starts: they run one round of it.
const FIRST_USE_ROUND: &str = "CTX_FORK_TEST_FIRST_USE_ROUND";

/// What the library makes once per process on first use (the fork handler's
/// registration, the global timer, the runner's pool) may be in the making
/// on other threads when a fork happens. A global made lazily under a lock or
/// a `Once` stays "in the making" for ever in the child, whose copy of that
/// thread does not exist, and the child's first use of it hangs. The child
/// must still make deadlines on a fresh timer and on the global one, and get
/// its callbacks run. First uses happen once per process, so each round is a
/// process of its own: this test binary, run again for this test alone.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_fork_during_the_first_use_on_other_threads_leaves_the_child_working() {
    const NAME: &str = "a_fork_during_the_first_use_on_other_threads_leaves_the_child_working";
    if std::env::var_os(FIRST_USE_ROUND).is_some() {
        first_use_round();
        return;
    }
    for round in 0..200 {
        let run = support::rerun_in_own_process(NAME, FIRST_USE_ROUND);
        assert!(
            run.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// One round: threads make what the library makes once per process, all at
/// once, while this thread forks. (They start no thread doing so: the standard
/// library's own bookkeeping of a thread that starts or ends at the fork would
/// be held for ever in the child, and hang every thread the child starts.)
fn first_use_round() {
    let start = Arc::new(std::sync::Barrier::new(9));
    // Held until the fork is over: a thread that ended at the fork would be
    // such a thread too.
    let (forked, wait_for_the_fork) = mpsc::channel::<()>();
    let wait_for_the_fork = Arc::new(std::sync::Mutex::new(wait_for_the_fork));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let start = start.clone();
            let wait_for_the_fork = wait_for_the_fork.clone();
            std::thread::spawn(move || {
                start.wait();
                // The fork handlers' registration, and the global timer.
                drop(StdTimer::new());
                drop(StdTimer::global());
                let _ = wait_for_the_fork.lock().unwrap().recv();
            })
        })
        .collect();
    start.wait();
    let status = in_forked_child_status(|| {
        let root = Context::background().with_timer(StdTimer::new());
        let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1));
        let (tx, rx) = mpsc::channel();
        let _registration = ctx.after_func(move || tx.send(()).unwrap());
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            return 2;
        }
        // The global timer: made in the parent or here; either way a blocking
        // wait ends at the deadline.
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(1));
        ctx.wait();
        if ctx.err() == Some(Error::DeadlineExceeded) {
            0
        } else {
            3
        }
    });
    drop(forked);
    for thread in threads {
        thread.join().unwrap();
    }
    let failure = match status {
        Some(0) => return,
        None => "it hung for a minute",
        Some(2) => "its callback did not run within 30 s",
        Some(3) => "a wait on the global timer ended before the deadline",
        Some(101) => "it panicked",
        Some(_) => "it exited oddly",
    };
    panic!("the forked child failed: {failure} (status {status:?})");
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn after_fork_reads_waits_and_a_fresh_timer_still_work() {
    // The global timer's thread exists in the parent only, and so does the
    // runner thread that ran the callback its expiry set free (idle now, and
    // counted as such in the runner's queue, which the child inherits).
    let (warm, _cancel) = Context::background().with_timeout(Duration::from_millis(1));
    let (ran, on_runner) = mpsc::channel();
    let _warm_registration = warm.after_func(move || ran.send(()).unwrap());
    warm.wait();
    on_runner
        .recv_timeout(Duration::from_secs(30))
        .expect("the parent's runner ran the callback");
    let status = in_forked_child_status(|| {
        // The global timer's thread does not exist here, but reads are exact and a
        // blocking wait wakes up by itself at the deadline.
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
        ctx.wait();
        if ctx.err() != Some(Error::DeadlineExceeded) {
            return 2;
        }
        // A timer made in the child has its own thread, and the callbacks it
        // sets free run on runner threads started in the child (the parent's
        // idle one does not exist here).
        let root = Context::background().with_timer(StdTimer::new());
        let (ctx, _cancel) = root.with_timeout(Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        let _registration = ctx.after_func(move || tx.send(()).unwrap());
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            return 3;
        }
        if ctx.is_done() { 0 } else { 4 }
    });
    // Each way the child can fail says which step it was.
    let failure = match status {
        Some(0) => return,
        None => "it hung for a minute",
        Some(2) => "a blocking wait on the global timer ended before its deadline",
        Some(3) => "the callback of a fresh timer's expiry did not run within 30 s",
        Some(4) => "the context whose callback ran is not done",
        Some(101) => "it panicked",
        Some(_) => "it exited oddly",
    };
    panic!("the forked child failed: {failure} (status {status:?})");
}

/// The process whose churn threads made the callbacks below.
static PARENT: AtomicU32 = AtomicU32::new(0);
/// How many of the parent's callbacks ran in this process although it is not
/// the parent (counted in a forked child, which inherits the zero).
static PARENT_CALLBACKS_RUN_HERE: AtomicUsize = AtomicUsize::new(0);

/// A fork can catch a runner thread while it takes a job from the runner's
/// queue, holding the queue's lock, or the timer's thread while it hands one
/// over. The child's own expiries must still get their callbacks run, and the
/// jobs queued at the fork must not run there: they are the parent's, which
/// runs them (an `after_func` callback would run once in each process).
/// Forks repeatedly while expiries with callbacks keep the runner busy.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_fork_while_the_runner_takes_jobs_leaves_the_child_a_runner_and_not_the_parents_jobs() {
    PARENT.store(std::process::id(), Ordering::Relaxed);
    let _churn = Churn::start(|| {
        // Each expiry hands its callback to the runner.
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_micros(20));
        let _registration = ctx.after_func(|| {
            if std::process::id() != PARENT.load(Ordering::Relaxed) {
                PARENT_CALLBACKS_RUN_HERE.fetch_add(1, Ordering::SeqCst);
            }
        });
        ctx.wait();
    });
    // The runner's threads start while the churn warms up. A fork while a
    // thread starts or ends catches the standard library's own bookkeeping
    // of threads (the lock of `stack_overflow::thread_info`) held, for ever
    // in the child, where every thread then hangs as it starts: not ours to
    // fix, and not what this tests. The runner still starts and ends threads
    // as the churn's demand varies, so a child first checks that a thread of
    // its own starts; one that does not is a round the fork made
    // inconclusive (seen: about one round in 20,000), not a failure.
    std::thread::sleep(Duration::from_millis(200));
    let mut inconclusive = 0;
    for round in 0..2000 {
        let status = in_forked_child_status(|| {
            let (started, probe) = mpsc::channel();
            std::thread::spawn(move || started.send(()).unwrap());
            if probe.recv_timeout(Duration::from_secs(10)).is_err() {
                return 5;
            }
            let timer = StdTimer::new();
            let root = Context::background().with_timer(timer.clone());
            let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1));
            let (tx, rx) = mpsc::channel();
            // Late (a run after the wait below gave up, when the child's
            // handles drop): nobody listens, and the failure is the wait's.
            let _registration = ctx.after_func(move || {
                let _ = tx.send(());
            });
            if rx.recv_timeout(Duration::from_secs(30)).is_err() {
                // Which part never happened: the timer's firing (it would
                // have let go of the deadline), or the callback's run.
                return if timer.armed() == 0 { 2 } else { 3 };
            }
            // Room for jobs queued before ours to finish on other runner
            // threads, had they been taken.
            std::thread::sleep(Duration::from_millis(2));
            if PARENT_CALLBACKS_RUN_HERE.load(Ordering::SeqCst) == 0 {
                0
            } else {
                4
            }
        });
        let failure = match status {
            Some(0) => continue,
            Some(5) if inconclusive < 20 => {
                inconclusive += 1;
                continue;
            }
            Some(5) => "no thread of its own started, in more than 1% of the rounds",
            None => "hung for a minute",
            Some(2) => "its timer fired, but the callback did not run within 30 s",
            Some(3) => "its timer did not fire its 1 ms deadline within 30 s",
            Some(4) => "it ran a callback of the parent's",
            Some(101) => "it panicked",
            Some(_) => "it exited oddly",
        };
        panic!("round {round}: the forked child failed: {failure} (status {status:?})");
    }
}

/// A runner job that forks (an `after_func` callback calling `fork()`) brings
/// its runner thread into the child, where the runner never counted it. It
/// used to go back to waiting for jobs there, on the parent's counts: it took
/// the child's jobs (promised to the child's own threads) and, once idle long
/// enough, its decrements underflowed the child's counts, after which the
/// runner promised wake-ups to threads that did not exist and the child's
/// callbacks stopped running. It leaves instead; the child's jobs run on
/// threads of the child's runner.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_fork_from_a_runner_job_leaves_the_forking_thread_out_of_the_childs_runner() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(1));
    let (forked, pid) = mpsc::channel();
    let _registration = ctx.after_func(move || {
        // SAFETY: as in `support::in_forked_child_status`; the child ends with `_exit`.
        let child = unsafe { libc::fork() };
        if child != 0 {
            forked.send(child).unwrap();
            return;
        }
        // The child, on the runner thread that forked.
        let forking_thread = std::thread::current().id();
        std::thread::spawn(move || {
            let root = Context::background().with_timer(StdTimer::new());
            let mut status = 0;
            for _ in 0..40 {
                let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1));
                let (ran_on, ran) = mpsc::channel();
                let _registration = ctx.after_func(move || {
                    let _ = ran_on.send(std::thread::current().id());
                });
                match ran.recv_timeout(Duration::from_secs(30)) {
                    Ok(thread) if thread == forking_thread => status = 2,
                    Ok(_) => {}
                    Err(_) => status = 3,
                }
                if status != 0 {
                    break;
                }
            }
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(status) };
        });
    });
    let pid = pid
        .recv_timeout(Duration::from_secs(30))
        .expect("the callback never forked");
    assert_eq!(
        wait_for_child(pid),
        Some(0),
        "2: a child's job ran on the thread that forked; 3: a child's callback never ran"
    );
}
