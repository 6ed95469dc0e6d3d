//! The `package` command: packages every publishable crate, unpacks each package
//! outside the workspace and runs its tests and doctests there.
//!
//! A crate that only works inside the workspace fails on crates.io, not here,
//! unless something builds it the way crates.io ships it: a file included from
//! outside the crate directory, a test that reads one, a path dependency without
//! a version, a README or license missing from the package. So this command:
//!
//! 1. finds the publishable crates: the workspace members whose manifest does not
//!    say `publish = false` (read line by line, like `msrv`, not with a TOML
//!    parser);
//! 2. runs `cargo package` on them, which also verifies each package by building
//!    it (cargo packages crates that depend on each other and are not published
//!    yet against a local overlay of the registry);
//! 3. checks that every package holds its `README.md` and the two license texts,
//!    identical to the root's;
//! 4. copies each unpacked package from `target/package/` to a scratch directory
//!    outside the workspace (cargo would otherwise take it for an undeclared
//!    member of this workspace) and runs `cargo test --all-targets` and
//!    `cargo test --doc` there, with all features, with the sibling packages it
//!    depends on patched in for their crates.io versions and with one shared
//!    target directory (`target/packaged`), so that dependencies build once.
//!
//! A new crate is picked up as soon as it is a workspace member without
//! `publish = false`; it then needs its own `README.md` and license copies.
//! `cargo publish --dry-run --workspace`, run by hand before a release, builds the
//! same packages and goes on to the registry's own checks.

use std::collections::BTreeSet;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::{
    Result, cargo, fail, no_more_args, project_root, run, section, set_rustflags, target_dir,
};

/// The `RUSTFLAGS` of every build here: the same as the other CI steps.
const DENY_WARNINGS: &str = "-D warnings";

/// Files every package must contain, so that its crates.io page and its license
/// stand on their own. The license texts must equal the root's.
const REQUIRED_FILES: &[&str] = &["README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// The license texts that each crate directory holds a copy of.
const LICENSE_FILES: &[&str] = &["LICENSE-MIT", "LICENSE-APACHE"];

/// A workspace member that is published to crates.io.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Crate {
    /// The package name (`ctx-tree` for the `ctx-core/` directory).
    name: String,
    /// The package version.
    version: String,
}

impl Crate {
    /// The directory name cargo gives the unpacked package: `<name>-<version>`.
    fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// Parses the (empty) arguments of `cargo xtask package` and runs the step.
pub(crate) fn cli(args: &[String]) -> Result {
    no_more_args("package", args)?;
    check()
}

/// Removes the sources cargo unpacked from its local overlay registries in an
/// earlier run. Cargo unpacks a sibling package it verifies against into the
/// registry's source cache, keyed by name and version, and reuses that copy as
/// long as the version is the same: without this, a second run on the same
/// machine verifies against the first run's sources.
fn forget_stale_overlays(crates: &[Crate]) -> Result {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let Some(sources) = cargo_home.map(|home| home.join("registry").join("src")) else {
        return Ok(());
    };
    let Ok(registries) = fs::read_dir(&sources) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        // Overlay registries are named after a hash with a leading dash; the
        // crates.io cache (`index.crates.io-…`) is never touched.
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for krate in crates {
            let dir_name = krate.dir_name();
            // Read from our own manifests line by line, before cargo checked
            // them: only a plain name may reach `remove_dir_all`.
            if !is_plain_file_name(&dir_name) {
                return Err(fail(format!(
                    "unexpected package directory name {dir_name:?}"
                )));
            }
            let stale = registry.path().join(dir_name);
            if stale.exists() {
                fs::remove_dir_all(&stale)
                    .map_err(|err| fail(format!("could not remove {}: {err}", stale.display())))?;
            }
        }
    }
    Ok(())
}

