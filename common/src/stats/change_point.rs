//! Change points of a series: E-divisive means (Matteson & James 2014, "A nonparametric
//! approach for multiple change point analysis of multivariate data", JASA 109(505), with the
//! energy distance at exponent 1), as used on performance histories.
//!
//! A split of a segment `Z = X ++ Y` (`m = |X|`, `k = |Y|`) is scored by the scaled energy
//! distance `Q = m·k/(m+k) · (2/(m·k) Σ|x−y| − Σ_{i<j}|x_i−x_j| / C(m,2) − Σ_{i<j}|y_i−y_j| /
//! C(k,2))`, which grows with a difference in location (or spread) between the two sides. The
//! series is divided hierarchically: each round finds the best split of every current segment
//! and tests the best of them by a permutation test (values shuffled within each segment, the
//! same maximum taken; p = (1 + #{permuted ≥ observed}) / (1 + permutations)). A split whose p
//! is at most `alpha` becomes a change point and the search continues; otherwise it stops.
//!
//! On a series of independent, identically distributed values, the first test rejects with
//! probability at most `alpha` (a permutation test is exact for exchangeable data), so at most
//! `alpha` of flat series report any change point. The shuffles come from a seeded SplitMix64,
//! so a series always gives the same answer.

use super::{SplitMix64, StatsError, check_samples};

/// The settings of [`change_points`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangePointConfig {
    /// Fewest values on each side of a change point (at least 2).
    pub min_segment: usize,
    /// Significance level of each permutation test, in (0, 1).
    pub alpha: f64,
    /// Shuffles per test (at least `1/alpha − 1`, so a p-value can reach `alpha`).
    pub permutations: usize,
    /// Seed of the shuffles.
    pub seed: u64,
}

/// The seed of [`ChangePointConfig::default`].
pub const CHANGE_POINT_SEED: u64 = 0x6865_6c6c_6f5f_6370;

impl Default for ChangePointConfig {
    /// At least 3 values each side, 1 % per test, 499 shuffles (the smallest p is 0.002).
    fn default() -> Self {
        ChangePointConfig {
            min_segment: 3,
            alpha: 0.01,
            permutations: 499,
            seed: CHANGE_POINT_SEED,
        }
    }
}

/// The best split of `xs` into two segments of at least `min_segment` values: the index where
/// the second starts and its energy statistic `Q` (the first of equal maxima). None when `xs`
/// is shorter than `2 × min_segment`.
pub fn best_split(xs: &[f64], min_segment: usize) -> Option<(usize, f64)> {
    let n = xs.len();
    let min = min_segment.max(2);
    if n < 2 * min {
        return None;
    }
    // left[t] = Σ_{i<t} |x_t − x_i|, right[t] = Σ_{j>t} |x_t − x_j|.
    let mut left = vec![0.0; n];
    let mut right = vec![0.0; n];
    for t in 0..n {
        for i in 0..t {
            let d = (xs[t] - xs[i]).abs();
            left[t] += d;
            right[i] += d;
        }
    }
    // Sums over the cross pairs, the pairs within the left part, and within the right part,
    // moved along one element at a time.
    let mut cross = 0.0;
    let mut within_left = 0.0;
    let mut within_right: f64 = left.iter().sum();
    let mut best: Option<(usize, f64)> = None;
    for tau in 1..=n - min {
        let moved = tau - 1;
        within_left += left[moved];
        within_right -= right[moved];
        cross += right[moved] - left[moved];
        if tau < min {
            continue;
        }
        let m = tau as f64;
        let k = (n - tau) as f64;
        let energy = 2.0 * cross / (m * k)
            - 2.0 * within_left / (m * (m - 1.0))
            - 2.0 * within_right / (k * (k - 1.0));
        let q = m * k / (m + k) * energy;
        if best.is_none_or(|(_, b)| q > b) {
            best = Some((tau, q));
        }
    }
    best
}

