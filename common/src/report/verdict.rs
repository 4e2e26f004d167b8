//! The fleet report and its verdict: the jobs' runtime sections, keyed `<agent>/<runtime>`,
//! become one gated v0.4 report for the whole fleet, with the agents' sections, the per-class
//! summary, the diagnostics and the verdict.

use std::collections::BTreeMap;

use crate::config::RunConfig;
use crate::gate::{Gate, strip_instance};
use crate::host::HostFacts;
use crate::report::diagnostics::{
    failure_diagnostics, gate_power_lines, has_inconclusive_loss, inconclusive_diagnostics,
};
use crate::report::fleet::{
    AgentSection, AgentStatus, ClassSummary, JobStatus, JobSummary, MetricSpread,
};
use crate::report::metrics::{flatten_intervals, flatten_metrics};
use crate::report::model::{
    BaselineSnapshot, REPORT_VERSION, Report, RuntimeSection, RuntimeStatus, Verdict,
};

/// An agent of the run, as the coordinator knew it.
#[derive(Debug, Clone)]
pub struct AgentRecord {
    /// Agent id.
    pub agent_id: String,
    /// Host facts.
    pub facts: HostFacts,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Hardware class.
    pub hardware_class: String,
}

/// One job's outcome.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Agent that ran it.
    pub agent_id: String,
    /// Runtime name.
    pub runtime: String,
    /// Summary (status, phase, progress, timings).
    pub summary: JobSummary,
    /// Its report section, when it completed.
    pub section: Option<RuntimeSection>,
}

/// How an agent's part of the run ended: the worst of its jobs' statuses (lost, then timed out
/// or still running, then failed or cancelled).
fn agent_status(jobs: &[&JobRecord]) -> AgentStatus {
    let has = |s: JobStatus| jobs.iter().any(|j| j.summary.status == s);
    if has(JobStatus::Lost) {
        AgentStatus::Lost
    } else if has(JobStatus::TimedOut) || has(JobStatus::Running) {
        AgentStatus::TimedOut
    } else if has(JobStatus::Failed) || has(JobStatus::Cancelled) {
        AgentStatus::Failed
    } else {
        AgentStatus::Completed
    }
}

