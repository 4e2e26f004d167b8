//! What a run prints and writes besides the JSON report: the console summary (one line per
//! check, then the failures, then the overall status), a Markdown summary for CI step
//! summaries, and a JUnit XML file with one test case per check.

use fleetgate_common::report::{Report, format_value};

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
            format_value(metric, c.max_regression),
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
    lines.push(format!("Overall status: {}", pass_fail(report.passed)));
    lines.push(format!("Fleet verdict: {}", report.verdict.name()));
    lines
}

fn pass_fail(passed: bool) -> &'static str {
    if passed { "PASS" } else { "FAIL" }
}

/// One gate check, whichever gate produced it.
struct CheckRow<'a> {
    metric: &'a str,
    value: f64,
    threshold: String,
    passed: bool,
    inconclusive: bool,
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
            }),
    );
    rows
}

/// A Markdown summary (for `$GITHUB_STEP_SUMMARY` and the like).
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "## fleetgate {} report: {}\n\nProfile `{}`, mode `{}`, gate `{}`, {}.\n\n",
        report.version,
        pass_fail(report.passed),
        report.profile,
        report.mode,
        report.gate_mode,
        report.timestamp_utc
    );
    out.push_str("| runtime | status |\n| --- | --- |\n");
    for (name, section) in &report.runtimes {
        let status = match &section.reason {
            Some(reason) => format!("unavailable: {}", md_escape(reason)),
            None => "ok".to_owned(),
        };
        out.push_str(&format!("| `{name}` | {status} |\n"));
    }
    out.push_str("\n| check | value | threshold | result |\n| --- | ---: | ---: | --- |\n");
    for row in check_rows(report) {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            row.metric,
            format_value(row.metric, row.value),
            row.threshold,
            match (row.passed, row.inconclusive) {
                (true, _) => "pass",
                (false, true) => "**INCONCLUSIVE**",
                (false, false) => "**FAIL**",
            }
        ));
    }
    if !report.failure_diagnostics.is_empty() {
        out.push_str("\n### Failures\n\n");
        for d in &report.failure_diagnostics {
            out.push_str(&format!("- {}\n", md_escape(d)));
        }
    }
    out
}

fn md_escape(text: &str) -> String {
    text.replace('|', "\\|")
}

/// JUnit XML: one test case per gate check (failures carry their diagnostic), plus one
/// `<runtime>.health` case per runtime for the diagnostics that are not metric checks
/// (unavailable runtime, collector failures, retention validation, collector health).
pub fn junit(report: &Report) -> String {
    let rows = check_rows(report);
    let mut cases = Vec::new();
    for name in report.runtimes.keys() {
        let prefix = format!("{name}: ");
        let problems: Vec<&str> = report
            .failure_diagnostics
            .iter()
            .filter(|d| d.starts_with(&prefix))
            .map(String::as_str)
            .collect();
        cases.push((name.clone(), "health".to_owned(), problems.join("\n")));
    }
    for row in &rows {
        let (runtime, metric) = row.metric.rsplit_once('.').unwrap_or(("", row.metric));
        let text = if row.passed {
            String::new()
        } else {
            let prefix = format!("{}: ", row.metric);
            report
                .failure_diagnostics
                .iter()
                .find(|d| d.starts_with(&prefix))
                .cloned()
                .unwrap_or_else(|| format!("{} over {}", row.metric, row.threshold))
        };
        cases.push((runtime.to_owned(), metric.to_owned(), text));
    }
    let failures = cases.iter().filter(|(_, _, t)| !t.is_empty()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"fleetgate\" tests=\"{}\" failures=\"{failures}\">\n",
        cases.len()
    ));
    out.push_str(&format!(
        "  <testsuite name=\"fleetgate.{}.{}\" tests=\"{}\" failures=\"{failures}\" timestamp=\"{}\">\n",
        xml_escape(&report.profile),
        xml_escape(&report.gate_mode),
        cases.len(),
        xml_escape(&report.timestamp_utc)
    ));
    for (class, name, failure) in &cases {
        if failure.is_empty() {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\"/>\n",
                xml_escape(class),
                xml_escape(name)
            ));
        } else {
            let first = failure.lines().next().unwrap_or_default();
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                xml_escape(class),
                xml_escape(name),
                xml_escape(first),
                xml_escape(failure)
            ));
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping_removes_what_xml_cannot_hold() {
        assert_eq!(xml_escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
