//! The response body [`ServerLayer`](crate::ServerLayer) hands on: the inner
//! service's body, with the request's context kept alive (and its deadline
//! armed) until the body has been sent.

use crate::ended::{cause_of, poll_done};
use crate::response::Rejection;
use crate::server::Guard;
use bytes::Buf;
use ctx_core::{Context, Done, Error};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::fmt;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll, ready};

/// The error type of [`ServerBody`]: the inner body's error, or the
/// [`Rejection`] that ended a plain HTTP body early.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The body of every response from [`ServerService`](crate::ServerService):
    /// the inner service's body (or the responder's), which keeps the request's
    /// context alive while it streams.
    ///
    /// * While the body streams, the request's context stays live and its
    ///   deadline (the client's `grpc-timeout`, the server's
    ///   [`max_timeout`](crate::ServerLayer::max_timeout)) stays armed: a
    ///   streaming handler (a server-streaming RPC, a long download) can watch
    ///   it.
    /// * When the context ends first (the deadline passes, or the server's
    ///   parent context is canceled), the body ends at once: a gRPC response
    ///   (`content-type: application/grpc...`) ends with trailers carrying
    ///   `grpc-status` 4 (`DEADLINE_EXCEEDED`) or 14 (`UNAVAILABLE`) and the
    ///   cause in `grpc-message`; any other response ends with an error (the
    ///   head is already sent, so its status can no longer change; the server
    ///   aborts the response, which the client sees as an incomplete body). The
    ///   error is the [`Rejection`] (downcast it from the boxed error).
    ///   gRPC-web carries its trailers inside the body, which this wrapper
    ///   cannot write into an arbitrary body type: put the layer inside
    ///   tonic-web's (where responses are still `application/grpc` and their
    ///   trailers are translated on the way out), or a gRPC-web client sees
    ///   the cut stream end without a status.
    /// * When the body ends (or fails), the request's context is canceled
    ///   with [`ServerCause::Responded`](crate::ServerCause::Responded), and so
    ///   it is when the body is dropped once the client has had all of it (its
    ///   `is_end_stream` said so, or its `content-length` bytes went out) or
    ///   needs none of it (a `HEAD` or `CONNECT` request, a 1xx, 204 or 304
    ///   response). A body dropped before its end (the client hung up
    ///   mid-stream, or the server closed the connection) ends it with
    ///   [`ServerCause::ClientGone`](crate::ServerCause::ClientGone); when a
    ///   panic ends it (its `poll_frame` panics, or an unwind drops it), with
    ///   [`ServerCause::Panicked`](crate::ServerCause::Panicked).
    ///
    /// It derefs to the inner body, so a test can look at an in-memory body
    /// directly (`response.body().len()`, `assert_eq!(response.body(), "ok")`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::Context;
    /// use ctx_http::{ServerCause, ServerLayer};
    /// use http::{Request, Response};
    /// use http_body_util::BodyExt;
    /// use std::convert::Infallible;
    /// use std::sync::{Arc, Mutex};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let seen = Arc::new(Mutex::new(None));
    /// let keep = seen.clone();
    /// let service = ServiceBuilder::new()
    ///     .layer(ServerLayer::new(&ctx_tokio::background()))
    ///     .service_fn(move |req: Request<String>| {
    ///         *keep.lock().unwrap() = req.extensions().get::<Context>().cloned();
    ///         async { Ok::<_, Infallible>(Response::new("streamed".to_owned())) }
    ///     });
    /// let response = service.oneshot(Request::new(String::new())).await.unwrap();
    /// let ctx = seen.lock().unwrap().take().unwrap();
    /// assert!(!ctx.is_done(), "live while the body is on its way");
    ///
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "streamed");
    /// let cause = ctx.cause().unwrap();
    /// assert_eq!(cause.downcast_ref::<ServerCause>(), Some(&ServerCause::Responded));
    /// # }
    /// ```
    pub struct ServerBody<B> {
        // Declared first so that it is dropped first: the context is done
        // before the inner body's own `Drop`s run, which can then see why.
        watch: Option<Watch>,
        // The layer ended the stream (the context ended first): no more frames.
        cut: bool,
        #[pin]
        inner: B,
    }
}

