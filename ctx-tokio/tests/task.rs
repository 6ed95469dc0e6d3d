//! Task helpers: `run_until_done`, `sleep`, `spawn`, `after_func_spawn`,
//! `with_cancel_on`.

use ctx_core::{Cause, Error};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Sets its flag when dropped: shows that a future was dropped, not leaked.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A future that counts its polls and never completes.
struct Pending(Arc<AtomicUsize>);

impl Future for Pending {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Poll::Pending
    }
}

async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn run_until_done_returns_the_output_or_the_context_error() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    assert_eq!(ctx_tokio::run_until_done(&ctx, async { 5 }).await, Ok(5));

    let canceler = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
    });
    let start = Instant::now();
    let slow = ctx_tokio::run_until_done(&ctx, tokio::time::sleep(Duration::from_secs(60)));
    assert_eq!(slow.await, Err(Error::Canceled));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    canceler.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_until_done_on_a_done_context_never_polls() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    cancel.cancel();
    let polls = Arc::new(AtomicUsize::new(0));
    let result = ctx_tokio::run_until_done(&ctx, Pending(polls.clone())).await;
    assert_eq!(result, Err(Error::Canceled));
    assert_eq!(polls.load(Ordering::SeqCst), 0);
}

/// A value sent on a oneshot channel and a cancel in the same window (both
/// before the waiting task's next poll): the value is received, not dropped
/// with the future.
#[tokio::test]
async fn run_until_done_keeps_a_value_received_as_the_context_is_canceled() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    let mut receive = std::pin::pin!(ctx_tokio::run_until_done(&ctx, rx));
    let noop = &mut TaskContext::from_waker(std::task::Waker::noop());
    assert!(receive.as_mut().poll(noop).is_pending());
    tx.send(5).unwrap();
    cancel.cancel();
    assert_eq!(receive.as_mut().poll(noop), Poll::Ready(Ok(Ok(5))));
}

#[tokio::test(start_paused = true)]
async fn run_until_done_reports_the_deadline_and_drops_the_future() {
    let (ctx, _cancel) = ctx_tokio::background().with_timeout(Duration::from_millis(100));
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let work = async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    };
    // The future owns its context: it can be spawned as is.
    let result = tokio::spawn(ctx_tokio::run_until_done(&ctx, work))
        .await
        .unwrap();
    assert_eq!(result, Err(Error::DeadlineExceeded));
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn sleep_completes_or_is_interrupted() {
    let root = ctx_tokio::background();
    let start = Instant::now();
    assert_eq!(
        ctx_tokio::sleep(&root, Duration::from_secs(5)).await,
        Ok(())
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    // Interrupted by a cancel from another task, at the time of the cancel.
    let (ctx, cancel) = root.with_cancel();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cancel.cancel();
    });
    let start = Instant::now();
    assert_eq!(
        ctx_tokio::sleep(&ctx, Duration::from_secs(60)).await,
        Err(Error::Canceled)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // Interrupted by the context's deadline.
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(3));
    let start = Instant::now();
    assert_eq!(
        ctx_tokio::sleep(&ctx, Duration::from_secs(60)).await,
        Err(Error::DeadlineExceeded)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(3));

    // A sleep that ends exactly at the deadline reports the deadline.
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(3));
    assert_eq!(
        ctx_tokio::sleep(&ctx, Duration::from_secs(3)).await,
        Err(Error::DeadlineExceeded)
    );

    // sleep_until, and a context already done.
    let (ctx, cancel) = root.with_cancel();
    let until = Instant::now() + Duration::from_secs(1);
    assert_eq!(ctx_tokio::sleep_until(&ctx, until).await, Ok(()));
    cancel.cancel();
    assert_eq!(
        ctx_tokio::sleep_until(&ctx, until).await,
        Err(Error::Canceled)
    );
}

