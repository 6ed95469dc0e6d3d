//! The `tidy` command: checks source conventions that the compiler cannot.
//!
//! The checks are:
//!
//! - every Rust file starts with a `//!` module doc comment;
//! - in ctx-core, only the `sync` module uses the standard atomics directly,
//!   so that the loom build can swap them out in one place;
//! - in ctx-core, memory orderings and fences appear only in the places that own
//!   a lock-free protocol: `tree/` (which holds the child set), `sync.rs` and the
//!   built-in timer's thread; the public files are facades;
//! - the quickstart example in `README.md` is identical to
//!   `ctx-core/examples/quickstart.rs`, which is compiled and run by the tests;
//! - each adapter's example in `README.md` (between the adapters markers, under
//!   the crate's `###` heading) is identical to the first example in that
//!   crate's `src/lib.rs` docs, which its doctests run.
//!
//! All violations are reported with their file and line before the command fails.
//!
//! Rules that clippy enforces are not repeated here: `// SAFETY:` comments
//! (`clippy::undocumented_unsafe_blocks`) and `dbg!` (`clippy::dbg_macro`), both
//! denied by `cargo xtask ci`.

use std::fmt;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{Result, fail, no_more_args, project_root, read_output};

/// The marker line that opens the quickstart example in `README.md`.
const QUICKSTART_START: &str = "<!-- quickstart-example:start -->";

/// The marker line that closes the quickstart example in `README.md`.
const QUICKSTART_END: &str = "<!-- quickstart-example:end -->";

/// The file the README quickstart example must match.
const QUICKSTART_FILE: &str = "ctx-core/examples/quickstart.rs";

/// One broken rule, located by file and 1-based line number.
struct Violation {
    path: String,
    line: usize,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// Collects violations as the checks find them.
#[derive(Default)]
struct Report {
    violations: Vec<Violation>,
}

impl Report {
    fn add(&mut self, path: &str, line: usize, message: impl Into<String>) {
        self.violations.push(Violation {
            path: path.to_owned(),
            line,
            message: message.into(),
        });
    }
}

/// Runs every check and fails if any of them found a problem.
pub(crate) fn check() -> Result {
    let root = project_root();
    let files = rust_files(&root)?;
    let mut report = Report::default();
    for path in &files {
        let Ok(text) = fs::read_to_string(root.join(path)) else {
            // The file is tracked but was deleted from the working tree.
            continue;
        };
        check_module_doc(path, &text, &mut report);
        if path.starts_with("ctx-core/src/") {
            check_atomics(path, &text, &mut report);
            check_protocol_home(path, &text, &mut report);
        }
    }
    check_readme_quickstart(&root, &mut report);
    check_readme_adapters(&root, &mut report);

    if report.violations.is_empty() {
        println!(
            "tidy: checked {} Rust files, no problems found.",
            files.len()
        );
        return Ok(());
    }
    report
        .violations
        .sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    for violation in &report.violations {
        eprintln!("{violation}");
    }
    Err(fail(format!(
        "tidy found {} problem(s)",
        report.violations.len()
    )))
}

/// Lists the Rust files git knows about: tracked ones and new ones that are not ignored.
fn rust_files(root: &Path) -> Result<Vec<String>> {
    let mut cmd = Command::new("git");
    cmd.current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .args(["--", "*.rs"]);
    let output = read_output(&mut cmd)?;
    let mut files: Vec<String> = output
        .split('\0')
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The first non-empty line must be a `//!` module doc comment.
fn check_module_doc(path: &str, text: &str, report: &mut Report) {
    let first = text
        .lines()
        .enumerate()
        .find(|(_, line)| !line.trim().is_empty());
    match first {
        Some((_, line)) if line.trim_start().starts_with("//!") => {}
        Some((index, _)) => report.add(
            path,
            index + 1,
            "file must start with a `//!` module doc comment",
        ),
        None => report.add(
            path,
            1,
            "file is empty; it must start with a `//!` module doc comment",
        ),
    }
}

/// Only the `sync` shim names the standard atomics, so that loom can swap them.
fn check_atomics(path: &str, text: &str, report: &mut Report) {
    if path == "ctx-core/src/sync.rs" || path.starts_with("ctx-core/src/sync/") {
        return;
    }
    for (index, line) in text.lines().enumerate() {
        if is_comment(line) {
            continue;
        }
        if line.contains("std::sync::atomic") || line.contains("core::sync::atomic") {
            report.add(
                path,
                index + 1,
                "use the atomics re-exported by `crate::sync` so that loom can replace them",
            );
        }
    }
}

/// Where ctx-core may name a memory ordering or a fence: the homes of its
/// lock-free protocols (and the tests that model them).
const PROTOCOL_HOMES: &[&str] = &[
    "ctx-core/src/tree/",
    "ctx-core/src/sync.rs",
    "ctx-core/src/timer/std_thread.rs",
    "ctx-core/src/timer/shards.rs",
    "ctx-core/src/timer/shards/",
    "ctx-core/src/fork.rs",
    "ctx-core/src/tests/",
];

/// Every lock-free protocol lives in `tree/`: no `Ordering` or fence elsewhere.
fn check_protocol_home(path: &str, text: &str, report: &mut Report) {
    if PROTOCOL_HOMES.iter().any(|home| path.starts_with(home)) {
        return;
    }
    for (index, line) in text.lines().enumerate() {
        if is_comment(line) {
            continue;
        }
        if line.contains("Ordering::") || line.contains("fence(") {
            report.add(
                path,
                index + 1,
                "memory orderings belong in `tree/` (or `sync.rs`, the timer thread): \
                 move the protocol there and call it",
            );
        }
    }
}

/// Returns whether `line` is a comment, including doc comments.
fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// The README quickstart block must match the quickstart example, which the tests compile.
fn check_readme_quickstart(root: &Path, report: &mut Report) {
    let Ok(readme) = fs::read_to_string(root.join("README.md")) else {
        println!("note: there is no README.md; skipping the quickstart check.");
        return;
    };
    let readme_lines: Vec<&str> = readme.lines().collect();
    let start = readme_lines
        .iter()
        .position(|l| l.trim() == QUICKSTART_START);
    let end = readme_lines.iter().position(|l| l.trim() == QUICKSTART_END);
    let (start, end) = match (start, end) {
        (None, None) => {
            println!("note: README.md has no quickstart markers; skipping the quickstart check.");
            return;
        }
        (Some(start), Some(end)) if start < end => (start, end),
        (Some(line), _) | (None, Some(line)) => {
            report.add(
                "README.md",
                line + 1,
                format!("the quickstart needs both `{QUICKSTART_START}` and `{QUICKSTART_END}`, in that order"),
            );
            return;
        }
    };

    let block = &readme_lines[start + 1..end];
    if !block.iter().any(|l| l.trim_start().starts_with("```rust")) {
        report.add(
            "README.md",
            start + 1,
            "the quickstart must be a ```rust fenced block",
        );
        return;
    }
    // The README side keeps its line numbers for the error message.
    let readme_code = normalize(
        block
            .iter()
            .enumerate()
            .map(|(offset, line)| (start + offset + 2, *line))
            .filter(|(_, line)| !line.trim_start().starts_with("```")),
    );

    let Ok(example) = fs::read_to_string(root.join(QUICKSTART_FILE)) else {
        report.add(
            "README.md",
            start + 1,
            format!("{QUICKSTART_FILE} does not exist"),
        );
        return;
    };
    let example_code = normalize(
        example
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line))
            .filter(|(_, line)| !line.trim_start().starts_with("//!")),
    );

