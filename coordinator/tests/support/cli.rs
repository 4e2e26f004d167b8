//! Running the real `fleetgate` binary from a test, from the repository root and without the
//! caller's coordinator settings, so a developer's environment cannot redirect a test run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `fleetgate ARGS` to completion.
pub(crate) fn fleetgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .current_dir(repo())
        .env("FLEETGATE_LOG", "warn")
        .env_remove("FLEETGATE_COORDINATOR")
        .env_remove("FLEETGATE_CLIENT_TOKEN_FILE")
        .env_remove("FLEETGATE_CA_FILE")
        .args(args)
        .output()
        .unwrap()
}

/// A process's output as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
