//! `after_func`: run a callback once a context is done, unless stopped first.
//!
//! # Stop versus fire
//!
//! A registration is a [`Callback`] in the carrier's child set. Its `state` decides
//! who owns the closure:
//!
//! ```text
//!            fire (canceler or registrant)
//!   PENDING ───────────────────────────────▶ FIRED    (closure runs once)
//!      │
//!      └────────────────────────────────────▶ STOPPED  (closure dropped, never runs)
//!            stop()
//! ```
//!
//! Both transitions are one CAS from `PENDING`, so exactly one of them happens, and
//! its winner alone touches the closure cell. `stop()` returns true iff it won,
//! which is exactly "it prevented the run". Independently of that race, whoever
//! empties the callback's slot (the canceler draining the set, `stop()` removing
//! it, or the registrant taking it back) releases the slot's `Arc` reference.
//!
//! The bad interleaving, and why it is fine: the canceler swaps the entry out of
//! the slot, then `stop()` wins the CAS to `STOPPED`, then the canceler's CAS to
//! `FIRED` fails. The closure does not run, `stop()` returns true, `stop()`'s
//! `remove` of the slot fails (already empty) and the canceler drops the slot's
//! reference. Nothing runs twice and nothing leaks.

use crate::context::Context;
use crate::sync::{Arc, AtomicU32, Ordering, UnsafeCell};
use crate::tree::cancel::Entry;
use crate::tree::node::NodeRef;
use std::fmt;

/// Registered, not yet fired or stopped.
const PENDING: u32 = 0;
/// Fired: the closure was (or is being) run.
const FIRED: u32 = 1;
/// Stopped: the closure will never run.
const STOPPED: u32 = 2;

type Thunk = Box<dyn FnOnce() + Send + 'static>;

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
    fn new(f: Thunk) -> Callback {
        Callback {
            state: AtomicU32::new(PENDING),
            f: UnsafeCell::new(Some(f)),
        }
    }

    /// Runs the closure if nobody fired or stopped it yet. A panic in the closure
    /// propagates to the caller.
    pub(crate) fn fire(&self) {
        if self.claim(FIRED)
            && let Some(f) = self.take()
        {
            f();
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
        // SAFETY: only the winner of `claim` calls this, once (module docs).
        self.f.with_mut(|f| unsafe { (*f).take() })
    }
}

/// The handle of an [`after_func`](Context::after_func) registration.
///
/// Dropping the handle does not unregister the callback (as in Go): it still runs
/// when the context is done. Call [`stop`](AfterFunc::stop) to prevent that.
#[must_use = "dropping an AfterFunc keeps the callback registered; keep it to be able to stop it"]
pub struct AfterFunc {
    callback: Arc<Callback>,
    /// The carrier it is registered with (a strong reference), and the slot.
    registration: Option<(NodeRef, u32)>,
}

impl AfterFunc {
    /// Stops the callback from running.
    ///
    /// Returns true if this call prevented the run; false if the callback already
    /// ran, is running, or was stopped before. After a successful `stop` the
    /// closure is dropped at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::Context;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let flag = ran.clone();
    /// let registration = ctx.after_func(move || flag.store(true, Ordering::SeqCst));
    /// assert!(registration.stop());
    /// assert!(!registration.stop());
    /// cancel.cancel();
    /// assert!(!ran.load(Ordering::SeqCst));
    /// ```
    pub fn stop(&self) -> bool {
        if !self.callback.claim(STOPPED) {
            return false;
        }
        drop(self.callback.take());
        if let Some((carrier, slot)) = self.registration {
            let set = carrier
                .cancel_part()
                .children()
                .expect("registered without a set");
            if set.remove(slot, Entry::callback_ptr(&self.callback)) {
                // SAFETY: we emptied the slot, so its reference is ours to release.
                drop(unsafe { Entry::from_raw(Entry::callback_ptr(&self.callback)) });
            }
        }
        true
    }
}

impl Drop for AfterFunc {
    fn drop(&mut self) {
        if let Some((carrier, _)) = self.registration {
            carrier.dec_strong();
        }
    }
}

impl fmt::Debug for AfterFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.callback.state.load(Ordering::Acquire) {
            PENDING => "pending",
            FIRED => "fired",
            _ => "stopped",
        };
        f.debug_struct("AfterFunc").field("state", &state).finish()
    }
}

/// Registers `f` on `ctx`: see [`Context::after_func`].
pub(crate) fn register(ctx: &Context, f: Thunk) -> AfterFunc {
    let callback = Arc::new(Callback::new(f));
    let Some(carrier) = ctx.carrier() else {
        // Never done: the callback can never run, and `stop` succeeds once.
        return AfterFunc {
            callback,
            registration: None,
        };
    };
    if ctx.is_done() {
        callback.fire();
        return AfterFunc {
            callback,
            registration: None,
        };
    }
    let part = carrier.cancel_part();
    let set = part.children_or_init();
    // The slot owns a reference of its own: `Entry::from_raw` gives it back.
    let entry = Entry::callback_into_raw(callback.clone());
    let slot = set.insert(entry);
    // SeqCst: the load half of the insert side of the Dekker pair (`list`).
    if crate::tree::state::is_done(part.state.load(Ordering::SeqCst)) {
        if set.remove(slot, entry) {
            // SAFETY: we emptied the slot, so its reference is ours to release.
            drop(unsafe { Entry::from_raw(entry) });
        }
        // Whoever emptied the slot, the closure runs at most once (the CAS).
        callback.fire();
        return AfterFunc {
            callback,
            registration: None,
        };
    }
    carrier.inc_strong();
    AfterFunc {
        callback,
        registration: Some((carrier, slot)),
    }
}
