//! The behaviours Go's own `context` tests check, rebuilt against ctx-core's API,
//! followed by every statement of the design's semantics section.
//!
//! Each test names the behaviour it pins down. Tests that rely on a deadline
//! expiring use a manual timer where the exact moment does not matter, and the
//! real clock (with a few milliseconds of timeout) where the built-in timer
//! itself is under test. Nothing here asserts on elapsed time.
//!
//! Go checks that have no counterpart in Rust are left out on purpose: nil
//! parents and uncomparable value keys are compile errors here, contexts are not
//! an open interface (so there are no custom `Context` implementations to
//! propagate from), and allocation counts belong to the benchmarks.

mod support;

use ctx_core::{Cause, Context, Error};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use support::{Calls, ManualTimer, Rng, WATCHDOG, real_time_root, recv_within, scaled};

/// A timeout short enough to keep the suite fast, long enough to be "later".
const SHORT: Duration = Duration::from_millis(5);
/// A deadline that never comes during a test.
const LONG: Duration = Duration::from_secs(3600);

#[derive(Debug, PartialEq)]
struct K1(&'static str);
#[derive(Debug, PartialEq)]
struct K2(&'static str);
#[derive(Debug, PartialEq)]
struct K3(&'static str);

/// Asserts that `ctx` is done with `err`, and that its cause is `err` itself.
#[track_caller]
fn assert_done_plain(ctx: &Context, err: Error) {
    assert_eq!(ctx.err(), Some(err), "{ctx}");
    assert!(ctx.is_done());
    assert_eq!(ctx.check(), Err(err));
    let cause = ctx.cause().expect("a done context has a cause");
    assert_eq!(cause.as_error(), Some(err), "cause of {ctx} is {cause}");
}

/// Asserts that `ctx` is done with `err` and exactly the cause `cause`.
#[track_caller]
fn assert_done_with(ctx: &Context, err: Error, cause: &Cause) {
    assert_eq!(ctx.err(), Some(err), "{ctx}");
    let got = ctx.cause().expect("a done context has a cause");
    assert!(got.same(cause), "cause of {ctx} is {got}, want {cause}");
}

/// Asserts that `ctx` is live.
#[track_caller]
fn assert_live(ctx: &Context) {
    assert_eq!(ctx.err(), None, "{ctx}");
    assert!(!ctx.is_done());
    assert_eq!(ctx.check(), Ok(()));
    assert!(ctx.cause().is_none(), "{ctx}");
}

// ===== Go: x_test.go and context_test.go =====

#[test]
fn background_is_never_done_and_prints_its_name() {
    let ctx = Context::background();
    assert_live(&ctx);
    assert_eq!(ctx.deadline(), None);
    assert_eq!(ctx.to_string(), "context.Background");
    assert_eq!(ctx.live_children(), 0);
    assert!(!ctx.wait_timeout(Duration::from_millis(1)));
}

#[test]
fn todo_is_never_done_and_prints_its_name() {
    let ctx = Context::todo();
    assert_live(&ctx);
    assert_eq!(ctx.deadline(), None);
    assert_eq!(ctx.to_string(), "context.TODO");
    assert_eq!(ctx.live_children(), 0);
    assert!(!ctx.wait_timeout(Duration::from_millis(1)));
}

#[test]
fn with_cancel_cancels_the_context_and_everything_below_it() {
    let (c1, cancel) = Context::background().with_cancel();
    assert_eq!(c1.to_string(), "context.Background.WithCancel");
    // A value layer stands where Go wraps the context in a foreign type.
    let wrapped = c1.with_value(K1("wrapped"));
    let (c2, _cancel2) = wrapped.with_cancel();
    let all = [&c1, &wrapped, &c2];
    for ctx in all {
        assert_live(ctx);
    }
    cancel.cancel();
    for ctx in all {
        assert_done_plain(ctx, Error::Canceled);
        assert!(ctx.wait_timeout(Duration::ZERO));
    }
}

#[test]
fn canceling_a_parent_finishes_all_kinds_of_children() {
    let timer = ManualTimer::new();
    let (parent, cancel) = timer.root().with_cancel();
    let (cancel_child, _cancel_child) = parent.with_cancel();
    let value_child = parent.with_value(K1("value"));
    // The timer child registers with `parent` although a value layer is between.
    let (timer_child, _timer_child) = value_child.with_timeout(LONG);
    let calls = Calls::new();
    let _registration = parent.after_func(calls.callback());
    assert_eq!(timer.armed(), 1);
    assert_eq!(
        parent.live_children(),
        3,
        "cancel child, timer child, after_func"
    );
    assert_eq!(
        value_child.live_children(),
        3,
        "a value layer reads its carrier"
    );

    cancel.cancel();
    assert_eq!(parent.live_children(), 0);
    assert_done_plain(&parent, Error::Canceled);
    assert_done_plain(&cancel_child, Error::Canceled);
    assert_done_plain(&value_child, Error::Canceled);
    assert_done_plain(&timer_child, Error::Canceled);
    assert_eq!(timer.armed(), 0, "the canceled child's timer is released");
    calls.wait_for(1);

    // A child made now is born done and never registers.
    let (late, _late) = parent.with_cancel();
    assert_done_plain(&late, Error::Canceled);
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn a_child_canceled_first_leaves_its_parent_alone() {
    let (cancelable, cancel_parent) = Context::background().with_cancel();
    for parent in [Context::background(), cancelable.clone()] {
        let (child, cancel_child) = parent.with_cancel();
        if parent.same(&cancelable) {
            assert_eq!(parent.live_children(), 1);
        }
        cancel_child.cancel();
        assert_eq!(parent.live_children(), 0);
        assert_live(&parent);
        assert_done_plain(&child, Error::Canceled);
    }
    cancel_parent.cancel();
    assert_done_plain(&cancelable, Error::Canceled);
}

#[test]
fn canceling_removes_children_and_callbacks_from_the_parent() {
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_cancel();
    assert_eq!(ctx.live_children(), 0);

    let (_child, cancel) = ctx.with_cancel();
    assert_eq!(ctx.live_children(), 1);
    cancel.cancel();
    assert_eq!(ctx.live_children(), 0);

    let (_child, cancel) = ctx.with_timeout(LONG);
    assert_eq!(ctx.live_children(), 1);
    cancel.cancel();
    assert_eq!(ctx.live_children(), 0);

    let registration = ctx.after_func(|| {});
    assert_eq!(ctx.live_children(), 1);
    assert!(registration.stop());
    assert_eq!(ctx.live_children(), 0);
    assert_live(&ctx);
}

#[test]
fn a_deadline_expires_with_deadline_exceeded() {
    let root = real_time_root();
    let (ctx, _cancel) = root.with_deadline(Instant::now() + SHORT);
    assert!(ctx.to_string().contains(".WithDeadline("), "{ctx}");
    ctx.wait();
    assert_done_plain(&ctx, Error::DeadlineExceeded);
}

#[test]
fn a_later_deadline_below_an_earlier_one_expires_with_the_parent() {
    let root = real_time_root();
    let (parent, _cancel) = root.with_deadline(Instant::now() + SHORT);
    let wrapped = parent.with_value(K1("wrapped"));
    let (child, _cancel_child) = wrapped.with_deadline(Instant::now() + LONG);
    assert_eq!(child.deadline(), parent.deadline());
    child.wait();
    assert_done_plain(&child, Error::DeadlineExceeded);
    assert_done_plain(&parent, Error::DeadlineExceeded);
}

#[test]
fn a_deadline_in_the_past_is_born_expired() {
    let now = Instant::now();
    let past = now
        .checked_sub(Duration::from_secs(4 * 86_400))
        .unwrap_or(now);
    let (ctx, _cancel) = Context::background().with_deadline(past);
    assert_done_plain(&ctx, Error::DeadlineExceeded);
    assert_eq!(ctx.deadline(), Some(past));
}

#[test]
fn a_timeout_expires_with_deadline_exceeded() {
    let root = real_time_root();
    let (ctx, _cancel) = root.with_timeout(SHORT);
    assert!(ctx.to_string().contains(".WithDeadline("), "{ctx}");
    ctx.wait();
    assert_done_plain(&ctx, Error::DeadlineExceeded);

    let (outer, _cancel) = root.with_timeout(SHORT);
    let (inner, _cancel_inner) = outer.with_value(K1("wrapped")).with_timeout(LONG);
    inner.wait();
    assert_done_plain(&inner, Error::DeadlineExceeded);
}

#[test]
fn canceling_before_the_timeout_reports_canceled() {
    let timer = ManualTimer::new();
    let (ctx, _cancel_timeout) = timer.root().with_timeout(Duration::from_secs(1));
    let (child, cancel) = ctx.with_value(K1("wrapped")).with_cancel();
    cancel.cancel();
    assert_done_plain(&child, Error::Canceled);
    assert_live(&ctx);
    // The deadline passing later changes nothing for the canceled child.
    timer.advance(Duration::from_secs(2));
    assert_done_plain(&child, Error::Canceled);
    assert_done_plain(&ctx, Error::DeadlineExceeded);
}

#[test]
fn values_are_found_through_layers_and_shadowed_by_nearer_ones() {
    let c0 = Context::background();
    let c1 = c0.with_value(K1("c1k1"));
    let c2 = c1.with_value(K2("c2k2"));
    let c3 = c2.with_value(K3("c3k3"));
    let c4 = c3.with_value(K1("c4k1"));
    let (c5, _cancel) = c4.with_cancel();
    // Each row: a context, then what it holds for K1, K2 and K3.
    type Row<'a> = (
        &'a Context,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: [Row<'_>; 6] = [
        (&c0, None, None, None),
        (&c1, Some("c1k1"), None, None),
        (&c2, Some("c1k1"), Some("c2k2"), None),
        (&c3, Some("c1k1"), Some("c2k2"), Some("c3k3")),
        (&c4, Some("c4k1"), Some("c2k2"), Some("c3k3")),
        (&c5, Some("c4k1"), Some("c2k2"), Some("c3k3")),
    ];
    for (ctx, k1, k2, k3) in cases {
        assert_eq!(ctx.value::<K1>().map(|v| v.0), k1, "{ctx}");
        assert_eq!(ctx.value::<K2>().map(|v| v.0), k2, "{ctx}");
        assert_eq!(ctx.value::<K3>().map(|v| v.0), k3, "{ctx}");
    }
    let k1 = std::any::type_name::<K1>();
    let k2 = std::any::type_name::<K2>();
    assert_eq!(
        c2.to_string(),
        format!("context.Background.WithValue({k1}).WithValue({k2})")
    );
}

/// Adds `ctx` to `out`, then a random subtree of the given depth below it: three
/// children per node, each a cancel, a timeout or a value layer. Cancel functions
/// go to `keep`, so that nothing is canceled before the test says so.
fn build_tree(
    ctx: &Context,
    depth: usize,
    rng: &mut Rng,
    out: &mut Vec<Context>,
    keep: &mut Vec<Box<dyn Send>>,
) {
    out.push(ctx.clone());
    if depth == 0 {
        return;
    }
    for _ in 0..3 {
        let child = match rng.below(3) {
            0 => {
                let (child, cancel) = ctx.with_cancel();
                keep.push(Box::new(cancel));
                child
            }
            1 => {
                let (child, cancel) = ctx.with_timeout(LONG);
                keep.push(Box::new(cancel));
                child
            }
            _ => ctx.with_value(K1("layer")),
        };
        build_tree(&child, depth - 1, rng, out, keep);
    }
}

#[test]
fn simultaneous_cancels_reach_every_waiter() {
    let timer = ManualTimer::new();
    let (root, cancel) = timer.root().with_cancel_cause();
    let mut all = Vec::new();
    let mut keep = Vec::new();
    build_tree(&root, scaled(3, 1), &mut Rng::new(7), &mut all, &mut keep);
    let waiters: Vec<_> = all
        .iter()
        .step_by(scaled(1, 2))
        .map(|ctx| {
            let ctx = ctx.clone();
            thread::spawn(move || {
                ctx.wait();
                ctx.err()
            })
        })
        .collect();
    let why = Cause::msg("stop everything");
    // Two threads race to cancel the root with the same cause: one calls its cancel
    // function directly, the other cancels a cousin whose after_func does it.
    let barrier = Arc::new(Barrier::new(3));
    let (cousin, cancel_cousin) = Context::background().with_cancel();
    let cancel = Arc::new(Mutex::new(Some(cancel)));
    let via_cousin = {
        let cancel = cancel.clone();
        let why = why.clone();
        cousin.after_func(move || {
            if let Some(cancel) = cancel.lock().unwrap().take() {
                cancel.cancel(why);
            }
        })
    };
    let direct = {
        let cancel = cancel.clone();
        let why = why.clone();
        let barrier = barrier.clone();
        thread::spawn(move || {
            barrier.wait();
            let taken = cancel.lock().unwrap().take();
            if let Some(cancel) = taken {
                cancel.cancel(why);
            }
        })
    };
    let by_cousin = {
        let barrier = barrier.clone();
        thread::spawn(move || {
            barrier.wait();
            cancel_cousin.cancel();
        })
    };
    barrier.wait();
    direct.join().unwrap();
    by_cousin.join().unwrap();
    drop(via_cousin);
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), Some(Error::Canceled));
    }
    for ctx in &all {
        assert_done_with(ctx, Error::Canceled, &why);
    }
    assert_eq!(timer.armed(), 0);
    drop(keep);
}

