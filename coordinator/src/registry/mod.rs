//! The coordinator's state, owned by one task (the registry actor): agents, runs and jobs.
//! gRPC handlers talk to it through a [`RegistryHandle`], in domain terms: the service decodes
//! the wire messages into [`Command`]s and encodes what the registry sends back, so no wire
//! type reaches the registry. Nothing else touches the state, so there are no locks. A sweep
//! expires agents that stopped heartbeating (3 × the interval), forgets lost agents after their
//! time-to-live, ends runs whose deadline passed and drops finished runs past their count, age
//! or size limits. Everything kept is bounded: an agent by the `Hello` limits of
//! [`fleetgate_common::convert`], a finished run by its report.
//!
//! The actor's loop, its commands and its handle are here; its decisions are split by concern:
//! `agents` (sessions, hello, heartbeats, lost agents, listing), `runs` (submission,
//! selection, deadlines, finishing, retention of finished runs, reports) and `jobs`
//! (assignment, event sequence and acknowledgement rules, resume after a reconnect).

mod agents;
mod jobs;
mod runs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_common::config::OutOfRange;
use fleetgate_common::ids::{AgentId, JobId, RunId};
use fleetgate_common::input::one_line;
use fleetgate_common::messages::{AgentHello, AgentListing, FromAgent, RunEvent, ToAgent};
use fleetgate_common::report::EncodedReport;
use fleetgate_common::tls::ServerTls;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::plan::RunError;
use agents::AgentEntry;
use fleetgate_common::run::RunSpec;
use jobs::JobEntry;
use runs::{FinishedRun, RunEntry};

/// Largest message the coordinator sends a client (a page of agents, a report chunk), and the
/// most the CLI accepts: a reply that would be larger is not built (the agent list is paged, a
/// report is sent in chunks).
pub const MAX_REPLY_BYTES: usize = fleetgate_proto::MAX_MESSAGE_BYTES;

/// Most agents in one page of `ListAgents`.
pub const MAX_PAGE_AGENTS: u32 = 1_000;

/// Most ids of dropped finished runs remembered, so a fetch of one says it was dropped.
const MAX_FORGOTTEN_RUNS: usize = 10_000;

/// Coordinator timing.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// Heartbeat interval told to agents; an agent silent for 3 × this is lost.
    pub heartbeat_interval: Duration,
    /// How often agents and deadlines are checked.
    pub sweep_interval: Duration,
    /// Default whole-run deadline of a `pr` run.
    pub pr_deadline: Duration,
    /// Default whole-run deadline of a `nightly` run.
    pub nightly_deadline: Duration,
    /// The token agents must present (none: any agent may join).
    pub agent_token: Option<Token>,
    /// The token clients must present to submit runs or read the fleet (none: anyone may).
    pub client_token: Option<Token>,
    /// Most agent ids the coordinator keeps; a new id beyond it is refused.
    pub max_agents: usize,
    /// How long a lost (or disconnected) agent is kept after its last message; then it is
    /// forgotten, unless a run in progress includes it.
    pub lost_agent_ttl: Duration,
    /// Most runs in progress at once; a submission beyond it is refused.
    pub max_runs: usize,
    /// Most finished runs whose reports are kept (the oldest is dropped first).
    pub max_finished_runs: usize,
    /// How long a finished run's report is kept.
    pub finished_run_ttl: Duration,
    /// Most bytes of finished reports kept (the newest report is kept whatever its size).
    pub max_finished_report_bytes: usize,
    /// Time a new connection has to make its first gRPC request (TLS handshake and HTTP/2
    /// preface included) before it is closed.
    pub connection_setup_timeout: Duration,
    /// Time a connection may stay open with no call in progress before it is closed.
    pub connection_idle_timeout: Duration,
    /// Sustained messages per second one agent session may send (bursts of ten seconds' worth
    /// pass); a session over it is closed.
    pub agent_messages_per_second: u32,
    /// Largest message accepted from an agent or a client; a larger one ends its stream.
    pub max_message_bytes: usize,
    /// TLS for every connection (none: plaintext, only on the operator's explicit request).
    pub tls: Option<ServerTls>,
    /// Where every finished run's report is recorded (none: nowhere).
    pub history: Option<crate::history::HistoryRecorder>,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            heartbeat_interval: Duration::from_secs(2),
            sweep_interval: Duration::from_millis(250),
            pr_deadline: Duration::from_secs(30 * 60),
            nightly_deadline: Duration::from_secs(2 * 60 * 60),
            agent_token: None,
            client_token: None,
            max_agents: 20_000,
            lost_agent_ttl: Duration::from_secs(60 * 60),
            max_runs: 8,
            max_finished_runs: 100,
            finished_run_ttl: Duration::from_secs(24 * 60 * 60),
            max_finished_report_bytes: 64 * 1024 * 1024,
            connection_setup_timeout: Duration::from_secs(10),
            connection_idle_timeout: Duration::from_secs(60),
            agent_messages_per_second: 1_000,
            max_message_bytes: 16 * 1024 * 1024,
            tls: None,
            history: None,
        }
    }
}

