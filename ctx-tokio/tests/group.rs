//! The error group: what is tokio's own (the limit, `try_spawn`, joining, the
//! abort on drop, an accepted closure always called), and that every outcome
//! goes through ctx-core's `GroupCancel`, whose rules are tested once in
//! ctx-core's `tests/group.rs`.

use ctx_core::Error;
use ctx_tokio::{Group, PanicError};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn io_error(message: &str) -> io::Error {
    io::Error::other(message.to_owned())
}

/// The pass-through: the first failure cancels the siblings with itself as the
/// cause and is what `wait` returns, a panic is a `PanicError`, and errors
/// caused by `stop` are not reported.
#[tokio::test(start_paused = true)]
async fn outcomes_are_decided_by_the_group_core() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    group.spawn(|ctx| async move {
        ctx.done().await;
        Err(ctx.err().unwrap()) // a consequence of the failure below
    });
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(io_error("first"))
    });
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "first");
    assert!(ctx.cause().unwrap().same(&err));

    let (mut group, _ctx) = Group::new(&ctx_tokio::background());
    group
        .spawn(|_ctx| -> std::future::Ready<Result<(), Error>> { panic!("worker {} exploded", 7) });
    let panic = group.wait().await.unwrap_err();
    assert_eq!(
        panic.downcast_ref::<PanicError>().unwrap().message(),
        "worker 7 exploded"
    );

    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    group.spawn(|ctx| async move { ctx_tokio::sleep(&ctx, Duration::from_secs(60)).await });
    tokio::task::yield_now().await;
    assert!(
        group.stop().await.is_ok(),
        "the sleeper's Canceled is the stop's doing"
    );
    assert_eq!(ctx.err(), Some(Error::Canceled));
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
    // The only slot: fails after a while, canceling the group.
    group.spawn(|_ctx| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(io_error("boom"))
    });
    // Queued behind it: accepted, so each runs once, with a done context.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..5 {
        let seen = seen_tx.clone();
        assert!(group.spawn(move |ctx| async move {
            seen.send(ctx.err()).unwrap();
            Ok::<(), Error>(())
        }));
    }
    drop(seen_tx);
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
    let mut seen = Vec::new();
    while let Some(err) = seen_rx.recv().await {
        seen.push(err);
    }
    assert_eq!(seen, [Some(Error::Canceled); 5]);
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

/// A cleanup callback of the group's context that panics when `stop`
/// cancels it: the stop still waits for the tasks (the accepted closure runs)
/// and returns the group's result; the callback's panic stays with it.
#[tokio::test]
async fn a_panicking_callback_cuts_no_stop_short() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    let _cleanup = ctx.after_func(|| panic!("a cleanup callback panics"));
    let called = Arc::new(AtomicUsize::new(0));
    let counter = called.clone();
    assert!(group.spawn(move |_ctx| async move {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<(), Error>(())
    }));
    let stopped = tokio::spawn(group.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "the stop panicked or failed");
    assert_eq!(
        called.load(Ordering::SeqCst),
        1,
        "accepted, then not called"
    );
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

/// Tasks that their runtime's shutdown aborted before they finished are not a
/// success: `wait` (on another runtime) reports the abort, and so does `stop`,
/// and the group's context carries it as the cause (unless a stop canceled it
/// first). A task that finished before the shutdown counts as it ended.
#[test]
fn tasks_aborted_by_the_runtime_shutting_down_are_a_failure() {
    for stop in [false, true] {
        let doomed = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (mut group, ctx) = Group::new(&ctx_core::Context::background());
        let finished = Arc::new(AtomicUsize::new(0));
        let (tx, started) = std::sync::mpsc::channel();
        {
            let _enter = doomed.enter();
            let (counter, ended) = (finished.clone(), tx.clone());
            group.spawn(move |_ctx| async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = ended.send(());
                Ok::<(), Error>(())
            });
            let counter = finished.clone();
            group.spawn(move |_ctx| async move {
                let _ = tx.send(());
                // Would fail; never gets here.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                counter.fetch_add(1, Ordering::SeqCst);
                Err(io_error("never returned"))
            });
        }
        for _ in 0..2 {
            started
                .recv_timeout(Duration::from_secs(60))
                .expect("the tasks started");
        }
        doomed.shutdown_timeout(Duration::from_secs(60));
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = other.block_on(async {
            if stop {
                group.stop().await
            } else {
                group.wait().await
            }
        });
        let err = result.expect_err("an aborted task reported as a success");
        assert!(err.to_string().contains("aborted"), "{err}");
        assert!(err.to_string().contains("shut down"), "{err}");
        if !stop {
            // (After a stop, the stop canceled the context first.)
            assert!(ctx.cause().unwrap().same(&err));
        }
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }
}

