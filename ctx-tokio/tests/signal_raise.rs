//! Real signals on tokio: Go's rule for signal contexts, and the signals chosen
//! with `signal_context_with`. Each test runs in a child process; the harness
//! and the scenarios every adapter runs come from ctx-blocking, as does the
//! watcher.
#![cfg(unix)]

use ctx_blocking::__private::signal_testing::{
    WATCHDOG, assert_canceled_by, in_child, raise, stage,
};
use ctx_core::Context;
use ctx_tokio::{SignalOptions, SignalStop};
use std::sync::LazyLock;
use tokio::runtime::Runtime;
use tokio::signal::unix::SignalKind;

/// The runtime of the child's scenario: its contexts derive from
/// `ctx_tokio::background()` and are awaited on it.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| Runtime::new().expect("a runtime"));

fn start(options: SignalOptions) -> (Context, SignalStop) {
    let _runtime = RUNTIME.enter();
    options.signal_context(&ctx_tokio::background()).unwrap()
}

fn wait(ctx: &Context) -> bool {
    RUNTIME
        .block_on(async { tokio::time::timeout(WATCHDOG, ctx.done()).await })
        .is_ok()
}

ctx_blocking::__every_adapter_runs! {
    start: || {
        let _runtime = RUNTIME.enter();
        ctx_tokio::signal_context(&ctx_tokio::background())
    },
    opted_in: || start(SignalOptions::new().exit_on_second_signal(true)),
    second: (libc::SIGINT, "SIGINT"),
    wait: wait,
}

#[test]
fn chosen_signals_only() {
    in_child("chosen_signals_only", || {
        let _runtime = RUNTIME.enter();
        let root = ctx_tokio::background();
        let (hup, stop_hup) =
            ctx_tokio::signal_context_with(&root, &[SignalKind::hangup()]).unwrap();
        let (usr1, _stop_usr1) =
            ctx_tokio::signal_context_with(&root, &[SignalKind::user_defined1()]).unwrap();
        raise(libc::SIGUSR1, 1);
        assert!(wait(&usr1), "SIGUSR1 did not cancel its context");
        assert_canceled_by(&usr1, "SIGUSR1");
        // The watcher handles one signal at a time: SIGUSR1 is done with.
        assert_eq!(hup.err(), None, "SIGUSR1 canceled a SIGHUP context");
        raise(libc::SIGHUP, 1);
        assert!(wait(&hup), "SIGHUP did not cancel its context");
        assert_canceled_by(&hup, "SIGHUP");
        stage("each caught its own");
        stop_hup.stop();
        raise(libc::SIGHUP, 1);
    })
    .killed_by(libc::SIGHUP, &["each caught its own"]);
}
