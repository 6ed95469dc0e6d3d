//! The signal context under async-std and smol, without real signals (see
//! `signal_raise.rs`; the watcher's own cases are ctx-blocking's tests).

#[macro_use]
mod support;

use ctx_async_std::{background, try_signal_context};
use ctx_core::Error;
use std::time::Duration;
use support::within;

on_both!(deadlines_below_use_the_async_io_timer);

async fn deadlines_below_use_the_async_io_timer() {
    let (ctx, _stop) = try_signal_context(&background()).expect("handlers installed");
    assert_eq!(
        ctx.to_string(),
        "context.Background.WithTimer.WithCancelCause"
    );
    let (child, _cancel) = ctx.with_timeout(Duration::from_millis(10));
    within("the deadline", child.done()).await;
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.err(), None);
}
