//! The report the performance issue was filed against, and the rows slower than
//! it.
//!
//! `benches/issue-baseline.txt` keeps ctx-core's column of that report's "Every
//! result" table: one criterion id (without the implementation) and its time in
//! nanoseconds per line. One of the issue's targets is that no row is slower
//! than there by more than 5 %; the report checks every row measured again.
//!
//! The baseline was measured on another day, possibly on another machine of the
//! same kind: a row a few percent off may be the machine's noise. Sub-nanosecond
//! rows in particular move by a tenth of a nanosecond between runs. So a row
//! slower than the baseline is measured again, by `cargo xtask bench`, beside a
//! build of the baseline's own commit ([`COMMIT`]), in turns on this machine
//! ([`AB_FILE`]); where that A/B exists, it decides.

use std::collections::BTreeMap;

/// Where the baseline lives, under the workspace root.
pub const FILE: &str = "benches/issue-baseline.txt";

/// How much slower a row may be: 5 %.
pub const TOLERANCE: f64 = 1.05;

/// The commit the baseline was measured at.
pub const COMMIT: &str = "8251c23";

/// Where `cargo xtask bench` leaves its A/B of the rows slower than the
/// baseline, under the target directory: `id<TAB>base ns<TAB>head ns` lines,
/// each time the median of the turns, `base` measured at [`COMMIT`].
pub const AB_FILE: &str = "bench-ab.tsv";

/// A row measured again in turns: the baseline's commit and this one, on the
/// same machine in the same minutes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ab {
    /// ns at [`COMMIT`].
    pub base_ns: f64,
    /// ns now.
    pub head_ns: f64,
}

impl Ab {
    /// Now's time over the baseline commit's: above 1 is slower.
    pub fn change(&self) -> f64 {
        self.head_ns / self.base_ns
    }
}

/// A row measured both then and now.
#[derive(Clone, Debug, PartialEq)]
pub struct Compared {
    /// The criterion id without the implementation.
    pub id: String,
    /// ns then.
    pub then_ns: f64,
    /// ns now.
    pub now_ns: f64,
    /// The A/B of a row slower than then, if one was measured.
    pub ab: Option<Ab>,
}

impl Compared {
    /// Now's time over then's: above 1 is slower.
    pub fn change(&self) -> f64 {
        self.now_ns / self.then_ns
    }

    /// Whether now's time is slower than then's by more than [`TOLERANCE`]:
    /// the rows to measure again in turns.
    pub fn slower_than_then(&self) -> bool {
        self.change() > TOLERANCE
    }

    /// Whether the row is slower than [`TOLERANCE`] allows: by its A/B where
    /// a row slower than then has one, else by then and now.
    pub fn slower(&self) -> bool {
        match self.ab {
            Some(ab) if self.slower_than_then() => ab.change() > TOLERANCE,
            _ => self.slower_than_then(),
        }
    }
}

/// Parses the baseline: `id<TAB>ns` lines; `#` starts a comment line. Lines
/// that do not parse are an error (naming the line), so that a damaged file is
/// not silently a shorter baseline.
pub fn parse(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut rows = BTreeMap::new();
    for (number, line) in data_lines(text) {
        let parsed = line.split_once('\t').and_then(|(id, ns)| {
            let ns = time(ns)?;
            (!id.trim().is_empty()).then(|| (id.trim(), ns))
        });
        match parsed {
            Some((id, ns)) => {
                if rows.insert(id.to_owned(), ns).is_some() {
                    return Err(format!("line {number}: `{id}` appears twice"));
                }
            }
            None => return Err(format!("line {number}: not `id<TAB>ns`: {line:?}")),
        }
    }
    Ok(rows)
}

/// The lines of `text` that hold data, trimmed, with their 1-based numbers:
/// not blank, not a `#` comment.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// A time in ns: a finite positive number.
fn time(field: &str) -> Option<f64> {
    field
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|ns| ns.is_finite() && *ns > 0.0)
}

/// The checked-in baseline, or why it could not be read.
pub fn checked_in() -> Result<BTreeMap<String, f64>, String> {
    let path = crate::workspace_root().join(FILE);
    let text = std::fs::read_to_string(&path).map_err(|err| format!("{FILE}: {err}"))?;
    parse(&text).map_err(|err| format!("{FILE}: {err}"))
}

