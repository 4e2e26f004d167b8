//! Job workers: every job runs in a child process (the agent binary re-executed with its
//! `worker` subcommand). The child reads its job as JSON on stdin, runs it, and writes one JSON
//! event per line on stdout; the parent turns those lines into job events, and kills the child
//! when the job's deadline passes or the run is cancelled. A crash in a runtime (TensorFlow,
//! NVML) takes down the worker, never the agent, and each job measures RSS in a clean process.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleetgate_common::config::WorkloadKind;
use fleetgate_common::job::{JobPhase, JobSpec, JobUpdate};
use fleetgate_common::runtime::RuntimeKind;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::job;
use crate::scenario::{Hooks, Progress, ScenarioError};

/// What a worker reads on stdin: its job, and where its artifacts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerInput {
    /// Root of the artifacts (the job writes under `<root>/<runtime>`).
    pub artifact_root: PathBuf,
    /// The job.
    pub job: JobSpec,
}

const MIB: u64 = 1024 * 1024;

/// Host memory a worker needs for a job beyond its workload: the process itself, and for the
/// TensorFlow runtimes the loaded library (measured: about 18 MiB and 312 MiB of RSS).
const WORKER_BASE_BYTES: u64 = 32 * MIB;
/// The same for a worker that loads libtensorflow.
const TENSORFLOW_WORKER_BASE_BYTES: u64 = 384 * MIB;

/// The host memory a job's worker is expected to need at its peak: a base for the process
/// and `copies` × the job's `allocation_kb` for its workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// The worker process (and libtensorflow, if the runtime loads it).
    pub base_bytes: u64,
    /// How many allocations of `allocation_kb` are resident at once.
    pub copies: u64,
    /// `allocation_kb` in bytes.
    pub allocation_bytes: u64,
}

impl Footprint {
    /// The job's expected peak. The reference workload holds one buffer of `allocation_kb`;
    /// the TensorFlow CPU runtime's collector holds a graph (the matrix, its product and its
    /// initialiser: 3 copies) and its TensorFlow workload a second one; on the GPU runtime the
    /// matrices are device memory, so only the reference buffer counts against the host.
    /// Measured on `tfmemprof_cpu` with 256 MiB: soak 2.2 copies, overhead with the reference
    /// workload 3.5 copies; with the TensorFlow workload 6.1 copies at 64 MiB.
    pub fn of(job: &JobSpec) -> Self {
        let base_bytes = if job.runtime.uses_tensorflow() {
            TENSORFLOW_WORKER_BASE_BYTES
        } else {
            WORKER_BASE_BYTES
        };
        let copies = match (job.runtime, job.workload.kind) {
            (RuntimeKind::TfmemprofCpu, WorkloadKind::Reference) => 4,
            (RuntimeKind::TfmemprofCpu, WorkloadKind::Tensorflow) => 7,
            _ => 1,
        };
        Footprint {
            base_bytes,
            copies,
            allocation_bytes: u64::from(job.workload.allocation_kb) * 1024,
        }
    }

    /// Bytes needed in all.
    pub fn total_bytes(&self) -> u64 {
        self.base_bytes
            .saturating_add(self.copies.saturating_mul(self.allocation_bytes))
    }
}

/// Where a job's memory limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// What the host (or its container) has available now, in bytes.
    Available(u64),
    /// The operator's cap on one job (`--max-job-memory-mib`), in bytes, lower than what is
    /// available.
    Cap(u64),
}

impl MemoryLimit {
    /// The lower of what the host has available (if known) and the operator's cap (if any);
    /// none when neither is known.
    pub fn new(available_bytes: Option<u64>, cap_bytes: Option<u64>) -> Option<Self> {
        match (available_bytes, cap_bytes) {
            (Some(available), Some(cap)) if available <= cap => {
                Some(MemoryLimit::Available(available))
            }
            (_, Some(cap)) => Some(MemoryLimit::Cap(cap)),
            (Some(available), None) => Some(MemoryLimit::Available(available)),
            (None, None) => None,
        }
    }

