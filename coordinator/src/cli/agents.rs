//! `fleetgate agents`: the agents a coordinator knows, with their facts and runtimes, as a
//! table or as JSON.

use fleetgate_common::input::one_line;

use super::ClientArgs;
use crate::client;
use crate::plan::RunError;

/// `fleetgate agents`' arguments.
#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
pub struct AgentsArgs {
    /// Coordinator URL: https://HOST:PORT, or http://HOST:PORT with --plaintext.
    #[arg(
        long,
        env = "FLEETGATE_COORDINATOR",
        default_value = "https://127.0.0.1:7400"
    )]
    pub coordinator: String,
    /// How to reach and authenticate to the coordinator.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why the agents were not listed.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    /// The token or the coordinator URL is unusable.
    #[error("{0}")]
    Connection(RunError),
    /// The coordinator could not be asked, or refused; the message, which may quote the
    /// coordinator, is one line.
    #[error("{}", one_line(&.0.to_string()))]
    List(RunError),
}

impl AgentsError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentsError::Connection(e) | AgentsError::List(e) => e.exit_code(),
        }
    }
}

/// Lists the agents the coordinator at `--coordinator` knows on stdout: a table, or JSON with
/// `--json`.
#[expect(
    clippy::print_stdout,
    reason = "the agent list is the command's output"
)]
pub async fn agents(args: AgentsArgs) -> Result<(), AgentsError> {
    let token = args.client.token().map_err(AgentsError::Connection)?;
    let link = args
        .client
        .link(&args.coordinator)
        .map_err(AgentsError::Connection)?;
    let agents = client::list_agents(&link, token.as_ref())
        .await
        .map_err(AgentsError::List)?;
    if args.json {
        let list: Vec<serde_json::Value> = agents
            .iter()
            .map(|a| {
                let facts = fleetgate_common::host::HostFacts::from(a.facts.clone().unwrap_or_default());
                serde_json::json!({
                    "agent_id": a.agent_id,
                    "state": a.state,
                    "hardware_class": a.hardware_class,
                    "labels": a.labels,
                    "facts": facts,
                    "runtimes": a.runtimes.iter().map(|r| serde_json::json!({
                        "runtime": r.runtime, "available": r.available, "reason": r.unavailable_reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<13} {:<32} {:>5} {:>9}  runtimes",
        "AGENT", "STATE", "HARDWARE CLASS", "CORES", "MEMORY"
    );
    for a in &agents {
        let facts = a.facts.clone().unwrap_or_default();
        let runtimes: Vec<String> = a
            .runtimes
            .iter()
            .map(|r| {
                if r.available {
                    r.runtime.clone()
                } else {
                    format!("{} (unavailable: {})", r.runtime, r.unavailable_reason)
                }
            })
            .collect();
        println!(
            "{:<24} {:<13} {:<32} {:>5} {:>7}Gi  {}",
            a.agent_id,
            a.state,
            a.hardware_class,
            facts.cpu_cores,
            facts.memory_total_bytes >> 30,
            runtimes.join(", ")
        );
    }
    Ok(())
}
