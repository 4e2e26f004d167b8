//! What one job is and what it reports back. A job is one runtime on one agent: the
//! coordinator's plan makes its [`JobSpec`], the wire carries it inside a [`JobAssignment`],
//! the agent queues it and hands it to a worker process, which runs it as it is.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Workload;
use crate::knobs::RuntimeKnobs;
use crate::report::model::RuntimeSection;
use crate::runtime::RuntimeKind;

/// What one job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The runtime.
    pub runtime: RuntimeKind,
    /// The GPU, for the per-GPU runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
    /// Profile, scenarios and workload (the TensorFlow workload applies to the TensorFlow
    /// runtimes only).
    pub workload: Workload,
    /// The runtime's tuning knobs.
    #[serde(default)]
    pub knobs: RuntimeKnobs,
    /// RAM-backed root for overhead trial files on the agent's host, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_root: Option<PathBuf>,
}

impl JobSpec {
    /// The job's directory name under the artifact root: the runtime's name, and for a per-GPU
    /// job `<runtime>@<gpu>`, so the jobs of one host never share a directory.
    pub fn dir_name(&self) -> String {
        match self.device {
            Some(gpu) => format!("{}@{gpu}", self.runtime.name()),
            None => self.runtime.name().to_owned(),
        }
    }
}

/// A job as the coordinator assigns it to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct JobAssignment {
    /// The job's id.
    pub job_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The agent kills the job's worker when this passes (milliseconds since the Unix epoch).
    pub deadline_unix_ms: u64,
    /// What it runs.
    pub spec: JobSpec,
}

/// Where a job is: the phase a worker reports with its progress, and the phase a failed job
/// reached. Its name (`starting`, `overhead`, `soak`, `retention_validation`, `unknown`) is what
/// a worker writes, what a client sees in a run's progress and what a report says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Assigned, the worker not yet reporting progress.
    #[default]
    Starting,
    /// Overhead pairs (done/total count scenarios: 2 per pair; the total grows with the pairs
    /// beyond the minimum).
    Overhead,
    /// The soak (done/total count samples).
    Soak,
    /// The forced-churn subtest (done/total count samples).
    RetentionValidation,
    /// A phase this build does not know (an unspecified wire value, a newer worker's name).
    #[serde(other)]
    Unknown,
}

impl JobPhase {
    /// The phase's name.
    pub fn name(self) -> &'static str {
        match self {
            JobPhase::Starting => "starting",
            JobPhase::Overhead => "overhead",
            JobPhase::Soak => "soak",
            JobPhase::RetentionValidation => "retention_validation",
            JobPhase::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for JobPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&str> for JobPhase {
    /// The phase named `name`; [`JobPhase::Unknown`] for any other name.
    fn from(name: &str) -> Self {
        match name {
            "starting" => JobPhase::Starting,
            "overhead" => JobPhase::Overhead,
            "soak" => JobPhase::Soak,
            "retention_validation" => JobPhase::RetentionValidation,
            _ => JobPhase::Unknown,
        }
    }
}

/// One update of a running job, as a worker writes it (one JSON line each) and as the agent
/// forwards it to the coordinator (a numbered `JobEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobUpdate {
    /// The worker process started.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// Progress within a phase.
    Progress {
        /// The phase.
        phase: JobPhase,
        /// Units done.
        done: u64,
        /// Units in the phase.
        total: u64,
    },
    /// An RSS checkpoint of the soak.
    Checkpoint {
        /// Sample index.
        sample_index: u64,
        /// RSS in bytes.
        rss_bytes: u64,
    },
    /// The job's report section. Terminal.
    Report {
        /// The section.
        section: Box<RuntimeSection>,
    },
    /// The job failed. Terminal.
    Failed {
        /// The phase it reached.
        phase: JobPhase,
        /// Why.
        reason: String,
    },
}

impl JobUpdate {
    /// The update's kind, as metrics label it: `started`, `progress`, `checkpoint`, `report`,
    /// `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobUpdate::Started { .. } => "started",
            JobUpdate::Progress { .. } => "progress",
            JobUpdate::Checkpoint { .. } => "checkpoint",
            JobUpdate::Report { .. } => "report",
            JobUpdate::Failed { .. } => "failed",
        }
    }

    /// Whether nothing follows this update.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobUpdate::Report { .. } | JobUpdate::Failed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_keep_their_names_and_an_unknown_one_reads_as_unknown() {
        for phase in [
            JobPhase::Starting,
            JobPhase::Overhead,
            JobPhase::Soak,
            JobPhase::RetentionValidation,
            JobPhase::Unknown,
        ] {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.name()));
            assert_eq!(serde_json::from_str::<JobPhase>(&json).unwrap(), phase);
            assert_eq!(JobPhase::from(phase.name()), phase);
        }
        assert_eq!(
            serde_json::from_str::<JobPhase>("\"warmup\"").unwrap(),
            JobPhase::Unknown
        );
        assert_eq!(JobPhase::from("warmup"), JobPhase::Unknown);
        let line = r#"{"event":"failed","phase":"soak","reason":"x"}"#;
        assert_eq!(
            serde_json::from_str::<JobUpdate>(line).unwrap(),
            JobUpdate::Failed {
                phase: JobPhase::Soak,
                reason: "x".into()
            }
        );
    }
}
