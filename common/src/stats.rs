//! Robust, distribution-free statistics for the gates: locations with confidence intervals,
//! trend tests, binomial intervals, multiple-comparison corrections, power and the pass / fail /
//! inconclusive decision rules.
//!
//! Everything here is pure and synchronous. Inputs are checked: an empty sample, a non-finite
//! value, a confidence level outside (0, 1), or a sample too small for the interval asked for is
//! a [`StatsError`], never a panic and never a silently narrower interval. Methods, assumptions
//! and the published values each function is tested against are listed in
//! `docs/statistics-methods.md`.
//!
//! Conventions:
//! - `confidence` is the requested coverage, e.g. `0.95`; `alpha = 1 - confidence`.
//! - Order statistics are 1-based in the docs (`x(1)` is the smallest), 0-based in the code.
//! - Shifts are oriented so that a positive value is worse (more cost, more growth).

use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, Binomial, ContinuousCDF, DiscreteCDF, Normal};

pub mod change_point;
#[cfg(test)]
mod tests;

/// Scale factor that makes the median absolute deviation a consistent estimator of the
/// standard deviation of a normal distribution: `1 / Φ⁻¹(3/4)` (1.4826 to four decimals; the
/// same constant as SciPy's `median_abs_deviation(scale="normal")`).
pub const MAD_NORMAL_SCALE: f64 = 1.482_602_218_505_602;

/// Largest sample for which the Hodges–Lehmann interval uses the exact Wilcoxon signed-rank
/// distribution; above it, the normal approximation with continuity correction.
pub const SIGNED_RANK_EXACT_MAX_N: usize = 200;

/// Largest sample accepted by the pairwise methods (Hodges–Lehmann, Theil–Sen, Mann–Kendall),
/// which hold or visit all `n²/2` pairs: 4096 samples is 8.4 million pairs, 67 MB of `f64`.
pub const PAIRWISE_MAX_N: usize = 4096;

/// Relative slack when comparing a computed tail probability with `alpha`: the binomial CDF is
/// accurate to about 1e-15, and a tail that equals `alpha` exactly must not flip on rounding.
const PROBABILITY_SLACK: f64 = 1e-12;

/// Fewest bootstrap resamples accepted by [`bootstrap_median_ci`].
pub const BOOTSTRAP_MIN_RESAMPLES: usize = 1000;

/// A sensible default for the number of bootstrap resamples.
pub const BOOTSTRAP_DEFAULT_RESAMPLES: usize = 10_000;

/// Asymptotic relative efficiency of the Hodges–Lehmann estimator to the mean under normal
/// errors: `3/π`.
pub const HODGES_LEHMANN_EFFICIENCY: f64 = 3.0 / std::f64::consts::PI;

/// Asymptotic relative efficiency of the median (sign test) to the mean under normal errors:
/// `2/π`.
pub const MEDIAN_EFFICIENCY: f64 = 2.0 / std::f64::consts::PI;

/// Why a statistic could not be computed. Displays as one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// The sample is empty.
    #[error("no samples")]
    Empty,
    /// A sample is NaN or infinite.
    #[error("sample {index} is not a finite number ({value})")]
    NonFinite {
        /// 0-based position of the first offending sample.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A p-value or probability input is outside `[0, 1]` or NaN.
    #[error("p-value {index} is not a probability ({value})")]
    NotAProbability {
        /// 0-based position of the offending value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A parameter is out of its domain.
    #[error("{name} must be {expected}, got {value}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Its domain, in words.
        expected: &'static str,
        /// The value given.
        value: f64,
    },
    /// Paired inputs of different lengths.
    #[error("x has {x} samples but y has {y}")]
    LengthMismatch {
        /// Length of `x`.
        x: usize,
        /// Length of `y`.
        y: usize,
    },
    /// Fewer samples than the method needs at all.
    #[error("{what} needs at least {needed} samples, got {got}")]
    TooFew {
        /// The method.
        what: &'static str,
        /// Minimum sample count.
        needed: usize,
        /// Samples given.
        got: usize,
    },
    /// More samples than the method accepts (see [`PAIRWISE_MAX_N`]).
    #[error("{what} accepts at most {max} samples, got {got}")]
    TooMany {
        /// The method.
        what: &'static str,
        /// Maximum sample count.
        max: usize,
        /// Samples given.
        got: usize,
    },
    /// No interval of the requested confidence exists with this many samples: even the widest
    /// interval the method can form covers less.
    #[error("a {confidence} interval for {what} is not attainable with {n} samples")]
    Unattainable {
        /// The method.
        what: &'static str,
        /// Requested confidence.
        confidence: f64,
        /// Samples given.
        n: usize,
    },
    /// The samples have no spread where the method divides by it (all equal).
    #[error("{what} is undefined: the samples have no spread")]
    NoSpread {
        /// The method.
        what: &'static str,
    },
}

/// A closed interval `[lo, hi]`. One-sided bounds use an infinite (or the domain's) end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// Which bounds a confidence interval has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalKind {
    /// `[lo, hi]` with `alpha / 2` excluded on each side.
    TwoSided,
    /// One-sided upper confidence bound: `(-∞, hi]` (or from the domain's minimum), `alpha`
    /// excluded above.
    Upper,
    /// One-sided lower confidence bound: `[lo, +∞)` (or to the domain's maximum), `alpha`
    /// excluded below.
    Lower,
}

