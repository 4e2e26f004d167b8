//! What a run prints and writes besides the JSON report: the console summary (one line per
//! check, then the failures, then the overall status), a Markdown summary for CI step
//! summaries, and a JUnit XML file with one test case per check; and how every output file is
//! checked before a run ([`check_outputs`]) and written after it ([`write_output`]).

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

use std::collections::BTreeMap;
use std::time::Duration;

use fleetgate_common::atomic_file::{self, AtomicWriteError, WriteOptions};
use fleetgate_common::report::{
    AgentStatus, JobStatus, JobSummary, Report, RuntimeStatus, TelemetryLoss, Verdict,
    format_value, telemetry_losses,
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

/// A Markdown summary (for `$GITHUB_STEP_SUMMARY` and the like), GitHub-flavoured: the fleet
/// verdict first, then the agents and hardware classes, the checks, the failures, gate power
/// and fleet advice. `html` is the HTML report to link to (its path relative to where the
/// summary is read), if one was written. Text from the report is escaped, so an agent id or a
/// diagnostic cannot add formatting, links, HTML or table cells.
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
            let jobs: Vec<String> = agent
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
                .collect();
            let status = match agent.status {
                AgentStatus::Completed => "completed",
                AgentStatus::Lost => "**lost**",
                AgentStatus::TimedOut => "**timed out**",
                AgentStatus::Failed => "**failed**",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                md_text(id),
                md_text(&agent.hardware_class),
                status,
                format_seconds(agent.jobs.values().map(|j| j.wall_seconds.max(0.0)).sum()),
                jobs.join("<br>")
            ));
        }
        out.push('\n');
    }
    let unavailable: Vec<(&String, &str)> = report
        .runtimes
        .iter()
        .filter(|(_, s)| s.status == RuntimeStatus::Unavailable)
        .map(|(k, s)| (k, s.reason.as_deref().unwrap_or("unknown")))
        .collect();
    if !unavailable.is_empty() {
        out.push_str("### Unavailable runtimes\n\n| runtime | reason |\n| --- | --- |\n");
        for (key, reason) in unavailable {
            out.push_str(&format!("| {} | {} |\n", md_code(key), md_text(reason)));
        }
        out.push('\n');
    }
    out.push_str(
        "### Checks\n\n| check | value | threshold | result |\n| --- | ---: | ---: | --- |\n",
    );
    for row in &rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            md_code(row.metric),
            md_text(&format_value(row.metric, row.value)),
            md_text(&row.threshold),
            match (row.passed, row.inconclusive) {
                (true, _) => "pass",
                (false, true) => "**INCONCLUSIVE**",
                (false, false) => "**FAIL**",
            }
        ));
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
    out
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
