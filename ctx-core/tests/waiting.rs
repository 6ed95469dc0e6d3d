//! Waiting for a context: the `Done` future (driven by a tiny executor written
//! here, so no runtime is involved), the blocking `wait` family, many waiters on
//! one cancel, and exact deadlines with a timer that never fires.

mod support;

use ctx_core::{Cause, Context, Error};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};
use support::{Calls, ClockOnlyTimer, ManualTimer, scaled, within_watchdog};

/// Wakes a parked thread.
struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, parking between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unparker(thread::current())));
    let mut task = TaskContext::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut task) {
            return output;
        }
        thread::park();
    }
}

/// Counts how often it was woken.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `future` once with `waker`.
fn poll_with<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut TaskContext::from_waker(waker))
}

#[test]
fn done_completes_after_a_cancel_from_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cancel_child) = ctx.with_value(1u8).with_cancel();
    let canceler = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1));
        cancel.cancel();
    });
    block_on(child.done());
    assert_eq!(child.err(), Some(Error::Canceled));
    canceler.join().unwrap();
}

#[test]
fn done_of_a_context_that_can_never_end_stays_pending() {
    let (parent, cancel) = Context::background().with_cancel();
    let detached = parent.without_cancel();
    cancel.cancel();
    for ctx in [Context::background(), Context::todo(), detached] {
        let mut done = ctx.done();
        assert!(poll_with(&mut done, Waker::noop()).is_pending(), "{ctx}");
        assert!(poll_with(&mut done, Waker::noop()).is_pending(), "{ctx}");
    }
}

#[test]
fn done_of_a_done_context_is_ready_at_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut done = ctx.done();
    assert!(poll_with(&mut done, Waker::noop()).is_ready());
    assert!(done.context().same(&ctx));
}

#[test]
fn done_wakes_its_latest_waker_and_a_dropped_done_loses_nothing() {
    let (ctx, cancel) = Context::background().with_cancel();
    let first = Arc::new(CountingWaker::default());
    let second = Arc::new(CountingWaker::default());
    let mut done = ctx.done();
    assert!(poll_with(&mut done, &Waker::from(first.clone())).is_pending());
    assert!(poll_with(&mut done, &Waker::from(second.clone())).is_pending());
    // A future that registered and was dropped before completion.
    let mut abandoned = ctx.done();
    assert!(poll_with(&mut abandoned, Waker::noop()).is_pending());
    drop(abandoned);
    cancel.cancel();
    assert!(
        second.0.load(Ordering::SeqCst) >= 1,
        "the latest waker was woken"
    );
    assert!(poll_with(&mut done, Waker::noop()).is_ready());
    let mut fresh = ctx.done();
    assert!(poll_with(&mut fresh, Waker::noop()).is_ready());
}

#[test]
fn wait_returns_after_a_cancel_from_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let waiter = {
        let ctx = ctx.clone();
        thread::spawn(move || {
            ctx.wait();
            ctx.cause().unwrap().to_string()
        })
    };
    thread::sleep(Duration::from_millis(1));
    cancel.cancel(Cause::msg("wake up"));
    assert_eq!(waiter.join().unwrap(), "wake up");
}

#[test]
fn wait_timeout_is_false_while_live_and_true_once_done() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert!(!ctx.wait_timeout(Duration::from_millis(1)));
    assert!(!ctx.wait_timeout(Duration::ZERO));
    assert!(!ctx.wait_until(Instant::now()));
    assert!(!Context::background().wait_timeout(Duration::from_millis(1)));
    cancel.cancel();
    assert!(ctx.wait_timeout(Duration::from_millis(1)));
    assert!(ctx.wait_timeout(Duration::ZERO));
    assert!(ctx.wait_until(Instant::now()));
    ctx.wait();
}

#[test]
fn wait_timeout_wakes_early_when_canceled_meanwhile() {
    let (ctx, cancel) = Context::background().with_cancel();
    let waiter = {
        let ctx = ctx.clone();
        // A timeout far longer than the test: only the cancel can end this wait.
        thread::spawn(move || ctx.wait_timeout(Duration::from_secs(3600)))
    };
    thread::sleep(Duration::from_millis(1));
    cancel.cancel();
    assert!(waiter.join().unwrap());
}

