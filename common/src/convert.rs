//! Conversions between wire types (`fleetgate_proto::v1`) and domain types. Wire types stay at
//! the edge: everything that arrives is validated here, and an unusable message is a
//! [`ConvertError`] naming the field.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fleetgate_proto::v1 as pb;
use prost::Message as _;

use crate::config::{self, GateMode, Mode, Profile, Workload, WorkloadKind};
use crate::gate::AssetSource;
use crate::host::{GpuFacts, HostFacts, RuntimeAvailability};
use crate::ids::{AgentId, JobId, RunId};
use crate::job::{JobAssignment, JobPhase, JobSpec, JobUpdate};
use crate::knobs::{Knobs, RuntimeKnobs};
use crate::messages::{
    AgentHello, AgentState, AgentSummary, FromAgent, Heartbeat, JobEvent, JobResume, RunEvent,
    ToAgent,
};
use crate::report::RuntimeSection;
use crate::run::{Asset, Quorum, RunSpec, Selection};
use crate::runtime::RuntimeKind;

pub use crate::messages::ConvertError;

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
pub const MAX_ID_BYTES: usize = crate::ids::MAX_SAFE_ID_BYTES;
/// Longest path (gate asset names, the overhead scratch root), in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most agent ids a run may select by name.
pub const MAX_SELECTED_AGENTS: usize = 10_000;
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

/// `bytes` compressed with raw DEFLATE, at the fastest level (a section shrinks about 4x).
fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .unwrap_or_default()
}

/// The raw DEFLATE stream `bytes` inflated, refused when it is not one or when it inflates to
/// more than `max` bytes (read no further than one byte past the limit).
fn inflate(field: &'static str, bytes: &[u8], max: usize) -> Result<Vec<u8>, ConvertError> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(5).min(max));
    flate2::read::DeflateDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(field, format!("not a DEFLATE stream: {e}")))?;
    if out.len() > max {
        return Err(err(
            field,
            format!("inflates to more than the limit of {max} bytes"),
        ));
    }
    Ok(out)
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
    at_most_items("knobs", r.knobs.len(), MAX_RUNTIMES, "runtimes")?;
    for runtime in r.knobs.keys() {
        at_most_bytes("knobs", runtime, MAX_FACT_BYTES)?;
    }
    quorum_from_pb(r.quorum)?;
    Ok(())
}

