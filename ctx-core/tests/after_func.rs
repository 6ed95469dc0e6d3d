//! `after_func` in depth: many callbacks on one context, `stop` racing a cancel,
//! callbacks that wait for the canceler or for each other, panicking callbacks,
//! and cancels issued from inside callbacks and from the `Drop` of a value
//! stored in a context.
//!
//! Callbacks run on ctx-core's runner threads, each on a job of its own, never
//! on the canceling or registering thread: the tests wait (bounded) for the runs
//! they expect. Panicking callbacks print the usual panic message; the panic
//! ends on the runner, and the tests check that it reached nobody and left
//! nothing behind.

mod support;

use ctx_core::{AfterFunc, CancelFunc, Cause, Context, Error};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::{Calls, DropFlag, ManualTimer, WATCHDOG, recv_within, scaled, wait_until_set};

/// The text of a panic payload made by `panic!` with a literal or a format.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "<not a string>".to_owned()
    }
}

#[test]
fn many_callbacks_on_one_context_all_run_exactly_once() {
    let n = scaled(1000, 40);
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    let counters: Vec<Calls> = (0..n).map(|_| Calls::new()).collect();
    let registrations: Vec<AfterFunc> = counters
        .iter()
        .map(|c| ctx.after_func(c.callback()))
        .collect();
    assert_eq!(ctx.live_children(), n);
    cancel.cancel();
    cancel_parent.cancel();
    assert_eq!(ctx.live_children(), 0);
    // The cancel claimed every run: a stop reports it, started or not.
    for registration in &registrations {
        assert!(!registration.stop());
    }
    for calls in &counters {
        calls.wait_for(1);
    }
}

#[test]
fn stopping_every_other_callback_leaves_exactly_the_rest_to_run() {
    let n = scaled(200, 20);
    let (ctx, cancel) = Context::background().with_cancel();
    let counters: Vec<Calls> = (0..n).map(|_| Calls::new()).collect();
    let registrations: Vec<AfterFunc> = counters
        .iter()
        .map(|c| ctx.after_func(c.callback()))
        .collect();
    for registration in registrations.iter().step_by(2) {
        assert!(registration.stop());
    }
    assert_eq!(ctx.live_children(), n / 2);
    // Fresh registrations may reuse the freed places; they must run too.
    let late = Calls::new();
    let _late: Vec<AfterFunc> = (0..n / 2)
        .map(|_| ctx.after_func(late.callback()))
        .collect();
    cancel.cancel();
    late.wait_for(n / 2);
    for calls in counters.iter().skip(1).step_by(2) {
        calls.wait_for(1);
    }
    // Stopped before the cancel: never queued, so never run.
    for (i, calls) in counters.iter().enumerate().step_by(2) {
        assert_eq!(calls.get(), 0, "stopped callback {i}");
    }
}

#[test]
fn callbacks_at_every_level_of_a_subtree_run_once() {
    let (root, cancel) = Context::background().with_cancel();
    let calls = Calls::new();
    let mut registrations = Vec::new();
    let mut cancels = Vec::new();
    let mut ctx = root.clone();
    for _ in 0..10 {
        registrations.push(ctx.after_func(calls.callback()));
        // A value layer in between: its callbacks land on the carrier above.
        let layer = ctx.with_value(0u8);
        registrations.push(layer.after_func(calls.callback()));
        let (child, cancel_child) = layer.with_cancel();
        cancels.push(cancel_child);
        ctx = child;
    }
    assert_eq!(root.live_children(), 3, "two callbacks and one child");
    cancel.cancel();
    calls.wait_for(20);
    // The children's own cancels find them done: nothing runs again.
    drop(cancels);
    assert!(registrations.iter().all(|r| !r.stop()));
    assert_eq!(calls.get(), 20);
    drop(registrations);
}

