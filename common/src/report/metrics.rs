//! The metrics of a report: their names, the keys a run produces, the flattened values and
//! intervals the gates read, and how a value and a check's interval print.

use std::collections::BTreeMap;

use crate::config::Mode;
use crate::report::model::{BudgetCheck, RegressionCheck, RuntimeSection, RuntimeStatus};
use crate::stats::Interval;

/// Overhead metric names, in report order.
pub const OVERHEAD_METRICS: [&str; 3] = [
    "runtime_overhead_pct",
    "cpu_overhead_pct",
    "artifact_growth_bytes",
];

/// Soak metric names, in report order.
pub const SOAK_METRICS: [&str; 11] = [
    "rss_growth_per_24h_equiv",
    "max_rss_delta_bytes",
    "final_retained_bytes",
    "final_retained_files",
    "collector_failure_event_count",
    "history_dropped_events",
    "history_dropped_samples",
    "history_dropped_alerts",
    "rollover_count",
    "pruned_segment_count",
    "pruned_bytes",
];

/// Soak counters that the sink and history make deterministic for a given config: the
/// regression gate checks them in both directions (`|current − baseline| <= tolerance`), since
/// fewer rollovers, pruned segments, retained files or dropped history entries than the baseline
/// mean the run did less work (lost telemetry, or a shortened soak), not that it improved. Every
/// other metric is checked one way: an improvement passes.
pub const TWO_SIDED_METRICS: [&str; 6] = [
    "final_retained_files",
    "history_dropped_events",
    "history_dropped_samples",
    "history_dropped_alerts",
    "rollover_count",
    "pruned_segment_count",
];

/// Whether the regression gate checks `metric` (a bare metric name or a
/// `[<agent>/]<runtime>.<metric>` key) in both directions.
pub fn is_two_sided(metric: &str) -> bool {
    let name = metric.rsplit_once('.').map_or(metric, |(_, m)| m);
    TWO_SIDED_METRICS.contains(&name)
}

/// The metric keys a run of `runtimes` in `mode` produces (what every gate file must cover).
pub fn expected_metric_keys<'a>(
    runtimes: impl IntoIterator<Item = &'a str>,
    mode: Mode,
) -> Vec<String> {
    let mut keys = Vec::new();
    for runtime in runtimes {
        if mode.runs_overhead() {
            keys.extend(OVERHEAD_METRICS.iter().map(|m| format!("{runtime}.{m}")));
        }
        if mode.runs_soak() {
            keys.extend(SOAK_METRICS.iter().map(|m| format!("{runtime}.{m}")));
        }
    }
    keys
}

/// Flattens the sections of runtimes with status ok into `<runtime>.<metric>` values.
///
/// The values are gathered in key order as nearly as can be (sections in name order, each
/// one's metrics by name) and the map built from them at once: at 10,000 agents that is
/// 110,000 keys, which one sort of an ordered list and a bulk build take in a fraction of the
/// time of as many inserts.
pub fn flatten_metrics(runtimes: &BTreeMap<String, RuntimeSection>) -> BTreeMap<String, f64> {
    let mut soak_order: Vec<usize> = (0..SOAK_METRICS.len()).collect();
    soak_order.sort_unstable_by_key(|&i| SOAK_METRICS[i]);
    let mut metrics = Vec::new();
    for (name, section) in runtimes {
        if section.status != RuntimeStatus::Ok {
            continue;
        }
        if let Some(o) = &section.overhead {
            let m = &o.metrics;
            metrics.extend([
                (
                    format!("{name}.artifact_growth_bytes"),
                    m.artifact_growth_bytes as f64,
                ),
                (format!("{name}.cpu_overhead_pct"), m.cpu_overhead_pct),
                (
                    format!("{name}.runtime_overhead_pct"),
                    m.runtime_overhead_pct,
                ),
            ]);
        }
        if let Some(s) = &section.soak {
            let values = [
                s.rss_growth_per_24h_equiv,
                s.max_rss_delta_bytes as f64,
                s.final_retained_bytes as f64,
                s.final_retained_files as f64,
                s.collector_failure_event_count as f64,
                s.history_dropped_events as f64,
                s.history_dropped_samples as f64,
                s.history_dropped_alerts as f64,
                s.rollover_count as f64,
                s.pruned_segment_count as f64,
                s.pruned_bytes as f64,
            ];
            metrics.extend(
                soak_order
                    .iter()
                    .map(|&i| (format!("{name}.{}", SOAK_METRICS[i]), values[i])),
            );
        }
    }
    metrics.into_iter().collect()
}

