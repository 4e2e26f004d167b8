//! What a run prints and writes besides the JSON report: the console summary (one line per
//! check, then the failures, then the overall status), a Markdown summary for CI step
//! summaries, and a JUnit XML file with one test case per check; and how every output file is
//! checked before a run ([`check_outputs`]) and written after it ([`write_output`]).

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use fleetgate_common::atomic_file::{self, AtomicWriteError, WriteOptions};
use fleetgate_common::report::{
    AgentIds, AgentSection, AgentStatus, ClassSummary, JobStatus, JobSummary, MetricSpread, Report,
    RuntimeStatus, TelemetryLoss, Verdict, format_value, telemetry_losses,
};
use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};

/// The console summary, line by line.
pub fn console_lines(report: &Report, report_path: &str) -> Vec<String> {
    let mut lines = vec![format!("Operability report written to: {report_path}")];
    for (metric, c) in report.regression_checks.iter().flatten() {
        lines.push(format!(
            "{metric}: current={} baseline={} delta={}{} allowed={} [{}]",
            format_value(metric, c.current_value),
            format_value(metric, c.baseline_value),
            format_value(metric, c.delta),
            c.interval_note(metric),
            // The shift the check applied: the tolerance, or 3 × the class's noise if larger.
            format_value(metric, c.material_shift.unwrap_or(c.max_regression)),
            c.outcome()
        ));
    }
    for (metric, c) in report.budget_checks.iter().flatten() {
        lines.push(format!(
            "{metric}: value={}{} max={} [{}]",
            format_value(metric, c.value),
            c.interval_note(metric),
            format_value(metric, c.max_allowed),
            c.outcome()
        ));
    }
    if !report.failure_diagnostics.is_empty() {
        lines.push("Failures:".to_owned());
        lines.extend(report.failure_diagnostics.iter().map(|d| format!("- {d}")));
    }
    if !report.gate_power.is_empty() {
        lines.push("Gate power:".to_owned());
        lines.extend(report.gate_power.iter().map(|d| format!("- {d}")));
    }
    if !report.fleet_advice.is_empty() {
        lines.push("Fleet advice:".to_owned());
        lines.extend(report.fleet_advice.iter().map(|d| format!("- {d}")));
    }
    if !report.history_advice.is_empty() {
        lines.push("History:".to_owned());
        lines.extend(report.history_advice.iter().map(|d| format!("- {d}")));
    }
    lines.push(format!("Overall status: {}", pass_fail(report.passed)));
    lines.push(format!("Fleet verdict: {}", report.verdict.name()));
    lines
}

fn pass_fail(passed: bool) -> &'static str {
    if passed { "PASS" } else { "FAIL" }
}

/// The verdict as the summaries' headings show it.
fn verdict_heading(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Inconclusive => "INCONCLUSIVE",
    }
}

/// Which gate made a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateKind {
    Budget,
    Regression,
}

impl GateKind {
    fn name(self) -> &'static str {
        match self {
            GateKind::Budget => "budget",
            GateKind::Regression => "regression",
        }
    }
}

/// One gate check, whichever gate produced it.
struct CheckRow<'a> {
    metric: &'a str,
    value: f64,
    threshold: String,
    passed: bool,
    inconclusive: bool,
    gate: GateKind,
}

fn check_rows(report: &Report) -> Vec<CheckRow<'_>> {
    let mut rows: Vec<CheckRow<'_>> = report
        .budget_checks
        .iter()
        .flatten()
        .map(|(m, c)| CheckRow {
            metric: m,
            value: c.value,
            threshold: format!("max {}", format_value(m, c.max_allowed)),
            passed: c.passed,
            inconclusive: c.inconclusive,
            gate: GateKind::Budget,
        })
        .collect();
    rows.extend(
        report
            .regression_checks
            .iter()
            .flatten()
            .map(|(m, c)| CheckRow {
                metric: m,
                value: c.current_value,
                threshold: format!(
                    "baseline {} + {}",
                    format_value(m, c.baseline_value),
                    format_value(m, c.max_regression)
                ),
                passed: c.passed,
                inconclusive: c.inconclusive,
                gate: GateKind::Regression,
            }),
    );
    rows
}

/// `<agent>/<runtime>` of a check's `<agent>/<runtime>.<metric>` key, and the metric: agent
/// ids may hold dots, runtime and metric names do not.
fn split_metric(key: &str) -> (&str, &str) {
    key.rsplit_once('.').unwrap_or(("", key))
}

/// The agent of a `<agent>/<runtime>` key.
fn agent_of(runtime_key: &str) -> Option<&str> {
    runtime_key.split_once('/').map(|(agent, _)| agent)
}

/// The diagnostic line about `subject` (`<subject>: ...`), if any.
fn line_about<'a>(report: &'a Report, subject: &str) -> Option<&'a str> {
    let prefix = format!("{subject}: ");
    report
        .failure_diagnostics
        .iter()
        .find(|d| d.starts_with(&prefix))
        .map(String::as_str)
}

/// Seconds as a [`Duration`] (0 for a negative or non-finite value).
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or_default()
}

