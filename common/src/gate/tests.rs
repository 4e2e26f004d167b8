use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::config::RuntimePlan;
use crate::config::{Mode, Profile, RetentionValidationLimits};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn config() -> ComparableConfig {
    ComparableConfig {
        workload: crate::config::Workload {
            profile: Profile::Pr,
            mode: Mode::All,
            iterations: 5_000,
            allocation_kb: 512,
            kind: crate::config::WorkloadKind::Reference,
        },
        profile_equivalent_hours: 6.0,
        runtimes: BTreeMap::from([(
            "gpumemprof_cpu".to_owned(),
            RuntimePlan {
                default_interval: 0.1,
                overhead_sample_count: 5_000,
                soak_sample_count: 216_000,
            },
        )]),
        retention_validation: RetentionValidationLimits::default(),
        knobs: BTreeMap::new(),
    }
}

/// The one-line message of loading `text` as a budget file.
fn budget_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "b.json", text);
    let err = load_budgets(&path).unwrap_err();
    assert_eq!(err.file, path.display().to_string());
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    err.message
}

#[test]
fn every_bad_budget_file_is_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = load_budgets(&dir.path().join("nope.json")).unwrap_err();
    assert!(
        missing.message.starts_with("Budget file cannot be read: "),
        "{missing}"
    );
    assert!(budget_error("{").starts_with("Budget file cannot be read: invalid JSON"));
    assert_eq!(budget_error("[1]"), "Budget file must be a JSON object");
    assert_eq!(
        budget_error(r#"{"version": "v0.3", "budgets": {"a": 1}}"#),
        "Budget file version must be v0.4 (key 'version' is \"v0.3\")"
    );
    assert_eq!(
        budget_error(r#"{"budgets": {"a": 1}}"#),
        "Budget file version must be v0.4 (key 'version' is missing)"
    );
    assert_eq!(
        budget_error(r#"{"version": "v0.4"}"#),
        "Budget file missing key 'budgets'"
    );
    assert_eq!(
        budget_error(r#"{"version": "v0.4", "budgets": {}}"#),
        "Budget file key 'budgets' must not be empty"
    );
    assert_eq!(
        budget_error(r#"{"version": "v0.4", "budgets": {"a.x": "many"}}"#),
        "Budget file key 'budgets.a.x' is not a number: \"many\""
    );
    assert_eq!(
        budget_error(r#"{"version": "v0.4", "budgets": [1]}"#),
        "Budget file key 'budgets' must be a JSON object of metric values"
    );
}

#[test]
fn a_metric_without_a_threshold_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "b.json",
        r#"{"version": "v0.4", "budgets": {"r.a": 1}}"#,
    );
    let budgets = load_budgets(&path).unwrap();
    let err = budgets
        .require(
            &["r.a".to_owned(), "r.c".to_owned(), "r.b".to_owned()],
            &no_classes,
        )
        .unwrap_err();
    assert_eq!(err.message, "Budget file missing metric keys: r.c, r.b");
    let path = write(
        &dir,
        "t.json",
        r#"{"version": "v0.4", "tolerances": {"r.a": 1}}"#,
    );
    let err = load_tolerances(&path)
        .unwrap()
        .require(&["r.z".to_owned()], &no_classes)
        .unwrap_err();
    assert_eq!(err.message, "Tolerance file missing metric keys: r.z");
}

#[test]
fn budget_gate_is_value_at_most_max() {
    let budgets = Budgets {
        path: "b".into(),
        budgets: BTreeMap::from([("r.a".to_owned(), 10.0), ("r.b".to_owned(), 10.0)]),
    };
    let metrics = BTreeMap::from([("r.a".to_owned(), 10.0), ("r.b".to_owned(), 10.5)]);
    let checks = budgets.check(&metrics, &no_classes);
    assert!(checks["r.a"].passed);
    assert!(!checks["r.b"].passed);
    assert_eq!(checks["r.b"].max_allowed, 10.0);
}

fn baseline_text(config: &ComparableConfig) -> String {
    serde_json::json!({
        "version": "v0.4",
        "description": "test",
        "config": config,
        "metrics": {"r.a": 100.0, "r.b": 5.0},
    })
    .to_string()
}

#[test]
fn regression_gate_and_the_config_match_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "base.json", &baseline_text(&config()));
    let baseline = load_baseline(&path).unwrap();
    let expected = vec!["r.a".to_owned(), "r.b".to_owned()];
    baseline.require(&expected, &config(), &no_classes).unwrap();

    let mut other = config();
    other.workload.iterations = 500;
    let err = baseline
        .require(&expected, &other, &no_classes)
        .unwrap_err();
    assert!(
        err.message
            .starts_with("Baseline config mismatch: current={"),
        "{err}"
    );
    assert!(err.message.contains("\"iterations\":500"));
    assert!(err.message.contains("baseline={"));

    let tolerances = Tolerances {
        path: "t".into(),
        tolerances: BTreeMap::from([("r.a".to_owned(), 10.0), ("r.b".to_owned(), 0.0)]),
    };
    // An improvement (negative delta) passes; a delta above the tolerance fails.
    let metrics = BTreeMap::from([("r.a".to_owned(), 50.0), ("r.b".to_owned(), 6.0)]);
    let checks = tolerances.check(&baseline, &metrics, &no_classes);
    assert!(checks["r.a"].passed);
    assert_eq!(checks["r.a"].delta, -50.0);
    assert!(!checks["r.b"].passed);
    assert_eq!(checks["r.b"].delta, 1.0);
}

#[test]
fn a_bad_baseline_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = serde_json::to_value(config()).unwrap();
    config["iterations"] = serde_json::json!("lots");
    let text = serde_json::json!({"version": "v0.4", "config": config, "metrics": {"r.a": 1}});
    let path = write(&dir, "base.json", &text.to_string());
    let err = load_baseline(&path).unwrap_err();
    assert!(
        err.message
            .starts_with("Baseline file config key 'iterations' is not valid: "),
        "{err}"
    );
    config["iterations"] = serde_json::json!(5_000);
    config["runtimes"]["gpumemprof_cpu"]["overhead_sample_count"] = serde_json::json!("many");
    let text = serde_json::json!({"version": "v0.4", "config": config, "metrics": {"r.a": 1}});
    let path = write(&dir, "base.json", &text.to_string());
    let err = load_baseline(&path).unwrap_err();
    assert!(
        err.message.starts_with(
            "Baseline file config key 'runtimes.gpumemprof_cpu.overhead_sample_count' is not valid"
        ),
        "{err}"
    );
    let text = serde_json::json!({"version": "v0.4", "metrics": {"r.a": 1}});
    let path = write(&dir, "base.json", &text.to_string());
    assert_eq!(
        load_baseline(&path).unwrap_err().message,
        "Baseline file missing key 'config'"
    );
}

