//! The `CancellationToken` bridge, both ways (feature `tokio-util`).

#![cfg(feature = "tokio-util")]

use ctx_core::testing::waiters;
use ctx_core::{Context, Error};
use ctx_tokio::{ContextTokenExt, TokenCanceled};
use tokio_util::sync::CancellationToken;

/// Whether `ctx` ended with its token's cause.
fn canceled_by_token(ctx: &Context) -> bool {
    ctx.cause()
        .is_some_and(|cause| cause.downcast_ref::<TokenCanceled>().is_some())
}

#[test]
fn to_token_is_canceled_with_the_context_and_needs_no_runtime() {
    let (ctx, cancel) = Context::background().with_cancel();
    let token = ctx.to_token();
    let child = token.child_token();
    assert!(!token.is_cancelled());
    assert_eq!(waiters(&ctx), 1);
    // Canceled before the cancel returns.
    cancel.cancel();
    assert!(token.is_cancelled());
    assert!(child.is_cancelled());
}

#[test]
fn dropped_tokens_leave_no_registration_behind() {
    let (ctx, cancel) = Context::background().with_cancel();
    let tokens: Vec<_> = (0..10_000).map(|_| ctx.to_token()).collect();
    assert_eq!(waiters(&ctx), 10_000);
    drop(tokens);
    assert_eq!(waiters(&ctx), 0);
    // One at a time, as a long-lived context sees them.
    for _ in 0..10_000 {
        let token = ctx.to_token();
        assert!(!token.is_cancelled());
    }
    assert_eq!(waiters(&ctx), 0);
    // The context still works, and so does a token taken now.
    let token = ctx.to_token();
    cancel.cancel();
    assert!(token.is_cancelled());
}

#[test]
fn a_clone_follows_the_context_while_the_guard_lives() {
    let (ctx, cancel) = Context::background().with_cancel();
    let kept = ctx.to_token();
    let followed = kept.clone();
    let disconnected = ctx.to_token().clone();
    cancel.cancel();
    assert!(followed.is_cancelled());
    assert!(kept.token().is_cancelled());
    // Its guard was dropped at the end of its statement.
    assert!(!disconnected.is_cancelled());
}

#[test]
fn canceling_the_token_does_not_cancel_the_context() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let token = ctx.to_token();
    token.cancel();
    assert_eq!(ctx.err(), None);
}

#[test]
fn to_token_of_a_done_context_is_canceled_at_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    assert!(ctx.to_token().is_cancelled());
    // A context that can never be canceled gives a token that never is.
    assert!(!Context::background().to_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn to_token_follows_a_deadline() {
    let (ctx, _cancel) = ctx_tokio::background().with_timeout(std::time::Duration::from_secs(5));
    let token = ctx.to_token();
    token.cancelled().await;
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

/// The token is canceled where the context's waiters are woken: by the
/// expiry, on the runtime. So under paused time a timer due after the
/// deadline cannot run first (auto-advance waits for the runtime's tasks, not
/// for ctx-core's runner threads).
#[tokio::test(start_paused = true)]
async fn under_paused_time_the_token_is_canceled_before_a_later_timer_runs() {
    let (ctx, _cancel) = ctx_tokio::background().with_timeout(std::time::Duration::from_secs(5));
    let token = ctx.to_token();
    let later = tokio::time::sleep(std::time::Duration::from_secs(6));
    tokio::select! {
        biased;
        () = token.cancelled() => {}
        () = later => panic!("a timer due after the deadline ran before the token was canceled"),
    }
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[tokio::test]
async fn from_token_is_canceled_when_the_token_is() {
    let token = CancellationToken::new();
    let (ctx, _cancel) = ctx_tokio::from_token(&ctx_tokio::background(), token.clone());
    tokio::task::yield_now().await;
    assert_eq!(ctx.err(), None);
    token.cancel();
    ctx.done().await;
    assert_eq!(ctx.err(), Some(Error::Canceled));
    let cause = ctx.cause().unwrap();
    assert_eq!(cause.downcast_ref::<TokenCanceled>(), Some(&TokenCanceled));
    assert_eq!(cause.to_string(), "cancellation token canceled");
}

#[tokio::test]
async fn from_a_canceled_token_is_born_canceled() {
    let token = CancellationToken::new();
    token.cancel();
    let (ctx, _cancel) = ctx_tokio::from_token(&ctx_tokio::background(), token);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(canceled_by_token(&ctx));
}

#[tokio::test]
async fn from_token_cancel_func_and_parent_leave_the_token_alone() {
    let token = CancellationToken::new();
    let (ctx, cancel) = ctx_tokio::from_token(&ctx_tokio::background(), token.clone());
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(!token.is_cancelled());

    let (parent, cancel_parent) = ctx_tokio::background().with_cancel();
    let (ctx, _cancel) = ctx_tokio::from_token(&parent, token.clone());
    cancel_parent.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(!token.is_cancelled());
}

#[tokio::test]
async fn round_trip() {
    let (ctx, cancel) = ctx_tokio::background().with_cancel();
    let token = ctx.to_token();
    let (back, _cancel_back) = ctx_tokio::from_token(&ctx_tokio::background(), token.clone());
    cancel.cancel();
    back.done().await;
    assert!(canceled_by_token(&back));
}

/// A token canceled already gives a child born canceled, which is no live
/// child of its parent even while its cancel function is kept (as one that
/// its token cancels later). It used to be a done grandchild below a hidden
/// live child, which stayed on the parent until the cancel function went.
#[tokio::test]
async fn a_child_of_a_canceled_token_is_born_done_and_leaves_its_parent() {
    let (parent, _cancel_parent) = Context::background().with_cancel();
    let token = CancellationToken::new();
    token.cancel();
    let kept: Vec<_> = (0..3)
        .map(|_| {
            let (ctx, cancel) = ctx_tokio::from_token(&parent, token.clone());
            assert_eq!(ctx.err(), Some(Error::Canceled));
            assert!(canceled_by_token(&ctx));
            cancel
        })
        .collect();
    assert_eq!(parent.live_children(), 0);
    drop(kept);
}
