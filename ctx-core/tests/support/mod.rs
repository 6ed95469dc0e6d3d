//! Helpers shared by the integration tests: test timers, a seeded random number
//! generator, drop and call counters, and iteration counts scaled for Miri.
//!
//! Every test binary includes this module with `mod support;` and uses only part
//! of it, hence the `dead_code` allowance.

#![allow(dead_code)]

use ctx_core::{Context, Expiry, Timer, TimerKey};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Picks the iteration count for a native run or a Miri run (Miri interprets the
/// program about a thousand times slower, so loops there must stay short).
pub(crate) const fn scaled(native: usize, miri: usize) -> usize {
    if cfg!(miri) { miri } else { native }
}

/// The root for tests whose deadlines expire in real time.
///
/// Natively this is `background()`, so the built-in timer thread does the firing.
/// Under Miri the built-in thread would outlive the test binary (which Miri
/// reports), so a clock-only backend is installed instead: it never fires, but
/// deadlines are exact, so `err()` and `wait()` still see them pass.
pub(crate) fn real_time_root() -> Context {
    if cfg!(miri) {
        Context::background().with_timer(Arc::new(ClockOnlyTimer))
    } else {
        Context::background()
    }
}

/// A timer backend that tells the real time and never fires anything.
#[derive(Debug)]
pub(crate) struct ClockOnlyTimer;

impl Timer for ClockOnlyTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn arm(&self, _deadline: Instant, _expiry: Expiry) -> Option<TimerKey> {
        None
    }

    fn disarm(&self, _key: TimerKey) {}
}

/// A timer backend with a clock that moves only when the test says so.
///
/// Armed deadlines are kept in a list; [`ManualTimer::advance`] moves the clock
/// and fires the ones that became due, earliest first, as a real timer would.
/// [`ManualTimer::advance_silently`] moves the clock without firing anything, to
/// play a timer that is late.
#[derive(Debug)]
pub(crate) struct ManualTimer {
    now: Mutex<Instant>,
    armed: Mutex<Vec<(u64, Instant, Expiry)>>,
    next_key: AtomicU64,
    arms: AtomicUsize,
    disarms: AtomicUsize,
}

impl ManualTimer {
    /// A timer whose clock starts an hour after the real clock, so that tests can
    /// go back in time from it without underflowing `Instant`.
    pub(crate) fn new() -> Arc<ManualTimer> {
        Arc::new(ManualTimer {
            now: Mutex::new(Instant::now() + Duration::from_secs(3600)),
            armed: Mutex::new(Vec::new()),
            next_key: AtomicU64::new(1),
            arms: AtomicUsize::new(0),
            disarms: AtomicUsize::new(0),
        })
    }

    /// `background()` with this timer installed for the whole subtree.
    pub(crate) fn root(self: &Arc<Self>) -> Context {
        Context::background().with_timer(self.clone())
    }

    /// Moves the clock forward by `by` and fires every armed deadline that is now
    /// due, earliest first; returns how many were fired.
    pub(crate) fn advance(&self, by: Duration) -> usize {
        let now = self.advance_silently(by);
        let mut due: Vec<(u64, Instant, Expiry)> = {
            let mut armed = self.armed.lock().unwrap();
            let (due, rest) = armed.drain(..).partition(|(_, at, _)| *at <= now);
            *armed = rest;
            due
        };
        due.sort_by_key(|(key, at, _)| (*at, *key));
        let fired = due.len();
        // The lock is released: firing cancels, and canceling disarms.
        for (_, _, expiry) in due {
            expiry.fire();
        }
        fired
    }

    /// Moves the clock forward by `by` without firing anything; returns the new time.
    pub(crate) fn advance_silently(&self, by: Duration) -> Instant {
        let mut now = self.now.lock().unwrap();
        *now += by;
        *now
    }

    /// Plays a backend that breaks the [`Timer`] contract: it drops, unfired,
    /// every armed expiry whose context already reports done (the evidence
    /// `Timer::arm` warns against). Returns how many it dropped.
    pub(crate) fn drop_expiries_of_done_contexts(&self) -> usize {
        // The contexts read are dropped after the lock: the last handle's drop
        // disarms (this backend's lock again).
        let mut read = Vec::new();
        let dropped: Vec<(u64, Instant, Expiry)> = {
            let mut armed = self.armed.lock().unwrap();
            let (done, rest) = armed.drain(..).partition(|(_, _, expiry)| {
                let ctx = expiry.context();
                let done = ctx.as_ref().is_none_or(|ctx| ctx.is_done());
                read.extend(ctx);
                done
            });
            *armed = rest;
            done
        };
        drop(read);
        dropped.len()
    }

