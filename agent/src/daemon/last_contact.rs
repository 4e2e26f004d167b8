//! The agent's last contact with its coordinator, kept as a file's modification time under the
//! state directory, and the health check that reads it (`fleetgate-agent health`, for
//! containers).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::outbox::open_nonblocking;

/// File under the state directory whose modification time is the agent's last contact with
/// its coordinator (for container health checks: `fleetgate-agent health`).
pub const LAST_CONTACT_FILE: &str = "last-contact";

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
}

/// Records now as the last contact (a failure is logged at debug level: a health check then
/// reports the agent stale, which is what it is to an observer).
pub(super) fn touch_last_contact(state_dir: &Path) {
    use rustix::fs::OFlags;
    let path = state_dir.join(LAST_CONTACT_FILE);
    let written = open_nonblocking(&path, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)
        .and_then(|mut f| f.write_all(crate::sink::unix_now_ns().to_string().as_bytes()));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "Cannot record the last contact.");
    }
}

/// Whether the agent whose state is in `state_dir` heard from its coordinator within `max_age`.
pub fn check_health(state_dir: &Path, max_age: Duration) -> Result<(), HealthError> {
    let path = state_dir.join(LAST_CONTACT_FILE);
    let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(modified) => modified,
        Err(error) => return Err(HealthError::NoContact { path, error }),
    };
    let age = modified.elapsed().unwrap_or_default();
    if age <= max_age {
        Ok(())
    } else {
        Err(HealthError::Stale { age })
    }
}
