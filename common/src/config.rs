//! What a run is: profile, mode, gate mode, workload size, tuning knobs, and the report's
//! `config` block derived from them (with the sample-count formulas of the harness).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// Per-runtime tuning knobs, in the seed's tuning order. Unset knobs keep the runtime's
/// defaults; set ones are recorded in the report's config, so a regression baseline only
/// matches a run with the same knobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeKnobs {
    /// Sampling interval in seconds (also sets the soak and overhead sample counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_interval_seconds: Option<f64>,
    /// Sink: records per batch handed to the writer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_every_events: Option<u64>,
    /// Sink: seconds before an idle batch is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_every_seconds: Option<f64>,
    /// Sink: roll a segment over at this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollover_max_bytes: Option<u64>,
    /// Sink: roll a segment over at this many records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollover_max_events: Option<u64>,
    /// Sink: keep at most this many segment files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_files: Option<u64>,
    /// Sink: keep at most this many bytes of segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_total_bytes: Option<u64>,
    /// History window of each ring (the TensorFlow tracker's `max_history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_history: Option<u64>,
    /// Overhead measurement: unprofiled/tracked pairs always run (default
    /// [`DEFAULT_OVERHEAD_MIN_PAIRS`], from [`OVERHEAD_MIN_PAIRS_FLOOR`] to
    /// [`OVERHEAD_MAX_PAIRS`]). Not part of the config a baseline must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_min_pairs: Option<u64>,
    /// Overhead measurement: seconds after which no further pair starts once the minimum is
    /// run (default [`DEFAULT_OVERHEAD_MAX_SECONDS`]). Not part of the config a baseline must
    /// match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_max_seconds: Option<f64>,
}

/// Pairs the overhead scenario runs at least, unless `overhead_min_pairs` is set.
pub const DEFAULT_OVERHEAD_MIN_PAIRS: u64 = 10;
/// Fewest pairs accepted: the 95 % signed-rank interval needs 6.
pub const OVERHEAD_MIN_PAIRS_FLOOR: u64 = 6;
/// Most pairs the overhead scenario runs (the exact signed-rank interval's range).
pub const OVERHEAD_MAX_PAIRS: u64 = 200;
/// Seconds after which the overhead scenario starts no further pair (once the minimum is run),
/// unless `overhead_max_seconds` is set.
pub const DEFAULT_OVERHEAD_MAX_SECONDS: f64 = 3.0;
/// The overhead scenario stops adding pairs once the 95 % interval of `runtime_overhead_pct`
/// is at most this many percentage points either side of its estimate (half its width).
pub const OVERHEAD_TARGET_HALF_WIDTH_PCT: f64 = 2.5;

/// Knobs that only change how the overhead is measured, not what runs: a baseline matches a
/// run whatever their values.
pub const MEASUREMENT_KNOBS: [&str; 2] = ["overhead_min_pairs", "overhead_max_seconds"];

/// Knob names in the seed's tuning order: sampling interval, sink flush cadence, rollover
/// size or count, retention limits, history window.
pub const KNOB_ORDER: [&str; 10] = [
    "sampling_interval_seconds",
    "flush_every_events",
    "flush_every_seconds",
    "rollover_max_bytes",
    "rollover_max_events",
    "retention_max_files",
    "retention_max_total_bytes",
    "max_history",
    "overhead_min_pairs",
    "overhead_max_seconds",
];

impl RuntimeKnobs {
    /// Whether no knob is set.
    pub fn is_empty(&self) -> bool {
        *self == RuntimeKnobs::default()
    }

    /// Whether the knob `name` is set.
    pub fn is_set(&self, name: &str) -> bool {
        match name {
            "sampling_interval_seconds" => self.sampling_interval_seconds.is_some(),
            "flush_every_events" => self.flush_every_events.is_some(),
            "flush_every_seconds" => self.flush_every_seconds.is_some(),
            "rollover_max_bytes" => self.rollover_max_bytes.is_some(),
            "rollover_max_events" => self.rollover_max_events.is_some(),
            "retention_max_files" => self.retention_max_files.is_some(),
            "retention_max_total_bytes" => self.retention_max_total_bytes.is_some(),
            "max_history" => self.max_history.is_some(),
            "overhead_min_pairs" => self.overhead_min_pairs.is_some(),
            "overhead_max_seconds" => self.overhead_max_seconds.is_some(),
            _ => false,
        }
    }

