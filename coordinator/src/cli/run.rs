//! `fleetgate run`: checks the request (transport, bounds, outputs, gate assets, knobs) before
//! anything is sent, runs it on a fleet or through the embedded coordinator and local agent,
//! writes the report and its summaries, and gates the verdict.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_common::config::{GateMode, Profile, Workload};
use fleetgate_common::exit;
use fleetgate_common::gate;
use fleetgate_common::knobs::{Knobs, apply_knob_assignment, parse_knobs_file};
use fleetgate_common::report::{Report, Verdict, baseline_document};
use fleetgate_common::run::{Asset, Quorum, RunSpec, Selection};
use fleetgate_common::runtime::RuntimeKind;
use fleetgate_proto::v1 as pb;

use super::{ClientArgs, ProgressDisplay};
use crate::client::{self, EmbeddedAgent};
use crate::history::{self, History};
use crate::output;
use crate::plan::{self, RunError};

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
/// `fleetgate run`'s arguments.
pub struct RunArgs {
    /// Coordinator URL (e.g. https://coordinator:7400); without it, an embedded coordinator
    /// and a local agent run the jobs on this host, over TLS on loopback.
    #[arg(long, env = "FLEETGATE_COORDINATOR")]
    pub coordinator: Option<String>,
    /// How to reach and authenticate to the coordinator.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The workload each job runs.
    #[command(flatten)]
    pub workload: Workload,
    /// Gate: absolute budgets, or a baseline plus tolerances.
    #[arg(long, value_enum, default_value = "budget")]
    pub gate_mode: GateMode,
    /// Budget file (budget gate) [default: the built-in copy of
    /// docs/benchmarks/v0.4_operating_budget.json].
    #[arg(long)]
    pub budgets: Option<PathBuf>,
    /// Baseline file (regression gate) [default for pr: the built-in copy of
    /// docs/benchmarks/v0.4_baseline.json].
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Tolerance file (regression gate) [default for pr: the built-in copy of
    /// docs/benchmarks/v0.4_tolerances.json].
    #[arg(long)]
    pub tolerances: Option<PathBuf>,
    /// Root of the per-runtime artifact directories (embedded agent).
    #[arg(long, default_value = "artifacts/benchmarks/operability")]
    pub artifact_root: PathBuf,
    /// RAM-backed directory for overhead trial files on the agents' hosts.
    #[arg(long)]
    pub overhead_scratch_root: Option<String>,
    /// Report path.
    #[arg(long, default_value = "artifacts/benchmarks/latest_v0.4.json")]
    pub output: PathBuf,
    /// Exit 4 when the gate fails and 6 when the verdict is inconclusive.
    #[arg(long)]
    pub check: bool,
    /// Comma-separated runtimes to run (also tfmemprof_gpu, on hosts whose TensorFlow sees a GPU).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gpumemprof_cpu,tfmemprof_cpu"
    )]
    pub runtimes: Vec<String>,
    /// Comma-separated agent ids to run on (default: every connected agent).
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Only agents with this label, as KEY=VALUE (repeatable).
    #[arg(long = "labels", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Only agents of this hardware class.
    #[arg(long)]
    pub hardware_class: Option<String>,
    /// Refuse the run (exit 6) unless at least this many agents match.
    #[arg(long, default_value_t = 1)]
    pub min_agents: u32,
    /// Share of each hardware class's agents that must pass for the fleet to pass, greater
    /// than 0 and at most 1: a class of n agents needs ceil(FRACTION × n) to pass (1: every
    /// agent).
    #[arg(long, value_name = "FRACTION", default_value = "1")]
    pub quorum: Quorum,
    /// Whole-run deadline in seconds, 1 to 604800 (7 days) [default: 30 min for pr, 2 h for
    /// nightly].
    #[arg(long)]
    pub deadline_seconds: Option<u64>,
    /// Tuning knobs file: a JSON object mapping each runtime to an object of knob values.
    #[arg(long)]
    pub knobs: Option<PathBuf>,
    /// One tuning knob as RUNTIME.KNOB=VALUE (repeatable; overrides --knobs).
    #[arg(long = "set", value_name = "RUNTIME.KNOB=VALUE")]
    pub set: Vec<String>,
    /// Also write a Markdown summary here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Also write a JUnit XML file here (one test case per check).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write the HTML report here [default: next to --output, with the extension .html].
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write no HTML report.
    #[arg(long, conflicts_with = "html")]
    pub no_html: bool,
    /// Record this run's config and metrics as a regression baseline file here (an
    /// intentional baseline refresh; review the numbers before committing it).
    #[arg(long)]
    pub write_baseline: Option<PathBuf>,
    /// Run the same request this many times, one run after another, and record a calibrated
    /// baseline from all of them (per metric: median, spread, A/A noise); needs
    /// --write-baseline when above 1. The report files hold the last run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// History file (SQLite) the run's report is recorded in, after the outputs are written
    /// [default: history.sqlite in --output's folder]. A history that cannot be written is a
    /// warning: the report and the exit code stand.
    #[arg(long, conflicts_with = "no_history")]
    pub history: Option<PathBuf>,
    /// Record nothing in a history file.
    #[arg(long)]
    pub no_history: bool,
}

