//! The `ci` command: every check continuous integration runs, in order.
//!
//! The ordinary build steps share one target directory and one set of
//! `RUSTFLAGS`, so their build cache is reused from step to step. The loom,
//! Miri and thread sanitizer steps need different flags and therefore build
//! into their own target directories below `target/`.

use crate::{Error, Result, cargo, run, section, set_rustdocflags, set_rustflags};

/// The `RUSTFLAGS` used by every ordinary build step.
const DENY_WARNINGS: &str = "-D warnings";

/// Runs the CI pipeline; `--full` adds the thread sanitizer runs.
pub(crate) fn run_ci(full: bool) -> Result {
    section("fmt", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    section("clippy", || {
        let mut cmd = cargo();
        cmd.args(["clippy", "--workspace", "--all-targets", "--all-features"])
            .args(["--", "-D", "warnings"]);
        set_rustflags(&mut cmd, DENY_WARNINGS);
        run(&mut cmd)
    })?;
    section("test", || {
        // This includes the doctests.
        let mut cmd = cargo();
        cmd.args(["test", "--workspace", "--all-features"]);
        set_rustflags(&mut cmd, DENY_WARNINGS);
        run(&mut cmd)
    })?;
    section("stress (release, with the soak tests)", || {
        // The ten-million-children memory test is ignored in debug builds, where it
        // would take minutes; in release it takes seconds.
        let mut cmd = cargo();
        cmd.args(["test", "-p", "ctx-core", "--release", "--test", "stress"])
            .args(["--", "--include-ignored"]);
        set_rustflags(&mut cmd, DENY_WARNINGS);
        run(&mut cmd)
    })?;
    if crate::project_root().join("benches/Cargo.toml").is_file() {
        section("bench (build only)", || {
            let mut cmd = cargo();
            cmd.args(["bench", "--workspace", "--no-run"]);
            set_rustflags(&mut cmd, DENY_WARNINGS);
            run(&mut cmd)
        })?;
    }
    section("doc", || {
        let mut cmd = cargo();
        cmd.args(["doc", "--workspace", "--no-deps", "--all-features"]);
        set_rustflags(&mut cmd, DENY_WARNINGS);
        set_rustdocflags(&mut cmd, DENY_WARNINGS);
        run(&mut cmd)
    })?;
    section("tidy", crate::tidy::check)?;
    section("loom", || {
        crate::loom::run_models(crate::loom::DEFAULT_FILTER)
    })?;
    section("miri", || crate::miri::run_miri(false, None))?;
    if full {
        section("tsan", || crate::tsan::run_tsan(crate::tsan::DEFAULT_RUNS))?;
    }
    println!("All CI checks passed.");
    Ok(())
}

/// Parses the arguments of `cargo xtask ci [--full]` and runs the pipeline.
pub(crate) fn cli(args: &[String]) -> Result {
    let mut full = false;
    for arg in args {
        match arg.as_str() {
            "--full" => full = true,
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument `{other}` for `ci`"
                )));
            }
        }
    }
    run_ci(full)
}
