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
//! * A waiter that finds the slot taken listens on the event (`event-listener`'s,
//!   which allocates its list on first use and registers under its lock), after
//!   setting the sticky `EVENT` bit in the slot's word.
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
//! The event is `event-listener`'s, for the waiters after the first (blocking
//! waits park their thread through a waker of their own). Its listeners register
//! a relay waker of ours, so that the tasks' wakers run after the event's lock is
//! released, each guarded against a panic (see `imp`).
//! Under `--cfg ctx_loom` a small loom-checked stand-in with the same contract
//! (register under a lock; notify wakes all registered) replaces it; the slot is
//! the same code in both builds.

use super::node::NodeRef;
use super::state::{self, WAITERS};
use super::wake_list::WakeList;
use super::work::{self, Panic};
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};

/// The waiter list, for adapters' own waits (`adapter::Event`).
pub(crate) use imp::{Event as ListEvent, Listener as ListListener};

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
    event: imp::Event,
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
            event: imp::Event::new(),
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

    /// Listens on the event (the slot is taken).
    fn listen(&self) -> imp::Listener {
        // Relaxed: the waiter's `SeqCst` RMW of the state word, after this, is what
        // orders it before the notifier's `fetch_or` (module docs).
        self.word.fetch_or(EVENT, Ordering::Relaxed);
        self.event.listen()
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
    fn notify_event_and_take_slot(&self, notify: impl FnOnce(&imp::Event)) -> Option<Waker> {
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

/// One waiter's registration: nothing yet, the slot of a carrier, or a listener
/// on a carrier's event. The registration names its carrier, so that the owner
/// (a `Done`, a blocking wait) gives up exactly what it registered, whatever the
/// context it waits for answers later (a `Done`'s `Borrow` is the caller's
/// code). It calls [`Waiter::release`] before it forgets that carrier.
///
/// Two words: the event's listener, the rare case (a second waiter on one
/// context), is boxed, so that the common one-waiter `Done` stays small. A
/// `Done` lives inside the caller's future, and a future's size is what an
/// executor allocates and moves for every task.
#[derive(Debug, Default)]
pub(crate) enum Waiter {
    #[default]
    Idle,
    /// Holds the carrier's waker slot.
    Slot(NodeRef),
    /// Listens on the carrier's event.
    Event(Box<EventWaiter>),
    /// Its owner is finished with waiting (a `Done` that returned `Ready`); it
    /// holds nothing, like `Idle`.
    Finished,
}

/// A listener on a carrier's event, and that carrier.
#[derive(Debug)]
pub(crate) struct EventWaiter {
    carrier: NodeRef,
    listener: imp::Listener,
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
            match self {
                Waiter::Idle | Waiter::Finished => match waiters.claim(waker) {
                    Some(_) => *self = Waiter::Slot(carrier),
                    None => {
                        *self = Waiter::Event(Box::new(EventWaiter {
                            carrier,
                            listener: waiters.listen(),
                        }));
                    }
                },
                Waiter::Slot(_) => {
                    if waiters.update(waker) == Slot::Unchanged {
                        return Poll::Pending;
                    }
                }
                Waiter::Event(event) => {
                    match Pin::new(&mut event.listener).poll(&mut TaskContext::from_waker(waker)) {
                        Poll::Pending => return Poll::Pending,
                        // Notified: the carrier is done (a notifier runs only after
                        // the close); the RMW below confirms it.
                        Poll::Ready(()) => {
                            *self = Waiter::Idle;
                            if is_done(carrier) {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                    }
                }
            }
            // A registration changed (first claim or listen, or a new waker in the
            // slot): the waiter's RMW of the module docs.
            if mark_waiting(carrier) {
                self.release();
                return Poll::Ready(());
            }
            match self {
                // A fresh listener has no waker yet: the next turn gives it ours.
                Waiter::Event(_) => continue,
                _ => return Poll::Pending,
            }
        }
    }

    /// The carrier this waiter is registered with, if any.
    pub(crate) fn carrier(&self) -> Option<NodeRef> {
        match self {
            Waiter::Idle | Waiter::Finished => None,
            Waiter::Slot(carrier) => Some(*carrier),
            Waiter::Event(event) => Some(event.carrier),
        }
    }

    /// Gives up the registration: frees the slot or drops the listener. The
    /// carrier must still be alive (the owner's context keeps it so).
    #[inline]
    pub(crate) fn release(&mut self) {
        // Most waiters that end never registered (the context was done at the
        // first poll): nothing to give up, and nothing to move.
        if matches!(self, Waiter::Slot(_) | Waiter::Event(_)) {
            self.release_registered();
        }
    }

    fn release_registered(&mut self) {
        match std::mem::take(self) {
            Waiter::Idle | Waiter::Finished => {}
            Waiter::Slot(carrier) => carrier.cancel_part().waiters.release(),
            Waiter::Event(event) => drop(event),
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

#[cfg(not(all(test, ctx_loom)))]
mod imp {
    //! `event-listener`'s event, with wakers of our own.
    //!
    //! `event-listener` wakes its listeners' wakers while it holds its list's
    //! lock. A task's waker that panicked there would leave the list's count of
    //! notified listeners behind (a later listener's drop then underflows it) and
    //! stop the notification before the listeners after it; one that re-entered
    //! the list (a task polled inline that drops its listener) would deadlock.
    //! So each listener gives the event a [`Relay`] waker instead, which keeps the
    //! task's waker and never runs it under the event's lock:
    //!
    //! * During a notify of ours, the relays put their tasks' wakers into the
    //!   event's [`Collecting`], and the notifier wakes them once the event's
    //!   lock is released, each one guarded. The collection belongs to the
    //!   event, not to the notifying thread: a notify from a thread-local's
    //!   destructor, when that thread's other locals may be gone, collects the
    //!   same way.
    //! * Nothing else wakes a relay: a listener that goes leaves the list with
    //!   `discard`, so `event-listener` never passes the notification of one
    //!   dropped before it saw it on to a listener that came after the notify
    //!   (every notify here is a notify-all: nobody needs it passed on, and a
    //!   listener must complete only for a notify after its `listen`). Should
    //!   a relay be woken outside a notify all the same, the runner
    //!   (`crate::runner`), whose jobs never run on the caller's thread, wakes
    //!   its task.

    use super::super::wake_list::WakeList;
    use super::super::work::{self, Panic};
    use crate::sync::{AtomicPtr, Ordering};
    use std::future::Future;
    use std::pin::Pin;
    use std::ptr;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::task::{Context, Poll, Wake, Waker};

    /// The event further waiters sleep on: one pointer, to what the first
    /// listener allocates (a node whose waiters never outnumber its slot
    /// allocates nothing).
    #[derive(Debug)]
    pub(crate) struct Event(AtomicPtr<Shared>);

    /// An event's list and its collection, shared with its listeners' relays.
    #[derive(Debug, Default)]
    struct Shared {
        event: event_listener::Event,
        collecting: Mutex<Collecting>,
    }

    /// The task wakers that relays handed over during notifies of the event.
    #[derive(Debug, Default)]
    struct Collecting {
        /// Notifies of the event under way (one, but nothing relies on it).
        notifies: usize,
        wakers: Vec<Waker>,
    }

    /// A listener on the event, registered with a [`Relay`] waker.
    #[derive(Debug)]
    pub(crate) struct Listener {
        /// `None` only once dropped (`discard` takes it by value).
        listener: Option<event_listener::EventListener>,
        relay: Arc<Relay>,
        /// `relay` as a waker, made once so that every poll hands the event the
        /// same waker (`will_wake` holds, nothing is cloned).
        waker: Waker,
    }

    /// The task's waker of one listener.
    #[derive(Debug)]
    struct Relay {
        task: Mutex<Option<Waker>>,
        shared: Arc<Shared>,
    }

    /// A lock whose poisoning only says that an earlier holder unwound: none
    /// of these locks is held across user code, and the values stay whole.
    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    impl Event {
        pub(crate) fn new() -> Event {
            Event(AtomicPtr::new(ptr::null_mut()))
        }

        /// The shared part, if a listener ever allocated it.
        fn shared(&self) -> Option<&Shared> {
            // Acquire: pairs with the installing CAS, so the contents are seen.
            let shared = self.0.load(Ordering::Acquire);
            // SAFETY: a non-null pointer came from `Arc::into_raw` and the event
            // owns that reference until it is dropped, which needs `&mut self`.
            unsafe { shared.as_ref() }
        }

        /// The shared part, allocated by the first listener; a new reference.
        fn shared_for_listener(&self) -> Arc<Shared> {
            let mut current = self.0.load(Ordering::Acquire);
            if current.is_null() {
                let fresh = Arc::into_raw(Arc::new(Shared::default())).cast_mut();
                // AcqRel: releases the fresh contents to other listeners and the
                // notifier; acquires the winner's if another listener came first.
                match self.0.compare_exchange(
                    ptr::null_mut(),
                    fresh,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => current = fresh,
                    Err(winner) => {
                        // SAFETY: ours from `into_raw` above, never published.
                        drop(unsafe { Arc::from_raw(fresh) });
                        current = winner;
                    }
                }
            }
            // SAFETY: `current` is the event's own reference (see `shared`),
            // alive while `self` is; this adds one for the listener.
            unsafe {
                Arc::increment_strong_count(current);
                Arc::from_raw(current)
            }
        }

        pub(crate) fn listen(&self) -> Listener {
            let shared = self.shared_for_listener();
            let listener = shared.event.listen();
            let relay = Arc::new(Relay {
                task: Mutex::new(None),
                shared,
            });
            Listener {
                listener: Some(listener),
                waker: Waker::from(relay.clone()),
                relay,
            }
        }

        /// How many listeners are on the list (introspection for tests).
        #[cfg(feature = "test-util")]
        pub(crate) fn listeners(&self) -> usize {
            self.shared()
                .map_or(0, |shared| shared.event.total_listeners())
        }

        /// Notifies every listener, then wakes their tasks' wakers (the first
        /// panic is kept in `panic`).
        pub(crate) fn notify_all(&self, panic: &mut Panic) {
            for waker in self.notify_collecting() {
                work::catch(panic, || waker.wake());
            }
        }

        /// Notifies every listener, and puts their tasks' wakers into `wakers`
        /// unwoken.
        pub(crate) fn notify_into(&self, wakers: &mut WakeList) {
            wakers.extend(self.notify_collecting());
        }

        /// Notifies every listener; returns their tasks' wakers, unwoken.
        fn notify_collecting(&self) -> Vec<Waker> {
            let Some(shared) = self.shared() else {
                // Nobody ever listened.
                return Vec::new();
            };
            lock(&shared.collecting).notifies += 1;
            // Ends the collection even if `notify` unwinds (it runs none of our
            // wakers, but is not ours).
            let mut collection = Collection(Some(shared));
            shared.event.notify(usize::MAX);
            collection.end()
        }
    }

    impl Drop for Event {
        fn drop(&mut self) {
            let shared = *self.0.get_mut();
            if !shared.is_null() {
                // SAFETY: the event's own reference (see `shared`), given back once.
                drop(unsafe { Arc::from_raw(shared) });
            }
        }
    }

    /// A notify's open collection (see `notify_collecting`).
    struct Collection<'a>(Option<&'a Shared>);

    impl Collection<'_> {
        /// Closes this notify's collection and returns the wakers collected.
        fn end(&mut self) -> Vec<Waker> {
            let Some(shared) = self.0.take() else {
                return Vec::new();
            };
            let mut collecting = lock(&shared.collecting);
            collecting.notifies -= 1;
            std::mem::take(&mut collecting.wakers)
        }
    }

    impl Drop for Collection<'_> {
        /// `notify` unwound: the wakers collected so far are woken all the
        /// same, each guarded (nobody is left to take a panic).
        fn drop(&mut self) {
            for waker in self.end() {
                let mut panic = None;
                work::catch(&mut panic, || waker.wake());
                work::discard(panic);
            }
        }
    }

    impl Relay {
        /// Keeps `waker` (a clone, unless it wakes the same task already). The
        /// clone and the old waker's drop (executor code) run outside the
        /// lock, which a notifier takes under event-listener's own.
        fn set(&self, waker: &Waker) {
            if lock(&self.task)
                .as_ref()
                .is_some_and(|k| k.will_wake(waker))
            {
                return;
            }
            let fresh = waker.clone();
            let old = lock(&self.task).replace(fresh);
            drop(old);
        }
    }

    impl Wake for Relay {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            // Runs under event-listener's lock: no executor code here, not even
            // a waker's drop.
            let Some(waker) = lock(&self.task).take() else {
                return;
            };
            let mut collecting = lock(&self.shared.collecting);
            if collecting.notifies > 0 {
                // A notify of ours: the notifier wakes it, after the lock.
                collecting.wakers.push(waker);
                return;
            }
            drop(collecting);
            // Outside a notify (module docs: not expected, as listeners leave
            // with `discard`). The runner wakes it, a panic there has nobody to
            // go to.
            crate::runner::spawn(Box::new(move || waker.wake()));
        }
    }

    impl Future for Listener {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = &mut *self;
            // The task's waker first: a notify that finds the listener after this
            // wakes it; one before leaves the listener notified, seen below.
            this.relay.set(cx.waker());
            let listener = this
                .listener
                .as_mut()
                .expect("a listener is only taken by its drop");
            Pin::new(listener).poll(&mut Context::from_waker(&this.waker))
        }
    }

    impl Drop for Listener {
        /// Leaves the list without passing a notification this listener did
        /// not see on to another listener (module docs).
        fn drop(&mut self) {
            if let Some(listener) = self.listener.take() {
                event_listener::Listener::discard(listener);
            }
        }
    }
}