/// Runs `fleetgate run`: checks the request, runs it (on the coordinator at `--coordinator`,
/// else through an embedded coordinator and a local agent), shows its progress on stderr,
/// writes the report and the summaries asked for, and prints the console summary. Returns the
/// exit code: 0, or with `--check` 4 for a failed gate and 6 for an inconclusive verdict.
pub async fn run(args: RunArgs) -> Result<i32, RunError> {
    // How to reach the coordinator is checked first: a transport mistake is a usage error,
    // whatever else is wrong.
    let token = args.client.token()?;
    let link = match &args.coordinator {
        Some(url) => Some(args.client.link(url)?),
        None if args.client.plaintext || args.client.ca_file.is_some() => {
            return Err(RunError::Usage(
                "--plaintext and --ca-file need --coordinator (the embedded default always uses TLS)"
                    .into(),
            ));
        }
        None => None,
    };
    check_bounds(&args)?;
    // Then the outputs, before any gate asset is read: nothing is worth running whose report
    // cannot be written.
    check_outputs(&args)?;
    let spec = run_spec(&args)?;
    // Everything checkable is checked before anything is sent or created: with the embedded
    // agent that includes threshold coverage, since the one agent and its class are known.
    let checked = plan::plan(spec.clone())?;
    if args.coordinator.is_none() {
        let agent_id = client::local_agent_id();
        let class = client::local_hardware_class().await?;
        checked.require_coverage(std::slice::from_ref(&agent_id), &|_| Some(class.clone()))?;
    }
    // Ctrl+C or SIGTERM: the embedded agent stops its worker gracefully (the telemetry session
    // is closed as interrupted); see `client::run_embedded`.
    let interrupt = tokio_util::sync::CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        fleetgate_common::shutdown::signal().await;
        on_signal.cancel();
    });
    let mut reports = Vec::with_capacity(args.repeat as usize);
    for round in 1..=args.repeat {
        let mut display = ProgressDisplay::new(std::io::stderr().is_terminal());
        if args.repeat > 1 {
            display.line(&format!("Calibration run {round} of {}", args.repeat));
        }
        let mut on_event = |event: &pb::RunEvent| display.update(event);
        let run = async {
            match &link {
                Some(link) => client::submit(link, token.as_ref(), &spec, &mut on_event).await,
                None => {
                    let agent = EmbeddedAgent::local(&args.artifact_root)?;
                    client::run_embedded(&spec, agent, &mut on_event, &interrupt).await
                }
            }
        };
        let report = tokio::select! {
            report = run => report,
            // A remote run's stream is dropped: its coordinator cancels the run on the agents.
            () = interrupt.cancelled(), if args.coordinator.is_some() => Err(RunError::Interrupted),
        };
        // The bars stay as they were, above the summary printed next.
        display.finish();
        reports.push(report?);
    }
    finish(&args, &reports)
}

/// Writes the outputs of the last of `reports` (and, with `--repeat`, the calibrated baseline
/// of all of them), prints its summary, and returns the exit code: with `--check` the worst
/// verdict of the runs decides.
fn finish(args: &RunArgs, reports: &[Report]) -> Result<i32, RunError> {
    let Some(report) = reports.last() else {
        return Ok(exit::OK);
    };
    // The JSON report first: whatever fails later, it is not lost.
    write_file("--output", &args.output, &json_bytes(report)?)?;
    let recorded = record_history(args, reports);
    let report = match &recorded.advised {
        Some(advised) => {
            write_file("--output", &args.output, &json_bytes(advised)?)?;
            advised
        }
        None => report,
    };
    let html = html_path(args);
    if let Some(path) = &args.markdown {
        let link = html.as_deref().map(|h| markdown_link(path, h));
        write_file(
            "--markdown",
            path,
            output::markdown(report, link.as_deref()).as_bytes(),
        )?;
    }
    if let Some(path) = &args.junit {
        let xml = output::junit(report)
            .map_err(|e| RunError::Internal(format!("--junit: cannot build the XML: {e}")))?;
        write_file("--junit", path, xml.as_bytes())?;
    }
    if let Some(path) = &html {
        let page = crate::html::render(report, &recorded.series);
        write_file("--html", path, page.as_bytes())?;
    }
    if let Some(path) = &args.write_baseline {
        let host = fleetgate_common::host::host_name();
        let document = if reports.len() > 1 {
            gate::calibrated_baseline_document(reports, &host)
                .map_err(|e| RunError::Usage(format!("--repeat: {e}")))?
        } else {
            baseline_document(report, &host)
        };
        write_file("--write-baseline", path, &json_bytes(&document)?)?;
    }
    let mut stdout = std::io::stdout().lock();
    for line in output::console_lines(report, &args.output.display().to_string()) {
        // A closed stdout (a pipe to `head`) must not turn a finished run into a failure.
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
    if reports.len() > 1 {
        // Like the summary above: a closed stdout does not fail the run.
        writeln!(
            stdout,
            "Calibration: {} runs: {} pass, {} fail, {} inconclusive",
            reports.len(),
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Inconclusive)
        )
        .ok();
    }
    Ok(if !args.check || count(Verdict::Pass) == reports.len() {
        exit::OK
    } else if count(Verdict::Fail) > 0 {
        exit::GATE_FAILED
    } else {
        exit::INCONCLUSIVE
    })
}

