//! User code (callbacks, `Drop`s, timer backends) against the tree: reads never
//! run it, it never holds back or stops a timer, a panic in it never leaves a
//! cancel half done or a node leaked, and no shape of links makes a drop recurse.

mod support;

use ctx_core::{CancelFunc, Cause, Context, Error, Expiry, Timer, TimerKey};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};
use support::{
    Calls, DropFlag, ManualTimer, WakeFlag, eventually, recv_within, runner_jobs, scaled,
    wait_until_set, within_watchdog,
};

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

// ===== reads never run user code =====

/// The shared state of the condition-variable example: the lock protects a mask
/// of the waiters that are parked in `wait`, so the test knows when all are.
type Cond = Arc<(Mutex<u32>, Condvar)>;

/// Go's `waitOnCond` from `ExampleAfterFunc_cond`: wait on `cond` until the
/// condition holds (never, here) or `ctx` is done, with an `after_func` that
/// broadcasts (under the lock) to wake the wait when `ctx` ends. The caller holds
/// the lock; `ctx.err()` is read with the lock held, as in Go.
fn wait_on_cond(ctx: &Context, cond: &Cond, me: u32) -> Error {
    let (lock, cvar) = &**cond;
    let mut parked = lock.lock().unwrap();
    let broadcast = {
        let cond = cond.clone();
        ctx.after_func(move || {
            let _guard = cond.0.lock().unwrap();
            cond.1.notify_all();
        })
    };
    loop {
        *parked |= 1 << me;
        parked = cvar.wait(parked).unwrap();
        if let Some(err) = ctx.err() {
            // Go's `defer stopf()`: still under the lock.
            broadcast.stop();
            return err;
        }
    }
}

/// Go's `ExampleAfterFunc_cond` with a late timer: four threads each hold one
/// shared mutex while they check `ctx.err()` in a loop around a condition
/// variable, and each context (a 1 ms timeout) has an `after_func` callback that
/// takes that mutex to broadcast. The deadlines pass while no timer has fired yet
/// and the waiters are woken (by someone else's broadcast): each reads its own
/// context's `err()` with the mutex held. All four must report
/// `DeadlineExceeded` and return; the old read canceled the context itself and
/// ran its callback on the reading thread, which then waited for the mutex that
/// thread holds: a deadlock (the watchdog turns it into a failure).
#[test]
#[cfg_attr(miri, ignore)] // real threads parked on a condition variable
fn go_example_after_func_cond_returns_deadline_exceeded_without_deadlock() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let cond: Cond = Arc::new((Mutex::new(0), Condvar::new()));
    let results = within_watchdog("four waiters reading err() under the lock", move || {
        let waiters: Vec<thread::JoinHandle<Error>> = (0..4)
            .map(|me| {
                let root = root.clone();
                let cond = cond.clone();
                thread::spawn(move || {
                    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1));
                    wait_on_cond(&ctx, &cond, me)
                })
            })
            .collect();
        assert!(
            eventually(|| *cond.0.lock().unwrap() == 0b1111),
            "the four waiters never all parked"
        );
        // Every deadline passes; the timer is late and fires none of them.
        timer.advance_silently(Duration::from_millis(2));
        // Another broadcast on the same condition variable wakes them all.
        {
            let _guard = cond.0.lock().unwrap();
            cond.1.notify_all();
        }
        waiters
            .into_iter()
            .map(|w| w.join().expect("a waiter panicked"))
            .collect::<Vec<Error>>()
    });
    assert_eq!(results, vec![Error::DeadlineExceeded; 4]);
}

/// A read after the deadline passed, while the timer is late (a manual timer that
/// never fires), reports `DeadlineExceeded` with the deadline's cause, on the
/// context and below it, and runs nothing on the reading thread: the context's
/// `after_func` callback is still pending afterwards and the read handed nothing
/// to the runner (the old read canceled the subtree and ran it there). The
/// report sticks: a later explicit cancel changes neither `err()` nor `cause()`,
/// and it is that cancel that sets the callback off, on the runner. `done()`
/// and `wait()` agree with the read.
#[test]
fn a_read_past_the_deadline_reports_it_runs_nothing_and_the_report_sticks() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let (ctx, cancel) = root.with_timeout_cause(Duration::from_millis(1), Cause::msg("too slow"));
    let (child, _cancel_child) = ctx.with_cancel();
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let _registration = {
        let ran_on = ran_on.clone();
        ctx.after_func(move || ran_on.lock().unwrap().push(thread::current().id()))
    };
    assert_eq!(ctx.err(), None);
    timer.advance_silently(Duration::from_millis(2));
    assert_eq!(timer.armed(), 1, "the manual timer fired nothing");

    let reader = {
        let (ctx, child) = (ctx.clone(), child.clone());
        thread::spawn(move || {
            let jobs = runner_jobs();
            let seen = (
                ctx.err(),
                ctx.cause().map(|c| c.to_string()),
                ctx.is_done(),
                ctx.check(),
                child.err(),
                child.cause().map(|c| c.to_string()),
            );
            (seen, thread::current().id(), runner_jobs() - jobs)
        })
    };
    let (seen, reader_id, handed_over) = reader.join().expect("the reader panicked");
    let expected = (
        Some(Error::DeadlineExceeded),
        Some("too slow".to_owned()),
        true,
        Err(Error::DeadlineExceeded),
        Some(Error::DeadlineExceeded),
        Some("too slow".to_owned()),
    );
    assert_eq!(seen, expected);
    // Not started on the runner either (where it might not have run yet).
    assert_eq!(handed_over, 0, "a read handed work to the runner");
    assert!(
        ran_on.lock().unwrap().is_empty(),
        "a read ran the after_func callback (on the reading thread: {})",
        ran_on.lock().unwrap().contains(&reader_id)
    );

    // `done()` and `wait()` agree with what the read reported.
    let mut done = ctx.done();
    assert_eq!(WakeFlag::new().poll(&mut done), Poll::Ready(()));
    let mut child_done = child.done();
    assert_eq!(WakeFlag::new().poll(&mut child_done), Poll::Ready(()));
    assert!(ctx.wait_timeout(Duration::ZERO));
    assert!(child.wait_timeout(Duration::ZERO));
    assert!(
        ctx.wait_timeout(Duration::from_secs(30)),
        "wait() on a done context blocked"
    );

    // The report sticks through an explicit cancel, which sets the callback off.
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.cause().map(|c| c.to_string()),
        Some("too slow".to_owned())
    );
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        child.cause().map(|c| c.to_string()),
        Some("too slow".to_owned())
    );
    assert_eq!(ctx.live_children(), 0);
    assert!(
        eventually(|| !ran_on.lock().unwrap().is_empty()),
        "the cancel never ran the callback"
    );
    let ran_on = ran_on.lock().unwrap().clone();
    assert_eq!(ran_on.len(), 1, "the callback ran more than once");
    assert!(
        ran_on[0] != thread::current().id() && ran_on[0] != reader_id,
        "the callback ran on the canceling or the reading thread"
    );
}

