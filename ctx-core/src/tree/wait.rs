//! Registering a waiter: the inline waker slot, the event, the `WAITERS` bit, and
//! why no wake-up is lost.
//!
//! # Where a waiter sleeps
//!
//! Most carriers have at most one waiter at a time (a task awaiting its own
//! context), so each carrier's [`Waiters`] keeps one waker inline, in a *slot*,
//! next to an event for any further waiters:
//!
//! * The first waiter *claims* the slot and stores its waker there: two
//!   read-modify-writes of the slot's word and a waker clone, no lock and no
//!   allocation. While it holds the slot it may replace its waker (a `Done`
//!   re-polled by another task); when it completes or is dropped it releases the
//!   slot, and the next waiter can claim it.
//! * A waiter that finds the slot taken listens on the event (a list of our own,
//!   [`event`](super::event), allocated on first use; an entry under its lock),
//!   after setting the sticky `EVENT` bit in the slot's word.
//! * A notifier (the canceler, after the close) wakes the slot's waker and
//!   notifies the event only if `EVENT` was ever set: when only the slot was used,
//!   the event is not touched.
//!
//! # The slot's word
//!
//! | bit | set by | cleared by | meaning |
//! |---|---|---|---|
//! | `CLAIMED` | a claim (CAS from a free word) | the owner's release | a waiter owns the slot |
//! | `REGISTERING` | the owner (claim, update, release) | the owner | the owner has the waker cell |
//! | `WAKING` | a notifier (`fetch_or`) | the owner, if the notifier skipped the cell (below) | a notifier has the cell, or skipped it |
//! | `EVENT` | a waiter that listens on the event | never | the event has (had) listeners |
//!
//! It is `AtomicWaker`'s protocol (futures, tokio, the `atomic-waker` crate), plus
//! ownership. The waker cell is accessed only by whoever holds it: the owner between
//! setting `REGISTERING` on a word without `WAKING` and clearing it, or a notifier
//! whose `fetch_or(WAKING)` read neither `REGISTERING` nor `WAKING`, from then
//! on (it never gives the cell back). Nobody ever waits for the other side:
//!
//! * A notifier that reads `REGISTERING` or `WAKING` leaves the cell alone, and
//!   leaves its `WAKING` bit set. If `REGISTERING` was set, the owner finds the bit
//!   when it clears `REGISTERING` (both bits in one RMW) and knows that a notifier
//!   passed: the node is done, and the owner's own check (below) sees it. If
//!   `WAKING` was set, the notifier holding the cell wakes the waker that is there.
//!   (That holder never clears its own `WAKING`: "The slot after the close".)
//! * An owner that reads `WAKING` when it sets `REGISTERING` leaves the cell to the
//!   notifier (which takes and wakes the waker in it) and clears its bit again; the
//!   node is done. An owner that releases the slot in that case leaves the
//!   cell alone (at most it gives up `CLAIMED`); the notifier empties it.
//! * A claim needs a word without `CLAIMED`, `REGISTERING` and `WAKING`; a
//!   waiter that cannot claim listens on the event instead.
//!
//! # The slot after the close
//!
//! A notifier that gets the cell (its `fetch_or` read neither `REGISTERING`
//! nor `WAKING`) takes the waker out and keeps the cell for good: it never
//! clears its `WAKING`. Notifiers run only once the node is done, and nothing
//! needs the slot after that: every waiter checks the node before it
//! registers, an owner that finds `WAKING` on an update learns that the node
//! is done, and its release leaves the word alone (one load: the slot is
//! dead, and nobody claims it again); a later notifier skips it; the rare waiter that raced the
//! close and cannot claim listens on the event, whose `WAITERS` RMW then
//! reads the done word. A walk that closes many awaited nodes so pays one
//! read-modify-write of each slot's word, not two. The cell's last access,
//! the notifier's `take`, comes before the node's payload is dropped: every
//! notifier holds a reference on the node (or its `drained` flag) and gives
//! it back with a release after the take.
//!
//! Every change of the word is an RMW, so the accesses to the cell are ordered by
//! the word's modification order; the RMW that ends an access releases, and the
//! one that starts the next acquires, so the cell's contents pass from holder to
//! holder (the owner's waker to the notifier, the emptied cell to the next
//! claimant).
//!
//! A hand-written slot rather than the `atomic-waker` crate: the crate's atomics
//! are the standard library's, which the loom models could not see (they would
//! check a stand-in instead of the code that runs), and the slot needs `CLAIMED`
//! and `EVENT` in the same word as the waker's states, so that a notifier learns
//! everything from one RMW.
//!
//! # No lost wake-up: the `WAITERS` bit
//!
//! A waiter first registers (claims the slot and stores its waker, stores a new
//! waker in a slot it holds, or sets `EVENT` and listens on the event), then sets
//! the `WAITERS` bit in the node's state word with a `SeqCst` read-modify-write,
//! and sleeps only if that RMW read a live word. The canceler's CAS to done is an
//! RMW on the same word; it calls [`Waiters::notify_all`] if the word it replaced
//! carries `WAITERS`.
//!
//! RMWs on one atomic are totally ordered. If the waiter's RMW comes after the
//! close, it reads the done word and the waiter does not sleep. If it comes
//! before, the close reads the waiter's `WAITERS` bit (RMWs always read the
//! latest value) and keeps it, and synchronises with the waiter's release, so the
//! registration happens-before the notification: the notifier's `fetch_or` on the
//! slot's word comes after the registration's RMWs, so it finds the waker (or the
//! owner holding the cell for a newer one, which is then told, as above) and
//! `EVENT` with the listener behind it. This is the "flag, then notify" vs
//! "register, then re-check" race of the tokio-util history: both sides do an RMW
//! on one word, so neither can miss the other. When nobody ever waited, a cancel
//! touches neither the slot nor the event.
//!
//! A waiter that learns from the slot that a notifier passed (it found `WAKING`)
//! acquired that notifier's RMW, which came after its close: the waiter's own RMW
//! of the state word then reads the done word. A waiter re-polled with the waker it
//! already registered changes nothing in the cell (it still takes and gives
//! back `REGISTERING`, two RMWs on the slot's word): a notification after its
//! earlier registration wakes that waker.
//!
//! The event is a list of our own ([`event`](super::event)), for the waiters
//! after the first (blocking waits park their thread through a waker of their
//! own): an entry per waiter under one lock, no executor code under it, and
//! the same code under loom.

