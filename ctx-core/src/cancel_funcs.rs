//! The functions that cancel a context: [`CancelFunc`] and [`CancelCauseFunc`]
//! (owned, cancel on drop), [`Canceler`] (shared, cancels through `&self`) and
//! [`DropGuard`] (a `Canceler` that cancels on drop unless disarmed).

use crate::context::Context;
use crate::error::{Cause, Error};
use crate::tree::{self, node::NodeRef, state::Reason};
use std::fmt;

/// Cancels its context when called, or when dropped (Go's `CancelFunc`).
///
/// Dropping is Rust's `defer cancel()`: a context derived in a scope is canceled
/// when the scope ends, so no subtree, timer or registration outlives its use by
/// accident. Canceling twice (or after the parent was canceled, or after the
/// context's deadline passed, its timer late or not) does nothing; the first
/// cancel wins.
///
/// Keep it in a named binding: `let (ctx, _cancel) = …` keeps it to the end of the
/// scope, while `let (ctx, _) = …` drops it, and so cancels `ctx`, immediately.
///
/// # What a returned cancel guarantees
///
/// When `cancel` returns (or the drop ends), the context and every context
/// derived from it report done — also when this call lost a race (the context was
/// already ended by a parent, its deadline or another thread): then it waits for
/// the winner to finish the subtree, as Go's cancel blocks on the winner's lock.
/// That wait is for atomics only: a cancel runs no waker, callback or `Drop`
/// until its whole subtree is done, so the wait never depends on a lock the
/// waiting thread holds, and a cancel made from a waker that another cancel
/// runs (a task polled inline by its executor's waker) never waits for that
/// cancel. An uncontended cancel never waits for another thread.
///
/// The waiters of the subtree are woken once it is done, by the cancel that
/// walked it: before this call returns if that was this call, maybe just after
/// if it lost (those parked before a read found a deadline passed are woken
/// on the runner, by that read). The `after_func` callbacks this cancel set
/// free run on ctx-core's runner threads, each on its own, and the cancel does
/// not wait for them (Go runs each `AfterFunc` in a goroutine of its own); a
/// callback's panic stays there. If a `Drop` of a value the cancel released
/// (or of its own cause), a waiter's waker or a timer backend's `disarm`
/// panicked on this thread, the first panic is resumed here once everything
/// is done.
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
///
/// let ctx = {
///     let (ctx, _cancel) = Context::background().with_cancel();
///     assert!(!ctx.is_done());
///     ctx
/// }; // `_cancel` dropped here
/// assert!(ctx.is_done());
/// ```
#[must_use = "dropping a CancelFunc cancels its context at once; bind it (`let (ctx, _cancel) = ...`)"]
pub struct CancelFunc {
    /// A strong reference on the cancelable node.
    node: NodeRef,
}

// SAFETY: a `CancelFunc` is a strong reference on a node, which is `Send + Sync`
// (see `Context`).
unsafe impl Send for CancelFunc {}
// SAFETY: as above; `&CancelFunc` gives no access at all.
unsafe impl Sync for CancelFunc {}

impl CancelFunc {
    /// Takes over one strong reference on `node`.
    pub(crate) fn new(node: NodeRef) -> CancelFunc {
        CancelFunc { node }
    }

    /// Cancels the context with [`Error::Canceled`], its subtree with it.
    pub fn cancel(self) {
        drop(self);
    }

    /// The context this function cancels.
    pub fn context(&self) -> Context {
        self.node.inc_strong();
        Context::from_strong(self.node)
    }

    /// A [`Canceler`] for the same context: cloneable, cancels through `&self`,
    /// and does not cancel when dropped. This `CancelFunc` still cancels when it
    /// is dropped; [`into_canceler`](CancelFunc::into_canceler) gives that up.
    pub fn canceler(&self) -> Canceler {
        self.node.inc_strong();
        Canceler { node: self.node }
    }

    /// Turns this function into a [`Canceler`] without canceling: the context is
    /// then canceled only through a `Canceler` (or its parent, or its deadline).
    pub fn into_canceler(self) -> Canceler {
        let this = std::mem::ManuallyDrop::new(self);
        Canceler { node: this.node }
    }
}

impl Drop for CancelFunc {
    fn drop(&mut self) {
        // Our strong reference goes with the cancel (also when a released
        // value's `Drop` panics and that panic resurfaces from it).
        tree::cancel::cancel_and_release(self.node, Reason::plain(Error::Canceled));
    }
}

impl fmt::Debug for CancelFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelFunc")
            .field(&format_args!("{}", self.context()))
            .finish()
    }
}

/// Cancels its context with a cause (Go's `CancelCauseFunc`).
///
/// Dropping it without calling [`cancel`](CancelCauseFunc::cancel) cancels with
/// [`Error::Canceled`] as both error and cause (Go's `cancel(nil)`).
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Context, Error};
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// cancel.cancel(Cause::msg("client disconnected"));
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(ctx.cause().unwrap().to_string(), "client disconnected");
/// ```
#[must_use = "dropping a CancelCauseFunc cancels its context at once; bind it (`let (ctx, _cancel) = ...`)"]
pub struct CancelCauseFunc {
    inner: CancelFunc,
}

