//! Running futures and tasks under a context: [`run_until_done`], [`sleep`],
//! [`spawn`], [`after_func_spawn`] and [`with_cancel_on`].
//!
//! [`run_until_done`], [`sleep`], [`spawn`] and [`with_cancel_on`] race a
//! future against [`Context::done`]: whichever is ready first wins, and a
//! context that is done already never lets the future start. They differ in
//! which side goes first on later polls:
//!
//! - [`spawn`], [`sleep`] and [`with_cancel_on`]'s watch check the context
//!   before every poll of the future, so once a context is done no more of the
//!   future runs.
//! - [`run_until_done`] polls the future first from its second poll on, so an
//!   output the future has ready wins over a context that ended in the same
//!   window (the bias of tokio-util's `run_until_cancelled`: see
//!   [which side wins](ctx_core::run_until_done#which-side-wins)).
//!
//! Losing the race drops the future at its current `.await`, which is what "the
//! task is canceled" means in async Rust: write the future so that dropping it
//! there is fine (see each function's *Cancellation safety*).
//! [`after_func_spawn`] races nothing: it spawns its future once the context
//! is done.

use ctx_core::adapter::until_done;
use ctx_core::{AfterFunc, CancelFunc, Cause, Context, Error};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::{AbortHandle, JoinError};

/// Runs `fut` until it completes or `ctx` is done, whichever comes first.
///
/// The returned future owns a clone of `ctx` (it does not borrow it), so it can be
/// spawned or stored.
///
/// Returns the future's output, or the context's error (`Canceled` or
/// `DeadlineExceeded`) if the context was done first; a context already done
/// returns its error without polling `fut` at all. After the first poll, `fut`
/// goes first: an output it has ready wins over a context that ended in the
/// same window (see [which side wins](ctx_core::run_until_done#which-side-wins)).
///
/// # Errors
///
/// The context's [`Error`] if it is done before `fut` completes.
///
/// # Cancellation safety
///
/// When the context wins, `fut` is dropped at its current `.await`, in the poll
/// that returns the error (not later, when the returned future goes); any partial
/// work it did (bytes read into its buffer, a message taken off a channel) is lost
/// unless `fut` itself is cancellation safe.
///
/// # Examples
///
/// ```
/// use ctx_core::Error;
/// use std::time::Duration;
///
/// #[tokio::main(flavor = "current_thread", start_paused = true)]
/// async fn main() {
///     let (ctx, _cancel) = ctx_tokio::background().with_timeout(Duration::from_secs(1));
///     let fast = ctx_tokio::run_until_done(&ctx, async { 7 }).await;
///     assert_eq!(fast, Ok(7));
///     let slow = ctx_tokio::run_until_done(&ctx, tokio::time::sleep(Duration::from_secs(5))).await;
///     assert_eq!(slow, Err(Error::DeadlineExceeded));
/// }
/// ```
///
/// The same race as ctx-core's [`ctx_core::run_until_done_owned`]; ctx-core's
/// borrowing [`ctx_core::run_until_done`] works on tokio as well:
///
/// ```
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let (ctx, cancel) = ctx_tokio::background().with_cancel();
///     assert_eq!(ctx_core::run_until_done(&ctx, async { 1 }).await, Ok(1));
///     cancel.cancel();
///     let never = std::future::pending::<()>();
///     assert!(ctx_core::run_until_done(&ctx, never).await.is_err());
/// }
/// ```
pub fn run_until_done<F: IntoFuture>(
    ctx: &Context,
    fut: F,
) -> impl Future<Output = Result<F::Output, Error>> + use<F> {
    // ctx-core's, which needs no executor; owned, so the future is `'static`.
    ctx_core::run_until_done_owned(ctx.clone(), fut)
}

