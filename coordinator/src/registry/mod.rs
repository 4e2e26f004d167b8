//! The coordinator's state, owned by one task (the registry actor): agents, runs and jobs.
//! gRPC handlers talk to it through a [`RegistryHandle`]; nothing else touches the state, so
//! there are no locks. A sweep expires agents that stopped heartbeating (3 × the interval),
//! forgets lost agents after their time-to-live, ends runs whose deadline passed and drops
//! finished runs past their count, age or size limits. Everything kept is bounded: an agent by
//! the `Hello` limits of [`fleetgate_common::convert`], a finished run by its report.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_common::config;
use fleetgate_common::convert::{self, JobRequest};
use fleetgate_common::fleet::{
    HostFacts, JobPhase, JobStatus, JobSummary, JobUpdate, RuntimeAvailability,
    derive_hardware_class,
};
use fleetgate_common::report::RuntimeSection;
use fleetgate_common::tls::ServerTls;
use fleetgate_proto::v1 as pb;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::fleet_report::{self, AgentRecord, JobRecord};
use crate::plan::{self, RunError, RunPlan, RunSpec};

use fleetgate_proto::PROTOCOL_VERSION;

/// Largest message the coordinator sends a client (a report, a page of agents), and the most
/// the CLI accepts: a reply that would be larger is not built (a report says so instead, the
/// agent list is paged).
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

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
            max_agents: 1_000,
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
        }
    }
}

type Outbound = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;
type RunEvents = mpsc::Sender<Result<pb::RunEvent, Status>>;

/// What the registry is asked to do.
#[derive(Debug)]
pub enum Command {
    /// An agent opened its stream with `hello`.
    Connect {
        /// The first message.
        hello: pb::Hello,
        /// Its outbound stream.
        outbound: Outbound,
        /// The address the session comes from.
        peer: Option<SocketAddr>,
        /// Connection id, or why it was refused.
        reply: oneshot::Sender<Result<u64, Status>>,
    },
    /// A message on an agent's stream.
    FromAgent {
        /// Agent id.
        agent_id: String,
        /// Connection id.
        conn: u64,
        /// The message.
        message: pb::AgentMessage,
    },
    /// An agent's stream ended.
    Disconnected {
        /// Agent id.
        agent_id: String,
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
        reply: oneshot::Sender<Result<String, Status>>,
    },
    /// List agents, a page at a time (in agent-id order).
    ListAgents {
        /// The last agent id of the previous page (empty: from the first).
        page_token: String,
        /// Most agents in the page (0: [`MAX_PAGE_AGENTS`]).
        page_size: u32,
        /// The page.
        reply: oneshot::Sender<pb::ListAgentsResponse>,
    },
    /// A finished run's report.
    GetReport {
        /// Run id.
        run_id: String,
        /// The report JSON, or why there is none (unknown, unfinished, dropped, too large).
        reply: oneshot::Sender<Result<String, Status>>,
    },
}

/// Sender-side façade of the registry actor.
#[derive(Debug, Clone)]
pub struct RegistryHandle {
    tx: mpsc::Sender<Command>,
}

impl RegistryHandle {
    /// Sends a command; an error means the registry stopped (the coordinator is shutting down).
    pub async fn send(&self, command: Command) -> Result<(), Status> {
        self.tx
            .send(command)
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))
    }

    /// Sends a command and waits for its reply.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))
    }
}

/// Starts the registry actor.
pub fn spawn(settings: CoordinatorSettings, shutdown: CancellationToken) -> RegistryHandle {
    let (tx, rx) = mpsc::channel(4_096);
    let registry = Registry {
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
    };
    tokio::spawn(registry.run(rx, shutdown));
    RegistryHandle { tx }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    Connected,
    Lost,
}

#[derive(Debug)]
struct AgentEntry {
    facts: HostFacts,
    runtimes: Vec<RuntimeAvailability>,
    labels: BTreeMap<String, String>,
    hardware_class: String,
    state: AgentState,
    last_seen: Instant,
    last_seen_unix_ms: u64,
    conn: Option<(u64, Outbound)>,
    /// Where the latest session came from.
    peer: Option<SocketAddr>,
    /// Events of this agent ignored (unknown job, or another agent's) since the last warning
    /// about them, and when that warning was logged: at most one warning per
    /// [`IGNORED_EVENT_WARNING_INTERVAL`], carrying the count.
    ignored_events: u64,
    ignored_warned_at: Option<Instant>,
}

/// How often, at most, one agent's ignored events are logged.
const IGNORED_EVENT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl AgentEntry {
    /// Counts an ignored event; true when a warning is due (the first one, then at most one
    /// per interval).
    fn warn_ignored(&mut self, now: Instant) -> Option<u64> {
        self.ignored_events += 1;
        let due = self
            .ignored_warned_at
            .is_none_or(|at| now.duration_since(at) >= IGNORED_EVENT_WARNING_INTERVAL);
        due.then(|| {
            self.ignored_warned_at = Some(now);
            std::mem::take(&mut self.ignored_events)
        })
    }
}

#[derive(Debug)]
struct JobEntry {
    request: JobRequest,
    /// How the job appears in the report: the runtime, or `<runtime>@<gpu>`.
    label: String,
    agent_id: String,
    status: JobStatus,
    phase: JobPhase,
    done: u64,
    total: u64,
    last_sequence: u64,
    events: u64,
    checkpoints: u64,
    dispatched: Instant,
    finished: Option<Instant>,
    section: Option<RuntimeSection>,
    reason: Option<String>,
}

impl JobEntry {
    fn terminal(&self) -> bool {
        self.status != JobStatus::Running
    }
}

/// A run in progress.
#[derive(Debug)]
struct RunEntry {
    plan: RunPlan,
    agents: Vec<String>,
    jobs: Vec<String>,
    deadline: Instant,
    events: RunEvents,
}

/// A finished run: only its report is kept (its plan, inputs and jobs are dropped).
#[derive(Debug)]
struct FinishedRun {
    /// The report JSON, or why it could not be sent (too large for a reply).
    report: Result<String, String>,
    finished: Instant,
}

