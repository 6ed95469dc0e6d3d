//! Cancel: closing a node, walking its subtree, and what a returned cancel
//! guarantees.
//!
//! Go's `cancelCtx.cancel` (src/context/context.go) is the reference for *what*
//! happens: the node gets its error and cause, every descendant gets the same,
//! the node leaves its parent, and when any call to cancel returns, the node and
//! all its descendants are done. *How* it happens here is lock-free on the
//! uncontended path.
//!
//! # Closing and owning
//!
//! A node is *closed* by the CAS of its state word from live to done
//! ([`try_close`]); readers see it done from that instant. The thread whose CAS
//! won *owns* the node's subtree walk. A reader that finds an expired deadline
//! closes the node with the `UNCLAIMED` flag instead and walks nothing; the first
//! canceler that clears the flag ([`claim`]) owns the walk.
//!
//! # The walk
//!
//! The owner drains the node's child set: each child entry it takes out is closed
//! with the node's reason (or claimed, if a reader closed it) and walked in turn,
//! on an explicit stack, so depth costs no native stack. Each callback entry is
//! claimed and set aside. Leaves (nodes closed without `HAS_SET`: nothing was
//! ever registered with them) are complete at their close: the close sets
//! `COMPLETE` in the same CAS. A node with a set becomes *complete* (`COMPLETE` flag) when
//! its owner has drained it and every child it found is complete.
//!
//! The entry the drain takes out carries the slot's weak reference: it keeps the
//! child's memory, not its payload. A child whose last handle goes meanwhile
//! detaches before its payload is dropped, finds its entry gone and waits for
//! the walk's `drained` flag (`register::wait_drained`), which the walk sets
//! once it is done with the child. So a plain child (one parent, no timer)
//! whose close the walk wins needs no reference of the walk's own: a leaf is
//! finished right at its close ([`close_plain_leaf`]; the walk does nothing but
//! a few atomics before the flag), and a node with registrations is walked
//! under the flag, set when the walk leaves it ([`Hold::Drained`]), after its
//! subtree; the walk never waits in between, unless the subtree must wait for
//! another owner (below), and then it pins the node with a strong reference
//! and sets the flag first. Every other child (one with a timer, a merge node,
//! one another thread closed first) is pinned with a strong reference before
//! anything that needs its payload, and its flag set at once. The flag also
//! hands the slot's weak reference to the child's detach, so the walk releases
//! none (merge nodes excepted: they give it back at once).
//!
//! A child that another thread closed first (its own cancel, another parent of a
//! merge node) is that thread's to walk. Its parent cannot become complete before
//! it does, so the owner keeps such a parent *blocked*, finishes everything else it
//! owns, and then polls the children it waits for, completing its blocked nodes
//! bottom-up as they unblock. An owner never waits while it still owns a node it
//! could complete, and every node waits only for nodes below it, so some owner can
//! always make progress: the lowest incomplete node has only complete children,
//! and its owner completes it on its next poll.
//!
//! # What a returned cancel guarantees
//!
//! A cancel that did not own the node (it lost the race) waits until the node is
//! complete. So when any `cancel` returns, the node and all its descendants are
//! done, whoever won — as in Go, where the loser blocks on the winner's lock.
//! The owner takes the node out of its parents only once it is complete (a node
//! reached through its parent is drained from the parent's set instead), and user
//! code runs only after the walk ([`Work`]): callbacks, `Drop`s and the waiters'
//! wakers (executor code, taken out of the nodes as the walk closes them) never
//! run in the middle of a walk. So a waker or a callback that cancels anything
//! finds every node this thread walked in a final state, and never runs while a
//! canceler that lost the race waits for the walk: a losing canceler that holds
//! a lock a waker needs (a task's `Mutex` and `Condvar` pair) waits only for
//! atomics, and the waker runs once it has returned. The uncontended cancel
//! never waits: it owns everything it walks.
//!
//! # What came first
//!
//! A context ends with the reason of whatever ended it first, as in Go with
//! punctual timers and a parent's cancel that holds its lock until every
//! child is closed. Two things can have come first without having closed the
//! node yet, and a cancel by a user's handle (a cancel function, a
//! `Canceler`, a guard) looks for both before its close ([`settle`]):
//!
//! * A deadline at or above the node that has passed by its timer's clock,
//!   its timer late: the cancel reads the context exactly first
//!   (`deadline`'s "exact-deadline read"), which closes it, and then claims
//!   its walk. So the context ends with `DeadlineExceeded` whether or not
//!   anybody read it before the cancel.
//! * A parent that is done, whose walk has not reached the node yet (or that
//!   a read closed): the node takes the parent's reason, as that walk would
//!   give it. So once a thread saw a parent done, a cancel of its child
//!   changes nothing, as in Go.
//!
//! The walk of such a cancel does the first for the children it reaches that
//! have a deadline of their own (a deadline node, or a merge node whose
//! deadline comes from another parent), with one clock read per walk and
//! timer backend. A timer's expiry does not: it reads no clock (a backend may
//! fire while holding the lock its `now` takes), and the deadline it fires
//! for is the one that came first as far as its backend can tell.
//!
//! # Cost
//!
//! A leaf costs its close and nothing else: no step, no flag of its own (the
//! close sets `COMPLETE`); a plain one, two read-modify-writes in all (the
//! slot's swap and the close). A node whose only registrant, in its inline slot,
//! left again before the close (a chain dropped from the inside out), and that
//! so never got a child set, is finished as a leaf too, its flag set by a
//! store right after the close: its canceler finds its children vacant with
//! the drain's own loads. A node with children costs one step on the stack
//! (inline storage for shallow walks) and the `COMPLETE` store after its subtree:
//! a second touch of each level, which is what a deep chain pays for the
//! guarantee above (Go pays a lock per level for the same).

