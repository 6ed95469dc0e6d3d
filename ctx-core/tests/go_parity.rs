//! More of what Go's own `context` tests and examples check, beside
//! `go_semantics.rs`: the rows and cases that file does not have in this shape.
//!
//! As there, each test names the behaviour it pins down, and nothing asserts on
//! elapsed time: deadlines move by a manual timer, and real time only bounds
//! waits that would otherwise hang. `after_func` callbacks may run on the
//! canceling thread or on another one, so the tests wait (bounded) for a
//! callback's effect instead of expecting it when `cancel` returns.

mod support;

use ctx_core::{CancelFunc, Cause, Context, Error};
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;
use support::{ManualTimer, Rng, scaled, within_watchdog};

/// How long a bounded wait waits before it reports a hang (a watchdog, not a
/// timing assertion: every wait here normally ends at once).
const HANG: Duration = Duration::from_secs(30);

/// A flag one thread raises and another waits for, with a bound.
#[derive(Debug, Default)]
struct Flag {
    raised: Mutex<bool>,
    changed: Condvar,
}

impl Flag {
    fn raise(&self) {
        *self.raised.lock().unwrap() = true;
        self.changed.notify_all();
    }

    /// Waits for the flag for up to [`HANG`]; whether it was raised.
    fn wait(&self) -> bool {
        let raised = self.raised.lock().unwrap();
        let (raised, _) = self
            .changed
            .wait_timeout_while(raised, HANG, |raised| !*raised)
            .unwrap();
        *raised
    }
}

/// Polls a fresh `done()` future of `ctx` once.
fn poll_done(ctx: &Context) -> Poll<()> {
    poll_once(&mut ctx.done())
}

fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut TaskContext::from_waker(Waker::noop()))
}

/// Stopping a callback that has already started returns at once, reporting
/// that it did not stop it: it does not wait for the callback to finish (the
/// callback here waits for `stop` to have returned).
#[test]
fn stop_does_not_wait_for_a_running_callback() {
    let (ctx, cancel) = Context::background().with_cancel();
    let started = Arc::new(Flag::default());
    let stopped = Arc::new(Flag::default());
    let (saw_tx, saw_rx) = mpsc::channel();
    let registration = {
        let (started, stopped) = (started.clone(), stopped.clone());
        ctx.after_func(move || {
            started.raise();
            // False if `stop` never returned (it waited for this callback).
            saw_tx.send(stopped.wait()).unwrap();
        })
    };
    let canceler = thread::spawn(move || cancel.cancel());
    assert!(started.wait(), "the cancel started the callback");
    assert!(!registration.stop(), "a started callback is not stopped");
    stopped.raise();
    assert_eq!(
        saw_rx.recv_timeout(HANG),
        Ok(true),
        "stop returned while the callback ran"
    );
    canceler.join().unwrap();
}

/// A child canceled by its own cancel while its parent's cancel is closing it
/// (from a thread woken by the parent, from a callback of the parent, from a
/// waker of the parent's `done()`) neither deadlocks nor changes its error.
#[test]
fn a_childs_cancel_triggered_by_the_parents_cancel_does_not_deadlock() {
    within_watchdog("a child's cancel set off by its parent's", || {
        // From a thread that waits for the parent.
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let watcher = {
            let parent = parent.clone();
            thread::spawn(move || {
                parent.wait();
                cancel_child.cancel();
            })
        };
        cancel_parent.cancel();
        child.wait();
        watcher.join().unwrap();
        assert_eq!(child.err(), Some(Error::Canceled));

        // From a callback of the parent.
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let ran = Arc::new(Flag::default());
        let _registration = {
            let ran = ran.clone();
            parent.after_func(move || {
                cancel_child.cancel();
                ran.raise();
            })
        };
        cancel_parent.cancel();
        assert!(ran.wait(), "the callback ran");
        assert_eq!(child.err(), Some(Error::Canceled));

        // From a waker of the parent's `done()`.
        struct CancelOnWake(Mutex<Option<CancelFunc>>);
        impl Wake for CancelOnWake {
            fn wake(self: Arc<Self>) {
                if let Some(cancel) = self.0.lock().unwrap().take() {
                    cancel.cancel();
                }
            }
        }
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let on_wake = Arc::new(CancelOnWake(Mutex::new(Some(cancel_child))));
        let waker = Waker::from(on_wake.clone());
        let mut done = parent.done();
        let registered = Pin::new(&mut done).poll(&mut TaskContext::from_waker(&waker));
        assert!(registered.is_pending());
        cancel_parent.cancel();
        assert!(
            support::eventually(|| on_wake.0.lock().unwrap().is_none()),
            "the waker ran"
        );
        assert_eq!(child.err(), Some(Error::Canceled));
    });
}

