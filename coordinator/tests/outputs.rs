//! The files `fleetgate` writes, through the real binary: unsafe output paths are refused
//! before anything runs, a report write that fails keeps the old report whole, the JUnit file
//! is valid for real consumers and tells what the exit code tells, the Markdown summary leads
//! with the verdict and escapes what it quotes, the binary says which commit it is, its shell
//! completions parse, and `fleetgate certs` neither replaces a key unasked nor writes through
//! a symbolic link.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use fleetgate_common::report::Report;
use support::cli::{clean, fleetgate, fleetgate_command, text, tiny_run};
use support::tools::{python_output, system_program, venv_program};
use support::{assert_matches_schema, relaxed_budgets, repo};

/// A run small enough for a test (50 steps, a 60 s interval: one overhead sample).
fn tiny() -> Vec<&'static str> {
    let mut args = tiny_run("overhead", "gpumemprof_cpu");
    args.push("--check");
    args
}

/// Every file under `dir`, with its content, in name order.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
                files.push((path, None));
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, Some(bytes)));
            } else {
                files.push((path, None));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_unsafe_output_is_refused_before_the_run_with_one_line() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_str().unwrap().to_owned();
    let artifacts = format!("{w}/artifacts");
    std::fs::write(format!("{w}/old.json"), "old report\n").unwrap();
    std::os::unix::fs::symlink(format!("{w}/old.json"), format!("{w}/link.json")).unwrap();
    std::fs::copy(
        repo().join("docs/benchmarks/v0.4_operating_budget.json"),
        format!("{w}/budgets.json"),
    )
    .unwrap();
    std::fs::write(format!("{w}/knobs.json"), "{}").unwrap();
    std::fs::write(format!("{w}/file"), "a file, not a folder").unwrap();
    std::fs::create_dir(format!("{w}/folder")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        format!("{w}/fifo").as_str(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let shipped_budget =
        std::fs::read(repo().join("docs/benchmarks/v0.4_operating_budget.json")).unwrap();
    let before = snapshot(work.path());

    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["--output", &format!("{w}/r.json"), "--markdown", &format!("{w}/r.json")],
            2,
            format!("--markdown {w}/r.json: is also the file given to --output; give each output its own path"),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--junit", &format!("{w}/new/../r.json")],
            2,
            format!("--junit {w}/new/../r.json: is also the file given to --output; give each output its own path"),
        ),
        (
            vec!["--output", &format!("{w}/old.json"), "--write-baseline", &format!("{w}/link.json")],
            2,
            format!("--write-baseline {w}/link.json: is also the file given to --output; give each output its own path"),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--budgets", &format!("{w}/budgets.json"), "--markdown", &format!("{w}/budgets.json")],
            2,
            format!("--markdown {w}/budgets.json: is the file given to --budgets, an input of this run; an output must not replace it"),
        ),
        (
            vec!["--output", &format!("{w}/knobs.json"), "--knobs", &format!("{w}/knobs.json")],
            2,
            format!("--output {w}/knobs.json: is the file given to --knobs, an input of this run; an output must not replace it"),
        ),
        (
            vec!["--output", &format!("{w}/folder")],
            1,
            format!("--output {w}/folder: is a directory; give a file path"),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--junit", "/dev/full"],
            1,
            "--junit /dev/full: is a character device, not a regular file; give a file path".to_owned(),
        ),
        (
            vec!["--output", "/dev/null"],
            1,
            "--output /dev/null: is a character device, not a regular file; give a file path".to_owned(),
        ),
        (
            vec!["--output", &format!("{w}/r.json"), "--markdown", &format!("{w}/fifo")],
            1,
            format!("--markdown {w}/fifo: is a FIFO, not a regular file; give a file path"),
        ),
        (
            vec!["--output", &format!("{w}/file/sub/r.json")],
            1,
            format!("--output {w}/file/sub/r.json: {w}/file is a file, not a directory"),
        ),
        (
            vec!["--output", "/proc/fleetgate/report.json"],
            1,
            "--output /proc/fleetgate/report.json: cannot create a file in /proc: No such file or directory (os error 2)".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(args, code, line)| (args.into_iter().map(str::to_owned).collect(), code, line))
    .collect();

    for (extra, code, line) in &cases {
        let mut args: Vec<&str> = tiny();
        args.extend(["--artifact-root", &artifacts]);
        args.extend(extra.iter().map(String::as_str));
        let result = fleetgate(&args);
        assert_eq!(
            (result.status.code(), text(&result.stderr)),
            (Some(*code), format!("Error: {line}\n")),
            "{extra:?}"
        );
        assert!(result.stdout.is_empty(), "{extra:?}");
        // Nothing ran and nothing was written or created.
        assert_eq!(snapshot(work.path()), before, "{extra:?}");
    }
    assert_eq!(
        std::fs::read(repo().join("docs/benchmarks/v0.4_operating_budget.json")).unwrap(),
        shipped_budget
    );
}

#[test]
fn outputs_are_checked_before_the_inputs_are_read() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let result = fleetgate(&[
        "run",
        "--budgets",
        work.path().join("missing.json").to_str().unwrap(),
        "--output",
        work.path().to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(1), "{}", text(&result.stderr));
    assert!(!artifacts.exists());
}

#[test]
fn a_run_replaces_its_outputs_whole_and_keeps_a_link_to_the_report() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("artifacts");
    let target = work.path().join("run-1.json");
    std::fs::write(&target, "old report\n").unwrap();
    let link = work.path().join("latest.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let markdown = work.path().join("new/folder/summary.md");
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work.path());
    let mut args = tiny();
    args.extend([
        "--budgets",
        budgets.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
        "--output",
        link.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
    ]);
    let result = fleetgate(&args);
    assert_eq!(result.status.code(), Some(0), "{}", text(&result.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(report["version"], "v0.4");
    assert!(
        std::fs::read_to_string(&markdown)
            .unwrap()
            .starts_with("## fleetgate v0.4 report")
    );
    // The HTML report is next to the path given to --output (not the link's target).
    assert!(
        std::fs::read_to_string(work.path().join("latest.html"))
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
    // No temporary file is left next to the outputs.
    let mut names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "artifacts",
            "history.sqlite",
            "latest.html",
            "latest.json",
            "new",
            "relaxed-overhead-budgets.json",
            "run-1.json"
        ]
    );
}

/// The report's folder is a 256 KiB tmpfs, full: the run completes, the report cannot be
/// written, and the old report is still there byte for byte, with no temporary file beside it.
/// The tmpfs is mounted in a private user and mount namespace (`unshare -rm`), where the
/// check runs too, since the mount is invisible outside it.
#[test]
fn a_report_write_that_fails_on_a_full_disk_leaves_the_old_report_byte_identical() {
    let work = tempfile::tempdir().unwrap();
    let mount = work.path().join("full");
    std::fs::create_dir(&mount).unwrap();
    let old = work.path().join("old.json");
    let content: String = (0..400)
        .map(|i| format!("{{\"line\": {i}, \"passed\": true}}\n"))
        .collect();
    std::fs::write(&old, &content).unwrap();
    let artifacts = work.path().join("artifacts");
    let script = r#"
        set -u
        dir="$1"; old="$2"; shift 2
        mount -t tmpfs -o size=256k tmpfs "$dir" || { echo "cannot mount a tmpfs"; exit 90; }
        cp "$old" "$dir/report.json"
        dd if=/dev/zero of="$dir/filler" bs=4k 2>/dev/null
        "$@" --output "$dir/report.json" >/dev/null 2>"$dir.stderr"
        rc=$?
        cmp -s "$old" "$dir/report.json" && same=yes || same=no
        echo "rc=$rc same=$same files=$(ls -A "$dir" | tr '\n' ' ')"
    "#;
    let mut command = Command::new("unshare");
    clean(&mut command)
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(&mount)
        .arg(&old)
        .arg(env!("CARGO_BIN_EXE_fleetgate"))
        .args(tiny())
        .arg("--artifact-root")
        .arg(&artifacts);
    let result = command
        .output()
        .expect("unshare (util-linux) is needed for this test");
    let stdout = text(&result.stdout);
    assert_eq!(
        stdout,
        "rc=1 same=yes files=filler report.json \n",
        "{}",
        text(&result.stderr)
    );
    let stderr = std::fs::read_to_string(work.path().join("full.stderr")).unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "Error: --output: cannot write {}/report.json: No space left on device (os error 28); the file there before, if any, is unchanged",
            mount.display()
        )
    );
    // The run itself did its work before the write failed.
    assert!(artifacts.join("gpumemprof_cpu/overhead").is_dir());
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn certs_never_replace_a_key_unasked_never_follow_a_link_and_force_makes_keys_owner_only() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("certs");
    let d = dir.to_str().unwrap();
    let made = fleetgate(&["certs", "--out", d, "--agent", "a1"]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    assert_eq!(
        text(&made.stdout),
        [
            "ca.key",
            "ca.pem",
            "coordinator.key",
            "coordinator.pem",
            "agent-a1.key",
            "agent-a1.pem"
        ]
        .map(|n| format!("{d}/{n}\n"))
        .concat()
    );
    for key in ["ca.key", "coordinator.key", "agent-a1.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    for cert in ["ca.pem", "coordinator.pem", "agent-a1.pem"] {
        assert_eq!(mode(&dir.join(cert)), 0o644, "{cert}");
    }
    assert_eq!(mode(&dir), 0o700);
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();

    // An existing key, loosened to 0666, is not rewritten (nor its mode changed) unasked.
    let key = dir.join("agent-a1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = snapshot(&dir);
    let again = fleetgate(&["certs", "--out", d, "--agent", "a1"]);
    assert_eq!(
        (again.status.code(), text(&again.stderr)),
        (
            Some(2),
            format!(
                "Error: {d}/agent-a1.key: already exists; pass --force to replace agent a1's certificate and key\n"
            )
        )
    );
    assert_eq!(snapshot(&dir), before);
    assert_eq!(mode(&key), 0o666);

    // A symbolic link at a key's path is refused, with or without --force; its target and
    // the folder stay as they were.
    let target = work.path().join("target");
    std::fs::write(&target, "not a key\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("agent-a2.key")).unwrap();
    std::os::unix::fs::symlink(work.path().join("nothing"), dir.join("agent-a3.key")).unwrap();
    let before = snapshot(&dir);
    for (agent, force) in [("a2", false), ("a2", true), ("a3", true)] {
        let mut args = vec!["certs", "--out", d, "--agent", agent];
        if force {
            args.push("--force");
        }
        let refused = fleetgate(&args);
        assert_eq!(
            (refused.status.code(), text(&refused.stderr)),
            (
                Some(1),
                format!(
                    "Error: {d}/agent-{agent}.key: is a symbolic link; certificates and keys are never written through one\n"
                )
            ),
            "{args:?}"
        );
        assert_eq!(snapshot(&dir), before, "{args:?}");
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"not a key\n");
    assert!(!work.path().join("nothing").exists());

    // With --force the key is rewritten, owner-only, and the CA is reused.
    let old_key = std::fs::read(&key).unwrap();
    let forced = fleetgate(&["certs", "--out", d, "--agent", "a1", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_eq!(
        text(&forced.stdout),
        format!("{d}/agent-a1.key\n{d}/agent-a1.pem\n")
    );
    assert_eq!(mode(&key), 0o600);
    let new_key = std::fs::read(&key).unwrap();
    assert_ne!(new_key, old_key);
    assert!(new_key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
}

#[test]
fn a_reused_ca_key_readable_by_others_is_made_owner_only_only_with_force() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("certs");
    let d = dir.to_str().unwrap();
    assert_eq!(fleetgate(&["certs", "--out", d]).status.code(), Some(0));
    let ca_key = dir.join("ca.key");
    std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = fleetgate(&["certs", "--out", d, "--agent", "b1"]);
    assert_eq!(warned.status.code(), Some(0));
    assert!(
        text(&warned.stderr)
            .contains("The CA key is readable by others; pass --force to make it owner-only."),
        "{}",
        text(&warned.stderr)
    );
    assert_eq!(mode(&ca_key), 0o644);
    let fixed = fleetgate(&["certs", "--out", d, "--force"]);
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed.stderr));
    assert_eq!(mode(&ca_key), 0o600);

    // Half a CA is never replaced unasked.
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let half = fleetgate(&["certs", "--out", d, "--agent", "b2"]);
    assert_eq!(
        (half.status.code(), text(&half.stderr)),
        (
            Some(2),
            format!(
                "Error: {d}/ca.key: already exists; {d}/ca.pem is missing; pass --force to make a new CA (certificates from the old one stop working)\n"
            )
        )
    );
    assert!(!dir.join("agent-b2.key").exists());
}

/// The outputs of one `fleetgate run --check` at the tiny size.
struct RunFiles {
    code: Option<i32>,
    report: serde_json::Value,
    junit: PathBuf,
    markdown: String,
}

/// Runs `tiny_run("soak", runtimes)` with `--check`, `extra`, and every output in `dir`;
/// `tensorflow_dir` replaces `TENSORFLOW_DIR` when given.
fn run_with_outputs(
    dir: &Path,
    runtimes: &str,
    extra: &[&str],
    tensorflow_dir: Option<&Path>,
) -> RunFiles {
    let report = dir.join("report.json");
    let junit = dir.join("junit.xml");
    let markdown = dir.join("summary.md");
    let artifacts = dir.join("artifacts");
    let mut args = tiny_run("soak", runtimes);
    args.push("--check");
    args.extend_from_slice(extra);
    let mut command = fleetgate_command();
    command.args(&args).args([
        "--output",
        report.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    if let Some(tf) = tensorflow_dir {
        command.env("TENSORFLOW_DIR", tf);
    }
    let result = command.output().unwrap();
    assert!(
        report.exists(),
        "{}\n{}",
        text(&result.stdout),
        text(&result.stderr)
    );
    RunFiles {
        code: result.status.code(),
        report: serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap(),
        junit,
        markdown: std::fs::read_to_string(&markdown).unwrap(),
    }
}

/// The vendored Jenkins xunit-plugin schema, `junit-10.xsd`.
fn junit_xsd() -> PathBuf {
    repo().join("coordinator/tests/fixtures/junit-10.xsd")
}

/// Validates `file` against `junit-10.xsd` with both xmllint (libxml2) and Python's
/// xmlschema, and returns what xmlschema's side read from it: the root's attributes, and per
/// suite its attributes, properties, `<system-out>` and cases (classname, name, time, and the
/// `failure`, `error` or `skipped` element's tag, type, message and text, or `success`).
fn validate_junit(file: &Path) -> serde_json::Value {
    let lint = system_program("xmllint")
        .args(["--noout", "--schema"])
        .arg(junit_xsd())
        .arg(file)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "xmllint rejects {}: {}\n{}",
        file.display(),
        text(&lint.stderr),
        std::fs::read_to_string(file).unwrap()
    );
    let script = r#"
import json, sys
import xml.etree.ElementTree as ET
import xmlschema
xmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2])
root = ET.parse(sys.argv[2]).getroot()
def case(c):
    kids = [k for k in c if k.tag in ("failure", "error", "skipped")]
    k = kids[0] if kids else None
    return {
        "classname": c.get("classname"), "name": c.get("name"), "time": c.get("time"),
        "status": k.tag if k is not None else "success",
        "type": None if k is None else k.get("type"),
        "message": None if k is None else k.get("message"),
        "text": None if k is None else k.text,
    }
print(json.dumps({
    "tag": root.tag,
    "root": dict(root.attrib),
    "suites": [{
        "attrs": dict(s.attrib),
        "properties": {p.get("name"): p.get("value") for p in s.iter("property")},
        "system_out": s.findtext("system-out"),
        "cases": [case(c) for c in s.findall("testcase")],
    } for s in root.findall("testsuite")],
}))
"#;
    let parsed = venv_program("python")
        .args(["-c", script])
        .arg(junit_xsd())
        .arg(file)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "xmlschema rejects {}: {}",
        file.display(),
        text(&parsed.stderr)
    );
    serde_json::from_slice(&parsed.stdout).unwrap()
}

