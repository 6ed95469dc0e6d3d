//! Pluggable timers: the [`Timer`] trait, the [`Expiry`] a timer fires, and the
//! default backend.
//!
//! For authors of timer backends (the adapter crates, a test clock) and for code
//! that installs one with [`Context::with_timer`]; a library that only takes a
//! `Context` never needs this module.
//!
//! A timer does two things for the tree: it tells the time ([`Timer::now`]), and it
//! calls [`Expiry::fire`] once a deadline passes. Deadlines, `with_timeout` and the
//! exact-deadline check all read the backend's clock, so a backend with a virtual
//! clock (tokio's paused time) drives contexts too. A backend is installed for a
//! subtree with [`Context::with_timer`]; without one, the built-in [`StdTimer`]
//! (one lazily started thread per process) serves.

pub mod conformance;
#[doc(hidden)]
pub mod shards;
pub(crate) mod std_thread;

use crate::context::Context;
use crate::tree::node::{Kind, NodeRef};
use crate::tree::{Origin, state};
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;

pub use std_thread::StdTimer;

/// A timer backend: a clock, and a way to be called back at a deadline.
///
/// Implement this to drive contexts from your own clock or timer wheel; the
/// adapter crates implement it for tokio and async-io.
///
/// # Contract
///
/// * [`arm`](Timer::arm) must eventually call [`Expiry::fire`] at or after
///   `deadline` (by this timer's clock), unless the key it returned is disarmed
///   first. Firing late is allowed (contexts check deadlines exactly anyway);
///   firing early is not. It must not call `fire` from inside `arm` itself.
/// * [`disarm`](Timer::disarm) is called at most once per key, when the context is
///   done (by its deadline or otherwise), or when its last handle goes before
///   that (then the expiry would do nothing); it may arrive after the timer
///   already fired, and must then do nothing harmful. [`Expiry::fire`] calls this
///   backend's own `disarm` (for the fired deadline and this backend's other
///   deadlines below it) on the firing thread before it returns, so do not
///   call `fire` while holding a lock that `disarm` takes. (Another backend's
///   deadlines below it are disarmed on ctx-core's runner.)
/// * `now` must be monotonic.
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, Expiry, Timer, TimerKey};
/// use std::sync::{Arc, Mutex};
/// use std::time::{Duration, Instant};
///
/// /// A manual clock, for tests: time moves only when told to.
/// #[derive(Debug)]
/// struct Manual { now: Mutex<Instant>, armed: Mutex<Vec<(Instant, Expiry)>> }
///
/// impl Timer for Manual {
///     fn now(&self) -> Instant { *self.now.lock().unwrap() }
///     fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
///         self.armed.lock().unwrap().push((deadline, expiry));
///         None
///     }
///     fn disarm(&self, _key: TimerKey) {}
/// }
///
/// impl Manual {
///     fn advance(&self, by: Duration) {
///         let now = { let mut n = self.now.lock().unwrap(); *n += by; *n };
///         let due: Vec<_> = {
///             let mut armed = self.armed.lock().unwrap();
///             let (due, rest) = armed.drain(..).partition(|(d, _)| *d <= now);
///             *armed = rest;
///             due
///         };
///         for (_, expiry) in due { expiry.fire(); }
///     }
/// }
///
/// let timer = Arc::new(Manual { now: Mutex::new(Instant::now()), armed: Mutex::default() });
/// let root = Context::background().with_timer(timer.clone());
/// let (ctx, _cancel) = root.with_timeout(Duration::from_secs(60));
/// assert!(!ctx.is_done());
/// timer.advance(Duration::from_secs(61));
/// assert_eq!(ctx.err(), Some(ctx_core::Error::DeadlineExceeded));
/// ```
pub trait Timer: Send + Sync + fmt::Debug + 'static {
    /// The current time by this timer's clock.
    fn now(&self) -> Instant;

    /// Arms a timer: call `expiry.fire()` once `deadline` has passed. Returns a key
    /// to disarm it with, or `None` if the backend has nothing to disarm.
    ///
    /// Whatever it returns, the backend must fire the expiry once the deadline
    /// has passed, unless [`Expiry::is_done`] says there is nothing left to do
    /// (then it may drop it unfired). Do not decide that from the context
    /// itself ([`Expiry::context`]'s `is_done()`, `done()` or `wait_until`): a
    /// read that finds the deadline passed reports the context done at once,
    /// but only `fire` walks its subtree and sets its `after_func` callbacks
    /// free. (An expiry dropped on that evidence is forgiven: its drop sees
    /// that a read closed the context and nobody walked it yet, and fires it
    /// on ctx-core's runner. One dropped before any read noticed the deadline
    /// cannot be: that context ends only when something else cancels it.)
    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey>;

    /// Disarms a timer armed by this backend (see the contract above).
    fn disarm(&self, key: TimerKey);

    /// Whether [`now`](Timer::now) is always the system's clock,
    /// `Instant::now()` (false unless the backend says so). A cancel then
    /// reads that clock itself where it must not run a backend's code: in
    /// the middle of a walk, to find the descendants whose deadlines passed
    /// while their timer was late, which end with `DeadlineExceeded` rather
    /// than the cancel's reason. Without it, only those on the canceled
    /// context's own deadline's backend are found.
    fn is_system_clock(&self) -> bool {
        false
    }
}

