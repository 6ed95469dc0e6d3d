//! [`scope`]: scoped threads with error-group semantics (Go's
//! `errgroup.WithContext`, on `std::thread::scope`).
//!
//! # How it works
//!
//! `scope` runs the body inside `std::thread::scope`, so every thread is joined
//! before `scope` returns and threads may borrow from the caller's stack. What a
//! thread's outcome means (acceptance, the first failure as the cause, panics,
//! stop) is ctx-core's [`GroupCancel`]: each thread runs its closure through it,
//! and once every thread is joined the core finishes the group (cancels the
//! context, as Go's `Wait` does, and returns the first failure).
//!
//! Under a limit, `spawn` blocks the spawning thread until a slot is free (Go's
//! `SetLimit`): a counter under a mutex, a condition variable, and an
//! `after_func` on the group's context that wakes the spawners when it is done,
//! so a spawner never waits for a slot in a canceled group.
//!
//! A thread of the group holds a slot itself, so it must never wait for one: if
//! every slot holder did, none would ever be freed. Each thread the group starts
//! marks itself in a thread-local (with its group's address); `spawn` from a
//! marked thread of the same group takes a free slot if there is one and
//! otherwise runs the closure right there, in the caller's slot (Go's
//! `if !g.TryGo(f) { f() }`).

use ctx_core::adapter::GroupCancel;
use ctx_core::{AfterFunc, BoxError, Cause, Context};
use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

/// Shared by every adapter (defined in ctx-core, so causes compare across runtimes).
pub use ctx_core::PanicError;

/// Runs `f` with a [`Group`] of scoped threads that share a context; the first
/// failure cancels them all. Returns `f`'s value, or the first failure.
///
/// This is Go's `errgroup.WithContext` on [`std::thread::scope`]: threads can
/// borrow from the caller's stack, and all of them are joined before `scope`
/// returns. Each thread gets the group's [`Context`] (a child of `parent`) and
/// returns `Result<(), E>` for any `E: Into<BoxError>` (any `std::error::Error`,
/// `anyhow::Error`, `Box<dyn Error + Send + Sync>`, a `String`, or a [`Cause`]
/// itself, which is kept as it is). The first thread that
/// returns `Err` (or panics) cancels the group's context with that error as its
/// [cause](Context::cause); `scope` then returns `Err` with that same cause.
/// (When something else ended the group's context first, its parent or a
/// deadline, the context keeps that cause, and `scope` still returns the
/// first thread's error, as Go's `errgroup` does.)
///
/// * No closure is accepted after the group's context is done:
///   [`Group::spawn`] returns `false` and drops it uncalled. A closure that was
///   accepted (`true`) is always called, exactly once, even if the group is
///   canceled before its thread gets to run it: it then gets a context that is
///   already done, and should return at once. (The same rule holds in every
///   adapter's group.)
/// * Threads are not interrupted; each should return once its context is done
///   (check [`Context::err`], or block in [`sleep`](fn@crate::sleep) or
///   [`wait_timeout`](crate::wait_timeout)), as in Go.
/// * **A panicking thread is caught and reported as an error**, a
///   [`PanicError`], so it cancels its siblings like any other failure and
///   `scope` returns it; it is not re-raised. A panic of `f` itself cancels the
///   group, waits for the threads, and is then resumed (as `std::thread::scope`
///   does).
/// * After every thread has finished, the group's context is canceled.
///
/// # Errors
///
/// The first thread failure (or [`PanicError`]), as a [`Cause`]: the same one
/// the group's context was canceled with.
///
/// # Examples
///
/// ```
/// use ctx_blocking::sleep;
/// use ctx_core::Cause;
/// use std::io;
/// use std::time::Duration;
///
/// let inputs = vec![1, 2, 3];
/// let result = ctx_blocking::scope(&ctx_blocking::background(), |group| {
///     for &n in &inputs {
///         group.spawn(move |ctx| {
///             sleep(&ctx, Duration::from_millis(n))?; // canceled by the failure
///             if n == 2 {
///                 return Err(Cause::new(io::Error::other("bad input 2")));
///             }
///             sleep(&ctx, Duration::from_secs(3600))?;
///             Ok(())
///         });
///     }
///     "all spawned"
/// });
/// assert_eq!(result.unwrap_err().to_string(), "bad input 2");
/// ```
///
/// Tasks return whatever error type the program uses, and the group's error goes
/// on with `?` — into `Box<dyn Error + Send + Sync>`:
///
/// ```
/// use std::error::Error;
///
/// fn import() -> Result<usize, Box<dyn Error + Send + Sync>> {
///     let rows = ctx_blocking::scope(&ctx_blocking::background(), |group| {
///         group.spawn(|_ctx| -> Result<(), Box<dyn Error + Send + Sync>> {
///             Err("row 7 is corrupt".into())
///         });
///         10
///     })?;
///     Ok(rows)
/// }
///
/// assert_eq!(import().unwrap_err().to_string(), "row 7 is corrupt");
/// ```
///
/// or into `anyhow::Result` (with ctx-core's `anyhow` feature):
///
/// ```
/// fn import() -> anyhow::Result<usize> {
///     let rows = ctx_blocking::scope(&ctx_blocking::background(), |group| {
///         group.spawn(|_ctx| -> anyhow::Result<()> { anyhow::bail!("row 7 is corrupt") });
///         10
///     })?;
///     Ok(rows)
/// }
///
/// assert_eq!(import().unwrap_err().to_string(), "row 7 is corrupt");
/// ```
pub fn scope<'env, F, T>(parent: &Context, f: F) -> Result<T, Cause>
where
    F: for<'scope> FnOnce(&Group<'scope, 'env>) -> T,
{
    run(parent, None, f)
}

