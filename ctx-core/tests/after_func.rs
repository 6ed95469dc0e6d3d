//! `after_func` in depth: many callbacks on one context, `stop` racing a cancel,
//! panicking callbacks, and cancels issued from inside callbacks and from the
//! `Drop` of a value stored in a context.
//!
//! Panicking callbacks print the usual panic message; the tests catch the panic
//! where it resurfaces and check what it left behind.

mod support;

use ctx_core::{AfterFunc, CancelFunc, Cause, Context, Error};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;
use support::{Calls, DropFlag, ManualTimer, scaled};

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
    for (i, calls) in counters.iter().enumerate() {
        assert_eq!(calls.get(), 1, "callback {i}");
    }
    for registration in &registrations {
        assert!(!registration.stop());
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
    for (i, calls) in counters.iter().enumerate() {
        assert_eq!(calls.get(), i % 2, "callback {i}");
    }
    assert_eq!(late.get(), n / 2);
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
    assert_eq!(calls.get(), 20);
    drop(cancels);
    assert_eq!(calls.get(), 20);
    drop(registrations);
}

/// Runs `iterations` rounds of: the main thread stops a callback while a helper
/// thread cancels, both released by one barrier; a second barrier round waits for
/// the cancel to return. `setup` makes the round's context, the cancel function the
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
        // The cancel has returned after this: its callbacks have run.
        barrier.wait();
        let ran = calls.get();
        assert!(ran <= 1, "iteration {i}: ran {ran} times");
        assert!(
            stopped != (ran == 1),
            "iteration {i}: stopped={stopped}, ran={ran}"
        );
        assert!(!registration.stop(), "iteration {i}: a second stop");
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

#[test]
fn a_panicking_callback_does_not_stop_the_cancel_and_resurfaces_from_it() {
    let (root, _cancel_root) = Context::background().with_cancel();
    let (ctx, cancel) = root.with_cancel();
    let (child, _cancel_child) = ctx.with_cancel();
    let before = Calls::new();
    let after = Calls::new();
    let on_child = Calls::new();
    let _r1 = ctx.after_func(before.callback());
    let _r2 = ctx.after_func(|| panic!("callback failed"));
    let _r3 = ctx.after_func(after.callback());
    let _r4 = child.after_func(on_child.callback());

    let result = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel()));
    let payload = result.expect_err("the callback's panic resurfaces from cancel");
    assert_eq!(panic_text(&*payload), "callback failed");
    assert_eq!(before.get(), 1);
    assert_eq!(after.get(), 1);
    assert_eq!(on_child.get(), 1);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(root.live_children(), 0);

    // The tree stays usable: the root still works, and new children behave.
    assert_eq!(root.err(), None);
    let (fresh, cancel_fresh) = root.with_cancel();
    let calls = Calls::new();
    let _r5 = fresh.after_func(calls.callback());
    cancel_fresh.cancel();
    assert_eq!(calls.get(), 1);
    let (born, _c) = ctx.with_cancel();
    assert_eq!(born.err(), Some(Error::Canceled));
}

#[test]
fn the_first_of_several_panics_resurfaces() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cancel_child) = ctx.with_cancel();
    let _r1 = ctx.after_func(|| panic!("first"));
    let _r2 = child.after_func(|| panic!("second"));
    let payload = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel())).unwrap_err();
    let text = panic_text(&*payload);
    assert!(text == "first" || text == "second", "{text}");
    assert!(child.is_done());
}

#[test]
fn a_panicking_callback_does_not_leak_the_canceled_context() {
    let (flag, dropped) = DropFlag::new();
    let root = Context::background().with_value(flag);
    let (ctx, cancel) = root.with_cancel();
    let _registration = ctx.after_func(|| panic!("callback failed"));
    let result = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel()));
    assert!(result.is_err());
    drop(_registration);
    drop(ctx);
    drop(root);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the canceled context (and the value above it) was never freed"
    );
}

