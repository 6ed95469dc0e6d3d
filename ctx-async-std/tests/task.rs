//! `run_until_done`, `sleep`, `spawn`, `after_func_spawn` and `with_cancel_on`,
//! on async-std and on smol.

#[macro_use]
mod support;

use ctx_async_std::{
    TaskError, after_func_spawn, after_func_spawn_blocking, background, run_until_done, sleep,
    sleep_until, spawn, with_cancel_cause_on, with_cancel_on,
};
use ctx_core::{Cause, Error};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

on_both!(
    run_until_done_returns_the_output,
    run_until_done_stops_at_cancel,
    run_until_done_never_polls_when_already_done,
    sleep_completes,
    sleep_is_interrupted_by_cancel,
    sleep_is_interrupted_by_a_deadline,
    sleep_duration_max_waits_for_the_context,
    sleep_until_a_deadline,
    spawned_task_panic_is_an_error,
    run_until_done_accepts_into_future,
    spawned_task_returns_its_output,
    spawned_task_stops_at_cancel,
    a_spawned_task_runs_no_more_of_its_future_once_its_context_is_done,
    dropped_join_handle_detaches,
    after_func_spawn_runs_as_a_task,
    after_func_spawn_stop_prevents_the_run,
    after_func_spawn_blocking_runs_off_the_canceling_thread,
    with_cancel_on_cancels_when_the_future_completes,
    with_cancel_on_drops_the_future_when_canceled_otherwise,
    with_cancel_on_reports_a_panicking_future_as_a_panic,
);

async fn run_until_done_returns_the_output() {
    let (ctx, _cancel) = background().with_cancel();
    assert_eq!(run_until_done(&ctx, async { 42 }).await, Ok(42));
}

async fn run_until_done_stops_at_cancel() {
    let (ctx, cancel) = background().with_cancel();
    let canceler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        cancel.cancel();
    });
    let result = run_until_done(&ctx, std::future::pending::<()>()).await;
    assert_eq!(result, Err(Error::Canceled));
    canceler.join().unwrap();
}

async fn run_until_done_never_polls_when_already_done() {
    let (ctx, cancel) = background().with_cancel();
    cancel.cancel();
    let polled = AtomicBool::new(false);
    let result = run_until_done(&ctx, async { polled.store(true, Ordering::SeqCst) }).await;
    assert_eq!(result, Err(Error::Canceled));
    assert!(!polled.load(Ordering::SeqCst));
}

async fn sleep_completes() {
    let (ctx, _cancel) = background().with_cancel();
    let start = Instant::now();
    assert_eq!(sleep(&ctx, Duration::from_millis(20)).await, Ok(()));
    assert!(start.elapsed() >= Duration::from_millis(20));
}

async fn sleep_is_interrupted_by_cancel() {
    let (ctx, cancel) = background().with_cancel_cause();
    let start = Instant::now();
    let canceler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        cancel.cancel(Cause::msg("enough"));
    });
    assert_eq!(
        sleep(&ctx, Duration::from_secs(3600)).await,
        Err(Error::Canceled)
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(ctx.cause().unwrap().to_string(), "enough");
    canceler.join().unwrap();
}

async fn sleep_is_interrupted_by_a_deadline() {
    // Taken before the deadline is set, which is 30 ms after a later instant.
    let start = Instant::now();
    let (ctx, _cancel) = background().with_timeout(Duration::from_millis(30));
    let result = sleep(&ctx, Duration::from_secs(3600)).await;
    assert_eq!(result, Err(Error::DeadlineExceeded));
    assert!((Duration::from_millis(30)..Duration::from_secs(2)).contains(&start.elapsed()));
}

async fn sleep_duration_max_waits_for_the_context() {
    let (ctx, _cancel) = background().with_timeout(Duration::from_millis(10));
    assert_eq!(
        sleep(&ctx, Duration::MAX).await,
        Err(Error::DeadlineExceeded)
    );
}

async fn spawned_task_returns_its_output() {
    let (ctx, _cancel) = background().with_cancel();
    let task = spawn(&ctx, async { "done" });
    assert_eq!(task.await.unwrap(), "done");
}

async fn spawned_task_stops_at_cancel() {
    let (ctx, cancel) = background().with_cancel();
    let task = spawn(&ctx, std::future::pending::<()>());
    assert!(!task.is_finished());
    cancel.cancel();
    let err = task.await.unwrap_err();
    assert_eq!(err.context_error(), Some(Error::Canceled));
    assert!(!err.is_panic());
    assert_eq!(err.to_string(), "task stopped: context canceled");
}

