//! White-box tests of waiting (`tree::wait`): who holds the inline waker slot,
//! which wakers a cancel wakes, and blocking waits through the slot and the
//! event. None depends on timing: a thread that must be asleep before a cancel
//! is waited for through the slot's state, and deadlines are only checked to
//! have passed. Tests that a regression would leave spinning or deadlocked run
//! under [`within_a_minute`], so they fail instead of hanging the run.

use crate::Context;
use crate::sync::{AtomicUsize, Ordering};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `test` on a thread of its own and fails if it has not finished within
/// a minute (a generous bound: each of these finishes in milliseconds). Under
/// Miri, whose clock is virtual and which reports deadlocks itself, it runs
/// inline.
fn within_a_minute(test: impl FnOnce() + Send + 'static) {
    if cfg!(miri) {
        return test();
    }
    let (finished, done) = std::sync::mpsc::channel();
    let runner = thread::spawn(move || {
        test();
        let _ = finished.send(());
    });
    match done.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => runner.join().unwrap(),
        // The test panicked: its own message is the failure.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(runner.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("still running after a minute: a lost wake-up or a deadlock")
        }
    }
}

/// A waker that counts its wake-ups.
#[derive(Default)]
pub(crate) struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub(crate) fn counter() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    let waker = Waker::from(count.clone());
    (count, waker)
}

use crate::wake_fn::on_wake;

pub(crate) fn woken(count: &Count) -> usize {
    count.0.load(Ordering::SeqCst)
}

pub(crate) fn poll<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut TaskContext::from_waker(waker))
}

/// Whether some waiter holds `ctx`'s slot (`ctx` must be cancelable).
fn slot_claimed(ctx: &Context) -> bool {
    ctx.carrier().unwrap().cancel_part().waiters.is_claimed()
}

/// Whether some waiter listened on `ctx`'s event (it registers its listener
/// right after flagging this, before it parks).
fn event_used(ctx: &Context) -> bool {
    ctx.carrier().unwrap().cancel_part().waiters.has_listened()
}

#[test]
fn the_slot_is_reused_after_its_waiter_drops_or_completes() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (a, waker_a) = counter();
    let (b, waker_b) = counter();
    let (c, waker_c) = counter();
    let mut first = ctx.done();
    assert!(poll(&mut first, &waker_a).is_pending());
    assert!(first.holds_slot());
    let mut second = ctx.done();
    assert!(poll(&mut second, &waker_b).is_pending());
    assert!(!second.holds_slot(), "the slot is taken: the event");
    drop(first);
    assert!(!slot_claimed(&ctx));
    // The slot's flags went; the event's bit, in the same word, stays.
    assert!(event_used(&ctx));
    let mut third = ctx.done();
    assert!(poll(&mut third, &waker_c).is_pending());
    assert!(third.holds_slot(), "the dropped waiter freed the slot");
    // A claim beside the event's bit keeps it, and the next waiter beyond
    // the slot joins the event's list.
    let mut fourth = ctx.done();
    assert!(poll(&mut fourth, &waker_b).is_pending());
    assert!(!fourth.holds_slot() && event_used(&ctx));
    cancel.cancel();
    assert_eq!(woken(&a), 0, "a dropped waiter is not woken");
    assert_eq!(woken(&b), 2);
    assert_eq!(woken(&c), 1);
    assert!(poll(&mut second, &waker_b).is_ready());
    assert!(poll(&mut third, &waker_c).is_ready());
    assert!(poll(&mut fourth, &waker_b).is_ready());
    assert!(
        !third.holds_slot() && !slot_claimed(&ctx),
        "completion frees it"
    );
}

