//! Real signals: Go's rule for signal contexts, and the watcher's own cases
//! (several contexts, a parent's cancel, an inherited ignore, a panicking
//! callback). Each test runs in a child process (see `signal_child`).
#![cfg(unix)]

mod signal_child;

use ctx_blocking::{SignalOptions, SignalStop, background, signal_context, wait_timeout};
use ctx_core::{Context, Error};
use signal_child::{
    WATCHDOG, assert_canceled_by, in_child, in_child_with, raise, second_signal_exits, stage,
};

fn wait(ctx: &Context) -> bool {
    wait_timeout(ctx, WATCHDOG)
}

fn opted_in() -> (Context, SignalStop) {
    SignalOptions::new()
        .exit_on_second_signal(true)
        .signal_context(&background())
        .expect("handlers installed")
}

#[test]
fn burst_is_caught_until_stop() {
    signal_child::burst_is_caught_until_stop(
        "burst_is_caught_until_stop",
        || signal_context(&background()),
        wait,
    );
}

#[test]
fn a_second_sigterm_exits_when_opted_in() {
    second_signal_exits(
        "a_second_sigterm_exits_when_opted_in",
        (libc::SIGTERM, "SIGTERM"),
        opted_in,
        wait,
    );
}

#[test]
fn caught_after_the_parent_cancels_until_stop() {
    in_child("caught_after_the_parent_cancels_until_stop", || {
        let (parent, cancel_parent) = background().with_cancel();
        let (ctx, stop) = signal_context(&parent);
        cancel_parent.cancel();
        assert_eq!(ctx.err(), Some(Error::Canceled));
        raise(libc::SIGTERM, 3);
        stage("caught after the parent's cancel");
        // The first cancel won: the signal did not replace the cause.
        assert_eq!(ctx.cause().unwrap().as_error(), Some(Error::Canceled));
        stop.stop();
        raise(libc::SIGTERM, 1);
    })
    .killed_by(libc::SIGTERM, &["caught after the parent's cancel"]);
}

#[test]
fn a_signal_cancels_every_context_and_the_last_stop_restores() {
    in_child(
        "a_signal_cancels_every_context_and_the_last_stop_restores",
        || {
            let (first, stop_first) = signal_context(&background());
            let (second, stop_second) = signal_context(&background());
            raise(libc::SIGINT, 1);
            assert!(wait(&first) && wait(&second), "SIGINT reaches both");
            assert_canceled_by(&first, "SIGINT");
            assert_canceled_by(&second, "SIGINT");
            stop_first.stop();
            raise(libc::SIGINT, 1);
            stage("caught while one lives");
            stop_second.stop();
            raise(libc::SIGINT, 1);
        },
    )
    .killed_by(libc::SIGINT, &["caught while one lives"]);
}

#[test]
fn an_opted_in_context_defers_to_a_plain_one() {
    in_child("an_opted_in_context_defers_to_a_plain_one", || {
        let (opted, _stop_opted) = opted_in();
        let (plain, stop_plain) = signal_context(&background());
        raise(libc::SIGINT, 1);
        assert!(wait(&opted) && wait(&plain), "SIGINT reaches both");
        raise(libc::SIGINT, 1);
        stage("second caught by the plain one");
        // The opted-in context's stop handle still lives: the plain one was all
        // that kept SIGINT caught.
        stop_plain.stop();
        raise(libc::SIGINT, 1);
    })
    .killed_by(libc::SIGINT, &["second caught by the plain one"]);
}

#[test]
fn a_signal_the_process_started_ignoring_stays_ignored() {
    let ignore_sigint = |command: &mut std::process::Command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before `exec`, and only
        // calls `signal`, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                Ok(())
            })
        };
    };
    in_child_with(
        "a_signal_the_process_started_ignoring_stays_ignored",
        ignore_sigint,
        || {
            // Caught while a context listens, as Go's `Notify` does.
            let (ctx, stop) = signal_context(&background());
            raise(libc::SIGINT, 1);
            assert!(wait(&ctx), "SIGINT did not cancel the context");
            assert_canceled_by(&ctx, "SIGINT");
            stop.stop();
            raise(libc::SIGINT, 3);
            stage("still ignored after stop");
        },
    )
    .survived(&["still ignored after stop"]);
}

#[test]
fn a_panicking_callback_does_not_stop_the_watcher() {
    in_child("a_panicking_callback_does_not_stop_the_watcher", || {
        let (first, _stop_first) = signal_context(&background());
        let _registration = first.after_func(|| panic!("a callback that panics"));
        raise(libc::SIGINT, 1);
        assert!(wait(&first), "SIGINT did not cancel the context");
        let (second, _stop_second) = signal_context(&background());
        raise(libc::SIGINT, 1);
        assert!(wait(&second), "the watcher died with the callback");
        assert_canceled_by(&second, "SIGINT");
        stage("second delivered");
    })
    .survived(&["second delivered"]);
}
