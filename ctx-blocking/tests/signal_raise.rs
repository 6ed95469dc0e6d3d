//! Real signals, raised in this test process. This file is its own test binary
//! with a single test, because a signal reaches every signal context of the
//! process: the handlers are installed before each `raise` and a context listens
//! at that moment, so the process is never terminated by the signal.
#![cfg(unix)]

use ctx_blocking::{SignalError, background, signal_context};
use ctx_core::Error;
use std::time::Duration;

#[test]
fn sigterm_then_sigint_cancel_with_the_signal_as_cause() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let (ctx, _stop) = signal_context(&background());
        let (other, _stop_other) = signal_context(&background());
        // SAFETY: `raise` only sends a signal to this thread; the handlers are in
        // place and a context listens, so the signal cannot end the process.
        assert_eq!(unsafe { libc::raise(signal) }, 0);
        assert!(
            ctx.wait_timeout(Duration::from_secs(10)),
            "{name} was not delivered"
        );
        assert_eq!(ctx.err(), Some(Error::Canceled));
        let cause = ctx.cause().unwrap();
        let received = cause.downcast_ref::<SignalError>().expect("a signal cause");
        assert_eq!(received.signal, name);
        assert_eq!(cause.to_string(), format!("received {name}"));
        assert!(
            other.wait_timeout(Duration::from_secs(10)),
            "every listener is canceled"
        );
    }
}
