//! Cancel propagation, registration with a parent, and dropping nodes.
//!
//! All three are iterative: a chain of a million contexts cancels and drops with
//! constant stack depth. Go's `cancelCtx.cancel` (src/context/context.go) is the
//! reference for what happens; how it happens here is lock-free (see `list`).

use super::node::{Kind, NodeRef, UNREGISTERED};
use super::state::{self, Reason, Word};
use crate::after_func::Callback;
use crate::sync::{AtomicU32, Ordering, StoreRacingRmw, fence};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// The tag of a callback entry in a child set (child nodes have tag 0).
const CALLBACK_TAG: usize = 1;

/// What a child-set entry is.
pub(crate) enum Entry {
    /// A child node; the entry owns a weak reference.
    Child(NodeRef),
    /// An `after_func` callback; the entry owns an `Arc` reference.
    Callback(crate::sync::Arc<Callback>),
}

impl Entry {
    /// Hands one reference on `callback` over to an entry (for a slot to own).
    pub(crate) fn callback_into_raw(callback: crate::sync::Arc<Callback>) -> *mut () {
        crate::sync::Arc::into_raw(callback)
            .cast_mut()
            .cast::<()>()
            .map_addr(|a| a | CALLBACK_TAG)
    }

    /// The entry that stands for `callback` in a slot (for comparing, not owning).
    pub(crate) fn callback_ptr(callback: &crate::sync::Arc<Callback>) -> *mut () {
        crate::sync::Arc::as_ptr(callback)
            .cast_mut()
            .cast::<()>()
            .map_addr(|a| a | CALLBACK_TAG)
    }

    /// Takes ownership of an entry's reference.
    ///
    /// # Safety
    ///
    /// `raw` must come out of a child set slot by a successful swap or CAS, so the
    /// caller owns the reference it stands for.
    pub(crate) unsafe fn from_raw(raw: *mut ()) -> Entry {
        if raw.addr() & CALLBACK_TAG != 0 {
            let ptr = raw.map_addr(|a| a & !CALLBACK_TAG).cast::<Callback>();
            // SAFETY: callback entries are `Arc::into_raw` pointers, owned by the slot.
            Entry::Callback(unsafe { crate::sync::Arc::from_raw(ptr) })
        } else {
            // SAFETY: child entries are node addresses, which are never null.
            Entry::Child(NodeRef::from_ptr(raw.cast()).expect("null child entry"))
        }
    }
}

/// Releases the reference an entry owns, without acting on it.
pub(crate) fn release_entry(raw: *mut ()) {
    // SAFETY: only called on entries taken out of a set whose owner is being dropped.
    match unsafe { Entry::from_raw(raw) } {
        Entry::Child(child) => child.dec_weak(),
        Entry::Callback(callback) => drop(callback),
    }
}

/// Registers `child` with `carrier` at `slot`; if the carrier is done, returns the
/// reason (the child must then be canceled with it).
///
/// The caller holds a strong reference on `carrier` (through the child's parent).
///
/// The slot owns a weak reference on `child`. With `prepaid`, the caller already
/// counted it when allocating the child (saving a read-modify-write), and it is
/// released here if it ends up unused.
pub(crate) fn register(
    carrier: NodeRef,
    child: NodeRef,
    slot: &AtomicU32,
    prepaid: bool,
) -> Option<Reason> {
    let part = carrier.cancel_part();
    let word = carrier.state();
    if state::is_done(word) {
        // Fast path: a child of a done parent is born done, nothing to register.
        if prepaid {
            child.dec_weak();
        }
        return Some(clone_reason(word));
    }
    let set = part.children_or_init();
    if !prepaid {
        child.inc_weak();
    }
    let entry = child.as_entry();
    let index = set.insert(entry);
    // Relaxed: the index is read later by this node's own cancel or drop, which are
    // ordered after this by the handle hand-off. (A canceler detaching a merge node
    // may swap it meanwhile, hence the loom-friendly store.)
    slot.store_racing_rmw(index, Ordering::Relaxed);
    // SeqCst: the load half of the insert side of the Dekker pair (`list`).
    let word = part.state.load(Ordering::SeqCst);
    if !state::is_done(word) {
        return None;
    }
    if set.remove(index, entry) {
        child.dec_weak();
        slot.store_racing_rmw(UNREGISTERED, Ordering::Relaxed);
    }
    // Whether we or the canceler own the slot, cancel the child now, so that it is
    // born done and every later reader agrees (cancel is idempotent).
    Some(clone_reason(word))
}

/// Removes `child` from the carrier's set at `slot`, if it is still there.
fn deregister(carrier: NodeRef, child: NodeRef, slot: &AtomicU32) {
    let index = if child.kind() == Kind::Merge {
        // A merge node's slots may be detached by a canceler that reached it through
        // another parent while it is still registering (`with_cancel_any`): the swap
        // decides which side removes the entry. Relaxed: the SeqCst fences on both
        // sides order it.
        slot.swap(UNREGISTERED, Ordering::Relaxed)
    } else {
        // Any other node's slot is only touched by its creator and then by the one
        // cancel that won `try_close` and by its drop, one after the other: no RMW
        // needed. Relaxed: those steps are ordered by the handle hand-off.
        let index = slot.load(Ordering::Relaxed);
        if index != UNREGISTERED {
            slot.store(UNREGISTERED, Ordering::Relaxed);
        }
        index
    };
    if index == UNREGISTERED {
        return;
    }
    let set = carrier
        .cancel_part()
        .children()
        .expect("registered without a set");
    if set.remove(index, child.as_entry()) {
        child.dec_weak();
    }
}

