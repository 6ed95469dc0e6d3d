//! The one registration protocol: how a child, an `after_func` callback or a
//! merge node's further parent joins a carrier's child set, and how it leaves.
//!
//! # Register: insert, re-check, take back
//!
//! 1. If the carrier is done already, nothing is inserted: the caller still owns
//!    its entry and acts on the reason (a child is born done, a callback runs).
//!    The first registrant of a carrier sets `HAS_SET` in the state word by a
//!    CAS that fails once the carrier is done; a close that finds no `HAS_SET`
//!    makes the node complete at once.
//! 2. Otherwise the entry goes into a slot (the inline slot's `SeqCst` CAS, or a
//!    set slot's `SeqCst` store), and the slot index is
//!    published in the registrant's index field (`Release`, see below).
//! 3. Then the carrier's state is loaded again (`SeqCst`). Live: registered. Done:
//!    the canceler may or may not have seen the entry (the Dekker pair in
//!    `child_set`), so the registrant tries to take it back with a CAS. Whoever
//!    empties the slot owns the entry's reference; either way the registrant acts
//!    on the reason itself, which is idempotent for children (the first close
//!    wins) and for callbacks (the first claim wins).
//!
//! A child whose parent is the carrier, once the carrier's set's reference is
//! held, is allocated without a reference on it, and its registration takes
//! one: in the shard of the set slot it goes into (see `child_set`'s "Parent
//! references").
//!
//! # Leave
//!
//! [`detach`] takes each index field back to [`UNREGISTERED`] and removes the
//! entry from that carrier's set if it is still there. Only the thread that owns
//! a node's cancel, or its drop, detaches it; a merge node's fields may also be
//! taken by its registrant and by other parents' walks at the same time, so for
//! merge nodes the take is a swap (one taker per field). What decides who
//! removes is the removal itself, a CAS of the slot's entry: a slot is not
//! reused while a walk may still reach it.
//!
//! A (non-merge) detach that finds its entry gone (a parent's walk drained it) waits for
//! the node's `drained` flag before it returns (`wait_drained`): the walk may
//! still be closing a plain leaf with the slot's weak reference alone, and the
//! payload must outlive that. One that finds the flag set skips the removal.
//! Either way the slot's weak reference is the detach's to release: the walk
//! left it (`mark_drained`), which spares the walk a read-modify-write per
//! child and costs the drop none (it frees a node whose only weak references
//! are its own without one).
//!
//! # The index field's ordering
//!
//! A detacher may be another thread than the registrant (a merge node canceled
//! through another parent, a losing canceler). It reads the index with an
//! `Acquire` swap that pairs with the registrant's `Release` store, which comes
//! after the registrant's `insert`, which comes after the segment holding the
//! index was published (by the registrant's own CAS, or its `Acquire` load of
//! another inserter's CAS). So the detacher's `ChildSet::slot` finds the segment
//! pointer published even on weakly ordered CPUs.

use super::callback::Callback;
use super::node::{Kind, NodeRef, UNREGISTERED};
use super::state::{self, HAS_SET, Reason, Word};
use crate::sync::{Arc, AtomicU8, AtomicU32, Ordering, StoreRacingRmw};

/// The tag of a callback entry in a child set (child nodes have tag 0).
const CALLBACK_TAG: usize = 1;

/// What a child-set entry is, with the reference its slot owned.
pub(crate) enum Entry {
    /// A child node; the entry owns a weak reference.
    Child(NodeRef),
    /// An `after_func` callback; the entry owns an `Arc` reference.
    Callback(Arc<Callback>),
}

impl Entry {
    /// Hands one reference on `callback` over to an entry (for a slot to own).
    pub(crate) fn callback_into_raw(callback: Arc<Callback>) -> *mut () {
        Arc::into_raw(callback)
            .cast_mut()
            .cast::<()>()
            .map_addr(|a| a | CALLBACK_TAG)
    }

    /// The entry that stands for `callback` in a slot (for comparing, not owning).
    pub(crate) fn callback_ptr(callback: &Arc<Callback>) -> *mut () {
        Arc::as_ptr(callback)
            .cast_mut()
            .cast::<()>()
            .map_addr(|a| a | CALLBACK_TAG)
    }

    /// The node an entry stands for, if it is a child's (no reference taken:
    /// the caller keeps the node alive).
    pub(crate) fn child_of(raw: *mut ()) -> Option<NodeRef> {
        if raw.addr() & CALLBACK_TAG != 0 {
            None
        } else {
            NodeRef::from_ptr(raw.cast())
        }
    }