use super::event::{Event, Key};
use super::node::NodeRef;
use super::state::{self, WAITERS};
use super::wake_list::WakeList;
use super::work::{self, Panic};
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};
use std::fmt;
use std::task::{Poll, Waker};

/// A waiter owns the slot.
const CLAIMED: usize = 1;
/// The owner holds the waker cell.
const REGISTERING: usize = 2;
/// A notifier holds the waker cell, or skipped it (see the module docs).
const WAKING: usize = 4;
/// A waiter listened on the event (sticky).
const EVENT: usize = 8;

/// Where a carrier's waiters sleep: the inline slot for one waker, and the event
/// for the rest.
pub(crate) struct Waiters {
    /// `CLAIMED | REGISTERING | WAKING | EVENT`: see the module docs.
    word: AtomicUsize,
    /// The slot owner's waker; accessed only by the holder of the cell.
    waker: UnsafeCell<Option<Waker>>,
    /// Further waiters; untouched unless `EVENT` is set.
    event: Event,
}

// SAFETY: `waker` is the only field that is not `Sync`. It is read or written only
// by the one thread that holds the cell by the slot's protocol (the module docs),
// whose acquiring and releasing RMWs of `word` order every access after the
// previous holder's; a `Waker` is `Send`, so it may be dropped or woken on the
// holder's thread whichever thread stored it.
unsafe impl Sync for Waiters {}

impl fmt::Debug for Waiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiters")
            .field("word", &self.word)
            .finish_non_exhaustive()
    }
}