/// Sleeps for `duration` by tokio's clock (counted from this call), or until `ctx`
/// is done.
///
/// Returns `Ok(())` after the full sleep, or the context's error if it was done
/// first. The context is checked again when the sleep ends, so a sleep that ends
/// at or after the context's deadline reports `DeadlineExceeded` rather than a
/// successful sleep.
///
/// # Errors
///
/// The context's [`Error`] if it is done before or when the sleep ends.
///
/// # Panics
///
/// Panics when called outside a tokio runtime, or on a runtime without its
/// time driver (as `tokio::time::sleep` does, which this calls at once).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[tokio::main(flavor = "current_thread", start_paused = true)]
/// async fn main() {
///     let (ctx, cancel) = ctx_tokio::background().with_cancel();
///     assert_eq!(ctx_tokio::sleep(&ctx, Duration::from_secs(1)).await, Ok(()));
///     cancel.cancel();
///     assert!(ctx_tokio::sleep(&ctx, Duration::from_secs(1)).await.is_err());
/// }
/// ```
pub fn sleep(ctx: &Context, duration: Duration) -> impl Future<Output = Result<(), Error>> + use<> {
    warn_on_mixed_clocks(ctx);
    checked_sleep(ctx.clone(), tokio::time::sleep(duration))
}

/// Like [`sleep`], until `deadline` by tokio's clock.
///
/// # Errors
///
/// The context's [`Error`] if it is done before or when the sleep ends.
///
/// # Panics
///
/// Panics when called outside a tokio runtime, or on a runtime without its
/// time driver (as `tokio::time::sleep_until` does, which this calls at once).
pub fn sleep_until(
    ctx: &Context,
    deadline: tokio::time::Instant,
) -> impl Future<Output = Result<(), Error>> + use<> {
    warn_on_mixed_clocks(ctx);
    checked_sleep(ctx.clone(), tokio::time::sleep_until(deadline))
}

/// How far a context's clock and tokio's may drift apart before they count as
/// two clocks (scheduling alone never gets near it).
const CLOCK_SKEW: Duration = Duration::from_millis(50);

/// Whether the mixed-clocks warning was given (once per process).
static MIXED_CLOCKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Two clocks mixed silently give wrong answers: under `tokio::time::pause`, a
/// context from `Context::background()` (ctx-core's real clock) beside a tokio
/// sleep (paused time). When a context with a deadline reads a time more than
/// [`CLOCK_SKEW`] away from tokio's, say so once, through `tracing`.
fn warn_on_mixed_clocks(ctx: &Context) {
    if ctx.deadline().is_none() {
        return;
    }
    let ours = ctx.now();
    let tokio_now = tokio::time::Instant::now().into_std();
    let skew = ours.max(tokio_now) - ours.min(tokio_now);
    if skew > CLOCK_SKEW && MIXED_CLOCKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
        tracing::warn!(
            "ctx-tokio: this context's clock and tokio's differ by {skew:?}: its deadline \
             follows another clock than tokio's sleeps (under tokio::time::pause, derive \
             contexts from ctx_tokio::background(), or install TokioTimer::current() \
             with Context::with_timer)"
        );
    }
}

/// How many times two clocks were found mixed (the warning itself is given once).
#[doc(hidden)]
pub fn __mixed_clock_findings() -> usize {
    MIXED_CLOCKS.load(std::sync::atomic::Ordering::Relaxed)
}

async fn checked_sleep(ctx: Context, sleep: tokio::time::Sleep) -> Result<(), Error> {
    until_done(&ctx, sleep).await?;
    ctx.check()
}

/// Spawns `fut` on the current runtime as a task bound to `ctx`: when `ctx` is
/// done, the task drops `fut` (at its current `.await`) and ends with the
/// context's error.
///
/// The returned [`TaskHandle`] resolves to `Ok(output)`, or to a [`TaskError`]:
/// [`TaskError::Done`] with the context's error, or [`TaskError::Join`] if the
/// task panicked or was aborted. Dropping the handle detaches the task; it still
/// ends when `ctx` is done.
///
/// # Panics
///
/// Panics outside a tokio runtime (as `tokio::spawn` does).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// #[tokio::main(flavor = "current_thread", start_paused = true)]
/// async fn main() {
///     let (ctx, cancel) = ctx_tokio::background().with_cancel();
///     let task = ctx_tokio::spawn(&ctx, async {
///         tokio::time::sleep(Duration::from_secs(3600)).await;
///         "finished"
///     });
///     cancel.cancel();
///     let err = task.await.unwrap_err();
///     assert_eq!(err.context_error(), Some(ctx_core::Error::Canceled));
/// }
/// ```
#[track_caller]
pub fn spawn<F>(ctx: &Context, fut: F) -> TaskHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let run = until_done(ctx.clone(), fut);
    TaskHandle {
        inner: tokio::spawn(async move {
            // The future is dropped after a panic's unwind, not inside it
            // (where tokio's task harness would drop it: a `Drop` that panics
            // too would abort the process); the panic then goes on to tokio,
            // which reports it through the handle as before.
            match ctx_core::adapter::catch_task_panic(run).await {
                Ok(result) => result,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }),
    }
}

