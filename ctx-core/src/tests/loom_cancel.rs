//! Loom models of registration, cancel propagation and unlinking (`tree`).

use super::{model, model_with_preemptions};
use crate::{CancelFunc, Cause, Context, Error};
use loom::thread;

/// The text of a context's cause, if it is done.
fn cause(ctx: &Context) -> Option<String> {
    ctx.cause().map(|cause| cause.to_string())
}

/// Asserts that `handles` handles (contexts and cancel functions) are all that
/// refer to `ctx`'s node: no child holds it, and no registration or timer holds
/// a weak reference on it (besides the one a parent's walk left to the node's
/// detach, still to come, when it drained the node's entry).
fn assert_handles(ctx: &Context, handles: usize) {
    let node = ctx.node().unwrap();
    assert_eq!(node.strong_count(), handles);
    assert_eq!(node.weak_count(), 1 + usize::from(node.owes_drained_slot()));
}

/// A child is created while its parent is canceled: either the registration sees
/// the cancel (the child is born done) or the cancel finds the registration (the
/// parent cancels the child). The child is done either way, nothing stays
/// registered, and the parent's cancel returns: the parent may have had no child
/// set when its walk looked and get one from this registrant afterwards, which
/// must not make it look incomplete forever.
#[test]
fn loom_cancel_insert_vs_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        insert_vs_cancel(&parent, cancel_parent);
        assert_handles(&parent, 1);
    });
}

/// Creates a child of `parent` on another thread while this one cancels
/// `parent`; checks that the child is done and nothing stays registered.
fn insert_vs_cancel(parent: &Context, cancel_parent: CancelFunc) {
    let handle = parent.clone();
    let t = thread::spawn(move || handle.with_cancel());
    cancel_parent.cancel();
    let (child, cancel_child) = t.join().unwrap();

    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(parent.live_children(), 0);
    assert_handles(&child, 2);
    drop((child, cancel_child));
}

/// Two children are created concurrently (racing to flag the parent's children:
/// the winner takes the inline slot, the other allocates the child set) while
/// the parent is canceled: both end up done, nothing stays registered.
#[test]
fn loom_cancel_two_inserts_vs_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let spawn_child = |parent: &Context| {
            let parent = parent.clone();
            thread::spawn(move || parent.with_cancel())
        };
        let first = spawn_child(&parent);
        let second = spawn_child(&parent);
        cancel_parent.cancel();
        for t in [first, second] {
            let (child, cancel_child) = t.join().unwrap();
            assert_eq!(child.err(), Some(Error::Canceled));
            assert_handles(&child, 2);
            drop(cancel_child);
        }
        assert_eq!(parent.live_children(), 0);
        assert_handles(&parent, 1);
    });
}

/// A child is created into a slot of the parent's set that an earlier child
/// left (popped from the free stack, so the registrant makes no fresh index
/// the drain could read) while the parent is canceled. A drain that takes
/// the entry reads the child's node, which must have been made before the
/// slot's store (loom checks the node's memory through its `AccessCheck`).
#[test]
fn loom_cancel_insert_into_a_reused_slot_vs_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        // The first child takes the inline slot; the second one a set slot,
        // which it gives back.
        let first = parent.with_cancel();
        drop(parent.with_cancel());
        assert_eq!(parent.live_children(), 1);
        insert_vs_cancel(&parent, cancel_parent);
        drop(first);
        assert_handles(&parent, 1);
    });
}

/// A child is dropped (its cancel function, then its last handle) while its
/// parent is canceled: the slot is emptied exactly once, by the parent's drain or
/// by the child's unlink.
#[test]
fn loom_cancel_unlink_on_drop_vs_cancel() {
    child_dropped_vs_parent_cancel(Dropped::CancelFuncFirst);
}

/// A child is dropped (canceled and unlinked, its index pushed on the parent's
/// free stack) while a sibling registers with the same parent (popping or bumping
/// an index): the sibling's registration survives, the child's does not.
#[test]
fn loom_cancel_unlink_vs_insert() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let t = thread::spawn(move || drop((cancel_child, child)));
        let (sibling, cancel_sibling) = parent.with_cancel();
        t.join().unwrap();

        assert_eq!(parent.live_children(), 1);
        assert!(!sibling.is_done());
        drop(cancel_sibling);
        assert!(sibling.is_done());
        assert_eq!(parent.live_children(), 0);
        drop(sibling);
        assert_handles(&parent, 2);
        drop(cancel_parent);
    });
}

