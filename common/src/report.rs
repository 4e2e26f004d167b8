//! The v0.4 report: per-runtime sections produced by jobs, the flattened metrics that gates
//! read, and the verbose failure diagnostics. Keys are emitted in a fixed order (struct field
//! order, maps sorted), so two reports of the same run diff cleanly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Mode, RunConfig};
use crate::knobs::RuntimeKnobs;

/// `version` of every report.
pub const REPORT_VERSION: &str = "v0.4";

/// Overhead metric names, in report order.
pub const OVERHEAD_METRICS: [&str; 3] = [
    "runtime_overhead_pct",
    "cpu_overhead_pct",
    "artifact_growth_bytes",
];

/// Soak metric names, in report order.
pub const SOAK_METRICS: [&str; 11] = [
    "rss_growth_per_24h_equiv",
    "max_rss_delta_bytes",
    "final_retained_bytes",
    "final_retained_files",
    "collector_failure_event_count",
    "history_dropped_events",
    "history_dropped_samples",
    "history_dropped_alerts",
    "rollover_count",
    "pruned_segment_count",
    "pruned_bytes",
];

/// Soak counters that the sink and history make deterministic for a given config: the
/// regression gate checks them in both directions (`|current − baseline| <= tolerance`), since
/// fewer rollovers, pruned segments, retained files or dropped history entries than the baseline
/// mean the run did less work (lost telemetry, or a shortened soak), not that it improved. Every
/// other metric is checked one way: an improvement passes.
pub const TWO_SIDED_METRICS: [&str; 6] = [
    "final_retained_files",
    "history_dropped_events",
    "history_dropped_samples",
    "history_dropped_alerts",
    "rollover_count",
    "pruned_segment_count",
];

/// Whether the regression gate checks `metric` (a bare metric name or a
/// `[<agent>/]<runtime>.<metric>` key) in both directions.
pub fn is_two_sided(metric: &str) -> bool {
    let name = metric.rsplit_once('.').map_or(metric, |(_, m)| m);
    TWO_SIDED_METRICS.contains(&name)
}

/// Whether a runtime ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    /// It ran; its blocks are present.
    Ok,
    /// It could not run on this host (the reason says why).
    Unavailable,
}

/// One scenario's summary (`summary.json` in its directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSummary {
    /// `unprofiled` or `tracked_default`.
    pub name: String,
    /// Wall time of the timed region.
    pub wall_seconds: f64,
    /// Process CPU time of the timed region.
    pub cpu_seconds: f64,
    /// Workload checksum (the same for both scenarios of a trial).
    pub checksum: u64,
    /// Where the scenario's files are.
    pub artifact_dir: String,
    /// Bytes under `artifact_dir`, `summary.json` included.
    pub artifact_size_bytes: u64,
    /// Samples due (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_count: Option<u64>,
    /// Samples emitted (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emitted_samples: Option<u64>,
    /// Records the tracker produced (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_count: Option<u64>,
    /// Collector transitions (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collector_failure_event_count: Option<u64>,
    /// Tracker statistics (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
    /// The sink's manifest (tracked only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
}

/// The overhead metrics of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverheadMetrics {
    /// Signed % of tracked vs unprofiled wall time.
    pub runtime_overhead_pct: f64,
    /// Signed % of tracked vs unprofiled CPU time.
    pub cpu_overhead_pct: f64,
    /// `max(0, tracked dir − unprofiled dir)`.
    pub artifact_growth_bytes: u64,
}

/// The two scenarios of the selected trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverheadScenarios {
    /// The workload alone.
    pub unprofiled: ScenarioSummary,
    /// The workload with the runtime tracking in its default mode.
    pub tracked_default: ScenarioSummary,
}

/// One unprofiled/tracked pair of the overhead scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverheadPair {
    /// Whether the tracked run went first (pairs alternate: AB, BA, AB, …).
    pub tracked_first: bool,
    /// `(tracked − unprofiled wall time) / samples`, in ns.
    pub added_wall_ns_per_sample: f64,
    /// `(tracked − unprofiled CPU time) / samples`, in ns.
    pub added_cpu_ns_per_sample: f64,
    /// Signed % of tracked vs unprofiled wall time.
    pub runtime_overhead_pct: f64,
    /// Signed % of tracked vs unprofiled CPU time.
    pub cpu_overhead_pct: f64,
}

/// Added cost per tracked sample, estimated from the pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AddedCost {
    /// Wall time, ns per sample.
    pub wall: crate::stats::Estimate,
    /// Process CPU time, ns per sample.
    pub cpu: crate::stats::Estimate,
}

/// The overhead metrics' estimates with their 95 % intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OverheadEstimates {
    /// Hodges–Lehmann estimate of the per-pair `runtime_overhead_pct`.
    pub runtime_overhead_pct: crate::stats::Estimate,
    /// Hodges–Lehmann estimate of the per-pair `cpu_overhead_pct`.
    pub cpu_overhead_pct: crate::stats::Estimate,
}

/// The smallest true shift this run's pairs detect with 95 % probability by a one-sided test
/// at 2.5 % (the side of a two-sided 95 % interval), from the pairs' normal-scaled MAD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectableShift {
    /// Wall time, ns per sample.
    pub wall_ns_per_sample: f64,
    /// CPU time, ns per sample.
    pub cpu_ns_per_sample: f64,
    /// `runtime_overhead_pct`, in percentage points.
    pub runtime_overhead_pct: f64,
    /// `cpu_overhead_pct`, in percentage points.
    pub cpu_overhead_pct: f64,
}

