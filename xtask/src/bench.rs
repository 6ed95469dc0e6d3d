//! The `bench` command: runs the benchmarks and regenerates `BENCHMARKS.md`.
//!
//! Benchmark numbers depend on the machine and its load, so this command
//! never judges them; it fails only if a benchmark fails to build or run.
//! With `--quick` the measurements are much shorter, which is useful for
//! checking that everything still runs. With `--report-only` no criterion
//! benchmark runs: the report is regenerated from the results the last runs
//! left in `target/criterion` (it still measures what it measures itself: the
//! memory table, the deep chain, and Go's numbers when `go` is on `PATH`, unless
//! `CTX_BENCH_GO=0`). With `--recheck`, only the A/B of the rows the last
//! runs left slower than the baseline runs, then the report. With `--no-run`,
//! as for `cargo bench`, every benchmark is
//! built and none is run. The report writes `BENCHMARKS.md` and the README's
//! benchmark table. A full run also measures the rows slower than the
//! issue's baseline again, in turns with a build of the baseline's commit
//! (module `ab`), and the report judges those rows by that A/B.

use crate::{Error, Result, cargo, project_root, run};
use std::process::Command;

mod ab;

/// Runs the benchmarks matching `filter` and then the report generator, if there is one.
/// A full run (no `--quick`, no filter) first measures the rows slower than the
/// issue's baseline again, beside the baseline's commit ([`ab`]); that A/B
/// failing costs its verdicts, not the report. Any other run drops the last
/// A/B, which no longer goes with the rows' times.
pub(crate) fn run_benches(quick: bool, filter: Option<&str>) -> Result {
    run_criterion(quick, filter)?;
    if !quick && filter.is_none() {
        recheck_then_report()
    } else {
        if project_root().join("benches/src/bin/report.rs").is_file() {
            ab::forget()?;
        }
        report()
    }
}

/// The A/B of the rows the last run found slower than the baseline, then the
/// report.
fn recheck_then_report() -> Result {
    if project_root().join("benches/src/bin/report.rs").is_file()
        && let Err(err) = ab::recheck_slower_rows()
    {
        println!("A/B not measured: {err}");
    }
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

/// Regenerates `BENCHMARKS.md` (and the README's table) from the results in
/// `target/criterion`.
fn report() -> Result {
    if project_root().join("benches/src/bin/report.rs").is_file() {
        run(&mut report_command())?;
    } else {
        println!(
            "No report generator (benches/src/bin/report.rs); BENCHMARKS.md and the README were not updated."
        );
    }
    Ok(())
}

/// `cargo run` of the report generator, ready for its arguments.
fn report_command() -> Command {
    let mut cmd = cargo();
    cmd.args(["run", "-p", "benches", "--release", "--bin", "report", "--"]);
    cmd
}

/// Builds every benchmark without running one.
fn build_only() -> Result {
    run(cargo().args(["bench", "-p", "benches", "--no-run"]))
}

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Mode<'a> {
    /// Run the benchmarks (those matching the filter), then the report.
    Run {
        quick: bool,
        filter: Option<&'a str>,
    },
    /// `--report-only`: the report alone.
    Report,
    /// `--recheck`: the A/B of the rows the last run found slower, then the
    /// report.
    Recheck,
    /// `--no-run`: build every benchmark.
    Build,
}

/// Parses the arguments of `cargo xtask bench [--quick] [FILTER]` (or
/// `--report-only`, `--recheck` or `--no-run`).
fn parse(args: &[String]) -> Result<Mode<'_>> {
    let mut quick = false;
    let mut only = None;
    let mut filter = None;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            flag @ ("--report-only" | "--no-run" | "--recheck") if only.is_none() => {
                only = Some(flag)
            }
            other if !other.starts_with('-') && filter.is_none() => filter = Some(other),
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument `{other}` for `bench`"
                )));
            }
        }
    }
    match only {
        None => Ok(Mode::Run { quick, filter }),
        Some(flag) if quick || filter.is_some() => Err(Error::Usage(format!(
            "`{flag}` runs no benchmark: it takes no `--quick` or filter"
        ))),
        Some("--no-run") => Ok(Mode::Build),
        Some("--recheck") => Ok(Mode::Recheck),
        Some(_) => Ok(Mode::Report),
    }
}

/// `cargo xtask bench …`: see [`parse`].
pub(crate) fn cli(args: &[String]) -> Result {
    match parse(args)? {
        Mode::Run { quick, filter } => run_benches(quick, filter),
        Mode::Report => report(),
        Mode::Recheck => recheck_then_report(),
        Mode::Build => build_only(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Option<Mode<'static>> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        // Leaked: the parsed filter borrows the arguments (tests only).
        parse(Vec::leak(args)).ok()
    }

    #[test]
    fn arguments_pick_a_mode() {
        assert_eq!(
            parsed(&["--quick", "CancelTree"]),
            Some(Mode::Run {
                quick: true,
                filter: Some("CancelTree")
            })
        );
        assert_eq!(parsed(&["--report-only"]), Some(Mode::Report));
        assert_eq!(parsed(&["--no-run"]), Some(Mode::Build));
        assert_eq!(parsed(&["--recheck"]), Some(Mode::Recheck));
    }

    #[test]
    fn modes_that_run_nothing_take_no_run_options() {
        assert_eq!(parsed(&["--no-run", "--quick"]), None);
        assert_eq!(parsed(&["--report-only", "Scaling"]), None);
        assert_eq!(parsed(&["--report-only", "--no-run"]), None);
        assert_eq!(parsed(&["--recheck", "--quick"]), None);
        assert_eq!(parsed(&["--recheck", "--report-only"]), None);
        assert_eq!(parsed(&["--bogus"]), None);
        assert_eq!(parsed(&["a", "b"]), None);
    }
}
