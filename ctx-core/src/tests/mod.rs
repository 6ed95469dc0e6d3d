//! White-box tests and loom models of the internal protocols.
//!
//! # Loom models
//!
//! The `loom_*` modules are compiled only with `--cfg ctx_loom`, which swaps the
//! crate's atomics, `Arc` and `UnsafeCell` for loom's (see `sync`). Every model
//! function's name starts with `loom_`, so one filter runs them all and a longer
//! one runs a single model:
//!
//! ```text
//! RUSTFLAGS="--cfg ctx_loom -C debug-assertions" LOOM_MAX_PREEMPTIONS=2 \
//!     LOOM_MAX_BRANCHES=10000 cargo test -p ctx-core --lib --release \
//!     --target-dir target/loom -- --test-threads=1 loom_
//! ```
//!
//! `cargo xtask loom` runs exactly that. On a 2-core machine the 22 models take
//! about 5 s (most of it in the three-thread models), plus under a minute for a
//! cold release build. With `LOOM_MAX_PREEMPTIONS=3` they take about 40 s; with
//! 4, over ten minutes (most of it in `loom_waiter_two_waiters_vs_cancel`).
//!
//! | model file | protocol |
//! |---|---|
//! | `loom_list` | the child set: free-stack ABA, concurrent insert/remove, insert vs drain (the Dekker pair, with a segment allocation), remove vs drain |
//! | `loom_cancel` | registration vs cancel (one and two registrants), unlink on drop vs cancel and vs insert, racing causes, merge nodes (two parents canceled, creation vs cancel of either parent) |
//! | `loom_after_func` | stop vs fire, registration vs cancel, registration and stop vs cancel |
//! | `loom_waiter` | the `WAITERS` bit: no lost wake-up for `Done` (one waiter, a waiter on a child, two waiters) |
//! | `loom_timer` | arming vs cancel, firing vs cancel, the exact-deadline check vs cancel: every key disarmed exactly once |
//!
//! Every model built with [`model`] also checks that each execution frees every
//! node it allocated; loom itself checks its own `Arc`s (callbacks) for leaks.
//!
//! Two helpers in `sync` make up for loom's model being weaker than Rust's memory
//! model, and change nothing in any other build: `dekker_point` (loom treats
//! `SeqCst` loads and stores as `AcqRel`) and `StoreRacingRmw` (loom lets a plain
//! store slip between an RMW's read and write). Without them the models report
//! executions that cannot happen.
//!
//! Models never block a thread (no `Context::wait`, no parking) and never use the
//! built-in timer thread; futures are driven with `loom::future::block_on`.

#[cfg(ctx_loom)]
mod loom_after_func;
#[cfg(ctx_loom)]
mod loom_cancel;
#[cfg(ctx_loom)]
mod loom_list;
#[cfg(ctx_loom)]
mod loom_timer;
#[cfg(ctx_loom)]
mod loom_waiter;

/// Runs a loom model and checks after every execution that it freed every node
/// it allocated (a leaked weak reference leaks the node's memory, which loom's
/// own leak check does not see).
#[cfg(ctx_loom)]
fn model(body: impl Fn() + Sync + Send + 'static) {
    use crate::tree::node::LIVE_NODES;
    loom::model(move || {
        let before = LIVE_NODES.with(|live| live.get());
        body();
        assert_eq!(
            LIVE_NODES.with(|live| live.get()),
            before,
            "a node was not freed"
        );
    });
}