/// Every cancel function of a tree called at the same moment, each on a
/// thread of its own: all of them return, every context ends canceled, and no
/// child stays registered with its parent.
#[test]
fn every_cancel_of_a_tree_at_once() {
    within_watchdog("every cancel of a tree at once", || {
        for _ in 0..scaled(5, 1) {
            let (root, cancel) = Context::background().with_cancel();
            let mut all = vec![root];
            let mut cancels = vec![cancel];
            // Four children per node, breadth first.
            let mut next_parent = 0;
            while all.len() < scaled(100, 9) {
                let parent = all[next_parent].clone();
                next_parent += 1;
                for _ in 0..4 {
                    let (child, cancel) = parent.with_cancel();
                    all.push(child);
                    cancels.push(cancel);
                }
            }
            let start = Arc::new(Barrier::new(cancels.len()));
            let cancelers: Vec<_> = cancels
                .into_iter()
                .map(|cancel| {
                    let start = start.clone();
                    thread::spawn(move || {
                        start.wait();
                        cancel.cancel();
                    })
                })
                .collect();
            for ctx in &all {
                ctx.wait();
            }
            for canceler in cancelers {
                canceler.join().unwrap();
            }
            for ctx in &all {
                assert_eq!(ctx.err(), Some(Error::Canceled), "{ctx}");
                assert_eq!(ctx.live_children(), 0, "{ctx}");
            }
        }
    });
}

/// Values stay readable below a chain that was canceled or timed out, also
/// once every cancel function is gone; and when every deadline of the chain
/// is the same short timeout, the innermost context times out with them.
#[test]
fn values_survive_cancel_and_timeout_of_random_layers() {
    #[derive(Debug)]
    struct V1(u32);
    #[derive(Debug)]
    struct V2(u32);
    for timing_out in [false, true] {
        for seed in 0..scaled(20, 2) as u64 {
            let mut rng = Rng::new(seed);
            let timer = ManualTimer::new();
            let mut ctx = timer.root();
            let mut cancels = Vec::new();
            let (mut v1, mut v2) = (None, None);
            let mut deadlines = 0;
            let mut layer = 0u32;
            // Random layers, at least one of each kind.
            while layer < 30
                || deadlines == 0
                || cancels.len() == deadlines
                || v1.is_none()
                || v2.is_none()
            {
                ctx = match rng.below(4) {
                    0 => {
                        v1 = Some(layer);
                        ctx.with_value(V1(layer))
                    }
                    1 => {
                        v2 = Some(layer);
                        ctx.with_value(V2(layer))
                    }
                    2 => {
                        let (child, cancel) = ctx.with_cancel();
                        cancels.push(cancel);
                        child
                    }
                    _ => {
                        let timeout = if timing_out {
                            Duration::from_millis(1)
                        } else {
                            Duration::from_secs(3600)
                        };
                        deadlines += 1;
                        let (child, cancel) = ctx.with_timeout(timeout);
                        cancels.push(cancel);
                        child
                    }
                };
                layer += 1;
            }
            assert_eq!(ctx.err(), None, "seed {seed}");
            if timing_out {
                timer.advance(Duration::from_millis(1));
                assert_eq!(ctx.err(), Some(Error::DeadlineExceeded), "seed {seed}");
                assert_eq!(poll_done(&ctx), Poll::Ready(()), "seed {seed}");
            } else {
                let pick = rng.below(cancels.len());
                cancels.remove(pick).cancel();
                assert_eq!(ctx.err(), Some(Error::Canceled), "seed {seed}");
            }
            let values = |ctx: &Context| {
                (
                    ctx.value::<V1>().map(|v| v.0),
                    ctx.value::<V2>().map(|v| v.0),
                )
            };
            assert_eq!(values(&ctx), (v1, v2), "seed {seed}");
            drop(cancels);
            assert_eq!(
                values(&ctx),
                (v1, v2),
                "seed {seed}: after the cancels went"
            );
        }
    }
}

