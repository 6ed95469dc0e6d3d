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