#[test]
fn a_child_canceled_when_its_parent_is_done_interlocks() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = Context::background().with_cancel();
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
    assert_done_plain(&child, Error::Canceled);

    // The same chain, done by after_func (on the runner, as Go's goroutine).
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = Context::background().with_cancel();
    let _link = parent.after_func(move || cancel_child.cancel());
    cancel_parent.cancel();
    assert!(
        child.wait_timeout(WATCHDOG),
        "the link never canceled the child"
    );
    assert_done_plain(&child, Error::Canceled);
}

/// Random layers over a root: every layer's context from the root down, and the
/// cancel functions with the index of the layer each one cancels.
struct Layers {
    all: Vec<Context>,
    cancels: Vec<(usize, ctx_core::CancelFunc)>,
}

/// Builds random layers of values, cancels and timeouts over `timer`'s root, and
/// checks the values and liveness every layer sees as it is added.
fn layers(rng: &mut Rng, timer: &Arc<ManualTimer>) -> Layers {
    #[derive(Debug)]
    struct V1(u32);
    #[derive(Debug)]
    struct V2(u32);
    #[derive(Debug)]
    struct V3(u32);
    let mut ctx = timer.root();
    let mut all = vec![ctx.clone()];
    let mut cancels = Vec::new();
    let mut expect: [Option<u32>; 3] = [None; 3];
    for i in 0..scaled(40, 12) {
        let value = i as u32;
        ctx = match rng.below(5) {
            0 => {
                expect[0] = Some(value);
                ctx.with_value(V1(value))
            }
            1 => {
                expect[1] = Some(value);
                ctx.with_value(V2(value))
            }
            2 => {
                expect[2] = Some(value);
                ctx.with_value(V3(value))
            }
            3 => {
                let (child, cancel) = ctx.with_cancel();
                cancels.push((all.len(), cancel));
                child
            }
            _ => {
                let (child, cancel) = ctx.with_timeout(LONG + Duration::from_secs(i as u64));
                cancels.push((all.len(), cancel));
                child
            }
        };
        all.push(ctx.clone());
        assert_eq!(ctx.value::<V1>().map(|v| v.0), expect[0]);
        assert_eq!(ctx.value::<V2>().map(|v| v.0), expect[1]);
        assert_eq!(ctx.value::<V3>().map(|v| v.0), expect[2]);
        assert_live(&ctx);
    }
    Layers { all, cancels }
}