    /// Sets knob `name` from its text form; the error says what is wrong with the value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let int = |v: &str| -> Result<u64, String> {
            match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(count_error(format!("'{v}'"))),
            }
        };
        let secs = |v: &str| -> Result<f64, String> {
            match v.trim().parse::<f64>() {
                Ok(x) if seconds_in_range(x) => Ok(x),
                _ => Err(seconds_error(format!("'{v}'"))),
            }
        };
        match name {
            "sampling_interval_seconds" => self.sampling_interval_seconds = Some(secs(value)?),
            "flush_every_events" => self.flush_every_events = Some(int(value)?),
            "flush_every_seconds" => self.flush_every_seconds = Some(secs(value)?),
            "rollover_max_bytes" => self.rollover_max_bytes = Some(int(value)?),
            "rollover_max_events" => self.rollover_max_events = Some(int(value)?),
            "retention_max_files" => self.retention_max_files = Some(int(value)?),
            "retention_max_total_bytes" => self.retention_max_total_bytes = Some(int(value)?),
            "max_history" => self.max_history = Some(int(value)?),
            "overhead_min_pairs" => match value.trim().parse::<u64>() {
                Ok(n) if pairs_in_range(n) => self.overhead_min_pairs = Some(n),
                _ => return Err(pairs_error(format!("'{value}'"))),
            },
            "overhead_max_seconds" => self.overhead_max_seconds = Some(secs(value)?),
            _ => {
                return Err(format!("unknown knob (known: {})", KNOB_ORDER.join(", ")));
            }
        }
        Ok(())
    }

    /// Sampling interval, if set (clamped to the accepted range, so it never panics).
    pub fn sampling_interval(&self) -> Option<Duration> {
        self.sampling_interval_seconds
            .map(|s| Duration::from_secs_f64(s.clamp(MIN_SECONDS_KNOB, MAX_SECONDS_KNOB)))
    }

    /// Checks knobs that arrived already parsed (over the wire) by the rules of [`Self::set`];
    /// the error names the knob.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.overhead_min_pairs
            && !pairs_in_range(n)
        {
            return Err(format!("overhead_min_pairs: {}", pairs_error(n)));
        }
        for (name, seconds) in [
            ("sampling_interval_seconds", self.sampling_interval_seconds),
            ("flush_every_seconds", self.flush_every_seconds),
            ("overhead_max_seconds", self.overhead_max_seconds),
        ] {
            if let Some(x) = seconds
                && !seconds_in_range(x)
            {
                return Err(format!("{name}: {}", seconds_error(x)));
            }
        }
        for (name, count) in [
            ("flush_every_events", self.flush_every_events),
            ("rollover_max_bytes", self.rollover_max_bytes),
            ("rollover_max_events", self.rollover_max_events),
            ("retention_max_files", self.retention_max_files),
            ("retention_max_total_bytes", self.retention_max_total_bytes),
            ("max_history", self.max_history),
        ] {
            if count == Some(0) {
                return Err(format!("{name}: {}", count_error(0)));
            }
        }
        Ok(())
    }

    /// Pairs the overhead scenario runs at least.
    pub fn overhead_min_pairs(&self) -> u64 {
        self.overhead_min_pairs
            .unwrap_or(DEFAULT_OVERHEAD_MIN_PAIRS)
            .clamp(OVERHEAD_MIN_PAIRS_FLOOR, OVERHEAD_MAX_PAIRS)
    }

    /// Time cap of the overhead scenario (clamped to the accepted range, so it never panics).
    pub fn overhead_max_duration(&self) -> Duration {
        Duration::from_secs_f64(
            self.overhead_max_seconds
                .unwrap_or(DEFAULT_OVERHEAD_MAX_SECONDS)
                .clamp(MIN_SECONDS_KNOB, MAX_SECONDS_KNOB),
        )
    }

    /// These knobs without the [`MEASUREMENT_KNOBS`].
    pub fn without_measurement(&self) -> RuntimeKnobs {
        RuntimeKnobs {
            overhead_min_pairs: None,
            overhead_max_seconds: None,
            ..*self
        }
    }
}

fn pairs_in_range(n: u64) -> bool {
    (OVERHEAD_MIN_PAIRS_FLOOR..=OVERHEAD_MAX_PAIRS).contains(&n)
}

fn pairs_error(got: impl std::fmt::Display) -> String {
    format!("must be an integer from {OVERHEAD_MIN_PAIRS_FLOOR} to {OVERHEAD_MAX_PAIRS}, got {got}")
}

/// Shortest seconds knob accepted (1 µs: anything shorter is no interval at all).
pub const MIN_SECONDS_KNOB: f64 = 1e-6;
/// Longest seconds knob accepted (one day, the longest profile).
pub const MAX_SECONDS_KNOB: f64 = 86_400.0;