impl FinishedRun {
    fn bytes(&self) -> usize {
        match &self.report {
            Ok(json) => json.len(),
            Err(reason) => reason.len(),
        }
    }
}

struct Registry {
    settings: CoordinatorSettings,
    agents: BTreeMap<String, AgentEntry>,
    jobs: BTreeMap<String, JobEntry>,
    /// Runs in progress.
    runs: BTreeMap<String, RunEntry>,
    /// Finished runs kept, and their ids oldest first.
    finished: BTreeMap<String, FinishedRun>,
    finished_order: VecDeque<String>,
    /// Bytes of the kept reports.
    finished_bytes: usize,
    /// Ids of finished runs dropped, oldest first (at most [`MAX_FORGOTTEN_RUNS`]).
    forgotten: VecDeque<String>,
    next_conn: u64,
    next_run: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn coordinator_message(
    body: pb::coordinator_message::Body,
) -> Result<pb::CoordinatorMessage, Status> {
    Ok(pb::CoordinatorMessage { body: Some(body) })
}

fn shown(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string())
}

fn run_status(e: RunError) -> Status {
    match e {
        RunError::InvalidInput(m) | RunError::Usage(m) => Status::invalid_argument(m),
        other => Status::internal(other.to_string()),
    }
}

impl Registry {
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
                .try_send(Err(Status::unavailable(format!(
                    "the coordinator shut down before run {run_id} finished"
                ))))
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
                let result = self.connect(hello, outbound, peer);
                reply.send(result).ok();
            }
            Command::FromAgent {
                agent_id,
                conn,
                message,
            } => self.agent_message(&agent_id, conn, message),
            Command::Disconnected { agent_id, conn } => {
                if let Some(agent) = self.agents.get_mut(&agent_id)
                    && agent.conn.as_ref().is_some_and(|(c, _)| *c == conn)
                {
                    tracing::info!(agent_id = %agent_id, "Agent stream closed.");
                    agent.conn = None;
                }
            }
            Command::Submit {
                spec,
                events,
                reply,
            } => {
                let result = self.submit(*spec, events);
                reply.send(result).ok();
            }
            Command::ListAgents {
                page_token,
                page_size,
                reply,
            } => {
                reply.send(self.list_agents(&page_token, page_size)).ok();
            }
            Command::GetReport { run_id, reply } => {
                reply.send(self.report(&run_id)).ok();
            }
        }
    }

    /// Silence after which an agent is lost (and its session may be replaced).
    fn expiry(&self) -> Duration {
        self.settings.heartbeat_interval.saturating_mul(3)
    }

    fn connect(
        &mut self,
        hello: pb::Hello,
        outbound: Outbound,
        peer: Option<SocketAddr>,
    ) -> Result<u64, Status> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported (this coordinator speaks {PROTOCOL_VERSION})",
                hello.protocol_version
            )));
        }
        let agent_id = hello.agent_id.clone();
        if !fleetgate_common::ids::is_safe_id(&agent_id) {
            return Err(Status::invalid_argument(
                "agent_id must be 1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if let Err(e) = convert::check_hello(&hello) {
            tracing::warn!(agent_id = %agent_id, peer = %shown(peer), error = %e, "Agent refused: its Hello is over a limit.");
            return Err(Status::invalid_argument(e.to_string()));
        }
        // One live session per id: a second one (a cloned host with the same id) is refused,
        // so neither takes the other's session over. A session silent past the heartbeat
        // expiry, or whose stream is gone, is no longer live and may be replaced.
        let now = Instant::now();
        if let Some(existing) = self.agents.get(&agent_id)
            && let Some((_, current)) = &existing.conn
        {
            let holder = shown(existing.peer);
            if now.duration_since(existing.last_seen) <= self.expiry() && !current.is_closed() {
                tracing::warn!(agent_id = %agent_id, peer = %shown(peer), holder = %holder, "Agent refused: its id already has a live session from another peer.");
                return Err(Status::already_exists(format!(
                    "agent id {agent_id} already has a live session from {holder} (two agents with one id? give each its own --agent-id)"
                )));
            }
            tracing::info!(agent_id = %agent_id, peer = %shown(peer), previous = %holder, "Agent session replaces one that went silent.");
        }
        if !self.agents.contains_key(&agent_id) && self.agents.len() >= self.settings.max_agents {
            tracing::warn!(agent_id = %agent_id, "Agent refused: the coordinator is at its agent limit.");
            return Err(Status::resource_exhausted(format!(
                "this coordinator already knows {} agents, its limit (--max-agents); a lost agent is forgotten {} s after its last message (--lost-agent-ttl-seconds)",
                self.agents.len(),
                self.settings.lost_agent_ttl.as_secs()
            )));
        }
        let facts = HostFacts::from(hello.facts.unwrap_or_default());
        let hardware_class = if hello.hardware_class.is_empty() {
            derive_hardware_class(&facts)
        } else {
            hello.hardware_class
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        let known: BTreeSet<String> = hello.jobs.iter().map(|j| j.job_id.clone()).collect();
        let mut acked_through = std::collections::HashMap::new();
        let mut cancel = Vec::new();
        let mut unknown_job_ids = Vec::new();
        for resume in &hello.jobs {
            match self.jobs.get(&resume.job_id) {
                Some(job) if job.agent_id == agent_id => {
                    acked_through.insert(resume.job_id.clone(), job.last_sequence);
                    if resume.running && job.terminal() {
                        cancel.push(resume.job_id.clone());
                    }
                }
                _ => {
                    // A job of a run this coordinator does not know (it restarted): the agent
                    // may forget its events, and stops it if it still runs.
                    acked_through.insert(resume.job_id.clone(), resume.last_sequence);
                    unknown_job_ids.push(resume.job_id.clone());
                    if resume.running {
                        cancel.push(resume.job_id.clone());
                    }
                }
            }
        }
        let welcome = pb::Welcome {
            heartbeat_interval_ms: u32::try_from(self.settings.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            acked_through,
            unknown_job_ids,
        };
        outbound
            .try_send(coordinator_message(pb::coordinator_message::Body::Welcome(
                welcome,
            )))
            .map_err(|_| Status::unavailable("agent stream closed"))?;
        for job_id in cancel {
            outbound
                .try_send(coordinator_message(
                    pb::coordinator_message::Body::CancelJob(pb::CancelJob {
                        job_id,
                        reason: "the coordinator does not know this job's run".into(),
                    }),
                ))
                .ok();
        }
        let was_lost = self
            .agents
            .get(&agent_id)
            .is_some_and(|a| a.state == AgentState::Lost);
        self.agents.insert(
            agent_id.clone(),
            AgentEntry {
                facts,
                runtimes: hello
                    .runtimes
                    .into_iter()
                    .map(RuntimeAvailability::from)
                    .collect(),
                labels: hello.labels.into_iter().collect(),
                hardware_class,
                state: AgentState::Connected,
                last_seen: now,
                last_seen_unix_ms: unix_ms(),
                conn: Some((conn, outbound.clone())),
                peer,
                ignored_events: 0,
                ignored_warned_at: None,
            },
        );
        tracing::info!(agent_id = %agent_id, conn, rejoined = was_lost, "Agent registered.");
        // Jobs of this agent that it does not hold: resend the assignment if it never
        // reported anything, else the agent lost the job (it restarted).
        let pending: Vec<String> = self
            .jobs
            .iter()
            .filter(|(id, j)| j.agent_id == agent_id && !j.terminal() && !known.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for job_id in pending {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            if job.last_sequence == 0 {
                outbound
                    .try_send(coordinator_message(
                        pb::coordinator_message::Body::AssignJob(pb::AssignJob {
                            job: Some(pb::JobSpec::from(&job.request)),
                        }),
                    ))
                    .ok();
            } else {
                job.status = JobStatus::Failed;
                job.reason = Some("the agent came back without the job (it restarted)".into());
                job.finished = Some(Instant::now());
                let run_id = job.request.run_id.clone();
                self.maybe_finish(&run_id);
            }
        }
        Ok(conn)
    }

    fn agent_message(&mut self, agent_id: &str, conn: u64, message: pb::AgentMessage) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        let Some((current, outbound)) = &agent.conn else {
            return;
        };
        if *current != conn {
            return; // a stale stream
        }
        let outbound = outbound.clone();
        agent.last_seen = Instant::now();
        agent.last_seen_unix_ms = unix_ms();
        if agent.state == AgentState::Lost {
            agent.state = AgentState::Connected;
        }
        use pb::agent_message::Body;
        match message.body {
            Some(Body::JobEvent(event)) => self.job_event(agent_id, &outbound, event),
            Some(Body::Heartbeat(_)) | Some(Body::Hello(_)) | None => {}
        }
    }

    fn job_event(&mut self, agent_id: &str, outbound: &Outbound, event: pb::JobEvent) {
        let job_id = event.job_id.clone();
        let sequence = event.sequence;
        let owner = self.jobs.get(&job_id).map(|job| job.agent_id.clone());
        if owner.as_deref() != Some(agent_id) {
            if let Some(count) = self
                .agents
                .get_mut(agent_id)
                .and_then(|agent| agent.warn_ignored(Instant::now()))
            {
                match owner {
                    None => {
                        tracing::warn!(agent_id, job_id = %job_id, events = count, "Events for an unknown job ignored.");
                    }
                    Some(owner) => {
                        tracing::warn!(agent_id, job_id = %job_id, owner = %owner, events = count, "Events for another agent's job refused.");
                    }
                }
            }
            return;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let ack = |sequence: u64| {
            outbound
                .try_send(coordinator_message(pb::coordinator_message::Body::Ack(
                    pb::Ack {
                        job_id: job_id.clone(),
                        sequence,
                    },
                )))
                .ok();
        };
        if sequence <= job.last_sequence {
            ack(job.last_sequence); // a resent duplicate: already stored
            return;
        }
        if sequence != job.last_sequence + 1 || job.terminal() {
            // A gap (events lost in flight) or an event after the end: keep what is stored;
            // the agent resends from the acknowledged point after it reconnects.
            ack(job.last_sequence);
            return;
        }
        let update = match convert::job_update_from_pb(event) {
            Ok(update) => update,
            Err(e) => {
                // Waiting for the deadline would only hide it: the job ends now, saying why.
                tracing::warn!(agent_id, job_id = %job_id, error = %e, "Unusable job event; the job fails.");
                JobUpdate::Failed {
                    phase: job.phase,
                    reason: format!("the agent sent an unusable event: {e}"),
                }
            }
        };
        job.last_sequence = sequence;
        job.events += 1;
        ack(sequence);
        let run_id = job.request.run_id.clone();
        match update {
            JobUpdate::Started { .. } => {}
            JobUpdate::Checkpoint { .. } => job.checkpoints += 1,
            JobUpdate::Progress { phase, done, total } => {
                job.phase = phase;
                job.done = done;
                job.total = total;
                if let Some(run) = self.runs.get(&run_id) {
                    run.events
                        .try_send(Ok(pb::RunEvent {
                            run_id: run_id.clone(),
                            body: Some(pb::run_event::Body::Progress(pb::AgentProgress {
                                agent_id: agent_id.to_owned(),
                                runtime: job.label.clone(),
                                phase: phase.name().to_owned(),
                                done,
                                total,
                            })),
                        }))
                        .ok();
                }
            }
            JobUpdate::Report { section } => {
                job.status = JobStatus::Completed;
                job.section = Some(*section);
                job.finished = Some(Instant::now());
            }
            JobUpdate::Failed { phase, reason } => {
                job.status = JobStatus::Failed;
                job.phase = phase;
                job.reason = Some(reason);
                job.finished = Some(Instant::now());
            }
        }
        if self.jobs.get(&job_id).is_some_and(JobEntry::terminal) {
            self.maybe_finish(&run_id);
        }
    }

    fn submit(&mut self, spec: RunSpec, events: RunEvents) -> Result<String, Status> {
        let plan = plan::plan(spec).map_err(run_status)?;
        let in_progress = self.runs.len();
        if in_progress >= self.settings.max_runs {
            return Err(Status::resource_exhausted(format!(
                "{in_progress} runs are in progress, this coordinator's limit (--max-runs); submit again when one ends"
            )));
        }
        let selection = &plan.spec.selection;
        for id in &selection.agent_ids {
            match self.agents.get(id) {
                Some(a) if a.state == AgentState::Connected && a.conn.is_some() => {}
                Some(_) => {
                    return Err(Status::failed_precondition(format!(
                        "agent {id} is not connected"
                    )));
                }
                None => {
                    return Err(Status::failed_precondition(format!(
                        "agent {id} is not known to this coordinator"
                    )));
                }
            }
        }
        let selected: Vec<String> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                a.state == AgentState::Connected
                    && a.conn.is_some()
                    && (selection.agent_ids.is_empty() || selection.agent_ids.contains(id))
                    && selection
                        .labels
                        .iter()
                        .all(|(k, v)| a.labels.get(k) == Some(v))
                    && selection
                        .hardware_class
                        .as_ref()
                        .is_none_or(|c| *c == a.hardware_class)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let needed = selection.min_agents.max(1) as usize;
        if selected.len() < needed {
            return Err(Status::failed_precondition(format!(
                "{} connected agent(s) match the selection, the run needs at least {needed}",
                selected.len()
            )));
        }
        let class_of = |agent: &str| self.agents.get(agent).map(|a| a.hardware_class.clone());
        plan.require_coverage(&selected, &class_of)
            .map_err(run_status)?;

        let deadline = match plan.spec.deadline {
            Some(deadline) => config::check_deadline(deadline)
                .map_err(|e| Status::invalid_argument(format!("deadline_ms: {e}")))?,
            None => match plan.config.profile {
                config::Profile::Pr => self.settings.pr_deadline,
                config::Profile::Nightly => self.settings.nightly_deadline,
            },
        };
        let (Some(deadline_at), Some(deadline_unix_ms)) = (
            Instant::now().checked_add(deadline),
            u64::try_from(deadline.as_millis())
                .ok()
                .and_then(|ms| unix_ms().checked_add(ms)),
        ) else {
            return Err(Status::invalid_argument(format!(
                "deadline_ms: {} ms cannot be represented",
                deadline.as_millis()
            )));
        };
        let run_id = format!("run-{}-{}", unix_ms(), self.next_run);
        self.next_run += 1;
        let mut job_ids = Vec::new();
        for agent_id in &selected {
            let gpus = self
                .agents
                .get(agent_id)
                .map_or(0, |a| a.facts.gpus.len() as u32);
            for runtime in plan.config.runtimes.keys() {
                // Per-GPU runtimes get one job per GPU of the agent (`<runtime>@<gpu>`); on
                // an agent without GPUs, one job that reports the runtime unavailable.
                let per_gpu = fleetgate_agent::runtime::RuntimeKind::from_name(runtime)
                    .is_some_and(|k| k.per_gpu());
                let instances: Vec<(String, Option<u32>)> = if per_gpu && gpus > 0 {
                    (0..gpus)
                        .map(|g| (format!("{runtime}@{g}"), Some(g)))
                        .collect()
                } else {
                    vec![(runtime.clone(), None)]
                };
                for (label, device) in instances {
                    let job_id = format!("{run_id}-{}", job_ids.len());
                    let request = JobRequest {
                        job_id: job_id.clone(),
                        run_id: run_id.clone(),
                        runtime: runtime.clone(),
                        device,
                        profile: plan.config.profile,
                        mode: plan.config.mode,
                        iterations: plan.config.iterations,
                        allocation_kb: plan.config.allocation_kb,
                        workload: plan.config.workload,
                        deadline_unix_ms,
                        knobs: plan.config.knobs.get(runtime).copied().unwrap_or_default(),
                        overhead_scratch_root: plan.config.overhead_scratch_root.clone(),
                    };
                    if let Some((_, outbound)) =
                        self.agents.get(agent_id).and_then(|a| a.conn.as_ref())
                    {
                        outbound
                            .try_send(coordinator_message(
                                pb::coordinator_message::Body::AssignJob(pb::AssignJob {
                                    job: Some(pb::JobSpec::from(&request)),
                                }),
                            ))
                            .ok();
                    }
                    self.jobs.insert(
                        job_id.clone(),
                        JobEntry {
                            request,
                            label,
                            agent_id: agent_id.clone(),
                            status: JobStatus::Running,
                            phase: JobPhase::Starting,
                            done: 0,
                            total: 0,
                            last_sequence: 0,
                            events: 0,
                            checkpoints: 0,
                            dispatched: Instant::now(),
                            finished: None,
                            section: None,
                            reason: None,
                        },
                    );
                    job_ids.push(job_id);
                }
            }
        }
        events
            .try_send(Ok(pb::RunEvent {
                run_id: run_id.clone(),
                body: Some(pb::run_event::Body::Accepted(pb::RunAccepted {
                    agent_ids: selected.clone(),
                    deadline_unix_ms,
                })),
            }))
            .ok();
        tracing::info!(run_id = %run_id, agents = selected.len(), jobs = job_ids.len(), "Run accepted.");
        self.runs.insert(
            run_id.clone(),
            RunEntry {
                plan,
                agents: selected,
                jobs: job_ids,
                deadline: deadline_at,
                events,
            },
        );
        Ok(run_id)
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let expiry = self.expiry();
        for (id, agent) in &mut self.agents {
            if agent.state == AgentState::Connected && now.duration_since(agent.last_seen) > expiry
            {
                tracing::warn!(agent_id = %id, silent_ms = now.duration_since(agent.last_seen).as_millis() as u64, "Agent lost: no heartbeat.");
                agent.state = AgentState::Lost;
                agent.conn = None;
            }
        }
        self.forget_lost_agents(now);
        // A run whose client went away is cancelled: nobody is left to gate on it.
        let abandoned: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.events.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        for run_id in abandoned {
            tracing::warn!(run_id = %run_id, "The client that submitted the run went away; cancelling it.");
            self.end_unfinished(
                &run_id,
                now,
                Some("the client that submitted the run went away"),
            );
            self.maybe_finish(&run_id);
        }
        let due: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for run_id in due {
            self.end_unfinished(&run_id, now, None);
            self.maybe_finish(&run_id);
        }
        self.prune_finished(now);
    }

    /// Forgets agents without a session whose last message is older than the time-to-live,
    /// unless a run in progress includes them (its report needs their facts).
    fn forget_lost_agents(&mut self, now: Instant) {
        let ttl = self.settings.lost_agent_ttl;
        let expired: Vec<String> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                a.conn.is_none()
                    && now.duration_since(a.last_seen) > ttl
                    && !self.runs.values().any(|r| r.agents.contains(id))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(agent_id = %id, ttl_s = ttl.as_secs(), "Lost agent forgotten after its time-to-live.");
            self.agents.remove(&id);
        }
    }

    /// Drops finished runs over the count, age or size limits, oldest first; the newest is
    /// kept whatever its size, so a report is always readable right after its run.
    fn prune_finished(&mut self, now: Instant) {
        while let Some(oldest) = self.finished_order.front() {
            let Some(run) = self.finished.get(oldest) else {
                self.finished_order.pop_front();
                continue;
            };
            let over = self.finished.len() > self.settings.max_finished_runs
                || now.duration_since(run.finished) > self.settings.finished_run_ttl
                || (self.finished_bytes > self.settings.max_finished_report_bytes
                    && self.finished.len() > 1);
            if !over {
                break;
            }
            let Some(run_id) = self.finished_order.pop_front() else {
                break;
            };
            if let Some(run) = self.finished.remove(&run_id) {
                self.finished_bytes = self.finished_bytes.saturating_sub(run.bytes());
            }
            tracing::debug!(run_id = %run_id, "Finished run dropped.");
            if self.forgotten.len() >= MAX_FORGOTTEN_RUNS {
                self.forgotten.pop_front();
            }
            self.forgotten.push_back(run_id);
        }
    }

    /// A finished run's report, or why there is none.
    fn report(&self, run_id: &str) -> Result<String, Status> {
        if let Some(run) = self.finished.get(run_id) {
            return run.report.clone().map_err(Status::resource_exhausted);
        }
        let shown_id = fleetgate_common::input::one_line(run_id);
        if self.runs.contains_key(run_id) {
            return Err(Status::not_found(format!(
                "run {shown_id} has not finished yet"
            )));
        }
        if self.forgotten.iter().any(|id| id == run_id) {
            return Err(Status::not_found(format!(
                "run {shown_id} finished, but its report is no longer kept (this coordinator keeps the last {} finished runs for {} s: --max-finished-runs, --finished-run-ttl-seconds)",
                self.settings.max_finished_runs,
                self.settings.finished_run_ttl.as_secs()
            )));
        }
        Err(Status::not_found(format!(
            "no run {shown_id} on this coordinator"
        )))
    }

    /// Ends every unfinished job of a run: cancelled with `cancel_reason`, else lost (agent
    /// gone) or timed out (deadline); the agents still connected are told to stop them.
    fn end_unfinished(&mut self, run_id: &str, now: Instant, cancel_reason: Option<&str>) {
        let job_ids = self
            .runs
            .get(run_id)
            .map(|r| r.jobs.clone())
            .unwrap_or_default();
        for job_id in job_ids {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            if job.terminal() {
                continue;
            }
            let agent = self.agents.get(&job.agent_id);
            let lost = agent.is_none_or(|a| a.state == AgentState::Lost || a.conn.is_none());
            let (status, reason) = match cancel_reason {
                Some(reason) => (JobStatus::Cancelled, reason.to_owned()),
                None if lost => (
                    JobStatus::Lost,
                    "the agent was lost and did not come back before the run's deadline".to_owned(),
                ),
                None => (JobStatus::TimedOut, "the run's deadline passed".to_owned()),
            };
            job.status = status;
            job.reason = Some(reason.clone());
            job.finished = Some(now);
            if let Some((_, outbound)) = agent.and_then(|a| a.conn.as_ref()) {
                outbound
                    .try_send(coordinator_message(
                        pb::coordinator_message::Body::CancelJob(pb::CancelJob {
                            job_id: job_id.clone(),
                            reason,
                        }),
                    ))
                    .ok();
            }
        }
    }

    /// Builds and delivers the report once every job of the run is terminal.
    fn maybe_finish(&mut self, run_id: &str) {
        let Some(run) = self.runs.get(run_id) else {
            return;
        };
        if !run
            .jobs
            .iter()
            .all(|j| self.jobs.get(j).is_some_and(JobEntry::terminal))
        {
            return;
        }
        let agents: Vec<AgentRecord> = run
            .agents
            .iter()
            .filter_map(|id| {
                self.agents.get(id).map(|a| AgentRecord {
                    agent_id: id.clone(),
                    facts: a.facts.clone(),
                    labels: a.labels.clone(),
                    hardware_class: a.hardware_class.clone(),
                })
            })
            .collect();
        let jobs: Vec<JobRecord> = run
            .jobs
            .iter()
            .filter_map(|id| self.jobs.get(id).map(|j| (id, j)))
            .map(|(id, j)| JobRecord {
                agent_id: j.agent_id.clone(),
                runtime: j.label.clone(),
                summary: JobSummary {
                    job_id: id.clone(),
                    status: j.status,
                    phase: j.phase.name().to_owned(),
                    done: j.done,
                    total: j.total,
                    events: j.events,
                    checkpoints: j.checkpoints,
                    wall_seconds: j
                        .finished
                        .unwrap_or_else(Instant::now)
                        .duration_since(j.dispatched)
                        .as_secs_f64(),
                    reason: j.reason.clone(),
                },
                section: j.section.clone(),
            })
            .collect();
        let report = fleet_report::build_report(&run.plan, &agents, &jobs, unix_ms() / 1_000);
        let json = match serde_json::to_string(&report) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(run_id, error = %e, "Report could not be encoded.");
                return;
            }
        };
        tracing::info!(run_id, verdict = report.verdict.name(), "Run finished.");
        let events = run.events.clone();
        // A reply larger than a client accepts is never built: the client is told instead.
        let kept = if json.len() + 1_024 > MAX_REPLY_BYTES {
            let reason = format!(
                "the report of run {run_id} is {} bytes, more than a reply may carry ({MAX_REPLY_BYTES} bytes); run on fewer agents or runtimes",
                json.len()
            );
            tracing::error!(run_id, bytes = json.len(), "Report too large to send.");
            Err(reason)
        } else {
            Ok(json)
        };
        let event = match &kept {
            Ok(json) => Ok(pb::RunEvent {
                run_id: run_id.to_owned(),
                body: Some(pb::run_event::Body::ReportJson(json.clone())),
            }),
            Err(reason) => Err(Status::resource_exhausted(reason.clone())),
        };
        // The report must arrive even when the progress queue is full.
        tokio::spawn(async move {
            events.send(event).await.ok();
        });
        self.retire(run_id, kept);
    }

    /// Moves a run from the runs in progress to the finished ones: its plan (the gate assets)
    /// and its jobs are dropped, its report kept within the limits.
    fn retire(&mut self, run_id: &str, report: Result<String, String>) {
        let Some(run) = self.runs.remove(run_id) else {
            return;
        };
        for job_id in &run.jobs {
            self.jobs.remove(job_id);
        }
        let finished = FinishedRun {
            report,
            finished: Instant::now(),
        };
        self.finished_bytes += finished.bytes();
        self.finished.insert(run_id.to_owned(), finished);
        self.finished_order.push_back(run_id.to_owned());
        self.prune_finished(Instant::now());
    }

    /// One page of agents after `page_token`, at most `page_size` of them and never more than
    /// fits in one reply.
    fn list_agents(&self, page_token: &str, page_size: u32) -> pb::ListAgentsResponse {
        let most = match page_size {
            0 => MAX_PAGE_AGENTS,
            n => n.min(MAX_PAGE_AGENTS),
        } as usize;
        // Room for the framing and the token (an agent id) around the summaries.
        let budget = MAX_REPLY_BYTES - 4 * 1_024;
        let start = if page_token.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(page_token)
        };
        let mut page = pb::ListAgentsResponse::default();
        let mut bytes = 0;
        for (id, a) in self.agents.range::<str, _>((start, Bound::Unbounded)) {
            if page.agents.len() == most {
                page.next_page_token = page
                    .agents
                    .last()
                    .map(|a| a.agent_id.clone())
                    .unwrap_or_default();
                break;
            }
            let summary = Self::summary(id, a);
            // The summary, its field tag and its length prefix.
            let size =
                summary.encoded_len() + 1 + prost::length_delimiter_len(summary.encoded_len());
            if bytes + size > budget && !page.agents.is_empty() {
                page.next_page_token = page
                    .agents
                    .last()
                    .map(|a| a.agent_id.clone())
                    .unwrap_or_default();
                break;
            }
            bytes += size;
            page.agents.push(summary);
        }
        page
    }

    fn summary(id: &str, a: &AgentEntry) -> pb::AgentSummary {
        pb::AgentSummary {
            agent_id: id.to_owned(),
            facts: Some(pb::HostFacts::from(&a.facts)),
            runtimes: a
                .runtimes
                .iter()
                .map(pb::RuntimeAvailability::from)
                .collect(),
            labels: a.labels.clone().into_iter().collect(),
            hardware_class: a.hardware_class.clone(),
            state: match (a.state, a.conn.is_some()) {
                (AgentState::Connected, true) => "connected",
                (AgentState::Connected, false) => "disconnected",
                (AgentState::Lost, _) => "lost",
            }
            .to_owned(),
            last_seen_unix_ms: a.last_seen_unix_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_events_are_warned_about_once_per_interval_with_their_count() {
        let mut agent = AgentEntry {
            facts: HostFacts::from(pb::HostFacts::default()),
            runtimes: Vec::new(),
            labels: BTreeMap::new(),
            hardware_class: "c".into(),
            state: AgentState::Connected,
            last_seen: Instant::now(),
            last_seen_unix_ms: 0,
            conn: None,
            peer: None,
            ignored_events: 0,
            ignored_warned_at: None,
        };
        let start = Instant::now();
        assert_eq!(
            agent.warn_ignored(start),
            Some(1),
            "the first one is logged"
        );
        for i in 1..1_000u32 {
            assert_eq!(
                agent.warn_ignored(start + Duration::from_millis(u64::from(i))),
                None
            );
        }
        let later = start + IGNORED_EVENT_WARNING_INTERVAL;
        assert_eq!(
            agent.warn_ignored(later),
            Some(1_000),
            "999 held back, then this one"
        );
        assert_eq!(agent.warn_ignored(later), None);
    }

    fn hello(agent_id: &str) -> pb::Hello {
        pb::Hello {
            agent_id: agent_id.into(),
            agent_version: "test".into(),
            protocol_version: PROTOCOL_VERSION,
            facts: Some(pb::HostFacts {
                hostname: agent_id.into(),
                cpu_model: "Test CPU".into(),
                cpu_cores: 2,
                ..pb::HostFacts::default()
            }),
            ..pb::Hello::default()
        }
    }

    async fn states(handle: &RegistryHandle) -> Vec<(String, String)> {
        handle
            .ask(|reply| Command::ListAgents {
                page_token: String::new(),
                page_size: 0,
                reply,
            })
            .await
            .unwrap()
            .agents
            .into_iter()
            .map(|a| (a.agent_id, a.state))
            .collect()
    }

    fn peer(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    type Inbound = mpsc::Receiver<Result<pb::CoordinatorMessage, Status>>;

    /// Opens a session for `hello` from `port`: its connection id and inbound messages, or
    /// the status that refused it.
    async fn connect(
        handle: &RegistryHandle,
        hello: pb::Hello,
        port: u16,
    ) -> Result<(u64, Inbound), Status> {
        let (tx, rx) = mpsc::channel(64);
        handle
            .ask(|reply| Command::Connect {
                hello,
                outbound: tx,
                peer: peer(port),
                reply,
            })
            .await
            .unwrap()
            .map(|conn| (conn, rx))
    }

    /// Sends a heartbeat and waits until the registry has seen it.
    async fn heartbeat(handle: &RegistryHandle, agent_id: &str, conn: u64) {
        handle
            .send(Command::FromAgent {
                agent_id: agent_id.into(),
                conn,
                message: pb::AgentMessage {
                    body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat::default())),
                },
            })
            .await
            .unwrap();
        states(handle).await;
    }

    /// A gpumemprof_cpu soak on every connected agent, gated by the shipped budgets.
    fn spec(deadline: Option<Duration>) -> RunSpec {
        let budgets = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/benchmarks/v0.4_operating_budget.json"
        );
        RunSpec {
            profile: config::Profile::Pr,
            mode: config::Mode::Soak,
            gate_mode: config::GateMode::Budget,
            iterations: 1,
            allocation_kb: 1,
            workload: config::WorkloadKind::Reference,
            runtimes: vec!["gpumemprof_cpu".into()],
            selection: plan::Selection::default(),
            deadline,
            knobs: config::Knobs::new(),
            overhead_scratch_root: None,
            budgets: Some(plan::Asset::read(std::path::Path::new(budgets), "Budget file").unwrap()),
            baseline: None,
            tolerances: None,
        }
    }

    /// Submits a run and has agent `agent_id` (session `conn`, inbound `rx`) finish its job at
    /// once; returns the run id and the client's events.
    async fn finished_run(
        handle: &RegistryHandle,
        agent_id: &str,
        conn: u64,
        rx: &mut Inbound,
    ) -> (String, mpsc::Receiver<Result<pb::RunEvent, Status>>) {
        let (events, mut client) = mpsc::channel(64);
        let run_id = handle
            .ask(|reply| Command::Submit {
                spec: Box::new(spec(None)),
                events,
                reply,
            })
            .await
            .unwrap()
            .unwrap();
        let job_id = loop {
            match rx.recv().await.unwrap().unwrap().body {
                Some(pb::coordinator_message::Body::AssignJob(a)) => break a.job.unwrap().job_id,
                _ => continue,
            }
        };
        let report = fleetgate_common::fleet::JobUpdate::Report {
            section: Box::new(RuntimeSection::unavailable("test")),
        };
        handle
            .send(Command::FromAgent {
                agent_id: agent_id.into(),
                conn,
                message: pb::AgentMessage {
                    body: Some(pb::agent_message::Body::JobEvent(convert::job_event_to_pb(
                        &job_id, 1, &report,
                    ))),
                },
            })
            .await
            .unwrap();
        loop {
            match client.recv().await.unwrap().unwrap().body {
                Some(pb::run_event::Body::ReportJson(_)) => break,
                _ => continue,
            }
        }
        (run_id, client)
    }

    async fn report(handle: &RegistryHandle, run_id: &str) -> Result<String, Status> {
        handle
            .ask(|reply| Command::GetReport {
                run_id: run_id.into(),
                reply,
            })
            .await
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_live_session_for_an_id_is_refused_and_a_silent_one_is_replaced() {
        let shutdown = CancellationToken::new();
        let settings = CoordinatorSettings {
            heartbeat_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(3_600),
            ..CoordinatorSettings::default()
        };
        let handle = spawn(settings, shutdown.clone());
        let (conn, mut first) = connect(&handle, hello("a1"), 1_001).await.unwrap();
        let refused = connect(&handle, hello("a1"), 1_002).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::AlreadyExists);
        assert_eq!(
            refused.message(),
            "agent id a1 already has a live session from 127.0.0.1:1001 (two agents with one id? give each its own --agent-id)"
        );
        // Still live while it heartbeats.
        tokio::time::advance(Duration::from_millis(2_900)).await;
        heartbeat(&handle, "a1", conn).await;
        tokio::time::advance(Duration::from_millis(2_900)).await;
        assert_eq!(
            connect(&handle, hello("a1"), 1_003)
                .await
                .unwrap_err()
                .code(),
            tonic::Code::AlreadyExists
        );
        // Silent past the expiry (3 s), it may be replaced, and its stream ends.
        tokio::time::advance(Duration::from_millis(200)).await;
        let (replaced, _second) = connect(&handle, hello("a1"), 1_004).await.unwrap();
        assert_ne!(replaced, conn);
        while let Some(message) = first.recv().await {
            assert!(message.is_ok());
        }
        assert_eq!(states(&handle).await, [("a1".into(), "connected".into())]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_session_whose_stream_is_gone_may_be_replaced_at_once() {
        let shutdown = CancellationToken::new();
        let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
        let (_, first) = connect(&handle, hello("a1"), 1_001).await.unwrap();
        drop(first);
        connect(&handle, hello("a1"), 1_002).await.unwrap();
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_hello_over_a_limit_is_refused_naming_the_field_and_nothing_is_kept() {
        let shutdown = CancellationToken::new();
        let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
        let mut h = hello("a1");
        h.labels = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        let refused = connect(&handle, h, 1_001).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            refused.message(),
            "labels: 33 labels, more than the limit of 32"
        );
        let mut h = hello("a1");
        h.facts.as_mut().unwrap().cpu_model = "x".repeat(257);
        assert_eq!(
            connect(&handle, h, 1_001).await.unwrap_err().message(),
            "facts.cpu_model: 257 bytes, more than the limit of 256"
        );
        assert!(states(&handle).await.is_empty());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_agent_is_forgotten_after_its_ttl_and_frees_its_place() {
        let shutdown = CancellationToken::new();
        let settings = CoordinatorSettings {
            heartbeat_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(100),
            max_agents: 2,
            lost_agent_ttl: Duration::from_secs(60),
            ..CoordinatorSettings::default()
        };
        let handle = spawn(settings, shutdown.clone());
        let (_, gone) = connect(&handle, hello("a1"), 1_001).await.unwrap();
        drop(gone);
        let (c2, _a2) = connect(&handle, hello("a2"), 1_002).await.unwrap();
        let full = connect(&handle, hello("a3"), 1_003).await.unwrap_err();
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            full.message(),
            "this coordinator already knows 2 agents, its limit (--max-agents); a lost agent is forgotten 60 s after its last message (--lost-agent-ttl-seconds)"
        );
        // a2 keeps heartbeating; a1 is silent.
        for _ in 0..70 {
            tokio::time::advance(Duration::from_secs(1)).await;
            heartbeat(&handle, "a2", c2).await;
        }
        assert_eq!(states(&handle).await, [("a2".into(), "connected".into())]);
        connect(&handle, hello("a3"), 1_003).await.unwrap();
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn finished_runs_are_kept_up_to_a_count_and_an_age_and_say_so_when_dropped() {
        let shutdown = CancellationToken::new();
        let settings = CoordinatorSettings {
            heartbeat_interval: Duration::from_secs(3_600),
            sweep_interval: Duration::from_secs(1),
            max_finished_runs: 2,
            finished_run_ttl: Duration::from_secs(600),
            ..CoordinatorSettings::default()
        };
        let handle = spawn(settings, shutdown.clone());
        let (conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(finished_run(&handle, "a1", conn, &mut rx).await.0);
        }
        let dropped = report(&handle, &ids[0]).await.unwrap_err();
        assert_eq!(dropped.code(), tonic::Code::NotFound);
        assert_eq!(
            dropped.message(),
            format!(
                "run {} finished, but its report is no longer kept (this coordinator keeps the last 2 finished runs for 600 s: --max-finished-runs, --finished-run-ttl-seconds)",
                ids[0]
            )
        );
        for id in &ids[1..] {
            let json = report(&handle, id).await.unwrap();
            assert!(json.contains("\"verdict\""), "{json}");
        }
        // Past the age limit, the rest go too.
        tokio::time::advance(Duration::from_secs(601)).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        for id in &ids {
            assert!(
                report(&handle, id)
                    .await
                    .unwrap_err()
                    .message()
                    .contains("is no longer kept")
            );
        }
        assert_eq!(
            report(&handle, "run-1-999").await.unwrap_err().message(),
            "no run run-1-999 on this coordinator"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_deadline_past_the_maximum_is_refused_without_arithmetic_overflow() {
        let shutdown = CancellationToken::new();
        let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
        let (_conn, _rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
        for (deadline, got) in [
            (Duration::MAX, "18446744073709551615"),
            (Duration::from_millis(604_800_001), "604800001"),
        ] {
            let (events, _client) = mpsc::channel(4);
            let refused = handle
                .ask(|reply| Command::Submit {
                    spec: Box::new(spec(Some(deadline))),
                    events,
                    reply,
                })
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            assert_eq!(
                refused.message(),
                format!("deadline_ms: must be from 1 to 604800000, got {got}")
            );
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_agent_list_comes_in_pages_in_id_order() {
        let shutdown = CancellationToken::new();
        let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
        let mut sessions = Vec::new();
        for (i, id) in ["e", "a", "d", "b", "c"].iter().enumerate() {
            sessions.push(connect(&handle, hello(id), 1_000 + i as u16).await.unwrap());
        }
        let mut token = String::new();
        let mut pages = Vec::new();
        loop {
            let page = handle
                .ask(|reply| Command::ListAgents {
                    page_token: token.clone(),
                    page_size: 2,
                    reply,
                })
                .await
                .unwrap();
            pages.push(
                page.agents
                    .iter()
                    .map(|a| a.agent_id.clone())
                    .collect::<Vec<_>>(),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_is_lost_after_three_heartbeat_intervals() {
        let shutdown = CancellationToken::new();
        let settings = CoordinatorSettings {
            heartbeat_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(100),
            ..CoordinatorSettings::default()
        };
        let handle = spawn(settings, shutdown.clone());
        let (conn, mut rx) = connect(&handle, hello("a1"), 1_001).await.unwrap();
        let welcome = rx.recv().await.unwrap().unwrap();
        assert!(matches!(
            welcome.body,
            Some(pb::coordinator_message::Body::Welcome(pb::Welcome {
                heartbeat_interval_ms: 1_000,
                ..
            }))
        ));
        // Heartbeats keep it alive well past the expiry.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(900)).await;
            handle
                .send(Command::FromAgent {
                    agent_id: "a1".into(),
                    conn,
                    message: pb::AgentMessage {
                        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat::default())),
                    },
                })
                .await
                .unwrap();
        }
        assert_eq!(
            states(&handle).await,
            [("a1".to_owned(), "connected".to_owned())]
        );
        // Then silence: still connected at 2.9 s, lost after 3 s.
        tokio::time::advance(Duration::from_millis(2_900)).await;
        assert_eq!(states(&handle).await[0].1, "connected");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(states(&handle).await[0].1, "lost");
        // Its stream was closed.
        assert!(rx.recv().await.is_none());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_unknown_protocol_version_is_refused_clearly() {
        let shutdown = CancellationToken::new();
        let handle = spawn(CoordinatorSettings::default(), shutdown.clone());
        let mut h = hello("a1");
        h.protocol_version = 9;
        let err = connect(&handle, h, 1_001).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message()
                .contains("protocol version 9 is not supported")
        );
        shutdown.cancel();
    }
}
