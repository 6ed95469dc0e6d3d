//! Compile-time checks of the thread-safety and value traits the API promises:
//! every handle can be shared and sent between threads, `Done` can be moved into
//! any executor's task, and `Error` is a plain copyable value.
//!
//! The checks are generic functions that only compile when the bound holds; the
//! tests call them so that they count as tests and run under every tool.

use ctx_core::{
    AfterFunc, CancelCauseFunc, CancelFunc, Cause, Context, Done, Error, Expiry, StdTimer,
};
use std::fmt::{Debug, Display};

fn send_sync<T: Send + Sync>() {}
fn send_unpin<T: Send + Unpin>() {}
fn copy_eq<T: Copy + Eq + Debug + Display + std::error::Error + 'static>() {}
fn static_clone<T: Clone + Send + Sync + 'static>() {}

#[test]
fn handles_are_send_and_sync() {
    send_sync::<Context>();
    send_sync::<CancelFunc>();
    send_sync::<CancelCauseFunc>();
    send_sync::<AfterFunc>();
    send_sync::<Cause>();
    send_sync::<Error>();
    send_sync::<Expiry>();
    send_sync::<StdTimer>();
    send_sync::<Done>();
}

#[test]
fn done_can_move_into_any_task() {
    send_unpin::<Done>();
    fn future<F: std::future::Future<Output = ()> + Send + Unpin + 'static>(_: &F) {}
    let done = Context::background().done();
    future(&done);
    assert!(done.context().same(&Context::background()));
}

#[test]
fn error_is_a_copyable_comparable_error_value() {
    copy_eq::<Error>();
    let a = Error::Canceled;
    let b = a;
    assert_eq!(a, b);
    assert_ne!(Error::Canceled, Error::DeadlineExceeded);
}

#[test]
fn context_and_cause_are_cheap_shared_clones() {
    static_clone::<Context>();
    static_clone::<Cause>();
    let cause = Cause::msg("shared");
    assert!(cause.clone().same(&cause));
    let ctx = Context::background().with_value(1u8);
    assert!(ctx.clone().same(&ctx));
    assert!(!ctx.same(&Context::background()));
}