/// The handle of a task started by [`spawn`]: a future of its result.
///
/// Dropping it detaches the task (it still ends when its context is done).
#[must_use = "dropping a TaskHandle detaches the task (it still ends when its context is done)"]
pub struct TaskHandle<T> {
    inner: tokio::task::JoinHandle<Result<T, Error>>,
}

/// Why a task started by [`spawn`] has no output.
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The context was done first; the task dropped its future. Holds the
    /// context's error.
    Done(Error),
    /// The task panicked, or was aborted (through [`TaskHandle::abort`] or by its
    /// runtime shutting down): tokio's error, which carries the panic payload
    /// as it is (a payload's `Drop` runs where this error is dropped, as with
    /// `tokio::spawn`; ctx-async-std's `PanicError` keeps only the message).
    Join(JoinError),
}

/// Runs `f` as a task on the current runtime once `ctx` is done (Go's
/// `AfterFunc`, which runs `f` in its own goroutine), unless stopped first.
///
/// ctx-core's [`Context::after_func`] runs its callback on ctx-core's runner
/// threads; this variant only spawns the task there, so the callback runs on
/// the runtime, where it can await. If `ctx` is already done, the task is
/// spawned at once.
/// [`AfterFunc::stop`] prevents a pending spawn. If the runtime has shut down when
/// `ctx` is done, the callback is dropped without running.
///
/// # Paused time
///
/// The spawn happens on ctx-core's runner thread, which tokio knows nothing
/// of, whatever ended the context: a deadline, or a cancel, even one made on
/// the runtime's own thread. Under `tokio::time::pause`, auto-advance does not
/// wait for it: once the runtime's own tasks are idle, the paused clock may
/// jump to the next timer (a later sleep or deadline), and run what waits for
/// it, before the task is spawned. So in paused-time tests the task may run
/// late, after things due later than the context's end. Where that order
/// matters, await the context in a task instead, whose wake-up comes before
/// the cancel returns (or inline from the expiry on the runtime), before
/// auto-advance can move on:
/// `tokio::spawn(async move { ctx.done().await; f().await })` (a `done()` waiter
/// is never late this way).
///
/// # Panics
///
/// Panics outside a tokio runtime (the runtime is captured here, so the cancel
/// may come from any thread).
///
/// # Examples
///
/// ```
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let (ctx, cancel) = ctx_tokio::background().with_cancel();
///     let (tx, rx) = tokio::sync::oneshot::channel();
///     let _registration = ctx_tokio::after_func_spawn(&ctx, move || async move {
///         tx.send("cleaned up").unwrap();
///     });
///     cancel.cancel();
///     assert_eq!(rx.await.unwrap(), "cleaned up");
/// }
/// ```
#[track_caller]
pub fn after_func_spawn<F, Fut>(ctx: &Context, f: F) -> AfterFunc
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Handle::current();
    ctx.after_func(move || drop(handle.spawn(ctx_core::adapter::contained_callback(f))))
}

/// Like [`after_func_spawn`] for a blocking callback: `f` runs on tokio's
/// blocking thread pool (`spawn_blocking`) once `ctx` is done. Under paused
/// time, a deadline's callback may run after the clock moved on: see
/// [`after_func_spawn`'s *Paused time*](after_func_spawn#paused-time).
///
/// A runtime's drop waits for its blocking pool: an `f` that blocks (or runs
/// long) holds up the end of `#[tokio::main]` and of every runtime dropped
/// while it runs. Shut such a runtime down with `shutdown_timeout` or
/// `shutdown_background`, or use ctx-core's
/// [`Context::after_func`](ctx_core::Context::after_func), whose runner
/// threads never hold up the process's exit.
///
/// # Panics
///
/// Panics outside a tokio runtime.
#[track_caller]
pub fn after_func_spawn_blocking<F>(ctx: &Context, f: F) -> AfterFunc
where
    F: FnOnce() + Send + 'static,
{
    let handle = Handle::current();
    ctx.after_func(move || drop(handle.spawn_blocking(f)))
}

