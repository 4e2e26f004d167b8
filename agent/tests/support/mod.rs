//! What the agent's test binaries share: the repository root and the shipped gate assets,
//! and real `fleetgate-agent` processes — run without the caller's fleetgate settings, their
//! stderr read line by line with every wait bounded, killed (SIGKILL) when dropped so a
//! failing test leaves nothing behind. Each test file is a crate of its own and uses a part
//! of this, so items some of them do not use are allowed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use fleetgate_common::gate;

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped operating budget, `docs/benchmarks/v0.4_operating_budget.json`.
pub(crate) fn shipped_budgets() -> gate::Budgets {
    gate::load_budgets(&repo().join("docs/benchmarks/v0.4_operating_budget.json")).unwrap()
}

/// The shipped `pr` baseline, `docs/benchmarks/v0.4_baseline.json`.
pub(crate) fn shipped_baseline() -> gate::Baseline {
    gate::load_baseline(&repo().join("docs/benchmarks/v0.4_baseline.json")).unwrap()
}

/// The shipped tolerances, `docs/benchmarks/v0.4_tolerances.json`.
pub(crate) fn shipped_tolerances() -> gate::Tolerances {
    gate::load_tolerances(&repo().join("docs/benchmarks/v0.4_tolerances.json")).unwrap()
}

/// Whether a variable of the caller's environment is left out of a child's: every
/// `FLEETGATE_*` setting but where libtensorflow is cached, the GPU stand-in's settings, and
/// `RUST_LOG`.
fn foreign(name: &str) -> bool {
    (name.starts_with("FLEETGATE_") && name != "FLEETGATE_CACHE_DIR")
        || name.starts_with("NVML_STANDIN_")
        || name == "RUST_LOG"
}

/// The `fleetgate-agent` binary, without colours and with none of the caller's settings (see
/// [`foreign`]).
pub(crate) fn agent_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetgate-agent"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(foreign) {
            command.env_remove(name);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// A child process and its stderr, line by line.
pub(crate) struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `command` with stdin and stdout closed and stderr read as it comes.
    pub(crate) fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Process { child, lines }
    }

    /// Its next stderr line, waiting until `deadline` at the most: `Timeout` if none came by
    /// then, `Disconnected` once stderr is closed.
    pub(crate) fn next_line(&self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// The stderr lines that came and were not read yet, without waiting.
    pub(crate) fn lines_so_far(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Sends `signal`.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits (at most `limit`) for it to exit; its status, or `None` if it did not.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and waits for it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
