//! The blocking-thread adapter for `ctx` (Go's `context` for Rust): waits,
//! interruptible sleeps, scoped threads with error-group semantics and a signal
//! context, for code that runs on plain threads with no async runtime.
//!
//! Deadlines are served by ctx-core's own timer thread ([`StdTimer`]), so
//! [`background`] is simply `Context::background()`. Every wait parks the thread
//! on the context itself and wakes the moment it is canceled: no polling. (One
//! exception: under a deadline on a clock other than the system's, a paused or
//! manual one whose time cannot be slept on, a wait also reads the context
//! again at least every second, so that it sees the deadline pass however
//! that clock is moved; while the clock stands still, after 1 ms, then twice
//! as long each time.)
//!
//! # Examples
//!
//! ```
//! use ctx_blocking::{scope, sleep};
//! use ctx_core::{Cause, Error};
//! use std::time::Duration;
//!
//! fn fetch(ctx: &ctx_core::Context, id: u64) -> Result<u64, Error> {
//!     sleep(ctx, Duration::from_millis(5 * id))?;
//!     Ok(id * 10)
//! }
//!
//! let root = ctx_blocking::background();
//!
//! // A timeout: whatever runs under `ctx` stops after 50 ms.
//! let (ctx, _cancel) = root.with_timeout(Duration::from_millis(50));
//! assert_eq!(fetch(&ctx, 1), Ok(10));
//! assert_eq!(sleep(&ctx, Duration::from_secs(3600)), Err(Error::DeadlineExceeded));
//!
//! // Scoped threads: the first failure cancels the others, with itself as cause.
//! let ids = [1, 2, 3];
//! let result = scope(&root, |group| {
//!     for &id in &ids {
//!         group.spawn(move |ctx| {
//!             fetch(&ctx, id)?;
//!             Err(Cause::msg(format!("worker {id} failed")))
//!         });
//!     }
//! });
//! assert_eq!(result.unwrap_err().to_string(), "worker 1 failed");
//! ```
//!
//! # What is in it
//!
//! | item | what it does |
//! |---|---|
//! | [`background`], [`StdTimer`] | the root context, and the timer thread behind its deadlines |
//! | [`Context::wait`], [`Context::wait_timeout`], [`Context::wait_until`] | block until a context is done (or time runs out): ctx-core's methods, for any thread |
//! | [`sleep`](fn@sleep), [`sleep_until`] | sleeps that end early, with the context's error |
//! | [`scope`](fn@scope), [`scope_with_limit`], [`Group`], [`PanicError`] | scoped threads: first error cancels the rest |
//! | [`signal_context`], [`SignalStop`], [`SignalOptions`], [`SignalError`] | Go's `signal.NotifyContext`, with the signal as cause; the one watcher every adapter uses |
//!
//! # Where deadlines fire
//!
//! Deadlines fire on ctx-core's timer thread ([`StdTimer`]: one thread per
//! process, named `ctx-timer`, started with the first deadline), never on a thread
//! that waits: [`Context::wait`] and [`sleep`](fn@sleep) only park until the context is done. Firing
//! runs no user code there: the context's [`after_func`](Context::after_func)
//! callbacks, and the `Drop`s of contexts the expiry released last, run on
//! ctx-core's runner threads (`ctx-runner`), so one callback that blocks never
//! delays another deadline.
//!
//! # Cost of a deadline
//!
//! An armed deadline is an entry in the binary heap of one of [`StdTimer`]'s
//! shards. Arming locks the shard the calling thread (nearly always) has to
//! itself and pushes; disarming is a counter update, and a disarmed deadline
//! is dropped lazily, when dead entries make up half of its shard (that sweep
//! runs under the shard's lock). See [`StdTimer`] for the details.
//!
//! # Features
//!
//! None.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod scope;
mod signal;
mod sleep;
mod wait;

/// The README's example, compiled and run as a doctest so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use ctx_core::StdTimer;
pub use scope::{Group, PanicError, scope, scope_with_limit};
pub use signal::{SignalError, SignalOptions, SignalStop, signal_context, try_signal_context};
pub use sleep::{sleep, sleep_until};
// The methods on `Context` (`wait`, `wait_timeout`, `wait_until`) are the one
// spelling; these forwarders stay for code written against them.
#[doc(hidden)]
pub use wait::{wait, wait_timeout, wait_until};

/// Semver-exempt, not part of the API: test support that the sibling adapters
/// (ctx-tokio, ctx-async-std) share with this crate.
#[cfg(unix)]
#[doc(hidden)]
pub mod __private {
    pub use crate::signal::testing as signal_testing;
}

use ctx_core::Context;

/// The root context of this adapter: [`Context::background`], whose deadlines
/// run on ctx-core's timer thread ([`StdTimer::global`]).
///
/// Never canceled, no deadline, no values; free (no allocation). For a separate
/// timer thread, derive from `Context::background().with_timer(StdTimer::new())`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let root = ctx_blocking::background();
/// let (ctx, _cancel) = root.with_timeout(Duration::from_millis(10));
/// ctx.wait();
/// assert!(ctx.err().unwrap().is_timeout());
/// ```
pub const fn background() -> Context {
    Context::background()
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types() {
        assert_send_sync::<super::Group<'static, 'static>>();
        assert_send_sync::<super::PanicError>();
        assert_send_sync::<super::SignalError>();
        assert_send_sync::<super::SignalOptions>();
        assert_send_sync::<super::SignalStop>();
    }
}
