//! The HTML report: one self-contained page (inline CSS and SVG, no script, nothing fetched)
//! that a person reads instead of the JSON. The verdict and why come first; then each hardware
//! class with the spread of every metric over its agents; then each agent with its checks
//! against their budgets or baselines (a table with an interval bar per check), its soak's RSS
//! checkpoints with the fitted trend, its overhead pairs and its retention churn; then, when
//! history is given, each metric's values over past runs with their change points.
//!
//! A fleet of more than [`DETAILED_AGENTS`] agents is folded so the page stays readable and
//! small: boxes only for the agents that did not pass (failures first) and the outliers, at
//! most [`DETAILED_AGENTS`] of them, every other agent a row of a folded table, and long lists
//! folded after their first lines. The page is built in one pass over the report: each check,
//! runtime section and diagnostic is given to its agent by a lookup of its prefixes among the
//! agent ids, never by comparing it with every id.
//!
//! The page is a minijinja template (`html/report.html`) with HTML auto-escaping, so every
//! string from the report (agent ids, labels, diagnostics) is escaped; the pictures come from
//! `svg`, which escapes what it draws.

mod svg;

use std::collections::{BTreeMap, HashSet};

use fleetgate_common::report::{
    AgentIds, AgentSection, AgentStatus, BudgetCheck, RegressionCheck, Report, RuntimeSection,
    SoakBlock, Verdict, format_value,
};
use serde::Serialize;

/// One metric's values over past runs of one hardware class (from the run history).
pub use crate::history::{Series as HistorySeries, SeriesPoint as HistoryPoint};

const TEMPLATE: &str = include_str!("html/report.html");

/// Renders `report` (and `history`, which may be empty) as one self-contained HTML page.
pub fn render(report: &Report, history: &[HistorySeries]) -> String {
    let page = Page::new(report, history);
    let mut env = minijinja::Environment::new();
    // `.html`: every `{{ }}` is HTML-escaped unless marked `|safe` (the SVG built here).
    let rendered = env
        .add_template("report.html", TEMPLATE)
        .and_then(|()| env.get_template("report.html"))
        .and_then(|t| t.render(&page));
    match rendered {
        Ok(html) => html,
        // The template is built in and tested, so this only guards against a template bug:
        // the page still says what went wrong.
        Err(e) => format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fleetgate report</title></head>\
             <body><p>The HTML report could not be rendered: {}</p></body></html>\n",
            svg::escape(&e.to_string())
        ),
    }
}

// === the page's view of the report ===

/// Fleets of at most this many agents show every agent as a box with its checks and charts.
/// A larger fleet shows at most this many boxes, for the agents that did not pass (failures
/// first) and then the outliers; every other agent is one row of a folded table.
pub const DETAILED_AGENTS: usize = 100;

/// Fleets of more than this many agents open only the boxes of the agents that did not pass.
const OPEN_AGENTS: usize = 6;

/// In a fleet of more than [`DETAILED_AGENTS`], a list longer than this (diagnostics, advice, a
/// class's outliers) shows its first lines and folds the rest.
const SHOWN_LINES: usize = 20;

/// In a fleet of more than [`DETAILED_AGENTS`], a class of more than this many agents names its
/// first ones only.
const NAMED_CLASS_AGENTS: usize = 20;

#[derive(Debug, Serialize)]
struct Page {
    version: String,
    timestamp: String,
    profile: String,
    mode: String,
    gate_mode: String,
    verdict: &'static str,
    verdict_text: &'static str,
    passed: bool,
    agent_count: usize,
    class_count: usize,
    tally: Tally,
    failures: Lines,
    inconclusive: Lines,
    incomplete_agents: Lines,
    gate_power: Lines,
    fleet_advice: Lines,
    classes: Vec<ClassView>,
    /// The agents shown as a box with their checks and charts.
    agents: Vec<AgentView>,
    /// The other agents (only in a fleet of more than [`DETAILED_AGENTS`]), a row each.
    folded: Vec<AgentRow>,
    /// The folded agents counted by outcome.
    folded_tally: Tally,
    /// [`DETAILED_AGENTS`], for the note above the boxes.
    detailed_limit: usize,
    other_checks: Vec<CheckView>,
    history: Vec<HistoryView>,
}

