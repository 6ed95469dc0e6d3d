//! [`Group`]: an error group (Go's `errgroup.WithContext`) on smol's global
//! executor.
//!
//! # How it works
//!
//! What a task's outcome means (acceptance, the first failure as the cause,
//! panics, stop) is ctx-core's [`GroupCancel`]; this module spawns, limits and
//! joins. Every task is counted in `running` before it is spawned and uncounted
//! when it ends; `wait` sleeps on an event until the count is 0, then lets the
//! core finish. Under a limit, each task takes a permit from a semaphore before
//! its body is first polled, and holds it until it ends. The semaphore is not
//! fair and the executor first polls new tasks in any order, so queued tasks
//! start in no particular order.
//!
//! # Waiting from inside a task
//!
//! While a task of the group is polled, a thread-local names its `TaskSlot` (and
//! so its group). A `wait` that starts there is an *inner* wait: it counts itself
//! in `inner` and in its slot, and waits until every running task is an inner
//! waiter (`running <= inner`) instead of until none runs. `Finish` notifies
//! whenever the count drops to `inner` or below, an inner waiter when it raises
//! `inner`: both sides store (`SeqCst`), then load the other's count, and a
//! waiter listens before its last check, so either the waiter sees the new
//! count or the other side sees the waiter and notifies. The first inner
//! waiter to return lowers `inner` (and its task runs on), which could leave
//! the others waiting for the rest of its task: so a waiter that returns
//! because every running task waits with it first bumps `settled`, and every
//! inner wait counted before that bump returns too.
//!
//! Under a limit, the tasks queued behind an inner waiter may need its permit
//! (and none can be queued after the wait cancels the group), or every slot
//! holder could wait for them forever. So the permit is *lent*, but only while
//! the task is parked: `launch` polls the body itself, and when a poll returns
//! `Pending` with an inner wait outstanding in the slot, it drops the permit;
//! before it polls the body again it takes a permit back, awaiting one if
//! need be. The body is thus only ever polled with a permit in hand, whether
//! the wait then finishes, is still waiting, or was dropped unfinished (raced
//! against a timer, say). The wait future cannot do this itself: its `Drop`
//! cannot await, and the body runs on at once after dropping it.
//!
//! The shape (names, `new` returning the group and its context, `with_limit`,
//! `PanicError`, `stop`) is the same as ctx-tokio's `Group`.

use ctx_core::adapter::Event;
use ctx_core::adapter::GroupCancel;
use ctx_core::{BoxError, Cause, Context};
use smol::lock::{Semaphore, SemaphoreGuardArc};
use std::cell::RefCell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::PanicError;

/// A group of tasks that share a context; the first failure cancels them all.
///
/// This is Go's `errgroup.WithContext`, with Rust's types: [`Group::new`] returns
/// the group and its context, each task gets that [`Context`] and returns
/// `Result<(), E>` for any `E: Into<BoxError>` (any `std::error::Error`,
/// `anyhow::Error`, `Box<dyn Error + Send + Sync>`, a `String`, or a [`Cause`]
/// itself, which is kept as it is). The first task that returns `Err` (or panics) cancels the
/// group's context with that error as its [cause](Context::cause), and
/// [`wait`](Group::wait) returns that same error.
///
/// * No task is accepted after the group's context is done:
///   [`spawn`](Group::spawn) returns `false` and drops the closure uncalled. A
///   closure that was accepted (`true`) is always called, exactly once, even if
///   the group is canceled before its task gets to run or while it is queued for
///   a slot: it then gets a context that is already done, and should return at
///   once. (The same rule holds in every adapter's group.)
/// * Tasks are not aborted; each should return once its context is done (use
///   [`run_until_done`](crate::run_until_done), [`sleep`](crate::sleep) or
///   `ctx.done()`), as in Go.
/// * A panicking task is caught and reported as an error: a [`PanicError`].
/// * [`stop`](Group::stop) cancels and waits; errors the tasks return because of
///   the stop are not reported.
/// * Dropping the group cancels its context (as dropping a `CancelFunc` does);
///   the tasks are told to stop but not awaited.
/// * [`wait`](Group::wait) and [`stop`](Group::stop) may be called from one of
///   the group's own tasks (through an `Arc<Group>`): a task cannot wait for
///   itself, so they then wait for every *other* task (see
///   [`wait`](Group::wait)).
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
    /// The slots under a [limit](Group::with_limit). Kept here, not in
    /// `Shared`: each task takes its own reference when spawned, so a limit
    /// can be set once every earlier task finished, even while a finished
    /// task's future still holds the shared state for a moment.
    limit: Option<Arc<Semaphore>>,
}