/// How an interval was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalMethod {
    /// Order statistics chosen from the binomial distribution (distribution-free, exact).
    OrderStatistics,
    /// Walsh-average order statistics from the exact Wilcoxon signed-rank distribution.
    SignedRankExact,
    /// Walsh-average order statistics from the normal approximation of the signed-rank
    /// distribution (with continuity correction).
    SignedRankNormal,
    /// Percentile bootstrap.
    PercentileBootstrap,
    /// Pairwise-slope order statistics from the normal approximation of Kendall's S (Sen 1968).
    SenNormal,
    /// Clopper–Pearson exact binomial interval.
    ClopperPearson,
}

/// A point estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The point estimate.
    pub estimate: f64,
    /// Lower bound of the interval (`-∞` for an [`IntervalKind::Upper`] bound).
    pub lo: f64,
    /// Upper bound of the interval (`+∞` for an [`IntervalKind::Lower`] bound).
    pub hi: f64,
    /// The requested confidence level.
    pub confidence: f64,
    /// The coverage the chosen order statistics actually have under the method's assumptions
    /// (at least `confidence` for exact methods); approximate for the normal-approximation
    /// methods; `None` where the method does not give one (bootstrap, Sen, Clopper–Pearson).
    pub coverage: Option<f64>,
    /// Number of samples (pairs, trials) the estimate is from.
    pub n: usize,
    /// How the interval was computed.
    pub method: IntervalMethod,
}

impl Estimate {
    /// The interval `[lo, hi]`.
    pub fn interval(&self) -> Interval {
        Interval {
            lo: self.lo,
            hi: self.hi,
        }
    }
}

// === input checks ===

fn check_samples(xs: &[f64]) -> Result<(), StatsError> {
    if xs.is_empty() {
        return Err(StatsError::Empty);
    }
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(StatsError::NonFinite {
            index,
            value: xs[index],
        }),
        None => Ok(()),
    }
}

fn sorted(xs: &[f64]) -> Result<Vec<f64>, StatsError> {
    check_samples(xs)?;
    let mut v = xs.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    Ok(v)
}

fn check_confidence(confidence: f64) -> Result<f64, StatsError> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(1.0 - confidence)
    } else {
        Err(StatsError::InvalidParameter {
            name: "confidence",
            expected: "strictly between 0 and 1",
            value: confidence,
        })
    }
}

fn check_pairwise(what: &'static str, n: usize) -> Result<(), StatsError> {
    if n > PAIRWISE_MAX_N {
        Err(StatsError::TooMany {
            what,
            max: PAIRWISE_MAX_N,
            got: n,
        })
    } else {
        Ok(())
    }
}

fn standard_normal() -> Normal {
    Normal::standard()
}

/// `Φ⁻¹(p)` for `p` in (0, 1).
fn normal_quantile(p: f64) -> f64 {
    standard_normal().inverse_cdf(p)
}

/// Mean of two values without overflow, bit-identical to `(a + b) / 2` when that is finite
/// (as NumPy's median computes it).
fn midpoint(a: f64, b: f64) -> f64 {
    let sum = a + b;
    if sum.is_finite() {
        sum / 2.0
    } else {
        a / 2.0 + b / 2.0
    }
}

// === location and quantiles ===

/// Median of an ascending, non-empty slice.
fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Hyndman–Fan type 7 quantile of an ascending, non-empty slice, `p` in `[0, 1]`, with
/// NumPy's `linear` interpolation arithmetic.
fn quantile_sorted(v: &[f64], p: f64) -> f64 {
    let n = v.len();
    let h = (n - 1) as f64 * p;
    let below = h.floor();
    let i = below as usize;
    if i + 1 >= n {
        return v[n - 1];
    }
    let (a, b) = (v[i], v[i + 1]);
    let t = h - below;
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

fn check_probability_param(name: &'static str, p: f64) -> Result<(), StatsError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(StatsError::InvalidParameter {
            name,
            expected: "between 0 and 1",
            value: p,
        })
    }
}

/// Sample median (the mean of the two middle values for an even count).
pub fn median(xs: &[f64]) -> Result<f64, StatsError> {
    Ok(median_sorted(&sorted(xs)?))
}

/// Sample quantile of type 7 (Hyndman & Fan 1996; R's default, NumPy's `linear`):
/// `h = (n − 1)·p`, `x(⌊h⌋+1) + (h − ⌊h⌋)·(x(⌊h⌋+2) − x(⌊h⌋+1))`. `p` in `[0, 1]`.
pub fn quantile(xs: &[f64], p: f64) -> Result<f64, StatsError> {
    check_probability_param("p", p)?;
    Ok(quantile_sorted(&sorted(xs)?, p))
}

/// Type 7 quantiles for several probabilities, sorting once. Each `p` in `[0, 1]`.
pub fn quantiles(xs: &[f64], ps: &[f64]) -> Result<Vec<f64>, StatsError> {
    for &p in ps {
        check_probability_param("p", p)?;
    }
    let v = sorted(xs)?;
    Ok(ps.iter().map(|&p| quantile_sorted(&v, p)).collect())
}

