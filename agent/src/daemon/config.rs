//! What the agent runs with: its command line ([`DaemonArgs`]), the configuration made from it
//! ([`AgentConfig`]) with the join token it presents, and the path rules for what remote input
//! may name: scratch roots only under the directories the operator allowed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_common::auth::{Token, TokenLoadError};
use fleetgate_common::ids::is_safe_id;
use fleetgate_common::tls::{ClientTlsFiles, CoordinatorLink, TlsError};

use super::MIB;
use crate::worker::WorkerCommand;

/// Why the agent's command line or settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--label` is not `KEY=VALUE`.
    #[error("--label {label}: expected KEY=VALUE")]
    Label {
        /// The label as given.
        label: String,
    },
    /// The agent id is not safe as a file name.
    #[error("--agent-id {agent_id}: use letters, digits, '-', '_' or '.' (at most 128)")]
    AgentId {
        /// The id as given (or the host name).
        agent_id: String,
    },
    /// The coordinator URL, or its TLS files, are unusable.
    #[error("{error}")]
    Coordinator {
        /// The error (part of the message, so not chained as a source).
        error: TlsError,
    },
    /// An allowed scratch root is not a plain absolute path.
    #[error("--allow-scratch-root {}: use an absolute path without '.' or '..'", root.display())]
    ScratchRoot {
        /// The root as given.
        root: PathBuf,
    },
    /// The join token cannot be loaded.
    #[error("{error}")]
    Token {
        /// The error (part of the message, so not chained as a source).
        error: TokenLoadError,
    },
}

/// Agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How to reach the coordinator.
    pub coordinator: CoordinatorLink,
    /// This agent's id (unique in the fleet; defaults to the host name).
    pub agent_id: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Hardware class override (else derived from the facts).
    pub hardware_class: Option<String>,
    /// Where jobs write their artifacts.
    pub artifact_root: PathBuf,
    /// Where unacknowledged events are kept.
    pub state_dir: PathBuf,
    /// How to start a worker.
    pub worker: WorkerCommand,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// The join token presented to the coordinator.
    pub token: Option<Token>,
    /// Directories a job may name as its overhead scratch root (the coordinator's choice is
    /// remote input: a root outside these is refused, so a job cannot write or clear
    /// directories the operator did not allow).
    pub scratch_roots: Vec<PathBuf>,
    /// Most memory one job may use, in bytes (none: what the host has available); a job whose
    /// workload needs more fails before it starts.
    pub max_job_memory_bytes: Option<u64>,
}

impl AgentConfig {
    /// Defaults for an agent of `coordinator` named `agent_id`, with its state under `state_dir`.
    pub fn new(
        coordinator: CoordinatorLink,
        agent_id: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        worker: WorkerCommand,
    ) -> Self {
        let state_dir = state_dir.into();
        AgentConfig {
            coordinator,
            agent_id: agent_id.into(),
            labels: BTreeMap::new(),
            hardware_class: None,
            artifact_root: state_dir.join("artifacts"),
            state_dir,
            worker,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            token: None,
            scratch_roots: Vec::new(),
            max_job_memory_bytes: None,
        }
    }
}

