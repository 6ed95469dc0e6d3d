//! The axum extractor for the request's context (feature `axum`).

use ctx_core::Context;
use http::StatusCode;
use http::request::Parts;
use std::fmt;
use std::ops::Deref;

/// An axum extractor for the [`Context`] that [`ServerLayer`](crate::ServerLayer)
/// put in the request's extensions (feature `axum`).
///
/// Without the layer, extracting it fails with [`MissingContext`] (500 Internal
/// Server Error, a bug in the server's setup); `Option<RequestContext>` gives
/// `None` instead.
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::get};
/// use ctx_http::{RequestContext, ServerLayer};
/// use std::time::Duration;
/// use tower::ServiceExt;
///
/// async fn slow(RequestContext(ctx): RequestContext) -> String {
///     match ctx_tokio::sleep(&ctx, Duration::from_secs(10)).await {
///         Ok(()) => "done".to_owned(),
///         Err(err) => err.to_string(), // never seen: the layer has answered already
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let root = ctx_tokio::background();
/// let app = Router::new()
///     .route("/slow", get(slow))
///     .layer(ServerLayer::new(&root).max_timeout(Duration::from_millis(100)));
///
/// let request = http::Request::get("/slow").body(axum::body::Body::empty()).unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RequestContext(pub Context);

impl Deref for RequestContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.0
    }
}

impl From<RequestContext> for Context {
    fn from(ctx: RequestContext) -> Context {
        ctx.0
    }
}

impl<S: Sync> axum_core::extract::FromRequestParts<S> for RequestContext {
    type Rejection = MissingContext;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, MissingContext> {
        match parts.extensions.get::<Context>() {
            Some(ctx) => Ok(RequestContext(ctx.clone())),
            None => Err(MissingContext { _private: () }),
        }
    }
}

impl<S: Sync> axum_core::extract::OptionalFromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, std::convert::Infallible> {
        Ok(parts
            .extensions
            .get::<Context>()
            .cloned()
            .map(RequestContext))
    }
}

/// The rejection of [`RequestContext`] when the request has no context:
/// [`ServerLayer`](crate::ServerLayer) is not installed in front of the handler.
/// It answers 500 Internal Server Error.
///
/// # Examples
///
/// ```
/// use axum::response::IntoResponse;
/// use axum::extract::FromRequestParts;
/// use ctx_http::RequestContext;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (mut parts, ()) = http::Request::new(()).into_parts();
/// let missing = RequestContext::from_request_parts(&mut parts, &()).await.unwrap_err();
/// assert_eq!(missing.into_response().status(), http::StatusCode::INTERNAL_SERVER_ERROR);
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MissingContext {
    _private: (),
}

impl fmt::Display for MissingContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request has no context: ctx_http::ServerLayer is not installed in front of this handler")
    }
}

impl std::error::Error for MissingContext {}

impl axum_core::response::IntoResponse for MissingContext {
    fn into_response(self) -> axum_core::response::Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}
