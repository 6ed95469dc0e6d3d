//! An `after_func` registration: the stop-versus-fire state machine.
//!
//! A registration is a [`Callback`] in the carrier's child set. Its `state`
//! decides who owns the closure:
//!
//! ```text
//!            claim_fire (a canceler, or a registrant or stop that finds it done)
//!   PENDING ───────────────────────────────────────────▶ FIRED    (closure runs once)
//!      │
//!      └───────────────────────────────────────────────▶ STOPPED  (closure dropped, never runs)
//!            claim_stop (AfterFunc::stop)
//! ```
//!
//! Both transitions are one CAS from `PENDING`, so exactly one of them happens,
//! and its winner alone touches the closure cell. `stop()` returns true iff it
//! won, which is exactly "it prevented the run". Independently of that race,
//! whoever empties the callback's slot (a canceler draining the set, `stop()`
//! removing it, the registrant taking it back) releases the slot's `Arc`.
//!
//! The bad interleaving, and why it is fine: the canceler swaps the entry out of
//! the slot, then `stop()` wins the CAS to `STOPPED`, then the canceler's CAS to
//! `FIRED` fails. The closure does not run, `stop()` returns true, `stop()`'s
//! `remove` of the slot fails (already empty) and the canceler drops the slot's
//! reference. Nothing runs twice and nothing leaks.
//!
//! Claiming and running are separate steps: a canceler claims while it walks the
//! tree and runs the closure afterwards (see `work`), so user code never runs in
//! the middle of a walk.

use super::state::Reason;
use crate::sync::{AtomicU32, Ordering, UnsafeCell};
use std::fmt;

/// Registered, not yet fired or stopped.
const PENDING: u32 = 0;
/// Fired: the closure was (or is being, or is about to be) run.
const FIRED: u32 = 1;
/// Stopped: the closure will never run.
const STOPPED: u32 = 2;

/// The closure of a registration; it gets the context's error and cause.
pub(crate) type Thunk = Box<dyn FnOnce(crate::Error, crate::Cause) + Send + 'static>;

/// One registered callback.
pub(crate) struct Callback {
    state: AtomicU32,
    f: UnsafeCell<Option<Thunk>>,
}

// SAFETY: the closure is `Send`, and only the winner of the `PENDING` CAS touches it
// (module docs), so sharing a `Callback` between threads never shares the closure.
unsafe impl Sync for Callback {}
// SAFETY: as above; the closure itself is `Send`.
unsafe impl Send for Callback {}

impl Callback {
    pub(crate) fn new(f: Thunk) -> Callback {
        Callback {
            state: AtomicU32::new(PENDING),
            f: UnsafeCell::new(Some(f)),
        }
    }

    /// Claims the run: true if this call moved `PENDING` to `FIRED`, and then the
    /// caller must [`run`](Callback::run) it (now or later).
    pub(crate) fn claim_fire(&self) -> bool {
        self.claim(FIRED)
    }

    /// Claims the stop: true if this call prevented the run. The closure is
    /// the caller's to drop then ([`take_stopped`](Callback::take_stopped)),
    /// after its registration is gone: its `Drop` is user code, which may
    /// panic, and a panic must not leave the registration behind.
    pub(crate) fn claim_stop(&self) -> bool {
        self.claim(STOPPED)
    }

    /// The closure of a callback whose stop this thread claimed.
    pub(crate) fn take_stopped(&self) -> Option<Thunk> {
        debug_assert_eq!(self.state.load(Ordering::Relaxed), STOPPED);
        self.take()
    }

    /// Runs the closure of a claimed callback with the reason its context ended
    /// with. A panic propagates to the caller.
    pub(crate) fn run(&self, reason: &Reason) {
        debug_assert_eq!(self.state.load(Ordering::Relaxed), FIRED);
        if let Some(f) = self.take() {
            let record = reason.record();
            f(record.err, record.cause.clone());
        }
    }

    /// Moves `PENDING` to `to`; true if this call did.
    fn claim(&self, to: u32) -> bool {
        // AcqRel: acquire the closure as written at registration; release so the
        // loser's later reads (none touch the closure) are ordered after.
        self.state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn take(&self) -> Option<Thunk> {
        // SAFETY: only the winner of `claim` calls this, once (module docs); the
        // claim's Acquire ordered the closure's initialisation before this access.
        self.f.with_mut(|f| unsafe { (*f).take() })
    }

    /// `"pending"`, `"fired"` or `"stopped"`, for `Debug`.
    pub(crate) fn state_name(&self) -> &'static str {
        // Acquire: a snapshot for `Debug`; pairs with the claims.
        match self.state.load(Ordering::Acquire) {
            PENDING => "pending",
            FIRED => "fired",
            _ => "stopped",
        }
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("state", &self.state_name())
            .finish()
    }
}
