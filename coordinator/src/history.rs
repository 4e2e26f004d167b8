//! The run history: every fleet report kept in a SQLite file, with an index of its metrics per
//! hardware class, so a run can be compared with the runs before it.
//!
//! The file holds one row per run (`runs`: the run's id, when it finished, its profile, mode,
//! gate mode, verdict, agents and classes, and the whole report JSON) and one row per metric
//! per hardware class (`metric_values`: the class summary's median, and the report's
//! fleet-wide `metrics` value under the class [`FLEET_CLASS`]); the view `metric_index` joins
//! them into (run_id, finished_at, profile, mode, gate_mode, verdict, metric, hardware_class,
//! value). The schema's version is `PRAGMA user_version`, migrated forward on open
//! ([`MIGRATIONS`]); a file of a newer version is refused, never changed. The file is in WAL
//! mode, so readers do not wait for a writer, and a writer waits up to [`BUSY_TIMEOUT`] for
//! another. A series' change points are found by E-divisive means
//! ([`fleetgate_common::stats::change_point`]). See `docs/history.md`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use fleetgate_common::report::{EncodedReport, Report, format_value};
use fleetgate_common::stats::change_point::{ChangePointConfig, change_points};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The file name of the default history, in the report's folder.
pub const DEFAULT_FILE_NAME: &str = "history.sqlite";

/// The hardware class under which a report's fleet-wide `metrics` values are kept.
pub const FLEET_CLASS: &str = "*";

/// How long a write waits for another connection's write to end.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A change point within this many of a series' last runs is advised on.
pub const ADVICE_WINDOW: usize = 5;

/// Runs of a series the advice looks at.
pub const ADVICE_SERIES_RUNS: usize = 100;

/// Schema version this build writes: `PRAGMA user_version` after the migrations.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The migrations: entry `i` takes a file from version `i` to `i + 1`. Never edit one that has
/// shipped; add the next.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs, their metric values per hardware class, and the index view.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        finished_at TEXT NOT NULL,
        profile TEXT NOT NULL,
        mode TEXT NOT NULL,
        gate_mode TEXT NOT NULL,
        verdict TEXT NOT NULL,
        config_key TEXT NOT NULL,
        agents INTEGER NOT NULL,
        hardware_classes TEXT NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX runs_by_finish ON runs (finished_at, id);
    CREATE TABLE metric_values (
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        metric TEXT NOT NULL,
        hardware_class TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (metric, hardware_class, run)
    ) WITHOUT ROWID;
    CREATE VIEW metric_index AS
        SELECT r.run_id, r.finished_at, r.profile, r.mode, r.gate_mode, r.verdict,
               v.metric, v.hardware_class, v.value
        FROM metric_values v JOIN runs r ON r.id = v.run;",
];

/// Why the history could not be opened, written or read. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file is not a SQLite database, or is damaged.
    #[error(
        "history {}: not a readable SQLite database ({message}); move it aside or give another --history",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// Another connection held the file longer than [`BUSY_TIMEOUT`].
    #[error(
        "history {}: locked by another process for more than {} s; try again when it is done",
        path.display(),
        BUSY_TIMEOUT.as_secs()
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer fleetgate.
    #[error(
        "history {}: schema version {found} is newer than this fleetgate reads ({supported}); use a newer fleetgate or another --history",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: usize,
    },
    /// The file does not exist (reading commands only).
    #[error("history {}: no such file (a run records there unless --no-history)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Any other SQLite or file error (cannot open, read-only, disk full).
    #[error("history {}: {message}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// A stored report cannot be encoded or decoded.
    #[error("history {}: run {run_id}: {message}", path.display())]
    Report {
        /// The file.
        path: PathBuf,
        /// The run.
        run_id: String,
        /// Why.
        message: String,
    },
    /// No run recorded the metric.
    #[error("history {}: no metric {metric} recorded{}", path.display(), close_names(close))]
    UnknownMetric {
        /// The file.
        path: PathBuf,
        /// The metric asked for.
        metric: String,
        /// Recorded metrics with close names.
        close: Vec<String>,
    },
    /// The metric has no value for the hardware class.
    #[error(
        "history {}: metric {metric} has no hardware class {class}; its classes: {}",
        path.display(),
        classes.join(", ")
    )]
    UnknownClass {
        /// The file.
        path: PathBuf,
        /// The metric.
        metric: String,
        /// The class asked for.
        class: String,
        /// The classes it has.
        classes: Vec<String>,
    },
}

