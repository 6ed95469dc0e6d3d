//! Signal contexts in the spirit of Go's `signal.NotifyContext`: a context
//! canceled by Ctrl-C (SIGINT) or, on unix, SIGTERM, whose
//! [`cause`](Context::cause) names the signal ([`SignalError`]), which Go's
//! version still lacks.
//!
//! The signal streams are registered before the function returns, so a signal
//! that arrives right after it is not missed. A task on the runtime waits for
//! them and cancels the context; it ends (and drops the streams) as soon as the
//! context is done for any reason, which is Go's `stop()`.
//!
//! # Caveats
//!
//! Tokio never unregisters the process-level handler it installs for a signal:
//! after the first `signal_context`, a SIGINT or SIGTERM no longer terminates the
//! process by default, even once the context is done. Exit on your own after the
//! context is canceled (as the example does), or call `signal_context` again for a
//! second Ctrl-C. The runtime needs its I/O driver (`enable_io` or `enable_all`),
//! which tokio's signal support runs on.

use crate::task::watch;
use crate::timer::NoRuntime;
use ctx_core::{CancelFunc, Cause, Context};
use std::future::poll_fn;
use std::io;
use std::task::Poll;
use tokio::runtime::Handle;

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::SignalError;

/// A child of `parent` canceled, with a [`SignalError`] cause, when the process
/// receives Ctrl-C (SIGINT) or, on unix, SIGTERM; or when the returned
/// [`CancelFunc`] is called or dropped, or `parent` is done.
///
/// # Panics
///
/// Panics outside a tokio runtime, or if the signal handlers cannot be
/// registered; [`try_signal_context`] returns an error instead.
///
/// # Examples
///
/// ```no_run
/// #[tokio::main]
/// async fn main() {
///     let (ctx, _stop) = ctx_tokio::signal_context(&ctx_tokio::background());
///     // Serve until Ctrl-C or SIGTERM.
///     ctx.done().await;
///     println!("stopping: {}", ctx.cause().unwrap()); // "stopping: received SIGINT"
/// }
/// ```
#[track_caller]
pub fn signal_context(parent: &Context) -> (Context, CancelFunc) {
    match try_signal_context(parent) {
        Ok(pair) => pair,
        Err(err) => panic!("ctx_tokio::signal_context: {err}"),
    }
}

/// Like [`signal_context`], with an error instead of a panic.
///
/// # Errors
///
/// An error wrapping [`NoRuntime`] outside a tokio runtime, or the operating
/// system's error if a signal handler cannot be registered.
pub fn try_signal_context(parent: &Context) -> io::Result<(Context, CancelFunc)> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::SignalKind;
        signal_context_with(parent, &[SignalKind::interrupt(), SignalKind::terminate()])
    }
    #[cfg(windows)]
    {
        runtime()?;
        let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
        let mut ctrl_break = tokio::signal::windows::ctrl_break()?;
        let fired = async move {
            let signal = poll_fn(|cx| {
                if ctrl_c.poll_recv(cx).is_ready() {
                    Poll::Ready("SIGINT")
                } else if ctrl_break.poll_recv(cx).is_ready() {
                    Poll::Ready("SIGBREAK")
                } else {
                    Poll::Pending
                }
            })
            .await;
            Cause::new(SignalError::new(signal))
        };
        Ok(watch(parent, fired))
    }
}

/// Like [`try_signal_context`], for the given signals (unix only): for example
/// `SignalKind::hangup()` for a reload.
///
/// # Errors
///
/// An error wrapping [`NoRuntime`] outside a tokio runtime, or the operating
/// system's error if a signal handler cannot be registered.
///
/// # Examples
///
/// ```
/// use tokio::signal::unix::SignalKind;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (ctx, stop) = ctx_tokio::signal_context_with(&ctx_tokio::background(), &[SignalKind::hangup()])?;
/// stop.cancel();
/// assert!(ctx.is_done());
/// # Ok(())
/// # }
/// ```
#[cfg(unix)]
pub fn signal_context_with(
    parent: &Context,
    signals: &[tokio::signal::unix::SignalKind],
) -> io::Result<(Context, CancelFunc)> {
    use tokio::signal::unix::signal;
    let handle = runtime()?;
    let _enter = handle.enter();
    let mut streams = signals
        .iter()
        .map(|&kind| Ok((signal(kind)?, name(kind))))
        .collect::<io::Result<Vec<_>>>()?;
    let fired = async move {
        let signal = poll_fn(|cx| {
            for (stream, name) in &mut streams {
                if stream.poll_recv(cx).is_ready() {
                    return Poll::Ready(*name);
                }
            }
            Poll::Pending
        })
        .await;
        Cause::new(SignalError::new(signal))
    };
    Ok(watch(parent, fired))
}

fn runtime() -> io::Result<Handle> {
    Handle::try_current().map_err(|_| io::Error::other(NoRuntime))
}

/// The conventional name of a signal.
#[cfg(unix)]
fn name(kind: tokio::signal::unix::SignalKind) -> &'static str {
    use tokio::signal::unix::SignalKind as K;
    let names = [
        (K::interrupt(), "SIGINT"),
        (K::terminate(), "SIGTERM"),
        (K::hangup(), "SIGHUP"),
        (K::quit(), "SIGQUIT"),
        (K::user_defined1(), "SIGUSR1"),
        (K::user_defined2(), "SIGUSR2"),
        (K::alarm(), "SIGALRM"),
        (K::child(), "SIGCHLD"),
        (K::io(), "SIGIO"),
        (K::pipe(), "SIGPIPE"),
        (K::window_change(), "SIGWINCH"),
    ];
    names
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("unknown signal", |(_, name)| name)
}
