//! The verdict of a run that lost telemetry, the two-sided regression counters, the gate
//! assets built into the binary, and a fleet's quorum, outliers and corrected p-values: the
//! report builder on real scenario output (faults come from the sink's fault injector), and
//! the real `fleetgate` binary on a full disk and from a directory without assets.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fleetgate_agent::collector::RssCollector;
use fleetgate_agent::runtime::TrackerConfig;
use fleetgate_agent::scenario::{self, Hooks, OverheadSpec, SoakSpec};
use fleetgate_agent::sink::{FaultInjector, FaultOp};
use fleetgate_agent::workload::Workload;
use fleetgate_common::config::{GateMode, Mode, Profile, RetentionValidationLimits, WorkloadKind};
use fleetgate_common::gate::{AssetSource, Baseline, Gate, Tolerances};
use fleetgate_common::host::HostFacts;
use fleetgate_common::report::{
    AgentRecord, JobRecord, JobStatus, JobSummary, Report, RuntimeSection, RuntimeStatus, Verdict,
    baseline_document, build_fleet_report, build_report,
};
use fleetgate_common::run::{Asset, Quorum, RunSpec};
use fleetgate_common::runtime::RuntimeKind;
use fleetgate_coordinator::plan::{self, RunError, RunPlan};
use support::cli::{clean, fleetgate_command, run_bounded, tiny_run};
use support::{assert_matches_schema, repo, run_spec};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const AGENT: &str = "a1";
const RUNTIME: &str = "a1/gpumemprof_cpu";

// === The report builder on real scenario output ===

/// A tracker whose sink fails fast: retries after 1 ms instead of 1 s, and (with `faults`)
/// goes through the fault injector. A 60 s interval keeps the RSS growth rate negligible.
fn tracker(faults: Option<&FaultInjector>) -> TrackerConfig {
    let mut config = TrackerConfig::new(RuntimeKind::GpumemprofCpu, Some(PathBuf::new()));
    config.sampling_interval = Duration::from_secs(60);
    let sink = config.sink.as_mut().unwrap();
    sink.failure_backoff = Duration::from_millis(1);
    sink.failure_backoff_max = Duration::from_millis(1);
    sink.rollover_max_events = 500;
    sink.max_queued_batches = 2;
    sink.faults = faults.cloned();
    config
}

/// A real soak of `samples` samples under `dir` (its retention validation never has faults).
fn soak_section(dir: &Path, samples: u64, faults: Option<&FaultInjector>) -> RuntimeSection {
    soak_section_with(dir, samples, faults, &mut |_| {})
}

