//! The lock-free child set: where a cancelable node keeps its children and its
//! `after_func` callbacks.
//!
//! # Shape
//!
//! A node's [`Children`] are one inline slot and a [`ChildSet`] allocated on
//! demand. The inline slot belongs to the carrier's first registrant (the one
//! whose CAS set `HAS_SET` in its state word, see `register`): a chain of
//! contexts, where each node gets one child, never allocates a set. Every later
//! registrant uses the set, so the inline slot, next to the node's state word,
//! is written once, not by every thread that churns children of a shared
//! parent (that would slow down everyone who checks the parent). The inline
//! slot's index is [`INLINE`].
//!
//! A set is split into shards (up to 16, each allocated by the first thread
//! that inserts through it, and on cache lines of its own). A thread always
//! inserts into its own shard (threads are numbered as they first insert and
//! spread round-robin), so threads creating and dropping children of one
//! parent do not write each other's free stacks and slots. A slot index names
//! its shard in its top bits, so a child dropped on another thread finds its
//! slot. A drain visits every shard. The set's memory is a 136-byte table plus
//! each shard that a thread ever inserted through (at most 16).
//!
//! In a shard, entries live in slots. Slots come in segments that double in
//! size (4 slots
//! inline in the shard, then 8, 16, … allocated on demand), never moved or freed
//! while the set lives, so a slot index stays valid and a `&Slot` stays
//! dereferenceable for the set's whole life. Segments are allocated by whichever
//! inserter first needs them, so they can appear out of order (an inserter may
//! stall inside the allocation of segment 1 while another fills segment 2):
//! every scan visits all segment pointers and skips the null ones, it never stops
//! at the first gap. Free slot indices are kept on a Treiber stack threaded
//! through the slots' `next_free` fields, whose head carries a generation tag
//! against ABA (see [`TAG_ONE`] for the bound). A set
//! therefore holds memory proportional to the largest number of entries it held at
//! once, not to how many it ever held: ten million short-lived children under a
//! long-lived parent reuse the same few slots.
//!
//! An entry is a tagged pointer: a child node (tag 0; the slot owns one *weak*
//! reference on it) or an `after_func` callback (tag 1; the slot owns one `Arc`
//! reference on it).
//!
//! # Protocol
//!
//! The set itself has no "closed" flag: the owner node's state word is the flag.
//!
//! * **insert** (creating a child, registering a callback): the first
//!   registrant CASes the inline slot from empty to the entry (`SeqCst`); any
//!   other pops or bumps an index and stores the entry into that slot
//!   (`SeqCst`). Then load the owner's state
//!   (`SeqCst`). If the owner is done, try to [`ChildSet::remove`] the entry again
//!   and act as the canceler would for it.
//! * **cancel**: CAS the owner's state to done (`SeqCst`), then [`Children::drain`]:
//!   load the inline slot (`SeqCst`) and swap it empty if it holds an entry; load
//!   the set pointer (`SeqCst`) and, if there is a set, load the count of indices handed out (`SeqCst`), then every segment pointer
//!   and every slot up to it (`SeqCst`), and `swap` each non-empty slot to null.
//!   What a swap returns, the canceler owns. (An inserter takes a fresh index by a
//!   `SeqCst` RMW of that count before it stores, so a drain that must see its
//!   entry also sees the count that covers it; reused indices are below it.)
//! * **remove** (a child canceled or dropped, a callback stopped): CAS the slot from
//!   the entry to null. Success means the entry was still there and its owned
//!   reference now belongs to the remover, who also returns the index to the free
//!   stack; failure means a canceler took it first.
//!
//! Why no entry is lost (the store-then-load pattern on both sides, a Dekker pair):
//! all four operations are `SeqCst`, so they sit in one total order. If the
//! inserter's state load does not see the cancel, it precedes the canceler's state
//! CAS, so the inserter's slot store or inline CAS (and the set's and segment's
//! installing CAS before it) precede the
//! canceler's loads of that segment and slot: the canceler finds the entry. If the
//! inserter does see the cancel, it tries to take the entry back. Either way exactly
//! one party wins the slot (swap and CAS are atomic on it), and that party handles
//! the entry once.
//!
//! Why a slot is never reused under someone's feet: an index goes back on the free
//! stack only after the CAS that emptied it succeeded, and only the winner of that
//! CAS pushes it. A drained slot is never pushed (the owner is done for good, and
//! anyone inserting later takes its entry back and frees its own index).

