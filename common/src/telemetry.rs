//! Tracing set-up: logs go to stderr (stdout is reserved for machine output), filtered by
//! `FLEETGATE_LOG`, falling back to `RUST_LOG`, then the command's default level.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber with `default_level` (e.g. `info` for daemons, `warn` for
/// commands whose stdout and stderr a person reads). Calling it twice is harmless.
pub fn init(format: LogFormat, default_level: &str) {
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
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    drop(installed);
}
