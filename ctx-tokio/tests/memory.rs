//! After a spike of deadlines, the timer gives its memory back: measured with a
//! counting global allocator, so this file is its own test binary with one test.

use ctx_core::Context;
use ctx_tokio::TokioTimer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The system allocator, counting the bytes currently allocated and their peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Lets the driver task run a few passes (it yields between batches).
async fn settle(commands: usize) {
    for _ in 0..commands / 1024 + 64 {
        tokio::task::yield_now().await;
    }
}

/// A million deadlines (a fifth of that in debug builds) armed at once, then
/// disarmed: the deadline heaps must not keep their peak size.
#[test]
fn memory_returns_to_baseline_after_a_million_deadlines() {
    let n: usize = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let timer = TokioTimer::current();
        let root = Context::background().with_timer(timer.clone());
        // Warm up: the driver task, the backstop.
        drop(root.with_timeout(Duration::from_secs(3600)));
        settle(0).await;
        let baseline = CURRENT.load(Ordering::SeqCst);
        PEAK.store(baseline, Ordering::SeqCst);

        let contexts: Vec<_> = (0..n)
            .map(|_| root.with_timeout(Duration::from_secs(3600)))
            .collect();
        settle(n).await;
        assert_eq!(timer.armed(), n);
        drop(contexts);
        assert_eq!(timer.armed(), 0);
        settle(n).await;

        let peak = PEAK.load(Ordering::SeqCst) - baseline;
        let after = CURRENT.load(Ordering::SeqCst).saturating_sub(baseline);
        println!(
            "{n} deadlines: peak {:.1} MB above baseline, {:.3} MB after",
            peak as f64 / 1e6,
            after as f64 / 1e6
        );
        // The spike happened (contexts and heap entries: well over 100 B each)…
        assert!(peak > n * 100, "peak only {peak} B");
        // …and is gone: within a few MB of baseline, and a small part of the peak.
        assert!(
            after < 2_000_000 && after < peak / 20,
            "{after} B still allocated (peak {peak} B)"
        );
    });
}
