//! A cancel that comes after a deadline passed, while the timer is late.
//!
//! With exact deadlines a context is done from its deadline on, fired or not.
//! A cancel that comes later must find it so: the context ends with
//! `DeadlineExceeded` and the deadline's cause whether or not anybody read it
//! in between (a log line must not change the outcome), and so do its
//! descendants and a merge node whose deadline it is.

mod support;

use ctx_core::{Cause, Context, Error};
use std::time::Duration;
use support::ManualTimer;

/// A context's error and cause, as text.
fn reason(ctx: &Context) -> (Option<Error>, Option<String>) {
    (ctx.err(), ctx.cause().map(|cause| cause.to_string()))
}

fn exceeded(cause: &str) -> (Option<Error>, Option<String>) {
    (Some(Error::DeadlineExceeded), Some(cause.to_owned()))
}

#[test]
fn a_cancel_after_the_deadline_passed_ends_the_same_whether_read_first_or_not() {
    let timer = ManualTimer::new();
    let slow = Cause::msg("slow");
    let (read_first, cancel_read_first) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), slow.clone());
    let (unread, cancel_unread) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), slow);
    timer.advance_silently(Duration::from_secs(2));

    assert_eq!(reason(&read_first), exceeded("slow"));
    cancel_read_first.cancel();
    cancel_unread.cancel();
    assert_eq!(reason(&read_first), exceeded("slow"));
    assert_eq!(reason(&unread), exceeded("slow"));
}

/// A child whose own deadline has passed when it is made, below a parent whose
/// (later) deadline has passed too, unread: the parent was done first, so the
/// child is born with the parent's reason, as when the parent was read before.
#[test]
fn a_child_born_past_its_deadline_below_a_passed_parent_takes_the_parents_reason() {
    for read_parent_first in [true, false] {
        let timer = ManualTimer::new();
        let (parent, _cancel_parent) = timer
            .root()
            .with_timeout_cause(Duration::from_secs(10), Cause::msg("parent"));
        timer.advance_silently(Duration::from_secs(20));
        if read_parent_first {
            assert!(parent.is_done());
        }
        let earlier = parent.deadline().unwrap() - Duration::from_secs(5);
        let (child, _cancel_child) = parent.with_deadline_cause(earlier, Cause::msg("child"));
        assert_eq!(
            reason(&child),
            exceeded("parent"),
            "read first: {read_parent_first}"
        );
        assert_eq!(reason(&parent), exceeded("parent"));
    }
    // A parent whose deadline has not passed leaves the child its own.
    let timer = ManualTimer::new();
    let (parent, _cancel_parent) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(10), Cause::msg("parent"));
    timer.advance_silently(Duration::from_secs(6));
    let earlier = parent.deadline().unwrap() - Duration::from_secs(5);
    let (child, _cancel_child) = parent.with_deadline_cause(earlier, Cause::msg("child"));
    assert_eq!(reason(&child), exceeded("child"));
    assert_eq!(parent.err(), None);
}

#[test]
fn a_childs_cancel_after_its_parents_deadline_passed_changes_nothing() {
    let timer = ManualTimer::new();
    let (parent, _cancel_parent) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), Cause::msg("slow"));
    let (child, cancel_child) = parent.with_cancel_cause();
    let (grandchild, _cancel_grandchild) = child.with_cancel();
    timer.advance_silently(Duration::from_secs(2));

    cancel_child.cancel(Cause::msg("too late"));
    assert_eq!(reason(&parent), exceeded("slow"));
    assert_eq!(reason(&child), exceeded("slow"));
    assert_eq!(reason(&grandchild), exceeded("slow"));
}

#[test]
fn a_canceler_that_comes_after_the_deadline_reports_that_it_ended_nothing() {
    let timer = ManualTimer::new();
    let (ctx, cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let canceler = cancel.into_canceler();
    timer.advance_silently(Duration::from_secs(1));
    assert!(!canceler.cancel_with_cause(Cause::msg("too late")));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn a_cancel_before_the_deadline_keeps_its_own_reason() {
    let timer = ManualTimer::new();
    let (timed, _cancel_timed) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), Cause::msg("slow"));
    let (ctx, cancel) = timed.with_cancel_cause();
    let (child, _cancel_child) = ctx.with_cancel();
    timer.advance_silently(Duration::from_millis(999));
    cancel.cancel(Cause::msg("done early"));
    let early = (Some(Error::Canceled), Some("done early".to_owned()));
    assert_eq!(reason(&ctx), early);
    assert_eq!(reason(&child), early);
    timer.advance(Duration::from_secs(1));
    assert_eq!(reason(&child), early);
}

/// A backend on the system clock whose deadlines never fire (the latest of
/// late timers); it says its clock is the system's, so a walk reads that.
#[derive(Debug)]
struct SystemClockNeverFires;