use super::callback::Callback;
use super::child_set::Take;
use super::deadline::{self, TimerRef};
use super::drop::merge_leaves_parents;
use super::node::{Kind, NodeRef};
use super::register::{self, Entry, clone_reason};
use super::state::{self, COMPLETE, HAS_SET, Reason, UNCLAIMED, WAITERS, Word};
use super::wake_list::WakeList;
use super::work::{self, Origin, Panic, Work};
use crate::sync::{Arc, Backoff, Ordering, StoreRacingRmw};
use smallvec::SmallVec;
use std::time::Instant;

/// Moves a live node to done with `reason` (and `UNCLAIMED` if a reader does it).
/// Returns the previous (live) word, whose `WAITERS` bit says whether anyone must
/// be woken, or `None` if the node was done already.
#[inline]
pub(crate) fn try_close(node: NodeRef, reason: &Reason, unclaimed: bool) -> Option<Word> {
    let part = node.cancel_part();
    // Relaxed: only a first guess for the CAS loop.
    let mut current = part.state.load(Ordering::Relaxed);
    loop {
        if state::is_done(current) {
            return None;
        }
        let mut flags = current.addr() & (WAITERS | HAS_SET);
        if unclaimed {
            flags |= UNCLAIMED;
        } else if flags & HAS_SET == 0 {
            // Nothing was ever registered, and nothing can be now (`HAS_SET` is set
            // by a CAS that fails on a done word): the subtree is empty.
            flags |= COMPLETE;
        }
        let new = reason.word().map_addr(|a| a | flags);
        // SeqCst: the store half of the canceler's side of the Dekker pairs with
        // registration (`child_set`) and with waiters (`wait`); its release
        // publishes the record to readers' Acquire loads.
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

/// Takes over the walk of a node that a reader closed: true if this call cleared
/// its `UNCLAIMED` flag.
pub(crate) fn claim(node: NodeRef) -> bool {
    let part = node.cancel_part();
    // Acquire: a guess for the CAS loop that also sees the reader's record.
    let mut current = part.state.load(Ordering::Acquire);
    while state::has(current, UNCLAIMED) {
        let new = current.map_addr(|a| a & !UNCLAIMED);
        // SeqCst on success, as for `try_close`: the claim decides which
        // canceler owns the walk, and the walk's drain must see every
        // registrant that missed the reader's close (the Dekker pair in
        // `child_set`).
        match part
            .state
            .compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::Acquire)
        {
            Ok(_) => {
                crate::sync::dekker_point();
                return true;
            }
            Err(actual) => current = actual,
        }
    }
    false
}

/// Whether a node and its whole subtree are done (`COMPLETE`).
pub(crate) fn is_complete(node: NodeRef) -> bool {
    // Acquire: pairs with the Release that set `COMPLETE` (or the close that set
    // it on a node without registrations), so everything closed below is seen.
    let word = node.cancel_part().state.load(Ordering::Acquire);
    state::has(word, COMPLETE) && !state::has(word, UNCLAIMED)
}

/// Sets `COMPLETE` on a node whose subtree its owner finished. Its waiters were
/// woken when it was visited (or closed as a leaf): a waiter only registers on
/// a live word, so none can have come since, and a canceler that lost the race
/// polls the flag (`wait_complete`).
fn mark_complete(node: NodeRef) {
    let part = node.cancel_part();
    // A store, not a read-modify-write: once a node is done, its owner (the
    // walk that closed or claimed it) is the only thread that writes its word.
    // The close and claim CASes fail on it, and so do `HAS_SET` (registration)
    // and `WAITERS` (a waiter), which only set their bit on a live word, and
    // `UNCLAIMED` was cleared by the claim. Relaxed: the word's last write is
    // the owner's (its close or claim), made on this thread or, for a walk
    // finished on the runner (`WalkRest`), ordered before this by the
    // runner's queue lock; and nobody else writes it.
    let previous = part.state.load(Ordering::Relaxed);
    // Release: everything the walk closed below happens-before a waiter's Acquire
    // load that sees the flag (`is_complete`). Other threads may still try a
    // CAS on the word (and fail): the loom-friendly store.
    part.state
        .store_racing_rmw(previous.map_addr(|a| a | COMPLETE), Ordering::Release);
    debug_assert!(state::is_done(previous) && !state::has(previous, UNCLAIMED));
}

/// Cancels `node` with `reason` and returns whether this call closed it (the first
/// cancel wins; its reason sticks).
///
/// The caller keeps `node` alive for the duration. With [`Origin::Explicit`], when
/// this returns the node and its whole subtree are done, the node has left its
/// parents, the callbacks this cancel claimed were handed to the runner, and
/// the rest of the user code it set free (`Drop`s, disarms, wakers) has run on
/// this thread; then the first panic of that code is resumed (unless the
/// thread is already unwinding). With [`Origin::Timer`], the walk happens here
/// and everything that could block or run user code goes to the runner, but
/// for the firing backend's own disarms and, once the subtree is complete, the
/// wakers (if the walk must wait for another thread's, those go with the
/// rest of it: `WalkRest`).
pub(crate) fn cancel(node: NodeRef, reason: Reason, origin: Origin) -> bool {
    let closed = try_close(node, &reason, false);
    finish_cancel(node, closed, reason, origin, None, None)
}

/// Cancels `node` for a user's handle (a cancel function, a `Canceler`, a
/// guard): [`cancel`] with [`Origin::Explicit`], after [`settle`]. Returns
/// whether this call ended the node: not if it was done, nor if its deadline
/// had passed or its parent was done already.
pub(crate) fn cancel_explicit(node: NodeRef, reason: Reason) -> bool {
    let Settled {
        reason,
        adopted,
        clock,
        panic,
    } = settle(node, reason);
    let closed = try_close(node, &reason, false);
    let ended = finish_cancel(node, closed, reason, Origin::Explicit, clock, panic);
    ended && !adopted
}

/// What [`settle`] found before an explicit cancel's close.
struct Settled {
    /// The reason to close with: the cancel's own, or a done parent's.
    reason: Reason,
    /// Whether a done parent's reason replaced the cancel's own.
    adopted: bool,
    /// The reading of the clock of the node's deadline, if it has one: the
    /// walk's for its children's deadlines on the same backend.
    clock: Option<(TimerRef, Instant)>,
    /// A panic of user code run here (the backend's `now`, the `Drop` of the
    /// cause set aside), to resume once the cancel is done.
    panic: Panic,
}

/// What a cancel of `node` by a user's handle comes after (module docs: "What
/// came first"): if a deadline at or above it has passed, the exact read
/// closes it here (the cancel then finds it done and claims its walk); if a
/// parent of it is done, that parent's reason replaces `reason`. The clock
/// is read here, before the close, where nobody can be waiting for this
/// cancel: a backend's `now` is user code, which may panic (the cancel goes
/// on without the reading, and the panic is resumed after it) or take a lock
/// that a canceler losing a race to this one holds. The caller keeps `node`
/// alive.
#[inline]
fn settle(node: NodeRef, reason: Reason) -> Settled {
    let mut settled = Settled {
        reason,
        adopted: false,
        clock: None,
        panic: None,
    };
    if state::is_done(node.state()) {
        return settled;
    }
    if let Some(src) = node.deadline_node() {
        let part = src.deadline_part();
        let mut now = None;
        work::catch(&mut settled.panic, || now = Some(part.timer.now()));
        if let Some(now) = now {
            settled.clock = Some((part.timer, now));
            if now >= part.deadline && state::is_done(deadline::settle(node, src)) {
                return settled;
            }
        }
    }
    // The parent's carrier, and a merge node's further parents' too. Each is
    // kept alive by `node`'s links, and so is its record while it is done.
    if let Some(word) = node
        .registrations()
        .map(|(carrier, _)| carrier.state())
        .find(|&word| state::is_done(word))
    {
        let own = std::mem::replace(&mut settled.reason, clone_reason(word));
        settled.adopted = true;
        // A user's cause, of which this may be the last reference.
        work::catch(&mut settled.panic, move || drop(own));
    }
    settled
}

/// The rest of [`cancel`] after its close (`closed`: the live word it replaced,
/// or `None` if the node was done already); `clock`: [`Settled::clock`];
/// `panic`: one caught before ([`Settled::panic`]), resumed (or, for an
/// expiry, dropped) once the cancel is done, as any it catches here.
fn finish_cancel(
    node: NodeRef,
    closed: Option<Word>,
    reason: Reason,
    origin: Origin,
    clock: Option<(TimerRef, Instant)>,
    mut panic: Panic,
) -> bool {
    drop_reason(reason, &mut panic);
    let ended = if let Some((previous, flag)) = as_leaf(node, closed) {
        if finish_leaf_owing(node, previous, flag, &mut panic) {
            node.dec_weak();
        }
        true
    } else {
        walk_cancel(node, closed, origin, clock, &mut panic)
    };
    match origin {
        Origin::Explicit => work::resume(panic),
        // A timer backend's thread, which nothing may unwind into: dropped,
        // its payload's `Drop` (user code too) guarded.
        Origin::Timer => work::discard(panic),
    }
    ended
}

/// Drops a cancel's own reason once its close is tried: if the close lost,
/// it may hold the last reference to a user's cause, whose `Drop` may
/// panic. Guarded, so that the cancel still claims or waits for the walk
/// (a loser returns with its subtree done, and a context that a read closed
/// is walked), and the panic is resumed once it is done.
fn drop_reason(reason: Reason, panic: &mut Panic) {
    if reason.is_shared() {
        work::catch(panic, move || drop(reason));
    }
}

/// Whether a cancel that closed `node` (`closed`: the live word it replaced)
/// finishes it as a leaf, with no walk: then the word it replaced, and whether
/// its `COMPLETE` flag is still to be set.
#[inline]
fn as_leaf(node: NodeRef, closed: Option<Word>) -> Option<(Word, bool)> {
    let previous = closed?;
    if !state::has(previous, HAS_SET) {
        // Nothing was ever registered: its close made it complete.
        return Some((previous, false));
    }
    // Its only registration left again and no child set exists (the last
    // child of a chain dropped before its parent): a walk would find nothing,
    // so the node is finished as a leaf, its `COMPLETE` flag set then.
    node.cancel_part()
        .children
        .is_vacant()
        .then_some((previous, true))
}

/// The rest of a cancel of a node that is no leaf ([`as_leaf`]): the walk, if
/// this cancel closed the node or claims a read's close; otherwise another
/// thread owns the walk, and an explicit cancel waits for it (an expiry has
/// nothing to add: the owner finishes and detaches). A panic it catches goes
/// to `panic`, for the caller to resume or drop.
fn walk_cancel(
    node: NodeRef,
    closed: Option<Word>,
    origin: Origin,
    clock: Option<(TimerRef, Instant)>,
    panic: &mut Panic,
) -> bool {
    if closed.is_none() && !claim(node) {
        if origin == Origin::Explicit {
            wait_complete(node);
        }
        return false;
    }
    let mut walk = Walk {
        settle: origin == Origin::Explicit,
        clock,
        ..Walk::default()
    };
    walk.run(node);
    match origin {
        Origin::Explicit => walk.finish(node, panic, false),
        Origin::Timer => {
            let complete = walk.blocked.is_empty() && is_complete(node);
            if complete {
                // The callbacks go to the runner first: nothing this thread
                // still runs (a disarm, a waker) holds them back. A walk
                // blocked on another thread's subtree hands them over once
                // that is done (`WalkRest`), as `after_func` promises.
                walk.work.spawn_callbacks();
            }
            // The firing backend's own `disarm`s may run on its own thread (any
            // other backend's go to the runner with the rest); a panic in one
            // is the backend's, and must not stop the walk's other duties.
            walk.work.run_disarms_of(node.deadline_part().timer, panic);
            if complete {
                register::detach(node);
                // The subtree is complete: the waiters' wakers (executor code,
                // which a backend's thread may run) are woken here, without a
                // hop to the runner.
                walk.work.run_wakes(panic);
                if !walk.work.is_empty() {
                    std::mem::take(&mut walk.work).run_on_runner();
                }
            } else {
                node.inc_strong();
                let job = WalkRest { node, walk };
                crate::runner::spawn(Box::new(move || job.finish()));
            }
        }
    }
    closed.is_some()
}

/// The rest of a cancel that closed a leaf (no registration ever, or none
/// left: `flag` says whether its `COMPLETE` flag is still to be set), so no
/// walk: give the timer back, wake the waiters, leave the parents — the same
/// steps as a walk of one node, without its bookkeeping. A slot reference
/// the leaf's detach takes back from its parent is not released but owed to
/// the caller (true): a caller that releases its own strong reference next
/// gives back both in one RMW.
fn finish_leaf_owing(node: NodeRef, previous: Word, flag: bool, panic: &mut Panic) -> bool {
    if flag {
        // Complete before any backend or executor code runs, as a leaf is
        // complete at its close: a canceler that lost the race waits for the
        // flag, not for a disarm or a waker.
        mark_complete(node);
    }
    if let Some(on_done) = node.header().vtable.on_done {
        // The timer first: a waiter that wakes up finds it released already.
        // The caller holds the node, so the disarm takes no reference and
        // releases none: nothing else is left to run.
        let mut work = Work::holding(node);
        on_done(node, &mut work);
        work.run_disarms(panic);
        debug_assert!(work.is_empty());
    }
    if state::has(previous, WAITERS) {
        node.cancel_part().waiters.notify_all(panic);
    }
    if node.kind() == Kind::Merge {
        merge_leaves_parents(node);
        false
    } else {
        register::detach_owing(node)
    }
}

/// Cancels `node` as [`cancel`] does with [`Origin::Explicit`], then releases
/// the caller's strong reference on it (a cancel function's last act). When the
/// cancel closed a leaf that left its parent's set, the strong reference and the
/// slot's weak one go back in one read-modify-write.
pub(crate) fn cancel_and_release(node: NodeRef, reason: Reason) -> bool {
    if !reason.is_shared() && is_complete(node) {
        // The common end of a cancel function whose context was canceled
        // before, done and walked already: nothing to settle, close or wait
        // for, the same end as the full path's below without its steps. (A
        // shared reason may hold the last reference to a user's cause, whose
        // `Drop` the full path guards.)
        drop(reason);
        node.dec_strong();
        return false;
    }
    let Settled {
        reason,
        clock,
        panic,
        ..
    } = settle(node, reason);
    release_after_close(node, reason, clock, panic)
}

/// [`cancel_and_release`] after [`settle`] (`panic`: [`Settled::panic`]).
fn release_after_close(
    node: NodeRef,
    reason: Reason,
    clock: Option<(TimerRef, Instant)>,
    mut panic: Panic,
) -> bool {
    let closed = try_close(node, &reason, false);
    drop_reason(reason, &mut panic);
    let (ended, owing) = if closed.is_none() && is_complete(node) {
        // Done and walked already (the common end of a cancel function whose
        // context was canceled before): nothing to wait for.
        (false, false)
    } else if let Some((previous, flag)) = as_leaf(node, closed) {
        (true, finish_leaf_owing(node, previous, flag, &mut panic))
    } else {
        let ended = walk_cancel(node, closed, Origin::Explicit, clock, &mut panic);
        (ended, false)
    };
    let last = if owing {
        node.release_strong_and_weak_is_last()
    } else {
        node.release_strong_is_last()
    };
    if last {
        // SAFETY: the strong count just reached zero.
        unsafe { super::drop::drop_node(node, &mut panic) };
    }
    work::resume(panic);
    ended
}

/// Waits until another thread's walk completed `node` (a cancel that lost).
///
/// The walk runs no user or executor code before its subtree is complete, so
/// this waits for atomics only, whatever this thread holds.
fn wait_complete(node: NodeRef) {
    let mut backoff = Backoff::new();
    while !is_complete(node) {
        backoff.snooze();
    }
}

/// What a walk leaves to the runner when it must not wait on its own thread
/// (a timer's expiry): the end of a walk whose nodes wait for other owners,
/// and the user code it set free.
struct WalkRest {
    /// Holds a strong reference.
    node: NodeRef,
    walk: Walk,
}

impl WalkRest {
    fn finish(self) {
        let WalkRest { node, mut walk } = self;
        let mut panic = None;
        walk.finish(node, &mut panic, true);
        let mut work = Work::default();
        work.release(node);
        work.run(&mut panic);
        // Nobody to resume the panic on: the runner's thread survives it, and
        // the panic hook has reported it already.
        work::discard(panic);
    }
}

/// A node whose owner finished draining it while some of its subtree was still
/// another thread's to walk.
struct Blocked {
    node: NodeRef,
    /// [`Hold::Strong`] or [`Hold::Caller`]: a node that blocks is pinned
    /// first ([`Walk::complete`]).
    hold: Hold,
    /// Index of the blocked entry of its parent in this walk, once known.
    parent: Option<usize>,
    /// While the parent has not blocked yet: the stack index of its pending
    /// `Complete` step.
    parent_step: Option<u32>,
    /// Blocked nodes below it in this walk that are not complete yet.
    blocked_children: u32,
    /// Children that other threads own; strong references, checked by polling.
    foreign: Vec<NodeRef>,
    done: bool,
}

/// How the walk keeps a node it owns until it leaves it ([`Walk::leave`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// The caller's reference: the walk's root.
    Caller,
    /// A strong reference of the walk's own, given back when it leaves.
    Strong,
    /// Nothing but the node's `drained` flag, still unset: the node's detach,
    /// which comes before any drop of its payload, waits for it
    /// (`register::wait_drained`), and leaving sets it. Only for a non-merge
    /// node without a timer whose close this walk won, reached through its
    /// parent's set (whose entry's weak reference keeps the memory), and only
    /// while its subtree is this walk's alone: a node that must wait for
    /// another owner is pinned first ([`Walk::complete`]).
    Drained,
}

