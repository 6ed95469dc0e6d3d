//! The `bench` command: runs the benchmarks and regenerates `BENCHMARKS.md`.
//!
//! Benchmark numbers depend on the machine and its load, so this command
//! never judges them; it fails only if a benchmark fails to build or run.
//! With `--quick` the measurements are much shorter, which is useful for
//! checking that everything still runs. With `--report-only` (or `--no-run`)
//! nothing is measured: the report is regenerated from the results the last
//! runs left in `target/criterion`.

use crate::{Error, Result, cargo, project_root, run};

/// Runs the benchmarks matching `filter` and then the report generator, if there is one.
pub(crate) fn run_benches(quick: bool, filter: Option<&str>) -> Result {
    run_criterion(quick, filter)?;
    report()
}

/// Runs the criterion benches matching `filter`.
fn run_criterion(quick: bool, filter: Option<&str>) -> Result {
    let mut cmd = cargo();
    // Selecting only the `[[bench]]` targets keeps the criterion arguments
    // away from the libtest harness of the package's library and binaries,
    // which would reject them. Cargo expands the pattern itself.
    cmd.args(["bench", "-p", "benches", "--bench", "*", "--"]);
    if quick {
        cmd.env("CTX_BENCH_QUICK", "1")
            .args(["--warm-up-time", "0.3", "--measurement-time", "1"]);
    }
    if let Some(filter) = filter {
        cmd.arg(filter);
    }
    run(&mut cmd)
}

/// Regenerates `BENCHMARKS.md` from the results in `target/criterion`.
fn report() -> Result {
    if project_root().join("benches/src/bin/report.rs").is_file() {
        run(cargo().args(["run", "-p", "benches", "--release", "--bin", "report"]))?;
    } else {
        println!("No report generator (benches/src/bin/report.rs); BENCHMARKS.md was not updated.");
    }
    Ok(())
}

/// Parses the arguments of `cargo xtask bench [--quick] [FILTER]` (or
/// `cargo xtask bench --report-only`) and runs the benchmarks.
pub(crate) fn cli(args: &[String]) -> Result {
    let mut quick = false;
    let mut report_only = false;
    let mut filter = None;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--report-only" | "--no-run" => report_only = true,
            other if !other.starts_with('-') && filter.is_none() => filter = Some(other),
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument `{other}` for `bench`"
                )));
            }
        }
    }
    if report_only {
        if quick || filter.is_some() {
            return Err(Error::Usage(
                "`--report-only` runs no benchmark: it takes no `--quick` or filter".into(),
            ));
        }
        return report();
    }
    run_benches(quick, filter)
}
