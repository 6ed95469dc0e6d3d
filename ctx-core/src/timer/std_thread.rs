//! The built-in timer: sharded deadline heaps, and one background thread,
//! started on first use, that fires them.
//!
//! The first arm starts the thread before it touches a heap: an arm that
//! cannot start it (the process is short of memory or threads) panics having
//! armed nothing, and the next arm tries again. (Started after the push, a
//! thread that failed left an entry no thread would fire, and the wake-up
//! mark lowered to it, so later arms saw no reason to start one.)
//!
//! # Arming
//!
//! The deadlines live in a few *shards*, each a binary heap behind a mutex of
//! its own. A thread arms into its own shard (threads are spread over the shards
//! round-robin, the first time they arm), so arming takes a lock no other thread
//! usually wants, pushes onto a heap, and touches no cache line another thread
//! writes: no queue shared by every arming thread, no counter shared by them.
//! The key it returns names the shard.
//!
//! Each shard publishes the earliest deadline it may hold (`next`, never later
//! than its heap's top); the thread publishes the deadline it sleeps towards
//! (`wake_at`). An arm wakes the thread only when it lowers both: the common
//! case (a timeout canceled long before it expires, armed while earlier ones
//! are pending) never calls into the thread at all.
//!
//! # Disarming
//!
//! Disarming is a counter update on the key's shard and nothing else: a disarmed
//! entry stays in its heap, holding only a weak reference, and does nothing when
//! it surfaces (its context is done or gone). So that those entries cannot pile
//! up, a disarm that finds more disarms since the shard's last sweep than half
//! its heap's length sweeps it (keeping the entries whose context is not done):
//! each shard holds at most about twice its armed timers, and each sweep is paid
//! for by the disarms before it, so memory stays proportional to the armed
//! timers and a disarm costs O(1) amortized, on the disarming thread (which also
//! frees the contexts' memory there, where it was allocated).
//!
//! # The thread
//!
//! The thread sleeps until the earliest `next`; it pops what is due from the
//! shards whose `next` has passed, fires it outside the shard's lock, and sleeps
//! again. A shard whose lock is held for long (a sweep) is skipped and looked at
//! again 50 µs later, so that one big shard's sweep does not hold up the
//! deadlines of the others. It runs no user code: firing an [`Expiry`] marks
//! the subtree done and wakes its waiters (the wakers are executor code, see
//! [`StdTimer`]'s "Where user code runs"), and hands the `after_func`
//! callbacks and `Drop`s it sets free to ctx-core's runner threads; a sweep
//! only reads state words. So a callback or a `Drop` that blocks or panics
//! never delays another deadline.
//!
//! # Synchronization
//!
//! | atomic / lock | guards | pairing |
//! |---|---|---|
//! | a shard's lock (module `shards`) | the shard's heap and arm count | held for a push, a pop of due entries or a sweep; never while firing |
//! | `Shard::next` | no heap entry is earlier | `SeqCst` store (under the lock) then `SeqCst` `fetch_min` of `wake_at` in `arm` (`wake::lower`), against the thread's `SeqCst` store of `wake_at` then `SeqCst` re-load of every `next`: either the thread sees the lower `next`, or the arm sees the thread's target and unparks it (a park token is never lost) |
//! | `wake_at` | what the thread sleeps towards | see `next` |
//! | a shard's counters (module `shards`) | sweep trigger and statistics | `Relaxed` (a sweep a little early or late is harmless), `Release`/`Acquire` for `armed` |
//! | `shutdown` | the timer was dropped | `Relaxed`, followed by an unpark |
use super::shards::{self, IDLE, wake};
use super::{Expiry, Timer, TimerKey};
use crate::sync::unmodeled::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::fmt;
use std::num::NonZeroU64;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// The most shards a timer has.
const MAX_SHARDS: usize = 64;
/// The shortest sleep of the thread (firing is allowed to be late, not early).
const MIN_SLEEP: Duration = Duration::from_micros(50);

