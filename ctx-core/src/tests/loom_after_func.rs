//! Loom models of `after_func`: stop vs fire, and registration vs cancel.

use super::model;
use crate::Context;
use crate::sync::{Arc, AtomicUsize, Ordering};
use loom::thread;

/// A callback that counts its runs.
fn counter() -> (Arc<AtomicUsize>, impl FnOnce() + Send + 'static) {
    let runs = Arc::new(AtomicUsize::new(0));
    let handle = runs.clone();
    (runs, move || {
        handle.fetch_add(1, Ordering::SeqCst);
    })
}

/// `stop()` races the cancel that fires the callback: exactly one of "stop
/// returned true" and "the callback ran" holds, and the callback runs at most once.
#[test]
fn loom_after_func_stop_vs_fire() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (runs, f) = counter();
        let registration = ctx.after_func(f);
        let t = thread::spawn(move || {
            let stopped = registration.stop();
            // A second stop never claims anything.
            assert!(!registration.stop());
            stopped
        });
        cancel.cancel();
        let stopped = t.join().unwrap();

        let ran = runs.load(Ordering::SeqCst);
        assert!(ran <= 1, "callback ran {ran} times");
        assert!(stopped != (ran == 1), "stopped: {stopped}, runs: {ran}");
        assert_eq!(ctx.live_children(), 0);
    });
}

/// A callback is registered while the context is canceled: it runs exactly once
/// (claimed by the canceler's walk or, when the registration saw the cancel, by
/// the registrant; under loom the runner runs its job at once), and nothing
/// stays registered.
#[test]
fn loom_after_func_register_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (runs, f) = counter();
        let handle = ctx.clone();
        let t = thread::spawn(move || handle.after_func(f));
        cancel.cancel();
        let registration = t.join().unwrap();

        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!registration.stop());
        assert_eq!(ctx.live_children(), 0);
        drop(registration);
        assert_eq!(ctx.node().unwrap().strong_count(), 1);
    });
}

/// Registration and an immediate `stop()` on one thread, the cancel on another:
/// the callback runs iff the stop failed, once at most.
#[test]
fn loom_after_func_register_stop_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (runs, f) = counter();
        let handle = ctx.clone();
        let t = thread::spawn(move || handle.after_func(f).stop());
        cancel.cancel();
        let stopped = t.join().unwrap();

        let ran = runs.load(Ordering::SeqCst);
        assert!(ran <= 1, "callback ran {ran} times");
        assert!(stopped != (ran == 1), "stopped: {stopped}, runs: {ran}");
        assert_eq!(ctx.live_children(), 0);
        assert_eq!(ctx.node().unwrap().strong_count(), 1);
    });
}

/// A callback becomes the first registrant (the inline slot) of a context
/// whose cancel function is dropped meanwhile, and is then stopped: it runs
/// exactly when `stop` fails, at most once, and leaves nothing registered.
#[test]
fn loom_after_func_first_callback_stop_vs_cancel_and_release() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (runs, callback) = counter();
        let handle = ctx.clone();
        let t = thread::spawn(move || {
            let registration = handle.after_func(callback);
            let stopped = registration.stop();
            drop(handle);
            stopped
        });
        drop(cancel);
        let stopped = t.join().unwrap();
        let ran = runs.load(Ordering::SeqCst);
        assert!(ran <= 1);
        assert_ne!(stopped, ran == 1, "stopped {stopped}, ran {ran} times");
        assert_eq!(ctx.live_children(), 0);
        assert_eq!(ctx.node().unwrap().strong_count(), 1);
    });
}
