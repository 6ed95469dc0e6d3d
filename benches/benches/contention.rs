//! Contention: checking a context while another thread churns children.
//!
//! The checked context is a live cancelable parent. A second thread creates and
//! drops children in a loop, either under another parent (`contention=low`: the
//! threads share the allocator and the cores, not the context) or under the
//! checked parent itself (`contention=high`: every child joins and leaves the
//! checked node's child list). `contention=none` runs without the second thread.
//!
//! * `ContextCancelDone/contention=*`: mean cost of one `is_done()`
//!   (tokio-util: `is_cancelled()`), the ContextCancelDone-style read.
//! * `WorstCheck/contention=*`: every check is timed on its own with `Instant`
//!   and recorded in a histogram; criterion's mean includes the clock read, and
//!   the tail (p99.9, p99.99, max, checks over 1 µs) is printed and written to
//!   `target/ctx-bench/tail.txt` for the report. The `none` row is the noise
//!   floor of the machine (interrupts, preemption): a tail at that level is not
//!   the library's doing.

mod common;

use benches::harness::Busy;
use benches::stats::{Histogram, record_tail};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use ctx_core::Context;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CORE: &str = "ctx-core";
const TOKIO_UTIL: &str = "tokio-util";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    None,
    Low,
    High,
}

impl Level {
    const ALL: [Level; 3] = [Level::None, Level::Low, Level::High];

    fn name(self) -> &'static str {
        match self {
            Level::None => "contention=none",
            Level::Low => "contention=low",
            Level::High => "contention=high",
        }
    }
}

/// A ctx-core parent to check, and the churn thread the level asks for.
fn core_setup(level: Level) -> (Context, Option<Busy>, [ctx_core::CancelFunc; 2]) {
    let (checked, cancel_checked) = Context::background().with_cancel();
    let (other, cancel_other) = Context::background().with_cancel();
    let churned = match level {
        Level::None => None,
        Level::Low => Some(other),
        Level::High => Some(checked.clone()),
    };
    let busy = churned.map(|parent| Busy::start(move || drop(black_box(parent.with_cancel()))));
    (checked, busy, [cancel_checked, cancel_other])
}

/// The tokio-util counterpart of [`core_setup`].
fn token_setup(level: Level) -> (CancellationToken, Option<Busy>) {
    let checked = CancellationToken::new();
    let churned = match level {
        Level::None => None,
        Level::Low => Some(CancellationToken::new()),
        Level::High => Some(checked.clone()),
    };
    let busy = churned.map(|parent| Busy::start(move || drop(black_box(parent.child_token()))));
    (checked, busy)
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("ContextCancelDone");
    for level in Level::ALL {
        let id = |imp| BenchmarkId::new(level.name(), imp);
        {
            let (ctx, busy, _cancels) = core_setup(level);
            group.bench_function(id(CORE), |b| b.iter(|| black_box(&ctx).is_done()));
            drop(busy);
        }
        {
            let (token, busy) = token_setup(level);
            group.bench_function(id(TOKIO_UTIL), |b| {
                b.iter(|| black_box(&token).is_cancelled())
            });
            drop(busy);
        }
    }
    group.finish();
}

/// Times each of `iters` checks alone; returns their sum for criterion.
#[inline]
fn timed_checks(iters: u64, histogram: &mut Histogram, check: impl Fn() -> bool) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        black_box(check());
        let took = start.elapsed();
        histogram.record(took);
        total += took;
    }
    total
}

fn worst_one(
    group: &mut BenchmarkGroup<'_, WallTime>,
    level: Level,
    imp: &str,
    check: impl Fn() -> bool,
    busy: Option<Busy>,
) {
    let mut histogram = Histogram::new();
    group.bench_function(BenchmarkId::new(level.name(), imp), |b| {
        b.iter_custom(|iters| timed_checks(iters, &mut histogram, &check))
    });
    let steps = busy.as_ref().map_or(0, Busy::steps);
    drop(busy);
    if histogram.count() > 0 {
        let id = format!("WorstCheck/{}/{imp}", level.name());
        if let Err(err) = record_tail(&id, &histogram) {
            eprintln!("could not write the tail file: {err}");
        }
        if steps > 0 {
            println!("{id}: the other thread created and dropped {steps} children meanwhile");
        }
    }
}

fn worst_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("WorstCheck");
    for level in Level::ALL {
        let (ctx, busy, _cancels) = core_setup(level);
        worst_one(&mut group, level, CORE, || ctx.is_done(), busy);
        let (token, busy) = token_setup(level);
        worst_one(&mut group, level, TOKIO_UTIL, || token.is_cancelled(), busy);
    }
    group.finish();
}

criterion_group! {
    name = contention;
    config = common::config();
    targets = reads, worst_check
}
criterion_main!(contention);