/// No parent step: the node is the walk's root.
const NO_PARENT: u32 = u32::MAX;

/// One step of the walk's explicit stack.
///
/// A node with children leaves a `Complete` step below the `Visit` steps of its
/// children; as the stack is last in, first out, it is popped once all of them
/// were walked. Its index in the stack is therefore stable while its children
/// run, so they refer to their parent by it.
enum Step {
    /// Drain a node this walk owns.
    Visit {
        node: NodeRef,
        parent: u32,
        hold: Hold,
    },
    /// All children of `node` were walked.
    Complete {
        node: NodeRef,
        parent: u32,
        hold: Hold,
        /// How many entries at the end of `Walk::foreign` are its children that
        /// other threads own (not complete when found).
        foreign: u32,
        /// Children that ended blocked and are not complete yet.
        blocked_children: u32,
    },
}

/// The state of one canceler's walk.
#[derive(Default)]
struct Walk {
    /// Inline for a shallow walk: a cancel allocates nothing unless the subtree
    /// is deep or wide. Leaves never get a step: they are finished in place.
    stack: SmallVec<[Step; 4]>,
    /// Children other threads own, found by pending `Complete` steps (theirs are
    /// at the end: a step's descendants take theirs away before it pops).
    foreign: Vec<NodeRef>,
    /// Blocked nodes, children before parents.
    blocked: Vec<Blocked>,
    work: Work,
    /// The reason of the node visited last, kept for the next one.
    reason: Option<Reason>,
    /// The step above the top of `stack`: the child scheduled last.
    next: Option<(NodeRef, u32, Hold)>,
    /// Whether children with a deadline of their own are read exactly before
    /// their close (a cancel by a user's handle; module docs: "What came
    /// first").
    settle: bool,
    /// The clock of the canceled node's deadline, read before the close
    /// ([`Settled::clock`]).
    clock: Option<(TimerRef, Instant)>,
    /// The system clock, read once for the children with deadlines on a
    /// backend whose clock it is ([`Timer::is_system_clock`]): no backend
    /// code, so a walk may read it.
    ///
    /// [`Timer::is_system_clock`]: crate::Timer::is_system_clock
    system_now: Option<Instant>,
}

