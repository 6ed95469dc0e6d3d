//! The error-group rules, tested once, on [`GroupCancel`]: acceptance and the
//! context an accepted task runs with, the first failure and its cause, panics
//! as `PanicError`s, stop, and what finishing returns.
//!
//! The adapters' groups (`ctx_tokio::Group`, `ctx_async_std::Group`,
//! `ctx_blocking::scope`) delegate every one of these decisions to `GroupCancel`;
//! their own tests check the pass-through and what is theirs (spawning, limits,
//! joining, dropping).

use ctx_core::{Cause, Context, Error, GroupCancel, PanicError};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;

/// A minimal executor: polls `fut` on this thread, parking in between.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut TaskContext::from_waker(&waker)) {
            return output;
        }
        thread::park();
    }
}

/// A group under `parent`, as the adapters make them.
fn new_group_under(parent: &Context) -> GroupCancel {
    GroupCancel::new(parent.with_cancel_cause().1)
}

/// A group under the background context.
fn new_group() -> GroupCancel {
    new_group_under(&Context::background())
}

/// The message of the `PanicError` that finishing `group` returns.
fn panic_message(group: &GroupCancel) -> String {
    let err = group.finish().unwrap_err();
    let panic = err.downcast_ref::<PanicError>();
    panic
        .unwrap_or_else(|| panic!("not a PanicError: {err}"))
        .message()
        .to_owned()
}

/// A future that is pending once (waking itself), then ready: so that what
/// follows it runs in a later poll.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[test]
fn the_first_failure_cancels_the_group_with_itself_as_the_cause() {
    let group = new_group();
    let (failed_tx, failed_rx) = mpsc::channel::<()>();
    let saw = thread::scope(|s| {
        let sibling = s.spawn(|| {
            let mut saw = None;
            group.run(|ctx| {
                ctx.wait();
                saw = Some((ctx.err(), ctx.cause()));
                // Failing *because of* the cancel: not the first failure.
                Err(ctx.err().unwrap())
            });
            saw.unwrap()
        });
        s.spawn(|| {
            group.run(|_ctx| Err(io::Error::other("first")));
            drop(failed_tx);
        });
        let _ = failed_rx.recv();
        group.run(|_ctx| Err(Cause::msg("second")));
        sibling.join().unwrap()
    });
    let err = group.finish().unwrap_err();
    assert_eq!(err.to_string(), "first");
    assert!(
        err.downcast_ref::<io::Error>().is_some(),
        "the original error is kept"
    );
    let (sibling_err, sibling_cause) = saw;
    assert_eq!(sibling_err, Some(Error::Canceled));
    assert!(
        sibling_cause.unwrap().same(&err),
        "the siblings see the failure as the cause"
    );
    assert!(group.context().cause().unwrap().same(&err));
    assert!(group.first().unwrap().same(&err));
}

#[test]
fn many_failures_at_once_have_exactly_one_first() {
    const THREADS: usize = 8;
    for _ in 0..50 {
        let group = new_group();
        let barrier = Barrier::new(THREADS);
        thread::scope(|s| {
            for n in 0..THREADS {
                let (group, barrier) = (&group, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    group.run(|_ctx| Err(Cause::msg(format!("worker {n}"))));
                });
            }
        });
        let err = group.finish().unwrap_err();
        assert!(err.to_string().starts_with("worker "), "{err}");
        assert!(group.context().cause().unwrap().same(&err));
        assert!(!group.fail(Cause::msg("late")), "there is only one first");
    }
}

#[test]
fn a_panic_becomes_a_panic_error_with_its_message() {
    let group = new_group();
    group.run(|_ctx| -> Result<(), Cause> { panic!("worker {} exploded", 7) });
    let err = group.finish().unwrap_err();
    let panic = err.downcast_ref::<PanicError>().expect("a PanicError");
    assert_eq!(panic.message(), "worker 7 exploded");
    assert_eq!(err.to_string(), "task panicked: worker 7 exploded");
    assert!(group.context().cause().unwrap().same(&err));

    // A payload that is not a string is still reported.
    let group = new_group();
    group.run(|_ctx| -> Result<(), Cause> { std::panic::panic_any(42_u32) });
    assert_eq!(panic_message(&group), "Box<dyn Any>");
}

#[test]
fn run_async_catches_panics_in_the_closure_and_in_any_poll() {
    let group = new_group();
    block_on(
        group.run_async(|_ctx| -> std::future::Ready<Result<(), Cause>> {
            panic!("in the closure")
        }),
    );
    assert_eq!(panic_message(&group), "in the closure");

    let group = new_group();
    block_on(group.run_async(|_ctx| async {
        yield_once().await;
        if Arc::new(1).as_ref() == &1 {
            panic!("in a later poll");
        }
        Ok::<(), Cause>(())
    }));
    assert_eq!(panic_message(&group), "in a later poll");
}

