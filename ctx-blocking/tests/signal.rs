//! The signal context, without sending real signals (see `signal_raise.rs`).

use ctx_blocking::{background, signal_context, try_signal_context};
use ctx_core::Error;

#[test]
fn stop_cancels_without_a_signal_cause() {
    let (ctx, stop) = signal_context(&background());
    assert!(!ctx.is_done());
    stop.stop();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap().as_error(), Some(Error::Canceled));
}

#[test]
fn dropping_the_stop_handle_cancels() {
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
    let (ctxs, stops): (Vec<_>, Vec<_>) = contexts.into_iter().unzip();
    drop(stops);
    assert!(ctxs.iter().all(|ctx| ctx.err() == Some(Error::Canceled)));
}

#[test]
fn try_signal_context_installs_the_handlers() {
    let (ctx, stop) = try_signal_context(&background()).expect("handlers installed");
    assert!(!ctx.is_done());
    stop.stop();
    assert!(ctx.is_done());
}

#[cfg(unix)]
#[test]
fn signals_that_cannot_be_watched_are_an_error() {
    for signal in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 0, 1000] {
        let err = ctx_blocking::SignalOptions::new()
            .signals(&[libc::SIGHUP, signal])
            .signal_context(&background())
            .expect_err("not a signal to watch");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{signal}: {err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn an_empty_signal_set_ends_only_through_its_stop() {
    let (ctx, stop) = ctx_blocking::SignalOptions::new()
        .signals(&[])
        .signal_context(&background())
        .unwrap();
    assert_eq!(ctx.err(), None);
    stop.stop();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}