#[test]
fn many_blocked_waiters_all_wake_on_one_cancel() {
    let blocking = scaled(8, 2);
    let futures = scaled(4, 1);
    let (root, cancel) = Context::background().with_cancel();
    let (inner, _cancel_inner) = root.with_value(1u8).with_cancel();
    let barrier = Arc::new(Barrier::new(blocking + futures + 1));
    let mut waiters = Vec::new();
    for i in 0..blocking {
        let ctx = if i.is_multiple_of(2) {
            root.clone()
        } else {
            inner.clone()
        };
        let barrier = barrier.clone();
        waiters.push(thread::spawn(move || {
            barrier.wait();
            ctx.wait();
            ctx.err()
        }));
    }
    for i in 0..futures {
        let ctx = if i.is_multiple_of(2) {
            root.clone()
        } else {
            inner.clone()
        };
        let barrier = barrier.clone();
        waiters.push(thread::spawn(move || {
            barrier.wait();
            block_on(ctx.done());
            ctx.err()
        }));
    }
    barrier.wait();
    thread::sleep(Duration::from_millis(2));
    cancel.cancel();
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), Some(Error::Canceled));
    }
}

#[test]
fn a_passed_deadline_is_seen_even_if_the_timer_never_fires() {
    let timer = ManualTimer::new();
    let slow = Cause::msg("deadline by the manual clock");
    let (ctx, _cancel) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(10), slow.clone());
    let (child, _cancel_child) = ctx.with_cancel();
    let grandchild = child.with_value(1u8);
    let calls = Calls::new();
    let registration = child.after_func(calls.callback());
    assert_eq!(ctx.remaining(), Some(Duration::from_secs(10)));
    assert_eq!(ctx.live_children(), 1);

    timer.advance_silently(Duration::from_secs(9));
    assert_eq!(grandchild.err(), None);
    assert_eq!(ctx.remaining(), Some(Duration::from_secs(1)));

    // The clock passes the deadline; the timer never fires.
    timer.advance_silently(Duration::from_secs(1));
    assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    // The first reader, deep in the subtree, notices — and only reads: no walk of
    // the subtree, no callback on the reader's thread nor set off on the runner.
    let jobs = support::runner_jobs();
    assert_eq!(grandchild.err(), Some(Error::DeadlineExceeded));
    assert!(grandchild.cause().unwrap().same(&slow));
    assert_eq!(
        support::runner_jobs(),
        jobs,
        "a read handed work to the runner"
    );
    assert_eq!(calls.get(), 0, "a read ran a callback");
    assert!(ctx.is_done());
    // What a read reported sticks, whatever comes later.
    _cancel_child.cancel();
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert!(child.cause().unwrap().same(&slow));
    // Waiting on it returns at once.
    ctx.wait();
    assert!(poll_with(&mut ctx.done(), Waker::noop()).is_ready());
    // The child's cancel function took over the walk below the child: it set
    // the callback off (on the runner).
    assert!(
        !registration.stop(),
        "the child's cancel claimed the callback"
    );
    calls.wait_for(1);
    // The late timer takes over the rest.
    timer.advance(Duration::ZERO);
    assert_eq!(ctx.live_children(), 0);
    assert_eq!(timer.armed(), 0, "the late timer was disarmed");
}

#[test]
fn is_done_and_done_notice_a_passed_deadline_without_the_timer() {
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let mut done = ctx.done();
    assert!(poll_with(&mut done, Waker::noop()).is_pending());
    timer.advance_silently(Duration::from_secs(1));
    assert!(poll_with(&mut done, Waker::noop()).is_ready());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn a_registration_after_the_deadline_passed_sees_it() {
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    timer.advance_silently(Duration::from_secs(2));
    // Deriving and registering both check the deadline first: the callback is
    // claimed at once, and runs on the runner.
    let calls = Calls::new();
    let registration = ctx.after_func(calls.callback());
    assert!(!registration.stop(), "the registration missed the deadline");
    calls.wait_for(1);
    let (child, _c) = ctx.with_cancel();
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn wait_returns_at_an_exact_deadline_even_without_a_timer() {
    let root = Context::background().with_timer(Arc::new(ClockOnlyTimer));
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(5));
    ctx.wait();
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));

    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(5));
    assert!(ctx.wait_timeout(Duration::from_secs(3600)));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

