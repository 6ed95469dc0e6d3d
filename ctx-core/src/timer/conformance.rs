//! The [`Timer`] contract as a test kit: checks any backend can run, ours and
//! third-party ones, as tokio ships its clock for tests in `test-util`.
//!
//! Available with the `test-util` feature. It is a testing hook: exempt from
//! semver, so checks may be added, tightened or renamed in any release (a
//! backend that passes today may fail a stricter kit tomorrow, which is the
//! point). Enable it in `[dev-dependencies]` only.
//!
//! # Use
//!
//! Describe the backend with a [`Harness`]: how to make a fresh instance, how
//! to let time pass while the backend is driven (the default sleeps the
//! thread, for a backend that fires on its own thread or runtime), and
//! optionally how to read how many timers it holds. Then either generate one
//! `#[test]` per check with [`timer_conformance_tests!`](crate::timer_conformance_tests),
//! or call [`check`] (all checks) or a single check from a test of your own.
//!
//! ```
//! use ctx_core::timer::StdTimer;
//! use ctx_core::timer::conformance::{self, Harness};
//!
//! let harness = Harness::new(StdTimer::new).armed(|timer: &StdTimer| timer.armed());
//! conformance::fires_at_or_after_the_deadline(&harness);
//! ```
//!
//! A backend that needs a runtime to be driven runs the kit from a plain
//! thread: with a runtime that drives itself (a multi-thread one), the default
//! `pass` is enough; with a runtime that is driven only from the test thread
//! (a current-thread one, paused time), `pass` drives it, for example
//! `|_, d| runtime.block_on(tokio::time::advance(d))`.
//!
//! # How firing is observed
//!
//! Not by reading the context: a read that finds the deadline passed reports
//! `DeadlineExceeded` on its own, before the backend did anything (exact
//! deadlines), and would wake the context's waiters itself. The kit reads no
//! context it watches until the backend has fired it, and observes the firing
//! through what only [`Expiry::fire`] triggers:
//!
//! * a waker parked on the context's `done()`, which the cancel `fire` performs
//!   wakes on the firing thread: it records the backend's [`now`](Timer::now)
//!   at that moment, and whether the firing thread is inside [`Timer::arm`];
//! * an [`after_func`](Context::after_func) callback, which runs on ctx-core's
//!   runner threads a moment later: the kit waits for it, driving the backend,
//!   up to a generous watchdog (a hang, never a slow machine, fails a check).
//!
//! Every check wraps the backend in a transparent recorder (the *spy*) that
//! counts `arm` calls, the keys they returned, and `disarm` calls. A context
//! whose deadline passed while the kit was still registering its observers is
//! discarded and made again with a longer timeout, so no check depends on the
//! machine's speed.
//!
//! # The checks
//!
//! Each function below is one check; its documentation says what it asserts.
//! All of them also assert, at the end, the promise the tree makes to a
//! backend, with this backend: every key `arm` returned is disarmed, exactly
//! once, by the time the kit's contexts are done (never more often); and, with
//! [`Harness::armed`], that the backend then holds no timer any more.

#![cfg(feature = "test-util")]
#![cfg_attr(docsrs, doc(cfg(feature = "test-util")))]

use super::{Expiry, Timer, TimerKey};
use crate::after_func::AfterFunc;
use crate::cancel_funcs::CancelFunc;
use crate::context::Context;
use crate::error::Error;
use crate::waiter::Done;
use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// How the kit reaches a backend: making one, letting its time pass, and
/// (optionally) counting what it holds.
///
/// Available with the `test-util` feature; see the [module docs](self).
pub struct Harness<T> {
    make: Box<dyn Fn() -> Arc<T>>,
    pass: Box<Pass<T>>,
    armed: Option<Box<Armed<T>>>,
    watchdog: Duration,
}

/// Lets time pass on a backend (see [`Harness::pass`]).
type Pass<T> = dyn Fn(&T, Duration);

/// Counts what a backend holds (see [`Harness::armed`]).
type Armed<T> = dyn Fn(&T) -> usize;

