//! An inner future (a handler's, or a client's inner service's) whose `Drop`
//! panics as it finishes, with an output whose `Drop` panics too: the
//! future's panic comes out of the poll, and the output is dropped under a
//! guard first (dropped by that panic's unwind, it would abort the process).

use ctx_core::Context;
use ctx_http::{ClientLayer, ServerLayer};
use http::{Request, Response};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::{error, fmt};
use tower::{Layer, Service, service_fn};

/// Panics as it is dropped, with its name as the message, after counting.
struct PanicsOnDrop(&'static str, Arc<AtomicUsize>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
        panic!("{}", self.0);
    }
}

impl fmt::Debug for PanicsOnDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Display for PanicsOnDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl error::Error for PanicsOnDrop {}

/// Ready at once with an error that panics as it is dropped; panics as it is
/// dropped itself.
struct Failing {
    err: Option<PanicsOnDrop>,
    _own: PanicsOnDrop,
}

impl Failing {
    fn new(drops: &Arc<AtomicUsize>) -> Failing {
        Failing {
            err: Some(PanicsOnDrop("drop of the output", drops.clone())),
            _own: PanicsOnDrop("drop of the future", drops.clone()),
        }
    }
}

impl Future for Failing {
    type Output = Result<Response<String>, PanicsOnDrop>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Poll::Ready(Err(self.err.take().expect("polled once")))
    }
}

/// Polls `fut` once, expecting the future's drop panic to come out of it.
fn assert_the_futures_panic_comes_out<F: Future>(fut: F, drops: &AtomicUsize) {
    let mut fut = Box::pin(fut);
    let mut cx = TaskContext::from_waker(Waker::noop());
    let Err(payload) = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) else {
        panic!("the inner future's drop panicked, and the poll did not");
    };
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("drop of the future")
    );
    assert_eq!(drops.load(Ordering::SeqCst), 2, "both dropped once");
}

#[test]
fn a_handler_whose_future_and_error_both_panic_as_dropped_gives_one_panic() {
    let drops = Arc::new(AtomicUsize::new(0));
    let handler_drops = drops.clone();
    let mut service =
        ServerLayer::new(&Context::background()).layer(service_fn(move |_: Request<String>| {
            Failing::new(&handler_drops)
        }));
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let fut = service.call(Request::new(String::new()));
    assert_the_futures_panic_comes_out(fut, &drops);
}

#[test]
fn a_client_call_whose_future_and_error_both_panic_as_dropped_gives_one_panic() {
    for with_context in [false, true] {
        let drops = Arc::new(AtomicUsize::new(0));
        let call_drops = drops.clone();
        let mut service = ClientLayer::new().layer(service_fn(move |_: Request<String>| {
            Failing::new(&call_drops)
        }));
        let mut req = Request::new(String::new());
        if with_context {
            req.extensions_mut().insert(Context::background());
        }
        let fut = service.call(req);
        assert_the_futures_panic_comes_out(fut, &drops);
    }
}
