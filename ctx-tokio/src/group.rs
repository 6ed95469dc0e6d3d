//! [`Group`]: an error group in the spirit of Go's `errgroup.WithContext`.
//!
//! The semantics are documented on [`Group`]; the rules themselves (acceptance,
//! the first failure, panics, stop) are ctx-core's [`GroupCancel`], which this
//! type only spawns, limits and joins for.

use ctx_core::adapter::GroupCancel;
use ctx_core::{BoxError, Cause, Context};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::PanicError;

/// The cause recorded for a task that the runtime's shutdown aborted before it
/// finished (see `Group::joined`).
const ABORTED: &str = "ctx-tokio: a group task was aborted: its runtime shut down";

/// A set of tasks working on one job: the first error cancels the rest (Go's
/// `errgroup.WithContext`).
///
/// The group owns a child context created with `with_cancel_cause`. Every task gets
/// a clone of it; the first task to fail cancels it, with its error as the cause,
/// so the siblings see `err() == Some(Canceled)` and `cause()` names the failure.
/// [`Group::wait`] joins every task and returns that first error. Beyond Go:
///
/// * No task is accepted after the group's context is done: [`Group::spawn`]
///   returns `false` and drops the closure uncalled. A closure that was accepted
///   (`true`) is called, exactly once, even if the group is canceled before its
///   task gets to run or while it waits for a slot (under [`Group::with_limit`]):
///   it then gets a context that is already done, and should return at once.
///   Only dropping the group unwaited (which aborts its tasks) or the runtime
///   shutting down can prevent the call. (The same rule holds in every
///   adapter's group.) A task that the runtime's shutdown aborted counts as a
///   failure, since nobody knows how it would have ended: [`Group::wait`]
///   reports it (as "ctx-tokio: a group task was aborted: its runtime shut
///   down") rather than success.
/// * A panic inside a task is caught and becomes the task's error, a
///   [`PanicError`] (so it cancels the group like any other failure), instead of
///   being lost in a detached task.
/// * [`Group::stop`] cancels and waits; errors that tasks return *because of* the
///   stop are not reported.
/// * Dropping a `Group` without waiting cancels its context and aborts its tasks.
///
/// Errors are type-erased into a [`Cause`] (as Go's `error`); get the original
/// back with [`Cause::downcast_ref`].
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Error};
/// use std::io;
/// use std::time::Duration;
///
/// #[tokio::main(flavor = "current_thread", start_paused = true)]
/// async fn main() {
///     let (mut group, ctx) = ctx_tokio::Group::new(&ctx_tokio::background());
///     group.spawn(|ctx| async move {
///         // A worker that runs until the group is canceled.
///         ctx.done().await;
///         Err(ctx.err().unwrap())
///     });
///     group.spawn(|_ctx| async move {
///         tokio::time::sleep(Duration::from_millis(10)).await;
///         Err(io::Error::new(io::ErrorKind::ConnectionReset, "upstream reset"))
///     });
///     let err: Cause = group.wait().await.unwrap_err();
///     assert_eq!(err.to_string(), "upstream reset");
///     assert_eq!(ctx.err(), Some(Error::Canceled));
///     assert!(ctx.cause().unwrap().same(&err));
/// }
/// ```
#[must_use = "dropping a Group cancels its context and aborts its tasks; call `wait`"]
pub struct Group {
    /// The group's rules: its context, first failure and stop.
    core: Arc<GroupCancel>,
    tasks: JoinSet<()>,
    limit: Option<Limit>,
}

/// The slots of a limited group.
struct Limit {
    slots: Arc<Semaphore>,
    /// Spawned tasks still waiting for a slot. They are ahead of any later
    /// spawn: while one waits, [`Group::try_spawn`] refuses, and
    /// [`Group::spawn`] queues behind it, even if a slot was just given back
    /// and the waiting task has not run yet to take it.
    queued: Arc<AtomicUsize>,
}

/// One count in [`Limit::queued`], given back when its task got a slot or
/// was dropped without one (aborted).
struct Queued(Arc<AtomicUsize>);

