//! The server side: [`ServerLayer`] gives every request a [`Context`] derived
//! from the server's root, bounded by the client's `grpc-timeout` and the
//! server's maximum, and ends it when the client is gone, the deadline passes or
//! the response has been sent.
//!
//! This is what Go's `net/http` server does for `r.Context()` (canceled when the
//! client's connection closes or `ServeHTTP` returns) together with what
//! grpc-go does with an incoming `grpc-timeout` (the handler's context gets that
//! deadline), plus what neither does: the cause of every end is recorded
//! ([`ServerCause`]), and the server answers a request whose context ended
//! itself, at once, instead of waiting for a handler that may not be watching.

use crate::body::ServerBody;
use crate::ended::{cause_of, poll_done};
use crate::header::timeout_from_headers;
use crate::response::{Rejection, Responder, TextResponder};
use ctx_core::{Canceler, Cause, Context, Done};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// What [`ServerLayer`] does with a request whose `grpc-timeout` header cannot
/// be read (non-ASCII, negative, more than eight digits, unknown unit, ...).
///
/// # Examples
///
/// ```
/// use ctx_http::{Malformed, ServerLayer};
///
/// let strict = ServerLayer::new(&ctx_core::Context::background()).on_malformed(Malformed::Reject);
/// # let _ = strict;
/// assert_eq!(Malformed::default(), Malformed::Ignore);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Serve the request as if it had no `grpc-timeout` (the server's maximum
    /// still applies). This is what tonic does, and the default.
    #[default]
    Ignore,
    /// Answer with a [`Rejection::MalformedTimeout`] (400 Bad Request, with the
    /// reason in the body, from the default responder) without calling the
    /// inner service.
    Reject,
}

/// The causes [`ServerLayer`] ends request contexts with, so that a handler (or
/// anything it spawned) can tell why its context is done:
/// `ctx.cause()?.downcast_ref::<ServerCause>()`.
///
/// A context can also end through its parent (the server's root, for example
/// a signal context at shutdown); it then has the parent's cause instead.
///
/// # Examples
///
/// ```
/// use ctx_http::ServerCause;
/// use std::time::Duration;
///
/// let cause = ServerCause::ClientDeadline { timeout: Duration::from_millis(50) };
/// assert_eq!(cause.to_string(), "the client's deadline passed (grpc-timeout 50ms)");
/// assert_eq!(
///     ServerCause::ClientGone.to_string(),
///     "the client went away before the whole response was sent",
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerCause {
    /// The deadline the client sent in `grpc-timeout` passed (the context ends
    /// with [`Error::DeadlineExceeded`](ctx_core::Error::DeadlineExceeded)).
    ClientDeadline {
        /// The timeout the client sent.
        timeout: Duration,
    },
    /// The server's maximum time per request passed (the context ends with
    /// [`Error::DeadlineExceeded`](ctx_core::Error::DeadlineExceeded)).
    ServerDeadline {
        /// The server's maximum ([`ServerLayer::max_timeout`]).
        limit: Duration,
    },
    /// The response future, or the response's body before its end, was
    /// dropped: the client hung up (the server dropped the connection, or the
    /// stream), or the server dropped the request for its own reasons (a grace
    /// period that ran out).
    ClientGone,
    /// The response's body ended (or failed, or was dropped once the client
    /// had all of it or needed none: see [`ServerBody`]), or the inner service
    /// returned an error: the request is over, as Go's `r.Context()` is once
    /// `ServeHTTP` returns. Until then the context stays live, so a body that
    /// streams can rely on it.
    Responded,
    /// A panic ended the request before it was answered: the handler (or the
    /// code polling it) panicked, and the task serving the request unwound,
    /// or a layer above caught the panic out of the handler's poll
    /// (tower-http's `CatchPanicLayer`, which answers 500) and dropped the
    /// future afterwards. The same holds for a streaming response's body
    /// ([`ServerBody`]): a body whose `poll_frame` panics, or that is dropped
    /// by an unwind, ends the context with this cause, not with
    /// [`Responded`](ServerCause::Responded). Not
    /// [`ClientGone`](ServerCause::ClientGone): the client may still be there.
    Panicked,
}

