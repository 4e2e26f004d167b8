//! The history against real SQLite files in temporary folders: recording, listing, series and
//! their change points, advice, migrations, and the files it must refuse.

use fleetgate_common::report::Verdict;

use super::*;

/// A real report of a tiny `fleetgate run` (one agent `vm`, class `cpu-amd-epyc-2c`, the
/// overhead mode of gpumemprof_cpu under the budget gate).
const TEMPLATE: &str = include_str!("../../tests/fixtures/history-report.json");
const CLASS: &str = "cpu-amd-epyc-2c";
const METRIC: &str = "gpumemprof_cpu.runtime_overhead_pct";

/// The template finished at minute `minute` of a day, with every value of `METRIC` set to
/// `value`.
fn report_at(minute: u32, value: f64) -> Report {
    let mut report: Report = serde_json::from_str(TEMPLATE).unwrap();
    report.timestamp_utc = format!(
        "2026-11-{:02}T{:02}:{:02}:00Z",
        1 + minute / 1440,
        minute / 60 % 24,
        minute % 60
    );
    report.metrics.insert(format!("vm/{METRIC}"), value);
    for summary in report.hardware_classes.values_mut() {
        let spread = summary.metrics.get_mut(METRIC).unwrap();
        spread.median = value;
        spread.worst = value;
    }
    report
}

/// Values around 10 with a deterministic wobble of ±0.3.
fn wobble(i: usize) -> f64 {
    10.0 + 0.3 * ((i * 7 % 11) as f64 / 5.0 - 1.0)
}

fn record_series(history: &mut History, values: &[f64]) {
    for (i, v) in values.iter().enumerate() {
        let report = report_at(i as u32, *v);
        assert!(history.record(&format!("run-{i:03}"), &report).unwrap());
    }
}

#[test]
fn runs_are_recorded_listed_newest_first_and_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/folder/history.sqlite");
    let mut history = History::open(&path).unwrap();
    record_series(&mut history, &[1.0, 2.0, 3.0]);
    // The same run again changes nothing.
    assert!(!history.record("run-001", &report_at(1, 2.0)).unwrap());
    let runs = history.list(10).unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["run-002", "run-001", "run-000"]);
    assert_eq!(runs[0].profile, "pr");
    assert_eq!(runs[0].mode, "overhead");
    assert_eq!(runs[0].gate_mode, "budget");
    assert_eq!(runs[0].verdict, "pass");
    assert_eq!(runs[0].agents, 1);
    assert_eq!(runs[0].hardware_classes, [CLASS]);
    assert_eq!(history.list(2).unwrap().len(), 2);
    assert_eq!(
        history.report("run-002").unwrap().unwrap(),
        report_at(2, 3.0)
    );
    assert_eq!(history.report("run-999").unwrap(), None);

    // The index view has the documented columns, one row per metric per class and run.
    let rows: Vec<(String, String, String, f64)> = history
        .conn
        .prepare(
            "SELECT run_id, hardware_class, metric, value FROM metric_index
             WHERE run_id = 'run-002' AND metric LIKE '%runtime_overhead_pct' ORDER BY hardware_class",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                "run-002".to_owned(),
                FLEET_CLASS.to_owned(),
                format!("vm/{METRIC}"),
                3.0
            ),
            (
                "run-002".to_owned(),
                CLASS.to_owned(),
                METRIC.to_owned(),
                3.0
            ),
        ]
    );
    let columns: Vec<String> = history
        .conn
        .prepare("SELECT * FROM metric_index LIMIT 0")
        .unwrap()
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        columns,
        [
            "run_id",
            "finished_at",
            "profile",
            "mode",
            "gate_mode",
            "verdict",
            "metric",
            "hardware_class",
            "value"
        ]
    );
}

