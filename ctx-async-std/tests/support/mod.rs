//! Helpers shared by the integration tests.

/// Runs an async test body once under async-std and once under smol.
#[allow(unused_macros)] // not every test binary uses it
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[async_std::test]
            async fn async_std() {
                super::$name().await
            }

            #[test]
            fn smol() {
                smol::block_on(super::$name())
            }
        }
    )*};
}

/// How long a test may take before the watchdog calls it hung: generous, so
/// that only a real hang (never a slow machine) fails it.
#[allow(dead_code)] // not every test binary uses it
pub(crate) const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(60);

/// Awaits `fut`, or fails the test if it has not completed within [`WATCHDOG`].
#[allow(dead_code)] // not every test binary uses it
pub(crate) async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    let watchdog = async {
        async_io::Timer::after(WATCHDOG).await;
        panic!("{what}: still pending after {WATCHDOG:?}, it hangs");
    };
    smol::future::or(fut, watchdog).await
}

/// The thread that cancels `ctx`, as told by the waker of a pending `done()`
/// (a cancel wakes the waiters on the thread that runs it). Keep the returned
/// `Done` until then: dropping it unregisters the waker.
#[allow(dead_code)] // not every test binary uses it
pub(crate) fn firing_thread(
    ctx: &ctx_core::Context,
) -> (ctx_core::Done, std::sync::mpsc::Receiver<Option<String>>) {
    use std::sync::{Arc, Mutex, mpsc};
    use std::task::{Context as TaskContext, Wake, Waker};

    struct Report(Mutex<Option<mpsc::Sender<Option<String>>>>);
    impl Wake for Report {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if let Some(tx) = self.0.lock().unwrap().take() {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
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
/// timing assertion): for what an expiry task or ctx-core's runner threads do a
/// moment later.
#[allow(dead_code)] // not every test binary uses it
pub(crate) fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let give_up = std::time::Instant::now() + WATCHDOG;
    while std::time::Instant::now() < give_up {
        if condition() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    condition()
}
