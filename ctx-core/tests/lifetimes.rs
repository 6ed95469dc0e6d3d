//! How long a context's memory lives: a child keeps every ancestor alive (and
//! so readable) until the child goes, however the ancestors' own handles went
//! and on whichever threads the children were made and dropped. Children made
//! on different threads count their reference on a shared parent in different
//! shards of the parent's child set, so these tests spread them over threads.

mod support;

use ctx_core::{CancelFunc, Context, Expiry};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;
use support::{KeepExpiries, eventually, scaled};

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

/// [`drop_children_in_batches`] for the last holders of the [`Counted`]
/// value: it must be dropped exactly once, with the last batch.
fn drop_last_children(children: Vec<(Context, CancelFunc)>, drops: &AtomicUsize) {
    drop_children_in_batches(children, drops);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "freed once, with the last child"
    );
}

#[test]
fn a_parent_without_handles_lives_until_its_last_child_goes() {
    let (parent, cancel, drops) = counted_parent();
    let children = children_on_threads(&parent, 4, 3);
    // The parent's last handles go without canceling it.
    drop(cancel.into_canceler());
    drop(parent);
    assert!(children.iter().all(|(child, _)| !child.is_done()));
    drop_last_children(children, &drops);
}

#[test]
fn a_canceled_parent_without_handles_lives_until_its_last_child_goes() {
    let (parent, cancel, drops) = counted_parent();
    let children = children_on_threads(&parent, 4, 3);
    cancel.cancel();
    drop(parent);
    assert!(children.iter().all(|(child, _)| child.is_done()));
    drop_last_children(children, &drops);
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
    drop_last_children(leaves, &drops);
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

/// `n` children of `parent`, each made on a thread of its own (so, in the
/// parent's set, mostly in shards of their own).
fn spread(parent: &Context, n: usize) -> Vec<(Context, CancelFunc)> {
    (0..n)
        .map(|_| {
            let parent = parent.clone();
            thread::spawn(move || parent.with_cancel()).join().unwrap()
        })
        .collect()
}

/// A deadline context (an hour away) on a [`KeepExpiries`] timer, below a
/// [`Counted`] value; the timer and the value's drop count.
fn timed_parent() -> (Context, CancelFunc, Arc<KeepExpiries>, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let timer = Arc::new(KeepExpiries::default());
    let (parent, cancel) = Context::background()
        .with_timer(timer.clone())
        .with_value(Counted(drops.clone()))
        .with_timeout(Duration::from_secs(3600));
    (parent, cancel, timer, drops)
}

/// A deadline parent whose handles all went (without a cancel) is reached
/// again through its expiry (`Expiry::context`, as a backend may), derives
/// more children, and fires: its first children still read it, and it is
/// freed once, with the last of all of them.
#[test]
fn a_parent_reached_again_through_its_expiry_after_its_handles_went() {
    let (parent, cancel, timer, drops) = timed_parent();
    let mut children = spread(&parent, 5);
    drop(cancel.into_canceler());
    drop(parent);
    let expiry = timer.0.lock().unwrap().pop().expect("armed");
    let again = expiry.context().expect("alive through its children");
    let more = spread(&again, 3);
    drop(again);
    children.drain(..3);
    expiry.fire();
    drop(more);
    for (child, _) in &children {
        assert!(child.is_done());
        assert!(child.value::<Counted>().is_some() && child.deadline().is_some());
    }
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(children);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Children of a `with_cancel_any` node count their references in its set
/// like any other: the merge node, and its parents, live until they go.
#[test]
fn a_merge_parent_lives_until_its_last_child_goes() {
    let (a, cancel_a, drops) = counted_parent();
    let (b, cancel_b) = Context::background().with_cancel();
    let (merged, cancel_merged) = Context::with_cancel_any(&[a.clone(), b.clone()]);
    drop((a, b));
    let children = spread(&merged, 6);
    drop(cancel_merged.into_canceler());
    drop(merged);
    cancel_b.cancel();
    assert!(children.iter().all(|(child, _)| child.is_done()));
    drop(cancel_a);
    drop_last_children(children, &drops);
}

/// A parent's set installed by callbacks registered through a value node
/// below it (which count in the value node, not in the set), then children
/// counted in the set: the parent goes with the last of them all.
#[test]
fn a_set_installed_through_a_value_node_counts_the_children_after() {
    let (parent, cancel, drops) = counted_parent();
    let below = parent.with_value(1u8);
    let first = below.after_func(|| {});
    let second = below.after_func(|| {});
    let children = spread(&parent, 4);
    drop(cancel.into_canceler());
    drop(parent);
    drop(first);
    let grandchildren = spread(&below, 2);
    drop(below);
    drop(grandchildren);
    assert!(second.stop());
    drop(second);
    drop_last_children(children, &drops);
}

/// Every inner handle of a three-level tree goes, then the root is canceled
/// on another thread while the leaves read it, then the leaves go from two
/// threads: freed once, after the last leaf.
#[test]
fn a_tree_canceled_from_another_thread_lives_until_its_last_leaf_goes() {
    let (root, cancel_root, drops) = counted_parent();
    let mut level = vec![root.clone()];
    let mut inner = Vec::new();
    for width in 2..5 {
        let mut next = Vec::new();
        for ctx in &level {
            for (child, cancel) in spread(ctx, width) {
                next.push(child.clone());
                inner.push((child, cancel.into_canceler()));
            }
        }
        level = next;
    }
    drop(inner);
    drop(root);
    let canceler = thread::spawn(move || cancel_root.cancel());
    assert!(level.iter().all(|leaf| leaf.value::<Counted>().is_some()));
    canceler.join().unwrap();
    assert!(level.iter().all(Context::is_done));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    let half = level.split_off(level.len() / 2);
    let other = thread::spawn(move || drop(half));
    drop(level);
    other.join().unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Many rounds of a race between a deadline parent's last handles, upgrades
/// through its expiry (each deriving a child), its cancel, its children's
/// drops on four threads and the expiry's firing: the parent's value is
/// dropped exactly once per round, and never while a child reads it.
#[test]
fn last_handles_upgrades_and_children_race() {
    const THREADS: usize = 4;
    for round in 0..scaled(2000, 3) {
        let (parent, cancel, timer, drops) = timed_parent();
        // The inline slot's child and the set's installer count in the header.
        let first = (parent.with_cancel(), parent.with_cancel());
        let expiry = timer.0.lock().unwrap().pop().expect("armed");
        let expiry = Arc::new(Mutex::new(Some(expiry)));
        let start = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (parent, start, expiry) = (parent.clone(), start.clone(), expiry.clone());
                thread::spawn(move || {
                    let mut children: Vec<_> = (0..3).map(|_| parent.with_cancel()).collect();
                    start.wait();
                    if (round + t) % 2 == 0 {
                        drop(parent);
                    }
                    let again = expiry.lock().unwrap().as_ref().and_then(Expiry::context);
                    if let Some(again) = again {
                        children.push(again.with_cancel());
                    }
                    if t == 0 {
                        let taken = expiry.lock().unwrap().take();
                        taken.expect("fired once").fire();
                    }
                    for (child, _) in &children {
                        assert!(child.value::<Counted>().is_some());
                    }
                    children.truncate(children.len() / 2);
                    drop(children);
                })
            })
            .collect();
        start.wait();
        if round % 2 == 0 {
            drop(cancel.into_canceler());
        } else {
            cancel.cancel();
        }
        drop((parent, first));
        for thread in threads {
            thread.join().unwrap();
        }
        drop(expiry);
        // The expiry's walk may leave the drop of what it held to the
        // runner's threads (user code never runs on a timer's thread).
        assert!(
            eventually(|| drops.load(Ordering::SeqCst) != 0),
            "round {round}: never freed"
        );
        assert_eq!(drops.load(Ordering::SeqCst), 1, "round {round}");
    }
}
