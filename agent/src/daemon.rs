//! The agent daemon: dials the coordinator, registers this host (facts, runtimes, labels,
//! hardware class), heartbeats, runs assigned jobs one at a time in worker processes, and
//! streams their numbered events. Events stay in a per-job outbox (memory and an append-only
//! file under the state directory) until the coordinator acknowledges them, and are resent after
//! a reconnect, so a dropped connection loses nothing and duplicates nothing (the coordinator
//! ignores sequence numbers it already has). Reconnects back off exponentially with jitter.
//!
//! Its parts: the command line, configuration and path rules ([`DaemonArgs`], [`AgentConfig`]),
//! the outbox, the liveness and last-contact files read by [`check_health`], the daemon's
//! metrics, and the session loop ([`run`]).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::worker::WorkerCommand;

mod config;
mod last_contact;
mod metrics;
mod outbox;
mod session;

pub use config::{AgentConfig, ConfigError, DaemonArgs};
pub use last_contact::{
    ALIVE_FILE, ALIVE_INTERVAL, HealthCheck, HealthError, LAST_CONTACT_FILE, check_health,
};
pub use outbox::{
    MAX_OUTBOX_FILE_BYTES, MAX_OUTBOX_FILES, MAX_OUTBOX_LINE_BYTES, MAX_OUTBOX_TOTAL_BYTES,
};
pub use session::run;

const MIB: u64 = 1024 * 1024;

/// Why the agent could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The command line or settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The process could not set itself up (its async runtime, the path of its own program).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The state directory's outbox folder cannot be created.
    #[error("cannot create {}: {error}", dir.display())]
    CreateOutbox {
        /// The outbox folder.
        dir: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The state directory's outbox folder cannot be read.
    #[error("cannot read {}: {error}", dir.display())]
    ReadOutbox {
        /// The outbox folder.
        dir: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The metrics listener could not start.
    #[error("{0}")]
    Metrics(String),
    /// Start-up work on a blocking thread panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The coordinator refused this agent's token, certificate or hello: retrying cannot help.
    #[error("the coordinator at {url} refused this agent: {reason}")]
    Refused {
        /// The coordinator's URL.
        url: String,
        /// Its reason, with a hint at the setting to change.
        reason: String,
    },
}

/// Runs the agent configured by `args`, starting workers with `worker`, until SIGINT or
/// SIGTERM.
pub fn run_from_args(args: DaemonArgs, worker: WorkerCommand) -> Result<(), DaemonError> {
    let metrics_listen = args.metrics_listen;
    run_until_signal(args.into_config(worker)?, metrics_listen)
}

/// Runs the agent on its own async runtime until SIGINT or SIGTERM, serving its metrics on
/// `metrics_listen` if given.
pub fn run_until_signal(
    config: AgentConfig,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        if let Some(addr) = metrics_listen {
            let bound = fleetgate_common::telemetry::serve_metrics(addr, &[])
                .await
                .map_err(|e| DaemonError::Metrics(e.to_string()))?;
            metrics::describe();
            tracing::info!(addr = %bound, "Serving metrics at /metrics.");
        }
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        // Installed before any start-up work, so a start that hangs still obeys a signal.
        tokio::spawn(async move {
            fleetgate_common::shutdown::signal().await;
            tracing::info!("Agent shutting down.");
            token.cancel();
        });
        run(config, shutdown).await
    });
    // Blocking start-up work still under way (a driver call that hangs) must not hold the
    // exit up: it is abandoned after a second.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