impl Queued {
    /// Counts one more task waiting for a slot.
    fn enter(queued: &Arc<AtomicUsize>) -> Queued {
        // Relaxed: see `drop`.
        queued.fetch_add(1, Ordering::Relaxed);
        Queued(queued.clone())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Relaxed: a count read by the spawning thread as a hint of who is
        // ahead; the semaphore does the synchronizing.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limit {
    /// A slot, if one is free and no spawned task waits for one.
    fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        // Relaxed: see `Queued`.
        if self.queued.load(Ordering::Relaxed) > 0 {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }
}

// ===== impl Group =====

impl Group {
    /// A new group and its context, a child of `parent` canceled by the first
    /// failing task (or when [`wait`](Group::wait) returns, as in Go).
    pub fn new(parent: &Context) -> (Group, Context) {
        let (ctx, cancel) = parent.with_cancel_cause();
        let core = GroupCancel::new(cancel);
        let group = Group {
            core: Arc::new(core),
            tasks: JoinSet::new(),
            limit: None,
        };
        (group, ctx)
    }

    /// Limits the group to `limit` tasks running at once (Go's `SetLimit`). Tasks
    /// spawned beyond it wait for a slot (also if the group is canceled
    /// meanwhile: they then run with a done context); see also
    /// [`try_spawn`](Group::try_spawn).
    ///
    /// The order in which waiting tasks get their slots is not spawn order in
    /// general: tokio's semaphore serves them in the order they first ran, and
    /// on a multi-thread runtime a worker runs the task it spawned last first
    /// (its LIFO slot), while other workers steal the rest. Do not rely on an
    /// order among the waiting tasks.
    ///
    /// A limit above tokio's [`Semaphore::MAX_PERMITS`] (more tasks than any
    /// group can hold) is taken as that maximum, which is no limit:
    /// `with_limit(usize::MAX)` is accepted, as ctx-async-std's group accepts it.
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0, or if a task spawned before has not finished yet
    /// (Go's `SetLimit` says the limit must not be modified while goroutines
    /// are active; set the limit before spawning: tasks that finished already
    /// ran unlimited).
    pub fn with_limit(mut self, limit: usize) -> Group {
        assert!(
            limit > 0,
            "ctx_tokio::Group::with_limit: the limit must be at least 1"
        );
        // Finished tasks wait in the `JoinSet` until joined: join them first
        // (recording their failures), so that only a running task counts.
        self.reap();
        assert!(
            self.tasks.is_empty(),
            "ctx_tokio::Group::with_limit: a task spawned before has not finished yet"
        );
        self.limit = Some(Limit {
            // tokio's semaphore panics above its maximum; a limit that large
            // never holds a task back anyway.
            slots: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            queued: Arc::new(AtomicUsize::new(0)),
        });
        self
    }

    /// The group's context (the one [`new`](Group::new) returned).
    pub fn context(&self) -> &Context {
        self.core.context()
    }

    /// How many tasks were spawned and not yet joined (finished tasks are joined
    /// as new ones are spawned, by [`with_limit`](Group::with_limit), and by
    /// [`wait`](Group::wait)).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is waiting to be joined.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Spawns `f(ctx)` as a task on the current runtime, with the group's context.
    ///
    /// If the task returns `Err(e)` or panics, and it is the first to fail, the
    /// group's context is canceled with `e` (or a [`PanicError`]) as the cause.
    /// Under a [limit](Group::with_limit) the task takes a free slot at once (as
    /// Go's `Go` does before it returns), or waits for one, behind the tasks
    /// already waiting.
    ///
    /// Returns `false`, and drops `f` without calling it, if the group's context
    /// is already done. Returns `true` if `f` was accepted: it will be called
    /// exactly once, with the group's context, even if the group is canceled
    /// before the task starts (then that context is already done), unless the
    /// group is dropped unwaited or the runtime shuts down first (see
    /// [`Group`]).
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime.
    #[track_caller]
    pub fn spawn<F, Fut, E>(&mut self, f: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if !self.core.accepts() {
            return false;
        }
        let Some(limit) = &self.limit else {
            self.launch(std::future::ready(None), f);
            return true;
        };
        // A free slot is taken now, as Go's `Go` takes it before returning, so
        // that a later `try_spawn` finds it taken; unless a task spawned
        // earlier still waits for one.
        if let Some(permit) = limit.try_take() {
            self.launch(std::future::ready(Some(permit)), f);
            return true;
        }
        let queued = Queued::enter(&limit.queued);
        let slots = limit.slots.clone();
        self.launch(
            async move {
                // The semaphore is never closed, so this always gets a permit.
                let permit = slots.acquire_owned().await.ok();
                drop(queued);
                permit
            },
            f,
        );
        true
    }