    for position in 0..readme_code.len().max(example_code.len()) {
        match (readme_code.get(position), example_code.get(position)) {
            (Some((_, ours)), Some((_, theirs))) if ours == theirs => continue,
            (Some((line, ours)), Some((example_line, theirs))) => report.add(
                "README.md",
                *line,
                format!(
                    "quickstart differs from {QUICKSTART_FILE}:{example_line}: \
                     README has `{ours}`, the example has `{theirs}`"
                ),
            ),
            (None, Some((example_line, _))) => report.add(
                "README.md",
                end + 1,
                format!(
                    "quickstart ends early; {QUICKSTART_FILE} continues at line {example_line}"
                ),
            ),
            (Some((line, _)), None) => report.add(
                "README.md",
                *line,
                format!("quickstart has more lines than {QUICKSTART_FILE}"),
            ),
            (None, None) => unreachable!("the loop stops at the longer of the two"),
        }
        // Once the two are out of step every later line differs, so one report is enough.
        return;
    }
}

/// The marker lines around the adapters' examples in `README.md`.
const ADAPTERS_START: &str = "<!-- adapters:start -->";
const ADAPTERS_END: &str = "<!-- adapters:end -->";

/// Each adapter example in the README must be its crate's first doc example
/// (the README's copy is marked `ignore`: the workspace README's doctests do
/// not depend on every runtime, the crate's own doctests run it).
fn check_readme_adapters(root: &Path, report: &mut Report) {
    let Ok(readme) = fs::read_to_string(root.join("README.md")) else {
        return;
    };
    let lines: Vec<&str> = readme.lines().collect();
    let (Some(start), Some(end)) = (
        lines.iter().position(|l| l.trim() == ADAPTERS_START),
        lines.iter().position(|l| l.trim() == ADAPTERS_END),
    ) else {
        return;
    };
    let mut crate_name = None;
    let mut line = start + 1;
    while line < end {
        let text = lines[line].trim();
        if let Some(name) = text.strip_prefix("### ") {
            crate_name = Some(name.trim().to_owned());
        } else if text.starts_with("```rust") {
            let first = line + 1;
            let close = (first..end)
                .find(|&i| lines[i].trim() == "```")
                .unwrap_or(end);
            if let Some(name) = crate_name.take() {
                let ours = normalize((first..close).map(|i| (i + 1, lines[i])));
                compare_with_crate_example(root, &name, first, &ours, report);
            }
            line = close;
        }
        line += 1;
    }
}

