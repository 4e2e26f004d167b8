//! The scenarios a job runs on one runtime: the overhead comparison (unprofiled vs tracked
//! default mode in interleaved pairs), the accelerated soak with in-loop RSS checkpoints, and the
//! forced-churn retention validation. Each produces its block of the v0.4 report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetgate_common::config::{RetentionValidationLimits, WorkloadKind, checkpoint_indices};
use fleetgate_common::knobs::{
    OVERHEAD_MAX_PAIRS, OVERHEAD_MIN_PAIRS_FLOOR, OVERHEAD_TARGET_HALF_WIDTH_PCT, RuntimeKnobs,
};
use fleetgate_common::report::{
    AddedCost, DetectableShift, OverheadBlock, OverheadEstimates, OverheadMetrics, OverheadPair,
    OverheadScenarios, PairStop, RetentionChecks, RetentionValidationBlock, RssCheckpoint,
    RssTrend, ScenarioSummary, SoakBlock, TelemetryLoss, TrackerStats,
};
use fleetgate_common::stats::{self, LocationEstimator, StatsError};

use crate::collector::{CollectError, Collector, RssCollector};
use crate::runtime::{Tracker, TrackerConfig, TrackerError, TrackerReport};
use crate::sink::{MANIFEST_FILE, SinkConfig, SinkError};
use crate::workload::{PreparedWorkload, Workload};

/// Confidence of the overhead intervals.
pub const OVERHEAD_CONFIDENCE: f64 = 0.95;
/// Power at which the detectable shift is stated.
pub const DETECTABLE_SHIFT_POWER: f64 = 0.95;
/// One-sided level of the detectable shift: the side of a two-sided 95 % interval.
pub const DETECTABLE_SHIFT_ALPHA: f64 = 0.025;
/// `trial_quantile` of every report: the representative pair is one near the estimate.
pub const REPRESENTATIVE_QUANTILE: f64 = 0.5;

/// A scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A scenario directory could not be prepared or written.
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
    /// The workload could not be prepared or failed.
    #[error("workload: {0}")]
    Workload(String),
    /// The run was interrupted (Ctrl+C or a cancelled job).
    #[error("interrupted")]
    Interrupted,
}

fn dir_error(path: &Path) -> impl FnOnce(std::io::Error) -> ScenarioError + '_ {
    move |error| ScenarioError::ArtifactDir {
        path: path.to_owned(),
        error,
    }
}

/// Where a scenario is, and what it reports along the way: the job phases of the fleet
/// (a scenario reports [`Phase::Overhead`], [`Phase::Soak`] and
/// [`Phase::RetentionValidation`]).
pub use fleetgate_common::job::JobPhase as Phase;

/// Progress of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// Units done.
    pub done: u64,
    /// Units in the phase.
    pub total: u64,
    /// Records the sink has made durable so far (soak only, else 0).
    pub durable_records: u64,
}

/// Observers and test hooks shared by the scenarios.
pub struct Hooks<'a> {
    /// Called with progress.
    pub progress: &'a mut dyn FnMut(Progress),
    /// Set to stop at the next check (every few thousand samples, every workload step).
    pub cancel: &'a AtomicBool,
    /// Called after every soak sample (tests inject synthetic leaks here).
    pub after_soak_sample: Option<&'a mut dyn FnMut(u64)>,
    /// Called with (sample index, RSS bytes) at every soak checkpoint.
    pub on_checkpoint: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Extra off-CPU delay after every tracked overhead sample (tests inject cost here).
    pub tracked_sample_delay: Duration,
    /// Extra on-CPU cost after every tracked overhead sample: the thread spins this long
    /// (benchmarks of the gate inject a known cost here).
    pub tracked_sample_spin: Duration,
    /// Report soak progress every this many samples (0: 50 times per soak).
    pub progress_every: u64,
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("tracked_sample_delay", &self.tracked_sample_delay)
            .field("tracked_sample_spin", &self.tracked_sample_spin)
            .field("progress_every", &self.progress_every)
            .finish_non_exhaustive()
    }
}

impl<'a> Hooks<'a> {
    /// Progress observer and cancel flag, no test hooks.
    pub fn new(progress: &'a mut dyn FnMut(Progress), cancel: &'a AtomicBool) -> Self {
        Hooks {
            progress,
            cancel,
            after_soak_sample: None,
            on_checkpoint: None,
            tracked_sample_delay: Duration::ZERO,
            tracked_sample_spin: Duration::ZERO,
            progress_every: 0,
        }
    }

    fn check_cancel(&self) -> Result<(), ScenarioError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(ScenarioError::Interrupted)
        } else {
            Ok(())
        }
    }
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
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(dir_error(dir)(e)),
    }
    std::fs::create_dir_all(dir).map_err(dir_error(dir))
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

