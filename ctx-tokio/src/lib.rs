//! Tokio adapter for [`ctx_core`]: Go's `context` on tokio's timer, with task
//! helpers, error groups and signal contexts.
//!
//! [`background()`] gives a root context whose deadlines run on tokio's own time
//! driver ([`TokioTimer`]: a task, no thread of its own; a runtime that does not
//! poll that task in time, such as a current-thread runtime nobody drives or a
//! multi-thread worker busy with a task that does not yield, is covered by one
//! backstop thread per process), so
//! `tokio::time::pause()` and `advance()` drive contexts exactly as they drive
//! `tokio::time::sleep`, and deadline tests run instantly. On top of it:
//! [`run_until_done`] and [`sleep`] race a future against a context, [`spawn`]
//! binds a task to one, [`Group`] is Go's `errgroup.WithContext`,
//! [`signal_context`] is Go's `signal.NotifyContext` with the signal as the
//! cause, and [`after_func_spawn`] runs a callback as a task (Go's `AfterFunc`).
//! Libraries keep depending on `ctx-core` only.
//!
//! # Examples
//!
//! ```
//! use ctx_core::{Context, Error};
//! use std::time::Duration;
//!
//! /// A library function: takes the context first, gives up when it is done.
//! async fn fetch(ctx: &Context, id: u32) -> Result<String, Error> {
//!     // Pretend the backend needs 50 ms per item.
//!     ctx_tokio::sleep(ctx, Duration::from_millis(50)).await?;
//!     Ok(format!("item {id}"))
//! }
//!
//! // `start_paused` (a paused clock) needs tokio's `test-util` feature:
//! // tokio = { version = "1", features = ["macros", "rt", "test-util"] }
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() {
//!     let root = ctx_tokio::background();
//!
//!     // Every request gets a deadline; the paused clock makes this run instantly.
//!     let (ctx, _cancel) = root.with_timeout(Duration::from_millis(120));
//!     assert_eq!(fetch(&ctx, 1).await.as_deref(), Ok("item 1"));
//!     assert_eq!(fetch(&ctx, 2).await.as_deref(), Ok("item 2"));
//!     assert_eq!(fetch(&ctx, 3).await, Err(Error::DeadlineExceeded));
//!
//!     // An error group: the first failure cancels the siblings, with its cause.
//!     let (mut group, group_ctx) = ctx_tokio::Group::new(&root);
//!     for id in 0..3 {
//!         group.spawn(move |ctx| async move {
//!             if id == 1 {
//!                 return Err(ctx_core::Cause::msg("item 1 is corrupt"));
//!             }
//!             ctx_tokio::sleep(&ctx, Duration::from_secs(60)).await?;
//!             Ok(())
//!         });
//!     }
//!     let err = group.wait().await.unwrap_err();
//!     assert_eq!(err.to_string(), "item 1 is corrupt");
//!     assert_eq!(group_ctx.cause().unwrap().to_string(), "item 1 is corrupt");
//! }
//! ```
//!
//! # Go → Rust
//!
//! | Go | ctx-tokio |
//! |---|---|
//! | `context.Background()` (with the runtime's clock) | [`background()`], [`try_background()`] |
//! | `select { case <-ctx.Done(): … case v := <-work: … }` | [`run_until_done`] |
//! | `select { case <-ctx.Done(): … case <-time.After(d): … }` | [`sleep`], [`sleep_until`] |
//! | `go f(ctx)` that must stop with `ctx` | [`spawn`] → [`TaskHandle`] |
//! | `context.AfterFunc` (runs `f` in a goroutine) | [`after_func_spawn`], [`after_func_spawn_blocking`] |
//! | `errgroup.WithContext`, `Go`, `TryGo`, `SetLimit`, `Wait` | [`Group::new`], [`Group::spawn`], [`Group::try_spawn`], [`Group::with_limit`], [`Group::wait`] |
//! | `signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)`, its `stop` | [`signal_context`] (cause: [`SignalError`]), [`SignalStop`]; [`SignalOptions`] |
//! | a custom parent `Context` | [`with_cancel_on`], [`with_cancel_cause_on`] |
//!
//! # Features
//!
//! * `tokio-util` (off by default): a bridge to and from tokio-util's
//!   `CancellationToken`: `ContextTokenExt::to_token` (a `ContextToken` guard)
//!   and `from_token`.
//!
//! # Runtime requirements
//!
//! The timer needs tokio's time driver (`enable_all`, as `#[tokio::main]` and
//! `#[tokio::test]` set up, covers it); signal contexts need no runtime.
//! Functions that spawn panic outside a runtime, as `tokio::spawn` does; the root
//! constructors have `try_` variants that return [`NoRuntime`] instead.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod group;
mod signal;
mod task;
mod timer;
#[cfg(feature = "tokio-util")]
mod token;

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use group::{Group, PanicError};
#[cfg(unix)]
pub use signal::signal_context_with;
pub use signal::{SignalError, SignalOptions, SignalStop, signal_context, try_signal_context};
pub use task::{
    TaskError, TaskHandle, after_func_spawn, after_func_spawn_blocking, run_until_done, sleep,
    sleep_until, spawn, with_cancel_cause_on, with_cancel_on,
};
pub use timer::{NoRuntime, TokioTimer, background, try_background};

#[doc(hidden)]
pub use task::__mixed_clock_findings;
#[cfg(feature = "tokio-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-util")))]
pub use token::{ContextToken, ContextTokenExt, TokenCanceled, from_token};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<TokioTimer>();
        assert_send_sync::<NoRuntime>();
        assert_send_sync::<Group>();
        assert_send_sync::<PanicError>();
        assert_send_sync::<TaskError>();
        assert_send_sync::<TaskHandle<u32>>();
        assert_send_sync::<SignalError>();
        #[cfg(feature = "tokio-util")]
        assert_send_sync::<TokenCanceled>();
        #[cfg(feature = "tokio-util")]
        assert_send_sync::<ContextToken>();
    }
}