//!
//! # Parent references
//!
//! A child keeps its parent alive (values, deadlines and the timer are read up
//! the chain). Counted in the parent's own strong count, every child created
//! and dropped would write the parent's header line, the one line that all
//! threads churning children of that parent share. So a child registered in
//! a shard of its parent's set (its parent being its carrier) counts its
//! reference in that shard instead (`Shard::refs`, on the shard's own lines),
//! and the set holds one strong reference on its owner for all of them: the
//! set's reference, flagged in the owner's count word (`SET_REF` in
//! `tree::node`) and taken by the registrant that installed the set. Children
//! through the inline slot, through a value node, or of a parent whose set's
//! reference is gone count in the parent's header as before.
//!
//! The set's reference goes once no handle is left and no shard counts a
//! child:
//!
//! * The release of the owner's last handle (the one that would leave the
//!   set's reference alone) is a CAS that also clears the flag, keeping the
//!   strong reference the flag stood for: it takes the set's reference over
//!   in the same step as it gives its own up, so it never touches the node
//!   unreferenced. (A CAS that fails because an upgrade made a new handle
//!   meanwhile is a plain release; that handle's release tries again.) It
//!   then *orphans* the set ([`ChildSet::orphan`]): it marks every shard's count `ORPHAN` with a
//!   `fetch_or`, counts the shards that still count children, and adds that
//!   number to `pending`. A child whose release takes an orphaned shard's
//!   count to zero takes one off `pending`. Whichever of these makes
//!   `pending` zero (the orphaning itself, when no shard counts a child)
//!   releases the set's reference.
//! * No shard count can grow once the flag is gone: a registrant holds a
//!   handle on the parent (which keeps the flag: the take-over needs the
//!   count at that handle and the set's reference alone) and reads the flag after its own reference
//!   was made, so a registrant after the CAS sees it cleared and counts in
//!   the header.

use crate::sync::{
    AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, StoreRacingRmw, prefetch,
};
use std::ptr;

/// How many slots ahead a drain asks for the nodes it will close.
const PREFETCH_AHEAD: usize = 8;

/// What a drain hands each entry it takes out of its slot to, with the
/// reference the slot owned. Any `FnMut(*mut ())` is one; the walk's own
/// implementation marks its step `#[inline(always)]`, so that it lands in
/// the drain's loop over the slots whatever the optimizer thinks of its size
/// (a call per child is a measurable part of a large fan-out's cancel).
pub(crate) trait Take {
    /// Takes over one entry.
    fn take(&mut self, entry: *mut ());
}

impl<F: FnMut(*mut ()) + ?Sized> Take for F {
    #[inline]
    fn take(&mut self, entry: *mut ()) {
        self(entry);
    }
}

/// In a shard's `refs`: the set was orphaned (its owner's last handle went),
/// and the release that takes the count to zero reports to `pending`.
const ORPHAN: u32 = 1 << 31;
/// Above this many children counted in one shard we abort, as for the strong
/// count: the count must not reach the `ORPHAN` bit.
const MAX_SHARD_REFS: u32 = 1 << 30;

/// Slots in the first segment.
const BASE: usize = 4;
/// Number of segments: room for `BASE * (2^SEGMENTS - 1)` (67,108,860)
/// simultaneous entries per shard. The first segment lives inline in the
/// shard, so a shard with a handful of entries is one allocation.
const SEGMENTS: usize = 24;
/// Low 26 bits of the free-stack head: index + 1 of the top slot, 0 when empty.
/// Indices stay below `BASE * (2^SEGMENTS - 1) < 2^26`, so they always fit.
const INDEX_MASK: u64 = (1 << 26) - 1;
/// The other 38 bits of the free-stack head: a generation that changes on every
/// push and pop.
///
/// # ABA bound
///
/// A popper reads the head, then its successor, then CASes. The CAS can succeed
/// wrongly only if, while it stalls between the two, other threads push and pop
/// exactly a multiple of 2^38 (2.7 × 10^11) times, so that the generation comes
/// back to the value it read. At one push or pop per nanosecond that needs a stall
/// of more than four minutes at exactly the wrong moment.
const TAG_ONE: u64 = 1 << 26;

/// One shard of a [`ChildSet`]: its own slots, segments and free stack, on
/// cache lines of its own.
#[repr(align(128))]
pub(crate) struct Shard {
    /// Head of the free-index stack: `generation << 26 | (index + 1)` (see
    /// [`TAG_ONE`]).
    free: AtomicU64,
    /// The next index never handed out.
    bump: AtomicUsize,
    /// How many children count their reference on the set's owner here, and
    /// `ORPHAN` (module docs: "Parent references").
    refs: AtomicU32,
    /// Segment 0, inline.
    first: [Slot; BASE],
    /// Segments 1.., allocated on demand (`rest[k - 1]` is segment `k`).
    rest: [AtomicPtr<Slot>; SEGMENTS - 1],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            entry: AtomicPtr::new(ptr::null_mut()),
            next_free: AtomicU32::new(0),
        }
    }
}

struct Slot {
    /// A tagged entry pointer, or null.
    entry: AtomicPtr<()>,
    /// The next index on the free stack, + 1 (0 = end), while this slot is free.
    next_free: AtomicU32,
}