    fn bytes(self) -> u64 {
        match self {
            MemoryLimit::Available(b) | MemoryLimit::Cap(b) => b,
        }
    }
}

impl std::fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryLimit::Available(b) => write!(f, "{} MiB available on this host", b / MIB),
            MemoryLimit::Cap(b) => write!(
                f,
                "{} MiB this agent allows one job (--max-job-memory-mib)",
                b / MIB
            ),
        }
    }
}

/// A job whose workload would not fit in the memory it may use (sizes in MiB: the need
/// rounded up, the limit down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allocation_kb {allocation_kb} does not fit in memory: a {runtime} job needs {needed_mib} MiB \
     ({copies} x {allocation_mib} MiB of workload and {base_mib} MiB for the worker), more than \
     the {limit}"
)]
pub struct JobTooLarge {
    /// The job's `allocation_kb`.
    pub allocation_kb: u32,
    /// The job's runtime.
    pub runtime: String,
    /// The expected peak.
    pub needed_mib: u64,
    /// Allocations resident at once.
    pub copies: u64,
    /// One allocation.
    pub allocation_mib: u64,
    /// The worker's base.
    pub base_mib: u64,
    /// What it was compared with.
    pub limit: MemoryLimit,
}

/// Refuses `job` when its expected peak exceeds `limit`.
pub fn check_memory(job: &JobSpec, limit: MemoryLimit) -> Result<(), JobTooLarge> {
    let footprint = Footprint::of(job);
    let needed = footprint.total_bytes();
    if needed <= limit.bytes() {
        return Ok(());
    }
    Err(JobTooLarge {
        allocation_kb: job.workload.allocation_kb,
        runtime: job.runtime.name().to_owned(),
        needed_mib: needed.div_ceil(MIB),
        copies: footprint.copies,
        allocation_mib: footprint.allocation_bytes.div_ceil(MIB),
        base_mib: footprint.base_bytes / MIB,
        limit,
    })
}

/// Memory available for a job on this host now: `MemAvailable`, or the memory limit of the
/// agent's cgroup (a container) if that is lower. Page cache charged to the cgroup is not
/// subtracted, so a container busy writing files does not refuse jobs that would fit.
pub fn host_memory_available() -> Result<u64, sysinfo::Error> {
    let mut sys = sysinfo::System::new()?;
    sys.refresh_memory();
    let available = sys.available_memory();
    Ok(match sys.cgroup_limits() {
        Some(cgroup) if cgroup.total_memory > 0 => available.min(cgroup.total_memory),
        _ => available,
    })
}

/// Why a worker or probe process could not do its work (a job that fails is not one: it ends
/// with a `failed` event).
#[derive(Debug, thiserror::Error)]
pub enum WorkerProcessError {
    /// Reading stdin, writing stdout or installing the signal handlers failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The job on stdin is not a [`WorkerInput`].
    #[error("worker job on stdin is not valid: {error}")]
    InvalidInput {
        /// The error (part of the message, so not chained as a source).
        error: serde_json::Error,
    },
    /// The probe's answer could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The worker's main: reads the job from stdin, runs it, writes events to stdout. Stops early
/// (a `failed` event, reason `interrupted`) on SIGTERM or SIGINT, or when its parent dies.
pub fn run_worker_process() -> Result<(), WorkerProcessError> {
    let mut input = String::new();
    std::io::stdin().lock().read_line(&mut input)?;
    let input: WorkerInput =
        serde_json::from_str(&input).map_err(|error| WorkerProcessError::InvalidInput { error })?;
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&cancel))?;
    }
    watch_parent(Arc::clone(&cancel));
    let stdout = std::io::stdout();
    let emit = |event: &JobUpdate| {
        let mut out = stdout.lock();
        // A parent that stopped reading is gone; the parent watch stops the job.
        if serde_json::to_writer(&mut out, event).is_ok() {
            out.write_all(b"\n").ok();
            out.flush().ok();
        }
    };
    let event = run_job_events(&input, &cancel, &emit);
    emit(&event);
    Ok(())
}

