//! Real signals: Go's rule for signal contexts, and the watcher's own cases
//! (several contexts, a parent's cancel, an inherited ignore, a panicking
//! callback). Each test runs in a child process (see
//! `src/signal/testing.rs`).
#![cfg(unix)]

use ctx_blocking::__private::signal_testing::{
    WATCHDOG, assert_canceled_by, in_child, in_child_with, raise, stage,
};
use ctx_blocking::{SignalOptions, SignalStop, background, signal_context, wait_timeout};
use ctx_core::{Context, Error, SignalError};
use std::time::Duration;

fn wait(ctx: &Context) -> bool {
    wait_timeout(ctx, WATCHDOG)
}

fn opted_in() -> (Context, SignalStop) {
    SignalOptions::new()
        .exit_on_second_signal(true)
        .signal_context(&background())
        .expect("handlers installed")
}

ctx_blocking::__every_adapter_runs! {
    start: || signal_context(&background()),
    opted_in: opted_in,
    second: (libc::SIGTERM, "SIGTERM"),
    wait: wait,
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
fn a_signal_cancels_every_context_and_the_last_catcher_restores() {
    in_child(
        "a_signal_cancels_every_context_and_the_last_catcher_restores",
        || {
            let (first, stop_first) = signal_context(&background());
            let (second, stop_second) = signal_context(&background());
            let (opted, _stop_opted) = opted_in();
            raise(libc::SIGINT, 1);
            for ctx in [&first, &second, &opted] {
                assert!(wait(ctx), "SIGINT did not reach every context");
                assert_canceled_by(ctx, "SIGINT");
            }
            stop_first.stop();
            raise(libc::SIGINT, 1);
            stage("caught while a plain one lives");
            // The opted-in context's stop handle still lives, but after its
            // first signal only the second context kept SIGINT caught.
            stop_second.stop();
            raise(libc::SIGINT, 1);
        },
    )
    .killed_by(libc::SIGINT, &["caught while a plain one lives"]);
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

/// A value whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a value's drop panics");
    }
}

#[test]
fn a_panicking_drop_released_by_a_signal_does_not_stop_the_watcher() {
    in_child(
        "a_panicking_drop_released_by_a_signal_does_not_stop_the_watcher",
        || {
            use std::future::Future;
            use std::sync::{Arc, Mutex, mpsc};
            use std::task::{Context as TaskContext, Wake, Waker};

            /// A waiter's waker that holds the cancel that wakes it (wakers
            /// run on the canceling thread, before its cancel returns) until
            /// released.
            struct Hold {
                entered: Mutex<Option<mpsc::Sender<()>>>,
                released: Mutex<mpsc::Receiver<()>>,
            }
            impl Wake for Hold {
                fn wake(self: Arc<Self>) {
                    if let Some(entered) = self.entered.lock().unwrap().take() {
                        entered.send(()).unwrap();
                        let _ = self.released.lock().unwrap().recv_timeout(WATCHDOG / 2);
                    }
                }
            }

            let parent = background().with_value(PanicsOnDrop);
            let (ctx, stop) = signal_context(&parent);
            drop(parent);
            // The waker holds the signal's cancel until the stop handle and
            // the context are gone, so the watcher's side holds the last
            // reference to the context, and its drop releases the value.
            let (in_wake, wake_entered) = mpsc::channel();
            let (release, released) = mpsc::channel::<()>();
            let waker = Waker::from(Arc::new(Hold {
                entered: Mutex::new(Some(in_wake)),
                released: Mutex::new(released),
            }));
            let mut done = ctx.done();
            let poll = std::pin::Pin::new(&mut done).poll(&mut TaskContext::from_waker(&waker));
            assert!(poll.is_pending());
            raise(libc::SIGINT, 1);
            wake_entered
                .recv_timeout(WATCHDOG / 2)
                .expect("SIGINT did not cancel the context");
            drop((stop, ctx, done));
            release.send(()).unwrap();
            stage("value released");

            let (next, next_stop) = signal_context(&background());
            raise(libc::SIGINT, 1);
            assert!(
                wait_timeout(&next, WATCHDOG / 2),
                "the watcher died with the value's drop"
            );
            assert_canceled_by(&next, "SIGINT");
            stage("next delivered");
            next_stop.stop();
            raise(libc::SIGINT, 1);
        },
    )
    .killed_by(libc::SIGINT, &["value released", "next delivered"]);
}