/// Sends on drop, so that a helper thread blocked on the channel is released even
/// when an assertion fails first.
struct ReleaseOnDrop(Option<std::sync::mpsc::Sender<()>>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[test]
fn an_expired_deadline_is_seen_below_a_timer_cancel_still_in_progress() {
    // The timer fires the deadline on one thread; its cancel is held up in a
    // callback registered on the deadline node before the child, so the deadline
    // node is done while the child has not been reached yet. A reader of the child
    // on another thread, whose clock says the deadline passed, must still see
    // `DeadlineExceeded`: deadlines are exact.
    let timer = ManualTimer::new();
    let (deadline_ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let _hold = deadline_ctx.after_func(move || {
        started_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    let (child, _cancel_child) = deadline_ctx.with_cancel();
    let release = ReleaseOnDrop(Some(release_tx));
    let firing = {
        let timer = timer.clone();
        thread::spawn(move || timer.advance(Duration::from_secs(1)))
    };
    started_rx.recv().unwrap();
    assert!(deadline_ctx.is_done());
    let seen = child.err();
    drop(release);
    assert_eq!(firing.join().unwrap(), 1);
    assert_eq!(
        seen,
        Some(Error::DeadlineExceeded),
        "the child read as live past its deadline"
    );
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
}

/// A waker that records the thread it was woken on.
#[derive(Default)]
struct WokenOn(std::sync::Mutex<Option<thread::ThreadId>>);

impl WokenOn {
    fn thread(&self) -> Option<thread::ThreadId> {
        *self.0.lock().unwrap()
    }
}

impl Wake for WokenOn {
    fn wake(self: Arc<Self>) {
        *self.0.lock().unwrap() = Some(thread::current().id());
    }
}

/// A `Done` future parked before the deadline passed is woken once a read
/// first reports the expiry, not only by the late timer: `done()` agrees with
/// `err()` at once. The wakers run on ctx-core's runner, not on the reading
/// thread: a read runs no executor code (the reader may hold a lock a waker
/// takes).
#[test]
fn a_read_that_reports_an_expiry_wakes_parked_futures_off_the_reading_thread() {
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let (child, _cancel_child) = ctx.with_cancel();
    let (on_ctx, on_child) = (Arc::new(WokenOn::default()), Arc::new(WokenOn::default()));
    let (waker_ctx, waker_child) = (Waker::from(on_ctx.clone()), Waker::from(on_child.clone()));
    let (mut done_ctx, mut done_child) = (ctx.done(), child.done());
    let poll = |done: &mut ctx_core::Done, waker: &Waker| {
        Pin::new(done).poll(&mut TaskContext::from_waker(waker))
    };
    assert!(poll(&mut done_ctx, &waker_ctx).is_pending());
    assert!(poll(&mut done_child, &waker_child).is_pending());
    timer.advance_silently(Duration::from_secs(1));
    // The read closes the deadline node and the reader's own context.
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert!(
        support::eventually(|| on_ctx.thread().is_some() && on_child.thread().is_some()),
        "a parked future slept on"
    );
    let reader = thread::current().id();
    assert_ne!(on_ctx.thread(), Some(reader), "the read ran a waker");
    assert_ne!(on_child.thread(), Some(reader), "the read ran a waker");
    assert!(poll(&mut done_ctx, &waker_ctx).is_ready());
    assert!(poll(&mut done_child, &waker_child).is_ready());
}

/// A clock an hour ahead of the real one that never fires, counting its reads.
#[derive(Debug, Default)]
struct AheadClock(AtomicUsize);

impl ctx_core::Timer for AheadClock {
    fn now(&self) -> Instant {
        self.0.fetch_add(1, Ordering::SeqCst);
        Instant::now() + Duration::from_secs(3600)
    }
    fn arm(&self, _: Instant, _: ctx_core::timer::Expiry) -> Option<ctx_core::TimerKey> {
        None
    }
    fn disarm(&self, _: ctx_core::TimerKey) {}
}

/// Below a `with_timer` whose clock is ahead of the deadline's, the time left
/// is still the deadline's (its own timer's clock, the one `err()` checks it
/// against), and a blocking wait sleeps instead of spinning: it used to read
/// the time left as zero while the context was live, and loop.
#[test]
fn below_a_clock_of_its_own_the_deadline_keeps_its_clock_and_waits_sleep() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(600));
    let clock = Arc::new(AheadClock::default());
    let below = ctx.with_timer(clock.clone());
    let left = below.remaining().expect("the deadline is inherited");
    assert!(
        left > Duration::from_secs(500),
        "time left {left:?}, read off the clock below the deadline"
    );
    assert!(!below.wait_timeout(Duration::from_millis(300)));
    let reads = clock.0.load(Ordering::SeqCst);
    assert!(
        reads < 100,
        "wait_timeout spun: {reads} reads of the clock below"
    );
}

/// A waker whose `clone` panics, polled on the event path (another waiter
/// holds the slot), through a `Borrow` that answers another context at the
/// next poll: the registration the panic left behind on the first context is
/// found and left, and the future waits on the second one, whose cancel wakes
/// it.
#[test]
fn a_panicking_waker_clone_then_another_context_still_gets_the_wake_up() {
    use ctx_core::FutureExt;
    use std::task::{RawWaker, RawWakerVTable};
    struct Flip {
        first: Context,
        then: Context,
        calls: AtomicUsize,
    }
    impl std::borrow::Borrow<Context> for Flip {
        fn borrow(&self) -> &Context {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                &self.first
            } else {
                &self.then
            }
        }
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    fn clone(_: *const ()) -> RawWaker {
        panic!("the executor's clone panics")
    }
    fn noop(_: *const ()) {}
    // SAFETY: the vtable never reads the data pointer.
    let panicky = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let (first, _cancel_first) = Context::background().with_cancel();
    let (then, cancel_then) = Context::background().with_cancel();
    let poll = |f: &mut dyn FnMut(&mut TaskContext<'_>) -> Poll<()>, waker: &Waker| {
        f(&mut TaskContext::from_waker(waker))
    };
    // Holds the first context's slot: the next waiter goes to its event.
    let mut holder = first.done();
    assert!(poll(&mut |cx| Pin::new(&mut holder).poll(cx), Waker::noop()).is_pending());
    let mut racing = std::future::pending::<()>().with_context(Flip {
        first: first.clone(),
        then: then.clone(),
        calls: AtomicUsize::new(0),
    });
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll(
            &mut |cx| Pin::new(&mut racing).poll(cx).map(|_| ()),
            &panicky,
        );
    }));
    assert!(panicked.is_err(), "the clone did not panic");
    let flag = support::WakeFlag::new();
    let waker = Waker::from(flag.clone());
    assert!(poll(&mut |cx| Pin::new(&mut racing).poll(cx).map(|_| ()), &waker).is_pending());
    cancel_then.cancel();
    assert!(
        flag.woken(),
        "pending on the second context, not woken by its cancel"
    );
}

