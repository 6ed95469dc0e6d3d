//! The A/B of the rows slower than the baseline: each measured again,
//! in turns, beside a build of the commit the baseline was measured at.
//!
//! The baseline (`benches/issue-baseline.txt`) was measured days ago, maybe
//! on another machine of the same kind; a row can read 10 % slower than
//! there and still be faster than the baseline's own code on this machine.
//! So after a full run, every row slower than the baseline by more than its
//! tolerance is measured again: the baseline's commit (a `git archive` of it
//! under the target directory, built with a target directory of its own) and
//! this tree, [`TURNS`] times each, alternating, with criterion's results kept
//! apart from the full run's: each turn in a `CRITERION_HOME` of its own,
//! whose result the report reads as it reads every other (`report --estimate`,
//! criterion's `estimates.json`). The medians go to `target/bench-ab.tsv`,
//! which the report reads: where a row has an A/B, the A/B decides whether it
//! is slower.

use super::report_command;
use crate::{Result, cargo, fail, project_root, read_output, run, target_dir};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs per side and row.
const TURNS: usize = 3;

/// Measures the rows the last full run found slower than the baseline again
/// beside the baseline's commit, and writes `target/bench-ab.tsv` (removed
/// when no row is slower, so that no stale A/B decides).
pub(crate) fn recheck_slower_rows() -> Result {
    let root = project_root();
    let target = target_dir(&root);
    let Asked { commit, file, rows } = slower_rows()?;
    // No stale A/B decides, whatever happens below.
    let _ = std::fs::remove_file(&file);
    if rows.is_empty() {
        println!("A/B: no row is slower than the baseline; nothing to measure again.");
        return Ok(());
    }
    println!(
        "A/B: {} row(s) slower than the baseline, measured again beside {commit}: {}",
        rows.len(),
        rows.join(", ")
    );
    let base = base_tree(&target, &commit)?;
    let sides = [
        Side {
            name: "base",
            dir: base,
            target: Some(target.join("ab-base-target")),
            criterion: target.join("ab-criterion/base"),
        },
        Side {
            name: "head",
            dir: root.clone(),
            target: None,
            criterion: target.join("ab-criterion/head"),
        },
    ];
    let mut text =
        format!("# id\tbase ns ({commit})\thead ns: medians of {TURNS} alternating turns\n");
    for row in &rows {
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for turn in 0..TURNS {
            for (side, times) in sides.iter().zip(&mut times) {
                times.push(side.measure(row, turn)?);
            }
        }
        let [base, head] = times.map(median);
        println!(
            "A/B: {row}: {commit} {base:.0} ns, now {head:.0} ns ({:+.1} %)",
            (head / base - 1.0) * 100.0
        );
        let _ = writeln!(text, "{row}\t{base}\t{head}");
    }
    std::fs::write(&file, text).map_err(|err| fail(format!("{}: {err}", file.display())))
}