/// A task reads its context before every poll of its future (as ctx-tokio's
/// `spawn`): a future that cancels its own context and would be ready at its
/// next poll is not polled again.
async fn a_spawned_task_runs_no_more_of_its_future_once_its_context_is_done() {
    let (ctx, cancel) = background().with_cancel();
    let mut cancel = Some(cancel);
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = polls.clone();
    let task = spawn(
        &ctx,
        std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            match cancel.take() {
                Some(cancel) => {
                    cancel.cancel();
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
                None => std::task::Poll::Ready("output"),
            }
        }),
    );
    let err = task.await.unwrap_err();
    assert_eq!(err.context_error(), Some(Error::Canceled));
    assert_eq!(polls.load(Ordering::SeqCst), 1);
}

async fn dropped_join_handle_detaches() {
    let (ctx, _cancel) = background().with_cancel();
    let (tx, rx) = smol::channel::bounded(1);
    drop(spawn(&ctx, async move {
        smol::Timer::after(Duration::from_millis(10)).await;
        tx.send(()).await.unwrap();
    }));
    rx.recv().await.expect("the detached task ran to the end");
}

async fn after_func_spawn_runs_as_a_task() {
    let (ctx, cancel) = background().with_cancel();
    let (tx, rx) = smol::channel::bounded(1);
    let canceling = std::thread::current().id();
    let _registration = after_func_spawn(&ctx, move || async move {
        tx.send(std::thread::current().id()).await.unwrap();
    });
    cancel.cancel();
    let ran_on = rx.recv().await.unwrap();
    assert_ne!(
        ran_on, canceling,
        "the callback runs as its own task, not inline"
    );
}

async fn after_func_spawn_stop_prevents_the_run() {
    let (ctx, cancel) = background().with_cancel();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let registration = after_func_spawn(&ctx, move || async move {
        flag.store(true, Ordering::SeqCst);
    });
    assert!(registration.stop());
    cancel.cancel();
    smol::Timer::after(Duration::from_millis(20)).await;
    assert!(!ran.load(Ordering::SeqCst));
}

async fn sleep_until_a_deadline() {
    let (ctx, cancel) = background().with_cancel();
    let start = Instant::now();
    assert_eq!(
        sleep_until(&ctx, start + Duration::from_millis(20)).await,
        Ok(())
    );
    assert!(start.elapsed() >= Duration::from_millis(20));
    cancel.cancel();
    assert_eq!(
        sleep_until(&ctx, start + Duration::from_secs(3600)).await,
        Err(Error::Canceled)
    );
}

async fn spawned_task_panic_is_an_error() {
    let (ctx, _cancel) = background().with_cancel();
    let task = spawn(&ctx, async {
        if true {
            panic!("task blew up");
        }
    });
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.context_error(), None);
    assert_eq!(err.to_string(), "task panicked: task blew up");
}

async fn run_until_done_accepts_into_future() {
    struct Ready(u8);
    impl std::future::IntoFuture for Ready {
        type Output = u8;
        type IntoFuture = std::future::Ready<u8>;
        fn into_future(self) -> Self::IntoFuture {
            std::future::ready(self.0)
        }
    }
    let (ctx, _cancel) = background().with_cancel();
    assert_eq!(run_until_done(&ctx, Ready(3)).await, Ok(3));
}

async fn after_func_spawn_blocking_runs_off_the_canceling_thread() {
    let (ctx, cancel) = background().with_cancel();
    let (tx, rx) = smol::channel::bounded(1);
    let canceling = std::thread::current().id();
    let _registration = after_func_spawn_blocking(&ctx, move || {
        tx.send_blocking(std::thread::current().id()).unwrap();
    });
    cancel.cancel();
    assert_ne!(rx.recv().await.unwrap(), canceling);
}

async fn with_cancel_on_cancels_when_the_future_completes() {
    let (tx, rx) = smol::channel::bounded::<()>(1);
    let (ctx, _cancel) = with_cancel_on(&background(), async move { rx.recv().await });
    assert_eq!(ctx.err(), None);
    tx.send(()).await.unwrap();
    ctx.done().await;
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap(), Error::Canceled);

    let (ctx, _cancel) = with_cancel_cause_on(&background(), async { Cause::msg("reloaded") });
    ctx.done().await;
    assert_eq!(ctx.cause().unwrap().to_string(), "reloaded");
}

