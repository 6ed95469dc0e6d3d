//! A streaming body that panics: the request ends `Panicked`, not `Responded`.

use bytes::Bytes;
use ctx_core::Context;
use ctx_http::{ServerCause, ServerLayer};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use tower::{Layer, ServiceExt, service_fn};

/// A streaming body whose producer panics on its first frame.
struct Exploding;

impl Body for Exploding {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        panic!("the stream's producer has a bug")
    }
}

/// The default responder answers with text: never used here.
impl From<String> for Exploding {
    fn from(_: String) -> Exploding {
        Exploding
    }
}

/// A server whose handler answers with an [`Exploding`] body, and the slot
/// where it leaves its request's context.
async fn exploding_response() -> (Response<ctx_http::ServerBody<Exploding>>, Context) {
    let seen = Arc::new(Mutex::new(None));
    let keep = seen.clone();
    let service = ServerLayer::new(&ctx_tokio::background()).layer(service_fn(
        move |req: Request<String>| {
            *keep.lock().unwrap() = req.extensions().get::<Context>().cloned();
            async { Ok::<_, Infallible>(Response::new(Exploding)) }
        },
    ));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    let ctx = seen.lock().unwrap().take().unwrap();
    (response, ctx)
}

fn server_cause(ctx: &Context) -> Option<ServerCause> {
    let cause = ctx.cause().expect("the request is over");
    cause.downcast_ref::<ServerCause>().copied()
}

#[tokio::test]
async fn a_body_that_panics_mid_stream_is_not_responded() {
    let (response, ctx) = exploding_response().await;
    // The task streaming the body panics (as hyper's connection task would).
    let streamed =
        tokio::spawn(async move { response.into_body().collect().await.map(|_| ()) }).await;
    assert!(streamed.unwrap_err().is_panic());
    assert_eq!(server_cause(&ctx), Some(ServerCause::Panicked));
}

#[tokio::test]
async fn a_body_panic_caught_above_and_dropped_later_is_panicked() {
    let (response, ctx) = exploding_response().await;
    let mut body = response.into_body();
    // Something above the body catches the panic out of its poll (as a
    // catch-panic layer does), and drops the body afterwards, the unwind over.
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let waker = std::task::Waker::noop();
        let _ = Pin::new(&mut body).poll_frame(&mut TaskContext::from_waker(waker));
    }));
    assert!(polled.is_err());
    assert!(!ctx.is_done(), "the body is still there");
    drop(body);
    assert_eq!(server_cause(&ctx), Some(ServerCause::Panicked));
}
