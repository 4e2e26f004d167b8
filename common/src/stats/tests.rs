//! Every statistic against values computed once with SciPy / statsmodels
//! (`fixtures/make_fixtures.py`), the decision rules at and around their boundaries, input
//! errors, and invariants as property tests.

use proptest::prelude::*;
use serde::Deserialize;

use super::*;

/// Relative tolerance for values the fixtures compute with the same method.
const REL: f64 = 1e-9;

fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    let scale = expected.abs().max(1e-300);
    assert!(
        (actual - expected).abs() <= rel * scale || actual == expected,
        "{what}: got {actual:e}, expected {expected:e} (relative tolerance {rel:e})"
    );
}

/// `None` in a fixture stands for an infinite bound on the side it is on.
fn bound(value: Option<f64>, infinite: f64) -> f64 {
    value.unwrap_or(infinite)
}

fn kind(name: &str) -> IntervalKind {
    match name {
        "two_sided" => IntervalKind::TwoSided,
        "upper" => IntervalKind::Upper,
        "lower" => IntervalKind::Lower,
        other => panic!("unknown interval kind {other}"),
    }
}

fn estimator(name: &str) -> LocationEstimator {
    match name {
        "mean" => LocationEstimator::Mean,
        "hodges_lehmann" => LocationEstimator::HodgesLehmann,
        "median" => LocationEstimator::Median,
        other => panic!("unknown estimator {other}"),
    }
}

// === quantiles, median, MAD, robust z ===

#[derive(Deserialize)]
struct QuantileFixture {
    cases: Vec<QuantileCase>,
}

#[derive(Deserialize)]
struct QuantileCase {
    name: String,
    x: Vec<f64>,
    probs: Vec<f64>,
    quantiles: Vec<f64>,
    median: f64,
    mad: f64,
    robust_z: Option<Vec<f64>>,
    intervals: Vec<QuantileInterval>,
}

#[derive(Deserialize)]
struct QuantileInterval {
    p: f64,
    confidence: f64,
    kind: String,
    attainable: bool,
    lo: Option<f64>,
    hi: Option<f64>,
    coverage: Option<f64>,
}

fn quantile_fixture() -> QuantileFixture {
    serde_json::from_str(include_str!("fixtures/quantiles.json")).unwrap()
}

