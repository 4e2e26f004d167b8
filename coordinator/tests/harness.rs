//! The `fleetgate run` harness end to end, through the real binary, and the behaviours the
//! shipped gate assets must catch.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use fleetgate_common::report::Report;
use support::cli::{fleetgate, fleetgate_command, text, tiny_run};
use support::{assert_matches_schema, relaxed_budgets, repo};

#[test]
fn a_tiny_run_writes_a_report_that_matches_the_schema_and_its_summaries() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("report.json");
    let md = work.path().join("summary.md");
    let junit = work.path().join("junit.xml");
    let artifacts = work.path().join("artifacts");
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work.path());
    let mut args = tiny_run("all", "gpumemprof_cpu");
    args.extend_from_slice(&[
        "--check",
        "--budgets",
        budgets.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let result = fleetgate(&args);
    let stdout = text(&result.stdout);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&result.stderr)
    );

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_matches_schema(&report);

    assert_eq!(report["passed"], true);
    assert_eq!(report["verdict"], "pass");
    let agents = report["agents"].as_object().unwrap();
    assert_eq!(agents.len(), 1, "the embedded default runs one local agent");
    let agent = agents.keys().next().unwrap().clone();
    assert_eq!(report["agents"][&agent]["status"], "completed");
    assert_eq!(
        report["agents"][&agent]["jobs"]["gpumemprof_cpu"]["status"],
        "completed"
    );
    let class = report["agents"][&agent]["hardware_class"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(class.starts_with("cpu-"), "{class}");
    assert_eq!(
        report["hardware_classes"][&class]["agents"][0],
        agent.as_str()
    );
    assert_eq!(
        report["config"]["runtimes"]["gpumemprof_cpu"]["soak_sample_count"],
        360
    );
    assert_eq!(
        report["config"]["knobs"]["gpumemprof_cpu"]["sampling_interval_seconds"],
        60.0
    );
    assert_eq!(report["metrics"].as_object().unwrap().len(), 14);
    let runtime = format!("{agent}/gpumemprof_cpu");
    assert!(
        report["metrics"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k.starts_with(&format!("{runtime}.")))
    );
    assert_eq!(
        report["budget_checks"][format!("{runtime}.rollover_count")]["threshold_key"],
        "gpumemprof_cpu.rollover_count"
    );
    let soak = &report["runtimes"][&runtime]["soak"];
    assert_eq!(soak["sample_count"], 360);
    assert_eq!(soak["retention_validation"]["passed"], true);
    let overhead = &report["runtimes"][&runtime]["overhead"];
    // At least the default minimum of pairs, each with its added cost, and the estimates.
    let pairs = overhead["trial_count"].as_u64().unwrap();
    assert!(pairs >= 10, "{pairs}");
    assert_eq!(
        overhead["trial_metrics"].as_array().unwrap().len() as u64,
        pairs
    );
    assert_eq!(overhead["pairs"].as_array().unwrap().len() as u64, pairs);
    let wall = &overhead["added_ns_per_sample"]["wall"];
    assert!(wall["lo"].as_f64().unwrap() <= wall["estimate"].as_f64().unwrap());
    assert!(wall["estimate"].as_f64().unwrap() <= wall["hi"].as_f64().unwrap());
    assert_eq!(
        report["metrics"][format!("{runtime}.runtime_overhead_pct")],
        overhead["estimates"]["runtime_overhead_pct"]["estimate"]
    );
    assert!(!artifacts.join("gpumemprof_cpu/.overhead_trials").exists());
    assert!(
        artifacts
            .join("gpumemprof_cpu/overhead/tracked_default/summary.json")
            .exists()
    );

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("Operability report written to: {}", out.display())
    );
    assert_eq!(lines.len(), 1 + 14 + 3 + 2, "{stdout}");
    assert!(lines[1..15].iter().all(|l| l.ends_with("[PASS]")));
    // The overhead percentages show their interval.
    let overhead_line = lines[1..15]
        .iter()
        .find(|l| l.contains(".runtime_overhead_pct: value="))
        .unwrap();
    assert!(overhead_line.contains(" 95% ["), "{overhead_line}");
    assert_eq!(lines[15], "Gate power:");
    assert!(
        lines[16].contains(".runtime_overhead_pct: ") && lines[16].contains("with 95% power"),
        "{stdout}"
    );
    assert!(lines[17].contains(".cpu_overhead_pct: "), "{stdout}");
    assert_eq!(lines[18], "Overall status: PASS");
    assert_eq!(lines[19], "Fleet verdict: pass");

    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.starts_with("## fleetgate v0.4 report: PASS"));
    assert_eq!(md.matches("| pass |").count(), 14);
    let junit = std::fs::read_to_string(&junit).unwrap();
    // The job, its 14 checks, and the fleet's verdict.
    assert!(
        junit.contains("<testsuites name=\"fleetgate\" tests=\"16\" failures=\"0\" errors=\"0\""),
        "{junit}"
    );
    assert!(
        junit.contains(&format!(
            "<testcase name=\"rollover_count\" classname=\"{runtime}\""
        )),
        "{junit}"
    );
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// Runs with a budget file and checks exit 5, a one-line error naming `needle`, and that the
/// artifact root was not created.
fn assert_invalid_input(extra: &[&str], needle: &str) {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let mut args = vec!["run", "--artifact-root", artifacts.to_str().unwrap()];
    args.extend_from_slice(extra);
    let result = fleetgate(&args);
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(5), "{args:?}: {stderr}");
    let line = stderr.trim_end();
    assert!(!line.contains('\n'), "more than one line: {line}");
    assert!(line.starts_with("Error: "), "{line}");
    assert!(line.contains(needle), "{line:?} does not name {needle:?}");
    assert!(
        !artifacts.exists(),
        "artifact root created before validation"
    );
}

