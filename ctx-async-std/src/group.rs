//! [`Group`]: an error group (Go's `errgroup.WithContext`) on smol's global
//! executor.
//!
//! # How it works
//!
//! The group owns a child context made with `with_cancel_cause`. Every task is
//! counted in `running` before it is spawned and uncounted when it ends; `wait`
//! sleeps on an event until the count is 0. The first task to fail stores its
//! cause in a `OnceLock` and cancels the context with it, so the siblings see
//! `err()` and the group's `cause()` is exactly the error `wait` returns. Under a
//! limit, each task first takes a permit from a fair semaphore (raced against the
//! context, so a queued task whose group is canceled never starts).
//!
//! The shape (names, `new` returning the group and its context, `with_limit`,
//! `PanicError`, `stop`) is the same as ctx-tokio's `Group`.

use ctx_core::{Cause, Context, GroupCancel};
use event_listener::Event;
use smol::future::{self, FutureExt as _};
use smol::lock::{Semaphore, SemaphoreGuardArc};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::PanicError;

/// A group of tasks that share a context; the first failure cancels them all.
///
/// This is Go's `errgroup.WithContext`, with Rust's types: [`Group::new`] returns
/// the group and its context, each task gets that [`Context`] and returns
/// `Result<(), E>` for any `E: Into<Cause>` (any `std::error::Error`, or a
/// [`Cause`] itself). The first task that returns `Err` (or panics) cancels the
/// group's context with that error as its [cause](Context::cause), and
/// [`wait`](Group::wait) returns that same error.
///
/// * No task starts after the group's context is done: [`spawn`](Group::spawn)
///   returns `false` and drops the closure, and a task still queued for a slot
///   (under [`with_limit`](Group::with_limit)) never runs.
/// * Tasks are not aborted; each should return once its context is done (use
///   [`run_until_done`](crate::run_until_done), [`sleep`](crate::sleep) or
///   `ctx.done()`), as in Go.
/// * A panicking task is caught and reported as an error: a [`PanicError`].
/// * [`stop`](Group::stop) cancels and waits; errors the tasks return because of
///   the stop are not reported.
/// * Dropping the group cancels its context (as dropping a `CancelFunc` does);
///   the tasks are told to stop but not awaited.
///
/// Tasks run on smol's global executor, whatever executor awaits the group.
///
/// # Examples
///
/// ```
/// use ctx_async_std::{sleep, Group};
/// use ctx_core::{Cause, Error};
/// use std::io;
/// use std::time::Duration;
///
/// smol::block_on(async {
///     let (group, ctx) = Group::new(&ctx_async_std::background());
///     group.spawn(|ctx| async move {
///         sleep(&ctx, Duration::from_secs(3600)).await // canceled by the failure below
///     });
///     group.spawn(|_ctx| async { Err(io::Error::other("disk full")) });
///     let err: Cause = group.wait().await.unwrap_err();
///     assert_eq!(err.to_string(), "disk full");
///     assert_eq!(ctx.err(), Some(Error::Canceled));
///     assert!(ctx.cause().unwrap().same(&err));
/// });
/// ```
#[must_use = "dropping a Group cancels its context at once; call `wait`"]
pub struct Group {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Context,
    cancel: GroupCancel,
    /// Set by `stop`: later task errors are its consequences, not failures.
    stopped: AtomicBool,
    /// Tasks spawned and not yet finished.
    running: AtomicUsize,
    /// Notified when `running` drops to 0.
    idle: Event,
    limit: Option<Arc<Semaphore>>,
}

impl Group {
    /// A new group and its context: a child of `parent`, canceled by the first
    /// failing task, by [`stop`](Group::stop), or when [`wait`](Group::wait)
    /// returns (as in Go).
    pub fn new(parent: &Context) -> (Group, Context) {
        let (ctx, cancel) = parent.with_cancel_cause();
        let group = Group {
            shared: Arc::new(Shared {
                ctx: ctx.clone(),
                cancel: GroupCancel::new(cancel),
                stopped: AtomicBool::new(false),
                running: AtomicUsize::new(0),
                idle: Event::new(),
                limit: None,
            }),
        };
        (group, ctx)
    }

    /// Limits the group to `limit` tasks running at once (Go's `SetLimit`).
    ///
    /// [`spawn`](Group::spawn) never blocks: a task over the limit is queued and
    /// starts, in spawn order, when a running one finishes (unless the group is
    /// canceled first). Use [`try_spawn`](Group::try_spawn) to refuse work instead.
    ///
    /// # Panics
    ///
    /// If `limit` is 0, or if tasks were already spawned.
    pub fn with_limit(mut self, limit: usize) -> Group {
        assert!(
            limit > 0,
            "ctx_async_std::Group::with_limit: the limit must be at least 1"
        );
        let shared = Arc::get_mut(&mut self.shared)
            .expect("ctx_async_std::Group::with_limit: tasks were already spawned");
        shared.limit = Some(Arc::new(Semaphore::new(limit)));
        self
    }

    /// The group's context (the one [`new`](Group::new) returned).
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// How many tasks are spawned and not finished (queued ones included).
    pub fn len(&self) -> usize {
        // Acquire: pairs with the decrement in `Finish` (see `wait`).
        self.shared.running.load(Ordering::Acquire)
    }

