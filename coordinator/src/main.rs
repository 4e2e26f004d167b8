//! `fleetgate`: the CLI that CI calls, and the coordinator server.

use std::error::Error as _;
use std::process::ExitCode;

use clap::Parser as _;
use fleetgate_common::{exit, telemetry};
use fleetgate_coordinator::cli::{self, Args, CliError};

fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log.log_format, args.command.log_level());
    match cli::execute(args.command) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            let what = match &err {
                CliError::Worker(_) => "Worker failed.",
                CliError::Agent(_) => "Agent failed.",
                CliError::AsyncRuntime(_) => "Cannot start the async runtime.",
            };
            // The cause and its own causes, as `{:#}` writes an error chain.
            let cause = err
                .source()
                .map(|cause| {
                    anyhow::Chain::new(cause)
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(": ")
                })
                .unwrap_or_default();
            tracing::error!(error = cause, "{what}");
            ExitCode::from(exit::ERROR as u8)
        }
    }
}
