//! The layers in memory (no sockets): `tower::ServiceExt::oneshot` on
//! `service_fn` handlers, on tokio's paused clock where deadlines matter, so
//! that deadlines are exact and the tests take no real time.

use bytes::Bytes;
use ctx_core::{Cause, Context, Error};
use ctx_http::{
    CLIENT_CLOSED_REQUEST, ClientError, ClientLayer, GRPC_TIMEOUT, Malformed, Rejection,
    ServerCause, ServerLayer,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker, ready};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A boxed handler, so helpers can return one.
type Handler = tower::util::BoxCloneSyncService<Request<String>, Response<String>, Infallible>;

/// The context `ServerLayer` put in the request.
fn request_ctx<B>(req: &Request<B>) -> Context {
    req.extensions()
        .get::<Context>()
        .expect("ServerLayer puts the context in the request's extensions")
        .clone()
}

/// The paused tokio clock as a std instant (what `TokioTimer` reports).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn request_with_timeout(value: &'static str) -> Request<String> {
    let mut request = Request::new(String::new());
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static(value));
    request
}

/// The cause of `ctx` as a `ServerCause`.
fn server_cause(ctx: &Context) -> ServerCause {
    let cause = ctx.cause().expect("the context is done");
    *cause
        .downcast_ref::<ServerCause>()
        .unwrap_or_else(|| panic!("cause {cause:?} is not a ServerCause"))
}

/// A handler that sends its context out and then waits until it is done.
fn parked_handler(seen: tokio::sync::mpsc::UnboundedSender<Context>) -> Handler {
    Handler::new(service_fn(move |req: Request<String>| {
        let seen = seen.clone();
        async move {
            let ctx = request_ctx(&req);
            seen.send(ctx.clone()).unwrap();
            ctx.done().await;
            Ok::<_, Infallible>(Response::new("too late".to_owned()))
        }
    }))
}

/// A handler that answers with the deadline it sees, in ms from `start`.
fn deadline_handler(start: Instant) -> Handler {
    Handler::new(service_fn(move |req: Request<String>| async move {
        let ctx = request_ctx(&req);
        let answer = match ctx.deadline() {
            Some(deadline) => format!("{}", (deadline - start).as_millis()),
            None => "none".to_owned(),
        };
        Ok::<_, Infallible>(Response::new(answer))
    }))
}

// ===== the server layer: deadlines =====

#[tokio::test(start_paused = true)]
async fn grpc_timeout_sets_the_request_deadline() {
    let root = ctx_tokio::background();
    let start = now();
    let service = ServerLayer::new(&root).layer(deadline_handler(start));
    let response = service.oneshot(request_with_timeout("250m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "250");
}

#[tokio::test(start_paused = true)]
async fn without_header_or_maximum_there_is_no_deadline() {
    let root = ctx_tokio::background();
    let service = ServerLayer::new(&root).layer(deadline_handler(now()));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.body(), "none");
}

#[tokio::test(start_paused = true)]
async fn the_server_maximum_caps_a_longer_client_timeout() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(1))
        .layer(parked_handler(tx));
    let start = now();
    let response = service.oneshot(request_with_timeout("5S")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(now() - start, Duration::from_secs(1));
    assert_eq!(
        response.body(),
        "context deadline exceeded: the server's time limit per request passed (1s)"
    );
    let ctx = seen.recv().await.unwrap();
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        server_cause(&ctx),
        ServerCause::ServerDeadline {
            limit: Duration::from_secs(1)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_timeout_shorter_than_the_maximum_wins() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(10))
        .layer(parked_handler(tx));
    let start = now();
    let response = service.oneshot(request_with_timeout("100m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(now() - start, Duration::from_millis(100));
    let ctx = seen.recv().await.unwrap();
    assert_eq!(ctx.deadline(), Some(start + Duration::from_millis(100)));
    assert_eq!(
        server_cause(&ctx),
        ServerCause::ClientDeadline {
            timeout: Duration::from_millis(100)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_timeout_is_answered_at_once_without_calling_the_service() {
    let root = ctx_tokio::background();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = ServerLayer::new(&root).layer(service_fn(move |_req: Request<String>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    }));
    let response = service.oneshot(request_with_timeout("0m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_huge_valid_timeout_is_capped_by_the_maximum_or_far_away() {
    let root = ctx_tokio::background();
    let start = now();
    // 99,999,999 hours: the largest value the format can say.
    let capped = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(30))
        .layer(deadline_handler(start));
    let response = capped
        .oneshot(request_with_timeout("99999999H"))
        .await
        .unwrap();
    assert_eq!(response.body(), "30000");

    let uncapped = ServerLayer::new(&root).layer(deadline_handler(start));
    let response = uncapped
        .oneshot(request_with_timeout("99999999H"))
        .await
        .unwrap();
    let millis: u128 = response.body().parse().unwrap();
    assert!(millis > 1000 * 3600 * 24 * 365 * 1000, "{millis} ms");
}

// ===== the server layer: malformed headers =====

/// Bad `grpc-timeout` values: negative, fractional, too many digits, unknown
/// unit, empty, non-ASCII; each with the reason the 400 body must give.
const MALFORMED: [(&[u8], &str); 7] = [
    (b"-5m", "not a number"),
    (b"1.5S", "not a number"),
    (b"123456789S", "more than 8 digits"),
    (b"10d", "unknown timeout unit 'd'"),
    (b"", "empty"),
    (b"10\xc3\xa9", "not ASCII"),
    (b"\xff", "not ASCII"),
];

#[tokio::test(start_paused = true)]
async fn malformed_values_are_rejected_with_400_when_so_configured() {
    let root = ctx_tokio::background();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = ServerLayer::new(&root)
        .on_malformed(Malformed::Reject)
        .layer(service_fn(move |_req: Request<String>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        }));
    for (value, reason) in MALFORMED {
        let mut request = Request::new(String::new());
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_bytes(value).unwrap());
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{value:?}");
        assert!(
            response.body().starts_with("invalid grpc-timeout header: ")
                && response.body().contains(reason),
            "{value:?}: {}",
            response.body().as_str()
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn malformed_values_are_ignored_by_default_and_the_maximum_still_applies() {
    let root = ctx_tokio::background();
    let start = now();
    let service = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(3))
        .layer(deadline_handler(start));
    for (value, _) in MALFORMED {
        let mut request = Request::new(String::new());
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_bytes(value).unwrap());
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{value:?}");
        assert_eq!(response.body(), "3000", "{value:?}");
    }
}

// ===== the server layer: cancellation and causes =====

#[tokio::test]
async fn a_canceled_parent_answers_503_with_its_cause_without_calling_the_service() {
    let (root, shutdown) = Context::background().with_cancel_cause();
    shutdown.cancel(Cause::msg("received SIGTERM"));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = ServerLayer::new(&root).layer(service_fn(move |_req: Request<String>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    }));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.body(), "context canceled: received SIGTERM");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_parent_canceled_mid_request_answers_503_and_the_handler_sees_the_cause() {
    let (root, shutdown) = Context::background().with_cancel_cause();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root).layer(parked_handler(tx));
    let call = tokio::spawn(service.oneshot(Request::new(String::new())));
    let ctx = seen.recv().await.unwrap();
    assert!(!ctx.is_done());
    shutdown.cancel(Cause::msg("grace period over"));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.body(), "context canceled: grace period over");
    assert_eq!(ctx.cause().unwrap().to_string(), "grace period over");
}

#[tokio::test]
async fn dropping_the_response_future_cancels_with_client_gone() {
    let root = Context::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut service = ServerLayer::new(&root).layer(parked_handler(tx));
    let mut future = Box::pin(service.call(Request::new(String::new())));
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    let ctx = seen.recv().await.unwrap();
    assert!(!ctx.is_done());
    drop(future);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(server_cause(&ctx), ServerCause::ClientGone);
    assert_eq!(root.live_children(), 0);
}

#[tokio::test]
async fn an_answered_request_ends_its_context_with_responded() {
    let (root, _cancel_root) = Context::background().with_cancel();
    let (tx, rx) = oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let service = ServerLayer::new(&root).layer(service_fn(move |req: Request<String>| {
        let tx = tx.clone();
        async move {
            tx.lock()
                .unwrap()
                .take()
                .unwrap()
                .send(request_ctx(&req))
                .unwrap();
            Ok::<_, Infallible>(Response::new("ok".to_owned()))
        }
    }));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.body(), "ok");
    let ctx = rx.await.unwrap();
    assert!(!ctx.is_done(), "live until the body is sent");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(server_cause(&ctx), ServerCause::Responded);
    assert_eq!(root.live_children(), 0, "the request's node is released");
}