#[test]
fn a_series_shows_a_step_where_it_starts_and_the_last_runs_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = History::open(&dir.path().join("h.sqlite")).unwrap();
    let values: Vec<f64> = (0..24)
        .map(|i| wobble(i) + if i >= 16 { 5.0 } else { 0.0 })
        .collect();
    record_series(&mut history, &values);
    let series = history.series(METRIC, Some(CLASS), 100).unwrap();
    assert_eq!(series.len(), 1);
    let s = &series[0];
    assert_eq!(
        (s.metric.as_str(), s.hardware_class.as_str()),
        (METRIC, CLASS)
    );
    assert_eq!(s.points.len(), 24);
    assert_eq!(s.points[0].run_id, "run-000");
    assert_eq!(s.points[23].value, values[23]);
    assert_eq!(s.change_points, [16]);
    // The last 12 runs: the step is at their 4th.
    let last = history.series(METRIC, Some(CLASS), 12).unwrap();
    assert_eq!(last[0].points[0].run_id, "run-012");
    assert_eq!(last[0].change_points, [4]);
    // Without a class: the fleet-wide key (`vm/…`) is another metric, so only the class.
    let all = history.series(METRIC, None, 100).unwrap();
    assert_eq!(all.len(), 1);
    let fleet = history
        .series(&format!("vm/{METRIC}"), Some(FLEET_CLASS), 100)
        .unwrap();
    assert_eq!(fleet[0].change_points, [16]);
}

#[test]
fn a_flat_series_has_no_change_point_and_no_advice() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = History::open(&dir.path().join("h.sqlite")).unwrap();
    let values: Vec<f64> = (0..30).map(wobble).collect();
    record_series(&mut history, &values);
    let series = history.series(METRIC, None, 100).unwrap();
    assert!(series[0].change_points.is_empty(), "{series:?}");
    assert!(
        history
            .advice(&report_at(29, values[29]))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_recent_shift_of_a_gated_metric_is_advice_and_an_old_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = History::open(&dir.path().join("h.sqlite")).unwrap();
    // A shift 4 runs before the end: within the advice window.
    let values: Vec<f64> = (0..20)
        .map(|i| wobble(i) + if i >= 16 { 5.0 } else { 0.0 })
        .collect();
    record_series(&mut history, &values);
    let last = report_at(19, values[19]);
    let advice = history.advice(&last).unwrap();
    assert_eq!(advice.len(), 1, "{advice:?}");
    assert_eq!(
        advice[0],
        format!(
            "{METRIC} on {CLASS}: shifted from a median of 10.03% (16 runs) to 14.91% (4 runs) at run run-016 (2026-11-01T00:16:00Z); history change point, the verdict is unchanged"
        )
    );
    assert_eq!(last.verdict, Verdict::Pass);

    // Ten more runs at the new level: the change point is no longer among the last runs.
    for i in 20..30 {
        let report = report_at(i, wobble(i as usize) + 5.0);
        history.record(&format!("run-{i:03}"), &report).unwrap();
    }
    assert!(history.advice(&report_at(29, 15.0)).unwrap().is_empty());

    // Runs of another mode are not compared.
    let mut soak = report_at(40, 30.0);
    soak.mode = "soak".to_owned();
    history.record("soak-run", &soak).unwrap();
    assert!(history.advice(&report_at(29, 15.0)).unwrap().is_empty());

    // Nor runs of another workload size: 4 of them far off, the last the run advised on.
    for i in 50..54 {
        let mut bigger = report_at(i, 90.0 + f64::from(i % 3));
        bigger.config.workload.iterations *= 10;
        history.record(&format!("bigger-{i}"), &bigger).unwrap();
        assert_ne!(config_key(&bigger), config_key(&report_at(29, 15.0)));
    }
    assert!(history.advice(&report_at(29, 15.0)).unwrap().is_empty());
}

