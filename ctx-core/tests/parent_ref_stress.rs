//! Adversarial stress of children's references counted in their parent's
//! set shards: threads pinned to chosen shards (several sharing one, several
//! on their own), revivals through expiries, cancels, merge children, values
//! with counted drops, panicking value drops. Every value must be dropped
//! exactly once and never while a descendant can read it.

mod support;

use ctx_core::testing::pin_child_shard;
use ctx_core::{CancelFunc, Context, Expiry};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;
use support::{KeepExpiries, Rng, scaled};

/// A ledger of values: each one's drop count.
#[derive(Default)]
struct Ledger(Mutex<Vec<Arc<AtomicUsize>>>);

impl Ledger {
    fn value(&self) -> Counted {
        let c = Arc::new(AtomicUsize::new(0));
        self.0.lock().unwrap().push(c.clone());
        Counted(c)
    }
    fn check(&self, what: &str) {
        let all = self.0.lock().unwrap();
        for (i, c) in all.iter().enumerate() {
            assert_eq!(
                c.load(Ordering::SeqCst),
                1,
                "{what}: value {i} dropped {} times",
                c.load(Ordering::SeqCst)
            );
        }
    }
}

struct Counted(Arc<AtomicUsize>);
impl Counted {
    fn alive(&self) {
        assert_eq!(self.0.load(Ordering::SeqCst), 0, "read after its drop");
    }
}
impl Drop for Counted {
    fn drop(&mut self) {
        assert_eq!(self.0.fetch_add(1, Ordering::SeqCst), 0, "dropped twice");
    }
}

fn check_reads(ctx: &Context) {
    ctx.value::<Counted>().expect("a value above").alive();
    let _ = ctx.err();
    let _ = ctx.cause();
    let _ = ctx.deadline();
}

/// Threads pinned to `shards[t]` derive children (some timed, some with a
/// value and children of their own) of one parent, then race its last
/// handles, its cancel, revivals through its expiry and their own drops.
fn round(seed: u64, shards: &[usize], per_thread: usize) {
    let ledger = Arc::new(Ledger::default());
    let timer = Arc::new(KeepExpiries::default());
    let (parent, cancel) = Context::background()
        .with_timer(timer.clone())
        .with_value(ledger.value())
        .with_timeout(Duration::from_secs(3600));
    let expiry = Arc::new(Mutex::new(timer.0.lock().unwrap().pop()));
    // The inline slot's child.
    let first = parent.with_cancel();
    let n = shards.len();
    let start = Arc::new(Barrier::new(n + 1));
    let kept: Arc<Mutex<Vec<(Context, CancelFunc)>>> = Arc::default();
    let threads: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(t, &k)| {
            let (parent, start, expiry, ledger, kept) = (
                parent.clone(),
                start.clone(),
                expiry.clone(),
                ledger.clone(),
                kept.clone(),
            );
            thread::spawn(move || {
                pin_child_shard(k);
                let mut rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut mine = Vec::new();
                for _ in 0..per_thread {
                    let (c, f) = match rng.below(3) {
                        0 => parent.with_timeout(Duration::from_secs(7200)),
                        _ => parent.with_cancel(),
                    };
                    let v = c.with_value(ledger.value());
                    let g = v.with_cancel();
                    mine.push((c, f));
                    mine.push(g);
                }
                start.wait();
                if rng.below(2) == 0 {
                    drop(parent);
                }
                // Revive through the expiry and derive more.
                let again = expiry.lock().unwrap().as_ref().and_then(Expiry::context);
                if let Some(again) = again {
                    mine.push(again.with_cancel());
                    if rng.below(2) == 0 {
                        mine.push(Context::with_cancel_any(&[
                            again.clone(),
                            Context::background(),
                        ]));
                    }
                }
                // Taken out under the lock, fired after it.
                let fire = (t == 0 && rng.below(2) == 0)
                    .then(|| expiry.lock().unwrap().take())
                    .flatten();
                if let Some(e) = fire {
                    e.fire();
                }
                for (c, _) in &mine {
                    check_reads(c);
                }
                // Drop some here, keep some for another thread.
                while let Some(x) = mine.pop() {
                    match rng.below(3) {
                        0 => kept.lock().unwrap().push(x),
                        1 => x.1.cancel(),
                        _ => drop(x),
                    }
                }
            })
        })
        .collect();
    start.wait();
    let mut rng = Rng::new(seed.wrapping_mul(31) | 1);
    match rng.below(3) {
        0 => drop(cancel.into_canceler()),
        1 => cancel.cancel(),
        _ => drop(cancel),
    }
    drop(parent);
    drop(first);
    for t in threads {
        t.join().unwrap();
    }
    let kept = std::mem::take(&mut *kept.lock().unwrap());
    for (c, _) in &kept {
        check_reads(c);
    }
    // The last ones, dropped on two threads.
    let mut kept = kept;
    let half = kept.split_off(kept.len() / 2);
    let other = thread::spawn(move || drop(half));
    drop(kept);
    other.join().unwrap();
    drop(expiry);
    // The expiry's walk may leave drops to the runner: wait for them (a
    // watchdog; the check below says what is missing).
    support::eventually(|| {
        let values = ledger.0.lock().unwrap();
        values.iter().all(|c| c.load(Ordering::SeqCst) != 0)
    });
    ledger.check(&format!("seed {seed} shards {shards:?}"));
}

