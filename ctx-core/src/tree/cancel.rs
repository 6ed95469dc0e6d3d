//! Cancel: closing a node, walking its subtree, and what a returned cancel
//! guarantees.
//!
//! Go's `cancelCtx.cancel` (src/context/context.go) is the reference for *what*
//! happens: the node gets its error and cause, every descendant gets the same,
//! the node leaves its parent, and when any call to cancel returns, the node and
//! all its descendants are done. *How* it happens here is lock-free on the
//! uncontended path.
//!
//! # Closing and owning
//!
//! A node is *closed* by the CAS of its state word from live to done
//! ([`try_close`]); readers see it done from that instant. The thread whose CAS
//! won *owns* the node's subtree walk. A reader that finds an expired deadline
//! closes the node with the `UNCLAIMED` flag instead and walks nothing; the first
//! canceler that clears the flag ([`claim`]) owns the walk.
//!
//! # The walk
//!
//! The owner drains the node's child set: each child entry it takes out is closed
//! with the node's reason (or claimed, if a reader closed it) and walked in turn,
//! on an explicit stack, so depth costs no native stack. Each callback entry is
//! claimed and set aside. Leaves (nodes closed without `HAS_SET`: nothing was
//! ever registered with them) are complete at their close: the close sets
//! `COMPLETE` in the same CAS. A node with a set becomes *complete* (`COMPLETE` flag) when
//! its owner has drained it and every child it found is complete.
//!
//! A child that another thread closed first (its own cancel, another parent of a
//! merge node) is that thread's to walk. Its parent cannot become complete before
//! it does, so the owner keeps such a parent *blocked*, finishes everything else it
//! owns, and then polls the children it waits for, completing its blocked nodes
//! bottom-up as they unblock. An owner never waits while it still owns a node it
//! could complete, and every node waits only for nodes below it, so some owner can
//! always make progress: the lowest incomplete node has only complete children,
//! and its owner completes it on its next poll.
//!
//! # What a returned cancel guarantees
//!
//! A cancel that did not own the node (it lost the race) waits until the node is
//! complete. So when any `cancel` returns, the node and all its descendants are
//! done, whoever won — as in Go, where the loser blocks on the winner's lock. Only
//! then does the node leave its parents, and only then does user code run
//! ([`Work`]): callbacks and `Drop`s never run in the middle of a walk, and a
//! callback that cancels anything finds every node it can see in a final state.
//! The uncontended cancel never waits: it owns everything it walks.

use super::drop::merge_leaves_parents;
use super::node::{Kind, NodeRef};
use super::register::{self, Entry, clone_reason};
use super::state::{self, COMPLETE, HAS_SET, Reason, UNCLAIMED, WAITERS, Word};
use super::work::{self, Origin, Panic, Work};
use crate::sync::{Backoff, Ordering};

/// Moves a live node to done with `reason` (and `UNCLAIMED` if a reader does it).
/// Returns the previous (live) word, whose `WAITERS` bit says whether anyone must
/// be woken, or `None` if the node was done already.
pub(crate) fn try_close(node: NodeRef, reason: &Reason, unclaimed: bool) -> Option<Word> {
    let part = node.cancel_part();
    // Relaxed: only a first guess for the CAS loop.
    let mut current = part.state.load(Ordering::Relaxed);
    loop {
        if state::is_done(current) {
            return None;
        }
        let mut flags = current.addr() & (WAITERS | HAS_SET);
        if unclaimed {
            flags |= UNCLAIMED;
        } else if flags & HAS_SET == 0 {
            // Nothing was ever registered, and nothing can be now (`HAS_SET` is set
            // by a CAS that fails on a done word): the subtree is empty.
            flags |= COMPLETE;
        }
        let new = reason.word().map_addr(|a| a | flags);
        // SeqCst: the store half of the canceler's side of the Dekker pairs with
        // registration (`child_set`) and with waiters (`wait`); its release
        // publishes the record to readers' Acquire loads.
        match part
            .state
            .compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::Relaxed)
        {
            Ok(_) => {
                // The word now owns a reference of its own.
                std::mem::forget(reason.clone());
                crate::sync::dekker_point();
                return Some(current);
            }
            Err(actual) => current = actual,
        }
    }
}

