use super::*;
use crate::config::{Mode, Profile, RetentionValidationLimits, WorkloadKind};
use crate::gate::{Baseline, Budgets, Tolerances};
use crate::report::metrics::{OVERHEAD_METRICS, SOAK_METRICS, is_two_sided};
use crate::report::model::{
    OverheadBlock, OverheadEstimates, OverheadMetrics, OverheadScenarios, RetentionChecks,
    RetentionValidationBlock, ScenarioSummary, SoakBlock,
};
use crate::stats::{Estimate, IntervalMethod};

const AGENT: &str = "a1";
const RUNTIME: &str = "gpumemprof_cpu";
/// `<agent>/<runtime>`, as the report keys the runtime.
const KEY: &str = "a1/gpumemprof_cpu";

fn config(mode: Mode) -> RunConfig {
    RunConfig {
        workload: crate::config::Workload {
            profile: Profile::Pr,
            mode,
            iterations: 50,
            allocation_kb: 64,
            kind: WorkloadKind::Reference,
        },
        profile_equivalent_hours: Profile::Pr.hours(),
        runtimes: BTreeMap::new(),
        retention_validation: RetentionValidationLimits::default(),
        knobs: BTreeMap::new(),
        overhead_scratch_root: None,
        budgets_path: None,
        baseline_path: None,
        tolerances_path: None,
        budgets_source: None,
        budgets_sha256: None,
        baseline_source: None,
        baseline_sha256: None,
        tolerances_source: None,
        tolerances_sha256: None,
    }
}

/// Budgets for every metric of [`RUNTIME`]: 100 % for the overhead percentages, out of reach
/// for the rest, except `overrides`.
fn budget_gate(overrides: &[(&str, f64)]) -> Gate {
    let mut budgets: BTreeMap<String, f64> = OVERHEAD_METRICS
        .iter()
        .chain(SOAK_METRICS.iter())
        .map(|m| {
            let max = if m.ends_with("_pct") { 100.0 } else { 1e12 };
            (format!("{RUNTIME}.{m}"), max)
        })
        .collect();
    for (metric, max) in overrides {
        budgets.insert(format!("{RUNTIME}.{metric}"), *max);
    }
    Gate::Budget(Budgets {
        path: "budgets.json".into(),
        budgets,
    })
}

fn scenario(name: &str) -> ScenarioSummary {
    ScenarioSummary {
        name: name.into(),
        wall_seconds: 1.0,
        cpu_seconds: 1.0,
        checksum: 7,
        artifact_dir: format!("/art/{RUNTIME}/{name}"),
        artifact_size_bytes: 4_096,
        sample_count: None,
        emitted_samples: None,
        event_count: None,
        collector_failure_event_count: None,
        stats: None,
        output_path: None,
    }
}

fn estimate(estimate: f64, lo: f64, hi: f64) -> Estimate {
    Estimate {
        estimate,
        lo,
        hi,
        confidence: 0.95,
        coverage: None,
        n: 6,
        method: IntervalMethod::SignedRankExact,
    }
}

/// An overhead block whose `runtime_overhead_pct` is `runtime` (estimate, lo, hi) and whose
/// CPU overhead is 10 % in [5 %, 15 %].
fn overhead((value, lo, hi): (f64, f64, f64)) -> OverheadBlock {
    let metrics = OverheadMetrics {
        runtime_overhead_pct: value,
        cpu_overhead_pct: 10.0,
        artifact_growth_bytes: 1_024,
    };
    OverheadBlock {
        scenarios: OverheadScenarios {
            unprofiled: scenario("unprofiled"),
            tracked_default: scenario("tracked_default"),
        },
        metrics,
        trial_count: 6,
        trial_quantile: 0.5,
        selected_trial: 1,
        trial_metrics: vec![metrics],
        pairs: Vec::new(),
        added_ns_per_sample: None,
        estimates: Some(OverheadEstimates {
            runtime_overhead_pct: estimate(value, lo, hi),
            cpu_overhead_pct: estimate(10.0, 5.0, 15.0),
        }),
        detectable_shift: None,
        stopped_by: None,
        scratch_root: None,
        telemetry_losses: Vec::new(),
    }
}