#[cfg(all(test, ctx_loom))]
mod imp {
    use super::super::wake_list::WakeList;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::{Arc, Mutex};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    #[derive(Debug, Default)]
    struct Entry {
        notified: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    /// A loom model of `event_listener::Event`'s contract.
    #[derive(Debug, Default)]
    pub(crate) struct Event(Mutex<Vec<Arc<Entry>>>);

    /// A registered listener.
    #[derive(Debug)]
    pub(crate) struct Listener(Arc<Entry>);

    impl Event {
        pub(crate) fn new() -> Event {
            Event::default()
        }

        pub(crate) fn listen(&self) -> Listener {
            let entry = Arc::new(Entry::default());
            self.0.lock().unwrap().push(entry.clone());
            Listener(entry)
        }

        pub(crate) fn notify_all(&self, _panic: &mut super::Panic) {
            let mut wakers = WakeList::default();
            self.notify_into(&mut wakers);
            wakers.take_each(Waker::wake);
        }

        pub(crate) fn notify_into(&self, wakers: &mut WakeList) {
            for entry in self.0.lock().unwrap().drain(..) {
                entry.notified.store(true, Ordering::SeqCst);
                wakers.extend(entry.waker.lock().unwrap().take());
            }
        }
    }

    impl Future for Listener {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0.notified.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.0.notified.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }
}