/// Runs `iterations` rounds of: the main thread stops a callback while a helper
/// thread cancels, both released by one barrier; a second barrier round waits for
/// the cancel to return, by which time the run is either stopped or claimed (it
/// may not have started: the test then waits for it). `setup` makes the round's context, the cancel function the
/// helper runs, and anything to keep alive for the round.
fn race_stop_against_cancel(
    iterations: usize,
    setup: impl Fn() -> (Context, CancelFunc, Vec<Box<dyn Send>>),
) {
    let barrier = Arc::new(Barrier::new(2));
    let (to_canceler, from_main) = std::sync::mpsc::channel::<CancelFunc>();
    let canceler = {
        let barrier = barrier.clone();
        thread::spawn(move || {
            for cancel in from_main {
                barrier.wait();
                cancel.cancel();
                barrier.wait();
            }
        })
    };
    for i in 0..iterations {
        let (ctx, cancel, _keep) = setup();
        let calls = Calls::new();
        let registration = ctx.after_func(calls.callback());
        to_canceler.send(cancel).unwrap();
        barrier.wait();
        let stopped = registration.stop();
        // The cancel has returned after this: the run is decided.
        barrier.wait();
        assert!(!registration.stop(), "iteration {i}: a second stop");
        if stopped {
            // Stopped, so never queued: it cannot run later either.
            assert_eq!(calls.get(), 0, "iteration {i}: stopped, and ran");
        } else {
            calls.wait_for(1);
        }
        assert_eq!(ctx.live_children(), 0, "iteration {i}");
        assert!(ctx.is_done());
    }
    drop(to_canceler);
    canceler.join().unwrap();
}

#[test]
fn stop_racing_cancel_either_stops_or_runs_never_both() {
    race_stop_against_cancel(scaled(2000, 12), || {
        let (ctx, cancel) = Context::background().with_cancel();
        (ctx, cancel, Vec::new())
    });
}

#[test]
fn stop_racing_a_cancel_through_the_parent_is_exclusive_too() {
    race_stop_against_cancel(scaled(1000, 6), || {
        let (parent, cancel) = Context::background().with_cancel();
        let (ctx, cancel_ctx) = parent.with_value(1u8).with_cancel();
        // The child's own cancel function is kept for the round, uncalled.
        (ctx, cancel, vec![Box::new(parent), Box::new(cancel_ctx)])
    });
}

/// A callback that panics with `message`, holding `captured` (freed as the
/// panic unwinds the callback's job).
fn panicking_callback(captured: DropFlag, message: &'static str) -> impl FnOnce() + Send {
    move || {
        let _captured = captured;
        panic!("{message}")
    }
}

#[test]
fn a_panicking_callback_leaves_the_cancel_the_subtree_and_the_tree_intact() {
    let (root, _cancel_root) = Context::background().with_cancel();
    let (ctx, cancel) = root.with_cancel();
    let (child, _cancel_child) = ctx.with_cancel();
    let before = Calls::new();
    let after = Calls::new();
    let on_child = Calls::new();
    let (captured, captured_dropped) = DropFlag::new();
    let _r1 = ctx.after_func(before.callback());
    let _r2 = ctx.after_func(panicking_callback(captured, "callback failed"));
    let _r3 = ctx.after_func(after.callback());
    let _r4 = child.after_func(on_child.callback());

    let result = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel()));
    assert!(result.is_ok(), "a callback's panic reached the canceler");
    // The whole subtree is done when the cancel returns.
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(root.live_children(), 0);
    before.wait_for(1);
    after.wait_for(1);
    on_child.wait_for(1);
    wait_until_set(
        &captured_dropped,
        "the panicking callback's captured state was freed",
    );

    // The tree stays usable: the root still works, and new children behave.
    assert_eq!(root.err(), None);
    let (fresh, cancel_fresh) = root.with_cancel();
    let calls = Calls::new();
    let _r5 = fresh.after_func(calls.callback());
    cancel_fresh.cancel();
    calls.wait_for(1);
    let (born, _c) = ctx.with_cancel();
    assert_eq!(born.err(), Some(Error::Canceled));
}

