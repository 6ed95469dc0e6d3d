//! Writes `BENCHMARKS.md` at the workspace root from the last benchmark run,
//! and the README's benchmark table from the same numbers (`benches::readme`).
//!
//! `cargo xtask bench` runs this after the criterion benches. It reads
//!
//! * criterion's results, `target/criterion/**/new/{benchmark,estimates}.json`
//!   (the point estimate criterion prints: the slope under linear sampling, else
//!   the mean; ns, by benchmark id),
//! * the tail latencies the contention bench left in `target/ctx-bench/tail.txt`,
//! * the allocation table, measured here and now (this binary installs the
//!   counting allocator),
//! * Go's numbers: `benches/go-baseline.txt` (Go 1.27.3 on the 2-core reference
//!   machine), or, if a `go` toolchain is on `PATH` and `CTX_BENCH_GO` is not `0`,
//!   a fresh `go test -run XXX -bench . -benchmem context` on this machine,
//!
//! * the cost of a 1,000,000-deep chain, measured in a child process of this
//!   binary (`alloc::deep_chain_in_child`: a stack overflow must not end the report),
//! * the shared-memory counts per operation (`benches::scaling`),
//!
//! and writes the targets (each with its measured ratio and met/missed), the
//! scaling table and its prediction for more cores next to the `Scaling` bench's
//! measurements, the design's performance table (DESIGN §6) with ratios and a
//! met/missed mark per target, then every result side by side. Rows whose
//! benchmarks did not run show "—". It never fails on timing.

use benches::alloc::{self, Counting};
use benches::baseline;
use benches::go::{self, GoBaseline};
use benches::readme;
use benches::stats;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

#[global_allocator]
static ALLOC: Counting = Counting;

const CORE: &str = "ctx-core";
const TOKIO_UTIL: &str = "tokio-util";

fn main() {
    // The deep chain runs in a child process of this binary (`alloc::deep_chain_in_child`).
    if alloc::run_deep_chain_if_asked() {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir, id] = &args[..]
        && flag == "--estimate"
    {
        // For `cargo xtask bench`'s A/B: one turn's result, read the way the
        // report reads every result.
        print_estimate(Path::new(dir), id);
        return;
    }
    let root = benches::workspace_root();
    let results = criterion_results(&benches::target_dir().join("criterion"));
    if std::env::args().any(|arg| arg == "--slower-rows") {
        // For `cargo xtask bench`: the rows to measure again beside the
        // baseline's commit.
        print_slower_rows(&results);
        return;
    }
    let tails = stats::read_tails();
    let (allocs, chain) = if alloc::installed() {
        (alloc::table(), alloc::deep_chain_in_child())
    } else {
        (Vec::new(), Err("not measured".into()))
    };
    let reference = go::checked_in();
    let local = local_go();
    let go = local
        .clone()
        .or_else(|| reference.clone())
        .unwrap_or_else(|| GoBaseline {
            provenance: "none (benches/go-baseline.txt is missing)".into(),
            ..GoBaseline::default()
        });
    let issue_baseline = baseline::checked_in();
    let ab = baseline::measured_ab();
    let report = Report {
        results: &results,
        baseline: &issue_baseline,
        ab: &ab,
        tails: &tails,
        allocs: &allocs,
        chain: &chain,
        go: &go,
        // With Go measured here, the reference machine's numbers get a column too.
        go_reference: local.and(reference.as_ref()),
    };
    let text = report.render();
    let path = root.join("BENCHMARKS.md");
    match fs::write(&path, &text) {
        Ok(()) => println!(
            "report: wrote BENCHMARKS.md ({} criterion results, {} tail lines, {} allocation rows)",
            results.len(),
            tails.len(),
            allocs.len()
        ),
        Err(err) => {
            eprintln!("report: could not write BENCHMARKS.md: {err}");
            std::process::exit(1);
        }
    }
    // The README's table comes from the same run, if it is one to quote.
    if run_mode() != "full" {
        println!(
            "report: README.md's table left as it is (only a full `cargo xtask bench` run writes it)"
        );
        return;
    }
    let readme = root.join("README.md");
    let written = fs::read_to_string(&readme)
        .map_err(|err| err.to_string())
        .and_then(|old| readme::splice(&old, &report.render_readme()))
        .and_then(|new| fs::write(&readme, new).map_err(|err| err.to_string()));
    match written {
        Ok(()) => println!("report: wrote the benchmark table in README.md"),
        Err(err) => {
            eprintln!("report: could not write the benchmark table in README.md: {err}");
            std::process::exit(1);
        }
    }
}

/// A row of the README's table: criterion ids (and Go's benchmark name) of one
/// workload.
struct ReadmeRow {
    workload: &'static str,
    core: &'static str,
    tokio: Option<&'static str>,
    go: Option<&'static str>,
}

/// The README's rows, timed ones; the memory rows follow them
/// ([`Report::render_readme`]).
fn readme_rows() -> Vec<ReadmeRow> {
    let row = |workload, core, tokio, go| ReadmeRow {
        workload,
        core,
        tokio,
        go,
    };
    vec![
        row(
            "`err()` on a live context (ErrOK)",
            "ErrOK/ctx-core",
            Some("ErrOK/tokio-util"),
            Some("ErrOK"),
        ),
        row(
            "`err()` on a canceled context (CheckCanceled/Err)",
            "CheckCanceled/Err/ctx-core",
            Some("CheckCanceled/Err/tokio-util"),
            Some("CheckCanceled/Err"),
        ),
        row(
            "poll `done` of a canceled context (CheckCanceled/Done)",
            "CheckCanceled/Done/ctx-core",
            Some("CheckCanceled/Done/tokio-util"),
            Some("CheckCanceled/Done"),
        ),
        row(
            "two threads reading one context (ContextCancelDone)",
            "ContextCancelDone/ctx-core",
            Some("ContextCancelDone/tokio-util"),
            Some("ContextCancelDone"),
        ),
        row(
            "CommonParentCancel (2 threads)",
            "CommonParentCancel/ctx-core",
            Some("CommonParentCancel/tokio-util"),
            Some("CommonParentCancel"),
        ),
        row(
            "child create + drop, 1 thread",
            "ChildCreateDrop/threads=1/ctx-core",
            Some("ChildCreateDrop/threads=1/tokio-util"),
            None,
        ),
        row(
            "child create + drop, 2 threads, shared parent",
            "ChildCreateDrop/threads=2/ctx-core",
            Some("ChildCreateDrop/threads=2/tokio-util"),
            None,
        ),
        row(
            "CancelTree depth=1000, open canceler",
            "CancelTree/depth=1000/Root=OpenCanceler/ctx-core",
            Some("CancelTree/depth=1000/Root=OpenCanceler/tokio-util"),
            Some("CancelTree/depth=1000/Root=OpenCanceler"),
        ),
        row(
            "DeepValueSameGoRoutine depth=100 (a missing value)",
            "DeepValueSameGoRoutine/depth=100/ctx-core",
            None,
            Some("DeepValueSameGoRoutine/depth=100"),
        ),
        row(
            "a value found at the top of 100 layers (Go: its miss, the same walk)",
            "DeepValueFound/depth=100/ctx-core",
            None,
            Some("DeepValueSameGoRoutine/depth=100"),
        ),
        row(
            "WithTimeout concurrency=40 (10 contexts per op), thread timer",
            "WithTimeout/concurrency=40/timer=std/ctx-core",
            None,
            Some("WithTimeout/concurrency=40"),
        ),
        row(
            "WithTimeout concurrency=40, tokio timer",
            "WithTimeout/concurrency=40/timer=tokio/ctx-core",
            None,
            Some("WithTimeout/concurrency=40"),
        ),
        row(
            "cancel of 100k children, no waiters",
            "CancelFanout/children=100000/waiters=none/ctx-core",
            Some("CancelFanout/children=100000/waiters=none/tokio-util"),
            None,
        ),
        row(
            "cancel of a 10,000-deep chain",
            "CancelChain/depth=10000/ctx-core",
            Some("CancelChain/depth=10000/tokio-util"),
            None,
        ),
    ]
}