/// Identifies an armed timer within its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerKey(NonZeroU64);

impl TimerKey {
    /// Makes a key from a backend's own non-zero number.
    pub fn new(key: NonZeroU64) -> TimerKey {
        TimerKey(key)
    }

    /// The backend's number.
    pub fn get(self) -> NonZeroU64 {
        self.0
    }
}

/// What a timer calls when a deadline passes: it cancels the context with
/// `DeadlineExceeded` (and the deadline's cause, if one was given).
///
/// An `Expiry` holds only a weak reference: a context that was dropped is simply
/// not canceled, and an armed timer never keeps a context tree alive.
pub struct Expiry {
    /// A weak reference on a deadline node.
    node: NodeRef,
    deadline: Instant,
}

// SAFETY: an `Expiry` is a weak reference on a node; nodes are `Send + Sync`, and
// the reference counts are atomic.
unsafe impl Send for Expiry {}
// SAFETY: as above; `&Expiry` only reads through atomics.
unsafe impl Sync for Expiry {}

impl Expiry {
    pub(crate) fn new(node: NodeRef) -> Expiry {
        debug_assert_eq!(node.kind(), Kind::Deadline);
        node.inc_weak();
        Expiry {
            node,
            deadline: node.deadline_part().deadline,
        }
    }

    /// Cancels the context with `DeadlineExceeded`, if it still exists and is live.
    ///
    /// Cheap and safe to call from a timer's own thread or task: it marks the
    /// context and its subtree done, gives this backend its keys back
    /// (`disarm`), and wakes the waiters once the subtree is done, but runs no
    /// user code. The `after_func` callbacks it sets free, the `Drop`s of
    /// contexts it releases last, other backends' `disarm`s and any wait for
    /// another canceler run on ctx-core's runner threads, so a callback that
    /// blocks or panics never holds back or stops the backend.
    ///
    /// The waiters' wakers are executor code and run here, on the caller's
    /// thread, as every executor's own timer wakes its tasks: a panicking
    /// waker is caught (the others are still woken, and `fire` returns), but
    /// a waker that blocks holds this thread, and with it the backend's other
    /// deadlines, until it returns. Wakers are meant to be quick (they hand a
    /// task to its scheduler); those of ctx-core's own waits are. (When part
    /// of the subtree is another thread's cancel to finish, the wakers are
    /// woken on the runner instead, once it is.)
    pub fn fire(self) {
        if !self.node.upgrade() {
            return;
        }
        let reason = self.node.deadline_part().reason.clone();
        crate::tree::cancel(self.node, reason, Origin::Timer);
        // The node's last strong reference may be ours, and its drop user code:
        // that goes to the runner too.
        crate::tree::work::release_on_runner(self.node);
    }