impl HistoryError {
    /// Whether the caller named something the history does not hold (a usage error).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            HistoryError::UnknownMetric { .. } | HistoryError::UnknownClass { .. }
        )
    }
}

fn close_names(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!("; close names: {}", close.join(", "))
    }
}

/// One run as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// The report's `timestamp_utc`.
    pub finished_at: String,
    /// Profile.
    pub profile: String,
    /// Mode.
    pub mode: String,
    /// Gate mode.
    pub gate_mode: String,
    /// Verdict.
    pub verdict: String,
    /// Which runs measured the same thing: see [`config_key`].
    pub config_key: String,
    /// Agents in the run.
    pub agents: u64,
    /// Its hardware classes.
    pub hardware_classes: Vec<String>,
}

/// One value of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// The run.
    pub run_id: String,
    /// When it finished (`timestamp_utc`).
    pub finished_at: String,
    /// The class's median (or the fleet-wide value under [`FLEET_CLASS`]).
    pub value: f64,
}

/// A metric's values on one hardware class, oldest first, with its change points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// `<runtime>.<metric>`.
    pub metric: String,
    /// The hardware class, or [`FLEET_CLASS`].
    pub hardware_class: String,
    /// The values, oldest first.
    pub points: Vec<SeriesPoint>,
    /// Indices into `points` where a shifted segment starts.
    pub change_points: Vec<usize>,
}

/// Which runs a series is drawn from (`None`: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    /// Only runs of this profile.
    pub profile: Option<String>,
    /// Only runs of this mode.
    pub mode: Option<String>,
    /// Only runs of this [`config_key`].
    pub config_key: Option<String>,
}

/// An open history file.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    conn: Connection,
}