impl fmt::Display for ServerCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerCause::ClientDeadline { timeout } => {
                write!(f, "the client's deadline passed (grpc-timeout {timeout:?})")
            }
            ServerCause::ServerDeadline { limit } => {
                write!(f, "the server's time limit per request passed ({limit:?})")
            }
            ServerCause::ClientGone => {
                f.write_str("the client went away before the whole response was sent")
            }
            ServerCause::Responded => f.write_str("the request was answered"),
            ServerCause::Panicked => {
                f.write_str("the task serving the request panicked before the response was ready")
            }
        }
    }
}

impl std::error::Error for ServerCause {}

/// A tower [`Layer`] that runs every request under a [`Context`] of its own.
///
/// For each request, [`ServerService`]:
///
/// 1. reads `grpc-timeout` ([`GRPC_TIMEOUT`](crate::GRPC_TIMEOUT)); a malformed
///    value is ignored or rejected, as set with [`on_malformed`](Self::on_malformed);
/// 2. derives the request's context from the parent given to [`new`](Self::new)
///    (typically the server's root, canceled at shutdown), with the deadline
///    `min(incoming grpc-timeout, max_timeout)` counted from now, and the cause
///    [`ServerCause::ClientDeadline`] or [`ServerCause::ServerDeadline`] naming
///    which one it was;
/// 3. lets [`map_context`](Self::map_context) attach values (a request id, the
///    caller's identity) and puts the result in the request's extensions, where
///    the handler finds it: `req.extensions().get::<Context>()` (with the `axum`
///    feature, the `RequestContext` extractor);
/// 4. waits for the inner service to be ready, then runs it, until it answers
///    or the context is done. A context that ends first (while the request
///    waits for a busy service, too) gets an answer from the [`Responder`] (by
///    default 504 for a deadline, 503 for a parent canceled at shutdown; see
///    [`TextResponder`]), and the inner future (or the wait) is dropped;
/// 5. hands on the inner service's response with its body wrapped in a
///    [`ServerBody`], which keeps the context live, and its deadline armed,
///    while the body streams: a deadline (or a shutdown) that comes while the
///    body streams ends the body there (with trailers carrying `grpc-status` 4
///    or 14 for gRPC, with an error otherwise, since the status is already
///    sent);
/// 6. ends the context when the request ends, with the reason as its cause:
///    [`ServerCause::Responded`] once the body has ended (or is dropped after
///    its end) or the inner service failed, [`ServerCause::ClientGone`] if the
///    response future, or the body before its end, is dropped first (hyper
///    drops them when the client hangs up), or
///    [`ServerCause::Panicked`] if a panic out of the handler (or out of the
///    body, while it streams) ended it.
///
/// A parent that is already done (the server is shutting down) gives a context
/// that is born done: the request is answered at once (503 with the parent's
/// cause, by default) and the inner service is not called.
///
/// # Readiness
///
/// [`ServerService`] is always ready: the request's context starts when the
/// request arrives (in `call`), and a service that is not ready (a
/// concurrency limit that is full, a pool being refilled) is waited for in the
/// response future, under that context: the deadline counts from arrival, and
/// a request that waits too long is answered 504 at its deadline, not when
/// the service gets round to it. Each call takes a clone of the inner service
/// for this (as tower's `Oneshot` does) and calls the clone it got ready, so
/// the inner service must be `Clone`, as axum's `Router`, tonic's routes,
/// `service_fn` over a `Clone` closure and tower's `ConcurrencyLimit` or
/// `BoxCloneService` over a `Clone` service are. A service that is not (tower's
/// `RateLimit`, a `BoxService`) can go in tower's `Buffer`, inside the layer;
/// the wait for the wrapped service then happens in the buffer's worker after
/// the call, and the layer races the buffer's response future against the
/// context as it would the handler's: a request answered 504 while it is
/// queued is dropped by the buffer without being handled. Backpressure
/// moves with it: the server is not held back in `poll_ready` (hyper never
/// is: it calls a clone of the service per request), each request's response
/// future waits instead. A panic out of the inner service's `poll_ready` ends
/// the request with [`ServerCause::Panicked`], as one out of the handler
/// does; an error out of it is the response future's error.
///
/// # A client that hangs up
///
/// Over HTTP/2 a client that goes away resets its stream, and hyper drops the
/// response future at once. Over HTTP/1, hyper notices a closed connection
/// only while it reads from it: once the request (body included) has been
/// read, it watches the connection while the handler runs, but a client that
/// disconnects part-way through uploading a body goes unnoticed by the
/// request's context. A handler that is not reading the body runs on until
/// its deadline: the client's `grpc-timeout`, the server's
/// [`max_timeout`](Self::max_timeout), or never without either. One that is
/// reading it gets an error from the body (hyper's incomplete body) at once,
/// but its context stays live until that deadline too: end the handler on
/// that error. Set a `max_timeout` on any server that takes request bodies
/// over HTTP/1.
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use ctx_http::{GRPC_TIMEOUT, ServerLayer};
/// use http::{HeaderValue, Request, Response, StatusCode};
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// struct RequestId(String);
///
/// #[tokio::main(flavor = "current_thread", start_paused = true)]
/// async fn main() {
///     let root = ctx_tokio::background(); // at shutdown: cancel this (or a signal context)
///     let service = ServiceBuilder::new()
///         .layer(
///             ServerLayer::new(&root)
///                 .max_timeout(Duration::from_secs(30))
///                 .map_context(|parts, ctx| {
///                     let id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok());
///                     ctx.with_value(RequestId(id.unwrap_or("-").to_owned()))
///                 }),
///         )
///         .service_fn(|req: Request<String>| async move {
///             let ctx = req.extensions().get::<Context>().expect("set by ServerLayer");
///             // A slow backend call; it stops when the request's context is done.
///             if ctx_tokio::sleep(ctx, Duration::from_secs(1)).await.is_err() {
///                 assert!(ctx.is_done()); // the layer has already answered
///             }
///             let id = &ctx.value::<RequestId>().unwrap().0;
///             Ok::<_, Infallible>(Response::new(format!("done with {id}")))
///         });
///
///     // The client gives the request 50 ms: it gets 504 after 50 ms, not 1 s.
///     let mut request = Request::new(String::new());
///     request.headers_mut().insert(GRPC_TIMEOUT, HeaderValue::from_static("50m"));
///     request.headers_mut().insert("x-request-id", HeaderValue::from_static("r-1"));
///     let response = service.clone().oneshot(request).await.unwrap();
///     assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
///     assert_eq!(
///         response.body(),
///         "context deadline exceeded: the client's deadline passed (grpc-timeout 50ms)",
///     );
///
///     // Without a header, the request runs to its end (the 30 s maximum is far).
///     let response = service.oneshot(Request::new(String::new())).await.unwrap();
///     assert_eq!(response.body(), "done with -");
/// }
/// ```
pub struct ServerLayer<R = TextResponder> {
    config: Config<R>,
}

