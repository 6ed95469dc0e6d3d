//! Per-request overhead of ctx-http's layers: the same in-memory service
//! (`tower::service_fn` that answers at once) called through
//! `tower::ServiceExt::oneshot` with and without the layer, no sockets.
//!
//! * `HttpLayer/server=none`: the bare service (the baseline).
//! * `HttpLayer/server=layer`: `ServerLayer` with defaults: a request context
//!   (one `with_cancel_cause` child of a live cancelable root), the context in
//!   the request's extensions, the race (the service answers on its first
//!   poll, so no waiter is registered), the context ended as the response is
//!   dropped unread (`ClientGone`, which costs what `Responded` does: both
//!   causes are shared, allocated once).
//! * `HttpLayer/server=layer+grpc-timeout`: the request carries
//!   `grpc-timeout: 1S` and the layer has a 30 s maximum: also the header
//!   parse, a deadline child with its cause, and a timer armed and disarmed
//!   (ctx-core's std-thread timer).
//! * `HttpLayer/contexts+grpc-timeout`: no service and no layer, only the
//!   context the layer derives for such a request (a deadline child with its
//!   cause, whose cancel function becomes a `Canceler`), ended as the layer
//!   ends it (with a cause):
//!   ctx-core's share of the row above, so the layer's own share is that row
//!   minus this one minus `server=none+grpc-timeout`.
//! * `HttpLayer/client=none` and `HttpLayer/client=layer`: a request with a
//!   context (with a deadline) in its extensions, through a bare transport and
//!   through `ClientLayer` (the `grpc-timeout` written, the race).
//!
//! The layer's cost is the difference between a `layer` row and its `none`
//! row. Building each request is not timed (`iter_batched`), nor is dropping
//! the response.

mod common;

use benches::harness::poll_pinned;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ctx_core::Context;
use ctx_http::{ClientLayer, GRPC_TIMEOUT, ServerCause, ServerLayer};
use http::{HeaderValue, Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};

/// Runs a future that completes on its first poll (every service here does).
fn now_or_never<F: Future>(future: F) -> F::Output {
    match poll_pinned(pin!(future)) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory service answers at once"),
    }
}

fn plain_request() -> Request<()> {
    Request::new(())
}

fn request_with_timeout() -> Request<()> {
    let mut request = Request::new(());
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static("1S"));
    request
}

fn server(c: &mut Criterion) {
    let mut group = c.benchmark_group("HttpLayer");
    let (root, _cancel_root) = Context::background().with_cancel();
    // `String` bodies: the default responder writes its answers as text (an
    // empty `String` does not allocate).
    let service =
        service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    let layered = ServerLayer::new(&root).layer(service);
    let limited = ServerLayer::new(&root)
        .max_timeout(Duration::from_secs(30))
        .layer(service);

    group.bench_function("server=none", |b| {
        b.iter_batched(
            plain_request,
            |req| now_or_never(black_box(service).oneshot(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("server=layer", |b| {
        b.iter_batched(
            plain_request,
            |req| now_or_never(black_box(layered.clone()).oneshot(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("server=none+grpc-timeout", |b| {
        b.iter_batched(
            request_with_timeout,
            |req| now_or_never(black_box(service).oneshot(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("server=layer+grpc-timeout", |b| {
        b.iter_batched(
            request_with_timeout,
            |req| now_or_never(black_box(limited.clone()).oneshot(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // The layer shares one allocation of this cause among all requests.
    let responded = ctx_core::Cause::new(ServerCause::Responded);
    group.bench_function("contexts+grpc-timeout", |b| {
        b.iter_batched(
            request_with_timeout,
            |req| {
                let timeout = ctx_http::timeout_from_headers(req.headers())
                    .unwrap()
                    .unwrap();
                let cause = ServerCause::ClientDeadline { timeout };
                let (ctx, cancel) = root.with_timeout_cause(timeout, cause);
                let canceler = cancel.into_canceler();
                black_box(&ctx);
                canceler.cancel_with_cause(responded.clone());
                req
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    assert_eq!(root.live_children(), 0, "every request context is released");
}

fn client(c: &mut Criterion) {
    let mut group = c.benchmark_group("HttpLayer");
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(3600));
    let transport =
        service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let layered = ClientLayer::new().layer(transport);
    let request = || {
        let mut request = Request::new(());
        request.extensions_mut().insert(ctx.clone());
        request
    };
    group.bench_function("client=none", |b| {
        b.iter_batched(
            request,
            |req| now_or_never(black_box(transport).oneshot(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("client=layer", |b| {
        b.iter_batched(
            request,
            |req| now_or_never(black_box(layered.clone()).oneshot(req)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = http_layer;
    config = common::config();
    targets = server, client
}
criterion_main!(http_layer);