    /// How many deadlines are armed and neither fired nor disarmed.
    pub(crate) fn armed(&self) -> usize {
        self.armed.lock().unwrap().len()
    }

    /// How many times `arm` was called.
    pub(crate) fn arms(&self) -> usize {
        self.arms.load(Ordering::SeqCst)
    }

    /// How many times `disarm` was called.
    pub(crate) fn disarms(&self) -> usize {
        self.disarms.load(Ordering::SeqCst)
    }
}

impl Timer for ManualTimer {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap()
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        self.arms.fetch_add(1, Ordering::SeqCst);
        let key = self.next_key.fetch_add(1, Ordering::SeqCst);
        self.armed.lock().unwrap().push((key, deadline, expiry));
        Some(TimerKey::new(NonZeroU64::new(key).unwrap()))
    }

    fn disarm(&self, key: TimerKey) {
        self.disarms.fetch_add(1, Ordering::SeqCst);
        let removed = {
            let mut armed = self.armed.lock().unwrap();
            armed
                .iter()
                .position(|(k, _, _)| *k == key.get().get())
                .map(|index| armed.remove(index))
        };
        // The expiry is dropped outside the lock: dropping it may free a node.
        drop(removed);
    }
}

/// A value that records when it is dropped: stored in a context, it tells whether
/// the context's node (and so everything it keeps alive) was freed.
#[derive(Debug)]
pub(crate) struct DropFlag(pub(crate) Arc<AtomicBool>);

