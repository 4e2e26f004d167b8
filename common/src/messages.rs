//! The messages of an agent's session and of a run's event stream as domain values: what an
//! agent says ([`AgentHello`], then [`FromAgent`]), what the coordinator says down
//! ([`ToAgent`]), what a client that submitted a run hears ([`RunEvent`]) and how the fleet is
//! listed ([`AgentSummary`]). [`crate::convert`] turns wire messages into these and back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::{HostFacts, RuntimeAvailability};
use crate::ids::{AgentId, JobId};
use crate::job::{JobAssignment, JobPhase, JobUpdate};

/// A wire message could not be turned into a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {}", crate::input::one_line(.message))]
pub struct ConvertError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Whether the coordinator hears from an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Its messages arrive (heartbeats at least) within the heartbeat expiry.
    Connected,
    /// It went silent past the heartbeat expiry; its session was closed.
    Lost,
}

/// A job an agent still runs, or still holds unacknowledged events of, when it (re)connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResume {
    /// The job.
    pub job_id: JobId,
    /// Highest event sequence number the agent has produced for the job.
    pub last_sequence: u64,
    /// Whether the job's worker still runs (or waits in the agent's queue).
    pub running: bool,
}

/// The first message of an agent's session: who it is and what its host can do.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentHello {
    /// The agent's id (safe as a file name).
    pub agent_id: AgentId,
    /// The agent's version.
    pub agent_version: String,
    /// Its host's facts.
    pub facts: HostFacts,
    /// The runtimes it can and cannot run.
    pub runtimes: Vec<RuntimeAvailability>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// The hardware class the operator set, if any (else the one derived from the facts).
    pub hardware_class: Option<String>,
    /// Jobs it resumes.
    pub jobs: Vec<JobResume>,
}

/// An agent's periodic sign of life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// When the agent sent it, in milliseconds since the Unix epoch.
    pub sent_unix_ms: u64,
    /// The jobs whose workers run.
    pub running_job_ids: Vec<JobId>,
}

/// One numbered event of a job, as an agent sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// Its number, from 1 per job.
    pub sequence: u64,
    /// The update it carries, or why the wire event carried none that is usable.
    pub update: Result<JobUpdate, ConvertError>,
}

/// A message on an agent's session after its [`AgentHello`].
#[derive(Debug, Clone, PartialEq)]
pub enum FromAgent {
    /// A heartbeat.
    Heartbeat(Heartbeat),
    /// A job's event.
    JobEvent(JobEvent),
    /// A message that means nothing after the hello (another hello, an empty one): it only
    /// shows the agent is alive.
    Unexpected,
}

/// The coordinator's answer to an [`AgentHello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// How often the agent heartbeats.
    pub heartbeat_interval: Duration,
    /// Per resumed job, the last sequence number the coordinator has; the agent resends what
    /// follows.
    pub acked_through: BTreeMap<JobId, u64>,
    /// Resumed jobs the coordinator does not know (or that belong to another agent): the
    /// agent deletes their outboxes, drops their later events and stops them.
    pub unknown_job_ids: Vec<JobId>,
}

/// What the coordinator sends down an agent's session.
#[derive(Debug, Clone, PartialEq)]
pub enum ToAgent {
    /// The answer to the hello.
    Welcome(Welcome),
    /// A job to run.
    Assign(Box<JobAssignment>),
    /// A job to stop.
    Cancel {
        /// The job.
        job_id: JobId,
        /// Why.
        reason: String,
    },
    /// The job's events up to and including `sequence` are stored; the agent may forget them.
    Ack {
        /// The job.
        job_id: JobId,
        /// The last stored event.
        sequence: u64,
    },
}

/// What the client that submitted a run hears about it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run was accepted.
    Accepted {
        /// The agents it runs on.
        agent_ids: Vec<AgentId>,
        /// Its deadline, in milliseconds since the Unix epoch.
        deadline_unix_ms: u64,
    },
    /// A job's progress.
    Progress {
        /// The agent.
        agent_id: AgentId,
        /// How the job appears in the report: the runtime, or `<runtime>@<gpu>`.
        runtime: String,
        /// Its phase.
        phase: JobPhase,
        /// Units done.
        done: u64,
        /// Units in the phase.
        total: u64,
    },
    /// The run's report, its JSON compressed. Last. Shared with the finished run that keeps
    /// it, so a large report is not copied to be sent.
    Report(std::sync::Arc<crate::report::EncodedReport>),
}

/// An agent as the fleet listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSummary {
    /// Its id.
    pub agent_id: AgentId,
    /// Its host's facts.
    pub facts: HostFacts,
    /// The runtimes it can and cannot run.
    pub runtimes: Vec<RuntimeAvailability>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Its hardware class.
    pub hardware_class: String,
    /// Whether the coordinator hears from it.
    pub state: AgentState,
    /// Whether its session's stream is open (a connected agent without one is listed as
    /// disconnected).
    pub session_open: bool,
    /// When it last sent a message, in milliseconds since the Unix epoch.
    pub last_seen_unix_ms: u64,
}

/// Agents in id order, after a given one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentListing {
    /// The agents.
    pub agents: Vec<AgentSummary>,
    /// Whether more agents follow the last one.
    pub more: bool,
}
