//! The HTML report: one self-contained page (inline CSS and SVG, no script, nothing fetched)
//! that a person reads instead of the JSON. The verdict and why come first; then each hardware
//! class with the spread of every metric over its agents; then each agent with its checks
//! against their budgets or baselines (a table with an interval bar per check), its soak's RSS
//! checkpoints with the fitted trend, its overhead pairs and its retention churn; then, when
//! history is given, each metric's values over past runs with their change points.
//!
//! The page is a minijinja template (`html/report.html`) with HTML auto-escaping, so every
//! string from the report (agent ids, labels, diagnostics) is escaped; the pictures come from
//! `svg`, which escapes what it draws.

mod svg;

use std::collections::BTreeMap;

use fleetgate_common::report::{
    AgentStatus, BudgetCheck, RegressionCheck, Report, RuntimeSection, SoakBlock, Verdict,
    format_value,
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
    failures: Vec<String>,
    inconclusive: Vec<String>,
    incomplete_agents: Vec<String>,
    gate_power: Vec<String>,
    fleet_advice: Vec<String>,
    classes: Vec<ClassView>,
    agents: Vec<AgentView>,
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

#[derive(Debug, Serialize)]
struct ClassView {
    name: String,
    agents: Vec<String>,
    passed: u64,
    gated: u64,
    quorum: u64,
    quorum_met: bool,
    outliers: Vec<String>,
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

impl Page {
    fn new(report: &Report, history: &[HistorySeries]) -> Self {
        let ids: Vec<&str> = report.agents.keys().map(String::as_str).collect();
        let mut checks: BTreeMap<&str, Vec<CheckView>> = BTreeMap::new();
        let mut other_checks = Vec::new();
        let mut tally = Tally::default();
        let mut add = |key: &str, view: CheckView| {
            tally.total += 1;
            match view.outcome {
                "pass" => tally.pass += 1,
                "fail" => tally.fail += 1,
                _ => tally.inconclusive += 1,
            }
            match owner(key, &ids) {
                Some(agent) => checks.entry(agent).or_default().push(view),
                None => other_checks.push(view),
            }
        };
        for (key, c) in report.budget_checks.iter().flatten() {
            add(key, budget_view(key, c, &ids));
        }
        for (key, c) in report.regression_checks.iter().flatten() {
            add(key, regression_view(key, c, &ids));
        }
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
        let many = report.agents.len() > 6;
        let agents = report
            .agents
            .iter()
            .map(|(id, a)| {
                let own = checks.remove(id.as_str()).unwrap_or_default();
                // Its checks, and the diagnostics that name it (retention, collector health).
                let diagnostics = report
                    .failure_diagnostics
                    .iter()
                    .filter(|d| diagnostic_owner(d, &ids) == Some(id.as_str()))
                    .map(|d| {
                        if d.contains("inconclusive") {
                            "inconclusive"
                        } else {
                            "fail"
                        }
                    });
                let outcome = worst(
                    own.iter().map(|c| c.outcome).chain(diagnostics),
                    a.status,
                );
                let f = &a.facts;
                AgentView {
                    id: id.clone(),
                    class: a.hardware_class.clone(),
                    status: agent_status(a.status).to_owned(),
                    outcome,
                    // A big fleet opens only the agents that did not pass.
                    open: !many || outcome != "pass",
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
                    checks: own,
                    runtimes: report
                        .runtimes
                        .iter()
                        .filter_map(|(key, section)| {
                            let runtime = key.strip_prefix(id.as_str())?.strip_prefix('/')?;
                            // A longer id that shares this prefix owns the section.
                            (owner(&format!("{key}."), &ids) == Some(id.as_str()))
                                .then(|| runtime_view(report, key, runtime, section))
                        })
                        .collect(),
                }
            })
            .collect();
        // Checks of keys no agent owns (reports without agents) stay listed on their own.
        other_checks.extend(checks.into_values().flatten());
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
            failures,
            inconclusive,
            incomplete_agents,
            gate_power: report.gate_power.clone(),
            fleet_advice: report.fleet_advice.clone(),
            classes: class_views(report),
            agents,
            other_checks,
            history: history.iter().map(history_view).collect(),
        }
    }
}

/// The agent of `ids` that a key (`<agent>/<runtime>.<metric>`) belongs to: the longest id
/// followed by `/`.
fn owner<'a>(key: &str, ids: &[&'a str]) -> Option<&'a str> {
    ids.iter()
        .copied()
        .filter(|id| {
            key.strip_prefix(id)
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|id| id.len())
}

/// The agent a diagnostic line names: the longest id followed by `/` or `: `.
fn diagnostic_owner<'a>(line: &str, ids: &[&'a str]) -> Option<&'a str> {
    ids.iter()
        .copied()
        .filter(|id| {
            line.strip_prefix(id)
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(": "))
        })
        .max_by_key(|id| id.len())
}

/// The metric part of a key: `<runtime>.<metric>` without its agent.
fn metric_of<'a>(key: &'a str, ids: &[&str]) -> &'a str {
    owner(key, ids).map_or(key, |id| &key[id.len() + 1..])
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

fn budget_view(key: &str, c: &BudgetCheck, ids: &[&str]) -> CheckView {
    let metric = metric_of(key, ids);
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

fn regression_view(key: &str, c: &RegressionCheck, ids: &[&str]) -> CheckView {
    let metric = metric_of(key, ids);
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

fn class_views(report: &Report) -> Vec<ClassView> {
    report
        .hardware_classes
        .iter()
        .map(|(name, class)| ClassView {
            name: name.clone(),
            agents: class.agents.clone(),
            passed: class.passed,
            gated: class.gated,
            quorum: class.quorum,
            quorum_met: class.quorum_met,
            outliers: class
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
    fn keys_and_diagnostics_belong_to_the_longest_matching_agent() {
        let ids = ["a", "a-b", "a/b"];
        assert_eq!(owner("a/gpumemprof_cpu.rollover_count", &ids), Some("a"));
        assert_eq!(
            owner("a-b/gpumemprof_cpu.rollover_count", &ids),
            Some("a-b")
        );
        assert_eq!(
            owner("a/b/gpumemprof_cpu.rollover_count", &ids),
            Some("a/b")
        );
        assert_eq!(owner("gpumemprof_cpu.rollover_count", &ids), None);
        assert_eq!(metric_of("a-b/x.y", &ids), "x.y");
        assert_eq!(diagnostic_owner("a-b: lost during soak", &ids), Some("a-b"));
        assert_eq!(diagnostic_owner("ab: lost", &ids), None);
    }

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
