//! Churn and scale: many threads creating, canceling and dropping children of one
//! shared parent; millions of short-lived children under one long-lived parent
//! with the memory they use measured; and chains a million contexts deep that
//! cancel and drop on a small stack.
//!
//! A counting allocator wraps the system one so that the memory test can assert
//! that memory stays flat. It counts per thread, so tests running in parallel do
//! not disturb each other's numbers.

mod support;

use ctx_core::{CancelFunc, Context, Error};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use support::{Calls, ManualTimer, Rng, scaled};

/// The system allocator, counting the bytes the current thread holds.
struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static NET_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counting
// touches only a const-initialized thread-local cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count(bytes: isize) {
    // During thread teardown the cell may be gone; such frees are not counted.
    let _ = NET_BYTES.try_with(|net| net.set(net.get() + bytes));
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes this thread holds right now, by the counting allocator.
fn net_bytes() -> isize {
    NET_BYTES.with(Cell::get)
}

#[test]
fn churn_from_several_threads_leaves_the_shared_parent_empty() {
    let threads = scaled(4, 2);
    let rounds = scaled(20_000, 20);
    let timer = ManualTimer::new();
    let (parent, cancel_parent) = timer.root().with_cancel();
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let parent = parent.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(t as u64);
                let calls = Calls::new();
                let mut stopped = 0;
                let mut registered = 0;
                let mut kept: Vec<(Context, CancelFunc)> = Vec::new();
                barrier.wait();
                for _ in 0..rounds {
                    let (child, cancel) = match rng.below(4) {
                        0 => parent.with_cancel(),
                        1 => parent.with_value(t).with_cancel(),
                        2 => parent.with_timeout(Duration::from_secs(3600)),
                        _ => {
                            registered += 1;
                            if parent.after_func(calls.callback()).stop() {
                                stopped += 1;
                            }
                            parent.with_cancel()
                        }
                    };
                    // Children of the child come and go with it.
                    let (grandchild, _cancel_grandchild) = child.with_cancel();
                    match rng.below(4) {
                        0 => cancel.cancel(),
                        1 => drop((child, cancel)),
                        2 => drop((cancel, child)),
                        _ => kept.push((child, cancel)),
                    }
                    if kept.len() > 16 {
                        let victim = rng.below(kept.len());
                        drop(kept.swap_remove(victim));
                    }
                    assert!(
                        grandchild.err().is_none() || grandchild.err() == Some(Error::Canceled)
                    );
                }
                drop(kept);
                (registered, stopped, calls.get())
            })
        })
        .collect();
    for worker in workers {
        let (registered, stopped, ran) = worker.join().unwrap();
        assert_eq!(
            stopped, registered,
            "the parent is never canceled, so every stop wins"
        );
        assert_eq!(ran, 0);
    }
    assert_eq!(parent.live_children(), 0);
    assert_eq!(timer.armed(), 0);
    assert_eq!(parent.err(), None);
    cancel_parent.cancel();
}

#[test]
fn churn_while_subtrees_are_canceled_from_another_thread() {
    let rounds = scaled(2_000, 10);
    let (root, cancel_root) = Context::background().with_cancel();
    let (to_canceler, from_creator) = std::sync::mpsc::channel::<CancelFunc>();
    let (to_creator, from_canceler) = std::sync::mpsc::channel::<()>();
    let canceler = thread::spawn(move || {
        for cancel in from_creator {
            cancel.cancel();
            // Tell the creator that this cancel has returned.
            to_creator.send(()).unwrap();
        }
    });
    let creator = {
        let root = root.clone();
        thread::spawn(move || {
            for round in 0..rounds {
                let (subtree, cancel) = root.with_cancel();
                to_canceler.send(cancel).unwrap();
                // Race the cancel: children made before it are canceled by it,
                // children made after it are born canceled; none is missed.
                let children: Vec<_> = (0..4).map(|_| subtree.with_cancel()).collect();
                let grandchildren: Vec<_> = children.iter().map(|(c, _)| c.with_cancel()).collect();
                from_canceler.recv().unwrap();
                for (child, _) in children.iter().chain(&grandchildren) {
                    assert_eq!(child.err(), Some(Error::Canceled), "round {round}");
                }
                assert_eq!(subtree.live_children(), 0, "round {round}");
            }
        })
    };
    creator.join().unwrap();
    canceler.join().unwrap();
    assert_eq!(root.live_children(), 0);
    cancel_root.cancel();
}

