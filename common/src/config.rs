//! What a run is: profile, mode, gate mode, workload size, tuning knobs, and the report's
//! `config` block derived from them (with the sample-count formulas of the harness).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::knobs::Knobs;

/// Equivalent hours of the `pr` soak.
pub const PR_HOURS: f64 = 6.0;
/// Equivalent hours of the `nightly` soak.
pub const NIGHTLY_HOURS: f64 = 24.0;

/// Soak profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// 6 h-equivalent soak plus the overhead checks.
    Pr,
    /// 24 h-equivalent soak plus the overhead checks.
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

/// Which scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Unprofiled vs tracked overhead only.
    Overhead,
    /// Accelerated soak and retention validation only.
    Soak,
    /// Both.
    All,
}

impl Mode {
    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Overhead => "overhead",
            Mode::Soak => "soak",
            Mode::All => "all",
        }
    }

    /// Whether the overhead scenario runs.
    pub fn runs_overhead(self) -> bool {
        matches!(self, Mode::Overhead | Mode::All)
    }

    /// Whether the soak (and retention validation) runs.
    pub fn runs_soak(self) -> bool {
        matches!(self, Mode::Soak | Mode::All)
    }
}

/// The workload the overhead scenario runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Deterministic allocation churn (every runtime; keeps the seed's budgets comparable).
    #[default]
    Reference,
    /// TensorFlow graph steps on the runtime's device (the TensorFlow runtimes; the others
    /// keep the reference workload).
    Tensorflow,
}

impl WorkloadKind {
    /// The workload's name.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Reference => "reference",
            WorkloadKind::Tensorflow => "tensorflow",
        }
    }
}

/// How the metrics are gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMode {
    /// Absolute maxima.
    Budget,
    /// A checked-in baseline plus allowed increases.
    Regression,
}

impl GateMode {
    /// The gate mode's name.
    pub fn name(self) -> &'static str {
        match self {
            GateMode::Budget => "budget",
            GateMode::Regression => "regression",
        }
    }
}

/// What a run (and each of its jobs) runs: the soak profile, the scenarios and the overhead
/// workload's size and kind. Its fields are also the `fleetgate run` flags of the same names,
/// and the first keys of the report's `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[deny(missing_docs)]
pub struct Workload {
    /// Soak profile: pr = 6 h-equivalent, nightly = 24 h-equivalent.
    #[arg(long, value_enum, default_value = "pr")]
    pub profile: Profile,
    /// Scenarios to run.
    #[arg(long, value_enum, default_value = "all")]
    pub mode: Mode,
    /// Reference workload steps (1 to 10000000).
    #[arg(long, default_value_t = 5_000)]
    pub iterations: u32,
    /// KiB allocated per workload step (1 to 1048576, i.e. 1 GiB).
    #[arg(long, default_value_t = 512)]
    pub allocation_kb: u32,
    /// Overhead workload: the reference allocation churn, or (for the TensorFlow runtimes)
    /// TensorFlow graph steps on the runtime's device.
    #[arg(long = "workload", value_enum, default_value = "reference")]
    #[serde(rename = "workload", default)]
    pub kind: WorkloadKind,
}

/// A workload field out of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {range}")]
pub struct WorkloadError {
    /// `iterations` or `allocation_kb`.
    pub field: &'static str,
    /// The range it broke.
    pub range: OutOfRange,
}

impl Workload {
    /// Checks the sizes: iterations by [`check_iterations`], the allocation by
    /// [`check_allocation_kb`].
    pub fn check(&self) -> Result<(), WorkloadError> {
        check_iterations(self.iterations).map_err(|range| WorkloadError {
            field: "iterations",
            range,
        })?;
        check_allocation_kb(self.allocation_kb).map_err(|range| WorkloadError {
            field: "allocation_kb",
            range,
        })?;
        Ok(())
    }
}

/// Most reference-workload steps a run may ask for (`--iterations`, `iterations` on the wire).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Largest allocation per workload step, in KiB (1 GiB; `--allocation-kb`, `allocation_kb`).
pub const MAX_ALLOCATION_KB: u32 = 1 << 20;
/// Longest whole-run deadline, in seconds (7 days; `--deadline-seconds`, `deadline_ms`).
pub const MAX_DEADLINE_SECONDS: u64 = 7 * 24 * 60 * 60;