/// Takes over the walk of a node that a reader closed: true if this call cleared
/// its `UNCLAIMED` flag.
pub(crate) fn claim(node: NodeRef) -> bool {
    let part = node.cancel_part();
    // Acquire: a guess for the CAS loop that also sees the reader's record.
    let mut current = part.state.load(Ordering::Acquire);
    while state::has(current, UNCLAIMED) {
        let new = current.map_addr(|a| a & !UNCLAIMED);
        // AcqRel: the claim decides which canceler owns the walk. SeqCst on
        // success as for `try_close`: the walk's drain must see every registrant
        // that missed the reader's close (the Dekker pair in `child_set`).
        match part
            .state
            .compare_exchange_weak(current, new, Ordering::SeqCst, Ordering::Acquire)
        {
            Ok(_) => {
                crate::sync::dekker_point();
                return true;
            }
            Err(actual) => current = actual,
        }
    }
    false
}

/// Whether a node and its whole subtree are done (`COMPLETE`).
pub(crate) fn is_complete(node: NodeRef) -> bool {
    // Acquire: pairs with the Release that set `COMPLETE` (or the close that set
    // it on a node without registrations), so everything closed below is seen.
    let word = node.cancel_part().state.load(Ordering::Acquire);
    state::has(word, COMPLETE) && !state::has(word, UNCLAIMED)
}

/// Sets `COMPLETE` on a node whose subtree its owner finished, and wakes whoever
/// waits for it.
fn mark_complete(node: NodeRef, panic: &mut Panic) {
    let part = node.cancel_part();
    // Release: everything the walk closed below happens-before a waiter's Acquire
    // load that sees the flag (`is_complete`). A CAS loop rather than `fetch_or`,
    // which loom's `AtomicPtr` lacks.
    let mut previous = part.state.load(Ordering::Relaxed);
    loop {
        let new = previous.map_addr(|a| a | COMPLETE);
        match part
            .state
            .compare_exchange_weak(previous, new, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(actual) => previous = actual,
        }
    }
    debug_assert!(state::is_done(previous) && !state::has(previous, UNCLAIMED));
    if state::has(previous, WAITERS) {
        work::catch(panic, || part.waiters.notify_all());
    }
}

/// Cancels `node` with `reason` and returns whether this call closed it (the first
/// cancel wins; its reason sticks).
///
/// The caller keeps `node` alive for the duration. With [`Origin::Explicit`], when
/// this returns the node and its whole subtree are done, the node has left its
/// parents, and the callbacks this cancel claimed have run on this thread; then
/// the first panic of a callback or `Drop` is resumed (unless the thread is
/// already unwinding). With [`Origin::Timer`], the walk happens here and
/// everything that could block or run user code goes to the runner.
pub(crate) fn cancel(node: NodeRef, reason: Reason, origin: Origin) -> bool {
    let won = try_close(node, &reason, false).is_some();
    drop(reason);
    let mut walk = Walk::default();
    let owned = won || claim(node);
    if owned {
        walk.run(node);
    } else if origin == Origin::Timer {
        // The owner (a cancel function or a parent's cancel) finishes the node and
        // detaches it; an expiry has nothing to add.
        return false;
    }
    match origin {
        Origin::Explicit => {
            let mut panic = None;
            walk.finish(node, owned, &mut panic);
            work::resume(panic);
        }
        Origin::Timer => {
            // The backend's own `disarm` may run on its own thread; a panic in it
            // is the backend's, and must not stop the walk's other duties.
            walk.work.run_disarms(&mut None);
            if walk.blocked.is_empty() && is_complete(node) {
                register::detach(node);
                let work = std::mem::take(&mut walk.work);
                if !work.is_empty() {
                    crate::runner::spawn(Box::new(move || work.run(&mut None)));
                }
            } else {
                node.inc_strong();
                let job = TimerJob { node, walk };
                crate::runner::spawn(Box::new(move || job.finish()));
            }
        }
    }
    won
}