/// The built-in timer backend: a dedicated thread and the system's monotonic clock.
///
/// [`StdTimer::global`] is what contexts use when no other [`Timer`] is installed;
/// [`StdTimer::new`] makes a separate one (with its own thread), which is mostly
/// useful for tests that want to read [`armed`](StdTimer::armed) in isolation.
///
/// # Where user code runs
///
/// Not on the timer's thread: `after_func` callbacks of a context ended by its
/// deadline, and the `Drop`s of contexts the expiry released last, run on
/// ctx-core's runner threads (a small pool that grows when a callback blocks and
/// shrinks when idle), as Go runs each `AfterFunc` on a goroutine of its own.
///
/// The one exception is executor code: the wakers of the tasks waiting on a
/// context that the expiry ended run on the timer's thread, once its subtree
/// is done, as every executor's own timer runs them ([`Expiry::fire`]; on the
/// runner when another thread's cancel still had part of it to finish). A
/// waker hands a task to its scheduler and returns; one that blocked instead
/// would hold back the timer's other deadlines until it returned. (Handing
/// the wakers to the runner would not be safer: there they would wait
/// behind every `after_func` callback that blocks.) ctx-core's own blocking
/// waits park no longer than their deadline, then read the context.
///
/// # Panics
///
/// The timer's thread starts with its first deadline. If it cannot start (the
/// system is out of memory or threads), that deadline's `with_deadline` or
/// `with_timeout` panics, as [`std::thread::spawn`] does, and arms nothing.
/// The timer stays usable: the next deadline tries to start the thread again,
/// and fires as usual once it could.
///
/// # Cost
///
/// Arming locks a shard of the timer that the calling thread (nearly always)
/// has to itself and pushes onto its heap; the thread is woken only when the new
/// deadline is the earliest of all. Disarming is a counter update; dead entries
/// are swept once they make up half of a shard, and a sweep that leaves a heap
/// less than a quarter full shrinks it, so memory stays proportional to the
/// armed timers.
///
/// # Caveats: `fork`
///
/// After `fork()`, the child process has none of the parent's threads, so the
/// timer that existed before the fork does not fire in the child, and neither do
/// the runner's threads run (the work queued for them at the fork is the
/// parent's, which runs it: the child leaves it undone). In the child, reads stay exact (`err()` reports
/// `DeadlineExceeded` once the deadline passed) and [`Context::wait`] returns at
/// the deadline (it wakes by itself), but `done()` futures and `after_func`
/// callbacks of deadline contexts under the global timer are never triggered:
/// the parent's timer arms nothing in the child (its locks may have been held by
/// the parent's threads at the fork, and stay held). A child that needs them
/// installs a timer of its own, whose thread starts in the child:
/// `Context::background().with_timer(StdTimer::new())`.
///
/// A fork also freezes whatever another thread was doing to the contexts that
/// exist then. A context that another thread was canceling at the moment of
/// the fork (its walk of the subtree under way, or the list of its waiters
/// beyond the first locked for an update) stays as the fork found it: done,
/// but with part of its subtree not reached, or its list locked for good. In
/// the child, canceling, dropping or waiting on that context, the contexts
/// below it or above it up to the one canceled, may then wait for ever for a
/// thread that does not exist there. Everything the child makes after the
/// fork works. As POSIX advises for a child of a multi-threaded process, a
/// child should use only what it makes itself (or `exec` soon).
///
/// [`Context::wait`]: crate::Context::wait
///
/// # Examples
///
/// ```
/// use ctx_core::{Context, StdTimer};
/// use std::time::Duration;
///
/// let timer = StdTimer::new();
/// let root = Context::background().with_timer(timer.clone());
/// let (ctx, cancel) = root.with_timeout(Duration::from_secs(3600));
/// assert_eq!(timer.armed(), 1);
/// cancel.cancel();
/// assert_eq!(timer.armed(), 0);
/// # drop(ctx);
/// ```
pub struct StdTimer {
    shared: Arc<Shared>,
}

