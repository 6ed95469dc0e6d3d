//! A bridge to and from tokio-util's [`CancellationToken`] (feature `tokio-util`).
//!
//! * [`ContextTokenExt::to_token`]: a token canceled when a context is done,
//!   held by a [`ContextToken`] guard. It is an
//!   [`after_func`](Context::after_func) registration, no task: the token is
//!   canceled inline by whoever cancels the context (for a deadline, ctx-core's
//!   runner thread; see *Paused time* on [`ContextTokenExt::to_token`]).
//!   Dropping the guard takes the registration back, so a long-lived context
//!   does not collect one per call.
//! * [`from_token`]: a context canceled when a token is, through
//!   [`with_cancel_cause_on`] (one watching task).

use crate::task::with_cancel_cause_on;
use ctx_core::{AfterFunc, CancelFunc, Context};
use std::fmt;
use std::ops::Deref;
use tokio_util::sync::CancellationToken;

/// Converts a [`Context`] into a [`CancellationToken`], for APIs that take one.
pub trait ContextTokenExt {
    /// A token canceled as soon as this context is done (at once if it already
    /// is), for as long as the returned guard lives. Canceling the token does not
    /// cancel the context.
    ///
    /// The guard dereferences to the token: pass `token.clone()` to an API that
    /// takes a `CancellationToken`, and keep the guard while that API runs.
    /// Dropping the guard takes its registration off the context (see
    /// [`ContextToken`]).
    ///
    /// # Paused time
    ///
    /// For a deadline, the token is canceled on ctx-core's runner thread (as
    /// every [`after_func`](Context::after_func) callback of a deadline is),
    /// which tokio knows nothing of. Under `tokio::time::pause`, auto-advance
    /// does not wait for it: once the runtime's own tasks are idle, the paused
    /// clock may jump to the next timer, and run what waits for it, before the
    /// token is canceled. So a task waiting on `token.cancelled()` may see
    /// things due later than the deadline happen first. Where that order
    /// matters in a paused-time test, await the context itself
    /// (`ctx.done().await`), whose waiters the expiry wakes inline on the
    /// runtime, or cancel the token from a task that does
    /// (`tokio::spawn(async move { ctx.done().await; token.cancel() })`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_tokio::ContextTokenExt;
    ///
    /// let (ctx, cancel) = ctx_core::Context::background().with_cancel();
    /// let token = ctx.to_token();
    /// let for_an_api = token.clone(); // a plain `CancellationToken`
    /// assert!(!for_an_api.is_cancelled());
    /// cancel.cancel();
    /// assert!(token.is_cancelled() && for_an_api.is_cancelled());
    /// ```
    fn to_token(&self) -> ContextToken;
}

/// A [`CancellationToken`] that follows a context, from
/// [`ContextTokenExt::to_token`]; it dereferences to the token.
///
/// While the guard lives, the token (and every clone and child of it) is
/// canceled when the context is done. Dropping the guard takes its
/// [`after_func`](Context::after_func) registration off the context, so calling
/// `to_token` again and again on a long-lived context leaves nothing behind;
/// from then on, a token that is not canceled yet no longer follows the context.
#[must_use = "dropping a ContextToken disconnects its token from the context at once"]
#[derive(Debug)]
pub struct ContextToken {
    token: CancellationToken,
    registration: AfterFunc,
}

impl ContextTokenExt for Context {
    fn to_token(&self) -> ContextToken {
        let token = CancellationToken::new();
        let canceler = token.clone();
        let registration = self.after_func(move || canceler.cancel());
        ContextToken {
            token,
            registration,
        }
    }
}

// ===== impl ContextToken =====

impl ContextToken {
    /// The token.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Deref for ContextToken {
    type Target = CancellationToken;

    fn deref(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for ContextToken {
    fn drop(&mut self) {
        // False if the context is already done (the token is canceled) or has
        // never been cancelable: nothing to take back then.
        self.registration.stop();
    }
}

/// A child of `parent` that is canceled when `token` is, or when the returned
/// [`CancelFunc`] is called or dropped, or `parent` is done. Its cause is then
/// [`TokenCanceled`].
///
/// A token that is already canceled gives a child that is born canceled. Otherwise
/// a task on the current runtime waits for the token (see
/// [`with_cancel_on`](crate::with_cancel_on)).
///
/// # Panics
///
/// Panics outside a tokio runtime, unless the token is canceled already.
///
/// # Examples
///
/// ```
/// use tokio_util::sync::CancellationToken;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let token = CancellationToken::new();
///     let (ctx, _cancel) = ctx_tokio::from_token(&ctx_tokio::background(), token.clone());
///     token.cancel();
///     ctx.done().await;
///     assert!(ctx.cause().unwrap().downcast_ref::<ctx_tokio::TokenCanceled>().is_some());
/// }
/// ```
#[track_caller]
pub fn from_token(parent: &Context, token: CancellationToken) -> (Context, CancelFunc) {
    if token.is_cancelled() {
        // One node, canceled at once: it leaves `parent`'s children now, as
        // one canceled later by its token does.
        let (ctx, cancel) = parent.with_cancel_cause();
        cancel.canceler().cancel_with_cause(TokenCanceled);
        return (ctx, cancel.into_cancel_func());
    }
    with_cancel_cause_on(parent, async move {
        token.cancelled().await;
        TokenCanceled
    })
}

/// The cause of a context canceled through [`from_token`]: its token was canceled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenCanceled;

impl fmt::Display for TokenCanceled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancellation token canceled")
    }
}

impl std::error::Error for TokenCanceled {}
