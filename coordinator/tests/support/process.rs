//! Child processes of a test, `fleetgate serve` and `fleetgate agent` among them: stderr
//! collected line by line as it comes, every wait bounded, killed (SIGKILL) when dropped so a
//! failing test leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::cli::{clean, fleetgate_command};
use super::{PATIENCE, eventually};

/// A child process and the lines it wrote on stderr so far.
pub(crate) struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    /// Starts `command` with stdin and stdout closed and stderr collected.
    pub(crate) fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::<Mutex<Vec<String>>>::default();
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Process {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote on stderr so far.
    pub(crate) fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Everything several processes wrote on stderr so far, one after another.
    pub(crate) fn texts(processes: &[Process]) -> String {
        processes
            .iter()
            .map(Process::text)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether a line of its stderr so far contains `wanted`.
    pub(crate) fn said(&self, wanted: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(wanted))
    }

    /// What follows `marker` on the first stderr line that has it, trimmed.
    pub(crate) fn after(&self, marker: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim().to_owned()))
    }

    /// Its open descriptors, from `/proc`.
    pub(crate) fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// SIGKILL, and waits for it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM, then waits (at most [`PATIENCE`]) for it to exit.
    pub(crate) async fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).ok();
        let text = self.text_later();
        let child = &mut self.child;
        eventually(
            "the process to exit on SIGTERM",
            PATIENCE,
            async || child.try_wait().unwrap(),
            text,
        )
        .await;
    }

    /// Waits (at most [`PATIENCE`]) for it to exit on its own; its exit code and all it wrote
    /// on stderr.
    pub(crate) async fn exit(mut self) -> (Option<i32>, String) {
        let text = self.text_later();
        let child = &mut self.child;
        let status = eventually(
            "the process to exit",
            PATIENCE,
            async || child.try_wait().unwrap(),
            &text,
        )
        .await;
        let reader = self.reader.take().unwrap();
        eventually(
            "the process's stderr to close",
            PATIENCE,
            async || reader.is_finished().then_some(()),
            &text,
        )
        .await;
        reader.join().unwrap();
        (status.code(), text())
    }

    /// [`Process::text`], for when the process itself is borrowed.
    fn text_later(&self) -> impl Fn() -> String + use<> {
        let lines = Arc::clone(&self.lines);
        move || lines.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `fleetgate serve` process on an ephemeral loopback port.
pub(crate) struct Serve {
    pub(crate) process: Process,
    pub(crate) addr: SocketAddr,
    plaintext: bool,
}

impl Serve {
    /// Starts `fleetgate serve --listen 127.0.0.1:0 ARGS`, logging at `info`, with at most
    /// `nofile` open descriptors if given, and waits for it to say where it listens.
    pub(crate) async fn start(args: &[&str], nofile: Option<u32>) -> Serve {
        let program = env!("CARGO_BIN_EXE_fleetgate");
        let mut command = match nofile {
            // The shell lowers its own limit, then becomes the coordinator.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        clean(&mut command);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("FLEETGATE_LOG", "info");
        let process = Process::spawn(command);
        let marker = "Coordinator listening. addr=";
        let addr = eventually(
            "the coordinator to listen",
            PATIENCE,
            async || process.after(marker).map(|a| a.parse().unwrap()),
            || process.text(),
        )
        .await;
        Serve {
            process,
            addr,
            plaintext: args.contains(&"--plaintext"),
        }
    }

    /// Its URL: `http://` with `--plaintext`, else `https://`.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.plaintext { "http" } else { "https" };
        format!("{scheme}://{}", self.addr)
    }

    /// SIGTERM, then waits (at most [`PATIENCE`]) for it to exit.
    pub(crate) async fn stop(self) {
        self.process.stop().await;
    }
}

/// `fleetgate agent` as `id`, dialling `url`, with its artifact root and state directory
/// under `dir` and reconnection attempts at most 300 ms apart; the transport and the rest
/// are the caller's to add.
pub(crate) fn agent_command(url: &str, id: &str, dir: &Path) -> Command {
    let mut command = fleetgate_command();
    command
        .arg("agent")
        .args(["--coordinator", url, "--agent-id", id])
        .args(["--reconnect-max-ms", "300"])
        .arg("--artifact-root")
        .arg(dir.join("artifacts"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    command
}

/// A plaintext `fleetgate agent` (see [`agent_command`]) with `extra` arguments, started.
pub(crate) fn plaintext_agent(url: &str, id: &str, dir: &Path, extra: &[&str]) -> Process {
    let mut command = agent_command(url, id, dir);
    command.arg("--plaintext").args(extra);
    Process::spawn(command)
}
