//! When a deadline context's timer is given back: every key its backend's
//! `arm` returned is disarmed once the context can no longer be observed or
//! canceled, whichever way its handles go, not only when it is done.

mod support;

use ctx_core::{Cause, Context, Error};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::ManualTimer;

const HOUR: Duration = Duration::from_secs(3600);

/// A named way of making a deadline context and letting go of it.
type Path = (&'static str, fn(&Context));

/// Runs `scenario` on a fresh manual timer and returns (arms, disarms, still
/// held by the backend) once the scenario dropped everything it made.
fn counts(scenario: impl FnOnce(&Context)) -> (usize, usize, usize) {
    let timer = ManualTimer::new();
    let root = timer.root();
    scenario(&root);
    (timer.arms(), timer.disarms(), timer.armed())
}

#[test]
fn cancel_func_called_or_dropped_disarms() {
    // Go's `defer cancel()`.
    assert_eq!(
        counts(|root| {
            let (ctx, cancel) = root.with_timeout(HOUR);
            cancel.cancel();
            drop(ctx);
        }),
        (1, 1, 0)
    );
    // The context first, then the cancel function, never called: its drop cancels.
    assert_eq!(
        counts(|root| {
            let (ctx, cancel) = root.with_timeout(HOUR);
            drop(ctx);
            drop(cancel);
        }),
        (1, 1, 0)
    );
    // A `Canceler` outliving the cancel function: the function's drop cancels.
    assert_eq!(
        counts(|root| {
            let (ctx, cancel) = root.with_timeout(HOUR);
            let canceler = cancel.canceler();
            drop(cancel);
            drop((ctx, canceler));
        }),
        (1, 1, 0)
    );
}

/// Every way the last handle goes without a cancel: the function turned into
/// a `Canceler` (which cancels nothing when dropped), in either order, with or
/// without a cause, through a disarmed `DropGuard`.
#[test]
fn last_handle_gone_without_a_cancel_disarms() {
    let paths: [Path; 5] = [
        ("into_canceler, ctx dropped first", |root| {
            let (ctx, cancel) = root.with_timeout(HOUR);
            let canceler = cancel.into_canceler();
            drop(ctx);
            drop(canceler);
        }),
        ("into_canceler, canceler dropped first", |root| {
            let (ctx, cancel) = root.with_timeout(HOUR);
            let canceler = cancel.into_canceler();
            drop(canceler);
            drop(ctx);
        }),
        ("with_timeout_cause, into_canceler", |root| {
            let (ctx, cancel) = root.with_timeout_cause(HOUR, Cause::msg("slow"));
            drop((ctx, cancel.into_canceler()));
        }),
        ("with_deadline, cloned cancelers", |root| {
            let (ctx, cancel) = root.with_deadline(root.now() + HOUR);
            let canceler = cancel.into_canceler();
            let clones = [canceler.clone(), canceler.clone()];
            drop((ctx, canceler, clones));
        }),
        ("DropGuard::disarm", |root| {
            let (ctx, cancel) = root.with_timeout(HOUR);
            let canceler = cancel.into_canceler().drop_guard().disarm();
            drop((ctx, canceler));
        }),
    ];
    for (path, scenario) in paths {
        assert_eq!(counts(scenario), (1, 1, 0), "{path}");
    }
}

/// A context below the deadline, or a `without_cancel` one, keeps the deadline
/// node (and so its timer): nothing is disarmed early while something can still
/// observe the deadline or run a callback at it.
#[test]
fn a_live_descendant_keeps_the_timer_armed() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let (ctx, cancel) = root.with_timeout(HOUR);
    let below = ctx.with_value(7u8);
    let detached = ctx.without_cancel();
    drop((ctx, cancel.into_canceler()));
    assert_eq!((timer.arms(), timer.disarms(), timer.armed()), (1, 0, 1));
    timer.advance(HOUR);
    assert_eq!(below.err(), Some(Error::DeadlineExceeded));
    assert_eq!(detached.err(), None);
    assert_eq!((timer.disarms(), timer.armed()), (1, 0));
}

/// An `after_func` whose handles are all gone (context, canceler, the
/// callback's handle) before the deadline: the context is gone, so the
/// callback never runs (its closure is dropped with the context), as before;
/// the timer is given back then too.
#[test]
fn an_orphaned_after_func_does_not_keep_the_timer() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let (ctx, cancel) = root.with_timeout(HOUR);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    drop(ctx.after_func(move || flag.store(true, Ordering::SeqCst)));
    drop((ctx, cancel.into_canceler()));
    assert_eq!((timer.disarms(), timer.armed()), (1, 0));
    timer.advance(2 * HOUR);
    // Dropped unrun with the context (`AfterFunc`'s docs), its closure too.
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(Arc::strong_count(&ran), 1, "the closure was kept");
}

/// Many long timeouts dropped early through a `Canceler`: nothing piles up in
/// the backend.
#[test]
fn many_dropped_timeouts_leave_nothing_armed() {
    let timer = ManualTimer::new();
    let root = timer.root();
    for _ in 0..support::scaled(10_000, 100) {
        let (ctx, cancel) = root.with_timeout(HOUR);
        drop((ctx, cancel.into_canceler()));
    }
    assert_eq!(timer.armed(), 0);
    assert_eq!(timer.arms(), timer.disarms());
}
