//! `after_func`: run a callback once a context is done, unless stopped first.
//!
//! The registration and the stop-versus-fire state machine live in the tree
//! (`tree::register`, `tree::callback`); this is the public handle.

use crate::context::Context;
use crate::sync::Arc;
use crate::tree::callback::{Callback, Thunk};
use crate::tree::deadline;
use crate::tree::node::NodeRef;
use crate::tree::register::{self, Entry, Outcome, clone_reason};
use crate::tree::state::{self, Reason};
use std::fmt;

/// The handle of an [`after_func`](Context::after_func) registration.
///
/// Dropping the handle does not unregister the callback (as in Go): it still runs
/// when the context is done. Call [`stop`](AfterFunc::stop) to prevent that.
///
/// The registration is kept by the context, and the context by its handles
/// (and by this one while it lives). A context whose every handle goes before
/// it is done (its clones, its children, and a [`Canceler`](crate::Canceler),
/// which cancels nothing when dropped) is dropped, and a pending callback with
/// it, unrun: nothing can observe that context any more, and it will never be
/// done. (Go's garbage collector keeps such a context while its parent or its
/// timer can still cancel it, and runs the callback then.) A
/// [`CancelFunc`](crate::CancelFunc) cancels when dropped, and so runs the
/// callback; so does a [`DropGuard`](crate::DropGuard) of a `Canceler`.
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
    /// ran, is running, or was stopped before, or if the context is done. After
    /// a successful `stop` the closure is dropped at once.
    ///
    /// A context that reports done has started its callback (Go: once `Err`
    /// is non-nil, `stop` returns false), also when its deadline passed while
    /// its timer is late and nothing has reached the callback yet: then this
    /// call hands it to the runner, as registering on a done context does.
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
        if let Some((carrier, _)) = self.registration {
            // The exact read, as `Context::err` does: a deadline that passed
            // counts as done. The registration keeps the carrier alive.
            let word = deadline::exact_word(carrier);
            if state::is_done(word) {
                // Whoever claims the run (this call, the walk that reaches
                // the callback, or another `stop`) hands it to the runner;
                // exactly one does.
                if self.callback.claim_fire() {
                    crate::tree::work::spawn_callback(self.callback.clone(), clone_reason(word));
                }
                return false;
            }
        }
        // Live at the read: a cancel that comes later finds the callback
        // stopped, if this claim comes first.
        if !self.callback.claim_stop() {
            return false;
        }
        if let Some((carrier, slot)) = self.registration {
            register::deregister_callback(carrier, slot, &self.callback);
        }
        // The closure's `Drop` is user code: last, so that a panic in it (which
        // reaches the caller) leaves nothing registered.
        drop(self.callback.take_stopped());
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
        f.debug_struct("AfterFunc")
            .field("state", &self.callback.state_name())
            .finish()
    }
}

/// Registers `f` on `ctx`: see [`Context::after_func`].
pub(crate) fn register(ctx: &Context, f: Thunk) -> AfterFunc {
    let callback = Arc::new(Callback::new(f));
    let unregistered = |callback| AfterFunc {
        callback,
        registration: None,
    };
    let Some(carrier) = ctx.carrier() else {
        // Never done: the callback can never run, and `stop` succeeds once.
        return unregistered(callback);
    };
    // The exact read: a deadline that passed counts as done.
    if let Some(err) = ctx.err() {
        let cause = ctx.cause().unwrap_or_else(|| err.into());
        fire_on_runner(&callback, Reason::new(err, Some(cause)));
        return unregistered(callback);
    }
    // The slot owns a reference of its own: `Entry::from_raw` gives it back.
    let entry = Entry::callback_into_raw(callback.clone());
    match register::register(carrier, entry, None, None) {
        Outcome::Registered { slot } => {
            carrier.inc_strong();
            AfterFunc {
                callback,
                registration: Some((carrier, slot)),
            }
        }
        Outcome::Done { reason, back } => {
            if back {
                // SAFETY: the entry came back to us, with its reference.
                drop(unsafe { Entry::from_raw(entry) });
            }
            // Whoever emptied the slot, the closure runs at most once (the claim).
            fire_on_runner(&callback, reason);
            unregistered(callback)
        }
    }
}

/// The registration found the context done: the callback is claimed here (a
/// `stop` from now on reports that it ran) and runs on the runner, as every
/// callback does: never on the registering thread, which may hold a lock the
/// callback takes (Go runs it in a goroutine of its own).
fn fire_on_runner(callback: &Arc<Callback>, reason: Reason) {
    if callback.claim_fire() {
        crate::tree::work::spawn_callback(callback.clone(), reason);
    }
}