#[test]
fn every_bad_asset_is_exit_5_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("missing.json");
    assert_invalid_input(&["--budgets", missing.to_str().unwrap()], "missing.json");
    let bad = write(d, "bad.json", "{not json");
    assert_invalid_input(&["--budgets", bad.to_str().unwrap()], "invalid JSON");
    let array = write(d, "array.json", "[1, 2]");
    assert_invalid_input(
        &["--budgets", array.to_str().unwrap()],
        "must be a JSON object",
    );
    let version = write(
        d,
        "version.json",
        r#"{"version": "v0.3", "budgets": {"a.b": 1}}"#,
    );
    assert_invalid_input(
        &["--budgets", version.to_str().unwrap()],
        "version must be v0.4",
    );
    let nan = write(
        d,
        "nan.json",
        r#"{"version": "v0.4", "budgets": {"gpumemprof_cpu.rollover_count": "lots"}}"#,
    );
    assert_invalid_input(
        &["--budgets", nan.to_str().unwrap()],
        "'budgets.gpumemprof_cpu.rollover_count' is not a number",
    );
    let partial = write(
        d,
        "partial.json",
        r#"{"version": "v0.4", "budgets": {"gpumemprof_cpu.rollover_count": 1}}"#,
    );
    assert_invalid_input(
        &["--budgets", partial.to_str().unwrap()],
        "missing metric keys: gpumemprof_cpu.runtime_overhead_pct",
    );
    // A baseline recorded with another config is refused.
    assert_invalid_input(
        &["--gate-mode", "regression", "--iterations", "50"],
        "Baseline config mismatch: current=",
    );
    let tolerances = write(
        d,
        "tol.json",
        r#"{"version": "v0.4", "tolerances": {"x.y": 1}}"#,
    );
    assert_invalid_input(
        &[
            "--gate-mode",
            "regression",
            "--tolerances",
            tolerances.to_str().unwrap(),
        ],
        "Tolerance file missing metric keys",
    );
    let knobs = write(d, "knobs.json", r#"{"gpumemprof_cpu": {"max_history": 0}}"#);
    assert_invalid_input(
        &["--knobs", knobs.to_str().unwrap()],
        "gpumemprof_cpu.max_history",
    );
    assert_invalid_input(
        &[
            "--set",
            "gpumemprof_cpu.rollover_max_bytes=100000000000",
            "--set",
            "gpumemprof_cpu.retention_max_total_bytes=10",
        ],
        "retention_max_total_bytes must be >= rollover_max_bytes",
    );
}