/// Smallest `k` in `[0, n]` with `pred(k)`, for a predicate monotone from false to true;
/// `n + 1` when none.
fn first_true(n: u64, pred: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0_u64, n + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Distribution-free confidence interval of the `p`-quantile from order statistics
/// (Conover 1999, §3.2; the same indices as SciPy's `quantile_test(...).confidence_interval`).
///
/// With `B ~ Binomial(n, p)`, two-sided: `l = min{k : P(B ≤ k) ≥ alpha/2}` and
/// `u = min{k : P(B > k) ≤ alpha/2}`; the interval is `[x(l), x(u+1)]` and covers the true
/// quantile with probability `P(l ≤ B ≤ u) ≥ confidence` for any continuous distribution
/// (reported in [`Estimate::coverage`]). One-sided bounds use `alpha` on their side. The point
/// estimate is the type 7 [`quantile`]. `p` must be strictly inside (0, 1). If even `x(1)` or
/// `x(n)` does not reach the requested confidence the result is [`StatsError::Unattainable`]
/// (for the median at 95 %, two-sided needs `n ≥ 6`).
pub fn quantile_ci(
    xs: &[f64],
    p: f64,
    confidence: f64,
    kind: IntervalKind,
) -> Result<Estimate, StatsError> {
    if !(p > 0.0 && p < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "p",
            expected: "strictly between 0 and 1",
            value: p,
        });
    }
    let alpha = check_confidence(confidence)?;
    let v = sorted(xs)?;
    let n = v.len();
    let n64 = n as u64;
    let binomial = Binomial::new(p, n64).map_err(|_| StatsError::InvalidParameter {
        name: "p",
        expected: "strictly between 0 and 1",
        value: p,
    })?;
    let unattainable = StatsError::Unattainable {
        what: "a quantile",
        confidence,
        n,
    };
    // ppf(q): smallest k with cdf(k) >= q; isf(q): smallest k with sf(k) <= q. A relative
    // slack of PROBABILITY_SLACK absorbs the CDF's rounding, so that a tail of exactly q
    // (coverage of exactly the level) counts as reaching it whichever way it rounded.
    let ppf = |q: f64| first_true(n64, |k| binomial.cdf(k) >= q * (1.0 - PROBABILITY_SLACK));
    let isf = |q: f64| first_true(n64, |k| binomial.sf(k) <= q * (1.0 + PROBABILITY_SLACK));
    let tail = match kind {
        IntervalKind::TwoSided => alpha / 2.0,
        IntervalKind::Upper | IntervalKind::Lower => alpha,
    };
    // 0-based indices of the bounds; a lower index of -1 or an upper index of n is unattainable.
    let (lo, lo_miss) = match kind {
        IntervalKind::Upper => (f64::NEG_INFINITY, 0.0),
        IntervalKind::TwoSided | IntervalKind::Lower => {
            let l = ppf(tail);
            if l == 0 {
                return Err(unattainable);
            }
            // P(B <= l - 1): probability that the true quantile lies below x(l).
            (v[(l - 1) as usize], binomial.cdf(l - 1))
        }
    };
    let (hi, hi_miss) = match kind {
        IntervalKind::Lower => (f64::INFINITY, 0.0),
        IntervalKind::TwoSided | IntervalKind::Upper => {
            let u = isf(tail);
            if u >= n64 {
                return Err(unattainable);
            }
            (v[u as usize], binomial.sf(u))
        }
    };
    Ok(Estimate {
        estimate: quantile_sorted(&v, p),
        lo,
        hi,
        confidence,
        coverage: Some(1.0 - lo_miss - hi_miss),
        n,
        method: IntervalMethod::OrderStatistics,
    })
}

/// Two-sided distribution-free confidence interval of the median: [`quantile_ci`] at
/// `p = 0.5`, with the sample [`median`] as the estimate.
pub fn median_ci(xs: &[f64], confidence: f64) -> Result<Estimate, StatsError> {
    let mut estimate = quantile_ci(xs, 0.5, confidence, IntervalKind::TwoSided)?;
    // Type 7 at 0.5 is the median up to the rounding of its interpolation; use the median's
    // own arithmetic so both functions agree exactly.
    estimate.estimate = median(xs)?;
    Ok(estimate)
}

// === spread and outliers ===

/// Median absolute deviation scaled to the normal standard deviation:
/// `MAD_NORMAL_SCALE · median(|xᵢ − median(x)|)`.
pub fn mad(xs: &[f64]) -> Result<f64, StatsError> {
    let v = sorted(xs)?;
    let centre = median_sorted(&v);
    let mut deviations: Vec<f64> = v.iter().map(|x| (x - centre).abs()).collect();
    deviations.sort_unstable_by(f64::total_cmp);
    Ok(MAD_NORMAL_SCALE * median_sorted(&deviations))
}

/// Robust z-scores with the centre and scale they were computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustZ {
    /// Median of the sample.
    pub median: f64,
    /// Normal-scaled MAD of the sample ([`mad`]).
    pub mad: f64,
    /// `(xᵢ − median) / mad`, in input order.
    pub scores: Vec<f64>,
}

/// Robust z-scores `(xᵢ − median) / MAD` (MAD normal-scaled, see [`mad`]), in input order.
/// A sample whose MAD is zero (more than half the values equal) is [`StatsError::NoSpread`].
pub fn robust_z_scores(xs: &[f64]) -> Result<RobustZ, StatsError> {
    let centre = median(xs)?;
    let scale = mad(xs)?;
    if scale <= 0.0 {
        return Err(StatsError::NoSpread {
            what: "the robust z-score",
        });
    }
    Ok(RobustZ {
        median: centre,
        mad: scale,
        scores: xs.iter().map(|x| (x - centre) / scale).collect(),
    })
}

// === Hodges–Lehmann ===

