//! What the fleet test binaries share: the repository root and a small soak-only run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_common::config::{GateMode, Mode, Profile, Workload, WorkloadKind};
use fleetgate_common::knobs::Knobs;
use fleetgate_common::run::{Asset, RunSpec, Selection};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A soak-only run of `samples_interval`-second samples (6 h / interval samples), budget gate.
pub(crate) fn soak_spec(interval_seconds: f64, deadline: Duration) -> RunSpec {
    let mut knobs = Knobs::new();
    fleetgate_common::knobs::apply_knob_assignment(
        &mut knobs,
        &format!("gpumemprof_cpu.sampling_interval_seconds={interval_seconds}"),
        &["gpumemprof_cpu"],
    )
    .unwrap();
    RunSpec {
        workload: Workload {
            profile: Profile::Pr,
            mode: Mode::Soak,
            iterations: 50,
            allocation_kb: 64,
            kind: WorkloadKind::Reference,
        },
        gate_mode: GateMode::Budget,
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
