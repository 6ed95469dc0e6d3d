//! Hooks that let a test force an interleaving inside the tree, or see which
//! thread ended a context (feature `test-util`; exempt from semver).

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

/// Which thread ends a context, as its waiters see it: a waker registered on
/// the context's [`done()`](crate::Context::done) that reports the name of
/// the thread it is woken on. A cancel wakes the waiters on the thread that
/// runs it (a deadline's on the thread its timer fires on), so this is how a
/// test of a timer backend checks where deadlines fire.
///
/// # Examples
///
/// ```
/// use ctx_core::testing::WakeReport;
/// use std::time::Duration;
///
/// let (ctx, cancel) = ctx_core::Context::background().with_cancel();
/// let report = WakeReport::register(&ctx).expect("the context is live");
/// assert_eq!(report.try_thread_name(), None);
/// std::thread::Builder::new()
///     .name("canceler".into())
///     .spawn(move || cancel.cancel())
///     .unwrap()
///     .join()
///     .unwrap();
/// assert_eq!(
///     report.thread_name(Duration::from_secs(60)),
///     Ok(Some("canceler".to_owned()))
/// );
/// ```
#[cfg(not(all(test, ctx_loom)))]
#[derive(Debug)]
pub struct WakeReport {
    /// Keeps the waker registered.
    _done: crate::Done,
    woken_on: std::sync::mpsc::Receiver<Option<String>>,
}

#[cfg(not(all(test, ctx_loom)))]
impl WakeReport {
    /// Registers the reporting waker on `ctx`; `None` if `ctx` was done
    /// already (nobody will wake it).
    pub fn register(ctx: &crate::Context) -> Option<WakeReport> {
        let (tx, woken_on) = std::sync::mpsc::channel();
        // The first wake reports; later ones find the sender gone.
        let tx = std::sync::Mutex::new(Some(tx));
        let waker = crate::wake_fn::on_wake(move || {
            if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            }
        });
        let (done, pending) = crate::wake_fn::park(ctx, &waker);
        pending.then_some(WakeReport {
            _done: done,
            woken_on,
        })
    }

    /// The name of the thread the waker was woken on (`None` for a thread
    /// without a name), waiting up to `timeout` for the wake.
    pub fn thread_name(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Option<String>, std::sync::mpsc::RecvTimeoutError> {
        self.woken_on.recv_timeout(timeout)
    }

    /// [`thread_name`](Self::thread_name) without waiting: `None` if not
    /// woken yet.
    pub fn try_thread_name(&self) -> Option<Option<String>> {
        self.woken_on.try_recv().ok()
    }
}

/// A deadline context that is still live once a [`WakeReport`] registered on
/// it. `make` derives it with the timeout it is given: 5 ms first, then ten
/// times longer each time the deadline passed before the registration (a
/// machine that stalled the test that long), up to an hour.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let (ctx, _cancel, report) =
///     ctx_core::testing::live_deadline(|timeout| ctx_core::Context::background().with_timeout(timeout));
/// // Fired by ctx-core's own timer thread.
/// assert!(report.thread_name(Duration::from_secs(60)).is_ok());
/// assert!(ctx.is_done());
/// ```
#[cfg(not(all(test, ctx_loom)))]
pub fn live_deadline(
    mut make: impl FnMut(std::time::Duration) -> (crate::Context, crate::CancelFunc),
) -> (crate::Context, crate::CancelFunc, WakeReport) {
    let mut timeout = std::time::Duration::from_millis(5);
    loop {
        let (ctx, cancel) = make(timeout);
        if let Some(report) = WakeReport::register(&ctx) {
            return (ctx, cancel, report);
        }
        assert!(
            timeout < std::time::Duration::from_secs(3600),
            "every deadline passed before its registration"
        );
        timeout *= 10;
    }
}
