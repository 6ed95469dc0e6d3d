//! Loom models of deadline nodes (`tree::deadline`): every key a backend hands
//! out is disarmed exactly once, whoever ends the context and whenever; and the
//! exact-deadline read, which closes an expired node with `UNCLAIMED` and leaves
//! the walk (callbacks, disarming) to exactly one canceler, never to the reader.

use super::{model, model_with_preemptions};
use crate::sync::{AtomicU64, Ordering};
use crate::{AfterFunc, CancelFunc, Context, Error, Expiry, Timer, TimerKey};
use loom::future::block_on;
use loom::sync::Mutex;
use loom::sync::atomic::AtomicBool;
use loom::thread::{self, ThreadId};
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A timer backend that records what the tree asks of it and never fires by itself.
struct Recorder {
    now: Instant,
    /// Once set, the clock reads an hour past every deadline in these models.
    expired: AtomicBool,
    next_key: AtomicU64,
    armed: Mutex<Vec<(u64, Expiry)>>,
    disarmed: Mutex<Vec<u64>>,
    /// The thread of each `disarm` call.
    disarmed_on: Mutex<Vec<ThreadId>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Timer for Recorder {
    fn now(&self) -> Instant {
        if self.expired.load(Ordering::SeqCst) {
            self.now + Duration::from_secs(3 * 3600)
        } else {
            self.now
        }
    }

    fn arm(&self, _deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.armed.lock().unwrap().push((key, expiry));
        Some(TimerKey::new(NonZeroU64::new(key).unwrap()))
    }

    fn disarm(&self, key: TimerKey) {
        self.disarmed.lock().unwrap().push(key.get().get());
        self.disarmed_on
            .lock()
            .unwrap()
            .push(thread::current().id());
    }
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            now: Instant::now(),
            expired: AtomicBool::new(false),
            next_key: AtomicU64::new(1),
            armed: Mutex::new(Vec::new()),
            disarmed: Mutex::new(Vec::new()),
            disarmed_on: Mutex::new(Vec::new()),
        })
    }

    fn deadline(&self) -> Instant {
        self.now + Duration::from_secs(3600)
    }

    /// Takes the expiry of the one armed timer, as a backend does when it fires.
    fn take_expiry(&self) -> (u64, Expiry) {
        let mut armed = self.armed.lock().unwrap();
        assert_eq!(armed.len(), 1);
        armed.pop().unwrap()
    }

    /// Asserts that every key in `keys` was disarmed exactly once, and no other.
    fn assert_disarmed_once(&self, mut keys: Vec<u64>) {
        let mut disarmed = self.disarmed.lock().unwrap().clone();
        disarmed.sort_unstable();
        keys.sort_unstable();
        assert_eq!(disarmed, keys, "keys disarmed twice, never, or unknown");
    }

    /// Asserts that the backend was never asked to disarm on `thread`.
    fn assert_not_on(&self, thread: ThreadId) {
        assert!(
            !self.disarmed_on.lock().unwrap().contains(&thread),
            "disarm ran on a reader's thread"
        );
    }

    fn armed_keys(&self) -> Vec<u64> {
        self.armed
            .lock()
            .unwrap()
            .iter()
            .map(|(key, _)| *key)
            .collect()
    }
}

/// A deadline child arms its timer while its parent is canceled. The cancel may
/// run before the key is stored: then the arming side sees the done word and
/// disarms. Either way the key is disarmed exactly once (or never armed).
#[test]
fn loom_timer_arm_vs_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (parent, cancel_parent) = root.with_cancel();
        let handle = parent.clone();
        let deadline = timer.deadline();
        let t = thread::spawn(move || handle.with_deadline(deadline));
        cancel_parent.cancel();
        let (ctx, cancel) = t.join().unwrap();

        assert_eq!(ctx.err(), Some(Error::Canceled));
        timer.assert_disarmed_once(timer.armed_keys());
        drop((ctx, cancel, parent, root));
        // The backend still holds the expiries; they keep only weak references.
        timer.armed.lock().unwrap().clear();
    });
}

