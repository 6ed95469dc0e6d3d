//! A deadline that passes while the transport gets ready: nothing is sent.

use ctx_core::Context;
use ctx_http::{ClientError, ClientLayer, GRPC_TIMEOUT};
use http::{HeaderValue, Request, Response};
use std::convert::Infallible;
use std::future::Ready;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// A transport whose readiness check takes 50 ms of the caller's time (a
/// synchronous pool refresh, say) and that records every request it is given.
#[derive(Clone)]
struct SlowReady {
    sent: Arc<Mutex<Vec<Option<HeaderValue>>>>,
}

impl Service<Request<()>> for SlowReady {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;
    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        std::thread::sleep(Duration::from_millis(50));
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.sent
            .lock()
            .unwrap()
            .push(req.headers().get(GRPC_TIMEOUT).cloned());
        std::future::ready(Ok(Response::new(())))
    }
}

#[tokio::test]
async fn a_deadline_that_passes_while_the_service_gets_ready_sends_nothing() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let client = ClientLayer::new().layer(SlowReady { sent: sent.clone() });
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(10));
    let mut request = Request::new(());
    request.extensions_mut().insert(ctx);
    let result = client.oneshot(request).await;
    let sent = sent.lock().unwrap().clone();
    assert!(
        matches!(result, Err(ClientError::NotSent { .. })) && sent.is_empty(),
        "result: {result:?}; the transport was given {} request(s), grpc-timeout {sent:?}",
        sent.len()
    );
}