#[test]
fn random_layers_cancel_from_any_cancelable_layer() {
    for seed in 0..scaled(20, 3) as u64 {
        let mut rng = Rng::new(seed);
        let timer = ManualTimer::new();
        let Layers { all, mut cancels } = layers(&mut rng, &timer);
        if cancels.is_empty() {
            continue;
        }
        let (depth, cancel) = cancels.remove(rng.below(cancels.len()));
        cancel.cancel();
        for (i, ctx) in all.iter().enumerate() {
            if i < depth {
                assert_live(ctx);
            } else {
                assert_done_plain(ctx, Error::Canceled);
            }
        }
        drop(cancels);
        assert_eq!(timer.armed(), 0, "seed {seed}");
    }
}

#[test]
fn random_layers_time_out_from_an_added_short_timeout() {
    for seed in 0..scaled(20, 3) as u64 {
        let mut rng = Rng::new(seed);
        let timer = ManualTimer::new();
        let Layers { all, cancels } = layers(&mut rng, &timer);
        let innermost = all.last().unwrap();
        let (short, _cancel_short) = innermost.with_timeout(Duration::from_millis(1));
        timer.advance(Duration::from_millis(1));
        assert_done_plain(&short, Error::DeadlineExceeded);
        for ctx in &all {
            assert_live(ctx);
        }
        drop(cancels);
    }
}

#[test]
fn a_child_of_a_canceled_parent_is_born_canceled_with_its_cause() {
    let (parent, cancel) = Context::background().with_cancel_cause();
    let because = Cause::msg("Because!");
    cancel.cancel(because.clone());
    let (child, _cancel_child) = parent.with_cancel();
    assert_done_with(&child, Error::Canceled, &because);
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn children_created_while_the_parent_is_canceled_all_end_up_canceled() {
    for _ in 0..scaled(20, 2) {
        let (parent, cancel) = Context::background().with_cancel_cause();
        let because = Cause::msg("racing");
        let barrier = Arc::new(Barrier::new(2));
        let canceler = {
            let barrier = barrier.clone();
            let because = because.clone();
            thread::spawn(move || {
                barrier.wait();
                cancel.cancel(because);
            })
        };
        barrier.wait();
        let children: Vec<_> = (0..scaled(50, 5)).map(|_| parent.with_cancel()).collect();
        canceler.join().unwrap();
        for (child, _) in &children {
            assert_done_with(child, Error::Canceled, &because);
        }
        assert_eq!(parent.live_children(), 0);
    }
}

#[test]
fn deadline_exceeded_is_a_timeout_and_canceled_is_not() {
    assert!(Error::DeadlineExceeded.is_timeout());
    assert!(!Error::Canceled.is_timeout());
    let as_std: &dyn std::error::Error = &Error::DeadlineExceeded;
    assert_eq!(as_std.to_string(), "context deadline exceeded");
    assert!(as_std.source().is_none());
}

#[test]
fn cause_of_a_live_or_uncancelable_context_is_none() {
    assert!(Context::background().cause().is_none());
    assert!(Context::todo().cause().is_none());
    let (ctx, _cancel) = Context::background().with_cancel_cause();
    assert!(ctx.cause().is_none());
}

#[test]
fn cause_of_a_plain_cancel_is_canceled() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    assert_done_plain(&ctx, Error::Canceled);
    assert!(ctx.cause().unwrap() == Error::Canceled);
}

#[test]
fn cause_of_a_cancel_with_cause_is_that_cause() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let why = Cause::new(std::io::Error::other("disk on fire"));
    cancel.cancel(why.clone());
    assert_done_with(&ctx, Error::Canceled, &why);
    let cause = ctx.cause().unwrap();
    assert_eq!(cause.to_string(), "disk on fire");
    assert!(cause.downcast_ref::<std::io::Error>().is_some());
}

#[test]
fn cause_flows_down_from_a_parent_canceled_with_a_cause() {
    let (parent, cancel) = Context::background().with_cancel_cause();
    let (child, _cancel_child) = parent.with_cancel();
    let (timeout_child, _cancel_timeout) = parent
        .with_value(K1("x"))
        .with_timeout_cause(LONG, Cause::msg("own timeout"));
    let why = Cause::msg("parent's reason");
    cancel.cancel(why.clone());
    assert_done_with(&child, Error::Canceled, &why);
    assert_done_with(&timeout_child, Error::Canceled, &why);
}

