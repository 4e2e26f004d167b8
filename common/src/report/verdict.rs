//! The fleet report and its verdict: the jobs' runtime sections, keyed `<agent>/<runtime>`,
//! become one gated v0.4 report for the whole fleet, with the agents' sections, the per-class
//! summary (its quorum and outliers), the diagnostics and the verdict.

use std::collections::BTreeMap;

use crate::config::RunConfig;
use crate::gate::{Gate, strip_instance};
use crate::host::HostFacts;
use crate::report::diagnostics::{
    failure_diagnostics, gate_power_lines, inconclusive_diagnostics, telemetry_losses,
};
use crate::report::fleet::{
    AgentSection, AgentStatus, ClassSummary, JobStatus, JobSummary, MetricSpread, Outlier,
};
use crate::report::metrics::{flatten_intervals, flatten_metrics, format_value};
use crate::report::model::{
    BaselineSnapshot, REPORT_VERSION, Report, RuntimeSection, RuntimeStatus, Verdict,
};
use crate::report::significance::adjust_regression_checks;
use crate::run::Quorum;
use crate::stats::{self, StatsError};

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
fn agent_status(jobs: &[JobRecord]) -> AgentStatus {
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

/// [`build_fleet_report`] with every agent required to pass ([`Quorum::ALL`]).
pub fn build_report(
    config: &RunConfig,
    gate: &Gate,
    agents: &[AgentRecord],
    jobs: &[JobRecord],
    unix_seconds: u64,
) -> Report {
    build_fleet_report(
        config,
        gate,
        Quorum::ALL,
        agents,
        jobs.to_vec(),
        unix_seconds,
    )
}

/// How one agent's part of the run came out, for its class's quorum.
#[derive(Debug, Clone, Copy, Default)]
struct AgentOutcome {
    /// A job did not complete, a runtime was unavailable, or a telemetry session ended
    /// unclosed: the run cannot say how this agent would have done.
    open_cause: bool,
    /// A check of its metrics was inconclusive.
    undecided: bool,
    /// A check of its metrics failed outright, or a failure diagnostic names it.
    failed: bool,
}

impl AgentOutcome {
    fn passed(self) -> bool {
        !self.open_cause && !self.undecided && !self.failed
    }

    /// Not passed, but it might have: nothing of it failed outright (or it has an open
    /// cause, which leaves the run open whatever else it did).
    fn open(self) -> bool {
        !self.passed() && (self.open_cause || !self.failed)
    }
}

/// A class's tally against its quorum.
#[derive(Debug, Clone, Copy)]
struct ClassTally {
    gated: usize,
    passed: usize,
    open: usize,
    required: usize,
}

impl ClassTally {
    fn met(self) -> bool {
        self.passed >= self.required
    }

    /// The quorum could still be met if every open agent had passed.
    fn reachable(self) -> bool {
        self.passed + self.open >= self.required
    }
}

/// The report's agent ids, to tell which agent a key or a diagnostic line is about: the
/// longest id followed by `/` (keys: `<agent>/<runtime>`, `<agent>/<runtime>.<metric>`), or by
/// `/` or `: ` (diagnostic lines). Ids may hold `/` themselves, so each prefix of the text that
/// ends right before a separator is looked up, longest first: a lookup per separator, whatever
/// the fleet's size.
#[derive(Debug)]
pub struct AgentIds<'a>(std::collections::HashSet<&'a str>);

impl<'a> AgentIds<'a> {
    /// The ids of a report's agents.
    pub fn new(ids: impl IntoIterator<Item = &'a str>) -> Self {
        AgentIds(ids.into_iter().collect())
    }

    /// The agent a key belongs to.
    pub fn owner_of_key(&self, key: &str) -> Option<&'a str> {
        self.longest_before(key, &["/"])
    }

    /// The agent a diagnostic line names.
    pub fn owner_of_line(&self, line: &str) -> Option<&'a str> {
        self.longest_before(line, &["/", ": "])
    }

    fn longest_before(&self, text: &str, separators: &[&str]) -> Option<&'a str> {
        let mut ends: Vec<usize> = separators
            .iter()
            .flat_map(|s| text.match_indices(s).map(|(at, _)| at))
            .collect();
        ends.sort_unstable();
        ends.iter()
            .rev()
            .find_map(|&at| self.0.get(&text[..at]).copied())
    }
}

