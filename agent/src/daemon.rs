//! The agent daemon: dials the coordinator, registers this host (facts, runtimes, labels,
//! hardware class), heartbeats, runs assigned jobs one at a time in worker processes, and
//! streams their numbered events. Events stay in a per-job outbox (memory and an append-only
//! file under the state directory) until the coordinator acknowledges them, and are resent after
//! a reconnect, so a dropped connection loses nothing and duplicates nothing (the coordinator
//! ignores sequence numbers it already has). Reconnects back off exponentially with jitter.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_common::convert;
use fleetgate_common::host::{HostFacts, RuntimeAvailability, derive_hardware_class};
use fleetgate_common::ids::is_safe_id;
use fleetgate_common::job::{JobAssignment, JobPhase, JobUpdate};
use fleetgate_common::report::RuntimeSection;
use fleetgate_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::worker::{self, MemoryLimit, WorkerCommand, WorkerHandle, WorkerInput};
use fleetgate_common::auth::Token;
use fleetgate_common::tls::{ClientTlsFiles, CoordinatorLink};

/// Agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How to reach the coordinator.
    pub coordinator: CoordinatorLink,
    /// This agent's id (unique in the fleet; defaults to the host name).
    pub agent_id: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Hardware class override (else derived from the facts).
    pub hardware_class: Option<String>,
    /// Where jobs write their artifacts.
    pub artifact_root: PathBuf,
    /// Where unacknowledged events are kept.
    pub state_dir: PathBuf,
    /// How to start a worker.
    pub worker: WorkerCommand,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// The join token presented to the coordinator.
    pub token: Option<Token>,
    /// Directories a job may name as its overhead scratch root (the coordinator's choice is
    /// remote input: a root outside these is refused, so a job cannot write or clear
    /// directories the operator did not allow).
    pub scratch_roots: Vec<PathBuf>,
    /// Most memory one job may use, in bytes (none: what the host has available); a job whose
    /// workload needs more fails before it starts.
    pub max_job_memory_bytes: Option<u64>,
}

impl AgentConfig {
    /// Defaults for an agent of `coordinator` named `agent_id`, with its state under `state_dir`.
    pub fn new(
        coordinator: CoordinatorLink,
        agent_id: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        worker: WorkerCommand,
    ) -> Self {
        let state_dir = state_dir.into();
        AgentConfig {
            coordinator,
            agent_id: agent_id.into(),
            labels: BTreeMap::new(),
            hardware_class: None,
            artifact_root: state_dir.join("artifacts"),
            state_dir,
            worker,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            token: None,
            scratch_roots: Vec::new(),
            max_job_memory_bytes: None,
        }
    }
}

/// The agent daemon's command line (shared by `fleetgate-agent run` and `fleetgate agent`).
#[derive(Debug, Clone, clap::Args)]
#[deny(missing_docs)]
pub struct DaemonArgs {
    /// Coordinator URL: https://HOST:PORT, or http://HOST:PORT with --plaintext.
    #[arg(
        long,
        env = "FLEETGATE_COORDINATOR",
        default_value = "https://127.0.0.1:7400"
    )]
    pub coordinator: String,
    /// CA certificate (PEM) that signed the coordinator's certificate [default: the system's
    /// trusted roots].
    #[arg(long, env = "FLEETGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// This agent's client certificate (PEM), naming its agent id, for a coordinator that
    /// requires agent certificates (--agent-ca).
    #[arg(long, env = "FLEETGATE_AGENT_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FLEETGATE_AGENT_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Talk to an http:// coordinator without TLS: the token and every result cross the
    /// network unencrypted.
    #[arg(
        long,
        env = "FLEETGATE_PLAINTEXT",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub plaintext: bool,
    /// A directory (or a parent of directories) that runs may use as their overhead scratch
    /// root, e.g. /dev/shm/fleetgate (repeatable; comma-separated in the environment variable)
    /// [default: none, so a run's --overhead-scratch-root is refused on this agent].
    #[arg(
        long = "allow-scratch-root",
        value_name = "DIR",
        env = "FLEETGATE_AGENT_SCRATCH_ROOTS",
        value_delimiter = ','
    )]
    pub scratch_roots: Vec<PathBuf>,
    /// Agent id, unique in the fleet [default: this host's name].
    #[arg(long, env = "FLEETGATE_AGENT_ID")]
    pub agent_id: Option<String>,
    /// A label, KEY=VALUE (repeatable, or comma-separated in the environment variable).
    #[arg(
        long = "label",
        value_name = "KEY=VALUE",
        env = "FLEETGATE_AGENT_LABELS",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// Hardware class [default: derived from the host's GPUs or CPU].
    #[arg(long, env = "FLEETGATE_HARDWARE_CLASS")]
    pub hardware_class: Option<String>,
    /// Where jobs write their artifacts.
    #[arg(
        long,
        env = "FLEETGATE_ARTIFACT_ROOT",
        default_value = "/var/lib/fleetgate/artifacts"
    )]
    pub artifact_root: PathBuf,
    /// Where unacknowledged job events are kept.
    #[arg(
        long,
        env = "FLEETGATE_STATE_DIR",
        default_value = "/var/lib/fleetgate/state"
    )]
    pub state_dir: PathBuf,
    /// Longest reconnect delay, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub reconnect_max_ms: u64,
    /// File holding the coordinator's agent join token [default: the FLEETGATE_AGENT_TOKEN
    /// environment variable, else no token].
    #[arg(long, env = "FLEETGATE_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Most memory one job may use, in MiB: a job whose workload would need more fails before
    /// it starts [default: what the host, or its container, has available when the job starts].
    #[arg(
        long,
        env = "FLEETGATE_AGENT_MAX_JOB_MEMORY_MIB",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_job_memory_mib: Option<u64>,
}