#[test]
fn fleet_keys_resolve_agent_then_class_then_plain() {
    let budgets = Budgets {
        path: "b".into(),
        budgets: BTreeMap::from([
            ("rt.m".to_owned(), 10.0),
            ("cpu-x-2c/rt.m".to_owned(), 20.0),
            ("a1/rt.m".to_owned(), 30.0),
        ]),
    };
    let class_of = |agent: &str| (agent != "a3").then(|| "cpu-x-2c".to_owned());
    let metrics = BTreeMap::from([
        ("a1/rt.m".to_owned(), 25.0),
        ("a2/rt.m".to_owned(), 25.0),
        ("a3/rt.m".to_owned(), 25.0),
    ]);
    let checks = budgets.check(&metrics, &class_of);
    assert_eq!(
        (
            checks["a1/rt.m"].threshold_key.as_str(),
            checks["a1/rt.m"].passed
        ),
        ("a1/rt.m", true)
    );
    assert_eq!(
        (
            checks["a2/rt.m"].threshold_key.as_str(),
            checks["a2/rt.m"].passed
        ),
        ("cpu-x-2c/rt.m", false)
    );
    assert_eq!(
        (
            checks["a3/rt.m"].threshold_key.as_str(),
            checks["a3/rt.m"].passed
        ),
        ("rt.m", false)
    );
    // Coverage names the plain key a seed-format file would add.
    let err = budgets
        .require(
            &["a1/rt.other".to_owned(), "a2/rt.other".to_owned()],
            &class_of,
        )
        .unwrap_err();
    assert_eq!(err.message, "Budget file missing metric keys: rt.other");
}

