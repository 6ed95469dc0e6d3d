//! The `grpc-timeout` header on `http` types: reading one from a [`HeaderValue`]
//! or a [`HeaderMap`], and writing a context's remaining time into one.
//!
//! The wire format itself (at most eight ASCII digits and a unit, rounded down
//! when encoded) is ctx-core's [`Timeout`]. What this module adds is what `http`
//! brings with it: header values are bytes, not text, so a value with bytes
//! outside visible ASCII is an error of its own here
//! ([`TimeoutHeaderError::NotAscii`]) rather than a panic or a lossy conversion.

use ctx_core::Context;
use ctx_core::wire::{HEADER_NAME, ParseTimeoutError, Timeout};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;
use std::io::Write;
use std::time::Duration;

/// The name of the header that carries a request's remaining time,
/// `grpc-timeout` (the gRPC over HTTP/2 specification's name, which plain HTTP
/// services can use as well).
///
/// # Examples
///
/// ```
/// assert_eq!(ctx_http::GRPC_TIMEOUT.as_str(), "grpc-timeout");
/// ```
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static(HEADER_NAME);

/// Why a `grpc-timeout` header value could not be read.
///
/// # Examples
///
/// ```
/// use ctx_core::wire::ParseTimeoutError;
/// use ctx_http::{TimeoutHeaderError, parse_timeout};
/// use http::HeaderValue;
///
/// let value = HeaderValue::from_bytes(b"10\xffS").unwrap();
/// assert_eq!(parse_timeout(&value), Err(TimeoutHeaderError::NotAscii));
///
/// let err = parse_timeout(&HeaderValue::from_static("-5S")).unwrap_err();
/// assert_eq!(err, TimeoutHeaderError::Invalid(ParseTimeoutError::NotANumber));
/// assert_eq!(err.to_string(), "invalid grpc-timeout header: timeout header value is not a number");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutHeaderError {
    /// The value has bytes outside visible ASCII. HTTP allows them in header
    /// values; a `grpc-timeout` never has them.
    NotAscii,
    /// The value is ASCII but not a timeout: empty, no digits, more than eight
    /// digits, a sign or a fraction, or an unknown unit (ctx-core's reason).
    Invalid(ParseTimeoutError),
}

impl fmt::Display for TimeoutHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeoutHeaderError::NotAscii => {
                f.write_str("invalid grpc-timeout header: the value is not ASCII")
            }
            TimeoutHeaderError::Invalid(err) => write!(f, "invalid grpc-timeout header: {err}"),
        }
    }
}

impl std::error::Error for TimeoutHeaderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TimeoutHeaderError::NotAscii => None,
            TimeoutHeaderError::Invalid(err) => Some(err),
        }
    }
}

impl From<ParseTimeoutError> for TimeoutHeaderError {
    fn from(err: ParseTimeoutError) -> TimeoutHeaderError {
        TimeoutHeaderError::Invalid(err)
    }
}

/// Reads a `grpc-timeout` value.
///
/// # Errors
///
/// [`TimeoutHeaderError::NotAscii`] for bytes outside visible ASCII, and
/// [`TimeoutHeaderError::Invalid`] for anything ctx-core's [`Timeout`] parser
/// rejects.
///
/// # Examples
///
/// ```
/// use http::HeaderValue;
/// use std::time::Duration;
///
/// let value = HeaderValue::from_static("250m");
/// assert_eq!(ctx_http::parse_timeout(&value), Ok(Duration::from_millis(250)));
/// assert!(ctx_http::parse_timeout(&HeaderValue::from_static("123456789S")).is_err());
/// ```
pub fn parse_timeout(value: &HeaderValue) -> Result<Duration, TimeoutHeaderError> {
    let text = value.to_str().map_err(|_| TimeoutHeaderError::NotAscii)?;
    Ok(text.parse::<Timeout>()?.duration())
}

/// Reads the first `grpc-timeout` header of `headers`: `Ok(None)` when there is
/// none.
///
/// # Errors
///
/// As [`parse_timeout`], for a header that is present but malformed.
///
/// # Examples
///
/// ```
/// use ctx_http::{GRPC_TIMEOUT, timeout_from_headers};
/// use http::{HeaderMap, HeaderValue};
/// use std::time::Duration;
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(timeout_from_headers(&headers), Ok(None));
/// headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("2S"));
/// assert_eq!(timeout_from_headers(&headers), Ok(Some(Duration::from_secs(2))));
/// ```
pub fn timeout_from_headers(headers: &HeaderMap) -> Result<Option<Duration>, TimeoutHeaderError> {
    headers.get(GRPC_TIMEOUT).map(parse_timeout).transpose()
}

