//! The v0.4 harness run: validate everything up front (gate assets, knobs, paths), run one job
//! per runtime, aggregate the sections into the report, gate it, and write it.
//!
//! Validation happens before anything is created on disk: a bad budget, baseline, tolerance
//! or knobs file is [`RunError::InvalidInput`] (exit 5) and the artifact root is not touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use fleetgate_agent::job::{self, JobSpec};
use fleetgate_agent::runtime::RuntimeKind;
use fleetgate_agent::scenario::{Hooks, Progress, ScenarioError};
use fleetgate_common::config::{
    GateMode, Knobs, Mode, Profile, RetentionValidationLimits, RunConfig,
};
use fleetgate_common::gate::{self, Baseline, Budgets, Tolerances};
use fleetgate_common::report::{
    BaselineSnapshot, REPORT_VERSION, Report, RuntimeSection, expected_metric_keys,
    failure_diagnostics, flatten_metrics, format_utc,
};

/// Default budget file (budget gate).
pub const DEFAULT_BUDGETS: &str = "docs/benchmarks/v0.4_operating_budget.json";
/// Default baseline file (regression gate, `pr` profile only).
pub const DEFAULT_BASELINE: &str = "docs/benchmarks/v0.4_baseline.json";
/// Default tolerance file (regression gate, `pr` profile only).
pub const DEFAULT_TOLERANCES: &str = "docs/benchmarks/v0.4_tolerances.json";

/// A run request, as the CLI gives it.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Soak profile.
    pub profile: Profile,
    /// Scenarios.
    pub mode: Mode,
    /// Gate.
    pub gate_mode: GateMode,
    /// Workload steps.
    pub iterations: u32,
    /// KiB per workload step.
    pub allocation_kb: u32,
    /// Runtimes, in run order.
    pub runtimes: Vec<RuntimeKind>,
    /// Budget file (budget gate; default [`DEFAULT_BUDGETS`]).
    pub budgets: Option<PathBuf>,
    /// Baseline file (regression gate).
    pub baseline: Option<PathBuf>,
    /// Tolerance file (regression gate).
    pub tolerances: Option<PathBuf>,
    /// Root of the artifacts.
    pub artifact_root: PathBuf,
    /// RAM-backed root for overhead trial files.
    pub overhead_scratch_root: Option<PathBuf>,
    /// Tuning knobs (already parsed and checked key by key).
    pub knobs: Knobs,
}

/// Why a run did not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A gate asset, knob or config is unusable (exit 5).
    #[error("{0}")]
    InvalidInput(String),
    /// The request itself is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Ctrl+C (exit 130).
    #[error("interrupted")]
    Interrupted,
    /// Anything else: an unwritable artifact root or output (exit 1).
    #[error("{0}")]
    Internal(String),
}

/// The gate, loaded and checked against what the run will produce.
#[derive(Debug, Clone)]
pub enum Gate {
    /// Absolute maxima.
    Budget(Budgets),
    /// Baseline plus tolerances.
    Regression(Baseline, Tolerances),
}

/// A validated run, ready to execute.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The request.
    pub request: RunRequest,
    /// The report's config block.
    pub config: RunConfig,
    /// The gate.
    pub gate: Gate,
}

/// Checks the request and loads the gate assets, before anything runs or is created.
pub fn plan(request: RunRequest) -> Result<RunPlan, RunError> {
    if request.runtimes.is_empty() {
        return Err(RunError::Usage(
            "--runtimes must name at least one runtime".into(),
        ));
    }
    let names: Vec<&str> = request.runtimes.iter().map(|k| k.name()).collect();
    for (runtime, knobs) in &request.knobs {
        let Some(kind) = RuntimeKind::from_name(runtime) else {
            return Err(RunError::InvalidInput(format!(
                "knobs: unknown runtime '{runtime}'"
            )));
        };
        job::tracker_config(kind, knobs)
            .map_err(|m| RunError::InvalidInput(format!("knobs: {m}")))?;
    }
    let retention = RetentionValidationLimits::default();
    let runtimes = request
        .runtimes
        .iter()
        .map(|&kind| {
            let knobs = request.knobs.get(kind.name()).copied().unwrap_or_default();
            (
                kind.name().to_owned(),
                job::runtime_plan(kind, &knobs, request.profile, request.iterations),
            )
        })
        .collect();
    let path_string = |p: &Path| p.display().to_string();
    let mut config = RunConfig {
        profile: request.profile,
        mode: request.mode,
        iterations: request.iterations,
        allocation_kb: request.allocation_kb,
        profile_equivalent_hours: request.profile.hours(),
        runtimes,
        retention_validation: retention,
        knobs: request
            .knobs
            .iter()
            .filter(|(name, k)| names.contains(&name.as_str()) && !k.is_empty())
            .map(|(name, k)| (name.clone(), *k))
            .collect(),
        overhead_scratch_root: request.overhead_scratch_root.as_deref().map(path_string),
        budgets_path: None,
        baseline_path: None,
        tolerances_path: None,
    };
    let expected = expected_metric_keys(names.iter().copied(), request.mode);
    let invalid = |e: gate::AssetError| RunError::InvalidInput(e.to_string());
    let gate = match request.gate_mode {
        GateMode::Budget => {
            let path = request
                .budgets
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_BUDGETS));
            let budgets = gate::load_budgets(&path).map_err(invalid)?;
            budgets.require(&expected).map_err(invalid)?;
            config.budgets_path = Some(path_string(&path));
            Gate::Budget(budgets)
        }
        GateMode::Regression => {
            if request.profile != Profile::Pr
                && (request.baseline.is_none() || request.tolerances.is_none())
            {
                return Err(RunError::Usage(
                    "Regression defaults are only checked in for the pr profile; pass --baseline and --tolerances explicitly for other profiles.".into(),
                ));
            }
            let baseline_path = request
                .baseline
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_BASELINE));
            let tolerances_path = request
                .tolerances
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TOLERANCES));
            let baseline = gate::load_baseline(&baseline_path).map_err(invalid)?;
            let tolerances = gate::load_tolerances(&tolerances_path).map_err(invalid)?;
            baseline
                .require(&expected, &config.comparable())
                .map_err(invalid)?;
            tolerances.require(&expected).map_err(invalid)?;
            config.baseline_path = Some(path_string(&baseline_path));
            config.tolerances_path = Some(path_string(&tolerances_path));
            Gate::Regression(baseline, tolerances)
        }
    };
    Ok(RunPlan {
        request,
        config,
        gate,
    })
}

