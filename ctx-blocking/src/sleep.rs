//! Interruptible sleeps: [`sleep`] and [`sleep_until`] return early, with the
//! context's error, when the context is done.

use ctx_core::{Context, Error};
use std::time::{Duration, Instant};

/// Sleeps for `duration`, or until `ctx` is done.
///
/// Returns `Ok(())` after the full duration, or `Err` with the context's error as
/// soon as it is done (at once if it already is). The context is checked again
/// when the sleep ends, so a sleep that ends at or after the context's deadline
/// reports `DeadlineExceeded` rather than success. `Duration::MAX` sleeps until
/// the context is done.
///
/// # Errors
///
/// The context's [`Error`] if it is done before or when the sleep ends.
///
/// # Examples
///
/// ```
/// use ctx_core::Error;
/// use std::time::{Duration, Instant};
///
/// let (ctx, cancel) = ctx_blocking::background().with_cancel();
/// assert_eq!(ctx_blocking::sleep(&ctx, Duration::from_millis(1)), Ok(()));
///
/// let start = Instant::now();
/// let canceler = std::thread::spawn(move || {
///     std::thread::sleep(Duration::from_millis(10));
///     cancel.cancel();
/// });
/// assert_eq!(ctx_blocking::sleep(&ctx, Duration::from_secs(3600)), Err(Error::Canceled));
/// assert!(start.elapsed() < Duration::from_secs(60));
/// # canceler.join().unwrap();
/// ```
pub fn sleep(ctx: &Context, duration: Duration) -> Result<(), Error> {
    ctx.check()?;
    if ctx.wait_timeout(duration) {
        return Err(ctx.err().unwrap_or(Error::Canceled));
    }
    ctx.check()
}

/// Like [`sleep`], until `deadline` (by the system's monotonic clock).
///
/// # Errors
///
/// The context's [`Error`] if it is done before or when the sleep ends.
pub fn sleep_until(ctx: &Context, deadline: Instant) -> Result<(), Error> {
    ctx.check()?;
    if ctx.wait_until(deadline) {
        return Err(ctx.err().unwrap_or(Error::Canceled));
    }
    ctx.check()
}
