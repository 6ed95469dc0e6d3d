//! Support for runtime adapters: the pieces an adapter crate builds its helpers
//! from, so that every runtime follows the same rules.
//!
//! For authors of adapter crates (ctx-tokio, ctx-async-std and ctx-blocking are
//! built on these) and of helpers for runtimes ctx does not cover; application
//! and library code never needs this module. Timer backends have their own
//! module, [`timer`](crate::timer).
//!
//! * [`GroupCancel`]: the whole rule set of an error group (which tasks are
//!   accepted, the first failure as the cause, panics as
//!   [`PanicError`](crate::PanicError), stop, the result); an adapter adds only
//!   spawning, limiting and joining.
//! * [`contain_panic`] and [`drop_panic_payload`]: a panic of user code that
//!   has nobody to go to stops there, its payload's `Drop` guarded too.
//! * [`Event`]: a list of tasks waiting to be told something (a group's
//!   `wait`), whose notify wakes them after its own lock, so that no waker runs
//!   under it.
//! * [`until_done`]: the race of a task bound to a context (the adapters'
//!   `spawn`), which reads the context before every poll of the future; and
//!   [`catch_task_panic`], which runs a task's future to its end and drops
//!   it, catching a panic of either.
//! * [`contained_callback`] and [`watch_and_cancel`]: the tasks of the adapters'
//!   `after_func_spawn` and `with_cancel_on`, with every panic of user code
//!   contained.

pub use crate::group::GroupCancel;

use crate::tree::event::{Event as ListEvent, Listener as ListListener};
use crate::{Context, WithContext};
use std::any::Any;
use std::borrow::Borrow;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// Runs `fut` until it completes or `ctx` is done, reading the context
/// before every poll of `fut`: once the context is done, no more of `fut`
/// runs, and `fut` is dropped (at its current `.await`) in the poll that
/// yields the context's error. A context done already never lets `fut` start.
/// `ctx` is borrowed (`&Context`) or owned, as for
/// [`FutureExt::with_context`](crate::FutureExt::with_context).
///
/// This is the race of a task bound to a context (every adapter's `spawn`).
/// [`run_until_done`](crate::run_until_done) differs from the second poll on:
/// it polls the future first, so an output ready in the same window as the
/// context's end wins there. Everything else is the same
/// [`WithContext`]: the future is dropped in the poll that reports the
/// result, a panic of its `poll` leaves it in place (for the caller to drop,
/// under its own guard), and a finished race stays pending.
///
/// ```
/// use ctx_core::{Context, Error, adapter::until_done};
/// use std::future::Future;
/// use std::pin::pin;
/// use std::task::{Context as Cx, Poll, Waker};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let mut cancel = Some(cancel);
/// // Pending at its first poll (where it cancels its own context), ready
/// // after: the context, read first, wins the second poll.
/// let fut = std::future::poll_fn(move |_| match cancel.take() {
///     Some(cancel) => {
///         cancel.cancel();
///         Poll::Pending
///     }
///     None => Poll::Ready(7),
/// });
/// let mut raced = pin!(until_done(&ctx, fut));
/// let mut cx = Cx::from_waker(Waker::noop());
/// assert!(raced.as_mut().poll(&mut cx).is_pending());
/// assert_eq!(raced.as_mut().poll(&mut cx), Poll::Ready(Err(Error::Canceled)));
/// ```
pub fn until_done<F: IntoFuture, C: Borrow<Context>>(
    ctx: C,
    fut: F,
) -> WithContext<F::IntoFuture, C> {
    WithContext::context_first(fut.into_future(), ctx)
}

