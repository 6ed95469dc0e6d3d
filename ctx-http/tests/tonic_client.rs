//! `GrpcClientLayer` under tonic's client, which turns a service's error into
//! a status with `Status::from_error`: the layer's errors are statuses
//! already (feature `tonic`).
#![cfg(feature = "tonic")]

use ctx_core::{Cause, Context, Error};
use ctx_http::ClientError;
use ctx_http::grpc::GrpcClientLayer;
use http::uri::PathAndQuery;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tower::{BoxError, Layer, Service, ServiceBuilder, service_fn};

/// A codec for empty messages (the tests never get as far as the wire).
#[derive(Clone, Copy, Default)]
struct Unit;
impl Encoder for Unit {
    type Item = ();
    type Error = Status;
    fn encode(&mut self, _: (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}
impl Decoder for Unit {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, _: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        Ok(Some(()))
    }
}
impl Codec for Unit {
    type Encode = ();
    type Decode = ();
    type Encoder = Unit;
    type Decoder = Unit;
    fn encoder(&mut self) -> Unit {
        Unit
    }
    fn decoder(&mut self) -> Unit {
        Unit
    }
}

type Body = tonic::body::Body;

/// A unary call through tonic's client over `channel` (wrapped in the
/// layer), under `ctx`; the status it fails with.
async fn call_status<S>(channel: S, ctx: Context) -> Status
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let mut grpc = tonic::client::Grpc::new(GrpcClientLayer::new().layer(channel));
    let mut request = tonic::Request::new(());
    request.extensions_mut().insert(ctx);
    grpc.ready().await.unwrap();
    grpc.unary::<(), (), Unit>(request, PathAndQuery::from_static("/svc/Method"), Unit)
        .await
        .unwrap_err()
}

/// A channel that answers every call (the calls that reach it succeed).
fn answering_channel() -> impl Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: http::Request<Body>| async {
        Ok::<_, Infallible>(http::Response::new(Body::empty()))
    })
}

/// A tonic client call whose context's deadline has passed fails with
/// DEADLINE_EXCEEDED, not UNKNOWN, and says that nothing was sent.
#[tokio::test]
async fn a_tonic_client_call_past_its_deadline_is_deadline_exceeded() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    let status = call_status(answering_channel(), ctx).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "request not sent: context deadline exceeded"
    );
    // No cause of its own: nothing more to say.
    assert!(std::error::Error::source(&status).is_none());
}

/// A call in flight whose context is canceled is abandoned: CANCELLED, with
/// the cause in the message and as the status's source.
#[tokio::test]
async fn a_tonic_client_call_canceled_in_flight_is_cancelled() {
    let called = Arc::new(Notify::new());
    let notify = called.clone();
    let channel = service_fn(move |_req: http::Request<Body>| {
        notify.notify_one();
        std::future::pending::<Result<http::Response<Body>, Infallible>>()
    });
    let (ctx, cancel) = Context::background().with_cancel_cause();
    let call = tokio::spawn(call_status(channel, ctx));
    called.notified().await; // the request is in flight
    cancel.cancel(Cause::msg("user left"));
    let status = call.await.unwrap();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(
        status.message(),
        "request abandoned: context canceled: user left"
    );
    let source = std::error::Error::source(&status).expect("the cause");
    assert_eq!(source.to_string(), "user left");
}

/// A transport that fails with a status keeps it through the layer and
/// tonic's client.
#[tokio::test]
async fn a_tonic_client_call_keeps_the_transports_status() {
    let channel = service_fn(|_req: http::Request<Body>| async {
        Err::<http::Response<Body>, _>(Status::unavailable("backend down"))
    });
    let status = call_status(channel, Context::background()).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "backend down");
}

/// A transport error that is no status is UNKNOWN with the transport's own
/// message, as tonic reports it without the layer.
#[tokio::test]
async fn a_tonic_client_call_keeps_the_transports_message() {
    let channel = service_fn(|_req: http::Request<Body>| async {
        Err::<http::Response<Body>, _>(std::io::Error::other("connection reset by peer"))
    });
    let status = call_status(channel, Context::background()).await;
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert_eq!(status.message(), "connection reset by peer");
}

/// tower's `Buffer` (whose error is tower's `BoxError`) under the layer, under
/// tonic's client: the codes of the context's end and of the transport's
/// status come through.
#[tokio::test]
async fn a_tonic_client_over_a_buffered_channel_has_the_codes() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    let channel = ServiceBuilder::new().buffer(8).service(answering_channel());
    let status = call_status(channel, ctx).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    let channel =
        ServiceBuilder::new()
            .buffer(8)
            .service(service_fn(|_req: http::Request<Body>| async {
                Err::<http::Response<Body>, BoxError>(Status::unavailable("backend down").into())
            }));
    let status = call_status(channel, Context::background()).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "backend down");
}

/// A call that reaches the server goes through tonic's client and the layer
/// with the context's deadline as `grpc-timeout`, and the server's status
/// comes back as it is.
#[tokio::test]
async fn a_tonic_client_call_sends_the_deadline() {
    let channel = service_fn(|req: http::Request<Body>| async move {
        let sent = req.headers().get(ctx_http::GRPC_TIMEOUT).cloned();
        let left = ctx_http::parse_timeout(&sent.expect("a grpc-timeout")).unwrap();
        assert!(left <= Duration::from_secs(3600), "{left:?}");
        Ok::<_, Infallible>(Status::not_found("no such method").into_http::<Body>())
    });
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(3600));
    let status = call_status(channel, ctx).await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no such method");
}

/// `Status::from` gives the crate's codes for both context errors.
#[test]
fn context_errors_have_the_crates_codes() {
    let cases = [
        (Error::DeadlineExceeded, false, Code::DeadlineExceeded),
        (Error::Canceled, false, Code::Cancelled),
        (Error::DeadlineExceeded, true, Code::DeadlineExceeded),
        (Error::Canceled, true, Code::Cancelled),
    ];
    for (err, sent, code) in cases {
        let cause = Cause::msg("why");
        let client_err: ClientError<Status> = if sent {
            ClientError::Abandoned { err, cause }
        } else {
            ClientError::NotSent { err, cause }
        };
        assert_eq!(code, ctx_http::grpc::code(err));
        let status = Status::from(client_err);
        assert_eq!(status.code(), code, "{err:?}, sent: {sent}: {status:?}");
    }
}
