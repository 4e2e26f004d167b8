//! Tracing set-up: logs go to stderr (stdout is reserved for machine output), filtered by
//! `FLEETGATE_LOG`, falling back to `RUST_LOG`, then the command's default level; as text or
//! as one JSON object per line (`--log-format`). Text has ANSI colours only when stderr is a
//! terminal and `NO_COLOR` is unset or empty (<https://no-color.org>).

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// Log line format (`--log-format`, or `FLEETGATE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// The logging flag of every command line (`fleetgate` and `fleetgate-agent`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log lines on stderr as text or as one JSON object per line (text has colours only on
    /// a terminal, and never with NO_COLOR set).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FLEETGATE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl LogFormat {
    /// The format's name, as `--log-format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Whether [`init`] installed JSON logs (so child processes can be started with the same).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// The format [`init`] installed (text before it is called): the agent starts its workers
/// with it, so their lines on the shared stderr look like the agent's own.
pub fn current_format() -> LogFormat {
    if JSON_LOGS.load(Ordering::Relaxed) {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

/// Whether text logs on stderr may carry ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value.
pub fn stderr_colours() -> bool {
    colours_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn colours_allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber with `default_level` (e.g. `info` for daemons, `warn` for
/// commands whose stdout and stderr a person reads). Calling it twice is harmless.
pub fn init(format: LogFormat, default_level: &str) {
    JSON_LOGS.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = std::env::var("FLEETGATE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // An error only means a subscriber is already installed, which is fine.
    let installed = match format {
        LogFormat::Text => builder.with_ansi(stderr_colours()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    drop(installed);
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colours_allowed;

    #[test]
    fn colours_need_a_terminal_and_no_no_color() {
        assert!(colours_allowed(true, None));
        assert!(colours_allowed(true, Some(OsStr::new(""))));
        assert!(!colours_allowed(true, Some(OsStr::new("1"))));
        assert!(!colours_allowed(false, None));
    }
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("--metrics-listen {addr}: {error}")]
pub struct MetricsListenError {
    /// The address asked for.
    pub addr: std::net::SocketAddr,
    /// Why (part of the message, so not chained as a source).
    pub error: String,
}

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs this process's metrics recorder and serves its metrics in the Prometheus text
/// format over HTTP/1.1 on `addr`, at `/metrics` (any other path is 404); returns the address
/// bound (port 0 picks one). `buckets` gives the histogram buckets of the named histograms
/// (others are summaries). Call it at most once per process, inside a Tokio runtime.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    buckets: &[(&str, &[f64])],
) -> Result<std::net::SocketAddr, MetricsListenError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let failed = |error: String| MetricsListenError { addr, error };
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), values)
            .map_err(|e| failed(e.to_string()))?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| failed(e.to_string()))?;
    let handle = builder
        .install_recorder()
        .map_err(|e| failed(e.to_string()))?;
    // Histograms and summaries age out old observations only when told to.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, PROMETHEUS_TEXT)],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "Metrics listener ended with an error.");
        }
    });
    Ok(bound)
}
