//! Task helpers: run a future until a context is done, sleep, spawn,
//! `after_func` with a spawned callback, and a child canceled when a future
//! completes (the same names and shapes as ctx-tokio's).
//!
//! Everything spawned here goes to smol's global executor (`smol::spawn`), which
//! runs on its own threads (`SMOL_THREADS`, default 1) and so works the same under
//! async-std, under smol, or with a bare `block_on`. The returned futures and
//! handles can be awaited from any executor.

use crate::PanicError;
use ctx_core::{AfterFunc, CancelFunc, Cause, Context, Error};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

/// Runs `fut` until it completes or `ctx` is done, whichever comes first.
///
/// # Errors
///
/// The context's [`Error`] if it is done first.
///
/// Returns `Ok` with the future's output, or `Err` with the context's error once
/// it is done; the future is then dropped without being polled again. At the
/// first poll the context is checked first: a context that is already done
/// never polls `fut`. At every later poll `fut` goes first, so when both are
/// ready at once the future's output wins (as in tokio-util's
/// `run_until_cancelled`; see [which side wins](ctx_core::run_until_done#which-side-wins)).
/// The returned future does not borrow `ctx`.
///
/// # Examples
///
/// ```
/// use ctx_async_std::run_until_done;
/// use ctx_core::Error;
/// use std::time::Duration;
///
/// smol::block_on(async {
///     let (ctx, _cancel) = ctx_async_std::background().with_timeout(Duration::from_millis(20));
///     let never = std::future::pending::<()>();
///     assert_eq!(run_until_done(&ctx, never).await, Err(Error::DeadlineExceeded));
///     let (live, _cancel) = ctx_async_std::background().with_cancel();
///     assert_eq!(run_until_done(&live, async { 7 }).await, Ok(7));
/// });
/// ```
///
/// The same race as ctx-core's [`ctx_core::run_until_done_owned`]; ctx-core's
/// borrowing [`ctx_core::run_until_done`] works on smol (and async-std) as well:
///
/// ```
/// smol::block_on(async {
///     let (ctx, cancel) = ctx_async_std::background().with_cancel();
///     assert_eq!(ctx_core::run_until_done(&ctx, async { 1 }).await, Ok(1));
///     cancel.cancel();
///     let never = std::future::pending::<()>();
///     assert!(ctx_core::run_until_done(&ctx, never).await.is_err());
/// });
/// ```
///
/// # Cancellation safety
///
/// As cancellation safe as `fut` itself: dropping the returned future drops `fut`.
pub fn run_until_done<F: IntoFuture>(
    ctx: &Context,
    fut: F,
) -> impl Future<Output = Result<F::Output, Error>> + use<F> {
    // ctx-core's, which needs no executor; owned, so the future is `'static`.
    ctx_core::run_until_done_owned(ctx.clone(), fut)
}

/// Sleeps for `duration`, or until `ctx` is done.
///
/// Returns `Ok(())` after the full duration, or `Err` with the context's error
/// as soon as it is done (at once if it already is). The context is checked again
/// when the sleep ends, so a sleep that ends at or after the context's deadline
/// reports `DeadlineExceeded` rather than success. The sleep uses async-io's
/// timer, so it works on any executor; `Duration::MAX` sleeps until the context
/// is done.
///
/// # Errors
///
/// The context's [`Error`] if it is done before or when the sleep ends.
///
/// # Examples
///
/// ```
/// use ctx_async_std::sleep;
/// use ctx_core::Error;
/// use std::time::Duration;
///
/// smol::block_on(async {
///     let (ctx, cancel) = ctx_async_std::background().with_cancel();
///     assert_eq!(sleep(&ctx, Duration::from_millis(1)).await, Ok(()));
///     cancel.cancel();
///     assert_eq!(sleep(&ctx, Duration::from_secs(3600)).await, Err(Error::Canceled));
/// });
/// ```
pub fn sleep(ctx: &Context, duration: Duration) -> impl Future<Output = Result<(), Error>> + use<> {
    sleep_on(ctx, async_io::Timer::after(duration))
}

/// Like [`sleep`], until `deadline` (by the system's monotonic clock, which is
/// the clock of [`AsyncIoTimer`](crate::AsyncIoTimer)).
///
/// # Errors
///
/// The context's [`Error`] if it is done before or when the sleep ends.
pub fn sleep_until(
    ctx: &Context,
    deadline: Instant,
) -> impl Future<Output = Result<(), Error>> + use<> {
    sleep_on(ctx, async_io::Timer::at(deadline))
}