impl<T: Timer> Harness<T> {
    /// A harness for backends made by `make`, each call a fresh instance that
    /// nothing else holds (not a process-wide one: the checks count what it
    /// holds and watch it being freed).
    ///
    /// Time passes by sleeping the thread, which suits a backend that fires on
    /// its own thread or on a runtime that drives itself; see
    /// [`pass`](Harness::pass) for the others.
    pub fn new(make: impl Fn() -> Arc<T> + 'static) -> Harness<T> {
        Harness {
            make: Box::new(make),
            pass: Box::new(|_, by| thread::sleep(by)),
            armed: None,
            watchdog: Duration::from_secs(60),
        }
    }

    /// How to let `by` of the backend's time pass while driving it: a manual
    /// clock advances and fires what is due; a current-thread runtime is
    /// driven (`block_on` of its own sleep). The kit calls it from the thread
    /// that runs the check only, in small steps, whenever it waits for the
    /// backend; afterwards the backend's clock must have moved by at least `by`
    /// (checked by [`clock_is_monotonic`]).
    pub fn pass(mut self, pass: impl Fn(&T, Duration) + 'static) -> Harness<T> {
        self.pass = Box::new(pass);
        self
    }

    /// How many timers the backend holds (armed, and neither disarmed nor
    /// fired and released). With it, every check also asserts that the count
    /// returns to 0 once the kit's contexts are done: nothing leaks.
    pub fn armed(mut self, armed: impl Fn(&T) -> usize + 'static) -> Harness<T> {
        self.armed = Some(Box::new(armed));
        self
    }

    /// How long the kit waits for the backend before it calls a check failed
    /// (60 seconds unless set): generous, so that only a backend that never
    /// fires (or hangs) fails, never a slow machine.
    pub fn watchdog(mut self, watchdog: Duration) -> Harness<T> {
        self.watchdog = watchdog;
        self
    }
}

impl<T> fmt::Debug for Harness<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("backend", &std::any::type_name::<T>())
            .field("armed", &self.armed.is_some())
            .field("watchdog", &self.watchdog)
            .finish_non_exhaustive()
    }
}

/// Runs every check below, in the order they are listed.
///
/// A failing check panics with a message that names the broken rule.
pub fn check<T: Timer>(harness: &Harness<T>) {
    clock_is_monotonic(harness);
    deadlines_read_the_clock(harness);
    fires_at_or_after_the_deadline(harness);
    never_fires_inside_arm(harness);
    late_disarm_is_harmless(harness);
    disarm_spares_the_others_and_releases_its_own(harness);
    far_deadlines_are_accepted(harness);
    arms_and_disarms_from_many_threads(harness);
    lives_as_long_as_its_contexts(harness);
}

