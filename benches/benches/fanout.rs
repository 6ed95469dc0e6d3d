//! Cancel fan-out: one root with many children, canceled at once.
//!
//! Three shapes, ctx-core beside tokio-util's `CancellationToken` where it has
//! the feature:
//!
//! * `CancelFanout/children=N/waiters=none`: the root has `N` live children and
//!   nobody waits; only the root's cancel is timed.
//! * `CancelFanout/children=N/waiters=tokio-tasks`: every child is awaited by its
//!   own task on a 2-worker tokio runtime; timed from the cancel until every task
//!   has observed it (the last one to do so opens a latch the benchmark thread is
//!   blocked on). The cancel starts only once every task has polled its future
//!   and parked. A third variant, `plain-wakers`, uses no library at all:
//!   every task's waker sits in a slot of its own, woken by a plain loop over
//!   the slots; it is the floor both libraries stand on (tokio's own cost of
//!   scheduling the tasks woken from outside the runtime and running them).
//! * `CancelFanout/children=1000/waiters=threads` (ctx-core only; tokio-util has
//!   no blocking wait): 1000 threads blocked in `ctx.wait()` on their children;
//!   timed from the cancel until all have returned.
//! * `CancelCallbacks/callbacks=N`: `N` `after_func` callbacks on one context,
//!   timed from its cancel until every callback has run on ctx-core's runner.
//!
//! Building the tree, spawning and tearing down are not timed.

mod common;

use benches::harness::{Latch, wait_until};
use benches::params;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ctx_core::{CancelFunc, Context};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const CORE: &str = "ctx-core";
const TOKIO_UTIL: &str = "tokio-util";
/// No library: the tasks' wakers woken by a plain loop (the floor of (b)).
const PLAIN_WAKERS: &str = "plain-wakers";

fn sizes() -> Vec<usize> {
    params(&[1_000, 10_000, 100_000], &[1_000, 100_000])
}

fn id(children: usize, waiters: &str, imp: &str) -> BenchmarkId {
    BenchmarkId::new(format!("children={children}/waiters={waiters}"), imp)
}

/// (a) No waiters: the time of the root's cancel alone.
fn no_waiters(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelFanout");
    common::heavy(&mut group);
    for n in sizes() {
        group.bench_function(id(n, "none", CORE), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (root, cancel) = Context::background().with_cancel();
                    let children: Vec<(Context, CancelFunc)> =
                        (0..n).map(|_| root.with_cancel()).collect();
                    let start = Instant::now();
                    cancel.cancel();
                    total += start.elapsed();
                    assert!(children.last().is_some_and(|(ctx, _)| ctx.is_done()));
                    drop(children);
                }
                total
            })
        });
        group.bench_function(id(n, "none", TOKIO_UTIL), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let root = CancellationToken::new();
                    let children: Vec<CancellationToken> =
                        (0..n).map(|_| root.child_token()).collect();
                    let start = Instant::now();
                    root.cancel();
                    total += start.elapsed();
                    assert!(children.last().is_some_and(CancellationToken::is_cancelled));
                    drop(children);
                }
                total
            })
        });
    }
    group.finish();
}

/// Awaits `fut`, counting `ready` up once its first poll returned `Pending` (so
/// the benchmark knows the waiter is registered), then arrives at `latch`.
async fn observe<F: Future<Output = ()>>(fut: F, ready: &AtomicUsize, latch: &Latch) {
    let mut fut = std::pin::pin!(fut);
    let mut first = true;
    poll_fn(|cx| {
        let poll = Pin::as_mut(&mut fut).poll(cx);
        if first {
            first = false;
            if poll.is_pending() {
                ready.fetch_add(1, Ordering::Release);
            }
        }
        poll
    })
    .await;
    latch.arrive();
}