/// A read below a late deadline closes every context between the deadline and
/// the one read, top down: a cancel of one in between that comes afterwards
/// records nothing, so no context reports another reason than its parent's
/// (Go: a child canceled through its parent has the parent's error and cause).
/// The read used to close the deadline and the context read only: a cancel in
/// between then recorded `Canceled` above a child reading `DeadlineExceeded`.
/// A branch the read did not cross is no different: its deadline passed
/// before its cancel came, so the cancel finds it done too (it reads the
/// context exactly first), and so does everything below it.
#[test]
fn a_read_below_a_late_deadline_leaves_no_context_between_to_record_another_reason() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let (deadline, _cancel) =
        root.with_timeout_cause(Duration::from_millis(1), Cause::msg("too slow"));
    let (middle, cancel_middle) = deadline.with_cancel_cause();
    let (inner, cancel_inner) = middle.with_value(7u32).with_cancel();
    let (read, _cancel_read) = inner.with_cancel();
    let (sibling, cancel_sibling) = deadline.with_cancel_cause();
    let (below_sibling, _cancel_below_sibling) = sibling.with_cancel();
    let (other, _cancel_other) = Context::background().with_cancel();
    let (merged, _cancel_merged) = Context::with_cancel_any(&[other, middle.clone()]);
    let (below_merged, _cancel_below_merged) = merged.with_cancel();
    timer.advance_silently(Duration::from_millis(2));

    let exceeded = |ctx: &Context| (ctx.err(), ctx.cause().map(|cause| cause.to_string()));
    let expected = (Some(Error::DeadlineExceeded), Some("too slow".to_owned()));
    // Through the merge first: its way up goes through its further parent.
    assert_eq!(exceeded(&below_merged), expected);
    assert_eq!(exceeded(&read), expected);
    cancel_middle.cancel(Cause::msg("stop"));
    cancel_inner.cancel();
    cancel_sibling.cancel(Cause::msg("sibling stop"));
    for (name, ctx) in [
        ("deadline", &deadline),
        ("middle", &middle),
        ("inner", &inner),
        ("read", &read),
        ("merged", &merged),
        ("below merged", &below_merged),
        ("sibling", &sibling),
        ("below sibling", &below_sibling),
    ] {
        assert_eq!(exceeded(ctx), expected, "{name}");
    }
}

/// A backend that drops an expiry unfired because its context already reports
/// done (a read found the deadline passed) breaks the `Timer` contract: only
/// `fire` walks the subtree. The drop is forgiven: the expiry's drop sees the
/// unwalked read and fires it on ctx-core's runner, so the callbacks below the
/// deadline run, on a runner thread, and the children are drained.
#[test]
fn an_expiry_dropped_after_a_read_noticed_the_deadline_still_walks_the_subtree() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1));
    let (child, _cancel_child) = ctx.with_cancel();
    let (ran_on, ran) = mpsc::channel();
    let _registration = child.after_func(move || {
        let _ = ran_on.send(thread::current().id());
    });
    timer.advance_silently(Duration::from_millis(2));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(ran.try_recv().is_err(), "a read ran the callback");
    assert_eq!(ctx.live_children(), 1, "a read walked the subtree");

    assert_eq!(timer.drop_expiries_of_done_contexts(), 1);
    let runner = ran
        .recv_timeout(Duration::from_secs(60))
        .expect("the dropped expiry's subtree was never walked: its callback did not run");
    assert_ne!(
        runner,
        thread::current().id(),
        "the drop walked on the backend's thread"
    );
    assert!(eventually(|| ctx.live_children() == 0));
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
}

/// The other drops of an unfired expiry start nothing: one disarmed because
/// its context was canceled, and one whose context is gone. Nothing goes to
/// the runner either (a forgiven expiry's walk would) but the cancel's own
/// callback, a job of its own.
#[test]
fn an_expiry_dropped_unfired_after_a_cancel_or_with_its_context_starts_nothing() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let calls = Calls::new();
    let (ctx, cancel) = root.with_timeout(Duration::from_millis(1));
    let _registration = ctx.after_func(calls.callback());
    // The hand-overs counted (with the `test-util` hooks; without, none).
    let callback_job = usize::from(cfg!(feature = "test-util"));
    let jobs = runner_jobs();
    cancel.cancel();
    assert_eq!(timer.armed(), 0, "the cancel disarmed the deadline");
    assert_eq!(
        runner_jobs(),
        jobs + callback_job,
        "the cancel, or the drop of its disarmed expiry, handed other work to the runner"
    );
    calls.wait_for(1);
    // A context dropped after a read noticed its deadline: the disarm drops the
    // expiry of a context that is gone.
    let (gone, cancel_gone) = root.with_timeout(Duration::from_millis(1));
    timer.advance_silently(Duration::from_millis(2));
    assert_eq!(gone.err(), Some(Error::DeadlineExceeded));
    let jobs = runner_jobs();
    drop((gone, cancel_gone));
    assert_eq!(
        timer.armed(),
        0,
        "dropping the context disarmed its deadline"
    );
    assert_eq!(
        runner_jobs(),
        jobs,
        "the drop of an expiry whose context is gone handed work to the runner"
    );
    assert_eq!(
        ctx.err(),
        Some(Error::Canceled),
        "the cancel's reason stays"
    );
    assert_eq!(calls.get(), 1, "the callback ran again");
}

// ===== wakers that need a lock a canceler or a reader holds =====

/// A waker that takes a lock: a task woken through a `Mutex` and `Condvar`
/// pair of the user's.
struct LockingWaker {
    lock: Arc<Mutex<()>>,
    woken: AtomicBool,
}

impl std::task::Wake for LockingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        drop(self.lock.lock().unwrap());
        self.woken.store(true, Ordering::SeqCst);
    }
}

impl LockingWaker {
    fn new(lock: &Arc<Mutex<()>>) -> Arc<LockingWaker> {
        Arc::new(LockingWaker {
            lock: lock.clone(),
            woken: AtomicBool::new(false),
        })
    }

    /// Polls `done` once with this waker.
    fn poll(self: &Arc<Self>, done: &mut ctx_core::Done) -> Poll<()> {
        let waker = std::task::Waker::from(self.clone());
        std::future::Future::poll(
            std::pin::Pin::new(done),
            &mut std::task::Context::from_waker(&waker),
        )
    }
}