#[test]
fn a_completed_waiter_frees_the_slot_of_a_live_parent() {
    let (parent, _cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    let (_, waker) = counter();
    // The child is its own carrier; the parent's slot is the one reused.
    let mut on_parent = parent.done();
    assert!(poll(&mut on_parent, &waker).is_pending());
    assert!(on_parent.holds_slot());
    let mut on_child = child.done();
    assert!(poll(&mut on_child, &waker).is_pending());
    assert!(on_child.holds_slot(), "one slot per carrier");
    cancel_child.cancel();
    assert!(poll(&mut on_child, &waker).is_ready());
    drop(on_parent);
    assert!(!slot_claimed(&parent) && !slot_claimed(&child));
    let mut again = parent.done();
    assert!(poll(&mut again, &waker).is_pending());
    assert!(again.holds_slot());
}

#[test]
fn two_and_many_waiters_are_all_woken() {
    for n in [1, 2, 3, 64] {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut waiters: Vec<_> = (0..n)
            .map(|_| {
                let (count, waker) = counter();
                let mut done = ctx.done();
                assert!(poll(&mut done, &waker).is_pending());
                (count, waker, done)
            })
            .collect();
        assert_eq!(waiters.iter().filter(|(.., d)| d.holds_slot()).count(), 1);
        cancel.cancel();
        for (count, waker, done) in &mut waiters {
            assert_eq!(woken(count), 1, "{n} waiters");
            assert!(poll(done, waker).is_ready());
        }
    }
}

#[test]
fn many_waiters_on_threads_are_all_woken() {
    within_a_minute(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let ctx = ctx.clone();
                thread::spawn(move || {
                    if i % 2 == 0 {
                        ctx.wait();
                    } else {
                        let (_, waker) = counter();
                        let mut done = ctx.done();
                        // Spin on polls: every poll after the first is a re-poll.
                        while poll(&mut done, &waker).is_pending() {
                            thread::yield_now();
                        }
                    }
                    assert!(ctx.is_done());
                })
            })
            .collect();
        // Some waiter holds the slot (others may follow on the event) before the cancel.
        while !slot_claimed(&ctx) {
            thread::yield_now();
        }
        cancel.cancel();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn a_done_repolled_with_other_wakers_wakes_the_last_one() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (a, waker_a) = counter();
    let (b, waker_b) = counter();
    let (c, waker_c) = counter();
    let mut done = ctx.done();
    assert!(poll(&mut done, &waker_a).is_pending());
    assert!(poll(&mut done, &waker_b).is_pending());
    assert!(
        poll(&mut done, &waker_b).is_pending(),
        "the same waker again"
    );
    // Moved to another task (thread), polled there with its waker.
    let moved_waker = waker_c.clone();
    let mut done = thread::spawn(move || {
        assert!(poll(&mut done, &moved_waker).is_pending());
        done
    })
    .join()
    .unwrap();
    assert!(done.holds_slot());
    cancel.cancel();
    assert_eq!((woken(&a), woken(&b), woken(&c)), (0, 0, 1));
    assert!(poll(&mut done, &waker_c).is_ready());
    assert!(poll(&mut done, &waker_c).is_ready(), "fused: ready again");
}

#[test]
fn the_same_for_a_waiter_on_the_event() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (_, waker) = counter();
    let mut first = ctx.done();
    assert!(poll(&mut first, &waker).is_pending());
    let (a, waker_a) = counter();
    let (b, waker_b) = counter();
    let mut second = ctx.done();
    assert!(poll(&mut second, &waker_a).is_pending());
    assert!(poll(&mut second, &waker_b).is_pending());
    assert!(!second.holds_slot());
    cancel.cancel();
    assert_eq!((woken(&a), woken(&b)), (0, 1));
    assert!(poll(&mut second, &waker_b).is_ready());
}

#[test]
fn a_blocking_wait_with_a_deadline_returns_at_the_deadline() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let deadline = Instant::now() + Duration::from_millis(20);
    assert!(!ctx.wait_until(deadline));
    assert!(Instant::now() >= deadline);
    assert!(!slot_claimed(&ctx), "a timed-out wait frees the slot");
    // Again with the slot taken: the wait sleeps on the event.
    let (_, waker) = counter();
    let mut holder = ctx.done();
    assert!(poll(&mut holder, &waker).is_pending());
    let deadline = Instant::now() + Duration::from_millis(20);
    assert!(!ctx.wait_until(deadline));
    assert!(Instant::now() >= deadline);
    assert!(!ctx.wait_timeout(Duration::ZERO));
}

