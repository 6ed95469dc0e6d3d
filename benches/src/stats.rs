//! Latency histograms for the worst-case benchmarks, and the small text file
//! they leave for the report.
//!
//! Criterion reports means; the "worst single check" row of the design targets
//! needs the tail. [`Histogram`] records every timed check (10 ns buckets up to
//! 10 µs, then powers of two), and [`record_tail`] writes one line per benchmark
//! to `target/ctx-bench/tail.txt`:
//!
//! ```text
//! WorstCheck/high/ctx-core checks=123456 mean_ns=31.2 p99_9_ns=60 p99_99_ns=120 max_ns=15000 over_1us=3
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Width of the fine buckets.
const FINE_NS: u64 = 10;
/// Number of fine buckets (they cover 0..10 µs).
const FINE: usize = 1000;

/// A latency histogram: exact to 10 ns below 10 µs, to a power of two above.
#[derive(Clone, Debug)]
pub struct Histogram {
    fine: Vec<u64>,
    coarse: [u64; 64],
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            fine: vec![0; FINE],
            coarse: [0; 64],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one sample.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
        let fine = (ns / FINE_NS) as usize;
        if fine < FINE {
            self.fine[fine] += 1;
        } else {
            self.coarse[63 - ns.leading_zeros() as usize] += 1;
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest sample, in ns.
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The mean, in ns.
    pub fn mean_ns(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ns as f64 / self.count as f64
        }
    }

    /// An upper bound for the `q` quantile (0..=1), in ns.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (i as u64 + 1) * FINE_NS;
            }
        }
        for (bit, n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (2u64 << bit).saturating_sub(1).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// How many samples were above `ns`, counting a bucket that straddles it.
    pub fn over_ns(&self, ns: u64) -> u64 {
        let fine_from = ((ns / FINE_NS) as usize).min(FINE);
        let mut over: u64 = self.fine[fine_from..].iter().sum();
        over += self.coarse.iter().sum::<u64>();
        over
    }

    /// The one-line summary written to the tail file and printed.
    pub fn summary(&self) -> String {
        format!(
            "checks={} mean_ns={:.1} p99_9_ns={} p99_99_ns={} max_ns={} over_1us={}",
            self.count,
            self.mean_ns(),
            self.quantile_ns(0.999),
            self.quantile_ns(0.9999),
            self.max_ns,
            self.over_ns(1000),
        )
    }
}

/// The tail file: `target/ctx-bench/tail.txt`.
pub fn tail_file() -> PathBuf {
    crate::results_dir().join("tail.txt")
}

/// Prints `id`'s summary and stores it in the tail file (replacing an older line
/// for the same id).
pub fn record_tail(id: &str, histogram: &Histogram) -> io::Result<()> {
    let line = histogram.summary();
    println!("{id}: {line}");
    let mut all = read_tails();
    all.insert(id.to_owned(), line);
    fs::create_dir_all(crate::results_dir())?;
    let text: String = all.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    fs::write(tail_file(), text)
}

/// Every line of the tail file, by benchmark id (the values are `key=value` lists).
pub fn read_tails() -> BTreeMap<String, String> {
    let text = fs::read_to_string(tail_file()).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of `key` in a `key=value key=value` line.
pub fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for ns in 1..=10_000u64 {
            h.record(Duration::from_nanos(ns % 1000));
        }
        h.record(Duration::from_micros(50));
        assert_eq!(h.count(), 10_001);
        assert_eq!(h.max_ns(), 50_000);
        assert!(h.quantile_ns(0.5) <= 510);
        assert_eq!(h.quantile_ns(1.0), 50_000);
        assert_eq!(h.over_ns(1000), 1);
        assert_eq!(field(&h.summary(), "max_ns"), Some(50_000.0));
    }
}