/// What a plain child (one parent, no timer) whose entry a walk took needs, if
/// it is a leaf: its close, and its waiters' wakers taken out for after the
/// walk, with the slot's weak reference alone, and nothing else. Such a child
/// is finished here (`None`): marked drained, which hands the slot's weak
/// reference to the child's detach. Any other child is handed back for
/// [`Walk::reach`] (closed here or not, it is the same child).
///
/// The weak reference keeps the memory, not the payload: a node whose last
/// strong reference goes meanwhile would drop its payload under the close. It
/// does not: its drop detaches it first, finds its entry gone, and waits for
/// `drained` (`register::wait_drained`), which comes after the close. So a
/// leaf costs the walk two read-modify-writes (the slot's swap and the close)
/// instead of four (an upgrade, and the release of the strong reference and
/// the weak one); the weak one goes with the child's other weak reference
/// when it is dropped, usually with none.
#[inline]
fn close_plain_leaf(
    child: NodeRef,
    reason: &Reason,
    wakers: &mut WakeList,
) -> Option<(NodeRef, Option<Option<Word>>)> {
    let header = child.header();
    if header.vtable.kind == Kind::Merge || header.vtable.on_done.is_some() {
        return Some((child, None));
    }
    let closed = try_close(child, reason, false);
    if let Some(previous) = closed
        && !state::has(previous, HAS_SET)
    {
        // A leaf, complete at its close. Its waiters' wakers are taken under
        // the same protection as the close (a detach waits for `drained`),
        // and woken after the walk. The slot's weak reference goes to the
        // child's detach.
        if state::has(previous, WAITERS) {
            child.cancel_part().waiters.take_wakers(wakers);
        }
        register::mark_drained(child);
        return None;
    }
    Some((child, Some(closed)))
}

