//! The user code a cancel sets free, kept apart from the tree walk.
//!
//! Walking a canceled subtree only flips state words, takes the waiters' wakers
//! and moves entries out of child sets. Everything that runs code a user (or an
//! executor) wrote is collected in a [`Work`] instead and run after the walk,
//! when the whole subtree is done:
//!
//! * the waiters' wakers, taken as their nodes were closed;
//! * `after_func` callbacks whose run this cancel claimed;
//! * the `Drop` of nodes whose last strong reference the cancel released (a value,
//!   a callback's captured state, a timer backend);
//! * the backend's [`Timer::disarm`](crate::Timer::disarm) of deadline nodes.
//!
//! The callbacks always run on the [`runner`](crate::runner), each on a job of
//! its own, as Go runs each `AfterFunc` on a goroutine of its own; they are
//! handed over before any disarm, so that no backend's `disarm` holds them
//! back. The disarms come before the wakers, so that a waiter that wakes up
//! finds its timer released. Where the rest runs depends on who canceled
//! ([`Origin`]): an explicit cancel (a `CancelFunc`, a parent's cancel, a
//! context born done) runs it on its own thread before it returns, and then
//! resumes the first panic; a timer's expiry wakes the wakers and runs its own
//! backend's disarms on its thread, and hands the rest to the runner so that
//! no `Drop`, other backend or panic can hold back or stop the timer backend.

use super::callback::Callback;
use super::deadline::TimerRef;
use super::node::{Kind, NodeRef};
use super::state::Reason;
use super::wake_list::WakeList;
use crate::sync::Arc;
use crate::timer::TimerKey;
use smallvec::SmallVec;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Who started a cancel, which decides where its user code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A cancel function, a drop, or a context born done: user code runs on this
    /// thread before `cancel` returns, but for the callbacks (runner jobs).
    Explicit,
    /// A timer backend firing an expiry: user code runs on the runner's threads.
    Timer,
}

/// A panic payload caught on the way, resumed once everything is done.
pub(crate) type Panic = Option<Box<dyn Any + Send>>;

/// User code that a cancel still owes.
#[derive(Default)]
pub(crate) struct Work {
    /// Deadline nodes (each with a strong reference held for the disarm) and
    /// the keys to give back to their backends.
    disarms: SmallVec<[(NodeRef, TimerKey); 1]>,
    callbacks: SmallVec<[(Arc<Callback>, Reason); 1]>,
    /// The wakers of the waiters of the nodes a walk closed, taken during the
    /// walk and woken once its subtree is complete: wakers are executor code,
    /// which must not run while a canceler that lost the race waits for the
    /// walk (it may hold a lock the waker needs).
    pub(crate) wakers: WakeList,
    /// Nodes whose strong count reached zero: `drop_node` is still to run.
    drops: SmallVec<[NodeRef; 1]>,
    /// A node the caller keeps alive until this work has run (the root of a
    /// cancel): it needs no reference of the work's own.
    held: Option<NodeRef>,
    /// Reasons a walk held: once the nodes they were read from are released,
    /// each may be the last reference to a user's cause, so they go where
    /// user code may run.
    kept: SmallVec<[Reason; 1]>,
}

// SAFETY: the node references are counted references on `Send + Sync` nodes;
// callbacks and reasons are `Send`.
unsafe impl Send for Work {}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("disarms", &self.disarms.len())
            .field("callbacks", &self.callbacks.len())
            .field("wakers", &self.wakers.len())
            .field("drops", &self.drops.len())
            .finish()
    }
}

impl Work {
    /// Work for a cancel whose caller keeps `node` alive until the work has run.
    pub(crate) fn holding(node: NodeRef) -> Work {
        let mut work = Work::default();
        work.hold(node);
        work
    }

    /// Makes this (empty) work one whose caller keeps `node` alive until it has
    /// run: set in place, as a walk's work is large enough that building a new
    /// one and moving it costs a store-forwarding stall.
    pub(crate) fn hold(&mut self, node: NodeRef) {
        debug_assert!(self.is_empty() && self.held.is_none());
        self.held = Some(node);
    }

    /// A timer key to give back to the backend of deadline node `node`. The
    /// work holds a strong reference on the node until then (taken here, unless
    /// the caller holds the node: the node's own line, not the shared backend's
    /// refcount).
    pub(crate) fn disarm(&mut self, node: NodeRef, key: TimerKey) {
        if self.held != Some(node) {
            node.inc_strong();
        }
        self.disarms.push((node, key));
    }

    /// A callback whose run was claimed (it moved to `FIRED`), and the reason
    /// its context ended with.
    pub(crate) fn callback(&mut self, callback: Arc<Callback>, reason: Reason) {
        self.callbacks.push((callback, reason));
    }

    /// Releases one strong reference; if it was the last, the node's drop (and its
    /// user `Drop`s) joins the work instead of running here.
    pub(crate) fn release(&mut self, node: NodeRef) {
        if node.release_strong_is_last() {
            self.drops.push(node);
        }
    }