#[test]
fn a_later_child_cancel_with_cause_does_not_replace_the_parents_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel_cause();
    cancel.cancel();
    cancel_child.cancel(Cause::msg("too late"));
    assert_done_plain(&child, Error::Canceled);
}

#[test]
fn cause_of_a_timeout_is_deadline_exceeded_or_the_given_cause() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let (plain, _c1) = root.with_timeout(Duration::from_secs(1));
    let slow = Cause::msg("too slow");
    let (caused, _c2) = root.with_timeout_cause(Duration::from_secs(1), slow.clone());
    let (canceled, cancel) = root.with_timeout_cause(Duration::from_secs(1), Cause::msg("unused"));
    cancel.cancel();
    timer.advance(Duration::from_secs(1));
    assert_done_plain(&plain, Error::DeadlineExceeded);
    assert_done_with(&caused, Error::DeadlineExceeded, &slow);
    assert_done_plain(&canceled, Error::Canceled);
}

#[test]
fn a_past_deadline_with_cause_is_born_with_that_cause_unless_the_parent_is_done() {
    let past = Instant::now();
    let why = Cause::msg("already late");
    let (ctx, _c) = Context::background().with_deadline_cause(past, why.clone());
    assert_done_with(&ctx, Error::DeadlineExceeded, &why);

    let (parent, cancel) = Context::background().with_cancel_cause();
    let first = Cause::msg("parent went first");
    cancel.cancel(first.clone());
    let (child, _c) = parent.with_deadline_cause(past, Cause::msg("ignored"));
    assert_done_with(&child, Error::Canceled, &first);
}

#[test]
fn without_cancel_hides_the_parents_cancel_but_not_later_cancels() {
    let timer = ManualTimer::new();
    let (parent, cancel) = timer.root().with_cancel_cause();
    let detached = parent.without_cancel();
    cancel.cancel(Cause::msg("parent gone"));
    assert_live(&detached);

    let (child, cancel_child) = detached.with_cancel_cause();
    let why = Cause::msg("child's own reason");
    cancel_child.cancel(why.clone());
    assert_done_with(&child, Error::Canceled, &why);

    let slow = Cause::msg("child's own deadline");
    let (timed, _c) = detached.with_timeout_cause(Duration::from_secs(1), slow.clone());
    timer.advance(Duration::from_secs(1));
    assert_done_with(&timed, Error::DeadlineExceeded, &slow);
}

#[test]
fn cause_is_never_seen_without_its_error_while_a_cancel_races() {
    for _ in 0..scaled(50, 3) {
        let (ctx, cancel) = Context::background().with_cancel_cause();
        let (child, _cancel_child) = ctx.with_cancel();
        let why = Cause::msg("raced");
        let canceler = {
            let why = why.clone();
            thread::spawn(move || cancel.cancel(why))
        };
        loop {
            let err = child.err();
            let cause = child.cause();
            if let Some(err) = err {
                assert_eq!(err, Error::Canceled);
                assert!(
                    cause.unwrap().same(&why),
                    "a done context shows the winning cause"
                );
                break;
            }
            if let Some(cause) = cause {
                // The cancel landed between the two reads; the cause must be final.
                assert!(cause.same(&why));
            }
            thread::yield_now();
        }
        canceler.join().unwrap();
    }
}

#[test]
fn without_cancel_keeps_values_and_drops_cancel_and_deadline() {
    let timer = ManualTimer::new();
    let (ctx, cancel) = timer
        .root()
        .with_value(K1("value"))
        .with_timeout(Duration::from_secs(1));
    let detached = ctx.without_cancel();
    assert_eq!(detached.value::<K1>(), Some(&K1("value")));
    assert_eq!(detached.deadline(), None);
    assert_eq!(detached.live_children(), 0);
    assert!(
        detached.to_string().ends_with(".WithoutCancel"),
        "{detached}"
    );
    timer.advance(Duration::from_secs(2));
    assert_done_plain(&ctx, Error::DeadlineExceeded);
    cancel.cancel();
    assert_live(&detached);
}

#[test]
fn after_func_runs_after_cancel_and_then_cannot_be_stopped() {
    let (ctx, cancel) = Context::background().with_cancel();
    let calls = Calls::new();
    let registration = ctx.after_func(calls.callback());
    assert_eq!(calls.get(), 0, "not before the context is done");
    cancel.cancel();
    // The cancel claimed the run: a stop is too late, started or not.
    assert!(!registration.stop(), "stop after the cancel reports false");
    calls.wait_for(1);
    assert!(!registration.stop(), "stop after the run reports false");
}

#[test]
fn after_func_runs_after_a_timeout() {
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let calls = Calls::new();
    let _registration = ctx.after_func(calls.callback());
    timer.advance(Duration::from_millis(999));
    assert_eq!(calls.get(), 0);
    timer.advance(Duration::from_millis(1));
    // Off the timer's thread, as Go runs it on a goroutine of its own.
    assert!(support::eventually(|| calls.get() == 1));
}

#[test]
fn after_func_runs_after_a_real_timeout() {
    let (ctx, _cancel) = real_time_root().with_timeout(SHORT);
    let (tx, rx) = mpsc::channel();
    let _registration = ctx.after_func(move || tx.send(()).unwrap());
    ctx.wait();
    // The callback runs on the runner, whoever noticed the deadline first,
    // before `wait` returns or soon after.
    recv_within(&rx, "the callback of a real timeout ran");
    assert_done_plain(&ctx, Error::DeadlineExceeded);
}

/// Go: `AfterFunc` "arranges to call f in its own goroutine after ctx is
/// done". The callback runs on another thread than the canceler, sees the
/// whole subtree done, and the cancel returns without waiting for it: here
/// the callback cannot finish before the test thread, after the cancel
/// returned, releases it.
#[test]
fn after_func_runs_on_another_thread_after_the_subtree_is_done_and_cancel_does_not_wait() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cancel_child) = ctx.with_cancel();
    let (grandchild, _cancel_grandchild) = child.with_value(1u8).with_cancel();
    let (release, released) = mpsc::channel::<()>();
    let (report, reported) = mpsc::channel();
    let _registration = {
        let (child, grandchild) = (child.clone(), grandchild.clone());
        ctx.after_func(move || {
            let subtree_done = child.is_done() && grandchild.is_done();
            let was_released = released.recv_timeout(WATCHDOG).is_ok();
            report
                .send((thread::current().id(), subtree_done, was_released))
                .unwrap();
        })
    };
    cancel.cancel();
    // The cancel returned while the callback waits for this (or has not even
    // started): a cancel that waited for it would have returned only once the
    // callback gave up.
    release.send(()).unwrap();
    let (ran_on, subtree_done, was_released) = recv_within(&reported, "the callback ran");
    assert!(was_released, "the cancel waited for the callback");
    assert_ne!(
        ran_on,
        thread::current().id(),
        "ran on the canceling thread"
    );
    assert!(subtree_done, "ran before the whole subtree was done");
}

