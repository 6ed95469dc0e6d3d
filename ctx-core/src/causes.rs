//! Causes the adapters cancel with: a task that panicked, a signal that arrived.
//!
//! They live here, beside [`Cause`](crate::Cause), so that every adapter reports
//! the same types and code that inspects a cause does not depend on which
//! runtime produced it.

use std::any::Any;
use std::fmt;

/// The cause of a context canceled because a task or thread panicked (in an
/// adapter's error group, or from a spawned task's handle). It carries the panic
/// message; the panic itself is caught, never lost.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
/// let err = ctx_core::PanicError::from_payload(payload);
/// assert_eq!(err.message(), "boom");
/// assert_eq!(err.to_string(), "task panicked: boom");
/// ```
#[derive(Debug)]
pub struct PanicError {
    message: String,
}

impl PanicError {
    /// Turns a panic payload (from `catch_unwind` or a join handle) into an error.
    pub fn from_payload(payload: Box<dyn Any + Send>) -> PanicError {
        let message = match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => match payload.downcast::<&'static str>() {
                Ok(message) => (*message).to_owned(),
                Err(other) => {
                    crate::adapter::drop_panic_payload(other);
                    "Box<dyn Any>".to_owned()
                }
            },
        };
        PanicError { message }
    }

    /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task panicked: {}", self.message)
    }
}

impl std::error::Error for PanicError {}

/// The cause of a signal context canceled by a signal (Go's
/// `signal.NotifyContext`, with the signal named).
///
/// ```
/// let err = ctx_core::SignalError::new("SIGTERM");
/// assert_eq!(err.signal, "SIGTERM");
/// assert_eq!(err.to_string(), "received SIGTERM");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalError {
    /// The signal's name, such as `"SIGINT"` or `"SIGTERM"`.
    pub signal: &'static str,
}

impl SignalError {
    /// The cause for the signal named `signal`.
    pub fn new(signal: &'static str) -> SignalError {
        SignalError { signal }
    }
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "received {}", self.signal)
    }
}

impl std::error::Error for SignalError {}
