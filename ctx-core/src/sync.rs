//! The one place that names atomics, the internal `Arc`s and `UnsafeCell`.
//!
//! Internal reference counts (callbacks, cause records) use this module's `Arc`,
//! so loom checks them. `std::sync::Arc` appears elsewhere only where it is part
//! of the public API: a timer backend (`Arc<dyn Timer>`) and a cause's shared
//! error (`Cause::from_arc`); those are the caller's, and loom does not model
//! them.
//!
//! Everything in ctx-core imports its synchronisation primitives from here, so
//! that `--cfg ctx_loom` swaps the whole crate onto loom's model-checked types at
//! once. The cfg is named after the crate on purpose: a bare `cfg(loom)` would also
//! flip dependencies that know loom into their own loom mode. The swap happens only in the crate's
//! own unit-test build (`all(test, ctx_loom)`), where the loom models live and where
//! the loom dev-dependency is available; any other build with the cfg set (the
//! library for integration tests, `clippy --lib`) stays on std.

#[cfg(not(all(test, ctx_loom)))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(all(test, ctx_loom)))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(all(test, ctx_loom))]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(all(test, ctx_loom))]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

/// An `UnsafeCell` with loom's closure-based API, so that loom can check every
/// access to the cell's contents.
#[cfg(not(all(test, ctx_loom)))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(all(test, ctx_loom)))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Gives the closure exclusive access to the contents.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(all(test, ctx_loom))]
pub(crate) use loom::cell::UnsafeCell;

/// Stands for plain memory that loom cannot see, such as an immutable record
/// read through a pointer loaded from an atomic: under loom, each [`read`]
/// is a read of a loom cell created with the object, and its drop is a write,
/// so loom reports a read that does not happen after the object's creation
/// (an ordering too weak on the load that found it) or a free that does not
/// happen after every read. Zero-sized and free of code otherwise.
///
/// [`read`]: AccessCheck::read
#[cfg(not(all(test, ctx_loom)))]
#[derive(Debug)]
pub(crate) struct AccessCheck;

#[cfg(not(all(test, ctx_loom)))]
impl AccessCheck {
    /// The check of an object in a `static` (never freed, no check needed).
    pub(crate) const STATIC: AccessCheck = AccessCheck;

    /// The check of an object created now.
    #[inline]
    pub(crate) fn new() -> AccessCheck {
        AccessCheck
    }

    /// Records a read of the object.
    #[inline]
    pub(crate) fn read(&self) {}
}

/// See the non-loom `AccessCheck`.
#[cfg(all(test, ctx_loom))]
#[derive(Debug)]
pub(crate) struct AccessCheck(Option<loom::cell::UnsafeCell<()>>);

// SAFETY: the cell holds `()` and is touched only through loom's checked
// `with`/`with_mut`, which is the point: loom itself reports a racy access.
#[cfg(all(test, ctx_loom))]
unsafe impl Sync for AccessCheck {}
// SAFETY: as above.
#[cfg(all(test, ctx_loom))]
unsafe impl Send for AccessCheck {}

#[cfg(all(test, ctx_loom))]
impl AccessCheck {
    pub(crate) const STATIC: AccessCheck = AccessCheck(None);

    pub(crate) fn new() -> AccessCheck {
        AccessCheck(Some(loom::cell::UnsafeCell::new(())))
    }

    pub(crate) fn read(&self) {
        if let Some(cell) = &self.0 {
            cell.with(|_| ());
        }
    }
}

#[cfg(all(test, ctx_loom))]
impl Drop for AccessCheck {
    fn drop(&mut self) {
        if let Some(cell) = &self.0 {
            cell.with_mut(|_| ());
        }
    }
}

/// Reads an `AtomicPtr` through `&mut` (no other thread can reach it), as
/// `*atomic.get_mut()` does; loom's atomics only offer `with_mut` for that.
#[cfg(not(all(test, ctx_loom)))]
#[inline]
pub(crate) fn ptr_get_mut<T>(atomic: &mut AtomicPtr<T>) -> *mut T {
    *atomic.get_mut()
}

/// Reads an `AtomicPtr` through `&mut` (no other thread can reach it), as
/// `*atomic.get_mut()` does; loom's atomics only offer `with_mut` for that.
#[cfg(all(test, ctx_loom))]
pub(crate) fn ptr_get_mut<T>(atomic: &mut AtomicPtr<T>) -> *mut T {
    atomic.with_mut(|value| *value)
}

/// Reads an `AtomicU64` through `&mut` (no other thread can reach it), as
/// [`ptr_get_mut`] does for pointers.
#[cfg(not(all(test, ctx_loom)))]
#[inline]
pub(crate) fn u64_get_mut(atomic: &mut AtomicU64) -> u64 {
    *atomic.get_mut()
}

/// Reads an `AtomicU64` through `&mut` (no other thread can reach it), as
/// [`ptr_get_mut`] does for pointers.
#[cfg(all(test, ctx_loom))]
pub(crate) fn u64_get_mut(atomic: &mut AtomicU64) -> u64 {
    atomic.with_mut(|value| *value)
}