impl History {
    /// Opens (creating it and its folder if missing) the history at `path` and migrates it to
    /// [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| HistoryError::Sqlite {
                path: path.to_path_buf(),
                message: format!("cannot create the folder {}: {e}", folder.display()),
            })?;
        }
        Self::open_with(path, OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// Opens an existing history at `path` (migrating it if it is older).
    pub fn open_existing(path: &Path) -> Result<Self, HistoryError> {
        if !path.exists() {
            return Err(HistoryError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::open_with(path, OpenFlags::empty())
    }

    fn open_with(path: &Path, extra: OpenFlags) -> Result<Self, HistoryError> {
        let err = |e| sqlite_error(path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let mut history = History {
            path: path.to_path_buf(),
            conn,
        };
        // Reading the version reads the header: a file that is not a database fails here.
        history.check_version(history.user_version()?)?;
        history
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(err)?;
        history
            .conn
            .execute_batch("PRAGMA foreign_keys = ON")
            .map_err(err)?;
        history.migrate()?;
        Ok(history)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn user_version(&self) -> Result<i64, HistoryError> {
        self.conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| sqlite_error(&self.path, e))
    }

    fn check_version(&self, found: i64) -> Result<(), HistoryError> {
        if found < 0 || found > SCHEMA_VERSION as i64 {
            return Err(HistoryError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Applies the migrations the file lacks, each in its own transaction (another process
    /// migrating at the same time waits, then finds the file current).
    fn migrate(&mut self) -> Result<(), HistoryError> {
        loop {
            if self.user_version()? == SCHEMA_VERSION as i64 {
                return Ok(());
            }
            let path = self.path.clone();
            let err = |e| sqlite_error(&path, e);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let found: i64 = tx
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(err)?;
            if found < 0 || found > SCHEMA_VERSION as i64 {
                return Err(HistoryError::NewerSchema {
                    path,
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            let Ok(from) = usize::try_from(found) else {
                return Ok(());
            };
            if from >= SCHEMA_VERSION {
                return Ok(());
            }
            tx.execute_batch(MIGRATIONS[from]).map_err(err)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", from + 1))
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
    }

    /// Records `report` as run `run_id`: the whole report and its metric values per hardware
    /// class. Returns false when the run is already recorded (nothing changes).
    pub fn record(&mut self, run_id: &str, report: &Report) -> Result<bool, HistoryError> {
        let json = serde_json::to_string(report).map_err(|e| HistoryError::Report {
            path: self.path.clone(),
            run_id: run_id.to_owned(),
            message: e.to_string(),
        })?;
        self.record_json(run_id, report, &json)
    }

    fn record_json(
        &mut self,
        run_id: &str,
        report: &Report,
        json: &str,
    ) -> Result<bool, HistoryError> {
        let path = self.path.clone();
        let err = |e| sqlite_error(&path, e);
        let classes: Vec<&String> = report.hardware_classes.keys().collect();
        let classes = serde_json::to_string(&classes).unwrap_or_else(|_| "[]".to_owned());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO runs (run_id, finished_at, profile, mode, gate_mode, verdict, config_key, agents, hardware_classes, report)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    run_id,
                    report.timestamp_utc,
                    report.profile,
                    report.mode,
                    report.gate_mode,
                    report.verdict.name(),
                    config_key(report),
                    report.agents.len() as i64,
                    classes,
                    json
                ],
            )
            .map_err(err)?;
        if inserted == 0 {
            return Ok(false);
        }
        let run = tx.last_insert_rowid();
        {
            let mut insert = tx
                .prepare(
                    "INSERT OR IGNORE INTO metric_values (run, metric, hardware_class, value) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            let fleet = report.metrics.iter().map(|(m, v)| (m, FLEET_CLASS, *v));
            let per_class = report.hardware_classes.iter().flat_map(|(class, summary)| {
                summary
                    .metrics
                    .iter()
                    .map(move |(m, spread)| (m, class.as_str(), spread.median))
            });
            for (metric, class, value) in fleet.chain(per_class) {
                if value.is_finite() {
                    insert
                        .execute(rusqlite::params![run, metric, class, value])
                        .map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(true)
    }

    /// The last `limit` runs, newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<RunSummary>, HistoryError> {
        let err = |e| sqlite_error(&self.path, e);
        let mut query = self
            .conn
            .prepare(
                "SELECT run_id, finished_at, profile, mode, gate_mode, verdict, config_key, agents, hardware_classes
                 FROM runs ORDER BY finished_at DESC, id DESC LIMIT ?1",
            )
            .map_err(err)?;
        let rows = query
            .query_map([limit as i64], |row| {
                let classes: String = row.get(8)?;
                Ok(RunSummary {
                    run_id: row.get(0)?,
                    finished_at: row.get(1)?,
                    profile: row.get(2)?,
                    mode: row.get(3)?,
                    gate_mode: row.get(4)?,
                    verdict: row.get(5)?,
                    config_key: row.get(6)?,
                    agents: row.get::<_, i64>(7)?.max(0) as u64,
                    hardware_classes: serde_json::from_str(&classes).unwrap_or_default(),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// The whole report of run `run_id`, if recorded.
    pub fn report(&self, run_id: &str) -> Result<Option<Report>, HistoryError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT report FROM runs WHERE run_id = ?1",
                [run_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| sqlite_error(&self.path, e))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| HistoryError::Report {
                path: self.path.clone(),
                run_id: run_id.to_owned(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// `metric`'s series per hardware class (all classes, [`FLEET_CLASS`] included, or only
    /// `hardware_class`): each the last `limit` runs that recorded it, oldest first, with the
    /// change points found among them.
    pub fn series(
        &self,
        metric: &str,
        hardware_class: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Series>, HistoryError> {
        self.series_where(metric, hardware_class, limit, &SeriesFilter::default())
    }

    /// [`History::series`] over the runs `filter` keeps.
    pub fn series_where(
        &self,
        metric: &str,
        hardware_class: Option<&str>,
        limit: usize,
        filter: &SeriesFilter,
    ) -> Result<Vec<Series>, HistoryError> {
        let err = |e| sqlite_error(&self.path, e);
        let known: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM metric_values WHERE metric = ?1 LIMIT 1",
                [metric],
                |row| row.get(0),
            )
            .optional()
            .map_err(err)?;
        if known.is_none() {
            return Err(HistoryError::UnknownMetric {
                path: self.path.clone(),
                metric: metric.to_owned(),
                close: self.close_metrics(metric)?,
            });
        }
        if let Some(class) = hardware_class {
            let classes = self.classes_of(metric)?;
            if !classes.iter().any(|c| c == class) {
                return Err(HistoryError::UnknownClass {
                    path: self.path.clone(),
                    metric: metric.to_owned(),
                    class: class.to_owned(),
                    classes,
                });
            }
        }
        let mut query = self
            .conn
            .prepare_cached(
                "SELECT hardware_class, run_id, finished_at, value FROM (
                     SELECT v.hardware_class, r.run_id, r.finished_at, r.id, v.value,
                            ROW_NUMBER() OVER (PARTITION BY v.hardware_class
                                               ORDER BY r.finished_at DESC, r.id DESC) AS age
                     FROM metric_values v JOIN runs r ON r.id = v.run
                     WHERE v.metric = ?1 AND (?2 IS NULL OR v.hardware_class = ?2)
                       AND (?3 IS NULL OR r.profile = ?3) AND (?4 IS NULL OR r.mode = ?4)
                       AND (?6 IS NULL OR r.config_key = ?6))
                 WHERE age <= ?5
                 ORDER BY hardware_class, finished_at, id",
            )
            .map_err(err)?;
        let rows = query
            .query_map(
                rusqlite::params![
                    metric,
                    hardware_class,
                    filter.profile,
                    filter.mode,
                    limit as i64,
                    filter.config_key
                ],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        SeriesPoint {
                            run_id: row.get(1)?,
                            finished_at: row.get(2)?,
                            value: row.get(3)?,
                        },
                    ))
                },
            )
            .map_err(err)?;
        let mut series: Vec<Series> = Vec::new();
        for row in rows {
            let (class, point) = row.map_err(err)?;
            match series.last_mut() {
                Some(s) if s.hardware_class == class => s.points.push(point),
                _ => series.push(Series {
                    metric: metric.to_owned(),
                    hardware_class: class,
                    points: vec![point],
                    change_points: Vec::new(),
                }),
            }
        }
        let config = ChangePointConfig::default();
        for s in &mut series {
            let values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
            // The values are finite (only finite ones are stored), so this cannot fail.
            s.change_points = change_points(&values, &config).unwrap_or_default();
        }
        Ok(series)
    }

    fn classes_of(&self, metric: &str) -> Result<Vec<String>, HistoryError> {
        let err = |e| sqlite_error(&self.path, e);
        let mut query = self
            .conn
            .prepare("SELECT DISTINCT hardware_class FROM metric_values WHERE metric = ?1")
            .map_err(err)?;
        let rows = query.query_map([metric], |row| row.get(0)).map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// Up to five recorded metrics whose names are close to `metric`: those that contain it
    /// or that it contains, then the nearest by edit distance (at most a third of the name).
    fn close_metrics(&self, metric: &str) -> Result<Vec<String>, HistoryError> {
        let err = |e| sqlite_error(&self.path, e);
        let mut query = self
            .conn
            .prepare("SELECT DISTINCT metric FROM metric_values")
            .map_err(err)?;
        let names: Vec<String> = query
            .query_map([], |row| row.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(close_matches(metric, &names))
    }

    /// Advice for `report` (recorded before) from the history: for each gated metric and each
    /// of the run's hardware classes, a line where the class's series over the runs of the same
    /// profile, mode and [`config_key`] has a change point among its last [`ADVICE_WINDOW`]
    /// runs. Advice only.
    pub fn advice(&self, report: &Report) -> Result<Vec<String>, HistoryError> {
        Ok(self
            .gated_series(report)?
            .iter()
            .flat_map(advice_lines)
            .collect())
    }

    /// The series of every metric `report` gates, per hardware class of its fleet, drawn from
    /// runs like it (same profile, mode and [`config_key`]), the last [`ADVICE_SERIES_RUNS`]
    /// of them, with their change points: what the advice and the HTML report's history
    /// charts show.
    pub fn gated_series(&self, report: &Report) -> Result<Vec<Series>, HistoryError> {
        // A fleet report's checks are keyed `<agent>/<runtime>.<metric>`; the class summaries
        // hold `<runtime>.<metric>`.
        let mut gated: Vec<&str> = report
            .budget_checks
            .iter()
            .flatten()
            .map(|(m, _)| m)
            .chain(report.regression_checks.iter().flatten().map(|(m, _)| m))
            .map(|m| m.split_once('/').map_or(m.as_str(), |(_, metric)| metric))
            .collect();
        gated.sort();
        gated.dedup();
        let filter = SeriesFilter {
            profile: Some(report.profile.clone()),
            mode: Some(report.mode.clone()),
            config_key: Some(config_key(report)),
        };
        let mut all = Vec::new();
        for metric in gated {
            for class in report.hardware_classes.keys() {
                match self.series_where(metric, Some(class), ADVICE_SERIES_RUNS, &filter) {
                    Ok(series) => all.extend(series),
                    Err(e) if e.is_usage() => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(all)
    }
}

/// The advice lines of one series: one per change point among its last [`ADVICE_WINDOW`]
/// points, with the medians of the segments either side.
pub fn advice_lines(series: &Series) -> Vec<String> {
    let n = series.points.len();
    let mut bounds = vec![0];
    bounds.extend(&series.change_points);
    bounds.push(n);
    let median_of = |from: usize, to: usize| {
        let values: Vec<f64> = series.points[from..to].iter().map(|p| p.value).collect();
        fleetgate_common::stats::median(&values).unwrap_or(f64::NAN)
    };
    let mut lines = Vec::new();
    for (i, &cp) in series.change_points.iter().enumerate() {
        if cp + ADVICE_WINDOW < n {
            continue;
        }
        let (before_from, after_to) = (bounds[i], bounds[i + 2]);
        let before = median_of(before_from, cp);
        let after = median_of(cp, after_to);
        let m = &series.metric;
        let first = &series.points[cp];
        lines.push(format!(
            "{m} on {}: shifted from a median of {} ({} runs) to {} ({} runs) at run {} ({}); history change point, the verdict is unchanged",
            series.hardware_class,
            format_value(m, before),
            cp - before_from,
            format_value(m, after),
            after_to - cp,
            first.run_id,
            first.finished_at
        ));
    }
    lines
}

/// The id a run is recorded under when its coordinator's id is not known (a `fleetgate run`):
/// its finish time and the first 8 hex digits of the SHA-256 of its report, e.g.
/// `20261130T112336Z-3fa9c1d2`.
pub fn report_run_id(report: &Report) -> String {
    let json = serde_json::to_vec(report).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let stamp: String = report
        .timestamp_utc
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{stamp}-{hex}")
}

/// What makes two runs' metrics comparable: the first 16 hex digits of the SHA-256 of the
/// report's comparable config (profile, mode, workload, runtimes and their plans, retention
/// limits, knobs). Runs of another workload size or other knobs measure something else.
pub fn config_key(report: &Report) -> String {
    let json = serde_json::to_vec(&report.config.comparable()).unwrap_or_default();
    Sha256::digest(&json)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Names among `names` close to `wanted`: those that contain it or that it contains, then the
/// nearest by edit distance (at most a third of its length), five at most.
pub fn close_matches(wanted: &str, names: &[String]) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = names
        .iter()
        .filter_map(|name| {
            if name.contains(wanted) || wanted.contains(name.as_str()) {
                return Some((0, name));
            }
            let d = edit_distance(wanted, name);
            (d <= wanted.chars().count().div_ceil(3)).then_some((d, name))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n.clone()).collect()
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A SQLite error as a [`HistoryError`] naming `path`.
fn sqlite_error(path: &Path, error: rusqlite::Error) -> HistoryError {
    let path = path.to_path_buf();
    let message = fleetgate_common::input::one_line(&error.to_string()).into_owned();
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            HistoryError::Corrupt { path, message }
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => HistoryError::Locked { path },
        _ => HistoryError::Sqlite { path, message },
    }
}

/// Records the reports a coordinator finishes, on a thread of its own, so a slow or locked
/// file never holds up the coordinator; a report that cannot be recorded is logged.
#[derive(Debug, Clone)]
pub struct HistoryRecorder {
    tx: mpsc::Sender<(String, Arc<EncodedReport>)>,
}

impl HistoryRecorder {
    /// Starts the recording thread with `history`. The thread ends once every clone of the
    /// recorder is dropped and the reports sent before are recorded; join it then.
    pub fn start(mut history: History) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<(String, Arc<EncodedReport>)>();
        let thread = std::thread::Builder::new()
            .name("coordinator::history".to_owned())
            .spawn(move || {
                for (run_id, encoded) in rx {
                    let unreadable = |message: String| HistoryError::Report {
                        path: history.path.clone(),
                        run_id: run_id.clone(),
                        message,
                    };
                    let recorded = encoded
                        .json()
                        .map_err(|e| unreadable(e.to_string()))
                        .and_then(|json| {
                            serde_json::from_str::<Report>(&json)
                                .map_err(|e| unreadable(e.to_string()))
                                .map(|report| (json, report))
                        })
                        .and_then(|(json, report)| history.record_json(&run_id, &report, &json));
                    match recorded {
                        Ok(_) => {
                            tracing::info!(run_id = %run_id, history = %history.path.display(), "Report recorded in the history.");
                        }
                        Err(error) => {
                            tracing::warn!(run_id = %run_id, error = %error, "Report not recorded in the history.");
                        }
                    }
                }
            })?;
        Ok((HistoryRecorder { tx }, thread))
    }

    /// Queues run `run_id`'s report for recording (never blocks; the report is shared, not
    /// copied, and inflated on the history thread).
    pub fn record(&self, run_id: &str, report: Arc<EncodedReport>) {
        if self.tx.send((run_id.to_owned(), report)).is_err() {
            tracing::warn!(run_id = %run_id, "Report not recorded: the history thread has stopped.");
        }
    }
}

#[cfg(test)]
mod tests;
