//! The async-std and smol adapter for `ctx` (Go's `context` for Rust): deadlines
//! on async-io's timers, task helpers, an error group and a signal context.
//!
//! async-std and smol share one reactor, async-io's, and this crate builds on it,
//! so everything here works under either runtime (async-std is discontinued and
//! points its users to smol; the tests run on both), under any other executor, and
//! from plain threads. Start from [`background`]: contexts derived from it arm
//! their deadlines on [`AsyncIoTimer`]. Spawned work goes to smol's global
//! executor, which runs on its own threads.
//!
//! # Examples
//!
//! ```
//! use ctx_async_std::{run_until_done, sleep, Group};
//! use ctx_core::{Cause, Error};
//! use std::time::Duration;
//!
//! async fn fetch(ctx: &ctx_core::Context, id: u32) -> Result<u32, Error> {
//!     sleep(ctx, Duration::from_millis(5 * u64::from(id))).await?;
//!     Ok(id * 10)
//! }
//!
//! smol::block_on(async {
//!     let root = ctx_async_std::background();
//!
//!     // A timeout: whatever runs under `ctx` stops after 50 ms.
//!     let (ctx, _cancel) = root.with_timeout(Duration::from_millis(50));
//!     assert_eq!(fetch(&ctx, 1).await, Ok(10));
//!     let slow = run_until_done(&ctx, std::future::pending::<()>()).await;
//!     assert_eq!(slow, Err(Error::DeadlineExceeded));
//!
//!     // An error group: the first failure cancels the others, with itself as cause.
//!     let (group, _ctx) = Group::new(&root);
//!     for id in 1..=3 {
//!         group.spawn(move |ctx| async move {
//!             fetch(&ctx, id).await?;
//!             Err::<(), _>(Cause::msg(format!("worker {id} failed")))
//!         });
//!     }
//!     let err = group.wait().await.unwrap_err();
//!     assert_eq!(err.to_string(), "worker 1 failed");
//! });
//! ```
//!
//! # What is in it
//!
//! | item | what it does |
//! |---|---|
//! | [`AsyncIoTimer`], [`background`] | the timer backend, and a root context that uses it |
//! | [`run_until_done`], [`sleep`], [`sleep_until`] | a future raced against a context; interruptible sleeps |
//! | [`spawn`], [`TaskHandle`], [`TaskError`] | a task that stops when its context is done |
//! | [`after_func_spawn`], [`after_func_spawn_blocking`] | Go's `AfterFunc`: a callback run as its own task |
//! | [`with_cancel_on`], [`with_cancel_cause_on`] | a child canceled when a future completes (Go's custom parent contexts) |
//! | [`Group`], [`PanicError`] | an error group: first error cancels the rest, with a limit option |
//! | [`signal_context`], [`SignalStop`], [`SignalOptions`], [`SignalError`] | Go's `signal.NotifyContext`, with the signal as cause |
//!
//! # Cost of a deadline
//!
//! An armed deadline holds: an entry in a sharded map (the `async_io::Timer` and
//! its key: 72 bytes, plus the hash table's slack), a slot allocation that is the
//! reactor registration's waker and holds the `Expiry` (64 bytes), and an entry in
//! async-io's reactor timer tree (40 bytes, plus the B-tree's slack). About 200
//! bytes in all, and no task: arming and disarming are a shard lock, a map insert
//! or removal and a lock-free push to the reactor's queue. Only an expiry spawns a
//! task (on smol's global executor), which cancels the context.
//!
//! # Features
//!
//! None.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod group;
mod signal;
mod task;
mod timer;

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use group::{Group, PanicError};
pub use signal::{SignalError, SignalOptions, SignalStop, signal_context, try_signal_context};
pub use task::{
    TaskError, TaskHandle, after_func_spawn, after_func_spawn_blocking, run_until_done, sleep,
    sleep_until, spawn, with_cancel_cause_on, with_cancel_on,
};
pub use timer::AsyncIoTimer;

use ctx_core::Context;
use std::sync::OnceLock;

/// The root context of this adapter: [`Context::background`] with
/// [`AsyncIoTimer::global`] as the timer of its whole subtree.
///
/// Never canceled, no deadline, no values. Each call returns a handle on the
/// same process-wide root (one reference-count increment).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let root = ctx_async_std::background();
/// assert_eq!(root.err(), None);
/// let (ctx, _cancel) = root.with_timeout(Duration::from_millis(10));
/// async_std::task::block_on(ctx.done());
/// assert!(ctx.err().unwrap().is_timeout());
/// ```
pub fn background() -> Context {
    static ROOT: OnceLock<Context> = OnceLock::new();
    ROOT.get_or_init(|| Context::background().with_timer(AsyncIoTimer::global()))
        .clone()
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types() {
        assert_send_sync::<super::AsyncIoTimer>();
        assert_send_sync::<super::Group>();
        assert_send_sync::<super::TaskHandle<()>>();
        assert_send_sync::<super::TaskError>();
        assert_send_sync::<super::PanicError>();
        assert_send_sync::<super::SignalError>();
    }
}