/// Why the overhead scenario stopped adding pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairStop {
    /// The `runtime_overhead_pct` interval became narrow enough.
    Precision,
    /// The time cap was reached.
    TimeCap,
    /// The most pairs accepted were run.
    MaxPairs,
}

/// The overhead block of a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverheadBlock {
    /// The representative pair's scenarios (a pair near the estimate: see `docs/harness.md`).
    pub scenarios: OverheadScenarios,
    /// The estimates: `runtime_overhead_pct` and `cpu_overhead_pct` are the Hodges–Lehmann
    /// estimates over the pairs; `artifact_growth_bytes` is the representative pair's
    /// (recomputed from the promoted summaries).
    pub metrics: OverheadMetrics,
    /// Pairs run.
    pub trial_count: u32,
    /// Always 0.5: the representative pair is one near the estimate (kept for readers of the
    /// five-trial format, whose pick was a quantile).
    pub trial_quantile: f64,
    /// 1-based index of the representative pair.
    pub selected_trial: u32,
    /// Every pair's metrics, in pair order.
    pub trial_metrics: Vec<OverheadMetrics>,
    /// Every pair's added cost, in pair order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<OverheadPair>,
    /// Added cost per tracked sample with its 95 % interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_ns_per_sample: Option<AddedCost>,
    /// The overhead metrics with their 95 % intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimates: Option<OverheadEstimates>,
    /// The smallest regression this run detects with 95 % probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectable_shift: Option<DetectableShift>,
    /// Why no more pairs were run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<PairStop>,
    /// Scratch root used for trial files, if any.
    pub scratch_root: Option<String>,
    /// The trials whose telemetry sink dropped records, failed a write or did not complete its
    /// session (the selected one included; absent when none did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telemetry_losses: Vec<TelemetryLoss>,
}

/// What one tracked scenario's telemetry sink lost or could not finish, read from the tracker
/// statistics the agent reports (`stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryLoss {
    /// `soak`, `retention_validation`, or `overhead trial <n>`.
    pub scenario: String,
    /// The sink's directory.
    pub sink_dir: String,
    /// Records written and fsynced.
    pub durable_records: u64,
    /// Records dropped because they could not be written.
    pub dropped_records: u64,
    /// Bytes of those records.
    pub dropped_bytes: u64,
    /// Failed writes, fsyncs, cut-backs, segment deletions and manifest writes.
    pub flush_failures: u64,
    /// How the telemetry session ended (`completed`, `incomplete`, `interrupted`, …).
    pub session_status: String,
    /// The first sink error, `<operation> <path>: <OS error>`.
    pub first_error: Option<String>,
    /// The last sink error.
    pub last_error: Option<String>,
}

impl TelemetryLoss {
    /// The loss recorded in a tracker's `stats`, or None when its sink kept everything and
    /// completed its session (or the statistics carry no session). `sink_dir` is used when the
    /// statistics do not name the sink's directory.
    pub fn from_stats(scenario: &str, stats: &serde_json::Value, sink_dir: &str) -> Option<Self> {
        let count = |key: &str| stats.get(key).and_then(serde_json::Value::as_u64);
        let text = |key: &str| {
            stats
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(|t| crate::input::one_line(t).into_owned())
        };
        let session_status = text("session_status")?;
        let dropped_records = count("sink_dropped_records").unwrap_or(0);
        let flush_failures = count("sink_flush_failures").unwrap_or(0);
        if dropped_records == 0 && flush_failures == 0 && session_status == "completed" {
            return None;
        }
        Some(TelemetryLoss {
            scenario: scenario.to_owned(),
            sink_dir: text("sink_dir").unwrap_or_else(|| sink_dir.to_owned()),
            durable_records: count("sink_durable_records").unwrap_or(0),
            dropped_records,
            dropped_bytes: count("sink_dropped_bytes").unwrap_or(0),
            flush_failures,
            session_status,
            first_error: text("sink_first_error"),
            last_error: text("sink_last_error"),
        })
    }

    /// Whether this loss makes the verdict inconclusive instead of failing the gate: the
    /// session did not complete although nothing was dropped and no write failed (the sink
    /// could not be closed, so what reached the disk is unknown). Dropped records and failed
    /// writes fail the gate.
    pub fn is_inconclusive(&self) -> bool {
        self.dropped_records == 0 && self.flush_failures == 0
    }

    /// What to do about it, for the diagnostic.
    fn advice(&self) -> &'static str {
        if self.scenario.starts_with("overhead") {
            "free space where the overhead trial files are written (the --overhead-scratch-root, else the artifact root --artifact-root)"
        } else if self.scenario == "soak" {
            "free space under the artifact root (--artifact-root) or move it to a larger filesystem, or keep fewer or smaller soak segments (retention_max_files, retention_max_total_bytes) so they fit"
        } else {
            "free space under the artifact root (--artifact-root) or move it to a larger filesystem; the soak's retained segments share it, so keep fewer or smaller ones (retention_max_files, retention_max_total_bytes)"
        }
    }
}

/// The directory of a sink whose manifest is `output_path`.
fn sink_dir_of(output_path: &str) -> String {
    std::path::Path::new(output_path)
        .parent()
        .map_or_else(|| output_path.to_owned(), |p| p.display().to_string())
}