/// A number outside the range a run accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be from {min} to {max}, got {got}")]
pub struct OutOfRange {
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
    /// The value given.
    pub got: u64,
}

fn in_range(got: u64, min: u64, max: u64) -> Result<u64, OutOfRange> {
    if (min..=max).contains(&got) {
        Ok(got)
    } else {
        Err(OutOfRange { min, max, got })
    }
}

/// Checks a number of workload steps: 1 to [`MAX_ITERATIONS`].
pub fn check_iterations(iterations: u32) -> Result<u32, OutOfRange> {
    in_range(u64::from(iterations), 1, u64::from(MAX_ITERATIONS)).map(|_| iterations)
}

/// Checks a per-step allocation: 1 to [`MAX_ALLOCATION_KB`] KiB.
pub fn check_allocation_kb(allocation_kb: u32) -> Result<u32, OutOfRange> {
    in_range(u64::from(allocation_kb), 1, u64::from(MAX_ALLOCATION_KB)).map(|_| allocation_kb)
}

/// A whole-run deadline from seconds: 1 to [`MAX_DEADLINE_SECONDS`].
pub fn deadline_from_seconds(seconds: u64) -> Result<Duration, OutOfRange> {
    in_range(seconds, 1, MAX_DEADLINE_SECONDS).map(Duration::from_secs)
}

/// A whole-run deadline from milliseconds: 1 ms to [`MAX_DEADLINE_SECONDS`] seconds.
pub fn deadline_from_millis(millis: u64) -> Result<Duration, OutOfRange> {
    in_range(millis, 1, MAX_DEADLINE_SECONDS * 1_000).map(Duration::from_millis)
}

/// Checks a deadline that is already a [`Duration`] (a run built in code), by the rules of
/// [`deadline_from_millis`].
pub fn check_deadline(deadline: Duration) -> Result<Duration, OutOfRange> {
    let max = Duration::from_secs(MAX_DEADLINE_SECONDS);
    if !deadline.is_zero() && deadline <= max {
        return Ok(deadline);
    }
    let max_ms = MAX_DEADLINE_SECONDS * 1_000;
    // Over the maximum by less than a millisecond still reads as over it.
    let got = if deadline > max {
        u64::try_from(deadline.as_millis())
            .unwrap_or(u64::MAX)
            .max(max_ms + 1)
    } else {
        0
    };
    Err(OutOfRange {
        min: 1,
        max: max_ms,
        got,
    })
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

/// Samples the tracked overhead scenario emits:
/// `max(1, min(max(1, iterations), round(iterations × 0.1 / interval)))`.
pub fn overhead_sample_count(iterations: u32, interval: Duration) -> u64 {
    let iterations = u64::from(iterations.max(1));
    let wanted = (iterations as f64 * 0.1 / interval.as_secs_f64()).round();
    let wanted = if wanted.is_finite() && wanted >= 0.0 {
        wanted as u64
    } else {
        0
    };
    wanted.min(iterations).max(1)
}

/// Sample indices after which RSS is read in a soak: every `max(samples / 50, 1)`-th sample
/// (indices `stride − 1, 2·stride − 1, …`), plus the last index if it is not already one.
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

/// Sink limits of the forced-churn retention validation, and its sample limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionValidationLimits {
    /// Records per batch.
    pub flush_every_events: u64,
    /// Seconds between idle flushes.
    pub flush_every_seconds: f64,
    /// Rollover size.
    pub rollover_max_bytes: u64,
    /// Rollover record count.
    pub rollover_max_events: u64,
    /// Retained files.
    pub retention_max_files: u64,
    /// Retained bytes.
    pub retention_max_total_bytes: u64,
    /// Most samples emitted.
    pub sample_limit: u64,
}

impl Default for RetentionValidationLimits {
    fn default() -> Self {
        RetentionValidationLimits {
            flush_every_events: 50,
            flush_every_seconds: 2.0,
            rollover_max_bytes: 8_192,
            rollover_max_events: 200,
            retention_max_files: 2,
            retention_max_total_bytes: 24_576,
            sample_limit: 2_048,
        }
    }
}

/// Per-runtime entry of the report's config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePlan {
    /// Effective sampling interval in seconds (the default, or the knob).
    pub default_interval: f64,
    /// Samples of the tracked overhead scenario.
    pub overhead_sample_count: u64,
    /// Samples of the soak.
    pub soak_sample_count: u64,
}