struct Shared {
    /// A power-of-two number of shards.
    shards: Box<[Shard]>,
    /// Nanoseconds after `epoch` that the thread sleeps towards, or `IDLE`.
    wake_at: AtomicU64,
    epoch: Instant,
    /// The fork epoch the timer was made in: in a forked child its thread does
    /// not exist and its locks may be held for ever (`crate::fork`).
    fork_epoch: usize,
    shutdown: AtomicBool,
    thread: OnceLock<Thread>,
}

/// One heap of deadlines (module `shards`, shared with ctx-tokio's timer).
type Shard = shards::Shard<Expiry>;

impl Shared {
    /// Whether this process is a child forked after the timer was made.
    fn forked(&self) -> bool {
        crate::fork::epoch() != self.fork_epoch
    }

    /// `at` as nanoseconds after `epoch` (exact: instants differ by whole
    /// nanoseconds), saturating below `IDLE`. A deadline is due once this is
    /// at most the same of the current time.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(IDLE - 1)
            .min(IDLE - 1)
    }

    /// The earliest `next` of all shards.
    fn earliest(&self) -> u64 {
        shards::earliest(&self.shards)
    }
}

/// The process-wide timer ([`StdTimer::global`]): an `Arc` reference handed
/// over by [`Arc::into_raw`] and never given back, installed by the first
/// caller. Not a `OnceLock`: a `fork()` on another thread while one thread
/// initializes it would leave the child's copy in progress for ever, and every
/// deadline on the default timer there would wait for it.
static GLOBAL: AtomicPtr<StdTimer> = AtomicPtr::new(std::ptr::null_mut());

impl StdTimer {
    /// The process-wide timer (its thread starts on the first armed deadline).
    pub fn global() -> Arc<StdTimer> {
        // The pointer of `GLOBAL` itself, not one made from a reference: the
        // reference counts before the timer are outside what a `&StdTimer`
        // may reach.
        let timer = StdTimer::global_ptr();
        // SAFETY: `timer` came from `Arc::into_raw` (see `GLOBAL`), whose
        // reference is never given back: adding one for the caller is sound.
        unsafe {
            Arc::increment_strong_count(timer);
            Arc::from_raw(timer)
        }
    }

    /// [`global`](StdTimer::global), borrowed for the rest of the process (the
    /// static's reference is never given back): deadlines on it count no
    /// reference.
    pub(crate) fn global_static() -> &'static StdTimer {
        // SAFETY: installed from `Arc::into_raw`, never freed (see `GLOBAL`).
        unsafe { &*StdTimer::global_ptr() }
    }

    /// The pointer in `GLOBAL`, installed first if need be.
    fn global_ptr() -> *const StdTimer {
        // Acquire: pairs with the installing CAS, so the timer is seen whole.
        let current = GLOBAL.load(Ordering::Acquire);
        if current.is_null() {
            return StdTimer::install_global();
        }
        current
    }

    /// Makes a timer and installs it as the global one, unless another thread
    /// installed one first (then this one goes: it started no thread yet).
    #[cold]
    fn install_global() -> *const StdTimer {
        let fresh = Arc::into_raw(StdTimer::new()).cast_mut();
        // AcqRel: releases the fresh timer to later readers; acquires the
        // winner's if another thread installed one first.
        match GLOBAL.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: ours, from `into_raw` above, never published.
                drop(unsafe { Arc::from_raw(fresh) });
                winner
            }
        }
    }

    /// A separate timer with its own thread, which stops when the timer is dropped.
    pub fn new() -> Arc<StdTimer> {
        // Twice the cores, so that threads rarely share a shard.
        let shards = thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .next_power_of_two()
            .min(MAX_SHARDS);
        Arc::new(StdTimer {
            shared: Arc::new(Shared {
                shards: (0..shards).map(|_| Shard::new()).collect(),
                wake_at: AtomicU64::new(IDLE),
                epoch: Instant::now(),
                fork_epoch: crate::fork::installed_epoch(),
                shutdown: AtomicBool::new(false),
                thread: OnceLock::new(),
            }),
        })
    }

    /// How many timers are armed: armed and neither fired-and-released nor
    /// disarmed. Every context done before its deadline disarms its timer at once,
    /// and so does one whose handles all go without a cancel (through a
    /// [`Canceler`](crate::Canceler), which cancels nothing when dropped), so
    /// this drops back to 0 once no deadline context is live.
    pub fn armed(&self) -> usize {
        shards::armed(&self.shared.shards)
    }

    /// The timer's thread, started by the first caller. Panics if it cannot
    /// start; the next caller tries again (type docs).
    fn thread(&self) -> &Thread {
        self.shared.thread.get_or_init(|| {
            let shared = self.shared.clone();
            thread::Builder::new()
                .name("ctx-timer".into())
                .spawn(move || run(&shared))
                .unwrap_or_else(|error| panic!("ctx: cannot start the timer thread: {error}"))
                .thread()
                .clone()
        })
    }

    fn shard_of(&self, key: TimerKey) -> &Shard {
        let shards = &self.shared.shards;
        // Keys are the shard's index plus one; a foreign key picks some shard,
        // which only skews statistics.
        let index = usize::try_from(key.get().get() - 1).unwrap_or(0);
        &shards[index & (shards.len() - 1)]
    }
}

