//! Scenarios the harness runs on a runtime. This module holds the accelerated soak: the
//! sample count of `hours` of tracking at the runtime's interval, emitted without sleeping,
//! with process RSS read at 50 in-loop checkpoints (the first one is the warm-up baseline).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::collector::{CollectError, Collector, RssCollector};
use crate::runtime::{RuntimeKind, Tracker, TrackerConfig, TrackerError, TrackerStatistics};
use crate::sink::SinkConfig;

/// Soak hours of the `pr` profile.
pub const PR_HOURS: f64 = 6.0;
/// Soak hours of the `nightly` profile.
pub const NIGHTLY_HOURS: f64 = 24.0;

/// A soak profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// 6 h-equivalent.
    Pr,
    /// 24 h-equivalent.
    Nightly,
}

impl Profile {
    /// The profile's name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Pr => "pr",
            Profile::Nightly => "nightly",
        }
    }

    /// Equivalent hours of the profile's soak.
    pub fn hours(self) -> f64 {
        match self {
            Profile::Pr => PR_HOURS,
            Profile::Nightly => NIGHTLY_HOURS,
        }
    }
}

/// Samples a run of `hours` emits at `interval`: `max(1, round(hours × 3600 / interval))`.
pub fn soak_sample_count(hours: f64, interval: Duration) -> u64 {
    let samples = (hours * 3600.0 / interval.as_secs_f64()).round();
    if samples.is_finite() && samples >= 1.0 {
        samples as u64
    } else {
        1
    }
}

/// Sample indices after which RSS is read: every `max(samples / 50, 1)`-th sample (indices
/// `stride − 1, 2·stride − 1, …`), plus the last index if it is not already one.
pub fn checkpoint_indices(samples: u64) -> Vec<u64> {
    let samples = samples.max(1);
    let stride = (samples / 50).max(1);
    let mut indices: Vec<u64> = (1..)
        .map(|k| k * stride - 1)
        .take_while(|&i| i < samples)
        .collect();
    if indices.last() != Some(&(samples - 1)) {
        indices.push(samples - 1);
    }
    indices
}

/// A soak to run.
#[derive(Debug, Clone)]
pub struct SoakSpec {
    /// The tracker (runtime, interval, history, sink).
    pub tracker: TrackerConfig,
    /// Samples to emit.
    pub samples: u64,
    /// Directory of the soak's artifacts (the sink lives in `<dir>/sink`).
    pub artifact_dir: PathBuf,
}

impl SoakSpec {
    /// The default-mode soak of `kind` for `hours`, with the sink's default limits.
    pub fn new(kind: RuntimeKind, hours: f64, artifact_dir: impl Into<PathBuf>) -> Self {
        let artifact_dir = artifact_dir.into();
        let tracker = TrackerConfig::new(kind, Some(artifact_dir.join("sink")));
        let samples = soak_sample_count(hours, tracker.sampling_interval);
        SoakSpec {
            tracker,
            samples,
            artifact_dir,
        }
    }

    /// Mutable access to the sink configuration, if the soak has a sink.
    pub fn sink_mut(&mut self) -> Option<&mut SinkConfig> {
        self.tracker.sink.as_mut()
    }
}

/// Progress of a running soak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoakProgress {
    /// Samples emitted so far.
    pub samples_done: u64,
    /// Samples in the soak.
    pub samples_total: u64,
    /// Records the sink has made durable so far.
    pub durable_records: u64,
}

/// What a soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    /// `<runtime>_soak`.
    pub name: String,
    /// Samples emitted.
    pub sample_count: u64,
    /// Samples × interval.
    pub equivalent_seconds: f64,
    /// Equivalent hours.
    pub equivalent_hours: f64,
    /// Wall time of the sample loop and finish.
    pub wall_seconds: f64,
    /// Process CPU time over the same span (all threads, the sink writer included).
    pub cpu_seconds: f64,
    /// Samples per wall second.
    pub samples_per_second: f64,
    /// Bytes under the artifact directory after the soak.
    pub artifact_size_bytes: u64,
    /// RSS delta normalised to 24 h of equivalent time.
    pub rss_growth_per_24h_equiv: f64,
    /// Largest RSS increase over the baseline at any checkpoint.
    pub max_rss_delta_bytes: u64,
    /// Samples before (and including) the baseline checkpoint.
    pub rss_warmup_sample_count: u64,
    /// Samples after the baseline.
    pub rss_measured_sample_count: u64,
    /// Equivalent seconds of the measured window.
    pub rss_measured_equivalent_seconds: f64,
    /// Checkpoints read.
    pub rss_checkpoint_count: u64,
    /// RSS at the first checkpoint.
    pub rss_baseline_bytes: u64,
    /// RSS at the last checkpoint.
    pub rss_final_bytes: u64,
    /// Final − baseline.
    pub rss_delta_bytes: i64,
    /// RSS after `finish`.
    pub rss_after_finish_bytes: u64,
    /// After-finish − final (reported, never gated).
    pub finalization_rss_delta_bytes: i64,
    /// Tracker statistics at the end.
    pub stats: TrackerStatistics,
}

