//! The node allocation: one per derived context.
//!
//! Every node starts with a [`Header`] (reference counts, vtable, parent, carrier);
//! its payload follows. Cancelable nodes start their payload with a [`CancelPart`],
//! so a pointer to any carrier reaches its state word at a fixed offset whatever
//! the node's concrete type. Both structs are `#[repr(C)]` for exactly that reason.
//!
//! Reference counting follows `Arc`: `strong` counts handles ([`Context`],
//! [`CancelFunc`], children through their `parent` link, running cancels,
//! and the child set's one reference for the children that count theirs in
//! its shards: `SET_REF`, see `child_set`'s "Parent references"); `weak`
//! counts one for all strong references together plus one per registration in a
//! parent's child set (still held by a node whose entry a walk drained, until
//! its detach) plus one per armed timer [`Expiry`]. The payload is dropped
//! when `strong` reaches zero and the memory freed when `weak` does.
//!
//! [`Context`]: crate::Context
//! [`CancelFunc`]: crate::CancelFunc
//! [`Expiry`]: crate::Expiry

use super::child_set::Children;
use super::state::{self, Reason, Record, Word};
use super::value::ValuePart;
use super::wait::Waiters;
use super::work::Work;
use crate::sync::{AccessCheck, AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};
use crate::timer::Timer;
use std::any::TypeId;
use std::ptr::{self, NonNull};
use std::time::Instant;

/// The slot index of a node that is not registered with any parent.
pub(crate) const UNREGISTERED: u32 = u32::MAX;

/// Above this many references we abort, as `Arc` does: the count must not
/// reach [`SET_REF`] (nor the weak count wrap).
const MAX_REFCOUNT: u64 = 1 << 30;
/// One strong reference in [`Header::counts`].
const STRONG: u64 = 1;
/// One weak reference in [`Header::counts`].
const WEAK: u64 = 1 << 32;
/// Set in [`Header::counts`] while one of the strong references counted is the
/// child set's, held for the children counted in its shards (`child_set`'s
/// "Parent references").
const SET_REF: u64 = 1 << 31;
/// The strong count's bits in [`Header::counts`].
const STRONG_MASK: u64 = SET_REF - 1;

/// What kind of context a node is; drives `Display` and which payload follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Cancel,
    CancelCause,
    Deadline,
    Merge,
    Value,
    WithoutCancel,
    Timer,
}

impl Kind {
    /// Whether the payload starts with a [`CancelPart`].
    pub(crate) fn is_cancelable(self) -> bool {
        matches!(
            self,
            Kind::Cancel | Kind::CancelCause | Kind::Deadline | Kind::Merge
        )
    }
}

/// Per-payload-type facts and functions.
#[derive(Debug)]
pub(crate) struct VTable {
    pub(crate) kind: Kind,
    /// For value nodes: the type of the value.
    pub(crate) type_id: Option<TypeId>,
    /// For value nodes whose [`Keys`](super::value::Keys) start right after
    /// the header: every value node but those of types aligned to more than it.
    pub(crate) value_keys: bool,
    /// For value nodes: the name of the value's type.
    pub(crate) type_name: fn() -> &'static str,
    /// Drops the payload in place (the header stays).
    pub(crate) drop_payload: unsafe fn(NonNull<Header>),
    /// Frees the allocation; the payload must already be dropped.
    pub(crate) dealloc: unsafe fn(NonNull<Header>),
    /// Called once by the canceler that walks the node's subtree, right after the
    /// node became done (a deadline node releases its timer here).
    pub(crate) on_done: Option<fn(NodeRef, &mut Work)>,
}

/// The start of every node.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    /// The strong count (low 32 bits) and the weak count (high 32 bits), in one
    /// word so that a walk can give back a strong and a weak reference in one
    /// read-modify-write ([`NodeRef::release_strong_and_weak_is_last`]).
    counts: AtomicU64,
    pub(crate) vtable: &'static VTable,
    /// The parent this node was derived from: a strong reference owned by the node,
    /// or a root sentinel (see [`NodeRef::real`]).
    pub(crate) parent: NodeRef,
    /// The nearest cancelable node at or above this one (itself if cancelable); null
    /// if nothing above can ever cancel this context. Kept alive by `parent`.
    pub(crate) carrier: *const Header,
    /// Lets loom check that every use of the node happens after its creation
    /// and before its free (zero-sized outside loom).
    access: AccessCheck,
}