/// The quorum of a request: absent is [`Quorum::ALL`] (a client that predates the field asks
/// every agent to pass); a value outside (0, 1], or NaN, is refused.
fn quorum_from_pb(quorum: Option<f64>) -> Result<Quorum, ConvertError> {
    quorum.map_or(Ok(Quorum::ALL), |q| {
        Quorum::new(q).map_err(|e| err("quorum", e.to_string()))
    })
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

/// Wire value of a workload kind.
pub fn workload_kind_to_pb(k: WorkloadKind) -> i32 {
    match k {
        WorkloadKind::Reference => pb::WorkloadKind::Reference as i32,
        WorkloadKind::Tensorflow => pb::WorkloadKind::Tensorflow as i32,
    }
}

/// Workload kind from its wire value.
pub fn workload_kind_from_pb(v: i32) -> Result<WorkloadKind, ConvertError> {
    match pb::WorkloadKind::try_from(v) {
        Ok(pb::WorkloadKind::Reference) => Ok(WorkloadKind::Reference),
        Ok(pb::WorkloadKind::Tensorflow) => Ok(WorkloadKind::Tensorflow),
        _ => Err(err(
            "workload_spec.kind",
            format!("must be reference or tensorflow, got {v}"),
        )),
    }
}

impl From<&Workload> for pb::Workload {
    fn from(w: &Workload) -> Self {
        pb::Workload {
            profile: profile_to_pb(w.profile),
            mode: mode_to_pb(w.mode),
            iterations: w.iterations,
            allocation_kb: w.allocation_kb,
            kind: workload_kind_to_pb(w.kind),
        }
    }
}

/// The workload of a job or run, which every protocol-2 peer sends; its absence means a
/// peer of protocol 1.
fn workload_from_pb(w: Option<pb::Workload>) -> Result<Workload, ConvertError> {
    let w = w.ok_or_else(|| {
        err(
            "workload_spec",
            format!(
                "missing: the sender speaks an older protocol than this build's {} (upgrade it)",
                fleetgate_proto::PROTOCOL_VERSION
            ),
        )
    })?;
    let workload = Workload {
        profile: profile_from_pb(w.profile)?,
        mode: mode_from_pb(w.mode)?,
        iterations: w.iterations,
        allocation_kb: w.allocation_kb,
        kind: workload_kind_from_pb(w.kind)?,
    };
    workload
        .check()
        .map_err(|e| err(e.field, e.range.to_string()))?;
    Ok(workload)
}

impl From<&RuntimeKnobs> for pb::RuntimeKnobs {
    fn from(k: &RuntimeKnobs) -> Self {
        pb::RuntimeKnobs {
            sampling_interval_seconds: k.sampling_interval_seconds,
            flush_every_events: k.flush_every_events,
            flush_every_seconds: k.flush_every_seconds,
            rollover_max_bytes: k.rollover_max_bytes,
            rollover_max_events: k.rollover_max_events,
            retention_max_files: k.retention_max_files,
            retention_max_total_bytes: k.retention_max_total_bytes,
            max_history: k.max_history,
            overhead_min_pairs: k.overhead_min_pairs,
            overhead_max_seconds: k.overhead_max_seconds,
        }
    }
}

/// One runtime's knobs from the wire, checked by the knob table's rules; the error names
/// `<runtime>.<knob>`.
fn knobs_from_pb(runtime: &str, k: pb::RuntimeKnobs) -> Result<RuntimeKnobs, ConvertError> {
    let knobs = RuntimeKnobs {
        sampling_interval_seconds: k.sampling_interval_seconds,
        flush_every_events: k.flush_every_events,
        flush_every_seconds: k.flush_every_seconds,
        rollover_max_bytes: k.rollover_max_bytes,
        rollover_max_events: k.rollover_max_events,
        retention_max_files: k.retention_max_files,
        retention_max_total_bytes: k.retention_max_total_bytes,
        max_history: k.max_history,
        overhead_min_pairs: k.overhead_min_pairs,
        overhead_max_seconds: k.overhead_max_seconds,
    };
    knobs
        .check()
        .map_err(|e| err("knobs", format!("{}.{e}", crate::input::one_line(runtime))))?;
    Ok(knobs)
}

impl From<&JobAssignment> for pb::JobSpec {
    fn from(j: &JobAssignment) -> Self {
        pb::JobSpec {
            job_id: j.job_id.clone(),
            run_id: j.run_id.clone(),
            runtime: j.spec.runtime.name().to_owned(),
            deadline_unix_ms: j.deadline_unix_ms,
            overhead_scratch_root: j
                .spec
                .scratch_root
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            device_index: j.spec.device,
            workload_spec: Some(pb::Workload::from(&j.spec.workload)),
            knobs: (!j.spec.knobs.is_empty()).then(|| pb::RuntimeKnobs::from(&j.spec.knobs)),
        }
    }
}

impl TryFrom<pb::JobSpec> for JobAssignment {
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
        let runtime = RuntimeKind::parse(&j.runtime).map_err(|e| err("runtime", e.to_string()))?;
        let workload = workload_from_pb(j.workload_spec)?;
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
        let knobs = match j.knobs {
            Some(k) => knobs_from_pb(&j.runtime, k)?,
            None => RuntimeKnobs::default(),
        };
        Ok(JobAssignment {
            job_id: j.job_id,
            run_id: j.run_id,
            deadline_unix_ms: j.deadline_unix_ms,
            spec: JobSpec {
                runtime,
                device: j.device_index,
                workload,
                knobs,
                scratch_root: non_empty(j.overhead_scratch_root).map(PathBuf::from),
            },
        })
    }
}

