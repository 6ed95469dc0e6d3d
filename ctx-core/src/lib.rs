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
//! # Guarantees
//!
//! * **Reads are cheap and run no user code.** [`Context::err`],
//!   [`is_done`](Context::is_done), [`check`](Context::check),
//!   [`cause`](Context::cause), [`deadline`](Context::deadline) and polling
//!   [`Done`] are one atomic load on a live context without a deadline
//!   ([`value`](Context::value) is O(depth) when it finds its value, and
//!   usually stops at the first value node when it does not); below a deadline, a read also finds
//!   the nearest deadline up the chain (a pointer per context in between) and
//!   asks its clock. Deadlines are exact — once the deadline passed by the
//!   timer's clock, a read reports [`Error::DeadlineExceeded`] even if the
//!   timer is late, and a cancel that comes afterwards finds the context done
//!   by its deadline, whether or not anybody read it in between (a cancel
//!   below a deadline reads the clock first; a read closes every context
//!   between the deadline and the one read, so none of them records another
//!   reason than its parent's) —
//!   but a read never cancels the subtree or runs a callback: it records the
//!   expiry with one CAS, and the subtree is walked by the timer (or the next
//!   cancel). What a read reports never changes afterwards, and `done()` and
//!   `wait()` agree with it. Below a live deadline a read asks the timer
//!   backend's clock ([`Timer::now`], code of the backend's), and the read that
//!   records an expiry wakes the waiters already asleep on it (their wakers are
//!   executor code).
//! * **A returned cancel means a done subtree.** When a [`CancelFunc`] returns (or
//!   its drop ends), the context and every descendant report done, also when the
//!   call lost a race with another cancel (it waits for the winner, as Go's
//!   cancel blocks on the winner's lock, and for atomics only: the winner runs
//!   no waker, callback or `Drop` before the subtree is done). An uncontended
//!   cancel never waits.
//! * **Where user code runs.** `after_func` callbacks run once, after the whole
//!   subtree is done when a cancel sets them free (one registered, or
//!   stopped, once the context reports done starts at once, as in Go, even
//!   while a cancel still closes descendants), each on a job of its own on
//!   ctx-core's runner threads (Go:
//!   each `AfterFunc` in a goroutine of its own): a cancel does not wait for
//!   them, they do not wait for each other, and none runs on the canceling or
//!   registering thread (whose locks it may take) or on a timer backend's thread
//!   (so one callback that blocks holds back nothing else). `Drop`s of values
//!   and closures released by a cancel run on the cancel function's thread, or
//!   on the runner when a deadline ended the context.
//! * **User code cannot break the tree.** A callback, `Drop`, waker or timer
//!   backend's `disarm` that panics never leaves a subtree half canceled or a
//!   registration leaked: the cancel finishes, then resumes the first panic of
//!   what ran on its thread (a `Drop`'s, a waker's, a `disarm`'s; a callback's
//!   panic, and any on a runner thread or a timer's, is reported by the panic
//!   hook and dropped).
//!
//! # Features
//!
//! * `anyhow`: `?` from a [`Cause`] into `anyhow::Result`.
//! * `test-util` (testing hooks, exempt from semver): `timer::conformance`, the
//!   [`Timer`] contract as a test kit for backends; `testing`, hooks that let a
//!   test force an interleaving inside the tree or see which thread ended a
//!   context.
//!
//! Nothing depends on an executor.
//!
//! # Memory ordering
//!
//! Canceling a context happens-before every observation that it is done (`err()`
//! returning `Some`, `is_done()` returning true, `done()` completing, `wait()`
//! returning, an `after_func` callback running) on any thread.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub mod adapter;
mod after_func;
mod cancel_funcs;
mod causes;
mod context;
mod error;
mod fork;
mod future;
mod group;
mod runner;
mod sync;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod timer;
mod tree;
mod waiter;
#[cfg(any(all(test, not(ctx_loom)), feature = "test-util"))]
mod wake_fn;
pub mod wire;

#[cfg(test)]
mod tests;

/// The crate README's code blocks, compiled and run as doctests so they cannot go
/// stale (the workspace README's run as doctests of the `benches` crate).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use after_func::AfterFunc;
pub use cancel_funcs::{CancelCauseFunc, CancelFunc, Canceler, ContextGuard, DropGuard};
pub use causes::{PanicError, SignalError};
pub use context::Context;
pub use error::{BoxError, Cause, Error};
pub use future::{FutureExt, StreamExt, WithContext, run_until_done, run_until_done_owned};
pub use timer::Timer;

// Earlier homes of names that now live in their audience's module; kept so that
// code written against them compiles, hidden from the root's docs.
#[doc(hidden)]
pub use group::GroupCancel;
#[doc(hidden)]
pub use timer::{Expiry, StdTimer, TimerKey};
pub use waiter::Done;
#[doc(hidden)]
pub use wire::{HeaderError, decode_timeout, encode_timeout};
