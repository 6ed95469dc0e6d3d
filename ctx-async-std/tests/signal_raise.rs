//! Real signals on async-std and smol: Go's rule for signal contexts. Each test
//! runs in a child process; the harness and the scenarios are shared by every
//! adapter, and the watcher's own cases are ctx-blocking's tests.
#![cfg(unix)]

#[macro_use]
#[path = "../../ctx-blocking/tests/signal_child/mod.rs"]
mod signal_child;

use ctx_async_std::{SignalOptions, background, signal_context};
use ctx_core::Context;

every_adapter_runs! {
    start: || signal_context(&background()),
    opted_in: || SignalOptions::new()
        .exit_on_second_signal(true)
        .signal_context(&background())
        .unwrap(),
    second: (libc::SIGINT, "SIGINT"),
    wait: |ctx: &Context| {
        async_std::task::block_on(async_std::future::timeout(signal_child::WATCHDOG, ctx.done()))
            .is_ok()
    },
}
