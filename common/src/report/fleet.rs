//! The fleet's part of the report: each agent's section with its jobs, and the per-class
//! summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::HostFacts;

/// How an agent's part of the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Every job delivered its report.
    Completed,
    /// The agent stopped heartbeating (or its connection dropped) and did not come back in time.
    Lost,
    /// A job passed the run's deadline.
    TimedOut,
    /// A job's worker failed.
    Failed,
}

/// How one job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Still running (only while the run is in progress).
    Running,
    /// Its report arrived.
    Completed,
    /// Its worker failed.
    Failed,
    /// The deadline passed.
    TimedOut,
    /// Its agent was lost.
    Lost,
    /// Cancelled.
    Cancelled,
}

impl JobStatus {
    /// Every status, in the order above.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Lost,
        JobStatus::Cancelled,
    ];

    /// The status's name, as the report writes it (`timed_out`, ...).
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Lost => "lost",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// One job in an agent's section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Job id.
    pub job_id: String,
    /// How it ended.
    pub status: JobStatus,
    /// The last phase it reported.
    pub phase: String,
    /// Progress within that phase.
    pub done: u64,
    /// Units in that phase.
    pub total: u64,
    /// Events received (each once: resent duplicates are not counted).
    pub events: u64,
    /// RSS checkpoints received from the soak.
    pub checkpoints: u64,
    /// Seconds from dispatch to the end.
    pub wall_seconds: f64,
    /// Why it did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An agent's section of the fleet report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSection {
    /// Hardware class (derived, or the operator's label).
    pub hardware_class: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Host facts.
    pub facts: HostFacts,
    /// How its part ended.
    pub status: AgentStatus,
    /// Its jobs, by runtime.
    pub jobs: BTreeMap<String, JobSummary>,
}

/// Worst and median of one metric over a hardware class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSpread {
    /// Largest value (every gated metric is better when lower).
    pub worst: f64,
    /// Median value.
    pub median: f64,
    /// Agents that produced it.
    pub agents: u64,
}

/// An agent whose value of a metric lies far from its class's: `|robust z| > 3.5`, or, where
/// more than half the class shares one value (the MAD is 0), any other value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outlier {
    /// The agent.
    pub agent: String,
    /// `<runtime>.<metric>` as the agent reported it (with its GPU instance, if any).
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// `(value − median) / MAD` over the class (MAD normal-scaled); absent when the MAD is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust_z: Option<f64>,
}

/// A hardware class's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Agents of the class.
    pub agents: Vec<String>,
    /// `<runtime>.<metric>` → worst and median over the class's agents.
    pub metrics: BTreeMap<String, MetricSpread>,
    /// Agents that passed: every job completed and every check of their metrics passed, with
    /// no diagnostic raised.
    #[serde(default)]
    pub passed: u64,
    /// Agents gated (every agent of the class in the run).
    #[serde(default)]
    pub gated: u64,
    /// Agents that must pass: `ceil(quorum × gated)`.
    #[serde(default)]
    pub quorum: u64,
    /// `passed >= quorum`.
    #[serde(default)]
    pub quorum_met: bool,
    /// Agents far from the class on some metric (advice only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outliers: Vec<Outlier>,
}