/// Go: "if ctx is already done, AfterFunc calls f immediately in its own
/// goroutine". The run is claimed before `after_func` returns (`stop` reports
/// false), and happens on another thread.
#[test]
fn after_func_on_a_done_context_starts_at_once_on_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (ran_on, ran_on_rx) = mpsc::channel();
    let registration = ctx.after_func(move || ran_on.send(thread::current().id()).unwrap());
    assert!(!registration.stop(), "the run was not claimed at once");
    assert_eq!(ctx.live_children(), 0);
    assert_ne!(
        recv_within(&ran_on_rx, "the callback on a done context ran"),
        thread::current().id(),
        "ran on the registering thread"
    );
}

/// Go's `ExampleAfterFunc_cond` on a context already done (its deadline is in
/// the past): the registrant holds the lock the callback takes to broadcast,
/// and then waits on the condition variable. `after_func` returns without
/// running the callback under that lock (which would deadlock), and the
/// callback runs once the wait releases the lock, waking the waiter.
#[test]
fn after_func_on_a_done_context_runs_once_the_registrant_releases_its_lock() {
    let (claimed, err) = support::within_watchdog("after_func under the callback's lock", || {
        let timer = ManualTimer::new();
        let root = timer.root();
        let (ctx, _cancel) = root.with_deadline(root.now() - Duration::from_secs(1));
        let cond = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (lock, cvar) = &*cond;
        let mut broadcast = lock.lock().unwrap();
        let registration = {
            let cond = cond.clone();
            ctx.after_func(move || {
                *cond.0.lock().unwrap() = true;
                cond.1.notify_all();
            })
        };
        // Still under the lock: the callback cannot have run.
        assert!(!*broadcast);
        let claimed = !registration.stop();
        while !*broadcast {
            broadcast = cvar.wait(broadcast).unwrap();
        }
        (claimed, ctx.err())
    });
    assert!(claimed, "the run was not claimed at once");
    assert_eq!(err, Some(Error::DeadlineExceeded));
}

#[test]
fn after_func_stopped_before_cancel_never_runs() {
    let (ctx, cancel) = Context::background().with_cancel();
    let calls = Calls::new();
    let registration = ctx.after_func(calls.callback());
    assert!(registration.stop(), "the first stop prevents the run");
    assert!(!registration.stop(), "a second stop prevents nothing");
    cancel.cancel();
    assert_eq!(calls.get(), 0);
}

#[test]
fn after_func_registration_is_counted_until_stopped() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let registration = ctx.after_func(|| {});
    assert_eq!(ctx.live_children(), 1);
    assert!(registration.stop());
    assert_eq!(ctx.live_children(), 0);
}

#[test]
fn a_child_canceled_by_its_parent_is_removed_from_the_parent() {
    let (parent, _cancel_parent) = Context::background().with_cancel();
    let (_child, cancel) = parent.with_cancel();
    assert_eq!(parent.live_children(), 1);
    cancel.cancel();
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn a_child_that_times_out_is_removed_from_its_parent() {
    let timer = ManualTimer::new();
    let (parent, _cancel_parent) = timer.root().with_cancel();
    let (child, _cancel) = parent.with_timeout(Duration::from_secs(1));
    assert_eq!(parent.live_children(), 1);
    timer.advance(Duration::from_secs(1));
    assert_done_plain(&child, Error::DeadlineExceeded);
    assert_eq!(parent.live_children(), 0);
    assert_live(&parent);
}

#[test]
fn canceling_a_parent_reaches_a_child_and_its_after_func() {
    let (ctx0, cancel0) = Context::background().with_cancel();
    let (ctx1, _cancel1) = ctx0.with_cancel();
    let calls = Calls::new();
    let _registration = ctx1.after_func(calls.callback());
    cancel0.cancel();
    assert_done_plain(&ctx1, Error::Canceled);
    calls.wait_for(1);
}

#[test]
fn a_timeout_below_a_live_parent_expires_on_its_own() {
    let timer = ManualTimer::new();
    let (ctx0, _cancel0) = timer.root().with_cancel();
    let (ctx1, _cancel1) = ctx0.with_timeout(Duration::from_millis(10));
    timer.advance(Duration::from_millis(10));
    assert_done_plain(&ctx1, Error::DeadlineExceeded);
    assert_live(&ctx0);
}

// ===== The design's semantics section =====

#[test]
fn every_constructor_shows_in_the_name() {
    let timer = ManualTimer::new();
    let bg = Context::background();
    assert_eq!(bg.to_string(), "context.Background");
    assert_eq!(Context::todo().to_string(), "context.TODO");
    let (c, _c1) = bg.with_cancel();
    assert_eq!(c.to_string(), "context.Background.WithCancel");
    let (cc, _c2) = Context::todo().with_cancel_cause();
    assert_eq!(cc.to_string(), "context.TODO.WithCancelCause");
    let v = c.with_value(7u32);
    assert_eq!(
        v.to_string(),
        "context.Background.WithCancel.WithValue(u32)"
    );
    let w = v.without_cancel();
    assert_eq!(
        w.to_string(),
        "context.Background.WithCancel.WithValue(u32).WithoutCancel"
    );
    let (d, _c3) = timer.root().with_timeout(Duration::from_secs(60));
    assert_eq!(
        d.to_string(),
        "context.Background.WithTimer.WithDeadline(in 60s)"
    );
    timer.advance_silently(Duration::from_secs(61));
    assert_eq!(
        d.to_string(),
        "context.Background.WithTimer.WithDeadline(1s ago)"
    );
    let (any, _c4) = Context::with_cancel_any(&[c.clone(), cc.clone()]);
    assert!(
        any.to_string()
            .starts_with("context.Background.WithCancel."),
        "{any}"
    );
    assert!(any.to_string().contains("WithCancelAny"), "{any}");
    assert!(format!("{c:?}").contains("context.Background.WithCancel"));
}

#[test]
fn cancel_reaches_every_descendant_and_detaches_from_the_parent() {
    let (root, cancel_root) = Context::background().with_cancel();
    let (parent, cancel) = root.with_cancel();
    let (child, _c1) = parent.with_cancel();
    let (grandchild, _c2) = child.with_value(K1("v")).with_cancel_cause();
    let detached = grandchild.without_cancel();
    assert_eq!(root.live_children(), 1);
    assert_eq!(parent.live_children(), 1);
    cancel.cancel();
    assert_eq!(root.live_children(), 0, "the canceled child left the root");
    assert_eq!(parent.live_children(), 0);
    assert_eq!(child.live_children(), 0);
    for ctx in [&parent, &child, &grandchild] {
        assert_done_plain(ctx, Error::Canceled);
    }
    assert_live(&root);
    assert_live(&detached);
    cancel_root.cancel();
}

#[test]
fn a_dropped_child_detaches_from_its_parent() {
    let (parent, _cancel) = Context::background().with_cancel();
    // The context handle goes first, then the cancel function.
    let (child, cancel) = parent.with_cancel();
    let clone = child.clone();
    drop(child);
    drop(clone);
    assert_eq!(
        parent.live_children(),
        1,
        "the cancel function keeps it registered"
    );
    drop(cancel);
    assert_eq!(parent.live_children(), 0);
    // The cancel function goes first: that cancels, so the child leaves at once.
    let (child, cancel) = parent.with_cancel();
    drop(cancel);
    assert_eq!(parent.live_children(), 0);
    assert_done_plain(&child, Error::Canceled);
    // Many at once, from a deeper layer.
    let layer = parent.with_value(K1("v"));
    let many: Vec<_> = (0..10).map(|_| layer.with_cancel()).collect();
    assert_eq!(parent.live_children(), 10);
    drop(many);
    assert_eq!(parent.live_children(), 0);
    assert_live(&parent);
}

#[test]
fn a_child_of_a_parent_past_its_deadline_is_born_with_the_deadline_cause() {
    let timer = ManualTimer::new();
    let slow = Cause::msg("slow");
    let (parent, _c) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), slow.clone());
    timer.advance(Duration::from_secs(1));
    let (child, _c1) = parent.with_cancel();
    let (cause_child, _c2) = parent.with_cancel_cause();
    assert_done_with(&child, Error::DeadlineExceeded, &slow);
    assert_done_with(&cause_child, Error::DeadlineExceeded, &slow);
}