impl DaemonArgs {
    /// The agent configuration, with workers started by `worker`.
    pub fn into_config(self, worker: WorkerCommand) -> anyhow::Result<AgentConfig> {
        let mut labels = BTreeMap::new();
        for label in &self.labels {
            let (k, v) = label
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--label {label}: expected KEY=VALUE"))?;
            labels.insert(k.to_owned(), v.to_owned());
        }
        let agent_id = self.agent_id.unwrap_or_else(crate::runtime::host_name);
        anyhow::ensure!(
            is_safe_id(&agent_id),
            "--agent-id {agent_id}: use letters, digits, '-', '_' or '.' (at most 128)"
        );
        let files = ClientTlsFiles {
            ca: self.ca_file,
            cert: self.cert_file,
            key: self.key_file,
        };
        let link = CoordinatorLink::new("--coordinator", &self.coordinator, &files, self.plaintext)
            .map_err(anyhow::Error::msg)?;
        let mut config = AgentConfig::new(link, agent_id, self.state_dir, worker);
        config.labels = labels;
        config.hardware_class = self.hardware_class;
        config.artifact_root = self.artifact_root;
        config.reconnect_max = Duration::from_millis(self.reconnect_max_ms.max(100));
        for root in &self.scratch_roots {
            anyhow::ensure!(
                is_plain_absolute(root),
                "--allow-scratch-root {}: use an absolute path without '.' or '..'",
                root.display()
            );
        }
        config.scratch_roots = self.scratch_roots;
        config.max_job_memory_bytes = self.max_job_memory_mib.map(|mib| mib.saturating_mul(MIB));
        config.token = Token::load(self.token_file.as_deref(), "FLEETGATE_AGENT_TOKEN")
            .map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// Runs the agent on its own async runtime until SIGINT or SIGTERM.
pub fn run_until_signal(config: AgentConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        // Installed before any start-up work, so a start that hangs still obeys a signal.
        tokio::spawn(async move {
            fleetgate_common::shutdown::signal().await;
            tracing::info!("Agent shutting down.");
            token.cancel();
        });
        run(config, shutdown).await
    });
    // Blocking start-up work still under way (a driver call that hangs) must not hold the
    // exit up: it is abandoned after a second.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Whether `path` is absolute and has no `.` or `..` components.
fn is_plain_absolute(path: &Path) -> bool {
    use std::path::Component;
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Whether a job may use `root` as its scratch root: a plain absolute path equal to or under
/// one of `allowed`.
fn scratch_root_allowed(allowed: &[PathBuf], root: &Path) -> bool {
    is_plain_absolute(root) && allowed.iter().any(|a| root.starts_with(a))
}

/// File under the state directory whose modification time is the agent's last contact with
/// its coordinator (for container health checks: `fleetgate-agent health`).
pub const LAST_CONTACT_FILE: &str = "last-contact";

fn touch_last_contact(state_dir: &Path) {
    use rustix::fs::OFlags;
    let path = state_dir.join(LAST_CONTACT_FILE);
    let written = open_nonblocking(&path, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)
        .and_then(|mut f| f.write_all(crate::sink::unix_now_ns().to_string().as_bytes()));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "Cannot record the last contact.");
    }
}

/// Whether the agent whose state is in `state_dir` heard from its coordinator within `max_age`.
pub fn check_health(state_dir: &Path, max_age: Duration) -> Result<(), String> {
    let path = state_dir.join(LAST_CONTACT_FILE);
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|e| {
            format!(
                "no contact with a coordinator recorded ({}: {e})",
                path.display()
            )
        })?;
    let age = modified.elapsed().unwrap_or_default();
    if age <= max_age {
        Ok(())
    } else {
        Err(format!(
            "last contact with the coordinator {} s ago",
            age.as_secs()
        ))
    }
}

const MIB: u64 = 1024 * 1024;

/// Largest outbox file read back at start. A job's events are far smaller (progress every
/// tenth of a phase, the soak's checkpoints, one report).
pub const MAX_OUTBOX_FILE_BYTES: u64 = 64 * MIB;
/// Longest outbox line read back: the coordinator's default message limit, since a longer
/// event could not be delivered anyway. A longer line is skipped without being held whole.
pub const MAX_OUTBOX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of outbox files read back at start, all files together.
pub const MAX_OUTBOX_TOTAL_BYTES: u64 = 256 * MIB;
/// Most entries of the outbox folder looked at at start.
pub const MAX_OUTBOX_FILES: usize = 1_000;

const OUTBOX_SUFFIX: &str = ".events.jsonl";

/// Opens `path` without following a symbolic link at its last component and without
/// blocking (a FIFO or a device never holds the caller up).
fn open_nonblocking(path: &Path, flags: rustix::fs::OFlags) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        flags | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    Ok(std::fs::File::from(fd))
}

/// What a file is, for a message, when it is not a regular file.
fn file_kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Lines of an outbox file that were not read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SkippedLines {
    too_long: u64,
    unreadable: u64,
}

impl SkippedLines {
    fn any(self) -> bool {
        self.too_long + self.unreadable > 0
    }
}

