//! The GPU path on a host without a GPU: the NVML stand-in library (built from this workspace,
//! loaded through nvml-wrapper's library-path option) simulates the GPUs — the only stand-in in
//! these tests; everything else is the real binary, real gRPC and real worker processes.

mod support;

use std::path::Path;
use std::process::Output;

use fleetgate_common::report::{Report, RuntimeStatus, Verdict};
use support::cli::fleetgate_command;
use support::fleet::{in_process, link, wait_for_agents};
use support::process::{Process, agent_command};
use support::relaxed_budgets;

/// `fleetgate ARGS` with the stand-in simulating `gpus` GPUs, controlled through `control`.
fn fleetgate_with_gpus(args: &[&str], gpus: &str, control: &Path) -> Output {
    fleetgate_command()
        .env("FLEETGATE_NVML_LIBRARY", fleetgate_nvml_standin::LIBRARY)
        .env("NVML_STANDIN_DEVICES", gpus)
        .env("NVML_STANDIN_CONTROL", control)
        .args(args)
        .output()
        .unwrap()
}

/// A run of gpumemprof_cuda in `mode` at a 60 s interval (360 soak samples).
fn run_cuda(work: &Path, mode: &str, gpus: &str, control_lines: &str) -> (Output, Report) {
    let control = work.join("control");
    std::fs::write(&control, control_lines).unwrap();
    let out = work.join("report.json");
    let artifacts = work.join("artifacts");
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work);
    let result = fleetgate_with_gpus(
        &[
            "run",
            "--runtimes",
            "gpumemprof_cuda",
            "--mode",
            mode,
            "--iterations",
            "100",
            "--check",
            "--set",
            "gpumemprof_cuda.sampling_interval_seconds=60",
            "--output",
            out.to_str().unwrap(),
            "--artifact-root",
            artifacts.to_str().unwrap(),
            "--budgets",
            budgets.to_str().unwrap(),
        ],
        gpus,
        &control,
    );
    let report = serde_json::from_slice(&std::fs::read(&out).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {}\n{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        )
    }))
    .unwrap();
    (result, report)
}

#[test]
fn two_simulated_gpus_get_one_job_each_with_their_device_in_every_record() {
    let work = tempfile::tempdir().unwrap();
    let (result, report) = run_cuda(work.path(), "all", "2", "");
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stdout)
    );
    assert_eq!(report.verdict, Verdict::Pass);
    let agent = report.agents.values().next().unwrap();
    assert_eq!(agent.hardware_class, "nvidia-h100-80gb-x2");
    assert_eq!(agent.facts.gpus.len(), 2);
    assert_eq!(agent.facts.gpus[1].name, "NVIDIA H100 80GB HBM3");
    assert_eq!(agent.facts.gpus[0].driver_version, "550.54.15");
    assert_eq!(agent.facts.gpus[0].cuda_driver_version, "12.4");
    assert_eq!(
        agent.jobs.keys().collect::<Vec<_>>(),
        ["gpumemprof_cuda@0", "gpumemprof_cuda@1"]
    );
    for (gpu, (key, section)) in report.runtimes.iter().enumerate() {
        assert!(key.ends_with(&format!("/gpumemprof_cuda@{gpu}")), "{key}");
        let soak = section.soak.as_ref().unwrap();
        assert_eq!(soak.sample_count, 360);
        assert_eq!(soak.collector_failure_event_count, 0);
        assert!(soak.retention_validation.passed);
        assert!(section.overhead.is_some());
        // Every record names its GPU and carries NVML's numbers.
        let sink = Path::new(&soak.output_path).parent().unwrap().to_owned();
        let mut records = 0;
        for entry in std::fs::read_dir(&sink).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let r: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(r["device_id"], gpu);
                assert_eq!(r["collector"], "fleetgate.cuda_tracker");
                if r["event_type"] == "sample" {
                    assert_eq!(r["device_total_bytes"], 81_559u64 << 20);
                    assert_eq!(r["device_used_bytes"], (1_024u64 + 512) << 20);
                    assert_eq!(
                        r["allocator_allocated_bytes"],
                        512u64 << 20,
                        "this process's GPU memory"
                    );
                }
                records += 1;
            }
        }
        assert_eq!(records, 362);
    }
    // Thresholds of the plain runtime key apply to every GPU instance.
    let check = &report.budget_checks.as_ref().unwrap()
        [&format!("{}.rollover_count", report.runtimes.keys().nth(1).unwrap())];
    assert_eq!(check.threshold_key, "gpumemprof_cuda.rollover_count");
}