/// Removes the last A/B: a run of some benchmarks only (a filter, `--quick`)
/// leaves rows whose A/B no longer goes with their times, so those rows are
/// judged against the baseline file again until a full run or `--recheck`.
pub(crate) fn forget() -> Result {
    let Asked { file, .. } = slower_rows()?;
    match std::fs::remove_file(&file) {
        Ok(()) => println!("A/B: removed {} (not a full run)", file.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(fail(format!("{}: {err}", file.display()))),
    }
    Ok(())
}

/// What the report asks to measure again (`report --slower-rows`).
struct Asked {
    /// The commit the baseline was measured at.
    commit: String,
    /// Where the report reads the A/B.
    file: PathBuf,
    /// The ids of the rows slower than the baseline.
    rows: Vec<String>,
}

/// One side of the A/B: a tree to run the benches of.
struct Side {
    name: &'static str,
    dir: PathBuf,
    /// Its own target directory, if not the workspace's.
    target: Option<PathBuf>,
    /// Where criterion keeps this side's results (away from the full run's),
    /// a directory per turn.
    criterion: PathBuf,
}

impl Side {
    /// One run of the benchmark `row` (ctx-core's implementation), as turn
    /// `turn`: its estimate, in ns.
    fn measure(&self, row: &str, turn: usize) -> Result<f64> {
        let id = format!("{row}/ctx-core");
        // A fresh directory per turn: criterion's result there is this turn's
        // alone, and a run that wrote none cannot be answered by an old one.
        let home = self.criterion.join(format!("turn-{turn}"));
        match std::fs::remove_dir_all(&home) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(fail(format!("{}: {err}", home.display()))),
        }
        let mut cmd = cargo();
        cmd.current_dir(&self.dir)
            .env("CRITERION_HOME", &home)
            .args(["bench", "-p", "benches", "--bench", "*", "--", "--exact"])
            .arg(&id);
        if let Some(target) = &self.target {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        run(&mut cmd)?;
        // This tree's report reads both sides' results: criterion 0.8's
        // directory layout, the same on both (the base commit uses it too).
        let output =
            read_output(report_command().arg("--estimate").arg(&home).arg(&id)).map_err(|err| {
                fail(format!(
                    "A/B: no estimate for `{id}` on the {} side ({}): {err}",
                    self.name,
                    self.dir.display()
                ))
            })?;
        estimate_line(&output).ok_or_else(|| {
            fail(format!(
                "A/B: `report --estimate` printed no estimate for `{id}`:\n{output}"
            ))
        })
    }
}

/// The rows the report finds slower than the baseline, the baseline's
/// commit and the A/B file: the report's `--slower-rows` lines `commit C`,
/// `file F` and `row ID` (one per row).
fn slower_rows() -> Result<Asked> {
    let output = read_output(report_command().arg("--slower-rows"))?;
    let (mut commit, mut file, mut rows) = (None, None, Vec::new());
    for line in output.lines() {
        match line.trim().split_once(' ') {
            Some(("commit", value)) => commit = Some(value.to_owned()),
            Some(("file", value)) => file = Some(PathBuf::from(value)),
            Some(("row", value)) => rows.push(value.to_owned()),
            _ => {}
        }
    }
    match (commit, file) {
        (Some(commit), Some(file)) => Ok(Asked { commit, file, rows }),
        _ => Err(fail(format!(
            "`report --slower-rows` named no commit or file:\n{output}"
        ))),
    }
}

/// The tree of `commit` under the target directory, unpacked once: into a
/// directory of its own first, renamed into place only whole, so that an
/// unpacking cut short is never taken for the tree.
fn base_tree(target: &Path, commit: &str) -> Result<PathBuf> {
    let dir = target.join(format!("ab-base-{commit}"));
    if dir.is_dir() {
        return Ok(dir);
    }
    let partial = target.join(format!("ab-base-{commit}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let unpacked = std::fs::create_dir_all(&partial)
        .map_err(|err| fail(format!("{}: {err}", partial.display())))
        .and_then(|()| unpack(commit, &partial))
        .and_then(|()| {
            std::fs::rename(&partial, &dir).map_err(|err| fail(format!("{}: {err}", dir.display())))
        });
    if unpacked.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    unpacked.map(|()| dir)
}

/// `git archive` of `commit`, unpacked into `into`.
fn unpack(commit: &str, into: &Path) -> Result {
    let mut archive = Command::new("git")
        .current_dir(project_root())
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| fail(format!("could not start `git archive`: {err}")))?;
    let tar = archive.stdout.take().expect("stdout was piped");
    let unpacked = run(Command::new("tar").arg("-x").arg("-C").arg(into).stdin(tar));
    // Waited for whatever tar did, so that no `git archive` is left behind.
    let status = archive
        .wait()
        .map_err(|err| fail(format!("`git archive` failed: {err}")))?;
    if !status.success() {
        return Err(fail(format!(
            "`git archive {commit}` failed ({status}): the A/B needs the baseline's \
             commit in this clone's history"
        )));
    }
    unpacked
}

/// The number of `report --estimate`'s `estimate NS` line.
fn estimate_line(output: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let value: f64 = line.trim().strip_prefix("estimate ")?.trim().parse().ok()?;
        (value.is_finite() && value > 0.0).then_some(value)
    })
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_estimate_line() {
        assert_eq!(estimate_line("estimate 6696800\n"), Some(6_696_800.0));
        assert_eq!(estimate_line("Finished\nestimate 0.6135\n"), Some(0.6135));
        for bad in [
            "",
            "estimate\n",
            "estimate x\n",
            "estimate -1\n",
            "estimate NaN\n",
            "nothing",
        ] {
            assert_eq!(estimate_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_commit_is_unpacked_whole_or_not_at_all() {
        let target = std::env::temp_dir().join(format!("ctx-xtask-ab-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&target);
        std::fs::create_dir_all(&target).unwrap();
        // A commit this clone does not have: an error, and nothing left over.
        let missing = "0000000000000000000000000000000000000000";
        assert!(base_tree(&target, missing).is_err());
        assert!(!target.join(format!("ab-base-{missing}")).exists());
        assert!(!target.join(format!("ab-base-{missing}.partial")).exists());
        // The checked-out commit: unpacked, and found again without unpacking.
        let tree = base_tree(&target, "HEAD").unwrap();
        assert!(tree.join("Cargo.toml").is_file());
        assert!(!target.join("ab-base-HEAD.partial").exists());
        assert_eq!(base_tree(&target, "HEAD").unwrap(), tree);
        std::fs::remove_dir_all(&target).unwrap();
    }

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
