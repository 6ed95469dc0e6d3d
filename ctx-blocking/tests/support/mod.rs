//! Helpers shared by the integration tests.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long a test may take before the watchdog calls it hung: generous, so
/// that only a real hang (never a slow machine) fails it.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and returns its result, or fails the test if it
/// has not returned within [`WATCHDOG`] (the hung thread is left behind).
#[allow(dead_code)] // not every test binary uses it
pub(crate) fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => panic!("{what}: still running after {WATCHDOG:?}, it hangs"),
    }
}

/// Polls `condition` until it holds or [`WATCHDOG`] passes (a watchdog, not a
/// timing assertion): for what the timer thread does a moment later.
#[allow(dead_code)] // not every test binary uses it
pub(crate) fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let give_up = std::time::Instant::now() + WATCHDOG;
    while std::time::Instant::now() < give_up {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    condition()
}
