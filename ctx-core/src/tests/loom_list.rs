//! Loom models of the child set (`tree::child_set`), built directly: the
//! free-index stack, the Dekker pair between an inserter and a canceler, and
//! segments allocated while a drain runs.

use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::tree::child_set::{ChildSet, Shard};
use loom::thread;
use std::ptr;

/// A distinct, non-null, never dereferenced entry.
fn entry(n: usize) -> *mut () {
    ptr::without_provenance_mut(8 * n)
}

/// Checks a set nobody uses any more: no entries, and every index ever handed
/// out is on the free stack exactly once.
fn assert_all_free(set: &Shard) {
    assert_eq!(set.len(), 0);
    let (mut free, handed_out) = set.free_indices();
    free.sort_unstable();
    free.dedup();
    assert_eq!(
        free.len(),
        handed_out,
        "an index is lost or on the stack twice"
    );
}

/// The ABA pattern of a Treiber stack: while one thread pops (it read the head
/// and the head's successor), another pops both entries and pushes the first back.
/// Without the generation tag, the first thread's CAS would succeed and install
/// an index that is in use as the new head.
#[test]
fn loom_list_free_stack_aba() {
    loom::model(|| {
        let set = Arc::new(Shard::new());
        // Free stack: index 1 on top, then index 0.
        let a = set.insert(entry(1));
        let b = set.insert(entry(2));
        assert!(set.remove(a, entry(1)));
        assert!(set.remove(b, entry(2)));

        let other = set.clone();
        let t = thread::spawn(move || {
            let x = other.insert(entry(3));
            let y = other.insert(entry(4));
            assert_ne!(x, y);
            assert!(other.remove(x, entry(3)));
            y
        });
        let z = set.insert(entry(5));
        let y = t.join().unwrap();

        assert_ne!(y, z, "one index handed out twice");
        // Both entries are still where their inserters put them.
        assert!(set.remove(z, entry(5)));
        assert!(set.remove(y, entry(4)));
        assert_all_free(&set);
    });
}

/// Three threads insert and remove concurrently, sharing two recycled indices
/// and growing the set: nobody's entry is overwritten, no index is lost.
#[test]
fn loom_list_concurrent_insert_remove() {
    loom::model(|| {
        let set = Arc::new(Shard::new());
        let a = set.insert(entry(1));
        let b = set.insert(entry(2));
        assert!(set.remove(a, entry(1)));
        assert!(set.remove(b, entry(2)));

        let threads: Vec<_> = (0..2)
            .map(|i| {
                let set = set.clone();
                thread::spawn(move || {
                    let e = entry(10 + i);
                    let index = set.insert(e);
                    assert!(set.remove(index, e), "entry {i} was overwritten");
                })
            })
            .collect();
        let index = set.insert(entry(20));
        assert!(set.remove(index, entry(20)), "entry was overwritten");
        for t in threads {
            t.join().unwrap();
        }
        assert_all_free(&set);
    });
}

/// Joins the inserters of entries 1 and 2, each of which says whether it took
/// its entry back: each entry was drained or taken back, never both or neither.
fn assert_drained_or_taken_back(drained: &[usize], inserters: Vec<thread::JoinHandle<bool>>) {
    for (n, inserter) in [1, 2].into_iter().zip(inserters) {
        let taken_back = inserter.join().unwrap();
        assert!(
            drained.contains(&n) != taken_back,
            "entry {n} handled twice or lost"
        );
    }
}

/// Two inserters (entries 1 and 2) put their entry in with `insert` and take it
/// back if they then see the cancel, while this thread cancels `done` and
/// drains with `drain`: each entry is drained or taken back, never both or
/// neither. Returns when all is joined.
fn two_inserters_vs_cancel<S: Send + Sync + 'static>(
    done: &Arc<AtomicUsize>,
    set: &Arc<S>,
    insert: fn(&S, *mut ()) -> u32,
    remove: fn(&S, u32, *mut ()) -> bool,
    drain: impl FnOnce(&S, &mut dyn FnMut(*mut ())),
) {
    let inserters: Vec<_> = [1usize, 2]
        .into_iter()
        .map(|n| {
            let (done, set) = (done.clone(), set.clone());
            thread::spawn(move || {
                let index = insert(&set, entry(n));
                // The registrant's SeqCst state load.
                if done.load(Ordering::SeqCst) == 0 {
                    return false;
                }
                remove(&set, index, entry(n))
            })
        })
        .collect();
    // The canceler's SeqCst state CAS, then the drain.
    assert_eq!(done.swap(1, Ordering::SeqCst), 0);
    crate::sync::dekker_point();
    let mut drained = Vec::new();
    drain(set, &mut |e| drained.push(e.addr() / 8));
    assert_drained_or_taken_back(&drained, inserters);
}

