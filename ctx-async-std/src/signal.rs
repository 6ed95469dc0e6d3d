//! [`signal_context`]: a context canceled by SIGINT or SIGTERM (Go's
//! `signal.NotifyContext`), with a cause that names the signal.
//!
//! # How it works
//!
//! The first call installs, once per process, a watcher: an `async_signal::Signals`
//! stream for SIGINT and SIGTERM, read by a task on smol's global executor, and a
//! list of live signal contexts. A signal cancels every context on the list (and
//! empties it); a context leaves the list as soon as it is done, whatever ended it.
//!
//! While the list is empty, SIGINT and SIGTERM keep their default action (the
//! process terminates), through signal-hook's signal-safe conditional default; a
//! signal the process started out ignoring stays ignored. So a second Ctrl-C
//! during a graceful shutdown ends the program, as in Go once `stop` was called.
//!
//! On Windows only Ctrl-C (delivered as SIGINT) is watched, and the default
//! action is not restored while nobody listens: the console's Ctrl-C is then
//! ignored. This path is untested.

use async_signal::{Signal, Signals};
use ctx_core::{CancelCauseFunc, CancelFunc, Context};
use smol::stream::StreamExt as _;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::SignalError;

#[cfg(unix)]
const WATCHED: &[Signal] = &[Signal::Int, Signal::Term];
#[cfg(not(unix))]
const WATCHED: &[Signal] = &[Signal::Int];

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
/// On Windows only Ctrl-C (delivered as SIGINT) is watched, and while no signal
/// context listens the console's Ctrl-C is ignored rather than fatal (untested).
///
/// # Panics
///
/// If the signal handlers cannot be installed (the OS refused a socket pair or a
/// handler); [`try_signal_context`] returns that error instead.
///
/// # Examples
///
/// ```no_run
/// use ctx_async_std::{signal_context, SignalError};
///
/// smol::block_on(async {
///     let (ctx, _stop) = signal_context(&ctx_async_std::background());
///     ctx.done().await; // serve until Ctrl-C or SIGTERM
///     let cause = ctx.cause().unwrap();
///     eprintln!("shutting down: {cause}"); // "shutting down: received SIGINT"
///     assert!(cause.downcast_ref::<SignalError>().is_some());
/// });
/// ```
pub fn signal_context(parent: &Context) -> (Context, CancelFunc) {
    try_signal_context(parent).expect("ctx: cannot install the SIGINT/SIGTERM handlers")
}

/// Like [`signal_context`], but returns an error if the signal handlers cannot be
/// installed.
///
/// # Errors
///
/// The OS error from installing the handlers (first call only: a later call
/// retries).
pub fn try_signal_context(parent: &Context) -> io::Result<(Context, CancelFunc)> {
    let registry = registry()?;
    let (outer, stop) = parent.with_cancel();
    let (ctx, cancel) = outer.with_cancel_cause();
    let id = registry.subscribe(cancel);
    drop(ctx.after_func(move || registry.unsubscribe(id)));
    Ok((ctx, stop))
}

fn signal_error(number: i32) -> SignalError {
    #[cfg(unix)]
    if number == Signal::Term as i32 {
        return SignalError::new("SIGTERM");
    }
    debug_assert_eq!(
        number,
        Signal::Int as i32,
        "only SIGINT and SIGTERM are watched"
    );
    SignalError::new("SIGINT")
}

// ===== the process-wide watcher =====

struct Registry {
    /// The cancel functions of the live signal contexts.
    subscribers: Mutex<Vec<(u64, CancelCauseFunc)>>,
    next_id: AtomicU64,
    /// True while `subscribers` is empty: the signals get their default action.
    #[cfg(unix)]
    idle: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The watcher, installed on first use.
fn registry() -> io::Result<&'static Registry> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    static INSTALL: Mutex<()> = Mutex::new(());
    if let Some(registry) = REGISTRY.get() {
        return Ok(registry);
    }
    let _installing = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(registry) = REGISTRY.get() {
        return Ok(registry);
    }
    #[cfg(unix)]
    let idle = {
        let idle = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        for &signal in WATCHED {
            if !unix::ignored(signal as i32) {
                signal_hook::flag::register_conditional_default(signal as i32, idle.clone())?;
            }
        }
        idle
    };
    let mut signals = Signals::new(WATCHED.iter().copied())?;
    let registry = REGISTRY.get_or_init(|| Registry {
        subscribers: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(0),
        #[cfg(unix)]
        idle,
    });
    smol::spawn(async move {
        while let Some(received) = signals.next().await {
            match received {
                Ok(signal) => registry.dispatch(signal as i32),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
    .detach();
    Ok(registry)
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Vec<(u64, CancelCauseFunc)>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records whether anyone listens; under the list's lock, so the flag always
    /// matches the list.
    fn set_idle(&self, _idle: bool) {
        // SeqCst: read by the signal handler (signal-hook's conditional default);
        // nothing else is published through it.
        #[cfg(unix)]
        self.idle.store(_idle, Ordering::SeqCst);
    }

    fn subscribe(&self, cancel: CancelCauseFunc) -> u64 {
        // Relaxed: ids only need to be unique.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subscribers = self.lock();
        subscribers.push((id, cancel));
        self.set_idle(false);
        id
    }

    fn unsubscribe(&self, id: u64) {
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

    fn dispatch(&self, number: i32) {
        let subscribers = {
            let mut subscribers = self.lock();
            self.set_idle(true);
            std::mem::take(&mut *subscribers)
        };
        // Canceled outside the lock: a cancel runs the contexts' `after_func`
        // callbacks, among them `unsubscribe`.
        for (_, cancel) in subscribers {
            cancel.cancel(signal_error(number));
        }
    }
}

#[cfg(unix)]
mod unix {
    /// Whether the process started with `signal` ignored (`SIG_IGN`), as a
    /// background job of a non-interactive shell does with SIGINT.
    pub(super) fn ignored(signal: i32) -> bool {
        // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: with a null new action, `sigaction` only writes the current
        // disposition into `old`, which we own.
        let status = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
        status == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