/// Signed percentage of `measured` over `reference`: negative values are kept; a reference
/// ≤ 0 gives 0 when the measured value is ≤ 0 too, else +∞.
pub fn pct_overhead(reference: f64, measured: f64) -> f64 {
    if reference <= 0.0 {
        if measured <= 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (measured - reference) / reference * 100.0
    }
}

/// Which of the kept pair and the newest pair to keep: the one whose `runtime_overhead_pct`
/// is nearer `centre` (the kept one on a tie; the newest when none is kept yet).
pub fn nearer_pair(
    pairs: &[OverheadPair],
    kept: Option<usize>,
    newest: usize,
    centre: f64,
) -> usize {
    match kept {
        Some(k)
            if (pairs[k].runtime_overhead_pct - centre).abs()
                <= (pairs[newest].runtime_overhead_pct - centre).abs() =>
        {
            k
        }
        _ => newest,
    }
}

/// One pair's added cost from its two summaries and the tracked scenario's sample count.
pub fn pair_cost(
    unprofiled: &ScenarioSummary,
    tracked: &ScenarioSummary,
    samples: u64,
    tracked_first: bool,
) -> OverheadPair {
    let per_sample =
        |tracked: f64, unprofiled: f64| (tracked - unprofiled) * 1e9 / samples.max(1) as f64;
    OverheadPair {
        tracked_first,
        added_wall_ns_per_sample: per_sample(tracked.wall_seconds, unprofiled.wall_seconds),
        added_cpu_ns_per_sample: per_sample(tracked.cpu_seconds, unprofiled.cpu_seconds),
        runtime_overhead_pct: pct_overhead(unprofiled.wall_seconds, tracked.wall_seconds),
        cpu_overhead_pct: pct_overhead(unprofiled.cpu_seconds, tracked.cpu_seconds),
    }
}

/// What the pairs estimate: each cost's Hodges–Lehmann estimate with its 95 % signed-rank
/// interval, and the detectable shift from each cost's normal-scaled MAD.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairEstimates {
    /// Added cost per sample.
    pub added: AddedCost,
    /// The percentages.
    pub pct: OverheadEstimates,
    /// The smallest shift detected with 95 % probability.
    pub detectable: DetectableShift,
}

/// Estimates from the pairs, or an error when they are too few (fewer than 6) or not finite.
pub fn estimate_pairs(pairs: &[OverheadPair]) -> Result<PairEstimates, StatsError> {
    let column = |f: fn(&OverheadPair) -> f64| pairs.iter().map(f).collect::<Vec<f64>>();
    let wall = column(|p| p.added_wall_ns_per_sample);
    let cpu = column(|p| p.added_cpu_ns_per_sample);
    let wall_pct = column(|p| p.runtime_overhead_pct);
    let cpu_pct = column(|p| p.cpu_overhead_pct);
    let detectable = |xs: &[f64]| -> Result<f64, StatsError> {
        stats::minimum_detectable_shift(
            xs.len(),
            stats::mad(xs)?,
            DETECTABLE_SHIFT_ALPHA,
            DETECTABLE_SHIFT_POWER,
            LocationEstimator::HodgesLehmann,
        )
    };
    Ok(PairEstimates {
        added: AddedCost {
            wall: stats::hodges_lehmann(&wall, OVERHEAD_CONFIDENCE)?,
            cpu: stats::hodges_lehmann(&cpu, OVERHEAD_CONFIDENCE)?,
        },
        pct: OverheadEstimates {
            runtime_overhead_pct: stats::hodges_lehmann(&wall_pct, OVERHEAD_CONFIDENCE)?,
            cpu_overhead_pct: stats::hodges_lehmann(&cpu_pct, OVERHEAD_CONFIDENCE)?,
        },
        detectable: DetectableShift {
            wall_ns_per_sample: detectable(&wall)?,
            cpu_ns_per_sample: detectable(&cpu)?,
            runtime_overhead_pct: detectable(&wall_pct)?,
            cpu_overhead_pct: detectable(&cpu_pct)?,
        },
    })
}

/// Whether the overhead scenario stops after `pairs` pairs taking `elapsed` so far, the last
/// one `last_pair`, with `estimates` from them (None below the interval's minimum).
pub fn stop_after(
    pairs: u64,
    limits: &PairLimits,
    elapsed: Duration,
    last_pair: Duration,
    estimates: Option<&PairEstimates>,
) -> Option<PairStop> {
    if pairs < limits.min_pairs.max(OVERHEAD_MIN_PAIRS_FLOOR) {
        return None;
    }
    if let Some(e) = estimates {
        let r = e.pct.runtime_overhead_pct;
        if (r.hi - r.lo) / 2.0 <= OVERHEAD_TARGET_HALF_WIDTH_PCT {
            return Some(PairStop::Precision);
        }
    }
    if pairs >= OVERHEAD_MAX_PAIRS {
        return Some(PairStop::MaxPairs);
    }
    // No pair starts that would likely end past the cap.
    if elapsed + last_pair > limits.max_duration {
        return Some(PairStop::TimeCap);
    }
    None
}