fn baseline_with(metrics: &[(&str, f64)]) -> Baseline {
    Baseline {
        path: "base".into(),
        version: "v0.4".into(),
        config: config(),
        metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        distributions: BTreeMap::new(),
    }
}

#[test]
fn deterministic_counters_are_checked_both_ways_at_and_around_the_tolerance() {
    // rollover_count is exact (tolerance 0); pruned_segment_count allows 2 either way.
    let baseline = baseline_with(&[("r.rollover_count", 21.0), ("r.pruned_segment_count", 14.0)]);
    let tolerances = Tolerances {
        path: "t".into(),
        tolerances: BTreeMap::from([
            ("r.rollover_count".to_owned(), 0.0),
            ("r.pruned_segment_count".to_owned(), 2.0),
        ]),
    };
    let outcome = |rollovers: f64, pruned: f64| {
        let metrics = BTreeMap::from([
            ("r.rollover_count".to_owned(), rollovers),
            ("r.pruned_segment_count".to_owned(), pruned),
        ]);
        let checks = tolerances.check(&baseline, &metrics, &no_classes);
        assert!(checks.values().all(|c| c.two_sided));
        (
            checks["r.rollover_count"].passed,
            checks["r.pruned_segment_count"].passed,
        )
    };
    assert_eq!(outcome(21.0, 14.0), (true, true), "equal to the baseline");
    assert_eq!(
        outcome(20.0, 12.0),
        (false, true),
        "one below / at −tolerance"
    );
    assert_eq!(
        outcome(22.0, 16.0),
        (false, true),
        "one above / at +tolerance"
    );
    assert_eq!(
        outcome(2.0, 11.0),
        (false, false),
        "far below / just past −tolerance"
    );
    assert_eq!(outcome(21.0, 17.0), (true, false), "just past +tolerance");
}

#[test]
fn every_exact_counter_of_the_shipped_tolerances_is_two_sided_and_overhead_stays_one_sided() {
    let shipped = load_tolerances(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks/v0.4_tolerances.json"),
    )
    .unwrap();
    for metric in crate::report::TWO_SIDED_METRICS {
        for runtime in ["gpumemprof_cpu", "tfmemprof_cpu"] {
            let key = format!("{runtime}.{metric}");
            assert_eq!(shipped.tolerances.get(&key), Some(&0.0), "{key} is exact");
        }
    }
    let one_sided = [
        "r.runtime_overhead_pct",
        "r.cpu_overhead_pct",
        "r.artifact_growth_bytes",
        "r.rss_growth_per_24h_equiv",
        "r.max_rss_delta_bytes",
        "r.final_retained_bytes",
        "r.pruned_bytes",
        "r.collector_failure_event_count",
    ];
    let baseline = baseline_with(&one_sided.map(|k| (k, 100.0)));
    let tolerances = Tolerances {
        path: "t".into(),
        tolerances: one_sided.iter().map(|k| ((*k).to_owned(), 0.0)).collect(),
    };
    // Far below the baseline is an improvement for every one of them.
    let metrics = one_sided.iter().map(|k| ((*k).to_owned(), 0.0)).collect();
    for (metric, check) in tolerances.check(&baseline, &metrics, &no_classes) {
        assert!(check.passed && !check.two_sided, "{metric}: {check:?}");
    }
}

#[test]
fn a_two_sided_counter_without_a_baseline_or_tolerance_fails() {
    let baseline = baseline_with(&[("r.other", 1.0)]);
    let tolerances = Tolerances {
        path: "t".into(),
        tolerances: BTreeMap::from([("r.other".to_owned(), 0.0)]),
    };
    let metrics = BTreeMap::from([("r.rollover_count".to_owned(), 3.0)]);
    let checks = tolerances.check(&baseline, &metrics, &no_classes);
    assert!(!checks["r.rollover_count"].passed);
}

fn interval(lo: f64, hi: f64) -> crate::stats::Interval {
    crate::stats::Interval { lo, hi }
}