impl Timer for StdTimer {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn is_system_clock(&self) -> bool {
        true
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        let shared = &*self.shared;
        if shared.forked() {
            // A timer of the parent process (type docs): nothing to arm here.
            return None;
        }
        // The thread first: if it cannot start, this panics having armed
        // nothing, and the next arm tries again (type docs). Pushed first,
        // the entry would stay with no thread to fire it, and `wake_at`
        // lowered to it, so that no later arm would start one.
        let thread = self.thread();
        let at = shared.nanos(deadline);
        let (index, mut core) = shards::lock_for_arm(&shared.shards);
        let shard = &shared.shards[index];
        shard.count_arm(&mut core);
        shard.push(&mut core, shards::Entry { at, item: expiry });
        let unpark = wake::lower(&shard.next, &shared.wake_at, at);
        // The thread is unparked after the lock.
        drop(core);
        if unpark {
            thread.unpark();
        }
        let key = u64::try_from(index + 1).expect("at most MAX_SHARDS shards");
        NonZeroU64::new(key).map(TimerKey::new)
    }

    fn disarm(&self, key: TimerKey) {
        if self.shared.forked() {
            // Armed in the parent: its shard's lock may be held for ever here.
            return;
        }
        let shard = self.shard_of(key);
        if shard.note_disarm() {
            // The read takes no lock and runs no user code; a last reference it
            // held goes to the runner after the shard's lock. Dropping an entry
            // (under the lock) runs no user code either: it looks at a context
            // that still exists (an upgrade and a release of a strong
            // reference), and releases its weak one. If every other handle
            // went in that moment, the context's drop is handed to the runner
            // from under the lock (its queue lock, maybe a thread start): rare,
            // and no runner-lock holder ever takes a shard's lock.
            shard.sweep(Expiry::is_done_releasing_into);
        }
    }
}

impl Drop for StdTimer {
    fn drop(&mut self) {
        // Relaxed: the unpark below is the synchronisation point.
        self.shared.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.shared.thread.get() {
            thread.unpark();
        }
    }
}

impl fmt::Debug for StdTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdTimer")
            .field("armed", &self.armed())
            .field("shards", &self.shared.shards.len())
            .finish_non_exhaustive()
    }
}

/// The timer thread.
fn run(shared: &Shared) {
    let mut batch: Vec<Expiry> = Vec::new();
    loop {
        // Relaxed: set before the timer's handle unparks us.
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        // A pass runs no user code; still, nothing that panics in one may end
        // the thread, which every deadline of the timer depends on.
        let sleep = std::panic::catch_unwind(AssertUnwindSafe(|| pass(shared, &mut batch)))
            .unwrap_or(Sleep::For(MIN_SLEEP));
        match sleep {
            Sleep::Again => {}
            Sleep::Idle => thread::park(),
            Sleep::For(wait) => thread::park_timeout(wait.max(MIN_SLEEP)),
        }
    }
}