/// The `n(n+1)/2` Walsh averages `(xᵢ + xⱼ)/2`, `i ≤ j`, ascending.
fn walsh_averages(xs: &[f64]) -> Vec<f64> {
    let n = xs.len();
    let mut w = Vec::with_capacity(n * (n + 1) / 2);
    for (i, &a) in xs.iter().enumerate() {
        for &b in &xs[i..] {
            w.push(midpoint(a, b));
        }
    }
    w.sort_unstable_by(f64::total_cmp);
    w
}

/// Exact null distribution of the Wilcoxon signed-rank statistic `T⁺` for `n` observations as a
/// cumulative table: `table[t] = P(T⁺ ≤ t)`, `t = 0 ..= n(n+1)/2`.
fn signed_rank_cdf(n: usize) -> Vec<f64> {
    let m = n * (n + 1) / 2;
    let mut pmf = vec![0.0; m + 1];
    pmf[0] = 1.0;
    let mut len = 1;
    for k in 1..=n {
        len += k;
        // Rank k is positive or negative with probability 1/2 each.
        for t in (k..len).rev() {
            pmf[t] = 0.5 * pmf[t] + 0.5 * pmf[t - k];
        }
        for value in pmf.iter_mut().take(k.min(len)) {
            *value *= 0.5;
        }
    }
    let mut total = 0.0;
    pmf.iter()
        .map(|p| {
            total += p;
            total
        })
        .collect()
}

/// 1-based rank `c` of the lower bound among the Walsh averages, with the interval's coverage:
/// `[W(c), W(M + 1 − c)]`.
fn signed_rank_critical(
    n: usize,
    alpha: f64,
    confidence: f64,
) -> Result<(usize, f64, IntervalMethod), StatsError> {
    let m = n * (n + 1) / 2;
    let unattainable = StatsError::Unattainable {
        what: "the Hodges-Lehmann estimate",
        confidence,
        n,
    };
    if n <= SIGNED_RANK_EXACT_MAX_N {
        // c = min{q : P(T ≤ q) ≥ alpha/2} (R's qsignrank); coverage 1 − 2·P(T ≤ c − 1).
        let cdf = signed_rank_cdf(n);
        let c = cdf.iter().position(|&p| p >= alpha / 2.0).unwrap_or(m);
        if c == 0 {
            return Err(unattainable);
        }
        return Ok((c, 1.0 - 2.0 * cdf[c - 1], IntervalMethod::SignedRankExact));
    }
    // Normal approximation with continuity correction of the same rule:
    // P(T ≤ q) ≈ Φ((q + 0.5 − M/2) / σ), σ² = n(n+1)(2n+1)/24.
    let nf = n as f64;
    let mean = m as f64 / 2.0;
    let sigma = (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0).sqrt();
    let z = normal_quantile(alpha / 2.0);
    let c = (mean - 0.5 + z * sigma).ceil();
    if c < 1.0 {
        return Err(unattainable);
    }
    let coverage = 1.0 - 2.0 * standard_normal().cdf((c - 0.5 - mean) / sigma);
    Ok((c as usize, coverage, IntervalMethod::SignedRankNormal))
}

/// Hodges–Lehmann one-sample estimate alone: the median of the Walsh averages.
pub fn hodges_lehmann_point(xs: &[f64]) -> Result<f64, StatsError> {
    check_samples(xs)?;
    check_pairwise("the Hodges-Lehmann estimate", xs.len())?;
    Ok(median_sorted(&walsh_averages(xs)))
}

/// Hodges–Lehmann one-sample location estimate (the median of the `M = n(n+1)/2` Walsh
/// averages) with its distribution-free confidence interval `[W(c), W(M + 1 − c)]` from the
/// Wilcoxon signed-rank distribution (Hollander & Wolfe 1999, §3.3; R's
/// `wilcox.test(conf.int = TRUE)`).
///
/// For paired overhead, pass the per-pair differences (tracked − unprofiled). `c` is the
/// smallest `q` with `P(T⁺ ≤ q) ≥ alpha/2`, from the exact distribution for
/// `n ≤ SIGNED_RANK_EXACT_MAX_N` (coverage `1 − 2·P(T⁺ ≤ c − 1) ≥ confidence`), else from the
/// normal approximation with continuity correction. Assumes the differences are independent
/// and symmetric about their centre. At 95 % it needs `n ≥ 6`, else
/// [`StatsError::Unattainable`]; at most [`PAIRWISE_MAX_N`].
pub fn hodges_lehmann(xs: &[f64], confidence: f64) -> Result<Estimate, StatsError> {
    let alpha = check_confidence(confidence)?;
    check_samples(xs)?;
    let n = xs.len();
    check_pairwise("the Hodges-Lehmann estimate", n)?;
    let (c, coverage, method) = signed_rank_critical(n, alpha, confidence)?;
    let w = walsh_averages(xs);
    let m = w.len();
    Ok(Estimate {
        estimate: median_sorted(&w),
        lo: w[c - 1],
        hi: w[m - c],
        confidence,
        coverage: Some(coverage),
        n,
        method,
    })
}

// === bootstrap ===

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny generator whose output is fixed by its
/// definition, so a seeded bootstrap gives the same interval in every build and version.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `[0, bound)`, `bound > 0`, without modulo bias (Lemire 2019).
    fn below(&mut self, bound: u64) -> u64 {
        let mut m = u128::from(self.next_u64()) * u128::from(bound);
        if (m as u64) < bound {
            let threshold = bound.wrapping_neg() % bound;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(bound);
            }
        }
        (m >> 64) as u64
    }
}