/// The history file of a run: `--history`, else `history.sqlite` in `--output`'s folder;
/// none with `--no-history`.
fn history_path(args: &RunArgs) -> Option<PathBuf> {
    if args.no_history {
        return None;
    }
    Some(args.history.clone().unwrap_or_else(|| {
        args.output
            .parent()
            .unwrap_or(Path::new(""))
            .join(history::DEFAULT_FILE_NAME)
    }))
}

/// What the run's history adds to its outputs.
#[derive(Debug, Default)]
struct Recorded {
    /// The last report with the history's advice, when there is any.
    advised: Option<Report>,
    /// The gated metrics' series over runs like it, for the HTML report.
    series: Vec<history::Series>,
}

/// Records `reports` in the run's history (after the JSON report is written) and reads back
/// what the other outputs show of it: the advice on the last report and its gated metrics'
/// series. A history that cannot be opened, written or read is a warning on stderr: the
/// report written stands, and so does the exit code.
#[expect(
    clippy::print_stderr,
    reason = "a history failure is a warning beside the run's output"
)]
fn record_history(args: &RunArgs, reports: &[Report]) -> Recorded {
    let (Some(path), Some(last)) = (history_path(args), reports.last()) else {
        return Recorded::default();
    };
    let read = History::open(&path).and_then(|mut history| {
        for report in reports {
            history.record(&history::report_run_id(report), report)?;
        }
        let series = history.gated_series(last)?;
        Ok(series)
    });
    let series = match read {
        Ok(series) => series,
        Err(e) => {
            eprintln!("Warning: {e}; the report is not recorded there");
            return Recorded::default();
        }
    };
    let advice: Vec<String> = series.iter().flat_map(history::advice_lines).collect();
    let advised = (!advice.is_empty()).then(|| {
        let mut advised = last.clone();
        advised.history_advice = advice;
        advised
    });
    Recorded { advised, series }
}

/// How the Markdown summary at `markdown` links to the HTML report at `html`: by file name
/// when both are in one folder (the summary and the page travel together as CI artifacts),
/// else by the path as given.
fn markdown_link(markdown: &Path, html: &Path) -> String {
    let folder = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
    match html.file_name() {
        Some(name) if folder(markdown) == folder(html) => name.to_string_lossy().into_owned(),
        _ => html.display().to_string(),
    }
}

fn read_knobs(args: &RunArgs) -> Result<Knobs, RunError> {
    let known: Vec<&str> = RuntimeKind::ALL.iter().map(|k| k.name()).collect();
    let mut knobs = match &args.knobs {
        Some(path) => {
            let text = fleetgate_common::input::read_file(path).map_err(|e| {
                RunError::InvalidInput(format!("{}: cannot be read: {e}", path.display()))
            })?;
            parse_knobs_file(&path.display().to_string(), &text, &known)
                .map_err(|e| RunError::InvalidInput(e.to_string()))?
        }
        None => Knobs::new(),
    };
    for assignment in &args.set {
        apply_knob_assignment(&mut knobs, assignment, &known)
            .map_err(|e| RunError::InvalidInput(e.to_string()))?;
    }
    Ok(knobs)
}

