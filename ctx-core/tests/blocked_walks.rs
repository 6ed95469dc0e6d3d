//! A walk blocked on a subtree that another thread walks: its node stays in
//! its parent, and incomplete, until that subtree is done, so a cancel of the
//! parent that finds it waits for it, and returns with every descendant done.
//!
//! `root → inner → b → chain of CHAIN contexts`: one thread cancels `b` (a
//! long walk), a second cancels `root` once it saw `b` done (its walk owns
//! `inner`, which blocks on `b`), and the test thread cancels `top`, `root`'s
//! parent, once it saw `root` done. A walk that took its root out of its
//! parent before it unblocked, or that completed `inner`'s parent before
//! `inner`, would let the cancel of `top` return with the chain still live.
//! (A loom model of it needs three threads and two preemptions, with two
//! cancels polling: minutes of exploration; real threads provoke it at once,
//! the chain giving the other threads time.)

mod support;

use ctx_core::Context;
use std::thread;
use support::scaled;

/// Long enough that the walk of `b` outlasts the other two threads' steps
/// (under Miri, the shape alone: too short to provoke the race).
const CHAIN: usize = scaled(50_000, 20);

fn spin_until(done: impl Fn() -> bool) {
    while !done() {
        std::hint::spin_loop();
    }
}

#[test]
fn a_parent_cancel_waits_for_a_child_walk_blocked_on_another_thread() {
    for round in 0..scaled(200, 2) {
        let (top, cancel_top) = Context::background().with_cancel();
        let (root, cancel_root) = top.with_cancel();
        let (inner, _cancel_inner) = root.with_cancel();
        let (b, cancel_b) = inner.with_cancel();
        let mut leaf = b.clone();
        let mut cancels = Vec::with_capacity(CHAIN);
        for _ in 0..CHAIN {
            let (child, cancel) = leaf.with_cancel();
            cancels.push(cancel);
            leaf = child;
        }
        let walker = thread::spawn(move || cancel_b.cancel());
        let seen = b.clone();
        let root_canceler = thread::spawn(move || {
            spin_until(|| seen.is_done());
            cancel_root.cancel();
        });
        spin_until(|| root.is_done());
        cancel_top.cancel();
        assert!(
            inner.is_done() && b.is_done() && leaf.is_done(),
            "round {round}: the cancel of `top` returned before the subtree was done"
        );
        walker.join().unwrap();
        root_canceler.join().unwrap();
        drop(cancels);
    }
}
