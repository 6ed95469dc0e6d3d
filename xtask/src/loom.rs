//! The `loom` command: exhaustive concurrency model checking of ctx-core.
//!
//! The models are ordinary unit tests in ctx-core that are compiled only with
//! `--cfg ctx_loom` and whose names start with `loom_`. Because a wrong filter
//! or a missing `cfg` silently runs zero tests, this command fails unless at
//! least one test actually ran.

use crate::{CORE_PACKAGE, Error, Result, cargo, fail, run_tee, set_rustflags};

/// The test name filter that selects every loom model.
pub(crate) const DEFAULT_FILTER: &str = "loom_";

/// Where the models build, relative to the workspace root: their `RUSTFLAGS`
/// differ from every other step's.
pub(crate) const TARGET_DIR: &str = "target/loom";

/// The number of preemptions loom explores unless `LOOM_MAX_PREEMPTIONS` is already set.
const DEFAULT_MAX_PREEMPTIONS: &str = "2";

/// The branch limit per execution unless `LOOM_MAX_BRANCHES` is already set.
const DEFAULT_MAX_BRANCHES: &str = "10000";

/// Runs the loom models whose names contain `filter`.
pub(crate) fn run_models(filter: &str) -> Result {
    let mut cmd = cargo();
    cmd.args(["test", "-p", CORE_PACKAGE, "--lib", "--release"])
        .args(["--target-dir", TARGET_DIR])
        .args(["--", "--nocapture", "--test-threads=1", filter]);
    set_rustflags(&mut cmd, "--cfg ctx_loom -C debug-assertions");
    for (name, default) in [
        ("LOOM_MAX_PREEMPTIONS", DEFAULT_MAX_PREEMPTIONS),
        ("LOOM_MAX_BRANCHES", DEFAULT_MAX_BRANCHES),
    ] {
        if std::env::var_os(name).is_none() {
            cmd.env(name, default);
        }
    }
    let output = run_tee(&mut cmd)?;
    let passed = passed_tests(&output);
    if passed == 0 {
        return Err(fail(format!(
            "no loom test matching `{filter}` ran; is the `ctx_loom` cfg wired up?"
        )));
    }
    println!("{passed} loom model(s) passed.");
    Ok(())
}

/// Adds up the `N passed` counts of every libtest summary line in `output`.
///
/// A summary line looks like
/// `test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out; finished in 1.2s`.
fn passed_tests(output: &str) -> u64 {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split_once(" passed"))
        .filter_map(|(count, _)| count.trim().parse::<u64>().ok())
        .sum()
}

/// Parses the arguments of `cargo xtask loom [FILTER]` and runs the models.
pub(crate) fn cli(args: &[String]) -> Result {
    match args {
        [] => run_models(DEFAULT_FILTER),
        [filter] if !filter.starts_with('-') => run_models(filter),
        // One filter only: name the argument that is too many, or the flag.
        [filter, extra, ..] if !filter.starts_with('-') => Err(Error::Usage(format!(
            "unexpected argument `{extra}` for `loom` (it takes one filter)"
        ))),
        [flag, ..] => Err(Error::Usage(format!(
            "unexpected argument `{flag}` for `loom`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::{cli, passed_tests};
    use crate::Error;

    fn usage_error(args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match cli(&args) {
            Err(Error::Usage(message)) => message,
            other => panic!("expected a usage error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_second_filter_is_named_in_the_error() {
        assert!(usage_error(&["loom_cancel", "extra"]).contains("`extra`"));
    }

    #[test]
    fn a_flag_is_named_in_the_error() {
        assert!(usage_error(&["--release"]).contains("`--release`"));
    }

    #[test]
    fn counts_passed_tests_in_summary_lines() {
        let output = "running 2 tests\n\
            test sync::loom_cancel ... ok\n\
            test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 0.50s\n";
        assert_eq!(passed_tests(output), 2);
    }

    #[test]
    fn zero_when_nothing_ran() {
        let output = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out\n";
        assert_eq!(passed_tests(output), 0);
        assert_eq!(passed_tests(""), 0);
    }
}
