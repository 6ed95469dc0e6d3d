//! [`signal_context`]: a context canceled by SIGINT or SIGTERM (Go's
//! `signal.NotifyContext`), with a cause that names the signal.
//!
//! # How it works
//!
//! The first call installs, once per process, a watcher: signal-hook's
//! `iterator::Signals` for SIGINT and SIGTERM (a self-pipe written by the signal
//! handler), read by one background thread named `ctx-signal`, and a list of live
//! signal contexts. A signal cancels every context on the list (and empties it),
//! on that thread; a context leaves the list as soon as it is done, whatever
//! ended it.
//!
//! While the list is empty, SIGINT and SIGTERM keep their default action (the
//! process terminates), through signal-hook's signal-safe conditional default; a
//! signal the process started out ignoring stays ignored. So a second Ctrl-C
//! during a graceful shutdown ends the program, as in Go once `stop` was called.
//!
//! Unix only: on other targets no signal is watched, and [`signal_context`] is a
//! plain `with_cancel` (the returned context ends only through its `CancelFunc`
//! or its parent).

use ctx_core::{CancelFunc, Context};
use std::io;

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::SignalError;

/// A child of `parent` that is canceled when the process receives SIGINT or
/// SIGTERM, with a [`SignalError`] naming the signal as its cause.
///
/// Also canceled, with [`Error::Canceled`](ctx_core::Error::Canceled), when the
/// returned [`CancelFunc`] is called or dropped (Go's `stop`), or with its parent.
/// Once the context is done it stops listening. While no signal context listens,
/// SIGINT and SIGTERM keep their default action (the process terminates; a
/// signal the process started out ignoring stays ignored), so a second Ctrl-C
/// during a graceful shutdown ends the program, as in Go once `stop` was called.
/// Every live signal context is canceled by a signal, not just the newest.
///
/// Unix only: on other targets no signal is watched and this is a plain
/// `with_cancel`. The signals are read by one background thread (`ctx-signal`),
/// started on the first call, which also runs the cancels.
///
/// # Panics
///
/// If the signal handlers or the watcher thread cannot be installed; use
/// [`try_signal_context`] to get that error instead.
///
/// # Examples
///
/// ```no_run
/// use ctx_blocking::{signal_context, SignalError};
///
/// let (ctx, _stop) = signal_context(&ctx_blocking::background());
/// ctx_blocking::wait(&ctx); // serve until Ctrl-C or SIGTERM
/// let cause = ctx.cause().unwrap();
/// eprintln!("shutting down: {cause}"); // "shutting down: received SIGINT"
/// assert!(cause.downcast_ref::<SignalError>().is_some());
/// ```
pub fn signal_context(parent: &Context) -> (Context, CancelFunc) {
    try_signal_context(parent).expect("ctx: cannot install the SIGINT/SIGTERM handlers")
}

/// Like [`signal_context`], but returns an error if the signal handlers cannot be
/// installed.
///
/// # Errors
///
/// The OS error from installing the handlers or starting the watcher thread
/// (first call only: a later call retries).
pub fn try_signal_context(parent: &Context) -> io::Result<(Context, CancelFunc)> {
    #[cfg(unix)]
    {
        let registry = unix::registry()?;
        let (outer, stop) = parent.with_cancel();
        let (ctx, cancel) = outer.with_cancel_cause();
        let id = registry.subscribe(cancel);
        drop(ctx.after_func(move || registry.unsubscribe(id)));
        Ok((ctx, stop))
    }
    #[cfg(not(unix))]
    {
        Ok(parent.with_cancel())
    }
}

// ===== the process-wide watcher =====

#[cfg(unix)]
mod unix {
    use super::SignalError;
    use ctx_core::CancelCauseFunc;
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;
    use std::io;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

    const WATCHED: [i32; 2] = [SIGINT, SIGTERM];

    pub(super) struct Registry {
        /// The cancel functions of the live signal contexts.
        subscribers: Mutex<Vec<(u64, CancelCauseFunc)>>,
        next_id: AtomicU64,
        /// True while `subscribers` is empty: the signals get their default action.
        idle: Arc<AtomicBool>,
    }

    /// The watcher, installed on first use.
    pub(super) fn registry() -> io::Result<&'static Registry> {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        static INSTALL: Mutex<()> = Mutex::new(());
        if let Some(registry) = REGISTRY.get() {
            return Ok(registry);
        }
        let _installing = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(registry) = REGISTRY.get() {
            return Ok(registry);
        }
        let idle = Arc::new(AtomicBool::new(true));
        for signal in WATCHED {
            if !ignored(signal) {
                signal_hook::flag::register_conditional_default(signal, idle.clone())?;
            }
        }
        let mut signals = Signals::new(WATCHED)?;
        let handle = signals.handle();
        let started = std::thread::Builder::new()
            .name("ctx-signal".into())
            .spawn(move || {
                let registry = loop {
                    if let Some(registry) = REGISTRY.get() {
                        break registry;
                    }
                    std::thread::park();
                };
                for signal in signals.forever() {
                    registry.dispatch(signal);
                }
            });
        let thread = match started {
            Ok(thread) => thread,
            Err(err) => {
                handle.close();
                return Err(err);
            }
        };
        let registry = REGISTRY.get_or_init(|| Registry {
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            idle,
        });
        thread.thread().unpark();
        Ok(registry)
    }

    impl Registry {
        fn lock(&self) -> MutexGuard<'_, Vec<(u64, CancelCauseFunc)>> {
            self.subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        }

        /// Records whether anyone listens; under the list's lock, so the flag
        /// always matches the list.
        fn set_idle(&self, idle: bool) {
            // SeqCst: read by the signal handler (signal-hook's conditional
            // default); nothing else is published through it.
            self.idle.store(idle, Ordering::SeqCst);
        }

        pub(super) fn subscribe(&self, cancel: CancelCauseFunc) -> u64 {
            // Relaxed: ids only need to be unique.
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut subscribers = self.lock();
            subscribers.push((id, cancel));
            self.set_idle(false);
            id
        }

        pub(super) fn unsubscribe(&self, id: u64) {
            let removed = {
                let mut subscribers = self.lock();
                let removed = subscribers
                    .iter()
                    .position(|(i, _)| *i == id)
                    .map(|at| subscribers.swap_remove(at));
                if subscribers.is_empty() {
                    self.set_idle(true);
                }
                removed
            };
            // Dropped outside the lock: its context is already done, so this is cheap.
            drop(removed);
        }

        fn dispatch(&self, signal: i32) {
            let subscribers = {
                let mut subscribers = self.lock();
                self.set_idle(true);
                std::mem::take(&mut *subscribers)
            };
            let cause = SignalError::new(if signal == SIGTERM {
                "SIGTERM"
            } else {
                "SIGINT"
            });
            // Canceled outside the lock: a cancel runs the contexts' `after_func`
            // callbacks, among them `unsubscribe`.
            for (_, cancel) in subscribers {
                cancel.cancel(cause);
            }
        }
    }

    /// Whether the process started with `signal` ignored (`SIG_IGN`), as a
    /// background job of a non-interactive shell does with SIGINT.
    fn ignored(signal: i32) -> bool {
        // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: with a null new action, `sigaction` only writes the current
        // disposition into `old`, which we own.
        let status = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
        status == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
