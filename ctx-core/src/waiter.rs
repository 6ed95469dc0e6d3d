//! Waiting for a context: the [`Done`] future and the blocking waits.
//!
//! Registering a waiter, and the slot or event it sleeps on, are the tree's
//! business (`tree::wait`, which argues why no wake-up is lost); this is the
//! public face. A blocking wait registers a waker that unparks its thread, and
//! parks.

use crate::context::Context;
use crate::tree::wait::Waiter;
use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
#[cfg(not(all(test, ctx_loom)))]
use std::time::{Duration, Instant};

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
    /// The registration with a carrier (which it names), released on completion
    /// and on drop, then `Finished` once this future returned `Ready`. The
    /// carrier is kept in the registration rather than looked up again through
    /// `ctx`: `Borrow` is the caller's code, and one that hands out another
    /// context on a later call must not make this release (or update) a
    /// registration it never made. The context it came from stays alive as
    /// long as `ctx` does (it lent a plain reference to it, and `ctx` is never
    /// handed out mutably), and so does its carrier. Plain data (a carrier and
    /// an index): released by [`Drop`], it has no drop glue of its own.
    waiter: Waiter,
}

impl<C: Borrow<Context>> Done<C> {
    pub(crate) fn new(ctx: C) -> Done<C> {
        Done {
            ctx,
            waiter: Waiter::Idle,
        }
    }

    /// The context this future waits for.
    pub fn context(&self) -> &Context {
        self.ctx.borrow()
    }

    /// Gives up the registration (the waker it keeps) without dropping the
    /// future: for a race whose other side won, so that a later cancel does
    /// not wake a task that is done with this wait. A later poll registers
    /// again.
    pub(crate) fn release(&mut self) {
        self.waiter.release();
    }

    /// Whether this future holds its carrier's waker slot (for tests).
    #[cfg(test)]
    pub(crate) fn holds_slot(&self) -> bool {
        self.waiter.holds_slot()
    }
}

impl<C: Borrow<Context> + Unpin> Future for Done<C> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        if matches!(this.waiter, Waiter::Finished) {
            // Fused: `Ready` for good, whatever `ctx` answers now.
            return Poll::Ready(());
        }
        let ctx: &Context = this.ctx.borrow();
        let Some(carrier) = ctx.carrier() else {
            return Poll::Pending;
        };
        if this
            .waiter
            .carrier()
            .is_some_and(|registered| registered != carrier)
        {
            // Another context than at the last poll (a `Borrow` that changes
            // its answer): leave the old registration, wait on this one.
            this.waiter.release();
        }
        if !ctx.is_done() && this.waiter.poll(carrier, cx.waker()).is_pending() {
            return Poll::Pending;
        }
        this.waiter.release();
        this.waiter = Waiter::Finished;
        Poll::Ready(())
    }
}

impl<C: Borrow<Context>> Drop for Done<C> {
    #[inline]
    fn drop(&mut self) {
        // A `Done` dropped while registered frees the slot or entry for the
        // next waiter (the carrier is still alive here: see `waiter`). Most
        // never registered (a check of a done context): `release` checks that
        // inline and keeps the work out of line.
        self.waiter.release();
    }
}

impl<C: Borrow<Context> + Unpin> futures_core::FusedFuture for Done<C> {
    /// True once this future returned `Ready` (polling again would return `Ready`
    /// again; `select!` loops skip it instead).
    fn is_terminated(&self) -> bool {
        matches!(self.waiter, Waiter::Finished)
    }
}

impl<C: Borrow<Context>> fmt::Debug for Done<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field("ctx", self.context())
            .finish_non_exhaustive()
    }
}

/// How soon a blocking wait reads its context again, at first, when the
/// context's deadline is on a clock other than the system's and that clock
/// stands still ([`wait_until`]).
#[cfg(not(all(test, ctx_loom)))]
const RECHECK_FIRST: Duration = Duration::from_millis(1);

/// The longest a blocking wait goes without reading its context again when
/// the deadline is on a clock other than the system's (which may be moved
/// past the deadline without its timer firing).
#[cfg(not(all(test, ctx_loom)))]
const RECHECK_MAX: Duration = Duration::from_secs(1);

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
    let mut waiter = Blocked(Waiter::Idle);
    let waker = thread_waker();
    let mut recheck = RECHECK_FIRST;
    // The reading of a non-system clock at the last round (see below).
    let mut last_now = None;
    loop {
        if ctx.is_done() || waiter.0.poll(carrier, &waker).is_ready() {
            return true;
        }
        // The timer may be late: never sleep past the context's own deadline, so
        // that the exact-deadline check above gets its turn. On the system's
        // clock that is the time left. Another clock (a paused or manual one)
        // says nothing about how long to sleep: its time left may never pass,
        // or pass at once when it is moved. So the context is read again at
        // least every `RECHECK_MAX`, and, while that clock stands still, no
        // sooner than `recheck`, which doubles at each round that finds it
        // unmoved (a frozen clock costs a few wake-ups, not a spin; one that
        // moves is followed to its deadline).
        let own = carrier.deadline_node().map(|src| {
            let part = src.deadline_part();
            let now = part.timer.now();
            let mut left = part.deadline.saturating_duration_since(now);
            if !part.system_clock {
                recheck = if last_now == Some(now) {
                    (recheck * 2).min(RECHECK_MAX)
                } else {
                    RECHECK_FIRST
                };
                last_now = Some(now);
                left = left.max(recheck).min(RECHECK_MAX);
            }
            crate::context::saturating_add(Instant::now(), left)
        });
        let wake = match (deadline, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Parking may end early (an unpark meant for something else, or none at
        // all): the loop re-checks, and re-polling with the same waker registers
        // nothing new.
        match wake {
            None => std::thread::park(),
            Some(wake) => {
                let now = Instant::now();
                if now < wake {
                    std::thread::park_timeout(wake - now);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return ctx.is_done();
                }
            }
        }
    }
}

/// A blocking wait's registration, released however the wait ends.
#[cfg(not(all(test, ctx_loom)))]
struct Blocked(Waiter);

#[cfg(not(all(test, ctx_loom)))]
impl Drop for Blocked {
    fn drop(&mut self) {
        // The waiting thread's context keeps the carrier alive until it returns.
        self.0.release();
    }
}

/// Unparks a thread: the waker of a blocking wait.
#[cfg(not(all(test, ctx_loom)))]
struct Unparker(std::thread::Thread);

#[cfg(not(all(test, ctx_loom)))]
impl std::task::Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the current thread: one per thread, cloned for each wait
/// (a reference count, no allocation after the thread's first wait).
#[cfg(not(all(test, ctx_loom)))]
fn thread_waker() -> std::task::Waker {
    fn fresh() -> std::task::Waker {
        std::task::Waker::from(std::sync::Arc::new(Unparker(std::thread::current())))
    }
    thread_local! {
        static WAKER: std::task::Waker = fresh();
    }
    // During the thread's teardown the cached waker may be gone already.
    WAKER
        .try_with(std::task::Waker::clone)
        .unwrap_or_else(|_| fresh())
}
