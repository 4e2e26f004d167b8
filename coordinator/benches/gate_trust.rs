//! Gate-trust benchmark: how often the shipped gates cry wolf, and how often they catch a
//! known regression, measured end to end with the real `fleetgate` binary. Not a test: it
//! prints figures and asserts none.
//!
//! ```text
//! cargo bench -p fleetgate-coordinator --bench gate_trust -- [--aa 200] [--per-size 40]
//!     [--costs 300,1000,3000] [--leaks 100,300] [--calibration-runs 10] [--json PATH]
//!     [--scratch-root DIR]
//! ```
//!
//! `--scratch-root DIR` passes `--overhead-scratch-root DIR` to every run (calibration
//! included), e.g. a directory on `/dev/shm`.
//!
//! 1. A calibrated baseline is recorded first, in a process of its own: `fleetgate run
//!    --profile pr --runtimes gpumemprof_cpu --repeat <calibration-runs> --write-baseline`.
//! 2. A/A: `--aa` runs of the same build, gated against that baseline and the shipped
//!    tolerances (the regression gate) and re-gated against the shipped budgets (the budget
//!    gate, by the report builder on the same measured sections).
//! 3. Added cost: `--per-size` runs for each size in `--costs`, the worker spinning that many
//!    ns after every tracked overhead sample (`FLEETGATE_INJECT_SAMPLE_COST_NS`).
//! 4. Leaks: `--per-size` runs for each size in `--leaks`, the worker retaining that many bytes
//!    after every soak sample (`FLEETGATE_INJECT_LEAK_BYTES_PER_SAMPLE`).
//!
//! For each row: the share of runs whose gate failed and was inconclusive, with Clopper–Pearson
//! 95 % intervals (the A/A rows' false-alarm bound is one-sided), and the spread of the
//! measured metric.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]
#![expect(clippy::print_stderr, reason = "a benchmark shows its progress")]

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetgate_common::gate::{self, Gate};
use fleetgate_common::report::{AgentRecord, JobRecord, Report, build_report};
use fleetgate_common::stats::{self, IntervalKind};

struct Options {
    aa: u64,
    per_size: u64,
    costs: Vec<u64>,
    leaks: Vec<u64>,
    calibration_runs: u64,
    json: Option<PathBuf>,
    scratch_root: Option<String>,
}

fn list(value: Option<String>) -> Vec<u64> {
    value
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn options() -> Options {
    let mut o = Options {
        aa: 200,
        per_size: 40,
        costs: vec![300, 1_000, 3_000],
        leaks: vec![100, 300],
        calibration_runs: 10,
        json: None,
        scratch_root: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let number =
            |v: Option<String>, default: u64| v.and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--aa" => o.aa = number(args.next(), o.aa),
            "--per-size" => o.per_size = number(args.next(), o.per_size),
            "--costs" => o.costs = list(args.next()),
            "--leaks" => o.leaks = list(args.next()),
            "--calibration-runs" => o.calibration_runs = number(args.next(), o.calibration_runs),
            "--json" => o.json = args.next().map(PathBuf::from),
            "--scratch-root" => o.scratch_root = args.next(),
            _ => {}
        }
    }
    o
}

/// The gated metrics a row is about.
#[derive(Clone, Copy)]
enum Focus {
    /// Every check (the verdict).
    Verdict,
    /// The overhead percentages.
    Overhead,
    /// The RSS growth.
    Leak,
}

impl Focus {
    fn covers(self, key: &str) -> bool {
        match self {
            Focus::Verdict => true,
            Focus::Overhead => key.ends_with("_overhead_pct"),
            Focus::Leak => key.ends_with(".rss_growth_per_24h_equiv"),
        }
    }
}

/// How one gate decided one run, over the metrics of a [`Focus`].
#[derive(Default, Clone, Copy)]
struct Outcome {
    failed: bool,
    inconclusive: bool,
}

fn outcome(report: &Report, focus: Focus) -> Outcome {
    if let Focus::Verdict = focus {
        return Outcome {
            failed: report.verdict == fleetgate_common::report::Verdict::Fail,
            inconclusive: report.verdict == fleetgate_common::report::Verdict::Inconclusive,
        };
    }
    let covered: Vec<(bool, bool)> = checks(report)
        .filter(|(k, _, _)| focus.covers(k))
        .map(|(_, p, i)| (p, i))
        .collect();
    let failed = covered.iter().any(|&(p, i)| !p && !i);
    Outcome {
        failed,
        inconclusive: !failed && covered.iter().any(|&(_, i)| i),
    }
}

/// Every check of `report`, budget and regression: (key, passed, inconclusive).
fn checks(report: &Report) -> impl Iterator<Item = (&String, bool, bool)> {
    let budget = report
        .budget_checks
        .iter()
        .flatten()
        .map(|(k, c)| (k, c.passed, c.inconclusive));
    let regression = report
        .regression_checks
        .iter()
        .flatten()
        .map(|(k, c)| (k, c.passed, c.inconclusive));
    budget.chain(regression)
}