impl std::fmt::Display for SkippedLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.too_long > 0 {
            parts.push(format!(
                "{} line(s) over the {} MiB line limit",
                self.too_long,
                MAX_OUTBOX_LINE_BYTES as u64 / MIB
            ));
        }
        if self.unreadable > 0 {
            parts.push(format!("{} unreadable line(s)", self.unreadable));
        }
        f.write_str(&parts.join(" and "))
    }
}

/// Why a file of the outbox folder was not read back (it is left where it is).
#[derive(Debug, thiserror::Error)]
enum OutboxSkip {
    #[error(
        "not an outbox file (<job id>{OUTBOX_SUFFIX}, the id made of letters, digits, '-', '_' or '.')"
    )]
    NotOutboxName,
    #[error("{0}, not a regular file")]
    NotRegular(&'static str),
    #[error("{size} bytes, over the {} MiB limit for one outbox file", MAX_OUTBOX_FILE_BYTES / MIB)]
    TooLarge { size: u64 },
    #[error("{size} bytes, past the {} MiB limit for all outbox files together", MAX_OUTBOX_TOTAL_BYTES / MIB)]
    OverTotal { size: u64 },
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("no readable event")]
    NoEvent,
    #[error("no readable event ({0} skipped)")]
    NoEventLinesSkipped(SkippedLines),
}

/// How a bounded line read ended.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A line is in the buffer (`newline`: it was terminated).
    Line { newline: bool },
    /// A line longer than the limit was consumed and dropped (`newline`: it was terminated).
    TooLong { newline: bool },
    /// Nothing left.
    End,
}

/// Reads one line into `buf` (without its newline), keeping at most `limit` bytes: a longer
/// line is consumed to its end but never held whole.
fn read_line_bounded(
    reader: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut started = false;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (started, too_long) {
                (false, _) => LineRead::End,
                (true, true) => LineRead::TooLong { newline: false },
                (true, false) => LineRead::Line { newline: false },
            });
        }
        started = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if buf.len() + chunk.len() > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(available.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                LineRead::TooLong { newline: true }
            } else {
                LineRead::Line { newline: true }
            });
        }
    }
}

/// One job's numbered events not yet acknowledged.
#[derive(Debug)]
struct Outbox {
    job_id: String,
    next_sequence: u64,
    acked: u64,
    pending: VecDeque<(u64, JobUpdate)>,
    terminal: bool,
    file: Option<std::fs::File>,
    path: PathBuf,
    /// The file ends in a torn line (the process died mid-write): the next event starts a new
    /// line.
    torn_tail: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OutboxLine {
    sequence: u64,
    update: JobUpdate,
}

impl Outbox {
    fn new(dir: &Path, job_id: &str) -> Self {
        let path = dir.join(format!("{job_id}{OUTBOX_SUFFIX}"));
        Outbox {
            job_id: job_id.to_owned(),
            next_sequence: 1,
            acked: 0,
            pending: VecDeque::new(),
            terminal: false,
            file: None,
            path,
            torn_tail: false,
        }
    }

    /// Reloads an outbox left by an earlier agent process: only a regular file, opened without
    /// blocking, at most [`MAX_OUTBOX_FILE_BYTES`], lines of at most [`MAX_OUTBOX_LINE_BYTES`].
    /// `budget` is what the files read so far left of [`MAX_OUTBOX_TOTAL_BYTES`]. Returns the
    /// outbox, the lines it skipped and the file's size.
    fn load(path: &Path, budget: u64) -> Result<(Self, SkippedLines, u64), OutboxSkip> {
        let job_id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(OUTBOX_SUFFIX))
            .filter(|id| is_safe_id(id))
            .ok_or(OutboxSkip::NotOutboxName)?;
        let metadata = std::fs::symlink_metadata(path)?;
        if !metadata.file_type().is_file() {
            return Err(OutboxSkip::NotRegular(file_kind(metadata.file_type())));
        }
        let file = open_nonblocking(path, rustix::fs::OFlags::RDONLY)?;
        // The file may have been swapped since the first look: what was opened decides.
        let metadata = file.metadata()?;
        if !metadata.file_type().is_file() {
            return Err(OutboxSkip::NotRegular(file_kind(metadata.file_type())));
        }
        let size = metadata.len();
        if size > MAX_OUTBOX_FILE_BYTES {
            return Err(OutboxSkip::TooLarge { size });
        }
        if size > budget {
            return Err(OutboxSkip::OverTotal { size });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut outbox = Outbox::new(dir, job_id);
        let mut skipped = SkippedLines::default();
        let mut reader = std::io::BufReader::with_capacity(
            64 * 1024,
            std::io::Read::take(file, MAX_OUTBOX_FILE_BYTES),
        );
        let mut line = Vec::new();
        loop {
            match read_line_bounded(&mut reader, &mut line, MAX_OUTBOX_LINE_BYTES)? {
                LineRead::End => break,
                LineRead::TooLong { newline } => {
                    skipped.too_long += 1;
                    outbox.torn_tail = !newline;
                }
                LineRead::Line { newline } => {
                    // A file that does not end with a newline (the process died mid-write):
                    // the next event starts a new line.
                    outbox.torn_tail = !newline;
                    match serde_json::from_slice::<OutboxLine>(&line) {
                        Ok(entry) if entry.sequence == 0 => skipped.unreadable += 1,
                        Ok(entry) => {
                            outbox.terminal |= entry.update.is_terminal();
                            outbox.next_sequence =
                                outbox.next_sequence.max(entry.sequence.saturating_add(1));
                            outbox.pending.push_back((entry.sequence, entry.update));
                        }
                        // A torn last line is expected, not reported.
                        Err(_) if !newline => {}
                        Err(_) => skipped.unreadable += 1,
                    }
                }
            }
        }
        if outbox.pending.is_empty() {
            return Err(if skipped.any() {
                OutboxSkip::NoEventLinesSkipped(skipped)
            } else {
                OutboxSkip::NoEvent
            });
        }
        // Sent in sequence order, whatever order the lines were in.
        outbox.pending.make_contiguous().sort_by_key(|(s, _)| *s);
        Ok((outbox, skipped, size))
    }