/// A thread blocked in `wait_timeout` (on the slot, or on the event behind a
/// holder of the slot) ignores spurious unparks and returns on the cancel.
fn blocking_wait_returns_on_cancel(behind_a_holder: bool) {
    within_a_minute(move || {
        let (ctx, cancel) = Context::background().with_cancel();
        let (_, waker) = counter();
        let mut holder = ctx.done();
        if behind_a_holder {
            assert!(poll(&mut holder, &waker).is_pending());
        }
        let waiter = {
            let ctx = ctx.clone();
            thread::spawn(move || ctx.wait_timeout(Duration::from_secs(3600)))
        };
        // Asleep in the slot or on the event (or about to be: the slot is
        // claimed, and the event flag set, just before it parks).
        let asleep = if behind_a_holder {
            event_used
        } else {
            slot_claimed
        };
        while !asleep(&ctx) {
            thread::yield_now();
        }
        // Spurious unparks are harmless: the wait re-checks and parks again.
        for _ in 0..3 {
            waiter.thread().unpark();
            thread::yield_now();
        }
        assert!(!ctx.is_done());
        cancel.cancel();
        assert!(waiter.join().unwrap());
        if behind_a_holder {
            assert!(poll(&mut holder, &waker).is_ready());
        } else {
            assert!(!slot_claimed(&ctx));
        }
    });
}

#[test]
fn a_blocking_wait_with_a_deadline_returns_on_cancel() {
    blocking_wait_returns_on_cancel(false);
}

#[test]
fn a_blocking_wait_on_the_event_returns_on_cancel() {
    blocking_wait_returns_on_cancel(true);
}

/// A waker whose `clone` panics (executor code gone wrong): raw, since `Wake`
/// cannot fail to clone.
fn panicking_clone_waker() -> Waker {
    use std::task::{RawWaker, RawWakerVTable};
    fn clone(_: *const ()) -> RawWaker {
        panic!("this waker cannot be cloned")
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: every vtable function ignores the data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// A waker's `clone` that panics while the waiter holds the slot's cell (on
/// the first poll, and on a later poll with another waker) leaves the slot
/// usable: the next waiter takes it and is woken by the cancel.
#[test]
fn a_panicking_waker_clone_leaves_the_slot_usable() {
    let (ctx, cancel) = Context::background().with_cancel();
    let bad = panicking_clone_waker();
    let mut first = ctx.done();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll(&mut first, &bad);
    }));
    assert!(unwound.is_err(), "the clone panicked through the poll");
    drop(first);
    assert!(!slot_claimed(&ctx), "the claim was given back");

    let (a, waker_a) = counter();
    let mut second = ctx.done();
    assert!(poll(&mut second, &waker_a).is_pending());
    assert!(second.holds_slot(), "the slot is free for the next waiter");
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll(&mut second, &bad);
    }));
    assert!(unwound.is_err(), "the clone panicked through the re-poll");
    cancel.cancel();
    assert_eq!(woken(&a), 1, "the waker stored before the panic is woken");
    assert!(poll(&mut second, &waker_a).is_ready());
}

/// A waker whose `wake` panics (executor code gone wrong).
fn panicking_wake_waker() -> Waker {
    struct PanicOnWake;
    impl Wake for PanicOnWake {
        fn wake(self: Arc<Self>) {
            panic!("this waker cannot be woken")
        }
    }
    Waker::from(Arc::new(PanicOnWake))
}

/// A waker whose `wake` panics costs no other waiter its wake-up: not the
/// slot's, not the event's listeners after it, not a child's; the cancel
/// resumes the panic once everything is done, and the futures drop cleanly.
#[test]
fn a_panicking_wake_costs_no_other_waiter_its_wake_up() {
    for bad_position in 0..4 {
        let (ctx, cancel) = Context::background().with_cancel();
        let (child, _child_cancel) = ctx.with_cancel();
        let bad = panicking_wake_waker();
        let counters: Vec<_> = (0..4).map(|_| counter()).collect();
        let mut futures: Vec<_> = (0..4).map(|_| ctx.done()).collect();
        for (i, future) in futures.iter_mut().enumerate() {
            let waker = if i == bad_position {
                &bad
            } else {
                &counters[i].1
            };
            assert!(poll(future, waker).is_pending());
        }
        let (c, waker_c) = counter();
        let mut in_child = child.done();
        assert!(poll(&mut in_child, &waker_c).is_pending());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cancel.cancel()));
        assert!(
            unwound.is_err(),
            "the waker's panic is resumed by the cancel"
        );
        assert!(ctx.is_done() && child.is_done());
        for (i, (count, _)) in counters.iter().enumerate() {
            let expected = usize::from(i != bad_position);
            assert_eq!(
                woken(count),
                expected,
                "waiter {i}, bad one at {bad_position}"
            );
        }
        assert_eq!(woken(&c), 1, "the child's waiter");
        for (i, future) in futures.iter_mut().enumerate() {
            if i != bad_position {
                assert!(poll(future, &counters[i].1).is_ready());
            }
        }
        drop(futures);
        assert!(poll(&mut in_child, &waker_c).is_ready());
    }
}

