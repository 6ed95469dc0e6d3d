//! The layers between real processes' worth of plumbing: hyper 1 servers and
//! clients on 127.0.0.1 (ephemeral ports), a proxy in front of a backend.
//!
//! Every wait is bounded by a generous watchdog, request loops are bounded, and
//! time is only asserted with wide bounds (these machines are shared and slow).

use bytes::Bytes;
use ctx_core::{CancelCauseFunc, Cause, Context, Error};
use ctx_http::{
    ClientError, ClientLayer, ClientService, GRPC_TIMEOUT, Malformed, ServerCause, ServerLayer,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::{Layer, ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;
type HttpClient = ClientService<Client<HttpConnector, Body>>;

/// The longest any single step may take before the test fails.
const WATCHDOG: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`WATCHDOG`].
async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WATCHDOG, fut).await {
        Ok(output) => output,
        Err(_) => panic!("watchdog: {what} took longer than {WATCHDOG:?}"),
    }
}

// ===== a server =====

/// A hyper server on 127.0.0.1 with `ServerLayer` in front of a handler.
struct TestServer {
    addr: SocketAddr,
    /// Dropping it starts the shutdown too, so no server outlives its test.
    begin_shutdown: Option<CancelCauseFunc>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server; `configure` sets up the layer, whose parent is the
    /// server's request root, canceled only when the grace period is over.
    async fn start<H, Fut>(
        configure: impl FnOnce(ServerLayer) -> ServerLayer,
        grace: Duration,
        handler: H,
    ) -> TestServer
    where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let root = ctx_tokio::background();
        let (requests, stop_requests) = root.with_cancel_cause();
        let (shutdown, begin_shutdown) = root.with_cancel_cause();
        let service = ServiceBuilder::new()
            .layer(configure(ServerLayer::new(&requests)))
            .service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
        let task = tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    () = shutdown.done() => break,
                };
                let connection = http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service.clone()),
                );
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            drop(listener);
            // Requests in flight may finish during the grace period; then their
            // contexts are canceled, and the layer answers for them.
            let drained = graceful.shutdown();
            tokio::pin!(drained);
            tokio::select! {
                () = &mut drained => {}
                () = tokio::time::sleep(grace) => {
                    stop_requests.cancel(Cause::msg("the shutdown grace period is over"));
                    drained.await;
                }
            }
        });
        TestServer {
            addr,
            begin_shutdown: Some(begin_shutdown),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, drains, and waits for the server to finish.
    async fn shut_down(&mut self) {
        if let Some(begin) = self.begin_shutdown.take() {
            begin.cancel(Cause::msg("test over"));
        }
        if let Some(task) = self.task.take() {
            bounded("the server's shutdown", task).await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// How a request's context ended, as seen from inside the server.
#[derive(Debug)]
struct Ended {
    err: Error,
    cause: Cause,
}

impl Ended {
    fn server_cause(&self) -> Option<ServerCause> {
        self.cause.downcast_ref::<ServerCause>().copied()
    }
}

/// Reports on `tx` how `ctx` ends, whatever ends it (even once the handler's
/// future is dropped).
fn report_end(ctx: &Context, tx: mpsc::UnboundedSender<Ended>) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        ctx.done().await;
        let _ = tx.send(Ended {
            err: ctx.err().unwrap(),
            cause: ctx.cause().unwrap(),
        });
    });
}

fn request_ctx<B>(req: &Request<B>) -> Context {
    req.extensions()
        .get::<Context>()
        .expect("ServerLayer puts the context in the request's extensions")
        .clone()
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response
}

async fn read_text(response: Response<Incoming>) -> (StatusCode, String) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn http_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn ctx_client() -> HttpClient {
    ClientLayer::new().layer(http_client())
}

/// A backend whose handler reports its context's deadline and end, then works
/// for `work` (giving up when its context is done).
async fn slow_backend(
    work: Duration,
    deadlines: mpsc::UnboundedSender<Option<Instant>>,
    ends: mpsc::UnboundedSender<Ended>,
) -> TestServer {
    TestServer::start(
        |layer| layer.max_timeout(Duration::from_secs(60)),
        Duration::from_secs(1),
        move |req| {
            let deadlines = deadlines.clone();
            let ends = ends.clone();
            async move {
                let ctx = request_ctx(&req);
                report_end(&ctx, ends);
                deadlines.send(ctx.deadline()).unwrap();
                match ctx_tokio::sleep(&ctx, work).await {
                    Ok(()) => text(StatusCode::OK, "backend done"),
                    Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
                }
            }
        },
    )
    .await
}