#[test]
fn an_unwritable_output_is_exit_1_before_the_run() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let result = fleetgate(&[
        "run",
        "--output",
        "/proc/fleetgate/report.json",
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(1));
    let stderr = text(&result.stderr);
    assert!(
        stderr.starts_with(
            "Error: --output /proc/fleetgate/report.json: cannot create a file in /proc: "
        ),
        "{stderr}"
    );
    assert!(!artifacts.exists());
}

#[test]
fn regression_defaults_outside_pr_are_a_usage_error() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let result = fleetgate(&[
        "run",
        "--profile",
        "nightly",
        "--gate-mode",
        "regression",
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(2));
    assert!(text(&result.stderr).contains("pass --baseline and --tolerances explicitly"));
    assert!(!artifacts.exists());
}

#[test]
fn a_quorum_outside_zero_to_one_is_a_usage_error_naming_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let out = work.path().join("report.json");
    for value in ["0", "1.5", "NaN", "most"] {
        let result = fleetgate(&[
            "run",
            "--quorum",
            value,
            "--output",
            out.to_str().unwrap(),
            "--artifact-root",
            artifacts.to_str().unwrap(),
        ]);
        let stderr = text(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "invalid value '{value}' for '--quorum <FRACTION>': must be a fraction greater than 0 and at most 1 (1: every agent of a class), got {value}"
            )),
            "{value}: {stderr}"
        );
        assert!(!artifacts.exists() && !out.exists());
    }
}

#[test]
fn a_failed_gate_is_exit_4_with_check_and_names_the_next_knob() {
    let work = tempfile::tempdir().unwrap();
    let budgets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("docs/benchmarks/v0.4_operating_budget.json")).unwrap(),
    )
    .unwrap();
    let mut budgets = budgets;
    // Every soak leaves telemetry behind.
    budgets["budgets"]["gpumemprof_cpu.final_retained_bytes"] = serde_json::json!(1);
    let path = write(work.path(), "tight.json", &budgets.to_string());
    let out = work.path().join("r.json");
    let artifacts = work.path().join("a");
    let mut args = tiny_run("soak", "gpumemprof_cpu");
    args.extend_from_slice(&[
        "--check",
        "--budgets",
        path.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    let result = fleetgate(&args);
    let stdout = text(&result.stdout);
    assert_eq!(result.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.lines().any(
            |l| l.contains("gpumemprof_cpu.final_retained_bytes: value=")
                && l.ends_with(" max=1 [FAIL]")
        ),
        "{stdout}"
    );
    let failure = stdout
        .lines()
        .find(|l| {
            l.starts_with("- ")
                && l.contains("/gpumemprof_cpu.final_retained_bytes: ")
                && l.contains(" > 1; collector=healthy, collector_failures=0, rollover_count=")
        })
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        failure.ends_with("; next knob: rollover_max_bytes"),
        "{failure}"
    );
    assert!(
        stdout.ends_with("Overall status: FAIL\nFleet verdict: fail\n"),
        "{stdout}"
    );
    // Without --check the verdict does not change the exit code.
    args.retain(|a| *a != "--check");
    assert_eq!(fleetgate(&args).status.code(), Some(0));
}

/// `fleetgate ARGS` with `TENSORFLOW_DIR` set to `tensorflow_dir` (None: as the test runs).
fn fleetgate_tf(args: &[&str], tensorflow_dir: Option<&Path>) -> Output {
    let mut cmd = fleetgate_command();
    cmd.args(args);
    if let Some(dir) = tensorflow_dir {
        cmd.env("TENSORFLOW_DIR", dir);
    }
    cmd.output().unwrap()
}