/// Three threads: a child is dropped (its index goes back on the free stack), a
/// sibling registers (and may reuse that index) and the parent is canceled (its
/// drain may meet the slot empty, holding the old child, or the new one).
#[test]
fn loom_cancel_unlink_vs_insert_vs_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let dropper = thread::spawn(move || drop((cancel_child, child)));
        let handle = parent.clone();
        let inserter = thread::spawn(move || handle.with_cancel());
        cancel_parent.cancel();
        dropper.join().unwrap();
        let (sibling, cancel_sibling) = inserter.join().unwrap();

        assert_eq!(sibling.err(), Some(Error::Canceled));
        assert_handles(&sibling, 2);
        assert_eq!(parent.live_children(), 0);
        drop((sibling, cancel_sibling));
        assert_handles(&parent, 1);
    });
}

/// Two cancels with different causes race: the parent's (cause A) reaches the
/// child through propagation while the child's own (cause B) runs. The first CAS
/// on the child wins, and the child's subtree agrees with it.
#[test]
fn loom_cancel_two_causes() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel_cause();
        let (child, cancel_child) = parent.with_cancel_cause();
        let (grandchild, cancel_grandchild) = child.with_cancel();
        let t = thread::spawn(move || cancel_child.cancel(Cause::msg("B")));
        cancel_parent.cancel(Cause::msg("A"));
        t.join().unwrap();

        assert_eq!(cause(&parent).as_deref(), Some("A"));
        let won = cause(&child).expect("child not done");
        assert!(won == "A" || won == "B", "unexpected cause {won}");
        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(cause(&grandchild), Some(won.clone()));
        assert_eq!(grandchild.err(), Some(Error::Canceled));
        // The reason never changes once stored.
        assert_eq!(cause(&child), Some(won));
        assert_eq!(parent.live_children(), 0);
        assert_eq!(child.live_children(), 0);

        drop((grandchild, cancel_grandchild, child));
        assert_handles(&parent, 1);
    });
}

/// A read on another thread meets a cancel with a cause: a reader that finds the
/// word done reads the record it points to, which must have been made before
/// the word was stored (the reader's load acquires it) and must stay alive
/// until the last reader is done with it (the record is plain memory, which
/// loom checks through the record's `AccessCheck`). The child reads the
/// parent's record, shared by the walk.
#[test]
fn loom_cause_read_vs_cancel_with_cause() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel_cause();
        let (child, cancel_child) = parent.with_cancel();
        let t = thread::spawn(move || {
            let seen = (cause(&child), child.err());
            drop((child, cancel_child));
            seen
        });
        cancel_parent.cancel(Cause::msg("A"));
        assert_eq!(cause(&parent).as_deref(), Some("A"));
        drop(parent);
        // The cause first, then the error: a later read may see the cancel
        // an earlier one did not, never the other way round.
        match t.join().unwrap() {
            (None, _) => {}
            (Some(text), Some(Error::Canceled)) => assert_eq!(text, "A"),
            other => panic!("the reads saw {other:?}"),
        }
    });
}

/// A merge node's two parents are canceled concurrently with different causes:
/// exactly one cause wins, and both parents' sets end up empty.
#[test]
fn loom_cancel_merge_two_parents() {
    model(|| {
        let (a, cancel_a) = Context::background().with_cancel_cause();
        let (b, cancel_b) = Context::background().with_cancel_cause();
        let (merged, cancel_merged) = Context::with_cancel_any(&[a.clone(), b.clone()]);
        assert_eq!(a.live_children(), 1);
        assert_eq!(b.live_children(), 1);
        let t = thread::spawn(move || cancel_b.cancel(Cause::msg("B")));
        cancel_a.cancel(Cause::msg("A"));
        t.join().unwrap();

        let won = cause(&merged).expect("merged context not done");
        assert!(won == "A" || won == "B", "unexpected cause {won}");
        assert_eq!(merged.err(), Some(Error::Canceled));
        assert_eq!(cause(&merged), Some(won));
        assert_eq!(a.live_children(), 0);
        assert_eq!(b.live_children(), 0);

        drop((merged, cancel_merged));
        assert_handles(&a, 1);
        assert_handles(&b, 1);
    });
}

