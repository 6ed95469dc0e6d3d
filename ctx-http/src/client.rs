//! The client side: [`ClientLayer`] sends a request's remaining time along as
//! `grpc-timeout`, refuses to send a request whose context is already done, and
//! gives up on the call as soon as the context is done.
//!
//! The context travels with the request in its extensions, the same place
//! [`ServerLayer`](crate::ServerLayer) puts it: a handler that builds its
//! outgoing request from the incoming one's context passes its deadline and
//! cancellation on to the next hop without another line.

use crate::ended::{cause_of, poll_done};
use crate::header::{GRPC_TIMEOUT, encode, parse_timeout};
use ctx_core::adapter::drop_then_return;
use ctx_core::{Cause, Context, Done, Error};
use http::{HeaderValue, Request};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// A tower [`Layer`] for HTTP clients that makes calls obey the [`Context`]
/// found in each request's extensions.
///
/// For a request that carries a context (`req.extensions_mut().insert(ctx)`),
/// [`ClientService`]:
///
/// * fails with [`ClientError::NotSent`] without calling the inner service when
///   the context is already done;
/// * waits for the inner service to be ready (a concurrency limit, a
///   connection pool, a buffer whose queue is full) in the response future,
///   racing the context: when the context ends first, the call fails with
///   [`ClientError::NotSent`] (nothing was sent);
/// * writes the time left until the context's deadline, when the request
///   leaves, as `grpc-timeout` (keeping a value already there if it is
///   shorter; a request that carries the header several times leaves with
///   one value, the shortest), so the server stops when the caller stops
///   waiting;
/// * races the call against the context: when the context ends first, the
///   inner future is dropped (hyper then abandons the request and closes its
///   connection, which the server sees as a client that went away) and the call
///   fails with [`ClientError::Abandoned`].
///
/// A request without a context passes through untouched (it still waits for
/// the inner service's readiness in its response future).
///
/// Under tonic's client, use `grpc::GrpcClientLayer` (feature `tonic`): the
/// same layer, whose errors are gRPC statuses (`DEADLINE_EXCEEDED`,
/// `CANCELLED`, the transport's own).
///
/// # Readiness
///
/// [`ClientService`] is always ready: `poll_ready` does not see the request,
/// so it cannot know the context a wait would have to end with. Each call
/// takes a clone of the inner service instead (as tower's `Oneshot` does),
/// and waits for that clone's readiness under the request's context. So the
/// inner service must be `Clone`, as HTTP clients are (hyper-util's `Client`,
/// tonic's `Channel`) and as tower's `ConcurrencyLimit` and `BoxCloneService`
/// are over a `Clone` service. Backpressure moves with it: a caller is not
/// held back in `poll_ready`, its response future waits instead.
///
/// A service that is not `Clone` (tower's `RateLimit`, a `BoxService`) goes
/// in tower's `Buffer`, and the layer goes *inside* the buffer, under the
/// service that makes requests wait:
/// `ServiceBuilder::new().buffer(n).rate_limit(..).layer(ClientLayer::new())`.
/// The layer is then called when the request leaves the rate limit, so the
/// `grpc-timeout` it writes is the time left then, and a request whose context
/// ended while it waited is refused with [`ClientError::NotSent`] (the
/// buffer's error is the boxed [`ClientError`]: downcast it). The caller's
/// future is the buffer's, though, which the layer does not race: it ends when
/// the request's turn comes, not when its context ends. To give up at the
/// context's end, race the call as well (`ctx_tokio::run_until_done`, say);
/// the buffer drops a request whose caller is gone without sending it.
///
/// Not the other way round. Over a `Buffer`, the layer sees only the buffer's
/// readiness, which is room in its queue: the wait for the rate limit happens
/// in the buffer's worker after the call. The `grpc-timeout` is then the time
/// left when the request was queued, more than the server really has once it
/// leaves, and a context that ends while the request is still queued ends the
/// call with [`ClientError::Abandoned`] (which says the request may have been
/// sent) although the buffer drops it unsent.
///
/// # Caveats
///
/// The race covers the call up to the response's head. A response body read
/// afterwards is not bounded by the context; read it under
/// `ctx_tokio::run_until_done` (or similar) if it may be slow.
///
/// "When the request leaves" is when the layer hands it to the inner
/// service, once that service is ready. Whatever the inner service does in
/// its call before the bytes go out is not counted: hyper-util's `Client` is
/// always ready and connects (DNS, TCP, TLS) inside its call, so a request
/// on a new connection tells the server the time left before the connect,
/// and the server's deadline ends later than the caller's by the connect's
/// duration. The caller still gives up at its own deadline (the server then
/// sees it go away); for a tight budget, keep connections warm (the pool
/// does) or give the server's layer a `max_timeout`.
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use ctx_http::{ClientError, ClientLayer, GRPC_TIMEOUT};
/// use http::{Request, Response};
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Stands in for a real HTTP client (hyper-util's `Client` is a tower service).
/// let transport = tower::service_fn(|req: Request<()>| async move {
///     let sent = req.headers().get(GRPC_TIMEOUT).cloned();
///     Ok::<_, Infallible>(Response::new(sent))
/// });
/// let client = ServiceBuilder::new().layer(ClientLayer::new()).service(transport);
///
/// let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(2));
/// let mut request = Request::new(());
/// request.extensions_mut().insert(ctx.clone());
/// let response = client.clone().oneshot(request).await.unwrap();
/// let sent = ctx_http::parse_timeout(response.body().as_ref().unwrap()).unwrap();
/// assert!(sent <= Duration::from_secs(2));
///
/// cancel.cancel();
/// let mut request = Request::new(());
/// request.extensions_mut().insert(ctx);
/// let err = client.oneshot(request).await.unwrap_err();
/// assert!(matches!(err, ClientError::NotSent { err: ctx_core::Error::Canceled, .. }));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer {
    _private: (),
}