#[test]
fn a_blocking_callback_does_not_hold_back_the_other_contexts() {
    in_child(
        "a_blocking_callback_does_not_hold_back_the_other_contexts",
        || {
            use std::sync::mpsc;
            let (a, _stop_a) = signal_context(&background());
            let (b, _stop_b) = signal_context(&background());
            // Each one's callback waits for the other context to be done, so
            // whichever the watcher fires first, canceling them one after
            // another would hold back the second until the wait gives up.
            let (saw, seen) = mpsc::channel();
            let waits_for = |this: &Context, other: &Context, name: &'static str| {
                let (other, saw) = (other.clone(), saw.clone());
                this.after_func(move || {
                    let done = wait_timeout(&other, WATCHDOG / 2);
                    saw.send((name, done)).unwrap();
                })
            };
            let _a_waits = waits_for(&a, &b, "a");
            let _b_waits = waits_for(&b, &a, "b");
            raise(libc::SIGINT, 1);
            for ctx in [&a, &b] {
                assert!(wait(ctx), "SIGINT did not reach every context");
                assert_canceled_by(ctx, "SIGINT");
            }
            for _ in 0..2 {
                let (name, done) = seen.recv_timeout(WATCHDOG).expect("a callback ran");
                assert!(done, "{name}'s callback did not see the other context done");
            }
            stage("both callbacks saw the other done");
        },
    )
    .survived(&["both callbacks saw the other done"]);
}

fn usr1_context() -> (Context, SignalStop) {
    SignalOptions::new()
        .signals(&[libc::SIGUSR1])
        .signal_context(&background())
        .expect("handlers installed")
}

#[test]
fn a_signal_caught_before_the_stop_reaches_its_context_and_no_later_one() {
    in_child(
        "a_signal_caught_before_the_stop_reaches_its_context_and_no_later_one",
        || {
            // Keeps SIGUSR1 caught throughout, so that no round can end the
            // process, whatever the watcher thread does.
            let (_keep, _keep_stop) = usr1_context();
            for round in 0..100 {
                let (caught_by, stop) = usr1_context();
                // Handled before `raise` returns: caught while `caught_by`
                // catches it, by the time of the stop.
                raise(libc::SIGUSR1, 1);
                stop.stop();
                assert!(
                    caught_by
                        .cause()
                        .is_some_and(|cause| cause.downcast_ref::<SignalError>().is_some()),
                    "round {round}: the context that caught the signal ended with {:?}",
                    caught_by.cause()
                );
                assert_canceled_by(&caught_by, "SIGUSR1");
                // The signal arrived before this context: it never sees it.
                let (later, _later_stop) = usr1_context();
                assert!(
                    !wait_timeout(&later, Duration::from_millis(10)),
                    "round {round}: a signal from before the context canceled it"
                );
            }
            stage("every round delivered");
        },
    )
    .survived(&["every round delivered"]);
}

/// Go's rule for a stop: a signal caught before it is "either delivered to
/// the channel, or the program takes the default action", never lost. Raised
/// (and so caught) before the stop of the last catcher, it is delivered.
#[test]
fn a_signal_caught_just_before_the_last_stop_is_delivered() {
    in_child(
        "a_signal_caught_just_before_the_last_stop_is_delivered",
        || {
            let (ctx, stop) = usr1_context();
            raise(libc::SIGUSR1, 1);
            stop.stop();
            assert_canceled_by(&ctx, "SIGUSR1");
            stage("delivered");
        },
    )
    .survived(&["delivered"]);
}

/// Signals whose default action ends the process.
const ENDING: [libc::c_int; 8] = [
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGHUP,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGVTALRM,
    libc::SIGPROF,
];

