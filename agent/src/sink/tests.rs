use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use proptest::prelude::*;

use super::*;

fn spec() -> SessionSpec {
    SessionSpec {
        host: "test-host".into(),
        pid: std::process::id(),
        job_id: None,
        rank: 0,
        local_rank: 0,
        world_size: 1,
        source: "test".into(),
    }
}

/// Appends record `id` as a small JSON line padded to `pad` extra bytes.
fn append(sink: &mut TelemetrySink, id: u64, pad: usize) {
    sink.append_with(|out| {
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        out.extend_from_slice(b",\"pad\":\"");
        out.resize(out.len() + pad, b'x');
        out.extend_from_slice(b"\"}\n");
    });
}

#[derive(Debug, serde::Deserialize)]
struct ManifestView {
    schema_version: u32,
    format: String,
    sessions: Vec<SessionSummary>,
    segments: Vec<SegmentEntry>,
}

fn manifest(dir: &Path) -> ManifestView {
    serde_json::from_slice(&fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap()
}

/// Every id on disk, in file order; panics on any line that is not a complete record.
fn ids_on_disk(dir: &Path) -> Vec<u64> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| segment_index(n).is_some())
        .collect();
    names.sort();
    let mut ids = Vec::new();
    for name in names {
        let text = fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: bad line {line:?}: {e}"));
            ids.push(v["id"].as_u64().unwrap());
        }
    }
    ids
}

/// The manifest lists exactly the segment files on disk, with their real sizes and line counts.
fn assert_manifest_matches_files(dir: &Path) {
    let m = manifest(dir);
    assert_eq!(m.schema_version, 2);
    assert_eq!(m.format, MANIFEST_FORMAT);
    let mut on_disk: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| segment_index(n).is_some())
        .collect();
    on_disk.sort();
    let listed: Vec<String> = m.segments.iter().map(|s| s.filename.clone()).collect();
    assert_eq!(listed, on_disk);
    for s in &m.segments {
        let bytes = fs::read(dir.join(&s.filename)).unwrap();
        assert_eq!(s.size_bytes, bytes.len() as u64, "{}", s.filename);
        assert_eq!(
            s.event_count,
            bytes.iter().filter(|&&b| b == b'\n').count() as u64,
            "{}",
            s.filename
        );
    }
}

#[test]
fn config_errors_name_the_field() {
    let mut c = SinkConfig::new("/tmp/x");
    c.flush_every_events = 0;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "invalid telemetry sink config: flush_every_events must be >= 1"
    );
    let mut c = SinkConfig::new("/tmp/x");
    c.retention_max_total_bytes = c.rollover_max_bytes - 1;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "invalid telemetry sink config: retention_max_total_bytes must be >= rollover_max_bytes"
    );
    let mut c = SinkConfig::new("/tmp/x");
    c.flush_every = Duration::ZERO;
    assert!(matches!(
        c.validate(),
        Err(SinkError::InvalidConfig {
            field: "flush_every_seconds",
            ..
        })
    ));
    let mut c = SinkConfig::new("/tmp/x");
    c.failure_backoff_max = Duration::from_millis(1);
    assert!(c.validate().is_err());
}

#[test]
fn rollover_and_retention_follow_the_reference_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SinkConfig::new(dir.path());
    config.rollover_max_events = 200;
    config.retention_max_files = 3;
    let mut sink = TelemetrySink::open(config, spec()).unwrap();
    for id in 0..1_002 {
        append(&mut sink, id, 10);
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    // 1,002 records in 50-record batches: segments of 200 roll over 5 times, the sixth holds
    // the last 2 records and is closed at close (not a rollover); 6 − 3 = 3 are pruned.
    assert_eq!(stats.rollover_count, 5);
    assert_eq!(stats.pruned_segment_count, 3);
    assert_eq!(stats.final_retained_files, 3);
    assert_eq!(stats.durable_records, 1_002);
    assert_eq!(stats.buffered_records, 0);
    assert_eq!(stats.flush_failures, 0);
    let ids = ids_on_disk(dir.path());
    assert_eq!(ids, (600..1_002).collect::<Vec<_>>());
    let m = manifest(dir.path());
    assert!(m.segments.iter().all(|s| s.closed));
    assert_eq!(m.sessions.len(), 1);
    assert_eq!(m.sessions[0].status, SessionStatus::Completed);
    assert!(m.sessions[0].ended_at_ns.is_some());
    assert_eq!(stats.pruned_bytes + stats.final_retained_bytes, {
        let line = |id: u64| (format!("{{\"id\":{id},\"pad\":\"\"}}\n").len() + 10) as u64;
        (0..1_002).map(line).sum::<u64>()
    });
    assert_manifest_matches_files(dir.path());
}

