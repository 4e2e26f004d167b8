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
        rss_checkpoints: Vec::new(),
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
        })
        .into(),
        retention_validation: RetentionValidationBlock {
            sample_limit: 10_000,
            emitted_samples: 600,
            stats: serde_json::json!({}).into(),
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
        overhead: Some(Box::new(overhead((40.0, 30.0, 50.0)))),
        soak: Some(Box::new(soak())),
    }
}

/// `section` with the soak sink's statistics `key` replaced.
fn with_sink_stat(
    mut section: RuntimeSection,
    key: &str,
    value: serde_json::Value,
) -> RuntimeSection {
    let soak = section.soak.as_mut().unwrap();
    soak.stats = soak.stats.with(key, value);
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
    straddling.overhead = Some(Box::new(overhead((95.0, 80.0, 110.0))));
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
    beyond.overhead = Some(Box::new(overhead((130.0, 100.5, 150.0))));
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

    // A job that completed but whose section is not there is never taken as a pass.
    let mut sectionless = completed("victim", section());
    sectionless.section = None;
    let report = report_of(
        Mode::All,
        &budget_gate(&[]),
        &[completed("a0", section()), sectionless],
    );
    assert_eq!(outcome(&report), (Verdict::Inconclusive, false));
    assert!(!report.runtimes.contains_key(&format!("victim/{RUNTIME}")));
    assert_eq!(
        report.failure_diagnostics,
        [format!(
            "victim: completed without its report section during {RUNTIME} soak at 3/10 (job j1, 4 events); next knob: none (the agent must finish its job; see its logs)"
        )]
    );

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
        agent_status(&jobs)
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

// === quorum ===

/// A soak and overhead section like [`section`] whose `max_rss_delta_bytes` is `value`.
fn with_rss_delta(value: u64) -> RuntimeSection {
    let mut s = section();
    s.soak.as_mut().unwrap().max_rss_delta_bytes = value;
    s
}

/// How each agent of a quorum test comes out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// Within every budget.
    Pass,
    /// `max_rss_delta_bytes` over its budget.
    Fail,
    /// Its overhead interval straddles the budget.
    Undecided,
    /// Lost mid-soak.
    Lost,
    /// Its runtime unavailable.
    Unavailable,
    /// Over a budget and straddling another.
    FailAndUndecided,
}

/// The budget of the quorum tests: [`budget_gate`] with `max_rss_delta_bytes` at most 2,000.
fn quorum_gate() -> Gate {
    budget_gate(&[("max_rss_delta_bytes", 2_000.0)])
}

fn job_of(agent: &str, fate: Fate) -> JobRecord {
    let straddling = |mut s: RuntimeSection| {
        s.overhead = Some(Box::new(overhead((95.0, 80.0, 110.0))));
        s
    };
    match fate {
        Fate::Pass => completed(agent, section()),
        Fate::Fail => completed(agent, with_rss_delta(5_000)),
        Fate::Undecided => completed(agent, straddling(section())),
        Fate::Lost => unfinished(agent, RUNTIME, JobStatus::Lost),
        Fate::Unavailable => completed(agent, RuntimeSection::unavailable("no GPU")),
        Fate::FailAndUndecided => completed(agent, straddling(with_rss_delta(5_000))),
    }
}

/// The report of agents `(id, class, fate)` under `quorum`.
fn fleet_of(quorum: f64, agents: &[(&str, &str, Fate)]) -> Report {
    let records: Vec<AgentRecord> = agents
        .iter()
        .map(|&(id, class, _)| AgentRecord {
            hardware_class: class.into(),
            ..agent(id)
        })
        .collect();
    let jobs: Vec<JobRecord> = agents
        .iter()
        .map(|&(id, _, fate)| job_of(id, fate))
        .collect();
    build_fleet_report(
        &config(Mode::All),
        &quorum_gate(),
        Quorum::new(quorum).unwrap(),
        &records,
        jobs,
        0,
    )
}

/// Ten agents of class `cpu-x`: `passing` pass, then the `others` in order.
fn ten(passing: usize, others: &[Fate]) -> Vec<(String, Fate)> {
    assert_eq!(passing + others.len(), 10);
    (0..10)
        .map(|i| {
            let fate = if i < passing {
                Fate::Pass
            } else {
                others[i - passing]
            };
            (format!("a{i}"), fate)
        })
        .collect()
}

