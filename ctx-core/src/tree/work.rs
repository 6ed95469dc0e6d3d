//! The user code a cancel sets free, kept apart from the tree walk.
//!
//! Walking a canceled subtree only flips state words, wakes waiters and moves
//! entries out of child sets. Everything that runs code a user wrote is collected
//! in a [`Work`] instead and run after the walk, when the whole subtree is done:
//!
//! * `after_func` callbacks whose run this cancel claimed;
//! * the `Drop` of nodes whose last strong reference the cancel released (a value,
//!   a callback's captured state, a timer backend);
//! * the backend's [`Timer::disarm`](crate::Timer::disarm) of deadline nodes.
//!
//! Where the work runs depends on who canceled ([`Origin`]): an explicit cancel
//! (a `CancelFunc`, a parent's cancel, a context born done) runs it on its own
//! thread before it returns, and then resumes the first panic; a timer's expiry
//! hands it to the [`runner`](crate::runner) so that no callback, `Drop` or panic
//! can hold back or stop the timer backend.

use super::callback::Callback;
use super::node::NodeRef;
use super::state::Reason;
use crate::sync::Arc;
use crate::timer::{Timer, TimerKey};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Who started a cancel, which decides where its user code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A cancel function, a drop, or a context born done: user code runs on this
    /// thread before `cancel` returns.
    Explicit,
    /// A timer backend firing an expiry: user code runs on the runner's threads.
    Timer,
}

/// A panic payload caught on the way, resumed once everything is done.
pub(crate) type Panic = Option<Box<dyn Any + Send>>;

/// User code that a cancel still owes.
#[derive(Default)]
pub(crate) struct Work {
    disarms: Vec<(std::sync::Arc<dyn Timer>, TimerKey)>,
    callbacks: Vec<(Arc<Callback>, Reason)>,
    /// Nodes whose strong count reached zero: `drop_node` is still to run.
    drops: Vec<NodeRef>,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("disarms", &self.disarms.len())
            .field("callbacks", &self.callbacks.len())
            .field("drops", &self.drops.len())
            .finish()
    }
}

impl Work {
    /// A timer key to give back to its backend.
    pub(crate) fn disarm(&mut self, timer: std::sync::Arc<dyn Timer>, key: TimerKey) {
        self.disarms.push((timer, key));
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

    /// Whether nothing is owed.
    pub(crate) fn is_empty(&self) -> bool {
        self.disarms.is_empty() && self.callbacks.is_empty() && self.drops.is_empty()
    }

    /// Gives the timer keys back to their backends now.
    pub(crate) fn run_disarms(&mut self, panic: &mut Panic) {
        for (timer, key) in self.disarms.drain(..) {
            catch(panic, || timer.disarm(key));
        }
    }

    /// Runs everything owed on this thread. Each piece is guarded: a panic in one
    /// never skips the others; the first is returned.
    pub(crate) fn run(mut self, panic: &mut Panic) {
        self.run_disarms(panic);
        let Work {
            callbacks, drops, ..
        } = self;
        for (callback, reason) in callbacks {
            catch(panic, || callback.run(&reason));
        }
        for node in drops {
            // SAFETY: `release` saw this node's strong count reach zero.
            unsafe { super::drop::drop_node(node, panic) };
        }
    }
}

/// Releases one strong reference without running user code here: if it was the
/// last, the node is dropped on the runner.
pub(crate) fn release_on_runner(node: NodeRef) {
    let mut work = Work::default();
    work.release(node);
    if !work.is_empty() {
        crate::runner::spawn(Box::new(move || work.run(&mut None)));
    }
}

/// Runs `f`, keeping the first panic in `panic` instead of unwinding.
pub(crate) fn catch(panic: &mut Panic, f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
        panic.get_or_insert(payload);
    }
}

/// Resumes a caught panic, unless this thread is unwinding already (then it is
/// dropped: a second panic would abort the process).
pub(crate) fn resume(panic: Panic) {
    if let Some(payload) = panic
        && !std::thread::panicking()
    {
        panic::resume_unwind(payload);
    }
}