/// An error whose conversion into a `BoxError` panics: user code the group
/// runs after the task returned.
#[derive(Debug)]
struct PanicsWhenBoxed;

impl From<PanicsWhenBoxed> for ctx_core::BoxError {
    fn from(_: PanicsWhenBoxed) -> Self {
        panic!("the conversion panics")
    }
}

/// A panic in the conversion of a task's error is the task's panic: a
/// `PanicError` failure that cancels the group's context (a sibling waiting on
/// it is released), in `run` and in `run_async`; nothing unwinds out of either.
#[test]
fn a_panicking_error_conversion_is_the_tasks_panic() {
    let group = new_group();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        group.run(|_ctx| Err(PanicsWhenBoxed));
    }));
    assert!(ran.is_ok(), "the conversion's panic escaped run");
    assert_eq!(group.context().err(), Some(Error::Canceled));
    assert_eq!(panic_message(&group), "the conversion panics");

    let group = new_group();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(group.run_async(|_ctx| async {
            yield_once().await;
            Err(PanicsWhenBoxed)
        }));
    }));
    assert!(ran.is_ok(), "the conversion's panic escaped run_async");
    assert_eq!(group.context().err(), Some(Error::Canceled));
    assert_eq!(panic_message(&group), "the conversion panics");
}

#[test]
fn tasks_may_fail_with_any_error_type_in_run_and_run_async() {
    let group = new_group();
    block_on(group.run_async(|_ctx| async {
        yield_once().await;
        Err(io::Error::other("async failure"))
    }));
    assert_eq!(group.context().err(), Some(Error::Canceled));
    group.run(|ctx| Err(ctx.err().unwrap()));
    group.run(|_ctx| Err(Cause::msg("a cause")));
    let err = group.finish().unwrap_err();
    let io = err.downcast_ref::<io::Error>();
    assert_eq!(
        io.unwrap().to_string(),
        "async failure",
        "the original error is kept"
    );
}

#[test]
fn an_accepted_task_runs_exactly_once_even_after_cancel_with_a_done_context() {
    let group = new_group();
    assert!(group.accepts());
    group.cancel();
    assert!(
        !group.accepts(),
        "nothing new is accepted once the context is done"
    );
    // A task accepted before the cancel is still run, with the done context.
    let calls = AtomicUsize::new(0);
    let mut seen = None;
    group.run(|ctx| {
        calls.fetch_add(1, Ordering::SeqCst);
        seen = ctx.err();
        ctx.check()
    });
    block_on(group.run_async(|ctx| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { ctx.check() }
    }));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(seen, Some(Error::Canceled));
    // Their `Canceled` errors are failures (there was no stop): the first is reported.
    assert_eq!(group.finish().unwrap_err(), Error::Canceled);
}

#[test]
fn nothing_is_accepted_after_a_failure_a_stop_a_finish_or_the_parent_cancel() {
    let group = new_group();
    group.run(|_ctx| Err(Cause::msg("boom")));
    assert!(!group.accepts());

    let group = new_group();
    group.stop();
    assert!(!group.accepts());

    let group = new_group();
    assert!(group.finish().is_ok());
    assert!(!group.accepts());

    let (parent, cancel_parent) = Context::background().with_cancel();
    let group = new_group_under(&parent);
    assert!(group.accepts());
    cancel_parent.cancel();
    assert!(!group.accepts());
}

#[test]
fn after_a_stop_errors_are_ignored_but_panics_and_earlier_failures_count() {
    // Errors after the stop are its doing.
    let group = new_group();
    assert!(!group.is_stopped());
    group.stop();
    assert!(group.is_stopped());
    assert_eq!(group.context().err(), Some(Error::Canceled));
    group.run(|ctx| ctx.check());
    group.run(|_ctx| Err(Cause::msg("also ignored")));
    assert!(group.first().is_none());
    assert!(group.finish().is_ok());

    // A panic after the stop still counts; the context's cause stays the stop's.
    group.run(|_ctx| -> Result<(), Cause> { panic!("after the stop") });
    assert_eq!(panic_message(&group), "after the stop");
    let cause = group.context().cause().unwrap();
    assert_eq!(cause.as_error(), Some(Error::Canceled));

    // A failure from before the stop is reported.
    let group = new_group();
    group.run(|_ctx| Err(Cause::msg("before the stop")));
    group.stop();
    group.run(|_ctx| Err(Cause::msg("after the stop")));
    assert_eq!(group.finish().unwrap_err().to_string(), "before the stop");
}