fn ten_at(quorum: f64, passing: usize, others: &[Fate]) -> Report {
    let agents = ten(passing, others);
    let borrowed: Vec<(&str, &str, Fate)> = agents
        .iter()
        .map(|(id, fate)| (id.as_str(), "cpu-x", *fate))
        .collect();
    fleet_of(quorum, &borrowed)
}

/// `(passed, gated, quorum, quorum_met)` of a class.
fn tally(report: &Report, class: &str) -> (u64, u64, u64, bool) {
    let c = &report.hardware_classes[class];
    (c.passed, c.gated, c.quorum, c.quorum_met)
}

#[test]
fn a_quorum_of_nine_tenths_at_and_around_its_boundary() {
    // 9 of 10 pass: the quorum (9) is met and the failing agent is tolerated.
    let report = ten_at(0.9, 9, &[Fate::Fail]);
    assert_eq!(outcome(&report), (Verdict::Pass, false));
    assert_eq!(tally(&report, "cpu-x"), (9, 10, 9, true));
    assert_eq!(report.failure_diagnostics.len(), 1);
    let line = &report.failure_diagnostics[0];
    assert!(
        line.starts_with("a9/gpumemprof_cpu.max_rss_delta_bytes: 5000 > 2000; ")
            && line.ends_with(
                "; next knob: sampling_interval_seconds (tolerated: class cpu-x passed 9 of 10, quorum 9)"
            ),
        "{line}"
    );
    assert!(
        !report.budget_checks.as_ref().unwrap()["a9/gpumemprof_cpu.max_rss_delta_bytes"].passed,
        "the check itself still failed"
    );

    // 8 of 10: the quorum cannot be met.
    let report = ten_at(0.9, 8, &[Fate::Fail, Fate::Fail]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    assert_eq!(tally(&report, "cpu-x"), (8, 10, 9, false));
    assert!(
        report
            .failure_diagnostics
            .iter()
            .all(|l| !l.contains("tolerated")),
        "{:#?}",
        report.failure_diagnostics
    );

    // 8 pass and 1 is inconclusive: the quorum depends on it.
    for open in [Fate::Undecided, Fate::Lost, Fate::Unavailable] {
        let report = ten_at(0.9, 8, &[Fate::Fail, open]);
        assert_eq!(outcome(&report), (Verdict::Inconclusive, false), "{open:?}");
        assert_eq!(tally(&report, "cpu-x"), (8, 10, 9, false), "{open:?}");
        let report = ten_at(0.9, 8, &[open, open]);
        assert_eq!(outcome(&report), (Verdict::Inconclusive, false), "{open:?}");
    }

    // 7 pass, 2 fail, 1 inconclusive check: 9 cannot be reached even if it had passed.
    let report = ten_at(0.9, 7, &[Fate::Fail, Fate::Fail, Fate::Undecided]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    // An agent that failed one check and straddled another failed: it cannot make the quorum.
    let report = ten_at(0.9, 8, &[Fate::Fail, Fate::FailAndUndecided]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));

    // 9 pass and 1 was lost or inconclusive: tolerated, so the run passes.
    for open in [Fate::Undecided, Fate::Lost, Fate::Unavailable] {
        let report = ten_at(0.9, 9, &[open]);
        assert_eq!(outcome(&report), (Verdict::Pass, false), "{open:?}");
        assert!(
            report
                .failure_diagnostics
                .iter()
                .all(|l| l.ends_with(" (tolerated: class cpu-x passed 9 of 10, quorum 9)")),
            "{open:?}: {:#?}",
            report.failure_diagnostics
        );
    }
    let lost = ten_at(0.9, 9, &[Fate::Lost]);
    assert_eq!(
        lost.failure_diagnostics,
        [
            "a9: lost during gpumemprof_cpu soak at 3/10 (job j1, 4 events); next knob: none (the agent must finish its job; see its logs) (tolerated: class cpu-x passed 9 of 10, quorum 9)"
        ]
    );
    assert_eq!(lost.agents["a9"].status, AgentStatus::Lost);

    // All ten pass: met, nothing to tolerate.
    let report = ten_at(0.9, 10, &[]);
    assert_eq!(outcome(&report), (Verdict::Pass, true));
    assert_eq!(tally(&report, "cpu-x"), (10, 10, 9, true));
}

#[test]
fn each_class_is_held_to_its_own_quorum() {
    use Fate::{Fail, Lost, Pass};
    // Class big tolerates one of four at 0.75; class small (one agent) needs its agent.
    let mut agents = vec![
        ("b0", "big", Pass),
        ("b1", "big", Pass),
        ("b2", "big", Pass),
        ("b3", "big", Fail),
        ("s0", "small", Pass),
    ];
    let report = fleet_of(0.75, &agents);
    assert_eq!(outcome(&report), (Verdict::Pass, false));
    assert_eq!(tally(&report, "big"), (3, 4, 3, true));
    assert_eq!(tally(&report, "small"), (1, 1, 1, true));
    agents[4].2 = Fail;
    let report = fleet_of(0.75, &agents);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    assert_eq!(tally(&report, "small"), (0, 1, 1, false));
    // The tolerated agent keeps its note; the small class's failure has none.
    let noted: Vec<bool> = report
        .failure_diagnostics
        .iter()
        .map(|l| l.contains("(tolerated: class big passed 3 of 4, quorum 3)"))
        .collect();
    assert_eq!(noted, [true, false], "{:#?}", report.failure_diagnostics);
    // A lost agent of a class that meets its quorum without it no longer holds the run open:
    // the other class's failure decides.
    let agents = [
        ("b0", "big", Pass),
        ("b1", "big", Pass),
        ("b2", "big", Pass),
        ("b3", "big", Lost),
        ("s0", "small", Fail),
    ];
    assert_eq!(outcome(&fleet_of(0.75, &agents)), (Verdict::Fail, false));
    // A lost agent whose class misses its quorum leaves the run open, as without a quorum,
    // even though another class failed outright.
    let agents = [
        ("b0", "big", Pass),
        ("b1", "big", Pass),
        ("b2", "big", Fail),
        ("b3", "big", Fail),
        ("s0", "small", Lost),
    ];
    assert_eq!(
        outcome(&fleet_of(0.75, &agents)),
        (Verdict::Inconclusive, false)
    );
}

/// The verdict without a quorum, from the report's own fields: inconclusive when a job did
/// not complete, a runtime was unavailable or a session ended unclosed; else inconclusive for
/// an inconclusive check with nothing failed; else pass when `passed`, else fail.
fn verdict_without_quorum(report: &Report) -> Verdict {
    let open = report
        .agents
        .values()
        .any(|a| a.status != AgentStatus::Completed)
        || report
            .runtimes
            .values()
            .any(|s| s.status == RuntimeStatus::Unavailable)
        || crate::report::has_inconclusive_loss(&report.runtimes);
    let checks = report.budget_checks.as_ref().unwrap();
    let undecided = checks.values().any(|c| c.inconclusive);
    let failed = checks.values().any(|c| !c.passed && !c.inconclusive)
        || report
            .failure_diagnostics
            .iter()
            .any(|l| !l.contains(": inconclusive: "));
    if open || report.agents.is_empty() || (undecided && !failed) {
        Verdict::Inconclusive
    } else if report.passed {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

#[test]
fn a_quorum_of_one_gives_the_verdict_without_a_quorum_in_every_case() {
    use Fate::*;
    let fates = [Pass, Fail, Undecided, Lost, Unavailable, FailAndUndecided];
    let mut seen = BTreeMap::new();
    for a in fates {
        for b in fates {
            for c in fates {
                for classes in [["x", "x", "x"], ["x", "x", "y"], ["x", "y", "y"]] {
                    let agents = [
                        ("a", classes[0], a),
                        ("b", classes[1], b),
                        ("c", classes[2], c),
                    ];
                    let report = fleet_of(1.0, &agents);
                    assert_eq!(
                        report.verdict,
                        verdict_without_quorum(&report),
                        "{agents:?}: {:#?}",
                        report.failure_diagnostics
                    );
                    assert!(
                        report
                            .failure_diagnostics
                            .iter()
                            .all(|l| !l.contains("tolerated")),
                        "{agents:?}"
                    );
                    *seen.entry(report.verdict.name()).or_insert(0) += 1;
                }
            }
        }
    }
    // Every verdict occurs among the cases.
    assert_eq!(seen.len(), 3, "{seen:?}");
    // `build_report` is the quorum of one.
    let jobs = [completed("a", section()), job_of("b", Fate::Fail)];
    let mut one = report_of(Mode::All, &quorum_gate(), &jobs);
    let mut all = build_fleet_report(
        &config(Mode::All),
        &quorum_gate(),
        Quorum::ALL,
        &[agent("a"), agent("b")],
        jobs.to_vec(),
        0,
    );
    one.timestamp_utc.clear();
    all.timestamp_utc.clear();
    assert_eq!(one, all);
}

// === outliers ===

/// Class summaries of `(agent, class, metric key, value)`.
fn summaries_of(values: &[(&str, &str, &str, f64)]) -> BTreeMap<String, ClassSummary> {
    let agents: BTreeMap<String, AgentSection> = values
        .iter()
        .map(|&(id, class, _, _)| {
            (
                id.to_owned(),
                AgentSection {
                    hardware_class: class.into(),
                    labels: BTreeMap::new(),
                    facts: HostFacts::default(),
                    status: AgentStatus::Completed,
                    jobs: BTreeMap::new(),
                },
            )
        })
        .collect();
    let metrics = values
        .iter()
        .map(|&(id, _, metric, value)| (format!("{id}/{metric}"), value))
        .collect();
    class_summaries(&agents, &metrics)
}

#[test]
fn outliers_are_named_by_robust_z_score() {
    let m = "rt.runtime_overhead_pct";
    let s = summaries_of(&[
        ("a", "c", m, 10.0),
        ("b", "c", m, 11.0),
        ("c", "c", m, 9.0),
        ("d", "c", m, 10.5),
        ("e", "c", m, 30.0),
    ]);
    // Median 10.5, MAD 1.4826 × 0.5: e is 26 robust standard deviations out, c only 2.
    let outliers = &s["c"].outliers;
    assert_eq!(outliers.len(), 1, "{outliers:#?}");
    assert_eq!(
        (outliers[0].agent.as_str(), outliers[0].metric.as_str()),
        ("e", m)
    );
    assert_eq!(outliers[0].value, 30.0);
    let z = outliers[0].robust_z.unwrap();
    assert!(
        (z - 19.5 / (0.5 * 1.482_602_218_505_602)).abs() < 1e-9,
        "{z}"
    );
    assert_eq!(s["c"].gated, 5);

    // Just inside and just outside the cut-off of 3.5, either side: with 9, 10, 10 and 11
    // the median stays 10 and the MAD 1.4826 wherever the fifth value goes.
    let around = |z: f64| {
        summaries_of(&[
            ("a", "c", m, 9.0),
            ("b", "c", m, 10.0),
            ("c", "c", m, 10.0),
            ("d", "c", m, 11.0),
            ("e", "c", m, 10.0 + z * 1.482_602_218_505_602),
        ])["c"]
            .outliers
            .iter()
            .map(|o| o.robust_z.unwrap())
            .collect::<Vec<f64>>()
    };
    assert!(around(3.49).is_empty());
    assert!(around(-3.49).is_empty());
    for z in [3.51, -3.51] {
        let named = around(z);
        assert!(
            named.len() == 1 && (named[0] - z).abs() < 1e-9,
            "{z}: {named:?}"
        );
    }

    // Fewer than three agents: nothing to compare against.
    let s = summaries_of(&[("a", "c", m, 10.0), ("b", "c", m, 1e6)]);
    assert!(s["c"].outliers.is_empty());
    // Classes are judged apart: e is not an outlier among its own class.
    let s = summaries_of(&[
        ("a", "c", m, 10.0),
        ("b", "c", m, 11.0),
        ("c", "c", m, 9.0),
        ("e", "other", m, 30.0),
    ]);
    assert!(s.values().all(|c| c.outliers.is_empty()));
}

#[test]
fn with_no_spread_any_value_off_the_shared_one_is_an_outlier() {
    let m = "rt.rollover_count";
    // Four agents share 3 (the MAD is 0); the one that differs is named, without a z-score.
    let s = summaries_of(&[
        ("a", "c", m, 3.0),
        ("b", "c", m, 3.0),
        ("c", "c", m, 3.0),
        ("d", "c", m, 3.0),
        ("e", "c", m, 4.0),
    ]);
    assert_eq!(
        s["c"].outliers,
        [Outlier {
            agent: "e".into(),
            metric: m.into(),
            value: 4.0,
            robust_z: None
        }]
    );
    // All equal: no outlier.
    let s = summaries_of(&[("a", "c", m, 3.0), ("b", "c", m, 3.0), ("c", "c", m, 3.0)]);
    assert!(s["c"].outliers.is_empty());
    // Three of five share the median: the two others are both named.
    let s = summaries_of(&[
        ("a", "c", m, 3.0),
        ("b", "c", m, 3.0),
        ("c", "c", m, 3.0),
        ("d", "c", m, 2.0),
        ("e", "c", m, 9.0),
    ]);
    let named: Vec<&str> = s["c"].outliers.iter().map(|o| o.agent.as_str()).collect();
    assert_eq!(named, ["d", "e"]);
}

#[test]
fn gpu_instances_pool_per_class_but_agents_are_counted_once() {
    let s = summaries_of(&[
        ("a", "g", "gpumemprof_cuda@0.max_rss_delta_bytes", 10.0),
        ("a", "g", "gpumemprof_cuda@1.max_rss_delta_bytes", 10.0),
        ("b", "g", "gpumemprof_cuda@0.max_rss_delta_bytes", 10.0),
        ("b", "g", "gpumemprof_cuda@1.max_rss_delta_bytes", 99.0),
    ]);
    // Two agents: too few, whatever the instance count.
    assert!(s["g"].outliers.is_empty());
    let s = summaries_of(&[
        ("a", "g", "gpumemprof_cuda@0.max_rss_delta_bytes", 10.0),
        ("a", "g", "gpumemprof_cuda@1.max_rss_delta_bytes", 10.0),
        ("b", "g", "gpumemprof_cuda@0.max_rss_delta_bytes", 10.0),
        ("b", "g", "gpumemprof_cuda@1.max_rss_delta_bytes", 10.0),
        ("c", "g", "gpumemprof_cuda@0.max_rss_delta_bytes", 10.0),
        ("c", "g", "gpumemprof_cuda@1.max_rss_delta_bytes", 99.0),
    ]);
    assert_eq!(
        s["g"].outliers,
        [Outlier {
            agent: "c".into(),
            metric: "gpumemprof_cuda@1.max_rss_delta_bytes".into(),
            value: 99.0,
            robust_z: None
        }]
    );
    assert_eq!(
        s["g"].metrics["gpumemprof_cuda.max_rss_delta_bytes"].agents,
        6
    );
}

#[test]
fn an_outlier_is_advice_and_does_not_change_the_verdict() {
    // Five agents within budget; one uses far more memory than its peers.
    let mut jobs: Vec<JobRecord> = (0..4)
        .map(|i| completed(&format!("a{i}"), with_rss_delta(1_000 + i)))
        .collect();
    jobs.push(completed("a4", with_rss_delta(1_900)));
    let report = report_of(Mode::All, &quorum_gate(), &jobs);
    assert_eq!(
        outcome(&report),
        (Verdict::Pass, true),
        "{:#?}",
        report.failure_diagnostics
    );
    let class = &report.hardware_classes["cpu-test-2c"];
    let named: Vec<(&str, &str)> = class
        .outliers
        .iter()
        .map(|o| (o.agent.as_str(), o.metric.as_str()))
        .collect();
    assert_eq!(named, [("a4", "gpumemprof_cpu.max_rss_delta_bytes")]);
    // Median 1002, MAD 1.4826: 898 / 1.4826 = 605.7.
    assert_eq!(
        report.fleet_advice,
        [
            "a4/gpumemprof_cpu.max_rss_delta_bytes: 1900 is an outlier in class cpu-test-2c (robust z 605.7 against the class median 1002 of 5 values); advice only, not part of the verdict: look at that host (another workload, throttling, a different configuration) before trusting the class's figures"
        ]
    );
    // Without spread the line says what the others share.
    let mut jobs: Vec<JobRecord> = (0..4)
        .map(|i| completed(&format!("a{i}"), with_rss_delta(1_000)))
        .collect();
    jobs.push(completed("a4", with_rss_delta(1_001)));
    let report = report_of(Mode::All, &quorum_gate(), &jobs);
    assert_eq!(
        report.fleet_advice,
        [
            "a4/gpumemprof_cpu.max_rss_delta_bytes: 1001 is an outlier in class cpu-test-2c (more than half of the class's 5 values are exactly 1000); advice only, not part of the verdict: look at that host (another workload, throttling, a different configuration) before trusting the class's figures"
        ]
    );
    // Serialized with the class, and absent where there are none.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["hardware_classes"]["cpu-test-2c"]["outliers"][0]["agent"],
        "a4"
    );
    let quiet = report_of(Mode::All, &quorum_gate(), &[completed(AGENT, section())]);
    let json = serde_json::to_value(&quiet).unwrap();
    assert!(
        json["hardware_classes"]["cpu-test-2c"]
            .get("outliers")
            .is_none()
    );
    assert!(json.get("fleet_advice").is_none());
    assert_eq!(json["hardware_classes"]["cpu-test-2c"]["quorum"], 1);
}

// === multiple comparisons ===

/// A regression gate on overhead-only sections: baseline 10 % for both overhead percentages
/// and 1,024 bytes of artifact growth; tolerance 5 points and 0 bytes.
fn overhead_regression_gate() -> Gate {
    let metrics = BTreeMap::from([
        (format!("{RUNTIME}.runtime_overhead_pct"), 10.0),
        (format!("{RUNTIME}.cpu_overhead_pct"), 10.0),
        (format!("{RUNTIME}.artifact_growth_bytes"), 1_024.0),
    ]);
    let tolerances = BTreeMap::from([
        (format!("{RUNTIME}.runtime_overhead_pct"), 5.0),
        (format!("{RUNTIME}.cpu_overhead_pct"), 5.0),
        (format!("{RUNTIME}.artifact_growth_bytes"), 0.0),
    ]);
    Gate::Regression(
        Baseline {
            path: "baseline.json".into(),
            version: REPORT_VERSION.into(),
            config: config(Mode::Overhead).comparable(),
            metrics,
            distributions: BTreeMap::new(),
        },
        Tolerances {
            path: "tolerances.json".into(),
            tolerances,
        },
    )
}

/// An overhead-only section whose `runtime_overhead_pct` is (estimate, lo, hi); the CPU
/// overhead is 10 % in [5 %, 15 %], on its baseline.
fn overhead_only((value, lo, hi): (f64, f64, f64)) -> RuntimeSection {
    let mut s = section();
    s.soak = None;
    s.overhead = Some(Box::new(overhead((value, lo, hi))));
    s
}

/// On its baseline: delta 0 in [−3, 3].
const STEADY: (f64, f64, f64) = (10.0, 7.0, 13.0);
/// Delta 6 in [1.6, 10.4]: beyond the tolerance of 5 and above 0, so the dual criterion
/// fails it; one-sided p = 1 − Φ(6 / (8.8 / 3.919928)) = 0.0038.
const MARGINAL: (f64, f64, f64) = (16.0, 11.6, 20.4);
/// Delta 30 in [25, 35]: p about 10⁻³¹.
const STRONG: (f64, f64, f64) = (40.0, 35.0, 45.0);

fn regression_fleet(fates: &[(f64, f64, f64)]) -> Report {
    let jobs: Vec<JobRecord> = fates
        .iter()
        .enumerate()
        .map(|(i, &o)| completed(&format!("a{i:02}"), overhead_only(o)))
        .collect();
    report_of(Mode::Overhead, &overhead_regression_gate(), &jobs)
}

#[test]
fn holm_turns_a_marginal_regression_among_many_checks_inconclusive_and_keeps_a_strong_one() {
    let marginal = "a00/gpumemprof_cpu.runtime_overhead_pct";
    // One agent: two interval-gated checks; 2 × 0.0038 < 0.025, so the regression stands.
    let report = regression_fleet(&[MARGINAL]);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    let check = &report.regression_checks.as_ref().unwrap()[marginal];
    let p = check.p_value.unwrap();
    assert!((p - 0.003_76).abs() < 1e-4, "{p}");
    assert!((check.p_adjusted.unwrap() - 2.0 * p).abs() < 1e-12);
    assert!(!check.passed && !check.inconclusive);
    // Checks without an interval get no p-value.
    let growth =
        &report.regression_checks.as_ref().unwrap()["a00/gpumemprof_cpu.artifact_growth_bytes"];
    assert_eq!((growth.p_value, growth.p_adjusted), (None, None));

    // Ten agents, twenty comparisons: 20 × 0.0038 ≥ 0.025, so it is not significant.
    let mut fates = vec![MARGINAL];
    fates.extend([STEADY; 9]);
    let report = regression_fleet(&fates);
    assert_eq!(
        outcome(&report),
        (Verdict::Inconclusive, false),
        "{:#?}",
        report.failure_diagnostics
    );
    let check = &report.regression_checks.as_ref().unwrap()[marginal];
    assert!(!check.passed && check.inconclusive && check.not_significant());
    assert!((check.p_adjusted.unwrap() - 20.0 * check.p_value.unwrap()).abs() < 1e-12);
    assert_eq!(
        report.failure_diagnostics,
        [format!(
            "{marginal}: inconclusive: delta 6.00% 95% [1.60%, 10.40%] > 5.00%, but the regression is not significant after correcting for 20 comparisons (p 0.004, Holm-adjusted p 0.075 >= 0.025); next knob: none (not a tuning problem: resolve with more pairs (knob overhead_min_pairs, or overhead_max_seconds), the overhead trial files on a RAM scratch root (--overhead-scratch-root), or a quieter host)"
        )]
    );
    // The serialized check carries both p-values.
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["regression_checks"][marginal]["p_adjusted"].is_f64());

    // A strong regression among them stays a failure, and decides the verdict.
    fates[1] = STRONG;
    let report = regression_fleet(&fates);
    assert_eq!(outcome(&report), (Verdict::Fail, false));
    let checks = report.regression_checks.as_ref().unwrap();
    let strong = &checks["a01/gpumemprof_cpu.runtime_overhead_pct"];
    assert!(!strong.passed && !strong.inconclusive);
    assert!(strong.p_adjusted.unwrap() < 1e-20);
    assert!(checks[marginal].inconclusive);
    assert!(report.failure_diagnostics[0].starts_with(
        "a01/gpumemprof_cpu.runtime_overhead_pct: delta 30.00% 95% [25.00%, 35.00%] > 5.00%"
    ));
}

/// Every metric of every section with status ok, under `<section>.<metric>`, whatever order
/// the section names put the keys in (`a/x-1.…` sorts before `a/x.…`, though `a/x` comes
/// first), and nothing of a runtime that was unavailable.
#[test]
fn flattened_metrics_cover_every_section_in_key_order() {
    let mut unavailable = section();
    unavailable.status = RuntimeStatus::Unavailable;
    let runtimes = BTreeMap::from([
        ("a/x".to_owned(), section()),
        ("a/x-1".to_owned(), section()),
        ("b/x".to_owned(), unavailable),
    ]);
    let metrics = flatten_metrics(&runtimes);
    let mut expected = crate::report::expected_metric_keys(["a/x", "a/x-1"], Mode::All);
    expected.sort();
    assert_eq!(metrics.keys().cloned().collect::<Vec<_>>(), expected);
    assert_eq!(metrics["a/x-1.rollover_count"], 3.0);
    assert_eq!(metrics["a/x.max_rss_delta_bytes"], 1_000.0);
    assert_eq!(
        metrics["a/x.cpu_overhead_pct"],
        section().overhead.unwrap().metrics.cpu_overhead_pct
    );
    let intervals = flatten_intervals(&runtimes);
    assert!(
        intervals.keys().all(|k| k.starts_with("a/")),
        "{intervals:?}"
    );
    assert!(intervals.contains_key("a/x-1.runtime_overhead_pct"));
}