#[derive(Debug, Default, Serialize)]
struct Tally {
    total: usize,
    pass: usize,
    fail: usize,
    inconclusive: usize,
}

impl Tally {
    fn add(&mut self, outcome: &str) {
        self.total += 1;
        match outcome {
            "pass" => self.pass += 1,
            "fail" => self.fail += 1,
            _ => self.inconclusive += 1,
        }
    }
}

/// A list of lines: whole, or when `fold` and it has more than [`SHOWN_LINES`], its first ones
/// `shown` and the rest `folded`.
#[derive(Debug, Serialize)]
struct Lines {
    shown: Vec<String>,
    folded: Vec<String>,
}

impl Lines {
    fn new(mut lines: Vec<String>, fold: bool) -> Self {
        let folded = if fold && lines.len() > SHOWN_LINES {
            lines.split_off(SHOWN_LINES)
        } else {
            Vec::new()
        };
        Lines {
            shown: lines,
            folded,
        }
    }
}

#[derive(Debug, Serialize)]
struct ClassView {
    name: String,
    /// Its agents' ids (in a large fleet, the first [`NAMED_CLASS_AGENTS`] of a bigger class).
    agents: Vec<String>,
    agent_count: usize,
    more_agents: usize,
    passed: u64,
    gated: u64,
    quorum: u64,
    quorum_met: bool,
    outliers: Lines,
    metrics: Vec<SpreadView>,
}

#[derive(Debug, Serialize)]
struct SpreadView {
    metric: String,
    median: String,
    worst: String,
    agents: u64,
    threshold: String,
    svg: String,
}

#[derive(Debug, Serialize)]
struct AgentView {
    id: String,
    class: String,
    status: String,
    outcome: &'static str,
    open: bool,
    facts: String,
    labels: String,
    jobs: Vec<JobView>,
    checks: Vec<CheckView>,
    runtimes: Vec<RuntimeView>,
}

/// An agent of a large fleet shown as one row: how it did and its checks counted by outcome.
#[derive(Debug, Serialize)]
struct AgentRow {
    id: String,
    class: String,
    status: &'static str,
    outcome: &'static str,
    checks: Tally,
}

#[derive(Debug, Serialize)]
struct JobView {
    runtime: String,
    status: String,
    phase: String,
    progress: String,
    wall: String,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct CheckView {
    metric: String,
    value: String,
    interval: String,
    threshold: String,
    key: String,
    outcome: &'static str,
    bar: String,
}

#[derive(Debug, Serialize)]
struct RuntimeView {
    name: String,
    reason: Option<String>,
    soak: Option<SoakView>,
    overhead: Option<OverheadView>,
}

#[derive(Debug, Serialize)]
struct SoakView {
    rss_svg: Option<String>,
    facts: Vec<(String, String)>,
    churn_svg: String,
    events_svg: String,
    bytes_svg: String,
    retention: Vec<(String, bool)>,
}

#[derive(Debug, Serialize)]
struct OverheadView {
    wall_svg: String,
    cpu_svg: String,
    facts: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
struct HistoryView {
    metric: String,
    class: String,
    first: String,
    last: String,
    runs: usize,
    shifts: Vec<String>,
    svg: String,
}

/// A gate check of either gate.
#[derive(Clone, Copy)]
enum Check<'a> {
    Budget(&'a BudgetCheck),
    Regression(&'a RegressionCheck),
}

impl Check<'_> {
    fn outcome(self) -> &'static str {
        match self {
            Check::Budget(c) => outcome(c.passed, c.inconclusive),
            Check::Regression(c) => outcome(c.passed, c.inconclusive),
        }
    }

