//! Runs: submission (planning, selecting the agents, dispatching the jobs), deadlines and
//! abandoned runs, finishing a run with its report, and keeping finished runs' reports within
//! their count, age and size limits.

use std::sync::Arc;

use fleetgate_common::config;
use fleetgate_common::ids::{AgentId, JobId, RunId};
use fleetgate_common::job::JobAssignment;
use fleetgate_common::messages::{RunEvent, ToAgent};
use fleetgate_common::report::{
    AgentRecord, EncodedReport, JobRecord, JobStatus, JobSummary, build_fleet_report,
};
use fleetgate_common::run::RunSpec;
use fleetgate_common::runtime::RuntimeKind;
use tokio::time::Instant;

use super::jobs::JobEntry;
use super::{MAX_FORGOTTEN_RUNS, Registry, RegistryError, RunEvents, unix_ms};
use crate::plan::{self, RunError, RunPlan};

/// A run in progress.
#[derive(Debug)]
pub(super) struct RunEntry {
    pub(super) plan: RunPlan,
    pub(super) agents: Vec<AgentId>,
    pub(super) jobs: Vec<JobId>,
    /// The jobs before this index have ended (a job never leaves its end), so the check
    /// whether the run has finished costs, over the whole run, one look at each job.
    pub(super) ended_prefix: usize,
    pub(super) deadline: Instant,
    pub(super) events: RunEvents,
    /// When it was accepted.
    pub(super) accepted: Instant,
}

/// A finished run: only its report is kept (its plan, inputs and jobs are dropped).
#[derive(Debug)]
pub(super) struct FinishedRun {
    /// The report, its JSON compressed (sent to clients in chunks, shared with the streams
    /// that send it).
    pub(super) report: Arc<EncodedReport>,
    pub(super) finished: Instant,
}

impl FinishedRun {
    /// Bytes it holds (compressed).
    pub(super) fn bytes(&self) -> usize {
        self.report.held_bytes()
    }
}

impl Registry {
    /// Plans a run, selects its agents, dispatches one job per runtime (per GPU, for a per-GPU
    /// runtime) to each, and tells the client it was accepted.
    pub(super) fn submit(
        &mut self,
        spec: RunSpec,
        events: RunEvents,
    ) -> Result<RunId, RegistryError> {
        let plan = plan::plan(spec)?;
        let in_progress = self.runs.len();
        if in_progress >= self.settings.max_runs {
            return Err(RegistryError::TooManyRuns { in_progress });
        }
        let selection = &plan.spec.selection;
        for id in &selection.agent_ids {
            match self.agents.get(id.as_str()) {
                Some(a) if a.available() => {}
                Some(_) => return Err(RegistryError::AgentNotConnected(id.clone())),
                None => return Err(RegistryError::UnknownAgent(id.clone())),
            }
        }
        let selected: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                a.available()
                    && (selection.agent_ids.is_empty()
                        || selection.agent_ids.iter().any(|s| *id == s.as_str()))
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
            return Err(RegistryError::TooFewAgents {
                matched: selected.len(),
                needed,
            });
        }
        let selected_names: Vec<String> = selected.iter().map(AgentId::to_string).collect();
        let class_of = |agent: &str| self.agents.get(agent).map(|a| a.hardware_class.clone());
        plan.require_coverage(&selected_names, &class_of)?;

