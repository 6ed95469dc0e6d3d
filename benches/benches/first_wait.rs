//! The cost of a first wait: registering one waiter on a live context.
//!
//! * `FirstWait/register+drop`: poll a fresh borrowing `done_ref()` once on a
//!   live context (it registers and returns `Pending`), then drop it; the
//!   context lives on, so every iteration registers on the same node
//!   (tokio-util: `cancelled()` on one live token).
//! * `FirstWait/register+drop, slot taken`: the same on a context that another
//!   waiter already waits on (it holds the inline slot), so the poll takes an
//!   entry in the context's list: a shutdown context that many tasks await
//!   (tokio-util: `cancelled()` on a token that one parked `cancelled()`
//!   already waits on).
//! * `FirstWait/register+cancel`: a fresh context, one poll that registers, the
//!   cancel that wakes the waiter, and the poll that completes; creating and
//!   dropping the context are not timed (tokio-util: a fresh token).
//!
//! Both poll with a no-op waker, so the waker's own cost is left out.

mod common;

use benches::harness::poll_pinned;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use ctx_core::Context;
use std::hint::black_box;
use std::pin::pin;
use tokio_util::sync::CancellationToken;

const CORE: &str = "ctx-core";
const TOKIO_UTIL: &str = "tokio-util";

fn register_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("FirstWait");
    let (ctx, _cancel) = Context::background().with_cancel();
    group.bench_function(BenchmarkId::new("register+drop", CORE), |b| {
        b.iter(|| {
            let done = pin!(black_box(&ctx).done_ref());
            assert!(poll_pinned(done).is_pending());
        })
    });
    let token = CancellationToken::new();
    group.bench_function(BenchmarkId::new("register+drop", TOKIO_UTIL), |b| {
        b.iter(|| {
            let cancelled = pin!(black_box(&token).cancelled());
            assert!(poll_pinned(cancelled).is_pending());
        })
    });
    // Another waiter parked first: it holds the slot (tokio-util: a waiter in
    // the token's list), and the measured one goes to the list.
    let mut first = ctx.done();
    assert!(poll_pinned(pin!(&mut first)).is_pending());
    group.bench_function(BenchmarkId::new("register+drop, slot taken", CORE), |b| {
        b.iter(|| {
            let done = pin!(black_box(&ctx).done_ref());
            assert!(poll_pinned(done).is_pending());
        })
    });
    let mut first_cancelled = Box::pin(token.cancelled());
    assert!(poll_pinned(first_cancelled.as_mut()).is_pending());
    group.bench_function(
        BenchmarkId::new("register+drop, slot taken", TOKIO_UTIL),
        |b| {
            b.iter(|| {
                let cancelled = pin!(black_box(&token).cancelled());
                assert!(poll_pinned(cancelled).is_pending());
            })
        },
    );
    drop((first, first_cancelled));
    group.finish();
}

fn register_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("FirstWait");
    group.bench_function(BenchmarkId::new("register+cancel", CORE), |b| {
        b.iter_batched(
            || Context::background().with_cancel(),
            |(ctx, cancel)| {
                {
                    let mut done = pin!(ctx.done_ref());
                    assert!(poll_pinned(done.as_mut()).is_pending());
                    cancel.cancel();
                    assert!(poll_pinned(done).is_ready());
                }
                ctx
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function(BenchmarkId::new("register+cancel", TOKIO_UTIL), |b| {
        b.iter_batched(
            CancellationToken::new,
            |token| {
                {
                    let mut cancelled = pin!(token.cancelled());
                    assert!(poll_pinned(cancelled.as_mut()).is_pending());
                    token.cancel();
                    assert!(poll_pinned(cancelled).is_ready());
                }
                token
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = register_drop, register_cancel
}
criterion_main!(benches);