/// Everything a [`ServerService`] and its futures share.
struct Config<R> {
    parent: Context,
    max_timeout: Option<(Duration, Cause)>,
    malformed: Malformed,
    map_context: Option<MapContext>,
    responder: R,
}

type MapContext = Arc<dyn Fn(&Parts, Context) -> Context + Send + Sync>;

impl ServerLayer {
    /// A layer whose request contexts are children of `parent`, with no maximum
    /// time, malformed headers ignored, no values added and the
    /// [`TextResponder`].
    ///
    /// Canceling `parent` ends every request in flight at once (each is
    /// answered 503 with `parent`'s cause, by default, or has its body cut if
    /// it is already streaming). For a graceful shutdown,
    /// stop accepting connections first and cancel `parent` only when the grace
    /// period is over (the `two_hop` example shows how).
    ///
    /// ```
    /// let (root, shutdown) = ctx_core::Context::background().with_cancel_cause();
    /// let layer = ctx_http::ServerLayer::new(&root);
    /// # let _ = layer;
    /// // ...serve; when the grace period is over:
    /// shutdown.cancel(ctx_core::Cause::msg("shutting down"));
    /// ```
    pub fn new(parent: &Context) -> ServerLayer {
        ServerLayer {
            config: Config {
                parent: parent.clone(),
                max_timeout: None,
                malformed: Malformed::Ignore,
                map_context: None,
                responder: TextResponder::new(),
            },
        }
    }

    /// The status for a request whose deadline passed (504 by default).
    ///
    /// ```
    /// # use ctx_http::ServerLayer;
    /// let layer = ServerLayer::new(&ctx_core::Context::background())
    ///     .deadline_status(http::StatusCode::SERVICE_UNAVAILABLE);
    /// # let _ = layer;
    /// ```
    pub fn deadline_status(mut self, status: StatusCode) -> ServerLayer {
        self.config.responder = self.config.responder.deadline_status(status);
        self
    }

