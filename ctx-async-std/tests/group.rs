//! The error group: what is this adapter's own (the limit, `try_spawn`, an
//! accepted closure always run, `wait`/`stop` from inside the group's own
//! tasks, dropping), and that every outcome goes through ctx-core's
//! `GroupCancel`, whose rules are tested once in ctx-core's `tests/group.rs`.

#[macro_use]
mod support;

use ctx_async_std::{Group, PanicError, background, sleep};
use ctx_core::{Cause, Error};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::within;

on_both!(
    outcomes_are_decided_by_the_group_core,
    limit_is_respected,
    queued_tasks_run_with_a_done_context_after_cancel,
    an_accepted_closure_is_always_called,
    stop_from_inside_a_task_waits_for_the_others,
    wait_from_inside_tasks_does_not_wait_for_itself,
    inner_waits_that_finish_together_all_return,
    two_waits_in_one_task_count_it_once,
    stop_from_inside_gives_up_the_slot_under_a_limit,
    a_dropped_inner_wait_takes_its_slot_back,
    inner_waits_in_every_slot_neither_hang_nor_overrun,
    try_spawn_refuses_at_the_limit,
    try_spawn_does_not_overtake_a_queued_spawn,
);

/// The pass-through: a failure is the cause the siblings see and what every
/// `wait` returns, a panic becomes a `PanicError`, a refused `spawn` never
/// calls its closure, and errors caused by `stop` are not reported.
async fn outcomes_are_decided_by_the_group_core() {
    let (group, ctx) = Group::new(&background());
    let (cause_tx, cause_rx) = smol::channel::bounded(1);
    group.spawn(move |ctx| async move {
        ctx.done().await;
        cause_tx.send(ctx.cause()).await.unwrap();
        Ok::<(), Cause>(())
    });
    group.spawn(|_ctx| async { Err(std::io::Error::other("disk full")) });
    let err = group.wait().await.unwrap_err();
    assert!(cause_rx.recv().await.unwrap().unwrap().same(&err));
    assert!(group.wait().await.unwrap_err().same(&err), "wait repeats");
    assert!(!group.spawn(never_called));
    assert_eq!(ctx.err(), Some(Error::Canceled));

    let (group, _ctx) = Group::new(&background());
    group.spawn(|_ctx| explode_in_a_later_poll());
    let panic = group.wait().await.unwrap_err();
    assert_eq!(
        panic.downcast_ref::<PanicError>().unwrap().message(),
        "exploded"
    );

    let (group, _ctx) = Group::new(&background());
    let (started_tx, started_rx) = smol::channel::bounded::<()>(1);
    group.spawn(|ctx| async move {
        drop(started_tx);
        sleep(&ctx, Duration::from_secs(3600)).await
    });
    let _ = started_rx.recv().await;
    assert!(
        group.stop().await.is_ok(),
        "the sleeper's error is the stop's doing"
    );
}

async fn never_called(_ctx: ctx_core::Context) -> Result<(), Cause> {
    unreachable!("a refused closure is never called")
}

async fn explode_in_a_later_poll() -> Result<(), Cause> {
    smol::future::yield_now().await;
    panic!("exploded")
}

async fn limit_is_respected() {
    let (group, _ctx) = Group::new(&background());
    let group = group.with_limit(3);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let (running, peak) = (running.clone(), peak.clone());
        assert!(group.spawn(move |ctx| async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            sleep(&ctx, Duration::from_millis(5)).await?;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), Cause>(())
        }));
    }
    assert!(group.wait().await.is_ok());
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak concurrency {peak}");
}