/// A waker that drops a `Done` of the same context when woken (a task polled
/// inline by its waker, finishing): it runs after the event was notified, not
/// inside the event's lock, so the drop takes the lock without deadlocking.
#[test]
fn a_waker_may_drop_another_waiter_of_the_same_context() {
    within_a_minute(|| {
        struct DropOnWake {
            held: std::sync::Mutex<Option<crate::Done>>,
            woken: AtomicUsize,
        }
        impl Wake for DropOnWake {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                drop(self.held.lock().unwrap().take());
                self.woken.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (ctx, cancel) = Context::background().with_cancel();
        let (a, waker_a) = counter();
        let mut in_slot = ctx.done();
        assert!(poll(&mut in_slot, &waker_a).is_pending());
        let dropper = Arc::new(DropOnWake {
            held: std::sync::Mutex::new(None),
            woken: AtomicUsize::new(0),
        });
        let dropper_waker = Waker::from(dropper.clone());
        let mut first = ctx.done();
        assert!(poll(&mut first, &dropper_waker).is_pending());
        let (b, waker_b) = counter();
        let mut held = ctx.done();
        assert!(poll(&mut held, &waker_b).is_pending());
        *dropper.held.lock().unwrap() = Some(held);
        cancel.cancel();
        assert_eq!(dropper.woken.load(Ordering::SeqCst), 1);
        assert!(
            dropper.held.lock().unwrap().is_none(),
            "dropped by the wake"
        );
        assert_eq!(woken(&a), 1);
        assert!(woken(&b) <= 1, "woken before or dropped first");
        assert!(poll(&mut first, &dropper_waker).is_ready());
        assert!(poll(&mut in_slot, &waker_a).is_ready());
    });
}

/// A cancel that lands while a waiter's new waker is being cloned skips the
/// slot (the waiter holds it); if that clone then panics, the waker stored
/// before is still woken: the skipped notification is not lost with the
/// unwinding poll.
#[test]
fn a_cancel_skipped_by_a_panicking_clone_still_wakes_the_stored_waker() {
    use crate::CancelFunc;
    use std::sync::Mutex;
    use std::task::{RawWaker, RawWakerVTable};
    static CANCEL: Mutex<Option<CancelFunc>> = Mutex::new(None);
    fn clone(_: *const ()) -> RawWaker {
        // The cancel runs while the waiter holds the slot's cell.
        if let Some(cancel) = CANCEL.lock().unwrap().take() {
            cancel.cancel();
        }
        panic!("this waker cannot be cloned")
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: every vtable function ignores the data pointer.
    let canceling = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };

    let (ctx, cancel) = Context::background().with_cancel();
    let (a, waker_a) = counter();
    let mut done = ctx.done();
    assert!(poll(&mut done, &waker_a).is_pending());
    assert!(done.holds_slot());
    *CANCEL.lock().unwrap() = Some(cancel);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll(&mut done, &canceling);
    }));
    assert!(unwound.is_err(), "the clone panicked through the poll");
    assert!(ctx.is_done());
    assert_eq!(
        woken(&a),
        1,
        "the stored waker is woken for the skipped cancel"
    );
    assert!(poll(&mut done, &waker_a).is_ready());
}