    /// Releases what a walk holds on a node it reached through a slot: its
    /// strong reference, and for a merge node the slot's weak one too, in one
    /// read-modify-write (any other node's goes to its detach: see
    /// `register::mark_drained`). A last strong reference is dropped later, as
    /// by [`release`](Self::release).
    pub(crate) fn release_reached(&mut self, node: NodeRef) {
        let last = if node.kind() == Kind::Merge {
            node.release_strong_and_weak_is_last()
        } else {
            node.release_strong_is_last()
        };
        if last {
            self.drops.push(node);
        }
    }

    /// Whether nothing is owed.
    pub(crate) fn is_empty(&self) -> bool {
        self.disarms.is_empty()
            && self.wakers.is_empty()
            && self.callbacks.is_empty()
            && self.drops.is_empty()
            && self.kept.is_empty()
    }

    /// Keeps a reason a walk held until the work runs (see `kept`); a static
    /// record needs no keeping.
    pub(crate) fn keep(&mut self, reason: Reason) {
        if reason.is_shared() {
            self.kept.push(reason);
        }
    }

    /// Gives the timer keys back to their backends now.
    pub(crate) fn run_disarms(&mut self, panic: &mut Panic) {
        self.run_disarms_where(|_| true, panic);
    }

    /// Gives back now only the keys of deadlines on the backend `firing` (a
    /// backend that fires an expiry: its own `disarm`, on its own thread). A
    /// deadline of another backend in the subtree keeps its key for the
    /// runner: that backend's `disarm` is user code to the firing one, and
    /// one that blocks must not hold back every deadline of the firing
    /// backend (a late disarm is within the `Timer` contract).
    pub(crate) fn run_disarms_of(&mut self, firing: TimerRef, panic: &mut Panic) {
        self.run_disarms_where(|timer| timer.same(firing), panic);
    }

    /// Gives back now the keys whose backend `now` picks; the others stay.
    fn run_disarms_where(&mut self, now: impl Fn(TimerRef) -> bool, panic: &mut Panic) {
        if self.disarms.is_empty() {
            return;
        }
        let held = self.held;
        let mut done: SmallVec<[NodeRef; 1]> = SmallVec::new();
        self.disarms.retain(|(node, key)| {
            let timer = node.deadline_part().timer;
            if !now(timer) {
                return true;
            }
            catch(panic, || timer.disarm(*key));
            if held != Some(*node) {
                done.push(*node);
            }
            false
        });
        for node in done {
            self.release(node);
        }
    }

    /// Runs everything owed on a runner thread (unless nothing is): for a
    /// caller that must run no user or executor code itself. A panic there
    /// has nobody to go to: the hook reported it, and it is dropped.
    pub(crate) fn run_on_runner(mut self) {
        if !self.is_empty() {
            crate::runner::spawn(Box::new(move || {
                let mut panic = None;
                self.run_on_this_runner(&mut panic);
                discard(panic);
            }));
        }
    }

    /// Hands the claimed callbacks to the runner now, each on a job of its
    /// own. An expiry's walk does this before anything else it still runs on
    /// the backend's thread (the backend's own `disarm`s, the wakers): either
    /// may block, and a callback waits for neither, as it waits for nothing
    /// after an explicit cancel ([`run`](Self::run) hands them over first).
    pub(crate) fn spawn_callbacks(&mut self) {
        // Handed over together: one taking of the runner's lock (none if
        // there is no callback).
        crate::runner::spawn_all(self.callbacks.drain(..).map(callback_job));
    }

    /// Wakes the wakers taken during the walk, each guarded.
    pub(crate) fn run_wakes(&mut self, panic: &mut Panic) {
        self.wakers.take_each(|waker| catch(panic, || waker.wake()));
    }

    /// Runs everything owed on this thread, but for the callbacks, which go to
    /// the runner, each on a job of its own (module docs). Each piece is
    /// guarded: a panic in one never skips the others; the first is returned.
    /// (In place, so that the inline storage is not moved around.)
    pub(crate) fn run(&mut self, panic: &mut Panic) {
        self.run_with(panic, false);
    }

    /// [`run`](Self::run) on a runner thread: every callback but the last runs
    /// on a runner job of its own, so that one that blocks holds back no other,
    /// and the last right here, once the wakers were woken (unless a backend's
    /// `disarm` comes first: then it gets a job of its own too).
    pub(crate) fn run_on_this_runner(&mut self, panic: &mut Panic) {
        self.run_with(panic, true);
    }

    fn run_with(&mut self, panic: &mut Panic, on_runner: bool) {
        if self.is_empty() {
            return;
        }
        // The callbacks are handed over first: a `disarm` is backend code,
        // which may block (a late disarm is within the `Timer` contract), and
        // a callback waits for no backend, least of all one that did not end
        // its context. The waiters are woken after the disarms (a waiter that
        // wakes up finds its timer released), and so is the last callback
        // when it runs right here: only when no disarm is owed.
        let keep_last = on_runner && self.disarms.is_empty();
        let last = if keep_last {
            self.callbacks.pop()
        } else {
            None
        };
        self.spawn_callbacks();
        self.run_disarms(panic);
        self.run_wakes(panic);
        if let Some((callback, reason)) = last {
            run_callback(panic, callback, reason);
        }
        for node in self.drops.drain(..) {
            // SAFETY: `release` saw this node's strong count reach zero.
            unsafe { super::drop::drop_node(node, panic) };
        }
        for reason in self.kept.drain(..) {
            catch(panic, move || drop(reason));
        }
    }
}

