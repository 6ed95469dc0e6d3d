//! Prints bytes and allocations per derived context, for ctx-core and tokio-util,
//! and per level of a 1,000,000-deep chain (measured in a child process: see
//! `benches::alloc::deep_chain_in_child`).
//!
//! Run with `cargo run -p benches --release --bin alloc_report`. The table is
//! also written to `target/ctx-bench/alloc.md`; the report generator measures the
//! same table itself, so running this first is not needed for `BENCHMARKS.md`.

use benches::alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn main() {
    if alloc::run_deep_chain_if_asked() {
        return;
    }
    assert!(
        alloc::installed(),
        "the counting allocator is not installed"
    );
    let rows = alloc::table();
    let table = alloc::markdown(&rows);
    print!("{table}");
    let written = std::fs::create_dir_all(benches::results_dir())
        .and_then(|()| std::fs::write(alloc::table_file(), &table));
    if let Err(err) = written {
        eprintln!("alloc_report: could not write the table file: {err}");
    }
    match alloc::deep_chain_in_child() {
        Ok(chain) => println!(
            "\n{}-deep chain of `with_cancel` (built, canceled and dropped on a {} KiB stack): \
             {:.1} bytes and {:.2} allocations per level",
            chain.depth,
            alloc::CHAIN_STACK / 1024,
            chain.bytes_per_level,
            chain.allocs_per_level
        ),
        Err(why) => println!("\ndeep chain: {why}"),
    }
}