/// Removes a cancelable node from every parent it is registered with.
pub(crate) fn detach(node: NodeRef) {
    let part = node.cancel_part();
    if let Some(carrier) = node.header().parent.real().and_then(NodeRef::carrier) {
        deregister(carrier, node, &part.slot);
    }
    if node.kind() == Kind::Merge {
        for link in node.merge_part().extra.iter() {
            if let Some(carrier) = link.parent.carrier() {
                deregister(carrier, node, &link.slot);
            }
        }
    }
}

/// A new owned reason equal to the one stored in a done word.
pub(crate) fn clone_reason(word: Word) -> Reason {
    // SAFETY: the word is owned by a node the caller keeps alive; wrapping it without
    // dropping and cloning only adds a reference.
    let borrowed = std::mem::ManuallyDrop::new(unsafe { Reason::from_word(word) });
    (*borrowed).clone()
}

/// Moves a live node to done with `reason`. Returns the previous (live) word, whose
/// `WAITERS` bit says whether anyone must be woken, or `None` if it was done.
fn try_close(node: NodeRef, reason: &Reason) -> Option<Word> {
    let part = node.cancel_part();
    // Relaxed: only a first guess for the CAS loop.
    let mut current = part.state.load(Ordering::Relaxed);
    loop {
        if state::is_done(current) {
            return None;
        }
        let waiters = current.addr() & state::WAITERS;
        let new = reason.word().map_addr(|a| a | waiters);
        // SeqCst: the store half of the canceler's side of the Dekker pairs with
        // registration (`list`) and with waiters (`waiter`); its release publishes
        // the record to readers' Acquire loads.
        match part
            .state
            .compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::Relaxed)
        {
            Ok(_) => {
                // The word now owns a reference of its own.
                std::mem::forget(reason.clone());
                crate::sync::dekker_point();
                return Some(current);
            }
            Err(actual) => current = actual,
        }
    }
}

/// Cancels a carrier and its whole subtree with `reason`; `detach` also removes it
/// from its parents (a direct cancel does; a cancel that came through the parent
/// does not need to, the parent already emptied the slot).
///
/// Returns false if the node was done already (the first cancel wins). The caller
/// keeps `node` alive for the duration. Callbacks that panic do not stop the
/// cancel; after the whole subtree is done, the first panic is resumed on this
/// thread (unless the thread is already panicking, when it is dropped).
pub(crate) fn cancel(node: NodeRef, reason: Reason, detach_node: bool) -> bool {
    let Some(previous) = try_close(node, &reason) else {
        return false;
    };
    if detach_node {
        detach(node);
    }
    let mut panic = None;
    // Strong references on canceled children still to visit, with their old words.
    let mut stack: Vec<(NodeRef, Word)> = Vec::new();
    finish(node, previous, &reason, &mut stack, &mut panic);
    while let Some((child, previous)) = stack.pop() {
        finish(child, previous, &reason, &mut stack, &mut panic);
        child.dec_strong();
    }
    if let Some(payload) = panic
        && !std::thread::panicking()
    {
        panic::resume_unwind(payload);
    }
    true
}

/// The work after a node's state became done: wake waiters, release the timer,
/// cancel children, run callbacks.
fn finish(
    node: NodeRef,
    previous: Word,
    reason: &Reason,
    stack: &mut Vec<(NodeRef, Word)>,
    panic: &mut Option<Box<dyn Any + Send>>,
) {
    let part = node.cancel_part();
    // The timer first: a waiter that wakes up finds it released already.
    if node.kind() == Kind::Deadline {
        crate::timer::disarm(node);
    }
    if state::has_waiters(previous) {
        part.waiters.notify_all();
    }
    let Some(set) = part.children() else {
        return;
    };
    set.drain(|raw| {
        // SAFETY: `drain` hands us each entry it swapped out; we own its reference.
        match unsafe { Entry::from_raw(raw) } {
            Entry::Child(child) => {
                if child.upgrade() {
                    match try_close(child, reason) {
                        Some(previous) => {
                            if child.kind() == Kind::Merge {
                                // Canceled through one parent: leave the others too, or
                                // they would keep counting (and holding) it. SeqCst
                                // fence: pairs with the one in `with_cancel_any` after it
                                // registered; either it sees this node done, or this
                                // detach sees every slot index it stored.
                                fence(Ordering::SeqCst);
                                detach(child);
                            }
                            stack.push((child, previous));
                        }
                        None => child.dec_strong(),
                    }
                }
                child.dec_weak();
            }
            Entry::Callback(callback) => {
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| callback.fire())) {
                    panic.get_or_insert(payload);
                }
            }
        }
    });
}

/// Drops a node whose strong count reached zero, then any ancestors whose last
/// strong reference it held, in a loop.
///
/// # Safety
///
/// `node`'s strong count must have just reached zero (by this thread).
pub(crate) unsafe fn drop_node(node: NodeRef) {
    let mut current = node;
    loop {
        let header = current.header();
        if header.vtable.kind.is_cancelable() {
            detach(current);
        }
        let parent = header.parent;
        // SAFETY: the strong count is zero: the payload is ours to drop, once.
        // The pointer must be the node's own (it covers the payload), not one derived
        // from `&Header` (which would cover the header only).
        unsafe { (header.vtable.drop_payload)(current.as_non_null()) };
        current.dec_weak();
        let Some(parent) = parent.real() else { return };
        // Release/Acquire: as in `NodeRef::dec_strong`, written out so that the
        // ancestor is dropped by this loop rather than by recursion.
        if !parent.release_strong_is_last() {
            return;
        }
        current = parent;
    }
}
