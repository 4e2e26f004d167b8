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
        /// `starting`, `overhead`, `soak` or `retention_validation`.
        phase: String,
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
        phase: String,
        /// Why.
        reason: String,
    },
}

impl JobUpdate {
    /// Whether nothing follows this update.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobUpdate::Report { .. } | JobUpdate::Failed { .. })
    }
}