/// One task's waker and whether it was woken: the plain-wakers floor of (b).
#[derive(Default)]
struct WakeSlot {
    woken: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl WakeSlot {
    /// Ready once [`WakeSlot::wake`] ran.
    fn woken(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            if self.woken.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.woken.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime")
}

/// (b) Every child awaited by a tokio task: cancel until all tasks observed it.
fn tokio_tasks(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelFanout");
    common::heavy(&mut group);
    let rt = runtime();
    let ready = Arc::new(AtomicUsize::new(0));
    let latch = Arc::new(Latch::new());
    for n in sizes() {
        group.bench_function(id(n, "tokio-tasks", CORE), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    ready.store(0, Ordering::SeqCst);
                    latch.reset(n);
                    let (root, cancel) = Context::background().with_cancel();
                    let mut cancels = Vec::with_capacity(n);
                    for _ in 0..n {
                        let (child, cancel_child) = root.with_cancel();
                        cancels.push(cancel_child);
                        let (ready, latch) = (ready.clone(), latch.clone());
                        rt.spawn(async move { observe(child.done(), &ready, &latch).await });
                    }
                    wait_until(|| ready.load(Ordering::Acquire) == n);
                    let start = Instant::now();
                    cancel.cancel();
                    latch.wait();
                    total += start.elapsed();
                    drop(cancels);
                }
                total
            })
        });
        // The floor for both: no cancellation library, each task's waker kept
        // in a slot of its own and woken by a plain loop over the slots. What
        // is left is tokio's own cost of scheduling `n` tasks woken from
        // outside the runtime and running them to completion.
        group.bench_function(id(n, "tokio-tasks", PLAIN_WAKERS), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    ready.store(0, Ordering::SeqCst);
                    latch.reset(n);
                    let slots: Vec<Arc<WakeSlot>> =
                        (0..n).map(|_| Arc::new(WakeSlot::default())).collect();
                    for slot in &slots {
                        let (slot, ready, latch) = (slot.clone(), ready.clone(), latch.clone());
                        rt.spawn(async move { observe(slot.woken(), &ready, &latch).await });
                    }
                    wait_until(|| ready.load(Ordering::Acquire) == n);
                    let start = Instant::now();
                    for slot in &slots {
                        slot.wake();
                    }
                    latch.wait();
                    total += start.elapsed();
                }
                total
            })
        });
        group.bench_function(id(n, "tokio-tasks", TOKIO_UTIL), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    ready.store(0, Ordering::SeqCst);
                    latch.reset(n);
                    let root = CancellationToken::new();
                    for _ in 0..n {
                        let child = root.child_token();
                        let (ready, latch) = (ready.clone(), latch.clone());
                        rt.spawn(async move { observe(child.cancelled(), &ready, &latch).await });
                    }
                    wait_until(|| ready.load(Ordering::Acquire) == n);
                    let start = Instant::now();
                    root.cancel();
                    latch.wait();
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

/// The pool of blocked threads for (c), reused across iterations.
struct Pool {
    slots: Arc<Vec<Mutex<Option<Context>>>>,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicUsize>,
    latch: Arc<Latch>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Pool {
    fn new(n: usize) -> Pool {
        let slots: Arc<Vec<Mutex<Option<Context>>>> =
            Arc::new((0..n).map(|_| Mutex::new(None)).collect());
        let start = Arc::new(Barrier::new(n + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicUsize::new(0));
        let latch = Arc::new(Latch::new());
        let threads = (0..n)
            .map(|i| {
                let (slots, start, stop) = (slots.clone(), start.clone(), stop.clone());
                let (ready, latch) = (ready.clone(), latch.clone());
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        loop {
                            start.wait();
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            let ctx = slots[i]
                                .lock()
                                .unwrap()
                                .take()
                                .expect("a context per round");
                            ready.fetch_add(1, Ordering::Release);
                            ctx.wait();
                            latch.arrive();
                        }
                    })
                    .expect("spawn a waiter thread")
            })
            .collect();
        Pool {
            slots,
            start,
            stop,
            ready,
            latch,
            threads,
        }
    }

    /// One round: every thread blocks on a child of a fresh root; returns the
    /// time from the root's cancel until all threads returned from `wait`.
    fn round(&self) -> Duration {
        let n = self.slots.len();
        let (root, cancel) = Context::background().with_cancel();
        let mut cancels = Vec::with_capacity(n);
        for slot in self.slots.iter() {
            let (child, cancel_child) = root.with_cancel();
            cancels.push(cancel_child);
            *slot.lock().unwrap() = Some(child);
        }
        self.ready.store(0, Ordering::SeqCst);
        self.latch.reset(n);
        self.start.wait();
        wait_until(|| self.ready.load(Ordering::Acquire) == n);
        // Give the last threads time to get from `ready` into their blocking wait.
        thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        cancel.cancel();
        self.latch.wait();
        start.elapsed()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.start.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// (c) 1000 threads blocked in `wait()`: cancel until all have returned.
fn blocked_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelFanout");
    common::heavy(&mut group);
    let n = 1_000;
    let pool = Pool::new(n);
    group.bench_function(id(n, "threads", CORE), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pool.round()).sum())
    });
    group.finish();
    drop(pool);
}

/// (d) `after_func` callbacks on the root, set free by its cancel and run on
/// ctx-core's runner threads, each in a job of its own: timed from the cancel
/// until every callback has run (ctx-core only; tokio-util has no callbacks).
/// With one callback, this is the hand-off to a parked runner thread.
fn callbacks(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelCallbacks");
    common::heavy(&mut group);
    let latch = Arc::new(Latch::new());
    for n in params(&[1, 1_000], &[1, 1_000]) {
        group.bench_function(BenchmarkId::new(format!("callbacks={n}"), CORE), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    latch.reset(n);
                    let (root, cancel) = Context::background().with_cancel();
                    let registrations: Vec<_> = (0..n)
                        .map(|_| {
                            let latch = latch.clone();
                            root.after_func(move || latch.arrive())
                        })
                        .collect();
                    let start = Instant::now();
                    cancel.cancel();
                    latch.wait();
                    total += start.elapsed();
                    drop(registrations);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = fanout;
    config = common::config();
    targets = no_waiters, tokio_tasks, blocked_threads, callbacks
}
criterion_main!(fanout);
