//! What [`ServerLayer`](crate::ServerLayer) answers when it answers instead of
//! the inner service: [`Rejection`] says why, a [`Responder`] turns it into a
//! response, [`TextResponder`] is the default (504, 503 and 400 with a plain
//! text body).

use crate::header::TimeoutHeaderError;
use ctx_core::{Cause, Error};
use http::{HeaderValue, Response, StatusCode, header};
use std::fmt;

/// `499 Client Closed Request`: nginx's status for a request whose client went
/// away before the answer.
///
/// [`ServerLayer`](crate::ServerLayer) does not use it by default: when the
/// client has really gone, nobody reads the answer, and a request whose context
/// was canceled by the server (its parent context, at shutdown) gets 503, which
/// the client may retry. It is here for
/// [`canceled_status`](crate::ServerLayer::canceled_status), for a server that
/// wants nginx's convention anyway.
///
/// # Examples
///
/// ```
/// assert_eq!(ctx_http::CLIENT_CLOSED_REQUEST.as_u16(), 499);
/// ```
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => panic!("499 is a valid status code"),
};

/// Why [`ServerLayer`](crate::ServerLayer) answers a request itself.
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Error};
/// use ctx_http::Rejection;
///
/// let rejection = Rejection::from_context(Error::DeadlineExceeded, Cause::msg("too slow"));
/// assert_eq!(rejection.context_err(), Some(Error::DeadlineExceeded));
/// assert_eq!(rejection.to_string(), "context deadline exceeded: too slow");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Rejection {
    /// The request's deadline passed before the inner service answered: the
    /// client's `grpc-timeout`, the server's maximum, or a deadline of the
    /// parent context. The cause says which.
    DeadlineExceeded(Cause),
    /// The request's context was canceled before the inner service answered:
    /// the parent (the server's root context) was canceled, at shutdown for
    /// example. (A client that hangs up drops the request, so it gets no
    /// answer.) The cause says why.
    Canceled(Cause),
    /// The `grpc-timeout` header could not be read, and the layer is set to
    /// reject such requests ([`Malformed::Reject`](crate::Malformed::Reject)).
    MalformedTimeout(TimeoutHeaderError),
}

impl Rejection {
    /// The rejection for a context that ended with `err` and `cause`.
    ///
    /// ```
    /// use ctx_core::{Cause, Error};
    /// let rejection = ctx_http::Rejection::from_context(Error::Canceled, Cause::msg("bye"));
    /// assert!(matches!(rejection, ctx_http::Rejection::Canceled(_)));
    /// ```
    pub fn from_context(err: Error, cause: Cause) -> Rejection {
        match err {
            Error::DeadlineExceeded => Rejection::DeadlineExceeded(cause),
            Error::Canceled => Rejection::Canceled(cause),
        }
    }

    /// The context error behind the rejection; `None` for a malformed header.
    ///
    /// ```
    /// use ctx_http::{TimeoutHeaderError, Rejection};
    /// assert_eq!(Rejection::MalformedTimeout(TimeoutHeaderError::NotAscii).context_err(), None);
    /// ```
    pub fn context_err(&self) -> Option<Error> {
        match self {
            Rejection::DeadlineExceeded(_) => Some(Error::DeadlineExceeded),
            Rejection::Canceled(_) => Some(Error::Canceled),
            Rejection::MalformedTimeout(_) => None,
        }
    }

    /// The cause of the context's end; `None` for a malformed header.
    ///
    /// ```
    /// use ctx_core::{Cause, Error};
    /// let rejection = ctx_http::Rejection::from_context(Error::DeadlineExceeded, Cause::msg("slow"));
    /// assert_eq!(rejection.cause().unwrap().to_string(), "slow");
    /// ```
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Rejection::DeadlineExceeded(cause) | Rejection::Canceled(cause) => Some(cause),
            Rejection::MalformedTimeout(_) => None,
        }
    }
}

impl fmt::Display for Rejection {
    /// The context error followed by its cause (when the cause says more), or
    /// the header error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::DeadlineExceeded(cause) => describe(f, Error::DeadlineExceeded, cause),
            Rejection::Canceled(cause) => describe(f, Error::Canceled, cause),
            Rejection::MalformedTimeout(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for Rejection {
    /// The context's cause, or the header error.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Rejection::DeadlineExceeded(cause) | Rejection::Canceled(cause) => Some(&**cause),
            Rejection::MalformedTimeout(err) => Some(err),
        }
    }
}

/// `err`, then `: cause` unless the cause is just `err` again.
pub(crate) fn describe(f: &mut fmt::Formatter<'_>, err: Error, cause: &Cause) -> fmt::Result {
    if cause.as_error() == Some(err) {
        // A context that ended without a cause of its own has its error as cause.
        write!(f, "{err}")
    } else {
        write!(f, "{err}: {cause}")
    }
}