/// A merge node is created while its second parent is canceled: it ends up done,
/// and (canceled through `b`, or born done) it leaves `a` at once.
#[test]
fn loom_cancel_merge_insert_vs_cancel() {
    model(|| {
        let (a, cancel_a) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let parents = [a.clone(), b.clone()];
        let t = thread::spawn(move || Context::with_cancel_any(&parents));
        cancel_b.cancel();
        let (merged, cancel_merged) = t.join().unwrap();

        assert_eq!(merged.err(), Some(Error::Canceled));
        assert_eq!(b.live_children(), 0);
        assert_eq!(a.live_children(), 0);
        drop((merged, cancel_merged));
        assert_handles(&a, 2);
        assert_handles(&b, 1);
        drop(cancel_a);
    });
}

/// A merge node is created while its *first* parent is canceled: the cancel can
/// reach the node (registered with `a`) before the node registers with `b`. It
/// must end up done and, once canceled through `a`, leave `b` at once.
#[test]
fn loom_cancel_merge_insert_vs_cancel_first_parent() {
    model(|| {
        let (a, cancel_a) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let parents = [a.clone(), b.clone()];
        let t = thread::spawn(move || Context::with_cancel_any(&parents));
        cancel_a.cancel();
        let (merged, cancel_merged) = t.join().unwrap();

        assert_eq!(merged.err(), Some(Error::Canceled));
        assert_eq!(a.live_children(), 0);
        assert_eq!(b.live_children(), 0, "a canceled merge node stays in `b`");
        drop((merged, cancel_merged));
        assert_eq!(b.live_children(), 0);
        assert_handles(&a, 1);
        assert_handles(&b, 2);
        drop(cancel_b);
    });
}

/// A merge node registers with three parents while the middle one is canceled.
/// The cancel can come before its registration with `doomed` (the node is born
/// done and never joins `late`), between that and its registration with `late`
/// (the walk closes it and detaches it from the parents it can see, and the
/// registrant's fence and re-check catch the `late` registration the walk
/// missed), or after it. In every case the node ends done, no parent keeps a
/// registration (`live_children() == 0`, no weak reference left behind) and
/// every node is freed.
#[test]
fn loom_cancel_merge_registration_vs_done_parent() {
    model(|| {
        let (live, cancel_live) = Context::background().with_cancel();
        let (doomed, cancel_doomed) = Context::background().with_cancel();
        let (late, cancel_late) = Context::background().with_cancel();
        let parents = [live.clone(), doomed.clone(), late.clone()];
        let t = thread::spawn(move || Context::with_cancel_any(&parents));
        cancel_doomed.cancel();
        let (merged, cancel_merged) = t.join().unwrap();

        assert_eq!(merged.err(), Some(Error::Canceled));
        assert_eq!(live.live_children(), 0, "a done merge node stays in `live`");
        assert_eq!(doomed.live_children(), 0);
        assert_eq!(late.live_children(), 0, "a done merge node stays in `late`");
        assert!(!live.is_done() && !late.is_done());
        drop((merged, cancel_merged));
        assert_handles(&live, 2);
        assert_handles(&doomed, 1);
        assert_handles(&late, 2);
        drop((cancel_live, cancel_late));
    });
}

