//! The real third-party consumers the tests feed fleetgate's outputs to, installed by
//! `make test-tools` (part of `make test`): Debian's `chromium` and `xmllint`, and a Python
//! virtual environment (`FLEETGATE_TEST_TOOLS`) holding schema, metrics and health clients,
//! GitHub's Markdown renderer (cmark-gfm) and the manifest validators. A missing tool fails the test with the command that installs it:
//! these checks are never skipped.

use std::path::PathBuf;
use std::process::Command;

const INSTALL: &str = "run `make test-tools` (part of `make test`) to install it";

/// The test tools' virtual environment.
pub(crate) fn venv() -> PathBuf {
    let dir = std::env::var_os("FLEETGATE_TEST_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fleetgate/test-tools"))
        })
        .expect("FLEETGATE_TEST_TOOLS or HOME must be set");
    assert!(
        dir.join("bin/python").is_file(),
        "no test-tools virtual environment at {}: {INSTALL}",
        dir.display()
    );
    dir
}

/// A program of the test tools' virtual environment (`python`, `checkov`, ...).
pub(crate) fn venv_program(name: &str) -> Command {
    let path = venv().join("bin").join(name);
    assert!(path.is_file(), "{} is missing: {INSTALL}", path.display());
    Command::new(path)
}

/// A program on the PATH (`chromium`, `xmllint`).
pub(crate) fn system_program(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "`{name}` is not on the PATH: {INSTALL}");
    Command::new(name)
}