#[test]
fn tfmemprof_cpu_runs_on_real_tensorflow_with_the_reference_counters() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("tf.json");
    let artifacts = work.path().join("artifacts");
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work.path());
    let result = fleetgate_tf(
        &[
            "run",
            "--budgets",
            budgets.to_str().unwrap(),
            "--runtimes",
            "tfmemprof_cpu",
            "--mode",
            "all",
            "--iterations",
            "200",
            "--check",
            "--output",
            out.to_str().unwrap(),
            "--artifact-root",
            artifacts.to_str().unwrap(),
        ],
        None,
    );
    let stdout = text(&result.stdout);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&result.stderr)
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let (key, section) = report.runtimes.iter().next().unwrap();
    assert!(key.ends_with("/tfmemprof_cpu"), "{key}");
    let soak = section.soak.as_ref().unwrap();
    // 6 h at 1.0 s: 21,600 samples, 21,602 events; the 10,000-entry windows drop the rest.
    assert_eq!(soak.sample_count, 21_600);
    assert_eq!(soak.history_dropped_events, 21_602 - 10_000);
    assert_eq!(soak.history_dropped_samples, 21_600 - 10_000);
    assert_eq!(soak.history_retained_samples, 10_000);
    assert_eq!(
        (
            soak.rollover_count,
            soak.final_retained_files,
            soak.pruned_segment_count
        ),
        (2, 3, 0)
    );
    assert!(soak.retention_validation.passed);
    assert_eq!(soak.collector_health_status, "healthy");
    // What TensorFlow itself reported is in the tracker's statistics.
    assert!(
        soak.stats.get("peak_memory_bytes").as_u64().unwrap() > 200 << 20,
        "TensorFlow is loaded: {}",
        soak.stats.to_value()
    );
    let overhead = section.overhead.as_ref().unwrap();
    assert_eq!(overhead.scenarios.tracked_default.sample_count, Some(20));
    let manifest = std::path::Path::new(&soak.output_path);
    // The first segment by its index, not by the directory's order (the filesystem's).
    let segment = std::fs::read_dir(manifest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let index: u64 = name
                .strip_prefix("segment-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((index, p))
        })
        .min_by_key(|(index, _)| *index)
        .map(|(_, p)| p)
        .unwrap();
    let first_sample: serde_json::Value = std::fs::read_to_string(&segment)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event_type"] == "sample")
        .unwrap();
    assert_eq!(
        first_sample["collector"],
        "fleetgate.tensorflow.memory_tracker"
    );
    assert_eq!(
        first_sample["device_total_bytes"], 268_435_456,
        "TensorFlow's CPU device limit"
    );
    // TensorFlow's step stats always carry the step's peak and live bytes. Its allocator's
    // bytes-in-use figure is filled only where the allocator keeps statistics (else 0), and it
    // counts the whole allocator (the variable too), not just the step, so it is not bounded
    // by the step's peak: only its presence is asserted.
    let field = |key: &str| first_sample[key].as_u64().unwrap();
    assert!(field("allocator_reserved_bytes") > 0, "{first_sample}");
    assert!(field("allocator_active_bytes") > 0, "{first_sample}");
    assert!(
        first_sample["allocator_allocated_bytes"].is_u64(),
        "{first_sample}"
    );
    assert_eq!(report.verdict, fleetgate_common::report::Verdict::Pass);
}