/// Every telemetry loss of a runtime section: its overhead trials, its soak, its retention
/// validation, in that order.
pub fn telemetry_losses(section: &RuntimeSection) -> Vec<TelemetryLoss> {
    let mut losses = Vec::new();
    if let Some(o) = &section.overhead {
        losses.extend(o.telemetry_losses.iter().cloned());
        // The selected trial's own statistics, for reports whose agent did not list its trials.
        let tracked = &o.scenarios.tracked_default;
        let scenario = format!("overhead trial {}", o.selected_trial);
        if let Some(stats) = &tracked.stats
            && !losses.iter().any(|l| l.scenario == scenario)
            && let Some(loss) = TelemetryLoss::from_stats(
                &scenario,
                stats,
                &sink_dir_of(
                    tracked
                        .output_path
                        .as_deref()
                        .unwrap_or(&tracked.artifact_dir),
                ),
            )
        {
            losses.push(loss);
        }
    }
    if let Some(soak) = &section.soak {
        losses.extend(TelemetryLoss::from_stats(
            "soak",
            &soak.stats,
            &sink_dir_of(&soak.output_path),
        ));
        let rv = &soak.retention_validation;
        losses.extend(TelemetryLoss::from_stats(
            "retention_validation",
            &rv.stats,
            &sink_dir_of(&rv.output_path),
        ));
    }
    losses
}

/// Whether any runtime lost telemetry in a way that makes the verdict inconclusive (see
/// [`TelemetryLoss::is_inconclusive`]).
pub fn has_inconclusive_loss(runtimes: &BTreeMap<String, RuntimeSection>) -> bool {
    runtimes
        .values()
        .flat_map(telemetry_losses)
        .any(|l| l.is_inconclusive())
}

/// The diagnostic line of one loss of runtime `name`, with the runtime's context and advice.
fn loss_line(name: &str, loss: &TelemetryLoss, ctx: &str, knobs: Option<&RuntimeKnobs>) -> String {
    let errors = match (&loss.first_error, &loss.last_error) {
        (Some(first), Some(last)) if first != last => {
            format!("first error: {first}; last error: {last}")
        }
        (Some(e), _) | (None, Some(e)) => format!("error: {e}"),
        (None, None) => "no error recorded".to_owned(),
    };
    if loss.is_inconclusive() {
        return format!(
            "{name}: telemetry session of {} ended {} with nothing dropped and no failed write: the sink could not be closed, so what reached {} is unknown ({errors}); the verdict is inconclusive: rerun, and see the agent's log{ctx}; next knob: none (not a tuning problem)",
            loss.scenario, loss.session_status, loss.sink_dir
        );
    }
    let total = loss.durable_records.saturating_add(loss.dropped_records);
    let knob = if loss.scenario.starts_with("overhead") {
        "next knob: none (the trial's telemetry must fit where it is written)".to_owned()
    } else {
        next_knob_advice("telemetry_loss", knobs)
    };
    format!(
        "{name}: telemetry lost in {}: {} of {total} records dropped ({} bytes), {} failed sink writes, session {}; sink {}; {errors}; {}{ctx}; {knob}",
        loss.scenario,
        loss.dropped_records,
        loss.dropped_bytes,
        loss.flush_failures,
        loss.session_status,
        loss.sink_dir,
        loss.advice(),
    )
}

/// The four checks of the forced-churn retention validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionChecks {
    /// `rollover_count > 0`.
    pub rollover_observed: bool,
    /// `pruned_segment_count > 0`.
    pub pruning_observed: bool,
    /// `final_retained_files <= retention_max_files`.
    pub retained_files_bounded: bool,
    /// `final_retained_bytes <= retention_max_total_bytes`.
    pub retained_bytes_bounded: bool,
}

impl RetentionChecks {
    /// The failed checks, by name.
    pub fn failed(&self) -> Vec<&'static str> {
        [
            ("rollover_observed", self.rollover_observed),
            ("pruning_observed", self.pruning_observed),
            ("retained_files_bounded", self.retained_files_bounded),
            ("retained_bytes_bounded", self.retained_bytes_bounded),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
    }
}

/// The retention-validation block of a soak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionValidationBlock {
    /// Most samples it could emit.
    pub sample_limit: u64,
    /// Samples it emitted before both rollover and pruning were seen.
    pub emitted_samples: u64,
    /// Tracker statistics at the end.
    pub stats: serde_json::Value,
    /// The checks.
    pub checks: RetentionChecks,
    /// All checks passed.
    pub passed: bool,
    /// Where its files are.
    pub artifact_dir: String,
    /// The sink's manifest.
    pub output_path: String,
    /// Bytes under `artifact_dir`.
    pub artifact_size_bytes: u64,
}