/// What an owner learned from an access to its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The slot's waker is the caller's, as it was before: nothing changed.
    Unchanged,
    /// The caller's waker is in the slot now.
    Stored,
    /// A notifier passed (the node is done); the caller's waker may not be there.
    Notified,
}

impl Waiters {
    pub(crate) fn new() -> Waiters {
        Waiters {
            word: AtomicUsize::new(0),
            waker: UnsafeCell::new(None),
            event: Event::new(),
        }
    }

    /// How many waiters are registered on a live node: the slot's, and those
    /// on the event (introspection for tests; a snapshot). A done node's
    /// count is 0 whatever its slot says (`testing::waiters` checks first).
    #[cfg(all(feature = "test-util", not(all(test, ctx_loom))))]
    pub(crate) fn count(&self) -> usize {
        // Relaxed: a snapshot, like `Children::len`.
        let slot = usize::from(self.word.load(Ordering::Relaxed) & CLAIMED != 0);
        slot + self.event.listeners()
    }

    /// Whether a waiter holds the slot (for tests).
    #[cfg(all(test, not(ctx_loom)))]
    pub(crate) fn is_claimed(&self) -> bool {
        // A slot a notifier took for good is dead, not claimed.
        self.word.load(Ordering::SeqCst) & (CLAIMED | WAKING) == CLAIMED
    }

    /// Whether a waiter ever listened on the event (for tests).
    #[cfg(all(test, not(ctx_loom)))]
    pub(crate) fn has_listened(&self) -> bool {
        self.word.load(Ordering::SeqCst) & EVENT != 0
    }

    /// Claims the slot for `waker`; `None` if another waiter holds it (or a
    /// notifier is emptying it).
    fn claim(&self, waker: &Waker) -> Option<Slot> {
        let mut free = 0;
        loop {
            // Acquire: the cell as the previous holder left it (emptied) is ours.
            match self.word.compare_exchange(
                free,
                free | CLAIMED | REGISTERING,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                // Only `EVENT` differs: still free.
                Err(actual) if actual & (CLAIMED | REGISTERING | WAKING) == 0 => free = actual,
                Err(_) => return None,
            }
        }
        // A `clone` that panics (executor code) gives the claim back.
        let guard = HoldingCell {
            waiters: self,
            unclaim: true,
        };
        // SAFETY: the CAS set `REGISTERING` on a word without `WAKING`: we hold the
        // cell until we clear it.
        let old = self
            .waker
            .with_mut(|cell| unsafe { (*cell).replace(waker.clone()) });
        std::mem::forget(guard);
        debug_assert!(
            old.is_none(),
            "the slot's cell is emptied before it is freed"
        );
        Some(self.end_registering())
    }

    /// Stores `waker` in the slot the caller owns (unless it is there already).
    fn update(&self, waker: &Waker) -> Slot {
        // Acquire: if a notifier emptied the cell, its releasing RMW came before
        // this one, and we see the empty cell. Only the owner sets `REGISTERING`,
        // so a `fetch_or` cannot disturb anyone.
        let previous = self.word.fetch_or(REGISTERING, Ordering::Acquire);
        debug_assert!(previous & CLAIMED != 0 && previous & REGISTERING == 0);
        if previous & WAKING != 0 {
            // A notifier holds the cell: it wakes what is there. Relaxed: we did not
            // touch the cell.
            self.word.fetch_and(!REGISTERING, Ordering::Relaxed);
            return Slot::Notified;
        }
        // A `clone` that panics (executor code) leaves the cell as it was and
        // gives it back.
        let guard = HoldingCell {
            waiters: self,
            unclaim: false,
        };
        // SAFETY: we set `REGISTERING` on a word without `WAKING`: we hold the cell.
        let old = self.waker.with_mut(|cell| unsafe {
            match &*cell {
                Some(current) if current.will_wake(waker) => None,
                _ => Some((*cell).replace(waker.clone())),
            }
        });
        std::mem::forget(guard);
        let slot = self.end_registering();
        match old {
            // Dropped after the cell was given back: a waker's drop is executor code.
            Some(old) => {
                drop(old);
                if slot == Slot::Unchanged {
                    Slot::Stored
                } else {
                    slot
                }
            }
            None => slot,
        }
    }

