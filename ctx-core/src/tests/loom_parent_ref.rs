//! Loom models of children's references on their parent counted in the
//! parent's set (`child_set`'s "Parent references"): the set's reference, the
//! orphaning by the parent's last handle, and the last counted child.

use super::model;
use crate::Context;
use crate::tree::child_set::ChildSet;
use crate::tree::node::IN_HEADER;
use loom::sync::atomic::{AtomicU8, Ordering};
use loom::thread;

/// A child of `parent` that counts its reference in a shard of `parent`'s
/// set: its third, made after one that takes the inline slot and one that
/// installs the set (both counted in the parent's header, and dropped here).
fn counted_child(parent: &Context) -> (Context, crate::CancelFunc) {
    let mut children: Vec<_> = (0..3).map(|_| parent.with_cancel()).collect();
    let counted = |child: &Context| {
        let part = child.node().unwrap().cancel_part();
        part.parent_shard.load(Ordering::Relaxed) != IN_HEADER
    };
    assert!(!counted(&children[0].0) && !counted(&children[1].0));
    assert!(counted(&children[2].0), "the third child counts in a shard");
    children.pop().unwrap()
}

/// A parent below a value (7u8), its handles (the cancel function turned into
/// a canceler, so that dropping it cancels nothing) and a counted child.
fn parent_with_a_counted_child() -> ((Context, crate::Canceler), (Context, crate::CancelFunc)) {
    let (parent, cancel) = Context::background().with_value(7u8).with_cancel();
    let child = counted_child(&parent);
    ((parent, cancel.into_canceler()), child)
}

/// The parent's last handle goes (without a cancel) while its counted child is
/// dropped: whichever comes last frees the parent, once; the child reads the
/// parent's value until it goes.
#[test]
fn loom_parent_ref_last_handle_vs_counted_child() {
    model(|| {
        let (handles, (child, cancel_child)) = parent_with_a_counted_child();
        let t = thread::spawn(move || {
            assert_eq!(child.value::<u8>(), Some(&7));
            drop((child, cancel_child));
        });
        drop(handles);
        t.join().unwrap();
    });
}

/// The same with the parent canceled first, by a thread of its own, while the
/// child is dropped: the walk takes the child's entry, the child keeps
/// counting its reference in the shard until its drop.
#[test]
fn loom_parent_ref_cancel_and_last_handle_vs_counted_child() {
    model(|| {
        let ((parent, canceler), (child, cancel_child)) = parent_with_a_counted_child();
        let t = thread::spawn(move || {
            drop(cancel_child);
            assert_eq!(child.value::<u8>(), Some(&7));
            drop(child);
        });
        canceler.cancel();
        drop((parent, canceler));
        t.join().unwrap();
    });
}

/// A weak reference is upgraded (a timer's expiry: `Expiry::context`) while
/// the parent's last handle goes and its counted child is dropped: the set is
/// orphaned once (by whichever release leaves the set's reference alone), the
/// upgraded handle can still derive a child (counted in the header, as the
/// set's reference may be gone), and every node is freed.
#[test]
fn loom_parent_ref_upgrade_vs_last_handle_vs_counted_child() {
    model(|| {
        let (handles, (child, cancel_child)) = parent_with_a_counted_child();
        let node = handles.0.node().unwrap();
        node.inc_weak();
        let upgrader = thread::spawn(move || {
            if node.upgrade() {
                let parent = Context::from_strong(node);
                drop(parent.with_cancel());
            }
            node.dec_weak();
        });
        let dropper = thread::spawn(move || drop((child, cancel_child)));
        drop(handles);
        upgrader.join().unwrap();
        dropper.join().unwrap();
    });
}

/// A root's walk reaches a counted child whose own handles go meanwhile (its
/// set orphaned while the walk may be inside it), and that child's counted
/// child is dropped at the same time: every node freed once.
#[test]
fn loom_parent_ref_walk_vs_orphaned_counted_child() {
    model(|| {
        let ((root, canceler), (middle, cancel_middle)) = parent_with_a_counted_child();
        let leaf = counted_child(&middle);
        let middle_handles = (middle, cancel_middle.into_canceler());
        let walker = thread::spawn(move || {
            canceler.cancel();
            drop((root, canceler));
        });
        let dropper = thread::spawn(move || drop(middle_handles));
        assert_eq!(leaf.0.value::<u8>(), Some(&7));
        drop(leaf);
        walker.join().unwrap();
        dropper.join().unwrap();
    });
}

/// The accounting of the orphaning on the set alone, with children counted in
/// two shards released while the set is orphaned: exactly one party is told
/// to release the set's reference.
#[test]
fn loom_parent_ref_orphan_vs_releases_in_two_shards() {
    loom::model(|| {
        let set = loom::sync::Arc::new(ChildSet::new());
        let fields = [AtomicU8::new(IN_HEADER), AtomicU8::new(IN_HEADER)];
        let entry = |n: usize| std::ptr::without_provenance_mut::<()>(8 * n);
        for (k, field) in fields.iter().enumerate() {
            set.insert_counting(k, entry(k + 1), Some(field));
        }
        let shards: Vec<u8> = fields.iter().map(|f| f.load(Ordering::Relaxed)).collect();
        assert_eq!(shards, [0, 1]);
        let releasers: Vec<_> = shards
            .into_iter()
            .map(|k| {
                let set = set.clone();
                thread::spawn(move || set.release_parent_ref(k))
            })
            .collect();
        let mut last = usize::from(set.orphan());
        for t in releasers {
            last += usize::from(t.join().unwrap());
        }
        assert_eq!(last, 1, "one party releases the set's reference");
        set.drain(|_| {});
    });
}