#[test]
fn a_read_that_fails_then_recovers_counts_two_transitions_on_that_gpu_only() {
    let work = tempfile::tempdir().unwrap();
    // GPU 1's next two memory reads fail in every process that opens it: the soak's start
    // read and its first sample; the next sample (60 s later, past the 1 s backoff) recovers.
    let (result, report) = run_cuda(work.path(), "soak", "2", "fail 1 2\n");
    assert_eq!(
        result.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&result.stdout)
    );
    assert_eq!(report.verdict, Verdict::Fail);
    let soak = |gpu: usize| {
        report
            .runtimes
            .values()
            .nth(gpu)
            .unwrap()
            .soak
            .clone()
            .unwrap()
    };
    assert_eq!(soak(0).collector_failure_event_count, 0);
    assert_eq!(soak(1).collector_failure_event_count, 2);
    assert_eq!(soak(1).collector_health_status, "healthy");
    assert_eq!(
        soak(1).stats.get("sample_count"),
        359,
        "no sample during the outage"
    );
    assert!(
        report
            .failure_diagnostics
            .iter()
            .any(|d| d.contains("/gpumemprof_cuda@1: collector failures observed (2)")),
        "{:#?}",
        report.failure_diagnostics
    );
}

#[test]
fn a_gpu_that_falls_off_the_bus_leaves_its_collector_unhealthy() {
    let work = tempfile::tempdir().unwrap();
    let (_, report) = run_cuda(work.path(), "soak", "2", "lost 0\n");
    let soak = report
        .runtimes
        .values()
        .next()
        .unwrap()
        .soak
        .clone()
        .unwrap();
    assert_eq!(soak.collector_health_status, "unhealthy");
    assert_eq!(soak.collector_failure_event_count, 1);
    assert!(
        report
            .failure_diagnostics
            .iter()
            .any(|d| d.contains("/gpumemprof_cuda@0: collector health is unhealthy")),
        "{:#?}",
        report.failure_diagnostics
    );
    assert_eq!(report.verdict, Verdict::Fail);
}

#[test]
fn hosts_without_a_usable_gpu_report_the_runtime_unavailable() {
    let work = tempfile::tempdir().unwrap();
    let (result, report) = run_cuda(work.path(), "soak", "0", "");
    assert_eq!(result.status.code(), Some(6));
    let (key, section) = report.runtimes.iter().next().unwrap();
    assert!(key.ends_with("/gpumemprof_cuda"), "{key}");
    assert_eq!(section.status, RuntimeStatus::Unavailable);
    assert_eq!(
        section.reason.as_deref(),
        Some("NVML loaded but sees no GPU")
    );
    assert_eq!(report.verdict, Verdict::Inconclusive);
    let agent = report.agents.values().next().unwrap();
    assert!(agent.facts.gpus.is_empty());
    assert!(agent.hardware_class.starts_with("cpu-"));

    // No NVML library at all: the same, with the loader's reason; nothing crashes.
    let out = work.path().join("none.json");
    let result = fleetgate_command()
        .env(
            "FLEETGATE_NVML_LIBRARY",
            work.path().join("libnvidia-ml.so.missing"),
        )
        .args([
            "run",
            "--runtimes",
            "gpumemprof_cuda",
            "--mode",
            "soak",
            "--check",
            "--output",
        ])
        .arg(&out)
        .arg("--artifact-root")
        .arg(work.path().join("a2"))
        .output()
        .unwrap();
    assert_eq!(
        result.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let reason = report
        .runtimes
        .values()
        .next()
        .unwrap()
        .reason
        .clone()
        .unwrap();
    assert!(reason.starts_with("NVML did not load"), "{reason}");
}

#[test]
fn an_agent_reports_its_two_simulated_gpus_to_the_coordinator() {
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let coordinator =
            in_process(fleetgate_coordinator::registry::CoordinatorSettings::default()).await;
        let url = coordinator.url();
        let mut command = agent_command(&url, "gpu-box", work.path());
        command
            .arg("--plaintext")
            .env("FLEETGATE_NVML_LIBRARY", fleetgate_nvml_standin::LIBRARY)
            .env("NVML_STANDIN_DEVICES", "2");
        let mut agent = Process::spawn(command);
        let agents = wait_for_agents(&link(&url), None, &["gpu-box"], || agent.text()).await;
        agent.kill();
        let summary = agents
            .into_iter()
            .find(|a| a.agent_id == "gpu-box")
            .unwrap();
        let facts = summary.facts.unwrap();
        assert_eq!(facts.gpus.len(), 2);
        assert_eq!(facts.gpus[0].memory_total_bytes, 81_559 << 20);
        assert!(
            facts.gpus[0].pci_bus_id.starts_with("00000000:10"),
            "{}",
            facts.gpus[0].pci_bus_id
        );
        assert_ne!(facts.gpus[0].uuid, facts.gpus[1].uuid);
        assert_eq!(summary.hardware_class, "nvidia-h100-80gb-x2");
        let cuda = summary
            .runtimes
            .iter()
            .find(|r| r.runtime == "gpumemprof_cuda")
            .unwrap();
        assert!(cuda.available, "{}", cuda.unavailable_reason);
        coordinator.shutdown().await;
    });
}