fn seconds_in_range(x: f64) -> bool {
    x.is_finite() && (MIN_SECONDS_KNOB..=MAX_SECONDS_KNOB).contains(&x)
}

/// What is wrong with seconds knob value `got`.
fn seconds_error(got: impl std::fmt::Display) -> String {
    format!("must be a number of seconds from {MIN_SECONDS_KNOB} to {MAX_SECONDS_KNOB}, got {got}")
}

/// What is wrong with count knob value `got`.
fn count_error(got: impl std::fmt::Display) -> String {
    format!("must be an integer >= 1, got {got}")
}

/// A tuning-knob input could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}: {}: {}",
    crate::input::one_line(.origin),
    crate::input::one_line(.key),
    crate::input::one_line(.message)
)]
pub struct KnobError {
    /// The knobs file, or `--set`.
    pub origin: String,
    /// `<runtime>.<knob>` (or the runtime alone).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Knobs of every runtime, by runtime name.
pub type Knobs = BTreeMap<String, RuntimeKnobs>;

/// Reads a knobs file: a JSON object `{"<runtime>": {"<knob>": value, …}, …}`. Every value
/// is checked; `known_runtimes` are the runtime names this build has.
pub fn parse_knobs_file(
    origin: &str,
    text: &[u8],
    known_runtimes: &[&str],
) -> Result<Knobs, KnobError> {
    let err = |key: &str, message: String| KnobError {
        origin: origin.to_owned(),
        key: key.to_owned(),
        message,
    };
    let value = crate::input::parse_json(text).map_err(|e| err("(file)", e))?;
    let object = value
        .as_object()
        .ok_or_else(|| err("(file)", "must be a JSON object of runtimes".into()))?;
    let mut knobs = Knobs::new();
    for (runtime, entries) in object {
        if !known_runtimes.contains(&runtime.as_str()) {
            return Err(err(
                runtime,
                format!("unknown runtime (known: {})", known_runtimes.join(", ")),
            ));
        }
        let entries = entries
            .as_object()
            .ok_or_else(|| err(runtime, "must be a JSON object of knobs".into()))?;
        let slot = knobs.entry(runtime.clone()).or_default();
        for (name, v) in entries {
            let key = format!("{runtime}.{name}");
            let text = match v {
                serde_json::Value::Number(n) => n.to_string(),
                other => return Err(err(&key, format!("must be a number, got {other}"))),
            };
            slot.set(name, &text).map_err(|m| err(&key, m))?;
        }
    }
    knobs.retain(|_, k| !k.is_empty());
    Ok(knobs)
}

/// Applies one `--set <runtime>.<knob>=<value>` to `knobs`.
pub fn apply_knob_assignment(
    knobs: &mut Knobs,
    assignment: &str,
    known_runtimes: &[&str],
) -> Result<(), KnobError> {
    let err = |key: &str, message: String| KnobError {
        origin: "--set".to_owned(),
        key: key.to_owned(),
        message,
    };
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| err(assignment, "expected <runtime>.<knob>=<value>".into()))?;
    let (runtime, name) = key
        .split_once('.')
        .ok_or_else(|| err(key, "expected <runtime>.<knob>".into()))?;
    if !known_runtimes.contains(&runtime) {
        return Err(err(
            key,
            format!("unknown runtime (known: {})", known_runtimes.join(", ")),
        ));
    }
    knobs
        .entry(runtime.to_owned())
        .or_default()
        .set(name, value)
        .map_err(|m| err(key, m))
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
    /// Profile.
    pub profile: Profile,
    /// Mode.
    pub mode: Mode,
    /// Workload steps.
    pub iterations: u32,
    /// KiB allocated per step.
    pub allocation_kb: u32,
    /// Overhead workload.
    #[serde(default)]
    pub workload: WorkloadKind,
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
    /// Profile.
    pub profile: Profile,
    /// Mode.
    pub mode: Mode,
    /// Workload steps.
    pub iterations: u32,
    /// KiB allocated per step.
    pub allocation_kb: u32,
    /// Overhead workload.
    pub workload: WorkloadKind,
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
            profile: self.profile,
            mode: self.mode,
            iterations: self.iterations,
            allocation_kb: self.allocation_kb,
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