impl ClientLayer {
    /// The layer (it has no settings: the context comes with each request).
    ///
    /// ```
    /// let client = tower::ServiceBuilder::new()
    ///     .layer(ctx_http::ClientLayer::new())
    ///     .service(tower::service_fn(|_req: http::Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(()))
    ///     }));
    /// # let _ = client;
    /// ```
    pub fn new() -> ClientLayer {
        ClientLayer { _private: () }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService { inner }
    }
}

/// The service [`ClientLayer`] wraps around an HTTP client: see there.
///
/// # Examples
///
/// ```
/// use tower::Layer;
///
/// let client = ctx_http::ClientLayer::new().layer(tower::service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
/// }));
/// let _inner = client.into_inner();
/// ```
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
}

impl<S> ClientService<S> {
    /// The inner service.
    ///
    /// ```
    /// # use tower::Layer;
    /// let client = ctx_http::ClientLayer::new().layer(tower::service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
    /// }));
    /// let _transport = client.get_ref();
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// # use tower::Layer;
    /// let mut client = ctx_http::ClientLayer::new().layer(tower::service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
    /// }));
    /// let _transport = client.get_mut();
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the layer.
    ///
    /// ```
    /// # use tower::Layer;
    /// let client = ctx_http::ClientLayer::new().layer(tower::service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
    /// }));
    /// let _transport = client.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>> + Clone,
{
    type Response = S::Response;
    type Error = ClientError<S::Error>;
    type Future = ClientFuture<S, Request<B>>;

    /// Always ready: the inner service's readiness is waited for in the
    /// response future, where it races the request's context (see
    /// [`ClientLayer`]).
    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ctx = req.extensions().get::<Context>().cloned();
        if let Some(ctx) = &ctx
            && let Some(err) = ctx.err()
        {
            // Refused before anything is cloned or sent.
            let cause = cause_of(ctx, err);
            return ClientFuture {
                state: ClientState::Refused {
                    error: Some((err, cause)),
                },
            };
        }
        // As tower's `Oneshot`: the future takes the instance that may have
        // been readied, and leaves a fresh clone behind.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        ClientFuture {
            state: ClientState::NotReady {
                inner,
                req: Some(req),
                ctx,
                done: None,
            },
        }
    }
}