#[tokio::test]
async fn an_inner_error_passes_through_and_ends_the_context() {
    let root = Context::background();
    let (tx, rx) = oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let service = ServerLayer::new(&root).layer(service_fn(move |req: Request<String>| {
        let tx = tx.clone();
        async move {
            tx.lock()
                .unwrap()
                .take()
                .unwrap()
                .send(request_ctx(&req))
                .unwrap();
            Err::<Response<String>, _>(std::io::Error::other("backend exploded"))
        }
    }));
    let err = service
        .oneshot(Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "backend exploded");
    assert_eq!(server_cause(&rx.await.unwrap()), ServerCause::Responded);
}

#[tokio::test(start_paused = true)]
async fn the_inner_future_is_dropped_when_the_layer_answers() {
    struct SetOnDrop(Arc<AtomicUsize>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let root = ctx_tokio::background();
    let drops = Arc::new(AtomicUsize::new(0));
    let counted = drops.clone();
    let mut service = ServerLayer::new(&root).layer(service_fn(move |_req: Request<String>| {
        let guard = SetOnDrop(counted.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    }));
    let mut future = pin!(service.call(request_with_timeout("10m")));
    let response = future.as_mut().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    // The response future itself is still alive, but the handler is gone.
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn map_context_values_reach_the_handler_and_end_with_the_request() {
    struct RequestId(String);
    let root = Context::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut service = ServerLayer::new(&root)
        .map_context(|parts, ctx| {
            let id = parts.headers["x-request-id"].to_str().unwrap().to_owned();
            ctx.with_value(RequestId(id))
        })
        .layer(parked_handler(tx));
    let request = Request::builder()
        .header("x-request-id", "req-7")
        .body(String::new())
        .unwrap();
    let mut future = Box::pin(service.call(request));
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    let ctx = seen.recv().await.unwrap();
    assert_eq!(ctx.value::<RequestId>().unwrap().0, "req-7");
    drop(future);
    assert_eq!(server_cause(&ctx), ServerCause::ClientGone);
}

// ===== the server layer: answers =====

#[tokio::test(start_paused = true)]
async fn statuses_are_configurable() {
    let (root, shutdown) = Context::background().with_cancel_cause();
    let (tx, _seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&ctx_tokio::background())
        .deadline_status(StatusCode::REQUEST_TIMEOUT)
        .layer(parked_handler(tx.clone()));
    let response = service.oneshot(request_with_timeout("5m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);

    shutdown.cancel(Cause::msg("draining"));
    let service = ServerLayer::new(&root)
        .canceled_status(CLIENT_CLOSED_REQUEST)
        .layer(parked_handler(tx.clone()));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), CLIENT_CLOSED_REQUEST);

    let service = ServerLayer::new(&ctx_tokio::background())
        .on_malformed(Malformed::Reject)
        .malformed_status(StatusCode::UNPROCESSABLE_ENTITY)
        .layer(parked_handler(tx));
    let response = service.oneshot(request_with_timeout("soon")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(start_paused = true)]
async fn a_custom_responder_builds_the_answer() {
    let (tx, _seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&ctx_tokio::background())
        .responder(|rejection: Rejection| {
            let mut response = Response::new(format!("{{\"error\":\"{rejection}\"}}"));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        })
        .layer(parked_handler(tx));
    let response = service.oneshot(request_with_timeout("1m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.body(),
        "{\"error\":\"context deadline exceeded: the client's deadline passed (grpc-timeout 1ms)\"}"
    );
}

// ===== the server layer: streamed bodies =====

/// A response body that yields `left` chunks, one every `every` (on tokio's
/// clock), as a streaming handler would.
struct Drip {
    left: usize,
    every: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drip {
    fn new(left: usize, every: Duration) -> Drip {
        Drip {
            left,
            every,
            sleep: None,
        }
    }
}

/// For the layer's own answers (the `TextResponder`): an empty body.
impl From<String> for Drip {
    fn from(_: String) -> Drip {
        Drip::new(0, Duration::ZERO)
    }
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk")))))
    }
}

/// A handler that sends its context out and answers with a `Drip` body,
/// marked as gRPC when `grpc`.
fn streaming_handler(
    seen: tokio::sync::mpsc::UnboundedSender<Context>,
    chunks: usize,
    every: Duration,
    grpc: bool,
) -> impl Service<Request<String>, Response = Response<Drip>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |req: Request<String>| {
        seen.send(request_ctx(&req)).unwrap();
        let mut response = Response::new(Drip::new(chunks, every));
        if grpc {
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
        }
        async move { Ok::<_, Infallible>(response) }
    })
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_maximum_is_cut_with_an_error_at_the_deadline() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(1))
        .layer(streaming_handler(tx, 5, Duration::from_millis(400), false));
    let start = now();
    let response = service.oneshot(request_with_timeout("5S")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ctx = seen.recv().await.unwrap();
    let mut body = response.into_body();
    for _ in 0..2 {
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "chunk");
        assert!(!ctx.is_done());
    }
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(now() - start, Duration::from_secs(1), "cut at the deadline");
    let rejection = err.downcast_ref::<Rejection>().expect("a Rejection");
    assert_eq!(rejection.context_err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        err.to_string(),
        "context deadline exceeded: the server's time limit per request passed (1s)"
    );
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        server_cause(&ctx),
        ServerCause::ServerDeadline {
            limit: Duration::from_secs(1)
        }
    );
    drop(body);
    assert_eq!(root.live_children(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_stream_slower_than_the_client_deadline_ends_with_deadline_exceeded_trailers() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(30))
        .layer(streaming_handler(tx, 5, Duration::from_millis(400), true));
    let start = now();
    let response = service.oneshot(request_with_timeout("1S")).await.unwrap();
    let ctx = seen.recv().await.unwrap();
    let mut body = response.into_body();
    let mut chunks = 0;
    let trailers = loop {
        let frame = body
            .frame()
            .await
            .expect("trailers end the stream")
            .unwrap();
        match frame.into_data() {
            Ok(_) => chunks += 1,
            Err(frame) => break frame.into_trailers().unwrap(),
        }
    };
    assert_eq!(chunks, 2);
    assert_eq!(now() - start, Duration::from_secs(1), "cut at the deadline");
    assert_eq!(trailers["grpc-status"], "4");
    assert_eq!(
        trailers["grpc-message"],
        "context deadline exceeded: the client's deadline passed (grpc-timeout 1s)"
    );
    assert!(body.frame().await.is_none());
    assert_eq!(
        server_cause(&ctx),
        ServerCause::ClientDeadline {
            timeout: Duration::from_secs(1)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_ends_a_grpc_stream_with_unavailable() {
    let (root, shutdown) = ctx_tokio::background().with_cancel_cause();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service =
        ServerLayer::new(&root).layer(streaming_handler(tx, 5, Duration::from_secs(1), true));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    let ctx = seen.recv().await.unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    shutdown.cancel(Cause::msg("grace period over"));
    let frame = body.frame().await.unwrap().unwrap();
    let trailers = frame.into_trailers().unwrap();
    assert_eq!(trailers["grpc-status"], "14");
    assert_eq!(
        trailers["grpc-message"],
        "context canceled: grace period over"
    );
    assert_eq!(ctx.cause().unwrap().to_string(), "grace period over");
}

#[tokio::test(start_paused = true)]
async fn a_streaming_handlers_context_lives_until_its_body_ends() {
    let (root, _cancel_root) = ctx_tokio::background().with_cancel();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(10))
        .layer(streaming_handler(tx, 3, Duration::from_millis(100), true));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    let ctx = seen.recv().await.unwrap();
    let mut body = response.into_body();
    for _ in 0..3 {
        assert!(!ctx.is_done(), "live while the body streams");
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "chunk");
    }
    assert!(!ctx.is_done(), "live until the body's end is seen");
    assert!(body.frame().await.is_none());
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(server_cause(&ctx), ServerCause::Responded);
    assert_eq!(root.live_children(), 0, "the request's node is released");
    drop(body);
    assert_eq!(server_cause(&ctx), ServerCause::Responded);
}

/// A body dropped before its end (hyper drops it when the client hangs up
/// mid-stream) cut the response short: `ClientGone`, not `Responded`.
#[tokio::test(start_paused = true)]
async fn dropping_a_streaming_body_before_its_end_is_client_gone() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service =
        ServerLayer::new(&root).layer(streaming_handler(tx, 3, Duration::from_millis(100), false));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    let ctx = seen.recv().await.unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(!ctx.is_done());
    drop(body);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(server_cause(&ctx), ServerCause::ClientGone);
    assert_eq!(root.live_children(), 0);
}

/// `response`, answered through the layer to a `method` request: the
/// request's context (live until the body ends) and the response.
async fn answer_once<B: From<String> + Send + 'static>(
    method: http::Method,
    response: Response<B>,
) -> (Context, Response<ctx_http::ServerBody<B>>) {
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let response = Arc::new(std::sync::Mutex::new(Some(response)));
    let service = ServerLayer::new(&ctx_tokio::background()).layer(service_fn(
        move |req: Request<String>| {
            tx.send(request_ctx(&req)).unwrap();
            let response = response.lock().unwrap().take().expect("one call");
            async move { Ok::<_, Infallible>(response) }
        },
    ));
    let mut request = Request::new(String::new());
    *request.method_mut() = method;
    let response = service.oneshot(request).await.unwrap();
    let ctx = seen.recv().await.unwrap();
    assert!(!ctx.is_done(), "live until the body ends");
    (ctx, response)
}

/// How the request ends when the body of `response` (to a `method` request)
/// is dropped unread.
async fn cause_of_an_unread_body(method: http::Method, response: Response<String>) -> ServerCause {
    let (ctx, response) = answer_once(method, response).await;
    drop(response);
    server_cause(&ctx)
}

/// A response the client gets no body with (RFC 9110: a `HEAD` or `CONNECT`
/// request; a 1xx, 204 or 304 response) is answered once its head is: its
/// body, dropped unread, cut nothing short. Any other body dropped unread did.
#[tokio::test]
async fn a_body_dropped_unread_is_client_gone_unless_the_client_gets_none() {
    use http::Method;
    let ok = || Response::new("ok".to_owned());
    let with_status = |status: StatusCode| {
        let mut response = ok();
        *response.status_mut() = status;
        response
    };
    let cases = [
        (Method::GET, ok(), ServerCause::ClientGone),
        (Method::POST, ok(), ServerCause::ClientGone),
        (Method::HEAD, ok(), ServerCause::Responded),
        (Method::CONNECT, ok(), ServerCause::Responded),
        (
            Method::GET,
            with_status(StatusCode::SWITCHING_PROTOCOLS),
            ServerCause::Responded,
        ),
        (
            Method::GET,
            with_status(StatusCode::NO_CONTENT),
            ServerCause::Responded,
        ),
        (
            Method::GET,
            with_status(StatusCode::NOT_MODIFIED),
            ServerCause::Responded,
        ),
    ];
    for (method, response, expected) in cases {
        let what = format!("{method} answered {}", response.status());
        assert_eq!(
            cause_of_an_unread_body(method, response).await,
            expected,
            "{what}"
        );
    }
    // Even an empty body, if nothing asked it whether it ended (hyper asks
    // `is_end_stream` before polling: see the next test).
    let empty = Response::new(String::new());
    assert_eq!(
        cause_of_an_unread_body(Method::GET, empty).await,
        ServerCause::ClientGone
    );
}

/// The ways a consumer learns it has the whole body without polling for its
/// end, which hyper relies on: `is_end_stream` (asked before the first frame
/// or after any), and `content-length` bytes sent. Dropped then, the body was
/// sent: `Responded`.
#[tokio::test(start_paused = true)]
async fn a_body_dropped_once_the_client_has_all_of_it_is_responded() {
    use http::Method;
    // `is_end_stream` before any frame: an empty body.
    let (ctx, response) = answer_once(Method::GET, Response::new(String::new())).await;
    assert!(response.body().is_end_stream());
    drop(response);
    assert_eq!(server_cause(&ctx), ServerCause::Responded);

    // `is_end_stream` after the one frame of a whole body.
    let (ctx, response) = answer_once(Method::GET, Response::new("whole".to_owned())).await;
    let mut body = response.into_body();
    assert!(!body.is_end_stream());
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "whole"
    );
    assert!(
        !ctx.is_done(),
        "live until its end is seen or it is dropped"
    );
    drop(body);
    assert_eq!(server_cause(&ctx), ServerCause::Responded);

    // A streamed body of `content-length` bytes (three 5-byte chunks), whose
    // own `is_end_stream` never says: complete once 15 bytes went out.
    for (read, cause) in [(2, ServerCause::ClientGone), (3, ServerCause::Responded)] {
        let mut response = Response::new(Drip::new(3, Duration::from_millis(10)));
        response
            .headers_mut()
            .insert("content-length", HeaderValue::from_static("15"));
        let (ctx, response) = answer_once(Method::GET, response).await;
        let mut body = response.into_body();
        for _ in 0..read {
            assert_eq!(
                body.frame().await.unwrap().unwrap().into_data().unwrap(),
                "chunk"
            );
        }
        drop(body);
        assert_eq!(server_cause(&ctx), cause, "{read} chunks of 3 read");
    }

    // `content-length: 0`: nothing to send (hyper drops such a body unpolled).
    let mut response = Response::new(Drip::new(1, Duration::from_millis(10)));
    response
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("0"));
    let (ctx, response) = answer_once(Method::GET, response).await;
    drop(response);
    assert_eq!(server_cause(&ctx), ServerCause::Responded);

    // `into_inner`: the caller takes the body over, as if it was sent.
    let (ctx, response) = answer_once(Method::GET, Response::new("taken".to_owned())).await;
    let inner = response.into_body().into_inner();
    assert_eq!(server_cause(&ctx), ServerCause::Responded);
    assert_eq!(inner, "taken");
}

