//! Noticing `fork()`.
//!
//! A child process starts with one thread, but with every lock exactly as the
//! parent's threads held it at the moment of the fork. A lock that one of the
//! parent's threads held then (a timer shard's, while its thread fired) stays
//! held in the child for ever. Code that must not touch such locks in a child
//! compares the fork epoch it was made in with the current one: an `atfork`
//! handler bumps it in every child. Reading it is one relaxed load.

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
    use std::sync::Once;

    unsafe extern "C" {
        fn pthread_atfork(
            prepare: Option<unsafe extern "C" fn()>,
            parent: Option<unsafe extern "C" fn()>,
            child: Option<unsafe extern "C" fn()>,
        ) -> c_int;
    }

    unsafe extern "C" fn in_child() {
        // Relaxed: the child has only this thread yet.
        EPOCH.fetch_add(1, Ordering::Relaxed);
    }

    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic, which is
        // async-signal-safe as the child's handlers must be. A failure (no
        // memory) leaves forks unnoticed, as they were before.
        let _ = unsafe { pthread_atfork(None, None, Some(in_child)) };
    });
}

/// Without `fork()` there is nothing to count.
#[cfg(all(not(unix), not(all(test, ctx_loom))))]
pub(crate) fn install() {}

/// Under loom there is nothing to install.
#[cfg(all(test, ctx_loom))]
pub(crate) fn install() {}