#[test]
fn the_first_cancel_wins_and_its_err_and_cause_stick() {
    let timer = ManualTimer::new();
    // The child's own cancel first, then the parent's.
    let (parent, cancel_parent) = timer.root().with_cancel_cause();
    let (child, cancel_child) = parent.with_cancel_cause();
    let own = Cause::msg("own");
    cancel_child.cancel(own.clone());
    cancel_parent.cancel(Cause::msg("parent"));
    assert_done_with(&child, Error::Canceled, &own);

    // A cancel, then the deadline: still canceled.
    let (timed, cancel) = timer.root().with_timeout(Duration::from_secs(1));
    cancel.cancel();
    timer.advance(Duration::from_secs(2));
    assert_done_plain(&timed, Error::Canceled);

    // The deadline, then a cancel with cause: still the deadline.
    let slow = Cause::msg("slow");
    let (timed, _c) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), slow.clone());
    let (inner, cancel_inner) = timed.with_cancel_cause();
    timer.advance(Duration::from_secs(1));
    cancel_inner.cancel(Cause::msg("too late"));
    assert_done_with(&inner, Error::DeadlineExceeded, &slow);
    assert_done_with(&timed, Error::DeadlineExceeded, &slow);
}

#[test]
fn a_childs_deadline_is_never_later_than_its_parents() {
    let timer = ManualTimer::new();
    let now = timer.root().now();
    let (parent, _c) = timer.root().with_deadline(now + Duration::from_secs(10));
    let (later, _c1) = parent.with_deadline(now + Duration::from_secs(20));
    assert_eq!(later.deadline(), Some(now + Duration::from_secs(10)));
    assert!(
        later.to_string().ends_with(".WithCancel"),
        "no second timer: {later}"
    );
    let (sooner, _c2) = parent.with_deadline(now + Duration::from_secs(5));
    assert_eq!(sooner.deadline(), Some(now + Duration::from_secs(5)));
    let (same, _c3) = parent.with_deadline(now + Duration::from_secs(10));
    assert_eq!(same.deadline(), parent.deadline());
    assert_eq!(
        timer.armed(),
        2,
        "only the parent and the sooner child arm a timer"
    );
    let (via_value, _c4) = parent
        .with_value(K1("v"))
        .with_timeout(Duration::from_secs(60));
    assert_eq!(via_value.deadline(), parent.deadline());
    assert_eq!(timer.armed(), 2);
}

/// Below `with_timer`, a deadline is always the context's own, armed on its
/// own timer: an instant of another clock above does not compare with it. A
/// 1 s timeout under a clock that runs ahead of the one above (the manual
/// clock here is an hour ahead of the real one) used to be taken for "later
/// than the deadline above" and turned into a plain cancel, which never timed
/// out by its own clock. The deadline above still ends the subtree when its
/// timer fires.
#[test]
fn a_deadline_under_another_clock_is_armed_on_that_clock() {
    let outer = ManualTimer::new();
    let (above, _cancel_above) = outer.root().with_timeout(Duration::from_secs(1800));
    // An hour ahead of `outer`'s clock: the instants would compare wrongly.
    let inner = ManualTimer::new();
    inner.advance_silently(Duration::from_secs(3600));
    let under = above.with_timer(inner.clone());
    let (ctx, _cancel) = under.with_timeout(Duration::from_secs(1));
    assert_eq!(inner.armed(), 1, "the timeout was not armed on its clock");
    assert_eq!(ctx.deadline(), Some(under.now() + Duration::from_secs(1)));
    assert_eq!(inner.advance(Duration::from_secs(2)), 1);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));

    // The deadline above, on the other clock, reaches a live child when its
    // timer fires.
    let (longer, _cancel_longer) = under.with_timeout(Duration::from_secs(7200));
    assert_eq!(outer.advance(Duration::from_secs(1800)), 1);
    assert_eq!(longer.err(), Some(Error::DeadlineExceeded));
}