#[test]
fn a_budget_with_an_interval_is_decided_by_its_bounds() {
    let budgets = Budgets {
        path: "b".into(),
        budgets: BTreeMap::from([("r.pct".to_owned(), 10.0), ("r.count".to_owned(), 10.0)]),
    };
    // (interval, passed, inconclusive): the point value 9 lies inside every interval.
    for ((lo, hi), passed, inconclusive) in [
        ((8.0, 9.5), true, false),
        ((8.0, 10.0), true, false),
        ((8.0, 10.001), false, true),
        ((9.0, 12.0), false, true),
        ((10.0, 12.0), false, true),
        ((10.001, 12.0), false, false),
    ] {
        let value = (lo + hi) / 2.0;
        let metrics = BTreeMap::from([("r.pct".to_owned(), value), ("r.count".to_owned(), 10.0)]);
        let intervals = BTreeMap::from([("r.pct".to_owned(), interval(lo, hi))]);
        let checks = budgets.check_intervals(&metrics, &intervals, &no_classes);
        let c = &checks["r.pct"];
        assert_eq!(
            (c.passed, c.inconclusive),
            (passed, inconclusive),
            "[{lo}, {hi}]"
        );
        assert_eq!((c.lo, c.hi), (Some(lo), Some(hi)));
        // A metric without an interval stays exact: 10 <= 10.
        let exact = &checks["r.count"];
        assert!(exact.passed && !exact.inconclusive);
        assert_eq!((exact.lo, exact.hi), (None, None));
    }
    // A NaN bound fails rather than passing.
    let metrics = BTreeMap::from([("r.pct".to_owned(), 1.0)]);
    let intervals = BTreeMap::from([("r.pct".to_owned(), interval(f64::NAN, 2.0))]);
    let c = &budgets.check_intervals(&metrics, &intervals, &no_classes)["r.pct"];
    assert!(!c.passed && !c.inconclusive);
}

#[test]
fn a_regression_with_an_interval_is_the_dual_criterion() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "base.json", &baseline_text(&config()));
    // Baseline r.a = 100, tolerance 10.
    let baseline = load_baseline(&path).unwrap();
    let tolerances = Tolerances {
        path: "t".into(),
        tolerances: BTreeMap::from([("r.a".to_owned(), 10.0), ("r.b".to_owned(), 0.0)]),
    };
    // (current, current's interval, passed, inconclusive)
    for (current, (lo, hi), passed, inconclusive) in [
        // Within the tolerance, shown: pass (an improvement too).
        (105.0, (101.0, 110.0), true, false),
        (80.0, (70.0, 90.0), true, false),
        // Significant and material: fail.
        (112.0, (100.5, 120.0), false, false),
        // Material shift but the interval reaches 0: inconclusive.
        (115.0, (100.0, 130.0), false, true),
        // Significant, within the tolerance, though the interval reaches past it: not flagged.
        (108.0, (101.0, 111.0), true, false),
        // Exactly at the tolerance, interval above 0: not material (delta must exceed it).
        (110.0, (105.0, 110.0), true, false),
        (110.0, (105.0, 115.0), true, false),
        // Just beyond it, with the interval reaching 0: inconclusive.
        (110.5, (99.0, 125.0), false, true),
    ] {
        let metrics = BTreeMap::from([("r.a".to_owned(), current), ("r.b".to_owned(), 5.0)]);
        let intervals = BTreeMap::from([("r.a".to_owned(), interval(lo, hi))]);
        let checks = tolerances.check_intervals(&baseline, &metrics, &intervals, &no_classes);
        let c = &checks["r.a"];
        assert_eq!(
            (c.passed, c.inconclusive),
            (passed, inconclusive),
            "{current} [{lo}, {hi}]"
        );
        assert_eq!(
            (c.delta_lo, c.delta_hi),
            (Some(lo - 100.0), Some(hi - 100.0))
        );
        let exact = &checks["r.b"];
        assert!(exact.passed && !exact.inconclusive && exact.delta_lo.is_none());
    }
}

#[test]
fn thresholds_resolve_most_specific_first() {
    let class = |agent: &str| (agent == "a1").then(|| "cpu-x-2c".to_owned());
    assert_eq!(
        threshold_candidates("a1/rt.m", class),
        ["a1/rt.m", "cpu-x-2c/rt.m", "rt.m"]
    );
    assert_eq!(threshold_candidates("a2/rt.m", class), ["a2/rt.m", "rt.m"]);
    assert_eq!(threshold_candidates("rt.m", class), ["rt.m"]);
    assert_eq!(
        threshold_candidates("a1/cuda@1.m", class),
        ["a1/cuda@1.m", "a1/cuda.m", "cpu-x-2c/cuda.m", "cuda.m"]
    );
}