impl CancelCauseFunc {
    pub(crate) fn new(inner: CancelFunc) -> CancelCauseFunc {
        CancelCauseFunc { inner }
    }

    /// Cancels the context with [`Error::Canceled`] and `cause`.
    pub fn cancel(self, cause: impl Into<Cause>) {
        let reason = Reason::new(Error::Canceled, Some(cause.into()));
        // The cancel function's strong reference goes with the cancel.
        let inner = std::mem::ManuallyDrop::new(self.inner);
        tree::cancel::cancel_and_release(inner.node, reason);
    }

    /// The context this function cancels.
    pub fn context(&self) -> Context {
        self.inner.context()
    }

    /// A [`Canceler`] for the same context (see [`CancelFunc::canceler`]).
    pub fn canceler(&self) -> Canceler {
        self.inner.canceler()
    }

    /// Turns this function into a [`Canceler`] without canceling.
    pub fn into_canceler(self) -> Canceler {
        self.inner.into_canceler()
    }

    /// This function as a plain [`CancelFunc`] (dropping it cancels with
    /// `Canceled` as both error and cause), for an API that hands out a
    /// `CancelFunc` while keeping a cause-capable [`Canceler`] for itself.
    pub fn into_cancel_func(self) -> CancelFunc {
        self.inner
    }
}

impl fmt::Debug for CancelCauseFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelCauseFunc")
            .field(&format_args!("{}", self.context()))
            .finish()
    }
}

/// A shareable handle that cancels a context: `Clone`, `Send + Sync`, and
/// canceling through `&self`, so that several tasks can each abort the same work
/// without a lock (tokio-util's `CancellationToken` cancels from any clone too).
///
/// Unlike a [`CancelFunc`], dropping a `Canceler` does nothing: the context
/// lives on until a `Canceler` (or the `CancelFunc`, its parent, its deadline)
/// ends it, or until its last handle goes (then it is dropped undone: its
/// timer is given back, and a pending [`after_func`](Context::after_func)
/// callback never runs). [`drop_guard`](Canceler::drop_guard) gives the
/// cancel-on-drop behaviour back where it is wanted. A [`Context`] itself
/// stays observe-only.
///
/// Every cancel follows the rule of [`CancelFunc`]: the first one wins, and when
/// any call returns, the context and all its descendants are done.
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Context};
/// use std::thread;
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// let canceler = cancel.into_canceler();
/// let workers: Vec<_> = (0..2)
///     .map(|i| {
///         let canceler = canceler.clone();
///         thread::spawn(move || {
///             if i == 1 {
///                 canceler.cancel_with_cause(Cause::msg("worker 1 failed"));
///             }
///         })
///     })
///     .collect();
/// for worker in workers {
///     worker.join().unwrap();
/// }
/// assert_eq!(ctx.cause().unwrap().to_string(), "worker 1 failed");
/// ```
pub struct Canceler {
    /// A strong reference on the cancelable node.
    node: NodeRef,
}

// SAFETY: a strong reference on a node, which is `Send + Sync` (see `Context`).
unsafe impl Send for Canceler {}
// SAFETY: as above; `&Canceler` only cancels, which is safe from any thread.
unsafe impl Sync for Canceler {}

impl Canceler {
    /// Cancels the context with [`Error::Canceled`]; returns whether this call
    /// ended it (false if it was done already: the first cancel wins; also if
    /// its deadline passed, its timer late, or its parent was done).
    pub fn cancel(&self) -> bool {
        tree::cancel::cancel_explicit(self.node, Reason::plain(Error::Canceled))
    }

    /// Cancels the context with [`Error::Canceled`] and `cause` (Go's
    /// `CancelCauseFunc`); returns whether this call ended it.
    pub fn cancel_with_cause(&self, cause: impl Into<Cause>) -> bool {
        tree::cancel::cancel_explicit(self.node, Reason::new(Error::Canceled, Some(cause.into())))
    }

    /// The context this handle cancels.
    pub fn context(&self) -> Context {
        self.node.inc_strong();
        Context::from_strong(self.node)
    }

    /// Whether the context is done (by any means), as [`Context::is_done`].
    pub fn is_canceled(&self) -> bool {
        // A borrowed handle: no reference counting for a read.
        std::mem::ManuallyDrop::new(Context::from_strong(self.node)).is_done()
    }

    /// A guard that cancels the context when dropped, unless
    /// [disarmed](DropGuard::disarm) (tokio-util's `DropGuard`).
    pub fn drop_guard(self) -> DropGuard {
        DropGuard {
            canceler: Some(self),
            cause: None,
        }
    }