/// Environment variable: on-CPU nanoseconds a worker adds after every tracked overhead sample.
pub const INJECT_SAMPLE_COST_ENV: &str = "FLEETGATE_INJECT_SAMPLE_COST_NS";
/// Environment variable: bytes a worker retains after every soak sample.
pub const INJECT_LEAK_ENV: &str = "FLEETGATE_INJECT_LEAK_BYTES_PER_SAMPLE";

/// Faults injected into a worker's jobs from outside the build, so that the gate's power can be
/// measured end to end (the gate-trust benchmark). Unset, both are zero and the job runs as
/// shipped; set, every job of the worker logs a warning saying so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InjectedFaults {
    /// Spun after every tracked overhead sample ([`INJECT_SAMPLE_COST_ENV`]).
    pub tracked_sample_cost: Duration,
    /// Retained after every soak sample ([`INJECT_LEAK_ENV`]).
    pub leak_bytes_per_sample: usize,
}

impl InjectedFaults {
    /// Reads the two variables through `var`; a value that is not a whole number (at most 1 s
    /// of cost, 1 MiB of leak per sample) is an error naming the variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let read = |name: &str, max: u64| -> Result<u64, String> {
            match var(name) {
                None => Ok(0),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(format!(
                        "{name} must be a whole number from 0 to {max}, not '{v}'"
                    )),
                },
            }
        };
        Ok(InjectedFaults {
            tracked_sample_cost: Duration::from_nanos(read(INJECT_SAMPLE_COST_ENV, 1_000_000_000)?),
            leak_bytes_per_sample: read(INJECT_LEAK_ENV, 1 << 20)? as usize,
        })
    }
}

/// Runs the input's job, passing progress and checkpoints to `emit`; returns the terminal
/// event.
pub fn run_job_events(
    input: &WorkerInput,
    cancel: &AtomicBool,
    emit: &dyn Fn(&JobUpdate),
) -> JobUpdate {
    let mut phase = JobPhase::Starting;
    let mut last_tenth = u64::MAX;
    let mut progress = |p: Progress| {
        let tenth = p.done.saturating_mul(10) / p.total.max(1);
        // Phase changes and every tenth: enough for a live bar, cheap on the wire.
        if p.phase != phase || tenth != last_tenth || p.done == p.total {
            phase = p.phase;
            last_tenth = tenth;
            emit(&JobUpdate::Progress {
                phase: p.phase,
                done: p.done,
                total: p.total,
            });
        }
    };
    let mut checkpoint = |sample_index: u64, rss_bytes: u64| {
        emit(&JobUpdate::Checkpoint {
            sample_index,
            rss_bytes,
        });
    };
    let faults = match InjectedFaults::from_env(|name| std::env::var(name).ok()) {
        Ok(faults) => faults,
        Err(reason) => return JobUpdate::Failed { phase, reason },
    };
    if faults != InjectedFaults::default() {
        tracing::warn!(
            ?faults,
            "Faults are injected into this job from the environment: it does not measure the build as shipped."
        );
    }
    let mut leaked: Vec<u8> = Vec::new();
    let mut leak = |sample: u64| {
        // Written, so the pages are resident; a growing vector keeps exactly the bytes asked for.
        let byte = (sample % 251) as u8 + 1;
        leaked.extend(std::iter::repeat_n(byte, faults.leak_bytes_per_sample));
    };
    let result = {
        let mut hooks = Hooks::new(&mut progress, cancel);
        hooks.on_checkpoint = Some(&mut checkpoint);
        hooks.tracked_sample_spin = faults.tracked_sample_cost;
        if faults.leak_bytes_per_sample > 0 {
            hooks.after_soak_sample = Some(&mut leak);
        }
        job::run_job(&input.job, &input.artifact_root, &mut hooks)
    };
    match result {
        Ok(section) => JobUpdate::Report {
            section: Box::new(section),
        },
        Err(ScenarioError::Interrupted) => JobUpdate::Failed {
            phase,
            reason: "interrupted".to_owned(),
        },
        Err(err) => JobUpdate::Failed {
            phase,
            reason: err.to_string(),
        },
    }
}

