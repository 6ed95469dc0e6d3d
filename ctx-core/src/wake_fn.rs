//! A waker made from a closure: the executor's code, as far as the tree can
//! tell, in the crate's own tests and in the `Timer` conformance kit.

use std::sync::Arc;
use std::task::{Wake, Waker};

/// A waker that runs `f` each time it is woken (it may cancel, drop or poll
/// contexts, as a task polled inline by its executor would).
pub(crate) fn on_wake(f: impl Fn() + Send + Sync + 'static) -> Waker {
    struct OnWake<F>(F);
    impl<F: Fn() + Send + Sync + 'static> Wake for OnWake<F> {
        fn wake(self: Arc<Self>) {
            (self.0)();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            (self.0)();
        }
    }
    Waker::from(Arc::new(OnWake(f)))
}

/// Polls a fresh `ctx.done()` once with `waker`: the future (keep it to keep
/// the waker parked) and whether it was still pending.
#[cfg(feature = "test-util")]
pub(crate) fn park(ctx: &crate::Context, waker: &Waker) -> (crate::Done, bool) {
    let mut done = ctx.done();
    let poll = std::future::Future::poll(
        std::pin::Pin::new(&mut done),
        &mut std::task::Context::from_waker(waker),
    );
    (done, poll.is_pending())
}