/// Like [`scope`], with at most `limit` closures running at once (Go's
/// `SetLimit`): [`Group::spawn`] blocks while `limit` threads run, except on a
/// thread of the group itself, which runs the closure in its own slot instead
/// (see [`Group::spawn`]).
///
/// # Errors
///
/// As [`scope`].
///
/// # Panics
///
/// If `limit` is 0.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let done = AtomicUsize::new(0);
/// ctx_blocking::scope_with_limit(&ctx_blocking::background(), 2, |group| {
///     for _ in 0..8 {
///         group.spawn(|_ctx| {
///             done.fetch_add(1, Ordering::SeqCst);
///             Ok::<(), std::io::Error>(())
///         });
///     }
/// })
/// .unwrap();
/// assert_eq!(done.load(Ordering::SeqCst), 8);
/// ```
pub fn scope_with_limit<'env, F, T>(parent: &Context, limit: usize, f: F) -> Result<T, Cause>
where
    F: for<'scope> FnOnce(&Group<'scope, 'env>) -> T,
{
    assert!(
        limit > 0,
        "ctx_blocking::scope_with_limit: the limit must be at least 1"
    );
    run(parent, Some(limit), f)
}

/// The handle the body of [`scope`] spawns threads with.
///
/// Cloning it is cheap; a clone can be moved into a thread to spawn more
/// threads into the same group (under a limit, see [`Group::spawn`] for what
/// that does when the group is full).
pub struct Group<'scope, 'env: 'scope> {
    scope: &'scope thread::Scope<'scope, 'env>,
    state: Arc<State>,
}

struct State {
    /// The group's rules: its context, first failure and stop.
    core: GroupCancel,
    limit: Option<Arc<Limit>>,
}

/// Slots for a limited group.
struct Limit {
    max: usize,
    slots: Mutex<Slots>,
    /// Signaled when a slot frees up or the group's context is done.
    changed: Condvar,
}

/// The counts behind [`Limit`]'s lock.
#[derive(Default)]
struct Slots {
    /// Slots taken.
    running: usize,
    /// Spawners blocked until a slot frees up. A freed slot is theirs: while
    /// one waits, `try_spawn` refuses (as Go's `TryGo` does while a `Go` is
    /// blocked: a freed slot goes to the blocked sender first).
    waiting: usize,
    /// The group's context is done (set by its `after_func`): blocked
    /// spawners give up.
    done: bool,
}

impl Slots {
    /// Takes a free slot if there is one that no blocked spawner waits for.
    fn take_free(&mut self, max: usize) -> bool {
        let free = self.running < max && self.waiting == 0;
        if free {
            self.running += 1;
        }
        free
    }
}

fn run<'env, F, T>(parent: &Context, limit: Option<usize>, f: F) -> Result<T, Cause>
where
    F: for<'scope> FnOnce(&Group<'scope, 'env>) -> T,
{
    let core = GroupCancel::new(parent.with_cancel_cause().1);
    let limit = limit.map(|max| {
        Arc::new(Limit {
            max,
            slots: Mutex::new(Slots::default()),
            changed: Condvar::new(),
        })
    });
    // Wakes spawners blocked on a full group once the context is done. Dropping
    // the handle keeps the registration; it runs at the latest when `run` cancels.
    let _wake: Option<AfterFunc> = limit.as_ref().map(|limit| {
        let limit = limit.clone();
        core.context().after_func(move || limit.close())
    });
    let state = Arc::new(State { core, limit });
    let value = thread::scope(|scope| {
        let group = Group {
            scope,
            state: state.clone(),
        };
        let _on_panic = CancelOnUnwind(&state);
        f(&group)
    });
    state.core.finish().map(|()| value)
}

