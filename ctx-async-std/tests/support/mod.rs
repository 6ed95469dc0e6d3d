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
