//! Churn: short-lived children under one long-lived parent, and a very deep chain.
//!
//! * `ChildCreateDrop/threads=T`: `T` threads (1 or 2) create a child of one
//!   shared, live, cancelable parent and drop it at once, over and over; ns per
//!   create + drop, wall time divided by all threads' operations (Go's
//!   `RunParallel` convention). Dropping a ctx-core child drops its `CancelFunc`,
//!   which cancels it and takes it off the parent's child list; a tokio-util
//!   child token takes itself off its parent's list when dropped.
//! * `CancelChain/depth=10000`: a chain of 10,000 nested children; only the
//!   root's cancel is timed (building and dropping the chain are not).

mod common;

use benches::harness::run_parallel;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ctx_core::{CancelFunc, Context};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CORE: &str = "ctx-core";
const TOKIO_UTIL: &str = "tokio-util";

fn child_create_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("ChildCreateDrop");
    let (parent, _cancel_parent) = Context::background().with_cancel();
    let token = CancellationToken::new();
    for threads in [1, 2] {
        let id = |imp| BenchmarkId::new(format!("threads={threads}"), imp);
        group.bench_function(id(CORE), |b| {
            b.iter_custom(|iters| {
                run_parallel(threads, iters, |_, n| {
                    for _ in 0..n {
                        drop(black_box(parent.with_cancel()));
                    }
                })
            })
        });
        group.bench_function(id(TOKIO_UTIL), |b| {
            b.iter_custom(|iters| {
                run_parallel(threads, iters, |_, n| {
                    for _ in 0..n {
                        drop(black_box(token.child_token()));
                    }
                })
            })
        });
    }
    assert_eq!(
        parent.live_children(),
        0,
        "dropped children must leave the list"
    );
    group.finish();
}

fn cancel_chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelChain");
    common::heavy(&mut group);
    {
        let depth = 10_000;
        let id = |imp| BenchmarkId::new(format!("depth={depth}"), imp);
        group.bench_function(id(CORE), |b| {
            let mut chain: Vec<(Context, CancelFunc)> = Vec::with_capacity(depth);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (root, cancel) = Context::background().with_cancel();
                    for _ in 0..depth {
                        let next = chain.last().map_or(&root, |(ctx, _)| ctx).with_cancel();
                        chain.push(next);
                    }
                    let start = Instant::now();
                    cancel.cancel();
                    total += start.elapsed();
                    assert!(chain.last().is_some_and(|(ctx, _)| ctx.is_done()));
                    chain.clear();
                }
                total
            })
        });
        group.bench_function(id(TOKIO_UTIL), |b| {
            let mut chain: Vec<CancellationToken> = Vec::with_capacity(depth);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let root = CancellationToken::new();
                    for _ in 0..depth {
                        let next = chain.last().unwrap_or(&root).child_token();
                        chain.push(next);
                    }
                    let start = Instant::now();
                    root.cancel();
                    total += start.elapsed();
                    assert!(chain.last().is_some_and(CancellationToken::is_cancelled));
                    chain.clear();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = churn;
    config = common::config();
    targets = child_create_drop, cancel_chain
}
criterion_main!(churn);