/// Builds the gated fleet report of a run with `config` and `gate` from its agents and their
/// jobs, dated `unix_seconds`.
///
/// Every job's section, when it has one, joins `runtimes` under `<agent>/<runtime>`; a job that
/// did not complete adds a diagnostic naming its agent, runtime, phase and progress. The
/// diagnostics list those first, then [`failure_diagnostics`], then
/// [`inconclusive_diagnostics`]. `passed` is set when no check failed or was inconclusive, no
/// job or failure diagnostic was raised and the run had an agent.
/// The verdict is [`Verdict::Inconclusive`] when the run had no agent, a job did not complete
/// (lost, timed out, still running, failed or cancelled), a runtime was unavailable, a
/// telemetry session ended unclosed with nothing dropped and no failed write, or a check was
/// inconclusive with nothing else failing; otherwise [`Verdict::Pass`] when `passed`, else
/// [`Verdict::Fail`].
pub fn build_report(
    config: &RunConfig,
    gate: &Gate,
    agents: &[AgentRecord],
    jobs: &[JobRecord],
    unix_seconds: u64,
) -> Report {
    let class_of_map: BTreeMap<&str, &str> = agents
        .iter()
        .map(|a| (a.agent_id.as_str(), a.hardware_class.as_str()))
        .collect();
    let class_of = |agent: &str| class_of_map.get(agent).map(|c| (*c).to_owned());

    let mut runtimes = BTreeMap::new();
    let mut agent_sections = BTreeMap::new();
    let mut agent_lines = Vec::new();
    let mut inconclusive = false;
    for agent in agents {
        let mine: Vec<&JobRecord> = jobs
            .iter()
            .filter(|j| j.agent_id == agent.agent_id)
            .collect();
        for job in &mine {
            if let Some(section) = &job.section {
                if section.status == RuntimeStatus::Unavailable {
                    inconclusive = true;
                }
                runtimes.insert(
                    format!("{}/{}", agent.agent_id, job.runtime),
                    section.clone(),
                );
            }
            let s = &job.summary;
            let what = match s.status {
                JobStatus::Completed => continue,
                JobStatus::Lost => "lost",
                JobStatus::TimedOut | JobStatus::Running => "timed out",
                JobStatus::Failed => "failed",
                JobStatus::Cancelled => "cancelled",
            };
            inconclusive = true;
            agent_lines.push(format!(
                "{}: {what} during {} {} at {}/{} (job {}, {} events){}; next knob: none (the agent must finish its job; see its logs)",
                agent.agent_id,
                job.runtime,
                s.phase,
                s.done,
                s.total,
                s.job_id,
                s.events,
                s.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ));
        }
        agent_sections.insert(
            agent.agent_id.clone(),
            AgentSection {
                hardware_class: agent.hardware_class.clone(),
                labels: agent.labels.clone(),
                facts: agent.facts.clone(),
                status: agent_status(&mine),
                jobs: mine
                    .iter()
                    .map(|j| (j.runtime.clone(), j.summary.clone()))
                    .collect(),
            },
        );
    }
    // A sink that could not close its session leaves the job's telemetry unknown: no verdict.
    if has_inconclusive_loss(&runtimes) {
        inconclusive = true;
    }
    let metrics = flatten_metrics(&runtimes);
    let metric_intervals = flatten_intervals(&runtimes);
    let hardware_classes = class_summaries(&agent_sections, &metrics);
    let mut report = Report {
        version: REPORT_VERSION.to_owned(),
        timestamp_utc: format_utc(unix_seconds),
        profile: config.workload.profile.name().to_owned(),
        mode: config.workload.mode.name().to_owned(),
        gate_mode: gate.mode().name().to_owned(),
        config: config.clone(),
        runtimes,
        metrics,
        metric_intervals,
        gate_power: Vec::new(),
        budgets: None,
        budget_checks: None,
        baseline: None,
        tolerances: None,
        regression_checks: None,
        failure_diagnostics: Vec::new(),
        passed: false,
        verdict: Verdict::Inconclusive,
        agents: agent_sections,
        hardware_classes,
    };
    match gate {
        Gate::Budget(budgets) => {
            report.budget_checks =
                Some(budgets.check_intervals(&report.metrics, &report.metric_intervals, &class_of));
            report.budgets = Some(budgets.budgets.clone());
        }
        Gate::Regression(baseline, tolerances) => {
            report.regression_checks = Some(tolerances.check_intervals(
                baseline,
                &report.metrics,
                &report.metric_intervals,
                &class_of,
            ));
            report.baseline = Some(BaselineSnapshot {
                version: baseline.version.clone(),
                config: baseline.config.clone(),
                metrics: baseline.metrics.clone(),
                distributions: baseline.distributions.clone(),
            });
            report.tolerances = Some(tolerances.tolerances.clone());
        }
    }
    let mut diagnostics = agent_lines;
    diagnostics.extend(failure_diagnostics(
        &report.runtimes,
        report.budget_checks.as_ref(),
        report.regression_checks.as_ref(),
        &report.config.knobs,
    ));
    // (passed, inconclusive) of every check.
    let outcomes: Vec<(bool, bool)> = report
        .budget_checks
        .iter()
        .flat_map(|c| c.values().map(|c| (c.passed, c.inconclusive)))
        .chain(
            report
                .regression_checks
                .iter()
                .flat_map(|c| c.values().map(|c| (c.passed, c.inconclusive))),
        )
        .collect();
    let failed = outcomes.iter().any(|&(p, i)| !p && !i) || !diagnostics.is_empty();
    let undecided = outcomes.iter().any(|&(_, i)| i);
    diagnostics.extend(inconclusive_diagnostics(
        report.budget_checks.as_ref(),
        report.regression_checks.as_ref(),
    ));
    report.gate_power = gate_power_lines(
        &report.runtimes,
        report.budget_checks.as_ref(),
        report.regression_checks.as_ref(),
    );
    if let Gate::Regression(baseline, _) = gate
        && baseline.is_point()
    {
        report
            .gate_power
            .push(point_baseline_advice(&baseline.path));
    }
    report.failure_diagnostics = diagnostics;
    report.passed = !failed && !undecided && !agents.is_empty();
    // An interval that straddles its threshold leaves the verdict open, unless something
    // else failed outright.
    report.verdict = if inconclusive || agents.is_empty() || (undecided && !failed) {
        Verdict::Inconclusive
    } else if report.passed {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    report
}

/// The advice a regression report carries when its baseline is a point baseline.
fn point_baseline_advice(path: &str) -> String {
    format!(
        "baseline {path} is a point baseline (one run, no A/A distributions): its checks use the tolerances alone, with noise 0; record a calibrated one with `fleetgate run --repeat 10 --write-baseline PATH`"
    )
}

/// A regression baseline file recorded from `report`: its comparable config and its metrics
/// with the agent prefix removed (a single-agent run gives the seed's plain keys).
pub fn baseline_document(report: &Report, host: &str) -> serde_json::Value {
    let metrics: BTreeMap<String, f64> = report
        .metrics
        .iter()
        .map(|(k, v)| {
            (
                k.split_once('/')
                    .map_or(k.as_str(), |(_, rest)| rest)
                    .to_owned(),
                *v,
            )
        })
        .collect();
    serde_json::json!({
        "version": REPORT_VERSION,
        "description": format!(
            "Recorded by `fleetgate run --write-baseline` at {} on host {host} (profile {}, mode {}).",
            report.timestamp_utc, report.profile, report.mode
        ),
        "config": report.config.comparable(),
        "metrics": metrics,
    })
}

/// Per-class worst and median of every `<agent>/<runtime>.<metric>` value.
pub fn class_summaries(
    agents: &BTreeMap<String, AgentSection>,
    metrics: &BTreeMap<String, f64>,
) -> BTreeMap<String, ClassSummary> {
    let mut classes: BTreeMap<String, ClassSummary> = BTreeMap::new();
    for (id, agent) in agents {
        classes
            .entry(agent.hardware_class.clone())
            .or_insert_with(|| ClassSummary {
                agents: Vec::new(),
                metrics: BTreeMap::new(),
            })
            .agents
            .push(id.clone());
    }
    let mut values: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (key, &value) in metrics {
        let Some((agent, rest)) = key.split_once('/') else {
            continue;
        };
        let Some(section) = agents.get(agent) else {
            continue;
        };
        values
            .entry((section.hardware_class.clone(), strip_instance(rest)))
            .or_default()
            .push(value);
    }
    for ((class, metric), mut v) in values {
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        if let Some(summary) = classes.get_mut(&class) {
            summary.metrics.insert(
                metric,
                MetricSpread {
                    worst: v[v.len() - 1],
                    median,
                    agents: v.len() as u64,
                },
            );
        }
    }
    classes
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds.
pub fn format_utc(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    // Civil-from-days (proleptic Gregorian), valid for every date after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
