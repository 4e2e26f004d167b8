//! Conversions between wire types (`fleetgate_proto::v1`) and domain types. Wire types stay at
//! the edge: everything that arrives is validated here, and an unusable message is a
//! [`ConvertError`] naming the field.

use std::collections::HashMap;

use fleetgate_proto::v1 as pb;
use prost::Message as _;

use crate::config::{self, GateMode, Mode, Profile, RuntimeKnobs, WorkloadKind};
use crate::fleet::{AgentState, GpuFacts, HostFacts, JobPhase, JobUpdate, RuntimeAvailability};
use crate::ids::{AgentId, JobId, RunId};
use crate::messages::{
    AgentHello, AgentSummary, FromAgent, Heartbeat, JobEvent, JobResume, RunEvent, ToAgent,
};
use crate::report::RuntimeSection;

/// A wire message could not be turned into a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {}", crate::input::one_line(.message))]
pub struct ConvertError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> ConvertError {
    ConvertError {
        field,
        message: message.into(),
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

// === Limits on what peers send ===
//
// Every string and list a peer sends is bounded here, so what the coordinator keeps per agent
// and per run is bounded whatever the peer sends; a value over a limit is refused with one line
// naming the field and the limit.

/// Largest `Hello`, encoded (everything the coordinator keeps about an agent comes from it).
pub const MAX_HELLO_BYTES: usize = 32 * 1024;
/// Most labels on an agent (or in a run's label selection).
pub const MAX_LABELS: usize = 32;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// Longest host fact, GPU fact, runtime name, hardware class or agent version, in bytes.
pub const MAX_FACT_BYTES: usize = 256;
/// Longest "why not" reason (GPU, TensorFlow, runtime unavailable), in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most GPUs in an agent's facts.
pub const MAX_GPUS: usize = 64;
/// Most runtimes an agent lists or a run asks for.
pub const MAX_RUNTIMES: usize = 16;
/// Most jobs an agent's `Hello` may resume.
pub const MAX_RESUME_JOBS: usize = 256;
/// Longest agent or job id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest path (gate asset names, the overhead scratch root), in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most agent ids a run may select by name.
pub const MAX_SELECTED_AGENTS: usize = 10_000;
/// Longest knobs JSON, in bytes.
pub const MAX_KNOBS_JSON_BYTES: usize = 64 * 1024;
/// Largest runtime report section an agent may send, as JSON (a real one is a few KiB).
pub const MAX_SECTION_BYTES: usize = 1 << 20;
/// Longest failure reason kept from an agent, in bytes; a longer one is cut at this length.
pub const MAX_FAILURE_REASON_BYTES: usize = 4 * 1024;
/// Latest job deadline accepted, in milliseconds since the Unix epoch (the end of year 9999).
pub const MAX_DEADLINE_UNIX_MS: u64 = 253_402_300_799_999;

fn at_most_bytes(field: &'static str, text: &str, max: usize) -> Result<(), ConvertError> {
    if text.len() > max {
        Err(err(
            field,
            format!("{} bytes, more than the limit of {max}", text.len()),
        ))
    } else {
        Ok(())
    }
}

fn at_most_items(
    field: &'static str,
    count: usize,
    max: usize,
    what: &str,
) -> Result<(), ConvertError> {
    if count > max {
        Err(err(
            field,
            format!("{count} {what}, more than the limit of {max}"),
        ))
    } else {
        Ok(())
    }
}

/// A peer's key, quoted for a message: one line, at most 32 characters.
fn quoted(key: &str) -> String {
    let mut shown: String = key.chars().take(32).collect();
    if shown.len() < key.len() {
        shown.push('…');
    }
    format!("\"{}\"", crate::input::one_line(&shown))
}

/// Checks a label map (an agent's labels, or a run's label selection) against [`MAX_LABELS`],
/// [`MAX_LABEL_KEY_BYTES`] and [`MAX_LABEL_VALUE_BYTES`]; the first offending key in
/// sorted order is named.
pub fn check_labels(
    field: &'static str,
    labels: &HashMap<String, String>,
) -> Result<(), ConvertError> {
    at_most_items(field, labels.len(), MAX_LABELS, "labels")?;
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort_unstable();
    for key in keys {
        if key.len() > MAX_LABEL_KEY_BYTES {
            return Err(err(
                field,
                format!(
                    "key {} is {} bytes, more than the limit of {MAX_LABEL_KEY_BYTES}",
                    quoted(key),
                    key.len()
                ),
            ));
        }
        let value = labels.get(key).map_or("", String::as_str);
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(err(
                field,
                format!(
                    "value of {} is {} bytes, more than the limit of {MAX_LABEL_VALUE_BYTES}",
                    quoted(key),
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks an agent's `Hello` against the limits above, field by field, then as a whole
/// ([`MAX_HELLO_BYTES`]). Nothing is kept from a `Hello` that fails.
pub fn check_hello(hello: &pb::Hello) -> Result<(), ConvertError> {
    at_most_bytes("agent_id", &hello.agent_id, MAX_ID_BYTES)?;
    at_most_bytes("agent_version", &hello.agent_version, MAX_FACT_BYTES)?;
    if let Some(f) = &hello.facts {
        at_most_bytes("facts.hostname", &f.hostname, MAX_FACT_BYTES)?;
        at_most_bytes("facts.os", &f.os, MAX_FACT_BYTES)?;
        at_most_bytes("facts.kernel", &f.kernel, MAX_FACT_BYTES)?;
        at_most_bytes("facts.cpu_model", &f.cpu_model, MAX_FACT_BYTES)?;
        at_most_bytes(
            "facts.gpu_unavailable_reason",
            &f.gpu_unavailable_reason,
            MAX_REASON_BYTES,
        )?;
        at_most_bytes(
            "facts.tensorflow_unavailable_reason",
            &f.tensorflow_unavailable_reason,
            MAX_REASON_BYTES,
        )?;
        at_most_items("facts.gpus", f.gpus.len(), MAX_GPUS, "GPUs")?;
        for g in &f.gpus {
            at_most_bytes("facts.gpus.name", &g.name, MAX_FACT_BYTES)?;
            at_most_bytes("facts.gpus.uuid", &g.uuid, MAX_FACT_BYTES)?;
            at_most_bytes("facts.gpus.pci_bus_id", &g.pci_bus_id, MAX_FACT_BYTES)?;
            at_most_bytes(
                "facts.gpus.driver_version",
                &g.driver_version,
                MAX_FACT_BYTES,
            )?;
            at_most_bytes(
                "facts.gpus.cuda_driver_version",
                &g.cuda_driver_version,
                MAX_FACT_BYTES,
            )?;
        }
    }
    at_most_items("runtimes", hello.runtimes.len(), MAX_RUNTIMES, "runtimes")?;
    for r in &hello.runtimes {
        at_most_bytes("runtimes.runtime", &r.runtime, MAX_FACT_BYTES)?;
        at_most_bytes(
            "runtimes.unavailable_reason",
            &r.unavailable_reason,
            MAX_REASON_BYTES,
        )?;
    }
    check_labels("labels", &hello.labels)?;
    at_most_bytes("hardware_class", &hello.hardware_class, MAX_FACT_BYTES)?;
    at_most_items("jobs", hello.jobs.len(), MAX_RESUME_JOBS, "jobs")?;
    for j in &hello.jobs {
        at_most_bytes("jobs.job_id", &j.job_id, MAX_ID_BYTES)?;
    }
    let size = hello.encoded_len();
    if size > MAX_HELLO_BYTES {
        return Err(err(
            "hello",
            format!("{size} bytes, more than the limit of {MAX_HELLO_BYTES}"),
        ));
    }
    Ok(())
}

/// Checks the sizes and bounds of a `SubmitRunRequest` before anything is built from it:
/// `deadline_ms` (0: the coordinator's default), `iterations`, `allocation_kb`, and every
/// string and list. The gate assets and knobs are checked further when they are parsed.
pub fn check_submit_run(r: &pb::SubmitRunRequest) -> Result<(), ConvertError> {
    if r.deadline_ms != 0 {
        config::deadline_from_millis(r.deadline_ms)
            .map_err(|e| err("deadline_ms", format!("{e} (0: the coordinator's default)")))?;
    }
    config::check_iterations(r.iterations).map_err(|e| err("iterations", e.to_string()))?;
    config::check_allocation_kb(r.allocation_kb)
        .map_err(|e| err("allocation_kb", e.to_string()))?;
    at_most_items("runtimes", r.runtimes.len(), MAX_RUNTIMES, "runtimes")?;
    for runtime in &r.runtimes {
        at_most_bytes("runtimes", runtime, MAX_FACT_BYTES)?;
    }
    at_most_items(
        "agent_ids",
        r.agent_ids.len(),
        MAX_SELECTED_AGENTS,
        "agent ids",
    )?;
    for id in &r.agent_ids {
        at_most_bytes("agent_ids", id, MAX_ID_BYTES)?;
    }
    check_labels("labels", &r.labels)?;
    at_most_bytes("hardware_class", &r.hardware_class, MAX_FACT_BYTES)?;
    at_most_bytes("workload", &r.workload, MAX_FACT_BYTES)?;
    at_most_bytes(
        "overhead_scratch_root",
        &r.overhead_scratch_root,
        MAX_PATH_BYTES,
    )?;
    at_most_bytes("budgets_path", &r.budgets_path, MAX_PATH_BYTES)?;
    at_most_bytes("baseline_path", &r.baseline_path, MAX_PATH_BYTES)?;
    at_most_bytes("tolerances_path", &r.tolerances_path, MAX_PATH_BYTES)?;
    let asset_max = usize::try_from(crate::input::MAX_INPUT_BYTES).unwrap_or(usize::MAX);
    at_most_bytes("budgets_json", &r.budgets_json, asset_max)?;
    at_most_bytes("baseline_json", &r.baseline_json, asset_max)?;
    at_most_bytes("tolerances_json", &r.tolerances_json, asset_max)?;
    at_most_bytes("knobs_json", &r.knobs_json, MAX_KNOBS_JSON_BYTES)?;
    Ok(())
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
fn truncated(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

impl From<&HostFacts> for pb::HostFacts {
    fn from(f: &HostFacts) -> Self {
        pb::HostFacts {
            hostname: f.hostname.clone(),
            os: f.os.clone(),
            kernel: f.kernel.clone(),
            cpu_model: f.cpu_model.clone(),
            cpu_cores: f.cpu_cores,
            memory_total_bytes: f.memory_total_bytes,
            gpus: f
                .gpus
                .iter()
                .map(|g| pb::GpuFacts {
                    index: g.index,
                    name: g.name.clone(),
                    uuid: g.uuid.clone(),
                    pci_bus_id: g.pci_bus_id.clone(),
                    memory_total_bytes: g.memory_total_bytes,
                    driver_version: g.driver_version.clone(),
                    cuda_driver_version: g.cuda_driver_version.clone(),
                })
                .collect(),
            gpu_unavailable_reason: f.gpu_unavailable_reason.clone().unwrap_or_default(),
            tensorflow_available: f.tensorflow_available,
            tensorflow_unavailable_reason: f
                .tensorflow_unavailable_reason
                .clone()
                .unwrap_or_default(),
        }
    }
}

impl From<pb::HostFacts> for HostFacts {
    fn from(f: pb::HostFacts) -> Self {
        HostFacts {
            hostname: f.hostname,
            os: f.os,
            kernel: f.kernel,
            cpu_model: f.cpu_model,
            cpu_cores: f.cpu_cores,
            memory_total_bytes: f.memory_total_bytes,
            gpus: f
                .gpus
                .into_iter()
                .map(|g| GpuFacts {
                    index: g.index,
                    name: g.name,
                    uuid: g.uuid,
                    pci_bus_id: g.pci_bus_id,
                    memory_total_bytes: g.memory_total_bytes,
                    driver_version: g.driver_version,
                    cuda_driver_version: g.cuda_driver_version,
                })
                .collect(),
            gpu_unavailable_reason: non_empty(f.gpu_unavailable_reason),
            tensorflow_available: f.tensorflow_available,
            tensorflow_unavailable_reason: non_empty(f.tensorflow_unavailable_reason),
        }
    }
}

impl From<&RuntimeAvailability> for pb::RuntimeAvailability {
    fn from(r: &RuntimeAvailability) -> Self {
        pb::RuntimeAvailability {
            runtime: r.runtime.clone(),
            available: r.available,
            unavailable_reason: r.reason.clone().unwrap_or_default(),
        }
    }
}

impl From<pb::RuntimeAvailability> for RuntimeAvailability {
    fn from(r: pb::RuntimeAvailability) -> Self {
        RuntimeAvailability {
            runtime: r.runtime,
            available: r.available,
            reason: non_empty(r.unavailable_reason),
        }
    }
}

/// Wire value of a profile.
pub fn profile_to_pb(p: Profile) -> i32 {
    match p {
        Profile::Pr => pb::Profile::Pr as i32,
        Profile::Nightly => pb::Profile::Nightly as i32,
    }
}

/// Profile from its wire value (unspecified or unknown values are refused).
pub fn profile_from_pb(v: i32) -> Result<Profile, ConvertError> {
    match pb::Profile::try_from(v) {
        Ok(pb::Profile::Pr) => Ok(Profile::Pr),
        Ok(pb::Profile::Nightly) => Ok(Profile::Nightly),
        _ => Err(err("profile", format!("must be pr or nightly, got {v}"))),
    }
}

/// Wire value of a mode.
pub fn mode_to_pb(m: Mode) -> i32 {
    match m {
        Mode::Overhead => pb::Mode::Overhead as i32,
        Mode::Soak => pb::Mode::Soak as i32,
        Mode::All => pb::Mode::All as i32,
    }
}

/// Mode from its wire value.
pub fn mode_from_pb(v: i32) -> Result<Mode, ConvertError> {
    match pb::Mode::try_from(v) {
        Ok(pb::Mode::Overhead) => Ok(Mode::Overhead),
        Ok(pb::Mode::Soak) => Ok(Mode::Soak),
        Ok(pb::Mode::All) => Ok(Mode::All),
        _ => Err(err(
            "mode",
            format!("must be overhead, soak or all, got {v}"),
        )),
    }
}

/// Wire value of a gate mode.
pub fn gate_mode_to_pb(g: GateMode) -> i32 {
    match g {
        GateMode::Budget => pb::GateMode::Budget as i32,
        GateMode::Regression => pb::GateMode::Regression as i32,
    }
}

/// Gate mode from its wire value.
pub fn gate_mode_from_pb(v: i32) -> Result<GateMode, ConvertError> {
    match pb::GateMode::try_from(v) {
        Ok(pb::GateMode::Budget) => Ok(GateMode::Budget),
        Ok(pb::GateMode::Regression) => Ok(GateMode::Regression),
        _ => Err(err(
            "gate_mode",
            format!("must be budget or regression, got {v}"),
        )),
    }
}

/// A job as an agent receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// Job id.
    pub job_id: String,
    /// Run id.
    pub run_id: String,
    /// Runtime name.
    pub runtime: String,
    /// The GPU, for the per-GPU runtimes.
    pub device: Option<u32>,
    /// Profile.
    pub profile: Profile,
    /// Mode.
    pub mode: Mode,
    /// Workload steps.
    pub iterations: u32,
    /// KiB per step.
    pub allocation_kb: u32,
    /// Overhead workload.
    pub workload: WorkloadKind,
    /// Deadline, milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// Tuning knobs of the runtime.
    pub knobs: RuntimeKnobs,
    /// RAM-backed scratch root on the agent's host.
    pub overhead_scratch_root: Option<String>,
}

impl From<&JobRequest> for pb::JobSpec {
    fn from(j: &JobRequest) -> Self {
        pb::JobSpec {
            job_id: j.job_id.clone(),
            run_id: j.run_id.clone(),
            runtime: j.runtime.clone(),
            profile: profile_to_pb(j.profile),
            mode: mode_to_pb(j.mode),
            iterations: j.iterations,
            allocation_kb: j.allocation_kb,
            deadline_unix_ms: j.deadline_unix_ms,
            knobs_json: if j.knobs.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&j.knobs).unwrap_or_default()
            },
            overhead_scratch_root: j.overhead_scratch_root.clone().unwrap_or_default(),
            workload: j.workload.name().to_owned(),
            device_index: j.device,
        }
    }
}

/// Workload from its wire name (empty: the reference workload).
pub fn workload_from_pb(name: &str) -> Result<WorkloadKind, ConvertError> {
    match name {
        "" | "reference" => Ok(WorkloadKind::Reference),
        "tensorflow" => Ok(WorkloadKind::Tensorflow),
        other => Err(err(
            "workload",
            format!("must be reference or tensorflow, got {other:?}"),
        )),
    }
}

impl TryFrom<pb::JobSpec> for JobRequest {
    type Error = ConvertError;

    fn try_from(j: pb::JobSpec) -> Result<Self, ConvertError> {
        if j.job_id.is_empty() {
            return Err(err("job_id", "must not be empty"));
        }
        at_most_bytes("job_id", &j.job_id, MAX_ID_BYTES)?;
        if j.runtime.is_empty() {
            return Err(err("runtime", "must not be empty"));
        }
        at_most_bytes("runtime", &j.runtime, MAX_FACT_BYTES)?;
        config::check_iterations(j.iterations).map_err(|e| err("iterations", e.to_string()))?;
        config::check_allocation_kb(j.allocation_kb)
            .map_err(|e| err("allocation_kb", e.to_string()))?;
        if j.deadline_unix_ms > MAX_DEADLINE_UNIX_MS {
            return Err(err(
                "deadline_unix_ms",
                format!(
                    "must be at most {MAX_DEADLINE_UNIX_MS} (the end of year 9999), got {}",
                    j.deadline_unix_ms
                ),
            ));
        }
        at_most_bytes(
            "overhead_scratch_root",
            &j.overhead_scratch_root,
            MAX_PATH_BYTES,
        )?;
        at_most_bytes("knobs_json", &j.knobs_json, MAX_KNOBS_JSON_BYTES)?;
        let knobs = if j.knobs_json.is_empty() {
            RuntimeKnobs::default()
        } else {
            serde_json::from_str(&j.knobs_json).map_err(|e| err("knobs_json", e.to_string()))?
        };
        knobs.validate().map_err(|m| err("knobs_json", m))?;
        Ok(JobRequest {
            job_id: j.job_id,
            run_id: j.run_id,
            runtime: j.runtime,
            device: j.device_index,
            profile: profile_from_pb(j.profile)?,
            mode: mode_from_pb(j.mode)?,
            iterations: j.iterations,
            allocation_kb: j.allocation_kb,
            workload: workload_from_pb(&j.workload)?,
            deadline_unix_ms: j.deadline_unix_ms,
            knobs,
            overhead_scratch_root: non_empty(j.overhead_scratch_root),
        })
    }
}

/// Wire value of a job phase.
pub fn phase_to_pb(phase: JobPhase) -> i32 {
    (match phase {
        JobPhase::Starting => pb::JobPhase::Starting,
        JobPhase::Overhead => pb::JobPhase::Overhead,
        JobPhase::Soak => pb::JobPhase::Soak,
        JobPhase::RetentionValidation => pb::JobPhase::RetentionValidation,
        JobPhase::Unknown => pb::JobPhase::Unspecified,
    }) as i32
}

/// Job phase from its wire value (unspecified or unknown values: [`JobPhase::Unknown`]).
pub fn phase_from_pb(v: i32) -> JobPhase {
    match pb::JobPhase::try_from(v) {
        Ok(pb::JobPhase::Starting) => JobPhase::Starting,
        Ok(pb::JobPhase::Overhead) => JobPhase::Overhead,
        Ok(pb::JobPhase::Soak) => JobPhase::Soak,
        Ok(pb::JobPhase::RetentionValidation) => JobPhase::RetentionValidation,
        Ok(pb::JobPhase::Unspecified) | Err(_) => JobPhase::Unknown,
    }
}

/// The wire event for update `update` of job `job_id`, numbered `sequence`.
pub fn job_event_to_pb(job_id: &str, sequence: u64, update: &JobUpdate) -> pb::JobEvent {
    use pb::job_event::Body;
    let body = match update {
        JobUpdate::Started { pid } => Body::Started(pb::JobStarted { worker_pid: *pid }),
        JobUpdate::Progress { phase, done, total } => Body::Progress(pb::JobProgress {
            phase: phase_to_pb(*phase),
            done: *done,
            total: *total,
        }),
        JobUpdate::Checkpoint {
            sample_index,
            rss_bytes,
        } => Body::Checkpoint(pb::RssCheckpoint {
            sample_index: *sample_index,
            rss_bytes: *rss_bytes,
        }),
        JobUpdate::Report { section } => Body::Report(pb::RuntimeReport {
            section_json: serde_json::to_string(section).unwrap_or_default(),
        }),
        JobUpdate::Failed { phase, reason } => Body::Failed(pb::JobFailed {
            phase: phase_to_pb(*phase),
            reason: reason.clone(),
        }),
    };
    pb::JobEvent {
        job_id: job_id.to_owned(),
        sequence,
        body: Some(body),
    }
}

/// The update carried by a wire event.
pub fn job_update_from_pb(event: pb::JobEvent) -> Result<JobUpdate, ConvertError> {
    use pb::job_event::Body;
    if event.sequence == 0 {
        return Err(err("sequence", "must start at 1"));
    }
    Ok(match event.body.ok_or_else(|| err("body", "missing"))? {
        Body::Started(s) => JobUpdate::Started { pid: s.worker_pid },
        Body::Progress(p) => JobUpdate::Progress {
            phase: phase_from_pb(p.phase),
            done: p.done,
            total: p.total,
        },
        Body::Checkpoint(c) => JobUpdate::Checkpoint {
            sample_index: c.sample_index,
            rss_bytes: c.rss_bytes,
        },
        Body::Report(r) => {
            at_most_bytes("report.section_json", &r.section_json, MAX_SECTION_BYTES)?;
            // From the network: the same defensive reading as an operator's file.
            let section: RuntimeSection = crate::input::parse_json(r.section_json.as_bytes())
                .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
                .map_err(|e| err("report.section_json", e))?;
            JobUpdate::Report {
                section: Box::new(section),
            }
        }
        Body::Failed(f) => JobUpdate::Failed {
            phase: phase_from_pb(f.phase),
            reason: truncated(f.reason, MAX_FAILURE_REASON_BYTES),
        },
    })
}

// === The agent's session and the run API ===

/// Why an agent's `Hello` is refused before anything is kept from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The agent speaks another protocol version.
    #[error(
        "protocol version {got} is not supported (this coordinator speaks {})",
        fleetgate_proto::PROTOCOL_VERSION
    )]
    ProtocolVersion {
        /// The version it speaks.
        got: u32,
    },
    /// The agent id is not safe as a file name ([`crate::ids::is_safe_id`]).
    #[error("agent_id must be 1-128 characters of letters, digits, '-', '_' or '.'")]
    AgentId,
    /// A field is over its limit ([`check_hello`]).
    #[error(transparent)]
    Limit(ConvertError),
}

/// The agent's `Hello` as a domain value: its protocol version, then its id, then its limits
/// ([`check_hello`]) are checked, in that order. An empty hardware class means "derive it".
pub fn hello_from_pb(hello: pb::Hello) -> Result<AgentHello, HelloError> {
    if hello.protocol_version != fleetgate_proto::PROTOCOL_VERSION {
        return Err(HelloError::ProtocolVersion {
            got: hello.protocol_version,
        });
    }
    if !crate::ids::is_safe_id(&hello.agent_id) {
        return Err(HelloError::AgentId);
    }
    check_hello(&hello).map_err(HelloError::Limit)?;
    Ok(AgentHello {
        agent_id: AgentId::from(hello.agent_id),
        agent_version: hello.agent_version,
        facts: HostFacts::from(hello.facts.unwrap_or_default()),
        runtimes: hello
            .runtimes
            .into_iter()
            .map(RuntimeAvailability::from)
            .collect(),
        labels: hello.labels.into_iter().collect(),
        hardware_class: non_empty(hello.hardware_class),
        jobs: hello
            .jobs
            .into_iter()
            .map(|j| JobResume {
                job_id: JobId::from(j.job_id),
                last_sequence: j.last_sequence,
                running: j.running,
            })
            .collect(),
    })
}

impl From<&AgentHello> for pb::Hello {
    fn from(h: &AgentHello) -> Self {
        pb::Hello {
            agent_id: h.agent_id.to_string(),
            agent_version: h.agent_version.clone(),
            protocol_version: fleetgate_proto::PROTOCOL_VERSION,
            facts: Some(pb::HostFacts::from(&h.facts)),
            runtimes: h
                .runtimes
                .iter()
                .map(pb::RuntimeAvailability::from)
                .collect(),
            labels: h.labels.clone().into_iter().collect(),
            hardware_class: h.hardware_class.clone().unwrap_or_default(),
            jobs: h
                .jobs
                .iter()
                .map(|j| pb::JobResume {
                    job_id: j.job_id.to_string(),
                    last_sequence: j.last_sequence,
                    running: j.running,
                })
                .collect(),
        }
    }
}

/// A job's wire event as a domain one: its update, or why it has none usable
/// ([`job_update_from_pb`]).
pub fn job_event_from_pb(mut event: pb::JobEvent) -> JobEvent {
    let job_id = JobId::from(std::mem::take(&mut event.job_id));
    let sequence = event.sequence;
    JobEvent {
        job_id,
        sequence,
        update: job_update_from_pb(event),
    }
}

/// A message of an agent's session after its `Hello`, as a domain value. A second `Hello` or
/// an empty message is [`FromAgent::Unexpected`]; an unusable job event keeps its error.
pub fn from_agent_pb(message: pb::AgentMessage) -> FromAgent {
    use pb::agent_message::Body;
    match message.body {
        Some(Body::Heartbeat(h)) => FromAgent::Heartbeat(Heartbeat {
            sent_unix_ms: h.sent_unix_ms,
            running_job_ids: h.running_job_ids.into_iter().map(JobId::from).collect(),
        }),
        Some(Body::JobEvent(event)) => FromAgent::JobEvent(job_event_from_pb(event)),
        Some(Body::Hello(_)) | None => FromAgent::Unexpected,
    }
}

impl From<ToAgent> for pb::CoordinatorMessage {
    fn from(message: ToAgent) -> Self {
        use pb::coordinator_message::Body;
        let body = match message {
            ToAgent::Welcome(w) => Body::Welcome(pb::Welcome {
                heartbeat_interval_ms: u32::try_from(w.heartbeat_interval.as_millis())
                    .unwrap_or(u32::MAX),
                acked_through: w
                    .acked_through
                    .into_iter()
                    .map(|(job_id, sequence)| (job_id.into_string(), sequence))
                    .collect(),
                unknown_job_ids: w
                    .unknown_job_ids
                    .into_iter()
                    .map(JobId::into_string)
                    .collect(),
            }),
            ToAgent::Assign(job) => Body::AssignJob(pb::AssignJob {
                job: Some(pb::JobSpec::from(&*job)),
            }),
            ToAgent::Cancel { job_id, reason } => Body::CancelJob(pb::CancelJob {
                job_id: job_id.into_string(),
                reason,
            }),
            ToAgent::Ack { job_id, sequence } => Body::Ack(pb::Ack {
                job_id: job_id.into_string(),
                sequence,
            }),
        };
        pb::CoordinatorMessage { body: Some(body) }
    }
}

/// The wire event of run `run_id`.
pub fn run_event_to_pb(run_id: &RunId, event: RunEvent) -> pb::RunEvent {
    use pb::run_event::Body;
    let body = match event {
        RunEvent::Accepted {
            agent_ids,
            deadline_unix_ms,
        } => Body::Accepted(pb::RunAccepted {
            agent_ids: agent_ids.into_iter().map(AgentId::into_string).collect(),
            deadline_unix_ms,
        }),
        RunEvent::Progress {
            agent_id,
            runtime,
            phase,
            done,
            total,
        } => Body::Progress(pb::AgentProgress {
            agent_id: agent_id.into_string(),
            runtime,
            phase: phase.name().to_owned(),
            done,
            total,
        }),
        RunEvent::Report(json) => Body::ReportJson(json),
    };
    pb::RunEvent {
        run_id: run_id.to_string(),
        body: Some(body),
    }
}

/// An agent's state as the fleet listing names it: `connected`, `disconnected` (connected,
/// but its session's stream is gone) or `lost`.
pub fn agent_state_name(state: AgentState, session_open: bool) -> &'static str {
    match (state, session_open) {
        (AgentState::Connected, true) => "connected",
        (AgentState::Connected, false) => "disconnected",
        (AgentState::Lost, _) => "lost",
    }
}

impl From<&AgentSummary> for pb::AgentSummary {
    fn from(a: &AgentSummary) -> Self {
        pb::AgentSummary {
            agent_id: a.agent_id.to_string(),
            facts: Some(pb::HostFacts::from(&a.facts)),
            runtimes: a
                .runtimes
                .iter()
                .map(pb::RuntimeAvailability::from)
                .collect(),
            labels: a.labels.clone().into_iter().collect(),
            hardware_class: a.hardware_class.clone(),
            state: agent_state_name(a.state, a.session_open).to_owned(),
            last_seen_unix_ms: a.last_seen_unix_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Welcome;

    #[test]
    fn jobs_and_updates_round_trip() {
        let job = JobRequest {
            job_id: "j1".into(),
            run_id: "r1".into(),
            runtime: "gpumemprof_cpu".into(),
            device: Some(1),
            profile: Profile::Nightly,
            mode: Mode::Soak,
            iterations: 10,
            allocation_kb: 4,
            workload: WorkloadKind::Tensorflow,
            deadline_unix_ms: 123,
            knobs: RuntimeKnobs {
                max_history: Some(7),
                ..RuntimeKnobs::default()
            },
            overhead_scratch_root: Some("/dev/shm/x".into()),
        };
        assert_eq!(JobRequest::try_from(pb::JobSpec::from(&job)).unwrap(), job);
        let mut bad = pb::JobSpec::from(&job);
        bad.profile = 0;
        assert_eq!(JobRequest::try_from(bad).unwrap_err().field, "profile");

        for update in [
            JobUpdate::Started { pid: 9 },
            JobUpdate::Progress {
                phase: "soak".into(),
                done: 1,
                total: 2,
            },
            JobUpdate::Checkpoint {
                sample_index: 4_319,
                rss_bytes: 1 << 20,
            },
            JobUpdate::Report {
                section: Box::new(RuntimeSection::unavailable("no")),
            },
            JobUpdate::Failed {
                phase: "overhead".into(),
                reason: "x".into(),
            },
        ] {
            let wire = job_event_to_pb("j1", 3, &update);
            assert_eq!(wire.sequence, 3);
            assert_eq!(job_update_from_pb(wire).unwrap(), update);
        }
        let mut zero = job_event_to_pb("j1", 0, &JobUpdate::Started { pid: 1 });
        assert_eq!(
            job_update_from_pb(zero.clone()).unwrap_err().field,
            "sequence"
        );
        zero.sequence = 1;
        zero.body = Some(pb::job_event::Body::Report(pb::RuntimeReport {
            section_json: "{".into(),
        }));
        assert_eq!(
            job_update_from_pb(zero).unwrap_err().field,
            "report.section_json"
        );
    }

    fn label_map(n: usize, key_len: usize, value_len: usize) -> HashMap<String, String> {
        (0..n)
            .map(|i| {
                let key = format!("{i:02}{}", "k".repeat(key_len.saturating_sub(2)));
                (key, "v".repeat(value_len))
            })
            .collect()
    }

    fn big_hello() -> pb::Hello {
        pb::Hello {
            agent_id: "a1".into(),
            protocol_version: 1,
            facts: Some(pb::HostFacts {
                hostname: "h".repeat(MAX_FACT_BYTES),
                tensorflow_unavailable_reason: "r".repeat(MAX_REASON_BYTES),
                gpus: vec![
                    pb::GpuFacts {
                        name: "g".repeat(MAX_FACT_BYTES),
                        ..pb::GpuFacts::default()
                    };
                    8
                ],
                ..pb::HostFacts::default()
            }),
            labels: label_map(MAX_LABELS, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES),
            jobs: vec![
                pb::JobResume {
                    job_id: "j".repeat(MAX_ID_BYTES),
                    ..pb::JobResume::default()
                };
                20
            ],
            ..pb::Hello::default()
        }
    }

    #[test]
    fn a_hello_at_every_limit_passes_and_one_over_any_is_refused_naming_it() {
        let hello = big_hello();
        assert_eq!(check_hello(&hello), Ok(()));
        let refused = |f: &dyn Fn(&mut pb::Hello)| {
            let mut h = big_hello();
            f(&mut h);
            check_hello(&h).unwrap_err().to_string()
        };
        assert_eq!(
            refused(&|h| h.labels = label_map(MAX_LABELS + 1, 4, 4)),
            "labels: 33 labels, more than the limit of 32"
        );
        assert_eq!(
            refused(&|h| {
                h.labels
                    .insert(format!("zz\n{}", "x".repeat(70)), "v".into());
                h.labels.remove(&h.labels.keys().min().unwrap().clone());
            }),
            "labels: key \"zz\\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\" is 73 bytes, more than the limit of 64"
        );
        assert_eq!(
            refused(&|h| {
                let first = h.labels.keys().min().unwrap().clone();
                h.labels.insert(first, "v".repeat(257));
            }),
            format!(
                "labels: value of \"00{}…\" is 257 bytes, more than the limit of 256",
                "k".repeat(30)
            )
        );
        assert_eq!(
            refused(&|h| h.facts.as_mut().unwrap().hostname.push('h')),
            "facts.hostname: 257 bytes, more than the limit of 256"
        );
        assert_eq!(
            refused(&|h| {
                let facts = h.facts.as_mut().unwrap();
                facts.gpus = vec![pb::GpuFacts::default(); MAX_GPUS + 1];
            }),
            "facts.gpus: 65 GPUs, more than the limit of 64"
        );
        assert_eq!(
            refused(&|h| h.jobs = vec![pb::JobResume::default(); MAX_RESUME_JOBS + 1]),
            "jobs: 257 jobs, more than the limit of 256"
        );
        assert_eq!(
            refused(&|h| h.runtimes = vec![pb::RuntimeAvailability::default(); MAX_RUNTIMES + 1]),
            "runtimes: 17 runtimes, more than the limit of 16"
        );
        // Every field within its own limit, but too much together.
        let whole = refused(&|h| {
            h.runtimes = vec![
                pb::RuntimeAvailability {
                    runtime: "r".repeat(MAX_FACT_BYTES),
                    available: false,
                    unavailable_reason: "x".repeat(MAX_REASON_BYTES),
                };
                MAX_RUNTIMES
            ];
        });
        assert!(
            whole.starts_with("hello: ") && whole.ends_with(" bytes, more than the limit of 32768"),
            "{whole}"
        );
    }

    #[test]
    fn a_submitted_run_is_bounded_before_anything_is_built_from_it() {
        let ok = pb::SubmitRunRequest {
            iterations: 5_000,
            allocation_kb: 512,
            runtimes: vec!["gpumemprof_cpu".into()],
            ..pb::SubmitRunRequest::default()
        };
        assert_eq!(check_submit_run(&ok), Ok(()));
        let refused = |f: &dyn Fn(&mut pb::SubmitRunRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            check_submit_run(&r).unwrap_err().to_string()
        };
        assert_eq!(
            refused(&|r| r.deadline_ms = u64::MAX),
            "deadline_ms: must be from 1 to 604800000, got 18446744073709551615 (0: the coordinator's default)"
        );
        assert_eq!(
            refused(&|r| r.deadline_ms = 604_800_001),
            "deadline_ms: must be from 1 to 604800000, got 604800001 (0: the coordinator's default)"
        );
        assert_eq!(
            refused(&|r| r.iterations = 0),
            "iterations: must be from 1 to 10000000, got 0"
        );
        assert_eq!(
            refused(&|r| r.allocation_kb = u32::MAX),
            "allocation_kb: must be from 1 to 1048576, got 4294967295"
        );
        assert_eq!(
            refused(&|r| r.overhead_scratch_root = "/".repeat(MAX_PATH_BYTES + 1)),
            "overhead_scratch_root: 4097 bytes, more than the limit of 4096"
        );
        assert_eq!(
            refused(&|r| r.labels = label_map(MAX_LABELS + 1, 2, 2)),
            "labels: 33 labels, more than the limit of 32"
        );
        assert_eq!(
            refused(&|r| r.budgets_json = " ".repeat((4 << 20) + 1)),
            "budgets_json: 4194305 bytes, more than the limit of 4194304"
        );
        let mut max = ok.clone();
        max.deadline_ms = 604_800_000;
        max.iterations = config::MAX_ITERATIONS;
        max.allocation_kb = config::MAX_ALLOCATION_KB;
        assert_eq!(check_submit_run(&max), Ok(()));
    }

    #[test]
    fn a_job_out_of_bounds_is_refused_and_long_agent_text_is_bounded() {
        let job = pb::JobSpec {
            job_id: "j1".into(),
            runtime: "gpumemprof_cpu".into(),
            profile: pb::Profile::Pr as i32,
            mode: pb::Mode::Soak as i32,
            iterations: 1,
            allocation_kb: 1,
            deadline_unix_ms: MAX_DEADLINE_UNIX_MS,
            ..pb::JobSpec::default()
        };
        assert!(JobRequest::try_from(job.clone()).is_ok());
        let field = |f: &dyn Fn(&mut pb::JobSpec)| {
            let mut j = job.clone();
            f(&mut j);
            JobRequest::try_from(j).unwrap_err().to_string()
        };
        assert_eq!(
            field(&|j| j.allocation_kb = u32::MAX),
            "allocation_kb: must be from 1 to 1048576, got 4294967295"
        );
        assert_eq!(
            field(&|j| j.iterations = 0),
            "iterations: must be from 1 to 10000000, got 0"
        );
        assert_eq!(
            field(&|j| j.deadline_unix_ms = u64::MAX),
            "deadline_unix_ms: must be at most 253402300799999 (the end of year 9999), got 18446744073709551615"
        );

        let report = pb::JobEvent {
            job_id: "j1".into(),
            sequence: 2,
            body: Some(pb::job_event::Body::Report(pb::RuntimeReport {
                section_json: " ".repeat(MAX_SECTION_BYTES + 1),
            })),
        };
        assert_eq!(
            job_update_from_pb(report).unwrap_err().to_string(),
            "report.section_json: 1048577 bytes, more than the limit of 1048576"
        );
        let failed = pb::JobEvent {
            job_id: "j1".into(),
            sequence: 2,
            body: Some(pb::job_event::Body::Failed(pb::JobFailed {
                phase: 0,
                reason: "é".repeat(MAX_FAILURE_REASON_BYTES),
            })),
        };
        match job_update_from_pb(failed).unwrap() {
            JobUpdate::Failed { reason, .. } => {
                assert!(reason.len() <= MAX_FAILURE_REASON_BYTES, "{}", reason.len());
                assert!(reason.ends_with('…'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hello_is_checked_for_its_version_then_its_id_then_its_limits() {
        let mut hello = big_hello();
        hello.agent_version = "1.2.3".into();
        hello.hardware_class = String::new();
        let domain = hello_from_pb(hello.clone()).unwrap();
        assert_eq!(domain.agent_id, "a1");
        assert_eq!(domain.hardware_class, None);
        assert_eq!(domain.jobs.len(), 20);
        assert_eq!(domain.labels.len(), MAX_LABELS);
        let mut back = pb::Hello::from(&domain);
        back.labels = hello.labels.clone();
        assert_eq!(back, hello);

        let mut all_wrong = big_hello();
        all_wrong.protocol_version = 9;
        all_wrong.agent_id = "../a".into();
        all_wrong.labels = label_map(MAX_LABELS + 1, 4, 4);
        assert_eq!(
            hello_from_pb(all_wrong.clone()).unwrap_err().to_string(),
            "protocol version 9 is not supported (this coordinator speaks 1)"
        );
        all_wrong.protocol_version = fleetgate_proto::PROTOCOL_VERSION;
        assert_eq!(
            hello_from_pb(all_wrong.clone()).unwrap_err(),
            HelloError::AgentId
        );
        all_wrong.agent_id = "a1".into();
        assert_eq!(
            hello_from_pb(all_wrong).unwrap_err().to_string(),
            "labels: 33 labels, more than the limit of 32"
        );
    }

    #[test]
    fn session_messages_convert_both_ways() {
        use pb::agent_message::Body;
        let heartbeat = pb::AgentMessage {
            body: Some(Body::Heartbeat(pb::Heartbeat {
                sent_unix_ms: 5,
                running_job_ids: vec!["j1".into()],
            })),
        };
        assert_eq!(
            from_agent_pb(heartbeat),
            FromAgent::Heartbeat(Heartbeat {
                sent_unix_ms: 5,
                running_job_ids: vec![JobId::new("j1")],
            })
        );
        assert_eq!(
            from_agent_pb(pb::AgentMessage { body: None }),
            FromAgent::Unexpected
        );
        let progress = JobUpdate::Progress {
            phase: JobPhase::RetentionValidation,
            done: 1,
            total: 2,
        };
        let event = pb::AgentMessage {
            body: Some(Body::JobEvent(job_event_to_pb("j1", 4, &progress))),
        };
        assert_eq!(
            from_agent_pb(event),
            FromAgent::JobEvent(JobEvent {
                job_id: JobId::new("j1"),
                sequence: 4,
                update: Ok(progress),
            })
        );
        let unusable = pb::JobEvent {
            job_id: "j2".into(),
            sequence: 1,
            body: None,
        };
        assert_eq!(
            job_event_from_pb(unusable).update.unwrap_err().to_string(),
            "body: missing"
        );

        use pb::coordinator_message::Body as Down;
        let welcome = pb::CoordinatorMessage::from(ToAgent::Welcome(Welcome {
            heartbeat_interval: std::time::Duration::from_secs(2),
            acked_through: [(JobId::new("j1"), 3)].into(),
            unknown_job_ids: vec![JobId::new("j9")],
        }));
        assert_eq!(
            welcome.body,
            Some(Down::Welcome(pb::Welcome {
                heartbeat_interval_ms: 2_000,
                acked_through: [("j1".to_owned(), 3)].into(),
                unknown_job_ids: vec!["j9".into()],
            }))
        );
        assert_eq!(
            pb::CoordinatorMessage::from(ToAgent::Ack {
                job_id: JobId::new("j1"),
                sequence: 2
            })
            .body,
            Some(Down::Ack(pb::Ack {
                job_id: "j1".into(),
                sequence: 2
            }))
        );
        assert_eq!(
            pb::CoordinatorMessage::from(ToAgent::Cancel {
                job_id: JobId::new("j1"),
                reason: "why".into()
            })
            .body,
            Some(Down::CancelJob(pb::CancelJob {
                job_id: "j1".into(),
                reason: "why".into()
            }))
        );
    }

    #[test]
    fn run_events_and_listed_agents_keep_their_wire_names() {
        let run_id = RunId::new("run-1-1");
        let progress = run_event_to_pb(
            &run_id,
            RunEvent::Progress {
                agent_id: AgentId::new("a1"),
                runtime: "gpumemprof_cuda@1".into(),
                phase: JobPhase::RetentionValidation,
                done: 3,
                total: 9,
            },
        );
        assert_eq!(progress.run_id, "run-1-1");
        assert_eq!(
            progress.body,
            Some(pb::run_event::Body::Progress(pb::AgentProgress {
                agent_id: "a1".into(),
                runtime: "gpumemprof_cuda@1".into(),
                phase: "retention_validation".into(),
                done: 3,
                total: 9,
            }))
        );
        for (state, open, name) in [
            (AgentState::Connected, true, "connected"),
            (AgentState::Connected, false, "disconnected"),
            (AgentState::Lost, false, "lost"),
            (AgentState::Lost, true, "lost"),
        ] {
            assert_eq!(agent_state_name(state, open), name);
        }
        for phase in [
            JobPhase::Starting,
            JobPhase::Overhead,
            JobPhase::Soak,
            JobPhase::RetentionValidation,
            JobPhase::Unknown,
        ] {
            assert_eq!(phase_from_pb(phase_to_pb(phase)), phase);
        }
    }

    #[test]
    fn facts_round_trip() {
        let facts = HostFacts {
            hostname: "h".into(),
            cpu_cores: 2,
            gpu_unavailable_reason: Some("none".into()),
            ..HostFacts::default()
        };
        assert_eq!(HostFacts::from(pb::HostFacts::from(&facts)), facts);
    }
}
