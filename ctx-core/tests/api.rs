//! The handle API beyond Go's: a shareable cancel, guards, identity, error
//! conversions, `run_until_done` and the future/stream extension.

mod support;

use ctx_core::{
    Cause, Context, Error, FutureExt, StreamExt, Timer, run_until_done, run_until_done_owned,
};
use futures_core::{FusedFuture, Stream};
use std::collections::HashSet;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, mpsc};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread;
use std::time::Duration;

fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut TaskContext::from_waker(Waker::noop()))
}

fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = poll_once(fut.as_mut()) {
            return out;
        }
        thread::yield_now();
    }
}

#[test]
fn a_canceler_is_shared_by_two_threads_and_the_first_cause_wins() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let (child, _cancel_child) = ctx.with_cancel();
    let canceler = cancel.into_canceler();
    let threads: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|why| {
            let canceler = canceler.clone();
            thread::spawn(move || canceler.cancel_with_cause(Cause::msg(why)))
        })
        .collect();
    let won: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "exactly one cancel wins"
    );
    let cause = ctx.cause().unwrap().to_string();
    assert!(cause == "first" || cause == "second");
    assert_eq!(child.cause().unwrap().to_string(), cause);
    assert!(canceler.is_canceled());
    assert!(!canceler.cancel(), "a later cancel loses");
}

#[test]
fn dropping_a_canceler_does_not_cancel_but_dropping_the_func_does() {
    let (ctx, cancel) = Context::background().with_cancel();
    let canceler = cancel.canceler();
    assert_eq!(canceler, cancel.canceler());
    drop(canceler);
    assert!(!ctx.is_done());
    drop(cancel);
    assert_eq!(ctx.err(), Some(Error::Canceled));

    let (ctx, cancel) = Context::background().with_cancel();
    drop(cancel.into_canceler());
    assert!(!ctx.is_done(), "into_canceler gives up the cancel on drop");
}

#[test]
fn a_drop_guard_cancels_with_its_cause_unless_disarmed() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let canceler = cancel.into_canceler();
    let guard = canceler
        .clone()
        .drop_guard_with_cause(Cause::msg("aborted"));
    assert_eq!(guard.context(), ctx);
    let canceler = guard.disarm();
    assert!(!ctx.is_done());
    drop(canceler.drop_guard());
    assert_eq!(ctx.err(), Some(Error::Canceled));

    let (ctx, cancel) = Context::background().with_cancel_cause();
    drop(
        cancel
            .into_canceler()
            .drop_guard_with_cause(Cause::msg("aborted")),
    );
    assert_eq!(ctx.cause().unwrap().to_string(), "aborted");
}

/// The Go habit `let (ctx, _) = parent.with_timeout(d)` drops the cancel function
/// at once: the context is born canceled (documented). The guard form cannot be
/// misused that way: it is the context.
#[test]
fn the_underscore_trap_and_the_guard_that_designs_it_out() {
    let parent = Context::background();
    let (trapped, _) = parent.with_timeout(Duration::from_secs(60));
    assert_eq!(trapped.err(), Some(Error::Canceled));

    let ctx = parent.with_timeout_guard(Duration::from_secs(60));
    assert_eq!(ctx.err(), None);
    assert!(ctx.deadline().is_some());
    let inner: Context = (*ctx).clone();
    drop(ctx);
    assert_eq!(
        inner.err(),
        Some(Error::Canceled),
        "the guard cancels at the end of its scope"
    );

    let guard = parent.with_cancel_guard();
    let (ctx, cancel) = guard.into_parts();
    assert!(
        !ctx.is_done(),
        "into_parts hands the cancel over without canceling"
    );
    cancel.cancel();
    assert!(ctx.is_done());
}

#[test]
fn contexts_compare_and_hash_by_identity() {
    let (a, _cancel_a) = Context::background().with_cancel();
    let (b, _cancel_b) = Context::background().with_cancel();
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
    assert_eq!(Context::background(), Context::background());
    assert_ne!(Context::background(), Context::todo());
    let set: HashSet<Context> = [a.clone(), a.clone(), b.clone()].into_iter().collect();
    assert_eq!(set.len(), 2);
    assert!(set.contains(&a) && set.contains(&b));
}

#[test]
fn debug_shows_the_time_left_not_an_instant() {
    let ctx = Context::background().with_timeout_guard(Duration::from_secs(3600));
    let text = format!("{:?}", *ctx);
    assert!(text.contains("remaining: Some("), "{text}");
    assert!(!text.contains("Instant"), "{text}");
}

#[test]
fn after_func_with_gets_the_error_and_the_cause() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let (tx, rx) = mpsc::channel();
    let _registration = ctx.after_func_with(move |err, cause| tx.send((err, cause)).unwrap());
    cancel.cancel(Cause::msg("why"));
    let (err, cause) = support::recv_within(&rx, "the callback ran");
    assert_eq!(err, Error::Canceled);
    assert_eq!(cause.to_string(), "why");

    // Already done: started at once (on the runner), with the context's own
    // error and cause.
    let timer = support::ManualTimer::new();
    let (ctx, _cancel) = timer
        .root()
        .with_timeout_cause(Duration::from_secs(1), Cause::msg("slow"));
    timer.advance_silently(Duration::from_secs(1));
    let (tx, rx) = mpsc::channel();
    let registration = ctx.after_func_with(move |err, cause| tx.send((err, cause)).unwrap());
    assert!(!registration.stop(), "claimed by the registration");
    let (err, cause) = support::recv_within(&rx, "the callback on a done context ran");
    assert_eq!(err, Error::DeadlineExceeded);
    assert_eq!(cause.to_string(), "slow");
}