/// The timer fires while the context is canceled: the first cancel wins, and the
/// key is disarmed exactly once (by whichever cancel finishes the node).
#[test]
fn loom_timer_fire_vs_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let (key, expiry) = timer.take_expiry();
        let t = thread::spawn(move || expiry.fire());
        cancel.cancel();
        t.join().unwrap();

        let err = ctx.err().expect("not done");
        assert!(matches!(err, Error::Canceled | Error::DeadlineExceeded));
        assert_eq!(ctx.err(), Some(err));
        timer.assert_disarmed_once(vec![key]);
    });
}

/// A deadline child's timer fires while its parent is canceled. Both walks
/// reach the child: the expiry's walk closes it and takes it out of the parent's
/// set, the parent's walk drains that set (a detach that finds its entry taken
/// waits until the parent's walk let go of it). The first reason sticks, the key
/// is disarmed exactly once, and the parent ends with no live children.
/// `drop_child` also drops the child's cancel function and last handle on the
/// firing thread right after the fire, while the parent's walk may still hold
/// the child's entry.
fn fire_vs_parent_cancel(drop_child: bool) {
    model(move || {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (parent, cancel_parent) = root.with_cancel();
        let (child, cancel) = parent.with_deadline(timer.deadline());
        let (key, expiry) = timer.take_expiry();
        let (kept, fired) = if drop_child {
            let t = thread::spawn(move || {
                expiry.fire();
                drop((child, cancel));
            });
            (None, t)
        } else {
            (Some((child, cancel)), thread::spawn(move || expiry.fire()))
        };
        cancel_parent.cancel();
        // A returned cancel means a done subtree, whoever reached the child.
        if let Some((child, _)) = &kept {
            let err = child.err().expect("the parent's cancel returned early");
            assert!(matches!(err, Error::Canceled | Error::DeadlineExceeded));
        }
        fired.join().unwrap();

        assert_eq!(parent.err(), Some(Error::Canceled));
        assert_eq!(parent.live_children(), 0);
        timer.assert_disarmed_once(vec![key]);
        drop((kept, parent, root));
    });
}

#[test]
fn loom_timer_fire_vs_parent_cancel() {
    fire_vs_parent_cancel(false);
}

#[test]
fn loom_timer_fire_then_drop_vs_parent_cancel() {
    fire_vs_parent_cancel(true);
}

/// The last handles of a deadline context (the context and a `Canceler`,
/// which cancels nothing when dropped) go while its timer fires: the key is
/// disarmed exactly once, by the expiry's walk if it upgraded first, else by
/// the node's drop.
#[test]
fn loom_timer_last_handle_gone_vs_fire() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let canceler = cancel.into_canceler();
        let (key, expiry) = timer.take_expiry();
        let t = thread::spawn(move || expiry.fire());
        drop((ctx, canceler));
        t.join().unwrap();
        timer.assert_disarmed_once(vec![key]);
    });
}

/// The same, while the parent is canceled: the parent's walk (which holds the
/// child while it walks it) or the child's drop disarms, exactly once.
#[test]
fn loom_timer_last_handle_gone_vs_parent_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (parent, cancel_parent) = root.with_cancel();
        let (child, cancel) = parent.with_deadline(timer.deadline());
        let canceler = cancel.into_canceler();
        let t = thread::spawn(move || drop((child, canceler)));
        cancel_parent.cancel();
        t.join().unwrap();
        timer.assert_disarmed_once(timer.armed_keys());
        assert_eq!(parent.live_children(), 0);
        drop((parent, root));
        timer.armed.lock().unwrap().clear();
    });
}