    /// The context this expiry cancels, if it still exists.
    ///
    /// A strong handle: if every other handle goes meanwhile, dropping this one
    /// drops the context, and the `Drop`s of its values run on the thread that
    /// drops it, as does the backend's own `disarm` of the key (so never drop
    /// it under a lock that `disarm` takes). A backend that must run no user
    /// code on its own thread should not keep it, and use
    /// [`is_done`](Expiry::is_done) for its checks.
    pub fn context(&self) -> Option<Context> {
        self.node.upgrade().then(|| Context::from_strong(self.node))
    }

    /// The deadline this expiry belongs to.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the context is already done (or gone) and walked: firing would do
    /// nothing. A context whose expiry only a read has noticed is not done here,
    /// since firing still has its subtree to walk.
    ///
    /// It runs no user code and never calls back into the backend. It holds a
    /// reference on the context for the read; if that was the last one, the
    /// context's drop is handed to ctx-core's runner, which takes the runner's
    /// queue lock (and may start a thread). A backend that asks under its own
    /// lock should not hold that lock for either: the built-in backends call
    /// a variant that puts the hand-over off until their locks are released.
    pub fn is_done(&self) -> bool {
        self.is_done_releasing_into(&mut shards::Releases::default())
    }

    /// [`is_done`](Self::is_done), with the release of the reference the read
    /// held put into `later`: a backend drops `later` once it has released its
    /// locks. For the built-in backends; not an API.
    #[doc(hidden)]
    pub fn is_done_releasing_into(&self, later: &mut shards::Releases) -> bool {
        if !self.node.upgrade() {
            return true;
        }
        // A node a read closed (`UNCLAIMED`) still needs its walk: firing would
        // do it, so it does not count as done here.
        let word = self.node.state();
        let done = state::is_done(word) && !state::has(word, state::UNCLAIMED);
        // If every handle went away meanwhile, this was the last reference: the
        // drop runs on the runner, not here.
        later.release(self.node);
        done
    }

    /// Whether the context still exists and a read closed it (`UNCLAIMED`)
    /// without anyone walking its subtree yet: what only `fire` would finish.
    fn noticed_but_unwalked(&self) -> bool {
        // A context whose handles are all gone has nobody left to wake or call
        // back. The read needs a strong reference: the weak one keeps the
        // state word's memory, but not the payload, whose drop may be running
        // on another thread (a data race with the read).
        if !self.node.upgrade() {
            return false;
        }
        let unclaimed = state::has(self.node.state(), state::UNCLAIMED);
        // If every handle went away meanwhile, this was the last reference:
        // its drop goes to the runner, not here (under the backend's lock,
        // maybe).
        crate::tree::work::release_on_runner(self.node);
        unclaimed
    }
}

impl Drop for Expiry {
    fn drop(&mut self) {
        if self.noticed_but_unwalked() {
            // Against the contract, but cheap to forgive: a backend that dropped
            // the expiry because the context already looked done (a read found
            // the deadline passed) leaves a subtree nobody walks, and its
            // `after_func` callbacks waiting. The walk goes to the runner: this
            // drop may run under the backend's own lock, and the walk wakes
            // tasks. Its own expiry finds the word claimed (or the context
            // gone) and stops there.
            self.node.inc_weak();
            let expiry = Expiry {
                node: self.node,
                deadline: self.deadline,
            };
            crate::runner::spawn(Box::new(move || expiry.fire()));
        }
        self.node.dec_weak();
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expiry")
            .field("deadline", &self.deadline())
            .finish()
    }
}

/// The default backend for contexts with no timer installed above them.
pub(crate) fn default_timer() -> Arc<dyn Timer> {
    StdTimer::global()
}
