//! The agent's health, kept as two files' modification times under the state directory, and
//! the check that reads them (`fleetgate-agent health`, for containers):
//! - liveness (`health --live`): the agent's own async runtime touches [`ALIVE_FILE`] every
//!   few seconds, whether or not a coordinator is up, so a coordinator outage (its own
//!   rollout) never restarts the agents; only a stuck or dead agent fails it;
//! - readiness (`health`): [`LAST_CONTACT_FILE`] is touched on every message from the
//!   coordinator, so it fails while the agent cannot reach one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::outbox::open_nonblocking;

/// File under the state directory whose modification time is the agent's last contact with
/// its coordinator (for container health checks: `fleetgate-agent health`).
pub const LAST_CONTACT_FILE: &str = "last-contact";

/// File under the state directory whose modification time is the agent's last sign of life
/// (for liveness checks: `fleetgate-agent health --live`).
pub const ALIVE_FILE: &str = "alive";

/// How often the agent touches [`ALIVE_FILE`].
pub const ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the agent is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No last contact is recorded (or its file cannot be read).
    #[error("no contact with a coordinator recorded ({}: {error})", path.display())]
    NoContact {
        /// The last-contact file.
        path: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The last contact is older than allowed.
    #[error("last contact with the coordinator {} s ago", age.as_secs())]
    Stale {
        /// How long ago it was.
        age: Duration,
    },
    /// No sign of life is recorded (the agent never ran with this state directory).
    #[error("no agent running with this state directory ({}: {error})", path.display())]
    NotRunning {
        /// The alive file.
        path: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The last sign of life is older than allowed: the agent is stuck or gone.
    #[error("the agent's last sign of life was {} s ago", age.as_secs())]
    Stuck {
        /// How long ago it was.
        age: Duration,
    },
}

/// What a health check asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    /// Whether the agent process is alive and not stuck (liveness).
    Live,
    /// Whether it heard from its coordinator recently (readiness).
    Ready,
}

/// Touches [`ALIVE_FILE`] every [`ALIVE_INTERVAL`] until the runtime stops (a failure is
/// logged at debug level: a liveness check then fails, which is what an observer should see).
pub(super) async fn keep_alive(state_dir: PathBuf) {
    let mut tick = tokio::time::interval(ALIVE_INTERVAL);
    loop {
        tick.tick().await;
        touch(&state_dir.join(ALIVE_FILE));
    }
}

/// Records now as the last contact (a failure is logged at debug level: a health check then
/// reports the agent stale, which is what it is to an observer).
pub(super) fn touch_last_contact(state_dir: &Path) {
    touch(&state_dir.join(LAST_CONTACT_FILE));
}

/// Writes the time into `path`, updating its modification time.
fn touch(path: &Path) {
    use rustix::fs::OFlags;
    let written = open_nonblocking(path, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)
        .and_then(|mut f| f.write_all(crate::sink::unix_now_ns().to_string().as_bytes()));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "Cannot record the last contact.");
    }
}

/// Runs `check` for the agent whose state is in `state_dir`: its sign of life (liveness) or
/// its last contact with the coordinator (readiness) must be within `max_age`.
pub fn check_health(
    state_dir: &Path,
    check: HealthCheck,
    max_age: Duration,
) -> Result<(), HealthError> {
    let file = match check {
        HealthCheck::Live => ALIVE_FILE,
        HealthCheck::Ready => LAST_CONTACT_FILE,
    };
    let path = state_dir.join(file);
    let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(modified) => modified,
        Err(error) => {
            return Err(match check {
                HealthCheck::Live => HealthError::NotRunning { path, error },
                HealthCheck::Ready => HealthError::NoContact { path, error },
            });
        }
    };
    let age = modified.elapsed().unwrap_or_default();
    match check {
        _ if age <= max_age => Ok(()),
        HealthCheck::Live => Err(HealthError::Stuck { age }),
        HealthCheck::Ready => Err(HealthError::Stale { age }),
    }
}
