//! [`GroupCancel`]: the rules of an error group (Go's `errgroup.WithContext`), for
//! the adapters' groups to share.
//!
//! An adapter's group spawns, limits and joins its tasks the way its runtime
//! does; everything a task's outcome means is decided here, once: which tasks are
//! accepted, what context a task runs with, which failure is *the* failure, and
//! what waiting for the group returns.

use crate::cancel_funcs::{CancelCauseFunc, Canceler};
use crate::causes::PanicError;
use crate::context::Context;
use crate::error::{BoxError, Cause};
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

/// The shared state and rules of an error group: its context, its first failure,
/// and whether it was stopped.
///
/// The adapters' groups (`ctx_tokio::Group`, `ctx_async_std::Group`,
/// `ctx_blocking::scope`) keep one of these where their tasks can reach it, and
/// only spawn, limit and join; a group for another executor can do the same.
///
/// # The rules
///
/// * **Acceptance.** A task may be accepted while the group's context is live
///   ([`accepts`](GroupCancel::accepts)). An accepted task is run exactly once, with
///   the group's context, even if the group is canceled before it starts (the
///   context it gets is then already done, and it should return at once):
///   [`run`](GroupCancel::run) and [`run_async`](GroupCancel::run_async) never skip
///   the closure.
/// * **The first failure.** A task that returns `Err(e)` or panics fails the
///   group; the first failure cancels the group's context with itself as the
///   [cause](Context::cause) (unless the context was already canceled otherwise),
///   and is what [`finish`](GroupCancel::finish) returns. A panic is caught and
///   becomes a [`PanicError`] carrying its message.
/// * **Stop.** After [`stop`](GroupCancel::stop), errors that tasks return are the
///   stop's doing and are ignored; panics still count, and so does a failure
///   from before the stop. An error that is not reported (after a stop, or after
///   the first failure) is dropped with its panic caught: one there counts as
///   the task's panic.
/// * **Finish.** [`finish`](GroupCancel::finish), called once the adapter has
///   joined its tasks, cancels the group's context (as Go's `Wait` does) and
///   returns the first failure.
///
/// Every method takes `&self` and none blocks, so the core can sit in the state
/// the group's tasks share.
///
/// # Examples
///
/// A group on plain threads, in a few lines:
///
/// ```
/// use ctx_core::adapter::GroupCancel;
/// use ctx_core::{Cause, Context};
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// let group = GroupCancel::new(cancel);
/// std::thread::scope(|s| {
///     for n in 0..4 {
///         let group = &group;
///         if group.accepts() {
///             s.spawn(move || group.run(|ctx| {
///                 if n == 2 {
///                     return Err(Cause::msg("item 2 is bad"));
///                 }
///                 ctx.wait(); // until the failure cancels the group
///                 Ok(())
///             }));
///         }
///     }
/// });
/// let err = group.finish().unwrap_err();
/// assert_eq!(err.to_string(), "item 2 is bad");
/// assert!(ctx.cause().unwrap().same(&err));
/// ```
pub struct GroupCancel {
    ctx: Context,
    /// Cancels `ctx` through `&self`; when any cancel returns (also a losing
    /// one), the context and its subtree are done.
    canceler: Canceler,
    first: OnceLock<Cause>,
    /// Set by `stop`. A `OnceLock`: setting it happens-before every read that
    /// sees it, and a task reads it after the cancel the stop made.
    stopped: OnceLock<()>,
}

impl GroupCancel {
    /// The core of a group whose context is the one `cancel` cancels: make it
    /// with [`with_cancel_cause`](Context::with_cancel_cause), a child of the
    /// context the group works for (Go's `errgroup.WithContext`).
    pub fn new(cancel: CancelCauseFunc) -> GroupCancel {
        GroupCancel {
            ctx: cancel.context(),
            canceler: cancel.into_canceler(),
            first: OnceLock::new(),
            stopped: OnceLock::new(),
        }
    }