/// A thread that holds a lock cancels a context another thread canceled just
/// before, and so waits (as Go's loser waits for the winner's lock) until the
/// winner's walk is complete. The context's waiter wakes through that lock. The
/// winner must not run the waker before its walk is complete: the waker would
/// wait for the loser, and the loser for the walk. With a child (a walk) and
/// without (a leaf).
#[test]
fn a_waker_that_needs_a_lock_a_losing_canceler_holds_runs_once_the_cancel_is_complete() {
    for with_child in [false, true] {
        within_watchdog("a cancel whose waker needs the loser's lock", move || {
            let (ctx, cancel) = Context::background().with_cancel();
            let _child = with_child.then(|| ctx.with_cancel());
            let lock = Arc::new(Mutex::new(()));
            let waker = LockingWaker::new(&lock);
            let mut done = ctx.done();
            assert!(waker.poll(&mut done).is_pending());
            let (loser, seen) = (cancel.canceler(), ctx.clone());
            let (held, holding) = mpsc::channel();
            let holder = thread::spawn(move || {
                let _guard = lock.lock().unwrap();
                held.send(()).unwrap();
                while !seen.is_done() {
                    thread::yield_now();
                }
                // Loses the race: returns once the winner's walk is complete.
                assert!(!loser.cancel());
                assert!(seen.err().is_some());
            });
            holding.recv().unwrap();
            cancel.cancel();
            holder.join().unwrap();
            assert!(
                waker.woken.load(Ordering::SeqCst),
                "the waiter was not woken"
            );
        });
    }
}

/// A read that finds a deadline passed records the expiry and gets the
/// waiters parked on the context woken; the reader may hold a lock one of
/// their wakers takes, so the wakers run elsewhere (on ctx-core's runner),
/// never on the reading thread.
#[test]
fn a_read_under_a_lock_a_waker_takes_does_not_deadlock() {
    within_watchdog(
        "a read whose waiter's waker needs the reader's lock",
        || {
            let timer = ManualTimer::new();
            let (ctx, _cancel) = timer.root().with_timeout(Duration::from_millis(1));
            let lock = Arc::new(Mutex::new(()));
            let waker = LockingWaker::new(&lock);
            let mut done = ctx.done();
            assert!(waker.poll(&mut done).is_pending());
            timer.advance_silently(Duration::from_millis(2));
            {
                let _guard = lock.lock().unwrap();
                assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
            }
            assert!(
                eventually(|| waker.woken.load(Ordering::SeqCst)),
                "the parked waiter was never woken"
            );
        },
    );
}

// ===== one callback stops every deadline =====

/// On the built-in timer, one `after_func` callback of a deadline that blocks
/// (for up to 30 s) and one that panics hold back no other deadline: 1,000
/// timeouts of 20 ms armed afterwards all fire (their callbacks run) while the
/// blocked callback is still blocked. The old timer thread ran callbacks itself,
/// so every later deadline waited for the blocked one to return. The panicking
/// callback did not kill the timer either: those deadlines fire after it.
#[test]
#[cfg_attr(miri, ignore)] // the built-in timer thread and real time
fn a_blocked_and_a_panicking_callback_hold_back_no_other_deadline() {
    const BLOCK_FOR: Duration = Duration::from_secs(30);
    let root = Context::background();

    // A callback that panics, reached from the timer.
    let panicked = Calls::new();
    let (panicking, _cancel_panicking) = root.with_timeout(Duration::from_millis(100));
    {
        let count = panicked.callback();
        // If this thread stalls past the deadline before registering, the callback
        // runs (and panics) right here instead; the test is about the timer
        // surviving, which it must either way.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            panicking.after_func(move || {
                count();
                panic!("an after_func callback panics on the timer's path");
            })
        }));
    }
    assert!(
        eventually(|| panicked.get() == 1),
        "the panicking callback never ran"
    );

    // A callback that blocks until released (or for 10 s), and notes how many of
    // the other deadlines' callbacks had run by the time it returned.
    let fired = Calls::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let returned = Arc::new(AtomicBool::new(false));
    let fired_when_it_returned = Arc::new(AtomicUsize::new(0));
    let (blocking, _cancel_blocking) = root.with_timeout(Duration::from_millis(1));
    let _blocking_registration = {
        let (fired, returned, fired_when_it_returned) = (
            fired.clone(),
            returned.clone(),
            fired_when_it_returned.clone(),
        );
        blocking.after_func(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(BLOCK_FOR);
            fired_when_it_returned.store(fired.get(), Ordering::SeqCst);
            returned.store(true, Ordering::SeqCst);
        })
    };
    started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the blocking callback never started");

    let timeouts: Vec<_> = (0..1000)
        .map(|_| {
            let (ctx, cancel) = root.with_timeout(Duration::from_millis(20));
            let registration = ctx.after_func(fired.callback());
            (ctx, cancel, registration)
        })
        .collect();
    // Until all fired or the blocked callback gave up (a watchdog, not a timing
    // assertion: the deadlines are 20 ms away, the block at most 30 s, released
    // as soon as they fired; 10 s ran out once on a 2-core machine loaded with
    // builds).
    while fired.get() < 1000 && !returned.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    // The blocked callback may have given up and gone already.
    let _ = release_tx.send(());
    assert!(eventually(|| returned.load(Ordering::SeqCst)));
    let fired_while_blocked = fired_when_it_returned.load(Ordering::SeqCst);
    assert_eq!(
        fired_while_blocked, 1000,
        "only {fired_while_blocked} of 1000 deadlines fired while one callback was blocked"
    );
    assert_eq!(fired.get(), 1000);
    assert!(
        timeouts
            .iter()
            .all(|(ctx, _, _)| ctx.err() == Some(Error::DeadlineExceeded))
    );
    assert_eq!(panicking.err(), Some(Error::DeadlineExceeded));
}

/// The callbacks one expiry sets free run on runner jobs of their own: one that
/// blocks holds back no other of the same expiry (Go runs each `AfterFunc` on a
/// goroutine of its own), whichever was registered first, on the deadline
/// context itself or below it. They used to run one after another in a single
/// job.
#[test]
#[cfg_attr(miri, ignore)] // runner threads and a watchdog in real time
fn a_blocked_callback_holds_back_no_other_callback_of_the_same_expiry() {
    for blocking_first in [true, false] {
        for on_child in [false, true] {
            let timer = ManualTimer::new();
            let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
            let (child, _cancel_child) = ctx.with_cancel();
            let other_ctx = if on_child { &child } else { &ctx };
            let (started_tx, started_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let (ran_tx, ran_rx) = mpsc::channel();
            let block = move || {
                started_tx.send(()).unwrap();
                // Released by the test (a watchdog bounds the wait).
                let _ = release_rx.recv_timeout(Duration::from_secs(30));
            };
            let other = move || ran_tx.send(()).unwrap();
            let _registrations = if blocking_first {
                (ctx.after_func(block), other_ctx.after_func(other))
            } else {
                (other_ctx.after_func(other), ctx.after_func(block))
            };
            assert_eq!(timer.advance(Duration::from_secs(1)), 1);
            started_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the blocking callback never started");
            let ran = ran_rx.recv_timeout(Duration::from_secs(30));
            let _ = release_tx.send(());
            assert!(
                ran.is_ok(),
                "blocking first: {blocking_first}, on the child: {on_child}: the other \
                 callback waited for the blocked one"
            );
        }
    }
}

/// A waker that, woken, waits (up to half a minute) for a callback to have
/// run, and records whether it had.
struct WaitsForCallback {
    ran: Mutex<mpsc::Receiver<()>>,
    saw_it: AtomicBool,
}

impl std::task::Wake for WaitsForCallback {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let ran = self.ran.lock().unwrap();
        let saw_it = ran.recv_timeout(Duration::from_secs(30)).is_ok();
        self.saw_it.store(saw_it, Ordering::SeqCst);
    }
}