/// What a timer's expiry leaves to the runner: the end of a walk whose nodes wait
/// for other owners, and the user code it set free.
struct TimerJob {
    /// Holds a strong reference.
    node: NodeRef,
    walk: Walk,
}

impl TimerJob {
    fn finish(self) {
        let TimerJob { node, walk } = self;
        let mut panic = None;
        walk.finish(node, true, &mut panic);
        let mut work = Work::default();
        work.release(node);
        work.run(&mut panic);
        // Nobody to resume the panic on: the runner's thread survives it, and
        // the panic hook has reported it already.
        drop(panic);
    }
}

/// A node whose owner finished draining it while some of its subtree was still
/// another thread's to walk.
struct Blocked {
    node: NodeRef,
    /// Index of the blocked entry of its parent in this walk, if any.
    parent: Option<usize>,
    /// Blocked nodes below it in this walk that are not complete yet.
    blocked_children: usize,
    /// Children that other threads own; strong references, checked by polling.
    foreign: Vec<NodeRef>,
    done: bool,
}

/// One step of the walk's explicit stack.
enum Step {
    /// Drain a node this walk owns (holding a strong reference on it); `parent`
    /// is the frame of the node it was found under.
    Visit {
        node: NodeRef,
        parent: Option<usize>,
    },
    /// All children found under frame `frame` were walked.
    Complete { frame: usize },
}

/// The bookkeeping of a node with a set while its children are walked.
struct Frame {
    node: NodeRef,
    parent: Option<usize>,
    /// Children another thread owns (not complete when found).
    foreign: Vec<NodeRef>,
    /// Frames below this one that ended blocked and are not complete yet.
    blocked_children: usize,
    /// Index in `Walk::blocked` once this frame ended blocked.
    blocked_at: Option<usize>,
}

/// The state of one canceler's walk.
#[derive(Default)]
struct Walk {
    stack: Vec<Step>,
    frames: Vec<Frame>,
    /// Blocked nodes, children before parents.
    blocked: Vec<Blocked>,
    work: Work,
    /// The first panic of a waker, resumed with the others at the end.
    panic: Panic,
    /// The node the walk started from, on which it holds no reference of its own.
    root: Option<NodeRef>,
}

impl Walk {
    /// Walks the subtree of `root`, which this walk owns (a strong reference on it
    /// was taken for the walk). Never waits for another thread.
    fn run(&mut self, root: NodeRef) {
        // The caller's reference keeps the root alive: the walk takes none on it
        // (and the stack is touched only if there are children).
        self.root = Some(root);
        self.visit(root, None);
        while let Some(step) = self.stack.pop() {
            match step {
                Step::Visit { node, parent } => self.visit(node, parent),
                Step::Complete { frame } => self.complete(frame),
            }
        }
    }

    fn visit(&mut self, node: NodeRef, parent: Option<usize>) {
        let part = node.cancel_part();
        let word = node.state();
        debug_assert!(state::is_done(word) && !state::has(word, UNCLAIMED));
        if state::has(word, WAITERS) {
            // Wakers are executor code, but a panicking one must not leave the
            // walk half done: the panic is resumed after the cancel.
            work::catch(&mut self.panic, || part.waiters.notify_all());
        }
        if let Some(on_done) = node.header().vtable.on_done {
            on_done(node, &mut self.work);
        }
        let Some(set) = part.children() else {
            // A leaf: complete now.
            self.leave(node, !state::has(word, COMPLETE));
            return;
        };
        let frame = self.frames.len();
        self.frames.push(Frame {
            node,
            parent,
            foreign: Vec::new(),
            blocked_children: 0,
            blocked_at: None,
        });
        self.stack.push(Step::Complete { frame });
        // The children get this node's reason: its error and cause, whoever
        // ended it (Go: a child canceled through its parent has the parent's).
        let reason = clone_reason(word);
        set.drain(|raw| {
            // SAFETY: `drain` hands over each entry it swapped out; we own its
            // reference.
            match unsafe { Entry::from_raw(raw) } {
                Entry::Child(child) => {
                    if child.upgrade() {
                        if try_close(child, &reason, false).is_some() || claim(child) {
                            self.stack.push(Step::Visit {
                                node: child,
                                parent: Some(frame),
                            });
                        } else if is_complete(child) {
                            self.work.release(child);
                        } else {
                            self.frames[frame].foreign.push(child);
                        }
                    }
                    // No user code: the payload is dropped with the last strong
                    // reference, never with a weak one.
                    child.dec_weak();
                }
                Entry::Callback(callback) => {
                    if callback.claim_fire() {
                        self.work.callback(callback, reason.clone());
                    }
                }
            }
        });
    }

