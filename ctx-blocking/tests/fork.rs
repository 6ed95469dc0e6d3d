//! Signal contexts in a child made by `fork()` while another thread of the
//! parent makes and stops signal contexts: the watcher's state lock is held
//! across the fork, so the child never finds it taken by a thread it does
//! not have. (The child's signals reach no watcher thread: see the caveats of
//! `SignalStop`. Making and stopping signal contexts there must not hang.)
#![cfg(unix)]

use ctx_blocking::{SignalOptions, background, signal_context};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a forked child ended.
#[derive(Debug, PartialEq)]
enum End {
    Exited(i32),
    Killed,
    /// Still running after the watchdog's limit (then killed).
    Hung,
}

/// Runs `child` in a forked process, killing it if it runs past `limit` (a
/// watchdog against hangs, not a timing assertion).
fn fork_child(limit: Duration, child: impl FnOnce() -> i32) -> End {
    // SAFETY: the child runs Rust code that takes locks held across the fork
    // by their `pthread_atfork` handlers (the allocator's, the watcher's), and
    // ends with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(status) };
    }
    let give_up = Instant::now() + limit;
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if waited == pid {
            return if libc::WIFEXITED(status) {
                End::Exited(libc::WEXITSTATUS(status))
            } else {
                End::Killed
            };
        }
        assert_eq!(waited, 0, "waitpid failed");
        if Instant::now() > give_up {
            // SAFETY: `pid` is our child, still running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return End::Hung;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Forks again and again while another thread makes and stops signal
/// contexts; each child makes and stops one, and drops one it inherited.
/// Before the lock was held across forks, about one child in five hung.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn a_fork_during_signal_context_churn_leaves_the_child_signal_contexts() {
    // The watcher thread starts with the first one, before the churn.
    drop(signal_context(&background()));
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (_ctx, stop) = SignalOptions::new()
                    .signals(&[libc::SIGUSR2])
                    .signal_context(&background())
                    .unwrap();
                stop.stop();
            }
        })
    };
    let mut ends = Vec::new();
    for _ in 0..100 {
        let (_ctx, inherited) = signal_context(&background());
        ends.push(fork_child(Duration::from_secs(30), move || {
            drop(inherited);
            let (ctx, stop) = signal_context(&background());
            stop.stop();
            if ctx.is_done() { 0 } else { 1 }
        }));
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let failed: Vec<_> = ends.iter().filter(|end| **end != End::Exited(0)).collect();
    assert!(
        failed.is_empty(),
        "{} of 100 children: {failed:?}",
        failed.len()
    );
}