/// An expiry's walk hands the callbacks it sets free to the runner before it
/// wakes the waiters on the backend's thread: a waker that blocks (here until
/// the very callback has run) holds back no callback, as after an explicit
/// cancel. The walk used to wake first and hand the callbacks over after the
/// last waker returned.
#[test]
#[cfg_attr(miri, ignore)] // runner threads and a watchdog in real time
fn a_blocking_waker_holds_back_no_callback_of_the_expiry_that_woke_it() {
    within_watchdog(
        "a fired deadline's callback behind a blocking waker",
        || {
            for by_timer in [true, false] {
                let timer = ManualTimer::new();
                let (ctx, cancel) = timer.root().with_timeout(Duration::from_secs(1));
                // A child, so that the expiry walks a subtree (a leaf has no callbacks).
                let (_child, _cancel_child) = ctx.with_cancel();
                let (ran_tx, ran_rx) = mpsc::channel();
                let _registration = ctx.after_func(move || ran_tx.send(()).unwrap());
                let waiter = Arc::new(WaitsForCallback {
                    ran: Mutex::new(ran_rx),
                    saw_it: AtomicBool::new(false),
                });
                let mut done = ctx.done();
                let waker = std::task::Waker::from(waiter.clone());
                let mut cx = std::task::Context::from_waker(&waker);
                assert!(
                    std::future::Future::poll(std::pin::Pin::new(&mut done), &mut cx).is_pending()
                );
                if by_timer {
                    assert_eq!(timer.advance(Duration::from_secs(1)), 1);
                } else {
                    cancel.cancel();
                }
                assert!(
                    waiter.saw_it.load(Ordering::SeqCst),
                    "ended by its timer: {by_timer}: the callback waited for the waker"
                );
            }
        },
    );
}

/// The same for the firing backend's own `disarm`s, which an expiry's walk
/// runs on the backend's thread: one that blocks (here until the callback of
/// the expired context has run) holds back no callback.
#[test]
#[cfg_attr(miri, ignore)] // runner threads and a watchdog in real time
fn a_blocking_disarm_of_the_firing_backend_holds_back_no_callback() {
    #[derive(Debug)]
    struct DisarmWaitsForCallback {
        expiries: Mutex<Vec<Expiry>>,
        /// The callback's channel, and whether it was heard from.
        ran: Mutex<(mpsc::Receiver<()>, bool)>,
        disarms: AtomicUsize,
        /// Whether a disarm gave up waiting for the callback.
        missed_it: AtomicBool,
    }
    impl Timer for DisarmWaitsForCallback {
        fn now(&self) -> Instant {
            Instant::now()
        }
        fn arm(&self, _deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
            let mut expiries = self.expiries.lock().unwrap();
            expiries.push(expiry);
            Some(TimerKey::new(
                std::num::NonZeroU64::new(expiries.len() as u64).unwrap(),
            ))
        }
        fn disarm(&self, _key: TimerKey) {
            self.disarms.fetch_add(1, Ordering::SeqCst);
            let mut ran = self.ran.lock().unwrap();
            if !ran.1 {
                ran.1 = ran.0.recv_timeout(Duration::from_secs(30)).is_ok();
            }
            if !ran.1 {
                self.missed_it.store(true, Ordering::SeqCst);
            }
        }
    }
    within_watchdog(
        "a fired deadline's callback behind its backend's disarm",
        || {
            let (ran_tx, ran_rx) = mpsc::channel();
            let backend = Arc::new(DisarmWaitsForCallback {
                expiries: Mutex::new(Vec::new()),
                ran: Mutex::new((ran_rx, false)),
                disarms: AtomicUsize::new(0),
                missed_it: AtomicBool::new(false),
            });
            let root = Context::background().with_timer(backend.clone());
            let (ctx, _cancel) = root.with_timeout(Duration::from_secs(3600));
            // An earlier deadline of the same backend below, which the backend
            // never fires: the expiry above closes it and gives its key back to
            // the firing backend, on the firing thread.
            let (child, _cancel_child) = ctx.with_timeout(Duration::from_secs(1800));
            let _registration = ctx.after_func(move || ran_tx.send(()).unwrap());
            let first = backend.expiries.lock().unwrap().remove(0);
            first.fire();
            // The fired deadline's key and the one below it.
            assert_eq!(backend.disarms.load(Ordering::SeqCst), 2);
            assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
            assert_eq!(child.err(), Some(Error::DeadlineExceeded));
            assert!(
                !backend.missed_it.load(Ordering::SeqCst),
                "the callback waited for the firing backend's disarm"
            );
        },
    );
}

/// A backend whose `disarm` blocks until the test lets it go; it keeps its
/// expiries and never fires them.
#[derive(Debug, Default)]
struct BlockingDisarm {
    expiries: Mutex<Vec<Expiry>>,
    entered: Mutex<Option<mpsc::Sender<String>>>,
    go: Mutex<Option<mpsc::Receiver<()>>>,
}

impl BlockingDisarm {
    /// A backend whose first `disarm` reports its thread's name on the
    /// receiver, then blocks until the sender sends (or a minute passes).
    fn gated() -> (
        Arc<BlockingDisarm>,
        mpsc::Receiver<String>,
        mpsc::Sender<()>,
    ) {
        let (entered, entering) = mpsc::channel();
        let (go, going) = mpsc::channel();
        let backend = Arc::new(BlockingDisarm {
            entered: Mutex::new(Some(entered)),
            go: Mutex::new(Some(going)),
            ..BlockingDisarm::default()
        });
        (backend, entering, go)
    }
}

