//! The tokio timer backend: the `Timer` contract (ctx-core's `timer::conformance`
//! kit, on a runtime that drives itself and on a paused one driven by the
//! kit), and what is tokio's own: paused time and auto-advance, the runtime's
//! clock on any thread, where deadlines fire, bursts, and a runtime that goes
//! away while contexts still use it.

mod support;

use ctx_core::testing::live_deadline;
use ctx_core::{Context, Error, Timer};
use ctx_tokio::{NoRuntime, TokioTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::eventually;

/// The contract on a multi-thread runtime, which drives itself: the kit's
/// thread only sleeps while the runtime's worker fires.
mod conformance_real_time {
    use ctx_core::timer::conformance::Harness;
    use ctx_tokio::TokioTimer;
    use std::sync::Arc;

    fn harness() -> Harness<TokioTimer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let runtime = Arc::new(runtime);
        Harness::new(move || TokioTimer::new(runtime.handle().clone())).armed(TokioTimer::armed)
    }

    ctx_core::timer_conformance_tests!(harness());
}

/// The contract on a paused current-thread runtime: its clock moves, and its
/// driver runs, only when the kit lets time pass with `tokio::time::advance`.
mod conformance_paused {
    use ctx_core::timer::conformance::Harness;
    use ctx_tokio::TokioTimer;

    fn harness() -> Harness<TokioTimer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        Harness::new(move || TokioTimer::new(handle.clone()))
            .pass(move |_, by| runtime.block_on(tokio::time::advance(by)))
            .armed(TokioTimer::armed)
    }

    ctx_core::timer_conformance_tests!(harness());
}

/// A root context on a fresh timer of the current runtime, and the timer.
fn root() -> (Context, Arc<TokioTimer>) {
    let timer = TokioTimer::current();
    (Context::background().with_timer(timer.clone()), timer)
}

/// Lets the driver task (and other spawned tasks) run.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// The async form of [`eventually`], yielding to the runtime between polls.
async fn eventually_async(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..100_000 {
        if condition() {
            return true;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_micros(100));
    }
    condition()
}

#[tokio::test(start_paused = true)]
async fn done_completes_by_auto_advance() {
    let (root, _timer) = root();
    let start = tokio::time::Instant::now();
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(3600));
    ctx.done().await;
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(start.elapsed() >= Duration::from_secs(3600));
    assert!(start.elapsed() < Duration::from_secs(3601));
}

#[tokio::test(start_paused = true)]
async fn expiry_runs_after_func_off_the_driver() {
    let (root, _timer) = root();
    let (ctx, _cancel) =
        root.with_timeout_cause(Duration::from_millis(5), ctx_core::Cause::msg("slow"));
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let _registration = ctx.after_func(move || flag.store(true, Ordering::SeqCst));
    tokio::time::sleep(Duration::from_millis(6)).await;
    settle().await;
    // The callback runs on ctx-core's runner, never on the driver task.
    assert!(eventually_async(|| ran.load(Ordering::SeqCst)).await);
    assert_eq!(ctx.cause().unwrap().to_string(), "slow");
}

#[tokio::test(start_paused = true)]
async fn nested_deadlines_fire_in_order() {
    let (root, timer) = root();
    let (outer, _c1) = root.with_timeout(Duration::from_secs(10));
    let (inner, _c2) = outer.with_timeout(Duration::from_secs(5));
    // A later child deadline is clamped to the parent's: no timer of its own.
    let (later, _c3) = outer.with_timeout(Duration::from_secs(20));
    assert_eq!(later.deadline(), outer.deadline());
    assert_eq!(timer.armed(), 2);
    inner.done().await;
    assert_eq!(outer.err(), None);
    assert_eq!(timer.armed(), 1);
    outer.done().await;
    assert_eq!(later.err(), Some(Error::DeadlineExceeded));
    assert_eq!(timer.armed(), 0);
}