/// A soak whose sink kept every record and completed its session, with a healthy collector
/// and a passing retention validation.
fn soak() -> SoakBlock {
    SoakBlock {
        name: format!("{RUNTIME}_soak"),
        profile: "pr".into(),
        sample_count: 2_000,
        equivalent_seconds: 200.0,
        equivalent_hours: 200.0 / 3_600.0,
        wall_seconds: 1.0,
        cpu_seconds: 1.0,
        samples_per_second: 2_000.0,
        artifact_dir: format!("/art/{RUNTIME}/soak"),
        output_path: format!("/art/{RUNTIME}/soak/sink/manifest.json"),
        artifact_size_bytes: 65_536,
        rss_growth_per_24h_equiv: 0.0,
        rss_trend: None,
        max_rss_delta_bytes: 1_000,
        rss_warmup_sample_count: 200,
        rss_measured_sample_count: 1_800,
        rss_measured_equivalent_seconds: 180.0,
        rss_checkpoint_count: 50,
        rss_baseline_bytes: 10_000_000,
        rss_final_bytes: 10_000_000,
        rss_delta_bytes: 0,
        rss_after_finish_bytes: 10_000_000,
        finalization_rss_delta_bytes: 0,
        collector_failure_event_count: 0,
        history_dropped_events: 0,
        history_dropped_samples: 0,
        history_dropped_alerts: 0,
        rollover_count: 3,
        pruned_segment_count: 1,
        pruned_bytes: 4_096,
        final_retained_files: 2,
        final_retained_bytes: 8_192,
        history_retained_events: 10,
        history_retained_samples: 10,
        history_retained_alerts: 0,
        collector_health_status: "healthy".into(),
        stats: serde_json::json!({
            "session_status": "completed",
            "sink_dir": format!("/art/{RUNTIME}/soak/sink"),
            "sink_durable_records": 2_000,
            "sink_dropped_records": 0,
            "sink_dropped_bytes": 0,
            "sink_flush_failures": 0,
        }),
        retention_validation: RetentionValidationBlock {
            sample_limit: 10_000,
            emitted_samples: 600,
            stats: serde_json::json!({}),
            checks: RetentionChecks {
                rollover_observed: true,
                pruning_observed: true,
                retained_files_bounded: true,
                retained_bytes_bounded: true,
            },
            passed: true,
            artifact_dir: format!("/art/{RUNTIME}/soak/retention_validation"),
            output_path: format!("/art/{RUNTIME}/soak/retention_validation/sink/manifest.json"),
            artifact_size_bytes: 8_192,
        },
    }
}

/// A section of both scenarios, everything well within the budgets of [`budget_gate`].
fn section() -> RuntimeSection {
    RuntimeSection {
        status: RuntimeStatus::Ok,
        reason: None,
        default_interval: Some(0.1),
        overhead: Some(overhead((40.0, 30.0, 50.0))),
        soak: Some(soak()),
    }
}

/// `section` with the soak sink's statistics `key` replaced.
fn with_sink_stat(
    mut section: RuntimeSection,
    key: &str,
    value: serde_json::Value,
) -> RuntimeSection {
    section.soak.as_mut().unwrap().stats[key] = value;
    section
}

fn summary(status: JobStatus) -> JobSummary {
    JobSummary {
        job_id: "j1".into(),
        status,
        phase: "soak".into(),
        done: 3,
        total: 10,
        events: 4,
        checkpoints: 2,
        wall_seconds: 1.5,
        reason: None,
    }
}

/// A job of [`RUNTIME`] on `agent` that completed with `section`.
fn completed(agent: &str, section: RuntimeSection) -> JobRecord {
    JobRecord {
        agent_id: agent.into(),
        runtime: RUNTIME.into(),
        summary: summary(JobStatus::Completed),
        section: Some(section),
    }
}

/// A job of `runtime` on `agent` that ended `status` in the middle of its soak, without a
/// section.
fn unfinished(agent: &str, runtime: &str, status: JobStatus) -> JobRecord {
    JobRecord {
        agent_id: agent.into(),
        runtime: runtime.into(),
        summary: summary(status),
        section: None,
    }
}

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        facts: HostFacts::default(),
        labels: BTreeMap::new(),
        hardware_class: "cpu-test-2c".into(),
    }
}

