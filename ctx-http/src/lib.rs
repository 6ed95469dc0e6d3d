//! Deadlines, cancellation and causes between processes, for [`ctx_core`]
//! contexts over HTTP and gRPC: tower layers for servers and clients, and the
//! `grpc-timeout` header on `http` types.
//!
//! Go's `context` carries deadlines and cancellation "across API boundaries and
//! between processes". This crate is the between-processes part:
//!
//! * On the server, [`ServerLayer`] gives every request a
//!   [`Context`](ctx_core::Context) derived
//!   from the server's root (a signal context, say), with the deadline the
//!   client sent in `grpc-timeout` (capped by the server's maximum), values
//!   from a hook, and a cause for every way it ends: the client hung up, the
//!   deadline passed, the response has been sent ([`ServerCause`]). The
//!   deadline covers the whole response: a request whose context ends before
//!   the handler answers gets 504 (deadline) or 503 (the server's root was
//!   canceled, at shutdown) at once, by default; the context stays live while
//!   the response's body streams ([`ServerBody`]), and a deadline that passes
//!   then ends the body there (gRPC trailers with `DEADLINE_EXCEEDED`, or an
//!   error that aborts an HTTP response, whose status is already sent).
//! * On the client, [`ClientLayer`] sends the remaining time of the request's
//!   context as `grpc-timeout`, refuses to send when the context is already
//!   done, and drops the call when it ends, which the next server sees as a
//!   client that went away. Under tonic's client, `grpc::GrpcClientLayer`
//!   (feature `tonic`) does the same with errors that are gRPC statuses.
//! * Helpers: [`GRPC_TIMEOUT`], [`parse_timeout`], [`timeout_from_headers`],
//!   [`set_timeout_header`], an axum extractor ([`RequestContext`], feature
//!   `axum`), tonic `Code`/`Status` conversions ([`grpc`], feature `tonic`).
//!
//! Everything is runtime-agnostic (tower and http are); a context's deadline
//! runs on whatever timer backend its root has (`ctx_tokio::background()` for
//! tokio's time driver).
//!
//! # Examples
//!
//! A proxy's handler calls a backend with its own request's context: the
//! backend gets the deadline the proxy's client sent, minus the time already
//! spent. Here both hops are in memory; `cargo run -p ctx-http --example
//! two_hop` runs the same over real sockets.
//!
//! ```
//! use ctx_core::Context;
//! use ctx_http::{ClientLayer, GRPC_TIMEOUT, ServerBody, ServerLayer};
//! use http::{HeaderValue, Request, Response};
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let root = ctx_tokio::background();
//!
//! // The backend reports the deadline its handler sees.
//! let backend = ServiceBuilder::new()
//!     .layer(ServerLayer::new(&root))
//!     .service_fn(|req: Request<String>| async move {
//!         let ctx = req.extensions().get::<Context>().unwrap();
//!         let left = ctx.remaining().expect("the client's deadline came along");
//!         Ok::<_, Infallible>(Response::new(format!("{} ms left", left.as_millis())))
//!     });
//!
//! // The proxy forwards with its request's context, through the client layer.
//! let client = ServiceBuilder::new().layer(ClientLayer::new()).service(backend);
//! let proxy = ServiceBuilder::new()
//!     .layer(ServerLayer::new(&root).max_timeout(Duration::from_secs(30)))
//!     .service_fn(move |req: Request<String>| {
//!         let client = client.clone();
//!         async move {
//!             let ctx = req.extensions().get::<Context>().unwrap().clone();
//!             let mut outgoing = Request::new(String::new());
//!             outgoing.extensions_mut().insert(ctx);
//!             Ok::<_, Infallible>(match client.oneshot(outgoing).await {
//!                 // In memory, the backend's body is its layer's `ServerBody`.
//!                 Ok(response) => response.map(ServerBody::into_inner),
//!                 Err(err) => Response::new(err.to_string()),
//!             })
//!         }
//!     });
//!
//! let mut request = Request::new(String::new());
//! request.headers_mut().insert(GRPC_TIMEOUT, HeaderValue::from_static("2S"));
//! let response = proxy.oneshot(request).await.unwrap();
//! let left: u64 = response.body().trim_end_matches(" ms left").parse().unwrap();
//! assert!((1000..=2000).contains(&left), "{left} ms left");
//! # }
//! ```
//!
//! # What crosses the wire
//!
//! | in the process | between processes |
//! |---|---|
//! | the deadline | `grpc-timeout`: the time left, rounded down, counted again from arrival |
//! | cancellation | the connection (HTTP/1) or stream (HTTP/2) is dropped; the server's layer sees its response future dropped (over HTTP/1, not while the request's body is still being uploaded: see [`ServerLayer`'s caveat](ServerLayer#a-client-that-hangs-up), and set a [`max_timeout`](ServerLayer::max_timeout)) |
//! | the cause | stays where it was given; the server records its own ([`ServerCause`]), the client gets its context's ([`ClientError`]) |
//! | values | nothing: pass what the next hop needs as headers, and attach it there with [`ServerLayer::map_context`] |
//!
//! # Features
//!
//! * `axum` (off by default): [`RequestContext`], an axum extractor for the
//!   request's context (depends on `axum-core` only).
//! * `tonic` (off by default): the [`grpc`] module, with tonic's `Code` and
//!   `Status` for context errors, a responder that answers with gRPC
//!   statuses, and `GrpcClientLayer`, the client layer for tonic's clients,
//!   whose errors are statuses (depends on tonic without its default
//!   features).

// The feature-gated items are linked when they exist, and point at the
// feature list when they do not (a default-features doc build).
#![doc = ""]
#![cfg_attr(feature = "axum", doc = "[`RequestContext`]: crate::RequestContext")]
#![cfg_attr(not(feature = "axum"), doc = "[`RequestContext`]: #features")]
#![cfg_attr(feature = "tonic", doc = "[`grpc`]: crate::grpc")]
#![cfg_attr(not(feature = "tonic"), doc = "[`grpc`]: #features")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "axum")]
mod axum;
mod body;
mod client;
mod ended;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc;
mod header;
mod response;
mod server;

/// The README's code blocks, compiled and run as doctests so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::axum::{MissingContext, RequestContext};
pub use body::ServerBody;
pub use client::{ClientError, ClientFuture, ClientLayer, ClientService};
pub use header::{
    GRPC_TIMEOUT, TimeoutHeaderError, parse_timeout, set_timeout_header, timeout_from_headers,
    timeout_header_value,
};
pub use response::{CLIENT_CLOSED_REQUEST, Rejection, Responder, TextResponder};
pub use server::{Malformed, ServerCause, ServerFuture, ServerLayer, ServerService};