    /// The group's context: canceled by the first failure, by
    /// [`stop`](GroupCancel::stop), [`cancel`](GroupCancel::cancel) or
    /// [`finish`](GroupCancel::finish), or with its parent.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Whether a new task may be accepted now: the group's context is live.
    ///
    /// An adapter's `spawn` returns `false` (and drops the closure uncalled) when
    /// this is false; once it accepted a task, it must run it (see the rules).
    pub fn accepts(&self) -> bool {
        !self.ctx.is_done()
    }

    /// Runs one accepted task: calls `f` with the group's context (already done
    /// if the group was canceled since the task was accepted), catches its panic,
    /// and records the outcome by the rules.
    ///
    /// ```
    /// use ctx_core::{Cause, Context, GroupCancel, PanicError};
    ///
    /// let (_ctx, cancel) = Context::background().with_cancel_cause();
    /// let group = GroupCancel::new(cancel);
    /// group.run(|_ctx| -> Result<(), Cause> { panic!("worker {} exploded", 7) });
    /// let err = group.finish().unwrap_err();
    /// assert_eq!(err.downcast_ref::<PanicError>().unwrap().message(), "worker 7 exploded");
    /// ```
    pub fn run<F, E>(&self, f: F)
    where
        F: FnOnce(Context) -> Result<(), E>,
        E: Into<BoxError>,
    {
        let ctx = self.ctx.clone();
        self.record(catch_unwind(AssertUnwindSafe(move || f(ctx))));
    }

