//! What one job is and what it reports back.

use serde::{Deserialize, Serialize};

use crate::report::model::RuntimeSection;

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