/// Tasks queued for a slot when the group is canceled still run, one slot at a
/// time, with a context that is already done (`spawn` returned `true`).
async fn queued_tasks_run_with_a_done_context_after_cancel() {
    let (group, _ctx) = Group::new(&background());
    let group = group.with_limit(1);
    let started = Arc::new(AtomicUsize::new(0));
    let saw_done = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    // `try_spawn`: the slot is taken here, so this task is surely the one that
    // runs first (queued tasks start in no particular order).
    assert!(group.try_spawn(move |ctx| async move {
        counter.fetch_add(1, Ordering::SeqCst);
        sleep(&ctx, Duration::from_millis(20)).await?;
        Err(Cause::msg("the only one"))
    }));
    for _ in 0..10 {
        let (counter, saw_done) = (started.clone(), saw_done.clone());
        assert!(group.spawn(move |ctx| async move {
            counter.fetch_add(1, Ordering::SeqCst);
            if ctx.is_done() {
                saw_done.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<(), Cause>(())
        }));
    }
    assert_eq!(group.wait().await.unwrap_err().to_string(), "the only one");
    assert_eq!(started.load(Ordering::SeqCst), 11);
    assert_eq!(saw_done.load(Ordering::SeqCst), 10);
}

/// `spawn` returning `true` means the closure will be called, also when the
/// group is stopped before the task ever runs.
async fn an_accepted_closure_is_always_called() {
    for _ in 0..200 {
        let (group, _ctx) = Group::new(&background());
        let called = Arc::new(AtomicUsize::new(0));
        let counter = called.clone();
        let accepted = group.spawn(move |_ctx| async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Cause>(())
        });
        assert!(accepted);
        assert!(group.stop().await.is_ok());
        assert_eq!(
            called.load(Ordering::SeqCst),
            1,
            "accepted, then not called"
        );
    }
}

/// A task that stops its own group (through an `Arc<Group>`): the siblings are
/// canceled and waited for, and the stop returns instead of waiting for the
/// task that called it.
async fn stop_from_inside_a_task_waits_for_the_others() {
    let (group, ctx) = Group::new(&background());
    let group = Arc::new(group);
    let siblings_done = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let siblings_done = siblings_done.clone();
        group.spawn(move |ctx| async move {
            ctx.done().await;
            smol::Timer::after(Duration::from_millis(5)).await;
            siblings_done.fetch_add(1, Ordering::SeqCst);
            Err(ctx.err().unwrap())
        });
    }
    let inner = group.clone();
    let seen = siblings_done.clone();
    let (tx, rx) = smol::channel::bounded(1);
    group.spawn(move |_ctx| async move {
        let stopped = inner.stop().await;
        tx.send((stopped.is_ok(), seen.load(Ordering::SeqCst)))
            .await
            .unwrap();
        Ok::<(), Cause>(())
    });
    let (ok, seen) = within("stop() from inside a task", rx.recv())
        .await
        .unwrap();
    assert!(ok, "the siblings' errors are the stop's doing");
    assert_eq!(seen, 3, "the stop waited for the siblings");
    assert!(within("the outer wait", group.wait()).await.is_ok());
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

/// Two tasks wait for their group from inside at once: neither waits for itself
/// or for the other, and both return the group's first error.
async fn wait_from_inside_tasks_does_not_wait_for_itself() {
    let (group, _ctx) = Group::new(&background());
    let group = Arc::new(group);
    let (release_tx, release_rx) = smol::channel::bounded::<()>(1);
    group.spawn(|_ctx| async move {
        let _ = release_rx.recv().await;
        Err(Cause::msg("failed"))
    });
    let returned = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let (inner, returned) = (group.clone(), returned.clone());
        group.spawn(move |_ctx| async move {
            let waited = inner.wait().await;
            assert_eq!(waited.unwrap_err().to_string(), "failed");
            returned.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Cause>(())
        });
    }
    drop(release_tx);
    let err = within("wait() from inside two tasks", group.wait())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "failed");
    assert_eq!(returned.load(Ordering::SeqCst), 2);
}

/// Two tasks wait for their group from inside, and once back each blocks its
/// task until both are back: the first to return must not make the other wait
/// for the rest of its task (which waits for the other to return).
async fn inner_waits_that_finish_together_all_return() {
    let (group, _ctx) = Group::new(&background());
    let group = Arc::new(group);
    let (back_tx, back_rx) = smol::channel::unbounded::<()>();
    let (go_tx, go_rx) = smol::channel::unbounded::<()>();
    // Both tasks exist before either waits: a wait that starts while it is
    // the only task returns at once, and rightly so.
    let (start_tx, start_rx) = smol::channel::unbounded::<()>();
    for _ in 0..2 {
        let (inner, back, go) = (group.clone(), back_tx.clone(), go_rx.clone());
        let start = start_rx.clone();
        group.spawn(move |_ctx| async move {
            let _ = start.recv().await;
            inner.wait().await?;
            back.send(()).await.unwrap();
            // The rest of this task: it goes on only once both waits returned.
            let _ = go.recv().await;
            Ok::<(), Cause>(())
        });
    }
    drop(start_tx);
    within("both inner waits return", async {
        for _ in 0..2 {
            back_rx.recv().await.unwrap();
        }
    })
    .await;
    drop(go_tx);
    within("the group's wait", group.wait()).await.unwrap();
}