async fn with_cancel_on_drops_the_future_when_canceled_otherwise() {
    let (parent, cancel_parent) = background().with_cancel();
    let (dropped_tx, dropped_rx) = smol::channel::bounded::<()>(1);
    let (ctx, _cancel) = with_cancel_on(&parent, async move {
        let _dropped = dropped_tx; // closes the channel when the future is dropped
        std::future::pending::<()>().await;
    });
    cancel_parent.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(
        dropped_rx.recv().await.is_err(),
        "the watched future was dropped"
    );

    let (ctx, cancel) = with_cancel_on(&background(), std::future::pending::<()>());
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

/// A watched future that panics: the child is canceled with a `PanicError`
/// carrying the panic message.
async fn with_cancel_on_reports_a_panicking_future_as_a_panic() {
    let (ctx, _cancel) = with_cancel_on(&background(), async {
        smol::future::yield_now().await;
        panic!("watch {} broke", 7);
    });
    ctx.done().await;
    assert_eq!(ctx.err(), Some(Error::Canceled));
    let cause = ctx.cause().unwrap();
    let panic = cause
        .downcast_ref::<ctx_async_std::PanicError>()
        .unwrap_or_else(|| panic!("the cause is a PanicError, not {cause:?}"));
    assert_eq!(panic.message(), "watch 7 broke");

    let (ctx, _cancel) = with_cancel_cause_on(&background(), async {
        if Arc::new(1).as_ref() == &1 {
            panic!("no cause for you");
        }
        Cause::msg("unreachable")
    });
    ctx.done().await;
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause
            .downcast_ref::<ctx_async_std::PanicError>()
            .map(|p| p.message()),
        Some("no cause for you")
    );
}

/// Panics when dropped: a guard in a task's body.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the task's future panics as it is dropped");
    }
}

/// A task stopped by its context drops its future where it stopped; a
/// panic in that drop is the task's panic (`TaskError::Panic`), not one that
/// reaches whoever awaits the handle.
#[test]
fn a_panic_while_a_stopped_task_drops_its_future_is_a_task_panic() {
    let (ctx, cancel) = background().with_cancel();
    let (started, started_rx) = std::sync::mpsc::channel();
    let task = spawn(&ctx, async move {
        let _guard = PanicsOnDrop;
        started.send(()).unwrap();
        std::future::pending::<()>().await;
    });
    started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the task started");
    cancel.cancel();
    let awaited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| smol::block_on(task)));
    match awaited {
        Ok(Err(TaskError::Panic(panic))) => {
            assert!(
                panic.to_string().contains("panics as it is dropped"),
                "{panic}"
            );
        }
        Ok(other) => panic!("expected TaskError::Panic, got {other:?}"),
        Err(_) => panic!("awaiting the handle panicked: the task's panic got out"),
    }
}

/// A future whose `poll` panics and whose `Drop` panics too: the task ends
/// with the first panic (`TaskError::Panic`), and the process lives on (the
/// future is dropped after the unwind, under the task's guard, not during
/// it, where a second panic would abort).
#[test]
fn a_task_whose_poll_and_drop_both_panic_ends_with_the_first_panic() {
    let (ctx, _cancel) = background().with_cancel();
    let task = spawn(&ctx, panics_in_poll_and_drop::<()>());
    match smol::block_on(task) {
        Err(TaskError::Panic(panic)) => {
            assert!(
                panic.to_string().contains("poll of the task's future"),
                "{panic}"
            );
        }
        other => panic!("expected TaskError::Panic, got {other:?}"),
    }
}

/// A detached task whose output panics as it is dropped: the panic is
/// contained (the executor would drop it where a panic aborts the process),
/// and the executor goes on running tasks.
#[test]
fn a_detached_tasks_output_that_panics_as_it_is_dropped_is_contained() {
    struct PanicsOnDrop(std::sync::mpsc::Sender<()>);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(());
            panic!("the output panics as it is dropped");
        }
    }
    let (dropped, dropped_rx) = std::sync::mpsc::channel();
    let (go, go_rx) = smol::channel::bounded::<()>(1);
    let (ctx, _cancel) = background().with_cancel();
    drop(spawn(&ctx, async move {
        go_rx.recv().await.unwrap();
        PanicsOnDrop(dropped)
    }));
    smol::block_on(go.send(())).unwrap();
    dropped_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the detached task ended and its output was dropped");
    let after = spawn(&ctx, async { "still running" });
    assert_eq!(smol::block_on(after).unwrap(), "still running");
}

/// A future whose `poll` panics, and whose `Drop` panics too: dropped inside
/// the poll's unwind, it would abort the process. Its output type is `T` (it
/// never makes one).
/// Its `Drop` tells `dropped`, if any, before it panics.
struct PanicsInPollAndDrop<T>(
    std::marker::PhantomData<T>,
    Option<std::sync::mpsc::Sender<()>>,
);