/// A proxy whose handler forwards to `backend` under its request's context,
/// through the client layer, and reports how its context ends.
async fn proxy(backend: String, ends: mpsc::UnboundedSender<Ended>) -> TestServer {
    let client = ctx_client();
    TestServer::start(
        |layer| layer,
        Duration::from_secs(1),
        move |req| {
            let client = client.clone();
            let backend = backend.clone();
            let ends = ends.clone();
            async move {
                let ctx = request_ctx(&req);
                report_end(&ctx, ends);
                let mut outgoing = Request::get(backend).body(Body::default()).unwrap();
                outgoing.extensions_mut().insert(ctx);
                match client.oneshot(outgoing).await {
                    Ok(response) => {
                        let (status, body) = read_text(response).await;
                        text(status, body)
                    }
                    Err(err) => text(StatusCode::BAD_GATEWAY, err.to_string()),
                }
            }
        },
    )
    .await
}

// ===== deadlines over two hops =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_crosses_two_hops_and_the_answer_comes_at_the_deadline() {
    let (deadline_tx, mut backend_deadlines) = mpsc::unbounded_channel();
    let (backend_end_tx, mut backend_ends) = mpsc::unbounded_channel();
    let (proxy_end_tx, mut proxy_ends) = mpsc::unbounded_channel();
    let mut backend = slow_backend(Duration::from_secs(5), deadline_tx, backend_end_tx).await;
    let mut proxy = proxy(backend.url("/"), proxy_end_tx).await;

    // The client's budget: 200 ms, sent as grpc-timeout by a plain client.
    let budget = Duration::from_millis(200);
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(budget);
    let client_deadline = ctx.deadline().unwrap();
    let mut request = Request::get(proxy.url("/")).body(Body::default()).unwrap();
    assert!(ctx_http::set_timeout_header(request.headers_mut(), &ctx));
    let response = bounded("the proxy's answer", http_client().request(request))
        .await
        .unwrap();
    let elapsed = start.elapsed();
    let (status, body) = read_text(response).await;

    // The proxy answers for the deadline, long before the 5 s backend would.
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.starts_with("context deadline exceeded"), "{body}");
    assert!(
        elapsed >= budget - Duration::from_millis(5) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );

    // The backend's context had (nearly) the client's deadline: the remaining
    // time travelled in grpc-timeout twice, rounded down each time and counted
    // again from each arrival (so each hop's transit time is added back).
    let backend_deadline = bounded("the backend's request", backend_deadlines.recv())
        .await
        .unwrap()
        .expect("the backend's context has a deadline");
    let off = backend_deadline.max(client_deadline) - backend_deadline.min(client_deadline);
    assert!(
        off <= Duration::from_millis(50),
        "the backend's deadline is {off:?} off the client's"
    );

    // Both hops' contexts ended, with causes that say why.
    let proxy_end = bounded("the proxy's context", proxy_ends.recv())
        .await
        .unwrap();
    assert_eq!(proxy_end.err, Error::DeadlineExceeded);
    assert!(
        matches!(proxy_end.server_cause(), Some(ServerCause::ClientDeadline { timeout }) if timeout <= budget),
        "{proxy_end:?}"
    );
    let backend_end = bounded("the backend's context", backend_ends.recv())
        .await
        .unwrap();
    assert!(
        matches!(
            backend_end.server_cause(),
            Some(ServerCause::ClientDeadline { .. } | ServerCause::ClientGone)
        ),
        "{backend_end:?}"
    );

    proxy.shut_down().await;
    backend.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_layer_abandons_a_call_at_its_deadline() {
    // A plain hyper server without the layer, which ignores grpc-timeout: only
    // the client's race can end the call.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sent_tx, mut sent) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let _ = sent_tx.send(req.headers().get(GRPC_TIMEOUT).cloned());
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, Infallible>(Response::new(Body::default()))
            }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });

    let budget = Duration::from_millis(100);
    let (ctx, _cancel) = ctx_tokio::background().with_timeout(budget);
    let mut request = Request::get(format!("http://{addr}/"))
        .body(Body::default())
        .unwrap();
    request.extensions_mut().insert(ctx);
    let start = Instant::now();
    let err = bounded("the abandoned call", ctx_client().oneshot(request))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(
            err,
            ClientError::Abandoned {
                err: Error::DeadlineExceeded,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "abandoned after {elapsed:?}"
    );
    let header = bounded("the server's request", sent.recv())
        .await
        .unwrap()
        .expect("the client sent grpc-timeout");
    assert!(ctx_http::parse_timeout(&header).unwrap() <= budget);
    // The server's connection closes: the client dropped it.
    bounded("the server's connection", server).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_layer_sends_nothing_for_a_done_context() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ctx, cancel) = Context::background().with_cancel_cause();
    cancel.cancel(Cause::msg("the user gave up"));
    let mut request = Request::get(format!("http://{addr}/"))
        .body(Body::default())
        .unwrap();
    request.extensions_mut().insert(ctx);
    let err = bounded("the refused call", ctx_client().oneshot(request))
        .await
        .unwrap_err();
    assert!(!err.was_sent(), "{err}");
    assert_eq!(err.cause().unwrap().to_string(), "the user gave up");
    // Nobody connected.
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "the client connected anyway");
}

