//! The on-disk outbox: each job's numbered events, kept in memory and in an append-only file
//! under the state directory until the coordinator acknowledges them, and read back (within
//! bounds, without blocking on odd files) when the agent starts again.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use fleetgate_common::ids::is_safe_id;
use fleetgate_common::job::JobUpdate;

use super::MIB;

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
pub(super) fn open_nonblocking(
    path: &Path,
    flags: rustix::fs::OFlags,
) -> std::io::Result<std::fs::File> {
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
pub(super) struct Outbox {
    /// The job.
    pub(super) job_id: String,
    /// The sequence number the next event gets.
    pub(super) next_sequence: u64,
    acked: u64,
    /// Events not yet acknowledged, in sequence order.
    pub(super) pending: VecDeque<(u64, JobUpdate)>,
    terminal: bool,
    file: Option<std::fs::File>,
    /// The file that keeps the events.
    pub(super) path: PathBuf,
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
    /// An empty outbox for `job_id`, whose file (created at the first event) is in `dir`.
    pub(super) fn new(dir: &Path, job_id: &str) -> Self {
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
    pub(super) fn load_all(dir: &Path) -> std::io::Result<BTreeMap<String, Outbox>> {
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

    /// Numbers `update`, appends it to the file (kept in memory if the file cannot be
    /// written) and keeps it until acknowledged; returns its sequence number.
    pub(super) fn push(&mut self, update: JobUpdate) -> u64 {
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
    pub(super) fn ack(&mut self, sequence: u64) -> bool {
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
    pub(super) fn delete(&mut self) {
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

#[cfg(test)]
mod tests {
    use fleetgate_common::job::JobPhase;

    use super::*;

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