/// Runs a task's future to its end, then drops it, catching a panic of
/// either: `Err` with the first panic's payload (a second one, of the drop
/// after a panicking poll, is dropped under a guard).
///
/// The drop is the task's own code too (its locals, its guards), so a panic
/// there is the task's panic, not its awaiter's. And it happens after the
/// poll's unwind, not during it: an executor that drops a panicking task's
/// future inside the unwind turns a `Drop` that panics too into an abort of
/// the process. ctx-tokio's and ctx-async-std's `spawn` run their futures
/// through this.
///
/// ```
/// use ctx_core::adapter::catch_task_panic;
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// assert_eq!(block_on(catch_task_panic(async { 7 })).ok(), Some(7));
/// let failed = block_on(catch_task_panic(async { panic!("a task fails") }));
/// assert!(failed.is_err());
/// ```
pub async fn catch_task_panic<F: Future>(fut: F) -> std::thread::Result<F::Output> {
    let mut fut = std::pin::pin!(Some(fut));
    let polled = std::future::poll_fn(|cx| {
        let running = fut
            .as_mut()
            .as_pin_mut()
            .expect("polled only until it is ready");
        match std::panic::catch_unwind(AssertUnwindSafe(|| running.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await;
    match polled {
        // A panic of the drop comes back here, the output dropped guarded.
        Ok(output) => std::panic::catch_unwind(AssertUnwindSafe(|| {
            drop_then_return(|| fut.set(None), output)
        })),
        Err(first) => {
            if let Err(second) = std::panic::catch_unwind(AssertUnwindSafe(|| fut.set(None))) {
                drop_panic_payload(second);
            }
            Err(first)
        }
    }
}

/// The future an adapter's `after_func_spawn` spawns once the context is
/// done: calls `f` at its first poll, runs `f`'s future to its end, and
/// contains a panic of either (reported by the panic hook, its payload
/// dropped under a guard): a callback that fails has nobody to tell, and an
/// executor would drop a detached task's panic, or its future, where a second
/// panic aborts the process.
///
/// ```
/// use ctx_core::adapter::contained_callback;
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// block_on(contained_callback(|| async { panic!("a callback fails") }));
/// // Still here: the panic went to the hook and stopped with the callback.
/// ```
pub fn contained_callback<F, Fut>(f: F) -> impl Future<Output = ()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let lazy = Lazy::Init(Some(f));
    async move {
        if let Err(payload) = catch_task_panic(lazy).await {
            drop_panic_payload(payload);
        }
    }
}

/// `f()`'s future, made at the first poll: no `async` block owns it (one
/// would drop it inside the unwind of a panicking poll; see
/// [`catch_task_panic`]). Boxed, so that `Lazy` is `Unpin` without a pin
/// projection.
enum Lazy<F, Fut> {
    Init(Option<F>),
    Running(Pin<Box<Fut>>),
}

// `F` is never pinned (it is moved out to be called) and `Fut` is boxed.
impl<F, Fut> Unpin for Lazy<F, Fut> {}

impl<F: FnOnce() -> Fut, Fut: Future> Future for Lazy<F, Fut> {
    type Output = Fut::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Fut::Output> {
        let this = &mut *self;
        if let Lazy::Init(f) = this {
            let f = f
                .take()
                .expect("not polled again after its callback panicked");
            *this = Lazy::Running(Box::pin(f()));
        }
        match this {
            Lazy::Running(fut) => fut.as_mut().poll(cx),
            Lazy::Init(_) => unreachable!("made running above"),
        }
    }
}

/// The watch of an adapter's `with_cancel_on`, as the task to spawn: runs
/// `fut` until it completes or `canceler`'s context is done (the context
/// read first at every poll, as in [`until_done`]), then cancels that
/// context with the cause `into_cause` makes of `fut`'s output, or with a
/// [`PanicError`](crate::PanicError) if `fut` (its `poll` or its `Drop`) or
/// `into_cause` panicked. Dropped unfinished (its executor went away), it
/// cancels with `gone` as the cause.
///
/// ```
/// use ctx_core::adapter::watch_and_cancel;
/// use ctx_core::{Cause, Context};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// let watch = watch_and_cancel(cancel.canceler(), async { "reloaded" }, Cause::msg, "gone");
/// block_on(watch);
/// assert_eq!(ctx.cause().unwrap().to_string(), "reloaded");
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// drop(watch_and_cancel(cancel.canceler(), std::future::pending::<()>(), |()| Cause::msg(""), "the executor went away"));
/// assert_eq!(ctx.cause().unwrap().to_string(), "the executor went away");
/// ```
pub fn watch_and_cancel<F, M>(
    canceler: crate::Canceler,
    fut: F,
    into_cause: M,
    gone: &'static str,
) -> impl Future<Output = ()>
where
    F: Future,
    M: FnOnce(F::Output) -> crate::Cause,
{
    /// Cancels with `gone` when dropped still holding its canceler.
    struct Watcher(Option<crate::Canceler>, &'static str);
    impl Drop for Watcher {
        fn drop(&mut self) {
            if let Some(cancel) = self.0.take() {
                cancel.cancel_with_cause(crate::Cause::msg(self.1));
            }
        }
    }
    let ctx = canceler.context();
    let mut watcher = Watcher(Some(canceler), gone);
    async move {
        // The guard outside the race: a `Drop` of `fut` that panics as the
        // context wins (the race drops `fut` then) is caught too.
        let cause = match catch_task_panic(until_done(ctx, fut)).await {
            Ok(Ok(output)) => std::panic::catch_unwind(AssertUnwindSafe(|| into_cause(output))),
            Ok(Err(_)) => {
                // The context was done first: nothing to cancel (a `Canceler`
                // dropped cancels nothing).
                drop(watcher.0.take());
                return;
            }
            // A panic of `fut`, or of its drop as the context won (then the
            // cancel below changes nothing).
            Err(payload) => Err(payload),
        };
        let cause = cause
            .unwrap_or_else(|payload| crate::Cause::new(crate::PanicError::from_payload(payload)));
        if let Some(cancel) = watcher.0.take() {
            cancel.cancel_with_cause(cause);
        }
    }
}

/// Runs `drop_future` (the drop of a future that just produced `output`),
/// then hands `output` back. If that drop panics, `output` is dropped under a
/// guard before the panic goes on: dropped by the unwind instead, an output
/// whose `Drop` panics too would abort the process. For a future that drops
/// the future it wraps in the poll that returns its output.
///
/// ```
/// let mut inner = Some(String::from("the finished inner future"));
/// let output = ctx_core::adapter::drop_then_return(|| inner = None, 7);
/// assert_eq!((output, inner), (7, None));
/// ```
pub fn drop_then_return<T>(drop_future: impl FnOnce(), output: T) -> T {
    if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(drop_future)) {
        contain_panic(move || drop(output));
        std::panic::resume_unwind(payload);
    }
    output
}

/// Drops the payload of a caught panic without letting a second panic out.
///
/// A payload can be any value (`std::panic::panic_any`), so its `Drop` is user
/// code too: dropped plainly after a `catch_unwind`, one that panics would
/// unwind out of the code that meant to contain the first panic (a timer's
/// thread, a signal watcher, a group). Such a payload is leaked instead, with
/// the second payload.
///
/// ```
/// let caught = std::panic::catch_unwind(|| panic!("a task failed"));
/// ctx_core::adapter::drop_panic_payload(caught.unwrap_err());
/// ```
pub fn drop_panic_payload(payload: Box<dyn Any + Send>) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)));
    if let Err(again) = dropped {
        std::mem::forget(again);
    }
}

