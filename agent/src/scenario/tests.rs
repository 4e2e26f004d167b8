use std::sync::atomic::AtomicBool;

use super::*;
use fleetgate_common::runtime::RuntimeKind;

fn pair(wall_ns: f64, cpu_ns: f64, wall_pct: f64) -> OverheadPair {
    OverheadPair {
        tracked_first: false,
        added_wall_ns_per_sample: wall_ns,
        added_cpu_ns_per_sample: cpu_ns,
        runtime_overhead_pct: wall_pct,
        cpu_overhead_pct: wall_pct / 2.0,
    }
}

#[test]
fn the_kept_pair_is_the_nearer_of_the_kept_and_the_newest() {
    let pairs = [10.0, 30.0, 19.0, 21.0, 50.0].map(|r| pair(0.0, 0.0, r));
    assert_eq!(nearer_pair(&pairs, None, 0, 20.0), 0);
    assert_eq!(nearer_pair(&pairs, Some(0), 1, 20.0), 0);
    assert_eq!(nearer_pair(&pairs, Some(0), 2, 20.0), 2);
    // A tie keeps the kept pair.
    assert_eq!(nearer_pair(&pairs, Some(2), 3, 20.0), 2);
    assert_eq!(nearer_pair(&pairs, Some(3), 4, 45.0), 4);
}

#[test]
fn a_pair_costs_its_difference_per_sample() {
    let summary = |wall: f64, cpu: f64| ScenarioSummary {
        name: String::new(),
        wall_seconds: wall,
        cpu_seconds: cpu,
        checksum: 0,
        artifact_dir: String::new(),
        artifact_size_bytes: 0,
        sample_count: None,
        emitted_samples: None,
        event_count: None,
        collector_failure_event_count: None,
        stats: None,
        output_path: None,
    };
    // 1000 samples: +3 ms wall is 3000 ns per sample, −1 ms CPU is −1000.
    let p = pair_cost(&summary(0.010, 0.008), &summary(0.013, 0.007), 1000, true);
    assert!(p.tracked_first);
    assert!((p.added_wall_ns_per_sample - 3000.0).abs() < 1e-6);
    assert!((p.added_cpu_ns_per_sample + 1000.0).abs() < 1e-6);
    assert!((p.runtime_overhead_pct - 30.0).abs() < 1e-9);
    assert!((p.cpu_overhead_pct + 12.5).abs() < 1e-9);
}

#[test]
fn paired_estimates_are_hodges_lehmann_with_signed_rank_intervals() {
    // Ten pairs 1..=10 µs: the Walsh-average median is 5.5 µs; the exact 95 % signed-rank
    // interval uses the 9th smallest and largest of the 55 Walsh averages (R:
    // wilcox.test(1:10, conf.int = TRUE) gives [3, 8]).
    let pairs: Vec<OverheadPair> = (1..=10)
        .map(|i| pair(f64::from(i) * 1000.0, 500.0, f64::from(i)))
        .collect();
    let e = estimate_pairs(&pairs).unwrap();
    assert_eq!(e.added.wall.estimate, 5500.0);
    assert_eq!((e.added.wall.lo, e.added.wall.hi), (3000.0, 8000.0));
    assert_eq!(e.added.wall.n, 10);
    assert_eq!(e.pct.runtime_overhead_pct.estimate, 5.5);
    assert_eq!(
        (e.pct.runtime_overhead_pct.lo, e.pct.runtime_overhead_pct.hi),
        (3.0, 8.0)
    );
    // Constant CPU cost: a zero-width interval and nothing to resolve.
    assert_eq!((e.added.cpu.lo, e.added.cpu.hi), (500.0, 500.0));
    assert_eq!(e.detectable.cpu_ns_per_sample, 0.0);
    // MAD of 1..=10 is 1.4826 × 2.5; the shift is (z(0.975) + z(0.95)) × MAD / √(10 × 3/π).
    let expected = 3.604_818 * 1.482_602_2 * 2500.0 / (10.0 * 3.0 / std::f64::consts::PI).sqrt();
    assert!(
        (e.detectable.wall_ns_per_sample - expected).abs() < 1.0,
        "{}",
        e.detectable.wall_ns_per_sample
    );
    // Five pairs cannot give a 95 % interval.
    assert!(estimate_pairs(&pairs[..5]).is_err());
}

