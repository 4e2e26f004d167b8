//! The job executor: one job is one runtime on this host, and produces that runtime's section
//! of the v0.4 report (overhead and/or soak, per the mode), or `unavailable` with the reason
//! when the runtime cannot run here.

use std::path::PathBuf;
use std::time::Duration;

use fleetgate_common::config::{
    Mode, Profile, RetentionValidationLimits, RuntimeKnobs, RuntimePlan, WorkloadKind,
    overhead_sample_count, soak_sample_count,
};
use fleetgate_common::report::{RuntimeSection, RuntimeStatus};

use crate::runtime::{RuntimeKind, TrackerConfig};
use crate::scenario::{self, Hooks, OverheadSpec, ScenarioError, SoakSpec};
use crate::sink::SinkConfig;
use crate::workload::Workload;

/// What a job runs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The runtime.
    pub runtime: RuntimeKind,
    /// The GPU, for the per-GPU runtimes.
    pub device: Option<u32>,
    /// Soak profile.
    pub profile: Profile,
    /// Scenarios.
    pub mode: Mode,
    /// Workload steps.
    pub iterations: u32,
    /// KiB per workload step.
    pub allocation_kb: u32,
    /// Overhead workload (the TensorFlow workload applies to the TensorFlow runtimes only).
    pub workload: WorkloadKind,
    /// Root of the artifacts; this job writes under `<root>/<runtime>`.
    pub artifact_root: PathBuf,
    /// RAM-backed root for overhead trial files, if any.
    pub scratch_root: Option<PathBuf>,
    /// Tuning knobs of this runtime.
    pub knobs: RuntimeKnobs,
    /// The forced-churn subtest's limits.
    pub retention: RetentionValidationLimits,
}