#[test]
fn a_panic_reported_at_join_counts_as_a_failure() {
    let group = new_group();
    let payload = std::panic::catch_unwind(|| panic!("outside the body")).unwrap_err();
    group.record_panic(payload);
    let cause = group.context().cause().unwrap();
    assert_eq!(panic_message(&group), "outside the body");
    assert!(cause.same(group.first().unwrap()));
}

#[test]
fn finish_cancels_the_context_and_returns_the_same_each_time() {
    let group = new_group();
    group.run(|ctx| {
        assert!(!ctx.is_done());
        Ok::<(), Cause>(())
    });
    assert_eq!(group.context().err(), None);
    assert!(group.finish().is_ok());
    assert_eq!(group.context().err(), Some(Error::Canceled));
    assert!(group.finish().is_ok());

    let group = new_group();
    group.run(|_ctx| Err(Cause::msg("failed")));
    let first = group.finish().unwrap_err();
    assert!(group.finish().unwrap_err().same(&first));
}

/// An `after_func` callback of the group's context that panics is not the
/// group's panic: it runs on ctx-core's runner, where its panic ends (the hook
/// reported it), whichever of the group's own cancels (stop, finish, cancel,
/// drop) set it free; so a stop still lets the adapter wait for the tasks, and
/// a finish still returns the group's result.
#[test]
fn a_panicking_callback_of_the_groups_context_stays_on_the_runner() {
    for end in ["stop", "finish", "cancel", "drop"] {
        let group = new_group();
        let (ran, ran_rx) = mpsc::channel();
        let _registration = group.context().after_func(move || {
            ran.send(thread::current().id()).unwrap();
            panic!("a cleanup callback panics");
        });
        let ctx = group.context().clone();
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match end {
            "stop" => {
                group.stop();
                group.finish()
            }
            "finish" => group.finish(),
            "cancel" => {
                group.cancel();
                group.finish()
            }
            _ => {
                drop(group);
                Ok(())
            }
        }));
        assert!(
            matches!(ended, Ok(Ok(()))),
            "{end}: the callback's panic got out, or the result changed"
        );
        assert_eq!(ctx.err(), Some(Error::Canceled), "{end}");
        // A watchdog against a callback that never runs, not a timing assertion.
        let ran_on = ran_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{end}: the callback never ran"));
        assert_ne!(ran_on, thread::current().id(), "{end}: ran on the canceler");
    }
}

#[test]
fn the_parents_cancel_reaches_the_tasks_and_the_tasks_error_is_reported() {
    let (parent, cancel_parent) = Context::background().with_cancel_cause();
    let group = new_group_under(&parent);
    cancel_parent.cancel(Cause::msg("shutdown"));
    group.run(|ctx| Err(ctx.err().unwrap()));
    // As in Go: Wait reports the task's own error; the cause stays the parent's.
    assert_eq!(group.finish().unwrap_err(), Error::Canceled);
    assert_eq!(group.context().cause().unwrap().to_string(), "shutdown");
    drop(group);
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn dropping_the_core_cancels_its_context() {
    let group = new_group();
    let ctx = group.context().clone();
    drop(group);
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn the_core_can_be_shared_and_its_async_run_spawned() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let group = Arc::new(new_group());
    send_sync(&group);
    let shared = group.clone();
    let task = async move {
        shared.run_async(|_ctx| async { Ok::<(), Cause>(()) }).await;
    };
    send(&task);
    block_on(task);
    assert!(group.finish().is_ok());
    let debug = format!("{group:?}");
    assert!(
        debug.contains("first_error: None") && debug.contains("stopped: false"),
        "{debug}"
    );
}

/// A task whose `poll` panics and whose `Drop` panics too: the first panic is
/// the group's failure, and the process lives on (an `async` block around the
/// task's future dropped it inside the poll's unwind, where the second panic
/// aborted).
#[test]
fn a_task_whose_poll_and_drop_both_panic_fails_the_group_with_the_first() {
    struct PanicsInPollAndDrop;
    impl Future for PanicsInPollAndDrop {
        type Output = Result<(), io::Error>;
        fn poll(self: std::pin::Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
            panic!("poll of the task's future");
        }
    }
    impl Drop for PanicsInPollAndDrop {
        fn drop(&mut self) {
            panic!("drop of the task's future");
        }
    }
    let group = new_group_under(&Context::background());
    block_on(group.run_async(|_ctx| PanicsInPollAndDrop));
    assert_eq!(panic_message(&group), "poll of the task's future");
}