/// A child of `parent` that is also canceled when `fut` completes: Go's custom
/// parent contexts, for anything that can be awaited (a shutdown channel, a
/// foreign cancellation token, a process exit).
///
/// A task on the current runtime watches `fut`; it ends as soon as either `fut`
/// completes (and cancels the child with [`Error::Canceled`]) or the child is done
/// for another reason (and drops `fut`). So the child is canceled shortly after
/// `fut` completes: when the runtime runs that task. If `fut` panics, the panic
/// is caught and the child is canceled with a [`PanicError`](ctx_core::PanicError) carrying its
/// message as the cause. If the runtime shuts down first, the child is canceled
/// too (the watch cannot go on), with a cause saying so.
///
/// # Panics
///
/// Panics outside a tokio runtime.
///
/// # Examples
///
/// ```
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let (tx, rx) = tokio::sync::oneshot::channel::<()>();
///     let (ctx, _cancel) = ctx_tokio::with_cancel_on(&ctx_tokio::background(), rx);
///     tx.send(()).unwrap();
///     ctx.done().await;
///     assert_eq!(ctx.err(), Some(ctx_core::Error::Canceled));
/// }
/// ```
#[track_caller]
pub fn with_cancel_on<F>(parent: &Context, fut: F) -> (Context, CancelFunc)
where
    F: Future + Send + 'static,
{
    watch(parent, fut, |_| Cause::from(Error::Canceled))
}

/// Like [`with_cancel_on`], but `fut`'s output becomes the child's
/// [`cause`](Context::cause) (a [`PanicError`](ctx_core::PanicError) if `fut` panics).
///
/// # Panics
///
/// Panics outside a tokio runtime.
#[track_caller]
pub fn with_cancel_cause_on<F>(parent: &Context, fut: F) -> (Context, CancelFunc)
where
    F: Future + Send + 'static,
    F::Output: Into<Cause>,
{
    watch(parent, fut, Into::into)
}

/// The machinery of [`with_cancel_on`]: one node, made with `with_cancel_cause`.
/// The user gets a plain [`CancelFunc`] for it (from the
/// [`CancelCauseFunc`](ctx_core::CancelCauseFunc), `into_cancel_func`); the
/// watcher task holds a [`Canceler`](ctx_core::Canceler) of the same node, with which it cancels
/// with the cause `fut` yields (or, dropped unfired, says that the runtime shut
/// down).
#[track_caller]
pub(crate) fn watch<F, M>(parent: &Context, fut: F, into_cause: M) -> (Context, CancelFunc)
where
    F: Future + Send + 'static,
    M: FnOnce(F::Output) -> Cause + Send + 'static,
{
    let handle = Handle::current();
    // One node: the caller gets a plain cancel function, the watcher a
    // cause-capable handle on the same context.
    let (ctx, cancel) = parent.with_cancel_cause();
    drop(handle.spawn(ctx_core::adapter::watch_and_cancel(
        cancel.canceler(),
        fut,
        into_cause,
        "ctx-tokio: the runtime watching this context shut down",
    )));
    (ctx, cancel.into_cancel_func())
}

// ===== impl TaskHandle =====

impl<T> TaskHandle<T> {
    /// Aborts the task; awaiting the handle then gives [`TaskError::Join`] (unless
    /// it had already finished).
    pub fn abort(&self) {
        self.inner.abort();
    }

    /// Whether the task has finished (by output, context, panic or abort).
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// A handle that can abort the task without owning its result.
    pub fn abort_handle(&self) -> AbortHandle {
        self.inner.abort_handle()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner)
            .poll(cx)
            .map(|joined| match joined {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(err)) => Err(TaskError::Done(err)),
                Err(join) => Err(TaskError::Join(join)),
            })
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.inner.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}

// ===== impl TaskError =====

impl TaskError {
    /// The context's error, if the task ended because its context was done.
    pub fn context_error(&self) -> Option<Error> {
        match self {
            TaskError::Done(err) => Some(*err),
            TaskError::Join(_) => None,
        }
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Join(join) if join.is_panic())
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Done(err) => write!(f, "task stopped: {err}"),
            TaskError::Join(join) => fmt::Display::fmt(join, f),
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Done(err) => Some(err),
            TaskError::Join(join) => Some(join),
        }
    }
}