/// What a [`ServerBody`] watches while it streams.
struct Watch {
    guard: Guard,
    ctx: Context,
    // Created on the first `Pending` only.
    done: Option<Done>,
    grpc: bool,
    // The client has had the whole body, or needs none of it: dropped now,
    // the body was sent (`Responded`), not cut short (`ClientGone`). Set
    // where the body's end is seen, `is_end_stream` included (which takes
    // `&self`): an atomic only for that. `Relaxed`: the drop reads it with
    // the body to itself, after every borrow of it ended.
    complete: AtomicBool,
    // What is left of the response's `content-length`, if it has one.
    length_left: Option<u64>,
}

impl Watch {
    /// `len` more bytes of the body went out: complete once the response's
    /// `content-length` is reached.
    fn sent(&mut self, len: usize) {
        if let Some(left) = &mut self.length_left {
            *left = left.saturating_sub(len as u64);
            if *left == 0 {
                *self.complete.get_mut() = true;
            }
        }
    }
}

impl Drop for Watch {
    /// The body ended or was dropped: the request is over. `Responded` if the
    /// client had all of it; otherwise the guard's own drop says why
    /// (`ClientGone`, or `Panicked` if a panic dropped it or left its last
    /// poll).
    fn drop(&mut self) {
        if *self.complete.get_mut() {
            self.guard.finish();
        }
    }
}

impl<B> ServerBody<B> {
    /// A body the layer answered with itself: nothing to watch.
    pub(crate) fn plain(inner: B) -> ServerBody<B> {
        ServerBody {
            watch: None,
            cut: false,
            inner,
        }
    }

    /// The inner service's body, which keeps the request's context (ended
    /// through `guard`) alive until it ends. `status` and `headers` are the
    /// response's; `bodiless_request` says the request's method gets no body
    /// in answer (`HEAD`, `CONNECT`).
    pub(crate) fn watching(
        inner: B,
        guard: Guard,
        ctx: Context,
        status: StatusCode,
        headers: &HeaderMap,
        bodiless_request: bool,
    ) -> ServerBody<B> {
        let grpc = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        // A body the server never sends, or one of no bytes (hyper drops a
        // `content-length: 0` body unpolled): dropping it unread cuts nothing
        // short.
        let length_left = content_length(headers);
        let bodiless = bodiless_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        ServerBody {
            watch: Some(Watch {
                guard,
                ctx,
                done: None,
                grpc,
                complete: AtomicBool::new(bodiless || length_left == Some(0)),
                length_left,
            }),
            cut: false,
            inner,
        }
    }

    /// The inner body, without the wrapper. This ends the request's context
    /// (with [`ServerCause::Responded`](crate::ServerCause::Responded)), as if
    /// the body had been sent.
    ///
    /// ```
    /// use ctx_http::ServerLayer;
    /// use http::{Request, Response};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let service = ServiceBuilder::new()
    ///     .layer(ServerLayer::new(&ctx_core::Context::background()))
    ///     .service_fn(|_req: Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(Response::new("hi".to_owned()))
    ///     });
    /// let response = service.oneshot(Request::new(String::new())).await.unwrap();
    /// let response: Response<String> = response.map(|body| body.into_inner());
    /// assert_eq!(response.body(), "hi");
    /// # }
    /// ```
    pub fn into_inner(self) -> B {
        if let Some(watch) = self.watch {
            watch.complete.store(true, Ordering::Relaxed);
        }
        self.inner
    }
}

impl<B> Deref for ServerBody<B> {
    type Target = B;

    /// The inner body (see the type's docs).
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B, T> PartialEq<T> for ServerBody<B>
where
    B: PartialEq<T>,
    T: ?Sized,
{
    /// Compares the inner body, so that `assert_eq!(response.body(), "ok")`
    /// works on an in-memory response.
    fn eq(&self, other: &T) -> bool {
        self.inner == *other
    }
}

impl<B: fmt::Debug> fmt::Debug for ServerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.watch, self.cut) {
            (_, true) => "ended by the request's context".to_owned(),
            (Some(watch), false) => format!("streaming under {}", watch.ctx),
            (None, false) => "plain".to_owned(),
        };
        f.debug_struct("ServerBody")
            .field("state", &format_args!("{state}"))
            .field("inner", &self.inner)
            .finish()
    }
}

