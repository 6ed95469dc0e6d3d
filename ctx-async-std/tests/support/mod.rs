//! Helpers shared by the integration tests.

/// Runs an async test body once under async-std and once under smol.
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
