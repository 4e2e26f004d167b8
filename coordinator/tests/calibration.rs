//! Calibrated baselines and injected faults, through the real `fleetgate` binary: `run
//! --repeat N --write-baseline` records a baseline with A/A distributions that the regression
//! gate then applies, and that flags a cost injected into the worker from the environment; a
//! point baseline still loads, with a warning and a note in the report; and an injected leak
//! fails the budget by its trend.

mod support;

use std::path::Path;

use support::assert_matches_schema;
use support::cli::{fleetgate, fleetgate_command, text, tiny_run};

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `fleetgate run` at the tiny size with `extra` arguments, artifacts under `work`.
fn tiny(mode: &str, work: &Path, extra: &[&str]) -> std::process::Output {
    let artifacts = work.join("artifacts");
    let mut args = tiny_run(mode, "gpumemprof_cpu");
    args.extend_from_slice(&["--artifact-root", artifacts.to_str().unwrap()]);
    args.extend_from_slice(extra);
    fleetgate(&args)
}

#[test]
fn repeated_runs_record_a_calibrated_baseline_that_the_regression_gate_applies() {
    let work = tempfile::tempdir().unwrap();
    let calibrated = work.path().join("calibrated.json");
    let first = work.path().join("first.json");
    let result = tiny(
        "all",
        work.path(),
        &[
            "--repeat",
            "3",
            "--write-baseline",
            calibrated.to_str().unwrap(),
            "--output",
            first.to_str().unwrap(),
        ],
    );
    let stdout = text(&result.stdout);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{stdout}{}",
        text(&result.stderr)
    );
    assert!(stdout.contains("\nCalibration: 3 runs: "), "{stdout}");

    let baseline = read_json(&calibrated);
    let metrics = baseline["metrics"].as_object().unwrap();
    let distributions = baseline["distributions"].as_object().unwrap();
    assert_eq!(metrics.len(), 14, "{metrics:?}");
    assert_eq!(
        metrics.keys().collect::<Vec<_>>(),
        distributions.keys().collect::<Vec<_>>()
    );
    for (key, d) in distributions {
        assert_eq!(d["n"], 3, "{key}");
        assert_eq!(d["centre"], metrics[key], "{key}");
        assert!(d["spread"].as_f64().unwrap() >= 0.0, "{key}");
        // Only measured metrics carry the runs' interval half-width: the overhead
        // percentages and the RSS growth's trend.
        let measured = key.ends_with("_pct") || key.ends_with(".rss_growth_per_24h_equiv");
        assert_eq!(d.get("interval_half_width").is_some(), measured, "{key}");
    }
    // The sink makes these exact: three runs, one value.
    assert_eq!(
        distributions["gpumemprof_cpu.rollover_count"]["spread"],
        0.0
    );

    // The regression gate applies the class's noise to every check.
    let report_path = work.path().join("regression.json");
    let result = tiny(
        "all",
        work.path(),
        &[
            "--gate-mode",
            "regression",
            "--baseline",
            calibrated.to_str().unwrap(),
            "--tolerances",
            "docs/benchmarks/v0.4_tolerances.json",
            "--output",
            report_path.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert!(!text(&result.stderr).contains("point baseline"));
    let report = read_json(&report_path);
    assert_matches_schema(&report);
    assert_eq!(
        report["baseline"]["distributions"],
        baseline["distributions"]
    );
    let checks = report["regression_checks"].as_object().unwrap();
    assert_eq!(checks.len(), 14);
    for (key, check) in checks {
        let noise = check["noise"].as_f64().unwrap();
        let material = check["material_shift"].as_f64().unwrap();
        let tolerance = check["max_regression"].as_f64().unwrap();
        assert_eq!(material, tolerance.max(3.0 * noise), "{key}");
    }
    let power = report["gate_power"].as_array().unwrap();
    assert!(
        !power
            .iter()
            .any(|l| l.as_str().unwrap().contains("point baseline")),
        "{power:?}"
    );
    // The same gate flags a monitor made slower from outside the build: 20 ms spun after the
    // tiny run's one tracked sample, several times the whole workload's time.
    let slower = work.path().join("slower.json");
    let artifacts = work.path().join("artifacts");
    let mut args = tiny_run("all", "gpumemprof_cpu");
    args.extend_from_slice(&[
        "--gate-mode",
        "regression",
        "--check",
        "--baseline",
        calibrated.to_str().unwrap(),
        "--tolerances",
        "docs/benchmarks/v0.4_tolerances.json",
        "--artifact-root",
        artifacts.to_str().unwrap(),
        "--output",
        slower.to_str().unwrap(),
    ]);
    let result = fleetgate_command()
        .args(&args)
        .env("FLEETGATE_INJECT_SAMPLE_COST_NS", "20000000")
        .output()
        .unwrap();
    let stdout = text(&result.stdout);
    assert_eq!(
        result.status.code(),
        Some(4),
        "{stdout}{}",
        text(&result.stderr)
    );
    let report = read_json(&slower);
    let (key, check) = report["regression_checks"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("gpumemprof_cpu.runtime_overhead_pct"))
        .unwrap();
    assert_eq!(check["passed"], false, "{key}: {check}");
    assert!(check.get("inconclusive").is_none(), "{key}: {check}");
    assert!(
        check["delta_lo"].as_f64().unwrap() > 0.0
            && check["delta"].as_f64().unwrap() > check["material_shift"].as_f64().unwrap(),
        "{key}: {check}"
    );
}

#[test]
fn a_point_baseline_still_gates_with_a_warning_and_a_note() {
    let work = tempfile::tempdir().unwrap();
    let point = work.path().join("point.json");
    let result = tiny(
        "soak",
        work.path(),
        &[
            "--write-baseline",
            point.to_str().unwrap(),
            "--output",
            work.path().join("first.json").to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert!(read_json(&point).get("distributions").is_none());

    let report_path = work.path().join("regression.json");
    let result = tiny(
        "soak",
        work.path(),
        &[
            "--gate-mode",
            "regression",
            "--baseline",
            point.to_str().unwrap(),
            "--tolerances",
            "docs/benchmarks/v0.4_tolerances.json",
            "--output",
            report_path.to_str().unwrap(),
        ],
    );
    let stderr = text(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("The baseline is a point baseline (no A/A distributions)"),
        "{stderr}"
    );
    let report = read_json(&report_path);
    assert_matches_schema(&report);
    let note = format!(
        "baseline {} is a point baseline (one run, no A/A distributions)",
        point.display()
    );
    assert!(
        report["gate_power"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().starts_with(&note)),
        "{}",
        report["gate_power"]
    );
    let check = &report["regression_checks"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("gpumemprof_cpu.rollover_count"))
        .unwrap()
        .1;
    assert!(check.get("noise").is_none() && check.get("material_shift").is_none());
    assert_eq!(check["passed"], true);
}

#[test]
fn repeat_needs_a_baseline_to_write_and_at_least_three_runs() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("b.json");
    for (extra, message) in [
        (
            vec!["--repeat", "3"],
            "--repeat 3 records a calibrated baseline: give --write-baseline PATH",
        ),
        (
            vec!["--repeat", "2", "--write-baseline", path.to_str().unwrap()],
            "--repeat 2: a calibrated baseline needs at least 3 runs",
        ),
    ] {
        let result = tiny("overhead", work.path(), &extra);
        assert_eq!(result.status.code(), Some(2), "{extra:?}");
        let stderr = text(&result.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
    for bad in ["0", "101", "x"] {
        let result = tiny("overhead", work.path(), &["--repeat", bad]);
        assert_eq!(result.status.code(), Some(2), "--repeat {bad}");
        assert!(text(&result.stderr).contains("--repeat"));
    }
    assert!(!path.exists());
    assert!(!work.path().join("artifacts").exists());
}

#[test]
fn a_leak_injected_into_the_worker_fails_the_budget_by_its_trend() {
    let work = tempfile::tempdir().unwrap();
    let report_path = work.path().join("leak.json");
    let artifacts = work.path().join("artifacts");
    let mut args = tiny_run("soak", "gpumemprof_cpu");
    args.extend_from_slice(&[
        "--check",
        "--artifact-root",
        artifacts.to_str().unwrap(),
        "--output",
        report_path.to_str().unwrap(),
    ]);
    // 1 MiB per sample at the tiny run's 60 s interval: about 1.5 GB per 24 h, over the
    // 256 MB budget.
    let result = fleetgate_command()
        .args(&args)
        .env("FLEETGATE_INJECT_LEAK_BYTES_PER_SAMPLE", "1048576")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&result.stdout), text(&result.stderr));
    assert_eq!(result.status.code(), Some(4), "{stdout}{stderr}");
    assert!(
        stderr.contains("Faults are injected into this job from the environment"),
        "{stderr}"
    );
    let report = read_json(&report_path);
    assert_matches_schema(&report);
    let (key, check) = report["budget_checks"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("gpumemprof_cpu.rss_growth_per_24h_equiv"))
        .unwrap();
    assert_eq!(check["passed"], false, "{key}: {check}");
    assert!(check.get("inconclusive").is_none(), "{check}");
    assert!(check["lo"].as_f64().unwrap() > 256e6, "{check}");
    let runtime = key.split_once('.').unwrap().0;
    let trend = &report["runtimes"][runtime]["soak"]["rss_trend"];
    assert!(
        trend["mann_kendall_p_increasing"].as_f64().unwrap() < 1e-6,
        "{trend}"
    );
    let per_day = 1_048_576.0 / 60.0 * 86_400.0;
    let growth = trend["growth_per_24h_equiv"].as_f64().unwrap();
    assert!(
        (growth / per_day - 1.0).abs() < 0.1,
        "{growth} against {per_day}"
    );

    // A value that is not a number fails the job with a line naming the variable.
    let result = fleetgate_command()
        .args(&args)
        .env("FLEETGATE_INJECT_SAMPLE_COST_NS", "lots")
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(6));
    let report = read_json(&report_path);
    let diagnostics = report["failure_diagnostics"].to_string();
    assert!(
        diagnostics.contains("FLEETGATE_INJECT_SAMPLE_COST_NS must be a whole number from 0 to 1000000000, not 'lots'"),
        "{diagnostics}"
    );
}
