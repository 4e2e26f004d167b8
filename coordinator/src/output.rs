//! What a run prints and writes besides the JSON report: the console summary (one line per
//! check, then the failures, then the overall status), a Markdown summary for CI step
//! summaries, and a JUnit XML file with one test case per check; and how every output file is
//! checked before a run ([`check_outputs`]) and written after it ([`write_output`]).

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

use fleetgate_common::atomic_file::{self, AtomicWriteError, WriteOptions};
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
    fn xml_escaping_removes_what_xml_cannot_hold() {
        assert_eq!(xml_escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