    /// Gives the cell back after the owner wrote it: `Notified` if a notifier
    /// skipped the cell meanwhile (it left `WAKING`, cleared here), else `Unchanged`.
    fn end_registering(&self) -> Slot {
        // Release: publishes the waker to the next notifier's acquiring `fetch_or`.
        // Acquire: a `WAKING` read here comes from a notifier that closed the node
        // before its RMW, so our later read of the state word sees the close.
        let previous = self
            .word
            .fetch_and(!(REGISTERING | WAKING), Ordering::AcqRel);
        if previous & WAKING != 0 {
            Slot::Notified
        } else {
            Slot::Unchanged
        }
    }

    /// Releases the slot the caller owns, dropping its waker.
    fn release(&self) {
        // Relaxed: a `WAKING` read here is that of a notifier that holds the
        // cell for good (module docs, "The slot after the close"): the owner
        // is not registering, and it cleared any skipper's bit when it last
        // gave the cell back. Then the node is done, and the slot is dead:
        // nothing to give back, and nothing of the cell is read.
        if self.word.load(Ordering::Relaxed) & WAKING != 0 {
            return;
        }
        // Acquire: as in `update`.
        let previous = self.word.fetch_or(REGISTERING, Ordering::Acquire);
        debug_assert!(previous & CLAIMED != 0 && previous & REGISTERING == 0);
        if previous & WAKING != 0 {
            // A notifier holds the cell and empties it (and wakes our old waker,
            // harmlessly); the node is done, the slot is not needed again
            // (module docs, "The slot after the close"). Relaxed: we did not
            // touch the cell.
            self.word
                .fetch_and(!(CLAIMED | REGISTERING), Ordering::Relaxed);
            return;
        }
        // SAFETY: we set `REGISTERING` on a word without `WAKING`: we hold the cell.
        let old = self.waker.with_mut(|cell| unsafe { (*cell).take() });
        // Release: the emptied cell to the next claimant's acquiring CAS. Also clears
        // the `WAKING` of notifiers that skipped the cell while we held it.
        self.word
            .fetch_and(!(CLAIMED | REGISTERING | WAKING), Ordering::Release);
        drop(old);
    }

    /// Listens on the event with `waker` (the slot is taken).
    fn listen(&self, waker: &Waker) -> Key {
        // Relaxed: the waiter's `SeqCst` RMW of the state word, after this, is what
        // orders it before the notifier's `fetch_or` (module docs).
        self.word.fetch_or(EVENT, Ordering::Relaxed);
        self.event.listen_key(waker)
    }

    /// Wakes every registered waiter: the slot's waker, and the event's listeners
    /// if the event was ever used. Called only after the node is done; any number
    /// of times, from any number of threads.
    ///
    /// Wakers are executor code: each runs after every other waiter was found,
    /// outside every lock, and a panicking one costs no other waiter its wake-up.
    /// The first panic is kept in `panic`.
    pub(crate) fn notify_all(&self, panic: &mut Panic) {
        let waker = self.notify_event_and_take_slot(|event| event.notify_all(panic));
        if let Some(waker) = waker {
            work::catch(panic, || waker.wake());
        }
    }

    /// [`notify_all`](Self::notify_all), with the wakes put off: the wakers of
    /// every registered waiter go into `wakers`, for the caller to wake once it
    /// may run executor code (a walk, once its subtree is complete; a read, on
    /// the runner). The waiters are notified all the same: a waker taken here
    /// is the one a waiter registered, and its poll after the wake sees the node
    /// done.
    pub(crate) fn take_wakers(&self, wakers: &mut WakeList) {
        let waker = self.notify_event_and_take_slot(|event| event.notify_into(wakers));
        wakers.extend(waker);
    }