#[tokio::test(start_paused = true)]
async fn spawned_task_is_dropped_when_its_context_is_done() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let task = ctx_tokio::spawn(&ctx, async move {
        let _flag = flag;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "finished"
    });
    settle().await;
    assert!(!task.is_finished());
    cancel.cancel();
    let err = task.await.unwrap_err();
    assert_eq!(err.context_error(), Some(Error::Canceled));
    assert!(!err.is_panic());
    assert_eq!(err.to_string(), "task stopped: context canceled");
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn spawned_task_output_panic_and_abort() {
    let (ctx, _cancel) = ctx_tokio::background().with_timeout(Duration::from_secs(10));
    let ok = ctx_tokio::spawn(&ctx, async { 40 + 2 });
    assert_eq!(ok.await.unwrap(), 42);

    let panicking = ctx_tokio::spawn(&ctx, async {
        if ctx_core::Context::background().err().is_none() {
            panic!("task blew up");
        }
    });
    let err = panicking.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.context_error(), None);

    let aborted = ctx_tokio::spawn(&ctx, std::future::pending::<()>());
    aborted.abort();
    let err = aborted.await.unwrap_err();
    assert!(matches!(err, ctx_tokio::TaskError::Join(ref join) if join.is_cancelled()));

    let timed_out = ctx_tokio::spawn(&ctx, std::future::pending::<()>());
    assert!(format!("{timed_out:?}").starts_with("TaskHandle"));
    let err = timed_out.await.unwrap_err();
    assert_eq!(err.context_error(), Some(Error::DeadlineExceeded));
}

/// A future whose `poll` panics, and whose `Drop` panics too: dropped inside
/// the poll's unwind, it would abort the process.
/// Its output type is `T` (it never makes one).
struct PanicsInPollAndDrop<T = ()>(std::marker::PhantomData<T>);

/// A [`PanicsInPollAndDrop`] of output `T`.
fn panics_in_poll_and_drop<T>() -> PanicsInPollAndDrop<T> {
    PanicsInPollAndDrop(std::marker::PhantomData)
}

impl<T> Future for PanicsInPollAndDrop<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<T> {
        panic!("poll of the task's future");
    }
}

impl<T> Drop for PanicsInPollAndDrop<T> {
    fn drop(&mut self) {
        panic!("drop of the task's future");
    }
}

/// `with_cancel_on` and `with_cancel_cause_on` watching a future whose `poll`
/// and `Drop` both panic: the child is canceled with the first panic, and the
/// runtime goes on.
#[tokio::test]
async fn a_watched_future_whose_poll_and_drop_both_panic_cancels_with_the_first_panic() {
    let parent = ctx_tokio::background();
    let (on, _cancel_on) = ctx_tokio::with_cancel_on(&parent, panics_in_poll_and_drop::<()>());
    let (cause_on, _cancel_cause_on) =
        ctx_tokio::with_cancel_cause_on(&parent, panics_in_poll_and_drop::<Cause>());
    for ctx in [on, cause_on] {
        ctx.done().await;
        let cause = ctx.cause().expect("canceled");
        let panic = cause
            .downcast_ref::<ctx_core::PanicError>()
            .unwrap_or_else(|| panic!("not a PanicError: {cause}"));
        assert_eq!(panic.message(), "poll of the task's future");
    }
    assert_eq!(tokio::spawn(async { 7 }).await.unwrap(), 7);
}

/// An `after_func_spawn` callback whose future's `poll` and `Drop` both
/// panic: contained, and the runtime goes on.
#[tokio::test]
async fn an_after_func_spawn_callback_whose_poll_and_drop_both_panic_is_contained() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    let (ran, ran_rx) = tokio::sync::oneshot::channel();
    let _registration = ctx_tokio::after_func_spawn(&ctx, move || {
        let _ = ran.send(());
        panics_in_poll_and_drop()
    });
    cancel.cancel();
    ran_rx.await.expect("the callback ran");
    settle().await;
    assert_eq!(tokio::spawn(async { 7 }).await.unwrap(), 7);
}

/// A future whose `poll` and `Drop` both panic: the task ends with the first
/// panic, its payload in the `JoinError`, and the process lives on (tokio's
/// harness would drop the future inside the unwind, where the second panic
/// aborts).
#[tokio::test]
async fn a_task_whose_poll_and_drop_both_panic_ends_with_the_first_panic() {
    let (ctx, _cancel) = ctx_tokio::background().with_cancel();
    let err = ctx_tokio::spawn(&ctx, panics_in_poll_and_drop::<()>())
        .await
        .unwrap_err();
    let ctx_tokio::TaskError::Join(join) = err else {
        panic!("expected a panic, got {err:?}");
    };
    let payload = join.into_panic();
    assert_eq!(
        payload.downcast_ref::<&str>().copied(),
        Some("poll of the task's future")
    );
}

#[tokio::test]
async fn after_func_spawn_runs_the_callback_as_a_task() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let canceling_thread = std::thread::current().id();
    let _registration = ctx_tokio::after_func_spawn(&ctx, move || async move {
        tokio::task::yield_now().await;
        tx.send(std::thread::current().id()).unwrap();
    });
    // Cancel from a plain thread: the callback still runs on the runtime.
    std::thread::spawn(move || cancel.cancel()).join().unwrap();
    let ran_on = rx.await.unwrap();
    assert_eq!(
        ran_on, canceling_thread,
        "current-thread runtime runs it here"
    );
}

