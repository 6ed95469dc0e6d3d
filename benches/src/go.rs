//! Go's numbers: the parser for `go test -bench` output and the checked-in baseline.
//!
//! `benches/go-baseline.txt` is the output of
//! `go test -run XXX -bench . -benchmem context` with Go 1.27.3 on the 2-core
//! reference machine (the project's shared baseline, copied verbatim). The report
//! uses it unless a `go` toolchain is on `PATH`, in which case it can measure Go on
//! this machine instead (see [`run_local`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// One Go benchmark result.
#[derive(Clone, Debug, PartialEq)]
pub struct GoResult {
    /// ns per op.
    pub ns_per_op: f64,
    /// Bytes allocated per op, if `-benchmem` was given.
    pub bytes_per_op: Option<f64>,
    /// Allocations per op, if `-benchmem` was given.
    pub allocs_per_op: Option<f64>,
}

/// Parsed `go test -bench` output.
#[derive(Clone, Debug, Default)]
pub struct GoBaseline {
    /// Results by name without the `Benchmark` prefix and the `-GOMAXPROCS` suffix,
    /// e.g. `CancelTree/depth=1000/Root=OpenCanceler`.
    pub results: BTreeMap<String, GoResult>,
    /// The `key: value` header lines (`goos`, `goarch`, `pkg`, `cpu`).
    pub header: BTreeMap<String, String>,
    /// Where the numbers come from, for the report.
    pub provenance: String,
}

impl GoBaseline {
    /// Parses `go test -bench` output.
    pub fn parse(text: &str, provenance: impl Into<String>) -> GoBaseline {
        let mut baseline = GoBaseline {
            provenance: provenance.into(),
            ..GoBaseline::default()
        };
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Benchmark") {
                let mut fields = rest.split_whitespace();
                let Some(name) = fields.next() else { continue };
                let fields: Vec<&str> = fields.collect();
                let metric = |unit: &str| {
                    fields
                        .windows(2)
                        .find(|w| w[1] == unit)
                        .and_then(|w| w[0].parse::<f64>().ok())
                };
                let Some(ns_per_op) = metric("ns/op") else {
                    continue;
                };
                baseline.results.insert(
                    strip_procs(name).to_owned(),
                    GoResult {
                        ns_per_op,
                        bytes_per_op: metric("B/op"),
                        allocs_per_op: metric("allocs/op"),
                    },
                );
            } else if let Some((key, value)) = line.split_once(": ")
                && ["goos", "goarch", "pkg", "cpu"].contains(&key)
            {
                baseline
                    .header
                    .insert(key.to_owned(), value.trim().to_owned());
            }
        }
        baseline
    }

    /// The result for `name` (Go's name without `Benchmark` and `-N`).
    pub fn get(&self, name: &str) -> Option<&GoResult> {
        self.results.get(name)
    }
}

/// `CancelTree/depth=1-2` → `CancelTree/depth=1`.
fn strip_procs(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, procs)) if !procs.is_empty() && procs.bytes().all(|b| b.is_ascii_digit()) => {
            base
        }
        _ => name,
    }
}

/// The checked-in baseline file, `benches/go-baseline.txt`.
pub fn baseline_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go-baseline.txt")
}

/// The checked-in baseline (Go 1.27.3 on the 2-core reference machine).
pub fn checked_in() -> Option<GoBaseline> {
    let text = std::fs::read_to_string(baseline_file()).ok()?;
    Some(GoBaseline::parse(
        &text,
        "Go 1.27.3 on the 2-core reference machine (`benches/go-baseline.txt`, \
         `go test -run XXX -bench . -benchmem context`)",
    ))
}

/// Measures Go's own `context` benchmarks on this machine, if a `go` toolchain is
/// on `PATH`: `go test -run XXX -bench . -benchmem context`, with
/// `-benchtime 100ms` added when `quick` (about a minute in all, or 15 s quick,
/// plus compiling the test binary the first time). Returns `None` when there is
/// no `go` or the run fails.
pub fn run_local(quick: bool) -> Option<GoBaseline> {
    let version = Command::new("go").arg("version").output().ok()?;
    if !version.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let mut args = vec!["test", "-run", "XXX", "-bench", ".", "-benchmem"];
    if quick {
        args.extend(["-benchtime", "100ms"]);
    }
    args.push("context");
    let command = format!("go {}", args.join(" "));
    eprintln!("report: measuring Go's context benchmarks: {command} ({version})");
    let output = Command::new("go")
        .args(&args)
        // Outside any Go module or workspace: `context` is the standard library's.
        .current_dir(std::env::temp_dir())
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "report: `{command}` failed; using the checked-in baseline\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let baseline = GoBaseline::parse(
        &text,
        format!("{version}, measured on this machine when the report was written (`{command}`)"),
    );
    (!baseline.results.is_empty()).then_some(baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_checked_in_baseline() {
        let go = checked_in().expect("benches/go-baseline.txt");
        let tree = go.get("CancelTree/depth=1000/Root=OpenCanceler").unwrap();
        assert_eq!(tree.ns_per_op, 371793.0);
        assert_eq!(tree.allocs_per_op, Some(5002.0));
        assert_eq!(go.get("ErrOK").unwrap().ns_per_op, 2.835);
        assert_eq!(
            go.get("CommonParentCancel").unwrap().bytes_per_op,
            Some(96.0)
        );
        assert_eq!(go.header.get("cpu").map(String::as_str), Some("AMD EPYC"));
    }

    #[test]
    fn strips_gomaxprocs() {
        assert_eq!(strip_procs("ErrOK-2"), "ErrOK");
        assert_eq!(
            strip_procs("WithTimeout/concurrency=40-16"),
            "WithTimeout/concurrency=40"
        );
        assert_eq!(strip_procs("ErrOK"), "ErrOK");
    }
}