#[test]
fn a_panicking_callback_does_not_stop_a_second_callback_of_the_same_cancel() {
    // Either order of registration: the panicking one first, or second.
    for panicking_first in [true, false] {
        let (ctx, cancel) = Context::background().with_cancel();
        let calls = Calls::new();
        let (captured, captured_dropped) = DropFlag::new();
        let mut registrations = Vec::new();
        if panicking_first {
            registrations.push(ctx.after_func(panicking_callback(captured, "first fails")));
            registrations.push(ctx.after_func(calls.callback()));
        } else {
            registrations.push(ctx.after_func(calls.callback()));
            registrations.push(ctx.after_func(panicking_callback(captured, "second fails")));
        }
        let result = panic::catch_unwind(AssertUnwindSafe(|| cancel.cancel()));
        assert!(
            result.is_ok(),
            "panicking_first={panicking_first}: cancel panicked"
        );
        calls.wait_for(1);
        wait_until_set(&captured_dropped, "the panicking callback ran");
        assert_eq!(ctx.live_children(), 0);
    }
}

#[test]
fn several_panicking_callbacks_reach_neither_the_canceler_nor_each_other() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cancel_child) = ctx.with_cancel();
    let (first, first_dropped) = DropFlag::new();
    let (second, second_dropped) = DropFlag::new();
    let _r1 = ctx.after_func(panicking_callback(first, "first"));
    let _r2 = child.after_func(panicking_callback(second, "second"));
    let result = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel()));
    assert!(result.is_ok(), "a callback's panic reached the canceler");
    assert!(child.is_done());
    wait_until_set(&first_dropped, "the first callback ran");
    wait_until_set(&second_dropped, "the second callback ran");
}

#[test]
fn a_panicking_callback_does_not_leak_the_canceled_context() {
    let (flag, dropped) = DropFlag::new();
    let root = Context::background().with_value(flag);
    let (ctx, cancel) = root.with_cancel();
    let (captured, captured_dropped) = DropFlag::new();
    // The callback holds a handle of its own context too: freed with it.
    let own = ctx.clone();
    let _registration = ctx.after_func(move || {
        let _own = own;
        panicking_callback(captured, "callback failed")()
    });
    let result = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel()));
    assert!(result.is_ok(), "a callback's panic reached the canceler");
    // Only once it ran can the tree be freed.
    wait_until_set(&captured_dropped, "the callback ran");
    drop(_registration);
    drop(ctx);
    drop(root);
    wait_until_set(
        &dropped,
        "the canceled context (and the value above it) was freed",
    );
}

#[test]
fn a_panicking_callback_does_not_leak_with_a_cause_func() {
    let (flag, dropped) = DropFlag::new();
    let root = Context::background().with_value(flag);
    let (ctx, cancel) = root.with_cancel_cause();
    let (captured, captured_dropped) = DropFlag::new();
    let own = ctx.clone();
    let registration = ctx.after_func(move || {
        let _own = own;
        panicking_callback(captured, "callback failed")()
    });
    let result = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel(Cause::msg("why"))));
    assert!(result.is_ok(), "a callback's panic reached the canceler");
    assert_eq!(ctx.cause().unwrap().to_string(), "why");
    wait_until_set(&captured_dropped, "the callback ran");
    drop(registration);
    drop(ctx);
    drop(root);
    wait_until_set(&dropped, "the canceled context was freed");
}