    /// The notifier's side of the slot and the event: takes the slot's waker
    /// (returned) and notifies the event with `notify` if it was ever used.
    fn notify_event_and_take_slot(&self, notify: impl FnOnce(&Event)) -> Option<Waker> {
        // AcqRel: acquires the owner's waker (its releasing RMW came before), and
        // releases our close to an owner that finds our `WAKING` bit.
        let previous = self.word.fetch_or(WAKING, Ordering::AcqRel);
        let mut waker = None;
        if previous & (REGISTERING | WAKING) == 0 {
            // SAFETY: our `fetch_or` set `WAKING` on a word without `REGISTERING`
            // or `WAKING`: we hold the cell, for good. The bit stays: the node
            // is done, so no waiter needs the slot again (module docs, "The
            // slot after the close"), and a second read-modify-write of the
            // word per waiter, in every walk, is saved.
            waker = self.waker.with_mut(|cell| unsafe { (*cell).take() });
        }
        if previous & EVENT != 0 {
            notify(&self.event);
        }
        waker
    }
}

/// Loom: the node's payload drop touches the slot's word and cell, so loom
/// relates it to every access of a walk (or a notifier) and reports one that
/// the drop does not happen after (invariant 11).
#[cfg(all(test, ctx_loom))]
impl Drop for Waiters {
    fn drop(&mut self) {
        let _ = self.word.load(Ordering::Relaxed);
        self.word.with_mut(|_| ());
        self.waker.with_mut(|_| ());
    }
}

/// Gives the cell back if the owner unwinds while it holds it (a waker's `clone`
/// panicked): without it, `REGISTERING` would stay set and the slot be lost for
/// good. `unclaim`: the cell is still empty from a claim, so the claim goes
/// too.
struct HoldingCell<'a> {
    waiters: &'a Waiters,
    unclaim: bool,
}