#[test]
fn without_libtensorflow_the_runtime_is_unavailable_and_the_verdict_inconclusive() {
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("no-tensorflow");
    std::fs::create_dir_all(&empty).unwrap();
    let out = work.path().join("r.json");
    let artifacts = work.path().join("artifacts");
    let mut args = tiny_run("soak", "gpumemprof_cpu,tfmemprof_cpu");
    args.extend_from_slice(&[
        "--check",
        "--output",
        out.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    let result = fleetgate_tf(&args, Some(&empty));
    let stdout = text(&result.stdout);
    assert_eq!(result.status.code(), Some(6), "{stdout}");
    let report: Report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let (key, section) = report
        .runtimes
        .iter()
        .find(|(k, _)| k.ends_with("/tfmemprof_cpu"))
        .unwrap();
    assert_eq!(
        section.status,
        fleetgate_common::report::RuntimeStatus::Unavailable
    );
    let reason = section.reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!(
            "libtensorflow.so not found in {}",
            empty.display()
        )),
        "{reason}"
    );
    assert!(
        report
            .failure_diagnostics
            .iter()
            .any(|d| d.starts_with(&format!("{key}: unavailable - libtensorflow.so not found"))),
        "{:#?}",
        report.failure_diagnostics
    );
    // The other runtime still ran and passed its checks; the fleet proves nothing either way.
    assert!(
        report
            .runtimes
            .iter()
            .any(|(k, s)| k.ends_with("/gpumemprof_cpu") && s.soak.is_some())
    );
    assert_eq!(
        report.verdict,
        fleetgate_common::report::Verdict::Inconclusive
    );
    assert!(
        stdout.ends_with("Fleet verdict: inconclusive\n"),
        "{stdout}"
    );
}

/// Runs with `extra` and checks exit 5, exactly `line` on stderr, and that nothing ran.
fn assert_refused_with(extra: &[&str], line: &str) {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let mut args = vec!["run", "--artifact-root", artifacts.to_str().unwrap()];
    args.extend_from_slice(extra);
    let result = fleetgate(&args);
    assert_eq!(result.status.code(), Some(5), "{args:?}");
    assert_eq!(text(&result.stderr), format!("{line}\n"), "{args:?}");
    assert!(!artifacts.exists(), "something ran: {args:?}");
}