// ===== disconnects =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_both_hops_with_client_gone() {
    let (deadline_tx, mut backend_started) = mpsc::unbounded_channel();
    let (backend_end_tx, mut backend_ends) = mpsc::unbounded_channel();
    let (proxy_end_tx, mut proxy_ends) = mpsc::unbounded_channel();
    let mut backend = slow_backend(Duration::from_secs(30), deadline_tx, backend_end_tx).await;
    let mut proxy = proxy(backend.url("/"), proxy_end_tx).await;

    // A raw client: send a request without a deadline, then hang up.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .unwrap();
    let deadline = bounded("the backend's request", backend_started.recv())
        .await
        .unwrap();
    assert!(deadline.is_some(), "the backend's own maximum applies");
    drop(stream);

    let proxy_end = bounded("the proxy's context", proxy_ends.recv())
        .await
        .unwrap();
    assert_eq!(proxy_end.err, Error::Canceled);
    assert_eq!(proxy_end.server_cause(), Some(ServerCause::ClientGone));
    let backend_end = bounded("the backend's context", backend_ends.recv())
        .await
        .unwrap();
    assert_eq!(backend_end.err, Error::Canceled);
    assert_eq!(backend_end.server_cause(), Some(ServerCause::ClientGone));

    proxy.shut_down().await;
    backend.shut_down().await;
}

// ===== malformed headers over the wire =====

/// Bad `grpc-timeout` values as raw header bytes: negative, huge (too many
/// digits), fractional, unknown unit, non-ASCII.
const MALFORMED: [&[u8]; 6] = [
    b"-5m",
    b"123456789S",
    b"99999999999H",
    b"1.5S",
    b"10x",
    b"10\xc3\xa9",
];

async fn send_with_timeout(server: &TestServer, value: &[u8]) -> (StatusCode, String) {
    let mut request = Request::get(server.url("/")).body(Body::default()).unwrap();
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_bytes(value).unwrap());
    let response = bounded("a request", http_client().request(request))
        .await
        .unwrap();
    read_text(response).await
}