/// The part of the config a regression baseline must match exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparableConfig {
    /// Profile, mode and workload.
    #[serde(flatten)]
    pub workload: Workload,
    /// Soak hours.
    pub profile_equivalent_hours: f64,
    /// Runtimes, by name.
    pub runtimes: BTreeMap<String, RuntimePlan>,
    /// Forced-churn limits.
    pub retention_validation: RetentionValidationLimits,
    /// Tuning knobs in effect (only set ones).
    #[serde(default)]
    pub knobs: Knobs,
}

impl fmt::Display for ComparableConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("<unprintable config>"),
        }
    }
}

/// Where a gate asset used by a run came from (recorded in the report's `config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetSource {
    /// The copy of the shipped `docs/benchmarks/` file built into the binary that planned the
    /// run (no file was given).
    Embedded,
    /// A file the user named (`--budgets`, `--baseline`, `--tolerances`).
    Path,
}

/// The report's `config` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Profile, mode and workload.
    #[serde(flatten)]
    pub workload: Workload,
    /// Soak hours.
    pub profile_equivalent_hours: f64,
    /// Runtimes, by name.
    pub runtimes: BTreeMap<String, RuntimePlan>,
    /// Forced-churn limits.
    pub retention_validation: RetentionValidationLimits,
    /// Tuning knobs in effect (only set ones).
    pub knobs: Knobs,
    /// RAM-backed root for overhead trial files, if any.
    pub overhead_scratch_root: Option<String>,
    /// Budget file (budget gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budgets_path: Option<String>,
    /// Baseline file (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_path: Option<String>,
    /// Tolerance file (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerances_path: Option<String>,
    /// Where the budgets came from (`embedded`: `budgets_path` names the shipped file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets_source: Option<AssetSource>,
    /// SHA-256 of the budget document used, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets_sha256: Option<String>,
    /// Where the baseline came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_source: Option<AssetSource>,
    /// SHA-256 of the baseline document used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_sha256: Option<String>,
    /// Where the tolerances came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerances_source: Option<AssetSource>,
    /// SHA-256 of the tolerance document used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerances_sha256: Option<String>,
}

