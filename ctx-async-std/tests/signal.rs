//! The signal context, without sending real signals (see `signal_raise.rs`).

use ctx_async_std::{background, signal_context, try_signal_context};
use ctx_core::Error;

#[test]
fn canceled_through_its_cancel_func() {
    let (ctx, stop) = signal_context(&background());
    assert!(!ctx.is_done());
    stop.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap().as_error(), Some(Error::Canceled));
}

#[test]
fn dropping_the_cancel_func_cancels() {
    let ctx = {
        let (ctx, _stop) = signal_context(&background());
        ctx
    };
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn canceled_with_its_parent() {
    let (parent, cancel) = background().with_cancel();
    let (ctx, _stop) = signal_context(&parent);
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn many_contexts_come_and_go() {
    let contexts: Vec<_> = (0..100).map(|_| signal_context(&background())).collect();
    assert!(contexts.iter().all(|(ctx, _)| !ctx.is_done()));
    drop(contexts);
}

#[test]
fn try_signal_context_installs_the_handlers() {
    let (ctx, stop) = try_signal_context(&background()).expect("handlers installed");
    assert_eq!(
        ctx.to_string(),
        "context.Background.WithTimer.WithCancel.WithCancelCause"
    );
    stop.cancel();
    assert!(ctx.is_done());
}