/// A node's state word and child set, as far as the `list` protocol sees them.
struct Owner {
    done: AtomicUsize,
    set: Shard,
}

/// Insert vs cancel (the Dekker pair), while the insert allocates a new segment:
/// the entry is handled exactly once, by the canceler's drain or by the inserter
/// taking it back, and the inserter takes it back only if it saw the cancel.
#[test]
fn loom_list_insert_vs_drain() {
    loom::model(|| {
        let owner = Arc::new(Owner {
            done: AtomicUsize::new(0),
            set: Shard::new(),
        });
        // Fill the first segment, so the racing insert allocates the second one.
        for n in 0..4 {
            owner.set.insert(entry(100 + n));
        }

        let inserter = owner.clone();
        let t = thread::spawn(move || {
            let index = inserter.set.insert(entry(1));
            // The registrant's SeqCst state load.
            if inserter.done.load(Ordering::SeqCst) == 0 {
                return false;
            }
            inserter.set.remove(index, entry(1))
        });

        // The canceler's SeqCst state CAS, then the drain.
        assert_eq!(owner.done.swap(1, Ordering::SeqCst), 0);
        crate::sync::dekker_point();
        let mut drained = Vec::new();
        owner
            .set
            .drain(&mut |e: *mut ()| drained.push(e.addr() / 8));
        let taken_back = t.join().unwrap();

        let found = drained.contains(&1);
        assert!(found != taken_back, "entry handled twice or lost");
        drained.retain(|&n| n != 1);
        drained.sort_unstable();
        assert_eq!(drained, [100, 101, 102, 103]);
        assert_eq!(owner.set.len(), 0);
    });
}

/// Segments allocated out of order: one inserter takes the last index of segment
/// 1 and another the first of segment 2, and either may publish its segment
/// first, while a drain runs. The drain must visit every segment (not stop at the
/// first one still unallocated): each entry is drained or taken back, never
/// neither. (Indices 4..11 are handed to nobody, so that two threads reach
/// segments 1 and 2.)
#[test]
fn loom_list_out_of_order_segments_vs_drain() {
    loom::model(|| {
        let set = Arc::new(Shard::new());
        for n in 0..4 {
            set.insert(entry(100 + n));
        }
        set.skip_indices(7);
        two_inserters_vs_cancel(
            &Arc::new(AtomicUsize::new(0)),
            &set,
            Shard::insert,
            Shard::remove,
            |set, each| set.drain(each),
        );
        assert_eq!(set.len(), 0, "the standing entries were drained too");
    });
}

/// Remove (a child dropped, a callback stopped) vs drain: exactly one side takes
/// the entry, and its index goes back on the free stack only if the remover won.
#[test]
fn loom_list_remove_vs_drain() {
    loom::model(|| {
        let owner = Arc::new(Owner {
            done: AtomicUsize::new(0),
            set: Shard::new(),
        });
        let index = owner.set.insert(entry(1));
        let other = owner.set.insert(entry(2));

        let remover = owner.clone();
        let t = thread::spawn(move || remover.set.remove(index, entry(1)));

        owner.done.store(1, Ordering::SeqCst);
        crate::sync::dekker_point();
        let mut drained = Vec::new();
        owner
            .set
            .drain(&mut |e: *mut ()| drained.push(e.addr() / 8));
        let removed = t.join().unwrap();

        assert!(drained.contains(&1) != removed, "entry taken twice or lost");
        assert!(drained.contains(&2));
        assert_eq!(owner.set.len(), 0);
        let (free, _) = owner.set.free_indices();
        assert_eq!(free, if removed { vec![index] } else { vec![] });
        assert!(!free.contains(&other));
    });
}

/// What an inserter that races a cancel ends with: the slot it used, and whether
/// it took its entry back (it saw the cancel and won the slot).
fn insert_then_recheck(owner: &Owner, e: *mut ()) -> (u32, bool) {
    let index = owner.set.insert(e);
    // The registrant's SeqCst state load.
    if owner.done.load(Ordering::SeqCst) == 0 {
        return (index, false);
    }
    (index, owner.set.remove(index, e))
}

