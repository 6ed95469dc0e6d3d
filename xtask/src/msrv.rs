//! The `msrv` command: checks the workspace with its minimum supported Rust version.
//!
//! The version is the `rust-version` key of `[workspace.package]` in the root
//! `Cargo.toml`. The tooling crates `benches` and `xtask` are excluded because
//! they are not published and may use newer features.

use crate::{Result, fail, no_more_args, project_root, run, rustup_command, toolchain_cargo};

/// Reads `rust-version` from the `[workspace.package]` table of `manifest`.
///
/// This is simple line-based parsing, not a TOML parser, which is enough for
/// the `key = "value"` form the root manifest uses.
fn rust_version(manifest: &str) -> Option<String> {
    let mut in_table = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == "[workspace.package]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_table && key.trim() == "rust-version" {
            // A trailing `# comment` is not part of the value.
            let value = value.split('#').next().unwrap_or_default();
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Parses the (empty) arguments of `cargo xtask msrv` and runs the check.
pub(crate) fn cli(args: &[String]) -> Result {
    no_more_args("msrv", args)?;
    check()
}

/// Installs the minimum supported toolchain if needed and checks the workspace
/// with it.
pub(crate) fn check() -> Result {
    let path = project_root().join("Cargo.toml");
    let manifest = std::fs::read_to_string(&path)
        .map_err(|err| fail(format!("could not read {}: {err}", path.display())))?;
    let version = rust_version(&manifest)
        .ok_or_else(|| fail("no `rust-version` in `[workspace.package]` of Cargo.toml"))?;
    println!("Minimum supported Rust version: {version}");
    run(rustup_command("rustup").args(["toolchain", "install", &version, "--profile", "minimal"]))?;
    run(toolchain_cargo(&version).args([
        "check",
        "--workspace",
        "--exclude",
        "benches",
        "--exclude",
        "xtask",
    ]))
}

#[cfg(test)]
mod tests {
    use super::rust_version;

    #[test]
    fn reads_rust_version_from_workspace_package() {
        let manifest = "[workspace]\nmembers = [\"a\"]\n\n\
            [workspace.package]\nedition = \"2021\"\nrust-version = \"1.75\" # MSRV\n\n\
            [workspace.dependencies]\nrust-version = \"9.9\"\n";
        assert_eq!(rust_version(manifest).as_deref(), Some("1.75"));
    }

    #[test]
    fn ignores_rust_version_outside_workspace_package() {
        let manifest = "[package]\nrust-version = \"1.70\"\n";
        assert_eq!(rust_version(manifest), None);
    }
}