    /// The check's row, `metric` being its key without the agent.
    fn view(self, metric: &str) -> CheckView {
        match self {
            Check::Budget(c) => budget_view(metric, c),
            Check::Regression(c) => regression_view(metric, c),
        }
    }
}

/// What belongs to one agent: its checks (by metric, without the agent), its runtime sections
/// (by key and runtime) and the outcome of each diagnostic that names it.
#[derive(Default)]
struct Owned<'a> {
    checks: Vec<(&'a str, Check<'a>)>,
    runtimes: Vec<(&'a str, &'a str, &'a RuntimeSection)>,
    diagnostics: Vec<&'static str>,
}

impl Page {
    fn new(report: &Report, history: &[HistorySeries]) -> Self {
        // Every check, runtime section and diagnostic is given to its agent in one pass.
        let ids = AgentIds::new(report.agents.keys().map(String::as_str));
        let mut owned: BTreeMap<&str, Owned<'_>> = report
            .agents
            .keys()
            .map(|id| (id.as_str(), Owned::default()))
            .collect();
        let mut tally = Tally::default();
        // Checks of keys no agent owns (reports without agents) are listed on their own.
        let mut other_checks = Vec::new();
        let checks = report
            .budget_checks
            .iter()
            .flatten()
            .map(|(key, c)| (key, Check::Budget(c)))
            .chain(
                report
                    .regression_checks
                    .iter()
                    .flatten()
                    .map(|(key, c)| (key, Check::Regression(c))),
            );
        for (key, check) in checks {
            tally.add(check.outcome());
            match ids.owner_of_key(key) {
                Some(id) => owned
                    .entry(id)
                    .or_default()
                    .checks
                    .push((&key[id.len() + 1..], check)),
                None => other_checks.push(check.view(key)),
            }
        }
        for (key, section) in &report.runtimes {
            if let Some(id) = ids.owner_of_key(key) {
                owned
                    .entry(id)
                    .or_default()
                    .runtimes
                    .push((key, &key[id.len() + 1..], section));
            }
        }
        for line in &report.failure_diagnostics {
            if let Some(id) = ids.owner_of_line(line) {
                let outcome = if line.contains("inconclusive") {
                    "inconclusive"
                } else {
                    "fail"
                };
                owned.entry(id).or_default().diagnostics.push(outcome);
            }
        }

        // Each agent's outcome: as bad as its worst check, diagnostic or status.
        let mut agents: Vec<(&str, &AgentSection, Owned<'_>, &'static str)> = report
            .agents
            .iter()
            .map(|(id, a)| {
                let own = owned.remove(id.as_str()).unwrap_or_default();
                let outcome = worst(
                    own.checks
                        .iter()
                        .map(|(_, c)| c.outcome())
                        .chain(own.diagnostics.iter().copied()),
                    a.status,
                );
                (id.as_str(), a, own, outcome)
            })
            .collect();
        let large = agents.len() > DETAILED_AGENTS;
        let mut folded = Vec::new();
        let mut folded_tally = Tally::default();
        if large {
            // Failures first, then the inconclusive agents, then the rest (by id within each).
            agents.sort_by_key(|(_, _, _, outcome)| match *outcome {
                "fail" => 0,
                "inconclusive" => 1,
                _ => 2,
            });
            let outliers: HashSet<&str> = report
                .hardware_classes
                .values()
                .flat_map(|c| c.outliers.iter().map(|o| o.agent.as_str()))
                .collect();
            let mut detailed = 0;
            agents.retain(|(id, a, own, outcome)| {
                if detailed < DETAILED_AGENTS && (*outcome != "pass" || outliers.contains(id)) {
                    detailed += 1;
                    return true;
                }
                let mut checks = Tally::default();
                for (_, c) in &own.checks {
                    checks.add(c.outcome());
                }
                folded_tally.add(outcome);
                folded.push(AgentRow {
                    id: (*id).to_owned(),
                    class: a.hardware_class.clone(),
                    status: agent_status(a.status),
                    outcome,
                    checks,
                });
                false
            });
        }
        let agents = agents
            .into_iter()
            .map(|(id, a, own, outcome)| {
                // A big fleet opens only the agents that did not pass.
                let open = report.agents.len() <= OPEN_AGENTS || outcome != "pass";
                agent_view(report, id, a, own, outcome, open)
            })
            .collect();

        let (inconclusive, failures): (Vec<String>, Vec<String>) = report
            .failure_diagnostics
            .iter()
            .cloned()
            .partition(|d| d.contains("inconclusive"));
        let incomplete_agents = report
            .agents
            .iter()
            .filter(|(_, a)| a.status != AgentStatus::Completed)
            .map(|(id, a)| format!("{id}: {}", agent_status(a.status)))
            .collect();
        Page {
            version: report.version.clone(),
            timestamp: report.timestamp_utc.clone(),
            profile: report.profile.clone(),
            mode: report.mode.clone(),
            gate_mode: report.gate_mode.clone(),
            verdict: report.verdict.name(),
            verdict_text: match report.verdict {
                Verdict::Pass => "Every hardware class met its quorum: the fleet passes.",
                Verdict::Fail => "A check failed with every agent accounted for.",
                Verdict::Inconclusive => {
                    "The run cannot say pass or fail: an agent or job did not finish, a runtime was unavailable, or an interval straddles its threshold."
                }
            },
            passed: report.passed,
            agent_count: report.agents.len(),
            class_count: report.hardware_classes.len(),
            tally,
            failures: Lines::new(failures, large),
            inconclusive: Lines::new(inconclusive, large),
            incomplete_agents: Lines::new(incomplete_agents, large),
            gate_power: Lines::new(report.gate_power.clone(), large),
            fleet_advice: Lines::new(report.fleet_advice.clone(), large),
            classes: class_views(report, large),
            agents,
            folded,
            folded_tally,
            detailed_limit: DETAILED_AGENTS,
            other_checks,
            history: history.iter().map(history_view).collect(),
        }
    }
}

/// An agent's box: its facts, jobs, checks, and each runtime's charts.
fn agent_view(
    report: &Report,
    id: &str,
    a: &AgentSection,
    own: Owned<'_>,
    outcome: &'static str,
    open: bool,
) -> AgentView {
    let f = &a.facts;
    AgentView {
        id: id.to_owned(),
        class: a.hardware_class.clone(),
        status: agent_status(a.status).to_owned(),
        outcome,
        open,
        facts: format!(
            "{} · {} · kernel {} · {} ({} cores) · {:.1} GiB · {} GPU(s) · TensorFlow {}",
            f.hostname,
            f.os,
            f.kernel,
            f.cpu_model,
            f.cpu_cores,
            f.memory_total_bytes as f64 / (1u64 << 30) as f64,
            f.gpus.len(),
            if f.tensorflow_available {
                "available"
            } else {
                "unavailable"
            }
        ),
        labels: a
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        jobs: a
            .jobs
            .iter()
            .map(|(runtime, j)| JobView {
                runtime: runtime.clone(),
                status: format!("{:?}", j.status).to_lowercase(),
                phase: j.phase.clone(),
                progress: format!("{}/{}", j.done, j.total),
                wall: format!("{:.1} s", j.wall_seconds),
                reason: j.reason.clone(),
            })
            .collect(),
        checks: own
            .checks
            .iter()
            .map(|&(metric, check)| check.view(metric))
            .collect(),
        runtimes: own
            .runtimes
            .iter()
            .map(|&(key, runtime, section)| runtime_view(report, key, runtime, section))
            .collect(),
    }
}

fn agent_status(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Completed => "completed",
        AgentStatus::Lost => "lost",
        AgentStatus::TimedOut => "timed out",
        AgentStatus::Failed => "failed",
    }
}