    /// All children of `frame` were walked: complete it, or block it on the
    /// children other threads still walk.
    fn complete(&mut self, frame: usize) {
        let f = &self.frames[frame];
        if f.foreign.iter().all(|&c| is_complete(c)) && f.blocked_children == 0 {
            let node = f.node;
            let foreign = std::mem::take(&mut self.frames[frame].foreign);
            for child in foreign {
                self.work.release(child);
            }
            self.leave(node, true);
            return;
        }
        let parent_blocked = f.parent;
        if let Some(p) = parent_blocked {
            self.frames[p].blocked_children += 1;
        }
        let f = &mut self.frames[frame];
        f.blocked_at = Some(self.blocked.len());
        let blocked = Blocked {
            node: f.node,
            // Fixed up to the parent's index in `blocked` when it blocks too.
            parent: parent_blocked,
            blocked_children: f.blocked_children,
            foreign: std::mem::take(&mut f.foreign),
            done: false,
        };
        self.blocked.push(blocked);
    }

    /// A node this walk owned is complete: flag it (unless its close did), let a
    /// merge node leave its other parents, and release the walk's reference.
    fn leave(&mut self, node: NodeRef, flag: bool) {
        if flag {
            mark_complete(node, &mut self.panic);
        }
        if node.kind() == Kind::Merge {
            merge_leaves_parents(node);
        }
        if self.root != Some(node) {
            self.work.release(node);
        }
    }

    /// The end of a cancel of `node`: the owner waits for its blocked nodes and
    /// takes the node out of its parents; a cancel that lost waits until the
    /// owner completed the node (the owner detaches it, or its parent's walk
    /// drained it). Then the user code runs.
    fn finish(mut self, node: NodeRef, owned: bool, panic: &mut Panic) {
        if let Some(payload) = self.panic.take() {
            panic.get_or_insert(payload);
        }
        if owned {
            self.unblock();
            debug_assert!(is_complete(node));
            register::detach(node);
        } else {
            let mut backoff = Backoff::new();
            while !is_complete(node) {
                backoff.snooze();
            }
        }
        std::mem::take(&mut self.work).run(panic);
    }

    /// Polls the children other owners walk until every blocked node of this walk
    /// is complete, completing them bottom-up (module docs).
    fn unblock(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        // Parents were recorded as frame indices: map them to `blocked` indices
        // (a parent always blocks after its children, so it has one by now).
        for i in 0..self.blocked.len() {
            if let Some(frame) = self.blocked[i].parent {
                self.blocked[i].parent = self.frames[frame].blocked_at;
            }
        }
        let mut backoff = Backoff::new();
        let mut left = self.blocked.len();
        while left > 0 {
            let mut progress = false;
            for i in 0..self.blocked.len() {
                let b = &self.blocked[i];
                if b.done || b.blocked_children > 0 || !b.foreign.iter().all(|&c| is_complete(c)) {
                    continue;
                }
                let b = &mut self.blocked[i];
                b.done = true;
                let (node, parent) = (b.node, b.parent);
                for child in std::mem::take(&mut b.foreign) {
                    self.work.release(child);
                }
                if let Some(p) = parent {
                    self.blocked[p].blocked_children -= 1;
                }
                self.leave(node, true);
                left -= 1;
                progress = true;
            }
            if !progress {
                backoff.snooze();
            }
        }
        self.blocked.clear();
    }
}
