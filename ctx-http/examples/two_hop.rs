//! Deadlines, cancellation and causes across two hops: a client calls a proxy,
//! which calls a slow backend (500 ms of work per request). Both servers are
//! hyper 1 servers on 127.0.0.1 with `ServerLayer`; the proxy calls the backend
//! through `ClientLayer` with its own request's context.
//!
//! 1. A request with a 50 ms budget (`grpc-timeout: 50m`) gets its 504 after
//!    about 50 ms, and the backend sees its context end at the same moment.
//! 2. A client that hangs up mid-request cancels the proxy's context, whose
//!    call to the backend is dropped, which cancels the backend's context: both
//!    with the cause "the client went away".
//! 3. A signal (Ctrl-C, SIGTERM) or the end of the demo shuts both servers down
//!    gracefully: they stop accepting, a request in flight finishes within the
//!    grace period, and one that would take longer is canceled when it is over.
//!
//! It runs on its own and exits after about two seconds:
//!
//! ```text
//! cargo run -p ctx-http --example two_hop
//! ```

use bytes::Bytes;
use ctx_core::{CancelCauseFunc, Cause, Context};
use ctx_http::{ClientLayer, ClientService, ServerLayer};
use http::{Request, Response, StatusCode};
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
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;

/// What the backend's work takes per request.
const BACKEND_WORK: Duration = Duration::from_millis(500);
/// When the demo shuts the servers down (a signal does it earlier).
const DEMO_LENGTH: Duration = Duration::from_millis(1500);
/// How long requests in flight may still run once shutdown began.
const GRACE: Duration = Duration::from_millis(400);
/// Upper bound for every wait of the demo's clients, so it can never hang.
const PATIENCE: Duration = Duration::from_secs(5);

/// The request id every hop logs, attached with `ServerLayer::map_context`.
struct RequestId(String);