/// The change points of `xs`: sorted indices where a shifted segment starts (see the module
/// docs). A series shorter than `2 × min_segment` has none. Non-finite values and settings out
/// of range are a [`StatsError`].
pub fn change_points(xs: &[f64], config: &ChangePointConfig) -> Result<Vec<usize>, StatsError> {
    if !xs.is_empty() {
        check_samples(xs)?;
    }
    if config.min_segment < 2 {
        return Err(StatsError::InvalidParameter {
            name: "min_segment",
            expected: "at least 2",
            value: config.min_segment as f64,
        });
    }
    if !(config.alpha > 0.0 && config.alpha < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "alpha",
            expected: "in (0, 1)",
            value: config.alpha,
        });
    }
    if ((config.permutations + 1) as f64) * config.alpha < 1.0 {
        return Err(StatsError::InvalidParameter {
            name: "permutations",
            expected: "at least 1/alpha − 1",
            value: config.permutations as f64,
        });
    }
    let mut rng = SplitMix64::new(config.seed);
    // Segment boundaries: [0, cut_1, …, n].
    let mut cuts = vec![0, xs.len()];
    while let Some((start, tau, observed)) = best_of_segments(xs, &cuts, config.min_segment) {
        let mut shuffled = xs.to_vec();
        let mut as_large = 0_usize;
        for _ in 0..config.permutations {
            for pair in cuts.windows(2) {
                shuffle(&mut shuffled[pair[0]..pair[1]], &mut rng);
            }
            if best_of_segments(&shuffled, &cuts, config.min_segment)
                .is_some_and(|(_, _, q)| q >= observed)
            {
                as_large += 1;
            }
        }
        let p = (1 + as_large) as f64 / (1 + config.permutations) as f64;
        if p > config.alpha {
            break;
        }
        let cut = start + tau;
        let at = cuts.partition_point(|&c| c < cut);
        cuts.insert(at, cut);
    }
    Ok(cuts[1..cuts.len() - 1].to_vec())
}

/// The best split over the segments between `cuts`: (segment start, split within it, Q).
fn best_of_segments(xs: &[f64], cuts: &[usize], min_segment: usize) -> Option<(usize, usize, f64)> {
    let mut best: Option<(usize, usize, f64)> = None;
    for pair in cuts.windows(2) {
        if let Some((tau, q)) = best_split(&xs[pair[0]..pair[1]], min_segment)
            && best.is_none_or(|(_, _, b)| q > b)
        {
            best = Some((pair[0], tau, q));
        }
    }
    best
}