impl Drop for HoldingCell<'_> {
    fn drop(&mut self) {
        let bits = if self.unclaim {
            CLAIMED | REGISTERING | WAKING
        } else {
            REGISTERING | WAKING
        };
        let word = &self.waiters.word;
        // A notifier that came while we held the cell skipped it (`WAKING`),
        // leaving its waker to us: the owner's poll that would have seen that
        // is unwinding, so the waker is woken here, or the task would sleep on.
        // Taken while we still hold the cell, which the CAS then gives back.
        let mut skipped = None;
        // Relaxed: a first guess; the CAS decides.
        let mut current = word.load(Ordering::Relaxed);
        loop {
            if current & WAKING != 0 && skipped.is_none() {
                // SAFETY: we hold the cell (`REGISTERING`) until the CAS below.
                skipped = self
                    .waiters
                    .waker
                    .with_mut(|cell| unsafe { (*cell).take() });
            }
            // AcqRel: Release as in `end_registering` and `release` (the cell, now
            // maybe empty, to the next holder); Acquire to read a notifier's bit.
            match word.compare_exchange_weak(
                current,
                current & !bits,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if let Some(waker) = skipped {
            // Executor code while unwinding: a second panic would abort.
            let mut panic = None;
            work::catch(&mut panic, || waker.wake());
            work::discard(panic);
        }
    }
}

/// Sets `WAITERS` on `carrier`'s state word after a registration: true if the
/// carrier is done (then there is nothing to wait for).
fn mark_waiting(carrier: NodeRef) -> bool {
    let part = carrier.cancel_part();
    // Relaxed: only a first guess for the CAS loop; the RMW below decides. (A
    // done word seen here is final: the word never goes back to live.)
    let mut current = part.state.load(Ordering::Relaxed);
    loop {
        if state::is_done(current) {
            return true;
        }
        let flagged = current.map_addr(|a| a | WAITERS);
        // SeqCst: the waiter's RMW of the lost-wake-up argument (module docs); it
        // is an RMW even when the bit is already set, so it reads the latest word.
        match part.state.compare_exchange_weak(
            current,
            flagged,
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => return false,
            Err(actual) => current = actual,
        }
    }
}

/// One waiter's registration: nothing yet, the slot of a carrier, or an entry
/// in a carrier's event. The registration names its carrier, so that the owner
/// (a `Done`, a blocking wait) gives up exactly what it registered, whatever the
/// context it waits for answers later (a `Done`'s `Borrow` is the caller's
/// code). It calls [`Waiter::release`] before it forgets that carrier.
///
/// Two words: a `Done` lives inside the caller's future, and a future's size
/// is what an executor allocates and moves for every task.
#[derive(Debug, Default)]
pub(crate) enum Waiter {
    #[default]
    Idle,
    /// Holds the carrier's waker slot.
    Slot(NodeRef),
    /// Has this entry in the carrier's event.
    Event(NodeRef, Key),
    /// Its owner is finished with waiting (a `Done` that returned `Ready`); it
    /// holds nothing, like `Idle`.
    Finished,
}

impl Waiter {
    /// Registers `waker` on `carrier` (or refreshes the registration): `Ready` if
    /// the carrier is done, `Pending` if `waker` will be woken when it is.
    ///
    /// A registration with another carrier (see [`Waiter::carrier`]) must have
    /// been released first.
    pub(crate) fn poll(&mut self, carrier: NodeRef, waker: &Waker) -> Poll<()> {
        debug_assert!(self.carrier().is_none_or(|c| c == carrier));
        let waiters = &carrier.cancel_part().waiters;
        loop {
            match *self {
                Waiter::Idle | Waiter::Finished => match waiters.claim(waker) {
                    Some(_) => *self = Waiter::Slot(carrier),
                    None => *self = Waiter::Event(carrier, waiters.listen(waker)),
                },
                Waiter::Slot(_) => {
                    if waiters.update(waker) == Slot::Unchanged {
                        return Poll::Pending;
                    }
                }
                Waiter::Event(_, key) => {
                    // Our entry's waker is `waker` from now on, unless a notify
                    // took it.
                    if waiters.event.poll_key(key, waker).is_pending() {
                        return Poll::Pending;
                    }
                    self.release();
                    // Notified: the carrier is done (a notifier runs only after
                    // the close); the load confirms it, or we register again.
                    if is_done(carrier) {
                        return Poll::Ready(());
                    }
                    continue;
                }
            }
            // A registration changed (first claim or listen, or a new waker in the
            // slot): the waiter's RMW of the module docs.
            if mark_waiting(carrier) {
                self.release();
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
    }

    /// The carrier this waiter is registered with, if any.
    pub(crate) fn carrier(&self) -> Option<NodeRef> {
        match self {
            Waiter::Idle | Waiter::Finished => None,
            Waiter::Slot(carrier) => Some(*carrier),
            Waiter::Event(carrier, _) => Some(*carrier),
        }
    }

    /// Gives up the registration: frees the slot or the event's entry. The
    /// carrier must still be alive (the owner's context keeps it so).
    #[inline]
    pub(crate) fn release(&mut self) {
        // Most waiters that end never registered (the context was done at the
        // first poll): nothing to give up, and nothing to move.
        if matches!(self, Waiter::Slot(_) | Waiter::Event(..)) {
            self.release_registered();
        }
    }

    // Out of line: a `Done`'s drop inlines only `release`'s check.
    #[inline(never)]
    fn release_registered(&mut self) {
        match std::mem::take(self) {
            Waiter::Idle | Waiter::Finished => {}
            Waiter::Slot(carrier) => carrier.cancel_part().waiters.release(),
            Waiter::Event(carrier, key) => carrier.cancel_part().waiters.event.release_key(key),
        }
    }

    /// Whether this waiter holds its carrier's slot (for tests).
    #[cfg(test)]
    pub(crate) fn holds_slot(&self) -> bool {
        matches!(self, Waiter::Slot(_))
    }
}

/// Whether `carrier` is done (one Acquire load).
fn is_done(carrier: NodeRef) -> bool {
    // Acquire: as every reader's load of the state word.
    state::is_done(carrier.cancel_part().state.load(Ordering::Acquire))
}