#[tokio::test]
async fn after_func_spawn_can_be_stopped_and_fires_at_once_when_done() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let registration = ctx_tokio::after_func_spawn(&ctx, move || async move {
        flag.store(true, Ordering::SeqCst);
    });
    assert!(registration.stop());
    cancel.cancel();
    settle().await;
    assert!(!ran.load(Ordering::SeqCst));

    // Already done: spawned right away.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _registration = ctx_tokio::after_func_spawn(&ctx, move || async move {
        tx.send(()).unwrap();
    });
    rx.await.unwrap();
}

#[tokio::test]
async fn after_func_spawn_blocking_runs_on_the_blocking_pool() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _registration = ctx_tokio::after_func_spawn_blocking(&ctx, move || {
        std::thread::sleep(Duration::from_millis(1));
        tx.send(std::thread::current().name().map(str::to_owned))
            .unwrap();
    });
    cancel.cancel();
    let name = rx.await.unwrap();
    assert_ne!(
        name.as_deref(),
        Some("after_func_spawn_blocking_runs_on_the_blocking_pool")
    );
}

#[tokio::test(start_paused = true)]
async fn with_cancel_on_cancels_when_the_future_completes() {
    let root = ctx_tokio::background();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ctx, _cancel) = ctx_tokio::with_cancel_on(&root, rx);
    settle().await;
    assert_eq!(ctx.err(), None);
    tx.send(()).unwrap();
    ctx.done().await;
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap(), Error::Canceled);

    // With a cause from the future's output.
    let (ctx, _cancel) = ctx_tokio::with_cancel_cause_on(&root, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Cause::msg("upstream closed")
    });
    ctx.done().await;
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap().to_string(), "upstream closed");
}

#[tokio::test(start_paused = true)]
async fn with_cancel_on_drops_the_watch_when_canceled_otherwise() {
    let (parent, cancel_parent) = ctx_tokio::background().with_cancel();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let (ctx, _cancel) = ctx_tokio::with_cancel_on(&parent, async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    });
    settle().await;
    assert!(!dropped.load(Ordering::SeqCst));
    cancel_parent.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    settle().await;
    assert!(dropped.load(Ordering::SeqCst), "the watching task ended");
    assert_eq!(parent.live_children(), 0);

    // The returned CancelFunc cancels as usual.
    let (ctx, cancel) =
        ctx_tokio::with_cancel_on(&ctx_tokio::background(), std::future::pending::<()>());
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn with_cancel_on_is_canceled_when_its_runtime_shuts_down() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ctx, _cancel) = runtime.block_on(async {
        ctx_tokio::with_cancel_on(&ctx_tokio::background(), std::future::pending::<()>())
    });
    assert_eq!(ctx.err(), None);
    drop(runtime);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(ctx.cause().unwrap().to_string().contains("shut down"));
}

/// A watched future that panics is not a runtime shutdown: the child is canceled
/// with a `PanicError` carrying the panic message, and the runtime goes on.
#[tokio::test]
async fn with_cancel_on_reports_a_panicking_future_as_a_panic() {
    let root = ctx_tokio::background();
    let (ctx, _cancel) = ctx_tokio::with_cancel_on(&root, async {
        tokio::task::yield_now().await;
        panic!("watch {} broke", 7);
    });
    ctx.done().await;
    assert_eq!(ctx.err(), Some(Error::Canceled));
    let cause = ctx.cause().unwrap();
    let panic = cause
        .downcast_ref::<ctx_core::PanicError>()
        .unwrap_or_else(|| panic!("the cause is a PanicError, not {cause:?}"));
    assert_eq!(panic.message(), "watch 7 broke");

    // The same through `with_cancel_cause_on`, panicking on the first poll.
    let (ctx, _cancel) = ctx_tokio::with_cancel_cause_on(&root, async {
        if Arc::new(1).as_ref() == &1 {
            panic!("no cause for you");
        }
        Cause::msg("unreachable")
    });
    ctx.done().await;
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause
            .downcast_ref::<ctx_core::PanicError>()
            .map(|p| p.message()),
        Some("no cause for you")
    );
    // The runtime is fine: its timer still works.
    let (late, _cancel) = root.with_timeout(Duration::from_millis(1));
    late.done().await;
}