/// `now` is monotonic, on every thread and across threads: four threads read
/// it many times, each read no earlier than the thread's previous one, nor
/// than any read another thread made before (ordered by a lock). And the
/// harness's [`pass`](Harness::pass) moves the clock by at least what it is
/// asked to (else every other check would wait for nothing).
pub fn clock_is_monotonic<T: Timer>(harness: &Harness<T>) {
    const THREADS: usize = 4;
    const READS: usize = 2_000;
    let timer = (harness.make)();
    let last = Mutex::new(timer.now());
    let results: Vec<Result<(), String>> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut previous = timer.now();
                    for _ in 0..READS {
                        let now = timer.now();
                        if now < previous {
                            return Err(format!("now() went back by {:?}", previous - now));
                        }
                        previous = now;
                        let mut last = lock(&last);
                        let now = timer.now();
                        if now < *last {
                            return Err(format!(
                                "now() went back by {:?} behind another thread's earlier read",
                                *last - now
                            ));
                        }
                        *last = now;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for result in results {
        if let Err(message) = result {
            panic!("the clock is not monotonic: {message}");
        }
    }
    let step = Duration::from_millis(10);
    let before = timer.now();
    (harness.pass)(&timer, step);
    let moved = timer.now().saturating_duration_since(before);
    assert!(
        moved >= step,
        "the harness's pass({step:?}) moved the backend's clock by only {moved:?}"
    );
}

/// Deadlines are set and checked on the backend's clock: `with_timeout(d)`
/// gets a deadline `d` after the backend's `now()`, and a deadline that the
/// backend's clock has reached is born done without `arm` being called.
pub fn deadlines_read_the_clock<T: Timer>(harness: &Harness<T>) {
    let env = Env::new(harness);
    let hour = Duration::from_secs(3600);
    let before = env.now();
    let (ctx, cancel) = env.root.with_timeout(hour);
    let after = env.now();
    let deadline = ctx.deadline().expect("a timeout sets a deadline");
    assert!(
        before + hour <= deadline && deadline <= after + hour,
        "with_timeout(1h) read another clock than the backend's: the deadline is {:?} from its now()",
        deadline.saturating_duration_since(before)
    );
    let arms = env.spy.log().arms;
    let now = env.now();
    let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
    for at in [now, past] {
        let (ctx, _cancel) = env.root.with_deadline(at);
        let err = ctx.err();
        assert_eq!(
            err,
            Some(Error::DeadlineExceeded),
            "a reached deadline is born done"
        );
    }
    assert_eq!(
        env.spy.log().arms,
        arms,
        "a deadline the backend's clock has reached must not be armed"
    );
    drop((ctx, cancel));
    env.finish();
}

/// The core of the contract: every armed deadline fires, at or after its
/// deadline by the backend's clock, never before. Seven deadlines from 1 ms
/// to 21 ms ahead are armed; each must fire within the watchdog, and when it
/// fires the backend's `now()` must have reached it. A fired context then
/// reports `DeadlineExceeded`.
pub fn fires_at_or_after_the_deadline<T: Timer>(harness: &Harness<T>) {
    let env = Env::new(harness);
    let probes: Vec<Probe> = [1, 2, 3, 5, 8, 13, 21]
        .into_iter()
        .map(|ms| env.probe(Duration::from_millis(ms), Early::Checked))
        .collect();
    env.wait_fired(&probes, "a deadline");
    for probe in &probes {
        assert_eq!(probe.ctx.err(), Some(Error::DeadlineExceeded));
    }
    drop(probes);
    env.finish();
}

/// `arm` never calls [`Expiry::fire`] itself, not even for a deadline that is
/// already due when it is called (the tree checks the clock before arming,
/// but time moves on): such a deadline must be fired a moment later, from
/// the backend's own thread or task. The spy hands the backend deadlines
/// that are exactly due and some that are a second past, each watched while
/// `arm` runs; every one must fire, none inside `arm` (neither its own nor
/// another deadline's).
pub fn never_fires_inside_arm<T: Timer>(harness: &Harness<T>) {
    let env = Env::new(harness);
    let mut probes = Vec::new();
    for rewrite in [Rewrite::DueNow, Rewrite::Past] {
        lock(&env.spy.log).rewrite = rewrite;
        for _ in 0..4 {
            probes.push(env.probe(Duration::from_secs(3600), Early::Expected));
        }
    }
    lock(&env.spy.log).rewrite = Rewrite::None;
    env.wait_fired(&probes, "a deadline that was due when armed");
    drop(probes);
    env.finish();
}

/// A `disarm` that arrives after its timer fired does nothing harmful, even
/// when newer timers were armed in between (a backend that reuses keys must
/// not disarm the newer timer that got the old key). The spy holds back the
/// disarm the tree sends when deadline A fires, arms B (short) and C (an hour
/// ahead), then delivers A's disarm: B must still fire, and C must not.
pub fn late_disarm_is_harmless<T: Timer>(harness: &Harness<T>) {
    let env = Env::new(harness);
    lock(&env.spy.log).hold = true;
    let a = env.probe(Duration::from_millis(5), Early::Checked);
    env.wait_fired(std::slice::from_ref(&a), "deadline A");
    env.eventually("the disarm of fired deadline A", || {
        let log = env.spy.log();
        log.disarms == log.keyed
    });
    let b = env.probe(Duration::from_millis(5), Early::Checked);
    let c = env.probe(Duration::from_secs(3600), Early::Checked);
    lock(&env.spy.log).hold = false;
    env.spy.release_held();
    env.wait_fired(
        std::slice::from_ref(&b),
        "deadline B, armed before A's late disarm",
    );
    assert!(
        !c.fired(),
        "deadline C, an hour ahead, fired after A's late disarm"
    );
    drop((a, b, c));
    env.finish();
}

/// Disarming releases the timer it names and no other. Of 32 deadlines 10 to
/// 41 ms ahead, every other one is canceled before it is due; the rest must
/// still fire. Then 10,000 timeouts canceled at once, and 1,000 children of a
/// parent that is canceled, must leave the backend holding nothing (with
/// [`Harness::armed`]; without it, the spy's count of disarms).
pub fn disarm_spares_the_others_and_releases_its_own<T: Timer>(harness: &Harness<T>) {
    let env = Env::new(harness);
    let mut kept = Vec::new();
    for ms in 10..42 {
        let probe = env.probe(Duration::from_millis(ms), Early::Checked);
        if ms % 2 == 0 {
            kept.push(probe);
        } else {
            probe.cancel();
        }
    }
    env.wait_fired(&kept, "a deadline whose neighbours were disarmed");
    drop(kept);
    for _ in 0..10_000 {
        let (_ctx, cancel) = env.root.with_timeout(Duration::from_secs(60));
        cancel.cancel();
    }
    let (parent, cancel_parent) = env.root.with_cancel();
    let children: Vec<_> = (0..1_000)
        .map(|_| parent.with_timeout(Duration::from_secs(60)))
        .collect();
    cancel_parent.cancel();
    drop(children);
    env.finish();
}

/// Deadlines far in the future are accepted: `with_timeout(Duration::MAX)`
/// (saturated by the tree) and a deadline a century ahead are armed without a
/// panic, and do not fire (no overflow into "now") while a 5 ms deadline
/// armed after them does; canceling them disarms them.
pub fn far_deadlines_are_accepted<T: Timer>(harness: &Harness<T>) {
    let env = Env::new(harness);
    let century = Duration::from_secs(100 * 365 * 86_400);
    let endless = env.probe(Duration::MAX, Early::Checked);
    let far = env.probe(century, Early::Checked);
    let near = env.probe(Duration::from_millis(5), Early::Checked);
    env.wait_fired(
        std::slice::from_ref(&near),
        "a near deadline armed after far ones",
    );
    assert!(!endless.fired(), "with_timeout(Duration::MAX) fired");
    assert!(!far.fired(), "a deadline a century ahead fired");
    endless.cancel();
    far.cancel();
    drop(near);
    env.finish();
}

/// `arm` and `disarm` may be called from many threads at once. Four threads
/// each arm 250 deadlines: every fourth is kept, 1 to 4 ms ahead, and must
/// fire; the others are an hour ahead and canceled right away (some after a
/// yield, so that disarms race with other threads' arms and with firing).
pub fn arms_and_disarms_from_many_threads<T: Timer>(harness: &Harness<T>) {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 250;
    let env = Env::new(harness);
    let kept: Vec<Probe> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let contexts = &env.contexts;
                s.spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..PER_THREAD {
                        if i % 4 == t % 4 {
                            let ms = 1 + (i + t) % 4;
                            let timeout = Duration::from_millis(ms);
                            kept.push(contexts.probe(timeout, Early::Checked));
                        } else {
                            let (_ctx, cancel) =
                                contexts.root.with_timeout(Duration::from_secs(3600 + i));
                            if i % 7 == 0 {
                                thread::yield_now();
                            }
                            cancel.cancel();
                        }
                    }
                    kept
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    env.wait_fired(&kept, "a deadline armed among other threads' arms");
    drop(kept);
    env.finish();
}

/// The contexts keep their backend alive, and nothing else does: with every
/// other handle on it dropped, a deadline still fires; once the contexts are
/// gone, the backend is freed (its thread or task holds no strong reference
/// to it, so it cannot leak).
pub fn lives_as_long_as_its_contexts<T: Timer>(harness: &Harness<T>) {
    let timer = (harness.make)();
    let weak = Arc::downgrade(&timer);
    let env = Env {
        harness,
        timer: Backend::Weak(weak.clone()),
        contexts: Contexts::new(timer),
    };
    let (long, cancel_long) = env.root.with_timeout(Duration::from_secs(3600));
    let short = env.probe(Duration::from_millis(5), Early::Checked);
    env.wait_fired(
        std::slice::from_ref(&short),
        "a deadline of a backend only contexts hold",
    );
    cancel_long.cancel();
    drop((long, short));
    env.finish();
    let waited = Instant::now();
    while weak.strong_count() > 0 {
        assert!(
            waited.elapsed() < harness.watchdog,
            "the backend is still alive {:?} after its last context was dropped: \
             something it started holds a strong reference to it",
            harness.watchdog
        );
        thread::sleep(STEP);
    }
}

/// Generates one `#[test]` per check of
/// [`timer::conformance`](crate::timer::conformance), for the
/// [`Harness`] the expression makes (it is
/// evaluated afresh in each test). Invoke it once per module.
///
/// Available with the `test-util` feature.
///
/// In a test file (here the generated tests only compile: a doctest is not
/// built with `--test`):
///
/// ```
/// /// ctx-core's own backend, in real time.
/// mod std_timer {
///     ctx_core::timer_conformance_tests!(
///         ctx_core::timer::conformance::Harness::new(ctx_core::timer::StdTimer::new)
///             .armed(|timer: &ctx_core::timer::StdTimer| timer.armed())
///     );
/// }
/// # fn main() {}
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
#[macro_export]
macro_rules! timer_conformance_tests {
    ($harness:expr) => {
        $crate::__timer_conformance_tests!(
            $harness;
            clock_is_monotonic,
            deadlines_read_the_clock,
            fires_at_or_after_the_deadline,
            never_fires_inside_arm,
            late_disarm_is_harmless,
            disarm_spares_the_others_and_releases_its_own,
            far_deadlines_are_accepted,
            arms_and_disarms_from_many_threads,
            lives_as_long_as_its_contexts,
        );
    };
}

/// The expansion of [`timer_conformance_tests!`]; not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __timer_conformance_tests {
    ($harness:expr; $($check:ident,)*) => {$(
        #[test]
        fn $check() {
            $crate::timer::conformance::$check(&$harness);
        }
    )*};
}

