//! A run: what the CLI asks for ([`RunSpec`]), and its validated form ([`RunPlan`]) with the
//! report's config block and the loaded gate. Validation happens twice — in the CLI, before
//! anything is sent, and in the coordinator, before any job is dispatched — and never after a
//! job has run.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetgate_agent::job;
use fleetgate_agent::runtime::RuntimeKind;
use fleetgate_common::config::{
    GateMode, Knobs, Mode, Profile, RetentionValidationLimits, RunConfig, WorkloadKind,
};
use fleetgate_common::convert;
use fleetgate_common::gate::{self, AssetSource, ClassOf, Gate};
use fleetgate_common::report::expected_metric_keys;
use fleetgate_proto::v1 as pb;

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

/// A gate asset as used by a run: its name (the file path), its JSON text, and where it came
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// File path, for messages and the report (for a built-in asset, the shipped file's path).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// A file, or the copy built into this binary.
    pub source: AssetSource,
}

impl Asset {
    /// Reads a file; a file that cannot be read is invalid input naming the file.
    pub fn read(path: &std::path::Path, what: &str) -> Result<Self, RunError> {
        let name = path.display().to_string();
        fleetgate_common::input::read_file(path)
            .map(|bytes| Asset {
                name: name.clone(),
                bytes,
                source: AssetSource::Path,
            })
            .map_err(|e| RunError::InvalidInput(format!("{name}: {what} cannot be read: {e}")))
    }

    /// The built-in copy of a shipped file.
    pub fn embedded(name: &str, bytes: &[u8]) -> Self {
        Asset {
            name: name.to_owned(),
            bytes: bytes.to_vec(),
            source: AssetSource::Embedded,
        }
    }

    /// How messages name it: the path, marked when the copy is built in.
    fn label(&self) -> String {
        match self.source {
            AssetSource::Path => self.name.clone(),
            AssetSource::Embedded => format!("{} (built in)", self.name),
        }
    }
}

/// Which agents a run selects. Every constraint given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Agent ids (empty: any).
    pub agent_ids: Vec<String>,
    /// Labels the agent must carry.
    pub labels: BTreeMap<String, String>,
    /// Hardware class the agent must be in.
    pub hardware_class: Option<String>,
    /// Fewest agents the run accepts.
    pub min_agents: u32,
}

