//! Go's own `context` benchmarks (Go's `src/context/benchmark_test.go`), ported
//! workload for workload, with ctx-core and tokio-util's `CancellationToken`
//! side by side.
//!
//! Every benchmark id is Go's name followed by the crate measured, e.g.
//! `CancelTree/depth=1000/Root=OpenCanceler/ctx-core`, so the table in
//! `BENCHMARKS.md` can put Go's number next to ours. Go's `b.RunParallel`
//! benchmarks run on two threads here (the reference machine's GOMAXPROCS) and
//! report wall time per operation, as Go does. Where Go's workload has no
//! tokio-util equivalent (values, deadlines) only ctx-core runs.

mod common;

use benches::harness::{poll_once, run_parallel};
use benches::params;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use ctx_core::{CancelFunc, Context};
use ctx_tokio::TokioTimer;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CORE: &str = "ctx-core";
const TOKIO_UTIL: &str = "tokio-util";
/// Go's reference numbers were taken with GOMAXPROCS=2.
const THREADS: usize = 2;
const HOUR: Duration = Duration::from_secs(3600);

/// The value CommonParentCancel looks up (Go: key `"key"`, value `"value"`).
struct Key(&'static str);

/// One layer of the DeepValue chains (Go: key `i`, value `i`).
#[allow(dead_code, reason = "only its presence in the chain matters")]
struct Layer(usize);

/// The key DeepValue looks up and never finds (Go: key `-1`).
struct Missing;

/// Go's `BenchmarkCommonParentCancel`: two threads derive children of one shared
/// cancelable parent, look a value up through it, and cancel them.
///
/// Go's loop body also runs `x /= x + 1` 200 times as busy work; that is left out
/// here (it costs Go about a fifth of its time per operation, and its cost in Rust
/// depends on the CPU's divider, so it would not compare like for like).
fn common_parent_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("CommonParentCancel");
    let root = Context::background().with_value(Key("value"));
    let (shared, _cancel_shared) = root.with_cancel();
    group.bench_function(CORE, |b| {
        b.iter_custom(|iters| {
            run_parallel(THREADS, iters, |_, n| {
                for _ in 0..n {
                    let (ctx, cancel) = shared.with_cancel();
                    assert_eq!(ctx.value::<Key>().map(|k| k.0), Some("value"));
                    cancel.cancel();
                }
            })
        })
    });
    let shared_token = CancellationToken::new();
    group.bench_function(TOKIO_UTIL, |b| {
        b.iter_custom(|iters| {
            run_parallel(THREADS, iters, |_, n| {
                for _ in 0..n {
                    let token = shared_token.child_token();
                    token.cancel();
                }
            })
        })
    });
    group.finish();
}

/// Go's `BenchmarkWithTimeout`: `concurrency` timeout contexts stay armed while
/// two threads each create 10 more and cancel them, per operation; on ctx-core's
/// built-in timer thread (`timer=std`) and on tokio's timer (`timer=tokio`,
/// ctx-tokio's `TokioTimer`). tokio-util has no deadlines.
fn with_timeout(c: &mut Criterion) {
    let mut group = c.benchmark_group("WithTimeout");
    // tokio's timer runs on a 2-worker runtime of its own; the benchmark threads
    // are the same two plain threads as for the built-in timer.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_time()
        .build()
        .expect("tokio runtime");
    let tokio_root = Context::background().with_timer(TokioTimer::new(rt.handle().clone()));
    for concurrency in params(&[40, 4_000, 400_000], &[40, 4_000]) {
        // The built-in timer thread (ctx-core's default backend).
        with_timeout_one(&mut group, concurrency, "timer=std", &Context::background());
        with_timeout_one(&mut group, concurrency, "timer=tokio", &tokio_root);
    }
    group.finish();
}

fn with_timeout_one(
    group: &mut BenchmarkGroup<'_, WallTime>,
    concurrency: usize,
    backend: &str,
    root: &Context,
) {
    let armed: Vec<CancelFunc> = (0..concurrency)
        .map(|_| root.with_timeout(HOUR).1)
        .collect();
    let id = BenchmarkId::new(format!("concurrency={concurrency}/{backend}"), CORE);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            run_parallel(THREADS, iters, |_, n| {
                let mut cancels = Vec::with_capacity(10);
                for _ in 0..n {
                    for _ in 0..10 {
                        cancels.push(root.with_timeout(HOUR).1);
                    }
                    for cancel in cancels.drain(..) {
                        cancel.cancel();
                    }
                }
            })
        })
    });
    drop(armed);
}