fn run_spec(args: &RunArgs) -> Result<RunSpec, RunError> {
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .ok_or_else(|| RunError::Usage(format!("--labels {label}: expected KEY=VALUE")))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    // A flag names a file; without one the run uses the built-in copy of the shipped file
    // (resolved by `plan::plan`, which also refuses regression defaults outside `pr`).
    let read = |path: &Option<PathBuf>, what: &'static str| {
        path.as_deref()
            .map(|p| Asset::read(p, what))
            .transpose()
            .map_err(|e| RunError::InvalidInput(e.to_string()))
    };
    let (budgets, baseline, tolerances) = match args.gate_mode {
        GateMode::Budget => (read(&args.budgets, "Budget file")?, None, None),
        GateMode::Regression => {
            if args.workload.profile != Profile::Pr
                && (args.baseline.is_none() || args.tolerances.is_none())
            {
                return Err(RunError::Usage(plan::REGRESSION_DEFAULTS_PR_ONLY.into()));
            }
            (
                None,
                read(&args.baseline, "Baseline file")?,
                read(&args.tolerances, "Tolerance file")?,
            )
        }
    };
    Ok(RunSpec {
        workload: args.workload,
        gate_mode: args.gate_mode,
        runtimes: args.runtimes.clone(),
        selection: Selection {
            agent_ids: args.agents.clone(),
            labels,
            hardware_class: args.hardware_class.clone(),
            min_agents: args.min_agents,
            quorum: args.quorum,
        },
        deadline: args.deadline_seconds.map(Duration::from_secs),
        knobs: read_knobs(args)?,
        overhead_scratch_root: args.overhead_scratch_root.clone(),
        budgets,
        baseline,
        tolerances,
    })
}

/// A file named by `flag`, if given.
fn given_path<'a>(flag: &'a str, path: Option<&'a PathBuf>) -> Option<output::NamedPath<'a>> {
    path.map(|p| output::NamedPath {
        flag,
        path: p.as_path(),
    })
}

/// Where the HTML report goes: `--html`, else next to `--output` with the extension `.html`;
/// nowhere with `--no-html`.
fn html_path(args: &RunArgs) -> Option<PathBuf> {
    if args.no_html {
        return None;
    }
    Some(
        args.html
            .clone()
            .unwrap_or_else(|| args.output.with_extension("html")),
    )
}

/// The outputs a run writes, with their flags (`html`: where the HTML report goes, if
/// anywhere).
fn run_outputs<'a>(args: &'a RunArgs, html: Option<&'a PathBuf>) -> Vec<output::NamedPath<'a>> {
    [
        given_path("--output", Some(&args.output)),
        given_path("--markdown", args.markdown.as_ref()),
        given_path("--junit", args.junit.as_ref()),
        given_path("--html", html),
        given_path("--write-baseline", args.write_baseline.as_ref()),
        given_path(
            "--history",
            args.history.as_ref().filter(|_| !args.no_history),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The files a run reads: those given by flags (the default gate assets are built into the
/// binary, so no file of theirs is read).
fn run_inputs(args: &RunArgs) -> Vec<output::NamedPath<'_>> {
    [
        given_path("--budgets", args.budgets.as_ref()),
        given_path("--baseline", args.baseline.as_ref()),
        given_path("--tolerances", args.tolerances.as_ref()),
        given_path("--knobs", args.knobs.as_ref()),
        given_path("--token-file", args.client.token_file.as_ref()),
        given_path("--ca-file", args.client.ca_file.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Refuses, before anything runs, output paths that clash (exit 2) or cannot hold a file
/// (exit 1).
fn check_outputs(args: &RunArgs) -> Result<(), RunError> {
    let html = html_path(args);
    output::check_outputs(&run_outputs(args, html.as_ref()), &run_inputs(args)).map_err(|e| {
        if e.is_usage() {
            RunError::Usage(e.to_string())
        } else {
            RunError::Internal(e.to_string())
        }
    })
}

fn write_file(flag: &str, path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    output::write_output(flag, path, bytes).map_err(|e| RunError::Internal(e.to_string()))
}

fn json_bytes(value: &impl serde::Serialize) -> Result<Vec<u8>, RunError> {
    let mut json =
        serde_json::to_vec_pretty(value).map_err(|e| RunError::Internal(e.to_string()))?;
    json.push(b'\n');
    Ok(json)
}

/// The run's numbers within their documented bounds (a usage error naming the flag).
fn check_bounds(args: &RunArgs) -> Result<(), RunError> {
    use fleetgate_common::config;
    let usage = |flag: &str, e: config::OutOfRange| RunError::Usage(format!("{flag}: {e}"));
    if let Some(seconds) = args.deadline_seconds {
        config::deadline_from_seconds(seconds).map_err(|e| usage("--deadline-seconds", e))?;
    }
    if args.repeat > 1 && args.write_baseline.is_none() {
        return Err(RunError::Usage(format!(
            "--repeat {} records a calibrated baseline: give --write-baseline PATH",
            args.repeat
        )));
    }
    if args.repeat > 1 && args.repeat < gate::MIN_CALIBRATION_RUNS {
        return Err(RunError::Usage(format!(
            "--repeat {}: a calibrated baseline needs at least {} runs",
            args.repeat,
            gate::MIN_CALIBRATION_RUNS
        )));
    }
    // The flag of a workload field is its name in kebab case (`--allocation-kb`).
    args.workload
        .check()
        .map_err(|e| usage(&format!("--{}", e.field.replace('_', "-")), e.range))
}
