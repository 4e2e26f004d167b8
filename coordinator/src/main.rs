//! `fleetgate`: the CLI that CI calls.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use fleetgate_agent::runtime::RuntimeKind;
use fleetgate_agent::scenario::{Phase, Progress};
use fleetgate_common::config::{
    GateMode, Knobs, Mode, Profile, apply_knob_assignment, parse_knobs_file,
};
use fleetgate_common::{exit, telemetry};
use fleetgate_coordinator::harness::{self, RunError, RunRequest};
use fleetgate_coordinator::output;

/// fleetgate: qualify always-on memory monitoring on this host and across a fleet.
#[derive(Debug, Parser)]
#[command(version, about)]
#[deny(missing_docs)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
enum Command {
    /// Run the v0.4 operability harness on this host and gate the report.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct RunArgs {
    /// Soak profile: pr = 6 h-equivalent, nightly = 24 h-equivalent.
    #[arg(long, value_enum, default_value = "pr")]
    profile: Profile,
    /// Scenarios to run.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// Gate: absolute budgets, or a baseline plus tolerances.
    #[arg(long, value_enum, default_value = "budget")]
    gate_mode: GateMode,
    /// Reference workload steps.
    #[arg(long, default_value_t = 5_000)]
    iterations: u32,
    /// KiB allocated per workload step.
    #[arg(long, default_value_t = 512)]
    allocation_kb: u32,
    /// Budget file (budget gate) [default: docs/benchmarks/v0.4_operating_budget.json].
    #[arg(long)]
    budgets: Option<PathBuf>,
    /// Baseline file (regression gate) [default for pr: docs/benchmarks/v0.4_baseline.json].
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Tolerance file (regression gate) [default for pr: docs/benchmarks/v0.4_tolerances.json].
    #[arg(long)]
    tolerances: Option<PathBuf>,
    /// Root of the per-runtime artifact directories.
    #[arg(long, default_value = "artifacts/benchmarks/operability")]
    artifact_root: PathBuf,
    /// RAM-backed directory for overhead trial files (e.g. /dev/shm/fleetgate).
    #[arg(long)]
    overhead_scratch_root: Option<PathBuf>,
    /// Report path.
    #[arg(long, default_value = "artifacts/benchmarks/latest_v0.4.json")]
    output: PathBuf,
    /// Exit 4 when the gate fails (otherwise the exit code ignores the verdict).
    #[arg(long)]
    check: bool,
    /// Comma-separated runtimes to run.
    #[arg(long, value_delimiter = ',', default_value = "gpumemprof_cpu", value_parser = RuntimeKind::parse)]
    runtimes: Vec<RuntimeKind>,
    /// Tuning knobs file: a JSON object mapping each runtime to an object of knob values.
    #[arg(long)]
    knobs: Option<PathBuf>,
    /// One tuning knob as RUNTIME.KNOB=VALUE (repeatable; overrides --knobs).
    #[arg(long = "set", value_name = "RUNTIME.KNOB=VALUE")]
    set: Vec<String>,
    /// Also write a Markdown summary here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write a JUnit XML file here (one test case per check).
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Record this run's config and metrics as a regression baseline file here (an
    /// intentional baseline refresh; review the numbers before committing it).
    #[arg(long)]
    write_baseline: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(telemetry::LogFormat::Text);
    let code = match args.command {
        Command::Run(run) => run_command(run),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[expect(clippy::print_stderr, reason = "errors go to stderr")]
fn run_command(args: RunArgs) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            let code = match err {
                RunError::InvalidInput(_) => exit::INVALID_INPUT,
                RunError::Usage(_) => exit::USAGE,
                RunError::Interrupted => exit::INTERRUPTED,
                RunError::Internal(_) => exit::ERROR,
            };
            eprintln!("Error: {err}");
            code
        }
    }
}

