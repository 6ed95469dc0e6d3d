//! The public [`Context`] handle.

use crate::after_func::{self, AfterFunc};
use crate::cancel_funcs::{CancelCauseFunc, CancelFunc, ContextGuard};
use crate::error::{Cause, Error};
use crate::sync::AtomicU64;
use crate::timer::{self, Timer};
use crate::tree::deadline::TimerRef;
use crate::tree::node::{
    CANCEL_CAUSE_VTABLE, CancelPart, DeadlinePart, Detached, Kind, Links, MergePart, NodeRef,
    Payload, TimerPart,
};
use crate::tree::register::{Outcome, register};
use crate::tree::state::{self, Reason, Word};
use crate::tree::value::ValuePart;
use crate::tree::{self as tree, Origin};
use crate::waiter::Done;
use smallvec::SmallVec;
use std::fmt;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cancellation signal, a deadline and a set of values, passed down a call tree.
///
/// This is Go's `context.Context`. A `Context` is a cheap handle (one pointer;
/// cloning it is one reference-count increment) on a node of a tree. Deriving a
/// context (`with_cancel`, `with_timeout`, `with_value`, …) adds a child node;
/// canceling a node cancels its whole subtree; a child never outlives the
/// cancellation, deadline or values of its parent.
///
/// All methods are safe to call from any number of threads at once. Reads
/// ([`err`](Context::err), [`is_done`](Context::is_done), `check`, `cause`,
/// `deadline`, `value`) and deriving (`with_cancel`, `with_value`, …) run no
/// user code but the clock of a timer backend (`Timer::now`, below a live
/// deadline), and never block on another thread (deriving may spin for a few
/// atomic operations while a parent's cancel finishes with the slot the child
/// gives back). The locks some methods may take are held for a push or a
/// pop, never while anything else runs:
///
/// * the explicit waits ([`wait`](Context::wait) and the [`Done`] future)
///   wait, by definition;
/// * a deadline's arming is the timer backend's (the built-in ones lock a
///   shard of their own);
/// * work handed to ctx-core's runner goes onto its queue, under the queue's
///   lock: the callback of an [`after_func`](Context::after_func) on a context
///   that is already done, and the wakers of tasks parked on a context whose
///   deadline a read (or a child born past its own deadline) finds passed
///   before its timer fired.
///
/// # Limits
///
/// Two limits stop a program that went wrong long before memory would run
/// out:
///
/// * A context holds at least 67 million live children and `after_func`
///   callbacks at once (each costs 100 bytes or more: over 6 GB); up to 16
///   times that when they are made from several threads. Deriving or
///   registering one more than its share of the set (`with_cancel`,
///   `with_timeout`, `after_func`, …) **panics**.
/// * One context has at most 2^30 (about a billion) live handles (clones, and
///   its cancel functions and guards). One more **aborts** the process, as
///   `Arc` does at its own, higher, limit: a count that wrapped around would
///   free a context still in use.
///
/// # Memory
///
/// A context costs one allocation, freed with its last handle (and its last
/// child: children keep their parents). A context with children or
/// `after_func` callbacks also keeps room for about the most of them it held
/// at once (16-byte slots, in segments that double, per thread that made
/// them), reused by later ones, until it is freed: ten
/// million short-lived children of a long-lived context reuse the same few
/// slots. Its waiters beyond the first (`Done` futures and blocking waits)
/// take about 24 bytes each in a list that keeps the room of the most it
/// held at once while any of them waits; when the last one goes, it gives
/// its room back, unless that room is for 16 or fewer (under 500 bytes in
/// all, kept for the next waiters).
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, Error};
/// use std::time::Duration;
///
/// /// A library function: takes the context first, gives up when it is done.
/// fn lookup(ctx: &Context, key: &str) -> Result<String, Error> {
///     ctx.check()?;
///     Ok(format!("value of {key}"))
/// }
///
/// let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(5));
/// assert_eq!(lookup(&ctx, "a").as_deref(), Ok("value of a"));
/// cancel.cancel();
/// assert_eq!(lookup(&ctx, "a"), Err(Error::Canceled));
/// ```
///
/// # Memory ordering
///
/// Canceling happens-before every observation of it: when `err()` returns `Some`,
/// `is_done()` returns true, `Done` completes or `wait` returns, everything the
/// canceling thread did before calling cancel is visible, and so is the cause.
pub struct Context {
    /// A strong reference on the node, or a root sentinel.
    node: NodeRef,
}

