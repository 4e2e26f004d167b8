//! Conversions between wire types (`fleetgate_proto::v1`) and domain types. Wire types stay at
//! the edge: everything that arrives is validated here, and an unusable message is a
//! [`ConvertError`] naming the field.

use fleetgate_proto::v1 as pb;

use crate::config::{GateMode, Mode, Profile, RuntimeKnobs, WorkloadKind};
use crate::fleet::{GpuFacts, HostFacts, JobUpdate, RuntimeAvailability};
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
        if j.runtime.is_empty() {
            return Err(err("runtime", "must not be empty"));
        }
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

fn phase_to_pb(phase: &str) -> i32 {
    (match phase {
        "starting" => pb::JobPhase::Starting,
        "overhead" => pb::JobPhase::Overhead,
        "soak" => pb::JobPhase::Soak,
        "retention_validation" => pb::JobPhase::RetentionValidation,
        _ => pb::JobPhase::Unspecified,
    }) as i32
}

fn phase_from_pb(v: i32) -> &'static str {
    match pb::JobPhase::try_from(v) {
        Ok(pb::JobPhase::Starting) => "starting",
        Ok(pb::JobPhase::Overhead) => "overhead",
        Ok(pb::JobPhase::Soak) => "soak",
        Ok(pb::JobPhase::RetentionValidation) => "retention_validation",
        _ => "unknown",
    }
}

/// The wire event for update `update` of job `job_id`, numbered `sequence`.
pub fn job_event_to_pb(job_id: &str, sequence: u64, update: &JobUpdate) -> pb::JobEvent {
    use pb::job_event::Body;
    let body = match update {
        JobUpdate::Started { pid } => Body::Started(pb::JobStarted { worker_pid: *pid }),
        JobUpdate::Progress { phase, done, total } => Body::Progress(pb::JobProgress {
            phase: phase_to_pb(phase),
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
            phase: phase_to_pb(phase),
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
            phase: phase_from_pb(p.phase).to_owned(),
            done: p.done,
            total: p.total,
        },
        Body::Checkpoint(c) => JobUpdate::Checkpoint {
            sample_index: c.sample_index,
            rss_bytes: c.rss_bytes,
        },
        Body::Report(r) => {
            // From the network: the same defensive reading as an operator's file.
            let section: RuntimeSection = crate::input::parse_json(r.section_json.as_bytes())
                .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
                .map_err(|e| err("report.section_json", e))?;
            JobUpdate::Report {
                section: Box::new(section),
            }
        }
        Body::Failed(f) => JobUpdate::Failed {
            phase: phase_from_pb(f.phase).to_owned(),
            reason: f.reason,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
