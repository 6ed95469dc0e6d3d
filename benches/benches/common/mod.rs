//! Criterion settings shared by every bench file (`mod common;` in each).

use criterion::{BenchmarkGroup, Criterion, SamplingMode, measurement::WallTime};

/// The criterion configuration: fewer bootstrap resamples in a quick run, so
/// the analysis does not dominate a one-second measurement. Also notes the run's
/// mode for the report.
pub(crate) fn config() -> Criterion {
    benches::record_mode();
    let criterion = Criterion::default();
    if benches::quick() {
        criterion.nresamples(10_000)
    } else {
        criterion
    }
}

/// Settings for a group whose iterations take milliseconds (each one builds a
/// large tree or wakes thousands of tasks): ten flat samples.
///
/// Criterion sizes iterations by wall time including the untimed set-up of
/// `iter_custom`, so the measurement time still bounds how long the group runs.
#[allow(dead_code, reason = "not every bench file has heavy groups")]
pub(crate) fn heavy(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
}
