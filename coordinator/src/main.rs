//! `fleetgate`: the CLI that CI calls.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetgate_agent::runtime::RuntimeKind;
use fleetgate_agent::scenario::Profile;
use fleetgate_common::{exit, telemetry};
use fleetgate_coordinator::local_run::{self, LocalRunConfig};

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
    /// Run the accelerated soak of each runtime on this host and write the result document.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
struct RunArgs {
    /// Soak profile.
    #[arg(long, value_enum, default_value = "pr")]
    profile: Profile,
    /// Comma-separated runtimes to run.
    #[arg(long, value_delimiter = ',', default_value = "gpumemprof_cpu", value_parser = RuntimeKind::parse)]
    runtimes: Vec<RuntimeKind>,
    /// Root of the per-runtime artifact directories.
    #[arg(long, default_value = "artifacts/benchmarks/operability")]
    artifact_root: PathBuf,
    /// Result document path.
    #[arg(long, default_value = "artifacts/benchmarks/latest_soak.json")]
    output: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(telemetry::LogFormat::Text);
    let code = match args.command {
        Command::Run(run) => run_local(run),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI's console output: summary on stdout, progress and errors on stderr"
)]
fn run_local(args: RunArgs) -> i32 {
    let config = LocalRunConfig {
        profile: args.profile.name(),
        hours: args.profile.hours(),
        runtimes: args.runtimes,
        artifact_root: args.artifact_root,
        output: args.output,
    };
    let mut last_decile = u64::MAX;
    let result = local_run::run(&config, &mut |kind, p| {
        let pct = p.samples_done * 100 / p.samples_total.max(1);
        if pct / 10 != last_decile {
            last_decile = pct / 10;
            eprintln!(
                "{} soak: {}/{} samples ({pct}%)",
                kind.name(),
                p.samples_done,
                p.samples_total
            );
        }
    });
    match result {
        Ok(report) => {
            for line in local_run::summary_lines(&report) {
                println!("{line}");
            }
            println!("Soak report written to: {}", config.output.display());
            exit::OK
        }
        Err(err) => {
            eprintln!("Error: {err:#}");
            exit::ERROR
        }
    }
}
