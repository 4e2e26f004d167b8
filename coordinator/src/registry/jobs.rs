//! Jobs: what the registry keeps per job, what an agent resumes after a reconnect, and the
//! rules for its numbered events: each is stored once, in order, and acknowledged; a resent
//! duplicate, a gap or an event after the end only repeats the acknowledgement of what is
//! stored.

use std::collections::{BTreeMap, BTreeSet};

use fleetgate_common::ids::{AgentId, JobId, RunId};
use fleetgate_common::job::JobAssignment;
use fleetgate_common::job::{JobPhase, JobUpdate};
use fleetgate_common::messages::{JobEvent, JobResume, RunEvent, ToAgent, Welcome};
use fleetgate_common::report::JobStatus;
use fleetgate_common::report::RuntimeSection;
use tokio::time::Instant;

use super::{Outbound, Registry};

/// What the registry keeps about a job of a run in progress.
#[derive(Debug)]
pub(super) struct JobEntry {
    /// The job as its agent receives it.
    pub(super) request: JobAssignment,
    /// Its run.
    pub(super) run_id: RunId,
    /// How the job appears in the report: the runtime, or `<runtime>@<gpu>`.
    pub(super) label: String,
    /// The agent that runs it.
    pub(super) agent_id: AgentId,
    pub(super) status: JobStatus,
    pub(super) phase: JobPhase,
    pub(super) done: u64,
    pub(super) total: u64,
    /// The last event stored (0: none yet).
    pub(super) last_sequence: u64,
    pub(super) events: u64,
    pub(super) checkpoints: u64,
    pub(super) dispatched: Instant,
    pub(super) finished: Option<Instant>,
    pub(super) section: Option<RuntimeSection>,
    pub(super) reason: Option<String>,
}

impl JobEntry {
    /// A job just assigned to `agent_id`.
    pub(super) fn assigned(
        request: JobAssignment,
        run_id: RunId,
        label: String,
        agent_id: AgentId,
    ) -> Self {
        JobEntry {
            request,
            run_id,
            label,
            agent_id,
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
        }
    }

    /// Whether the job ended.
    pub(super) fn terminal(&self) -> bool {
        self.status != JobStatus::Running
    }

    /// Ends the job.
    pub(super) fn end(&mut self, status: JobStatus, reason: String, now: Instant) {
        self.status = status;
        self.reason = Some(reason);
        self.finished = Some(now);
    }
}

impl Registry {
    /// The welcome for an agent that resumes `resumed`, and the resumed jobs it must stop:
    /// its own jobs are acknowledged through what is stored (and stopped if they ended
    /// here); jobs this coordinator does not know, or another agent's, are acknowledged
    /// through what the agent has, named unknown, and stopped.
    pub(super) fn welcome(
        &self,
        agent_id: &AgentId,
        resumed: &[JobResume],
    ) -> (Welcome, Vec<JobId>) {
        let mut acked_through = BTreeMap::new();
        let mut cancel = Vec::new();
        let mut unknown_job_ids = Vec::new();
        for resume in resumed {
            match self.jobs.get(&resume.job_id) {
                Some(job) if job.agent_id == *agent_id => {
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
        let welcome = Welcome {
            heartbeat_interval: self.settings.heartbeat_interval,
            acked_through,
            unknown_job_ids,
        };
        (welcome, cancel)
    }

    /// Jobs of an agent that (re)connected without holding them: the assignment is resent if
    /// the job never reported anything, else the job failed (the agent restarted and lost it).
    pub(super) fn resume_pending(
        &mut self,
        agent_id: &AgentId,
        held: &BTreeSet<JobId>,
        outbound: &Outbound,
    ) {
        let pending: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(id, j)| j.agent_id == *agent_id && !j.terminal() && !held.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for job_id in pending {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            if job.last_sequence == 0 {
                outbound
                    .try_send(Box::new(Ok(ToAgent::Assign(Box::new(job.request.clone())))))
                    .ok();
            } else {
                job.end(
                    JobStatus::Failed,
                    "the agent came back without the job (it restarted)".into(),
                    Instant::now(),
                );
                let run_id = job.run_id.clone();
                self.maybe_finish(&run_id);
            }
        }
    }

    /// A job's event from `agent_id`: stored and acknowledged when it is the next one of the
    /// agent's own running job; the run finishes when its last job ends.
    pub(super) fn job_event(&mut self, agent_id: &AgentId, outbound: &Outbound, event: JobEvent) {
        let JobEvent {
            job_id,
            sequence,
            update,
        } = event;
        let owner = self.jobs.get(&job_id).map(|job| job.agent_id.clone());
        if owner.as_ref() != Some(agent_id) {
            if let Some(count) = self
                .agents
                .get_mut(agent_id)
                .and_then(|agent| agent.warn_ignored(Instant::now()))
            {
                match owner {
                    None => {
                        tracing::warn!(agent_id = %agent_id, job_id = %job_id, events = count, "Events for an unknown job ignored.");
                    }
                    Some(owner) => {
                        tracing::warn!(agent_id = %agent_id, job_id = %job_id, owner = %owner, events = count, "Events for another agent's job refused.");
                    }
                }
            }
            return;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let ack = |sequence: u64| {
            crate::metrics::ack_sent();
            outbound
                .try_send(Box::new(Ok(ToAgent::Ack {
                    job_id: job_id.clone(),
                    sequence,
                })))
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
        let update = match update {
            Ok(update) => update,
            Err(e) => {
                // Waiting for the deadline would only hide it: the job ends now, saying why.
                tracing::warn!(agent_id = %agent_id, job_id = %job_id, error = %e, "Unusable job event; the job fails.");
                JobUpdate::Failed {
                    phase: job.phase,
                    reason: format!("the agent sent an unusable event: {e}"),
                }
            }
        };
        job.last_sequence = sequence;
        job.events += 1;
        ack(sequence);
        crate::metrics::event_ingested(update.kind());
        let run_id = job.run_id.clone();
        match update {
            JobUpdate::Started { .. } => {}
            JobUpdate::Checkpoint { .. } => job.checkpoints += 1,
            JobUpdate::Progress { phase, done, total } => {
                job.phase = phase;
                job.done = done;
                job.total = total;
                if let Some(run) = self.runs.get(&run_id) {
                    run.events
                        .try_send(Ok(RunEvent::Progress {
                            agent_id: agent_id.clone(),
                            runtime: job.label.clone(),
                            phase,
                            done,
                            total,
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
                job.phase = phase;
                job.end(JobStatus::Failed, reason, Instant::now());
            }
        }
        if self.jobs.get(&job_id).is_some_and(JobEntry::terminal) {
            self.maybe_finish(&run_id);
        }
    }
}
