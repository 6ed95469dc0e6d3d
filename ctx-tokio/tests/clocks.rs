//! Two clocks mixed silently give wrong answers: a context on ctx-core's real
//! clock beside tokio's paused time is reported (once, through `tracing`), and a
//! context on tokio's clock is not.

use ctx_core::Context;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_real_clock_context_beside_paused_time_is_reported() {
    tokio::time::advance(Duration::from_secs(3600)).await;
    let before = ctx_tokio::__mixed_clock_findings();

    // On tokio's clock: nothing to report.
    let (tokio_ctx, _cancel) = ctx_tokio::background().with_timeout(Duration::from_secs(10));
    assert_eq!(
        ctx_tokio::sleep(&tokio_ctx, Duration::from_millis(1)).await,
        Ok(())
    );
    assert_eq!(ctx_tokio::__mixed_clock_findings(), before);

    // ctx-core's real clock is an hour behind tokio's paused one here.
    let (real_ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
    let _ = ctx_tokio::sleep(&real_ctx, Duration::from_millis(1)).await;
    assert_eq!(ctx_tokio::__mixed_clock_findings(), before + 1);
}