/// Runs `f` so that a panic in it goes no further: caught, and dropped with
/// [`drop_panic_payload`]; then `None`. For user code whose panic has nobody
/// to go to once the panic hook has reported it: a cancel run on a timer's or
/// a watcher's thread, a runner job, a cancel whose `after_func` callbacks are
/// not the caller's business. (`f` is taken as unwind safe: what a panic
/// leaves half done is the caller's to consider.)
///
/// ```
/// use ctx_core::adapter::contain_panic;
///
/// assert_eq!(contain_panic(|| 7), Some(7));
/// assert_eq!(contain_panic(|| -> u32 { panic!("a callback fails") }), None);
/// ```
pub fn contain_panic<R>(f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(payload) => {
            drop_panic_payload(payload);
            None
        }
    }
}

/// Tasks waiting to be told something, for an adapter's own waits (a group's
/// `wait`, say): a task [`listen`](Event::listen)s, checks its condition, and
/// awaits the [`Listener`] if it must wait; whoever changes the condition
/// calls [`notify_all`](Event::notify_all).
///
/// Like `event-listener`'s `Event`, with one difference: a notify there wakes
/// the listeners' wakers while it holds its list's lock, where a waker that
/// re-enters the event (a task polled inline that drops a listener of it)
/// deadlocks, and a panicking one stops the notification. This event wakes
/// them after its lock, each guarded (the same list ctx-core's contexts use
/// for their waiters after the first). No waker is ever run under a lock of
/// ours.
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use std::task::{Context, Waker};
///
/// let event = ctx_core::adapter::Event::new();
/// let mut listener = event.listen();
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(std::pin::Pin::new(&mut listener).poll(&mut cx).is_pending());
/// // Every listener made before a notify is notified by it.
/// event.notify_all();
/// assert!(std::pin::Pin::new(&mut listener).poll(&mut cx).is_ready());
/// ```
pub struct Event(ListEvent);

/// A task's place in an [`Event`]'s list: a future that completes once a
/// [`notify_all`](Event::notify_all) that came after its
/// [`listen`](Event::listen) has run. Dropping it leaves the list.
#[must_use = "a listener does nothing unless awaited"]
pub struct Listener(ListListener);

impl Event {
    /// An event with no listener; allocates nothing until the first listens.
    pub fn new() -> Event {
        Event(ListEvent::new())
    }

    /// Joins the list: the listener is notified by every
    /// [`notify_all`](Event::notify_all) from now on. Listen *before* the
    /// last check of the condition, so that a notify between that check and
    /// the wait is not missed.
    pub fn listen(&self) -> Listener {
        Listener(self.0.listen())
    }

    /// Notifies every listener of the moment, then wakes their tasks' wakers,
    /// outside every lock. A waker that panics costs no other its wake-up; the
    /// first such panic is resumed once all were woken (unless the thread is
    /// unwinding already).
    pub fn notify_all(&self) {
        let mut panic = None;
        self.0.notify_all_after_change(&mut panic);
        crate::tree::work::resume(panic);
    }
}

impl Default for Event {
    fn default() -> Event {
        Event::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").finish_non_exhaustive()
    }
}

impl Future for Listener {
    type Output = ();

    /// Ready once notified; otherwise keeps this task's waker for the notify.
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}
