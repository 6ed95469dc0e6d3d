//! The one place that names atomics, `Arc` and `UnsafeCell`.
//!
//! Everything in ctx-core imports its synchronisation primitives from here, so
//! that `--cfg ctx_loom` swaps the whole crate onto loom's model-checked types at
//! once. The cfg is named after the crate on purpose: a bare `cfg(loom)` would also
//! flip event-listener into its own loom mode.

#[cfg(not(ctx_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(ctx_loom))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(ctx_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(ctx_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// An `UnsafeCell` with loom's closure-based API, so that loom can check every
/// access to the cell's contents.
#[cfg(not(ctx_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(ctx_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Gives the closure exclusive access to the contents.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(ctx_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Reads an `AtomicPtr` through `&mut` (no other thread can reach it), as
/// `*atomic.get_mut()` does; loom's atomics only offer `with_mut` for that.
#[cfg(not(ctx_loom))]
#[inline]
pub(crate) fn ptr_get_mut<T>(atomic: &mut AtomicPtr<T>) -> *mut T {
    *atomic.get_mut()
}

/// Reads an `AtomicPtr` through `&mut` (no other thread can reach it), as
/// `*atomic.get_mut()` does; loom's atomics only offer `with_mut` for that.
#[cfg(ctx_loom)]
pub(crate) fn ptr_get_mut<T>(atomic: &mut AtomicPtr<T>) -> *mut T {
    atomic.with_mut(|value| *value)
}

/// Atomics for code that runs outside every loom model: the built-in timer's own
/// thread, which loom cannot run (it parks with timeouts).
pub(crate) mod unmodeled {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
}
