//! The run history through the real binary: tiny runs recorded next to their report and listed,
//! a metric's series as JSON, and a history file that is not a database, is locked, or is of a
//! newer schema: the report is written all the same, the failure is one warning line, and the
//! exit code is the run's. Also a coordinator that records the runs it finishes.

mod support;

use std::path::Path;
use std::time::Duration;

use fleetgate_coordinator::history::{History, HistoryRecorder};
use rusqlite::Connection;
use serde_json::Value;
use support::cli::{fleetgate, text, tiny_run};
use support::fleet::{fast_settings, in_process, link, small_run, wait_for_agents};
use support::process::plaintext_agent;
use support::{PATIENCE, eventually};

const METRIC: &str = "gpumemprof_cpu.runtime_overhead_pct";

/// A tiny overhead run of gpumemprof_cpu writing its report to `dir/report.json`, with
/// `extra` flags; returns (exit code, stdout, stderr).
fn tiny(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let output = dir.join("report.json");
    let artifacts = dir.join("artifacts");
    let mut args = tiny_run("overhead", "gpumemprof_cpu");
    args.extend([
        "--check",
        "--output",
        output.to_str().unwrap(),
        "--artifact-root",
        artifacts.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    let out = fleetgate(&args);
    (
        out.status.code().unwrap(),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The report `tiny` wrote, parsed.
fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// `fleetgate history ARGS --json`, parsed; panics unless it exits 0.
fn history_json(args: &[&str]) -> Value {
    let mut all = vec!["history"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = fleetgate(&all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The lines of `stderr` that are not the run's progress.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("Warning:") || l.starts_with("Error:"))
        .collect()
}

#[test]
fn tiny_runs_are_recorded_next_to_their_report_and_listed() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("history.sqlite");
    let db_arg = db.to_str().unwrap();
    for _ in 0..2 {
        let (code, _, stderr) = tiny(work.path(), &[]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(warnings(&stderr), Vec::<&str>::new());
    }
    assert!(db.is_file(), "the default history is next to --output");
    let latest = report(work.path());

    let listed = history_json(&["--history", db_arg, "list"]);
    assert_eq!(listed["history"], db_arg);
    let runs = listed["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{listed:#}");
    let class = latest["agents"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["hardware_class"]
        .as_str()
        .unwrap()
        .to_owned();
    for run in runs {
        assert_eq!(run["profile"], "pr");
        assert_eq!(run["mode"], "overhead");
        assert_eq!(run["gate_mode"], "budget");
        assert_eq!(run["verdict"], latest["verdict"]);
        assert_eq!(run["agents"], 1);
        assert_eq!(run["hardware_classes"], serde_json::json!([class]));
    }
    // Newest first: the first listed is the report on disk.
    assert!(
        runs[0]["run_id"].as_str().unwrap().starts_with(
            &latest["timestamp_utc"]
                .as_str()
                .unwrap()
                .replace(['-', ':'], "")
        ),
        "{listed:#}"
    );
    assert!(runs[0]["finished_at"].as_str() >= runs[1]["finished_at"].as_str());

    // The series of the gated metric on the run's class: both runs, oldest first.
    let shown = history_json(&[
        "--history",
        db_arg,
        "show",
        METRIC,
        "--hardware-class",
        &class,
    ]);
    assert_eq!(shown["metric"], METRIC);
    let series = shown["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{shown:#}");
    assert_eq!(series[0]["metric"], METRIC);
    assert_eq!(series[0]["hardware_class"], class.as_str());
    assert_eq!(series[0]["change_points"], serde_json::json!([]));
    let points = series[0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[1]["run_id"], runs[0]["run_id"]);
    assert_eq!(points[1]["finished_at"], latest["timestamp_utc"]);
    assert_eq!(
        points[1]["value"],
        latest["hardware_classes"][&class]["metrics"][METRIC]["median"]
    );
    // The stored report is the one written.
    let stored = History::open_existing(&db)
        .unwrap()
        .report(runs[0]["run_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::to_value(&stored).unwrap(), latest);

    // The table names the class and both runs.
    let out = fleetgate(&["history", "--history", db_arg, "show", METRIC]);
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    assert!(
        table.starts_with(&format!("{METRIC} on {class}: 2 runs, no change point\n")),
        "{table}"
    );
    assert!(
        table.contains(runs[1]["run_id"].as_str().unwrap()),
        "{table}"
    );

    // An unknown metric: exit 2 and one line with the close names.
    let out = fleetgate(&[
        "history",
        "--history",
        db_arg,
        "show",
        "gpumemprof_cpu.runtime_overhead",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let error = text(&out.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.starts_with(&format!(
            "Error: history {db_arg}: no metric gpumemprof_cpu.runtime_overhead recorded; close names: {METRIC}"
        )),
        "{error}"
    );

    // --no-history records nothing.
    let other = tempfile::tempdir().unwrap();
    let (code, _, stderr) = tiny(other.path(), &["--no-history"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!other.path().join("history.sqlite").exists());
    // A missing history is one line too.
    let missing = other.path().join("history.sqlite");
    let out = fleetgate(&["history", "--history", missing.to_str().unwrap(), "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Error: history {}: no such file (a run records there unless --no-history)\n",
            missing.display()
        )
    );
}

/// Runs a tiny run with `--history db`, expecting the report written, exit 0 and one warning
/// that starts with `expected`.
fn run_keeps_the_report(dir: &Path, db: &Path, expected: &str) {
    let (code, stdout, stderr) = tiny(dir, &["--history", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let report = report(dir);
    assert_eq!(report["version"], "v0.4");
    assert!(stdout.contains("Fleet verdict: "), "{stdout}");
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(warned[0].starts_with(expected), "{}", warned[0]);
    assert!(
        warned[0].ends_with("; the report is not recorded there"),
        "{}",
        warned[0]
    );
}

#[test]
fn a_corrupt_locked_or_newer_history_keeps_the_report_and_the_exit_code() {
    let work = tempfile::tempdir().unwrap();

    let corrupt = work.path().join("corrupt.sqlite");
    let bytes = b"not a database, but someone's notes\n".repeat(200);
    std::fs::write(&corrupt, &bytes).unwrap();
    run_keeps_the_report(
        work.path(),
        &corrupt,
        &format!(
            "Warning: history {}: not a readable SQLite database (",
            corrupt.display()
        ),
    );
    assert_eq!(std::fs::read(&corrupt).unwrap(), bytes, "left as it was");

    let newer = work.path().join("newer.sqlite");
    drop(History::open(&newer).unwrap());
    Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 42")
        .unwrap();
    run_keeps_the_report(
        work.path(),
        &newer,
        &format!(
            "Warning: history {}: schema version 42 is newer than this fleetgate reads (1); use a newer fleetgate or another --history",
            newer.display()
        ),
    );

    // Locked: another connection holds an exclusive transaction for the whole run.
    let locked = work.path().join("locked.sqlite");
    drop(History::open(&locked).unwrap());
    let holder = Connection::open(&locked).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    run_keeps_the_report(
        work.path(),
        &locked,
        &format!(
            "Warning: history {}: locked by another process for more than 5 s",
            locked.display()
        ),
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert!(
        History::open_existing(&locked)
            .unwrap()
            .list(10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn serve_refuses_a_history_it_cannot_use_before_listening() {
    let work = tempfile::tempdir().unwrap();
    let corrupt = work.path().join("h.sqlite");
    std::fs::write(&corrupt, b"x".repeat(4096)).unwrap();
    let out = fleetgate(&[
        "serve",
        "--plaintext",
        "--listen",
        "127.0.0.1:0",
        "--history",
        corrupt.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].starts_with(&format!(
            "Error: cannot start the coordinator: history {}: not a readable SQLite database (",
            corrupt.display()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_records_every_run_it_finishes() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("serve-history.sqlite");
    let (recorder, thread) = HistoryRecorder::start(History::open(&db).unwrap()).unwrap();
    let mut settings = fast_settings();
    settings.history = Some(recorder);
    let coordinator = in_process(settings).await;
    let url = coordinator.url();
    let agent = plaintext_agent(&url, "h1", &work.path().join("h1"), &[]);
    wait_for_agents(&link(&url), None, &["h1"], || agent.text()).await;
    let first = small_run(&link(&url)).await;
    let second = small_run(&link(&url)).await;
    let recorded = eventually(
        "both runs to be recorded",
        PATIENCE,
        async || {
            let runs = History::open_existing(&db).ok()?.list(10).ok()?;
            (runs.len() == 2).then_some(runs)
        },
        || agent.text(),
    )
    .await;
    // The coordinator's run ids, newest first, with the reports' finish times.
    assert!(
        recorded.iter().all(|r| r.run_id.starts_with("run-")),
        "{recorded:?}"
    );
    assert_eq!(recorded[0].finished_at, second.timestamp_utc);
    assert_eq!(recorded[1].finished_at, first.timestamp_utc);
    let stored = History::open_existing(&db)
        .unwrap()
        .report(&recorded[0].run_id)
        .unwrap()
        .unwrap();
    assert_eq!(stored, second);
    coordinator.shutdown().await;
    drop(agent);
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || thread.join()),
    )
    .await
    .expect("the history thread ends once the coordinator stops")
    .unwrap()
    .unwrap();
}

#[test]
fn a_recent_shift_in_the_history_is_advice_in_the_report_and_the_console() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("history.sqlite");
    // A first real run gives this host's class and level.
    let (code, _, stderr) = tiny(work.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let real: fleetgate_common::report::Report =
        serde_json::from_slice(&std::fs::read(work.path().join("report.json")).unwrap()).unwrap();
    let class = real.hardware_classes.keys().next().unwrap().clone();
    let level = real.hardware_classes[&class].metrics[METRIC].median;
    // Before it, 16 runs far below its level and 2 at it: with the next run, the shift is 4
    // runs before the end.
    let mut history = History::open(&db).unwrap();
    for i in 0..18_u32 {
        let mut report = real.clone();
        report.timestamp_utc = format!("2020-01-01T00:{i:02}:00Z");
        let wobble = f64::from(i * 7 % 11) / 10.0;
        let value = if i < 16 {
            level - 100.0 + wobble
        } else {
            level + wobble
        };
        report
            .hardware_classes
            .get_mut(&class)
            .unwrap()
            .metrics
            .get_mut(METRIC)
            .unwrap()
            .median = value;
        history
            .record(&format!("synthetic-{i:02}"), &report)
            .unwrap();
    }
    drop(history);

    let summary = work.path().join("summary.md");
    let (code, stdout, stderr) = tiny(work.path(), &["--markdown", summary.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let report = report(work.path());
    support::assert_matches_schema(&report);
    // The HTML report charts the series, change point included, and the summary links to it.
    let page = std::fs::read_to_string(work.path().join("report.html")).unwrap();
    let section = &page[page
        .find("<section id=\"history\">")
        .expect("a history section")..];
    assert!(
        section.contains(METRIC) && section.contains(&class),
        "{section}"
    );
    assert!(
        section.contains("synthetic-16"),
        "the shift's run is named: {section}"
    );
    assert!(
        std::fs::read_to_string(&summary)
            .unwrap()
            .contains("(<report.html>)"),
        "the summary links to the page by its file name"
    );
    let advice = report["history_advice"].as_array().expect("history_advice");
    assert_eq!(advice.len(), 1, "{advice:?}");
    let line = advice[0].as_str().unwrap();
    assert!(
        line.starts_with(&format!("{METRIC} on {class}: shifted from a median of ")),
        "{line}"
    );
    assert!(line.contains("(16 runs) to "), "{line}");
    assert!(
        line.contains("(4 runs) at run synthetic-16 (2020-01-01T00:16:00Z)"),
        "{line}"
    );
    // Advice only: the verdict is the gate's.
    assert_eq!(report["verdict"], "pass", "{report:#}");
    assert!(
        stdout.contains(&format!("History:\n- {line}\n")),
        "{stdout}"
    );
}
