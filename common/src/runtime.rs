//! The runtime catalogue: which monitoring runtimes fleetgate qualifies, their names, default
//! intervals and needs, and each one's entry in the report's config (its [`RuntimePlan`]).
//! Opening a runtime's collector is the agent's business; this module only describes them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Profile, RuntimePlan, overhead_sample_count, soak_sample_count};
use crate::knobs::RuntimeKnobs;

/// The runtimes fleetgate can qualify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// `gpumemprof track`'s CPU fallback: process RSS at 0.1 s.
    GpumemprofCpu,
    /// `gpumemprof track` on a GPU: one GPU's memory through NVML at 0.1 s.
    GpumemprofCuda,
    /// `tfmemprof track --device /CPU:0`: RSS and TensorFlow's CPU allocator at 1.0 s.
    TfmemprofCpu,
    /// `tfmemprof track --device /GPU:0`: RSS and TensorFlow's GPU allocator at 1.0 s.
    TfmemprofGpu,
}

/// A runtime name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown runtime '{}' (known: {})", crate::input::one_line(.0), RuntimeKind::known_names())]
pub struct UnknownRuntime(pub String);

impl RuntimeKind {
    /// Every runtime, in report order.
    pub const ALL: [RuntimeKind; 4] = [
        RuntimeKind::GpumemprofCpu,
        RuntimeKind::GpumemprofCuda,
        RuntimeKind::TfmemprofCpu,
        RuntimeKind::TfmemprofGpu,
    ];

    /// The runtime's name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::GpumemprofCpu => "gpumemprof_cpu",
            RuntimeKind::GpumemprofCuda => "gpumemprof_cuda",
            RuntimeKind::TfmemprofCpu => "tfmemprof_cpu",
            RuntimeKind::TfmemprofGpu => "tfmemprof_gpu",
        }
    }

    /// Every runtime's name, comma-separated, in report order.
    pub fn known_names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// Parses a runtime name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Parses a runtime name, with an error listing the known ones (for command lines).
    pub fn parse(name: &str) -> Result<Self, UnknownRuntime> {
        Self::from_name(name).ok_or_else(|| UnknownRuntime(name.to_owned()))
    }

    /// Default sampling interval.
    pub fn default_interval(self) -> Duration {
        match self {
            RuntimeKind::GpumemprofCpu | RuntimeKind::GpumemprofCuda => Duration::from_millis(100),
            RuntimeKind::TfmemprofCpu | RuntimeKind::TfmemprofGpu => Duration::from_secs(1),
        }
    }

    /// Session source written to the manifest's ledger.
    pub fn session_source(self) -> &'static str {
        match self {
            RuntimeKind::GpumemprofCpu => "fleetgate.gpumemprof_cpu",
            RuntimeKind::GpumemprofCuda => "fleetgate.gpumemprof_cuda",
            RuntimeKind::TfmemprofCpu => "fleetgate.tfmemprof_cpu",
            RuntimeKind::TfmemprofGpu => "fleetgate.tfmemprof_gpu",
        }
    }

    /// Whether the runtime needs libtensorflow.
    pub fn uses_tensorflow(self) -> bool {
        matches!(self, RuntimeKind::TfmemprofCpu | RuntimeKind::TfmemprofGpu)
    }

    /// The TensorFlow device a TensorFlow workload of this runtime runs on.
    pub fn tensorflow_device(self) -> &'static str {
        if self == RuntimeKind::TfmemprofGpu {
            "/GPU:0"
        } else {
            "/CPU:0"
        }
    }

    /// Whether the runtime runs one job per GPU of the host.
    pub fn per_gpu(self) -> bool {
        self == RuntimeKind::GpumemprofCuda
    }

    /// Whether the runtime keeps a window of sample values. The gpumemprof trackers keep only
    /// events (so their dropped-sample counter stays 0, as in the reference); the TensorFlow
    /// tracker keeps both.
    pub fn keeps_sample_history(self) -> bool {
        self.uses_tensorflow()
    }

    /// The runtime's entry in the report's config under `knobs`, for a run of `profile` with
    /// `iterations` workload steps: the effective interval and the sample counts.
    pub fn plan(self, knobs: &RuntimeKnobs, profile: Profile, iterations: u32) -> RuntimePlan {
        let interval = knobs
            .sampling_interval()
            .unwrap_or_else(|| self.default_interval());
        RuntimePlan {
            default_interval: interval.as_secs_f64(),
            overhead_sample_count: overhead_sample_count(iterations, interval),
            soak_sample_count: soak_sample_count(profile.hours(), interval),
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for kind in RuntimeKind::ALL {
            assert_eq!(RuntimeKind::from_name(kind.name()), Some(kind));
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
        assert_eq!(
            RuntimeKind::parse("x\ny").unwrap_err().to_string(),
            "unknown runtime 'x\\ny' (known: gpumemprof_cpu, gpumemprof_cuda, tfmemprof_cpu, tfmemprof_gpu)"
        );
    }

    #[test]
    fn knobs_reach_the_plan() {
        let knobs = RuntimeKnobs {
            sampling_interval_seconds: Some(1.0),
            ..RuntimeKnobs::default()
        };
        let plan = RuntimeKind::GpumemprofCpu.plan(&knobs, Profile::Pr, 5_000);
        assert_eq!(plan.soak_sample_count, 21_600);
        assert_eq!(plan.overhead_sample_count, 500);
        let plan =
            RuntimeKind::GpumemprofCpu.plan(&RuntimeKnobs::default(), Profile::Nightly, 5_000);
        assert_eq!(plan.soak_sample_count, 864_000);
        assert_eq!(plan.default_interval, 0.1);
        let plan = RuntimeKind::TfmemprofCpu.plan(&RuntimeKnobs::default(), Profile::Pr, 5_000);
        assert_eq!(plan.soak_sample_count, 21_600);
        assert_eq!(plan.overhead_sample_count, 500);
    }
}