/// The run's wall time: agents run in parallel and each runs its jobs one at a time, so the
/// longest agent's total.
fn run_seconds(report: &Report) -> f64 {
    report
        .agents
        .values()
        .map(|a| {
            a.jobs
                .values()
                .map(|j| j.wall_seconds.max(0.0))
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}

/// Whether the agent of `runtime_key` is tolerated: its class met its quorum, so whatever it
/// did not pass does not decide the verdict.
fn tolerated(report: &Report, runtime_key: &str) -> bool {
    agent_of(runtime_key)
        .and_then(|agent| report.agents.get(agent))
        .and_then(|a| report.hardware_classes.get(&a.hardware_class))
        .is_some_and(|class| class.quorum_met)
}

/// How a JUnit case did not pass: a failure (the gate failed), an error (the run cannot say:
/// an inconclusive check, an unavailable runtime, a job that did not complete), or skipped (the
/// agent is tolerated by its class's quorum).
fn junit_status(kind: NonSuccessKind, ty: &str, text: &str, tolerated: bool) -> TestCaseStatus {
    let mut status = if tolerated {
        TestCaseStatus::skipped()
    } else {
        TestCaseStatus::non_success(kind)
    };
    let ty = if tolerated {
        format!("tolerated {ty}")
    } else {
        ty.to_owned()
    };
    status
        .set_type(ty)
        .set_message(text.lines().next().unwrap_or_default())
        .set_description(text);
    status
}

/// The case of one job (`<agent>/<runtime>`, named `job`): an error when the job did not
/// complete, its runtime was unavailable or its telemetry session could not be closed (each
/// makes the run inconclusive); a failure when a diagnostic about the runtime was raised
/// (collector failures, lost telemetry, failed retention validation, an unhealthy collector).
fn job_case(report: &Report, key: &str, job: Option<&JobSummary>) -> TestCase {
    let section = report.runtimes.get(key);
    let health: Vec<&str> = {
        let prefix = format!("{key}: ");
        report
            .failure_diagnostics
            .iter()
            .filter(|d| d.starts_with(&prefix))
            .map(String::as_str)
            .collect()
    };
    let job_line = match (agent_of(key), job) {
        (Some(agent), Some(job)) if job.status != JobStatus::Completed => {
            let runtime = key.split_once('/').map_or(key, |(_, rt)| rt);
            let prefix = format!("{agent}: ");
            let during = format!(" during {runtime} ");
            report
                .failure_diagnostics
                .iter()
                .find(|d| d.starts_with(&prefix) && d.contains(&during))
                .cloned()
                .or_else(|| {
                    Some(format!(
                        "{key}: job {}: {}",
                        job.status.name(),
                        job.reason.as_deref().unwrap_or("no reason given")
                    ))
                })
        }
        _ => None,
    };
    let tolerated = tolerated(report, key);
    let status = if let Some(line) = job_line {
        let ty = job.map_or("failed", |j| j.status.name());
        let text = std::iter::once(line.as_str())
            .chain(health.iter().copied())
            .collect::<Vec<_>>()
            .join("\n");
        junit_status(NonSuccessKind::Error, ty, &text, tolerated)
    } else if let Some(section) = section.filter(|s| s.status == RuntimeStatus::Unavailable) {
        let text = if health.is_empty() {
            format!(
                "{key}: unavailable - {}",
                section.reason.as_deref().unwrap_or("unknown")
            )
        } else {
            health.join("\n")
        };
        junit_status(NonSuccessKind::Error, "unavailable", &text, tolerated)
    } else if section.is_some_and(|s| {
        telemetry_losses(s)
            .iter()
            .any(TelemetryLoss::is_inconclusive)
    }) {
        junit_status(
            NonSuccessKind::Error,
            "telemetry",
            &health.join("\n"),
            tolerated,
        )
    } else if !health.is_empty() {
        junit_status(
            NonSuccessKind::Failure,
            "health",
            &health.join("\n"),
            tolerated,
        )
    } else {
        TestCaseStatus::success()
    };
    let mut case = TestCase::new("job", status);
    case.set_classname(key)
        .set_time(seconds(job.map_or(0.0, |j| j.wall_seconds)));
    case
}

/// The case of one gate check: a failure of type `budget` or `regression` carrying its
/// diagnostic, or an error of type `inconclusive`.
fn check_case(report: &Report, row: &CheckRow<'_>) -> TestCase {
    let (key, metric) = split_metric(row.metric);
    let status = if row.passed {
        TestCaseStatus::success()
    } else {
        let text = line_about(report, row.metric)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "{}: {} against {}",
                    row.metric,
                    format_value(row.metric, row.value),
                    row.threshold
                )
            });
        let (kind, ty) = if row.inconclusive {
            (NonSuccessKind::Error, "inconclusive")
        } else {
            (NonSuccessKind::Failure, row.gate.name())
        };
        junit_status(kind, ty, &text, tolerated(report, key))
    };
    let mut case = TestCase::new(metric, status);
    // A check is decided after the run, from its numbers: it takes no time of its own.
    case.set_classname(key).set_time(Duration::ZERO);
    case
}

/// The `fleetgate.verdict` case: it mirrors the exit code of `--check` (passes for 0, a
/// failure for 4, an error for 6), whatever the other cases show.
fn verdict_case(report: &Report) -> TestCase {
    let classes: Vec<String> = report
        .hardware_classes
        .iter()
        .map(|(name, c)| {
            format!(
                "class {name}: {} of {} agents passed, quorum {}",
                c.passed, c.gated, c.quorum
            )
        })
        .collect();
    let summary = format!(
        "fleet verdict: {}{}{}",
        report.verdict.name(),
        if classes.is_empty() { "" } else { "; " },
        classes.join("; ")
    );
    let status = match report.verdict {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Fail => junit_status(NonSuccessKind::Failure, "verdict", &summary, false),
        Verdict::Inconclusive => {
            junit_status(NonSuccessKind::Error, "inconclusive", &summary, false)
        }
    };
    let mut case = TestCase::new("verdict", status);
    case.set_classname("fleetgate")
        .set_time(seconds(run_seconds(report)));
    case
}