/// The walk's step for each entry that its drain of a node takes out (see
/// [`Walk::visit`]): a child is closed (a plain leaf is finished there), a
/// callback claimed.
struct Drained<'a> {
    walk: &'a mut Walk,
    /// The reason of the node drained, for its children.
    reason: &'a Reason,
    /// The node's `Step::Complete`, which a child walked next reports to.
    step: u32,
    /// How many children another thread owns (counted into the step).
    foreign: u32,
}

impl Take for Drained<'_> {
    /// Always inlined into the drain's loop over the slots: the path of a
    /// plain child is short, the rest goes out of line.
    #[inline(always)]
    fn take(&mut self, raw: *mut ()) {
        let walk = &mut *self.walk;
        // SAFETY: `drain` hands over each entry it swapped out; we own its
        // reference.
        match unsafe { Entry::from_raw(raw) } {
            Entry::Child(child) => {
                match close_plain_leaf(child, self.reason, &mut walk.work.wakers) {
                    None => {}
                    Some((child, Some(Some(previous)))) => {
                        // Closed by `close_plain_leaf`, so a non-merge child
                        // without a timer, and with registrations (a leaf would
                        // be finished there): walked under the `drained` flag
                        // alone, which it leaves unset until the walk leaves it
                        // (`Hold::Drained`).
                        debug_assert!(state::has(previous, HAS_SET));
                        walk.push_visit(child, self.step, Hold::Drained);
                    }
                    Some(reached) => walk.reach(reached, self.reason, self.step, &mut self.foreign),
                }
            }
            Entry::Callback(callback) => walk.drained_callback(callback, self.reason),
        }
    }
}