/// The first part of every cancelable node's payload.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct CancelPart {
    /// Live or done and why: see [`state`].
    pub(crate) state: AtomicPtr<Record>,
    /// Whether a deadline applies here (this node's or an ancestor's): only then do
    /// readers look for it, walking up (see [`NodeRef::deadline_node`]). Beside
    /// `state`, so that a read of a live context touches one cache line.
    pub(crate) has_deadline: bool,
    /// Set once the parent's walk, which took this node's entry out of the
    /// parent's set, is done with the node; the slot's weak reference is then
    /// the node's detach's to release. A detach that finds its entry gone waits
    /// for it (`register::detach_owing`). Unused by merge nodes.
    pub(crate) drained: AtomicBool,
    /// The shard of the parent's set that counts this node's reference on the
    /// parent, or [`IN_HEADER`] if the parent's own count does (`child_set`'s
    /// "Parent references"). Written by the registrant before any handle can
    /// go, read by the drop.
    pub(crate) parent_shard: AtomicU8,
    /// Our index in the parent carrier's child set, or [`UNREGISTERED`].
    pub(crate) slot: AtomicU32,
    /// Children and callbacks: an inline slot, then a set allocated on demand.
    pub(crate) children: Children,
    /// Where `Done` futures and blocking waits sleep: one inline waker slot, and
    /// an event for further waiters (see `wait`).
    pub(crate) waiters: Waiters,
}

/// [`CancelPart::parent_shard`] of a node whose reference on its parent is
/// counted in the parent's header.
pub(crate) const IN_HEADER: u8 = u8::MAX;

/// The payload of a deadline node.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct DeadlinePart {
    pub(crate) cancel: CancelPart,
    pub(crate) deadline: Instant,
    /// Borrowed from its owner (see [`TimerRef`](super::deadline::TimerRef)).
    pub(crate) timer: super::deadline::TimerRef,
    /// The armed timer's key, 0 when none is armed (or it was disarmed already).
    pub(crate) key: AtomicU64,
    /// What the node ends with when the deadline passes.
    pub(crate) reason: Reason,
    /// The backend's [`Timer::is_system_clock`], asked when the node was made
    /// (a walk asks no backend anything).
    pub(crate) system_clock: bool,
}

/// The payload of a node with several parents (`with_cancel_any`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct MergePart {
    pub(crate) cancel: CancelPart,
    /// The parents after the first (the first is `Header::parent`).
    pub(crate) extra: Links,
    /// The deadline node with the earliest deadline among the parents', or null;
    /// kept alive by the parent links.
    pub(crate) deadline_src: *const Header,
}

// SAFETY: `deadline_src` points into a parent chain that the node keeps alive with
// strong references, and is only read; everything else is `Send + Sync`.
unsafe impl Send for MergePart {}
// SAFETY: as above.
unsafe impl Sync for MergePart {}

/// A further parent of a merge node and our slot in its carrier's set.
#[derive(Debug)]
pub(crate) struct Link {
    /// A strong reference on the parent (or a root sentinel), released by
    /// `drop_node` in its loop, never by a `Drop` (that would recurse).
    pub(crate) parent: NodeRef,
    pub(crate) slot: AtomicU32,
}

impl Link {
    /// The carrier this link registers with, if the parent can be canceled.
    pub(crate) fn carrier(&self) -> Option<NodeRef> {
        self.parent.real()?.carrier()
    }
}

/// How many further parents a merge node keeps inline; more spill to the heap.
const INLINE_LINKS: usize = 3;

/// The further parents of a merge node: inline for up to [`INLINE_LINKS`] (so a
/// merge of up to four contexts is one allocation, like every other context),
/// on the heap beyond.
#[derive(Debug)]
pub(crate) enum Links {
    Inline([Option<Link>; INLINE_LINKS]),
    Heap(Box<[Link]>),
}

impl Links {
    /// Links to `parents`, each taking a strong reference.
    pub(crate) fn new(parents: &[crate::Context]) -> Links {
        let link = |parent: &crate::Context| Link {
            parent: parent.parent_link(),
            slot: AtomicU32::new(UNREGISTERED),
        };
        if parents.len() <= INLINE_LINKS {
            Links::Inline(std::array::from_fn(|i| parents.get(i).map(link)))
        } else {
            Links::Heap(parents.iter().map(link).collect())
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Link> {
        let (inline, heap): (&[Option<Link>], &[Link]) = match self {
            Links::Inline(links) => (links, &[]),
            Links::Heap(links) => (&[], links),
        };
        inline.iter().flatten().chain(heap)
    }

    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }
}

/// The payload of a node that installs a timer backend for its subtree.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct TimerPart {
    pub(crate) timer: std::sync::Arc<dyn Timer>,
}

