//! `ServerLayer` over an inner service that is not ready: the request's
//! context starts at arrival, and its deadline, the server's maximum and a
//! shutdown all hold while the request waits for the service.

use ctx_core::{Cause, Context};
use ctx_http::{GRPC_TIMEOUT, ServerCause, ServerLayer};
use http::{HeaderValue, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A handler that takes a second, counting its calls, behind tower's
/// `ConcurrencyLimit` of one: a server that handles one request at a time.
fn one_at_a_time(
    calls: Arc<AtomicUsize>,
) -> ConcurrencyLimit<
    impl Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static,
> {
    let handler = service_fn(move |_req: Request<String>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(Response::new("done".to_owned()))
        }
    });
    ConcurrencyLimit::new(handler, 1)
}

/// A request whose client allows 100 ms and that arrives while another is
/// served gets its 504 after 100 ms ("the deadline covers the whole
/// response"; "counted again from arrival"), not a second later, and its
/// handler is never called.
#[tokio::test(start_paused = true)]
async fn a_request_waiting_for_a_busy_service_gets_its_504_at_its_deadline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServerLayer::new(&ctx_tokio::background()).layer(one_at_a_time(calls.clone()));

    let busy = tokio::spawn(service.clone().oneshot(Request::new(String::new())));
    tokio::task::yield_now().await; // the first request holds the only slot
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let start = Instant::now();
    let mut request = Request::new(String::new());
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static("100m"));
    let response = service.clone().oneshot(request).await.unwrap();
    let took = start.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response.body(),
        "context deadline exceeded: the client's deadline passed (grpc-timeout 100ms)"
    );
    assert_eq!(took, Duration::from_millis(100), "for a 100 ms budget");

    // The first request is served in full, by the instance that was readied.
    let first = busy.await.unwrap().unwrap();
    assert_eq!(first.body(), "done");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the late request ran");
}

/// The server's maximum holds while the request waits, too.
#[tokio::test(start_paused = true)]
async fn the_server_maximum_holds_while_the_service_is_busy() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServerLayer::new(&ctx_tokio::background())
        .max_timeout(Duration::from_millis(300))
        .layer(one_at_a_time(calls.clone()));
    let busy = tokio::spawn(service.clone().oneshot(Request::new(String::new())));
    tokio::task::yield_now().await;

    let start = Instant::now();
    let response = service
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    // The first request's own maximum passed as well (its handler takes 1 s).
    assert_eq!(
        busy.await.unwrap().unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A shutdown answers a waiting request with 503 at once.
#[tokio::test(start_paused = true)]
async fn a_shutdown_answers_a_waiting_request_with_503() {
    let (root, shutdown) = ctx_tokio::background().with_cancel_cause();
    let calls = Arc::new(AtomicUsize::new(0));
    let limited = one_at_a_time(calls.clone());
    // Something outside the layer holds the only slot (and does not let go
    // at shutdown).
    let mut holder = limited.clone();
    ServiceExt::<Request<String>>::ready(&mut holder)
        .await
        .unwrap();
    let service = ServerLayer::new(&root).layer(limited);

    let waiting = tokio::spawn(service.clone().oneshot(Request::new(String::new())));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished());
    let start = Instant::now();
    shutdown.cancel(Cause::msg("shutting down"));
    // (Bounded, so that a layer that waits on fails rather than hangs.)
    let response = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered at shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.body(), "context canceled: shutting down");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    drop(holder);
}

/// A client that hangs up while its request waits: `ClientGone`.
#[tokio::test(start_paused = true)]
async fn a_request_dropped_while_waiting_is_client_gone() {
    let seen = Arc::new(Mutex::new(None));
    let keep = seen.clone();
    let service = ServerLayer::new(&ctx_tokio::background())
        .map_context(move |_parts, ctx| {
            *keep.lock().unwrap() = Some(ctx.clone());
            ctx
        })
        .layer(one_at_a_time(Arc::new(AtomicUsize::new(0))));
    let busy = tokio::spawn(service.clone().oneshot(Request::new(String::new())));
    tokio::task::yield_now().await;

    let waiting = tokio::spawn(service.clone().oneshot(Request::new(String::new())));
    tokio::task::yield_now().await;
    let ctx: Context = seen.lock().unwrap().take().unwrap();
    assert!(!ctx.is_done());
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause.downcast_ref::<ServerCause>(),
        Some(&ServerCause::ClientGone)
    );
    busy.await.unwrap().unwrap();
}

/// A service whose readiness fails, or panics.
#[derive(Clone)]
struct BadReadiness {
    panics: bool,
}

impl Service<Request<String>> for BadReadiness {
    type Response = Response<String>;
    type Error = std::io::Error;
    type Future = Ready<Result<Response<String>, std::io::Error>>;
    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), std::io::Error>> {
        if self.panics {
            panic!("the service's readiness has a bug");
        }
        Poll::Ready(Err(std::io::Error::other("the pool is closed")))
    }
    fn call(&mut self, _req: Request<String>) -> Self::Future {
        unreachable!("never ready")
    }
}

/// The service's readiness error is the answer's, and the request is over.
#[tokio::test]
async fn a_readiness_error_passes_through_and_ends_the_context() {
    let seen = Arc::new(Mutex::new(None));
    let keep = seen.clone();
    let service = ServerLayer::new(&ctx_tokio::background())
        .map_context(move |_parts, ctx| {
            *keep.lock().unwrap() = Some(ctx.clone());
            ctx
        })
        .layer(BadReadiness { panics: false });
    let err = service
        .oneshot(Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the pool is closed");
    let ctx: Context = seen.lock().unwrap().take().unwrap();
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause.downcast_ref::<ServerCause>(),
        Some(&ServerCause::Responded)
    );
}

/// A panic out of the service's readiness ends the request as `Panicked`.
#[tokio::test]
async fn a_readiness_panic_ends_the_context_as_panicked() {
    let seen = Arc::new(Mutex::new(None));
    let keep = seen.clone();
    let service = ServerLayer::new(&ctx_tokio::background())
        .map_context(move |_parts, ctx| {
            *keep.lock().unwrap() = Some(ctx.clone());
            ctx
        })
        .layer(BadReadiness { panics: true });
    let served = tokio::spawn(service.oneshot(Request::new(String::new()))).await;
    assert!(served.unwrap_err().is_panic());
    let ctx: Context = seen.lock().unwrap().take().unwrap();
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause.downcast_ref::<ServerCause>(),
        Some(&ServerCause::Panicked)
    );
}

/// A handler that is not `Clone` (tower's `RateLimit`) in tower's `Buffer`:
/// the wait happens in the buffer's worker, and the layer races the buffer's
/// future. A request answered 504 while it is queued is never handled.
#[tokio::test(start_paused = true)]
async fn over_a_buffer_a_queued_request_gets_its_504_and_is_never_handled() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handler = service_fn(move |_req: Request<String>| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, Infallible>(Response::new("done".to_owned())))
    });
    let limited = tower::limit::RateLimit::new(
        handler,
        tower::limit::rate::Rate::new(1, Duration::from_secs(1)),
    );
    let buffered = tower::buffer::Buffer::new(limited, 8);
    let service = ServerLayer::new(&ctx_tokio::background()).layer(buffered);
    let first = service
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(first.body(), "done");

    let start = Instant::now();
    let mut request = Request::new(String::new());
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static("100m"));
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the late request was handled"
    );
}
