//! Project automation for the ctx workspace.
//!
//! Run it through the cargo alias defined in `.cargo/config.toml`:
//! `cargo xtask <command>`. See [`USAGE`] for the list of commands. The
//! crate deliberately uses only the standard library so that it builds
//! quickly and never needs network access of its own.

mod bench;
mod ci;
mod demo;
mod loom;
mod miri;
mod msrv;
mod package;
mod tidy;
mod tsan;

use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The help text printed by `cargo xtask help`.
const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  ci [--quick | --full]     Run every check CI runs. --quick: fmt, clippy and tests only
                            (the edit loop); --full adds the MSRV check and the thread sanitizer.
  loom [FILTER]             Run the loom models (tests whose names contain FILTER, default `loom_`).
  miri [--tree-borrows] [FILTER]
                            Run the ctx-core tests under Miri (FILTER may also come from MIRI_TEST_FILTER).
  tsan [--runs N]           Run the ctx-core tests N times under the thread sanitizer (default 3).
  bench [--quick] [FILTER]  Run the benchmarks and regenerate BENCHMARKS.md and README's table.
                            A full run also measures the rows slower than the issue's baseline
                            again, in turns with a build of the baseline's commit (an A/B).
  bench --report-only       Regenerate both from the last results in target/criterion.
  bench --recheck           Measure that A/B again from the last results, then regenerate both.
  bench --no-run            Build every benchmark, run none.
  msrv                      Check the workspace with the minimum supported Rust version.
  package                   Package every publishable crate, then run each package's tests and
                            doctests on its own, outside the workspace.
  demo                      Run the ctx-core demo example.
  tidy                      Check source conventions (module docs, where atomics live, README example).
  help                      Print this message.
";

/// The package name of the core, for `cargo -p`: the directory is `ctx-core/` and
/// its library is `ctx_core`, but the package is published as `ctx-tree` (the name
/// `ctx-core` is taken on crates.io).
pub(crate) const CORE_PACKAGE: &str = "ctx-tree";

/// The error type of every command: a message explaining what went wrong.
#[derive(Debug)]
pub(crate) enum Error {
    /// The command line could not be understood; the process exits with status 2.
    Usage(String),
    /// A step failed; the process exits with status 1.
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) | Error::Failed(message) => f.write_str(message),
        }
    }
}

/// The result type used throughout the crate.
pub(crate) type Result<T = ()> = std::result::Result<T, Error>;