/// Whether `name` is one plain path component (letters, digits, `.`, `_`,
/// `-`; not `.` or `..`), so that joining it stays inside its directory.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Packages every publishable crate and tests each package on its own.
pub(crate) fn check() -> Result {
    let root = project_root();
    let crates = publishable_crates(&root)?;
    let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
    println!("Publishable crates: {}", names.join(", "));

    let target = target_dir(&root);
    section("package: cargo package", || {
        forget_stale_overlays(&crates)?;
        let mut cmd = cargo();
        // The working tree is what gets tested, committed or not.
        cmd.args(["package", "--allow-dirty"]);
        for name in &names {
            cmd.args(["-p", name]);
        }
        set_rustflags(&mut cmd, DENY_WARNINGS);
        run(&mut cmd)
    })?;

    let scratch = scratch_dir(&root);
    section("package: unpack outside the workspace", || {
        if scratch.exists() {
            fs::remove_dir_all(&scratch)
                .map_err(|err| fail(format!("could not clear {}: {err}", scratch.display())))?;
        }
        for krate in &crates {
            let unpacked = target.join("package").join(krate.dir_name());
            check_contents(&root, &unpacked)?;
            copy_dir(&unpacked, &scratch.join(krate.dir_name()))?;
        }
        println!("Unpacked into {}", scratch.display());
        Ok(())
    })?;

    let manifests = crates
        .iter()
        .map(|krate| {
            let path = scratch.join(krate.dir_name()).join("Cargo.toml");
            fs::read_to_string(&path)
                .map_err(|err| fail(format!("could not read {}: {err}", path.display())))
        })
        .collect::<Result<Vec<String>>>()?;
    let shared_target = target.join("packaged");
    // Every package is tested even after one fails, so one run names all of them.
    let mut failed = Vec::new();
    for (index, krate) in crates.iter().enumerate() {
        let dir = scratch.join(krate.dir_name());
        let patches: Vec<String> = siblings_needed(index, &crates, &manifests)
            .into_iter()
            .map(|sibling| {
                let path = scratch.join(crates[sibling].dir_name());
                patch_arg(&crates[sibling].name, &path)
            })
            .collect();
        let result = section(&format!("package: test {}", krate.dir_name()), || {
            // `--all-targets` leaves out the doctests, so they get their own run.
            for selection in ["--all-targets", "--doc"] {
                let mut cmd = cargo();
                cmd.current_dir(&dir)
                    .env("CARGO_TARGET_DIR", &shared_target)
                    .args(["test", selection, "--all-features"]);
                for patch in &patches {
                    cmd.args(["--config", patch]);
                }
                set_rustflags(&mut cmd, DENY_WARNINGS);
                run(&mut cmd)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            eprintln!("error: {err}");
            failed.push(krate.dir_name());
        }
    }
    if !failed.is_empty() {
        // The packages stay in the scratch directory, so they can be inspected.
        return Err(fail(format!(
            "the tests of {} failed in the unpacked package (in {})",
            failed.join(", "),
            scratch.display()
        )));
    }
    fs::remove_dir_all(&scratch)
        .map_err(|err| fail(format!("could not remove {}: {err}", scratch.display())))?;
    println!(
        "All {} packages build and pass their tests on their own.",
        crates.len()
    );
    Ok(())
}

/// Reads the workspace members from the root manifest and keeps the publishable ones,
/// in the order the members are listed (not necessarily dependencies first:
/// cargo orders the packaging, and `siblings_needed` finds what each needs).
fn publishable_crates(root: &Path) -> Result<Vec<Crate>> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let members = workspace_members(&manifest)
        .ok_or_else(|| fail("no `members = [...]` in the `[workspace]` of Cargo.toml"))?;
    let workspace_version = table_value(&manifest, "workspace.package", "version");
    let mut crates = Vec::new();
    for member in members {
        let path = root.join(&member).join("Cargo.toml");
        let text = read(&path)?;
        if table_value(&text, "package", "publish").as_deref() == Some("false") {
            continue;
        }
        let name = table_value(&text, "package", "name")
            .ok_or_else(|| fail(format!("no package name in {}", path.display())))?;
        let version = match table_value(&text, "package", "version") {
            Some(version) => version,
            None if text.contains("version.workspace = true") => workspace_version
                .clone()
                .ok_or_else(|| fail("no `version` in `[workspace.package]` of Cargo.toml"))?,
            None => return Err(fail(format!("no package version in {}", path.display()))),
        };
        crates.push(Crate { name, version });
    }
    if crates.is_empty() {
        return Err(fail("no publishable crate in the workspace"));
    }
    Ok(crates)
}

/// The entries of `members = [...]` in the `[workspace]` table, which may span lines.
fn workspace_members(manifest: &str) -> Option<Vec<String>> {
    let mut in_table = false;
    let mut list: Option<String> = None;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(list) = &mut list {
            list.push_str(line);
            if line.contains(']') {
                break;
            }
            continue;
        }
        if line.starts_with('[') {
            in_table = line == "[workspace]";
            continue;
        }
        if let Some(rest) = line.strip_prefix("members")
            && in_table
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            let value = value.trim().to_owned();
            let closed = value.contains(']');
            list = Some(value);
            if closed {
                break;
            }
        }
    }
    let list = list?;
    let inner = list.trim().strip_prefix('[')?.split(']').next()?;
    Some(
        inner
            .split(',')
            .map(|entry| entry.trim().trim_matches('"').to_owned())
            .filter(|entry| !entry.is_empty())
            .collect(),
    )
}

