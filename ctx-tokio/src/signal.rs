//! Signal contexts: Go's `signal.NotifyContext`, whose
//! [`cause`](Context::cause) names the signal ([`SignalError`]), which Go's
//! version still lacks.
//!
//! They do not use tokio's signal handling: tokio never takes its handler back,
//! so once a tokio signal stream has existed, SIGINT no longer ends the process.
//! The watcher is ctx-blocking's, the one every ctx adapter shares (one thread
//! that reads the signals; no runtime needed), which gives the default action
//! back after the stop. [`SignalStop`] documents the rule it follows.
//!
//! # Beside `tokio::signal`
//!
//! Both install their handlers through signal-hook's registry, and the
//! watcher's default action wins: once a signal context has watched SIGINT or
//! SIGTERM and the last one catching it is stopped (or dropped), that signal
//! ends the process again, *even while the application still listens for it
//! through `tokio::signal`* (`ctrl_c()`, `signal(SignalKind::interrupt())`):
//! the process is killed (status 130 for SIGINT, 143 for SIGTERM) before the
//! tokio listener sees anything. Before the first signal context for a signal,
//! tokio's handler alone decides. To keep listening through tokio after a
//! signal context's shutdown phase, keep a signal context for those signals
//! (and its [`SignalStop`]) alive for as long as the tokio listener must see
//! them, or stay with one mechanism. See
//! [`SignalStop`'s caveats](SignalStop#caveats).

use ctx_core::Context;
#[cfg(unix)]
use std::io;

// The same items in every adapter, documented once (in ctx-blocking).
pub use ctx_blocking::{SignalError, SignalOptions, SignalStop, try_signal_context};

/// A child of `parent` canceled, with a [`SignalError`] cause, by the first
/// Ctrl-C (SIGINT) or SIGTERM the process receives (Go's
/// `signal.NotifyContext`).
///
/// Go's rule: the signals stay caught until the returned [`SignalStop`] is
/// stopped or dropped, also after the context is done, and get their default
/// action back after it; see [`SignalStop`]. For a second Ctrl-C that ends a
/// stuck shutdown, opt in with [`SignalOptions::exit_on_second_signal`].
///
/// The default action comes back even if the application also listens for
/// SIGINT or SIGTERM through `tokio::signal`: after the last stop, such a
/// signal ends the process before the tokio listener sees it (see the module
/// docs and [`SignalStop`'s caveats](SignalStop#caveats)).
///
/// Needs no runtime, and works outside one.
///
/// # Panics
///
/// Panics if the signal handlers cannot be installed; [`try_signal_context`]
/// returns an error instead.
///
/// # Examples
///
/// ```no_run
/// #[tokio::main]
/// async fn main() {
///     let (ctx, stop) = ctx_tokio::signal_context(&ctx_tokio::background());
///     // Serve until Ctrl-C or SIGTERM.
///     ctx.done().await;
///     println!("stopping: {}", ctx.cause().unwrap()); // "stopping: received SIGINT"
///     // The graceful shutdown: further Ctrl-C are caught until the stop.
///     stop.stop();
/// }
/// ```
#[track_caller]
pub fn signal_context(parent: &Context) -> (Context, SignalStop) {
    ctx_blocking::signal_context(parent)
}

/// Like [`try_signal_context`], for the given signals (unix only): for example
/// `SignalKind::hangup()` for a reload. The same as
/// [`SignalOptions::signals`] with their raw values.
///
/// # Errors
///
/// `InvalidInput` for a signal that cannot be watched (SIGKILL, SIGSTOP, SIGILL,
/// SIGFPE, SIGSEGV, or one signal-hook does not know); the operating system's
/// error if a signal handler or the watcher thread cannot be installed.
///
/// # Examples
///
/// ```
/// use tokio::signal::unix::SignalKind;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (ctx, stop) = ctx_tokio::signal_context_with(&ctx_tokio::background(), &[SignalKind::hangup()])?;
/// stop.stop();
/// assert!(ctx.is_done());
/// # Ok(())
/// # }
/// ```
#[cfg(unix)]
pub fn signal_context_with(
    parent: &Context,
    signals: &[tokio::signal::unix::SignalKind],
) -> io::Result<(Context, SignalStop)> {
    let signals: Vec<_> = signals.iter().map(|kind| kind.as_raw_value()).collect();
    SignalOptions::new()
        .signals(&signals)
        .signal_context(parent)
}