/// A merge's deadline is the parent's that comes first, also when the parents
/// run on different clocks: by the time left on each one's own clock, not by
/// comparing their instants (the manual clock runs an hour ahead of the real
/// one, so its 1 s deadline is the later instant).
#[test]
fn a_merges_deadline_across_clocks_is_the_one_with_the_least_time_left() {
    let timer = ManualTimer::new();
    let (soon, _c1) = timer.root().with_timeout(Duration::from_secs(1));
    let (later, _c2) = Context::background().with_timeout(Duration::from_secs(100));
    for parents in [[soon.clone(), later.clone()], [later.clone(), soon.clone()]] {
        let (merged, _cancel) = Context::with_cancel_any(&parents);
        assert_eq!(merged.deadline(), soon.deadline());
    }
    let (merged, _cancel) = Context::with_cancel_any(&[later, soon]);
    timer.advance_silently(Duration::from_secs(2));
    assert_eq!(merged.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn an_expired_deadline_sets_deadline_exceeded_and_its_cause_on_the_subtree() {
    let timer = ManualTimer::new();
    let slow = Cause::msg("slow backend");
    let (ctx, _c) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), slow.clone());
    let (child, _c1) = ctx.with_cancel();
    let grandchild = child.with_value(K1("v"));
    assert_eq!(timer.advance(Duration::from_secs(1)), 1);
    assert_done_with(&ctx, Error::DeadlineExceeded, &slow);
    assert_done_with(&grandchild, Error::DeadlineExceeded, &slow);
    assert!(ctx.err().unwrap().is_timeout());
    assert_eq!(timer.armed(), 0);
}

#[test]
fn cause_equals_err_when_no_cause_was_given() {
    let timer = ManualTimer::new();
    let (canceled, cancel) = timer.root().with_cancel_cause();
    drop(cancel);
    let (expired, _c) = timer.root().with_timeout(Duration::from_secs(1));
    timer.advance(Duration::from_secs(1));
    for ctx in [&canceled, &expired] {
        let err = ctx.err().unwrap();
        let cause = ctx.cause().unwrap();
        assert_eq!(cause.as_error(), Some(err));
        assert!(cause == err);
        assert_eq!(cause.to_string(), err.to_string());
    }
}

#[test]
fn a_cause_that_is_the_plain_error_is_the_same_as_no_cause() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    cancel.cancel(Error::Canceled);
    assert_done_plain(&ctx, Error::Canceled);
    assert!(ctx.cause().unwrap().same(&Cause::new(Error::Canceled)));
}

#[test]
fn without_cancel_keeps_values_only() {
    let timer = ManualTimer::new();
    let (ctx, cancel) = timer.root().with_value(K1("one")).with_timeout(LONG);
    let ctx = ctx.with_value(K2("two"));
    let detached = ctx.without_cancel();
    assert_eq!(detached.value::<K1>(), Some(&K1("one")));
    assert_eq!(detached.value::<K2>(), Some(&K2("two")));
    assert_eq!(detached.deadline(), None);
    let calls = Calls::new();
    let registration = detached.after_func(calls.callback());
    cancel.cancel();
    assert_live(&detached);
    assert_eq!(calls.get(), 0);
    assert!(
        registration.stop(),
        "a callback on a context that never ends can be stopped"
    );
    // Children of the detached context start a fresh cancellation scope.
    let (child, cancel_child) = detached.with_cancel();
    assert_eq!(detached.live_children(), 0);
    assert_eq!(child.live_children(), 0);
    assert_eq!(child.value::<K1>(), Some(&K1("one")));
    cancel_child.cancel();
    assert_done_plain(&child, Error::Canceled);
}

#[test]
fn values_are_found_through_every_kind_of_layer() {
    let timer = ManualTimer::new();
    let base = timer.root().with_value(K1("base")).with_value(K2("base"));
    let (c, _c1) = base.with_cancel();
    let (cc, _c2) = c.with_cancel_cause();
    let (d, _c3) = cc.with_timeout(LONG);
    let w = d.without_cancel();
    let (any, _c4) =
        Context::with_cancel_any(&[w.clone(), Context::background().with_value(K3("other"))]);
    let shadow = any.with_value(K2("near"));
    assert_eq!(shadow.value::<K1>(), Some(&K1("base")));
    assert_eq!(shadow.value::<K2>(), Some(&K2("near")));
    assert_eq!(
        shadow.value::<K3>(),
        None,
        "values come from the first parent only"
    );
    assert_eq!(any.value::<K2>(), Some(&K2("base")));
    assert_eq!(shadow.value::<String>(), None);
}

#[test]
fn after_func_runs_exactly_once_however_often_the_context_is_ended() {
    let timer = ManualTimer::new();
    let (parent, cancel_parent) = timer.root().with_cancel();
    let (ctx, cancel) = parent.with_timeout(Duration::from_secs(1));
    let calls = Calls::new();
    let _registration = ctx.after_func(calls.callback());
    cancel.cancel();
    cancel_parent.cancel();
    timer.advance(Duration::from_secs(2));
    calls.wait_for(1);
}

#[test]
fn after_func_on_a_context_that_is_never_canceled_never_runs() {
    let calls = Calls::new();
    for ctx in [
        Context::background(),
        Context::todo(),
        Context::background().with_value(1u8),
    ] {
        let registration = ctx.after_func(calls.callback());
        assert_eq!(ctx.live_children(), 0);
        assert!(registration.stop());
        assert!(!registration.stop());
        let _kept = ctx.after_func(calls.callback());
    }
    assert_eq!(calls.get(), 0);
}

#[test]
fn a_dropped_after_func_handle_still_runs_the_callback() {
    let (ctx, cancel) = Context::background().with_cancel();
    let calls = Calls::new();
    drop(ctx.after_func(calls.callback()));
    assert_eq!(ctx.live_children(), 1);
    cancel.cancel();
    assert_eq!(ctx.live_children(), 0);
    calls.wait_for(1);
}

#[test]
fn dropping_a_cancel_func_cancels() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cancel_child) = ctx.with_cancel();
    drop(cancel);
    assert_done_plain(&ctx, Error::Canceled);
    assert_done_plain(&child, Error::Canceled);
    let cancel_func_scope = {
        let (inner, _cancel) = ctx.without_cancel().with_cancel();
        assert_live(&inner);
        inner
    };
    assert_done_plain(&cancel_func_scope, Error::Canceled);
}

#[test]
fn a_cancel_cause_func_dropped_uncalled_cancels_with_canceled_as_cause() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let (child, _c) = ctx.with_cancel();
    drop(cancel);
    assert_done_plain(&ctx, Error::Canceled);
    assert_done_plain(&child, Error::Canceled);
}

#[test]
fn cancel_funcs_name_their_context() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (cause_ctx, cancel_cause) = ctx.with_cancel_cause();
    assert!(cancel.context().same(&ctx));
    assert!(cancel_cause.context().same(&cause_ctx));
    assert!(format!("{cancel:?}").contains("WithCancel"));
    assert!(format!("{cancel_cause:?}").contains("WithCancelCause"));
}