/// A run as the CLI asks for it.
#[derive(Debug, Clone)]
pub struct RunSpec {
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
    /// Overhead workload (the TensorFlow workload applies to the TensorFlow runtimes).
    pub workload: WorkloadKind,
    /// Runtime names, in run order.
    pub runtimes: Vec<String>,
    /// Agent selection.
    pub selection: Selection,
    /// Whole-run deadline (None: the coordinator's default for the profile).
    pub deadline: Option<Duration>,
    /// Tuning knobs.
    pub knobs: Knobs,
    /// RAM-backed root for overhead trial files on the agents' hosts.
    pub overhead_scratch_root: Option<String>,
    /// Budget file (budget gate); None: the built-in copy of [`DEFAULT_BUDGETS`].
    pub budgets: Option<Asset>,
    /// Baseline file (regression gate); None: the built-in [`DEFAULT_BASELINE`] (`pr` only).
    pub baseline: Option<Asset>,
    /// Tolerance file (regression gate); None: the built-in [`DEFAULT_TOLERANCES`] (`pr` only).
    pub tolerances: Option<Asset>,
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
        let kind = RuntimeKind::parse(name).map_err(RunError::Usage)?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if spec.workload == WorkloadKind::Tensorflow && !kinds.iter().any(|k| k.uses_tensorflow()) {
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
        job::tracker_config(kind, knobs)
            .map_err(|m| RunError::InvalidInput(format!("knobs: {m}")))?;
    }
    let runtimes = kinds
        .iter()
        .map(|&kind| {
            let knobs = spec.knobs.get(kind.name()).copied().unwrap_or_default();
            (
                kind.name().to_owned(),
                job::runtime_plan(kind, &knobs, spec.profile, spec.iterations),
            )
        })
        .collect();
    let mut config = RunConfig {
        profile: spec.profile,
        mode: spec.mode,
        iterations: spec.iterations,
        allocation_kb: spec.allocation_kb,
        workload: spec.workload,
        profile_equivalent_hours: spec.profile.hours(),
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
            if spec.profile != Profile::Pr && (spec.baseline.is_none() || spec.tolerances.is_none())
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
    /// The metric keys the run will produce on `agents`.
    pub fn expected_metrics(&self, agents: &[String]) -> Vec<String> {
        let plain = expected_metric_keys(
            self.config.runtimes.keys().map(String::as_str),
            self.config.mode,
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

/// A file's document and path; nothing for a built-in asset, which the coordinator supplies
/// from its own copy.
fn asset_to_pb(asset: Option<&Asset>) -> (String, String) {
    let file = asset.filter(|a| a.source == AssetSource::Path);
    file.map_or_else(Default::default, |a| {
        (
            String::from_utf8_lossy(&a.bytes).into_owned(),
            a.name.clone(),
        )
    })
}

impl From<&RunSpec> for pb::SubmitRunRequest {
    fn from(s: &RunSpec) -> Self {
        let (budgets_json, budgets_path) = asset_to_pb(s.budgets.as_ref());
        let (baseline_json, baseline_path) = asset_to_pb(s.baseline.as_ref());
        let (tolerances_json, tolerances_path) = asset_to_pb(s.tolerances.as_ref());
        pb::SubmitRunRequest {
            profile: convert::profile_to_pb(s.profile),
            mode: convert::mode_to_pb(s.mode),
            gate_mode: convert::gate_mode_to_pb(s.gate_mode),
            iterations: s.iterations,
            allocation_kb: s.allocation_kb,
            runtimes: s.runtimes.clone(),
            agent_ids: s.selection.agent_ids.clone(),
            labels: s.selection.labels.clone().into_iter().collect(),
            hardware_class: s.selection.hardware_class.clone().unwrap_or_default(),
            min_agents: s.selection.min_agents,
            deadline_ms: s
                .deadline
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            budgets_json,
            baseline_json,
            tolerances_json,
            knobs_json: if s.knobs.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&s.knobs).unwrap_or_default()
            },
            overhead_scratch_root: s.overhead_scratch_root.clone().unwrap_or_default(),
            workload: s.workload.name().to_owned(),
            budgets_path,
            baseline_path,
            tolerances_path,
        }
    }
}

fn asset_from_pb(json: String, path: String, default_name: &str) -> Option<Asset> {
    (!json.is_empty()).then(|| Asset {
        name: if path.is_empty() {
            default_name.to_owned()
        } else {
            path
        },
        bytes: json.into_bytes(),
        source: AssetSource::Path,
    })
}

impl TryFrom<pb::SubmitRunRequest> for RunSpec {
    type Error = RunError;

    fn try_from(r: pb::SubmitRunRequest) -> Result<Self, RunError> {
        let bad = |e: convert::ConvertError| RunError::InvalidInput(e.to_string());
        let knobs: Knobs = if r.knobs_json.is_empty() {
            Knobs::new()
        } else {
            serde_json::from_str(&r.knobs_json)
                .map_err(|e| RunError::InvalidInput(format!("knobs_json: {e}")))?
        };
        for (runtime, k) in &knobs {
            k.validate().map_err(|m| {
                RunError::InvalidInput(format!(
                    "knobs_json: {}.{}",
                    fleetgate_common::input::one_line(runtime),
                    m
                ))
            })?;
        }
        Ok(RunSpec {
            profile: convert::profile_from_pb(r.profile).map_err(bad)?,
            mode: convert::mode_from_pb(r.mode).map_err(bad)?,
            gate_mode: convert::gate_mode_from_pb(r.gate_mode).map_err(bad)?,
            iterations: r.iterations,
            allocation_kb: r.allocation_kb,
            workload: convert::workload_from_pb(&r.workload).map_err(bad)?,
            runtimes: r.runtimes,
            selection: Selection {
                agent_ids: r.agent_ids,
                labels: r.labels.into_iter().collect(),
                hardware_class: (!r.hardware_class.is_empty()).then_some(r.hardware_class),
                min_agents: r.min_agents,
            },
            deadline: (r.deadline_ms > 0).then(|| Duration::from_millis(r.deadline_ms)),
            knobs,
            overhead_scratch_root: (!r.overhead_scratch_root.is_empty())
                .then_some(r.overhead_scratch_root),
            budgets: asset_from_pb(r.budgets_json, r.budgets_path, "budgets"),
            baseline: asset_from_pb(r.baseline_json, r.baseline_path, "baseline"),
            tolerances: asset_from_pb(r.tolerances_json, r.tolerances_path, "tolerances"),
        })
    }
}