/// What a probe worker finds: the runtimes that can run here (TensorFlow loaded for real).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Per runtime.
    pub runtimes: Vec<fleetgate_common::host::RuntimeAvailability>,
    /// Whether libtensorflow loaded.
    pub tensorflow_available: bool,
    /// Why not.
    pub tensorflow_unavailable_reason: Option<String>,
}

/// The probe worker's main: loads what the runtimes need and prints one [`Probe`] as JSON.
pub fn run_probe_process() -> Result<(), WorkerProcessError> {
    let loaded = crate::tensorflow::load();
    let runtimes = RuntimeKind::ALL
        .iter()
        .map(|&kind| {
            let result = crate::runtime::open_collector(kind, 64, 0)
                .map(|_| ())
                .map_err(|e| e.to_string());
            fleetgate_common::host::RuntimeAvailability {
                runtime: kind.name().to_owned(),
                available: result.is_ok(),
                reason: result.err(),
            }
        })
        .collect();
    let probe = Probe {
        runtimes,
        tensorflow_available: loaded.is_ok(),
        tensorflow_unavailable_reason: loaded.err().map(|e| e.to_string()),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &probe)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Why a probe worker gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The worker ran past the time limit and was killed.
    #[error("the probe worker did not answer within {} s", PROBE_TIMEOUT.as_secs())]
    Timeout,
    /// The worker could not be started or waited for.
    #[error("cannot start the probe worker {}: {source}", program.display())]
    Start {
        /// The worker program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker's output is not a probe.
    #[error("the probe worker answered nothing usable ({status}): {source}")]
    Answer {
        /// How the worker exited.
        status: std::process::ExitStatus,
        /// Why its output was refused.
        #[source]
        source: serde_json::Error,
    },
}

/// How long a probe worker may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a probe worker (`<worker> probe`) and returns what it found, or why it could not.
pub async fn probe_with_worker(command: &WorkerCommand) -> Result<Probe, ProbeError> {
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.args)
        .arg("--probe")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    worker_env(&mut cmd);
    let output = tokio::time::timeout(PROBE_TIMEOUT, cmd.output())
        .await
        .map_err(|_| ProbeError::Timeout)?
        .map_err(|source| ProbeError::Start {
            program: command.program.clone(),
            source,
        })?;
    serde_json::from_slice(&output.stdout).map_err(|source| ProbeError::Answer {
        status: output.status,
        source,
    })
}

/// The environment every worker gets: where libtensorflow is, and quiet TensorFlow logs.
fn worker_env(cmd: &mut tokio::process::Command) {
    cmd.env("TENSORFLOW_DIR", crate::tensorflow::tensorflow_dir());
    // The worker's logs share the agent's stderr: the same format keeps it one stream.
    cmd.env(
        "FLEETGATE_LOG_FORMAT",
        fleetgate_common::telemetry::current_format().name(),
    );
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        cmd.env("TF_CPP_MIN_LOG_LEVEL", "2");
    }
}

/// Sets `cancel` when the parent process goes away (the worker is reparented), so an agent
/// killed with SIGKILL does not leave its job running.
fn watch_parent(cancel: Arc<AtomicBool>) {
    let parent = rustix::process::getppid();
    std::thread::Builder::new()
        .name("fleetgate-parent-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                if rustix::process::getppid() != parent {
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
            }
        })
        .ok();
}