        let deadline = match plan.spec.deadline {
            Some(deadline) => config::check_deadline(deadline).map_err(RegistryError::Deadline)?,
            None => match plan.config.workload.profile {
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
            return Err(RegistryError::DeadlineUnrepresentable {
                millis: deadline.as_millis(),
            });
        };
        let run_id = RunId::from(format!("run-{}-{}", unix_ms(), self.next_run));
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
                let Some(kind) = RuntimeKind::from_name(runtime) else {
                    continue;
                };
                let per_gpu = kind.per_gpu();
                let instances: Vec<(String, Option<u32>)> = if per_gpu && gpus > 0 {
                    (0..gpus)
                        .map(|g| (format!("{runtime}@{g}"), Some(g)))
                        .collect()
                } else {
                    vec![(runtime.clone(), None)]
                };
                for (label, device) in instances {
                    let job_id = JobId::from(format!("{run_id}-{}", job_ids.len()));
                    let request = JobAssignment {
                        job_id: job_id.to_string(),
                        run_id: run_id.to_string(),
                        deadline_unix_ms,
                        spec: plan.job(kind, device),
                    };
                    if let Some((_, outbound)) =
                        self.agents.get(agent_id).and_then(|a| a.conn.as_ref())
                    {
                        outbound
                            .try_send(Box::new(Ok(ToAgent::Assign(Box::new(request.clone())))))
                            .ok();
                    }
                    self.jobs.insert(
                        job_id.clone(),
                        JobEntry::assigned(request, run_id.clone(), label, agent_id.clone()),
                    );
                    job_ids.push(job_id);
                }
            }
        }
        events
            .try_send(Ok(RunEvent::Accepted {
                agent_ids: selected.clone(),
                deadline_unix_ms,
            }))
            .ok();
        tracing::info!(run_id = %run_id, agents = selected.len(), jobs = job_ids.len(), "Run accepted.");
        self.runs.insert(
            run_id.clone(),
            RunEntry {
                plan,
                agents: selected,
                jobs: job_ids,
                ended_prefix: 0,
                deadline: deadline_at,
                events,
                accepted: Instant::now(),
            },
        );
        Ok(run_id)
    }

    /// Cancels the runs whose client went away (nobody is left to gate on them) and ends the
    /// runs whose deadline passed.
    pub(super) fn end_abandoned_and_due_runs(&mut self, now: Instant) {
        let abandoned: Vec<RunId> = self
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
        let due: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for run_id in due {
            self.end_unfinished(&run_id, now, None);
            self.maybe_finish(&run_id);
        }
    }

    /// Ends every unfinished job of a run: cancelled with `cancel_reason`, else lost (agent
    /// gone) or timed out (deadline); the agents still connected are told to stop them.
    pub(super) fn end_unfinished(
        &mut self,
        run_id: &RunId,
        now: Instant,
        cancel_reason: Option<&str>,
    ) {
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
            let lost = agent.is_none_or(|a| a.gone());
            let (status, reason) = match cancel_reason {
                Some(reason) => (JobStatus::Cancelled, reason.to_owned()),
                None if lost => (
                    JobStatus::Lost,
                    "the agent was lost and did not come back before the run's deadline".to_owned(),
                ),
                None => (JobStatus::TimedOut, "the run's deadline passed".to_owned()),
            };
            job.end(status, reason.clone(), now);
            if let Some((_, outbound)) = agent.and_then(|a| a.conn.as_ref()) {
                outbound
                    .try_send(Box::new(Ok(ToAgent::Cancel {
                        job_id: job_id.clone(),
                        reason,
                    })))
                    .ok();
            }
        }
    }

    /// Builds and delivers the report once every job of the run is terminal.
    pub(super) fn maybe_finish(&mut self, run_id: &RunId) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let started = Instant::now();
        let jobs = &self.jobs;
        let ended = run.jobs[run.ended_prefix..]
            .iter()
            .take_while(|j| jobs.get(*j).is_some_and(JobEntry::terminal))
            .count();
        run.ended_prefix += ended;
        if run.ended_prefix < run.jobs.len() {
            return;
        }
        let run = &self.runs[run_id];
        let agents: Vec<AgentRecord> = run
            .agents
            .iter()
            .filter_map(|id| {
                self.agents.get(id).map(|a| AgentRecord {
                    agent_id: id.to_string(),
                    facts: a.facts.clone(),
                    labels: a.labels.clone(),
                    hardware_class: a.hardware_class.clone(),
                })
            })
            .collect();
        // The sections move into the report (the run's jobs are dropped when it retires).
        let mut jobs = Vec::with_capacity(run.jobs.len());
        for id in &run.jobs {
            let Some(j) = self.jobs.get_mut(id) else {
                continue;
            };
            jobs.push(JobRecord {
                agent_id: j.agent_id.to_string(),
                runtime: j.label.clone(),
                summary: JobSummary {
                    job_id: id.to_string(),
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
                section: j.section.take(),
            });
        }
        let mut report = build_fleet_report(
            &run.plan.config,
            &run.plan.gate,
            run.plan.spec.selection.quorum,
            &agents,
            jobs,
            unix_ms() / 1_000,
        );
        report.generator = Some(crate::identity::generator());
        let built = started.elapsed();
        // Compressed as it is encoded: the whole JSON (about 95 MB at 10,000 agents) is never
        // held, and the report built is dropped once its encoding is on its way.
        let encoded = match EncodedReport::encode(&report) {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::error!(run_id = %run_id, error = %e, "Report could not be encoded.");
                self.abandon(
                    run_id,
                    format!("the coordinator could not encode the report of run {run_id}: {e}"),
                );
                return;
            }
        };
        let verdict = report.verdict;
        let built_report = report;
        tracing::info!(
            run_id = %run_id,
            verdict = verdict.name(),
            report_bytes = encoded.json_bytes(),
            held_bytes = encoded.held_bytes(),
            build_ms = built.as_millis() as u64,
            encode_ms = (started.elapsed() - built).as_millis() as u64,
            "Run finished."
        );
        crate::metrics::run_finished(verdict, run.accepted.elapsed());
        // Any size: the service sends it to the client in chunks, shared as it is.
        let report = Arc::new(encoded);
        if let Some(history) = &self.settings.history {
            history.record(run_id.as_str(), Arc::clone(&report));
        }
        let events = run.events.clone();
        let event = Ok(RunEvent::Report(Arc::clone(&report)));
        // The report must arrive even when the progress queue is full.
        tokio::spawn(async move {
            events.send(event).await.ok();
        });
        self.retire(run_id, report);
        // Freed on a blocking thread: at 10,000 agents that takes 70 to 100 ms, and the
        // task that sends the report to its client runs only once this one yields.
        tokio::task::spawn_blocking(move || drop(built_report));
    }

    /// Ends a run that has no report to give (its jobs' sections went into the one that could
    /// not be encoded): its client gets `error`, and the run and its jobs are dropped, so it
    /// never finishes later with a report that lacks them.
    fn abandon(&mut self, run_id: &RunId, error: String) {
        let Some(run) = self.remove_run(run_id) else {
            return;
        };
        let events = run.events;
        tokio::spawn(async move {
            events
                .send(Err(RegistryError::Run(RunError::Internal(error))))
                .await
                .ok();
        });
    }

    /// Takes a run out of the runs in progress, with its jobs.
    fn remove_run(&mut self, run_id: &RunId) -> Option<RunEntry> {
        let run = self.runs.remove(run_id)?;
        for job_id in &run.jobs {
            self.jobs.remove(job_id);
        }
        Some(run)
    }

    /// Moves a run from the runs in progress to the finished ones: its plan (the gate assets)
    /// and its jobs are dropped, its report kept within the limits.
    fn retire(&mut self, run_id: &RunId, report: Arc<EncodedReport>) {
        if self.remove_run(run_id).is_none() {
            return;
        }
        let finished = FinishedRun {
            report,
            finished: Instant::now(),
        };
        self.finished_bytes += finished.bytes();
        self.finished.insert(run_id.clone(), finished);
        self.finished_order.push_back(run_id.clone());
        self.prune_finished(Instant::now());
    }

    /// Drops finished runs over the count, age or size limits, oldest first; the newest is
    /// kept whatever its size, so a report is always readable right after its run.
    pub(super) fn prune_finished(&mut self, now: Instant) {
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
    pub(super) fn report(&self, run_id: &RunId) -> Result<Arc<EncodedReport>, RegistryError> {
        if let Some(run) = self.finished.get(run_id) {
            return Ok(Arc::clone(&run.report));
        }
        if self.runs.contains_key(run_id) {
            return Err(RegistryError::RunNotFinished(run_id.clone()));
        }
        if self.forgotten.contains(run_id) {
            return Err(RegistryError::ReportDropped {
                run_id: run_id.clone(),
                kept: self.settings.max_finished_runs,
                ttl_seconds: self.settings.finished_run_ttl.as_secs(),
            });
        }
        Err(RegistryError::UnknownRun(run_id.clone()))
    }
}
