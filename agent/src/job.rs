//! The job executor: one job is one runtime on this host, and produces that runtime's section
//! of the v0.4 report (overhead and/or soak, per the mode), or `unavailable` with the reason
//! when the runtime cannot run here.

use std::path::{Path, PathBuf};

use fleetgate_common::config::{RetentionValidationLimits, WorkloadKind};
use fleetgate_common::job::JobSpec;
use fleetgate_common::knobs::{KnobCheckError, RuntimeKnobs};
use fleetgate_common::report::{RuntimeSection, RuntimeStatus};
use fleetgate_common::runtime::RuntimeKind;

use crate::runtime::{TrackerConfig, open_collector};
use crate::scenario::{self, Hooks, OverheadSpec, ScenarioError, SoakSpec};
use crate::sink::SinkConfig;
use crate::workload::Workload;

/// A runtime's knobs cannot be used; names `<runtime>.<knob>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{runtime}.{error}")]
pub struct TrackerKnobError {
    /// The runtime.
    pub runtime: RuntimeKind,
    /// What is wrong.
    pub error: KnobCheckError,
}

/// The runtime's tracker configuration with the knobs applied (sink directory still to be
/// set by the scenario). Knobs are checked by the knob table's rules first.
pub fn tracker_config(
    kind: RuntimeKind,
    knobs: &RuntimeKnobs,
) -> Result<TrackerConfig, TrackerKnobError> {
    knobs.check().map_err(|error| TrackerKnobError {
        runtime: kind,
        error,
    })?;
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
    sink.flush_every = knobs.flush_every();
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
    Ok(config)
}

/// Runs the job's scenarios under `artifact_root` and returns the runtime's report section.
/// A runtime whose collector cannot open on this host is `unavailable` with the collector's
/// reason; an artifact directory that cannot be written, or an interruption, is an error.
pub fn run_job(
    spec: &JobSpec,
    artifact_root: &Path,
    hooks: &mut Hooks<'_>,
) -> Result<RuntimeSection, ScenarioError> {
    let kind = spec.runtime;
    let workload = &spec.workload;
    let open = || open_collector(kind, workload.allocation_kb, spec.device.unwrap_or(0));
    if let Err(reason) = open() {
        return Ok(RuntimeSection::unavailable(reason.to_string()));
    }
    let tracker = tracker_config(kind, &spec.knobs).map_err(|e| {
        ScenarioError::Tracker(crate::runtime::TrackerError::InvalidConfig(e.to_string()))
    })?;
    let plan = kind.plan(&spec.knobs, workload.profile, workload.iterations);
    // Per-GPU jobs of one host get a directory each.
    let runtime_dir = artifact_root.join(spec.dir_name());
    let overhead = if workload.mode.runs_overhead() {
        let overhead = OverheadSpec {
            tracker: tracker.clone(),
            workload: Workload {
                iterations: workload.iterations,
                allocation_kb: workload.allocation_kb,
            },
            workload_kind: if kind.uses_tensorflow() {
                workload.kind
            } else {
                WorkloadKind::Reference
            },
            tensorflow_device: kind.tensorflow_device(),
            runtime_dir: runtime_dir.clone(),
            scratch_dir: spec
                .scratch_root
                .as_ref()
                .map(|s| s.join(runtime_dir.file_name().unwrap_or_default())),
            samples: plan.overhead_sample_count,
            limits: scenario::PairLimits::from_knobs(&spec.knobs),
        };
        Some(scenario::run_overhead(&overhead, open, hooks)?)
    } else {
        None
    };
    let soak = if workload.mode.runs_soak() {
        let soak = SoakSpec {
            tracker,
            samples: plan.soak_sample_count,
            profile: workload.profile.name().to_owned(),
            artifact_dir: runtime_dir.join("soak"),
            retention: RetentionValidationLimits::default(),
        };
        Some(scenario::run_soak(&soak, open, hooks)?)
    } else {
        None
    };
    Ok(RuntimeSection {
        status: RuntimeStatus::Ok,
        reason: None,
        default_interval: Some(plan.default_interval),
        overhead: overhead.map(Box::new),
        soak: soak.map(Box::new),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn knobs_reach_the_tracker() {
        let knobs = RuntimeKnobs {
            sampling_interval_seconds: Some(1.0),
            rollover_max_events: Some(500),
            max_history: Some(42),
            flush_every_seconds: Some(0.5),
            ..RuntimeKnobs::default()
        };
        let config = tracker_config(RuntimeKind::GpumemprofCpu, &knobs).unwrap();
        assert_eq!(config.sampling_interval, Duration::from_secs(1));
        assert_eq!(config.max_history, 42);
        let sink = config.sink.unwrap();
        assert_eq!(sink.rollover_max_events, 500);
        assert_eq!(sink.flush_every, Duration::from_millis(500));
        assert_eq!(sink.validate().ok(), Some(()));
    }

    #[test]
    fn inconsistent_sink_knobs_are_refused_naming_the_knob() {
        let knobs = RuntimeKnobs {
            rollover_max_bytes: Some(1_000_000),
            retention_max_total_bytes: Some(1_000),
            ..RuntimeKnobs::default()
        };
        assert_eq!(
            tracker_config(RuntimeKind::GpumemprofCpu, &knobs)
                .unwrap_err()
                .to_string(),
            "gpumemprof_cpu.retention_max_total_bytes must be >= rollover_max_bytes"
        );
    }
}