/// The same, after the backend dropped the expiry unfired, so that the
/// child's slot holds the only weak reference besides its handles': the
/// parent's walk pins the child (a deadline node is walked under a strong
/// reference of its own) while its last handle goes. The last release may
/// skip its read-modify-write only when no walk holds the child; one that
/// decided on counts read before the walk's pin would free the node under
/// the walk.
#[test]
fn loom_timer_last_handle_gone_vs_parent_walk_pinning_it() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (parent, cancel_parent) = root.with_cancel();
        let (child, cancel) = parent.with_deadline(timer.deadline());
        let canceler = cancel.into_canceler();
        let (key, expiry) = timer.take_expiry();
        drop(expiry);
        let t = thread::spawn(move || drop((child, canceler)));
        cancel_parent.cancel();
        t.join().unwrap();
        timer.assert_disarmed_once(vec![key]);
        assert_eq!(parent.live_children(), 0);
        drop((parent, root));
    });
}

/// The exact-deadline read on the deadline node itself: a reader finds the
/// deadline passed (by the timer's clock, before the timer fired) while the
/// node's cancel function runs. The read closes the node with `UNCLAIMED` and
/// walks nothing; the cancel function closes it or claims it and walks. The first
/// reason sticks (the reader's answer is what the context reports afterwards), the
/// key is disarmed exactly once, and never on the reader's thread.
#[test]
fn loom_timer_exact_deadline_vs_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let key = timer.armed_keys();
        timer.expired.store(true, Ordering::SeqCst);
        let reader = ctx.clone();
        let t = thread::spawn(move || (reader.err(), thread::current().id()));
        cancel.cancel();
        let (seen, reader_id) = t.join().unwrap();
        let seen = seen.expect("the reader saw a live context");

        assert_eq!(ctx.err(), Some(seen));
        timer.assert_disarmed_once(key);
        timer.assert_not_on(reader_id);
        drop((ctx, root));
        timer.armed.lock().unwrap().clear();
    });
}

/// An `after_func` callback that records the thread of each of its runs.
fn recording_callback(ctx: &Context) -> (std::sync::Arc<Mutex<Vec<ThreadId>>>, AfterFunc) {
    let runs = std::sync::Arc::new(Mutex::new(Vec::new()));
    let handle = runs.clone();
    let registration = ctx.after_func(move || handle.lock().unwrap().push(thread::current().id()));
    (runs, registration)
}

/// A deadline node `deadline` with a child `child` holding an `after_func`
/// callback, its timer armed and (after [`Expired::new`]) its clock past the
/// deadline; nobody has read it yet, so nothing is closed.
struct Expired {
    timer: Arc<Recorder>,
    root: Context,
    deadline: Context,
    /// Taken by a model that cancels the deadline node explicitly.
    cancel: Option<CancelFunc>,
    child: Context,
    cancel_child: CancelFunc,
    runs: std::sync::Arc<Mutex<Vec<ThreadId>>>,
    registration: AfterFunc,
}

impl Expired {
    fn new() -> Expired {
        let expired = Expired::armed();
        expired.timer.expired.store(true, Ordering::SeqCst);
        expired
    }

    /// The same, with the clock still before the deadline.
    fn armed() -> Expired {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (deadline, cancel) = root.with_deadline(timer.deadline());
        let (child, cancel_child) = deadline.with_cancel();
        // Registered while the clock is still early: its own exact read finds
        // nothing to close.
        let (runs, registration) = recording_callback(&child);
        Expired {
            timer,
            root,
            deadline,
            cancel: Some(cancel),
            child,
            cancel_child,
            runs,
            registration,
        }
    }

    /// Cancels the deadline node through its cancel function.
    fn cancel(&mut self) {
        self.cancel.take().expect("canceled twice").cancel();
    }

    /// A reader of the child, on a thread of its own: its answer and its thread.
    fn spawn_reader(&self) -> thread::JoinHandle<(Option<Error>, ThreadId)> {
        let reader = self.child.clone();
        thread::spawn(move || (reader.err(), thread::current().id()))
    }