impl Timer for BlockingDisarm {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn arm(&self, _deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        self.expiries.lock().unwrap().push(expiry);
        Some(TimerKey::new(std::num::NonZeroU64::new(1).unwrap()))
    }
    fn disarm(&self, _key: TimerKey) {
        let name = thread::current().name().unwrap_or("unnamed").to_owned();
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(name);
        }
        if let Some(go) = self.go.lock().unwrap().take() {
            let _ = go.recv_timeout(Duration::from_secs(60));
        }
    }
}

/// A deadline on the built-in timer whose subtree holds a deadline of another
/// backend: the expiry's walk gives that deadline's key back to its own
/// backend, whose `disarm` is foreign code to the built-in timer. One that
/// blocks holds back no other deadline: it runs on the runner, and a timeout
/// armed meanwhile still fires (its callback runs) while it is blocked.
#[test]
#[cfg_attr(miri, ignore)] // the built-in timer thread and real time
fn another_backends_blocking_disarm_holds_back_no_deadline_of_the_firing_timer() {
    within_watchdog("a timeout while another backend's disarm blocks", || {
        let (backend, entering, go) = BlockingDisarm::gated();
        // The inner deadline is earlier (else it would be the outer one's), but
        // its backend never fires: the outer expiry closes it.
        let (outer, _cancel_outer) = Context::background().with_timeout(Duration::from_millis(20));
        let (inner, _cancel_inner) = outer
            .with_timer(backend.clone())
            .with_timeout(Duration::from_millis(10));
        let on = entering
            .recv_timeout(Duration::from_secs(30))
            .expect("the outer expiry never gave the inner key back");
        assert_ne!(
            on, "ctx-timer",
            "the timer's own thread ran a foreign disarm"
        );
        assert_eq!(inner.err(), Some(Error::DeadlineExceeded));
        // The foreign disarm is blocked now: the built-in timer still fires.
        let (ran, running) = mpsc::channel();
        let (other, _cancel_other) = Context::background().with_timeout(Duration::from_millis(20));
        let _registration = other.after_func(move || {
            let _ = ran.send(());
        });
        let fired = running.recv_timeout(Duration::from_secs(20));
        go.send(()).unwrap();
        fired.expect("a timeout did not fire while another backend's disarm blocked");
    });
}

// ===== a panicking Drop stops a cancel halfway =====

/// A value (or a panic payload) whose `Drop` panics.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a value's Drop panics");
    }
}

/// A waker that drops what it holds when it is woken.
struct DropOnWake(Mutex<Option<Box<dyn Send>>>);

impl std::task::Wake for DropOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let held = self.0.lock().unwrap().take();
        drop(held);
    }
}

/// The tree of the two tests below: under `parent`, a sibling with a child
/// (registered first: the old walk visited it after `doomed`), and `doomed`,
/// a child holding a value whose `Drop` panics below one that sets `freed`.
struct Doomed {
    sibling: Context,
    _cancel_sibling: CancelFunc,
    nephew: Context,
    _cancel_nephew: CancelFunc,
    freed: Arc<AtomicBool>,
    doomed: Context,
    cancel_doomed: CancelFunc,
}

impl Doomed {
    fn under(parent: &Context) -> Doomed {
        let (sibling, _cancel_sibling) = parent.with_cancel();
        let (nephew, _cancel_nephew) = sibling.with_cancel();
        let (flag, freed) = DropFlag::new();
        let (doomed, cancel_doomed) = parent
            .with_value(flag)
            .with_value(PanicOnDrop)
            .with_cancel();
        Doomed {
            sibling,
            _cancel_sibling,
            nephew,
            _cancel_nephew,
            freed,
            doomed,
            cancel_doomed,
        }
    }
}

/// A cancel that releases the last reference on a context holding a value whose
/// `Drop` panics still finishes the whole subtree — siblings' children are done,
/// a waiter on a sibling is woken — frees everything above the panicking value,
/// and then resumes the panic. Here the parent's cancel closes `doomed` and its
/// sibling, and a waiter on the parent, which the cancel wakes on its own
/// thread, drops `doomed`'s handles, so the cancel's own reference on `doomed`
/// is (or would be, in the old walk) the last one. The old cancel let the panic
/// unwind out of its walk: the sibling's child stayed live, its waiter asleep,
/// and the value above leaked.
#[test]
fn a_panicking_drop_released_by_a_cancel_stops_nothing_and_resurfaces() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let Doomed {
        sibling,
        _cancel_sibling,
        nephew,
        _cancel_nephew,
        freed,
        doomed,
        cancel_doomed,
    } = Doomed::under(&parent);
    let dropper = Arc::new(DropOnWake(Mutex::new(Some(Box::new((
        doomed,
        cancel_doomed,
    ))))));
    let mut parent_done = parent.done();
    let waker = std::task::Waker::from(dropper.clone());
    assert!(
        std::future::Future::poll(
            std::pin::Pin::new(&mut parent_done),
            &mut std::task::Context::from_waker(&waker),
        )
        .is_pending()
    );
    drop(waker);
    let woken = WakeFlag::new();
    let mut sibling_done = sibling.done();
    assert_eq!(woken.poll(&mut sibling_done), Poll::Pending);

    let result = catch_unwind(AssertUnwindSafe(|| cancel_parent.cancel()));
    let payload = result.expect_err("the Drop's panic resurfaces from the cancel");
    assert_eq!(panic_text(&*payload), "a value's Drop panics");

    assert_eq!(
        nephew.err(),
        Some(Error::Canceled),
        "the panicking Drop stopped the cancel before the sibling's child"
    );
    assert!(
        woken.woken(),
        "the waiter on the canceled sibling was never woken"
    );
    assert_eq!(woken.poll(&mut sibling_done), Poll::Ready(()));
    assert!(
        freed.load(Ordering::SeqCst),
        "the value above the panicking one was never freed"
    );
    assert!(dropper.0.lock().unwrap().is_none(), "the waker ran");
    assert_eq!(parent.live_children(), 0);
    assert_eq!(sibling.live_children(), 0);
}

/// The same panicking `Drop`, released by an `after_func` callback of the
/// parent instead: the callback runs on the runner, after the cancel, so the
/// last reference on `doomed` goes there, and the panic with it (reported by
/// the hook). The cancel returns normally with the whole subtree done, and
/// everything above the panicking value is freed once the callback ran.
#[test]
fn a_panicking_drop_released_by_a_callback_stays_on_the_runner() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let Doomed {
        sibling,
        _cancel_sibling,
        nephew,
        _cancel_nephew,
        freed,
        doomed,
        cancel_doomed,
    } = Doomed::under(&parent);
    let _registration = parent.after_func(move || drop((doomed, cancel_doomed)));
    let woken = WakeFlag::new();
    let mut sibling_done = sibling.done();
    assert_eq!(woken.poll(&mut sibling_done), Poll::Pending);

    let result = catch_unwind(AssertUnwindSafe(|| cancel_parent.cancel()));
    assert!(result.is_ok(), "the callback's panic reached the canceler");
    assert_eq!(nephew.err(), Some(Error::Canceled));
    assert!(
        woken.woken(),
        "the waiter on the canceled sibling was never woken"
    );
    assert_eq!(parent.live_children(), 0);
    assert_eq!(sibling.live_children(), 0);
    wait_until_set(&freed, "the value above the panicking one was freed");
}