#[tokio::main]
async fn main() -> io::Result<()> {
    let start = Instant::now();
    let root = ctx_tokio::background();
    // Ctrl-C or SIGTERM shuts the servers down; so does the end of the demo.
    let (signals, _stop_signals) = ctx_tokio::signal_context(&root);
    let (shutdown, _end_demo) =
        signals.with_timeout_cause(DEMO_LENGTH, Cause::msg("end of the demo"));

    let backend = Server::start("backend", start, &root, &shutdown, backend).await?;
    let proxy_client = ClientLayer::new().layer(http_client());
    let backend_url = format!("http://{}/", backend.addr);
    let proxy = Server::start("proxy", start, &root, &shutdown, move |req| {
        proxy(req, proxy_client.clone(), backend_url.clone(), start)
    })
    .await?;

    // 1. A 50 ms budget against the 500 ms backend.
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(50));
    let mut request = get(proxy.addr, "budget-50ms");
    ctx_http::set_timeout_header(request.headers_mut(), &ctx);
    let sent = Instant::now();
    let (status, body) = send(request).await?;
    log(
        start,
        "client",
        format!(
            "budget-50ms: {} after {} ms: {body}",
            status.as_u16(),
            sent.elapsed().as_millis()
        ),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    // 2. A client that hangs up 100 ms into the request.
    let mut stream = TcpStream::connect(proxy.addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: proxy\r\nx-request-id: hangs-up\r\n\r\n")
        .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    log(start, "client", "hangs-up: closing the connection".into());
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // 3. Two requests in flight when the servers shut down: the backend needs
    //    500 ms for each; one starts 300 ms before the shutdown (it finishes
    //    within the grace period), one starts 50 ms before (it cannot).
    let until_shutdown = DEMO_LENGTH.saturating_sub(start.elapsed());
    tokio::time::sleep(until_shutdown.saturating_sub(Duration::from_millis(300))).await;
    let early = tokio::spawn(send(get(proxy.addr, "drained")));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let late = tokio::spawn(send(get(proxy.addr, "too-late")));
    for (name, call) in [("drained", early), ("too-late", late)] {
        let (status, body) = call.await??;
        log(
            start,
            "client",
            format!("{name}: {}: {body}", status.as_u16()),
        );
    }

    proxy.stopped().await?;
    backend.stopped().await?;
    log(start, "main", "both servers stopped; done".into());
    Ok(())
}

// ===== the two services =====

/// The backend: works for `BACKEND_WORK`, or until its context is done.
async fn backend(req: Request<Incoming>) -> Response<Body> {
    let ctx = req.extensions().get::<Context>().unwrap().clone();
    match ctx_tokio::sleep(&ctx, BACKEND_WORK).await {
        Ok(()) => text(StatusCode::OK, "the backend's answer"),
        // The layer has answered already; nobody reads this.
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// The proxy: calls the backend under its own request's context.
async fn proxy(
    req: Request<Incoming>,
    client: ClientService<Client<HttpConnector, Body>>,
    backend: String,
    start: Instant,
) -> Response<Body> {
    let ctx = req.extensions().get::<Context>().unwrap().clone();
    let id = ctx.value::<RequestId>().map_or("-", |id| &id.0).to_owned();
    let mut outgoing = Request::get(backend).body(Body::default()).unwrap();
    outgoing
        .headers_mut()
        .insert("x-request-id", id.parse().unwrap());
    // The deadline and the cancellation go along with the context.
    outgoing.extensions_mut().insert(ctx);
    match client.oneshot(outgoing).await {
        Ok(response) => {
            let status = response.status();
            match response.into_body().collect().await {
                Ok(body) => Response::builder()
                    .status(status)
                    .body(Body::new(body.to_bytes()))
                    .unwrap(),
                Err(err) => text(StatusCode::BAD_GATEWAY, err.to_string()),
            }
        }
        Err(err) => {
            let err = report(&err);
            log(start, "proxy", format!("{id}: call to the backend: {err}"));
            text(StatusCode::BAD_GATEWAY, err)
        }
    }
}

// ===== a server with a graceful shutdown =====

struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `handler` on an ephemeral port of 127.0.0.1 until `shutdown` is
    /// done, then drains for `GRACE`.
    async fn start<H, Fut>(
        name: &'static str,
        start: Instant,
        root: &Context,
        shutdown: &Context,
        handler: H,
    ) -> io::Result<Server>
    where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        log(start, name, format!("listening on {addr}"));

        // Requests run under `requests`, not under `shutdown`: a shutdown stops
        // new connections at once, but cancels requests in flight only when the
        // grace period is over.
        let (requests, end_grace) = root.with_cancel_cause();
        let layer = ServerLayer::new(&requests)
            .max_timeout(Duration::from_secs(10))
            .map_context(move |parts, ctx| {
                let id = parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok());
                let id = id.unwrap_or("-").to_owned();
                let deadline = ctx.remaining().unwrap_or_default();
                log(
                    start,
                    name,
                    format!("{id}: started, deadline in {} ms", deadline.as_millis()),
                );
                let ended = id.clone();
                let watched = ctx.clone();
                let _ = ctx.after_func(move || {
                    let how = match watched.cause() {
                        Some(cause) if cause.as_error().is_none() => {
                            format!("{}: {cause}", watched.err().unwrap())
                        }
                        _ => watched.err().unwrap().to_string(),
                    };
                    log(start, name, format!("{ended}: context ended: {how}"));
                });
                ctx.with_value(RequestId(id))
            });
        let service = ServiceBuilder::new().layer(layer).service_fn(move |req| {
            let response = handler(req);
            async move { Ok::<_, Infallible>(response.await) }
        });

        let shutdown = shutdown.clone();
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
            let why = shutdown.cause().map(|c| c.to_string()).unwrap_or_default();
            log(
                start,
                name,
                format!("shutting down ({why}), grace {GRACE:?}"),
            );
            end_requests_after_grace(graceful, end_grace, start, name).await;
        });
        Ok(Server { addr, task })
    }

    async fn stopped(self) -> io::Result<()> {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .map_err(|_| io::Error::other("a server did not stop"))?
            .map_err(io::Error::other)
    }
}

/// Waits for the connections to finish; if the grace period ends first,
/// cancels the requests still running, with that as their cause.
async fn end_requests_after_grace(
    graceful: GracefulShutdown,
    end_grace: CancelCauseFunc,
    start: Instant,
    name: &'static str,
) {
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => log(start, name, "all requests finished".into()),
        () = tokio::time::sleep(GRACE) => {
            end_grace.cancel(Cause::msg("the shutdown grace period is over"));
            let _ = tokio::time::timeout(PATIENCE, drained).await;
            log(start, name, "grace period over; the rest were canceled".into());
        }
    }
}

// ===== small helpers =====

fn http_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(addr: SocketAddr, id: &str) -> Request<Body> {
    Request::get(format!("http://{addr}/"))
        .header("x-request-id", id)
        .body(Body::default())
        .unwrap()
}

/// Sends `request` with a plain client and reads the answer.
async fn send(request: Request<Body>) -> io::Result<(StatusCode, String)> {
    let call = async {
        let response = http_client()
            .request(request)
            .await
            .map_err(io::Error::other)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(PATIENCE, call)
        .await
        .map_err(|_| io::Error::other("no answer"))?
}

/// An error and its sources, each message after the one before: the layer's
/// error says what happened to the call, its sources why (the context's cause,
/// the transport's error).
fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut report = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        report = format!("{report}: {err}");
        source = err.source();
    }
    report
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response
}

fn log(start: Instant, who: &str, what: String) {
    println!("[{:>5} ms] {who:<8} {what}", start.elapsed().as_millis());
}
