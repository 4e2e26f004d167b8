//! Behaviours the shipped gate assets must catch, measured in this test process: a synthetic
//! leak in the soak here, and an injected per-sample delay in the overhead scenario in
//! `overhead_delay.rs`. Each lives in a test binary of its own, so no other test shares the
//! process's RSS or CPU while it measures.

mod support;

use std::sync::atomic::AtomicBool;

use fleetgate_agent::job;
use fleetgate_agent::scenario::{self, Hooks, Progress, SoakSpec};
use fleetgate_common::config::RetentionValidationLimits;
use fleetgate_common::gate;
use fleetgate_common::knobs::RuntimeKnobs;
use fleetgate_common::runtime::RuntimeKind;
use fleetgate_common::stats::Interval;
use support::{shipped_baseline, shipped_tolerances};

/// Runs a `pr`-size gpumemprof_cpu soak that leaks `bytes_per_sample` and returns whether the
/// two RSS regression checks pass against the shipped baseline and tolerances (the growth
/// decided by its trend's interval: a pass shows the growth within the tolerance).
fn leak_checks(bytes_per_sample: usize) -> (bool, bool) {
    let work = tempfile::tempdir().unwrap();
    let kind = RuntimeKind::GpumemprofCpu;
    let plan = kind.plan(
        &RuntimeKnobs::default(),
        fleetgate_common::config::Profile::Pr,
        5_000,
    );
    let spec = SoakSpec {
        tracker: job::tracker_config(kind, &RuntimeKnobs::default()).unwrap(),
        samples: plan.soak_sample_count,
        profile: "pr".into(),
        artifact_dir: work.path().join("soak"),
        retention: RetentionValidationLimits::default(),
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |_: Progress| {};
    let mut leaked: Vec<Vec<u8>> = Vec::new();
    let mut leak = |i: u64| {
        // Touched, so the pages are resident.
        leaked.push(vec![(i % 251) as u8 + 1; bytes_per_sample]);
    };
    let mut hooks = Hooks::new(&mut progress, &cancel);
    hooks.after_soak_sample = Some(&mut leak);
    let soak = scenario::run_soak(
        &spec,
        || fleetgate_agent::runtime::open_collector(kind, 512, 0),
        &mut hooks,
    )
    .unwrap();
    let metrics = std::collections::BTreeMap::from([
        (
            "gpumemprof_cpu.rss_growth_per_24h_equiv".to_owned(),
            soak.rss_growth_per_24h_equiv,
        ),
        (
            "gpumemprof_cpu.max_rss_delta_bytes".to_owned(),
            soak.max_rss_delta_bytes as f64,
        ),
    ]);
    // The growth is gated with the interval of its trend, as the report's gates do.
    let trend = soak.rss_trend.expect("a pr soak has 50 checkpoints");
    let intervals = std::collections::BTreeMap::from([(
        "gpumemprof_cpu.rss_growth_per_24h_equiv".to_owned(),
        Interval {
            lo: trend.growth_per_24h_equiv_lo.unwrap(),
            hi: trend.growth_per_24h_equiv_hi.unwrap(),
        },
    )]);
    if bytes_per_sample >= 1_024 {
        assert!(trend.mann_kendall_p_increasing < 1e-3, "{trend:?}");
    }
    let (baseline, tolerances) = (shipped_baseline(), shipped_tolerances());
    let checks = tolerances.check_intervals(&baseline, &metrics, &intervals, &gate::no_classes);
    (
        checks["gpumemprof_cpu.rss_growth_per_24h_equiv"].passed,
        checks["gpumemprof_cpu.max_rss_delta_bytes"].passed,
    )
}

#[test]
fn a_synthetic_leak_of_1024_bytes_per_sample_fails_both_rss_checks_and_64_passes() {
    assert_eq!(leak_checks(1_024), (false, false));
    assert_eq!(leak_checks(64), (true, true));
}