#[test]
#[should_panic(expected = "at least 1")]
fn a_zero_limit_is_refused() {
    let (group, _ctx) = Group::new(&ctx_core::Context::background());
    let _group = group.with_limit(0);
}

/// A limit beyond what tokio's semaphore can count (`usize::MAX`) is taken as
/// no limit, as ctx-async-std's group takes it, instead of panicking.
#[tokio::test(start_paused = true)]
async fn a_limit_of_usize_max_is_no_limit() {
    let (group, _ctx) = Group::new(&ctx_tokio::background());
    let mut group = group.with_limit(usize::MAX);
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let finished = finished.clone();
        assert!(group.try_spawn(move |_ctx| async move {
            finished.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        }));
    }
    group.wait().await.unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 5);
}

/// A task spawned over the limit is ahead of any later `try_spawn` (Go's `Go`
/// takes its slot before it returns, so a `TryGo` after it finds the group
/// full): also before the runtime first runs it, and right after the slot it
/// waits for is given back.
#[tokio::test(start_paused = true)]
async fn try_spawn_does_not_overtake_a_queued_spawn() {
    let (group, _ctx) = Group::new(&ctx_tokio::background());
    let mut group = group.with_limit(1);
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = |name: &'static str| {
        let order = order.clone();
        move |_ctx: ctx_core::Context| async move {
            order.lock().unwrap().push(name);
            Ok::<(), Error>(())
        }
    };
    // Takes the slot at once, before this task yields to the runtime.
    let first = order.clone();
    assert!(group.spawn(move |_ctx| async move {
        release_rx.await.unwrap();
        first.lock().unwrap().push("first");
        Ok::<(), Error>(())
    }));
    assert!(!group.try_spawn(log("refused while the slot is held")));
    // Queued: it waits for the slot.
    assert!(group.spawn(log("queued")));
    tokio::task::yield_now().await;
    assert!(!group.try_spawn(log("refused while a spawn is queued")));
    // The slot comes back; the queued task is still ahead of a new try_spawn.
    release_tx.send(()).unwrap();
    assert!(!group.try_spawn(log("refused before the queued task ran")));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(*order.lock().unwrap(), ["first", "queued"]);
    // Nobody waits and nothing runs: a slot is free again.
    assert!(group.try_spawn(log("accepted")));
    group.wait().await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["first", "queued", "accepted"]);
}

/// Go's `SetLimit` may be called once no goroutine is active: a limit set
/// after the tasks spawned so far finished (but before `wait` joined them) is
/// accepted, and the failure of such a finished task is still what `wait`
/// returns.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_limit_set_after_the_spawned_tasks_finished_is_accepted() {
    let (mut group, ctx) = Group::new(&ctx_tokio::background());
    group.spawn(|_ctx| async { Ok::<(), io::Error>(()) });
    group.spawn(|_ctx| async { Err(io_error("finished early")) });
    // Both tasks run to their end while this one sleeps.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        ctx.err(),
        Some(Error::Canceled),
        "the failure canceled the group"
    );
    let mut group = group.with_limit(1);
    assert!(!group.spawn(|_ctx| async { Ok::<(), io::Error>(()) }));
    let err = group.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "finished early");
}

/// A limit set while a task spawned before still runs panics (Go's `SetLimit`
/// panics while goroutines are active).
#[tokio::test(flavor = "current_thread", start_paused = true)]
#[should_panic(expected = "has not finished yet")]
async fn a_limit_set_while_a_task_runs_is_refused() {
    let (mut group, _ctx) = Group::new(&ctx_tokio::background());
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok::<(), Error>(())
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let _group = group.with_limit(1);
}