/// A calibrated baseline: r.a centre 100 (n 10, spread 4, with intervals), r.b centre 5
/// (n 10, spread 2), with `distributions` replaced by `edit`.
fn calibrated_text(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut doc = serde_json::json!({
        "version": "v0.4",
        "description": "test",
        "config": config(),
        "metrics": {"r.a": 100.0, "r.b": 5.0},
        "distributions": {
            "r.a": {"n": 10, "centre": 100.0, "spread": 4.0, "interval_half_width": 3.0},
            "r.b": {"n": 10, "centre": 5.0, "spread": 2.0},
        },
    });
    edit(&mut doc);
    doc.to_string()
}

fn calibrated_error(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "cal.json", &calibrated_text(edit));
    let err = load_baseline(&path).unwrap_err();
    assert!(!err.to_string().contains('\n'), "{err}");
    err.message
}

#[test]
fn a_calibrated_baseline_loads_its_distributions_and_a_point_baseline_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let calibrated = load_baseline(&write(&dir, "cal.json", &calibrated_text(|_| {}))).unwrap();
    assert!(!calibrated.is_point());
    let a = calibrated.distributions["r.a"];
    assert_eq!(
        (a.n, a.centre, a.spread, a.interval_half_width),
        (10, 100.0, 4.0, Some(3.0))
    );
    // spread × √(1 + π / 20) and 1.96 × spread × √(π / 20).
    assert!((a.noise() - 4.302_705).abs() < 1e-5, "{}", a.noise());
    assert!(
        (a.centre_half_width() - 3.107_192).abs() < 1e-5,
        "{}",
        a.centre_half_width()
    );
    let point = load_baseline(&write(&dir, "point.json", &baseline_text(&config()))).unwrap();
    assert!(point.is_point());
}

#[test]
fn every_bad_distribution_is_one_line_naming_its_key() {
    assert_eq!(
        calibrated_error(|d| d["distributions"] = serde_json::json!([1])),
        "Baseline file key 'distributions' must be a JSON object"
    );
    assert_eq!(
        calibrated_error(|d| d["distributions"]["r.a"]["n"] = 2.into()),
        "Baseline file key 'distributions.r.a'.n must be at least 3: 2"
    );
    assert_eq!(
        calibrated_error(|d| d["distributions"]["r.b"]["spread"] = (-1.0).into()),
        "Baseline file key 'distributions.r.b'.spread must be a number at least 0: -1"
    );
    assert_eq!(
        calibrated_error(|d| d["distributions"]["r.a"]["centre"] = 90.0.into()),
        "Baseline file key 'distributions.r.a'.centre is 90 but 'metrics.r.a' is 100; they must agree"
    );
    assert_eq!(
        calibrated_error(|d| d["distributions"]["r.z"] = d["distributions"]["r.b"].clone()),
        "Baseline file key 'distributions.r.z' has no value in 'metrics'"
    );
    let unknown = calibrated_error(|d| d["distributions"]["r.a"]["sigma"] = 1.into());
    assert!(
        unknown
            .starts_with("Baseline file key 'distributions.r.a'.sigma is not valid: unknown field"),
        "{unknown}"
    );
    let wrong_type = calibrated_error(|d| d["distributions"]["r.a"]["n"] = "ten".into());
    assert!(
        wrong_type.starts_with("Baseline file key 'distributions.r.a'.n is not valid"),
        "{wrong_type}"
    );
}

