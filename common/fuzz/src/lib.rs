//! Checks shared by the fuzz targets in `fuzz_targets/`.

use serde_json::Value;

/// The runtime names the `fleetgate` binary gives the knobs parser.
pub const KNOWN_RUNTIMES: [&str; 4] = [
    "gpumemprof_cpu",
    "gpumemprof_cuda",
    "tfmemprof_cpu",
    "tfmemprof_gpu",
];

/// Panics unless `message`, a refusal from `parser`, is one non-empty line: refusals are
/// printed as one line on stderr and in the report, so a line break in one (from a key or a
/// value of the input) would let a hostile file forge output lines.
pub fn assert_one_line(parser: &str, message: &str) {
    assert!(!message.is_empty(), "{parser}: empty refusal");
    assert!(
        !message.contains(['\n', '\r']),
        "{parser}: refusal spans more than one line: {message:?}"
    );
}

/// Nesting depth as the defensive reader counts it: a scalar is 0, `[]` and `{}` are 1.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether every number in `value` is a finite `f64`.
pub fn numbers_are_finite(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Array(items) => items.iter().all(numbers_are_finite),
        Value::Object(map) => map.values().all(numbers_are_finite),
        _ => true,
    }
}

/// The agent messages of `seeds/agent_message/`: one of each kind an agent sends, built with
/// the same conversions the agent uses. `cargo test --manifest-path common/fuzz/Cargo.toml`
/// checks the committed files against them; with `FLEETGATE_WRITE_SEEDS=1` it rewrites them.
#[cfg(test)]
mod seeds {
    use std::time::Duration;

    use fleetgate_common::config::{
        GateMode, MAX_ALLOCATION_KB, MAX_DEADLINE_SECONDS, MAX_ITERATIONS, Mode, Profile, Workload,
        WorkloadKind,
    };
    use fleetgate_common::convert::{self, job_event_to_pb};
    use fleetgate_common::gate::AssetSource;
    use fleetgate_common::job::{JobAssignment, JobSpec, JobUpdate};
    use fleetgate_common::knobs::{
        Knobs, MAX_SECONDS_KNOB, OVERHEAD_MAX_PAIRS, OVERHEAD_MIN_PAIRS_FLOOR, RuntimeKnobs,
    };
    use fleetgate_common::report::RuntimeSection;
    use fleetgate_common::run::{Asset, RunSpec, Selection};
    use fleetgate_common::runtime::RuntimeKind;
    use fleetgate_proto::PROTOCOL_VERSION;
    use fleetgate_proto::v1 as pb;
    use prost::Message;

    const SECTION_OK: &str = include_str!("../seeds/json_input/section_ok.json");

    fn message(body: pb::agent_message::Body) -> Vec<u8> {
        pb::AgentMessage { body: Some(body) }.encode_to_vec()
    }

    fn event(sequence: u64, update: &JobUpdate) -> Vec<u8> {
        message(pb::agent_message::Body::JobEvent(job_event_to_pb(
            "run-7-gpumemprof_cpu-agent-a",
            sequence,
            update,
        )))
    }

    fn runtime(name: &str, reason: Option<&str>) -> pb::RuntimeAvailability {
        pb::RuntimeAvailability {
            runtime: name.into(),
            available: reason.is_none(),
            unavailable_reason: reason.unwrap_or_default().into(),
        }
    }