fn outcome(passed: bool, inconclusive: bool) -> &'static str {
    match (passed, inconclusive) {
        (true, _) => "pass",
        (false, true) => "inconclusive",
        (false, false) => "fail",
    }
}

/// An agent's outcome: fail if a check failed, inconclusive if one was or it did not complete.
fn worst<'a>(outcomes: impl Iterator<Item = &'a str>, status: AgentStatus) -> &'static str {
    let mut result = if status == AgentStatus::Completed {
        "pass"
    } else {
        "inconclusive"
    };
    for o in outcomes {
        match o {
            "fail" => return "fail",
            "inconclusive" => result = "inconclusive",
            _ => {}
        }
    }
    result
}

fn interval_text(metric: &str, lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!(
            "[{}, {}]",
            format_value(metric, lo),
            format_value(metric, hi)
        ),
        _ => String::new(),
    }
}

fn budget_view(metric: &str, c: &BudgetCheck) -> CheckView {
    let result = outcome(c.passed, c.inconclusive);
    CheckView {
        metric: metric.to_owned(),
        value: format_value(metric, c.value),
        interval: interval_text(metric, c.lo, c.hi),
        threshold: format!("≤ {} (budget)", format_value(metric, c.max_allowed)),
        key: c.threshold_key.clone(),
        outcome: result,
        bar: svg::interval_bar(c.value, c.lo.zip(c.hi), None, c.max_allowed, result),
    }
}