/// A timer's expiry runs no user code on the timer's thread: the callback (and
/// its panic) run on the runner, and nothing leaks.
#[test]
fn a_panicking_callback_fired_by_a_timer_never_reaches_the_timer() {
    let timer = ManualTimer::new();
    let (flag, dropped) = DropFlag::new();
    let root = timer.root().with_value(flag);
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(1));
    let (child, _cancel_child) = ctx.with_cancel();
    let (ran, ran_rx) = std::sync::mpsc::channel();
    let firing_thread = std::thread::current().id();
    let _registration = ctx.after_func(move || {
        ran.send(std::thread::current().id()).unwrap();
        panic!("callback failed")
    });
    let result = panic::catch_unwind(AssertUnwindSafe(|| timer.advance(Duration::from_secs(1))));
    assert!(result.is_ok(), "a callback's panic reached the timer");
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    let ran_on = ran_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the callback never ran");
    assert_ne!(
        ran_on, firing_thread,
        "the callback ran on the timer's thread"
    );
    drop((_registration, _cancel_child, child, _cancel, ctx, root));
    assert_eq!(timer.armed(), 0);
    assert!(
        support::eventually(|| dropped.load(Ordering::SeqCst)),
        "the context tree was never freed"
    );
}

#[test]
fn a_cancel_during_unwinding_keeps_the_original_panic_and_runs_every_callback() {
    let calls = Calls::new();
    let (captured, captured_dropped) = DropFlag::new();
    let outer = {
        let calls = calls.clone();
        panic::catch_unwind(AssertUnwindSafe(move || {
            let (ctx, _cancel) = Context::background().with_cancel();
            let _r1 = ctx.after_func(panicking_callback(captured, "inner"));
            let _r2 = ctx.after_func(calls.callback());
            panic!("outer");
        }))
    };
    // The thread was already unwinding when `_cancel` was dropped: the
    // callbacks run on the runner, where the inner panic ends; the original
    // panic continues, alone.
    assert_eq!(panic_text(&*outer.unwrap_err()), "outer");
    calls.wait_for(1);
    wait_until_set(&captured_dropped, "the panicking callback ran");
}

#[test]
fn a_callback_on_an_already_done_context_runs_on_the_runner_and_its_panic_stays_there() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (ran_on, ran_on_rx) = std::sync::mpsc::channel();
    let (captured, captured_dropped) = DropFlag::new();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let registration = ctx.after_func(move || {
            ran_on.send(thread::current().id()).unwrap();
            panicking_callback(captured, "immediate")()
        });
        // Claimed at once: a stop reports the run, started or not.
        assert!(!registration.stop());
    }));
    assert!(
        result.is_ok(),
        "the callback's panic reached the registrant"
    );
    assert_ne!(
        recv_within(&ran_on_rx, "the callback on a done context ran"),
        thread::current().id(),
        "the callback ran on the registering thread"
    );
    wait_until_set(&captured_dropped, "the callback's captured state was freed");
    assert_eq!(ctx.live_children(), 0);
}

#[test]
fn a_callback_may_cancel_another_context() {
    let (a, cancel_a) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_cancel_cause();
    let (b_child, _c) = b.with_cancel();
    let on_b = Calls::new();
    let (canceled_b, canceled_b_rx) = std::sync::mpsc::channel();
    let _r1 = b.after_func(on_b.callback());
    let _r2 = a.after_func(move || {
        cancel_b.cancel(Cause::msg("a is done"));
        canceled_b.send(()).unwrap();
    });
    cancel_a.cancel();
    recv_within(&canceled_b_rx, "the callback canceled b");
    assert_eq!(b.err(), Some(Error::Canceled));
    assert_eq!(b_child.cause().unwrap().to_string(), "a is done");
    on_b.wait_for(1);
}