/// Builds the gated fleet report of a run with `config`, `gate` and `quorum` from its agents
/// and their jobs, dated `unix_seconds`.
///
/// Every job's section, when it has one, joins `runtimes` under `<agent>/<runtime>`; a job that
/// did not complete, or completed without its section, adds a diagnostic naming its agent,
/// runtime, phase and progress. The regression checks with an interval are corrected for their
/// number ([`adjust_regression_checks`]). The diagnostics list the jobs' lines first, then
/// [`failure_diagnostics`], then [`inconclusive_diagnostics`]. `passed` is set when no check
/// failed or was inconclusive, no job or failure diagnostic was raised and the run had an
/// agent.
///
/// An agent passes when every job of it completed, every check of its metrics passed and no
/// diagnostic names it. Each hardware class of `n` agents needs `quorum.required(n)` of them
/// to pass (every agent, with [`Quorum::ALL`]); in a class that meets its quorum, the agents
/// that did not pass are tolerated, and their diagnostics say so. The verdict is
/// [`Verdict::Inconclusive`] when the run had no agent, or when an agent that is not tolerated
/// has a job that did not complete (lost, timed out, still running, failed or cancelled) or
/// completed without its section, an unavailable runtime or a telemetry session that ended
/// unclosed with nothing dropped and no failed write; otherwise [`Verdict::Fail`] when some class cannot meet its quorum even if
/// every agent with an inconclusive check had passed; otherwise [`Verdict::Inconclusive`] when
/// some class's quorum depends on such agents; otherwise [`Verdict::Pass`]. With
/// [`Quorum::ALL`] this is the verdict of every agent together: inconclusive for any open
/// cause, else fail for any failure, else inconclusive for any inconclusive check, else pass.
///
/// Each class summary also names its outliers (see [`class_summaries`]), with one line each in
/// `fleet_advice`; they do not change the verdict.
pub fn build_fleet_report(
    config: &RunConfig,
    gate: &Gate,
    quorum: Quorum,
    agents: &[AgentRecord],
    jobs: Vec<JobRecord>,
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
    let mut outcomes: BTreeMap<&str, AgentOutcome> = BTreeMap::new();
    // Each job's section moves into the report: at 10,000 agents a copy is hundreds of MB.
    let mut jobs_of: BTreeMap<String, Vec<JobRecord>> = BTreeMap::new();
    for job in jobs {
        jobs_of.entry(job.agent_id.clone()).or_default().push(job);
    }
    for agent in agents {
        let outcome = outcomes.entry(agent.agent_id.as_str()).or_default();
        let mut mine = jobs_of.remove(agent.agent_id.as_str()).unwrap_or_default();
        for job in &mut mine {
            let reported = job.section.is_some();
            if let Some(section) = job.section.take() {
                // A sink that could not close its session leaves the job's telemetry unknown.
                if section.status == RuntimeStatus::Unavailable
                    || telemetry_losses(&section)
                        .iter()
                        .any(|l| l.is_inconclusive())
                {
                    outcome.open_cause = true;
                }
                runtimes.insert(format!("{}/{}", agent.agent_id, job.runtime), section);
            }
            let s = &job.summary;
            let what = match s.status {
                JobStatus::Completed if reported => continue,
                // Its report never reached the run: nothing of it can be gated.
                JobStatus::Completed => "completed without its report section",
                JobStatus::Lost => "lost",
                JobStatus::TimedOut | JobStatus::Running => "timed out",
                JobStatus::Failed => "failed",
                JobStatus::Cancelled => "cancelled",
            };
            outcome.open_cause = true;
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
                jobs: mine.into_iter().map(|j| (j.runtime, j.summary)).collect(),
            },
        );
    }
    let metrics = flatten_metrics(&runtimes);
    let metric_intervals = flatten_intervals(&runtimes);
    let hardware_classes = class_summaries(&agent_sections, &metrics);
    let mut report = Report {
        version: REPORT_VERSION.to_owned(),
        generator: None,
        timestamp_utc: format_utc(unix_seconds),
        profile: config.workload.profile.name().to_owned(),
        mode: config.workload.mode.name().to_owned(),
        gate_mode: gate.mode().name().to_owned(),
        config: config.clone(),
        runtimes,
        metrics,
        metric_intervals,
        gate_power: Vec::new(),
        fleet_advice: Vec::new(),
        history_advice: Vec::new(),
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
            let mut checks = tolerances.check_intervals(
                baseline,
                &report.metrics,
                &report.metric_intervals,
                &class_of,
            );
            adjust_regression_checks(&mut checks);
            report.regression_checks = Some(checks);
            report.baseline = Some(BaselineSnapshot {
                version: baseline.version.clone(),
                config: baseline.config.clone(),
                metrics: baseline.metrics.clone(),
                distributions: baseline.distributions.clone(),
            });
            report.tolerances = Some(tolerances.tolerances.clone());
        }
    }
    let ids = AgentIds::new(agents.iter().map(|a| a.agent_id.as_str()));
    let mut diagnostics = agent_lines;
    diagnostics.extend(failure_diagnostics(
        &report.runtimes,
        report.budget_checks.as_ref(),
        report.regression_checks.as_ref(),
        &report.config.knobs,
    ));
    // A check or a line that names no agent of the run (none does today) decides for the
    // whole fleet, as it would without a quorum.
    let mut stray_failure = false;
    let mut stray_undecided = false;
    for line in &diagnostics {
        match ids.owner_of_line(line).and_then(|id| outcomes.get_mut(id)) {
            Some(outcome) => outcome.failed = true,
            None => stray_failure = true,
        }
    }
    // (passed, inconclusive) of every check.
    let checks: Vec<(&str, bool, bool)> = report
        .budget_checks
        .iter()
        .flat_map(|c| {
            c.iter()
                .map(|(k, c)| (k.as_str(), c.passed, c.inconclusive))
        })
        .chain(report.regression_checks.iter().flat_map(|c| {
            c.iter()
                .map(|(k, c)| (k.as_str(), c.passed, c.inconclusive))
        }))
        .collect();
    for &(key, passed, inconclusive) in &checks {
        if passed {
            continue;
        }
        match ids.owner_of_line(key).and_then(|id| outcomes.get_mut(id)) {
            Some(outcome) if inconclusive => outcome.undecided = true,
            Some(outcome) => outcome.failed = true,
            None if inconclusive => stray_undecided = true,
            None => stray_failure = true,
        }
    }
    let failed = checks.iter().any(|&(_, p, i)| !p && !i) || !diagnostics.is_empty();
    let undecided = checks.iter().any(|&(_, _, i)| i);
    diagnostics.extend(inconclusive_diagnostics(
        report.budget_checks.as_ref(),
        report.regression_checks.as_ref(),
    ));

    // Each class against its quorum.
    let mut tallies: BTreeMap<&str, ClassTally> = BTreeMap::new();
    for agent in agents {
        let outcome = outcomes
            .get(agent.agent_id.as_str())
            .copied()
            .unwrap_or_default();
        let tally = tallies
            .entry(agent.hardware_class.as_str())
            .or_insert(ClassTally {
                gated: 0,
                passed: 0,
                open: 0,
                required: 0,
            });
        tally.gated += 1;
        tally.passed += usize::from(outcome.passed());
        tally.open += usize::from(outcome.open());
    }
    for tally in tallies.values_mut() {
        tally.required = quorum.required(tally.gated);
    }
    for (class, summary) in &mut report.hardware_classes {
        if let Some(t) = tallies.get(class.as_str()) {
            summary.passed = t.passed as u64;
            summary.gated = t.gated as u64;
            summary.quorum = t.required as u64;
            summary.quorum_met = t.met();
        }
    }
    // The agents that did not pass, in a class that met its quorum anyway.
    let tolerated: BTreeMap<&str, (&str, ClassTally)> = agents
        .iter()
        .filter_map(|a| {
            let tally = tallies.get(a.hardware_class.as_str())?;
            let outcome = outcomes.get(a.agent_id.as_str())?;
            (!outcome.passed() && tally.met())
                .then_some((a.agent_id.as_str(), (a.hardware_class.as_str(), *tally)))
        })
        .collect();
    for line in &mut diagnostics {
        if let Some((class, t)) = ids.owner_of_line(line).and_then(|id| tolerated.get(id)) {
            line.push_str(&format!(
                " (tolerated: class {class} passed {} of {}, quorum {})",
                t.passed, t.gated, t.required
            ));
        }
    }
    let open_untolerated = outcomes
        .iter()
        .any(|(id, o)| o.open_cause && !tolerated.contains_key(id));

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
    report.fleet_advice = outlier_lines(&report.hardware_classes);
    report.failure_diagnostics = diagnostics;
    report.passed = !failed && !undecided && !agents.is_empty();
    report.verdict = if agents.is_empty() || open_untolerated {
        Verdict::Inconclusive
    } else if stray_failure || tallies.values().any(|t| !t.reachable()) {
        Verdict::Fail
    } else if stray_undecided || tallies.values().any(|t| !t.met()) {
        // An interval that straddles its threshold leaves the verdict open, unless something
        // else failed outright.
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    report
}