/// An hour's timeout, let go of by `release` once the driver sleeps towards
/// it: the count drops to 0 and a paused runtime, idle on something that is
/// not a timer, does not auto-advance its clock to the released deadline.
async fn released_deadline_does_not_auto_advance_the_clock(
    release: impl FnOnce(ctx_core::Context, ctx_core::CancelFunc),
) {
    let (root, timer) = root();
    let start = tokio::time::Instant::now();
    let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
    settle().await; // the driver now sleeps towards the deadline
    release(ctx, cancel);
    assert_eq!(timer.armed(), 0);
    settle().await;
    // Wait on something that is not a timer: an idle paused runtime auto-advances
    // to its next timer, and there must be none left.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send(()).unwrap();
    });
    rx.await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "clock moved by {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn disarmed_deadline_does_not_auto_advance_the_clock() {
    released_deadline_does_not_auto_advance_the_clock(|_ctx, cancel| cancel.cancel()).await;
}

#[tokio::test(start_paused = true)]
async fn now_reads_the_runtime_clock_on_any_thread() {
    let (_root, timer) = root();
    tokio::time::advance(Duration::from_secs(7200)).await;
    let here = timer.now();
    assert_eq!(here, tokio::time::Instant::now().into_std());
    // A plain thread has no runtime context; the timer still reads *its* clock,
    // which is two hours ahead of the system clock.
    let there = std::thread::spawn(move || timer.now()).join().unwrap();
    assert_eq!(there, here);
    assert!(there > Instant::now() + Duration::from_secs(3600));
}

#[test]
fn outside_a_runtime_is_an_error_not_a_hang() {
    assert_eq!(TokioTimer::try_current().unwrap_err(), NoRuntime);
    assert_eq!(ctx_tokio::try_background().unwrap_err(), NoRuntime);
    assert_eq!(NoRuntime.to_string(), "not inside a tokio runtime");
    let message = panic_message(std::panic::catch_unwind(ctx_tokio::background).unwrap_err());
    assert!(message.contains("outside a tokio runtime"), "{message}");
    let message = panic_message(std::panic::catch_unwind(TokioTimer::current).unwrap_err());
    assert!(message.contains("try_current"), "{message}");
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload.downcast_ref::<&str>().unwrap().to_string(),
    }
}

/// The runtime is dropped while contexts still use its timer: the armed and later
/// deadlines are handed to ctx-core's `StdTimer` and keep firing on the system
/// clock; `now()` keeps working; nothing panics or hangs.
#[test]
fn runtime_dropped_while_contexts_are_live() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (root, timer, long, cancel_long, short, _cancel_short) = runtime.block_on(async {
        let (root, timer) = root();
        let (long, cancel_long) = root.with_timeout(Duration::from_secs(3600));
        let (short, cancel_short) = root.with_timeout(Duration::from_millis(100));
        settle().await; // the driver has taken both timers
        (root, timer, long, cancel_long, short, cancel_short)
    });
    assert!(!timer.is_closed());
    drop(runtime);
    assert!(timer.is_closed());
    assert_eq!(timer.armed(), 2);
    let before = timer.now();
    assert!(timer.now() >= before);

    // The handed-over timer fires; the blocking wait needs no runtime.
    assert!(short.wait_timeout(Duration::from_secs(5)));
    assert_eq!(short.err(), Some(Error::DeadlineExceeded));
    assert_eq!(long.err(), None);

    // New deadlines after the runtime is gone work too.
    let (late, _cancel_late) = root.with_timeout(Duration::from_millis(20));
    assert!(late.wait_timeout(Duration::from_secs(5)));
    assert_eq!(late.err(), Some(Error::DeadlineExceeded));

    cancel_long.cancel();
    assert_eq!(long.err(), Some(Error::Canceled));
    assert!(eventually(|| timer.armed() == 0));
}

/// A paused runtime dropped: its clock stays frozen where it was, so the
/// contexts stay live until canceled; nothing panics.
#[test]
fn paused_runtime_dropped_keeps_its_frozen_clock() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (timer, ctx, cancel) = runtime.block_on(async {
        let (root, timer) = root();
        let (expired, _cancel) = root.with_timeout(Duration::from_secs(3600));
        tokio::time::advance(Duration::from_secs(7200 * 24)).await;
        // The deadline passed by the paused clock, so it is already done.
        assert_eq!(expired.err(), Some(Error::DeadlineExceeded));
        let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
        (timer, ctx, cancel)
    });
    let frozen = timer.now();
    drop(runtime);
    assert_eq!(timer.now(), frozen);
    assert_eq!(ctx.err(), None);
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(timer.armed(), 0);
}

