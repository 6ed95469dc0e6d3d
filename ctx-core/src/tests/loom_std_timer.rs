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

/// `arms` (a shard index and a deadline each, one thread per arm) into
/// `shards` (their `next`s) while the sleeper, whose published `wake_at` is
/// `initial`, ends a pass: it never sleeps past the earliest of the arms'
/// deadlines unless an arm woke it.
fn arms_vs_sleep<const N: usize>(shards: [u64; N], initial: u64, arms: &'static [(usize, u64)]) {
    loom::model(move || {
        let shards = Arc::new(shards.map(word));
        let wake_at = Arc::new(word(initial));
        let threads: Vec<_> = arms
            .iter()
            .map(|&(shard, at)| {
                let (shards, wake_at) = (shards.clone(), wake_at.clone());
                thread::spawn(move || wake::lower(&shards[shard], &*wake_at, at))
            })
            .collect();
        let slept = thread_pass(&*shards, &wake_at);
        // Every arm is joined (no short-circuit): the model must finish them.
        let woke: Vec<bool> = threads.into_iter().map(|arm| arm.join().unwrap()).collect();
        let woke = woke.contains(&true);
        let earliest = arms.iter().map(|&(_, at)| at).min().unwrap_or(IDLE);
        if let Some(target) = slept {
            assert!(
                target <= earliest || woke,
                "the sleeper sleeps towards {target} past the deadline {earliest}, and nobody woke it"
            );
        }
    });
}

/// One arm into an empty shard while the thread ends a pass. The thread's
/// last published target (1) is stale and earlier than the arm's deadline, so
/// the arm's `fetch_min` alone would not unpark: the pair must.
#[test]
fn loom_std_timer_arm_vs_sleep() {
    arms_vs_sleep([IDLE], 1, &[(0, 5)]);
}

/// Two arms into two shards (one already holding a later deadline) while the
/// thread ends a pass: the earlier of the two deadlines is never slept past
/// unless an arm unparked the thread.
#[test]
fn loom_std_timer_two_arms_vs_sleep() {
    arms_vs_sleep([IDLE, 7], 1, &[(0, 5), (1, 3)]);
}

/// As `loom_std_timer_arm_vs_sleep`, from `TokioTimer`'s state after a wake-up
/// was sent (`wake_at` is `WAKING`, 0): the pass that wake-up runs publishes
/// its target while an arm lowers a shard. An arm that finds `WAKING` sends no
/// second wake-up, so the pass must see its `next`, or the arm its target.
#[test]
fn loom_tokio_timer_arm_vs_sleep_after_a_wake_up() {
    arms_vs_sleep([IDLE, 9], 0, &[(0, 5)]);
}