    /// [`spawn_reader`](Self::spawn_reader), and a flag the reader sets
    /// (`Release`) once its read returned, for a model to order its next step
    /// after the whole read (with an `Acquire` load), or merely to let loom
    /// run the whole read before that step (loom's partial-order reduction
    /// relates an access only to the last one on the same atomic, and a read's
    /// close is a load then a CAS: tokio-rs/loom#166, #392).
    fn spawn_flagged_reader(
        &self,
    ) -> (
        thread::JoinHandle<(Option<Error>, ThreadId)>,
        std::sync::Arc<AtomicBool>,
    ) {
        let read = std::sync::Arc::new(AtomicBool::new(false));
        let (child, flag) = (self.child.clone(), read.clone());
        let reader = thread::spawn(move || {
            let seen = child.err();
            flag.store(true, Ordering::Release);
            (seen, thread::current().id())
        });
        (reader, read)
    }

    /// The threads the callback ran on.
    fn runs(&self) -> Vec<ThreadId> {
        self.runs.lock().unwrap().clone()
    }

    /// Checks the end state once everyone is finished and returns the error the
    /// subtree reports: the reader's answer stuck, the child agrees with the
    /// deadline node, exactly one walk ran the callback (never on the reader's
    /// thread), and the key was disarmed exactly once (never on the reader's
    /// thread). Then drops everything, which adds nothing (the model checks that
    /// every node is freed).
    fn finish(self, seen: Option<Error>, reader_id: ThreadId) -> Error {
        let seen = seen.expect("the reader saw a live context after the deadline");
        assert_eq!(
            self.child.err(),
            Some(seen),
            "the reader's answer did not stick"
        );
        assert_eq!(self.deadline.err(), Some(seen));
        let runs = self.runs();
        assert_eq!(runs.len(), 1, "the callback ran {} times", runs.len());
        assert_ne!(runs[0], reader_id, "a read ran a callback");
        assert!(!self.registration.stop());
        self.timer.assert_disarmed_once(vec![1]);
        self.timer.assert_not_on(reader_id);
        assert_eq!(self.deadline.live_children(), 0);
        assert_eq!(self.child.live_children(), 0);
        let Expired {
            timer,
            root,
            deadline,
            cancel,
            child,
            cancel_child,
            runs,
            registration,
        } = self;
        // A cancel function dropped now finds the subtree complete: nothing more
        // runs or is disarmed.
        drop((registration, cancel_child, child, cancel, deadline, root));
        assert_eq!(runs.lock().unwrap().len(), 1);
        timer.assert_disarmed_once(vec![1]);
        // The backend still holds the expiry (if it did not fire); it keeps only
        // a weak reference.
        timer.armed.lock().unwrap().clear();
        seen
    }
}

/// An exact-deadline read of a child races the deadline node's cancel function.
/// The read may close the deadline node and the child with `UNCLAIMED` (before,
/// between or after the cancel's close and walk) but walks nothing: the cancel
/// closes or claims each node and walks the subtree, once. So when the cancel
/// returns, the child is done and the callback has run, on the canceling
/// thread; the reason that reached the child first is the one everyone reports.
#[test]
fn loom_timer_unclaimed_read_vs_cancel() {
    model(|| {
        let mut expired = Expired::new();
        let reader = expired.spawn_reader();
        expired.cancel();
        assert!(
            expired.child.is_done(),
            "a cancel returned before the subtree was done"
        );
        assert_eq!(
            expired.runs(),
            [thread::current().id()],
            "the cancel returned before its callback ran"
        );
        let (seen, reader_id) = reader.join().unwrap();
        expired.finish(seen, reader_id);
    });
}