#[tokio::test]
async fn timer_debug_does_not_block() {
    let (_root, timer) = root();
    let text = format!("{timer:?}");
    assert!(text.starts_with("TokioTimer"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_churn_with_expiries_leaves_nothing_armed() {
    let (root, timer) = root();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            let mut expired = 0;
            for i in 0..2000u64 {
                if i % 100 == t {
                    // Some expire for real (a few ms), the rest are canceled early.
                    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1 + i % 3));
                    ctx.done().await;
                    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
                    expired += 1;
                } else {
                    let (ctx, cancel) = root.with_timeout(Duration::from_secs(60 + i));
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    cancel.cancel();
                    assert_eq!(ctx.err(), Some(Error::Canceled));
                }
            }
            expired
        }));
    }
    let mut expired = 0;
    for task in tasks {
        expired += task.await.unwrap();
    }
    assert_eq!(expired, 80);
    assert_eq!(timer.armed(), 0);
}

/// Threads keep arming and disarming while the runtime shuts down: every
/// command lands either with the driver or with the hand-over, nothing panics.
#[test]
fn arming_races_with_runtime_shutdown() {
    for _ in 0..8 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let timer = TokioTimer::new(runtime.handle().clone());
        let root = Context::background().with_timer(timer.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (root, stop, ops) = (root.clone(), stop.clone(), ops.clone());
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        ops.fetch_add(1, Ordering::SeqCst);
                        let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
                        if kept.len() < 50 {
                            kept.push((ctx, cancel));
                        }
                    }
                    kept
                })
            })
            .collect();
        while ops.load(Ordering::SeqCst) < 200 {
            std::thread::yield_now();
        }
        drop(runtime);
        std::thread::sleep(Duration::from_millis(1));
        stop.store(true, Ordering::SeqCst);
        let kept: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert!(timer.is_closed());
        assert_eq!(timer.armed(), kept.len());
        assert!(kept.iter().all(|(ctx, _)| ctx.err().is_none()));
        drop(kept);
        assert_eq!(timer.armed(), 0);
    }
}

/// A runtime dropped before its timer ever armed: the first `arm` finds it gone
/// and hands the deadline straight to the `StdTimer`.
#[test]
fn first_arm_after_the_runtime_is_gone() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let timer = TokioTimer::new(runtime.handle().clone());
    drop(runtime);
    let root = Context::background().with_timer(timer.clone());
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(10));
    assert!(timer.is_closed());
    assert_eq!(timer.armed(), 1);
    assert!(ctx.wait_timeout(Duration::from_secs(5)));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(eventually(|| timer.armed() == 0));
}