// SAFETY: all node state shared between handles is atomic or immutable after
// construction, values are `Send + Sync`, and reference counting is atomic.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl Context {
    /// The empty root: never canceled, no deadline, no values (Go's
    /// `context.Background()`). Free: no allocation, no reference counting.
    ///
    /// ```
    /// let ctx = ctx_core::Context::background();
    /// assert_eq!(ctx.err(), None);
    /// assert_eq!(ctx.deadline(), None);
    /// assert_eq!(ctx.to_string(), "context.Background");
    /// ```
    pub const fn background() -> Context {
        Context {
            node: NodeRef::BACKGROUND,
        }
    }

    /// Like [`background`](Context::background), for code that has not decided
    /// which context to use yet (Go's `context.TODO()`); it prints differently.
    pub const fn todo() -> Context {
        Context {
            node: NodeRef::TODO,
        }
    }

    /// Takes over one strong reference on `node`.
    pub(crate) fn from_strong(node: NodeRef) -> Context {
        Context { node }
    }

    /// The node, unless this is a root.
    pub(crate) fn node(&self) -> Option<NodeRef> {
        self.node.real()
    }

    /// A new strong reference on our node (or the sentinel), for a child's parent link.
    pub(crate) fn parent_link(&self) -> NodeRef {
        if let Some(node) = self.node() {
            node.inc_strong();
        }
        self.node
    }

    /// The nearest cancelable node at or above this context.
    #[inline]
    pub(crate) fn carrier(&self) -> Option<NodeRef> {
        self.node()?.carrier()
    }

    fn carrier_ptr(&self) -> *const crate::tree::node::Header {
        self.carrier().map_or(ptr::null(), NodeRef::as_ptr)
    }

    // ===== deriving =====

    /// A child that is canceled when the returned [`CancelFunc`] is called or
    /// dropped, or when this context is (Go's `WithCancel`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::{Context, Error};
    ///
    /// let (parent, cancel_parent) = Context::background().with_cancel();
    /// let (child, _cancel_child) = parent.with_cancel();
    /// cancel_parent.cancel();
    /// assert_eq!(child.err(), Some(Error::Canceled));
    /// ```
    pub fn with_cancel(&self) -> (Context, CancelFunc) {
        let node = self.derive_cancelable(CancelPart::VTABLE, |part| part);
        (Context::from_strong(node), CancelFunc::new(node))
    }

    /// Like [`with_cancel`](Context::with_cancel), but the cancel function takes a
    /// cause, which [`cause`](Context::cause) then reports for the whole subtree
    /// (Go's `WithCancelCause`).
    pub fn with_cancel_cause(&self) -> (Context, CancelCauseFunc) {
        let node = self.derive_cancelable(&CANCEL_CAUSE_VTABLE, |part| part);
        (
            Context::from_strong(node),
            CancelCauseFunc::new(CancelFunc::new(node)),
        )
    }

    /// A child that is also canceled, with [`Error::DeadlineExceeded`], when
    /// `deadline` passes (Go's `WithDeadline`).
    ///
    /// The child's deadline is never later than its parent's: if the parent's
    /// deadline is earlier, this is just [`with_cancel`](Context::with_cancel) and
    /// no timer is armed. A deadline that already passed gives a child that is born
    /// done. The timer is released as soon as the child is done, whatever ended it.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::{Context, Error};
    /// use std::time::{Duration, Instant};
    ///
    /// let (ctx, _cancel) = Context::background().with_deadline(Instant::now() - Duration::from_secs(1));
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// ```
    pub fn with_deadline(&self, deadline: Instant) -> (Context, CancelFunc) {
        self.deadline_child(deadline, None, None, None)
    }

    /// Like [`with_deadline`](Context::with_deadline); when the deadline passes,
    /// [`cause`](Context::cause) reports `cause` (Go's `WithDeadlineCause`).
    pub fn with_deadline_cause(
        &self,
        deadline: Instant,
        cause: impl Into<Cause>,
    ) -> (Context, CancelFunc) {
        self.deadline_child(deadline, Some(cause.into()), None, None)
    }

    /// [`with_deadline`](Context::with_deadline) at `timeout` from now, by this
    /// context's timer clock (Go's `WithTimeout`). A timeout longer than 2^36
    /// seconds (about 2,177 years; `Duration::MAX` too) is cut to that: the
    /// deadline is then centuries away, and never earlier than a shorter
    /// timeout's.
    ///
    /// Keep the [`CancelFunc`] in a named binding: `let (ctx, _) = …` drops it at
    /// once and `ctx` is born canceled. [`with_timeout_guard`](Context::with_timeout_guard)
    /// returns one value instead, which cannot be dropped by accident.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::Context;
    /// use std::time::Duration;
    ///
    /// let (ctx, cancel) = Context::background().with_timeout(Duration::from_millis(10));
    /// ctx.wait();
    /// assert!(ctx.err().unwrap().is_timeout());
    /// # drop(cancel);
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> (Context, CancelFunc) {
        let timer = self.timer_ref();
        let now = timer.now();
        self.deadline_child(saturating_add(now, timeout), None, Some(timer), Some(now))
    }

    /// [`with_timeout`](Context::with_timeout) with a cause for the expiry (Go's
    /// `WithTimeoutCause`).
    pub fn with_timeout_cause(
        &self,
        timeout: Duration,
        cause: impl Into<Cause>,
    ) -> (Context, CancelFunc) {
        let timer = self.timer_ref();
        let now = timer.now();
        self.deadline_child(
            saturating_add(now, timeout),
            Some(cause.into()),
            Some(timer),
            Some(now),
        )
    }

    /// [`with_cancel`](Context::with_cancel) as one value that cancels when
    /// dropped (see [`ContextGuard`]).
    pub fn with_cancel_guard(&self) -> ContextGuard {
        ContextGuard::new(self.with_cancel())
    }

    /// [`with_timeout`](Context::with_timeout) as one value that cancels when
    /// dropped: no `let (ctx, _) = …` trap (see [`ContextGuard`]).
    pub fn with_timeout_guard(&self, timeout: Duration) -> ContextGuard {
        ContextGuard::new(self.with_timeout(timeout))
    }

    /// [`with_deadline`](Context::with_deadline) as one value that cancels when
    /// dropped (see [`ContextGuard`]).
    pub fn with_deadline_guard(&self, deadline: Instant) -> ContextGuard {
        ContextGuard::new(self.with_deadline(deadline))
    }

    /// A child that carries `value`, found again with [`value::<T>()`](Context::value)
    /// from this child and all its descendants (Go's `WithValue`).
    ///
    /// Values are keyed by type, which is Go's "define your own key type" rule
    /// enforced by the compiler: wrap a value in a newtype of your own so no other
    /// package can read or shadow it by accident.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::Context;
    ///
    /// struct RequestId(u64);
    ///
    /// let ctx = Context::background().with_value(RequestId(7));
    /// let (child, _cancel) = ctx.with_cancel();
    /// assert_eq!(child.value::<RequestId>().map(|id| id.0), Some(7));
    /// assert!(child.value::<String>().is_none());
    /// ```
    pub fn with_value<T: Send + Sync + 'static>(&self, value: T) -> Context {
        let node = NodeRef::alloc(
            ValuePart::<T>::VTABLE,
            self.parent_link(),
            self.carrier_ptr(),
            1,
            1,
            ValuePart::new(self.node, value),
        );
        Context::from_strong(node)
    }

    /// The nearest value of type `T` on the way up from this context.
    ///
    /// Found values cost a walk of the nodes up to theirs. A lookup that
    /// misses usually stops at the first value node on the way: each value
    /// node summarizes the value types above it (a 64-bit filter by type id),
    /// and a type it rules out is nowhere above.
    pub fn value<T: Send + Sync + 'static>(&self) -> Option<&T> {
        crate::tree::value::find(self.node())
    }

    /// A child that keeps this context's values but is never canceled and has no
    /// deadline (Go's `WithoutCancel`): for work that must finish even when the
    /// request that started it is gone.
    ///
    /// ```
    /// use ctx_core::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_value(5u8).with_cancel();
    /// let detached = ctx.without_cancel();
    /// cancel.cancel();
    /// assert!(ctx.is_done());
    /// assert!(!detached.is_done());
    /// assert_eq!(detached.value::<u8>(), Some(&5));
    /// ```
    pub fn without_cancel(&self) -> Context {
        let node = NodeRef::alloc(
            Detached::VTABLE,
            self.parent_link(),
            ptr::null(),
            1,
            1,
            Detached,
        );
        Context::from_strong(node)
    }

    /// A child whose subtree uses `timer` for its clock and its deadlines.
    ///
    /// Deadlines derived below it read `timer.now()` and are armed on `timer`;
    /// this context's own cancellation is unchanged. See [`Timer`].
    ///
    /// A deadline above, on another clock, still ends the subtree when its
    /// own timer fires. Instants of two clocks do not compare, so a deadline
    /// derived below always gets a node of its own on `timer` (on one clock,
    /// one later than a deadline above is only a cancel), and
    /// [`deadline`](Context::deadline) below reports the nearest deadline,
    /// on `timer`'s clock. Exact reads ([`err`](Context::err) past a deadline
    /// whose timer is late) look at the nearest deadline only: a late timer
    /// of another clock above is waited for.
    pub fn with_timer(&self, timer: Arc<dyn Timer>) -> Context {
        let node = NodeRef::alloc(
            TimerPart::VTABLE,
            self.parent_link(),
            self.carrier_ptr(),
            1,
            1,
            TimerPart { timer },
        );
        Context::from_strong(node)
    }

    /// A child canceled as soon as *any* of `parents` is, with that parent's error
    /// and cause, or when the returned [`CancelFunc`] is called or dropped.
    ///
    /// Values come from the first parent; the deadline is the earliest of the
    /// parents' (on parents of different clocks, the one with the least time
    /// left, by its own clock). With no parents this is
    /// `background().with_cancel()`, with one it is `parents[0].with_cancel()`.
    /// If several parents are done already (as [`err`](Context::err) sees
    /// them: a passed deadline counts, also while its timer is late), the
    /// child is born done with the first of them in `parents`' order (not the
    /// one that ended first).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::{Context, Error};
    ///
    /// let (request, _cancel_request) = Context::background().with_cancel();
    /// let (shutdown, stop_server) = Context::background().with_cancel();
    /// let (ctx, _cancel) = Context::with_cancel_any(&[request, shutdown]);
    /// stop_server.cancel();
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// ```
    pub fn with_cancel_any(parents: &[Context]) -> (Context, CancelFunc) {
        let Some((first, rest)) = parents.split_first() else {
            return Context::background().with_cancel();
        };
        if rest.is_empty() {
            return first.with_cancel();
        }
        // A parent done already: the ones before it may be done too, by a
        // deadline that passed while its timer is late, which registration
        // (state words only) would miss, and they ended first. Exact reads of
        // those, in order, up to the first found done, record such an expiry
        // (no user code but the backends' clocks, see `err`), so they come
        // before anything exists. Without a done parent, no clock is read:
        // the merge's own reads see a passed deadline above.
        let done_at = parents
            .iter()
            .position(|parent| parent.carrier().is_some_and(|c| state::is_done(c.state())));
        for parent in &parents[..done_at.unwrap_or(0)] {
            if let Some(carrier) = parent.carrier()
                && state::is_done(tree::deadline::exact_word(carrier))
            {
                break;
            }
        }
        let deadline_src = earliest_deadline(parents).map_or(ptr::null(), NodeRef::as_ptr);
        let extra = Links::new(rest);
        let payload = MergePart {
            cancel: CancelPart::new(!deadline_src.is_null()),
            extra,
            deadline_src,
        };
        // Weak references for the parents' slots are added as it registers.
        let node = NodeRef::alloc(
            MergePart::VTABLE,
            first.parent_link(),
            ptr::null(),
            2,
            1,
            payload,
        );
        tree::merge::register_all(node);
        (Context::from_strong(node), CancelFunc::new(node))
    }

    fn derive_cancelable(
        &self,
        vtable: &'static crate::tree::node::VTable,
        payload: impl FnOnce(CancelPart) -> CancelPart,
    ) -> NodeRef {
        let parent_carrier = self.carrier();
        let has_deadline = parent_carrier.is_some_and(|c| c.cancel_part().has_deadline);
        if let Some(done) = parent_carrier.and_then(crate::tree::register::born_done_word) {
            // The parent is done: the child is born done, with nothing to
            // register and nothing to cancel.
            return NodeRef::alloc(
                vtable,
                self.parent_link(),
                ptr::null(),
                2,
                1,
                payload(CancelPart::with_state(has_deadline, done)),
            );
        }
        let (parent, in_set) = tree::register::child_parent_link(self.node, parent_carrier);
        let node = NodeRef::alloc(
            vtable,
            parent,
            ptr::null(),
            2,
            // One weak reference for all strong ones, one for the parent's slot.
            1 + u32::from(parent_carrier.is_some()),
            payload(CancelPart::new(has_deadline)),
        );
        self.link(node, parent_carrier, in_set);
        node
    }

    /// Registers a fresh cancelable node, whose slot's weak reference was counted
    /// at allocation, with its parent carrier; with `in_set`
    /// (`tree::register::child_parent_link`), the registration also
    /// takes the node's reference on us, which its allocation did not (in a
    /// shard of our set: `tree::register::register`). Cancels the node at
    /// once (born done) if the parent is done.
    ///
    /// The reference is taken before anything here can panic (the one panic
    /// is the child set's capacity check, in the slot allocation), and
    /// nothing here runs user code: the node's handles, which may exist
    /// already (`deadline_child`), never drop without it. (Always inlined: the
    /// hot path of every `with_cancel`.)
    #[inline(always)]
    fn link(&self, node: NodeRef, parent_carrier: Option<NodeRef>, in_set: bool) {
        let part = node.cancel_part();
        let parent_ref = in_set.then_some(&part.parent_shard);
        let outcome = parent_carrier
            .map(|carrier| register(carrier, node.as_entry(), Some(&part.slot), parent_ref));
        if let Some(Outcome::Done { reason, back }) = outcome {
            if back {
                node.dec_weak();
            }
            tree::cancel(node, reason, Origin::Explicit);
        }
    }

    fn deadline_child(
        &self,
        deadline: Instant,
        cause: Option<Cause>,
        timer: Option<TimerRef>,
        // The timer's clock as the caller already read it (one read per timeout).
        now: Option<Instant>,
    ) -> (Context, CancelFunc) {
        let timer = timer.unwrap_or_else(|| self.timer_ref());
        // A deadline above that comes first makes ours moot, but only on the
        // same clock: instants of two clocks do not compare (`with_timer`).
        if let Some(src) = self.carrier().and_then(NodeRef::deadline_node) {
            let above = src.deadline_part();
            if above.timer.same(timer) && above.deadline <= deadline {
                return self.with_cancel();
            }
        }
        // The backend's answers first: if one panics, nothing exists yet.
        let now = now.unwrap_or_else(|| timer.now());
        let system_clock = timer.is_system_clock();
        let parent_carrier = self.carrier();
        if now >= deadline
            && let Some(carrier) = parent_carrier
        {
            // Born past its deadline: but if a deadline above has passed too
            // (its timer is late), the parent was done first, and the child
            // must be born with the parent's reason, as it would be had
            // anybody read the parent before (exact deadlines). This read
            // records that expiry (no user code: see `Context::err`), so the
            // registration below finds the parent done. The check asks the
            // backend above, so it comes before anything exists too.
            tree::deadline::exact_word(carrier);
        }
        let payload = DeadlinePart {
            cancel: CancelPart::new(true),
            deadline,
            timer,
            key: AtomicU64::new(0),
            reason: Reason::new(Error::DeadlineExceeded, cause),
            system_clock,
        };
        let (parent, in_set) = tree::register::child_parent_link(self.node, parent_carrier);
        let node = NodeRef::alloc(
            DeadlinePart::VTABLE,
            parent,
            ptr::null(),
            2,
            // One weak reference for all strong ones, one for the parent's slot.
            1 + u32::from(parent_carrier.is_some()),
            payload,
        );
        // The handles exist before any backend code runs: if `arm` panics, the
        // unwinding drops them, which cancels and releases the node.
        let handles = (Context::from_strong(node), CancelFunc::new(node));
        self.link(node, parent_carrier, in_set);
        if !state::is_done(node.state()) {
            if now >= deadline {
                let reason = node.deadline_part().reason.clone();
                tree::cancel(node, reason, Origin::Explicit);
            } else {
                tree::deadline::arm(node);
            }
        }
        handles
    }

    // ===== reading =====

    /// The carrier's state word, after the exact-deadline check.
    #[inline]
    fn word(&self) -> Option<(NodeRef, Word)> {
        let carrier = self.carrier()?;
        Some((carrier, tree::deadline::exact_word(carrier)))
    }

    /// Why this context is done, or `None` while it is live (Go's `Err()`).
    ///
    /// Deadlines are exact: once the deadline has passed by the timer's clock, this
    /// reports [`Error::DeadlineExceeded`] even if the timer has not fired yet, and
    /// keeps reporting it (a cancel that comes after the deadline changes nothing,
    /// read or not in between). A read never runs user code and never walks the
    /// subtree: the descendants and `after_func` callbacks are reached by the
    /// timer's expiry (or the next cancel), not by the reader.
    ///
    /// A read sees this context's own state, so while another thread's cancel
    /// is still on its way down the tree, an ancestor may read as done and this
    /// context not yet (as in Go, whose `Err` is an atomic load of the error
    /// that `cancel` stores before it cancels the children). Once that cancel
    /// call has returned, the whole subtree reads as done. A passed deadline
    /// above is the exception: a read below it sees it at once. (Reads look at
    /// the nearest deadline only: below a [`with_timer`](Context::with_timer)
    /// and a deadline of that timer's clock, a passed deadline of another clock
    /// further up is seen once its timer fires.)
    #[inline]
    pub fn err(&self) -> Option<Error> {
        let carrier = self.carrier()?;
        let word = carrier.state();
        // SAFETY: `self` keeps the carrier, and so its record, alive.
        if let Some(record) = unsafe { state::record(word) } {
            // Done: one load and one test, no deadline to look at.
            return Some(record.err);
        }
        if !carrier.cancel_part().has_deadline {
            return None;
        }
        let word = tree::deadline::check(carrier, word);
        // SAFETY: as above.
        unsafe { state::record(word) }.map(|r| r.err)
    }

    /// Whether this context is done; `err().is_some()`, as one load on a live
    /// context without deadline.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.word().is_some_and(|(_, word)| state::is_done(word))
    }

    /// `Err(e)` if the context is done: the `?`-friendly form of [`err`](Context::err).
    #[inline]
    pub fn check(&self) -> Result<(), Error> {
        match self.err() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Why this context was canceled (Go's `context.Cause`): the cause given to the
    /// cancel (or deadline) that ended it, inherited from the ancestor that was
    /// canceled, or the plain [`Error`] when none was given. `None` while live.
    pub fn cause(&self) -> Option<Cause> {
        let (_, word) = self.word()?;
        // SAFETY: `self` keeps the carrier, and so its record, alive.
        unsafe { state::record(word) }.map(|r| r.cause.clone())
    }

    /// When this context will be canceled by a deadline, if it has one (Go's
    /// `Deadline()`).
    pub fn deadline(&self) -> Option<Instant> {
        let src = self.carrier()?.deadline_node()?;
        Some(src.deadline_part().deadline)
    }

    /// Time left until the deadline (zero once it passed), or `None` without a
    /// deadline.
    ///
    /// Measured by the clock of the timer the deadline was made under, the one
    /// that fires it and that `err()` checks it against: a `with_timer` below
    /// the deadline, with a clock of its own, changes neither.
    pub fn remaining(&self) -> Option<Duration> {
        let src = self.carrier()?.deadline_node()?;
        let part = src.deadline_part();
        Some(part.deadline.saturating_duration_since(part.timer.now()))
    }

    /// The timer backend of this context's subtree.
    pub fn timer(&self) -> Arc<dyn Timer> {
        for node in self.node().into_iter().flat_map(NodeRef::ancestors) {
            if node.kind() == Kind::Timer {
                // SAFETY: timer nodes carry a `TimerPart`.
                return unsafe { node.payload::<TimerPart>() }.timer.clone();
            }
        }
        timer::default_timer()
    }

    /// [`timer`](Context::timer), borrowed: valid as long as this context is,
    /// and so in every node derived from it (which keeps it alive).
    fn timer_ref(&self) -> TimerRef {
        for node in self.node().into_iter().flat_map(NodeRef::ancestors) {
            match node.kind() {
                Kind::Timer => {
                    // SAFETY: timer nodes carry a `TimerPart`; the node owning
                    // the timer is this context's or an ancestor's, so it lives
                    // as long as this context and every node derived from it.
                    return unsafe { TimerRef::new(&*node.payload::<TimerPart>().timer) };
                }
                // A deadline node borrows from the same owner.
                Kind::Deadline => return node.deadline_part().timer,
                _ => {}
            }
        }
        // SAFETY: the default timer is a static.
        unsafe { TimerRef::new(timer::StdTimer::global_static()) }
    }

    /// The current time by this context's timer clock.
    pub fn now(&self) -> Instant {
        self.timer_ref().now()
    }

    /// How many cancelable children and `after_func` callbacks are registered with
    /// the node that carries this context's cancellation (Go's tests read
    /// `len(children)`). A child leaves the count when it is canceled or dropped.
    pub fn live_children(&self) -> usize {
        self.carrier().map_or(0, |c| c.cancel_part().children.len())
    }

    /// Whether both handles are the same context: `self == other`.
    pub fn same(&self, other: &Context) -> bool {
        self == other
    }

    // ===== waiting =====

    /// A future that completes when this context is done (Go's `Done()`).
    ///
    /// It works on any executor; see [`Done`].
    pub fn done(&self) -> Done {
        Done::new(self.clone())
    }

    /// Like [`done`](Context::done), but borrowing this context instead of
    /// cloning it: no reference-count traffic, for a check-and-wait in place
    /// (`select!` arms inside the function that holds the context).
    ///
    /// ```
    /// use ctx_core::Context;
    /// use std::future::Future;
    /// use std::pin::pin;
    /// use std::task::{Context as Cx, Poll, Waker};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let mut done = pin!(ctx.done_ref());
    /// assert_eq!(done.as_mut().poll(&mut Cx::from_waker(Waker::noop())), Poll::Ready(()));
    /// ```
    pub fn done_ref(&self) -> Done<&Context> {
        Done::new(self)
    }

    /// Blocks the current thread until this context is done.
    ///
    /// Blocks forever on a context that can never be canceled.
    ///
    /// The thread parks on the context and is woken by its end. Deadlines are
    /// exact, so the wait also wakes by itself at the context's deadline if
    /// the timer is late. On a clock other than the system's (a paused or
    /// manual one), whose time cannot be slept on, it reads the context again
    /// at least every second (so it sees the clock moved past the deadline),
    /// and while that clock stands still, after 1 ms, then twice as long each
    /// time (not in a loop).
    ///
    /// It blocks the thread, so not from an async task: await
    /// [`done`](Context::done) there. On a single-threaded runtime the wait
    /// holds the one thread that a cancel by another task of that runtime
    /// needs to run (a deadline still ends it, read by the wait itself), and
    /// under paused test time that clock cannot move while the runtime's
    /// thread is blocked.
    #[cfg(not(all(test, ctx_loom)))]
    pub fn wait(&self) {
        crate::waiter::wait_until(self, None);
    }

    /// Blocks until this context is done or `timeout` elapsed; true if it is done.
    #[cfg(not(all(test, ctx_loom)))]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(saturating_add(Instant::now(), timeout))
    }

    /// Blocks until this context is done or `deadline` passed (by the system
    /// clock); true if it is done. The `_until` suffix marks absolute-time forms
    /// throughout ctx (`sleep_until` in the adapters too).
    #[cfg(not(all(test, ctx_loom)))]
    pub fn wait_until(&self, deadline: Instant) -> bool {
        crate::waiter::wait_until(self, Some(deadline))
    }

    /// The old name of [`wait_until`](Context::wait_until).
    #[doc(hidden)]
    #[cfg(not(all(test, ctx_loom)))]
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.wait_until(deadline)
    }

    /// Runs `f` once this context is done (Go's `AfterFunc`).
    ///
    /// `f` runs once, after the context is done (and, when a cancel sets it
    /// free, after that cancel finished the whole subtree), on ctx-core's runner
    /// threads, in a job of its own (Go runs it in a goroutine of its own):
    /// never on the thread that cancels (a cancel does not wait for `f`, which
    /// may wait for what the canceler does next), never on a timer's thread, and
    /// never on this thread (if the context is already done, `f` is started at
    /// once, as in Go, even while another thread's cancel is still closing
    /// descendants; this thread may hold a lock `f` takes). Callbacks do not
    /// wait for each other: one that blocks holds back no other (the runner
    /// starts threads as its jobs block). The adapter crates offer variants that
    /// spawn `f` on their executor. [`AfterFunc::stop`] prevents a run that has
    /// not started; once the context reports done, it has.
    ///
    /// A registered `f` lives as long as the context can still be canceled,
    /// and so does what it captured. A handle of this context captured by `f`
    /// keeps the context (and so `f`) alive: if nothing is left that could
    /// cancel it (its [`Canceler`](crate::Canceler)s dropped, which cancel
    /// nothing when they go, unlike a [`CancelFunc`]; no
    /// parent that can end), the two keep each other for the rest of the
    /// process, as any `Arc` cycle.
    /// Capture what `f` needs of the context instead (a value it carries), and
    /// take its error and cause from
    /// [`after_func_with`](Context::after_func_with).
    ///
    /// # Panics
    ///
    /// A panicking `f` disturbs nothing: the cancel and every other callback are
    /// unaffected, and the panic, reported by the panic hook, ends with `f`'s
    /// job.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctx_core::Context;
    /// use std::sync::mpsc;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, rx) = mpsc::channel();
    /// let _registration = ctx.after_func(move || tx.send("closed").unwrap());
    /// cancel.cancel();
    /// assert_eq!(rx.recv().unwrap(), "closed");
    /// ```
    pub fn after_func<F: FnOnce() + Send + 'static>(&self, f: F) -> AfterFunc {
        after_func::register(self, Box::new(move |_, _| f()))
    }

    /// Like [`after_func`](Context::after_func), handing `f` the context's error
    /// and cause, as a callback that logs or reports them wants.
    ///
    /// ```
    /// use ctx_core::{Cause, Context};
    /// use std::sync::mpsc;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel_cause();
    /// let (tx, rx) = mpsc::channel();
    /// let _registration = ctx.after_func_with(move |err, cause| {
    ///     tx.send(format!("{err}: {cause}")).unwrap();
    /// });
    /// cancel.cancel(Cause::msg("user hung up"));
    /// assert_eq!(rx.recv().unwrap(), "context canceled: user hung up");
    /// ```
    pub fn after_func_with<F: FnOnce(Error, Cause) + Send + 'static>(&self, f: F) -> AfterFunc {
        after_func::register(self, Box::new(f))
    }
}

