//! The two ways a context ends ([`Error`]) and the reason behind it ([`Cause`]).

use std::error::Error as StdError;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Why a context is done: Go's `context.Canceled` and `context.DeadlineExceeded`.
///
/// `Display` prints Go's texts, so logs read the same in both languages.
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, Error};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert_eq!(ctx.err(), None);
/// cancel.cancel();
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(Error::Canceled.to_string(), "context canceled");
/// assert!(Error::DeadlineExceeded.is_timeout());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The context was canceled: by its [`CancelFunc`](crate::CancelFunc), by dropping
    /// it, or through a canceled parent.
    Canceled,
    /// The context's deadline passed.
    DeadlineExceeded,
}

impl Error {
    /// Whether this is [`Error::DeadlineExceeded`] (Go's error implements `Timeout()`
    /// for the same question).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::DeadlineExceeded)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Canceled => "context canceled",
            Error::DeadlineExceeded => "context deadline exceeded",
        })
    }
}

impl StdError for Error {}

/// The reason a context was canceled, shared by the whole canceled subtree.
///
/// A cause is any `std::error::Error + Send + Sync + 'static`; cloning one is a
/// reference-count increment. When a context ends without an explicit cause, its
/// cause is its [`Error`], exactly as in Go.
///
/// # Examples
///
/// ```
/// use ctx_core::{Cause, Context, Error};
/// use std::io;
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// cancel.cancel(io::Error::new(io::ErrorKind::BrokenPipe, "peer went away"));
///
/// let cause: Cause = ctx.cause().unwrap();
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(cause.to_string(), "peer went away");
/// assert_eq!(cause.downcast_ref::<io::Error>().unwrap().kind(), io::ErrorKind::BrokenPipe);
/// ```
#[derive(Clone)]
pub struct Cause(Repr);

#[derive(Clone)]
enum Repr {
    Plain(Error),
    Shared(Arc<dyn StdError + Send + Sync + 'static>),
}

impl Cause {
    /// Wraps an error as a cause.
    ///
    /// An [`Error`] given here stays allocation-free and compares equal to the cause
    /// a context gets when it ends without one.
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> Cause {
        let any: &dyn std::any::Any = &error;
        if let Some(plain) = any.downcast_ref::<Error>() {
            return Cause(Repr::Plain(*plain));
        }
        Cause(Repr::Shared(Arc::new(error)))
    }

    /// The allocation-free cause of a context that ended without an explicit one.
    pub(crate) const fn plain(err: Error) -> Cause {
        Cause(Repr::Plain(err))
    }

    /// Wraps an already shared error without another allocation.
    pub fn from_arc(error: Arc<dyn StdError + Send + Sync + 'static>) -> Cause {
        Cause(Repr::Shared(error))
    }

    /// A cause from a boxed error, as groups receive their tasks' errors (any
    /// `E: Into<BoxError>`: a `std::error::Error`, `anyhow::Error`, a `String`,
    /// a `Cause`).
    ///
    /// A box that holds a [`Cause`] or a plain [`Error`] (made by `From<Cause>
    /// for BoxError`) gives that cause back as it was: no second wrapping, so it
    /// still downcasts to its original type.
    ///
    /// ```
    /// use ctx_core::{BoxError, Cause};
    /// use std::io;
    ///
    /// let original = Cause::new(io::Error::other("disk"));
    /// let boxed: BoxError = original.clone().into();
    /// let back = Cause::from_boxed(boxed);
    /// assert!(back.same(&original));
    /// assert!(back.downcast_ref::<io::Error>().is_some());
    /// ```
    pub fn from_boxed(error: BoxError) -> Cause {
        if let Some(plain) = error.downcast_ref::<Error>() {
            return Cause(Repr::Plain(*plain));
        }
        match error.downcast::<SharedCause>() {
            Ok(shared) => Cause(Repr::Shared(shared.0)),
            Err(other) => Cause(Repr::Shared(Arc::from(other))),
        }
    }

    /// A cause that is just a plain message.
    ///
    /// ```
    /// let cause = ctx_core::Cause::msg("shutting down");
    /// assert_eq!(cause.to_string(), "shutting down");
    /// ```
    pub fn msg(message: impl Into<String>) -> Cause {
        Cause::new(Message(message.into()))
    }

    /// The cause as the error type `E`, if it is one.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        let inner: &(dyn StdError + 'static) = &**self;
        inner.downcast_ref::<E>()
    }

    /// The plain [`Error`] this cause is, if it is one (no custom cause was given).
    pub fn as_error(&self) -> Option<Error> {
        match &self.0 {
            Repr::Plain(e) => Some(*e),
            Repr::Shared(_) => None,
        }
    }