/// 200,000 contexts share one deadline: the driver fires them in batches and
/// yields in between, so another task on the same current-thread runtime runs
/// while the burst is still being fired (it sees a partial count), instead of
/// once after all of it.
#[tokio::test(start_paused = true)]
async fn a_burst_of_expiries_does_not_starve_the_runtime() {
    const N: usize = 200_000;
    let (root, timer) = root();
    let fired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let contexts: Vec<_> = (0..N)
        .map(|_| {
            let (ctx, cancel) = root.with_timeout(Duration::from_secs(1));
            let (fired, progress) = (fired.clone(), progress.clone());
            drop(ctx.after_func(move || {
                fired.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
            }));
            (ctx, cancel)
        })
        .collect();
    // Another task: each time it runs during the burst, it records the count.
    let observer = {
        let fired = fired.clone();
        tokio::spawn(async move {
            let mut partial = 0;
            loop {
                progress.notified().await;
                let seen = fired.load(Ordering::SeqCst);
                if seen == N {
                    return partial;
                }
                partial += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let partial = observer.await.unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), N);
    assert!(
        partial > N / 1024,
        "the observer ran only {partial} times during the burst"
    );
    let stats = timer.__stats();
    assert!(
        stats.max_fired_per_poll <= 128,
        "{} deadlines fired in one poll",
        stats.max_fired_per_poll
    );
    // (On a loaded machine the backstop may step in if this thread is
    // preempted for long; it fires by the same rule.)
    assert_eq!(stats.fired_on_runtime + stats.fired_by_backstop, N as u64);
    assert!(contexts.iter().all(|(ctx, _)| ctx.is_done()));
}

/// As documented on `TokioTimer`: on a runtime that is being driven, a
/// deadline fires on the runtime's own thread. (The backstop watches this
/// runtime too, but steps in only if the idle worker is kept off its CPU for
/// longer than the backstop's grace.)
#[test]
fn a_deadline_fires_on_the_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("the-runtime")
        .enable_all()
        .build()
        .unwrap();
    let name = runtime.block_on(async {
        let (root, _timer) = root();
        let (ctx, _cancel, report) = live_deadline(|timeout| root.with_timeout(timeout));
        ctx.done().await;
        report.thread_name(support::WATCHDOG).unwrap()
    });
    assert_eq!(name.as_deref(), Some("the-runtime"));
}

/// A disarm leaves its heap entry behind, but the sweeps keep the dead entries
/// to about as many as the live ones (plus a small floor per shard), so
/// threads canceling timeouts forever do not grow the timer, and the driver
/// never had to see them.
#[test]
fn canceled_timeouts_do_not_pile_up() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let timer = TokioTimer::new(runtime.handle().clone());
    let root = Context::background().with_timer(timer.clone());
    let kept: Vec<_> = (0..100)
        .map(|_| root.with_timeout(Duration::from_secs(3600)))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..50_000 {
                    let (_ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
                    cancel.cancel();
                }
            });
        }
    });
    assert_eq!(timer.armed(), 100);
    // At most 64 shards, each holding up to 64 entries before it is swept.
    let held = timer.__stats().heap_len;
    assert!(
        held <= 2 * 100 + 64 * 64,
        "{held} entries held for 100 live"
    );
    drop(kept);
    assert_eq!(timer.armed(), 0);
}

/// Deadlines under a current-thread runtime's timer made and read from a
/// thread-local's destructor, after tokio's own thread-locals are gone: the
/// timer's clock reading used to enter the runtime there, which panics (and
/// a panic in a thread-local's destructor aborts the process).
#[test]
fn a_deadline_made_in_a_thread_local_destructor_after_tokios_does_not_panic() {
    use std::cell::RefCell;
    use std::sync::mpsc;

    struct AtExit(Option<ctx_core::Context>, mpsc::Sender<bool>);
    impl Drop for AtExit {
        fn drop(&mut self) {
            let root = self.0.take().unwrap();
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (child, _cancel) = root.with_timeout(std::time::Duration::from_secs(60));
                child.err().is_none()
            }));
            let _ = self.1.send(matches!(made, Ok(true)));
        }
    }
    thread_local! {
        static AT_EXIT: RefCell<Option<AtExit>> = const { RefCell::new(None) };
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = runtime.block_on(async { ctx_tokio::background() });
    let (made, made_rx) = mpsc::channel();
    let handle = runtime.handle().clone();
    std::thread::spawn(move || {
        // Registered before tokio's context (entered next), so destroyed after it.
        AT_EXIT.with(|at_exit| *at_exit.borrow_mut() = Some(AtExit(Some(root), made)));
        let _enter = handle.enter();
    })
    .join()
    .unwrap();
    assert_eq!(
        made_rx.recv().ok(),
        Some(true),
        "with_timeout panicked (or the deadline was already past) in a thread-local's destructor"
    );
}

/// A deadline beyond the timer's range (its nanoseconds since the timer was
/// made overflow 64 bits: some 584 years) used to be stored at the end of the
/// range and fired there, centuries early, once paused time auto-advanced to
/// it. The contract allows late, never early.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_beyond_the_timers_range_never_fires_early() {
    const YEAR: u64 = 365 * 86_400;
    let root = ctx_tokio::background();
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(1000 * YEAR));
    let deadline = ctx.deadline().unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(700 * YEAR), ctx.done()).await;
    assert!(
        waited.is_err(),
        "done ({:?}) with the deadline still {} years away",
        ctx.err(),
        (deadline - tokio::time::Instant::now().into_std()).as_secs() / YEAR
    );
    assert_eq!(ctx.err(), None);
}