#[test]
fn hostile_asset_and_knob_files_are_refused_with_one_exact_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let budget = |metrics: &str| format!(r#"{{"version": "v0.4", "budgets": {{{metrics}}}}}"#);

    let huge = path("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    assert_refused_with(
        &["--budgets", &huge],
        &format!(
            "Error: {huge}: Budget file cannot be read: larger than the 4 MiB limit for input files"
        ),
    );
    let deep = write(
        d,
        "deep.json",
        &format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
    );
    let deep = deep.to_str().unwrap();
    assert_refused_with(
        &["--budgets", deep],
        &format!(
            "Error: {deep}: Budget file cannot be read: nested deeper than 32 levels at line 1 column 33"
        ),
    );
    let latin1 = path("latin1.json");
    std::fs::write(
        &latin1,
        b"{\"version\": \"v0.4\", \"budgets\": {\"caf\xe9\": 1}}",
    )
    .unwrap();
    assert_refused_with(
        &["--budgets", &latin1],
        &format!(
            "Error: {latin1}: Budget file cannot be read: not UTF-8 (invalid byte at line 1 column 37)"
        ),
    );
    let nan = write(
        d,
        "nan.json",
        &budget(r#""gpumemprof_cpu.rollover_count": NaN"#),
    );
    let nan = nan.to_str().unwrap();
    assert_refused_with(
        &["--budgets", nan],
        &format!(
            "Error: {nan}: Budget file cannot be read: NaN is not a JSON number (line 1 column 66)"
        ),
    );
    let negative = write(
        d,
        "neg.json",
        &budget(r#""gpumemprof_cpu.rollover_count": -3"#),
    );
    let negative = negative.to_str().unwrap();
    assert_refused_with(
        &["--budgets", negative],
        &format!(
            "Error: {negative}: Budget file key 'budgets.gpumemprof_cpu.rollover_count' must not be negative: -3"
        ),
    );
    let twice = write(
        d,
        "twice.json",
        &budget(r#""gpumemprof_cpu.rollover_count": 9, "gpumemprof_cpu.rollover_count": 1"#),
    );
    let twice = twice.to_str().unwrap();
    assert_refused_with(
        &["--budgets", twice],
        &format!(
            "Error: {twice}: Budget file cannot be read: invalid JSON: key 'gpumemprof_cpu.rollover_count' appears twice at line 1 column 99"
        ),
    );

    // Regression assets: an Infinity in the baseline, a negative allowed increase.
    let tolerances = repo().join("docs/benchmarks/v0.4_tolerances.json");
    let tolerances = tolerances.to_str().unwrap();
    let inf = write(
        d,
        "inf.json",
        r#"{"version": "v0.4", "config": {}, "metrics": {"a.b": -Infinity}}"#,
    );
    let inf = inf.to_str().unwrap();
    assert_refused_with(
        &[
            "--gate-mode",
            "regression",
            "--baseline",
            inf,
            "--tolerances",
            tolerances,
        ],
        &format!(
            "Error: {inf}: Baseline file cannot be read: Infinity is not a JSON number (line 1 column 55)"
        ),
    );
    let baseline = repo().join("docs/benchmarks/v0.4_baseline.json");
    let baseline = baseline.to_str().unwrap();
    let neg_tol = write(
        d,
        "negtol.json",
        r#"{"version": "v0.4", "tolerances": {"gpumemprof_cpu.rollover_count": -0.5}}"#,
    );
    let neg_tol = neg_tol.to_str().unwrap();
    assert_refused_with(
        &[
            "--gate-mode",
            "regression",
            "--baseline",
            baseline,
            "--tolerances",
            neg_tol,
        ],
        &format!(
            "Error: {neg_tol}: Tolerance file key 'tolerances.gpumemprof_cpu.rollover_count' must not be negative: -0.5"
        ),
    );

    // Knob files.
    let knobs = write(
        d,
        "knobs.json",
        r#"{"gpumemprof_cpu": {"max_history": 100, "max_history": 1}}"#,
    );
    let knobs = knobs.to_str().unwrap();
    assert_refused_with(
        &["--knobs", knobs],
        &format!(
            "Error: {knobs}: (file): invalid JSON: key 'max_history' appears twice at line 1 column 53"
        ),
    );
    let knobs = write(
        d,
        "negknobs.json",
        r#"{"gpumemprof_cpu": {"max_history": -5}}"#,
    );
    let knobs = knobs.to_str().unwrap();
    assert_refused_with(
        &["--knobs", knobs],
        &format!("Error: {knobs}: gpumemprof_cpu.max_history: must be an integer >= 1, got '-5'"),
    );
}

#[test]
fn transport_misuse_is_refused_with_one_exact_line_before_anything_connects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let not_pem = write(d, "cert.pem", "not a certificate");
    let not_pem = not_pem.to_str().unwrap();
    let missing = d.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let cases: [(&[&str], i32, String); 6] = [
        (
            &["serve", "--listen", "127.0.0.1:0"],
            2,
            "Error: serve needs --tls-cert and --tls-key (a lab set: `fleetgate certs`), or --plaintext to serve without TLS".to_owned(),
        ),
        (
            &["serve", "--listen", "127.0.0.1:0", "--tls-cert", not_pem, "--tls-key", not_pem],
            2,
            format!("Error: --tls-cert {not_pem}: not a PEM file"),
        ),
        (
            &["serve", "--listen", "127.0.0.1:0", "--tls-cert", missing, "--tls-key", missing],
            2,
            format!("Error: --tls-cert {missing}: No such file or directory (os error 2)"),
        ),
        (
            &["agents", "--coordinator", "http://127.0.0.1:9"],
            2,
            "Error: --coordinator http://127.0.0.1:9: plaintext URL; use https:// (TLS), or pass --plaintext to send tokens and results unencrypted".to_owned(),
        ),
        (
            &["agents", "--coordinator", "https://127.0.0.1:9", "--ca-file", not_pem],
            2,
            format!("Error: --ca-file {not_pem}: not a PEM file"),
        ),
        (
            &["run", "--plaintext", "--mode", "soak"],
            2,
            "Error: --plaintext and --ca-file need --coordinator (the embedded default always uses TLS)".to_owned(),
        ),
    ];
    for (args, code, line) in cases {
        let result = fleetgate(args);
        assert_eq!(
            result.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&result.stderr)
        );
        assert_eq!(text(&result.stderr), format!("{line}\n"), "{args:?}");
    }
}