/// Go's `BenchmarkCancelTree`: a chain of `depth` `WithCancel` children under a
/// root that is Background, a live cancelable context canceled at the end
/// (OpenCanceler), or an already-canceled one (ClosedCanceler).
///
/// Go drops the chain to the garbage collector; here the chain's cancel functions
/// are dropped innermost first, as `defer cancel()` at every level would run, and
/// that is timed (dropping a cancel function cancels its context).
fn cancel_tree(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelTree");
    for depth in params(&[1, 10, 100, 1000], &[1, 1000]) {
        let id =
            |root: &str, imp: &str| BenchmarkId::new(format!("depth={depth}/Root={root}"), imp);
        let mut chain: Vec<(Context, CancelFunc)> = Vec::with_capacity(depth);
        group.bench_function(id("Background", CORE), |b| {
            b.iter(|| {
                build_chain(&Context::background(), depth, &mut chain);
                while chain.pop().is_some() {}
            })
        });
        group.bench_function(id("OpenCanceler", CORE), |b| {
            b.iter(|| {
                let (root, cancel) = Context::background().with_cancel();
                build_chain(&root, depth, &mut chain);
                cancel.cancel();
                while chain.pop().is_some() {}
            })
        });
        group.bench_function(id("ClosedCanceler", CORE), |b| {
            b.iter(|| {
                let (root, cancel) = Context::background().with_cancel();
                cancel.cancel();
                build_chain(&root, depth, &mut chain);
                while chain.pop().is_some() {}
            })
        });

        // tokio-util has no Background: a long-lived root token plays its part.
        let mut tokens: Vec<CancellationToken> = Vec::with_capacity(depth);
        let background = CancellationToken::new();
        group.bench_function(id("Background", TOKIO_UTIL), |b| {
            b.iter(|| {
                build_tokens(&background, depth, &mut tokens);
                while tokens.pop().is_some() {}
            })
        });
        group.bench_function(id("OpenCanceler", TOKIO_UTIL), |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                build_tokens(&root, depth, &mut tokens);
                root.cancel();
                while tokens.pop().is_some() {}
            })
        });
        group.bench_function(id("ClosedCanceler", TOKIO_UTIL), |b| {
            b.iter(|| {
                let root = CancellationToken::new();
                root.cancel();
                build_tokens(&root, depth, &mut tokens);
                while tokens.pop().is_some() {}
            })
        });
    }
    group.finish();
}

/// Go's `buildContextTree`: `depth` nested `WithCancel`s under `root`.
fn build_chain(root: &Context, depth: usize, chain: &mut Vec<(Context, CancelFunc)>) {
    for _ in 0..depth {
        let next = chain.last().map_or(root, |(ctx, _)| ctx).with_cancel();
        chain.push(next);
    }
}

/// `build_chain` for tokio-util: `depth` nested child tokens under `root`.
fn build_tokens(root: &CancellationToken, depth: usize, chain: &mut Vec<CancellationToken>) {
    for _ in 0..depth {
        let next = chain.last().unwrap_or(root).child_token();
        chain.push(next);
    }
}