#[test]
fn a_callback_may_cancel_its_own_context_or_its_parent() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (ctx, cancel_ctx) = parent.with_cancel();
    let (sibling, _cancel_sibling) = parent.with_cancel();
    let cancel_parent = Arc::new(Mutex::new(Some(cancel_parent)));
    let calls = Calls::new();
    // The callback ends its own (already ended) context and the parent above
    // it, then counts: a count means both cancels returned.
    let _r1 = {
        let cancel_parent = cancel_parent.clone();
        let count = calls.callback();
        ctx.after_func(move || {
            cancel_ctx.cancel();
            if let Some(cancel) = cancel_parent.lock().unwrap().take() {
                cancel.cancel();
            }
            count();
        })
    };
    let _r2 = sibling.after_func(calls.callback());
    // Cancel through the parent: the callback then cancels nodes that are
    // already done, which returns at once.
    let taken = cancel_parent.lock().unwrap().take().unwrap();
    taken.cancel();
    assert!(ctx.is_done() && sibling.is_done() && parent.is_done());
    calls.wait_for(2);
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn a_callback_canceling_the_parent_of_its_context_cancels_the_siblings() {
    let (parent, cancel_parent) = Context::background().with_cancel_cause();
    let (ctx, cancel_ctx) = parent.with_cancel();
    let (sibling, _cancel_sibling) = parent.with_cancel();
    let why = Cause::msg("child asked");
    let (canceled, canceled_rx) = std::sync::mpsc::channel();
    let _r = {
        let why = why.clone();
        ctx.after_func(move || {
            cancel_parent.cancel(why);
            canceled.send(()).unwrap();
        })
    };
    cancel_ctx.cancel();
    recv_within(&canceled_rx, "the callback canceled the parent");
    assert!(sibling.cause().unwrap().same(&why));
    assert!(parent.cause().unwrap().same(&why));
    assert_eq!(ctx.cause().unwrap().as_error(), Some(Error::Canceled));
}

#[test]
fn a_callback_may_register_callbacks_and_derive_children() {
    let (ctx, cancel) = Context::background().with_cancel();
    let inner_calls = Calls::new();
    let (seen, seen_rx) = std::sync::mpsc::channel();
    let _r = {
        let ctx = ctx.clone();
        let inner = inner_calls.clone();
        ctx.clone().after_func(move || {
            // Registering on the canceled context claims the run at once, and
            // starts it on a job of its own.
            let registration = ctx.after_func(inner.callback());
            let stopped = registration.stop();
            let (child, _cancel) = ctx.with_cancel();
            seen.send((stopped, child.err())).unwrap();
        })
    };
    cancel.cancel();
    assert_eq!(
        recv_within(&seen_rx, "the callback ran"),
        (false, Some(Error::Canceled))
    );
    inner_calls.wait_for(1);
}

#[test]
fn stop_from_inside_its_own_callback_reports_false() {
    let (ctx, cancel) = Context::background().with_cancel();
    let slot: Arc<Mutex<Option<AfterFunc>>> = Arc::new(Mutex::new(None));
    let (answer, answer_rx) = std::sync::mpsc::channel();
    let registration = {
        let slot = slot.clone();
        ctx.after_func(move || {
            let stopped = slot.lock().unwrap().as_ref().map(AfterFunc::stop);
            answer.send(stopped).unwrap();
        })
    };
    *slot.lock().unwrap() = Some(registration);
    cancel.cancel();
    assert_eq!(recv_within(&answer_rx, "the callback ran"), Some(false));
    slot.lock().unwrap().take();
}

/// The cancel claims every run of its walk before any starts: a callback
/// cannot stop another of the same cancel, which runs whatever the order.
#[test]
fn one_callback_cannot_stop_another_of_the_same_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let victim_calls = Calls::new();
    let slot: Arc<Mutex<Option<AfterFunc>>> = Arc::new(Mutex::new(None));
    let (answer, answer_rx) = std::sync::mpsc::channel();
    let _stopper = {
        let slot = slot.clone();
        ctx.after_func(move || {
            let stopped = slot.lock().unwrap().as_ref().map(AfterFunc::stop);
            answer.send(stopped).unwrap();
        })
    };
    *slot.lock().unwrap() = Some(ctx.after_func(victim_calls.callback()));
    cancel.cancel();
    let stopped = recv_within(&answer_rx, "the stopper ran");
    assert_eq!(stopped, Some(false), "the stopper stopped a claimed run");
    victim_calls.wait_for(1);
    assert_eq!(ctx.live_children(), 0);
}