/// An exact-deadline read of a child races the timer's expiry: the read closes
/// with `UNCLAIMED`, the expiry closes or claims and walks. One walk runs the
/// callback once and disarms the key once; both report `DeadlineExceeded`. The
/// cancel function called afterwards finds the node complete and adds nothing.
#[test]
fn loom_timer_unclaimed_read_vs_fire() {
    model(|| {
        let expired = Expired::new();
        let (_, expiry) = expired.timer.take_expiry();
        let reader = expired.spawn_reader();
        expiry.fire();
        // Under loom the runner runs the expiry's jobs inline, so its walk and
        // its user code are finished here.
        assert!(expired.child.is_done());
        let (seen, reader_id) = reader.join().unwrap();
        let err = expired.finish(seen, reader_id);
        assert_eq!(err, Error::DeadlineExceeded);
    });
}

/// Three parties: an exact-deadline read, the timer's expiry and the cancel
/// function. Reads never walk, so one of the two cancels walks the subtree (the
/// one that closed the deadline node, or claimed it after the read closed it):
/// the callback runs once and the key is disarmed once, neither on the reader's
/// thread; the cancel function's return still means a done subtree.
#[test]
fn loom_timer_unclaimed_read_vs_fire_vs_cancel() {
    model(|| {
        let mut expired = Expired::new();
        let (_, expiry) = expired.timer.take_expiry();
        let reader = expired.spawn_reader();
        let firer = thread::spawn(move || expiry.fire());
        expired.cancel();
        assert!(
            expired.child.is_done(),
            "a cancel returned before the subtree was done"
        );
        firer.join().unwrap();
        let (seen, reader_id) = reader.join().unwrap();
        expired.finish(seen, reader_id);
    });
}

/// A backend may ask [`Expiry::is_done`] whether firing would do anything and
/// drop the expiry unfired if not (the built-in timer's sweep does). An
/// exact-deadline read that closed the node with `UNCLAIMED` walked nothing, so
/// the expiry still has a walk to do: `is_done` must not say done then, or the
/// callback below the deadline (and waiters further down, whom only a walk
/// wakes) wait for the cancel function instead of the deadline. Here the backend
/// follows that contract while a reader races it; afterwards, before the cancel
/// function is touched, the subtree must have been walked exactly once.
///
/// The backend loads (and ignores) the reader's flag just before it asks:
/// without that pair, loom never runs the whole read before the backend's
/// plain load (see [`Expired::spawn_flagged_reader`]).
#[test]
fn loom_timer_expiry_is_done_vs_unclaimed_read() {
    model(|| {
        let expired = Expired::new();
        let (_, expiry) = expired.timer.take_expiry();
        let (reader, read) = expired.spawn_flagged_reader();
        let _ = read.load(Ordering::Relaxed);
        if expiry.is_done() {
            // "Firing would do nothing": the backend forgets it.
            drop(expiry);
        } else {
            expiry.fire();
        }
        let (seen, reader_id) = reader.join().unwrap();
        expired.finish(seen, reader_id);
    });
}

/// A backend that breaks the contract drops the expiry unfired (it took the
/// context's being done as its evidence) while a read of the child races it.
/// A drop that comes after the read (the reader's `Release` store, seen by the
/// backend's `Acquire` load, orders them) finds the node closed `UNCLAIMED`
/// and fires the expiry itself (on the runner: inline under loom), so the
/// subtree is walked before the cancel function is touched. A drop before the
/// read does nothing, and the cancel function walks. Either way: one walk, one
/// run of the callback, one disarm, none on the reader's thread.
#[test]
fn loom_timer_expiry_dropped_unfired_vs_unclaimed_read() {
    model(|| {
        let mut expired = Expired::new();
        let (_, expiry) = expired.timer.take_expiry();
        let (reader, read) = expired.spawn_flagged_reader();
        let after_the_read = read.load(Ordering::Acquire);
        drop(expiry);
        if after_the_read {
            assert_eq!(
                expired.runs().len(),
                1,
                "an expiry dropped after the read left the subtree unwalked"
            );
        }
        let (seen, reader_id) = reader.join().unwrap();
        expired.cancel();
        expired.finish(seen, reader_id);
    });
}

