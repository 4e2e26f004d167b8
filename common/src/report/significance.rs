//! Regression checks as tests of "delta > 0", corrected for how many a report holds.
//!
//! A fleet report gates every agent × runtime × measured metric: with 10 agents and two
//! runtimes that is 40 interval-gated checks, and a 95 % interval excludes the truth one time
//! in forty on one side, so one of them can fail by chance alone. Each check with an interval
//! gets a one-sided p-value from the normal approximation of its interval; Holm's step-down
//! adjustment over every such check of the report bounds the chance that any failure is a
//! false alarm at 2.5 %, and a failure that does not survive it is inconclusive, not failed.

use std::collections::BTreeMap;

use statrs::distribution::{ContinuousCDF, Normal};

use crate::report::model::RegressionCheck;
use crate::stats;

/// `z₀.₉₇₅` to six decimals: a two-sided 95 % interval spans `2 × Z_975` standard errors.
pub const Z_975: f64 = 1.959_964;

/// The one-sided level of a regression test, the upper tail of the gates' 95 % interval: a
/// failed check stays failed only when its Holm-adjusted p-value is below it.
pub const REGRESSION_ALPHA: f64 = 0.025;

/// `Φ(z)`, the standard normal distribution function.
pub fn normal_cdf(z: f64) -> f64 {
    Normal::standard().cdf(z)
}

/// The one-sided p-value of "delta > 0" for an estimate `delta` with the 95 % interval
/// `[lo, hi]`, by the normal approximation: `se = (hi − lo) / (2 × Z_975)`, `z = delta / se`,
/// `p = 1 − Φ(z)` (computed as the upper tail, which keeps its precision far out). A
/// zero-width interval is certain: 0 when `delta > 0`, else 1. None when a value is not finite
/// or the interval is reversed.
pub fn one_sided_p(delta: f64, lo: f64, hi: f64) -> Option<f64> {
    if !(delta.is_finite() && lo.is_finite() && hi.is_finite()) || hi < lo {
        return None;
    }
    let se = (hi - lo) / (2.0 * Z_975);
    let p = if se > 0.0 {
        Normal::standard().sf(delta / se)
    } else if delta > 0.0 {
        0.0
    } else {
        1.0
    };
    Some(p.clamp(0.0, 1.0))
}

impl RegressionCheck {
    /// The dual criterion failed this check, but its Holm-adjusted p-value is at least
    /// [`REGRESSION_ALPHA`], so it is inconclusive.
    pub fn not_significant(&self) -> bool {
        self.inconclusive
            && self.delta_lo.is_some_and(|lo| lo > 0.0)
            && self.delta > self.material_shift.unwrap_or(self.max_regression)
            && self.p_adjusted.is_some_and(|p| p >= REGRESSION_ALPHA)
    }
}

/// Sets `p_value` and `p_adjusted` (Holm, over every check here with an interval) of the
/// regression checks, and makes each check the dual criterion failed whose adjusted p-value
/// is at least [`REGRESSION_ALPHA`] inconclusive. Returns how many checks were compared.
pub fn adjust_regression_checks(checks: &mut BTreeMap<String, RegressionCheck>) -> usize {
    let tested: Vec<(String, f64)> = checks
        .iter()
        .filter_map(|(key, c)| {
            let p = one_sided_p(c.delta, c.delta_lo?, c.delta_hi?)?;
            Some((key.clone(), p))
        })
        .collect();
    let p_values: Vec<f64> = tested.iter().map(|(_, p)| *p).collect();
    let adjusted = stats::holm(&p_values)
        .expect("one_sided_p gives probabilities in [0, 1], which holm accepts");
    for ((key, p), p_adjusted) in tested.into_iter().zip(adjusted) {
        if let Some(check) = checks.get_mut(&key) {
            check.p_value = Some(p);
            check.p_adjusted = Some(p_adjusted);
            if !check.passed && !check.inconclusive && p_adjusted >= REGRESSION_ALPHA {
                check.inconclusive = true;
            }
        }
    }
    p_values.len()
}

/// A p-value as diagnostics print it: three decimals, or two significant digits below 0.001.
pub fn format_p(p: f64) -> String {
    if p >= 0.001 || p == 0.0 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn phi_matches_published_values() {
        // Abramowitz & Stegun, table 26.1; NIST/SEMATECH e-Handbook, table 1.3.6.7.1.
        for (z, phi) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_543),
            (-1.0, 0.158_655_253_931_457),
            (1.644_854, 0.95),
            (1.959_964, 0.975),
            (2.326_348, 0.99),
            (3.0, 0.998_650_101_968_370),
            (-3.0, 0.001_349_898_031_630),
        ] {
            assert!(
                close(normal_cdf(z), phi, 1e-6),
                "Φ({z}) = {}",
                normal_cdf(z)
            );
        }
    }

    #[test]
    fn a_p_value_comes_from_the_interval_width() {
        // A symmetric interval whose lower bound is exactly 0: z = 1.959964, p = 0.025.
        let p = one_sided_p(2.0, 0.0, 4.0).unwrap();
        assert!(close(p, 0.025, 1e-7), "{p}");
        // One standard error above 0: p = 1 − Φ(1).
        let se = 1.0;
        let p = one_sided_p(1.0, 1.0 - Z_975 * se, 1.0 + Z_975 * se).unwrap();
        assert!(close(p, 0.158_655_253_931_457, 1e-9), "{p}");
        // A negative delta: p above one half.
        assert!(one_sided_p(-1.0, -3.0, 1.0).unwrap() > 0.5);
        // Degenerate and malformed intervals.
        assert_eq!(one_sided_p(1.0, 1.0, 1.0), Some(0.0));
        assert_eq!(one_sided_p(0.0, 0.0, 0.0), Some(1.0));
        assert_eq!(one_sided_p(f64::NAN, 0.0, 1.0), None);
        assert_eq!(one_sided_p(1.0, 2.0, 0.0), None);
        // Far out, the tail keeps its precision.
        let p = one_sided_p(15.0, 14.0, 16.0).unwrap();
        assert!(p > 0.0 && p < 1e-150, "{p}");
    }

    #[test]
    fn p_values_print_with_three_decimals_or_two_digits() {
        assert_eq!(format_p(0.025), "0.025");
        assert_eq!(format_p(0.1234), "0.123");
        assert_eq!(format_p(0.000_123_4), "1.2e-4");
        assert_eq!(format_p(0.0), "0.000");
        assert_eq!(format_p(1.0), "1.000");
    }
}
