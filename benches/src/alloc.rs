//! Bytes and allocations per derived context, counted by a global allocator.
//!
//! [`Counting`] wraps the system allocator and counts every allocation in the
//! process. It only counts when a binary installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: benches::alloc::Counting = benches::alloc::Counting;
//! ```
//!
//! The report generator and `alloc_report` do that; the criterion benches do not
//! (a counting allocator would slow every benchmark down). [`table`] then creates
//! [`N`] contexts of each kind under one parent, keeps them alive, and divides the
//! counters by `N`: bytes and allocations per context, amortizing whatever the
//! parent's child list or the timer backend allocate as they grow, plus the bytes
//! still held afterwards ("retained").
//!
//! [`deep_chain`] measures a [`CHAIN_DEPTH`]-deep chain of `with_cancel` children,
//! built, canceled and dropped on a thread with a [`CHAIN_STACK`]-byte stack. A
//! walk that recursed over the depth would overflow that stack, which aborts the
//! process, so the binaries measure it in a child process of their own
//! ([`deep_chain_in_child`]), which survives to report the failure.

use ctx_core::Context;
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Contexts created per measurement.
pub const N: usize = 10_000;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);

/// The counting allocator: the system allocator plus four relaxed counters
/// (counters only, so nothing is synchronised through them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees carry over; the counters do not touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREES.fetch_add(1, Ordering::Relaxed);
        FREED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator, which is `System` underneath.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growth counts as one allocation of the new size and a free of the old
        // one, as Go's `allocs/op` counts a growing slice.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        FREES.fetch_add(1, Ordering::Relaxed);
        FREED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (`System` underneath) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Allocations so far.
    pub allocs: u64,
    /// Frees so far.
    pub frees: u64,
    /// Bytes allocated so far.
    pub bytes: u64,
    /// Bytes freed so far.
    pub freed_bytes: u64,
}

/// Reads the counters.
pub fn snapshot() -> Snapshot {
    Snapshot {
        allocs: ALLOCS.load(Ordering::Relaxed),
        frees: FREES.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        freed_bytes: FREED_BYTES.load(Ordering::Relaxed),
    }
}

/// Whether [`Counting`] is this process's global allocator.
pub fn installed() -> bool {
    let before = snapshot().allocs;
    black_box(Box::new(black_box(7u64)));
    snapshot().allocs > before
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was derived (`with_cancel`, `child_token`, …).
    pub what: String,
    /// `ctx-core` or `tokio-util`.
    pub imp: &'static str,
    /// Bytes allocated per context.
    pub bytes: f64,
    /// Allocations per context.
    pub allocs: f64,
    /// Bytes still allocated per context while the contexts are alive.
    pub retained: f64,
}