#[test]
fn pairs_stop_at_precision_or_the_cap_and_never_below_the_minimum() {
    let limits = PairLimits {
        min_pairs: 10,
        max_duration: Duration::from_secs(3),
    };
    let second = Duration::from_secs(1);
    let narrow: Vec<OverheadPair> = (0..10)
        .map(|i| pair(0.0, 0.0, 40.0 + f64::from(i % 2)))
        .collect();
    let narrow = estimate_pairs(&narrow).unwrap();
    let wide: Vec<OverheadPair> = (0..10)
        .map(|i| pair(0.0, 0.0, f64::from(i) * 10.0))
        .collect();
    let wide = estimate_pairs(&wide).unwrap();
    // Below the minimum nothing stops it, not even the cap.
    assert_eq!(
        stop_after(9, &limits, 10 * second, second, Some(&narrow)),
        None
    );
    assert_eq!(
        stop_after(10, &limits, second, second, Some(&narrow)),
        Some(PairStop::Precision)
    );
    // Wide: goes on while the next pair would end within the cap.
    assert_eq!(stop_after(10, &limits, second, second, Some(&wide)), None);
    assert_eq!(
        stop_after(10, &limits, 2 * second, second, Some(&wide)),
        None
    );
    assert_eq!(
        stop_after(10, &limits, 2 * second, 2 * second, Some(&wide)),
        Some(PairStop::TimeCap)
    );
    assert_eq!(
        stop_after(200, &limits, second, Duration::ZERO, Some(&wide)),
        Some(PairStop::MaxPairs)
    );
    // No estimate (a non-finite pair): only the cap ends it.
    assert_eq!(stop_after(10, &limits, second, second, None), None);
    assert_eq!(
        stop_after(10, &limits, 3 * second, second, None),
        Some(PairStop::TimeCap)
    );
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
        limits: PairLimits {
            min_pairs: 6,
            max_duration: Duration::ZERO,
        },
    };
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let trial_root = scratch.join("gpumemprof_cpu/overhead_trials");
    let mut most_pair_dirs = 0;
    let mut progress = |p: Progress| {
        seen.push(p.done);
        let dirs = std::fs::read_dir(&trial_root).map_or(0, |d| d.count());
        most_pair_dirs = most_pair_dirs.max(dirs);
    };
    let block = run_overhead(
        &spec,
        || crate::runtime::open_collector(RuntimeKind::GpumemprofCpu, 512, 0),
        &mut quiet_hooks(&mut progress, &cancel),
    )
    .unwrap();
    // A zero time cap: exactly the minimum, unless six pairs were already precise enough.
    assert_eq!(seen, (1..=12).collect::<Vec<u64>>());
    assert_eq!(block.trial_count, 6);
    // Only the kept pair and the one being measured are ever on disk.
    assert_eq!(most_pair_dirs, 2);
    assert_eq!(block.trial_metrics.len(), 6);
    assert_eq!(block.pairs.len(), 6);
    assert!(matches!(
        block.stopped_by,
        Some(PairStop::TimeCap | PairStop::Precision)
    ));
    // ABBA: the tracked run goes first in every second pair.
    let order: Vec<bool> = block.pairs.iter().map(|p| p.tracked_first).collect();
    assert_eq!(order, [false, true, false, true, false, true]);
    assert!((1..=6).contains(&block.selected_trial));
    let e = block.estimates.unwrap();
    let r = e.runtime_overhead_pct;
    assert!(
        r.lo <= block.metrics.runtime_overhead_pct && block.metrics.runtime_overhead_pct <= r.hi
    );
    assert_eq!(r.estimate, block.metrics.runtime_overhead_pct);
    let added = block.added_ns_per_sample.unwrap();
    assert_eq!(added.wall.n, 6);
    assert!(block.detectable_shift.is_some());
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
        || crate::runtime::open_collector(RuntimeKind::GpumemprofCpu, 512, 0),
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
        rv.stats
            .get("final_retained_files")
            .as_u64()
            .map(|f| f <= 2),
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
        || crate::runtime::open_collector(RuntimeKind::GpumemprofCpu, 512, 0),
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