impl Walk {
    /// Walks the subtree of `root`, which this walk owns. Never waits for another
    /// thread.
    fn run(&mut self, root: NodeRef) {
        // The caller's reference keeps the root alive: the walk takes none on it
        // (`Hold::Caller`).
        self.work.hold(root);
        self.visit(root, NO_PARENT, Hold::Caller);
        loop {
            let step = match self.next.take() {
                Some((node, parent, hold)) => Step::Visit { node, parent, hold },
                None => match self.stack.pop() {
                    Some(step) => step,
                    None => break,
                },
            };
            match step {
                Step::Visit { node, parent, hold } => self.visit(node, parent, hold),
                Step::Complete {
                    node,
                    parent,
                    hold,
                    foreign,
                    blocked_children,
                } => self.complete(node, parent, hold, foreign, blocked_children),
            }
        }
        // The nodes it came from may go before the walk does (a release by
        // another thread): then this is the last reference to a user's cause.
        if let Some(reason) = self.reason.take() {
            self.work.keep(reason);
        }
    }

    /// Schedules the walk of a child: it becomes the next step, and the one
    /// scheduled before it (if any) goes on the stack. The next step is the top
    /// of the stack kept out of it, so a chain, whose every node schedules one
    /// child, never stores its `Visit` steps.
    fn push_visit(&mut self, node: NodeRef, parent: u32, hold: Hold) {
        if let Some((node, parent, hold)) = self.next.replace((node, parent, hold)) {
            self.stack.push(Step::Visit { node, parent, hold });
        }
    }

