//! What the fleet test binaries share: the repository root and a small soak-only run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_common::config::{GateMode, Knobs, Mode, Profile, WorkloadKind};
use fleetgate_coordinator::plan::{Asset, RunSpec, Selection};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A soak-only run of `samples_interval`-second samples (6 h / interval samples), budget gate.
pub(crate) fn soak_spec(interval_seconds: f64, deadline: Duration) -> RunSpec {
    let mut knobs = Knobs::new();
    fleetgate_common::config::apply_knob_assignment(
        &mut knobs,
        &format!("gpumemprof_cpu.sampling_interval_seconds={interval_seconds}"),
        &["gpumemprof_cpu"],
    )
    .unwrap();
    RunSpec {
        profile: Profile::Pr,
        mode: Mode::Soak,
        gate_mode: GateMode::Budget,
        iterations: 50,
        allocation_kb: 64,
        workload: WorkloadKind::Reference,
        runtimes: vec!["gpumemprof_cpu".into()],
        selection: Selection::default(),
        deadline: Some(deadline),
        knobs,
        overhead_scratch_root: None,
        budgets: Some(
            Asset::read(
                &repo().join("docs/benchmarks/v0.4_operating_budget.json"),
                "Budget file",
            )
            .unwrap(),
        ),
        baseline: None,
        tolerances: None,
    }
}