#[test]
fn with_cancel_any_is_canceled_by_whichever_parent_goes_first() {
    for which in 0..3 {
        let (a, cancel_a) = Context::background().with_cancel_cause();
        let (b, cancel_b) = Context::background().with_cancel_cause();
        let (c, cancel_c) = Context::background().with_cancel_cause();
        let (any, _cancel) = Context::with_cancel_any(&[a.clone(), b.clone(), c.clone()]);
        let (below, _c) = any.with_cancel();
        assert_live(&any);
        let why = Cause::msg(format!("parent {which}"));
        let mut funcs = vec![Some(cancel_a), Some(cancel_b), Some(cancel_c)];
        funcs[which].take().unwrap().cancel(why.clone());
        assert_done_with(&any, Error::Canceled, &why);
        assert_done_with(&below, Error::Canceled, &why);
        // The others canceling later change nothing.
        for func in funcs.into_iter().flatten() {
            func.cancel(Cause::msg("later"));
        }
        assert_done_with(&any, Error::Canceled, &why);
    }
}

#[test]
fn with_cancel_any_takes_a_parents_deadline_error_and_cause() {
    let timer = ManualTimer::new();
    let slow = Cause::msg("second parent timed out");
    let (a, _ca) = timer.root().with_timeout(Duration::from_secs(5));
    let (b, _cb) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(2), slow.clone());
    let (c, _cc) = timer.root().with_cancel();
    let (any, _cancel) = Context::with_cancel_any(&[a.clone(), b.clone(), c]);
    assert_eq!(any.deadline(), b.deadline(), "the earliest parent deadline");
    timer.advance(Duration::from_secs(2));
    assert_done_with(&any, Error::DeadlineExceeded, &slow);
    assert_live(&a);
}

#[test]
fn with_cancel_any_has_its_own_cancel_and_leaves_the_parents_alone() {
    let (a, _ca) = Context::background().with_value(K1("first")).with_cancel();
    let (b, _cb) = Context::background().with_value(K1("second")).with_cancel();
    let (any, cancel) = Context::with_cancel_any(&[a.clone(), b.clone()]);
    assert_eq!(any.value::<K1>(), Some(&K1("first")));
    assert_eq!(a.live_children(), 1);
    assert_eq!(b.live_children(), 1);
    cancel.cancel();
    assert_done_plain(&any, Error::Canceled);
    assert_live(&a);
    assert_live(&b);
    assert_eq!(a.live_children(), 0);
    assert_eq!(b.live_children(), 0);
}

#[test]
fn with_cancel_any_leaves_every_parent_when_one_parent_cancels_it() {
    let (a, cancel_a) = Context::background().with_cancel();
    let (b, _cancel_b) = Context::background().with_cancel();
    let (any, _cancel) = Context::with_cancel_any(&[a.clone(), b.clone()]);
    assert_eq!(b.live_children(), 1);
    cancel_a.cancel();
    assert_done_plain(&any, Error::Canceled);
    // The merged child is done: a long-lived second parent must not keep counting it.
    assert_eq!(
        b.live_children(),
        0,
        "a canceled child still counts under its other parent"
    );
}

#[test]
fn error_texts_match_go() {
    assert_eq!(Error::Canceled.to_string(), "context canceled");
    assert_eq!(
        Error::DeadlineExceeded.to_string(),
        "context deadline exceeded"
    );
    assert_eq!(Cause::new(Error::Canceled).to_string(), "context canceled");
}

#[test]
fn check_is_the_question_mark_form_of_err() {
    fn step(ctx: &Context, done: &AtomicUsize) -> Result<(), Error> {
        ctx.check()?;
        done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let (ctx, cancel) = Context::background().with_cancel();
    let done = AtomicUsize::new(0);
    assert_eq!(step(&ctx, &done), Ok(()));
    cancel.cancel();
    assert_eq!(step(&ctx, &done), Err(Error::Canceled));
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert_eq!(Context::background().check(), Ok(()));
}

#[test]
fn many_threads_cancel_at_once_and_the_first_cause_wins_everywhere() {
    const CANCELERS: usize = 8;
    for round in 0..scaled(20, 1) {
        let parents: Vec<_> = (0..CANCELERS)
            .map(|_| Context::background().with_cancel_cause())
            .collect();
        let contexts: Vec<Context> = parents.iter().map(|(ctx, _)| ctx.clone()).collect();
        let (target, _cancel_target) = Context::with_cancel_any(&contexts);
        // The callback gets the cause of the cancel that reached `target` first.
        let (winner, winner_rx) = mpsc::channel();
        let _registration = target.after_func_with(move |_, cause| winner.send(cause).unwrap());
        // A chain with one cancel per link, canceled by the same threads.
        let mut chain = vec![];
        let mut link = Context::background();
        for _ in 0..CANCELERS {
            let (next, cancel) = link.with_cancel_cause();
            chain.push((next.clone(), Some(cancel)));
            link = next;
        }
        let causes: Vec<Cause> = (0..CANCELERS)
            .map(|i| Cause::msg(format!("canceler-{i}")))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let barrier = Arc::new(Barrier::new(CANCELERS + 2));
        let mut threads = Vec::new();
        for (i, (_, cancel)) in parents.into_iter().enumerate() {
            let chain_cancel = chain[i].1.take().unwrap();
            let cause = causes[i].clone();
            let barrier = barrier.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("canceler-{i}"))
                    .spawn(move || {
                        barrier.wait();
                        cancel.cancel(cause.clone());
                        chain_cancel.cancel(cause);
                    })
                    .unwrap(),
            );
        }
        // Two more threads create children of the contended context and read it.
        let mut creators = Vec::new();
        for _ in 0..2 {
            let target = target.clone();
            let barrier = barrier.clone();
            let stop = stop.clone();
            creators.push(thread::spawn(move || {
                barrier.wait();
                let mut made = Vec::new();
                while !stop.load(Ordering::SeqCst) || made.is_empty() {
                    let (child, cancel) = target.with_cancel();
                    let _ = child.err();
                    made.push((child, cancel));
                    if made.len() > scaled(200, 3) {
                        break;
                    }
                }
                made
            }));
        }
        for thread in threads {
            thread.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let winner = recv_within(&winner_rx, "the callback ran");
        let index = causes
            .iter()
            .position(|cause| winner.same(cause))
            .unwrap_or_else(|| panic!("round {round}: the callback got {winner}"));
        assert_done_with(&target, Error::Canceled, &causes[index]);
        for creator in creators {
            for (child, _) in creator.join().unwrap() {
                assert_done_with(&child, Error::Canceled, &causes[index]);
            }
        }
        assert_eq!(target.live_children(), 0, "round {round}");
        // Along the chain, each link ended either by its own cancel or its parent's.
        let mut above: Option<Cause> = None;
        for (i, (ctx, _)) in chain.iter().enumerate() {
            let got = ctx.cause().expect("every link is done");
            let own = got.same(&causes[i]);
            let inherited = above.as_ref().is_some_and(|a| got.same(a));
            assert!(own || inherited, "link {i} has {got}");
            above = Some(got);
        }
    }
}
