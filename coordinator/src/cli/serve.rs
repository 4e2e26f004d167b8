//! `fleetgate serve`: the coordinator server, with its tokens, TLS and limits from the command
//! line, until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fleetgate_common::auth::{Token, TokenLoadError};
use fleetgate_common::exit;
use fleetgate_common::tls::{ServerTls, TlsError};

use crate::history::{History, HistoryError, HistoryRecorder};
use crate::registry::CoordinatorSettings;
use crate::service;

#[derive(Debug, clap::Args)]
#[deny(missing_docs)]
/// `fleetgate serve`'s arguments.
pub struct ServeArgs {
    /// Address to listen on (loopback by default; opt in to wider binds).
    #[arg(long, env = "FLEETGATE_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Heartbeat interval told to agents, in milliseconds (an agent silent for 3× is lost).
    #[arg(long, default_value_t = 2_000)]
    pub heartbeat_ms: u64,
    /// File holding the token agents must present [default: the FLEETGATE_AGENT_TOKEN
    /// environment variable, else none: any agent that reaches the port may join].
    #[arg(long, env = "FLEETGATE_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// File holding the token clients must present to submit runs or list agents [default:
    /// the FLEETGATE_CLIENT_TOKEN environment variable, else none].
    #[arg(long, env = "FLEETGATE_CLIENT_TOKEN_FILE")]
    pub client_token_file: Option<PathBuf>,
    /// Most agent ids this coordinator keeps; a new agent beyond it is refused (a connected
    /// agent costs about 29 KiB idle and 50 KiB at the end of a run: docs/fleet.md).
    #[arg(long, default_value_t = 20_000)]
    pub max_agents: usize,
    /// Seconds a lost or disconnected agent is kept after its last message before it is
    /// forgotten (unless a run in progress includes it).
    #[arg(long, default_value_t = 3_600)]
    pub lost_agent_ttl_seconds: u64,
    /// Most runs in progress at once; a submission beyond it is refused (exit 6).
    #[arg(long, default_value_t = 8)]
    pub max_runs: usize,
    /// Most finished runs whose reports are kept for `GetReport` (oldest dropped first).
    #[arg(long, default_value_t = 100)]
    pub max_finished_runs: usize,
    /// Seconds a finished run's report is kept.
    #[arg(long, default_value_t = 86_400)]
    pub finished_run_ttl_seconds: u64,
    /// Most MiB of finished reports kept, counted compressed as they are kept (a 10,000-agent
    /// report of 95 MB of JSON keeps about 5 MB); oldest dropped first, the newest always kept.
    #[arg(long, default_value_t = 64)]
    pub max_finished_report_mib: usize,
    /// Seconds a new connection has to make its first call (TLS handshake and HTTP/2 preface
    /// included) before it is closed, 1 to 3600.
    #[arg(long, default_value_t = 10)]
    pub connection_setup_seconds: u64,
    /// Seconds a connection may stay open with no call in progress before it is closed, 1 to
    /// 86400.
    #[arg(long, default_value_t = 60)]
    pub connection_idle_seconds: u64,
    /// Sustained messages per second one agent may send (ten seconds' worth in a burst); an
    /// agent over it has its session closed and reconnects.
    #[arg(long, default_value_t = 1_000)]
    pub agent_messages_per_second: u32,
    /// Largest message accepted from an agent or a client, in MiB; a larger one ends its
    /// stream with OUT_OF_RANGE.
    #[arg(long, default_value_t = 16)]
    pub max_message_mib: usize,
    /// Serve Prometheus metrics over HTTP on this address, at /metrics [default: off]. Keep it
    /// on loopback or a network only the scraper reaches: it has no TLS and no token.
    #[arg(long, env = "FLEETGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Also serve the standard gRPC health service (grpc.health.v1) alone, without TLS or
    /// tokens, on this address, for probes that cannot speak TLS (kubelet gRPC probes)
    /// [default: off; the main port always serves it, behind TLS].
    #[arg(long, env = "FLEETGATE_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// On a shutdown signal, report NOT_SERVING for this many seconds, still serving, before
    /// closing (so probes and load balancers see the drain first), 0 to 300.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub drain_seconds: u64,
    /// This coordinator's certificate chain (PEM) for TLS (see `fleetgate certs`).
    #[arg(long, env = "FLEETGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "FLEETGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signs agent certificates: every agent must then present a
    /// client certificate naming its agent id (mutual TLS).
    #[arg(long, env = "FLEETGATE_AGENT_CA", requires = "tls_cert")]
    pub agent_ca: Option<PathBuf>,
    /// Serve without TLS: tokens and results cross the network unencrypted.
    #[arg(
        long,
        env = "FLEETGATE_PLAINTEXT",
        value_parser = clap::builder::BoolishValueParser::new(),
        conflicts_with_all = ["tls_cert", "tls_key", "agent_ca"]
    )]
    pub plaintext: bool,
    /// Record every finished run's report in this history file (SQLite; see docs/history.md)
    /// [default: none].
    #[arg(long, env = "FLEETGATE_HISTORY")]
    pub history: Option<PathBuf>,
}