/// Once `err()` reports an error, `done()` is ready (and a wait returns at
/// once): for a cancel from another thread, and for a deadline that passed by
/// the clock while its timer has not fired.
#[test]
fn err_some_implies_done_ready() {
    for _ in 0..scaled(200, 3) {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut done = ctx.done();
        assert!(poll_once(&mut done).is_pending());
        let canceler = thread::spawn(move || cancel.cancel());
        while ctx.err().is_none() {
            thread::yield_now();
        }
        assert!(poll_once(&mut done).is_ready());
        assert!(ctx.wait_timeout(Duration::ZERO));
        canceler.join().unwrap();
    }
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let child = ctx.with_value(1u8);
    let mut done = child.done();
    assert!(poll_once(&mut done).is_pending());
    timer.advance_silently(Duration::from_secs(1));
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert!(poll_once(&mut done).is_ready());
    assert!(child.wait_timeout(Duration::ZERO));
}

/// Rows of Go's table of causes that the rest of the suite has in another
/// shape only: which cancel's cause a child keeps when it and its parent are
/// both canceled, and that a deadline that has passed keeps its error and
/// cause when a cancel comes after it.
#[test]
fn go_cause_table_remaining_rows() {
    #[track_caller]
    fn assert_ended(ctx: &Context, err: Error, cause: &Cause) {
        assert_eq!(ctx.err(), Some(err), "{ctx}");
        let got = ctx.cause().expect("a done context has a cause");
        assert!(got.same(cause), "{ctx}: cause {got}, want {cause}");
    }
    #[track_caller]
    fn assert_ended_plain(ctx: &Context, err: Error) {
        assert_eq!(ctx.err(), Some(err), "{ctx}");
        let got = ctx.cause().expect("a done context has a cause");
        assert_eq!(got.as_error(), Some(err), "{ctx}: cause {got}");
    }
    let parent_cause = Cause::msg("parent's cause");
    let child_cause = Cause::msg("child's cause");
    let too_slow = Cause::msg("too slow");
    let finished_early = Cause::msg("finished early");

    // Both with causes, the parent canceled first: the child keeps the parent's.
    let (parent, cancel_parent) = Context::background().with_cancel_cause();
    let (child, cancel_child) = parent.with_cancel_cause();
    cancel_parent.cancel(parent_cause.clone());
    cancel_child.cancel(child_cause.clone());
    assert_ended(&child, Error::Canceled, &parent_cause);

    // A plain child canceled first: its cause stays `Canceled` after the
    // parent's cancel with a cause.
    let (parent, cancel_parent) = Context::background().with_cancel_cause();
    let (child, cancel_child) = parent.with_cancel();
    cancel_child.cancel();
    cancel_parent.cancel(parent_cause.clone());
    assert_ended_plain(&child, Error::Canceled);

    // A child canceled first with a cause keeps it after the parent's plain cancel.
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel_cause();
    cancel_child.cancel(child_cause.clone());
    cancel_parent.cancel();
    assert_ended(&child, Error::Canceled, &child_cause);

    // A zero timeout, then its cancel: the deadline's error stays.
    let (ctx, cancel) = Context::background().with_timeout(Duration::ZERO);
    cancel.cancel();
    assert_ended_plain(&ctx, Error::DeadlineExceeded);

    // The same with a cause: the deadline's error and cause stay.
    let (ctx, cancel) = Context::background().with_timeout_cause(Duration::ZERO, too_slow.clone());
    cancel.cancel();
    assert_ended(&ctx, Error::DeadlineExceeded, &too_slow);

    // A zero timeout under a parent canceled later with a cause keeps its own.
    let (parent, cancel_parent) = Context::background().with_cancel_cause();
    let (ctx, _cancel) = parent.with_timeout_cause(Duration::ZERO, too_slow.clone());
    cancel_parent.cancel(finished_early.clone());
    assert_ended(&ctx, Error::DeadlineExceeded, &too_slow);
}

