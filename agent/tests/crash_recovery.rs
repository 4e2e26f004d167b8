//! A soak process killed with SIGKILL mid-run, then its sink reopened: every record of every
//! completed flush is still there and readable, the manifest agrees with the files, and no
//! half-written line is served.

mod support;

use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use fleetgate_agent::sink::{
    MANIFEST_FILE, SegmentEntry, SessionSpec, SessionStatus, SessionSummary, SinkConfig,
    TelemetrySink, segment_index,
};
use support::{Process, agent_command};

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    sessions: Vec<SessionSummary>,
    segments: Vec<SegmentEntry>,
}

fn read_manifest(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap()
}

#[test]
fn sigkill_mid_soak_loses_no_durable_record() {
    let work = tempfile::tempdir().unwrap();
    let artifacts = work.path().join("soak");
    let mut command = agent_command();
    command
        .args(["soak", "--samples", "50000000", "--progress-every", "2000"])
        .args(["--rollover-max-events", "5000"])
        .args(["--retention-max-files", "100000"])
        .args(["--retention-max-total-bytes", "100000000000"])
        .arg("--artifact-dir")
        .arg(&artifacts);
    let mut child = Process::spawn(command);
    // Read progress until the child says at least 40,000 records are durable.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut durable_before_kill = 0u64;
    while durable_before_kill < 40_000 {
        let line = match child.next_line(deadline) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("soak made no progress"),
            Err(RecvTimeoutError::Disconnected) => panic!("soak ended early"),
        };
        if let Some(v) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("durable_records="))
        {
            durable_before_kill = v.parse().unwrap();
        }
    }
    child.kill(); // SIGKILL

    let sink_dir = artifacts.join("sink");
    let before = read_manifest(&sink_dir);
    assert_eq!(before.sessions.len(), 1);
    assert_eq!(before.sessions[0].status, SessionStatus::Running);

    // Reopening runs recovery.
    let sink = TelemetrySink::open(
        SinkConfig::new(&sink_dir),
        SessionSpec {
            host: "test".into(),
            pid: std::process::id(),
            job_id: None,
            rank: 0,
            local_rank: 0,
            world_size: 1,
            source: "test".into(),
        },
    )
    .unwrap();
    sink.close(SessionStatus::Completed).unwrap();
    let after = read_manifest(&sink_dir);
    assert_eq!(after.sessions[0].status, SessionStatus::Interrupted);
    assert!(after.sessions[0].ended_at_ns.is_some());

    // The manifest agrees with the files, and every line is a complete record.
    let mut files: Vec<String> = std::fs::read_dir(&sink_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| segment_index(n).is_some())
        .collect();
    files.sort();
    let listed: Vec<String> = after.segments.iter().map(|s| s.filename.clone()).collect();
    assert_eq!(listed, files);
    let mut contexts = Vec::new();
    for segment in &after.segments {
        let bytes = std::fs::read(sink_dir.join(&segment.filename)).unwrap();
        assert_eq!(segment.size_bytes, bytes.len() as u64);
        assert!(segment.closed);
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "half line served"
        );
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(segment.event_count, text.lines().count() as u64);
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}: unreadable record {line:?}: {e}", segment.filename)
            });
            contexts.push(record["context"].as_str().unwrap().to_owned());
        }
    }
    // start, then samples 0, 1, 2, … with no gap and no duplicate.
    assert_eq!(contexts[0], "Memory tracking started");
    for (i, context) in contexts[1..].iter().enumerate() {
        assert_eq!(context, &format!("operability sample {i}"));
    }
    assert!(
        contexts.len() as u64 >= durable_before_kill,
        "{} records on disk, {durable_before_kill} were durable before the kill",
        contexts.len()
    );
}