fn regression_view(metric: &str, c: &RegressionCheck) -> CheckView {
    let result = outcome(c.passed, c.inconclusive);
    let shift = c.material_shift.unwrap_or(c.max_regression);
    let mut threshold = format!(
        "Δ {} {} vs baseline {}",
        if c.two_sided { "within ±" } else { "≤" },
        format_value(metric, shift),
        format_value(metric, c.baseline_value)
    );
    if let Some(p) = c.p_adjusted {
        threshold.push_str(&format!(" · p(adj) {p:.3}"));
    }
    CheckView {
        metric: metric.to_owned(),
        value: format!(
            "{} (Δ {})",
            format_value(metric, c.current_value),
            format_value(metric, c.delta)
        ),
        interval: interval_text(metric, c.delta_lo, c.delta_hi),
        threshold,
        key: c.threshold_key.clone(),
        outcome: result,
        bar: svg::interval_bar(
            c.delta,
            c.delta_lo.zip(c.delta_hi),
            c.two_sided.then_some(-shift),
            shift,
            result,
        ),
    }
}

/// The threshold a metric of a class is gated against, from the first check of one of its
/// agents (a budget, or the baseline plus the shift allowed).
fn class_threshold(report: &Report, agents: &[String], metric: &str) -> Option<f64> {
    agents.iter().find_map(|a| {
        let key = format!("{a}/{metric}");
        report
            .budget_checks
            .as_ref()
            .and_then(|b| b.get(&key))
            .map(|c| c.max_allowed)
            .or_else(|| {
                report
                    .regression_checks
                    .as_ref()
                    .and_then(|r| r.get(&key))
                    .map(|c| c.baseline_value + c.material_shift.unwrap_or(c.max_regression))
            })
    })
}

/// The hardware classes' views; `large` (a fleet of more than [`DETAILED_AGENTS`]) names the
/// first agents of a big class only and folds long outlier lists.
fn class_views(report: &Report, large: bool) -> Vec<ClassView> {
    let named = if large {
        NAMED_CLASS_AGENTS
    } else {
        usize::MAX
    };
    report
        .hardware_classes
        .iter()
        .map(|(name, class)| ClassView {
            name: name.clone(),
            agents: class.agents.iter().take(named).cloned().collect(),
            agent_count: class.agents.len(),
            more_agents: class.agents.len().saturating_sub(named),
            passed: class.passed,
            gated: class.gated,
            quorum: class.quorum,
            quorum_met: class.quorum_met,
            outliers: Lines::new(
                class
                    .outliers
                    .iter()
                    .map(|o| {
                        let z = o
                            .robust_z
                            .map_or(String::new(), |z| format!(", robust z {z:.1}"));
                        format!(
                            "{}: {} = {}{z}",
                            o.agent,
                            o.metric,
                            format_value(&o.metric, o.value)
                        )
                    })
                    .collect(),
                large,
            ),
            metrics: class
                .metrics
                .iter()
                .map(|(metric, spread)| {
                    let values: Vec<(&str, f64)> = class
                        .agents
                        .iter()
                        .filter_map(|a| {
                            report
                                .metrics
                                .get(&format!("{a}/{metric}"))
                                .map(|&v| (a.as_str(), v))
                        })
                        .collect();
                    let threshold = class_threshold(report, &class.agents, metric);
                    let name = metric.as_str();
                    SpreadView {
                        metric: name.to_owned(),
                        median: format_value(name, spread.median),
                        worst: format_value(name, spread.worst),
                        agents: spread.agents,
                        threshold: threshold.map_or(String::new(), |t| format_value(name, t)),
                        svg: svg::spread_strip(&values, spread.median, threshold),
                    }
                })
                .collect(),
        })
        .collect()
}