/// Asks the CPU to start loading the cache line at `addr`, without waiting
/// for it and without any effect on the program's meaning (a hint that never
/// faults, whatever `addr` is).
///
/// For a walk that touches many nodes one after another: each close is a
/// locked read-modify-write, which on x86 lets no later load start before it
/// completes, so without the hint every node's cache miss is paid alone, one
/// after the other. A nop where no such hint is available, under loom and
/// under Miri.
#[inline(always)]
pub(crate) fn prefetch<T>(addr: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri), not(all(test, ctx_loom))))]
    // SAFETY: SSE, the feature the intrinsic asks for, is part of every
    // x86_64 target; a prefetch reads nothing the program sees and never
    // faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri), not(all(test, ctx_loom)))))]
    let _ = addr;
}

/// Marks the middle of one side of a Dekker pair: a `SeqCst` store or RMW of one
/// atomic, then a `SeqCst` load of another, where the two sides must not both miss
/// each other's write.
///
/// Compiles to nothing: `SeqCst` accesses already sit in one total order, so at
/// least one side sees the other's write. Loom, however, treats `SeqCst` accesses
/// as `AcqRel` (loom's README, "Unsupported features") and would report the
/// outcome where both sides miss each other, which the memory model forbids.
/// Under `--cfg ctx_loom` this is a `SeqCst` fence, which loom does model. Both
/// sides of a pair call it. (Loom's fence also makes the later side see all the
/// earlier side did before its fence, a little more than the accesses promise;
/// orderings around a pair are still checked by the acquire/release they use.)
#[cfg(not(all(test, ctx_loom)))]
#[inline(always)]
pub(crate) fn dekker_point() {}

/// See the non-loom version: a `SeqCst` fence for loom's benefit.
#[cfg(all(test, ctx_loom))]
pub(crate) fn dekker_point() {
    fence(Ordering::SeqCst);
}

/// A store into an atomic that other threads may read-modify-write at the same
/// time.
///
/// A plain store. Under loom it is a `swap` whose result is dropped: loom lets an
/// RMW read a value older than a concurrent plain store and then lets that store
/// land before the RMW's own write (tokio-rs/loom#254: RMW atomicity is not
/// enforced against plain stores), so a later RMW can miss the store, an outcome
/// the memory model forbids. With RMWs on both sides loom orders them correctly;
/// the old value is not used, so the program's possible outcomes are the same.
pub(crate) trait StoreRacingRmw<T> {
    fn store_racing_rmw(&self, value: T, order: Ordering);
}

macro_rules! store_racing_rmw {
    ($(impl$(<$param:ident>)? for $atomic:ty, $value:ty;)*) => {$(
        impl$(<$param>)? StoreRacingRmw<$value> for $atomic {
            #[inline(always)]
            fn store_racing_rmw(&self, value: $value, order: Ordering) {
                #[cfg(not(all(test, ctx_loom)))]
                self.store(value, order);
                #[cfg(all(test, ctx_loom))]
                self.swap(value, order);
            }
        }
    )*};
}

store_racing_rmw! {
    impl<T> for AtomicPtr<T>, *mut T;
    impl for AtomicU32, u32;
    impl for AtomicU64, u64;
}

/// Atomics for code that runs outside every loom model: the built-in timer's own
/// thread, which loom cannot run (it parks with timeouts), and process-wide
/// statics (loom's atomics cannot live in one).
pub(crate) mod unmodeled {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
}

/// The Acquire half of a reference count's "last one out": after the Release
/// decrement that reached zero, so the thread about to free sees every other
/// handle's uses.
///
/// A fence, as in `Arc`. ThreadSanitizer does not model fences, so under
/// `--cfg ctx_sanitize` an Acquire load of the counter does the same job (which is
/// what `Arc` does under ThreadSanitizer too).
#[inline]
pub(crate) fn acquire_after_last_release(counter: &impl AcquireLoad) {
    #[cfg(not(ctx_sanitize))]
    {
        let _ = counter;
        fence(Ordering::Acquire);
    }
    #[cfg(ctx_sanitize)]
    counter.acquire_load();
}

/// A counter that [`acquire_after_last_release`] can load.
pub(crate) trait AcquireLoad {
    /// An Acquire load whose value is dropped.
    #[cfg_attr(not(ctx_sanitize), allow(dead_code))]
    fn acquire_load(&self);
}

impl AcquireLoad for AtomicU64 {
    fn acquire_load(&self) {
        self.load(Ordering::Acquire);
    }
}

impl AcquireLoad for AtomicU32 {
    fn acquire_load(&self) {
        self.load(Ordering::Acquire);
    }
}

/// Waiting for another thread's progress without a lock: spin briefly, then
/// yield, then sleep in growing steps (up to a millisecond).
///
/// Only the contended paths of a cancel wait (a cancel that lost the race for a
/// node waits for its owner to finish the subtree): the waits are short, and no
/// waiter holds anything another thread needs. Under loom every step is a
/// `yield_now`, which loom requires of spin loops.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff::default()
    }

    /// Waits a little, longer each time.
    pub(crate) fn snooze(&mut self) {
        #[cfg(all(test, ctx_loom))]
        loom::thread::yield_now();
        #[cfg(not(all(test, ctx_loom)))]
        {
            const SPINS: u32 = 6;
            const YIELDS: u32 = 16;
            if self.step < SPINS {
                for _ in 0..1u32 << self.step {
                    std::hint::spin_loop();
                }
            } else if self.step < YIELDS {
                std::thread::yield_now();
            } else {
                let micros = 1u64 << (self.step - YIELDS).min(10);
                std::thread::sleep(std::time::Duration::from_micros(micros));
            }
        }
        self.step = self.step.saturating_add(1);
    }
}