/// How to start a worker: a program and the arguments before the job (the agent binary and
/// `worker`, or the `fleetgate` binary and its worker subcommand for the embedded agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// A running worker, as the agent sees it.
#[derive(Debug)]
pub struct WorkerHandle {
    kill: Option<tokio::sync::oneshot::Sender<String>>,
}

impl WorkerHandle {
    /// Kills the worker; its job ends with a `failed` event carrying `reason`.
    pub fn kill(&mut self, reason: String) {
        if let Some(kill) = self.kill.take() {
            kill.send(reason).ok();
        }
    }
}

/// Starts a worker for `job`; its events (starting with `started`, ending with exactly one
/// terminal event) arrive on `events`. The worker is killed at `deadline`.
pub fn spawn_worker(
    command: &WorkerCommand,
    job: &WorkerInput,
    deadline: tokio::time::Instant,
    events: mpsc::UnboundedSender<JobUpdate>,
) -> WorkerHandle {
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
    let command = command.clone();
    let job = job.clone();
    tokio::spawn(async move {
        let terminal = supervise(&command, &job, deadline, kill_rx, &events).await;
        events.send(terminal).ok();
    });
    WorkerHandle {
        kill: Some(kill_tx),
    }
}

async fn supervise(
    command: &WorkerCommand,
    job: &WorkerInput,
    deadline: tokio::time::Instant,
    mut kill: tokio::sync::oneshot::Receiver<String>,
    events: &mpsc::UnboundedSender<JobUpdate>,
) -> JobUpdate {
    let failed = |phase: JobPhase, reason: String| JobUpdate::Failed { phase, reason };
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    worker_env(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return failed(
                JobPhase::Starting,
                format!("cannot start worker {}: {e}", command.program.display()),
            );
        }
    };
    events
        .send(JobUpdate::Started {
            pid: child.id().unwrap_or(0),
        })
        .ok();
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let mut line = serde_json::to_vec(job).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = stdin.write_all(&line).await {
            child.start_kill().ok();
            return failed(
                JobPhase::Starting,
                format!("cannot hand the job to its worker: {e}"),
            );
        }
    }
    let Some(stdout) = child.stdout.take() else {
        child.start_kill().ok();
        return failed(JobPhase::Starting, "worker has no stdout".into());
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut phase = JobPhase::Starting;
    let mut terminal = None;
    let stop_reason = loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<JobUpdate>(&line) {
                    Ok(event) if event.is_terminal() => {
                        terminal = Some(event);
                    }
                    Ok(event) => {
                        if let JobUpdate::Progress { phase: p, .. } = &event {
                            phase = *p;
                        }
                        events.send(event).ok();
                    }
                    Err(e) => tracing::warn!(error = %e, line = %line, "Worker wrote an unreadable line."),
                },
                Ok(None) | Err(_) => break None,
            },
            () = tokio::time::sleep_until(deadline) => break Some(format!("deadline passed during {phase}")),
            reason = &mut kill => break Some(reason.unwrap_or_else(|_| "cancelled".into())),
        }
    };
    if let Some(reason) = stop_reason {
        // Ask nicely (the worker closes its telemetry session), then make sure.
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).ok();
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            child.start_kill().ok();
            child.wait().await.ok();
        }
        return failed(phase, reason);
    }
    let status = child.wait().await;
    match (terminal, status) {
        (Some(event), _) => event,
        (None, Ok(status)) => failed(phase, format!("worker exited without a report ({status})")),
        (None, Err(e)) => failed(phase, format!("worker lost: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_common::config::{Mode, Profile, Workload};
    use fleetgate_common::knobs::RuntimeKnobs;

    #[test]
    fn injected_faults_are_read_from_their_variables_and_bad_values_name_them() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            InjectedFaults::from_env(env(&[])),
            Ok(InjectedFaults::default())
        );
        assert_eq!(
            InjectedFaults::from_env(env(&[
                (INJECT_SAMPLE_COST_ENV, "1000"),
                (INJECT_LEAK_ENV, " 300 ")
            ])),
            Ok(InjectedFaults {
                tracked_sample_cost: Duration::from_micros(1),
                leak_bytes_per_sample: 300,
            })
        );
        let err = InjectedFaults::from_env(env(&[(INJECT_LEAK_ENV, "-3")])).unwrap_err();
        assert_eq!(
            err,
            "FLEETGATE_INJECT_LEAK_BYTES_PER_SAMPLE must be a whole number from 0 to 1048576, not '-3'"
        );
        assert!(
            InjectedFaults::from_env(env(&[(INJECT_SAMPLE_COST_ENV, "2000000000")]))
                .unwrap_err()
                .starts_with("FLEETGATE_INJECT_SAMPLE_COST_NS must be")
        );
    }

    #[test]
    fn events_round_trip_as_tagged_json_lines() {
        let e = JobUpdate::Progress {
            phase: JobPhase::Soak,
            done: 5,
            total: 10,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"event":"progress","phase":"soak","done":5,"total":10}"#
        );
        assert_eq!(serde_json::from_str::<JobUpdate>(&line).unwrap(), e);
        assert!(!e.is_terminal());
    }

    fn job(runtime: &str, allocation_kb: u32, kind: WorkloadKind) -> JobSpec {
        JobSpec {
            runtime: RuntimeKind::from_name(runtime).unwrap(),
            device: None,
            workload: Workload {
                profile: Profile::Pr,
                mode: Mode::All,
                iterations: 10,
                allocation_kb,
                kind,
            },
            knobs: RuntimeKnobs::default(),
            scratch_root: None,
        }
    }

    #[test]
    fn a_workload_larger_than_the_memory_it_may_use_is_refused_with_the_numbers() {
        let gib = 1024 * MIB;
        let huge = job("gpumemprof_cpu", u32::MAX, WorkloadKind::Reference);
        assert_eq!(
            check_memory(&huge, MemoryLimit::Available(16 * gib))
                .unwrap_err()
                .to_string(),
            "allocation_kb 4294967295 does not fit in memory: a gpumemprof_cpu job needs 4194336 MiB \
             (1 x 4194304 MiB of workload and 32 MiB for the worker), more than the 16384 MiB \
             available on this host"
        );
        let tf = job("tfmemprof_cpu", 1024 * 1024, WorkloadKind::Tensorflow);
        assert_eq!(
            check_memory(
                &tf,
                MemoryLimit::new(Some(16 * gib), Some(4 * gib)).unwrap()
            )
            .unwrap_err()
            .to_string(),
            "allocation_kb 1048576 does not fit in memory: a tfmemprof_cpu job needs 7552 MiB \
             (7 x 1024 MiB of workload and 384 MiB for the worker), more than the 4096 MiB this \
             agent allows one job (--max-job-memory-mib)"
        );
        // The defaults fit anywhere a TensorFlow worker fits.
        let default = job("tfmemprof_cpu", 512, WorkloadKind::Reference);
        assert_eq!(
            Footprint::of(&default).total_bytes(),
            384 * MIB + 4 * 512 * 1024
        );
        assert!(check_memory(&default, MemoryLimit::Available(gib)).is_ok());
        // The GPU runtime's matrices are device memory.
        assert_eq!(
            Footprint::of(&job("tfmemprof_gpu", 1024, WorkloadKind::Tensorflow)).copies,
            1
        );
    }

    #[test]
    fn the_lower_of_the_available_memory_and_the_cap_applies() {
        assert_eq!(
            MemoryLimit::new(Some(10), Some(20)),
            Some(MemoryLimit::Available(10))
        );
        assert_eq!(
            MemoryLimit::new(Some(30), Some(20)),
            Some(MemoryLimit::Cap(20))
        );
        assert_eq!(MemoryLimit::new(None, Some(20)), Some(MemoryLimit::Cap(20)));
        assert_eq!(MemoryLimit::new(None, None), None);
        assert!(host_memory_available().unwrap() > 0);
    }
}