#[test]
fn a_panicking_callback_does_not_leak_with_a_cause_func() {
    let (flag, dropped) = DropFlag::new();
    let root = Context::background().with_value(flag);
    let (ctx, cancel) = root.with_cancel_cause();
    let registration = ctx.after_func(|| panic!("callback failed"));
    let result = panic::catch_unwind(AssertUnwindSafe(move || cancel.cancel(Cause::msg("why"))));
    assert!(result.is_err());
    assert_eq!(ctx.cause().unwrap().to_string(), "why");
    drop(registration);
    drop(ctx);
    drop(root);
    assert!(dropped.load(Ordering::SeqCst));
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
fn a_panicking_callback_during_an_unwinding_drop_is_swallowed() {
    let calls = Calls::new();
    let outer = {
        let calls = calls.clone();
        panic::catch_unwind(AssertUnwindSafe(move || {
            let (ctx, _cancel) = Context::background().with_cancel();
            let _r1 = ctx.after_func(|| panic!("inner"));
            let _r2 = ctx.after_func(calls.callback());
            panic!("outer");
        }))
    };
    // The thread was already unwinding when `_cancel` was dropped: the callback's
    // panic must not turn into an abort, and the original panic continues.
    assert_eq!(panic_text(&*outer.unwrap_err()), "outer");
    assert_eq!(calls.get(), 1, "the other callback still ran");
}

#[test]
fn a_panic_from_a_callback_on_an_already_done_context_reaches_the_registrant() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let _registration = ctx.after_func(|| panic!("immediate"));
    }));
    assert_eq!(panic_text(&*result.unwrap_err()), "immediate");
    assert_eq!(ctx.live_children(), 0);
}

#[test]
fn a_callback_may_cancel_another_context() {
    let (a, cancel_a) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_cancel_cause();
    let (b_child, _c) = b.with_cancel();
    let on_b = Calls::new();
    let _r1 = b.after_func(on_b.callback());
    let _r2 = a.after_func(move || cancel_b.cancel(Cause::msg("a is done")));
    cancel_a.cancel();
    assert_eq!(b.err(), Some(Error::Canceled));
    assert_eq!(b_child.cause().unwrap().to_string(), "a is done");
    assert_eq!(on_b.get(), 1);
}

#[test]
fn a_callback_may_cancel_its_own_context_or_its_parent() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (ctx, cancel_ctx) = parent.with_cancel();
    let (sibling, _cancel_sibling) = parent.with_cancel();
    let cancel_parent = Arc::new(Mutex::new(Some(cancel_parent)));
    let calls = Calls::new();
    // The callback ends its own (already ending) context and the parent above it.
    let _r1 = {
        let cancel_parent = cancel_parent.clone();
        let count = calls.callback();
        ctx.after_func(move || {
            count();
            cancel_ctx.cancel();
            if let Some(cancel) = cancel_parent.lock().unwrap().take() {
                cancel.cancel();
            }
        })
    };
    let _r2 = sibling.after_func(calls.callback());
    // Cancel through the parent: the callback re-enters cancel on a node that is
    // already done, which must return at once.
    let taken = cancel_parent.lock().unwrap().take().unwrap();
    taken.cancel();
    assert_eq!(calls.get(), 2);
    assert!(ctx.is_done() && sibling.is_done() && parent.is_done());
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn a_callback_canceling_the_parent_of_its_context_cancels_the_siblings() {
    let (parent, cancel_parent) = Context::background().with_cancel_cause();
    let (ctx, cancel_ctx) = parent.with_cancel();
    let (sibling, _cancel_sibling) = parent.with_cancel();
    let why = Cause::msg("child asked");
    let _r = {
        let why = why.clone();
        ctx.after_func(move || cancel_parent.cancel(why))
    };
    cancel_ctx.cancel();
    assert!(sibling.cause().unwrap().same(&why));
    assert!(parent.cause().unwrap().same(&why));
    assert_eq!(ctx.cause().unwrap().as_error(), Some(Error::Canceled));
}