/// Percentile bootstrap confidence interval of the median (Efron & Tibshirani 1993, §13.3),
/// deterministic for a given `seed`.
///
/// Draws `resamples` resamples of size `n` with replacement (SplitMix64 seeded with `seed`,
/// unbiased index draws), takes each resample's median, and returns the type 7 quantiles
/// `alpha/2` and `1 − alpha/2` of those medians around the sample median. `resamples` must be at
/// least [`BOOTSTRAP_MIN_RESAMPLES`]. A sample too small for the distribution-free median
/// interval at this confidence (`2^(1−n) > alpha`, i.e. `n < 6` at 95 %) is
/// [`StatsError::Unattainable`]: the bootstrap would claim more precision than the data hold.
pub fn bootstrap_median_ci(
    xs: &[f64],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Result<Estimate, StatsError> {
    let alpha = check_confidence(confidence)?;
    let v = sorted(xs)?;
    let n = v.len();
    if resamples < BOOTSTRAP_MIN_RESAMPLES {
        return Err(StatsError::InvalidParameter {
            name: "resamples",
            expected: "at least 1000",
            value: resamples as f64,
        });
    }
    // The widest order-statistic interval [x(1), x(n)] misses with probability 2^(1-n).
    if (1.0 - n as f64).exp2() > alpha {
        return Err(StatsError::Unattainable {
            what: "the bootstrap median",
            confidence,
            n,
        });
    }
    let mut rng = SplitMix64::new(seed);
    let mut buf = vec![0.0; n];
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in buf.iter_mut() {
            // `below(n)` < n, so the index is in range.
            *slot = xs[rng.below(n as u64) as usize];
        }
        buf.sort_unstable_by(f64::total_cmp);
        medians.push(median_sorted(&buf));
    }
    medians.sort_unstable_by(f64::total_cmp);
    Ok(Estimate {
        estimate: median_sorted(&v),
        lo: quantile_sorted(&medians, alpha / 2.0),
        hi: quantile_sorted(&medians, 1.0 - alpha / 2.0),
        confidence,
        coverage: None,
        n,
        method: IntervalMethod::PercentileBootstrap,
    })
}

// === trend ===

/// Sizes of the groups of equal values (only groups of two or more).
fn tie_groups(xs: &[f64]) -> Vec<u64> {
    let mut v = xs.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let mut groups = Vec::new();
    let mut run = 1_u64;
    for pair in v.windows(2) {
        if pair[0] == pair[1] {
            run += 1;
        } else {
            if run > 1 {
                groups.push(run);
            }
            run = 1;
        }
    }
    if run > 1 {
        groups.push(run);
    }
    groups
}

/// `Σ t(t−1)(2t+5)` over tie groups, the ties term of Kendall's S variance.
fn tie_term(groups: &[u64]) -> f64 {
    groups
        .iter()
        .map(|&t| (t * (t - 1) * (2 * t + 5)) as f64)
        .sum()
}

/// `n(n−1)(2n+5)`.
fn kendall_term(n: usize) -> f64 {
    let n = n as u64;
    (n * (n - 1) * (2 * n + 5)) as f64
}

/// A Theil–Sen line with the confidence interval of its slope.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TheilSen {
    /// The median pairwise slope with its interval.
    pub slope: Estimate,
    /// `median(y) − slope · median(x)`.
    pub intercept: f64,
    /// Number of pairs with distinct `x` the slope is the median of.
    pub pairs: usize,
}

/// The slopes `(yᵢ − yⱼ) / (xᵢ − xⱼ)` of every pair with `xᵢ > xⱼ`, ascending: what Theil–Sen
/// takes the median of. Equal lengths, finite samples, at most [`PAIRWISE_MAX_N`] points and two
/// distinct `x` values are required.
fn pairwise_slopes(x: &[f64], y: &[f64]) -> Result<Vec<f64>, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::LengthMismatch {
            x: x.len(),
            y: y.len(),
        });
    }
    check_samples(x)?;
    check_samples(y)?;
    let n = x.len();
    check_pairwise("the Theil-Sen slope", n)?;
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in 0..n {
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            if !(dx.is_finite() && dy.is_finite()) {
                // Differences of finite samples overflow only near f64::MAX.
                return Err(StatsError::InvalidParameter {
                    name: "pairwise difference",
                    expected: "finite (the samples span more than f64 holds)",
                    value: if dx.is_finite() { dy } else { dx },
                });
            }
            if dx > 0.0 {
                slopes.push(dy / dx);
            }
        }
    }
    if slopes.is_empty() {
        return Err(StatsError::NoSpread {
            what: "the Theil-Sen slope (all x equal)",
        });
    }
    slopes.sort_unstable_by(f64::total_cmp);
    Ok(slopes)
}

/// The Theil–Sen slope alone (the median of [`theil_sen`]'s pairwise slopes), for windows too
/// short for its interval: any two points at distinct `x` give one. Errors as [`theil_sen`]'s.
pub fn theil_sen_slope(x: &[f64], y: &[f64]) -> Result<f64, StatsError> {
    Ok(median_sorted(&pairwise_slopes(x, y)?))
}

