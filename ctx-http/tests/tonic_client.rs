//! `ClientLayer` under tonic's client, which turns service errors into
//! statuses with `Status::from_error` (feature `tonic`).
#![cfg(feature = "tonic")]

use ctx_core::{Cause, Context, Error};
use ctx_http::{ClientError, ClientLayer};
use http::uri::PathAndQuery;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tower::{Layer, Service, service_fn};

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
    S::Error: std::error::Error + Send + Sync + 'static,
    S::Future: Send,
{
    let mut grpc = tonic::client::Grpc::new(ClientLayer::new().layer(channel));
    let mut request = tonic::Request::new(());
    request.extensions_mut().insert(ctx);
    grpc.ready().await.unwrap();
    grpc.unary::<(), (), Unit>(request, PathAndQuery::from_static("/svc/Method"), Unit)
        .await
        .unwrap_err()
}

/// grpc.rs: "insert the context into the tonic::Request's extensions and wrap
/// the channel in ClientLayer". A tonic client call whose context's deadline
/// has passed fails with DEADLINE_EXCEEDED, not UNKNOWN.
#[tokio::test]
async fn a_tonic_client_call_past_its_deadline_is_deadline_exceeded() {
    let channel = service_fn(|_req: http::Request<Body>| async {
        Ok::<_, Infallible>(http::Response::new(Body::empty()))
    });
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    let status = call_status(channel, ctx).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "request not sent: context deadline exceeded"
    );
    // The layer's error, with its cause, is the status's source.
    let source = std::error::Error::source(&status).expect("the layer's error");
    let err = source
        .downcast_ref::<ClientError<Infallible>>()
        .expect("a ClientError");
    assert!(!err.was_sent());
}

/// A call in flight whose context is canceled is abandoned: CANCELLED.
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
    assert_eq!(status.message(), "request abandoned: context canceled");
    let source = std::error::Error::source(&status).expect("the layer's error");
    let err = source
        .downcast_ref::<ClientError<Infallible>>()
        .expect("a ClientError");
    assert_eq!(err.cause().unwrap().to_string(), "user left");
}

/// A transport that fails with a status keeps its code through the layer and
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

/// The same path for a transport error that is itself a status, directly:
/// tonic's client converts the layer's error with `Status::from_error`.
#[test]
fn a_transport_status_keeps_its_code_through_the_client_layer() {
    let err = ClientError::Service(Status::unavailable("backend down"));
    let status = Status::from_error(Box::new(err));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// `Status::from_error` finds the crate's own codes for both context errors.
#[test]
fn context_errors_have_the_crates_codes_for_status_from_error() {
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
        let status = Status::from_error(Box::new(client_err));
        assert_eq!(status.code(), code, "{err:?}, sent: {sent}: {status:?}");
    }
}