    /// Spawns `f(ctx)` only if a slot is free right now and the group's context is
    /// live (Go's `TryGo`); returns whether it did (`true` means what it means
    /// for [`spawn`](Group::spawn)). A task [`spawn`](Group::spawn)ed earlier
    /// that still waits for a slot is ahead: while there is one, this refuses.
    /// Without a limit this is [`spawn`](Group::spawn).
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime.
    #[track_caller]
    pub fn try_spawn<F, Fut, E>(&mut self, f: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let Some(limit) = &self.limit else {
            return self.spawn(f);
        };
        if !self.core.accepts() {
            return false;
        }
        let Some(permit) = limit.try_take() else {
            return false;
        };
        self.launch(std::future::ready(Some(permit)), f);
        true
    }

    /// Spawns an accepted task: it first gets its slot (`slot`), then runs `f`
    /// by the group's rules, holding the slot until it ends.
    #[track_caller]
    fn launch<S, F, Fut, E>(&mut self, slot: S, f: F)
    where
        S: Future<Output = Option<OwnedSemaphorePermit>> + Send + 'static,
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.reap();
        let core = self.core.clone();
        self.tasks.spawn(async move {
            let _permit = slot.await;
            core.run_async(f).await;
        });
    }

    /// Waits for every task, then cancels the group's context (as Go's `Wait`
    /// does) and returns the first error, if any.
    ///
    /// # Errors
    ///
    /// The first task error (or [`PanicError`], or a message saying so for a
    /// task that its runtime's shutdown aborted), as a [`Cause`]: the same one
    /// the group's context was canceled with when that failure is what ended
    /// it. When something else ended the group's context first (its parent,
    /// a deadline), the context keeps that cause, and this is still the first
    /// task error, as Go's `errgroup` returns it.
    ///
    /// # Cancellation safety
    ///
    /// Dropping this future drops the group: its context is canceled and its
    /// remaining tasks are aborted.
    pub async fn wait(mut self) -> Result<(), Cause> {
        while let Some(joined) = self.tasks.join_next().await {
            self.joined(joined);
        }
        self.core.finish()
    }

    /// Cancels the group's context, then [`wait`](Group::wait)s. Errors the tasks
    /// return after the stop are the stop's doing and are not reported (panics
    /// still are); an error from before the stop is.
    ///
    /// # Errors
    ///
    /// As [`wait`](Group::wait), counting only failures from before the stop (and
    /// panics, and tasks aborted by the runtime's shutdown).
    pub async fn stop(self) -> Result<(), Cause> {
        self.core.stop();
        self.wait().await
    }

    /// Joins the tasks that already finished, so a long-lived group holds only
    /// its running tasks.
    fn reap(&mut self) {
        while let Some(joined) = self.tasks.try_join_next() {
            self.joined(joined);
        }
    }

    /// Handles a joined task. Panics are caught inside the task; a `JoinError`
    /// here is a panic from outside the body (recorded as a [`PanicError`]) or
    /// an abort. The group never aborts a task it still joins (only its drop
    /// does, and then nobody joins), so an abort is the runtime's shutdown: the
    /// task may never have run its closure, or was dropped at an `.await`, and
    /// its outcome is unknown. That is a failure, recorded as a panic is (also
    /// after a stop, which does not abort), with [`ABORTED`] as the cause (a
    /// message, as for the watch of `with_cancel_on` that a shutdown ends).
    fn joined(&self, joined: Result<(), tokio::task::JoinError>) {
        let Err(join) = joined else {
            return;
        };
        if join.is_panic() {
            self.core.record_panic(join.into_panic());
        } else {
            // Not a panic: a `JoinError` is then a cancellation.
            self.core.fail(Cause::msg(ABORTED));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Cancel first, so the tasks see the context done; the `JoinSet` then
        // aborts whatever still runs.
        self.core.cancel();
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("ctx", self.context())
            .field("tasks", &self.tasks.len())
            // The slots free now under a limit (`None`: no limit).
            .field(
                "free_slots",
                &self.limit.as_ref().map(|l| l.slots.available_permits()),
            )
            .field("first_error", &self.core.first())
            .finish()
    }
}
