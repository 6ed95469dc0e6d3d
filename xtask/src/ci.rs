//! The `ci` command: every check continuous integration runs, in order.
//!
//! The ordinary build steps share one target directory and one set of
//! `RUSTFLAGS`, so their build cache is reused from step to step. The loom,
//! Miri and thread sanitizer steps need different flags and therefore build
//! into their own target directories below `target/`; so does the package step,
//! whose crates come from unpacked packages rather than the workspace.
//!
//! On a CI machine (the `CI` variable set to anything but `false` or `0`) each
//! target directory is removed as soon as no later step reads it: a CI machine is
//! a fresh clone on a disk that may be small, and all of them together came to
//! 6.4 GB (1.2 GB at most at a time with the removals and the lean build settings
//! `.ci/run` exports). Elsewhere they are a developer's build cache and stay.

use std::fs;
use std::path::PathBuf;

use crate::{
    CORE_PACKAGE, Error, Result, cargo, project_root, run, section, set_rustdocflags,
    set_rustflags, target_dir,
};

/// The `RUSTFLAGS` used by every ordinary build step.
const DENY_WARNINGS: &str = "-D warnings";

/// How much of the pipeline to run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tier {
    /// fmt, clippy and the tests: the edit loop.
    Quick,
    /// Everything CI runs.
    Default,
    /// Also the MSRV check and the thread sanitizer.
    Full,
}

/// Runs the CI pipeline up to `tier`.
pub(crate) fn run_ci(tier: Tier) -> Result {
    section("toolchain components", || {
        // A fresh machine may have a minimal stable toolchain; adding components
        // that are already installed is a quick no-op. Nightly (for loom's
        // neighbours Miri and the sanitizer) is installed by the steps that need it.
        run(crate::rustup_command("rustup").args(["component", "add", "rustfmt", "clippy"]))
    })?;
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
    if tier == Tier::Quick {
        println!("Quick CI checks passed (fmt, clippy, tests).");
        return Ok(());
    }
    section("doc", || {
        // The public docs, then the private items too: the module docs of the
        // protocols are written for the next maintainer, and their links must
        // hold as well.
        for private in [false, true] {
            let mut cmd = cargo();
            cmd.args(["doc", "--workspace", "--no-deps", "--all-features"]);
            if private {
                cmd.arg("--document-private-items");
            }
            set_rustflags(&mut cmd, DENY_WARNINGS);
            set_rustdocflags(&mut cmd, DENY_WARNINGS);
            run(&mut cmd)?;
        }
        Ok(())
    })?;
    let sweep = Sweep::from_env();
    // The steps above share the ordinary debug build; nothing below reads it.
    sweep.remove(&["debug", "doc"]);
    section("stress (release, with the soak tests)", || {
        // The ten-million-children memory test is ignored in debug builds, where it
        // would take minutes; in release it takes seconds.
        let mut cmd = cargo();
        cmd.args(["test", "-p", CORE_PACKAGE, "--release", "--test", "stress"])
            .args(["--", "--include-ignored"]);
        set_rustflags(&mut cmd, DENY_WARNINGS);
        run(&mut cmd)
    })?;
    section("bench (build only)", || {
        let mut cmd = cargo();
        cmd.args(["bench", "--workspace", "--no-run"]);
        set_rustflags(&mut cmd, DENY_WARNINGS);
        run(&mut cmd)
    })?;
    sweep.remove(&["release"]);
    // Each publishable crate as crates.io will ship it: packaged, unpacked outside the
    // workspace, its tests and doctests run there (a section per step).
    crate::package::check()?;
    sweep.remove(&["package", "packaged"]);
    section("tidy", crate::tidy::check)?;
    section("loom", || {
        crate::loom::run_models(crate::loom::DEFAULT_FILTER)
    })?;
    sweep.remove_own(crate::loom::TARGET_DIR);
    section("miri", || crate::miri::run_miri(false, None))?;
    sweep.remove_own(crate::miri::TARGET_DIR);
    if tier == Tier::Full {
        section("msrv", crate::msrv::check)?;
        section("tsan", || crate::tsan::run_tsan(crate::tsan::DEFAULT_RUNS))?;
    }
    println!("All CI checks passed.");
    Ok(())
}

/// Removes target directories no later step reads, on a CI machine only.
struct Sweep {
    /// Whether this run is on a CI machine.
    enabled: bool,
}

impl Sweep {
    /// On when the `CI` variable is set to anything but empty, `false` or `0`.
    fn from_env() -> Self {
        let enabled =
            std::env::var("CI").is_ok_and(|value| !matches!(value.as_str(), "" | "false" | "0"));
        Sweep { enabled }
    }

    /// Removes these subdirectories of Cargo's target directory.
    fn remove(&self, subdirs: &[&str]) {
        let target = target_dir(&project_root());
        for subdir in subdirs {
            self.remove_dir(target.join(subdir));
        }
    }

    /// Removes a step's own target directory, given relative to the workspace root.
    fn remove_own(&self, dir: &str) {
        self.remove_dir(project_root().join(dir));
    }

    fn remove_dir(&self, dir: PathBuf) {
        if !self.enabled || !dir.exists() {
            return;
        }
        // A failure only costs disk space: the next steps do not need the space
        // unless the disk is small, and then they say so themselves.
        match fs::remove_dir_all(&dir) {
            Ok(()) => println!("Removed {} (no later step reads it)", dir.display()),
            Err(err) => println!("warning: could not remove {}: {err}", dir.display()),
        }
    }
}

/// Parses the arguments of `cargo xtask ci [--quick | --full]` and runs the pipeline.
pub(crate) fn cli(args: &[String]) -> Result {
    let mut tier = Tier::Default;
    for arg in args {
        let chosen = match arg.as_str() {
            "--full" => Tier::Full,
            "--quick" => Tier::Quick,
            other => {
                return Err(Error::Usage(format!(
                    "unexpected argument `{other}` for `ci`"
                )));
            }
        };
        if tier != Tier::Default && tier != chosen {
            return Err(Error::Usage(
                "`--quick` and `--full` exclude each other".to_owned(),
            ));
        }
        tier = chosen;
    }
    run_ci(tier)
}