/// A task that polls two inner waits at once (both arms of a `select`) is one
/// waiting task: its waits return only once the other running task ends, not
/// as soon as two waits match two running tasks.
async fn two_waits_in_one_task_count_it_once() {
    let (group, _ctx) = Group::new(&background());
    let group = Arc::new(group);
    let (polled_tx, polled_rx) = smol::channel::bounded::<()>(1);
    let (finish_tx, finish_rx) = smol::channel::bounded::<()>(1);
    let other_finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = other_finished.clone();
    group.spawn(move |_ctx| async move {
        let _ = finish_rx.recv().await;
        finished.store(true, Ordering::SeqCst);
        Ok::<(), Cause>(())
    });
    let (inner, finished) = (group.clone(), other_finished.clone());
    group.spawn(move |_ctx| async move {
        let mut both = std::pin::pin!(smol::future::zip(inner.wait(), inner.wait()));
        let mut first = true;
        let (a, b) = std::future::poll_fn(|cx| {
            let poll = both.as_mut().poll(cx);
            if std::mem::take(&mut first) {
                let _ = polled_tx.try_send(());
            }
            poll
        })
        .await;
        assert!(a.is_ok() && b.is_ok());
        assert!(
            finished.load(Ordering::SeqCst),
            "the waits returned while the other task still ran"
        );
        Ok::<(), Cause>(())
    });
    within("the two waits are polled", polled_rx.recv())
        .await
        .unwrap();
    drop(finish_tx);
    within("the group's wait", group.wait()).await.unwrap();
}

/// Under `with_limit(1)`, the task holding the only slot stops the group while
/// others are queued behind it: it gives up its slot, the queued ones run (with
/// a done context), and nothing hangs.
async fn stop_from_inside_gives_up_the_slot_under_a_limit() {
    let (group, _ctx) = Group::new(&background());
    let group = Arc::new(group.with_limit(1));
    let (started_tx, started_rx) = smol::channel::bounded::<()>(1);
    let inner = group.clone();
    // `try_spawn`: the slot is taken here, so this task surely holds it before
    // the queued ones run (they start in no particular order).
    assert!(group.try_spawn(move |_ctx| async move {
        let _ = started_rx.recv().await;
        inner.stop().await
    }));
    let queued = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let queued = queued.clone();
        assert!(group.spawn(move |ctx| async move {
            assert!(ctx.is_done());
            queued.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Cause>(())
        }));
    }
    drop(started_tx);
    assert!(
        within("stop() from inside under a limit", group.wait())
            .await
            .is_ok()
    );
    assert_eq!(queued.load(Ordering::SeqCst), 5);
}