/// A timer that keeps the one expiry it is given and a clock set by hand.
#[derive(Debug)]
struct KeepExpiry {
    now: std::sync::Mutex<Instant>,
    expiry: std::sync::Mutex<Option<ctx_core::timer::Expiry>>,
}

impl ctx_core::Timer for KeepExpiry {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap()
    }
    fn arm(
        &self,
        _deadline: Instant,
        expiry: ctx_core::timer::Expiry,
    ) -> Option<ctx_core::timer::TimerKey> {
        *self.expiry.lock().unwrap() = Some(expiry);
        None
    }
    fn disarm(&self, _key: ctx_core::timer::TimerKey) {}
}

/// `Expiry::is_done` tells a backend whether firing would do nothing. After a
/// read noticed the expiry, firing still has the subtree to walk: a backend that
/// drops "done" expiries (the built-in timer's sweep does) must keep this one.
#[test]
fn an_expiry_only_a_read_noticed_is_not_done() {
    let timer = Arc::new(KeepExpiry {
        now: std::sync::Mutex::new(Instant::now()),
        expiry: std::sync::Mutex::new(None),
    });
    let root = Context::background().with_timer(timer.clone());
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(1));
    let calls = Calls::new();
    let (child, _cancel_child) = ctx.with_cancel();
    let _registration = child.after_func(calls.callback());
    *timer.now.lock().unwrap() += Duration::from_secs(1);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    let expiry = timer.expiry.lock().unwrap().take().unwrap();
    assert!(!expiry.is_done(), "a backend would drop the walk with it");
    expiry.fire();
    assert!(support::eventually(|| calls.get() == 1));
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
}

/// `adapter::Listener` completes only for a `notify_all` after its `listen`:
/// a listener notified, then dropped without seeing it, does not pass its
/// notification on to one that came after the notify (a list that frees a
/// notified entry for the next listener could, as `event-listener` does
/// unless the listener leaves with `discard`). A later notify completes the
/// late one.
#[test]
fn an_adapter_listener_completes_only_for_a_notify_after_its_listen() {
    let event = ctx_core::adapter::Event::new();
    let early = event.listen();
    event.notify_all();
    let woken = support::WakeFlag::new();
    let mut late = Box::pin(event.listen());
    assert!(woken.poll(&mut late).is_pending());
    drop(early);
    assert!(
        woken.poll(&mut late).is_pending(),
        "the late listener completed with the dropped one's notification"
    );
    event.notify_all();
    assert!(woken.woken());
    assert!(woken.poll(&mut late).is_ready());
}