/// A file's document and path; nothing for a built-in asset, which the coordinator supplies
/// from its own copy.
fn asset_to_pb(asset: Option<&Asset>) -> (String, String) {
    let file = asset.filter(|a| a.source == AssetSource::Path);
    file.map_or_else(Default::default, |a| {
        (
            String::from_utf8_lossy(&a.bytes).into_owned(),
            a.name.clone(),
        )
    })
}

fn asset_from_pb(json: String, path: String, default_name: &str) -> Option<Asset> {
    (!json.is_empty()).then(|| Asset {
        name: if path.is_empty() {
            default_name.to_owned()
        } else {
            path
        },
        bytes: json.into_bytes(),
        source: AssetSource::Path,
    })
}

impl From<&RunSpec> for pb::SubmitRunRequest {
    fn from(s: &RunSpec) -> Self {
        let (budgets_json, budgets_path) = asset_to_pb(s.budgets.as_ref());
        let (baseline_json, baseline_path) = asset_to_pb(s.baseline.as_ref());
        let (tolerances_json, tolerances_path) = asset_to_pb(s.tolerances.as_ref());
        pb::SubmitRunRequest {
            gate_mode: gate_mode_to_pb(s.gate_mode),
            runtimes: s.runtimes.clone(),
            agent_ids: s.selection.agent_ids.clone(),
            labels: s.selection.labels.clone().into_iter().collect(),
            hardware_class: s.selection.hardware_class.clone().unwrap_or_default(),
            min_agents: s.selection.min_agents,
            quorum: (s.selection.quorum != Quorum::ALL).then(|| s.selection.quorum.fraction()),
            deadline_ms: s
                .deadline
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            budgets_json,
            baseline_json,
            tolerances_json,
            overhead_scratch_root: s.overhead_scratch_root.clone().unwrap_or_default(),
            budgets_path,
            baseline_path,
            tolerances_path,
            workload_spec: Some(pb::Workload::from(&s.workload)),
            knobs: s
                .knobs
                .iter()
                .map(|(runtime, k)| (runtime.clone(), pb::RuntimeKnobs::from(k)))
                .collect(),
            // How the client takes the report, not part of the run: a client that
            // reassembles chunks sets it (`fleetgate_coordinator::client::submit`).
            report_chunks: false,
            report_lz4: false,
        }
    }
}

impl TryFrom<pb::SubmitRunRequest> for RunSpec {
    type Error = ConvertError;