    /// Runs one accepted task that is a future: as [`run`](GroupCancel::run), with
    /// `f` called inside the first poll and a panic in any poll caught.
    ///
    /// The returned future is `Send` when `F` and its future are, so an adapter
    /// can spawn it (holding the core in an `Arc`).
    ///
    /// ```
    /// use ctx_core::adapter::GroupCancel;
    /// use ctx_core::{Context, Error};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context as Cx, Poll, Waker};
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Cx::from_waker(Waker::noop())) {
    /// #             return v;
    /// #         }
    /// #     }
    /// # }
    ///
    /// let (_ctx, cancel) = Context::background().with_cancel_cause();
    /// let group = GroupCancel::new(cancel);
    /// group.stop();
    /// // Accepted before the stop: still called, with a done context, and its
    /// // error (the stop's doing) is not reported.
    /// block_on(group.run_async(|ctx| async move { ctx.check() }));
    /// assert!(group.finish().is_ok());
    /// assert_eq!(group.context().err(), Some(Error::Canceled));
    /// ```
    pub async fn run_async<F, Fut, E>(&self, f: F)
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<BoxError>,
    {
        let ctx = self.ctx.clone();
        // No `async` block around the task's future: one would drop it inside
        // the unwind of a panicking poll, where a `Drop` that panics too
        // aborts the process. `catch_task_panic` drops it after, guarded.
        let outcome = match catch_unwind(AssertUnwindSafe(move || f(ctx))) {
            Ok(task) => crate::adapter::catch_task_panic(task).await,
            Err(payload) => Err(payload),
        };
        self.record(outcome);
    }

    /// Records a task's outcome: `Ok(result)` if it returned, `Err(payload)` if
    /// it panicked.
    fn record<E: Into<BoxError>>(&self, outcome: Result<Result<(), E>, Box<dyn Any + Send>>) {
        match outcome {
            Ok(Ok(())) => {}
            // After a stop, errors are its doing (the task saw its context done).
            Ok(Err(err)) if self.is_stopped() => self.discard(err),
            // The conversion is the task's code too (a `From` impl of the
            // user's): a panic in it is the task's panic. Uncaught, it would
            // unwind out of `run` with the group never failed, so its context
            // never canceled and a sibling waiting on it would wait for ever.
            Ok(Err(err)) => match catch_unwind(AssertUnwindSafe(move || err.into())) {
                Ok(boxed) => {
                    self.fail(Cause::from_boxed(boxed));
                }
                Err(payload) => self.record_panic(payload),
            },
            Err(payload) => self.record_panic(payload),
        }
    }

    /// Records a panic caught outside [`run`](GroupCancel::run) (for example one a
    /// runtime reports when the task is joined) as a [`PanicError`] failure.
    pub fn record_panic(&self, payload: Box<dyn Any + Send>) {
        self.fail(PanicError::from_payload(payload));
    }

    /// Records a failure; the first one cancels the group's context with itself
    /// as the cause (unless the context was already canceled otherwise). Returns
    /// whether this was the first failure. Unlike a task's error, this counts
    /// even after [`stop`](GroupCancel::stop).
    ///
    /// ```
    /// use ctx_core::adapter::GroupCancel;
    /// use ctx_core::{Cause, Context};
    ///
    /// let (_ctx, cancel) = Context::background().with_cancel_cause();
    /// let group = GroupCancel::new(cancel);
    /// assert!(group.fail(Cause::msg("first")));
    /// assert!(!group.fail(Cause::msg("second")));
    /// assert_eq!(group.first().unwrap().to_string(), "first");
    /// assert_eq!(group.context().cause().unwrap().to_string(), "first");
    /// ```
    pub fn fail(&self, cause: impl Into<Cause>) -> bool {
        let cause = cause.into();
        if let Err(clone) = self.first.set(cause.clone()) {
            // Not the last reference (that is `cause`, discarded next).
            drop(clone);
            self.discard(cause);
            return false;
        }
        self.cancel_keeping_on(|canceler| canceler.cancel_with_cause(cause));
        true
    }

    /// Runs one of the group's cancels of its context. A cancel runs the `Drop`s
    /// of the values it released last on this thread (each guarded) and
    /// resumes the first one's panic afterwards. That panic is the value's,
    /// reported by the hook already, not the group's: unwinding from here
    /// would take the adapter's worker (a scoped thread, a task) down with the
    /// failure just recorded, cut a stop short before it waited for the tasks
    /// (whose accepted closures would then never run), or replace the result
    /// of [`finish`](GroupCancel::finish). So it is dropped, as every
    /// adapter's group would drop it.
    fn cancel_keeping_on(&self, cancel: impl FnOnce(&Canceler) -> bool) {
        crate::adapter::contain_panic(|| cancel(&self.canceler));
    }

    /// Drops an error the group does not report (returned after a stop, or a
    /// failure after the first). Its `Drop` is the task's code, so a panic in it
    /// is caught and counts as the task's panic, as one in the task itself
    /// would: a [`PanicError`] failure, also after a stop; after a first
    /// failure, it loses to that one and is dropped with it. Uncaught, it would
    /// unwind out of [`run`](GroupCancel::run) into the adapter's worker
    /// (a scoped thread, a spawned task), which reports no such panic.
    ///
    /// Cannot recurse further: the `PanicError` that `record_panic` discards
    /// when it loses holds only its message.
    fn discard<T>(&self, discarded: T) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(discarded))) {
            self.record_panic(payload);
        }
    }

    /// Stops the group: marks it stopped (later task errors are ignored), then
    /// cancels its context. The adapter then waits for its tasks as usual.
    pub fn stop(&self) {
        // Before the cancel: a task that returns because of it sees the mark.
        let _ = self.stopped.set(());
        self.cancel();
    }

    /// Whether [`stop`](GroupCancel::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get().is_some()
    }

    /// Cancels the group's context without a failure (a dropped group, a
    /// panicking body). When it returns, the context and its subtree are done.
    /// A panic of a `Drop` the cancel runs (a value it released last) is
    /// dropped here (the panic hook reported it): it is not the group's, and
    /// neither [`stop`](GroupCancel::stop) nor [`finish`](GroupCancel::finish)
    /// lets it out. (The context's `after_func` callbacks run on ctx-core's
    /// runner, where their panics stay.)
    pub fn cancel(&self) {
        self.cancel_keeping_on(Canceler::cancel);
    }

    /// Ends the group once the adapter has joined its tasks: cancels its context
    /// (as Go's `Wait` does) and returns the first failure. May be called again:
    /// each call returns the first failure recorded by then. That is the same
    /// as before unless a failure came in between, which is then returned (a
    /// task that waited for the others from inside, then failed itself, as
    /// Go's `Wait` called from a goroutine of the group would see it).
    ///
    /// # Errors
    ///
    /// The first failure, as a [`Cause`]: the same one the context was canceled
    /// with (unless it was canceled otherwise first).
    pub fn finish(&self) -> Result<(), Cause> {
        self.cancel();
        self.first().map_or(Ok(()), |cause| Err(cause.clone()))
    }

    /// The first failure, if any.
    pub fn first(&self) -> Option<&Cause> {
        self.first.get()
    }
}