    /// The status for a request whose context was canceled before it was
    /// answered, which happens when the server's parent context is canceled
    /// (503 Service Unavailable by default, which clients may retry;
    /// [`CLIENT_CLOSED_REQUEST`](crate::CLIENT_CLOSED_REQUEST) is nginx's 499).
    ///
    /// ```
    /// # use ctx_http::ServerLayer;
    /// let layer = ServerLayer::new(&ctx_core::Context::background())
    ///     .canceled_status(http::StatusCode::SERVICE_UNAVAILABLE);
    /// # let _ = layer;
    /// ```
    pub fn canceled_status(mut self, status: StatusCode) -> ServerLayer {
        self.config.responder = self.config.responder.canceled_status(status);
        self
    }

    /// The status for a rejected malformed `grpc-timeout` (400 by default; only
    /// with [`Malformed::Reject`]).
    ///
    /// ```
    /// # use ctx_http::{Malformed, ServerLayer};
    /// let layer = ServerLayer::new(&ctx_core::Context::background())
    ///     .on_malformed(Malformed::Reject)
    ///     .malformed_status(http::StatusCode::UNPROCESSABLE_ENTITY);
    /// # let _ = layer;
    /// ```
    pub fn malformed_status(mut self, status: StatusCode) -> ServerLayer {
        self.config.responder = self.config.responder.malformed_status(status);
        self
    }
}

impl<R> ServerLayer<R> {
    /// The longest a request may run, whatever the client asks for: the
    /// deadline is `min(grpc-timeout, limit)` from the request's arrival, or
    /// `limit` without a header.
    ///
    /// The deadline covers the whole response, its body included: a handler
    /// that has not answered by then is dropped and the client gets 504 (by
    /// default); a body still streaming then is ended there ([`ServerBody`]).
    /// Over HTTP/1 it is also what ends a request whose client disconnected
    /// while uploading a body the handler does not read (see
    /// [A client that hangs up](ServerLayer#a-client-that-hangs-up)).
    ///
    /// ```
    /// # use ctx_http::ServerLayer;
    /// # use std::time::Duration;
    /// let layer = ServerLayer::new(&ctx_core::Context::background()).max_timeout(Duration::from_secs(30));
    /// # let _ = layer;
    /// ```
    pub fn max_timeout(mut self, limit: Duration) -> ServerLayer<R> {
        let cause = Cause::new(ServerCause::ServerDeadline { limit });
        self.config.max_timeout = Some((limit, cause));
        self
    }

    /// What to do with a malformed `grpc-timeout` ([`Malformed::Ignore`] by
    /// default).
    ///
    /// ```
    /// # use ctx_http::{Malformed, ServerLayer};
    /// let layer = ServerLayer::new(&ctx_core::Context::background()).on_malformed(Malformed::Reject);
    /// # let _ = layer;
    /// ```
    pub fn on_malformed(mut self, malformed: Malformed) -> ServerLayer<R> {
        self.config.malformed = malformed;
        self
    }