/// Three inserters race a drain while the set grows into its third segment:
/// segments 0 and 1 hold 11 entries (one slot of segment 1 is left), so of the
/// racing inserts one takes that last slot and the other two race to allocate
/// segment 2 (the loser of that CAS frees its copy) while the drain may already
/// be scanning. Every entry is handled exactly once: by the drain, or by its
/// inserter taking it back, and only an inserter that saw the cancel takes it
/// back (so a drain that misses an entry in a segment it found null, or that was
/// allocated late, fails the model). Entries present at the same time never share
/// a slot.
///
/// What this cannot reach: segment 2 allocated while segment 1 is still null
/// (the drain must skip the gap, not stop at it). That needs all eight inserters
/// of segment 1 stalled before their segment CAS, more threads than loom runs.
#[test]
fn loom_list_segment_growth_vs_drain() {
    loom::model(|| {
        let owner = Arc::new(Owner {
            done: AtomicUsize::new(0),
            set: Shard::new(),
        });
        // Segment 0 (4 slots), then 7 of segment 1's 8 slots.
        for n in 0..11 {
            assert_eq!(owner.set.insert(entry(100 + n)), n as u32);
        }

        let inserters: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|n| {
                let owner = owner.clone();
                thread::spawn(move || insert_then_recheck(&owner, entry(n)))
            })
            .collect();

        // The canceler's SeqCst state CAS, then the drain.
        assert_eq!(owner.done.swap(1, Ordering::SeqCst), 0);
        crate::sync::dekker_point();
        let mut drained = Vec::new();
        owner
            .set
            .drain(&mut |e: *mut ()| drained.push(e.addr() / 8));
        let outcomes: Vec<_> = inserters.into_iter().map(|t| t.join().unwrap()).collect();

        for (n, &(_, taken_back)) in (1..).zip(&outcomes) {
            let found = drained.contains(&n);
            assert!(found != taken_back, "entry {n} handled twice or lost");
        }
        // Entries the drain found were all in the set at once: distinct slots.
        let mut kept: Vec<u32> = outcomes
            .iter()
            .filter(|&&(_, taken_back)| !taken_back)
            .map(|&(index, _)| index)
            .collect();
        kept.sort_unstable();
        kept.dedup();
        assert_eq!(
            kept.len(),
            outcomes.iter().filter(|&&(_, back)| !back).count(),
            "two entries shared a slot"
        );
        assert!(outcomes.iter().all(|&(index, _)| (11..14).contains(&index)));
        drained.retain(|&n| n >= 100);
        drained.sort_unstable();
        assert_eq!(drained, (100..111).collect::<Vec<_>>());
        assert_eq!(owner.set.len(), 0);
    });
}

/// A sharded set: two inserters put entries into two different shards, each of
/// which the inserter allocates itself, while a drain runs, and a remover
/// takes an entry out of a third shard that exists already. Every entry is
/// handled exactly once (drained, or taken back by an inserter that saw the
/// cancel, or removed), whichever shard it is in and whenever that shard was
/// published.
#[test]
fn loom_list_shards_vs_drain() {
    struct Sharded {
        done: AtomicUsize,
        set: ChildSet,
    }
    loom::model(|| {
        let owner = Arc::new(Sharded {
            done: AtomicUsize::new(0),
            set: ChildSet::new(),
        });
        let standing = owner.set.insert_in(3, entry(100));
        let removable = owner.set.insert_in(3, entry(101));

        let inserters: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|n| {
                let owner = owner.clone();
                thread::spawn(move || {
                    let index = owner.set.insert_in(n, entry(n));
                    // The registrant's SeqCst state load.
                    if owner.done.load(Ordering::SeqCst) == 0 {
                        return false;
                    }
                    owner.set.remove(index, entry(n))
                })
            })
            .collect();
        let remover = {
            let owner = owner.clone();
            thread::spawn(move || owner.set.remove(removable, entry(101)))
        };

        // The canceler's SeqCst state CAS, then the drain.
        assert_eq!(owner.done.swap(1, Ordering::SeqCst), 0);
        crate::sync::dekker_point();
        let mut drained = Vec::new();
        owner
            .set
            .drain(&mut |e: *mut ()| drained.push(e.addr() / 8));
        assert_drained_or_taken_back(&drained, inserters);
        let removed = remover.join().unwrap();
        assert!(
            drained.contains(&101) != removed,
            "entry 101 taken twice or lost"
        );
        assert!(drained.contains(&100));
        assert!(!owner.set.remove(standing, entry(100)), "drained twice");
        assert_eq!(owner.set.len(), 0);
    });
}

/// Two inserters race to install the same fresh shard (one `install` CAS
/// loses and frees its copy) while the owner is canceled: both entries land in
/// the one shard that was installed, and each is handled exactly once, drained
/// or taken back.
#[test]
fn loom_list_racing_shard_install_vs_drain() {
    loom::model(|| {
        let set = Arc::new(ChildSet::new());
        two_inserters_vs_cancel(
            &Arc::new(AtomicUsize::new(0)),
            &set,
            |set, e| set.insert_in(1, e),
            ChildSet::remove,
            |set, each| set.drain(each),
        );
        assert_eq!(set.len(), 0);
    });
}
