//! The `demo` command: runs the ctx-core demo example in release mode.

use crate::{CORE_PACKAGE, Result, cargo, no_more_args, run};

/// Parses the (empty) arguments of `cargo xtask demo` and runs the example.
pub(crate) fn cli(args: &[String]) -> Result {
    no_more_args("demo", args)?;
    run(cargo().args(["run", "-p", CORE_PACKAGE, "--release", "--example", "demo"]))
}