    /// A hook that gets each request's parts and its new context and returns
    /// the context the handler sees: the place to attach request-scoped values
    /// such as a request id or the authenticated caller.
    ///
    /// Return the context given, or one derived from it: the layer answers for
    /// (and ends) the context it created either way, but a context that is not
    /// its descendant would not see the request end. The hook runs on the
    /// thread that calls the service, when the request arrives (before the
    /// layer waits for the inner service to be ready, and calls it); a
    /// request whose context is born done skips it.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::Context;
    /// use ctx_http::ServerLayer;
    /// use http::{Request, Response};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// struct Caller(String);
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = ServerLayer::new(&Context::background()).map_context(|parts, ctx| {
    ///     let caller = parts.headers.get("x-caller").and_then(|v| v.to_str().ok());
    ///     ctx.with_value(Caller(caller.unwrap_or("anonymous").to_owned()))
    /// });
    /// let service = ServiceBuilder::new().layer(layer).service_fn(|req: Request<String>| async move {
    ///     let ctx = req.extensions().get::<Context>().unwrap();
    ///     let caller = &ctx.value::<Caller>().unwrap().0;
    ///     Ok::<_, std::convert::Infallible>(Response::new(format!("hello, {caller}")))
    /// });
    /// let request = Request::builder().header("x-caller", "ada").body(String::new()).unwrap();
    /// assert_eq!(service.oneshot(request).await.unwrap().body(), "hello, ada");
    /// # }
    /// ```
    pub fn map_context<F>(mut self, f: F) -> ServerLayer<R>
    where
        F: Fn(&Parts, Context) -> Context + Send + Sync + 'static,
    {
        self.config.map_context = Some(Arc::new(f));
        self
    }

    /// Answers rejected requests with `responder` instead (any
    /// `Fn(Rejection) -> Response<B>` is one).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_http::{Rejection, ServerLayer};
    /// use http::{Response, StatusCode};
    ///
    /// let layer = ServerLayer::new(&ctx_core::Context::background()).responder(|rejection: Rejection| {
    ///     let mut response = Response::new(String::new());
    ///     *response.status_mut() = match rejection.context_err() {
    ///         Some(err) if err.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
    ///         Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    ///         None => StatusCode::BAD_REQUEST,
    ///     };
    ///     response
    /// });
    /// # let _ = layer;
    /// ```
    pub fn responder<R2>(self, responder: R2) -> ServerLayer<R2> {
        let Config {
            parent,
            max_timeout,
            malformed,
            map_context,
            responder: _,
        } = self.config;
        ServerLayer {
            config: Config {
                parent,
                max_timeout,
                malformed,
                map_context,
                responder,
            },
        }
    }
}

impl<R: Clone> Clone for ServerLayer<R> {
    fn clone(&self) -> ServerLayer<R> {
        ServerLayer {
            config: self.config.clone(),
        }
    }
}

impl<R: Clone> Clone for Config<R> {
    fn clone(&self) -> Config<R> {
        Config {
            parent: self.parent.clone(),
            max_timeout: self.max_timeout.clone(),
            malformed: self.malformed,
            map_context: self.map_context.clone(),
            responder: self.responder.clone(),
        }
    }
}

impl<S, R: Clone> Layer<S> for ServerLayer<R> {
    type Service = ServerService<S, R>;

    fn layer(&self, inner: S) -> ServerService<S, R> {
        ServerService {
            inner,
            config: Arc::new(self.config.clone()),
        }
    }
}

impl<R: fmt::Debug> fmt::Debug for ServerLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<R: fmt::Debug> fmt::Debug for Config<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("parent", &self.parent)
            .field("max_timeout", &self.max_timeout.as_ref().map(|(d, _)| d))
            .field("malformed", &self.malformed)
            .field(
                "map_context",
                &self.map_context.as_ref().map(|_| format_args!("<fn>")),
            )
            .field("responder", &self.responder)
            .finish()
    }
}

/// The service [`ServerLayer`] wraps around an inner service: see there.
///
/// # Examples
///
/// ```
/// use ctx_http::ServerLayer;
/// use tower::Layer;
///
/// let service = ServerLayer::new(&ctx_core::Context::background()).layer(tower::service_fn(
///     |_req: http::Request<String>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) },
/// ));
/// let _inner = service.get_ref();
/// ```
pub struct ServerService<S, R = TextResponder> {
    inner: S,
    config: Arc<Config<R>>,
}

