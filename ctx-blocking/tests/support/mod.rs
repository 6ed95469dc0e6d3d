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

/// The thread that cancels `ctx`, as told by the waker of a pending `done()`
/// (a cancel wakes the waiters on the thread that runs it). Keep the returned
/// `Done` until then: dropping it unregisters the waker.
#[allow(dead_code)] // not every test binary uses it
pub(crate) fn firing_thread(
    ctx: &ctx_core::Context,
) -> (ctx_core::Done, mpsc::Receiver<Option<String>>) {
    use std::sync::{Arc, Mutex};
    use std::task::{Context as TaskContext, Wake, Waker};

    struct Report(Mutex<Option<mpsc::Sender<Option<String>>>>);
    impl Wake for Report {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if let Some(tx) = self.0.lock().unwrap().take() {
                let _ = tx.send(thread::current().name().map(str::to_owned));
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let waker = Waker::from(Arc::new(Report(Mutex::new(Some(tx)))));
    let mut done = ctx.done();
    let polled = std::future::Future::poll(
        std::pin::Pin::new(&mut done),
        &mut TaskContext::from_waker(&waker),
    );
    assert!(polled.is_pending(), "the context is live");
    (done, rx)
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
