//! gRPC statuses for context errors, with tonic's types (feature `tonic`).
//!
//! A context that ends with [`Error::DeadlineExceeded`] is gRPC's
//! `DEADLINE_EXCEEDED`, one that ends with [`Error::Canceled`] is `CANCELLED`:
//! [`code`] and [`error`] map between them, and [`status`] builds a [`Status`]
//! whose message carries the cause.
//!
//! [`GrpcResponder`] makes [`ServerLayer`](crate::ServerLayer) answer gRPC
//! clients the way they expect: HTTP 200 with `grpc-status` in the headers (a
//! trailers-only response), `DEADLINE_EXCEEDED` when the request's deadline
//! passed before the handler answered, `UNAVAILABLE` when the server's parent
//! context was canceled (the server is shutting down: the client may retry
//! elsewhere, as with grpc-go).
//!
//! In a tonic handler, the layer's context is in the request's extensions:
//! `request.extensions().get::<ctx_core::Context>()`. It stays live until the
//! response's body has been sent, so a server-streaming RPC can watch it while
//! it sends its messages; the client's deadline and the server's
//! [`max_timeout`](crate::ServerLayer::max_timeout) bound the whole stream: at
//! the deadline, the layer ends the stream with trailers carrying
//! `grpc-status` 4 (`DEADLINE_EXCEEDED`), and at shutdown with 14
//! (`UNAVAILABLE`), whatever the responder (see
//! [`ServerBody`](crate::ServerBody)). Once the body has ended, the context
//! ends with [`ServerCause::Responded`](crate::ServerCause::Responded).
//!
//! On the client side, insert the context into the `tonic::Request`'s
//! extensions and wrap the channel in [`GrpcClientLayer`]:
//! `MyClient::new(GrpcClientLayer::new().layer(channel))`. It is
//! [`ClientLayer`] (the deadline as `grpc-timeout`, no call sent once the
//! context is done, a call in flight dropped when it ends) with errors that
//! are statuses already: tonic's client, which turns any other error into a
//! status with `Status::from_error`, would report the plain layer's
//! [`ClientError`]s as `UNKNOWN`. A call whose context ended fails with
//! [`code`]'s code (`DEADLINE_EXCEEDED` or `CANCELLED`), a transport's own
//! status comes through as it is, and any other transport error is `UNKNOWN`
//! with its own message. Code that calls [`ClientLayer`] itself converts its
//! errors with `Status::from`, which does the same.
//!
//! # Examples
//!
//! ```
//! use ctx_core::{Context, Error};
//! use tonic::Code;
//!
//! let (ctx, cancel) = Context::background().with_cancel_cause();
//! cancel.cancel(ctx_core::Cause::msg("user logged out"));
//! let status = ctx_http::grpc::context_status(&ctx).unwrap();
//! assert_eq!(status.code(), Code::Cancelled);
//! assert_eq!(status.message(), "context canceled: user logged out");
//! assert_eq!(ctx_http::grpc::error(Code::DeadlineExceeded), Some(Error::DeadlineExceeded));
//! ```

use crate::body::grpc_code;
use crate::client::{ClientError, ClientFuture, ClientLayer, ClientService};
use crate::response::{Rejection, Responder};
use ctx_core::{Cause, Context, Error};
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

/// A boxed error, as tower and tonic spell it.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The gRPC code for a context error: `DeadlineExceeded` or `Cancelled`.
///
/// This is what a context's own end means (grpc-go's `FromContextError`
/// mapping): the caller gave up, or ran out of time. A server that answers
/// because *its* parent context was canceled says `UNAVAILABLE` instead (it
/// is shutting down, and the client may retry elsewhere): that is
/// [`GrpcResponder`]'s choice for [`Rejection::Canceled`], not this mapping.
///
/// ```
/// use tonic::Code;
/// assert_eq!(ctx_http::grpc::code(ctx_core::Error::DeadlineExceeded), Code::DeadlineExceeded);
/// assert_eq!(ctx_http::grpc::code(ctx_core::Error::Canceled), Code::Cancelled);
/// ```
pub fn code(err: Error) -> Code {
    match err {
        Error::DeadlineExceeded => Code::DeadlineExceeded,
        Error::Canceled => Code::Cancelled,
    }
}