impl RunConfig {
    /// The part a baseline must match.
    pub fn comparable(&self) -> ComparableConfig {
        ComparableConfig {
            workload: self.workload,
            profile_equivalent_hours: self.profile_equivalent_hours,
            runtimes: self.runtimes.clone(),
            retention_validation: self.retention_validation,
            knobs: self
                .knobs
                .iter()
                .map(|(runtime, k)| (runtime.clone(), k.without_measurement()))
                .filter(|(_, k)| !k.is_empty())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_sizes_and_deadlines_have_documented_bounds() {
        assert_eq!(check_iterations(1), Ok(1));
        assert_eq!(check_iterations(MAX_ITERATIONS), Ok(MAX_ITERATIONS));
        assert_eq!(
            check_iterations(0).unwrap_err().to_string(),
            "must be from 1 to 10000000, got 0"
        );
        assert_eq!(
            check_iterations(u32::MAX).unwrap_err().to_string(),
            "must be from 1 to 10000000, got 4294967295"
        );
        assert_eq!(check_allocation_kb(MAX_ALLOCATION_KB), Ok(1_048_576));
        assert_eq!(
            check_allocation_kb(u32::MAX).unwrap_err().to_string(),
            "must be from 1 to 1048576, got 4294967295"
        );
        assert!(check_allocation_kb(0).is_err());
        assert_eq!(
            deadline_from_seconds(604_800),
            Ok(Duration::from_secs(604_800))
        );
        assert_eq!(
            deadline_from_seconds(0).unwrap_err().to_string(),
            "must be from 1 to 604800, got 0"
        );
        assert_eq!(
            deadline_from_seconds(u64::MAX).unwrap_err().to_string(),
            "must be from 1 to 604800, got 18446744073709551615"
        );
        assert_eq!(
            deadline_from_millis(u64::MAX).unwrap_err().to_string(),
            "must be from 1 to 604800000, got 18446744073709551615"
        );
        assert_eq!(deadline_from_millis(1), Ok(Duration::from_millis(1)));
        assert!(check_deadline(Duration::MAX).is_err());
        assert!(check_deadline(Duration::ZERO).is_err());
        assert!(check_deadline(Duration::from_nanos(1)).is_ok());
        assert!(check_deadline(Duration::from_secs(MAX_DEADLINE_SECONDS)).is_ok());
        assert!(
            check_deadline(Duration::from_secs(MAX_DEADLINE_SECONDS) + Duration::from_millis(1))
                .is_err()
        );
        // Found by the submit_run fuzz target: over by less than a millisecond.
        assert_eq!(
            check_deadline(Duration::new(MAX_DEADLINE_SECONDS, 1))
                .unwrap_err()
                .to_string(),
            "must be from 1 to 604800000, got 604800001"
        );
    }

    #[test]
    fn sample_counts_match_the_profiles() {
        let cpu = Duration::from_millis(100);
        let tf = Duration::from_secs(1);
        assert_eq!(soak_sample_count(PR_HOURS, cpu), 216_000);
        assert_eq!(soak_sample_count(NIGHTLY_HOURS, cpu), 864_000);
        assert_eq!(soak_sample_count(PR_HOURS, tf), 21_600);
        assert_eq!(soak_sample_count(NIGHTLY_HOURS, tf), 86_400);
        assert_eq!(soak_sample_count(0.0, cpu), 1);
        assert_eq!(overhead_sample_count(5_000, cpu), 5_000);
        assert_eq!(overhead_sample_count(5_000, tf), 500);
        assert_eq!(overhead_sample_count(30, cpu), 30);
        assert_eq!(overhead_sample_count(30, tf), 3);
        assert_eq!(overhead_sample_count(0, tf), 1);
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

    #[test]
    fn measurement_knobs_are_not_compared_with_a_baseline() {
        use crate::knobs::{Knobs, RuntimeKnobs};
        let mut k = RuntimeKnobs::default();
        k.set("overhead_min_pairs", "6").unwrap();
        k.set("overhead_max_seconds", "20").unwrap();
        // A run with only measurement knobs set matches a baseline recorded without them.
        let mut knobs = Knobs::new();
        knobs.insert("gpumemprof_cpu".to_owned(), k);
        let mut tuned = k;
        tuned.max_history = Some(10);
        knobs.insert("tfmemprof_cpu".to_owned(), tuned);
        let config = RunConfig {
            workload: Workload {
                profile: Profile::Pr,
                mode: Mode::All,
                iterations: 1,
                allocation_kb: 1,
                kind: WorkloadKind::Reference,
            },
            profile_equivalent_hours: 1.0,
            runtimes: BTreeMap::new(),
            retention_validation: RetentionValidationLimits::default(),
            knobs,
            overhead_scratch_root: None,
            budgets_path: None,
            baseline_path: None,
            tolerances_path: None,
            budgets_source: None,
            budgets_sha256: None,
            baseline_source: None,
            baseline_sha256: None,
            tolerances_source: None,
            tolerances_sha256: None,
        };
        let comparable = config.comparable().knobs;
        assert_eq!(comparable.len(), 1);
        assert_eq!(
            comparable["tfmemprof_cpu"],
            RuntimeKnobs {
                max_history: Some(10),
                ..RuntimeKnobs::default()
            }
        );
    }

    #[test]
    fn the_config_keeps_its_flat_keys_and_a_baseline_config_refuses_unknown_ones() {
        let workload = Workload {
            profile: Profile::Pr,
            mode: Mode::All,
            iterations: 5_000,
            allocation_kb: 512,
            kind: WorkloadKind::Tensorflow,
        };
        let config = ComparableConfig {
            workload,
            profile_equivalent_hours: 6.0,
            runtimes: BTreeMap::new(),
            retention_validation: RetentionValidationLimits::default(),
            knobs: crate::knobs::Knobs::new(),
        };
        let json = serde_json::to_value(&config).unwrap();
        let text = serde_json::to_string(&config).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_by_key(|k| text.find(&format!("\"{k}\":")).unwrap());
        assert_eq!(
            keys,
            [
                "profile",
                "mode",
                "iterations",
                "allocation_kb",
                "workload",
                "profile_equivalent_hours",
                "runtimes",
                "retention_validation",
                "knobs"
            ]
        );
        let back: ComparableConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, config);
        // A baseline recorded before the workload kind existed still loads.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("workload");
        let back: ComparableConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back.workload.kind, WorkloadKind::Reference);
        let mut typo = json;
        typo.as_object_mut()
            .unwrap()
            .insert("iteration".into(), 1.into());
        assert!(serde_json::from_value::<ComparableConfig>(typo).is_err());
    }
}
