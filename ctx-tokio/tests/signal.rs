//! Signal contexts: canceled through the CancelFunc, through the parent, and (on
//! unix) by a real signal raised to this test process itself.
//!
//! Raising SIGINT or SIGTERM here is safe: `signal_context` registers tokio's
//! handler before it returns, which replaces the default action (termination) for
//! the rest of this test binary. The tests of this file share one lock, because a
//! raised signal reaches every live signal context of the process.

#![cfg(any(unix, windows))]

use ctx_core::Error;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

#[tokio::test]
async fn cancel_func_cancels_without_a_signal_cause() {
    let _serial = SERIAL.lock().await;
    let (ctx, stop) = ctx_tokio::signal_context(&ctx_tokio::background());
    assert_eq!(ctx.err(), None);
    stop.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap(), Error::Canceled);
    assert!(
        ctx.cause()
            .unwrap()
            .downcast_ref::<ctx_tokio::SignalError>()
            .is_none()
    );
}

#[tokio::test]
async fn parent_cancel_reaches_the_signal_context() {
    let _serial = SERIAL.lock().await;
    let (parent, cancel_parent) = ctx_tokio::background().with_cancel();
    let (ctx, _stop) = ctx_tokio::try_signal_context(&parent).unwrap();
    cancel_parent.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    // The watching task ends with the context.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn outside_a_runtime_is_an_error() {
    let err = ctx_tokio::try_signal_context(&ctx_core::Context::background()).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[cfg(unix)]
#[test]
fn an_empty_signal_set_is_canceled_only_by_its_func() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (ctx, stop) = ctx_tokio::signal_context_with(&ctx_tokio::background(), &[]).unwrap();
        tokio::task::yield_now().await;
        assert_eq!(ctx.err(), None);
        stop.cancel();
        assert_eq!(ctx.err(), Some(Error::Canceled));
    });
}

#[cfg(unix)]
mod real_signals {
    use super::SERIAL;
    use ctx_core::Error;
    use ctx_tokio::SignalError;
    use std::time::Duration;
    use tokio::signal::unix::SignalKind;

    async fn raised(signal: libc::c_int, ctx: &ctx_core::Context) -> SignalError {
        // SAFETY: `raise` only sends a signal to this thread; the handler tokio
        // registered (inside `signal_context`) runs instead of the default action.
        let rc = unsafe { libc::raise(signal) };
        assert_eq!(rc, 0);
        tokio::time::timeout(Duration::from_secs(10), ctx.done())
            .await
            .expect("the signal canceled the context");
        assert_eq!(ctx.err(), Some(Error::Canceled));
        *ctx.cause()
            .unwrap()
            .downcast_ref::<SignalError>()
            .expect("a SignalError cause")
    }

    #[tokio::test]
    async fn sigterm_cancels_with_its_name() {
        let _serial = SERIAL.lock().await;
        let (ctx, _stop) = ctx_tokio::signal_context(&ctx_tokio::background());
        let signal = raised(libc::SIGTERM, &ctx).await;
        assert_eq!(signal.signal, "SIGTERM");
        assert_eq!(signal.to_string(), "received SIGTERM");
    }

    #[tokio::test]
    async fn sigint_cancels_with_its_name() {
        let _serial = SERIAL.lock().await;
        let (ctx, _stop) = ctx_tokio::signal_context(&ctx_tokio::background());
        let signal = raised(libc::SIGINT, &ctx).await;
        assert_eq!(signal.signal, "SIGINT");
    }

    #[tokio::test]
    async fn chosen_signals_only() {
        let _serial = SERIAL.lock().await;
        let root = ctx_tokio::background();
        let (hup, _stop_hup) =
            ctx_tokio::signal_context_with(&root, &[SignalKind::hangup()]).unwrap();
        let (usr1, _stop_usr1) =
            ctx_tokio::signal_context_with(&root, &[SignalKind::user_defined1()]).unwrap();
        let signal = raised(libc::SIGUSR1, &usr1).await;
        assert_eq!(signal.signal, "SIGUSR1");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(hup.err(), None, "SIGUSR1 must not cancel a SIGHUP context");
        let signal = raised(libc::SIGHUP, &hup).await;
        assert_eq!(signal.signal, "SIGHUP");
    }
}
