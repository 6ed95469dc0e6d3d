//! Running futures and streams until a context is done, on any executor.
//!
//! [`run_until_done`] races a future against its context; the extension traits
//! [`FutureExt`] and [`StreamExt`] put the same at the end of a method chain.
//! None needs a runtime or allocates. A future is biased towards its own
//! completion once polled, a stream towards the context: see
//! [which side wins](run_until_done#which-side-wins).

use crate::context::Context;
use crate::error::Error;
use crate::waiter::Done;
use futures_core::Stream;
use std::borrow::Borrow;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// Runs `fut` until it completes or `ctx` is done, whichever comes first: the
/// runtime-agnostic form of every adapter's `run_until_done`.
///
/// Borrows the context; [`run_until_done_owned`] takes it by value for futures
/// that must be `'static` (spawned tasks).
///
/// # Errors
///
/// The context's [`Error`] if it is done before `fut` completes: already at
/// the first poll (which then does not poll `fut`), or at a later poll at which
/// `fut` is still pending. An output `fut` has ready at a later poll wins over
/// a context that ended meanwhile (see [which side wins](#which-side-wins)).
///
/// # Which side wins
///
/// A future is biased towards its own completion, as tokio-util's
/// `run_until_cancelled` and `with_cancellation_token` are: at the first poll
/// the context goes first, so a context that is already done wins without
/// polling the future at all; at every later poll the future goes first, and
/// the context is read only if the future is pending. A future that became
/// ready in the same window as the context's end (a value arrived on a
/// channel, then the cancel) hands its output back instead of dropping it.
/// Once the future is pending, a done context always ends the wait, an exact
/// deadline included (one whose timer is late).
///
/// A stream is biased towards the context: every poll reads the context
/// first, and a done context ends the stream even if the next item is ready.
/// A stream has no completion to favour, only one more item; taking items
/// after the context's end would let a stream that is always ready (a
/// channel under load) run on for ever.
///
/// # Cancellation safety
///
/// When the context wins, `fut` is dropped at its current `.await`, in the
/// poll that returns the context's error (not later, when the returned future
/// goes): a lock guard or a connection it holds is given back before the
/// caller sees the error, also when the caller keeps the returned future (a
/// pinned `&mut` future in a `select!` loop). Work it did is lost unless `fut`
/// itself is cancellation safe. A future that completes is dropped in the
/// poll that returns its output too.
///
/// Polled again after it returned `Ready`, the returned future stays
/// `Pending` (as `futures`' `Fuse` does) and polls nothing;
/// [`FusedFuture::is_terminated`](futures_core::FusedFuture::is_terminated)
/// tells that it has finished.
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, Error, run_until_done};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert_eq!(block_on(run_until_done(&ctx, async { 7 })), Ok(7));
/// cancel.cancel();
/// assert_eq!(block_on(run_until_done(&ctx, std::future::pending::<()>())), Err(Error::Canceled));
/// ```
pub fn run_until_done<F: IntoFuture>(
    ctx: &Context,
    fut: F,
) -> WithContext<F::IntoFuture, &Context> {
    WithContext::new(fut.into_future(), ctx)
}

/// [`run_until_done`] owning its context, for `'static` futures.
pub fn run_until_done_owned<F: IntoFuture>(ctx: Context, fut: F) -> WithContext<F::IntoFuture> {
    WithContext::new(fut.into_future(), ctx)
}

/// A future or stream raced against a context: see [`run_until_done`],
/// [`FutureExt::with_context`] and [`StreamExt::with_context`].
///
/// As a future it yields `Ok(output)` or `Err(the context's error)`: made by
/// [`run_until_done`] or [`FutureExt::with_context`], biased towards the
/// future's completion after the first poll; made by
/// [`adapter::until_done`](crate::adapter::until_done), towards the context
/// at every poll. As a stream, it yields the inner stream's items until the
/// context is done, then ends, biased towards the context (see
/// [which side wins](run_until_done#which-side-wins)).
#[must_use = "futures and streams do nothing unless polled"]
pub struct WithContext<F, C: Borrow<Context> = Context> {
    /// The future or stream; `None` once finished (it completed, or the
    /// context won): dropped then, not when the wrapper goes.
    inner: Option<F>,
    done: Done<C>,
    /// Which side a poll asks first.
    bias: Bias,
}

/// Which side of a race a poll asks first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bias {
    /// [`run_until_done`] before its first poll: the context goes first, then
    /// [`FutureFirst`](Bias::FutureFirst).
    FirstPoll,
    /// [`run_until_done`] after its first poll: the future goes first.
    FutureFirst,
    /// [`until_done`](crate::adapter::until_done): the context goes first at
    /// every poll.
    ContextFirst,
}

impl<F, C: Borrow<Context>> WithContext<F, C> {
    fn new(inner: F, ctx: C) -> WithContext<F, C> {
        WithContext::with_bias(inner, ctx, Bias::FirstPoll)
    }

    /// The race of [`until_done`](crate::adapter::until_done): the context
    /// goes first at every poll.
    pub(crate) fn context_first(inner: F, ctx: C) -> WithContext<F, C> {
        WithContext::with_bias(inner, ctx, Bias::ContextFirst)
    }