/// The advice a regression report carries when its baseline is a point baseline.
fn point_baseline_advice(path: &str) -> String {
    format!(
        "baseline {path} is a point baseline (one run, no A/A distributions): its checks use the tolerances alone, with noise 0; record a calibrated one with `fleetgate run --repeat 10 --write-baseline PATH`"
    )
}

/// One advice line per outlier of every class.
fn outlier_lines(classes: &BTreeMap<String, ClassSummary>) -> Vec<String> {
    let mut lines = Vec::new();
    for (class, summary) in classes {
        for o in &summary.outliers {
            let plain = strip_instance(&o.metric);
            let spread = summary.metrics.get(&plain);
            let median = spread.map_or(f64::NAN, |s| s.median);
            let values = spread.map_or(0, |s| s.agents);
            let how = match o.robust_z {
                Some(z) => format!(
                    "robust z {z:.1} against the class median {} of {values} values",
                    format_value(&plain, median)
                ),
                None => format!(
                    "more than half of the class's {values} values are exactly {}",
                    format_value(&plain, median)
                ),
            };
            lines.push(format!(
                "{}/{}: {} is an outlier in class {class} ({how}); advice only, not part of the verdict: look at that host (another workload, throttling, a different configuration) before trusting the class's figures",
                o.agent,
                o.metric,
                format_value(&plain, o.value),
            ));
        }
    }
    lines
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

/// `|robust z|` above which an agent's value is an outlier of its class (Iglewicz and
/// Hoaglin's cut-off for the modified z-score).
pub const OUTLIER_Z: f64 = 3.5;

/// Fewest agents of a class with a metric for its outliers to be looked for.
pub const OUTLIER_MIN_AGENTS: usize = 3;

/// Per-class worst and median of every `<agent>/<runtime>.<metric>` value (the GPU instance
/// stripped, so a class's GPUs pool), how many agents each class has (`gated`), and its
/// outliers: where at least [`OUTLIER_MIN_AGENTS`] agents of the class have a metric, every
/// value whose robust z-score (`(value − median) / MAD`, MAD normal-scaled) exceeds
/// [`OUTLIER_Z`] in size. When the MAD is 0 (more than half the values are equal to the
/// median), every value that differs from the median is an outlier, without a z-score. The
/// quorum fields are left for the verdict to fill.
pub fn class_summaries(
    agents: &BTreeMap<String, AgentSection>,
    metrics: &BTreeMap<String, f64>,
) -> BTreeMap<String, ClassSummary> {
    let mut classes: BTreeMap<String, ClassSummary> = BTreeMap::new();
    for (id, agent) in agents {
        let summary = classes
            .entry(agent.hardware_class.clone())
            .or_insert_with(|| ClassSummary {
                agents: Vec::new(),
                metrics: BTreeMap::new(),
                passed: 0,
                gated: 0,
                quorum: 0,
                quorum_met: false,
                outliers: Vec::new(),
            });
        summary.agents.push(id.clone());
        summary.gated += 1;
    }
    let mut values: BTreeMap<(String, String), Vec<Reported<'_>>> = BTreeMap::new();
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
            .push(Reported {
                agent,
                metric: rest,
                value,
            });
    }
    for ((class, metric), found) in values {
        let mut v: Vec<f64> = found.iter().map(|r| r.value).collect();
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        let Some(summary) = classes.get_mut(&class) else {
            continue;
        };
        summary.metrics.insert(
            metric,
            MetricSpread {
                worst: v[v.len() - 1],
                median,
                agents: v.len() as u64,
            },
        );
        summary.outliers.extend(outliers(&found));
    }
    for summary in classes.values_mut() {
        summary
            .outliers
            .sort_by(|a, b| (&a.agent, &a.metric).cmp(&(&b.agent, &b.metric)));
    }
    classes
}