/// The soak block of a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakBlock {
    /// `<runtime>_soak`.
    pub name: String,
    /// Profile.
    pub profile: String,
    /// Samples emitted.
    pub sample_count: u64,
    /// Samples × interval.
    pub equivalent_seconds: f64,
    /// Equivalent hours.
    pub equivalent_hours: f64,
    /// Wall time of the sample loop and finish.
    pub wall_seconds: f64,
    /// Process CPU time over the same span.
    pub cpu_seconds: f64,
    /// Samples per wall second.
    pub samples_per_second: f64,
    /// Where the soak's files are.
    pub artifact_dir: String,
    /// The sink's manifest.
    pub output_path: String,
    /// Bytes under `artifact_dir`.
    pub artifact_size_bytes: u64,
    /// RSS delta over the measured window, normalised to 24 h of equivalent time.
    pub rss_growth_per_24h_equiv: f64,
    /// Largest RSS increase over the baseline at any checkpoint.
    pub max_rss_delta_bytes: u64,
    /// Samples up to and including the baseline checkpoint.
    pub rss_warmup_sample_count: u64,
    /// Samples after it.
    pub rss_measured_sample_count: u64,
    /// Equivalent seconds after it.
    pub rss_measured_equivalent_seconds: f64,
    /// Checkpoints read.
    pub rss_checkpoint_count: u64,
    /// RSS at the first checkpoint.
    pub rss_baseline_bytes: u64,
    /// RSS at the last checkpoint.
    pub rss_final_bytes: u64,
    /// Final − baseline.
    pub rss_delta_bytes: i64,
    /// RSS after finish.
    pub rss_after_finish_bytes: u64,
    /// After-finish − final (reported, never gated).
    pub finalization_rss_delta_bytes: i64,
    /// Collector transitions.
    pub collector_failure_event_count: u64,
    /// Events evicted from the history window.
    pub history_dropped_events: u64,
    /// Samples evicted.
    pub history_dropped_samples: u64,
    /// Alerts evicted.
    pub history_dropped_alerts: u64,
    /// Sink rollovers.
    pub rollover_count: u64,
    /// Segments pruned.
    pub pruned_segment_count: u64,
    /// Bytes pruned.
    pub pruned_bytes: u64,
    /// Segments retained.
    pub final_retained_files: u64,
    /// Bytes retained.
    pub final_retained_bytes: u64,
    /// Events kept.
    pub history_retained_events: u64,
    /// Samples kept.
    pub history_retained_samples: u64,
    /// Alerts kept.
    pub history_retained_alerts: u64,
    /// Collector health at the end.
    pub collector_health_status: String,
    /// Tracker statistics at the end.
    pub stats: serde_json::Value,
    /// The forced-churn subtest.
    pub retention_validation: RetentionValidationBlock,
}

/// One runtime's section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSection {
    /// Whether it ran.
    pub status: RuntimeStatus,
    /// Why it could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Effective sampling interval in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_interval: Option<f64>,
    /// Overhead block (modes `overhead` and `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead: Option<OverheadBlock>,
    /// Soak block (modes `soak` and `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakBlock>,
}

impl RuntimeSection {
    /// A runtime that could not run, and why.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        RuntimeSection {
            status: RuntimeStatus::Unavailable,
            reason: Some(reason.into()),
            default_interval: None,
            overhead: None,
            soak: None,
        }
    }
}

/// One budget check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheck {
    /// Measured value.
    pub value: f64,
    /// The budget.
    pub max_allowed: f64,
    /// The budget file key that applied (agent, hardware class, or plain runtime key).
    pub threshold_key: String,
    /// Without an interval `value <= max_allowed`; with one, its upper bound `hi <=
    /// max_allowed` (the budget is shown to hold).
    pub passed: bool,
    /// Lower bound of the value's 95 % interval (measured metrics such as the overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lo: Option<f64>,
    /// Upper bound of the value's 95 % interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hi: Option<f64>,
    /// The interval straddles the budget (`lo <= max_allowed < hi`): neither shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
}

impl BudgetCheck {
    /// `PASS`, `FAIL` or `INCONCLUSIVE`.
    pub fn outcome(&self) -> &'static str {
        outcome(self.passed, self.inconclusive)
    }

    /// ` 95% [lo, hi]` when the value has an interval, else nothing.
    pub fn interval_note(&self, metric: &str) -> String {
        interval_note(metric, self.lo, self.hi)
    }
}

fn outcome(passed: bool, inconclusive: bool) -> &'static str {
    match (passed, inconclusive) {
        (true, _) => "PASS",
        (false, true) => "INCONCLUSIVE",
        (false, false) => "FAIL",
    }
}

fn interval_note(metric: &str, lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!(
            " 95% [{}, {}]",
            format_value(metric, lo),
            format_value(metric, hi)
        ),
        _ => String::new(),
    }
}

/// One regression check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionCheck {
    /// Measured value.
    pub current_value: f64,
    /// Baseline value.
    pub baseline_value: f64,
    /// `current − baseline`.
    pub delta: f64,
    /// Allowed increase.
    pub max_regression: f64,
    /// The tolerance file key that applied (agent, hardware class, or plain runtime key).
    pub threshold_key: String,
    /// `delta <= max_regression`, and for a two-sided check also `delta >= −max_regression`.
    pub passed: bool,
    /// Whether the check is two-sided (see [`TWO_SIDED_METRICS`]): it then also fails when
    /// `delta < −max_regression`.
    #[serde(default)]
    pub two_sided: bool,
    /// Lower bound of the 95 % interval of `delta` (measured metrics such as the overhead:
    /// the current value's interval minus the baseline). With an interval the check is the
    /// dual criterion: it fails when `delta_lo > 0` and `delta > max_regression`, passes
    /// when `delta_hi <= max_regression`, and is otherwise inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_lo: Option<f64>,
    /// Upper bound of the 95 % interval of `delta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_hi: Option<f64>,
    /// Neither a material regression nor its absence is shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
}

