//! Deadlines across processes: the remaining time as a gRPC `grpc-timeout` value.
//!
//! The format is an ASCII integer of at most eight digits followed by a unit:
//! `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n`
//! nanoseconds (the gRPC over HTTP/2 specification). Encoding picks the finest
//! unit that fits and rounds down, so the receiver never waits longer than the
//! sender would.

use crate::cancel::CancelFunc;
use crate::context::Context;
use std::fmt;
use std::time::Duration;

const MAX_VALUE: u128 = 99_999_999;

const UNITS: [(char, u128); 6] = [
    ('n', 1),
    ('u', 1_000),
    ('m', 1_000_000),
    ('S', 1_000_000_000),
    ('M', 60_000_000_000),
    ('H', 3_600_000_000_000),
];

/// Why a timeout header value could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The value was empty or had no digits before the unit.
    Empty,
    /// More than eight digits.
    TooLong,
    /// Something other than ASCII digits before the unit.
    NotANumber,
    /// The last character is not one of `H M S m u n`.
    UnknownUnit(char),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Empty => f.write_str("empty timeout header value"),
            HeaderError::TooLong => f.write_str("timeout header value has more than 8 digits"),
            HeaderError::NotANumber => f.write_str("timeout header value is not a number"),
            HeaderError::UnknownUnit(c) => write!(
                f,
                "unknown timeout unit {c:?} (expected one of H M S m u n)"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Encodes `timeout` as a `grpc-timeout` value, e.g. `"1500m"`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(ctx_core::encode_timeout(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(ctx_core::encode_timeout(Duration::from_secs(3 * 86_400 * 365)), "94608000S");
/// ```
pub fn encode_timeout(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    for (unit, scale) in UNITS {
        let value = nanos / scale;
        if value <= MAX_VALUE {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

/// Decodes a `grpc-timeout` value.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(ctx_core::decode_timeout("250m"), Ok(Duration::from_millis(250)));
/// assert!(ctx_core::decode_timeout("10x").is_err());
/// ```
pub fn decode_timeout(value: &str) -> Result<Duration, HeaderError> {
    let value = value.trim();
    let unit = value.chars().last().ok_or(HeaderError::Empty)?;
    let digits = &value[..value.len() - unit.len_utf8()];
    let scale = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, s)| *s)
        .ok_or(HeaderError::UnknownUnit(unit))?;
    if digits.is_empty() {
        return Err(HeaderError::Empty);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::NotANumber);
    }
    if digits.len() > 8 {
        return Err(HeaderError::TooLong);
    }
    let number: u128 = digits.parse().map_err(|_| HeaderError::NotANumber)?;
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
    /// A malformed value gives a [`HeaderError`]; no context is created.
    pub fn with_timeout_header(&self, value: &str) -> Result<(Context, CancelFunc), HeaderError> {
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
        assert_eq!(decode_timeout(""), Err(HeaderError::Empty));
        assert_eq!(decode_timeout("S"), Err(HeaderError::Empty));
        assert_eq!(decode_timeout("123456789S"), Err(HeaderError::TooLong));
        assert_eq!(decode_timeout("1.5S"), Err(HeaderError::NotANumber));
        assert_eq!(decode_timeout("10d"), Err(HeaderError::UnknownUnit('d')));
        assert_eq!(decode_timeout("10é"), Err(HeaderError::UnknownUnit('é')));
    }
}
