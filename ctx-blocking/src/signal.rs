//! Signal contexts: Go's `signal.NotifyContext`, with a cause that names the
//! signal. This module is the one implementation for every ctx adapter:
//! ctx-tokio and ctx-async-std re-export [`SignalOptions`] and [`SignalStop`]
//! from here, and their `signal_context` is [`signal_context`]. The rule they
//! follow is documented once, on [`SignalStop`].
//!
//! # How it works
//!
//! One watcher per process, started by the first signal context: signal-hook's
//! self-pipe handler for each signal any context has asked for, read by one
//! thread named `ctx-signal`. That thread runs no code of yours: it hands the
//! cancel of each context a signal fires to a short-lived thread of its own
//! (`ctx-signal-cancel`), where the wakers of that context's waiters and the
//! `Drop`s its cancel releases run (its [`after_func`](Context::after_func)
//! callbacks run on ctx-core's runner, as every callback does). So a slow or
//! blocking waker or `Drop` holds back neither the other contexts of the same
//! signal nor any later signal; a panicking one stops nothing. Should no thread
//! be available, the watcher cancels the context itself: late rather than
//! lost. Each of those signals also gets a handler of the watcher's own,
//! ahead of the self-pipe's, which counts its deliveries and runs the
//! signal's default action while no live context catches it. The count lets a
//! stop hand the signals delivered before it to the contexts itself, without
//! waiting for the watcher thread, and keeps each delivery from the contexts
//! made after it. The handlers stay installed for the life of the process
//! (signal-hook cannot take one back), so a disposition query (`sigaction`)
//! shows a handler even while the default action is in force.
//!
//! A signal the process started out ignoring (a background job of a
//! non-interactive shell ignores SIGINT) is caught while a context catches it,
//! as Go's `Notify` does, and stays ignored otherwise, in this process: see
//! [`SignalStop`](SignalStop#caveats) for the programs it starts, for other
//! signal handling in the same process, and for `fork`.

use ctx_core::{CancelCauseFunc, Context};
#[cfg(unix)]
use std::ffi::c_int;
use std::io;

#[cfg(unix)]
pub mod testing;
#[cfg(unix)]
mod watcher;

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::SignalError;

/// A child of `parent` canceled by the first SIGINT or SIGTERM, with a
/// [`SignalError`] naming it as the cause (Go's `signal.NotifyContext`).
///
/// The signals are caught from this call until the returned [`SignalStop`] is
/// stopped or dropped, even after the context is done; then their default action
/// is back. To let a second signal end the process, use
/// [`SignalOptions::exit_on_second_signal`]. The whole rule:
/// [`SignalStop`](SignalStop#gos-rule).
///
/// Needs no runtime: the signals are read by one background thread
/// (`ctx-signal`), started on the first call; each cancel a signal makes runs
/// on a short-lived thread of its own. See the [caveats](SignalStop#caveats) (`fork`, inherited
/// ignores, other signal handlers).
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
/// let (ctx, stop) = signal_context(&ctx_blocking::background());
/// ctx.wait(); // serve until Ctrl-C or SIGTERM
/// let cause = ctx.cause().unwrap();
/// eprintln!("shutting down: {cause}"); // "shutting down: received SIGINT"
/// assert!(cause.downcast_ref::<SignalError>().is_some());
/// // ... the shutdown: more Ctrl-C are caught until here ...
/// stop.stop();
/// ```
#[track_caller]
pub fn signal_context(parent: &Context) -> (Context, SignalStop) {
    match try_signal_context(parent) {
        Ok(pair) => pair,
        Err(err) => panic!("ctx: cannot install the signal handlers: {err}"),
    }
}

/// Like [`signal_context`], but returns an error if the signal handlers cannot be
/// installed.
///
/// # Errors
///
/// The OS error from installing a signal's handlers or starting the watcher
/// thread; a later call tries again.
pub fn try_signal_context(parent: &Context) -> io::Result<(Context, SignalStop)> {
    SignalOptions::new().signal_context(parent)
}

/// How to make a signal context: which signals, and whether a second one ends
/// the process.
///
/// # Examples
///
/// ```no_run
/// use ctx_blocking::SignalOptions;
///
/// # fn main() -> std::io::Result<()> {
/// // A server: Ctrl-C starts the shutdown, a second Ctrl-C ends a stuck one.
/// let (ctx, stop) = SignalOptions::new()
///     .exit_on_second_signal(true)
///     .signal_context(&ctx_blocking::background())?;
/// ctx.wait();
/// // ... the shutdown ...
/// stop.stop();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SignalOptions {
    #[cfg(unix)]
    signals: Vec<c_int>,
    #[cfg_attr(not(unix), allow(dead_code))]
    exit_on_second_signal: bool,
}