/// A server whose handler answers with its context's remaining time in ms.
async fn remaining_server(malformed: Malformed) -> TestServer {
    TestServer::start(
        move |layer| {
            layer
                .on_malformed(malformed)
                .max_timeout(Duration::from_secs(10))
        },
        Duration::from_secs(1),
        |req| async move {
            let left = request_ctx(&req).remaining().unwrap();
            text(StatusCode::OK, left.as_millis().to_string())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_timeouts_get_400_from_a_strict_server() {
    let mut server = remaining_server(Malformed::Reject).await;
    for value in MALFORMED {
        let (status, body) = send_with_timeout(&server, value).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value:?}: {body}");
        assert!(
            body.starts_with("invalid grpc-timeout header"),
            "{value:?}: {body}"
        );
    }
    // A good value still works.
    let (status, body) = send_with_timeout(&server, b"2S").await;
    assert_eq!(status, StatusCode::OK);
    let left: u64 = body.parse().unwrap();
    assert!((1000..=2000).contains(&left), "{left} ms left");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_timeouts_are_ignored_by_a_lenient_server() {
    let mut server = remaining_server(Malformed::Ignore).await;
    for value in MALFORMED {
        let (status, body) = send_with_timeout(&server, value).await;
        assert_eq!(status, StatusCode::OK, "{value:?}: {body}");
        // The server's 10 s maximum applies instead.
        let left: u64 = body.parse().unwrap();
        assert!((9000..=10_000).contains(&left), "{value:?}: {left} ms left");
    }
    server.shut_down().await;
}

// ===== shutdown =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (end_tx, mut ends) = mpsc::unbounded_channel();
    let mut server = TestServer::start(
        |layer| layer,
        Duration::from_secs(10),
        move |req| {
            let started = started_tx.clone();
            let ends = end_tx.clone();
            async move {
                let ctx = request_ctx(&req);
                report_end(&ctx, ends);
                started.send(()).unwrap();
                match ctx_tokio::sleep(&ctx, Duration::from_millis(300)).await {
                    Ok(()) => text(StatusCode::OK, "finished"),
                    Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
                }
            }
        },
    )
    .await;
    let addr = server.addr;
    let in_flight = tokio::spawn(
        http_client().request(Request::get(server.url("/")).body(Body::default()).unwrap()),
    );
    bounded("the request to start", started.recv())
        .await
        .unwrap();

    server.shut_down().await;
    let response = bounded("the drained request", in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read_text(response).await,
        (StatusCode::OK, "finished".to_owned())
    );
    let end = bounded("the request's context", ends.recv()).await.unwrap();
    assert_eq!(end.server_cause(), Some(ServerCause::Responded));
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_running_after_the_grace_period_are_canceled_with_its_cause() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut server = TestServer::start(
        |layer| layer,
        Duration::from_millis(100),
        move |req| {
            let started = started_tx.clone();
            async move {
                let ctx = request_ctx(&req);
                started.send(()).unwrap();
                ctx.done().await;
                text(StatusCode::OK, "never sent: the layer answers first")
            }
        },
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: server\r\n\r\n")
        .await
        .unwrap();
    bounded("the request to start", started.recv())
        .await
        .unwrap();

    server.shut_down().await;
    let mut answer = String::new();
    bounded("the answer", stream.read_to_string(&mut answer))
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{answer}"
    );
    assert!(
        answer.ends_with("context canceled: the shutdown grace period is over"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_a_row_each_end_their_context() {
    let (end_tx, mut ends) = mpsc::unbounded_channel();
    let mut server = TestServer::start(
        |layer| layer.max_timeout(Duration::from_secs(5)),
        Duration::from_secs(1),
        move |req| {
            let ends = end_tx.clone();
            async move {
                report_end(&request_ctx(&req), ends);
                text(StatusCode::OK, "ok")
            }
        },
    )
    .await;
    let client = ctx_client();
    const REQUESTS: usize = 50;
    for _ in 0..REQUESTS {
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
        let mut request = Request::get(server.url("/")).body(Body::default()).unwrap();
        request.extensions_mut().insert(ctx);
        let response = bounded("a request", client.clone().oneshot(request))
            .await
            .unwrap();
        assert_eq!(read_text(response).await.0, StatusCode::OK);
    }
    for _ in 0..REQUESTS {
        let end = bounded("a request's context", ends.recv()).await.unwrap();
        assert_eq!(end.server_cause(), Some(ServerCause::Responded));
    }
    server.shut_down().await;
}

// ===== a streamed body =====

/// A body that yields a chunk every `every`, for ever, or, with a `limit`,
/// that many chunks and then nothing, never saying it ended (so only a
/// consumer that stops on its own, at `content-length`, is done with it).
struct Endless {
    every: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    limit: Option<usize>,
}

/// What [`Endless`] yields each time.
const TICK: &[u8] = b"tick\n";

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.limit == Some(0) {
            // Nothing more, and no end: a consumer waiting for one waits for
            // ever (and the test's watchdog fails it).
            return std::task::Poll::Pending;
        }
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        std::task::ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        if let Some(left) = &mut self.limit {
            *left -= 1;
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(TICK)))))
    }
}