fn knobs(args: &RunArgs) -> Result<Knobs, RunError> {
    let known: Vec<&str> = RuntimeKind::ALL.iter().map(|k| k.name()).collect();
    let mut knobs = match &args.knobs {
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| {
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

fn run(args: RunArgs) -> Result<i32, RunError> {
    let request = RunRequest {
        profile: args.profile,
        mode: args.mode,
        gate_mode: args.gate_mode,
        iterations: args.iterations,
        allocation_kb: args.allocation_kb,
        runtimes: dedup(&args.runtimes),
        budgets: args.budgets.clone(),
        baseline: args.baseline.clone(),
        tolerances: args.tolerances.clone(),
        artifact_root: args.artifact_root.clone(),
        overhead_scratch_root: args.overhead_scratch_root.clone(),
        knobs: knobs(&args)?,
    };
    let plan = harness::plan(request)?;
    // Fail now, not after a long soak, if the report cannot be written.
    for path in [
        Some(&args.output),
        args.markdown.as_ref(),
        args.junit.as_ref(),
        args.write_baseline.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        harness::probe_writable(path)?;
    }

    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&cancel))
            .map_err(|e| RunError::Internal(format!("cannot install signal handler: {e}")))?;
    }
    let mut display = ProgressDisplay::new(std::io::stderr().is_terminal());
    let sections = harness::run_local(&plan, &mut |kind, p| display.update(kind, p), &cancel);
    display.finish();
    let sections = sections?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = harness::build_report(&plan, sections, now);
    harness::write_json(&args.output, &report)?;
    if let Some(path) = &args.markdown {
        write_text(path, &output::markdown(&report))?;
    }
    if let Some(path) = &args.junit {
        write_text(path, &output::junit(&report))?;
    }
    if let Some(path) = &args.write_baseline {
        harness::write_json(path, &harness::baseline_document(&report))?;
    }
    let mut stdout = std::io::stdout().lock();
    for line in output::console_lines(&report, &args.output.display().to_string()) {
        // A closed stdout (a pipe to `head`) must not turn a finished run into a failure.
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    Ok(if args.check && !report.passed {
        exit::GATE_FAILED
    } else {
        exit::OK
    })
}

fn dedup(runtimes: &[RuntimeKind]) -> Vec<RuntimeKind> {
    let mut out = Vec::new();
    for &k in runtimes {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn write_text(path: &std::path::Path, text: &str) -> Result<(), RunError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| RunError::Internal(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| RunError::Internal(format!("cannot write {}: {e}", path.display())))
}

/// Progress on stderr: a live bar per runtime and phase on a terminal, a plain line per tenth
/// otherwise (CI logs).
struct ProgressDisplay {
    terminal: bool,
    current: Option<(RuntimeKind, Phase)>,
    last_tenth: u64,
}

impl ProgressDisplay {
    fn new(terminal: bool) -> Self {
        ProgressDisplay {
            terminal,
            current: None,
            last_tenth: u64::MAX,
        }
    }

    #[expect(clippy::print_stderr, reason = "progress goes to stderr")]
    fn update(&mut self, kind: RuntimeKind, p: Progress) {
        let key = (kind, p.phase);
        if self.current != Some(key) {
            if self.terminal && self.current.is_some() {
                eprintln!();
            }
            self.current = Some(key);
            self.last_tenth = u64::MAX;
        }
        let total = p.total.max(1);
        let pct = p.done.min(total) * 100 / total;
        let label = format!("{} {}", kind.name(), p.phase.name());
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (pct * WIDTH / 100) as usize;
            eprint!(
                "\r{label:<40} [{}{}] {pct:>3}% {}/{}",
                "#".repeat(filled),
                " ".repeat(WIDTH as usize - filled),
                p.done,
                p.total
            );
        } else if pct / 10 != self.last_tenth {
            self.last_tenth = pct / 10;
            eprintln!("{label}: {}/{} ({pct}%)", p.done, p.total);
        }
    }

    #[expect(clippy::print_stderr, reason = "progress goes to stderr")]
    fn finish(&mut self) {
        if self.terminal && self.current.is_some() {
            eprintln!();
        }
    }
}