    /// Checks the request's sizes ([`check_submit_run`]) and builds the run; the gate assets
    /// are parsed later, by the plan.
    fn try_from(r: pb::SubmitRunRequest) -> Result<Self, ConvertError> {
        check_submit_run(&r)?;
        let workload = workload_from_pb(r.workload_spec)?;
        let mut knobs = Knobs::new();
        for (runtime, k) in r.knobs {
            let k = knobs_from_pb(&runtime, k)?;
            if !k.is_empty() {
                knobs.insert(runtime, k);
            }
        }
        Ok(RunSpec {
            workload,
            gate_mode: gate_mode_from_pb(r.gate_mode)?,
            runtimes: r.runtimes,
            selection: Selection {
                agent_ids: r.agent_ids,
                labels: r.labels.into_iter().collect(),
                hardware_class: non_empty(r.hardware_class),
                min_agents: r.min_agents,
                quorum: quorum_from_pb(r.quorum)?,
            },
            deadline: (r.deadline_ms > 0).then(|| Duration::from_millis(r.deadline_ms)),
            knobs,
            overhead_scratch_root: non_empty(r.overhead_scratch_root),
            budgets: asset_from_pb(r.budgets_json, r.budgets_path, "budgets"),
            baseline: asset_from_pb(r.baseline_json, r.baseline_path, "baseline"),
            tolerances: asset_from_pb(r.tolerances_json, r.tolerances_path, "tolerances"),
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
            section_json_deflate: Vec::new(),
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

/// Compresses the section of a report event (see `RuntimeReport` in `agent.proto`), for a
/// coordinator whose `Welcome` says it reads compressed sections. Other events are left as
/// they are.
pub fn compress_section(event: &mut pb::JobEvent) {
    if let Some(pb::job_event::Body::Report(report)) = &mut event.body
        && !report.section_json.is_empty()
    {
        report.section_json_deflate = deflate(std::mem::take(&mut report.section_json).as_bytes());
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
            let (field, json) = if r.section_json_deflate.is_empty() {
                ("report.section_json", r.section_json.into_bytes())
            } else if r.section_json.is_empty() {
                let field = "report.section_json_deflate";
                (
                    field,
                    inflate(field, &r.section_json_deflate, MAX_SECTION_BYTES)?,
                )
            } else {
                return Err(err(
                    "report",
                    "both section_json and section_json_deflate are set",
                ));
            };
            // From the network: the same defensive reading as an operator's file, straight
            // into the section's type (at 10,000 agents ending together, parsing through a
            // `Value` first was the coordinator's largest cost).
            let section: RuntimeSection =
                crate::input::parse_json_as(&json).map_err(|e| err(field, e.to_string()))?;
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
                // This build reads `section_json_deflate`.
                compressed_sections: true,
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

/// The wire event of run `run_id`; a report goes whole as `report_json` (an error when its
/// compressed JSON cannot be read back).
pub fn run_event_to_pb(run_id: &RunId, event: RunEvent) -> std::io::Result<pb::RunEvent> {
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
        RunEvent::Report(report) => Body::ReportJson(report.json()?),
    };
    Ok(pb::RunEvent {
        run_id: run_id.to_string(),
        body: Some(body),
    })
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
        let job = JobAssignment {
            job_id: "j1".into(),
            run_id: "r1".into(),
            deadline_unix_ms: 123,
            spec: JobSpec {
                runtime: RuntimeKind::GpumemprofCpu,
                device: Some(1),
                workload: Workload {
                    profile: Profile::Nightly,
                    mode: Mode::Soak,
                    iterations: 10,
                    allocation_kb: 4,
                    kind: WorkloadKind::Tensorflow,
                },
                knobs: RuntimeKnobs {
                    max_history: Some(7),
                    sampling_interval_seconds: Some(0.25),
                    ..RuntimeKnobs::default()
                },
                scratch_root: Some("/dev/shm/x".into()),
            },
        };
        assert_eq!(
            JobAssignment::try_from(pb::JobSpec::from(&job)).unwrap(),
            job
        );
        let mut bad = pb::JobSpec::from(&job);
        bad.workload_spec.as_mut().unwrap().profile = 0;
        assert_eq!(JobAssignment::try_from(bad).unwrap_err().field, "profile");
        let mut old = pb::JobSpec::from(&job);
        old.workload_spec = None;
        assert_eq!(
            JobAssignment::try_from(old).unwrap_err().to_string(),
            "workload_spec: missing: the sender speaks an older protocol than this build's 2 (upgrade it)"
        );
        let mut bad = pb::JobSpec::from(&job);
        bad.knobs.as_mut().unwrap().max_history = Some(0);
        assert_eq!(
            JobAssignment::try_from(bad).unwrap_err().to_string(),
            "knobs: gpumemprof_cpu.max_history: must be an integer >= 1, got 0"
        );
        let mut bad = pb::JobSpec::from(&job);
        bad.runtime = "nope".into();
        assert_eq!(JobAssignment::try_from(bad).unwrap_err().field, "runtime");

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
            let mut wire = job_event_to_pb("j1", 3, &update);
            assert_eq!(wire.sequence, 3);
            assert_eq!(job_update_from_pb(wire.clone()).unwrap(), update);
            // Compressed for a coordinator that reads it: the same update.
            let plain = wire.clone();
            compress_section(&mut wire);
            if let Some(pb::job_event::Body::Report(r)) = &wire.body {
                assert!(r.section_json.is_empty() && !r.section_json_deflate.is_empty());
            } else {
                assert_eq!(wire, plain);
            }
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
            section_json_deflate: Vec::new(),
        }));
        assert_eq!(
            job_update_from_pb(zero.clone()).unwrap_err().field,
            "report.section_json"
        );
        // Read straight into the section's type, still under the input rules.
        for (json, why) in [
            (
                r#"{"status": "unavailable", "reason": "a", "reason": "b"}"#,
                "duplicate field `reason`",
            ),
            (
                r#"{"status": "unavailable", "default_interval": NaN}"#,
                "NaN",
            ),
        ] {
            zero.body = Some(pb::job_event::Body::Report(pb::RuntimeReport {
                section_json: json.into(),
                section_json_deflate: Vec::new(),
            }));
            let e = job_update_from_pb(zero.clone()).unwrap_err();
            assert_eq!(e.field, "report.section_json");
            assert!(e.message.contains(why), "{e}");
        }
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
            protocol_version: fleetgate_proto::PROTOCOL_VERSION,
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
            gate_mode: pb::GateMode::Budget as i32,
            runtimes: vec!["gpumemprof_cpu".into()],
            workload_spec: Some(pb::Workload {
                profile: pb::Profile::Pr as i32,
                mode: pb::Mode::All as i32,
                iterations: 5_000,
                allocation_kb: 512,
                kind: pb::WorkloadKind::Reference as i32,
            }),
            ..pb::SubmitRunRequest::default()
        };
        assert_eq!(check_submit_run(&ok), Ok(()));
        assert!(RunSpec::try_from(ok.clone()).is_ok());
        let refused = |f: &dyn Fn(&mut pb::SubmitRunRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            RunSpec::try_from(r).unwrap_err().to_string()
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
            refused(&|r| r.workload_spec.as_mut().unwrap().iterations = 0),
            "iterations: must be from 1 to 10000000, got 0"
        );
        assert_eq!(
            refused(&|r| r.workload_spec.as_mut().unwrap().allocation_kb = u32::MAX),
            "allocation_kb: must be from 1 to 1048576, got 4294967295"
        );
        assert_eq!(
            refused(&|r| r.workload_spec = None),
            "workload_spec: missing: the sender speaks an older protocol than this build's 2 (upgrade it)"
        );
        assert_eq!(
            refused(&|r| {
                r.knobs.insert(
                    "gpumemprof_cpu".into(),
                    pb::RuntimeKnobs {
                        overhead_min_pairs: Some(2),
                        ..pb::RuntimeKnobs::default()
                    },
                );
            }),
            "knobs: gpumemprof_cpu.overhead_min_pairs: must be an integer from 6 to 200, got 2"
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
        assert_eq!(
            refused(&|r| r.quorum = Some(0.0)),
            "quorum: must be a fraction greater than 0 and at most 1 (1: every agent of a class), got 0"
        );
        assert_eq!(
            refused(&|r| r.quorum = Some(1.5)),
            "quorum: must be a fraction greater than 0 and at most 1 (1: every agent of a class), got 1.5"
        );
        assert_eq!(
            refused(&|r| r.quorum = Some(f64::NAN)),
            "quorum: must be a fraction greater than 0 and at most 1 (1: every agent of a class), got NaN"
        );
        assert_eq!(
            check_submit_run(&pb::SubmitRunRequest {
                quorum: Some(-1.0),
                ..ok.clone()
            })
            .unwrap_err()
            .field,
            "quorum"
        );
        // Absent (an older client): every agent must pass. A quorum travels both ways.
        assert_eq!(
            RunSpec::try_from(ok.clone()).unwrap().selection.quorum,
            Quorum::ALL
        );
        let mut ninety = RunSpec::try_from(ok.clone()).unwrap();
        ninety.selection.quorum = Quorum::new(0.9).unwrap();
        let wire = pb::SubmitRunRequest::from(&ninety);
        assert_eq!(wire.quorum, Some(0.9));
        assert_eq!(RunSpec::try_from(wire).unwrap(), ninety);
        assert_eq!(
            pb::SubmitRunRequest::from(&RunSpec::try_from(ok.clone()).unwrap()).quorum,
            None
        );
        let mut max = ok.clone();
        max.deadline_ms = 604_800_000;
        let w = max.workload_spec.as_mut().unwrap();
        w.iterations = config::MAX_ITERATIONS;
        w.allocation_kb = config::MAX_ALLOCATION_KB;
        assert!(RunSpec::try_from(max).is_ok());
    }

    #[test]
    fn a_job_out_of_bounds_is_refused_and_long_agent_text_is_bounded() {
        let job = pb::JobSpec {
            job_id: "j1".into(),
            runtime: "gpumemprof_cpu".into(),
            workload_spec: Some(pb::Workload {
                profile: pb::Profile::Pr as i32,
                mode: pb::Mode::Soak as i32,
                iterations: 1,
                allocation_kb: 1,
                kind: pb::WorkloadKind::Reference as i32,
            }),
            deadline_unix_ms: MAX_DEADLINE_UNIX_MS,
            ..pb::JobSpec::default()
        };
        assert!(JobAssignment::try_from(job.clone()).is_ok());
        let field = |f: &dyn Fn(&mut pb::JobSpec)| {
            let mut j = job.clone();
            f(&mut j);
            JobAssignment::try_from(j).unwrap_err().to_string()
        };
        assert_eq!(
            field(&|j| j.workload_spec.as_mut().unwrap().allocation_kb = u32::MAX),
            "allocation_kb: must be from 1 to 1048576, got 4294967295"
        );
        assert_eq!(
            field(&|j| j.workload_spec.as_mut().unwrap().iterations = 0),
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
                section_json_deflate: Vec::new(),
            })),
        };
        assert_eq!(
            job_update_from_pb(report).unwrap_err().to_string(),
            "report.section_json: 1048577 bytes, more than the limit of 1048576"
        );
        // Compressed: a stream that inflates past the limit is refused without inflating it
        // all (a 1 KiB bomb of a few GiB would otherwise be held), as are broken streams and
        // a section sent both ways.
        let deflated = |section_json: &str, deflated: Vec<u8>| pb::JobEvent {
            job_id: "j1".into(),
            sequence: 2,
            body: Some(pb::job_event::Body::Report(pb::RuntimeReport {
                section_json: section_json.into(),
                section_json_deflate: deflated,
            })),
        };
        let bomb = deflate(&vec![b' '; MAX_SECTION_BYTES + 1]);
        assert!(bomb.len() < 8 << 10, "{} bytes", bomb.len());
        assert_eq!(
            job_update_from_pb(deflated("", bomb))
                .unwrap_err()
                .to_string(),
            "report.section_json_deflate: inflates to more than the limit of 1048576 bytes"
        );
        let e = job_update_from_pb(deflated("", vec![0xff; 16])).unwrap_err();
        assert_eq!(e.field, "report.section_json_deflate");
        assert!(e.message.starts_with("not a DEFLATE stream"), "{e}");
        let e = job_update_from_pb(deflated("{}", deflate(b"{}"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "report: both section_json and section_json_deflate are set"
        );
        let e = job_update_from_pb(deflated("", deflate(b"{\"status\": 1}"))).unwrap_err();
        assert_eq!(e.field, "report.section_json_deflate");
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
            "protocol version 9 is not supported (this coordinator speaks 2)"
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
                compressed_sections: true,
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
        )
        .unwrap();
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