impl Shard {
    pub(crate) fn new() -> Shard {
        Shard {
            free: AtomicU64::new(0),
            bump: AtomicUsize::new(0),
            refs: AtomicU32::new(0),
            first: std::array::from_fn(|_| Slot::new()),
            rest: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// Stores `entry` (a non-null tagged pointer) and returns its slot index.
    ///
    /// The caller must then load the owner's state with `SeqCst` and, if the owner
    /// is done, [`remove`](Self::remove) the entry again (see the module docs).
    pub(crate) fn insert(&self, entry: *mut ()) -> u32 {
        debug_assert!(!entry.is_null());
        let index = self.alloc();
        // SeqCst: the store half of the insert side of the Dekker pair (module
        // docs); also a release that publishes the entry's contents to the canceler,
        // whose drain may swap this slot at the same time.
        self.slot(index)
            .entry
            .store_racing_rmw(entry, Ordering::SeqCst);
        crate::sync::dekker_point();
        index
    }

    /// Empties slot `index` if it still holds `entry`; true if it did, and then the
    /// entry's owned reference belongs to the caller.
    pub(crate) fn remove(&self, index: u32, entry: *mut ()) -> bool {
        let slot = self.slot(index);
        // AcqRel: acquire so the winner sees the entry as stored, release so the
        // emptied slot is published before the index is pushed for reuse.
        if slot
            .entry
            .compare_exchange(entry, ptr::null_mut(), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.push_free(index);
        true
    }

    /// Takes every entry out of the set; the owner's state must already be done.
    pub(crate) fn drain(&self, each: &mut (impl Take + ?Sized)) {
        // SeqCst: the load half of the canceler's side of the Dekker pair, for the
        // count of indices handed out (module docs): an inserter that missed the
        // close took its index by an RMW sequenced before its slot store, so the
        // segments up to that index are visited.
        let segments = segments_in_use(self.bump.load(Ordering::SeqCst));
        for k in 0..segments {
            // SeqCst: as above, for the segment pointer.
            let base = self.segment(k, Ordering::SeqCst);
            if base.is_null() {
                // Not allocated (yet). A later segment may exist all the same: its
                // inserter may have overtaken the one still allocating this one.
                continue;
            }
            let len = segment_len(k);
            for offset in 0..len {
                if !cfg!(all(test, ctx_loom)) && offset + PREFETCH_AHEAD < len {
                    // SAFETY: in bounds of the same live segment, as below.
                    let ahead = unsafe { &*base.add(offset + PREFETCH_AHEAD) };
                    // Relaxed: only the address of a hint (`sync::prefetch`);
                    // the entry is read for real when its turn comes.
                    let entry = ahead.entry.load(Ordering::Relaxed).cast::<u8>();
                    prefetch(entry);
                    prefetch(entry.wrapping_add(48));
                    prefetch(entry.wrapping_add(95));
                }
                // SAFETY: `base` points to a live segment of `segment_len(k)` slots;
                // segments are only freed when the set is dropped.
                let slot = unsafe { &*base.add(offset) };
                // SeqCst: pairs with the inserter's SeqCst store (module docs). The
                // load filters empty slots without a read-modify-write.
                if slot.entry.load(Ordering::SeqCst).is_null() {
                    continue;
                }
                // AcqRel: acquire the entry's contents; the swap decides ownership.
                let entry = slot.entry.swap(ptr::null_mut(), Ordering::AcqRel);
                if !entry.is_null() {
                    each.take(entry);
                }
            }
        }
    }

    /// How many entries the set holds right now.
    ///
    /// A scan of every slot ever used (the set's peak size), not a counter: keeping
    /// a shared counter up to date would cost two contended read-modify-writes per
    /// child, and this is only for introspection.
    pub(crate) fn len(&self) -> usize {
        let mut count = 0;
        // Relaxed: a bound for introspection (see below).
        for k in 0..segments_in_use(self.bump.load(Ordering::Relaxed)) {
            // Acquire: pairs with the CAS that published the segment's slots.
            let base = self.segment(k, Ordering::Acquire);
            if base.is_null() {
                // Segments can be allocated out of order: look at every one.
                continue;
            }
            for offset in 0..segment_len(k) {
                // SAFETY: as in `drain`: a live segment of `segment_len(k)` slots.
                let slot = unsafe { &*base.add(offset) };
                // Relaxed: a snapshot for introspection; callers synchronise by other
                // means (joining the threads that created and dropped children).
                count += usize::from(!slot.entry.load(Ordering::Relaxed).is_null());
            }
        }
        count
    }

    /// The indices on the free stack (top first) and how many indices were ever
    /// handed out; for the loom models, on a set nobody else is using.
    #[cfg(all(test, ctx_loom))]
    pub(crate) fn free_indices(&self) -> (Vec<u32>, usize) {
        let handed_out = self.bump.load(Ordering::Relaxed);
        let mut free = Vec::new();
        let mut next = (self.free.load(Ordering::Acquire) & INDEX_MASK) as u32;
        while next != 0 {
            assert!(free.len() < handed_out, "the free stack has a cycle");
            free.push(next - 1);
            next = self.slot(next - 1).next_free.load(Ordering::Relaxed);
        }
        (free, handed_out)
    }

    /// Hands out the next `n` indices to nobody, so that a model can start with
    /// later segments in play (loom runs too few threads to fill them).
    #[cfg(all(test, ctx_loom))]
    pub(crate) fn skip_indices(&self, n: usize) {
        self.bump.fetch_add(n, Ordering::Relaxed);
    }

    fn alloc(&self) -> u32 {
        // Acquire: pairs with the Release CAS in `push_free`, so the popped slot's
        // `next_free` is the one written before it was pushed.
        let mut head = self.free.load(Ordering::Acquire);
        while head & INDEX_MASK != 0 {
            let index = (head & INDEX_MASK) as u32 - 1;
            // Relaxed: ordered by the Acquire load of `head` above. If the slot was
            // popped and pushed again meanwhile, the generation changed and the CAS
            // below fails, so a stale value is never installed.
            let next = self.slot(index).next_free.load(Ordering::Relaxed) as u64;
            let new = ((head & !INDEX_MASK).wrapping_add(TAG_ONE)) | next;
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return index,
                Err(actual) => head = actual,
            }
        }
        // SeqCst: the index is unique by the RMW; SeqCst so that a canceler's
        // drain, which visits the segments up to the last index handed out, sees
        // it whenever this inserter missed the close (module docs).
        let index = self.bump.fetch_add(1, Ordering::SeqCst);
        let (k, _) = locate(index);
        assert!(
            k < SEGMENTS,
            "ctx: more than 67 million live children and callbacks on one context"
        );
        self.ensure_segment(k);
        index as u32
    }

    fn push_free(&self, index: u32) {
        let slot = self.slot(index);
        // Relaxed: the first read of `head` only seeds the CAS loop.
        let mut head = self.free.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below.
            slot.next_free
                .store((head & INDEX_MASK) as u32, Ordering::Relaxed);
            let new = ((head & !INDEX_MASK).wrapping_add(TAG_ONE)) | (index as u64 + 1);
            // Release: publishes `next_free` (and the emptied entry) to the popper.
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// The first slot of segment `k`, or null if it is not allocated yet.
    fn segment(&self, k: usize, order: Ordering) -> *mut Slot {
        match k {
            // The inline segment: never written through this pointer, only
            // turned back into `&Slot`s (all of whose fields are atomics).
            0 => self.first.as_ptr().cast_mut(),
            _ => self.rest[k - 1].load(order),
        }
    }

    fn ensure_segment(&self, k: usize) {
        // SeqCst, as `install`'s load: this load stands for the installing
        // CAS in the inserter's half of the Dekker pair (module docs), so it
        // takes its place in the single total order. (A plain load on x86.)
        if k == 0 || !self.rest[k - 1].load(Ordering::SeqCst).is_null() {
            return;
        }
        let fresh: Box<[Slot]> = (0..segment_len(k)).map(|_| Slot::new()).collect();
        let fresh = Box::into_raw(fresh).cast::<Slot>();
        // SeqCst: the segment must be visible to a canceler that could miss the
        // insert's state load (module docs); also publishes the fresh slots.
        if self.rest[k - 1]
            .compare_exchange(ptr::null_mut(), fresh, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // SAFETY: `fresh` came from `Box::into_raw` of a slice of this length
            // just above and was never shared: another thread installed its own.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(fresh, segment_len(k))) });
        }
    }

    #[inline]
    fn slot(&self, index: u32) -> &Slot {
        if let Some(slot) = self.first.get(index as usize) {
            // The inline segment, where a set that churns a few children
            // stays.
            return slot;
        }
        let (k, offset) = locate(index as usize);
        // Acquire: pairs with the CAS in `ensure_segment`; the index was handed out,
        // so its segment exists.
        let base = self.segment(k, Ordering::Acquire);
        debug_assert!(!base.is_null());
        // SAFETY: the segment holding a handed-out index is allocated, holds
        // `segment_len(k) > offset` slots and lives as long as `self`.
        unsafe { &*base.add(offset) }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        debug_assert_eq!(
            // Relaxed: `&mut self`, nobody else can reach the set.
            self.refs.load(Ordering::Relaxed) & !ORPHAN,
            0,
            "a child's reference on the set's owner outlived it"
        );
        // Relaxed: `&mut self`, nobody else can reach the set.
        let in_use = segments_in_use(self.bump.load(Ordering::Relaxed));
        for (k, segment) in (1..in_use).zip(self.rest.iter_mut()) {
            let base = crate::sync::ptr_get_mut(segment);
            if base.is_null() {
                // Segments can be allocated out of order: free every one.
                continue;
            }
            // SAFETY: allocated by `ensure_segment` as a boxed slice of this length,
            // and `&mut self` proves nobody else can reach it any more.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(base, segment_len(k))) });
        }
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("live", &self.len())
            .finish_non_exhaustive()
    }
}

/// How many shards a [`ChildSet`] has room for. Threads are spread over them
/// by a per-thread number; with more threads than shards, some share one.
const SHARDS: usize = 16;
/// Where the shard number sits in a slot index (above the shard's own index,
/// which stays below 2^26).
const SHARD_SHIFT: u32 = 26;

/// The set of children and callbacks of one cancelable node: up to [`SHARDS`]
/// shards, each allocated by the first thread that inserts through it, so that
/// threads creating and dropping children of one parent write lines of their
/// own (module docs).
pub(crate) struct ChildSet {
    shards: [AtomicPtr<Shard>; SHARDS],
    /// Orphaned shards still counting children, less those whose count went
    /// to zero since (wrapping: a child may take its shard off before the
    /// orphaning adds it). Zero again: the set's reference goes (module docs).
    pending: AtomicUsize,
}

impl ChildSet {
    pub(crate) fn new() -> ChildSet {
        ChildSet {
            shards: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            pending: AtomicUsize::new(0),
        }
    }

    /// The installed shard that slot `index` belongs to.
    fn shard_of(&self, index: u32) -> &Shard {
        let k = (index >> SHARD_SHIFT) as usize;
        // Acquire: pairs with the CAS that installed the shard; the index was
        // handed out by it, so it exists.
        let shard = self.shards[k].load(Ordering::Acquire);
        // SAFETY: installed shards live as long as the set.
        unsafe { shard.as_ref() }.expect("an index of a shard never installed")
    }

    /// Gives back a reference counted in shard `k`; true if the caller must now
    /// release the set's reference (the owner was orphaned and this was the
    /// last child it waited for).
    pub(crate) fn release_parent_ref(&self, k: u8) -> bool {
        let shard = self.shard_of(u32::from(k) << SHARD_SHIFT);
        // Release: the child's reads of its ancestors happen before whoever
        // drops the owner (that party acquires this count or `pending`).
        if shard.refs.fetch_sub(1, Ordering::Release) != ORPHAN | 1 {
            return false;
        }
        // Acquire: this shard's earlier releases (and the orphaning's) happen
        // before what follows.
        crate::sync::acquire_after_last_release(&shard.refs);
        // AcqRel: a chain of releases that the party reaching zero acquires.
        self.pending.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Orphans the set (its owner's last handle went, and the caller took the
    /// set's reference over); true if no child counts a reference here, and
    /// the caller must release the set's reference now.
    pub(crate) fn orphan(&self) -> bool {
        let mut counting = 0usize;
        for shard in &self.shards {
            // Acquire: pairs with the CAS that installed the shard. A shard
            // installed later than this load counts nothing (module docs).
            // SAFETY: installed shards live as long as the set.
            if let Some(shard) = unsafe { shard.load(Ordering::Acquire).as_ref() } {
                // AcqRel: acquires the releases of children gone before; its
                // release heads the chain that the last child acquires.
                let previous = shard.refs.fetch_or(ORPHAN, Ordering::AcqRel);
                debug_assert_eq!(previous & ORPHAN, 0, "orphaned twice");
                counting += usize::from(previous != 0);
            }
        }
        // AcqRel: as in `release_parent_ref`.
        let previous = self.pending.fetch_add(counting, Ordering::AcqRel);
        previous.wrapping_add(counting) == 0
    }

    /// [`insert_counting`](Self::insert_counting) without counting a reference.
    #[cfg(test)]
    pub(crate) fn insert_in(&self, k: usize, entry: *mut ()) -> u32 {
        self.insert_counting(k, entry, None)
    }

    /// Stores `entry` (a non-null tagged pointer) in shard `k` and returns its
    /// slot index; see [`Shard::insert`] for what the caller must do next.
    /// With `parent_ref`, also counts a reference on the set's owner in that
    /// shard for the child being registered, and stores the shard's number
    /// there, for the child to give back to
    /// [`release_parent_ref`](Self::release_parent_ref).
    ///
    /// The caller holds a handle on the owner and saw its `SET_REF` flag
    /// after that handle was made (module docs: "Parent references").
    pub(crate) fn insert_counting(
        &self,
        k: usize,
        entry: *mut (),
        parent_ref: Option<&AtomicU8>,
    ) -> u32 {
        let shard = self.shard_or_init(k);
        // Counted before the insert, whose capacity check may panic: the
        // child's handles may exist already, and their drop releases what
        // the field says was taken (`register`).
        if let Some(field) = parent_ref {
            // Relaxed: a reference made while another (the caller's handle)
            // keeps the owner alive, as `Arc::clone`; the handle's later
            // release orders it before an orphaning.
            let previous = shard.refs.fetch_add(1, Ordering::Relaxed);
            debug_assert_eq!(previous & ORPHAN, 0, "a shard counted after its orphaning");
            if previous >= MAX_SHARD_REFS {
                std::process::abort();
            }
            // Relaxed: read by the child's drop, after the release of its last
            // handle, which the caller still holds.
            field.store(k as u8, Ordering::Relaxed);
        }
        let index = shard.insert(entry);
        debug_assert!(index < 1 << SHARD_SHIFT);
        ((k as u32) << SHARD_SHIFT) | index
    }

    /// Empties slot `index` if it still holds `entry`; true if it did, and then the
    /// entry's owned reference belongs to the caller.
    pub(crate) fn remove(&self, index: u32, entry: *mut ()) -> bool {
        self.shard_of(index)
            .remove(index & ((1 << SHARD_SHIFT) - 1), entry)
    }

    /// Takes every entry out of the set; the owner's state must already be done.
    pub(crate) fn drain(&self, each: &mut (impl Take + ?Sized)) {
        for shard in &self.shards {
            // SeqCst: the canceler's side of the Dekker pair (module docs), for
            // the shard pointer, as for segment pointers.
            // SAFETY: installed shards live as long as the set.
            if let Some(shard) = unsafe { shard.load(Ordering::SeqCst).as_ref() } {
                shard.drain(each);
            }
        }
    }

    /// How many entries the set holds right now (introspection; a scan).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            // Acquire: pairs with the CAS that installed the shard.
            // SAFETY: installed shards live as long as the set.
            .filter_map(|shard| unsafe { shard.load(Ordering::Acquire).as_ref() })
            .map(Shard::len)
            .sum()
    }

    fn shard_or_init(&self, k: usize) -> &Shard {
        // SAFETY: shards are only ever installed by `install`, and freed with the
        // set.
        unsafe { install(&self.shards[k], Shard::new) }.0
    }
}

/// The value behind `pointer`, installed (boxed) by this call if there was none:
/// the loser of a race frees its own copy.
///
/// # Safety
///
/// `pointer` must be null or point to a boxed `T` that lives as long as the
/// borrow of `pointer`, and only ever be set by this function.
unsafe fn install<T>(pointer: &AtomicPtr<T>, make: impl FnOnce() -> T) -> (&T, bool) {
    // SeqCst: the canceler's loads of the pointer pair with the installing CAS
    // (the Dekker argument in the module docs); a plain Acquire would do for
    // dereferencing alone.
    let current = pointer.load(Ordering::SeqCst);
    // SAFETY: installed values live as long as `pointer` (the caller's contract).
    if let Some(value) = unsafe { current.as_ref() } {
        return (value, false);
    }
    // SAFETY: the caller's contract.
    unsafe { install_slow(pointer, make) }
}

/// [`install`] once the pointer was null: out of line, so that the callers'
/// fast path does not make room for a `T` (a shard is 128-byte aligned) on
/// its stack.
///
/// # Safety
///
/// As for [`install`].
#[cold]
#[inline(never)]
unsafe fn install_slow<T>(pointer: &AtomicPtr<T>, make: impl FnOnce() -> T) -> (&T, bool) {
    let fresh = Box::into_raw(Box::new(make()));
    // SeqCst: part of the insert side of the Dekker pair (module docs): the
    // value must be visible to a canceler that could miss the insert's state
    // load; also publishes the fresh value.
    match pointer.compare_exchange(ptr::null_mut(), fresh, Ordering::SeqCst, Ordering::SeqCst) {
        // SAFETY: just installed; it lives as long as `pointer`.
        Ok(_) => (unsafe { &*fresh }, true),
        Err(existing) => {
            // SAFETY: `fresh` was never shared; another thread installed its own.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: installed values live as long as `pointer`.
            (unsafe { &*existing }, false)
        }
    }
}

impl Drop for ChildSet {
    fn drop(&mut self) {
        for shard in &mut self.shards {
            let shard = crate::sync::ptr_get_mut(shard);
            if !shard.is_null() {
                // SAFETY: allocated by `install` with `Box::new`, and
                // `&mut self` proves nobody else can reach it any more.
                drop(unsafe { Box::from_raw(shard) });
            }
        }
    }
}

impl std::fmt::Debug for ChildSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSet")
            .field("live", &self.len())
            .finish_non_exhaustive()
    }
}

/// The shard the calling thread inserts into: threads are numbered in the order
/// they first insert anywhere, and spread round-robin over the shards.
#[cfg(not(all(test, ctx_loom)))]
fn current_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD
        .try_with(|shard| {
            if shard.get() == UNSET {
                // Relaxed: only a number; nothing is published through it.
                shard.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            shard.get()
        })
        // A thread-local already destroyed (a child created in a thread-local's
        // `Drop`): any shard is correct.
        .unwrap_or(0)
}

#[cfg(not(all(test, ctx_loom)))]
const UNSET: usize = usize::MAX;

#[cfg(not(all(test, ctx_loom)))]
thread_local! {
    /// The calling thread's shard, once it inserted anywhere.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(UNSET) };
}

/// Makes the calling thread insert into shard `k` (modulo the shard count) of
/// every set from now on: a test hook, so that several threads can be made to
/// share one shard.
#[cfg(all(feature = "test-util", not(all(test, ctx_loom))))]
pub(crate) fn pin_current_shard(k: usize) {
    SHARD.with(|shard| shard.set(k % SHARDS));
}

/// Under loom every model thread runs on one OS thread: shard 0 for all
/// unless a model pins a thread to another ([`loom_pin_shard`], a loom
/// thread-local), so that the models of whole contexts stay deterministic.
/// The set's own models pick shards explicitly with `insert_in`.
#[cfg(all(test, ctx_loom))]
fn current_shard() -> usize {
    LOOM_SHARD.with(std::cell::Cell::get)
}

#[cfg(all(test, ctx_loom))]
loom::thread_local! {
    /// The shard a model thread inserts into (0 unless a model pins another
    /// with [`loom_pin_shard`]).
    static LOOM_SHARD: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Makes the calling model thread insert into shard `k` from now on.
#[cfg(all(test, ctx_loom))]
pub(crate) fn loom_pin_shard(k: usize) {
    LOOM_SHARD.with(|shard| shard.set(k % SHARDS));
}

/// Under loom, models pin shards with [`loom_pin_shard`] instead.
#[cfg(all(feature = "test-util", test, ctx_loom))]
pub(crate) fn pin_current_shard(_k: usize) {}

/// The slot index of an entry held in the inline slot of [`Children`]. Set
/// indices stay below 2^26, so it never names a set slot.
pub(crate) const INLINE: u32 = u32::MAX - 1;

/// A node's children and callbacks: one inline slot, then a [`ChildSet`]
/// allocated on demand (module docs).
#[derive(Debug)]
pub(crate) struct Children {
    /// A tagged entry pointer, or null: the entry of the carrier's first
    /// registrant (the one whose CAS set `HAS_SET`), never reused once it left.
    inline: AtomicPtr<()>,
    /// The set, allocated by the first registrant after the first; it lives
    /// beside the inline slot.
    set: AtomicPtr<ChildSet>,
}

impl Children {
    pub(crate) fn new() -> Children {
        Children {
            inline: AtomicPtr::new(ptr::null_mut()),
            set: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Stores the entry of the carrier's first registrant (the one that flagged
    /// its children as in use) in the inline slot and returns [`INLINE`]. The
    /// caller's duty afterwards is as for [`Shard::insert`].
    pub(crate) fn insert_first(&self, entry: *mut ()) -> u32 {
        debug_assert!(!entry.is_null());
        // SeqCst: the store half of the insert side of the Dekker pair (module
        // docs), as the set's slot store; its release publishes the entry. Only
        // the first registrant ever uses the slot, so the CAS finds it empty.
        if self
            .inline
            .compare_exchange(ptr::null_mut(), entry, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            crate::sync::dekker_point();
            return INLINE;
        }
        debug_assert!(false, "the inline slot is for the first registrant only");
        // (Without the set's reference: children then count in the header.)
        self.insert(entry, None).0
    }

    /// Stores `entry` (a non-null tagged pointer) in the set and returns its
    /// slot index, and whether this call installed the set (its installer
    /// takes the set's reference on the owner: module docs). `parent_ref`: as
    /// for [`ChildSet::insert_counting`], whose duty afterwards is the
    /// caller's too.
    pub(crate) fn insert(&self, entry: *mut (), parent_ref: Option<&AtomicU8>) -> (u32, bool) {
        debug_assert!(!entry.is_null());
        // SAFETY: the set is only ever installed by `install`, and freed with
        // `self`.
        let (set, installed) = unsafe { install(&self.set, ChildSet::new) };
        (
            set.insert_counting(current_shard(), entry, parent_ref),
            installed,
        )
    }

    /// Empties slot `index` if it still holds `entry`; true if it did, and then
    /// the entry's owned reference belongs to the caller.
    pub(crate) fn remove(&self, index: u32, entry: *mut ()) -> bool {
        if index == INLINE {
            // AcqRel: acquire so the winner sees the entry as stored; release so
            // the emptied slot is published before a later inserter's CAS.
            return self
                .inline
                .compare_exchange(entry, ptr::null_mut(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        }
        self.set()
            .expect("a set index without a set")
            .remove(index, entry)
    }

    /// Takes every entry out; the owner's state must already be done.
    pub(crate) fn drain(&self, each: &mut (impl Take + ?Sized)) {
        // SeqCst: the load half of the canceler's side of the Dekker pair; the
        // load filters an empty slot without a read-modify-write.
        if !self.inline.load(Ordering::SeqCst).is_null() {
            // AcqRel: acquire the entry's contents; the swap decides ownership.
            let entry = self.inline.swap(ptr::null_mut(), Ordering::AcqRel);
            if !entry.is_null() {
                each.take(entry);
            }
        }
        if let Some(set) = self.set() {
            set.drain(each);
        }
    }

    /// Takes what is left here out of a node being dropped, which nobody
    /// else can reach (its registrants held references on it).
    pub(crate) fn drain_left_over(&mut self, mut each: impl FnMut(*mut ())) {
        let inline = crate::sync::ptr_get_mut(&mut self.inline);
        if !inline.is_null() {
            each(inline);
        }
        if let Some(set) = self.set() {
            set.drain(&mut each);
        }
    }

    /// Whether nothing is registered here, checked by the owner's canceler
    /// after its close with the same loads as [`drain`](Self::drain): no
    /// inline entry and no set. A registrant that the drain would have found is
    /// found here too, and one that inserts later sees the close and takes its
    /// entry back.
    pub(crate) fn is_vacant(&self) -> bool {
        // SeqCst: as in `drain`, the canceler's side of the Dekker pair.
        self.inline.load(Ordering::SeqCst).is_null() && self.set().is_none()
    }

    /// How many entries are registered right now (introspection; see
    /// [`ChildSet::len`]).
    pub(crate) fn len(&self) -> usize {
        // Relaxed: a snapshot, as in `ChildSet::len`.
        let inline = usize::from(!self.inline.load(Ordering::Relaxed).is_null());
        inline + self.set().map_or(0, ChildSet::len)
    }

    /// Whether nothing was ever left here: no inline entry and no set (for a
    /// node being dropped, which nobody else can reach).
    pub(crate) fn is_untouched(&mut self) -> bool {
        crate::sync::ptr_get_mut(&mut self.inline).is_null()
            && crate::sync::ptr_get_mut(&mut self.set).is_null()
    }

    /// The set, if a registrant ever needed one.
    pub(crate) fn set(&self) -> Option<&ChildSet> {
        // SeqCst: the canceler's load pairs with the SeqCst CAS that installs the
        // set (the Dekker argument in the module docs).
        let set = self.set.load(Ordering::SeqCst);
        // SAFETY: once installed, the set lives as long as `self`.
        unsafe { set.as_ref() }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        let set = crate::sync::ptr_get_mut(&mut self.set);
        if !set.is_null() {
            // SAFETY: allocated by `install` with `Box::new`, and `&mut self`
            // proves nobody else can reach it any more.
            drop(unsafe { Box::from_raw(set) });
        }
    }
}

fn segment_len(k: usize) -> usize {
    BASE << k
}

/// How many segments hold the first `handed_out` indices.
fn segments_in_use(handed_out: usize) -> usize {
    match handed_out {
        0 => 0,
        n => (locate(n - 1).0 + 1).min(SEGMENTS),
    }
}

/// Maps an index to (segment, offset): segment k covers `BASE*(2^k - 1) ..
/// BASE*(2^(k+1) - 1)`.
fn locate(index: usize) -> (usize, usize) {
    let shifted = index + BASE;
    let k = (usize::BITS - 1 - shifted.leading_zeros()) as usize - BASE.trailing_zeros() as usize;
    (k, shifted - (BASE << k))
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_indices_without_gaps() {
        let mut expected = (0, 0);
        for index in 0..10_000 {
            assert_eq!(locate(index), expected, "index {index}");
            expected.1 += 1;
            if expected.1 == segment_len(expected.0) {
                expected = (expected.0 + 1, 0);
            }
        }
    }

    /// The free stack's head keeps index + 1 in `INDEX_MASK`: every index the
    /// segments can hold must fit, or the ABA tag would be overwritten.
    #[test]
    fn every_index_fits_the_free_stack_head() {
        let slots = BASE * ((1 << SEGMENTS) - 1);
        assert!(
            (slots as u64) < INDEX_MASK,
            "{slots} slots, mask {INDEX_MASK:#x}"
        );
        assert_eq!(slots, 67_108_860, "the capacity the docs state");
    }

    #[test]
    fn freed_indices_are_reused() {
        let set = Shard::new();
        let entry = std::ptr::dangling_mut::<u64>().cast::<()>();
        for _ in 0..1000 {
            let a = set.insert(entry);
            assert!(set.remove(a, entry));
        }
        assert_eq!(set.bump.load(Ordering::Relaxed), 1);
        assert_eq!(set.len(), 0);
    }

    /// Indices name their shard: entries of several shards live side by side,
    /// are removed through their own shard, and a drain finds them all.
    #[test]
    fn shards_keep_their_own_indices() {
        let set = ChildSet::new();
        let entry = |n: usize| std::ptr::without_provenance_mut::<()>(8 * n);
        let indices: Vec<u32> = (0..SHARDS)
            .flat_map(|k| (0..3).map(move |i| (k, i)))
            .map(|(k, i)| set.insert_in(k, entry(10 * k + i + 1)))
            .collect();
        assert_eq!(set.len(), 3 * SHARDS);
        // The second entry of every shard leaves by its index.
        for k in 0..SHARDS {
            assert!(set.remove(indices[3 * k + 1], entry(10 * k + 2)));
            assert!(!set.remove(indices[3 * k + 1], entry(10 * k + 2)));
        }
        let mut drained = Vec::new();
        set.drain(&mut |e: *mut ()| drained.push(e.addr() / 8));
        drained.sort_unstable();
        let mut expected: Vec<usize> = (0..SHARDS).flat_map(|k| [10 * k + 1, 10 * k + 3]).collect();
        expected.sort_unstable();
        assert_eq!(drained, expected);
        assert_eq!(set.len(), 0);
        // A thread keeps its shard, and threads spread over the shards. Other
        // tests' threads take numbers meanwhile, so only a spread is certain:
        // the sixteen threads below, started one after the other, all share
        // one shard only if other threads took 15 (or 31, 47, …) numbers
        // between every two of them.
        let shards: std::collections::HashSet<usize> = (0..16)
            .map(|_| {
                std::thread::spawn(|| {
                    let shard = current_shard();
                    assert_eq!(current_shard(), shard, "a thread keeps its shard");
                    assert!(shard < SHARDS);
                    shard
                })
                .join()
                .unwrap()
            })
            .collect();
        assert!(
            shards.len() > 1,
            "threads spread over the shards: {shards:?}"
        );
    }
}