/// The 95 % intervals of the flattened metrics that have one (the overhead percentages, and the
/// soak's RSS growth when its trend has an interval, of runtimes with status ok), keyed like
/// [`flatten_metrics`].
pub fn flatten_intervals(
    runtimes: &BTreeMap<String, RuntimeSection>,
) -> BTreeMap<String, Interval> {
    // Gathered in key order and built at once, as in `flatten_metrics`.
    let mut intervals = Vec::new();
    for (name, section) in runtimes {
        if section.status != RuntimeStatus::Ok {
            continue;
        }
        if let Some(e) = section.overhead.as_ref().and_then(|o| o.estimates.as_ref()) {
            intervals.extend([
                (
                    format!("{name}.cpu_overhead_pct"),
                    e.cpu_overhead_pct.interval(),
                ),
                (
                    format!("{name}.runtime_overhead_pct"),
                    e.runtime_overhead_pct.interval(),
                ),
            ]);
        }
        let trend = section.soak.as_ref().and_then(|s| s.rss_trend);
        if let Some((lo, hi)) =
            trend.and_then(|t| t.growth_per_24h_equiv_lo.zip(t.growth_per_24h_equiv_hi))
        {
            intervals.push((
                format!("{name}.rss_growth_per_24h_equiv"),
                Interval { lo, hi },
            ));
        }
    }
    intervals.into_iter().collect()
}

/// A metric value as the console and diagnostics print it: `_pct` metrics with two decimals
/// and `%`, everything else as a whole number.
pub fn format_value(metric: &str, value: f64) -> String {
    if metric.ends_with("_pct") {
        format!("{value:.2}%")
    } else {
        format!("{value:.0}")
    }
}

impl BudgetCheck {
    /// `PASS`, `FAIL` or `INCONCLUSIVE`.
    pub fn outcome(&self) -> &'static str {
        outcome(self.passed, self.inconclusive)
    }

    /// ` 95% [lo, hi]` when the value has an interval, else nothing.
    pub fn interval_note(&self, metric: &str) -> String {
        interval_note(metric, self.lo, self.hi)
    }
}

fn outcome(passed: bool, inconclusive: bool) -> &'static str {
    match (passed, inconclusive) {
        (true, _) => "PASS",
        (false, true) => "INCONCLUSIVE",
        (false, false) => "FAIL",
    }
}

fn interval_note(metric: &str, lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!(
            " 95% [{}, {}]",
            format_value(metric, lo),
            format_value(metric, hi)
        ),
        _ => String::new(),
    }
}

impl RegressionCheck {
    /// `PASS`, `FAIL` or `INCONCLUSIVE`.
    pub fn outcome(&self) -> &'static str {
        outcome(self.passed, self.inconclusive)
    }

    /// ` 95% [lo, hi]` of the delta when it has an interval, else nothing.
    pub fn interval_note(&self, metric: &str) -> String {
        interval_note(metric, self.delta_lo, self.delta_hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_keys_follow_the_mode() {
        assert_eq!(expected_metric_keys(["a"], Mode::All).len(), 14);
        assert_eq!(expected_metric_keys(["a", "b"], Mode::All).len(), 28);
        assert_eq!(
            expected_metric_keys(["a"], Mode::Overhead),
            [
                "a.runtime_overhead_pct",
                "a.cpu_overhead_pct",
                "a.artifact_growth_bytes"
            ]
        );
        assert_eq!(expected_metric_keys(["a"], Mode::Soak).len(), 11);
    }
}