/// The value of `key = value` in `[table]`, without quotes or a trailing comment.
///
/// Line-based, as in `msrv`: enough for the `key = "value"` form our manifests use.
fn table_value(manifest: &str, table: &str, key: &str) -> Option<String> {
    let header = format!("[{table}]");
    let mut in_table = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == header;
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if in_table && name.trim() == key {
            let value = value.split('#').next().unwrap_or_default();
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// The indices of the sibling packages that `crates[index]` needs patched in: the
/// ones its packaged manifest names as a dependency, and theirs, transitively.
fn siblings_needed(index: usize, crates: &[Crate], manifests: &[String]) -> BTreeSet<usize> {
    let mut needed = BTreeSet::new();
    let mut queue = vec![index];
    while let Some(current) = queue.pop() {
        for (other, krate) in crates.iter().enumerate() {
            if other != index
                && !needed.contains(&other)
                && names_dependency(&manifests[current], &krate.name)
            {
                needed.insert(other);
                queue.push(other);
            }
        }
    }
    needed
}

/// Whether a packaged (normalized) manifest declares a dependency on package `name`,
/// under its own name (`[dependencies.name]`, also dev- and target-specific) or
/// renamed (`package = "name"`).
fn names_dependency(manifest: &str, name: &str) -> bool {
    manifest.lines().any(|line| {
        let line = line.trim();
        let renamed = line.strip_prefix("package").is_some_and(|rest| {
            rest.trim_start()
                .strip_prefix('=')
                .is_some_and(|value| value.trim().trim_matches('"') == name)
        });
        renamed || (line.starts_with('[') && line.ends_with(&format!("dependencies.{name}]")))
    })
}

/// The `--config` value that replaces crates.io's `name` with the package at `path`.
fn patch_arg(name: &str, path: &Path) -> String {
    let path = path
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("patch.crates-io.{name}.path=\"{path}\"")
}

/// Fails unless the unpacked package holds its README and the root's license texts.
fn check_contents(root: &Path, unpacked: &Path) -> Result {
    for file in REQUIRED_FILES {
        if !unpacked.join(file).is_file() {
            return Err(fail(format!(
                "{} has no {file}: add it to the crate directory (and to `include`, if the \
                 manifest has one)",
                unpacked.display()
            )));
        }
    }
    for file in LICENSE_FILES {
        if read(&unpacked.join(file))? != read(&root.join(file))? {
            return Err(fail(format!(
                "{} differs from the root's {file}: copy the root's over it",
                unpacked.join(file).display()
            )));
        }
    }
    Ok(())
}

/// A scratch directory outside the workspace, one per checkout (so that two
/// checkouts on one machine do not share it) and the same on every run.
fn scratch_dir(root: &Path) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    root.hash(&mut hasher);
    std::env::temp_dir().join(format!("ctx-packaged-{:016x}", hasher.finish()))
}

/// Copies the directory `from` to `to`, which must not exist yet.
fn copy_dir(from: &Path, to: &Path) -> Result {
    fs::create_dir_all(to)
        .map_err(|err| fail(format!("could not create {}: {err}", to.display())))?;
    let entries = fs::read_dir(from)
        .map_err(|err| fail(format!("could not read {}: {err}", from.display())))?;
    for entry in entries {
        let entry =
            entry.map_err(|err| fail(format!("could not read {}: {err}", from.display())))?;
        let source = entry.path();
        let dest = to.join(entry.file_name());
        if source.is_dir() {
            copy_dir(&source, &dest)?;
        } else {
            fs::copy(&source, &dest).map_err(|err| {
                fail(format!(
                    "could not copy {} to {}: {err}",
                    source.display(),
                    dest.display()
                ))
            })?;
        }
    }
    Ok(())
}

/// Reads a text file, naming it in the error.
fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map_err(|err| fail(format!("could not read {}: {err}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::{is_plain_file_name, names_dependency, table_value, workspace_members};

    #[test]
    fn only_plain_names_reach_the_registry_cache() {
        assert!(is_plain_file_name("ctx-tree-0.1.0"));
        assert!(is_plain_file_name("ctx_http-1.2.3-rc.1"));
        for bad in ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "a b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn reads_members_on_one_line_or_several() {
        let one = "[workspace]\nresolver = \"3\"\nmembers = [\"a\", \"b\"] # all\n";
        assert_eq!(workspace_members(one).unwrap(), ["a", "b"]);
        let several = "[package]\nmembers = [\"no\"]\n[workspace]\nmembers = [\n  \"a\",\n  \
            \"b\", # the second\n]\n[workspace.package]\n";
        assert_eq!(workspace_members(several).unwrap(), ["a", "b"]);
        assert_eq!(workspace_members("[package]\nname = \"a\"\n"), None);
    }

    #[test]
    fn reads_package_keys() {
        let manifest = "[package]\n# The name.\nname = \"ctx-tree\"\npublish = false # tooling\n\
            \n[lib]\nname = \"ctx_core\"\n";
        assert_eq!(
            table_value(manifest, "package", "name").as_deref(),
            Some("ctx-tree")
        );
        assert_eq!(
            table_value(manifest, "package", "publish").as_deref(),
            Some("false")
        );
        assert_eq!(
            table_value(manifest, "lib", "name").as_deref(),
            Some("ctx_core")
        );
        assert_eq!(table_value(manifest, "package", "version"), None);
    }

    #[test]
    fn finds_dependencies_in_a_packaged_manifest() {
        let manifest = "[package]\nname = \"ctx-tokio\"\n\n[dependencies.ctx-core]\n\
            version = \"0.1.0\"\npackage = \"ctx-tree\"\n\n\
            [target.'cfg(unix)'.dev-dependencies.ctx-blocking]\nversion = \"0.1.0\"\n";
        assert!(names_dependency(manifest, "ctx-tree"));
        assert!(names_dependency(manifest, "ctx-blocking"));
        assert!(!names_dependency(manifest, "ctx-core-extra"));
        assert!(!names_dependency(manifest, "ctx-tokio"));
    }
}