/// Go measured on this machine, when a toolchain is on `PATH` and not disabled.
fn local_go() -> Option<GoBaseline> {
    if std::env::var_os("CTX_BENCH_GO").is_some_and(|v| v == "0") {
        return None;
    }
    go::run_local(run_mode() == "quick")
}

/// `quick`, `full` or empty: the mode the benches recorded for their last run.
fn run_mode() -> String {
    fs::read_to_string(benches::mode_file())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// One criterion result.
#[derive(Debug)]
struct Measured {
    mean_ns: f64,
    modified: Option<SystemTime>,
}

/// Every `new/` result under criterion's directory, by full benchmark id.
fn criterion_results(dir: &Path) -> BTreeMap<String, Measured> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some((id, measured)) = read_result(&path) {
                    out.insert(id, measured);
                }
            } else {
                stack.push(path);
            }
        }
    }
    out
}

fn read_result(dir: &Path) -> Option<(String, Measured)> {
    let bench: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("benchmark.json")).ok()?).ok()?;
    let estimates_path = dir.join("estimates.json");
    let estimates: Value = serde_json::from_str(&fs::read_to_string(&estimates_path).ok()?).ok()?;
    let id = bench.get("full_id")?.as_str()?.to_owned();
    // Criterion's own headline number: the slope of time over iterations when it
    // has one (linear sampling: it cancels the fixed per-sample cost, such as the
    // start and join of the threads of a parallel benchmark), else the mean.
    let estimate = |name: &str| estimates.get(name)?.get("point_estimate")?.as_f64();
    let mean_ns = estimate("slope").or_else(|| estimate("mean"))?;
    let modified = fs::metadata(&estimates_path)
        .and_then(|m| m.modified())
        .ok();
    Some((id, Measured { mean_ns, modified }))
}

// ===== the design table =====

/// Display unit of a row.
#[derive(Clone, Copy, Debug)]
enum Unit {
    Ns,
    Us,
    Ms,
}

impl Unit {
    fn scale(self, ns: f64) -> f64 {
        match self {
            Unit::Ns => ns,
            Unit::Us => ns / 1e3,
            Unit::Ms => ns / 1e6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Us => "µs",
            Unit::Ms => "ms",
        }
    }
}

/// Where a number comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A criterion benchmark id (mean, ns).
    Bench(&'static str),
    /// A tail-file id and field (ns).
    Tail(&'static str, &'static str),
    /// The workload has no counterpart in that implementation.
    NotApplicable,
}

/// A DESIGN §6 target: at most (`≤`) or below (`<`) a value, in the row's unit.
#[derive(Clone, Copy, Debug)]
struct Target {
    strict: bool,
    value: f64,
}

impl Target {
    fn le(value: f64) -> Option<Target> {
        Some(Target {
            strict: false,
            value,
        })
    }

    fn lt(value: f64) -> Option<Target> {
        Some(Target {
            strict: true,
            value,
        })
    }

    fn met(self, v: f64) -> bool {
        if self.strict {
            v < self.value
        } else {
            v <= self.value
        }
    }

    fn show(self, unit: Unit) -> String {
        format!(
            "{} {} {}",
            if self.strict { "<" } else { "≤" },
            num(self.value),
            unit.name()
        )
    }
}

/// One row of the design table.
struct Headline {
    workload: &'static str,
    unit: Unit,
    core: Source,
    tokio: Source,
    /// Go's benchmark name.
    go: Option<&'static str>,
    /// The design's target for ctx-core.
    target: Option<Target>,
    /// What the design lists for tokio-util (measured on the reference machine).
    design_tokio: &'static str,
}

fn headlines() -> Vec<Headline> {
    use Source::{Bench, NotApplicable, Tail};
    vec![
        Headline {
            workload: "CommonParentCancel (2 threads, shared parent), ns/op",
            unit: Unit::Ns,
            core: Bench("CommonParentCancel/ctx-core"),
            tokio: Bench("CommonParentCancel/tokio-util"),
            go: Some("CommonParentCancel"),
            target: Target::le(60.0),
            design_tokio: "398",
        },
        Headline {
            workload: "child create + drop, 2 threads, shared parent, ns/op",
            unit: Unit::Ns,
            core: Bench("ChildCreateDrop/threads=2/ctx-core"),
            tokio: Bench("ChildCreateDrop/threads=2/tokio-util"),
            go: None,
            target: Target::le(80.0),
            design_tokio: "332",
        },
        Headline {
            workload: "CancelTree depth=1000 Root=OpenCanceler, µs",
            unit: Unit::Us,
            core: Bench("CancelTree/depth=1000/Root=OpenCanceler/ctx-core"),
            tokio: Bench("CancelTree/depth=1000/Root=OpenCanceler/tokio-util"),
            go: Some("CancelTree/depth=1000/Root=OpenCanceler"),
            target: Target::le(40.0),
            design_tokio: "112",
        },
        Headline {
            workload: "ErrOK (live ctx), ns",
            unit: Unit::Ns,
            core: Bench("ErrOK/ctx-core"),
            tokio: Bench("ErrOK/tokio-util"),
            go: Some("ErrOK"),
            target: Target::le(1.0),
            design_tokio: "5.1",
        },
        Headline {
            workload: "CheckCanceled/Err (canceled ctx), ns",
            unit: Unit::Ns,
            core: Bench("CheckCanceled/Err/ctx-core"),
            tokio: Bench("CheckCanceled/Err/tokio-util"),
            go: Some("CheckCanceled/Err"),
            target: Target::le(2.0),
            design_tokio: "5.1",
        },
        Headline {
            workload: "CheckCanceled/Done (canceled ctx; poll a fresh borrowing `done_ref()`), ns",
            unit: Unit::Ns,
            core: Bench("CheckCanceled/Done/ctx-core"),
            tokio: Bench("CheckCanceled/Done/tokio-util"),
            go: Some("CheckCanceled/Done"),
            target: Target::le(2.0),
            design_tokio: "11.0",
        },
        Headline {
            workload: "CheckCanceled/DoneOwned (extra: poll a fresh owning `done()`), ns",
            unit: Unit::Ns,
            core: Bench("CheckCanceled/DoneOwned/ctx-core"),
            tokio: Bench("CheckCanceled/Done/tokio-util"),
            go: Some("CheckCanceled/Done"),
            target: Target::le(2.0),
            design_tokio: "—",
        },
        Headline {
            workload: "CheckCanceled/IsDone (extra: canceled ctx, `is_done()`), ns",
            unit: Unit::Ns,
            core: Bench("CheckCanceled/IsDone/ctx-core"),
            tokio: Bench("CheckCanceled/IsDone/tokio-util"),
            go: Some("CheckCanceled/Done"),
            target: Target::le(2.0),
            design_tokio: "—",
        },
        Headline {
            workload: "ContextCancelDone (2 threads reading one ctx), ns",
            unit: Unit::Ns,
            core: Bench("ContextCancelDone/ctx-core"),
            tokio: Bench("ContextCancelDone/tokio-util"),
            go: Some("ContextCancelDone"),
            target: Target::le(1.0),
            design_tokio: "23.5",
        },
        Headline {
            workload: "worst single check while another thread churns children (max), µs",
            unit: Unit::Us,
            core: Tail("WorstCheck/contention=high/ctx-core", "max_ns"),
            tokio: Tail("WorstCheck/contention=high/tokio-util", "max_ns"),
            go: None,
            target: Target::lt(1.0),
            design_tokio: "750–4000",
        },
        Headline {
            workload: "… the same, 99.99th percentile (extra), µs",
            unit: Unit::Us,
            core: Tail("WorstCheck/contention=high/ctx-core", "p99_99_ns"),
            tokio: Tail("WorstCheck/contention=high/tokio-util", "p99_99_ns"),
            go: None,
            target: Target::lt(1.0),
            design_tokio: "—",
        },
        Headline {
            workload: "DeepValueSameGoRoutine depth=100, ns",
            unit: Unit::Ns,
            core: Bench("DeepValueSameGoRoutine/depth=100/ctx-core"),
            tokio: NotApplicable,
            go: Some("DeepValueSameGoRoutine/depth=100"),
            target: Target::le(150.0),
            design_tokio: "n/a",
        },
        Headline {
            workload: "… a lookup that finds its value at the top of 100 layers (extra: the walk the miss above no longer makes; Go's miss walks the same chain), ns",
            unit: Unit::Ns,
            core: Bench("DeepValueFound/depth=100/ctx-core"),
            tokio: NotApplicable,
            go: Some("DeepValueSameGoRoutine/depth=100"),
            target: None,
            design_tokio: "n/a",
        },
        Headline {
            workload: "WithTimeout concurrency=40 (10 ctx create+cancel per op), tokio backend, ns/op",
            unit: Unit::Ns,
            core: Bench("WithTimeout/concurrency=40/timer=tokio/ctx-core"),
            tokio: NotApplicable,
            go: Some("WithTimeout/concurrency=40"),
            target: Target::le(500.0),
            design_tokio: "n/a",
        },
        Headline {
            workload: "WithTimeout concurrency=40, built-in StdTimer backend (extra), ns/op",
            unit: Unit::Ns,
            core: Bench("WithTimeout/concurrency=40/timer=std/ctx-core"),
            tokio: NotApplicable,
            go: Some("WithTimeout/concurrency=40"),
            target: None,
            design_tokio: "n/a",
        },
        Headline {
            workload: "cancel of 100k children, no waiters, ms",
            unit: Unit::Ms,
            core: Bench("CancelFanout/children=100000/waiters=none/ctx-core"),
            tokio: Bench("CancelFanout/children=100000/waiters=none/tokio-util"),
            go: None,
            target: Target::le(0.7),
            design_tokio: "2.66",
        },
        Headline {
            workload: "cancel → all of 100k awaiting tokio tasks woken, ms",
            unit: Unit::Ms,
            core: Bench("CancelFanout/children=100000/waiters=tokio-tasks/ctx-core"),
            tokio: Bench("CancelFanout/children=100000/waiters=tokio-tasks/tokio-util"),
            go: None,
            target: Target::le(25.0),
            design_tokio: "38",
        },
        Headline {
            workload: "10,000-deep chain, cancel of the root, µs",
            unit: Unit::Us,
            core: Bench("CancelChain/depth=10000/ctx-core"),
            tokio: Bench("CancelChain/depth=10000/tokio-util"),
            go: None,
            target: Target::le(150.0),
            design_tokio: "648",
        },
    ]
}

