//! A run: what the CLI asks for ([`RunSpec`]), and its validated form ([`RunPlan`]) with the
//! report's config block and the loaded gate. Validation happens twice — in the CLI, before
//! anything is sent, and in the coordinator, before any job is dispatched — and never after a
//! job has run.

use fleetgate_common::config::{
    GateMode, Profile, RetentionValidationLimits, RunConfig, WorkloadKind,
};
use fleetgate_common::gate::{self, ClassOf, Gate};
use fleetgate_common::job::JobSpec;
use fleetgate_common::report::expected_metric_keys;
use fleetgate_common::run::{Asset, RunSpec};
use fleetgate_common::runtime::RuntimeKind;

/// The shipped budget file, whose copy is built into the binary (budget gate default).
pub const DEFAULT_BUDGETS: &str = "docs/benchmarks/v0.4_operating_budget.json";
/// The shipped baseline file, built in (regression gate default, `pr` profile only).
pub const DEFAULT_BASELINE: &str = "docs/benchmarks/v0.4_baseline.json";
/// The shipped tolerance file, built in (regression gate default, `pr` profile only).
pub const DEFAULT_TOLERANCES: &str = "docs/benchmarks/v0.4_tolerances.json";

/// The built-in copy of [`DEFAULT_BUDGETS`].
pub const EMBEDDED_BUDGETS: &[u8] =
    include_bytes!("../../docs/benchmarks/v0.4_operating_budget.json");
/// The built-in copy of [`DEFAULT_BASELINE`].
pub const EMBEDDED_BASELINE: &[u8] = include_bytes!("../../docs/benchmarks/v0.4_baseline.json");
/// The built-in copy of [`DEFAULT_TOLERANCES`].
pub const EMBEDDED_TOLERANCES: &[u8] = include_bytes!("../../docs/benchmarks/v0.4_tolerances.json");

/// The usage error for regression defaults outside the `pr` profile.
pub const REGRESSION_DEFAULTS_PR_ONLY: &str = "Regression defaults are only checked in for the pr profile; pass --baseline and --tolerances explicitly for other profiles.";

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let digest = sha2::Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        write!(hex, "{byte:02x}").ok();
    }
    hex
}

/// Why a run did not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A gate asset, knob or selection is unusable (exit 5).
    #[error("{0}")]
    InvalidInput(String),
    /// The request itself is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Ctrl+C (exit 130).
    #[error("interrupted")]
    Interrupted,
    /// The coordinator could not be reached, or went away before the report (exit 7).
    #[error("{0}")]
    Unreachable(String),
    /// The run cannot qualify the fleet it asked for (too few matching agents: exit 6).
    #[error("{0}")]
    Inconclusive(String),
    /// Anything else: an unwritable artifact root or output (exit 1).
    #[error("{0}")]
    Internal(String),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        use fleetgate_common::exit;
        match self {
            RunError::InvalidInput(_) => exit::INVALID_INPUT,
            RunError::Usage(_) => exit::USAGE,
            RunError::Interrupted => exit::INTERRUPTED,
            RunError::Unreachable(_) => exit::COORDINATOR_UNREACHABLE,
            RunError::Inconclusive(_) => exit::INCONCLUSIVE,
            RunError::Internal(_) => exit::ERROR,
        }
    }
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The request.
    pub spec: RunSpec,
    /// The report's config block.
    pub config: RunConfig,
    /// The gate.
    pub gate: Gate,
}