    /// Whether every spawned task has finished.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spawns `f(ctx)` as a task of the group.
    ///
    /// Returns `false`, without calling `f`, if the group's context is already
    /// done. Under a [limit](Group::with_limit) the task may be queued first; if
    /// the context is done before its turn comes, `f` is never called.
    pub fn spawn<F, Fut, E>(&self, f: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Cause> + 'static,
    {
        if self.shared.ctx.is_done() {
            return false;
        }
        let shared = self.shared.clone();
        self.launch(async move {
            let _permit = match &shared.limit {
                Some(limit) => match acquire(&shared.ctx, limit).await {
                    Some(permit) => Some(permit),
                    // Canceled while waiting for a slot: never start.
                    None => return,
                },
                None => None,
            };
            shared.run(f).await;
        });
        true
    }

    /// Spawns `f(ctx)` only if it can start at once: the context is live and,
    /// under a limit, a slot is free (Go's `TryGo`). Returns whether it did.
    /// Without a limit this is [`spawn`](Group::spawn).
    pub fn try_spawn<F, Fut, E>(&self, f: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Cause> + 'static,
    {
        let Some(limit) = &self.shared.limit else {
            return self.spawn(f);
        };
        if self.shared.ctx.is_done() {
            return false;
        }
        let Some(permit) = limit.try_acquire_arc() else {
            return false;
        };
        let shared = self.shared.clone();
        self.launch(async move {
            let _permit = permit;
            shared.run(f).await;
        });
        true
    }

    /// Counts and spawns one task.
    fn launch(&self, task: impl Future<Output = ()> + Send + 'static) {
        // Relaxed: the increment happens-before the spawn, and `wait` only needs
        // the decrements ordered (see there).
        self.shared.running.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        smol::spawn(async move {
            let _finish = Finish(&shared);
            task.await;
        })
        .detach();
    }

    /// Waits for every task, then cancels the group's context (as Go's `Wait`
    /// does) and returns the first error, if any.
    ///
    /// Can be called more than once; each call returns the same result once no
    /// task is left. Afterwards no task can be spawned any more.
    ///
    /// # Errors
    ///
    /// The first task error (or [`PanicError`]), as a [`Cause`]: the same one the
    /// group's context was canceled with.
    ///
    /// # Cancellation safety
    ///
    /// Dropping this future loses nothing: the tasks go on, and `wait` can be
    /// called again.
    pub async fn wait(&self) -> Result<(), Cause> {
        let shared = &self.shared;
        loop {
            // Acquire: pairs with the AcqRel decrement in `Finish`, so every task's
            // effects (and its recorded error) are visible once we see 0.
            if shared.running.load(Ordering::Acquire) == 0 {
                break;
            }
            let listener = shared.idle.listen();
            // Re-checked after listening, so a notification sent between the first
            // check and `listen` is not missed.
            if shared.running.load(Ordering::Acquire) == 0 {
                break;
            }
            listener.await;
        }
        shared.cancel.cancel();
        match shared.cancel.first() {
            Some(cause) => Err(cause.clone()),
            None => Ok(()),
        }
    }

    /// Cancels the group's context, then [`wait`](Group::wait)s. Errors the tasks
    /// return after the stop are the stop's doing and are not reported (panics
    /// still are); an error from before the stop is.
    ///
    /// # Errors
    ///
    /// As [`wait`](Group::wait), counting only failures from before the stop (and
    /// panics).
    pub async fn stop(&self) -> Result<(), Cause> {
        // SeqCst: the tasks read it after the cancel made them return.
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.cancel.cancel();
        self.wait().await
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("ctx", &self.shared.ctx)
            .field("tasks", &self.len())
            .field("limited", &self.shared.limit.is_some())
            .field("first_error", &self.shared.cancel.first())
            .finish()
    }
}

// ===== impl Shared =====

impl Shared {
    /// Runs one task body, catching its panic, and records its failure.
    async fn run<F, Fut, E>(&self, f: F)
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Cause>,
    {
        // Checked again here: the group may have been canceled since `spawn`.
        if self.ctx.is_done() {
            return;
        }
        let ctx = self.ctx.clone();
        let result = AssertUnwindSafe(async move { f(ctx).await })
            .catch_unwind()
            .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                // SeqCst: pairs with the store in `stop`.
                if !self.stopped.load(Ordering::SeqCst) {
                    self.fail(err.into());
                }
            }
            Err(payload) => self.fail(Cause::new(PanicError::from_payload(payload))),
        }
    }

    /// Records a failure; the first one cancels the group with it.
    fn fail(&self, cause: Cause) {
        self.cancel.fail(cause);
    }
}

/// Takes a permit, unless the context is done first.
async fn acquire(ctx: &Context, limit: &Arc<Semaphore>) -> Option<SemaphoreGuardArc> {
    let done = async {
        ctx.done().await;
        None
    };
    future::or(done, async { Some(limit.acquire_arc().await) }).await
}

/// Uncounts a task when it ends, however it ends.
struct Finish<'a>(&'a Shared);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        // AcqRel: releases this task's writes to `wait` (see there); acquire so the
        // last task also sees the others' before it notifies.
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}
