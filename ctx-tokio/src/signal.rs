//! Signal contexts: Go's `signal.NotifyContext`, whose
//! [`cause`](Context::cause) names the signal ([`SignalError`]), which Go's
//! version still lacks.
//!
//! They do not use tokio's signal handling: tokio never takes its handler back,
//! so once a tokio signal stream has existed, SIGINT no longer ends the process.
//! The watcher is ctx-blocking's, the one every ctx adapter shares (one thread
//! that reads the signals; no runtime needed), which gives the default action
//! back after the stop. [`SignalStop`] documents the rule it follows.

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
