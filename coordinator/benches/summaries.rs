//! Summaries benchmark: how long the JUnit file and the Markdown summary take to make, and how
//! large they are, for a fleet report of many agents. Not a test: it prints figures and asserts
//! none.
//!
//! ```text
//! cargo bench -p fleetgate-coordinator --bench summaries -- [--agents 100] [--repeat 20]
//! ```
//!
//! One tiny run of the real `fleetgate` binary (mode `all`, `gpumemprof_cpu`) gives a real
//! one-agent report; its agent is copied to `--agents` agents of one hardware class (every
//! tenth failing one budget check, with its diagnostic), and `output::junit` and
//! `output::markdown` are timed `--repeat` times each on that report.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::process::Command;
use std::time::Instant;

use fleetgate_common::report::Report;
use fleetgate_coordinator::output;
use serde_json::{Map, Value};

fn option(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A real one-agent report from a tiny run.
fn one_agent_report(dir: &std::path::Path) -> Value {
    let out = dir.join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "run",
            "--mode",
            "all",
            "--runtimes",
            "gpumemprof_cpu",
            "--iterations",
            "50",
            "--set",
            "gpumemprof_cpu.sampling_interval_seconds=60",
        ])
        .arg("--output")
        .arg(&out)
        .arg("--artifact-root")
        .arg(dir.join("artifacts"))
        .env("FLEETGATE_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the fleetgate binary runs");
    assert!(status.success(), "the tiny run failed");
    serde_json::from_slice(&std::fs::read(&out).expect("the run wrote its report"))
        .expect("the report is JSON")
}

/// `report` with its one agent copied to `agents` agents.
fn fleet_of(mut report: Value, agents: usize) -> Value {
    let id = report["agents"]
        .as_object()
        .and_then(|a| a.keys().next().cloned())
        .expect("the report has an agent");
    let ids: Vec<String> = (0..agents).map(|i| format!("agent-{i:04}")).collect();
    let rekey = |map: &Value, failing: bool| -> Value {
        let mut out = Map::new();
        for (key, value) in map.as_object().into_iter().flatten() {
            for (i, new) in ids.iter().enumerate() {
                let renamed = if key == &id {
                    new.clone()
                } else if let Some(rest) = key.strip_prefix(&format!("{id}/")) {
                    format!("{new}/{rest}")
                } else {
                    key.clone()
                };
                let mut value = value.clone();
                if failing && i % 10 == 9 && renamed.ends_with(".final_retained_bytes") {
                    value["passed"] = Value::Bool(false);
                }
                out.insert(renamed, value);
            }
        }
        Value::Object(out)
    };
    for key in ["agents", "runtimes", "metrics", "metric_intervals"] {
        report[key] = rekey(&report[key], false);
    }
    report["budget_checks"] = rekey(&report["budget_checks"], true);
    let mut diagnostics = Vec::new();
    for (i, new) in ids.iter().enumerate() {
        if i % 10 == 9 {
            diagnostics.push(Value::String(format!(
                "{new}/gpumemprof_cpu.final_retained_bytes: 294976 > 1; collector=healthy, collector_failures=0; next knob: rollover_max_bytes"
            )));
        }
    }
    report["failure_diagnostics"] = Value::Array(diagnostics);
    report["verdict"] = Value::String("fail".to_owned());
    report["passed"] = Value::Bool(false);
    for class in report["hardware_classes"]
        .as_object_mut()
        .into_iter()
        .flat_map(|c| c.values_mut())
    {
        class["agents"] = Value::Array(ids.iter().cloned().map(Value::String).collect());
        class["gated"] = Value::from(agents);
        class["passed"] = Value::from(agents - agents / 10);
        class["quorum"] = Value::from(agents);
        class["quorum_met"] = Value::Bool(false);
    }
    report
}

/// Runs `make` `repeat` times; the median and the largest time in ms, and the last output.
fn time(repeat: usize, mut make: impl FnMut() -> String) -> (f64, f64, String) {
    let mut times = Vec::with_capacity(repeat);
    let mut last = String::new();
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        last = make();
        times.push(start.elapsed().as_secs_f64() * 1_000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1], last)
}

fn main() {
    let agents = option("--agents", 100).max(1);
    let repeat = option("--repeat", 20);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let report: Report = serde_json::from_value(fleet_of(one_agent_report(dir.path()), agents))
        .expect("the fleet report loads");
    let checks = report.budget_checks.as_ref().map_or(0, |c| c.len());
    println!(
        "fleet report: {agents} agents, {} jobs, {checks} checks, {} failure lines",
        report.runtimes.len(),
        report.failure_diagnostics.len()
    );
    let (median, max, xml) = time(repeat, || output::junit(&report).expect("JUnit builds"));
    println!(
        "junit:    {median:8.2} ms median, {max:8.2} ms max over {repeat} runs, {:>9} bytes",
        xml.len()
    );
    let (median, max, md) = time(repeat, || output::markdown(&report, Some("report.html")));
    println!(
        "markdown: {median:8.2} ms median, {max:8.2} ms max over {repeat} runs, {:>9} bytes",
        md.len()
    );
}