/// Theil–Sen slope (Theil 1950, Sen 1968): the median of `(yᵢ − yⱼ)/(xᵢ − xⱼ)` over pairs with
/// `xᵢ > xⱼ`, intercept `median(y) − slope · median(x)`, and the slope's confidence interval from
/// Sen (1968) eq. 2.6: with `N` slopes ascending, `σ² = [n(n−1)(2n+5) − Σₓ t(t−1)(2t+5) −
/// Σᵧ t(t−1)(2t+5)] / 18` (ties in x and in y), `z = Φ⁻¹(1 − alpha/2)`, the bounds are the slopes
/// of 0-based rank `round((N − zσ)/2) − 1` and `round((N + zσ)/2)`, rounding half to even
/// (identical to SciPy's `theilslopes(y, x, confidence)`).
///
/// Needs two distinct `x` values; when a rank falls outside the slopes (SciPy clips it there)
/// the interval would be narrower than claimed, so the result is
/// [`StatsError::Unattainable`] (at 95 % with distinct values: `n ≥ 5`). At most
/// [`PAIRWISE_MAX_N`] points.
pub fn theil_sen(x: &[f64], y: &[f64], confidence: f64) -> Result<TheilSen, StatsError> {
    let alpha = check_confidence(confidence)?;
    let slopes = pairwise_slopes(x, y)?;
    let n = x.len();
    let slope = median_sorted(&slopes);
    let intercept = median(y)? - slope * median(x)?;

    let variance = (kendall_term(n) - tie_term(&tie_groups(x)) - tie_term(&tie_groups(y))) / 18.0;
    if variance <= 0.0 {
        return Err(StatsError::NoSpread {
            what: "the Theil-Sen interval",
        });
    }
    let big_n = slopes.len() as f64;
    let spread = normal_quantile(1.0 - alpha / 2.0) * variance.sqrt();
    let upper = ((big_n + spread) / 2.0).round_ties_even();
    let lower = ((big_n - spread) / 2.0).round_ties_even() - 1.0;
    if lower < 0.0 || upper > big_n - 1.0 {
        return Err(StatsError::Unattainable {
            what: "the Theil-Sen slope",
            confidence,
            n,
        });
    }
    Ok(TheilSen {
        slope: Estimate {
            estimate: slope,
            lo: slopes[lower as usize],
            hi: slopes[upper as usize],
            confidence,
            coverage: None,
            n,
            method: IntervalMethod::SenNormal,
        },
        intercept,
        pairs: slopes.len(),
    })
}

/// Result of a Mann–Kendall trend test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannKendall {
    /// Number of observations.
    pub n: usize,
    /// Kendall's `S = Σ_{i<j} sign(yⱼ − yᵢ)`: positive for an upward trend.
    pub s: i64,
    /// `Var(S)` under no trend, corrected for ties.
    pub variance: f64,
    /// `(S − sign(S)) / √Var(S)` (continuity-corrected).
    pub z: f64,
    /// Two-sided p-value, `2·(1 − Φ(|z|))`.
    pub p_two_sided: f64,
    /// One-sided p-value against an upward trend, `1 − Φ(z)`.
    pub p_increasing: f64,
    /// One-sided p-value against a downward trend, `Φ(z)`.
    pub p_decreasing: f64,
}

/// Mann–Kendall trend test (Mann 1945; Kendall 1975) on observations in time order:
/// `S = Σ_{i<j} sign(yⱼ − yᵢ)`, `Var(S) = [n(n−1)(2n+5) − Σ t(t−1)(2t+5)] / 18` over groups of
/// `t` tied values, `z = (S − sign(S)) / √Var(S)`, p-values from the standard normal (the
/// approximation is customary from `n ≥ 10`; below that it is rough). Needs `n ≥ 3` and
/// not all values equal; at most [`PAIRWISE_MAX_N`].
pub fn mann_kendall(y: &[f64]) -> Result<MannKendall, StatsError> {
    check_samples(y)?;
    let n = y.len();
    if n < 3 {
        return Err(StatsError::TooFew {
            what: "the Mann-Kendall test",
            needed: 3,
            got: n,
        });
    }
    check_pairwise("the Mann-Kendall test", n)?;
    let mut s: i64 = 0;
    for (i, &a) in y.iter().enumerate() {
        for &b in &y[i + 1..] {
            if b > a {
                s += 1;
            } else if b < a {
                s -= 1;
            }
        }
    }
    let variance = (kendall_term(n) - tie_term(&tie_groups(y))) / 18.0;
    if variance <= 0.0 {
        return Err(StatsError::NoSpread {
            what: "the Mann-Kendall test",
        });
    }
    let z = match s.signum() {
        0 => 0.0,
        sign => (s - sign) as f64 / variance.sqrt(),
    };
    let normal = standard_normal();
    Ok(MannKendall {
        n,
        s,
        variance,
        z,
        p_two_sided: (2.0 * normal.sf(z.abs())).min(1.0),
        p_increasing: normal.sf(z),
        p_decreasing: normal.cdf(z),
    })
}

// === proportions ===