/// A waker that cancels the context it waits on, or an ancestor of it (an
/// executor that polls the woken task inline, and the task cancels its
/// scope). The walk wakes it only once the subtree is complete, so the cancel
/// finds every node done and complete and returns at once (it used to run
/// inside the walk, and had to be kept from waiting for it).
#[test]
fn a_waker_that_cancels_the_context_being_canceled_does_not_wait_for_itself() {
    within_a_minute(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (middle, cancel_middle) = root.with_cancel();
        let (leaf, _cancel_leaf) = middle.with_cancel();
        // A sibling below the root that the walk may reach after the waker ran.
        let (sibling, _cancel_sibling) = root.with_cancel();
        let cancelers =
            std::sync::Mutex::new(vec![cancel_middle.canceler(), cancel_root.canceler()]);
        let saw_done = Arc::new(AtomicUsize::new(0));
        let seen = saw_done.clone();
        let waker = on_wake(move || {
            for canceler in std::mem::take(&mut *cancelers.lock().unwrap()) {
                // Done already (the walk closed it): this call did not end it.
                assert!(!canceler.cancel(), "the walk closed it before waking");
                if canceler.is_canceled() {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let mut done = leaf.done();
        assert!(poll(&mut done, &waker).is_pending());
        cancel_root.cancel();
        assert_eq!(saw_done.load(Ordering::SeqCst), 2);
        for ctx in [&root, &middle, &leaf, &sibling] {
            assert!(ctx.is_done());
        }
        drop(cancel_middle);
    });
}

/// The same for an expiry: the waker runs on the timer's thread, once the
/// expiry's walk is complete, and cancels the deadline context whose expiry
/// woke it. It returns (a timer thread that waited for itself would hold back
/// every later deadline of the backend), and the next deadline of the same
/// backend still fires.
#[test]
fn a_waker_that_cancels_its_expired_context_does_not_stop_the_timer() {
    within_a_minute(|| {
        let timer = crate::StdTimer::new();
        let root = Context::background().with_timer(timer);
        let (deadline, cancel) = root.with_timeout(Duration::from_millis(1));
        let (leaf, _cancel_leaf) = deadline.with_cancel();
        let (ran, woke) = std::sync::mpsc::channel();
        let canceler = std::sync::Mutex::new(Some(cancel.canceler()));
        let ran = std::sync::Mutex::new(Some(ran));
        let waker = on_wake(move || {
            if let Some(canceler) = canceler.lock().unwrap().take() {
                let ended = canceler.cancel();
                let done = canceler.is_canceled();
                if let Some(ran) = ran.lock().unwrap().take() {
                    let _ = ran.send(!ended && done);
                }
            }
        });
        let mut done = leaf.done();
        if poll(&mut done, &waker).is_pending() {
            assert!(
                woke.recv().unwrap(),
                "the waker's cancel ended the context, or returned before it was done"
            );
        }
        // The backend's thread is free for the next deadline.
        let (next, _cancel_next) = root.with_timeout(Duration::from_millis(1));
        next.wait();
        assert_eq!(next.err(), Some(crate::Error::DeadlineExceeded));
        drop(cancel);
    });
}

/// A waker woken by a walk starts a walk of its own that reaches a node the
/// outer walk closed: a merge node `m` under both `a` (walked) and `b`
/// (canceled by the waker). Had the waker run inside the outer walk, the
/// inner one would have waited for `m`, and so for the walk that called it;
/// it runs after, and everything ends done and complete.
#[test]
fn a_walk_started_by_a_waker_does_not_wait_for_the_walk_that_ran_it() {
    within_a_minute(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (a, _cancel_a) = root.with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        // `m` takes `a`'s inline slot, so the walk reaches it before `leaf`;
        // its own child makes it a node the walk visits later, not a leaf.
        let (m, _cancel_m) = Context::with_cancel_any(&[a.clone(), b.clone()]);
        let (below_m, _cancel_below_m) = m.with_cancel();
        let (leaf, _cancel_leaf) = a.with_cancel();
        let canceler = Arc::new(std::sync::Mutex::new(Some(cancel_b.canceler())));
        let to_run = canceler.clone();
        let waker = on_wake(move || {
            if let Some(canceler) = to_run.lock().unwrap().take() {
                assert!(canceler.cancel(), "the waker's cancel ended `b`");
                assert!(canceler.is_canceled());
            }
        });
        let mut done = leaf.done();
        assert!(poll(&mut done, &waker).is_pending());
        cancel_root.cancel();
        assert!(canceler.lock().unwrap().is_none(), "the waker ran");
        for ctx in [&root, &a, &b, &m, &below_m, &leaf] {
            assert!(ctx.is_done());
        }
        // The runner finishes `b`'s walk once `m` is complete: a cancel of `b`
        // now waits for that, and returns.
        drop(cancel_b);
        assert!(b.is_done());
    });
}

/// A `Borrow<Context>` that answers `first` on its first call and `then` on
/// every later one: the caller's code, changing its mind.
struct Flip {
    first: Context,
    then: Context,
    calls: std::cell::Cell<usize>,
}

impl Flip {
    fn new(first: &Context, then: &Context) -> Flip {
        Flip {
            first: first.clone(),
            then: then.clone(),
            calls: std::cell::Cell::new(0),
        }
    }
}

impl std::borrow::Borrow<Context> for Flip {
    fn borrow(&self) -> &Context {
        let calls = self.calls.get();
        self.calls.set(calls + 1);
        if calls == 0 { &self.first } else { &self.then }
    }
}

/// A `Borrow<Context>` is the caller's code: one that hands out another
/// context on a later call must not make a `Done` release or update the other
/// carrier's slot, which its real owner holds. The flipping future leaves its
/// first registration and waits on the second context; the honest waiter on
/// that context keeps its slot and is woken by its cancel.
#[test]
fn a_borrow_that_changes_its_context_touches_no_registration_it_did_not_make() {
    let (a, _cancel_a) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_cancel();
    let (honest, honest_waker) = counter();
    let mut on_b = b.done();
    assert!(poll(&mut on_b, &honest_waker).is_pending());
    assert!(on_b.holds_slot());

    let (flipper, flipper_waker) = counter();
    let flip = Flip::new(&a, &b);
    let mut racing = crate::FutureExt::with_context(std::future::pending::<()>(), flip);
    for _ in 0..3 {
        assert!(poll(&mut racing, &flipper_waker).is_pending());
    }
    assert!(on_b.holds_slot(), "the honest waiter keeps b's slot");
    drop(racing);
    assert!(
        on_b.holds_slot(),
        "and keeps it when the flipper is dropped"
    );
    cancel_b.cancel();
    assert_eq!(woken(&honest), 1);
    assert!(poll(&mut on_b, &honest_waker).is_ready());
    // The flipper's registration on `a` was given back: `a`'s slot is free.
    let mut on_a = a.done();
    let (_, waker) = counter();
    assert!(poll(&mut on_a, &waker).is_pending());
    assert!(on_a.holds_slot());
    let _ = flipper;
}

/// A `Done` is three words whatever it borrows from: its registration is the
/// carrier and, for a second waiter on one context, the index of its entry in
/// the carrier's list. The future it sits in is what an executor allocates per
/// task, and a bigger task cell costs every task.
///
/// Under Miri, CI also randomizes layouts (`-Zrandomize-layout`), which may
/// give the registration's enum a word of padding: there, one word more is
/// allowed (still half the eight words a `Done` was).
#[test]
fn a_done_is_three_words() {
    let word = std::mem::size_of::<usize>();
    let allowed = if cfg!(miri) { 4 * word } else { 3 * word };
    for size in [
        std::mem::size_of::<crate::Done>(),
        std::mem::size_of::<crate::Done<&Context>>(),
    ] {
        assert!(size <= allowed, "{size} bytes");
    }
    if !cfg!(miri) {
        assert_eq!(std::mem::size_of::<crate::Done>(), 3 * word);
    }
}

/// A `Done` that returned `Ready` is terminated for good: a `Borrow` that
/// hands out a live context afterwards makes it neither pending nor registered
/// (it would take the slot from that context's real waiter).
#[test]
fn a_finished_done_stays_ready_whatever_its_borrow_answers() {
    use futures_core::FusedFuture;
    let (canceled, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (live, _keep) = Context::background().with_cancel();
    let mut done = crate::Done::new(Flip::new(&canceled, &live));
    let (_, waker) = counter();
    assert!(!done.is_terminated());
    assert!(poll(&mut done, &waker).is_ready());
    assert!(done.is_terminated());
    for _ in 0..3 {
        assert!(poll(&mut done, &waker).is_ready());
        assert!(!done.holds_slot());
    }
    assert!(done.is_terminated());
    // The live context's slot is still free for its own waiter.
    let mut own = live.done();
    assert!(poll(&mut own, &waker).is_pending());
    assert!(own.holds_slot());
}

/// A second waiter on one context takes an entry in the event's list; it is woken by
/// the cancel, and a dropped one leaves nothing behind for the next.
#[test]
fn waiters_beyond_the_slot_are_woken_and_released() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (first, first_waker) = counter();
    let (second, second_waker) = counter();
    let mut slot = ctx.done();
    let mut event = ctx.done();
    let mut dropped = ctx.done();
    assert!(poll(&mut slot, &first_waker).is_pending());
    assert!(poll(&mut event, &second_waker).is_pending());
    assert!(poll(&mut dropped, &second_waker).is_pending());
    assert!(slot.holds_slot() && !event.holds_slot() && !dropped.holds_slot());
    drop(dropped);
    cancel.cancel();
    assert_eq!(woken(&first), 1);
    assert_eq!(woken(&second), 1);
    assert!(poll(&mut slot, &first_waker).is_ready());
    assert!(poll(&mut event, &second_waker).is_ready());
}
