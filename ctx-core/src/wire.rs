//! Deadlines across processes: the remaining time as a gRPC `grpc-timeout` value.
//!
//! For code that carries a context's deadline over the network (HTTP or gRPC
//! middleware; the `ctx-http` crate builds on this). The format is an ASCII
//! integer of at most eight digits followed by a unit: `H` hours, `M` minutes,
//! `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds (the gRPC over
//! HTTP/2 specification). Encoding picks the finest unit that fits and rounds
//! down, so the receiver never waits longer than the sender would.
//!
//! # Examples
//!
//! ```
//! use ctx_core::wire::{ParseTimeoutError, Timeout};
//! use std::time::Duration;
//!
//! let sent = Timeout::from(Duration::from_millis(1500)).to_string();
//! assert_eq!(sent, "1500000u");
//! let received: Timeout = sent.parse().unwrap();
//! assert_eq!(received.duration(), Duration::from_millis(1500));
//! assert_eq!("10x".parse::<Timeout>(), Err(ParseTimeoutError::UnknownUnit('x')));
//! ```

use crate::cancel_funcs::CancelFunc;
use crate::context::Context;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The name of the header that carries the timeout (lower case, as HTTP/2 sends
/// it).
pub const HEADER_NAME: &str = "grpc-timeout";

const MAX_VALUE: u128 = 99_999_999;

const UNITS: [(char, u128); 6] = [
    ('n', 1),
    ('u', 1_000),
    ('m', 1_000_000),
    ('S', 1_000_000_000),
    ('M', 60_000_000_000),
    ('H', 3_600_000_000_000),
];

/// A `grpc-timeout` value: a duration whose [`Display`](fmt::Display) is the wire
/// format and whose [`FromStr`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timeout(Duration);

impl Timeout {
    /// The timeout of `duration`.
    pub const fn new(duration: Duration) -> Timeout {
        Timeout(duration)
    }

    /// The duration it stands for.
    pub const fn duration(self) -> Duration {
        self.0
    }
}

impl From<Duration> for Timeout {
    fn from(duration: Duration) -> Timeout {
        Timeout(duration)
    }
}

impl From<Timeout> for Duration {
    fn from(timeout: Timeout) -> Duration {
        timeout.0
    }
}

impl fmt::Display for Timeout {
    /// The wire format: the finest unit that fits in eight digits, rounded down.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        for (unit, scale) in UNITS {
            let value = nanos / scale;
            if value <= MAX_VALUE {
                return write!(f, "{value}{unit}");
            }
        }
        write!(f, "{MAX_VALUE}H")
    }
}

impl FromStr for Timeout {
    type Err = ParseTimeoutError;

    /// Reads the wire format (surrounding whitespace is ignored).
    fn from_str(value: &str) -> Result<Timeout, ParseTimeoutError> {
        decode_timeout(value).map(Timeout)
    }
}

/// Why a `grpc-timeout` value could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseTimeoutError {
    /// The value was empty or had no digits before the unit.
    Empty,
    /// More than eight digits.
    TooLong,
    /// Something other than ASCII digits before the unit.
    NotANumber,
    /// The last character is not one of `H M S m u n`.
    UnknownUnit(char),
}

impl fmt::Display for ParseTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseTimeoutError::Empty => f.write_str("empty timeout header value"),
            ParseTimeoutError::TooLong => {
                f.write_str("timeout header value has more than 8 digits")
            }
            ParseTimeoutError::NotANumber => f.write_str("timeout header value is not a number"),
            ParseTimeoutError::UnknownUnit(c) => write!(
                f,
                "unknown timeout unit {c:?} (expected one of H M S m u n)"
            ),
        }
    }
}

impl std::error::Error for ParseTimeoutError {}

/// The old name of [`ParseTimeoutError`].
pub type HeaderError = ParseTimeoutError;

