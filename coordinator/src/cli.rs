//! The `fleetgate` command line: its subcommands and their arguments ([`Args`]), the commands
//! themselves ([`run()`], [`serve()`], [`agents()`], [`certs()`], [`history()`]), the run's
//! progress display, and [`execute`], which runs a parsed command and prints a failed
//! command's error.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};
use fleetgate_agent::daemon::{self, DaemonArgs, DaemonError};
use fleetgate_agent::worker::{self, WorkerCommand, WorkerProcessError};
use fleetgate_common::auth::Token;
use fleetgate_common::exit;
use fleetgate_common::input::one_line;
use fleetgate_common::telemetry::LogArgs;
use fleetgate_common::tls::{ClientTlsFiles, CoordinatorLink};

use crate::plan::RunError;

mod agents;
mod certs;
mod history;
mod progress;
mod run;
mod serve;

pub use agents::{AgentsArgs, AgentsError, agents};
pub use certs::{CertsArgs, CertsError, certs};
pub use history::{HistoryArgs, HistoryCommand, HistoryCommandError, history};
pub use progress::ProgressDisplay;
pub use run::{RunArgs, run};
pub use serve::{ServeArgs, ServeError, serve};

/// fleetgate: qualify always-on memory monitoring on this host and across a fleet.
#[derive(Debug, Parser)]
#[command(name = "fleetgate", version = crate::identity::VERSION_LINE, about)]
#[deny(missing_docs)]
pub struct Args {
    /// How logs are written.
    #[command(flatten)]
    pub log: LogArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// A `fleetgate` subcommand.
#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum Command {
    /// Run the v0.4 harness on a fleet (or, without --coordinator, on this host through an
    /// embedded coordinator and local agent) and gate the report.
    Run(Box<RunArgs>),
    /// Serve the coordinator: agents dial in, CLI clients submit runs.
    Serve(ServeArgs),
    /// List the agents a coordinator knows, with their facts and runtimes.
    Agents(AgentsArgs),
    /// Make a throwaway certificate authority for a lab, the coordinator's server certificate
    /// and one client certificate per agent (PEM files; keys readable by the owner only).
    Certs(CertsArgs),
    /// The runs recorded in a history file, and a metric's series with its change points.
    History(HistoryArgs),
    /// Run an agent daemon from this binary (the same agent as `fleetgate-agent run`).
    Agent(DaemonArgs),
    /// Print the shell completion script of fleetgate for SHELL on stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run one job in this process (used by the embedded agent; reads the job on stdin).
    #[command(hide = true)]
    Worker {
        /// Only probe which runtimes can run here, and print that as JSON.
        #[arg(long)]
        probe: bool,
    },
}

impl Command {
    /// The default log level of the command: the coordinator and the agent say what they do,
    /// the others only warn (a worker's stdout carries its events; its logs go to stderr).
    pub fn log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Agent(_) => "info",
            Command::Run(_)
            | Command::Agents(_)
            | Command::Certs(_)
            | Command::History(_)
            | Command::Completions { .. }
            | Command::Worker { .. } => "warn",
        }
    }
}

/// How the CLI reaches and authenticates to a coordinator.
#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
pub struct ClientArgs {
    /// File holding the coordinator's client token [default: the FLEETGATE_CLIENT_TOKEN
    /// environment variable, else no token].
    #[arg(long, env = "FLEETGATE_CLIENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the coordinator's certificate [default: the system's
    /// trusted roots].
    #[arg(long, env = "FLEETGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Talk to an http:// coordinator without TLS: the token and the report cross the network
    /// unencrypted.
    #[arg(
        long,
        env = "FLEETGATE_PLAINTEXT",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub plaintext: bool,
}

impl ClientArgs {
    /// The client token from `--token-file` or `FLEETGATE_CLIENT_TOKEN`, if any.
    pub fn token(&self) -> Result<Option<Token>, RunError> {
        Token::load(self.token_file.as_deref(), "FLEETGATE_CLIENT_TOKEN")
            .map_err(|e| RunError::Usage(e.to_string()))
    }

    /// How to reach the coordinator at `url` (given as `--coordinator`).
    pub fn link(&self, url: &str) -> Result<CoordinatorLink, RunError> {
        let files = ClientTlsFiles {
            ca: self.ca_file.clone(),
            ..ClientTlsFiles::default()
        };
        CoordinatorLink::new("--coordinator", url, &files, self.plaintext)
            .map_err(|e| RunError::Usage(e.to_string()))
    }
}

/// Why a command ended without an exit code of its own (its process then exits 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The worker (or the runtime probe) failed.
    #[error("the worker failed")]
    Worker(#[source] WorkerProcessError),
    /// The agent daemon could not start, or stopped with an error.
    #[error("the agent failed")]
    Agent(#[source] DaemonError),
    /// The async runtime the other commands run on could not start.
    #[error("cannot start the async runtime")]
    AsyncRuntime(#[source] std::io::Error),
}

/// Runs `command` and returns the process's exit code. A run, serve, agents, certs or history command
/// that fails prints `Error: ...` on stderr and returns the code documented for its error; the
/// worker and agent entry points, and a failure to start the async runtime, return the error
/// for the caller to log.
pub fn execute(command: Command) -> Result<i32, CliError> {
    match command {
        Command::Worker { probe } => {
            let result = if probe {
                worker::run_probe_process()
            } else {
                worker::run_worker_process()
            };
            result.map_err(CliError::Worker)?;
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "fleetgate", &mut script);
            // A closed stdout (a pipe to `head`) is not an error of the command.
            std::io::stdout().lock().write_all(&script).ok();
            Ok(exit::OK)
        }
        Command::Agent(args) => {
            let program =
                std::env::current_exe().map_err(|e| CliError::Agent(DaemonError::Io(e)))?;
            let worker = WorkerCommand {
                program,
                args: vec!["worker".into()],
            };
            daemon::run_from_args(args, worker).map_err(CliError::Agent)?;
            Ok(exit::OK)
        }
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(CliError::AsyncRuntime)?;
            Ok(runtime.block_on(execute_async(command)))
        }
    }
}

/// Runs a command of the async runtime; a failure is printed on stderr and becomes its exit
/// code.
#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the certificates written are the command's output; errors go to stderr"
)]
async fn execute_async(command: Command) -> i32 {
    match command {
        Command::Run(args) => match run(*args).await {
            Ok(code) => code,
            Err(err) => {
                // One line even when the message quotes a remote peer's text.
                eprintln!("Error: {}", one_line(&err.to_string()));
                err.exit_code()
            }
        },
        Command::Serve(args) => match serve(args, fleetgate_common::shutdown::signal()).await {
            Ok(()) => exit::OK,
            Err(err) => {
                eprintln!("Error: {err}");
                err.exit_code()
            }
        },
        Command::Agents(args) => match agents(args).await {
            Ok(()) => exit::OK,
            Err(err) => {
                eprintln!("Error: {err}");
                err.exit_code()
            }
        },
        Command::Certs(args) => match certs(&args) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                exit::OK
            }
            Err(err) => {
                eprintln!("Error: {err}");
                err.exit_code()
            }
        },
        Command::History(args) => match history(&args) {
            Ok(()) => exit::OK,
            Err(err) => {
                eprintln!("Error: {err}");
                err.exit_code()
            }
        },
        Command::Agent(_) | Command::Completions { .. } | Command::Worker { .. } => exit::ERROR,
    }
}

#[cfg(test)]
mod tests;
