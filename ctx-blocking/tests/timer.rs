//! The thread timer (`StdTimer`) as this adapter's backend: arming, disarming,
//! expiry, and the edge cases of deadlines.

mod support;

use ctx_blocking::{StdTimer, background, wait_timeout};
use ctx_core::{Context, Error};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A root whose subtree arms its deadlines on a private timer thread.
fn root(timer: &Arc<StdTimer>) -> Context {
    Context::background().with_timer(timer.clone())
}

#[test]
fn hundred_thousand_canceled_timeouts_leave_nothing_armed() {
    let timer = StdTimer::new();
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
    let timer = StdTimer::new();
    let (parent, cancel_parent) = root(&timer).with_cancel();
    let children: Vec<_> = (0..1_000)
        .map(|_| parent.with_timeout(Duration::from_secs(60)))
        .collect();
    assert_eq!(timer.armed(), 1_000);
    cancel_parent.cancel();
    assert_eq!(timer.armed(), 0);
    assert_eq!(parent.live_children(), 0);
    assert!(
        children
            .iter()
            .all(|(ctx, _)| ctx.err() == Some(Error::Canceled))
    );
}

#[test]
fn a_fifty_ms_timeout_fires_on_time() {
    let timer = StdTimer::new();
    let start = Instant::now();
    let (ctx, _cancel) = root(&timer).with_timeout(Duration::from_millis(50));
    assert_eq!(timer.armed(), 1);
    ctx_blocking::wait(&ctx);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(50),
        "fired early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "fired late: {elapsed:?}");
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn the_global_timer_serves_background() {
    let start = Instant::now();
    let (ctx, _cancel) = background().with_timeout(Duration::from_millis(50));
    assert!(wait_timeout(&ctx, Duration::from_secs(5)));
    assert!((Duration::from_millis(50)..Duration::from_secs(2)).contains(&start.elapsed()));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn zero_and_past_deadlines_are_born_done_without_arming() {
    let timer = StdTimer::new();
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
    let timer = StdTimer::new();
    let before = Instant::now();
    let (ctx, cancel) = root(&timer).with_timeout(Duration::MAX);
    assert!(!ctx.is_done());
    assert!(ctx.deadline().unwrap() > before + Duration::from_secs(100 * 365 * 24 * 3600));
    assert_eq!(timer.armed(), 1);
    assert!(!wait_timeout(&ctx, Duration::from_millis(5)));
    // A far-future deadline does not disturb the nearer ones.
    let (short, _cancel_short) = root(&timer).with_timeout(Duration::from_millis(20));
    ctx_blocking::wait(&short);
    assert_eq!(short.err(), Some(Error::DeadlineExceeded));
    // The wait returns at the deadline; the timer thread releases the short
    // deadline's entry a moment later.
    assert!(support::eventually(|| timer.armed() == 1));
    cancel.cancel();
    assert_eq!(timer.armed(), 0);
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

/// Dropping your handle on the timer while contexts use it changes nothing: the
/// contexts keep it alive, their deadlines still fire, and it is freed (its thread
/// told to stop) with the last of them.
#[test]
fn dropped_timer_lives_on_in_its_contexts() {
    let timer = StdTimer::new();
    let weak = Arc::downgrade(&timer);
    let root = Context::background().with_timer(timer);
    let (long, cancel_long) = root.with_timeout(Duration::from_secs(3600));
    let (short, cancel_short) = root.with_timeout(Duration::from_millis(30));
    drop(root);
    assert!(weak.upgrade().is_some());
    assert!(wait_timeout(&short, Duration::from_secs(5)));
    assert_eq!(short.err(), Some(Error::DeadlineExceeded));
    cancel_long.cancel();
    assert_eq!(long.err(), Some(Error::Canceled));
    assert_eq!(weak.upgrade().map(|t| t.armed()), Some(0));
    drop((long, short, cancel_short));
    assert!(weak.upgrade().is_none(), "the last context frees the timer");
}

#[test]
fn many_threads_arm_and_disarm_at_once() {
    let timer = StdTimer::new();
    let (parent, _cancel) = root(&timer).with_cancel();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..5_000u64 {
                    let (ctx, cancel) = parent.with_timeout(Duration::from_micros(i % 10 * 20));
                    if i % 3 == 0 {
                        ctx_blocking::wait(&ctx);
                    }
                    drop(cancel);
                }
            });
        }
    });
    assert_eq!(timer.armed(), 0);
    assert_eq!(parent.live_children(), 0);
}

/// As documented in the crate docs: deadlines fire on ctx-core's timer thread.
/// (Nothing here reads the context meanwhile: a read that sees the deadline
/// passed may complete the cancel itself, on the reading thread.)
#[test]
fn a_deadline_fires_on_the_timer_thread() {
    let (ctx, _cancel) = background().with_timeout(Duration::from_millis(5));
    let (_done, fired_on) = support::firing_thread(&ctx);
    let name = fired_on
        .recv_timeout(support::WATCHDOG)
        .expect("the deadline fired");
    assert_eq!(name.as_deref(), Some("ctx-timer"));
}