/// Validates everything that does not depend on which agents run: runtimes, knobs, the gate
/// assets, and (regression) the baseline's config.
pub fn plan(spec: RunSpec) -> Result<RunPlan, RunError> {
    if spec.runtimes.is_empty() {
        return Err(RunError::Usage(
            "--runtimes must name at least one runtime".into(),
        ));
    }
    let mut kinds = Vec::new();
    for name in &spec.runtimes {
        let kind = RuntimeKind::parse(name).map_err(|e| RunError::Usage(e.to_string()))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if spec.workload.kind == WorkloadKind::Tensorflow && !kinds.iter().any(|k| k.uses_tensorflow())
    {
        return Err(RunError::Usage(
            "--workload tensorflow needs a TensorFlow runtime (tfmemprof_cpu, tfmemprof_gpu) in --runtimes".into(),
        ));
    }
    for (runtime, knobs) in &spec.knobs {
        let Some(kind) = RuntimeKind::from_name(runtime) else {
            return Err(RunError::InvalidInput(format!(
                "knobs: unknown runtime '{runtime}'"
            )));
        };
        knobs
            .check()
            .map_err(|e| RunError::InvalidInput(format!("knobs: {kind}.{e}")))?;
    }
    let runtimes = kinds
        .iter()
        .map(|&kind| {
            let knobs = spec.knobs.get(kind.name()).copied().unwrap_or_default();
            (
                kind.name().to_owned(),
                kind.plan(&knobs, spec.workload.profile, spec.workload.iterations),
            )
        })
        .collect();
    let mut config = RunConfig {
        workload: spec.workload,
        profile_equivalent_hours: spec.workload.profile.hours(),
        runtimes,
        retention_validation: RetentionValidationLimits::default(),
        knobs: spec
            .knobs
            .iter()
            .filter(|(name, k)| {
                kinds.iter().any(|kind| kind.name() == name.as_str()) && !k.is_empty()
            })
            .map(|(name, k)| (name.clone(), *k))
            .collect(),
        overhead_scratch_root: spec.overhead_scratch_root.clone(),
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
    let invalid = |e: gate::AssetError| RunError::InvalidInput(e.to_string());
    // What the report records of an asset: its path, where it came from, its SHA-256.
    let provenance = |a: &Asset| {
        (
            Some(a.name.clone()),
            Some(a.source),
            Some(sha256_hex(&a.bytes)),
        )
    };
    let gate = match spec.gate_mode {
        GateMode::Budget => {
            let asset = spec
                .budgets
                .clone()
                .unwrap_or_else(|| Asset::embedded(DEFAULT_BUDGETS, EMBEDDED_BUDGETS));
            let budgets =
                gate::parse_budgets(&asset.label(), Some(&asset.bytes)).map_err(invalid)?;
            (
                config.budgets_path,
                config.budgets_source,
                config.budgets_sha256,
            ) = provenance(&asset);
            Gate::Budget(budgets)
        }
        GateMode::Regression => {
            if spec.workload.profile != Profile::Pr
                && (spec.baseline.is_none() || spec.tolerances.is_none())
            {
                return Err(RunError::Usage(REGRESSION_DEFAULTS_PR_ONLY.into()));
            }
            let b = spec
                .baseline
                .clone()
                .unwrap_or_else(|| Asset::embedded(DEFAULT_BASELINE, EMBEDDED_BASELINE));
            let t = spec
                .tolerances
                .clone()
                .unwrap_or_else(|| Asset::embedded(DEFAULT_TOLERANCES, EMBEDDED_TOLERANCES));
            let baseline = gate::parse_baseline(&b.label(), Some(&b.bytes)).map_err(invalid)?;
            let tolerances = gate::parse_tolerances(&t.label(), Some(&t.bytes)).map_err(invalid)?;
            if baseline.is_point() {
                tracing::warn!(
                    baseline = %b.label(),
                    "The baseline is a point baseline (no A/A distributions): its checks use the tolerances alone; record a calibrated one with `fleetgate run --repeat 10 --write-baseline PATH`."
                );
            }
            baseline
                .require(&[], &config.comparable(), &gate::no_classes)
                .map_err(invalid)?;
            (
                config.baseline_path,
                config.baseline_source,
                config.baseline_sha256,
            ) = provenance(&b);
            (
                config.tolerances_path,
                config.tolerances_source,
                config.tolerances_sha256,
            ) = provenance(&t);
            Gate::Regression(baseline, tolerances)
        }
    };
    Ok(RunPlan { spec, config, gate })
}

impl RunPlan {
    /// The job of `runtime` (on GPU `device`, for a per-GPU runtime) on one agent.
    pub fn job(&self, runtime: RuntimeKind, device: Option<u32>) -> JobSpec {
        JobSpec {
            runtime,
            device,
            workload: self.config.workload,
            knobs: self
                .config
                .knobs
                .get(runtime.name())
                .copied()
                .unwrap_or_default(),
            scratch_root: self
                .config
                .overhead_scratch_root
                .as_ref()
                .map(std::path::PathBuf::from),
        }
    }

    /// The metric keys the run will produce on `agents`.
    pub fn expected_metrics(&self, agents: &[String]) -> Vec<String> {
        let plain = expected_metric_keys(
            self.config.runtimes.keys().map(String::as_str),
            self.config.workload.mode,
        );
        if agents.is_empty() {
            return plain;
        }
        agents
            .iter()
            .flat_map(|agent| plain.iter().map(move |k| format!("{agent}/{k}")))
            .collect()
    }

    /// Fails unless every metric the run will produce on `agents` resolves to a threshold
    /// (and, for the regression gate, a baseline value).
    pub fn require_coverage(
        &self,
        agents: &[String],
        class_of: ClassOf<'_>,
    ) -> Result<(), RunError> {
        let expected = self.expected_metrics(agents);
        let invalid = |e: gate::AssetError| RunError::InvalidInput(e.to_string());
        match &self.gate {
            Gate::Budget(b) => b.require(&expected, class_of).map_err(invalid),
            Gate::Regression(baseline, tolerances) => {
                baseline
                    .require(&expected, &self.config.comparable(), class_of)
                    .map_err(invalid)?;
                tolerances.require(&expected, class_of).map_err(invalid)
            }
        }
    }
}