/// A count attribute of a JUnit element.
fn count(attrs: &serde_json::Value, name: &str) -> u64 {
    attrs[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {attrs}"))
        .parse()
        .unwrap()
}

/// A `time` attribute, in seconds.
fn seconds(attrs: &serde_json::Value) -> f64 {
    attrs["time"].as_str().unwrap().parse().unwrap()
}

/// Checks what every JUnit file of a run must hold: `<testsuites>` without `skipped` (the
/// schema has none there) and with the totals of its suites; each suite's counts those of its
/// cases; a time on everything; one suite per job of the report with the job's wall time; and
/// the `fleetgate` suite with the `verdict` case and the report's properties. Returns the
/// cases of every suite, by `classname/name`.
fn assert_junit_shape(
    junit: &serde_json::Value,
    report: &serde_json::Value,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    assert_eq!(junit["tag"], "testsuites");
    let root = &junit["root"];
    assert!(root.get("skipped").is_none(), "{root}");
    let suites = junit["suites"].as_array().unwrap();
    let mut cases = std::collections::BTreeMap::new();
    let mut totals = [0, 0, 0, 0];
    for suite in suites {
        let attrs = &suite["attrs"];
        let mine = suite["cases"].as_array().unwrap();
        let of = |status: &str| mine.iter().filter(|c| c["status"] == status).count() as u64;
        assert_eq!(count(attrs, "tests"), mine.len() as u64, "{suite}");
        assert_eq!(count(attrs, "failures"), of("failure"), "{suite}");
        assert_eq!(count(attrs, "errors"), of("error"), "{suite}");
        assert_eq!(count(attrs, "skipped"), of("skipped"), "{suite}");
        assert_eq!(attrs["timestamp"], report["timestamp_utc"]);
        seconds(attrs);
        for (total, value) in
            totals
                .iter_mut()
                .zip([mine.len() as u64, of("failure"), of("error"), of("skipped")])
        {
            *total += value;
        }
        for case in mine {
            seconds(case);
            let key = format!(
                "{}/{}",
                case["classname"].as_str().unwrap(),
                case["name"].as_str().unwrap()
            );
            assert!(cases.insert(key, case.clone()).is_none(), "{case}");
        }
    }
    assert_eq!(
        [
            count(root, "tests"),
            count(root, "failures"),
            count(root, "errors")
        ],
        [totals[0], totals[1], totals[2]]
    );
    // One suite per job, timed by it (the job case too), then the fleet's suite.
    let mut jobs = Vec::new();
    for (agent, section) in report["agents"].as_object().unwrap() {
        for (runtime, job) in section["jobs"].as_object().unwrap() {
            jobs.push((
                format!("{agent}/{runtime}"),
                job["wall_seconds"].as_f64().unwrap(),
            ));
        }
    }
    let names: Vec<&str> = suites
        .iter()
        .map(|s| s["attrs"]["name"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = jobs.iter().map(|(k, _)| k.as_str()).collect();
    expected.push("fleetgate");
    assert_eq!(names, expected);
    let mut longest = 0.0_f64;
    for (suite, (key, wall)) in suites.iter().zip(&jobs) {
        assert!((seconds(&suite["attrs"]) - wall).abs() < 0.001, "{suite}");
        assert!(*wall > 0.0, "{key}");
        assert!((seconds(&cases[&format!("{key}/job")]) - wall).abs() < 0.001);
        longest = longest.max(*wall);
    }
    // One agent: the run's time is its jobs' total.
    let total: f64 = jobs.iter().map(|(_, w)| w).sum();
    assert!((seconds(root) - total).abs() < 0.002, "{root} vs {total}");
    assert!(longest > 0.0);
    let fleet = suites.last().unwrap();
    assert_eq!(fleet["properties"]["verdict"], report["verdict"]);
    assert_eq!(fleet["properties"]["profile"], "pr");
    let generator = &report["generator"];
    assert_eq!(
        fleet["properties"]["generator"],
        format!(
            "fleetgate {} (commit {})",
            generator["version"].as_str().unwrap(),
            generator["commit"].as_str().unwrap()
        )
    );
    cases
}

/// The cases that did not pass: `key -> (status, type)`.
fn non_passing(
    cases: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Vec<(String, String, String)> {
    cases
        .iter()
        .filter(|(_, c)| c["status"] != "success")
        .map(|(k, c)| {
            (
                k.clone(),
                c["status"].as_str().unwrap().to_owned(),
                c["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn junit_and_markdown_tell_what_the_exit_code_tells_for_a_pass_a_failed_gate_and_an_inconclusive_run()
 {
    // A pass: exit 0, no failure, no error.
    let work = tempfile::tempdir().unwrap();
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work.path());
    let pass = run_with_outputs(
        &work.path().join("pass"),
        "gpumemprof_cpu",
        &["--budgets", budgets.to_str().unwrap()],
        None,
    );
    assert_eq!(pass.code, Some(0));
    assert_eq!(pass.report["verdict"], "pass");
    assert_matches_schema(&pass.report);
    let agent = pass.report["agents"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let junit = validate_junit(&pass.junit);
    let cases = assert_junit_shape(&junit, &pass.report);
    // The job, its 11 soak checks, the verdict.
    assert_eq!(count(&junit["root"], "tests"), 13);
    assert_eq!(non_passing(&cases), []);
    assert!(cases.contains_key(&format!("{agent}/gpumemprof_cpu/rollover_count")));
    assert!(cases.contains_key("fleetgate/verdict"));
    assert_eq!(junit["suites"][1]["system_out"], serde_json::Value::Null);
    assert!(
        pass.markdown
            .starts_with("## fleetgate v0.4 report: PASS\n\n**Fleet verdict: PASS.** 1 agent in 1 hardware class; 11 checks: 11 passed, 0 failed, 0 inconclusive; run time "),
        "{}",
        pass.markdown
    );
    assert_eq!(pass.markdown.matches("| pass |").count(), 11);

    // A failed gate: exit 4; the check is a failure of type budget with its diagnostic, and
    // the verdict a failure.
    let mut budgets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("docs/benchmarks/v0.4_operating_budget.json")).unwrap(),
    )
    .unwrap();
    budgets["budgets"]["gpumemprof_cpu.final_retained_bytes"] = serde_json::json!(1);
    let tight = work.path().join("tight.json");
    std::fs::write(&tight, budgets.to_string()).unwrap();
    let fail = run_with_outputs(
        &work.path().join("fail"),
        "gpumemprof_cpu",
        &["--budgets", tight.to_str().unwrap()],
        None,
    );
    assert_eq!(fail.code, Some(4));
    let junit = validate_junit(&fail.junit);
    let cases = assert_junit_shape(&junit, &fail.report);
    let check = format!("{agent}/gpumemprof_cpu/final_retained_bytes");
    assert_eq!(
        non_passing(&cases),
        [
            (
                "fleetgate/verdict".to_owned(),
                "failure".to_owned(),
                "verdict".to_owned()
            ),
            (check.clone(), "failure".to_owned(), "budget".to_owned()),
        ]
    );
    assert_eq!(
        (
            count(&junit["root"], "failures"),
            count(&junit["root"], "errors")
        ),
        (2, 0)
    );
    let failure = &cases[&check];
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{agent}/gpumemprof_cpu.final_retained_bytes: "))
            && message.contains(" > 1; collector=healthy")
            && message.ends_with("; next knob: rollover_max_bytes"),
        "{message}"
    );
    assert_eq!(failure["text"], message);
    assert_eq!(
        junit["suites"][1]["system_out"],
        format!("Failures:\n- {message}\n")
    );
    assert!(
        fail.markdown
            .starts_with("## fleetgate v0.4 report: FAIL\n\n**Fleet verdict: FAIL.** 1 agent in 1 hardware class; 11 checks: 10 passed, 1 failed, 0 inconclusive;"),
        "{}",
        fail.markdown
    );
    assert!(fail.markdown.contains(&format!(
        "| `{agent}/gpumemprof_cpu.final_retained_bytes` | "
    )));
    assert!(fail.markdown.contains(" | max 1 | **FAIL** |\n"));
    assert!(fail.markdown.contains("\n### Failures\n\n- "));

    // Inconclusive: a runtime unavailable, exit 6; its job is an error of type unavailable,
    // the verdict an error, and nothing a failure.
    let empty = work.path().join("no-tensorflow");
    std::fs::create_dir_all(&empty).unwrap();
    let open = run_with_outputs(
        &work.path().join("inconclusive"),
        "gpumemprof_cpu,tfmemprof_cpu",
        &[
            "--budgets",
            work.path()
                .join("relaxed-overhead-budgets.json")
                .to_str()
                .unwrap(),
        ],
        Some(&empty),
    );
    assert_eq!(open.code, Some(6));
    assert_eq!(open.report["verdict"], "inconclusive");
    let junit = validate_junit(&open.junit);
    let cases = assert_junit_shape(&junit, &open.report);
    let unavailable = format!("{agent}/tfmemprof_cpu/job");
    assert_eq!(
        non_passing(&cases),
        [
            (
                "fleetgate/verdict".to_owned(),
                "error".to_owned(),
                "inconclusive".to_owned()
            ),
            (
                unavailable.clone(),
                "error".to_owned(),
                "unavailable".to_owned()
            ),
        ]
    );
    assert_eq!(
        (
            count(&junit["root"], "failures"),
            count(&junit["root"], "errors")
        ),
        (0, 2)
    );
    let message = cases[&unavailable]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{agent}/tfmemprof_cpu: unavailable - "))
            && message.contains("libtensorflow.so not found"),
        "{message}"
    );
    assert!(
        open.markdown.starts_with(
            "## fleetgate v0.4 report: INCONCLUSIVE\n\n**Fleet verdict: INCONCLUSIVE.**"
        ),
        "{}",
        open.markdown
    );
    assert!(!open.markdown.contains("FAIL"), "{}", open.markdown);
    assert!(
        open.markdown.contains(&format!(
            "### Unavailable runtimes\n\n| runtime | reason |\n| --- | --- |\n| `{agent}/tfmemprof_cpu` | "
        )),
        "{}",
        open.markdown
    );
}

/// Renders `markdown` with GitHub's own renderer (cmark-gfm, with GitHub's extensions and raw
/// HTML let through) and
/// returns what a reader sees: the headings, the tables' cells, the list items and the links
/// (`<br>` read as a line break), and how many emphasis, strikethrough, image and raw HTML
/// elements it made.
fn render_gfm(markdown: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from html.parser import HTMLParser
import cmarkgfm
from cmarkgfm.cmark import Options
# Raw HTML passes through, as on GitHub (which then sanitises it): any the summary let
# through from the report would show here.
html = cmarkgfm.github_flavored_markdown_to_html(sys.stdin.read(), options=Options.CMARK_OPT_UNSAFE)
class Reader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.out = {"headings": [], "cells": [], "items": [], "links": [], "tags": {}}
        self.block = None
        self.link = None
    def handle_starttag(self, tag, attrs):
        self.out["tags"][tag] = self.out["tags"].get(tag, 0) + 1
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "li"):
            self.block = ""
        elif tag == "a":
            self.link = [dict(attrs).get("href"), ""]
        elif tag == "br" and self.block is not None:
            self.block += "\n"
    def handle_endtag(self, tag):
        if tag == "a" and self.link is not None:
            self.out["links"].append(self.link)
            self.link = None
            return
        kind = {"td": "cells", "th": "cells", "li": "items"}.get(tag)
        if tag[0] == "h" and tag[1:].isdigit():
            kind = "headings"
        if kind and self.block is not None:
            self.out[kind].append(self.block)
            self.block = None
    def handle_data(self, data):
        if self.block is not None:
            self.block += data
        if self.link is not None:
            self.link[1] += data
reader = Reader()
reader.feed(html)
print(json.dumps(reader.out))
"#;
    serde_json::from_slice(&python_output(script, markdown.as_bytes())).unwrap()
}

#[test]
fn the_markdown_summary_shows_hostile_text_literally_as_github_renders_it() {
    let work = tempfile::tempdir().unwrap();
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work.path());
    let run = run_with_outputs(
        &work.path().join("run"),
        "gpumemprof_cpu",
        &["--budgets", budgets.to_str().unwrap()],
        None,
    );
    assert_eq!(run.code, Some(0));
    let mut report: Report = serde_json::from_value(run.report).unwrap();
    // Text a report quotes from agents and hosts: ids, class names, reasons, diagnostics.
    let hostile = "# *bold* _em_ `code` [link](https://example.com) <script>x</script> | cell ~~gone~~ &amp; \\* !x";
    let lines = "1. first\n- second\n    indented\n# third";
    let (id, agent) = report.agents.pop_first().unwrap();
    let evil_id = "-a*gent|_x_<b>";
    report.agents.insert(evil_id.to_owned(), agent);
    report.failure_diagnostics = vec![hostile.to_owned(), lines.to_owned()];
    report.fleet_advice = vec![format!("{id}: {hostile}")];
    let html = "out dir/report <1>.html";
    let markdown = fleetgate_coordinator::output::markdown(&report, Some(html));
    let seen = render_gfm(&markdown);

    // Only the summary's own headings and link; no emphasis, strikethrough, image or raw HTML.
    assert_eq!(
        seen["headings"],
        serde_json::json!([
            "fleetgate v0.4 report: PASS",
            "Hardware classes",
            "Agents",
            "Checks",
            "Failures",
            "Fleet advice"
        ]),
        "{markdown}"
    );
    // The HTML report's link; the quoted text's bare address stays a link (GitHub's autolinks)
    // that shows exactly where it goes, and its `[link](...)` is no link.
    let links = seen["links"].as_array().unwrap();
    assert_eq!(
        links[0],
        serde_json::json!(["out%20dir/report%20%3C1%3E.html", html])
    );
    assert_eq!(links.len(), 3, "{markdown}");
    for link in &links[1..] {
        assert_eq!(
            link,
            &serde_json::json!(["https://example.com", "https://example.com"])
        );
    }
    let tags = seen["tags"].as_object().unwrap();
    for tag in ["em", "del", "img", "script", "b", "h1", "ol"] {
        assert!(tags.get(tag).is_none(), "<{tag}> in {markdown}");
    }
    // `strong` only for the verdict line.
    assert_eq!(tags["strong"], 1, "{markdown}");
    // The agents table's first cell is the id, whole; the failures and advice read as given.
    let cells = seen["cells"].as_array().unwrap();
    let agents_header = cells.iter().position(|c| c == "wall time").unwrap();
    assert_eq!(cells[agents_header + 2], evil_id, "{cells:?}");
    let items = seen["items"].as_array().unwrap();
    assert_eq!(items[0], hostile, "{markdown}");
    assert_eq!(
        items[1], "1. first\n- second\nindented\n# third",
        "{markdown}"
    );
    assert_eq!(
        items.last().unwrap(),
        &serde_json::Value::String(format!("{id}: {hostile}"))
    );
}

#[test]
fn version_names_the_commit_and_the_report_records_it() {
    let version = fleetgate(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    let line = text(&version.stdout);
    let prefix = format!("fleetgate {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{line:?}"));
    // Built from this checkout: its HEAD, `-dirty` when tracked files had changes (as of the
    // last build of the sources; an edit elsewhere, say to the docs, does not rebuild it). A
    // tree without git says what it was given, or `unknown`.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| text(&out.stdout).trim().to_owned());
    match head {
        Some(head) => assert!(
            commit == head || commit == format!("{head}-dirty"),
            "{commit} is not {head}"
        ),
        None => assert!(!commit.is_empty()),
    }

    // The report of a run says which fleetgate made it.
    let work = tempfile::tempdir().unwrap();
    let budgets = relaxed_budgets::relaxed_overhead_budgets(work.path());
    let out = work.path().join("r.json");
    let artifacts = work.path().join("a");
    let mut args = tiny();
    args.extend([
        "--budgets",
        budgets.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    let result = fleetgate(&args);
    assert!(out.exists(), "{}", text(&result.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        report["generator"],
        serde_json::json!({"name": "fleetgate", "version": env!("CARGO_PKG_VERSION"), "commit": commit})
    );
    assert_matches_schema(&report);
    // A report without it (written before it was recorded) still loads.
    let mut old = report.clone();
    old.as_object_mut().unwrap().remove("generator");
    let old: Report = serde_json::from_value(old).unwrap();
    assert_eq!(old.generator, None);
}

#[test]
fn completions_cover_the_commands_and_flags_and_the_bash_script_parses() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let result = fleetgate(&["completions", shell]);
        assert_eq!(
            result.status.code(),
            Some(0),
            "{shell}: {}",
            text(&result.stderr)
        );
        let script = text(&result.stdout);
        // Fish names a long flag `-l profile`.
        let flag = |name: &str| {
            if shell == "fish" {
                format!("-l {name}")
            } else {
                format!("--{name}")
            }
        };
        for word in ["run", "serve", "agents", "certs", "completions"]
            .map(str::to_owned)
            .into_iter()
            .chain(["profile", "junit", "markdown", "coordinator"].map(flag))
        {
            assert!(script.contains(&word), "{shell} completions lack {word}");
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("fleetgate.bash");
            std::fs::write(&file, &script).unwrap();
            let check = system_program("bash")
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(check.status.success(), "bash -n: {}", text(&check.stderr));
            assert!(script.contains("complete -F _fleetgate"), "{script}");
        }
        if shell == "zsh" {
            assert!(script.starts_with("#compdef fleetgate\n"), "{script}");
        }
    }
    let unknown = fleetgate(&["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
}