fn runtime_view(
    report: &Report,
    key: &str,
    runtime: &str,
    section: &RuntimeSection,
) -> RuntimeView {
    let budget = |metric: &str| {
        report
            .budget_checks
            .as_ref()
            .and_then(|b| b.get(&format!("{key}.{metric}")))
            .map(|c| c.max_allowed)
    };
    let overhead = section.overhead.as_ref().map(|o| {
        let wall: Vec<(f64, bool)> = o
            .pairs
            .iter()
            .map(|p| (p.runtime_overhead_pct, p.tracked_first))
            .collect();
        let cpu: Vec<(f64, bool)> = o
            .pairs
            .iter()
            .map(|p| (p.cpu_overhead_pct, p.tracked_first))
            .collect();
        let est =
            |e: Option<fleetgate_common::stats::Estimate>| e.map(|e| (e.estimate, e.lo, e.hi));
        let wall_budget = budget("runtime_overhead_pct");
        let cpu_budget = budget("cpu_overhead_pct");
        let mut facts = vec![
            ("pairs".to_owned(), o.trial_count.to_string()),
            (
                "stopped by".to_owned(),
                o.stopped_by
                    .map_or("—".to_owned(), |s| format!("{s:?}").to_lowercase()),
            ),
        ];
        if let Some(added) = &o.added_ns_per_sample {
            facts.push((
                "added wall time per sample".to_owned(),
                format!(
                    "{:.0} ns [{:.0}, {:.0}]",
                    added.wall.estimate, added.wall.lo, added.wall.hi
                ),
            ));
            facts.push((
                "added CPU time per sample".to_owned(),
                format!(
                    "{:.0} ns [{:.0}, {:.0}]",
                    added.cpu.estimate, added.cpu.lo, added.cpu.hi
                ),
            ));
        }
        if let Some(d) = &o.detectable_shift {
            facts.push((
                "smallest shift detected (95 % power)".to_owned(),
                format!(
                    "wall {:.2}%, CPU {:.2}%",
                    d.runtime_overhead_pct, d.cpu_overhead_pct
                ),
            ));
        }
        OverheadView {
            wall_svg: svg::pairs_chart(
                "runtime_overhead_pct",
                &wall,
                est(o.estimates.map(|e| e.runtime_overhead_pct)),
                wall_budget.map(|y| svg::Reference { y, label: "budget" }),
            ),
            cpu_svg: svg::pairs_chart(
                "cpu_overhead_pct",
                &cpu,
                est(o.estimates.map(|e| e.cpu_overhead_pct)),
                cpu_budget.map(|y| svg::Reference { y, label: "budget" }),
            ),
            facts,
        }
    });
    RuntimeView {
        name: runtime.to_owned(),
        reason: section.reason.clone(),
        soak: section.soak.as_ref().map(|s| soak_view(s, &budget)),
        overhead,
    }
}