/// A cancel leaves nobody registered: `testing::waiters` says 0 at once,
/// for a waiter in the inline slot and one on the event alike, before either
/// is polled again.
#[cfg(feature = "test-util")]
#[test]
fn no_waiter_is_counted_once_the_context_is_done() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut in_slot = ctx.done();
    let mut on_event = ctx.done();
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(Pin::new(&mut in_slot).poll(&mut cx).is_pending());
    assert!(Pin::new(&mut on_event).poll(&mut cx).is_pending());
    assert_eq!(ctx_core::testing::waiters(&ctx), 2);
    cancel.cancel();
    assert_eq!(ctx_core::testing::waiters(&ctx), 0);
    assert!(Pin::new(&mut in_slot).poll(&mut cx).is_ready());
    assert!(Pin::new(&mut on_event).poll(&mut cx).is_ready());
    assert_eq!(ctx_core::testing::waiters(&ctx), 0);
}

/// A clock that never moves and counts how often it is read.
#[derive(Debug)]
struct FrozenClock {
    at: Instant,
    reads: AtomicUsize,
}

impl ctx_core::Timer for FrozenClock {
    fn now(&self) -> Instant {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.at
    }

    fn arm(&self, _deadline: Instant, _expiry: ctx_core::Expiry) -> Option<ctx_core::TimerKey> {
        None
    }

    fn disarm(&self, _key: ctx_core::TimerKey) {}
}

/// A blocking wait whose context's deadline is a microsecond away on a clock
/// that never moves (a manual or paused one, left alone): such a clock's time
/// cannot be slept on, so the wait reads the context again now and then, each
/// time after twice as long, instead of after every (virtual) microsecond
/// left, in a loop. Counted in reads of the clock, not in time: a slower
/// machine only reads it less often.
#[test]
fn a_wait_under_a_frozen_clock_reads_it_a_few_times_not_in_a_loop() {
    let timer = Arc::new(FrozenClock {
        at: Instant::now(),
        reads: AtomicUsize::new(0),
    });
    let root = Context::background().with_timer(timer.clone());
    let (ctx, _cancel) = root.with_deadline(timer.at + Duration::from_micros(1));
    let before = timer.reads.load(Ordering::SeqCst);
    assert!(!ctx.wait_timeout(Duration::from_millis(300)));
    let reads = timer.reads.load(Ordering::SeqCst) - before;
    assert!(reads < 100, "{reads} reads of a frozen clock in one wait");
}

/// A blocking wait an hour (of a manual clock) before its deadline, when the
/// clock is moved past the deadline without the timer firing (a late timer):
/// that clock's time left cannot be slept on, so the wait reads the context
/// again at least every second and returns, instead of sleeping the hour
/// of real time.
#[test]
#[cfg_attr(miri, ignore)] // real time: a second between reads
fn a_blocking_wait_sees_its_clock_moved_past_the_deadline_without_a_firing() {
    within_watchdog("a wait under a clock moved without a firing", || {
        let timer = ManualTimer::new();
        let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(3600));
        let mover = {
            let timer = timer.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                timer.advance_silently(Duration::from_secs(7200));
            })
        };
        ctx.wait();
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        mover.join().unwrap();
    });
}

/// `wait_until(d)` at the context's own deadline `d`, on a system-clock backend
/// that never fires: the wait ends at `d`, when the context is done by its
/// exact deadline, so it reports true (a wait that returned false there would
/// say "not done" about a done context).
#[test]
fn wait_until_the_contexts_own_deadline_on_a_silent_timer_reports_done() {
    #[derive(Debug)]
    struct SilentSystemClock;
    impl ctx_core::Timer for SilentSystemClock {
        fn now(&self) -> Instant {
            Instant::now()
        }
        fn arm(&self, _deadline: Instant, _expiry: ctx_core::Expiry) -> Option<ctx_core::TimerKey> {
            None
        }
        fn disarm(&self, _key: ctx_core::TimerKey) {}
        fn is_system_clock(&self) -> bool {
            true
        }
    }
    let root = Context::background().with_timer(Arc::new(SilentSystemClock));
    for _ in 0..3 {
        let deadline = Instant::now() + Duration::from_millis(30);
        let (ctx, _cancel) = root.with_deadline(deadline);
        assert!(ctx.wait_until(deadline), "not done: {:?}", ctx.err());
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    }
}