impl<B> Body for ServerBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        if *this.cut {
            return Poll::Ready(None);
        }
        let Some(watch) = this.watch else {
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        // Exact deadlines, as for the head: a late poll sends nothing more
        // once the deadline has passed.
        let err = match watch.ctx.err() {
            Some(err) => err,
            None => match poll_marked(&mut watch.guard, this.inner.as_mut(), cx) {
                Poll::Pending => ready!(poll_done(&watch.ctx, &mut watch.done, cx)),
                // Exact deadlines again: a frame whose making took the body
                // past the deadline is not sent either.
                Poll::Ready(frame) => match watch.ctx.err() {
                    Some(err) => err,
                    None => {
                        let last = match &frame {
                            Some(Ok(frame)) => frame.is_trailers(),
                            None | Some(Err(_)) => true,
                        };
                        if last {
                            // Ends the context: `Responded` (a panicking
                            // callback of its stays there, see `Guard`).
                            *watch.complete.get_mut() = true;
                            *this.watch = None;
                        } else if let Some(Ok(frame)) = &frame {
                            // A consumer may drop the body after this frame
                            // without asking for more: hyper does once it
                            // wrote `content-length` bytes.
                            watch.sent(frame.data_ref().map_or(0, Buf::remaining));
                            if this.inner.is_end_stream() {
                                *watch.complete.get_mut() = true;
                            }
                        }
                        return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
                    }
                },
            },
        };
        // The context ended first: end the stream with its reason. The context
        // is done already, so the guard keeps its cause.
        let rejection = Rejection::from_context(err, cause_of(&watch.ctx, err));
        let grpc = watch.grpc;
        watch.guard.disarm();
        *this.watch = None;
        *this.cut = true;
        Poll::Ready(Some(if grpc {
            Ok(Frame::trailers(grpc_trailers(&rejection)))
        } else {
            Err(Box::new(rejection))
        }))
    }

    /// Also tells the request the client has had the whole body: a consumer
    /// that trusts this (hyper does) drops the body without polling it for
    /// its end, which is then `Responded`, not `ClientGone`.
    fn is_end_stream(&self) -> bool {
        let end = self.cut || self.inner.is_end_stream();
        if end && let Some(watch) = &self.watch {
            watch.complete.store(true, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        if self.cut {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// The response's `content-length`, if it has one that parses.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What a poll of the inner body gives.
type InnerPoll<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// Polls the inner body with the guard marked: a panic out of that poll
/// (whether it unwinds through the body or is caught above and the body
/// dropped later) leaves the mark, and the request ends `Panicked`.
fn poll_marked<B: Body>(
    guard: &mut Guard,
    inner: Pin<&mut B>,
    cx: &mut TaskContext<'_>,
) -> InnerPoll<B> {
    guard.set_in_poll(true);
    let polled = inner.poll_frame(cx);
    guard.set_in_poll(false);
    polled
}

/// gRPC's `DEADLINE_EXCEEDED`.
pub(crate) const GRPC_DEADLINE_EXCEEDED: u16 = 4;
/// gRPC's `UNAVAILABLE`: what a server that stops serving a request (its
/// parent context canceled, at shutdown) answers; clients may retry it.
pub(crate) const GRPC_UNAVAILABLE: u16 = 14;

/// The gRPC status code for a request whose context ended with `err`.
pub(crate) fn grpc_code(err: Error) -> u16 {
    match err {
        Error::DeadlineExceeded => GRPC_DEADLINE_EXCEEDED,
        // Only the parent (the server's root) cancels a request's context
        // before its end; the client is still there to read the answer.
        Error::Canceled => GRPC_UNAVAILABLE,
    }
}

/// Trailers that end a gRPC stream whose request context ended: the status
/// (as [`grpc::GrpcResponder`](crate::grpc::GrpcResponder) maps it) and the
/// rejection's text, percent-encoded as the gRPC spec asks.
fn grpc_trailers(rejection: &Rejection) -> HeaderMap {
    let code = grpc_code(rejection.context_err().unwrap_or(Error::Canceled));
    let mut message = String::new();
    for byte in rejection.to_string().bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            message.push(char::from(byte));
        } else {
            message.push_str(&format!("%{byte:02X}"));
        }
    }
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert("grpc-status", HeaderValue::from(code));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_str(&message).expect("percent-encoded text is a valid header value"),
    );
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctx_core::Cause;

    #[test]
    fn trailers_carry_the_code_and_the_encoded_message() {
        let late = Rejection::from_context(Error::DeadlineExceeded, Cause::msg("100% late\n"));
        let trailers = grpc_trailers(&late);
        assert_eq!(trailers["grpc-status"], "4");
        assert_eq!(
            trailers["grpc-message"],
            "context deadline exceeded: 100%25 late%0A"
        );
        let gone = Rejection::from_context(Error::Canceled, Cause::msg("shutting down"));
        assert_eq!(grpc_trailers(&gone)["grpc-status"], "14");
    }
}