/// Writes the time left until `ctx`'s deadline as `grpc-timeout`, unless a
/// shorter value is there already.
///
/// A request may carry the header more than once, and servers differ on which
/// value they take (this crate's server the first, grpc-go the last). So every
/// value is looked at, and the request leaves with one: the shortest valid one
/// already there if it is no longer than the time left, else the time left.
/// No server can then read a longer timeout than the caller will wait. Without
/// a deadline, several values are cut to the shortest valid one all the same;
/// a lone value, valid or not, is left as it is.
fn write_timeout<B>(req: &mut Request<B>, ctx: &Context) {
    let remaining = ctx.remaining();
    let headers = req.headers_mut();
    let mut values = 0usize;
    let mut kept: Option<(Duration, HeaderValue)> = None;
    for value in headers.get_all(GRPC_TIMEOUT) {
        values += 1;
        if let Ok(there) = parse_timeout(value)
            && remaining.is_none_or(|remaining| there <= remaining)
            && kept.as_ref().is_none_or(|(shortest, _)| there < *shortest)
        {
            kept = Some((there, value.clone()));
        }
    }
    match (kept, remaining) {
        // The one value there is kept as it is.
        (Some(_), _) if values == 1 => {}
        (Some((_, value)), _) => {
            headers.insert(GRPC_TIMEOUT, value);
        }
        (None, Some(remaining)) => {
            headers.insert(GRPC_TIMEOUT, encode(remaining));
        }
        // No deadline, and no valid value to keep: nothing to add.
        (None, None) => {}
    }
}

pin_project! {
    /// The response future of [`ClientService`]: the inner service's
    /// readiness, then the call, raced against the request's context.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_http::ClientFuture;
    /// use http::{Request, Response};
    /// use tower::{Layer, Service};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut client = ctx_http::ClientLayer::new().layer(tower::service_fn(|_req: Request<()>| {
    ///     std::future::ready(Ok::<_, std::convert::Infallible>(Response::new("pong")))
    /// }));
    /// let future: ClientFuture<_, _> = client.call(Request::new(()));
    /// assert_eq!(*future.await.unwrap().body(), "pong");
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ClientFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: ClientState<S, Req>,
    }
}

pin_project! {
    #[project = ClientStateProj]
    enum ClientState<S, Req>
    where
        S: Service<Req>,
    {
        // Waiting for the inner service to be ready; `ctx` is `None` for a
        // request without a context (no race).
        NotReady {
            inner: S,
            req: Option<Req>,
            ctx: Option<Context>,
            done: Option<Done>,
        },
        Called {
            #[pin]
            fut: S::Future,
            ctx: Option<Context>,
            done: Option<Done>,
        },
        Refused {
            error: Option<(Error, Cause)>,
        },
        Finished,
    }
}

