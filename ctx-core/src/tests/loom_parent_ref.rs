//! Loom models of children's references on their parent counted in the
//! parent's set (`child_set`'s "Parent references"): the set's reference, the
//! orphaning by the parent's last handle, and the last counted child; a shard
//! installed by a handle revived through an upgrade while the set is
//! orphaned, three shards orphaning, and a set's installer racing another
//! registrant and the last handle (threads pinned to shards with
//! `loom_pin_shard`).

use super::model;
use crate::Context;
use crate::tree::child_set::{ChildSet, loom_pin_shard};
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

/// Holds a weak reference on `parent`'s node and spawns a thread (inserting
/// into shard `shard`) that upgrades it, as a timer's expiry does
/// (`Expiry::context`), and if that succeeds derives a child of the revived
/// handle, which reads the parent's value (7u8) before it goes.
fn revive_and_derive(parent: &Context, shard: usize) -> thread::JoinHandle<()> {
    let node = parent.node().unwrap();
    node.inc_weak();
    thread::spawn(move || {
        loom_pin_shard(shard);
        if node.upgrade() {
            let parent = Context::from_strong(node);
            let child = parent.with_cancel();
            drop(parent);
            assert_eq!(child.0.value::<u8>(), Some(&7));
            drop(child);
        }
        node.dec_weak();
    })
}

/// A weak reference is upgraded (a timer's expiry: `Expiry::context`) while
/// the parent's last handle goes and its counted child is dropped: the set is
/// orphaned once (by whichever release leaves the set's reference alone), the
/// upgraded handle can still derive a child (counted in the header, as the
/// set's reference may be gone), and every node is freed.
#[test]
fn loom_parent_ref_upgrade_vs_last_handle_vs_counted_child() {
    revived_handle_vs_last_handle(0);
}

/// The same with the revived handle's child inserted in another shard, which
/// it installs while the set may be orphaned: if the revival came first, the
/// child counts in the new shard (and the revived handle's release orphans
/// again); if after, the new shard counts nothing and the child counts in the
/// header.
#[test]
fn loom_parent_ref_revived_handle_installs_a_shard_during_orphaning() {
    revived_handle_vs_last_handle(1);
}

/// The parent's last handle goes and its counted child is dropped, while a
/// handle revived from a weak reference derives a child in shard `shard`.
fn revived_handle_vs_last_handle(shard: usize) {
    model(move || {
        let (handles, (child, cancel_child)) = parent_with_a_counted_child();
        let upgrader = revive_and_derive(&handles.0, shard);
        let dropper = thread::spawn(move || {
            assert_eq!(child.value::<u8>(), Some(&7));
            drop((child, cancel_child));
        });
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

/// The accounting of the orphaning on the set alone: children counted in
/// the shards `shards` (one per child) are released, each on a thread of its
/// own, while the set is orphaned: exactly one party is told to release the
/// set's reference.
fn orphan_vs_releases(shards: &'static [usize]) {
    loom::model(move || {
        let set = loom::sync::Arc::new(ChildSet::new());
        let fields: Vec<AtomicU8> = shards.iter().map(|_| AtomicU8::new(IN_HEADER)).collect();
        let entry = |n: usize| std::ptr::without_provenance_mut::<()>(8 * n);
        for (i, (&k, field)) in shards.iter().zip(&fields).enumerate() {
            set.insert_counting(k, entry(i + 1), Some(field));
        }
        let counted: Vec<u8> = fields.iter().map(|f| f.load(Ordering::Relaxed)).collect();
        let expected: Vec<u8> = shards.iter().map(|&k| k as u8).collect();
        assert_eq!(counted, expected);
        let releasers: Vec<_> = counted
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
        set.drain(&mut |_: *mut ()| {});
    });
}

/// Two children, in two shards.
#[test]
fn loom_parent_ref_orphan_vs_releases_in_two_shards() {
    orphan_vs_releases(&[0, 1]);
}

/// Three children, in three shards.
#[test]
fn loom_parent_ref_orphan_vs_releases_in_three_shards() {
    orphan_vs_releases(&[0, 1, 2]);
}

/// Two children in one shard (their releases race each other) and one in
/// another.
#[test]
fn loom_parent_ref_orphan_vs_two_releases_in_one_shard() {
    orphan_vs_releases(&[0, 0, 1]);
}

/// The same, with the revived handle's child kept past the revived handle
/// and the orphaning: it must keep the parent alive on its own.
#[test]
fn loom_parent_ref_revived_handle_child_outlives_everything() {
    model(|| {
        let (handles, (child, cancel_child)) = parent_with_a_counted_child();
        let node = handles.0.node().unwrap();
        node.inc_weak();
        let upgrader = thread::spawn(move || {
            loom_pin_shard(1);
            let kept = node.upgrade().then(|| {
                let parent = Context::from_strong(node);
                parent.with_cancel()
            });
            node.dec_weak();
            kept
        });
        drop((child, cancel_child));
        drop(handles);
        let kept = upgrader.join().unwrap();
        if let Some((c, f)) = kept {
            assert_eq!(c.value::<u8>(), Some(&7));
            drop(f);
            assert_eq!(c.value::<u8>(), Some(&7));
            drop(c);
        }
    });
}

/// The set's installer (the second child) and a third registrant (pinned to
/// another shard) race, each on a thread with a handle of its own that it
/// drops after, while the parent's other handles go: whichever installs the
/// set takes its reference, the other counts in the header or (if it saw the
/// flag) in its shard. Every node freed once.
#[test]
fn loom_parent_ref_installer_vs_registrant_vs_last_handle() {
    installer_vs_registrant(false);
}

/// As above, with the children kept past every handle of the parent and
/// dropped by the main thread last.
#[test]
fn loom_parent_ref_installer_vs_registrant_children_outlive_handles() {
    installer_vs_registrant(true);
}

/// Two registrants, pinned to shards 0 and 1, race the parent's last handles;
/// their children are dropped on their threads, or (`keep`) returned and
/// dropped last, each reading the parent's value first.
fn installer_vs_registrant(keep: bool) {
    model(move || {
        let (parent, cancel) = Context::background().with_value(7u8).with_cancel();
        let canceler = cancel.into_canceler();
        // The inline slot's.
        let first = parent.with_cancel();
        let spawn = |k: usize| {
            let parent = parent.clone();
            thread::spawn(move || {
                loom_pin_shard(k);
                let child = parent.with_cancel();
                drop(parent);
                if keep {
                    return Some(child);
                }
                assert_eq!(child.0.value::<u8>(), Some(&7));
                drop(child);
                None
            })
        };
        let (x, y) = (spawn(0), spawn(1));
        drop((parent, canceler, first));
        for kept in [x.join().unwrap(), y.join().unwrap()].into_iter().flatten() {
            assert_eq!(kept.0.value::<u8>(), Some(&7));
            drop(kept);
        }
    });
}

/// The parent is canceled by one thread while a revived handle derives a
/// child in a new shard and the counted child goes: the walk, the orphaning
/// and the new shard's install interleave.
#[test]
fn loom_parent_ref_cancel_vs_revived_handle_in_new_shard() {
    model(|| {
        let ((parent, canceler), (child, cancel_child)) = parent_with_a_counted_child();
        drop(cancel_child);
        let upgrader = revive_and_derive(&parent, 1);
        let walker = thread::spawn(move || {
            canceler.cancel();
        });
        drop(parent);
        assert_eq!(child.value::<u8>(), Some(&7));
        drop(child);
        upgrader.join().unwrap();
        walker.join().unwrap();
    });
}