#[test]
fn quantiles_median_mad_and_robust_z_match_numpy_and_scipy() {
    for case in quantile_fixture().cases {
        let name = &case.name;
        let got = quantiles(&case.x, &case.probs).unwrap();
        for ((p, g), e) in case.probs.iter().zip(&got).zip(&case.quantiles) {
            assert_close(*g, *e, REL, &format!("{name} type 7 quantile {p}"));
            let single = quantile(&case.x, *p).unwrap();
            assert_close(single, *e, REL, &format!("{name} quantile({p})"));
        }
        assert_close(
            median(&case.x).unwrap(),
            case.median,
            REL,
            &format!("{name} median"),
        );
        assert_close(mad(&case.x).unwrap(), case.mad, REL, &format!("{name} MAD"));
        match (&case.robust_z, robust_z_scores(&case.x)) {
            (Some(expected), Ok(got)) => {
                assert_close(got.median, case.median, REL, name);
                assert_close(got.mad, case.mad, REL, name);
                for (g, e) in got.scores.iter().zip(expected) {
                    assert_close(*g, *e, REL, &format!("{name} robust z"));
                }
            }
            (None, Err(StatsError::NoSpread { .. })) => {}
            (expected, got) => panic!("{name}: robust z expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn quantile_intervals_match_scipy_quantile_test() {
    let mut checked = 0;
    for case in quantile_fixture().cases {
        for expected in &case.intervals {
            let what = format!(
                "{} p={} confidence={} {}",
                case.name, expected.p, expected.confidence, expected.kind
            );
            let got = quantile_ci(
                &case.x,
                expected.p,
                expected.confidence,
                kind(&expected.kind),
            );
            if !expected.attainable {
                assert!(
                    matches!(got, Err(StatsError::Unattainable { .. })),
                    "{what}: {got:?}"
                );
                continue;
            }
            let got = got.unwrap();
            assert_eq!(got.lo, bound(expected.lo, f64::NEG_INFINITY), "{what} lo");
            assert_eq!(got.hi, bound(expected.hi, f64::INFINITY), "{what} hi");
            let coverage = got.coverage.unwrap();
            assert_close(coverage, expected.coverage.unwrap(), REL, &what);
            // At least the level, up to the CDF's rounding (the 1e-12 slack).
            assert!(
                coverage >= expected.confidence - 1e-12,
                "{what}: coverage {coverage}"
            );
            assert_eq!(got.method, IntervalMethod::OrderStatistics);
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} intervals checked");
}

#[test]
fn median_interval_is_the_two_sided_order_statistic_interval_around_the_median() {
    let x = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0];
    let got = median_ci(&x, 0.95).unwrap();
    // n = 6: [x(1), x(6)] covers with 1 − 2/64.
    assert_eq!((got.estimate, got.lo, got.hi), (3.5, 1.0, 6.0));
    assert_close(got.coverage.unwrap(), 1.0 - 2.0 / 64.0, 1e-12, "coverage");
    assert!(matches!(
        median_ci(&x[..5], 0.95),
        Err(StatsError::Unattainable { n: 5, .. })
    ));
}

// === Hodges–Lehmann ===

#[derive(Deserialize)]
struct HodgesLehmannFixture {
    exact_max_n: usize,
    cases: Vec<HodgesLehmannCase>,
}

#[derive(Deserialize)]
struct HodgesLehmannCase {
    name: String,
    x: Vec<f64>,
    estimate: f64,
    intervals: Vec<HodgesLehmannInterval>,
    wilcoxon_exact_p: Option<f64>,
}

#[derive(Deserialize)]
struct HodgesLehmannInterval {
    confidence: f64,
    attainable: bool,
    c_exact: Option<usize>,
    c: Option<usize>,
    lo: Option<f64>,
    hi: Option<f64>,
    coverage: Option<f64>,
    method: Option<IntervalMethod>,
}

fn hodges_lehmann_fixture() -> HodgesLehmannFixture {
    serde_json::from_str(include_str!("fixtures/hodges_lehmann.json")).unwrap()
}

#[test]
fn hodges_lehmann_matches_walsh_averages_and_scipy_signed_rank_distribution() {
    let fixture = hodges_lehmann_fixture();
    assert_eq!(fixture.exact_max_n, SIGNED_RANK_EXACT_MAX_N);
    let mut normal = 0;
    for case in fixture.cases {
        let point = hodges_lehmann_point(&case.x).unwrap();
        assert_close(point, case.estimate, REL, &case.name);
        for expected in &case.intervals {
            let what = format!("{} confidence={}", case.name, expected.confidence);
            let got = hodges_lehmann(&case.x, expected.confidence);
            if !expected.attainable {
                assert!(
                    matches!(got, Err(StatsError::Unattainable { .. })),
                    "{what}: {got:?}"
                );
                continue;
            }
            let got = got.unwrap();
            assert_close(got.estimate, case.estimate, REL, &what);
            assert_close(got.lo, expected.lo.unwrap(), REL, &format!("{what} lo"));
            assert_close(got.hi, expected.hi.unwrap(), REL, &format!("{what} hi"));
            assert_close(
                got.coverage.unwrap(),
                expected.coverage.unwrap(),
                REL,
                &format!("{what} coverage"),
            );
            assert_eq!(Some(got.method), expected.method, "{what}");
            assert_eq!(got.n, case.x.len());
            if got.method == IntervalMethod::SignedRankNormal {
                normal += 1;
            }
            // Our exact table gives SciPy's critical rank at every size, above the threshold too.
            let alpha = 1.0 - expected.confidence;
            let cdf = signed_rank_cdf(case.x.len());
            let c = cdf.iter().position(|&p| p >= alpha / 2.0).unwrap();
            assert_eq!(Some(c), expected.c_exact, "{what} exact critical rank");
            assert!(
                expected.c.unwrap() <= c,
                "{what}: normal rank not conservative"
            );
        }
    }
    assert!(
        normal >= 4,
        "the normal approximation was checked {normal} times"
    );
}

#[test]
fn signed_rank_critical_values_match_the_published_table() {
    // Two-sided alpha = 0.05: reject when T ≤ value (Hollander & Wolfe 1999, Table A.4).
    let table = [
        (6, 0),
        (7, 2),
        (8, 3),
        (9, 5),
        (10, 8),
        (11, 10),
        (12, 13),
        (13, 17),
        (14, 21),
        (15, 25),
        (16, 29),
        (17, 34),
        (18, 40),
        (19, 46),
        (20, 52),
        (21, 58),
        (22, 65),
        (23, 73),
        (24, 81),
        (25, 89),
    ];
    for (n, critical) in table {
        let (c, coverage, method) = signed_rank_critical(n, 0.05, 0.95).unwrap();
        assert_eq!(c, critical + 1, "n = {n}");
        assert_eq!(method, IntervalMethod::SignedRankExact);
        assert!(coverage >= 0.95, "n = {n}: coverage {coverage}");
    }
    // n = 10: P(T ≤ 8) = 25/1024.
    let (_, coverage, _) = signed_rank_critical(10, 0.05, 0.95).unwrap();
    assert_eq!(coverage, 1.0 - 2.0 * 25.0 / 1024.0);
    assert!(matches!(
        signed_rank_critical(5, 0.05, 0.95),
        Err(StatsError::Unattainable { n: 5, .. })
    ));
}

#[test]
fn signed_rank_normal_approximation_is_close_to_exact_above_the_threshold() {
    for n in [201_usize, 250, 320, 400] {
        let cdf = signed_rank_cdf(n);
        let nf = n as f64;
        let sigma = (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0).sqrt();
        for confidence in [0.8, 0.9, 0.95, 0.99] {
            let alpha = 1.0 - confidence;
            let exact = cdf.iter().position(|&p| p >= alpha / 2.0).unwrap();
            let (approx, coverage, method) = signed_rank_critical(n, alpha, confidence).unwrap();
            assert_eq!(method, IntervalMethod::SignedRankNormal);
            assert!(
                (exact as f64 - approx as f64).abs() <= 0.01 * sigma,
                "n = {n}, {confidence}: {approx} vs {exact}"
            );
            // Its actual coverage under the exact distribution misses the level by < 0.001.
            let actual = 1.0 - 2.0 * cdf[approx - 1];
            assert!(
                actual >= confidence - 1e-3,
                "n = {n}, {confidence}: {actual}"
            );
            assert!((coverage - actual).abs() < 1e-3, "{coverage} vs {actual}");
        }
    }
}

#[test]
fn hodges_lehmann_interval_excludes_zero_exactly_when_the_exact_wilcoxon_test_rejects() {
    let mut checked = 0;
    for case in hodges_lehmann_fixture().cases {
        let Some(p) = case.wilcoxon_exact_p else {
            continue;
        };
        for confidence in [0.8, 0.9, 0.95] {
            let Ok(got) = hodges_lehmann(&case.x, confidence) else {
                continue;
            };
            let excludes_zero = got.lo > 0.0 || got.hi < 0.0;
            assert_eq!(
                excludes_zero,
                p <= 1.0 - confidence,
                "{} at {confidence}: [{}, {}], p = {p}",
                case.name,
                got.lo,
                got.hi
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
}

// === bootstrap ===

#[derive(Deserialize)]
struct BootstrapFixture {
    splitmix64_seed0_first3: Vec<String>,
    cases: Vec<BootstrapCase>,
}

#[derive(Deserialize)]
struct BootstrapCase {
    name: String,
    x: Vec<f64>,
    confidence: f64,
    resamples: usize,
    seed: u64,
    estimate: f64,
    lo: f64,
    hi: f64,
    scipy_lo: f64,
    scipy_hi: f64,
}

fn bootstrap_fixture() -> BootstrapFixture {
    serde_json::from_str(include_str!("fixtures/bootstrap.json")).unwrap()
}

#[test]
fn splitmix64_matches_the_reference_sequence() {
    let fixture = bootstrap_fixture();
    let mut rng = SplitMix64::new(0);
    let got: Vec<String> = (0..3).map(|_| rng.next_u64().to_string()).collect();
    assert_eq!(got, fixture.splitmix64_seed0_first3);
    // Java's SplittableRandom(0).nextLong() is the same function.
    assert_eq!(got[0], 0xE220_A839_7B1D_CDAF_u64.to_string());
    let mut rng = SplitMix64::new(99);
    for bound in [1_u64, 2, 3, 7, 1000, u64::MAX] {
        for _ in 0..100 {
            assert!(rng.below(bound) < bound);
        }
    }
}

#[test]
fn bootstrap_matches_the_reference_implementation_and_scipy() {
    for case in bootstrap_fixture().cases {
        let what = format!("{} seed {}", case.name, case.seed);
        let got = bootstrap_median_ci(&case.x, case.confidence, case.resamples, case.seed).unwrap();
        assert_close(got.estimate, case.estimate, REL, &what);
        // Same generator, same draws, same arithmetic: the reference gives the same bounds.
        assert_close(got.lo, case.lo, REL, &format!("{what} lo"));
        assert_close(got.hi, case.hi, REL, &format!("{what} hi"));
        assert_eq!(got.method, IntervalMethod::PercentileBootstrap);
        assert_eq!(got.coverage, None);
        // SciPy's own bootstrap (a different generator, 20 000 resamples): equal up to
        // Monte-Carlo error, within 10 % of the interval's width.
        let width = got.hi - got.lo;
        assert!(
            (got.lo - case.scipy_lo).abs() <= 0.1 * width,
            "{what} vs SciPy lo"
        );
        assert!(
            (got.hi - case.scipy_hi).abs() <= 0.1 * width,
            "{what} vs SciPy hi"
        );
    }
}

#[test]
fn bootstrap_is_deterministic_per_seed_and_depends_on_it() {
    let x: Vec<f64> = (0..40).map(|i| f64::from((i * 37) % 101)).collect();
    let a = bootstrap_median_ci(&x, 0.95, 2000, 1).unwrap();
    let b = bootstrap_median_ci(&x, 0.95, 2000, 1).unwrap();
    assert_eq!(a, b);
    let others: Vec<Estimate> = (2..6)
        .map(|seed| bootstrap_median_ci(&x, 0.95, 2000, seed).unwrap())
        .collect();
    assert!(others.iter().any(|o| (o.lo, o.hi) != (a.lo, a.hi)));
}

#[test]
fn bootstrap_refuses_too_few_samples_or_resamples() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    assert!(bootstrap_median_ci(&x, 0.95, 1000, 0).is_ok());
    assert!(matches!(
        bootstrap_median_ci(&x[..5], 0.95, 1000, 0),
        Err(StatsError::Unattainable { n: 5, .. })
    ));
    assert!(matches!(
        bootstrap_median_ci(&x, 0.95, 999, 0),
        Err(StatsError::InvalidParameter {
            name: "resamples",
            ..
        })
    ));
}

// === Theil–Sen and Mann–Kendall ===

#[derive(Deserialize)]
struct TheilSenFixture {
    cases: Vec<TheilSenCase>,
}

#[derive(Deserialize)]
struct TheilSenCase {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    confidence: f64,
    slope: f64,
    intercept: f64,
    attainable: bool,
    lo: f64,
    hi: f64,
}

#[test]
fn theil_sen_matches_scipy_theilslopes() {
    let fixture: TheilSenFixture =
        serde_json::from_str(include_str!("fixtures/theil_sen.json")).unwrap();
    let mut checked = 0;
    for case in fixture.cases {
        let what = format!("{} confidence={}", case.name, case.confidence);
        let got = theil_sen(&case.x, &case.y, case.confidence);
        if !case.attainable {
            assert!(
                matches!(got, Err(StatsError::Unattainable { .. })),
                "{what}: {got:?}"
            );
            continue;
        }
        let got = got.unwrap();
        assert_close(
            got.slope.estimate,
            case.slope,
            REL,
            &format!("{what} slope"),
        );
        assert_close(
            got.intercept,
            case.intercept,
            REL,
            &format!("{what} intercept"),
        );
        assert_close(got.slope.lo, case.lo, REL, &format!("{what} lo"));
        assert_close(got.slope.hi, case.hi, REL, &format!("{what} hi"));
        assert_eq!(got.slope.method, IntervalMethod::SenNormal);
        checked += 1;
    }
    assert!(checked >= 14, "{checked}");
}

#[test]
fn theil_sen_refuses_degenerate_input() {
    assert!(matches!(
        theil_sen(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0], 0.95),
        Err(StatsError::NoSpread { .. })
    ));
    assert!(matches!(
        theil_sen(&[1.0, 2.0], &[1.0], 0.95),
        Err(StatsError::LengthMismatch { x: 2, y: 1 })
    ));
    assert!(matches!(theil_sen(&[], &[], 0.95), Err(StatsError::Empty)));
    assert!(matches!(
        theil_sen(&[1.0, f64::NAN], &[1.0, 2.0], 0.95),
        Err(StatsError::NonFinite { index: 1, .. })
    ));
    assert!(matches!(
        theil_sen(&[-1e308, 1e308], &[0.0, 1.0], 0.95),
        Err(StatsError::InvalidParameter { .. })
    ));
}

#[derive(Deserialize)]
struct MannKendallFixture {
    cases: Vec<MannKendallCase>,
}

#[derive(Deserialize)]
struct MannKendallCase {
    name: String,
    y: Vec<f64>,
    #[serde(default)]
    no_spread: bool,
    s: Option<i64>,
    variance: Option<f64>,
    z: Option<f64>,
    p_two_sided: Option<f64>,
    p_increasing: Option<f64>,
    p_decreasing: Option<f64>,
}

#[test]
fn mann_kendall_matches_the_direct_computation_and_pymannkendall() {
    let fixture: MannKendallFixture =
        serde_json::from_str(include_str!("fixtures/mann_kendall.json")).unwrap();
    for case in fixture.cases {
        let name = &case.name;
        let got = mann_kendall(&case.y);
        if case.no_spread {
            assert!(matches!(got, Err(StatsError::NoSpread { .. })), "{name}");
            continue;
        }
        let got = got.unwrap();
        assert_eq!(got.n, case.y.len());
        assert_eq!(Some(got.s), case.s, "{name} S");
        assert_close(got.variance, case.variance.unwrap(), REL, name);
        assert_close(got.z, case.z.unwrap(), REL, name);
        assert_close(got.p_two_sided, case.p_two_sided.unwrap(), REL, name);
        assert_close(got.p_increasing, case.p_increasing.unwrap(), REL, name);
        assert_close(got.p_decreasing, case.p_decreasing.unwrap(), REL, name);
    }
}

#[test]
fn mann_kendall_of_a_short_clean_series_is_the_textbook_value() {
    // y = 1..=10: S = 45, Var = 10·9·25/18 = 125, z = 44/√125.
    let y: Vec<f64> = (1..=10).map(f64::from).collect();
    let got = mann_kendall(&y).unwrap();
    assert_eq!((got.s, got.variance), (45, 125.0));
    assert_close(got.z, 44.0 / 125.0_f64.sqrt(), 1e-15, "z");
    assert!(matches!(
        mann_kendall(&[1.0, 2.0]),
        Err(StatsError::TooFew { needed: 3, .. })
    ));
}

// === Clopper–Pearson ===

#[derive(Deserialize)]
struct ClopperPearsonFixture {
    cases: Vec<ClopperPearsonCase>,
}

#[derive(Deserialize)]
struct ClopperPearsonCase {
    successes: u64,
    trials: u64,
    confidence: f64,
    kind: String,
    lo: f64,
    hi: f64,
}

#[test]
fn clopper_pearson_matches_scipy_binomtest_exact() {
    let fixture: ClopperPearsonFixture =
        serde_json::from_str(include_str!("fixtures/clopper_pearson.json")).unwrap();
    for case in fixture.cases {
        let what = format!(
            "{}/{} {} {}",
            case.successes, case.trials, case.confidence, case.kind
        );
        let got = clopper_pearson(
            case.successes,
            case.trials,
            case.confidence,
            kind(&case.kind),
        )
        .unwrap();
        assert_close(got.lo, case.lo, REL, &format!("{what} lo"));
        assert_close(got.hi, case.hi, REL, &format!("{what} hi"));
        assert_eq!(got.estimate, case.successes as f64 / case.trials as f64);
    }
}

#[test]
fn clopper_pearson_zero_of_two_hundred_is_the_rule_of_three() {
    // 0 alarms in 200 runs: one-sided 95 % upper bound 1 − 0.05^(1/200) ≈ 3/200.
    let got = clopper_pearson(0, 200, 0.95, IntervalKind::Upper).unwrap();
    assert_close(
        got.hi,
        1.0 - 0.05_f64.powf(1.0 / 200.0),
        1e-12,
        "upper bound",
    );
    assert!(matches!(
        clopper_pearson(0, 0, 0.95, IntervalKind::TwoSided),
        Err(StatsError::Empty)
    ));
    assert!(matches!(
        clopper_pearson(3, 2, 0.95, IntervalKind::TwoSided),
        Err(StatsError::InvalidParameter {
            name: "successes",
            ..
        })
    ));
}

// === multiple comparisons ===

#[derive(Deserialize)]
struct MultipleTestingFixture {
    cases: Vec<MultipleTestingCase>,
}

#[derive(Deserialize)]
struct MultipleTestingCase {
    name: String,
    p: Vec<f64>,
    holm: Vec<f64>,
    bh: Vec<f64>,
}

#[test]
fn holm_and_benjamini_hochberg_match_statsmodels_and_scipy() {
    let fixture: MultipleTestingFixture =
        serde_json::from_str(include_str!("fixtures/multiple_testing.json")).unwrap();
    for case in fixture.cases {
        let got_holm = holm(&case.p).unwrap();
        let got_bh = benjamini_hochberg(&case.p).unwrap();
        for i in 0..case.p.len() {
            assert_close(
                got_holm[i],
                case.holm[i],
                REL,
                &format!("{} holm {i}", case.name),
            );
            assert_close(got_bh[i], case.bh[i], REL, &format!("{} BH {i}", case.name));
        }
    }
}

#[test]
fn adjustments_refuse_non_probabilities_and_map_empty_to_empty() {
    assert_eq!(holm(&[]).unwrap(), Vec::<f64>::new());
    assert_eq!(benjamini_hochberg(&[]).unwrap(), Vec::<f64>::new());
    for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        assert!(matches!(
            holm(&[0.1, bad]),
            Err(StatsError::NotAProbability { index: 1, .. })
        ));
        assert!(matches!(
            benjamini_hochberg(&[bad]),
            Err(StatsError::NotAProbability { index: 0, .. })
        ));
    }
}

// === power ===

#[derive(Deserialize)]
struct PowerFixture {
    cases: Vec<PowerCase>,
    pairs_needed: Vec<PairsNeededCase>,
}

#[derive(Deserialize)]
struct PowerCase {
    pairs: usize,
    sigma: f64,
    alpha: f64,
    power: f64,
    estimator: String,
    mde: f64,
    mde_statsmodels: f64,
}

#[derive(Deserialize)]
struct PairsNeededCase {
    shift: f64,
    sigma: f64,
    alpha: f64,
    power: f64,
    estimator: String,
    pairs: u64,
}

#[test]
fn minimum_detectable_shift_matches_the_closed_form_and_statsmodels() {
    let fixture: PowerFixture = serde_json::from_str(include_str!("fixtures/power.json")).unwrap();
    for case in fixture.cases {
        let what = format!(
            "{} pairs sigma {} alpha {} power {} {}",
            case.pairs, case.sigma, case.alpha, case.power, case.estimator
        );
        let got = minimum_detectable_shift(
            case.pairs,
            case.sigma,
            case.alpha,
            case.power,
            estimator(&case.estimator),
        )
        .unwrap();
        assert_close(got, case.mde, REL, &what);
        // statsmodels root-finds the effect size: agreement to 1e-5 only.
        assert_close(got, case.mde_statsmodels, 1e-5, &what);
    }
    for case in fixture.pairs_needed {
        let got = pairs_needed(
            case.shift,
            case.sigma,
            case.alpha,
            case.power,
            estimator(&case.estimator),
        )
        .unwrap();
        assert_eq!(got, case.pairs, "{} / {}", case.shift, case.sigma);
    }
}

#[test]
fn minimum_detectable_shift_is_3_29_sigma_over_root_n_for_the_mean() {
    let got = minimum_detectable_shift(100, 1.0, 0.05, 0.95, LocationEstimator::Mean).unwrap();
    assert_close(got, 2.0 * 1.644_853_626_951_472_2 / 10.0, 1e-12, "MDE");
    assert!(matches!(
        minimum_detectable_shift(0, 1.0, 0.05, 0.95, LocationEstimator::Mean),
        Err(StatsError::Empty)
    ));
    assert!(matches!(
        minimum_detectable_shift(10, f64::NAN, 0.05, 0.95, LocationEstimator::Mean),
        Err(StatsError::InvalidParameter { name: "sigma", .. })
    ));
    assert!(matches!(
        minimum_detectable_shift(10, 1.0, 0.05, 0.05, LocationEstimator::Mean),
        Err(StatsError::InvalidParameter { name: "power", .. })
    ));
    assert!(matches!(
        pairs_needed(0.0, 1.0, 0.05, 0.95, LocationEstimator::Mean),
        Err(StatsError::InvalidParameter { name: "shift", .. })
    ));
}

// === decisions ===

fn iv(lo: f64, hi: f64) -> Interval {
    Interval { lo, hi }
}

#[test]
fn budget_decision_at_and_around_its_boundaries() {
    use Decision::{Fail, Inconclusive, Pass};
    let cases = [
        (iv(1.0, 2.0), 2.0, Pass),
        (iv(1.0, 2.0), 2.0_f64.next_up(), Pass),
        (iv(1.0, 2.0), 2.0_f64.next_down(), Inconclusive),
        (iv(1.0, 2.0), 1.5, Inconclusive),
        (iv(1.0, 2.0), 1.0, Inconclusive),
        (iv(1.0, 2.0), 1.0_f64.next_down(), Fail),
        (iv(1.0, 1.0), 1.0, Pass),
        (iv(f64::NEG_INFINITY, 2.0), 3.0, Pass),
        (iv(1.0, f64::INFINITY), 0.5, Fail),
        (iv(1.0, f64::INFINITY), 2.0, Inconclusive),
        (iv(-3.0, -1.0), 0.0, Pass),
    ];
    for (interval, budget, expected) in cases {
        assert_eq!(
            budget_decision(interval, budget).unwrap(),
            expected,
            "{interval:?} against {budget}"
        );
    }
    for (interval, budget) in [
        (iv(f64::NAN, 1.0), 1.0),
        (iv(0.0, f64::NAN), 1.0),
        (iv(2.0, 1.0), 1.0),
        (iv(0.0, 1.0), f64::NAN),
    ] {
        assert!(
            budget_decision(interval, budget).is_err(),
            "{interval:?} {budget}"
        );
    }
}

#[test]
fn dual_criterion_at_and_around_its_boundaries() {
    use Decision::{Fail, Inconclusive, Pass};
    // Material shift m = max(10, 3 · 4) = 12.
    let rule = DualCriterion {
        tolerance: 10.0,
        noise: 4.0,
        k: 3.0,
    };
    assert_eq!(rule.threshold().unwrap(), 12.0);
    let cases = [
        // Excludes zero and exceeds m: fail, however close lo is to zero.
        (13.0, iv(0.5, 20.0), Fail),
        (13.0, iv(0.0_f64.next_up(), 13.0), Fail),
        (12.0_f64.next_up(), iv(1.0, 30.0), Fail),
        // Exactly m is not beyond it: pass; lo exactly 0 does not exclude zero.
        (12.0, iv(0.5, 20.0), Pass),
        (13.0, iv(0.0, 20.0), Inconclusive),
        // Within m: pass, significant or not, however wide the interval.
        (11.0, iv(5.0, 12.0), Pass),
        (11.0, iv(5.0, 12.0_f64.next_up()), Pass),
        (0.0, iv(-2.0, 2.0), Pass),
        (-3.0, iv(-8.0, -1.0), Pass),
        (8.0, iv(2.0, 15.0), Pass),
        (5.0, iv(-1.0, 30.0), Pass),
        // A material estimate the interval cannot tell from zero.
        (40.0, iv(-1.0, 80.0), Inconclusive),
        (12.0_f64.next_up(), iv(-1.0, 30.0), Inconclusive),
    ];
    for (shift, interval, expected) in cases {
        assert_eq!(
            rule.decide(shift, interval).unwrap(),
            expected,
            "shift {shift} in {interval:?}"
        );
    }
    // The tolerance dominates when the noise is small.
    let quiet = DualCriterion {
        tolerance: 10.0,
        noise: 1.0,
        k: 3.0,
    };
    assert_eq!(quiet.threshold().unwrap(), 10.0);
    assert_eq!(quiet.decide(10.5, iv(1.0, 20.0)).unwrap(), Fail);
    assert_eq!(quiet.decide(3.0, iv(1.0, 10.0)).unwrap(), Pass);
}

#[test]
fn dual_criterion_refuses_inconsistent_input() {
    let rule = DualCriterion {
        tolerance: 1.0,
        noise: 1.0,
        k: 3.0,
    };
    assert!(rule.decide(5.0, iv(0.0, 4.0)).is_err());
    assert!(rule.decide(f64::NAN, iv(0.0, 4.0)).is_err());
    assert!(rule.decide(1.0, iv(f64::NAN, 4.0)).is_err());
    assert!(rule.decide(1.0, iv(2.0, 0.0)).is_err());
    for bad in [
        DualCriterion {
            tolerance: -1.0,
            ..rule
        },
        DualCriterion {
            noise: f64::NAN,
            ..rule
        },
        DualCriterion {
            k: f64::INFINITY,
            ..rule
        },
    ] {
        assert!(bad.decide(1.0, iv(0.0, 2.0)).is_err(), "{bad:?}");
    }
}

// === input errors ===

#[test]
fn empty_and_non_finite_input_is_an_error_everywhere() {
    let nan = [1.0, f64::NAN, 3.0, 4.0, 5.0, 6.0, 7.0];
    let inf = [1.0, 2.0, f64::INFINITY, 4.0, 5.0, 6.0, 7.0];
    type Check = fn(&[f64]) -> Result<(), StatsError>;
    let checks: [(&str, Check); 10] = [
        ("median", |x| median(x).map(drop)),
        ("quantile", |x| quantile(x, 0.5).map(drop)),
        ("quantiles", |x| quantiles(x, &[0.5]).map(drop)),
        ("quantile_ci", |x| {
            quantile_ci(x, 0.5, 0.9, IntervalKind::TwoSided).map(drop)
        }),
        ("mad", |x| mad(x).map(drop)),
        ("robust_z_scores", |x| robust_z_scores(x).map(drop)),
        ("hodges_lehmann", |x| hodges_lehmann(x, 0.9).map(drop)),
        ("hodges_lehmann_point", |x| {
            hodges_lehmann_point(x).map(drop)
        }),
        ("bootstrap_median_ci", |x| {
            bootstrap_median_ci(x, 0.9, 1000, 0).map(drop)
        }),
        ("mann_kendall", |x| mann_kendall(x).map(drop)),
    ];
    for (name, check) in checks {
        assert_eq!(check(&[]), Err(StatsError::Empty), "{name}");
        assert!(
            matches!(check(&nan), Err(StatsError::NonFinite { index: 1, .. })),
            "{name}"
        );
        assert!(
            matches!(check(&inf), Err(StatsError::NonFinite { index: 2, .. })),
            "{name}"
        );
    }
}

#[test]
fn confidence_and_probability_parameters_are_checked() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    for confidence in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        let is_confidence_error = |e: Result<Estimate, StatsError>| {
            matches!(
                e,
                Err(StatsError::InvalidParameter {
                    name: "confidence",
                    ..
                })
            )
        };
        assert!(is_confidence_error(median_ci(&x, confidence)));
        assert!(is_confidence_error(hodges_lehmann(&x, confidence)));
        assert!(is_confidence_error(bootstrap_median_ci(
            &x, confidence, 1000, 0
        )));
        assert!(is_confidence_error(clopper_pearson(
            1,
            2,
            confidence,
            IntervalKind::TwoSided
        )));
        assert!(matches!(
            theil_sen(&x, &x, confidence),
            Err(StatsError::InvalidParameter {
                name: "confidence",
                ..
            })
        ));
    }
    for p in [-0.1, 1.1, f64::NAN] {
        assert!(quantile(&x, p).is_err());
        assert!(quantiles(&x, &[0.5, p]).is_err());
    }
    for p in [0.0, 1.0] {
        assert!(quantile_ci(&x, p, 0.9, IntervalKind::TwoSided).is_err());
    }
}

#[test]
fn robust_z_without_spread_is_an_error() {
    assert!(matches!(
        robust_z_scores(&[5.0, 5.0, 5.0, 9.0]),
        Err(StatsError::NoSpread { .. })
    ));
}

#[test]
fn pairwise_methods_refuse_more_than_the_cap() {
    let x: Vec<f64> = (0..=PAIRWISE_MAX_N).map(|i| i as f64).collect();
    assert!(matches!(
        hodges_lehmann(&x, 0.95),
        Err(StatsError::TooMany { .. })
    ));
    assert!(matches!(
        theil_sen(&x, &x, 0.95),
        Err(StatsError::TooMany { .. })
    ));
    assert!(matches!(mann_kendall(&x), Err(StatsError::TooMany { .. })));
}

#[test]
fn errors_display_as_one_line() {
    let errors = [
        StatsError::Empty,
        StatsError::NonFinite {
            index: 3,
            value: f64::NAN,
        },
        StatsError::Unattainable {
            what: "the Hodges-Lehmann estimate",
            confidence: 0.95,
            n: 5,
        },
    ];
    for error in errors {
        let text = error.to_string();
        assert!(!text.contains('\n') && !text.is_empty(), "{text}");
    }
    assert_eq!(
        StatsError::Unattainable {
            what: "a quantile",
            confidence: 0.95,
            n: 5
        }
        .to_string(),
        "a 0.95 interval for a quantile is not attainable with 5 samples"
    );
}

// === invariants ===

fn sample(min: usize, max: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-1e4_f64..1e4, min..max)
}