/// The context error a gRPC code stands for, if any: the inverse of [`code`],
/// for a client that wants to treat a remote `DEADLINE_EXCEEDED` like its own.
///
/// ```
/// use tonic::Code;
/// assert_eq!(ctx_http::grpc::error(Code::Cancelled), Some(ctx_core::Error::Canceled));
/// assert_eq!(ctx_http::grpc::error(Code::Unavailable), None);
/// ```
pub fn error(code: Code) -> Option<Error> {
    match code {
        Code::DeadlineExceeded => Some(Error::DeadlineExceeded),
        Code::Cancelled => Some(Error::Canceled),
        _ => None,
    }
}

/// A status for a context that ended with `err` and `cause`: the code from
/// [`code`], the error and the cause as the message.
///
/// ```
/// use ctx_core::{Cause, Error};
/// let status = ctx_http::grpc::status(Error::DeadlineExceeded, &Cause::msg("budget spent"));
/// assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
/// assert_eq!(status.message(), "context deadline exceeded: budget spent");
/// ```
pub fn status(err: Error, cause: &Cause) -> Status {
    let rejection = Rejection::from_context(err, cause.clone());
    Status::new(code(err), rejection.to_string())
}

/// The status of a context that is done; `None` while it is live.
///
/// ```
/// let ctx = ctx_core::Context::background();
/// assert!(ctx_http::grpc::context_status(&ctx).is_none());
/// ```
pub fn context_status(ctx: &Context) -> Option<Status> {
    let err = ctx.err()?;
    Some(status(err, &crate::ended::cause_of(ctx, err)))
}

impl<E> From<ClientError<E>> for Status
where
    E: Into<BoxError>,
{
    /// A context error becomes a status with [`code`]'s code
    /// (`DEADLINE_EXCEEDED` or `CANCELLED`), the error's message and the
    /// cause as the message ("request not sent: context canceled: user
    /// left"; a status has no chain of messages), and the cause, unless it is
    /// just the context's error, as the status's source.
    ///
    /// A service's error goes through tonic's own [`Status::from_error`]: a
    /// status (the error itself, or one along its sources) keeps its code and
    /// message; any other error is `UNKNOWN`, with the error's message.
    ///
    /// ```
    /// use ctx_core::{Cause, Error};
    /// use ctx_http::ClientError;
    /// use tonic::{Code, Status};
    ///
    /// let err: ClientError<std::io::Error> =
    ///     ClientError::Abandoned { err: Error::DeadlineExceeded, cause: Cause::msg("budget spent") };
    /// let status = Status::from(err);
    /// assert_eq!(status.code(), Code::DeadlineExceeded);
    /// assert_eq!(status.message(), "request abandoned: context deadline exceeded: budget spent");
    ///
    /// let err = ClientError::Service(std::io::Error::other("connection reset"));
    /// let status = Status::from(err);
    /// assert_eq!((status.code(), status.message()), (Code::Unknown, "connection reset"));
    ///
    /// let err = ClientError::Service(Status::unavailable("backend down"));
    /// assert_eq!(Status::from(err).code(), Code::Unavailable);
    /// ```
    fn from(err: ClientError<E>) -> Status {
        let (what, err, cause) = match err {
            ClientError::NotSent { err, cause } => ("request not sent", err, cause),
            ClientError::Abandoned { err, cause } => ("request abandoned", err, cause),
            ClientError::Service(err) => return Status::from_error(err.into()),
        };
        let rejection = Rejection::from_context(err, cause.clone());
        let mut status = Status::new(code(err), format!("{what}: {rejection}"));
        if cause.as_error() != Some(err) {
            status.set_source(Arc::from(BoxError::from(cause)));
        }
        status
    }
}