/// The farthest a timeout reaches: 2^36 seconds, about 2,177 years. Longer
/// timeouts are cut to it ([`saturating_add`]).
const FARTHEST: Duration = Duration::from_secs(1 << 36);

/// `at + by`, with `by` cut to [`FARTHEST`] (or, where `Instant` cannot
/// reach that far past `at`, to the largest half of it that fits): never an
/// overflow, and a longer timeout never gives an earlier deadline.
pub(crate) fn saturating_add(at: Instant, by: Duration) -> Instant {
    // Every timeout a program means: one add, as a plain `at + by` costs.
    if by <= FARTHEST
        && let Some(sum) = at.checked_add(by)
    {
        return sum;
    }
    // Otherwise the largest half of `FARTHEST` that fits past `at` (the
    // same for every `by`, so a longer timeout never gets an earlier
    // deadline). Ends: `at + 0` always fits.
    let mut limit = FARTHEST;
    while at.checked_add(limit).is_none() {
        limit /= 2;
    }
    at + by.min(limit)
}

impl Clone for Context {
    #[inline]
    fn clone(&self) -> Context {
        Context {
            node: self.parent_link(),
        }
    }
}

impl Drop for Context {
    #[inline]
    fn drop(&mut self) {
        if let Some(node) = self.node() {
            node.dec_strong();
        }
    }
}