impl RegressionCheck {
    /// `PASS`, `FAIL` or `INCONCLUSIVE`.
    pub fn outcome(&self) -> &'static str {
        outcome(self.passed, self.inconclusive)
    }

    /// ` 95% [lo, hi]` of the delta when it has an interval, else nothing.
    pub fn interval_note(&self, metric: &str) -> String {
        interval_note(metric, self.delta_lo, self.delta_hi)
    }
}

/// The baseline as recorded in a regression report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineSnapshot {
    /// Baseline file version.
    pub version: String,
    /// Its (matching) config.
    pub config: crate::config::ComparableConfig,
    /// Its metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// The v0.4 report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `v0.4`.
    pub version: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub timestamp_utc: String,
    /// Profile name.
    pub profile: String,
    /// Mode name.
    pub mode: String,
    /// Gate mode name.
    pub gate_mode: String,
    /// What ran.
    pub config: RunConfig,
    /// Per runtime, by name.
    pub runtimes: BTreeMap<String, RuntimeSection>,
    /// Flattened `<runtime>.<metric>` values that the gate reads.
    pub metrics: BTreeMap<String, f64>,
    /// The 95 % intervals of the measured metrics among them (the overhead percentages): the
    /// gates decide these by their bounds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_intervals: BTreeMap<String, crate::stats::Interval>,
    /// What the gate can resolve: per gated overhead metric, the smallest regression this
    /// run detects with 95 % probability, and a line wherever a budget or tolerance is tighter
    /// than that. Advice only: it does not change the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_power: Vec<String>,
    /// Budgets (budget gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budgets: Option<BTreeMap<String, f64>>,
    /// Budget checks (budget gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_checks: Option<BTreeMap<String, BudgetCheck>>,
    /// Baseline (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineSnapshot>,
    /// Tolerances (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerances: Option<BTreeMap<String, f64>>,
    /// Regression checks (regression gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression_checks: Option<BTreeMap<String, RegressionCheck>>,
    /// Everything that failed, with context and the knob to adjust next.
    pub failure_diagnostics: Vec<String>,
    /// Every check passed and no diagnostic was raised.
    pub passed: bool,
    /// `pass`, `fail`, or `inconclusive` (an agent lost, timed out or failed, a required
    /// runtime unavailable, or a telemetry session that could not be closed: never a silent
    /// pass).
    pub verdict: crate::fleet::Verdict,
    /// Per agent: facts, hardware class, labels, how its part ended, its jobs.
    pub agents: BTreeMap<String, crate::fleet::AgentSection>,
    /// Per hardware class: its agents, and the worst and median of every metric.
    pub hardware_classes: BTreeMap<String, crate::fleet::ClassSummary>,
}

/// The metric keys a run of `runtimes` in `mode` produces (what every gate file must cover).
pub fn expected_metric_keys<'a>(
    runtimes: impl IntoIterator<Item = &'a str>,
    mode: Mode,
) -> Vec<String> {
    let mut keys = Vec::new();
    for runtime in runtimes {
        if mode.runs_overhead() {
            keys.extend(OVERHEAD_METRICS.iter().map(|m| format!("{runtime}.{m}")));
        }
        if mode.runs_soak() {
            keys.extend(SOAK_METRICS.iter().map(|m| format!("{runtime}.{m}")));
        }
    }
    keys
}

/// Flattens the sections of runtimes with status ok into `<runtime>.<metric>` values.
pub fn flatten_metrics(runtimes: &BTreeMap<String, RuntimeSection>) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    for (name, section) in runtimes {
        if section.status != RuntimeStatus::Ok {
            continue;
        }
        if let Some(o) = &section.overhead {
            let m = &o.metrics;
            metrics.insert(
                format!("{name}.runtime_overhead_pct"),
                m.runtime_overhead_pct,
            );
            metrics.insert(format!("{name}.cpu_overhead_pct"), m.cpu_overhead_pct);
            metrics.insert(
                format!("{name}.artifact_growth_bytes"),
                m.artifact_growth_bytes as f64,
            );
        }
        if let Some(s) = &section.soak {
            let values = [
                s.rss_growth_per_24h_equiv,
                s.max_rss_delta_bytes as f64,
                s.final_retained_bytes as f64,
                s.final_retained_files as f64,
                s.collector_failure_event_count as f64,
                s.history_dropped_events as f64,
                s.history_dropped_samples as f64,
                s.history_dropped_alerts as f64,
                s.rollover_count as f64,
                s.pruned_segment_count as f64,
                s.pruned_bytes as f64,
            ];
            for (metric, value) in SOAK_METRICS.iter().zip(values) {
                metrics.insert(format!("{name}.{metric}"), value);
            }
        }
    }
    metrics
}

/// The 95 % intervals of the flattened metrics that have one (the overhead percentages of
/// runtimes with status ok), keyed like [`flatten_metrics`].
pub fn flatten_intervals(
    runtimes: &BTreeMap<String, RuntimeSection>,
) -> BTreeMap<String, crate::stats::Interval> {
    let mut intervals = BTreeMap::new();
    for (name, section) in runtimes {
        if section.status != RuntimeStatus::Ok {
            continue;
        }
        if let Some(e) = section.overhead.as_ref().and_then(|o| o.estimates.as_ref()) {
            intervals.insert(
                format!("{name}.runtime_overhead_pct"),
                e.runtime_overhead_pct.interval(),
            );
            intervals.insert(
                format!("{name}.cpu_overhead_pct"),
                e.cpu_overhead_pct.interval(),
            );
        }
    }
    intervals
}