/// Inner nodes (children with children of their own) whose every handle goes
/// on another thread while their parent's cancel walks them: a walk that wins
/// such a child's close walks it under its `drained` flag alone, and the
/// child's drop (which the grandchild's may set off, in the middle of the
/// walk) waits for it. Every node still held is canceled, the parent ends
/// empty, and every value below is dropped.
#[test]
fn inner_nodes_dropped_while_their_parent_is_canceled() {
    let rounds = scaled(1_000, 5);
    let tracker = Arc::new(());
    let mut rng = Rng::new(0x1A2B_3C4D);
    for round in 0..rounds {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let mut handles: Vec<Box<dyn Send>> = Vec::new();
        let mut seen = Vec::new();
        for i in 0..8 {
            let (child, cancel_child) = parent.with_cancel();
            let (grandchild, cancel_grandchild) = child.with_cancel();
            if i % 4 == 3 {
                // Kept here: that grandchild outlives the dropper's handles.
                seen.push(grandchild.with_value(()));
            }
            let value = grandchild.with_value(tracker.clone());
            // Half go live (no cancel on the way), half cancel themselves as
            // their cancel functions go, racing the parent's walk.
            if i % 2 == 0 {
                handles.push(Box::new((cancel_child.into_canceler(), child)));
                handles.push(Box::new((cancel_grandchild.into_canceler(), grandchild)));
            } else {
                handles.push(Box::new((cancel_child, child)));
                handles.push(Box::new((cancel_grandchild, grandchild)));
            }
            handles.push(Box::new(value));
        }
        // Children before their grandchildren, or any order.
        if round % 2 == 1 {
            for i in (1..handles.len()).rev() {
                handles.swap(i, rng.below(i + 1));
            }
        }
        let start = Arc::new(Barrier::new(2));
        let dropper = {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for handle in handles {
                    drop(handle);
                }
            })
        };
        start.wait();
        cancel_parent.cancel();
        dropper.join().unwrap();
        for ctx in &seen {
            assert_eq!(ctx.err(), Some(Error::Canceled), "round {round}");
        }
        drop(seen);
        assert_eq!(parent.live_children(), 0, "round {round}");
    }
    assert_eq!(Arc::strong_count(&tracker), 1, "a value was leaked");
}

/// Creates and drops `n` children of one long-lived parent (half canceled through
/// their cancel function, half just dropped) and checks that the parent ends with
/// no children and that this thread's memory did not grow with `n`.
fn children_come_and_go(n: usize) {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let cycle = |i: usize| {
        let (child, cancel) = parent.with_cancel();
        if i.is_multiple_of(2) {
            cancel.cancel();
            drop(child);
        } else {
            drop(child);
            drop(cancel);
        }
    };
    // Warm up: the parent's child set reaches its working size here.
    for i in 0..64 {
        cycle(i);
    }
    let before = net_bytes();
    for i in 0..n {
        cycle(i);
    }
    let grown = net_bytes() - before;
    assert_eq!(parent.live_children(), 0);
    assert!(
        grown <= 1024,
        "memory grew by {grown} bytes over {n} children"
    );
    assert_eq!(parent.err(), None);
    cancel_parent.cancel();
}