/// A gRPC-style body: one chunk, then trailers with `grpc-status: 0`.
#[derive(Default)]
struct ChunkThenTrailers {
    sent: usize,
}

/// For the layer's own answers: the same body.
impl From<String> for ChunkThenTrailers {
    fn from(_: String) -> ChunkThenTrailers {
        ChunkThenTrailers::default()
    }
}

impl http_body::Body for ChunkThenTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.sent += 1;
        Poll::Ready(match self.sent {
            1 => Some(Ok(Frame::data(Bytes::from_static(b"chunk")))),
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

/// The body's last frame ends the request's context, which sets its
/// `after_func` callbacks free (they run on ctx-core's runner): one that
/// panics must not cost the client that frame (the panic hook reported it;
/// the trailers still go out).
#[tokio::test]
async fn a_panicking_after_func_run_by_the_bodys_end_loses_no_trailers() {
    let root = ctx_tokio::background();
    let ran = Arc::new(AtomicUsize::new(0));
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let handler = service_fn({
        let ran = ran.clone();
        move |req: Request<String>| {
            let ctx = request_ctx(&req);
            let ran = ran.clone();
            let _keep = ctx.after_func(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                panic!("an after_func that panics at the end of the request");
            });
            tx.send(ctx).unwrap();
            async move { Ok::<_, Infallible>(Response::new(ChunkThenTrailers::default())) }
        }
    });
    let service = ServerLayer::new(&root).layer(handler);
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    let ctx = seen.recv().await.unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(!ctx.is_done());
    let frame = body.frame().await.unwrap().unwrap();
    let trailers = frame.into_trailers().expect("the trailers");
    assert_eq!(trailers["grpc-status"], "0");
    // On the runner: waited for (the bound only catches a hang).
    let give_up = Instant::now() + Duration::from_secs(30);
    while ran.load(Ordering::SeqCst) == 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the callback ran");
    assert_eq!(server_cause(&ctx), ServerCause::Responded);
    assert!(body.frame().await.is_none());
    assert_eq!(root.live_children(), 0);
}

// ===== the client layer =====

/// A transport that answers with the `grpc-timeout` it was sent, and counts calls.
fn echo_transport(
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Response<Option<HeaderValue>>, Error = Infallible> + Clone
{
    service_fn(move |req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let sent = req.headers().get(GRPC_TIMEOUT).cloned();
        async move { Ok::<_, Infallible>(Response::new(sent)) }
    })
}

/// A service that counts how often it is cloned.
struct CountClones<S> {
    inner: S,
    clones: Arc<AtomicUsize>,
}

impl<S: Clone> Clone for CountClones<S> {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        CountClones {
            inner: self.inner.clone(),
            clones: self.clones.clone(),
        }
    }
}

