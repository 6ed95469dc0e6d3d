//! When a thread of ours cannot start (the process is short of memory): the
//! built-in timer and the runner stay usable, and take up their work once
//! threads can start again.
//!
//! Each test runs in a forked child whose address space is capped for a while
//! just above what it uses: no thread with a full-sized stack can start then.
#![cfg(target_os = "linux")]

mod support;

use ctx_core::{Context, StdTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{eventually, in_forked_child_status};

/// The child's exit status when the failure could not be set up.
const NO_SETUP: i32 = 2;

/// The child's address space in use, in bytes.
fn address_space_in_use() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmSize:"))
        .expect("a VmSize line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmSize in kB");
    kib * 1024
}

/// Threads parked until dropped, holding every stack the C library kept for
/// reuse (from threads that ended, in this process or in the parent before
/// the fork): a thread started while they live needs a fresh stack.
struct StackCacheDrained {
    parked: Vec<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl StackCacheDrained {
    /// Starts threads until one of them got a fresh stack (the address space
    /// in use grew by at least half a default stack), at most a thousand.
    fn new() -> Option<StackCacheDrained> {
        let mut parked = Vec::new();
        for _ in 0..1000 {
            let before = address_space_in_use();
            let done = Arc::new(AtomicBool::new(false));
            let flag = done.clone();
            let thread = std::thread::spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    std::thread::park();
                }
            });
            parked.push((done, thread));
            if address_space_in_use() >= before + (1 << 20) {
                return Some(StackCacheDrained { parked });
            }
        }
        drop(StackCacheDrained { parked });
        None
    }
}

impl Drop for StackCacheDrained {
    fn drop(&mut self) {
        for (done, thread) in self.parked.drain(..) {
            done.store(true, Ordering::SeqCst);
            thread.thread().unpark();
            thread.join().expect("a parked thread");
        }
    }
}

/// Runs `f` with the address space capped a mebibyte above what is in use: a
/// thread with a default-sized stack cannot start meanwhile. Returns what `f`
/// returned, and whether such a thread indeed could not start.
fn with_address_space_capped<R>(f: impl FnOnce() -> R) -> (R, bool) {
    let Some(drained) = StackCacheDrained::new() else {
        return (f(), false);
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let cap = libc::rlimit {
        rlim_cur: address_space_in_use() + (1 << 20),
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid limit, lowered only (the hard limit is kept).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &cap) }, 0);
    let capped = std::thread::Builder::new().spawn(|| {}).is_err();
    let result = f();
    // SAFETY: the limit read above, given back.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    drop(drained);
    (result, capped)
}

/// The first deadline on a `StdTimer` starts its thread; if that cannot start,
/// the arm panics (as `std::thread::spawn` does) and arms nothing. A later
/// deadline, once threads can start, starts the thread and fires.
///
/// The failed arm used to leave its entry in the timer's heap and the
/// thread's wake-up mark lowered to it, with no thread: no later deadline
/// that was not earlier tried to start the thread again, and none fired.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_deadline_armed_after_the_timer_thread_could_not_start_fires() {
    let status = in_forked_child_status(|| {
        // The panic below is expected: no report of it.
        std::panic::set_hook(Box::new(|_| {}));
        let timer = StdTimer::new();
        let root = Context::background().with_timer(timer.clone());
        let (first, capped) = with_address_space_capped(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                root.with_timeout(Duration::from_secs(1))
            }))
        });
        if !capped {
            return NO_SETUP;
        }
        assert!(first.is_err(), "the arm without a timer thread panics");
        assert_eq!(timer.armed(), 0, "the failed arm armed nothing");
        let fired = Arc::new(AtomicBool::new(false));
        // Later than the failed deadline: the thread is not woken for an
        // earlier one.
        let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1500));
        let flag = fired.clone();
        let _registration = ctx.after_func(move || flag.store(true, Ordering::SeqCst));
        // Only the timer sets the callback free: nothing here reads `ctx`.
        if eventually(|| fired.load(Ordering::SeqCst)) {
            0
        } else {
            1
        }
    });
    assert_ne!(status, Some(NO_SETUP), "threads could still start");
    assert_eq!(
        status,
        Some(0),
        "the later deadline never fired (1: its callback did not run within the watchdog)"
    );
}

/// A cancel hands its callback to the runner while no runner thread can
/// start: the callback stays queued, and runs once threads can start again,
/// with nothing more handed to the runner: the monitor, whose small stack
/// can be had under the cap, tries again until one starts.
///
/// It used to wait for the next job handed to the runner, if one ever came:
/// a runner thread that could not start was only uncounted, and the monitor
/// (which retries) was only started for jobs beyond the eager threads' quota.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_callback_whose_runner_thread_could_not_start_runs_once_threads_can() {
    let status = in_forked_child_status(|| {
        let ran = Arc::new(AtomicBool::new(false));
        let (ctx, cancel) = Context::background().with_cancel();
        let flag = ran.clone();
        let _registration = ctx.after_func(move || flag.store(true, Ordering::SeqCst));
        let ((), capped) = with_address_space_capped(|| cancel.cancel());
        if !capped {
            return NO_SETUP;
        }
        if eventually(|| ran.load(Ordering::SeqCst)) {
            0
        } else {
            1
        }
    });
    assert_ne!(status, Some(NO_SETUP), "threads could still start");
    assert_eq!(
        status,
        Some(0),
        "the callback never ran (1: not within the watchdog after threads could start)"
    );
}