/// The same drop, with the read and the cancel function at once: the drop's
/// fire and the cancel may both find the node closed by the read, and only one
/// of them claims it. One walk, one run, one disarm, and the cancel function's
/// return still means a done subtree.
#[test]
fn loom_timer_expiry_dropped_unfired_vs_unclaimed_read_vs_cancel() {
    model(|| {
        let mut expired = Expired::new();
        let (_, expiry) = expired.timer.take_expiry();
        let reader = expired.spawn_reader();
        let dropper = thread::spawn(move || drop(expiry));
        expired.cancel();
        assert!(
            expired.child.is_done(),
            "a cancel returned before the subtree was done"
        );
        dropper.join().unwrap();
        let (seen, reader_id) = reader.join().unwrap();
        expired.finish(seen, reader_id);
    });
}

/// A waiter on the child goes to sleep while the deadline passes; a read then
/// closes the deadline node and the child with `UNCLAIMED` (waking the waiters
/// already parked there, but walking nothing), and the timer's expiry closes or
/// claims and walks (waking whoever the walk finds flagged: the claim keeps the
/// `WAITERS` bit). However the three interleave, the waiter wakes up; a lost
/// wake-up leaves it blocked, which loom reports as a deadlock. The waiter may
/// also find the deadline passed itself before it sleeps: then it is a reader
/// too. Neither the reader nor the waiter runs the callback or a disarm.
#[test]
fn loom_timer_waiter_vs_unclaimed_read_then_fire() {
    model(|| {
        let expired = Expired::armed();
        let (_, expiry) = expired.timer.take_expiry();
        let waiter = {
            let child = expired.child.clone();
            thread::spawn(move || {
                block_on(child.done());
                assert!(child.is_done());
                thread::current().id()
            })
        };
        expired.timer.expired.store(true, Ordering::SeqCst);
        let reader = expired.spawn_reader();
        expiry.fire();
        let waiter_id = waiter.join().unwrap();
        let (seen, reader_id) = reader.join().unwrap();
        // The waiter's own reads never run user code either.
        assert!(!expired.runs().contains(&waiter_id));
        expired.timer.assert_not_on(waiter_id);
        expired.finish(seen, reader_id);
    });
}

/// An exact-deadline read of a grandchild of the deadline node races the
/// cancel (with a cause of its own) of the context in between. The read closes
/// from the top down, each context with the reason of the one above it, and
/// the cancel closes the middle one or finds it closed: whichever reaches the
/// middle context first decides for it and for everything below it. So the
/// middle context and the one read always end with the same reason, and the
/// reader saw that one.
#[test]
fn loom_timer_read_through_a_middle_context_vs_its_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (deadline, _cancel) = root.with_deadline(timer.deadline());
        let (middle, cancel_middle) = deadline.with_cancel_cause();
        let (read, _cancel_read) = middle.with_cancel();
        timer.expired.store(true, Ordering::SeqCst);
        let reader = {
            let read = read.clone();
            thread::spawn(move || (read.err(), read.cause().map(|c| c.to_string())))
        };
        cancel_middle.cancel(crate::Cause::msg("stop"));
        let seen = reader.join().unwrap();
        let reason = |ctx: &Context| (ctx.err(), ctx.cause().map(|c| c.to_string()));
        assert_eq!(
            reason(&middle),
            reason(&read),
            "the middle and the read disagree"
        );
        assert_eq!(seen, reason(&read), "the reader's answer changed");
        assert_eq!(deadline.err(), Some(Error::DeadlineExceeded));
        timer.armed.lock().unwrap().clear();
    });
}