    /// Takes ownership of an entry's reference.
    ///
    /// # Safety
    ///
    /// `raw` must come out of a child set slot by a successful swap or CAS (or be
    /// an entry that was never inserted), so the caller owns its reference.
    pub(crate) unsafe fn from_raw(raw: *mut ()) -> Entry {
        if raw.addr() & CALLBACK_TAG != 0 {
            let ptr = raw.map_addr(|a| a & !CALLBACK_TAG).cast::<Callback>();
            // SAFETY: callback entries are `Arc::into_raw` pointers, owned by the caller.
            Entry::Callback(unsafe { Arc::from_raw(ptr) })
        } else {
            Entry::Child(NodeRef::from_ptr(raw.cast()).expect("null child entry"))
        }
    }
}

/// Releases the reference an entry owns, without acting on it.
pub(crate) fn release_entry(raw: *mut ()) {
    // SAFETY: only called on entries taken out of a set whose owner is being dropped.
    match unsafe { Entry::from_raw(raw) } {
        Entry::Child(child) => {
            if child.kind() == Kind::Merge {
                child.dec_weak();
            } else {
                // Its detach, still to come, releases the reference.
                mark_drained(child);
            }
        }
        Entry::Callback(callback) => drop(callback),
    }
}

/// How a registration ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// In the set at `slot`; the carrier's cancel will find it.
    Registered { slot: u32 },
    /// The carrier is done (with this reason). `back` says whether the entry's
    /// reference came back to the caller (not inserted, taken back, or handed
    /// back by the walk that drained a child's entry); if not (a merge node's
    /// entry or a callback's that a canceler took), the canceler releases it.
    Done { reason: Reason, back: bool },
}

/// Registers `entry` (whose reference the set takes over) with `carrier`, storing
/// its slot index in `index` (module docs).
///
/// `parent_ref`: a fresh child's `parent_shard` field, passed when the carrier
/// is the child's parent, its set's reference is held (the caller saw it
/// while holding a handle, which keeps it so) and the child's allocation took
/// no reference on it: the registration takes it, in the shard of the set
/// slot the entry goes into, whose number goes into the field (in the
/// carrier's header if the carrier is done already). It is taken before anything here can
/// panic (a full set's capacity check, in the slot allocation:
/// [`ChildSet::insert_counting`](super::child_set::ChildSet::insert_counting)
/// counts first), and nothing here runs user code, so the child's handles,
/// which may exist already, never drop without it.
///
/// The caller keeps `carrier` alive for the duration (a child through its parent
/// link, a callback through its context).
pub(crate) fn register(
    carrier: NodeRef,
    entry: *mut (),
    index: Option<&AtomicU32>,
    parent_ref: Option<&AtomicU8>,
) -> Outcome {
    let part = carrier.cancel_part();
    let mut word = carrier.state();
    let mut first = false;
    if !state::is_done(word) && !state::has(word, HAS_SET) {
        // The first registrant flags the carrier's children as in use by a CAS
        // that fails once the node is done: a close that does not see the flag
        // makes the node complete at once, and no entry is ever inserted.
        (word, first) = publish_set(carrier);
    }
    if state::is_done(word) {
        // A done carrier never takes new entries.
        header_ref(carrier, parent_ref);
        return Outcome::Done {
            reason: clone_reason(word),
            back: true,
        };
    }
    let set = &part.children;
    // The registrant whose CAS set the flag takes the inline slot; all others
    // use the set (`child_set`).
    let slot = if first {
        // A caller with the set's reference saw the set, so `HAS_SET` too.
        debug_assert!(parent_ref.is_none(), "the set's reference before the set");
        set.insert_first(entry)
    } else {
        // A child counts its reference on its parent (the carrier, whose
        // set's reference the caller saw: `child_set`'s "Parent references")
        // in its shard.
        let (slot, installed) = set.insert(entry, parent_ref);
        if installed {
            // The set's reference (`child_set`'s "Parent references"): the
            // registrant keeps the carrier alive meanwhile.
            carrier.add_set_ref();
        }
        slot
    };
    if let Some(index) = index {
        // Release: publishes the insert (and the segment it used) to a detacher on
        // another thread (module docs). The loom-friendly store, because a
        // detacher may swap the field at the same time.
        index.store_racing_rmw(slot, Ordering::Release);
    }
    // SeqCst: the load half of the insert side of the Dekker pair (`child_set`).
    let word = part.state.load(Ordering::SeqCst);
    if !state::is_done(word) {
        return Outcome::Registered { slot };
    }
    let back = match index {
        // Whoever swaps the field out owns the removal (a merge node's may be
        // detached by another parent's walk meanwhile). A child's entry that the
        // walk took comes back all the same, once the walk is done with it
        // (`mark_drained`); a merge node's stays with the walk.
        Some(index) => take_index(index, true).is_some_and(|slot| {
            set.remove(slot, entry)
                || match Entry::child_of(entry) {
                    Some(child) if child.kind() != Kind::Merge => {
                        wait_drained(child);
                        true
                    }
                    _ => false,
                }
        }),
        None => set.remove(slot, entry),
    };
    Outcome::Done {
        reason: clone_reason(word),
        back,
    }
}