/// Runs every runtime's job in this process, in order. `progress` gets the runtime and its
/// progress; `cancel` stops the run at the next check.
pub fn run_local(
    plan: &RunPlan,
    progress: &mut dyn FnMut(RuntimeKind, Progress),
    cancel: &AtomicBool,
) -> Result<BTreeMap<String, RuntimeSection>, RunError> {
    let request = &plan.request;
    std::fs::create_dir_all(&request.artifact_root).map_err(|e| {
        RunError::Internal(format!(
            "cannot create artifact root {}: {e}",
            request.artifact_root.display()
        ))
    })?;
    let mut sections = BTreeMap::new();
    for &kind in &request.runtimes {
        let spec = JobSpec {
            runtime: kind,
            profile: request.profile,
            mode: request.mode,
            iterations: request.iterations,
            allocation_kb: request.allocation_kb,
            artifact_root: request.artifact_root.clone(),
            scratch_root: request.overhead_scratch_root.clone(),
            knobs: request.knobs.get(kind.name()).copied().unwrap_or_default(),
            retention: plan.config.retention_validation,
        };
        let mut forward = |p: Progress| progress(kind, p);
        let mut hooks = Hooks::new(&mut forward, cancel);
        let section = job::run_job(&spec, &mut hooks).map_err(|e| match e {
            ScenarioError::Interrupted => RunError::Interrupted,
            other => RunError::Internal(format!("{}: {other}", kind.name())),
        })?;
        sections.insert(kind.name().to_owned(), section);
    }
    Ok(sections)
}

/// Builds the gated report from the runtimes' sections.
pub fn build_report(
    plan: &RunPlan,
    runtimes: BTreeMap<String, RuntimeSection>,
    unix_seconds: u64,
) -> Report {
    let metrics = flatten_metrics(&runtimes);
    let mut report = Report {
        version: REPORT_VERSION.to_owned(),
        timestamp_utc: format_utc(unix_seconds),
        profile: plan.config.profile.name().to_owned(),
        mode: plan.config.mode.name().to_owned(),
        gate_mode: plan.request.gate_mode.name().to_owned(),
        config: plan.config.clone(),
        runtimes,
        metrics,
        budgets: None,
        budget_checks: None,
        baseline: None,
        tolerances: None,
        regression_checks: None,
        failure_diagnostics: Vec::new(),
        passed: false,
    };
    match &plan.gate {
        Gate::Budget(budgets) => {
            report.budget_checks = Some(budgets.check(&report.metrics));
            report.budgets = Some(budgets.budgets.clone());
        }
        Gate::Regression(baseline, tolerances) => {
            report.regression_checks = Some(tolerances.check(baseline, &report.metrics));
            report.baseline = Some(BaselineSnapshot {
                version: baseline.version.clone(),
                config: baseline.config.clone(),
                metrics: baseline.metrics.clone(),
            });
            report.tolerances = Some(tolerances.tolerances.clone());
        }
    }
    report.failure_diagnostics = failure_diagnostics(
        &report.runtimes,
        report.budget_checks.as_ref(),
        report.regression_checks.as_ref(),
        &report.config.knobs,
    );
    let checks_pass = report
        .budget_checks
        .iter()
        .flat_map(|c| c.values().map(|c| c.passed))
        .chain(
            report
                .regression_checks
                .iter()
                .flat_map(|c| c.values().map(|c| c.passed)),
        )
        .all(|p| p);
    report.passed = checks_pass && report.failure_diagnostics.is_empty();
    report
}

/// A regression baseline file recorded from `report`: its comparable config and metrics.
pub fn baseline_document(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "version": REPORT_VERSION,
        "description": format!(
            "Recorded by `fleetgate run --write-baseline` at {} on host {} (profile {}, mode {}).",
            report.timestamp_utc,
            fleetgate_agent::runtime::host_name(),
            report.profile,
            report.mode
        ),
        "config": report.config.comparable(),
        "metrics": report.metrics,
    })
}

/// Checks that a file can be written at `path` (creating its directory), without leaving
/// anything but the directory behind.
pub fn probe_writable(path: &Path) -> Result<(), RunError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail =
        |e: std::io::Error| RunError::Internal(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(parent).map_err(fail)?;
    let probe = parent.join(format!(".fleetgate-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Writes `value` as pretty JSON (with a trailing newline), creating the parent directory.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), RunError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| RunError::Internal(format!("cannot create {}: {e}", parent.display())))?;
    }
    let mut json = serde_json::to_vec_pretty(value)
        .map_err(|e| RunError::Internal(format!("cannot encode {}: {e}", path.display())))?;
    json.push(b'\n');
    std::fs::write(path, json)
        .map_err(|e| RunError::Internal(format!("cannot write {}: {e}", path.display())))
}