impl ctx_core::Timer for SystemClockNeverFires {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
    fn arm(&self, _: std::time::Instant, _: ctx_core::Expiry) -> Option<ctx_core::TimerKey> {
        None
    }
    fn disarm(&self, _: ctx_core::TimerKey) {}
    fn is_system_clock(&self) -> bool {
        true
    }
}

/// A root on [`SystemClockNeverFires`].
fn never_fires() -> Context {
    Context::background().with_timer(std::sync::Arc::new(SystemClockNeverFires))
}

/// Waits (by the system clock) until `ctx`'s deadline has passed. An ordering,
/// not a timing assertion: nothing here depends on how long it takes.
fn let_pass(ctx: &Context) {
    let deadline = ctx.deadline().expect("a deadline");
    while std::time::Instant::now() <= deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A parent's cancel walks into a child whose own deadline passed first: the
/// child and its subtree keep the deadline's reason, a sibling without a
/// deadline gets the parent's. (The walk reads the system clock for backends
/// on it; a backend's own `now` is never run in the middle of a walk.)
#[test]
fn a_parents_cancel_after_a_childs_deadline_passed_leaves_the_child_its_deadline() {
    let (parent, cancel_parent) = never_fires().with_cancel_cause();
    let (timed, _cancel_timed) =
        parent.with_timeout_cause(Duration::from_millis(1), Cause::msg("child slow"));
    let (below_timed, _cancel_below) = timed.with_value(1u8).with_cancel();
    let (later, _cancel_later) =
        parent.with_timeout_cause(Duration::from_secs(3600), Cause::msg("not yet"));
    let (plain, _cancel_plain) = parent.with_cancel();
    let_pass(&timed);

    cancel_parent.cancel(Cause::msg("parent stop"));
    let stopped = (Some(Error::Canceled), Some("parent stop".to_owned()));
    assert_eq!(reason(&parent), stopped);
    assert_eq!(reason(&timed), exceeded("child slow"));
    assert_eq!(reason(&below_timed), exceeded("child slow"));
    assert_eq!(reason(&later), stopped);
    assert_eq!(reason(&plain), stopped);
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn a_merges_own_cancel_after_a_parents_deadline_passed_changes_nothing() {
    let timer = ManualTimer::new();
    let (a, _cancel_a) = timer.root().with_cancel();
    let (b, _cancel_b) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), Cause::msg("b slow"));
    let (merged, cancel_merged) = Context::with_cancel_any(&[a.clone(), b.clone()]);
    timer.advance_silently(Duration::from_secs(2));

    cancel_merged.cancel();
    assert_eq!(reason(&b), exceeded("b slow"));
    assert_eq!(reason(&merged), exceeded("b slow"));
    assert_eq!(a.err(), None);
    assert_eq!(a.live_children(), 0, "the merge left its live parent");
}

/// Parent `a`'s deadline passed before parent `b`'s cancel: `b`'s walk finds
/// the merge done by `a` ("canceled as soon as any of its parents is").
#[test]
fn a_merge_reached_by_one_parents_cancel_keeps_the_deadline_of_another() {
    let root = never_fires();
    let (a, _cancel_a) = root.with_timeout_cause(Duration::from_millis(1), Cause::msg("a slow"));
    let (b, cancel_b) = root.with_cancel_cause();
    let (merged, _cancel_merged) = Context::with_cancel_any(&[a.clone(), b.clone()]);
    let (below, _cancel_below) = merged.with_cancel();
    let_pass(&a);

    cancel_b.cancel(Cause::msg("b stop"));
    assert_eq!(
        reason(&b),
        (Some(Error::Canceled), Some("b stop".to_owned()))
    );
    assert_eq!(reason(&a), exceeded("a slow"));
    assert_eq!(reason(&merged), exceeded("a slow"));
    assert_eq!(reason(&below), exceeded("a slow"));
    assert_eq!(reason(&merged), exceeded("a slow"));
    assert_eq!(a.live_children(), 0);
    assert_eq!(b.live_children(), 0);
}