/// A scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The artifact directory could not be prepared.
    #[error("artifact directory {path}: {error}")]
    ArtifactDir {
        /// The directory.
        path: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The tracker could not start.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// The collector or an RSS checkpoint could not be read.
    #[error(transparent)]
    Collect(#[from] CollectError),
}

/// Runs a soak: deletes and recreates the artifact directory, emits every sample without
/// sleeping, reads RSS at the checkpoints, finishes the tracker and summarises.
pub fn run_soak(
    spec: &SoakSpec,
    progress_every: u64,
    progress: &mut dyn FnMut(SoakProgress),
) -> Result<SoakResult, ScenarioError> {
    reset_dir(&spec.artifact_dir)?;
    let kind = spec.tracker.kind;
    let collector = kind.open_collector()?;
    run_soak_with(spec, collector, progress_every, progress)
}

/// [`run_soak`] with a given collector (tests inject failing collectors here).
pub fn run_soak_with<C: Collector>(
    spec: &SoakSpec,
    collector: C,
    progress_every: u64,
    progress: &mut dyn FnMut(SoakProgress),
) -> Result<SoakResult, ScenarioError> {
    let interval = spec.tracker.sampling_interval;
    let samples = spec.samples.max(1);
    let checkpoints = checkpoint_indices(samples);
    let mut rss = RssCollector::open()?;
    let mut readings = Vec::with_capacity(checkpoints.len());
    let started = Instant::now();
    let cpu_started = process_cpu_seconds();
    let mut tracker = Tracker::start(collector, spec.tracker.clone())?;
    let mut next_checkpoint = checkpoints.iter().copied().peekable();
    let progress_every = progress_every.max(1);
    for index in 0..samples {
        tracker.emit_sample(index, equivalent_time(interval, index));
        if next_checkpoint.peek() == Some(&index) {
            next_checkpoint.next();
            readings.push(rss.rss_bytes()?);
        }
        if (index + 1) % progress_every == 0 {
            progress(SoakProgress {
                samples_done: index + 1,
                samples_total: samples,
                durable_records: tracker.sink_stats().map_or(0, |s| s.durable_records),
            });
        }
    }
    let report = tracker.finish();
    let wall_seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu_started;
    let rss_after_finish = rss.rss_bytes()?;
    progress(SoakProgress {
        samples_done: samples,
        samples_total: samples,
        durable_records: report.sink.as_ref().map_or(0, |s| s.durable_records),
    });

    let baseline = readings.first().copied().unwrap_or(0);
    let final_rss = readings.last().copied().unwrap_or(0);
    let warmup = checkpoints.first().map_or(1, |i| i + 1);
    let measured = samples - warmup;
    let measured_seconds = measured as f64 * interval.as_secs_f64();
    let delta = final_rss as i64 - baseline as i64;
    let equivalent_seconds = samples as f64 * interval.as_secs_f64();
    Ok(SoakResult {
        name: format!("{}_soak", spec.tracker.kind.name()),
        sample_count: samples,
        equivalent_seconds,
        equivalent_hours: equivalent_seconds / 3600.0,
        wall_seconds,
        cpu_seconds,
        samples_per_second: samples as f64 / wall_seconds.max(f64::MIN_POSITIVE),
        artifact_size_bytes: dir_size(&spec.artifact_dir),
        rss_growth_per_24h_equiv: if measured_seconds > 0.0 {
            delta as f64 / measured_seconds * 86_400.0
        } else {
            0.0
        },
        max_rss_delta_bytes: readings
            .iter()
            .map(|r| r.saturating_sub(baseline))
            .max()
            .unwrap_or(0),
        rss_warmup_sample_count: warmup,
        rss_measured_sample_count: measured,
        rss_measured_equivalent_seconds: measured_seconds,
        rss_checkpoint_count: readings.len() as u64,
        rss_baseline_bytes: baseline,
        rss_final_bytes: final_rss,
        rss_delta_bytes: delta,
        rss_after_finish_bytes: rss_after_finish,
        finalization_rss_delta_bytes: rss_after_finish as i64 - final_rss as i64,
        stats: report.statistics,
    })
}

/// Session time of sample `index` in an accelerated run: `index × interval`.
pub fn equivalent_time(interval: Duration, index: u64) -> Duration {
    match u32::try_from(index) {
        Ok(i) => interval.saturating_mul(i),
        Err(_) => Duration::from_secs_f64(interval.as_secs_f64() * index as f64),
    }
}

/// Deletes and recreates a scenario directory.
pub fn reset_dir(dir: &Path) -> Result<(), ScenarioError> {
    let err = |error| ScenarioError::ArtifactDir {
        path: dir.to_owned(),
        error,
    };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::create_dir_all(dir).map_err(err)
}

/// CPU time of this process (all threads), in seconds.
pub fn process_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Sum of the sizes of all regular files under `dir`, recursively (0 if it does not exist).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_counts_match_the_profiles() {
        let cpu = Duration::from_millis(100);
        let tf = Duration::from_secs(1);
        assert_eq!(soak_sample_count(PR_HOURS, cpu), 216_000);
        assert_eq!(soak_sample_count(NIGHTLY_HOURS, cpu), 864_000);
        assert_eq!(soak_sample_count(PR_HOURS, tf), 21_600);
        assert_eq!(soak_sample_count(NIGHTLY_HOURS, tf), 86_400);
        assert_eq!(soak_sample_count(0.0, cpu), 1);
    }

    #[test]
    fn checkpoint_formula() {
        let c = checkpoint_indices(216_000);
        assert_eq!(c.len(), 50);
        assert_eq!(c[0], 4_319);
        assert_eq!(c[49], 215_999);
        assert_eq!(checkpoint_indices(1), [0]);
        assert_eq!(checkpoint_indices(4), [0, 1, 2, 3]);
        let c = checkpoint_indices(101);
        assert_eq!(c.len(), 51);
        assert_eq!(c.last(), Some(&100));
    }
}