/// How many pairs the overhead scenario runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLimits {
    /// Pairs always run (at least [`OVERHEAD_MIN_PAIRS_FLOOR`]).
    pub min_pairs: u64,
    /// No pair starts once it would likely end after this (the minimum always runs).
    pub max_duration: Duration,
}

impl PairLimits {
    /// The limits a runtime's knobs set (their defaults when unset).
    pub fn from_knobs(knobs: &RuntimeKnobs) -> Self {
        PairLimits {
            min_pairs: knobs.overhead_min_pairs(),
            max_duration: knobs.overhead_max_duration(),
        }
    }
}

/// Writes `summary.json` into the summary's directory so that the `artifact_size_bytes`
/// stored inside equals the directory's size including the file itself.
fn write_summary(summary: &mut ScenarioSummary) -> Result<(), ScenarioError> {
    let dir = PathBuf::from(&summary.artifact_dir);
    let path = dir.join("summary.json");
    for _ in 0..16 {
        let bytes = serde_json::to_vec_pretty(&*summary).map_err(|e| dir_error(&dir)(e.into()))?;
        std::fs::write(&path, bytes).map_err(dir_error(&dir))?;
        let size = dir_size(&dir);
        if size == summary.artifact_size_bytes {
            return Ok(());
        }
        summary.artifact_size_bytes = size;
    }
    Ok(())
}

fn overhead_metrics(unprofiled: &ScenarioSummary, tracked: &ScenarioSummary) -> OverheadMetrics {
    OverheadMetrics {
        runtime_overhead_pct: pct_overhead(unprofiled.wall_seconds, tracked.wall_seconds),
        cpu_overhead_pct: pct_overhead(unprofiled.cpu_seconds, tracked.cpu_seconds),
        artifact_growth_bytes: tracked
            .artifact_size_bytes
            .saturating_sub(unprofiled.artifact_size_bytes),
    }
}

/// What the overhead scenario runs.
#[derive(Debug, Clone)]
pub struct OverheadSpec {
    /// The tracker (its sink directory is set per trial).
    pub tracker: TrackerConfig,
    /// The workload's size.
    pub workload: Workload,
    /// Which workload.
    pub workload_kind: WorkloadKind,
    /// TensorFlow device of the TensorFlow workload (`/CPU:0`, `/GPU:0`).
    pub tensorflow_device: &'static str,
    /// `<artifact root>/<runtime>`: the promoted trial lands in `<this>/overhead`.
    pub runtime_dir: PathBuf,
    /// `<scratch root>/<runtime>`, when trial files go to a RAM-backed scratch root.
    pub scratch_dir: Option<PathBuf>,
    /// Samples the tracked scenario emits.
    pub samples: u64,
    /// How many pairs to run.
    pub limits: PairLimits,
}

/// Runs unprofiled/tracked pairs in ABBA order (see [`stop_after`] for how many), estimates
/// the added cost, promotes the representative pair's directories to
/// `<runtime_dir>/overhead/{unprofiled,tracked_default}` and deletes the rest.
pub fn run_overhead<C: Collector>(
    spec: &OverheadSpec,
    mut open_collector: impl FnMut() -> Result<C, CollectError>,
    hooks: &mut Hooks<'_>,
) -> Result<OverheadBlock, ScenarioError> {
    let trial_root = match &spec.scratch_dir {
        Some(scratch) => scratch.join("overhead_trials"),
        None => spec.runtime_dir.join(".overhead_trials"),
    };
    reset_dir(&trial_root)?;
    let result = run_trials(spec, &trial_root, &mut open_collector, hooks);
    // The trial root never survives, whatever happened.
    std::fs::remove_dir_all(&trial_root).ok();
    if let Some(scratch) = &spec.scratch_dir {
        // Only removed when empty: the scratch root may be shared.
        std::fs::remove_dir(scratch).ok();
    }
    result
}