/// The time left until `ctx`'s deadline as a `grpc-timeout` header value; `None`
/// when `ctx` has no deadline. A deadline that already passed gives `0n`.
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use std::time::Duration;
///
/// assert_eq!(ctx_http::timeout_header_value(&Context::background()), None);
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
/// let value = ctx_http::timeout_header_value(&ctx).unwrap();
/// assert!(ctx_http::parse_timeout(&value).unwrap() <= Duration::from_secs(10));
/// ```
pub fn timeout_header_value(ctx: &Context) -> Option<HeaderValue> {
    let remaining = ctx.remaining()?;
    Some(encode(remaining))
}

/// Writes the time left until `ctx`'s deadline into `headers` as `grpc-timeout`,
/// replacing any value there; returns whether it wrote one. Without a deadline
/// the headers are left as they are and it returns false.
///
/// [`ClientLayer`](crate::ClientLayer) does this for every request it sends
/// (keeping a shorter value that is already there).
///
/// # Examples
///
/// ```
/// use ctx_core::Context;
/// use ctx_http::{GRPC_TIMEOUT, set_timeout_header};
/// use http::Request;
/// use std::time::Duration;
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(1500));
/// let mut request = Request::new(());
/// assert!(set_timeout_header(request.headers_mut(), &ctx));
/// let sent = ctx_http::parse_timeout(&request.headers()[GRPC_TIMEOUT]).unwrap();
/// assert!(sent <= Duration::from_millis(1500) && sent > Duration::from_secs(1));
/// ```
pub fn set_timeout_header(headers: &mut HeaderMap, ctx: &Context) -> bool {
    match timeout_header_value(ctx) {
        Some(value) => {
            headers.insert(GRPC_TIMEOUT, value);
            true
        }
        None => false,
    }
}

/// `timeout` as a header value.
pub(crate) fn encode(timeout: Duration) -> HeaderValue {
    // At most eight digits and a unit: formatted on the stack, copied once.
    let mut buf = [0u8; 16];
    let mut cursor = &mut buf[..];
    write!(cursor, "{}", Timeout::from(timeout)).expect("a timeout fits in 16 bytes");
    let len = 16 - cursor.len();
    // ASCII digits and a letter: always a valid header value.
    HeaderValue::from_bytes(&buf[..len]).expect("an encoded timeout is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_bad_value_is_an_error() {
        let cases: [(&[u8], TimeoutHeaderError); 8] = [
            (b"", ParseTimeoutError::Empty.into()),
            (b"m", ParseTimeoutError::Empty.into()),
            (b"-5m", ParseTimeoutError::NotANumber.into()),
            (b"1.5S", ParseTimeoutError::NotANumber.into()),
            (b"123456789m", ParseTimeoutError::TooLong.into()),
            (b"10d", ParseTimeoutError::UnknownUnit('d').into()),
            (b"10\xc3\xa9", TimeoutHeaderError::NotAscii),
            (b"\x80", TimeoutHeaderError::NotAscii),
        ];
        for (bytes, expected) in cases {
            let value = HeaderValue::from_bytes(bytes).unwrap();
            assert_eq!(parse_timeout(&value), Err(expected), "{bytes:?}");
        }
    }

    #[test]
    fn encoded_values_parse_back_no_longer() {
        for timeout in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(50),
            Duration::from_secs(3600 * 24 * 365),
            Duration::MAX,
        ] {
            let back = parse_timeout(&encode(timeout)).unwrap();
            assert!(back <= timeout, "{timeout:?} came back as {back:?}");
        }
    }

    #[test]
    fn the_first_of_several_headers_counts() {
        let mut headers = HeaderMap::new();
        headers.append(GRPC_TIMEOUT, HeaderValue::from_static("1S"));
        headers.append(GRPC_TIMEOUT, HeaderValue::from_static("junk"));
        assert_eq!(
            timeout_from_headers(&headers),
            Ok(Some(Duration::from_secs(1)))
        );
    }
}
