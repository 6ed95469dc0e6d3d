//! The `tidy` command: checks source conventions that the compiler cannot.
//!
//! The checks are:
//!
//! - every Rust file starts with a `//!` module doc comment;
//! - in ctx-core, only the `sync` module uses the standard atomics directly,
//!   so that the loom build can swap them out in one place;
//! - in ctx-core, memory orderings and fences appear only in the places that own
//!   a lock-free protocol (`PROTOCOL_HOMES`: `tree/`, which holds the child set,
//!   `sync.rs`, the built-in timer's thread and shards, `fork.rs`, and the tests
//!   that model them); the public files are facades;
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

/// The lines strictly between the marker lines `open` and `close` (as 0-based
/// indices `(open, close)` of the markers), or `None`: with a note if neither
/// marker is there (`what` names the check), a violation if only one is, or
/// they are out of order.
fn marker_pair(
    lines: &[&str],
    open: &str,
    close: &str,
    what: &str,
    report: &mut Report,
) -> Option<(usize, usize)> {
    let start = lines.iter().position(|l| l.trim() == open);
    let end = lines.iter().position(|l| l.trim() == close);
    match (start, end) {
        (None, None) => {
            println!("note: README.md has no {what} markers; skipping the {what} check.");
            None
        }
        (Some(start), Some(end)) if start < end => Some((start, end)),
        (Some(line), _) | (None, Some(line)) => {
            report.add(
                "README.md",
                line + 1,
                format!("the {what} needs both `{open}` and `{close}`, in that order"),
            );
            None
        }
    }
}

/// Reports the first line where the README's copy (`ours`, numbered README
/// lines; `end` the README line after it) differs from the file it must match
/// (`theirs`, numbered lines of `path`). Once the two are out of step every
/// later line differs, so one report is enough.
fn compare_copy(
    what: &str,
    ours: &[(usize, &str)],
    end: usize,
    path: &str,
    theirs: &[(usize, &str)],
    report: &mut Report,
) {
    for position in 0..ours.len().max(theirs.len()) {
        match (ours.get(position), theirs.get(position)) {
            (Some((_, a)), Some((_, b))) if a == b => continue,
            (Some((line, a)), Some((their_line, b))) => report.add(
                "README.md",
                *line,
                format!(
                    "{what} differs from {path}:{their_line}: README has `{a}`, {path} has `{b}`"
                ),
            ),
            (None, Some((their_line, _))) => report.add(
                "README.md",
                end,
                format!("{what} ends early; {path} continues at line {their_line}"),
            ),
            (Some((line, _)), None) => report.add(
                "README.md",
                *line,
                format!("{what} has more lines than {path}"),
            ),
            (None, None) => unreachable!("the loop stops at the longer of the two"),
        }
        return;
    }
}

/// The README quickstart block must match the quickstart example, which the tests compile.
fn check_readme_quickstart(root: &Path, report: &mut Report) {
    let Ok(readme) = fs::read_to_string(root.join("README.md")) else {
        println!("note: there is no README.md; skipping the quickstart check.");
        return;
    };
    let readme_lines: Vec<&str> = readme.lines().collect();
    let Some((start, end)) = marker_pair(
        &readme_lines,
        QUICKSTART_START,
        QUICKSTART_END,
        "quickstart",
        report,
    ) else {
        return;
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
    compare_copy(
        "quickstart",
        &readme_code,
        end + 1,
        QUICKSTART_FILE,
        &example_code,
        report,
    );
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
    check_adapters_in(
        &readme,
        |path| fs::read_to_string(root.join(path)).ok(),
        report,
    );
}

/// [`check_readme_adapters`] on the README's text, with `read` giving a
/// workspace file's text (`None` if it does not exist).
fn check_adapters_in(readme: &str, read: impl Fn(&str) -> Option<String>, report: &mut Report) {
    let lines: Vec<&str> = readme.lines().collect();
    let Some((start, end)) = marker_pair(&lines, ADAPTERS_START, ADAPTERS_END, "adapters", report)
    else {
        return;
    };
    let mut crate_name = None;
    let mut compared = 0;
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
            let Some(name) = crate_name.take() else {
                report.add(
                    "README.md",
                    line + 1,
                    "an adapter example needs its crate's `### name` heading above it",
                );
                return;
            };
            let path = format!("{name}/src/lib.rs");
            let ours = normalize((first..close).map(|i| (i + 1, lines[i])));
            match read(&path) {
                Some(lib) => {
                    let theirs = first_doc_example(&lib);
                    if theirs.is_empty() {
                        report.add(
                            "README.md",
                            first,
                            format!("{path} has no Rust doc example"),
                        );
                    } else {
                        compare_copy("the example", &ours, close + 1, &path, &theirs, report);
                    }
                }
                None => report.add("README.md", first, format!("{path} does not exist")),
            }
            compared += 1;
            line = close;
        }
        line += 1;
    }
    if compared == 0 {
        report.add(
            "README.md",
            start + 1,
            "no adapter example between the adapters markers",
        );
    }
}