#[test]
fn a_calibrated_regression_needs_a_shift_beyond_three_times_the_noise() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = load_baseline(&write(&dir, "cal.json", &calibrated_text(|_| {}))).unwrap();
    let tolerances = Tolerances {
        path: "t".into(),
        tolerances: BTreeMap::from([("r.a".to_owned(), 10.0), ("r.b".to_owned(), 0.0)]),
    };
    // r.a: noise 4.3027, material max(10, 12.9081) = 12.9081; the interval widens by 3.1072 a side.
    let widen = 3.107_192;
    // (current, current's interval, passed, inconclusive)
    for (current, (lo, hi), passed, inconclusive) in [
        // Within the material shift: pass, however far the interval reaches.
        (102.0, (99.0, 105.0), true, false),
        (109.0, (108.0, 109.8), true, false),
        (112.9, (105.0, 119.0), true, false),
        // Significant and beyond 3 × noise: fail.
        (120.0, (114.0, 126.0), false, false),
        (113.0, (112.0, 114.0), false, false),
        // Beyond 3 × noise, but the widened interval reaches 0: inconclusive.
        (115.0, (102.5, 127.0), false, true),
        (113.0, (103.1, 114.0), false, true),
    ] {
        let metrics = BTreeMap::from([("r.a".to_owned(), current), ("r.b".to_owned(), 5.0)]);
        let intervals = BTreeMap::from([("r.a".to_owned(), interval(lo, hi))]);
        let c = &tolerances.check_intervals(&baseline, &metrics, &intervals, &no_classes)["r.a"];
        assert_eq!(
            (c.passed, c.inconclusive),
            (passed, inconclusive),
            "{current} [{lo}, {hi}]: {c:?}"
        );
        assert!((c.delta_lo.unwrap() - (lo - 100.0 - widen)).abs() < 1e-5);
        assert!((c.delta_hi.unwrap() - (hi - 100.0 + widen)).abs() < 1e-5);
        assert!((c.noise.unwrap() - 4.302_705).abs() < 1e-5);
        assert!((c.material_shift.unwrap() - 12.908_116).abs() < 1e-5);
    }
    // r.b has no interval: a point rule against max(0, 3 × 2.1514) = 6.4541.
    for (current, passed) in [(11.4, true), (11.5, false), (0.0, true)] {
        let metrics = BTreeMap::from([("r.b".to_owned(), current)]);
        let c =
            &tolerances.check_intervals(&baseline, &metrics, &BTreeMap::new(), &no_classes)["r.b"];
        assert_eq!(c.passed, passed, "{current}: {c:?}");
        assert!(!c.inconclusive);
    }
    // The same checks on a point baseline: noise 0, the tolerance alone, no noise fields.
    let point = load_baseline(&write(&dir, "point.json", &baseline_text(&config()))).unwrap();
    let metrics = BTreeMap::from([("r.a".to_owned(), 113.0), ("r.b".to_owned(), 5.0)]);
    let intervals = BTreeMap::from([("r.a".to_owned(), interval(112.0, 114.0))]);
    let c = &tolerances.check_intervals(&point, &metrics, &intervals, &no_classes)["r.a"];
    assert!(!c.passed && !c.inconclusive);
    assert_eq!(
        (c.noise, c.material_shift, c.delta_lo),
        (None, None, Some(12.0))
    );
}

/// The resolver the checks use finds what the first of [`threshold_candidates`] held by the
/// map gives, for every subset of the candidates a map may hold, metric after metric with one
/// resolver (its class lookup is kept from one metric to the next).
#[test]
fn the_resolver_takes_the_first_candidate_the_map_holds() {
    let class = |agent: &str| (agent != "a3").then(|| format!("class-of-{agent}"));
    let metrics = [
        "a1/rt.m",
        "a1/rt.n",
        "a1/cuda@1.m",
        "a2/cuda@0",
        "a2/rt.m",
        "a3/cuda@1.m",
        "a1/rt.m",
        "rt.m",
        "cuda@1.m",
    ];
    let mut resolver = Resolver::new(&class);
    let mut checked = 0;
    for metric in metrics {
        let candidates = threshold_candidates(metric, class);
        for held in 0u32..1 << candidates.len() {
            let map: BTreeMap<String, f64> = candidates
                .iter()
                .enumerate()
                .filter(|(i, _)| held & (1 << i) != 0)
                .map(|(i, key)| (key.clone(), i as f64))
                .collect();
            let expected = candidates
                .iter()
                .find_map(|key| map.get(key).map(|v| (key.clone(), *v)));
            assert_eq!(
                resolver.resolve(&map, metric),
                expected,
                "{metric}, {map:?}"
            );
            checked += 1;
        }
    }
    // 8 + 8 + 16 + 16 + 8 + 8 + 8 + 2 + 2 maps: every candidate list was as long as expected.
    assert_eq!(checked, 76);
}
