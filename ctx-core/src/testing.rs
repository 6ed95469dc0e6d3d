//! Hooks that let a test force an interleaving inside the tree (feature
//! `test-util`; exempt from semver).

/// Makes the calling thread register every child and callback it creates from
/// now on in shard `k` (modulo the shard count) of its parent's child set.
///
/// A parent's child set is split into shards, and each thread inserts into its
/// own, so registrations of different threads never share a shard's free stack
/// or segments. A test that needs several threads to race inside one shard
/// (growing its segments, recycling its slots) pins them all to the same shard.
/// Where a child lands never changes what it observes.
///
/// # Examples
///
/// ```
/// let (parent, _cancel) = ctx_core::Context::background().with_cancel();
/// ctx_core::testing::pin_child_shard(0);
/// let children: Vec<_> = (0..3).map(|_| parent.with_cancel()).collect();
/// assert_eq!(parent.live_children(), 3);
/// # drop(children);
/// ```
pub fn pin_child_shard(k: usize) {
    crate::tree::child_set::pin_current_shard(k);
}

/// How many `Done` futures and blocking waits are registered on `ctx`'s
/// nearest cancelable context right now (a snapshot; 0 for a context that can
/// never be done). A waiter registers on its first `Pending` poll and leaves
/// when it is dropped or its context is done.
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use std::future::Future;
/// use std::task::{Context as TaskContext, Waker};
///
/// let (ctx, _cancel) = Context::background().with_cancel();
/// let mut done = ctx.done();
/// let poll = std::pin::Pin::new(&mut done).poll(&mut TaskContext::from_waker(Waker::noop()));
/// assert!(poll.is_pending());
/// assert_eq!(ctx_core::testing::waiters(&ctx), 1);
/// drop(done);
/// assert_eq!(ctx_core::testing::waiters(&ctx), 0);
/// ```
#[cfg(not(all(test, ctx_loom)))]
pub fn waiters(ctx: &crate::Context) -> usize {
    ctx.carrier().map_or(0, |carrier| {
        // Done (as recorded: no exact read here), nobody waits any more,
        // whether a waiter was in the slot or on the event, and polled
        // again or not.
        if crate::tree::state::is_done(carrier.state()) {
            0
        } else {
            carrier.cancel_part().waiters.count()
        }
    })
}

thread_local! {
    /// Jobs this thread handed to the runner (no destructor: readable while
    /// the thread's other locals are torn down).
    static HANDED_OVER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many jobs the calling thread has handed to ctx-core's runner threads so
/// far: user code (callbacks, wakers, `Drop`s) and the rest of a walk that
/// ctx-core must not run on the thread where it became due, such as a timer's
/// thread or a thread that only read a context.
///
/// A test reads it before and after an operation to check whether that
/// operation left work to the runner. Other threads' hand-overs do not count.
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, testing::runner_jobs_handed_over};
///
/// let before = runner_jobs_handed_over();
/// let (ctx, cancel) = Context::background().with_cancel();
/// let (child, cancel_child) = ctx.with_cancel();
/// // An explicit cancel does its own work on the caller's thread.
/// cancel_child.cancel();
/// assert!(child.is_done());
/// assert_eq!(runner_jobs_handed_over(), before);
/// // Each `after_func` callback it sets free runs on a runner job of its own.
/// let _first = ctx.after_func(|| {});
/// let _second = ctx.after_func(|| {});
/// cancel.cancel();
/// assert_eq!(runner_jobs_handed_over(), before + 2);
/// ```
pub fn runner_jobs_handed_over() -> usize {
    HANDED_OVER.with(std::cell::Cell::get)
}

/// Counts one job handed to the runner by this thread. (Under loom the runner
/// is a model of its own, which counts nothing.)
#[cfg(not(all(test, ctx_loom)))]
pub(crate) fn count_hand_over() {
    HANDED_OVER.with(|count| count.set(count.get() + 1));
}