// ===== dropping a chain of merge links recursed =====

/// Dropping a chain of `with_cancel_any` nodes linked through their *second*
/// parents (each merge node's first parent is one long-lived root, its second the
/// previous merge node) is iterative: 20,000 links drop on a thread with a
/// 256 KiB stack and free everything. The old drop released a merge node's
/// further parents by recursion and overflowed the stack (which aborts the whole
/// test binary).
#[test]
fn dropping_a_chain_linked_through_second_parents_does_not_recurse() {
    let links = scaled(20_000, 200);
    let (root, _cancel_root) = Context::background().with_cancel();
    let (flag, freed) = DropFlag::new();
    let mut previous = Context::background().with_value(flag);
    let mut cancels: Vec<CancelFunc> = Vec::with_capacity(links);
    for _ in 0..links {
        let (merged, cancel) = Context::with_cancel_any(&[root.clone(), previous]);
        cancels.push(cancel);
        previous = merged;
    }
    assert_eq!(root.live_children(), links);
    let last = previous;
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            // Each cancel ends its link (and those below); the last handle's drop
            // then frees the whole chain.
            drop(cancels);
            assert_eq!(last.err(), Some(Error::Canceled));
            drop(last);
        })
        .expect("spawn")
        .join()
        .expect("dropping the chain panicked");
    assert!(freed.load(Ordering::SeqCst), "the chain was not freed");
    assert_eq!(root.live_children(), 0);
}

// ===== a timer backend that panics leaks the node =====

/// A backend whose `arm` panics.
#[derive(Debug)]
struct ArmPanics;

impl Timer for ArmPanics {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn arm(&self, _deadline: Instant, _expiry: Expiry) -> Option<TimerKey> {
        panic!("Timer::arm panics");
    }

    fn disarm(&self, _key: TimerKey) {}
}

/// A backend whose `now` panics.
#[derive(Debug)]
struct NowPanics;

impl Timer for NowPanics {
    fn now(&self) -> Instant {
        panic!("Timer::now panics");
    }

    fn arm(&self, _deadline: Instant, _expiry: Expiry) -> Option<TimerKey> {
        None
    }

    fn disarm(&self, _key: TimerKey) {}
}

/// When the backend's `arm` or `now` panics inside `with_timeout` /
/// `with_deadline`, the panic reaches the caller and the half-made deadline node
/// is not leaked: it is not left registered with its parent, and it does not keep
/// the parent alive (a value above the parent is freed when the parent's handles
/// go). The old code had registered the node and taken its strong reference on the
/// parent before calling the backend, and lost both.
#[test]
fn a_timer_whose_arm_or_now_panics_leaks_no_node() {
    type Derive = fn(&Context) -> (Context, CancelFunc);
    let cases: [(&str, Arc<dyn Timer>, Derive, &str); 3] = [
        (
            "with_timeout, arm panics",
            Arc::new(ArmPanics),
            |p| p.with_timeout(Duration::from_secs(3600)),
            "Timer::arm panics",
        ),
        (
            "with_deadline, arm panics",
            Arc::new(ArmPanics),
            |p| p.with_deadline(Instant::now() + Duration::from_secs(3600)),
            "Timer::arm panics",
        ),
        (
            "with_deadline, now panics",
            Arc::new(NowPanics),
            |p| p.with_deadline(Instant::now() + Duration::from_secs(3600)),
            "Timer::now panics",
        ),
    ];
    for (case, timer, derive, message) in cases {
        let (flag, freed) = DropFlag::new();
        let base = Context::background().with_value(flag).with_timer(timer);
        let (parent, cancel_parent) = base.with_cancel();
        drop(base);
        let result = catch_unwind(AssertUnwindSafe(|| derive(&parent)));
        let payload = result.map(drop).expect_err(case);
        assert_eq!(panic_text(&*payload), message, "{case}");
        assert_eq!(
            parent.live_children(),
            0,
            "{case}: the half-made node is still registered with its parent"
        );
        assert_eq!(parent.err(), None, "{case}");
        drop((parent, cancel_parent));
        assert!(
            freed.load(Ordering::SeqCst),
            "{case}: the half-made node still holds its parent"
        );
    }
}

// ===== wakers never run under the waiter list's lock =====

type BoxedDone = std::pin::Pin<Box<ctx_core::Done>>;

/// Wakes by dropping another waiter's `Done` of the same context: a waker
/// that re-enters the context's waiter list (as a task polled inline that
/// drops a listener would). Run under that list's lock, it would deadlock.
struct ReenteringWaker {
    victim: Mutex<Option<BoxedDone>>,
    woken: mpsc::Sender<()>,
}

impl std::task::Wake for ReenteringWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        drop(self.victim.lock().unwrap().take());
        let _ = self.woken.send(());
    }
}

/// Cancels at thread exit, from a thread-local's destructor, then drops the
/// waiters it kept.
struct CancelAtExit {
    cancel: Option<CancelFunc>,
    waiters: Vec<BoxedDone>,
}

impl Drop for CancelAtExit {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
        }
    }
}

thread_local! {
    static AT_EXIT: std::cell::RefCell<CancelAtExit> =
        const { std::cell::RefCell::new(CancelAtExit { cancel: None, waiters: Vec::new() }) };
}

/// Polls `done` once with `waker`.
fn poll_done(done: &mut BoxedDone, waker: &std::task::Waker) -> Poll<()> {
    std::future::Future::poll(done.as_mut(), &mut std::task::Context::from_waker(waker))
}