/// Encodes `timeout` as a `grpc-timeout` value in the finest unit that fits in
/// eight digits, rounded down: 1.5 s is `"1500000u"` (microseconds), three years
/// `"94608000S"`. The same as `Timeout::from(timeout).to_string()`.
///
/// ```
/// use std::time::Duration;
/// use ctx_core::wire::encode_timeout;
/// assert_eq!(encode_timeout(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(encode_timeout(Duration::from_secs(3 * 86_400 * 365)), "94608000S");
/// ```
pub fn encode_timeout(timeout: Duration) -> String {
    Timeout(timeout).to_string()
}

/// Decodes a `grpc-timeout` value (the same as parsing a [`Timeout`]).
///
/// # Errors
///
/// A [`ParseTimeoutError`] saying what is wrong with the value.
///
/// ```
/// use std::time::Duration;
/// use ctx_core::wire::decode_timeout;
/// assert_eq!(decode_timeout("250m"), Ok(Duration::from_millis(250)));
/// assert!(decode_timeout("10x").is_err());
/// ```
pub fn decode_timeout(value: &str) -> Result<Duration, ParseTimeoutError> {
    let value = value.trim();
    let unit = value.chars().last().ok_or(ParseTimeoutError::Empty)?;
    let digits = &value[..value.len() - unit.len_utf8()];
    let scale = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, s)| *s)
        .ok_or(ParseTimeoutError::UnknownUnit(unit))?;
    if digits.is_empty() {
        return Err(ParseTimeoutError::Empty);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseTimeoutError::NotANumber);
    }
    if digits.len() > 8 {
        return Err(ParseTimeoutError::TooLong);
    }
    let number: u128 = digits.parse().map_err(|_| ParseTimeoutError::NotANumber)?;
    let nanos = number * scale;
    Ok(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

impl Context {
    /// The time left until this context's deadline as a `grpc-timeout` value, to
    /// send along with an outgoing request; `None` without a deadline.
    ///
    /// ```
    /// use ctx_core::Context;
    /// use std::time::Duration;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(30));
    /// let header = ctx.timeout_header().unwrap();
    /// let (remote, _cancel) = Context::background().with_timeout_header(&header).unwrap();
    /// assert!(remote.remaining().unwrap() <= Duration::from_secs(30));
    /// ```
    pub fn timeout_header(&self) -> Option<String> {
        self.remaining().map(encode_timeout)
    }

    /// A child whose deadline is the one a received `grpc-timeout` value
    /// describes, counted from now.
    ///
    /// # Errors
    ///
    /// A malformed value gives a [`ParseTimeoutError`]; no context is created.
    pub fn with_timeout_header(
        &self,
        value: &str,
    ) -> Result<(Context, CancelFunc), ParseTimeoutError> {
        Ok(self.with_timeout(decode_timeout(value)?))
    }
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::*;

    #[test]
    fn round_trip_never_lengthens() {
        for nanos in [
            0u64,
            1,
            999,
            1_000,
            123_456_789,
            99_999_999,
            100_000_000,
            3_600_000_000_000_000,
        ] {
            let d = Duration::from_nanos(nanos);
            let back = decode_timeout(&encode_timeout(d)).unwrap();
            assert!(back <= d, "{d:?} came back as {back:?}");
        }
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(decode_timeout(""), Err(ParseTimeoutError::Empty));
        assert_eq!(decode_timeout("S"), Err(ParseTimeoutError::Empty));
        assert_eq!(
            decode_timeout("123456789S"),
            Err(ParseTimeoutError::TooLong)
        );
        assert_eq!(decode_timeout("1.5S"), Err(ParseTimeoutError::NotANumber));
        assert_eq!(
            decode_timeout("10d"),
            Err(ParseTimeoutError::UnknownUnit('d'))
        );
        assert_eq!(
            decode_timeout("10é"),
            Err(ParseTimeoutError::UnknownUnit('é'))
        );
    }
}