/// Clopper–Pearson exact confidence interval of a binomial proportion (Clopper & Pearson 1934),
/// e.g. a false-alarm rate from `successes` alarms in `trials` runs. Estimate `k/n`; two-sided
/// `lo = B⁻¹(alpha/2; k, n−k+1)` (0 when `k = 0`), `hi = B⁻¹(1 − alpha/2; k+1, n−k)` (1 when
/// `k = n`), with `B⁻¹` the beta quantile; one-sided bounds use `alpha` and the other end is 0
/// or 1. Identical to SciPy's `binomtest(k, n).proportion_ci(method="exact")`.
pub fn clopper_pearson(
    successes: u64,
    trials: u64,
    confidence: f64,
    kind: IntervalKind,
) -> Result<Estimate, StatsError> {
    let alpha = check_confidence(confidence)?;
    if trials == 0 {
        return Err(StatsError::Empty);
    }
    if successes > trials {
        return Err(StatsError::InvalidParameter {
            name: "successes",
            expected: "at most the number of trials",
            value: successes as f64,
        });
    }
    let (k, n) = (successes as f64, trials as f64);
    let tail = match kind {
        IntervalKind::TwoSided => alpha / 2.0,
        IntervalKind::Upper | IntervalKind::Lower => alpha,
    };
    let lo = if successes == 0 || kind == IntervalKind::Upper {
        0.0
    } else {
        beta_quantile(k, n - k + 1.0, tail)
    };
    let hi = if successes == trials || kind == IntervalKind::Lower {
        1.0
    } else {
        beta_quantile(k + 1.0, n - k, 1.0 - tail)
    };
    Ok(Estimate {
        estimate: k / n,
        lo,
        hi,
        confidence,
        coverage: None,
        n: usize::try_from(trials).unwrap_or(usize::MAX),
        method: IntervalMethod::ClopperPearson,
    })
}

/// Quantile `q` of Beta(a, b), `a, b > 0`, `q` in (0, 1): statrs' inverse regularised
/// incomplete beta (AS 109 with Newton steps), within 1e-9 of SciPy's `betaincinv` on the
/// fixtures.
fn beta_quantile(a: f64, b: f64, q: f64) -> f64 {
    match Beta::new(a, b) {
        Ok(beta) => beta.inverse_cdf(q),
        // Unreachable for the callers' a, b ≥ 1; NaN makes any decision an error.
        Err(_) => f64::NAN,
    }
}

// === multiple comparisons ===

fn check_p_values(ps: &[f64]) -> Result<(), StatsError> {
    match ps.iter().position(|p| !(0.0..=1.0).contains(p)) {
        Some(index) => Err(StatsError::NotAProbability {
            index,
            value: ps[index],
        }),
        None => Ok(()),
    }
}

/// Holm (1979) step-down adjusted p-values, in input order: with `p(1) ≤ … ≤ p(m)`,
/// `p̃(i) = max_{j ≤ i} min(1, (m − j + 1)·p(j))`. Reject where `p̃ ≤ alpha` to control the
/// family-wise error rate at `alpha` under any dependence. An empty input gives an empty output.
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check_p_values(p_values)?;
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &index) in order.iter().enumerate() {
        let value = ((m - rank) as f64 * p_values[index]).min(1.0);
        running = running.max(value);
        adjusted[index] = running;
    }
    Ok(adjusted)
}

/// Benjamini–Hochberg (1995) adjusted p-values (q-values), in input order: with
/// `p(1) ≤ … ≤ p(m)`, `p̃(i) = min_{j ≥ i} min(1, m·p(j)/j)`. Reject where `p̃ ≤ q` to control the
/// false-discovery rate at `q` for independent or positively dependent tests. An empty input
/// gives an empty output.
pub fn benjamini_hochberg(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check_p_values(p_values)?;
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 1.0_f64;
    for (rank, &index) in order.iter().enumerate().rev() {
        // p · (m / i), as SciPy computes it, so that p(m) stays exactly p(m).
        let value = (p_values[index] * (m as f64 / (rank + 1) as f64)).min(1.0);
        running = running.min(value);
        adjusted[index] = running;
    }
    Ok(adjusted)
}

// === power ===

/// The location estimator a power calculation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationEstimator {
    /// The mean (a z-test on the differences): efficiency 1.
    Mean,
    /// Hodges–Lehmann / Wilcoxon signed-rank: efficiency [`HODGES_LEHMANN_EFFICIENCY`].
    HodgesLehmann,
    /// The median / sign test: efficiency [`MEDIAN_EFFICIENCY`].
    Median,
}

impl LocationEstimator {
    /// Asymptotic relative efficiency to the mean under normal errors.
    pub fn efficiency(self) -> f64 {
        match self {
            LocationEstimator::Mean => 1.0,
            LocationEstimator::HodgesLehmann => HODGES_LEHMANN_EFFICIENCY,
            LocationEstimator::Median => MEDIAN_EFFICIENCY,
        }
    }
}

fn check_power_params(sigma: f64, alpha: f64, power: f64) -> Result<f64, StatsError> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(StatsError::InvalidParameter {
            name: "sigma",
            expected: "a finite number at least 0",
            value: sigma,
        });
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "alpha",
            expected: "strictly between 0 and 1",
            value: alpha,
        });
    }
    if !(power > alpha && power < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "power",
            expected: "greater than alpha and less than 1",
            value: power,
        });
    }
    Ok(normal_quantile(1.0 - alpha) + normal_quantile(power))
}

/// Minimum detectable shift of a paired design: the smallest true shift of the differences that
/// a one-sided level-`alpha` test detects with probability `power`, by the normal approximation
/// `(z₁₋α + z_power) · sigma / √(pairs · efficiency)`.
///
/// `sigma` is the standard deviation of the per-pair differences — pass the normal-scaled
/// [`mad`] of the differences for a robust value. `efficiency` is the estimator's asymptotic
/// relative efficiency under normal errors (1 for the mean, `3/π` for Hodges–Lehmann, `2/π` for
/// the median); for heavy-tailed differences Hodges–Lehmann and the median do better than this
/// says. With `alpha = 0.05`, `power = 0.95` the factor is `3.290`. A gate that decides from a
/// two-sided 95 % interval tests at one-sided `alpha = 0.025`.
pub fn minimum_detectable_shift(
    pairs: usize,
    sigma: f64,
    alpha: f64,
    power: f64,
    estimator: LocationEstimator,
) -> Result<f64, StatsError> {
    let factor = check_power_params(sigma, alpha, power)?;
    if pairs == 0 {
        return Err(StatsError::Empty);
    }
    Ok(factor * sigma / (pairs as f64 * estimator.efficiency()).sqrt())
}

