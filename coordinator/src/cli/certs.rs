//! `fleetgate certs`: a throwaway certificate authority for a lab, the coordinator's server
//! certificate and one client certificate per agent.

use std::path::PathBuf;

use fleetgate_common::exit;
use fleetgate_common::input::one_line;
use fleetgate_common::tls::{LabSetError, LabSetRequest, write_lab_set};

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
/// `fleetgate certs`' arguments.
pub struct CertsArgs {
    /// Directory to write into (created owner-only if missing). A CA already there (ca.pem,
    /// ca.key) is reused, so certificates added later chain to the same CA.
    #[arg(long, default_value = "fleetgate-certs")]
    pub out: PathBuf,
    /// Host name or IP address agents and clients use to reach the coordinator (repeatable)
    /// [default: localhost and 127.0.0.1; the server certificate is then only made when none
    /// exists].
    #[arg(long = "coordinator-name", value_name = "NAME", value_delimiter = ',')]
    pub coordinator_names: Vec<String>,
    /// Agent id to make a client certificate for (repeatable).
    #[arg(long = "agent", value_name = "AGENT_ID", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Replace certificates and keys already in the directory (a complete CA is still reused),
    /// and make a reused CA key readable by its owner only. Without it, a command that would
    /// replace any of them writes nothing and exits 2.
    #[arg(long)]
    pub force: bool,
}

/// Why no certificates were written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// An agent id is not safe as a file name (exit 2).
    #[error("--agent {agent_id}: use letters, digits, '-', '_' or '.' (at most 128)")]
    AgentId {
        /// The id as given.
        agent_id: String,
    },
    /// The lab set could not be written (exit 2 for a file that would be replaced, 5 for an
    /// unusable CA, else 1); the message is one line.
    #[error("{}", one_line(&error.to_string()))]
    LabSet {
        /// The error (part of the message, so not chained as a source).
        error: LabSetError,
    },
}

impl CertsError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CertsError::AgentId { .. }
            | CertsError::LabSet {
                error: LabSetError::Exists { .. },
            } => exit::USAGE,
            CertsError::LabSet {
                error: LabSetError::UnusableCa { .. },
            } => exit::INVALID_INPUT,
            CertsError::LabSet { .. } => exit::ERROR,
        }
    }
}

/// Writes the lab CA (reused when present), the coordinator's certificate and the agents';
/// returns the files written.
pub fn certs(args: &CertsArgs) -> Result<Vec<PathBuf>, CertsError> {
    if let Some(agent_id) = args
        .agents
        .iter()
        .find(|id| !fleetgate_common::ids::is_safe_id(id))
    {
        return Err(CertsError::AgentId {
            agent_id: agent_id.clone(),
        });
    }
    let request = LabSetRequest {
        dir: args.out.clone(),
        coordinator_names: args.coordinator_names.clone(),
        agents: args.agents.clone(),
        force: args.force,
    };
    write_lab_set(&request).map_err(|error| CertsError::LabSet { error })
}
