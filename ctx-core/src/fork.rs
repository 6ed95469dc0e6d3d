//! Noticing `fork()`.
//!
//! A child process starts with one thread, but with every lock exactly as the
//! parent's threads held it at the moment of the fork. A lock that one of the
//! parent's threads held then (a timer shard's, while its thread fired) stays
//! held in the child for ever. Code that must not touch such locks in a child
//! compares the fork epoch it was made in with the current one: an `atfork`
//! handler bumps it in every child. Reading it is one relaxed load.
//!
//! The runner's queue lock is the one lock a child must take again (it starts
//! its own runner threads), so the handlers hold it across the fork: it is
//! taken just before, and released just after in the parent and in the child
//! (`runner::at_fork`). Its holders never wait for anything but the allocator
//! under it, so taking it before a fork cannot deadlock.
//!
//! What the parent's threads were doing to the tree itself is not carried
//! over: a walk under way at the fork (its stack is that thread's), or a
//! waiters' list locked by another thread, stays as the fork found it, and
//! a child that touches those contexts may wait for ever (`StdTimer`'s
//! "Caveats: `fork`" says so to users). Holding every walk and every list
//! lock across a fork would cost every cancel a shared counter, which the
//! tree is built to avoid.

#[cfg(not(all(test, ctx_loom)))]
use crate::sync::{AtomicUsize, Ordering};

/// How many forks led to this process (0 in a process that was not forked since
/// the handler was installed).
#[cfg(not(all(test, ctx_loom)))]
static EPOCH: AtomicUsize = AtomicUsize::new(0);

/// The current fork epoch: one relaxed load. Meaningful once [`install`] ran
/// (code that compares epochs installs the handler when it records its own).
#[cfg(not(all(test, ctx_loom)))]
pub(crate) fn epoch() -> usize {
    // Relaxed: the child's handler runs on its only thread before any of its code.
    EPOCH.load(Ordering::Relaxed)
}

/// Installs the handler that counts forks (once per process), then returns
/// the current epoch.
pub(crate) fn installed_epoch() -> usize {
    install();
    epoch()
}

/// Under loom there are no forks (and its atomics cannot live in statics).
#[cfg(all(test, ctx_loom))]
pub(crate) fn epoch() -> usize {
    0
}

#[cfg(all(unix, not(all(test, ctx_loom))))]
pub(crate) fn install() {
    use std::ffi::c_int;

    unsafe extern "C" {
        fn pthread_atfork(
            prepare: Option<unsafe extern "C" fn()>,
            parent: Option<unsafe extern "C" fn()>,
            child: Option<unsafe extern "C" fn()>,
        ) -> c_int;
    }

    unsafe extern "C" fn before() {
        crate::runner::at_fork::prepare();
    }

    unsafe extern "C" fn in_parent() {
        crate::runner::at_fork::release();
    }

    unsafe extern "C" fn in_child() {
        // Relaxed: the child has only this thread yet.
        EPOCH.fetch_add(1, Ordering::Relaxed);
        crate::runner::at_fork::release();
    }

    // Relaxed: only whether to go on; `install_slow` orders what it needs.
    if INSTALL.load(Ordering::Relaxed) == INSTALLED {
        return;
    }
    install_slow(|| {
        // SAFETY: registers handlers that touch an atomic and take or release
        // one mutex the forking thread does not hold (no code of ours forks
        // under it); in the child that is an atomic swap and at most a futex
        // wake, async-signal-safe as the child's handlers must be. A failure
        // (no memory) leaves forks unnoticed, as they were before.
        let _ = unsafe { pthread_atfork(Some(before), Some(in_parent), Some(in_child)) };
    });
}

/// Where the handlers' registration stands: [`NOBODY`] yet, [`INSTALLED`], or,
/// while a thread registers them, the id of its process.
#[cfg(all(unix, not(all(test, ctx_loom))))]
static INSTALL: crate::sync::AtomicU64 = crate::sync::AtomicU64::new(NOBODY);
#[cfg(all(unix, not(all(test, ctx_loom))))]
const NOBODY: u64 = 0;
#[cfg(all(unix, not(all(test, ctx_loom))))]
const INSTALLED: u64 = u64::MAX;

/// The registration, once per process, with `register`.
///
/// Not a `Once`: a fork on another thread while one thread is inside it would
/// leave the child's copy in progress for ever, and every later call there
/// would wait for it (the registering thread does not exist in the child).
/// So the registering thread marks the state with its process's id: a thread
/// of the same process waits a moment for it, and one that finds another
/// process's id is in a child forked in the middle of it, and takes over. Such
/// a fork may have come before the handlers were registered (then nothing
/// counted it), so the taking over counts it; if they did see it, it counts
/// twice, which is harmless (epochs only need to differ), and so is a second
/// registration (the handlers tolerate running twice, see
/// `runner::at_fork::prepare`).
#[cfg(all(unix, not(all(test, ctx_loom))))]
#[cold]
fn install_slow(register: impl FnOnce()) {
    let me = u64::from(std::process::id());
    // Acquire (here and below): sees the registration of the thread that
    // stored `INSTALLED`.
    let mut state = INSTALL.load(Ordering::Acquire);
    loop {
        if state == INSTALLED {
            return;
        }
        if state == me {
            // Another thread of this process is registering: a moment.
            std::thread::yield_now();
            state = INSTALL.load(Ordering::Acquire);
            continue;
        }
        if let Err(now) = INSTALL.compare_exchange(state, me, Ordering::Acquire, Ordering::Acquire)
        {
            state = now;
            continue;
        }
        if state != NOBODY {
            // Relaxed: as in the child's handler; epochs are compared by the
            // threads of this process, which start after this.
            EPOCH.fetch_add(1, Ordering::Relaxed);
        }
        register();
        // Release: the registration before the threads that see `INSTALLED`.
        INSTALL.store(INSTALLED, Ordering::Release);
        return;
    }
}

/// Without `fork()` there is nothing to count.
#[cfg(all(not(unix), not(all(test, ctx_loom))))]
pub(crate) fn install() {}

/// Under loom there is nothing to install.
#[cfg(all(test, ctx_loom))]
pub(crate) fn install() {}
