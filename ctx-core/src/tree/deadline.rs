//! Deadline nodes: arming and disarming their timer, and the exact-deadline read.
//!
//! # Arm versus cancel
//!
//! A fresh deadline node arms its backend, then stores the key (`SeqCst`), then
//! loads its state (`SeqCst`). The canceler's walk swaps the key out (`SeqCst`)
//! after its close. One of the two sees the other, and the swap lets exactly one
//! of them hand the key to [`Timer::disarm`].
//!
//! # The exact-deadline read
//!
//! A read of a context below a deadline whose time has passed reports
//! `DeadlineExceeded` even if the timer has not fired. To keep that answer (and
//! `done()`, `wait()` in agreement), the read closes the deadline node, then
//! every cancelable context on the way down to the context's own carrier, top
//! down, with the `UNCLAIMED` flag: one CAS each, no walk, no callback; only
//! waiters already parked on those nodes are woken. The subtree is walked by
//! the first cancel that claims a node (the late timer's expiry, a cancel
//! function, a parent's cancel).
//!
//! Top down, each with the reason the one above it ended with, as a walk
//! would: a context in between that its own cancel closed first hands its
//! reason on to those below it, and one the read closed first has nothing
//! left to record when its cancel comes. So no context ends with another
//! reason than its parent's unless its own cancel came first, as in Go
//! (closing the carrier alone let a cancel in between record `Canceled` above
//! a child that read `DeadlineExceeded`).
//!
//! A cancel by a user's handle makes this read before its close, and its walk
//! makes it for the children with a deadline of their own (`cancel`'s "What
//! came first"): a cancel that comes after a deadline passed finds the
//! context done by it, whether or not anybody read it in between.

use super::node::{DeadlinePart, Kind, NodeRef};
use super::register::clone_reason;
use super::state::{self, Word};
use super::work::Work;
use crate::sync::{Ordering, StoreRacingRmw};
use crate::timer::{Expiry, Timer, TimerKey};
use smallvec::SmallVec;
use std::num::NonZeroU64;
use std::ptr::NonNull;

/// The timer backend of a deadline node, borrowed, not counted.
///
/// Every deadline node's backend is owned elsewhere for at least as long as
/// the node needs it: by the `with_timer` node above it, which the deadline
/// node keeps alive through its parent link until its payload is gone (a
/// deadline node in between borrows from the same owner), or, for contexts
/// under no `with_timer`, by the process (the default timer is a static).
/// So a deadline costs no read-modify-write on the backend's shared
/// reference count, which every thread creating deadlines on that backend
/// would otherwise write, twice per deadline.
#[derive(Clone, Copy)]
pub(crate) struct TimerRef(NonNull<dyn Timer>);

// SAFETY: a shared reference to a `Timer`, which is `Send + Sync`.
unsafe impl Send for TimerRef {}
// SAFETY: as above.
unsafe impl Sync for TimerRef {}

impl TimerRef {
    /// Borrows `timer`.
    ///
    /// # Safety
    ///
    /// `timer` must outlive every use of the reference: it is owned by a node
    /// that every node storing the reference keeps alive (an ancestor), or
    /// lives for the rest of the process.
    pub(crate) unsafe fn new(timer: &dyn Timer) -> TimerRef {
        TimerRef(NonNull::from(timer))
    }

    /// Whether both refer to the same backend.
    pub(crate) fn same(self, other: TimerRef) -> bool {
        std::ptr::addr_eq(self.0.as_ptr(), other.0.as_ptr())
    }
}

impl std::ops::Deref for TimerRef {
    type Target = dyn Timer;

    fn deref(&self) -> &dyn Timer {
        // SAFETY: the owner outlives the reference (`new`'s contract).
        unsafe { self.0.as_ref() }
    }
}

impl std::fmt::Debug for TimerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// Arms the timer of a fresh deadline node that is live and whose deadline lies
/// ahead. Handles the race with a concurrent cancel (which might run before the
/// key is stored). `arm` is the backend's code: if it panics, the caller's
/// handles on the node release it.
pub(crate) fn arm(node: NodeRef) {
    let part = node.deadline_part();
    let Some(key) = part.timer.arm(part.deadline, Expiry::new(node)) else {
        return;
    };
    // SeqCst: pairs with the canceler's swap in `take_key`: either it sees our
    // key, or we see its done word below.
    part.key.store_racing_rmw(key.get().get(), Ordering::SeqCst);
    crate::sync::dekker_point();
    if state::is_done(part.cancel.state.load(Ordering::SeqCst))
        && let Some(key) = take_key(node)
    {
        part.timer.disarm(key);
    }
}

/// The armed key of a deadline node, at most once.
fn take_key(node: NodeRef) -> Option<TimerKey> {
    let part = node.deadline_part();
    // SeqCst: see `arm`. The swap makes sure only one caller disarms.
    NonZeroU64::new(part.key.swap(0, Ordering::SeqCst)).map(TimerKey::new)
}

/// The deadline node's `on_done` hook: its timer is released (after the walk).
pub(crate) fn on_done(node: NodeRef, work: &mut Work) {
    if let Some(key) = take_key(node) {
        work.disarm(node, key);
    }
}