/// The runtime's tracker configuration with the knobs applied (sink directory still to be
/// set by the scenario). The error names the knob.
pub fn tracker_config(kind: RuntimeKind, knobs: &RuntimeKnobs) -> Result<TrackerConfig, String> {
    let mut config = TrackerConfig::new(kind, Some(PathBuf::new()));
    if let Some(interval) = knobs.sampling_interval() {
        config.sampling_interval = interval;
    }
    if let Some(n) = knobs.max_history {
        config.max_history = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let sink = config
        .sink
        .get_or_insert_with(|| SinkConfig::new(PathBuf::new()));
    if let Some(n) = knobs.flush_every_events {
        sink.flush_every_events = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(s) = knobs.flush_every_seconds {
        sink.flush_every = Duration::from_secs_f64(s.clamp(
            fleetgate_common::config::MIN_SECONDS_KNOB,
            fleetgate_common::config::MAX_SECONDS_KNOB,
        ));
    }
    if let Some(n) = knobs.rollover_max_bytes {
        sink.rollover_max_bytes = n;
    }
    if let Some(n) = knobs.rollover_max_events {
        sink.rollover_max_events = n;
    }
    if let Some(n) = knobs.retention_max_files {
        sink.retention_max_files = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = knobs.retention_max_total_bytes {
        sink.retention_max_total_bytes = n;
    }
    sink.validate().map_err(|e| match e {
        crate::sink::SinkError::InvalidConfig { message, .. } => {
            format!("{}.{message}", kind.name())
        }
        other => other.to_string(),
    })?;
    Ok(config)
}

/// The runtime's entry in the report's config: effective interval and sample counts.
pub fn runtime_plan(
    kind: RuntimeKind,
    knobs: &RuntimeKnobs,
    profile: Profile,
    iterations: u32,
) -> RuntimePlan {
    let interval = knobs
        .sampling_interval()
        .unwrap_or_else(|| kind.default_interval());
    RuntimePlan {
        default_interval: interval.as_secs_f64(),
        overhead_sample_count: overhead_sample_count(iterations, interval),
        soak_sample_count: soak_sample_count(profile.hours(), interval),
    }
}

/// Runs the job's scenarios and returns the runtime's report section. A runtime whose
/// collector cannot open on this host is `unavailable` with the collector's reason; an
/// artifact directory that cannot be written, or an interruption, is an error.
pub fn run_job(spec: &JobSpec, hooks: &mut Hooks<'_>) -> Result<RuntimeSection, ScenarioError> {
    let kind = spec.runtime;
    if let Err(reason) = kind.open_collector(spec.allocation_kb, spec.device.unwrap_or(0)) {
        return Ok(RuntimeSection::unavailable(reason.to_string()));
    }
    let tracker = tracker_config(kind, &spec.knobs).map_err(|message| {
        ScenarioError::Tracker(crate::runtime::TrackerError::InvalidConfig(message))
    })?;
    let plan = runtime_plan(kind, &spec.knobs, spec.profile, spec.iterations);
    // Per-GPU jobs of one host get a directory each.
    let runtime_dir = match spec.device {
        Some(gpu) => spec.artifact_root.join(format!("{}@{gpu}", kind.name())),
        None => spec.artifact_root.join(kind.name()),
    };
    let overhead = if spec.mode.runs_overhead() {
        let overhead = OverheadSpec {
            tracker: tracker.clone(),
            workload: Workload {
                iterations: spec.iterations,
                allocation_kb: spec.allocation_kb,
            },
            workload_kind: if kind.uses_tensorflow() {
                spec.workload
            } else {
                WorkloadKind::Reference
            },
            tensorflow_device: if kind == RuntimeKind::TfmemprofGpu {
                "/GPU:0"
            } else {
                "/CPU:0"
            },
            runtime_dir: runtime_dir.clone(),
            scratch_dir: spec
                .scratch_root
                .as_ref()
                .map(|s| s.join(runtime_dir.file_name().unwrap_or_default())),
            samples: plan.overhead_sample_count,
            limits: scenario::PairLimits::from_knobs(&spec.knobs),
        };
        Some(scenario::run_overhead(
            &overhead,
            || kind.open_collector(spec.allocation_kb, spec.device.unwrap_or(0)),
            hooks,
        )?)
    } else {
        None
    };
    let soak = if spec.mode.runs_soak() {
        let soak = SoakSpec {
            tracker,
            samples: plan.soak_sample_count,
            profile: spec.profile.name().to_owned(),
            artifact_dir: runtime_dir.join("soak"),
            retention: spec.retention,
        };
        Some(scenario::run_soak(
            &soak,
            || kind.open_collector(spec.allocation_kb, spec.device.unwrap_or(0)),
            hooks,
        )?)
    } else {
        None
    };
    Ok(RuntimeSection {
        status: RuntimeStatus::Ok,
        reason: None,
        default_interval: Some(plan.default_interval),
        overhead,
        soak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_reach_the_tracker_and_the_plan() {
        let knobs = RuntimeKnobs {
            sampling_interval_seconds: Some(1.0),
            rollover_max_events: Some(500),
            max_history: Some(42),
            ..RuntimeKnobs::default()
        };
        let config = tracker_config(RuntimeKind::GpumemprofCpu, &knobs).unwrap();
        assert_eq!(config.sampling_interval, Duration::from_secs(1));
        assert_eq!(config.max_history, 42);
        assert_eq!(config.sink.unwrap().rollover_max_events, 500);
        let plan = runtime_plan(RuntimeKind::GpumemprofCpu, &knobs, Profile::Pr, 5_000);
        assert_eq!(plan.soak_sample_count, 21_600);
        assert_eq!(plan.overhead_sample_count, 500);
        let plan = runtime_plan(
            RuntimeKind::GpumemprofCpu,
            &RuntimeKnobs::default(),
            Profile::Nightly,
            5_000,
        );
        assert_eq!(plan.soak_sample_count, 864_000);
        assert_eq!(plan.default_interval, 0.1);
    }

    #[test]
    fn inconsistent_sink_knobs_are_refused_naming_the_knob() {
        let knobs = RuntimeKnobs {
            rollover_max_bytes: Some(1_000_000),
            retention_max_total_bytes: Some(1_000),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            tracker_config(RuntimeKind::GpumemprofCpu, &knobs).unwrap_err(),
            "gpumemprof_cpu.retention_max_total_bytes must be >= rollover_max_bytes"
        );
    }
}