/// [`ClientLayer`] for tonic's client: the same calls, whose errors are
/// gRPC statuses.
///
/// tonic's client (`tonic::client::Grpc`, under every generated client)
/// turns a service's error into a status with [`Status::from_error`], which
/// knows nothing of [`ClientError`]: over the plain [`ClientLayer`], a call
/// whose context ended would fail with `UNKNOWN`. This layer converts each
/// [`ClientError`] with `Status::from` (see [`From<ClientError<E>> for
/// Status`](ClientError#impl-From%3CClientError%3CE%3E%3E-for-Status)) before
/// tonic sees it:
///
/// * a call refused or abandoned because its context ended is
///   `DEADLINE_EXCEEDED` or `CANCELLED` ([`code`]), with "request not sent"
///   (always safe to retry) or "request abandoned", the context's error and
///   its cause in the message, and the cause as the status's source;
/// * a transport's error goes through tonic's own [`Status::from_error`],
///   as tonic's client would convert it without the layer: a status (the
///   error, or one along its sources, as from tower's `Buffer` around a
///   channel) is kept as it is, and an error tonic does not recognize is
///   `UNKNOWN` with the error's own message.
///
/// The inner service's error need only be `Into<BoxError>`, as tonic
/// requires: tower's `Buffer`, `Timeout` and `LoadShed` (whose error is
/// tower's `BoxError`) work here. Everything else is [`ClientLayer`]'s: the
/// context travels in the `tonic::Request`'s extensions, `grpc-timeout`
/// carries its deadline, and the service is always ready (see
/// [`ClientLayer`'s readiness](ClientLayer#readiness)).
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use ctx_http::grpc::GrpcClientLayer;
/// use http::{Request, Response};
/// use tonic::body::Body;
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Stands in for a tonic `Channel` (`Channel::from_static(url).connect_lazy()`).
/// let channel = tower::service_fn(|_req: Request<Body>| async {
///     Ok::<_, tonic::Status>(Response::new(Body::empty()))
/// });
/// let service = GrpcClientLayer::new().layer(channel);
///
/// // What a generated client is built on (`MyClient::new(service)` takes it too).
/// let _grpc = tonic::client::Grpc::new(service.clone());
///
/// // A call whose context is done is refused with a status.
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let mut request = Request::new(Body::empty());
/// request.extensions_mut().insert(ctx);
/// let status = service.oneshot(request).await.unwrap_err();
/// assert_eq!(status.code(), tonic::Code::Cancelled);
/// assert_eq!(status.message(), "request not sent: context canceled");
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcClientLayer {
    _private: (),
}

impl GrpcClientLayer {
    /// The layer (it has no settings, as [`ClientLayer`]).
    ///
    /// ```
    /// # use tower::Layer;
    /// let channel = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
    ///     Ok::<_, tonic::Status>(http::Response::new(tonic::body::Body::empty()))
    /// });
    /// let _grpc = tonic::client::Grpc::new(ctx_http::grpc::GrpcClientLayer::new().layer(channel));
    /// ```
    pub fn new() -> GrpcClientLayer {
        GrpcClientLayer { _private: () }
    }
}

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientService<S>;

    fn layer(&self, inner: S) -> GrpcClientService<S> {
        GrpcClientService {
            inner: ClientLayer::new().layer(inner),
        }
    }
}

/// The service [`GrpcClientLayer`] wraps around a gRPC channel: a
/// [`ClientService`] whose errors are [`Status`]es.
///
/// # Examples
///
/// ```
/// use tower::Layer;
///
/// let service = ctx_http::grpc::GrpcClientLayer::new().layer(tower::service_fn(
///     |_req: http::Request<tonic::body::Body>| async {
///         Ok::<_, tonic::Status>(http::Response::new(tonic::body::Body::empty()))
///     },
/// ));
/// let _channel = service.into_inner();
/// ```
#[derive(Clone, Debug)]
pub struct GrpcClientService<S> {
    inner: ClientService<S>,
}

