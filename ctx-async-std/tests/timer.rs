//! The async-io timer backend: the `Timer` contract (ctx-core's
//! `timer::conformance` kit, from plain threads), and what is this adapter's
//! own: expiry whatever executor awaits, the global backend, where deadlines
//! fire.

mod support;

use ctx_async_std::AsyncIoTimer;
use ctx_core::testing::live_deadline;
use ctx_core::{Context, Error};
use std::sync::Arc;
use std::time::Duration;

/// The contract, from plain threads: async-io's reactor and smol's executor
/// run on their own threads.
mod conformance {
    use ctx_async_std::AsyncIoTimer;
    use ctx_core::timer::conformance::Harness;

    ctx_core::timer_conformance_tests!(Harness::new(AsyncIoTimer::new).armed(AsyncIoTimer::armed));
}

/// A root whose subtree arms its deadlines on a private backend.
fn root(timer: &Arc<AsyncIoTimer>) -> Context {
    Context::background().with_timer(timer.clone())
}

/// Awaits a 20 ms timeout on a private backend and checks it fired: the
/// expiry does not depend on the executor that awaits.
async fn a_timeout_ends_the_wait(timer: Arc<AsyncIoTimer>) {
    let (ctx, _cancel) = root(&timer).with_timeout(Duration::from_millis(20));
    support::within("done() of a 20 ms timeout", ctx.done()).await;
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(support::eventually(|| timer.armed() == 0));
}

#[async_std::test]
async fn fires_under_async_std() {
    a_timeout_ends_the_wait(AsyncIoTimer::new()).await;
}

#[test]
fn fires_under_smol() {
    smol::block_on(a_timeout_ends_the_wait(AsyncIoTimer::new()));
}

#[test]
fn the_global_backend_serves_background() {
    let (ctx, _cancel) = ctx_async_std::background().with_timeout(Duration::from_millis(20));
    smol::block_on(ctx.done());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.to_string().split('(').next(),
        Some("context.Background.WithTimer.WithDeadline")
    );
}

/// As documented on `AsyncIoTimer`: an expired deadline's cancel runs on smol's
/// executor threads, named `smol-1` … `smol-N` (N is `SMOL_THREADS`, default
/// 1), never on the reactor's or the waiting thread.
#[test]
fn a_deadline_fires_on_a_smol_thread() {
    let timer = AsyncIoTimer::new();
    let (_ctx, _cancel, report) = live_deadline(|timeout| root(&timer).with_timeout(timeout));
    let name = report
        .thread_name(support::WATCHDOG)
        .expect("the deadline fired");
    // Read as smol reads it: a number, else the default.
    let threads: usize = std::env::var("SMOL_THREADS")
        .ok()
        .and_then(|threads| threads.parse().ok())
        .unwrap_or(1);
    let smol_threads: Vec<String> = (1..=threads).map(|n| format!("smol-{n}")).collect();
    assert!(
        name.as_ref()
            .is_some_and(|name| smol_threads.contains(name)),
        "fired on {name:?}, not one of {smol_threads:?}"
    );
}

/// Deadlines that fall due while `arm` runs, from threads contending for the
/// shards: the reactor may call a slot before its `arm` files the entry. Every
/// one fires and the count returns to 0.
#[test]
fn deadlines_due_during_arm_fire_and_leave_no_entry() {
    let timer = AsyncIoTimer::new();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let root = root(&timer);
            std::thread::spawn(move || {
                let mut ctxs = Vec::new();
                for i in 0..5_000u64 {
                    ctxs.push(root.with_timeout(Duration::from_nanos(i % 64 * 1_000)));
                }
                for (ctx, _cancel) in &ctxs {
                    smol::block_on(support::within("done()", ctx.done()));
                    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        support::eventually(|| timer.armed() == 0),
        "armed {}",
        timer.armed()
    );
}