/// A timeout whose handles all go without a cancel (through a `Canceler`) is
/// disarmed too: a paused runtime does not auto-advance its clock to it.
#[tokio::test(start_paused = true)]
async fn dropped_uncanceled_deadline_does_not_auto_advance_the_clock() {
    released_deadline_does_not_auto_advance_the_clock(|ctx, cancel| {
        drop((ctx, cancel.into_canceler()))
    })
    .await;
}

/// What a `ReadOnDrop` saw: the read's answer, or its panic's message.
type Seen = Arc<std::sync::Mutex<Option<Result<Option<Error>, String>>>>;

/// Reads a context in its `Drop` (catching a panic, to report it) and records
/// what it saw.
struct ReadOnDrop(Context, Seen);

impl Drop for ReadOnDrop {
    fn drop(&mut self) {
        let ctx = self.0.clone();
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.err()));
        *self.1.lock().unwrap() = Some(read.map_err(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        }));
    }
}

/// Hands what it holds to `tokio::spawn` when dropped: on a runtime that shut
/// down, tokio drops that future right there, inside `spawn`.
struct SpawnOnDrop(Option<ReadOnDrop>);

impl Drop for SpawnOnDrop {
    fn drop(&mut self) {
        let held = self.0.take();
        drop(tokio::spawn(async move { drop(held) }));
    }
}

/// A read of a context on a current-thread runtime's timer, from a `Drop` that
/// `tokio::spawn` runs while it drops a future on a runtime that shut down (a
/// task's `Drop` spawning its cleanup, at shutdown), on that runtime or on
/// another one. The read entered the timer's runtime, which tokio forbids
/// there: it panicked ("already borrowed"), and the rest of that `Drop` was
/// lost. On the same runtime the read needs no entering; on another it falls
/// back to the system clock.
#[test]
fn a_read_from_a_future_tokio_spawn_drops_at_shutdown_does_not_panic() {
    for same_runtime in [true, false] {
        let timer_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ctx, cancel) = timer_rt
            .block_on(async { ctx_tokio::background().with_timeout(Duration::from_secs(3600)) });
        let seen = Arc::new(std::sync::Mutex::new(None));
        let guard = SpawnOnDrop(Some(ReadOnDrop(ctx, seen.clone())));
        let spawning_rt = if same_runtime {
            timer_rt
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        spawning_rt.block_on(async move {
            tokio::spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            });
            tokio::task::yield_now().await;
        });
        // The shutdown drops the task: `SpawnOnDrop` spawns, tokio drops that
        // future inside `spawn`, and `ReadOnDrop` reads.
        drop(spawning_rt);
        assert_eq!(
            *seen.lock().unwrap(),
            Some(Ok(None)),
            "same runtime: {same_runtime}"
        );
        drop(cancel);
    }
}

/// A spike of deadlines that fire together gives its heap slots back. Here the
/// driver fires in batches, so the expiries' disarms sweep the heap while it
/// is still long; the pass also shrinks a heap it emptied (ctx-core's
/// `StdTimer`, which pops a whole spike in one pass, kept its slots for good
/// without that).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn heaps_shrink_after_a_spike_that_fired() {
    const N: usize = 100_000;
    let timer = TokioTimer::current();
    let root = Context::background().with_timer(timer.clone());
    let contexts: Vec<_> = (0..N)
        .map(|_| root.with_timeout(Duration::from_secs(1)))
        .collect();
    assert!(timer.__stats().heap_capacity >= N);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The driver fires in batches, yielding in between.
    while timer.armed() != 0 || timer.__stats().heap_len != 0 {
        tokio::task::yield_now().await;
    }
    assert!(contexts.iter().all(|(ctx, _)| ctx.is_done()));
    let stats = timer.__stats();
    assert!(
        stats.heap_capacity < N / 8,
        "{} slots still allocated for {} entries, none armed",
        stats.heap_capacity,
        stats.heap_len
    );
}
