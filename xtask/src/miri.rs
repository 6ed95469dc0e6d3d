//! The `miri` command: runs the ctx-core tests under the Miri interpreter.
//!
//! Miri detects undefined behaviour such as data races, use after free and
//! violations of the aliasing model. It needs the nightly toolchain with the
//! `miri` and `rust-src` components, which this command installs if missing.
//! With `--tree-borrows` a second pass checks the Tree Borrows aliasing model
//! after the default Stacked Borrows pass.

use crate::{CORE_PACKAGE, Error, Result, run, set_rustflags, toolchain_cargo};

/// The Miri flags used for every pass.
///
/// `-Zmiri-ignore-leaks` is there for one thing: the built-in timer is a
/// process-wide thread that, by design, is still parked when a test binary's
/// `main` returns, which Miri otherwise reports as an error. Leaks of the tree
/// itself are checked elsewhere: the loom models count every node allocated and
/// freed, and the stress and after_func tests count allocations and drops.
const MIRIFLAGS: &str = "-Zmiri-strict-provenance -Zmiri-symbolic-alignment-check \
     -Zmiri-disable-isolation -Zmiri-ignore-leaks";

/// Where Miri builds, relative to the workspace root: its sysroot and flags are
/// its own.
pub(crate) const TARGET_DIR: &str = "target/miri";

/// Runs the ctx-core tests under Miri, optionally restricted to tests matching `filter`.
pub(crate) fn run_miri(tree_borrows: bool, filter: Option<&str>) -> Result {
    crate::ensure_nightly(&["miri", "rust-src"])?;
    run(toolchain_cargo("nightly").args(["miri", "setup"]))?;
    run_pass(MIRIFLAGS, filter)?;
    if tree_borrows {
        run_pass(&format!("{MIRIFLAGS} -Zmiri-tree-borrows"), filter)?;
    }
    Ok(())
}

/// Runs one Miri pass with the given `MIRIFLAGS`.
fn run_pass(miriflags: &str, filter: Option<&str>) -> Result {
    let mut cmd = toolchain_cargo("nightly");
    // Unit and integration tests only: the doctests are examples that arm the
    // process-wide timer thread, which outlives `main` (Miri rejects that), and they
    // exercise nothing the tests do not.
    cmd.args([
        "miri",
        "test",
        "-p",
        CORE_PACKAGE,
        "--lib",
        "--tests",
        "--target-dir",
        TARGET_DIR,
    ])
    .env("MIRIFLAGS", miriflags);
    set_rustflags(&mut cmd, "-Zrandomize-layout");
    if let Some(filter) = filter {
        cmd.args(["--", filter]);
    }
    run(&mut cmd)
}

/// Parses the arguments of `cargo xtask miri [--tree-borrows] [FILTER]` and runs Miri.
///
/// Without a `FILTER` argument the `MIRI_TEST_FILTER` environment variable,
/// if set and not empty, is passed to the test harness instead.
pub(crate) fn cli(args: &[String]) -> Result {
    let mut tree_borrows = false;
    let mut filter = None;
    for arg in args {
        match arg.as_str() {
            "--tree-borrows" => tree_borrows = true,
            other if !other.starts_with('-') && filter.is_none() => filter = Some(other.to_owned()),
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument `{other}` for `miri`"
                )));
            }
        }
    }
    let filter = filter.or_else(|| {
        std::env::var("MIRI_TEST_FILTER")
            .ok()
            .filter(|f| !f.is_empty())
    });
    run_miri(tree_borrows, filter.as_deref())
}