fn sleep_on(
    ctx: &Context,
    timer: async_io::Timer,
) -> impl Future<Output = Result<(), Error>> + use<> {
    let ctx = ctx.clone();
    let sleep = run_until_done(&ctx, timer);
    async move {
        sleep.await?;
        ctx.check()
    }
}

/// Spawns `fut` on smol's global executor as a task bound to `ctx`: when `ctx` is
/// done, the task drops `fut` (at its current `.await`) and ends with the
/// context's error. The task reads the context before every poll of `fut`, so
/// once `ctx` is done no more of `fut` runs (as ctx-tokio's `spawn`; unlike
/// [`run_until_done`], where an output ready in the same window wins).
///
/// The returned [`TaskHandle`] resolves to `Ok(output)`, or to a [`TaskError`]:
/// [`TaskError::Done`] with the context's error, or [`TaskError::Panic`] if the
/// task panicked. Dropping the handle detaches the task (as async-std's and
/// tokio's handles do); it still ends when its context is done.
///
/// # Examples
///
/// ```
/// use ctx_core::Error;
///
/// smol::block_on(async {
///     let (ctx, cancel) = ctx_async_std::background().with_cancel();
///     let task = ctx_async_std::spawn(&ctx, std::future::pending::<()>());
///     cancel.cancel();
///     let err = task.await.unwrap_err();
///     assert_eq!(err.context_error(), Some(Error::Canceled));
/// });
/// ```
pub fn spawn<F>(ctx: &Context, fut: F) -> TaskHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let run = ctx_core::adapter::until_done(ctx.clone(), fut);
    let task = smol::spawn(async move {
        Unclaimed(Some(match ctx_core::adapter::catch_task_panic(run).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(err)) => Err(TaskError::Done(err)),
            Err(payload) => Err(TaskError::Panic(PanicError::from_payload(payload))),
        }))
    });
    TaskHandle { task: Some(task) }
}

/// A task's result on its way to its handle. Dropped unclaimed (the handle
/// detached before the task ended, or dropped after), the output's `Drop` is
/// the task's user code: its panic is contained here. Left to the executor,
/// it would run where a panic aborts the process (async-task drops a
/// detached task's output under its abort-on-panic guard).
struct Unclaimed<T>(Option<T>);

impl<T> Drop for Unclaimed<T> {
    fn drop(&mut self) {
        if let Some(result) = self.0.take() {
            ctx_core::adapter::contain_panic(move || drop(result));
        }
    }
}

/// The handle of a task started by [`spawn`]: a future of its result.
///
/// Dropping it detaches the task (it still ends when its context is done).
#[must_use = "dropping a TaskHandle detaches the task (it still ends when its context is done)"]
pub struct TaskHandle<T> {
    /// Always `Some` until dropped.
    task: Option<smol::Task<Unclaimed<Result<T, TaskError>>>>,
}

/// Why a task started by [`spawn`] has no output.
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The context was done first; the task dropped its future. Holds the
    /// context's error.
    Done(Error),
    /// The task panicked.
    Panic(PanicError),
}

impl<T> TaskHandle<T> {
    /// Whether the task has finished (by output, context or panic).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(smol::Task::is_finished)
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let task = self.task.as_mut().expect("TaskHandle polled after drop");
        Pin::new(task)
            .poll(cx)
            .map(|mut result| result.0.take().expect("a task's result is taken once"))
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
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
            TaskError::Panic(_) => None,
        }
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panic(_))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Done(err) => write!(f, "task stopped: {err}"),
            TaskError::Panic(panic) => fmt::Display::fmt(panic, f),
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Done(err) => Some(err),
            TaskError::Panic(panic) => Some(panic),
        }
    }
}

