use std::sync::atomic::AtomicBool;

use fleetgate_common::report::OverheadMetrics;

use super::*;
use crate::runtime::RuntimeKind;

fn trial(runtime: f64, cpu: f64) -> OverheadMetrics {
    OverheadMetrics {
        runtime_overhead_pct: runtime,
        cpu_overhead_pct: cpu,
        artifact_growth_bytes: 0,
    }
}

#[test]
fn the_25th_percentile_trial_is_picked() {
    let trials = [100.0, 120.0, 200.0, 800.0, 1000.0].map(|r| trial(r, 0.0));
    assert_eq!(select_trial(&trials), 1);
    let shuffled = [800.0, 1000.0, 120.0, 100.0, 200.0].map(|r| trial(r, 0.0));
    assert_eq!(
        shuffled[select_trial(&shuffled)].runtime_overhead_pct,
        120.0
    );
    // Ties on runtime overhead are broken by CPU overhead, then by trial order.
    let tied = [
        trial(5.0, 3.0),
        trial(5.0, 1.0),
        trial(5.0, 2.0),
        trial(9.0, 0.0),
        trial(9.0, 0.0),
    ];
    assert_eq!(select_trial(&tied), 2);
    assert_eq!(select_trial(&[trial(1.0, 1.0)]), 0);
}

#[test]
fn percentages_keep_their_sign() {
    assert_eq!(pct_overhead(100.0, 98.0), -2.0);
    assert_eq!(pct_overhead(100.0, 150.0), 50.0);
    assert_eq!(pct_overhead(0.0, 0.0), 0.0);
    assert_eq!(pct_overhead(0.0, 1.0), f64::INFINITY);
}

fn quiet_hooks<'a>(progress: &'a mut dyn FnMut(Progress), cancel: &'a AtomicBool) -> Hooks<'a> {
    Hooks::new(progress, cancel)
}

fn tracker() -> TrackerConfig {
    TrackerConfig::new(RuntimeKind::GpumemprofCpu, Some(PathBuf::new()))
}

#[test]
fn overhead_trials_live_in_the_scratch_root_and_only_the_pick_survives() {
    let work = tempfile::tempdir().unwrap();
    let scratch = work.path().join("scratch");
    let runtime_dir = work.path().join("artifacts/gpumemprof_cpu");
    let spec = OverheadSpec {
        tracker: tracker(),
        workload: Workload {
            iterations: 40,
            allocation_kb: 64,
        },
        workload_kind: fleetgate_common::config::WorkloadKind::Reference,
        tensorflow_device: "/CPU:0",
        runtime_dir: runtime_dir.clone(),
        scratch_dir: Some(scratch.join("gpumemprof_cpu")),
        samples: 40,
    };
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let mut progress = |p: Progress| seen.push(p.done);
    let block = run_overhead(
        &spec,
        || RuntimeKind::GpumemprofCpu.open_collector(512, 0),
        &mut quiet_hooks(&mut progress, &cancel),
    )
    .unwrap();
    assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
    assert_eq!(block.trial_count, 5);
    assert_eq!(block.trial_metrics.len(), 5);
    assert!((1..=5).contains(&block.selected_trial));
    assert_eq!(
        block.scratch_root.as_deref(),
        Some(scratch.to_str().unwrap())
    );
    // Neither trial root survives; the scratch runtime directory is removed once empty.
    assert!(!scratch.join("gpumemprof_cpu").exists());
    assert!(!runtime_dir.join(".overhead_trials").exists());
    let tracked = &block.scenarios.tracked_default;
    let unprofiled = &block.scenarios.unprofiled;
    assert_eq!(
        tracked.artifact_dir,
        runtime_dir
            .join("overhead/tracked_default")
            .display()
            .to_string()
    );
    assert_eq!(tracked.emitted_samples, Some(40));
    assert_eq!(tracked.event_count, Some(42));
    assert_eq!(tracked.checksum, unprofiled.checksum);
    // summary.json's recorded size is the directory's size, the summary itself included.
    for s in [tracked, unprofiled] {
        assert_eq!(s.artifact_size_bytes, dir_size(Path::new(&s.artifact_dir)));
        let on_disk: ScenarioSummary = serde_json::from_slice(
            &std::fs::read(Path::new(&s.artifact_dir).join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(&on_disk, s);
    }
    assert!(Path::new(tracked.output_path.as_deref().unwrap()).exists());
    assert_eq!(
        block.metrics.artifact_growth_bytes,
        tracked.artifact_size_bytes - unprofiled.artifact_size_bytes
    );
}

#[test]
fn soak_with_retention_validation_reports_the_reference_counters() {
    let work = tempfile::tempdir().unwrap();
    let spec = SoakSpec {
        tracker: tracker(),
        samples: 20_000,
        profile: "pr".into(),
        artifact_dir: work.path().join("soak"),
        retention: RetentionValidationLimits::default(),
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |_: Progress| {};
    let block = run_soak(
        &spec,
        || RuntimeKind::GpumemprofCpu.open_collector(512, 0),
        &mut quiet_hooks(&mut progress, &cancel),
    )
    .unwrap();
    // 20,002 records: two full 10,000-record segments rolled over, a third with 2.
    assert_eq!(block.rollover_count, 2);
    assert_eq!(block.final_retained_files, 3);
    assert_eq!(block.pruned_segment_count, 0);
    assert_eq!(block.history_dropped_events, 10_002);
    assert_eq!(block.history_retained_events, 10_000);
    assert_eq!(block.rss_checkpoint_count, 50);
    assert_eq!(block.rss_warmup_sample_count, 400);
    assert_eq!(block.rss_measured_sample_count, 19_600);
    assert_eq!(block.collector_health_status, "healthy");
    let rv = &block.retention_validation;
    assert!(rv.passed, "{rv:?}");
    assert!(rv.emitted_samples <= 2_048);
    assert_eq!(
        rv.stats["final_retained_files"].as_u64().map(|f| f <= 2),
        Some(true)
    );
}

#[test]
fn a_cancelled_soak_stops_and_closes_its_session_as_interrupted() {
    let work = tempfile::tempdir().unwrap();
    let spec = SoakSpec {
        tracker: tracker(),
        samples: 1_000_000,
        profile: "pr".into(),
        artifact_dir: work.path().join("soak"),
        retention: RetentionValidationLimits::default(),
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |p: Progress| {
        if p.done >= 20_000 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let mut hooks = Hooks::new(&mut progress, &cancel);
    hooks.progress_every = 10_000;
    let err = run_soak(
        &spec,
        || RuntimeKind::GpumemprofCpu.open_collector(512, 0),
        &mut hooks,
    )
    .unwrap_err();
    assert!(matches!(err, ScenarioError::Interrupted));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.path().join("soak/sink").join(MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sessions"][0]["status"], "interrupted");
}