#[test]
fn a_callback_may_drop_the_last_handle_of_its_own_context() {
    let (flag, dropped) = DropFlag::new();
    let calls = Calls::new();
    {
        let (ctx, cancel) = Context::background().with_value(flag).with_cancel();
        let own = ctx.clone();
        let count = calls.callback();
        let _registration = ctx.after_func(move || {
            assert!(own.is_done());
            drop(own);
            count();
        });
        drop(ctx);
        cancel.cancel();
    }
    calls.wait_for(1);
    wait_until_set(&dropped, "the context was freed");
}

/// A value that cancels something when the context holding it is freed.
struct CancelOnDrop(Option<CancelFunc>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

#[test]
fn a_value_dropped_with_its_context_may_cancel_another_context() {
    let (other, cancel_other) = Context::background().with_cancel();
    let calls = Calls::new();
    let _r = other.after_func(calls.callback());
    let holder = Context::background().with_value(CancelOnDrop(Some(cancel_other)));
    assert!(!other.is_done());
    drop(holder);
    assert!(other.is_done());
    calls.wait_for(1);
}

#[test]
fn a_value_holding_its_parents_cancel_func_cancels_the_parent_when_freed() {
    let (flag, dropped) = DropFlag::new();
    let (parent, cancel_parent) = Context::background().with_value(flag).with_cancel();
    let (sibling, _cancel_sibling) = parent.with_cancel();
    let calls = Calls::new();
    let _r = parent.after_func(calls.callback());
    let holder = parent.with_value(CancelOnDrop(Some(cancel_parent)));
    drop(parent);
    assert!(!sibling.is_done());
    // The last handle on the value layer goes: its value cancels the parent while
    // the layer is being freed, then the parent itself can be freed.
    drop(holder);
    assert_eq!(sibling.err(), Some(Error::Canceled));
    calls.wait_for(1);
    drop(sibling);
    drop(_cancel_sibling);
    drop(_r);
    wait_until_set(&dropped, "the parent was freed");
}

#[test]
fn a_value_freed_by_a_callback_may_cancel_the_context_that_was_canceled() {
    // The value lives below `ctx` and holds `ctx`'s own cancel function; the only
    // other thing keeping the value alive is a callback on `ctx`. Canceling `ctx`
    // through its parent starts the callback, which drops the last handle on the
    // value layer; freeing it drops the cancel function, which cancels `ctx` again
    // on the runner (a cancel of a node already done, which returns at once).
    let (flag, dropped) = DropFlag::new();
    let (parent, cancel_parent) = Context::background().with_value(flag).with_cancel();
    let (ctx, cancel_ctx) = parent.with_cancel();
    let (sibling, _cancel_sibling) = ctx.with_cancel();
    let holder = ctx.with_value(CancelOnDrop(Some(cancel_ctx)));
    let holder = Arc::new(Mutex::new(Some(holder)));
    let calls = Calls::new();
    let (freed, freed_rx) = std::sync::mpsc::channel();
    let _r1 = {
        let holder = holder.clone();
        ctx.after_func(move || {
            drop(holder.lock().unwrap().take());
            freed.send(()).unwrap();
        })
    };
    let _r2 = ctx.after_func(calls.callback());
    cancel_parent.cancel();
    recv_within(&freed_rx, "the callback freed the value");
    assert!(holder.lock().unwrap().is_none(), "the callback ran");
    calls.wait_for(1);
    assert_eq!(sibling.err(), Some(Error::Canceled));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(parent.live_children(), 0);
    drop((sibling, _cancel_sibling, _r1, _r2, ctx, parent, holder));
    wait_until_set(&dropped, "the tree was freed");
}

#[test]
fn callbacks_registered_from_many_threads_all_run_once() {
    let threads = scaled(4, 2);
    let per_thread = scaled(200, 5);
    let (ctx, cancel) = Context::background().with_cancel();
    let calls = Calls::new();
    let stops = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let ctx = ctx.clone();
            let calls = calls.clone();
            let stops = stops.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut kept = Vec::new();
                for i in 0..per_thread {
                    let registration = ctx.after_func(calls.callback());
                    if i.is_multiple_of(3) && registration.stop() {
                        stops.fetch_add(1, Ordering::SeqCst);
                    }
                    kept.push(registration);
                }
                kept
            })
        })
        .collect();
    barrier.wait();
    cancel.cancel();
    for worker in workers {
        drop(worker.join().unwrap());
    }
    // Every registration either was stopped or runs once.
    calls.wait_for(threads * per_thread - stops.load(Ordering::SeqCst));
    assert_eq!(ctx.live_children(), 0);
}

