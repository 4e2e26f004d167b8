//! The sink's on-disk layout: segment names, the atomically rewritten `manifest.json`, and
//! crash recovery at startup.
//!
//! Recovery trusts the files over the manifest: the manifest is a ledger and an index, the
//! segments hold the data. A segment listed in the manifest but missing on disk is dropped from
//! the list; a segment on disk that the manifest does not know is adopted as closed; counts are
//! re-read from a file whenever its size differs from the manifest's (the manifest can lag the
//! files by one group when a process dies between the fsync and the manifest rewrite). A torn
//! tail — bytes after the last newline, which only an interrupted write can leave — is moved to
//! `<segment>.torn` and cut from the segment, so every complete line stays and no half line is
//! ever served. Running sessions become `interrupted`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
const MANIFEST_TMP: &str = "manifest.tmp";
/// `format` of our manifest.
pub const MANIFEST_FORMAT: &str = "fleetgate.append_only_telemetry_sink";
/// `schema_version` of our manifest.
pub(super) const MANIFEST_SCHEMA_VERSION: u32 = 2;
const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".jsonl";
/// Suffix of the quarantine file that receives a segment's torn tail.
pub const TORN_SUFFIX: &str = ".torn";

/// Status of a telemetry session in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// The session's process is (or was, until it died) writing.
    Running,
    /// Closed normally with every record written.
    Completed,
    /// Found running at startup: its process died.
    Interrupted,
    /// Closed, but records were dropped or the final write failed.
    Incomplete,
}

impl SessionStatus {
    /// The status as written to the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Running => "running",
            SessionStatus::Completed => "completed",
            SessionStatus::Interrupted => "interrupted",
            SessionStatus::Incomplete => "incomplete",
        }
    }
}

/// One session in the manifest's ledger. Sessions are never removed, even when retention has
/// pruned all their segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session id (UUID v4).
    pub session_id: String,
    /// Status.
    pub status: SessionStatus,
    /// Start, nanoseconds since the Unix epoch.
    pub started_at_ns: u64,
    /// End, once closed or found interrupted.
    pub ended_at_ns: Option<u64>,
    /// Host name.
    pub host: String,
    /// Writing process.
    pub pid: u32,
    /// Launcher job id.
    pub job_id: Option<String>,
    /// Global rank.
    pub rank: u32,
    /// Rank on the host.
    pub local_rank: u32,
    /// Number of ranks.
    pub world_size: u32,
    /// What opened the session (`fleetgate.gpumemprof_cpu`, …).
    pub source: String,
}

/// One segment in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// `segment-NNNNNN.jsonl`.
    pub filename: String,
    /// Records (lines) in the segment.
    pub event_count: u64,
    /// Bytes in the segment.
    pub size_bytes: u64,
    /// Closed segments are never written again and may be pruned.
    pub closed: bool,
    /// The session that wrote it (each segment belongs to exactly one session).
    pub session_id: Option<String>,
}

impl SegmentEntry {
    /// Numeric index of the segment.
    pub fn index(&self) -> u64 {
        segment_index(&self.filename).unwrap_or(0)
    }
}

/// `segment-NNNNNN.jsonl` for `index`.
pub fn segment_filename(index: u64) -> String {
    format!("{SEGMENT_PREFIX}{index:06}{SEGMENT_SUFFIX}")
}

/// The index of a segment file name, or `None` for anything else (including names that try
/// to leave the directory).
pub fn segment_index(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Serialize)]
struct ManifestOut<'a> {
    schema_version: u32,
    format: &'a str,
    sessions: &'a [SessionSummary],
    segments: &'a [SegmentEntry],
}