/// Samples with few distinct values, so ties are common.
fn tied_sample(min: usize, max: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((-5_i32..5).prop_map(f64::from), min..max)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn quantiles_are_monotonic_in_p(x in sample(1, 60), mut ps in prop::collection::vec(0.0_f64..=1.0, 1..12)) {
        ps.sort_by(f64::total_cmp);
        let q = quantiles(&x, &ps).unwrap();
        for pair in q.windows(2) {
            prop_assert!(pair[0] <= pair[1], "{q:?}");
        }
        let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(q.iter().all(|v| lo <= *v && *v <= hi));
    }

    #[test]
    fn locations_are_shift_equivariant(x in sample(6, 50), c in -1e4_f64..1e4) {
        let shifted: Vec<f64> = x.iter().map(|v| v + c).collect();
        prop_assert!(close(median(&shifted).unwrap(), median(&x).unwrap() + c));
        prop_assert!(close(quantile(&shifted, 0.9).unwrap(), quantile(&x, 0.9).unwrap() + c));
        prop_assert!(close(
            hodges_lehmann_point(&shifted).unwrap(),
            hodges_lehmann_point(&x).unwrap() + c
        ));
        prop_assert!(close(mad(&shifted).unwrap(), mad(&x).unwrap()));
        let a = hodges_lehmann(&x, 0.95).unwrap();
        let b = hodges_lehmann(&shifted, 0.95).unwrap();
        prop_assert!(close(b.lo, a.lo + c) && close(b.hi, a.hi + c));
        let a = median_ci(&x, 0.95).unwrap();
        let b = median_ci(&shifted, 0.95).unwrap();
        prop_assert!(close(b.lo, a.lo + c) && close(b.hi, a.hi + c));
    }

    #[test]
    fn theil_sen_is_equivariant_to_adding_a_line(y in sample(8, 40), a in -100.0_f64..100.0, b in -1e3_f64..1e3) {
        let x: Vec<f64> = (0..y.len()).map(|i| i as f64).collect();
        let lifted: Vec<f64> = x.iter().zip(&y).map(|(t, v)| v + a * t + b).collect();
        let base = theil_sen(&x, &y, 0.95).unwrap();
        let got = theil_sen(&x, &lifted, 0.95);
        // Adding a line can create or remove ties in y, which changes Sen's variance; only
        // compare when the tie structure is the same.
        if tie_groups(&y) == tie_groups(&lifted) {
            let got = got.unwrap();
            prop_assert!((got.slope.estimate - base.slope.estimate - a).abs() <= 1e-6 * (1.0 + a.abs()));
            prop_assert!((got.slope.lo - base.slope.lo - a).abs() <= 1e-6 * (1.0 + a.abs()));
            prop_assert!((got.slope.hi - base.slope.hi - a).abs() <= 1e-6 * (1.0 + a.abs()));
        }
    }

    #[test]
    fn intervals_contain_their_estimate(x in sample(8, 60), tied in tied_sample(8, 40), confidence in 0.8_f64..0.99) {
        for data in [&x, &tied] {
            let mut estimates = vec![
                median_ci(data, confidence).unwrap(),
                hodges_lehmann(data, confidence).unwrap(),
            ];
            // The lower quartile's interval needs more samples than the median's.
            estimates.extend(quantile_ci(data, 0.25, confidence, IntervalKind::TwoSided).ok());
            for estimate in estimates {
                prop_assert!(estimate.lo <= estimate.estimate && estimate.estimate <= estimate.hi, "{estimate:?}");
                prop_assert!(estimate.coverage.unwrap() >= confidence - 1e-12, "{estimate:?}");
            }
            let time: Vec<f64> = (0..data.len()).map(|i| i as f64).collect();
            if let Ok(line) = theil_sen(&time, data, confidence) {
                let s = line.slope;
                prop_assert!(s.lo <= s.estimate && s.estimate <= s.hi, "{s:?}");
            }
            let boot = bootstrap_median_ci(data, confidence, 1000, 3).unwrap();
            let min = data.iter().copied().fold(f64::INFINITY, f64::min);
            let max = data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(min <= boot.lo && boot.lo <= boot.hi && boot.hi <= max, "{boot:?}");
        }
    }

    #[test]
    fn wider_confidence_gives_wider_intervals(x in sample(10, 60)) {
        let narrow = hodges_lehmann(&x, 0.8).unwrap();
        let wide = hodges_lehmann(&x, 0.99).unwrap();
        prop_assert!(wide.lo <= narrow.lo && narrow.hi <= wide.hi);
        let narrow = median_ci(&x, 0.8).unwrap();
        let wide = median_ci(&x, 0.99).unwrap();
        prop_assert!(wide.lo <= narrow.lo && narrow.hi <= wide.hi);
    }

    #[test]
    fn adjusted_p_values_are_ordered(p in prop::collection::vec(0.0_f64..=1.0, 0..40)) {
        let h = holm(&p).unwrap();
        let b = benjamini_hochberg(&p).unwrap();
        for i in 0..p.len() {
            // p ≤ BH ≤ Holm holds exactly in arithmetic; allow the last bit's rounding.
            let ulp = 1.0 + 1e-15;
            prop_assert!(p[i] <= b[i] * ulp && b[i] <= h[i] * ulp && h[i] <= 1.0, "{} {} {}", p[i], b[i], h[i]);
            for j in 0..p.len() {
                if p[i] < p[j] {
                    prop_assert!(h[i] <= h[j] && b[i] <= b[j]);
                }
            }
        }
    }

    #[test]
    fn clopper_pearson_contains_the_proportion(trials in 1_u64..2000, frac in 0.0_f64..=1.0, confidence in 0.5_f64..0.999) {
        let successes = ((trials as f64) * frac).floor() as u64;
        let two = clopper_pearson(successes, trials, confidence, IntervalKind::TwoSided).unwrap();
        prop_assert!(0.0 <= two.lo && two.lo <= two.estimate && two.estimate <= two.hi && two.hi <= 1.0, "{two:?}");
        let upper = clopper_pearson(successes, trials, confidence, IntervalKind::Upper).unwrap();
        prop_assert!(upper.lo == 0.0 && upper.hi <= two.hi + 1e-15);
    }

    #[test]
    fn mann_kendall_is_antisymmetric(y in sample(3, 60)) {
        let flipped: Vec<f64> = y.iter().map(|v| -v).collect();
        match (mann_kendall(&y), mann_kendall(&flipped)) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.s, -b.s);
                prop_assert!(close(a.z, -b.z));
                prop_assert!(close(a.p_increasing, b.p_decreasing));
                prop_assert!(close(a.p_two_sided, b.p_two_sided));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
        }
    }

    #[test]
    fn decisions_are_never_pass_and_fail_at_once(lo in -50.0_f64..50.0, width in 0.0_f64..50.0, at in 0.0_f64..=1.0, budget in -60.0_f64..110.0) {
        let interval = iv(lo, lo + width);
        let decision = budget_decision(interval, budget).unwrap();
        prop_assert_eq!(decision == Decision::Pass, interval.hi <= budget);
        prop_assert_eq!(decision == Decision::Fail, interval.lo > budget);
        let shift = lo + width * at;
        let rule = DualCriterion { tolerance: 5.0, noise: 2.0, k: 3.0 };
        let decision = rule.decide(shift, interval).unwrap();
        prop_assert_eq!(decision == Decision::Fail, interval.lo > 0.0 && shift > 6.0);
        prop_assert_eq!(decision == Decision::Pass, shift <= 6.0);
    }
}