/// `stop` drops the closure, whose captured values' `Drop`s are user code: one
/// that panics reaches the caller of `stop`, but only after the registration is
/// gone, so stopping never leaks it (a long-lived context would otherwise keep
/// one entry per panicking stop for ever).
#[test]
fn a_stop_whose_closure_drop_panics_leaves_no_registration() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the captured value's drop panics");
        }
    }
    let (ctx, _cancel) = Context::background().with_cancel();
    for _ in 0..3 {
        let captured = PanicsOnDrop;
        let registration = ctx.after_func(move || drop(captured));
        assert_eq!(ctx.live_children(), 1);
        let stopped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| registration.stop()));
        assert!(stopped.is_err(), "the drop's panic reaches the caller");
        assert_eq!(ctx.live_children(), 0, "the registration is gone");
        assert!(!registration.stop(), "stopped already");
    }
}

/// Go runs each `AfterFunc` in a goroutine of its own: a callback may wait for
/// what the canceling thread does after its cancel returned, and completes.
#[test]
fn a_callback_waiting_for_the_canceler_after_its_cancel_returned_completes() {
    // An explicit cancel of the context, and one through its parent.
    for through_parent in [false, true] {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (ctx, cancel) = parent.with_cancel();
        let (returned, returned_rx) = std::sync::mpsc::channel::<()>();
        let (completed, completed_rx) = std::sync::mpsc::channel();
        let _registration = ctx.after_func(move || {
            // The rendezvous: only the canceling thread, once its cancel
            // returned, sends this.
            let rendezvous = returned_rx.recv_timeout(WATCHDOG);
            completed.send(rendezvous.is_ok()).unwrap();
        });
        let canceler = thread::spawn(move || {
            // The other cancel function is dropped (a cancel too) after the
            // rendezvous.
            let _other = if through_parent {
                cancel_parent.cancel();
                cancel
            } else {
                cancel.cancel();
                cancel_parent
            };
            returned.send(()).unwrap();
        });
        // A cancel waiting for its callback would only return once the
        // callback gave up: it would then report no rendezvous.
        let completed = recv_within(&completed_rx, "the callback completed");
        assert!(
            completed,
            "through_parent={through_parent}: the cancel waited for its callback"
        );
        canceler.join().unwrap();
        assert!(ctx.is_done());
    }
}

/// Two callbacks of one cancel that wait for each other both complete: each
/// runs on a job of its own, and one that blocks holds back no other.
#[test]
fn two_callbacks_of_one_context_waiting_for_each_other_both_complete() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (to_b, from_a) = std::sync::mpsc::channel::<()>();
    let (to_a, from_b) = std::sync::mpsc::channel::<()>();
    let (completed, completed_rx) = std::sync::mpsc::channel();
    let _a = {
        let completed = completed.clone();
        ctx.after_func(move || {
            to_b.send(()).unwrap();
            let met = from_b.recv_timeout(WATCHDOG).is_ok();
            completed.send(("a", met)).unwrap();
        })
    };
    let _b = ctx.after_func(move || {
        to_a.send(()).unwrap();
        let met = from_a.recv_timeout(WATCHDOG).is_ok();
        completed.send(("b", met)).unwrap();
    });
    cancel.cancel();
    let mut seen = [
        recv_within(&completed_rx, "a callback completed"),
        recv_within(&completed_rx, "the other callback completed"),
    ];
    seen.sort();
    assert_eq!(seen, [("a", true), ("b", true)], "a callback waited alone");
}