    /// Whether both causes are the same: the same plain error, or the same shared
    /// allocation (a cause that was cloned compares equal to its original).
    pub fn same(&self, other: &Cause) -> bool {
        match (&self.0, &other.0) {
            (Repr::Plain(a), Repr::Plain(b)) => a == b,
            (Repr::Shared(a), Repr::Shared(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            _ => false,
        }
    }
}

impl Deref for Cause {
    type Target = dyn StdError + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Repr::Plain(e) => e,
            Repr::Shared(e) => &**e,
        }
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Plain(e) => fmt::Debug::fmt(e, f),
            Repr::Shared(e) => fmt::Debug::fmt(&**e, f),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for Cause {
    fn from(error: E) -> Cause {
        Cause::new(error)
    }
}

impl PartialEq<Error> for Cause {
    fn eq(&self, other: &Error) -> bool {
        self.as_error() == Some(*other)
    }
}

/// A boxed error that can cross threads: what groups accept from their tasks
/// (`E: Into<BoxError>`), as tower names it.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `?` from a [`Cause`] (a group's failure, a context's cause) into
/// `Box<dyn Error + Send + Sync>`.
///
/// A plain [`Error`] is boxed as itself (so it downcasts to `ctx_core::Error`); a
/// custom cause is boxed as a shared handle on it, whose `Display`, `Debug` and
/// `source` are the original's.
///
/// ```
/// use ctx_core::{Cause, Context};
/// use std::error::Error;
///
/// fn step(ctx: &Context) -> Result<(), Box<dyn Error + Send + Sync>> {
///     if let Some(cause) = ctx.cause() {
///         return Err(cause)?;
///     }
///     Ok(())
/// }
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// cancel.cancel(Cause::msg("disk full"));
/// assert_eq!(step(&ctx).unwrap_err().to_string(), "disk full");
/// ```
impl From<Cause> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(cause: Cause) -> Self {
        match cause.0 {
            Repr::Plain(err) => Box::new(err),
            Repr::Shared(shared) => Box::new(SharedCause(shared)),
        }
    }
}

/// `?` from a [`Cause`] into `anyhow::Result` (feature `anyhow`), as for
/// `Box<dyn Error + Send + Sync>`.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// use ctx_core::{Cause, Context};
///
/// fn step(ctx: &Context) -> anyhow::Result<()> {
///     if let Some(cause) = ctx.cause() {
///         return Err(cause.into());
///     }
///     Ok(())
/// }
///
/// let (ctx, cancel) = Context::background().with_cancel_cause();
/// cancel.cancel(Cause::msg("disk full"));
/// assert_eq!(step(&ctx).unwrap_err().to_string(), "disk full");
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "anyhow")]
#[cfg_attr(docsrs, doc(cfg(feature = "anyhow")))]
impl From<Cause> for anyhow::Error {
    fn from(cause: Cause) -> Self {
        match cause.0 {
            Repr::Plain(err) => anyhow::Error::new(err),
            Repr::Shared(shared) => anyhow::Error::new(SharedCause(shared)),
        }
    }
}

/// `?` from a context's [`Error`] into `std::io::Result`: `Canceled` becomes
/// [`ErrorKind::Other`](std::io::ErrorKind::Other),
/// `DeadlineExceeded` becomes [`ErrorKind::TimedOut`](std::io::ErrorKind::TimedOut),
/// and the [`Error`] stays inside for downcasting.
///
/// Not `ErrorKind::Interrupted`: `std::io` retries that kind (`read_exact`,
/// `write_all`, `io::copy` loop on it), so a reader that stops with
/// `ctx.check()?` would spin forever once its context is canceled.
///
/// ```
/// use ctx_core::{Context, Error};
/// use std::io;
///
/// fn copy_chunk(ctx: &Context) -> io::Result<usize> {
///     ctx.check()?;
///     Ok(4096)
/// }
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert_eq!(copy_chunk(&ctx).unwrap(), 4096);
/// cancel.cancel();
/// let err = copy_chunk(&ctx).unwrap_err();
/// assert_eq!(err.kind(), io::ErrorKind::Other);
/// assert_eq!(err.get_ref().unwrap().downcast_ref::<Error>(), Some(&Error::Canceled));
/// ```
impl From<Error> for std::io::Error {
    fn from(err: Error) -> std::io::Error {
        let kind = match err {
            Error::Canceled => std::io::ErrorKind::Other,
            Error::DeadlineExceeded => std::io::ErrorKind::TimedOut,
        };
        std::io::Error::new(kind, err)
    }
}

/// A custom cause as an owned error value: the shared error's own text and source.
struct SharedCause(Arc<dyn StdError + Send + Sync + 'static>);

impl fmt::Debug for SharedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl StdError for SharedCause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// The error behind [`Cause::msg`].
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}