/// Builds an [`Error::Failed`] from anything printable.
pub(crate) fn fail(message: impl Into<String>) -> Error {
    Error::Failed(message.into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match command {
        "ci" => ci::cli(rest),
        "loom" => loom::cli(rest),
        "miri" => miri::cli(rest),
        "tsan" => tsan::cli(rest),
        "bench" => bench::cli(rest),
        "msrv" => msrv::cli(rest),
        "package" => package::cli(rest),
        "demo" => demo::cli(rest),
        "tidy" => tidy::cli(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(Error::Usage(format!("unknown command `{other}`"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Usage(message)) => {
            eprintln!("error: {message}\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Error::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Returns the root of the workspace, which is the parent of this crate's directory.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the xtask crate lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/` at the root.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Runs `body` inside a collapsible log group and reports how long it took.
///
/// The `::group::` and `::endgroup::` markers are understood by common CI
/// log viewers and are harmless plain text everywhere else.
pub(crate) fn section<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("::group::{name}");
    let start = Instant::now();
    let result = body();
    let outcome = if result.is_ok() { "done" } else { "FAILED" };
    println!("{name}: {outcome} in {:.1}s", start.elapsed().as_secs_f64());
    println!("::endgroup::");
    result
}

/// Returns a `cargo` command for the toolchain that is running this program.
///
/// Cargo tells the programs it runs where it lives through the `CARGO`
/// variable; plain `cargo` from the `PATH` is the fallback.
pub(crate) fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(project_root());
    cmd
}

/// Returns a `cargo +<toolchain>` command, for example for nightly-only tools.
pub(crate) fn toolchain_cargo(toolchain: &str) -> Command {
    let mut cmd = rustup_command("cargo");
    cmd.arg(format!("+{toolchain}"));
    cmd
}

/// Returns a command for a rustup-managed `program` that is free to pick its own toolchain.
///
/// When this program runs under `cargo run`, the environment is full of
/// variables that pin the outer toolchain (`RUSTUP_TOOLCHAIN`, `RUSTC`,
/// `CARGO` and friends). Those would override a `+<toolchain>` argument, so
/// they are removed and the rustup proxy of that name from the `PATH` is used.
pub(crate) fn rustup_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(project_root());
    for name in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTDOC",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// Sets `RUSTFLAGS` on `cmd`, removing the encoded variant that would take precedence.
pub(crate) fn set_rustflags(cmd: &mut Command, flags: &str) {
    cmd.env("RUSTFLAGS", flags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
}

/// Sets `RUSTDOCFLAGS` on `cmd`, removing the encoded variant that would take precedence.
pub(crate) fn set_rustdocflags(cmd: &mut Command, flags: &str) {
    cmd.env("RUSTDOCFLAGS", flags)
        .env_remove("CARGO_ENCODED_RUSTDOCFLAGS");
}

/// Prints `cmd`, runs it to completion and fails if it does not succeed.
pub(crate) fn run(cmd: &mut Command) -> Result {
    let shown = display(cmd);
    println!("$ {shown}");
    flush_stdout();
    let status = cmd
        .status()
        .map_err(|err| fail(format!("could not start `{shown}`: {err}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(format!("command failed ({status}): {shown}")))
    }
}

/// Like [`run`], but also returns the standard output, which is streamed to
/// the terminal line by line while it is being collected.
pub(crate) fn run_tee(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    println!("$ {shown}");
    flush_stdout();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| fail(format!("could not start `{shown}`: {err}")))?;
    let mut captured = String::new();
    let stdout = child.stdout.take().expect("stdout was piped");
    for line in BufReader::new(stdout).lines() {
        let line =
            line.map_err(|err| fail(format!("could not read output of `{shown}`: {err}")))?;
        println!("{line}");
        captured.push_str(&line);
        captured.push('\n');
    }
    let status = child
        .wait()
        .map_err(|err| fail(format!("could not wait for `{shown}`: {err}")))?;
    if status.success() {
        Ok(captured)
    } else {
        Err(fail(format!("command failed ({status}): {shown}")))
    }
}

/// Installs the nightly toolchain (minimal profile) with `components` if it is
/// missing, and adds the components otherwise: a fresh machine has only stable.
/// An installed nightly is never updated here, so runs stay reproducible.
pub(crate) fn ensure_nightly(components: &[&str]) -> Result {
    let installed = read_output(rustup_command("rustup").args(["toolchain", "list"]))?;
    if !installed.lines().any(|line| line.starts_with("nightly")) {
        run(rustup_command("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    // Adding components that are already installed is a quick no-op.
    run(rustup_command("rustup")
        .args(["component", "add", "--toolchain", "nightly"])
        .args(components))
}

/// Runs `cmd` quietly and returns its standard output, failing if it does not succeed.
pub(crate) fn read_output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| fail(format!("could not start `{shown}`: {err}")))?;
    if !output.status.success() {
        return Err(fail(format!("command failed ({}): {shown}", output.status)));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| fail(format!("output of `{shown}` is not valid UTF-8")))
}

/// Renders a command the way a shell user would type it, including the
/// environment variables it sets.
fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (name, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!("{}={}", name.to_string_lossy(), quote(value)));
        }
    }
    // The full path of the program is noise; its file name is what matters.
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_else(|| cmd.get_program());
    parts.push(quote(program));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// Quotes a word for display if it contains characters a shell would split on.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if word.is_empty() || word.contains([' ', '"', '\'', '\t', '*']) {
        format!("\"{}\"", word.replace('"', "\\\""))
    } else {
        word.into_owned()
    }
}

/// Flushes standard output so that our messages appear before a child's output.
fn flush_stdout() {
    // A failed flush only affects the ordering of log lines, so it is ignored.
    let _ = std::io::stdout().flush();
}

/// Fails with a usage error if any arguments remain that a command does not accept.
pub(crate) fn no_more_args(command: &str, args: &[String]) -> Result {
    match args.first() {
        None => Ok(()),
        Some(arg) => Err(Error::Usage(format!(
            "unexpected argument `{arg}` for `{command}`"
        ))),
    }
}