fn run_trials<C: Collector>(
    spec: &OverheadSpec,
    trial_root: &Path,
    open_collector: &mut impl FnMut() -> Result<C, CollectError>,
    hooks: &mut Hooks<'_>,
) -> Result<OverheadBlock, ScenarioError> {
    let mut trials = Vec::new();
    let mut pairs = Vec::new();
    let mut summaries = Vec::new();
    let mut losses = Vec::new();
    let started = Instant::now();
    let mut estimates: Option<PairEstimates>;
    let mut kept: Option<usize> = None;
    let stopped_by = loop {
        let index = pairs.len() as u64;
        let trial = index + 1;
        let tracked_first = index % 2 == 1;
        let total = 2 * spec.limits.min_pairs.max(trial);
        let pair_started = Instant::now();
        let dir = trial_root.join(format!("trial_{trial}"));
        let (unprofiled, tracked) = if tracked_first {
            let tracked =
                run_tracked(spec, open_collector()?, &dir.join("tracked_default"), hooks)?;
            overhead_progress(hooks, trial * 2 - 1, total);
            let unprofiled = run_unprofiled(spec, &dir.join("unprofiled"), hooks)?;
            (unprofiled, tracked)
        } else {
            let unprofiled = run_unprofiled(spec, &dir.join("unprofiled"), hooks)?;
            overhead_progress(hooks, trial * 2 - 1, total);
            let tracked =
                run_tracked(spec, open_collector()?, &dir.join("tracked_default"), hooks)?;
            (unprofiled, tracked)
        };
        overhead_progress(hooks, trial * 2, total);
        let last_pair = pair_started.elapsed();
        trials.push(overhead_metrics(&unprofiled, &tracked));
        pairs.push(pair_cost(
            &unprofiled,
            &tracked,
            spec.samples.max(1),
            tracked_first,
        ));
        // Pairs not promoted are deleted below: what their sinks lost is kept here.
        if let Some(stats) = &tracked.stats {
            losses.extend(TelemetryLoss::from_stats(
                &format!("overhead trial {trial}"),
                stats,
                &dir.join("tracked_default")
                    .join("sink")
                    .display()
                    .to_string(),
            ));
        }
        summaries.push((unprofiled, tracked));
        estimates = if pairs.len() as u64 >= OVERHEAD_MIN_PAIRS_FLOOR {
            // A non-finite pair (a zero-length unprofiled run) leaves no estimate: the
            // time cap then ends the scenario.
            estimate_pairs(&pairs).ok()
        } else {
            None
        };
        // Only one pair's files stay on disk: the kept one or the newest, whichever is nearer
        // the running estimate; the other's directory goes now.
        let newest = pairs.len() - 1;
        let centre = running_centre(&pairs, estimates.as_ref());
        let nearer = nearer_pair(&pairs, kept, newest, centre);
        for dropped in [kept, Some(newest)].into_iter().flatten() {
            if dropped != nearer {
                let dir = trial_root.join(format!("trial_{}", dropped + 1));
                std::fs::remove_dir_all(&dir).map_err(dir_error(&dir))?;
            }
        }
        kept = Some(nearer);
        if let Some(stop) = stop_after(
            trial,
            &spec.limits,
            started.elapsed(),
            last_pair,
            estimates.as_ref(),
        ) {
            break stop;
        }
    };
    let selected = kept.unwrap_or(0);
    let (mut unprofiled, mut tracked) = summaries.swap_remove(selected);
    let final_dir = spec.runtime_dir.join("overhead");
    reset_dir(&final_dir)?;
    for summary in [&mut unprofiled, &mut tracked] {
        let from = PathBuf::from(&summary.artifact_dir);
        let to = final_dir.join(&summary.name);
        move_dir(&from, &to)?;
        summary.artifact_dir = to.display().to_string();
        if summary.output_path.is_some() {
            summary.output_path = Some(to.join("sink").join(MANIFEST_FILE).display().to_string());
        }
        write_summary(summary)?;
    }
    let representative = overhead_metrics(&unprofiled, &tracked);
    let metrics = match &estimates {
        Some(e) => OverheadMetrics {
            runtime_overhead_pct: e.pct.runtime_overhead_pct.estimate,
            cpu_overhead_pct: e.pct.cpu_overhead_pct.estimate,
            artifact_growth_bytes: representative.artifact_growth_bytes,
        },
        None => representative,
    };
    Ok(OverheadBlock {
        scenarios: OverheadScenarios {
            unprofiled,
            tracked_default: tracked,
        },
        metrics,
        trial_count: trials.len() as u32,
        trial_quantile: REPRESENTATIVE_QUANTILE,
        selected_trial: selected as u32 + 1,
        trial_metrics: trials,
        pairs,
        added_ns_per_sample: estimates.map(|e| e.added),
        estimates: estimates.map(|e| e.pct),
        detectable_shift: estimates.map(|e| e.detectable),
        stopped_by: Some(stopped_by),
        scratch_root: spec
            .scratch_dir
            .as_ref()
            .and_then(|d| d.parent())
            .map(|d| d.display().to_string()),
        telemetry_losses: losses,
    })
}