/// What resolves an inconclusive overhead check.
const RESOLVE_ADVICE: &str = "more pairs (knob overhead_min_pairs, or overhead_max_seconds), the overhead trial files on a RAM scratch root (--overhead-scratch-root), or a quieter host";

/// One line per gated overhead metric: the smallest shift this run detects with 95 %
/// probability, in percentage points and ns per sample, and whether the budget's headroom or
/// the tolerance is tighter than that (with what would resolve it).
pub fn gate_power_lines(
    runtimes: &BTreeMap<String, RuntimeSection>,
    budget_checks: Option<&BTreeMap<String, BudgetCheck>>,
    regression_checks: Option<&BTreeMap<String, RegressionCheck>>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, section) in runtimes {
        let Some(o) = section.overhead.as_ref() else {
            continue;
        };
        let Some(d) = o.detectable_shift else {
            continue;
        };
        for (metric, pct, ns) in [
            (
                "runtime_overhead_pct",
                d.runtime_overhead_pct,
                d.wall_ns_per_sample,
            ),
            ("cpu_overhead_pct", d.cpu_overhead_pct, d.cpu_ns_per_sample),
        ] {
            let key = format!("{name}.{metric}");
            let what = if let Some(c) = budget_checks.and_then(|c| c.get(&key)) {
                Some(("budget headroom", c.max_allowed - c.value))
            } else {
                regression_checks
                    .and_then(|c| c.get(&key))
                    .map(|c| ("tolerance", c.max_regression))
            };
            let Some((threshold_name, threshold)) = what else {
                continue;
            };
            let head = format!(
                "{key}: {} pairs detect a shift of {} ({ns:.0} ns per sample) with 95% power",
                o.trial_count,
                format_value(metric, pct)
            );
            if threshold_name == "budget headroom" && threshold < 0.0 {
                lines.push(format!(
                    "{head}; the estimate is beyond the budget by {}",
                    format_value(metric, -threshold)
                ));
            } else if threshold < pct {
                lines.push(format!(
                    "{head}; the {threshold_name} of {} is tighter than that: resolve with {RESOLVE_ADVICE}",
                    format_value(metric, threshold)
                ));
            } else {
                lines.push(format!(
                    "{head}; the {threshold_name} is {}",
                    format_value(metric, threshold)
                ));
            }
        }
    }
    lines
}

/// One line per inconclusive check: its interval, the threshold it straddles, and what
/// would resolve it.
pub fn inconclusive_diagnostics(
    budget_checks: Option<&BTreeMap<String, BudgetCheck>>,
    regression_checks: Option<&BTreeMap<String, RegressionCheck>>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (metric, c) in budget_checks.into_iter().flatten() {
        if c.inconclusive {
            lines.push(format!(
                "{metric}: inconclusive: {}{} straddles the budget {}; next knob: none (not a tuning problem: resolve with {RESOLVE_ADVICE})",
                format_value(metric, c.value),
                c.interval_note(metric),
                format_value(metric, c.max_allowed),
            ));
        }
    }
    for (metric, c) in regression_checks.into_iter().flatten() {
        if c.inconclusive {
            lines.push(format!(
                "{metric}: inconclusive: delta {}{} is neither shown within the tolerance {} nor shown beyond it; next knob: none (not a tuning problem: resolve with {RESOLVE_ADVICE})",
                format_value(metric, c.delta),
                c.interval_note(metric),
                format_value(metric, c.max_regression),
            ));
        }
    }
    lines
}

/// The diagnostic's closing advice: the first knob (in the knob table's order) that acts on
/// the metric and that this run has not already changed.
pub fn next_knob_advice(metric: &str, knobs: Option<&RuntimeKnobs>) -> String {
    let relevant = crate::knobs::acting_on(metric);
    let untouched = relevant
        .iter()
        .find(|k| !knobs.is_some_and(|set| k.get(set).is_some()));
    match (untouched, relevant.first()) {
        (Some(knob), _) => format!("next knob: {}", knob.name),
        (None, Some(_)) => format!(
            "next knob: none left (already tuned: {})",
            relevant
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, None) => "next knob: none (not a tuning problem)".to_owned(),
    }
}

/// A metric value as the console and diagnostics print it: `_pct` metrics with two decimals
/// and `%`, everything else as a whole number.
pub fn format_value(metric: &str, value: f64) -> String {
    if metric.ends_with("_pct") {
        format!("{value:.2}%")
    } else {
        format!("{value:.0}")
    }
}

