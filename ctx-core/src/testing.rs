//! Hooks that let a test force an interleaving inside the tree (feature
//! `test-util`; exempt from semver).

/// Makes the calling thread register every child and callback it creates from
/// now on in shard `k` (modulo the shard count) of its parent's child set.
///
/// A parent's child set is split into shards, and each thread inserts into its
/// own, so registrations of different threads never share a shard's free stack
/// or segments. A test that needs several threads to race inside one shard
/// (growing its segments, recycling its slots) pins them all to the same shard.
/// Where a child lands never changes what it observes.
///
/// # Examples
///
/// ```
/// let (parent, _cancel) = ctx_core::Context::background().with_cancel();
/// ctx_core::testing::pin_child_shard(0);
/// let children: Vec<_> = (0..3).map(|_| parent.with_cancel()).collect();
/// assert_eq!(parent.live_children(), 3);
/// # drop(children);
/// ```
pub fn pin_child_shard(k: usize) {
    crate::tree::child_set::pin_current_shard(k);
}
