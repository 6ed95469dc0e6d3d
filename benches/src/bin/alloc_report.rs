//! Prints bytes and allocations per derived context, for ctx-core and tokio-util.
//!
//! Run with `cargo run -p benches --release --bin alloc_report`. The table is
//! also written to `target/ctx-bench/alloc.md`; the report generator measures the
//! same table itself, so running this first is not needed for `BENCHMARKS.md`.

use benches::alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn main() {
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
}