/// The linearizable cancel: in a chain `root → a → b`, one thread cancels `root`
/// while another cancels `a` through its own function. Whichever closes `a`
/// first, when the cancel of `a` returns, `b` is done (a cancel that lost the
/// race for `a` waits for the winner's walk), and so is everything else once the
/// cancel of `root` returns. Nothing stays registered and every node is freed.
#[test]
fn loom_cancel_returned_cancel_means_done_subtree() {
    model(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (a, cancel_a) = root.with_cancel();
        let (b, cancel_b) = a.with_cancel();
        let b_seen = b.clone();
        let t = thread::spawn(move || {
            cancel_a.cancel();
            assert!(
                b_seen.is_done(),
                "cancel of `a` returned before `b` was done"
            );
        });
        cancel_root.cancel();
        assert!(
            a.is_done() && b.is_done(),
            "cancel of `root` returned early"
        );
        t.join().unwrap();

        assert_eq!(root.live_children(), 0);
        assert_eq!(a.live_children(), 0);
        drop((b, cancel_b));
        assert_handles(&a, 1);
        drop(a);
        assert_handles(&root, 1);
    });
}

/// Two cancels of the same node race (a group's first failure and its plain
/// cancel, both through one shared `GroupCancel`): after *each* returns, the
/// node's child and grandchild are done, and the subtree agrees with the reason
/// that won the node.
#[test]
fn loom_cancel_same_node_twice() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel_cause();
        let (child, cancel_child) = ctx.with_cancel();
        let (grandchild, cancel_grandchild) = child.with_cancel();
        let group = crate::sync::Arc::new(crate::GroupCancel::new(cancel));
        let other = group.clone();
        let seen = grandchild.clone();
        let t = thread::spawn(move || {
            other.fail(Cause::msg("failed"));
            assert!(
                seen.is_done(),
                "a racing cancel returned before the grandchild was done"
            );
        });
        group.cancel();
        assert!(child.is_done() && grandchild.is_done());
        t.join().unwrap();

        let won = cause(&ctx).expect("not done");
        assert!(
            won == "failed" || won == "context canceled",
            "unexpected cause {won}"
        );
        assert_eq!(cause(&child), Some(won.clone()));
        assert_eq!(cause(&grandchild), Some(won));
        assert_eq!(ctx.live_children(), 0);
        assert_eq!(child.live_children(), 0);
        drop((grandchild, cancel_grandchild, child, cancel_child, group));
        assert_handles(&ctx, 1);
    });
}

/// How [`child_dropped_vs_parent_cancel`] lets its child go.
#[derive(Clone, Copy, PartialEq)]
enum Dropped {
    /// Its cancel function first (which cancels it), then its last handle.
    CancelFuncFirst,
    /// Live: its cancel function turned into a `Canceler`, so no cancel runs on
    /// the way. The walk may close it with only the slot's weak reference,
    /// while the child's drop detaches it and waits for `drained` before
    /// dropping its payload.
    Live,
    /// Live, after it once had a child of its own (gone again), so the walk
    /// pins it first and may find it being dropped.
    LiveAfterAGrandchild,
}

/// A child is dropped on another thread (`how`) while its parent is canceled:
/// nothing is freed twice or leaked (the model counts live nodes), and the
/// parent ends done and empty.
fn child_dropped_vs_parent_cancel(how: Dropped) {
    model(move || {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        assert_eq!(parent.live_children(), 1);
        if how == Dropped::LiveAfterAGrandchild {
            drop(child.with_cancel());
        }
        let t = if how == Dropped::CancelFuncFirst {
            thread::spawn(move || {
                drop(cancel_child);
                drop(child);
            })
        } else {
            let canceler = cancel_child.into_canceler();
            thread::spawn(move || drop((canceler, child)))
        };
        cancel_parent.cancel();
        t.join().unwrap();

        assert!(parent.is_done());
        assert_eq!(parent.live_children(), 0);
        assert_handles(&parent, 1);
    });
}

#[test]
fn loom_cancel_live_leaf_dropped_vs_parent_cancel() {
    child_dropped_vs_parent_cancel(Dropped::Live);
}

#[test]
fn loom_cancel_live_inner_node_dropped_vs_parent_cancel() {
    child_dropped_vs_parent_cancel(Dropped::LiveAfterAGrandchild);
}

