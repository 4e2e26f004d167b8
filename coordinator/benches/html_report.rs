//! HTML report cost: how long `html::render` takes and how big the page is for a fleet report
//! of many agents. Not a test: it prints figures and asserts none.
//!
//! ```text
//! cargo bench -p fleetgate-coordinator --bench html_report -- [--report PATH] [--agents 100]
//!     [--classes 4] [--rounds 10] [--history 20] [--write PATH]
//! ```
//!
//! `--write PATH` keeps the fleet's page there (to open it in a browser).
//!
//! The fleet is built from a real one-agent report (`--report`, or else a tiny `--mode all`
//! run of `gpumemprof_cpu` made first with the real `fleetgate` binary): its agent's section,
//! runtime sections, metrics and checks are cloned under `--agents` new ids spread over
//! `--classes` hardware classes, each metric scaled by a fixed per-agent factor (0.9 to 1.1) so
//! the class spreads are not flat, and the class summaries are recomputed
//! ([`class_summaries`]). `--history` adds that many history series of 30 runs each.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fleetgate_common::report::{Report, class_summaries};
use fleetgate_coordinator::html::{self, HistoryPoint, HistorySeries};

struct Options {
    report: Option<PathBuf>,
    agents: usize,
    classes: usize,
    rounds: usize,
    history: usize,
    write: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        report: None,
        agents: 100,
        classes: 4,
        rounds: 10,
        history: 20,
        write: None,
    };
    let number = |v: Option<String>, default: usize| {
        v.and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(default)
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report" => o.report = args.next().map(PathBuf::from),
            "--agents" => o.agents = number(args.next(), o.agents),
            "--classes" => o.classes = number(args.next(), o.classes),
            "--rounds" => o.rounds = number(args.next(), o.rounds),
            "--write" => o.write = args.next().map(PathBuf::from),
            "--history" => o.history = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    o
}

/// A one-agent report: the file given, or a tiny run's.
fn one_agent_report(o: &Options, dir: &std::path::Path) -> Report {
    let path = match &o.report {
        Some(path) => path.clone(),
        None => {
            let path = dir.join("one.json");
            let status = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .env("FLEETGATE_LOG", "warn")
                .args([
                    "run",
                    "--mode",
                    "all",
                    "--runtimes",
                    "gpumemprof_cpu",
                    "--iterations",
                    "50",
                    "--no-html",
                    "--artifact-root",
                ])
                .arg(dir.join("artifacts"))
                .arg("--output")
                .arg(&path)
                .status()
                .expect("run fleetgate");
            assert!(
                status.success() || path.is_file(),
                "the tiny run wrote no report"
            );
            path
        }
    };
    serde_json::from_slice(&std::fs::read(&path).expect("read the report")).expect("a v0.4 report")
}

/// `report` with its one agent cloned `agents` times over `classes` hardware classes.
fn fleet(report: &Report, agents: usize, classes: usize) -> Report {
    let (id, section) = report.agents.iter().next().expect("a report with an agent");
    let prefix = format!("{id}/");
    let mut fleet = report.clone();
    fleet.agents.clear();
    fleet.runtimes.clear();
    fleet.metrics.clear();
    fleet.metric_intervals.clear();
    let mut budget_checks = BTreeMap::new();
    let mut regression_checks = BTreeMap::new();
    for i in 0..agents {
        let new_id = format!("agent-{i:03}");
        // A fixed factor per agent, 0.9 to 1.1.
        let factor = 0.9 + 0.2 * ((i * 37) % 101) as f64 / 100.0;
        let rename = |key: &str| key.replacen(&prefix, &format!("{new_id}/"), 1);
        let mut s = section.clone();
        s.hardware_class = format!("class-{}", i % classes);
        s.facts.hostname = new_id.clone();
        fleet.agents.insert(new_id.clone(), s);
        for (k, v) in &report.runtimes {
            fleet.runtimes.insert(rename(k), v.clone());
        }
        for (k, v) in &report.metrics {
            fleet.metrics.insert(rename(k), v * factor);
        }
        for (k, v) in &report.metric_intervals {
            let mut v = *v;
            v.lo *= factor;
            v.hi *= factor;
            fleet.metric_intervals.insert(rename(k), v);
        }
        for (k, c) in report.budget_checks.iter().flatten() {
            let mut c = c.clone();
            c.value *= factor;
            c.lo = c.lo.map(|v| v * factor);
            c.hi = c.hi.map(|v| v * factor);
            budget_checks.insert(rename(k), c);
        }
        for (k, c) in report.regression_checks.iter().flatten() {
            let mut c = c.clone();
            c.current_value *= factor;
            regression_checks.insert(rename(k), c);
        }
    }
    // Each agent's diagnostics and advice, under its new id.
    let every_agent = |lines: &[String]| -> Vec<String> {
        (0..agents)
            .flat_map(|i| {
                lines
                    .iter()
                    .filter(|l| l.starts_with(&prefix) || l.starts_with(&format!("{id}: ")))
                    .map(move |l| l.replacen(id.as_str(), &format!("agent-{i:03}"), 1))
            })
            .collect()
    };
    fleet.failure_diagnostics = every_agent(&report.failure_diagnostics);
    fleet.gate_power = every_agent(&report.gate_power);
    fleet.budget_checks = report.budget_checks.as_ref().map(|_| budget_checks);
    fleet.regression_checks = report.regression_checks.as_ref().map(|_| regression_checks);
    fleet.hardware_classes = class_summaries(&fleet.agents, &fleet.metrics);
    fleet
}

fn history(series: usize) -> Vec<HistorySeries> {
    (0..series)
        .map(|s| HistorySeries {
            metric: format!("gpumemprof_cpu.metric_{s}"),
            hardware_class: format!("class-{}", s % 4),
            points: (0..30)
                .map(|i| HistoryPoint {
                    run_id: format!("run-{i}"),
                    finished_at: format!("2026-11-{:02}T12:00:00Z", i % 28 + 1),
                    value: 100.0 + if i >= 20 { 15.0 } else { 0.0 } + (i % 5) as f64,
                })
                .collect(),
            change_points: vec![20],
        })
        .collect()
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let one = one_agent_report(&o, dir.path());
    let report = fleet(&one, o.agents, o.classes);
    let history = history(o.history);
    println!(
        "fleet: {} agents in {} classes, {} checks, {} runtime sections, {} history series",
        report.agents.len(),
        report.hardware_classes.len(),
        report.budget_checks.iter().flatten().count()
            + report.regression_checks.iter().flatten().count(),
        report.runtimes.len(),
        history.len()
    );
    for (label, agents) in [("1 agent", &one), ("fleet", &report)] {
        let json = serde_json::to_vec_pretty(agents).expect("serialize");
        let mut times: Vec<Duration> = Vec::with_capacity(o.rounds);
        let mut page = String::new();
        for _ in 0..o.rounds {
            let started = Instant::now();
            page = html::render(agents, if label == "fleet" { &history } else { &[] });
            times.push(started.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "{label}: render median {:.1} ms (min {:.1}, max {:.1}, {} rounds); HTML {:.1} KiB ({} <svg>); JSON report {:.1} KiB",
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            o.rounds,
            page.len() as f64 / 1024.0,
            page.matches("<svg").count(),
            json.len() as f64 / 1024.0
        );
        if let (Some(path), "fleet") = (&o.write, label) {
            std::fs::write(path, &page).expect("write the page");
            println!("fleet page written to {}", path.display());
        }
    }
}
