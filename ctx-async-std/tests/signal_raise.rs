//! Real signals on async-std and smol: Go's rule for signal contexts. Each test
//! runs in a child process; the harness and the scenarios every adapter runs
//! come from ctx-blocking, which holds the watcher and tests its own cases.
#![cfg(unix)]

use ctx_async_std::{SignalOptions, background, signal_context};
use ctx_blocking::__private::signal_testing::WATCHDOG;
use ctx_core::Context;

ctx_blocking::__every_adapter_runs! {
    start: || signal_context(&background()),
    opted_in: || SignalOptions::new()
        .exit_on_second_signal(true)
        .signal_context(&background())
        .unwrap(),
    second: (libc::SIGINT, "SIGINT"),
    wait: |ctx: &Context| {
        async_std::task::block_on(async_std::future::timeout(WATCHDOG, ctx.done()))
            .is_ok()
    },
}