/// A node: header, then payload.
#[repr(C)]
pub(crate) struct Node<P> {
    pub(crate) header: Header,
    pub(crate) payload: P,
}

/// A payload type, with the vtable describing nodes that carry it.
pub(crate) trait Payload: Sized + Send + Sync + 'static {
    const KIND: Kind;
    fn name() -> &'static str {
        ""
    }
    const VTABLE: &'static VTable = &VTable {
        kind: Self::KIND,
        type_id: if matches!(Self::KIND, Kind::Value) {
            Some(TypeId::of::<Self>())
        } else {
            None
        },
        value_keys: Self::VALUE_KEYS,
        type_name: Self::name,
        drop_payload: drop_payload::<Self>,
        dealloc: dealloc::<Self>,
        on_done: Self::ON_DONE,
    };
    /// See [`VTable::value_keys`].
    const VALUE_KEYS: bool = false;
    /// See [`VTable::on_done`].
    const ON_DONE: Option<fn(NodeRef, &mut Work)> = None;
}

impl Payload for CancelPart {
    const KIND: Kind = Kind::Cancel;
}
impl Payload for DeadlinePart {
    const KIND: Kind = Kind::Deadline;
    const ON_DONE: Option<fn(NodeRef, &mut Work)> = Some(super::deadline::on_done);
}
impl Payload for MergePart {
    const KIND: Kind = Kind::Merge;
}
impl Payload for TimerPart {
    const KIND: Kind = Kind::Timer;
}
impl<T: Send + Sync + 'static> Payload for ValuePart<T> {
    const KIND: Kind = Kind::Value;
    const VALUE_KEYS: bool = ValuePart::<T>::KEYS_AFTER_HEADER;
    fn name() -> &'static str {
        std::any::type_name::<T>()
    }
}
/// The payload of `without_cancel`: nothing but the parent link.
#[derive(Debug)]
pub(crate) struct Detached;
impl Payload for Detached {
    const KIND: Kind = Kind::WithoutCancel;
}

/// The vtable of `with_cancel_cause` nodes: a cancel node with another name.
pub(crate) static CANCEL_CAUSE_VTABLE: VTable = VTable {
    kind: Kind::CancelCause,
    type_id: None,
    value_keys: false,
    type_name: <CancelPart as Payload>::name,
    drop_payload: drop_payload::<CancelPart>,
    dealloc: dealloc::<CancelPart>,
    on_done: None,
};

unsafe fn drop_payload<P: Payload>(header: NonNull<Header>) {
    let node = header.cast::<Node<P>>().as_ptr();
    // SAFETY: called once, when `strong` reached zero, after the node's drop
    // detached it (`drop::drop_one`): a parent's walk that reached it through
    // its slot's weak reference (`Hold::Drained`) is done with it by then, as
    // the detach waited for its `drained` flag (invariant 11). Other weak
    // holders only touch the counts.
    unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*node).payload)) };
}

unsafe fn dealloc<P: Payload>(header: NonNull<Header>) {
    // SAFETY: the node was allocated as a `Box<Node<P>>`; `MaybeUninit<P>` has the
    // same layout as `P`, so this frees it (dropping the header's atomics) without
    // dropping the payload a second time. `weak` reached zero: nobody else can reach
    // the allocation.
    drop(unsafe { Box::from_raw(header.cast::<Node<std::mem::MaybeUninit<P>>>().as_ptr()) });
    #[cfg(all(test, ctx_loom))]
    LIVE_NODES.with(|live| live.set(live.get() - 1));
}