/// More callbacks than the runner starts threads for at once, all waiting for
/// each other: the ones queued behind the blocked ones still get threads, so
/// every one completes.
#[test]
fn many_callbacks_of_one_cancel_all_waiting_for_each_other_complete() {
    let n = scaled(64, 6);
    let (ctx, cancel) = Context::background().with_cancel();
    let arrived = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
    let met = Calls::new();
    // One watchdog for all: callbacks run one after another would give up
    // together, not each after the last.
    let give_up = Instant::now() + WATCHDOG;
    let registrations: Vec<AfterFunc> = (0..n)
        .map(|_| {
            let arrived = arrived.clone();
            let count = met.callback();
            ctx.after_func(move || {
                let (lock, all_here) = &*arrived;
                let mut here = lock.lock().unwrap();
                *here += 1;
                all_here.notify_all();
                let patience = give_up.saturating_duration_since(Instant::now());
                let (here, _) = all_here
                    .wait_timeout_while(here, patience, |here| *here < n)
                    .unwrap();
                // Counts only a callback that met all the others.
                if *here == n {
                    drop(here);
                    count();
                }
            })
        })
        .collect();
    cancel.cancel();
    met.wait_for(n);
    drop(registrations);
}

/// A panicking callback whose job holds the last reference on a cause whose
/// `Drop` panics too: each is guarded on its own, so the second panic is not
/// one during the first's unwind (which would abort the process), and the
/// runner goes on with later callbacks.
#[test]
fn a_panicking_callback_holding_the_last_cause_whose_drop_panics_aborts_nothing() {
    use std::sync::atomic::AtomicBool;

    #[derive(Debug)]
    struct DropPanics(Arc<AtomicBool>);
    impl std::fmt::Display for DropPanics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a cause whose drop panics")
        }
    }
    impl std::error::Error for DropPanics {}
    impl Drop for DropPanics {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            panic!("the cause's Drop panics");
        }
    }

    let dropped = Arc::new(AtomicBool::new(false));
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let registration = ctx.after_func(move || {
        let _ = wait.recv();
        panic!("the callback panics");
    });
    cancel.cancel(Cause::new(DropPanics(dropped.clone())));
    // The callback's job now holds the cause's last reference.
    drop((ctx, registration));
    go.send(()).unwrap();
    assert!(support::eventually(|| dropped.load(Ordering::SeqCst)));
    let (ran, seen) = std::sync::mpsc::channel();
    let (done, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let _later = done.after_func(move || ran.send(()).unwrap());
    seen.recv_timeout(WATCHDOG).expect("a later callback runs");
}

/// A context whose deadline passed while its timer is late is done (a read
/// says so), though no walk reached its callback yet. `stop` then reports
/// false, as in Go once `Err` is non-nil, and the callback runs, once, also
/// when the timer fires later. The old `stop` won, and the callback never ran.
#[test]
fn stop_after_the_deadline_passed_reports_false_and_the_callback_runs() {
    let timer = ManualTimer::new();
    let (read, _cancel_read) = timer.root().with_timeout(Duration::from_secs(1));
    let (unread, _cancel_unread) = timer.root().with_timeout(Duration::from_secs(1));
    let calls = Calls::new();
    let read_registration = read.after_func(calls.callback());
    let unread_registration = unread.after_func(calls.callback());
    timer.advance_silently(Duration::from_secs(2));
    assert_eq!(read.err(), Some(Error::DeadlineExceeded));
    assert!(
        !read_registration.stop(),
        "stop won after a read had reported the context done"
    );
    assert!(
        !unread_registration.stop(),
        "stop won after the deadline had passed"
    );
    calls.wait_for(2);
    // The late timer fires now: nothing runs twice.
    assert_eq!(timer.advance(Duration::ZERO), 2);
    assert!(!read_registration.stop());
    let (again, cancel_again) = Context::background().with_cancel();
    let _again = again.after_func(calls.callback());
    cancel_again.cancel();
    calls.wait_for(3);
}
