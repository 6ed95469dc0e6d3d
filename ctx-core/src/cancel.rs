//! The functions that cancel a context: [`CancelFunc`] and [`CancelCauseFunc`].

use crate::context::Context;
use crate::error::{Cause, Error};
use crate::tree::{self, Origin, node::NodeRef, state::Reason};
use std::fmt;

/// Cancels its context when called, or when dropped (Go's `CancelFunc`).
///
/// Dropping is Rust's `defer cancel()`: a context derived in a scope is canceled
/// when the scope ends, so no subtree, timer or registration outlives its use by
/// accident. Canceling twice (or after the parent was canceled) does nothing; the
/// first cancel wins.
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
/// An uncontended cancel never waits for another thread. The `after_func`
/// callbacks this cancel set free have run on this thread by then (after the
/// whole subtree was done); if one of them, or a `Drop` of a value released by
/// the cancel, panicked, the first panic is resumed here once everything is done.
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

    fn cancel_with(&self, reason: Reason) -> bool {
        tree::cancel(self.node, reason, Origin::Explicit)
    }
}

impl Drop for CancelFunc {
    fn drop(&mut self) {
        // Released even if an `after_func` callback's panic resurfaces from the cancel.
        let _release = self.node.strong_guard();
        self.cancel_with(Reason::plain(Error::Canceled));
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
        self.inner
            .cancel_with(Reason::new(Error::Canceled, Some(cause.into())));
    }

    /// The context this function cancels.
    pub fn context(&self) -> Context {
        self.inner.context()
    }
}

impl fmt::Debug for CancelCauseFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelCauseFunc")
            .field(&format_args!("{}", self.context()))
            .finish()
    }
}

/// Cancels a context once, with the first failure as its cause: the core of an
/// error group (Go's `errgroup.WithContext`), shared by the adapters' groups.
///
/// Every method takes `&self` and never blocks, so it can sit in the state the
/// group's tasks share.
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Context, GroupCancel};
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// let group = GroupCancel::new(cancel);
/// group.fail(Cause::msg("first"));
/// group.fail(Cause::msg("second"));
/// assert_eq!(group.first().unwrap().to_string(), "first");
/// assert_eq!(ctx.cause().unwrap().to_string(), "first");
/// ```
#[derive(Debug)]
pub struct GroupCancel {
    cancel: CancelCauseFunc,
    first: std::sync::OnceLock<Cause>,
}

impl GroupCancel {
    /// Takes over the function that cancels the group's context.
    pub fn new(cancel: CancelCauseFunc) -> GroupCancel {
        GroupCancel {
            cancel,
            first: std::sync::OnceLock::new(),
        }
    }

    /// Records a failure; the first one cancels the context with itself as the
    /// cause (unless the context was already canceled otherwise). Returns whether
    /// this was the first failure.
    pub fn fail(&self, cause: impl Into<Cause>) -> bool {
        let cause = cause.into();
        if self.first.set(cause.clone()).is_err() {
            return false;
        }
        self.cancel
            .inner
            .cancel_with(Reason::new(Error::Canceled, Some(cause)));
        true
    }

    /// Cancels the context with no failure (for `wait` and `stop`).
    pub fn cancel(&self) {
        self.cancel
            .inner
            .cancel_with(Reason::plain(Error::Canceled));
    }

    /// The first failure, if any.
    pub fn first(&self) -> Option<&Cause> {
        self.first.get()
    }
}