/// Compares a README block (`ours`, starting at README line `first`) with the
/// first fenced example in `crate_name/src/lib.rs`'s `//!` docs.
fn compare_with_crate_example(
    root: &Path,
    crate_name: &str,
    first: usize,
    ours: &[(usize, &str)],
    report: &mut Report,
) {
    let path = format!("{crate_name}/src/lib.rs");
    let Ok(lib) = fs::read_to_string(root.join(&path)) else {
        report.add("README.md", first, format!("{path} does not exist"));
        return;
    };
    let docs: Vec<(usize, &str)> = lib
        .lines()
        .enumerate()
        .map_while(|(i, l)| {
            let l = l.trim_start();
            let doc = l.strip_prefix("//!")?;
            Some((i + 1, doc.strip_prefix(' ').unwrap_or(doc)))
        })
        .collect();
    let Some(open) = docs.iter().position(|(_, l)| l.trim().starts_with("```")) else {
        report.add("README.md", first, format!("{path} has no doc example"));
        return;
    };
    let close = docs[open + 1..]
        .iter()
        .position(|(_, l)| l.trim() == "```")
        .map_or(docs.len(), |at| open + 1 + at);
    let theirs = normalize(docs[open + 1..close].iter().copied());
    for position in 0..ours.len().max(theirs.len()) {
        let (readme_line, lib_line) = (
            ours.get(position).map_or(first, |(n, _)| *n),
            theirs.get(position).map_or(0, |(n, _)| *n),
        );
        if ours.get(position).map(|(_, l)| l) != theirs.get(position).map(|(_, l)| l) {
            report.add(
                "README.md",
                readme_line,
                format!(
                    "the {crate_name} example differs from its crate's doc example \
                     ({path}:{lib_line})"
                ),
            );
            return;
        }
    }
}

/// Trims every line and drops the blank lines at the start and the end.
fn normalize<'a>(lines: impl Iterator<Item = (usize, &'a str)>) -> Vec<(usize, &'a str)> {
    let mut lines: Vec<(usize, &str)> = lines.map(|(number, line)| (number, line.trim())).collect();
    while lines.last().is_some_and(|(_, line)| line.is_empty()) {
        lines.pop();
    }
    let leading = lines.iter().take_while(|(_, line)| line.is_empty()).count();
    lines.drain(..leading);
    lines
}

/// Parses the (empty) arguments of `cargo xtask tidy` and runs the checks.
pub(crate) fn cli(args: &[String]) -> Result {
    no_more_args("tidy", args)?;
    check()
}

#[cfg(test)]
mod tests {
    use super::{Report, check_atomics, check_module_doc, check_protocol_home, normalize};

    fn messages(report: &Report) -> Vec<String> {
        report.violations.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn module_doc_must_come_first() {
        let mut report = Report::default();
        check_module_doc("a.rs", "\n//! Docs.\nfn main() {}\n", &mut report);
        check_module_doc("b.rs", "#![allow(dead_code)]\n//! Docs.\n", &mut report);
        assert_eq!(
            messages(&report),
            ["b.rs:1: file must start with a `//!` module doc comment"]
        );
    }

    #[test]
    fn orderings_only_where_protocols_live() {
        let text = "//! Docs.\n\
            // Ordering::SeqCst in a comment is fine.\n\
            let x = a.load(Ordering::Acquire);\n\
            fence(Ordering::SeqCst);\n";
        let mut report = Report::default();
        check_protocol_home("ctx-core/src/tree/cancel.rs", text, &mut report);
        check_protocol_home("ctx-core/src/sync.rs", text, &mut report);
        check_protocol_home("ctx-core/src/context.rs", text, &mut report);
        let lines: Vec<usize> = report.violations.iter().map(|v| v.line).collect();
        assert_eq!(lines, [3, 4]);
    }

    #[test]
    fn atomics_only_in_sync() {
        let text = "use std::sync::atomic::AtomicUsize;\n/// See core::sync::atomic.\n";
        let mut report = Report::default();
        check_atomics("ctx-core/src/sync.rs", text, &mut report);
        check_atomics("ctx-core/src/context.rs", text, &mut report);
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].line, 1);
    }

    #[test]
    fn normalize_trims_lines_and_blank_edges() {
        let lines = ["", "  fn main() {", "", "}  ", "", ""];
        let normalized = normalize(lines.iter().enumerate().map(|(i, l)| (i + 1, *l)));
        assert_eq!(normalized, [(2, "fn main() {"), (3, ""), (4, "}")]);
    }
}
