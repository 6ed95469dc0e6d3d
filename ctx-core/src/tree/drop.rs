//! Dropping nodes: iterative over every kind of link, and unstoppable by a
//! panicking `Drop`.
//!
//! A node's last strong reference going away drops its payload and releases the
//! strong references the node holds: its parent link and, for a merge node, its
//! further parents. Releasing those can make them drop in turn. Rather than
//! recursing (a chain of a million contexts would overflow the stack, also when
//! the chain runs through merge nodes' further parents), the references to
//! release go on an explicit worklist.
//!
//! A payload's `Drop` is user code (a `with_value` value, a timer backend). If it
//! panics, the rest of the drop still happens — the memory is freed and every
//! ancestor released — and the first panic is handed back to the caller.

use super::node::{IN_HEADER, Kind, NodeRef};
use super::work::{Panic, catch};
use crate::sync::{Ordering, fence};

/// Drops a node whose strong count reached zero, then every node whose last
/// strong reference it held, in a loop. Panics of payload `Drop`s are caught and
/// the first is left in `panic`.
///
/// # Safety
///
/// `node`'s strong count must have just reached zero (by this thread).
pub(crate) unsafe fn drop_node(node: NodeRef, panic: &mut Panic) {
    // The common case first: a chain of nodes with one parent each, walked
    // without a worklist. The first merge node hands over to the general loop.
    let mut current = node;
    while current.kind() != Kind::Merge {
        // SAFETY: the caller's contract, and then the strong count of each
        // parent that `drop_one` returns just reached zero by this thread.
        match unsafe { drop_one(current, panic) } {
            Some(parent) => current = parent,
            None => return,
        }
    }
    // SAFETY: as above.
    unsafe { drop_any(current, panic) }
}

/// Drops one node (strong count zero): detaches it, drops its payload, frees it
/// unless weak references remain, and releases its parent link; returns the
/// parent if that was the parent's last strong reference. A merge node's further
/// parents are the caller's to take out first (`drop_any`).
///
/// # Safety
///
/// As for [`drop_node`].
#[inline]
unsafe fn drop_one(current: NodeRef, panic: &mut Panic) -> Option<NodeRef> {
    let header = current.header();
    // The slot's weak reference, if the detach took it back, goes with the
    // strong references' own below (one RMW, or none).
    // Also where the node's reference on its parent is counted (merge nodes:
    // always in the header), taken out before the payload goes.
    let (slot, counted_in) = match header.vtable.kind {
        Kind::Merge => {
            super::register::detach(current);
            (false, IN_HEADER)
        }
        kind if kind.is_cancelable() => (
            super::register::detach_owing(current),
            // Relaxed: written by the registrant before any handle went; the
            // release of the last one made it visible here.
            current.cancel_part().parent_shard.load(Ordering::Relaxed),
        ),
        _ => (false, IN_HEADER),
    };
    // The parent link, taken out before the payload goes.
    let parent = header.parent;
    // SAFETY: the strong count is zero: the payload is ours to drop, once.
    // The pointer must be the node's own (it covers the payload), not one
    // derived from `&Header` (which would cover the header only).
    catch(panic, || unsafe {
        (header.vtable.drop_payload)(current.as_non_null())
    });
    // SAFETY: the strong count is zero, the payload dropped, and the strong
    // references' weak one is ours now (and the slot's, if `slot`).
    unsafe { current.release_last_weaks(slot) };
    let parent = parent.real()?;
    if counted_in == IN_HEADER {
        return parent.release_strong_is_last().then_some(parent);
    }
    // Counted in a shard of the parent's set (`child_set`'s "Parent
    // references"), which lives while that count does.
    let set = parent.cancel_part().children.set();
    let set = set.expect("a reference counted in a set that does not exist");
    (set.release_parent_ref(counted_in) && parent.release_strong_is_last()).then_some(parent)
}

/// [`drop_node`] once it met a merge node: a worklist for merge nodes' further
/// parents.
///
/// # Safety
///
/// As for [`drop_node`].
#[cold]
unsafe fn drop_any(node: NodeRef, panic: &mut Panic) {
    let mut next = Some(node);
    // Nodes to drop besides `next`: merge nodes' further parents.
    let mut more: Vec<NodeRef> = Vec::new();
    let mut extra: Vec<NodeRef> = Vec::new();
    while let Some(current) = next.take().or_else(|| more.pop()) {
        // A merge node's further parents are strong references it holds, taken
        // out before the payload goes (their links are raw references precisely
        // so that dropping the payload does not release them by recursion).
        if current.kind() == Kind::Merge {
            extra.extend(current.merge_part().extra.iter().map(|link| link.parent));
        }
        // SAFETY: the strong count of `current` just reached zero by this
        // thread (the caller's contract, or one of the releases below).
        next = unsafe { drop_one(current, panic) };
        for parent in extra.drain(..).filter_map(NodeRef::real) {
            if parent.release_strong_is_last() {
                more.push(parent);
            }
        }
    }
}

/// A merge node canceled through one parent leaves the others too, or they would
/// keep counting (and holding a slot for) it.
pub(crate) fn merge_leaves_parents(node: NodeRef) {
    debug_assert_eq!(node.kind(), Kind::Merge);
    // SeqCst fence: pairs with the one in `merge::register` after it registered;
    // either that registrant sees this node done and detaches it itself, or this
    // detach sees every slot index it stored.
    fence(Ordering::SeqCst);
    super::register::detach(node);
}
