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
//!     LOOM_MAX_BRANCHES=10000 cargo test -p ctx-tree --lib --release \
//!     --target-dir target/loom -- --test-threads=1 loom_
//! ```
//!
//! `cargo xtask loom` runs exactly that. On the 2-core reference machine (shared
//! with other jobs) the 64 models take about 20 s, most of it in three of them
//! (the `time` column, at `LOOM_MAX_PREEMPTIONS=2`; "< 0.1 s" models explore a few
//! hundred executions at most), plus under a minute for a cold release build.
//! With `LOOM_MAX_PREEMPTIONS=3` they take about 5 minutes, most of it in the
//! same three; with 4, far longer. A substring filter runs every model whose
//! name contains it (`loom_timer_unclaimed_read_vs_fire` also runs
//! `…_vs_fire_vs_cancel`).
//!
//! | model | what it proves | time |
//! |---|---|---|
//! | **`loom_list`** (the child set and one shard, built directly) | | |
//! | `free_stack_aba` | the free stack's generation tag defeats ABA | < 0.1 s |
//! | `concurrent_insert_remove` | three inserters/removers sharing recycled indices and growing the set: no entry overwritten, no index lost | 0.3 s |
//! | `insert_vs_drain` | the Dekker pair with a segment allocation: an entry is drained or taken back, once | < 0.1 s |
//! | `remove_vs_drain` | remove vs drain: one side takes the entry; only a remover frees the index | < 0.1 s |
//! | `segment_growth_vs_drain` | three inserters grow the set into segment 2 (two race to allocate it) while a drain runs: every entry handled once | 6 s |
//! | `out_of_order_segments_vs_drain` | segments 1 and 2 allocated by two inserters in either order while a drain runs (indices skipped by a test hook): the drain visits every segment, each entry drained or taken back | < 0.1 s |
//! | `shards_vs_drain` | two inserters each install a shard of their own while a drain runs and a remover empties a slot of a third shard: every entry handled once | < 0.1 s |
//! | `racing_shard_install_vs_drain` | two inserters race to install the same fresh shard (the loser frees its copy) during a drain: both entries in the installed shard, each handled once | < 0.1 s |
//! | **`loom_cancel`** | | |
//! | `insert_vs_cancel` | a child created during its parent's cancel ends done; the cancel returns even when the parent's set appears after its walk looked | < 0.1 s |
//! | `two_inserts_vs_cancel` | two children racing to flag the parent (the winner takes the inline slot, the other allocates the set) during the cancel | 0.4 s |
//! | `unlink_on_drop_vs_cancel` | a dropped child's slot is emptied once | < 0.1 s |
//! | `unlink_vs_insert` | a sibling's registration survives a reused index | < 0.1 s |
//! | `unlink_vs_insert_vs_cancel` | the three at once | 0.4 s |
//! | `two_causes` | the first close of a node wins; its subtree agrees | < 0.1 s |
//! | `merge_two_parents` | a merge node canceled through both parents: one cause, both sets empty | < 0.1 s |
//! | `merge_insert_vs_cancel`, `merge_insert_vs_cancel_first_parent` | a merge node created while one parent is canceled leaves the other | < 0.1 s |
//! | `merge_registration_vs_done_parent` | three parents, the middle one canceled during registration: no parent keeps the node (the fence and re-check in `merge`), every node freed | < 0.1 s |
//! | `returned_cancel_means_done_subtree` | `root → a → b`: after a losing cancel of `a` returns, `b` is done | < 0.1 s |
//! | `same_node_twice` | two cancels of one node: after each returns, the grandchild is done | < 0.1 s |
//! | `live_leaf_dropped_vs_parent_cancel`, `live_inner_node_dropped_vs_parent_cancel` | a live child's canceler and last handle dropped during its parent's walk: the payload outlives the walk's hold on the entry (the detach waits for `drained`), every node freed | < 0.1 s |
//! | **`loom_parent_ref`** (children's references counted in their parent's set) | | |
//! | `last_handle_vs_counted_child` | the parent's last handle (no cancel) vs the drop of a child counted in a shard: the parent freed once, by whichever is last | < 0.1 s |
//! | `cancel_and_last_handle_vs_counted_child` | the same after a cancel whose walk drains the child's entry | < 0.1 s |
//! | `upgrade_vs_last_handle_vs_counted_child` | a weak reference upgraded (an expiry's `context`) during the last handle's release: one orphaning, and a child derived from the upgraded handle counts correctly | < 0.1 s |
//! | `walk_vs_orphaned_counted_child` | a root's walk reaches a counted child whose handles go meanwhile while that child's counted child is dropped | < 0.1 s |
//! | `orphan_vs_releases_in_two_shards`, `_in_three_shards`, `orphan_vs_two_releases_in_one_shard` | the orphaning's count against releases in two or three shards, two of them racing in one: exactly one party releases the set's reference | < 0.5 s |
//! | `revived_handle_installs_a_shard_during_orphaning`, `revived_handle_child_outlives_everything` | a handle revived through an upgrade derives a child in a new shard (installing it) while the set is orphaned; its child outlives everything else | < 0.5 s |
//! | `installer_vs_registrant_vs_last_handle`, `installer_vs_registrant_children_outlive_handles` | the set's installer and a registrant in another shard race the parent's last handles | < 0.5 s |
//! | `cancel_vs_revived_handle_in_new_shard` | the parent's cancel, a revived handle's child in a new shard and the counted child's drop (catches an orphaning that skips shards past the first) | < 0.5 s |
//! | **`loom_after_func`** | | |
//! | `stop_vs_fire` | stop returns true iff the callback never runs | < 0.1 s |
//! | `register_vs_cancel` | a callback registered during the cancel runs once | < 0.1 s |
//! | `register_stop_vs_cancel` | registration then stop vs cancel: runs iff the stop failed | < 0.1 s |
//! | **`loom_waiter`** | | |
//! | `done_vs_cancel`, `child_done_vs_parent_cancel` | the `WAITERS` bit: no lost wake-up | < 0.1 s |
//! | `two_waiters_vs_cancel` | two waiters, the second setting a set bit | 3.5 s |
//! | `slot_new_waker_vs_cancel` | the slot's owner stores a new waker during the cancel: woken or sees the close | < 0.1 s |
//! | `slot_same_waker_vs_cancel` | the owner re-polls with its waker while a notifier skips the cell it holds: not lost | < 0.1 s |
//! | `slot_and_event_vs_cancel` | one waiter in the slot, one on the event: both woken | < 0.1 s |
//! | `slot_release_vs_claim_vs_cancel` | the owner dropped while another waiter claims the slot (or listens) and the cancel runs | 1 s |
//! | `slot_reused_after_drop` | a slot freed by a dropped owner is claimed again, and its new owner woken | < 0.1 s |
//! | **`loom_std_timer`** (the built-in timer's wake-up protocol, on loom's atomics) | | |
//! | `arm_vs_sleep`, `two_arms_vs_sleep` | an arm that makes a deadline the earliest is seen by the thread's re-check, or unparks it | < 0.1 s |
//! | `tokio_timer_arm_vs_sleep_after_a_wake_up` | from `TokioTimer`'s state after a wake-up was sent: the pass sees the arm's shard, or the arm its target | < 0.1 s |
//! | **`loom_timer`** (a `Recorder` backend that never fires by itself) | | |
//! | `arm_vs_cancel`, `fire_vs_cancel` | every key disarmed exactly once | < 0.1 s |
//! | `fire_vs_parent_cancel`, `fire_then_drop_vs_parent_cancel` | a deadline child's expiry and its parent's walk both reach it (and its last handle drops right after the fire): the first reason sticks, one disarm, the parent ends with no children | < 0.1 s |
//! | `exact_deadline_vs_cancel` | a read closes with `UNCLAIMED` and walks nothing; the cancel walks; the read's answer sticks; no disarm on the reader | < 0.1 s |
//! | `unclaimed_read_vs_cancel` | the same for a child with a callback: one walk, on the canceler, before its cancel returns | < 0.1 s |
//! | `unclaimed_read_vs_fire` | the same against the timer's expiry | < 0.1 s |
//! | `unclaimed_read_vs_fire_vs_cancel` | read, expiry and cancel at once: one walk, one run, one disarm | 0.5 s |
//! | `expiry_is_done_vs_unclaimed_read` | `Expiry::is_done` does not call an unclaimed node done (a backend may drop an expiry it reports done) | < 0.1 s |
//! | `expiry_dropped_unfired_vs_unclaimed_read` | an expiry a backend drops unfired after a read closed its node `UNCLAIMED` fires itself: the subtree is walked before any cancel | < 0.1 s |
//! | `expiry_dropped_unfired_vs_unclaimed_read_vs_cancel` | that drop, the read and the cancel function at once: one walk, one run, one disarm | < 0.1 s |
//! | `waiter_vs_unclaimed_read_then_fire` | a waiter asleep on the child while a read closes it `UNCLAIMED` and the expiry walks is woken (by the read or the walk); no user code on either | 9 s |
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
//! Loom can also miss executions: its partial-order reduction relates an access
//! only to the last access of the same atomic, so when a thread loads and then
//! CASes a word (every CAS loop here), loom never runs that CAS before a plain
//! load another thread made earlier in the first execution (tokio-rs/loom#166,
//! #392). A model that needs that order has the racing thread store to a probe
//! atomic when it is done and the other thread load it (ignoring the value)
//! right before its own load, which gives loom the dependency to reverse
//! (`expiry_is_done_vs_unclaimed_read`).
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
mod loom_parent_ref;
#[cfg(ctx_loom)]
mod loom_std_timer;
#[cfg(ctx_loom)]
mod loom_timer;
#[cfg(ctx_loom)]
mod loom_waiter;
#[cfg(not(ctx_loom))]
pub(crate) mod waiting;

/// Runs a loom model and checks after every execution that it freed every node
/// it allocated (a leaked weak reference leaks the node's memory, which loom's
/// own leak check does not see).
#[cfg(ctx_loom)]
fn model(body: impl Fn() + Sync + Send + 'static) {
    check_nodes_freed(loom::model::Builder::new(), body);
}

/// [`model`] with at least `bound` preemptions, for a race that needs more than
/// `cargo xtask loom`'s default allows (keep such models small: each one more
/// multiplies the executions).
#[cfg(ctx_loom)]
fn model_with_preemptions(bound: usize, body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.map_or(bound, |b| b.max(bound)));
    check_nodes_freed(builder, body);
}

#[cfg(ctx_loom)]
fn check_nodes_freed(builder: loom::model::Builder, body: impl Fn() + Sync + Send + 'static) {
    use crate::tree::node::LIVE_NODES;
    builder.check(move || {
        let before = LIVE_NODES.with(|live| live.get());
        body();
        assert_eq!(
            LIVE_NODES.with(|live| live.get()),
            before,
            "a node was not freed"
        );
    });
}
