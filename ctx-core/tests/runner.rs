//! The runner threads that `after_func` callbacks run on: callbacks that block
//! never starve the ones queued behind them, and a burst of quick callbacks
//! does not start a thread per callback.

mod support;

use ctx_core::Context;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use support::{WATCHDOG, eventually, within_watchdog};

/// How many threads named `ctx-runner` the process has now (Linux), or `None`
/// where that cannot be read.
fn runner_threads() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "ctx-runner")
            .count(),
    )
}

/// Far more callbacks than CPUs, each waiting until every one of them has
/// started (a barrier): they can only all finish if the runner gives each a
/// thread of its own, as Go gives each `AfterFunc` a goroutine. The runner
/// starts threads beyond its eager ones as the queue stands still.
#[test]
#[cfg_attr(miri, ignore = "dozens of threads blocked on one barrier")]
fn callbacks_that_wait_for_each_other_all_get_a_thread() {
    within_watchdog("callbacks waiting for each other", || {
        let n = 4 * std::thread::available_parallelism().map_or(4, usize::from) + 8;
        let (ctx, cancel) = Context::background().with_cancel();
        let barrier = Arc::new(Barrier::new(n));
        let finished = Arc::new(AtomicUsize::new(0));
        let registrations: Vec<_> = (0..n)
            .map(|_| {
                let (barrier, finished) = (barrier.clone(), finished.clone());
                ctx.after_func(move || {
                    barrier.wait();
                    finished.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        cancel.cancel();
        assert!(eventually(|| finished.load(Ordering::SeqCst) == n));
        drop(registrations);
    });
}

/// Twenty thousand children, each with a callback that returns at once, all set
/// free by one cancel: they run on a handful of threads (four or five here).
/// Starting a thread for every job that found none idle started between 14
/// and 129 here.
#[test]
#[cfg_attr(miri, ignore = "twenty thousand callbacks")]
fn a_burst_of_quick_callbacks_runs_on_a_few_threads() {
    let n = 20_000;
    let (root, cancel) = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let children: Vec<_> = (0..n)
        .map(|_| {
            let (child, cancel_child) = root.with_cancel();
            let ran = ran.clone();
            let registration = child.after_func(move || {
                ran.fetch_add(1, Ordering::Relaxed);
            });
            (child, cancel_child, registration)
        })
        .collect();
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (peak, ran) = (peak.clone(), ran.clone());
        std::thread::spawn(move || {
            let give_up = std::time::Instant::now() + WATCHDOG;
            while ran.load(Ordering::Relaxed) < n && std::time::Instant::now() < give_up {
                peak.fetch_max(runner_threads().unwrap_or(0), Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    cancel.cancel();
    assert!(eventually(|| ran.load(Ordering::Relaxed) == n));
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    // The eager threads (one per CPU, at least 4), and what the monitor adds
    // while the queue stands still (descheduled threads on a busy machine):
    // a bound far below one thread per callback.
    assert!(peak <= 64, "{peak} runner threads for {n} quick callbacks");
    drop(children);
}
