//! [`signal_context`]: Go's `signal.NotifyContext`, with a cause that names the
//! signal.
//!
//! The watcher is ctx-blocking's, the one every ctx adapter shares: one thread
//! that reads the signals and cancels the contexts, so it needs no executor and
//! works the same under async-std and smol. [`SignalStop`] documents the rule
//! it follows.

use ctx_core::Context;

// The same items in every adapter, documented once (in ctx-blocking).
pub use ctx_blocking::{SignalError, SignalOptions, SignalStop, try_signal_context};

/// A child of `parent` that the first SIGINT or SIGTERM cancels, with a
/// [`SignalError`] cause that names it (Go's `signal.NotifyContext`).
///
/// As in Go, the process catches these signals until the returned
/// [`SignalStop`] is stopped or dropped, even once the context is done, and
/// their default action is back after that (the details are on
/// [`SignalStop`]). A second signal ends the process only with
/// [`SignalOptions::exit_on_second_signal`].
///
/// # Panics
///
/// If the signal handlers cannot be installed; [`try_signal_context`] returns
/// that error instead.
///
/// # Examples
///
/// ```no_run
/// use ctx_async_std::{signal_context, SignalError};
///
/// smol::block_on(async {
///     let (ctx, stop) = signal_context(&ctx_async_std::background());
///     ctx.done().await; // serve until Ctrl-C or SIGTERM
///     let cause = ctx.cause().unwrap();
///     eprintln!("shutting down: {cause}"); // "shutting down: received SIGINT"
///     assert!(cause.downcast_ref::<SignalError>().is_some());
///     // Shut down; Ctrl-C is still caught until:
///     stop.stop();
/// });
/// ```
#[track_caller]
pub fn signal_context(parent: &Context) -> (Context, SignalStop) {
    ctx_blocking::signal_context(parent)
}