    fn agent_messages() -> Vec<(&'static str, Vec<u8>)> {
        let section: RuntimeSection = serde_json::from_str(SECTION_OK).expect("section_ok.json");
        let cpu_hello = pb::Hello {
            agent_id: "agent-a".into(),
            agent_version: "0.1.0".into(),
            protocol_version: PROTOCOL_VERSION,
            facts: Some(pb::HostFacts {
                hostname: "build-17".into(),
                os: "Ubuntu 24.04".into(),
                kernel: "6.8.0-45-generic".into(),
                cpu_model: "AMD EPYC 7763 64-Core Processor".into(),
                cpu_cores: 16,
                memory_total_bytes: 64 << 30,
                gpus: Vec::new(),
                gpu_unavailable_reason: "NVML not found".into(),
                tensorflow_available: true,
                tensorflow_unavailable_reason: String::new(),
            }),
            runtimes: vec![
                runtime("gpumemprof_cpu", None),
                runtime("gpumemprof_cuda", Some("NVML not found")),
                runtime("tfmemprof_cpu", None),
                runtime("tfmemprof_gpu", Some("no GPU")),
            ],
            labels: [("zone".to_owned(), "east".to_owned())].into(),
            hardware_class: String::new(),
            jobs: vec![pb::JobResume {
                job_id: "run-6-gpumemprof_cpu-agent-a".into(),
                last_sequence: 12,
                running: false,
            }],
        };
        let gpu = |index: u32| pb::GpuFacts {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-0000000{index}-1111-2222-3333-444444444444"),
            pci_bus_id: format!("00000000:0{index}:00.0"),
            memory_total_bytes: 81_559_379_968,
            driver_version: "550.90.07".into(),
            cuda_driver_version: "12.4".into(),
        };
        let gpu_hello = pb::Hello {
            agent_id: "gpu-host-3".into(),
            agent_version: "0.1.0".into(),
            protocol_version: PROTOCOL_VERSION,
            facts: Some(pb::HostFacts {
                hostname: "gpu-host-3".into(),
                os: "Ubuntu 22.04".into(),
                kernel: "5.15.0".into(),
                cpu_model: "Intel(R) Xeon(R) Platinum 8480+".into(),
                cpu_cores: 224,
                memory_total_bytes: 2 << 40,
                gpus: vec![gpu(0), gpu(1)],
                gpu_unavailable_reason: String::new(),
                tensorflow_available: false,
                tensorflow_unavailable_reason: "libtensorflow not found".into(),
            }),
            runtimes: vec![runtime("gpumemprof_cuda", None)],
            labels: Default::default(),
            hardware_class: "nvidia-h100-80gb-x2".into(),
            jobs: Vec::new(),
        };
        let fact = "f".repeat(convert::MAX_FACT_BYTES);
        let limits_hello = pb::Hello {
            agent_id: "a".repeat(convert::MAX_ID_BYTES),
            agent_version: fact.clone(),
            protocol_version: PROTOCOL_VERSION,
            facts: Some(pb::HostFacts {
                hostname: fact.clone(),
                cpu_model: fact.clone(),
                gpu_unavailable_reason: "r".repeat(convert::MAX_REASON_BYTES),
                ..pb::HostFacts::default()
            }),
            // One label: a map of several would encode in a different order on every run.
            labels: [(
                "k".repeat(convert::MAX_LABEL_KEY_BYTES),
                "v".repeat(convert::MAX_LABEL_VALUE_BYTES),
            )]
            .into(),
            hardware_class: fact,
            ..pb::Hello::default()
        };
        vec![
            (
                "hello_limits.bin",
                message(pb::agent_message::Body::Hello(limits_hello)),
            ),
            (
                "hello_cpu.bin",
                message(pb::agent_message::Body::Hello(cpu_hello)),
            ),
            (
                "hello_gpu.bin",
                message(pb::agent_message::Body::Hello(gpu_hello)),
            ),
            (
                "heartbeat.bin",
                message(pb::agent_message::Body::Heartbeat(pb::Heartbeat {
                    sent_unix_ms: 1_767_225_600_000,
                    running_job_ids: vec!["run-7-gpumemprof_cpu-agent-a".into()],
                })),
            ),
            (
                "event_started.bin",
                event(1, &JobUpdate::Started { pid: 4242 }),
            ),
            (
                "event_progress.bin",
                event(
                    2,
                    &JobUpdate::Progress {
                        phase: "soak".into(),
                        done: 1_000,
                        total: 216_000,
                    },
                ),
            ),
            (
                "event_checkpoint.bin",
                event(
                    3,
                    &JobUpdate::Checkpoint {
                        sample_index: 4_319,
                        rss_bytes: 12_582_912,
                    },
                ),
            ),
            (
                "event_report.bin",
                event(
                    4,
                    &JobUpdate::Report {
                        section: Box::new(section.clone()),
                    },
                ),
            ),
            ("event_report_deflate.bin", {
                let mut report = job_event_to_pb(
                    "run-7-gpumemprof_cpu-agent-a",
                    4,
                    &JobUpdate::Report {
                        section: Box::new(section),
                    },
                );
                convert::compress_section(&mut report);
                message(pb::agent_message::Body::JobEvent(report))
            }),
            (
                "event_report_unavailable.bin",
                event(
                    2,
                    &JobUpdate::Report {
                        section: Box::new(RuntimeSection::unavailable("NVML not found")),
                    },
                ),
            ),
            (
                "event_failed.bin",
                event(
                    5,
                    &JobUpdate::Failed {
                        phase: "retention_validation".into(),
                        reason: "worker exited with status 9".into(),
                    },
                ),
            ),
        ]
    }