/// Counts the tasks running their bodies at once, and the most seen.
#[derive(Clone, Default)]
struct Gauge {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Gauge {
    fn enter(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// Under `with_limit(1)`, the task holding the slot races a `wait` from inside
/// against a signal, and the signal wins: the wait future is dropped unfinished
/// and the task goes on working. The queued task that got the lent slot is
/// still running then, so the first task must not go on until it has a slot
/// again (it used to go on without one: two tasks at once under a limit of 1).
async fn a_dropped_inner_wait_takes_its_slot_back() {
    let (group, _ctx) = Group::new(&background());
    let group = Arc::new(group.with_limit(1));
    let gauge = Gauge::default();
    let (go_tx, go_rx) = smol::channel::bounded::<()>(1);
    // Closed once both are spawned: a wait that began earlier would return at
    // once, and cancel the group before the second spawn.
    let (start_tx, start_rx) = smol::channel::bounded::<()>(1);
    let (inner, first) = (group.clone(), gauge.clone());
    // `try_spawn`: the first task surely holds the slot before the second runs.
    assert!(group.try_spawn(move |_ctx| async move {
        let _ = start_rx.recv().await;
        // Parked in the race, the task runs nothing of its own.
        let signaled = smol::future::or(
            // First, so that it wins once both are ready: the wait must be
            // the one dropped.
            async { go_rx.recv().await.is_ok() },
            async {
                let _ = inner.wait().await;
                false
            },
        )
        .await;
        assert!(signaled, "the wait was dropped, not finished");
        first.enter();
        smol::Timer::after(Duration::from_millis(20)).await;
        first.leave();
        Ok::<(), Cause>(())
    }));
    let second = gauge.clone();
    assert!(group.spawn(move |_ctx| async move {
        second.enter();
        go_tx.send(()).await.unwrap();
        // Room for the first task to run, if it (wrongly) could: not a timing
        // assertion, the peak below is exact either way.
        smol::Timer::after(Duration::from_millis(50)).await;
        second.leave();
        Ok::<(), Cause>(())
    }));
    drop(start_tx);
    assert!(
        within("a limited group after a dropped inner wait", group.wait())
            .await
            .is_ok()
    );
    assert_eq!(gauge.peak(), 1, "tasks running at once under a limit of 1");
}

/// Under `with_limit(2)`, every task waits for the group from inside, then
/// works: each lends its slot while it waits, so the queued ones can start and
/// nothing hangs, and takes one back before it goes on, so no more than 2 run
/// at once after the waits return.
async fn inner_waits_in_every_slot_neither_hang_nor_overrun() {
    let (group, _ctx) = Group::new(&background());
    let group = Arc::new(group.with_limit(2));
    let gauge = Gauge::default();
    let returned = Arc::new(AtomicUsize::new(0));
    // Closed once all are spawned: a wait that began earlier could return, and
    // cancel the group, before the last spawn.
    let (start_tx, start_rx) = smol::channel::bounded::<()>(1);
    for _ in 0..5 {
        let (inner, gauge, returned) = (group.clone(), gauge.clone(), returned.clone());
        let start_rx = start_rx.clone();
        assert!(group.spawn(move |_ctx| async move {
            let _ = start_rx.recv().await;
            let _ = inner.wait().await;
            returned.fetch_add(1, Ordering::SeqCst);
            gauge.enter();
            smol::Timer::after(Duration::from_millis(20)).await;
            gauge.leave();
            Ok::<(), Cause>(())
        }));
    }
    drop(start_tx);
    assert!(
        within("a limited group whose tasks all wait inside", group.wait())
            .await
            .is_ok()
    );
    assert_eq!(returned.load(Ordering::SeqCst), 5);
    let peak = gauge.peak();
    assert!((1..=2).contains(&peak), "peak concurrency {peak}");
}

async fn try_spawn_refuses_at_the_limit() {
    let (group, _ctx) = Group::new(&background());
    let group = group.with_limit(1);
    assert!(group.try_spawn(|ctx| async move {
        ctx.done().await;
        Ok::<(), Cause>(())
    }));
    assert!(!group.try_spawn(|_ctx| async { Ok::<(), Cause>(()) }));
    assert!(group.stop().await.is_ok());
    assert!(!group.try_spawn(|_ctx| async { Ok::<(), Cause>(()) }));
}

/// A task spawned over the limit is ahead of any later `try_spawn` (Go's `Go`
/// takes its slot before it returns, so a `TryGo` after it finds the group
/// full): also before the executor first runs it, and right after the slot it
/// waits for is given back.
async fn try_spawn_does_not_overtake_a_queued_spawn() {
    let (group, _ctx) = Group::new(&background());
    let group = group.with_limit(1);
    let (release_tx, release_rx) = smol::channel::bounded::<()>(1);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = |name: &'static str| {
        let order = order.clone();
        move |_ctx: ctx_core::Context| async move {
            order.lock().unwrap().push(name);
            Ok::<(), Cause>(())
        }
    };
    // Takes the slot at once, before the executor runs anything.
    let first = order.clone();
    assert!(group.spawn(move |_ctx| async move {
        release_rx.recv().await.unwrap();
        first.lock().unwrap().push("first");
        Ok::<(), Cause>(())
    }));
    assert!(!group.try_spawn(log("refused while the slot is held")));
    // Over the limit: queued until the slot comes back.
    assert!(group.spawn(log("queued")));
    assert!(!group.try_spawn(log("refused while a spawn is queued")));
    release_tx.send(()).await.unwrap();
    // Whether or not the queued task has taken the slot yet, it is ahead: a
    // `try_spawn` is accepted only once it has run and ended (the executor's
    // threads may have run both tasks by now).
    let early = group.try_spawn(log("accepted"));
    if early {
        assert!(
            order.lock().unwrap().contains(&"queued"),
            "a try_spawn overtook the queued task"
        );
    }
    within("the queued task", async {
        while !order.lock().unwrap().contains(&"queued") {
            sleep(&background(), Duration::from_millis(1))
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(order.lock().unwrap()[..2], ["first", "queued"]);
    // The count of queued tasks is back to zero: a slot is free for try_spawn
    // once the queued task has ended.
    if !early {
        within("a free slot", async {
            while !group.try_spawn(log("accepted")) {
                sleep(&background(), Duration::from_millis(1))
                    .await
                    .unwrap();
            }
        })
        .await;
    }
    assert!(group.wait().await.is_ok());
    assert_eq!(*order.lock().unwrap(), ["first", "queued", "accepted"]);
}

#[test]
fn dropping_the_group_cancels_its_context() {
    let (group, _ctx) = Group::new(&background());
    let (tx, rx) = smol::channel::bounded(1);
    let (started_tx, started_rx) = smol::channel::bounded::<()>(1);
    group.spawn(move |ctx| async move {
        drop(started_tx);
        ctx.done().await;
        tx.send(ctx.err()).await.unwrap();
        Ok::<(), Cause>(())
    });
    let _ = smol::block_on(started_rx.recv());
    drop(group);
    assert_eq!(smol::block_on(rx.recv()).unwrap(), Some(Error::Canceled));
}

#[test]
#[should_panic(expected = "at least 1")]
fn zero_limit_panics() {
    let _ = Group::new(&background()).0.with_limit(0);
}

#[test]
#[should_panic(expected = "has not finished yet")]
fn limit_after_spawn_panics() {
    let (group, _ctx) = Group::new(&background());
    group.spawn(|ctx| async move {
        ctx.done().await;
        Ok::<(), ctx_core::Error>(())
    });
    let _ = group.with_limit(2);
}

/// A limit may be set once every task spawned before has finished
/// (`is_empty`), even in the moment after a task's end when its future has
/// not let go of the group's shared state yet: the limit then holds for the
/// tasks spawned next.
#[test]
fn a_limit_is_accepted_as_soon_as_every_earlier_task_finished() {
    smol::block_on(within("setting limits after tasks finished", async {
        for _ in 0..200 {
            let (group, _ctx) = Group::new(&background());
            assert!(group.spawn(|_ctx| async { Ok::<(), Cause>(()) }));
            while !group.is_empty() {
                smol::future::yield_now().await;
            }
            let group = group.with_limit(1);
            assert!(group.try_spawn(|ctx| async move {
                ctx.done().await;
                Ok::<(), Cause>(())
            }));
            assert!(
                !group.try_spawn(|_ctx| async { Ok::<(), Cause>(()) }),
                "a second task started under a limit of 1"
            );
            assert!(group.stop().await.is_ok());
        }
    }));
}

type BoxedWait = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Cause>> + Send>>;

/// Wakes by dropping another pending `wait` of the same group: a waker that
/// re-enters the group's list of waiters (as a task polled inline that drops
/// its listener would).
struct ReenteringWaker {
    victim: std::sync::Mutex<Option<BoxedWait>>,
    woken: std::sync::mpsc::Sender<()>,
}

impl std::task::Wake for ReenteringWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        drop(self.victim.lock().unwrap().take());
        let _ = self.woken.send(());
    }
}

fn wait_of(group: &Arc<Group>) -> BoxedWait {
    let group = group.clone();
    Box::pin(async move { group.wait().await })
}

/// The end of the group's last task wakes the tasks in `wait`; their wakers
/// run outside the list's lock. A waker that drops another `wait` of the group
/// used to run under it, and hung the executor's thread for good.
#[test]
fn a_waiters_waker_that_drops_another_wait_of_the_group_does_not_deadlock() {
    use std::task::{Context, Waker};
    let (group, _ctx) = Group::new(&background());
    let group = Arc::new(group);
    let (release, released) = smol::channel::bounded::<()>(1);
    assert!(group.spawn(move |_ctx| async move {
        let _ = released.recv().await;
        Ok::<(), Cause>(())
    }));
    let mut victim = wait_of(&group);
    assert!(
        victim
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
    let (woken, woken_rx) = std::sync::mpsc::channel();
    let waker = Waker::from(Arc::new(ReenteringWaker {
        victim: std::sync::Mutex::new(Some(victim)),
        woken,
    }));
    let mut reentering = wait_of(&group);
    assert!(
        reentering
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    // The task ends, on an executor thread: its end notifies the waiters.
    release.send_blocking(()).unwrap();
    let woke = woken_rx.recv_timeout(Duration::from_secs(30));
    if woke.is_err() {
        // Dropping them would block on the lock held for good: leaked.
        std::mem::forget((reentering, group));
        panic!("the re-entering waker never returned: it ran under the waiters' lock");
    }
    assert!(
        reentering
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    );
}