/// What the thread does after a pass.
enum Sleep {
    /// Look again at once: an arm made a deadline earlier meanwhile.
    Again,
    /// Park until an arm unparks it: nothing is armed.
    Idle,
    /// Park at most this long.
    For(Duration),
}

/// Fires what is due in every shard, and publishes what to wait for next.
fn pass(shared: &Shared, batch: &mut Vec<Expiry>) -> Sleep {
    let start = Instant::now();
    let now = shared.nanos(start);
    let mut busy = false;
    for shard in &*shared.shards {
        // SeqCst: see `shards::wake`.
        if shard.next.load(Ordering::SeqCst) > now {
            continue;
        }
        {
            // A shard being swept (by a disarming thread, in time proportional
            // to its length) is left for a moment, so that it does not hold up
            // the other shards' deadlines.
            let Some(mut core) = shard.try_lock() else {
                busy = true;
                continue;
            };
            while core.heap.peek().is_some_and(|entry| entry.at <= now) {
                batch.push(core.heap.pop().expect("peeked").item);
            }
            core.shrink_if_sparse();
            shard.publish(&core);
        }
        // Outside the lock: firing disarms (the same shard, maybe sweeping it).
        for expiry in batch.drain(..) {
            // A disarmed entry does nothing here (its context is done or gone).
            // Firing runs no user code, but a panic in it must not take the
            // timer thread down with it.
            crate::adapter::contain_panic(|| expiry.fire());
        }
        // The batch too gives a spike's memory back (it is reused, not freed).
        if batch.capacity() > shards::SHRINK_FLOOR {
            batch.shrink_to(shards::SHRINK_FLOOR);
        }
    }
    if busy {
        return Sleep::For(MIN_SLEEP);
    }
    let target = shared.earliest();
    if !wake::settle(&shared.wake_at, || shared.earliest(), target) {
        return Sleep::Again;
    }
    if target == IDLE {
        return Sleep::Idle;
    }
    let wait = Duration::from_nanos(target.saturating_sub(now));
    Sleep::For(wait.saturating_sub(start.elapsed()))
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::*;
    use crate::Context;
    use crate::timer::shards::{SHRINK_FLOOR, SWEEP_FLOOR};

    const HOUR: Duration = Duration::from_secs(3600);

    /// Entries and slots the shards' heaps hold, dead ones included.
    fn held(timer: &StdTimer) -> (usize, usize) {
        timer
            .shared
            .shards
            .iter()
            .fold((0, 0), |(len, cap), shard| {
                let core = shard.lock();
                (len + core.heap.len(), cap + core.heap.capacity())
            })
    }

    /// Every `global()` is a reference on the one `Arc` that `GLOBAL` keeps,
    /// made through `GLOBAL`'s own pointer (under Miri: one made from a
    /// `&StdTimer` may not reach the counts before the timer).
    #[test]
    fn the_global_timer_is_one_shared_arc() {
        let first = StdTimer::global();
        let second = StdTimer::global();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(std::ptr::eq(&*first, StdTimer::global_static()));
        drop(second);
        // Other tests of this binary clone and drop the global timer on
        // their threads too, so the count may move between two reads: one
        // window of the tries without them shows the drop's decrement alone.
        let decremented_by_one = (0..1000).any(|_| {
            let clone = StdTimer::global();
            let before = Arc::strong_count(&first);
            drop(clone);
            Arc::strong_count(&first) == before - 1
        });
        assert!(decremented_by_one);
        let _default = Context::background().timer();
    }

    /// The lazy disarm leaves dead entries behind, but the sweeps keep them to
    /// at most about as many as the live ones (plus a small floor per shard), so
    /// a thread canceling timeouts forever does not grow the timer.
    #[test]
    fn canceled_timeouts_do_not_pile_up() {
        let timer = StdTimer::new();
        let root = Context::background().with_timer(timer.clone());
        let kept: Vec<_> = (0..100).map(|_| root.with_timeout(HOUR)).collect();
        for _ in 0..if cfg!(miri) { 500 } else { 100_000 } {
            let (_ctx, cancel) = root.with_timeout(HOUR);
            cancel.cancel();
        }
        assert_eq!(timer.armed(), 100);
        let (len, _) = held(&timer);
        let floor = timer.shared.shards.len() * SWEEP_FLOOR;
        assert!(len <= 2 * 100 + floor, "{len} entries held for 100 live");
        drop(kept);
        assert_eq!(timer.armed(), 0);
        assert!(held(&timer).0 <= floor);
    }

    /// Long timeouts whose handles all go without a cancel (the cancel
    /// function turned into a `Canceler`, which cancels nothing when dropped)
    /// are disarmed when the last handle goes: the count drops back and the
    /// sweeps keep the heaps from growing with every such timeout.
    #[test]
    fn timeouts_dropped_through_a_canceler_do_not_pile_up() {
        let timer = StdTimer::new();
        let root = Context::background().with_timer(timer.clone());
        let n = if cfg!(miri) { 500 } else { 100_000 };
        for _ in 0..n {
            let (ctx, cancel) = root.with_timeout(HOUR);
            drop((ctx, cancel.into_canceler()));
        }
        let (len, capacity) = held(&timer);
        let shards = timer.shared.shards.len();
        assert_eq!(timer.armed(), 0, "{len} entries held, {capacity} slots");
        assert!(
            len <= shards * SWEEP_FLOOR,
            "{len} entries held for none live"
        );
    }

    /// After a spike of armed timeouts, the heaps give their slots back.
    #[test]
    fn heaps_shrink_after_a_spike() {
        let timer = StdTimer::new();
        let root = Context::background().with_timer(timer.clone());
        let n = if cfg!(miri) { 2_000 } else { 50_000 };
        let spike: Vec<_> = (0..n).map(|_| root.with_timeout(HOUR)).collect();
        assert!(held(&timer).1 >= n);
        drop(spike);
        assert_eq!(timer.armed(), 0);
        let (len, capacity) = held(&timer);
        let shards = timer.shared.shards.len();
        assert!(len <= shards * SWEEP_FLOOR);
        assert!(
            capacity <= shards * 4 * SHRINK_FLOOR,
            "{capacity} slots still allocated"
        );
    }

    /// A spike of deadlines that fire together (one shutdown deadline handed
    /// to every connection, say) gives its slots back too: the pass that pops
    /// them shrinks the heap. No disarm follows to sweep it (a heap that
    /// short is never swept), so the slots stayed for good.
    #[test]
    #[cfg_attr(miri, ignore)] // the timer thread in real time, a large spike
    fn heaps_shrink_after_a_spike_that_fired() {
        let timer = StdTimer::new();
        let root = Context::background().with_timer(timer.clone());
        let shards = timer.shared.shards.len();
        let bound = shards * 4 * SHRINK_FLOOR;
        let at = Instant::now() + Duration::from_secs(1);
        let spike: Vec<_> = (0..4 * bound).map(|_| root.with_deadline(at)).collect();
        assert!(held(&timer).1 > bound, "the spike was armed");
        // Until every deadline fired (a watchdog, not a timing assertion).
        let give_up = Instant::now() + Duration::from_secs(30);
        while (timer.armed() != 0 || held(&timer).0 != 0) && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(timer.armed(), 0);
        assert!(spike.iter().all(|(ctx, _)| ctx.is_done()));
        let (len, capacity) = held(&timer);
        assert!(
            capacity <= bound,
            "{capacity} slots still allocated for {len} entries, none armed"
        );
    }

    /// Keys name the shard they were armed in.
    #[test]
    fn keys_name_their_shard() {
        let timer = StdTimer::new();
        for index in 0..timer.shared.shards.len() {
            let key = TimerKey::new(NonZeroU64::new(index as u64 + 1).unwrap());
            assert!(std::ptr::eq(
                timer.shard_of(key),
                &timer.shared.shards[index]
            ));
        }
    }
}