// Nodes allocated and not yet freed. Loom runs all threads of a model on one OS
// thread, so the loom models read this to check that no node leaks.
#[cfg(all(test, ctx_loom))]
thread_local! {
    pub(crate) static LIVE_NODES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Drop for CancelPart {
    fn drop(&mut self) {
        // Loom: the payload's drop is an access of `drained` (an atomic load,
        // a point where loom may switch threads, then a non-atomic one), so
        // loom reports a walk's access of the node (its `mark_drained`) that
        // the drop does not happen after (invariant 11).
        #[cfg(all(test, ctx_loom))]
        {
            let _ = self.drained.load(crate::sync::Ordering::Relaxed);
            // SAFETY: loom's checked non-atomic read (loom's `AtomicBool` has
            // no `with_mut`); nobody may touch the payload now.
            let _ = unsafe { self.drained.unsync_load() };
        }
        let word = crate::sync::ptr_get_mut(&mut self.state);
        if state::is_done(word) {
            // SAFETY: a done word owns one reference on its reason; nobody else can
            // reach the node any more.
            drop(unsafe { Reason::from_word(word) });
        }
        // Usually empty: children keep their parent alive, and a canceled node
        // drained its set. Callbacks of a context that was never canceled remain;
        // dropping them runs their closures' `Drop`s, each guarded so that one
        // panic cannot leak the rest (the first is resumed afterwards).
        //
        // A node walked to the end (`COMPLETE`, and no read's close left
        // unclaimed) has nothing left: its walk drained every entry there
        // was, and a registrant that came later took its own back before it
        // let go of the handle that kept the node alive. So the slots of a
        // large set are not scanned again.
        let walked = state::has(word, state::COMPLETE) && !state::has(word, state::UNCLAIMED);
        #[cfg(debug_assertions)]
        if walked {
            let mut left = 0;
            self.children.drain_left_over(|_| left += 1);
            assert_eq!(left, 0, "a node walked to the end kept registrations");
        }
        if walked || self.children.is_untouched() {
            return;
        }
        let mut panic = None;
        self.children.drain_left_over(|raw| {
            super::work::catch(&mut panic, || super::register::release_entry(raw))
        });
        super::work::resume(panic);
    }
}

/// A raw handle on a node. It does not own a reference by itself; the code that
/// holds it says which reference it stands for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct NodeRef(NonNull<Header>);

// SAFETY: a `NodeRef` is an address; what may be done through it is governed by the
// reference it stands for, and all shared node state is atomic or immutable.
unsafe impl Send for NodeRef {}
// SAFETY: as above.
unsafe impl Sync for NodeRef {}

impl NodeRef {
    /// Allocates a node with `strong` strong references and `weak` weak ones (one
    /// for all strong references together, plus any prepaid registrations). A
    /// cancelable node is its own carrier; any other gets `carrier`.
    pub(crate) fn alloc<P: Payload>(
        vtable: &'static VTable,
        parent: NodeRef,
        carrier: *const Header,
        strong: u32,
        weak: u32,
        payload: P,
    ) -> NodeRef {
        let carrier_self = vtable.kind.is_cancelable();
        // Allocated first and written in place: building the node on the stack
        // and moving it into a box costs a copy of every byte.
        let raw = Box::into_raw(Box::<Node<P>>::new_uninit()).cast::<Node<P>>();
        // SAFETY: `raw` is a fresh allocation for a `Node<P>`; each field is
        // written once, before anything reads the node.
        unsafe {
            ptr::addr_of_mut!((*raw).header).write(Header {
                counts: AtomicU64::new(u64::from(strong) | u64::from(weak) << 32),
                vtable,
                parent,
                carrier,
                access: AccessCheck::new(),
            });
            ptr::addr_of_mut!((*raw).payload).write(payload);
        }
        #[cfg(all(test, ctx_loom))]
        LIVE_NODES.with(|live| live.set(live.get() + 1));
        if carrier_self {
            // SAFETY: `raw` is a fresh, unshared allocation.
            unsafe { (*raw).header.carrier = raw.cast::<Header>() };
        }
        // SAFETY: `Box::into_raw` never returns null.
        NodeRef(unsafe { NonNull::new_unchecked(raw.cast::<Header>()) })
    }

    /// The sentinel standing for `Context::background()`.
    pub(crate) const BACKGROUND: NodeRef = NodeRef::sentinel(8);
    /// The sentinel standing for `Context::todo()`.
    pub(crate) const TODO: NodeRef = NodeRef::sentinel(16);

    const fn sentinel(addr: usize) -> NodeRef {
        // SAFETY: a non-zero address; sentinels are never dereferenced (`is_root`).
        NodeRef(unsafe { NonNull::new_unchecked(ptr::without_provenance_mut(addr)) })
    }

    /// Whether this is one of the two root sentinels (no allocation behind it).
    #[inline]
    pub(crate) fn is_root(self) -> bool {
        self.0.as_ptr().addr() <= 16
    }

    /// `Some(self)` unless this is a root sentinel.
    #[inline]
    pub(crate) fn real(self) -> Option<NodeRef> {
        (!self.is_root()).then_some(self)
    }

    pub(crate) fn from_ptr(ptr: *const Header) -> Option<NodeRef> {
        NonNull::new(ptr.cast_mut()).map(NodeRef)
    }

    pub(crate) fn as_non_null(self) -> NonNull<Header> {
        self.0
    }

    pub(crate) fn as_ptr(self) -> *const Header {
        self.0.as_ptr()
    }

    pub(crate) fn header<'a>(self) -> &'a Header {
        // SAFETY: a `NodeRef` is only used while the reference it stands for keeps
        // the allocation alive; the header is never mutated after publication.
        let header = unsafe { self.0.as_ref() };
        header.access.read();
        header
    }

    pub(crate) fn kind(self) -> Kind {
        self.header().vtable.kind
    }

    /// The payload, as type `P`.
    ///
    /// # Safety
    ///
    /// The node must have been allocated with payload `P`, or with a `#[repr(C)]`
    /// payload that starts with a `P` (a `CancelPart`), and must be alive.
    pub(crate) unsafe fn payload<'a, P>(self) -> &'a P {
        // SAFETY: by the caller's contract, the payload at this fixed offset (both
        // structs are `repr(C)`, and all our payloads are 8-aligned) is a live `P`.
        unsafe { &(*self.0.cast::<Node<P>>().as_ptr()).payload }
    }

    /// The cancel part of a cancelable node.
    pub(crate) fn cancel_part<'a>(self) -> &'a CancelPart {
        debug_assert!(self.kind().is_cancelable());
        // SAFETY: every cancelable payload is `repr(C)` and starts with a `CancelPart`.
        unsafe { self.payload::<CancelPart>() }
    }

    /// The deadline part of a deadline node.
    pub(crate) fn deadline_part<'a>(self) -> &'a DeadlinePart {
        debug_assert_eq!(self.kind(), Kind::Deadline);
        // SAFETY: deadline nodes carry a `DeadlinePart`.
        unsafe { self.payload::<DeadlinePart>() }
    }

    /// The merge part of a merge node.
    pub(crate) fn merge_part<'a>(self) -> &'a MergePart {
        debug_assert_eq!(self.kind(), Kind::Merge);
        // SAFETY: merge nodes carry a `MergePart`.
        unsafe { self.payload::<MergePart>() }
    }

    /// The deadline node whose deadline applies to this carrier (itself, or the
    /// nearest one above, or a merge node's earliest), if any.
    ///
    /// A walk up the parent chain, taken only when `has_deadline` says there is
    /// something to find: storing the pointer in every node would cost 8 bytes each.
    pub(crate) fn deadline_node(self) -> Option<NodeRef> {
        if !self.cancel_part().has_deadline {
            return None;
        }
        for node in self.ancestors() {
            match node.kind() {
                Kind::Deadline => return Some(node),
                Kind::Merge => return NodeRef::from_ptr(node.merge_part().deadline_src),
                Kind::WithoutCancel => return None,
                _ => {}
            }
        }
        None
    }

    /// This node, then its parent, and so on up to (not including) the root.
    ///
    /// The one parent walk of the crate: values, the timer backend, the deadline
    /// and `Display` all go through it. Valid while the caller keeps `self` alive,
    /// which keeps every ancestor alive (invariant 3).
    pub(crate) fn ancestors(self) -> impl Iterator<Item = NodeRef> {
        std::iter::successors(Some(self), |node| node.header().parent.real())
    }

    /// The carriers this cancelable node is registered with, each with the field
    /// holding its slot index there: the parent's, then a merge node's further
    /// parents'.
    pub(crate) fn registrations<'a>(self) -> impl Iterator<Item = (NodeRef, &'a AtomicU32)> {
        let main = self
            .header()
            .parent
            .real()
            .and_then(NodeRef::carrier)
            .map(|carrier| (carrier, &self.cancel_part().slot));
        let extra = (self.kind() == Kind::Merge)
            .then(|| self.merge_part().extra.iter())
            .into_iter()
            .flatten()
            .filter_map(|link| Some((link.carrier()?, &link.slot)));
        main.into_iter().chain(extra)
    }

    /// The nearest cancelable node at or above this one.
    pub(crate) fn carrier(self) -> Option<NodeRef> {
        NodeRef::from_ptr(self.header().carrier)
    }

    /// This node's state word (it must be cancelable).
    #[inline]
    pub(crate) fn state(self) -> Word {
        // Acquire: pairs with the SeqCst CAS that stored a done word, so the record
        // it points to (and everything the canceler did before) is visible.
        self.cancel_part().state.load(Ordering::Acquire)
    }

    pub(crate) fn inc_strong(self) {
        // Relaxed: a new reference is made from an existing one, which already keeps
        // the node alive; nothing is published (the same argument as `Arc::clone`).
        if self.header().counts.fetch_add(STRONG, Ordering::Relaxed) & STRONG_MASK > MAX_REFCOUNT {
            std::process::abort();
        }
    }

    /// Releases one strong reference; the last one drops the node (and possibly,
    /// iteratively, its ancestors). A panicking payload `Drop` does not stop that
    /// drop; its panic is resumed afterwards.
    #[inline]
    pub(crate) fn dec_strong(self) {
        if !self.release_strong_is_last() {
            return;
        }
        let mut panic = None;
        // SAFETY: the strong count just reached zero.
        unsafe { super::drop::drop_node(self, &mut panic) };
        super::work::resume(panic);
    }

    /// Releases one strong reference and says whether it was the last; the caller
    /// must then drop the node.
    ///
    /// A handle that is the only reference left of any kind writes no
    /// read-modify-write: see [`sole_reference`](Self::sole_reference).
    #[inline]
    pub(crate) fn release_strong_is_last(self) -> bool {
        let counts = &self.header().counts;
        // Relaxed: the fence in `sole_reference` orders it, and otherwise only
        // a first guess for the CAS loop.
        let n = counts.load(Ordering::Relaxed);
        if self.sole_reference(n) {
            // Nobody else reads or writes the word any more: the count is
            // brought to what the drop expects (no strong reference) with a
            // plain store.
            counts.store(n - STRONG, Ordering::Relaxed);
            return true;
        }
        self.release_from(n, STRONG)
    }

    /// Whether `n`, just loaded from the counts by a holder of a strong
    /// reference, says that this reference is the last one of any kind that
    /// anyone can use: the one strong reference, and as weak ones only the
    /// strong references' own and, for a node whose parent's walk is done
    /// with it (`drained`) and that is still registered, its slot's, which
    /// the node's detach (the drop) releases. Nobody else can then make,
    /// release or use a reference, so the release needs no read-modify-write.
    /// If so, everything the other holders did happens-before the return.
    #[inline]
    fn sole_reference(self, n: u64) -> bool {
        let sole = if n == STRONG + WEAK {
            true
        } else if n == STRONG + 2 * WEAK {
            let vtable = self.header().vtable;
            if vtable.kind == Kind::Merge || !vtable.kind.is_cancelable() {
                return false;
            }
            let part = self.cancel_part();
            // Acquire: pairs with the walk's Release store, made once it is
            // done with the node (as in `register::detach_owing`). A walk
            // that pins the node (`Walk::reach`) does so before that store,
            // so the counts are read again after it: a pin would show. The
            // index is cleared only by the node's detach, which a holder of
            // a handle runs; Acquire as there.
            part.drained.load(Ordering::Acquire)
                && part.slot.load(Ordering::Acquire) != UNREGISTERED
                && self.header().counts.load(Ordering::Relaxed) == n
        } else {
            false
        };
        if sole {
            // Acquire: the load of the counts read the Release decrements of
            // every other holder, whose uses of the node must happen-before
            // its drop.
            crate::sync::acquire_after_last_release(&self.header().counts);
        }
        sole
    }

    /// Releases one strong and one weak reference at once (a walk's hold on a
    /// child and the child's slot): one read-modify-write instead of two. Says
    /// whether the strong one was the last; the caller must then drop the node,
    /// which still holds the weak reference of all strong ones, so the weak one
    /// released here was never the last.
    pub(crate) fn release_strong_and_weak_is_last(self) -> bool {
        self.release(STRONG + WEAK)
    }

    /// Subtracts `amount` (one strong reference, and maybe one weak) from the
    /// counts; true if the strong one was the last.
    ///
    /// One compare-and-swap, not a subtraction: the release that leaves the
    /// set's reference alone takes it over in the same step (clears `SET_REF`,
    /// keeping the strong reference it stands for), and then orphans the set.
    /// Decided after the subtraction, the take-over would touch the node with
    /// no reference left: a handle revived meanwhile (an upgrade) could take
    /// the set's reference over, orphan the set and free the node first.
    #[inline]
    fn release(self, amount: u64) -> bool {
        // Relaxed: only a first guess for the CAS loop.
        self.release_from(self.header().counts.load(Ordering::Relaxed), amount)
    }

    /// [`release`](Self::release), from a first guess `n` of the counts.
    #[inline]
    fn release_from(self, mut n: u64, amount: u64) -> bool {
        let counts = &self.header().counts;
        loop {
            debug_assert!(n & STRONG_MASK > 0 && (amount < WEAK || n >> 32 >= 2));
            let take_over = n & (STRONG_MASK | SET_REF) == SET_REF | 2;
            let new = if take_over {
                (n - amount) & !SET_REF
            } else {
                n - amount
            };
            // Release: everything this handle did happens-before the drop (or
            // the orphaning). Acquire, for a take-over: the releases of the
            // other handles happen before the orphaning and a drop that may
            // follow. (The last release acquires below instead.)
            let order = if take_over {
                Ordering::AcqRel
            } else {
                Ordering::Release
            };
            match counts.compare_exchange_weak(n, new, order, Ordering::Relaxed) {
                Ok(_) if take_over => return self.orphan_taken_over(),
                Ok(previous) => {
                    if previous & (STRONG_MASK | SET_REF) != 1 {
                        return false;
                    }
                    // Acquire: pairs with the Release decrements of all other
                    // handles.
                    crate::sync::acquire_after_last_release(counts);
                    return true;
                }
                Err(actual) => n = actual,
            }
        }
    }

    /// This release took the set's reference over from the last handle: the
    /// set is orphaned. True if the set's reference was then released here and
    /// was the last; else the last child counted in a shard releases it
    /// (`child_set`'s "Parent references").
    #[cold]
    #[inline(never)]
    fn orphan_taken_over(self) -> bool {
        // The set's reference is ours, and keeps the payload (and the set) alive.
        let set = self.cancel_part().children.set();
        let set = set.expect("the set's reference without a set");
        set.orphan() && self.release_strong_is_last()
    }

    /// Takes the set's reference, for the registrant that installed this
    /// node's child set (which holds a handle: the node is alive).
    pub(crate) fn add_set_ref(self) {
        // Relaxed: as for `inc_strong`; registrants that read the flag made
        // their own reference first (`child_set`'s "Parent references").
        let previous = self
            .header()
            .counts
            .fetch_add(STRONG | SET_REF, Ordering::Relaxed);
        debug_assert_eq!(previous & SET_REF, 0, "one set, one set's reference");
        if previous & STRONG_MASK > MAX_REFCOUNT {
            std::process::abort();
        }
    }

    /// Whether the set's reference is held: a registrant with a handle that
    /// sees it may count its reference in a shard of the set.
    pub(crate) fn has_set_ref(self) -> bool {
        // Relaxed: the caller's handle was made by an RMW of this word, so
        // this load sees the flag as that RMW left it or later; and the flag
        // cannot go while the handle is held (`child_set`'s "Parent
        // references").
        self.header().counts.load(Ordering::Relaxed) & SET_REF != 0
    }

    pub(crate) fn inc_weak(self) {
        // Relaxed: as for `inc_strong`.
        if self.header().counts.fetch_add(WEAK, Ordering::Relaxed) >> 32 > MAX_REFCOUNT {
            std::process::abort();
        }
    }

    /// Releases one weak reference; the last one frees the memory.
    pub(crate) fn dec_weak(self) {
        // Release/Acquire: as for `dec_strong`, so the freeing thread sees all uses.
        if self.header().counts.fetch_sub(WEAK, Ordering::Release) >> 32 != 1 {
            return;
        }
        crate::sync::acquire_after_last_release(&self.header().counts);
        // SAFETY: the weak count reached zero, so the payload was dropped already (the
        // strong references held one weak together) and nobody can reach the node.
        unsafe { (self.header().vtable.dealloc)(self.0) };
    }

    /// Releases the weak reference that all strong ones held together, after the
    /// last strong one went and the payload was dropped, and with it, if `slot`,
    /// the weak reference of the node's slot in its parent's set, which its
    /// detach took back (`register::detach_owing`): one read-modify-write at
    /// most, none if no other weak reference is left. The last weak frees the
    /// memory.
    ///
    /// # Safety
    ///
    /// The strong count must be zero and the payload dropped, and the caller must
    /// own the strong references' weak one (and the slot's, if `slot`).
    pub(crate) unsafe fn release_last_weaks(self, slot: bool) {
        let ours = if slot { 2 * WEAK } else { WEAK };
        // Acquire: if ours are the only weak references left, every other holder
        // released theirs with a Release RMW that this load reads from (or that
        // precedes one it reads from), so their uses happen-before the free. With
        // no strong reference and no other weak one, nobody can make a new one:
        // the memory is ours, and the decrement can be skipped.
        let counts = &self.header().counts;
        if counts.load(Ordering::Acquire) == ours {
            // SAFETY: as in `dec_weak`: the payload is dropped, nobody else can
            // reach the node.
            unsafe { (self.header().vtable.dealloc)(self.0) };
            return;
        }
        // Release/Acquire: as in `dec_weak`. The strong count is zero and stays
        // so (an upgrade fails on it), so the word is the weak count alone.
        if counts.fetch_sub(ours, Ordering::Release) != ours {
            return;
        }
        crate::sync::acquire_after_last_release(counts);
        // SAFETY: as above.
        unsafe { (self.header().vtable.dealloc)(self.0) };
    }

    /// Turns a weak reference into an additional strong one, unless the node is
    /// already being dropped.
    pub(crate) fn upgrade(self) -> bool {
        let counts = &self.header().counts;
        // Relaxed: only a first guess for the CAS loop.
        let mut n = counts.load(Ordering::Relaxed);
        loop {
            let strong = n & STRONG_MASK;
            if strong == 0 {
                return false;
            }
            if strong > MAX_REFCOUNT {
                std::process::abort();
            }
            // Acquire on success: pairs with the Release of handles dropped before, as
            // `Weak::upgrade` does.
            match counts.compare_exchange_weak(n, n + STRONG, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => n = actual,
            }
        }
    }

    /// The strong count, less the set's reference: a snapshot (Relaxed), for
    /// tests.
    #[cfg(test)]
    pub(crate) fn strong_count(self) -> usize {
        let counts = self.header().counts.load(Ordering::Relaxed);
        ((counts & STRONG_MASK) - u64::from(counts & SET_REF != 0)) as usize
    }

    /// The weak count (for the loom models).
    #[cfg(all(test, ctx_loom))]
    pub(crate) fn weak_count(self) -> usize {
        (self.header().counts.load(Ordering::Relaxed) >> 32) as usize
    }

    /// Whether a walk drained this node's entry and left the slot's weak
    /// reference to a detach that has not run yet (for the loom models).
    #[cfg(all(test, ctx_loom))]
    pub(crate) fn owes_drained_slot(self) -> bool {
        self.kind() != Kind::Merge
            && self.cancel_part().drained.load(Ordering::Relaxed)
            && self.cancel_part().slot.load(Ordering::Relaxed) != UNREGISTERED
    }

    /// The entry pointer that stands for this node in a child set (tag 0).
    pub(crate) fn as_entry(self) -> *mut () {
        self.0.as_ptr().cast::<()>()
    }
}