/// The read of the model above, through a merge node: the context read is
/// derived from a merge of the deadline's branch (whose middle context is
/// canceled with a cause of its own, racing the read) and a live parent on
/// another branch. The read finds its way up through the merge's parent whose
/// deadline it is, and closes that branch top down: the merge and the context
/// read end with the middle context's reason, whichever of the read and the
/// cancel reached the middle context first, and the reader saw that reason.
#[test]
fn loom_timer_read_through_a_merge_vs_the_cancel_of_its_parent() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (deadline, _cancel) = root.with_deadline(timer.deadline());
        let (middle, cancel_middle) = deadline.with_cancel_cause();
        let (other, _cancel_other) = root.with_cancel();
        let (merged, _cancel_merged) = Context::with_cancel_any(&[middle.clone(), other.clone()]);
        let (read, _cancel_read) = merged.with_cancel();
        timer.expired.store(true, Ordering::SeqCst);
        let reader = {
            let read = read.clone();
            thread::spawn(move || (read.err(), read.cause().map(|c| c.to_string())))
        };
        cancel_middle.cancel(crate::Cause::msg("stop"));
        let seen = reader.join().unwrap();
        let reason = |ctx: &Context| (ctx.err(), ctx.cause().map(|c| c.to_string()));
        assert_eq!(
            reason(&middle),
            reason(&merged),
            "the middle and the merge disagree"
        );
        assert_eq!(
            reason(&merged),
            reason(&read),
            "the merge and the read disagree"
        );
        assert_eq!(seen, reason(&read), "the reader's answer changed");
        assert_eq!(deadline.err(), Some(Error::DeadlineExceeded));
        assert_eq!(other.err(), None, "the other branch is not the deadline's");
        timer.armed.lock().unwrap().clear();
    });
}

/// A cancel of a context whose deadline passed (the timer late) races a read
/// of it: the cancel reads the context exactly before it closes it, so
/// whichever comes first, the context ends with the deadline's error and
/// cause, the cancel reports that it ended nothing, and the reader saw the
/// same.
#[test]
fn loom_timer_cancel_after_the_deadline_vs_a_read() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (deadline, cancel) =
            root.with_deadline_cause(timer.deadline(), crate::Cause::msg("late"));
        let (child, _cancel_child) = deadline.with_cancel();
        timer.expired.store(true, Ordering::SeqCst);
        let reader = {
            let child = child.clone();
            thread::spawn(move || (child.err(), child.cause().map(|c| c.to_string())))
        };
        let ended = cancel
            .into_canceler()
            .cancel_with_cause(crate::Cause::msg("stop"));
        let seen = reader.join().unwrap();
        let expected = (Some(Error::DeadlineExceeded), Some("late".to_owned()));
        assert!(!ended, "the deadline came first");
        assert_eq!(seen, expected);
        assert_eq!(
            (deadline.err(), deadline.cause().map(|c| c.to_string())),
            expected
        );
        assert_eq!(
            (child.err(), child.cause().map(|c| c.to_string())),
            expected
        );
        timer.armed.lock().unwrap().clear();
    });
}

/// `AfterFunc::stop` called after the deadline passed, while the timer is
/// late, races the timer's expiry: stop's exact read finds the context done,
/// so whichever of the two claims the callback hands it over, it runs once,
/// and stop reports false (Go: once `Err` is non-nil, `stop` is false).
#[test]
fn loom_timer_stop_after_the_deadline_vs_fire() {
    model(|| {
        let expired = Expired::new();
        let (_, expiry) = expired.timer.take_expiry();
        let registration = expired.registration;
        let stopper = thread::spawn(move || registration.stop());
        expiry.fire();
        assert!(
            !stopper.join().unwrap(),
            "stop prevented a callback after the deadline passed"
        );
        // Under loom the runner runs jobs inline: whoever claimed it ran it.
        assert_eq!(
            expired.runs.lock().unwrap().len(),
            1,
            "the callback ran twice or never"
        );
        expired.timer.assert_disarmed_once(vec![1]);
        expired.timer.armed.lock().unwrap().clear();
    });
}

