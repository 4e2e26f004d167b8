//! `fleetgate history`: the runs a history file holds, and one metric's series per hardware
//! class with its change points, as a table or as JSON.

use std::io::Write as _;
use std::path::PathBuf;

use fleetgate_common::exit;
use fleetgate_common::report::format_value;
use serde::Serialize;

use crate::history::{History, HistoryError, RunSummary, Series, SeriesFilter};

/// The history file of `fleetgate run` with its default `--output`.
const DEFAULT_HISTORY: &str = "artifacts/benchmarks/history.sqlite";

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
/// `fleetgate history`'s arguments.
pub struct HistoryArgs {
    /// The history file [default: artifacts/benchmarks/history.sqlite, where `fleetgate run`
    /// records with its default --output].
    #[arg(long, global = true)]
    pub history: Option<PathBuf>,
    /// Print JSON (keys documented in docs/history.md) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to show.
    #[command(subcommand)]
    pub command: HistoryCommand,
}

/// A `fleetgate history` subcommand.
#[derive(Debug, clap::Subcommand)]
#[deny(missing_docs)]
pub enum HistoryCommand {
    /// List the recorded runs, newest first.
    List {
        /// Most runs listed.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a metric's series per hardware class, oldest first, with its change points.
    Show {
        /// The metric, `<runtime>.<metric>` (e.g. gpumemprof_cpu.runtime_overhead_pct).
        metric: String,
        /// Only this hardware class (`*`: the fleet-wide values).
        #[arg(long)]
        hardware_class: Option<String>,
        /// Only runs of this profile.
        #[arg(long)]
        profile: Option<String>,
        /// Only runs of this mode.
        #[arg(long)]
        mode: Option<String>,
        /// Only runs of this config key (the `config` column of `list`: the same workload,
        /// runtimes and knobs).
        #[arg(long)]
        config: Option<String>,
        /// The last this many runs of each class (the change points are found among them).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Why `fleetgate history` failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryCommandError {
    /// The history could not be read, or does not hold what was asked for.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The output could not be encoded.
    #[error("cannot encode the output: {0}")]
    Encode(#[from] serde_json::Error),
}

impl HistoryCommandError {
    /// The process exit code for this error: 2 for a metric or class the history does not
    /// hold, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            HistoryCommandError::History(e) if e.is_usage() => exit::USAGE,
            _ => exit::ERROR,
        }
    }
}

/// `history list --json`.
#[derive(Debug, Serialize)]
struct ListOutput<'a> {
    history: String,
    runs: &'a [RunSummary],
}

/// `history show --json`.
#[derive(Debug, Serialize)]
struct ShowOutput<'a> {
    history: String,
    metric: &'a str,
    series: &'a [Series],
}

/// Runs `fleetgate history`: prints the runs or the series on stdout.
pub fn history(args: &HistoryArgs) -> Result<(), HistoryCommandError> {
    let path = args
        .history
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_HISTORY));
    let history = History::open_existing(&path)?;
    let shown = path.display().to_string();
    let lines = match &args.command {
        HistoryCommand::List { limit } => {
            let runs = history.list(*limit)?;
            if args.json {
                vec![serde_json::to_string_pretty(&ListOutput {
                    history: shown,
                    runs: &runs,
                })?]
            } else {
                list_table(&runs)
            }
        }
        HistoryCommand::Show {
            metric,
            hardware_class,
            profile,
            mode,
            config,
            limit,
        } => {
            let filter = SeriesFilter {
                profile: profile.clone(),
                mode: mode.clone(),
                config_key: config.clone(),
            };
            let series =
                history.series_where(metric, hardware_class.as_deref(), *limit, &filter)?;
            if args.json {
                vec![serde_json::to_string_pretty(&ShowOutput {
                    history: shown,
                    metric,
                    series: &series,
                })?]
            } else {
                show_table(metric, &series)
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        // A closed stdout (a pipe to `head`) is not an error.
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    Ok(())
}

/// Rows padded to their columns' widths (the last column unpadded).
fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// The runs as a table.
fn list_table(runs: &[RunSummary]) -> Vec<String> {
    if runs.is_empty() {
        return vec!["No runs recorded.".to_owned()];
    }
    let mut rows = vec![
        [
            "run", "finished", "profile", "mode", "gate", "verdict", "config", "agents", "classes",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(runs.iter().map(|r| {
        vec![
            r.run_id.clone(),
            r.finished_at.clone(),
            r.profile.clone(),
            r.mode.clone(),
            r.gate_mode.clone(),
            r.verdict.clone(),
            r.config_key.clone(),
            r.agents.to_string(),
            r.hardware_classes.join(","),
        ]
    }));
    table(&rows)
}

/// The series as tables, one per class, a change point marked on the run where the shift
/// starts.
fn show_table(metric: &str, series: &[Series]) -> Vec<String> {
    if series.is_empty() {
        return vec![format!("No runs of {metric} match.")];
    }
    let mut lines = Vec::new();
    for s in series {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        let marks = match s.change_points.len() {
            0 => "no change point".to_owned(),
            1 => "1 change point".to_owned(),
            n => format!("{n} change points"),
        };
        lines.push(format!(
            "{metric} on {}: {} runs, {marks}",
            s.hardware_class,
            s.points.len()
        ));
        let mut rows = vec![
            ["#", "run", "finished", "value", "change"]
                .map(str::to_owned)
                .to_vec(),
        ];
        rows.extend(s.points.iter().enumerate().map(|(i, p)| {
            vec![
                (i + 1).to_string(),
                p.run_id.clone(),
                p.finished_at.clone(),
                format_value(metric, p.value),
                if s.change_points.contains(&i) {
                    "<- shift starts".to_owned()
                } else {
                    String::new()
                },
            ]
        }));
        lines.extend(table(&rows));
    }
    lines
}
