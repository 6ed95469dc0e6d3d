//! The cancellation tree: the one home of every lock-free protocol in the crate.
//!
//! A context is a handle on a [`node`] (or one of the two roots). Cancelable
//! nodes ("carriers") keep their children and `after_func` callbacks in an
//! inline slot and a lock-free [`child_set`]; every other node points at the nearest carrier above
//! it, so checking any context is one load of its carrier's state word. The public
//! files (`context`, `cancel`, `after_func`, `waiter`, `timer`) are facades over
//! the functions here.
//!
//! | file | protocol |
//! |---|---|
//! | [`state`] | the state word: live/done, reason, `WAITERS`/`UNCLAIMED`/`COMPLETE` |
//! | [`child_set`] | the inline slot, then slots, segments, free stack; the insert/drain Dekker pair |
//! | [`register`] | the one registration routine (insert → re-check → take back) for children, callbacks and merge parents; detaching |
//! | [`cancel`](mod@cancel) | closing, the subtree walk, and what a returned cancel guarantees |
//! | [`work`] | the user code a cancel sets free, run after the walk |
//! | [`wake_list`] | the wakers a walk takes, kept in small chunks until it ends |
//! | [`drop`](mod@drop) | iterative drop over every kind of link |
//! | [`callback`] | `after_func`'s stop-versus-fire state machine |
//! | [`deadline`] | arming and disarming timers; the exact-deadline read |
//! | [`merge`] | registering a node with several parents |
//! | [`wait`] | registering a waiter without a lost wake-up |
//! | [`event`] | the list of the waiters beyond the slot (and `adapter::Event`'s): entries under one lock, no waker run under it |
//! | [`value`] | value nodes and the key summary that ends a missing lookup early |
//!
//! # Invariants
//!
//! 1. A node's state word goes from live to done exactly once (a CAS); the reason
//!    stored then never changes ([`state`]). So whatever a read reports, every
//!    later read reports too.
//! 2. A registered child is in at most one slot of each parent carrier's set per
//!    parent link, and that slot owns one weak reference on it.
//! 3. A child holds a strong reference on each parent, so a carrier outlives every
//!    registration in its set, and a set outlives every index handed out from it.
//!    A child in a set slot of its parent counts that reference in the slot's
//!    shard, which the set's own strong reference on the parent stands for
//!    until the parent's last handle is gone and no shard counts a child
//!    ([`child_set`]'s "Parent references").
//! 4. Whoever empties a slot (a walk's drain, a remover's CAS) owns the entry's
//!    reference and releases it exactly once; a walk that drained a (non-merge)
//!    child hands it to the child's detach instead (`register::mark_drained`),
//!    which releases it with the node's own.
//! 5. Exactly one thread walks a done node's subtree: the one whose close won, or
//!    the one that cleared `UNCLAIMED` after a read closed it ([`cancel`](mod@cancel)).
//! 6. `COMPLETE` is set on a node with registrations only after every node below
//!    it is done; a node that never had one (`HAS_SET` unset) is complete at its
//!    close, and one whose registrations are all gone (no entry, no set) right
//!    after it. (A read's close, with `UNCLAIMED`, leaves that to whoever
//!    claims the walk.)
//! 7. When a cancel returns (whoever won), the node is complete: every descendant
//!    is done. A child that registers after the close sees it and is born done
//!    before its creator can hand it out.
//! 8. Reads (`err`, `is_done`, `check`, `cause`, `deadline`, `value`, polling
//!    `Done`) are O(1) on a node without a live deadline (values O(depth))
//!    and never run user code but a timer backend's clock: below a live
//!    deadline they go up to the deadline node and ask its backend's
//!    `Timer::now`, and a read that finds it passed records the expiry by one
//!    CAS per node on the way down ([`deadline`]). A pending `Done`'s poll
//!    also registers its waker (a clone: executor code). The read that records
//!    an expiry takes the wakers of the waiters parked on it and hands them to
//!    the runner: not even executor code runs on a reading thread, which may
//!    hold the very lock a waker takes.
//! 9. User and executor code freed by a cancel (callbacks, `Drop`s,
//!    `Timer::disarm`, the waiters' wakers) runs after the walk, once its
//!    subtree is complete, never inside it: a waker is taken out of its node as
//!    the walk closes it and woken at the end ([`work`]). So none of it runs
//!    while a canceler that lost the race waits for the walk, and none finds a
//!    node this thread still owns incomplete. For a timer's expiry, callbacks
//!    and `Drop`s run on the runner's threads, never on the timer's; the
//!    wakers and the firing backend's own `disarm` run on the timer's thread,
//!    another backend's `disarm` on the runner. One exception to "after the
//!    walk": the firing backend's own `disarm`s run on its thread as soon as
//!    the walk has run, before the subtree is complete when part of it is
//!    another thread's walk to finish (its key is released; no canceler
//!    waits for it). The wakers then go to the runner with the rest of the
//!    walk (`WalkRest`), which wakes them once the subtree is complete. A
//!    panic in any of it never stops the cancel: everything is finished,
//!    then the first panic is resumed.
//! 10. Cancel and drop never recurse on the tree's shape: cancel keeps an explicit
//!     stack, drop a worklist, for parent links and merge links alike.
//! 11. A node's payload outlives every access to it: a walk touches a reached
//!     child's payload under a strong reference, except for a non-merge child
//!     without a timer: its close (before it is pinned, if it is), and, when
//!     that close won, its whole walk until the walk leaves it or pins it
//!     before waiting for another owner. Its detach (before any payload drop)
//!     waits that out through the `drained` flag ([`cancel`](mod@cancel),
//!     [`register`]).
//!
//! # Synchronization
//!
//! | atomic | written by | ordering | pairs with |
//! |---|---|---|---|
//! | `CancelPart::state` | close (CAS), claim (CAS), a registrant's `HAS_SET` (CAS, `register::publish_set`), `COMPLETE` (the owner's store: nobody else writes a done word), waiter (CAS) | `SeqCst`, `Release` for `COMPLETE` | readers' `Acquire` load (the record); the registrant's `SeqCst` load (Dekker); the waiter's `SeqCst` RMW (lost wake-up); `is_complete`'s load |
//! | `ChildSet` slots, the inline slot | insert's store (inline: CAS), remove's CAS, drain's swap | `SeqCst` / `AcqRel` | each other (`child_set`) |
//! | the set pointer in `Children`, shard pointers, segment pointers | the first insert's CAS (`install`, `ensure_segment`) | `SeqCst` | the canceler's `SeqCst` loads |
//! | slot index fields | registrant's store, detacher's take (a swap where another thread may take it too, an `Acquire` load and a `Relaxed` store where only its own node's detach does) | `Release` / `AcqRel` | each other (`register`) |
//! | a shard's free stack (`Shard::free`, slots' `next_free`) and `bump` | a remover's push (CAS), an inserter's pop (CAS) or `bump`'s `fetch_add` | `Release` push, `Acquire` pop; `SeqCst` `fetch_add` | each other; the drain's `SeqCst` load of `bump` (Dekker, `child_set`) |
//! | `CancelPart::parent_shard` | the registration (which shard counts the child) | `Relaxed` (read by the child's own drop, ordered by its reference count) | — |
//! | merge nodes' slot indices | `merge::register_all`'s stores, then a `SeqCst` fence and a `Relaxed` reload of the state | `SeqCst` fences | the fence in `drop::merge_leaves_parents` before its detach (`merge`) |
//! | `CancelPart::drained` | the walk that drained the node's entry, once done with it (it also hands the slot's weak reference over) | `Release` store | a detacher's `Acquire` load (`register::wait_drained`) |
//! | the waker slot's word (`Waiters`) | claim (CAS), owner's register/release, a listener's `EVENT` `fetch_or`, notifier's `fetch_or` | `Acquire` to take the cell, `Release` to give it back, `AcqRel` for the notifier; `Relaxed` where the word only says a notifier passed or `EVENT` (ordered by the state word's `SeqCst` RMW): each justified in `wait` | each other, `AtomicWaker`-style (`wait`) |
//! | `Header::counts` (strong and weak in one word, and `SET_REF`) | clone, drop, upgrade; the set's installer sets `SET_REF`, the release that leaves it alone clears it (CAS, `AcqRel` for the take-over); a sole owner's last release may store instead of an RMW, and the last weak release may skip its decrement after an `Acquire` load (`node`) | as `Arc`; `Acquire`/`AcqRel` CAS | as `Arc` |
//! | `Shard::refs`, `ChildSet::pending` | a counted child's registration (+1, `Relaxed`) and drop (−1, `Release`); the orphaning's `fetch_or` and `fetch_add` | `AcqRel` on the orphaning's side | the last party's `Acquire`, before the parent's drop (`child_set`) |
//! | the event's list pointer (`event`) | the first listener's CAS | `AcqRel` | the notifier's `Acquire` load: for a carrier, after the waiter's `SeqCst` RMW of the state word ordered the listen before the close; for `adapter::Event`, `SeqCst` fences in its `listen` and `notify_all` (a Dekker pair with the caller's condition) |
//! | `Callback::state` | claims | `AcqRel` CAS | each other (`callback`) |
//! | `DeadlinePart::key` | arm's store, the walk's swap | `SeqCst` | each other (`deadline`) |

pub(crate) mod callback;
pub(crate) mod cancel;
pub(crate) mod child_set;
pub(crate) mod deadline;
pub(crate) mod drop;
pub(crate) mod event;
pub(crate) mod merge;
pub(crate) mod node;
pub(crate) mod register;
pub(crate) mod state;
pub(crate) mod value;
pub(crate) mod wait;
pub(crate) mod wake_list;
pub(crate) mod work;

pub(crate) use cancel::cancel;
pub(crate) use work::Origin;