    /// The first part of a node's walk, right after it became done (and this walk
    /// owns it): take its waiters' wakers, release its timer, close its children.
    fn visit(&mut self, node: NodeRef, parent: u32, hold: Hold) {
        let part = node.cancel_part();
        let word = node.state();
        debug_assert!(state::is_done(word) && !state::has(word, UNCLAIMED));
        self.take_wakers_and_release_timer(node, word);
        if !state::has(word, HAS_SET) {
            // A leaf: its close made it complete, unless a reader closed it (then
            // the claim left the flag to us).
            self.leave(node, !state::has(word, COMPLETE), hold);
            return;
        }
        let step = u32::try_from(self.stack.len()).expect("a walk deeper than 4 billion");
        self.stack.push(Step::Complete {
            node,
            parent,
            hold,
            foreign: 0,
            blocked_children: 0,
        });
        // The children get this node's reason: its error and cause, whoever
        // ended it (Go: a child canceled through its parent has the parent's).
        // Usually the reason the walk holds already (the nodes it closed share
        // their record): no reference to take per level. Another one (a child
        // that a read closed first, with its deadline's) is kept for after the
        // walk, not dropped here: the nodes it was read from may have gone
        // meanwhile (a release by another thread), and then it is the last
        // reference to a user's cause, whose `Drop` must not run (and maybe
        // panic) in the middle of the walk.
        let reason = match self.reason.take() {
            Some(held) if held.word() == state::reason_of(word) => held,
            held => {
                if let Some(held) = held {
                    self.work.keep(held);
                }
                clone_reason(word)
            }
        };
        let mut drained = Drained {
            walk: self,
            reason: &reason,
            step,
            foreign: 0,
        };
        part.children.drain(&mut drained);
        let foreign = drained.foreign;
        self.reason = Some(reason);
        if foreign > 0
            && let Step::Complete { foreign: count, .. } = &mut self.stack[step as usize]
        {
            *count = foreign;
        }
    }

    /// A callback whose entry the drain took: it runs after the walk, unless
    /// its `stop` claimed it first. Out of line, so that the drain's loop
    /// keeps the path of a plain child short.
    #[inline(never)]
    fn drained_callback(&mut self, callback: Arc<Callback>, reason: &Reason) {
        if callback.claim_fire() {
            self.work.callback(callback, reason.clone());
        }
    }

    /// A child whose entry the drain took (with the slot's weak reference),
    /// and the outcome of [`close_plain_leaf`]'s close if it tried one, but
    /// not one that won on a child with registrations (the drain walks that
    /// one under its `drained` flag, [`Hold::Drained`]): it is pinned with a
    /// strong reference of the walk's, then closed, claimed, found complete,
    /// or left to the thread that walks it. The walk gives the strong
    /// reference back (`Work::release_reached`), and a merge node's slot
    /// reference with it. Out of line: the drain's loop keeps the common
    /// paths short.
    #[inline(never)]
    fn reach(
        &mut self,
        (child, closed): (NodeRef, Option<Option<Word>>),
        reason: &Reason,
        step: u32,
        foreign: &mut u32,
    ) {
        debug_assert!(!matches!(closed, Some(Some(_))), "the drain walks those");
        let pinned = child.upgrade();
        let merge = child.kind() == Kind::Merge;
        if !merge {
            // Pinned, or being dropped: either way done with it unpinned. The
            // slot's weak reference goes to the child's detach.
            register::mark_drained(child);
        }
        if !pinned {
            // Being dropped: no user code, the payload goes with the last strong
            // reference, never with a weak one. (If closed above, nobody can
            // see it: every handle and child is gone.)
            if merge {
                child.dec_weak();
            }
            return;
        }
        let closed = closed.unwrap_or_else(|| {
            // A deadline node or a merge node (the others were tried by
            // `close_plain_leaf`).
            if self.settle {
                self.settle_child(child);
            }
            try_close(child, reason, false)
        });
        match closed {
            Some(previous) if !state::has(previous, HAS_SET) => {
                // A leaf, complete at its close: finished here, without a step
                // of its own.
                self.take_wakers_and_release_timer(child, previous);
                self.leave(child, false, Hold::Strong);
            }
            Some(_) => self.push_visit(child, step, Hold::Strong),
            None if claim(child) => self.push_visit(child, step, Hold::Strong),
            None if is_complete(child) => self.work.release_reached(child),
            None => {
                self.foreign.push(child);
                *foreign += 1;
            }
        }
    }

    /// Before the close of `child`, a deadline node or a merge node that this
    /// walk pinned: if the deadline that applies to it (its own, or a merge
    /// node's earliest) has passed, the exact read closes it first, with that
    /// deadline's reason (module docs: "What came first"). With a clock read
    /// before the walk (a deadline that passes later came after this
    /// cancel), or the system clock for a backend whose clock it is; never a
    /// backend's `now` in the middle of the walk (user code, while cancelers
    /// that lost may wait for the walk): a deadline on another backend gets
    /// the walk's reason, as before exact reads.
    fn settle_child(&mut self, child: NodeRef) {
        let Some(src) = child.deadline_node() else {
            return;
        };
        let part = src.deadline_part();
        let now = match self.clock {
            Some((timer, now)) if timer.same(part.timer) => now,
            // Asked of the backend when the node was made.
            _ if part.system_clock => *self.system_now.get_or_insert_with(Instant::now),
            _ => return,
        };
        if now >= part.deadline && !state::is_done(child.state()) {
            deadline::settle(child, src);
        }
    }