impl PartialEq for Context {
    /// Identity: two handles are equal when they are clones of one context (as
    /// tokio-util's tokens compare). Two separately derived children are never
    /// equal, even with the same parent and values; `background()` equals
    /// `background()`.
    fn eq(&self, other: &Context) -> bool {
        self.node == other.node
    }
}

impl Eq for Context {}

impl std::hash::Hash for Context {
    /// Hashes the identity, consistent with `==`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.node.as_ptr().hash(state);
    }
}

impl Default for Context {
    /// [`Context::background`].
    fn default() -> Context {
        Context::background()
    }
}

/// The deadline node among `parents`' whose deadline comes first: on one
/// clock, the earliest instant; across clocks (instants of two clocks do not
/// compare, see [`Context::with_timer`]), the least time left, each by its own
/// clock, read once per clock.
fn earliest_deadline(parents: &[Context]) -> Option<NodeRef> {
    // Found once: each is a walk up that parent's chain.
    let sources: SmallVec<[NodeRef; 4]> = parents
        .iter()
        .filter_map(Context::carrier)
        .filter_map(NodeRef::deadline_node)
        .collect();
    let first = sources.first()?.deadline_part().timer;
    if sources
        .iter()
        .all(|src| src.deadline_part().timer.same(first))
    {
        return sources
            .into_iter()
            .min_by_key(|src| src.deadline_part().deadline);
    }
    let mut clocks: SmallVec<[(TimerRef, Instant); 2]> = SmallVec::new();
    sources.into_iter().min_by_key(|src| {
        let part = src.deadline_part();
        let now = match clocks.iter().find(|(timer, _)| timer.same(part.timer)) {
            Some(&(_, now)) => now,
            None => {
                let now = part.timer.now();
                clocks.push((part.timer, now));
                now
            }
        };
        part.deadline.saturating_duration_since(now)
    })
}