/// Go's `BenchmarkCheckCanceled`: `Err()` and a non-blocking receive from
/// `Done()` on a canceled context. `Done` here polls a fresh borrowing
/// `done_ref()` future once (the async form of Go's `select { case
/// <-ctx.Done(): default: }`; tokio-util's `cancelled()` borrows too);
/// `DoneOwned` polls a fresh owning `done()` (a clone of the context);
/// `IsDone` is the synchronous check.
fn check_canceled(c: &mut Criterion) {
    let mut group = c.benchmark_group("CheckCanceled");
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    group.bench_function(BenchmarkId::new("Err", CORE), |b| {
        b.iter(|| black_box(&ctx).err())
    });
    group.bench_function(BenchmarkId::new("Done", CORE), |b| {
        b.iter(|| assert!(poll_once(black_box(&ctx).done_ref())))
    });
    group.bench_function(BenchmarkId::new("DoneOwned", CORE), |b| {
        b.iter(|| assert!(poll_once(black_box(&ctx).done())))
    });
    group.bench_function(BenchmarkId::new("IsDone", CORE), |b| {
        b.iter(|| black_box(&ctx).is_done())
    });
    let token = CancellationToken::new();
    token.cancel();
    group.bench_function(BenchmarkId::new("Err", TOKIO_UTIL), |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    group.bench_function(BenchmarkId::new("Done", TOKIO_UTIL), |b| {
        b.iter(|| assert!(poll_once(black_box(&token).cancelled())))
    });
    group.bench_function(BenchmarkId::new("IsDone", TOKIO_UTIL), |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    group.finish();
}

/// Go's `BenchmarkContextCancelDone`: two threads check one live context's
/// `Done()` without blocking.
fn context_cancel_done(c: &mut Criterion) {
    let mut group = c.benchmark_group("ContextCancelDone");
    let (ctx, _cancel) = Context::background().with_cancel();
    group.bench_function(CORE, |b| {
        b.iter_custom(|iters| {
            run_parallel(THREADS, iters, |_, n| {
                for _ in 0..n {
                    black_box(black_box(&ctx).is_done());
                }
            })
        })
    });
    let token = CancellationToken::new();
    group.bench_function(TOKIO_UTIL, |b| {
        b.iter_custom(|iters| {
            run_parallel(THREADS, iters, |_, n| {
                for _ in 0..n {
                    black_box(black_box(&token).is_cancelled());
                }
            })
        })
    });
    group.finish();
}

/// A chain of `depth` values under background (Go: `WithValue(ctx, i, i)`).
fn value_chain(depth: usize) -> Context {
    (0..depth).fold(Context::background(), |ctx, i| ctx.with_value(Layer(i)))
}

/// Go's `BenchmarkDeepValueSameGoRoutine`: a lookup that misses, through `depth`
/// value layers. tokio-util has no values.
fn deep_value_same(c: &mut Criterion) {
    let mut group = c.benchmark_group("DeepValueSameGoRoutine");
    for depth in params(&[10, 20, 30, 50, 100], &[10, 100]) {
        let ctx = value_chain(depth);
        group.bench_function(BenchmarkId::new(format!("depth={depth}"), CORE), |b| {
            b.iter(|| black_box(&ctx).value::<Missing>().is_none())
        });
    }
    group.finish();
}

/// The walk DeepValueSameGoRoutine no longer measures: its missing key is
/// ruled out by the first value node's key summary, so here the key is found,
/// at the top of `depth` value layers of another type (Go has no such
/// benchmark; its miss walks the whole chain).
fn deep_value_found(c: &mut Criterion) {
    let mut group = c.benchmark_group("DeepValueFound");
    for depth in params(&[10, 30, 100], &[10, 100]) {
        let ctx = (0..depth).fold(Context::background().with_value(Key("top")), |ctx, i| {
            ctx.with_value(Layer(i))
        });
        group.bench_function(BenchmarkId::new(format!("depth={depth}"), CORE), |b| {
            b.iter(|| black_box(&ctx).value::<Key>().is_some())
        });
    }
    group.finish();
}

/// Go's `BenchmarkDeepValueNewGoRoutine`: the same lookup from a new goroutine,
/// waited for. Here a tokio task spawned from a task on a 2-worker runtime (like a
/// goroutine started from a goroutine, it runs next on the same worker) and
/// awaited; the context is cloned into it.
fn deep_value_new(c: &mut Criterion) {
    let mut group = c.benchmark_group("DeepValueNewGoRoutine");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .build()
        .expect("tokio runtime");
    for depth in params(&[10, 20, 30, 50, 100], &[10, 100]) {
        let ctx = value_chain(depth);
        group.bench_function(BenchmarkId::new(format!("depth={depth}"), CORE), |b| {
            b.iter_custom(|iters| {
                let ctx = ctx.clone();
                rt.block_on(rt.spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let ctx = ctx.clone();
                        tokio::spawn(async move { black_box(ctx.value::<Missing>().is_none()) })
                            .await
                            .expect("lookup task");
                    }
                    start.elapsed()
                }))
                .expect("driver task")
            })
        });
    }
    group.finish();
}

/// Go's `BenchmarkErrOK`: `Err()` on a live context.
fn err_ok(c: &mut Criterion) {
    let mut group = c.benchmark_group("ErrOK");
    let (ctx, _cancel) = Context::background().with_cancel();
    group.bench_function(CORE, |b| b.iter(|| black_box(&ctx).err()));
    let token = CancellationToken::new();
    group.bench_function(TOKIO_UTIL, |b| b.iter(|| black_box(&token).is_cancelled()));
    group.finish();
}

/// Go's `BenchmarkErrCanceled`: `Err()` on a canceled context.
fn err_canceled(c: &mut Criterion) {
    let mut group = c.benchmark_group("ErrCanceled");
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    group.bench_function(CORE, |b| b.iter(|| black_box(&ctx).err()));
    let token = CancellationToken::new();
    token.cancel();
    group.bench_function(TOKIO_UTIL, |b| b.iter(|| black_box(&token).is_cancelled()));
    group.finish();
}

criterion_group! {
    name = go_parity;
    config = common::config();
    targets = common_parent_cancel, with_timeout, cancel_tree, check_canceled,
        context_cancel_done, deep_value_same, deep_value_found, deep_value_new, err_ok, err_canceled
}
criterion_main!(go_parity);
