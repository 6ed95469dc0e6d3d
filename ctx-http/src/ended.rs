//! How a watched context ended: the two questions every layer asks of it.

use ctx_core::{Cause, Context, Done, Error};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

/// The cause of a context that is done with `err` (the error itself when it
/// was given none).
pub(crate) fn cause_of(ctx: &Context, err: Error) -> Cause {
    ctx.cause().unwrap_or_else(|| Cause::new(err))
}

/// Polls `ctx`'s `Done`, made on the first call and kept in `done`; the
/// context's error once it is done.
pub(crate) fn poll_done(
    ctx: &Context,
    done: &mut Option<Done>,
    cx: &mut TaskContext<'_>,
) -> Poll<Error> {
    let done = done.get_or_insert_with(|| ctx.done());
    ready!(Pin::new(done).poll(cx));
    Poll::Ready(ctx.err().unwrap_or(Error::Canceled))
}
