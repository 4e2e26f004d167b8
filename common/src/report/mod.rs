//! The v0.4 report: the per-runtime sections jobs produce, the flattened metrics the gates
//! read, the failure diagnostics, and the fleet report with the agents' sections, the
//! per-class summary and the verdict.
//!
//! Everything is re-exported here. `model` (the serde model), `fleet` (the agents' sections)
//! and `metrics` (metric names, flattened values, formatting) depend on no gate; the gates of
//! [`crate::gate`] check their metrics; `significance` corrects the regression checks for
//! their number; `diagnostics` and `verdict` (the fleet report's assembly, with the quorum of
//! each hardware class and its outliers) build on the gates; `encoded` keeps a finished
//! report's JSON compressed.

pub(crate) mod diagnostics;
pub(crate) mod encoded;
pub(crate) mod fleet;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod significance;
pub(crate) mod verdict;

pub use diagnostics::{
    failure_diagnostics, gate_power_lines, has_inconclusive_loss, inconclusive_diagnostics,
    next_knob_advice, telemetry_losses,
};
pub use encoded::{EncodedReport, ReportReader};
pub use fleet::{
    AgentSection, AgentStatus, ClassSummary, JobStatus, JobSummary, MetricSpread, Outlier,
};
pub use metrics::{
    OVERHEAD_METRICS, SOAK_METRICS, TWO_SIDED_METRICS, expected_metric_keys, flatten_intervals,
    flatten_metrics, format_value, is_two_sided,
};
pub use model::{
    AddedCost, BaselineSnapshot, BudgetCheck, DetectableShift, Generator, OverheadBlock,
    OverheadEstimates, OverheadMetrics, OverheadPair, OverheadScenarios, PairStop, REPORT_VERSION,
    RegressionCheck, Report, RetentionChecks, RetentionValidationBlock, RssCheckpoint, RssTrend,
    RuntimeSection, RuntimeStatus, ScenarioSummary, SoakBlock, TelemetryLoss, TrackerStats,
    Verdict,
};
pub use significance::{
    REGRESSION_ALPHA, Z_975, adjust_regression_checks, format_p, normal_cdf, one_sided_p,
};
pub use verdict::{
    AgentIds, AgentRecord, JobRecord, OUTLIER_MIN_AGENTS, OUTLIER_Z, baseline_document,
    build_fleet_report, build_report, class_summaries, format_utc,
};