impl fmt::Display for Context {
    /// Modelled on Go's `String()`: the chain of constructors from the root,
    /// such as `context.Background.WithValue(u32).WithCancel`.
    ///
    /// It says more or less than Go's in places: `with_cancel_cause` prints
    /// `.WithCancelCause` (Go: `.WithCancel`); a deadline prints the time left
    /// or past by its clock (a `Duration`'s `Debug`), such as
    /// `.WithDeadline(in 1.499936637s)` or `.WithDeadline(2.137907ms ago)` (Go:
    /// the instant and the time left); a value prints its type only,
    /// `.WithValue(u32)` (Go: its key and value; a value here need not be
    /// `Debug`); `with_cancel_any` prints `.WithCancelAny(+n)` after its first
    /// parent's chain, `n` further parents; `with_timer` prints `.WithTimer`.
    /// The text is for people, not for parsing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain: Vec<NodeRef> = self
            .node()
            .into_iter()
            .flat_map(NodeRef::ancestors)
            .collect();
        let root = chain.last().map_or(self.node, |top| top.header().parent);
        f.write_str(if root == NodeRef::TODO {
            "context.TODO"
        } else {
            "context.Background"
        })?;
        for current in chain.into_iter().rev() {
            let vtable = current.header().vtable;
            match vtable.kind {
                Kind::Cancel => f.write_str(".WithCancel")?,
                Kind::CancelCause => f.write_str(".WithCancelCause")?,
                Kind::Deadline => {
                    let part = current.deadline_part();
                    let now = part.timer.now();
                    if part.deadline >= now {
                        write!(f, ".WithDeadline(in {:?})", part.deadline - now)?
                    } else {
                        write!(f, ".WithDeadline({:?} ago)", now - part.deadline)?
                    }
                }
                Kind::Merge => write!(f, ".WithCancelAny(+{})", current.merge_part().extra.len())?,
                Kind::Value => write!(f, ".WithValue({})", (vtable.type_name)())?,
                Kind::WithoutCancel => f.write_str(".WithoutCancel")?,
                Kind::Timer => f.write_str(".WithTimer")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Context {
    /// The name (as `Display`), the error, and the time left until the deadline
    /// by the context's clock (an `Instant` means nothing to a reader).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &format_args!("{self}"))
            .field("err", &self.err())
            .field("remaining", &self.remaining())
            .finish()
    }
}