/// Why the coordinator did not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An agent or client token cannot be loaded (exit 2).
    #[error("{error}")]
    Token {
        /// The error (part of the message, so not chained as a source).
        error: TokenLoadError,
    },
    /// The TLS certificate, key or agent CA cannot be loaded (exit 2).
    #[error("{error}")]
    Tls {
        /// The error (part of the message, so not chained as a source).
        error: TlsError,
    },
    /// Neither TLS files nor `--plaintext` were given (exit 2).
    #[error(
        "serve needs --tls-cert and --tls-key (a lab set: `fleetgate certs`), or --plaintext to serve without TLS"
    )]
    NoTransport,
    /// The address cannot be listened on (exit 1).
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The metrics listener could not start (exit 1).
    #[error("{0}")]
    Metrics(fleetgate_common::telemetry::MetricsListenError),
    /// The history file cannot be opened (exit 1).
    #[error("cannot start the coordinator: {error}")]
    History {
        /// The error (part of the message, so not chained as a source).
        error: HistoryError,
    },
    /// The coordinator could not start (exit 1).
    #[error("cannot start the coordinator: {error}")]
    Start {
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
}

impl ServeError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Token { .. } | ServeError::Tls { .. } | ServeError::NoTransport => {
                exit::USAGE
            }
            ServeError::Listen { .. }
            | ServeError::Start { .. }
            | ServeError::Metrics(_)
            | ServeError::History { .. } => exit::ERROR,
        }
    }
}

/// Serves the coordinator configured by `args` until `stop` resolves, then shuts it down.
pub async fn serve(args: ServeArgs, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
    let agent_token = Token::load(args.agent_token_file.as_deref(), "FLEETGATE_AGENT_TOKEN")
        .map_err(|error| ServeError::Token { error })?;
    let client_token = Token::load(args.client_token_file.as_deref(), "FLEETGATE_CLIENT_TOKEN")
        .map_err(|error| ServeError::Token { error })?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            ServerTls::load(cert, key, args.agent_ca.as_deref())
                .map_err(|error| ServeError::Tls { error })?,
        ),
        _ if args.plaintext => {
            tracing::warn!(listen = %args.listen, "Serving without TLS (--plaintext): tokens and results cross the network unencrypted.");
            None
        }
        _ => return Err(ServeError::NoTransport),
    };
    if tls.as_ref().is_some_and(|t| !t.agent_certs_required) {
        tracing::info!(listen = %args.listen, "No --agent-ca: agents are not bound to their ids by certificates; any agent-token holder can use any agent id.");
    }
    if agent_token.is_none() {
        tracing::warn!(listen = %args.listen, "No agent token: any process that reaches this port can join as an agent (set --agent-token-file or FLEETGATE_AGENT_TOKEN).");
    }
    if client_token.is_none() {
        tracing::warn!(listen = %args.listen, "No client token: any process that reaches this port can submit runs (set --client-token-file or FLEETGATE_CLIENT_TOKEN).");
    }
    // The history is opened (and migrated) before anything listens: a file that cannot be
    // used stops the start, not a run's report later.
    let (history, history_thread) = match &args.history {
        Some(path) => {
            let opened = History::open(path).map_err(|error| ServeError::History { error })?;
            let (recorder, thread) =
                HistoryRecorder::start(opened).map_err(|error| ServeError::Start { error })?;
            (Some(recorder), Some(thread))
        }
        None => (None, None),
    };
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Listen { addr, error })
    };
    let listener = bind(args.listen).await?;
    let health_listener = match args.health_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    if let Some(addr) = args.metrics_listen {
        let bound = fleetgate_common::telemetry::serve_metrics(
            addr,
            &[(
                crate::metrics::RUN_DURATION_METRIC,
                &crate::metrics::RUN_DURATION_BUCKETS,
            )],
        )
        .await
        .map_err(ServeError::Metrics)?;
        crate::metrics::describe();
        tracing::info!(addr = %bound, "Serving metrics at /metrics.");
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let settings = CoordinatorSettings {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.clamp(50, 3_600_000)),
        agent_token,
        client_token,
        max_agents: args.max_agents.max(1),
        lost_agent_ttl: Duration::from_secs(args.lost_agent_ttl_seconds),
        max_runs: args.max_runs.max(1),
        max_finished_runs: args.max_finished_runs.max(1),
        finished_run_ttl: Duration::from_secs(args.finished_run_ttl_seconds),
        max_finished_report_bytes: args.max_finished_report_mib.clamp(1, 1 << 20) << 20,
        connection_setup_timeout: Duration::from_secs(
            args.connection_setup_seconds.clamp(1, 3_600),
        ),
        connection_idle_timeout: Duration::from_secs(args.connection_idle_seconds.clamp(1, 86_400)),
        agent_messages_per_second: args.agent_messages_per_second.max(1),
        max_message_bytes: args.max_message_mib.clamp(1, 1024) << 20,
        tls,
        history,
        ..CoordinatorSettings::default()
    };
    let coordinator = service::serve(listener, settings, shutdown.clone())
        .map_err(|error| ServeError::Start { error })?;
    if let Some(listener) = health_listener {
        let addr = listener
            .local_addr()
            .map_err(|error| ServeError::Start { error })?;
        coordinator.serve_health(listener);
        tracing::info!(addr = %addr, "Serving grpc.health.v1 without TLS.");
    }
    stop.await;
    if args.drain_seconds > 0 {
        tracing::info!(
            seconds = args.drain_seconds,
            "Draining: health NOT_SERVING before shutdown."
        );
        coordinator.drain().await;
        tokio::time::sleep(Duration::from_secs(args.drain_seconds)).await;
    }
    tracing::info!("Coordinator shutting down.");
    coordinator.shutdown().await;
    if let Some(thread) = history_thread {
        // The registry has stopped and dropped its recorder: the thread records what was
        // queued, then ends.
        let joined = tokio::task::spawn_blocking(move || thread.join().ok());
        if tokio::time::timeout(Duration::from_secs(30), joined)
            .await
            .is_err()
        {
            tracing::warn!(
                "The history thread did not finish within 30 s; reports still queued may not be recorded."
            );
        }
    }
    Ok(())
}