/// Another signal-hook handler handles signals whose default action ends the
/// process, while a stream of them arrives; the first signal context for
/// them is made meanwhile. Before that call the other handler alone decides,
/// from it the signals are caught: no moment in between runs the default
/// action. (The stream has to hit that moment: twenty children give it
/// eight chances each, one per signal.)
#[test]
fn a_signal_during_the_first_signal_context_call_does_not_kill() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    for _ in 0..20 {
        in_child(
            "a_signal_during_the_first_signal_context_call_does_not_kill",
            || {
                let seen = Arc::new(AtomicBool::new(false));
                for signal in ENDING {
                    signal_hook::flag::register(signal, seen.clone()).expect("a handler");
                }
                let done = Arc::new(AtomicBool::new(false));
                let sender = {
                    let done = done.clone();
                    std::thread::spawn(move || {
                        while !done.load(Ordering::Relaxed) {
                            for signal in ENDING {
                                // SAFETY: `kill` only sends a signal, to this
                                // process.
                                unsafe { libc::kill(libc::getpid(), signal) };
                            }
                        }
                    })
                };
                while !seen.load(Ordering::Relaxed) {
                    std::thread::yield_now();
                }
                stage("the other handler handles the signals");
                let (_ctx, stop) = SignalOptions::new()
                    .signals(&ENDING)
                    .signal_context(&background())
                    .expect("handlers installed");
                stage("the signal context is made");
                done.store(true, Ordering::Relaxed);
                sender.join().expect("the sender");
                // Still caught when the child exits: its last signals may
                // still be on their way.
                std::mem::forget(stop);
            },
        )
        .survived(&[
            "the other handler handles the signals",
            "the signal context is made",
        ]);
    }
}

/// One signal, sent from another thread a little later each time, while the
/// first signal context for it is being made (another handler keeps the
/// process alive before that). Whenever the signal came after the call
/// started to catch it, it reaches the context without waiting for the
/// stop: also one counted between our handler's install and the self-pipe's,
/// which woke no watcher thread.
#[test]
fn a_signal_caught_during_the_first_signal_context_call_reaches_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const TEST: &str = "a_signal_caught_during_the_first_signal_context_call_reaches_it";
    for delay in (0..2000u32).step_by(20) {
        in_child_with(
            TEST,
            |command| {
                command.env("SIGNAL_DELAY", delay.to_string());
            },
            || {
                let delay: u32 = std::env::var("SIGNAL_DELAY")
                    .expect("the delay")
                    .parse()
                    .expect("a number");
                let seen = Arc::new(AtomicBool::new(false));
                signal_hook::flag::register(libc::SIGUSR1, seen.clone()).expect("a handler");
                let go = Arc::new(AtomicBool::new(false));
                // SAFETY: `pthread_self` has no preconditions.
                let main = unsafe { libc::pthread_self() } as usize;
                let sender = {
                    let go = go.clone();
                    std::thread::spawn(move || {
                        while !go.load(Ordering::SeqCst) {}
                        for i in 0..delay {
                            std::hint::black_box(i);
                        }
                        // SAFETY: sends a signal to a thread of this process
                        // that is alive (it joins this one below).
                        unsafe { libc::pthread_kill(main as libc::pthread_t, libc::SIGUSR1) };
                    })
                };
                go.store(true, Ordering::SeqCst);
                let (ctx, stop) = SignalOptions::new()
                    .signals(&[libc::SIGUSR1])
                    .signal_context(&background())
                    .expect("handlers installed");
                sender.join().expect("the sender");
                while !seen.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                if !wait_timeout(&ctx, Duration::from_secs(2)) {
                    // Not delivered: it must have come before the call.
                    stop.stop();
                    let by_signal = ctx
                        .cause()
                        .is_some_and(|cause| cause.downcast_ref::<SignalError>().is_some());
                    assert!(
                        !by_signal,
                        "caught for the context, yet only delivered by its stop"
                    );
                }
                stage("checked");
            },
        )
        .survived(&["checked"]);
    }
}
