//! Signal contexts on tokio, without real signals (see `signal_raise.rs`; the
//! watcher's own cases are ctx-blocking's tests).

use ctx_core::{Context, Error};
use ctx_tokio::SignalError;

#[tokio::test]
async fn stop_cancels_without_a_signal_cause() {
    let (ctx, stop) = ctx_tokio::signal_context(&ctx_tokio::background());
    tokio::task::yield_now().await;
    assert_eq!(ctx.err(), None);
    stop.stop();
    let cause = ctx.cause().unwrap();
    assert_eq!(cause, Error::Canceled);
    assert!(cause.downcast_ref::<SignalError>().is_none());
}

#[tokio::test]
async fn parent_cancel_reaches_the_signal_context() {
    let (parent, cancel_parent) = ctx_tokio::background().with_cancel();
    let (ctx, _stop) = ctx_tokio::try_signal_context(&parent).unwrap();
    cancel_parent.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    // No task watches it: it left the parent with the cancel.
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn needs_no_runtime() {
    let (ctx, stop) = ctx_tokio::try_signal_context(&Context::background()).unwrap();
    assert_eq!(ctx.err(), None);
    stop.stop();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[cfg(unix)]
#[test]
fn a_kind_that_cannot_be_watched_is_an_error() {
    use tokio::signal::unix::SignalKind;
    let kill = SignalKind::from_raw(libc::SIGKILL);
    let err = ctx_tokio::signal_context_with(&Context::background(), &[kill]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}
