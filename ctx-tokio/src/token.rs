//! A bridge to and from tokio-util's [`CancellationToken`] (feature `tokio-util`).
//!
//! * [`ContextTokenExt::to_token`]: a token canceled when a context is done,
//!   held by a [`ContextToken`] guard. It is a waiter on the context, no task:
//!   the token is canceled where the context's waiters are woken, inline by
//!   whoever cancels the context, before that cancel returns (for a deadline,
//!   by the timer's expiry). Dropping the guard takes the waiter back, so a
//!   long-lived context does not collect one per call.
//! * [`from_token`]: a context canceled when a token is, through
//!   [`with_cancel_cause_on`] (one watching task).

use crate::task::with_cancel_cause_on;
use ctx_core::{CancelFunc, Context, Done};
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Wake, Waker};
use tokio_util::sync::CancellationToken;

/// Converts a [`Context`] into a [`CancellationToken`], for APIs that take one.
pub trait ContextTokenExt {
    /// A token canceled as soon as this context is done (at once if it already
    /// is), for as long as the returned guard lives. Canceling the token does not
    /// cancel the context.
    ///
    /// The token is canceled where the context's waiters are woken: by a cancel
    /// of the context (or of a parent) before that cancel returns, and for a
    /// deadline by the timer's expiry (on the runtime, with [`TokioTimer`]),
    /// as for a task awaiting `ctx.done()`. A read that finds the deadline
    /// passed before the timer fired has the token canceled on ctx-core's
    /// runner thread, shortly after.
    ///
    /// The guard dereferences to the token: pass `token.clone()` to an API that
    /// takes a `CancellationToken`, and keep the guard while that API runs.
    /// Dropping the guard takes its waiter off the context (see
    /// [`ContextToken`]).
    ///
    /// [`TokioTimer`]: crate::TokioTimer
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
/// canceled when the context is done. Dropping the guard takes its waiter off
/// the context, so calling `to_token` again and again on a long-lived context
/// leaves nothing behind; from then on, a token that is not canceled yet no
/// longer follows the context.
#[must_use = "dropping a ContextToken disconnects its token from the context at once"]
#[derive(Debug)]
pub struct ContextToken {
    token: CancellationToken,
    /// The context's `Done`, polled once with a waker that cancels the token;
    /// dropping it takes the waiter off the context.
    _done: Done,
}

/// The waker of a [`ContextToken`]'s waiter: its wake cancels the token.
struct CancelOnWake(CancellationToken);

impl Wake for CancelOnWake {
    fn wake(self: Arc<Self>) {
        self.0.cancel();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.cancel();
    }
}

impl ContextTokenExt for Context {
    fn to_token(&self) -> ContextToken {
        let token = CancellationToken::new();
        let mut done = self.done();
        let waker = Waker::from(Arc::new(CancelOnWake(token.clone())));
        if Pin::new(&mut done)
            .poll(&mut TaskContext::from_waker(&waker))
            .is_ready()
        {
            token.cancel();
        }
        ContextToken { token, _done: done }
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
