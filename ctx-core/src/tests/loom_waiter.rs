//! Loom models of the `WAITERS` bit (`waiter`): a `Done` future polled while the
//! context is canceled always completes. A lost wake-up leaves the waiting thread
//! blocked forever, which loom reports as a deadlock.

use super::model;
use crate::Context;
use loom::future::block_on;
use loom::thread;

/// One waiter on the canceled context itself.
#[test]
fn loom_waiter_done_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = ctx.clone();
        let t = thread::spawn(move || {
            block_on(waiter.done());
            assert!(waiter.is_done());
        });
        cancel.cancel();
        t.join().unwrap();
        assert!(ctx.is_done());
    });
}

/// A waiter on a child, woken by the propagation of its parent's cancel.
#[test]
fn loom_waiter_child_done_vs_parent_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, _cancel_child) = parent.with_cancel();
        let t = thread::spawn(move || {
            block_on(child.done());
            assert!(child.is_done());
        });
        cancel_parent.cancel();
        t.join().unwrap();
    });
}

/// Two waiters on one context: the second sets a `WAITERS` bit that is already
/// set, and neither may be missed.
#[test]
fn loom_waiter_two_waiters_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = ctx.clone();
        let t = thread::spawn(move || block_on(waiter.done()));
        let canceler = thread::spawn(move || cancel.cancel());
        block_on(ctx.done());
        t.join().unwrap();
        canceler.join().unwrap();
    });
}
