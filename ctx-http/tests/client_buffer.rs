//! `ClientLayer` and tower's `Buffer` around a service that is not `Clone`
//! (tower's `RateLimit`): what the layer's docs promise for the layer inside
//! the buffer (the arrangement they recommend), and for the layer over it.

use ctx_core::{Context, Error};
use ctx_http::{ClientError, ClientLayer, GRPC_TIMEOUT, parse_timeout};
use http::{Request, Response};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::limit::RateLimit;
use tower::limit::rate::Rate;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// What the transport saw of each request it sent: the `grpc-timeout` on it,
/// and the time its context really had left then.
type Sent = Arc<Mutex<Vec<(Option<Duration>, Option<Duration>)>>>;

fn transport(
    sent: Sent,
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    service_fn(move |req: Request<()>| {
        let header = req
            .headers()
            .get(GRPC_TIMEOUT)
            .map(|v| parse_timeout(v).unwrap());
        let left = req
            .extensions()
            .get::<Context>()
            .and_then(|c| c.remaining());
        sent.lock().unwrap().push((header, left));
        async { Ok::<_, Infallible>(Response::new(())) }
    })
}

/// One request per second.
fn one_per_second() -> Rate {
    Rate::new(1, Duration::from_secs(1))
}

fn request_under(ctx: &Context) -> Request<()> {
    let mut request = Request::new(());
    request.extensions_mut().insert(ctx.clone());
    request
}

/// The recommended arrangement: the layer inside the buffer, under the rate
/// limit.
fn layer_inside(
    sent: Sent,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone {
    ServiceBuilder::new()
        .buffer(8)
        .rate_limit(1, Duration::from_secs(1))
        .layer(ClientLayer::new())
        .service(transport(sent))
}

/// Inside the buffer, the layer is called when the request leaves the rate
/// limit: the `grpc-timeout` is the time left then.
#[tokio::test(start_paused = true)]
async fn inside_the_buffer_the_timeout_sent_is_the_time_left_when_the_request_leaves() {
    let sent = Sent::default();
    let client = layer_inside(sent.clone());
    let (ctx, _cancel) = ctx_tokio::background().with_timeout(Duration::from_secs(5));
    for _ in 0..2 {
        client.clone().oneshot(request_under(&ctx)).await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    // The second request waited a second for the rate limit before it left.
    assert_eq!(
        sent[1],
        (Some(Duration::from_secs(4)), Some(Duration::from_secs(4)))
    );
}

/// Inside the buffer, a request whose context ends while it waits for the
/// rate limit is refused with `NotSent` when its turn comes: the caller waits
/// for its turn.
#[tokio::test(start_paused = true)]
async fn inside_the_buffer_a_context_that_ends_while_waiting_is_not_sent() {
    let sent = Sent::default();
    let client = layer_inside(sent.clone());
    let root = ctx_tokio::background();
    client.clone().oneshot(Request::new(())).await.unwrap(); // uses up this second's slot

    let start = Instant::now();
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(500));
    let err = client
        .clone()
        .oneshot(request_under(&ctx))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1), "its turn came");
    let err = err
        .downcast::<ClientError<Infallible>>()
        .expect("the layer's error, boxed by the buffer");
    assert!(!err.was_sent(), "{err:?}");
    assert_eq!(err.context_err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        sent.lock().unwrap().len(),
        1,
        "the second request was never sent"
    );
}

/// Inside the buffer, a caller that races the call against its context gives
/// up at the context's end, and the buffer drops the request unsent.
#[tokio::test(start_paused = true)]
async fn inside_the_buffer_a_raced_call_ends_at_the_deadline_and_is_dropped_unsent() {
    let sent = Sent::default();
    let client = layer_inside(sent.clone());
    let root = ctx_tokio::background();
    client.clone().oneshot(Request::new(())).await.unwrap();

    let start = Instant::now();
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(500));
    let call = client.clone().oneshot(request_under(&ctx));
    let raced = ctx_tokio::run_until_done(&ctx, call).await;
    assert!(matches!(raced, Err(Error::DeadlineExceeded)));
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sent.lock().unwrap().len(),
        1,
        "the second request was never sent"
    );
}

/// Over the buffer (not the recommended arrangement, as the docs say): the
/// layer sees only room in the buffer's queue. The `grpc-timeout` is the time
/// left when the request was queued, and a context that ends while the
/// request is queued reports `Abandoned` although the buffer drops the
/// request unsent.
#[tokio::test(start_paused = true)]
async fn over_the_buffer_the_timeout_is_written_at_queue_time_and_a_queued_request_is_abandoned() {
    let sent = Sent::default();
    let limited = RateLimit::new(transport(sent.clone()), one_per_second());
    let client = ClientLayer::new().layer(Buffer::new(limited, 8));
    let root = ctx_tokio::background();

    let (ctx, _cancel) = root.with_timeout(Duration::from_secs(5));
    for _ in 0..2 {
        client.clone().oneshot(request_under(&ctx)).await.unwrap();
    }
    assert_eq!(
        sent.lock().unwrap()[1],
        (Some(Duration::from_secs(5)), Some(Duration::from_secs(4))),
        "the time left when the request was queued"
    );

    let start = Instant::now();
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(500));
    let err = client
        .clone()
        .oneshot(request_under(&ctx))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert!(matches!(err, ClientError::Abandoned { .. }), "{err:?}");
    assert!(
        err.was_sent(),
        "may have been sent, as far as the layer knows"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sent.lock().unwrap().len(),
        2,
        "the third request was never sent"
    );
}