/// Turns a [`Rejection`] into the response the client gets.
///
/// [`TextResponder`] is the default. Any `Fn(Rejection) -> Response<B>` is a
/// responder too, for full control of the answer; with the `tonic` feature,
/// `grpc::GrpcResponder` answers with gRPC statuses.
///
/// # Examples
///
/// ```
/// use ctx_http::{Rejection, Responder};
/// use http::{Response, StatusCode};
///
/// let json = |rejection: Rejection| {
///     let mut response = Response::new(format!(r#"{{"error":"{rejection}"}}"#));
///     *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
///     response
/// };
/// let response = json.respond(Rejection::from_context(
///     ctx_core::Error::Canceled,
///     ctx_core::Cause::msg("shutting down"),
/// ));
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(response.body(), r#"{"error":"context canceled: shutting down"}"#);
/// ```
pub trait Responder<B> {
    /// The response for `rejection` (see the trait's example).
    fn respond(&self, rejection: Rejection) -> Response<B>;
}

impl<B, F> Responder<B> for F
where
    F: Fn(Rejection) -> Response<B>,
{
    fn respond(&self, rejection: Rejection) -> Response<B> {
        self(rejection)
    }
}

/// The default [`Responder`]: a status per kind of rejection and the
/// rejection's text as a `text/plain` body, for any body type that can be made
/// from a `String` (`String`, `Full<Bytes>`, axum's `Body`, ...).
///
/// | rejection | status (default) |
/// |---|---|
/// | [`Rejection::DeadlineExceeded`] | 504 Gateway Timeout |
/// | [`Rejection::Canceled`] (the server's parent context was canceled) | 503 Service Unavailable |
/// | [`Rejection::MalformedTimeout`] | 400 Bad Request |
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Error};
/// use ctx_http::{Rejection, Responder, TextResponder};
/// use http::StatusCode;
///
/// let shutdown = Rejection::from_context(Error::Canceled, Cause::msg("received SIGTERM"));
/// let response: http::Response<String> = TextResponder::new().respond(shutdown.clone());
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(response.body(), "context canceled: received SIGTERM");
///
/// let nginx = TextResponder::new().canceled_status(ctx_http::CLIENT_CLOSED_REQUEST);
/// let response: http::Response<String> = nginx.respond(shutdown);
/// assert_eq!(response.status().as_u16(), 499);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextResponder {
    deadline: StatusCode,
    canceled: StatusCode,
    malformed: StatusCode,
}

impl TextResponder {
    /// 504, 503 and 400.
    ///
    /// ```
    /// use ctx_http::{Rejection, TextResponder};
    /// let canceled = Rejection::from_context(ctx_core::Error::Canceled, ctx_core::Cause::msg("bye"));
    /// assert_eq!(TextResponder::new().status(&canceled), http::StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    pub const fn new() -> TextResponder {
        TextResponder {
            deadline: StatusCode::GATEWAY_TIMEOUT,
            canceled: StatusCode::SERVICE_UNAVAILABLE,
            malformed: StatusCode::BAD_REQUEST,
        }
    }

    /// The status for [`Rejection::DeadlineExceeded`] (504 by default).
    ///
    /// ```
    /// use http::StatusCode;
    /// let late = ctx_http::Rejection::from_context(ctx_core::Error::DeadlineExceeded, ctx_core::Cause::msg("late"));
    /// let responder = ctx_http::TextResponder::new().deadline_status(StatusCode::REQUEST_TIMEOUT);
    /// assert_eq!(responder.status(&late), StatusCode::REQUEST_TIMEOUT);
    /// ```
    pub const fn deadline_status(mut self, status: StatusCode) -> TextResponder {
        self.deadline = status;
        self
    }

    /// The status for [`Rejection::Canceled`] (503 by default); see the type's
    /// example.
    pub const fn canceled_status(mut self, status: StatusCode) -> TextResponder {
        self.canceled = status;
        self
    }

    /// The status for [`Rejection::MalformedTimeout`] (400 by default).
    ///
    /// ```
    /// use ctx_http::{TimeoutHeaderError, Rejection, TextResponder};
    /// use http::StatusCode;
    /// let responder = TextResponder::new().malformed_status(StatusCode::UNPROCESSABLE_ENTITY);
    /// let bad = Rejection::MalformedTimeout(TimeoutHeaderError::NotAscii);
    /// assert_eq!(responder.status(&bad), StatusCode::UNPROCESSABLE_ENTITY);
    /// ```
    pub const fn malformed_status(mut self, status: StatusCode) -> TextResponder {
        self.malformed = status;
        self
    }

    /// The status this responder gives `rejection`.
    ///
    /// ```
    /// use ctx_http::{TimeoutHeaderError, Rejection, TextResponder};
    /// let bad = Rejection::MalformedTimeout(TimeoutHeaderError::NotAscii);
    /// assert_eq!(TextResponder::default().status(&bad), http::StatusCode::BAD_REQUEST);
    /// ```
    pub fn status(&self, rejection: &Rejection) -> StatusCode {
        match rejection {
            Rejection::DeadlineExceeded(_) => self.deadline,
            Rejection::Canceled(_) => self.canceled,
            Rejection::MalformedTimeout(_) => self.malformed,
        }
    }
}

impl Default for TextResponder {
    fn default() -> TextResponder {
        TextResponder::new()
    }
}

impl<B: From<String>> Responder<B> for TextResponder {
    fn respond(&self, rejection: Rejection) -> Response<B> {
        let status = self.status(&rejection);
        let mut response = Response::new(B::from(rejection.to_string()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
