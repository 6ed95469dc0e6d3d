//! How long a context's memory lives: a child keeps every ancestor alive (and
//! so readable) until the child goes, however the ancestors' own handles went
//! and on whichever threads the children were made and dropped. Children made
//! on different threads count their reference on a shared parent in different
//! shards of the parent's child set, so these tests spread them over threads.

use ctx_core::{CancelFunc, Context};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// A value that counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A cancelable context below a [`Counted`] value, and the value's drop count.
fn counted_parent() -> (Context, CancelFunc, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let (parent, cancel) = Context::background()
        .with_value(Counted(drops.clone()))
        .with_cancel();
    (parent, cancel, drops)
}

/// `per_thread` children of `parent` made on each of `threads` threads (and
/// one on this thread first, which takes the parent's inline slot).
fn children_on_threads(
    parent: &Context,
    threads: usize,
    per_thread: usize,
) -> Vec<(Context, CancelFunc)> {
    let mut children = vec![parent.with_cancel()];
    for _ in 0..threads {
        let parent = parent.clone();
        let made = thread::spawn(move || {
            (0..per_thread)
                .map(|_| parent.with_cancel())
                .collect::<Vec<_>>()
        });
        children.extend(made.join().unwrap());
    }
    children
}

/// Drops `children` a few at a time, each batch on a thread of its own,
/// checking before every batch that all still read the value and that it was
/// not dropped.
fn drop_children_in_batches(children: Vec<(Context, CancelFunc)>, drops: &AtomicUsize) {
    let mut children = children;
    while !children.is_empty() {
        for (child, _) in &children {
            assert_eq!(child.value::<Counted>().map(|_| ()), Some(()));
        }
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "dropped under a live child"
        );
        let batch: Vec<_> = children.drain(..children.len().min(3)).collect();
        thread::spawn(move || drop(batch)).join().unwrap();
    }
}

#[test]
fn a_parent_without_handles_lives_until_its_last_child_goes() {
    let (parent, cancel, drops) = counted_parent();
    let children = children_on_threads(&parent, 4, 3);
    // The parent's last handles go without canceling it.
    drop(cancel.into_canceler());
    drop(parent);
    assert!(children.iter().all(|(child, _)| !child.is_done()));
    drop_children_in_batches(children, &drops);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "freed once, with the last child"
    );
}

#[test]
fn a_canceled_parent_without_handles_lives_until_its_last_child_goes() {
    let (parent, cancel, drops) = counted_parent();
    let children = children_on_threads(&parent, 4, 3);
    cancel.cancel();
    drop(parent);
    assert!(children.iter().all(|(child, _)| child.is_done()));
    drop_children_in_batches(children, &drops);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "freed once, with the last child"
    );
}

#[test]
fn the_parent_goes_with_its_last_handle_once_its_children_went() {
    let (parent, cancel, drops) = counted_parent();
    let children = children_on_threads(&parent, 4, 3);
    drop_children_in_batches(children, &drops);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(cancel);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "a handle is left");
    drop(parent);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Children of children, all made on several threads, with every handle of
/// the inner contexts dropped first: the whole tree stays readable from the
/// leaves and is freed once, when the last leaf goes.
#[test]
fn a_tree_without_inner_handles_lives_until_its_last_leaf_goes() {
    let (root, cancel_root, drops) = counted_parent();
    let mut leaves = Vec::new();
    for middle in children_on_threads(&root, 3, 2) {
        leaves.extend(children_on_threads(&middle.0, 2, 2));
        drop(middle);
    }
    drop(cancel_root.into_canceler());
    drop(root);
    drop_children_in_batches(leaves, &drops);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// A deadline child counts its reference on its parent like any other; its
/// timer and its parent's value stay readable until it goes.
#[test]
fn a_deadline_child_keeps_a_parent_without_handles() {
    let (parent, cancel, drops) = counted_parent();
    let first = parent.with_cancel();
    let second = parent.with_cancel();
    let far = std::time::Duration::from_secs(3600);
    let timed: Vec<_> = (0..3)
        .map(|_| {
            let parent = parent.clone();
            thread::spawn(move || parent.with_timeout(far))
                .join()
                .unwrap()
        })
        .collect();
    drop(cancel.into_canceler());
    drop(parent);
    drop((first, second));
    for (child, _) in &timed {
        assert!(child.deadline().is_some());
        assert!(child.value::<Counted>().is_some());
    }
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(timed);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}