    /// Reads back every outbox of `dir`, in file-name order. A file that is not a regular
    /// outbox within the limits is skipped with one warning naming it and why, and left where
    /// it is; nothing here blocks.
    fn load_all(dir: &Path) -> std::io::Result<BTreeMap<String, Outbox>> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        let mut outboxes = BTreeMap::new();
        let mut budget = MAX_OUTBOX_TOTAL_BYTES;
        for path in names.iter().take(MAX_OUTBOX_FILES) {
            match Outbox::load(path, budget) {
                Ok((outbox, skipped, size)) => {
                    budget -= size;
                    if skipped.any() {
                        tracing::warn!(path = %path.display(), reason = %skipped, "Outbox lines skipped.");
                    }
                    tracing::info!(job_id = %outbox.job_id, events = outbox.pending.len(), "Resuming unacknowledged job events.");
                    outboxes.insert(outbox.job_id.clone(), outbox);
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), reason = %reason, "Outbox file skipped.");
                }
            }
        }
        if names.len() > MAX_OUTBOX_FILES {
            tracing::warn!(
                dir = %dir.display(),
                skipped = names.len() - MAX_OUTBOX_FILES,
                limit = MAX_OUTBOX_FILES,
                "Outbox folder holds more entries than the limit; the last ones in name order were not read."
            );
        }
        Ok(outboxes)
    }

    fn push(&mut self, update: JobUpdate) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.saturating_add(1);
        self.terminal |= update.is_terminal();
        let line = OutboxLine {
            sequence,
            update: update.clone(),
        };
        if self.file.is_none() {
            use rustix::fs::OFlags;
            self.file = open_nonblocking(
                &self.path,
                OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND,
            )
            .map_err(|e| tracing::warn!(path = %self.path.display(), error = %e, "Cannot keep job events on disk."))
            .ok();
        }
        if let Some(file) = &mut self.file
            && let Ok(mut bytes) = serde_json::to_vec(&line)
        {
            if std::mem::take(&mut self.torn_tail) {
                bytes.insert(0, b'\n');
            }
            bytes.push(b'\n');
            let written = file.write_all(&bytes);
            if line.update.is_terminal() {
                file.sync_data().ok();
            }
            if let Err(e) = written {
                tracing::warn!(path = %self.path.display(), error = %e, "Cannot keep job events on disk.");
            }
        }
        self.pending.push_back((sequence, update));
        sequence
    }

    /// Forgets events up to `sequence`; returns whether the job is finished and fully
    /// acknowledged (its file is then deleted).
    fn ack(&mut self, sequence: u64) -> bool {
        self.acked = self.acked.max(sequence);
        while self.pending.front().is_some_and(|(s, _)| *s <= self.acked) {
            self.pending.pop_front();
        }
        let done = self.terminal && self.pending.is_empty();
        if done {
            self.delete();
        }
        done
    }

    /// Deletes the file.
    fn delete(&mut self) {
        self.file = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "Cannot delete an outbox file.");
            }
        }
    }
}

enum SessionEnd {
    Shutdown,
    Disconnected(String),
    /// The coordinator refused this agent's token or certificate: retrying cannot help.
    Refused(String),
}

/// Adds `authorization: Bearer <token>` to every request when a token is set (the agent's
/// join token, or a client's token for the run API).
#[derive(Debug, Clone)]
pub struct BearerToken(pub Option<Token>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = token
                .bearer()
                .parse()
                .map_err(|_| tonic::Status::internal("the token is not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

struct Agent {
    config: AgentConfig,
    facts: HostFacts,
    runtimes: Vec<RuntimeAvailability>,
    hardware_class: String,
    outboxes: BTreeMap<String, Outbox>,
    queue: VecDeque<JobAssignment>,
    running: Option<(String, WorkerHandle)>,
    updates_tx: mpsc::UnboundedSender<(String, JobUpdate)>,
    updates_rx: mpsc::UnboundedReceiver<(String, JobUpdate)>,
    outbox_dir: PathBuf,
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Starting can take a while (NVML, the probe worker loading libtensorflow); a shutdown
    // request ends it at once.
    let mut agent = tokio::select! {
        () = shutdown.cancelled() => {
            tracing::info!("Agent stopped while starting.");
            return Ok(());
        }
        agent = Agent::start(config) => agent?,
    };
    tracing::info!(
        agent_id = %agent.config.agent_id,
        coordinator = %agent.config.coordinator.url,
        hardware_class = %agent.hardware_class,
        "Agent starting."
    );
    let mut backoff = agent.config.reconnect_min;
    let mut last_failure: Option<String> = None;
    loop {
        // Every wait of a session (connecting, the coordinator's answer, the stream) gives way
        // to a shutdown request.
        let end = tokio::select! {
            () = shutdown.cancelled() => Ok(SessionEnd::Shutdown),
            end = agent.session(&shutdown) => end,
        };
        match end {
            Ok(SessionEnd::Shutdown) => break,
            Ok(SessionEnd::Refused(why)) => {
                agent.stop_jobs("agent refused by the coordinator").await;
                anyhow::bail!(
                    "the coordinator at {} refused this agent: {why}",
                    agent.config.coordinator.url
                );
            }
            Ok(SessionEnd::Disconnected(why)) => {
                tracing::warn!(reason = %why, "Disconnected from the coordinator; reconnecting.");
                backoff = agent.config.reconnect_min;
                last_failure = None;
            }
            Err(why) => {
                // Said once per distinct reason (a TLS mismatch is worth seeing; the same
                // refused connection every few seconds is not).
                if last_failure.as_deref() != Some(why.as_str()) {
                    tracing::warn!(reason = %why, "Coordinator not reachable; retrying.");
                }
                last_failure = Some(why);
            }
        }
        let delay = jittered(backoff);
        backoff = (backoff * 2).min(agent.config.reconnect_max);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    agent.stop_jobs("agent shutting down").await;
                    return Ok(());
                }
                () = &mut sleep => break,
                Some((job_id, update)) = agent.updates_rx.recv() => {
                    agent.record(&job_id, update);
                }
            }
        }
    }
    agent.stop_jobs("agent shutting down").await;
    Ok(())
}