impl fmt::Debug for GroupCancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCancel")
            .field("ctx", &self.ctx)
            .field("first_error", &self.first())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Drop for GroupCancel {
    /// Cancels the group's context, as dropping the [`CancelCauseFunc`] it was
    /// made from would have, except that a callback's panic stays here (see
    /// [`cancel`](GroupCancel::cancel)).
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::GroupCancel;
    use crate::{Cause, Context, PanicError};
    use std::fmt;

    /// An error whose `Drop` panics: user code the group runs when it discards
    /// the error.
    #[derive(Debug)]
    struct PanicsOnDrop;

    impl fmt::Display for PanicsOnDrop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an error whose drop panics")
        }
    }

    impl std::error::Error for PanicsOnDrop {}

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the error's drop panics");
        }
    }

    fn new_group() -> GroupCancel {
        GroupCancel::new(Context::background().with_cancel_cause().1)
    }

    fn panic_message(cause: &Cause) -> &str {
        cause
            .downcast_ref::<PanicError>()
            .unwrap_or_else(|| panic!("not a PanicError: {cause}"))
            .message()
    }

    #[test]
    fn a_callback_panic_in_the_first_failures_cancel_stays_out_of_the_worker() {
        let group = new_group();
        let _registration = group
            .context()
            .after_func(|| panic!("a cleanup callback panics"));
        // Returns: the callback's panic (resumed by the cancel the failure
        // makes) does not unwind into the task's worker.
        group.run(|_ctx| Err(Cause::msg("first")));
        assert_eq!(group.first().unwrap().to_string(), "first");
        assert_eq!(group.finish().unwrap_err().to_string(), "first");
    }

    #[test]
    fn an_error_discarded_after_a_stop_that_panics_on_drop_counts_as_a_panic() {
        let group = new_group();
        group.stop();
        // Returns: the panic does not unwind into the task's worker.
        group.run(|_ctx| Err(PanicsOnDrop));
        let err = group.finish().unwrap_err();
        assert_eq!(panic_message(&err), "the error's drop panics");
    }

    #[test]
    fn a_panic_payload_whose_drop_panics_is_reported_not_resumed() {
        let group = new_group();
        // Returns: dropping the payload (not a string) panics, and that must not
        // unwind out of the group into the task's worker.
        group.run(|_ctx| -> Result<(), Cause> { std::panic::panic_any(PanicsOnDrop) });
        let err = group.finish().unwrap_err();
        assert_eq!(panic_message(&err), "Box<dyn Any>");
    }

    #[test]
    fn a_second_error_that_panics_on_drop_loses_to_the_first() {
        let group = new_group();
        group.run(|_ctx| Err(Cause::msg("first")));
        group.run(|_ctx| Err(PanicsOnDrop));
        assert!(!group.fail(PanicsOnDrop));
        assert_eq!(group.finish().unwrap_err().to_string(), "first");
        assert_eq!(group.context().cause().unwrap().to_string(), "first");
    }
}