    fn with_bias(inner: F, ctx: C, bias: Bias) -> WithContext<F, C> {
        WithContext {
            inner: Some(inner),
            done: Done::new(ctx),
            bias,
        }
    }

    /// The context this future or stream is raced against.
    pub fn context(&self) -> &Context {
        self.done.context()
    }

    /// Whether the future completed or the context won (the stream ended).
    fn is_finished(&self) -> bool {
        self.inner.is_none()
    }

    /// Projects the pinned wrapper to its pinned inner future (`None` once
    /// finished), its `Done` and its bias.
    fn project(self: Pin<&mut Self>) -> (Pin<&mut Option<F>>, &mut Done<C>, &mut Bias) {
        // SAFETY: `inner` is structurally pinned: it is never moved out of a
        // pinned `WithContext` (no method takes it by value, and `Drop` is not
        // implemented), and it is only ever emptied through `Pin::set`, which
        // drops the future in place. So pinning the wrapper pins it. `done` and
        // the bias are not pinned (`Done<C>` is `Unpin` for the `C` used with
        // `poll`).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        (inner, &mut this.done, &mut this.bias)
    }
}

impl<F: Future, C: Borrow<Context> + Unpin> Future for WithContext<F, C> {
    type Output = Result<F::Output, Error>;

    /// At the first poll the context goes first: done, it wins without a poll
    /// of the future. At every later poll the future goes first, and the
    /// context is read only if the future is pending: an output that became
    /// ready in the same window as the context's end is returned, not dropped.
    /// (A race made by [`adapter::until_done`](crate::adapter::until_done)
    /// reads the context first at every poll.)
    ///
    /// Whichever side wins, the future is dropped before this poll returns.
    /// Once finished, a poll stays `Pending` and polls nothing.
    ///
    /// A panic of the future's `poll` leaves it in place, to be dropped with
    /// the wrapper (not during the unwind).
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let (mut inner, done, bias) = self.project();
        let Some(mut fut) = inner.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let future_first = match *bias {
            Bias::FirstPoll => {
                *bias = Bias::FutureFirst;
                false
            }
            Bias::FutureFirst => true,
            Bias::ContextFirst => false,
        };
        if future_first && let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(won(inner, done, output)));
        }
        if Pin::new(&mut *done).poll(cx).is_ready() {
            let err = done.context().err().unwrap_or(Error::Canceled);
            inner.set(None);
            return Poll::Ready(Err(err));
        }
        if !future_first && let Poll::Ready(output) = fut.poll(cx) {
            return Poll::Ready(Ok(won(inner, done, output)));
        }
        Poll::Pending
    }
}

/// The future won: it goes, and so does the context's registration of this
/// task's waker (a later cancel has nobody here to wake). A panic of the
/// future's `Drop` is resumed after `output` was dropped under a guard: its
/// `Drop` during that unwind would be a second panic, which aborts.
fn won<F, C: Borrow<Context>, T>(
    mut inner: Pin<&mut Option<F>>,
    done: &mut Done<C>,
    output: T,
) -> T {
    done.release();
    crate::adapter::drop_then_return(|| inner.set(None), output)
}

impl<F: Future, C: Borrow<Context> + Unpin> futures_core::FusedFuture for WithContext<F, C> {
    fn is_terminated(&self) -> bool {
        self.is_finished()
    }
}

impl<S: Stream, C: Borrow<Context> + Unpin> Stream for WithContext<S, C> {
    type Item = S::Item;

    /// Once the context is done or the inner stream ended, the inner stream
    /// is dropped (before this poll returns) and every later poll is
    /// `Ready(None)`.
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        let (mut inner, done, _) = self.project();
        let Some(stream) = inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        if Pin::new(&mut *done).poll(cx).is_ready() {
            inner.set(None);
            return Poll::Ready(None);
        }
        let poll = stream.poll_next(cx);
        if let Poll::Ready(None) = poll {
            done.release();
            inner.set(None);
        }
        poll
    }
}

impl<F, C: Borrow<Context>> fmt::Debug for WithContext<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithContext")
            .field("ctx", self.context())
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

/// `fut.with_context(&ctx)`: [`run_until_done`] at the end of a method chain.
///
/// ```
/// use ctx_core::{Context, Error, FutureExt};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let answer = async { 42 }.with_context(&ctx);
/// assert_eq!(block_on(answer), Ok(42));
/// cancel.cancel();
/// assert_eq!(block_on(async { 42 }.with_context(ctx)), Err(Error::Canceled));
/// ```
pub trait FutureExt: Future + Sized {
    /// Races this future against `ctx` (borrowed as `&Context`, or owned).
    fn with_context<C: Borrow<Context>>(self, ctx: C) -> WithContext<Self, C> {
        WithContext::new(self, ctx)
    }
}

impl<F: Future> FutureExt for F {}

/// `stream.with_context(&ctx)`: the stream's items until the context is done,
/// then the end of the stream.
///
/// Every poll reads the context before the stream: an item the stream has
/// ready when the context is done is not taken (the stream ends instead).
pub trait StreamExt: Stream + Sized {
    /// Ends this stream as soon as `ctx` is done (borrowed or owned).
    fn with_context<C: Borrow<Context>>(self, ctx: C) -> WithContext<Self, C> {
        WithContext::new(self, ctx)
    }
}

impl<S: Stream> StreamExt for S {}
