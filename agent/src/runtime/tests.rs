use std::fs;
use std::time::Duration;

use super::*;
use crate::collector::CollectorInfo;
use crate::scenario::equivalent_time;

/// A stand-in collector whose reads `fail_from .. fail_from + failures` (counted in reads)
/// fail with EIO, as a collector whose device goes away for a while.
#[derive(Debug)]
struct FlakyCollector {
    reads: u64,
    fail_from: u64,
    failures: u64,
}

impl Collector for FlakyCollector {
    fn info(&self) -> CollectorInfo {
        CollectorInfo {
            collector: "fleetgate.test_collector",
            backend: "test",
            sampling_source: "script",
            device_id: 0,
        }
    }

    fn read(&mut self) -> Result<Reading, CollectError> {
        let n = self.reads;
        self.reads += 1;
        if (self.fail_from..self.fail_from + self.failures).contains(&n) {
            return Err(CollectError::Io {
                source_name: "script",
                error: std::io::Error::from_raw_os_error(5),
            });
        }
        let value = 1_000 + n * 10;
        Ok(Reading {
            allocated_bytes: value,
            reserved_bytes: value,
            device_used_bytes: value,
            ..Reading::default()
        })
    }
}

fn lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn gpumemprof_cpu_writes_start_samples_and_stop_through_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrackerConfig::new(RuntimeKind::GpumemprofCpu, Some(dir.path().into()));
    let collector = crate::runtime::open_collector(RuntimeKind::GpumemprofCpu, 512, 0).unwrap();
    let mut tracker = Tracker::start(collector, config).unwrap();
    for i in 0..1_000 {
        assert!(matches!(
            tracker.emit_sample(i, equivalent_time(Duration::from_millis(100), i)),
            SampleOutcome::Sampled(v) if v > 0
        ));
    }
    let report = tracker.finish();
    let s = &report.statistics;
    assert_eq!(s.runtime, "gpumemprof_cpu");
    assert_eq!(s.sample_count, 1_000);
    assert_eq!(s.total_events, 1_002);
    assert_eq!(s.history_dropped_events, 0);
    assert_eq!(s.session_status, SessionStatus::Completed);
    assert!(s.peak_memory_bytes >= s.min_memory_bytes && s.min_memory_bytes > 0);
    assert_eq!(report.sink.as_ref().unwrap().durable_records, 1_002);
    let records = lines(dir.path());
    assert_eq!(records.len(), 1_002);
    assert_eq!(records[0]["event_type"], "start");
    assert_eq!(records[1]["context"], "operability sample 0");
    assert_eq!(records[1_000]["context"], "operability sample 999");
    assert_eq!(records[1_001]["event_type"], "stop");
    assert!(
        records
            .iter()
            .all(|r| r["collector"] == "fleetgate.cpu_tracker"
                && r["sampling_interval_ms"] == 100
                && r["device_id"] == -1
                && r["metadata"]["session_id"] == s.session_id.as_str())
    );
}

#[test]
fn a_sink_on_a_dead_disk_is_reported_with_its_directory_counts_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let faults = crate::sink::FaultInjector::new();
    let mut config = TrackerConfig::new(RuntimeKind::GpumemprofCpu, Some(dir.path().into()));
    let sink = config.sink.as_mut().unwrap();
    sink.failure_backoff = Duration::from_millis(1);
    sink.failure_backoff_max = Duration::from_millis(1);
    sink.max_queued_batches = 2;
    sink.faults = Some(faults.clone());
    faults.arm(crate::sink::FaultOp::Write, u32::MAX, 28, 0);
    let collector = crate::runtime::open_collector(RuntimeKind::GpumemprofCpu, 512, 0).unwrap();
    let mut tracker = Tracker::start(collector, config).unwrap();
    for i in 0..500 {
        tracker.emit_sample(i, Duration::ZERO);
    }
    let s = tracker.finish().statistics;
    assert_eq!(s.session_status, SessionStatus::Incomplete);
    assert_eq!((s.sink_durable_records, s.sink_dropped_records), (0, 502));
    assert!(s.sink_dropped_bytes > 502 * 100, "{}", s.sink_dropped_bytes);
    assert!(s.sink_flush_failures > 0);
    assert_eq!(s.sink_dir.as_deref(), Some(dir.path().to_str().unwrap()));
    let error = format!(
        "write {}: No space left on device (os error 28)",
        dir.path().join("segment-000001.jsonl").display()
    );
    assert_eq!(s.sink_first_error.as_deref(), Some(error.as_str()));
    // The reference's keys keep their names and come first; the new ones follow.
    let json = serde_json::to_string(&s).unwrap();
    let at = |key: &str| json.find(&format!("\"{key}\":")).unwrap();
    let order = [
        "sink_last_error",
        "session_id",
        "session_status",
        "sink_dir",
        "sink_durable_records",
        "sink_dropped_bytes",
        "sink_first_error",
    ];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{json}");
}