/// A reader that stops with `ctx.check()?`, counting its calls.
struct CheckedReader {
    ctx: Context,
    calls: usize,
}

impl std::io::Read for CheckedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls > 100 {
            // Retried past any reason: end the loop so the test can fail.
            return Ok(0);
        }
        self.ctx.check()?;
        buf[0] = 0;
        Ok(1)
    }
}

/// `std::io` retries `ErrorKind::Interrupted`: a canceled context must not
/// map to it, or `read_exact` over such a reader would never return.
#[test]
fn a_canceled_context_stops_std_io_loops_at_once() {
    use std::io::Read;
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut reader = CheckedReader { ctx, calls: 0 };
    let err = reader.read_exact(&mut [0; 16]).unwrap_err();
    assert_eq!(reader.calls, 1, "read_exact retried the canceled read");
    assert_eq!(
        err.get_ref().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
}

#[test]
fn errors_convert_into_io_and_boxed_errors() {
    let io: std::io::Error = Error::DeadlineExceeded.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(
        io.get_ref().unwrap().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
    let io: std::io::Error = Error::Canceled.into();
    assert_eq!(io.kind(), std::io::ErrorKind::Other);
    assert_eq!(
        io.get_ref().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );

    let boxed: Box<dyn std::error::Error + Send + Sync> = Cause::from(Error::Canceled).into();
    assert_eq!(boxed.downcast_ref::<Error>(), Some(&Error::Canceled));
    let source = std::io::Error::other("disk");
    let boxed: Box<dyn std::error::Error + Send + Sync> = Cause::new(source).into();
    assert_eq!(boxed.to_string(), "disk");
}

#[test]
fn run_until_done_races_a_future_against_the_context() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(block_on(run_until_done(&ctx, async { 1 })), Ok(1));
    assert_eq!(
        block_on(run_until_done_owned(ctx.clone(), async { 2 })),
        Ok(2)
    );
    let mut pending = pin!(run_until_done(&ctx, std::future::pending::<()>()));
    assert!(poll_once(pending.as_mut()).is_pending());
    assert!(!pending.is_terminated());
    cancel.cancel();
    assert_eq!(
        poll_once(pending.as_mut()),
        Poll::Ready(Err(Error::Canceled))
    );
    assert!(pending.is_terminated());
    // A done context wins without polling the future.
    let polled = std::cell::Cell::new(false);
    let fut = std::future::poll_fn(|_| {
        polled.set(true);
        Poll::Ready(())
    });
    assert_eq!(block_on(fut.with_context(&ctx)), Err(Error::Canceled));
    assert!(!polled.get());
}

/// A stream that yields 0, 1, 2, … forever.
struct Counter(u32);

impl Stream for Counter {
    type Item = u32;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Option<u32>> {
        self.0 += 1;
        Poll::Ready(Some(self.0 - 1))
    }
}

#[test]
fn a_stream_with_a_context_ends_when_the_context_is_done() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = pin!(Counter(0).with_context(ctx));
    let mut next = || {
        stream
            .as_mut()
            .poll_next(&mut TaskContext::from_waker(Waker::noop()))
    };
    assert_eq!(next(), Poll::Ready(Some(0)));
    assert_eq!(next(), Poll::Ready(Some(1)));
    cancel.cancel();
    assert_eq!(next(), Poll::Ready(None));
    assert_eq!(next(), Poll::Ready(None), "and stays ended");
}

#[test]
fn done_is_a_fused_future() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut done = ctx.done();
    assert!(!done.is_terminated());
    assert!(poll_once(Pin::new(&mut done)).is_pending());
    cancel.cancel();
    assert!(poll_once(Pin::new(&mut done)).is_ready());
    assert!(done.is_terminated());
}

/// A deadline keeps its timer backend for as long as it lives, also after the
/// `with_timer` context above it is gone: its clock, its disarm and
/// `timer()` below it all reach the same backend, which is released exactly
/// once, when the last context under it goes.
#[test]
fn a_deadline_keeps_its_timer_after_the_with_timer_context_is_dropped() {
    let timer = support::ManualTimer::new();
    let root = timer.root();
    let (ctx, cancel) = root.with_timeout(Duration::from_secs(60));
    let (inner, cancel_inner) = ctx.with_timeout(Duration::from_secs(30));
    drop(root);
    assert_eq!(ctx.now(), timer.now());
    assert_eq!(inner.now(), timer.now());
    let below = inner.with_value(1u8);
    let installed: Arc<dyn Timer> = timer.clone();
    assert!(Arc::ptr_eq(&below.timer(), &installed));
    assert_eq!(timer.armed(), 2);
    timer.advance(Duration::from_secs(30));
    assert_eq!(inner.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.err(), None);
    let disarms = timer.disarms();
    cancel.cancel();
    assert_eq!(timer.disarms(), disarms + 1, "the outer deadline's disarm");
    assert_eq!(timer.armed(), 0);
    drop((installed, below, inner, cancel_inner, ctx));
    assert_eq!(
        Arc::strong_count(&timer),
        1,
        "the backend is released, once"
    );
}