    /// Sets a done node's timer aside for release and takes its waiters'
    /// wakers, to be woken once the subtree is complete ([`Work`]; the timer
    /// is released first there: a waiter that wakes up finds it released).
    fn take_wakers_and_release_timer(&mut self, node: NodeRef, word: Word) {
        if let Some(on_done) = node.header().vtable.on_done {
            on_done(node, &mut self.work);
        }
        if state::has(word, WAITERS) {
            node.cancel_part()
                .waiters
                .take_wakers(&mut self.work.wakers);
        }
    }

    /// All children of `node` were walked: complete it, or block it on the
    /// children other threads still walk.
    fn complete(
        &mut self,
        node: NodeRef,
        parent: u32,
        mut hold: Hold,
        foreign: u32,
        blocked_children: u32,
    ) {
        if foreign == 0 && blocked_children == 0 {
            // The common case: every child was this walk's, and is complete.
            self.leave(node, true, hold);
            return;
        }
        let mine = self.foreign.len() - foreign as usize;
        if blocked_children == 0 && self.foreign[mine..].iter().all(|&c| is_complete(c)) {
            for child in self.foreign.drain(mine..) {
                self.work.release_reached(child);
            }
            self.leave(node, true, hold);
            return;
        }
        if hold == Hold::Drained {
            // It waits for another owner from here on: a detach of it must
            // not wait that long (it might be that owner's, on a runner
            // thread), so it is pinned now and its `drained` flag set. The
            // upgrade succeeds: a child not complete yet, foreign or blocked,
            // is pinned by this walk, so its payload, which holds a strong
            // reference on this node, is still there. (Were it to fail, the
            // node would stay under its flag: still sound, only its detach
            // would wait longer.)
            let pinned = node.upgrade();
            debug_assert!(pinned, "a blocked node with no strong reference");
            if pinned {
                register::mark_drained(node);
                hold = Hold::Strong;
            }
        }
        if parent != NO_PARENT
            && let Step::Complete {
                blocked_children, ..
            } = &mut self.stack[parent as usize]
        {
            *blocked_children += 1;
        }
        // Its blocked children (pushed before it) learn where it is.
        let index = self.blocked.len();
        let step = u32::try_from(self.stack.len()).expect("checked at push");
        for child in self.blocked.iter_mut().rev() {
            if child.parent.is_none() && child.parent_step == Some(step) {
                child.parent = Some(index);
                child.parent_step = None;
            }
        }
        self.blocked.push(Blocked {
            node,
            hold,
            parent: None,
            parent_step: (parent != NO_PARENT).then_some(parent),
            blocked_children,
            foreign: self.foreign.drain(mine..).collect(),
            done: false,
        });
    }

    /// A node this walk owned is complete: flag it (unless its close did), let a
    /// merge node leave its other parents, and give back what held it: the
    /// walk's strong reference (and a merge node's slot reference), or the
    /// `drained` flag, after which the walk must not touch it again.
    fn leave(&mut self, node: NodeRef, flag: bool, hold: Hold) {
        if flag {
            mark_complete(node);
        }
        if node.kind() == Kind::Merge {
            merge_leaves_parents(node);
        }
        match hold {
            Hold::Caller => {}
            Hold::Strong => self.work.release_reached(node),
            Hold::Drained => register::mark_drained(node),
        }
    }

    /// The end of the cancel that owned `node`'s walk: waits for its blocked
    /// nodes, takes the node out of its parents, then runs the user code (each
    /// callback on a job of its own if this is a runner thread).
    fn finish(&mut self, node: NodeRef, panic: &mut Panic, on_runner: bool) {
        self.unblock();
        debug_assert!(is_complete(node));
        register::detach(node);
        if on_runner {
            self.work.run_on_this_runner(panic);
        } else {
            self.work.run(panic);
        }
    }

    /// Polls the children other owners walk until every blocked node of this walk
    /// is complete, completing them bottom-up (module docs).
    fn unblock(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        // A parent always blocks after its children, so every link is known.
        debug_assert!(self.blocked.iter().all(|b| b.parent_step.is_none()));
        let mut backoff = Backoff::new();
        let mut left = self.blocked.len();
        while left > 0 {
            let mut progress = false;
            for i in 0..self.blocked.len() {
                let b = &self.blocked[i];
                if b.done || b.blocked_children > 0 || !b.foreign.iter().all(|&c| is_complete(c)) {
                    continue;
                }
                let b = &mut self.blocked[i];
                b.done = true;
                let (node, parent, hold) = (b.node, b.parent, b.hold);
                for child in std::mem::take(&mut b.foreign) {
                    self.work.release_reached(child);
                }
                if let Some(p) = parent {
                    self.blocked[p].blocked_children -= 1;
                }
                self.leave(node, true, hold);
                left -= 1;
                progress = true;
            }
            if !progress {
                backoff.snooze();
            }
        }
        self.blocked.clear();
    }
}