/// `report`'s measured sections gated again with `gate`.
fn regate(report: &Report, gate: &Gate) -> Report {
    let agents: Vec<AgentRecord> = report
        .agents
        .iter()
        .map(|(id, a)| AgentRecord {
            agent_id: id.clone(),
            facts: a.facts.clone(),
            labels: a.labels.clone(),
            hardware_class: a.hardware_class.clone(),
        })
        .collect();
    let jobs: Vec<JobRecord> = report
        .agents
        .iter()
        .flat_map(|(id, a)| {
            a.jobs.iter().map(move |(runtime, summary)| JobRecord {
                agent_id: id.clone(),
                runtime: runtime.clone(),
                summary: summary.clone(),
                section: report.runtimes.get(&format!("{id}/{runtime}")).cloned(),
            })
        })
        .collect();
    build_report(&report.config, gate, &agents, &jobs, 0)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the runs work: their artifacts under `dir`, their overhead trial files under
/// `scratch` if given.
#[derive(Clone, Copy)]
struct Place<'a> {
    dir: &'a Path,
    scratch: Option<&'a str>,
}

/// `fleetgate run --profile pr --runtimes gpumemprof_cpu` with `extra` and `env`, at `place`.
fn fleetgate(place: Place<'_>, extra: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let Place { dir, scratch } = place;
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("FLEETGATE_INJECT_"))
        {
            command.env_remove(name);
        }
    }
    command
        .current_dir(repo())
        .env("FLEETGATE_LOG", "error")
        .args(["run", "--profile", "pr", "--runtimes", "gpumemprof_cpu"])
        .args([
            "--artifact-root",
            dir.join("artifacts").to_str().unwrap_or_default(),
        ])
        .args(
            scratch
                .map(|s| ["--overhead-scratch-root", s])
                .into_iter()
                .flatten(),
        )
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("cannot run fleetgate: {e}"))
}

/// One row of the table.
struct Row {
    name: String,
    focus: Focus,
    runs: u64,
    regression: (u64, u64),
    budget: (u64, u64),
    values: Vec<f64>,
    metric: &'static str,
    /// `<gate> <runtime>.<metric> <outcome>` → runs, for every check that did not pass.
    misses: std::collections::BTreeMap<String, u64>,
}

/// Counts every check of `report` that did not pass, under `gate`.
fn tally(report: &Report, gate: &str, misses: &mut std::collections::BTreeMap<String, u64>) {
    let plain = |k: &str| k.split_once('/').map_or(k, |(_, rest)| rest).to_owned();
    for (key, passed, inconclusive) in checks(report) {
        if !passed {
            let what = if inconclusive { "inconclusive" } else { "fail" };
            *misses
                .entry(format!("{gate} {} {what}", plain(key)))
                .or_default() += 1;
        }
    }
}

fn share(k: u64, n: u64, kind: IntervalKind) -> String {
    match stats::clopper_pearson(k, n, 0.95, kind) {
        Ok(e) => format!(
            "{:.1} % [{:.1}, {:.1}]",
            100.0 * e.estimate,
            100.0 * e.lo,
            100.0 * e.hi
        ),
        Err(_) => "-".to_owned(),
    }
}

fn measure(
    place: Place<'_>,
    name: String,
    focus: Focus,
    runs: u64,
    env: &[(&str, String)],
    gates: (&Path, &Gate),
    metric: &'static str,
) -> Row {
    let (baseline, budget_gate) = gates;
    let mut row = Row {
        name,
        focus,
        runs: 0,
        regression: (0, 0),
        budget: (0, 0),
        values: Vec::new(),
        metric,
        misses: std::collections::BTreeMap::new(),
    };
    let output = place.dir.join("report.json");
    for i in 0..runs {
        let result = fleetgate(
            place,
            &[
                "--gate-mode",
                "regression",
                "--baseline",
                baseline.to_str().unwrap_or_default(),
                "--output",
                output.to_str().unwrap_or_default(),
            ],
            env,
        );
        let report: Report = match std::fs::read(&output)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(r) if result.status.success() => r,
            _ => {
                eprintln!(
                    "{}: run {} wrote no report: {}",
                    row.name,
                    i + 1,
                    String::from_utf8_lossy(&result.stderr)
                );
                continue;
            }
        };
        // The next run writes it anew; a stale one must not be read as its report.
        std::fs::remove_file(&output).ok();
        row.runs += 1;
        let r = outcome(&report, focus);
        row.regression.0 += u64::from(r.failed);
        row.regression.1 += u64::from(r.inconclusive);
        tally(&report, "regression", &mut row.misses);
        let budget_report = regate(&report, budget_gate);
        tally(&budget_report, "budget", &mut row.misses);
        let b = outcome(&budget_report, focus);
        row.budget.0 += u64::from(b.failed);
        row.budget.1 += u64::from(b.inconclusive);
        if let Some((_, v)) = report.metrics.iter().find(|(k, _)| k.ends_with(metric)) {
            row.values.push(*v);
        }
        if (i + 1) % 10 == 0 {
            eprintln!("{}: {}/{runs}", row.name, i + 1);
        }
    }
    row
}