/// The report of `jobs` on the agents they name (in order of appearance).
fn report_of(mode: Mode, gate: &Gate, jobs: &[JobRecord]) -> Report {
    let mut agents: Vec<AgentRecord> = Vec::new();
    for job in jobs {
        if !agents.iter().any(|a| a.agent_id == job.agent_id) {
            agents.push(agent(&job.agent_id));
        }
    }
    build_report(&config(mode), gate, &agents, jobs, 0)
}

fn outcome(report: &Report) -> (Verdict, bool) {
    (report.verdict, report.passed)
}

#[test]
fn a_completed_run_within_every_budget_passes() {
    let report = report_of(Mode::All, &budget_gate(&[]), &[completed(AGENT, section())]);
    assert_eq!(
        outcome(&report),
        (Verdict::Pass, true),
        "{:#?}",
        report.failure_diagnostics
    );
    assert!(report.failure_diagnostics.is_empty());
    assert_eq!(report.gate_mode, "budget");
    assert_eq!(report.budget_checks.as_ref().unwrap().len(), 14);
    assert!(report.regression_checks.is_none());
    assert_eq!(report.agents[AGENT].status, AgentStatus::Completed);
    assert_eq!(
        report.agents[AGENT].jobs[RUNTIME].status,
        JobStatus::Completed
    );
    assert_eq!(
        report.hardware_classes["cpu-test-2c"].agents,
        [AGENT.to_owned()]
    );
}

