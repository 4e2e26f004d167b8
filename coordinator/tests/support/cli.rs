//! Running the real `fleetgate` binary from a test: from the repository root, without the
//! caller's fleetgate settings, so a developer's environment cannot redirect or change a
//! test run.

use std::ffi::{OsStr, OsString};
use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::repo;

/// A run small enough for a test: 50 workload steps and a 60 s sampling interval, so the `pr`
/// soak is 360 samples and the overhead scenario emits 1 sample.
pub(crate) const TINY: [&str; 4] = [
    "--iterations",
    "50",
    "--set",
    "gpumemprof_cpu.sampling_interval_seconds=60",
];

/// `fleetgate run --mode MODE --runtimes RUNTIMES` at the [`TINY`] size.
pub(crate) fn tiny_run<'a>(mode: &'a str, runtimes: &'a str) -> Vec<&'a str> {
    let mut args = vec!["run", "--mode", mode, "--runtimes", runtimes];
    args.extend_from_slice(&TINY);
    args
}

/// Whether a variable of the caller's environment is left out of a child's: every
/// `FLEETGATE_*` setting but where libtensorflow is cached, the GPU stand-in's settings, and
/// `RUST_LOG`.
fn foreign(name: &str) -> bool {
    (name.starts_with("FLEETGATE_") && name != "FLEETGATE_CACHE_DIR")
        || name.starts_with("NVML_STANDIN_")
        || name == "RUST_LOG"
}

/// Sets `command` to run from the repository root, logging at `warn` without colours, with
/// none of the caller's settings (see [`foreign`]).
pub(crate) fn clean(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(foreign) {
            command.env_remove(name);
        }
    }
    command
        .current_dir(repo())
        .env("FLEETGATE_LOG", "warn")
        .env("NO_COLOR", "1")
}

/// The `fleetgate` binary, [`clean`].
pub(crate) fn fleetgate_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    clean(&mut command);
    command
}

/// Runs `fleetgate ARGS` to completion.
pub(crate) fn fleetgate(args: &[&str]) -> Output {
    fleetgate_command().args(args).output().unwrap()
}

/// Runs `fleetgate ARGS` to completion, off the async runtime.
pub(crate) async fn fleetgate_async<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    tokio::task::spawn_blocking(move || fleetgate_command().args(&args).output().unwrap())
        .await
        .unwrap()
}

/// A process's output as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` to completion, at most `limit`; returns (exit code, stdout, stderr).
pub(crate) fn run_bounded(command: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).ok();
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{command:?} did not finish within {limit:?}; stderr:\n{}",
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        stdout.join().unwrap(),
        stderr.join().unwrap(),
    )
}