/// For the layer's own answers: an empty body is never needed here.
impl From<String> for Endless {
    fn from(_: String) -> Endless {
        unreachable!("the handler answers at once")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_aborted_at_the_servers_maximum() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = ServerLayer::new(&ctx_tokio::background()).max_timeout(Duration::from_millis(300));
    let (mut ends, server) = serve_endless(listener, layer, None, http::HeaderMap::new());
    let mut stream = raw_get(addr).await;
    let mut answer = Vec::new();
    // Without the cut, the body never ends and the watchdog fails the test.
    let _ = bounded("the aborted body", stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("tick"), "{answer}");
    assert!(!answer.ends_with("0\r\n\r\n"), "no clean end: {answer}");
    let end = bounded("the request's context", ends.recv()).await.unwrap();
    assert_eq!(end.err, Error::DeadlineExceeded);
    assert_eq!(
        end.server_cause(),
        Some(ServerCause::ServerDeadline {
            limit: Duration::from_millis(300)
        })
    );
    bounded("the connection", server).await.unwrap();
}

/// An `after_func` callback of the request's context that panics when the
/// response's body ends the context. A plain body is dropped by hyper once
/// its one frame is out (it says it is at its end), and that drop ends the
/// context: the callback's panic used to unwind through the connection task,
/// which then flushed nothing, so the client got not even the status line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_callback_at_the_end_of_the_request_costs_the_client_nothing() {
    let mut server = TestServer::start(
        |layer| layer,
        Duration::from_secs(1),
        |req: Request<Incoming>| {
            let ctx = request_ctx(&req);
            std::mem::forget(ctx.after_func(|| panic!("a cleanup callback panics")));
            async { text(StatusCode::OK, "hello") }
        },
    )
    .await;
    let response = bounded(
        "the request",
        http_client().get(server.url("/").parse().unwrap()),
    )
    .await
    .expect("an answer");
    assert_eq!(
        bounded("the body", read_text(response)).await,
        (StatusCode::OK, "hello".to_owned())
    );
    server.shut_down().await;
}

/// A connection to `addr` with a `GET /` sent on it, by hand.
async fn raw_get(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: server\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// A server on 127.0.0.1 answering one connection through `layer` with
/// [`Endless`] bodies of `limit` ticks (and `headers`), whose requests' ends
/// are reported on the returned channel.
fn serve_endless(
    listener: TcpListener,
    layer: ServerLayer,
    limit: Option<usize>,
    headers: http::HeaderMap,
) -> (mpsc::UnboundedReceiver<Ended>, JoinHandle<()>) {
    let (end_tx, ends) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req: Request<Incoming>| {
            report_end(&request_ctx(&req), end_tx.clone());
            let mut response = Response::new(Endless {
                every: Duration::from_millis(20),
                sleep: None,
                limit,
            });
            *response.headers_mut() = headers.clone();
            async move { Ok::<_, Infallible>(response) }
        });
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .await;
    });
    (ends, server)
}

/// A client that hangs up while the body streams: hyper drops the body
/// before its end, and the request's context ends with `ClientGone` (the
/// handler's streaming code learns that nobody reads any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_ends_the_request_with_client_gone() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = ServerLayer::new(&ctx_tokio::background());
    let (mut ends, server) = serve_endless(listener, layer, None, http::HeaderMap::new());
    let mut stream = raw_get(addr).await;
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    while !answer.windows(TICK.len()).any(|w| w == TICK) {
        let n = bounded("the first chunk", stream.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        answer.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    // hyper sees the hang-up when a write fails, a few ticks later.
    let end = bounded("the request's context", ends.recv()).await.unwrap();
    assert_eq!(end.err, Error::Canceled);
    assert_eq!(end.server_cause(), Some(ServerCause::ClientGone));
    bounded("the connection", server).await.unwrap();
}

/// A streamed body with a `content-length`: hyper stops once that many bytes
/// are out and drops the body without asking it for its end (this one never
/// gives one). The client had all of it: `Responded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_sent_to_its_content_length_ends_the_request_responded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut headers = http::HeaderMap::new();
    let length = 3 * TICK.len();
    headers.insert("content-length", HeaderValue::from(length));
    let layer = ServerLayer::new(&ctx_tokio::background());
    let (mut ends, server) = serve_endless(listener, layer, Some(3), headers);
    let response = bounded(
        "the request",
        http_client().get(format!("http://{addr}/").parse().unwrap()),
    )
    .await
    .unwrap();
    let (status, text) = bounded("the body", read_text(response)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, "tick\n".repeat(3));
    let end = bounded("the request's context", ends.recv()).await.unwrap();
    assert_eq!(end.err, Error::Canceled);
    assert_eq!(end.server_cause(), Some(ServerCause::Responded));
    server.abort();
}