impl<S: Service<R>, R> Service<R> for CountClones<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

fn request_under(ctx: &Context) -> Request<()> {
    let mut request = Request::new(());
    request.extensions_mut().insert(ctx.clone());
    request
}

#[tokio::test(start_paused = true)]
async fn the_client_sends_the_remaining_time_as_grpc_timeout() {
    let root = ctx_tokio::background();
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1500));
    tokio::time::advance(Duration::from_millis(500)).await;
    let client = ClientLayer::new().layer(echo_transport(Arc::default()));
    let response = client.oneshot(request_under(&ctx)).await.unwrap();
    let sent = ctx_http::parse_timeout(response.body().as_ref().unwrap()).unwrap();
    assert_eq!(sent, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn the_client_keeps_a_shorter_timeout_and_replaces_a_longer_one() {
    let root = ctx_tokio::background();
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(2));
    let client = ClientLayer::new().layer(echo_transport(Arc::default()));
    for (there, expected) in [
        ("1S", Duration::from_secs(1)),
        ("5S", Duration::from_secs(2)),
    ] {
        let mut request = request_under(&ctx);
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_static(there));
        let response = client.clone().oneshot(request).await.unwrap();
        let sent = ctx_http::parse_timeout(response.body().as_ref().unwrap()).unwrap();
        assert_eq!(sent, expected, "{there} already there");
    }
}