/// Creates [`N`] values with `make`, keeps them alive, and returns the counters
/// per value. With `settle`, waits a little before reading the counters, so that
/// a timer thread has taken in its arm requests.
pub fn per_context<T>(
    what: &str,
    imp: &'static str,
    settle: bool,
    mut make: impl FnMut() -> T,
) -> Row {
    let mut keep: Vec<T> = Vec::with_capacity(N);
    // One warm-up value, so lazily started machinery (timer threads) is not counted.
    // Kept, not dropped: a chain row's next value derives from it, and dropping
    // its cancel function would cancel the chain, whose later links would then
    // be born done and never register.
    let warm_up = black_box(make());
    if settle {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = snapshot();
    for _ in 0..N {
        keep.push(make());
    }
    if settle {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = snapshot();
    drop(black_box(keep));
    drop(warm_up);
    if settle {
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = N as f64;
    let retained =
        (after.bytes - before.bytes) as f64 - (after.freed_bytes - before.freed_bytes) as f64;
    Row {
        what: what.to_owned(),
        imp,
        bytes: (after.bytes - before.bytes) as f64 / n,
        allocs: (after.allocs - before.allocs) as f64 / n,
        retained: retained / n,
    }
}

/// Every row: ctx-core's derived contexts and tokio-util's child tokens. Each row derives its
/// contexts from a fresh parent, so each pays for its own child-list growth.
pub fn table() -> Vec<Row> {
    let background = Context::background();
    let fresh = || background.with_cancel();
    let hour = Duration::from_secs(3600);
    let mut rows = Vec::new();
    {
        let (parent, _cancel) = fresh();
        rows.push(per_context("with_cancel", "ctx-core", false, || {
            parent.with_cancel()
        }));
    }
    {
        // Each new context is the first child of the previous one, as in a chain.
        let (root, _cancel) = fresh();
        let mut last = root;
        rows.push(per_context(
            "with_cancel (chain: first child)",
            "ctx-core",
            false,
            || {
                let (ctx, cancel) = last.with_cancel();
                last = ctx.clone();
                (ctx, cancel)
            },
        ));
    }
    rows.push(per_context(
        "with_cancel (of background)",
        "ctx-core",
        false,
        || background.with_cancel(),
    ));
    {
        let (parent, _cancel) = fresh();
        rows.push(per_context("with_cancel_cause", "ctx-core", false, || {
            parent.with_cancel_cause()
        }));
    }
    {
        let (parent, _cancel) = fresh();
        rows.push(per_context(
            "with_timeout (StdTimer)",
            "ctx-core",
            true,
            || parent.with_timeout(hour),
        ));
    }
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("tokio runtime");
        let timer = ctx_tokio::TokioTimer::new(rt.handle().clone());
        let (parent, _cancel) = background.with_timer(timer).with_cancel();
        rows.push(per_context(
            "with_timeout (TokioTimer)",
            "ctx-core",
            true,
            || parent.with_timeout(hour),
        ));
    }
    {
        let (parent, _cancel) = fresh();
        rows.push(per_context("with_value", "ctx-core", false, || {
            parent.with_value(7u64)
        }));
    }
    {
        let (parent, _cancel) = fresh();
        rows.push(per_context("without_cancel", "ctx-core", false, || {
            parent.without_cancel()
        }));
    }
    {
        let ((first, _c1), (second, _c2)) = (fresh(), fresh());
        rows.push(per_context(
            "with_cancel_any (2 parents)",
            "ctx-core",
            false,
            || Context::with_cancel_any(&[first.clone(), second.clone()]),
        ));
    }
    {
        let (parent, _cancel) = fresh();
        rows.push(per_context("after_func", "ctx-core", false, || {
            parent.after_func(|| {})
        }));
    }
    {
        let token = CancellationToken::new();
        rows.push(per_context("child_token", "tokio-util", false, || {
            token.child_token()
        }));
    }
    {
        let mut last = CancellationToken::new();
        rows.push(per_context(
            "child_token (chain: first child)",
            "tokio-util",
            false,
            || {
                let token = last.child_token();
                last = token.clone();
                token
            },
        ));
    }
    rows.push(per_context(
        "child_token (of a fresh root)",
        "tokio-util",
        false,
        || CancellationToken::new().child_token(),
    ));
    rows
}

/// The depth of the deep chain.
pub const CHAIN_DEPTH: usize = 1_000_000;
/// The stack size of the thread that builds, cancels and drops the deep chain.
pub const CHAIN_STACK: usize = 256 * 1024;
/// The argument with which a binary runs [`deep_chain`] and prints its result.
pub const CHAIN_ARG: &str = "--deep-chain";

/// What the deep chain cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chain {
    /// Levels.
    pub depth: usize,
    /// Bytes allocated per level while building.
    pub bytes_per_level: f64,
    /// Allocations per level while building.
    pub allocs_per_level: f64,
}

impl Chain {
    /// The line a child process prints.
    pub fn to_line(&self) -> String {
        format!(
            "deep-chain depth={} bytes_per_level={} allocs_per_level={}",
            self.depth, self.bytes_per_level, self.allocs_per_level
        )
    }

    /// Parses [`to_line`](Chain::to_line)'s output.
    pub fn from_line(line: &str) -> Option<Chain> {
        let rest = line.trim().strip_prefix("deep-chain ")?;
        let field = |key: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        Some(Chain {
            depth: field("depth")?.parse().ok()?,
            bytes_per_level: field("bytes_per_level")?.parse().ok()?,
            allocs_per_level: field("allocs_per_level")?.parse().ok()?,
        })
    }
}

/// Builds a chain of `depth` nested `with_cancel` children under a cancelable
/// root on a thread with a [`CHAIN_STACK`]-byte stack, counts what the chain
/// allocated, cancels the root, checks the leaf is done, and drops everything
/// there. Overflowing that stack aborts the process.
pub fn deep_chain(depth: usize) -> Chain {
    std::thread::Builder::new()
        .name("deep-chain".into())
        .stack_size(CHAIN_STACK)
        .spawn(move || {
            let (root, cancel_root) = Context::background().with_cancel();
            // Allocated before counting: the harness's vector is not the chain's.
            let mut cancels = Vec::with_capacity(depth);
            let before = snapshot();
            let mut leaf = root.clone();
            for _ in 0..depth {
                let (next, cancel) = leaf.with_cancel();
                cancels.push(cancel);
                leaf = next;
            }
            let after = snapshot();
            cancel_root.cancel();
            assert!(leaf.is_done(), "the root's cancel reaches the leaf");
            drop(leaf);
            drop(cancels);
            drop(root);
            let n = depth.max(1) as f64;
            Chain {
                depth,
                bytes_per_level: (after.bytes - before.bytes) as f64 / n,
                allocs_per_level: (after.allocs - before.allocs) as f64 / n,
            }
        })
        .expect("spawn the deep-chain thread")
        .join()
        .expect("the deep-chain thread panicked")
}

/// If this process was started with [`CHAIN_ARG`]: measures the deep chain,
/// prints [`Chain::to_line`] and returns true (the caller then exits).
pub fn run_deep_chain_if_asked() -> bool {
    if !std::env::args().any(|a| a == CHAIN_ARG) {
        return false;
    }
    println!("{}", deep_chain(CHAIN_DEPTH).to_line());
    true
}

/// Runs this binary again with [`CHAIN_ARG`] and reads its result: the chain's
/// cost, or why the child process failed (for instance a stack overflow).
pub fn deep_chain_in_child() -> Result<Chain, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no executable path: {e}"))?;
    let output = Command::new(exe)
        .arg(CHAIN_ARG)
        .output()
        .map_err(|e| format!("could not start the child process: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().find_map(Chain::from_line) {
        Some(chain) if output.status.success() => Ok(chain),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!(
                "the child process failed ({}){}",
                output.status,
                last.map_or(String::new(), |l| format!(": {}", l.trim()))
            ))
        }
    }
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| derived context | crate | bytes / ctx | allocations / ctx | retained bytes / ctx |\n\
         |---|---|---:|---:|---:|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| `{}` | {} | {:.0} | {:.2} | {:.0} |",
            row.what, row.imp, row.bytes, row.allocs, row.retained
        );
    }
    out
}

/// Where `alloc_report` leaves its table: `target/ctx-bench/alloc.md`.
pub fn table_file() -> PathBuf {
    crate::results_dir().join("alloc.md")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lines_round_trip() {
        let chain = Chain {
            depth: 1_000_000,
            bytes_per_level: 64.5,
            allocs_per_level: 1.0,
        };
        assert_eq!(Chain::from_line(&chain.to_line()), Some(chain));
        assert_eq!(Chain::from_line("deep-chain depth=x"), None);
    }

    /// A short chain on the small stack (the full depth is the binaries' job).
    #[test]
    fn a_short_chain_cancels_and_drops() {
        assert_eq!(deep_chain(1000).depth, 1000);
    }

    /// The TokioTimer row really arms tokio's timer (it inherits through the
    /// cancelable parent).
    #[test]
    fn tokio_row_uses_the_tokio_timer() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let timer = ctx_tokio::TokioTimer::new(rt.handle().clone());
        let (parent, _cancel) = Context::background()
            .with_timer(timer.clone())
            .with_cancel();
        let (_ctx, cancel) = parent.with_timeout(Duration::from_secs(3600));
        assert_eq!(timer.armed(), 1);
        cancel.cancel();
        assert_eq!(timer.armed(), 0);
    }
}
