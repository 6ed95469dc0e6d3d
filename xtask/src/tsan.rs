//! The `tsan` command: runs the ctx-core tests under the thread sanitizer.
//!
//! The thread sanitizer finds data races in real, optimised executions, which
//! complements the exhaustive but small loom models. The standard library has
//! to be rebuilt with the sanitizer, so this needs the nightly toolchain with
//! `rust-src` and an explicit `--target`. Races are timing dependent, so the
//! tests run several times.

use crate::{
    CORE_PACKAGE, Error, Result, fail, read_output, run, rustup_command, set_rustflags,
    toolchain_cargo,
};

/// How many times the tests run unless `--runs` says otherwise.
pub(crate) const DEFAULT_RUNS: u32 = 3;

/// Runs the ctx-core tests `runs` times under the thread sanitizer.
pub(crate) fn run_tsan(runs: u32) -> Result {
    // Adding a component that is already installed is a quick no-op.
    crate::ensure_nightly(&["rust-src"])?;
    let target = host_triple()?;
    for round in 1..=runs {
        println!("Thread sanitizer run {round} of {runs}");
        let mut cmd = toolchain_cargo("nightly");
        cmd.args(["test", "-Zbuild-std", "--target", &target])
            .args(["-p", CORE_PACKAGE, "--tests", "--target-dir", "target/tsan"]);
        set_rustflags(&mut cmd, "-Zsanitizer=thread --cfg ctx_sanitize");
        run(&mut cmd)?;
    }
    Ok(())
}

/// Returns the target triple of this machine as reported by the nightly `rustc -vV`.
fn host_triple() -> Result<String> {
    let mut cmd = rustup_command("rustc");
    cmd.args(["+nightly", "-vV"]);
    let output = read_output(&mut cmd)?;
    output
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .ok_or_else(|| fail("`rustc -vV` did not report a host triple"))
}

/// Parses the arguments of `cargo xtask tsan [--runs N]` and runs the tests.
pub(crate) fn cli(args: &[String]) -> Result {
    match args {
        [] => run_tsan(DEFAULT_RUNS),
        [flag, count] if flag == "--runs" => match count.parse() {
            Ok(runs) if runs > 0 => run_tsan(runs),
            _ => Err(Error::Usage(format!(
                "`--runs` needs a positive number, not `{count}`"
            ))),
        },
        [flag] if flag == "--runs" => {
            Err(Error::Usage("`--runs` needs a positive number".to_owned()))
        }
        [flag, _, extra, ..] if flag == "--runs" => Err(Error::Usage(format!(
            "unexpected argument `{extra}` for `tsan`"
        ))),
        [first, ..] => Err(Error::Usage(format!(
            "unexpected argument `{first}` for `tsan`"
        ))),
    }
}