#[test]
fn a_metric_over_its_budget_fails_and_names_the_next_knob() {
    let gate = budget_gate(&[("max_rss_delta_bytes", 500.0)]);
    let report = report_of(Mode::All, &gate, &[completed(AGENT, section())]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    let check = &report.budget_checks.as_ref().unwrap()[&format!("{KEY}.max_rss_delta_bytes")];
    assert!(!check.passed && !check.inconclusive);
    assert_eq!(
        check.threshold_key,
        format!("{RUNTIME}.max_rss_delta_bytes")
    );
    assert_eq!(report.failure_diagnostics.len(), 1);
    let line = &report.failure_diagnostics[0];
    assert!(
        line.starts_with(&format!(
            "{KEY}.max_rss_delta_bytes: 1000 > 500; collector=healthy, collector_failures=0, "
        )) && line.ends_with("; next knob: sampling_interval_seconds"),
        "{line}"
    );
}

#[test]
fn an_interval_straddling_its_budget_is_inconclusive_unless_another_check_fails() {
    let mut straddling = section();
    straddling.overhead = Some(overhead((95.0, 80.0, 110.0)));
    let metric = format!("{KEY}.runtime_overhead_pct");

    let report = report_of(
        Mode::All,
        &budget_gate(&[]),
        &[completed(AGENT, straddling.clone())],
    );
    assert_eq!(outcome(&report), (Verdict::Inconclusive, false));
    let check = &report.budget_checks.as_ref().unwrap()[&metric];
    assert!(!check.passed && check.inconclusive);
    assert_eq!(
        report.failure_diagnostics,
        [format!(
            "{metric}: inconclusive: 95.00% 95% [80.00%, 110.00%] straddles the budget 100.00%; next knob: none (not a tuning problem: resolve with more pairs (knob overhead_min_pairs, or overhead_max_seconds), the overhead trial files on a RAM scratch root (--overhead-scratch-root), or a quieter host)"
        )]
    );
    assert_eq!(report.agents[AGENT].status, AgentStatus::Completed);

    // A check that fails outright decides the verdict.
    let gate = budget_gate(&[("max_rss_delta_bytes", 500.0)]);
    let report = report_of(Mode::All, &gate, &[completed(AGENT, straddling)]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    assert_eq!(report.failure_diagnostics.len(), 2);
    assert!(
        report.failure_diagnostics[0]
            .starts_with(&format!("{KEY}.max_rss_delta_bytes: 1000 > 500")),
        "{:#?}",
        report.failure_diagnostics
    );
    assert!(report.failure_diagnostics[1].starts_with(&format!("{metric}: inconclusive: ")));

    // An interval wholly beyond the budget fails.
    let mut beyond = section();
    beyond.overhead = Some(overhead((130.0, 100.5, 150.0)));
    let report = report_of(Mode::All, &budget_gate(&[]), &[completed(AGENT, beyond)]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    assert!(
        report.failure_diagnostics[0].starts_with(&format!(
            "{metric}: 130.00% 95% [100.50%, 150.00%] > 100.00%"
        )),
        "{:#?}",
        report.failure_diagnostics
    );
}

#[test]
fn an_unfinished_telemetry_session_with_nothing_lost_is_inconclusive() {
    for status in ["incomplete", "interrupted", "running"] {
        let unclosed = with_sink_stat(section(), "session_status", status.into());
        let report = report_of(Mode::All, &budget_gate(&[]), &[completed(AGENT, unclosed)]);
        assert_eq!(outcome(&report), (Verdict::Inconclusive, false), "{status}");
        // Every check passed: only the session's line is raised.
        assert!(
            report
                .budget_checks
                .as_ref()
                .unwrap()
                .values()
                .all(|c| c.passed)
        );
        assert_eq!(report.failure_diagnostics.len(), 1, "{status}");
        assert!(
            report.failure_diagnostics[0].starts_with(&format!(
                "{KEY}: telemetry session of soak ended {status} with nothing dropped and no failed write: the sink could not be closed, so what reached /art/{RUNTIME}/soak/sink is unknown"
            )),
            "{}",
            report.failure_diagnostics[0]
        );
    }
}

#[test]
fn lost_telemetry_fails_from_one_dropped_record_or_one_failed_write() {
    for (key, said) in [
        ("sink_dropped_records", "1 of 2001 records dropped"),
        (
            "sink_flush_failures",
            "0 of 2000 records dropped (0 bytes), 1 failed sink writes",
        ),
    ] {
        let lossy = with_sink_stat(section(), key, 1.into());
        let report = report_of(Mode::All, &budget_gate(&[]), &[completed(AGENT, lossy)]);
        assert_eq!(outcome(&report), (Verdict::Fail, false), "{key}");
        assert_eq!(report.failure_diagnostics.len(), 1, "{key}");
        let line = &report.failure_diagnostics[0];
        assert!(
            line.starts_with(&format!("{KEY}: telemetry lost in soak: {said}"))
                && line.contains(&format!("sink /art/{RUNTIME}/soak/sink;"))
                && line.ends_with("; next knob: retention_max_files"),
            "{line}"
        );
    }
    // Records dropped by a session that also did not complete: lost, so the gate fails.
    let lossy = with_sink_stat(
        with_sink_stat(section(), "sink_dropped_records", 5.into()),
        "session_status",
        "incomplete".into(),
    );
    let report = report_of(Mode::All, &budget_gate(&[]), &[completed(AGENT, lossy)]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
}

#[test]
fn an_unavailable_runtime_is_inconclusive() {
    let job = completed(
        AGENT,
        RuntimeSection::unavailable("NVML loaded but sees no GPU"),
    );
    let report = report_of(Mode::All, &budget_gate(&[]), &[job]);
    assert_eq!(outcome(&report), (Verdict::Inconclusive, false));
    assert_eq!(report.runtimes[KEY].status, RuntimeStatus::Unavailable);
    assert!(report.metrics.is_empty());
    assert!(report.budget_checks.as_ref().unwrap().is_empty());
    assert_eq!(
        report.failure_diagnostics,
        [format!(
            "{KEY}: unavailable - NVML loaded but sees no GPU; next knob: none (the runtime must be installed or enabled on this host)"
        )]
    );
    assert_eq!(report.agents[AGENT].status, AgentStatus::Completed);

    // Another runtime that ran and passed does not make up for it.
    let mut other = completed(AGENT, section());
    other.runtime = "gpumemprof_cuda".into();
    let unavailable = completed(AGENT, RuntimeSection::unavailable("no GPU"));
    let report = report_of(Mode::All, &budget_gate(&[]), &[other, unavailable]);
    assert_eq!(outcome(&report), (Verdict::Inconclusive, false));
}

#[test]
fn a_lost_or_timed_out_agent_is_inconclusive_and_named_with_its_progress() {
    for (status, agent_status, what) in [
        (JobStatus::Lost, AgentStatus::Lost, "lost"),
        (JobStatus::TimedOut, AgentStatus::TimedOut, "timed out"),
        (JobStatus::Running, AgentStatus::TimedOut, "timed out"),
        (JobStatus::Failed, AgentStatus::Failed, "failed"),
        (JobStatus::Cancelled, AgentStatus::Failed, "cancelled"),
    ] {
        // The other agent completed within every budget.
        let jobs = [
            completed("a0", section()),
            unfinished("victim", RUNTIME, status),
        ];
        let report = report_of(Mode::All, &budget_gate(&[]), &jobs);
        assert_eq!(
            outcome(&report),
            (Verdict::Inconclusive, false),
            "{status:?}"
        );
        let victim = &report.agents["victim"];
        assert_eq!(victim.status, agent_status, "{status:?}");
        assert_eq!(victim.jobs[RUNTIME].status, status);
        assert!(!report.runtimes.contains_key(&format!("victim/{RUNTIME}")));
        assert_eq!(report.agents["a0"].status, AgentStatus::Completed);
        assert_eq!(
            report.failure_diagnostics,
            [format!(
                "victim: {what} during {RUNTIME} soak at 3/10 (job j1, 4 events); next knob: none (the agent must finish its job; see its logs)"
            )],
            "{status:?}"
        );
    }

    // The reason is quoted; the worst job decides the agent's status.
    let mut failed = unfinished("victim", "gpumemprof_cuda", JobStatus::Failed);
    failed.summary.reason = Some("worker exited with status 1".into());
    let jobs = [failed, unfinished("victim", RUNTIME, JobStatus::TimedOut)];
    let report = report_of(Mode::All, &budget_gate(&[]), &jobs);
    assert_eq!(outcome(&report), (Verdict::Inconclusive, false));
    assert_eq!(report.agents["victim"].status, AgentStatus::TimedOut);
    assert!(
        report.failure_diagnostics[0].starts_with(
            "victim: failed during gpumemprof_cuda soak at 3/10 (job j1, 4 events): worker exited with status 1; "
        ),
        "{:#?}",
        report.failure_diagnostics
    );
    let jobs = [
        unfinished("victim", "gpumemprof_cuda", JobStatus::Running),
        unfinished("victim", RUNTIME, JobStatus::Lost),
    ];
    assert_eq!(
        report_of(Mode::All, &budget_gate(&[]), &jobs).agents["victim"].status,
        AgentStatus::Lost
    );

    // A lost agent leaves the verdict open even when a check of another agent failed.
    let gate = budget_gate(&[("max_rss_delta_bytes", 500.0)]);
    let jobs = [
        completed("a0", section()),
        unfinished("victim", RUNTIME, JobStatus::Lost),
    ];
    assert_eq!(
        outcome(&report_of(Mode::All, &gate, &jobs)),
        (Verdict::Inconclusive, false)
    );
}

#[test]
fn a_run_without_agents_is_inconclusive() {
    let report = report_of(Mode::All, &budget_gate(&[]), &[]);
    assert_eq!(outcome(&report), (Verdict::Inconclusive, false));
    assert!(report.failure_diagnostics.is_empty());
    assert!(report.agents.is_empty() && report.runtimes.is_empty());
}

#[test]
fn the_regression_gate_fails_a_two_sided_counter_below_its_baseline() {
    let mut soak_only = section();
    soak_only.overhead = None;
    let recorded = flatten_metrics(&BTreeMap::from([(RUNTIME.to_owned(), soak_only.clone())]));
    let tolerances: BTreeMap<String, f64> = recorded
        .keys()
        .map(|k| (k.clone(), if is_two_sided(k) { 0.0 } else { 1e12 }))
        .collect();
    let gate = |rollovers: f64| {
        let mut metrics = recorded.clone();
        metrics.insert(format!("{RUNTIME}.rollover_count"), rollovers);
        Gate::Regression(
            Baseline {
                path: "baseline.json".into(),
                version: REPORT_VERSION.into(),
                config: config(Mode::Soak).comparable(),
                metrics,
                distributions: BTreeMap::new(),
            },
            Tolerances {
                path: "tolerances.json".into(),
                tolerances: tolerances.clone(),
            },
        )
    };
    let jobs = [completed(AGENT, soak_only)];

    let same = report_of(Mode::Soak, &gate(3.0), &jobs);
    assert_eq!(
        outcome(&same),
        (Verdict::Pass, true),
        "{:#?}",
        same.failure_diagnostics
    );
    assert_eq!(same.gate_mode, "regression");
    assert!(same.budgets.is_none() && same.budget_checks.is_none());
    assert_eq!(same.baseline.as_ref().unwrap().metrics, recorded);
    assert_eq!(same.tolerances.as_ref(), Some(&tolerances));

    // One rollover short of the baseline: less work, not an improvement.
    let fewer = report_of(Mode::Soak, &gate(4.0), &jobs);
    assert_eq!(outcome(&fewer), (Verdict::Fail, false));
    assert_eq!(fewer.failure_diagnostics.len(), 1);
    assert!(
        fewer.failure_diagnostics[0].starts_with(&format!(
            "{KEY}.rollover_count: delta -1 < -0: current 3 is below the baseline 4; this counter is deterministic"
        )),
        "{}",
        fewer.failure_diagnostics[0]
    );
    // One more than the baseline fails as a regression.
    let more = report_of(Mode::Soak, &gate(2.0), &jobs);
    assert_eq!(outcome(&more), (Verdict::Fail, false));
    assert!(
        more.failure_diagnostics[0].starts_with(&format!("{KEY}.rollover_count: delta 1 > 0")),
        "{}",
        more.failure_diagnostics[0]
    );
}

#[test]
fn agent_status_is_the_worst_of_its_jobs() {
    use JobStatus as J;
    let status_of = |statuses: &[JobStatus]| {
        let jobs: Vec<JobRecord> = statuses
            .iter()
            .map(|&s| unfinished(AGENT, RUNTIME, s))
            .collect();
        agent_status(&jobs.iter().collect::<Vec<_>>())
    };
    assert_eq!(status_of(&[]), AgentStatus::Completed);
    assert_eq!(
        status_of(&[J::Completed, J::Completed]),
        AgentStatus::Completed
    );
    assert_eq!(
        status_of(&[J::Completed, J::Cancelled]),
        AgentStatus::Failed
    );
    assert_eq!(status_of(&[J::Failed, J::Running]), AgentStatus::TimedOut);
    assert_eq!(status_of(&[J::TimedOut, J::Failed]), AgentStatus::TimedOut);
    assert_eq!(
        status_of(&[J::Failed, J::Lost, J::TimedOut]),
        AgentStatus::Lost
    );
}

#[test]
fn a_baseline_document_drops_the_agent_prefix() {
    let report = report_of(Mode::All, &budget_gate(&[]), &[completed(AGENT, section())]);
    let document = baseline_document(&report, "host-1");
    assert_eq!(document["version"], REPORT_VERSION);
    assert_eq!(
        document["description"],
        "Recorded by `fleetgate run --write-baseline` at 1970-01-01T00:00:00Z on host host-1 (profile pr, mode all)."
    );
    let metrics = document["metrics"].as_object().unwrap();
    assert_eq!(metrics.len(), 14);
    assert_eq!(metrics[&format!("{RUNTIME}.max_rss_delta_bytes")], 1_000.0);
    assert_eq!(
        document["config"],
        serde_json::to_value(report.config.comparable()).unwrap()
    );
}

#[test]
fn utc_formatting() {
    assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(format_utc(1_795_812_000), "2026-11-27T20:40:00Z");
}

#[test]
fn class_summary_takes_worst_and_median() {
    let section = |class: &str| AgentSection {
        hardware_class: class.into(),
        labels: BTreeMap::new(),
        facts: HostFacts::default(),
        status: AgentStatus::Completed,
        jobs: BTreeMap::new(),
    };
    let agents = BTreeMap::from([
        ("a".to_owned(), section("c1")),
        ("b".to_owned(), section("c1")),
        ("c".to_owned(), section("c1")),
        ("d".to_owned(), section("c2")),
    ]);
    let metrics = BTreeMap::from([
        ("a/rt.m".to_owned(), 1.0),
        ("b/rt.m".to_owned(), 5.0),
        ("c/rt.m".to_owned(), 3.0),
        ("d/rt.m".to_owned(), 7.0),
    ]);
    let s = class_summaries(&agents, &metrics);
    assert_eq!(s["c1"].agents, ["a", "b", "c"]);
    assert_eq!(
        s["c1"].metrics["rt.m"],
        MetricSpread {
            worst: 5.0,
            median: 3.0,
            agents: 3
        }
    );
    assert_eq!(s["c2"].metrics["rt.m"].worst, 7.0);
}
