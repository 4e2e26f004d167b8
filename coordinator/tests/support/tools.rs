//! The real third-party consumers the tests feed fleetgate's outputs to, installed by
//! `make test-tools` (part of `make test`): Debian's `chromium` and `xmllint`, and a Python
//! virtual environment (`FLEETGATE_TEST_TOOLS`) holding schema, metrics and health clients,
//! GitHub's Markdown renderer (cmark-gfm) and the manifest validators. A missing tool fails the test with the command that installs it:
//! these checks are never skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cli::{run_bounded, text};

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

/// Longest Chromium may take to load a page.
const BROWSER_LIMIT: Duration = Duration::from_secs(180);

/// Runs headless Chromium on `page` with `args` (its own profile folder under `dir`); its
/// stdout and stderr.
pub(crate) fn chromium(dir: &Path, page: &Path, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let mut command = system_program("chromium");
    command
        .args([
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()));
    let (code, stdout, stderr) = run_bounded(&mut command, BROWSER_LIMIT);
    assert_eq!(code, Some(0), "chromium failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The console's lines in Chromium's log (messages, uncaught errors), failed loads and
/// refusals.
pub(crate) fn console_problems(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            [
                ":CONSOLE",
                "Uncaught",
                "Failed to load",
                "net::ERR_",
                "Refused to",
            ]
            .iter()
            .any(|p| l.contains(p))
        })
        .collect()
}

/// The stdout of the test tools' Python running `script` with `input` on its stdin (the
/// script must succeed).
pub(crate) fn python_output(script: &str, input: &[u8]) -> Vec<u8> {
    let mut child = venv_program("python")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    out.stdout
}