/// A callback can unblock a read that knows nothing of contexts (here by
/// shutting the socket's reading side): the read returns once the deadline
/// passes, after which `stop` reports that the callback ran.
#[test]
#[cfg_attr(miri, ignore = "Miri does not support sockets")]
fn after_func_interrupts_a_blocked_read() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conn = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _server_side = listener.accept().unwrap();
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let err = within_watchdog("a read interrupted by a callback", move || {
        let (shut_tx, shut_rx) = mpsc::channel();
        let reading_side = conn.try_clone().unwrap();
        let registration = ctx.after_func(move || {
            let _ = reading_side.shutdown(std::net::Shutdown::Read);
            shut_tx.send(()).unwrap();
        });
        // The deadline passes while (or before) the read blocks.
        let clock = thread::spawn(move || timer.advance(Duration::from_secs(1)));
        let mut buf = [0u8; 64];
        let read = conn.read(&mut buf);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(!registration.stop(), "the callback ran");
        shut_rx.recv_timeout(HANG).expect("the callback finished");
        clock.join().unwrap();
        ctx.err()
    });
    assert_eq!(err, Some(Error::DeadlineExceeded));
}

/// A context canceled when either of two others is, built from a child of
/// one and a callback on the other: it ends with the cause of whichever
/// ended first, and a later cancel of the other one changes nothing.
#[test]
fn merge_cancel_built_from_after_func() {
    /// A child of `ctx` also canceled, with its cause, when `cancel_ctx` is;
    /// and the function that cancels it (and stops watching `cancel_ctx`).
    fn merge_cancel(ctx: &Context, cancel_ctx: &Context) -> (Context, impl FnOnce() + use<>) {
        let (merged, cancel) = ctx.with_cancel_cause();
        let canceler = cancel.canceler();
        let watched = cancel_ctx.clone();
        let registration = cancel_ctx.after_func(move || {
            let cause = watched.cause().expect("the callback runs once it is done");
            canceler.cancel_with_cause(cause);
        });
        let cancel_merged = move || {
            registration.stop();
            cancel.cancel(Error::Canceled);
        };
        (merged, cancel_merged)
    }

    // The watched context ends first.
    let (ctx1, cancel1) = Context::background().with_cancel_cause();
    let (ctx2, cancel2) = Context::background().with_cancel_cause();
    let (merged, cancel_merged) = merge_cancel(&ctx1, &ctx2);
    cancel2.cancel(Cause::msg("second gone"));
    assert!(merged.wait_timeout(HANG), "the callback canceled the merge");
    assert_eq!(merged.err(), Some(Error::Canceled));
    assert_eq!(merged.cause().unwrap().to_string(), "second gone");
    cancel_merged();
    cancel1.cancel(Cause::msg("first gone"));
    assert_eq!(merged.cause().unwrap().to_string(), "second gone");

    // The parent ends first.
    let (ctx1, cancel1) = Context::background().with_cancel_cause();
    let (ctx2, cancel2) = Context::background().with_cancel_cause();
    let (merged, cancel_merged) = merge_cancel(&ctx1, &ctx2);
    cancel1.cancel(Cause::msg("first gone"));
    assert_eq!(merged.cause().unwrap().to_string(), "first gone");
    cancel_merged();
    cancel2.cancel(Cause::msg("second gone"));
    assert_eq!(merged.cause().unwrap().to_string(), "first gone");
}

/// A producer thread that checks its context between items stops once its
/// consumer cancels (and does not leak): it ends because of the context, not
/// because the consumer went away.
#[test]
fn generator_stops_when_canceled() {
    let (ctx, cancel) = Context::background().with_cancel();
    // A rendezvous channel: each send waits for its receive.
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    let generator = {
        let ctx = ctx.clone();
        thread::spawn(move || {
            let mut n = 1;
            while ctx.err().is_none() {
                if tx.send(n).is_err() {
                    return Err(n);
                }
                n += 1;
            }
            Ok(n)
        })
    };
    let taken: Vec<u32> = rx.iter().take(5).collect();
    assert_eq!(taken, [1, 2, 3, 4, 5]);
    cancel.cancel();
    // The generator may be in a send already: take that one item (or find it
    // gone), then it sees the cancel.
    let _ = rx.recv_timeout(HANG);
    let ended = within_watchdog("the generator", move || generator.join().unwrap());
    assert!(
        ended.is_ok(),
        "the generator stopped for the consumer, not the context"
    );
    drop(rx);
}