/// A request that carries `grpc-timeout` several times leaves with one value,
/// the shortest that is no longer than the time left: servers differ on which
/// value they read (this crate's the first, grpc-go the last), and none may
/// read a longer timeout than the caller waits.
#[tokio::test(start_paused = true)]
async fn the_client_sends_one_timeout_when_the_request_carries_several() {
    let root = ctx_tokio::background();
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(10));
    let client = ClientLayer::new().layer(service_fn(|req: Request<()>| {
        let sent: Vec<HeaderValue> = req
            .headers()
            .get_all(GRPC_TIMEOUT)
            .iter()
            .cloned()
            .collect();
        async move { Ok::<_, Infallible>(Response::new(sent)) }
    }));
    // The `grpc-timeout` values that leave the client for a request under
    // `ctx` that carries `there`.
    let sent = |ctx: &Context, there: &[&'static str]| {
        let mut request = request_under(ctx);
        for value in there {
            request
                .headers_mut()
                .append(GRPC_TIMEOUT, HeaderValue::from_static(value));
        }
        let client = client.clone();
        async move { client.oneshot(request).await.unwrap().into_body() }
    };
    for (there, expected) in [
        (&["1S", "99S"][..], "1S"),
        (&["99S", "2S", "3S"][..], "2S"),
        (&["bad", "4S"][..], "4S"),
        (&["99S", "98S"][..], "10S"),
        (&["5S"][..], "5S"),
    ] {
        let sent = sent(&ctx, there).await;
        assert_eq!(sent.len(), 1, "{there:?} already there: sent {sent:?}");
        if expected == "10S" {
            let sent = ctx_http::parse_timeout(&sent[0]).unwrap();
            assert_eq!(sent, Duration::from_secs(10), "{there:?} already there");
        } else {
            assert_eq!(sent[0], expected, "{there:?} already there");
        }
    }
    // Without a deadline: several values are cut to the shortest valid one.
    let no_deadline = Context::background();
    for (there, expected) in [
        (&["9S", "2S"][..], &["2S"][..]),
        (&["bad", "3S", "bad"][..], &["3S"][..]),
        (&["bad"][..], &["bad"][..]),
    ] {
        assert_eq!(
            sent(&no_deadline, there).await,
            expected,
            "{there:?} already there"
        );
    }
}