/// `parent` (a context's node, or a root sentinel) as the parent link of a
/// fresh cancelable child whose parent carrier is `carrier`, and whether the
/// child's registration takes the link's reference (in a shard of the
/// parent's set: the parent is the carrier and its set's reference is held,
/// which the caller's handle on it keeps so; `child_set`'s "Parent
/// references"). If not, the reference is taken here, in the parent's count.
#[inline]
pub(crate) fn child_parent_link(parent: NodeRef, carrier: Option<NodeRef>) -> (NodeRef, bool) {
    if let Some(node) = parent.real() {
        if Some(node) == carrier && node.has_set_ref() {
            return (parent, true);
        }
        node.inc_strong();
    }
    (parent, false)
}

/// Takes a child's reference on its parent, `carrier`, in the carrier's own
/// count, if the caller of [`register`] passed `parent_ref` (the child's
/// allocation took none).
#[inline]
fn header_ref(carrier: NodeRef, parent_ref: Option<&AtomicU8>) {
    if parent_ref.is_some() {
        carrier.inc_strong();
    }
}

/// If `carrier` is done already, the state word a child about to be derived
/// from it starts with: done with the carrier's reason (a reference the word
/// owns), and complete, as it will never have a registration to walk. Such a
/// child is born done without registering or being canceled. A carrier that is
/// live here may still be done by the time its child registers; `register`
/// handles that.
pub(crate) fn born_done_word(carrier: NodeRef) -> Option<Word> {
    let word = carrier.state();
    if !state::is_done(word) {
        return None;
    }
    let reason = clone_reason(word);
    let born = reason.word().map_addr(|a| a | state::COMPLETE);
    // The word owns the reference now.
    std::mem::forget(reason);
    Some(born)
}

/// Sets `HAS_SET` (children may be registered) on a carrier unless it is done;
/// returns the word it left, and whether this call set the flag.
fn publish_set(carrier: NodeRef) -> (Word, bool) {
    let part = carrier.cancel_part();
    // Relaxed: only a first guess for the CAS loop.
    let mut current = part.state.load(Ordering::Relaxed);
    loop {
        if state::is_done(current) || state::has(current, HAS_SET) {
            // Acquire: a done word's record is read by the caller.
            return (part.state.load(Ordering::Acquire), false);
        }
        let new = current.map_addr(|a| a | HAS_SET);
        // SeqCst: an RMW on the state word, so it is ordered with the close CAS:
        // either the close sees the flag (and walks the set), or this CAS fails.
        match part
            .state
            .compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::Relaxed)
        {
            Ok(_) => return (new, true),
            Err(actual) => current = actual,
        }
    }
}

/// Takes a registered slot index out of its field, if nobody did yet.
///
/// `shared`: whether another thread may take it at the same time (a merge node's
/// fields: its registrant and other parents' walks). Any other node's field is
/// only taken by one thread at a time — its registrant, then the one cancel
/// that owns it, then its drop, handed over by the strong references they hold —
/// so a load and a store do.
#[inline]
fn take_index(index: &AtomicU32, shared: bool) -> Option<u32> {
    // Acquire: pairs with the registrant's Release store (module docs).
    let slot = index.load(Ordering::Acquire);
    if slot == UNREGISTERED {
        return None;
    }
    if !shared {
        // Relaxed: see above; nobody else reads the field meanwhile.
        index.store(UNREGISTERED, Ordering::Relaxed);
        return Some(slot);
    }
    // AcqRel: Acquire pairs with the registrant's Release store (module docs);
    // Release orders our earlier accesses of the node before the removal.
    let slot = index.swap(UNREGISTERED, Ordering::AcqRel);
    (slot != UNREGISTERED).then_some(slot)
}