/// `delay` ± 25 %, so a fleet that lost its coordinator does not reconnect in lockstep.
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = u64::from(nanos) ^ (u64::from(std::process::id()) << 32);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 0.75 + (x % 1_000) as f64 / 2_000.0;
    delay.mul_f64(factor)
}

impl Agent {
    /// Reads back the outboxes, then this host's facts and runtimes.
    async fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        let outbox_dir = config.state_dir.join("outbox");
        std::fs::create_dir_all(&outbox_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", outbox_dir.display()))?;
        let dir = outbox_dir.clone();
        let outboxes = tokio::task::spawn_blocking(move || Outbox::load_all(&dir))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", outbox_dir.display()))?;
        let mut facts = tokio::task::spawn_blocking(crate::facts::host_facts).await?;
        // A probe worker loads what the runtimes need (libtensorflow included), so this
        // process never pays for it; if the probe cannot run, the in-process checks stand in.
        let runtimes = match crate::worker::probe_with_worker(&config.worker).await {
            Ok(probe) => {
                facts.tensorflow_available = probe.tensorflow_available;
                facts.tensorflow_unavailable_reason = probe.tensorflow_unavailable_reason;
                probe.runtimes
            }
            Err(reason) => {
                tracing::warn!(reason = %reason, "Runtime probe failed; reporting in-process checks.");
                facts.tensorflow_unavailable_reason = Some(format!("not probed: {reason}"));
                tokio::task::spawn_blocking(crate::facts::runtime_availability).await?
            }
        };
        let hardware_class = config
            .hardware_class
            .clone()
            .unwrap_or_else(|| derive_hardware_class(&facts));
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        Ok(Agent {
            config,
            facts,
            runtimes,
            hardware_class,
            outboxes,
            queue: VecDeque::new(),
            running: None,
            updates_tx,
            updates_rx,
            outbox_dir,
        })
    }