/// One agent's value of a metric, for its class's summary.
#[derive(Debug, Clone, Copy)]
struct Reported<'a> {
    agent: &'a str,
    /// `<runtime>.<metric>`, with the GPU instance if any.
    metric: &'a str,
    value: f64,
}

impl Reported<'_> {
    fn outlier(self, robust_z: Option<f64>) -> Outlier {
        Outlier {
            agent: self.agent.to_owned(),
            metric: self.metric.to_owned(),
            value: self.value,
            robust_z,
        }
    }
}

/// The outliers among one class's values of one metric (see [`class_summaries`]).
fn outliers(found: &[Reported<'_>]) -> Vec<Outlier> {
    let mut distinct: Vec<&str> = found.iter().map(|r| r.agent).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < OUTLIER_MIN_AGENTS {
        return Vec::new();
    }
    let xs: Vec<f64> = found.iter().map(|r| r.value).collect();
    match stats::robust_z_scores(&xs) {
        Ok(z) => found
            .iter()
            .zip(z.scores)
            .filter(|(_, score)| score.abs() > OUTLIER_Z)
            .map(|(r, score)| r.outlier(Some(score)))
            .collect(),
        // More than half the values are the median itself: any other value stands out.
        Err(StatsError::NoSpread { .. }) => match stats::median(&xs) {
            Ok(centre) => found
                .iter()
                .filter(|r| r.value != centre)
                .map(|r| r.outlier(None))
                .collect(),
            Err(_) => Vec::new(),
        },
        // A value that is not finite: no robust scale to judge by.
        Err(_) => Vec::new(),
    }
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