/// Parses an A/B file ([`AB_FILE`]); `#` starts a comment line. A line that
/// does not parse is an error, naming the line.
pub fn parse_ab(text: &str) -> Result<BTreeMap<String, Ab>, String> {
    let mut rows = BTreeMap::new();
    for (number, line) in data_lines(text) {
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        match fields[..] {
            [id, base, head] if !id.is_empty() => match (time(base), time(head)) {
                (Some(base_ns), Some(head_ns)) => {
                    rows.insert(id.to_owned(), Ab { base_ns, head_ns });
                }
                _ => return Err(format!("line {number}: not two times: {line:?}")),
            },
            _ => {
                return Err(format!(
                    "line {number}: not `id<TAB>base<TAB>head`: {line:?}"
                ));
            }
        }
    }
    Ok(rows)
}

/// The A/B the last `cargo xtask bench` measured: none if it measured none
/// (no row was slower than then), or why it could not be read.
pub fn measured_ab() -> Result<BTreeMap<String, Ab>, String> {
    let path = crate::target_dir().join(AB_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_ab(&text).map_err(|err| format!("{}: {err}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(err) => Err(format!("{}: {err}", path.display())),
    }
}

/// The rows in both: `now` maps an id without the implementation to ctx-core's
/// time now; `ab` holds the rows measured again in turns. In the baseline's
/// order (by id).
pub fn compare(
    then: &BTreeMap<String, f64>,
    now: impl Fn(&str) -> Option<f64>,
    ab: &BTreeMap<String, Ab>,
) -> Vec<Compared> {
    then.iter()
        .filter_map(|(id, &then_ns)| {
            let now_ns = now(id).filter(|ns| ns.is_finite() && *ns > 0.0)?;
            Some(Compared {
                id: id.clone(),
                then_ns,
                now_ns,
                ab: ab.get(id).copied(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_skips_comments() {
        let rows = parse("# a comment\n\nErrOK\t0.767\nCancelChain/depth=10000\t431000\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows["ErrOK"], 0.767);
        assert_eq!(rows["CancelChain/depth=10000"], 431000.0);
    }

    #[test]
    fn a_damaged_line_is_an_error_not_a_shorter_baseline() {
        for bad in [
            "ErrOK 0.767",
            "ErrOK\tfast",
            "ErrOK\t-1",
            "\t3",
            "ErrOK\tNaN",
        ] {
            let err = parse(&format!("Fine\t1\n{bad}\n")).unwrap_err();
            assert!(err.starts_with("line 2:"), "{bad:?}: {err}");
        }
        assert!(parse("A\t1\nA\t2\n").unwrap_err().contains("twice"));
    }

    #[test]
    fn compares_the_rows_measured_again_and_flags_the_slower_ones() {
        let then = parse("A\t100\nB\t100\nC\t100\nGone\t1\n").unwrap();
        let now = |id: &str| match id {
            "A" => Some(105.0),
            "B" => Some(105.1),
            "C" => Some(50.0),
            _ => None,
        };
        let rows = compare(&then, now, &BTreeMap::new());
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["A", "B", "C"]);
        let slower: Vec<&str> = rows
            .iter()
            .filter(|r| r.slower())
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(slower, ["B"], "5 % is allowed, more is not");
        assert!((rows[2].change() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn an_ab_decides_for_a_row_slower_than_then_and_only_for_one() {
        let then = parse("Noisy\t100\nWorse\t100\nFine\t100\n").unwrap();
        let now = |_: &str| Some(120.0);
        let ab = parse_ab("# id\tbase\thead\nNoisy\t130\t120\nWorse\t100\t110\n").unwrap();
        let rows = compare(&then, now, &ab);
        let verdicts: Vec<(&str, bool, bool)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.slower_than_then(), r.slower()))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("Fine", true, true),
                ("Noisy", true, false),
                ("Worse", true, true)
            ],
            "faster than the baseline's commit here: not slower; 10 % slower here: slower"
        );
        // An A/B of a row that is not slower than then changes nothing.
        let rows = compare(&then, |_| Some(100.0), &ab);
        assert!(rows.iter().all(|r| !r.slower()));
    }

    #[test]
    fn a_damaged_ab_line_is_an_error() {
        for bad in ["A\t1", "A\t1\tx", "A\t0\t1", "\t1\t2", "A\t1\t2\t3"] {
            let err = parse_ab(&format!("Fine\t1\t1\n{bad}\n")).unwrap_err();
            assert!(err.starts_with("line 2:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_checked_in_baseline_parses_and_names_the_issue_rows() {
        let rows = checked_in().unwrap();
        for id in [
            "ErrOK",
            "CheckCanceled/Done",
            "CancelTree/depth=1000/Root=OpenCanceler",
            "ChildCreateDrop/threads=2",
        ] {
            assert!(rows.contains_key(id), "{id} missing");
        }
    }
}