impl<S, R> ServerService<S, R> {
    /// The inner service (see the type's example).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// # use tower::Layer;
    /// let mut service = ctx_http::ServerLayer::new(&ctx_core::Context::background()).layer(
    ///     tower::service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    ///     }),
    /// );
    /// let _inner = service.get_mut();
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the layer.
    ///
    /// ```
    /// # use tower::Layer;
    /// let service = ctx_http::ServerLayer::new(&ctx_core::Context::background()).layer(
    ///     tower::service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    ///     }),
    /// );
    /// let _inner = service.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, R> Clone for ServerService<S, R> {
    fn clone(&self) -> ServerService<S, R> {
        ServerService {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, R: fmt::Debug> fmt::Debug for ServerService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: Responder<ResBody>,
{
    type Response = Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerFuture<S, Request<ReqBody>, R>;

    /// Always ready: the inner service's readiness is waited for in the
    /// response future, under the request's context (see
    /// [`ServerLayer`'s readiness](ServerLayer#readiness)).
    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let client_timeout = match timeout_from_headers(req.headers()) {
            Ok(timeout) => timeout,
            Err(err) => match config.malformed {
                Malformed::Ignore => None,
                Malformed::Reject => {
                    let rejection = Rejection::MalformedTimeout(err);
                    return ServerFuture::rejected(rejection, Guard::default(), config);
                }
            },
        };

        // The deadline and its cause: the earlier of the client's and the server's.
        let limit = match (client_timeout, &config.max_timeout) {
            (Some(timeout), Some((limit, cause))) if *limit < timeout => {
                Some((*limit, cause.clone()))
            }
            (Some(timeout), _) => {
                Some((timeout, Cause::new(ServerCause::ClientDeadline { timeout })))
            }
            (None, Some((limit, cause))) => Some((*limit, cause.clone())),
            (None, None) => None,
        };
        // One node per request: a deadline node's cancel function, turned into a
        // `Canceler`, cancels with a cause as well.
        let (ctx, canceler) = match limit {
            Some((timeout, cause)) => {
                let (ctx, cancel) = config.parent.with_timeout_cause(timeout, cause);
                (ctx, cancel.into_canceler())
            }
            None => {
                let (ctx, cancel) = config.parent.with_cancel_cause();
                (ctx, cancel.into_canceler())
            }
        };
        let guard = Guard::new(canceler);
        if let Some(err) = ctx.err() {
            // Born done: the parent is done (shutdown) or the budget is zero.
            let rejection = Rejection::from_context(err, cause_of(&ctx, err));
            return ServerFuture::rejected(rejection, guard, config);
        }

        let handler_ctx = match &config.map_context {
            Some(map) => {
                let (parts, body) = req.into_parts();
                let handler_ctx = map(&parts, ctx.clone());
                req = Request::from_parts(parts, body);
                handler_ctx
            }
            None => ctx.clone(),
        };
        req.extensions_mut().insert(handler_ctx);
        // Answered with no body (RFC 9110, 9.3.2 and 9.3.6): a response's body
        // dropped unread then cuts nothing short.
        let bodiless_request = matches!(*req.method(), Method::HEAD | Method::CONNECT);
        // As tower's `Oneshot`: the future takes the instance it readies and
        // calls, and leaves a fresh clone behind.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        ServerFuture {
            guard,
            state: State::NotReady {
                inner,
                req: Some(req),
                ctx,
                done: None,
            },
            config: config.clone(),
            bodiless_request,
        }
    }
}

pin_project! {
    /// The response future of [`ServerService`]: the inner service's
    /// readiness, then its call, raced against the request's context. Its
    /// response's body is a [`ServerBody`], which takes the context over
    /// until the body ends.
    ///
    /// Dropping it before it completes ends the request's context with
    /// [`ServerCause::ClientGone`] ([`ServerCause::Panicked`] if a panic
    /// unwinds through it, or left its last poll and was caught above it).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::Context;
    /// use ctx_http::ServerCause;
    /// use http::{Request, Response};
    /// use std::future::Future;
    /// use std::sync::{Arc, Mutex};
    /// use tower::{Layer, Service};
    ///
    /// let seen = Arc::new(Mutex::new(None));
    /// let keep = seen.clone();
    /// let mut service = ctx_http::ServerLayer::new(&Context::background()).layer(
    ///     tower::service_fn(move |req: Request<String>| {
    ///         *keep.lock().unwrap() = req.extensions().get::<Context>().cloned();
    ///         std::future::pending::<Result<Response<String>, std::convert::Infallible>>()
    ///     }),
    /// );
    /// let mut future = Box::pin(service.call(Request::new(String::new())));
    /// // The first poll gets the handler ready and calls it.
    /// let waker = std::task::Waker::noop();
    /// assert!(future.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_pending());
    /// drop(future); // the client hung up
    /// let ctx = seen.lock().unwrap().take().unwrap();
    /// let cause = ctx.cause().unwrap();
    /// assert_eq!(cause.downcast_ref::<ServerCause>(), Some(&ServerCause::ClientGone));
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ServerFuture<S, Req, R = TextResponder>
    where
        S: Service<Req>,
    {
        // Declared first so that it is dropped first: the context is done
        // before the inner future's own `Drop`s run, which can then see why.
        guard: Guard,
        #[pin]
        state: State<S, Req>,
        config: Arc<Config<R>>,
        // The request's method gets no body in answer (`HEAD`, `CONNECT`).
        bodiless_request: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Waiting for the inner service (this request's instance of it) to be
        // ready, under the request's context.
        NotReady {
            inner: S,
            req: Option<Req>,
            ctx: Context,
            // Created on the first `Pending` only, and kept for the call.
            done: Option<Done>,
        },
        Running {
            #[pin]
            fut: S::Future,
            ctx: Context,
            // Created on the first `Pending` only: a service that answers at
            // once never registers a waiter.
            done: Option<Done>,
        },
        Rejected {
            rejection: Option<Rejection>,
        },
        Finished,
    }
}

impl<S, Req, R> ServerFuture<S, Req, R>
where
    S: Service<Req>,
{
    fn rejected(rejection: Rejection, guard: Guard, config: &Arc<Config<R>>) -> Self {
        ServerFuture {
            guard,
            state: State::Rejected {
                rejection: Some(rejection),
            },
            config: config.clone(),
            bodiless_request: false,
        }
    }
}

impl<S, B, R, ResBody> Future for ServerFuture<S, Request<B>, R>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    R: Responder<ResBody>,
{
    type Output = Result<Response<ServerBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let rejection = loop {
            match this.state.as_mut().project() {
                StateProj::NotReady {
                    inner,
                    req,
                    ctx,
                    done,
                } => {
                    // Exact deadlines: `err` reports an expired deadline even
                    // before the timer has fired.
                    if let Some(err) = ctx.err() {
                        break Rejection::from_context(err, cause_of(ctx, err));
                    }
                    // Marked, as the handler's polls below: a panic out of
                    // the inner service ends the request as `Panicked`.
                    this.guard.in_poll = true;
                    let ready = inner.poll_ready(cx);
                    this.guard.in_poll = false;
                    match ready {
                        Poll::Ready(Ok(())) => {
                            // Exact deadlines again: a deadline that passed
                            // while the service got ready calls nothing.
                            if let Some(err) = ctx.err() {
                                break Rejection::from_context(err, cause_of(ctx, err));
                            }
                            let req = req.take().expect("a ServerFuture calls its service once");
                            this.guard.in_poll = true;
                            let fut = inner.call(req);
                            this.guard.in_poll = false;
                            let (ctx, done) = (ctx.clone(), done.take());
                            this.state.set(State::Running { fut, ctx, done });
                        }
                        Poll::Ready(Err(err)) => {
                            // The inner service failed: the request is over.
                            let err = ctx_core::adapter::drop_then_return(
                                || this.state.set(State::Finished),
                                err,
                            );
                            this.guard.finish();
                            return Poll::Ready(Err(err));
                        }
                        Poll::Pending => {
                            let err = ready!(poll_done(ctx, done, cx));
                            break Rejection::from_context(err, cause_of(ctx, err));
                        }
                    }
                }
                StateProj::Running { fut, ctx, done } => {
                    // Exact deadlines: a late poll never lets a handler answer
                    // after the deadline.
                    if let Some(err) = ctx.err() {
                        break Rejection::from_context(err, cause_of(ctx, err));
                    }
                    // Marked while the inner future runs: a panic out of its
                    // poll that is caught above this future (tower-http's
                    // `CatchPanicLayer` answers 500 and drops the future
                    // later, the unwind over) leaves the mark for the guard
                    // to see.
                    this.guard.in_poll = true;
                    let polled = fut.poll(cx);
                    this.guard.in_poll = false;
                    if let Poll::Ready(result) = polled {
                        // Exact deadlines again: an answer whose making took
                        // the handler past the deadline (work in the poll that
                        // returned it) is not sent either.
                        if result.is_ok()
                            && let Some(err) = ctx.err()
                        {
                            break Rejection::from_context(err, cause_of(ctx, err));
                        }
                        let ctx = ctx.clone();
                        // The handler's future goes now; a panic of its
                        // `Drop` leaves `result` dropped under a guard, not by
                        // the unwind (a second panic would abort).
                        let result = ctx_core::adapter::drop_then_return(
                            || this.state.set(State::Finished),
                            result,
                        );
                        return Poll::Ready(match result {
                            // The body keeps the context alive until it is sent.
                            Ok(response) => {
                                let guard = std::mem::take(this.guard);
                                let (parts, body) = response.into_parts();
                                let body = ServerBody::watching(
                                    body,
                                    guard,
                                    ctx,
                                    parts.status,
                                    &parts.headers,
                                    *this.bodiless_request,
                                );
                                Ok(Response::from_parts(parts, body))
                            }
                            Err(err) => {
                                this.guard.finish();
                                Err(err)
                            }
                        });
                    }
                    let err = ready!(poll_done(ctx, done, cx));
                    break Rejection::from_context(err, cause_of(ctx, err));
                }
                StateProj::Rejected { rejection } => {
                    break rejection
                        .take()
                        .expect("a rejected ServerFuture holds its rejection");
                }
                StateProj::Finished => panic!("ServerFuture polled after completion"),
            }
        };
        // Drop the inner service or future now: the context is done and nobody
        // waits for it.
        let rejection =
            ctx_core::adapter::drop_then_return(|| this.state.set(State::Finished), rejection);
        this.guard.disarm();
        let response = this.config.responder.respond(rejection);
        Poll::Ready(Ok(response.map(ServerBody::plain)))
    }
}

impl<S, Req, R> fmt::Debug for ServerFuture<S, Req, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::NotReady { ctx, .. } => {
                format!("waiting for the service to be ready under {ctx}")
            }
            State::Running { ctx, .. } => format!("running under {ctx}"),
            State::Rejected { .. } => "rejected".to_owned(),
            State::Finished => "finished".to_owned(),
        };
        f.debug_struct("ServerFuture")
            .field("state", &format_args!("{state}"))
            .finish_non_exhaustive()
    }
}