fn soak_view(s: &SoakBlock, budget: &dyn Fn(&str) -> Option<f64>) -> SoakView {
    let points: Vec<(f64, f64)> = s
        .rss_checkpoints
        .iter()
        .map(|c| (c.equivalent_seconds, c.rss_bytes as f64))
        .collect();
    // The fitted line through the projection 24 h after the warm-up.
    let line = s.rss_trend.map(|t| {
        (
            t.projected_rss_at_24h_equiv_bytes - t.slope_bytes_per_second * 86_400.0,
            t.slope_bytes_per_second,
        )
    });
    let mut facts = vec![
        (
            "equivalent time".to_owned(),
            format!("{:.1} h ({} samples)", s.equivalent_hours, s.sample_count),
        ),
        (
            "RSS baseline → final".to_owned(),
            format!(
                "{} → {} ({:+} bytes)",
                svg::compact(s.rss_baseline_bytes as f64),
                svg::compact(s.rss_final_bytes as f64),
                s.rss_delta_bytes
            ),
        ),
        (
            "growth per 24 h equivalent".to_owned(),
            format!("{:.0} bytes", s.rss_growth_per_24h_equiv),
        ),
    ];
    if let Some(t) = &s.rss_trend {
        if let (Some(lo), Some(hi)) = (t.growth_per_24h_equiv_lo, t.growth_per_24h_equiv_hi) {
            facts.push((
                "its 95 % interval (Sen)".to_owned(),
                format!("[{lo:.0}, {hi:.0}] bytes"),
            ));
        }
        facts.push((
            "Mann–Kendall".to_owned(),
            format!(
                "S = {}, p(increasing) = {:.3}",
                t.mann_kendall_s, t.mann_kendall_p_increasing
            ),
        ));
        facts.push((
            "late-window growth per 24 h".to_owned(),
            format!("{:.0} bytes", t.late_window_growth_per_24h_equiv),
        ));
    }
    facts.push((
        "collector health".to_owned(),
        s.collector_health_status.clone(),
    ));
    let segment_limit = budget("final_retained_files");
    let byte_limit = budget("final_retained_bytes");
    let count = |label, value: u64, limit| svg::ChurnBar {
        label,
        value: value as f64,
        text: value.to_string(),
        limit,
    };
    let bytes = |label, value: u64, limit| svg::ChurnBar {
        label,
        value: value as f64,
        text: format!("{:.1} MiB", value as f64 / 1_048_576.0),
        limit,
    };
    let v = &s.retention_validation;
    SoakView {
        rss_svg: (!points.is_empty()).then(|| svg::rss_chart(&points, line)),
        facts,
        churn_svg: svg::churn_bars(&[
            count("segments rolled over", s.rollover_count, None),
            count("segments pruned", s.pruned_segment_count, None),
            count("segments retained", s.final_retained_files, segment_limit),
        ]),
        events_svg: svg::churn_bars(&[
            count(
                "events evicted",
                s.history_dropped_events,
                budget("history_dropped_events"),
            ),
            count("events retained", s.history_retained_events, None),
        ]),
        bytes_svg: svg::churn_bars(&[
            bytes("bytes pruned", s.pruned_bytes, None),
            bytes("bytes retained", s.final_retained_bytes, byte_limit),
        ]),
        retention: [
            ("rollover observed", v.checks.rollover_observed),
            ("pruning observed", v.checks.pruning_observed),
            ("retained files bounded", v.checks.retained_files_bounded),
            ("retained bytes bounded", v.checks.retained_bytes_bounded),
        ]
        .into_iter()
        .map(|(name, ok)| (name.to_owned(), ok))
        .collect(),
    }
}

fn history_view(series: &HistorySeries) -> HistoryView {
    let values: Vec<f64> = series.points.iter().map(|p| p.value).collect();
    let point_text = |p: Option<&HistoryPoint>| {
        p.map_or(String::new(), |p| {
            format!(
                "{} ({}, {})",
                format_value(&series.metric, p.value),
                p.run_id,
                p.finished_at
            )
        })
    };
    HistoryView {
        metric: series.metric.clone(),
        class: series.hardware_class.clone(),
        first: point_text(series.points.first()),
        last: point_text(series.points.last()),
        runs: series.points.len(),
        shifts: series
            .change_points
            .iter()
            .filter_map(|&i| {
                let p = series.points.get(i)?;
                let before = i.checked_sub(1).and_then(|j| series.points.get(j));
                Some(format!(
                    "from run {} ({}): {}{}",
                    p.run_id,
                    p.finished_at,
                    format_value(&series.metric, p.value),
                    before.map_or(String::new(), |b| format!(
                        ", after {}",
                        format_value(&series.metric, b.value)
                    ))
                ))
            })
            .collect(),
        svg: svg::history_chart(&series.metric, &values, &series.change_points),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_as_bad_as_its_worst_check_or_its_status() {
        assert_eq!(
            worst(["pass", "pass"].into_iter(), AgentStatus::Completed),
            "pass"
        );
        assert_eq!(
            worst(["pass", "inconclusive"].into_iter(), AgentStatus::Completed),
            "inconclusive"
        );
        assert_eq!(
            worst(["inconclusive", "fail"].into_iter(), AgentStatus::Completed),
            "fail"
        );
        assert_eq!(worst(std::iter::empty(), AgentStatus::Lost), "inconclusive");
    }
}
