//! The agent's sessions with its coordinator: start-up (outboxes read back, host facts,
//! runtimes probed), the reconnect loop with backoff, one session's hello, welcome, resends,
//! heartbeats and messages, and the job queue that runs assigned jobs one at a time in worker
//! processes.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use fleetgate_common::auth::BearerToken;
use fleetgate_common::convert;
use fleetgate_common::host::{HostFacts, RuntimeAvailability, derive_hardware_class};
use fleetgate_common::ids::is_safe_id;
use fleetgate_common::job::{JobAssignment, JobPhase, JobUpdate};
use fleetgate_common::report::RuntimeSection;
use fleetgate_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::config::{AgentConfig, scratch_root_allowed};
use super::last_contact::touch_last_contact;
use super::outbox::Outbox;
use crate::worker::{self, MemoryLimit, WorkerHandle, WorkerInput};

enum SessionEnd {
    Shutdown,
    Disconnected(String),
    /// The coordinator refused this agent's token or certificate: retrying cannot help.
    Refused(String),
}

struct Agent {
    config: AgentConfig,
    facts: HostFacts,
    runtimes: Vec<RuntimeAvailability>,
    hardware_class: String,
    outboxes: BTreeMap<String, Outbox>,
    queue: VecDeque<JobAssignment>,
    running: Option<(String, WorkerHandle)>,
    updates_tx: mpsc::UnboundedSender<(String, JobUpdate)>,
    updates_rx: mpsc::UnboundedReceiver<(String, JobUpdate)>,
    outbox_dir: PathBuf,
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    // The sign of life for liveness checks, kept while the agent runs whatever its
    // coordinator does.
    let alive = tokio::spawn(super::last_contact::keep_alive(config.state_dir.clone()));
    let result = run_agent(config, shutdown).await;
    alive.abort();
    result
}

/// A fresh reconnect schedule: delays double from `min`, each with up to as much again of
/// random jitter (so a fleet that lost its coordinator does not reconnect in lockstep), the
/// delay before jitter capped at half of `max` so no wait exceeds `max`.
fn reconnect_delays(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder as _;
    let cap = (max / 2).max(min);
    backon::ExponentialBuilder::default()
        .with_min_delay(min.min(cap))
        .with_max_delay(cap)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn run_agent(config: AgentConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    // Starting can take a while (NVML, the probe worker loading libtensorflow); a shutdown
    // request ends it at once.
    let mut agent = tokio::select! {
        () = shutdown.cancelled() => {
            tracing::info!("Agent stopped while starting.");
            return Ok(());
        }
        agent = Agent::start(config) => agent?,
    };
    tracing::info!(
        agent_id = %agent.config.agent_id,
        coordinator = %agent.config.coordinator.url,
        hardware_class = %agent.hardware_class,
        "Agent starting."
    );
    let (min_delay, max_delay) = (agent.config.reconnect_min, agent.config.reconnect_max);
    let new_delays = || reconnect_delays(min_delay, max_delay);
    let mut delays = new_delays();
    let mut last_failure: Option<String> = None;
    loop {
        // Every wait of a session (connecting, the coordinator's answer, the stream) gives way
        // to a shutdown request.
        let end = tokio::select! {
            () = shutdown.cancelled() => Ok(SessionEnd::Shutdown),
            end = agent.session(&shutdown) => end,
        };
        match end {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Refused(why)) => {
                agent.stop_jobs("agent refused by the coordinator").await;
                return Err(DaemonError::Refused {
                    url: agent.config.coordinator.url.clone(),
                    reason: why,
                });
            }
            Ok(SessionEnd::Disconnected(why)) => {
                tracing::warn!(reason = %why, "Disconnected from the coordinator; reconnecting.");
                super::metrics::session(false, Some("disconnected"));
                delays = new_delays();
                last_failure = None;
            }
            Err(why) => {
                // Said once per distinct reason (a TLS mismatch is worth seeing; the same
                // refused connection every few seconds is not).
                if last_failure.as_deref() != Some(why.as_str()) {
                    tracing::warn!(reason = %why, "Coordinator not reachable; retrying.");
                }
                super::metrics::session(false, Some("unreachable"));
                last_failure = Some(why);
            }
        }
        let delay = delays.next().unwrap_or(max_delay);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    agent.stop_jobs("agent shutting down").await;
                    return Ok(());
                }
                () = &mut sleep => break,
                Some((job_id, update)) = agent.updates_rx.recv() => {
                    agent.record(&job_id, update);
                }
            }
        }
    }
    agent.stop_jobs("agent shutting down").await;
    Ok(())
}

