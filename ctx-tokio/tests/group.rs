//! The error group: first error wins and cancels with its cause, panics become
//! errors, the concurrency limit, nothing accepted after cancel and everything
//! accepted called, wait/stop/drop.

use ctx_core::{Cause, Error};
use ctx_tokio::{Group, PanicError};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn io_error(message: &str) -> io::Error {
    io::Error::other(message.to_owned())
}

#[tokio::test(start_paused = true)]
async fn first_error_wins_and_cancels_the_group_with_it() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    let saw_cancel = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let saw_cancel = saw_cancel.clone();
        group.spawn(move |ctx| async move {
            ctx.done().await;
            saw_cancel.fetch_add(1, Ordering::SeqCst);
            // Siblings fail *because of* the cancel: not the first error.
            Err(ctx.err().unwrap())
        });
    }
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(io_error("first"))
    });
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(io_error("second"))
    });
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "first");
    assert!(err.downcast_ref::<io::Error>().is_some());
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(
        ctx.cause().unwrap().same(&err),
        "the context's cause is the first error"
    );
    assert_eq!(saw_cancel.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn success_returns_ok_and_wait_cancels_the_context() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..10u64 {
        let done = done.clone();
        group.spawn(move |ctx| async move {
            ctx_tokio::sleep(&ctx, Duration::from_millis(i)).await?;
            done.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        });
    }
    assert!(!ctx.is_done());
    assert_eq!(group.wait().await.map_err(|e| e.to_string()), Ok(()));
    assert_eq!(done.load(Ordering::SeqCst), 10);
    // As in Go: the group's context is canceled once Wait returns.
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_caught_and_reported_as_the_error() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok::<(), Error>(())
    });
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if Arc::new(1).as_ref() == &1 {
            panic!("worker {} exploded", 7);
        }
        Ok::<(), Error>(())
    });
    let err = group.wait().await.unwrap_err();
    let panic = err.downcast_ref::<PanicError>().expect("a PanicError");
    assert_eq!(panic.message(), "worker 7 exploded");
    assert_eq!(err.to_string(), "task panicked: worker 7 exploded");
    assert!(ctx.cause().unwrap().same(&err));
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_creating_the_future_is_caught_too() {
    let (mut group, _ctx) = Group::new(&ctx_tokio::background());
    group.spawn(|_ctx| -> std::future::Ready<Result<(), Error>> { panic!("in the closure") });
    let err = group.wait().await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<PanicError>().unwrap().message(),
        "in the closure"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_is_respected() {
    let (group, _ctx) = Group::new(&ctx_tokio::background());
    let mut group = group.with_limit(3);
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    for i in 0..20u64 {
        let (running, max, finished) = (running.clone(), max.clone(), finished.clone());
        assert!(group.spawn(move |ctx| async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            ctx_tokio::sleep(&ctx, Duration::from_millis(10 + i % 3)).await?;
            running.fetch_sub(1, Ordering::SeqCst);
            finished.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        }));
    }
    group.wait().await.unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 20);
    assert!(
        max.load(Ordering::SeqCst) <= 3,
        "max running {}",
        max.load(Ordering::SeqCst)
    );
    assert_eq!(max.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_limit_is_respected() {
    let (group, _ctx) = Group::new(&ctx_tokio::background());
    let mut group = group.with_limit(2);
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    for _ in 0..50 {
        let (running, max) = (running.clone(), max.clone());
        group.spawn(move |_ctx| async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        });
    }
    group.wait().await.unwrap();
    assert!(max.load(Ordering::SeqCst) <= 2);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_accepted_after_cancel_and_queued_tasks_run_with_a_done_context() {
    let (group, ctx) = Group::new(&ctx_tokio::background());
    let mut group = group.with_limit(1);
    let started = Arc::new(AtomicUsize::new(0));
    let saw_done = Arc::new(AtomicUsize::new(0));
    // The only slot: fails after a while, canceling the group.
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(io_error("boom"))
    });
    // Queued behind it: accepted, so each runs once, with a done context.
    for _ in 0..5 {
        let (started, saw_done) = (started.clone(), saw_done.clone());
        assert!(group.spawn(move |ctx| async move {
            started.fetch_add(1, Ordering::SeqCst);
            if ctx.is_done() {
                saw_done.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<(), Error>(())
        }));
    }
    ctx.done().await;
    // Spawning on a canceled group is refused, and the closure is never called.
    let called = Arc::new(AtomicUsize::new(0));
    let counter = called.clone();
    assert!(!group.spawn(move |_ctx| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), Error>(()) }
    }));
    assert!(!group.try_spawn(|_ctx| async { Ok::<(), Error>(()) }));
    assert_eq!(group.wait().await.unwrap_err().to_string(), "boom");
    assert_eq!(started.load(Ordering::SeqCst), 5);
    assert_eq!(saw_done.load(Ordering::SeqCst), 5);
    assert_eq!(called.load(Ordering::SeqCst), 0);
}

