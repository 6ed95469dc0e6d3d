//! Blocking waits on a context: [`wait`], [`wait_timeout`], [`wait_until`].
//!
//! Thin, named entry points over ctx-core's `Context::wait*`, which park the
//! thread on the context's waiter list (no polling, no timer thread involved;
//! but see the crate docs for a deadline on a clock other than the system's).

use ctx_core::Context;
use std::time::{Duration, Instant};

/// Blocks the current thread until `ctx` is done.
///
/// Blocks forever on a context that can never be canceled (`background()`,
/// `without_cancel()`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let (ctx, _cancel) = ctx_blocking::background().with_timeout(Duration::from_millis(10));
/// ctx_blocking::wait(&ctx);
/// assert!(ctx.err().unwrap().is_timeout());
/// ```
pub fn wait(ctx: &Context) {
    ctx.wait();
}

/// Blocks until `ctx` is done or `timeout` has elapsed; returns whether `ctx` is
/// done.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let (ctx, cancel) = ctx_blocking::background().with_cancel();
/// assert!(!ctx_blocking::wait_timeout(&ctx, Duration::from_millis(5)));
/// cancel.cancel();
/// assert!(ctx_blocking::wait_timeout(&ctx, Duration::from_secs(3600)));
/// ```
#[must_use = "the result says whether the context is done or the time ran out"]
pub fn wait_timeout(ctx: &Context, timeout: Duration) -> bool {
    ctx.wait_timeout(timeout)
}

/// Blocks until `ctx` is done or `deadline` (by the system's monotonic clock) has
/// passed; returns whether `ctx` is done.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let (ctx, _cancel) = ctx_blocking::background().with_cancel();
/// assert!(!ctx_blocking::wait_until(&ctx, Instant::now() + Duration::from_millis(5)));
/// ```
#[must_use = "the result says whether the context is done or the time ran out"]
pub fn wait_until(ctx: &Context, deadline: Instant) -> bool {
    ctx.wait_until(deadline)
}