/// The stop handle of a signal context: Go's `stop`. Stopping it, or dropping it,
/// cancels the context (if it is not done yet) and stops catching its signals.
///
/// Keep it until the program's shutdown is over: `let (ctx, _stop) = …` keeps it
/// to the end of the scope, while `let (ctx, _) = …` drops it at once. When
/// [`stop`](SignalStop::stop) returns (or the drop ends), the context is done.
///
/// This is the one place that documents how every adapter's signal contexts
/// behave.
///
/// # Go's rule
///
/// From the call that makes a signal context until its `SignalStop` is stopped
/// or dropped, the process *catches* the context's signals (SIGINT and SIGTERM,
/// unless [`SignalOptions::signals`] chose others). The first one cancels the
/// context with a [`SignalError`] naming it: a signal that arrived before the
/// call never does, and one that arrived before the stop always does, by the
/// time the stop returns (Go's `Stop` waits for such signals too). Every later one is caught too and
/// does nothing, also once the context is done, whatever ended it: a burst of
/// Ctrl-C cannot kill the program while its shutdown code runs. After the stop,
/// the signals have their default action again (SIGINT and SIGTERM end the
/// process) as soon as no other live signal context catches them. A signal
/// reaches every signal context that catches it, not just the newest.
///
/// # A second signal ends the process (opt-in)
///
/// With [`SignalOptions::exit_on_second_signal`], the first signal starts the
/// graceful shutdown and the next one ends a shutdown that hangs, as operators
/// expect of a server: such a context catches its signals only until the first
/// one has canceled it. The next one gets its default action (the process is
/// killed by it, which a shell reports as status 130 for SIGINT, 143 for
/// SIGTERM), unless another live signal context still catches it. "The next
/// one" is a signal that arrives after the first has been handed to the signal
/// contexts (by the watcher thread, at once unless it is held up, or by a
/// stop): signals that arrive together are delivered as one. It counts signals, not
/// cancels: a context that its parent ended first still catches its first
/// signal (which then does nothing), and only the one after ends the process.
///
/// # Caveats
///
/// **Other signal handling in the process.** Other code that installs a
/// handler for the same signal (`tokio::signal`, `signal_hook`'s iterators or
/// flags, or anything else built on signal-hook) keeps it, but cannot keep the
/// default action away. Once a signal context has watched a signal (SIGINT,
/// SIGTERM, or another one whose default action ends the process), its default
/// action is back as soon as no signal context catches it, even while such
/// code still listens for it: after the last `SignalStop` is stopped, a Ctrl-C
/// that the application meant to see through `tokio::signal::ctrl_c()` ends the
/// process before the application can react to it. (Before the first signal
/// context for a signal, and in a process that never makes one, the other
/// handler alone decides.) To keep handling a signal another way after the
/// shutdown, keep a signal context for it (and its `SignalStop`) alive for as
/// long as that handling must see the signal. Code that installs its handler
/// with a plain `sigaction` (not through signal-hook) after the first signal
/// context for that signal replaces the watcher's handler: from then on no
/// signal context sees that signal.
///
/// **Programs started afterwards, and inherited ignores.** A signal the process
/// started out ignoring (`SIG_IGN`, such as SIGHUP under `nohup`, or SIGINT in
/// a background job) stays ignored in this process once no signal context
/// catches it, but it keeps the watcher's handler, and `exec` resets a handled
/// signal to its default action while it keeps an ignored one ignored. So once
/// a signal context has watched such a signal, the programs this process
/// starts (`std::process::Command`) no longer inherit the ignore: under
/// `nohup`, a child started afterwards is killed by SIGHUP. To pass the ignore
/// on, set it in the child before the `exec`, with
/// `std::os::unix::process::CommandExt::pre_exec` calling
/// `libc::signal(libc::SIGHUP, libc::SIG_IGN)` (async-signal-safe).
/// The watcher learns that a signal started out ignored from the signal's
/// disposition when it first watches it. If another signal-hook user (such as
/// `tokio::signal`) installed its handler for that signal first, that
/// disposition is the other handler, the ignore is no longer visible, and the
/// signal gets its default action once no signal context catches it, as any
/// other signal does: with an inherited ignore to keep, make the first signal
/// context for that signal before the other handling starts.
///
/// **`fork`.** The watcher thread, like every thread, exists only in the
/// process that started it, while its handlers and state are copied into a
/// child made by `fork()` (without `exec`). In that child, a signal only
/// reaches the self-pipe, which no thread reads (and a stop there hands no
/// signal out): a signal never cancels a signal context made there (its stop
/// and its parent still do), and while a
/// signal context is alive in it (inherited from the parent or made there),
/// SIGINT and SIGTERM do not get their default action either; they are
/// silently dropped. Make signal contexts in the process that
/// uses them: fork before the first one, or `exec` in the child (which gives
/// the handled signals their default action back, see above). A forked child
/// that goes on without `exec` should not use signal contexts, and should set
/// the signals it cares about back to `SIG_DFL` itself (`libc::signal`) if it
/// needs their default action.
///
/// Unix only: on other targets no signal is watched, and a signal context is a
/// plain `with_cancel` child that only its `SignalStop` or its parent ends.
#[must_use = "dropping a SignalStop cancels its context and stops catching the signals at once; bind it (`let (ctx, _stop) = ...`)"]
#[derive(Debug)]
pub struct SignalStop {
    /// The watcher's name for this context.
    #[cfg(unix)]
    id: u64,
    /// Cancels the context (with `Canceled`, as Go's `stop`); taken by `Drop`.
    cancel: Option<CancelCauseFunc>,
}

