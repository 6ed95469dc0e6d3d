//! Loom models of the built-in backends' wake-up protocol
//! (`timer::shards::wake`, used by `StdTimer`'s thread and ctx-tokio's
//! `TokioTimer` driver): an arm that makes a deadline the earliest of all is
//! never missed by the sleeper going to sleep. The sleepers cannot run under
//! loom (they park with timeouts, or live in a runtime), so the models run the
//! protocol's two halves, the very functions `arm` and the sleeper call, on
//! loom's atomics, and check the outcome: whenever the sleeper decides to sleep
//! towards a target later than an armed deadline, some arm woke it (a park
//! token or a `Notify` permit is never lost, so it looks again).

use crate::timer::shards::wake::{self, Word};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

/// Nothing to wait for (an empty shard, a thread with no target).
const IDLE: u64 = u64::MAX;

/// A loom atomic as the protocol's word.
struct Loom(AtomicU64);

impl Word for Loom {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order);
    }
    fn fetch_min(&self, value: u64, order: Ordering) -> u64 {
        self.0.fetch_min(value, order)
    }
    fn dekker_point() {
        crate::sync::dekker_point();
    }
}

fn word(value: u64) -> Loom {
    Loom(AtomicU64::new(value))
}

/// The thread's end of a pass: the earliest `next` of `shards`, then `settle`.
/// Returns the target if it decided to sleep.
fn thread_pass(shards: &[Loom], wake_at: &Loom) -> Option<u64> {
    let earliest = || {
        shards
            .iter()
            .map(|next| next.load(Ordering::SeqCst))
            .min()
            .unwrap_or(IDLE)
    };
    let target = earliest();
    wake::settle(wake_at, earliest, target).then_some(target)
}

/// One arm of deadline `at` into the first of `shards` (their `next`s) while
/// the sleeper, whose published `wake_at` is `initial`, ends a pass: it never
/// sleeps past `at` unless the arm woke it.
fn one_arm_vs_sleep<const N: usize>(shards: [u64; N], initial: u64, at: u64) {
    loom::model(move || {
        let shards = Arc::new(shards.map(word));
        let wake_at = Arc::new(word(initial));
        let arm = {
            let (shards, wake_at) = (shards.clone(), wake_at.clone());
            thread::spawn(move || wake::lower(&shards[0], &*wake_at, at))
        };
        let slept = thread_pass(&*shards, &wake_at);
        let woke = arm.join().unwrap();
        if let Some(target) = slept {
            assert!(
                target <= at || woke,
                "the sleeper sleeps towards {target} past the deadline {at}, and nobody woke it"
            );
        }
    });
}

/// One arm into an empty shard while the thread ends a pass. The thread's
/// last published target (1) is stale and earlier than the arm's deadline, so
/// the arm's `fetch_min` alone would not unpark: the pair must.
#[test]
fn loom_std_timer_arm_vs_sleep() {
    one_arm_vs_sleep([IDLE], 1, 5);
}

/// Two arms into two shards (one already holding a later deadline) while the
/// thread ends a pass: the earlier of the two deadlines is never slept past
/// unless an arm unparked the thread.
#[test]
fn loom_std_timer_two_arms_vs_sleep() {
    loom::model(|| {
        let shards = Arc::new([word(IDLE), word(7)]);
        let wake_at = Arc::new(word(1));
        let arms: Vec<_> = [(0, 5), (1, 3)]
            .into_iter()
            .map(|(shard, at)| {
                let (shards, wake_at) = (shards.clone(), wake_at.clone());
                thread::spawn(move || wake::lower(&shards[shard], &*wake_at, at))
            })
            .collect();
        let slept = thread_pass(&*shards, &wake_at);
        let unparked = arms
            .into_iter()
            .fold(false, |any, arm| arm.join().unwrap() || any);
        if let Some(target) = slept {
            assert!(
                target <= 3 || unparked,
                "the thread sleeps towards {target} past the deadline 3, and nobody woke it"
            );
        }
    });
}

/// As `loom_std_timer_arm_vs_sleep`, from `TokioTimer`'s state after a wake-up
/// was sent (`wake_at` is `WAKING`, 0): the pass that wake-up runs publishes
/// its target while an arm lowers a shard. An arm that finds `WAKING` sends no
/// second wake-up, so the pass must see its `next`, or the arm its target.
#[test]
fn loom_tokio_timer_arm_vs_sleep_after_a_wake_up() {
    one_arm_vs_sleep([IDLE, 9], 0, 5);
}