// ===== the kit's machinery =====

/// How often the kit looks while it waits for the backend.
const STEP: Duration = Duration::from_millis(1);

thread_local! {
    /// Whether this thread is inside the spy's call of the backend's `arm`.
    static INSIDE_ARM: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one check works with: the harness, the backend, and the contexts.
struct Env<'h, T> {
    harness: &'h Harness<T>,
    timer: Backend<T>,
    contexts: Contexts<T>,
}

/// The spy around the backend, and a root context whose subtree uses it: what
/// the threads of a check share.
struct Contexts<T> {
    spy: Arc<Spy<T>>,
    root: Context,
}

/// The kit's handle on the backend: strong, except in the check that watches
/// it being freed.
enum Backend<T> {
    Strong(Arc<T>),
    Weak(Weak<T>),
}

impl<'h, T: Timer> Env<'h, T> {
    fn new(harness: &'h Harness<T>) -> Env<'h, T> {
        let timer = (harness.make)();
        Env {
            harness,
            timer: Backend::Strong(timer.clone()),
            contexts: Contexts::new(timer),
        }
    }

    /// Lets a step of the backend's time pass (if it is still alive).
    fn pass(&self) {
        match &self.timer {
            Backend::Strong(timer) => (self.harness.pass)(timer, STEP),
            Backend::Weak(weak) => match weak.upgrade() {
                Some(timer) => (self.harness.pass)(&timer, STEP),
                None => thread::sleep(STEP),
            },
        }
    }

    /// Waits until `condition` holds, letting the backend's time pass; fails
    /// the check after the watchdog.
    fn eventually(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let started = Instant::now();
        while !condition() {
            if started.elapsed() > self.harness.watchdog {
                self.spy.assert_no_violations();
                panic!(
                    "{what}: not seen within the watchdog ({:?})",
                    self.harness.watchdog
                );
            }
            self.pass();
        }
    }

    /// Waits until every probe's context was fired by the backend, then checks
    /// how it was fired.
    fn wait_fired(&self, probes: &[Probe], what: &str) {
        self.eventually(&format!("{what} never fired"), || {
            probes.iter().all(|probe| probe.ran.get().is_some())
        });
        self.spy.assert_no_violations();
        for probe in probes {
            assert!(
                probe.fired(),
                "a fired context's done() waiter was not woken by the firing"
            );
        }
    }

    /// Ends a check: every key disarmed exactly once, the backend holds
    /// nothing, no rule was broken. The check's contexts must be done.
    fn finish(self) {
        self.spy.release_held();
        lock(&self.spy.log).hold = false;
        self.eventually("a disarm for every key arm returned", || {
            let log = self.spy.log();
            log.disarms == log.keyed
        });
        if let (Some(armed), Backend::Strong(timer)) = (&self.harness.armed, &self.timer) {
            self.eventually("the backend's armed count back to 0", || armed(timer) == 0);
        }
        self.spy.assert_no_violations();
    }
}

impl<T> std::ops::Deref for Env<'_, T> {
    type Target = Contexts<T>;