// ===== the targets =====

/// What a target compares ctx-core with.
#[derive(Clone, Copy, Debug)]
enum Peer {
    /// tokio-util's criterion result with this id.
    Tokio(&'static str),
    /// Go's benchmark of this name.
    Go(&'static str),
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Tokio(_) => TOKIO_UTIL,
            Peer::Go(_) => "Go",
        }
    }
}

/// One target of the performance issue.
#[derive(Clone, Copy, Debug)]
enum Goal {
    /// ctx-core (criterion id `core`) at least `factor` times as fast as the
    /// peer: the peer's time ÷ ctx-core's ≥ `factor`.
    Faster {
        core: &'static str,
        peer: Peer,
        factor: f64,
    },
    /// ctx-core's time at most `factor` times the peer's.
    NoSlower {
        core: &'static str,
        peer: Peer,
        factor: f64,
    },
    /// Aggregate throughput at two threads at least `factor` times one
    /// thread's. Both ids report wall time per operation over all threads.
    Scales {
        one: &'static str,
        two: &'static str,
        factor: f64,
    },
    /// Bytes and allocations per `with_cancel` child of a live parent (the
    /// allocation table's `with_cancel` row).
    ChildMemory { bytes: f64, allocs: f64 },
    /// Bytes per level of the deep chain, which must cancel and drop on the
    /// small stack.
    DeepChain { bytes: f64 },
    /// No row of the report the issue was filed against (`benches::baseline`)
    /// slower by more than its tolerance.
    NoRowSlower,
}

/// A row of the targets table.
struct Goalpost {
    workload: &'static str,
    goal: Goal,
}

fn goalposts() -> Vec<Goalpost> {
    use Goal::{ChildMemory, DeepChain, Faster, NoRowSlower, NoSlower, Scales};
    use Peer::{Go, Tokio};
    let row = |workload, goal| Goalpost { workload, goal };
    vec![
        row(
            "child create + drop, 2 threads, shared parent",
            Faster {
                core: "ChildCreateDrop/threads=2/ctx-core",
                peer: Tokio("ChildCreateDrop/threads=2/tokio-util"),
                factor: 2.0,
            },
        ),
        row(
            "child create + drop, 2 threads, shared parent",
            Scales {
                one: "ChildCreateDrop/threads=1/ctx-core",
                two: "ChildCreateDrop/threads=2/ctx-core",
                factor: 1.6,
            },
        ),
        row(
            "CommonParentCancel",
            Faster {
                core: "CommonParentCancel/ctx-core",
                peer: Go("CommonParentCancel"),
                factor: 2.0,
            },
        ),
        row(
            "CommonParentCancel",
            Faster {
                core: "CommonParentCancel/ctx-core",
                peer: Tokio("CommonParentCancel/tokio-util"),
                factor: 3.0,
            },
        ),
        row(
            "CancelTree depth=1000 Root=OpenCanceler",
            Faster {
                core: "CancelTree/depth=1000/Root=OpenCanceler/ctx-core",
                peer: Go("CancelTree/depth=1000/Root=OpenCanceler"),
                factor: 3.0,
            },
        ),
        row(
            "CancelTree depth=1000 Root=OpenCanceler",
            Faster {
                core: "CancelTree/depth=1000/Root=OpenCanceler/ctx-core",
                peer: Tokio("CancelTree/depth=1000/Root=OpenCanceler/tokio-util"),
                factor: 2.0,
            },
        ),
        row(
            "cancel of 100k children, no waiters",
            Faster {
                core: "CancelFanout/children=100000/waiters=none/ctx-core",
                peer: Tokio("CancelFanout/children=100000/waiters=none/tokio-util"),
                factor: 3.0,
            },
        ),
        row(
            "100k tokio tasks awaiting their own child, woken by one cancel",
            Faster {
                core: "CancelFanout/children=100000/waiters=tokio-tasks/ctx-core",
                peer: Tokio("CancelFanout/children=100000/waiters=tokio-tasks/tokio-util"),
                factor: 1.2,
            },
        ),
        row(
            "WithTimeout concurrency=40, thread timer",
            NoSlower {
                core: "WithTimeout/concurrency=40/timer=std/ctx-core",
                peer: Go("WithTimeout/concurrency=40"),
                factor: 1.0,
            },
        ),
        row(
            "WithTimeout concurrency=40, tokio timer",
            NoSlower {
                core: "WithTimeout/concurrency=40/timer=tokio/ctx-core",
                peer: Go("WithTimeout/concurrency=40"),
                factor: 1.0,
            },
        ),
        row(
            "bytes per `with_cancel` child (node + its share of the parent's set)",
            ChildMemory {
                bytes: 64.0,
                allocs: 1.0,
            },
        ),
        row("1,000,000-deep chain", DeepChain { bytes: 120.0 }),
        row(
            "every row of the report the issue was filed against",
            NoRowSlower,
        ),
    ]
}

// ===== rendering =====

struct Report<'a> {
    results: &'a BTreeMap<String, Measured>,
    tails: &'a BTreeMap<String, String>,
    allocs: &'a [alloc::Row],
    /// The deep chain's cost, or why it could not be measured.
    chain: &'a Result<alloc::Chain, String>,
    go: &'a GoBaseline,
    go_reference: Option<&'a GoBaseline>,
    /// ctx-core's times in the report the issue was filed against.
    baseline: &'a Result<BTreeMap<String, f64>, String>,
    /// The rows slower than then, measured again beside the baseline's commit.
    ab: &'a Result<BTreeMap<String, baseline::Ab>, String>,
}