/// The last handle on a deadline node went before anything ended it: a
/// `Canceler` (which cancels nothing when dropped) or a disarmed `DropGuard`
/// was the last to go, or the cancel function was forgotten. Nothing can
/// observe or cancel the context any more (its descendants and `after_func`
/// handles held it), and its expiry would do nothing (it cannot upgrade), so
/// its key goes back now instead of staying armed, with the node's memory,
/// until the deadline. Only deadline nodes pay for this: it is their
/// payload's drop, which runs where a node's drop runs (never under a lock of
/// ours), while its backend is still kept alive by the parent link.
impl Drop for DeadlinePart {
    fn drop(&mut self) {
        // A plain read: the strong count reached zero with an Acquire, so
        // every swap of the key (by a walk or `arm`, which hold a handle) is
        // visible, and nobody else can reach the key any more.
        if let Some(key) = NonZeroU64::new(crate::sync::u64_get_mut(&mut self.key)) {
            self.timer.disarm(TimerKey::new(key));
        }
    }
}

/// `carrier`'s state word as a reader sees it: loaded, then, if live and a
/// deadline applies, after the exact-deadline [`check`] (a deadline that
/// passed counts as done even while its timer is late).
#[inline]
pub(crate) fn exact_word(carrier: NodeRef) -> Word {
    let word = carrier.state();
    if state::is_done(word) || !carrier.cancel_part().has_deadline {
        return word;
    }
    check(carrier, word)
}

/// The exact-deadline read of a live `carrier` whose `word` was just loaded:
/// if the deadline above it has passed, closes it (and the deadline node) with
/// `UNCLAIMED` and returns its done word; otherwise returns `word`.
#[cold]
pub(crate) fn check(carrier: NodeRef, word: Word) -> Word {
    let Some(src) = carrier.deadline_node() else {
        return word;
    };
    let part = src.deadline_part();
    if part.timer.now() < part.deadline {
        return word;
    }
    close_passed(carrier, src, true)
}

/// [`check`]'s closes for a canceler that claims `carrier`'s walk next
/// (`cancel`'s "What came first") and found the deadline of `src`,
/// `carrier`'s deadline node, passed by its own reading of the clock (read
/// where a backend's code may run: never in the middle of a walk). The
/// waiters parked on `carrier` itself are left to that walk, which wakes
/// them on the canceler's thread, as for any cancel. (Those on the contexts
/// above it are woken as by a read.) Returns `carrier`'s word.
#[cold]
pub(crate) fn settle(carrier: NodeRef, src: NodeRef) -> Word {
    close_passed(carrier, src, false)
}

/// Closes `src`, a deadline node whose deadline passed, and the contexts down
/// to `carrier` (module docs), waking the waiters parked on `carrier` if
/// `wake_carrier` (otherwise they stay for the walk of whoever claims it);
/// returns `carrier`'s word.
fn close_passed(carrier: NodeRef, src: NodeRef, wake_carrier: bool) -> Word {
    debug_assert_eq!(src.kind(), Kind::Deadline);
    let part = src.deadline_part();
    // `carrier` is `src` or registered below it, and the caller keeps both alive.
    let closed = super::cancel::try_close(src, &part.reason, true);
    if carrier == src {
        if wake_carrier {
            wake_parked(src, closed);
        }
    } else {
        wake_parked(src, closed);
        close_down_to(carrier, src, wake_carrier);
    }
    carrier.state()
}

/// Closes the cancelable contexts from below `src` (closed already) down to
/// `carrier`, top down, each with the reason of the one above it (module
/// docs). The way up stops early at a context that is done already: its
/// reason is the one to hand down.
///
/// Every node on the way is an ancestor of `carrier` (or a further parent of
/// a merge node among them, which that node keeps alive), so the caller's
/// reference on `carrier` keeps them all.
#[cold]
fn close_down_to(carrier: NodeRef, src: NodeRef, wake_carrier: bool) {
    let mut between: SmallVec<[NodeRef; 8]> = SmallVec::new();
    let mut top = src;
    let mut node = carrier;
    while let Some(up) = toward(node, src) {
        if up == src || state::is_done(up.state()) {
            top = up;
            break;
        }
        between.push(up);
        node = up;
    }
    let mut above = top;
    for node in between.into_iter().rev() {
        let closed = super::cancel::try_close(node, &clone_reason(above.state()), true);
        wake_parked(node, closed);
        above = node;
    }
    let closed = super::cancel::try_close(carrier, &clone_reason(above.state()), true);
    if wake_carrier {
        wake_parked(carrier, closed);
    }
}

/// The cancelable context just above `node` on its way to the deadline node
/// `src`: its parent's carrier, or for a merge node, the carrier of a parent
/// whose deadline is `src`'s. `None` if there is none (then the caller hands
/// `src`'s reason down directly).
fn toward(node: NodeRef, src: NodeRef) -> Option<NodeRef> {
    if node.kind() == Kind::Merge {
        node.registrations()
            .map(|(carrier, _)| carrier)
            .find(|carrier| carrier.deadline_node() == Some(src))
    } else {
        node.header().parent.real().and_then(NodeRef::carrier)
    }
}

/// After a read closed `node` (`closed` is the live word it replaced), wakes the
/// `Done` futures and blocking waits already parked on it, so that they agree
/// with the read without waiting for the late timer. Their wakers are taken
/// here and woken on the runner: wakers are executor code, and the reading
/// thread may hold a lock one of them takes (reads run no foreign code). Each
/// runs guarded there; a panic is dropped: every other waiter is woken all
/// the same.
fn wake_parked(node: NodeRef, closed: Option<Word>) {
    if closed.is_some_and(|word| state::has(word, state::WAITERS)) {
        let mut work = Work::default();
        node.cancel_part().waiters.take_wakers(&mut work.wakers);
        work.run_on_runner();
    }
}