#[test]
fn the_event_window_is_bounded_and_counts_what_it_drops() {
    let mut config = TrackerConfig::new(RuntimeKind::GpumemprofCpu, None);
    config.max_history = 100;
    let collector = crate::runtime::open_collector(RuntimeKind::GpumemprofCpu, 512, 0).unwrap();
    let mut tracker = Tracker::start(collector, config).unwrap();
    for i in 0..1_000 {
        tracker.emit_sample(i, Duration::ZERO);
    }
    let s = tracker.finish().statistics;
    assert_eq!(s.history_retained_events, 100);
    assert_eq!(s.history_dropped_events, 902);
    // gpumemprof keeps no sample window, as the reference's CPU tracker.
    assert_eq!(s.history_retained_samples, 0);
    assert_eq!(s.history_dropped_samples, 0);
    assert_eq!(s.sample_count, 1_000);
}

#[test]
fn invalid_tracker_config_is_refused() {
    let mut config = TrackerConfig::new(RuntimeKind::GpumemprofCpu, None);
    config.max_history = 0;
    let collector = crate::runtime::open_collector(RuntimeKind::GpumemprofCpu, 512, 0).unwrap();
    let err = Tracker::start(collector, config).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid tracker config: max_history must be >= 1"
    );
}

#[test]
fn an_outage_counts_two_transitions_and_takes_no_sample_while_backing_off() {
    outage(RuntimeKind::GpumemprofCpu);
}

#[test]
fn the_tensorflow_tracker_has_the_same_outage_semantics_and_keeps_its_sample_window() {
    let s = outage(RuntimeKind::TfmemprofCpu);
    // Only the samples actually taken are in the window; none were taken while backing off.
    assert_eq!(s.history_retained_samples, 70);
    assert_eq!(s.history_dropped_samples, 0);
}

/// Runs 100 samples at 0.1 s equivalent time through an outage of two failed reads.
fn outage(kind: RuntimeKind) -> TrackerStatistics {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TrackerConfig::new(kind, Some(dir.path().into()));
    config.sampling_interval = Duration::from_millis(100);
    // Read 0 is the start event's; reads 11 and 12 (samples 10 and 20) fail.
    let collector = FlakyCollector {
        reads: 0,
        fail_from: 11,
        failures: 2,
    };
    let mut tracker = Tracker::start(collector, config).unwrap();
    let mut outcomes = Vec::new();
    for i in 0..100 {
        outcomes.push(tracker.emit_sample(i, equivalent_time(Duration::from_millis(100), i)));
    }
    // Failure at t = 1.0 s → retry at 2.0 s (sample 20) fails → retry at 4.0 s (sample 40).
    let failed: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == SampleOutcome::Failed)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, [10, 20]);
    let backing_off = outcomes
        .iter()
        .filter(|o| **o == SampleOutcome::BackingOff)
        .count();
    assert_eq!(backing_off, 9 + 19);
    let report = tracker.finish();
    let s = &report.statistics;
    assert_eq!(s.collector_failure_event_count, 2);
    assert_eq!(s.sample_count, 10 + 60);
    assert_eq!(s.collector_health_status, HealthStatus::Healthy);
    let records = lines(dir.path());
    let types: Vec<&str> = records
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 1 + 70 + 2 + 1);
    assert_eq!(types[11], "collector_degraded");
    assert_eq!(types[12], "collector_recovered");
    assert_eq!(
        records[12]["context"],
        "Collector recovered; full telemetry sampling resumed."
    );
    assert_eq!(records[13]["context"], "operability sample 40");
    assert_eq!(records[11]["metadata"]["collector_retry_delay_s"], 1.0);
    assert_eq!(
        records[12]["metadata"]["collector_previous_failure_count"],
        2
    );
    report.statistics
}