/// A callback becomes the first registrant of a deadline node while an exact
/// read finds the deadline passed and closes the node (`UNCLAIMED`); then the
/// expiry fires and walks. The callback runs exactly once (by the walk, or by
/// its registration, which saw the close), and a later `stop` fails.
#[test]
fn loom_timer_first_callback_vs_unclaimed_read_then_fire() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let runs = Arc::new(crate::sync::AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = ctx.clone();
        let t = thread::spawn(move || {
            let registration = handle.after_func(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            });
            drop(handle);
            registration
        });
        timer.expired.store(true, Ordering::SeqCst);
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        let (_, expiry) = timer.take_expiry();
        expiry.fire();
        let registration = t.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!registration.stop());
        assert_eq!(ctx.live_children(), 0);
        drop((registration, cancel, ctx, root));
        timer.armed.lock().unwrap().clear();
    });
}

/// A first child registers with a deadline node while an exact read closes it
/// (`UNCLAIMED`); then every handle of the node goes without anyone walking
/// it. The child still ends with the deadline's error.
#[test]
fn loom_timer_first_child_vs_unclaimed_read_then_drop() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let handle = ctx.clone();
        let t = thread::spawn(move || {
            let (child, cancel_child) = handle.with_cancel();
            drop(handle);
            (child, cancel_child)
        });
        timer.expired.store(true, Ordering::SeqCst);
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        let (child, cancel_child) = t.join().unwrap();
        drop((cancel, ctx));
        timer.armed.lock().unwrap().clear();
        assert_eq!(child.err(), Some(Error::DeadlineExceeded));
        drop((child, cancel_child, root));
    });
}

/// `arm_vs_cancel` with the sides swapped: the deadline child is armed here
/// while another thread cancels its parent. The walk's `take_key` and the
/// arm's re-check `take_key` may both find the key: the swap lets one take
/// it. (With the cancel on the spawned thread, two preemptions reach the race
/// of the two takes, but three to interleave them, one more than `cargo xtask
/// loom` allows by default; the model above needs five. This one raises its
/// own bound: a few hundred executions.)
#[test]
fn loom_timer_arm_here_vs_cancel_there() {
    model_with_preemptions(3, || {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (parent, cancel_parent) = root.with_cancel();
        let deadline = timer.deadline();
        let t = thread::spawn(move || cancel_parent.cancel());
        let (ctx, cancel) = parent.with_deadline(deadline);
        t.join().unwrap();

        assert_eq!(ctx.err(), Some(Error::Canceled));
        timer.assert_disarmed_once(timer.armed_keys());
        drop((ctx, cancel, parent, root));
        // The backend still holds the expiries; they keep only weak references.
        timer.armed.lock().unwrap().clear();
    });
}

/// A deadline node's timer fires while a child of it is canceled by its own
/// canceler, whose walk has not reached the grandchild yet: the expiry's walk
/// finds the child another thread's, and hands the rest of its walk to the
/// runner (`WalkRest`, run at once under loom), which holds a strong reference
/// of its own on the node until it is done. The node ends with the deadline's
/// error, its subtree done, and every reference given back exactly once.
#[test]
fn loom_timer_fire_walk_blocked_on_a_foreign_child() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let (b, cancel_b) = ctx.with_cancel();
        let (c, cancel_c) = b.with_cancel();
        let (key, expiry) = timer.take_expiry();
        let t = thread::spawn(move || cancel_b.cancel());
        expiry.fire();
        t.join().unwrap();

        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        assert!(b.is_done() && c.is_done());
        assert_eq!(ctx.live_children(), 0);
        timer.assert_disarmed_once(vec![key]);
        drop((c, cancel_c, b));
        assert_eq!(
            ctx.node().unwrap().strong_count(),
            2,
            "ctx and its cancel function"
        );
        drop((ctx, cancel, root));
    });
}