    fn deref(&self) -> &Contexts<T> {
        &self.contexts
    }
}

impl<T: Timer> Contexts<T> {
    fn new(timer: Arc<T>) -> Contexts<T> {
        let spy = Arc::new(Spy::new(timer));
        Contexts {
            root: Context::background().with_timer(spy.clone()),
            spy,
        }
    }

    fn now(&self) -> Instant {
        self.spy.now()
    }

    /// A context with a timeout of `timeout` on the spy, watched (see
    /// [`Probe`]). If the deadline passed while the observers were being
    /// registered, a read may have ended the context instead of the backend:
    /// that one is discarded and made again with twice the timeout.
    fn probe(&self, mut timeout: Duration, early: Early) -> Probe {
        loop {
            let (ctx, cancel) = self.root.with_timeout(timeout);
            let probe = Probe::new(ctx, cancel, self.spy.clone(), early);
            if early == Early::Expected || self.now() < probe.deadline {
                return probe;
            }
            probe.cancel();
            timeout = timeout.saturating_mul(2);
        }
    }
}

/// Whether a probe's firing is checked against its deadline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Early {
    /// The context's deadline is what the backend was given: firing before it
    /// breaks the contract.
    Checked,
    /// The spy gave the backend an earlier deadline than the context's.
    Expected,
}