/// The request context's canceler: cancels with [`ServerCause::ClientGone`]
/// when dropped armed. (A `Canceler`, unlike a cancel function, does nothing
/// when dropped, so every way out of the request goes through here.)
#[derive(Default)]
pub(crate) struct Guard {
    canceler: Option<Canceler>,
    // Set while the inner future is polled: still set when the guard is dropped,
    // that poll never returned (it panicked).
    in_poll: bool,
}

impl Guard {
    fn new(canceler: Canceler) -> Guard {
        Guard {
            canceler: Some(canceler),
            in_poll: false,
        }
    }

    /// The request is over: ends the context with [`ServerCause::Responded`],
    /// or with [`ServerCause::Panicked`] when a panic is what ended it (an
    /// unwind drops the body, or a panic left the body's last poll).
    pub(crate) fn finish(&mut self) {
        if let Some(canceler) = self.canceler.take() {
            let cause = if std::thread::panicking() || self.in_poll {
                shared_cause(&PANICKED, ServerCause::Panicked)
            } else {
                shared_cause(&RESPONDED, ServerCause::Responded)
            };
            end(canceler, cause);
        }
    }

    /// Marks (or unmarks) a poll of the handler's future or body: a mark
    /// still set when the request ends means that poll panicked.
    pub(crate) fn set_in_poll(&mut self, in_poll: bool) {
        self.in_poll = in_poll;
    }

