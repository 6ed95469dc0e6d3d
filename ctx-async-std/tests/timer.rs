//! The async-io timer backend: arming, disarming, expiry on any executor, and
//! the edge cases of deadlines.

mod support;

use ctx_async_std::AsyncIoTimer;
use ctx_core::{Context, Error};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A root whose subtree arms its deadlines on a private backend.
fn root(timer: &Arc<AsyncIoTimer>) -> Context {
    Context::background().with_timer(timer.clone())
}

#[test]
fn hundred_thousand_canceled_timeouts_leave_nothing_armed() {
    let timer = AsyncIoTimer::new();
    let (parent, _cancel_parent) = root(&timer).with_cancel();
    for i in 0..100_000u32 {
        let (ctx, cancel) = parent.with_timeout(Duration::from_secs(60 + u64::from(i % 7)));
        assert!(!ctx.is_done());
        if i % 2 == 0 {
            cancel.cancel();
        } else {
            drop(cancel);
        }
        assert!(ctx.is_done());
    }
    assert_eq!(timer.armed(), 0);
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn canceling_the_parent_disarms_every_child() {
    let timer = AsyncIoTimer::new();
    let (parent, cancel_parent) = root(&timer).with_cancel();
    let children: Vec<_> = (0..1_000)
        .map(|_| parent.with_timeout(Duration::from_secs(60)))
        .collect();
    assert_eq!(timer.armed(), 1_000);
    assert_eq!(parent.live_children(), 1_000);
    cancel_parent.cancel();
    assert_eq!(timer.armed(), 0);
    assert_eq!(parent.live_children(), 0);
    assert!(
        children
            .iter()
            .all(|(ctx, _)| ctx.err() == Some(Error::Canceled))
    );
}

/// Waits for a 50 ms timeout with `wait` and checks the timing and the result.
async fn fifty_ms_timeout(timer: Arc<AsyncIoTimer>) {
    let start = Instant::now();
    let (ctx, _cancel) = root(&timer).with_timeout(Duration::from_millis(50));
    assert_eq!(timer.armed(), 1);
    ctx.done().await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(50),
        "fired early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "fired late: {elapsed:?}");
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(timer.armed(), 0);
}

#[async_std::test]
async fn fires_on_time_under_async_std() {
    fifty_ms_timeout(AsyncIoTimer::new()).await;
}

#[test]
fn fires_on_time_under_smol() {
    smol::block_on(fifty_ms_timeout(AsyncIoTimer::new()));
}

#[test]
fn fires_on_time_with_no_executor() {
    let timer = AsyncIoTimer::new();
    let start = Instant::now();
    let (ctx, _cancel) = root(&timer).with_timeout(Duration::from_millis(50));
    ctx.wait();
    let elapsed = start.elapsed();
    assert!((Duration::from_millis(50)..Duration::from_secs(2)).contains(&elapsed));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn the_global_backend_serves_background() {
    let (ctx, _cancel) = ctx_async_std::background().with_timeout(Duration::from_millis(20));
    smol::block_on(ctx.done());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.to_string().split('(').next(),
        Some("context.Background.WithTimer.WithDeadline")
    );
}

#[test]
fn zero_and_past_deadlines_are_born_done_without_arming() {
    let timer = AsyncIoTimer::new();
    let root = root(&timer);
    let (zero, _c1) = root.with_timeout(Duration::ZERO);
    let (past, _c2) = root.with_deadline(Instant::now() - Duration::from_secs(1));
    let (now, _c3) = root.with_deadline(Instant::now());
    for ctx in [&zero, &past, &now] {
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    }
    assert_eq!(timer.armed(), 0);
}

#[test]
fn duration_max_arms_a_far_deadline() {
    let timer = AsyncIoTimer::new();
    let before = Instant::now();
    let (ctx, cancel) = root(&timer).with_timeout(Duration::MAX);
    assert!(!ctx.is_done());
    assert!(ctx.deadline().unwrap() > before + Duration::from_secs(100 * 365 * 24 * 3600));
    assert_eq!(timer.armed(), 1);
    // A far-future deadline does not disturb the nearer ones.
    let (short, _cancel_short) = root(&timer).with_timeout(Duration::from_millis(20));
    smol::block_on(short.done());
    assert_eq!(short.err(), Some(Error::DeadlineExceeded));
    assert_eq!(timer.armed(), 1);
    cancel.cancel();
    assert_eq!(timer.armed(), 0);
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

/// Dropping your handle on the backend while contexts use it changes nothing:
/// the contexts keep it alive, their deadlines still fire, and it is freed with
/// the last of them.
#[test]
fn dropped_backend_lives_on_in_its_contexts() {
    let timer = AsyncIoTimer::new();
    let weak = Arc::downgrade(&timer);
    let root = Context::background().with_timer(timer);
    let (long, cancel_long) = root.with_timeout(Duration::from_secs(3600));
    let (short, _cancel_short) = root.with_timeout(Duration::from_millis(30));
    drop(root);
    assert!(weak.upgrade().is_some());
    assert!(short.wait_timeout(Duration::from_secs(5)));
    assert_eq!(short.err(), Some(Error::DeadlineExceeded));
    // The exact read may come before the expiry task releases the timer.
    assert!(support::eventually(
        || weak.upgrade().map(|t| t.armed()) == Some(1)
    ));
    cancel_long.cancel();
    assert_eq!(long.err(), Some(Error::Canceled));
    drop((long, short, _cancel_short));
    assert!(
        weak.upgrade().is_none(),
        "the last context frees the backend"
    );
}

#[test]
fn expiry_fires_while_only_the_cancel_func_holds_the_context() {
    let timer = AsyncIoTimer::new();
    let (ctx, cancel) = root(&timer).with_timeout(Duration::from_millis(10));
    drop(ctx);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(cancel.context().err(), Some(Error::DeadlineExceeded));
    assert_eq!(timer.armed(), 0);
}

#[test]
fn many_threads_arm_and_disarm_at_once() {
    let timer = AsyncIoTimer::new();
    let (parent, _cancel) = root(&timer).with_cancel();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..5_000u64 {
                    let (ctx, cancel) = parent.with_timeout(Duration::from_micros(i % 10 * 20));
                    if i % 3 == 0 {
                        ctx.wait();
                    }
                    drop(cancel);
                }
            });
        }
    });
    // Expiries that raced with the cancels are removed before they fire.
    assert_eq!(timer.armed(), 0);
    assert_eq!(parent.live_children(), 0);
}

/// As documented on `AsyncIoTimer`: an expired deadline's cancel runs on smol's
/// executor threads, never on the reactor's or the waiting thread.
#[test]
fn a_deadline_fires_on_a_smol_thread() {
    let timer = AsyncIoTimer::new();
    let (ctx, _cancel) = root(&timer).with_timeout(Duration::from_millis(5));
    let (_done, fired_on) = support::firing_thread(&ctx);
    let name = fired_on
        .recv_timeout(support::WATCHDOG)
        .expect("the deadline fired");
    assert!(
        name.as_deref()
            .is_some_and(|name| name.starts_with("smol-")),
        "fired on {name:?}"
    );
}
