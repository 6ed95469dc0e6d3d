//! A first end-to-end pass over the main paths.

use ctx_core::{Cause, Context, Error};
use std::time::{Duration, Instant};

#[test]
fn cancel_propagates_and_detaches() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_cancel();
    let v = child.with_value(3u32);
    let (grand, _g) = v.with_cancel_cause();
    assert_eq!(parent.live_children(), 1);
    assert_eq!(child.live_children(), 1);
    cancel.cancel();
    assert_eq!(grand.err(), Some(Error::Canceled));
    assert_eq!(parent.live_children(), 0);
    assert_eq!(grand.value::<u32>(), Some(&3));
    assert_eq!(
        grand.to_string(),
        "context.Background.WithCancel.WithCancel.WithValue(u32).WithCancelCause"
    );
}

#[test]
fn deadline_and_cause() {
    let (ctx, _c) =
        Context::background().with_timeout_cause(Duration::from_millis(20), Cause::msg("slow"));
    ctx.wait();
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.cause().unwrap().to_string(), "slow");
    let (past, _p) = Context::background().with_deadline(Instant::now());
    assert_eq!(past.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn deep_chain() {
    let (root, cancel) = Context::background().with_cancel();
    let mut ctx = root.clone();
    let mut keep = Vec::new();
    for _ in 0..100_000 {
        let (c, f) = ctx.with_cancel();
        keep.push(f);
        ctx = c;
    }
    cancel.cancel();
    assert!(ctx.is_done());
    drop(keep);
    drop(ctx);
}