/// `spawn` returning `true` means the closure will be called, also when the
/// group is stopped before the task ever runs.
#[tokio::test]
async fn an_accepted_closure_is_always_called() {
    for _ in 0..200 {
        let (mut group, _ctx) = Group::new(&ctx_tokio::background());
        let called = Arc::new(AtomicUsize::new(0));
        let counter = called.clone();
        assert!(group.spawn(move |_ctx| async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        }));
        assert!(group.stop().await.is_ok());
        assert_eq!(
            called.load(Ordering::SeqCst),
            1,
            "accepted, then not called"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn try_spawn_is_refused_when_the_limit_is_reached() {
    let (group, _ctx) = Group::new(&ctx_tokio::background());
    let mut group = group.with_limit(2);
    let work = |ctx: ctx_core::Context| async move {
        ctx_tokio::sleep(&ctx, Duration::from_millis(10)).await?;
        Ok::<(), Error>(())
    };
    assert!(group.try_spawn(work));
    assert!(group.try_spawn(work));
    assert!(!group.try_spawn(work));
    assert_eq!(group.len(), 2);
    tokio::time::sleep(Duration::from_millis(11)).await;
    assert!(group.try_spawn(work));
    group.wait().await.unwrap();

    // Without a limit, try_spawn is spawn.
    let (mut group, _ctx) = Group::new(&ctx_tokio::background());
    assert!(group.is_empty());
    assert!(group.try_spawn(work));
    group.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn parent_cancel_reaches_the_tasks() {
    let (parent, cancel_parent) = ctx_tokio::background().with_cancel_cause();
    let (mut group, ctx) = Group::new(&parent);
    group.spawn(|ctx| async move {
        ctx.done().await;
        Err(ctx.err().unwrap())
    });
    tokio::task::yield_now().await; // the task starts and waits
    cancel_parent.cancel(Cause::msg("shutdown"));
    let err = group.wait().await.unwrap_err();
    // The task's own error is what Wait reports (as in Go); the cause is the parent's.
    assert_eq!(err, Error::Canceled);
    assert_eq!(ctx.cause().unwrap().to_string(), "shutdown");
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_and_ignores_the_errors_it_causes() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    for _ in 0..4 {
        group.spawn(|ctx| async move {
            ctx.done().await;
            Err(ctx.err().unwrap())
        });
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!ctx.is_done());
    assert!(group.stop().await.is_ok());
    assert_eq!(ctx.err(), Some(Error::Canceled));

    // An error from before the stop is still reported.
    let (mut group, _ctx) = Group::new(&ctx_tokio::background());
    group.spawn(|_ctx| async { Err(io_error("early")) });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(group.stop().await.unwrap_err().to_string(), "early");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_group_cancels_and_aborts() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    let finished = Arc::new(AtomicUsize::new(0));
    let counter = finished.clone();
    group.spawn(move |_ctx| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<(), Error>(())
    });
    tokio::task::yield_now().await;
    assert!(format!("{group:?}").contains("tasks: 1"));
    drop(group);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 0);
}

#[test]
#[should_panic(expected = "at least 1")]
fn a_zero_limit_is_refused() {
    let (group, _ctx) = Group::new(&ctx_core::Context::background());
    let _group = group.with_limit(0);
}