impl<S> GrpcClientService<S> {
    /// The inner service (the channel).
    ///
    /// ```
    /// # use tower::Layer;
    /// let service = ctx_http::grpc::GrpcClientLayer::new().layer(tower::service_fn(
    ///     |_req: http::Request<()>| async { Ok::<_, tonic::Status>(http::Response::new(())) },
    /// ));
    /// let _channel = service.get_ref();
    /// ```
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service (the channel), mutably.
    ///
    /// ```
    /// # use tower::Layer;
    /// let mut service = ctx_http::grpc::GrpcClientLayer::new().layer(tower::service_fn(
    ///     |_req: http::Request<()>| async { Ok::<_, tonic::Status>(http::Response::new(())) },
    /// ));
    /// let _channel = service.get_mut();
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// The inner service (the channel), without the layer.
    ///
    /// ```
    /// # use tower::Layer;
    /// let service = ctx_http::grpc::GrpcClientLayer::new().layer(tower::service_fn(
    ///     |_req: http::Request<()>| async { Ok::<_, tonic::Status>(http::Response::new(())) },
    /// ));
    /// let _channel = service.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, B> Service<Request<B>> for GrpcClientService<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Status;
    type Future = GrpcClientFuture<S, Request<B>>;

    /// Always ready, as [`ClientService`]: the inner service's readiness is
    /// waited for in the response future, under the request's context.
    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        GrpcClientFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcClientService`]: [`ClientFuture`], whose
    /// error becomes a [`Status`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_http::grpc::GrpcClientFuture;
    /// use http::{Request, Response};
    /// use tower::{Layer, Service};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut service = ctx_http::grpc::GrpcClientLayer::new().layer(tower::service_fn(
    ///     |_req: Request<()>| std::future::ready(Ok::<_, tonic::Status>(Response::new("pong"))),
    /// ));
    /// let future: GrpcClientFuture<_, _> = service.call(Request::new(()));
    /// assert_eq!(*future.await.unwrap().body(), "pong");
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct GrpcClientFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: ClientFuture<S, Req>,
    }
}

impl<S, Req> std::fmt::Debug for GrpcClientFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClientFuture")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, B> Future for GrpcClientFuture<S, Request<B>>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let result = ready!(self.project().inner.poll(cx));
        Poll::Ready(result.map_err(Status::from))
    }
}

/// A [`Responder`] for gRPC services (tonic's `Server` takes
/// [`ServerLayer`](crate::ServerLayer) as a layer): a trailers-only response
/// with the cause in `grpc-message` and as `grpc-status`:
///
/// | rejection | `grpc-status` |
/// |---|---|
/// | [`Rejection::DeadlineExceeded`] | `DEADLINE_EXCEEDED` (4) |
/// | [`Rejection::Canceled`] (the server's parent context was canceled) | `UNAVAILABLE` (14), which clients may retry |
/// | [`Rejection::MalformedTimeout`] (with [`Malformed::Reject`](crate::Malformed::Reject)) | `INVALID_ARGUMENT` (3) |
///
/// (`CANCELLED` would say the client gave up; a client that did has dropped
/// the stream and reads no answer.)
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Error};
/// use ctx_http::{Rejection, Responder, ServerLayer, grpc::GrpcResponder};
///
/// let layer = ServerLayer::new(&ctx_core::Context::background()).responder(GrpcResponder);
/// # let _ = layer;
/// let response: http::Response<tonic::body::Body> =
///     GrpcResponder.respond(Rejection::from_context(Error::DeadlineExceeded, Cause::msg("late")));
/// assert_eq!(response.status(), http::StatusCode::OK);
/// assert_eq!(response.headers()["grpc-status"], "4");
///
/// let response: http::Response<tonic::body::Body> =
///     GrpcResponder.respond(Rejection::from_context(Error::Canceled, Cause::msg("shutting down")));
/// let status = tonic::Status::from_header_map(response.headers()).unwrap();
/// assert_eq!(status.code(), tonic::Code::Unavailable);
/// assert_eq!(status.message(), "context canceled: shutting down");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcResponder;

impl<B: Default> Responder<B> for GrpcResponder {
    fn respond(&self, rejection: Rejection) -> Response<B> {
        let status = match rejection.context_err() {
            // The same codes as the trailers that end a stream cut short.
            Some(err) => Status::new(Code::from(i32::from(grpc_code(err))), rejection.to_string()),
            None => Status::invalid_argument(rejection.to_string()),
        };
        status.into_http()
    }
}