#[test]
fn shared_and_separate_shards_race() {
    let layouts: &[&[usize]] = &[
        &[0, 0, 0, 0],
        &[0, 1, 2, 3],
        &[0, 0, 1, 1],
        &[3, 7, 3, 15],
        &[5, 5, 9],
    ];
    for seed in 1..=scaled(1000, 2) as u64 {
        let layout = layouts[seed as usize % layouts.len()];
        round(seed, layout, scaled(3, 1));
    }
}

/// A value whose drop panics, below a child counted in its parent's shard:
/// the panic surfaces from the drop, and the parent (its counted value) is
/// still dropped exactly once, with the last child.
#[test]
fn a_panicking_value_drop_below_a_counted_child_frees_the_parent_once() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb");
        }
    }
    for k in [0usize, 1, 5] {
        let ledger = Ledger::default();
        let (parent, cancel) = Context::background()
            .with_value(ledger.value())
            .with_cancel();
        let a = parent.with_cancel();
        let b = parent.with_cancel();
        let counted = thread::scope(|s| {
            s.spawn(|| {
                pin_child_shard(k);
                parent.with_cancel()
            })
            .join()
            .unwrap()
        });
        let bomb = counted.0.with_value(Bomb);
        let grand = bomb.with_cancel();
        drop((parent, cancel.into_canceler(), a, b, counted));
        ledger.0.lock().unwrap()[0].load(Ordering::SeqCst);
        let r = catch_unwind(AssertUnwindSafe(move || drop((bomb, grand))));
        assert!(r.is_err(), "the bomb's panic surfaces");
        ledger.check(&format!("bomb, shard {k}"));
    }
}

/// Callbacks whose closures panic when dropped, left registered on a parent
/// whose handles went and whose set is orphaned: they are dropped with the
/// parent, once, when its last counted child goes.
#[test]
fn callbacks_left_on_an_orphaned_parent_go_with_it() {
    struct Bomb(Arc<AtomicUsize>);
    impl Drop for Bomb {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("bomb");
        }
    }
    let ledger = Ledger::default();
    let bombs = Arc::new(AtomicUsize::new(0));
    let (parent, cancel) = Context::background()
        .with_value(ledger.value())
        .with_cancel();
    let first = parent.with_cancel();
    let cbs: Vec<_> = (0..3)
        .map(|_| {
            let bomb = Bomb(bombs.clone());
            parent.after_func(move || {
                let _keep = &bomb;
            })
        })
        .collect();
    let children: Vec<_> = (0..4)
        .map(|k| {
            let parent = parent.clone();
            thread::spawn(move || {
                pin_child_shard(k);
                parent.with_cancel()
            })
            .join()
            .unwrap()
        })
        .collect();
    drop(cbs);
    drop((parent, cancel.into_canceler(), first));
    assert_eq!(bombs.load(Ordering::SeqCst), 0);
    let mut children = children;
    let last = children.pop().unwrap();
    drop(children);
    assert_eq!(bombs.load(Ordering::SeqCst), 0);
    let r = catch_unwind(AssertUnwindSafe(move || drop(last)));
    assert!(r.is_err(), "a closure's drop panic surfaces");
    assert_eq!(bombs.load(Ordering::SeqCst), 3);
    ledger.check("callbacks");
}
