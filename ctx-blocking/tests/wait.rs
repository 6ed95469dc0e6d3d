//! Blocking waits and interruptible sleeps.

use ctx_blocking::{background, sleep, sleep_until, wait, wait_timeout, wait_until};
use ctx_core::{Cause, Error};
use std::thread;
use std::time::{Duration, Instant};

/// Cancels after `after`, from another thread.
fn cancel_later(cancel: ctx_core::CancelFunc, after: Duration) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(after);
        cancel.cancel();
    })
}

#[test]
fn wait_returns_when_canceled_from_another_thread() {
    let (ctx, cancel) = background().with_cancel();
    let canceler = cancel_later(cancel, Duration::from_millis(20));
    wait(&ctx);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    canceler.join().unwrap();
}

#[test]
fn wait_timeout_and_wait_until_time_out_on_a_live_context() {
    let (ctx, _cancel) = background().with_cancel();
    let start = Instant::now();
    assert!(!wait_timeout(&ctx, Duration::from_millis(20)));
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(!wait_until(&ctx, Instant::now() + Duration::from_millis(5)));
    assert!(!wait_until(&ctx, Instant::now() - Duration::from_secs(1)));
}

#[test]
fn wait_timeout_on_background_just_sleeps() {
    let start = Instant::now();
    assert!(!wait_timeout(&background(), Duration::from_millis(10)));
    assert!(start.elapsed() >= Duration::from_millis(10));
}

#[test]
fn sleep_completes_on_a_live_context() {
    let (ctx, _cancel) = background().with_cancel();
    let start = Instant::now();
    assert_eq!(sleep(&ctx, Duration::from_millis(20)), Ok(()));
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(sleep(&background(), Duration::from_millis(1)), Ok(()));
}

#[test]
fn sleep_is_interrupted_by_cancel() {
    let (ctx, cancel) = background().with_cancel_cause();
    let start = Instant::now();
    let canceler = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        cancel.cancel(Cause::msg("operator said stop"));
    });
    assert_eq!(sleep(&ctx, Duration::from_secs(3600)), Err(Error::Canceled));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(ctx.cause().unwrap().to_string(), "operator said stop");
    canceler.join().unwrap();
}

#[test]
fn sleep_on_a_done_context_returns_at_once() {
    let (ctx, cancel) = background().with_cancel();
    cancel.cancel();
    let start = Instant::now();
    assert_eq!(sleep(&ctx, Duration::from_secs(3600)), Err(Error::Canceled));
    assert_eq!(sleep(&ctx, Duration::ZERO), Err(Error::Canceled));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn sleep_is_cut_short_by_a_deadline() {
    // Taken before the deadline is set, which is 30 ms after a later instant.
    let start = Instant::now();
    let (ctx, _cancel) = background().with_timeout(Duration::from_millis(30));
    assert_eq!(
        sleep(&ctx, Duration::from_secs(3600)),
        Err(Error::DeadlineExceeded)
    );
    assert!((Duration::from_millis(30)..Duration::from_secs(2)).contains(&start.elapsed()));
}

#[test]
fn sleep_ending_at_the_deadline_reports_it() {
    let deadline = Instant::now() + Duration::from_millis(20);
    let (ctx, _cancel) = background().with_deadline(deadline);
    assert_eq!(sleep_until(&ctx, deadline), Err(Error::DeadlineExceeded));
}

#[test]
fn sleep_duration_max_waits_for_the_context() {
    let (ctx, cancel) = background().with_cancel();
    let canceler = cancel_later(cancel, Duration::from_millis(10));
    assert_eq!(sleep(&ctx, Duration::MAX), Err(Error::Canceled));
    canceler.join().unwrap();
}
