//! Waiting for a context: the [`Done`] future and the blocking waits.
//!
//! Registering a waiter, and the event it sleeps on, are the tree's business
//! (`tree::wait`, which argues why no wake-up is lost); this is the public face.

use crate::context::Context;
use crate::tree::wait::{Listener, listen};
use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
#[cfg(not(all(test, ctx_loom)))]
use std::time::Instant;

/// A future that completes when its context is done.
///
/// Returned by [`Context::done`]. It owns a clone of the context, so it is
/// `'static` and can be moved into tasks and `select!` arms freely.
/// [`Context::done_ref`] returns a `Done<&Context>` that borrows instead (no
/// reference counting), for waiting in place. It works on
/// any executor (or none: see [`Context::wait`] for blocking threads). A context
/// that can never be canceled (`background()`, `without_cancel()`) gives a `Done`
/// that never completes.
///
/// # Cancellation safety
///
/// Dropping a `Done` before it completes loses nothing; a fresh one can be created
/// at any time and completes as soon as the context is done.
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
///
/// # futures_lite_block_on(async {
/// let (ctx, cancel) = Context::background().with_cancel();
/// let waiter = std::thread::spawn(move || cancel.cancel());
/// ctx.done().await;
/// assert!(ctx.is_done());
/// # waiter.join().unwrap();
/// # });
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Wake, Waker};
/// #     struct T(std::thread::Thread);
/// #     impl Wake for T { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
/// #     let waker = Waker::from(std::sync::Arc::new(T(std::thread::current())));
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) { return v; }
/// #         std::thread::park();
/// #     }
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Done<C: Borrow<Context> = Context> {
    ctx: C,
    listener: Option<Listener>,
    /// Whether this future returned `Ready` (for `FusedFuture`).
    completed: bool,
}

impl<C: Borrow<Context>> Done<C> {
    pub(crate) fn new(ctx: C) -> Done<C> {
        Done {
            ctx,
            listener: None,
            completed: false,
        }
    }

    /// The context this future waits for.
    pub fn context(&self) -> &Context {
        self.ctx.borrow()
    }
}

impl<C: Borrow<Context> + Unpin> Future for Done<C> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        let ctx: &Context = this.ctx.borrow();
        let Some(carrier) = ctx.carrier() else {
            return Poll::Pending;
        };
        loop {
            if ctx.is_done() {
                this.listener = None;
                this.completed = true;
                return Poll::Ready(());
            }
            match &mut this.listener {
                None => match listen(carrier) {
                    None => {
                        this.completed = true;
                        return Poll::Ready(());
                    }
                    Some(listener) => this.listener = Some(listener),
                },
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl<C: Borrow<Context> + Unpin> futures_core::FusedFuture for Done<C> {
    /// True once this future returned `Ready` (polling again would return `Ready`
    /// again; `select!` loops skip it instead).
    fn is_terminated(&self) -> bool {
        self.completed
    }
}

impl<C: Borrow<Context>> fmt::Debug for Done<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field("ctx", self.context())
            .finish_non_exhaustive()
    }
}

/// Blocks the thread until `ctx` is done or `deadline` passes; true if done.
#[cfg(not(all(test, ctx_loom)))]
pub(crate) fn wait_until(ctx: &Context, deadline: Option<Instant>) -> bool {
    let Some(carrier) = ctx.carrier() else {
        if let Some(deadline) = deadline {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        } else {
            loop {
                std::thread::park();
            }
        }
        return false;
    };
    use event_listener::Listener as _;
    loop {
        if ctx.is_done() {
            return true;
        }
        let Some(listener) = listen(carrier) else {
            return true;
        };
        // The timer may be late: never sleep past the context's own deadline, so
        // that the exact-deadline check above gets its turn. The deadline is on the
        // timer's clock (maybe a paused virtual one): convert through the time left.
        let own = ctx
            .remaining()
            .map(|left| crate::context::saturating_add(Instant::now(), left));
        let wake = match (deadline, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match wake {
            None => listener.wait(),
            Some(wake) => {
                if listener.wait_deadline(wake).is_none()
                    && deadline.is_some_and(|d| Instant::now() >= d)
                {
                    return ctx.is_done();
                }
            }
        }
    }
}