fn panics_in_poll_and_drop<T>() -> PanicsInPollAndDrop<T> {
    PanicsInPollAndDrop(std::marker::PhantomData, None)
}

impl<T> std::future::Future for PanicsInPollAndDrop<T> {
    type Output = T;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        panic!("poll of the task's future");
    }
}

impl<T> Drop for PanicsInPollAndDrop<T> {
    fn drop(&mut self) {
        if let Some(dropped) = self.1.take() {
            let _ = dropped.send(());
        }
        panic!("drop of the task's future");
    }
}

/// A panic payload whose own `Drop` panics (after telling `dropped`):
/// dropped by an executor under its abort-on-panic guard, it would abort the
/// process.
struct PanickyPayload(std::sync::mpsc::Sender<()>);

impl Drop for PanickyPayload {
    fn drop(&mut self) {
        let _ = self.0.send(());
        panic!("drop of the panic's payload");
    }
}

/// `with_cancel_on` and `with_cancel_cause_on` watching a future whose `poll`
/// and `Drop` both panic: the child is canceled with the first panic.
#[test]
fn a_watched_future_whose_poll_and_drop_both_panic_cancels_with_the_first_panic() {
    let parent = background();
    let (on, _cancel_on) = with_cancel_on(&parent, panics_in_poll_and_drop::<()>());
    let (cause_on, _cancel_cause_on) =
        with_cancel_cause_on(&parent, panics_in_poll_and_drop::<Cause>());
    for ctx in [on, cause_on] {
        assert!(ctx.wait_timeout(Duration::from_secs(30)), "canceled");
        let cause = ctx.cause().expect("canceled");
        let panic = cause
            .downcast_ref::<ctx_core::PanicError>()
            .unwrap_or_else(|| panic!("not a PanicError: {cause}"));
        assert_eq!(panic.message(), "poll of the task's future");
    }
}

/// `after_func_spawn` callbacks that fail badly (a future whose `poll` and
/// `Drop` both panic; a panic whose payload's `Drop` panics) and an
/// `after_func_spawn_blocking` callback whose panic's payload panics as it
/// is dropped: all contained, and the executor goes on.
#[test]
fn after_func_spawn_callbacks_that_fail_badly_are_contained() {
    let (ctx, cancel) = background().with_cancel();
    let (dropped, dropped_rx) = std::sync::mpsc::channel();
    let dropped_1 = dropped.clone();
    let _first = after_func_spawn(&ctx, move || {
        PanicsInPollAndDrop(std::marker::PhantomData::<()>, Some(dropped_1))
    });
    let dropped_2 = dropped.clone();
    let _second = after_func_spawn(&ctx, move || async move {
        std::panic::panic_any(PanickyPayload(dropped_2));
    });
    let _third = after_func_spawn_blocking(&ctx, move || {
        std::panic::panic_any(PanickyPayload(dropped));
    });
    cancel.cancel();
    for _ in 0..3 {
        dropped_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every callback failed and its future or payload was dropped");
    }
    let (ctx, _cancel) = background().with_cancel();
    let task = spawn(&ctx, async { "still running" });
    assert_eq!(smol::block_on(task).unwrap(), "still running");
}

/// A watched future still pending when its child context is canceled, whose
/// `Drop` panics with a payload that panics as it is dropped: contained (the
/// watch drops it as the context wins; the executor would drop the escaped
/// payload where its panic aborts the process).
#[test]
fn a_watched_future_whose_drop_panics_badly_as_the_context_wins_is_contained() {
    struct PendingPanicsOnDrop(Option<std::sync::mpsc::Sender<()>>);
    impl std::future::Future for PendingPanicsOnDrop {
        type Output = ();
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            std::task::Poll::Pending
        }
    }
    impl Drop for PendingPanicsOnDrop {
        fn drop(&mut self) {
            if let Some(dropped) = self.0.take() {
                std::panic::panic_any(PanickyPayload(dropped));
            }
        }
    }
    let (dropped, dropped_rx) = std::sync::mpsc::channel();
    let (polled, polled_rx) = smol::channel::bounded::<()>(1);
    let (ctx, cancel) = with_cancel_on(&background(), async move {
        polled.send(()).await.unwrap();
        PendingPanicsOnDrop(Some(dropped)).await;
    });
    smol::block_on(polled_rx.recv()).unwrap();
    cancel.cancel();
    dropped_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the watched future was dropped");
    assert_eq!(ctx.err(), Some(Error::Canceled));
    let task = spawn(&background(), async { "still running" });
    assert_eq!(smol::block_on(task).unwrap(), "still running");
}