    fn hello(&self) -> pb::AgentMessage {
        pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(pb::Hello {
                agent_id: self.config.agent_id.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol_version: fleetgate_proto::PROTOCOL_VERSION,
                facts: Some(pb::HostFacts::from(&self.facts)),
                runtimes: self
                    .runtimes
                    .iter()
                    .map(pb::RuntimeAvailability::from)
                    .collect(),
                labels: self.config.labels.clone().into_iter().collect(),
                hardware_class: self.hardware_class.clone(),
                jobs: self
                    .outboxes
                    .values()
                    .map(|o| pb::JobResume {
                        job_id: o.job_id.clone(),
                        last_sequence: o.next_sequence - 1,
                        running: self.running.as_ref().is_some_and(|(id, _)| *id == o.job_id)
                            || self.queue.iter().any(|j| j.job_id == o.job_id),
                    })
                    .collect(),
            })),
        }
    }

    async fn session(&mut self, shutdown: &CancellationToken) -> Result<SessionEnd, String> {
        let endpoint = self
            .config
            .coordinator
            .endpoint()
            .map_err(|e| e.to_string())?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true);
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            c = endpoint.connect() => c.map_err(|e| format!("connect: {}", fleetgate_common::tls::error_chain(&e)))?,
        };
        let mut client =
            AgentServiceClient::with_interceptor(channel, BearerToken(self.config.token.clone()));
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(1_024);
        tx.send(self.hello()).await.map_err(|e| e.to_string())?;
        let opened = tokio::time::timeout(
            Duration::from_secs(10),
            client.session(ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| "no answer from the coordinator within 10 s".to_owned())?;
        let mut inbound = match opened {
            Ok(response) => response.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                return Ok(SessionEnd::Refused(format!(
                    "{} (set --token-file or FLEETGATE_AGENT_TOKEN)",
                    s.message()
                )));
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                return Ok(SessionEnd::Refused(format!(
                    "{} (give --cert-file and --key-file for a certificate naming this agent id)",
                    s.message()
                )));
            }
            // Another live session holds this id, or the Hello is over a limit: retrying
            // cannot help.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::AlreadyExists | tonic::Code::InvalidArgument
                ) =>
            {
                return Ok(SessionEnd::Refused(s.message().to_owned()));
            }
            Err(s) => return Err(format!("session refused: {}", s.message())),
        };
        let welcome = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(pb::CoordinatorMessage {
                body: Some(pb::coordinator_message::Body::Welcome(w)),
            }))) => w,
            Ok(Err(status)) => return Err(format!("session refused: {}", status.message())),
            _ => return Err("no welcome from the coordinator".into()),
        };
        let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));
        tracing::info!(agent_id = %self.config.agent_id, heartbeat_ms = heartbeat.as_millis() as u64, "Registered with the coordinator.");
        touch_last_contact(&self.config.state_dir);
        for job_id in &welcome.unknown_job_ids {
            self.forget(job_id);
        }
        for (job_id, sequence) in &welcome.acked_through {
            self.ack(job_id, *sequence);
        }
        // Resend everything the coordinator does not have, in order.
        for outbox in self.outboxes.values() {
            for (sequence, update) in &outbox.pending {
                let event = convert::job_event_to_pb(&outbox.job_id, *sequence, update);
                send(&tx, pb::agent_message::Body::JobEvent(event)).await?;
            }
        }
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                _ = ticker.tick() => {
                    let running = self.running.iter().map(|(id, _)| id.clone()).collect();
                    let beat = pb::Heartbeat {
                        sent_unix_ms: crate::sink::unix_now_ns() / 1_000_000,
                        running_job_ids: running,
                    };
                    if send(&tx, pb::agent_message::Body::Heartbeat(beat)).await.is_err() {
                        return Ok(SessionEnd::Disconnected("stream closed".into()));
                    }
                    touch_last_contact(&self.config.state_dir);
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message),
                    Ok(None) => return Ok(SessionEnd::Disconnected("the coordinator closed the stream".into())),
                    Err(status) => return Ok(SessionEnd::Disconnected(status.message().to_owned())),
                },
                Some((job_id, update)) = self.updates_rx.recv() => {
                    let Some(sequence) = self.record(&job_id, update.clone()) else {
                        continue;
                    };
                    let event = convert::job_event_to_pb(&job_id, sequence, &update);
                    if send(&tx, pb::agent_message::Body::JobEvent(event)).await.is_err() {
                        return Ok(SessionEnd::Disconnected("stream closed".into()));
                    }
                }
            }
        }
    }

    fn handle(&mut self, message: pb::CoordinatorMessage) {
        use pb::coordinator_message::Body;
        match message.body {
            Some(Body::AssignJob(assign)) => {
                let Some(spec) = assign.job else { return };
                let job_id = spec.job_id.clone();
                let runtime = spec.runtime.clone();
                match JobAssignment::try_from(spec) {
                    Ok(job) if is_safe_id(&job.job_id) => self.enqueue(job),
                    Ok(job) => {
                        tracing::warn!(job_id = %job.job_id, "Refused a job whose id is not a safe file name.")
                    }
                    // A runtime of a newer build: the job reports it unavailable here.
                    Err(e) if e.field == "runtime" && is_safe_id(&job_id) => {
                        self.report_unavailable(
                            job_id,
                            format!(
                                "runtime '{}' is not built into this agent",
                                fleetgate_common::input::one_line(&runtime)
                            ),
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "Refused an unusable job."),
                }
            }
            Some(Body::CancelJob(cancel)) => self.cancel(&cancel.job_id, &cancel.reason),
            Some(Body::Ack(ack)) => self.ack(&ack.job_id, ack.sequence),
            Some(Body::Welcome(_)) | None => {}
        }
    }

    /// Answers a job whose runtime this build lacks with an `unavailable` section.
    fn report_unavailable(&mut self, job_id: String, reason: String) {
        if self.outboxes.contains_key(&job_id) {
            return;
        }
        tracing::warn!(job_id = %job_id, reason = %reason, "Job's runtime is unavailable here.");
        self.outboxes
            .insert(job_id.clone(), Outbox::new(&self.outbox_dir, &job_id));
        let report = JobUpdate::Report {
            section: Box::new(RuntimeSection::unavailable(reason)),
        };
        self.updates_tx.send((job_id, report)).ok();
    }

    fn enqueue(&mut self, job: JobAssignment) {
        if self.outboxes.contains_key(&job.job_id) {
            // Already have it (a re-sent assignment after a reconnect).
            return;
        }
        tracing::info!(job_id = %job.job_id, runtime = %job.spec.runtime, "Job assigned.");
        self.outboxes.insert(
            job.job_id.clone(),
            Outbox::new(&self.outbox_dir, &job.job_id),
        );
        self.queue.push_back(job);
        self.start_next();
    }

    fn start_next(&mut self) {
        if self.running.is_some() {
            return;
        }
        let Some(job) = self.queue.pop_front() else {
            return;
        };
        if let Some(root) = &job.spec.scratch_root
            && !scratch_root_allowed(&self.config.scratch_roots, root)
        {
            let root = root.display();
            let reason = format!(
                "overhead scratch root {root} is not allowed on this agent (start it with --allow-scratch-root {root})"
            );
            tracing::warn!(job_id = %job.job_id, "{reason}");
            self.fail_queued(job.job_id, reason);
            return self.start_next();
        }
        let now_ms = crate::sink::unix_now_ns() / 1_000_000;
        let remaining = Duration::from_millis(job.deadline_unix_ms.saturating_sub(now_ms));
        let deadline = tokio::time::Instant::now() + remaining;
        let worker_input = WorkerInput {
            // Jobs run one at a time and each scenario resets its directory, so one tree per
            // runtime keeps the disk bounded on a long-lived agent.
            artifact_root: self.config.artifact_root.clone(),
            job: job.spec,
        };
        let available = worker::host_memory_available()
            .map_err(|e| tracing::warn!(error = %e, "Host memory unknown; only --max-job-memory-mib applies."))
            .ok();
        if let Some(limit) = MemoryLimit::new(available, self.config.max_job_memory_bytes)
            && let Err(too_large) = worker::check_memory(&worker_input.job, limit)
        {
            let reason = too_large.to_string();
            tracing::warn!(job_id = %job.job_id, reason = %reason, "Job refused: its workload does not fit in memory.");
            self.fail_queued(job.job_id, reason);
            return self.start_next();
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = worker::spawn_worker(&self.config.worker, &worker_input, deadline, tx);
        let forward = self.updates_tx.clone();
        let job_id = job.job_id.clone();
        tokio::spawn(async move {
            while let Some(update) = rx.recv().await {
                if forward.send((job_id.clone(), update)).is_err() {
                    break;
                }
            }
        });
        self.running = Some((job.job_id, handle));
    }

    /// Numbers and keeps an update; starts the next job after a terminal one. An update of a
    /// job without an outbox (one the coordinator does not know: see [`Agent::forget`]) is
    /// dropped, and `None` is returned.
    fn record(&mut self, job_id: &str, update: JobUpdate) -> Option<u64> {
        let terminal = update.is_terminal();
        let sequence = match self.outboxes.get_mut(job_id) {
            Some(outbox) => Some(outbox.push(update)),
            None => {
                tracing::debug!(job_id = %job_id, "Event of a job the coordinator does not know dropped.");
                None
            }
        };
        if terminal && self.running.as_ref().is_some_and(|(id, _)| id == job_id) {
            self.running = None;
            self.start_next();
        }
        sequence
    }

    /// Drops a job the coordinator says it does not know (its run ended with a coordinator
    /// restart, or it is another agent's): its outbox file is deleted, a queued job is
    /// removed and a running one stopped, and its later events are dropped, so nothing of it
    /// is sent again.
    fn forget(&mut self, job_id: &str) {
        self.queue.retain(|j| j.job_id != job_id);
        if let Some((id, handle)) = &mut self.running
            && id == job_id
        {
            handle.kill("the coordinator does not know this job's run".to_owned());
        }
        if let Some(mut outbox) = self.outboxes.remove(job_id) {
            outbox.delete();
            tracing::info!(job_id = %job_id, path = %outbox.path.display(), "Outbox of a job the coordinator does not know deleted.");
        }
    }

    fn ack(&mut self, job_id: &str, sequence: u64) {
        if let Some(outbox) = self.outboxes.get_mut(job_id)
            && outbox.ack(sequence)
        {
            self.outboxes.remove(job_id);
        }
    }

    fn cancel(&mut self, job_id: &str, reason: &str) {
        let reason = if reason.is_empty() {
            "cancelled"
        } else {
            reason
        };
        if let Some((id, handle)) = &mut self.running
            && id == job_id
        {
            handle.kill(format!("cancelled: {reason}"));
            return;
        }
        if let Some(pos) = self.queue.iter().position(|j| j.job_id == job_id) {
            self.queue.remove(pos);
            self.fail_queued(job_id.to_owned(), format!("cancelled: {reason}"));
        }
    }

    /// Ends a job that never started: the failure goes the way of every worker update, so it
    /// is numbered, kept and sent at once.
    fn fail_queued(&self, job_id: String, reason: String) {
        let failed = JobUpdate::Failed {
            phase: JobPhase::Starting,
            reason,
        };
        self.updates_tx.send((job_id, failed)).ok();
    }

    /// Stops the running job and waits (at most 10 s) for its worker to close its telemetry
    /// session and end, so its last events are kept in the outbox.
    async fn stop_jobs(&mut self, reason: &str) {
        self.queue.clear();
        let Some((job_id, handle)) = &mut self.running else {
            return;
        };
        handle.kill(reason.to_owned());
        let job_id = job_id.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.running.is_some() {
            match tokio::time::timeout_at(deadline, self.updates_rx.recv()).await {
                Ok(Some((id, update))) => {
                    self.record(&id, update);
                }
                _ => {
                    tracing::warn!(job_id = %job_id, "Worker did not stop within 10 s.");
                    return;
                }
            }
        }
    }
}

async fn send(
    tx: &mpsc::Sender<pb::AgentMessage>,
    body: pb::agent_message::Body,
) -> Result<(), String> {
    tx.send(pb::AgentMessage { body: Some(body) })
        .await
        .map_err(|_| "stream closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_root_must_lie_under_an_allowed_one_without_dot_dot() {
        let allowed = [PathBuf::from("/dev/shm/fleetgate")];
        assert!(scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate")
        ));
        assert!(scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate/run-1")
        ));
        assert!(!scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate/../../etc")
        ));
        assert!(!scratch_root_allowed(
            &allowed,
            Path::new("/dev/shm/fleetgate-other")
        ));
        assert!(!scratch_root_allowed(
            &allowed,
            Path::new("dev/shm/fleetgate")
        ));
        assert!(!scratch_root_allowed(&[], Path::new("/tmp")));
    }

    #[test]
    fn an_outbox_survives_a_restart_and_forgets_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::new(dir.path(), "j1");
        assert_eq!(outbox.push(JobUpdate::Started { pid: 1 }), 1);
        assert_eq!(
            outbox.push(JobUpdate::Progress {
                phase: JobPhase::Soak,
                done: 1,
                total: 2
            }),
            2
        );
        assert!(!outbox.ack(1));
        drop(outbox);
        let (mut reloaded, skipped, _) =
            Outbox::load(&dir.path().join("j1.events.jsonl"), MAX_OUTBOX_TOTAL_BYTES).unwrap();
        assert!(!skipped.any());
        // The file keeps everything; the coordinator ignores what it already has.
        assert_eq!(reloaded.pending.len(), 2);
        assert_eq!(reloaded.next_sequence, 3);
        let sequence = reloaded.push(JobUpdate::Failed {
            phase: JobPhase::Soak,
            reason: "x".into(),
        });
        assert_eq!(sequence, 3);
        assert!(reloaded.ack(3));
        assert!(!dir.path().join("j1.events.jsonl").exists());
    }

    #[test]
    fn a_line_over_the_limit_is_consumed_but_never_held() {
        let input = b"short\n0123456789abcdef\nlast".to_vec();
        let mut reader = std::io::BufReader::with_capacity(4, &input[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 8).unwrap(),
            LineRead::Line { newline: true }
        );
        assert_eq!(line, b"short");
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 8).unwrap(),
            LineRead::TooLong { newline: true }
        );
        assert!(line.capacity() <= 16, "the long line was buffered");
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 8).unwrap(),
            LineRead::Line { newline: false }
        );
        assert_eq!(line, b"last");
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 8).unwrap(),
            LineRead::End
        );
    }

    fn event_line(sequence: u64) -> String {
        serde_json::to_string(&OutboxLine {
            sequence,
            update: JobUpdate::Started { pid: 7 },
        })
        .unwrap()
    }

    #[test]
    fn unreadable_lines_are_counted_and_a_torn_tail_is_not_glued_to_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j2.events.jsonl");
        std::fs::write(
            &path,
            format!(
                "{}\nnot json\n{{\"sequence\":0}}\n{}\n{{\"seq",
                event_line(2),
                event_line(1)
            ),
        )
        .unwrap();
        let (mut outbox, skipped, _) = Outbox::load(&path, MAX_OUTBOX_TOTAL_BYTES).unwrap();
        assert_eq!(
            skipped,
            SkippedLines {
                too_long: 0,
                unreadable: 2
            }
        );
        assert_eq!(skipped.to_string(), "2 unreadable line(s)");
        let sequences: Vec<u64> = outbox.pending.iter().map(|(s, _)| *s).collect();
        assert_eq!(sequences, [1, 2]);
        assert_eq!(outbox.push(JobUpdate::Started { pid: 8 }), 3);
        drop(outbox);
        let (reloaded, skipped, _) = Outbox::load(&path, MAX_OUTBOX_TOTAL_BYTES).unwrap();
        assert_eq!(
            skipped.unreadable, 3,
            "the torn line is now a whole unreadable line"
        );
        assert_eq!(reloaded.next_sequence, 4);

        // A whole event that lost only its newline is kept, and so is the next one.
        let path = dir.path().join("j3.events.jsonl");
        std::fs::write(&path, event_line(1)).unwrap();
        let (mut outbox, _, _) = Outbox::load(&path, MAX_OUTBOX_TOTAL_BYTES).unwrap();
        assert_eq!(outbox.push(JobUpdate::Started { pid: 9 }), 2);
        drop(outbox);
        let (reloaded, skipped, _) = Outbox::load(&path, MAX_OUTBOX_TOTAL_BYTES).unwrap();
        assert!(!skipped.any());
        assert_eq!(reloaded.pending.len(), 2);
    }

    #[test]
    fn files_that_are_not_regular_outboxes_within_the_limits_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("j-fifo.events.jsonl");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert_eq!(
            Outbox::load(&fifo, MAX_OUTBOX_TOTAL_BYTES)
                .unwrap_err()
                .to_string(),
            "a FIFO, not a regular file"
        );
        let big = dir.path().join("j-big.events.jsonl");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_OUTBOX_FILE_BYTES + 1)
            .unwrap();
        assert_eq!(
            Outbox::load(&big, MAX_OUTBOX_TOTAL_BYTES)
                .unwrap_err()
                .to_string(),
            "67108865 bytes, over the 64 MiB limit for one outbox file"
        );
        let small = dir.path().join("j-small.events.jsonl");
        std::fs::write(&small, format!("{}\n", event_line(1))).unwrap();
        assert!(matches!(
            Outbox::load(&small, 10),
            Err(OutboxSkip::OverTotal { .. })
        ));
        let link = dir.path().join("j-link.events.jsonl");
        std::os::unix::fs::symlink(&small, &link).unwrap();
        assert_eq!(
            Outbox::load(&link, MAX_OUTBOX_TOTAL_BYTES)
                .unwrap_err()
                .to_string(),
            "a symbolic link, not a regular file"
        );
        let odd = dir.path().join(".hidden.events.jsonl");
        std::fs::write(&odd, format!("{}\n", event_line(1))).unwrap();
        assert!(matches!(
            Outbox::load(&odd, MAX_OUTBOX_TOTAL_BYTES),
            Err(OutboxSkip::NotOutboxName)
        ));
        let loaded = Outbox::load_all(dir.path()).unwrap();
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["j-small"]);
        // A new job whose outbox path is a FIFO keeps its events in memory, never blocks.
        let mut outbox = Outbox::new(dir.path(), "j-fifo");
        assert_eq!(outbox.push(JobUpdate::Started { pid: 1 }), 1);
        assert!(outbox.file.is_none());
    }
}
