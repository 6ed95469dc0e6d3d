//! A bridge to and from tokio-util's [`CancellationToken`] (feature `tokio-util`).
//!
//! * [`ContextTokenExt::to_token`]: a token canceled when a context is done. It is
//!   an [`after_func`](Context::after_func) registration, no task: the token is
//!   canceled inline by whoever cancels the context.
//! * [`from_token`]: a context canceled when a token is, through
//!   [`with_cancel_cause_on`](crate::with_cancel_cause_on) (one watching task).

use crate::task::with_cancel_cause_on;
use ctx_core::{CancelFunc, Context};
use std::fmt;
use tokio_util::sync::CancellationToken;

/// Converts a [`Context`] into a [`CancellationToken`], for APIs that take one.
pub trait ContextTokenExt {
    /// A token canceled as soon as this context is done (at once if it already
    /// is). Canceling the token does not cancel the context.
    ///
    /// # Caveats
    ///
    /// The registration behind the token stays on the context until the context
    /// is done, even if every clone of the token is dropped earlier. On a
    /// long-lived context, make the token from a short-lived child
    /// (`ctx.with_cancel()`) so that it goes away with the child.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_tokio::ContextTokenExt;
    ///
    /// let (ctx, cancel) = ctx_core::Context::background().with_cancel();
    /// let token = ctx.to_token();
    /// assert!(!token.is_cancelled());
    /// cancel.cancel();
    /// assert!(token.is_cancelled());
    /// ```
    fn to_token(&self) -> CancellationToken;
}

impl ContextTokenExt for Context {
    fn to_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let canceler = token.clone();
        // Dropping the registration handle keeps the callback registered.
        drop(self.after_func(move || canceler.cancel()));
        token
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
/// Panics outside a tokio runtime.
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
        let (outer, cancel) = parent.with_cancel();
        let (ctx, cancel_cause) = outer.with_cancel_cause();
        cancel_cause.cancel(TokenCanceled);
        return (ctx, cancel);
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