    /// The context is already done: releases it without another cause.
    pub(crate) fn disarm(&mut self) {
        self.canceler = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(canceler) = self.canceler.take() {
            // Dropped by an unwind (the handler panicked), after a panic out of
            // the handler's poll that something above caught, or by the server
            // (the client hung up).
            let cause = if std::thread::panicking() || self.in_poll {
                shared_cause(&PANICKED, ServerCause::Panicked)
            } else {
                shared_cause(&CLIENT_GONE, ServerCause::ClientGone)
            };
            end(canceler, cause);
        }
    }
}

/// Ends the request's context with `cause`. The cancel runs the `Drop`s of the
/// values it released last on this thread and resumes the first one's panic
/// afterwards. That panic is the value's (the panic hook reported it), not
/// the request's: let out, it would unwind through the server's connection
/// task, which then sends nothing more (not the response it was about to
/// flush, nor the service's error). So it stops here.
fn end(canceler: Canceler, cause: Cause) {
    ctx_core::adapter::contain_panic(move || canceler.cancel_with_cause(cause));
}

static RESPONDED: OnceLock<Cause> = OnceLock::new();
static CLIENT_GONE: OnceLock<Cause> = OnceLock::new();
static PANICKED: OnceLock<Cause> = OnceLock::new();

/// One shared allocation per process for the causes every request ends with.
fn shared_cause(slot: &'static OnceLock<Cause>, cause: ServerCause) -> Cause {
    slot.get_or_init(|| Cause::new(cause)).clone()
}
