//! The coordinator's state, owned by one task (the registry actor): agents, runs and jobs.
//! gRPC handlers talk to it through a [`RegistryHandle`]; nothing else touches the state, so
//! there are no locks. A sweep expires agents that stopped heartbeating (3 × the interval) and
//! ends runs whose deadline passed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleetgate_common::auth::Token;
use fleetgate_common::convert::{self, JobRequest};
use fleetgate_common::fleet::{
    HostFacts, JobStatus, JobSummary, JobUpdate, RuntimeAvailability, derive_hardware_class,
};
use fleetgate_common::report::RuntimeSection;
use fleetgate_common::tls::ServerTls;
use fleetgate_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::fleet_report::{self, AgentRecord, JobRecord};
use crate::plan::{self, RunError, RunPlan, RunSpec};

/// The protocol version the coordinator speaks.
pub const PROTOCOL_VERSION: u32 = 1;

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
    /// Most runs in progress at once; a submission beyond it is refused.
    pub max_runs: usize,
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
            max_runs: 8,
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
    /// List agents.
    ListAgents {
        /// The answer.
        reply: oneshot::Sender<Vec<pb::AgentSummary>>,
    },
    /// A finished run's report.
    GetReport {
        /// Run id.
        run_id: String,
        /// The report JSON, if the run is known and finished.
        reply: oneshot::Sender<Option<String>>,
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
}

#[derive(Debug)]
struct JobEntry {
    request: JobRequest,
    /// How the job appears in the report: the runtime, or `<runtime>@<gpu>`.
    label: String,
    agent_id: String,
    status: JobStatus,
    phase: String,
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

#[derive(Debug)]
struct RunEntry {
    plan: RunPlan,
    agents: Vec<String>,
    jobs: Vec<String>,
    deadline: Instant,
    events: RunEvents,
    report: Option<String>,
}

struct Registry {
    settings: CoordinatorSettings,
    agents: BTreeMap<String, AgentEntry>,
    jobs: BTreeMap<String, JobEntry>,
    runs: BTreeMap<String, RunEntry>,
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
            if run.report.is_none() {
                run.events
                    .try_send(Err(Status::unavailable(format!(
                        "the coordinator shut down before run {run_id} finished"
                    ))))
                    .ok();
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Connect {
                hello,
                outbound,
                reply,
            } => {
                let result = self.connect(hello, outbound);
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
            Command::ListAgents { reply } => {
                reply.send(self.list_agents()).ok();
            }
            Command::GetReport { run_id, reply } => {
                reply
                    .send(self.runs.get(&run_id).and_then(|r| r.report.clone()))
                    .ok();
            }
        }
    }

    fn connect(&mut self, hello: pb::Hello, outbound: Outbound) -> Result<u64, Status> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported (this coordinator speaks {PROTOCOL_VERSION})",
                hello.protocol_version
            )));
        }
        let agent_id = hello.agent_id.clone();
        if !fleetgate_agent::daemon::is_safe_id(&agent_id) {
            return Err(Status::invalid_argument(
                "agent_id must be 1-128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if !self.agents.contains_key(&agent_id) && self.agents.len() >= self.settings.max_agents {
            tracing::warn!(agent_id = %agent_id, "Agent refused: the coordinator is at its agent limit.");
            return Err(Status::resource_exhausted(format!(
                "this coordinator already knows {} agents, its limit (--max-agents)",
                self.agents.len()
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
                last_seen: Instant::now(),
                last_seen_unix_ms: unix_ms(),
                conn: Some((conn, outbound.clone())),
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
        let Some(job) = self.jobs.get_mut(&job_id) else {
            tracing::warn!(agent_id, job_id = %job_id, "Event for an unknown job ignored.");
            return;
        };
        if job.agent_id != agent_id {
            tracing::warn!(agent_id, job_id = %job_id, owner = %job.agent_id, "Event for another agent's job refused.");
            return;
        }
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
                tracing::warn!(agent_id, job_id = %job_id, error = %e, "Unusable job event refused.");
                return;
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
                job.phase.clone_from(&phase);
                job.done = done;
                job.total = total;
                if let Some(run) = self.runs.get(&run_id) {
                    run.events
                        .try_send(Ok(pb::RunEvent {
                            run_id: run_id.clone(),
                            body: Some(pb::run_event::Body::Progress(pb::AgentProgress {
                                agent_id: agent_id.to_owned(),
                                runtime: job.label.clone(),
                                phase,
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
        let in_progress = self.runs.values().filter(|r| r.report.is_none()).count();
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

        let run_id = format!("run-{}-{}", unix_ms(), self.next_run);
        self.next_run += 1;
        let deadline = plan.spec.deadline.unwrap_or(match plan.config.profile {
            fleetgate_common::config::Profile::Pr => self.settings.pr_deadline,
            fleetgate_common::config::Profile::Nightly => self.settings.nightly_deadline,
        });
        let deadline_unix_ms =
            unix_ms() + u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX / 2);
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
                            phase: "starting".into(),
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
                deadline: Instant::now() + deadline,
                events,
                report: None,
            },
        );
        Ok(run_id)
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let expiry = self.settings.heartbeat_interval * 3;
        for (id, agent) in &mut self.agents {
            if agent.state == AgentState::Connected && now.duration_since(agent.last_seen) > expiry
            {
                tracing::warn!(agent_id = %id, silent_ms = now.duration_since(agent.last_seen).as_millis() as u64, "Agent lost: no heartbeat.");
                agent.state = AgentState::Lost;
                agent.conn = None;
            }
        }
        // A run whose client went away is cancelled: nobody is left to gate on it.
        let abandoned: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.report.is_none() && r.events.is_closed())
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
            .filter(|(_, r)| r.report.is_none() && now >= r.deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for run_id in due {
            self.end_unfinished(&run_id, now, None);
            self.maybe_finish(&run_id);
        }
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
        if run.report.is_some()
            || !run
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
                    phase: j.phase.clone(),
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
        let event = pb::RunEvent {
            run_id: run_id.to_owned(),
            body: Some(pb::run_event::Body::ReportJson(json.clone())),
        };
        // The report must arrive even when the progress queue is full.
        tokio::spawn(async move {
            events.send(Ok(event)).await.ok();
        });
        if let Some(run) = self.runs.get_mut(run_id) {
            run.report = Some(json);
        }
    }

    fn list_agents(&self) -> Vec<pb::AgentSummary> {
        self.agents
            .iter()
            .map(|(id, a)| pb::AgentSummary {
                agent_id: id.clone(),
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
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .ask(|reply| Command::ListAgents { reply })
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.agent_id, a.state))
            .collect()
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
        let (tx, mut rx) = mpsc::channel(16);
        let conn = handle
            .ask(|reply| Command::Connect {
                hello: hello("a1"),
                outbound: tx,
                reply,
            })
            .await
            .unwrap()
            .unwrap();
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
        let (tx, _rx) = mpsc::channel(16);
        let mut h = hello("a1");
        h.protocol_version = 9;
        let err = handle
            .ask(|reply| Command::Connect {
                hello: h,
                outbound: tx,
                reply,
            })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message()
                .contains("protocol version 9 is not supported")
        );
        shutdown.cancel();
    }
}