// ===== impl SignalOptions =====

impl SignalOptions {
    /// SIGINT and SIGTERM; a second signal is caught like the first.
    pub fn new() -> SignalOptions {
        SignalOptions {
            #[cfg(unix)]
            signals: vec![libc::SIGINT, libc::SIGTERM],
            exit_on_second_signal: false,
        }
    }

    /// Watches `signals` instead (unix only), for example `libc::SIGHUP` for a
    /// reload. An empty set makes a context that only its [`SignalStop`] or its
    /// parent ends.
    ///
    /// A signal that cannot be caught (SIGKILL, SIGSTOP), one that signal-hook
    /// refuses to handle (SIGILL, SIGFPE, SIGSEGV) and one it does not know make
    /// [`signal_context`](SignalOptions::signal_context) fail.
    #[cfg(unix)]
    pub fn signals(mut self, signals: &[c_int]) -> SignalOptions {
        self.signals = signals.to_vec();
        self
    }

    /// Whether a signal after the first one ends the process: the context stops
    /// catching its signals once one has canceled it; see
    /// [`SignalStop`](SignalStop#a-second-signal-ends-the-process-opt-in).
    /// Off by default, as in Go.
    pub fn exit_on_second_signal(mut self, exit: bool) -> SignalOptions {
        self.exit_on_second_signal = exit;
        self
    }

    /// A child of `parent` canceled by the first of the chosen signals, with a
    /// [`SignalError`] naming it as the cause; see [`signal_context`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a signal that cannot be watched (see
    /// [`signals`](SignalOptions::signals)); the OS error from installing the
    /// handlers or starting the watcher thread.
    pub fn signal_context(&self, parent: &Context) -> io::Result<(Context, SignalStop)> {
        let (ctx, cancel) = parent.with_cancel_cause();
        let stop = SignalStop {
            #[cfg(unix)]
            id: watcher::subscribe(&self.signals, self.exit_on_second_signal, cancel.canceler())?,
            cancel: Some(cancel),
        };
        Ok((ctx, stop))
    }
}

impl Default for SignalOptions {
    fn default() -> SignalOptions {
        SignalOptions::new()
    }
}

// ===== impl SignalStop =====

impl SignalStop {
    /// Cancels the context (if it is not done yet) and stops catching its
    /// signals (Go's `stop`). The same as dropping it.
    pub fn stop(self) {
        drop(self);
    }

    /// The same as [`stop`](SignalStop::stop): what a `CancelFunc` in its place
    /// would be called with (signal contexts used to return one).
    pub fn cancel(self) {
        self.stop();
    }
}

impl Drop for SignalStop {
    fn drop(&mut self) {
        // The signals first, so that a panicking `Drop` released by the cancel
        // cannot leave them caught.
        #[cfg(unix)]
        watcher::unsubscribe(self.id);
        // Cancels the context with `Canceled` (unless a signal was first). Done
        // when this returns, also if the watcher is canceling it right now.
        drop(self.cancel.take());
    }
}