impl DropFlag {
    /// A fresh flag and the handle that reads it.
    pub(crate) fn new() -> (DropFlag, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (DropFlag(flag.clone()), flag)
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// How long a test waits for something that must happen (a callback on the
/// runner, a value freed there): a watchdog against hangs, never a timing
/// assertion. A passing run waits only as long as the thing takes.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(30);

/// A shared call counter for `after_func` callbacks.
///
/// Callbacks run on ctx-core's runner threads, never on the thread that
/// canceled: a test that expects runs waits for them with [`Calls::wait_for`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Calls(Arc<(Mutex<usize>, Condvar)>);

impl Calls {
    pub(crate) fn new() -> Calls {
        Calls::default()
    }

    /// A callback that counts one call each time it runs.
    pub(crate) fn callback(&self) -> impl FnOnce() + Send + 'static {
        let calls = self.clone();
        move || {
            let (count, changed) = &*calls.0;
            *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            changed.notify_all();
        }
    }

    /// How many times the callbacks made by [`Calls::callback`] ran so far.
    pub(crate) fn get(&self) -> usize {
        *self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the callbacks ran `n` times in all, then checks that they
    /// ran no more than that; panics if they have not got there within
    /// [`WATCHDOG`] (a callback that never runs).
    #[track_caller]
    pub(crate) fn wait_for(&self, n: usize) {
        let (count, changed) = &*self.0;
        let guard = count.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = changed
            .wait_timeout_while(guard, WATCHDOG, |ran| *ran < n)
            .unwrap_or_else(|e| e.into_inner());
        let ran = *guard;
        drop(guard);
        assert!(
            ran >= n,
            "the callbacks ran {ran} times, not {n}, within {WATCHDOG:?}"
        );
        assert_eq!(ran, n, "the callbacks ran more often than expected");
    }
}

/// How many jobs this thread handed to ctx-core's runner so far (with the
/// `test-util` hooks; without them, nothing to compare: always 0).
pub(crate) fn runner_jobs() -> usize {
    #[cfg(feature = "test-util")]
    return ctx_core::testing::runner_jobs_handed_over();
    #[cfg(not(feature = "test-util"))]
    0
}

/// Receives from `rx`, or panics naming `what` if nothing came within
/// [`WATCHDOG`] (a watchdog against hangs, not a timing assertion).
#[track_caller]
pub(crate) fn recv_within<T>(rx: &std::sync::mpsc::Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(WATCHDOG) {
        Ok(value) => value,
        Err(err) => panic!("{what}: nothing within {WATCHDOG:?} ({err})"),
    }
}

/// Waits until `flag` is set, or panics naming `what` after [`WATCHDOG`]:
/// for a [`DropFlag`] whose value is freed on another thread (a callback's
/// captured state, dropped on the runner once the callback ran).
#[track_caller]
pub(crate) fn wait_until_set(flag: &AtomicBool, what: &str) {
    assert!(
        eventually(|| flag.load(Ordering::SeqCst)),
        "{what}: not within {WATCHDOG:?}"
    );
}

/// A backend that keeps every expiry armed on it and never fires by itself
/// (a test takes an expiry out to fire or revive it).
#[allow(dead_code)] // not every test binary uses it
#[derive(Debug, Default)]
pub(crate) struct KeepExpiries(pub(crate) Mutex<Vec<Expiry>>);

impl Timer for KeepExpiries {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn arm(&self, _deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        self.0.lock().unwrap().push(expiry);
        None
    }
    fn disarm(&self, _key: TimerKey) {}
}

/// A small seeded random number generator (SplitMix64): deterministic, so a
/// failing seed can be replayed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` must be positive).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// Polls `condition` until it holds or [`WATCHDOG`] passes (a watchdog against
/// hangs, not a timing assertion); true if it held. It yields before it
/// sleeps, so that what it waits for, often already under way, ends the wait
/// at once.
#[allow(dead_code)]
pub(crate) fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + WATCHDOG;
    let mut polls = 0u32;
    while Instant::now() < give_up {
        if condition() {
            return true;
        }
        if polls < 100 {
            polls += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    condition()
}

/// A waker that records whether it was woken, for polling a future by hand.
#[allow(dead_code)]
#[derive(Debug, Default)]
pub(crate) struct WakeFlag(AtomicBool);

#[allow(dead_code)]
impl WakeFlag {
    pub(crate) fn new() -> Arc<WakeFlag> {
        Arc::new(WakeFlag::default())
    }

    /// Whether any waker made from this flag was woken.
    pub(crate) fn woken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Polls `future` once with a waker that sets this flag.
    pub(crate) fn poll<F: std::future::Future + Unpin>(
        self: &Arc<Self>,
        future: &mut F,
    ) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::from(self.clone());
        std::pin::Pin::new(future).poll(&mut std::task::Context::from_waker(&waker))
    }
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `f` on a thread of its own and returns its result, or panics naming
/// `what` if it has not finished after 30 s (a watchdog against deadlocks, not a
/// timing assertion; the stuck thread is left behind). A panic in `f` is resumed.
#[allow(dead_code)]
pub(crate) fn within_watchdog<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let result = f();
        let _ = tx.send(());
        result
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => match worker.join() {
            Ok(result) => result,
            Err(payload) => std::panic::resume_unwind(payload),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(_) => unreachable!("the worker sends before it returns"),
            Err(payload) => std::panic::resume_unwind(payload),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: {what} did not finish within 30 s (deadlock or hang)")
        }
    }
}

/// Runs the test `name` again, alone, in a process of its own (this test
/// binary, with `flag` set in its environment), for what could take the
/// process down or needs what happens once per process; returns how that
/// process ended. The test checks `flag` first, and runs its body there.
pub(crate) fn rerun_in_own_process(name: &str, flag: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(flag, "1")
        .output()
        .expect("the test binary runs again")
}

// ===== child processes =====

#[cfg(unix)]
/// Runs `child` in a forked child process and returns its exit status (the
/// status `child` returns; 101 if it panicked), or `None` if it was killed
/// after hanging for a minute.
pub(crate) fn in_forked_child_status(child: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: the child only runs Rust code that allocates and starts threads
    // and ends with `_exit`. The C library keeps its allocator usable in a
    // forked child even when other threads of the parent were allocating at
    // the fork (glibc takes its arena locks across it), and the library's
    // own locks are its fork handlers' business, which these tests check.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(status) };
    }
    wait_for_child(pid)
}

#[cfg(unix)]
/// Waits for the child `pid` and returns its exit status, or `None` if it was
/// killed, or killed here after hanging for a minute (a child that hangs fails
/// the test instead of hanging it).
pub(crate) fn wait_for_child(pid: libc::pid_t) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if waited == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        assert_eq!(waited, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: `pid` is our child, still running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