impl<S, B> Future for ClientFuture<S, Request<B>>
where
    S: Service<Request<B>>,
{
    type Output = Result<S::Response, ClientError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let error = loop {
            match state.as_mut().project() {
                ClientStateProj::NotReady {
                    inner,
                    req,
                    ctx,
                    done,
                } => {
                    // Exact deadlines: an expired deadline is seen before the
                    // timer fires, so nothing is sent after it.
                    if let Some(ctx) = ctx
                        && let Some(err) = ctx.err()
                    {
                        break ClientError::not_sent(ctx, err);
                    }
                    match inner.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            // Exact deadlines again: a deadline that passed
                            // while the service got ready (work in the poll
                            // that returned `Ready`) sends nothing either.
                            if let Some(ctx) = ctx
                                && let Some(err) = ctx.err()
                            {
                                break ClientError::not_sent(ctx, err);
                            }
                            let mut req =
                                req.take().expect("a ClientFuture sends its request once");
                            if let Some(ctx) = ctx {
                                // The time left now, when the request leaves.
                                write_timeout(&mut req, ctx);
                            }
                            let fut = inner.call(req);
                            let (ctx, done) = (ctx.take(), done.take());
                            state.set(ClientState::Called { fut, ctx, done });
                        }
                        Poll::Ready(Err(err)) => break ClientError::Service(err),
                        Poll::Pending => {
                            let Some(ctx) = ctx else {
                                return Poll::Pending;
                            };
                            let err = ready!(poll_done(ctx, done, cx));
                            break ClientError::not_sent(ctx, err);
                        }
                    }
                }
                ClientStateProj::Called { fut, ctx, done } => {
                    let Some(ctx) = ctx else {
                        let result = ready!(fut.poll(cx));
                        let result = drop_then_return(|| state.set(ClientState::Finished), result);
                        return Poll::Ready(result.map_err(ClientError::Service));
                    };
                    if let Some(err) = ctx.err() {
                        break ClientError::abandoned(ctx, err);
                    }
                    if let Poll::Ready(result) = fut.poll(cx) {
                        let result = drop_then_return(|| state.set(ClientState::Finished), result);
                        return Poll::Ready(result.map_err(ClientError::Service));
                    }
                    let err = ready!(poll_done(ctx, done, cx));
                    break ClientError::abandoned(ctx, err);
                }
                ClientStateProj::Refused { error } => {
                    let (err, cause) = error
                        .take()
                        .expect("a refused ClientFuture holds its error");
                    break ClientError::NotSent { err, cause };
                }
                ClientStateProj::Finished => panic!("ClientFuture polled after completion"),
            }
        };
        // Drop the call now: that is what tells the server the client is gone.
        // (A panic of that drop leaves `error`, which may hold the inner
        // service's error, dropped under a guard, not by the unwind.)
        let error = drop_then_return(|| state.set(ClientState::Finished), error);
        Poll::Ready(Err(error))
    }
}

impl<S, Req> fmt::Debug for ClientFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let under = |ctx: &Option<Context>| match ctx {
            Some(ctx) => format!("under {ctx}"),
            None => "without a context".to_owned(),
        };
        let state = match &self.state {
            ClientState::NotReady { ctx, .. } => {
                format!("waiting for the service to be ready {}", under(ctx))
            }
            ClientState::Called { ctx, .. } => format!("sending {}", under(ctx)),
            ClientState::Refused { .. } => "refused".to_owned(),
            ClientState::Finished => "finished".to_owned(),
        };
        f.debug_struct("ClientFuture")
            .field("state", &format_args!("{state}"))
            .finish()
    }
}

/// The error of a call through [`ClientService`].
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Error};
/// use ctx_http::ClientError;
///
/// let err: ClientError<std::io::Error> =
///     ClientError::NotSent { err: Error::Canceled, cause: Cause::msg("user pressed stop") };
/// assert!(!err.was_sent());
/// assert_eq!(err.context_err(), Some(Error::Canceled));
/// // The message says what happened; the cause is the source.
/// assert_eq!(err.to_string(), "request not sent: context canceled");
/// let source = std::error::Error::source(&err).unwrap();
/// assert_eq!(source.to_string(), "user pressed stop");
/// ```
///
/// The message and the sources follow Rust's convention for error reports:
/// each error's message leaves out what its source says, and a report
/// prints the chain ("request not sent: context canceled: user pressed
/// stop"). The chain is the same with every feature of the crate.
///
/// tonic's client does not know this type (it would report every one as
/// `UNKNOWN`): under it, use `grpc::GrpcClientLayer` (feature `tonic`), whose
/// errors are these turned into gRPC statuses by `tonic::Status::from`.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError<E> {
    /// The request's context was done before the request could be sent:
    /// already when it was called, or while the inner service was not ready.
    /// The request was not sent.
    NotSent {
        /// Why the context is done.
        err: Error,
        /// The context's cause.
        cause: Cause,
    },
    /// The request's context ended while the call was in flight; the call was
    /// dropped, which abandons the request.
    Abandoned {
        /// Why the context is done.
        err: Error,
        /// The context's cause.
        cause: Cause,
    },
    /// The inner service failed. Its error is this one's
    /// [`source`](std::error::Error::source) (the message says only that
    /// the service failed, as the sources follow it in an error report) and
    /// [`into_service_error`](ClientError::into_service_error)'s result.
    Service(E),
}