#[test]
fn an_unknown_metric_names_close_ones_and_an_unknown_class_lists_the_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    let mut history = History::open(&path).unwrap();
    record_series(&mut history, &[1.0]);
    let e = history
        .series("gpumemprof_cpu.runtime_overhead", None, 10)
        .unwrap_err();
    assert!(e.is_usage());
    assert_eq!(
        e.to_string(),
        format!(
            "history {}: no metric gpumemprof_cpu.runtime_overhead recorded; close names: {METRIC}, vm/{METRIC}, gpumemprof_cpu.cpu_overhead_pct",
            path.display()
        )
    );
    let e = history.series(METRIC, Some("gpu-h100"), 10).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "history {}: metric {METRIC} has no hardware class gpu-h100; its classes: {CLASS}",
            path.display()
        )
    );
    assert_eq!(
        close_matches("zzz", &[METRIC.to_owned()]),
        Vec::<String>::new()
    );
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

#[test]
fn an_empty_or_unversioned_file_is_migrated_once() {
    let dir = tempfile::tempdir().unwrap();
    // A zero-byte file is an empty database at version 0.
    let empty = dir.path().join("empty.sqlite");
    std::fs::write(&empty, b"").unwrap();
    // A database at version 0 with a table of someone's notes.
    let notes = dir.path().join("notes.sqlite");
    Connection::open(&notes)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('kept');")
        .unwrap();
    for path in [&empty, &notes] {
        let mut history = History::open(path).unwrap();
        assert_eq!(history.user_version().unwrap(), SCHEMA_VERSION as i64);
        record_series(&mut history, &[1.0]);
        drop(history);
        // Opening again migrates nothing and keeps what was recorded.
        let history = History::open_existing(path).unwrap();
        assert_eq!(history.list(10).unwrap().len(), 1);
        let mode: String = history
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    let kept: String = Connection::open(&notes)
        .unwrap()
        .query_row("SELECT text FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, "kept");
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    drop(History::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let e = History::open(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "history {}: schema version 7 is newer than this fleetgate reads ({SCHEMA_VERSION}); use a newer fleetgate or another --history",
            path.display()
        )
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    let bytes = b"this is a JSON report, not a database {\"version\": \"v0.4\"}\n".repeat(100);
    std::fs::write(&path, &bytes).unwrap();
    let e = History::open(&path).unwrap_err();
    assert!(matches!(e, HistoryError::Corrupt { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "history {}: not a readable SQLite database (",
            path.display()
        )),
        "{text}"
    );
    assert!(!text.contains('\n'));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(matches!(
        History::open_existing(&dir.path().join("missing.sqlite")),
        Err(HistoryError::Missing { .. })
    ));
}

#[test]
fn a_locked_file_is_a_clear_error_after_the_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    let mut history = History::open(&path).unwrap();
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let e = history.record("run-000", &report_at(0, 1.0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "history {}: locked by another process for more than 5 s; try again when it is done",
            path.display()
        )
    );
    holder.execute_batch("ROLLBACK").unwrap();
    assert!(history.record("run-000", &report_at(0, 1.0)).unwrap());
}

#[test]
fn a_recorder_records_what_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite");
    let (recorder, thread) = HistoryRecorder::start(History::open(&path).unwrap()).unwrap();
    let encoded = |json: &str| std::sync::Arc::new(EncodedReport::from_json(json));
    recorder.record(
        "run-a",
        encoded(&serde_json::to_string(&report_at(0, 1.0)).unwrap()),
    );
    recorder.record("run-b", encoded("not a report"));
    recorder.record(
        "run-c",
        encoded(&serde_json::to_string(&report_at(1, 2.0)).unwrap()),
    );
    drop(recorder);
    thread.join().unwrap();
    let ids: Vec<String> = History::open_existing(&path)
        .unwrap()
        .list(10)
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids, ["run-c", "run-a"]);
}

#[test]
fn a_report_id_is_its_finish_time_and_a_digest() {
    let report = report_at(75, 1.0);
    let id = report_run_id(&report);
    assert!(id.starts_with("20261101T011500Z-"), "{id}");
    assert_eq!(id.len(), "20261101T011500Z-".len() + 8);
    assert_eq!(report_run_id(&report), id);
    assert_ne!(report_run_id(&report_at(75, 2.0)), id);
}
