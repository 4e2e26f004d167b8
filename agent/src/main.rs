//! `fleetgate-agent`: runs monitoring-runtime jobs on this host.

use std::process::ExitCode;

use clap::Parser as _;
use fleetgate_agent::cli::{self, Args};
use fleetgate_common::{exit, telemetry};

fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log.log_format, args.command.log_level());
    match cli::execute(args.command) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(err) => {
            let err = anyhow::Error::from(err);
            tracing::error!(error = format!("{err:#}"), "Agent command failed.");
            ExitCode::from(exit::ERROR as u8)
        }
    }
}