/// Why the registry refuses a request, or why an agent's session or a run's event stream
/// ends with an error.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry stopped: the coordinator is shutting down.
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    /// Another session of the agent id is live.
    #[error(
        "agent id {agent_id} already has a live session from {holder} (two agents with one id? give each its own --agent-id)"
    )]
    AgentIdInUse {
        /// The agent id.
        agent_id: AgentId,
        /// Where the live session comes from.
        holder: String,
    },
    /// The coordinator knows as many agents as it may.
    #[error(
        "this coordinator already knows {known} agents, its limit (--max-agents); a lost agent is forgotten {ttl_seconds} s after its last message (--lost-agent-ttl-seconds)"
    )]
    TooManyAgents {
        /// Agents known.
        known: usize,
        /// The lost-agent time-to-live, in seconds.
        ttl_seconds: u64,
    },
    /// The agent's stream closed before its welcome could be sent.
    #[error("agent stream closed")]
    StreamClosed,
    /// An agent session sent more than its message rate (checked by the session, before the
    /// registry sees its messages).
    #[error(
        "agent {agent_id} sent more than {rate} messages per second; reconnect and resend from the acknowledged point"
    )]
    OverMessageRate {
        /// The agent.
        agent_id: AgentId,
        /// Messages per second allowed.
        rate: u32,
    },
    /// The run cannot be planned, or its gate does not cover the selected agents.
    #[error(transparent)]
    Run(#[from] RunError),
    /// As many runs are in progress as may be.
    #[error(
        "{in_progress} runs are in progress, this coordinator's limit (--max-runs); submit again when one ends"
    )]
    TooManyRuns {
        /// Runs in progress.
        in_progress: usize,
    },
    /// An agent the run selects by id has no live session.
    #[error("agent {0} is not connected")]
    AgentNotConnected(String),
    /// An agent the run selects by id is not known.
    #[error("agent {0} is not known to this coordinator")]
    UnknownAgent(String),
    /// Fewer connected agents match the selection than the run needs.
    #[error("{matched} connected agent(s) match the selection, the run needs at least {needed}")]
    TooFewAgents {
        /// Agents that match.
        matched: usize,
        /// Agents needed.
        needed: usize,
    },
    /// The run's deadline is out of range.
    #[error("deadline_ms: {0}")]
    Deadline(OutOfRange),
    /// The run's deadline cannot be represented as a time.
    #[error("deadline_ms: {millis} ms cannot be represented")]
    DeadlineUnrepresentable {
        /// The deadline, in milliseconds from now.
        millis: u128,
    },
    /// The run has not finished.
    #[error("run {} has not finished yet", one_line(.0.as_str()))]
    RunNotFinished(RunId),
    /// The run finished, but its report was dropped.
    #[error(
        "run {} finished, but its report is no longer kept (this coordinator keeps the last {kept} finished runs for {ttl_seconds} s: --max-finished-runs, --finished-run-ttl-seconds)",
        one_line(.run_id.as_str())
    )]
    ReportDropped {
        /// The run.
        run_id: RunId,
        /// Finished runs kept.
        kept: usize,
        /// How long a finished run is kept, in seconds.
        ttl_seconds: u64,
    },
    /// No such run.
    #[error("no run {} on this coordinator", one_line(.0.as_str()))]
    UnknownRun(RunId),
    /// The run's report is larger than one message may carry (`GetReport`, or a client that
    /// does not take chunks).
    #[error(transparent)]
    ReportTooLarge(#[from] ReportTooLarge),
    /// The coordinator shut down while the run was in progress.
    #[error("the coordinator shut down before run {0} finished")]
    ShutDownBeforeFinish(RunId),
}