/// For `cargo xtask bench`'s A/B: the baseline's commit (`commit C`), where
/// the A/B goes (`file F`) and the ids, without the implementation, of the
/// rows slower than the baseline by more than its tolerance (`row ID`).
/// `report --estimate DIR ID`: the line `estimate NS` for the benchmark `ID`
/// among the criterion results under `DIR` (a `CRITERION_HOME`), or an error
/// and exit status 1 if it has none.
fn print_estimate(dir: &Path, id: &str) {
    match criterion_results(dir).get(id) {
        Some(measured) => println!("estimate {}", measured.mean_ns),
        None => {
            eprintln!("report: no result for `{id}` under {}", dir.display());
            std::process::exit(1);
        }
    }
}

fn print_slower_rows(results: &BTreeMap<String, Measured>) {
    println!("commit {}", baseline::COMMIT);
    println!(
        "file {}",
        benches::target_dir().join(baseline::AB_FILE).display()
    );
    let Ok(then) = baseline::checked_in() else {
        return;
    };
    let now = |id: &str| results.get(&format!("{id}/{CORE}")).map(|m| m.mean_ns);
    for row in baseline::compare(&then, now, &BTreeMap::new()) {
        if row.slower_than_then() {
            println!("row {}", row.id);
        }
    }
}

