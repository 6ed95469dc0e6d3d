//! Memory stays proportional to live contexts: ten million short-lived children
//! under one long-lived parent, half canceled and half just dropped, while the
//! resident set size is printed every million.
//!
//! Run it with `cargo run -p ctx-tree --release --example churn`.

use ctx_core::Context;
use std::time::Instant;

/// The resident set size in KiB, where the platform tells it (Linux).
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

fn main() {
    let (parent, _cancel) = Context::background().with_cancel();
    let started = Instant::now();
    let total = 10_000_000u32;
    for i in 1..=total {
        let (child, cancel) = parent.with_cancel();
        if i % 2 == 0 {
            cancel.cancel();
            drop(child);
        } else {
            drop(child);
            drop(cancel);
        }
        if i % 1_000_000 == 0 {
            let rss = rss_kib().map_or("unknown".to_string(), |kib| format!("{kib} KiB"));
            println!(
                "{i:>10} children created and gone: resident {rss}, live children {}",
                parent.live_children()
            );
        }
    }
    let per_child = started.elapsed() / total;
    println!(
        "{per_child:?} per child (create, cancel or drop, free); live children now {}",
        parent.live_children()
    );
    assert_eq!(parent.live_children(), 0);
}