impl<'scope> Group<'scope, '_> {
    /// The group's context: canceled by the first failure, by
    /// [`stop`](Group::stop), once every thread is joined, or with its parent.
    pub fn context(&self) -> &Context {
        self.state.core.context()
    }

    /// Spawns a scoped thread running `f(ctx)`.
    ///
    /// Returns `false`, without calling `f`, if the group's context is already
    /// done. Returns `true` if `f` was accepted: it will be called exactly once,
    /// with the group's context, even if the group is canceled before the thread
    /// runs it (then that context is already done).
    ///
    /// # Limits and spawning from the group's own threads
    ///
    /// Under a limit ([`scope_with_limit`]), `spawn` blocks until a slot is free;
    /// if the context is done first, it returns `false`. Called from one of the
    /// group's own threads (a clone of the group moved into it), it never waits:
    /// that thread already holds a slot, and waiting for another could deadlock
    /// (with `limit` 1, forever). It takes a free slot if there is one that no
    /// blocked spawner waits for, and otherwise runs `f` right there, on the
    /// calling thread, in the caller's slot, returning `true` once `f` has
    /// returned (its error or panic is
    /// recorded like any thread's). Only the group's own threads count as inside:
    /// a thread that one of them starts itself, and joins, spawns like an
    /// outsider and can deadlock a full group.
    ///
    /// # Panics
    ///
    /// If the OS fails to create a thread (as [`std::thread::Scope::spawn`]).
    /// `f` is then dropped without being called, and the slot it took under a
    /// limit is free again.
    pub fn spawn<F, E>(&self, f: F) -> bool
    where
        F: FnOnce(Context) -> Result<(), E> + Send + 'scope,
        E: Into<BoxError>,
    {
        if !self.state.core.accepts() {
            return false;
        }
        if let Some(limit) = &self.state.limit {
            if self.state.is_current_thread() {
                if !limit.try_acquire() {
                    // Full, and this thread holds a slot: run `f` in it.
                    self.state.core.run(f);
                    return true;
                }
            } else if !limit.acquire(self.context()) {
                return false;
            }
        }
        self.launch(f);
        true
    }

    /// Spawns `f(ctx)` only if it can start at once: the context is live and,
    /// under a limit, a slot is free (Go's `TryGo`). Returns whether it did
    /// (`true` means `f` will be called). A freed slot goes to the spawners
    /// blocked in [`spawn`](Group::spawn) first: while one waits, this refuses.
    /// It never runs `f` on the calling thread. Without a limit this is
    /// [`spawn`](Group::spawn).
    ///
    /// # Panics
    ///
    /// If the OS fails to create a thread, as [`spawn`](Group::spawn) does.
    pub fn try_spawn<F, E>(&self, f: F) -> bool
    where
        F: FnOnce(Context) -> Result<(), E> + Send + 'scope,
        E: Into<BoxError>,
    {
        let Some(limit) = &self.state.limit else {
            return self.spawn(f);
        };
        if !self.state.core.accepts() || !limit.try_acquire() {
            return false;
        }
        self.launch(f);
        true
    }

    /// Cancels the group's context. Errors the threads return after the stop are
    /// its doing and are not reported (panics still are); an error from before the
    /// stop is. [`scope`] still joins every thread before it returns.
    pub fn stop(&self) {
        self.state.core.stop();
    }

    /// Starts a thread that already holds its slot (if the group is limited).
    fn launch<F, E>(&self, f: F)
    where
        F: FnOnce(Context) -> Result<(), E> + Send + 'scope,
        E: Into<BoxError>,
    {
        let state = self.state.clone();
        // Made here and moved into the thread: if the OS refuses the thread,
        // `spawn` drops the closure as it panics, and the slot goes back.
        let slot = state.limit.clone().map(Slot);
        self.scope.spawn(move || {
            let _slot = slot;
            let _inside = Inside::enter(&state);
            state.core.run(f);
        });
    }
}

impl Clone for Group<'_, '_> {
    fn clone(&self) -> Self {
        Group {
            scope: self.scope,
            state: self.state.clone(),
        }
    }
}

impl fmt::Debug for Group<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("ctx", self.context())
            .field("limit", &self.state.limit.as_ref().map(|l| l.max))
            .field("first_error", &self.state.core.first())
            .finish_non_exhaustive()
    }
}

// ===== impl State =====

