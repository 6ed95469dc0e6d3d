//! The state word of a cancelable node: live or done, why, and whether anyone waits.
//!
//! One `AtomicPtr<Record>` holds everything a reader needs, so `err()` is one load
//! and one read of an immutable record:
//!
//! | word                    | meaning                                               |
//! |-------------------------|-------------------------------------------------------|
//! | null (maybe `WAITERS`)  | live                                                  |
//! | `&CANCELED_RECORD`      | done, `Error::Canceled`, no explicit cause            |
//! | `&DEADLINE_RECORD`      | done, `Error::DeadlineExceeded`, no explicit cause    |
//! | other pointer           | done, with an explicit cause: an owned `Arc<Record>`  |
//! | `WAITERS` bit (4)       | a waiter registered (in the waker slot or the event)  |
//! | `UNCLAIMED` bit (1)     | done by a read (an expired deadline), and nobody has taken on the subtree yet |
//! | `COMPLETE` bit (2)      | done, and so is every node below it                   |
//! | `HAS_SET` bit (8)       | a registrant came: children or callbacks may be registered |
//!
//! Records are 16-byte aligned, so the four flag bits never collide with an
//! address. The word goes from live to done exactly once, by a CAS, so the first
//! cancel wins, and the reason never changes afterwards. `WAITERS` and
//! `HAS_SET` are set by read-modify-writes on a live word only, `UNCLAIMED` is
//! cleared once by the canceler that takes the subtree over (a CAS), and
//! `COMPLETE` is set once by the canceler that finished the subtree (see
//! `cancel`): by then it is the only thread that writes the word, so a store.

use crate::error::{Cause, Error};
use crate::sync::{AccessCheck, Arc};

/// The raw content of a state word.
pub(crate) type Word = *mut Record;

/// Set by a waiter before it sleeps; tells the canceler to notify the event.
pub(crate) const WAITERS: usize = 4;
/// Set together with the reason by a reader that found the deadline passed: the
/// node is done, but no canceler has walked its subtree yet. The first canceler
/// that clears it (a CAS) owns that walk.
pub(crate) const UNCLAIMED: usize = 1;
/// Set once the subtree below a done node is done too: every canceler that lost the
/// race for the node waits for it before returning.
pub(crate) const COMPLETE: usize = 2;
/// Set (by a CAS that fails once the node is done) by the first registrant before
/// it inserts into the node's child set. A node closed without it has no
/// registration to walk: the close itself sets `COMPLETE`. This is what lets a
/// leaf be complete at its close, and a late registrant never make a complete
/// node look incomplete.
pub(crate) const HAS_SET: usize = 8;
/// All flag bits.
const FLAGS: usize = WAITERS | UNCLAIMED | COMPLETE | HAS_SET;

/// Why a node is done: immutable once stored. Aligned so that a pointer to it
/// leaves room for the flag bits.
#[derive(Debug)]
#[repr(align(16))]
pub(crate) struct Record {
    pub(crate) err: Error,
    pub(crate) cause: Cause,
    /// Lets loom check that every read of the record happens after its
    /// creation and before its free (zero-sized outside loom).
    pub(crate) access: AccessCheck,
}

static CANCELED_RECORD: Record = Record {
    err: Error::Canceled,
    cause: Cause::plain(Error::Canceled),
    access: AccessCheck::STATIC,
};
static DEADLINE_RECORD: Record = Record {
    err: Error::DeadlineExceeded,
    cause: Cause::plain(Error::DeadlineExceeded),
    access: AccessCheck::STATIC,
};

/// The live word with no waiters.
pub(crate) fn live() -> Word {
    std::ptr::null_mut()
}

/// The word without its flag bits: the record pointer, or null while live.
#[inline]
pub(crate) fn reason_of(word: Word) -> Word {
    word.map_addr(|a| a & !FLAGS)
}

/// Whether the word carries `flag`.
#[inline]
pub(crate) fn has(word: Word, flag: usize) -> bool {
    word.addr() & flag != 0
}

/// Whether the word says done.
#[inline]
pub(crate) fn is_done(word: Word) -> bool {
    word.addr() & !FLAGS != 0
}

/// The record of a word, if it is done.
///
/// # Safety
///
/// The word must come from a node that is still alive: an owned record is kept
/// alive by the node that stores it.
#[inline]
pub(crate) unsafe fn record<'a>(word: Word) -> Option<&'a Record> {
    // SAFETY: a done word points at a static record or at an `Arc<Record>` that the
    // node owns, which outlives the borrow by the caller's contract.
    let record = unsafe { reason_of(word).as_ref() };
    if let Some(record) = record {
        record.access.read();
    }
    record
}

/// An owned reason for being done, ready to be stored in a state word.
///
/// It owns one reference on its record when the record is shared; cloning it for
/// each child of a canceled subtree is a reference-count increment at most.
#[derive(Debug)]
pub(crate) struct Reason(Word);

// SAFETY: a `Reason` is a counted reference to an immutable `Record`, whose fields
// are `Send + Sync`; it behaves like an `Arc<Record>`.
unsafe impl Send for Reason {}
// SAFETY: as above.
unsafe impl Sync for Reason {}

impl Reason {
    /// A reason with an explicit cause; a cause that is just `err` again costs nothing.
    pub(crate) fn new(err: Error, cause: Option<Cause>) -> Reason {
        match cause {
            Some(cause) if cause.as_error() != Some(err) => Reason(
                Arc::into_raw(Arc::new(Record {
                    err,
                    cause,
                    access: AccessCheck::new(),
                }))
                .cast_mut(),
            ),
            _ => Reason::plain(err),
        }
    }

    /// The reason for a plain error.
    pub(crate) fn plain(err: Error) -> Reason {
        let record = match err {
            Error::Canceled => &CANCELED_RECORD,
            Error::DeadlineExceeded => &DEADLINE_RECORD,
        };
        Reason((record as *const Record).cast_mut())
    }

    /// The record: why the node is done.
    pub(crate) fn record(&self) -> &Record {
        // SAFETY: a reason always points at a static record or at a record it
        // holds a counted reference on (never at a live word).
        let record = unsafe { &*self.0 };
        record.access.read();
        record
    }

    /// The word to store; the reference stays owned by `self` (a word that is
    /// stored takes a reference of its own: `try_close` forgets a clone).
    pub(crate) fn word(&self) -> Word {
        self.0
    }

    /// Takes back the reference owned by a done state word.
    ///
    /// # Safety
    ///
    /// `word` must be a done word whose reference nobody else releases.
    pub(crate) unsafe fn from_word(word: Word) -> Reason {
        Reason(reason_of(word))
    }

    /// Whether this is a counted reference to a record (an explicit cause),
    /// whose last release runs the cause's `Drop`.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared().is_some()
    }

    fn shared(&self) -> Option<*const Record> {
        let static_records = [
            &CANCELED_RECORD as *const Record,
            &DEADLINE_RECORD as *const Record,
        ];
        let ptr = self.0.cast_const();
        (!ptr.is_null() && !static_records.contains(&ptr)).then_some(ptr)
    }
}

impl Clone for Reason {
    fn clone(&self) -> Reason {
        if let Some(ptr) = self.shared() {
            // SAFETY: `self` owns a reference, so the record is alive.
            unsafe { Arc::increment_strong_count(ptr) };
        }
        Reason(self.0)
    }
}

impl Drop for Reason {
    fn drop(&mut self) {
        if let Some(ptr) = self.shared() {
            // SAFETY: `self` owns exactly one reference, given back here.
            unsafe { Arc::decrement_strong_count(ptr) };
        }
    }
}