fn soak_section_with(
    dir: &Path,
    samples: u64,
    faults: Option<&FaultInjector>,
    after_sample: &mut dyn FnMut(u64),
) -> RuntimeSection {
    let spec = SoakSpec {
        tracker: tracker(faults),
        samples,
        profile: "pr".into(),
        artifact_dir: dir.join("soak"),
        retention: RetentionValidationLimits::default(),
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |_| {};
    let mut hooks = Hooks::new(&mut progress, &cancel);
    hooks.after_soak_sample = Some(after_sample);
    let soak = scenario::run_soak(&spec, RssCollector::open, &mut hooks).unwrap();
    RuntimeSection {
        status: RuntimeStatus::Ok,
        reason: None,
        default_interval: Some(60.0),
        overhead: None,
        soak: Some(Box::new(soak)),
    }
}

/// A real overhead comparison (six pairs of 50 steps) under `dir`.
fn overhead_section(dir: &Path, faults: &FaultInjector) -> RuntimeSection {
    let spec = OverheadSpec {
        tracker: tracker(Some(faults)),
        workload: Workload {
            iterations: 50,
            allocation_kb: 64,
        },
        workload_kind: WorkloadKind::Reference,
        tensorflow_device: "/CPU:0",
        runtime_dir: dir.to_owned(),
        scratch_dir: None,
        samples: 50,
        limits: scenario::PairLimits {
            min_pairs: 6,
            max_duration: std::time::Duration::ZERO,
        },
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |_| {};
    let mut hooks = Hooks::new(&mut progress, &cancel);
    let overhead = scenario::run_overhead(&spec, RssCollector::open, &mut hooks).unwrap();
    RuntimeSection {
        status: RuntimeStatus::Ok,
        reason: None,
        default_interval: Some(60.0),
        overhead: Some(Box::new(overhead)),
        soak: None,
    }
}

fn spec(
    mode: Mode,
    gate_mode: GateMode,
    baseline: Option<Asset>,
    tolerances: Option<Asset>,
) -> RunSpec {
    RunSpec {
        baseline,
        tolerances,
        ..run_spec(mode, gate_mode)
    }
}

/// The budget gate on the built-in operating budget.
fn budget_plan(mode: Mode) -> RunPlan {
    plan::plan(spec(mode, GateMode::Budget, None, None)).unwrap()
}

fn report_of(plan: &RunPlan, section: &RuntimeSection) -> Report {
    let agents = [AgentRecord {
        agent_id: AGENT.into(),
        facts: HostFacts::default(),
        labels: BTreeMap::new(),
        hardware_class: "cpu-test-2c".into(),
    }];
    let jobs = [JobRecord {
        agent_id: AGENT.into(),
        runtime: "gpumemprof_cpu".into(),
        summary: JobSummary {
            job_id: "j1".into(),
            status: JobStatus::Completed,
            phase: "soak".into(),
            done: 1,
            total: 1,
            events: 1,
            checkpoints: 0,
            wall_seconds: 1.0,
            reason: None,
        },
        section: Some(section.clone()),
    }];
    build_report(&plan.config, &plan.gate, &agents, &jobs, 0)
}

/// The section with `key` of the soak's tracker statistics replaced.
fn with_soak_stat(section: &RuntimeSection, key: &str, value: serde_json::Value) -> RuntimeSection {
    let mut section = section.clone();
    let soak = section.soak.as_mut().unwrap();
    soak.stats = soak.stats.with(key, value);
    section
}

fn diagnostics(report: &Report) -> String {
    report.failure_diagnostics.join("\n")
}

#[test]
fn a_clean_soak_passes_and_each_kind_of_loss_decides_the_verdict_from_one_record_or_failure() {
    let work = tempfile::tempdir().unwrap();
    let clean = soak_section(work.path(), 2_000, None);
    let plan = budget_plan(Mode::Soak);
    let report = report_of(&plan, &clean);
    assert_eq!(
        (report.verdict, report.passed),
        (Verdict::Pass, true),
        "{}",
        diagnostics(&report)
    );
    let stats = &clean.soak.as_ref().unwrap().stats;
    assert_eq!(stats.get("sink_dropped_records"), 0);
    assert_eq!(stats.get("sink_flush_failures"), 0);
    assert_eq!(stats.get("session_status"), "completed");
    let sink = work.path().join("soak/sink").display().to_string();
    assert_eq!(stats.get("sink_dir"), sink.as_str());

    // One dropped record or one failed write fails the gate; zero of each passes (above).
    for (key, kind) in [
        ("sink_dropped_records", "1 of"),
        ("sink_flush_failures", "1 failed sink writes"),
    ] {
        let report = report_of(&plan, &with_soak_stat(&clean, key, 1.into()));
        assert_eq!(
            (report.verdict, report.passed),
            (Verdict::Fail, false),
            "{key}"
        );
        let line = &report.failure_diagnostics[0];
        assert!(
            line.starts_with(&format!("{RUNTIME}: telemetry lost in soak: ")),
            "{line}"
        );
        assert!(
            line.contains(kind) && line.contains(&format!("sink {sink};")),
            "{line}"
        );
    }
    // A session that did not complete with nothing dropped and no failed write: inconclusive.
    for status in ["incomplete", "interrupted"] {
        let report = report_of(
            &plan,
            &with_soak_stat(&clean, "session_status", status.into()),
        );
        assert_eq!(
            (report.verdict, report.passed),
            (Verdict::Inconclusive, false),
            "{status}"
        );
        assert!(
            report.failure_diagnostics[0].starts_with(&format!(
                "{RUNTIME}: telemetry session of soak ended {status} with nothing dropped and no failed write: the sink could not be closed, so what reached {sink} is unknown"
            )),
            "{}",
            diagnostics(&report)
        );
    }
}

#[test]
fn a_soak_whose_disk_is_full_fails_naming_the_dropped_records_the_path_and_the_error() {
    let work = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    // Every write fails as on a full disk, after writing part of the batch for real.
    faults.arm(FaultOp::Write, u32::MAX, ENOSPC, 100);
    let section = soak_section(work.path(), 2_000, Some(&faults));
    let report = report_of(&budget_plan(Mode::Soak), &section);
    assert_eq!((report.verdict, report.passed), (Verdict::Fail, false));
    let stats = &section.soak.as_ref().unwrap().stats;
    let dropped = stats.get("sink_dropped_records").as_u64().unwrap();
    assert!(dropped > 0, "{}", stats.to_value());
    assert_eq!(stats.get("sink_durable_records"), 0);
    assert_eq!(stats.get("session_status"), "incomplete");
    let sink = work.path().join("soak/sink");
    let line = &report.failure_diagnostics[0];
    // Every failure was the same write, so the first and last errors are one.
    let expected = format!(
        "{RUNTIME}: telemetry lost in soak: {dropped} of {dropped} records dropped ({} bytes), {} failed sink writes, session incomplete; sink {}; error: write {}: No space left on device (os error 28); free space under the artifact root",
        stats.get("sink_dropped_bytes"),
        stats.get("sink_flush_failures"),
        sink.display(),
        sink.join("segment-000001.jsonl").display()
    );
    assert!(line.starts_with(&expected), "{line}\n{expected}");
    assert!(
        line.contains("free space under the artifact root (--artifact-root)")
            && line.ends_with("; next knob: retention_max_files"),
        "{line}"
    );
    // The retention validation (no faults) kept everything: only the soak is named.
    assert_eq!(
        report
            .failure_diagnostics
            .iter()
            .filter(|l| l.contains("telemetry"))
            .count(),
        1,
        "{}",
        diagnostics(&report)
    );
}

#[test]
fn a_failed_write_in_an_overhead_trial_fails_the_gate_even_when_the_retry_kept_every_record() {
    let work = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    // The first sink write of the first trial fails once; the retry succeeds.
    faults.arm(FaultOp::Write, 1, EIO, 0);
    let section = overhead_section(work.path(), &faults);
    assert_eq!(faults.injected(), 1);
    let overhead = section.overhead.as_ref().unwrap();
    assert_eq!(
        overhead.telemetry_losses.len(),
        1,
        "{:?}",
        overhead.telemetry_losses
    );
    let loss = &overhead.telemetry_losses[0];
    assert_eq!(
        (
            loss.scenario.as_str(),
            loss.dropped_records,
            loss.flush_failures
        ),
        ("overhead trial 1", 0, 1)
    );
    assert_eq!(loss.session_status, "completed");
    let report = report_of(&budget_plan(Mode::Overhead), &section);
    assert_eq!((report.verdict, report.passed), (Verdict::Fail, false));
    let line = &report.failure_diagnostics[0];
    let trial_sink = work
        .path()
        .join(".overhead_trials/trial_1/tracked_default/sink");
    assert!(
        line.starts_with(&format!(
            "{RUNTIME}: telemetry lost in overhead trial 1: 0 of {} records dropped (0 bytes), 1 failed sink writes, session completed; sink {}; error: write {}: Input/output error (os error 5); free space where the overhead trial files are written",
            loss.durable_records,
            trial_sink.display(),
            trial_sink.join("segment-000001.jsonl").display()
        )),
        "{line}"
    );
}

#[test]
fn a_retention_validation_that_cannot_start_still_reports_the_soak_and_fails() {
    let work = tempfile::tempdir().unwrap();
    let blocker = work.path().join("soak/retention_validation");
    let samples = 500;
    // After the last soak sample a file takes the subtest's directory: it cannot be prepared.
    let section = soak_section_with(work.path(), samples, None, &mut |index| {
        if index == samples - 1 {
            std::fs::write(&blocker, b"not a directory").unwrap();
        }
    });
    let soak = section.soak.as_ref().unwrap();
    assert_eq!(soak.sample_count, samples, "the soak itself is reported");
    assert!(!soak.retention_validation.passed);
    assert_eq!(soak.retention_validation.emitted_samples, 0);
    let report = report_of(&budget_plan(Mode::Soak), &section);
    assert_eq!((report.verdict, report.passed), (Verdict::Fail, false));
    let sink = work.path().join("soak/retention_validation/sink");
    let line = &report.failure_diagnostics[0];
    assert!(
        line.starts_with(&format!(
            "{RUNTIME}: telemetry lost in retention_validation: 0 of 0 records dropped (0 bytes), 1 failed sink writes, session incomplete; sink {}; error: prepare {}: Not a directory (os error 20); free space under the artifact root (--artifact-root)",
            sink.display(),
            blocker.display(),
        )) && line.ends_with("; next knob: retention_max_files"),
        "{line}"
    );
    assert_eq!(
        report.failure_diagnostics.len(),
        5,
        "{}",
        diagnostics(&report)
    );
    assert!(
        report.failure_diagnostics[1..].iter().all(|l| l.ends_with(
            "next knob: none (its sink lost telemetry, as the retention_validation line above says)"
        )),
        "{}",
        diagnostics(&report)
    );
}

/// A tolerance file covering `metrics`: the two-sided counters exact, the rest generous.
fn tolerances_for(metrics: &BTreeMap<String, f64>) -> Asset {
    let tolerances: BTreeMap<&String, f64> = metrics
        .keys()
        .map(|k| {
            let exact = fleetgate_common::report::is_two_sided(k);
            (k, if exact { 0.0 } else { 1e12 })
        })
        .collect();
    Asset {
        name: "tolerances.json".into(),
        bytes: serde_json::to_vec(
            &serde_json::json!({"version": "v0.4", "tolerances": tolerances}),
        )
        .unwrap(),
        source: AssetSource::Path,
    }
}

#[test]
fn the_regression_gate_fails_fewer_rollovers_than_the_baseline_and_names_it() {
    let work = tempfile::tempdir().unwrap();
    let section = soak_section(work.path(), 2_000, None);
    let recorded = report_of(&budget_plan(Mode::Soak), &section);
    let mut baseline = baseline_document(&recorded, "host");
    let current = baseline["metrics"]["gpumemprof_cpu.rollover_count"]
        .as_f64()
        .unwrap();
    assert!(
        current >= 3.0,
        "the soak rolls over every 500 records: {current}"
    );
    let metrics: BTreeMap<String, f64> =
        serde_json::from_value(baseline["metrics"].clone()).unwrap();
    let tolerances = tolerances_for(&metrics);
    let mut outcome = |baseline_rollovers: f64| {
        baseline["metrics"]["gpumemprof_cpu.rollover_count"] = baseline_rollovers.into();
        let asset = Asset {
            name: "baseline.json".into(),
            bytes: serde_json::to_vec(&baseline).unwrap(),
            source: AssetSource::Path,
        };
        let plan = plan::plan(spec(
            Mode::Soak,
            GateMode::Regression,
            Some(asset),
            Some(tolerances.clone()),
        ))
        .unwrap();
        report_of(&plan, &section)
    };
    let check = |report: &Report| {
        report.regression_checks.as_ref().unwrap()[&format!("{RUNTIME}.rollover_count")].clone()
    };
    let same = outcome(current);
    assert_eq!(same.verdict, Verdict::Pass, "{}", diagnostics(&same));
    assert!(check(&same).two_sided);

    // One rollover short of the baseline: less work, not an improvement.
    let fewer = outcome(current + 1.0);
    assert_eq!((fewer.verdict, fewer.passed), (Verdict::Fail, false));
    assert_eq!(check(&fewer).delta, -1.0);
    assert_eq!(
        fewer.failure_diagnostics.len(),
        1,
        "{}",
        diagnostics(&fewer)
    );
    assert!(
        fewer.failure_diagnostics[0].starts_with(&format!(
            "{RUNTIME}.rollover_count: delta -1 < -0: current {current} is below the baseline {}; this counter is deterministic, so less work than the baseline is not an improvement",
            current + 1.0
        )),
        "{}",
        fewer.failure_diagnostics[0]
    );
    // One more than the baseline fails as a regression.
    let more = outcome(current - 1.0);
    assert_eq!(more.verdict, Verdict::Fail);
    assert!(
        more.failure_diagnostics[0].starts_with(&format!("{RUNTIME}.rollover_count: delta 1 > 0")),
        "{}",
        diagnostics(&more)
    );
}

#[test]
fn the_report_records_each_gate_asset_source_and_sha256() {
    let sha = |path: &str| plan::sha256_hex(&std::fs::read(repo().join(path)).unwrap());
    let config = budget_plan(Mode::Soak).config;
    assert_eq!(config.budgets_path.as_deref(), Some(plan::DEFAULT_BUDGETS));
    assert_eq!(config.budgets_source, Some(AssetSource::Embedded));
    assert_eq!(config.budgets_sha256, Some(sha(plan::DEFAULT_BUDGETS)));

    // The built-in copies are the shipped files, byte for byte.
    assert_eq!(
        plan::sha256_hex(plan::EMBEDDED_BASELINE),
        sha(plan::DEFAULT_BASELINE)
    );
    assert_eq!(
        plan::sha256_hex(plan::EMBEDDED_TOLERANCES),
        sha(plan::DEFAULT_TOLERANCES)
    );

    // A file given on the command line overrides the built-in copy.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("budget.json");
    let mut text = std::fs::read_to_string(repo().join(plan::DEFAULT_BUDGETS)).unwrap();
    text.push('\n');
    std::fs::write(&file, &text).unwrap();
    let mut with_file = spec(Mode::Soak, GateMode::Budget, None, None);
    with_file.budgets = Some(Asset::read(&file, "Budget file").unwrap());
    let config = plan::plan(with_file).unwrap().config;
    assert_eq!(config.budgets_path, Some(file.display().to_string()));
    assert_eq!(config.budgets_source, Some(AssetSource::Path));
    assert_eq!(
        config.budgets_sha256,
        Some(plan::sha256_hex(text.as_bytes()))
    );
    assert_ne!(config.budgets_sha256, Some(sha(plan::DEFAULT_BUDGETS)));

    // Regression defaults: the built-in baseline is read (and here does not match the
    // run's config), and outside `pr` they are refused.
    let err = plan::plan(spec(Mode::Soak, GateMode::Regression, None, None)).unwrap_err();
    assert!(
        matches!(&err, RunError::InvalidInput(m) if m.starts_with("docs/benchmarks/v0.4_baseline.json (built in): Baseline config mismatch: ")),
        "{err}"
    );
    let mut nightly = spec(Mode::Soak, GateMode::Regression, None, None);
    nightly.workload.profile = Profile::Nightly;
    assert!(matches!(plan::plan(nightly), Err(RunError::Usage(_))));
}

#[test]
fn a_remote_submission_carries_only_the_files_given_and_the_coordinator_supplies_the_rest() {
    use fleetgate_proto::v1 as pb;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("tolerances.json");
    std::fs::copy(repo().join(plan::DEFAULT_TOLERANCES), &file).unwrap();
    let mut sent = spec(
        Mode::Soak,
        GateMode::Regression,
        Some(Asset::embedded(
            plan::DEFAULT_BASELINE,
            b"not what the coordinator uses",
        )),
        Some(Asset::read(&file, "Tolerance file").unwrap()),
    );
    sent.budgets = None;
    let wire = pb::SubmitRunRequest::from(&sent);
    assert_eq!(
        (wire.baseline_json.as_str(), wire.baseline_path.as_str()),
        ("", "")
    );
    assert_eq!(wire.tolerances_path, file.display().to_string());
    let received = RunSpec::try_from(wire).unwrap();
    assert_eq!(received.baseline, None);
    let tolerances = received.tolerances.clone().unwrap();
    assert_eq!(
        (tolerances.source, tolerances.name),
        (AssetSource::Path, file.display().to_string())
    );
    // The coordinator plans with its built-in baseline (which does not match this short run).
    let err = plan::plan(received).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("docs/benchmarks/v0.4_baseline.json (built in): Baseline config mismatch"),
        "{err}"
    );
}

// === The real binary ===

/// `fleetgate` run from `cwd`.
fn fleetgate_in(cwd: &Path) -> Command {
    let mut command = fleetgate_command();
    command.current_dir(cwd);
    command
}

fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Exit status of the shell wrapper when the tmpfs cannot be mounted.
const MOUNT_FAILED: i32 = 97;

#[test]
fn a_pr_soak_on_a_full_20_mib_tmpfs_never_passes_and_names_the_loss_with_its_path() {
    let work = tempfile::tempdir().unwrap();
    let art = work.path().join("art");
    std::fs::create_dir(&art).unwrap();
    let out = work.path().join("report.json");
    // A private mount namespace (user namespace included, so no privilege is needed where
    // unprivileged user namespaces are allowed) with a 20 MiB tmpfs as the artifact root.
    let script = format!(
        "mount -t tmpfs -o size=20m tmpfs \"$1\" || {{ echo 'cannot mount a 20 MiB tmpfs at '\"$1\" >&2; exit {MOUNT_FAILED}; }}; shift; exec \"$@\""
    );
    let mut command = Command::new("unshare");
    clean(&mut command)
        .current_dir(work.path())
        .args(["-rm", "sh", "-c", &script, "sh"])
        .arg(&art)
        .arg(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "run",
            "--profile",
            "pr",
            "--runtimes",
            "gpumemprof_cpu",
            "--mode",
            "soak",
            "--check",
        ])
        .arg("--artifact-root")
        .arg(&art)
        .arg("--output")
        .arg(&out);
    let (code, stdout, stderr) = run_bounded(&mut command, Duration::from_secs(900));
    assert_ne!(
        code,
        Some(MOUNT_FAILED),
        "this test needs a tmpfs in a user and mount namespace (`unshare -rm`: root, or unprivileged user namespaces enabled): {stderr}"
    );
    assert_eq!(
        code,
        Some(4),
        "lost telemetry fails the gate\n{stdout}\n{stderr}"
    );
    let report = read_report(&out);
    assert_matches_schema(&report);
    assert_eq!(
        (&report["passed"], &report["verdict"]),
        (&false.into(), &"fail".into())
    );
    let agent = report["agents"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let runtime = format!("{agent}/gpumemprof_cpu");
    let stats = &report["runtimes"][&runtime]["soak"]["stats"];
    let dropped = stats["sink_dropped_records"].as_u64().unwrap();
    assert!(dropped > 0, "{stats}");
    assert_eq!(stats["session_status"], "incomplete");
    let sink = art.join("gpumemprof_cpu/soak/sink").display().to_string();
    assert_eq!(stats["sink_dir"], sink.as_str());
    let diagnostics: Vec<&str> = report["failure_diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let prefix = format!("{runtime}: telemetry lost in soak: {dropped} of ");
    let line = diagnostics
        .iter()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no soak loss line: {diagnostics:#?}"));
    assert!(
        line.contains(&format!("sink {sink};"))
            && line.contains(&format!("error: write {sink}/segment-"))
            && line.contains("No space left on device (os error 28)")
            && line.contains("free space under the artifact root (--artifact-root)"),
        "{line}"
    );
    // stdout lists the same line under Failures.
    assert!(stdout.contains(&format!("- {line}")), "{stdout}");
    assert!(stdout.contains("Overall status: FAIL"), "{stdout}");
}

/// `fleetgate run` with 50 workload steps and a 60 s interval (a `pr` soak of 360 samples),
/// rolling over every 100 records.
fn short_run() -> Vec<&'static str> {
    let mut args = tiny_run("soak", "gpumemprof_cpu");
    args.extend(["--set", "gpumemprof_cpu.rollover_max_events=100"]);
    args
}

#[test]
fn a_run_from_a_directory_without_assets_passes_on_the_built_in_defaults() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("report.json");
    let (code, stdout, stderr) = run_bounded(
        fleetgate_in(work.path())
            .args(short_run())
            .args(["--check", "--artifact-root", "art", "--output"])
            .arg(&out),
        Duration::from_secs(600),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let report = read_report(&out);
    assert_matches_schema(&report);
    assert_eq!(report["verdict"], "pass");
    let shipped = std::fs::read(repo().join(plan::DEFAULT_BUDGETS)).unwrap();
    let config = &report["config"];
    assert_eq!(config["budgets_source"], "embedded");
    assert_eq!(config["budgets_path"], plan::DEFAULT_BUDGETS);
    assert_eq!(
        config["budgets_sha256"],
        plan::sha256_hex(&shipped).as_str()
    );

    // The regression defaults are built in too: outside the repository the built-in baseline
    // is read (and refused for this short run's config), not looked for on disk.
    let (code, _, stderr) = run_bounded(
        fleetgate_in(work.path())
            .args(short_run())
            .args(["--gate-mode", "regression"]),
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with(
            "Error: docs/benchmarks/v0.4_baseline.json (built in): Baseline config mismatch: current="
        )),
        "{stderr}"
    );
}

#[test]
fn a_regression_run_with_fewer_rollovers_than_its_baseline_exits_4() {
    let work = tempfile::tempdir().unwrap();
    let baseline = work.path().join("baseline.json");
    let (code, stdout, stderr) = run_bounded(
        fleetgate_in(work.path())
            .args(short_run())
            .args([
                "--artifact-root",
                "art",
                "--output",
                "first.json",
                "--write-baseline",
            ])
            .arg(&baseline),
        Duration::from_secs(600),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let mut document = read_report(&baseline);
    let recorded = document["metrics"]["gpumemprof_cpu.rollover_count"]
        .as_f64()
        .unwrap();
    assert!(
        recorded >= 3.0,
        "360 samples roll over every 100 records: {recorded}"
    );
    document["metrics"]["gpumemprof_cpu.rollover_count"] = (recorded + 5.0).into();
    std::fs::write(&baseline, serde_json::to_vec_pretty(&document).unwrap()).unwrap();

    let out = work.path().join("report.json");
    let (code, stdout, stderr) = run_bounded(
        fleetgate_in(work.path())
            .args(short_run())
            .args(["--gate-mode", "regression", "--check", "--baseline"])
            .arg(&baseline)
            .arg("--tolerances")
            .arg(repo().join(plan::DEFAULT_TOLERANCES))
            .args(["--artifact-root", "art", "--output"])
            .arg(&out),
        Duration::from_secs(600),
    );
    assert_eq!(code, Some(4), "{stdout}\n{stderr}");
    let report = read_report(&out);
    assert_matches_schema(&report);
    assert_eq!(report["config"]["baseline_source"], "path");
    assert_eq!(report["config"]["tolerances_source"], "path");
    let agent = report["agents"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let key = format!("{agent}/gpumemprof_cpu.rollover_count");
    let check = &report["regression_checks"][&key];
    assert_eq!(
        (&check["delta"], &check["passed"], &check["two_sided"]),
        (&(-5.0).into(), &false.into(), &true.into())
    );
    // The lines under `Failures:` (the gate-power advice that follows has its own heading).
    let failures: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "Failures:")
        .skip(1)
        .take_while(|l| l.starts_with("- "))
        .collect();
    assert_eq!(failures.len(), 1, "{stdout}");
    assert!(
        failures[0].starts_with(&format!(
            "- {key}: delta -5 < -0: current {recorded} is below the baseline {}",
            recorded + 5.0
        )),
        "{stdout}"
    );
}

// === Interval decisions and gate power ===

/// A real overhead section whose `runtime_overhead_pct` is replaced by `estimate` with the
/// interval `[lo, hi]` and whose detectable shift of it is `detectable` points.
fn with_overhead_interval(
    section: &RuntimeSection,
    (estimate, lo, hi): (f64, f64, f64),
    detectable: f64,
) -> RuntimeSection {
    let mut section = section.clone();
    let o = section.overhead.as_mut().unwrap();
    o.metrics.runtime_overhead_pct = estimate;
    let e = &mut o.estimates.as_mut().unwrap().runtime_overhead_pct;
    (e.estimate, e.lo, e.hi) = (estimate, lo, hi);
    o.detectable_shift.as_mut().unwrap().runtime_overhead_pct = detectable;
    // A CPU overhead clearly within its budget, so that only the runtime check decides.
    o.metrics.cpu_overhead_pct = 10.0;
    let e = &mut o.estimates.as_mut().unwrap().cpu_overhead_pct;
    (e.estimate, e.lo, e.hi) = (10.0, 5.0, 15.0);
    o.detectable_shift.as_mut().unwrap().cpu_overhead_pct = 5.0;
    section
}

#[test]
fn an_overhead_interval_across_the_budget_is_inconclusive_and_the_report_states_its_power() {
    let work = tempfile::tempdir().unwrap();
    let measured = overhead_section(work.path(), &FaultInjector::default());
    let plan = budget_plan(Mode::Overhead);
    let metric = format!("{RUNTIME}.runtime_overhead_pct");
    let budget = 100.0;

    // Clearly within: passes, and the power line names the headroom.
    let report = report_of(
        &plan,
        &with_overhead_interval(&measured, (40.0, 30.0, 50.0), 8.0),
    );
    let check = &report.budget_checks.as_ref().unwrap()[&metric];
    assert_eq!((check.lo, check.hi), (Some(30.0), Some(50.0)));
    assert!(check.passed && !check.inconclusive);
    let power = report.gate_power.join("\n");
    assert!(
        power.contains(&format!("{metric}: 6 pairs detect a shift of 8.00% (",))
            && power.contains("with 95% power; the budget headroom is 60.00%"),
        "{power}"
    );
    assert!(!power.contains("tighter"), "{power}");

    // Straddling: inconclusive, with one diagnostic saying what would resolve it.
    let report = report_of(
        &plan,
        &with_overhead_interval(&measured, (95.0, 80.0, budget + 10.0), 30.0),
    );
    let check = &report.budget_checks.as_ref().unwrap()[&metric];
    assert!(!check.passed && check.inconclusive);
    assert_eq!(
        (report.verdict, report.passed),
        (Verdict::Inconclusive, false)
    );
    let lines: Vec<&String> = report
        .failure_diagnostics
        .iter()
        .filter(|l| l.starts_with(&metric))
        .collect();
    assert_eq!(
        lines,
        [&format!(
            "{metric}: inconclusive: 95.00% 95% [80.00%, 110.00%] straddles the budget 100.00%; next knob: none (not a tuning problem: resolve with more pairs (knob overhead_min_pairs, or overhead_max_seconds), the overhead trial files on a RAM scratch root (--overhead-scratch-root), or a quieter host)"
        )]
    );
    let power = report.gate_power.join("\n");
    assert!(
        power
            .contains("the budget headroom of 5.00% is tighter than that: resolve with more pairs"),
        "{power}"
    );

    // Shown beyond the budget: fails.
    let report = report_of(
        &plan,
        &with_overhead_interval(&measured, (130.0, budget + 0.5, 150.0), 30.0),
    );
    let check = &report.budget_checks.as_ref().unwrap()[&metric];
    assert!(!check.passed && !check.inconclusive);
    assert_eq!(report.verdict, Verdict::Fail);
    assert!(
        diagnostics(&report).contains(&format!(
            "{metric}: 130.00% 95% [100.50%, 150.00%] > 100.00%"
        )),
        "{}",
        diagnostics(&report)
    );
}

// === A fleet: quorum, outliers and the correction for many checks ===

#[test]
fn a_fleet_report_with_a_quorum_an_outlier_and_corrected_p_values_matches_the_schema() {
    let work = tempfile::tempdir().unwrap();
    let measured = overhead_section(work.path(), &FaultInjector::default());
    let growth = measured
        .overhead
        .as_ref()
        .unwrap()
        .metrics
        .artifact_growth_bytes as f64;
    let config = budget_plan(Mode::Overhead).config;
    let plain = |metric: &str| format!("gpumemprof_cpu.{metric}");
    let gate = Gate::Regression(
        Baseline {
            path: "baseline.json".into(),
            version: "v0.4".into(),
            config: config.comparable(),
            metrics: BTreeMap::from([
                (plain("runtime_overhead_pct"), 10.0),
                (plain("cpu_overhead_pct"), 10.0),
                (plain("artifact_growth_bytes"), growth),
            ]),
            distributions: BTreeMap::new(),
        },
        Tolerances {
            path: "tolerances.json".into(),
            tolerances: BTreeMap::from([
                (plain("runtime_overhead_pct"), 5.0),
                (plain("cpu_overhead_pct"), 5.0),
                (plain("artifact_growth_bytes"), 0.0),
            ]),
        },
    );
    // Five agents of one class: four near the baseline, one 30 points over it.
    let estimates = [
        (10.0, 7.0, 13.0),
        (10.5, 7.5, 13.5),
        (11.0, 8.0, 14.0),
        (11.5, 8.5, 14.5),
        (40.0, 35.0, 45.0),
    ];
    let agents: Vec<AgentRecord> = (0..estimates.len())
        .map(|i| AgentRecord {
            agent_id: format!("f{i}"),
            facts: HostFacts::default(),
            labels: BTreeMap::new(),
            hardware_class: "lab".into(),
        })
        .collect();
    let jobs: Vec<JobRecord> = estimates
        .iter()
        .enumerate()
        .map(|(i, &estimate)| JobRecord {
            agent_id: format!("f{i}"),
            runtime: "gpumemprof_cpu".into(),
            summary: JobSummary {
                job_id: format!("j{i}"),
                status: JobStatus::Completed,
                phase: "overhead".into(),
                done: 1,
                total: 1,
                events: 1,
                checkpoints: 0,
                wall_seconds: 1.0,
                reason: None,
            },
            section: Some(with_overhead_interval(&measured, estimate, 5.0)),
        })
        .collect();
    let quorum = Quorum::new(0.8).unwrap();
    let report = build_fleet_report(&config, &gate, quorum, &agents, jobs.clone(), 0);

    // Four of five must pass: the regressed agent is tolerated.
    assert_eq!(
        (report.verdict, report.passed),
        (Verdict::Pass, false),
        "{}",
        diagnostics(&report)
    );
    let lab = &report.hardware_classes["lab"];
    assert_eq!(
        (lab.passed, lab.gated, lab.quorum, lab.quorum_met),
        (4, 5, 4, true)
    );
    let key = "f4/gpumemprof_cpu.runtime_overhead_pct";
    let check = &report.regression_checks.as_ref().unwrap()[key];
    assert!(!check.passed && !check.inconclusive, "{check:?}");
    assert!(check.p_adjusted.unwrap() < 1e-6, "{check:?}");
    assert_eq!(
        report
            .regression_checks
            .as_ref()
            .unwrap()
            .values()
            .filter(|c| c.p_value.is_some())
            .count(),
        10
    );
    assert!(
        report.failure_diagnostics[0].starts_with(&format!("{key}: delta 30.00%"))
            && report.failure_diagnostics[0]
                .ends_with(" (tolerated: class lab passed 4 of 5, quorum 4)"),
        "{}",
        diagnostics(&report)
    );
    // The regressed agent is also far from its class: named, as advice.
    assert_eq!(lab.outliers.len(), 1, "{:#?}", lab.outliers);
    assert_eq!(
        (
            lab.outliers[0].agent.as_str(),
            lab.outliers[0].metric.as_str()
        ),
        ("f4", "gpumemprof_cpu.runtime_overhead_pct")
    );
    assert!(lab.outliers[0].robust_z.unwrap() > 3.5);
    assert_eq!(report.fleet_advice.len(), 1, "{:#?}", report.fleet_advice);
    assert_matches_schema(&serde_json::to_value(&report).unwrap());

    // The same fleet without a quorum fails.
    let report = build_report(&config, &gate, &agents, &jobs, 0);
    assert_eq!(report.verdict, Verdict::Fail);
    assert!(!report.hardware_classes["lab"].quorum_met);
}