/// The agent daemon's command line (shared by `fleetgate-agent run` and `fleetgate agent`).
#[derive(Debug, Clone, clap::Args)]
#[deny(missing_docs)]
pub struct DaemonArgs {
    /// Coordinator URL: https://HOST:PORT, or http://HOST:PORT with --plaintext.
    #[arg(
        long,
        env = "FLEETGATE_COORDINATOR",
        default_value = "https://127.0.0.1:7400"
    )]
    pub coordinator: String,
    /// CA certificate (PEM) that signed the coordinator's certificate [default: the system's
    /// trusted roots].
    #[arg(long, env = "FLEETGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// This agent's client certificate (PEM), naming its agent id, for a coordinator that
    /// requires agent certificates (--agent-ca).
    #[arg(long, env = "FLEETGATE_AGENT_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FLEETGATE_AGENT_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Talk to an http:// coordinator without TLS: the token and every result cross the
    /// network unencrypted.
    #[arg(
        long,
        env = "FLEETGATE_PLAINTEXT",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub plaintext: bool,
    /// A directory (or a parent of directories) that runs may use as their overhead scratch
    /// root, e.g. /dev/shm/fleetgate (repeatable; comma-separated in the environment variable)
    /// [default: none, so a run's --overhead-scratch-root is refused on this agent].
    #[arg(
        long = "allow-scratch-root",
        value_name = "DIR",
        env = "FLEETGATE_AGENT_SCRATCH_ROOTS",
        value_delimiter = ','
    )]
    pub scratch_roots: Vec<PathBuf>,
    /// Agent id, unique in the fleet [default: this host's name].
    #[arg(long, env = "FLEETGATE_AGENT_ID")]
    pub agent_id: Option<String>,
    /// A label, KEY=VALUE (repeatable, or comma-separated in the environment variable).
    #[arg(
        long = "label",
        value_name = "KEY=VALUE",
        env = "FLEETGATE_AGENT_LABELS",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// Hardware class [default: derived from the host's GPUs or CPU].
    #[arg(long, env = "FLEETGATE_HARDWARE_CLASS")]
    pub hardware_class: Option<String>,
    /// Where jobs write their artifacts.
    #[arg(
        long,
        env = "FLEETGATE_ARTIFACT_ROOT",
        default_value = "/var/lib/fleetgate/artifacts"
    )]
    pub artifact_root: PathBuf,
    /// Where unacknowledged job events are kept.
    #[arg(
        long,
        env = "FLEETGATE_STATE_DIR",
        default_value = "/var/lib/fleetgate/state"
    )]
    pub state_dir: PathBuf,
    /// Longest reconnect delay, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub reconnect_max_ms: u64,
    /// File holding the coordinator's agent join token [default: the FLEETGATE_AGENT_TOKEN
    /// environment variable, else no token].
    #[arg(long, env = "FLEETGATE_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Most memory one job may use, in MiB: a job whose workload would need more fails before
    /// it starts [default: what the host, or its container, has available when the job starts].
    #[arg(
        long,
        env = "FLEETGATE_AGENT_MAX_JOB_MEMORY_MIB",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_job_memory_mib: Option<u64>,
    /// Serve Prometheus metrics over HTTP on this address, at /metrics [default: off]. Keep it
    /// on loopback or a network only the scraper reaches: it has no TLS and no token.
    #[arg(long, env = "FLEETGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl DaemonArgs {
    /// The agent configuration, with workers started by `worker`.
    pub fn into_config(self, worker: WorkerCommand) -> Result<AgentConfig, ConfigError> {
        let mut labels = BTreeMap::new();
        for label in &self.labels {
            let (k, v) = label.split_once('=').ok_or_else(|| ConfigError::Label {
                label: label.clone(),
            })?;
            labels.insert(k.to_owned(), v.to_owned());
        }
        let agent_id = self
            .agent_id
            .unwrap_or_else(fleetgate_common::host::host_name);
        if !is_safe_id(&agent_id) {
            return Err(ConfigError::AgentId { agent_id });
        }
        let files = ClientTlsFiles {
            ca: self.ca_file,
            cert: self.cert_file,
            key: self.key_file,
        };
        let link = CoordinatorLink::new("--coordinator", &self.coordinator, &files, self.plaintext)
            .map_err(|error| ConfigError::Coordinator { error })?;
        let mut config = AgentConfig::new(link, agent_id, self.state_dir, worker);
        config.labels = labels;
        config.hardware_class = self.hardware_class;
        config.artifact_root = self.artifact_root;
        config.reconnect_max = Duration::from_millis(self.reconnect_max_ms.max(100));
        if let Some(root) = self.scratch_roots.iter().find(|r| !is_plain_absolute(r)) {
            return Err(ConfigError::ScratchRoot { root: root.clone() });
        }
        config.scratch_roots = self.scratch_roots;
        config.max_job_memory_bytes = self.max_job_memory_mib.map(|mib| mib.saturating_mul(MIB));
        config.token = Token::load(self.token_file.as_deref(), "FLEETGATE_AGENT_TOKEN")
            .map_err(|error| ConfigError::Token { error })?;
        Ok(config)
    }
}

/// Whether `path` is absolute and has no `.` or `..` components.
fn is_plain_absolute(path: &Path) -> bool {
    use std::path::Component;
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Whether a job may use `root` as its scratch root: a plain absolute path equal to or under
/// one of `allowed`.
pub(super) fn scratch_root_allowed(allowed: &[PathBuf], root: &Path) -> bool {
    is_plain_absolute(root) && allowed.iter().any(|a| root.starts_with(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_root_must_lie_under_an_allowed_one_without_dot_dot() {
        let allowed = [PathBuf::from("/dev/shm/fleetgate")];
        assert!(scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate")
        ));
        assert!(scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate/run-1")
        ));
        assert!(!scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate/../../etc")
        ));
        assert!(!scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate-other")
        ));
        assert!(!scratch_root_allowed(
            &allowed,
            Path::new("dev/shm/fleetgate")
        ));
        assert!(!scratch_root_allowed(&[], Path::new("/tmp")));
    }
}