/// A child with a child of its own is walked under its `drained` flag alone
/// (no strong reference of the walk's) when the walk's close wins, while
/// another thread drops every handle of both, the grandchild last: the last
/// strong reference on the child goes with the grandchild's payload, in the
/// middle of the walk. Nothing is freed twice, touched after it is freed, or
/// leaked (the model counts live nodes), and the parent ends done and empty.
#[test]
fn loom_cancel_inner_node_dropped_with_its_child_vs_parent_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let (grandchild, cancel_grandchild) = child.with_cancel();
        let child = (cancel_child.into_canceler(), child);
        let grandchild = (cancel_grandchild.into_canceler(), grandchild);
        let t = thread::spawn(move || {
            drop(child);
            drop(grandchild);
        });
        cancel_parent.cancel();
        t.join().unwrap();

        assert!(parent.is_done());
        assert_eq!(parent.live_children(), 0);
        assert_handles(&parent, 1);
    });
}

/// The walk of `root` wins the close of `a` (so it walks `a` under `a`'s
/// `drained` flag alone) while another thread's cancel of `b`, below `a`,
/// walks `b`'s own child: `a` may then have to wait for that walk, and is
/// pinned with a strong reference before it blocks. After both cancels the
/// whole chain is done, nothing stays registered, and every reference the
/// walks took is given back (the counts are exact; a block without the pin
/// releases one too many).
#[test]
fn loom_cancel_inner_node_blocked_on_a_foreign_child() {
    model(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let (a, cancel_a) = root.with_cancel();
        let (b, cancel_b) = a.with_cancel();
        let (c, cancel_c) = b.with_cancel();
        let t = thread::spawn(move || cancel_b.cancel());
        cancel_root.cancel();
        assert!(
            a.is_done() && c.is_done(),
            "cancel of `root` returned early"
        );
        t.join().unwrap();

        assert_eq!(root.live_children(), 0);
        assert_eq!(a.live_children(), 0);
        assert_eq!(b.live_children(), 0);
        drop((c, cancel_c));
        assert_handles(&b, 1);
        drop(b);
        assert_handles(&a, 2);
        drop((a, cancel_a));
        assert_handles(&root, 1);
    });
}

/// A parent's cancel races its child's own cancel, which a thread makes after
/// it saw the parent done (the parent's walk may not have reached the child
/// yet): that cancel came after the parent's, so the child ends with the
/// parent's cause, as in Go (whose parent holds its lock until every child is
/// closed), and its cancel reports that it ended nothing. A child canceled
/// before the thread saw the parent done may keep its own. Either way the
/// child's subtree agrees with it.
#[test]
fn loom_cancel_child_canceled_after_its_parent_was_seen_done() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel_cause();
        let (child, cancel_child) = parent.with_cancel_cause();
        let (grandchild, _cancel_grandchild) = child.with_cancel();
        let t = thread::spawn(move || cancel_parent.cancel(Cause::msg("parent")));
        // Lets the cancel run first (a switch loom's preemption bound does not
        // count), so that the walk is caught between the parent's close and
        // the child's.
        thread::yield_now();
        let saw_parent_done = parent.is_done();
        let ended = cancel_child
            .canceler()
            .cancel_with_cause(Cause::msg("child"));
        t.join().unwrap();

        if saw_parent_done {
            assert_eq!(cause(&child).as_deref(), Some("parent"));
            assert!(
                !ended,
                "the cancel reported ending a child its parent ended"
            );
        }
        drop(cancel_child);
        assert!(cause(&child).is_some());
        assert_eq!(cause(&grandchild), cause(&child));
        assert_eq!(parent.live_children(), 0);
        assert_eq!(child.live_children(), 0);
    });
}

/// The parent's first child (its inline slot's registrant) is made and
/// dropped at once while the parent is canceled: its drop may meet the
/// parent's walk holding its entry. Nothing stays registered or referenced.
#[test]
fn loom_cancel_first_child_dropped_at_once_vs_parent_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let handle = parent.clone();
        let t = thread::spawn(move || {
            let (child, cancel_child) = handle.with_cancel();
            drop((cancel_child, child));
            drop(handle);
        });
        cancel_parent.cancel();
        t.join().unwrap();
        assert_eq!(parent.live_children(), 0);
        assert_handles(&parent, 1);
    });
}