/// The first fenced Rust example of a file's leading `//!` docs (numbered
/// lines, trimmed), or nothing.
fn first_doc_example(lib: &str) -> Vec<(usize, &str)> {
    let docs: Vec<(usize, &str)> = lib
        .lines()
        .enumerate()
        .map_while(|(i, l)| Some((i + 1, l.trim_start().strip_prefix("//!")?)))
        .collect();
    let is_rust_fence = |l: &str| {
        let l = l.trim();
        let info = l.trim_start_matches('`');
        l.starts_with("```") && (info.is_empty() || info.starts_with("rust"))
    };
    let Some(open) = docs.iter().position(|(_, l)| is_rust_fence(l)) else {
        return Vec::new();
    };
    let close = docs[open + 1..]
        .iter()
        .position(|(_, l)| l.trim() == "```")
        .map_or(docs.len(), |at| open + 1 + at);
    normalize(docs[open + 1..close].iter().copied())
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
    use super::{
        ADAPTERS_END, ADAPTERS_START, Report, check_adapters_in, check_atomics, check_module_doc,
        check_protocol_home, normalize,
    };

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

    /// A README with one adapter block for crate `a`, and `a`'s lib.rs.
    fn adapters(block: &str, lib: &str) -> Vec<String> {
        let readme =
            format!("x\n{ADAPTERS_START}\n### a\n\n```rust,ignore\n{block}```\n{ADAPTERS_END}\n");
        let mut report = Report::default();
        let lib = lib.to_owned();
        check_adapters_in(
            &readme,
            |path| (path == "a/src/lib.rs").then(|| lib.clone()),
            &mut report,
        );
        messages(&report)
    }

    #[test]
    fn an_adapter_example_must_equal_its_crates_first_doc_example() {
        let lib = "//! Docs.\n//!\n//! ```\n//! let x = 1;\n//! assert_eq!(x, 1);\n//! ```\n";
        assert!(adapters("let x = 1;\nassert_eq!(x, 1);\n", lib).is_empty());
        let differs = adapters("let x = 2;\nassert_eq!(x, 1);\n", lib);
        assert!(differs[0].contains("a/src/lib.rs:4"), "{differs:?}");
        let short = adapters("let x = 1;\n", lib);
        assert!(short[0].contains("ends early"), "{short:?}");
        // A text block is not the example.
        let text = "//! ```text\n//! let x = 1;\n//! ```\n";
        assert!(adapters("let x = 1;\n", text)[0].contains("no Rust doc example"));
        assert!(adapters("let x = 1;\n", "fn main() {}\n")[0].contains("no Rust doc example"));
    }

    #[test]
    fn adapter_markers_and_headings_are_required() {
        let mut report = Report::default();
        let only_end = format!("{ADAPTERS_END}\n");
        check_adapters_in(&only_end, |_| None, &mut report);
        assert!(messages(&report)[0].contains("in that order"));
        let mut report = Report::default();
        let empty = format!("{ADAPTERS_START}\n{ADAPTERS_END}\n");
        check_adapters_in(&empty, |_| None, &mut report);
        assert!(messages(&report)[0].contains("no adapter example"));
        let mut report = Report::default();
        let headless = format!("{ADAPTERS_START}\n```rust\nx\n```\n{ADAPTERS_END}\n");
        check_adapters_in(&headless, |_| None, &mut report);
        assert!(messages(&report)[0].contains("heading"));
    }
}