#[test]
fn an_oversized_segment_is_pruned_right_after_its_rollover() {
    // The harness's forced-churn case: one 50-record batch exceeds both the 8 KiB rollover and
    // the 24 KiB retention limit, so each batch is rolled and immediately pruned.
    let dir = tempfile::tempdir().unwrap();
    let mut config = SinkConfig::new(dir.path());
    config.rollover_max_bytes = 8_192;
    config.rollover_max_events = 200;
    config.retention_max_files = 2;
    config.retention_max_total_bytes = 24_576;
    let mut sink = TelemetrySink::open(config, spec()).unwrap();
    for id in 0..150 {
        append(&mut sink, id, 620);
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    assert_eq!(stats.rollover_count, 3);
    assert_eq!(stats.pruned_segment_count, 3);
    assert_eq!(stats.final_retained_files, 0);
    assert!(stats.final_retained_bytes <= 24_576);
}

#[test]
fn an_idle_batch_is_written_after_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SinkConfig::new(dir.path());
    config.flush_every = Duration::from_millis(50);
    let mut sink = TelemetrySink::open(config, spec()).unwrap();
    append(&mut sink, 1, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.stats().durable_records < 1 {
        assert!(Instant::now() < deadline, "idle batch never written");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ids_on_disk(dir.path()), [1]);
    sink.close(SessionStatus::Completed).unwrap();
}

#[test]
fn samples_are_encoded_by_the_writer_in_order_with_the_lines_around_them() {
    use crate::health::HealthSnapshot;
    use crate::record::{HeaderSpec, Identity, Reading, RecordHeader, SampleRecord};

    let dir = tempfile::tempdir().unwrap();
    let mut config = SinkConfig::new(dir.path());
    // Batches of 7 records, so batch boundaries fall between lines and samples alike.
    config.flush_every_events = 7;
    config.rollover_max_events = 30;
    let header = RecordHeader::new(&HeaderSpec {
        collector: "fleetgate.cpu_tracker",
        sampling_interval_ms: 100,
        pid: 42,
        host: "test-host",
        device_id: -1,
        session_id: "s-1",
        backend: "cpu",
        sampling_source: "/proc/self/statm",
        identity: &Identity::default(),
    });
    let mut sink = TelemetrySink::open(config, spec()).unwrap();
    sink.set_record_header(header.clone());
    let mut expected = Vec::new();
    for i in 0..100u64 {
        if i % 9 == 0 {
            append(&mut sink, i, 5);
            expected.extend_from_slice(format!("{{\"id\":{i},\"pad\":\"xxxxx\"}}\n").as_bytes());
        } else {
            let reading = Reading {
                allocated_bytes: i << 12,
                reserved_bytes: i << 12,
                device_used_bytes: i << 12,
                ..Reading::default()
            };
            let health = HealthSnapshot::healthy();
            let sample = SampleRecord::new(1_000 + i, &reading, 4096, i, &health).unwrap();
            sink.append_sample(&sample);
            sample.encode(&header, &mut expected);
        }
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    assert_eq!(stats.durable_records, 100);
    let mut on_disk = Vec::new();
    for segment in manifest(dir.path()).segments {
        on_disk.extend(fs::read(dir.path().join(&segment.filename)).unwrap());
    }
    assert_eq!(
        String::from_utf8(on_disk).unwrap(),
        String::from_utf8(expected).unwrap()
    );
    assert_manifest_matches_files(dir.path());
}

#[test]
fn a_second_session_continues_the_ledger_and_the_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = TelemetrySink::open(SinkConfig::new(dir.path()), spec()).unwrap();
    append(&mut sink, 1, 0);
    let first = sink.session_id().to_owned();
    sink.close(SessionStatus::Completed).unwrap();
    let mut sink = TelemetrySink::open(SinkConfig::new(dir.path()), spec()).unwrap();
    append(&mut sink, 2, 0);
    assert_eq!(sink.recovery(), &RecoveryReport::default());
    sink.close(SessionStatus::Completed).unwrap();
    let m = manifest(dir.path());
    assert_eq!(m.sessions.len(), 2);
    assert_eq!(m.sessions[0].session_id, first);
    let names: Vec<&str> = m.segments.iter().map(|s| s.filename.as_str()).collect();
    assert_eq!(names, ["segment-000001.jsonl", "segment-000002.jsonl"]);
    assert_eq!(m.segments[0].session_id.as_deref(), Some(first.as_str()));
    assert_eq!(ids_on_disk(dir.path()), [1, 2]);
}

fn failing_config(dir: &Path, faults: &FaultInjector) -> SinkConfig {
    let mut config = SinkConfig::new(dir);
    config.failure_backoff = Duration::from_millis(5);
    config.failure_backoff_max = Duration::from_millis(20);
    config.faults = Some(faults.clone());
    config
}

#[test]
fn enospc_after_a_partial_write_is_cut_back_and_retried_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let mut sink = TelemetrySink::open(failing_config(dir.path(), &faults), spec()).unwrap();
    for id in 0..100 {
        append(&mut sink, id, 20);
    }
    // Three writes in a row fail after writing 37 bytes each (a full disk mid-line).
    faults.arm(FaultOp::Write, 3, 28, 37);
    for id in 100..400 {
        append(&mut sink, id, 20);
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    assert_eq!(faults.injected(), 3);
    assert_eq!(stats.flush_failures, 3);
    assert_eq!(stats.consecutive_flush_failures, 0);
    assert!(
        stats
            .last_flush_error
            .as_deref()
            .unwrap()
            .contains("No space left on device"),
        "{stats:?}"
    );
    assert_eq!(stats.dropped_records, 0);
    assert_eq!(ids_on_disk(dir.path()), (0..400).collect::<Vec<_>>());
    assert_manifest_matches_files(dir.path());
    assert_eq!(
        manifest(dir.path()).sessions[0].status,
        SessionStatus::Completed
    );
}

#[test]
fn the_first_error_is_kept_while_later_ones_replace_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let mut sink = TelemetrySink::open(failing_config(dir.path(), &faults), spec()).unwrap();
    assert_eq!(sink.stats().first_flush_error, None);
    // A full disk on the first batch's write; once that has failed, an I/O error on the
    // retry's fsync (the injector holds one errno at a time).
    faults.arm(FaultOp::Write, 1, 28, 0);
    for id in 0..50 {
        append(&mut sink, id, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while faults.injected() < 1 {
        assert!(
            Instant::now() < deadline,
            "the first write was never attempted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    faults.arm(FaultOp::Sync, 1, 5, 0);
    for id in 50..200 {
        append(&mut sink, id, 0);
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    assert_eq!(faults.injected(), 2);
    let segment = dir.path().join("segment-000001.jsonl");
    assert_eq!(
        stats.first_flush_error.as_deref(),
        Some(
            format!(
                "write {}: No space left on device (os error 28)",
                segment.display()
            )
            .as_str()
        )
    );
    assert_eq!(
        stats.last_flush_error.as_deref(),
        Some(
            format!(
                "sync {}: Input/output error (os error 5)",
                segment.display()
            )
            .as_str()
        )
    );
    assert_eq!((stats.dropped_records, stats.durable_records), (0, 200));
}

#[test]
fn a_failed_cut_back_is_finished_before_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let mut sink = TelemetrySink::open(failing_config(dir.path(), &faults), spec()).unwrap();
    for id in 0..50 {
        append(&mut sink, id, 0);
    }
    // EIO on the fsync, then the cut-back fails too: the partial data stays on disk until
    // the segment is reopened and cut before the retry.
    faults.arm(FaultOp::Truncate, 1, 5, 0);
    faults.arm(FaultOp::Sync, 1, 5, 0);
    for id in 50..200 {
        append(&mut sink, id, 0);
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    assert_eq!(faults.injected(), 2);
    assert!(stats.flush_failures >= 1);
    assert_eq!(ids_on_disk(dir.path()), (0..200).collect::<Vec<_>>());
    assert_manifest_matches_files(dir.path());
}

#[test]
fn a_dead_disk_drops_and_counts_instead_of_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let mut config = failing_config(dir.path(), &faults);
    config.max_queued_batches = 4;
    let mut sink = TelemetrySink::open(config, spec()).unwrap();
    faults.arm(FaultOp::Write, u32::MAX, 5, 11);
    for id in 0..2_000 {
        append(&mut sink, id, 0);
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    assert!(stats.flush_failures >= 1);
    assert_eq!(stats.durable_records, 0);
    assert_eq!(stats.dropped_records, 2_000);
    assert_eq!(stats.buffered_records, 0);
    assert!(ids_on_disk(dir.path()).is_empty());
    assert_eq!(
        manifest(dir.path()).sessions[0].status,
        SessionStatus::Incomplete
    );
}

#[test]
fn a_disk_that_comes_back_keeps_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let mut sink = TelemetrySink::open(failing_config(dir.path(), &faults), spec()).unwrap();
    faults.arm(FaultOp::Write, 5, 5, 3);
    for id in 0..500 {
        append(&mut sink, id, 0);
        if id % 100 == 0 {
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    let stats = sink.close(SessionStatus::Completed).unwrap();
    let ids = ids_on_disk(dir.path());
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicated records");
    assert_eq!(ids, (0..500).collect::<Vec<_>>());
    assert_eq!(stats.dropped_records, 0);
    assert_eq!(stats.flush_failures, 5);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// After any sequence of appends and flushes, the retained segments stay within the
    /// retention limits unless only the (never deleted) last segment is left; what is on disk
    /// is exactly the newest records, each once, and the manifest agrees with the files.
    #[test]
    fn retention_limits_hold_for_any_sequence(
        ops in proptest::collection::vec((0usize..400, any::<bool>()), 1..120),
        rollover_events in 1u64..40,
        rollover_bytes in 64u64..2_048,
        max_files in 1usize..5,
        extra_bytes in 0u64..4_096,
        flush_every_events in 1usize..20,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SinkConfig::new(dir.path());
        config.flush_every_events = flush_every_events;
        config.rollover_max_events = rollover_events;
        config.rollover_max_bytes = rollover_bytes;
        config.retention_max_files = max_files;
        config.retention_max_total_bytes = rollover_bytes + extra_bytes;
        let max_bytes = config.retention_max_total_bytes;
        let mut sink = TelemetrySink::open(config, spec()).unwrap();
        let mut id = 0u64;
        for (pad, flush) in &ops {
            append(&mut sink, id, *pad);
            id += 1;
            if *flush {
                sink.flush();
            }
        }
        let stats = sink.close(SessionStatus::Completed).unwrap();
        let m = manifest(dir.path());
        let files = m.segments.len();
        let bytes: u64 = m.segments.iter().map(|s| s.size_bytes).sum();
        prop_assert!(
            (files <= max_files && bytes <= max_bytes) || files == 1,
            "retained {files} files / {bytes} bytes over {max_files} / {max_bytes}"
        );
        prop_assert_eq!(stats.final_retained_files, files as u64);
        prop_assert_eq!(stats.final_retained_bytes, bytes);
        prop_assert_eq!(stats.dropped_records, 0);
        prop_assert_eq!(stats.durable_records, id);
        let ids = ids_on_disk(dir.path());
        let first = id - ids.len() as u64;
        prop_assert_eq!(ids, (first..id).collect::<Vec<_>>());
        assert_manifest_matches_files(dir.path());
    }
}
