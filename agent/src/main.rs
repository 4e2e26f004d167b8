//! `fleetgate-agent`: runs monitoring-runtime jobs on this host.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::sync::atomic::AtomicBool;

use fleetgate_agent::daemon::{self, DaemonArgs};
use fleetgate_agent::job;
use fleetgate_agent::scenario::{self, Hooks, Phase, Progress, SoakSpec};
use fleetgate_agent::worker::WorkerCommand;
use fleetgate_common::config::{Profile, RetentionValidationLimits};
use fleetgate_common::knobs::RuntimeKnobs;
use fleetgate_common::runtime::RuntimeKind;
use fleetgate_common::{exit, telemetry};

/// fleetgate agent: native memory-monitoring runtimes and the jobs that qualify them.
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
    /// Run the agent daemon: dial the coordinator, register this host, run assigned jobs.
    Run(DaemonArgs),
    /// Run one accelerated soak of one runtime on this host and print its result as JSON.
    Soak(SoakArgs),
    /// Exit 0 if the agent heard from its coordinator recently (a container health check).
    Health {
        /// The agent's state directory.
        #[arg(
            long,
            env = "FLEETGATE_STATE_DIR",
            default_value = "/var/lib/fleetgate/state"
        )]
        state_dir: PathBuf,
        /// Longest silence accepted, in seconds.
        #[arg(long, default_value_t = 30)]
        max_age_seconds: u64,
    },
    /// Run one job in this process (started by the agent; reads the job on stdin).
    #[command(hide = true)]
    Worker {
        /// Only probe which runtimes can run here, and print that as JSON.
        #[arg(long)]
        probe: bool,
    },
}

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct SoakArgs {
    /// Runtime to soak.
    #[arg(long, default_value = "gpumemprof_cpu", value_parser = RuntimeKind::parse)]
    runtime: RuntimeKind,
    /// Profile whose equivalent hours set the sample count.
    #[arg(long, value_enum, default_value = "pr")]
    profile: Profile,
    /// Exact sample count (overrides the profile's).
    #[arg(long)]
    samples: Option<u64>,
    /// Artifact directory (deleted and recreated; the sink lives in `<dir>/sink`).
    #[arg(long, default_value = "artifacts/agent-soak")]
    artifact_dir: PathBuf,
    /// Write the result here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print a progress line on stderr every N samples.
    #[arg(long, default_value_t = 10_000)]
    progress_every: u64,
    #[command(flatten)]
    knobs: RuntimeKnobs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = if matches!(args.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    telemetry::init(telemetry::LogFormat::Text, level);
    match run(args) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "Agent command failed.");
            ExitCode::from(exit::ERROR as u8)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Run(run) => run_daemon(run),
        Command::Soak(soak) => run_soak(soak),
        Command::Health {
            state_dir,
            max_age_seconds,
        } => daemon::check_health(&state_dir, std::time::Duration::from_secs(max_age_seconds))
            .map_err(anyhow::Error::msg),
        Command::Worker { probe: false } => fleetgate_agent::worker::run_worker_process(),
        Command::Worker { probe: true } => fleetgate_agent::worker::run_probe_process(),
    }
}

fn run_daemon(args: DaemonArgs) -> anyhow::Result<()> {
    let program = std::env::current_exe().context("cannot find this program to start workers")?;
    let config = args.into_config(WorkerCommand {
        program,
        args: vec!["worker".into()],
    })?;
    daemon::run_until_signal(config)
}

#[expect(
    clippy::print_stderr,
    reason = "progress lines are the command's stderr output"
)]
fn run_soak(args: SoakArgs) -> anyhow::Result<()> {
    let knobs = args.knobs;
    let tracker = job::tracker_config(args.runtime, &knobs)?;
    let plan = args.runtime.plan(&knobs, args.profile, 1);
    let spec = SoakSpec {
        tracker,
        samples: args.samples.unwrap_or(plan.soak_sample_count).max(1),
        profile: args.profile.name().to_owned(),
        artifact_dir: args.artifact_dir.clone(),
        retention: RetentionValidationLimits::default(),
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |p: Progress| {
        if p.phase == Phase::Soak {
            eprintln!(
                "progress samples_done={} samples_total={} durable_records={}",
                p.done, p.total, p.durable_records
            );
        }
    };
    let mut hooks = Hooks::new(&mut progress, &cancel);
    hooks.progress_every = args.progress_every;
    let kind = args.runtime;
    let result = scenario::run_soak(
        &spec,
        || fleetgate_agent::runtime::open_collector(kind, 512, 0),
        &mut hooks,
    )
    .with_context(|| format!("{} soak", kind.name()))?;
    let mut json = serde_json::to_vec_pretty(&result)?;
    json.push(b'\n');
    match args.output {
        // Replaced whole or not at all: a failed write leaves an earlier file as it was.
        Some(path) => fleetgate_common::atomic_file::write(
            &path,
            &json,
            fleetgate_common::atomic_file::WriteOptions::REPLACE,
        )
        .with_context(|| format!("--output {}", path.display()))?,
        None => std::io::stdout().write_all(&json)?,
    }
    Ok(())
}