/// JUnit XML, valid against the Jenkins xunit plugin's `junit-10.xsd` (Surefire's format).
///
/// One `<testsuite>` per job, named `<agent>/<runtime>` (its `time` the job's wall time, its
/// `hostname` the agent's): a `job` case for the job itself, then one case per gate check of
/// its metrics, named by the metric. A failed check is a `<failure>` of type `budget` or
/// `regression`; an inconclusive check, an unavailable runtime, a job that did not complete
/// and a telemetry session left open are an `<error>` (the run cannot say; `--check` exits 6);
/// what a class's quorum tolerates is `<skipped>` (type `tolerated ...`). Each carries its
/// diagnostic as the message (first line) and the text. A last suite, `fleetgate`, holds the
/// run's properties, the `verdict` case that mirrors the exit code, and every diagnostic,
/// gate-power and fleet-advice line in its `<system-out>`. `<testsuites>` carries the totals
/// and, as `time`, the run's wall time (the longest agent's jobs).
pub fn junit(report: &Report) -> Result<String, quick_junit::SerializeError> {
    let rows = check_rows(report);
    let mut suites: BTreeMap<String, TestSuite> = BTreeMap::new();
    let new_suite = |key: &str| {
        let mut suite = TestSuite::new(key);
        suite
            .extra
            .insert("timestamp".into(), report.timestamp_utc.as_str().into());
        suite
    };
    for (agent_id, agent) in &report.agents {
        for (runtime, job) in &agent.jobs {
            let key = format!("{agent_id}/{runtime}");
            let mut suite = new_suite(&key);
            suite
                .extra
                .insert("hostname".into(), agent.facts.hostname.as_str().into());
            suite.set_time(seconds(job.wall_seconds));
            suite.add_property(Property::new(
                "hardware_class",
                agent.hardware_class.as_str(),
            ));
            suite.add_test_case(job_case(report, &key, Some(job)));
            suites.insert(key, suite);
        }
    }
    // Sections and checks of no known job (a report without agents) get a suite of their own.
    for key in report.runtimes.keys() {
        if !suites.contains_key(key) {
            let mut suite = new_suite(key);
            suite.add_test_case(job_case(report, key, None));
            suites.insert(key.clone(), suite);
        }
    }
    for row in &rows {
        let (key, _) = split_metric(row.metric);
        suites
            .entry(key.to_owned())
            .or_insert_with(|| new_suite(key))
            .add_test_case(check_case(report, row));
    }

    let mut fleet = new_suite("fleetgate");
    fleet.set_time(seconds(run_seconds(report)));
    let mut properties = vec![
        Property::new("profile", report.profile.as_str()),
        Property::new("mode", report.mode.as_str()),
        Property::new("gate_mode", report.gate_mode.as_str()),
        Property::new("verdict", report.verdict.name()),
        Property::new("report_version", report.version.as_str()),
    ];
    if let Some(g) = &report.generator {
        properties.push(Property::new(
            "generator",
            format!("{} {} (commit {})", g.name, g.version, g.commit),
        ));
    }
    fleet.add_properties(properties);
    fleet.add_test_case(verdict_case(report));
    let mut out = String::new();
    for (title, lines) in [
        ("Failures", &report.failure_diagnostics),
        ("Gate power", &report.gate_power),
        ("Fleet advice", &report.fleet_advice),
    ] {
        if !lines.is_empty() {
            out.push_str(title);
            out.push_str(":\n");
            for line in lines {
                out.push_str("- ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !out.is_empty() {
        fleet.set_system_out(out);
    }

    let mut junit = quick_junit::Report::new("fleetgate");
    junit.set_time(seconds(run_seconds(report)));
    junit.add_test_suites(suites.into_values());
    junit.add_test_suite(fleet);
    let mut xml = without_root_skipped(junit.to_string()?, junit.skipped);
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(xml)
}

/// `xml` without the `skipped` attribute of its `<testsuites>` element, which quick-junit always
/// writes and `junit-10.xsd` does not allow there (each `<testsuite>` keeps its own count).
fn without_root_skipped(xml: String, skipped: usize) -> String {
    let attribute = format!(" skipped=\"{skipped}\"");
    let Some(start) = xml.find("<testsuites") else {
        return xml;
    };
    let Some(length) = xml[start..].find('>') else {
        return xml;
    };
    let root = &xml[start..start + length];
    match root.find(&attribute) {
        Some(at) => {
            let at = start + at;
            format!("{}{}", &xml[..at], &xml[at + attribute.len()..])
        }
        None => xml,
    }
}

/// Fleets of at most this many agents get the whole Markdown summary: a row per agent and per
/// check, and every diagnostic. A larger fleet's summary is bounded (see [`markdown`]).
pub const MARKDOWN_ALL_AGENTS: usize = 10;
/// Most agents a larger fleet's Markdown summary lists (those that did not pass, failures
/// first); also the most rows of its hardware class and unavailable runtime tables.
pub const MARKDOWN_AGENT_ROWS: usize = 50;
/// Most checks that did not pass a larger fleet's Markdown summary lists.
pub const MARKDOWN_CHECK_ROWS: usize = 200;
/// Most rows of a larger fleet's class metrics table.
pub const MARKDOWN_SPREAD_ROWS: usize = 100;
/// Most lines of each diagnostic or advice list in a larger fleet's Markdown summary.
pub const MARKDOWN_LIST_LINES: usize = 30;
/// Most characters a larger fleet's Markdown summary quotes of one diagnostic, advice line or
/// reason; a longer one is cut, with a note.
pub const MARKDOWN_LINE_CHARS: usize = 1_000;

/// A Markdown summary (for `$GITHUB_STEP_SUMMARY` and the like), GitHub-flavoured: the fleet
/// verdict and the totals first, then, for a fleet of at most [`MARKDOWN_ALL_AGENTS`] agents,
/// the hardware classes, every agent, every check, the failures, gate power and fleet advice.
///
/// A larger fleet's summary stays small enough for a CI step summary or a pull request
/// comment whatever its size: the hardware classes (those that missed their quorum first) with
/// their outliers and each metric's median and worst value, the failures and the inconclusive
/// diagnostics, then only the agents that did not pass (failures first) and their checks that
/// did not pass, each table and list cut at its limit (the `MARKDOWN_*` constants) with a line
/// saying how many more there are, and each quoted line at [`MARKDOWN_LINE_CHARS`]; the checks
/// that passed are counted, not listed. Every agent and check is in the JSON report.
///
/// `html` is the HTML report to link to (its path relative to where the summary is read), if
/// one was written. Text from the report is escaped, so an agent id or a diagnostic cannot add
/// formatting, links, HTML or table cells.
pub fn markdown(report: &Report, html: Option<&str>) -> String {
    let rows = check_rows(report);
    let count = |f: &dyn Fn(&CheckRow<'_>) -> bool| rows.iter().filter(|r| f(r)).count();
    let failed = count(&|r| !r.passed && !r.inconclusive);
    let inconclusive = count(&|r| !r.passed && r.inconclusive);
    let mut out = format!(
        "## fleetgate {} report: {}\n\n",
        md_text(&report.version),
        verdict_heading(report.verdict)
    );
    out.push_str(&format!(
        "**Fleet verdict: {}.** {} agent{} in {} hardware class{}; {} check{}: {} passed, {} failed, {} inconclusive; run time {}.\n\n",
        verdict_heading(report.verdict),
        report.agents.len(),
        plural(report.agents.len()),
        report.hardware_classes.len(),
        if report.hardware_classes.len() == 1 { "" } else { "es" },
        rows.len(),
        plural(rows.len()),
        rows.len() - failed - inconclusive,
        failed,
        inconclusive,
        format_seconds(run_seconds(report)),
    ));
    out.push_str(&format!(
        "Profile {}, mode {}, gate {}, {}",
        md_code(&report.profile),
        md_code(&report.mode),
        md_code(&report.gate_mode),
        md_text(&report.timestamp_utc)
    ));
    if let Some(g) = &report.generator {
        out.push_str(&format!(
            "; made by {} {} (commit {})",
            md_text(&g.name),
            md_text(&g.version),
            md_code(&g.commit)
        ));
    }
    out.push_str(".\n\n");
    if let Some(path) = html {
        out.push_str(&format!(
            "HTML report: [{}](<{}>)\n\n",
            md_text(path),
            md_destination(path)
        ));
    }

    if report.agents.len() <= MARKDOWN_ALL_AGENTS {
        every_row(&mut out, report, &rows);
    } else {
        bounded_summary(&mut out, report, &rows);
    }
    out
}

/// The Markdown summary's tables and lists for a small fleet: every class, agent, runtime
/// that could not run, check and diagnostic.
fn every_row(out: &mut String, report: &Report, rows: &[CheckRow<'_>]) {
    if !report.hardware_classes.is_empty() {
        out.push_str("### Hardware classes\n\n| class | agents | passed | quorum | quorum met |\n| --- | ---: | ---: | ---: | --- |\n");
        for (name, c) in &report.hardware_classes {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                md_text(name),
                c.agents.len(),
                c.passed,
                c.quorum,
                if c.quorum_met { "yes" } else { "**no**" }
            ));
        }
        out.push('\n');
    }
    if !report.agents.is_empty() {
        out.push_str("### Agents\n\n| agent | class | status | wall time | jobs |\n| --- | --- | --- | ---: | --- |\n");
        for (id, agent) in &report.agents {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                md_text(id),
                md_text(&agent.hardware_class),
                md_agent_status(agent.status),
                format_seconds(agent.jobs.values().map(|j| j.wall_seconds.max(0.0)).sum()),
                md_jobs(agent)
            ));
        }
        out.push('\n');
    }
    let unavailable = unavailable_runtimes(report);
    if !unavailable.is_empty() {
        out.push_str(UNAVAILABLE_HEADER);
        for (key, reason) in unavailable {
            out.push_str(&md_unavailable_row(key, reason));
        }
        out.push('\n');
    }
    out.push_str(CHECKS_HEADER);
    for row in rows {
        out.push_str(&md_check_row(row));
    }
    for (title, lines) in [
        ("Failures", &report.failure_diagnostics),
        ("Gate power", &report.gate_power),
        ("Fleet advice", &report.fleet_advice),
    ] {
        if !lines.is_empty() {
            out.push_str(&format!("\n### {title}\n\n"));
            for line in lines {
                out.push_str(&format!("- {}\n", md_text(line)));
            }
        }
    }
}

const UNAVAILABLE_HEADER: &str =
    "### Unavailable runtimes\n\n| runtime | reason |\n| --- | --- |\n";
const CHECKS_HEADER: &str =
    "### Checks\n\n| check | value | threshold | result |\n| --- | ---: | ---: | --- |\n";

/// An agent's status in a Markdown table: in bold when it did not complete.
fn md_agent_status(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Completed => "completed",
        AgentStatus::Lost => "**lost**",
        AgentStatus::TimedOut => "**timed out**",
        AgentStatus::Failed => "**failed**",
    }
}

