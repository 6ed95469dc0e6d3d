//! When a future or stream raced against its context finishes, whichever side
//! won, it is dropped in the poll that reports it, not when the wrapper goes:
//! a lock guard or a connection it holds is back before the caller sees the
//! result, also when the caller keeps the wrapper (a pinned `&mut` future in
//! a `select!` loop).

use ctx_core::{Context, Error, FutureExt, StreamExt, run_until_done, run_until_done_owned};
use futures_core::{FusedFuture, Stream};
use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

fn cx() -> TaskContext<'static> {
    TaskContext::from_waker(Waker::noop())
}

/// Pending until `ready` is set, then ready with 7; counts its polls and
/// records its drop.
struct Probe {
    ready: Rc<Cell<bool>>,
    polls: Rc<Cell<usize>>,
    dropped: Rc<Cell<bool>>,
}

impl Future for Probe {
    type Output = u32;

    fn poll(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<u32> {
        self.polls.set(self.polls.get() + 1);
        if self.ready.get() {
            Poll::Ready(7)
        } else {
            Poll::Pending
        }
    }
}

impl Stream for Probe {
    type Item = u32;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Option<u32>> {
        self.polls.set(self.polls.get() + 1);
        if self.ready.get() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(1))
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

#[derive(Default)]
struct Cells {
    ready: Rc<Cell<bool>>,
    polls: Rc<Cell<usize>>,
    dropped: Rc<Cell<bool>>,
}

impl Cells {
    fn probe(&self) -> Probe {
        Probe {
            ready: self.ready.clone(),
            polls: self.polls.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

/// `fut` raced against `ctx`, context first at every poll (`until_done`) or
/// only at the first (`run_until_done`).
fn race<F: Future>(
    ctx: &Context,
    fut: F,
    context_first: bool,
) -> Pin<Box<ctx_core::WithContext<F, &Context>>> {
    Box::pin(if context_first {
        ctx_core::adapter::until_done(ctx, fut)
    } else {
        run_until_done(ctx, fut)
    })
}

/// The context wins: the future is gone when the error comes out, and later
/// polls stay pending without polling it, for every entry point.
#[test]
fn a_future_that_loses_is_dropped_in_the_poll_that_reports_the_error() {
    type Raced<'a> = Pin<Box<dyn FusedFuture<Output = Result<u32, Error>> + 'a>>;
    type Make = for<'a> fn(&'a Context, Probe) -> Raced<'a>;
    let entry_points: [(&str, Make); 4] = [
        ("run_until_done", |ctx, p| Box::pin(run_until_done(ctx, p))),
        ("run_until_done_owned", |ctx, p| {
            Box::pin(run_until_done_owned(ctx.clone(), p))
        }),
        ("with_context(&ctx)", |ctx, p| {
            Box::pin(FutureExt::with_context(p, ctx))
        }),
        ("with_context(ctx)", |ctx, p| {
            Box::pin(FutureExt::with_context(p, ctx.clone()))
        }),
    ];
    for (name, make) in entry_points {
        let cells = Cells::default();
        let (ctx, cancel) = Context::background().with_cancel();
        let mut raced = make(&ctx, cells.probe());
        assert!(raced.as_mut().poll(&mut cx()).is_pending(), "{name}");
        assert!(!cells.dropped.get(), "{name}: dropped while it ran");
        cancel.cancel();
        assert_eq!(
            raced.as_mut().poll(&mut cx()),
            Poll::Ready(Err(Error::Canceled)),
            "{name}"
        );
        assert!(cells.dropped.get(), "{name}: kept after it lost");
        assert!(raced.is_terminated(), "{name}");
        let polls = cells.polls.get();
        cells.ready.set(true);
        assert!(raced.as_mut().poll(&mut cx()).is_pending(), "{name}");
        assert_eq!(cells.polls.get(), polls, "{name}: polled after it lost");
    }
}

/// A context done before the first poll: the future is dropped unpolled.
#[test]
fn a_future_raced_against_a_done_context_is_dropped_unpolled() {
    let cells = Cells::default();
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut raced = pin!(run_until_done(&ctx, cells.probe()));
    assert_eq!(
        raced.as_mut().poll(&mut cx()),
        Poll::Ready(Err(Error::Canceled))
    );
    assert!(cells.dropped.get());
    assert_eq!(cells.polls.get(), 0);
}

/// The future wins: it is dropped with its output handed back.
#[test]
fn a_future_that_completes_is_dropped_in_the_poll_that_returns_its_output() {
    let cells = Cells::default();
    let (ctx, _cancel) = Context::background().with_cancel();
    let mut raced = pin!(FutureExt::with_context(cells.probe(), &ctx));
    assert!(raced.as_mut().poll(&mut cx()).is_pending());
    cells.ready.set(true);
    assert_eq!(raced.as_mut().poll(&mut cx()), Poll::Ready(Ok(7)));
    assert!(cells.dropped.get());
    assert!(raced.is_terminated());
    assert!(raced.as_mut().poll(&mut cx()).is_pending());
    assert_eq!(cells.polls.get(), 2);
}

/// A stream is dropped when the context ends it and when it ends itself;
/// every later poll is `Ready(None)`.
#[test]
fn a_stream_is_dropped_when_it_ends_either_way() {
    let cells = Cells::default();
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = pin!(StreamExt::with_context(cells.probe(), &ctx));
    assert_eq!(stream.as_mut().poll_next(&mut cx()), Poll::Ready(Some(1)));
    cancel.cancel();
    assert_eq!(stream.as_mut().poll_next(&mut cx()), Poll::Ready(None));
    assert!(cells.dropped.get(), "kept after the context ended it");
    assert_eq!(stream.as_mut().poll_next(&mut cx()), Poll::Ready(None));
    assert_eq!(cells.polls.get(), 1);

    let cells = Cells::default();
    let (ctx, _cancel) = Context::background().with_cancel();
    let mut stream = pin!(StreamExt::with_context(cells.probe(), &ctx));
    cells.ready.set(true);
    assert_eq!(stream.as_mut().poll_next(&mut cx()), Poll::Ready(None));
    assert!(cells.dropped.get(), "kept after it ended");
    assert_eq!(stream.as_mut().poll_next(&mut cx()), Poll::Ready(None));
    assert_eq!(cells.polls.get(), 1);
}

/// A future whose `Drop` panics as it loses: the panic comes out of that poll,
/// the future is gone (dropped once), and later polls stay pending.
#[test]
fn a_future_whose_drop_panics_as_it_loses_is_dropped_once() {
    struct PanicsOnDrop(Rc<Cell<usize>>);
    impl Future for PanicsOnDrop {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<()> {
            Poll::Pending
        }
    }
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
            panic!("drop of the raced future");
        }
    }
    let drops = Rc::new(Cell::new(0));
    let (ctx, cancel) = Context::background().with_cancel();
    let mut raced = Box::pin(run_until_done(&ctx, PanicsOnDrop(drops.clone())));
    assert!(raced.as_mut().poll(&mut cx()).is_pending());
    cancel.cancel();
    let result = catch_unwind(AssertUnwindSafe(|| raced.as_mut().poll(&mut cx())));
    assert!(result.is_err(), "the drop's panic comes out of the poll");
    assert_eq!(drops.get(), 1);
    assert!(raced.is_terminated());
    assert!(raced.as_mut().poll(&mut cx()).is_pending());
    drop(raced);
    assert_eq!(drops.get(), 1, "dropped twice");
}

/// A waker that counts its wakes.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl CountingWaker {
    /// A counter and a waker that counts into it.
    fn new() -> (std::sync::Arc<CountingWaker>, Waker) {
        let counter = std::sync::Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(counter.clone());
        (counter, waker)
    }
}

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The future wins: the race gives up its registration with the context, so
/// a later cancel wakes nobody (the task is done with this wait), for both
/// biases.
#[test]
fn a_race_the_future_won_wakes_nobody_at_a_later_cancel() {
    for context_first in [false, true] {
        let cells = Cells::default();
        let (ctx, cancel) = Context::background().with_cancel();
        let mut raced = race(&ctx, cells.probe(), context_first);
        let (counter, waker) = CountingWaker::new();
        let mut cx = TaskContext::from_waker(&waker);
        assert!(raced.as_mut().poll(&mut cx).is_pending());
        cells.ready.set(true);
        assert_eq!(raced.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
        cancel.cancel();
        let wakes = counter.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(wakes, 0, "context_first: {context_first}");
        assert_eq!(
            std::sync::Arc::strong_count(&counter),
            2,
            "a clone of the waker is still kept (context_first: {context_first})"
        );
    }
}

/// A stream that ended by itself gives up its registration too.
#[test]
fn a_stream_that_ended_wakes_nobody_at_a_later_cancel() {
    let cells = Cells::default();
    let (ctx, cancel) = Context::background().with_cancel();
    let mut stream = pin!(StreamExt::with_context(cells.probe(), &ctx));
    let (counter, waker) = CountingWaker::new();
    let mut cx = TaskContext::from_waker(&waker);
    assert_eq!(stream.as_mut().poll_next(&mut cx), Poll::Ready(Some(1)));
    cells.ready.set(true);
    assert_eq!(stream.as_mut().poll_next(&mut cx), Poll::Ready(None));
    cancel.cancel();
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(std::sync::Arc::strong_count(&counter), 2);
}

/// A future whose `poll` panics stays in the race: it is dropped once, with
/// the wrapper, after the unwind (a `Drop` that panics too then stays
/// catchable instead of aborting the process), for both biases.
#[test]
fn a_future_whose_poll_panics_is_dropped_with_the_wrapper_not_during_the_unwind() {
    struct PanicsInPoll {
        drops: Rc<Cell<usize>>,
        dropped_while_panicking: Rc<Cell<bool>>,
    }
    impl Future for PanicsInPoll {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<()> {
            panic!("poll of the raced future");
        }
    }
    impl Drop for PanicsInPoll {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
            self.dropped_while_panicking
                .set(self.dropped_while_panicking.get() || std::thread::panicking());
        }
    }
    for context_first in [false, true] {
        let drops = Rc::new(Cell::new(0));
        let dropped_while_panicking = Rc::new(Cell::new(false));
        let fut = PanicsInPoll {
            drops: drops.clone(),
            dropped_while_panicking: dropped_while_panicking.clone(),
        };
        let (ctx, _cancel) = Context::background().with_cancel();
        let mut raced = race(&ctx, fut, context_first);
        let result = catch_unwind(AssertUnwindSafe(|| raced.as_mut().poll(&mut cx())));
        assert!(result.is_err());
        assert_eq!(drops.get(), 0, "dropped during the unwind");
        assert!(!raced.is_terminated());
        drop(raced);
        assert_eq!(drops.get(), 1);
        assert!(!dropped_while_panicking.get());
    }
}

/// A future that completes, whose output and whose own `Drop` both panic as
/// it goes: the future's panic comes out of the poll, and the output is
/// dropped under a guard (during that unwind, its panic would abort).
#[test]
fn a_winning_future_whose_drop_and_output_both_panic_gives_one_panic() {
    struct PanicsOnDrop(&'static str, Rc<Cell<usize>>);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.1.set(self.1.get() + 1);
            panic!("{}", self.0);
        }
    }
    /// Its output, then what it holds until it is dropped.
    struct ReadyThenPanicsOnDrop(Option<PanicsOnDrop>, #[allow(dead_code)] PanicsOnDrop);
    impl Future for ReadyThenPanicsOnDrop {
        type Output = PanicsOnDrop;
        fn poll(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<PanicsOnDrop> {
            Poll::Ready(self.0.take().expect("polled once"))
        }
    }
    for context_first in [false, true] {
        let drops = Rc::new(Cell::new(0));
        let fut = ReadyThenPanicsOnDrop(
            Some(PanicsOnDrop("drop of the output", drops.clone())),
            PanicsOnDrop("drop of the future", drops.clone()),
        );
        let (ctx, _cancel) = Context::background().with_cancel();
        let mut raced = race(&ctx, fut, context_first);
        let result = catch_unwind(AssertUnwindSafe(|| raced.as_mut().poll(&mut cx())));
        let Err(payload) = result else {
            panic!("the future's drop panicked, and the poll did not");
        };
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("drop of the future")
        );
        assert_eq!(drops.get(), 2, "both dropped once");
        assert!(raced.is_terminated());
    }
}