    const KNOWN: [&str; 1] = ["gpumemprof_cpu"];

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
    fn knob_file_and_flags_are_checked_key_by_key() {
        let k = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"sampling_interval_seconds": 0.5, "max_history": 100}}"#,
            &KNOWN,
        )
        .unwrap();
        assert_eq!(k["gpumemprof_cpu"].sampling_interval_seconds, Some(0.5));
        assert_eq!(k["gpumemprof_cpu"].max_history, Some(100));

        let e =
            parse_knobs_file("k.json", br#"{"gpumemprof_cpu": {"nope": 1}}"#, &KNOWN).unwrap_err();
        assert_eq!(e.key, "gpumemprof_cpu.nope");
        assert!(
            e.to_string()
                .starts_with("k.json: gpumemprof_cpu.nope: unknown knob")
        );
        let e = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"flush_every_events": 0}}"#,
            &KNOWN,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.json: gpumemprof_cpu.flush_every_events: must be an integer >= 1, got '0'"
        );
        let e = parse_knobs_file("k.json", br#"{"tf": {}}"#, &KNOWN).unwrap_err();
        assert_eq!(e.key, "tf");
        let e = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"sampling_interval_seconds": "fast"}}"#,
            &KNOWN,
        )
        .unwrap_err();
        assert!(e.message.contains("must be a number"));
        assert!(parse_knobs_file("k.json", b"[", &KNOWN).is_err());

        let mut knobs = k;
        apply_knob_assignment(&mut knobs, "gpumemprof_cpu.rollover_max_events=500", &KNOWN)
            .unwrap();
        assert_eq!(knobs["gpumemprof_cpu"].rollover_max_events, Some(500));
        let e = apply_knob_assignment(
            &mut knobs,
            "gpumemprof_cpu.sampling_interval_seconds=-1",
            &KNOWN,
        )
        .unwrap_err();
        assert_eq!(e.origin, "--set");
        assert!(apply_knob_assignment(&mut knobs, "gpumemprof_cpu", &KNOWN).is_err());
    }

    #[test]
    fn overhead_measurement_knobs_are_checked_and_not_compared_with_a_baseline() {
        let mut k = RuntimeKnobs::default();
        assert_eq!(k.overhead_min_pairs(), DEFAULT_OVERHEAD_MIN_PAIRS);
        assert_eq!(
            k.overhead_max_duration(),
            Duration::from_secs_f64(DEFAULT_OVERHEAD_MAX_SECONDS)
        );
        for bad in ["5", "201", "x"] {
            assert_eq!(
                k.set("overhead_min_pairs", bad).unwrap_err(),
                format!("must be an integer from 6 to 200, got '{bad}'")
            );
        }
        k.set("overhead_min_pairs", "6").unwrap();
        k.set("overhead_max_seconds", "20").unwrap();
        assert_eq!(k.overhead_min_pairs(), 6);
        assert_eq!(k.overhead_max_duration(), Duration::from_secs(20));
        assert!(k.set("overhead_max_seconds", "0").is_err());
        let wire = RuntimeKnobs {
            overhead_min_pairs: Some(2),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            wire.validate().unwrap_err(),
            "overhead_min_pairs: must be an integer from 6 to 200, got 2"
        );
        // A run with only measurement knobs set matches a baseline recorded without them.
        let mut knobs = Knobs::new();
        knobs.insert("gpumemprof_cpu".to_owned(), k);
        let mut tuned = k;
        tuned.max_history = Some(10);
        knobs.insert("tfmemprof_cpu".to_owned(), tuned);
        let config = RunConfig {
            profile: Profile::Pr,
            mode: Mode::All,
            iterations: 1,
            allocation_kb: 1,
            workload: WorkloadKind::Reference,
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
    fn seconds_knobs_must_become_real_durations_and_errors_stay_one_line() {
        let mut k = RuntimeKnobs::default();
        for bad in ["1e30", "1e-10", "inf", "0"] {
            assert_eq!(
                k.set("sampling_interval_seconds", bad).unwrap_err(),
                format!("must be a number of seconds from 0.000001 to 86400, got '{bad}'")
            );
        }
        let wire = RuntimeKnobs {
            flush_every_seconds: Some(1e30),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            wire.validate().unwrap_err(),
            "flush_every_seconds: must be a number of seconds from 0.000001 to 86400, got 1000000000000000000000000000000"
        );
        let e = parse_knobs_file(
            "k.json",
            br#"{"gpumemprof_cpu": {"x\ny": 1}}"#,
            &["gpumemprof_cpu"],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.json: gpumemprof_cpu.x\\ny: unknown knob (known: sampling_interval_seconds, flush_every_events, flush_every_seconds, rollover_max_bytes, rollover_max_events, retention_max_files, retention_max_total_bytes, max_history, overhead_min_pairs, overhead_max_seconds)"
        );
    }
}
