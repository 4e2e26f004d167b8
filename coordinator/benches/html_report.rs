//! HTML report and Markdown summary cost: how long `html::render` and `output::markdown`
//! take and how big the page and the summary are, for fleet reports of 10, 1,000 and 10,000
//! agents, once with every agent passing and once with every check failing. Not a test: it
//! prints figures and asserts none.
//!
//! ```text
//! cargo bench -p fleetgate-coordinator --bench html_report -- [--report PATH]
//!     [--agents 10,1000,10000] [--classes 4] [--rounds 5] [--history 20] [--write DIR]
//! ```
//!
//! `--write DIR` keeps each fleet's page and summary there (`fleet-1000-pass.html`,
//! `fleet-1000-fail.md`, ...) to open them.
//!
//! The fleet is built from a real one-agent report (`--report`, or else a tiny `--mode all`
//! run of `gpumemprof_cpu` made first with the real `fleetgate` binary) by the tests' synthetic
//! fleet builder: its agent's section, runtime sections, metrics, checks and gate power lines
//! are cloned under each new id, spread over `--classes` hardware classes, each value scaled by
//! a fixed per-agent factor (0.9 to 1.1) so the class spreads are not flat, and the class
//! summaries are recomputed. The passing fleet has every check passed and no diagnostic; the
//! failing one every check failed, a diagnostic per check (and none other) and no class
//! meeting its quorum. `--history` adds that many history series of 30 runs each.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fleetgate_common::report::Report;
use fleetgate_coordinator::html::{self, HistoryPoint, HistorySeries};
use fleetgate_coordinator::output;

#[path = "../tests/support/synthetic_fleet.rs"]
#[allow(dead_code, reason = "the benchmark's fleets only pass or fail")]
mod synthetic_fleet;
use synthetic_fleet::Fate;

struct Options {
    report: Option<PathBuf>,
    agents: Vec<usize>,
    classes: usize,
    rounds: usize,
    history: usize,
    write: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        report: None,
        agents: vec![10, 1_000, 10_000],
        classes: 4,
        rounds: 5,
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
            "--agents" => {
                let sizes: Vec<usize> = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .filter(|&n| n > 0)
                    .collect();
                if !sizes.is_empty() {
                    o.agents = sizes;
                }
            }
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

/// The median of `rounds` runs of `f` and its last result.
fn timed<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times: Vec<Duration> = Vec::with_capacity(rounds);
    let mut result = None;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        result = Some(f());
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], result.expect("one round at least"))
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let one = one_agent_report(&o, dir.path());
    let history = history(o.history);
    println!(
        "one agent: {} checks, {} runtime sections; {} history series; median of {} rounds",
        one.budget_checks.iter().flatten().count() + one.regression_checks.iter().flatten().count(),
        one.runtimes.len(),
        history.len(),
        o.rounds
    );
    for &agents in &o.agents {
        for failing in [false, true] {
            let fate = if failing { Fate::Fail } else { Fate::Pass };
            let report = synthetic_fleet::fleet(&one, &vec![fate; agents], o.classes);
            let json = serde_json::to_vec(&report).expect("serialize");
            let (html_time, page) = timed(o.rounds, || html::render(&report, &history));
            let (md_time, summary) =
                timed(o.rounds, || output::markdown(&report, Some("report.html")));
            let label = if failing { "fail" } else { "pass" };
            println!(
                "{agents:>6} agents, all {label}: HTML {:>9.1} KiB ({:.2} KiB per agent, {} <svg>) in {:>8.1} ms; Markdown {:>7} characters in {:>6.1} ms; JSON report {:.1} KiB",
                page.len() as f64 / 1024.0,
                page.len() as f64 / 1024.0 / agents as f64,
                page.matches("<svg").count(),
                html_time.as_secs_f64() * 1e3,
                summary.chars().count(),
                md_time.as_secs_f64() * 1e3,
                json.len() as f64 / 1024.0
            );
            if let Some(folder) = &o.write {
                std::fs::create_dir_all(folder).expect("create the folder");
                let name = folder.join(format!("fleet-{agents}-{label}"));
                std::fs::write(name.with_extension("html"), &page).expect("write the page");
                std::fs::write(name.with_extension("md"), &summary).expect("write the summary");
            }
        }
    }
}