/// The running estimate of `runtime_overhead_pct`: the Hodges–Lehmann estimate once there is
/// one, else the median of the pairs so far.
fn running_centre(pairs: &[OverheadPair], estimates: Option<&PairEstimates>) -> f64 {
    match estimates {
        Some(e) => e.pct.runtime_overhead_pct.estimate,
        None => {
            let wall: Vec<f64> = pairs.iter().map(|p| p.runtime_overhead_pct).collect();
            stats::median(&wall).unwrap_or(0.0)
        }
    }
}

fn overhead_progress(hooks: &mut Hooks<'_>, done: u64, total: u64) {
    (hooks.progress)(Progress {
        phase: Phase::Overhead,
        done,
        total,
        durable_records: 0,
    });
}

/// Renames a directory, copying it when it crosses filesystems (a RAM-backed scratch root).
fn move_dir(from: &Path, to: &Path) -> Result<(), ScenarioError> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_dir(from, to)?;
    std::fs::remove_dir_all(from).map_err(dir_error(from))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), ScenarioError> {
    std::fs::create_dir_all(to).map_err(dir_error(to))?;
    for entry in std::fs::read_dir(from).map_err(dir_error(from))? {
        let entry = entry.map_err(dir_error(from))?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(dir_error(from))?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(dir_error(to))?;
        }
    }
    Ok(())
}

fn prepare(spec: &OverheadSpec) -> Result<PreparedWorkload, ScenarioError> {
    PreparedWorkload::prepare(spec.workload_kind, spec.workload, spec.tensorflow_device)
        .map_err(|e| ScenarioError::Workload(e.to_string()))
}

fn run_unprofiled(
    spec: &OverheadSpec,
    dir: &Path,
    hooks: &Hooks<'_>,
) -> Result<ScenarioSummary, ScenarioError> {
    reset_dir(dir)?;
    hooks.check_cancel()?;
    let workload = prepare(spec)?;
    let cpu = process_cpu_seconds();
    let start = Instant::now();
    let checksum = workload
        .run(|_| false, |_| {})
        .map_err(|e| ScenarioError::Workload(e.to_string()))?;
    let wall_seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu;
    let mut summary = ScenarioSummary {
        name: "unprofiled".to_owned(),
        wall_seconds,
        cpu_seconds,
        checksum,
        artifact_dir: dir.display().to_string(),
        artifact_size_bytes: 0,
        sample_count: None,
        emitted_samples: None,
        event_count: None,
        collector_failure_event_count: None,
        stats: None,
        output_path: None,
    };
    write_summary(&mut summary)?;
    Ok(summary)
}

