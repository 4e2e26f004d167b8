//! What the coordinator's test binaries share. Each test file is a crate of its own and uses
//! a part of this, so items some of them do not use are allowed.
//!
//! - [`cli`]: the `fleetgate` command from a test (a clean environment), its output, the
//!   tiny run's arguments.
//! - [`process`]: child processes with their stderr collected — `fleetgate serve` and
//!   `fleetgate agent` — stopped or killed by the test, killed when dropped.
//! - [`fleet`]: coordinators served in the test process, agents waited for until connected,
//!   runs submitted in the background, a TCP proxy, an address where nothing listens.
//! - [`hand_agent`]: agent sessions driven by hand (also used by the `bounded_memory` bench).
//! - [`relaxed_budgets`]: the shipped budgets with the overhead maxima out of reach.
//! - [`synthetic_fleet`]: a one-agent report cloned into a large fleet (also used by the
//!   `html_report` bench).
//! - [`tools`]: the real third-party consumers (browser, validators, metrics and health
//!   clients) that `make test-tools` installs.
//!
//! Here: the repository root, the bounded wait every test uses, small runs to submit, and
//! the report schema check.

#![allow(dead_code)]

pub(crate) mod cli;
pub(crate) mod fleet;
pub(crate) mod hand_agent;
pub(crate) mod process;
pub(crate) mod relaxed_budgets;
pub(crate) mod synthetic_fleet;
pub(crate) mod tools;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_common::config::{GateMode, Mode, Profile, Workload, WorkloadKind};
use fleetgate_common::knobs::Knobs;
use fleetgate_common::run::{Asset, RunSpec, Selection};

/// Longest a test waits for something that should happen within seconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Asserts that `report` matches the report schema, `docs/report-v0.4.schema.json`.
pub(crate) fn assert_matches_schema(report: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("docs/report-v0.4.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match the schema: {errors:#?}"
    );
}

/// Polls `check` every 50 ms until it gives a value, for at most `limit`; panics naming
/// `what` and with `context()` (what the processes involved said, say) if it never does.
pub(crate) async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {limit:?} for {what}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `pr` run of `gpumemprof_cpu` with 50 workload steps of 64 KiB, on any agent, with no
/// deadline, knobs, scratch root or gate assets of its own.
pub(crate) fn run_spec(mode: Mode, gate_mode: GateMode) -> RunSpec {
    RunSpec {
        workload: Workload {
            profile: Profile::Pr,
            mode,
            iterations: 50,
            allocation_kb: 64,
            kind: WorkloadKind::Reference,
        },
        gate_mode,
        runtimes: vec!["gpumemprof_cpu".into()],
        selection: Selection::default(),
        deadline: None,
        knobs: Knobs::new(),
        overhead_scratch_root: None,
        budgets: None,
        baseline: None,
        tolerances: None,
    }
}

/// A soak-only run of `interval_seconds`-second samples (6 h / interval samples), budget gate
/// on the shipped budget file.
pub(crate) fn soak_spec(interval_seconds: f64, deadline: Duration) -> RunSpec {
    let mut knobs = Knobs::new();
    fleetgate_common::knobs::apply_knob_assignment(
        &mut knobs,
        &format!("gpumemprof_cpu.sampling_interval_seconds={interval_seconds}"),
        &["gpumemprof_cpu"],
    )
    .unwrap();
    RunSpec {
        deadline: Some(deadline),
        knobs,
        budgets: Some(
            Asset::read(
                &repo().join("docs/benchmarks/v0.4_operating_budget.json"),
                "Budget file",
            )
            .unwrap(),
        ),
        ..run_spec(Mode::Soak, GateMode::Budget)
    }
}
