//! Go's `context` package for Rust: cancellation, deadlines and request-scoped
//! values in one lock-free tree, for any executor or none.
//!
//! A [`Context`] is passed as the first argument down a call tree. Whoever created
//! it can cancel it (or let its deadline pass), and every function below sees it:
//! by checking [`Context::err`], by awaiting [`Context::done`] on any executor, by
//! blocking in [`Context::wait`], or by registering [`Context::after_func`].
//! Libraries depend on this crate only; applications add the adapter for their
//! runtime (`ctx-tokio`, `ctx-async-std`, `ctx-blocking`) for timers and helpers.
//!
//! # Examples
//!
//! ```
//! use ctx_core::{Cause, Context, Error};
//! use std::time::Duration;
//!
//! struct UserId(u64);
//!
//! fn handle(ctx: &Context) -> Result<String, Error> {
//!     ctx.check()?;
//!     let user = ctx.value::<UserId>().map_or(0, |u| u.0);
//!     Ok(format!("hello, user {user}"))
//! }
//!
//! let root = Context::background().with_value(UserId(42));
//! let (ctx, cancel) = root.with_timeout(Duration::from_secs(1));
//! assert_eq!(handle(&ctx).unwrap(), "hello, user 42");
//!
//! let (request, stop) = ctx.with_cancel_cause();
//! stop.cancel(Cause::msg("client went away"));
//! assert_eq!(handle(&request), Err(Error::Canceled));
//! assert_eq!(request.cause().unwrap().to_string(), "client went away");
//! assert!(!ctx.is_done());
//! cancel.cancel();
//! assert!(ctx.is_done());
//! ```
//!
//! # Go → Rust
//!
//! | Go | ctx-core |
//! |---|---|
//! | `context.Background()`, `TODO()` | [`Context::background`], [`Context::todo`] |
//! | `WithCancel`, `WithCancelCause` | [`Context::with_cancel`], [`Context::with_cancel_cause`] |
//! | `WithDeadline(Cause)`, `WithTimeout(Cause)` | [`Context::with_deadline`], [`Context::with_timeout`] (`_cause`) |
//! | `WithValue`, `ctx.Value(k)` | [`Context::with_value`], [`Context::value`] (keyed by type) |
//! | `WithoutCancel`, `AfterFunc` | [`Context::without_cancel`], [`Context::after_func`] |
//! | `ctx.Done()`, `ctx.Err()`, `Cause(ctx)` | [`Context::done`] / [`Context::wait`], [`Context::err`], [`Context::cause`] |
//! | `Canceled`, `DeadlineExceeded` | [`Error::Canceled`], [`Error::DeadlineExceeded`] |
//! | `defer cancel()` | dropping the [`CancelFunc`] |
//!
//! Beyond Go: [`Context::with_cancel_any`] (canceled by any of several parents),
//! exact deadlines (an expired deadline is reported even if the timer is late),
//! pluggable [`Timer`] backends, and `grpc-timeout` headers
//! ([`Context::timeout_header`], [`Context::with_timeout_header`]).
//!
//! # Features
//!
//! None: the crate has no optional parts and no executor dependency.
//!
//! # Memory ordering
//!
//! Canceling a context happens-before every observation that it is done (`err()`
//! returning `Some`, `is_done()` returning true, `done()` completing, `wait()`
//! returning, an `after_func` callback running) on any thread.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod after_func;
mod cancel;
mod causes;
mod context;
mod error;
mod header;
mod runner;
mod sync;
mod timer;
mod tree;
mod waiter;

#[cfg(test)]
mod tests;

/// The README's code blocks, compiled and run as doctests so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub use after_func::AfterFunc;
pub use cancel::{CancelCauseFunc, CancelFunc, GroupCancel};
pub use causes::{PanicError, SignalError};
pub use context::Context;
pub use error::{Cause, Error};
pub use header::{HeaderError, decode_timeout, encode_timeout};
pub use timer::{Expiry, StdTimer, Timer, TimerKey};
pub use waiter::Done;