/// An agent's jobs in a Markdown table cell: each runtime, how its job ended and its wall time.
fn md_jobs(agent: &AgentSection) -> String {
    agent
        .jobs
        .iter()
        .map(|(runtime, j)| {
            format!(
                "{} {} ({})",
                md_code(runtime),
                j.status.name(),
                format_seconds(j.wall_seconds)
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// The runtimes that could not run (`<agent>/<runtime>`) and why.
fn unavailable_runtimes(report: &Report) -> Vec<(&str, &str)> {
    report
        .runtimes
        .iter()
        .filter(|(_, s)| s.status == RuntimeStatus::Unavailable)
        .map(|(k, s)| (k.as_str(), s.reason.as_deref().unwrap_or("unknown")))
        .collect()
}

fn md_unavailable_row(key: &str, reason: &str) -> String {
    format!("| {} | {} |\n", md_code(key), md_text(reason))
}

fn md_check_row(row: &CheckRow<'_>) -> String {
    format!(
        "| {} | {} | {} | {} |\n",
        md_code(row.metric),
        md_text(&format_value(row.metric, row.value)),
        md_text(&row.threshold),
        match (row.passed, row.inconclusive) {
            (true, _) => "pass",
            (false, true) => "**INCONCLUSIVE**",
            (false, false) => "**FAIL**",
        }
    )
}

/// How an agent did, worst first (the order a large fleet's summary lists agents in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Fail,
    Inconclusive,
    Pass,
}

impl Outcome {
    fn md(self) -> &'static str {
        match self {
            Outcome::Fail => "**FAIL**",
            Outcome::Inconclusive => "**INCONCLUSIVE**",
            Outcome::Pass => "pass",
        }
    }
}

/// One agent in a large fleet's summary: how it did (failed if a check failed or a diagnostic
/// names it, inconclusive if a check was, a diagnostic about it says so or it did not
/// complete), its checks that passed (counted) and those that did not (indices into the check
/// rows).
struct AgentTally {
    outcome: Outcome,
    checks_passed: usize,
    checks_failed: usize,
    checks_inconclusive: usize,
    not_passed: Vec<usize>,
}

/// The summary's tables and lists for a fleet of more than [`MARKDOWN_ALL_AGENTS`] agents (see
/// [`markdown`]): bounded by the `MARKDOWN_*` limits, however many agents and checks it has.
fn bounded_summary(out: &mut String, report: &Report, rows: &[CheckRow<'_>]) {
    let ids = AgentIds::new(report.agents.keys().map(String::as_str));
    let mut agents: BTreeMap<&str, AgentTally> = report
        .agents
        .iter()
        .map(|(id, a)| {
            let outcome = if a.status == AgentStatus::Completed {
                Outcome::Pass
            } else {
                Outcome::Inconclusive
            };
            let tally = AgentTally {
                outcome,
                checks_passed: 0,
                checks_failed: 0,
                checks_inconclusive: 0,
                not_passed: Vec::new(),
            };
            (id.as_str(), tally)
        })
        .collect();
    // Checks that did not pass and belong to no agent (a report without agents).
    let mut no_agent = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(tally) = ids
            .owner_of_key(row.metric)
            .and_then(|id| agents.get_mut(id))
        else {
            if !row.passed {
                no_agent.push(i);
            }
            continue;
        };
        if row.passed {
            tally.checks_passed += 1;
            continue;
        }
        let outcome = if row.inconclusive {
            tally.checks_inconclusive += 1;
            Outcome::Inconclusive
        } else {
            tally.checks_failed += 1;
            Outcome::Fail
        };
        tally.outcome = tally.outcome.min(outcome);
        tally.not_passed.push(i);
    }
    let (inconclusive, failures): (Vec<&str>, Vec<&str>) = report
        .failure_diagnostics
        .iter()
        .map(String::as_str)
        .partition(|d| d.contains("inconclusive"));
    for (lines, outcome) in [
        (&failures, Outcome::Fail),
        (&inconclusive, Outcome::Inconclusive),
    ] {
        for line in lines {
            if let Some(tally) = ids.owner_of_line(line).and_then(|id| agents.get_mut(id)) {
                tally.outcome = tally.outcome.min(outcome);
            }
        }
    }
    // Agents that did not pass, failures first, then by id (the map's order).
    let mut not_passing: Vec<(&str, &AgentTally)> = agents
        .iter()
        .filter(|(_, t)| t.outcome != Outcome::Pass)
        .map(|(id, t)| (*id, t))
        .collect();
    not_passing.sort_by_key(|(_, t)| t.outcome);
    let shown_agents = &not_passing[..not_passing.len().min(MARKDOWN_AGENT_ROWS)];

    out.push_str(&format!(
        "This fleet has more than {MARKDOWN_ALL_AGENTS} agents, so this summary lists its hardware classes, its diagnostics (at most {MARKDOWN_LIST_LINES} of each kind) and the agents that did not pass (at most {MARKDOWN_AGENT_ROWS}, failures first, with at most {MARKDOWN_CHECK_ROWS} of their checks). Every agent and every check is in the JSON report.\n\n"
    ));

    if !report.hardware_classes.is_empty() {
        // Classes that missed their quorum first, then by name (the map's order).
        let mut classes: Vec<(&String, &ClassSummary)> = report.hardware_classes.iter().collect();
        classes.sort_by_key(|(_, c)| c.quorum_met);
        out.push_str("### Hardware classes\n\n| class | agents | passed | quorum | quorum met | outliers |\n| --- | ---: | ---: | ---: | --- | ---: |\n");
        for (name, c) in classes.iter().take(MARKDOWN_AGENT_ROWS) {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                md_text(name),
                c.agents.len(),
                c.passed,
                c.quorum,
                if c.quorum_met { "yes" } else { "**no**" },
                c.outliers.len()
            ));
        }
        out.push('\n');
        not_listed(out, classes.len(), MARKDOWN_AGENT_ROWS, "hardware classes");

        let spreads: Vec<(&String, &String, &MetricSpread)> = classes
            .iter()
            .flat_map(|(name, c)| c.metrics.iter().map(move |(m, s)| (*name, m, s)))
            .collect();
        if !spreads.is_empty() {
            out.push_str("### Class metrics\n\nEach metric's median and worst (largest) value over a class's agents.\n\n| class | metric | median | worst | agents |\n| --- | --- | ---: | ---: | ---: |\n");
            for (class, metric, spread) in spreads.iter().take(MARKDOWN_SPREAD_ROWS) {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    md_text(class),
                    md_code(metric),
                    md_text(&format_value(metric, spread.median)),
                    md_text(&format_value(metric, spread.worst)),
                    spread.agents
                ));
            }
            out.push('\n');
            not_listed(out, spreads.len(), MARKDOWN_SPREAD_ROWS, "class metrics");
        }
    }
    md_list(out, "Fleet advice", &report.fleet_advice, "advice lines");
    md_list(out, "Failures", &failures, "failures");
    md_list(
        out,
        "Inconclusive",
        &inconclusive,
        "inconclusive diagnostics",
    );

    let mut shown_checks: Vec<usize> = shown_agents
        .iter()
        .flat_map(|(_, t)| t.not_passed.iter().copied())
        .chain(no_agent)
        .collect();
    let checks_not_passed = rows.iter().filter(|r| !r.passed).count();
    shown_checks.truncate(MARKDOWN_CHECK_ROWS);
    if !shown_agents.is_empty() {
        out.push_str("### Agents that did not pass\n\n| agent | class | status | outcome | checks failed | checks inconclusive | jobs |\n| --- | --- | --- | --- | ---: | ---: | --- |\n");
        for (id, tally) in shown_agents {
            let agent = &report.agents[*id];
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                md_text(id),
                md_text(&agent.hardware_class),
                md_agent_status(agent.status),
                tally.outcome.md(),
                tally.checks_failed,
                tally.checks_inconclusive,
                md_jobs(agent)
            ));
        }
        out.push('\n');
    }
    if !shown_checks.is_empty() {
        out.push_str(
            "### Checks that did not pass\n\n| check | value | threshold | result |\n| --- | ---: | ---: | --- |\n",
        );
        for &i in &shown_checks {
            out.push_str(&md_check_row(&rows[i]));
        }
        out.push('\n');
    }
    let agents_passed = report.agents.len() - not_passing.len();
    let checks_passed = rows.len() - checks_not_passed;
    out.push_str(&format!(
        "Not shown here: {} agent{} ({agents_passed} that passed, {} more that did not) and {} check{} ({checks_passed} that passed, {} more that did not). Every agent and every check is in the JSON report.\n\n",
        report.agents.len() - shown_agents.len(),
        plural(report.agents.len() - shown_agents.len()),
        not_passing.len() - shown_agents.len(),
        rows.len() - shown_checks.len(),
        plural(rows.len() - shown_checks.len()),
        checks_not_passed - shown_checks.len(),
    ));

    let unavailable = unavailable_runtimes(report);
    if !unavailable.is_empty() {
        out.push_str(UNAVAILABLE_HEADER);
        for (key, reason) in unavailable.iter().take(MARKDOWN_AGENT_ROWS) {
            out.push_str(&md_unavailable_row(key, &clipped(reason)));
        }
        out.push('\n');
        not_listed(
            out,
            unavailable.len(),
            MARKDOWN_AGENT_ROWS,
            "runtimes that could not run",
        );
    }
    md_list(out, "Gate power", &report.gate_power, "gate power lines");
}