/// A context with three waiters (the first in the inline slot, the others on
/// the waiter list), canceled from a thread-local's destructor after
/// ctx-core's own thread-locals are gone: the waker that re-enters the list
/// still runs, and not under the list's lock (it used to run there when the
/// canceling thread's locals were gone, and hung).
#[test]
fn a_cancel_from_a_thread_local_destructor_runs_a_reentering_waker_outside_the_list_lock() {
    let (woken, woken_rx) = mpsc::channel();
    let (exited, exited_rx) = mpsc::channel::<()>();
    let noop = std::task::Waker::noop();
    let thread = thread::spawn(move || {
        // Registered first, so destroyed after the thread-locals that ctx-core
        // takes into use below.
        AT_EXIT.with(|_| {});
        // A cancel with listeners on this thread: ctx-core's own thread-locals,
        // if it has any, are in use from here on.
        {
            let (ctx, cancel) = Context::background().with_cancel();
            let mut a: BoxedDone = Box::pin(ctx.done());
            let mut b: BoxedDone = Box::pin(ctx.done());
            assert!(poll_done(&mut a, noop).is_pending());
            assert!(poll_done(&mut b, noop).is_pending());
            cancel.cancel();
            assert!(poll_done(&mut a, noop).is_ready() && poll_done(&mut b, noop).is_ready());
        }
        let (ctx, cancel) = Context::background().with_cancel();
        let mut slot: BoxedDone = Box::pin(ctx.done());
        assert!(poll_done(&mut slot, noop).is_pending());
        let mut victim: BoxedDone = Box::pin(ctx.done());
        assert!(poll_done(&mut victim, noop).is_pending());
        let waker = Arc::new(ReenteringWaker {
            victim: Mutex::new(Some(victim)),
            woken,
        });
        let mut reentering: BoxedDone = Box::pin(ctx.done());
        assert!(poll_done(&mut reentering, &std::task::Waker::from(waker)).is_pending());
        AT_EXIT.with(|at_exit| {
            let mut at_exit = at_exit.borrow_mut();
            at_exit.cancel = Some(cancel);
            at_exit.waiters.extend([slot, reentering]);
        });
        // Dropped with the thread's other locals, after `AT_EXIT`'s cancel.
        struct SendOnDrop(mpsc::Sender<()>);
        impl Drop for SendOnDrop {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        thread_local! {
            static EXITED: std::cell::Cell<Option<SendOnDrop>> = const { std::cell::Cell::new(None) };
        }
        EXITED.with(|e| e.set(Some(SendOnDrop(exited))));
    });
    assert!(
        woken_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the re-entering waker never ran (a deadlock under the waiter list's lock?)"
    );
    assert!(
        exited_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the thread never finished its exit"
    );
    thread.join().unwrap();
}

// ===== panic payloads are user code too =====

/// A panic payload that says when it is being dropped, then panics.
struct SignalThenPanicOnDrop(mpsc::Sender<()>);

impl Drop for SignalThenPanicOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
        panic!("a panic payload's Drop panics");
    }
}

/// Callback panics end on the runner, their payloads dropped there. One whose
/// payload panics as it is dropped used to stop the cancel that ran it: the
/// callbacks after it never ran (and their `stop` said they had). Now no
/// callback panic reaches the cancel, every callback runs, and the runner
/// survives the payload's panic: callbacks still run afterwards.
#[test]
fn a_callback_panic_whose_payload_panics_on_drop_stops_no_callback_and_no_runner() {
    let (ctx, cancel) = Context::background().with_cancel();
    let calls = Calls::new();
    let (payload_dropped, payload_dropped_rx) = mpsc::channel();
    let mut registrations = vec![ctx.after_func(|| panic!("the first callback panics"))];
    for _ in 0..5 {
        registrations.push(ctx.after_func(calls.callback()));
    }
    registrations.push(
        ctx.after_func(move || std::panic::panic_any(SignalThenPanicOnDrop(payload_dropped))),
    );
    for _ in 0..5 {
        registrations.push(ctx.after_func(calls.callback()));
    }
    let result = catch_unwind(AssertUnwindSafe(|| cancel.cancel()));
    assert!(result.is_ok(), "a callback's panic reached the canceler");
    calls.wait_for(10);
    recv_within(&payload_dropped_rx, "the panic payload was dropped");
    // The runner carries on after the payload's panic.
    let (again, cancel_again) = Context::background().with_cancel();
    let later = Calls::new();
    let _later = again.after_func(later.callback());
    cancel_again.cancel();
    later.wait_for(1);
}

/// Set in the process that the next test starts: it runs the cancel there.
const UNWINDING_CANCEL: &str = "CTX_TEST_UNWINDING_CANCEL";

/// A cancel function dropped while its thread unwinds (a `defer cancel()`
/// in a body that panics) sets its callbacks off on the runner, where their
/// panics end; one whose payload panicked as it was dropped (on the unwinding
/// thread, in the old cancel) aborted the process. Run in a process of its own
/// (this test binary again), which it would take down; it waits there for the
/// payload's drop, and for a later callback.
#[test]
#[cfg_attr(miri, ignore = "Miri cannot run a process")]
fn a_callback_panic_after_an_unwinding_cancel_is_contained_even_if_its_payload_panics() {
    const NAME: &str =
        "a_callback_panic_after_an_unwinding_cancel_is_contained_even_if_its_payload_panics";
    if std::env::var_os(UNWINDING_CANCEL).is_some() {
        let (ctx, cancel) = Context::background().with_cancel();
        let (payload_dropped, payload_dropped_rx) = mpsc::channel();
        let _registration =
            ctx.after_func(move || std::panic::panic_any(SignalThenPanicOnDrop(payload_dropped)));
        let body = catch_unwind(AssertUnwindSafe(move || {
            let _cancel_at_the_end = cancel;
            panic!("the body fails");
        }));
        assert_eq!(panic_text(&*body.unwrap_err()), "the body fails");
        assert_eq!(ctx.err(), Some(Error::Canceled));
        recv_within(&payload_dropped_rx, "the panic payload was dropped");
        let (again, cancel_again) = Context::background().with_cancel();
        let later = Calls::new();
        let _later = again.after_func(later.callback());
        cancel_again.cancel();
        later.wait_for(1);
        return;
    }
    let run = support::rerun_in_own_process(NAME, UNWINDING_CANCEL);
    assert!(
        run.status.success(),
        "the process did not survive: {:?}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
}

// ===== a timer's expiry never unwinds into its backend =====

/// A waker that panics with a payload whose `Drop` panics too.
struct WakerPanicsWithAPanickingPayload;

impl std::task::Wake for WakerPanicsWithAPanickingPayload {
    fn wake(self: Arc<Self>) {
        std::panic::panic_any(PanicOnDrop);
    }
}

/// An expiry that ends a context without registrations (a leaf) wakes its
/// waiters on the backend's thread; one waker panics, with a payload whose
/// `Drop` panics too. Neither reaches the backend: its firing loop goes on,
/// and the next deadline it fires walks its own subtree. The old expiry
/// dropped the caught payload unguarded, so its panic unwound out of
/// `Expiry::fire` and stopped the loop.
#[test]
fn an_expiry_whose_waker_panics_with_a_payload_that_panics_on_drop_stops_no_firing_loop() {
    let timer = ManualTimer::new();
    let (first, _cancel_first) = timer.root().with_timeout(Duration::from_secs(1));
    let (second, _cancel_second) = timer.root().with_timeout(Duration::from_secs(2));
    let calls = Calls::new();
    let _registration = second.after_func(calls.callback());
    let waker = std::task::Waker::from(Arc::new(WakerPanicsWithAPanickingPayload));
    let mut done = first.done();
    assert!(
        std::future::Future::poll(
            std::pin::Pin::new(&mut done),
            &mut std::task::Context::from_waker(&waker),
        )
        .is_pending()
    );
    let fired = catch_unwind(AssertUnwindSafe(|| timer.advance(Duration::from_secs(3))));
    assert_eq!(
        fired.ok(),
        Some(2),
        "a panic escaped Expiry::fire into the backend's firing loop"
    );
    calls.wait_for(1);
}

// ===== a cancel's own cause whose Drop panics =====

/// A cause whose `Drop` panics (unless the thread unwinds already).
#[derive(Debug)]
struct CauseThatPanicsOnDrop;

impl std::fmt::Display for CauseThatPanicsOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a cause that panics on drop")
    }
}