/// 50 checkpoints 432 equivalent seconds apart (a `pr` soak of `gpumemprof_cpu`).
fn checkpoint_seconds() -> Vec<f64> {
    (0..50).map(|i| f64::from(i) * 432.0).collect()
}

#[test]
fn a_steady_leak_is_its_slope_with_an_interval_around_it() {
    let x = checkpoint_seconds();
    // 3,000 B per equivalent second (300 B per sample at 0.1 s), plus a page of jitter on
    // every third reading.
    let y: Vec<u64> = x
        .iter()
        .enumerate()
        .map(|(i, s)| 50_000_000 + (s * 3_000.0) as u64 + if i % 3 == 0 { 4_096 } else { 0 })
        .collect();
    let t = rss_trend(&x, &y, 0.0).unwrap();
    assert_eq!(t.checkpoints, 50);
    let per_day = 3_000.0 * 86_400.0;
    assert!(
        (t.growth_per_24h_equiv - per_day).abs() < per_day * 0.01,
        "{t:?}"
    );
    let (lo, hi) = (
        t.growth_per_24h_equiv_lo.unwrap(),
        t.growth_per_24h_equiv_hi.unwrap(),
    );
    assert!(lo <= t.growth_per_24h_equiv && t.growth_per_24h_equiv <= hi);
    assert!(lo > per_day * 0.97 && hi < per_day * 1.03, "[{lo}, {hi}]");
    assert!(t.mann_kendall_p_increasing < 1e-6);
    assert!(t.late_window_median_bytes > t.early_window_median_bytes);
    // 24 h after the warm-up: the start plus a day of growth.
    assert!((t.projected_rss_at_24h_equiv_bytes - (50_000_000.0 + per_day)).abs() < per_day * 0.02);
}

#[test]
fn one_allocator_step_is_not_a_leak_though_the_endpoints_say_so() {
    let x = checkpoint_seconds();
    // One 8 MiB step after the first checkpoint (an arena grown once), flat afterwards.
    let y: Vec<u64> = (0..50)
        .map(|i| if i == 0 { 40_000_000 } else { 48_388_608 })
        .collect();
    let endpoint = 8_388_608.0 / (49.0 * 432.0) * 86_400.0;
    let t = rss_trend(&x, &y, endpoint).unwrap();
    assert_eq!(t.growth_per_24h_equiv, 0.0);
    assert_eq!(t.growth_per_24h_equiv_hi, Some(0.0));
    assert_eq!(t.endpoint_growth_per_24h_equiv, endpoint);
    assert_eq!(t.late_window_growth_per_24h_equiv, 0.0);
}

#[test]
fn flat_readings_are_no_trend_and_too_few_readings_are_none() {
    let x = checkpoint_seconds();
    let t = rss_trend(&x, &[7_000_000; 50], 0.0).unwrap();
    assert_eq!(
        (
            t.growth_per_24h_equiv,
            t.growth_per_24h_equiv_lo,
            t.growth_per_24h_equiv_hi
        ),
        (0.0, Some(0.0), Some(0.0))
    );
    assert_eq!((t.mann_kendall_s, t.mann_kendall_p_increasing), (0, 1.0));
    assert!(rss_trend(&x[..2], &[1, 2], 5.0).is_none());
    // Three readings give a slope but no 95 % interval.
    let t = rss_trend(&x[..3], &[1_000, 2_000, 3_000], 0.0).unwrap();
    assert!((t.slope_bytes_per_second - 1_000.0 / 432.0).abs() < 1e-9);
    assert_eq!(t.growth_per_24h_equiv_hi, None);
}

#[test]
fn a_leak_that_starts_late_shows_in_the_late_window() {
    let x = checkpoint_seconds();
    let y: Vec<u64> = x
        .iter()
        .enumerate()
        .map(|(i, s)| {
            30_000_000
                + if i >= 25 {
                    ((s - 25.0 * 432.0) * 3_000.0) as u64
                } else {
                    0
                }
        })
        .collect();
    let t = rss_trend(&x, &y, 0.0).unwrap();
    assert!(
        (t.late_window_growth_per_24h_equiv - 3_000.0 * 86_400.0).abs() < 1.0,
        "{t:?}"
    );
    assert!(t.late_window_growth_per_24h_equiv > t.growth_per_24h_equiv);
    assert!(t.mann_kendall_p_increasing < 0.01);
}