/// `lines` as a Markdown list under `### title`, at most [`MARKDOWN_LIST_LINES`] of them, then
/// how many more there are (`what` names them).
fn md_list(out: &mut String, title: &str, lines: &[impl AsRef<str>], what: &str) {
    if lines.is_empty() {
        return;
    }
    out.push_str(&format!("### {title}\n\n"));
    for line in lines.iter().take(MARKDOWN_LIST_LINES) {
        out.push_str(&format!("- {}\n", md_text(&clipped(line.as_ref()))));
    }
    out.push('\n');
    not_listed(out, lines.len(), MARKDOWN_LIST_LINES, what);
}

/// `text`, cut after [`MARKDOWN_LINE_CHARS`] characters with a note saying so.
fn clipped(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MARKDOWN_LINE_CHARS) {
        Some((at, _)) => Cow::Owned(format!(
            "{} … (cut here; the JSON report has it whole)",
            &text[..at]
        )),
        None => Cow::Borrowed(text),
    }
}

/// The paragraph after a table or list cut at `limit` of its `total` entries: how many are left
/// out (`what` names them, in the plural).
fn not_listed(out: &mut String, total: usize, limit: usize, what: &str) {
    if total > limit {
        out.push_str(&format!(
            "Not listed here: {} of the {total} {what}; the JSON report has them all.\n\n",
            total - limit
        ));
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn format_seconds(value: f64) -> String {
    format!("{:.1} s", value.max(0.0))
}

/// `text` as literal Markdown inline text, in a paragraph, a list item or a table cell: every
/// character that could start emphasis, a code span, a link, an HTML tag or entity, a table
/// cell or strikethrough is backslash-escaped; a `#`, `+`, `-`, `=` or ordered-list marker that
/// would open a block at the start is escaped too; line breaks become `<br>`.
fn md_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push_str("<br>");
        }
        let line = line.trim_start();
        // A line that starts like a block (heading, list item, setext underline) or an ordered
        // list item (`1.`, `2)`).
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        let ordered = (1..=9).contains(&digits)
            && matches!(line.as_bytes().get(digits), Some(b'.' | b')'))
            && line
                .as_bytes()
                .get(digits + 1)
                .is_none_or(u8::is_ascii_whitespace);
        for (j, c) in line.char_indices() {
            let block_start = j == 0 && matches!(c, '#' | '+' | '-' | '=');
            if block_start
                || (ordered && j == digits)
                || matches!(
                    c,
                    '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&'
                )
            {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// `text` as a Markdown code span: fenced by more backticks than it holds in a row, padded
/// when it starts or ends with one, `|` escaped (GitHub splits table cells before code spans)
/// and line breaks as spaces.
fn md_code(text: &str) -> String {
    let text = text.replace(['\r', '\n'], " ").replace('|', "\\|");
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// `path` as a Markdown link destination in angle brackets.
fn md_destination(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '\\' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// A file a run writes or reads, with the flag that names it.
#[derive(Debug, Clone, Copy)]
pub struct NamedPath<'a> {
    /// The flag (`--output`).
    pub flag: &'a str,
    /// The path as given.
    pub path: &'a Path,
}

/// Why an output path was refused before the run, or its file not written after it.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Two outputs, or an output and an input, are the same file (a usage error).
    #[error("{flag} {}: {message}", path.display())]
    Conflict {
        /// The output's flag.
        flag: String,
        /// The output's path.
        path: PathBuf,
        /// Which other file it is.
        message: String,
    },
    /// The path cannot hold the file: a directory, a device, a parent that is a file, a folder
    /// that cannot be written.
    #[error("{flag} {}: {message}", path.display())]
    Unwritable {
        /// The output's flag.
        flag: String,
        /// The output's path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The output's folder could not be made after the run.
    #[error("{flag}: cannot create the folder {}: {error}", folder.display())]
    CreateFolder {
        /// The output's flag.
        flag: String,
        /// The folder.
        folder: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// Writing the file failed after the run; a file there before is unchanged.
    #[error("{flag}: {error}; the file there before, if any, is unchanged")]
    Write {
        /// The output's flag.
        flag: String,
        /// The error.
        error: AtomicWriteError,
    },
}

impl OutputError {
    /// Whether this is a usage error (exit 2) rather than a place that cannot be written
    /// (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, OutputError::Conflict { .. })
    }
}

/// Checks every output path before anything runs, without creating anything: no two outputs
/// and no output and input are the same file (compared after resolving symbolic links, `..`
/// and hard links), then each output is a regular file or nothing, its nearest existing
/// ancestor is a directory, and a file can be created there.
pub fn check_outputs(
    outputs: &[NamedPath<'_>],
    inputs: &[NamedPath<'_>],
) -> Result<(), OutputError> {
    let identities: Vec<FileIdentity> = outputs.iter().map(|o| FileIdentity::of(o.path)).collect();
    for (i, output) in outputs.iter().enumerate() {
        let conflict = |message: String| OutputError::Conflict {
            flag: output.flag.to_owned(),
            path: output.path.to_path_buf(),
            message,
        };
        for (earlier, identity) in outputs[..i].iter().zip(&identities) {
            if identity.same_as(&identities[i]) {
                return Err(conflict(format!(
                    "is also the file given to {}; give each output its own path",
                    earlier.flag
                )));
            }
        }
        for input in inputs {
            if FileIdentity::of(input.path).same_as(&identities[i]) {
                return Err(conflict(format!(
                    "is the file given to {}, an input of this run; an output must not replace it",
                    input.flag
                )));
            }
        }
    }
    outputs.iter().try_for_each(check_place)
}

/// Writes an output after the run: its folder is made if missing, and the file is replaced
/// atomically (see [`atomic_file`]). A symbolic link to a file stays, and its target is
/// replaced.
pub fn write_output(flag: &str, path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let folder = atomic_file::folder_of(&target);
    std::fs::create_dir_all(folder).map_err(|error| OutputError::CreateFolder {
        flag: flag.to_owned(),
        folder: folder.to_path_buf(),
        error,
    })?;
    atomic_file::write(&target, bytes, WriteOptions::REPLACE).map_err(|error| OutputError::Write {
        flag: flag.to_owned(),
        error,
    })
}

/// A path resolved for comparison: absolute, symbolic links and `..` resolved as far as the
/// path exists, and the file's device and inode when it exists.
#[derive(Debug, PartialEq, Eq)]
struct FileIdentity {
    path: PathBuf,
    inode: Option<(u64, u64)>,
}

impl FileIdentity {
    fn of(path: &Path) -> Self {
        let inode = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // Component by component: resolved (links and all) as far as the path exists, then
        // `.` and `..` applied to the folders still to be made, which cannot be links.
        let mut path = PathBuf::new();
        for part in absolute.components() {
            match part {
                Component::CurDir => {}
                Component::ParentDir => {
                    path.pop();
                }
                other => {
                    path.push(other);
                    if let Ok(real) = std::fs::canonicalize(&path) {
                        path = real;
                    }
                }
            }
        }
        FileIdentity { path, inode }
    }

    fn same_as(&self, other: &FileIdentity) -> bool {
        self.path == other.path || (self.inode.is_some() && self.inode == other.inode)
    }
}

/// Whether `output` can hold a file: see [`check_outputs`].
fn check_place(output: &NamedPath<'_>) -> Result<(), OutputError> {
    let refuse = |message: String| OutputError::Unwritable {
        flag: output.flag.to_owned(),
        path: output.path.to_path_buf(),
        message,
    };
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        )
    };
    let folder = match std::fs::metadata(output.path) {
        Ok(meta) if meta.is_dir() => {
            return Err(refuse("is a directory; give a file path".to_owned()));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(refuse(format!(
                "is a {}, not a regular file; give a file path",
                special_kind(&meta.file_type())
            )));
        }
        // The file is replaced in its folder (through a link, in the target's folder).
        Ok(_) => {
            let target = std::fs::canonicalize(output.path).map_err(|e| refuse(e.to_string()))?;
            atomic_file::folder_of(&target).to_path_buf()
        }
        Err(e) if gone(&e) => {
            // The nearest ancestor that exists must be a directory the folders can be made in.
            let mut ancestor = atomic_file::folder_of(output.path);
            loop {
                match std::fs::metadata(ancestor) {
                    Ok(meta) if meta.is_dir() => break ancestor.to_path_buf(),
                    Ok(_) => {
                        return Err(refuse(format!(
                            "{} is a file, not a directory",
                            ancestor.display()
                        )));
                    }
                    Err(e) if gone(&e) => ancestor = atomic_file::folder_of(ancestor),
                    Err(e) => return Err(refuse(format!("{}: {e}", ancestor.display()))),
                }
            }
        }
        Err(e) => return Err(refuse(e.to_string())),
    };
    atomic_file::check_folder_takes_files(&folder)
        .map_err(|e| refuse(format!("cannot create a file in {}: {e}", folder.display())))
}

fn special_kind(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hard_link_a_symbolic_link_and_a_dotted_path_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("report.json");
        std::fs::write(&file, "x").unwrap();
        let hard = dir.path().join("hard.json");
        std::fs::hard_link(&file, &hard).unwrap();
        let soft = dir.path().join("soft.json");
        std::os::unix::fs::symlink(&file, &soft).unwrap();
        let dotted = dir.path().join("missing/./../report.json");
        let other = dir.path().join("missing/report.json");
        let id = FileIdentity::of(&file);
        for same in [&hard, &soft, &dotted] {
            assert!(FileIdentity::of(same).same_as(&id), "{}", same.display());
        }
        assert!(!FileIdentity::of(&other).same_as(&id));
        // Two outputs still to be made at one place are the same file too.
        assert!(FileIdentity::of(&other).same_as(&FileIdentity::of(
            &dir.path().join("missing/../missing/report.json")
        )));
    }

    #[test]
    fn keys_and_diagnostics_belong_to_the_longest_matching_agent() {
        let ids = AgentIds::new(["a", "a-b", "a/b"]);
        assert_eq!(
            ids.owner_of_key("a/gpumemprof_cpu.rollover_count"),
            Some("a")
        );
        assert_eq!(
            ids.owner_of_key("a-b/gpumemprof_cpu.rollover_count"),
            Some("a-b")
        );
        assert_eq!(
            ids.owner_of_key("a/b/gpumemprof_cpu.rollover_count"),
            Some("a/b")
        );
        assert_eq!(ids.owner_of_key("a/b/c/x.y"), Some("a/b"));
        assert_eq!(ids.owner_of_key("gpumemprof_cpu.rollover_count"), None);
        assert_eq!(ids.owner_of_key("a: x/y"), None);
        assert_eq!(ids.owner_of_line("a-b: lost during soak"), Some("a-b"));
        assert_eq!(
            ids.owner_of_line("a/b/gpumemprof_cpu: collector unhealthy: see a/x"),
            Some("a/b")
        );
        assert_eq!(ids.owner_of_line("a: lost; a/b: too"), Some("a"));
        assert_eq!(ids.owner_of_line("ab: lost"), None);
    }

    #[test]
    fn a_quoted_line_is_cut_after_its_limit_with_a_note() {
        assert_eq!(clipped("short"), "short");
        let long = "é".repeat(MARKDOWN_LINE_CHARS + 5);
        let cut = clipped(&long);
        assert!(cut.starts_with(&"é".repeat(MARKDOWN_LINE_CHARS)));
        assert!(
            cut.ends_with("é … (cut here; the JSON report has it whole)"),
            "{cut}"
        );
    }

    #[test]
    fn markdown_text_escapes_everything_that_formats() {
        assert_eq!(
            md_text("a*b_c`d[e](f)<g>|h~i&j\\k"),
            "a\\*b\\_c\\`d\\[e\\](f)\\<g\\>\\|h\\~i\\&j\\\\k"
        );
        // Block starts only at the start of a line; a line break is a `<br>`.
        assert_eq!(md_text("# x #"), "\\# x #");
        assert_eq!(
            md_text("- x\n+ y\n12. z\n3) w"),
            "\\- x<br>\\+ y<br>12\\. z<br>3\\) w"
        );
        assert_eq!(md_text("0.1.0 and 1.5 s"), "0.1.0 and 1.5 s");
        assert_eq!(md_text("    code?"), "code?");
        assert_eq!(md_text("plain text: ok"), "plain text: ok");
    }

    #[test]
    fn a_code_span_outlasts_the_backticks_it_holds() {
        assert_eq!(md_code("a.b"), "`a.b`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`a``"), "``` `a`` ```");
        assert_eq!(md_code("a|b\nc"), "`a\\|b c`");
    }

    #[test]
    fn a_link_destination_keeps_its_angle_brackets_closed() {
        assert_eq!(md_destination("a b/<c>.html"), "a b/\\<c\\>.html");
    }

    #[test]
    fn only_the_root_loses_its_skipped_count() {
        let xml = "<?xml?>\n<testsuites name=\"fleetgate\" tests=\"2\" skipped=\"1\" failures=\"0\">\n<testsuite name=\"a\" tests=\"2\" skipped=\"1\"/>\n</testsuites>\n";
        assert_eq!(
            without_root_skipped(xml.to_owned(), 1),
            "<?xml?>\n<testsuites name=\"fleetgate\" tests=\"2\" failures=\"0\">\n<testsuite name=\"a\" tests=\"2\" skipped=\"1\"/>\n</testsuites>\n"
        );
    }
}