/// Like [`Context::after_func`], but `f` runs as its own task on smol's global
/// executor instead of on ctx-core's runner threads, so it can await.
///
/// `f` is called, and the future it returns awaited, in a new task once `ctx` is
/// done (at once if it already is). [`AfterFunc::stop`] prevents a pending run,
/// and returns true only if it did.
///
/// # Examples
///
/// ```
/// smol::block_on(async {
///     let (ctx, cancel) = ctx_async_std::background().with_cancel();
///     let (tx, rx) = smol::channel::bounded(1);
///     let _registration = ctx_async_std::after_func_spawn(&ctx, move || async move {
///         tx.send("cleaned up").await.unwrap();
///     });
///     cancel.cancel();
///     assert_eq!(rx.recv().await.unwrap(), "cleaned up");
/// });
/// ```
pub fn after_func_spawn<F, Fut>(ctx: &Context, f: F) -> AfterFunc
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    ctx.after_func(move || smol::spawn(ctx_core::adapter::contained_callback(f)).detach())
}

/// Like [`after_func_spawn`] for a blocking callback: `f` runs on smol's blocking
/// thread pool (`smol::unblock`) once `ctx` is done.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
///
/// let (ctx, cancel) = ctx_async_std::background().with_cancel();
/// let (tx, rx) = mpsc::channel();
/// let _registration = ctx_async_std::after_func_spawn_blocking(&ctx, move || {
///     tx.send("flushed to disk").unwrap();
/// });
/// cancel.cancel();
/// assert_eq!(rx.recv().unwrap(), "flushed to disk");
/// ```
pub fn after_func_spawn_blocking<F>(ctx: &Context, f: F) -> AfterFunc
where
    F: FnOnce() + Send + 'static,
{
    // Contained: a detached task's panic is dropped by the executor where a
    // payload whose `Drop` panics would abort the process.
    ctx.after_func(move || {
        smol::unblock(move || {
            ctx_core::adapter::contain_panic(f);
        })
        .detach();
    })
}

/// A child of `parent` that is also canceled when `fut` completes: Go's custom
/// parent contexts, for anything that can be awaited (a shutdown channel, a
/// foreign cancellation signal, a process exit).
///
/// A task on smol's global executor watches `fut`; it ends as soon as either
/// `fut` completes (and cancels the child with [`Error::Canceled`]) or the child
/// is done for another reason (and drops `fut`). If `fut` panics, the panic is
/// caught and the child is canceled with a [`PanicError`] carrying its message as
/// the cause.
///
/// # Examples
///
/// ```
/// smol::block_on(async {
///     let (tx, rx) = smol::channel::bounded::<()>(1);
///     let (ctx, _cancel) = ctx_async_std::with_cancel_on(&ctx_async_std::background(), async move {
///         let _ = rx.recv().await;
///     });
///     drop(tx); // the watched future completes
///     ctx.done().await;
///     assert_eq!(ctx.err(), Some(ctx_core::Error::Canceled));
/// });
/// ```
pub fn with_cancel_on<F>(parent: &Context, fut: F) -> (Context, CancelFunc)
where
    F: Future + Send + 'static,
{
    watch(parent, fut, |_| Cause::from(Error::Canceled))
}

/// Like [`with_cancel_on`], but `fut`'s output becomes the child's
/// [`cause`](Context::cause) (a [`PanicError`] if `fut` panics).
///
/// # Examples
///
/// ```
/// use ctx_core::Cause;
///
/// smol::block_on(async {
///     let (ctx, _cancel) = ctx_async_std::with_cancel_cause_on(&ctx_async_std::background(), async {
///         Cause::msg("config reloaded")
///     });
///     ctx.done().await;
///     assert_eq!(ctx.cause().unwrap().to_string(), "config reloaded");
/// });
/// ```
pub fn with_cancel_cause_on<F>(parent: &Context, fut: F) -> (Context, CancelFunc)
where
    F: Future + Send + 'static,
    F::Output: Into<Cause>,
{
    watch(parent, fut, Into::into)
}

/// The machinery of [`with_cancel_on`]: one node; the user gets its plain
/// [`CancelFunc`], the watcher a cause-capable [`Canceler`](ctx_core::Canceler) on it, which it
/// cancels with the cause `fut` yields.
fn watch<F, M>(parent: &Context, fut: F, into_cause: M) -> (Context, CancelFunc)
where
    F: Future + Send + 'static,
    M: FnOnce(F::Output) -> Cause + Send + 'static,
{
    let (ctx, cancel) = parent.with_cancel_cause();
    smol::spawn(ctx_core::adapter::watch_and_cancel(
        cancel.canceler(),
        fut,
        into_cause,
        "ctx-async-std: the task watching this context was dropped",
    ))
    .detach();
    (ctx, cancel.into_cancel_func())
}