/// A deadline context and what the kit watches it with (module docs).
struct Probe {
    ctx: Context,
    /// Cancels the context when the probe is dropped (marked as the kit's).
    _cancel: CancelFunc,
    deadline: Instant,
    /// Set when the done() waker is woken: the backend's clock then.
    woken: Arc<OnceLock<Instant>>,
    /// Set when the after_func callback ran.
    ran: Arc<OnceLock<()>>,
    /// Set before the kit cancels the context itself.
    by_kit: Arc<OnceLock<()>>,
    _done: Done,
    _after: AfterFunc,
}

impl Probe {
    fn new<T: Timer>(ctx: Context, cancel: CancelFunc, spy: Arc<Spy<T>>, early: Early) -> Probe {
        let deadline = ctx.deadline().expect("a deadline context");
        let woken = Arc::new(OnceLock::new());
        let by_kit = Arc::new(OnceLock::new());
        let on_wake = {
            let (woken, by_kit) = (woken.clone(), by_kit.clone());
            move || {
                if by_kit.get().is_some() {
                    return;
                }
                let now = spy.now();
                if woken.set(now).is_err() {
                    return;
                }
                if INSIDE_ARM.get() {
                    spy.violation("Expiry::fire was called from inside Timer::arm".into());
                }
                if early == Early::Checked && now < deadline {
                    spy.violation(format!(
                        "a deadline fired {:?} before it was due (by the backend's clock)",
                        deadline - now
                    ));
                }
            }
        };
        let done = watch(&ctx, on_wake);
        let ran = Arc::new(OnceLock::new());
        let flag = ran.clone();
        let after = ctx.after_func(move || {
            let _ = flag.set(());
        });
        Probe {
            ctx,
            _cancel: cancel,
            deadline,
            woken,
            ran,
            by_kit,
            _done: done,
            _after: after,
        }
    }

    /// Whether the backend fired the context (its done() waiter was woken).
    fn fired(&self) -> bool {
        self.woken.get().is_some()
    }

    /// Cancels the context (which does not count as firing).
    fn cancel(self) {
        drop(self);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Before the fields: the cancel that dropping `_cancel` makes is ours.
        let _ = self.by_kit.set(());
    }
}

/// Parks a waker on `ctx.done()` that calls `woken` when woken (at once if
/// the context is already done). Keep the `Done` to keep the waker parked.
fn watch(ctx: &Context, woken: impl Fn() + Send + Sync + 'static) -> Done {
    let waker = crate::wake_fn::on_wake(woken);
    let (done, pending) = crate::wake_fn::park(ctx, &waker);
    if !pending {
        waker.wake();
    }
    done
}