    /// Job assignments as the coordinator sends them: a plain one and one with every field set.
    fn coordinator_messages() -> Vec<(&'static str, Vec<u8>)> {
        let assign = |job: &JobAssignment| {
            pb::CoordinatorMessage {
                body: Some(pb::coordinator_message::Body::AssignJob(pb::AssignJob {
                    job: Some(pb::JobSpec::from(job)),
                })),
            }
            .encode_to_vec()
        };
        let plain = JobAssignment {
            job_id: "run-7-0".into(),
            run_id: "run-7".into(),
            deadline_unix_ms: 1_800_000_000_000,
            spec: JobSpec {
                runtime: RuntimeKind::GpumemprofCpu,
                device: None,
                workload: Workload {
                    profile: Profile::Pr,
                    mode: Mode::Soak,
                    iterations: 50,
                    allocation_kb: 64,
                    kind: WorkloadKind::Reference,
                },
                knobs: RuntimeKnobs::default(),
                scratch_root: None,
            },
        };
        let full = JobAssignment {
            job_id: "run-7-1".into(),
            run_id: "run-7".into(),
            deadline_unix_ms: 1_800_000_000_000,
            spec: JobSpec {
                runtime: RuntimeKind::TfmemprofGpu,
                device: Some(1),
                workload: Workload {
                    profile: Profile::Nightly,
                    mode: Mode::All,
                    iterations: 200,
                    allocation_kb: 256,
                    kind: WorkloadKind::Tensorflow,
                },
                knobs: RuntimeKnobs {
                    sampling_interval_seconds: Some(0.5),
                    flush_every_events: Some(50),
                    flush_every_seconds: Some(1.5),
                    rollover_max_bytes: Some(1_048_576),
                    rollover_max_events: Some(500),
                    retention_max_files: Some(4),
                    retention_max_total_bytes: Some(4_194_304),
                    max_history: Some(1_000),
                    overhead_min_pairs: Some(OVERHEAD_MIN_PAIRS_FLOOR),
                    overhead_max_seconds: Some(20.0),
                },
                scratch_root: Some("/dev/shm/fleetgate".into()),
            },
        };
        vec![
            ("assign_plain.bin", assign(&plain)),
            ("assign_full.bin", assign(&full)),
        ]
    }