impl<E> ClientError<E> {
    fn abandoned(ctx: &Context, err: Error) -> ClientError<E> {
        let cause = cause_of(ctx, err);
        ClientError::Abandoned { err, cause }
    }

    fn not_sent(ctx: &Context, err: Error) -> ClientError<E> {
        let cause = cause_of(ctx, err);
        ClientError::NotSent { err, cause }
    }

    /// The context error, when the context (not the service) ended the call.
    ///
    /// ```
    /// let err = ctx_http::ClientError::Service(std::io::Error::other("reset"));
    /// assert_eq!(err.context_err(), None);
    /// ```
    pub fn context_err(&self) -> Option<Error> {
        match self {
            ClientError::NotSent { err, .. } | ClientError::Abandoned { err, .. } => Some(*err),
            ClientError::Service(_) => None,
        }
    }

    /// The context's cause, when the context ended the call.
    ///
    /// ```
    /// use ctx_core::{Cause, Error};
    /// let err: ctx_http::ClientError<std::io::Error> =
    ///     ctx_http::ClientError::Abandoned { err: Error::Canceled, cause: Cause::msg("user left") };
    /// assert_eq!(err.cause().unwrap().to_string(), "user left");
    /// ```
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            ClientError::NotSent { cause, .. } | ClientError::Abandoned { cause, .. } => {
                Some(cause)
            }
            ClientError::Service(_) => None,
        }
    }

    /// Whether the request may have reached the server: false only for
    /// [`ClientError::NotSent`], which is always safe to retry.
    ///
    /// ```
    /// let err = ctx_http::ClientError::Service(std::io::Error::other("reset"));
    /// assert!(err.was_sent());
    /// ```
    pub fn was_sent(&self) -> bool {
        !matches!(self, ClientError::NotSent { .. })
    }

    /// The inner service's error, if that is what this is.
    ///
    /// ```
    /// let err = ctx_http::ClientError::Service(std::io::Error::other("reset"));
    /// assert_eq!(err.into_service_error().unwrap().to_string(), "reset");
    /// ```
    pub fn into_service_error(self) -> Option<E> {
        match self {
            ClientError::Service(err) => Some(err),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for ClientError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The cause, if any, is the source: not repeated here.
            ClientError::NotSent { err, .. } => write!(f, "request not sent: {err}"),
            ClientError::Abandoned { err, .. } => write!(f, "request abandoned: {err}"),
            // The service's error is the source: not repeated here.
            ClientError::Service(_) => f.write_str("request failed in the inner service"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ClientError<E> {
    /// [`Service`](ClientError::Service)'s source is the service's error.
    ///
    /// The source of [`NotSent`](ClientError::NotSent) and
    /// [`Abandoned`](ClientError::Abandoned) is the context's cause, unless
    /// the cause is just the context's error (a context canceled or timed out
    /// without a cause of its own), which the message says already: then
    /// there is none.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::NotSent { err, cause } | ClientError::Abandoned { err, cause } => {
                if cause.as_error() == Some(*err) {
                    None
                } else {
                    Some(&**cause)
                }
            }
            ClientError::Service(err) => Some(err),
        }
    }
}