/// The late cancel wakes the context's own waiters before it returns, as any
/// cancel does (the exact read it makes first leaves them to its walk).
#[test]
fn a_late_cancel_wakes_its_contexts_waiters_before_it_returns() {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context as TaskContext, Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let timer = ManualTimer::new();
    let (ctx, cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let (child, _cancel_child) = ctx.with_cancel();
    let counts: Vec<Arc<Count>> = (0..3)
        .map(|_| Arc::new(Count(AtomicUsize::new(0))))
        .collect();
    // Two waiters on the context (its slot and its event), one on the child.
    let mut waits = [ctx.done(), ctx.done(), child.done()];
    for (wait, count) in waits.iter_mut().zip(&counts) {
        let waker = Waker::from(count.clone());
        let poll = std::pin::Pin::new(wait).poll(&mut TaskContext::from_waker(&waker));
        assert!(poll.is_pending());
    }
    timer.advance_silently(Duration::from_secs(2));
    cancel.cancel();
    let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
    assert_eq!(woken, [1, 1, 1]);
    assert_eq!(
        reason(&child),
        (
            Some(Error::DeadlineExceeded),
            Some("context deadline exceeded".to_owned())
        )
    );
}

/// A backend whose `now` panics once, when told to.
#[derive(Debug, Default)]
struct NowPanicsOnce(std::sync::atomic::AtomicBool);

impl ctx_core::Timer for NowPanicsOnce {
    fn now(&self) -> std::time::Instant {
        if self.0.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("Timer::now panics");
        }
        std::time::Instant::now()
    }
    fn arm(&self, _: std::time::Instant, _: ctx_core::Expiry) -> Option<ctx_core::TimerKey> {
        None
    }
    fn disarm(&self, _: ctx_core::TimerKey) {}
}

/// The cancel reads its deadline's clock before its close; a backend whose
/// `now` panics there costs nothing: the context is canceled, its cancel
/// function's reference released (so the context is freed), and the panic
/// resumed afterwards.
#[test]
fn a_panicking_clock_read_before_the_close_stops_no_cancel_and_leaks_nothing() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let timer = Arc::new(NowPanicsOnce::default());
    let freed = Arc::new(AtomicBool::new(false));
    let base = Context::background()
        .with_value(DropFlag(freed.clone()))
        .with_timer(timer.clone());
    let (ctx, cancel) = base.with_timeout(Duration::from_secs(3600));
    let (canceler_ctx, canceler) = base.with_timeout(Duration::from_secs(3600));
    let canceler = canceler.into_canceler();
    drop(base);

    timer.0.store(true, Ordering::SeqCst);
    let unwound = catch_unwind(AssertUnwindSafe(|| drop(cancel)));
    assert!(unwound.is_err(), "the clock's panic is resumed");
    assert_eq!(ctx.err(), Some(Error::Canceled));

    timer.0.store(true, Ordering::SeqCst);
    let unwound = catch_unwind(AssertUnwindSafe(|| canceler.cancel()));
    assert!(unwound.is_err(), "the clock's panic is resumed");
    assert_eq!(canceler_ctx.err(), Some(Error::Canceled));

    drop((ctx, canceler_ctx, canceler));
    assert!(freed.load(Ordering::SeqCst), "a context leaked");
}

/// A walk reads no backend's clock: a parent's cancel walks into a child with
/// a deadline on a backend whose `now` would panic, and closes it with the
/// parent's reason; the parent completes (a second cancel returns at once).
#[test]
fn a_walk_runs_no_backends_clock() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let timer = Arc::new(NowPanicsOnce::default());
    let root = Context::background().with_timer(timer.clone());
    let (parent, cancel_parent) = root.with_cancel();
    let again = cancel_parent.canceler();
    let (child, _cancel_child) = parent.with_timeout(Duration::from_secs(3600));
    timer.0.store(true, Ordering::SeqCst);
    cancel_parent.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
    assert!(!again.cancel());
    assert!(
        timer.0.load(Ordering::SeqCst),
        "the walk read the backend's clock"
    );
}

/// The walk's clock reads happen before its close, where no canceler that
/// lost the race can be waiting: a loser that holds the lock the backend's
/// `now` takes does not deadlock with the walk it waits for.
#[test]
fn a_losing_cancel_holding_the_lock_of_the_backends_clock_does_not_deadlock() {
    use std::sync::{Arc, Mutex};

    #[derive(Debug)]
    struct LockedNow(Arc<Mutex<()>>);
    impl ctx_core::Timer for LockedNow {
        fn now(&self) -> std::time::Instant {
            let _held = self.0.lock().unwrap();
            std::time::Instant::now()
        }
        fn arm(&self, _: std::time::Instant, _: ctx_core::Expiry) -> Option<ctx_core::TimerKey> {
            None
        }
        fn disarm(&self, _: ctx_core::TimerKey) {}
    }
    support::within_watchdog("a losing cancel under the clock's lock", || {
        let lock = Arc::new(Mutex::new(()));
        let root = Context::background().with_timer(Arc::new(LockedNow(lock.clone())));
        let (parent, cancel_parent) = root.with_cancel();
        let (_timed, _cancel_timed) = parent.with_timeout(Duration::from_secs(3600));
        let second = cancel_parent.canceler();
        let held = lock.lock().unwrap();
        let owner = std::thread::spawn(move || cancel_parent.cancel());
        while !parent.is_done() {
            std::thread::yield_now();
        }
        // Loses the race, and waits for the walk, under the lock.
        assert!(!second.cancel());
        drop(held);
        owner.join().unwrap();
        assert_eq!(parent.err(), Some(Error::Canceled));
    });
}