#[test]
fn a_callback_may_register_callbacks_and_derive_children() {
    let (ctx, cancel) = Context::background().with_cancel();
    let inner_calls = Calls::new();
    let seen = Arc::new(Mutex::new(None));
    let _r = {
        let ctx = ctx.clone();
        let inner = inner_calls.clone();
        let seen = seen.clone();
        ctx.clone().after_func(move || {
            // Registering on the context being canceled runs at once.
            let registration = ctx.after_func(inner.callback());
            assert!(!registration.stop());
            let (child, _cancel) = ctx.with_cancel();
            *seen.lock().unwrap() = Some(child.err());
        })
    };
    cancel.cancel();
    assert_eq!(inner_calls.get(), 1);
    assert_eq!(*seen.lock().unwrap(), Some(Some(Error::Canceled)));
}

#[test]
fn stop_from_inside_its_own_callback_reports_false() {
    let (ctx, cancel) = Context::background().with_cancel();
    let slot: Arc<Mutex<Option<AfterFunc>>> = Arc::new(Mutex::new(None));
    let answer = Arc::new(Mutex::new(None));
    let registration = {
        let slot = slot.clone();
        let answer = answer.clone();
        ctx.after_func(move || {
            let stopped = slot.lock().unwrap().as_ref().map(AfterFunc::stop);
            *answer.lock().unwrap() = stopped;
        })
    };
    *slot.lock().unwrap() = Some(registration);
    cancel.cancel();
    assert_eq!(*answer.lock().unwrap(), Some(false));
    slot.lock().unwrap().take();
}

#[test]
fn one_callback_stopping_another_either_stops_it_or_finds_it_ran() {
    let (ctx, cancel) = Context::background().with_cancel();
    let victim_calls = Calls::new();
    let slot: Arc<Mutex<Option<AfterFunc>>> = Arc::new(Mutex::new(None));
    let answer = Arc::new(Mutex::new(None));
    let _stopper = {
        let slot = slot.clone();
        let answer = answer.clone();
        ctx.after_func(move || {
            let stopped = slot.lock().unwrap().as_ref().map(AfterFunc::stop);
            *answer.lock().unwrap() = stopped;
        })
    };
    *slot.lock().unwrap() = Some(ctx.after_func(victim_calls.callback()));
    cancel.cancel();
    let stopped = answer.lock().unwrap().expect("the stopper ran");
    assert_eq!(stopped, victim_calls.get() == 0, "stopped={stopped}");
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
    assert_eq!(calls.get(), 1);
    assert!(dropped.load(Ordering::SeqCst));
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
    assert_eq!(calls.get(), 1);
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
    assert_eq!(calls.get(), 1);
    drop(sibling);
    drop(_cancel_sibling);
    drop(_r);
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn a_value_freed_by_a_callback_may_cancel_the_context_being_canceled() {
    // The value lives below `ctx` and holds `ctx`'s own cancel function; the only
    // other thing keeping the value alive is a callback on `ctx`. Canceling `ctx`
    // through its parent runs the callback, which drops the last handle on the
    // value layer; freeing it drops the cancel function, which cancels `ctx` again
    // from inside its own cancel (a re-entrant cancel of a node already done).
    let (flag, dropped) = DropFlag::new();
    let (parent, cancel_parent) = Context::background().with_value(flag).with_cancel();
    let (ctx, cancel_ctx) = parent.with_cancel();
    let (sibling, _cancel_sibling) = ctx.with_cancel();
    let holder = ctx.with_value(CancelOnDrop(Some(cancel_ctx)));
    let holder = Arc::new(Mutex::new(Some(holder)));
    let calls = Calls::new();
    let _r1 = {
        let holder = holder.clone();
        ctx.after_func(move || drop(holder.lock().unwrap().take()))
    };
    let _r2 = ctx.after_func(calls.callback());
    cancel_parent.cancel();
    assert!(holder.lock().unwrap().is_none(), "the callback ran");
    assert_eq!(calls.get(), 1, "the other callback ran once");
    assert_eq!(sibling.err(), Some(Error::Canceled));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(parent.live_children(), 0);
    drop((sibling, _cancel_sibling, _r1, _r2, ctx, parent, holder));
    assert!(dropped.load(Ordering::SeqCst));
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
    assert_eq!(
        calls.get() + stops.load(Ordering::SeqCst),
        threads * per_thread,
        "every registration either ran once or was stopped"
    );
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