fn main() {
    let o = options();
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path();
    let baseline = dir.join("calibrated.json");
    let calibration_runs = o.calibration_runs.to_string();
    eprintln!("calibrating: {calibration_runs} runs");
    let scratch = o.scratch_root.as_deref();
    let place = Place { dir, scratch };
    let result = fleetgate(
        place,
        &[
            "--repeat",
            &calibration_runs,
            "--write-baseline",
            baseline.to_str().unwrap_or_default(),
            "--output",
            dir.join("calibration.json").to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert!(
        baseline.exists(),
        "calibration failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let budgets = gate::load_budgets(&repo().join("docs/benchmarks/v0.4_operating_budget.json"))
        .expect("the shipped budgets");
    let budget_gate = Gate::Budget(budgets);
    let calibrated = gate::load_baseline(&baseline).expect("the calibrated baseline");
    let gates = (baseline.as_path(), &budget_gate);

    let mut rows = Vec::new();
    rows.push(measure(
        place,
        "A/A (verdict)".into(),
        Focus::Verdict,
        o.aa,
        &[],
        gates,
        ".runtime_overhead_pct",
    ));
    for &ns in &o.costs {
        let env = [("FLEETGATE_INJECT_SAMPLE_COST_NS", ns.to_string())];
        let name = format!("+{ns} ns per tracked sample (overhead checks)");
        rows.push(measure(
            place,
            name,
            Focus::Overhead,
            o.per_size,
            &env,
            gates,
            ".runtime_overhead_pct",
        ));
    }
    for &bytes in &o.leaks {
        let env = [("FLEETGATE_INJECT_LEAK_BYTES_PER_SAMPLE", bytes.to_string())];
        let name = format!("leak {bytes} B per soak sample (RSS growth checks)");
        rows.push(measure(
            place,
            name,
            Focus::Leak,
            o.per_size,
            &env,
            gates,
            ".rss_growth_per_24h_equiv",
        ));
    }

    let machine = fleetgate_common::host::host_name();
    println!(
        "gate trust on {machine}: calibrated baseline of {} runs",
        o.calibration_runs
    );
    for (key, d) in &calibrated.distributions {
        if key.ends_with("_pct") || key.ends_with("rss_growth_per_24h_equiv") {
            println!(
                "  {key}: centre {:.2}, spread {:.2}, noise {:.2}, run interval half-width {}",
                d.centre,
                d.spread,
                d.noise(),
                d.interval_half_width
                    .map_or("-".to_owned(), |w| format!("{w:.2}"))
            );
        }
    }
    println!(
        "| scenario | runs | regression: fail | regression: inconclusive | budget: fail | budget: inconclusive | metric median (min–max) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut json_rows = Vec::new();
    for row in &rows {
        let aa = matches!(row.focus, Focus::Verdict);
        // A false alarm is bounded from above; a detection rate gets both bounds.
        let kind = if aa {
            IntervalKind::Upper
        } else {
            IntervalKind::TwoSided
        };
        let spread = match (
            stats::median(&row.values),
            stats::quantiles(&row.values, &[0.0, 1.0]),
        ) {
            (Ok(m), Ok(q)) => format!("{m:.1} ({:.1}–{:.1})", q[0], q[1]),
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} {spread} |",
            row.name,
            row.runs,
            share(row.regression.0, row.runs, kind),
            share(row.regression.1, row.runs, IntervalKind::TwoSided),
            share(row.budget.0, row.runs, kind),
            share(row.budget.1, row.runs, IntervalKind::TwoSided),
            row.metric.trim_start_matches('.'),
        );
        json_rows.push(serde_json::json!({
            "scenario": row.name,
            "runs": row.runs,
            "regression_fail": row.regression.0,
            "regression_inconclusive": row.regression.1,
            "budget_fail": row.budget.0,
            "budget_inconclusive": row.budget.1,
            "metric": row.metric.trim_start_matches('.'),
            "values": row.values,
            "checks_not_passed": row.misses,
        }));
    }
    for row in &rows {
        if !row.misses.is_empty() {
            println!("{}: checks that did not pass (runs):", row.name);
            for (check, runs) in &row.misses {
                println!("  {check}: {runs}");
            }
        }
    }
    if let Some(path) = &o.json {
        let document = serde_json::json!({
            "host": machine,
            "calibration_runs": o.calibration_runs,
            "scratch_root": o.scratch_root,
            "distributions": calibrated.distributions,
            "rows": json_rows,
        });
        if let Err(e) = std::fs::write(
            path,
            serde_json::to_vec_pretty(&document).unwrap_or_default(),
        ) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}