struct Shared {
    /// The group's rules: its context, first failure and stop.
    core: GroupCancel,
    /// Tasks spawned and not yet finished.
    running: AtomicUsize,
    /// Tasks with a wait started inside them and not yet returned (each
    /// counted once, however many such waits it polls).
    inner: AtomicUsize,
    /// How many times an inner wait found every running task waiting with it
    /// (module docs: the first to return lowers `inner`, so the others take
    /// their cue from this instead).
    settled: AtomicUsize,
    /// Notified when `running` drops to `inner` or below, when `inner` grows,
    /// and when `settled` does.
    idle: Event,
    /// Spawned tasks still waiting for their first slot. They are ahead of any
    /// later spawn: while one waits, `try_spawn` refuses and `spawn` queues
    /// too, even if a slot was just given back and the waiting task has not
    /// run yet to take it.
    queued: AtomicUsize,
}

/// One count in `Shared::queued`, given back when its task got its first
/// slot, or was dropped without one.
struct Queued(Arc<Shared>);

impl Queued {
    /// Counts one more task of `shared` waiting for its first slot.
    fn enter(shared: &Arc<Shared>) -> Queued {
        // Relaxed: see `drop`.
        shared.queued.fetch_add(1, Ordering::Relaxed);
        Queued(shared.clone())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Relaxed: a count read by spawners as a hint of who is ahead; the
        // semaphore does the synchronizing.
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a task of the group carries: which group, and its inner waits.
struct TaskSlot {
    /// The group's `Shared`, by address (for comparison only).
    group: usize,
    /// Inner waits started in this task and not yet finished or dropped: while
    /// there is one, a parked task lends its permit (module docs).
    waits: AtomicUsize,
}

thread_local! {
    /// The group task being polled on this thread, if any (module docs).
    static CURRENT_TASK: RefCell<Option<Arc<TaskSlot>>> = const { RefCell::new(None) };
}

impl Group {
    /// A new group and its context: a child of `parent`, canceled by the first
    /// failing task, by [`stop`](Group::stop), or when [`wait`](Group::wait)
    /// returns (as in Go).
    pub fn new(parent: &Context) -> (Group, Context) {
        let (ctx, cancel) = parent.with_cancel_cause();
        let core = GroupCancel::new(cancel);
        let group = Group {
            shared: Arc::new(Shared {
                core,
                running: AtomicUsize::new(0),
                inner: AtomicUsize::new(0),
                settled: AtomicUsize::new(0),
                idle: Event::new(),
                queued: AtomicUsize::new(0),
            }),
            limit: None,
        };
        (group, ctx)
    }

    /// Limits the group to `limit` tasks running at once (Go's `SetLimit`).
    ///
    /// [`spawn`](Group::spawn) never blocks: a task over the limit is queued and
    /// starts when a running one finishes (unless the group is canceled first).
    /// Queued tasks start in no particular order, not necessarily in spawn
    /// order. Use [`try_spawn`](Group::try_spawn) to refuse work instead.
    ///
    /// # Panics
    ///
    /// If `limit` is 0, or if a task spawned before has not finished yet (set
    /// the limit before spawning: tasks that finished already ran unlimited).
    pub fn with_limit(mut self, limit: usize) -> Group {
        assert!(
            limit > 0,
            "ctx_async_std::Group::with_limit: the limit must be at least 1"
        );
        // Acquire: pairs with each task's decrement in `Finish` (as `wait`),
        // though nothing of theirs is read here.
        assert!(
            self.shared.running.load(Ordering::Acquire) == 0,
            "ctx_async_std::Group::with_limit: a task spawned before has not finished yet"
        );
        self.limit = Some(Arc::new(Semaphore::new(limit)));
        self
    }

    /// A slot, if one is free and no spawned task waits for its first one.
    fn try_take(&self) -> Option<SemaphoreGuardArc> {
        // Relaxed: see `Queued`.
        if self.shared.queued.load(Ordering::Relaxed) > 0 {
            return None;
        }
        self.limit.as_ref()?.try_acquire_arc()
    }

    /// The group's context (the one [`new`](Group::new) returned).
    pub fn context(&self) -> &Context {
        self.shared.core.context()
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
    /// Returns `false`, and drops `f` uncalled, if the group's context is already
    /// done. Returns `true` if `f` was accepted: it will be called exactly once,
    /// with the group's context, even if the group is canceled before the task
    /// starts (then that context is already done, and `f` should return at
    /// once). Under a [limit](Group::with_limit) the task waits for a slot first,
    /// also when the group is canceled meanwhile.
    pub fn spawn<F, Fut, E>(&self, f: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if !self.shared.core.accepts() {
            return false;
        }
        // Under a limit, a free slot is taken now, as Go's `Go` takes it
        // before returning (unless a task spawned earlier still waits for
        // one); otherwise `launch` waits for one before the first poll.
        let mut permit = None;
        let mut queued = None;
        if self.limit.is_some() {
            permit = self.try_take();
            if permit.is_none() {
                queued = Some(Queued::enter(&self.shared));
            }
        }
        let shared = self.shared.clone();
        self.launch(permit, queued, async move {
            shared.core.run_async(f).await;
        });
        true
    }

    /// Spawns `f(ctx)` only if it can start at once: the context is live and,
    /// under a limit, a slot is free (Go's `TryGo`). Returns whether it did; as
    /// with [`spawn`](Group::spawn), `true` means `f` will be called. A task
    /// [`spawn`](Group::spawn)ed earlier that still waits for its slot is
    /// ahead: while there is one, this refuses. Without a limit this is
    /// [`spawn`](Group::spawn).
    pub fn try_spawn<F, Fut, E>(&self, f: F) -> bool
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if self.limit.is_none() {
            return self.spawn(f);
        }
        if !self.shared.core.accepts() {
            return false;
        }
        let Some(permit) = self.try_take() else {
            return false;
        };
        let shared = self.shared.clone();
        self.launch(Some(permit), None, async move {
            shared.core.run_async(f).await;
        });
        true
    }

    /// Counts and spawns one task, which names its slot while it is polled and,
    /// under a limit, is only polled holding a permit (`permit`, if it already
    /// has one).
    fn launch(
        &self,
        mut permit: Option<SemaphoreGuardArc>,
        mut queued: Option<Queued>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        // Relaxed: the increment happens-before the spawn, and `wait` only needs
        // the decrements ordered (see there).
        self.shared.running.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let limit = self.limit.clone();
        let slot = Arc::new(TaskSlot {
            group: Arc::as_ptr(&self.shared) as usize,
            waits: AtomicUsize::new(0),
        });
        smol::spawn(async move {
            let _finish = Finish(&shared);
            let mut task = pin!(task);
            // One round per poll of the body, so that the permit can be lent
            // while the task is parked and taken back before it runs again
            // (module docs).
            loop {
                if permit.is_none()
                    && let Some(limit) = &limit
                {
                    permit = Some(limit.acquire_arc().await);
                    // No longer ahead of anyone: it runs.
                    drop(queued.take());
                }
                let polled = poll_fn(|cx| {
                    let _current = CurrentTask::enter(&slot);
                    Poll::Ready(task.as_mut().poll(cx))
                })
                .await;
                if polled.is_ready() {
                    break;
                }
                // Relaxed: this task's own polls (just above) start and end its
                // inner waits. (A wait future moved elsewhere can only make the
                // task lend its permit while parked, never run without one.)
                if slot.waits.load(Ordering::Relaxed) > 0 {
                    // Lent to the tasks queued behind this one.
                    permit = None;
                }
                // The body has arranged its own wake-up, with this task's waker.
                parked().await;
            }
            // The slot is given back before the task is uncounted.
            drop(permit);
        })
        .detach();
    }

    /// Waits for every task, then cancels the group's context (as Go's `Wait`
    /// does) and returns the first error, if any.
    ///
    /// Can be called more than once; each call returns the same result once no
    /// task is left. Afterwards no task can be spawned any more.
    ///
    /// # From inside a task
    ///
    /// Called from one of the group's own tasks (which holds the group in an
    /// `Arc`), `wait` waits for every *other* task (a task cannot wait for its own
    /// end), then cancels the group and returns the first error so far; the
    /// calling task goes on. Under a limit the calling task lends its slot while
    /// it waits, so that tasks queued behind it can run, and takes a slot back
    /// before it runs again: after the wait returns, and also after it is
    /// dropped unfinished (then the task is not polled until it has a slot, and
    /// at most `limit` tasks run at once either way). Two tasks waiting from
    /// inside at once do not wait for each other. "Inside" means polled as part
    /// of the task itself: a `wait` future handed to another task or thread that
    /// the group's task then awaits is not recognized, and waits for that task
    /// too, forever.
    ///
    /// # Errors
    ///
    /// The first task error (or [`PanicError`]), as a [`Cause`]: the same one the
    /// group's context was canceled with.
    ///
    /// # Cancellation safety
    ///
    /// Dropping this future loses nothing: the tasks go on, and `wait` can be
    /// called again. From inside a task under a limit, the slot lent while
    /// waiting is taken back before the task runs on (see above).
    pub async fn wait(&self) -> Result<(), Cause> {
        let shared = &self.shared;
        // Runs at the first poll: inside the calling task, if it is ours.
        let inner = CurrentTask::of(shared).map(|slot| InnerWait::new(shared, slot));
        let finished = || {
            // SeqCst: pairs with the decrement in `Finish` (module docs), and
            // makes every task's effects (and its recorded error) visible.
            let running = shared.running.load(Ordering::SeqCst);
            match &inner {
                None => running == 0,
                Some(wait) => {
                    running <= shared.inner.load(Ordering::SeqCst)
                        // SeqCst: after the loads above, so a waiter that saw
                        // `inner` lowered by one that returned sees the settling
                        // that waiter recorded first.
                        || shared.settled.load(Ordering::SeqCst) != wait.settled
                }
            }
        };
        loop {
            if finished() {
                break;
            }
            let listener = shared.idle.listen();
            // Re-checked after listening, so a notification sent between the first
            // check and `listen` is not missed.
            if finished() {
                break;
            }
            listener.await;
        }
        if let Some(wait) = inner {
            wait.settle();
        }
        shared.core.finish()
    }

    /// Cancels the group's context, then [`wait`](Group::wait)s. Errors the tasks
    /// return after the stop are the stop's doing and are not reported (panics
    /// still are); an error from before the stop is.
    ///
    /// Like `wait`, it may be called from one of the group's own tasks: it then
    /// waits for every other task.
    ///
    /// # Errors
    ///
    /// As [`wait`](Group::wait), counting only failures from before the stop (and
    /// panics).
    pub async fn stop(&self) -> Result<(), Cause> {
        self.shared.core.stop();
        self.wait().await
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shared.core.cancel();
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("ctx", self.context())
            .field("tasks", &self.len())
            .field("limited", &self.limit.is_some())
            .field("first_error", &self.shared.core.first())
            .finish()
    }
}

/// Returns `Pending` once, without arranging a wake-up, then `Ready`: for a
/// task whose body has just returned `Pending`, and so has arranged one.
async fn parked() {
    let mut parked = false;
    poll_fn(|_| {
        if std::mem::replace(&mut parked, true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Names the task being polled on this thread (module docs); restores the
/// previous name when dropped, so nested polls stay right.
struct CurrentTask(Option<Arc<TaskSlot>>);

impl CurrentTask {
    fn enter(slot: &Arc<TaskSlot>) -> CurrentTask {
        CurrentTask(CURRENT_TASK.with(|current| current.replace(Some(slot.clone()))))
    }

    /// The slot of the task being polled, if it is one of `shared`'s.
    fn of(shared: &Shared) -> Option<Arc<TaskSlot>> {
        let group = std::ptr::from_ref(shared) as usize;
        CURRENT_TASK.with(|current| {
            current
                .borrow()
                .as_ref()
                .filter(|slot| slot.group == group)
                .cloned()
        })
    }
}

impl Drop for CurrentTask {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT_TASK.with(|current| *current.borrow_mut() = previous);
    }
}

/// Counts a wait started inside one of the group's tasks, while it waits: in
/// the group (for the waits) and in the task's slot (for its permit).
struct InnerWait<'a> {
    shared: &'a Shared,
    slot: Arc<TaskSlot>,
    /// `Shared::settled` before this wait counted itself: a later settling
    /// counted it, and so finishes it too.
    settled: usize,
}

impl InnerWait<'_> {
    fn new(shared: &Shared, slot: Arc<TaskSlot>) -> InnerWait<'_> {
        // SeqCst, and before the count: a waiter that settles after seeing our
        // count bumps `settled` after this load, so we see the bump.
        let settled = shared.settled.load(Ordering::SeqCst);
        // `inner` counts tasks, not waits: a task polling two waits at once
        // (a `select` of both) is one running task that waits, and counting it
        // twice would let the waits return while another task still runs.
        // Relaxed: the slot's count is read by the same task after this poll
        // (see `launch`), and only decides whether this wait is its first.
        if slot.waits.fetch_add(1, Ordering::Relaxed) == 0 {
            // SeqCst: the waiter's half of the pair with `Finish` (module docs).
            shared.inner.fetch_add(1, Ordering::SeqCst);
            // Other inner waiters may be done now that this task counts as
            // waiting.
            shared.idle.notify_all();
        }
        InnerWait {
            shared,
            slot,
            settled,
        }
    }

    /// This wait is finished and about to return. If it found every running
    /// task waiting with it, that settles every inner wait counted then: they
    /// are told before this one lowers `inner` (which would make them wait for
    /// the rest of this task).
    fn settle(self) {
        let shared = self.shared;
        // SeqCst: loads as in `wait`'s `finished`.
        if shared.running.load(Ordering::SeqCst) <= shared.inner.load(Ordering::SeqCst) {
            // SeqCst: before the decrement in our drop (see `wait`).
            shared.settled.fetch_add(1, Ordering::SeqCst);
            shared.idle.notify_all();
        }
    }
}

impl Drop for InnerWait<'_> {
    fn drop(&mut self) {
        // The task's last wait uncounts it (see `new`).
        if self.slot.waits.fetch_sub(1, Ordering::Relaxed) == 1 {
            // SeqCst: as in `new`. Fewer inner waiters finish nobody's wait.
            self.shared.inner.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Uncounts a task when it ends, however it ends.
struct Finish<'a>(&'a Shared);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        // SeqCst: releases this task's writes to `wait`, and is the finisher's
        // half of the pair with an inner wait (module docs).
        let left = self.0.running.fetch_sub(1, Ordering::SeqCst) - 1;
        if left <= self.0.inner.load(Ordering::SeqCst) {
            self.0.idle.notify_all();
        }
    }
}