/// Rewrites `manifest.json` atomically (write `manifest.tmp`, rename over). With `durable`, the
/// temporary file and the directory are fsynced too (done at session start and close, not on
/// every group: recovery re-derives counts from the files, so a lagging manifest loses nothing).
pub(super) fn write_manifest(
    dir: &Path,
    sessions: &[SessionSummary],
    segments: &[SegmentEntry],
    durable: bool,
) -> io::Result<()> {
    let mut sorted: Vec<&SessionSummary> = sessions.iter().collect();
    sorted.sort_by(|a, b| (a.started_at_ns, &a.session_id).cmp(&(b.started_at_ns, &b.session_id)));
    let sessions: Vec<SessionSummary> = sorted.into_iter().cloned().collect();
    let mut bytes = serde_json::to_vec_pretty(&ManifestOut {
        schema_version: MANIFEST_SCHEMA_VERSION,
        format: MANIFEST_FORMAT,
        sessions: &sessions,
        segments,
    })
    .map_err(io::Error::other)?;
    bytes.push(b'\n');
    let tmp = dir.join(MANIFEST_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What startup recovery found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// The manifest was missing, unreadable or not ours; the segment list was rebuilt from disk.
    pub manifest_rebuilt: bool,
    /// Segments whose torn tail was cut off and quarantined.
    pub torn_tails_repaired: u64,
    /// Bytes moved to `.torn` quarantine files.
    pub torn_bytes_quarantined: u64,
    /// Manifest entries whose file no longer exists.
    pub missing_segments_dropped: u64,
    /// Segment files the manifest did not list.
    pub untracked_segments_adopted: u64,
    /// Segments whose counts were re-read because the file differed from the manifest.
    pub segments_recounted: u64,
    /// Sessions found `running` and marked `interrupted`.
    pub interrupted_sessions: u64,
}

/// The state a sink starts from.
#[derive(Debug)]
pub(super) struct Recovered {
    /// Session ledger.
    pub(super) sessions: Vec<SessionSummary>,
    /// Segments in index order, all closed.
    pub(super) segments: Vec<SegmentEntry>,
    /// Index for the next new segment.
    pub(super) next_index: u64,
    /// What was repaired.
    pub(super) report: RecoveryReport,
}

struct ManifestIn {
    sessions: Vec<SessionSummary>,
    segments: Vec<SegmentEntry>,
}

/// Lenient manifest read: anything unreadable counts as "no manifest"; malformed entries are
/// skipped one by one.
fn read_manifest(dir: &Path) -> Option<ManifestIn> {
    let bytes = fs::read(dir.join(MANIFEST_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let object = value.as_object()?;
    let sessions = object
        .get("sessions")
        .and_then(|s| s.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|s| serde_json::from_value::<SessionSummary>(s.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let segments = object
        .get("segments")
        .and_then(|s| s.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|s| serde_json::from_value::<SegmentEntry>(s.clone()).ok())
                .filter(|s| segment_index(&s.filename).is_some())
                .collect()
        })
        .unwrap_or_default();
    Some(ManifestIn { sessions, segments })
}

/// Recovers the sink directory `dir` (which exists) at startup. `now_ns` is the end time given
/// to interrupted sessions.
pub(super) fn recover(dir: &Path, now_ns: u64) -> io::Result<Recovered> {
    let mut report = RecoveryReport::default();
    let manifest = read_manifest(dir);
    let manifest_missing = manifest.is_none();
    let ManifestIn {
        mut sessions,
        segments: listed,
    } = manifest.unwrap_or(ManifestIn {
        sessions: Vec::new(),
        segments: Vec::new(),
    });

    let mut on_disk: Vec<(u64, PathBuf, String)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = segment_index(name)
            && entry.file_type()?.is_file()
        {
            on_disk.push((index, entry.path(), name.to_owned()));
        }
    }
    on_disk.sort_by_key(|(index, _, _)| *index);

    // Nothing to rebuild in a fresh directory.
    report.manifest_rebuilt =
        manifest_missing && (!on_disk.is_empty() || dir.join(MANIFEST_FILE).exists());
    let mut segments = Vec::with_capacity(on_disk.len());
    for (_, path, name) in &on_disk {
        let torn = repair_torn_tail(path)?;
        if torn > 0 {
            report.torn_tails_repaired += 1;
            report.torn_bytes_quarantined += torn;
        }
        let size = fs::metadata(path)?.len();
        let known = listed.iter().find(|s| &s.filename == name);
        let (event_count, session_id) = match known {
            Some(entry) if entry.size_bytes == size && torn == 0 => {
                (entry.event_count, entry.session_id.clone())
            }
            Some(entry) => {
                report.segments_recounted += 1;
                (count_lines(path)?, entry.session_id.clone())
            }
            None => {
                report.untracked_segments_adopted += 1;
                (count_lines(path)?, None)
            }
        };
        segments.push(SegmentEntry {
            filename: name.clone(),
            event_count,
            size_bytes: size,
            closed: true,
            session_id,
        });
    }
    report.missing_segments_dropped = listed
        .iter()
        .filter(|l| !on_disk.iter().any(|(_, _, name)| name == &l.filename))
        .count() as u64;

    for session in &mut sessions {
        if session.status == SessionStatus::Running {
            session.status = SessionStatus::Interrupted;
            session.ended_at_ns = Some(now_ns);
            report.interrupted_sessions += 1;
        }
    }
    let next_index = on_disk
        .last()
        .map(|(index, _, _)| index + 1)
        .unwrap_or(1)
        .max(listed.iter().map(|s| s.index() + 1).max().unwrap_or(1));
    Ok(Recovered {
        sessions,
        segments,
        next_index,
        report,
    })
}

/// Cuts everything after the last newline of `path` into `<path>.torn`; returns the bytes moved.
fn repair_torn_tail(path: &Path) -> io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    // Scan backwards in chunks for the last newline.
    let mut keep = 0u64;
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(pos) = buf.iter().rposition(|&b| b == b'\n') {
            keep = start + pos as u64 + 1;
            break;
        }
        end = start;
    }
    let mut tail = Vec::with_capacity((len - keep) as usize);
    file.seek(SeekFrom::Start(keep))?;
    file.read_to_end(&mut tail)?;
    let mut quarantine_name = path.as_os_str().to_owned();
    quarantine_name.push(TORN_SUFFIX);
    let mut quarantine = OpenOptions::new()
        .create(true)
        .append(true)
        .open(PathBuf::from(quarantine_name))?;
    quarantine.write_all(&tail)?;
    quarantine.write_all(b"\n")?;
    quarantine.sync_all()?;
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

/// Non-blank lines of a file, streamed with a fixed buffer.
fn count_lines(path: &Path) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    let mut line_has_bytes = false;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                if line_has_bytes {
                    lines += 1;
                }
                line_has_bytes = false;
            } else {
                line_has_bytes = true;
            }
        }
    }
    Ok(lines + u64::from(line_has_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        assert_eq!(segment_filename(7), "segment-000007.jsonl");
        assert_eq!(segment_index("segment-000007.jsonl"), Some(7));
        assert_eq!(segment_index("segment-1234567.jsonl"), Some(1_234_567));
        assert_eq!(segment_index("segment-12.jsonl"), None);
        assert_eq!(segment_index("segment-../../x.jsonl"), None);
        assert_eq!(segment_index("segment-000007.jsonl.torn"), None);
    }

    #[test]
    fn torn_tail_is_quarantined_and_complete_lines_stay() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join(segment_filename(1));
        fs::write(&seg, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let rec = recover(dir.path(), 5).unwrap();
        assert_eq!(fs::read(&seg).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(
            fs::read(dir.path().join("segment-000001.jsonl.torn")).unwrap(),
            b"{\"a\":\n"
        );
        assert_eq!(rec.report.torn_tails_repaired, 1);
        assert_eq!(rec.report.torn_bytes_quarantined, 5);
        assert!(rec.report.manifest_rebuilt);
        assert_eq!(rec.segments[0].event_count, 2);
        assert_eq!(rec.next_index, 2);
    }

    #[test]
    fn files_win_over_a_lagging_or_wrong_manifest() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(segment_filename(2)), b"x\ny\nz\n").unwrap();
        fs::write(dir.path().join(segment_filename(3)), b"q\n").unwrap();
        let session = SessionSummary {
            session_id: "s".into(),
            status: SessionStatus::Running,
            started_at_ns: 1,
            ended_at_ns: None,
            host: "h".into(),
            pid: 1,
            job_id: None,
            rank: 0,
            local_rank: 0,
            world_size: 1,
            source: "test".into(),
        };
        let listed = vec![
            SegmentEntry {
                filename: segment_filename(1),
                event_count: 9,
                size_bytes: 9,
                closed: true,
                session_id: Some("s".into()),
            },
            SegmentEntry {
                filename: segment_filename(2),
                event_count: 1,
                size_bytes: 2,
                closed: false,
                session_id: Some("s".into()),
            },
        ];
        write_manifest(dir.path(), &[session], &listed, true).unwrap();
        let rec = recover(dir.path(), 99).unwrap();
        assert_eq!(rec.report.missing_segments_dropped, 1);
        assert_eq!(rec.report.untracked_segments_adopted, 1);
        assert_eq!(rec.report.segments_recounted, 1);
        assert_eq!(rec.report.interrupted_sessions, 1);
        assert_eq!(rec.sessions[0].status, SessionStatus::Interrupted);
        assert_eq!(rec.sessions[0].ended_at_ns, Some(99));
        let counts: Vec<(u64, u64, bool)> = rec
            .segments
            .iter()
            .map(|s| (s.index(), s.event_count, s.closed))
            .collect();
        assert_eq!(counts, [(2, 3, true), (3, 1, true)]);
        assert_eq!(rec.segments[0].session_id.as_deref(), Some("s"));
        assert_eq!(rec.next_index, 4);
    }

    #[test]
    fn garbage_manifest_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MANIFEST_FILE), b"[1,2").unwrap();
        let rec = recover(dir.path(), 1).unwrap();
        assert!(rec.report.manifest_rebuilt);
        assert!(rec.segments.is_empty());
        assert_eq!(rec.next_index, 1);
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(
            recover(fresh.path(), 1).unwrap().report,
            RecoveryReport::default()
        );
    }
}
