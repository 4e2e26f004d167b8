//! The `fleetgate-agent` command line: its subcommands and their arguments ([`Args`]), the
//! accelerated [`soak`] of one runtime, and [`execute`], which runs a parsed command.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use fleetgate_common::atomic_file::{self, AtomicWriteError};
use fleetgate_common::config::{Profile, RetentionValidationLimits};
use fleetgate_common::knobs::RuntimeKnobs;
use fleetgate_common::runtime::RuntimeKind;
use fleetgate_common::telemetry::LogArgs;

use crate::daemon::{self, DaemonArgs, DaemonError, HealthError};
use crate::job::{self, TrackerKnobError};
use crate::scenario::{self, Hooks, Phase, Progress, ScenarioError, SoakSpec};
use crate::worker::{self, WorkerCommand, WorkerProcessError};

/// What `fleetgate-agent --version` prints after the name: the version and the commit the
/// binary was built from (see common/build_identity.rs).
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLEETGATE_COMMIT"),
    ")"
);

/// fleetgate agent: native memory-monitoring runtimes and the jobs that qualify them.
#[derive(Debug, Parser)]
#[command(version = VERSION_LINE, about)]
#[deny(missing_docs)]
pub struct Args {
    /// How logs are written.
    #[command(flatten)]
    pub log: LogArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// A `fleetgate-agent` subcommand.
#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum Command {
    /// Run the agent daemon: dial the coordinator, register this host, run assigned jobs.
    Run(DaemonArgs),
    /// Run one accelerated soak of one runtime on this host and print its result as JSON.
    Soak(SoakArgs),
    /// Exit 0 if the agent heard from its coordinator recently (readiness), or with --live if
    /// the agent process is alive and not stuck, whatever its coordinator does (liveness).
    Health {
        /// The agent's state directory.
        #[arg(
            long,
            env = "FLEETGATE_STATE_DIR",
            default_value = "/var/lib/fleetgate/state"
        )]
        state_dir: PathBuf,
        /// Check liveness (the agent's own sign of life, every 5 s) instead of its contact
        /// with the coordinator.
        #[arg(long)]
        live: bool,
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

impl Command {
    /// The default log level of the command: the daemon says what it does, the others only
    /// warn.
    pub fn log_level(&self) -> &'static str {
        if matches!(self, Command::Run(_)) {
            "info"
        } else {
            "warn"
        }
    }
}

/// `fleetgate-agent soak`'s arguments.
#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
pub struct SoakArgs {
    /// Runtime to soak.
    #[arg(long, default_value = "gpumemprof_cpu", value_parser = RuntimeKind::parse)]
    pub runtime: RuntimeKind,
    /// Profile whose equivalent hours set the sample count.
    #[arg(long, value_enum, default_value = "pr")]
    pub profile: Profile,
    /// Exact sample count (overrides the profile's).
    #[arg(long)]
    pub samples: Option<u64>,
    /// Artifact directory (deleted and recreated; the sink lives in `<dir>/sink`).
    #[arg(long, default_value = "artifacts/agent-soak")]
    pub artifact_dir: PathBuf,
    /// Write the result here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print a progress line on stderr every N samples.
    #[arg(long, default_value_t = 10_000)]
    pub progress_every: u64,
    /// The runtime's tuning knobs.
    #[command(flatten)]
    pub knobs: RuntimeKnobs,
}

/// Why a command failed (its process then exits 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// This program's own path, which workers are started from, is unknown.
    #[error("cannot find this program to start workers")]
    WorkerProgram(#[source] std::io::Error),
    /// The daemon could not start, or stopped with an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The soak failed.
    #[error(transparent)]
    Soak(#[from] SoakError),
    /// The agent is not healthy.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The worker or probe process failed.
    #[error(transparent)]
    Worker(#[from] WorkerProcessError),
}

/// Why a soak produced no result.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The runtime's knobs are unusable.
    #[error(transparent)]
    Knobs(#[from] TrackerKnobError),
    /// The soak itself failed.
    #[error("{runtime} soak")]
    Soak {
        /// The runtime's name.
        runtime: &'static str,
        /// Why.
        #[source]
        source: ScenarioError,
    },
    /// The result could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The `--output` file could not be written (a file there before is unchanged).
    #[error("--output {}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: AtomicWriteError,
    },
    /// Stdout could not be written.
    #[error(transparent)]
    Stdout(#[from] std::io::Error),
}

/// Runs `command` to its end.
pub fn execute(command: Command) -> Result<(), CliError> {
    match command {
        Command::Run(args) => {
            let program = std::env::current_exe().map_err(CliError::WorkerProgram)?;
            let worker = WorkerCommand {
                program,
                args: vec!["worker".into()],
            };
            daemon::run_from_args(args, worker)?;
        }
        Command::Soak(args) => soak(args)?,
        Command::Health {
            state_dir,
            live,
            max_age_seconds,
        } => {
            let check = if live {
                daemon::HealthCheck::Live
            } else {
                daemon::HealthCheck::Ready
            };
            daemon::check_health(
                &state_dir,
                check,
                std::time::Duration::from_secs(max_age_seconds),
            )?;
        }
        Command::Worker { probe: false } => worker::run_worker_process()?,
        Command::Worker { probe: true } => worker::run_probe_process()?,
    }
    Ok(())
}

/// Runs one accelerated soak of one runtime on this host, with progress lines on stderr, and
/// writes its result as JSON to `--output` (replaced whole or not at all) or stdout.
#[expect(
    clippy::print_stderr,
    reason = "progress lines are the command's stderr output"
)]
pub fn soak(args: SoakArgs) -> Result<(), SoakError> {
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
        || crate::runtime::open_collector(kind, 512, 0),
        &mut hooks,
    )
    .map_err(|source| SoakError::Soak {
        runtime: kind.name(),
        source,
    })?;
    let mut json = serde_json::to_vec_pretty(&result)?;
    json.push(b'\n');
    match args.output {
        // Replaced whole or not at all: a failed write leaves an earlier file as it was.
        Some(path) => atomic_file::write(&path, &json, atomic_file::WriteOptions::REPLACE)
            .map_err(|source| SoakError::Output { path, source })?,
        None => std::io::stdout().write_all(&json)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn an_agent_that_never_reached_its_coordinator_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let command = Command::Health {
            state_dir: dir.path().to_owned(),
            live: false,
            max_age_seconds: 30,
        };
        let err = execute(command).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no contact with a coordinator recorded ("),
            "{err}"
        );
    }

    #[test]
    fn liveness_reads_the_agents_own_sign_of_life_not_its_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let live = |max_age_seconds| Command::Health {
            state_dir: dir.path().to_owned(),
            live: true,
            max_age_seconds,
        };
        let err = execute(live(30)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no agent running with this state directory ("),
            "{err}"
        );
        // A sign of life and no contact: alive, not ready.
        std::fs::write(dir.path().join(daemon::ALIVE_FILE), "1").unwrap();
        execute(live(30)).unwrap();
        let ready = Command::Health {
            state_dir: dir.path().to_owned(),
            live: false,
            max_age_seconds: 30,
        };
        assert!(execute(ready).is_err());
        // An old sign of life: stuck.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(daemon::ALIVE_FILE))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let err = execute(live(30)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the agent's last sign of life was "),
            "{err}"
        );
    }

    #[test]
    fn a_label_without_a_value_is_refused_before_anything_starts() {
        let args = Args::try_parse_from(["fleetgate-agent", "run", "--label", "team"]).unwrap();
        let err = execute(args.command).unwrap_err();
        assert_eq!(err.to_string(), "--label team: expected KEY=VALUE");
    }
}
