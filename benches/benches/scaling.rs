//! Scaling: aggregate throughput of the tree's basic operations as threads are
//! added, so that the prediction in `BENCHMARKS.md` ("Scaling beyond this
//! machine") can be checked on a machine with more cores.
//!
//! `Scaling/<workload>/threads=T/<implementation>`: `T` threads each run the
//! workload's operation over and over on one shared, live context (ctx-core: a
//! `with_cancel` child of background; tokio-util: a root `CancellationToken`):
//!
//! * `create+drop`: derive a child of the shared parent and drop it at once;
//! * `create+cancel`: derive a child, cancel it explicitly, drop it;
//! * `check`: `err()` (tokio-util: `is_cancelled()`) on the shared context;
//! * `first-wait`: poll a fresh `done_ref()` (tokio-util: `cancelled()`) once with
//!   a no-op waker, so that it registers as a waiter, then drop it.
//!
//! One criterion iteration is one operation on every thread, and the throughput
//! is `T` elements per iteration: criterion's time is what one operation takes
//! while all `T` threads run, and its `elem/s` is the aggregate throughput of all
//! threads, the number the prediction is about. Perfect scaling keeps the time
//! flat and multiplies `elem/s` by `T`.
//!
//! The thread counts come from `CTX_BENCH_THREADS` (e.g. `1,2,8,32,64`); by
//! default 1, 2 and the machine's available parallelism. More threads than cores
//! measure the scheduler, not the tree.

mod common;

use benches::harness::{poll_once, run_parallel};
use benches::scaling::{self, GROUP};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use ctx_core::Context;
use std::hint::black_box;
use tokio_util::sync::CancellationToken;

const CORE: &str = "ctx-core";
const TOKIO_UTIL: &str = "tokio-util";

/// Benchmarks one workload at one thread count for both implementations:
/// `core` and `tokio` each run on `threads` threads at once, one call per thread
/// per iteration. (Generic, not `dyn`: an indirect call would be a visible part
/// of a one-nanosecond check.)
fn workload(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    core: impl Fn() + Sync,
    tokio: impl Fn() + Sync,
) {
    bench_threads(group, name, threads, CORE, core);
    bench_threads(group, name, threads, TOKIO_UTIL, tokio);
}

fn bench_threads(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    implementation: &str,
    op: impl Fn() + Sync,
) {
    let id = BenchmarkId::new(format!("{name}/threads={threads}"), implementation);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            run_parallel(threads, iters * threads as u64, |_, n| {
                for _ in 0..n {
                    op();
                }
            })
        })
    });
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    let (parent, _cancel_parent) = Context::background().with_cancel();
    let token = CancellationToken::new();
    for threads in scaling::thread_counts() {
        group.throughput(Throughput::Elements(threads as u64));
        let group = &mut group;
        workload(
            group,
            "create+drop",
            threads,
            || drop(black_box(parent.with_cancel())),
            || drop(black_box(token.child_token())),
        );
        workload(
            group,
            "create+cancel",
            threads,
            || {
                let (child, cancel) = parent.with_cancel();
                cancel.cancel();
                black_box(child);
            },
            || {
                let child = token.child_token();
                child.cancel();
                black_box(child);
            },
        );
        workload(
            group,
            "check",
            threads,
            || {
                black_box(black_box(&parent).err());
            },
            || {
                black_box(black_box(&token).is_cancelled());
            },
        );
        workload(
            group,
            "first-wait",
            threads,
            || assert!(!poll_once(black_box(&parent).done_ref())),
            || assert!(!poll_once(black_box(&token).cancelled())),
        );
    }
    assert_eq!(
        parent.live_children(),
        0,
        "dropped children must leave the list"
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = scaling
}
criterion_main!(benches);
