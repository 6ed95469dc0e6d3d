//! The workspace README's "Between processes" block cannot be compiled where it
//! is (ctx-core's README doctest cannot depend on ctx-http), so it is marked
//! `ignore` there; this test keeps it identical to the body of this crate's
//! README example, which is compiled and run as a doctest.

use std::fs;
use std::path::Path;

/// The lines of the first code block that opens with `fence` after `heading`.
fn code_block(text: &str, heading: &str, fence: &str) -> Vec<String> {
    let after = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"))
        .1;
    let body = after
        .split_once(&format!("{fence}\n"))
        .unwrap_or_else(|| panic!("no {fence:?} block after {heading:?}"))
        .1;
    let body = body.split_once("```").expect("an unclosed code block").0;
    body.lines().map(|line| line.trim().to_owned()).collect()
}

#[test]
fn the_workspace_readme_block_is_the_compiled_example() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = fs::read_to_string(crate_dir.join("../README.md")).unwrap();
    let ours = fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let shown = code_block(&workspace, "## Between processes", "```rust,ignore");
    let compiled = code_block(&ours, "## Example", "```rust");
    assert!(shown.len() > 5, "the block is the layer in about ten lines");
    assert!(
        compiled.windows(shown.len()).any(|window| window == shown),
        "README.md's \"Between processes\" block is not a part of ctx-http/README.md's example:\n{}",
        shown.join("\n")
    );
}
