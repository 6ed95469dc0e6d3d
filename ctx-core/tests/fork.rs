//! What a child process can rely on after `fork()` (the documented caveat of
//! `StdTimer`): exact reads, a blocking `wait` that returns at the deadline, and a
//! timer of its own that fires, with `after_func` callbacks on fresh runner threads.
#![cfg(unix)]

use ctx_core::{Context, Error, StdTimer};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `child` in a forked process; true if it returned true there.
fn in_forked_child(child: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child only runs Rust code that allocates and starts threads,
    // which glibc and musl support after fork in a process whose other threads
    // hold no allocator lock at the moment of the fork: the parent is a test
    // thread that just made its contexts, and the child ends with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
#[cfg_attr(miri, ignore = "Miri cannot fork")]
#[cfg_attr(
    ctx_sanitize,
    ignore = "ThreadSanitizer cannot start threads after a multi-threaded fork"
)]
fn after_fork_reads_waits_and_a_fresh_timer_still_work() {
    // The global timer's thread exists in the parent only.
    let (warm, _cancel) = Context::background().with_timeout(Duration::from_millis(1));
    warm.wait();
    assert!(in_forked_child(|| {
        // The global timer's thread does not exist here, but reads are exact and a
        // blocking wait wakes up by itself at the deadline.
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
        ctx.wait();
        if ctx.err() != Some(Error::DeadlineExceeded) {
            return false;
        }
        // A timer made in the child has its own thread, and the callbacks it
        // sets free run on runner threads started in the child.
        let root = Context::background().with_timer(StdTimer::new());
        let (ctx, _cancel) = root.with_timeout(Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        let _registration = ctx.after_func(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(30)).is_ok() && ctx.is_done()
    }));
}