impl Report<'_> {
    fn value_ns(&self, source: Source) -> Option<f64> {
        match source {
            Source::Bench(id) => self.results.get(id).map(|m| m.mean_ns),
            Source::Tail(id, field) => self.tails.get(id).and_then(|l| stats::field(l, field)),
            Source::NotApplicable => None,
        }
    }

    fn show(&self, source: Source, unit: Unit) -> String {
        match source {
            Source::NotApplicable => "n/a".into(),
            _ => self
                .value_ns(source)
                .map_or("—".into(), |ns| num(unit.scale(ns))),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# Benchmarks\n\n");
        out.push_str(
            "Generated by `cargo xtask bench` (`benches/src/bin/report.rs`); do not edit by \
             hand. What each benchmark measures, and how to run one: `benches/README.md`.\n\n",
        );
        self.render_provenance(&mut out);
        self.render_targets(&mut out);
        self.render_scaling(&mut out);
        self.render_design(&mut out);
        self.render_allocs(&mut out);
        self.render_tails(&mut out);
        self.render_against_baseline(&mut out);
        self.render_all(&mut out);
        out
    }

    /// ctx-core's rows measured again, beside the report the issue was filed
    /// against.
    fn against_baseline(&self) -> Result<Vec<baseline::Compared>, String> {
        let then = self.baseline.as_ref().map_err(Clone::clone)?;
        let none = BTreeMap::new();
        let ab = self.ab.as_ref().unwrap_or(&none);
        Ok(baseline::compare(
            then,
            |id| self.ns(&format!("{id}/{CORE}")),
            ab,
        ))
    }

    fn render_against_baseline(&self, out: &mut String) {
        out.push_str(
            "## Against the report the issue was filed on

",
        );
        let rows = match self.against_baseline() {
            Ok(rows) => rows,
            Err(why) => {
                let _ = writeln!(out, "Not compared: {why}.\n");
                return;
            }
        };
        let _ = writeln!(
            out,
            "ctx-core's time in every row measured again, beside its time in the report \
             the performance issue was filed against (`{}`: a full run at 8251c23, \
             2026-11-22, on a 2-core Xeon). A row slower by more than {:.0} % is marked. \
             The two runs are days apart and may be on different machines of the same \
             kind: a few percent either way, and a tenth of a nanosecond on the \
             sub-nanosecond rows, is noise. So `cargo xtask bench` measures a row \
             slower than then again, in turns with a build of {} on this machine \
             (three turns each, the median of each side's estimates), and that A/B \
             decides.\n",
            baseline::FILE,
            (baseline::TOLERANCE - 1.0) * 100.0,
            baseline::COMMIT
        );
        if let Err(why) = self.ab {
            let _ = writeln!(out, "The A/B could not be read: {why}.\n");
        }
        out.push_str(
            "| benchmark | then | now | change | A/B here: then's commit → now | slower? |\n\
             |---|---:|---:|---:|---:|:-:|\n",
        );
        for row in &rows {
            let ab = match row.ab {
                Some(ab) if row.slower_than_then() => format!(
                    "{} → {} ({})",
                    auto(ab.base_ns),
                    auto(ab.head_ns),
                    percent(ab.change())
                ),
                _ if row.slower_than_then() => "not measured".to_owned(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                row.id,
                auto(row.then_ns),
                auto(row.now_ns),
                percent(row.change()),
                ab,
                if row.slower() { "❌ slower" } else { "" }
            );
        }
        let slower = rows.iter().filter(|r| r.slower()).count();
        let _ = writeln!(
            out,
            "\n{slower} of {} rows measured again are slower by more than {:.0} %.\n",
            rows.len(),
            (baseline::TOLERANCE - 1.0) * 100.0
        );
    }

    fn render_provenance(&self, out: &mut String) {
        let mode = match run_mode().as_str() {
            "quick" => {
                "quick (`cargo xtask bench --quick`: 0.3 s warm-up, 1 s measurement, \
                 shortened parameter lists) — a smoke test, not numbers to quote"
            }
            "full" => {
                "full (`cargo xtask bench`: criterion's default 3 s warm-up, 5 s measurement)"
            }
            _ => "unknown",
        };
        let window = self.results_window();
        let _ = writeln!(out, "## Machine and provenance\n");
        let _ = writeln!(out, "| | |\n|---|---|");
        let rows = [
            ("report written", utc(SystemTime::now())),
            ("criterion results from", window),
            ("mode of the last bench run", mode.to_owned()),
            ("git commit", git_commit()),
            ("CPU", cpu_model()),
            ("cores", core_count()),
            ("memory", mem_total()),
            (
                "load average (1/5/15 min) when the report was written",
                load_average(),
            ),
            ("rustc", command_line("rustc", &["-V"])),
            (
                "crates",
                lock_versions(&["tokio-util", "tokio", "criterion"]),
            ),
            ("Go", self.go.provenance.clone()),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        if let Some(reference) = self.go_reference {
            let _ = writeln!(out, "| Go, reference column | {} |", reference.provenance);
        }
        out.push_str(
            "\nRead ratios, not absolute times: ctx-core and tokio-util ran on this machine in \
             the same run; Go's numbers come from the source named above. A ratio below 1 means \
             ctx-core is faster. The benches share the machine with whatever else runs on it \
             (the load average above tells), and the worst-case latencies in particular include \
             the machine's own noise (see the `contention=none` rows).\n\n",
        );
    }

    /// The README's table (`benches::readme`): the headline rows of this run,
    /// and where they come from.
    fn render_readme(&self) -> String {
        let dash = || "—".to_owned();
        let mut out = String::new();
        out.push_str("| workload | ctx-core | tokio-util | Go |\n|---|---:|---:|---:|\n");
        for row in readme_rows() {
            let time = |id: Option<&str>| id.and_then(|id| self.ns(id)).map_or_else(dash, auto);
            let go = row
                .go
                .and_then(|key| self.go_for(key))
                .map_or_else(dash, auto);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.workload,
                time(Some(row.core)),
                time(row.tokio),
                go
            );
        }
        let memory = |what: &str, imp: &str| {
            self.allocs
                .iter()
                .find(|r| r.what == what && r.imp == imp)
                .map_or_else(dash, |r| format!("{:.0} B / {:.0}", r.bytes, r.allocs))
        };
        let go_memory = self
            .go
            .get("CommonParentCancel")
            .and_then(|g| {
                Some(format!(
                    "{:.0} B / {:.0}",
                    g.bytes_per_op?, g.allocs_per_op?
                ))
            })
            .unwrap_or_else(dash);
        let _ = writeln!(
            out,
            "| bytes / allocations per `with_cancel` child of a live parent | {} | {} | {} |",
            memory("with_cancel", CORE),
            memory("child_token", TOKIO_UTIL),
            go_memory
        );
        let chain = match self.chain {
            Ok(chain) => format!("{:.0} B", chain.bytes_per_level),
            Err(_) => dash(),
        };
        let _ = writeln!(
            out,
            "| bytes per level of a 1,000,000-deep chain | {chain} | — | — |"
        );
        let _ = writeln!(
            out,
            "\nFrom a full `cargo xtask bench` run: criterion results of {}; {}, {} cores; Go: {}.",
            self.results_window(),
            cpu_model(),
            core_count(),
            // The provenance without the command line BENCHMARKS.md shows.
            self.go
                .provenance
                .split(" (")
                .next()
                .unwrap_or(&self.go.provenance)
        );
        out
    }

    /// When the criterion results were written: first to last.
    fn results_window(&self) -> String {
        let times: Vec<SystemTime> = self.results.values().filter_map(|m| m.modified).collect();
        match (times.iter().min(), times.iter().max()) {
            (Some(first), Some(last)) => format!("{} to {}", utc(*first), utc(*last)),
            _ => "none found".into(),
        }
    }

    /// ns of a criterion result.
    fn ns(&self, id: &str) -> Option<f64> {
        self.results.get(id).map(|m| m.mean_ns)
    }

    /// ns per op of a peer.
    fn peer_ns(&self, peer: Peer) -> Option<f64> {
        match peer {
            Peer::Tokio(id) => self.ns(id),
            Peer::Go(name) => self.go.get(name).map(|r| r.ns_per_op),
        }
    }

    /// The target's text, what was measured, and whether it is met (`None`:
    /// not measured).
    fn judge(&self, goal: Goal) -> (String, String, Option<bool>) {
        let missing = || "not measured".to_owned();
        match goal {
            Goal::Faster { core, peer, factor } | Goal::NoSlower { core, peer, factor } => {
                // Faster: the peer's time over ctx-core's; no slower: the inverse.
                let faster = matches!(goal, Goal::Faster { .. });
                let target = format!(
                    "{} {factor}× {}",
                    if faster { "≥" } else { "≤" },
                    peer.name()
                );
                match (self.ns(core), self.peer_ns(peer)) {
                    (Some(c), Some(p)) if c > 0.0 && p > 0.0 => {
                        let (r, met) = if faster {
                            (p / c, p / c >= factor)
                        } else {
                            (c / p, c / p <= factor)
                        };
                        let measured = format!(
                            "{}× (ctx-core {}, {} {})",
                            num(r),
                            auto(c),
                            peer.name(),
                            auto(p)
                        );
                        (target, measured, Some(met))
                    }
                    _ => (target, missing(), None),
                }
            }
            Goal::Scales { one, two, factor } => {
                let target = format!("2-thread aggregate throughput ≥ {factor}× one thread's");
                match (self.ns(one), self.ns(two)) {
                    // Both are wall time per operation over all threads, so the
                    // aggregate throughputs are their inverses.
                    (Some(t1), Some(t2)) if t2 > 0.0 => (
                        target,
                        format!(
                            "{}× ({} M ops/s on 1 thread, {} M ops/s on 2)",
                            num(t1 / t2),
                            num(1e3 / t1),
                            num(1e3 / t2)
                        ),
                        Some(t1 / t2 >= factor),
                    ),
                    _ => (target, missing(), None),
                }
            }
            Goal::ChildMemory { bytes, allocs } => {
                let target = format!("≤ {bytes} B amortized, {allocs} allocation");
                let row = self
                    .allocs
                    .iter()
                    .find(|r| r.what == "with_cancel" && r.imp == CORE);
                match row {
                    Some(r) => (
                        target,
                        format!("{:.0} B, {:.2} allocations", r.bytes, r.allocs),
                        Some(r.bytes <= bytes && r.allocs <= allocs + 1e-9),
                    ),
                    None => (target, missing(), None),
                }
            }
            Goal::DeepChain { bytes } => {
                let target = format!(
                    "≤ {bytes} B per level; cancels and drops on a {} KiB stack",
                    alloc::CHAIN_STACK / 1024
                );
                match self.chain {
                    Ok(chain) => (
                        target,
                        format!(
                            "{:.0} B, {:.2} allocations per level; canceled and dropped on \
                             the {} KiB stack",
                            chain.bytes_per_level,
                            chain.allocs_per_level,
                            alloc::CHAIN_STACK / 1024
                        ),
                        Some(chain.bytes_per_level <= bytes),
                    ),
                    Err(why) => (target, why.clone(), Some(false)),
                }
            }
            Goal::NoRowSlower => {
                let target = format!(
                    "none slower by more than {:.0} %",
                    (baseline::TOLERANCE - 1.0) * 100.0
                );
                match self.against_baseline() {
                    Ok(rows) if !rows.is_empty() => {
                        let slower: Vec<String> = rows
                            .iter()
                            .filter(|r| r.slower())
                            .map(|r| match r.ab {
                                Some(ab) => format!(
                                    "`{}` {} (A/B here: {})",
                                    r.id,
                                    percent(r.change()),
                                    percent(ab.change())
                                ),
                                None => format!("`{}` {}", r.id, percent(r.change())),
                            })
                            .collect();
                        let rechecked = rows
                            .iter()
                            .filter(|r| r.slower_than_then() && !r.slower())
                            .map(|r| {
                                format!(
                                    "`{}` {} then, {} in an A/B here",
                                    r.id,
                                    percent(r.change()),
                                    percent(r.ab.map_or(f64::NAN, |ab| ab.change()))
                                )
                            })
                            .collect::<Vec<_>>();
                        let mut measured = if slower.is_empty() {
                            format!("none of {} rows measured again", rows.len())
                        } else {
                            format!(
                                "{} of {} rows measured again: {}",
                                slower.len(),
                                rows.len(),
                                slower.join(", ")
                            )
                        };
                        if !rechecked.is_empty() {
                            let _ = write!(
                                measured,
                                "; not slower beside {}: {}",
                                baseline::COMMIT,
                                rechecked.join(", ")
                            );
                        }
                        (target, measured, Some(slower.is_empty()))
                    }
                    Ok(_) => (target, missing(), None),
                    Err(why) => (target, why, None),
                }
            }
        }
    }

    fn render_targets(&self, out: &mut String) {
        out.push_str("## Targets\n\n");
        out.push_str(
            "The targets of the performance issue. \"≥ k× X\" is speed: X's time divided by \
             ctx-core's is at least k; \"≤ k× X\" is time: ctx-core's divided by X's is at \
             most k. Go's numbers come from the source named under \"Machine and \
             provenance\", which may be another machine than this one.\n\n\
             | workload | target | measured | met? |\n|---|---|---|:-:|\n",
        );
        let (mut met, mut judged) = (0, 0);
        for post in goalposts() {
            let (target, measured, verdict) = self.judge(post.goal);
            judged += usize::from(verdict.is_some());
            met += usize::from(verdict == Some(true));
            let _ = writeln!(
                out,
                "| {} | {target} | {measured} | {} |",
                post.workload,
                verdict.map_or("—", mark)
            );
        }
        let _ = writeln!(out, "\n{met} of {judged} measured targets met.\n");
    }

    fn render_scaling(&self, out: &mut String) {
        use benches::scaling::{self, IMPLEMENTATIONS, MODEL, OPS, Op, PREDICT_AT, WORKLOADS};
        out.push_str("## Scaling beyond this machine\n\n");
        out.push_str(
            "This machine has few cores; users run on many. What limits an operation done \
             by many threads at once is the memory they share: every write to a cache line \
             that another core wrote last has to fetch the line first, and one line can only \
             be fetched by one core at a time. The counts below were read from each \
             implementation's source (`benches/src/scaling.rs`, where every count says which \
             instructions and lines it is made of); the prediction applies a simple model to \
             them. It is a prediction to check on a bigger machine with the `Scaling` bench \
             (`CTX_BENCH_THREADS=1,2,8,32,64 cargo xtask bench Scaling`), not a measurement.\n\n",
        );

        // The counts.
        out.push_str("### Shared-memory writes per operation (from the sources)\n\n");
        out.push_str(
            "Each cell: atomic read-modify-writes / cache lines written that another thread \
             may also be writing (a lock, its unlock and the writes between count as one line \
             acquisition). Common path: a parent that already has children, no waiters except \
             for the wait itself.\n\n",
        );
        let names: Vec<&str> = IMPLEMENTATIONS.iter().map(|i| i.name).collect();
        let _ = writeln!(out, "| operation | {} |", names.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(names.len()));
        for op in OPS {
            let cells: Vec<String> = IMPLEMENTATIONS
                .iter()
                .map(|imp| {
                    let c = imp.count(op);
                    format!("{} / {}", c.rmws, c.shared_lines)
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", op.label(), cells.join(" | "));
        }
        out.push_str("\nSources: ");
        let sources: Vec<String> = IMPLEMENTATIONS
            .iter()
            .map(|imp| format!("{}: {}", imp.name, imp.source))
            .collect();
        out.push_str(&sources.join("; "));
        out.push_str(".\n\n");

        // The model.
        let _ = writeln!(
            out,
            "### The model\n\n\
             - An uncontended RMW on a line the core already owns costs about {} ns (5–20 ns).\n\
             - When many threads write the same line, each write first moves the line from \
             the core that wrote it last: about {} ns per transfer ({}–{} ns; more across \
             sockets), and transfers of one line are serialised.\n\
             - So an operation that writes `W` lines every thread writes can complete at most \
             once per `W` transfers, whatever the core count: a ceiling of \
             1 / (`W` × {} ns) operations per second, all threads together. Below the \
             ceiling, threads scale linearly from one thread's throughput. Serialising all \
             `W` transfers of an operation is pessimistic for lock-free paths (different \
             lines could move at the same time) and optimistic for mutex paths (everything \
             under the lock waits for its transfers, and waiters may park).\n\
             - Predicted aggregate throughput at `T` cores = min(`T` × one thread's, ceiling), \
             one thread's being measured here (the `Scaling` bench at 1 thread) where this \
             crate can run the implementation, else the model's bound of `R` RMWs × {} ns \
             (marked \"model\").\n\
             - Not modelled: a lock's waiters parking in the kernel (worse for the mutex \
             paths), lines that happen to share a line with hot neighbours (false sharing), \
             the allocator, and NUMA distances. Operations with no shared write (`W` = 0) \
             are predicted to scale linearly.\n",
            MODEL.rmw_ns,
            MODEL.transfer_ns,
            MODEL.transfer_low_ns,
            MODEL.transfer_high_ns,
            MODEL.transfer_ns,
            MODEL.rmw_ns,
        );

        // The prediction per workload.
        let at: Vec<String> = PREDICT_AT.iter().map(|t| format!("{t} cores")).collect();
        let _ = writeln!(
            out,
            "### Predicted aggregate throughput, M ops/s\n\n\
             | workload | implementation | RMWs / lines per op | 1 thread | ceiling at {} ns ({}–{} ns) | {} |\n\
             |---|---|---:|---:|---:|{}",
            MODEL.transfer_ns,
            MODEL.transfer_low_ns,
            MODEL.transfer_high_ns,
            at.join(" | "),
            "---:|".repeat(at.len()),
        );
        let mops = |ops: f64| num(ops / 1e6);
        for workload in WORKLOADS {
            for imp in IMPLEMENTATIONS {
                let (rmws, lines) = (workload.rmws(imp), workload.shared_lines(imp));
                let measured = imp
                    .measured_as
                    .and_then(|m| self.ns(&scaling::bench_id(workload.name, 1, m)))
                    .map(|ns| 1e9 / ns);
                let (single, single_text) = match measured {
                    Some(x) => (Some(x), mops(x)),
                    None => match MODEL.one_thread(rmws) {
                        Some(x) => (Some(x), format!("≤ {} (model)", mops(x))),
                        None => (None, "—".into()),
                    },
                };
                let ceiling = match (
                    MODEL.ceiling(lines, MODEL.transfer_ns),
                    MODEL.ceiling(lines, MODEL.transfer_high_ns),
                    MODEL.ceiling(lines, MODEL.transfer_low_ns),
                ) {
                    (Some(c), Some(lo), Some(hi)) => {
                        format!("{} ({}–{})", mops(c), mops(lo), mops(hi))
                    }
                    _ => "none".into(),
                };
                let predicted: Vec<String> = PREDICT_AT
                    .iter()
                    .map(|&t| match single {
                        Some(x) => mops(MODEL.predict(x, t, lines)),
                        // Nothing measured, nothing written: no ceiling to predict.
                        None if lines == 0 => "linear".into(),
                        None => "—".into(),
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {rmws} / {lines} | {single_text} | {ceiling} | {} |",
                    workload.name,
                    imp.name,
                    predicted.join(" | ")
                );
            }
        }
        out.push_str("\nThe workloads: ");
        let whats: Vec<String> = WORKLOADS
            .iter()
            .map(|w| format!("`{}`: {}", w.name, w.what))
            .collect();
        out.push_str(&whats.join("; "));
        out.push_str(
            ". Create + cancel counts as create + drop: an explicit cancel does what the drop \
             of a live child does, and the drop after it only releases counts.\n\n",
        );

        // Cancel, per child: not a many-thread workload, but its lines move too.
        let _ = writeln!(
            out,
            "### Cancel, per child\n\n\
             A cancel walks its children on one thread; what scales with the machine is where \
             the children's lines are. When they were created and last written on other cores \
             (the usual case on a big machine), each shared line is a transfer: predicted ns \
             per child = `R` × {} ns + `W` × {} ns. Measured here: `CancelFanout/children=100000/waiters=none` \
             divided by 100,000 (children created on the canceling thread, so mostly cached).\n\n\
             | implementation | RMWs / lines per child | predicted, children on other cores | measured here |\n\
             |---|---:|---:|---:|",
            MODEL.rmw_ns, MODEL.transfer_ns,
        );
        for imp in IMPLEMENTATIONS {
            let count = imp.count(Op::CancelPerChild);
            let measured = imp
                .measured_as
                .and_then(|m| self.ns(&format!("CancelFanout/children=100000/waiters=none/{m}")))
                .map_or("—".into(), |ns| auto(ns / 1e5));
            let _ = writeln!(
                out,
                "| {} | {} / {} | {} | {measured} |",
                imp.name,
                count.rmws,
                count.shared_lines,
                auto(MODEL.per_child_ns(count)),
            );
        }
        out.push('\n');

        self.render_scaling_measured(out);

        // How each count was made.
        out.push_str("### How the counts were made\n\n");
        for imp in IMPLEMENTATIONS {
            let _ = writeln!(out, "**{}** ({}):\n", imp.name, imp.source);
            for op in OPS {
                let c = imp.count(op);
                let _ = writeln!(
                    out,
                    "- {} ({} / {}): {}.",
                    op.label(),
                    c.rmws,
                    c.shared_lines,
                    c.detail
                );
            }
            out.push('\n');
        }
    }

    /// A `Scaling` result as aggregate throughput, ops/s: criterion's time is one
    /// operation on every thread, `threads` operations in all.
    fn aggregate(&self, workload: &str, threads: usize, implementation: &str) -> Option<f64> {
        self.ns(&benches::scaling::bench_id(
            workload,
            threads,
            implementation,
        ))
        .map(|ns| threads as f64 * 1e9 / ns)
    }

    /// The `Scaling` bench's results: aggregate throughput per thread count.
    fn render_scaling_measured(&self, out: &mut String) {
        use benches::scaling::{GROUP, IMPLEMENTATIONS, WORKLOADS};
        let prefix = format!("{GROUP}/");
        let mut threads: Vec<usize> = self
            .results
            .keys()
            .filter_map(|id| id.strip_prefix(&prefix))
            .filter_map(|rest| {
                rest.split('/')
                    .nth(1)?
                    .strip_prefix("threads=")?
                    .parse()
                    .ok()
            })
            .collect();
        threads.sort_unstable();
        threads.dedup();
        out.push_str("### Measured here: the `Scaling` bench, aggregate M ops/s\n\n");
        if threads.is_empty() {
            out.push_str("Not run.\n\n");
            return;
        }
        let measured: Vec<_> = IMPLEMENTATIONS
            .iter()
            .filter_map(|imp| Some((imp, imp.measured_as?)))
            .collect();
        let mut header = vec!["workload".to_owned(), "threads".to_owned()];
        for (_, m) in &measured {
            header.extend([
                (*m).to_owned(),
                format!("{m}, × 1 thread"),
                format!("{m}, ns per line transfer if serialised"),
            ]);
        }
        header.push("ctx-core ÷ tokio-util".to_owned());
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(out, "|---|---:|{}", "---:|".repeat(header.len() - 2));
        for workload in WORKLOADS {
            for &t in &threads {
                let mut cells = vec![workload.name.to_owned(), t.to_string()];
                for (imp, m) in &measured {
                    let now = self.aggregate(workload.name, t, m);
                    cells.push(now.map_or("—".into(), |x| num(x / 1e6)));
                    cells.push(ratio(now, self.aggregate(workload.name, 1, m)));
                    // What one transfer would cost if the shared lines were all
                    // that limited the aggregate: the model's transfer cost, checked.
                    let lines = workload.shared_lines(imp);
                    cells.push(match now {
                        Some(x) if t > 1 && lines > 0 => num(1e9 / (x * f64::from(lines))),
                        _ => "—".into(),
                    });
                }
                cells.push(ratio(
                    self.aggregate(workload.name, t, CORE),
                    self.aggregate(workload.name, t, TOKIO_UTIL),
                ));
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
        }
        let _ = write!(
            out,
            "\n\"× 1 thread\": aggregate throughput divided by one thread's (perfect scaling \
             gives the thread count). \"ns per line transfer if serialised\": the time between \
             operations, all threads together, divided by the operation's shared lines `W`; \
             where contention limits the throughput this is the transfer cost the model \
             assumes ({}–{} ns); a much smaller number means that contention does not limit \
             the throughput yet (with two threads, one often writes a line again before \
             the other asks for it; the two cores may also share a cache). With more threads \
             than cores the numbers measure the scheduler, not the tree. Thread counts: \
             `CTX_BENCH_THREADS`, by default 1, 2 and the machine's available parallelism.\n\n",
            benches::scaling::MODEL.transfer_low_ns,
            benches::scaling::MODEL.transfer_high_ns,
        );
    }

    fn render_design(&self, out: &mut String) {
        out.push_str("## DESIGN §6 targets\n\n");
        let reference = self.go_reference;
        let mut header = vec!["workload (Go benchmark name)", "ctx-core", "tokio-util"];
        if reference.is_some() {
            header.extend(["Go (this machine)", "Go (reference machine)"]);
        } else {
            header.push("Go");
        }
        header.extend([
            "ctx-core / Go",
            "ctx-core / tokio-util",
            "target for ctx-core",
            "met?",
            "tokio-util in DESIGN",
        ]);
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let aligns: Vec<&str> = header
            .iter()
            .enumerate()
            .map(|(i, h)| match (i, *h) {
                (0, _) => "---",
                (_, "met?") => ":-:",
                _ => "---:",
            })
            .collect();
        let _ = writeln!(out, "|{}|", aligns.join("|"));
        for row in headlines() {
            let core = self.value_ns(row.core).map(|ns| row.unit.scale(ns));
            let tokio = self.value_ns(row.tokio).map(|ns| row.unit.scale(ns));
            let go_in = |go: &GoBaseline| {
                row.go
                    .and_then(|name| go.get(name))
                    .map(|r| row.unit.scale(r.ns_per_op))
            };
            let go = go_in(self.go);
            let (target, met) = match row.target {
                None => ("—".into(), "—"),
                Some(t) => (t.show(row.unit), core.map_or("—", |v| mark(t.met(v)))),
            };
            let mut cells = vec![
                row.workload.to_owned(),
                self.show(row.core, row.unit),
                self.show(row.tokio, row.unit),
                go.map_or("—".into(), num),
            ];
            if let Some(reference) = reference {
                cells.push(go_in(reference).map_or("—".into(), num));
            }
            cells.extend([
                ratio(core, go),
                ratio(core, tokio),
                target,
                met.to_owned(),
                row.design_tokio.to_owned(),
            ]);
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        // Memory: one row, from the allocation table.
        let find =
            |what: &str, imp: &str| self.allocs.iter().find(|r| r.what == what && r.imp == imp);
        let core = find("with_cancel", CORE);
        let tokio = find("child_token", TOKIO_UTIL);
        let go = self.go.get("CommonParentCancel");
        let show = |r: Option<&alloc::Row>| {
            r.map_or("—".into(), |r| {
                format!("{:.0} B / {:.2}", r.bytes, r.allocs)
            })
        };
        let go_mem = |go: &GoBaseline| {
            go.get("CommonParentCancel")
                .and_then(|g| {
                    Some(format!(
                        "{:.0} B / {:.0}",
                        g.bytes_per_op?, g.allocs_per_op?
                    ))
                })
                .unwrap_or_else(|| "—".into())
        };
        let met = core.map_or("—", |r| mark(r.bytes <= 64.0 && r.allocs <= 1.0 + 1e-9));
        let mut cells = vec![
            "bytes / allocations per WithCancel child (child of a live parent; Go: per \
             CommonParentCancel op)"
                .to_owned(),
            show(core),
            show(tokio),
            go_mem(self.go),
        ];
        if let Some(reference) = reference {
            cells.push(go_mem(reference));
        }
        cells.extend([
            ratio(core.map(|r| r.bytes), go.and_then(|g| g.bytes_per_op)),
            ratio(core.map(|r| r.bytes), tokio.map(|r| r.bytes)),
            "≤ 64 B / 1".to_owned(),
            met.to_owned(),
            "123 B / 1".to_owned(),
        ]);
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        let floor = |imp: &str| {
            self.tails
                .get(&format!("WorstCheck/contention=none/{imp}"))
                .and_then(|l| stats::field(l, "max_ns"))
                .map_or("—".into(), |ns| num(ns / 1e3))
        };
        let _ = writeln!(
            out,
            "\nFor scale, the machine's noise floor: with no other thread touching the \
             context at all (`WorstCheck/contention=none`), the slowest \
             check took {} µs (ctx-core) and {} µs (tokio-util). Compare the tails below.",
            floor(CORE),
            floor(TOKIO_UTIL),
        );
        if let Some(ns) = self.ns("CancelFanout/children=100000/waiters=tokio-tasks/plain-wakers") {
            let _ = writeln!(
                out,
                "\nThe floor under the 100k tokio tasks row: with no library at all (each \
                 task's waker in a slot of its own, woken by a plain loop from the \
                 benchmark's thread), the same tasks took {} ms to be woken and run \
                 (`CancelFanout/children=100000/waiters=tokio-tasks/plain-wakers`): \
                 tokio's own cost of tasks woken from outside the runtime. The row \
                 follows the heap's layout as much as the code: each child's node lies \
                 next to its task's cell, and in four alternating criterion runs \
                 (glibc, 2-core Xeon) a build with 88-byte nodes instead of 96 took \
                 this row from 1.20× to 1.25× the floor's time (that build padded back \
                 to 96 bytes measured like 96). Compare two builds with alternating \
                 runs of the whole `CancelFanout` groups: the groups before this row \
                 shape the heap it gets.",
                num(ns / 1e6),
            );
        }
        out.push_str(
            "\nRatios compare criterion's estimates (the memory row compares bytes). \"—\": not run (or not \
             measurable in this run); \"n/a\": tokio-util has no such feature; \
             \"extra\" rows are not in DESIGN §6. Go's CommonParentCancel \
             also runs 2 × 100 `x /= x + 1` of busy work per operation, which the Rust \
             benchmark leaves out; it is a small part of Go's time (about 57 ns/op of 246 \
             measured on a 2-core Xeon).\n\n",
        );
    }

    fn render_allocs(&self, out: &mut String) {
        out.push_str("## Memory per derived context\n\n");
        if self.allocs.is_empty() {
            out.push_str("Not measured (the counting allocator was not installed).\n\n");
            return;
        }
        let _ = writeln!(
            out,
            "{} contexts of each kind are created under one fresh parent and kept alive; the \
             counting global allocator's totals are divided by their number (so the growth of \
             the parent's child list, or of a timer's queue, is amortized in). \"Retained\" is \
             what is still allocated while they live. For reference, Go allocates {} per \
             CommonParentCancel operation (one WithCancel child) and {} per WithTimeout context.\n",
            alloc::N,
            self.go
                .get("CommonParentCancel")
                .and_then(|g| Some(format!(
                    "{:.0} B in {:.0} allocations",
                    g.bytes_per_op?, g.allocs_per_op?
                )))
                .unwrap_or_else(|| "—".into()),
            self.go
                .get("WithTimeout/concurrency=40")
                .and_then(|g| Some(format!(
                    "{:.0} B in {:.0} allocations",
                    g.bytes_per_op? / 10.0,
                    g.allocs_per_op? / 10.0
                )))
                .unwrap_or_else(|| "—".into()),
        );
        out.push_str(&alloc::markdown(self.allocs));
        let _ = match self.chain {
            Ok(chain) => writeln!(
                out,
                "\nA {}-deep chain of `with_cancel` children, built, canceled and dropped on a \
                 thread with a {} KiB stack: {:.0} bytes and {:.2} allocations per level.",
                num(chain.depth as f64),
                alloc::CHAIN_STACK / 1024,
                chain.bytes_per_level,
                chain.allocs_per_level
            ),
            Err(why) => writeln!(out, "\nThe deep chain: {why}."),
        };
        out.push('\n');
    }

    fn render_tails(&self, out: &mut String) {
        out.push_str("## Check latency under contention (every check timed on its own)\n\n");
        if self.tails.is_empty() {
            out.push_str("Not run.\n\n");
            return;
        }
        out.push_str(
            "`contention=none`: nobody else touches the context (the machine's noise floor); \
             `low`: another thread churns children of another parent; `high`: it churns \
             children of the checked context. Times include one clock read.\n\n\
             | benchmark | checks | mean, ns | p99.9, ns | p99.99, ns | max, µs | checks over 1 µs |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        for (id, line) in self.tails {
            let f = |k: &str| stats::field(line, k);
            let _ = writeln!(
                out,
                "| `{id}` | {} | {} | {} | {} | {} | {} |",
                f("checks").map_or("—".into(), |v| format!("{v:.0}")),
                f("mean_ns").map_or("—".into(), num),
                f("p99_9_ns").map_or("—".into(), num),
                f("p99_99_ns").map_or("—".into(), num),
                f("max_ns").map_or("—".into(), |v| num(v / 1e3)),
                f("over_1us").map_or("—".into(), |v| format!("{v:.0}")),
            );
        }
        out.push('\n');
    }

    fn render_all(&self, out: &mut String) {
        out.push_str("## Every result (criterion's estimates)\n\n");
        if self.results.is_empty() {
            out.push_str("No criterion results found under `target/criterion`.\n");
            return;
        }
        // Group by the id without its last component (the implementation).
        let mut rows: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
        for (id, m) in self.results {
            let (key, imp) = id.rsplit_once('/').unwrap_or((id.as_str(), ""));
            rows.entry(key).or_default().insert(imp, m.mean_ns);
        }
        out.push_str(
            "| benchmark | ctx-core | tokio-util | Go | ctx-core / Go | ctx-core / tokio-util |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for (key, imps) in rows {
            let core = imps.get(CORE).copied();
            let tokio = imps.get(TOKIO_UTIL).copied();
            let go = self.go_for(key);
            let _ = writeln!(
                out,
                "| `{key}` | {} | {} | {} | {} | {} |",
                core.map_or("—".into(), auto),
                tokio.map_or("—".into(), auto),
                go.map_or("—".into(), auto),
                ratio(core, go),
                ratio(core, tokio),
            );
            for (imp, ns) in imps
                .iter()
                .filter(|(imp, _)| ![CORE, TOKIO_UTIL].contains(imp))
            {
                let _ = writeln!(out, "| `{key}/{imp}` | {} | | | | |", auto(*ns));
            }
        }
    }

    /// Go's number for a row key: the same name, or the name without the parts
    /// Go does not have (`timer=…`).
    fn go_for(&self, key: &str) -> Option<f64> {
        if let Some(r) = self.go.get(key) {
            return Some(r.ns_per_op);
        }
        let trimmed: Vec<&str> = key
            .split('/')
            .filter(|part| !part.starts_with("timer="))
            .collect();
        self.go.get(&trimmed.join("/")).map(|r| r.ns_per_op)
    }
}

// ===== formatting =====

/// Three significant digits, no exponent.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        let s = format!("{v:.0}");
        group_thousands(&s)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn group_thousands(s: &str) -> String {
    let (sign, digits) = s.strip_prefix('-').map_or(("", s), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// A duration in ns, in the unit that suits it.
fn auto(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", num(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", num(ns / 1e3))
    } else {
        format!("{} ns", num(ns))
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", num(a / b)),
        _ => "—".into(),
    }
}

/// A time ratio as a signed change: 1.1 is "+10 %", 0.5 is "−50 %".
fn percent(change: f64) -> String {
    let p = (change - 1.0) * 100.0;
    let sign = if p < 0.0 { "−" } else { "+" };
    format!("{sign}{} %", num(p.abs()))
}

fn mark(met: bool) -> &'static str {
    if met { "✅ met" } else { "❌ missed" }
}

// ===== machine information =====

fn read_trim(path: &str) -> String {
    fs::read_to_string(path).map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_owned())
}

fn core_count() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let logical = info.lines().filter(|l| l.starts_with("processor")).count();
    let available = std::thread::available_parallelism().map_or(0, |n| n.get());
    match (logical, available) {
        (0, 0) => "unknown".into(),
        (0, n) => format!("{n} available"),
        (n, m) if n == m || m == 0 => format!("{n}"),
        (n, m) => format!("{n} ({m} available to this process)"),
    }
}

fn mem_total() -> String {
    let info = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        )
}

fn load_average() -> String {
    let text = read_trim("/proc/loadavg");
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn git_commit() -> String {
    let root = benches::workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{head} (plus uncommitted changes)")
            } else {
                head
            }
        }
        None => "unknown".into(),
    }
}