impl Agent {
    /// Reads back the outboxes, then this host's facts and runtimes.
    async fn start(config: AgentConfig) -> Result<Agent, DaemonError> {
        let outbox_dir = config.state_dir.join("outbox");
        if let Err(error) = std::fs::create_dir_all(&outbox_dir) {
            return Err(DaemonError::CreateOutbox {
                dir: outbox_dir,
                error,
            });
        }
        let dir = outbox_dir.clone();
        let outboxes = match tokio::task::spawn_blocking(move || Outbox::load_all(&dir)).await? {
            Ok(outboxes) => outboxes,
            Err(error) => {
                return Err(DaemonError::ReadOutbox {
                    dir: outbox_dir,
                    error,
                });
            }
        };
        let mut facts = tokio::task::spawn_blocking(crate::facts::host_facts).await?;
        // A probe worker loads what the runtimes need (libtensorflow included), so this
        // process never pays for it; if the probe cannot run, the in-process checks stand in.
        let runtimes = match crate::worker::probe_with_worker(&config.worker).await {
            Ok(probe) => {
                facts.tensorflow_available = probe.tensorflow_available;
                facts.tensorflow_unavailable_reason = probe.tensorflow_unavailable_reason;
                probe.runtimes
            }
            Err(reason) => {
                tracing::warn!(reason = %reason, "Runtime probe failed; reporting in-process checks.");
                facts.tensorflow_unavailable_reason = Some(format!("not probed: {reason}"));
                tokio::task::spawn_blocking(crate::facts::runtime_availability).await?
            }
        };
        let hardware_class = config
            .hardware_class
            .clone()
            .unwrap_or_else(|| derive_hardware_class(&facts));
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        Ok(Agent {
            config,
            facts,
            runtimes,
            hardware_class,
            outboxes,
            queue: VecDeque::new(),
            running: None,
            updates_tx,
            updates_rx,
            outbox_dir,
        })
    }