/// Runs a claimed callback on a runner job of its own. A panic there has
/// nobody to go to: the hook reported it, and it is dropped.
pub(crate) fn spawn_callback(callback: Arc<Callback>, reason: Reason) {
    crate::runner::spawn(callback_job((callback, reason)));
}

/// A claimed callback as a runner job (see [`spawn_callback`]).
fn callback_job((callback, reason): (Arc<Callback>, Reason)) -> crate::runner::Job {
    Box::new(move || {
        let mut panic = None;
        run_callback(&mut panic, callback, reason);
        discard(panic);
    })
}

/// Runs a claimed callback, guarded. The callback's and the reason's own `Drop`s
/// are user code too, each guarded on its own: dropped by the unwind of a
/// panicking callback, a `Drop` that panicked too would abort the process.
fn run_callback(panic: &mut Panic, callback: Arc<Callback>, reason: Reason) {
    catch(panic, || callback.run(&reason));
    catch(panic, move || drop(callback));
    catch(panic, move || drop(reason));
}

/// Releases one strong reference without running user code here: if it was the
/// last, the node is dropped on the runner.
pub(crate) fn release_on_runner(node: NodeRef) {
    RunnerReleases::default().release(node);
}

/// Strong references released without running user code: the drops of nodes
/// whose last reference went are handed to the runner when this is dropped.
/// A holder of locks drops it after releasing them, since handing work to the
/// runner takes the runner's queue lock and may start a thread.
#[derive(Debug, Default)]
pub(crate) struct RunnerReleases(Work);

impl RunnerReleases {
    /// Releases one strong reference; a last one's drop waits for ours.
    pub(crate) fn release(&mut self, node: NodeRef) {
        self.0.release(node);
    }
}

impl Drop for RunnerReleases {
    fn drop(&mut self) {
        // Checked first: moving an empty work costs a copy of its inline storage.
        if !self.0.is_empty() {
            std::mem::take(&mut self.0).run_on_runner();
        }
    }
}

/// Runs `f`, keeping the first panic in `panic` instead of unwinding. A later
/// one's payload is dropped under a guard: its `Drop` is user code too, and
/// one that panicked would unwind out of the work that meant to contain it.
pub(crate) fn catch(panic: &mut Panic, f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
        if panic.is_none() {
            *panic = Some(payload);
        } else {
            crate::adapter::drop_panic_payload(payload);
        }
    }
}

/// Drops a caught panic that nobody is there to resume (a timer's thread, the
/// runner), its payload's `Drop` guarded.
pub(crate) fn discard(panic: Panic) {
    if let Some(payload) = panic {
        crate::adapter::drop_panic_payload(payload);
    }
}

/// Resumes a caught panic, unless this thread is unwinding already (then it is
/// dropped: a second panic would abort the process).
#[inline]
pub(crate) fn resume(panic: Panic) {
    if let Some(payload) = panic {
        resume_payload(payload);
    }
}

#[cold]
fn resume_payload(payload: Box<dyn std::any::Any + Send>) {
    if !std::thread::panicking() {
        panic::resume_unwind(payload);
    }
    // Dropped under a guard: a panicking `Drop` during an unwind would abort.
    crate::adapter::drop_panic_payload(payload);
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::RunnerReleases;
    use crate::Context;
    use crate::sync::unmodeled::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    /// Reports its drop, and on which thread.
    struct Witness(Arc<AtomicBool>, mpsc::Sender<std::thread::ThreadId>);

    impl Drop for Witness {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            let _ = self.1.send(std::thread::current().id());
        }
    }

    /// A last reference put into `RunnerReleases` (as a backend's read under
    /// its lock does) keeps the node until the releases are dropped; then its
    /// drop runs on the runner, not on the releasing thread.
    #[test]
    fn a_last_reference_waits_for_the_releases_and_drops_on_the_runner() {
        let dropped = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = mpsc::channel();
        let ctx = Context::background().with_value(Witness(dropped.clone(), sender));
        let node = ctx.node().expect("a value node");
        // Stands for the read's own reference.
        node.inc_strong();
        drop(ctx);
        let mut later = RunnerReleases::default();
        later.release(node);
        // The release happened; only the drop it made owed waits.
        assert_eq!(node.strong_count(), 0);
        assert!(
            receiver.try_recv().is_err() && !dropped.load(Ordering::SeqCst),
            "owed, not dropped"
        );
        drop(later);
        let on = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the runner drops the node");
        assert_ne!(on, std::thread::current().id(), "dropped on the runner");
        assert!(dropped.load(Ordering::SeqCst));
    }
}