/// `; collector=…, collector_failures=…, rollover_count=…, …` for a runtime.
fn context(section: &RuntimeSection) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &section.soak {
        parts.push(format!("collector={}", s.collector_health_status));
        parts.push(format!(
            "collector_failures={}",
            s.collector_failure_event_count
        ));
        for (k, v) in [
            ("rollover_count", s.rollover_count),
            ("pruned_segment_count", s.pruned_segment_count),
            ("pruned_bytes", s.pruned_bytes),
            ("final_retained_files", s.final_retained_files),
            ("final_retained_bytes", s.final_retained_bytes),
            ("history_retained_events", s.history_retained_events),
            ("history_dropped_events", s.history_dropped_events),
            ("history_retained_samples", s.history_retained_samples),
            ("history_dropped_samples", s.history_dropped_samples),
            ("history_retained_alerts", s.history_retained_alerts),
            ("history_dropped_alerts", s.history_dropped_alerts),
        ] {
            parts.push(format!("{k}={v}"));
        }
    } else if let Some(stats) = section
        .overhead
        .as_ref()
        .and_then(|o| o.scenarios.tracked_default.stats.as_ref())
    {
        let status = stats["collector_health_status"]
            .as_str()
            .unwrap_or("healthy");
        parts.push(format!("collector={status}"));
        parts.push(format!(
            "collector_failures={}",
            stats["collector_failure_event_count"].as_u64().unwrap_or(0)
        ));
        for k in [
            "rollover_count",
            "pruned_segment_count",
            "pruned_bytes",
            "final_retained_files",
            "final_retained_bytes",
            "history_retained_events",
            "history_dropped_events",
            "history_retained_samples",
            "history_dropped_samples",
            "history_retained_alerts",
            "history_dropped_alerts",
        ] {
            if let Some(v) = stats[k].as_u64() {
                parts.push(format!("{k}={v}"));
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

/// Builds the failure diagnostics: runtime problems first (unavailable, lost telemetry,
/// collector failures, failed retention checks, unhealthy collector), then failed budget
/// checks, then failed regression checks (a two-sided counter below its baseline says so). Each line carries the runtime's collector, sink and history context
/// and ends with the knob to adjust next.
pub fn failure_diagnostics(
    runtimes: &BTreeMap<String, RuntimeSection>,
    budget_checks: Option<&BTreeMap<String, BudgetCheck>>,
    regression_checks: Option<&BTreeMap<String, RegressionCheck>>,
    knobs: &crate::knobs::Knobs,
) -> Vec<String> {
    // Runtime names may carry an agent (`<agent>/<runtime>`); knobs are per runtime.
    let plain =
        |name: &str| crate::fleet::strip_instance(name.rsplit_once('/').map_or(name, |(_, rt)| rt));
    let mut lines = Vec::new();
    for (name, section) in runtimes {
        let knobs = knobs.get(&plain(name));
        if section.status != RuntimeStatus::Ok {
            lines.push(format!(
                "{name}: unavailable - {}; next knob: none (the runtime must be installed or enabled on this host)",
                section.reason.as_deref().unwrap_or("unknown")
            ));
            continue;
        }
        let ctx = context(section);
        let losses = telemetry_losses(section);
        for loss in &losses {
            lines.push(loss_line(name, loss, &ctx, knobs));
        }
        let Some(soak) = &section.soak else { continue };
        if soak.collector_failure_event_count > 0 {
            lines.push(format!(
                "{name}: collector failures observed ({}){ctx}; {}",
                soak.collector_failure_event_count,
                next_knob_advice("collector_failure_event_count", knobs)
            ));
        }
        let validation_lost = losses.iter().any(|l| l.scenario == "retention_validation");
        for check in soak.retention_validation.checks.failed() {
            let why = if validation_lost {
                "its sink lost telemetry, as the retention_validation line above says"
            } else {
                "forced-churn limits are fixed; the sink did not honour them"
            };
            lines.push(format!(
                "{name}: retention validation failed for {check}{ctx}; next knob: none ({why})"
            ));
        }
        if soak.collector_health_status != "healthy" {
            lines.push(format!(
                "{name}: collector health is {}{ctx}; {}",
                soak.collector_health_status,
                next_knob_advice("collector_health", knobs)
            ));
        }
    }
    // `[<agent>/]<runtime>.<metric>`: agent ids may hold dots, runtime and metric names do not.
    let runtime_of = |metric: &str| {
        metric
            .rsplit_once('.')
            .map_or(metric, |(rt, _)| rt)
            .to_owned()
    };
    let metric_of = |metric: &str| {
        metric
            .rsplit_once('.')
            .map_or(metric, |(_, m)| m)
            .to_owned()
    };
    let ctx_of = |metric: &str| {
        runtimes
            .get(&runtime_of(metric))
            .map(context)
            .unwrap_or_default()
    };
    for (metric, check) in budget_checks.into_iter().flatten() {
        if !check.passed && !check.inconclusive {
            lines.push(format!(
                "{metric}: {}{} > {}{}; {}",
                format_value(metric, check.value),
                check.interval_note(metric),
                format_value(metric, check.max_allowed),
                ctx_of(metric),
                next_knob_advice(&metric_of(metric), knobs.get(&plain(&runtime_of(metric))))
            ));
        }
    }
    for (metric, check) in regression_checks.into_iter().flatten() {
        if !check.passed && check.two_sided && check.delta < -check.max_regression {
            lines.push(format!(
                "{metric}: delta {} < -{}: current {} is below the baseline {}; this counter is deterministic, so less work than the baseline is not an improvement: the run lost telemetry or did not run its full length{}; next knob: none (find what cut the run short; if the change is intended, record a new baseline with --write-baseline)",
                format_value(metric, check.delta),
                format_value(metric, check.max_regression),
                format_value(metric, check.current_value),
                format_value(metric, check.baseline_value),
                ctx_of(metric),
            ));
        } else if !check.passed && !check.inconclusive {
            lines.push(format!(
                "{metric}: delta {}{} > {}{}; {}",
                format_value(metric, check.delta),
                check.interval_note(metric),
                format_value(metric, check.max_regression),
                ctx_of(metric),
                next_knob_advice(&metric_of(metric), knobs.get(&plain(&runtime_of(metric))))
            ));
        }
    }
    lines
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds.
pub fn format_utc(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    // Civil-from-days (proleptic Gregorian), valid for every date after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_812_000), "2026-11-27T20:40:00Z");
    }

    #[test]
    fn expected_keys_follow_the_mode() {
        assert_eq!(expected_metric_keys(["a"], Mode::All).len(), 14);
        assert_eq!(expected_metric_keys(["a", "b"], Mode::All).len(), 28);
        assert_eq!(
            expected_metric_keys(["a"], Mode::Overhead),
            [
                "a.runtime_overhead_pct",
                "a.cpu_overhead_pct",
                "a.artifact_growth_bytes"
            ]
        );
        assert_eq!(expected_metric_keys(["a"], Mode::Soak).len(), 11);
    }

    fn stats(dropped: u64, failures: u64, status: &str) -> serde_json::Value {
        serde_json::json!({
            "sink_flush_failures": failures,
            "sink_dropped_records": dropped,
            "sink_last_error": (failures > 0).then_some("write /art/sink/segment-000003.jsonl: No space left on device (os error 28)"),
            "session_id": "s",
            "session_status": status,
            "sink_dir": "/art/sink",
            "sink_durable_records": 1_000,
            "sink_dropped_bytes": dropped * 500,
            "sink_first_error": (failures > 0).then_some("write /art/sink/segment-000002.jsonl: No space left on device (os error 28)"),
        })
    }

    #[test]
    fn a_loss_is_any_dropped_record_failed_write_or_unfinished_session() {
        let loss = |d, f, s| TelemetryLoss::from_stats("soak", &stats(d, f, s), "/fallback");
        assert_eq!(loss(0, 0, "completed"), None);
        let dropped = loss(1, 1, "incomplete").unwrap();
        assert_eq!(
            (
                dropped.dropped_records,
                dropped.flush_failures,
                dropped.is_inconclusive()
            ),
            (1, 1, false)
        );
        assert_eq!(dropped.sink_dir, "/art/sink");
        // A failed write that was retried loses nothing, and still fails the gate.
        let retried = loss(0, 1, "completed").unwrap();
        assert!(!retried.is_inconclusive());
        // A session that could not be closed, with nothing dropped: inconclusive.
        for status in ["incomplete", "interrupted", "running"] {
            assert!(loss(0, 0, status).unwrap().is_inconclusive(), "{status}");
        }
        // Statistics without the new keys still name a directory.
        let mut old = stats(3, 2, "incomplete");
        old.as_object_mut().unwrap().remove("sink_dir");
        let loss = TelemetryLoss::from_stats("soak", &old, "/fallback").unwrap();
        assert_eq!(loss.sink_dir, "/fallback");
        // No session at all (no sink): nothing to judge.
        assert_eq!(
            TelemetryLoss::from_stats("soak", &serde_json::json!({}), "/x"),
            None
        );
    }

    #[test]
    fn a_loss_line_says_what_where_and_what_to_do() {
        let loss =
            TelemetryLoss::from_stats("soak", &stats(195_452, 7, "incomplete"), "/x").unwrap();
        let line = loss_line("a1/gpumemprof_cpu", &loss, "; ctx", None);
        assert_eq!(
            line,
            "a1/gpumemprof_cpu: telemetry lost in soak: 195452 of 196452 records dropped \
             (97726000 bytes), 7 failed sink writes, session incomplete; sink /art/sink; \
             first error: write /art/sink/segment-000002.jsonl: No space left on device (os error 28); \
             last error: write /art/sink/segment-000003.jsonl: No space left on device (os error 28); \
             free space under the artifact root (--artifact-root) or move it to a larger filesystem, \
             or keep fewer or smaller soak segments (retention_max_files, retention_max_total_bytes) \
             so they fit; ctx; next knob: retention_max_files"
        );
        let tuned = RuntimeKnobs {
            retention_max_files: Some(2),
            ..RuntimeKnobs::default()
        };
        assert!(
            loss_line("r", &loss, "", Some(&tuned))
                .ends_with("next knob: retention_max_total_bytes")
        );
        let trial =
            TelemetryLoss::from_stats("overhead trial 2", &stats(0, 1, "completed"), "/x").unwrap();
        let line = loss_line("r", &trial, "", None);
        assert!(
            line.contains("telemetry lost in overhead trial 2: 0 of 1000 records dropped"),
            "{line}"
        );
        assert!(line.contains("--overhead-scratch-root"), "{line}");
        let open = TelemetryLoss::from_stats("soak", &stats(0, 0, "incomplete"), "/x").unwrap();
        let line = loss_line("r", &open, "", None);
        assert!(
            line.starts_with("r: telemetry session of soak ended incomplete with nothing dropped and no failed write"),
            "{line}"
        );
        assert!(line.contains("the verdict is inconclusive"), "{line}");
    }

    #[test]
    fn knob_advice_follows_the_tuning_order_and_skips_tuned_knobs() {
        assert_eq!(
            next_knob_advice("runtime_overhead_pct", None),
            "next knob: sampling_interval_seconds"
        );
        let tuned = RuntimeKnobs {
            sampling_interval_seconds: Some(0.5),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            next_knob_advice("runtime_overhead_pct", Some(&tuned)),
            "next knob: flush_every_events"
        );
        assert_eq!(
            next_knob_advice("final_retained_bytes", Some(&tuned)),
            "next knob: rollover_max_bytes"
        );
        assert!(next_knob_advice("unknown", None).contains("none"));
    }
}