/// Removes a cancelable node from every carrier it is registered with; each slot
/// that still held it (or a walk that drained it: `mark_drained`) gives back its
/// weak reference.
#[inline]
pub(crate) fn detach(node: NodeRef) {
    if node.kind() != Kind::Merge {
        if detach_owing(node) {
            node.dec_weak();
        }
        return;
    }
    for (carrier, index) in node.registrations() {
        if let Some(slot) = take_index(index, true) {
            leave(carrier, slot, node);
        }
    }
}

/// [`detach`] for a node with one parent (not a merge node), except that the
/// slot's weak reference, if this detach took it back (by its removal, or from
/// the walk that drained the entry), is owed to the caller (true) instead of
/// released.
#[inline]
pub(crate) fn detach_owing(node: NodeRef) -> bool {
    debug_assert_ne!(node.kind(), Kind::Merge);
    let part = node.cancel_part();
    // One parent link, only ever taken by one thread at a time.
    let Some(slot) = take_index(&part.slot, false) else {
        return false;
    };
    // Acquire: pairs with the walk's Release (see `wait_drained`).
    if part.drained.load(Ordering::Acquire) {
        // The parent's walk took the entry, is done with the node, and left the
        // slot's weak reference to us: a removal could only fail.
        return true;
    }
    let carrier = node.header().parent.real().and_then(NodeRef::carrier);
    let carrier = carrier.expect("registered without a parent");
    if !carrier.cancel_part().children.remove(slot, node.as_entry()) {
        wait_drained(node);
    }
    true
}

/// A (non-merge) node whose entry its parent's walk took out of the set waits
/// here until the walk is done with it: at its detach (its own cancel, its
/// drop, a timer's walk) or its registrant's take-back.
///
/// The walk closes a plain child, and walks one with registrations, with only
/// the slot's weak reference, which keeps the memory but not the payload
/// (module docs of `tree::cancel`). So the payload must not go while the walk
/// still holds the entry: a detach that found its entry gone (its node's own
/// cancel, or its drop, which detaches before the payload goes) waits for the
/// walk's `drained` flag. For a leaf, the walk sets it a few atomic
/// operations after taking the entry (for a leaf with waiters, after taking
/// their wakers out too: the event's own lock at most); for a node with
/// registrations, once it has walked the node's subtree, or before it would
/// wait for another thread's walk there. Either way with no user or executor
/// code and no wait in between.
#[cold]
fn wait_drained(node: NodeRef) {
    let drained = &node.cancel_part().drained;
    let mut backoff = crate::sync::Backoff::new();
    // Acquire: pairs with the walk's Release store, so its accesses of the node
    // happen before whatever follows here (the payload's drop).
    while !drained.load(Ordering::Acquire) {
        backoff.snooze();
    }
}

/// The walk (or the set's drop) that took `node`'s entry out of its parent's
/// set is done with it (see [`wait_drained`]), and hands the slot's weak
/// reference over to the node's detach, which releases it with its own (a
/// drop frees the node without a read-modify-write when no other weak
/// reference is left). Not for merge nodes: they are walked only under a
/// reference of the walk's own, never wait, and their entries' weak references
/// go back at once. A walk that pins the node with a strong reference of its
/// own (`Walk::reach`) does so before this store: a last handle that finds
/// the flag set and its counts unchanged afterwards knows that no walk holds
/// one (`NodeRef::sole_reference`).
#[inline]
pub(crate) fn mark_drained(node: NodeRef) {
    debug_assert_ne!(node.kind(), Kind::Merge);
    // Release: the walk's accesses of the node happen before a waiting detach
    // goes on (and drops the payload).
    node.cancel_part().drained.store(true, Ordering::Release);
}

/// Takes `node`'s entry out of `carrier`'s set at `slot`, if it is still there.
fn leave(carrier: NodeRef, slot: u32, node: NodeRef) {
    if carrier.cancel_part().children.remove(slot, node.as_entry()) {
        node.dec_weak();
    }
}

/// Removes a callback registered with `carrier` at `slot`, if it is still there.
pub(crate) fn deregister_callback(carrier: NodeRef, slot: u32, callback: &Arc<Callback>) {
    let raw = Entry::callback_ptr(callback);
    if carrier.cancel_part().children.remove(slot, raw) {
        // SAFETY: we emptied the slot, so its reference is ours to release.
        drop(unsafe { Entry::from_raw(raw) });
    }
}

/// A new owned reason equal to the one stored in a done word.
pub(crate) fn clone_reason(word: Word) -> Reason {
    // SAFETY: the word is owned by a node the caller keeps alive; wrapping it without
    // dropping and cloning only adds a reference.
    let borrowed = std::mem::ManuallyDrop::new(unsafe { Reason::from_word(word) });
    (*borrowed).clone()
}
