//! Shared pieces of the ctx benchmarks: run modes, thread harnesses, latency
//! histograms, allocation counting, the Go baseline parser, the baseline
//! and the scaling model.
//!
//! The criterion benches (`benches/*.rs`), the allocation report
//! (`src/bin/alloc_report.rs`) and the report generator (`src/bin/report.rs`) all
//! use this library, so the workloads, file locations and parsing rules live in one
//! place. See `README.md` next to this crate for what each benchmark measures.

#![doc(test(attr(deny(warnings))))]

pub mod alloc;
pub mod baseline;
pub mod go;
pub mod harness;
pub mod readme;
pub mod scaling;
pub mod stats;

use std::path::PathBuf;

/// The workspace README's code blocks, run as doctests so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct WorkspaceReadmeDoctests;

/// Whether this is a quick run (`cargo xtask bench --quick` sets `CTX_BENCH_QUICK=1`):
/// benches then use shorter parameter lists.
pub fn quick() -> bool {
    std::env::var_os("CTX_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `full` normally, `quick_list` in a quick run.
pub fn params<T: Copy>(full: &[T], quick_list: &[T]) -> Vec<T> {
    if quick() {
        quick_list.to_vec()
    } else {
        full.to_vec()
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory, found the way criterion finds it
/// (`CARGO_TARGET_DIR`, else `target/` under the workspace root).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Where the benches leave results that criterion does not record (worst-case
/// latencies, the allocation table): `target/ctx-bench/`.
pub fn results_dir() -> PathBuf {
    target_dir().join("ctx-bench")
}

/// The file in which the benches record the mode of their last run.
pub fn mode_file() -> PathBuf {
    results_dir().join("mode.txt")
}

/// Records whether this run is quick, for the report (best effort).
pub fn record_mode() {
    let mode = if quick() { "quick" } else { "full" };
    let _ = std::fs::create_dir_all(results_dir());
    let _ = std::fs::write(mode_file(), format!("{mode}\n"));
}