    /// Like [`drop_guard`](Canceler::drop_guard), canceling with `cause`.
    pub fn drop_guard_with_cause(self, cause: impl Into<Cause>) -> DropGuard {
        DropGuard {
            canceler: Some(self),
            cause: Some(cause.into()),
        }
    }
}

impl Clone for Canceler {
    fn clone(&self) -> Canceler {
        self.node.inc_strong();
        Canceler { node: self.node }
    }
}

impl Drop for Canceler {
    fn drop(&mut self) {
        self.node.dec_strong();
    }
}

impl PartialEq for Canceler {
    /// Whether both cancel the same context.
    fn eq(&self, other: &Canceler) -> bool {
        self.node == other.node
    }
}

impl Eq for Canceler {}

impl std::hash::Hash for Canceler {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.node.as_ptr().hash(state);
    }
}

impl fmt::Debug for Canceler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Canceler")
            .field(&format_args!("{}", self.context()))
            .finish()
    }
}

/// Cancels its context when dropped, unless [disarmed](DropGuard::disarm).
///
/// Made by [`Canceler::drop_guard`] or [`Canceler::drop_guard_with_cause`]: the
/// cause is chosen up front, for the scope that may end early.
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Context};
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// let canceler = cancel.into_canceler();
/// {
///     let guard = canceler.clone().drop_guard_with_cause(Cause::msg("step failed"));
///     // ... an early return or a panic here cancels with the cause ...
///     let _canceler = guard.disarm(); // the step succeeded: keep the context
/// }
/// assert!(!ctx.is_done());
/// {
///     let _guard = canceler.drop_guard_with_cause(Cause::msg("step failed"));
/// }
/// assert_eq!(ctx.cause().unwrap().to_string(), "step failed");
/// ```
#[must_use = "dropping a DropGuard cancels its context at once"]
pub struct DropGuard {
    canceler: Option<Canceler>,
    cause: Option<Cause>,
}

impl DropGuard {
    /// Gives up the cancel on drop and returns the [`Canceler`].
    pub fn disarm(mut self) -> Canceler {
        self.canceler
            .take()
            .expect("a guard holds its canceler until dropped")
    }

    /// The context this guard cancels.
    pub fn context(&self) -> Context {
        self.canceler
            .as_ref()
            .expect("a guard holds its canceler until dropped")
            .context()
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(canceler) = self.canceler.take() {
            match self.cause.take() {
                Some(cause) => canceler.cancel_with_cause(cause),
                None => canceler.cancel(),
            };
        }
    }
}

impl fmt::Debug for DropGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropGuard")
            .field("canceler", &self.canceler)
            .field("cause", &self.cause)
            .finish()
    }
}

/// A derived context that is canceled when this guard is dropped: one value, so
/// there is no cancel function to forget.
///
/// `let (ctx, _) = parent.with_timeout(d);` compiles, and drops the
/// [`CancelFunc`] at once, so `ctx` is born canceled (`#[must_use]` does not
/// reach inside a tuple pattern). The guard forms —
/// [`with_cancel_guard`](Context::with_cancel_guard),
/// [`with_timeout_guard`](Context::with_timeout_guard),
/// [`with_deadline_guard`](Context::with_deadline_guard) — design that trap out:
/// the guard *is* the context (it derefs to [`Context`]) and cancels it at the end
/// of its scope, Go's `defer cancel()`.
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use std::time::Duration;
///
/// fn handle(parent: &Context) -> bool {
///     let ctx = parent.with_timeout_guard(Duration::from_secs(5));
///     // `ctx` is a `&Context` wherever one is expected.
///     ctx.check().is_ok()
/// } // canceled here
///
/// assert!(handle(&Context::background()));
/// ```
#[must_use = "dropping a ContextGuard cancels its context at once; bind it (`let ctx = ...`)"]
pub struct ContextGuard {
    ctx: Context,
    cancel: CancelFunc,
}

impl ContextGuard {
    pub(crate) fn new((ctx, cancel): (Context, CancelFunc)) -> ContextGuard {
        ContextGuard { ctx, cancel }
    }

    /// Cancels the context now (as dropping the guard does).
    pub fn cancel(self) {
        drop(self);
    }

    /// The context, and the function that cancels it (no longer on this guard's
    /// drop).
    pub fn into_parts(self) -> (Context, CancelFunc) {
        (self.ctx, self.cancel)
    }

    /// A [`Canceler`] for the same context (see [`CancelFunc::canceler`]).
    pub fn canceler(&self) -> Canceler {
        self.cancel.canceler()
    }
}

impl std::ops::Deref for ContextGuard {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl AsRef<Context> for ContextGuard {
    fn as_ref(&self) -> &Context {
        &self.ctx
    }
}

impl std::borrow::Borrow<Context> for ContextGuard {
    fn borrow(&self) -> &Context {
        &self.ctx
    }
}

impl fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ContextGuard").field(&self.ctx).finish()
    }
}