    /// Run submissions as the CLI sends them: a plain one, and one at every bound.
    fn submit_runs() -> Vec<(&'static str, Vec<u8>)> {
        let budgets = Asset {
            name: "docs/benchmarks/v0.4_operating_budget.json".into(),
            bytes: include_bytes!("../seeds/gate_assets/budget.json").to_vec(),
            source: AssetSource::Path,
        };
        let plain = RunSpec {
            workload: Workload {
                profile: Profile::Pr,
                mode: Mode::All,
                iterations: 5_000,
                allocation_kb: 512,
                kind: WorkloadKind::Reference,
            },
            gate_mode: GateMode::Budget,
            runtimes: vec!["gpumemprof_cpu".into(), "tfmemprof_cpu".into()],
            selection: Selection {
                min_agents: 1,
                ..Selection::default()
            },
            deadline: None,
            knobs: Knobs::new(),
            overhead_scratch_root: None,
            budgets: Some(budgets.clone()),
            baseline: None,
            tolerances: None,
        };
        // One knobs entry and one label: a map of several would encode in a different order
        // on every run.
        let bounds = RunSpec {
            workload: Workload {
                profile: Profile::Nightly,
                mode: Mode::Soak,
                iterations: MAX_ITERATIONS,
                allocation_kb: MAX_ALLOCATION_KB,
                kind: WorkloadKind::Tensorflow,
            },
            gate_mode: GateMode::Budget,
            runtimes: vec!["tfmemprof_cpu".into()],
            selection: Selection {
                agent_ids: vec!["agent-a".into()],
                labels: [("zone".to_owned(), "east".to_owned())].into(),
                hardware_class: Some("cpu-amd-epyc-7763-16c".into()),
                min_agents: 1,
                // Not the default, so the field is on the wire.
                quorum: fleetgate_common::run::Quorum::new(0.9).unwrap(),
            },
            deadline: Some(Duration::from_secs(MAX_DEADLINE_SECONDS)),
            knobs: [(
                "tfmemprof_cpu".to_owned(),
                RuntimeKnobs {
                    sampling_interval_seconds: Some(MAX_SECONDS_KNOB),
                    rollover_max_bytes: Some(u64::MAX),
                    retention_max_total_bytes: Some(u64::MAX),
                    overhead_min_pairs: Some(OVERHEAD_MAX_PAIRS),
                    overhead_max_seconds: Some(MAX_SECONDS_KNOB),
                    ..RuntimeKnobs::default()
                },
            )]
            .into(),
            overhead_scratch_root: Some("/dev/shm/fleetgate".into()),
            budgets: Some(budgets),
            baseline: None,
            tolerances: None,
        };
        vec![
            (
                "submit_plain.bin",
                pb::SubmitRunRequest::from(&plain).encode_to_vec(),
            ),
            (
                "submit_bounds.bin",
                pb::SubmitRunRequest::from(&bounds).encode_to_vec(),
            ),
        ]
    }

    /// Compares the committed seeds in `seeds/<target>/` with `built`, or rewrites them.
    fn check_or_write(target: &str, built: Vec<(&'static str, Vec<u8>)>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        let write = std::env::var_os("FLEETGATE_WRITE_SEEDS").is_some();
        for (name, bytes) in built {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_default();
                assert!(
                    committed == bytes,
                    "{} is out of date: rerun with FLEETGATE_WRITE_SEEDS=1",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn committed_agent_message_seeds_are_current() {
        let built = agent_messages();
        for (name, bytes) in &built {
            let decoded = pb::AgentMessage::decode(bytes.as_slice()).expect(name);
            match decoded.body {
                Some(pb::agent_message::Body::JobEvent(event)) => {
                    convert::job_update_from_pb(event).expect(name);
                }
                Some(pb::agent_message::Body::Hello(hello)) => {
                    convert::check_hello(&hello).expect(name);
                }
                _ => {}
            }
        }
        check_or_write("agent_message", built);
    }

    #[test]
    fn committed_coordinator_message_seeds_are_current() {
        let built = coordinator_messages();
        for (name, bytes) in &built {
            let decoded = pb::CoordinatorMessage::decode(bytes.as_slice()).expect(name);
            let Some(pb::coordinator_message::Body::AssignJob(assign)) = decoded.body else {
                panic!("{name}: not an assignment");
            };
            JobAssignment::try_from(assign.job.expect(name)).expect(name);
        }
        check_or_write("coordinator_message", built);
    }

    #[test]
    fn committed_submit_run_seeds_are_current() {
        let built = submit_runs();
        for (name, bytes) in &built {
            let decoded = pb::SubmitRunRequest::decode(bytes.as_slice()).expect(name);
            RunSpec::try_from(decoded).expect(name);
        }
        check_or_write("submit_run", built);
    }
}
