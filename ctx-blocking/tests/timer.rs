//! The thread timer (`StdTimer`) as this adapter's backend: what is this
//! adapter's own (the global timer behind `background()`, the thread deadlines
//! fire on). The `Timer` contract itself is checked on `StdTimer` by
//! ctx-core's own tests, with its `timer_conformance` kit.

mod support;

use ctx_blocking::{background, wait_timeout};
use ctx_core::Error;
use ctx_core::testing::live_deadline;
use std::time::{Duration, Instant};

#[test]
fn the_global_timer_serves_background() {
    let start = Instant::now();
    let (ctx, _cancel) = background().with_timeout(Duration::from_millis(50));
    assert!(wait_timeout(&ctx, support::WATCHDOG));
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "woke before the deadline"
    );
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

/// As documented in the crate docs: deadlines fire on ctx-core's timer thread.
/// (Nothing here reads the context meanwhile: a read that sees the deadline
/// passed may complete the cancel itself, on the reading thread.)
#[test]
fn a_deadline_fires_on_the_timer_thread() {
    let (_ctx, _cancel, report) = live_deadline(|timeout| background().with_timeout(timeout));
    let name = report
        .thread_name(support::WATCHDOG)
        .expect("the deadline fired");
    assert_eq!(name.as_deref(), Some("ctx-timer"));
}