fn run_tracked<C: Collector>(
    spec: &OverheadSpec,
    collector: C,
    dir: &Path,
    hooks: &Hooks<'_>,
) -> Result<ScenarioSummary, ScenarioError> {
    reset_dir(dir)?;
    hooks.check_cancel()?;
    let mut config = spec.tracker.clone();
    let sink_dir = dir.join("sink");
    if let Some(sink) = &mut config.sink {
        sink.root_dir = sink_dir.clone();
    }
    let interval = config.sampling_interval;
    let samples = spec.samples.max(1);
    let workload = prepare(spec)?;
    let steps = workload.steps();
    // Sample k is due after step min(N − 1, floor(k × N / S)).
    let due =
        |k: u64| ((u128::from(k) * u128::from(steps) / u128::from(samples)) as u64).min(steps - 1);
    let delay = hooks.tracked_sample_delay;
    let spin = hooks.tracked_sample_spin;
    let mut tracker = Tracker::start(collector, config)?;
    let mut next = 0u64;
    let cpu = process_cpu_seconds();
    let start = Instant::now();
    // A TensorFlow step is traced when a sample is due after it.
    let traced = |step: u64| {
        let first_due = (u128::from(step) * u128::from(samples)).div_ceil(u128::from(steps));
        first_due < u128::from(samples) && due(first_due as u64) == step
    };
    let checksum = workload.run(traced, |step| {
        while next < samples && due(next) == step {
            tracker.emit_sample(next, equivalent_time(interval, next));
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            if !spin.is_zero() {
                let until = Instant::now() + spin;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            next += 1;
        }
    });
    let wall_seconds = start.elapsed().as_secs_f64();
    let checksum = checksum.map_err(|e| ScenarioError::Workload(e.to_string()))?;
    let cpu_seconds = process_cpu_seconds() - cpu;
    while next < samples {
        tracker.emit_sample(next, equivalent_time(interval, next));
        next += 1;
    }
    let report = tracker.finish();
    let mut summary = ScenarioSummary {
        name: "tracked_default".to_owned(),
        wall_seconds,
        cpu_seconds,
        checksum,
        artifact_dir: dir.display().to_string(),
        artifact_size_bytes: 0,
        sample_count: Some(samples),
        emitted_samples: Some(report.statistics.sample_count),
        event_count: Some(event_count(&report)),
        collector_failure_event_count: Some(report.statistics.collector_failure_event_count),
        stats: Some(TrackerStats::of(&report.statistics)),
        output_path: Some(sink_dir.join(MANIFEST_FILE).display().to_string()),
    };
    write_summary(&mut summary)?;
    Ok(summary)
}

fn event_count(report: &TrackerReport) -> u64 {
    report.statistics.history_retained_events + report.statistics.history_dropped_events
}

/// What the soak runs.
#[derive(Debug, Clone)]
pub struct SoakSpec {
    /// The tracker (runtime, interval, history, sink under `<artifact_dir>/sink`).
    pub tracker: TrackerConfig,
    /// Samples to emit.
    pub samples: u64,
    /// Profile name, for the report.
    pub profile: String,
    /// `<artifact root>/<runtime>/soak`.
    pub artifact_dir: PathBuf,
    /// The forced-churn subtest's limits.
    pub retention: RetentionValidationLimits,
}

/// Runs the soak: emits every sample without sleeping, reads RSS at the checkpoints, finishes
/// the tracker, then runs the retention validation in `<artifact_dir>/retention_validation`.
pub fn run_soak<C: Collector>(
    spec: &SoakSpec,
    mut open_collector: impl FnMut() -> Result<C, CollectError>,
    hooks: &mut Hooks<'_>,
) -> Result<SoakBlock, ScenarioError> {
    reset_dir(&spec.artifact_dir)?;
    let mut tracker_config = spec.tracker.clone();
    let sink_dir = spec.artifact_dir.join("sink");
    if let Some(sink) = &mut tracker_config.sink {
        sink.root_dir = sink_dir.clone();
    }
    let interval = tracker_config.sampling_interval;
    let samples = spec.samples.max(1);
    let checkpoints = checkpoint_indices(samples);
    let mut rss = RssCollector::open()?;
    let mut readings = Vec::with_capacity(checkpoints.len());
    let progress_every = match hooks.progress_every {
        0 => (samples / 50).max(1),
        n => n,
    };
    let started = Instant::now();
    let cpu_started = process_cpu_seconds();
    let mut tracker = Tracker::start(open_collector()?, tracker_config)?;
    let mut next_checkpoint = checkpoints.iter().copied().peekable();
    for index in 0..samples {
        tracker.emit_sample(index, equivalent_time(interval, index));
        if let Some(hook) = hooks.after_soak_sample.as_mut() {
            hook(index);
        }
        if next_checkpoint.peek() == Some(&index) {
            next_checkpoint.next();
            let reading = rss.rss_bytes()?;
            readings.push(reading);
            if let Some(hook) = hooks.on_checkpoint.as_mut() {
                hook(index, reading);
            }
        }
        if (index + 1) % progress_every == 0 {
            if hooks.cancel.load(Ordering::Relaxed) {
                tracker.interrupt();
                return Err(ScenarioError::Interrupted);
            }
            (hooks.progress)(Progress {
                phase: Phase::Soak,
                done: index + 1,
                total: samples,
                durable_records: tracker.sink_stats().map_or(0, |s| s.durable_records),
            });
        }
    }
    let report = tracker.finish();
    let wall_seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu_started;
    let rss_after_finish = rss.rss_bytes()?;
    (hooks.progress)(Progress {
        phase: Phase::Soak,
        done: samples,
        total: samples,
        durable_records: report.sink.as_ref().map_or(0, |s| s.durable_records),
    });
    let retention_dir = spec.artifact_dir.join("retention_validation");
    let retention = match run_retention_validation(
        &spec.tracker,
        &spec.retention,
        &retention_dir,
        &mut open_collector,
        hooks,
    ) {
        Ok(block) => block,
        // A disk the soak filled must not hide what the soak lost: the subtest is reported as
        // a sink that could not start, and the job goes on to its report.
        Err(ScenarioError::ArtifactDir { path, error }) => {
            unstarted_validation(&spec.retention, &retention_dir, &path, &error)
        }
        Err(ScenarioError::Tracker(TrackerError::Sink(SinkError::Io { path, error }))) => {
            unstarted_validation(&spec.retention, &retention_dir, &path, &error)
        }
        Err(e) => return Err(e),
    };

    let baseline = readings.first().copied().unwrap_or(0);
    let final_rss = readings.last().copied().unwrap_or(0);
    let warmup = checkpoints.first().map_or(1, |i| i + 1);
    let measured = samples - warmup;
    let measured_seconds = measured as f64 * interval.as_secs_f64();
    let delta = final_rss as i64 - baseline as i64;
    let endpoint_growth = if measured_seconds > 0.0 {
        delta as f64 / measured_seconds * 86_400.0
    } else {
        0.0
    };
    // Equivalent seconds since the warm-up checkpoint, one per reading.
    let first = checkpoints.first().copied().unwrap_or(0);
    let seconds: Vec<f64> = checkpoints
        .iter()
        .map(|&i| (i - first) as f64 * interval.as_secs_f64())
        .collect();
    let trend = rss_trend(&seconds, &readings, endpoint_growth);
    let equivalent_seconds = samples as f64 * interval.as_secs_f64();
    let s = &report.statistics;
    Ok(SoakBlock {
        name: format!("{}_soak", s.runtime),
        profile: spec.profile.clone(),
        sample_count: samples,
        equivalent_seconds,
        equivalent_hours: equivalent_seconds / 3600.0,
        wall_seconds,
        cpu_seconds,
        samples_per_second: samples as f64 / wall_seconds.max(f64::MIN_POSITIVE),
        artifact_dir: spec.artifact_dir.display().to_string(),
        output_path: sink_dir.join(MANIFEST_FILE).display().to_string(),
        artifact_size_bytes: dir_size(&spec.artifact_dir),
        rss_growth_per_24h_equiv: trend.map_or(endpoint_growth, |t| t.growth_per_24h_equiv),
        rss_trend: trend,
        rss_checkpoints: seconds
            .iter()
            .zip(&readings)
            .map(|(&equivalent_seconds, &rss_bytes)| RssCheckpoint {
                equivalent_seconds,
                rss_bytes,
            })
            .collect(),
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
        collector_failure_event_count: s.collector_failure_event_count,
        history_dropped_events: s.history_dropped_events,
        history_dropped_samples: s.history_dropped_samples,
        history_dropped_alerts: s.history_dropped_alerts,
        rollover_count: s.rollover_count,
        pruned_segment_count: s.pruned_segment_count,
        pruned_bytes: s.pruned_bytes,
        final_retained_files: s.final_retained_files,
        final_retained_bytes: s.final_retained_bytes,
        history_retained_events: s.history_retained_events,
        history_retained_samples: s.history_retained_samples,
        history_retained_alerts: s.history_retained_alerts,
        collector_health_status: s.collector_health_status.as_str().to_owned(),
        stats: TrackerStats::of(s),
        retention_validation: retention,
    })
}

/// The leak trend of RSS `readings` taken `seconds` (equivalent time) after the warm-up
/// checkpoint, or `None` with fewer than 3 readings. `endpoint_growth` is the seed's endpoint
/// estimate, kept beside the trend.
///
/// The slope is Theil–Sen's with Sen's 95 % interval; when every reading is equal the slope is
/// 0 with the interval [0, 0] (no pair of readings differs, so no slope other than 0 is
/// consistent with them), and when the interval is not attainable for this few readings it is
/// left out (the gate then decides on the estimate alone).
pub fn rss_trend(seconds: &[f64], readings: &[u64], endpoint_growth: f64) -> Option<RssTrend> {
    let n = readings.len().min(seconds.len());
    if n < 3 {
        return None;
    }
    const DAY: f64 = 86_400.0;
    let x = &seconds[..n];
    let y: Vec<f64> = readings[..n].iter().map(|&r| r as f64).collect();
    let flat = y.iter().all(|&v| v == y[0]);
    let (slope, lo, hi, intercept) = if flat {
        (0.0, Some(0.0), Some(0.0), y[0])
    } else {
        match stats::theil_sen(x, &y, 0.95) {
            Ok(fit) => (
                fit.slope.estimate,
                Some(fit.slope.lo * DAY),
                Some(fit.slope.hi * DAY),
                fit.intercept,
            ),
            Err(_) => {
                // Too few readings for Sen's interval: the point slope still stands.
                let slope = stats::theil_sen_slope(x, &y).unwrap_or(0.0);
                let intercept = stats::median(&y).ok()? - slope * stats::median(x).ok()?;
                (slope, None, None, intercept)
            }
        }
    };
    let (p_increasing, s) = match stats::mann_kendall(&y) {
        Ok(mk) => (mk.p_increasing, mk.s),
        Err(_) => (1.0, 0),
    };
    let third = (n / 3).max(1);
    let early = stats::median(&y[..third]).ok()?;
    let late = stats::median(&y[n - third..]).ok()?;
    let late_half = &y[n / 2..];
    let late_slope = if late_half.iter().all(|&v| v == late_half[0]) {
        0.0
    } else {
        stats::theil_sen_slope(&x[n / 2..], late_half).unwrap_or(0.0)
    };
    Some(RssTrend {
        checkpoints: n as u64,
        slope_bytes_per_second: slope,
        growth_per_24h_equiv: slope * DAY,
        growth_per_24h_equiv_lo: lo,
        growth_per_24h_equiv_hi: hi,
        mann_kendall_s: s,
        mann_kendall_p_increasing: p_increasing,
        projected_rss_at_24h_equiv_bytes: intercept + slope * DAY,
        endpoint_growth_per_24h_equiv: endpoint_growth,
        early_window_median_bytes: early,
        late_window_median_bytes: late,
        late_window_growth_per_24h_equiv: late_slope * DAY,
    })
}

/// The block of a retention validation whose directory or sink could not be prepared: no
/// sample taken, every check failed, and tracker statistics that record the failure as one
/// failed sink write with its path and OS error (so the report says what was lost and why).
fn unstarted_validation(
    limits: &RetentionValidationLimits,
    dir: &Path,
    path: &Path,
    error: &std::io::Error,
) -> RetentionValidationBlock {
    let sink_dir = dir.join("sink");
    let message = format!("prepare {}: {error}", path.display());
    tracing::error!(error = %message, "Retention validation could not start its telemetry sink.");
    let checks = RetentionChecks {
        rollover_observed: false,
        pruning_observed: false,
        retained_files_bounded: false,
        retained_bytes_bounded: false,
    };
    RetentionValidationBlock {
        sample_limit: limits.sample_limit,
        emitted_samples: 0,
        stats: serde_json::json!({
            "sink_flush_failures": 1,
            "sink_dropped_records": 0,
            "sink_last_error": message,
            "session_status": "incomplete",
            "sink_dir": sink_dir.display().to_string(),
            "sink_durable_records": 0,
            "sink_dropped_bytes": 0,
            "sink_first_error": message,
        })
        .into(),
        checks,
        passed: false,
        artifact_dir: dir.display().to_string(),
        output_path: sink_dir.join(MANIFEST_FILE).display().to_string(),
        artifact_size_bytes: dir_size(dir),
    }
}

/// The forced-churn subtest: tight sink limits, at most `sample_limit` samples, stopping once
/// both a rollover and a pruned segment have been seen; then its four checks.
pub fn run_retention_validation<C: Collector>(
    tracker: &TrackerConfig,
    limits: &RetentionValidationLimits,
    dir: &Path,
    open_collector: &mut impl FnMut() -> Result<C, CollectError>,
    hooks: &mut Hooks<'_>,
) -> Result<RetentionValidationBlock, ScenarioError> {
    reset_dir(dir)?;
    let sink_dir = dir.join("sink");
    let mut config = tracker.clone();
    let mut sink = SinkConfig::new(&sink_dir);
    sink.flush_every_events = usize::try_from(limits.flush_every_events).unwrap_or(usize::MAX);
    sink.flush_every = Duration::from_secs_f64(limits.flush_every_seconds);
    sink.rollover_max_bytes = limits.rollover_max_bytes;
    sink.rollover_max_events = limits.rollover_max_events;
    sink.retention_max_files = usize::try_from(limits.retention_max_files).unwrap_or(usize::MAX);
    sink.retention_max_total_bytes = limits.retention_max_total_bytes;
    config.sink = Some(sink);
    let interval = config.sampling_interval;
    let mut tracker = Tracker::start(open_collector()?, config)?;
    let mut emitted = 0;
    for index in 0..limits.sample_limit.max(1) {
        tracker.emit_sample(index, equivalent_time(interval, index));
        emitted += 1;
        if index % 25 == 0 {
            if hooks.cancel.load(Ordering::Relaxed) {
                tracker.interrupt();
                return Err(ScenarioError::Interrupted);
            }
            (hooks.progress)(Progress {
                phase: Phase::RetentionValidation,
                done: emitted,
                total: limits.sample_limit,
                durable_records: 0,
            });
            if let Some(stats) = tracker.sink_stats()
                && stats.rollover_count > 0
                && stats.pruned_segment_count > 0
            {
                break;
            }
        }
    }
    let report = tracker.finish();
    // It stops as soon as both were seen: the phase is complete at `emitted` samples.
    (hooks.progress)(Progress {
        phase: Phase::RetentionValidation,
        done: emitted,
        total: emitted,
        durable_records: 0,
    });
    let s = &report.statistics;
    let checks = RetentionChecks {
        rollover_observed: s.rollover_count > 0,
        pruning_observed: s.pruned_segment_count > 0,
        retained_files_bounded: s.final_retained_files <= limits.retention_max_files,
        retained_bytes_bounded: s.final_retained_bytes <= limits.retention_max_total_bytes,
    };
    Ok(RetentionValidationBlock {
        sample_limit: limits.sample_limit,
        emitted_samples: emitted,
        stats: TrackerStats::of(s),
        passed: checks.failed().is_empty(),
        checks,
        artifact_dir: dir.display().to_string(),
        output_path: sink_dir.join(MANIFEST_FILE).display().to_string(),
        artifact_size_bytes: dir_size(dir),
    })
}

#[cfg(test)]
mod tests;