impl RegistryError {
    /// The `reason` label of a refused agent session (the coordinator's
    /// `fleetgate_coordinator_sessions_refused_total`).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            RegistryError::ShuttingDown => "shutting_down",
            RegistryError::AgentIdInUse { .. } => "agent_id_in_use",
            RegistryError::TooManyAgents { .. } => "too_many_agents",
            RegistryError::StreamClosed => "stream_closed",
            RegistryError::OverMessageRate { .. } => "over_message_rate",
            _ => "other",
        }
    }
}

/// A run's report is larger than one message may carry, for a call that wants it in one
/// (`GetReport`, or a `SubmitRun` from a client that predates report chunks): it is not sent,
/// and this is said instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the report of run {run_id} is {bytes} bytes, more than one message may carry ({MAX_REPLY_BYTES} bytes); fetch it with StreamReport, or use a client that takes the report in chunks"
)]
pub struct ReportTooLarge {
    /// The run.
    pub run_id: RunId,
    /// The report's size, as JSON.
    pub bytes: u64,
}

/// One item of an agent session's outbound stream: what the coordinator says to the agent, or
/// why the session ends. Boxed: a session's queue holds two blocks of 32 slots once messages
/// flow (one ack per event), so a slot one pointer wide costs each connected agent 0.5 KiB
/// instead of 4 KiB (40 MiB less at 10,000 agents).
pub type ToAgentItem = Box<Result<ToAgent, RegistryError>>;

/// An agent session's outbound stream.
pub type Outbound = mpsc::Sender<ToAgentItem>;

/// A run's event stream: what its client hears, or why the run ended without a report.
pub type RunEvents = mpsc::Sender<Result<RunEvent, RegistryError>>;

/// What the registry is asked to do.
#[derive(Debug)]
pub enum Command {
    /// An agent opened its session with a hello.
    Connect {
        /// The hello.
        hello: Box<AgentHello>,
        /// Its outbound stream.
        outbound: Outbound,
        /// The address the session comes from.
        peer: Option<SocketAddr>,
        /// Connection id, or why it was refused.
        reply: oneshot::Sender<Result<u64, RegistryError>>,
    },
    /// A message on an agent's session.
    FromAgent {
        /// Agent id.
        agent_id: AgentId,
        /// Connection id.
        conn: u64,
        /// The message.
        message: FromAgent,
    },
    /// An agent's session ended.
    Disconnected {
        /// Agent id.
        agent_id: AgentId,
        /// Connection id.
        conn: u64,
    },
    /// A client submitted a run.
    Submit {
        /// The run.
        spec: Box<RunSpec>,
        /// Where its events go.
        events: RunEvents,
        /// The run id, or why it was refused.
        reply: oneshot::Sender<Result<RunId, RegistryError>>,
    },
    /// List agents in agent-id order, a page at a time.
    ListAgents {
        /// The last agent of the previous page (none: from the first).
        after: Option<AgentId>,
        /// Most agents in the page (0: [`MAX_PAGE_AGENTS`]).
        page_size: u32,
        /// The page.
        reply: oneshot::Sender<AgentListing>,
    },
    /// A finished run's report.
    GetReport {
        /// Run id.
        run_id: RunId,
        /// The report (its JSON, compressed), or why there is none (unknown, unfinished,
        /// dropped).
        reply: oneshot::Sender<Result<std::sync::Arc<EncodedReport>, RegistryError>>,
    },
}

/// Sender-side façade of the registry actor.
#[derive(Debug, Clone)]
pub struct RegistryHandle {
    tx: mpsc::Sender<Command>,
}

impl RegistryHandle {
    /// Sends a command; an error means the registry stopped (the coordinator is shutting down).
    pub async fn send(&self, command: Command) -> Result<(), RegistryError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| RegistryError::ShuttingDown)
    }

    /// Sends a command and waits for its reply.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RegistryError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| RegistryError::ShuttingDown)
    }
}