/// Every kind of child a parent's cancel reaches gives all its memory back once
/// dropped: plain leaves (closed by the walk without a reference of its own,
/// the slot's reference left to their drop), leaves with a waiter, children
/// with children, deadline children and merge children; dropped before or
/// after the cancel, their cancel functions first or last.
#[test]
fn children_a_cancel_reaches_give_their_memory_back() {
    use std::future::Future;
    use std::task::{Context as TaskContext, Waker};
    let waker = Waker::noop();
    // A timer that forgets a disarmed deadline at once (the built-in one keeps
    // it, dead, until a sweep, which would count here).
    let timer = ManualTimer::new();
    let round = |n: usize, order: usize| {
        let (parent, cancel_parent) = timer.root().with_cancel();
        let (other, _cancel_other) = Context::background().with_cancel();
        let mut kept = Vec::new();
        let mut waits = Vec::new();
        for i in 0..n {
            let (child, cancel) = match i % 5 {
                0 | 1 => parent.with_cancel(),
                2 => parent.with_timeout(Duration::from_secs(3600)),
                3 => Context::with_cancel_any(&[parent.clone(), other.clone()]),
                _ => {
                    let (child, cancel) = parent.with_cancel();
                    let (grandchild, cancel_grandchild) = child.with_cancel();
                    kept.push((grandchild, cancel_grandchild));
                    (child, cancel)
                }
            };
            if i % 5 == 1 {
                let mut done = Box::pin(child.done());
                assert!(
                    done.as_mut()
                        .poll(&mut TaskContext::from_waker(waker))
                        .is_pending()
                );
                waits.push(done);
            }
            kept.push((child, cancel));
        }
        if order == 0 {
            // Some children go before the cancel.
            kept.truncate(n / 2);
        }
        cancel_parent.cancel();
        drop(waits);
        if order == 1 {
            // Cancel functions first, then the handles.
            let (handles, cancels): (Vec<_>, Vec<_>) = kept.into_iter().unzip();
            drop(cancels);
            drop(handles);
        } else {
            drop(kept);
        }
        drop(parent);
    };
    let n = scaled(2_000, 50);
    for order in 0..3 {
        // Warm up: the timer's list and the thread-locals reach their size.
        round(n, order);
        let before = net_bytes();
        round(n, order);
        let grown = net_bytes() - before;
        assert!(grown <= 1024, "order {order}: {grown} bytes not given back");
    }
    assert_eq!(timer.armed(), 0, "every deadline was disarmed");
}

#[test]
fn many_short_lived_children_keep_memory_flat() {
    children_come_and_go(scaled(200_000, 200));
}

#[test]
#[cfg_attr(debug_assertions, ignore = "run by cargo xtask stress in release")]
fn ten_million_short_lived_children_keep_memory_flat() {
    children_come_and_go(scaled(10_000_000, 1_000));
}

#[test]
fn many_short_lived_children_with_live_neighbours_keep_memory_bounded() {
    // A few children stay alive throughout, so freed places must be reused among
    // occupied ones.
    let n = scaled(100_000, 100);
    let (parent, cancel_parent) = Context::background().with_cancel();
    let neighbours: Vec<_> = (0..7).map(|_| parent.with_cancel()).collect();
    let mut window: Vec<(Context, CancelFunc)> = Vec::with_capacity(8);
    for _ in 0..64 {
        window.push(parent.with_cancel());
        if window.len() == 8 {
            window.clear();
        }
    }
    let before = net_bytes();
    for i in 0..n {
        window.push(parent.with_cancel());
        if window.len() == 8 {
            if i.is_multiple_of(3) {
                for (_, cancel) in window.drain(..) {
                    cancel.cancel();
                }
            } else {
                window.clear();
            }
        }
    }
    window.clear();
    let grown = net_bytes() - before;
    assert_eq!(parent.live_children(), neighbours.len());
    assert!(
        grown <= 4096,
        "memory grew by {grown} bytes over {n} children"
    );
    drop(neighbours);
    assert_eq!(parent.live_children(), 0);
    cancel_parent.cancel();
}

/// Runs `f` on a thread with a small stack, so that any recursion over the depth
/// of a chain overflows and fails the test.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the small-stack thread failed");
}

