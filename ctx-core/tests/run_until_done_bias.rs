//! Which side wins when a raced future and its context's end meet in the same
//! window: `run_until_done`, `run_until_done_owned` and
//! `FutureExt::with_context` check the context first only at the first poll;
//! at every later poll the future goes first, so a value it has ready is
//! handed back even if the context is done by then (as tokio-util's
//! `run_until_cancelled` and `with_cancellation_token` do).

mod support;

use ctx_core::{CancelFunc, Context, Error, FutureExt, run_until_done, run_until_done_owned};
use futures_core::FusedFuture;
use std::cell::Cell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::mpsc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;
use support::ManualTimer;

fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut TaskContext::from_waker(Waker::noop()))
}

/// Pending at its first poll, ready with `7` at every later one.
#[derive(Default)]
struct ReadyAtSecondPoll {
    polls: usize,
}

impl Future for ReadyAtSecondPoll {
    type Output = u32;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<u32> {
        self.polls += 1;
        if self.polls == 1 {
            Poll::Pending
        } else {
            Poll::Ready(7)
        }
    }
}

/// A fused future of `Result<T, Error>`, to take the entry points' futures alike.
trait Raced<T>: FusedFuture<Output = Result<T, Error>> {}
impl<T, F: FusedFuture<Output = Result<T, Error>>> Raced<T> for F {}

/// Runs `check` once per entry point (borrowed, owned, and the extension trait
/// borrowing and owning), each time on `make()` raced against a fresh context,
/// with that context's cancel.
fn each_entry_point<F: Future>(
    make: impl Fn() -> F,
    mut check: impl FnMut(&str, CancelFunc, Pin<&mut dyn Raced<F::Output>>),
) {
    let (ctx, cancel) = Context::background().with_cancel();
    check("run_until_done", cancel, pin!(run_until_done(&ctx, make())));
    let (ctx, cancel) = Context::background().with_cancel();
    let owned = run_until_done_owned(ctx, make());
    check("run_until_done_owned", cancel, pin!(owned));
    let (ctx, cancel) = Context::background().with_cancel();
    check(
        "with_context(&ctx)",
        cancel,
        pin!(make().with_context(&ctx)),
    );
    let (ctx, cancel) = Context::background().with_cancel();
    check("with_context(ctx)", cancel, pin!(make().with_context(ctx)));
}

/// A future that became ready while it waited, its context canceled before the
/// next poll: the next poll hands the future's output back.
#[test]
fn a_future_ready_at_the_poll_after_the_cancel_wins() {
    each_entry_point(ReadyAtSecondPoll::default, |name, cancel, mut fut| {
        assert!(poll_once(fut.as_mut()).is_pending(), "{name}");
        assert!(!fut.is_terminated(), "{name}");
        cancel.cancel();
        assert_eq!(poll_once(fut.as_mut()), Poll::Ready(Ok(7)), "{name}");
        assert!(fut.is_terminated(), "{name}");
    });
}

/// A value that arrived on a channel in the same window as the cancel is
/// received, not dropped with the future.
#[test]
fn a_value_received_as_the_context_is_canceled_is_kept() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel::<u32>();
    let receive = std::future::poll_fn(move |_| match rx.try_recv() {
        Ok(value) => Poll::Ready(value),
        Err(_) => Poll::Pending,
    });
    let mut fut = pin!(run_until_done(&ctx, receive));
    assert!(poll_once(fut.as_mut()).is_pending());
    tx.send(5).unwrap();
    cancel.cancel();
    assert_eq!(poll_once(fut.as_mut()), Poll::Ready(Ok(5)));
    assert!(fut.is_terminated());
}

/// A context done before the first poll ends the race at once, without
/// polling the future, even one that would be ready.
#[test]
fn a_context_done_before_the_first_poll_wins_without_polling() {
    let polled = Cell::new(0);
    let ready = || {
        std::future::poll_fn(|_| {
            polled.set(polled.get() + 1);
            Poll::Ready(1)
        })
    };
    each_entry_point(ready, |name, cancel, mut fut| {
        cancel.cancel();
        assert_eq!(
            poll_once(fut.as_mut()),
            Poll::Ready(Err(Error::Canceled)),
            "{name}"
        );
        assert!(fut.is_terminated(), "{name}");
    });
    assert_eq!(polled.get(), 0);
}

/// A future still pending when its context is canceled ends with the
/// context's error, after one more poll of the future.
#[test]
fn a_pending_future_loses_to_a_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let polls = Cell::new(0);
    let never = || {
        std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::<()>::Pending
        })
    };
    let mut fut = pin!(run_until_done(&ctx, never()));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert!(poll_once(fut.as_mut()).is_pending());
    cancel.cancel();
    assert_eq!(poll_once(fut.as_mut()), Poll::Ready(Err(Error::Canceled)));
    assert!(fut.is_terminated());
    assert_eq!(polls.get(), 3, "the future went first at the later polls");
}

/// A deadline that passed with its timer late still ends the wait of a
/// pending future at the next poll: the context is read after the future.
#[test]
fn a_passed_deadline_ends_a_pending_future_although_its_timer_is_late() {
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let mut fut = pin!(run_until_done(&ctx, std::future::pending::<()>()));
    assert!(poll_once(fut.as_mut()).is_pending());
    timer.advance_silently(Duration::from_secs(2));
    assert_eq!(
        poll_once(fut.as_mut()),
        Poll::Ready(Err(Error::DeadlineExceeded))
    );
    assert!(fut.is_terminated());
}

/// The same, when the future becomes ready at that poll: its output wins.
#[test]
fn a_future_ready_after_its_deadline_passed_unnoticed_wins() {
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout(Duration::from_secs(1));
    let mut fut = pin!(ReadyAtSecondPoll::default().with_context(&ctx));
    assert!(poll_once(fut.as_mut()).is_pending());
    timer.advance(Duration::from_secs(2));
    assert!(ctx.is_done());
    assert_eq!(poll_once(fut.as_mut()), Poll::Ready(Ok(7)));
}