impl std::error::Error for CauseThatPanicsOnDrop {}

impl Drop for CauseThatPanicsOnDrop {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("a cause's Drop panics");
        }
    }
}

/// A cancel that loses the race to another thread's (whose walk of a long
/// chain is still under way) drops its own cause, the last reference to it:
/// its `Drop` panics. The cancel still returns only with the whole subtree
/// done, and then resumes that panic. The old cancel dropped the cause before
/// it waited for the winner: the panic unwound out of it at once, the chain
/// below still live.
#[test]
#[cfg_attr(miri, ignore)] // a chain long enough to race a walk, and real threads
fn a_losing_cancel_whose_cause_panics_on_drop_returns_with_the_subtree_done() {
    const DEPTH: usize = 200_000;
    for _ in 0..3 {
        let (top, cancel_top) = Context::background().with_cancel_cause();
        let winner = cancel_top.canceler();
        let mut cancels = Vec::with_capacity(DEPTH);
        let mut ctx = top.clone();
        for _ in 0..DEPTH {
            let (child, cancel) = ctx.with_cancel();
            cancels.push(cancel);
            ctx = child;
        }
        let leaf = ctx;
        let (go, going) = mpsc::channel::<()>();
        let winning = thread::spawn(move || {
            going.recv().unwrap();
            winner.cancel();
        });
        go.send(()).unwrap();
        while !top.is_done() {
            std::hint::spin_loop();
        }
        // `top` is closed: this cancel lost, and drops its cause.
        let result = catch_unwind(AssertUnwindSafe(|| {
            cancel_top.cancel(CauseThatPanicsOnDrop);
        }));
        let leaf_done = leaf.is_done();
        winning.join().unwrap();
        let payload = result.expect_err("the cause's panic resurfaces from the cancel");
        assert_eq!(panic_text(&*payload), "a cause's Drop panics");
        assert!(
            leaf_done,
            "the losing cancel returned before the subtree was done"
        );
        drop(cancels);
    }
}

/// A context that a read closed (its deadline passed, its timer late), with
/// an `after_func` callback below it: a cancel by its own handle claims its
/// walk, and runs the callback, also when the cancel's cause (unused: the
/// deadline came first) panics as it is dropped. The old cancel dropped the
/// cause before its claim: the panic unwound out of it, and nothing walked
/// the subtree, so the callback never ran.
#[test]
fn a_cancel_of_a_context_a_read_closed_walks_it_even_if_its_cause_panics_on_drop() {
    let timer = ManualTimer::new();
    let (timed, cancel_timed) = timer.root().with_timeout(Duration::from_secs(1));
    let (child, _cancel_child) = timed.with_cancel();
    let calls = Calls::new();
    let _registration = child.after_func(calls.callback());
    timer.advance_silently(Duration::from_secs(2));
    assert_eq!(timed.err(), Some(Error::DeadlineExceeded));
    let canceler = cancel_timed.into_canceler();
    let result = catch_unwind(AssertUnwindSafe(|| {
        canceler.cancel_with_cause(CauseThatPanicsOnDrop)
    }));
    let payload = result.expect_err("the cause's panic resurfaces from the cancel");
    assert_eq!(panic_text(&*payload), "a cause's Drop panics");
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        timed.live_children(),
        0,
        "the read-closed context was never walked"
    );
    calls.wait_for(1);
}

// ===== another backend's blocking disarm holds back no callback =====

/// A deadline's expiry ends a subtree holding a deadline of another backend,
/// whose `disarm` blocks. The `after_func` callback of the context the expiry
/// ended runs all the same, while that `disarm` still blocks: it waits for no
/// other backend. The old expiry handed both to one runner job, which gave the
/// keys back first, so the callback waited for the blocked `disarm`.
#[test]
#[cfg_attr(miri, ignore)] // runner threads blocked in real time
fn another_backends_blocking_disarm_holds_back_no_callback_of_the_expired_context() {
    let (backend, entering, go) = BlockingDisarm::gated();
    let timer = ManualTimer::new();
    let (outer, _cancel_outer) = timer.root().with_timeout(Duration::from_secs(1));
    // Earlier than the outer deadline (the manual clock runs an hour
    // ahead), so a deadline of its own; its backend never fires.
    let (inner, _cancel_inner) = outer
        .with_timer(backend.clone())
        .with_timeout(Duration::from_secs(60));
    let calls = Calls::new();
    let _registration = outer.after_func(calls.callback());
    assert_eq!(timer.advance(Duration::from_secs(2)), 1);
    recv_within(
        &entering,
        "the inner deadline's key went back to its backend",
    );
    assert_eq!(inner.err(), Some(Error::DeadlineExceeded));
    // The other backend's disarm blocks now: the callback runs anyway.
    let ran = eventually(|| calls.get() == 1);
    go.send(()).unwrap();
    assert!(ran, "the callback waited for another backend's disarm");
}

/// `watch_and_cancel` with an `into_cause` that panics: the context ends with
/// a `PanicError` carrying the panic's message, as its docs say (not with the
/// "gone" cause of a future that never finished).
#[test]
fn watch_and_cancel_ends_the_context_with_a_panic_error_when_into_cause_panics() {
    use ctx_core::PanicError;
    use ctx_core::adapter::watch_and_cancel;
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let watch = watch_and_cancel(
        cancel.canceler(),
        async { "finished" },
        |_: &str| -> Cause { panic!("into_cause panics") },
        "gone",
    );
    // Whether the panic also comes out of the poll is not the point here.
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let mut watch = std::pin::pin!(watch);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while std::future::Future::poll(watch.as_mut(), &mut cx).is_pending() {}
    }));
    let cause = ctx.cause().expect("the context was not canceled");
    let panic = cause.downcast_ref::<PanicError>();
    assert!(panic.is_some(), "the cause is {cause:?}, not a PanicError");
    assert_eq!(panic.unwrap().message(), "into_cause panics");
}