/// Pairs needed for [`minimum_detectable_shift`] to reach `shift`:
/// `⌈((z₁₋α + z_power) · sigma / shift)² / efficiency⌉`, at least 1. `shift > 0`.
pub fn pairs_needed(
    shift: f64,
    sigma: f64,
    alpha: f64,
    power: f64,
    estimator: LocationEstimator,
) -> Result<u64, StatsError> {
    let factor = check_power_params(sigma, alpha, power)?;
    if !(shift.is_finite() && shift > 0.0) {
        return Err(StatsError::InvalidParameter {
            name: "shift",
            expected: "a finite number greater than 0",
            value: shift,
        });
    }
    let ratio = factor * sigma / shift;
    let pairs = (ratio * ratio / estimator.efficiency()).ceil();
    // Saturating float-to-int conversion; astronomically large needs stay "u64::MAX".
    Ok((pairs as u64).max(1))
}

// === decisions ===

/// A gate's verdict on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The evidence shows the claim holds.
    Pass,
    /// The evidence shows the claim fails.
    Fail,
    /// The interval straddles the boundary: neither shown.
    Inconclusive,
}

fn check_interval(interval: Interval) -> Result<(), StatsError> {
    if interval.lo.is_nan() {
        return Err(StatsError::InvalidParameter {
            name: "interval lower bound",
            expected: "a number",
            value: interval.lo,
        });
    }
    if interval.hi.is_nan() || interval.hi < interval.lo {
        return Err(StatsError::InvalidParameter {
            name: "interval upper bound",
            expected: "a number at least the lower bound",
            value: interval.hi,
        });
    }
    Ok(())
}

/// Budget rule (non-inferiority): `Pass` when `hi ≤ budget`, `Fail` when `lo > budget`,
/// `Inconclusive` otherwise. A budget of the interval's own upper bound passes; a lower bound
/// equal to the budget is not a failure. A NaN bound or budget, or `hi < lo`, is an error.
pub fn budget_decision(interval: Interval, budget: f64) -> Result<Decision, StatsError> {
    check_interval(interval)?;
    if budget.is_nan() {
        return Err(StatsError::InvalidParameter {
            name: "budget",
            expected: "a number",
            value: budget,
        });
    }
    Ok(if interval.hi <= budget {
        Decision::Pass
    } else if interval.lo > budget {
        Decision::Fail
    } else {
        Decision::Inconclusive
    })
}

/// The regression gate's dual criterion. With `m = max(tolerance, k · noise)` (the material
/// shift) and a shift `d` (current − baseline, positive is worse) with interval `[lo, hi]`:
///
/// - `Fail` when `lo > 0` (the interval excludes zero from above) **and** `d > m`: a
///   regression that is both significant and material is flagged;
/// - `Inconclusive` when `d > m` but `lo ≤ 0`: the estimate is material, but the interval
///   cannot tell it from no shift at all;
/// - otherwise `Pass` (`d ≤ m`): no material regression is flagged. This is the criterion's
///   flag test, not an equivalence test: `hi` may exceed `m` (the report shows it, and the
///   gate's power line says what shift the run resolves). Requiring `hi ≤ m` instead would
///   leave an A/A run undecided whenever the run's interval and the baseline's uncertainty
///   together are wider than `k` noise standard deviations, which on a quiet host is most
///   runs.
///
/// `lo ≤ d ≤ hi` is required.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DualCriterion {
    /// The smallest shift that matters, in the metric's unit (finite, ≥ 0).
    pub tolerance: f64,
    /// The A/A noise of the shift's estimate on this hardware class (finite, ≥ 0).
    pub noise: f64,
    /// Multiple of the noise a shift must exceed (finite, ≥ 0).
    pub k: f64,
}

impl DualCriterion {
    /// The material shift `max(tolerance, k · noise)`, or an error naming the first parameter
    /// that is NaN, infinite or negative.
    pub fn threshold(&self) -> Result<f64, StatsError> {
        for (name, value) in [
            ("tolerance", self.tolerance),
            ("noise", self.noise),
            ("k", self.k),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(StatsError::InvalidParameter {
                    name,
                    expected: "a finite number at least 0",
                    value,
                });
            }
        }
        Ok(self.tolerance.max(self.k * self.noise))
    }

    /// Decides a shift estimate `shift` with its interval. An interval that does not contain
    /// `shift`, or a NaN anywhere, is an error.
    pub fn decide(&self, shift: f64, interval: Interval) -> Result<Decision, StatsError> {
        check_interval(interval)?;
        if !(interval.lo <= shift && shift <= interval.hi) {
            return Err(StatsError::InvalidParameter {
                name: "shift",
                expected: "inside its interval",
                value: shift,
            });
        }
        let material = self.threshold()?;
        Ok(if shift <= material {
            Decision::Pass
        } else if interval.lo > 0.0 {
            Decision::Fail
        } else {
            Decision::Inconclusive
        })
    }
}