/// The depth of the million-deep chain. Miri does not model native stack sizes,
/// so there the chains only need to be deep enough to exercise the loops.
const DEPTH: usize = scaled(1_000_000, 200);
/// The depth of the other chains: deep enough that any recursion over the depth
/// overflows the small stack, shallow enough to keep memory and time modest.
const CHAIN: usize = scaled(100_000, 100);

#[test]
fn a_million_deep_chain_cancels_and_drops_on_a_small_stack() {
    on_small_stack(|| {
        let (root, cancel_root) = Context::background().with_cancel();
        let mut cancels = Vec::with_capacity(DEPTH);
        let mut ctx = root.clone();
        for _ in 0..DEPTH {
            let (next, cancel) = ctx.with_cancel();
            cancels.push(cancel);
            ctx = next;
        }
        let calls = Calls::new();
        let _registration = ctx.after_func(calls.callback());
        assert_eq!(ctx.err(), None);
        cancel_root.cancel();
        assert_eq!(ctx.err(), Some(Error::Canceled));
        assert_eq!(root.live_children(), 0);
        // The leaf's callback, a million levels down, runs on the runner.
        calls.wait_for(1);
        drop(cancels);
        drop(ctx);
        drop(_registration);
        assert_eq!(root.err(), Some(Error::Canceled));
    });
}

#[test]
fn a_deep_mixed_chain_dropped_from_the_leaf_up_on_a_small_stack() {
    on_small_stack(|| {
        let (flag, dropped) = support::DropFlag::new();
        let mut ctx = Context::background().with_value(flag);
        let mut cancels: Vec<Box<dyn Send>> = Vec::with_capacity(CHAIN / 2 + 1);
        for i in 0..CHAIN {
            // Mix the kinds of layers, so that every kind's drop is on the path.
            ctx = match i % 4 {
                0 => {
                    let (next, cancel) = ctx.with_cancel();
                    cancels.push(Box::new(cancel));
                    next
                }
                1 => ctx.with_value(i),
                2 => {
                    let (next, cancel) = ctx.with_cancel_cause();
                    cancels.push(Box::new(cancel));
                    next
                }
                _ => ctx.without_cancel(),
            };
        }
        // The leaf goes first: nothing is canceled yet, every layer is still held
        // by the cancel functions. Then the cancel functions go, deepest first.
        drop(ctx);
        while let Some(cancel) = cancels.pop() {
            drop(cancel);
        }
        assert!(dropped.load(Ordering::SeqCst), "the whole chain was freed");
    });
}

#[test]
fn a_deep_chain_freed_root_first_on_a_small_stack() {
    on_small_stack(|| {
        let (flag, dropped) = support::DropFlag::new();
        let mut ctx = Context::background().with_value(flag);
        let mut cancels = Vec::with_capacity(CHAIN);
        for _ in 0..CHAIN {
            let (next, cancel) = ctx.with_cancel();
            cancels.push(cancel);
            ctx = next;
        }
        // The root's cancel function goes first and cancels the whole chain; the
        // rest follow in creation order; the leaf handle frees the chain last.
        drop(cancels);
        assert_eq!(ctx.err(), Some(Error::Canceled));
        assert!(
            !dropped.load(Ordering::SeqCst),
            "the leaf still holds the chain"
        );
        drop(ctx);
        assert!(dropped.load(Ordering::SeqCst));
    });
}

#[test]
fn a_deep_chain_of_values_drops_on_a_small_stack() {
    on_small_stack(|| {
        let (flag, dropped) = support::DropFlag::new();
        let mut ctx = Context::background().with_value(flag);
        for i in 0..CHAIN {
            ctx = if i.is_multiple_of(2) {
                ctx.with_value(i as u32)
            } else {
                ctx.without_cancel()
            };
        }
        assert_eq!(ctx.value::<u32>(), Some(&((CHAIN as u32 - 1) & !1)));
        drop(ctx);
        assert!(dropped.load(Ordering::SeqCst));
    });
}