    fn hello(&self) -> pb::AgentMessage {
        pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(pb::Hello {
                agent_id: self.config.agent_id.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol_version: fleetgate_proto::PROTOCOL_VERSION,
                facts: Some(pb::HostFacts::from(&self.facts)),
                runtimes: self
                    .runtimes
                    .iter()
                    .map(pb::RuntimeAvailability::from)
                    .collect(),
                labels: self.config.labels.clone().into_iter().collect(),
                hardware_class: self.hardware_class.clone(),
                jobs: self
                    .outboxes
                    .values()
                    .map(|o| pb::JobResume {
                        job_id: o.job_id.clone(),
                        last_sequence: o.next_sequence - 1,
                        running: self.running.as_ref().is_some_and(|(id, _)| *id == o.job_id)
                            || self.queue.iter().any(|j| j.job_id == o.job_id),
                    })
                    .collect(),
            })),
        }
    }

    async fn session(&mut self, shutdown: &CancellationToken) -> Result<SessionEnd, String> {
        let endpoint = self
            .config
            .coordinator
            .endpoint()
            .map_err(|e| e.to_string())?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true);
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            c = endpoint.connect() => c.map_err(|e| format!("connect: {}", fleetgate_common::tls::error_chain(&e)))?,
        };
        let mut client =
            AgentServiceClient::with_interceptor(channel, BearerToken(self.config.token.clone()));
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(1_024);
        tx.send(self.hello()).await.map_err(|e| e.to_string())?;
        let opened = tokio::time::timeout(
            Duration::from_secs(10),
            client.session(ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| "no answer from the coordinator within 10 s".to_owned())?;
        let mut inbound = match opened {
            Ok(response) => response.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                return Ok(SessionEnd::Refused(format!(
                    "{} (set --token-file or FLEETGATE_AGENT_TOKEN)",
                    s.message()
                )));
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                return Ok(SessionEnd::Refused(format!(
                    "{} (give --cert-file and --key-file for a certificate naming this agent id)",
                    s.message()
                )));
            }
            // Another live session holds this id, or the Hello is over a limit: retrying
            // cannot help.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::AlreadyExists | tonic::Code::InvalidArgument
                ) =>
            {
                return Ok(SessionEnd::Refused(s.message().to_owned()));
            }
            Err(s) => return Err(format!("session refused: {}", s.message())),
        };
        let welcome = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(pb::CoordinatorMessage {
                body: Some(pb::coordinator_message::Body::Welcome(w)),
            }))) => w,
            Ok(Err(status)) => return Err(format!("session refused: {}", status.message())),
            _ => return Err("no welcome from the coordinator".into()),
        };
        let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));
        tracing::info!(agent_id = %self.config.agent_id, heartbeat_ms = heartbeat.as_millis() as u64, "Registered with the coordinator.");
        touch_last_contact(&self.config.state_dir);
        super::metrics::session(true, None);
        for job_id in &welcome.unknown_job_ids {
            self.forget(job_id);
        }
        for (job_id, sequence) in &welcome.acked_through {
            self.ack(job_id, *sequence);
        }
        // Sections go compressed to a coordinator that reads them so (an older one does not).
        let event_to_pb = |job_id: &str, sequence: u64, update: &JobUpdate| {
            let mut event = convert::job_event_to_pb(job_id, sequence, update);
            if welcome.compressed_sections {
                convert::compress_section(&mut event);
            }
            event
        };
        // Resend everything the coordinator does not have, in order.
        for outbox in self.outboxes.values() {
            for (sequence, update) in &outbox.pending {
                let event = event_to_pb(&outbox.job_id, *sequence, update);
                send(&tx, pb::agent_message::Body::JobEvent(event)).await?;
            }
        }
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                _ = ticker.tick() => {
                    let running = self.running.iter().map(|(id, _)| id.clone()).collect();
                    let beat = pb::Heartbeat {
                        sent_unix_ms: crate::sink::unix_now_ns() / 1_000_000,
                        running_job_ids: running,
                    };
                    if send(&tx, pb::agent_message::Body::Heartbeat(beat)).await.is_err() {
                        return Ok(SessionEnd::Disconnected("stream closed".into()));
                    }
                    touch_last_contact(&self.config.state_dir);
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message),
                    Ok(None) => return Ok(SessionEnd::Disconnected("the coordinator closed the stream".into())),
                    Err(status) => return Ok(SessionEnd::Disconnected(status.message().to_owned())),
                },
                Some((job_id, update)) = self.updates_rx.recv() => {
                    let Some(sequence) = self.record(&job_id, update.clone()) else {
                        continue;
                    };
                    let event = event_to_pb(&job_id, sequence, &update);
                    if send(&tx, pb::agent_message::Body::JobEvent(event)).await.is_err() {
                        return Ok(SessionEnd::Disconnected("stream closed".into()));
                    }
                }
            }
        }
    }

    fn handle(&mut self, message: pb::CoordinatorMessage) {
        use pb::coordinator_message::Body;
        match message.body {
            Some(Body::AssignJob(assign)) => {
                let Some(spec) = assign.job else { return };
                let job_id = spec.job_id.clone();
                let runtime = spec.runtime.clone();
                match JobAssignment::try_from(spec) {
                    Ok(job) if is_safe_id(&job.job_id) => self.enqueue(job),
                    Ok(job) => {
                        tracing::warn!(job_id = %job.job_id, "Refused a job whose id is not a safe file name.")
                    }
                    // A runtime of a newer build: the job reports it unavailable here.
                    Err(e) if e.field == "runtime" && is_safe_id(&job_id) => {
                        self.report_unavailable(
                            job_id,
                            format!(
                                "runtime '{}' is not built into this agent",
                                fleetgate_common::input::one_line(&runtime)
                            ),
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "Refused an unusable job."),
                }
            }
            Some(Body::CancelJob(cancel)) => self.cancel(&cancel.job_id, &cancel.reason),
            Some(Body::Ack(ack)) => self.ack(&ack.job_id, ack.sequence),
            Some(Body::Welcome(_)) | None => {}
        }
    }

    /// Answers a job whose runtime this build lacks with an `unavailable` section.
    fn report_unavailable(&mut self, job_id: String, reason: String) {
        if self.outboxes.contains_key(&job_id) {
            return;
        }
        tracing::warn!(job_id = %job_id, reason = %reason, "Job's runtime is unavailable here.");
        self.outboxes
            .insert(job_id.clone(), Outbox::new(&self.outbox_dir, &job_id));
        let report = JobUpdate::Report {
            section: Box::new(RuntimeSection::unavailable(reason)),
        };
        self.updates_tx.send((job_id, report)).ok();
    }

    fn enqueue(&mut self, job: JobAssignment) {
        if self.outboxes.contains_key(&job.job_id) {
            // Already have it (a re-sent assignment after a reconnect).
            return;
        }
        tracing::info!(job_id = %job.job_id, runtime = %job.spec.runtime, "Job assigned.");
        self.outboxes.insert(
            job.job_id.clone(),
            Outbox::new(&self.outbox_dir, &job.job_id),
        );
        self.queue.push_back(job);
        self.start_next();
    }

    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(job) = self.queue.pop_front() else {
            return;
        };
        if let Some(root) = &job.spec.scratch_root
            && !scratch_root_allowed(&self.config.scratch_roots, root)
        {
            let root = root.display();
            let reason = format!(
                "overhead scratch root {root} is not allowed on this agent (start it with --allow-scratch-root {root})"
            );
            tracing::warn!(job_id = %job.job_id, "{reason}");
            self.fail_queued(job.job_id, reason);
            return self.start_next();
        }
        let now_ms = crate::sink::unix_now_ns() / 1_000_000;
        let remaining = Duration::from_millis(job.deadline_unix_ms.saturating_sub(now_ms));
        let deadline = tokio::time::Instant::now() + remaining;
        let worker_input = WorkerInput {
            // Jobs run one at a time and each scenario resets its directory, so one tree per
            // runtime keeps the disk bounded on a long-lived agent.
            artifact_root: self.config.artifact_root.clone(),
            job: job.spec,
        };
        let available = worker::host_memory_available()
            .map_err(|e| tracing::warn!(error = %e, "Host memory unknown; only --max-job-memory-mib applies."))
            .ok();
        if let Some(limit) = MemoryLimit::new(available, self.config.max_job_memory_bytes)
            && let Err(too_large) = worker::check_memory(&worker_input.job, limit)
        {
            let reason = too_large.to_string();
            tracing::warn!(job_id = %job.job_id, reason = %reason, "Job refused: its workload does not fit in memory.");
            self.fail_queued(job.job_id, reason);
            return self.start_next();
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = worker::spawn_worker(&self.config.worker, &worker_input, deadline, tx);
        let forward = self.updates_tx.clone();
        let job_id = job.job_id.clone();
        tokio::spawn(async move {
            while let Some(update) = rx.recv().await {
                if forward.send((job_id.clone(), update)).is_err() {
                    break;
                }
            }
        });
        self.running = Some((job.job_id, handle));
    }

    /// Numbers and keeps an update; starts the next job after a terminal one. An update of a
    /// job without an outbox (one the coordinator does not know: see [`Agent::forget`]) is
    /// dropped, and `None` is returned.
    fn record(&mut self, job_id: &str, update: JobUpdate) -> Option<u64> {
        super::metrics::job_update(&update);
        let terminal = update.is_terminal();
        let sequence = match self.outboxes.get_mut(job_id) {
            Some(outbox) => Some(outbox.push(update)),
            None => {
                tracing::debug!(job_id = %job_id, "Event of a job the coordinator does not know dropped.");
                None
            }
        };
        if terminal && self.running.as_ref().is_some_and(|(id, _)| id == job_id) {
            self.running = None;
            self.start_next();
        }
        super::metrics::backlog(self.outboxes.len(), self.queue.len());
        sequence
    }

    /// Drops a job the coordinator says it does not know (its run ended with a coordinator
    /// restart, or it is another agent's): its outbox file is deleted, a queued job is
    /// removed and a running one stopped, and its later events are dropped, so nothing of it
    /// is sent again.
    fn forget(&mut self, job_id: &str) {
        self.queue.retain(|j| j.job_id != job_id);
        if let Some((id, handle)) = &mut self.running
            && id == job_id
        {
            handle.kill("the coordinator does not know this job's run".to_owned());
        }
        if let Some(mut outbox) = self.outboxes.remove(job_id) {
            outbox.delete();
            tracing::info!(job_id = %job_id, path = %outbox.path.display(), "Outbox of a job the coordinator does not know deleted.");
        }
    }

    fn ack(&mut self, job_id: &str, sequence: u64) {
        super::metrics::ack_received();
        if let Some(outbox) = self.outboxes.get_mut(job_id)
            && outbox.ack(sequence)
        {
            self.outboxes.remove(job_id);
            super::metrics::backlog(self.outboxes.len(), self.queue.len());
        }
    }

    fn cancel(&mut self, job_id: &str, reason: &str) {
        let reason = if reason.is_empty() {
            "cancelled"
        } else {
            reason
        };
        if let Some((id, handle)) = &mut self.running
            && id == job_id
        {
            handle.kill(format!("cancelled: {reason}"));
            return;
        }
        if let Some(pos) = self.queue.iter().position(|j| j.job_id == job_id) {
            self.queue.remove(pos);
            self.fail_queued(job_id.to_owned(), format!("cancelled: {reason}"));
        }
    }

    /// Ends a job that never started: the failure goes the way of every worker update, so it
    /// is numbered, kept and sent at once.
    fn fail_queued(&self, job_id: String, reason: String) {
        let failed = JobUpdate::Failed {
            phase: JobPhase::Starting,
            reason,
        };
        self.updates_tx.send((job_id, failed)).ok();
    }

    /// Stops the running job and waits (at most 10 s) for its worker to close its telemetry
    /// session and end, so its last events are kept in the outbox.
    async fn stop_jobs(&mut self, reason: &str) {
        self.queue.clear();
        let Some((job_id, handle)) = &mut self.running else {
            return;
        };
        handle.kill(reason.to_owned());
        let job_id = job_id.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.running.is_some() {
            match tokio::time::timeout_at(deadline, self.updates_rx.recv()).await {
                Ok(Some((id, update))) => {
                    self.record(&id, update);
                }
                _ => {
                    tracing::warn!(job_id = %job_id, "Worker did not stop within 10 s.");
                    return;
                }
            }
        }
    }
}

async fn send(
    tx: &mpsc::Sender<pb::AgentMessage>,
    body: pb::agent_message::Body,
) -> Result<(), String> {
    tx.send(pb::AgentMessage { body: Some(body) })
        .await
        .map_err(|_| "stream closed".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::reconnect_delays;

    #[test]
    fn reconnect_delays_grow_from_the_minimum_jittered_and_never_past_the_maximum() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(10));
        let delays: Vec<Duration> = reconnect_delays(min, max).take(40).collect();
        assert!(delays[0] >= min && delays[0] < min * 2, "{:?}", delays[0]);
        assert!(delays.iter().all(|d| *d <= max), "{delays:?}");
        // Later delays reach the capped range [max/2, max].
        assert!(delays[10..].iter().all(|d| *d >= max / 2), "{delays:?}");
        // Jittered: not all the capped delays are equal.
        let first = delays[20];
        assert!(delays[20..].iter().any(|d| *d != first), "{delays:?}");
    }
}