/// Fisher–Yates shuffle.
fn shuffle(xs: &mut [f64], rng: &mut SplitMix64) {
    for i in (1..xs.len()).rev() {
        // `below(i + 1)` ≤ i, so the index is in range.
        let j = rng.below(i as u64 + 1) as usize;
        xs.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard normal values from a seeded SplitMix64 (Box–Muller): deterministic noise.
    fn normal_noise(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        let mut uniform = || (rng.next_u64() >> 11) as f64 / (1_u64 << 53) as f64;
        (0..n)
            .map(|_| {
                let u1 = uniform().max(f64::MIN_POSITIVE);
                let u2 = uniform();
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect()
    }

    #[test]
    fn the_statistic_matches_hand_computed_values() {
        // 0,0,0 | 1,1,1: cross sum 9, no spread within: E = 2·9/9 = 2, Q = 9/6 · 2 = 3.
        assert_eq!(
            best_split(&[0.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3),
            Some((3, 3.0))
        );
        // 0,2 | 1,3 (the only split at min 2): cross |0−1|+|0−3|+|2−1|+|2−3| = 6; within 2 and
        // 2: E = 2·6/4 − 2 − 2 = −1, Q = 4/4 · −1 = −1.
        assert_eq!(best_split(&[0.0, 2.0, 1.0, 3.0], 2), Some((2, -1.0)));
        // 1,2,3,10,11,12 at min 2: the split at 3 scores highest (Q = 1.5 · (2·81/9 − 2/3·2 − 2/3·2)).
        let (tau, q) = best_split(&[1.0, 2.0, 3.0, 10.0, 11.0, 12.0], 2).unwrap();
        assert_eq!(tau, 3);
        assert!((q - 1.5 * (18.0 - 8.0 / 3.0)).abs() < 1e-12, "{q}");
        assert_eq!(best_split(&[1.0, 2.0, 3.0], 2), None);
    }

    #[test]
    fn a_step_is_found_where_it_starts() {
        let config = ChangePointConfig::default();
        for (n, at, size) in [(30, 20, 3.0), (40, 10, 4.0), (20, 17, 6.0), (60, 30, 3.0)] {
            let mut xs = normal_noise(7 + at as u64, n);
            for x in &mut xs[at..] {
                *x += size;
            }
            assert_eq!(
                change_points(&xs, &config).unwrap(),
                vec![at],
                "a step of {size} σ at {at} of {n}"
            );
        }
    }

    #[test]
    fn a_small_step_is_found_near_where_it_starts() {
        // 1.5 σ at 30 of 60: found, within two runs of its start.
        let mut xs = normal_noise(37, 60);
        for x in &mut xs[30..] {
            *x += 1.5;
        }
        let found = change_points(&xs, &ChangePointConfig::default()).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].abs_diff(30) <= 2, "{found:?}");
    }

    #[test]
    fn two_steps_are_both_found() {
        let mut xs = normal_noise(11, 45);
        for x in &mut xs[15..30] {
            *x += 4.0;
        }
        for x in &mut xs[30..] {
            *x -= 3.0;
        }
        assert_eq!(
            change_points(&xs, &ChangePointConfig::default()).unwrap(),
            vec![15, 30]
        );
    }

    #[test]
    fn flat_noisy_series_report_a_change_point_at_most_at_the_chosen_rate() {
        // 400 flat series of 30 normal values at alpha 0.05: the expected count of series
        // with any change point is at most 20; 35 is over 3 binomial standard deviations
        // above it.
        let config = ChangePointConfig {
            alpha: 0.05,
            permutations: 199,
            ..ChangePointConfig::default()
        };
        let flagged = (0..400)
            .filter(|&s| {
                !change_points(&normal_noise(1_000 + s, 30), &config)
                    .unwrap()
                    .is_empty()
            })
            .count();
        assert!(
            flagged <= 35,
            "{flagged} of 400 flat series had a change point"
        );
        // And the default (1 %) flags at most 2 % of them (8), where a shift of 3 σ in the
        // same series is found in nearly every one.
        let default = ChangePointConfig::default();
        let flat = (0..400)
            .filter(|&s| {
                !change_points(&normal_noise(1_000 + s, 30), &default)
                    .unwrap()
                    .is_empty()
            })
            .count();
        assert!(
            flat <= 8,
            "{flat} of 400 flat series had a change point at 1 %"
        );
    }

    #[test]
    fn constant_short_and_empty_series_have_none() {
        let config = ChangePointConfig::default();
        assert!(change_points(&[5.0; 40], &config).unwrap().is_empty());
        assert!(
            change_points(&[1.0, 9.0, 1.0, 9.0, 1.0], &config)
                .unwrap()
                .is_empty()
        );
        assert!(change_points(&[], &config).unwrap().is_empty());
    }

    #[test]
    fn the_answer_is_the_same_every_time() {
        let mut xs = normal_noise(3, 50);
        for x in &mut xs[25..] {
            *x += 1.0;
        }
        let config = ChangePointConfig::default();
        let first = change_points(&xs, &config).unwrap();
        for _ in 0..3 {
            assert_eq!(change_points(&xs, &config).unwrap(), first);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let config = ChangePointConfig::default();
        assert!(matches!(
            change_points(&[1.0, f64::NAN, 2.0], &config),
            Err(StatsError::NonFinite { index: 1, .. })
        ));
        for bad in [
            ChangePointConfig {
                min_segment: 1,
                ..config
            },
            ChangePointConfig {
                alpha: 0.0,
                ..config
            },
            ChangePointConfig {
                alpha: 0.01,
                permutations: 50,
                ..config
            },
        ] {
            assert!(matches!(
                change_points(&[1.0; 10], &bad),
                Err(StatsError::InvalidParameter { .. })
            ));
        }
    }
}
