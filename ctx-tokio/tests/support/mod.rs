//! Helpers shared by the integration tests.

// Each test binary uses a subset of these.
#![allow(dead_code)]

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::pin;
use std::sync::{Arc, mpsc};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

/// How long a test may take before the watchdog calls it hung: generous, so
/// that only a real hang (never a slow machine) fails it.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and returns its result, or fails the test if it
/// has not returned within [`WATCHDOG`] (the hung thread is left behind).
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

/// A minimal executor for plain threads: polls `fut` and parks in between.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// Polls `condition` from a plain thread until it holds or [`WATCHDOG`] passes
/// (a watchdog, not a timing assertion): for what the driver task or ctx-core's
/// runner threads do a moment later.
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