#[tokio::test]
async fn the_client_refuses_to_send_when_the_context_is_done() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    cancel.cancel(Cause::msg("user pressed stop"));
    let calls = Arc::new(AtomicUsize::new(0));
    let clones = Arc::new(AtomicUsize::new(0));
    let transport = CountClones {
        inner: echo_transport(calls.clone()),
        clones: clones.clone(),
    };
    let mut client = ClientLayer::new().layer(transport);
    let err = client.call(request_under(&ctx)).await.unwrap_err();
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "a refused call cloned the transport"
    );
    assert!(!err.was_sent());
    assert_eq!(err.context_err(), Some(Error::Canceled));
    assert_eq!(err.cause().unwrap().to_string(), "user pressed stop");
    // The cause is the source, not repeated in the message.
    assert_eq!(err.to_string(), "request not sent: context canceled");
    let source = std::error::Error::source(&err).expect("the cause");
    assert_eq!(source.to_string(), "user pressed stop");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_client_abandons_the_call_when_the_context_ends() {
    let root = ctx_tokio::background();
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(100));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (tx, started) = oneshot::channel::<()>();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    struct SetOnDrop(Arc<AtomicUsize>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let counted = dropped.clone();
    let transport = service_fn(move |_req: Request<()>| {
        let guard = SetOnDrop(counted.clone());
        let tx = tx.clone();
        async move {
            let _guard = guard;
            tx.lock().unwrap().take().unwrap().send(()).unwrap();
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(()))
        }
    });
    let start = now();
    let client = ClientLayer::new().layer(transport);
    let call = tokio::spawn(client.oneshot(request_under(&ctx)));
    started.await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert!(err.was_sent());
    assert!(
        matches!(
            err,
            ClientError::Abandoned {
                err: Error::DeadlineExceeded,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(now() - start, Duration::from_millis(100));
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the call is dropped");
}

#[tokio::test]
async fn a_request_without_a_context_passes_through_untouched() {
    let calls = Arc::new(AtomicUsize::new(0));
    let client = ClientLayer::new().layer(echo_transport(calls.clone()));
    let response = client.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.body(), &None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_transport_error_is_wrapped_as_a_service_error() {
    let client = ClientLayer::new().layer(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, _>(std::io::Error::other("connection refused"))
    }));
    let ctx = Context::background();
    let err = client.oneshot(request_under(&ctx)).await.unwrap_err();
    assert_eq!(err.context_err(), None);
    // The transport's error is the source, not repeated in the message.
    assert_eq!(err.to_string(), "request failed in the inner service");
    let source = std::error::Error::source(&err).expect("the transport's error");
    assert_eq!(source.to_string(), "connection refused");
    assert_eq!(
        err.into_service_error().unwrap().kind(),
        std::io::ErrorKind::Other
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_a_busy_service_gives_up_at_its_deadline() {
    let root = ctx_tokio::background();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    // One call at a time, and the first takes 10 s.
    let transport = ConcurrencyLimit::new(
        service_fn(move |_req: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let started = started_tx.clone();
            async move {
                started.send(()).unwrap();
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, Infallible>(Response::new(()))
            }
        }),
        1,
    );
    let client = ClientLayer::new().layer(transport);
    let (long, _cancel_long) = root.with_timeout(Duration::from_secs(60));
    let first = tokio::spawn(client.clone().oneshot(request_under(&long)));
    started.recv().await.unwrap();

    let (short, _cancel_short) = root.with_timeout(Duration::from_millis(50));
    let start = now();
    let err = client
        .clone()
        .oneshot(request_under(&short))
        .await
        .unwrap_err();
    assert_eq!(now() - start, Duration::from_millis(50), "not 10 s");
    assert!(!err.was_sent());
    assert!(
        matches!(
            err,
            ClientError::NotSent {
                err: Error::DeadlineExceeded,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "request not sent: context deadline exceeded"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The slot frees up when the first call ends; the next call takes it.
    first.await.unwrap().unwrap();
    let (next, _cancel_next) = root.with_timeout(Duration::from_secs(60));
    client.oneshot(request_under(&next)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_client_sends_the_time_left_when_the_service_becomes_ready() {
    let root = ctx_tokio::background();
    let (release, gate) = oneshot::channel::<()>();
    let gate = Arc::new(tokio::sync::Mutex::new(Some(gate)));
    // The first call holds the only slot until `release`.
    let transport = ConcurrencyLimit::new(
        service_fn(move |req: Request<()>| {
            let gate = gate.clone();
            async move {
                if let Some(gate) = gate.lock().await.take() {
                    gate.await.unwrap();
                }
                Ok::<_, Infallible>(Response::new(req.headers().get(GRPC_TIMEOUT).cloned()))
            }
        }),
        1,
    );
    let client = ClientLayer::new().layer(transport);
    let first = tokio::spawn(client.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(3));
    let second = tokio::spawn(client.oneshot(request_under(&ctx)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    let response = second.await.unwrap().unwrap();
    let sent = ctx_http::parse_timeout(response.body().as_ref().unwrap()).unwrap();
    assert_eq!(
        sent,
        Duration::from_secs(2),
        "counted when the request leaves"
    );
}

// ===== both layers =====

#[tokio::test(start_paused = true)]
async fn a_deadline_crosses_a_client_and_a_server_layer() {
    let root = ctx_tokio::background();
    let start = now();
    let backend = ServerLayer::new(&root).layer(deadline_handler(start));
    let client = ClientLayer::new().layer(backend);
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(750));
    let mut request = Request::new(String::new());
    request.extensions_mut().insert(ctx);
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.body(), "750");
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    type Svc = Handler;
    check::<ServerLayer>();
    check::<ctx_http::ServerService<Svc>>();
    type Answer = tower::util::ServiceFn<
        fn(Request<String>) -> std::future::Ready<Result<Response<String>, Infallible>>,
    >;
    check::<ctx_http::ServerFuture<Answer, Request<String>>>();
    check::<ClientLayer>();
    check::<ctx_http::ClientService<Svc>>();
    type Transport = tower::util::ServiceFn<
        fn(Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>>,
    >;
    check::<ctx_http::ClientFuture<Transport, Request<()>>>();
    check::<ctx_http::ServerBody<String>>();
    check::<ClientError<std::io::Error>>();
    check::<Rejection>();
    check::<ServerCause>();
    check::<ctx_http::TimeoutHeaderError>();
    check::<ctx_http::TextResponder>();
}

// ===== feature `axum` =====

#[cfg(feature = "axum")]
mod axum_extractor {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use ctx_http::RequestContext;
    use http_body_util::BodyExt;

    async fn body_text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    async fn deadline_ms(RequestContext(ctx): RequestContext) -> String {
        let left = ctx.remaining().expect("a deadline");
        left.as_millis().to_string()
    }

    async fn maybe(ctx: Option<RequestContext>) -> &'static str {
        if ctx.is_some() { "some" } else { "none" }
    }

    #[tokio::test(start_paused = true)]
    async fn the_extractor_finds_the_layers_context() {
        let app = Router::new()
            .route("/", get(deadline_ms))
            .layer(ServerLayer::new(&ctx_tokio::background()));
        let request = Request::get("/")
            .header(GRPC_TIMEOUT, "2S")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_text(response).await, "2000");
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_answers_for_an_axum_handler() {
        async fn slow(RequestContext(ctx): RequestContext) -> &'static str {
            let _ = ctx_tokio::sleep(&ctx, Duration::from_secs(60)).await;
            "never"
        }
        let app = Router::new()
            .route("/", get(slow))
            .layer(ServerLayer::new(&ctx_tokio::background()));
        let request = Request::get("/")
            .header(GRPC_TIMEOUT, "20m")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(body_text(response).await.contains("grpc-timeout 20ms"));
    }

    #[tokio::test]
    async fn without_the_layer_the_extractor_fails_with_500_and_option_is_none() {
        let app = Router::new()
            .route("/", get(deadline_ms))
            .route("/maybe", get(maybe));
        let response = app
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body_text(response)
                .await
                .contains("ServerLayer is not installed")
        );
        let response = app
            .oneshot(Request::get("/maybe").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(body_text(response).await, "none");
    }
}

// ===== feature `tonic` =====

#[cfg(feature = "tonic")]
mod grpc_statuses {
    use super::*;
    use ctx_http::grpc::{self, GrpcResponder};
    use tonic::{Code, Status};

    #[tokio::test(start_paused = true)]
    async fn the_grpc_responder_answers_with_trailers_only_statuses() {
        let (tx, _seen) = tokio::sync::mpsc::unbounded_channel();
        let service = ServerLayer::new(&ctx_tokio::background())
            .on_malformed(Malformed::Reject)
            .responder(GrpcResponder)
            .layer(parked_handler(tx));
        let response = service
            .clone()
            .oneshot(request_with_timeout("30m"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "context deadline exceeded: the client's deadline passed (grpc-timeout 30ms)"
        );

        let response = service.oneshot(request_with_timeout("-1S")).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn a_shutdown_is_unavailable_to_grpc_clients() {
        let (root, shutdown) = Context::background().with_cancel_cause();
        let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let service = ServerLayer::new(&root)
            .responder(GrpcResponder)
            .layer(parked_handler(tx));
        let call = tokio::spawn(service.oneshot(Request::new(String::new())));
        seen.recv().await.unwrap();
        shutdown.cancel(Cause::msg("draining"));
        let response = call.await.unwrap().unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "context canceled: draining");
    }

    #[test]
    fn client_errors_become_statuses() {
        let gone: ClientError<std::io::Error> = ClientError::Abandoned {
            err: Error::Canceled,
            cause: Cause::msg("caller left"),
        };
        let status = Status::from(gone);
        assert_eq!(status.code(), Code::Cancelled);
        // A status has no chain of messages: the cause is in its message, and
        // its source.
        assert_eq!(
            status.message(),
            "request abandoned: context canceled: caller left"
        );
        let source = std::error::Error::source(&status).expect("the cause");
        assert_eq!(source.to_string(), "caller left");

        // A context that ended without a cause of its own: no source.
        let late: ClientError<std::io::Error> = ClientError::NotSent {
            err: Error::DeadlineExceeded,
            cause: Cause::new(Error::DeadlineExceeded),
        };
        let status = Status::from(late);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "request not sent: context deadline exceeded"
        );
        assert!(std::error::Error::source(&status).is_none());

        let broken: ClientError<std::io::Error> =
            ClientError::Service(std::io::Error::other("reset"));
        assert_eq!(Status::from(broken).code(), Code::Unknown);
    }

    #[test]
    fn codes_map_both_ways() {
        for err in [Error::Canceled, Error::DeadlineExceeded] {
            assert_eq!(grpc::error(grpc::code(err)), Some(err));
        }
        assert_eq!(grpc::error(Code::Ok), None);
    }
}

/// The inner service fails, which ends the request's context there and then:
/// a panicking `after_func` callback of the context must not replace the
/// service's error with its panic.
#[tokio::test]
async fn a_panicking_callback_loses_no_error_of_the_service() {
    let root = ctx_tokio::background();
    let service = ServerLayer::new(&root).layer(service_fn(|req: Request<String>| {
        std::mem::forget(request_ctx(&req).after_func(|| panic!("a cleanup callback panics")));
        async { Err::<Response<String>, _>(std::io::Error::other("the service failed")) }
    }));
    let answered = tokio::spawn(service.oneshot(Request::new(String::new()))).await;
    match answered {
        Ok(Err(err)) => assert_eq!(err.to_string(), "the service failed"),
        Ok(Ok(_)) => panic!("an answer from a service that failed"),
        Err(_) => panic!("the layer's future panicked: the service's error was lost"),
    }
    assert_eq!(root.live_children(), 0);
}

/// A handler whose work takes it past the deadline inside the poll that
/// returns its answer: the answer is not sent (it came after the deadline),
/// the deadline's rejection is, as for a handler that is still working.
#[tokio::test]
async fn an_answer_made_past_the_deadline_is_not_sent() {
    let root = Context::background();
    let service = ServerLayer::new(&root).layer(service_fn(|_req: Request<String>| async {
        // Blocking work, past the 20 ms the client gave.
        std::thread::sleep(Duration::from_millis(100));
        Ok::<_, Infallible>(Response::new("late answer".to_owned()))
    }));
    let response = service.oneshot(request_with_timeout("20m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(root.live_children(), 0);
}

/// A handler that panics: the unwind drops the layer's future, which ends
/// the request's context with `Panicked`, not `ClientGone` (the client may
/// well be there still).
#[tokio::test]
async fn a_panicking_handler_ends_its_context_as_panicked() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root).layer(service_fn(move |req: Request<String>| {
        tx.send(request_ctx(&req)).unwrap();
        async {
            panic!("the handler panics");
            #[allow(unreachable_code)]
            Ok::<Response<String>, Infallible>(Response::new(String::new()))
        }
    }));
    let served = tokio::spawn(service.oneshot(Request::new(String::new()))).await;
    assert!(served.is_err_and(|err| err.is_panic()));
    let ctx = seen.recv().await.unwrap();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(server_cause(&ctx), ServerCause::Panicked);
    assert_eq!(root.live_children(), 0);
}

/// What tower-http's `CatchPanic` does with the future it wraps: polls it under
/// `catch_unwind`, answers at once on a panic, and drops the future later,
/// when the unwind is long over.
struct CatchPanic<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            // The client gets a 500; the panicked future is dropped with `self`.
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// A handler's panic caught by a layer above (answering 500): the future is
/// dropped after the unwind, not by it, and the cause is still `Panicked`
/// (the client is there, reading the 500), not `ClientGone`.
#[tokio::test]
async fn a_handler_panic_caught_above_the_layer_ends_its_context_as_panicked() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let service = ServerLayer::new(&root).layer(service_fn(move |req: Request<String>| {
        tx.send(request_ctx(&req)).unwrap();
        async {
            tokio::task::yield_now().await;
            panic!("the handler panics");
            #[allow(unreachable_code)]
            Ok::<Response<String>, Infallible>(Response::new(String::new()))
        }
    }));
    let caught = CatchPanic(Box::pin(service.oneshot(Request::new(String::new())))).await;
    assert!(caught.is_err(), "the panic was caught above the layer");
    let ctx = seen.recv().await.unwrap();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(server_cause(&ctx), ServerCause::Panicked);
    assert_eq!(root.live_children(), 0);
}

/// The mark is only up during the inner poll: a future that returned
/// `Pending` and is dropped by the server afterwards is still `ClientGone`.
#[tokio::test]
async fn a_pending_handler_dropped_after_a_caught_panic_elsewhere_is_client_gone() {
    let root = ctx_tokio::background();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut service = ServerLayer::new(&root).layer(service_fn(move |req: Request<String>| {
        tx.send(request_ctx(&req)).unwrap();
        std::future::pending::<Result<Response<String>, Infallible>>()
    }));
    let mut future = Box::pin(service.call(Request::new(String::new())));
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    // Another request's panic, caught on this thread, is none of this one's.
    assert!(std::panic::catch_unwind(|| panic!("elsewhere")).is_err());
    drop(future);
    let ctx = seen.recv().await.unwrap();
    assert_eq!(server_cause(&ctx), ServerCause::ClientGone);
    assert_eq!(root.live_children(), 0);
}