impl State {
    /// Whether the calling thread is one this group started (module docs).
    fn is_current_thread(&self) -> bool {
        CURRENT_GROUP.get() == std::ptr::from_ref(self) as usize
    }
}

thread_local! {
    /// The address of the group whose thread this is, or 0 (module docs).
    static CURRENT_GROUP: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as one of a group's for as long as it lives.
struct Inside(usize);

impl Inside {
    fn enter(state: &State) -> Inside {
        Inside(CURRENT_GROUP.replace(std::ptr::from_ref(state) as usize))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        CURRENT_GROUP.set(self.0);
    }
}

/// Cancels the group if the body of `scope` panics, before `std::thread::scope`
/// joins the threads (so they are told to stop instead of being waited for).
struct CancelOnUnwind<'a>(&'a State);

impl Drop for CancelOnUnwind<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.core.cancel();
        }
    }
}

// ===== impl Limit =====

impl Limit {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot, waiting for one; false if `ctx` is done first.
    ///
    /// The context is read outside the lock: below a deadline a read asks the
    /// timer backend's clock, which is the backend's code. Read under the lock,
    /// a clock that blocks would hold up every other spawner and every thread
    /// giving its slot back; one that panics would poison the lock.
    fn acquire(&self, ctx: &Context) -> bool {
        if ctx.is_done() {
            return false;
        }
        let mut slots = self.lock();
        if slots.done {
            return false;
        }
        if slots.take_free(self.max) {
            return true;
        }
        slots.waiting += 1;
        loop {
            drop(slots);
            let read = catch_unwind(AssertUnwindSafe(|| {
                (!ctx.is_done()).then(|| ctx.remaining())
            }));
            slots = self.lock();
            let left = match read {
                Ok(Some(left)) => left,
                Ok(None) => break,
                Err(payload) => {
                    // Uncounted before the panic goes on: counted, it would
                    // make `try_spawn` refuse for good.
                    self.leave(&mut slots);
                    drop(slots);
                    resume_unwind(payload)
                }
            };
            // What happened while the lock was free is in `slots`: a slot
            // given back, or the context's end (`done`, set by its
            // `after_func`), so no wake-up is missed between the read and the
            // wait below.
            if slots.done {
                break;
            }
            if slots.running < self.max {
                slots.running += 1;
                slots.waiting -= 1;
                return true;
            }
            slots = match left {
                // The context's `after_func` wakes us when its timer fires,
                // which may be late (the `Timer` contract allows it): never
                // sleep past the deadline itself, so that the exact read at
                // the top gets its turn. (On the timer's clock, converted
                // through the time left.)
                Some(left) => {
                    self.changed
                        .wait_timeout(slots, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(slots)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
        self.leave(&mut slots);
        false
    }

    /// The group's context is done: every blocked spawner gives up.
    fn close(&self) {
        self.lock().done = true;
        self.changed.notify_all();
    }

    /// A waiter that leaves without a slot: uncounted, and a slot it was woken
    /// for goes to the next one.
    fn leave(&self, slots: &mut Slots) {
        slots.waiting -= 1;
        if slots.running < self.max && slots.waiting > 0 {
            self.changed.notify_one();
        }
    }

    /// Takes a slot if one is free and no spawner waits for one.
    fn try_acquire(&self) -> bool {
        self.lock().take_free(self.max)
    }
}

/// A held slot, given back when its thread ends, however it ends, or when
/// its thread cannot be started.
struct Slot(Arc<Limit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};

    fn limit(max: usize) -> Arc<Limit> {
        Arc::new(Limit {
            max,
            slots: Mutex::new(Slots::default()),
            changed: Condvar::new(),
        })
    }

    /// Polls until `limit` counts `n` blocked spawners (a watchdog, not a
    /// timing assertion).
    fn until_waiting(limit: &Limit, n: usize) {
        let start = Instant::now();
        while limit.lock().waiting != n {
            assert!(start.elapsed() < Duration::from_secs(30), "no waiter came");
            thread::yield_now();
        }
    }

    /// A slot freed while a spawner is blocked is that spawner's: `try_spawn`
    /// (and a spawn from inside the group) cannot take it first, as Go's
    /// `TryGo` cannot overtake a blocked `Go`.
    #[test]
    fn a_blocked_spawner_gets_the_freed_slot_before_a_try() {
        let limit = limit(1);
        let ctx = Context::background();
        assert!(limit.try_acquire());
        // The only slot is taken: a spawner blocks.
        let waiter = {
            let (limit, ctx) = (limit.clone(), ctx.clone());
            thread::spawn(move || limit.acquire(&ctx))
        };
        until_waiting(&limit, 1);
        assert!(!limit.try_acquire(), "full");
        // The slot comes back: still the waiter's, until it has taken it.
        drop(Slot(limit.clone()));
        assert!(!limit.try_acquire(), "the freed slot went to a try");
        assert!(waiter.join().unwrap());
        assert_eq!(limit.lock().running, 1);
        assert_eq!(limit.lock().waiting, 0);
        drop(Slot(limit.clone()));
        assert!(limit.try_acquire(), "nobody waits: the slot is free");
    }

    /// A blocked spawner whose context has ended, woken for a freed slot,
    /// leaves it to the next blocked spawner instead of swallowing the wake-up.
    #[test]
    fn a_spawner_that_gives_up_passes_its_wake_up_on() {
        let limit = limit(1);
        assert!(limit.try_acquire());
        let (ctx, cancel) = Context::background().with_cancel();
        let quitter = {
            let limit = limit.clone();
            thread::spawn(move || limit.acquire(&ctx))
        };
        until_waiting(&limit, 1);
        let stayer = {
            let limit = limit.clone();
            thread::spawn(move || limit.acquire(&Context::background()))
        };
        until_waiting(&limit, 2);
        // The quitter's context ends, and nobody tells it yet.
        cancel.cancel();
        // One wake-up for the freed slot, whichever of the two it reaches.
        drop(Slot(limit.clone()));
        let start = Instant::now();
        while !stayer.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the wake-up was lost"
            );
            thread::yield_now();
        }
        assert!(stayer.join().unwrap());
        // What the group's `after_func` does once its context ends.
        limit.close();
        assert!(!quitter.join().unwrap());
        assert_eq!(limit.lock().running, 1);
        assert_eq!(limit.lock().waiting, 0);
    }

    /// A clock that blocks while its gate is shut, counting the reads it
    /// holds (a timer backend's `now` is its own code); it never fires.
    #[derive(Debug, Default)]
    struct GateClock {
        shut: Mutex<bool>,
        opened: Condvar,
        blocked: std::sync::atomic::AtomicUsize,
    }

    impl GateClock {
        fn set_shut(&self, shut: bool) {
            *self.shut.lock().unwrap() = shut;
            self.opened.notify_all();
        }
    }

    impl ctx_core::Timer for GateClock {
        fn now(&self) -> Instant {
            let mut shut = self.shut.lock().unwrap();
            if *shut {
                self.blocked.fetch_add(1, SeqCst);
                while *shut {
                    shut = self.opened.wait(shut).unwrap();
                }
                self.blocked.fetch_sub(1, SeqCst);
            }
            Instant::now()
        }

        fn arm(&self, _: Instant, _: ctx_core::Expiry) -> Option<ctx_core::TimerKey> {
            None
        }

        fn disarm(&self, _: ctx_core::TimerKey) {}
    }

    /// A blocked spawner reads its context, and so the clock below its
    /// deadline, outside the lock: a clock that blocks holds up that spawner
    /// alone, not a `try_spawn` nor a thread giving its slot back. (The read
    /// was under the lock.)
    #[test]
    fn a_spawner_whose_clock_blocks_holds_up_nobody_else() {
        let limit = limit(1);
        let clock = Arc::new(GateClock::default());
        let (ctx, _cancel) = Context::background()
            .with_timer(clock.clone())
            .with_timeout(Duration::from_secs(3600));
        assert!(limit.try_acquire());
        let spawner = {
            let limit = limit.clone();
            thread::spawn(move || limit.acquire(&ctx))
        };
        until_waiting(&limit, 1);
        clock.set_shut(true);
        // The slot comes back: the spawner wakes, and its read blocks.
        drop(Slot(limit.clone()));
        let start = Instant::now();
        while clock.blocked.load(SeqCst) == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "no read came");
            thread::yield_now();
        }
        // Another user of the lock, watched: the clock opens either way, so
        // that a failure leaves no thread behind.
        let (done, finished) = std::sync::mpsc::channel();
        let probe = {
            let limit = limit.clone();
            thread::spawn(move || {
                // The freed slot is the blocked spawner's.
                let refused = !limit.try_acquire();
                drop(limit.lock());
                done.send(()).unwrap();
                refused
            })
        };
        let held_up = finished.recv_timeout(Duration::from_secs(10)).is_err();
        clock.set_shut(false);
        assert!(
            probe.join().unwrap(),
            "a try took the blocked spawner's slot"
        );
        assert!(!held_up, "the lock was held while the clock blocked");
        assert!(spawner.join().unwrap(), "the spawner got the slot");
        assert_eq!(limit.lock().running, 1);
        assert_eq!(limit.lock().waiting, 0);
    }
}
