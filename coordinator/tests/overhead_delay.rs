//! Behaviours the shipped gate assets must catch, measured in this test process: a synthetic
//! leak in the soak, and an injected per-sample delay in the overhead scenario. Each lives in a
//! test binary of its own, so no other test shares the process's RSS or CPU while it measures.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fleetgate_agent::job;
use fleetgate_agent::runtime::RuntimeKind;
use fleetgate_agent::scenario::{self, Hooks, OverheadSpec, Progress};
use fleetgate_agent::workload::Workload;
use fleetgate_common::config::RuntimeKnobs;
use fleetgate_common::gate;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shipped() -> (gate::Baseline, gate::Tolerances) {
    (
        gate::load_baseline(&repo().join("docs/benchmarks/v0.4_baseline.json")).unwrap(),
        gate::load_tolerances(&repo().join("docs/benchmarks/v0.4_tolerances.json")).unwrap(),
    )
}

/// Overhead of 500 samples over 500 workload steps with `delay` added per tracked sample;
/// whether the runtime-overhead regression check passes against the shipped assets.
fn delayed_overhead_passes(delay: Duration) -> bool {
    let work = tempfile::tempdir().unwrap();
    let kind = RuntimeKind::GpumemprofCpu;
    let spec = OverheadSpec {
        tracker: job::tracker_config(kind, &RuntimeKnobs::default()).unwrap(),
        workload: Workload {
            iterations: 500,
            allocation_kb: 512,
        },
        workload_kind: fleetgate_common::config::WorkloadKind::Reference,
        tensorflow_device: "/CPU:0",
        runtime_dir: work.path().join("gpumemprof_cpu"),
        scratch_dir: None,
        samples: 500,
    };
    let cancel = AtomicBool::new(false);
    let mut progress = |_: Progress| {};
    let mut hooks = Hooks::new(&mut progress, &cancel);
    hooks.tracked_sample_delay = delay;
    let block = scenario::run_overhead(&spec, || kind.open_collector(512, 0), &mut hooks).unwrap();
    let metrics = std::collections::BTreeMap::from([(
        "gpumemprof_cpu.runtime_overhead_pct".to_owned(),
        block.metrics.runtime_overhead_pct,
    )]);
    let (baseline, tolerances) = shipped();
    tolerances.check(&baseline, &metrics, &gate::no_classes)["gpumemprof_cpu.runtime_overhead_pct"]
        .passed
}

#[test]
fn an_injected_per_sample_delay_crosses_the_runtime_overhead_tolerance() {
    assert!(!delayed_overhead_passes(Duration::from_millis(1)));
    assert!(delayed_overhead_passes(Duration::ZERO));
}