impl CancelPart {
    pub(crate) fn new(has_deadline: bool) -> CancelPart {
        CancelPart::with_state(has_deadline, state::live())
    }

    /// A cancel part whose state word starts as `word` (live, or a done word
    /// that owns its reason: see `register::born_done_word`).
    pub(crate) fn with_state(has_deadline: bool, word: Word) -> CancelPart {
        CancelPart {
            state: AtomicPtr::new(word),
            children: Children::new(),
            waiters: Waiters::new(),
            has_deadline,
            drained: AtomicBool::new(false),
            parent_shard: AtomicU8::new(IN_HEADER),
            slot: AtomicU32::new(UNREGISTERED),
        }
    }
}

#[cfg(all(test, not(ctx_loom), target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// The allocation behind `with_cancel` (and `with_cancel_cause`): a header,
    /// the state word, the children (an inline slot and the set pointer: 16
    /// bytes; the slot spares a chain of contexts a child set per level) and the
    /// waiters (the slot's word, its inline waker and the event: 32 bytes).
    #[test]
    fn a_cancel_node_is_96_bytes() {
        assert_eq!(std::mem::size_of::<Header>(), 32);
        assert_eq!(std::mem::size_of::<Waiters>(), 32);
        assert_eq!(std::mem::size_of::<CancelPart>(), 64);
        assert_eq!(std::mem::size_of::<Node<CancelPart>>(), 96);
    }
}