/// Starts the registry actor.
pub fn spawn(settings: CoordinatorSettings, shutdown: CancellationToken) -> RegistryHandle {
    let (tx, rx) = mpsc::channel(4_096);
    tokio::spawn(Registry::new(settings).run(rx, shutdown));
    RegistryHandle { tx }
}

/// The registry's state.
#[derive(Debug)]
struct Registry {
    settings: CoordinatorSettings,
    agents: BTreeMap<AgentId, AgentEntry>,
    jobs: BTreeMap<JobId, JobEntry>,
    /// Runs in progress.
    runs: BTreeMap<RunId, RunEntry>,
    /// Finished runs kept, and their ids oldest first.
    finished: BTreeMap<RunId, FinishedRun>,
    finished_order: VecDeque<RunId>,
    /// Bytes of the kept reports.
    finished_bytes: usize,
    /// Ids of finished runs dropped, oldest first (at most [`MAX_FORGOTTEN_RUNS`]).
    forgotten: VecDeque<RunId>,
    next_conn: u64,
    next_run: u64,
}

/// Now, in milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A peer's address for a message.
pub(crate) fn shown(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string())
}

impl Registry {
    fn new(settings: CoordinatorSettings) -> Self {
        Registry {
            settings,
            agents: BTreeMap::new(),
            jobs: BTreeMap::new(),
            runs: BTreeMap::new(),
            finished: BTreeMap::new(),
            finished_order: VecDeque::new(),
            finished_bytes: 0,
            forgotten: VecDeque::new(),
            next_conn: 1,
            next_run: 1,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(self.settings.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                // Due sweeps first, so a busy command queue cannot postpone expiry.
                _ = sweep.tick() => self.sweep(),
                command = rx.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
            }
        }
        // Runs still open get a clear failure rather than a silent close.
        for (run_id, run) in &self.runs {
            run.events
                .try_send(Err(RegistryError::ShutDownBeforeFinish(run_id.clone())))
                .ok();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Connect {
                hello,
                outbound,
                peer,
                reply,
            } => {
                let result = self.connect(*hello, outbound, peer);
                if let Err(e) = &result {
                    crate::metrics::session_refused(e.metric_reason());
                }
                reply.send(result).ok();
            }
            Command::FromAgent {
                agent_id,
                conn,
                message,
            } => self.agent_message(&agent_id, conn, message),
            Command::Disconnected { agent_id, conn } => self.disconnected(&agent_id, conn),
            Command::Submit {
                spec,
                events,
                reply,
            } => {
                let result = self.submit(*spec, events);
                if result.is_ok() {
                    crate::metrics::run_submitted();
                }
                reply.send(result).ok();
            }
            Command::ListAgents {
                after,
                page_size,
                reply,
            } => {
                reply.send(self.list_agents(after.as_ref(), page_size)).ok();
            }
            Command::GetReport { run_id, reply } => {
                reply.send(self.report(&run_id)).ok();
            }
        }
    }

    /// The periodic checks: silent agents are lost, lost agents past their time-to-live are
    /// forgotten, abandoned runs are cancelled, runs past their deadline end, and finished runs
    /// past the retention limits are dropped.
    fn sweep(&mut self) {
        let now = tokio::time::Instant::now();
        self.expire_silent_agents(now);
        self.forget_lost_agents(now);
        self.end_abandoned_and_due_runs(now);
        self.prune_finished(now);
        crate::metrics::publish(&self.census());
    }

    /// The counts the coordinator's gauges show.
    fn census(&self) -> crate::metrics::Census {
        let mut census = crate::metrics::Census {
            runs_in_progress: self.runs.len(),
            runs_finished_kept: self.finished.len(),
            jobs: self.jobs.values().map(|j| j.status).collect(),
            ..crate::metrics::Census::default()
        };
        for agent in self.agents.values() {
            match (&agent.conn, agent.state) {
                (_, fleetgate_common::messages::AgentState::Lost) => census.lost += 1,
                (Some(_), fleetgate_common::messages::AgentState::Connected) => {
                    census.connected += 1
                }
                (None, fleetgate_common::messages::AgentState::Connected) => {
                    census.disconnected += 1
                }
            }
        }
        census
    }
}