/// A chain of first children (each its parent's inline registrant) is built
/// on one thread while the root is canceled: every level ends done, and
/// nothing stays registered.
#[test]
fn loom_cancel_first_child_chain_vs_root_cancel() {
    model(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let handle = root.clone();
        let t = thread::spawn(move || {
            let (child, cancel_child) = handle.with_cancel();
            let (grandchild, cancel_grandchild) = child.with_cancel();
            (child, cancel_child, grandchild, cancel_grandchild)
        });
        cancel_root.cancel();
        let (child, cancel_child, grandchild, cancel_grandchild) = t.join().unwrap();
        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(grandchild.err(), Some(Error::Canceled));
        assert_eq!(root.live_children(), 0);
        assert_eq!(child.live_children(), 0);
        drop((grandchild, cancel_grandchild));
        drop((child, cancel_child));
        assert_handles(&root, 1);
    });
}

/// A merge node becomes the first registrant of both its parents while both
/// are canceled: it ends done, registered nowhere.
#[test]
fn loom_cancel_merge_first_registrant_vs_both_parents_canceled() {
    model(|| {
        let (a, cancel_a) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let parents = [a.clone(), b.clone()];
        let t1 = thread::spawn(move || Context::with_cancel_any(&parents));
        let t2 = thread::spawn(move || cancel_b.cancel());
        cancel_a.cancel();
        t2.join().unwrap();
        let (merged, cancel_merged) = t1.join().unwrap();
        assert_eq!(merged.err(), Some(Error::Canceled));
        assert_eq!(a.live_children(), 0);
        assert_eq!(b.live_children(), 0);
        drop((merged, cancel_merged));
        assert_handles(&a, 1);
        assert_handles(&b, 1);
    });
}

/// A merge node takes `a`'s inline slot while `b` is canceled, and its handles
/// go at once on the registering thread: it leaves both parents.
#[test]
fn loom_cancel_merge_first_registrant_dropped_vs_other_parent_cancel() {
    model(|| {
        let (a, cancel_a) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let parents = [a.clone(), b.clone()];
        let t = thread::spawn(move || drop(Context::with_cancel_any(&parents)));
        cancel_b.cancel();
        t.join().unwrap();
        assert_eq!(a.live_children(), 0);
        assert_eq!(b.live_children(), 0);
        assert_handles(&a, 2);
        assert_handles(&b, 1);
        drop(cancel_a);
    });
}

/// A child is created and dropped at once while its parent is canceled: when
/// its registration finds the parent done and its take-back fails (the walk
/// drained the entry), it must wait for the walk's `drained` flag before its
/// handles may go (`register`: `wait_drained`), or the walk closes and flags
/// a node whose payload is gone (loom reports the payload's read of
/// `drained` in `CancelPart::drop` racing the walk's `mark_drained`).
///
/// The race takes three preemptions (insert | close, drain, the child's
/// close | take-back fails, every handle dropped | `mark_drained`), one more
/// than `cargo xtask loom` allows by default, so this model raises its own
/// bound (it explores a few hundred executions).
#[test]
fn loom_cancel_born_done_child_dropped_vs_cancel() {
    model_with_preemptions(3, || {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let t = thread::spawn(move || cancel_parent.cancel());
        let (child, cancel_child) = parent.with_cancel();
        drop(cancel_child);
        drop(child);
        t.join().unwrap();
        assert!(parent.is_done());
        assert_eq!(parent.live_children(), 0);
    });
}

/// A merge node's last handles go on one thread while a parent's walk drains
/// its entry on another: the walk's upgrade fails (the node is being
/// dropped), and the walk gives the slot's weak reference back at once (a
/// merge node never waits for `drained`), so the node is freed.
#[test]
fn loom_cancel_merge_dropped_vs_parent_walk_draining_it() {
    model(|| {
        let (a, cancel_a) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let merged = Context::with_cancel_any(&[a.clone(), b.clone()]);
        let t = thread::spawn(move || drop(merged));
        cancel_a.cancel();
        t.join().unwrap();
        assert_eq!(a.live_children(), 0);
        assert_eq!(b.live_children(), 0);
        assert_handles(&b, 2);
        drop(cancel_b);
    });
}