/// `name version` of the locked crates, from `Cargo.lock`.
fn lock_versions(names: &[&str]) -> String {
    let lock = fs::read_to_string(benches::workspace_root().join("Cargo.lock")).unwrap_or_default();
    let mut found = Vec::new();
    for name in names {
        let needle = format!("name = \"{name}\"\nversion = \"");
        if let Some(at) = lock.find(&needle) {
            let rest = &lock[at + needle.len()..];
            if let Some(end) = rest.find('"') {
                found.push(format!("{name} {}", &rest[..end]));
            }
        }
    }
    if found.is_empty() {
        "unknown".into()
    } else {
        found.join(", ")
    }
}

/// `2026-05-01 12:34 UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every criterion id of the README's table is one the report's own tables
    /// read too (a renamed benchmark would otherwise show "—" there unseen).
    #[test]
    fn the_readme_rows_name_benchmarks_the_report_knows() {
        let mut known = Vec::new();
        for h in headlines() {
            for source in [h.core, h.tokio] {
                if let Source::Bench(id) = source {
                    known.push(id);
                }
            }
        }
        for g in goalposts() {
            match g.goal {
                Goal::Faster { core, peer, .. } | Goal::NoSlower { core, peer, .. } => {
                    known.push(core);
                    if let Peer::Tokio(id) = peer {
                        known.push(id);
                    }
                }
                Goal::Scales { one, two, .. } => known.extend([one, two]),
                Goal::ChildMemory { .. } | Goal::DeepChain { .. } | Goal::NoRowSlower => {}
            }
        }
        // Shown in the README only (the one-thread churn row's peer).
        known.push("ChildCreateDrop/threads=1/tokio-util");
        let known_go: Vec<&str> = headlines().iter().filter_map(|h| h.go).collect();
        for row in readme_rows() {
            for id in std::iter::once(row.core).chain(row.tokio) {
                assert!(known.contains(&id), "{id} is in no other table");
            }
            if let Some(go) = row.go {
                assert!(known_go.contains(&go), "Go's {go} is in no other table");
            }
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn numbers() {
        assert_eq!(num(371_793.0), "371,793");
        assert_eq!(num(2.835), "2.83");
        assert_eq!(num(0.7), "0.700");
        assert_eq!(num(16.13), "16.1");
        assert_eq!(auto(2_660_000.0), "2.66 ms");
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.250×");
        assert_eq!(ratio(None, Some(4.0)), "—");
    }
}