/// What the spy hands the backend instead of the deadline it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rewrite {
    /// The deadline itself.
    None,
    /// The backend's `now()`: due at once.
    DueNow,
    /// A second before the backend's `now()`.
    Past,
}

/// The transparent recorder around the backend (module docs).
struct Spy<T> {
    inner: Arc<T>,
    log: Mutex<Log>,
}

struct Log {
    /// Calls of `arm`.
    arms: usize,
    /// Calls of `arm` that returned a key.
    keyed: usize,
    /// Calls of `disarm`.
    disarms: usize,
    /// Whether disarms are held back instead of delivered.
    hold: bool,
    held: Vec<TimerKey>,
    rewrite: Rewrite,
    /// Broken rules seen on other threads, reported by the check's thread.
    violations: Vec<String>,
}

/// A copy of the counts.
struct Counts {
    arms: usize,
    keyed: usize,
    disarms: usize,
}

impl<T: Timer> Spy<T> {
    fn new(inner: Arc<T>) -> Spy<T> {
        Spy {
            inner,
            log: Mutex::new(Log {
                arms: 0,
                keyed: 0,
                disarms: 0,
                hold: false,
                held: Vec::new(),
                rewrite: Rewrite::None,
                violations: Vec::new(),
            }),
        }
    }

    fn log(&self) -> Counts {
        let log = lock(&self.log);
        Counts {
            arms: log.arms,
            keyed: log.keyed,
            disarms: log.disarms,
        }
    }

    fn violation(&self, message: String) {
        lock(&self.log).violations.push(message);
    }

    fn assert_no_violations(&self) {
        let violations = std::mem::take(&mut lock(&self.log).violations);
        if let Some(first) = violations.first() {
            panic!(
                "the Timer contract is broken: {first} ({} violation(s) in all)",
                violations.len()
            );
        }
    }

    /// Delivers the disarms held back so far.
    fn release_held(&self) {
        let held = std::mem::take(&mut lock(&self.log).held);
        for key in held {
            self.inner.disarm(key);
        }
    }
}

impl<T: Timer> Timer for Spy<T> {
    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        let rewrite = lock(&self.log).rewrite;
        let deadline = match rewrite {
            Rewrite::None => deadline,
            Rewrite::DueNow => self.inner.now(),
            Rewrite::Past => {
                let now = self.inner.now();
                now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
            }
        };
        // Watches this context while the backend's `arm` runs: a firing then
        // wakes it inside `arm`, which the probes' wakers report too.
        let watched = expiry.context().map(|ctx| {
            let fired_inside = Arc::new(OnceLock::new());
            let flag = fired_inside.clone();
            let done = watch(&ctx, move || {
                if INSIDE_ARM.get() {
                    let _ = flag.set(());
                }
            });
            (done, fired_inside)
        });
        let key = {
            let _inside = InsideArm::enter();
            self.inner.arm(deadline, expiry)
        };
        if let Some((done, fired_inside)) = watched {
            drop(done);
            if fired_inside.get().is_some() {
                self.violation("Expiry::fire was called from inside Timer::arm".into());
            }
        }
        let mut log = lock(&self.log);
        log.arms += 1;
        log.keyed += usize::from(key.is_some());
        key
    }

    fn disarm(&self, key: TimerKey) {
        let mut log = lock(&self.log);
        log.disarms += 1;
        if log.disarms > log.keyed {
            let message = format!(
                "disarm was called {} times for {} keys (the tree's promise: once per key)",
                log.disarms, log.keyed
            );
            log.violations.push(message);
        }
        if log.hold {
            log.held.push(key);
            return;
        }
        drop(log);
        self.inner.disarm(key);
    }
}

impl<T> fmt::Debug for Spy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spy")
            .field("backend", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// Marks the thread as inside the backend's `arm` while it lives.
struct InsideArm(bool);

impl InsideArm {
    fn enter() -> InsideArm {
        InsideArm(INSIDE_ARM.replace(true))
    }
}

impl Drop for InsideArm {
    fn drop(&mut self) {
        INSIDE_ARM.set(self.0);
    }
}
